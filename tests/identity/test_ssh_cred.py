"""
SSH keys mapped to identities, and the twisted.cred checkers behind a Portal.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import Key
from twisted.cred.credentials import SSHPrivateKey, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementer

from hoopgw.config import IdentitySettings, SSHKeyIdentity
from hoopgw.identity import IdentityService, SSHKeyChecker, SSHKeyMap, TokenChecker
from hoopgw.identity.cred import IdentityUnauthorized
from hoopgw.model import Identity

ALICE = Key(ed25519.Ed25519PrivateKey.generate())
BOB = Key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
MALLORY = Key(ed25519.Ed25519PrivateKey.generate())


def line(key: Key, comment: str = "") -> str:
    text = key.public().toString("openssh").decode()
    return f"{text} {comment}".strip()


class IAvatar(Interface):
    pass


@implementer(IRealm)
class EchoRealm:
    """Returns the avatar id (the Identity) as the avatar."""

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return interfaces[0], avatarId, lambda: None


class SSHKeyMapTests(SynchronousTestCase):
    def test_lookup(self) -> None:
        """If a configured key's blob is looked up, its identity is returned
        with the OpenSSH fingerprint and the blob's SHA-256; other keys map
        to None."""
        keys = SSHKeyMap.from_settings([
            SSHKeyIdentity(subject="alice", public_key=line(ALICE, "alice@laptop"), groups=("dev",)),
            SSHKeyIdentity(subject="bob", public_key=line(BOB)),
        ])
        blob = ALICE.public().blob()
        digest = hashlib.sha256(blob).digest()
        self.assertEqual(
            keys.identity_for_public_key(blob),
            Identity(
                issuer="ssh-key", subject="alice", groups=("dev",), auth_method="publickey",
                token_id="SHA256:" + base64.b64encode(digest).decode().rstrip("="),
                credential_sha256=digest.hex(),
            ),
        )
        self.assertEqual(keys.identity_for_public_key(BOB.public().blob()).subject, "bob")
        self.assertIsNone(keys.identity_for_public_key(MALLORY.public().blob()))

    def test_fingerprint_matches_ssh_keygen(self) -> None:
        """If ssh-keygen is installed, the fingerprint equals what it prints."""
        try:
            directory = Path(self.mktemp())
            directory.mkdir()
            (directory / "k.pub").write_text(line(ALICE) + "\n")
            out = subprocess.run(["ssh-keygen", "-l", "-f", str(directory / "k.pub")], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            raise self.skipTest("ssh-keygen not available")
        keys = SSHKeyMap.from_settings([SSHKeyIdentity(subject="a", public_key=line(ALICE))])
        self.assertEqual(out.split()[1], keys.identity_for_public_key(ALICE.public().blob()).token_id)

    def test_bad_entries(self) -> None:
        """If an entry's key is unreadable, private, or already mapped, the
        error names the entry index."""
        private = ALICE.toString("openssh").decode()
        cases = [
            ([SSHKeyIdentity(subject="a", public_key="ssh-ed25519 not-base64!")], "identity.ssh_keys[0].public_key"),
            ([SSHKeyIdentity(subject="a", public_key=line(ALICE)), SSHKeyIdentity(subject="b", public_key="garbage")], "identity.ssh_keys[1].public_key"),
            ([SSHKeyIdentity(subject="a", public_key=private)], "private key"),
            ([SSHKeyIdentity(subject="a", public_key=line(ALICE)), SSHKeyIdentity(subject="b", public_key=line(ALICE, "copy"))], "already mapped"),
        ]
        for entries, expected in cases:
            with self.assertRaises(ValueError) as caught:
                SSHKeyMap.from_settings(entries)
            self.assertIn(expected, str(caught.exception))


class CheckerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.service = IdentityService.from_settings(
            IdentitySettings(ssh_keys=(SSHKeyIdentity(subject="alice", public_key=line(ALICE), groups=("dev",)),)),
            data_dir=Path(self.mktemp()),
            gateway_name="gw",
            reactor=self.clock,
        )
        self.portal = Portal(EchoRealm(), [TokenChecker(self.service), SSHKeyChecker(self.service)])

    def login(self, credentials: Any) -> Any:
        return self.portal.login(credentials, None, IAvatar)

    def test_token_login(self) -> None:
        """If the password is a valid token, the avatar is its Identity."""
        assert self.service.dev_issuer is not None
        token = self.service.dev_issuer.issue("alice", ["dba"])
        _, avatar, _ = self.successResultOf(self.login(UsernamePassword(b"appdb", token.encode())))
        self.assertEqual((avatar.subject, avatar.groups), ("alice", ("dba",)))

    def test_token_refused(self) -> None:
        """If the password is not a valid token, login fails with
        UnauthorizedLogin carrying the safe reason."""
        failure = self.failureResultOf(self.login(UsernamePassword(b"appdb", b"hunter2")), UnauthorizedLogin)
        self.assertEqual(failure.value.reason, "malformed token")
        failure = self.failureResultOf(self.login(UsernamePassword(b"appdb", b"\xff")), UnauthorizedLogin)
        self.assertEqual(failure.value.reason, "malformed token")

    def test_public_key_signed(self) -> None:
        """If a configured key signs the session data, the avatar is its
        Identity."""
        blob = ALICE.public().blob()
        data = b"session-data"
        credentials = SSHPrivateKey(b"web1", b"ssh-ed25519", blob, data, ALICE.sign(data))
        _, avatar, _ = self.successResultOf(self.login(credentials))
        self.assertEqual((avatar.subject, avatar.auth_method), ("alice", "publickey"))

    def test_public_key_query(self) -> None:
        """If a configured key is offered without a signature, the checker
        answers ValidPublicKey (the client may go on and sign)."""
        credentials = SSHPrivateKey(b"web1", b"ssh-ed25519", ALICE.public().blob(), None, None)
        self.failureResultOf(SSHKeyChecker(self.service).requestAvatarId(credentials), ValidPublicKey)

    def test_public_key_refused(self) -> None:
        """If the key is not configured, or the signature is by another key
        or over other data, login fails."""
        data = b"session-data"
        cases = [
            (SSHPrivateKey(b"web1", b"ssh-ed25519", MALLORY.public().blob(), data, MALLORY.sign(data)), "public key not authorized"),
            (SSHPrivateKey(b"web1", b"ssh-ed25519", ALICE.public().blob(), data, MALLORY.sign(data)), "bad signature"),
            (SSHPrivateKey(b"web1", b"ssh-ed25519", ALICE.public().blob(), data, ALICE.sign(b"other")), "bad signature"),
            (SSHPrivateKey(b"web1", b"ssh-ed25519", ALICE.public().blob(), data, b"junk"), "bad signature"),
        ]
        for credentials, reason in cases:
            failure = self.failureResultOf(self.login(credentials), IdentityUnauthorized)
            self.assertEqual(failure.value.reason, reason)
