"""
Helpers for integration tests that run real programs: spawn a process, wait
for the line that says it is ready, collect its output, stop it.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Sequence

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated

import hoopgw

# The directory holding the hoopgw package: on PYTHONPATH for child
# processes, so `twistd` finds twisted/plugins/hoopgw_plugin.py beside it
# in a source checkout as well as in site-packages.
PACKAGE_ROOT = str(Path(hoopgw.__file__).resolve().parent.parent)

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
HOOPGW = [sys.executable, "-c", "import sys; from hoopgw.cli import main; sys.exit(main())"]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # The tests name their configuration; the caller's own never applies.
    env.pop("HOOPGW_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers that need a fixed one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WatchedProcess(protocol.ProcessProtocol):
    """
    Collects stdout and stderr; C{ready} fires when C{marker} appears in
    either, C{ended} when the process exits (with its exit code).
    """

    def __init__(self, marker: bytes | None) -> None:
        self.marker = marker
        self.output = b""
        self.stdout = b""
        self.stderr = b""
        self.ready: Deferred = Deferred()
        self.ended: Deferred = Deferred()
        self.exit_code: int | None = None
        self._waiting: list[tuple[bytes, int, Deferred]] = []
        if marker is None:
            self.ready.callback(None)

    def wait_for(self, marker: bytes) -> Deferred:
        """Fires when C{marker} appears in output produced from now on."""
        d: Deferred = Deferred()
        self._waiting.append((marker, len(self.output), d))
        return d

    def outReceived(self, data: bytes) -> None:
        self.stdout += data
        self._received(data)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data
        self._received(data)

    def _received(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and self.marker is not None and self.marker in self.output:
            self.ready.callback(None)
        for waiter in list(self._waiting):
            marker, start, d = waiter
            if marker in self.output[start:]:
                self._waiting.remove(waiter)
                d.callback(None)

    def processEnded(self, reason) -> None:
        if reason.check(ProcessDone):
            self.exit_code = 0
        elif reason.check(ProcessTerminated):
            # Like subprocess: -N for "killed by signal N".
            value = reason.value
            self.exit_code = value.exitCode if value.exitCode is not None else -(value.signal or 0)
        if not self.ready.called:
            self.ready.errback(
                RuntimeError(f"process exited ({self.exit_code}) before it was ready:\n{self.output.decode(errors='replace')}")
            )
        self.ended.callback(self.exit_code)

    def signal(self, name: str) -> None:
        if self.exit_code is None and self.transport is not None:
            self.transport.signalProcess(name)


def spawn(argv: Sequence[str], *, marker: bytes | None, cwd: str | None = None, env: dict | None = None) -> WatchedProcess:
    proc = WatchedProcess(marker)
    reactor.spawnProcess(proc, argv[0], list(argv), env=env or child_env(), path=cwd)
    return proc


def run(argv: Sequence[str], *, cwd: str | None = None, env: dict | None = None) -> Deferred:
    """Run to completion; fires with (exit code, output bytes)."""
    proc = spawn(argv, marker=None, cwd=cwd, env=env)
    proc.ended.addCallback(lambda code: (code, proc.output))
    return proc.ended


def run_split(argv: Sequence[str], *, cwd: str | None = None, env: dict | None = None) -> Deferred:
    """Run to completion; fires with (exit code, stdout bytes, stderr bytes)."""
    proc = spawn(argv, marker=None, cwd=cwd, env=env)
    proc.ended.addCallback(lambda code: (code, proc.stdout, proc.stderr))
    return proc.ended


class Tripwire(protocol.Factory):
    """
    A loopback TCP server standing for a target that must never be reached:
    C{peers} lists every connection made to it, C{received} what they sent.
    """

    def __init__(self) -> None:
        self.peers: list[str] = []
        self.received = b""

    def buildProtocol(self, addr) -> protocol.Protocol:
        self.peers.append(f"{addr.host}:{addr.port}")
        tripwire = self

        class Recorded(protocol.Protocol):
            def dataReceived(self, data: bytes) -> None:
                tripwire.received += data

        return Recorded()


def start_tripwire(testcase) -> tuple[int, Tripwire]:
    """Listen with a L{Tripwire} until C{testcase} ends; returns (port, tripwire)."""
    tripwire = Tripwire()
    port = reactor.listenTCP(0, tripwire, interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port, tripwire
