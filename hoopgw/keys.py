"""
The gateway's private key files (audit signing key, dev issuer key, TLS
key): created once with mode 0600 in a 0700 folder, never overwritten,
refused when readable by others.  Start-up only: this is blocking file I/O.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def create_private_file(path: Path, data: bytes) -> bool:
    """
    Create C{path} (mode 0600, its folder 0700) holding C{data}, durably.

    O_EXCL: two processes starting at once must not overwrite each other's
    key (what one already signed would stop verifying).

    @return: C{False} if the file already existed (nothing written).
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def load_or_create_ed25519(path: Path, *, what: str) -> Ed25519PrivateKey:
    """
    Load the Ed25519 key at C{path}, generating it on first use.

    @param what: names the key in errors ("audit signing key").
    @raise ValueError: the file is readable by others, or not an
        unencrypted PEM Ed25519 key; the message names the file.
    """
    path = Path(path)
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        if create_private_file(path, pem):
            return key
        # Another process created it first: use theirs.
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ValueError(
            f"{what} {str(path)!r}: expected mode 0600 (it signs on the gateway's behalf), "
            f"got {mode:04o}; run: chmod 600 {path}"
        )
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{what} {str(path)!r}: expected an unencrypted PEM private key: {e}") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{what} {str(path)!r}: expected an Ed25519 key, got {type(loaded).__name__}")
    return loaded
