"""
The SSH front end's audit depth with the real clients: every SFTP operation
decided and audited (sftp, scp in SFTP and legacy mode), large transfers
intact, terminal sessions recorded, port forwarding allowed by policy.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest

from hoopgw.protocols.ssh.channels import HIGH_WATER, RELAY_WINDOW, RelayChannel
from hoopgw.recording.asciicast import read_asciicast
from tests.integration._process import child_env, free_port, run, spawn
from tests.integration._ssh import SSHGatewayCase

log = Logger()

SFTP_POLICY = """
[[rule]]
name = "everyone-everything"
effect = "allow"

[[rule]]
name = "locked-is-read-only"
effect = "deny"
ssh.sftp.write = true
ssh.sftp.paths = ["*/locked/*", "*/locked"]
message = "the locked folder is read-only"
"""


def sha256_file(path: os.PathLike[str] | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class SFTPAuditTests(SSHGatewayCase):
    policy = SFTP_POLICY

    def ops(self) -> list[tuple[str, list[str], str | None]]:
        """(kind, paths, outcome status) of every SFTP action, in order."""
        return [
            (start["action"]["kind"], start["action"]["attributes"]["ssh.sftp.paths"],
             end["outcome"]["status"] if end else None)
            for start, end in self.actions_like("ssh.sftp.")
        ]

    def actions_like(self, prefix: str) -> list[tuple[dict, dict | None]]:
        ends = {r["action"]["id"]: r for r in self.records("action.end")}
        return [
            (r, ends.get(r["action"]["id"]))
            for r in self.records("action.start")
            if r["action"]["kind"].startswith(prefix)
        ]

    @inlineCallbacks
    def test_sftp_operations_audited(self):
        """
        C{sftp -b} put, get, rename, mkdir and rm through the gateway work,
        and each is an C{ssh.sftp.<op>} action with its absolute path(s) and
        outcome; the CLOSE of the uploaded and downloaded files reports the
        bytes written and read.
        """
        remote = self.base / "remote"
        remote.mkdir()
        (self.base / "up.txt").write_bytes(b"x" * 1000)
        code, output = yield self.sftp(
            f"put {self.base / 'up.txt'} {remote / 'a.txt'}",
            f"get {remote / 'a.txt'} {self.base / 'down.txt'}",
            f"rename {remote / 'a.txt'} {remote / 'b.txt'}",
            f"mkdir {remote / 'dir'}",
            f"rm {remote / 'b.txt'}",
        )
        self.assertEqual(code, 0, output)
        self.assertEqual((self.base / "down.txt").read_bytes(), b"x" * 1000)
        self.assertEqual(sorted(p.name for p in remote.iterdir()), ["dir"])
        yield self.watch.wait("session.end")
        ops = self.ops()
        a, b = str(remote / "a.txt"), str(remote / "b.txt")
        self.assertIn(("ssh.sftp.rename", [a, b], "succeeded"), ops)
        self.assertIn(("ssh.sftp.mkdir", [str(remote / "dir")], "succeeded"), ops)
        self.assertIn(("ssh.sftp.remove", [b], "succeeded"), ops)
        opens = [(s, e) for s, e in self.actions("ssh.sftp.open")]
        self.assertEqual([s["action"]["attributes"]["ssh.sftp.paths"] for s, _ in opens], [[a], [a]])
        self.assertEqual([s["action"]["attributes"]["ssh.sftp.write"] for s, _ in opens], [True, False])
        closes = [e["outcome"] for _, e in self.actions("ssh.sftp.close")]
        self.assertIn({"status": "succeeded", "bytes_in": 1000, "bytes_out": 0, "duration_us": closes[0]["duration_us"]}, closes)
        self.assertTrue(any(c.get("bytes_out") == 1000 and c.get("bytes_in") == 0 for c in closes), closes)
        # Reads and writes are not actions of their own.
        self.assertFalse([k for k, _, _ in ops if k in ("ssh.sftp.read", "ssh.sftp.write")])

    @inlineCallbacks
    def test_sftp_write_denied(self):
        """
        A put into a folder a deny rule covers fails in the client with
        "Permission denied"; the file is never created on the target, and
        the trail holds the blocked C{ssh.sftp.open} with the rule's name.
        The session goes on: a later put elsewhere works.
        """
        locked = self.base / "locked"
        locked.mkdir()
        (self.base / "up.txt").write_text("secret plans")
        code, output = yield self.sftp(
            f"put {self.base / 'up.txt'} {locked / 'x.txt'}",
        )
        self.assertNotEqual(code, 0, output)
        self.assertIn(b"Permission denied", output)
        self.assertFalse((locked / "x.txt").exists())
        code, output = yield self.sftp(f"put {self.base / 'up.txt'} {self.base / 'free.txt'}")
        self.assertEqual(code, 0, output)
        self.assertEqual((self.base / "free.txt").read_text(), "secret plans")
        yield self.watch.wait("session.end", 2)
        blocked = [(s, e) for s, e in self.actions("ssh.sftp.open") if e["outcome"]["status"] == "blocked"]
        [(start, _)] = blocked
        self.assertEqual(start["action"]["attributes"]["ssh.sftp.paths"], [str(locked / "x.txt")])
        self.assertEqual(start["decision"]["rule"], "locked-is-read-only")
        self.assertEqual(start["decision"]["effect"], "deny")

    @inlineCallbacks
    def test_scp_sftp_mode(self):
        """
        C{scp} (OpenSSH 9: the SFTP protocol by default) copies both ways
        through the gateway, audited as SFTP operations.
        """
        (self.base / "up.bin").write_bytes(os.urandom(100_000))
        code, output = yield self.scp(str(self.base / "up.bin"), f"web1@127.0.0.1:{self.base / 'remote.bin'}")
        self.assertEqual(code, 0, output)
        code, output = yield self.scp(f"web1@127.0.0.1:{self.base / 'remote.bin'}", str(self.base / "back.bin"))
        self.assertEqual(code, 0, output)
        self.assertEqual((self.base / "back.bin").read_bytes(), (self.base / "up.bin").read_bytes())
        yield self.watch.wait("session.end", 2)
        opens = [(s["action"]["attributes"]["ssh.sftp.paths"], e["outcome"]["status"]) for s, e in self.actions("ssh.sftp.open")]
        self.assertEqual(opens, [([str(self.base / "remote.bin")], "succeeded")] * 2)
        self.assertEqual(self.actions("ssh.exec"), [])

    @inlineCallbacks
    def test_scp_legacy_mode(self):
        """
        C{scp -O} (the legacy protocol) runs C{scp -t} / C{scp -f} on the
        target: audited as C{ssh.exec} commands naming the remote path.
        """
        (self.base / "up.bin").write_bytes(os.urandom(10_000))
        code, output = yield self.scp("-O", str(self.base / "up.bin"), f"web1@127.0.0.1:{self.base / 'remote.bin'}")
        self.assertEqual(code, 0, output)
        code, output = yield self.scp("-O", f"web1@127.0.0.1:{self.base / 'remote.bin'}", str(self.base / "back.bin"))
        self.assertEqual(code, 0, output)
        self.assertEqual((self.base / "back.bin").read_bytes(), (self.base / "up.bin").read_bytes())
        yield self.watch.wait("session.end", 2)
        commands = [s["action"]["input"] for s, _ in self.actions("ssh.exec")]
        self.assertEqual(len(commands), 2, commands)
        self.assertTrue(commands[0].startswith("scp ") and " -t " in commands[0] and commands[0].endswith(str(self.base / "remote.bin")), commands)
        self.assertTrue(commands[1].startswith("scp ") and " -f " in commands[1] and commands[1].endswith(str(self.base / "remote.bin")), commands)
        self.assertEqual([e["outcome"]["status"] for _, e in self.actions("ssh.exec")], ["succeeded"] * 2)

    @inlineCallbacks
    def test_scp_legacy_mode_path_denied(self):
        """
        Legacy C{scp -O} into a folder an SFTP path rule makes read-only is
        refused too: C{scp -t PATH} carries C{ssh.sftp.paths} and
        C{ssh.sftp.write}, so the rule applies; the file is never created.
        A download from it (C{scp -f}, not a write) still works.
        """
        locked = self.base / "locked"
        locked.mkdir()
        (locked / "readme.txt").write_text("hello")
        (self.base / "up.txt").write_text("secret plans")
        code, output = yield self.scp("-O", str(self.base / "up.txt"), f"web1@127.0.0.1:{locked / 'x.txt'}")
        self.assertNotEqual(code, 0, output)
        self.assertIn(b"locked-is-read-only", output)
        self.assertFalse((locked / "x.txt").exists())
        code, output = yield self.scp("-O", f"web1@127.0.0.1:{locked / 'readme.txt'}", str(self.base / "back.txt"))
        self.assertEqual(code, 0, output)
        self.assertEqual((self.base / "back.txt").read_text(), "hello")
        yield self.watch.wait("session.end", 2)
        [(upload, end), (download, _)] = self.actions("ssh.exec")
        self.assertEqual(upload["decision"]["rule"], "locked-is-read-only")
        self.assertIs(upload["action"]["attributes"]["ssh.sftp.write"], True)
        self.assertIn(str(locked / "x.txt"), upload["action"]["attributes"]["ssh.sftp.paths"])
        self.assertEqual(end["outcome"]["status"], "blocked")
        self.assertIs(download["action"]["attributes"]["ssh.sftp.write"], False)

    @inlineCallbacks
    def test_sftp_50mb_roundtrip(self):
        """
        A 50 MB file uploaded and downloaded through the gateway with sftp
        comes back with the same SHA-256; the CLOSE actions count every byte.
        """
        size = 50 * 1024 * 1024
        source = self.base / "big.bin"
        with open(source, "wb") as f:
            f.writelines(os.urandom(1024 * 1024) for _ in range(50))
        started = time.monotonic()
        code, output = yield self.sftp(f"put {source} {self.base / 'remote.bin'}")
        upload = time.monotonic() - started
        self.assertEqual(code, 0, output)
        started = time.monotonic()
        code, output = yield self.sftp(f"get {self.base / 'remote.bin'} {self.base / 'back.bin'}")
        download = time.monotonic() - started
        self.assertEqual(code, 0, output)
        log.info("sftp 50 MB through the gateway: upload {up:.2f}s, download {down:.2f}s", up=upload, down=download)
        expected = sha256_file(source)
        self.assertEqual(sha256_file(self.base / "remote.bin"), expected)
        self.assertEqual(sha256_file(self.base / "back.bin"), expected)
        yield self.watch.wait("session.end", 2)
        closes = [e["outcome"] for _, e in self.actions("ssh.sftp.close")]
        self.assertIn(size, [c.get("bytes_in") for c in closes])
        self.assertIn(size, [c.get("bytes_out") for c in closes])

    test_sftp_50mb_roundtrip.timeout = 300  # type: ignore[attr-defined]


class SFTPRelativePathTests(SSHGatewayCase):
    """The sftp-server's starting directory is the test's own C{home}."""

    ops = SFTPAuditTests.ops
    actions_like = SFTPAuditTests.actions_like

    sftp_start = "home"
    policy = SFTP_POLICY + """
