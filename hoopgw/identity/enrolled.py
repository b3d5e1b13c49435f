"""
SSH public keys enrolled with an identity token (C{POST /api/v1/ssh-keys}),
so that plain C{ssh} works for a logged-in person.

A key is bound to the identity its bearer token verified as (issuer,
subject, groups) until that token expires, never longer.  It authenticates
as that identity with C{auth_method = "ssh-key (enrolled)"} and the key's
fingerprint as C{token_id}, as a key of C{[[identity.ssh_keys]]} does with
its configured identity.

Enrolling needs proof of holding the private key: the bearer token signed
with it (an OpenSSH SSHSIG, L{check_proof}).  Else anyone could enrol
someone else's public key, and that person's C{ssh}, offering it, would
log in (and be recorded) as the enroller.

L{EnrolledKeys} is the table (synchronous, its clock injected);
L{SSHKeyEnrolment} enrols and removes keys, each change recorded in the
audit log before it takes effect.  The table is held in memory: a restart
forgets every enrolment (the CLI enrols again on each use).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from typing import Any, Callable, Mapping, TypeVar

from attrs import define, field, frozen
from twisted.conch.ssh.keys import Key
from twisted.internet.defer import Deferred, DeferredLock, fail
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from hoopgw.audit import events
from hoopgw.errors import AuditUnavailable, HoopgwError
from hoopgw.identity.ssh import openssh_fingerprint
from hoopgw.model import Identity

__all__ = [
    "ENROLLED_METHOD",
    "EXPIRED",
    "EnrolledKeys",
    "Enrolment",
    "EnrolmentError",
    "PublicKey",
    "PROOF_NAMESPACE",
    "SSHKeyEnrolment",
    "check_proof",
    "parse_public_key",
    "proof_signed_data",
    "sign_proof",
]

#: The C{auth_method} of an identity an enrolled key authenticated.
ENROLLED_METHOD = "ssh-key (enrolled)"
# The longest an enrolment lasts, whatever its token's expiry (seconds).
MAX_ENROLMENT = 12 * 3600
#: Why an enrolled key past its token's expiry is refused (the C{auth.failed} reason).
EXPIRED = "enrolled key expired"

# Types whose keys are strong today.  No DSA (1024 bits, SHA-1), no
# certificates (their principals and options would need a CA policy), no
# security keys (sk-*: Conch cannot verify their signatures).
_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
MIN_RSA_BITS = 3072
# OpenSSH's own limit; and an RSA key's verification cost grows with its
# size and public exponent, which every login with it pays.
MAX_RSA_BITS = 16384
_MAX_RSA_EXPONENT = 2**32
_MAX_LINE = 8192
_EXAMPLE = "'ssh-ed25519 AAAA... comment'"


class EnrolmentError(HoopgwError):
    """A request refused; C{code} is the HTTP status the API answers with, the message says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@frozen
class PublicKey:
    """A public key as enrolled: its wire blob (what clients offer), type, size and fingerprint."""

    blob: bytes = field(repr=False)
    type: str
    bits: int
    fingerprint: str

    def to_record(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "type": self.type, "bits": self.bits}


