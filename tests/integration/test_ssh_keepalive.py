"""
Keep-alives and the target login timeout, with the real ssh client and
sshd: a target that stops answering, or never logs the gateway in, ends the
session with a reason in C{session.end}.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory, Protocol

from tests.integration._process import free_port, spawn
from tests.integration._ssh import SSHGatewayCase


def _descendants(pid: int) -> list[int]:
    """The processes under C{pid} (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        found += children
        frontier += children
    return found


class _Silent(Protocol):
    """Accepts a TCP connection and never says a word (no SSH banner)."""


class KeepAliveTests(SSHGatewayCase):
    connection_options = 'keepalive_interval = "1s"\nkeepalive_count_max = 2\n'

    @inlineCallbacks
    def test_dead_target_ends_session(self):
        """
        If the target stops answering (its sshd frozen, as a crashed host
        or a cut network looks), the gateway gives up after the unanswered
        keep-alives, the client's ssh ends, and C{session.end} says why.
        """
        done = self.ssh("sleep 60")
        yield self.watch.wait("action.start")  # the command runs on the target
        frozen = _descendants(self.sshd.transport.pid)
        self.assertTrue(frozen, "no sshd session process found")
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)

        def thaw() -> None:
            for pid in frozen:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

        self.addCleanup(thaw)
        code, output = yield done
        self.assertNotEqual(code, 0, output)
        yield self.watch.wait("session.end")
        end = self.records("session.end")[-1]
        self.assertEqual(end["end"]["status"], "failed", end)
        self.assertIn("the target did not answer 2 keep-alives", end["end"]["error"])

    test_dead_target_ends_session.timeout = 30  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_dead_client_ends_session(self):
        """
        If the client stops answering (its ssh frozen, as a laptop gone to
        sleep looks), the gateway ends the session after the unanswered
        keep-alives: the command on the target is ended with it, and
        C{session.end} names the silent side.
        """
        client = spawn(self.ssh_argv("-n", "sleep 60"), marker=None, env=self.env())
        yield self.watch.wait("action.start")
        pid = client.transport.pid
        os.kill(pid, signal.SIGSTOP)

        def thaw() -> None:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

        self.addCleanup(thaw)
        yield self.watch.wait("session.end")
        end = self.records("session.end")[-1]
        self.assertEqual(end["end"]["status"], "failed", end)
        self.assertIn("the client did not answer 2 keep-alives", end["end"]["error"])
        thaw()
        code = yield client.ended
        self.assertNotEqual(code, 0)

    test_dead_client_ends_session.timeout = 30  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_live_session_kept(self):
        """Keep-alives answered on both legs leave an idle session alone."""
        code, output = yield self.ssh("sleep 4; echo still here")
        self.assertEqual(code, 0, output)
        self.assertTrue(output.endswith(b"still here\n"), output)
        yield self.watch.wait("session.end")
        self.assertEqual(self.records("session.end")[-1]["end"]["status"], "closed")


class LoginTimeoutTests(SSHGatewayCase):
    def setUp(self):
        factory = Factory.forProtocol(_Silent)
        self.silent_port = free_port()
        self.listening = reactor.listenTCP(self.silent_port, factory, interface="127.0.0.1")
        self.addCleanup(self.listening.stopListening)
        return super().setUp()

    def extra_config_text(self) -> str:
        key = self.base / "target_key"
        return f"""
[[connections]]
name = "mute"
kind = "ssh"
address = "127.0.0.1:{self.silent_port}"
user = "nobody"
key_file = "{key}"
host_key = "{(self.base / 'sshd_host_ed25519.pub').read_text().strip()}"
login_timeout = "1s"
"""

    @inlineCallbacks
    def test_silent_target_refused(self):
        """
        A target that accepts the TCP connection but never completes the
        login is given up after C{login_timeout}: the client reads why, and
        C{session.end} records it.
        """
        code, output = yield self.ssh("true", user="mute")
        self.assertNotEqual(code, 0)
        self.assertIn(b"did not complete the gateway's login within 1 s", output)
        yield self.watch.wait("session.end")
        end = self.records("session.end")[-1]
        self.assertEqual(end["end"]["status"], "failed")
        self.assertIn("did not complete the gateway's login within 1 s", end["end"]["error"])
