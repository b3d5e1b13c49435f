"""
Tests for L{hoopgw.audit.verify}: a tamper sweep over a small log.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import rfc8785
from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.audit.canonical import MAX_SAFE_INTEGER, canonical_json
from hoopgw.audit.log import CHECKPOINTS_FILE, RECORDS_FILE
from hoopgw.audit.verify import _check_record, _check_record_slow, verify

from .helpers import body, make_log
from .test_canonical import bmp_keys, bmp_values, keys, tricky_text


class TamperSweepTests(SynchronousTestCase):
    """
    A 13-record log (12 and the closing record) with checkpoints at 0 (the
    first start), 5, 10 and (at stop) 13: every single edit is reported,
    naming the first bad record or checkpoint.
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
        The untouched log verifies: 13 records, 4 checkpoints, the last
        covering 13, closed cleanly.
        """
        report = verify(self.dir, self.vkey)
        self.assertTrue(report.ok, report.first_error)
        self.assertEqual((report.records, report.checkpoints, report.last_checkpoint_size), (13, 4, 13))
        self.assertTrue(report.closed)
        self.assertIn("OK: 13 records", report.summary())

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
                self.assertIn("checkpoint 4 covers 13", error)

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
        for n in range(13):
            error = self.check(b"".join(self.lines[:n]))
            self.assertIn(f"{n} records, but checkpoint", error)
            expected = 2 if n < 5 else 3 if n < 10 else 4
            self.assertIn(f"checkpoint {expected} covers {(expected - 1) * 5 if expected < 4 else 13}", error)

    def test_torn(self) -> None:
        """
        A partial last line is reported as torn.
        """
        error = self.check(self.records + b'{"v"')
        self.assertIn("line 14 (seq 13) is torn", error)

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
        self.assertEqual(report.records, 13)
        shutil.copy(self.dir / CHECKPOINTS_FILE, self.scratch / CHECKPOINTS_FILE)
        data = list(self.lines)
        data[7], data[8] = data[8], data[7]
        (self.scratch / RECORDS_FILE).write_bytes(b"".join(data))
        report = verify(self.scratch, self.vkey, workers=2)
        self.assertIn("line 8 (seq 7)", report.first_error)

    def test_deeply_nested_line(self) -> None:
        """
        A line nested deeper than the JSON parsers recurse (in place of a
        record, or appended) is named as not canonical, not a crash.
        """
        deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
        self.assertIn("line 4 (seq 3): not canonical", self.check(b"".join(self.lines[:3]) + deep + b"".join(self.lines[4:])))
        self.assertIn("line 14 (seq 13): not canonical", self.check(self.records + deep))


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


# Values beyond the records' domain too: floats (integral ones included),
# integers beyond +-(2**53 - 1) and beyond 64 bits, and non-BMP keys.
wide_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
        st.integers(),
        st.sampled_from([MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 2**64, -(2**63) - 1]),
        st.floats(allow_nan=False),
        st.sampled_from([0.0, -0.0, 1.0, 1.5, 1e16, 1e-7]),
        tricky_text,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.one_of(keys, bmp_keys), children, max_size=4)
    ),
    max_leaves=25,
)


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _string(value: str, draw: Callable[[Any], Any]) -> str:
    """JCS's rendering of a string, or (sometimes) one with a character as a \\u escape."""
    if value and draw(st.integers(0, 4)) == 0:
        i = draw(st.integers(0, len(value) - 1))
        units = _utf16(value[i])
        escape = "".join(f"\\u{units[j]:02x}{units[j + 1]:02x}" for j in range(0, len(units), 2))
        if draw(st.booleans()):
            escape = escape.upper().replace("\\U", "\\u")
        head = rfc8785.dumps(value[:i]).decode()[:-1]
        return head + escape + rfc8785.dumps(value[i + 1 :]).decode()[1:]
    return rfc8785.dumps(value).decode()