[[rule]]
name = "no-secrets-at-home"
effect = "deny"
ssh.sftp.write = true
ssh.sftp.paths = ["*/home/secret*"]
"""

    @inlineCallbacks
    def test_relative_paths(self):
        """
        C{put FILE relative-name} and C{mkdir relative} land in the starting
        directory the server reported for C{REALPATH "."}; the audit
        records and the policy see the absolute paths, so a rule on an
        absolute pattern refuses a relative write it covers.
        """
        home = self.base / "home"
        (self.base / "up.txt").write_bytes(b"y" * 100)
        code, output = yield self.sftp(
            f"put {self.base / 'up.txt'} rel.txt",
            "mkdir reldir",
            "rename rel.txt reldir/moved.txt",
        )
        self.assertEqual(code, 0, output)
        self.assertEqual((home / "reldir" / "moved.txt").read_bytes(), b"y" * 100)
        code, output = yield self.sftp(f"put {self.base / 'up.txt'} secret.txt")
        self.assertNotEqual(code, 0, output)
        self.assertIn(b"Permission denied", output)
        self.assertFalse((home / "secret.txt").exists())
        yield self.watch.wait("session.end", 2)
        ops = self.ops()
        self.assertIn(("ssh.sftp.mkdir", [str(home / "reldir")], "succeeded"), ops)
        self.assertIn(
            ("ssh.sftp.rename", [str(home / "rel.txt"), str(home / "reldir" / "moved.txt")], "succeeded"), ops
        )
        self.assertIn(("ssh.sftp.open", [str(home / "rel.txt")], "succeeded"), ops)
        self.assertIn(("ssh.sftp.open", [str(home / "secret.txt")], "blocked"), ops)


class RecordingTests(SSHGatewayCase):
    @inlineCallbacks
    def test_shell_recorded(self):
        """
        A scripted C{ssh -tt} shell is recorded as asciicast v2 in
        C{recordings/<session>-<channel>.cast}: stock C{asciinema cat} plays
        it back with the command's output, the size and TERM come from the
        client's pty request, keystrokes are not recorded (the connection
        does not enable it), each typed line is an C{ssh.shell.line} record,
        and C{session.end} holds the file's SHA-256.
        """
        proc = spawn(
            self.ssh_argv("-tt", ""), marker=None, env=self.env(TERM="xterm-256color", COLUMNS="100", LINES="30")
        )
        proc.transport.write(b"echo hello\nexit 0\n")
        code = yield proc.ended
        self.assertEqual(code, 0, proc.output)
        yield self.watch.wait("session.end")
        [end] = self.records("session.end")
        path = Path(end["end"]["recording"])
        self.assertEqual(path.parent, self.base / "data" / "recordings")
        self.assertTrue(path.name.startswith(end["session"] + "-") and path.name.endswith(".cast"), path)
        self.assertEqual(end["end"]["recording_sha256"], sha256_file(path))
        cast = read_asciicast(path)
        self.assertEqual(cast.header["env"]["TERM"], "xterm-256color")
        self.assertEqual([e for e in cast.events if e.kind == "i"], [])
        code, played = yield run([sys.executable, "-m", "asciinema", "cat", str(path)], env=child_env())
        self.assertEqual(code, 0, played)
        self.assertIn(b"hello", played)
        lines = [(s["action"]["input"], s["action"]["details"], e["outcome"]["status"])
                 for s, e in self.actions("ssh.shell.line")]
        self.assertEqual(
            lines,
            [("echo hello", {"best_effort": True, "certain": True, "observed": True}, "succeeded"),
             ("exit 0", {"best_effort": True, "certain": True, "observed": True}, "succeeded")],
        )

    @inlineCallbacks
    def test_exec_with_pty_recorded(self):
        """
        C{ssh -tt host cmd}: the command runs on a terminal and is recorded
        (the command in the header); no shell lines are made of its input.
        """
        code, output = yield self.ssh("-tt", "echo on-a-tty")
        self.assertEqual(code, 0, output)
        yield self.watch.wait("session.end")
        [end] = self.records("session.end")
        cast = read_asciicast(end["end"]["recording"])
        self.assertEqual(cast.header["command"], "echo on-a-tty")
        self.assertIn("on-a-tty", cast.output())
        self.assertEqual(self.actions("ssh.shell.line"), [])

    @inlineCallbacks
    def test_exec_without_pty_not_recorded(self):
        """A plain exec has no terminal to record: its outcome carries the byte counts."""
        code, output = yield self.ssh("echo plain")
        self.assertEqual(code, 0, output)
        yield self.watch.wait("session.end")
        [end] = self.records("session.end")
        self.assertNotIn("recording", end["end"])
        self.assertEqual(list((self.base / "data" / "recordings").iterdir()), [])


class ExecOutputRecordingTests(SSHGatewayCase):
    connection_options = "record_exec_output = true"

    @inlineCallbacks
    def test_exec_output_recorded_when_enabled(self):
        """
        With C{record_exec_output = true} on the connection, a command run
        without a terminal is recorded as asciicast (stdout and stderr as
        C{o} events), its SHA-256 in C{session.end}, playable by stock
        C{asciinema cat}.
        """
        code, output = yield self.ssh("echo out-line; echo err-line >&2")
        self.assertEqual(code, 0, output)
        yield self.watch.wait("session.end")
        [end] = self.records("session.end")
        path = Path(end["end"]["recording"])
        self.assertEqual(end["end"]["recording_sha256"], sha256_file(path))
        cast = read_asciicast(path)
        self.assertEqual(cast.header["command"], "echo out-line; echo err-line >&2")
        self.assertIn("out-line", cast.output())
        self.assertIn("err-line", cast.output())
        code, played = yield run([sys.executable, "-m", "asciinema", "cat", str(path)], env=child_env())
        self.assertEqual(code, 0, played)
        self.assertIn(b"out-line", played)


class InputRecordingTests(SSHGatewayCase):
    connection_options = "record_input = true"

    @inlineCallbacks
    def test_input_recorded_when_enabled(self):
        """
        With C{record_input = true} on the connection, keystrokes are
        recorded as C{i} events; a line typed at a password prompt (the
        terminal does not echo it) is not made an C{ssh.shell.line} record.
        """
        proc = spawn(self.ssh_argv("-tt", ""), marker=None, env=self.env(TERM="xterm"))
        # The prompt is spelled apart, so the echoed command does not show it.
        proc.transport.write(b"read -s -p 'Pass''word: ' pw; echo; echo got-${#pw}\n")
        yield proc.wait_for(b"Password: ")
        proc.transport.write(b"hunter2\n")
        yield proc.wait_for(b"got-7")
        proc.transport.write(b"exit 0\n")
        code = yield proc.ended
        self.assertEqual(code, 0, proc.output)
        yield self.watch.wait("session.end")
        [end] = self.records("session.end")
        cast = read_asciicast(end["end"]["recording"])
        self.assertIn("echo got-", cast.input())
        inputs = [s["action"]["input"] for s, _ in self.actions("ssh.shell.line")]
        self.assertEqual(inputs, ["read -s -p 'Pass''word: ' pw; echo; echo got-${#pw}", "exit 0"])
        trail = b"".join(p.read_bytes() for p in (self.base / "data" / "audit").rglob("*") if p.is_file())
        self.assertNotIn(b"hunter2", trail)

    @inlineCallbacks
    def test_password_typed_with_feedback_not_recorded(self):
        """
        A password prompt that shows a C{*} per key typed (sudo's
        C{pwfeedback}, the default of sudo-rs and of some distributions):
        the line typed there is not an C{ssh.shell.line} record either.
        """
        proc = spawn(self.ssh_argv("-tt", ""), marker=None, env=self.env(TERM="xterm"))
        proc.transport.write(
            # (echo off throughout, as sudo has it: read -s turns it back on between keys)
            b"stty -echo; printf '[sudo] pass''word for x: '; pw=; "
            b"while IFS= read -r -n1 c && [ -n \"$c\" ]; do pw+=$c; printf '*'; done; "
            b"stty echo; echo; echo got-${#pw}\n"
        )
        yield proc.wait_for(b"password for x: ")
        for key in b"hunter2":
            star = proc.wait_for(b"*")
            proc.transport.write(bytes([key]))
            yield star
        proc.transport.write(b"\n")
        yield proc.wait_for(b"got-7")
        proc.transport.write(b"exit 0\n")
        code = yield proc.ended
        self.assertEqual(code, 0, proc.output)
        yield self.watch.wait("session.end")
        inputs = [s["action"]["input"] for s, _ in self.actions("ssh.shell.line")]
        self.assertEqual(inputs[1:], ["exit 0"])
        trail = b"".join(p.read_bytes() for p in (self.base / "data" / "audit").rglob("*") if p.is_file())
        self.assertNotIn(b"hunter2", trail)


    @inlineCallbacks
    def test_other_secret_prompts_not_recorded(self):
        """
        OpenSSL's C{Enter pass phrase for key.pem:} and Vault's C{Token (will
        be hidden):}: a line typed at either is not an C{ssh.shell.line}
        record.
        """
        proc = spawn(self.ssh_argv("-tt", ""), marker=None, env=self.env(TERM="xterm"))
        # Each prompt is spelled apart, so the echoed command does not show it.
        for prompt, answer in ((b"'Enter pass'' phrase for key.pem:'", b"hunter2-openssl"),
                               (b"'Tok''en (will be hidden): '", b"hunter2-vault")):
            proc.transport.write(b"read -s -p " + prompt + b" pw; echo; echo got-${#pw}\n")
            yield proc.wait_for(prompt.replace(b"'", b"").rstrip(b" "))
            proc.transport.write(answer + b"\n")
            yield proc.wait_for(b"got-%d" % len(answer))
        proc.transport.write(b"exit 0\n")
        code = yield proc.ended
        self.assertEqual(code, 0, proc.output)
        yield self.watch.wait("session.end")
        trail = b"".join(p.read_bytes() for p in (self.base / "data" / "audit").rglob("*") if p.is_file())
        self.assertNotIn(b"hunter2", trail)


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class _Collect(Protocol):
    """Sends C{payload}, then collects until as many bytes came back."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = bytearray()
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(self.payload):
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(bytes(self.received))


