"""
The upgrade relay of the HTTP front end: C{kubectl exec}, C{attach} and
C{port-forward}, once the request has been decided and allowed.

Only the protocols kubectl speaks are carried (L{check_upgrade}): WebSocket
offering C{v5.channel.k8s.io} or C{v4.channel.k8s.io} (exec, attach) or
C{SPDY/3.1+portforward.k8s.io} (port-forward since kubectl 1.31: SPDY
tunnelled in binary messages), and SPDY/3.1 (what kubectl falls back to).
The gateway opens its own TLS connection to the upstream (the same
verification and client certificate as every other request), writes the
request head itself (L{request_head}) and reads the upstream's response head
(L{_UpstreamSide}):

  - C{101 Switching Protocols}: the 101 goes to the client, the client's
    connection stops parsing HTTP (L{take_over}), and bytes are relayed
    both ways, each side the other's producer, until either side closes;
  - anything else: that status and body go to the client, and the client
    connection is closed (CVE-2018-1002105: a failed upgrade must never
    leave a proxied connection open for whatever the client sends next).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol as TypingProtocol
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.http import _ChunkedTransferDecoder

from hoopgw.protocols import IStreamTransport

__all__ = ["RelayTap", "UpgradeHead", "check_upgrade", "connect_upstream", "request_head"]


class RelayTap(TypingProtocol):
    """Sees a copy of what an upgraded connection relays each way (a terminal's recording)."""

    def from_client(self, data: bytes) -> None: ...

    def from_upstream(self, data: bytes) -> None: ...

WEBSOCKET_PROTOCOLS = (b"v5.channel.k8s.io", b"v4.channel.k8s.io", b"SPDY/3.1+portforward.k8s.io")
"""
The Kubernetes subprotocols the relay carries over WebSocket: the channel
protocols of exec and attach, and port-forward's SPDY/3.1 tunnel.  Like
every upgrade they are relayed as bytes; the API server refuses a
subprotocol its subresource does not speak.
"""

SPDY = b"spdy/3.1"

# The longest upstream response head, and the most of a failed upgrade's
# body that is passed on to the client.
MAX_HEAD = 64 * 1024
MAX_ERROR_BODY = 64 * 1024

# Request headers the relay writes itself.
_OWN = frozenset({b"host", b"upgrade", b"connection", b"content-length", b"transfer-encoding", b"expect"})


def _tokens(values: Sequence[bytes] | None) -> list[bytes]:
    return [t.strip(b" \t").lower() for v in values or () for t in v.split(b",") if t.strip(b" \t")]


def check_upgrade(headers: Any) -> tuple[bytes, None] | tuple[None, str]:
    """
    Whether a request's upgrade is one the relay carries: (the C{Upgrade}
    value to send, None) or (None, why not).  C{headers} has
    C{getRawHeaders(name)}: the request's L{hoopgw.protocols.http.wire.Head}
    (or a L{twisted.web.http_headers.Headers}).
    """
    upgrade = _tokens(headers.getRawHeaders(b"upgrade"))
    if b"upgrade" not in _tokens(headers.getRawHeaders(b"connection")):
        return None, "an upgrade needs Connection: Upgrade"
    if upgrade == [b"websocket"]:
        offered = _tokens(headers.getRawHeaders(b"sec-websocket-protocol"))
        if not any(p.lower() in offered for p in WEBSOCKET_PROTOCOLS):
            return None, (
                "only the WebSocket subprotocols "
                + ", ".join(p.decode() for p in WEBSOCKET_PROTOCOLS)
                + " are carried through the gateway"
            )
        if len(headers.getRawHeaders(b"sec-websocket-key") or ()) != 1:
            return None, "a WebSocket upgrade needs one Sec-WebSocket-Key"
        return b"websocket", None
    if upgrade == [SPDY]:
        return b"SPDY/3.1", None
    return None, (
        "only Upgrade: websocket ("
        + ", ".join(p.decode() for p in WEBSOCKET_PROTOCOLS)
        + ") and SPDY/3.1 are carried through the gateway"
    )


def request_head(
    method: bytes,
    target: bytes,
    host: bytes,
    upgrade: bytes,
    headers: Sequence[tuple[bytes, bytes]],
) -> bytes:
    """
    The request head the gateway writes upstream: C{headers} are the
    client's sanitized headers followed by the connection's credentials;
    framing and hop-by-hop headers are the relay's own.
    """
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + host]
    for name, value in headers:
        if name.lower() not in _OWN:
            lines.append(name + b": " + value)
    lines += [b"Upgrade: " + upgrade, b"Connection: Upgrade"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class UpgradeHead:
    """The upstream's answer: status, headers (in order), and what followed the head."""

    def __init__(self, code: int, phrase: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.code = code
        self.phrase = phrase
        self.headers = headers

    def get(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name]


def parse_head(data: bytes) -> UpgradeHead:
    """
    An HTTP/1.1 response head (without its final empty line).

    @raise ValueError: if it is not one.
    """
    status, *lines = data.split(b"\r\n")
    parts = status.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ValueError(f"not an HTTP/1.1 status line: {status[:80]!r}")
    headers = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip(b" \t"):
            raise ValueError(f"bad response header line {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    return UpgradeHead(int(parts[1]), parts[2] if len(parts) > 2 else b"", headers)


class _UpstreamSide(Protocol):
    """
    The gateway's connection to the upstream.  C{head} fires with the
    L{UpgradeHead}; after a 101, bytes go to C{peer}; otherwise the body
    (up to L{MAX_ERROR_BODY}) is collected and C{body} fires with it.
    """

    transport: IStreamTransport

    def __init__(self, request_bytes: bytes) -> None:
        self.request_bytes = request_bytes
        self.buffer = b""
        self.head: Deferred[UpgradeHead] = Deferred()
        self.body: Deferred[bytes] = Deferred()
        self.response: UpgradeHead | None = None
        self.peer: _ClientSide | None = None  # the client side after a 101
        self.tap: RelayTap | None = None  # sees a copy of both directions (terminal recording)
        self.lost: Deferred[None] = Deferred()
        self.received = 0
        self._collected = b""
        self._remaining: int | None = None
        self._chunked: _ChunkedTransferDecoder | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.request_bytes)

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.active = True
            self.received += len(data)
            self.peer.transport.write(data)
            if self.tap is not None:
                self.tap.from_upstream(data)
            return
        if self.response is None:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._fail(ValueError("the upstream's response head is too long"))
                return
            head, rest = self.buffer[:end], self.buffer[end + 4 :]
            self.buffer = b""
            try:
                self.response = parse_head(head)
            except ValueError as e:
                return self._fail(e)
            if self.response.code == 101:
                # The peer is attached by the caller; what already came
                # after the head is the first of the upgraded stream.
                self.buffer = rest
                self.transport.pauseProducing()
                self.head.callback(self.response)
                return
            lengths = self.response.get(b"content-length")
            if b"chunked" in _tokens(self.response.get(b"transfer-encoding")):
                self._chunked = _ChunkedTransferDecoder(self._collect, self._body_done)
            elif lengths and lengths[0].isdigit():
                self._remaining = int(lengths[0])
            self.head.callback(self.response)
            data = rest
        self._body(data)

    def _body(self, data: bytes) -> None:
        if self.body.called or not data and self._remaining != 0:
            return
        if self._chunked is not None:
            try:
                self._chunked.dataReceived(data)
            except Exception:  # a malformed chunked body: pass on what came
                self._body_done(b"")
            return
        if self._remaining is not None:
            data = data[: self._remaining]
            self._remaining -= len(data)
        self._collect(data)
        if self._remaining == 0:
            self._body_done(b"")

    def _collect(self, data: bytes) -> None:
        if len(self._collected) < MAX_ERROR_BODY:
            self._collected += data[: MAX_ERROR_BODY - len(self._collected)]
        elif not self.body.called:
            self._body_done(b"")

    def _body_done(self, rest: bytes) -> None:
        if not self.body.called:
            self.body.callback(self._collected)
            self.transport.loseConnection()

    def _fail(self, error: Exception) -> None:
        if not self.head.called:
            self.head.errback(Failure(error))
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.head.called:
            self.head.errback(reason)
        elif not self.body.called and self.peer is None and self.response is not None and self.response.code != 101:
            self.body.callback(self._collected)
        try:
            if self.peer is not None:
                self.peer.other_lost()
        finally:
            # The exchange waits on this to write the action's outcome.
            if not self.lost.called:
                self.lost.callback(None)


class _ClientSide:
    """
    The client's connection after the 101: the front end's connection
    protocol hands it every byte it receives, and its loss.
    """

    def __init__(self, upstream: _UpstreamSide, transport: IStreamTransport, tap: RelayTap | None = None) -> None:
        self.upstream = upstream
        self.transport = transport
        self.tap = tap
        self.sent = 0
        self.lost: Deferred[None] = Deferred()
        # Traffic either way since the idle check last looked; why it closed.
        self.active = False
        self.idle_closed: str | None = None
        self._idle_check: IDelayedCall | None = None

    def watch_idle(self, clock: IReactorTime, timeout: float) -> None:
        """
        Close both sides once neither has sent anything for C{timeout}
        seconds (an exec left open, a port-forward nobody uses), as the
        kubelet's streaming idle timeout would; checked once per
        C{timeout}, so a busy relay pays a flag per read.
        """
        if timeout <= 0:
            return

        def check() -> None:
            if self.active:
                self.active = False
                self._idle_check = clock.callLater(timeout, check)
                return
            self._idle_check = None
            self.idle_closed = f"closed after {timeout:g} s without traffic (upgrade_idle_timeout)"
            # Nothing is in flight either way, and a polite TLS close would
            # wait on each transport's producer (the other side): abort.
            self.transport.abortConnection()
            self.upstream.transport.abortConnection()

        self._idle_check = clock.callLater(timeout, check)

    def dataReceived(self, data: bytes) -> None:
        self.active = True
        self.sent += len(data)
        self.upstream.transport.write(data)
        if self.tap is not None:
            self.tap.from_client(data)

    def other_lost(self) -> None:
        if self.idle_closed is not None or self.lost.called:
            return  # aborted both sides already, or the client's side is gone (the gateway ended it)
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._idle_check is not None and self._idle_check.active():
            self._idle_check.cancel()
        self._idle_check = None
        upstream = self.upstream.transport
        if upstream is not None:
            # The client transport is the upstream's producer: TLS closes
            # only once it is unregistered (else the upstream stays open and
            # the action's outcome is never written).
            upstream.unregisterProducer()
            upstream.loseConnection()
        if not self.lost.called:
            self.lost.callback(None)


def connect_upstream(
    reactor: Any, base: bytes, tls: Any, request_bytes: bytes
) -> tuple[Deferred[_UpstreamSide], _UpstreamSide]:
    """
    Connect to the upstream at C{base} (its scheme, host and port) with the
    connection's TLS policy C{tls} and send C{request_bytes}.  Fires the
    returned Deferred when connected (failing if the connection cannot be
    made); the response head arrives on the protocol's C{head}.
    """
    url = urlsplit(base.decode("ascii"))
    host = url.hostname or ""
    https = url.scheme == "https"
    port = url.port or (443 if https else 80)
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host.encode("idna"), port, timeout=10)
    if https:
        endpoint = wrapClientTLS(tls.creatorForNetloc(host.encode("ascii"), port), endpoint)
    side = _UpstreamSide(request_bytes)
    connecting: Deferred[_UpstreamSide] = connectProtocol(endpoint, side)
    return connecting, side


def host_and_prefix(base: bytes) -> tuple[bytes, bytes]:
    """The C{Host} header value and path prefix of an upstream base URL."""
    url = urlsplit(base.decode("ascii"))
    return url.netloc.rpartition("@")[2].encode("ascii"), url.path.rstrip("/").encode("ascii")


def take_over(
    connection: Any,
    upstream: _UpstreamSide,
    head: bytes,
    buffered: bytes,
    *,
    tap: RelayTap | None = None,
    clock: IReactorTime | None = None,
    idle_timeout: float = 0,
) -> _ClientSide:
    """
    Write the 101 C{head} to the client and turn its connection (the front
    end's connection protocol) into the relay: from now on what it receives
    goes to the upstream as it is.  C{buffered} is what the client sent
    after the request head.  Each transport is the other's producer
    (backpressure).  C{tap} (an L{hoopgw.protocols.http.channels.ExecTap})
    sees a copy of what is relayed each way, after it is forwarded.  With a
    C{clock} and C{idle_timeout}, a relay silent both ways that long is closed.
    """
    transport = connection.transport
    transport.unregisterProducer()
    transport.write(head)
    client = _ClientSide(upstream, transport, tap)
    connection.relay = client
    upstream.tap = tap
    upstream.peer = client
    transport.registerProducer(upstream.transport, True)
    upstream.transport.registerProducer(transport, True)
    if buffered:
        client.dataReceived(buffered)
    if upstream.buffer:
        early, upstream.buffer = upstream.buffer, b""
        upstream.dataReceived(early)
    transport.resumeProducing()
    upstream.transport.resumeProducing()
    if clock is not None:
        client.watch_idle(clock, idle_timeout)
    return client
