"""Unit tests of the upgrade relay's pure parts: which upgrades pass, the request head, the response head."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from hoopgw.protocols.http.upgrade import (
    _UpstreamSide,
    check_upgrade,
    host_and_prefix,
    parse_head,
    request_head,
    take_over,
)


def _headers(**values: str) -> Headers:
    return Headers({k.replace("_", "-").encode(): [v.encode()] for k, v in values.items()})


class CheckUpgradeTests(SynchronousTestCase):
    def test_kubernetes_websocket_and_spdy(self):
        """WebSocket offering v5/v4.channel.k8s.io and SPDY/3.1 are carried."""
        ws = _headers(connection="Upgrade", upgrade="websocket", sec_websocket_key="k",
                      sec_websocket_protocol="v5.channel.k8s.io, v4.channel.k8s.io")
        self.assertEqual(check_upgrade(ws), (b"websocket", None))
        spdy = _headers(connection="Upgrade", upgrade="SPDY/3.1")
        self.assertEqual(check_upgrade(spdy), (b"SPDY/3.1", None))

    def test_port_forward_spdy_tunnel(self):
        """
        kubectl 1.31+ port-forward's WebSocket upgrade, SPDY/3.1 tunnelled in
        binary messages (subprotocol SPDY/3.1+portforward.k8s.io), is carried.
        """
        tunnel = _headers(connection="Upgrade", upgrade="websocket", sec_websocket_key="k",
                          sec_websocket_protocol="SPDY/3.1+portforward.k8s.io")
        self.assertEqual(check_upgrade(tunnel), (b"websocket", None))

    def test_others_refused(self):
        """Other protocols, other subprotocols, or no Connection: Upgrade are refused, saying what is carried."""
        for headers in (
            _headers(connection="Upgrade", upgrade="h2c"),
            _headers(connection="Upgrade", upgrade="websocket", sec_websocket_key="k", sec_websocket_protocol="chat"),
            # Other tunnels and the pre-1.31 WebSocket port-forward protocol.
            _headers(connection="Upgrade", upgrade="websocket", sec_websocket_key="k",
                     sec_websocket_protocol="SPDY/3.1+exec.k8s.io"),
            _headers(connection="Upgrade", upgrade="websocket", sec_websocket_key="k",
                     sec_websocket_protocol="portforward.k8s.io"),
            _headers(connection="Upgrade", upgrade="websocket", sec_websocket_key="k",
                     sec_websocket_protocol="SPDY/3.1"),
            _headers(connection="Upgrade", upgrade="SPDY/3.1+portforward.k8s.io"),
            _headers(connection="Upgrade", upgrade="websocket", sec_websocket_protocol="v5.channel.k8s.io"),
            _headers(upgrade="websocket", sec_websocket_key="k", sec_websocket_protocol="v5.channel.k8s.io"),
            _headers(connection="Upgrade", upgrade="websocket, SPDY/3.1"),
        ):
            upgrade, why = check_upgrade(headers)
            self.assertIsNone(upgrade)
            self.assertTrue(why)

    def test_refusal_names_what_is_carried(self):
        """A refused WebSocket subprotocol is answered with the list of those carried."""
        chat = _headers(connection="Upgrade", upgrade="websocket", sec_websocket_key="k", sec_websocket_protocol="chat")
        _, why = check_upgrade(chat)
        for name in ("v5.channel.k8s.io", "v4.channel.k8s.io", "SPDY/3.1+portforward.k8s.io"):
            self.assertIn(name, why)


class HeadTests(SynchronousTestCase):
    def test_request_head(self):
        """The relay frames the request itself: its Host, Upgrade and Connection replace the client's."""
        head = request_head(
            b"GET", b"/p/api/v1/x?command=id", b"k8s:6443", b"websocket",
            [(b"Host", b"gw"), (b"Connection", b"close"), (b"Sec-WebSocket-Key", b"k"), (b"Authorization", b"Bearer t")],
        )
        self.assertEqual(
            head,
            b"GET /p/api/v1/x?command=id HTTP/1.1\r\nHost: k8s:6443\r\nSec-WebSocket-Key: k\r\n"
            b"Authorization: Bearer t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )

    def test_host_and_prefix(self):
        self.assertEqual(host_and_prefix(b"https://k8s:6443/prefix/"), (b"k8s:6443", b"/prefix"))

    def test_parse_head(self):
        head = parse_head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept:  x ")
        self.assertEqual((head.code, head.phrase), (101, b"Switching Protocols"))
        self.assertEqual(head.get(b"sec-websocket-accept"), [b"x"])
        for bad in (b"SSH-2.0-x", b"HTTP/1.1 1O1 x", b"HTTP/1.1 101 x\r\n no-colon"):
            self.assertRaises(ValueError, parse_head, bad)


class _Connection:
    """The front end's client connection: its transport has the connection as producer."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.transport.registerProducer(self, True)
        self.relay = None

    def pauseProducing(self) -> None:
        pass

    resumeProducing = stopProducing = pauseProducing


class IdleTests(SynchronousTestCase):
    def relay(self, timeout: float):
        clock = Clock()
        upstream = _UpstreamSide(b"GET / HTTP/1.1\r\n\r\n")
        upstream.makeConnection(StringTransport())
        connection = _Connection()
        client = take_over(connection, upstream, b"HTTP/1.1 101 x\r\n\r\n", b"", clock=clock, idle_timeout=timeout)
        return clock, connection, upstream, client

    def test_traffic_keeps_it_open(self) -> None:
        """Bytes either way within each timeout keep the relay open."""
        clock, connection, upstream, client = self.relay(10)
        for _ in range(5):
            clock.advance(6)
            client.dataReceived(b"in")
            clock.advance(6)
            upstream.dataReceived(b"out")
        self.assertFalse(connection.transport.disconnecting)
        self.assertIsNone(client.idle_closed)

    def test_silence_closes_both_sides(self) -> None:
        """Silent both ways for the timeout (checked once per timeout): both
        connections are closed and the reason is kept for the action."""
        clock, connection, upstream, client = self.relay(10)
        client.dataReceived(b"in")
        clock.advance(10)
        self.assertFalse(connection.transport.disconnecting)
        clock.advance(10)
        self.assertTrue(connection.transport.disconnected)
        self.assertTrue(upstream.transport.disconnected)
        self.assertEqual(client.idle_closed, "closed after 10 s without traffic (upgrade_idle_timeout)")

    def test_zero_never_closes(self) -> None:
        """A timeout of 0 turns the check off."""
        clock, connection, upstream, client = self.relay(0)
        clock.advance(10**6)
        self.assertFalse(connection.transport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])