class ForwardingTests(SSHGatewayCase):
    """A policy of its own: forwarding allowed to one loopback echo server only."""

    def setUp(self):
        self.echo = reactor.listenTCP(0, Factory.forProtocol(_Echo), interface="127.0.0.1")
        self.addCleanup(self.echo.stopListening)
        self.echo_port = self.echo.getHost().port
        return super().setUp()

    def policy_text(self) -> str:
        return f"""
[[rule]]
name = "everyone-sessions"
effect = "allow"
actions = ["session.open", "ssh.exec", "ssh.shell", "ssh.subsystem", "ssh.sftp.*"]

[[rule]]
name = "forward-to-echo"
effect = "allow"
actions = ["ssh.forward"]
ssh.forward.destinations = ["127.0.0.1:{self.echo_port}"]
"""

    @inlineCallbacks
    def test_local_forward_allowed(self):
        """
        C{ssh -L} to a destination the policy allows relays bytes both ways
        through the gateway and the target; the C{ssh.forward} action names
        the destination and the rule, and its outcome counts the bytes.
        """
        local = free_port()
        proc = spawn(
            self.ssh_argv("-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{local}:127.0.0.1:{self.echo_port}",
                          "echo ready; exec cat"),
            marker=b"ready",
            env=self.env(),
        )
        yield proc.ready  # forwards are listening before the command runs
        payload = os.urandom(1 << 20)
        collector = _Collect(payload)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", local), collector)
        echoed = yield collector.done
        self.assertEqual(echoed, payload)
        proc.transport.closeStdin()
        code = yield proc.ended
        self.assertEqual(code, 0, proc.output)
        yield self.watch.wait("session.end")
        [(start, end)] = self.actions("ssh.forward")
        self.assertEqual(start["action"]["input"], f"127.0.0.1:{self.echo_port}")
        self.assertEqual(start["decision"]["rule"], "forward-to-echo")
        self.assertEqual(end["outcome"]["status"], "succeeded")
        self.assertEqual((end["outcome"]["bytes_in"], end["outcome"]["bytes_out"]), (len(payload), len(payload)))

    @inlineCallbacks
    def test_forward_elsewhere_refused(self):
        """A destination outside the allowlist is refused and audited as blocked."""
        code, output = yield self.ssh("-W", f"127.0.0.1:{self.sshd_port}", "")
        self.assertNotEqual(code, 0)
        self.assertIn(b"administratively prohibited", output)
        yield self.watch.wait("session.end")
        [(start, end)] = self.actions("ssh.forward")
        self.assertEqual(start["action"]["input"], f"127.0.0.1:{self.sshd_port}")
        self.assertEqual(end["outcome"]["status"], "blocked")


