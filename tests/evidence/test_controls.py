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


class ConfiguredBoundaryTests(SynchronousTestCase):
    def test_listeners_from_the_map(self) -> None:
        """SC-7 and SC-8 read [listen] as the map it is: every listener on, none that is off."""
        from pathlib import Path

        from hoopgw.config import loads
        from hoopgw.evidence.controls import _configured_boundary, _tls_legs

        config = loads('[listen]\nssh = false\napi = "tcp:9000"\n', source=None, base_dir=Path("/tmp"))
        self.assertEqual(
            _configured_boundary(config)["listeners"],
            {"http": "tcp:18443:interface=127.0.0.1", "postgres": "tcp:15432:interface=127.0.0.1", "api": "tcp:9000"},
        )
        self.assertEqual(
            [leg["leg"] for leg in _tls_legs(config)],
            ["client to gateway (postgres)", "client to gateway (http)", "API"],
        )
