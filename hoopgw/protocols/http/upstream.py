"""
An HTTP connection's upstream: where its requests go, the TLS it is
reached with (L{UpstreamTLSPolicy}), its pooled connections, and the
connection's own credentials (read once, at start-up; never logged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attrs import define, field
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from hoopgw.errors import ConfigError
from hoopgw.model import Connection, Identity
from hoopgw.protocols.http.headers import impersonation_headers
from hoopgw.protocols.http.paths import RoutedPath
from hoopgw.protocols.http.pool import Pool
from hoopgw.protocols.http.settings import HTTPSettings
from hoopgw.protocols.http.upgrade import host_and_prefix

__all__ = ["RESERVED_PREFIX", "ReservedIdentity", "Upstream", "UpstreamTLSPolicy"]


def _pem_blocks(data: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    return [block + marker + b"\n" for block in data.split(marker) if b"-----BEGIN CERTIFICATE-----" in block]


@implementer(IPolicyForHTTPS)
class UpstreamTLSPolicy:
    """
    TLS to one connection's upstream: its certificate is verified against
    C{ca_file} (the system trust store when unset), with service-identity
    hostname (or IP address) checks; C{insecure = true} turns verification
    off, by explicit choice only.  The client certificate, if configured,
    is presented.  Files are read once, here, at start-up.
    """

    def __init__(self, settings: HTTPSettings) -> None:
        self.insecure = settings.insecure
        self.client: ssl.PrivateCertificate | None = None
        if settings.client_cert is not None and settings.client_key is not None:
            try:
                self.client = ssl.PrivateCertificate.loadPEM(
                    settings.client_cert.read_bytes() + b"\n" + settings.client_key.read_bytes()
                )
            except Exception as e:
                raise ConfigError(settings.client_cert, "client_cert", f"cannot load client certificate and key: {e}") from None
        self.trust: Any = None
        if settings.ca_file is not None:
            try:
                blocks = _pem_blocks(Path(settings.ca_file).read_bytes())
                certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
            except Exception as e:
                raise ConfigError(settings.ca_file, "ca_file", f"cannot load CA certificates: {e}") from None
            if not certificates:
                raise ConfigError(settings.ca_file, "ca_file", "expected PEM certificates, found none")
            self.trust = ssl.trustRootFromCertificates(certificates)
        self._unverified: Any = None
        if self.insecure:
            options: dict[str, Any] = {"verify": False, "raiseMinimumTo": ssl.TLSVersion.TLSv1_2}
            if self.client is not None:
                options.update(privateKey=self.client.privateKey.original, certificate=self.client.original)
            self._unverified = ssl.CertificateOptions(**options)

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        if self._unverified is not None:
            # (CertificateOptions: a context factory, which TLS connections
            # also take in a creator's place.)
            unverified: IOpenSSLClientConnectionCreator = self._unverified
            return unverified
        return ssl.optionsForClientTLS(
            hostname.decode("ascii"), trustRoot=self.trust, clientCertificate=self.client
        )


RESERVED_PREFIX = "system:"
"""Names the API server reserves for itself: never impersonated."""


class ReservedIdentity(Exception):
    """An identity the gateway refuses to impersonate (see L{Upstream.credential_headers})."""


@define(eq=False)
class Upstream:
    """
    One HTTP connection's upstream: where requests go, the persistent
    connections they share (L{Pool}), and the connection's own credentials
    (read once, at start-up; never logged).
    """

    base: bytes
    pool: Pool
    token: str | None = field(default=None, repr=False)
    impersonate: bool = False
    pass_cookies: bool = False
    tls: UpstreamTLSPolicy | None = None
    reactor: Any = None
    host: bytes = b""
    prefix: bytes = b""

    @classmethod
    def from_connection(cls, connection: Connection, reactor: Any, *, max_persistent: int = 16) -> Upstream:
        settings: HTTPSettings = connection.settings
        tls = UpstreamTLSPolicy(settings)
        base = settings.upstream.rstrip("/").encode("ascii")
        # Idle keep-alive connections kept per upstream; busy ones (watches,
        # log follows) are not limited by this.
        pool = Pool(reactor, base, tls, max_idle=max_persistent)
        token = settings.token.read() if settings.token is not None else None
        host, prefix = host_and_prefix(base)
        return cls(
            base=base,
            pool=pool,
            token=token,
            impersonate=settings.impersonate,
            pass_cookies=settings.pass_cookies,
            tls=tls,
            reactor=reactor,
            host=host,
            prefix=prefix,
        )

    def url(self, routed: RoutedPath) -> bytes:
        """The upstream URL: its base (with any path prefix), then the canonical target."""
        return self.base + routed.target.encode("ascii")

    def credential_headers(self, identity: Identity) -> list[tuple[bytes, bytes]]:
        """
        The gateway's own C{Authorization} and, with C{impersonate}, the
        identity's C{Impersonate-User}/C{-Group}.

        @raise ValueError: for an identity that cannot be sent as headers.
        @raise ReservedIdentity: with C{impersonate}, for an identity whose
            subject or a group is in the API server's own C{system:}
            namespace (C{system:masters}, C{system:serviceaccount:...},
            C{system:node:...}): an IdP claim must never become one.
        """
        headers: list[tuple[bytes, bytes]] = []
        if self.impersonate:
            for what, value in (("subject", identity.subject), *(("group", g) for g in identity.groups)):
                if value.startswith(RESERVED_PREFIX):
                    raise ReservedIdentity(
                        f"the identity's {what} {value!r} is in the Kubernetes-reserved "
                        f"{RESERVED_PREFIX!r} namespace and is never impersonated"
                    )
        if self.token is not None:
            headers.append((b"Authorization", b"Bearer " + self.token.encode("ascii")))
        if self.impersonate:
            headers.extend(impersonation_headers(identity))
        return headers

    def close(self) -> Deferred[None]:
        return self.pool.close()
