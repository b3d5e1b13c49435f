"""
SSH keys enrolled with a token (L{hoopgw.identity.enrolled}): the key
parser, the bounded table on a L{Clock}, and the enrolment service's
records, written before anything takes effect.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from twisted.conch.ssh.keys import Key
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.errors import AuditUnavailable
from hoopgw.identity.enrolled import (
    ENROLLED_METHOD,
    EXPIRED,
    EnrolledKeys,
    Enrolment,
    EnrolmentError,
    SSHKeyEnrolment,
    check_proof,
    parse_public_key,
    sign_proof,
)
from hoopgw.identity.ssh import SSHKeyMap, openssh_fingerprint
from hoopgw.config import SSHKeyIdentity
from hoopgw.model import Identity
from hoopgw.testing import MemoryAuditLog

NOW = 1_800_000_000


def ed25519_key() -> Key:
    return Key(ed25519.Ed25519PrivateKey.generate())


def line(key: Key, comment: str = "me@laptop") -> str:
    return f"{key.public().toString('openssh').decode()} {comment}"


def token_of(subject: str) -> str:
    return f"token-of-{subject}"


def token_identity(subject: str = "alice", *, issuer: str = "https://idp", groups: tuple[str, ...] = ("dev",),
                   expires: int | None = NOW + 600) -> Identity:
    return Identity(issuer=issuer, subject=subject, groups=groups, auth_method="jwt", token_id="jti-1",
                    credential_sha256=hashlib.sha256(token_of(subject).encode()).hexdigest(), expires=expires)


class ParsePublicKeyTests(SynchronousTestCase):
    def test_accepted(self) -> None:
        """Ed25519, the three ECDSA curves and RSA of 3072 bits or more are read, with their fingerprint."""
        keys = [
            ed25519_key(),
            Key(ec.generate_private_key(ec.SECP256R1())),
            Key(ec.generate_private_key(ec.SECP384R1())),
            Key(ec.generate_private_key(ec.SECP521R1())),
            Key(rsa.generate_private_key(public_exponent=65537, key_size=3072)),
        ]
        for key in keys:
            parsed = parse_public_key(line(key))
            blob = key.public().blob()
            self.assertEqual((parsed.blob, parsed.type, parsed.fingerprint),
                             (blob, key.sshType().decode(), openssh_fingerprint(blob)))
        self.assertEqual(parse_public_key(line(keys[0], "")).blob, keys[0].public().blob())

    def refused(self, value: Any) -> str:
        with self.assertRaises(EnrolmentError) as caught:
            parse_public_key(value)
        self.assertEqual(caught.exception.code, 400)
        return str(caught.exception)

    def test_refused_types(self) -> None:
        """DSA, RSA under 3072 bits, certificates and security keys are refused, naming what is accepted."""
        self.assertIn("'ssh-dss' is not accepted", self.refused(line(Key(dsa.generate_private_key(1024)))))
        self.assertIn("RSA key of 2048 bits",
                      self.refused(line(Key(rsa.generate_private_key(public_exponent=65537, key_size=2048)))))
        self.assertIn("is not accepted", self.refused("ssh-ed25519-cert-v01@openssh.com AAAA"))
        self.assertIn("is not accepted", self.refused("sk-ssh-ed25519@openssh.com AAAA"))

    def test_refused_garbage(self) -> None:
        """Anything but one canonical public key line is a 400 saying what is wrong."""
        key = ed25519_key()
        blob = key.public().blob()
        ecdsa = Key(ec.generate_private_key(ec.SECP256R1())).public().blob()
        cases = {
            None: "required",
            "": "required",
            42: "required",
            "ssh-ed25519": "no key data",
            "ssh-ed25519 !!!not-base64": "not base64",
            "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519").decode(): "not a valid public key",
            "ssh-ed25519 " + base64.b64encode(blob + b"trailing").decode(): "not a canonical",
            # The blob of another type under this one's name.
            "ssh-ed25519 " + base64.b64encode(ecdsa).decode(): "not a canonical",
            "ssh-ed25519 " + base64.b64encode(struct.pack(">L", 2**31) + b"x").decode(): "not a valid public key",
            key.toString("openssh").decode(): "private key",
            "ssh-ed25519 " + "A" * 9000: "over 8192 characters",
        }
        for value, expected in cases.items():
            self.assertIn(expected, self.refused(value), value)

    def test_large_rsa_exponent(self) -> None:
        """An RSA key whose public exponent would make every signature check slow is refused."""
        numbers = rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key().public_numbers()
        big = Key(rsa.RSAPublicNumbers(e=2**40 + 1, n=numbers.n).public_key())
        self.assertIn("exponent", self.refused(line(big)))


class EnrolledKeysTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.keys = EnrolledKeys(clock=self.clock, per_subject=2, total=4, remember_expired=60)

    def enrol(self, key: Key, owner: Identity) -> Enrolment:
        parsed = parse_public_key(line(key))
        previous, displaced = self.keys.plan(parsed, owner)
        enrolment = Enrolment.of(parsed, owner, now=self.clock.seconds())
        self.keys.commit(enrolment, displaced)
        return enrolment

    def test_identity(self) -> None:
        """
        An enrolled key authenticates as its owner's issuer, subject and
        groups, with the enrolled-key method, its fingerprint as token_id
        and the token's expiry.
        """
        key = ed25519_key()
        self.enrol(key, token_identity())
        blob = key.public().blob()
        identity = self.keys.identity_for_public_key(blob)
        self.assertEqual(
            (identity.issuer, identity.subject, identity.groups, identity.auth_method, identity.token_id,
             identity.expires),
            ("https://idp", "alice", ("dev",), ENROLLED_METHOD, openssh_fingerprint(blob), NOW + 600),
        )
        self.assertIsNone(self.keys.refusal(blob))
        self.assertIsNone(self.keys.identity_for_public_key(ed25519_key().public().blob()))

    def test_expiry(self) -> None:
        """
        At the token's expiry the key stops authenticating and its refusal
        says it expired; once remembered long enough it is forgotten.
        """
        key = ed25519_key()
        blob = key.public().blob()
        self.enrol(key, token_identity())
        self.clock.advance(599)
        self.assertIsNotNone(self.keys.identity_for_public_key(blob))
        self.clock.advance(1)
        self.assertIsNone(self.keys.identity_for_public_key(blob))
        self.assertEqual(self.keys.refusal(blob), EXPIRED)
        self.clock.advance(60)
        self.assertIsNone(self.keys.refusal(blob))
        self.assertEqual(len(self.keys), 0)

    def test_renewal(self) -> None:
        """The same identity enrolling the same key again replaces it: new groups, new expiry."""
        key = ed25519_key()
        self.enrol(key, token_identity())
        parsed = parse_public_key(line(key))
        renewed, displaced = self.keys.plan(parsed, token_identity(groups=("dba",), expires=NOW + 900))
        self.assertIsNotNone(renewed)
        self.assertEqual(displaced, [])
        self.enrol(key, token_identity(groups=("dba",), expires=NOW + 900))
        identity = self.keys.identity_for_public_key(key.public().blob())
        self.assertEqual((identity.groups, identity.expires), (("dba",), NOW + 900))
        self.assertEqual(len(self.keys), 1)

    def test_another_identity(self) -> None:
        """
        Another identity (another subject, or the same subject from another
        issuer) cannot take a live key (409); once it expired, it can.
        """
        key = ed25519_key()
        self.enrol(key, token_identity())
        parsed = parse_public_key(line(key))
        for other in (token_identity("mallory"), token_identity(issuer="https://other-idp")):
            with self.assertRaises(EnrolmentError) as caught:
                self.keys.plan(parsed, other)
            self.assertEqual(caught.exception.code, 409)
            self.assertNotIn("alice", str(caught.exception))
        self.assertEqual(self.keys.identity_for_public_key(key.public().blob()).subject, "alice")
        self.clock.advance(600)
        self.enrol(key, token_identity("bob", expires=NOW + 1200))
        self.assertEqual(self.keys.identity_for_public_key(key.public().blob()).subject, "bob")

    def test_per_subject(self) -> None:
        """A subject's key beyond per_subject displaces its oldest live key, not anyone else's."""
        bob = ed25519_key()
        self.enrol(bob, token_identity("bob"))
        first, second, third = ed25519_key(), ed25519_key(), ed25519_key()
        self.enrol(first, token_identity())
        self.enrol(second, token_identity())
        _, displaced = self.keys.plan(parse_public_key(line(third)), token_identity())
        self.assertEqual([e.key.fingerprint for e in displaced], [openssh_fingerprint(first.public().blob())])
        self.enrol(third, token_identity())
        self.assertIsNone(self.keys.identity_for_public_key(first.public().blob()))
        for key in (second, third, bob):
            self.assertIsNotNone(self.keys.identity_for_public_key(key.public().blob()))
        # Renewing the oldest makes it the newest: the next one displaces the other.
        self.enrol(second, token_identity())
        self.enrol(ed25519_key(), token_identity())
        self.assertIsNone(self.keys.identity_for_public_key(third.public().blob()))
        self.assertIsNotNone(self.keys.identity_for_public_key(second.public().blob()))

    def test_total(self) -> None:
        """
        A full table refuses a new key (503) rather than evict someone's
        live one; expired entries make room; a renewal always fits.
        """
        keys = [ed25519_key() for _ in range(4)]
        for index, key in enumerate(keys):
            self.enrol(key, token_identity(f"user{index}", expires=NOW + 100 * (index + 1)))
        extra = parse_public_key(line(ed25519_key()))
        with self.assertRaises(EnrolmentError) as caught:
            self.keys.plan(extra, token_identity("late"))
        self.assertEqual(caught.exception.code, 503)
        self.enrol(keys[3], token_identity("user3", expires=NOW + 900))  # a renewal
        self.clock.advance(100)  # user0's expired (still remembered)
        self.keys.plan(extra, token_identity("late"))
        self.assertEqual(len(self.keys), 3)

    def test_remove(self) -> None:
        key = ed25519_key()
        enrolment = self.enrol(key, token_identity())
        self.assertIs(self.keys.remove(enrolment.key.fingerprint), enrolment)
        self.assertIsNone(self.keys.identity_for_public_key(key.public().blob()))
        self.assertIsNone(self.keys.remove(enrolment.key.fingerprint))


class ProofTests(SynchronousTestCase):
    """The proof of holding the key: the bearer token signed with it (an OpenSSH SSHSIG)."""

    def setUp(self) -> None:
        self.key = ed25519_key()
        self.public = parse_public_key(line(self.key))
        self.token_sha256 = hashlib.sha256(b"the-token").hexdigest()

    def refused(self, signature: Any, token_sha256: str | None = None) -> str:
        with self.assertRaises(EnrolmentError) as caught:
            check_proof(self.public, signature, token_sha256 or self.token_sha256)
        self.assertEqual(caught.exception.code, 400)
        return str(caught.exception)

    def test_valid(self) -> None:
        """The key's signature of the token verifies, armored or as bare base64, for every accepted type."""
        for key in (self.key, Key(ec.generate_private_key(ec.SECP384R1())),
                    Key(rsa.generate_private_key(public_exponent=65537, key_size=3072))):
            check_proof(parse_public_key(line(key)), sign_proof(key, "the-token"), self.token_sha256)
        armored = sign_proof(self.key, "the-token")
        check_proof(self.public, "".join(armored.splitlines()[1:-1]), self.token_sha256)

    def test_refused(self) -> None:
        """
        No signature, another token's, another key's, another namespace's,
        SHA-512, SHA-1 RSA, garbage and truncations are refused, saying why.
        """
        self.assertIn("required", self.refused(None))
        self.assertIn("does not verify", self.refused(sign_proof(self.key, "another-token")))
        self.assertIn("another key", self.refused(sign_proof(ed25519_key(), "the-token")))
        self.assertIn("not an OpenSSH signature", self.refused("-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----"))
        self.assertIn("not an OpenSSH signature", self.refused("@@@"))
        blob = base64.b64decode("".join(sign_proof(self.key, "the-token").splitlines()[1:-1]))
        for cut in (3, 10, 20, len(blob) - 1):
            self.assertIn("not an OpenSSH signature", self.refused(base64.b64encode(blob[:cut]).decode()))
        self.assertIn("not an OpenSSH signature", self.refused(base64.b64encode(blob + b"x").decode()))
        swapped = blob.replace(b"hoopgw-ssh-key", b"git-commit-sig")
        self.assertIn("namespace", self.refused(base64.b64encode(swapped).decode()))
        self.assertIn("sha512", self.refused(base64.b64encode(blob.replace(b"\x00\x00\x00\x06sha256", b"\x00\x00\x00\x06sha512")).decode()))
        rsa_key = Key(rsa.generate_private_key(public_exponent=65537, key_size=3072))
        from hoopgw.identity.enrolled import PROOF_NAMESPACE, proof_signed_data

        signed = proof_signed_data(bytes.fromhex(self.token_sha256))
        sha1 = rsa_key.sign(signed, signatureType=b"ssh-rsa")
        ns = lambda v: struct.pack(">L", len(v)) + v  # noqa: E731
        sshsig = (b"SSHSIG" + struct.pack(">L", 1) + ns(rsa_key.public().blob()) + ns(PROOF_NAMESPACE.encode())
                  + ns(b"") + ns(b"sha256") + ns(sha1))
        with self.assertRaises(EnrolmentError) as caught:
            check_proof(parse_public_key(line(rsa_key)), base64.b64encode(sshsig).decode(), self.token_sha256)
        self.assertIn("SHA-1", str(caught.exception))
        # A signature blob of the right shape whose bytes are wrong.
        forged = blob[:-10] + b"\x00" * 10
        self.assertIn("does not verify", self.refused(base64.b64encode(forged).decode()))


class SSHKeyEnrolmentTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.audit = MemoryAuditLog()
        self.mapped = ed25519_key()
        self.keys = EnrolledKeys(clock=self.clock, per_subject=2)
        self.service = SSHKeyEnrolment(
            keys=self.keys,
            static=SSHKeyMap.from_settings([SSHKeyIdentity(subject="ops", public_key=line(self.mapped))]),
            append=self.audit.append,
            gateway="gw",
        )

    def enrol(self, owner: Identity, key: Key, **kwargs: Any) -> Deferred:
        return self.service.enrol(owner, line(key), sign_proof(key, token_of(owner.subject)), **kwargs)

    def test_enrol(self) -> None:
        """
        An enrolment answers the fingerprint, expiry and subject, and its
        record (the identity, the key, the expiry; never the token) is
        written before the key works.
        """
        key = ed25519_key()
        seen: list[Any] = []
        original = self.audit.append

        def append(event: str, body: Any) -> Any:
            seen.append(self.keys.identity_for_public_key(key.public().blob()))
            return original(event, body)

        self.service.append = append
        answer = self.successResultOf(self.enrol(token_identity(), key, source="10.0.0.1:5000"))
        fingerprint = openssh_fingerprint(key.public().blob())
        self.assertEqual(
            (answer["fingerprint"], answer["expires"], answer["subject"], answer["type"]),
            (fingerprint, NOW + 600, "alice", "ssh-ed25519"),
        )
        self.assertEqual(seen, [None])
        [record] = self.audit.of("identity.ssh_key.enrolled")
        self.assertEqual(record["key"], {"fingerprint": fingerprint, "type": "ssh-ed25519", "bits": 256})
        self.assertEqual(record["identity"], token_identity().to_record())
        self.assertEqual((record["expires"], record["renews"], record["displaces"], record["source"], record["gateway"]),
                         (NOW + 600, False, [], "10.0.0.1:5000", "gw"))
        self.assertEqual(self.keys.identity_for_public_key(key.public().blob()).subject, "alice")

    def test_strict_log(self) -> None:
        """With a log that makes records durable later, the key works only once its record is durable."""
        held: list[Deferred] = []

        def append(event: str, body: Any) -> Deferred:
            self.audit.append(event, body)
            d: Deferred = Deferred()
            held.append(d)
            return d

        self.service.append = append
        key = ed25519_key()
        d = self.enrol(token_identity(), key)
        self.assertNoResult(d)
        self.assertIsNone(self.keys.identity_for_public_key(key.public().blob()))
        # Meanwhile another enrolment waits its turn.
        other = self.enrol(token_identity("bob"), key)
        self.assertNoResult(other)
        held[0].callback(0)
        self.successResultOf(d)
        self.assertEqual(self.keys.identity_for_public_key(key.public().blob()).subject, "alice")
        self.assertEqual(self.failureResultOf(other, EnrolmentError).value.code, 409)

    def test_log_down(self) -> None:
        """A log that cannot be written refuses the enrolment (AuditUnavailable): the key does not work."""
        self.audit.break_with("disk full")
        key = ed25519_key()
        self.failureResultOf(self.enrol(token_identity(), key), AuditUnavailable)
        self.assertIsNone(self.keys.identity_for_public_key(key.public().blob()))
        self.assertEqual(len(self.keys), 0)

    def test_lost_durability(self) -> None:
        """A record written but never made durable does not enrol the key."""
        def append(event: str, body: Any) -> Deferred:
            d: Deferred = Deferred()
            self.clock.callLater(1, d.errback, AuditUnavailable("fdatasync failed"))
            return d

        self.service.append = append
        key = ed25519_key()
        d = self.enrol(token_identity(), key)
        self.clock.advance(1)
        self.failureResultOf(d, AuditUnavailable)
        self.assertIsNone(self.keys.identity_for_public_key(key.public().blob()))

    def refused(self, d: Deferred, code: int) -> str:
        failure = self.failureResultOf(d, EnrolmentError)
        self.assertEqual(failure.value.code, code)
        self.assertEqual(self.audit.records, [])
        return str(failure.value)

    def test_refusals(self) -> None:
        """
        A token without expiry, an expired one, a mapped key, garbage and a
        key whose holder did not sign are refused, with no record.  Without
        the proof, nothing is said about the key (a mapped one gets 400,
        not 409).
        """
        key = ed25519_key()
        self.assertIn("no expiry", self.refused(self.enrol(token_identity(expires=None), key), 400))
        self.assertIn("expired", self.refused(self.enrol(token_identity(expires=NOW), key), 400))
        self.assertIn("[[identity.ssh_keys]]", self.refused(self.enrol(token_identity(), self.mapped), 409))
        proof = sign_proof(key, token_of("alice"))
        self.assertIn("not base64", self.refused(self.service.enrol(token_identity(), "ssh-ed25519 ***", proof), 400))
        self.assertIn("required", self.refused(self.service.enrol(token_identity(), line(key), None), 400))
        # A proof made with alice's token does not serve mallory's.
        self.assertIn("does not verify", self.refused(self.service.enrol(token_identity("mallory"), line(key), proof), 400))
        self.assertIn("another key", self.refused(self.service.enrol(token_identity(), line(self.mapped), proof), 400))

    def test_remove(self) -> None:
        """
        The owner removes their key (recorded first, then it stops
        working); anyone else is told there is no such key of theirs.
        """
        key = ed25519_key()
        fingerprint = self.successResultOf(self.enrol(token_identity(), key))["fingerprint"]
        failure = self.failureResultOf(self.service.remove(token_identity("mallory"), fingerprint), EnrolmentError)
        self.assertEqual(failure.value.code, 404)
        self.assertIsNotNone(self.keys.identity_for_public_key(key.public().blob()))
        answer = self.successResultOf(self.service.remove(token_identity(), fingerprint, source="10.0.0.1:1"))
        self.assertEqual((answer["fingerprint"], answer["removed"]), (fingerprint, True))
        self.assertIsNone(self.keys.identity_for_public_key(key.public().blob()))
        [record] = self.audit.of("identity.ssh_key.removed")
        self.assertEqual((record["key"]["fingerprint"], record["identity"]["sub"], record["source"]),
                         (fingerprint, "alice", "10.0.0.1:1"))
        self.assertEqual(self.failureResultOf(self.service.remove(token_identity(), fingerprint), EnrolmentError).value.code, 404)

    def test_remove_log_down(self) -> None:
        """With the log down, a removal is refused and nothing changes."""
        key = ed25519_key()
        fingerprint = self.successResultOf(self.enrol(token_identity(), key))["fingerprint"]
        self.audit.break_with("disk full")
        self.failureResultOf(self.service.remove(token_identity(), fingerprint), AuditUnavailable)
        self.assertIsNotNone(self.keys.identity_for_public_key(key.public().blob()))

    def test_displaced_recorded(self) -> None:
        """A key that displaces the subject's oldest names it in its record."""
        first, second, third = (ed25519_key() for _ in range(3))
        for key in (first, second):
            self.successResultOf(self.enrol(token_identity(), key))
        self.successResultOf(self.enrol(token_identity(), third))
        record = self.audit.of("identity.ssh_key.enrolled")[-1]
        self.assertEqual(record["displaces"], [openssh_fingerprint(first.public().blob())])
        self.assertEqual([k["fingerprint"] for k in self.service.owned_by(token_identity())],
                         [openssh_fingerprint(k.public().blob()) for k in (second, third)])
        self.successResultOf(self.enrol(token_identity(), third))
        self.assertTrue(self.audit.of("identity.ssh_key.enrolled")[-1]["renews"])

    def test_waiting_bounded(self) -> None:
        """Enrolments waiting for their turn are bounded: beyond that, 503."""
        self.service.max_waiting = 1
        self.service.append = lambda event, body: Deferred()  # never durable
        first, second, third = (self.enrol(token_identity(), ed25519_key()) for _ in range(3))
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.assertEqual(self.failureResultOf(third, EnrolmentError).value.code, 503)
