"""
Tests for witnesses (L{hoopgw.audit.witness}): the directory witness, the
HTTP (C2SP tlog-witness) witness against a real witness server on
127.0.0.1, C{verify(..., witnesses=...)}, the C{[audit] witness}
configuration, and the C{hoopgw audit} commands that use them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import stat
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from hoopgw.audit.checkpoint import Verifier
from hoopgw.audit.log import (
    CHECKPOINTS_FILE,
    RECORDS_FILE,
    RESOLUTION_FILE,
    STATE_FILE,
    AuditLog,
    AuditStateError,
)
from hoopgw.audit.merkle import leaf_hash
from hoopgw.audit.verify import verify
from hoopgw.audit.witness import (
    DirectoryWitness,
    HTTPWitness,
    WitnessCheckpoint,
    directory_copy_path,
    read_directory_copy,
)
from hoopgw.cli import main
from hoopgw.config import AuditSettings, loads
from hoopgw.errors import ConfigError
from tests.adversarial.audit_corpus import forged

from .helpers import KEY, ORIGIN, body, make_log
from .witness_server import WITNESS_VKEY, WitnessServer

VKEY = AuditLog(".", signing_key=KEY, origin=ORIGIN, reactor=None).vkey
VERIFIER = Verifier.from_vkey(VKEY)


def run_log(directory: Path, count: int, *, start: int = 0, **kwargs) -> AuditLog:
    """Start a log, append C{count} records, stop it cleanly (synchronous)."""
    log, clock, _ = make_log(directory, checkpoint_every=5, **kwargs)
    log.startService()
    for i in range(start, start + count):
        log.append("e", body(i))
    d = log.stopService()
    clock.advance(1)
    assert d.called
    return log


def records(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / RECORDS_FILE).read_bytes().splitlines()]


class DirectoryWitnessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.witness_dir = Path(self.mktemp())
        self.witness_dir.mkdir()

    def test_each_checkpoint_replaces_the_copy(self) -> None:
        """
        Every checkpoint the log writes (first start, by count, at stop)
        ends up in C{<dir>/<log id>.checkpoint}, mode 0600, the newest
        replacing the older; it verifies with the log's key.
        """
        witness = DirectoryWitness(self.witness_dir)
        log = run_log(self.dir, 7, witnesses=[witness])
        self.assertEqual((witness.sent, witness.failures, witness.acknowledged), (3, 0, 8))
        path = directory_copy_path(self.witness_dir, log.log_id)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual(os.listdir(self.witness_dir), [path.name])
        copy = read_directory_copy(self.witness_dir, log.log_id, VERIFIER)
        self.assertEqual(copy.size, 8)
        self.assertTrue(verify(self.dir, VKEY, witnesses=[str(self.witness_dir)]).ok)

    def test_older_checkpoint_refused(self) -> None:
        """
        A directory witness holding a newer checkpoint keeps it: an older
        one is refused as a rollback, counted and logged critically; the
        log itself goes on.
        """
        witness = DirectoryWitness(self.witness_dir)
        log = run_log(self.dir, 7, witnesses=[witness])
        newer = read_directory_copy(self.witness_dir, log.log_id, VERIFIER)
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        note = (self.dir / CHECKPOINTS_FILE).read_bytes().split(b"\n\n")
        old = WitnessCheckpoint(log.log_id, log.checkpoint_origin, 5, b"\0" * 32, note[2] + b"\n\n" + note[3] + b"\n", 0, ())
        witness.submit(old)
        self.assertEqual((witness.failures, witness.conflicts), (1, 1))
        self.assertIn("newer than this log's checkpoint size 5", witness.last_error)
        self.assertEqual(read_directory_copy(self.witness_dir, log.log_id, VERIFIER), newer)
        self.assertTrue(any(e.get("log_level") == LogLevel.critical for e in events))

    def test_unwritable_directory(self) -> None:
        """
        A witness directory that cannot be written costs the log nothing:
        the failure is counted and logged, the records and checkpoints are
        written as ever, and the directory gets the next checkpoint once
        it can.
        """
        blocked = self.witness_dir / "not-a-dir"
        blocked.write_text("")
        witness = DirectoryWitness(blocked)
        log, clock, _ = make_log(self.dir, checkpoint_every=5, witnesses=[witness])
        log.startService()
        for i in range(6):
            log.append("e", body(i))
        clock.advance(1)
        self.assertEqual((witness.sent, witness.failures), (0, 2))
        self.assertIsNone(log.failed)
        blocked.unlink()
        blocked.mkdir()
        d = log.stopService()
        clock.advance(1)
        self.successResultOf(d)
        self.assertEqual((witness.sent, witness.acknowledged, witness.last_error), (1, 7, None))

    def test_rollback_refused_at_start(self) -> None:
        """
        If the log and its checkpoints are restored to an earlier state
        (both consistent), the start refuses: the directory witness holds a
        newer checkpoint.  The message names the witness copy, both sizes
        and what to do.
        """
        witness = DirectoryWitness(self.witness_dir)
        run_log(self.dir, 3, witnesses=[witness])
        snapshot = Path(self.mktemp())
        shutil.copytree(self.dir, snapshot)
        run_log(self.dir, 3, start=3, witnesses=[witness])
        for name in (RECORDS_FILE, CHECKPOINTS_FILE, STATE_FILE):
            shutil.copy(snapshot / name, self.dir / name)
        self.assertTrue(verify(self.dir, VKEY).ok)
        report = verify(self.dir, VKEY, witnesses=[str(self.witness_dir)])
        self.assertFalse(report.ok)
        self.assertIn("holds checkpoint size 8 of this log", report.first_error)
        self.assertIn("ends at size 4", report.first_error)
        log, _, _ = make_log(self.dir, witnesses=[DirectoryWitness(self.witness_dir)])
        e = self.assertRaises(AuditStateError, log.startService)
        self.assertIn("holds checkpoint size 8", str(e))
        self.assertIn("is size 4", str(e))
        self.assertIn("rolled back", str(e))


class HTTPWitnessTests(TestCase):
    """Against a real tlog-witness server on 127.0.0.1 (tests/audit/witness_server.py)."""

    timeout = 60

    def setUp(self) -> None:
        self.server = WitnessServer(VKEY)
        self.server.start()
        self.addCleanup(lambda: self.server.stop() if self.server.port is not None else None)
        self.dir = Path(self.mktemp())

    def witness(self) -> HTTPWitness:
        return HTTPWitness(
            self.server.url,
            records=self.dir / RECORDS_FILE,
            reactor=reactor,
            run=lambda f: maybeDeferred(f),
            timeout=5,
        )

    @inlineCallbacks
    def run_log(self, count: int, start: int = 0, *, crash: bool = False):
        witness = self.witness()
        log, clock, _ = make_log(self.dir, checkpoint_every=5, witnesses=[witness])
        log.startService()
        for i in range(start, start + count):
            log.append("e", body(i))
            clock.advance(0.001)
        clock.advance(1)
        yield witness.flush()
        if crash:
            os.close(log._fd)
            os.close(log._cp_fd)
            yield witness.close()
            return log, witness
        d = log.stopService()
        clock.advance(1)
        yield d
        return log, witness

    @inlineCallbacks
    def test_checkpoints_with_consistency_proofs(self):
        """
        Each checkpoint is POSTed to <url>/add-checkpoint: first with
        C{old 0}, then with the consistency proof from the size the witness
        holds, which the witness verifies; it holds the log's signed end.
        After a restart, the next checkpoint proves consistency from it.
        """
        log, witness = yield self.run_log(12)
        origin = log.checkpoint_origin
        self.assertEqual(self.server.resource.held(origin), 13)
        self.assertEqual((witness.failures, witness.acknowledged), (0, 13))
        # One delivery at a time: checkpoints 5 and 10 came while the first
        # was in flight, and only the newest waited (it proves the rest).
        requests = self.server.resource.requests
        self.assertEqual(requests[0][:3], (200, 0, 0))
        self.assertEqual(requests[-1][:2], (200, 10))
        self.assertEqual(requests[-1][2], 13)
        self.assertEqual([r[0] for r in requests], [200] * len(requests))
        self.assertEqual(witness.sent, len(requests))
        self.assertTrue(all(n > 0 for _, old, new, n in requests if 0 < old < new))
        _, witness = yield self.run_log(3, start=12)
        self.assertEqual(self.server.resource.held(origin), 17)
        self.assertEqual(self.server.resource.requests[-1][:3], (200, 13, 17))
        keys = {self.server.url: [WITNESS_VKEY]}
        report = yield deferToThread(verify, self.dir, VKEY, witnesses=[self.server.url], witness_vkeys=keys)
        self.assertTrue(report.ok, report.first_error)
        self.assertIn("holds this log's last checkpoint (size 17); cosigned by witness.test/w1", report.summary())

    @inlineCallbacks
    def test_witness_down(self):
        """
        While the witness is down, checkpoints still get written and records
        are unaffected; each failure is counted and logged (a warning).
        When it is back, the next checkpoint reaches it with a proof from
        the last size it acknowledged.
        """
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        number = self.server.number
        witness = self.witness()
        log, clock, _ = make_log(self.dir, checkpoint_every=5, witnesses=[witness])
        log.startService()
        for i in range(5):
            log.append("e", body(i))
        clock.advance(1)
        yield witness.flush()
        yield witness.flush()
        self.assertEqual(witness.acknowledged, 5)
        yield self.server.stop()
        for i in range(5, 16):
            self.assertEqual(self.successResultOf(log.append("e", body(i))), i)
            clock.advance(0.001)
        clock.advance(1)
        yield witness.flush()
        self.assertIsNone(log.failed)
        self.assertGreaterEqual(witness.failures, 1)
        self.assertIn("POST", witness.last_error)
        self.assertEqual(witness.acknowledged, 5)
        warnings = [e for e in events if e.get("log_level") == LogLevel.warn and "witness" in e.get("log_format", "")]
        self.assertTrue(warnings)
        self.server.start(number)
        d = log.stopService()
        clock.advance(1)
        yield d
        self.assertEqual((witness.last_error, witness.acknowledged), (None, 17))
        self.assertEqual(self.server.resource.held(log.checkpoint_origin), 17)
        status, old, new, proof = self.server.resource.requests[-1]
        self.assertEqual((status, old, new), (200, 5, 17))
        self.assertGreater(proof, 0)
        report = verify(self.dir, VKEY)
        self.assertTrue(report.ok, report.first_error)

    @inlineCallbacks
    def test_witness_behind_after_restart(self):
        """
        A restart assumes the witness holds the log's last checkpoint; one
        that missed it answers 409 with its size, and the log proves
        consistency from there (reading the records back) instead.
        """
        log, _ = yield self.run_log(7)
        origin = log.checkpoint_origin
        # The witness lost the final checkpoint (say, restored from backup).
        self.server.resource.latest[origin] = (5, self.server_root_at(5))
        _, witness = yield self.run_log(6, start=7)
        self.assertEqual((witness.failures, witness.last_error), (0, None))
        self.assertEqual(self.server.resource.held(origin), 15)
        self.assertIn((409, 8, 13), [r[:3] for r in self.server.resource.requests])
        self.assertIn((200, 5, 13), [r[:3] for r in self.server.resource.requests])

    def server_root_at(self, size: int) -> bytes:
        from hoopgw.audit.merkle import mth

        lines = (self.dir / RECORDS_FILE).read_bytes().splitlines()[:size]
        return mth(lines)

    @inlineCallbacks
    def test_rollback_detected(self):
        """
        Log and checkpoints rolled back together: C{verify --witness URL}
        fails naming the witness's size and the log's; the gateway, started
        on the rolled-back log, is told so by the witness (409 with a larger
        size): logged critically and counted, records unaffected.
        """
        yield self.run_log(7)
        snapshot = Path(self.mktemp())
        shutil.copytree(self.dir, snapshot)
        log, _ = yield self.run_log(6, start=7)
        for name in (RECORDS_FILE, CHECKPOINTS_FILE, STATE_FILE):
            shutil.copy(snapshot / name, self.dir / name)
        report = yield deferToThread(verify, self.dir, VKEY, witnesses=[self.server.url])
        self.assertFalse(report.ok)
        self.assertIn("has seen checkpoint size 15 of this log", report.first_error)
        self.assertIn("checkpoint size 8", report.first_error)
        self.assertIn("rolled back", report.first_error)
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        _, witness = yield self.run_log(1, start=100)
        self.assertGreaterEqual(witness.conflicts, 1)
        self.assertIn("rolled back", witness.last_error)
        self.assertTrue([e for e in events if e.get("log_level") == LogLevel.critical])
        self.assertEqual(self.server.resource.held(log.checkpoint_origin), 15)

    @inlineCallbacks
    def test_verify_catches_up_a_lagging_witness(self):
        """
        C{verify --witness URL} on a log the witness saw only part of sends
        the consistency proof from the witness's size: accepted (and the
        witness is up to date); a fork of the log (other records after size
        8, signed with the same key) is refused by the witness (422).
        """
        log, _ = yield self.run_log(7)
        origin = log.checkpoint_origin
        snapshot = Path(self.mktemp())
        shutil.copytree(self.dir, snapshot)
        self.server.resource.latest[origin] = (5, self.server_root_at(5))
        keys = {self.server.url: [WITNESS_VKEY]}
        report = yield deferToThread(verify, self.dir, VKEY, witnesses=[self.server.url], witness_vkeys=keys)
        self.assertTrue(report.ok, report.first_error)
        self.assertIn("held checkpoint size 5, which this log extends", report.summary())
        self.assertEqual(self.server.resource.held(origin), 8)
        # A fork: the same log continued two ways (only the key's holder can).
        yield self.run_log(6, start=7)
        self.assertEqual(self.server.resource.held(origin), 15)
        shutil.rmtree(self.dir)
        shutil.copytree(snapshot, self.dir)
        run_log(self.dir, 7, start=50)
        report = yield deferToThread(verify, self.dir, VKEY, witnesses=[self.server.url], witness_vkeys=keys)
        self.assertFalse(report.ok)
        self.assertIn("does not extend", report.first_error)


class ConsistencyFromFrontierTests(SynchronousTestCase):
    def test_matches_full_proof(self) -> None:
        """
        The proof built from the old size's frontier and the new leaves is
        RFC 6962's, for every pair of sizes up to 70.
        """
        from hoopgw.audit.merkle import CompactTree, consistency_proof, consistency_proof_from

        hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(70)]
        for n in range(1, 71):
            for m in range(1, n + 1):
                tree = CompactTree()
                for h in hashes[:m]:
                    tree.append(h)
                self.assertEqual(
                    consistency_proof_from(m, tree.frontier, hashes[m:n]), consistency_proof(m, hashes[:n])
                )


class ConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir()
        (self.base / "w").mkdir()

    def load(self, audit: str, *, check_secrets: bool = True):
        return loads(f"[audit]\n{audit}\n", source=self.base / "hoopgw.toml", base_dir=self.base, check_secrets=check_secrets)

    def error(self, audit: str, **kwargs) -> str:
        e = self.assertRaises(ConfigError, self.load, audit, **kwargs)
        return str(e)

    def test_defaults(self) -> None:
        """No witness by default; a 10 s timeout."""
        settings = self.load("").audit
        self.assertEqual((settings.witnesses, settings.witness_timeout_seconds), ((), 10))
        self.assertEqual(AuditSettings().witnesses, ())

    def test_forms(self) -> None:
        """
        A string or an array; URLs kept (trailing slash dropped), paths
        made absolute relative to the file; a timeout as a duration.
        """
        settings = self.load('witness = ["https://w.example/p/", "w"]\nwitness_timeout = "3s"').audit
        self.assertEqual(settings.witnesses, ("https://w.example/p", str(self.base / "w")))
        self.assertEqual(settings.witness_timeout_seconds, 3)
        self.assertEqual(self.load('witness = "http://127.0.0.1:9/"').audit.witnesses, ("http://127.0.0.1:9",))

    def test_errors(self) -> None:
        """Each mistake is named: file, key (with index), what is expected."""
        where = f"{self.base / 'hoopgw.toml'}: audit.witness"
        cases = {
            "witness = 3": f"{where}: expected a tlog-witness URL",
            "witness = []": f"{where}: expected a tlog-witness URL (\"https://witness.example/prefix\") or a directory path (ideally on another mount), a table {{url = \"https://...\", vkey = \"<witness key>\"}}, or an array of them, got an empty array",
            'witness = ["w", 3]': f"{where}[1]: expected a tlog-witness URL",
            'witness = "ftp://x/y"': f"{where}: expected an http:// or https:// URL with a host",
            'witness = "https://"': f"{where}: expected an http:// or https:// URL with a host",
            'witness = "https://w.example/p?x=1"': f"{where}: expected a witness URL without query",
            'witness = "https://u:p@w.example/"': "without query, fragment or credentials",
            'witness = "https://w.example:99999/"': f"{where}: expected a valid port",
            'witness = "missing"': f"{where}: expected an existing directory for the witness copies, got \"missing\" (does not exist",
            'witness = ["w", "w/"]': f"{where}[1]: expected each witness once",
            'witness_timeout = "soon"': "audit.witness_timeout: expected",
            "witnesses = 1": 'audit.witnesses: unknown key; expected one of "checkpoint_every"',
        }
        for text, expected in cases.items():
            self.assertIn(expected, self.error(text), text)

    def test_missing_directory_without_check(self) -> None:
        """
        The admin command (no secret checks) accepts a directory it cannot
        see now: it may run on another host.
        """
        self.assertEqual(self.load('witness = "missing"', check_secrets=False).audit.witnesses, (str(self.base / "missing"),))

    def test_every_key_takes_effect(self) -> None:
        """
        The gateway's log gets a witness per entry, of the right kind, and
        the timeout.
        """
        settings = self.load('witness = ["https://w.example/p", "w"]\nwitness_timeout = "4s"').audit
        log = AuditLog.from_settings(settings, data_dir=self.base / "data", gateway_name="gw", reactor=reactor)
        kinds = [(type(w).__name__, w.target) for w in log.witnesses]
        self.assertEqual(kinds, [("HTTPWitness", "https://w.example/p"), ("DirectoryWitness", str(self.base / "w"))])
        self.assertEqual(log.witnesses[0].timeout, 4)
        self.assertEqual(log._witness_timeout, 4)


class CLITests(SynchronousTestCase):
    """C{hoopgw audit verify --witness} and C{hoopgw audit resolve-tail}."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.witness_dir = Path(self.mktemp())
        self.witness_dir.mkdir()
        (self.dir).mkdir()
        (self.dir / "audit.vkey").write_text(VKEY + "\n")

    def hoopgw(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
        return code, out.getvalue(), err.getvalue()

    def forge_after_end(self) -> None:
        lines = (self.dir / RECORDS_FILE).read_bytes().splitlines()
        (self.dir / RECORDS_FILE).write_bytes(b"".join(line + b"\n" for line in forged(lines, 2)))

    def test_verify_witness(self) -> None:
        """
        C{audit verify --witness DIR} passes on the intact log and fails
        (exit 1) once log and checkpoints are rolled back.
        """
        run_log(self.dir, 3, witnesses=[DirectoryWitness(self.witness_dir)])
        snapshot = Path(self.mktemp())
        shutil.copytree(self.dir, snapshot)
        run_log(self.dir, 3, start=3, witnesses=[DirectoryWitness(self.witness_dir)])
        code, out, _ = self.hoopgw("audit", "verify", "--dir", str(self.dir), "--witness", str(self.witness_dir))
        self.assertEqual(code, 0, out)
        self.assertIn("which this log extends", out)
        for name in (RECORDS_FILE, CHECKPOINTS_FILE):
            shutil.copy(snapshot / name, self.dir / name)
        code, out, _ = self.hoopgw("audit", "verify", "--dir", str(self.dir))
        self.assertEqual(code, 0, out)
        code, out, _ = self.hoopgw("audit", "verify", "--dir", str(self.dir), "--witness", str(self.witness_dir))
        self.assertEqual(code, 1)
        self.assertIn("FAILED: witness", out)
        self.assertIn("rolled back", out)

    def test_set_aside_after_clean_end(self) -> None:
        """
        Records forged after a clean stop: the start refuses; verify fails
        even with --allow-unsigned-tail; --adopt is refused; --set-aside
        moves them to set-aside/ and the next start records a
        log.tail.set_aside record naming the range, the file and its
        SHA-256, then the log verifies again.
        """
        run_log(self.dir, 3)
        self.forge_after_end()
        log, _, _ = make_log(self.dir)
        e = self.assertRaises(AuditStateError, log.startService)
        self.assertIn("seq 4..5", str(e))
        code, out, _ = self.hoopgw("audit", "verify", "--dir", str(self.dir), "--allow-unsigned-tail")
        self.assertEqual(code, 1)
        self.assertIn("follow the log's signed end", out)
        code, _, err = self.hoopgw("audit", "resolve-tail", "--dir", str(self.dir), "--adopt")
        self.assertEqual(code, 1)
        self.assertIn("cannot be adopted; use --set-aside", err)
        code, out, err = self.hoopgw("audit", "resolve-tail", "--dir", str(self.dir), "--set-aside")
        self.assertEqual(code, 0, err)
        self.assertIn("set aside seq 4..5 (2 records)", out)
        [moved] = list((self.dir / "set-aside").iterdir())
        self.assertEqual(len(moved.read_bytes().splitlines()), 2)
        log, clock, _ = make_log(self.dir)
        log.startService()
        self.assertFalse((self.dir / RESOLUTION_FILE).exists())
        record = records(self.dir)[-1]
        self.assertEqual(
            (record["event"], record["first_seq"], record["count"], record["file"], record["closed_before"]),
            ("log.tail.set_aside", 4, 2, f"set-aside/{moved.name}", True),
        )
        self.assertIn("not written by hoopgw", record["reason"])
        d = log.stopService()
        clock.advance(1)
        self.successResultOf(d)
        report = verify(self.dir, VKEY)
        self.assertTrue(report.ok, report.first_error)
        self.assertEqual(report.set_aside, (4,))

    def test_adopt_after_crash_with_torn_line(self) -> None:
        """
        A crash that left records after the last checkpoint and a torn last
        line: the start refuses (torn); --adopt moves the torn bytes aside
        and the next start adopts the whole records in log.recovered, which
        names the operator's decision.
        """
        log, clock, _ = make_log(self.dir, checkpoint_every=5)
        log.startService()
        for i in range(7):
            log.append("e", body(i))
        clock.advance(1)
        os.close(log._fd)
        os.close(log._cp_fd)
        with open(self.dir / RECORDS_FILE, "ab") as f:
            f.write(b'{"v":1,"lo')
        log2, _, _ = make_log(self.dir)
        e = self.assertRaises(AuditStateError, log2.startService)
        self.assertIn("torn", str(e))
        code, out, err = self.hoopgw("audit", "resolve-tail", "--dir", str(self.dir), "--adopt")
        self.assertEqual(code, 0, err)
        self.assertIn("adopting seq 5..6 (2 records)", out)
        self.assertIn("10 torn bytes", out)
        log3, clock3, _ = make_log(self.dir)
        log3.startService()
        recovered = records(self.dir)[7]
        self.assertEqual((recovered["event"], recovered["first_seq"], recovered["count"]), ("log.recovered", 5, 2))
        self.assertEqual(recovered["resolution"]["torn_bytes"], 10)
        d = log3.stopService()
        clock3.advance(1)
        self.successResultOf(d)
        report = verify(self.dir, VKEY)
        self.assertTrue(report.ok, report.first_error)
        self.assertEqual(report.recovered, ((5, 2, 7),))

    def test_adopt_checked_at_start(self) -> None:
        """
        If the tail changes after the operator's --adopt, the start refuses
        (the decision was about other records).
        """
        log, clock, _ = make_log(self.dir, checkpoint_every=5)
        log.startService()
        for i in range(7):
            log.append("e", body(i))
        clock.advance(1)
        os.close(log._fd)
        os.close(log._cp_fd)
        code, _, err = self.hoopgw("audit", "resolve-tail", "--dir", str(self.dir), "--adopt")
        self.assertEqual(code, 0, err)
        self.forge_after_end()
        log2, _, _ = make_log(self.dir)
        e = self.assertRaises(AuditStateError, log2.startService)
        self.assertIn("does not match", str(e))
        self.assertIn("resolve-tail", str(e))

    def test_resolve_refused_while_running(self) -> None:
        """The command refuses while the gateway has the log open."""
        log, clock, _ = make_log(self.dir)
        log.startService()
        code, _, err = self.hoopgw("audit", "resolve-tail", "--dir", str(self.dir), "--set-aside")
        self.assertEqual(code, 1)
        self.assertIn("locked by another process", err)
        d = log.stopService()
        clock.advance(1)
        self.successResultOf(d)
