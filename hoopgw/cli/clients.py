"""
The stock clients set up for a gateway you logged in to (`hoopgw login`):
`hoopgw psql|ssh|kubectl CONNECTION ...` exec the real client with your
cached token and the gateway's address and TLS trust; `hoopgw config
kubeconfig` and `hoopgw config ssh` write the same settings where kubectl
and ssh read them.

Everything comes from the gateway's C{/.well-known/hoopgw}, fetched over
https or on this machine (as `hoopgw login` does): its listeners' addresses,
the root of its TLS certificate when that is self-signed or private (pinned
in a file beside the token cache, so a client trusts that certificate and
no other), and its SSH host key (pinned in a known_hosts file there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any, NoReturn

from hoopgw.cli.login import LoginError, _file_name, _private, _request, _secure, cached_token, credentials_dir
from hoopgw.errors import CommandError

__all__ = ["Invocation", "gateway_info", "kubeconfig_entry", "kubectl", "psql", "write_kubeconfig"]

# Bound to every address: the client reaches it the way it reached the API.
_ANY = ("", "0.0.0.0", "::")
# Each wrapper's listener: what it is called in the discovery document and in `[listen]`.
_LISTENER = {"psql": "postgres", "kubectl": "http", "ssh": "ssh"}


def gateway_info(gateway: str) -> dict[str, Any]:
    """The gateway's C{/.well-known/hoopgw}."""
    code, info = _request(_secure(f"{gateway}/.well-known/hoopgw", "a gateway (its API listener as an ssl: endpoint)"))
    if code != 200:
        raise LoginError(f"{gateway}/.well-known/hoopgw answered {code}: is it the gateway's API listener?")
    return info


def _address(gateway: str, info: dict[str, Any], listener: str) -> tuple[str, int]:
    published = (info.get("listeners") or {}).get(listener)
    if not published:
        raise CommandError(f"gateway {gateway} has no {listener} listener ([listen] {listener})")
    host = published.get("host") or ""
    if host in _ANY:
        host = urllib.parse.urlsplit(gateway).hostname or "127.0.0.1"
    return host, int(published["port"])


def _saved(gateway: str, suffix: str, content: str) -> Path:
    """A file beside the gateway's token cache (owner-only folder), rewritten when its content changed."""
    folder = credentials_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _private(folder, "the credentials folder")
    path = folder / (Path(_file_name(gateway)).stem + suffix)
    if not path.exists() or path.read_text() != content:
        temporary = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.replace(temporary, path)
    return path


def _pinned_ca(gateway: str, info: dict[str, Any]) -> Path | None:
    ca = (info.get("tls") or {}).get("ca")
    return _saved(gateway, ".ca.pem", ca) if ca else None


def _server_name(host: str, info: dict[str, Any]) -> str | None:
    """
    The name to check the pinned certificate against when the host the
    client dials is not among its names (a self-signed certificate names
    this machine only): pinned, it is still that certificate or nothing.
    """
    names = (info.get("tls") or {}).get("names") or []
    if host in names or not names:
        return None
    return str(names[0])


