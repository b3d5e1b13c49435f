"""
An SSH key enrolled with your cached token (C{hoopgw login}), so that plain
C{ssh} reaches the gateway's SSH listener as you:

    ssh -i "$(hoopgw ssh-key)" -p 12222 web1@gateway

The key is an Ed25519 key of this machine, beside the token cache
(C{credentials/<host>_<port>.ssh}, mode 0600), made on first use.  Each use
enrols it again with the current token (C{POST /api/v1/ssh-keys}, the token
signed with the key as proof of holding it): the gateway binds it to you
until that token expires, and forgets it when it restarts.

Runs in the CLI's own process, outside the reactor: blocking I/O is fine.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import os
import socket
import struct
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hoopgw.cli import login
from hoopgw.errors import CommandError, terminal_safe

__all__ = ["command", "ensure_ssh_key", "forget_ssh_key", "ssh_key_path"]

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_API = "a gateway (its API listener as an ssl: endpoint)"


def ssh_key_path(gateway: str) -> Path:
    """Where the key for C{gateway} is kept: the token cache's name, C{.ssh} for C{.json}."""
    return login.credentials_dir() / (Path(login._file_name(gateway)).stem + ".ssh")


def _load(path: Path) -> "Ed25519PrivateKey":
    # cryptography is imported here, not with the module: every hoopgw
    # command builds the parser that registers this one.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    login._private(path.parent, "the credentials folder", f"run chmod 700 {path.parent}")
    # Another user may have copied a key others could read: not repaired
    # with chmod, but replaced.
    login._private(path, "the SSH key", "it may have been copied: run hoopgw ssh-key --forget, then hoopgw ssh-key")
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise login.LoginError(f"{path}: not an unencrypted OpenSSH private key ({e}); "
                               "hoopgw ssh-key --forget makes a new one on next use") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise login.LoginError(f"{path}: not an Ed25519 key; hoopgw ssh-key --forget makes a new one on next use")
    return key


def _create(path: Path) -> "Ed25519PrivateKey":
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    login.private_folder()
    key = Ed25519PrivateKey.generate()
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())
    # Written whole under another name, then renamed: a concurrent run never
    # reads half a key.  (Not .tmp: the token cache uses that name.)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.link(temporary, path)  # fails if another run made one meanwhile: use that one
    except FileExistsError:
        return _load(path)
    finally:
        temporary.unlink(missing_ok=True)
    return key


def _public_line(key: "Ed25519PrivateKey") -> str:
    from cryptography.hazmat.primitives import serialization

    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{line.decode('ascii')} hoopgw@{socket.gethostname()}"


def _fingerprint(key: "Ed25519PrivateKey") -> str:
    from cryptography.hazmat.primitives import serialization

    # As hoopgw.identity.ssh.openssh_fingerprint, without importing the
    # gateway's identity service into the CLI.
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode("ascii")


def _ns(value: bytes) -> bytes:
    return struct.pack(">L", len(value)) + value


def _proof(key: "Ed25519PrivateKey", token: str) -> str:
    """
    The token signed with the key, as C{ssh-keygen -Y sign -n hoopgw-ssh-key
    -O hashalg=sha256} writes it (PROTOCOL.sshsig): the gateway enrols only
    a key whose holder signed the token that asks.
    """
    from cryptography.hazmat.primitives import serialization

    namespace, hash_name = b"hoopgw-ssh-key", b"sha256"
    signed = b"SSHSIG" + _ns(namespace) + _ns(b"") + _ns(hash_name) + _ns(hashlib.sha256(token.encode()).digest())
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    signature = _ns(b"ssh-ed25519") + _ns(key.sign(signed))
    blob = (b"SSHSIG" + struct.pack(">L", 1) + _ns(base64.b64decode(line.split()[1])) + _ns(namespace) + _ns(b"")
            + _ns(hash_name) + _ns(signature))
    text = base64.b64encode(blob).decode("ascii")
    lines = [text[i : i + 70] for i in range(0, len(text), 70)]
    return "\n".join(["-----BEGIN SSH SIGNATURE-----", *lines, "-----END SSH SIGNATURE-----"]) + "\n"


def enrol(gateway: str) -> tuple[Path, dict[str, Any]]:
    """L{ensure_ssh_key}, and the gateway's answer (fingerprint, subject, expires)."""
    token = login.cached_token(gateway)
    path = ssh_key_path(gateway)
    key = _load(path) if path.exists() else _create(path)
    url = login._secure(f"{gateway}/api/v1/ssh-keys", _API)
    body = {"public_key": _public_line(key), "signature": _proof(key, token)}
    code, answer = login.call(url, body=body, token=token, method="POST")
    if code != 201 or not isinstance(answer, dict):
        error = answer.get("error") if isinstance(answer, dict) else None
        hint = "; log in again: hoopgw login" if code == 401 else ""
        raise login.LoginError(f"{gateway} did not enrol your SSH key {_fingerprint(key)}: "
                               f"{error or 'no reason given'} (HTTP {code}){hint}")
    return path, answer


def ensure_ssh_key(gateway: str) -> Path:
    """
    Make (once) this machine's SSH key for C{gateway} and enrol it with the
    cached token, refreshed as needed; the private key's path, for C{ssh -i}.

    @raise LoginError: not logged in, a key file others can read, the
        gateway's refusal (its message).
    @raise CommandError: the gateway cannot be reached.
    """
    return enrol(gateway)[0]


def forget_ssh_key(gateway: str) -> bool:
    """
    Remove the key for C{gateway}: at the gateway (best effort: it expires
    with the token anyway), then here.  Whether there was one.
    """
    path = ssh_key_path(gateway)
    if not path.exists():
        return False
    try:
        fingerprint = _fingerprint(_load(path))
        url = login._secure(f"{gateway}/api/v1/ssh-keys/{urllib.parse.quote(fingerprint, safe='')}", _API)
        login.call(url, token=login.cached_token(gateway), method="DELETE")
    except CommandError:
        pass  # not logged in, unreachable, a key unreadable: the file goes all the same
    path.unlink()
    return True


# -- `hoopgw ssh-key` (registered by hoopgw.cli.parser) ------------------------------


def command(args: argparse.Namespace) -> int:
    """`hoopgw ssh-key`: enrol (or with --forget remove) this machine's key; prints its path."""
    gateway = login.resolve_gateway(args.gateway)
    # --quiet: ssh's "Match exec" runs this before every connection.
    quiet = getattr(args, "quiet", False)
    if args.forget:
        removed = forget_ssh_key(gateway)
        if not quiet:
            print(f"{'removed' if removed else 'there was no'} SSH key for {gateway}", file=sys.stderr)
        return 0
    path, answer = enrol(gateway)
    expires = answer.get("expires")
    until = (datetime.datetime.fromtimestamp(expires, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
             if isinstance(expires, int) else "?")
    if not quiet:
        print(terminal_safe(f"SSH key {answer.get('fingerprint')} enrolled at {gateway} as {answer.get('subject')} "
                            f"until {until} (when your token expires)"), file=sys.stderr)
    print(path)
    return 0
