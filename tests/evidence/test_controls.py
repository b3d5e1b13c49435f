"""The evidence document's pure parts: CSV rows safe in a spreadsheet."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.evidence.controls import findings_rows


class RowsTests(SynchronousTestCase):
    def test_formulas_stay_text(self) -> None:
        """A client's SQL or name that a spreadsheet would run as a formula is prefixed with a quote."""
        document = {"controls": {"AU-6": {"findings": [
            {"kind": "blocked action", "subject": "=HYPERLINK(\"http://x\")", "detail": "+1", "session": "-2",
             "connection": "@db", "records": [{"seq": 3, "sha256": "ab"}]},
            {"kind": "blocked action", "subject": "alice", "detail": "SELECT 1 = 1", "records": []},
        ]}}}
        first, second = findings_rows(document)
        self.assertEqual((first["subject"], first["detail"], first["session"], first["connection"]),
                         ("'=HYPERLINK(\"http://x\")", "'+1", "'-2", "'@db"))
        self.assertEqual(first["records"], "#3:ab")
        self.assertEqual((second["subject"], second["detail"], second["time"]), ("alice", "SELECT 1 = 1", ""))
