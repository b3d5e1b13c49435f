"""
Shared fixtures for the audit tests: a log on a L{Clock} whose fdatasync
runs synchronously when the clock says the group commit is due.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from hoopgw.audit.log import AuditLog

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ORIGIN = "hoopgw/test"


class RecordingMetrics:
    def __init__(self) -> None:
        self.written: list[float] = []
        self.checkpoints: list[float] = []

    def audit_written(self, seconds: float) -> None:
        self.written.append(seconds)

    def checkpoint_written(self, unix_time: float) -> None:
        self.checkpoints.append(unix_time)


class SyncRunner:
    """
    Runs the log's blocking calls (fdatasync, checkpoint files) in the
    calling thread and counts them; C{hold} makes them wait until
    C{release()}.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.hold = False
        self.held: list[tuple[Callable[[], object], Deferred]] = []

    def __call__(self, f: Callable[[], object]) -> Deferred:
        self.calls += 1
        if self.hold:
            d: Deferred = Deferred()
            self.held.append((f, d))
            return d
        return maybeDeferred(f)

    def release(self) -> None:
        held, self.held = self.held, []
        for f, d in held:
            maybeDeferred(f).chainDeferred(d)


def make_log(directory: Path, clock: Clock | None = None, **kwargs: Any) -> tuple[AuditLog, Clock, SyncRunner]:
    clock = clock if clock is not None else Clock()
    runner = kwargs.pop("sync_runner", None) or SyncRunner()
    log = AuditLog(
        directory,
        signing_key=kwargs.pop("signing_key", KEY),
        origin=kwargs.pop("origin", ORIGIN),
        reactor=clock,
        sync_runner=runner,
        **kwargs,
    )
    return log, clock, runner


def body(i: int) -> dict:
    return {
        "session": f"s{i % 3}",
        "connection": "appdb",
        "identity": {"iss": "https://idp.example.com", "sub": ["alice", "bob"][i % 2], "groups": ["dev"]},
        "action": {"kind": "sql.query", "input": f"SELECT {i}"},
    }
