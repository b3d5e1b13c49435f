"""
SSH public keys mapped to identities (C{[[identity.ssh_keys]]}).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Iterable, Mapping

from attrs import frozen
from twisted.conch.ssh.keys import BadKeyError, Key

from hoopgw.config import SSHKeyIdentity
from hoopgw.model import Identity

SSH_KEY_ISSUER = "ssh-key"


def openssh_fingerprint(blob: bytes) -> str:
    """The fingerprint C{ssh-keygen -l} prints: C{SHA256:} and unpadded base64."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode("ascii")


@frozen
class SSHKeyMap:
    """Lookup from a public key blob (wire format) to an L{Identity}."""

    identities: Mapping[bytes, Identity]

    @classmethod
    def from_settings(cls, entries: Iterable[SSHKeyIdentity]) -> "SSHKeyMap":
        """
        Parse each entry's C{public_key} (an OpenSSH public key line).

        @raise ValueError: naming the entry (C{identity.ssh_keys[N]}) whose
            key is unreadable, private, or mapped twice.
        """
        identities: dict[bytes, Identity] = {}
        for index, entry in enumerate(entries):
            where = f"identity.ssh_keys[{index}]"
            if not entry.subject:
                raise ValueError(f"{where}.subject: expected a non-empty string")
            try:
                key = Key.fromString(entry.public_key.strip().encode("utf-8"))
            except (BadKeyError, ValueError, TypeError, IndexError) as e:
                raise ValueError(
                    f"{where}.public_key: expected an OpenSSH public key line "
                    f"such as 'ssh-ed25519 AAAA... comment': {e}"
                ) from None
            if not key.isPublic():
                raise ValueError(
                    f"{where}.public_key: expected a public key, got a private key "
                    "(remove it from the configuration and rotate it)"
                )
            blob = key.blob()
            if blob in identities:
                raise ValueError(
                    f"{where}.public_key: the same key is already mapped to subject "
                    f"{identities[blob].subject!r}; a key maps to one identity"
                )
            identities[blob] = Identity(
                issuer=SSH_KEY_ISSUER,
                subject=entry.subject,
                groups=entry.groups,
                auth_method="publickey",
                token_id=openssh_fingerprint(blob),
                credential_sha256=hashlib.sha256(blob).hexdigest(),
            )
        return cls(identities)

    def identity_for_public_key(self, key_blob: bytes) -> Identity | None:
        return self.identities.get(key_blob)
