"""
The HTTP front end: a reverse proxy for HTTP APIs, the Kubernetes API first
among them.  C{https://gateway:18443/<connection>/<rest>} reaches
C{<upstream>/<rest>} of the connection named by the first path segment.

The wire is the gateway's own: L{hoopgw.protocols.http.wire} parses client
requests and upstream responses (strictly: the request-smuggling classes are
refused with a precise 400), L{hoopgw.protocols.http.client} is the thin
protocol on the client's TLS connection, L{hoopgw.protocols.http.exchange}
carries one request through the steps below,
L{hoopgw.protocols.http.upstream} is where it goes (with the connection's
credentials) and L{hoopgw.protocols.http.pool} keeps persistent upstream
connections.  Bodies stream both ways with backpressure: a request
body is forwarded as it arrives (the client is not read while the upstream
is behind), a response as it arrives (the upstream is not read while the
client is behind).  Nothing is buffered whole.

Per request, in this order, and nothing reaches the upstream before the end:

 0. as soon as the head is in (before any body is read, before any
    C{100 Continue}): a method not in L{METHODS} is refused with 405, a
    declared body over C{max_body} with 413, a body without an
    C{Authorization: Bearer} header with 401;
 1. the client's C{Authorization: Bearer} token is verified (401 otherwise,
    with C{WWW-Authenticate: Bearer});
 2. the request-target is split and made canonical
    (L{hoopgw.protocols.http.paths}); the request is described as the API
    server would (L{hoopgw.protocols.http.k8s}); its headers are sanitized
    (L{hoopgw.protocols.http.headers});
 3. the identity's session on the connection is found or opened (403 if
    policy does not allow it, or the connection is not an HTTP one);
 4. for a mutating method, the body's first C{body_cap} bytes are read (the
    rest waits, unread) so that the audit record can hold them; the action
    (C{k8s.<verb>} for a Kubernetes resource request, else C{http.request})
    is decided and its C{action.start} record written; refused: 403,
    nothing forwarded;
 5. the request is forwarded with the connection's own credentials, and the
    response is streamed back as it arrives; C{action.end} records its
    status, sizes and duration.

Refusals before a decision (0, 1, 2) are audited too: C{auth.failed} for a
missing or refused token (its SHA-256, never the token), C{request.refused}
for the others, with the identity when it is known.

Sessions.  One L{Session} per (identity's credential, connection) per client
TCP connection: opened by the first request that names the connection,
closed when the client connection closes (after C{idle_timeout} seconds
without a request, 60 by default, never while a request is in progress).
kubectl keeps its connection alive across the requests of one command, so
a command is one session with one action per request; a new token (an exec
plugin's refresh) opens a new session.  The token is still verified on
every request, so an expired token stops working at once.

Error bodies.  A request to a Kubernetes connection (C{impersonate = true},
or a path under C{/api} or C{/apis}) gets a Kubernetes C{Status} object, so
that kubectl prints the message ("Error from server (Forbidden): ...");
other requests get C{{"error": "..."}}.

Requests on one client connection are handled one at a time, in order: a
pipelined request is not read until the response before it has been sent.
The upstream has C{response_timeout} seconds to send its response headers
(504 otherwise).

Upgrades (C{kubectl exec}/C{attach}/C{port-forward}) are decided like any
request, then relayed by L{hoopgw.protocols.http.upgrade} (WebSocket
C{v5}/C{v4.channel.k8s.io} and SPDY/3.1 only, 400 otherwise); an upgrade
request that is answered instead of upgraded closes its client connection
(see docs/http.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import Factory
from twisted.protocols.tls import TLSMemoryBIOFactory

from hoopgw.interfaces import ISessionService
from hoopgw.protocols.http.bodies import DEFAULT_CAP
from hoopgw.protocols.http.client import ClientConnection
from hoopgw.protocols.http.upstream import Upstream

if TYPE_CHECKING:
    from hoopgw.gateway import GatewayContext

__all__ = ["HTTPFrontEnd", "make_front_end"]

# How long the upstream has to answer with its response headers; a watch
# or a log follow is unaffected once its headers have arrived.
DEFAULT_RESPONSE_TIMEOUT = 30.0

# The largest request body the gateway forwards.  Bodies stream, so this
# is a limit of policy, not of memory: a declared length over it is refused
# before anything is read, a chunked body is cut off when it passes it.
DEFAULT_MAX_BODY = 1024 * 1024 * 1024

# A client connection with no request in progress is closed after this.
DEFAULT_IDLE_TIMEOUT = 60.0


class HTTPFrontEnd:
    """The HTTP front end: one per listener, with one L{Upstream} per HTTP connection."""

    def __init__(
        self,
        *,
        sessions: ISessionService,
        reactor: Any,
        upstreams: Mapping[str, Upstream] | None = None,
        body_cap: int = DEFAULT_CAP,
        response_timeout: float = DEFAULT_RESPONSE_TIMEOUT,
        max_body: int = DEFAULT_MAX_BODY,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self.sessions = sessions
        self.reactor = reactor
        self.body_cap = body_cap
        self.response_timeout = response_timeout
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        if upstreams is None:
            upstreams = {
                c.name: Upstream.from_connection(c, reactor)
                for c in sessions.connections.values()
                if c.kind == "http"
            }
        self.upstreams = dict(upstreams)
        self.http = Factory.forProtocol(lambda: ClientConnection(self))

    def factory(self, tls_options: Any) -> TLSMemoryBIOFactory:
        """The listener's factory: TLS, then HTTP/1.1."""
        return _ClosingTLSFactory(self, tls_options, False, self.http)

    def close(self) -> Deferred[None]:
        """Close the idle upstream connections (at listener stop); fires with None once they are."""
        return gatherResults([u.close() for u in self.upstreams.values()], consumeErrors=True).addCallback(
            lambda _: None
        )


class _ClosingTLSFactory(TLSMemoryBIOFactory):
    def __init__(self, front: HTTPFrontEnd, *args: Any) -> None:
        super().__init__(*args)
        self.front = front

    def stopFactory(self) -> None:
        stop: Callable[[], None] = super().stopFactory  # (Twisted's: unannotated)
        stop()
        self.front.close()


def make_front_end(context: GatewayContext) -> TLSMemoryBIOFactory:
    """The C{http} listener's factory (L{IFrontEnd.build <hoopgw.interfaces.IFrontEnd.build>}, through L{hoopgw.protocols.http.plugin})."""
    from hoopgw.tls import server_options

    front = HTTPFrontEnd(sessions=context.sessions, reactor=context.reactor)
    # curl and kubectl offer h2 and http/1.1 over ALPN; this is an HTTP/1.1
    # server, and Twisted fails a handshake that has no protocol in common.
    return front.factory(server_options(context.tls_cert, context.tls_key, alpn=(b"http/1.1",)))
