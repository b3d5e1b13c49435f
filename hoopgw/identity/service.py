"""
The identity service: turns a bearer token or an SSH public key (mapped in
the configuration, or enrolled with a token) into an L{Identity}.

Construction (L{IdentityService.from_settings}) does the start-up work:
reading JWKS files and the dev issuer's key, validating every issuer.  Per
request, nothing blocks: keys are in memory, or fetched with treq.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from attrs import define, field
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.logger import Logger
from zope.interface import implementer

from hoopgw.config import IdentitySettings, IssuerSettings
from hoopgw.errors import AuthenticationFailed
from hoopgw.identity._jose import parse_unverified
from hoopgw.identity._keys import (
    HTTPGetter,
    KeySource,
    RemoteKeySource,
    StaticKeySource,
    check_fetch_url,
)
from hoopgw.identity._verifier import IssuerVerifier
from hoopgw.identity.dev import DEV_UNKNOWN_KEY, ISSUER_PREFIX, DevIssuer, dev_issuer_name
from hoopgw.identity.enrolled import EnrolledKeys
from hoopgw.identity.ssh import SSHKeyMap
from hoopgw.interfaces import IIdentityVerifier
from hoopgw.model import Identity

_log = Logger()

#: Why a public key that is neither mapped nor enrolled is refused.
NOT_MAPPED = "public key not mapped to an identity"


def https_client(reactor: Any, ca_file: Path | None = None) -> HTTPGetter:
    """
    A treq client that verifies TLS certificates and host names: against
    C{ca_file} (PEM, one or more certificates) if given, else the system
    trust store.  Reads C{ca_file} now (start-up).
    """
    from treq.client import HTTPClient
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

    if ca_file is None:
        policy = BrowserLikePolicyForHTTPS()
    else:
        try:
            certificates = x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
        except (OSError, ValueError) as e:
            raise ValueError(f"identity: ca_file {str(ca_file)!r}: expected PEM certificates: {e}") from None
        policy = BrowserLikePolicyForHTTPS(
            trustRoot=trustRootFromCertificates(
                [Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certificates]
            )
        )
    pool = HTTPConnectionPool(reactor, persistent=False)
    return HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))


@implementer(IIdentityVerifier)
@define
class IdentityService:
    """
    Verifies tokens of the configured issuers (and of the dev issuer, when
    on) and maps SSH keys to identities.

    @ivar issuers: verifiers by exact C{iss} string.
    @ivar dev_issuer: the dev issuer when it is on, else C{None}.
    @ivar enrolled_keys: keys enrolled with a token
        (L{hoopgw.identity.enrolled.SSHKeyEnrolment} fills it).
    """

    issuers: Mapping[str, IssuerVerifier]
    ssh_keys: SSHKeyMap = field(factory=lambda: SSHKeyMap({}))
    dev_issuer: DevIssuer | None = None
    verified: "VerifiedTokens" = field(factory=lambda: VerifiedTokens())
    enrolled_keys: EnrolledKeys | None = None

    @classmethod
    def from_settings(
        cls,
        settings: IdentitySettings,
        *,
        data_dir: Path | str,
        gateway_name: str,
        reactor: Any = None,
        http: HTTPGetter | None = None,
        allow_insecure_http: bool = False,
        refresh_cooldown: float = 60.0,
    ) -> "IdentityService":
        """
        Build the service (start-up: reads files, fetches nothing).

        @param reactor: the clock and, unless C{http} is given, the reactor
            for key fetches; the global reactor if C{None}.
        @param http: a treq-like client for every remote key source
            (tests); by default one verifying TLS per issuer (C{ca_file}).
        @param allow_insecure_http: accept http issuer / JWKS URLs to
            non-loopback hosts (never in production).
        @raise ValueError: naming the issuer or SSH key entry at fault.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        issuers: dict[str, IssuerVerifier] = {}
        dev = None
        if settings.dev_issuer:
            dev = DevIssuer.load_or_create(
                data_dir,
                gateway_name,
                max_ttl_seconds=settings.dev_token_max_ttl_seconds,
                clock=reactor,
            )
            dev_keys = StaticKeySource(dev.key_set(), unknown_reason=DEV_UNKNOWN_KEY)
            issuers[dev.issuer] = IssuerVerifier(dev.settings(), dev_keys, reactor)
        for index, issuer in enumerate(settings.issuers):
            where = f"identity.issuers[{index}]"
            if issuer.issuer in issuers or issuer.issuer == dev_issuer_name(gateway_name):
                raise ValueError(f"{where}.issuer: {issuer.issuer!r} is configured twice")
            if issuer.issuer.startswith(ISSUER_PREFIX):
                raise ValueError(f"{where}.issuer: the prefix {ISSUER_PREFIX!r} is reserved for the dev issuer")
            keys = _key_source(
                issuer,
                where=where,
                reactor=reactor,
                http=http,
                allow_insecure_http=allow_insecure_http,
                refresh_cooldown=refresh_cooldown,
            )
            try:
                issuers[issuer.issuer] = IssuerVerifier(issuer, keys, reactor)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
        return cls(
            issuers=issuers,
            ssh_keys=SSHKeyMap.from_settings(settings.ssh_keys),
            dev_issuer=dev,
            verified=VerifiedTokens(clock=reactor),
            enrolled_keys=EnrolledKeys(clock=reactor),
        )

    def prefetch(self) -> "Deferred[None]":
        """
        Fetch every remote issuer's keys now (optional start-up step, so the
        first login does not wait).  Never fails: an unreachable IdP is
        logged and retried when a token needs it.
        """
        d = DeferredList([v.keys.prefetch() for v in self.issuers.values()], consumeErrors=True)
        return d.addCallback(lambda _: None)

    def verified_identity(self, token: str) -> Identity | None:
        """
        The identity of a token verified in full moments ago whose time
        claims still hold, else C{None} (then L{verify_token} decides, and a
        refusal is reported the usual way).  Synchronous: the per-request
        path of a client that sends one token with every request.
        """
        known = self.verified.get(token)
        if known is None:
            return None
        # Signature, header and the other claims were checked moments ago;
        # the time limits are checked again, so expiry and not-before bite
        # on time.
        verifier, claims, identity = known
        try:
            verifier.check_time(claims)
        except AuthenticationFailed:
            self.verified.forget(token)
            return None
        return identity

    def verify_token(self, token: str) -> "Deferred[Identity]":
        identity = self.verified_identity(token)
        if identity is not None:
            return succeed(identity)
        return Deferred.fromCoroutine(self._verify_token(token))

    async def _verify_token(self, token: str) -> Identity:
        try:
            unverified = parse_unverified(token)
            iss = unverified.claims.get("iss")
            if not isinstance(iss, str):
                raise AuthenticationFailed("missing iss claim")
            verifier = self.issuers.get(iss)
            if verifier is None:
                if iss.startswith(ISSUER_PREFIX) and self.dev_issuer is None:
                    raise AuthenticationFailed("dev issuer disabled")
                raise AuthenticationFailed("unknown issuer")
            claims = await verifier.signed_claims(token, unverified)
            identity = verifier.identity(token, claims)
            self.verified.remember(token, verifier, claims, identity)
            return identity
        except AuthenticationFailed:
            raise
        except Exception:
            # Fail closed with a safe reason; the traceback names no token.
            _log.failure("identity: unexpected error while verifying a token")
            raise AuthenticationFailed("internal error") from None

    def identity_for_public_key(self, key_blob: bytes) -> Identity | None:
        # The configuration's mapping first: such a key is never enrolled.
        identity = self.ssh_keys.identity_for_public_key(key_blob)
        if identity is None and self.enrolled_keys is not None:
            identity = self.enrolled_keys.identity_for_public_key(key_blob)
        return identity

    def public_key_refusal(self, key_blob: bytes) -> str:
        refusal = self.enrolled_keys.refusal(key_blob) if self.enrolled_keys is not None else None
        return refusal or NOT_MAPPED


