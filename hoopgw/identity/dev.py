"""
The development token issuer: an Ed25519 key in the gateway's data
directory that signs short-lived JWT access tokens for any subject and any
groups (C{hoopgw token issue}).

Whoever can read that key file can become anyone, so it is for a laptop or
a test bed: turn C{[identity] dev_issuer} off wherever a real IdP exists.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any, Iterable

import jwt
from attrs import define, field
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet.interfaces import IReactorTime

from hoopgw.config import IssuerSettings
from hoopgw.identity._jose import KeySet
from hoopgw.keys import load_or_create_ed25519

KEY_PATH = Path("keys") / "dev_issuer_ed25519.pem"
AUDIENCE = "hoopgw"
ISSUER_PREFIX = "hoopgw-dev:"
DEFAULT_MAX_TTL_SECONDS = 24 * 3600
#: Why a dev token signed by another key is refused: a key from another data dir, most often.
DEV_UNKNOWN_KEY = (
    "unknown key id: not signed by this gateway's dev issuer key "
    "(issued with another data dir? see hoopgw --config / HOOPGW_CONFIG)"
)


class _SystemClock:
    """The wall clock, for callers (the CLI) that run no reactor."""

    def seconds(self) -> float:
        return time.time()


def dev_issuer_name(gateway_name: str) -> str:
    return ISSUER_PREFIX + gateway_name


def _duration(seconds: int) -> str:
    """C{seconds} as a duration in hours, minutes and seconds: C{"24h"}, C{"1h30m"}, C{"90s"} -> C{"1m30s"}."""
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def check_ttl(ttl_seconds: int, max_ttl_seconds: int) -> None:
    """
    @raise ValueError: C{ttl_seconds} is over the cap, naming both (never
        silently shortened: the caller asked for that lifetime).
    """
    if ttl_seconds > max_ttl_seconds:
        raise ValueError(
            f"{_duration(int(ttl_seconds))} is over the dev issuer's cap of {_duration(max_ttl_seconds)} "
            "([identity] dev_token_max_ttl)"
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _load_or_create_key(path: Path) -> Ed25519PrivateKey:
    # Anyone holding this key can act as any identity: mode 0600 enforced.
    return load_or_create_ed25519(path, what="dev issuer key")


@define
class DevIssuer:
    """
    Signs EdDSA JWT access tokens (RFC 9068) as C{hoopgw-dev:<gateway>}.
    """

    issuer: str
    private_key: Ed25519PrivateKey = field(repr=False)
    max_ttl_seconds: int = DEFAULT_MAX_TTL_SECONDS
    clock: Any = field(factory=_SystemClock)  # IReactorTime; only seconds() is used
    audience: str = AUDIENCE

    @classmethod
    def load_or_create(
        cls,
        data_dir: Path | str,
        gateway_name: str,
        *,
        max_ttl_seconds: int = DEFAULT_MAX_TTL_SECONDS,
        clock: IReactorTime | None = None,
    ) -> "DevIssuer":
        """
        Load the key at C{data_dir/keys/dev_issuer_ed25519.pem}, generating
        it (mode 0600) on first use.  Blocking file I/O: call at start-up or
        from the CLI, not per request.
        """
        key = _load_or_create_key(Path(data_dir) / KEY_PATH)
        return cls(
            issuer=dev_issuer_name(gateway_name),
            private_key=key,
            max_ttl_seconds=max_ttl_seconds,
            clock=clock if clock is not None else _SystemClock(),
        )

    @property
    def public_jwk(self) -> dict[str, str]:
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        jwk = {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}
        # RFC 7638 thumbprint as the key id: stable for the key, and a new
        # key (after deleting the file) gets a new id.
        thumbprint = hashlib.sha256(
            json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()
        ).digest()
        return {**jwk, "kid": _b64(thumbprint), "alg": "EdDSA", "use": "sig"}

    def jwks(self) -> dict[str, Any]:
        """The public JWKS, e.g. for an API endpoint or another verifier."""
        return {"keys": [self.public_jwk]}

    def key_set(self) -> KeySet:
        return KeySet.from_jwks(self.jwks(), where="dev issuer")

    def settings(self) -> IssuerSettings:
        """
        How the verifier treats this issuer: no leeway on C{exp}, C{nbf} and
        C{iat}, which the gateway's own clock wrote (leeway is for the
        clocks of other issuers).
        """
        return IssuerSettings(issuer=self.issuer, audience=self.audience, algorithms=("EdDSA",), leeway_seconds=0)

    def issue(self, subject: str, groups: Iterable[str] = (), ttl_seconds: int = 900) -> str:
        """
        Sign an access token for C{subject} with C{groups}, valid for
        C{ttl_seconds}.

        @raise ValueError: for an empty subject, a non-positive ttl, a ttl
            over C{max_ttl_seconds} (the message names the cap) or a group
            that is not a non-empty string without spaces.
        """
        if not isinstance(subject, str) or not subject:
            raise ValueError("dev token: subject: expected a non-empty string")
        groups = list(groups)
        for group in groups:
            if not isinstance(group, str) or not group or any(c.isspace() for c in group):
                raise ValueError(f"dev token: groups: expected names without spaces, got {group!r}")
        if ttl_seconds <= 0:
            raise ValueError(f"dev token: ttl: expected a positive number of seconds, got {ttl_seconds}")
        try:
            check_ttl(ttl_seconds, self.max_ttl_seconds)
        except ValueError as e:
            raise ValueError(f"dev token: ttl: {e}") from None
        ttl = int(ttl_seconds)
        now = int(self.clock.seconds())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "groups": groups,
            "client_id": "hoopgw-cli",
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode(
            claims,
            self.private_key,
            algorithm="EdDSA",
            headers={"typ": "at+jwt", "kid": self.public_jwk["kid"]},
        )
