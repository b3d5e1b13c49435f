"""
Tests for L{hoopgw.audit.verify}: a tamper sweep over a small log.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.audit.log import CHECKPOINTS_FILE, RECORDS_FILE
from hoopgw.audit.verify import verify

from .helpers import body, make_log


class TamperSweepTests(SynchronousTestCase):
    """
    A 12-record log with checkpoints at 5, 10 and (at stop) 12: every
    single edit is reported, naming the first bad record or checkpoint.
    """

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        log, clock, _ = make_log(self.dir, checkpoint_every=5)
        log.startService()
        for i in range(12):
            log.append("e", body(i))
            clock.advance(0.001)
        d = log.stopService()
        clock.advance(0.01)  # the last group commit window
        self.successResultOf(d)
        self.vkey = log.vkey
        self.records = (self.dir / RECORDS_FILE).read_bytes()
        self.notes = (self.dir / CHECKPOINTS_FILE).read_bytes()
        self.lines = self.records.splitlines(keepends=True)
        self.scratch = Path(self.mktemp())
        self.scratch.mkdir()

    def check(self, records: bytes, notes: bytes | None = None) -> str:
        (self.scratch / RECORDS_FILE).write_bytes(records)
        (self.scratch / CHECKPOINTS_FILE).write_bytes(self.notes if notes is None else notes)
        report = verify(self.scratch, self.vkey)
        self.assertFalse(report.ok)
        assert report.first_error is not None
        return report.first_error

    def line_of(self, position: int) -> int:
        """1-based line holding byte C{position} of the records file."""
        return self.records.count(b"\n", 0, position) + 1

    def test_intact(self) -> None:
        """
        The untouched log verifies: 12 records, 3 checkpoints, the last
        covering 12.
        """
        report = verify(self.dir, self.vkey)
        self.assertTrue(report.ok, report.first_error)
        self.assertEqual((report.records, report.checkpoints, report.last_checkpoint_size), (12, 3, 12))
        self.assertIn("OK: 12 records", report.summary())

    def test_flip_every_record_byte(self) -> None:
        """
        Flipping any one bit of any byte of the records file is detected,
        and the error names the records file and the edited line or the
        line after it (whose prev no longer matches), or the checkpoint
        whose root no longer matches.
        """
        for i in range(len(self.records)):
            data = bytearray(self.records)
            data[i] ^= 0x01 if i % 2 else 0x20
            error = self.check(bytes(data))
            line = self.line_of(i)
            named = re.search(r"line (\d+) ", error)
            if named:
                self.assertIn(int(named.group(1)), (line, line + 1), (i, error))
                self.assertIn(RECORDS_FILE, error)
            else:
                self.assertRegex(error, "checkpoint \\d+ \\(size \\d+\\): root does not match|records were removed", (i, error))

    def test_flip_every_checkpoint_byte(self) -> None:
        """
        Flipping any byte of the checkpoints file is detected and the error
        names the checkpoints file.
        """
        for i in range(len(self.notes)):
            data = bytearray(self.notes)
            data[i] ^= 0x01
            error = self.check(self.records, bytes(data))
            self.assertIn(CHECKPOINTS_FILE, error, i)
            self.assertIn("checkpoint ", error, i)

    def test_delete_each_record(self) -> None:
        """
        Deleting any one record is detected at the line where it was.
        """
        for i in range(len(self.lines)):
            error = self.check(b"".join(self.lines[:i] + self.lines[i + 1 :]))
            if i < len(self.lines) - 1:
                self.assertIn(f"line {i + 1} (seq {i})", error)
            else:
                self.assertIn("checkpoint 3 covers 12", error)

    def test_insert_copy(self) -> None:
        """
        Inserting a copy of any record, before or after it, or at the start
        or end of the file, is detected at the first line out of place.
        """
        n = len(self.lines)
        for i in range(n):
            for j in (i, i + 1, 0, n):
                bad = i + 1 if j == i else j
                data = self.lines[:j] + [self.lines[i]] + self.lines[j:]
                error = self.check(b"".join(data))
                self.assertIn(f"line {bad + 1} (seq {bad})", error, (i, j))

    def test_swap_neighbours(self) -> None:
        """
        Swapping any two neighbouring records is detected at the first of
        them.
        """
        for i in range(len(self.lines) - 1):
            data = list(self.lines)
            data[i], data[i + 1] = data[i + 1], data[i]
            error = self.check(b"".join(data))
            self.assertIn(f"line {i + 1} (seq {i})", error)

    def test_truncate(self) -> None:
        """
        Cutting the records file at any record boundary below the last
        checkpoint's size is reported as records removed, naming the first
        checkpoint that covers more.
        """
        for n in range(12):
            error = self.check(b"".join(self.lines[:n]))
            self.assertIn(f"{n} records, but checkpoint", error)
            expected = 1 if n < 5 else 2 if n < 10 else 3
            self.assertIn(f"checkpoint {expected} covers", error)

    def test_torn(self) -> None:
        """
        A partial last line is reported as torn.
        """
        error = self.check(self.records + b'{"v"')
        self.assertIn("line 13 (seq 12) is torn", error)

    def test_wrong_key(self) -> None:
        """
        With another log's verifier key, the first checkpoint is rejected.
        """
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from hoopgw.audit.checkpoint import vkey_text

        report = verify(self.dir, vkey_text("hoopgw/test", Ed25519PrivateKey.generate().public_key()))
        self.assertFalse(report.ok)
        self.assertIn("checkpoint 1", report.first_error)

    def test_workers(self) -> None:
        """
        Verification split across worker processes gives the same report as
        in-process, for an intact log and a tampered one.
        """
        import sys

        module = sys.modules["hoopgw.audit.verify"]

        self.patch(module, "_CHUNK", 256)
        report = verify(self.dir, self.vkey, workers=2)
        self.assertTrue(report.ok, report.first_error)
        self.assertEqual(report.records, 12)
        shutil.copy(self.dir / CHECKPOINTS_FILE, self.scratch / CHECKPOINTS_FILE)
        data = list(self.lines)
        data[7], data[8] = data[8], data[7]
        (self.scratch / RECORDS_FILE).write_bytes(b"".join(data))
        report = verify(self.scratch, self.vkey, workers=2)
        self.assertIn("line 8 (seq 7)", report.first_error)


class RecordCheckTests(SynchronousTestCase):
    def test_non_canonical_lines(self) -> None:
        """
        A line is refused if it holds a float, an unsafe integer, NaN,
        whitespace, unsorted keys or a duplicate key; a line whose keys are in
        UTF-16 order (not code point order) is accepted.
        """
        from hoopgw.audit.canonical import canonical_json
        from hoopgw.audit.verify import _check_record

        for bad in (
            b'{"a":1.5}',
            b'{"a":1.0}',
            b'{"a":9007199254740992}',
            b'{"a":NaN}',
            b'{"a": 1}',
            b'{"b":1,"a":2}',
            b'{"a":1,"a":1}',
            b'{"a":"\\u00e9"}',
            b'["a"]',
            b'{"a":"\xff"}',
        ):
            self.assertRaises(ValueError, _check_record, bad)
        line = canonical_json({"\ue000": 1, "\U00010000": 2})
        self.assertEqual(_check_record(line), {"\ue000": 1, "\U00010000": 2})
