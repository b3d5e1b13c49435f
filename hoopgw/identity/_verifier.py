"""
Verification of one issuer's JWT access tokens (RFC 9068, RFC 8725).
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

import jwt
from attrs import define
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from hoopgw.config import IssuerSettings
from hoopgw.errors import AuthenticationFailed
from hoopgw.identity._jose import (
    UnverifiedToken,
    check_algorithms,
    check_header,
    decode_claims,
)
from hoopgw.identity._keys import KeySource
from hoopgw.model import Identity


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python; a JSON true is not a NumericDate.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AuthenticationFailed(f"malformed {name} claim")
    return value


def groups_from(claims: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    """
    Groups from a claim that is a list of strings or a space-separated
    string (as in the OAuth C{scope} convention); absent means none.
    """
    value = claims.get(claim)
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise AuthenticationFailed("malformed groups claim")


@define
class IssuerVerifier:
    """
    Verifies tokens already routed to this issuer by their C{iss} claim.
    """

    settings: IssuerSettings
    keys: KeySource
    clock: IReactorTime

    def __attrs_post_init__(self) -> None:
        check_algorithms(self.settings.issuer, self.settings.algorithms)
        if self.settings.leeway_seconds < 0:
            raise ValueError(
                f"identity issuer {self.settings.issuer!r}: leeway_seconds: "
                f"expected 0 or more, got {self.settings.leeway_seconds}"
            )

    def verify(self, token: str, unverified: UnverifiedToken) -> "Deferred[Identity]":
        return Deferred.fromCoroutine(self._verify(token, unverified))

    async def _verify(self, token: str, unverified: UnverifiedToken) -> Identity:
        claims = await self.signed_claims(token, unverified)
        return self.identity(token, claims)

    async def signed_claims(self, token: str, unverified: UnverifiedToken) -> Mapping[str, Any]:
        """
        The token's claims once its header and signature are checked; the
        claims themselves are not (L{identity} does that).
        """
        alg = check_header(unverified.header, self.settings.algorithms)
        key = await self.keys.key_for(unverified.header.get("kid"), alg)
        try:
            verified = jwt.PyJWS().decode_complete(token, key=key.key, algorithms=[alg])
        except jwt.InvalidSignatureError:
            raise AuthenticationFailed("bad signature") from None
        except jwt.PyJWTError:
            raise AuthenticationFailed("malformed token") from None
        return decode_claims(verified["payload"])

    def check_time(self, claims: Mapping[str, Any]) -> None:
        """
        Check C{claims}' time limits (C{exp}, C{nbf}, C{iat}) against the
        clock now: all that can change for a token already accepted.

        @raise AuthenticationFailed: naming the claim at fault.
        """
        now = self.clock.seconds()
        leeway = self.settings.leeway_seconds
        exp = _number(claims, "exp")
        # RFC 7519 section 4.1.4: the token MUST NOT be accepted on or after exp.
        if exp is None or now >= exp + leeway:
            raise AuthenticationFailed("token expired" if exp is not None else "missing exp claim")
        nbf = _number(claims, "nbf")
        if nbf is not None and now + leeway < nbf:
            raise AuthenticationFailed("token not yet valid")
        iat = _number(claims, "iat")
        if iat is not None and now + leeway < iat:
            raise AuthenticationFailed("token issued in the future")

    def identity(self, token: str, claims: Mapping[str, Any]) -> Identity:
        """
        Check signed C{claims} against this issuer's rules and the clock now.

        @raise AuthenticationFailed: naming the claim at fault.
        """
        settings = self.settings
        if claims.get("iss") != settings.issuer:
            raise AuthenticationFailed("unknown issuer")
        exp = _number(claims, "exp")
        if exp is None:
            raise AuthenticationFailed("missing exp claim")
        self.check_time(claims)
        aud = claims.get("aud")
        if aud is None:
            raise AuthenticationFailed("missing aud claim")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise AuthenticationFailed("malformed aud claim")
        if settings.audience not in audiences:
            raise AuthenticationFailed("wrong audience")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthenticationFailed("missing sub claim")
        subject = claims.get(settings.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthenticationFailed(f"missing {settings.subject_claim} claim")
        jti = claims.get("jti")
        if jti is not None and not isinstance(jti, str):
            raise AuthenticationFailed("malformed jti claim")
        return Identity(
            issuer=settings.issuer,
            subject=subject,
            groups=groups_from(claims, settings.groups_claim),
            auth_method="jwt",
            token_id=jti,
            credential_sha256=hashlib.sha256(token.encode("utf-8")).hexdigest(),
            expires=int(exp),
        )
