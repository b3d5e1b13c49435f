"""
`hoopgw login`: a token from the company's identity provider, with the
standards native apps use, cached per gateway for the stock clients.

- The gateway publishes what a client needs at C{/.well-known/hoopgw} on
  its API listener (the issuers people log in with: their client id, scopes
  and resource; its listeners), so C{hoopgw login --gateway URL} is all a
  user types.
- Authorization code with PKCE and a loopback redirect (RFC 8252, RFC 7636)
  where a browser can be opened; else (or with C{--device}) the device
  authorization grant (RFC 8628).  RFC 8707's C{resource} asks the IdP for
  a token meant for the gateway.
- Tokens are cached in C{$XDG_CONFIG_HOME/hoopgw/credentials/} (default
  C{~/.config}), one file per gateway, mode 0600 in a 0700 folder; a file
  or folder others can read is refused, never used.  An access token close
  to its expiry is refreshed with the refresh token when the IdP gave one.

This runs in the CLI's own process, outside the reactor: blocking I/O is
fine here.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import os
import secrets
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import webbrowser
from pathlib import Path
from typing import Any, Callable

from hoopgw.errors import CommandError

__all__ = ["LoginError", "cached_credential", "cached_token", "login", "logout", "resolve_gateway", "whoami"]

_DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# Refresh a token this long before it expires: a client may take that long to use it.
_MARGIN = 30


class LoginError(CommandError):
    """A login, a refresh or the cache failed; the message says why and what to do."""


# -- the cache ------------------------------------------------------------------------


def credentials_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hoopgw" / "credentials"


def _file_name(gateway: str) -> str:
    parts = urllib.parse.urlsplit(gateway)
    host = (parts.hostname or "gateway").replace(":", "_")
    return f"{host}_{parts.port or (443 if parts.scheme == 'https' else 80)}.json"


def _private(path: Path, what: str, fix: str | None = None) -> None:
    """Refuse C{path} if others can read it, saying how to mend it (C{fix}, or chmod and a new login)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        fix = fix or (f"tokens are kept owner-only: run chmod {'700' if path.is_dir() else '600'} {path}, "
                      "or hoopgw logout and log in again")
        raise LoginError(f"{path}: {what} is readable by others (mode {mode:04o}); {fix}")


