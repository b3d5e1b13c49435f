"""
JOSE pieces that involve no I/O: splitting a compact JWS, checking its
header against RFC 8725, parsing a JWKS into keys, and matching a key to an
algorithm.

Signature verification itself is PyJWT's (hand-written JOSE crypto is a CVE
magnet); everything PyJWT does not decide for us (which key, which
algorithm, which headers are acceptable) is decided here, before PyJWT ever
sees the token.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Iterable, Mapping

from attrs import frozen
from jwt import PyJWK
from jwt.exceptions import PyJWKError

from hoopgw.errors import AuthenticationFailed

#: Tokens longer than this are refused before any parsing: a bearer token
#: is a few KiB at most, and parsing is the attack surface.
MAX_TOKEN_LENGTH = 16 * 1024

#: Asymmetric JWS algorithms an issuer may be pinned to, with the JWK key
#: type (and curve, where the algorithm fixes one) that must sign them.
#: RFC 8725 section 3.1: the verifier, not the token, chooses the algorithm.
ASYMMETRIC_ALGORITHMS: Mapping[str, tuple[str, frozenset[str] | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "ES256K": ("EC", frozenset({"secp256k1"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}

#: Headers that would let the token choose the key that verifies it (RFC
#: 8725 section 3.10 and the jku/x5u/jwk key-injection attacks); "b64"
#: (RFC 7797) changes what is signed.  None is honoured, so any is refused.
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "b64")

#: Explicit typing (RFC 8725 section 3.11, RFC 9068 section 2.1); compared
#: case-insensitively with an optional "application/" prefix (RFC 7515
#: section 4.1.9).
ACCEPTED_TYPES = frozenset({"at+jwt", "jwt"})


def check_algorithms(issuer: str, algorithms: Iterable[str]) -> tuple[str, ...]:
    """
    Validate an issuer's pinned algorithms.

    @raise ValueError: naming the issuer and the offending algorithm if any
        is symmetric, C{none} or unknown, or if none is given.
    """
    pinned = tuple(algorithms)
    if not pinned:
        raise ValueError(
            f"identity issuer {issuer!r}: algorithms: expected at least one of "
            f"{', '.join(ASYMMETRIC_ALGORITHMS)}, got an empty list"
        )
    for alg in pinned:
        if alg in ASYMMETRIC_ALGORITHMS:
            continue
        if alg.upper().startswith("HS") or alg.lower() == "none":
            raise ValueError(
                f"identity issuer {issuer!r}: algorithms: {alg!r} is not allowed: "
                "only asymmetric algorithms (RS*, PS*, ES*, EdDSA) may be pinned, "
                "because an HMAC key known to the gateway could sign tokens for "
                "any subject and 'none' signs nothing"
            )
        raise ValueError(
            f"identity issuer {issuer!r}: algorithms: expected one of "
            f"{', '.join(ASYMMETRIC_ALGORITHMS)}, got {alg!r}"
        )
    return pinned


def _b64decode(segment: str) -> bytes:
    # base64url without padding (RFC 7515 section 2); anything else is
    # malformed rather than "repaired".
    if not segment or "=" in segment or len(segment) % 4 == 1:
        raise AuthenticationFailed("malformed token")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise AuthenticationFailed("malformed token") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 section 5.2 step 4 / RFC 8725: a JSON object with duplicate
    # member names is ambiguous; parsers disagree about which one wins.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AuthenticationFailed("malformed token") from None
    if not isinstance(value, dict):
        raise AuthenticationFailed("malformed token")
    return value


_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@frozen
class UnverifiedToken:
    """
    A compact JWS split and decoded, B{not} verified: only good for routing
    (which issuer, which key) and header checks.
    """

    header: Mapping[str, Any]
    claims: Mapping[str, Any]


def parse_unverified(token: str) -> UnverifiedToken:
    """
    Split and decode a compact JWS without verifying it.

    @raise AuthenticationFailed: C{"malformed token"} (or C{"token too
        large"}) for anything that is not three base64url segments whose
        first two are JSON objects.
    """
    if not isinstance(token, str):
        raise AuthenticationFailed("malformed token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise AuthenticationFailed("token too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthenticationFailed("malformed token")
    for part in parts:
        if not set(part) <= _BASE64URL:
            raise AuthenticationFailed("malformed token")
    header = _json_object(_b64decode(parts[0]))
    claims = _json_object(_b64decode(parts[1]))
    # An empty signature is left for the header checks to refuse, so that
    # "alg": "none" gets its precise reason.
    if parts[2]:
        _b64decode(parts[2])
    return UnverifiedToken(header=header, claims=claims)


def decode_claims(payload: bytes) -> dict[str, Any]:
    """Parse a verified payload with the same strict rules as L{parse_unverified}."""
    return _json_object(payload)


def check_header(header: Mapping[str, Any], allowed: Iterable[str]) -> str:
    """
    Apply RFC 8725 to a JWS header.

    @return: the header's C{alg}, known to be one of C{allowed}.
    @raise AuthenticationFailed: naming the refused header or algorithm.
    """
    if "crit" in header:
        # RFC 7515 section 4.1.11: we understand no extension, so must refuse.
        raise AuthenticationFailed("forbidden header crit")
    for name in FORBIDDEN_HEADERS:
        if name in header:
            raise AuthenticationFailed(f"forbidden header {name}")
    if "typ" in header:
        typ = header["typ"]
        if not isinstance(typ, str):
            raise AuthenticationFailed("wrong token type")
        typ = typ.lower()
        if typ.startswith("application/"):
            typ = typ[len("application/"):]
        if typ not in ACCEPTED_TYPES:
            raise AuthenticationFailed("wrong token type")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise AuthenticationFailed("missing algorithm")
    # Exact, case-sensitive match against the pinned list: "none", "None",
    # "nOnE" and every HS* spelling fail here, before any key is touched.
    if alg not in tuple(allowed):
        raise AuthenticationFailed("algorithm not allowed")
    if "kid" in header and not isinstance(header["kid"], str):
        raise AuthenticationFailed("malformed key id")
    return alg


@frozen
class VerificationKey:
    """One usable public key from a JWKS."""

    kid: str | None
    key_type: str
    curve: str | None
    alg: str | None  # the JWK's own "alg", if it pins one
    key: Any  # a cryptography public key object

    def agrees_with(self, alg: str) -> bool:
        """Whether a token signed with C{alg} may be verified by this key."""
        if self.alg is not None and self.alg != alg:
            return False
        expected = ASYMMETRIC_ALGORITHMS.get(alg)
        if expected is None:
            return False
        key_type, curves = expected
        if self.key_type != key_type:
            return False
        return curves is None or self.curve in curves


@frozen
class KeySet:
    """The verification keys of one issuer, as of one fetch or file read."""

    keys: tuple[VerificationKey, ...] = ()

    @classmethod
    def from_jwks(cls, document: object, *, where: str) -> "KeySet":
        """
        Parse a JWKS (RFC 7517 section 5).

        Symmetric (C{oct}) keys, keys whose C{use} is not C{sig}, keys
        without public material and keys PyJWT cannot load are skipped: an
        IdP publishing an encryption key next to its signing keys is normal.

        @param where: names the document in error messages.
        @raise ValueError: if the document is not a JWKS at all.
        """
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError(f"{where}: expected a JWKS (a JSON object with a 'keys' list)")
        keys = []
        for jwk in document["keys"]:
            if not isinstance(jwk, dict):
                continue
            kty = jwk.get("kty")
            if kty not in ("RSA", "EC", "OKP"):
                continue
            if jwk.get("use", "sig") != "sig":
                continue
            if "d" in jwk or "p" in jwk:
                # A private key published by mistake: use only its public part.
                jwk = {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth")}
            kid = jwk.get("kid")
            alg = jwk.get("alg")
            if (kid is not None and not isinstance(kid, str)) or (
                alg is not None and alg not in ASYMMETRIC_ALGORITHMS
            ):
                continue
            try:
                loaded = PyJWK(jwk, algorithm=alg)
            except (PyJWKError, ValueError, TypeError, KeyError):
                continue
            curve = jwk.get("crv") if isinstance(jwk.get("crv"), str) else None
            keys.append(VerificationKey(kid=kid, key_type=kty, curve=curve, alg=alg, key=loaded.key))
        return cls(tuple(keys))

    def select(self, kid: str | None, alg: str) -> VerificationKey:
        """
        Find the key that verifies a token with header C{kid} and C{alg}.

        @raise UnknownKey: if no key has that id (the caller may refresh).
        @raise AuthenticationFailed: if the key exists but its type does not
            agree with C{alg} (RS/ES/EdDSA confusion), or C{kid} is absent
            and more than one key could apply.
        """
        if kid is None:
            candidates = [k for k in self.keys if k.agrees_with(alg)]
            if len(candidates) == 1:
                return candidates[0]
            if not candidates:
                raise UnknownKey()
            raise AuthenticationFailed("missing key id")
        matching = [k for k in self.keys if k.kid == kid]
        if not matching:
            raise UnknownKey()
        for key in matching:
            if key.agrees_with(alg):
                return key
        raise AuthenticationFailed("algorithm does not match key")


class UnknownKey(AuthenticationFailed):
    """No key with the token's C{kid}: a refresh of the key set may help."""

    def __init__(self) -> None:
        super().__init__("unknown key id")
