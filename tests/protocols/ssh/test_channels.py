"""
The SSH channel relay with no sockets: a real L{Session} over in-memory
services, and fake connection services on both legs that record what each
channel sends.
"""

from __future__ import annotations

import struct
from typing import Any

from attrs import define, field
from twisted.conch.ssh.common import NS
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.model import Connection, Decision, Effect, Identity, Source
from hoopgw.protocols.ssh.channels import (
    HIGH_WATER,
    Reply,
    SessionChannel,
    TargetChannel,
    WindowGate,
    command_lines,
    env_allowed,
)
from hoopgw.testing import MemoryAuditLog, StaticPolicy, memory_session_service

ALICE = Identity(issuer="test", subject="alice", groups=("dev",))
WEB1 = Connection(name="web1", kind="ssh", target="127.0.0.1:22")


class FakeConnection:
    """Records what channels send; request replies are Deferreds the test fires."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.replies: list[Deferred] = []

    def sendData(self, channel: Any, data: bytes) -> None:
        self.sent.append(("data", data))

    def sendExtendedData(self, channel: Any, kind: int, data: bytes) -> None:
        self.sent.append(("ext", kind, data))

    def sendEOF(self, channel: Any) -> None:
        self.sent.append(("eof",))

    def sendClose(self, channel: Any) -> None:
        if not channel.localClosed:
            channel.localClosed = True
            self.sent.append(("close",))

    def sendRequest(self, channel: Any, request: bytes, data: bytes, wantReply: bool = False) -> Deferred | None:
        self.sent.append(("request", request, data))
        if wantReply:
            d: Deferred = Deferred()
            self.replies.append(d)
            return d
        return None

    def kinds(self) -> list[Any]:
        return [entry[0] if entry[0] != "request" else entry[1] for entry in self.sent]


@define
class Host:
    session: Any
    target: Any
    filters: dict = field(factory=dict)
    closed: list = field(factory=list)

    def channel_closed(self, channel: Any) -> None:
        self.closed.append(channel)


class SessionChannelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.audit = MemoryAuditLog()
        self.policy = StaticPolicy()
        sessions = memory_session_service(connections=(WEB1,), audit=self.audit, policy=self.policy)
        self.session = self.successResultOf(sessions.open(ALICE, "web1", source=Source("ssh", "127.0.0.1:4000")))
        self.client_conn = FakeConnection()
        self.target_conn = FakeConnection()
        self.host = Host(session=self.session, target=self.target_conn)
        self.target = TargetChannel(b"session", conn=self.target_conn, remoteWindow=1 << 20, remoteMaxPacket=1 << 15)
        self.channel = SessionChannel(
            self.host, self.target, conn=self.client_conn, remoteWindow=1 << 20, remoteMaxPacket=1 << 15
        )

    def request(self, name: bytes, data: bytes, want_reply: bool = True) -> Any:
        self.channel.want_reply = want_reply
        result = self.channel.requestReceived(name, data)
        return self.successResultOf(result) if isinstance(result, Deferred) and result.called else result

    def ends(self) -> list[dict]:
        return self.audit.of("action.end")

    def test_execAllowedRelaysAndRecordsExitCode(self) -> None:
        """
        An allowed exec is sent to the target once policy allowed it; the
        client's stdin follows it, and the target's exit status is relayed
        and becomes the action's outcome code.
        """
        reply = self.channel.requestReceived(b"exec", NS(b"ls  -l"))
        self.channel.dataReceived(b"stdin")
        self.assertEqual(self.target_conn.sent[0], ("request", b"exec", NS(b"ls  -l")))
        self.target_conn.replies[0].callback(b"")
        self.assertTrue(self.successResultOf(reply))
        self.assertEqual(self.target_conn.sent[1], ("data", b"stdin"))
        [action] = [a for a in self.policy.seen if a.kind != "session.open"]
        self.assertEqual((action.kind, action.input, action.attributes["ssh.commands"]), ("ssh.exec", "ls  -l", ("ls -l",)))

        self.target.dataReceived(b"out")
        self.target.requestReceived(b"exit-status", struct.pack(">L", 2))
        self.target.eofReceived()
        self.target.closed()
        self.assertEqual(
            self.client_conn.sent,
            [("data", b"out"), ("request", b"exit-status", struct.pack(">L", 2)), ("eof",), ("close",)],
        )
        self.channel.closed()
        [end] = self.ends()
        self.assertEqual(end["outcome"]["code"], "2")
        self.assertEqual(end["outcome"]["status"], "failed")
        self.assertEqual((end["outcome"]["bytes_in"], end["outcome"]["bytes_out"]), (5, 3))
        self.assertEqual(self.host.closed, [self.channel])

    def test_execDeniedNeverReachesTarget(self) -> None:
        """
        A denied exec is never sent to the target, nor is the stdin after
        it; the client gets success, then a message naming the rule on
        stderr, exit status 1, EOF and close.
        """
        self.policy.decisions["ssh.exec"] = Decision(effect=Effect.deny, rule="no-rm-rf", message="no rm")
        reply = self.channel.requestReceived(b"exec", NS(b"rm -rf /"))
        self.channel.dataReceived(b"y\n")
        result = self.successResultOf(reply)
        self.assertIsInstance(result, Reply)
        self.assertTrue(result.ok)
        result.then()
        self.assertNotIn("exec", self.target_conn.kinds())
        self.assertNotIn("data", self.target_conn.kinds())
        self.assertEqual(self.target_conn.kinds(), ["close"])
        kind, stream, message = self.client_conn.sent[0]
        self.assertEqual((kind, stream), ("ext", 1))
        self.assertIn(b"'no-rm-rf'", message)
        self.assertEqual(
            self.client_conn.sent[1:], [("request", b"exit-status", struct.pack(">L", 1)), ("eof",), ("close",)]
        )
        [end] = self.ends()
        self.assertEqual(end["outcome"]["status"], "blocked")

    def test_heldDecisionHoldsStdin(self) -> None:
        """
        While the exec's decision is pending, nothing the client sends
        after it reaches the target.
        """
        self.policy.hold = True
        reply = self.channel.requestReceived(b"exec", NS(b"cat"))
        self.channel.dataReceived(b"early")
        self.channel.eofReceived()
        self.assertEqual(self.target_conn.sent, [])
        self.policy.release()
        self.target_conn.replies[0].callback(b"")
        self.assertTrue(self.successResultOf(reply))
        self.assertEqual(self.target_conn.kinds(), [b"exec", "data", "eof"])

    def test_outputBeforeExitStatus(self) -> None:
        """
        When the client's window is full, the exit status, EOF and close
        wait until the buffered output has been sent.
        """
        self.channel.remoteWindowLeft = 4
        self.target.dataReceived(b"0123456789")
        self.target.requestReceived(b"exit-status", struct.pack(">L", 0))
        self.target.eofReceived()
        self.target.closed()
        self.assertEqual(self.client_conn.sent, [("data", b"0123")])
        self.channel.addWindowBytes(100)
        self.assertEqual(
            self.client_conn.sent,
            [("data", b"0123"), ("data", b"456789"), ("request", b"exit-status", struct.pack(">L", 0)), ("eof",), ("close",)],
        )

    def test_env(self) -> None:
        """LANG, LC_* and TERM are relayed; any other variable is refused locally."""
        self.assertFalse(self.request(b"env", NS(b"LD_PRELOAD") + NS(b"/tmp/x.so")))
        self.assertEqual(self.target_conn.sent, [])
        result = self.channel.requestReceived(b"env", NS(b"LC_ALL") + NS(b"C"))
        self.target_conn.replies[0].callback(b"")
        self.assertTrue(self.successResultOf(result))
        self.assertEqual(self.target_conn.kinds(), [b"env"])

    def test_agentRefusedAndAudited(self) -> None:
        """Agent forwarding is refused and recorded as a blocked action."""
        self.assertFalse(self.request(b"auth-agent-req@openssh.com", b""))
        self.assertEqual(self.target_conn.sent, [])
        [end] = self.ends()
        self.assertEqual(end["outcome"]["status"], "blocked")

    def test_repliesInOrder(self) -> None:
        """
        A request the gateway answers itself waits its turn behind a pending
        one, as SSH replies go in request order.
        """
        first = self.channel.requestReceived(b"exec", NS(b"true"))
        second = self.channel.requestReceived(b"keepalive@openssh.com", b"")
        self.assertNoResult(second)
        self.target_conn.replies[0].callback(b"")
        self.assertTrue(self.successResultOf(first))
        self.assertFalse(self.successResultOf(second))


class CommandLineTests(SynchronousTestCase):
    def test_normalised(self) -> None:
        """Extra spaces and quoting do not change the line policy sees."""
        self.assertEqual(command_lines("rm  -rf   /tmp/x"), (("rm -rf /tmp/x",), None))
        self.assertEqual(command_lines("'rm' -rf /x"), (("rm -rf /x",), None))

    def test_chained(self) -> None:
        """Each command of a chained line is seen on its own too."""
        lines, error = command_lines("ls; rm -rf /x && echo done | cat")
        self.assertIsNone(error)
        self.assertEqual(lines[0], "ls; rm -rf /x && echo done | cat")
        self.assertIn("rm -rf /x", lines)
        self.assertIn("ls", lines)

    def test_unparsable(self) -> None:
        """An unbalanced quote: the raw command, and the parse error."""
        lines, error = command_lines("echo 'oops")
        self.assertEqual(lines, ("echo 'oops",))
        self.assertIsNotNone(error)

    def test_env_allowed(self) -> None:
        self.assertTrue(env_allowed("LANG"))
        self.assertTrue(env_allowed("LC_CTYPE"))
        self.assertTrue(env_allowed("TERM"))
        self.assertFalse(env_allowed("LD_PRELOAD"))
        self.assertFalse(env_allowed("PATH"))


class GrantingConnection(FakeConnection):
    """Records the window adjustments it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.adjusted: list[int] = []

    def adjustWindow(self, channel: Any, bytesToAdd: int) -> None:
        self.adjusted.append(bytesToAdd)
        channel.localWindowLeft += bytesToAdd


