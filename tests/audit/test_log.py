"""
Tests for L{hoopgw.audit.log.AuditLog}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from twisted.internet import reactor
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from hoopgw.audit.checkpoint import Verifier
from hoopgw.audit.log import (
    CHECKPOINTS_FILE,
    GENESIS_PREV,
    RECORDS_FILE,
    STATE_FILE,
    AuditLog,
    AuditStateError,
)
from hoopgw.audit.verify import read_checkpoints, verify
from hoopgw.config import AuditSettings
from hoopgw.errors import AuditUnavailable, ConfigError
from hoopgw.interfaces import IAuditLog

from .helpers import KEY, ORIGIN, RecordingMetrics, body, make_log

VERIFIER = Verifier.from_vkey(AuditLog(".", signing_key=KEY, origin=ORIGIN, reactor=None).vkey)


def lines(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / RECORDS_FILE).read_bytes().splitlines()]


def checkpoint_sizes(directory: Path) -> list[int]:
    data = (directory / CHECKPOINTS_FILE).read_bytes()
    return [cp.size for _, _, cp in read_checkpoints(data, VERIFIER, "checkpoints")]


class WriteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.metrics = RecordingMetrics()
        self.log, self.clock, self.runner = make_log(self.dir, metrics=self.metrics)
        self.log.startService()

    def test_interface(self) -> None:
        """
        L{AuditLog} provides L{IAuditLog}, and has a log id once started.
        """
        verifyObject(IAuditLog, self.log)
        self.assertRegex(self.log.log_id, "^[0-9a-f]{32}$")

    def test_record_written_before_return(self) -> None:
        """
        When C{append} returns, the record line is already in the records
        file, with v, log, seq from 0, the genesis prev, the time in UTC
        with microseconds, and the event and body; the next record's prev is
        the SHA-256 of this line.
        """
        self.clock.advance(1700000000.25)
        d = self.log.append("action.start", body(0))
        self.assertEqual(self.successResultOf(d), 0)
        [record] = lines(self.dir)
        self.assertEqual(record["seq"], 0)
        self.assertEqual(record["prev"], GENESIS_PREV)
        self.assertEqual(record["log"], self.log.log_id)
        self.assertEqual(record["time"], "2023-11-14T22:13:20.250000Z")
        self.assertEqual(record["event"], "action.start")
        self.assertEqual(record["action"], body(0)["action"])
        self.log.append("action.end", {"outcome": {"status": "succeeded"}})
        first_line = (self.dir / RECORDS_FILE).read_bytes().split(b"\n")[0]
        from hashlib import sha256

        self.assertEqual(lines(self.dir)[1]["prev"], sha256(first_line).hexdigest())
        self.assertEqual(len(self.metrics.written), 2)

    def test_group_commit(self) -> None:
        """
        Records appended together share one fdatasync; the next one waits
        until the sync window since the last sync has passed.
        """
        for i in range(3):
            self.log.append("e", body(i))
        self.assertEqual(self.runner.calls, 0)
        self.clock.advance(0)
        self.assertEqual(self.runner.calls, 1)
        self.log.append("e", body(3))
        self.log.append("e", body(4))
        self.clock.advance(0.005)
        self.assertEqual(self.runner.calls, 1)
        self.clock.advance(0.005)
        self.assertEqual(self.runner.calls, 2)
        self.clock.advance(1)
        self.assertEqual(self.runner.calls, 2)

    def test_reserved_keys(self) -> None:
        """
        If a body uses a key the log sets (seq, prev, ...), append raises
        ValueError naming it, writes nothing, and the log stays usable.
        """
        e = self.assertRaises(ValueError, self.log.append, "e", {"seq": 1, "x": 1})
        self.assertIn("seq", str(e))
        self.assertRaises(ValueError, self.log.append, "e", {"x": 1.5})
        self.assertFalse((self.dir / RECORDS_FILE).read_bytes())
        self.assertIsNone(self.log.failed)
        self.assertEqual(self.successResultOf(self.log.append("e", {})), 0)

    def test_not_started(self) -> None:
        """
        Before it is started (or after it stopped) append raises
        AuditUnavailable saying the log is not running.
        """
        log, _, _ = make_log(Path(self.mktemp()))
        e = self.assertRaises(AuditUnavailable, log.append, "e", {})
        self.assertIn("not running", str(e))


class StrictTests(SynchronousTestCase):
    def test_fires_after_sync(self) -> None:
        """
        In strict mode, append's Deferred fires with the seq only once the
        fdatasync covering the record has completed.
        """
        log, clock, runner = make_log(Path(self.mktemp()), sync="strict")
        log.startService()
        runner.hold = True
        d0 = log.append("e", body(0))
        d1 = log.append("e", body(1))
        self.assertNoResult(d0)
        clock.advance(0)
        self.assertEqual(runner.calls, 1)
        self.assertNoResult(d0)
        d2 = log.append("e", body(2))
        runner.release()
        self.assertEqual(self.successResultOf(d0), 0)
        self.assertEqual(self.successResultOf(d1), 1)
        self.assertNoResult(d2)
        clock.advance(0.01)
        runner.release()
        self.assertEqual(self.successResultOf(d2), 2)


class ThreadedStrictTests(TestCase):
    def test_real_thread(self) -> None:
        """
        With the real reactor and its thread pool, a strict append fires
        after a real fdatasync, and stopping writes a checkpoint.
        """
        directory = Path(self.mktemp())
        log = AuditLog(directory, signing_key=KEY, origin=ORIGIN, reactor=reactor, sync="strict", sync_window_ms=1)
        log.startService()
        d = log.append("e", body(0))
        d.addCallback(self.assertEqual, 0)
        d.addCallback(lambda _: log.stopService())
        # The first start's checkpoint (size 0), and the final one covering
        # the record and the closing record.
        d.addCallback(lambda _: self.assertEqual(checkpoint_sizes(directory), [0, 2]))
        return d


class CheckpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.metrics = RecordingMetrics()
        self.log, self.clock, self.runner = make_log(
            self.dir, checkpoint_every=5, checkpoint_interval_seconds=60, metrics=self.metrics
        )
        self.log.startService()

    def test_by_count(self) -> None:
        """
        Every C{checkpoint_every} records a checkpoint is written (after the
        records it covers are synced), signed over the log's Merkle root.
        """
        for i in range(11):
            self.log.append("e", body(i))
        self.clock.advance(0)
        # Size 0: every log is checkpointed at its first start.
        self.assertEqual(checkpoint_sizes(self.dir), [0, 5, 10])
        self.assertEqual(len(self.metrics.checkpoints), 3)
        data = (self.dir / CHECKPOINTS_FILE).read_bytes()
        [(_, _, first), _, _] = read_checkpoints(data, VERIFIER, "checkpoints")
        self.assertEqual(first.origin, f"{ORIGIN}/{self.log.log_id}")

    def test_by_time(self) -> None:
        """
        Every C{checkpoint_interval_seconds}, a checkpoint is written if
        there are records since the last one, and not otherwise.
        """
        self.log.append("e", body(0))
        self.log.append("e", body(1))
        self.clock.advance(60)
        self.assertEqual(checkpoint_sizes(self.dir), [0, 2])
        self.clock.advance(60)
        self.assertEqual(checkpoint_sizes(self.dir), [0, 2])
        self.log.append("e", body(2))
        self.clock.advance(60)
        self.assertEqual(checkpoint_sizes(self.dir), [0, 2, 3])

    def test_on_stop(self) -> None:
        """
        Stopping writes a closing record (C{log.closed}, C{"closes_log":
        true}) and a final checkpoint covering it, the log's signed end;
        then appends are refused; the directory verifies, closed.
        """
        for i in range(3):
            self.log.append("e", body(i))
        d = self.log.stopService()
        self.assertRaises(AuditUnavailable, self.log.append, "e", {})
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(checkpoint_sizes(self.dir), [0, 4])
        last = lines(self.dir)[-1]
        self.assertEqual((last["seq"], last["event"], last["closes_log"]), (3, "log.closed", True))
        self.assertRaises(AuditUnavailable, self.log.append, "e", {})
        report = verify(self.dir, self.log.vkey)
        self.assertTrue(report.ok, report.first_error)
        self.assertTrue(report.closed)
        self.assertIn("closed cleanly", report.summary())

    def test_close_with(self) -> None:
        """
        C{close_with} names the closing record (the gateway's
        C{gateway.stop}): written last, marked, covered by the final
        checkpoint.  A body using a reserved key is refused.
        """
        self.log.append("e", body(0))
        self.assertRaises(ValueError, self.log.close_with, "gateway.stop", {"closes_log": False})
        self.log.close_with("gateway.stop", {"gateway": "gw"})
        self.log.append("e", body(1))
        d = self.log.stopService()
        self.clock.advance(0)
        self.successResultOf(d)
        events = [(r["event"], r.get("closes_log")) for r in lines(self.dir)]
        self.assertEqual(events, [("e", None), ("e", None), ("gateway.stop", True)])
        self.assertEqual(checkpoint_sizes(self.dir), [0, 3])
        self.assertTrue(verify(self.dir, self.log.vkey).closed)

    def test_explicit(self) -> None:
        """
        C{checkpoint()} fires with the size it covers.
        """
        self.log.append("e", body(0))
        d = self.log.checkpoint()
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), 1)


class RestartTests(SynchronousTestCase):
    def test_resume_after_stop(self) -> None:
        """
        Restarting on the same directory resumes the same log: same log id,
        the next seq, prev chained to the last record, and a Merkle tree
        that checkpoints correctly (the whole log verifies).
        """
        directory = Path(self.mktemp())
        log, clock, _ = make_log(directory, checkpoint_every=5)
        log.startService()
        for i in range(7):
            log.append("e", body(i))
        d = log.stopService()
        clock.advance(0)
        self.successResultOf(d)
        log2, clock2, _ = make_log(directory, checkpoint_every=5)
        log2.startService()
        self.assertEqual(log2.log_id, log.log_id)
        # A clean stop: nothing is written at the start; seq 7 closed the log.
        self.assertEqual(self.successResultOf(log2.append("e", body(8))), 8)
        d = log2.stopService()
        clock2.advance(0)
        self.successResultOf(d)
        report = verify(directory, log.vkey)
        self.assertTrue(report.ok, report.first_error)
        self.assertEqual((report.records, report.last_checkpoint_size), (10, 10))
        self.assertEqual(checkpoint_sizes(directory), [0, 5, 8, 10])
        self.assertEqual(report.recovered, ())

    def test_resume_after_crash(self) -> None:
        """
        If the process died after records past the last checkpoint were
        written, a restart adopts them: a C{log.recovered} record names the
        range (seq 10..12 after checkpoint 10) and a checkpoint signs it at
        once; the verifier reports them as written but not signed at the
        time.  The restart reads only from the state file's resume point
        (the checkpoint before the last): damage before it is left for the
        verifier to report.
        """
        directory = Path(self.mktemp())
        log, clock, _ = make_log(directory, checkpoint_every=5)
        log.startService()
        for i in range(13):
            log.append("e", body(i))
        clock.advance(0)
        self.assertEqual(checkpoint_sizes(directory), [0, 5, 10])
        os.close(log._fd)  # a crash: no closing record, no final checkpoint
        os.close(log._cp_fd)
        records = directory / RECORDS_FILE
        data = bytearray(records.read_bytes())
        data[10] ^= 1  # inside record 0, before the state's resume point
        records.write_bytes(bytes(data))
        log2, clock2, _ = make_log(directory, checkpoint_every=5)
        log2.startService()
        recovered = json.loads(records.read_bytes().splitlines()[13])
        self.assertEqual(
            (recovered["event"], recovered["first_seq"], recovered["last_seq"], recovered["count"]),
            ("log.recovered", 10, 12, 3),
        )
        self.assertIn("written but not signed at the time", recovered["reason"])
        self.assertEqual(checkpoint_sizes(directory), [0, 5, 10, 14])
        self.assertEqual(self.successResultOf(log2.append("e", body(13))), 14)
        data[10] ^= 1
        records.write_bytes(bytes(data) + records.read_bytes()[len(data):])
        d = log2.stopService()
        clock2.advance(0)
        self.successResultOf(d)
        report = verify(directory, log.vkey)
        self.assertTrue(report.ok, report.first_error)
        self.assertEqual(report.records, 16)
        self.assertEqual(report.recovered, ((10, 3, 13),))
        self.assertIn("seq 10..12 (3 records) were written but not signed at the time", report.summary())

    def test_resume_after_crash_without_tail(self) -> None:
        """
        A run that died right after a checkpoint leaves nothing unsigned;
        the next start still records that the log was not closed
        (C{log.recovered}, count 0), so a later run's records can never
        pass for the earlier run's unsigned tail.
        """
        directory = Path(self.mktemp())
        log, clock, _ = make_log(directory, checkpoint_every=5)
        log.startService()
        for i in range(5):
            log.append("e", body(i))
        clock.advance(0)
        os.close(log._fd)
        os.close(log._cp_fd)
        log2, clock2, _ = make_log(directory)
        log2.startService()
        recovered = lines(directory)[5]
        self.assertEqual((recovered["event"], recovered["count"]), ("log.recovered", 0))
        self.assertNotIn("last_seq", recovered)
        self.assertEqual(checkpoint_sizes(directory), [0, 5, 6])
        d = log2.stopService()
        clock2.advance(0)
        report = verify(directory, log.vkey)
        self.assertTrue(report.ok, report.first_error)
        self.assertEqual(report.recovered, ())

    def test_second_process_refused(self) -> None:
        """
        A second log on a directory another process has open is refused
        (the records file is locked), naming the file.
        """
        directory = Path(self.mktemp())
        log, clock, _ = make_log(directory)
        log.startService()
        other, _, _ = make_log(directory)
        e = self.assertRaises(AuditStateError, other.startService)
        self.assertIn("locked by another process", str(e))
        d = log.stopService()
        clock.advance(0)
        self.successResultOf(d)

    def _stopped_log(self, n: int = 3) -> Path:
        directory = Path(self.mktemp())
        log, clock, _ = make_log(directory)
        log.startService()
        for i in range(n):
            log.append("e", body(i))
        d = log.stopService()
        clock.advance(0)
        self.successResultOf(d)
        return directory

    def test_torn_last_line(self) -> None:
        """
        If the records file ends with a partial line, start-up is refused
        with a message naming the file, the byte offset and the seq, and the
        file is left untouched.
        """
        directory = self._stopped_log()
        records = directory / RECORDS_FILE
        size = records.stat().st_size
        with open(records, "ab") as f:
            f.write(b'{"event":"e","lo')
        before = records.read_bytes()
        log, _, _ = make_log(directory)
        e = self.assertRaises(AuditStateError, log.startService)
        self.assertIn(str(records), str(e))
        self.assertIn(f"from byte {size}", str(e))
        self.assertIn("seq 4", str(e))
        self.assertIn("torn", str(e))
        self.assertEqual(records.read_bytes(), before)
        self.assertFalse(log.running)

    def test_invalid_last_line(self) -> None:
        """
        If the last line is complete but not a valid next record, start-up
        is refused saying what is wrong with it.
        """
        directory = self._stopped_log()
        with open(directory / RECORDS_FILE, "ab") as f:
            f.write(b'{"v":1}\n')
        log, _, _ = make_log(directory)
        e = self.assertRaises(AuditStateError, log.startService)
        self.assertIn("expected seq 4", str(e))
        self.assertIn('"log"', str(e))

    def test_deeply_nested_last_line(self) -> None:
        """
        A last line nested deeper than the parser recurses is refused as
        not a record, with the same message (not a RecursionError).
        """
        directory = self._stopped_log()
        with open(directory / RECORDS_FILE, "ab") as f:
            f.write(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n")
        log, _, _ = make_log(directory)
        e = self.assertRaises(AuditStateError, log.startService)
        self.assertIn("expected seq 4", str(e))
        self.assertIn("not a JSON record", str(e))

    def test_records_removed(self) -> None:
        """
        If the records file is shorter than the state file says, start-up is
        refused.
        """
        directory = self._stopped_log()
        (directory / RECORDS_FILE).write_bytes(b"")
        log, _, _ = make_log(directory)
        e = self.assertRaises(AuditStateError, log.startService)
        self.assertIn("records were removed", str(e))

    def test_bad_state(self) -> None:
        """
        If the state file is damaged, start-up is refused naming it.
        """
        directory = self._stopped_log()
        (directory / STATE_FILE).write_text("{")
        log, _, _ = make_log(directory)
        e = self.assertRaises(AuditStateError, log.startService)
        self.assertIn(STATE_FILE, str(e))


class FailClosedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def criticals(self) -> list[dict]:
        return [e for e in self.events if e.get("log_level") == LogLevel.critical]

    def test_disk_full(self) -> None:
        """
        If the records file is on a full device (a symlink to /dev/full),
        append raises AuditUnavailable saying so, C{failed} holds the reason,
        one critical line is logged, and every later append is refused with
        the same reason.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        os.symlink("/dev/full", directory / RECORDS_FILE)
        log, clock, _ = make_log(directory)
        log.startService()
        e = self.assertRaises(AuditUnavailable, log.append, "e", body(0))
        self.assertIn("No space left on device", str(e))
        self.assertIn("No space left on device", log.failed)
        e2 = self.assertRaises(AuditUnavailable, log.append, "e", body(1))
        self.assertIn(log.failed, str(e2))
        self.assertEqual(len(self.criticals()), 1)
        self.failureResultOf(log.checkpoint(), AuditUnavailable)
        d = log.stopService()
        clock.advance(0)
        self.successResultOf(d)

    def test_read_only_file(self) -> None:
        """
        If the records file descriptor becomes read-only (the file was
        reopened read-only under the log), the write fails and the log fails
        closed.
        """
        directory = Path(self.mktemp())
        log, clock, _ = make_log(directory)
        log.startService()
        self.successResultOf(log.append("e", body(0)))
        read_only = os.open(directory / RECORDS_FILE, os.O_RDONLY)
        os.dup2(read_only, log._fd)
        os.close(read_only)
        e = self.assertRaises(AuditUnavailable, log.append, "e", body(1))
        self.assertIn("Bad file descriptor", str(e))
        self.assertIn(str(directory / RECORDS_FILE), log.failed)
        self.assertEqual(len(self.criticals()), 1)

    def test_sync_failure_strict(self) -> None:
        """
        If fdatasync fails (here: the descriptor is a pipe, EINVAL), strict
        appends waiting for it fail with AuditUnavailable and the log fails
        closed.
        """
        directory = Path(self.mktemp())
        log, clock, _ = make_log(directory, sync="strict")
        log.startService()
        d = log.append("e", body(0))
        r, w = os.pipe()
        os.dup2(r, log._fd)
        os.close(r)
        os.close(w)
        clock.advance(0)
        f = self.failureResultOf(d, AuditUnavailable)
        self.assertIn("fdatasync", f.getErrorMessage())
        self.assertIn("fdatasync", log.failed)
        self.assertRaises(AuditUnavailable, log.append, "e", body(1))
        self.assertEqual(len(self.criticals()), 1)


class FromSettingsTests(SynchronousTestCase):
    def test_layout(self) -> None:
        """
        C{from_settings} puts the log in data_dir/audit, creates the signing
        key at data_dir/keys/audit_ed25519.pem (0600) and exports the vkey to
        data_dir/audit/audit.vkey, which verifies the log.
        """
        data_dir = Path(self.mktemp())
        from twisted.internet.task import Clock

        clock = Clock()
        log = AuditLog.from_settings(
            AuditSettings(sync="batched", checkpoint_every=2), data_dir=data_dir, gateway_name="gw1", reactor=clock
        )
        self.assertEqual(log.directory, data_dir / "audit")
        self.assertEqual(os.stat(data_dir / "keys" / "audit_ed25519.pem").st_mode & 0o777, 0o600)
        vkey = (data_dir / "audit" / "audit.vkey").read_text()
        self.assertTrue(vkey.startswith("hoopgw/gw1+"))
        self.assertEqual(vkey.strip(), log.vkey)
        self.assertRaises(
            ConfigError, AuditLog.from_settings, AuditSettings(), data_dir=data_dir, gateway_name="a b", reactor=clock
        )
