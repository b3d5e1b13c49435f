"""
Fail closed on a really full disk: the whole gateway (real audit log, real
policy, dev issuer, SQLite store) with its data directory on a small tmpfs.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase

from hoopgw.config import loads
from hoopgw.errors import AuditUnavailable
from hoopgw.gateway import Gateway
from hoopgw.model import Action, Outcome, Source, Status

SOURCE = Source("test", "127.0.0.1:40000")


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            raise AssertionError("CI runs as root; this test needs root to mount a tmpfs")
        raise SkipTest("mounting a tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"cannot mount a tmpfs in CI: {result.stderr}")
        raise SkipTest(f"cannot mount a tmpfs here: {result.stderr.strip()}")


class DiskFullTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_disk_full_refuses_actions(self):
        """
        If the audit log's disk fills up, the action that could not be logged
        is refused (never allowed), every later action and session is refused
        with a message naming the cause, /healthz turns failing, and the
        gateway's own log says why.
        """
        base = Path(self.mktemp()).resolve()
        data = base / "data"
        mount_tmpfs(data, "256k")
        self.addCleanup(subprocess.run, ["umount", "-l", str(data)], check=False)
        config = loads(
            """
[gateway]
data_dir = "data"
[listen]
postgres = false
ssh = false
http = false
api = false
[audit]
sync = "strict"
[[connections]]
name = "appdb"
kind = "postgres"
address = "127.0.0.1:5432"
database = "app"
user = "app"
tls = "disable"
""",
            source=None,
            base_dir=base,
        )
        logged: list[str] = []

        def observe(event):
            if event.get("log_level") is not None and event["log_level"].name == "critical":
                from twisted.logger import formatEvent

                logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

        gateway = Gateway(config, reactor=reactor)
        gateway.startService()
        token = gateway.identity.dev_issuer.issue("alice", ("dev",), 600)
        identity = yield gateway.sessions.authenticate_token(token, source=SOURCE)
        session = yield gateway.sessions.open(identity, "appdb", kind="postgres", source=SOURCE)

        refused = None
        allowed = 0
        for i in range(5000):
            try:
                handle = yield session.check(Action(kind="sql.query", input="SELECT '" + "x" * 1000 + "'"))
            except AuditUnavailable as e:
                refused = e
                break
            self.assertTrue(handle.allowed)
            allowed += 1
            yield handle.finish(Outcome(status=Status.succeeded, rows=1))
        self.assertIsNotNone(refused, "the disk never filled up")
        self.assertGreater(allowed, 10)
        self.assertIn("No space left on device", str(refused))
        self.assertIn("No space left on device", gateway.audit.failed)

        # Nothing more gets through: not another action, not a new session.
        failure = yield self.assertFailure(session.check(Action(kind="sql.query", input="SELECT 1")), AuditUnavailable)
        self.assertIn("No space left on device", str(failure))
        yield self.assertFailure(gateway.sessions.open(identity, "appdb", kind="postgres", source=SOURCE), AuditUnavailable)
        health = gateway.health()
        self.assertEqual(health["status"], "failing")
        self.assertIn("No space left on device", health["checks"]["audit"])
        self.assertIn(b"\nhoopgw_audit_failed 1.0\n", gateway.metrics.render())
        self.assertTrue(any("No space left on device" in line for line in logged), logged)
        yield gateway.stopService()
        yield deferLater(reactor, 0.05, lambda: None)
        # Writes that fail after the disk filled (session.end, the session
        # index) are logged as failures: expected here.
        self.flushLoggedErrors(AuditUnavailable, sqlite3.OperationalError)