class GatedConnection(WindowGate, GrantingConnection):
    """With the gateway's window gate in front, as both legs' services have."""


def deliver(channel: Any, data: bytes) -> bool:
    """What Conch's ssh_CHANNEL_DATA does; False if the window is used up."""
    if len(data) > channel.localWindowLeft:
        return False
    channel.localWindowLeft -= len(data)
    if channel.localWindowLeft < channel.localWindowSize // 2:
        channel.conn.adjustWindow(channel, channel.localWindowSize - channel.localWindowLeft)
    channel.dataReceived(data)
    return True


class FlowControlTests(SynchronousTestCase):
    """The relay grants window to one leg only as fast as the other takes the data."""

    def setUp(self) -> None:
        sessions = memory_session_service(connections=(WEB1,))
        self.session = self.successResultOf(sessions.open(ALICE, "web1", source=Source("ssh", "127.0.0.1:4000")))
        self.client_conn = GatedConnection()
        self.target_conn = GatedConnection()
        self.host = Host(session=self.session, target=self.target_conn)
        # Neither peer has granted the gateway any window: both "read" nothing.
        self.target = TargetChannel(b"session", conn=self.target_conn, remoteWindow=0, remoteMaxPacket=1 << 15)
        self.channel = SessionChannel(self.host, self.target, conn=self.client_conn, remoteWindow=0, remoteMaxPacket=1 << 15)

    def test_slowClientStopsTarget(self) -> None:
        """
        A target writing to a client that reads nothing fills the gateway's
        buffer only to the high-water mark plus one window: then the target
        gets no more window.  When the client reads, the buffer drains and
        the target's window is granted again.
        """
        chunk = b"x" * (1 << 15)
        sent = 0
        while deliver(self.target, chunk):
            sent += len(chunk)
            self.assertLess(sent, 10 * HIGH_WATER, "the target was never stopped")
        self.assertTrue(self.target.window_held)
        self.assertLessEqual(self.channel.backlog(), HIGH_WATER + self.target.localWindowSize)
        granted = len(self.target_conn.adjusted)
        self.channel.addWindowBytes(1 << 30)  # the client reads everything
        self.assertEqual(self.channel.backlog(), 0)
        self.assertFalse(self.target.window_held)
        self.assertEqual(len(self.target_conn.adjusted), granted + 1)
        self.assertEqual(self.target.localWindowLeft, self.target.localWindowSize)

    def test_slowTargetStopsClient(self) -> None:
        """Client data for a target that reads nothing is bounded the same way."""
        self.channel.requestReceived(b"shell", b"")
        self.target_conn.replies[0].callback(b"")
        chunk = b"y" * (1 << 15)
        sent = 0
        while deliver(self.channel, chunk):
            sent += len(chunk)
            self.assertLess(sent, 10 * HIGH_WATER, "the client was never stopped")
        self.assertTrue(self.channel.window_held)
        self.assertLessEqual(self.target.backlog() + self.channel.queued, HIGH_WATER + self.channel.localWindowSize)
        self.target.addWindowBytes(1 << 30)
        self.assertFalse(self.channel.window_held)
        self.assertEqual(self.channel.localWindowLeft, self.channel.localWindowSize)

    def test_queuedBehindRequestBounded(self) -> None:
        """
        Client data queued behind a request that awaits the target's answer
        counts toward the mark: the client is stopped as well.
        """
        self.channel.requestReceived(b"exec", NS(b"cat"))  # the target never answers
        self.assertEqual(self.target_conn.sent, [("request", b"exec", NS(b"cat"))])
        chunk = b"z" * (1 << 15)
        while deliver(self.channel, chunk):
            pass
        self.assertTrue(self.channel.window_held)
        self.assertLessEqual(self.channel.queued + self.target.backlog(), HIGH_WATER + self.channel.localWindowSize)
