"""
The HTTP front end: a reverse proxy for HTTP APIs, the Kubernetes API first
among them.  C{https://gateway:18443/<connection>/<rest>} reaches
C{<upstream>/<rest>} of the connection named by the first path segment.

Per request, in this order, and nothing reaches the upstream before the end:

 1. the client's C{Authorization: Bearer} token is verified (401 otherwise,
    with C{WWW-Authenticate: Bearer});
 2. the request-target is split and made canonical
    (L{hoopgw.protocols.http.paths}); the request is described as the API
    server would (L{hoopgw.protocols.http.k8s}); its headers are sanitized
    (L{hoopgw.protocols.http.headers});
 3. the identity's session on the connection is found or opened;
 4. the action (C{k8s.<verb>} for a Kubernetes resource request, else
    C{http.request}) is decided and its C{action.start} record written;
    refused: 403, nothing forwarded;
 5. the request is forwarded with the connection's own credentials, and the
    response is streamed back as it arrives; C{action.end} records its
    status, sizes and duration.

Sessions.  One L{Session} per (identity's credential, connection) per client
TCP connection: opened by the first request that names the connection,
closed when the client connection closes, which twisted.web does after 60
seconds without a request (its idle timeout, suspended while a response is
streaming).  kubectl keeps its connection alive across the requests of one
command, so a command is one session with one action per request; a new
token (an exec plugin's refresh) opens a new session.  The token is still
verified on every request, so an expired token stops working at once.

Error bodies.  A request to a Kubernetes connection (C{impersonate = true},
or a path under C{/api} or C{/apis}) gets a Kubernetes C{Status} object, so
that kubectl prints the message ("Error from server (Forbidden): ...");
other requests get C{{"error": "..."}}.

Request bodies.  twisted.web reads a request's whole body before the
resource runs (into memory up to 100 kB, else a temporary file), so the
body is decided on whole and forwarded from there; a streaming upload path
is future work.  Before any of it is read (L{_Channel.allHeadersReceived},
no C{100 Continue}), a body over C{max_body} is refused with 413 and a body
without an C{Authorization: Bearer} header with 401; a chunked body is
counted as it arrives (L{_Request.handleContentChunk}).

Methods are upper-case ones of L{METHODS} (405 otherwise, before anything
is decided); the upstream has C{response_timeout} seconds to send its
response headers (504 otherwise).  Responses are
streamed with backpressure: reading from the upstream pauses while the
client is behind.

Upgrades (C{kubectl exec}/C{attach}/C{port-forward}) are decided like any
request, then relayed by L{hoopgw.protocols.http.upgrade} (WebSocket
C{v5}/C{v4.channel.k8s.io} and SPDY/3.1 only, 400 otherwise); an upgrade
request that is answered instead of upgraded closes its client connection
(see docs/http.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import define, field
from twisted.internet import ssl
from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http import HTTPChannel, PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IPolicyForHTTPS
from twisted.web.resource import Resource
from zope.interface import implementer

from hoopgw.config import HTTPSettings
from hoopgw.errors import (
    AuditUnavailable,
    AuthenticationFailed,
    ConfigError,
    NotPermitted,
)
from hoopgw.model import Action, Connection, Identity, Outcome, Source, Status
from hoopgw.protocols.http.bodies import DEFAULT_CAP, body_record
from hoopgw.protocols.http.headers import (
    HOP_BY_HOP,
    HeaderError,
    impersonation_headers,
    sanitize_request_headers,
)
from hoopgw.protocols.http.k8s import (
    API_PREFIXES,
    K8sRequest,
    K8sRequestError,
    from_routed,
)
from hoopgw.protocols.http.paths import PathError, RoutedPath, split_request_target
from hoopgw.protocols.http.upgrade import (
    check_upgrade,
    connect_upstream,
    host_and_prefix,
    request_head,
    take_over,
)
from hoopgw.sessions import ActionHandle, Session, SessionService

__all__ = [
    "HTTPFrontEnd",
    "Upstream",
    "UpstreamTLSPolicy",
    "error_body",
    "make_front_end",
    "response_headers",
]

log = Logger()

_STATUS_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "RequestEntityTooLarge",
    500: "InternalError",
    501: "NotImplemented",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}

# The methods the gateway forwards: upper-case, as policies name them.
# Methods are case-sensitive (RFC 9110 section 9.1), so "delete" is not
# DELETE to a policy glob, yet many servers treat it as DELETE; anything
# else (TRACE, CONNECT, WebDAV, lower-case) is refused before any decision.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# How long the upstream has to answer with its response headers; a watch
# or a log follow is unaffected once its headers have arrived.
DEFAULT_RESPONSE_TIMEOUT = 30.0

# The largest request body the gateway reads (it is read whole before the
# request is decided, see the module docstring).
DEFAULT_MAX_BODY = 64 * 1024 * 1024

# Mutating methods, whose bodies go into the audit record.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Request headers the proxy sets itself: the upstream's Host (from the
# URL), the body's length (from the body it forwards); Expect was answered
# by twisted.web already.
_REFRAMED = frozenset({b"host", b"content-length", b"expect"})

# Response headers that describe the upstream connection, not the response.
_RESPONSE_HOP_BY_HOP = HOP_BY_HOP | {b"proxy-authenticate", b"proxy-authentication-info"}

# Response headers that hand the client a session of the upstream, minted
# for the gateway's own credential (see L{response_headers}).
_SET_COOKIE = frozenset({b"set-cookie", b"set-cookie2"})

# An upstream error's message is taken from the first bytes of its body.
_ERROR_BODY_CAP = 64 * 1024

_BEARER = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +([!-~]+)[ \t]*")


def error_body(code: int, message: str, *, kubernetes: bool) -> bytes:
    """
    The body of an error the gateway itself answers: a Kubernetes
    C{Status} (what kubectl prints: "Error from server (Forbidden):
    <message>") or C{{"error": message}}.
    """
    if kubernetes:
        document: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": _STATUS_REASONS.get(code, ""),
            "code": code,
        }
    else:
        document = {"error": message}
    return json.dumps(document).encode("utf-8") + b"\n"


def response_headers(
    raw: Sequence[tuple[bytes, Sequence[bytes]]], *, pass_cookies: bool = False
) -> list[tuple[bytes, list[bytes]]]:
    """
    The upstream response's headers that reach the client: all but the
    hop-by-hop ones and those its C{Connection} header names (RFC 9110
    section 7.6.1); the gateway frames the response to the client itself.
    C{Set-Cookie} and C{Set-Cookie2} are removed unless C{pass_cookies}:
    a session the upstream opened for the gateway's credential is not the
    client's to keep.
    """
    nominated: set[bytes] = set()
    for name, values in raw:
        if name.lower() == b"connection":
            for value in values:
                nominated.update(o.strip(b" \t").lower() for o in value.split(b",") if o.strip())
    return [
        (name, list(values))
        for name, values in raw
        if name.lower() not in _RESPONSE_HOP_BY_HOP
        and name.lower() not in nominated
        and (pass_cookies or name.lower() not in _SET_COOKIE)
    ]


def bearer_token(values: Sequence[bytes] | None) -> str | None:
    """The token of the single C{Authorization: Bearer} header, if that is what was sent."""
    if not values or len(values) != 1:
        return None
    match = _BEARER.fullmatch(values[0])
    return match.group(1).decode("ascii") if match else None


def _upstream_message(body: bytes) -> str | None:
    """The C{message} of a JSON error body (a Kubernetes Status), if any."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if isinstance(document, dict):
        message = document.get("message") or document.get("error")
        if isinstance(message, str):
            return message[:1000]
    return None


# -- the upstream ------------------------------------------------------------


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
            return self._unverified
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
    connection pool they share, and the connection's own credentials
    (read once, at start-up; never logged).
    """

    base: bytes
    agent: IAgent
    token: str | None = field(default=None, repr=False)
    impersonate: bool = False
    pool: HTTPConnectionPool | None = None
    pass_cookies: bool = False
    tls: UpstreamTLSPolicy | None = None
    reactor: Any = None

    @classmethod
    def from_connection(cls, connection: Connection, reactor: Any, *, max_persistent: int = 16) -> Upstream:
        settings: HTTPSettings = connection.settings
        pool = HTTPConnectionPool(reactor, persistent=True)
        # Idle keep-alive connections kept per upstream; busy ones (watches,
        # log follows) are not limited by this.
        pool.maxPersistentPerHost = max_persistent
        pool.retryAutomatically = False  # a retried POST could run twice
        tls = UpstreamTLSPolicy(settings)
        agent = Agent(reactor, contextFactory=tls, pool=pool, connectTimeout=10)
        token = settings.token.read() if settings.token is not None else None
        return cls(
            base=settings.upstream.rstrip("/").encode("ascii"),
            agent=agent,
            token=token,
            impersonate=settings.impersonate,
            pool=pool,
            pass_cookies=settings.pass_cookies,
            tls=tls,
            reactor=reactor,
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

    def close(self) -> Deferred:
        return self.pool.closeCachedConnections() if self.pool is not None else succeed(None)


# -- the twisted.web side ----------------------------------------------------


class _Channel(HTTPChannel):
    """An HTTP/1.1 connection from a client; its sessions end with it."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[tuple[str, str], Session] = {}
        self.lost = False
        self.inflight: set[Deferred] = set()
        self.refused = False

    def refuse(self, code: int, message: str, *, headers: Mapping[bytes, bytes] | None = None) -> None:
        """
        Answer a request whose body is not to be read (before twisted.web
        reads it, and before any C{100 Continue}), then close: whatever
        body follows is discarded unread.
        """
        if self.refused:
            return
        self.refused = True
        body = error_body(code, message, kubernetes=True)
        lines = [
            b"HTTP/1.1 %d %s" % (code, _STATUS_REASONS.get(code, "").encode("ascii")),
            b"Content-Type: application/json",
            b"Content-Length: %d" % len(body),
            b"Connection: close",
        ]
        lines += [name + b": " + value for name, value in (headers or {}).items()]
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        self.loseConnection()

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        refusal = request.early_refusal(self.length) if isinstance(request, _Request) else None
        if refusal is not None:
            # Not the base class: it would send 100 Continue.  self.length
            # is not 0 here, so no render follows; the body is discarded.
            request.content = _NullContent()  # type: ignore[assignment]
            code, message, headers = refusal
            return self.refuse(code, message, headers=headers)
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if self.refused:
            return
        super().rawDataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self.refused:
            return
        super().lineReceived(line)

    def allContentReceived(self) -> None:
        # A chunked body refused part-way may still end in the same read:
        # a refused request is never rendered.
        if self.refused:
            return
        super().allContentReceived()

    def track(self, d: Deferred) -> None:
        """An exchange in progress: its session ends only after its C{action.end}."""
        self.inflight.add(d)

        def done(result: object) -> object:
            self.inflight.discard(d)
            return result

        d.addBoth(done)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost = True
        super().connectionLost(reason)
        sessions, self.sessions = self.sessions, {}

        def close(_: object) -> None:
            for session in sessions.values():
                session.close(status="closed")

        # A streaming response (a watch) is stopped by the loss above, but
        # its outcome arrives a moment later: session.end comes after it.
        DeferredList(list(self.inflight), consumeErrors=True).addBoth(close)


class _Request(server.Request):
    # The upstream's Content-Type or none: never twisted.web's text/html.
    defaultContentType = None
    received = 0

    def _max_body(self) -> int:
        front = getattr(getattr(self.channel, "site", None), "front", None)
        return front.max_body if front is not None else DEFAULT_MAX_BODY

    def early_refusal(self, length: int | None) -> tuple[int, str, dict[bytes, bytes]] | None:
        """
        Whether to refuse the request before its body is read (the headers
        are all there; twisted.web would read the whole body next, before
        the token is verified): a declared length over the maximum (413),
        or a body with no C{Authorization: Bearer} header to verify (401).
        """
        if length == 0:
            return None  # no body: the request runs its usual course
        limit = self._max_body()
        if length is not None and length > limit:
            return 413, f"the request body is larger than this gateway accepts ({limit} bytes)", {}
        if bearer_token(self.requestHeaders.getRawHeaders(b"authorization")) is None:
            return (
                401,
                "a bearer token is required (Authorization: Bearer <token>)",
                {b"WWW-Authenticate": b'Bearer realm="hoopgw"'},
            )
        return None

    def handleContentChunk(self, data: bytes) -> None:
        # Content-Length was checked in early_refusal; a chunked body is
        # counted as it arrives.
        self.received += len(data)
        limit = self._max_body()
        if self.received > limit:
            channel: Any = self.channel
            if channel is not None and isinstance(channel, _Channel):
                self.content = _NullContent()  # type: ignore[assignment]
                channel.refuse(413, f"the request body is larger than this gateway accepts ({limit} bytes)")
            return
        super().handleContentChunk(data)


class _Site(server.Site):
    protocol = _Channel  # type: ignore[assignment]  # HTTP/1.1 only: ALPN offers http/1.1 alone
    requestFactory = _Request

    def __init__(self, front: HTTPFrontEnd) -> None:
        super().__init__(_ProxyResource(front), reactor=front.reactor)
        self.front = front
        self.displayTracebacks = False

    def log(self, request: Any) -> None:
        # The audit trail has every request, attributed; an access log line
        # would only duplicate it without the identity.
        pass


class _ProxyResource(Resource):
    isLeaf = True

    def __init__(self, front: HTTPFrontEnd) -> None:
        super().__init__()
        self.front = front

    def render(self, request: server.Request) -> Any:
        # Taken first: a request answered synchronously has no channel after.
        track = getattr(request.channel, "track", None)
        exchange = _Exchange(self.front, request)
        d = Deferred.fromCoroutine(exchange.run())
        d.addErrback(exchange.crashed)
        if track is not None and not d.called:
            track(d)
        return server.NOT_DONE_YET


class HTTPFrontEnd:
    """The HTTP front end: one per listener, with one L{Upstream} per HTTP connection."""

    def __init__(
        self,
        *,
        sessions: SessionService,
        reactor: Any,
        upstreams: Mapping[str, Upstream] | None = None,
        body_cap: int = DEFAULT_CAP,
        response_timeout: float = DEFAULT_RESPONSE_TIMEOUT,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.sessions = sessions
        self.reactor = reactor
        self.body_cap = body_cap
        self.response_timeout = response_timeout
        self.max_body = max_body
        if upstreams is None:
            upstreams = {
                c.name: Upstream.from_connection(c, reactor)
                for c in sessions.connections.values()
                if c.kind == "http"
            }
        self.upstreams = dict(upstreams)
        self.site = _Site(self)

    def factory(self, tls_options: Any) -> TLSMemoryBIOFactory:
        """The listener's factory: TLS, then HTTP/1.1."""
        return _ClosingTLSFactory(self, tls_options, False, self.site)

    def close(self) -> Deferred:
        """Close the idle upstream connections (at listener stop)."""
        return gatherResults([u.close() for u in self.upstreams.values()], consumeErrors=True)


class _ClosingTLSFactory(TLSMemoryBIOFactory):
    def __init__(self, front: HTTPFrontEnd, *args: Any) -> None:
        super().__init__(*args)
        self.front = front

    def stopFactory(self) -> None:
        super().stopFactory()
        self.front.close()


# -- one request ---------------------------------------------------------------


class _Relay(Protocol):
    """
    The upstream response body, written to the client as it arrives.  The
    upstream transport is the client request's producer: when the client
    falls behind, reading from the upstream pauses.
    """

    def __init__(self, request: server.Request, keep: int) -> None:
        self.request = request
        self.keep = keep
        self.head = bytearray()
        self.size = 0
        self.done: Deferred = Deferred()
        self.reason: Failure | None = None
        self.registered = False

    def connectionMade(self) -> None:
        if not self.request._disconnected:  # type: ignore[attr-defined]
            self.request.registerProducer(self.transport, True)
            self.registered = True

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if len(self.head) < self.keep:
            self.head += data[: self.keep - len(self.head)]
        self.request.write(data)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        if self.registered:
            self.registered = False
            if self.request.channel is not None:  # None once the client has gone
                self.request.unregisterProducer()
        # Fired with a value, not the Failure (which would errback).
        self.reason = reason
        self.done.callback(None)

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()


class _Exchange:
    """One request through the pipeline (see the module docstring)."""

    def __init__(self, front: HTTPFrontEnd, request: server.Request) -> None:
        self.front = front
        self.request = request
        self.kubernetes = True
        self.gone = False
        self.handle: ActionHandle | None = None
        self.pending: Deferred | None = None
        self.relay: _Relay | None = None
        # Set for an upgrade request that is not upgraded: its answer ends
        # the client connection (see L{_close_after}).
        self.close_after = False
        request.notifyFinish().addErrback(self._client_gone)

    def _client_gone(self, failure: Failure) -> None:
        self.gone = True
        if self.pending is not None:
            self.pending.cancel()
        if self.relay is not None:
            self.relay.stop()

    def _respond(self, code: int, message: str, *, headers: Mapping[bytes, bytes] | None = None) -> None:
        if self.gone or self.request.finished:
            return
        request = self.request
        body = error_body(code, message, kubernetes=self.kubernetes)
        request.setResponseCode(code)
        request.responseHeaders.setRawHeaders(b"content-type", [b"application/json"])
        for name, value in (headers or {}).items():
            request.responseHeaders.setRawHeaders(name, [value])
        if self.close_after:
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        self._finish()

    def _finish(self) -> None:
        """
        Finish the response; after an upgrade request that was not upgraded,
        close the client connection with it: whatever the client sent after
        the request (it may already be speaking the upgraded protocol) is
        never read as another request (CVE-2018-1002105).
        """
        request = self.request
        channel: Any = request.channel
        if self.close_after and channel is not None:
            channel.persistent = False  # twisted.web then drops what follows and closes
        request.finish()

    def crashed(self, failure: Failure) -> None:
        log.failure("HTTP front end: request handling failed", failure)
        if self.handle is not None:
            self.handle.finish(Outcome(status=Status.failed, error="gateway error"))
        if not self.request.startedWriting:
            self._respond(500, "internal gateway error")
        elif not self.gone and not self.request.finished:
            self.request.channel.transport.abortConnection()

    async def run(self) -> None:
        front = self.front
        sessions = front.sessions
        request = self.request
        source = Source.from_address("http", request.getClientAddress())
        # An upgrade request that is answered rather than upgraded (refused,
        # denied, failed upstream) ends its client connection.
        self.close_after = _is_upgrade(request)
        routed = split_request_target(request.uri)
        if isinstance(routed, PathError):
            # Refused paths still get their connection's error form, if the
            # first segment names one.
            first = request.uri.split(b"?", 1)[0].split(b"/")[1:2]
            name = first[0].decode("ascii", "replace") if first else ""
            connection = sessions.connections.get(name)
            self.kubernetes = _is_kubernetes(connection, None)
        else:
            connection = sessions.connections.get(routed.connection)
            self.kubernetes = _is_kubernetes(connection, routed)

        method = request.method.decode("ascii", "replace")
        if method not in METHODS:
            # Before anything is decided: a policy names methods upper-case.
            return self._respond(
                405,
                f"method {method[:32]!r} is not allowed through the gateway "
                f"(allowed: {', '.join(sorted(METHODS))})",
                headers={b"allow": ", ".join(sorted(METHODS)).encode("ascii")},
            )

        token = bearer_token(request.requestHeaders.getRawHeaders(b"authorization"))
        if token is None:
            sessions.auth_failed(source=source, reason="no bearer token", method="token")
            return self._unauthorized("a bearer token is required (Authorization: Bearer <token>)")
        try:
            identity: Identity = await sessions.authenticate_token(token, source=source)
        except AuthenticationFailed as e:
            return self._unauthorized(f"the bearer token was refused: {e.reason}")
        del token

        if isinstance(routed, PathError):
            return self._respond(routed.status, routed.reason)
        if connection is not None and connection.kind != "http":
            return self._respond(404, f"{routed.connection!r} is not an HTTP connection")
        upstream = self.front.upstreams.get(routed.connection)
        if not (upstream is not None and upstream.impersonate) and any(
            name.casefold() == "_method" for name, _ in routed.raw_query_params
        ):
            # Rails, Laravel, Symfony and method-override run a POST with
            # _method=DELETE as a DELETE; the Kubernetes API server does not.
            return self._respond(400, "the _method query parameter (a method override) is not allowed")
        info = from_routed(method, routed)
        if isinstance(info, K8sRequestError):
            return self._respond(info.status, info.reason)
        raw_headers = [
            (name, value) for name, values in request.requestHeaders.getAllRawHeaders() for value in values
        ]
        sanitized = sanitize_request_headers(
            raw_headers, pass_cookies=upstream.pass_cookies if upstream is not None else False
        )
        if isinstance(sanitized, HeaderError):
            return self._respond(sanitized.status, sanitized.reason)
        try:
            session = await self._session(identity, routed.connection, source)
        except NotPermitted as e:
            return self._respond(403, str(e))
        except AuditUnavailable as e:
            return self._respond(503, str(e))
        if self.gone:
            return

        request.content.seek(0, 2)
        size = request.content.tell()
        request.content.seek(0)
        action = self._action(info, method, size, sanitized.removed)
        try:
            handle = await session.check(action)
        except AuditUnavailable as e:
            return self._respond(503, str(e))
        except NotPermitted as e:
            return self._respond(503, str(e))
        self.handle = handle
        if not handle.allowed:
            decision = handle.decision
            assert decision is not None
            rule = f"rule {decision.rule!r}" if decision.rule else "no rule allows it"
            message = f"{decision.message or 'refused by policy'} (hoopgw {rule}; nothing was forwarded)"
            if info.is_resource:
                what = info.resource + (f' "{info.name}"' if info.name else "")
                message = f"{what} is forbidden: {message}"
            return self._respond(403, message)
        if self.gone:
            handle.finish(Outcome(status=Status.failed, error="client went away before the request was forwarded"))
            return
        if self.close_after:
            return await self._upgrade(session, handle, identity, routed, method, sanitized.headers, size)
        await self._forward(session, handle, identity, routed, method, sanitized.headers, size)

    def _unauthorized(self, message: str) -> None:
        self._respond(401, message, headers={b"www-authenticate": b'Bearer realm="hoopgw"'})

    async def _session(self, identity: Identity, name: str, source: Source) -> Session:
        channel: Any = self.request.channel
        cache: dict[tuple[str, str], Session] = getattr(channel, "sessions", {})
        key = (identity.credential_sha256 or identity.subject, name)
        session = cache.get(key)
        if session is not None and not session.closed:
            return session
        user_agent = self.request.getHeader(b"user-agent")
        client = {"user_agent": user_agent.decode("utf-8", "replace")[:200]} if user_agent else {}
        session = await self.front.sessions.open(identity, name, source=source, client=client)
        if self.gone or getattr(channel, "lost", True):
            # The client connection ended while the session was opening:
            # nobody will reuse it, and nobody else would close it.
            session.close(status="closed")
        else:
            cache[key] = session
        return session

    def _action(self, info: K8sRequest, method: str, size: int, removed: Sequence[bytes]) -> Action:
        action = info.to_action()
        details = dict(action.details)
        if removed:
            # Names only: what the client tried to pass on, never the values.
            details["removed_headers"] = [name.decode("ascii") for name in removed]
        if method in _BODY_METHODS and size:
            head = self.request.content.read(self.front.body_cap)
            self.request.content.seek(0)
            content_type = (self.request.getHeader(b"content-type") or b"").decode("ascii", "replace")
            details["body"] = body_record(
                head, total=size, resource=info.resource, content_type=content_type, cap=self.front.body_cap
            )
        return Action(action.kind, action.input, action.attributes, details)

    async def _forward(
        self,
        session: Session,
        handle: ActionHandle,
        identity: Identity,
        routed: RoutedPath,
        method: str,
        headers: Sequence[tuple[bytes, bytes]],
        size: int,
    ) -> None:
        request = self.request
        upstream = self.front.upstreams[routed.connection]
        out = Headers()
        for name, value in headers:
            if name.lower() not in _REFRAMED:
                out.addRawHeader(name, value)
        try:
            credentials = upstream.credential_headers(identity)
        except ReservedIdentity as e:
            handle.finish(Outcome(status=Status.blocked, error=str(e)))
            return self._respond(403, f"{e} (nothing was forwarded)")
        except ValueError as e:
            handle.finish(Outcome(status=Status.failed, error=str(e)))
            return self._respond(400, str(e))
        for name, value in credentials:
            out.addRawHeader(name, value)
        body = FileBodyProducer(request.content, cooperator=_cooperator(self.front.reactor)) if size else None
        session.bytes_in += size
        self.pending = upstream.agent.request(method.encode("ascii"), upstream.url(routed), out, body)
        timeout = self.front.response_timeout
        # Headers only: once they arrive the timer is cancelled, so a watch
        # streams for as long as it likes.  (Not Deferred.addTimeout: the
        # Agent reports a cancelled request as ResponseNeverReceived, which
        # addTimeout does not recognise as its own.)
        expired: list[bool] = []

        def expire(pending: Deferred = self.pending) -> None:
            expired.append(True)
            pending.cancel()

        timer = self.front.reactor.callLater(timeout, expire)
        try:
            response = await self.pending
        except Exception as e:
            if self.gone:
                handle.finish(Outcome(status=Status.failed, error="client went away", bytes_in=size))
                return
            if expired:
                error = f"upstream did not answer within {timeout:g} s"
                handle.finish(Outcome(status=Status.failed, error=error, bytes_in=size))
                return self._respond(
                    504, f"the upstream of {routed.connection!r} did not answer within {timeout:g} s"
                )
            error = _describe(e)
            handle.finish(Outcome(status=Status.failed, error=f"upstream unreachable: {error}", bytes_in=size))
            return self._respond(502, f"the gateway could not reach the upstream of {routed.connection!r}: {error}")
        finally:
            if timer.active():
                timer.cancel()
            self.pending = None

        code: int = response.code
        if self.gone:
            response.deliverBody(_Discard())
            handle.finish(Outcome(status=Status.failed, error="client went away", code=str(code), bytes_in=size))
            return
        request.setResponseCode(code, response.phrase)
        request.responseHeaders.removeHeader(b"content-type")
        for name, values in response_headers(
            list(response.headers.getAllRawHeaders()), pass_cookies=upstream.pass_cookies
        ):
            request.responseHeaders.setRawHeaders(name, values)
        relay = _Relay(request, _ERROR_BODY_CAP if code >= 400 else 0)
        self.relay = relay
        response.deliverBody(relay)
        await relay.done
        reason = relay.reason
        assert reason is not None
        session.bytes_out += relay.size
        complete = reason.check(ResponseDone, PotentialDataLoss) is not None
        if not complete and not self.gone:
            # The body was cut off upstream: say so by closing, not by a
            # clean end that would make a truncated body look whole.
            request.channel.transport.loseConnection()
        elif not self.gone:
            request.finish()
        problem: str | None = None
        if self.gone and not complete:
            problem = "client went away"
        elif not complete:
            problem = f"upstream response cut off: {_describe(reason.value)}"
        elif code >= 400:
            problem = _upstream_message(bytes(relay.head)) or f"HTTP {code}"
        status = Status.succeeded if code < 400 and problem is None else Status.failed
        handle.finish(
            Outcome(status=status, error=problem, code=str(code), bytes_in=size, bytes_out=relay.size)
        )


    async def _upgrade(
        self,
        session: Session,
        handle: ActionHandle,
        identity: Identity,
        routed: RoutedPath,
        method: str,
        headers: Sequence[tuple[bytes, bytes]],
        size: int,
    ) -> None:
        """
        An allowed upgrade (exec, attach, port-forward): relayed by
        L{hoopgw.protocols.http.upgrade} if it is one of the protocols the
        gateway carries; see the module docstring there.
        """
        request = self.request
        upstream = self.front.upstreams[routed.connection]
        upgrade, why = check_upgrade(request.requestHeaders)
        if upgrade is None or size:
            why = why or "an upgrade request must not have a body"
            handle.finish(Outcome(status=Status.failed, error=why, code="400"))
            return self._respond(400, why)
        try:
            credentials = upstream.credential_headers(identity)
        except ReservedIdentity as e:
            handle.finish(Outcome(status=Status.blocked, error=str(e)))
            return self._respond(403, f"{e} (nothing was forwarded)")
        except ValueError as e:
            handle.finish(Outcome(status=Status.failed, error=str(e)))
            return self._respond(400, str(e))
        host, prefix = host_and_prefix(upstream.base)
        head = request_head(
            method.encode("ascii"), prefix + routed.target.encode("ascii"), host, upgrade,
            [*headers, *credentials],
        )
        reactor = upstream.reactor if upstream.reactor is not None else self.front.reactor
        connected, side = connect_upstream(reactor, upstream.base, upstream.tls, head)
        timeout = self.front.response_timeout
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            if side.transport is not None:
                side.transport.abortConnection()
            elif not connected.called:
                connected.cancel()

        timer = self.front.reactor.callLater(timeout, expire)
        self.pending = connected
        try:
            await connected
            self.pending = None
            if self.gone:
                side.transport.abortConnection()
                raise _ClientGone()
            answer = await side.head
        except _ClientGone:
            handle.finish(Outcome(status=Status.failed, error="client went away"))
            return
        except Exception as e:
            if side.transport is not None:
                side.transport.abortConnection()
            if self.gone:
                handle.finish(Outcome(status=Status.failed, error="client went away"))
                return
            if expired:
                error = f"upstream did not answer within {timeout:g} s"
                handle.finish(Outcome(status=Status.failed, error=error))
                self._respond(504, f"the upstream of {routed.connection!r} did not answer within {timeout:g} s")
            else:
                error = _describe(e)
                handle.finish(Outcome(status=Status.failed, error=f"upstream unreachable: {error}"))
                self._respond(502, f"the gateway could not reach the upstream of {routed.connection!r}: {error}")
            return
        finally:
            self.pending = None
            if timer.active():
                timer.cancel()

        if answer.code != 101:
            # CVE-2018-1002105: the answer goes back and the client
            # connection ends with it, whatever the client sends next.
            # The body has the same time to arrive as the head had.
            stall = self.front.reactor.callLater(timeout, side.transport.abortConnection)
            body = await side.body
            if stall.active():
                stall.cancel()
            if side.transport is not None:
                side.transport.loseConnection()
            problem = _upstream_message(body) or f"HTTP {answer.code}"
            handle.finish(Outcome(status=Status.failed, error=f"upgrade refused upstream: {problem}",
                                  code=str(answer.code), bytes_out=len(body)))
            if self.gone or request.finished:
                return
            request.setResponseCode(answer.code, answer.phrase or None)
            request.responseHeaders.removeHeader(b"content-type")
            grouped: dict[bytes, list[bytes]] = {}
            for name, value in answer.headers:
                grouped.setdefault(name, []).append(value)
            for name, values in response_headers(list(grouped.items()), pass_cookies=upstream.pass_cookies):
                if name.lower() != b"content-length":
                    request.responseHeaders.setRawHeaders(name, values)
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            return self._finish()

        if self.gone:
            side.transport.abortConnection()
            handle.finish(Outcome(status=Status.failed, error="client went away", code="101"))
            return
        lines = [b"HTTP/1.1 101 " + (answer.phrase or b"Switching Protocols")]
        for name, value in answer.headers:
            lower = name.lower()
            if lower not in _RESPONSE_HOP_BY_HOP and lower not in _SET_COOKIE:
                lines.append(name + b": " + value)
        lines += [b"Upgrade: " + (answer.get(b"upgrade") or [upgrade])[0], b"Connection: Upgrade"]
        client = take_over(request, side, b"\r\n".join(lines) + b"\r\n\r\n")
        await DeferredList([client.lost, side.lost])
        session.bytes_in += client.sent
        session.bytes_out += side.received
        handle.finish(
            Outcome(status=Status.succeeded, code="101", bytes_in=client.sent, bytes_out=side.received)
        )


class _ClientGone(Exception):
    pass


class _Discard(Protocol):
    def connectionMade(self) -> None:
        self.transport.stopProducing()


class _NullContent:
    """The content of a refused request: its body is discarded unread."""

    def write(self, data: bytes) -> None:
        pass

    def read(self, size: int = -1) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        pass


def _describe(error: BaseException) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(f.getErrorMessage() for f in reasons)
    return str(error) or type(error).__name__


def _cooperator(reactor: Any) -> Any:
    from twisted.internet.task import Cooperator

    return Cooperator(scheduler=lambda work: reactor.callLater(0, work))


def _is_kubernetes(connection: Connection | None, routed: RoutedPath | None) -> bool:
    """Whether errors take the Kubernetes C{Status} form (see the module docstring)."""
    if connection is not None and isinstance(connection.settings, HTTPSettings) and connection.settings.impersonate:
        return True
    if connection is not None and routed is not None and routed.segments[:1] and routed.segments[0] in API_PREFIXES:
        return True
    if connection is not None:
        return False
    # Unknown connections get the Kubernetes form too: kubectl is the client
    # most likely to be pointed at a wrong name, and prints its message.
    return connection is None


def _is_upgrade(request: server.Request) -> bool:
    for value in request.requestHeaders.getRawHeaders(b"connection") or ():
        if any(o.strip().lower() == b"upgrade" for o in value.split(b",")):
            return True
    return request.requestHeaders.hasHeader(b"upgrade")


def make_front_end(context: Any) -> TLSMemoryBIOFactory:
    """The L{hoopgw.gateway.FRONT_ENDS} builder for the C{http} listener."""
    from hoopgw.tls import server_options

    front = HTTPFrontEnd(sessions=context.sessions, reactor=context.reactor)
    # curl and kubectl offer h2 and http/1.1 over ALPN; this is an HTTP/1.1
    # server, and Twisted fails a handshake that has no protocol in common.
    return front.factory(server_options(context.tls_cert, context.tls_key, alpn=(b"http/1.1",)))
