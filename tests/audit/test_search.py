"""
Tests for L{hoopgw.audit.search}.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.audit.log import RECORDS_FILE
from hoopgw.audit.search import search

from .helpers import body, make_log


class SearchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        log, clock, _ = make_log(self.dir)
        clock.advance(1_700_000_000)
        log.startService()
        for i in range(10):
            log.append("action.start" if i % 2 else "session.start", body(i))
            clock.advance(1)
        log.append("session.end", {"session": {"id": "s0"}, "connection": {"name": "other"}})

    def seqs(self, **filters: object) -> list[int]:
        return [r["seq"] for r in search(self.dir, **filters)]

    def test_all(self) -> None:
        """
        With no filter, every record is yielded in order.
        """
        self.assertEqual(self.seqs(), list(range(11)))

    def test_filters(self) -> None:
        """
        Each filter keeps only matching records, and filters combine: session
        (plain or an object's id), subject, connection (plain or an object's
        name), event (exact or a prefix with *).
        """
        self.assertEqual(self.seqs(session="s0"), [0, 3, 6, 9, 10])
        self.assertEqual(self.seqs(subject="bob"), [1, 3, 5, 7, 9])
        self.assertEqual(self.seqs(session="s0", subject="bob"), [3, 9])
        self.assertEqual(self.seqs(connection="other"), [10])
        self.assertEqual(self.seqs(event="session.*"), [0, 2, 4, 6, 8, 10])
        self.assertEqual(self.seqs(event="session.end"), [10])
        self.assertEqual(self.seqs(subject="carol"), [])

    def test_time_window(self) -> None:
        """
        C{since} is inclusive and C{until} exclusive; naive datetimes are UTC.
        """
        since = datetime.fromtimestamp(1_700_000_002, timezone.utc)
        until = datetime.fromtimestamp(1_700_000_005, timezone.utc).replace(tzinfo=None)
        self.assertEqual(self.seqs(since=since, until=until), [2, 3, 4])

    def test_torn_tail_and_missing(self) -> None:
        """
        A partial last line is not yielded; a missing directory yields
        nothing.
        """
        with open(self.dir / RECORDS_FILE, "ab") as f:
            f.write(b'{"seq":')
        self.assertEqual(len(self.seqs()), 11)
        self.assertEqual(list(search(Path(self.mktemp()))), [])


class SearchJSONLinesTests(SynchronousTestCase):
    def test_line_separators_in_values(self) -> None:
        """
        C{audit search --json} writes one line per record even when a value
        (SQL text a client sent) holds U+2028, U+2029 or U+0085, which
        C{str.splitlines} takes for line ends: no reader of its lines sees a
        record the client wrote.
        """
        import contextlib
        import io
        import json

        from hoopgw.cli import main

        directory = Path(self.mktemp())
        log, clock, _ = make_log(directory)
        log.startService()
        fake = '{"event":"session.end","seq":99,"session":{"id":"s1"}}'
        for sep in ("\u2028", "\u2029", "\x85"):
            log.append("action.start", {"action": {"kind": "sql.query", "input": f"SELECT 1 /*{sep}{fake}{sep}*/"}})
        clock.advance(1)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = main(["audit", "search", "--dir", str(directory), "--json"])
        self.assertEqual(code, 0)
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        self.assertEqual([r["event"] for r in records], ["action.start"] * 3)
        self.assertEqual(records[0]["action"]["input"], f"SELECT 1 /*\u2028{fake}\u2028*/")
