"""
Real programs for the end-to-end tests: C{twistd hoopgw} and the C{hoopgw}
admin command in child processes that find this package's plugin as the
test process does, output collected, and the line that says a process is
ready waited for (never a fixed sleep).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated

import hoopgw
import hoopgw_redis

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
HOOPGW = [sys.executable, "-c", "import sys; from hoopgw.cli import main; sys.exit(main())"]


def _root(package: Any) -> str:
    return str(Path(package.__file__).resolve().parent.parent)


def child_env(**extra: str) -> dict[str, str]:
    """
    The test's environment, with the folders holding hoopgw and this
    package first on PYTHONPATH: a source checkout (src/, beside
    src/twisted/plugins) as well as site-packages, so the child finds the
    plugin where this process found it.
    """
    env = dict(os.environ)
    env.pop("HOOPGW_CONFIG", None)  # the tests name their configuration
    roots = dict.fromkeys([_root(hoopgw_redis), _root(hoopgw), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONPATH"] = os.pathsep.join(roots)
    env.update(extra)
    return env


class Watched(protocol.ProcessProtocol):
    """Output (stdout and stderr together); C{wait_for(marker)} and C{ended} (the exit code)."""

    def __init__(self) -> None:
        self.output = b""
        self.stdout = b""
        self.ended: Deferred = Deferred()
        self.exit_code: int | None = None
        self._waiting: list[tuple[bytes, Deferred]] = []

    def wait_for(self, marker: bytes) -> Deferred:
        d: Deferred = Deferred()
        if marker in self.output:
            d.callback(None)
        else:
            self._waiting.append((marker, d))
        return d

    def outReceived(self, data: bytes) -> None:
        self.stdout += data
        self._received(data)

    def errReceived(self, data: bytes) -> None:
        self._received(data)

    def _received(self, data: bytes) -> None:
        self.output += data
        for waiter in list(self._waiting):
            if waiter[0] in self.output:
                self._waiting.remove(waiter)
                waiter[1].callback(None)

    def processEnded(self, reason: Any) -> None:
        if reason.check(ProcessDone):
            self.exit_code = 0
        elif reason.check(ProcessTerminated):
            value = reason.value
            self.exit_code = value.exitCode if value.exitCode is not None else -(value.signal or 0)
        waiting, self._waiting = self._waiting, []
        for marker, d in waiting:
            d.errback(RuntimeError(f"exited ({self.exit_code}) before {marker!r}:\n{self.output.decode(errors='replace')}"))
        self.ended.callback(self.exit_code)

    def signal(self, name: str) -> None:
        if self.exit_code is None and self.transport is not None:
            self.transport.signalProcess(name)


def spawn(argv: list[str], *, cwd: str, env: dict[str, str] | None = None) -> Watched:
    watched = Watched()
    reactor.spawnProcess(watched, argv[0], argv, env=env or child_env(), path=cwd)
    return watched


def run(argv: list[str], *, cwd: str, env: dict[str, str] | None = None) -> Deferred:
    """Run to completion; fires with (exit code, stdout, all output)."""
    watched = spawn(argv, cwd=cwd, env=env)
    return watched.ended.addCallback(lambda code: (code, watched.stdout, watched.output))
