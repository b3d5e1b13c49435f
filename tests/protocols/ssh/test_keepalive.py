"""
L{hoopgw.protocols.ssh.keepalive.KeepAlive} on a L{Clock}: when requests go
out, what counts as an answer, when the peer is taken for dead.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.ssh.keepalive import REQUEST, KeepAlive


class _Connection:
    def __init__(self) -> None:
        self.requests: list[Deferred] = []

    def sendGlobalRequest(self, name: bytes, data: bytes, wantReply: int = 0) -> Deferred:
        assert (name, data, wantReply) == (REQUEST, b"", 1)
        d: Deferred = Deferred()
        self.requests.append(d)
        return d


class KeepAliveTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.connection = _Connection()
        self.dead: list[str] = []
        self.keepalive = KeepAlive(
            self.connection, clock=self.clock, interval=15, count_max=3, peer="target", on_dead=self.dead.append
        )
        self.keepalive.start()

    def test_one_request_per_interval(self) -> None:
        """Nothing is sent at start; one request every interval after."""
        self.assertEqual(self.connection.requests, [])
        self.clock.advance(15)
        self.assertEqual(len(self.connection.requests), 1)
        self.clock.advance(14)
        self.assertEqual(len(self.connection.requests), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.connection.requests), 2)

    def test_any_answer_resets(self) -> None:
        """A reply, success or failure (OpenSSH refuses unknown requests),
        shows the peer is there: the count starts again."""
        for _ in range(2):
            self.clock.advance(15)
        self.connection.requests[-1].errback(Failure(Exception("request refused")))
        self.assertEqual(self.keepalive.unanswered, 0)
        for _ in range(3):
            self.clock.advance(15)
        self.connection.requests[-1].callback(b"")
        for _ in range(3):
            self.clock.advance(15)
        self.assertEqual(self.dead, [])

    def test_dead_after_count_max(self) -> None:
        """After count_max unanswered requests the peer is dead: on_dead is
        called once, with the reason, and no more requests go out."""
        for _ in range(3):
            self.clock.advance(15)
        self.assertEqual(self.dead, [])
        self.clock.advance(15)
        self.assertEqual(self.dead, ["the target did not answer 3 keep-alives (15 s apart); connection closed"])
        self.assertTrue(self.keepalive.dead)
        self.clock.advance(600)
        self.assertEqual(len(self.dead), 1)
        self.assertEqual(len(self.connection.requests), 3)

    def test_off_and_stop(self) -> None:
        """Interval 0 sends nothing; stop() ends the requests."""
        off = KeepAlive(self.connection, clock=self.clock, interval=0, count_max=3, peer="client", on_dead=self.dead.append)
        off.start()
        self.keepalive.stop()
        self.clock.advance(3600)
        self.assertEqual((self.connection.requests, self.dead), ([], []))
