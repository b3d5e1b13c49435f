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
from hoopgw.protocols.http.wire import END, Head, ParseError, Parser

if TYPE_CHECKING:
    from hoopgw.protocols.http.proxy import HTTPFrontEnd
    from hoopgw.protocols.http.upgrade import _ClientSide

__all__ = ["ClientConnection"]

# Requests refused before a decision (each one audited) that one client
# connection may send before it is closed.
_MAX_REFUSALS = 20


@implementer(IPushProducer)
class ClientConnection(Protocol):
    """
    A client's HTTP/1.1 connection (inside TLS): feeds the request parser,
    runs one L{Exchange} at a time, and ends its sessions when it closes.

    It is the push producer of its own transport: when the client's write
    buffer is full, the exchange stops reading from the upstream.
    """

    transport: IStreamTransport

    def __init__(self, front: HTTPFrontEnd) -> None:
        self.front = front
        self.parser = Parser()
        self.sessions: dict[tuple[str, str], ISession] = {}
        self.inflight: set[Deferred[None]] = set()
        self.exchange: Exchange | None = None
        self.relay: _ClientSide | None = None  # the upgrade relay's client side, after a 101
        self.lost = False
        self.closing = False
        self.draining = False  # the gateway stops: the response in progress is the last
        self.write_paused = False
        self._read_paused = False
        self._feeding = False
        self._more = False
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
        if not self._read_paused and not self.lost:
            self._read_paused = True
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        if self._read_paused and not self.lost:
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

    def _busy(self) -> None:
        self._idle_since = None

    def _disarm_idle(self) -> None:
        self._idle_since = None
        if self._idle is not None:
            if self._idle.active():
                self._idle.cancel()
            self._idle = None

    def _idle_expired(self) -> None:
        self._idle = None
        since = self._idle_since
        if since is None or self.exchange is not None:
            return  # busy: re-armed when the request ends
        left = since + self.front.idle_timeout - self.front.reactor.seconds()
        if left > 0:
            self._idle = self.front.reactor.callLater(left, self._idle_expired)
        else:
            self.close()

    def close(self) -> None:
        """Close after what was written (the producer must go first, or TLS waits for it)."""
        if self.lost or self.closing:
            return
        self.closing = True
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
        if self.lost or self.closing:
            return
        self.draining = True
        if self.relay is not None:
            self.abort()
        elif self.exchange is None:
            self.close()

    def abort(self) -> None:
        if not self.lost:
            self.closing = True
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.dataReceived(data)
            return
        if self.closing:
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        if self._feeding:
            # An exchange ended while its events were being handled: the
            # loop below reads on once they are.
            self._more = True
            return
        self._feeding = True
        try:
            while True:
                try:
                    events = self.parser.feed(data)
                except ParseError as e:
                    self._malformed(e)
                    return
                data = b""
                for event in events:
                    if type(event) is bytes:
                        if self.exchange is not None:
                            self.exchange.body_data(event)
                    elif event is END:
                        if self.exchange is not None:
                            self.exchange.body_end()
                    else:
                        self._request(cast(Head, event))  # (a request's events: its head, body bytes, END)
                    if self.closing or self.relay is not None:
                        return
                if not self._more:
                    break
                self._more = False
            if self.exchange is not None and self.parser.done and self.parser.buffered > self.parser.max_head:
                # Pipelined requests wait for the response before them.
                self.pause_reading()
        finally:
            self._feeding = False

    def _request(self, head: Head) -> None:
        self._busy()
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

    def response_done(self, exchange: Exchange, keep_alive: bool) -> None:
        """C{exchange}'s response has been written whole: read the next request, or close."""
        if self.exchange is not exchange or self.lost or self.closing:
            # Closing (aborted while the response streamed): nothing more is read.
            return
        if not keep_alive or self.draining:
            self.close()
            return
        self.exchange = None
        self.parser.next_message()
        self.resume_reading()
        self._arm_idle()
        self._feed(b"")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
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
