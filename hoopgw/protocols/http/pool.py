"""
Persistent connections to one upstream, one exchange at a time on each.

An L{UpstreamConnection} carries one request and its response, parsed by
L{hoopgw.protocols.http.wire.Parser}, and goes back to its L{Pool} only
after a complete response whose framing left no doubt (a response that
ended with the connection, a parse error, a request whose body was not
sent whole, an aborted exchange: the connection is closed instead).  Bytes
from an idle connection (nobody asked) close it too.

Backpressure both ways: the connection is the push producer of its own
transport, so a full upstream write buffer pauses the exchange's request
body (the client is no longer read); the exchange pauses and resumes this
transport's reading when the client falls behind on the response.
"""

from __future__ import annotations

from typing import Any, Protocol as TypingProtocol
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IPushProducer, IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgw.protocols import IStreamTransport, _tls as tls, set_no_delay
from hoopgw.protocols.http.wire import END, ParseError, Parser

__all__ = ["Pool", "UpstreamConnection", "UpstreamUser", "set_no_delay"]


class UpstreamUser(TypingProtocol):
    """What an exchange offers the connection that carries it."""

    def upstream_events(self, events: list[object]) -> None: ...

    def upstream_failed(self, reason: Failure | ParseError) -> None: ...

    def upstream_write_paused(self, paused: bool) -> None: ...


@implementer(IPushProducer)
class UpstreamConnection(Protocol):
    """One connection to the upstream; see the module docstring."""

    transport: IStreamTransport

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.parser = Parser(response=True)
        self.user: UpstreamUser | None = None
        self.reused = False
        self.received = False  # any byte of the current response
        self.lost = False
        self.write_paused = False
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        # Small request heads must not wait for an ACK (Nagle), nor a reactor turn.
        set_no_delay(self.transport)
        tls.send_at_once(self.transport)
        self.transport.registerProducer(self, True)

    def start(self, user: UpstreamUser, *, head_request: bool) -> None:
        """Carry C{user}'s exchange: its response is parsed from here on."""
        self.user = user
        self.received = False
        self.parser.next_message()
        self.parser.head_request = head_request
        if self.write_paused:
            user.upstream_write_paused(True)

    def release(self) -> None:
        """The exchange is over and the response was complete: back to the pool."""
        self.user = None
        self.reused = True
        if self.parser.buffered:
            # Bytes after a complete response that nobody asked for.
            self.close()
            return
        self.transport.resumeProducing()
        self.pool._idle(self)

    def close(self) -> None:
        """Never reused: aborted, so that no half-sent message is taken as whole."""
        self.user = None
        if not self.lost:
            self.transport.unregisterProducer()
            self.transport.abortConnection()

    # -- the transport's producer (its write buffer) --

    def pauseProducing(self) -> None:
        self.write_paused = True
        if self.user is not None:
            self.user.upstream_write_paused(True)

    def resumeProducing(self) -> None:
        self.write_paused = False
        if self.user is not None:
            self.user.upstream_write_paused(False)

    def stopProducing(self) -> None:
        pass

    # -- reading --

    def dataReceived(self, data: bytes) -> None:
        user = self.user
        if user is None:
            self.close()
            return
        self.received = True
        try:
            events = self.parser.feed(data)
        except ParseError as e:
            self.user = None
            self.close()
            user.upstream_failed(e)
            return
        if events:
            user.upstream_events(events)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        self.pool._forget(self)
        user, self.user = self.user, None
        if user is not None:
            try:
                events = self.parser.feed_eof()
            except ParseError:
                events = []
            if events and events[-1] is END:
                user.upstream_events(events)  # a response delimited by the close
            else:
                user.upstream_failed(reason)
        if not self.closed.called:
            self.closed.callback(None)


class Pool:
    """
    The connections to one upstream (C{base}: scheme, host, port), at most
    C{max_idle} of them kept idle; busy ones (watches, log follows) are
    not limited.  C{tls} is the connection's
    L{hoopgw.protocols.http.upstream.UpstreamTLSPolicy} for an C{https} base.
    """

    def __init__(self, reactor: Any, base: bytes, tls: Any, *, max_idle: int = 16, connect_timeout: float = 10) -> None:
        url = urlsplit(base.decode("ascii"))
        host = url.hostname or ""
        https = url.scheme == "https"
        port = url.port or (443 if https else 80)
        self.reactor = reactor
        self.max_idle = max_idle
        self._endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host.encode("idna"), port, timeout=connect_timeout)
        if https:
            self._endpoint = wrapClientTLS(tls.creatorForNetloc(host.encode("ascii"), port), self._endpoint)
        self._idle_connections: list[UpstreamConnection] = []
        self._all: set[UpstreamConnection] = set()

    def acquire(self, *, fresh: bool = False) -> UpstreamConnection | Deferred[UpstreamConnection]:
        """An idle connection (unless C{fresh}), or a L{Deferred} of a new one."""
        idle = self._idle_connections
        while idle and not fresh:
            connection = idle.pop()
            if not connection.lost:
                return connection
        connection = UpstreamConnection(self)
        self._all.add(connection)
        d: Deferred[UpstreamConnection] = connectProtocol(self._endpoint, connection)
        return d.addErrback(self._failed_connect, connection)

    def _failed_connect(self, failure: Failure, connection: UpstreamConnection) -> Failure:
        self._all.discard(connection)
        return failure

    def _idle(self, connection: UpstreamConnection) -> None:
        if len(self._idle_connections) >= self.max_idle:
            connection.close()
        else:
            self._idle_connections.append(connection)

    def _forget(self, connection: UpstreamConnection) -> None:
        self._all.discard(connection)
        try:
            self._idle_connections.remove(connection)
        except ValueError:
            pass

    def close(self) -> Deferred[None]:
        """Close the idle connections; fires (with None) when they are closed."""
        idle, self._idle_connections = self._idle_connections, []
        waiting = []
        for connection in idle:
            if not connection.lost:
                waiting.append(connection.closed)
                connection.transport.unregisterProducer()
                connection.transport.loseConnection()
        if not waiting:
            return succeed(None)
        return gatherResults(waiting, consumeErrors=True).addCallback(lambda _: None)
