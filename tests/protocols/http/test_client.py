"""
The client connection's loop (L{hoopgw.protocols.http.client}) with a real
gateway (audit log, policy, sessions) but memory transports: no socket, no
TLS, no curl.  Pipelined requests are served one at a time, in order, and
the connection stops reading while one waits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks, succeed
from twisted.internet.task import Clock, deferLater
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from hoopgw.config import loads
from hoopgw.gateway import Gateway, shipped_policies
from hoopgw.protocols.http.pool import UpstreamConnection
from hoopgw.protocols.http.proxy import HTTPFrontEnd
from hoopgw.protocols.http.state import BUSY, CLOSED, IDLE
from hoopgw.protocols.http.wire import DEFAULT_MAX_HEAD

BODY = b'{"kind":"Status"}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


class _ClientCase(TestCase):
    # Added to the configuration and to the shipped policies (subclasses).
    audit = ""
    policy = ""

    def setUp(self) -> None:
        base = Path(self.mktemp()).resolve()
        base.mkdir(parents=True)
        policies = base / "policies"
        policies.mkdir()
        shutil.copy(shipped_policies() / "default.toml", policies / "default.toml")
        (policies / "extra.toml").write_text(self.policy)
        config = loads(
            f"""
[gateway]
name = "test"
data_dir = "{base / 'data'}"
policies = "{policies}"

[listen]
postgres = false
ssh = false
http = false
api = false
{self.audit}
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
        self.addCleanup(lambda: self.client.cycle is CLOSED or self.client.connectionLost())

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

    def records(self, event: str) -> list[dict]:
        lines = Path(self.gateway.audit._records_path).read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["event"] == event]


class PipelineTests(_ClientCase):
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

    @inlineCallbacks
    def test_resent_when_a_reused_connection_was_closed(self):
        """
        The upstream closed an idle keep-alive connection, and the next GET
        went on it: no byte of an answer came, so it goes again, once, on a
        new connection (not another idle one, which may be as stale), and
        the client gets its answer (not a 502).
        """
        pool = self.front.upstreams["web"].pool
        stale = UpstreamConnection(pool)  # idle too, and just as closed: never taken for the resend
        stale.makeConnection(StringTransport())
        pool._all.add(stale)
        pool._idle_connections.insert(0, stale)  # (taken after self.upstream)
        made: list[UpstreamConnection] = []

        class Endpoint:
            def connect(self, factory):
                connection = factory.buildProtocol(None)
                connection.makeConnection(StringTransport())
                made.append(connection)
                return succeed(connection)

        pool._endpoint = Endpoint()
        self.client.dataReceived(self.request(b"one"))
        yield self.sent_upstream(1)
        self.upstream.dataReceived(RESPONSE)
        self.client.dataReceived(self.request(b"two"))
        yield self.sent_upstream(2)
        self.upstream.connectionLost(Failure(ConnectionDone()))
        [new] = made
        self.assertEqual(stale.transport.value(), b"")
        self.assertTrue(new.transport.value().startswith(b"GET /two HTTP/1.1\r\n"), new.transport.value())
        new.dataReceived(RESPONSE)
        self.assertEqual(self.client.transport.value().count(b"HTTP/1.1 200 OK\r\n"), 2, self.client.transport.value())
        ends = self.records("action.end")
        self.assertEqual([e["outcome"]["status"] for e in ends], ["succeeded", "succeeded"])

    @inlineCallbacks
    def test_error_body_nested_deeper_than_json_parses(self):
        """
        The upstream's error body is "[" × 5,000: too deep for the JSON
        parser, which is no message to quote; the outcome says HTTP 404, and
        the request pipelined behind it is served on the same connection.
        """
        self.client.dataReceived(self.request(b"a") + self.request(b"b"))
        yield self.sent_upstream(1)
        body = b"[" * 5000
        self.upstream.dataReceived(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        yield self.sent_upstream(2)
        self.upstream.dataReceived(RESPONSE)
        self.assertFalse(self.client.transport.disconnecting)
        self.assertEqual(self.client.transport.value().count(b"HTTP/1.1 "), 2)
        self.assertEqual([e["outcome"].get("error") for e in self.records("action.end")], ["HTTP 404", None])


class ReviewWhileBodyBreaksTests(_ClientCase):
    """Strict sync: a request's check waits for its records while its body still arrives."""

    audit = '[audit]\nsync = "strict"\n'
    policy = """
[[rule]]
name = "review-posts"
effect = "review"
connections = ["web"]
http.methods = ["POST"]
review.approvers = ["group:sre"]
review.timeout = "60s"
"""

    @inlineCallbacks
    def test_answered_before_its_review_opens(self):
        """
        The body breaks (a malformed chunk: 400) while the review is being
        recorded, and the client leaves on the 400: the review is
        cancelled at once, with its records, and nothing is forwarded.
        """
        chunk = b"x" * (self.front.body_cap + 1)
        head = b"POST /web/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n"
        self.client.dataReceived(head % self.token.encode() + b"%x\r\n%s\r\n" % (len(chunk), chunk))
        # The check is under way once the session counts the action; the
        # session's own start record is synced first (strict), which takes
        # wall-clock time on a loaded machine, not a number of reactor turns.
        for _ in range(1000):
            sessions = list(self.client.sessions.values())
            if sessions and sessions[0].actions >= 1:
                break
            yield deferLater(reactor, 0.005, lambda: None)
        else:
            self.fail("the request's check never started")
        self.client.dataReceived(b"zz\r\n")
        self.assertTrue(self.client.transport.value().startswith(b"HTTP/1.1 400 "), self.client.transport.value())
        self.client.connectionLost()
        for _ in range(500):
            if self.records("session.end"):
                break
            yield deferLater(reactor, 0.01, lambda: None)
        else:
            self.fail("the session never ended")
        self.assertEqual(len(self.records("review.requested")), 1)
        self.assertEqual(len(self.records("review.cancelled")), 1)
        self.assertEqual([e["outcome"]["status"] for e in self.records("action.end")], ["blocked"])
        self.assertEqual(self.upstream.transport.value(), b"")
        self.assertEqual([r for r in self.gateway.sessions.reviews._live.values() if r.pending], [])