def render(value: Any, draw: Callable[[Any], Any]) -> str:
    """
    JSON text for C{value} that is JCS or, as drawn, deviates in one of the
    ways a fast check could miss: whitespace, key order (code point instead
    of UTF-16, or shuffled), duplicate keys (same or another value), \\u
    escapes, integers written as 1.0 / 1e0 / -0, floats as orjson or json
    write them.
    """
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        forms = [str(value)] * 6 + [f"{value}.0", f"{value}e0", f"{value}E+0"]
        if value == 0:
            forms.append("-0")
        return draw(st.sampled_from(forms))
    if isinstance(value, float):
        import orjson

        return draw(st.sampled_from([json.dumps(value), orjson.dumps(value).decode()]))
    if isinstance(value, str):
        return _string(value, draw)
    comma = draw(st.sampled_from([",", ",", ",", ", "]))
    if isinstance(value, list):
        return "[" + comma.join(render(item, draw) for item in value) + "]"
    colon = draw(st.sampled_from([":", ":", ":", " : "]))
    items = sorted(value.items(), key=lambda kv: _utf16(kv[0]))
    order = draw(st.sampled_from(["jcs", "jcs", "codepoint", "shuffled"]))
    if order == "codepoint":
        items.sort(key=lambda kv: kv[0])
    elif order == "shuffled":
        items = draw(st.permutations(items))
    members = [_string(k, draw) + colon + render(v, draw) for k, v in items]
    if members and draw(st.integers(0, 5)) == 0:
        # A duplicate key, before or after the original, with the same or another value.
        i = draw(st.integers(0, len(members) - 1))
        key = items[i][0]
        again = _string(key, draw) + colon + draw(st.sampled_from([render(items[i][1], draw), "null", "1"]))
        members.insert(draw(st.integers(0, len(members))), again)
    return "{" + comma.join(members) + "}"


def outcome(check: Callable[[bytes], dict], line: bytes) -> tuple[str, object]:
    try:
        return ("ok", check(line))
    except ValueError as e:
        return ("refused", str(e))