def parse_public_key(line: Any) -> PublicKey:
    """
    Read an OpenSSH public key line (C{type base64 [comment]}) of an
    accepted type and size.

    @raise EnrolmentError: 400, saying what is wrong with it.
    """
    if not isinstance(line, str) or not line.strip():
        raise EnrolmentError(400, f"public_key: required; expected an OpenSSH public key line such as {_EXAMPLE}")
    if len(line) > _MAX_LINE:
        raise EnrolmentError(400, f"public_key: over {_MAX_LINE} characters; expected one public key line")
    if "PRIVATE KEY" in line:
        raise EnrolmentError(400, "public_key: this is a private key: send the public key (the .pub file) "
                                  "and consider this private key exposed")
    parts = line.strip().split(None, 2)
    declared = parts[0]
    if declared not in _TYPES:
        raise EnrolmentError(400, f"public_key: key type {declared[:60]!r} is not accepted; expected one of "
                                  f"{', '.join(_TYPES)} (RSA of at least {MIN_RSA_BITS} bits)")
    if len(parts) < 2:
        raise EnrolmentError(400, f"public_key: no key data after the type; expected {_EXAMPLE}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise EnrolmentError(400, "public_key: the key data is not base64") from None
    try:
        key = Key.fromString(blob)
    except Exception:
        # Conch raises many kinds on a malformed blob (BadKeyError, struct,
        # index, cryptography's ValueError...): all mean "not a key".
        raise EnrolmentError(400, "public_key: the key data is not a valid public key") from None
    # Lookups compare the blob a client offers: only the one encoding of a
    # key (no trailing bytes, no padded numbers) is enrolled.
    if key.sshType().decode("ascii", "replace") != declared or key.blob() != blob:
        raise EnrolmentError(400, f"public_key: the key data is not a canonical {declared} key")
    bits = key.size()
    if declared == "ssh-rsa":
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise EnrolmentError(400, f"public_key: an RSA key of {bits} bits; expected {MIN_RSA_BITS} to "
                                      f"{MAX_RSA_BITS} bits (or use ssh-ed25519)")
        if key.data()["e"] > _MAX_RSA_EXPONENT:
            raise EnrolmentError(400, "public_key: the RSA public exponent is unusually large; expected 65537")
    return PublicKey(blob=blob, type=declared, bits=bits, fingerprint=openssh_fingerprint(blob))


#: The SSHSIG namespace of a proof (C{ssh-keygen -Y sign -n hoopgw-ssh-key}): a
#: signature made for anything else (git commits, files) is not one.
PROOF_NAMESPACE = "hoopgw-ssh-key"
# The message signed is the bearer token; its SHA-256 is what the gateway
# knows of it (Identity.credential_sha256), so SHA-256 is the hash.
_PROOF_HASH = "sha256"
_SSHSIG = b"SSHSIG"
_ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")
_HOW = (f"sign your bearer token with the key: ssh-keygen -Y sign -n {PROOF_NAMESPACE} -O hashalg={_PROOF_HASH} "
        "-f KEY < TOKEN_FILE (hoopgw ssh-key does this)")


def _string(data: bytes, at: int) -> tuple[bytes, int]:
    """An SSH C{string} at offset C{at}, and the offset after it; ValueError if cut short."""
    if at + 4 > len(data):
        raise ValueError("truncated")
    (length,) = struct.unpack(">L", data[at : at + 4])
    end = at + 4 + length
    if end > len(data):
        raise ValueError("truncated")
    return data[at + 4 : end], end


def _ns(value: bytes) -> bytes:
    return struct.pack(">L", len(value)) + value


def proof_signed_data(token_sha256: bytes, reserved: bytes = b"") -> bytes:
    """What a proof's signature covers (PROTOCOL.sshsig): the namespace and the token's SHA-256."""
    return _SSHSIG + _ns(PROOF_NAMESPACE.encode()) + _ns(reserved) + _ns(_PROOF_HASH.encode()) + _ns(token_sha256)


def sign_proof(key: Key, token: str) -> str:
    """
    C{key}'s proof for enrolling it with C{token} (a Conch private key), as
    C{ssh-keygen -Y sign -n hoopgw-ssh-key -O hashalg=sha256} writes it.
    """
    signed = proof_signed_data(hashlib.sha256(token.encode("utf-8")).digest())
    # RSA: a SHA-2 signature, never Conch's default SHA-1 one.
    signature = key.sign(signed, signatureType=b"rsa-sha2-512") if key.type() == "RSA" else key.sign(signed)
    blob = (_SSHSIG + struct.pack(">L", 1) + _ns(key.public().blob()) + _ns(PROOF_NAMESPACE.encode()) + _ns(b"")
            + _ns(_PROOF_HASH.encode()) + _ns(signature))
    text = base64.b64encode(blob).decode("ascii")
    return "\n".join([_ARMOR[0], *(text[i : i + 70] for i in range(0, len(text), 70)), _ARMOR[1]]) + "\n"


def check_proof(key: PublicKey, signature: Any, token_sha256_hex: str | None) -> None:
    """
    Check that C{signature} (an armored OpenSSH SSHSIG, or its base64) is
    C{key}'s signature of the bearer token whose SHA-256 is
    C{token_sha256_hex}, in the namespace L{PROOF_NAMESPACE}.

    @raise EnrolmentError: 400, saying what is wrong with it.
    """
    if not isinstance(signature, str) or not signature.strip():
        raise EnrolmentError(400, f"signature: required: proof that you hold the private key; {_HOW}")
    if token_sha256_hex is None:
        raise EnrolmentError(400, "this token cannot be tied to a signature (its identity carries no credential hash)")
    text = signature.strip()
    if text.startswith(_ARMOR[0]):
        if not text.endswith(_ARMOR[1]):
            raise EnrolmentError(400, f"signature: an armored SSH signature ends with {_ARMOR[1]}")
        text = text[len(_ARMOR[0]) : -len(_ARMOR[1])]
    try:
        blob = base64.b64decode("".join(text.split()), validate=True)
        if blob[:6] != _SSHSIG or blob[6:10] != struct.pack(">L", 1):
            raise ValueError("not an SSHSIG")
        signer, at = _string(blob, 10)
        namespace, at = _string(blob, at)
        reserved, at = _string(blob, at)
        hash_name, at = _string(blob, at)
        inner, at = _string(blob, at)
        if at != len(blob):
            raise ValueError("trailing data")
        algorithm, _ = _string(inner, 0)
    except (binascii.Error, ValueError):
        raise EnrolmentError(400, f"signature: not an OpenSSH signature (SSHSIG); {_HOW}") from None
    if not hmac.compare_digest(signer, key.blob):
        raise EnrolmentError(400, "signature: made with another key than public_key")
    if namespace != PROOF_NAMESPACE.encode():
        raise EnrolmentError(400, f"signature: made for namespace {namespace[:60]!r}, not {PROOF_NAMESPACE!r}; {_HOW}")
    if hash_name != _PROOF_HASH.encode():
        raise EnrolmentError(400, f"signature: hashed with {hash_name[:20]!r}; expected {_PROOF_HASH}; {_HOW}")
    if algorithm == b"ssh-rsa":
        raise EnrolmentError(400, "signature: an RSA signature with SHA-1; expected rsa-sha2-256 or rsa-sha2-512")
    try:
        valid = Key.fromString(key.blob).verify(inner, proof_signed_data(bytes.fromhex(token_sha256_hex), reserved))
    except Exception:
        valid = False  # a malformed signature is a bad one
    if not valid:
        raise EnrolmentError(400, f"signature: does not verify: not this key's signature of your bearer token; {_HOW}")


def _owner(identity: Identity) -> tuple[str, str]:
    """Whom an enrolment belongs to: the same subject from another issuer is someone else."""
    return identity.issuer, identity.subject


@frozen
class Enrolment:
    """
    One enrolled key.  C{owner} is the identity the token verified as;
    C{identity} is what the key authenticates as (the same person, with
    the enrolled-key method and the key's fingerprint).
    """

    key: PublicKey
    owner: Identity
    enrolled: float
    expires: int
    identity: Identity

    @classmethod
    def of(cls, key: PublicKey, owner: Identity, *, now: float) -> "Enrolment":
        if owner.expires is None:
            raise ValueError("an enrolment lasts until its token expires: the token has no expiry")
        # Never past the token, and never long past now whatever the token
        # says: a key withdrawn from the issuer's JWKS stops new tokens, and
        # an enrolment made with an old one must not outlive that by days.
        expires = min(owner.expires, int(now) + MAX_ENROLMENT)
        identity = Identity(
            issuer=owner.issuer,
            subject=owner.subject,
            groups=owner.groups,
            auth_method=ENROLLED_METHOD,
            token_id=key.fingerprint,
            credential_sha256=hashlib.sha256(key.blob).hexdigest(),
            expires=expires,
        )
        return cls(key=key, owner=owner, enrolled=now, expires=expires, identity=identity)

    def to_json(self) -> dict[str, Any]:
        """What the API answers about it."""
        return {
            "fingerprint": self.key.fingerprint,
            "type": self.key.type,
            "issuer": self.owner.issuer,
            "subject": self.owner.subject,
            "groups": list(self.owner.groups),
            "enrolled": int(self.enrolled),
            "expires": self.expires,
        }


@define
class EnrolledKeys:
    """
    The enrolled keys by fingerprint, bounded: at most C{per_subject} per
    identity (a new key displaces that identity's oldest) and C{total} in
    all (beyond that a new enrolment is refused, rather than one person's
    enrolments evicting another's).  An expired entry is kept for
    C{remember_expired} seconds so that a refusal can say it expired, and
    is purged lazily (on the next enrolment, or a lookup of it).
    """

    clock: IReactorTime
    per_subject: int = 5
    total: int = 10_000
    remember_expired: float = 3600.0
    _entries: dict[str, Enrolment] = field(factory=dict, init=False)

    def __len__(self) -> int:
        return len(self._entries)

    def _now(self) -> float:
        return float(self.clock.seconds())

    def _find(self, blob: bytes) -> Enrolment | None:
        entry = self._entries.get(openssh_fingerprint(blob))
        if entry is None or entry.key.blob != blob:
            return None
        if self._now() >= entry.expires + self.remember_expired:
            del self._entries[entry.key.fingerprint]
            return None
        return entry

    def identity_for_public_key(self, blob: bytes) -> Identity | None:
        """The identity of an enrolled key whose token has not expired, else C{None}."""
        entry = self._find(blob)
        if entry is None or self._now() >= entry.expires:
            return None
        return entry.identity

    def refusal(self, blob: bytes) -> str | None:
        """Why an enrolled key is refused (L{EXPIRED}), or C{None} if it is not an enrolled key or is live."""
        entry = self._find(blob)
        if entry is not None and self._now() >= entry.expires:
            return EXPIRED
        return None

    def get(self, fingerprint: str) -> Enrolment | None:
        return self._entries.get(fingerprint)

    def owned_by(self, owner: Identity) -> list[Enrolment]:
        """C{owner}'s enrolments, oldest first, expired ones included."""
        return [e for e in self._entries.values() if _owner(e.owner) == _owner(owner)]

    def purge(self, *, all_expired: bool = False) -> None:
        """Drop entries expired C{remember_expired} ago (C{all_expired}: every expired one)."""
        now = self._now()
        grace = 0.0 if all_expired else self.remember_expired
        for fingerprint in [f for f, e in self._entries.items() if now >= e.expires + grace]:
            del self._entries[fingerprint]

    def plan(self, key: PublicKey, owner: Identity) -> tuple[Enrolment | None, list[Enrolment]]:
        """
        Check that C{owner} may enrol C{key} now.  Changes nothing, but for
        purging every expired entry when the table is full.

        @return: (the entry this one renews, if C{owner} enrolled the same
            key before; the live entries of C{owner} it displaces).
        @raise EnrolmentError: 409 (another identity's live key), 503 (the
            table is full).
        """
        now = self._now()
        previous = self._entries.get(key.fingerprint)
        if previous is not None and _owner(previous.owner) != _owner(owner):
            if now < previous.expires:
                raise EnrolmentError(409, f"key {key.fingerprint} is enrolled by another identity; "
                                          "enrol a key of your own")
            previous = None  # expired: free for anyone
        elif previous is not None and now >= previous.expires:
            previous = None  # the owner's, expired: a new enrolment, not a renewal
        others = [e for e in self.owned_by(owner) if e.key.fingerprint != key.fingerprint and now < e.expires]
        displaced = others[: max(0, len(others) - self.per_subject + 1)]
        if previous is None and not displaced and key.fingerprint not in self._entries:
            if len(self._entries) >= self.total:
                self.purge(all_expired=True)
            if len(self._entries) >= self.total:
                raise EnrolmentError(503, f"the gateway holds its maximum of {self.total} enrolled SSH keys; "
                                          "try again once some have expired")
        return previous, displaced

    def commit(self, enrolment: Enrolment, displaced: list[Enrolment]) -> None:
        """Make a planned enrolment take effect (L{plan} checked it; nothing happened in between)."""
        for entry in displaced:
            self._entries.pop(entry.key.fingerprint, None)
        fingerprint = enrolment.key.fingerprint
        self._entries.pop(fingerprint, None)  # a renewal counts as the newest
        self._entries[fingerprint] = enrolment
        self.purge()

    def remove(self, fingerprint: str) -> Enrolment | None:
        return self._entries.pop(fingerprint, None)


#: Writes an audit record; fires with its seq (L{hoopgw.interfaces.IAuditLog.append}).
Append = Callable[[str, dict[str, Any]], Deferred[int]]
_T = TypeVar("_T")


@define
class SSHKeyEnrolment:
    """
    Enrols and removes keys on behalf of the identity a token verified
    as.  Each change is recorded (C{identity.ssh_key.enrolled},
    C{identity.ssh_key.removed}) before it takes effect: an enrolment only
    once its record is durable, and none at all if the record cannot be
    written (L{AuditUnavailable}: the API answers 503).

    Changes happen one at a time, so that what a record says (the key it
    renews, the keys it displaces) is what then happens.

    @ivar static: the keys of C{[[identity.ssh_keys]]}: never enrolled.
    """

    keys: EnrolledKeys
    static: Any  # SSHKeyMap, or anything with identity_for_public_key(blob)
    append: Append
    gateway: str = "hoopgw"
    max_waiting: int = 100
    _lock: DeferredLock = field(factory=DeferredLock, init=False)

    def _serially(self, f: Callable[[], Deferred[_T]]) -> Deferred[_T]:
        if len(self._lock.waiting) >= self.max_waiting:
            return fail(EnrolmentError(503, "too many SSH key enrolments at once; try again in a moment"))
        return self._lock.run(f)

    def _record(self, event: str, body: dict[str, Any]) -> Deferred[int]:
        try:
            return self.append(event, body)
        except Exception:
            return fail()

    def enrol(
        self, owner: Identity, public_key: Any, signature: Any, *, source: str | None = None
    ) -> Deferred[dict[str, Any]]:
        """
        Enrol C{public_key} (an OpenSSH public key line) for C{owner} until
        its token expires, C{signature} proving its holder signed that
        token (L{check_proof}).  Fires with the enrolment's JSON; fails
        with L{EnrolmentError} (nothing was recorded) or
        L{AuditUnavailable} (nothing was enrolled).
        """
        try:
            key = parse_public_key(public_key)
            # Before anything is said about the key (mapped, someone's):
            # only its holder learns that.
            check_proof(key, signature, owner.credential_sha256)
            now = float(self.keys.clock.seconds())
            if owner.expires is None:
                raise EnrolmentError(400, "your token has no expiry (no exp claim): an enrolled key lasts until "
                                          "the token that enrolled it expires, so such a token cannot enrol one")
            if owner.expires <= now:
                raise EnrolmentError(400, "your token has expired: log in again (hoopgw login)")
            if self.static.identity_for_public_key(key.blob) is not None:
                raise EnrolmentError(409, f"key {key.fingerprint} is mapped in the gateway's configuration "
                                          "([[identity.ssh_keys]]); it is not enrolled")
        except EnrolmentError:
            return fail()
        return self._serially(lambda: self._enrol(owner, key, source))

    def _enrol(self, owner: Identity, key: PublicKey, source: str | None) -> Deferred[dict[str, Any]]:
        try:
            previous, displaced = self.keys.plan(key, owner)
        except EnrolmentError:
            return fail()
        enrolment = Enrolment.of(key, owner, now=float(self.keys.clock.seconds()))
        body = events.ssh_key(
            self.gateway, owner.to_record(), key.to_record(), enrolment.expires, source=source,
            renews=previous is not None, displaces=[e.key.fingerprint for e in displaced],
        )  # fmt: skip
        d = self._record(events.SSH_KEY_ENROLLED, body)

        def recorded(_: object) -> dict[str, Any]:
            self.keys.commit(enrolment, displaced)
            return enrolment.to_json()

        return d.addCallback(recorded)

    def remove(self, owner: Identity, fingerprint: str, *, source: str | None = None) -> Deferred[dict[str, Any]]:
        """
        Remove C{owner}'s enrolled key C{fingerprint} (logging out).  Fails
        with L{EnrolmentError} 404 for a key that is not C{owner}'s (whose
        it is, if anyone's, is not said), or 503.
        """
        return self._serially(lambda: self._remove(owner, fingerprint, source))

    def _remove(self, owner: Identity, fingerprint: str, source: str | None) -> Deferred[dict[str, Any]]:
        entry = self.keys.get(fingerprint)
        if entry is None or _owner(entry.owner) != _owner(owner):
            return fail(EnrolmentError(404, f"no enrolled key {fingerprint[:80]!r} of yours"))
        body = events.ssh_key(self.gateway, owner.to_record(), entry.key.to_record(), entry.expires, source=source)
        d = self._record(events.SSH_KEY_REMOVED, body)
        refused: list[Failure] = []

        def keep(failure: Failure) -> Failure:
            refused.append(failure)
            return failure

        d.addErrback(keep)
        if refused:
            # The log refused the record at once: nothing was done.
            d.addErrback(lambda _: None)
            return fail(refused[0])
        # Written (write(2)): the key stops working now.  Taking access
        # away does not wait for durability, and happens even if that fails.
        self.keys.remove(fingerprint)

        def unsynced(failure: Failure) -> Failure:
            failure.trap(AuditUnavailable)
            raise EnrolmentError(503, f"key {fingerprint} is removed, but the audit log failed: {failure.value}")

        return d.addCallbacks(lambda _: {**entry.to_json(), "removed": True}, unsynced)

    def owned_by(self, owner: Identity) -> list[Mapping[str, Any]]:
        """C{owner}'s enrolled keys that have not expired, oldest first."""
        now = float(self.keys.clock.seconds())
        return [e.to_json() for e in self.keys.owned_by(owner) if now < e.expires]