# Reads its stdin 64 KiB at a time, hashing each chunk many times over: a
# consumer slower than the gateway, with no sleeping.
SLOW_READER = """
import hashlib, sys
digest, total = hashlib.sha256(), 0
while chunk := sys.stdin.buffer.read(65536):
    for _ in range(60):
        digest.update(chunk)
    total += len(chunk)
print(total)
"""


def vm_rss() -> int:
    """This process's resident set size in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class BackpressureTests(SSHGatewayCase):
    @inlineCallbacks
    def test_slow_reader_bounded(self):
        """
        A 50 MB download to a client that reads slowly arrives whole, while
        what the gateway holds for the client stays below the high-water
        mark plus one window, and its memory does not grow with the
        transfer (without flow control it would buffer most of the 50 MB).
        """
        if not os.path.exists("/proc/self/status"):
            raise SkipTest("VmRSS is read from /proc")
        size = 50 * 1024 * 1024
        most = [0]
        write = RelayChannel.write

        def watched(channel: RelayChannel, data: bytes) -> None:
            write(channel, data)
            most[0] = max(most[0], channel.backlog())

        self.patch(RelayChannel, "write", watched)
        rss = [vm_rss()]
        peak = [rss[0]]
        sampler = LoopingCall(lambda: peak.__setitem__(0, max(peak[0], vm_rss())))
        sampler.start(0.01)
        self.addCleanup(lambda: sampler.running and sampler.stop())
        command = " ".join(shlex.quote(a) for a in self.ssh_argv("-n", f"head -c {size} /dev/zero"))
        started = time.monotonic()
        code, output = yield run(
            ["/bin/sh", "-c", f"{command} | {shlex.quote(sys.executable)} -c {shlex.quote(SLOW_READER)}"],
            env=self.env(),
        )
        elapsed = time.monotonic() - started
        sampler.stop()
        self.assertEqual(code, 0, output)
        self.assertEqual(output.split()[-1], str(size).encode())
        growth = peak[0] - rss[0]
        log.info(
            "50 MB to a slow reader in {s:.1f}s: gateway backlog at most {b} bytes, RSS growth {g} bytes",
            s=elapsed, b=most[0], g=growth,
        )
        # The mark, plus what the target may still send on the window it had
        # when the gateway stopped granting more.  Without flow control this
        # run buffers the whole transfer the client has not read yet.
        self.assertLessEqual(most[0], HIGH_WATER + 2 * RELAY_WINDOW)
        self.assertLess(growth, 10 * 1024 * 1024)

    test_slow_reader_bounded.timeout = 300  # type: ignore[attr-defined]
