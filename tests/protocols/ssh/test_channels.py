"""
The SSH channel relay with no sockets: a real L{Session} over in-memory
services, and fake connection services on both legs that record what each
channel sends.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

from attrs import define, field
from twisted.conch.ssh.common import NS
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from pathlib import Path

from hoopgw.masking.engine import REDACTED
from hoopgw.masking.service import MaskingService
from hoopgw.model import Action, Connection, Decision, Effect, Identity, Source
from hoopgw.policy.loader import build_policy_set
from hoopgw.policy.rules import MaskRule, PolicySet
from hoopgw.protocols.ssh.channels import (
    HIGH_WATER,
    IdentityFilter,
    Reply,
    SessionChannel,
    TargetChannel,
    WindowGate,
    command_lines,
    env_allowed,
    legacy_scp,
)
from hoopgw.protocols.ssh.commands import parse_command, policy_lines
from hoopgw.protocols.ssh.settings import SSHSettings
from hoopgw.protocols.ssh.sftp import Init, Realpath, Version, encode
from hoopgw.protocols.ssh.sftp_filter import SFTPFilter, sftp_filter
from hoopgw.recording.lines import LineReconstructor
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
        self.session = self.successResultOf(sessions.open(ALICE, "web1", kind="ssh", source=Source("ssh", "127.0.0.1:4000")))
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


    def test_sftpSubsystemWithoutFilterRefused(self) -> None:
        """
        With no SFTP filter registered, the sftp subsystem is refused (it
        would be a blind tunnel) and audited as blocked.
        """
        self.assertFalse(self.request(b"subsystem", NS(b"sftp")))
        self.assertEqual(self.target_conn.sent, [])
        [end] = self.ends()
        self.assertEqual(end["outcome"]["status"], "blocked")

    def test_sftpServerExecFiltered(self) -> None:
        """
        An sftp-server binary run as a command gets the SFTP filter, as the
        subsystem does.
        """
        made: list = []
        sftp = IdentityFilter()
        self.host.filters["sftp"] = lambda session, handle: made.append(handle) or sftp
        reply = self.channel.requestReceived(b"exec", NS(b"/usr/lib/openssh/sftp-server -l INFO"))
        self.target_conn.replies[0].callback(b"")
        self.assertTrue(self.successResultOf(reply))
        self.assertEqual(len(made), 1)
        self.assertIs(self.channel.filter, sftp)
        self.assertEqual(made[0].action.input, "/usr/lib/openssh/sftp-server -l INFO")

    def test_sftpServerExecRefused(self) -> None:
        """
        Without an SFTP filter, or inside a compound command, an sftp-server
        exec is refused and never reaches the target.
        """
        self.assertFalse(self.request(b"exec", NS(b"/usr/lib/openssh/sftp-server")))
        self.host.filters["sftp"] = lambda session, handle: IdentityFilter()
        self.channel.program = None
        self.assertFalse(self.request(b"exec", NS(b"cd /; exec /usr/lib/sftp-server")))
        self.assertEqual(self.target_conn.sent, [])
        self.assertEqual([e["outcome"]["status"] for e in self.ends()], ["blocked", "blocked"])

    def start(self, request: bytes, data: bytes = b"") -> None:
        """Start a program the (static) policy allows; the target says yes."""
        reply = self.channel.requestReceived(request, data)
        self.target_conn.replies[-1].callback(b"")
        self.assertTrue(self.successResultOf(reply))

    def sftpFactory(self) -> list:
        """Register an SFTP filter that records what it is fed and passes it on."""
        made: list = []

        class Recording(IdentityFilter):
            def __init__(self, handle: Any) -> None:
                self.handle, self.fed = handle, []

            def client_data(self, data: bytes) -> bytes:
                self.fed.append(data)
                return data

        self.host.filters["sftp"] = lambda session, handle: made.append(Recording(handle)) or made[-1]
        return made

    def sent_data(self) -> bytes:
        return b"".join(entry[1] for entry in self.target_conn.sent if entry[0] == "data")

    def test_sftpDetectedOnExecWhateverItsName(self) -> None:
        """
        An exec whose client speaks SFTP (its first bytes are an INIT),
        whatever the program is called, gets the SFTP filter once an
        ssh.subsystem action is allowed, even when the INIT comes in pieces
        (issue 11, item 8).  Bytes sent before the fifth are not held (scp
        -f starts with one byte and waits), and not sent twice.
        """
        made = self.sftpFactory()
        self.start(b"exec", NS(b"/tmp/renamed-server"))
        init = encode(Init())
        self.channel.dataReceived(init[:2])
        self.channel.dataReceived(init[2:4])
        self.assertEqual(self.sent_data(), init[:4])
        self.assertEqual(made, [])
        self.channel.dataReceived(init[4:] + b"after")
        [sftp] = made
        self.assertIs(self.channel.filter, sftp)
        self.assertEqual(sftp.fed, [init + b"after"])
        self.assertEqual(self.sent_data(), init + b"after")
        [action] = [a for a in self.policy.seen if a.kind == "ssh.subsystem"]
        self.assertEqual((action.input, action.details["detected"], action.details["command"]),
                         ("sftp", "exec", "/tmp/renamed-server"))
        self.assertIs(sftp.handle.action, action)
        self.channel.closed()
        self.assertEqual(sorted(e["action"]["kind"] for e in self.ends()), ["ssh.exec", "ssh.subsystem"])

    def test_sftpInitByteByByte(self) -> None:
        """
        An INIT sent one byte at a time, through the real SFTP filter
        (which forwards a packet only once it is whole): the target gets
        each byte once, in order.
        """
        self.host.filters["sftp"] = sftp_filter
        self.start(b"exec", NS(b"/tmp/renamed-server"))
        init = encode(Init())
        for i in range(len(init)):
            self.channel.dataReceived(init[i:i + 1])
        self.channel.dataReceived(encode(Realpath(1, ".")))
        self.assertEqual(self.sent_data(), init + encode(Realpath(1, ".")))
        self.assertIsInstance(self.channel.filter, SFTPFilter)
        self.assertIn("ssh.sftp.realpath", [a.kind for a in self.policy.seen])

    def test_sftpDetectedOnShell(self) -> None:
        """A shell channel whose client starts with an INIT (ForceCommand internal-sftp) too."""
        made = self.sftpFactory()
        self.start(b"shell")
        self.channel.dataReceived(encode(Init()))
        self.assertEqual(len(made), 1)
        [action] = [a for a in self.policy.seen if a.kind == "ssh.subsystem"]
        self.assertEqual(action.details["detected"], "shell")

    def test_notSftpPassesThrough(self) -> None:
        """
        Other first bytes (text, scp -f's single NUL then a line) pass at
        once; once both directions have started otherwise, nothing more is
        looked at.
        """
        self.sftpFactory()
        self.start(b"exec", NS(b"cat"))
        self.channel.dataReceived(b"\x00")
        self.channel.dataReceived(b"C0644 3 x\n")
        self.assertEqual(self.sent_data(), b"\x00C0644 3 x\n")
        self.target.dataReceived(b"output")
        self.assertIsInstance(self.channel.filter, IdentityFilter)
        self.assertEqual(self.client_conn.sent, [("data", b"output")])
        self.assertEqual([a for a in self.policy.seen if a.kind == "ssh.subsystem"], [])

    def test_sftpOnExecDenied(self) -> None:
        """
        A policy that refuses the sftp subsystem refuses SFTP spoken on an
        exec channel: the INIT's remainder never reaches the target, the
        client reads the rule, and the channel closes.
        """
        self.sftpFactory()
        self.start(b"exec", NS(b"/tmp/renamed-server"))
        self.policy.decisions["ssh.subsystem"] = Decision(effect=Effect.deny, rule="no-sftp", message="no SFTP")
        self.channel.dataReceived(encode(Init()) + b"more")
        self.assertEqual(self.sent_data(), b"")
        self.assertIn(b"'no-sftp'", self.client_conn.sent[0][2])
        self.assertIn(("close",), self.target_conn.sent)
        self.channel.dataReceived(b"later")
        self.assertEqual(self.sent_data(), b"")

    def test_sftpOnExecWithoutFilterRefused(self) -> None:
        """Without an SFTP filter, SFTP spoken on an exec channel is refused and audited as blocked."""
        self.start(b"exec", NS(b"/tmp/renamed-server"))
        self.channel.dataReceived(encode(Init()))
        self.assertEqual(self.sent_data(), b"")
        [(start, end)] = [(r, e) for r in self.audit.of("action.start") for e in self.ends()
                          if r["action"]["kind"] == "ssh.subsystem" and e["action"]["id"] == r["action"]["id"]]
        self.assertEqual(end["outcome"]["status"], "blocked")

    def test_sftpAnswerWithoutInitClosed(self) -> None:
        """
        When the target's first output is an SFTP VERSION but the client's
        first bytes were no INIT (a wrapper read other bytes first), the
        VERSION never reaches the client and the channel is closed.
        """
        self.sftpFactory()
        self.start(b"exec", NS(b"head -c 6 >/dev/null; exec /tmp/renamed-server"))
        self.channel.dataReceived(b"hello\n" + encode(Init()))
        self.target.dataReceived(encode(Version()))
        self.assertNotIn(("data", encode(Version())), self.client_conn.sent)
        self.assertIn(("close",), self.target_conn.sent)
        blocked = [r for r in self.audit.of("action.start") if r["action"]["kind"] == "ssh.subsystem"]
        self.assertEqual(len(blocked), 1)
        self.target.dataReceived(b"more")
        self.assertNotIn(("data", b"more"), self.client_conn.sent)

    def test_unreadableCommandWithoutPolicyRulesRefused(self) -> None:
        """
        A command the gateway cannot read is refused when the policy does
        not show its rules (no ssh.commands deny rule could be matched).
        """
        self.assertFalse(self.request(b"exec", NS(b"a=rm; $a -rf /x")))
        self.channel.program = None
        self.assertFalse(self.request(b"exec", NS(b"rm $opts /x")))
        self.assertEqual(self.target_conn.sent, [])
        self.assertEqual([e["outcome"]["status"] for e in self.ends()], ["blocked", "blocked"])

    def test_legacyScpPathAttributes(self) -> None:
        """scp -t / -f carry ssh.sftp.paths and ssh.sftp.write, so SFTP path rules apply."""
        self.request(b"exec", NS(b"scp -t /etc/cron.d/x"))
        [action] = [a for a in self.policy.seen if a.kind == "ssh.exec"]
        self.assertEqual(action.attributes["ssh.sftp.paths"], ("/etc/cron.d/x", "/etc/cron.d/x/"))
        self.assertIs(action.attributes["ssh.sftp.write"], True)

    def test_decisionAfterClientClosed(self) -> None:
        """
        If the client closes while the exec's decision is pending, the exec
        is never sent and the action ends as failed.
        """
        self.policy.hold = True
        reply = self.channel.requestReceived(b"exec", NS(b"touch /tmp/x"))
        self.channel.closeReceived()
        self.channel.closed()
        self.policy.release()
        self.assertFalse(self.successResultOf(reply))
        self.assertNotIn(b"exec", self.target_conn.kinds())
        [end] = self.ends()
        self.assertEqual(end["outcome"]["status"], "failed")
        self.assertEqual(end["outcome"]["error"], "client disconnected before the decision")

    def test_shellLineObservedNotBlocked(self) -> None:
        """
        A typed shell line is recorded as observed (succeeded), never as
        blocked, even when policy would deny ssh.shell.line: the shell
        already has the keys.
        """
        self.policy.decisions["ssh.shell.line"] = Decision(effect=Effect.deny, rule="no-lines")
        self.channel.lines = LineReconstructor()
        self.channel.client_input(b"rm -rf /tmp/x\r")
        [start] = [r for r in self.audit.of("action.start") if r["action"]["kind"] == "ssh.shell.line"]
        self.assertEqual(start["action"]["input"], "rm -rf /tmp/x")
        self.assertTrue(start["action"]["details"]["observed"])
        self.assertNotIn("rule", start["decision"])
        [end] = self.ends()
        self.assertEqual(end["outcome"], {"status": "succeeded", "duration_us": end["outcome"]["duration_us"]})
        self.assertNotIn("ssh.shell.line", [a.kind for a in self.policy.seen])


class MaskedOutputTests(SynchronousTestCase):
    """A channel whose connection has C{mask_terminal}: the client's output passes the masks."""

    def setUp(self) -> None:
        connection = Connection(name="web1", kind="ssh", target="127.0.0.1:22", settings=SSHSettings("127.0.0.1", 22, "alice", mask_terminal=True))
        sessions = memory_session_service(connections=(connection,))
        sessions.masking = MaskingService(
            SimpleNamespace(policy_set=PolicySet(masks=[MaskRule("cards", detectors=("card",))])), b"k" * 32
        )
        session = self.successResultOf(sessions.open(ALICE, "web1", kind="ssh", source=Source("ssh", "127.0.0.1:4000")))
        self.client_conn = FakeConnection()
        self.target_conn = FakeConnection()
        self.target = TargetChannel(b"session", conn=self.target_conn, remoteWindow=1 << 20, remoteMaxPacket=1 << 15)
        self.channel = SessionChannel(
            Host(session=session, target=self.target_conn), self.target, conn=self.client_conn,
            remoteWindow=1 << 20, remoteMaxPacket=1 << 15,
        )
        self.channel.requestReceived(b"exec", NS(b"cat orders"))
        self.target_conn.replies[0].callback(b"")

    def output(self) -> bytes:
        return b"".join(entry[1] for entry in self.client_conn.sent if entry[0] == "data")

    def test_exitStatusBeforeTheEndOfTheOutput(self) -> None:
        """
        sshd sends the exit status when the program exits, and the end of
        its output after it: the status waits behind the held output instead
        of flushing it, which would cut a card number in two.
        """
        self.target.dataReceived(b"order 1 card 4111 1111 11")
        self.target.requestReceived(b"exit-status", struct.pack(">L", 0))
        self.target.dataReceived(b"11 1111 ok\n")
        self.target.eofReceived()
        self.target.closed()
        self.assertEqual(self.output(), f"order 1 card {REDACTED} ok\n".encode())
        self.assertEqual(self.client_conn.kinds(), ["data", b"exit-status", "eof", "close"])

    def test_exitStatusHeldUntilTheEnd(self) -> None:
        """What is held when the stream ends goes out before the status, EOF and close."""
        self.target.dataReceived(b"card 4111 1111 1111 1111")
        self.target.requestReceived(b"exit-status", struct.pack(">L", 0))
        self.assertEqual(self.client_conn.sent, [])
        self.target.eofReceived()
        self.assertEqual(self.output(), f"card {REDACTED}".encode())
        self.assertEqual(self.client_conn.kinds(), ["data", b"exit-status", "eof"])


class CommandLineTests(SynchronousTestCase):
    def test_normalised(self) -> None:
        """Extra spaces and quoting do not change the line policy sees."""
        self.assertEqual(command_lines("rm  -rf   /tmp/x")[0][0], "rm -rf /tmp/x")
        self.assertEqual(command_lines("'rm' -rf /x")[0][0], "rm -rf /x")

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

    def test_comments(self) -> None:
        """
        A comment is dropped, as the shell drops it: the issue's lines that
        made the old parser fail are read (issue 11, item 7).
        """
        self.assertIn("rm -rf X", command_lines("sh -c 'rm -rf X' #'")[0])
        self.assertIn("rm -fr X", command_lines("/bin/rm -fr X #'")[0])
        self.assertEqual(command_lines("echo a#b")[0], ("echo a#b",))

    def test_unreadable(self) -> None:
        """What the gateway cannot follow is unreadable, and says why."""
        for command in ["$a -rf /x", "/bin/r? -rf /x", "{rm,-rf,/x}", "echo 'oops", "sh -c \"$x\"",
                        "echo x | sh", "bash <<< \"$x\"", "xargs sh -c", "sudo $cmd"]:
            self.assertIsNotNone(parse_command(command).unreadable, command)
        for command in ["rm -rf /x", "echo $HOME", "ls *", "bash <<< 'ls'", "sh script.sh"]:
            self.assertIsNone(parse_command(command).unreadable, command)

    def test_unknownArguments(self) -> None:
        """Arguments that may expand to options, or to several words, are unknown."""
        self.assertEqual(parse_command("rm $o /x").unknown, ("rm",))
        self.assertEqual(parse_command('rm "$o" /x').unknown, ("rm",))
        self.assertEqual(parse_command("echo x | xargs rm -rf").unknown, ("rm",))
        self.assertEqual(parse_command("rm -r -- $f").unknown, ())
        self.assertEqual(parse_command('rm -f "/x/$f"').unknown, ())

    def test_policyLines(self) -> None:
        """
        With the policy's patterns (one group per rule): a command is
        spelled with a pattern's options when it has them all; an
        unreadable line gets a string one pattern of each rule matches;
        unknown arguments likewise for the rules naming the program; a rule
        some line already matches adds nothing.
        """
        rules = [("rm -rf *", "rm -fr *"), ("shutdown*",), ("rm /[a-c]x",)]
        self.assertEqual(policy_lines(parse_command("rm -v --force -R /x"), rules)[-1], "rm -rf -v /x")
        self.assertEqual(policy_lines(parse_command("rm -rf /x"), rules), parse_command("rm -rf /x").lines)
        self.assertEqual(policy_lines(parse_command("$a"), rules)[-3:], ("rm -rf *", "shutdown*", "rm /ax"))
        self.assertEqual(policy_lines(parse_command("rm $x"), rules)[-2:], ("rm -rf *", "rm /ax"))
        self.assertEqual(policy_lines(parse_command("ls $x"), rules), ("ls $x",))

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
        self.session = self.successResultOf(sessions.open(ALICE, "web1", kind="ssh", source=Source("ssh", "127.0.0.1:4000")))
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


DEFAULT_POLICY = Path(__file__).parents[3] / "policies" / "default.toml"

# Each runs rm -rf or powers the host off, written so that a naive reading
# of the line misses it.
EVASIONS = [
    "ls\nrm -rf /x",
    "ls\n/bin/rm -rf /x",
    "ls;rm -rf /x",
    "true && rm -rf /x",
    "false || rm -rf /x",
    "sleep 1 & rm -rf /x",
    "echo | rm -rf /x",
    "(rm -rf /x)",
    "{ rm -rf /x; }",
    "sh -c 'rm -rf /x'",
    'bash -c "rm -rf /x"',
    "dash -ec 'ls; rm -rf /x'",
    "bash --norc -c 'rm -rf /x'",
    "zsh -c $'rm -rf /x'",
    "echo `rm -rf /x`",
    "echo $(rm -rf /x)",
    'echo "$(rm -rf /x)"',
    "cat <(rm -rf /x)",
    "x=1 rm -rf /x",
    "A=1 B=2 rm -rf /x",
    "if true; then rm -rf /x; fi",
    "for i in 1; do rm -rf /x; done",
    "while false; do :; done; ! rm -rf /x",
    "rm -fr /x",
    "rm -Rf /x",
    "rm -rfv /x",
    "rm -r -f /x",
    "rm -f -r /x",
    "rm -v -f -r /x",
    "rm /x -rf",
    "rm --recursive --force /x",
    "rm --rec --forc /x",
    "rm -r --force /x",
    "env rm -rf /x",
    "env -i PATH=/bin rm -rf /x",
    "env -S 'rm -rf /x'",
    "sudo rm -rf /x",
    "sudo -u root rm -rf /x",
    "sudo -uroot -- rm -rf /x",
    "sudo -E -H -u root /usr/bin/rm -rf /x",
    "/bin/rm -rf /x",
    "command rm -rf /x",
    "exec rm -rf /x",
    "nohup rm -rf /x",
    "time rm -rf /x",
    "nice -n 10 rm -rf /x",
    "timeout 5 rm -rf /x",
    "echo /x | xargs rm -rf",
    "eval rm -rf /x",
    "eval 'rm -rf /x'",
    "su -c 'rm -rf /x' root",
    ">/dev/null rm -rf /x",
    "2>/dev/null rm -rf /x",
    "r\\m -rf /x",
    "'r'm -rf /x",
    "sudo sh -c 'cd / && rm -rf x'",
    "/sbin/shutdown -h now",
    "sudo /sbin/reboot",
    "ls; sudo -n poweroff",
    "systemctl reboot",
    "sudo systemctl --force poweroff",
]

PLAIN = ["ls -l", "uptime", "rm /tmp/x", "rm -f /tmp/x", "rm -r /tmp/dir", "grep -rf patterns /x",
         "echo 'rm -rf /x'", "cat /etc/hostname", "df -h; free -m", "systemctl status nginx",
         "rm -f /tmp/a-r", "sudo ls /root"]


class DefaultPolicyCommandTests(SynchronousTestCase):
    """The shipped policy's SSH guardrails against command lines written to slip past them."""

    def setUp(self) -> None:
        self.policy = build_policy_set([(str(DEFAULT_POLICY), DEFAULT_POLICY.read_bytes())])

    def decide(self, command: str) -> Decision:
        parsed = parse_command(command)
        attributes: dict = {"ssh.commands": parsed.lines}
        if parsed.simple is not None:
            attributes["ssh.simple_command"] = (parsed.simple,)
        return self.policy.evaluate(ALICE, "web1", Action("ssh.exec", command, attributes))

    def test_evasionsDenied(self) -> None:
        """Every evasion in the table is denied by no-rm-rf or no-power-control."""
        allowed = [c for c in EVASIONS if self.decide(c).effect is not Effect.deny]
        self.assertEqual(allowed, [])

    def test_plainCommandsAllowed(self) -> None:
        """Ordinary commands (including rm without -r and -f together) are still allowed."""
        denied = [(c, self.decide(c).rule) for c in PLAIN if self.decide(c).effect is not Effect.allow]
        self.assertEqual(denied, [])


class SimpleCommandTests(SynchronousTestCase):
    """C{ssh.simple_command}: set only for one plain command, the basis of an exec allow-list."""

    def test_simple(self) -> None:
        self.assertEqual(parse_command("uptime").simple, "uptime")
        self.assertEqual(parse_command("systemctl  status 'nginx'").simple, "systemctl status nginx")
        self.assertEqual(parse_command("/usr/bin/uptime").simple, "/usr/bin/uptime")

    def test_notSimple(self) -> None:
        for command in ["uptime; rm -rf /x", "uptime\nid", "uptime > /etc/motd", "uptime $(id)",
                        "uptime `id`", "echo $HOME", "X=1 uptime", "sudo uptime", "env uptime",
                        "sh -c uptime", "eval uptime", "! uptime", "uptime &", "echo 'oops"]:
            self.assertIsNone(parse_command(command).simple, command)

    def test_allowList(self) -> None:
        """
        An allow rule on ssh.simple_command, with no blanket allow, runs the
        listed commands and nothing chained to them.
        """
        text = b"""
[[rule]]
name = "sessions"
effect = "allow"
actions = ["session.open"]

[[rule]]
name = "web1-commands"
effect = "allow"
actions = ["ssh.exec"]
ssh.simple_command = ["uptime", "df -h", "systemctl status *"]
"""
        policy = build_policy_set([("allow.toml", text)])

        def effect(command: str) -> Effect:
            parsed = parse_command(command)
            attributes: dict = {"ssh.commands": parsed.lines}
            if parsed.simple is not None:
                attributes["ssh.simple_command"] = (parsed.simple,)
            return policy.evaluate(ALICE, "web1", Action("ssh.exec", command, attributes)).effect

        self.assertIs(effect("uptime"), Effect.allow)
        self.assertIs(effect("systemctl status nginx"), Effect.allow)
        for command in ["uptime; rm -rf /", "uptime\nrm -rf /", "df -h > /etc/passwd",
                        "systemctl status $(rm -rf /)", "/tmp/evil/uptime", "env uptime", "id"]:
            self.assertIs(effect(command), Effect.deny, command)


class LegacyScpTests(SynchronousTestCase):
    def test_upload(self) -> None:
        """scp -t writes to its path (and to files in it)."""
        self.assertEqual(legacy_scp(parse_command("scp -t /etc/x")), (("/etc/x", "/etc/x/"), True, None))
        self.assertEqual(legacy_scp(parse_command("scp -d -t -- /etc")), (("/etc", "/etc/"), True, None))

    def test_download(self) -> None:
        self.assertEqual(legacy_scp(parse_command("scp -f /etc//shadow")),
                         (("/etc//shadow", "/etc/shadow"), False, None))

    def test_refused(self) -> None:
        """Paths the target's shell would expand, or that climb out of the home directory."""
        for command in ["scp -f /et?/shadow", "scp -f '/etc/*'", "scp -f ~/../../etc/shadow",
                        "scp -t ../../etc", "scp -f $HOME/x", "scp -f /e{t,x}c/shadow"]:
            result = legacy_scp(parse_command(command))
            self.assertIsNotNone(result, command)
            self.assertIsNotNone(result[2], command)

    def test_recursive(self) -> None:
        """
        A recursive copy creates or reads what only its stream names: refused
        where a rule's path pattern may match below PATH (its fixed start below
        PATH, or above it with a wildcard), else decided on PATH and PATH/.
        """
        for command in ("scp -r -d -t -- /srv", "scp -rt /srv", "scp -r -f /srv"):
            for patterns in (["/srv/ro/*"], ["/srv/*/ro/*"], ["*/ro/*"], ["/s*"]):
                result = legacy_scp(parse_command(command), lambda: patterns)
                assert result is not None
                self.assertIsNotNone(result[2], (command, patterns))
            result = legacy_scp(parse_command(command), lambda: ["/etc/*", "/srvx/*"])
            assert result is not None
            self.assertEqual(result[:2], (("/srv", "/srv/"), "t" in command), command)
            self.assertIsNone(result[2], command)
            self.assertIsNone(legacy_scp(parse_command(command))[2], command)  # (no rule on paths)

    def test_notScp(self) -> None:
        self.assertIsNone(legacy_scp(parse_command("scp file host:/tmp")))
        self.assertIsNone(legacy_scp(parse_command("ls -t")))