@define
class VerifiedTokens:
    """
    Tokens whose signature was verified lately, so a client that sends the
    same bearer token with every request (kubectl, curl, an HTTP client
    pool) pays the signature check once per C{seconds}, not per request.

    Bounded in size and age: a key removed from an issuer's JWKS stops
    being trusted by this cache within C{seconds}.  Held in memory only,
    like the tokens in flight themselves.
    """

    seconds: float = 60.0
    size: int = 4096
    clock: Any = None
    _entries: dict[str, tuple[float, IssuerVerifier, Mapping[str, Any], Identity]] = field(factory=dict, init=False)

    def _now(self) -> float:
        if self.clock is None:
            from twisted.internet import reactor

            self.clock = reactor
        return float(self.clock.seconds())

    def get(self, token: str) -> tuple[IssuerVerifier, Mapping[str, Any], Identity] | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if self._now() >= entry[0]:
            del self._entries[token]
            return None
        return entry[1], entry[2], entry[3]

    def remember(self, token: str, verifier: IssuerVerifier, claims: Mapping[str, Any], identity: Identity) -> None:
        if len(self._entries) >= self.size:
            # Oldest first: dicts keep insertion order.
            del self._entries[next(iter(self._entries))]
        self._entries[token] = (self._now() + self.seconds, verifier, claims, identity)

    def forget(self, token: str) -> None:
        self._entries.pop(token, None)

    def __len__(self) -> int:
        return len(self._entries)


def _key_source(
    issuer: IssuerSettings,
    *,
    where: str,
    reactor: Any,
    http: HTTPGetter | None,
    allow_insecure_http: bool,
    refresh_cooldown: float,
) -> KeySource:
    if issuer.jwks_uri is not None and issuer.jwks_file is not None:
        raise ValueError(f"{where}: expected at most one of jwks_uri and jwks_file, got both")
    if issuer.jwks_file is not None:
        return StaticKeySource.from_file(issuer.jwks_file, where=f"{where}.jwks_file")
    if issuer.jwks_uri is not None:
        check_fetch_url(issuer.jwks_uri, what=f"{where}.jwks_uri", allow_insecure_http=allow_insecure_http)
    else:
        check_fetch_url(
            issuer.issuer,
            what=f"{where}.issuer (used for OIDC discovery, as no jwks_uri or jwks_file is set)",
            allow_insecure_http=allow_insecure_http,
        )
    return RemoteKeySource(
        issuer=issuer.issuer,
        http=http if http is not None else https_client(reactor, issuer.ca_file),
        clock=reactor,
        jwks_uri=issuer.jwks_uri,
        allow_insecure_http=allow_insecure_http,
        refresh_cooldown=refresh_cooldown,
    )
