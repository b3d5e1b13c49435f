"""
The client connection's loop (L{hoopgw.protocols.http.client}) with a real
gateway (audit log, policy, sessions) but memory transports: no socket, no
TLS, no curl.  Pipelined requests are served one at a time, in order, and
the connection stops reading while one waits.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from hoopgw.config import loads
from hoopgw.gateway import Gateway
from hoopgw.protocols.http.pool import UpstreamConnection
from hoopgw.protocols.http.proxy import HTTPFrontEnd
from hoopgw.protocols.http.state import BUSY, IDLE
from hoopgw.protocols.http.wire import DEFAULT_MAX_HEAD

BODY = b'{"kind":"Status"}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


class PipelineTests(TestCase):
    def setUp(self) -> None:
        base = Path(self.mktemp()).resolve()
        base.mkdir(parents=True)
        config = loads(
            f"""
[gateway]
name = "test"
data_dir = "{base / 'data'}"

[listen]
postgres = false
ssh = false
http = false
api = false

[[connections]]
name = "web"
kind = "http"
upstream = "http://127.0.0.1:9"
""",
            source=None,
            base_dir=base,
        )
        self.gateway = Gateway(config, reactor=reactor)
        self.gateway.audit.startService()
        self.addCleanup(self.gateway.audit.stopService)
        self.token = self.gateway.identity.dev_issuer.issue("alice", ttl_seconds=600)
        # The refusal counters' windows run on a clock of their own too.
        self.gateway.sessions.refusals.clock = self.gateway.sessions.failures.clock = Clock()
        # A clock of its own for the front end's timers (idle, response timeout).
        self.front = HTTPFrontEnd(sessions=self.gateway.sessions, reactor=Clock())
        pool = self.front.upstreams["web"].pool
        self.upstream = UpstreamConnection(pool)
        self.upstream.makeConnection(StringTransport())
        pool._all.add(self.upstream)
        pool._idle_connections.append(self.upstream)
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        self.client = self.front.http.buildProtocol(address)
        self.client.makeConnection(StringTransport(peerAddress=address))
        self.addCleanup(self.client.connectionLost)

    def request(self, path: bytes) -> bytes:
        return b"GET /web/%s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n\r\n" % (path, self.token.encode())

    @inlineCallbacks
    def sent_upstream(self, count: int):
        """Wait (the token's check and the session's opening may take a turn) until C{count} requests went upstream."""
        for _ in range(500):
            if self.upstream.transport.value().count(b" HTTP/1.1\r\n") >= count:
                return self.upstream.transport.value()
            yield deferLater(reactor, 0.01, lambda: None)
        self.fail(f"not {count} requests upstream: {self.upstream.transport.value()!r}")

    @inlineCallbacks
    def test_pipelined_requests_one_at_a_time_in_order(self):
        """
        Two requests sent at once: the second reaches the upstream only once
        the first one's response is whole, and the client gets the answers
        in the order it asked.
        """
        self.client.dataReceived(self.request(b"first") + self.request(b"second"))
        sent = yield self.sent_upstream(1)
        self.assertTrue(sent.startswith(b"GET /first HTTP/1.1\r\n"), sent)
        self.assertNotIn(b"/second", sent)
        self.assertIs(self.client.cycle, BUSY)
        self.upstream.dataReceived(RESPONSE)
        sent = yield self.sent_upstream(2)
        self.assertIn(b"GET /second HTTP/1.1\r\n", sent)
        self.upstream.dataReceived(RESPONSE)
        replies = self.client.transport.value()
        self.assertEqual(replies.count(b"HTTP/1.1 200 OK\r\n"), 2, replies)
        self.assertIs(self.client.cycle, IDLE)
        self.assertIsNone(self.client.exchange)

    @inlineCallbacks
    def test_refused_request_lets_the_next_one_in(self):
        """A request answered by the gateway itself (405) while the loop runs: the one behind it is served next."""
        trace = b"TRACE /web/x HTTP/1.1\r\nHost: gw\r\n\r\n"
        self.client.dataReceived(trace + self.request(b"after"))
        sent = yield self.sent_upstream(1)
        self.assertTrue(sent.startswith(b"GET /after HTTP/1.1\r\n"), sent)
        self.assertTrue(self.client.transport.value().startswith(b"HTTP/1.1 405 "))

    @inlineCallbacks
    def test_waiting_request_pauses_reading(self):
        """
        More pipelined bytes than a request head may hold, behind a request
        not yet answered: the client is not read until the answer is whole.
        (The padding is empty lines, which a server ignores before a request.)
        """
        padding = b"\r\n" * (DEFAULT_MAX_HEAD // 2 + 1)
        self.client.dataReceived(self.request(b"first") + padding + self.request(b"second"))
        yield self.sent_upstream(1)
        self.assertEqual(self.client.transport.producerState, "paused")
        self.upstream.dataReceived(RESPONSE)
        yield self.sent_upstream(2)
        self.assertEqual(self.client.transport.producerState, "producing")