class Invocation:
    """A client's argv and environment, ready to exec (or to run, in tests)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.env = env

    def exec(self) -> NoReturn:
        program = shutil.which(self.argv[0], path=self.env.get("PATH"))
        if program is None:
            raise CommandError(f"{self.argv[0]} is not installed (not found on PATH)")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(program, self.argv, self.env)


def psql(gateway: str, connection: str, args: list[str], environ: dict[str, str] | None = None) -> Invocation:
    """
    psql on C{connection}: the token as the password (PGPASSWORD, so it is not
    on a command line others can read), TLS required and checked against the
    pinned root (verify-full when the host is among the certificate's names,
    else verify-ca: still that certificate's key or nothing), else libpq's
    own trust store with verify-full.
    """
    env = dict(os.environ if environ is None else environ)
    info = gateway_info(gateway)
    host, port = _address(gateway, info, "postgres")
    env.update(PGHOST=host, PGPORT=str(port), PGDATABASE=connection, PGPASSWORD=cached_token(gateway))
    ca = _pinned_ca(gateway, info)
    if ca is not None:
        env["PGSSLROOTCERT"] = str(ca)
        env["PGSSLMODE"] = "verify-ca" if _server_name(host, info) else "verify-full"
    else:
        env["PGSSLMODE"] = "verify-full"
    # Not a connection string a user's -d could replace: PGDATABASE names the connection.
    return Invocation(["psql", *args], env)


def kubeconfig_entry(gateway: str, info: dict[str, Any], connection: str) -> dict[str, Any]:
    """
    One connection as kubectl sees it: the server (the http listener and the
    connection's path), the pinned root and server name, and the cached token
    through `hoopgw token exec-credential` (kubectl asks again before expiry).
    """
    host, port = _address(gateway, info, "http")
    authority = f"[{host}]" if ":" in host else host
    cluster: dict[str, Any] = {"server": f"https://{authority}:{port}/{urllib.parse.quote(connection, safe='')}"}
    ca = (info.get("tls") or {}).get("ca")
    if ca:
        import base64

        cluster["certificate-authority-data"] = base64.b64encode(ca.encode()).decode()
        server_name = _server_name(host, info)
        if server_name:
            cluster["tls-server-name"] = server_name
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": ["-m", "hoopgw", "token", "exec-credential", "--gateway", gateway],
            "interactiveMode": "Never",
        }
    }
    return {"cluster": cluster, "user": user}


def kubectl(gateway: str, connection: str, args: list[str], environ: dict[str, str] | None = None) -> Invocation:
    """kubectl on C{connection}, with a kubeconfig of its own beside the token cache (yours is not touched)."""
    env = dict(os.environ if environ is None else environ)
    cached_token(gateway)  # not logged in: say so now, not from inside kubectl's plugin call
    entry = kubeconfig_entry(gateway, gateway_info(gateway), connection)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": connection, "cluster": entry["cluster"]}],
        "users": [{"name": connection, "user": entry["user"]}],
        "contexts": [{"name": connection, "context": {"cluster": connection, "user": connection}}],
        "current-context": connection,
    }
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in connection)
    env["KUBECONFIG"] = str(_saved(gateway, f".{safe}.kubeconfig", json.dumps(config, indent=1) + "\n"))
    return Invocation(["kubectl", *args], env)


def write_kubeconfig(gateway: str, connection: str, *, path: str | None, name: str | None,
                     environ: dict[str, str] | None = None) -> tuple[str, Path | None]:
    """
    Add (or replace) a cluster, user and context named C{name} (default: the
    connection's name) in the user's kubeconfig, through kubectl's own
    C{kubectl config set-*} (it merges and keeps the rest of the file).
    Returns (the context's name, the file given, or None for kubectl's own choice).
    """
    env = dict(os.environ if environ is None else environ)
    cached_token(gateway)
    info = gateway_info(gateway)
    entry = kubeconfig_entry(gateway, info, connection)
    name = name or connection
    cluster, user = entry["cluster"], entry["user"]["exec"]
    target = ["--kubeconfig", path] if path else []
    trust = []
    if "certificate-authority-data" in cluster:
        trust = [f"--certificate-authority={_pinned_ca(gateway, info)}", "--embed-certs=true"]
        if "tls-server-name" in cluster:
            trust.append(f"--tls-server-name={cluster['tls-server-name']}")
    kubectl_program = shutil.which("kubectl", path=env.get("PATH"))
    if kubectl_program is None:
        raise CommandError("kubectl is not installed (not found on PATH): it writes the kubeconfig")

    def config(*step: str, check: bool = True) -> None:
        done = subprocess.run([kubectl_program, "config", *target, *step], env=env, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise CommandError(f"kubectl config {step[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    # Replaced whole, so nothing of an earlier run (an old CA, a server name) stays.
    config("delete-cluster", name, check=False)
    config("delete-user", name, check=False)
    config("set-cluster", name, f"--server={cluster['server']}", *trust)
    config("set-credentials", name, f"--exec-api-version={user['apiVersion']}", f"--exec-command={user['command']}",
           *(f"--exec-arg={a}" for a in user["args"]), f"--exec-interactive-mode={user['interactiveMode']}")
    config("set-context", name, f"--cluster={name}", f"--user={name}")
    return name, Path(path) if path else None