def _read(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    _private(path.parent, "the credentials folder")
    _private(path, "the token cache")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LoginError(f"{path}: not a token cache ({e}); hoopgw logout, then log in again") from None
    return data if isinstance(data, dict) else None


def private_folder() -> Path:
    """
    The credentials folder, made owner-only with its C{hoopgw} parent
    whatever the umask (another user must not be able to rename it away).
    """
    folder = credentials_dir()
    for part in (folder.parent, folder):
        part.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(part, 0o700)
    return folder


def write_private(path: Path, text: str) -> None:
    """Replace C{path} (in the credentials folder) atomically with an owner-only file."""
    private_folder()
    # A name of its own: two refreshes at once must not write one temporary file.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _write(path: Path, data: dict[str, Any]) -> None:
    write_private(path, json.dumps(data, sort_keys=True))


def resolve_gateway(gateway: str | None) -> str:
    """The gateway's API URL: given, else C{$HOOPGW_GATEWAY}, else the one logged in to last."""
    gateway = gateway or os.environ.get("HOOPGW_GATEWAY")
    if not gateway:
        default = credentials_dir() / "default"
        if default.is_file():
            gateway = default.read_text().strip()
    if not gateway:
        raise LoginError("which gateway? give --gateway URL (its API listener, e.g. http://127.0.0.1:18009) or set HOOPGW_GATEWAY")
    return gateway.rstrip("/")


# -- HTTP ------------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """
    A redirect is answered as it is, never followed: urllib would carry the
    bearer token (or a refresh token) to wherever it points, https or not.
    """

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def call(
    url: str,
    *,
    form: dict[str, str] | None = None,
    body: Any = None,
    token: str | None = None,
    method: str | None = None,
) -> tuple[int, Any]:
    """
    One JSON call (the gateway's API, an IdP): a form or a JSON C{body},
    the caller's bearer C{token}; (HTTP status, decoded JSON answer).
    @raise CommandError: the server cannot be reached.
    """
    headers = {"Accept": "application/json"}
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _OPENER.open(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, {"error": str(e.reason)}
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise CommandError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None


def _request(url: str, data: dict[str, str] | None = None, token: str | None = None) -> tuple[int, dict[str, Any]]:
    code, answer = call(url, form=data, token=token)
    return code, answer if isinstance(answer, dict) else {}


def _secure(url: str, what: str = "an identity provider") -> str:
    """
    Tokens and the addresses they are sent to travel over https (plain http
    only on this machine: tests, a local IdP, a gateway's loopback API).
    """
    parts = urllib.parse.urlsplit(url)
    # Literals only: "localhost" may resolve to ::1 where another user can
    # bind the port the gateway listens on at 127.0.0.1.
    if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "::1"):
        raise LoginError(f"{url}: {what} is reached over https (plain http only to 127.0.0.1 or [::1])")
    return url


def discover(gateway: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the gateway's /.well-known/hoopgw, the first login issuer's OIDC metadata)."""
    code, published = _request(_secure(f"{gateway}/.well-known/hoopgw", "a gateway (its API listener as an ssl: endpoint)"))
    if code != 200:
        raise LoginError(f"{gateway}/.well-known/hoopgw answered {code}: is it the gateway's API listener?")
    issuers = [i for i in published.get("issuers", []) if isinstance(i, dict) and i.get("client_id")]
    if not issuers:
        raise LoginError(f"gateway {gateway} names no issuer to log in with ([[identity.issuers]] login_client_id)")
    issuer = issuers[0]
    code, metadata = _request(_secure(issuer["issuer"].rstrip("/") + "/.well-known/openid-configuration"))
    if code != 200 or not isinstance(metadata.get("token_endpoint"), str):
        raise LoginError(f"{issuer['issuer']}: no OpenID Provider metadata (answered {code})")
    if metadata.get("issuer") != issuer["issuer"]:  # OpenID Connect Discovery 1.0, section 4.3
        raise LoginError(f"{issuer['issuer']}: its metadata names another issuer ({metadata.get('issuer')!r})")
    _secure(metadata["token_endpoint"])
    return issuer, metadata


# -- the grants --------------------------------------------------------------------------


def _params(issuer: dict[str, Any]) -> dict[str, str]:
    params = {"client_id": issuer["client_id"], "scope": " ".join(issuer.get("scopes") or ["openid"])}
    if issuer.get("resource"):
        params["resource"] = issuer["resource"]
    return params


def _tokens(answer: tuple[int, dict[str, Any]], what: str) -> dict[str, Any]:
    code, body = answer
    if code != 200 or "access_token" not in body:
        error = body.get("error_description") or body.get("error") or f"HTTP {code}"
        raise LoginError(f"{what} failed: {error}")
    return body


def device_login(issuer: dict[str, Any], metadata: dict[str, Any], tell: Callable[[str], object],
                 sleep: Callable[[float], object] = time.sleep) -> dict[str, Any]:
    """RFC 8628: show the user a code and a URL, then poll until they approve (or it expires)."""
    endpoint = metadata.get("device_authorization_endpoint")
    if not endpoint:
        raise LoginError(f"{issuer['issuer']} offers no device authorization (RFC 8628): log in with a browser")
    code, device = _request(_secure(endpoint), _params(issuer))
    if code != 200 or "device_code" not in device:
        raise LoginError(f"device authorization failed: {device.get('error_description') or device.get('error') or code}")
    where = device.get("verification_uri_complete") or device["verification_uri"]
    tell(f"To log in, open {where}\n  (or {device['verification_uri']} and enter the code {device['user_code']})")
    interval = float(device.get("interval") or 5)
    deadline = time.monotonic() + float(device.get("expires_in") or 600)
    while time.monotonic() < deadline:
        sleep(interval)
        code, body = _request(metadata["token_endpoint"], {
            "grant_type": _DEVICE_GRANT, "device_code": device["device_code"], "client_id": issuer["client_id"],
        })
        error = body.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        return _tokens((code, body), "the device login")
    raise LoginError("the device code expired before it was approved: run hoopgw login again")


class _CallbackServer(http.server.HTTPServer):
    """The loopback server of a browser login: C{result} is the query of the callback it was sent."""

    def __init__(self, state: str) -> None:
        super().__init__(("127.0.0.1", 0), _Callback)
        self.state = state  # this login's: an answer with another is not taken
        self.result: dict[str, str] = {}


class _Callback(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        server = self.server
        assert isinstance(server, _CallbackServer)
        # Only this login's answer counts: another local process could call
        # the port first, to end the login or to slip in its own code (RFC 8252, 8.10).
        if urllib.parse.urlsplit(self.path).path != "/callback" or query.get("state") != server.state:
            self.send_error(404)
            return
        server.result = query
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        self.wfile.write("hoopgw: you are logged in; you can close this window.\n".encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


def browser_login(issuer: dict[str, Any], metadata: dict[str, Any], tell: Callable[[str], object],
                  timeout: float = 300) -> dict[str, Any] | None:
    """
    RFC 8252 with PKCE: the IdP's login page in the browser, the answer on a
    loopback port of this machine.  C{None} when no browser can be opened.
    """
    endpoint = metadata.get("authorization_endpoint")
    if not endpoint:
        return None
    state = secrets.token_urlsafe(16)
    server = _CallbackServer(state)
    server.timeout = 1
    redirect = f"http://127.0.0.1:{server.server_port}/callback"
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {**_params(issuer), "response_type": "code", "redirect_uri": redirect, "state": state,
              "code_challenge": challenge, "code_challenge_method": "S256"}
    if "offline_access" in params["scope"].split():
        params["prompt"] = "consent"  # OIDC: a refresh token is only granted with consent
    url = _secure(endpoint) + ("&" if "?" in endpoint else "?") + urllib.parse.urlencode(params)
    try:
        opened = webbrowser.open(url)
    except webbrowser.Error:
        opened = False
    if not opened:
        server.server_close()
        return None
    tell(f"Logging in in your browser; if it did not open, visit:\n  {url}")
    deadline = time.monotonic() + timeout
    try:
        while not server.result and time.monotonic() < deadline:
            server.handle_request()
    finally:
        server.server_close()
    result = server.result
    if not result:
        raise LoginError("no answer from the browser in time: run hoopgw login again (or --device)")
    if result.get("state") != state:
        raise LoginError("the answer's state is not this login's: run hoopgw login again")
    if "code" not in result:
        raise LoginError(f"the identity provider refused: {result.get('error_description') or result.get('error')}")
    return _tokens(_request(metadata["token_endpoint"], {
        "grant_type": "authorization_code", "code": result["code"], "redirect_uri": redirect,
        "client_id": issuer["client_id"], "code_verifier": verifier,
    }), "the code exchange")


def _has_display() -> bool:
    return bool(os.environ.get("BROWSER") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or sys.platform in ("darwin", "win32"))


# -- what the commands do ---------------------------------------------------------------


def login(gateway: str, *, device: bool = False, tell: Callable[[str], object] = print) -> dict[str, Any]:
    """Log in to C{gateway}'s identity provider and cache the tokens; returns the cache entry."""
    issuer, metadata = discover(gateway)
    tokens = None
    if not device and _has_display():
        tokens = browser_login(issuer, metadata, tell)
    if tokens is None:
        tokens = device_login(issuer, metadata, tell)
    entry = _entry(gateway, issuer, metadata, tokens)
    path = credentials_dir() / _file_name(gateway)
    _write(path, entry)
    write_private(credentials_dir() / "default", gateway + "\n")
    return entry


def _entry(gateway: str, issuer: dict[str, Any], metadata: dict[str, Any], tokens: dict[str, Any]) -> dict[str, Any]:
    return {
        "gateway": gateway,
        "issuer": issuer["issuer"],
        "client_id": issuer["client_id"],
        "token_endpoint": metadata["token_endpoint"],
        "revocation_endpoint": metadata.get("revocation_endpoint"),
        "access_token": tokens["access_token"],
        "refresh_token": tokens.get("refresh_token"),
        "expires_at": int(time.time()) + int(tokens.get("expires_in") or 300),
    }


def cached_token(gateway: str) -> str:
    """The cached access token for C{gateway}, refreshed first if it is (about to be) expired."""
    return cached_credential(gateway)[0]


def cached_credential(gateway: str) -> tuple[str, int]:
    """(the cached access token, its expiry as Unix time), refreshed first if it is (about to be) expired."""
    path = credentials_dir() / _file_name(gateway)
    entry = _read(path)
    if entry is None:
        raise LoginError(f"not logged in to {gateway}: run hoopgw login --gateway {gateway}")
    if entry.get("gateway") != gateway:  # one cache file per host and port
        raise LoginError(f"the token cached for this address is for {entry.get('gateway')}, not {gateway}: "
                         f"hoopgw login --gateway {gateway}")
    if int(entry.get("expires_at", 0)) - _MARGIN > time.time():
        return str(entry["access_token"]), int(entry["expires_at"])
    if not entry.get("refresh_token"):
        raise LoginError(f"your token for {gateway} expired and the identity provider gave no refresh token: hoopgw login")
    code, body = _request(_secure(entry["token_endpoint"]), {
        "grant_type": "refresh_token", "refresh_token": entry["refresh_token"], "client_id": entry["client_id"],
    })
    if code != 200 or "access_token" not in body:
        raise LoginError(f"your session with the identity provider ended ({body.get('error') or code}): hoopgw login")
    entry.update(access_token=body["access_token"], expires_at=int(time.time()) + int(body.get("expires_in") or 300))
    if body.get("refresh_token"):
        entry["refresh_token"] = body["refresh_token"]  # rotated
    _write(path, entry)
    return str(entry["access_token"]), int(entry["expires_at"])


def logout(gateway: str) -> bool:
    """Forget the tokens cached for C{gateway}; whether there were any."""
    path = credentials_dir() / _file_name(gateway)
    default = credentials_dir() / "default"
    if default.is_file() and default.read_text().strip() == gateway:
        default.unlink()
    if not path.exists():
        return False
    with contextlib.suppress(LoginError, CommandError):
        entry = _read(path) or {}
        if entry.get("refresh_token") and entry.get("revocation_endpoint"):
            # RFC 7009, best effort: a refresh token outlives the file otherwise.
            _request(_secure(entry["revocation_endpoint"]), {
                "token": entry["refresh_token"], "token_type_hint": "refresh_token", "client_id": entry["client_id"],
            })
    path.unlink()
    return True


def whoami(gateway: str) -> dict[str, Any]:
    url = _secure(f"{gateway}/api/v1/whoami", "a gateway (its API listener as an ssl: endpoint)")
    code, body = _request(url, token=cached_token(gateway))
    if code != 200:
        raise LoginError(f"{gateway} refused the cached token: {body.get('error') or code} (hoopgw login)")
    return body
