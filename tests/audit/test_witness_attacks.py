"""
Attacks on the witnesses, the start-up checks and C{resolve-tail} (the
review of the witness / clean-stop / resolve-tail work), each pinned by a
test: the signing key swapped or read (K1), an unverifiable witness copy
(A2), a FIFO or symbolic link in the witness directory (A3, A4), a hung
witness mount (H1), a witness answering without end (A5), an
unauthenticated or redirected witness answer (V1), a forged
C{tail-resolution.json} (R1) and a replayed note under C{resolve-tail}
(R4).  The tamper variants are also in C{tests/adversarial/audit_corpus.py}.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from hashlib import sha256
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

import hoopgw.audit.witness as witness_module
from hoopgw.audit.checkpoint import Verifier, sign_checkpoint, vkey_text
from hoopgw.audit.log import (
    CHECKPOINTS_FILE,
    RECORDS_FILE,
    RESOLUTION_FILE,
    STATE_FILE,
    AuditLog,
    AuditStateError,
)
from hoopgw.audit.merkle import mth
from hoopgw.audit.resolve import ResolveError, resolve_tail
from hoopgw.audit.verify import verify
from hoopgw.audit.witness import (
    MAX_NOTE_BYTES,
    DirectoryWitness,
    HTTPWitness,
    WitnessCheckpoint,
    WitnessCopyError,
    directory_copy_path,
    read_directory_copy,
    read_note_file,
)
from hoopgw.cli import main
from hoopgw.config import loads
from hoopgw.errors import ConfigError
from tests.adversarial.audit_corpus import SWAPPED_KEY, forged

from .helpers import KEY, ORIGIN, body, make_log
from .witness_server import WITNESS_NAME, WITNESS_VKEY, WitnessServer, witness_vkey

VKEY = AuditLog(".", signing_key=KEY, origin=ORIGIN, reactor=None).vkey
VERIFIER = Verifier.from_vkey(VKEY)
ROOT = Path(__file__).resolve().parents[2]


def run_log(directory: Path, count: int, *, start: int = 0, **kwargs) -> AuditLog:
    log, clock, _ = make_log(directory, checkpoint_every=5, **kwargs)
    log.startService()
    for i in range(start, start + count):
        log.append("e", body(i))
        clock.advance(0.001)
    d = log.stopService()
    clock.advance(1)
    assert d.called
    return log


def in_thread(f, timeout: float = 10.0):
    """C{f()} in a daemon thread; C{AssertionError} if it hangs (the bug)."""
    box: dict = {}

    def work() -> None:
        try:
            box["result"] = f()
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"still blocked after {timeout}s")
    if "error" in box:
        raise box["error"]
    return box.get("result")


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.witness_dir = Path(self.mktemp())
        self.witness_dir.mkdir(parents=True)

    def witness(self) -> DirectoryWitness:
        return DirectoryWitness(self.witness_dir)

    def copy_path(self, log: AuditLog) -> Path:
        return directory_copy_path(self.witness_dir, log.log_id)

    def start(self, **kwargs) -> tuple[AuditLog, Clock]:
        log, clock, _ = make_log(self.dir, checkpoint_every=5, witnesses=[self.witness()], **kwargs)
        log.startService()
        return log, clock

    def stop(self, log: AuditLog, clock: Clock) -> None:
        d = log.stopService()
        clock.advance(1)
        self.successResultOf(d)


class KeySwapTests(Base):
    """K1: the witness's copy is signed evidence, checked with the log's key and root."""

    def test_swapped_key_refused_at_start(self) -> None:
        """
        The key and audit.vkey replaced, the history rewritten and
        re-signed: the start (with the new key) refuses, because the
        witness's copy does not verify with it; the copy is kept; verify
        with the replaced vkey and the witness fails too.
        """
        log = run_log(self.dir, 7, witnesses=[self.witness()])
        copy = self.copy_path(log).read_bytes()
        lines = (self.dir / RECORDS_FILE).read_bytes().splitlines()
        lines = forged(lines[:3], 6)
        (self.dir / RECORDS_FILE).write_bytes(b"".join(line + b"\n" for line in lines))
        origin = f"{ORIGIN}/{log.log_id}"
        notes = [
            sign_checkpoint(SWAPPED_KEY, ORIGIN, origin, 0, mth([])),
            sign_checkpoint(SWAPPED_KEY, ORIGIN, origin, len(lines), mth(lines)),
        ]
        (self.dir / CHECKPOINTS_FILE).write_bytes(b"\n".join(notes) + b"\n")
        (self.dir / STATE_FILE).unlink()
        swapped = vkey_text(ORIGIN, SWAPPED_KEY.public_key())
        log2, _, _ = make_log(self.dir, witnesses=[self.witness()], signing_key=SWAPPED_KEY)
        e = self.assertRaises(AuditStateError, log2.startService)
        self.assertIn(str(self.copy_path(log)), str(e))
        self.assertIn("does not verify with the log's key", str(e))
        self.assertIn("replaced", str(e))
        self.assertEqual(self.copy_path(log).read_bytes(), copy)
        report = verify(self.dir, swapped, witnesses=[str(self.witness_dir)])
        self.assertFalse(report.ok)
        self.assertIn("does not verify with the log's key", report.first_error)

    def test_copy_root_checked_below_the_last_checkpoint(self) -> None:
        """
        With the real key (read by the attacker) the history is rewritten
        and re-signed past the witness's size: the start computes the
        log's root at the copy's size, and refuses.
        """
        log = run_log(self.dir, 7, witnesses=[self.witness()])
        lines = (self.dir / RECORDS_FILE).read_bytes().splitlines()
        lines = forged(lines[:3], 10)
        (self.dir / RECORDS_FILE).write_bytes(b"".join(line + b"\n" for line in lines))
        origin = f"{ORIGIN}/{log.log_id}"
        notes = [sign_checkpoint(KEY, ORIGIN, origin, 0, mth([])), sign_checkpoint(KEY, ORIGIN, origin, 13, mth(lines))]
        (self.dir / CHECKPOINTS_FILE).write_bytes(b"\n".join(notes) + b"\n")
        (self.dir / STATE_FILE).unlink()
        log2, _, _ = make_log(self.dir, witnesses=[self.witness()])
        e = self.assertRaises(AuditStateError, log2.startService)
        self.assertIn("holds checkpoint size 8", str(e))
        self.assertIn("rewritten", str(e))

    def test_first_note_signed_by_another_key(self) -> None:
        """
        A key swapped under a log whose notes were not all re-signed: the
        first note does not verify with the key the last one does.
        """
        log = run_log(self.dir, 7)
        notes = (self.dir / CHECKPOINTS_FILE).read_bytes().split(b"\n\n")
        origin = f"{ORIGIN}/{log.log_id}"
        first = sign_checkpoint(SWAPPED_KEY, ORIGIN, origin, 0, mth([]))
        rest = b"\n\n".join(notes[2:])
        (self.dir / CHECKPOINTS_FILE).write_bytes(first + b"\n" + rest)
        log2, _, _ = make_log(self.dir)
        e = self.assertRaises(AuditStateError, log2.startService)
        self.assertIn("checkpoint 1 (at byte 0)", str(e))
        self.assertIn("signing key was replaced", str(e))

    def test_store_refuses_a_copy_by_another_key(self) -> None:
        """
        While running, a copy signed by another key appears: the witness
        does not replace it (critical, a conflict); the log goes on.
        """
        log, clock = self.start()
        path = self.copy_path(log)
        forged_copy = sign_checkpoint(SWAPPED_KEY, ORIGIN, log.checkpoint_origin, 3, mth([b"x"] * 3))
        path.write_bytes(forged_copy)
        for i in range(5):
            log.append("e", body(i))
        clock.advance(1)
        [witness] = log.witnesses
        self.assertEqual(witness.conflicts, 1)
        self.assertIn("does not verify with the log's key", witness.last_error)
        self.assertIn("move", witness.last_error)
        self.assertEqual(path.read_bytes(), forged_copy)
        self.assertIsNone(log.failed)
        self.stop(log, clock)

    def test_store_refuses_an_inconsistent_copy(self) -> None:
        """
        A copy signed with the log's key but of another history (a fork by
        the key's holder): the next checkpoint does not extend it, and is
        refused; a copy that the records do extend is replaced.
        """
        log, clock = self.start()
        path = self.copy_path(log)
        fork = sign_checkpoint(KEY, ORIGIN, log.checkpoint_origin, 2, mth([b"a", b"b"]))
        path.write_bytes(fork)
        for i in range(5):
            log.append("e", body(i))
        clock.advance(1)
        [witness] = log.witnesses
        self.assertEqual(witness.conflicts, 1)
        self.assertIn("rewritten", witness.last_error)
        self.assertEqual(path.read_bytes(), fork)
        # An older, genuine checkpoint of this log (the copy written by
        # another process, say): replaced by the newer one.
        lines = (self.dir / RECORDS_FILE).read_bytes().splitlines()
        path.write_bytes(sign_checkpoint(KEY, ORIGIN, log.checkpoint_origin, 2, mth(lines[:2])))
        for i in range(5, 10):
            log.append("e", body(i))
        clock.advance(1)
        self.assertEqual(witness.last_error, None)
        self.assertEqual(read_directory_copy(self.witness_dir, log.log_id, VERIFIER).size, 10)
        self.stop(log, clock)


class UnverifiableCopyTests(Base):
    """A2: a copy that does not verify fails the start, with a way out."""

    def test_unsigned_copy(self) -> None:
        """
        An unsigned copy claiming size 99999 is not believed (no false
        "rolled back"): the start refuses, naming the file, saying it does
        not verify and what to do; once moved aside, the start proceeds
        and the next checkpoint writes a new copy.
        """
        log = run_log(self.dir, 7, witnesses=[self.witness()])
        path = self.copy_path(log)
        root = base64.b64encode(b"x" * 32).decode()
        path.write_bytes(f"{log.checkpoint_origin}\n99999\n{root}\n\n".encode())
        log2, _, _ = make_log(self.dir, witnesses=[self.witness()])
        e = self.assertRaises(AuditStateError, log2.startService)
        message = str(e)
        self.assertIn(str(path), message)
        self.assertIn("does not verify", message)
        self.assertNotIn("rolled back", message)
        self.assertIn(f"move {path} aside", message)
        path.rename(path.with_name("bad"))
        log3, clock3 = self.start()
        self.stop(log3, clock3)
        self.assertEqual(read_directory_copy(self.witness_dir, log.log_id, VERIFIER).size, 9)

    def test_damaged_copy_fails_closed(self) -> None:
        """
        A garbled or empty copy: the start refuses (it used to warn, adopt
        a faked crash and sign it).
        """
        log = run_log(self.dir, 7, witnesses=[self.witness()])
        for damage in (b"garbage", b""):
            self.copy_path(log).write_bytes(damage)
            log2, _, _ = make_log(self.dir, witnesses=[self.witness()])
            e = self.assertRaises(AuditStateError, log2.startService)
            self.assertIn("does not verify", str(e))


class SpecialFileTests(Base):
    """A3 / A4: FIFOs, symbolic links and large files in the witness directory."""

    def test_fifo_copy(self) -> None:
        """
        A FIFO at the copy's path neither hangs the start nor verify: both
        refuse it at once, as not a regular file.
        """
        log = run_log(self.dir, 7, witnesses=[self.witness()])
        path = self.copy_path(log)
        path.unlink()
        os.mkfifo(path)
        log2, _, _ = make_log(self.dir, witnesses=[self.witness()])
        e = self.assertRaises(AuditStateError, in_thread, log2.startService)
        self.assertIn("not a regular file", str(e))
        report = in_thread(lambda: verify(self.dir, VKEY, witnesses=[str(self.witness_dir)]))
        self.assertFalse(report.ok)
        self.assertIn("not a regular file", report.first_error)

    def test_read_note_file(self) -> None:
        """
        Symbolic links (to /dev/zero, to a real note), FIFOs and files
        beyond 64 KiB are refused without reading them through.
        """
        d = Path(self.mktemp())
        d.mkdir()
        (d / "note").write_bytes(b"a note\n")
        self.assertEqual(read_note_file(d / "note"), b"a note\n")
        self.assertIsNone(read_note_file(d / "missing"))
        os.symlink("/dev/zero", d / "zero")
        os.symlink(d / "note", d / "link")
        os.mkfifo(d / "fifo")
        (d / "big").write_bytes(b"x" * (MAX_NOTE_BYTES + 1))
        for name, expected in (("zero", "symbolic link"), ("link", "symbolic link"), ("fifo", "not a regular file"), ("big", "more than")):
            e = self.assertRaises(WitnessCopyError, in_thread, lambda n=name: read_note_file(d / n))
            self.assertIn(expected, str(e), name)

    def test_tmp_symlink_does_not_truncate_records(self) -> None:
        """
        A4: a symbolic link planted where the old code put its temporary
        file (<copy>.tmp -> records.jsonl) is never opened: the records
        are intact, the copy replaced, no temporary file is left.
        """
        log = run_log(self.dir, 7, witnesses=[self.witness()])
        path = self.copy_path(log)
        records = self.dir / RECORDS_FILE
        os.symlink(records, path.with_name(path.name + ".tmp"))
        log2 = run_log(self.dir, 6, start=7, witnesses=[self.witness()])
        self.assertEqual(log2.log_id, log.log_id)
        report = verify(self.dir, VKEY, witnesses=[str(self.witness_dir)])
        self.assertTrue(report.ok, report.first_error)
        self.assertEqual(read_directory_copy(self.witness_dir, log.log_id, VERIFIER).size, report.records)
        self.assertEqual(sorted(p.name for p in self.witness_dir.iterdir()), sorted([path.name, path.name + ".tmp"]))
        self.assertEqual(os.readlink(path.with_name(path.name + ".tmp")), str(records))


class HungWitnessTests(Base):
    """H1: a witness stuck in a system call never holds up the start or the exit."""

    def test_start_times_out(self) -> None:
        """
        Reading the copy blocks (a hung mount): the start fails after
        witness_timeout with a message naming the witness and what to do.
        """
        run_log(self.dir, 3, witnesses=[self.witness()])
        release = threading.Event()
        self.addCleanup(release.set)
        self.patch(witness_module, "read_note_file", lambda path: release.wait())
        log, _, _ = make_log(self.dir, witnesses=[self.witness()], witness_timeout_seconds=0.5)
        started = time.monotonic()
        e = self.assertRaises(AuditStateError, in_thread, log.startService)
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn(str(self.witness_dir), str(e))
        self.assertIn("did not finish within 0.5s", str(e))
        self.assertIn("hung", str(e))

    def test_process_exits(self) -> None:
        """
        A gateway whose directory witness hangs for ever in a delivery
        stops within witness_timeout and its process exits (the witness
        runs in a daemon thread, not the reactor's pool, which the exit
        joins).
        """
        script = textwrap.dedent(
            f"""
            import threading, time, sys
            from pathlib import Path
            from twisted.internet import reactor
            from hoopgw.audit.log import AuditLog
            from hoopgw.audit.witness import DirectoryWitness
            from hoopgw.config import AuditSettings
            root = Path({str(Path(self.mktemp()).absolute())!r})
            (root / "w").mkdir(parents=True)
            DirectoryWitness._store = lambda self, checkpoint: threading.Event().wait()
            settings = AuditSettings(witnesses=(str(root / "w"),), witness_timeout_seconds=1)
            log = AuditLog.from_settings(settings, data_dir=root / "data", gateway_name="gw", reactor=reactor)
            log.startService()
            def stop():
                t = time.monotonic()
                d = log.stopService()
                d.addBoth(lambda _: print("stopped", round(time.monotonic() - t, 1), flush=True))
                d.addBoth(lambda _: reactor.stop())
            def go():
                log.append("e", {{"n": 1}})
                log.checkpoint()
                reactor.callLater(0.5, stop)
            reactor.callWhenRunning(go)
            reactor.run()
            print("exited", flush=True)
            """
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        try:
            result = subprocess.run(
                [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30
            )
        except subprocess.TimeoutExpired:
            self.fail("the process did not exit within 30s")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.split()
        self.assertEqual(lines[0], "stopped")
        self.assertLessEqual(float(lines[1]), 2.0)
        self.assertEqual(lines[-1], "exited")


class ResolutionTests(Base):
    """R1 / R4: tail-resolution.json checked against what can be verified; no replayed note trusted."""

    def set_aside_after_end(self) -> Path:
        run_log(self.dir, 3)
        lines = (self.dir / RECORDS_FILE).read_bytes().splitlines()
        (self.dir / RECORDS_FILE).write_bytes(b"".join(line + b"\n" for line in forged(lines, 2)))
        resolve_tail(self.dir, VKEY, "set-aside")
        [moved] = (self.dir / "set-aside").iterdir()
        return moved

    def test_forged_decision_refused(self) -> None:
        """
        A decision naming a set-aside file that does not exist: refused,
        nothing written, the message says what was expected and what to do.
        """
        run_log(self.dir, 3)
        size = len((self.dir / RECORDS_FILE).read_bytes())
        entry = {"action": "set-aside", "checkpoint": 4, "first_seq": 4, "count": 40, "operator": "alice",
                 "sha256": "00" * 32, "file_sha256": "00" * 32, "bytes": 10, "torn_bytes": 0,
                 "file": "set-aside/records-4-43-20240101T000000Z.jsonl"}
        (self.dir / RESOLUTION_FILE).write_text(json.dumps({"v": 1, "entries": [entry]}))
        log, _, _ = make_log(self.dir)
        e = self.assertRaises(AuditStateError, log.startService)
        self.assertIn("cannot be opened", str(e))
        self.assertIn("not written by resolve-tail", str(e))
        self.assertEqual(len((self.dir / RECORDS_FILE).read_bytes()), size)

    def test_decision_about_another_checkpoint(self) -> None:
        """A decision about a checkpoint other than the last is refused."""
        moved = self.set_aside_after_end()
        data = json.loads((self.dir / RESOLUTION_FILE).read_text())
        data["entries"][0]["checkpoint"] = data["entries"][0]["first_seq"] = 2
        (self.dir / RESOLUTION_FILE).write_text(json.dumps(data))
        log, _, _ = make_log(self.dir)
        e = self.assertRaises(AuditStateError, log.startService)
        self.assertIn("about checkpoint size 2", str(e))
        self.assertTrue(moved.exists())

    def test_changed_set_aside_file_refused(self) -> None:
        """The set-aside file edited after resolve-tail wrote it: refused."""
        moved = self.set_aside_after_end()
        moved.write_bytes(moved.read_bytes().replace(b"mallory", b"nobody!"))
        log, _, _ = make_log(self.dir)
        e = self.assertRaises(AuditStateError, log.startService)
        self.assertIn(str(moved), str(e))
        self.assertIn("sha256", str(e))

    def test_set_aside_file_changed_after_it_was_recorded(self) -> None:
        """
        The set-aside file edited (or removed) after the start recorded its
        SHA-256 in log.tail.set_aside: audit verify fails naming the file
        and the record (the file is what an auditor reads of that tail).
        """
        moved = self.set_aside_after_end()
        log, clock = self.start()
        self.stop(log, clock)
        report = verify(self.dir, VKEY)
        self.assertTrue(report.ok, report.first_error)
        self.assertEqual(len(report.set_aside), 1)
        original = moved.read_bytes()
        moved.write_bytes(original.replace(b"mallory", b"nobody!"))
        report = verify(self.dir, VKEY)
        self.assertFalse(report.ok)
        self.assertIn(f"set-aside/{moved.name}", report.first_error)
        self.assertIn("log.tail.set_aside", report.first_error)
        self.assertIn("changed", report.first_error)
        moved.unlink()
        report = verify(self.dir, VKEY)
        self.assertFalse(report.ok)
        self.assertIn("missing", report.first_error)

    def test_forged_count_refused(self) -> None:
        """A decision whose count or digest differs from its file: refused."""
        self.set_aside_after_end()
        data = json.loads((self.dir / RESOLUTION_FILE).read_text())
        data["entries"][0]["count"] = 40
        (self.dir / RESOLUTION_FILE).write_text(json.dumps(data))
        log, _, _ = make_log(self.dir)
        e = self.assertRaises(AuditStateError, log.startService)
        self.assertIn("2 whole record line(s)", str(e))

    def test_only_checked_facts_recorded(self) -> None:
        """
        The log.tail.set_aside record holds what the start checked (the
        file, its size, SHA-256, lines, whether it chained on), nothing
        the decision merely claims (extra keys, an operator's name).
        """
        moved = self.set_aside_after_end()
        data = json.loads((self.dir / RESOLUTION_FILE).read_text())
        data["entries"][0]["operator"] = "alice"
        (self.dir / RESOLUTION_FILE).write_text(json.dumps(data))
        log, clock = self.start()
        record = json.loads((self.dir / RECORDS_FILE).read_bytes().splitlines()[-1])
        self.stop(log, clock)
        self.assertEqual(record["event"], "log.tail.set_aside")
        self.assertNotIn("operator", record)
        content = moved.read_bytes()
        self.assertEqual(
            {k: record[k] for k in ("first_seq", "count", "bytes", "sha256", "file_sha256", "torn_bytes", "closed_before", "chained")},
            {"first_seq": 4, "count": 2, "bytes": len(content), "sha256": sha256(content).hexdigest(),
             "file_sha256": sha256(content).hexdigest(), "torn_bytes": 0, "closed_before": True, "chained": True},
        )
        self.assertEqual(record["file"], f"set-aside/{moved.name}")

    def test_resolve_refuses_replayed_note(self) -> None:
        """
        R4: an old note appended again and state.json removed: the start
        refuses naming the replayed note; resolve-tail refuses to cut by
        it; the records are intact.
        """
        run_log(self.dir, 7)
        run_log(self.dir, 6, start=7)
        notes = (self.dir / CHECKPOINTS_FILE).read_bytes()
        second = notes.split(b"\n\n")
        old = second[2] + b"\n\n" + second[3] + b"\n\n"  # the size-5 note
        (self.dir / CHECKPOINTS_FILE).write_bytes(notes + old)
        (self.dir / STATE_FILE).unlink()
        before = (self.dir / RECORDS_FILE).read_bytes()
        log, _, _ = make_log(self.dir)
        e = self.assertRaises(AuditStateError, log.startService)
        self.assertIn("size 5 is smaller than the previous checkpoint's 15", str(e))
        e = self.assertRaises(ResolveError, resolve_tail, self.dir, VKEY, "set-aside")
        self.assertIn("replayed", str(e))
        self.assertEqual((self.dir / RECORDS_FILE).read_bytes(), before)
        self.assertFalse((self.dir / "set-aside").exists())


class BodyLimitTests(TestCase):
    """A5: an HTTP witness's answer is read up to 64 KiB, never buffered beyond."""

    timeout = 30

    def serve(self, head: bytes, chunk: bytes, count: int) -> str:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        self.addCleanup(server.close)
        sent = self.sent = [0]

        def run() -> None:
            connection, _ = server.accept()
            connection.recv(65536)
            try:
                connection.sendall(head)
                for _ in range(count):
                    connection.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                pass
            finally:
                connection.close()

        threading.Thread(target=run, daemon=True).start()
        return f"http://127.0.0.1:{server.getsockname()[1]}"

    @inlineCallbacks
    def deliver(self, url: str):
        records = Path(self.mktemp())
        records.write_bytes(b"")
        witness = HTTPWitness(url, records=records, reactor=reactor, run=lambda f: maybeDeferred(f), timeout=20)
        witness.submit(WitnessCheckpoint("x", "hoopgw/test/x", 1, b"\0" * 32, b"note\n\n- sig\n", 0, ()))
        yield witness.flush()
        yield witness.close()
        return witness

    @inlineCallbacks
    def test_chunked_answer_cut_off(self):
        """A 409 whose chunked body never ends is cut off past 64 KiB."""
        block = 1 << 16
        chunk = b"%x\r\n" % block + b"7" * block + b"\r\n"
        url = self.serve(b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n", chunk, 1 << 12)
        witness = yield self.deliver(url)
        self.assertIn("longer than 65536 bytes", witness.last_error)
        self.assertLess(self.sent[0], 64 << 20)

    @inlineCallbacks
    def test_large_content_length_refused(self):
        """A body announced beyond 64 KiB is refused unread."""
        url = self.serve(b"HTTP/1.1 409 Conflict\r\nContent-Length: 419430400\r\n\r\n", b"7" * (1 << 20), 400)
        witness = yield self.deliver(url)
        self.assertIn("more than 65536", witness.last_error)


class CosignatureTests(TestCase):
    """V1: a tlog-witness's answer counts only with its cosignature."""

    timeout = 60

    def setUp(self) -> None:
        self.server = WitnessServer(VKEY)
        self.server.start()
        self.addCleanup(lambda: self.server.stop() if self.server.port is not None else None)
        self.dir = Path(self.mktemp())

    def http_witness(self, **kwargs) -> HTTPWitness:
        return HTTPWitness(
            self.server.url, records=self.dir / RECORDS_FILE, reactor=reactor, run=lambda f: maybeDeferred(f), timeout=5, **kwargs
        )

    @inlineCallbacks
    def run_log(self, witness: HTTPWitness, count: int = 7):
        log, clock, _ = make_log(self.dir, checkpoint_every=5, witnesses=[witness])
        log.startService()
        for i in range(count):
            log.append("e", body(i))
            clock.advance(0.001)
        clock.advance(1)
        yield witness.flush()
        d = log.stopService()
        clock.advance(1)
        yield d
        return log

    def plain_server(self) -> str:
        from http.server import BaseHTTPRequestHandler, HTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if "redir" in self.path:
                    self.send_response(307)
                    self.send_header("Location", "/elsewhere")
                    self.end_headers()
                    return
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"<html>hello</html>")

            def log_message(self, *args) -> None:
                pass

        server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return f"http://127.0.0.1:{server.server_port}"

    @inlineCallbacks
    def test_verify_needs_a_cosignature(self):
        """
        C{verify --witness URL}: any web server answering 200, or a
        redirect, proves nothing (fails, saying why); the real witness,
        with its key, is reported with its cosignature; a wrong key, or a
        stale cosignature (replayable), fails.
        """
        yield self.run_log(self.http_witness())
        url = self.plain_server()
        keys = {url: [WITNESS_VKEY], url + "/redir": [WITNESS_VKEY], self.server.url: [WITNESS_VKEY]}
        report = yield deferToThread(verify, self.dir, VKEY, witnesses=[url])
        self.assertFalse(report.ok)
        self.assertIn("unauthenticated answer proves nothing", report.first_error)
        report = yield deferToThread(verify, self.dir, VKEY, witnesses=[url], witness_vkeys=keys)
        self.assertFalse(report.ok)
        self.assertIn("no cosignature by witness.test/w1", report.first_error)
        report = yield deferToThread(verify, self.dir, VKEY, witnesses=[url + "/redir"], witness_vkeys=keys)
        self.assertFalse(report.ok)
        self.assertIn("redirect", report.first_error)
        self.assertIn("not followed", report.first_error)
        report = yield deferToThread(verify, self.dir, VKEY, witnesses=[self.server.url])
        self.assertFalse(report.ok)
        report = yield deferToThread(verify, self.dir, VKEY, witnesses=[self.server.url], witness_vkeys=keys)
        self.assertTrue(report.ok, report.first_error)
        self.assertIn("cosigned by witness.test/w1", report.summary())
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        other = witness_vkey(WITNESS_NAME, Ed25519PrivateKey.generate())
        report = yield deferToThread(
            verify, self.dir, VKEY, witnesses=[self.server.url], witness_vkeys={self.server.url: [other]}
        )
        self.assertFalse(report.ok)
        stale = Clock()
        stale.advance(time.time() - 3600)
        self.server.resource.clock = stale
        report = yield deferToThread(verify, self.dir, VKEY, witnesses=[self.server.url], witness_vkeys=keys)
        self.assertFalse(report.ok)
        self.assertIn("replayed", report.first_error)

    @inlineCallbacks
    def test_fake_crash_with_url_witness_only(self):
        """
        A1, the documented limit: with only a URL witness, a fake crash
        (closing record and end note removed, forged records appended) is
        adopted at start, as docs/audit-format.md says; the witness refuses
        the next checkpoint (it does not extend the end it holds), logged
        critically, and verify --witness URL fails.
        """
        yield self.run_log(self.http_witness())
        log = yield self.run_log(self.http_witness(), 6)
        self.assertEqual(self.server.resource.held(log.checkpoint_origin), 15)
        records = (self.dir / RECORDS_FILE).read_bytes().splitlines()[:-1]
        (self.dir / RECORDS_FILE).write_bytes(b"".join(line + b"\n" for line in forged(records, 2)))
        notes = (self.dir / CHECKPOINTS_FILE).read_bytes().split(b"\n\n")
        (self.dir / CHECKPOINTS_FILE).write_bytes(b"\n\n".join(notes[:-3]) + b"\n\n")
        (self.dir / STATE_FILE).unlink()
        witness = self.http_witness(vkeys=[WITNESS_VKEY])
        yield self.run_log(witness, 0)
        self.assertGreaterEqual(witness.conflicts, 1)
        self.assertIn("rewritten", witness.last_error)
        self.assertEqual(self.server.resource.held(log.checkpoint_origin), 15)
        keys = {self.server.url: [WITNESS_VKEY]}
        report = yield deferToThread(verify, self.dir, VKEY, witnesses=[self.server.url], witness_vkeys=keys)
        self.assertFalse(report.ok)
        self.assertIn("does not extend", report.first_error)

    @inlineCallbacks
    def test_gateway_checks_cosignature(self):
        """
        The gateway's HTTP witness, given the witness's key, counts a 200
        only with a cosignature by it: a plain web server's 200 is a
        failure; the real witness's is acknowledged.
        """
        witness = self.http_witness(vkeys=[WITNESS_VKEY])
        yield self.run_log(witness)
        self.assertEqual((witness.failures, witness.acknowledged), (0, 8))
        url = self.plain_server()
        shutil.rmtree(self.dir)
        impostor = HTTPWitness(url, records=self.dir / RECORDS_FILE, reactor=reactor, run=lambda f: maybeDeferred(f), timeout=5, vkeys=[WITNESS_VKEY])
        yield self.run_log(impostor)
        self.assertIsNone(impostor.acknowledged)
        self.assertIn("not the configured witness's answer", impostor.last_error)


class ConfigAndCLITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir()

    def load(self, audit: str):
        return loads(f"[audit]\n{audit}\n", source=self.base / "hoopgw.toml", base_dir=self.base, check_secrets=False)

    def test_witness_table_with_vkey(self) -> None:
        """
        C{[audit] witness} takes C{{url, vkey}} tables; the key reaches the
        gateway's HTTP witness; a bad key is an error naming the entry.
        """
        settings = self.load(f'witness = [{{url = "https://w.example/p/", vkey = "{WITNESS_VKEY}"}}, "https://x.example"]').audit
        self.assertEqual(settings.witnesses, ("https://w.example/p", "https://x.example"))
        self.assertEqual(settings.witness_vkeys, (("https://w.example/p", WITNESS_VKEY),))
        log = AuditLog.from_settings(settings, data_dir=self.base / "data", gateway_name="gw", reactor=reactor)
        self.assertEqual([len(w.keys) for w in log.witnesses], [1, 0])
        e = self.assertRaises(ConfigError, self.load, 'witness = {url = "https://w.example", vkey = "nope"}')
        self.assertIn("audit.witness.vkey", str(e))
        e = self.assertRaises(ConfigError, self.load, 'witness = {path = "/tmp"}')
        self.assertIn("audit.witness", str(e))

    def test_signing_key_mode_enforced(self) -> None:
        """
        K1: whoever can read the signing key can re-sign: the gateway
        refuses a key file readable by group or others.
        """
        settings = self.load("").audit
        AuditLog.from_settings(settings, data_dir=self.base / "data", gateway_name="gw", reactor=reactor)
        key = self.base / "data" / "keys" / "audit_ed25519.pem"
        self.assertEqual(key.stat().st_mode & 0o777, 0o600)
        key.chmod(0o640)
        e = self.assertRaises(AuditStateError, AuditLog.from_settings, settings, data_dir=self.base / "data", gateway_name="gw", reactor=reactor)
        self.assertIn("chmod 600", str(e))

    def test_cli_witness_vkey(self) -> None:
        """C{--witness-vkey} is checked; without a URL witness it is an error."""
        (self.base / "audit.vkey").write_text(VKEY)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["audit", "verify", "--dir", str(self.base), "--witness-vkey", "not-a-key"])
        self.assertEqual(code, 1)
        self.assertIn("--witness-vkey", err.getvalue())
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["audit", "verify", "--dir", str(self.base), "--witness-vkey", WITNESS_VKEY])
        self.assertEqual(code, 1)
        self.assertIn("no --witness URL", err.getvalue())