class FastCheckTests(SynchronousTestCase):
    """
    L{_check_record} (orjson) against L{_check_record_slow} (json and the
    original encoder): the fast one accepts no line the slow one refuses,
    and whatever they accept is byte-equal to C{rfc8785.dumps} of it.
    """

    @settings(max_examples=1500, deadline=None)
    @given(st.dictionaries(st.one_of(keys, bmp_keys), wide_values, max_size=6), st.data())
    def test_agrees_with_slow(self, record: dict, data: st.DataObject) -> None:
        """
        For any object, rendered canonically or with whitespace, key order,
        duplicate keys, escapes, integral floats, floats or unsafe integers,
        the fast check gives the same result (the record, or the same error)
        as the slow one.
        """
        line = render(record, data.draw).encode()
        result = outcome(_check_record, line)
        self.assertEqual(result, outcome(_check_record_slow, line), line)
        if result[0] == "ok":
            # Both accepted: the line must be the reference's rendering.
            self.assertEqual(rfc8785.dumps(result[1]), line)

    @settings(max_examples=500, deadline=None)
    @given(st.dictionaries(bmp_keys, bmp_values, max_size=6), st.data())
    def test_byte_edits_agree(self, record: dict, data: st.DataObject) -> None:
        """
        For any canonical line with one byte replaced, inserted or deleted
        (bytes drawn mostly from JSON's own), both checks give the same
        result.
        """
        line = bytearray(rfc8785.dumps(record))
        position = data.draw(st.integers(0, len(line)))
        byte = data.draw(st.one_of(st.sampled_from(b' "\\:,{}[]0129.eE-+tnu'), st.integers(0, 255)))
        edit = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        if edit == "insert" or position == len(line):
            line.insert(position, byte)
        elif edit == "replace":
            line[position] = byte
        else:
            del line[position]
        result = outcome(_check_record, bytes(line))
        self.assertEqual(result, outcome(_check_record_slow, bytes(line)))
        if result[0] == "ok":
            self.assertEqual(rfc8785.dumps(result[1]), bytes(line))

    @settings(max_examples=500, deadline=None)
    @given(st.dictionaries(bmp_keys, bmp_values, max_size=8))
    def test_fast_path_accepts_canonical(self, record: dict) -> None:
        """
        For any canonical line without non-BMP characters, the fast path
        alone accepts it (the slow one is not consulted), giving the record.
        """
        import sys

        line = rfc8785.dumps(record)
        if any(b >= 0xF0 for b in line):
            return
        module = sys.modules["hoopgw.audit.verify"]

        def slow(line: bytes) -> dict:
            raise AssertionError(f"slow path consulted for {line!r}")

        self.patch(module, "_check_record_slow", slow)
        self.assertEqual(_check_record(line), record)

    def test_examples(self) -> None:
        """
        If a line differs from JCS by whitespace, key order (code point
        order where UTF-16 order differs included), a \\u escape of a
        plain character, 1.0 or 1e0 for 1, -0, a duplicate key (same or
        other value, nested too), an escaped solidus or DEL, or holds a
        float, the fast check refuses it with the slow check's words; raw
        U+2028 and DEL, and UTF-16 key order, are accepted.
        """
        for bad in (
            b'{"a":1 }',
            b'{"b":1,"a":2}',
            '{"\ue000":1,"\U00010000":2}'.encode(),
            b'{"a":"\\u0041"}',
            b'{"a":"\\u00e9"}',
            b'{"a":"\\u000a"}',
            b'{"a":"\\/"}',
            b'{"a":"\\u007f"}',
            b'{"a":1.0}',
            b'{"a":1e0}',
            b'{"a":1.5}',
            b'{"a":-0}',
            b'{"a":1,"a":1}',
            b'{"a":1,"a":2}',
            b'{"a":{"b":1,"b":1}}',
            b'{"a":[{"b":true,"b":true}]}',
            b'{"a":9007199254740992}',
            b'{"a":18446744073709551616}',
        ):
            self.assertEqual(outcome(_check_record, bad)[0], "refused", bad)
            self.assertEqual(outcome(_check_record, bad), outcome(_check_record_slow, bad), bad)
        for good in (
            {"a": "\u2028\u2029\x7f\x00\x1f\"\\/"},
            {"\U00010000": 2, "\ue000": 1},
            {"a": [MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 0, True, None, {}, []]},
        ):
            line = canonical_json(good)
            self.assertEqual(_check_record(line), good)


class UnpinnedKeyTests(SynchronousTestCase):
    """
    C{hoopgw audit verify} without C{--vkey} checks the log with the
    C{audit.vkey} beside it, which whoever rewrote the log (with a key of
    their own) wrote too: its OK says so, and how to pin the key.
    """

    def setUp(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        # The attacker's log: another key, a clean history, a vkey beside it.
        self.dir = Path(self.mktemp())
        log, clock, _ = make_log(self.dir, signing_key=Ed25519PrivateKey.generate())
        log.startService()
        log.append("e", body(0))
        clock.advance(0.001)
        d = log.stopService()
        clock.advance(0.01)
        self.successResultOf(d)
        (self.dir / "audit.vkey").write_text(log.vkey + "\n")
        self.vkey = Path(self.mktemp())
        self.vkey.write_text(log.vkey + "\n")

    def run_verify(self, *extra: str) -> tuple[int, str]:
        import contextlib
        import io

        from hoopgw.cli import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(["audit", "verify", "--dir", str(self.dir), *extra])
        return code, out.getvalue()

    def test_key_beside_the_log_is_named_unpinned(self) -> None:
        code, out = self.run_verify()
        self.assertEqual(code, 0, out)
        self.assertIn("not pinned", out)
        self.assertIn(str(self.dir / "audit.vkey"), out)

    def test_pinned_key_says_nothing_more(self) -> None:
        code, out = self.run_verify("--vkey", str(self.vkey))
        self.assertEqual(code, 0, out)
        self.assertNotIn("not pinned", out)
