"""
A client's HTTP/1.1 connection to the front end (inside TLS): it feeds the
request parser, hands each request to one L{Exchange} at a time, in order,
and ends its sessions when it closes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgw.interfaces import ISession
from hoopgw.model import Identity, Source
from hoopgw.protocols import IStreamTransport, _preauth, _tls as tls
from hoopgw.protocols.http.exchange import Exchange
from hoopgw.protocols.http.pool import set_no_delay
from hoopgw.protocols.http.redact import redact_target
from hoopgw.protocols.http.responses import error_body, phrase
from hoopgw.protocols.http.state import BUSY, CLOSED, CLOSING, DONE, IDLE, NEXT_CYCLE, PAUSED, ConnectionState
from hoopgw.protocols.http.wire import END, Head, ParseError, Parser

if TYPE_CHECKING:
    from hoopgw.protocols.http.proxy import HTTPFrontEnd
    from hoopgw.protocols.http.upgrade import _ClientSide

__all__ = ["ClientConnection"]

# Requests refused before a decision (each one audited) that one client
# connection may send before it is closed.
_MAX_REFUSALS = 20


@implementer(IPushProducer)
class ClientConnection(Protocol, ConnectionState):
    """
    A client's HTTP/1.1 connection (inside TLS): feeds the request parser,
    runs one L{Exchange} at a time, and ends its sessions when it closes.
    Where it is in its cycle (idle, busy with an exchange, closing, closed)
    is its L{ConnectionState}; what it does with the bytes it reads, its
    L{next_step <ConnectionState.next_step>}.

    It is the push producer of its own transport: when the client's write
    buffer is full, the exchange stops reading from the upstream.
    """

    transport: IStreamTransport

    def __init__(self, front: HTTPFrontEnd) -> None:
        ConnectionState.__init__(self)
        self.front = front
        self.parser = Parser()
        self.sessions: dict[tuple[str, str], ISession] = {}
        self.inflight: set[Deferred[None]] = set()
        self.exchange: Exchange | None = None  # the exchange of the BUSY cycle
        self.relay: _ClientSide | None = None  # the upgrade relay's client side, after a 101
        # Facts that hold in any state of the cycle: the gateway is stopping
        # (the response in progress is the last); the client's write buffer
        # is full; this side paused its transport's reading (back-pressure:
        # a body held, the upstream behind, a pipelined request waiting);
        # the events in hand are being handed on (an exchange that ends
        # meanwhile leaves the next request to that loop).
        self.draining = False
        self.write_paused = False
        self._read_paused = False
        self._serving = False
        self._idle: IDelayedCall | None = None
        # When the connection last became idle; None while a request is in progress.
        self._idle_since: float | None = None
        self.refusals = 0
        self.source: Source = Source("http", "unknown")
        # A request on this connection has presented a valid token: the
        # listener's pre-authentication limits no longer apply to it.
        self.proven = False

    def connectionMade(self) -> None:
        self.source = Source.from_address("http", self.transport.getPeer())
        # Responses are written whole: nothing to gain from Nagle's delay,
        # nor from waiting a reactor turn to send them.
        set_no_delay(self.transport)
        tls.send_at_once(self.transport)
        self.transport.registerProducer(self, True)
        self._arm_idle()

    # -- the transport's producer: the client's write buffer --

    def pauseProducing(self) -> None:
        self.write_paused = True
        if self.exchange is not None:
            self.exchange.client_write_paused(True)

    def resumeProducing(self) -> None:
        self.write_paused = False
        if self.exchange is not None:
            self.exchange.client_write_paused(False)

    def stopProducing(self) -> None:
        pass

    # -- reading --

    def pause_reading(self) -> None:
        if not self._read_paused and self.cycle is not CLOSED:
            self._read_paused = True
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        if self._read_paused and self.cycle is not CLOSED:
            self._read_paused = False
            self.transport.resumeProducing()

    # One timer per connection, not one per request: it is left running
    # while a request is in progress and, when it fires, closes the
    # connection only if it has been idle for the whole timeout, else waits
    # for the rest of it.

    def _arm_idle(self) -> None:
        timeout = self.front.idle_timeout
        if timeout:
            self._idle_since = self.front.reactor.seconds()
            if self._idle is None:
                self._idle = self.front.reactor.callLater(timeout, self._idle_expired)

    def _disarm_idle(self) -> None:
        self._idle_since = None
        if self._idle is not None:
            if self._idle.active():
                self._idle.cancel()
            self._idle = None

    def _idle_expired(self) -> None:
        self._idle = None
        since = self._idle_since
        if since is None or self.cycle is not IDLE:
            return  # busy: re-armed when the request ends
        left = since + self.front.idle_timeout - self.front.reactor.seconds()
        if left > 0:
            self._idle = self.front.reactor.callLater(left, self._idle_expired)
        else:
            self.close()

    def close(self) -> None:
        """Close after what was written (the producer must go first, or TLS waits for it)."""
        if self.cycle is CLOSING or self.cycle is CLOSED:
            return
        self.close_started()
        self._disarm_idle()
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def drain(self) -> None:
        """
        The gateway stops: an idle connection closes now; a request in
        progress finishes, its response saying C{Connection: close}, and
        the connection closes after it (pipelined requests are not read).
        A connection relaying an upgrade (exec, port-forward) has no last
        response to mark: it is aborted.
        """
        if self.cycle is CLOSING or self.cycle is CLOSED:
            return
        self.draining = True
        if self.relay is not None:
            self.abort()
        elif self.cycle is IDLE:
            self.close()

    def abort(self) -> None:
        if self.cycle is not CLOSED:
            if self.cycle is not CLOSING:
                self.close_started()
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.dataReceived(data)
            return
        if self.cycle is CLOSING:
            return
        self._serve(data)

    def _serve(self, data: bytes) -> None:
        """
        Hand what the parser reads to the exchange, one request at a time
        and in order: a loop (not a recursion) over the requests a response
        ending here lets through, until the state says to wait.
        """
        parser = self.parser
        self._serving = True
        try:
            while True:
                try:
                    events = parser.feed(data)
                except ParseError as e:
                    self._malformed(e)
                    return
                data = b""
                for event in events:
                    exchange = self.exchange
                    if type(event) is bytes:
                        if exchange is not None:
                            exchange.body_data(event)
                    elif event is END:
                        if exchange is not None:
                            exchange.body_end()
                    else:
                        self._request(cast(Head, event))  # (a request's events: its head, body bytes, END)
                    if self.cycle is CLOSING or self.relay is not None:
                        return
                step = self.next_step(self.exchange)
                if step is NEXT_CYCLE:
                    self._next_cycle()
                    continue
                if step is PAUSED and parser.buffered > parser.max_head:
                    # Pipelined requests wait for the response before them.
                    self.pause_reading()
                return
        finally:
            self._serving = False

    def _next_cycle(self) -> None:
        """The exchange's response was written whole: the connection reads the next request."""
        exchange = self.exchange
        assert exchange is not None
        self.start_next_cycle(exchange)
        self.exchange = None
        self.parser.next_message()
        self.resume_reading()
        self._arm_idle()

    def _request(self, head: Head) -> None:
        self.request_started()
        self._idle_since = None
        exchange = Exchange(self, head)
        self.exchange = exchange
        if exchange.refused_early():
            return
        d = Deferred.fromCoroutine(exchange.run())
        d.addErrback(exchange.crashed)
        if not d.called:
            self.inflight.add(d)
            d.addBoth(self._untrack, d)

    def authenticated(self) -> None:
        """A request's token was verified: the connection is past the listener's pre-authentication limits."""
        self.proven = True
        _preauth.authenticated(self)

    def refused(
        self,
        code: int,
        reason: str,
        *,
        head: Head | None = None,
        identity: Identity | None = None,
        token: str | None = None,
    ) -> None:
        """
        Audit a request refused before a decision (405, 413, 400, ...): a
        C{request.refused} record (L{SessionService.refused}) with the
        method and target when the head was read; counted per connection.
        """
        self.refusals += 1
        request = None
        if head is not None:
            request = {
                "method": head.method[:32].decode("latin-1"),
                # Credentials in the target never reach the trail.
                "target": redact_target(head.target.decode("latin-1"))[:1024],
            }
        self.front.sessions.refused(self.source, code, reason, request=request, identity=identity, token=token)

    @property
    def may_continue(self) -> bool:
        """
        Whether the connection may carry another request after a refusal:
        a client that keeps sending refused requests on one connection is
        cut off after L{_MAX_REFUSALS}, so that filling the audit trail
        costs it a TLS handshake per few records.
        """
        return self.refusals < _MAX_REFUSALS

    def _untrack(self, result: object, d: Deferred[None]) -> object:
        self.inflight.discard(d)
        return result

    def _malformed(self, error: ParseError) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.body_failed(error)
            return
        self.refused(error.status, error.reason)
        self.respond_and_close(error.status, error.reason)

    def respond_and_close(
        self, code: int, message: str, *, kubernetes: bool = True, headers: Mapping[bytes, bytes] | None = None
    ) -> None:
        """Answer a request that will not be read any further, and close."""
        self.write_error(code, message, kubernetes=kubernetes, headers=headers, keep_alive=False)
        self.close()

    def write_error(
        self,
        code: int,
        message: str,
        *,
        kubernetes: bool,
        headers: Mapping[bytes, bytes] | None = None,
        keep_alive: bool,
    ) -> None:
        body = error_body(code, message, kubernetes=kubernetes)
        lines = [
            b"HTTP/1.1 %d %s" % (code, phrase(code)),
            b"Content-Type: application/json",
            b"Content-Length: %d" % len(body),
        ]
        lines += [name + b": " + value for name, value in (headers or {}).items()]
        if not keep_alive:
            lines.append(b"Connection: close")
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)

    def response_done(self, exchange: Exchange) -> None:
        """C{exchange}'s response has been written whole (or given up): read the next request, or close."""
        if self.exchange is not exchange or self.cycle is not BUSY:
            # Closing (aborted while the response streamed): nothing more is read.
            return
        if exchange.response_state is not DONE or self.draining:
            self.close()
            return
        if not self._serving:
            # The response ended on the upstream's bytes, not inside the
            # loop (which starts the next cycle itself once its events are
            # handed on): the next request is read now, if it came already.
            self._next_cycle()
            if self.parser.buffered:
                self._serve(b"")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connection_closed()
        self._disarm_idle()
        if self.relay is not None:
            self.relay.connectionLost(reason)
        elif self.exchange is not None:
            self.exchange.client_gone()
        sessions, self.sessions = self.sessions, {}

        def close(_: object) -> None:
            for session in sessions.values():
                session.close(status="closed")

        # An exchange still streaming learns of the loss above, and writes
        # its outcome a moment later: session.end comes after it.
        DeferredList(list(self.inflight), consumeErrors=True).addBoth(close)
