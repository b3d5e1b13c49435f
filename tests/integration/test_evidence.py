"""
`hoopgw evidence` (issue 14) over sessions the real psql made through the
gateway: every control's section, the denied statement under AU-6 citing
records that exist in the trail with their hashes, the log verified under
AU-9/AU-10, CSV rows, and the same bytes twice but for generated_at.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json

from twisted.internet.defer import inlineCallbacks

from hoopgw.evidence.controls import CONTROLS
from tests.integration._process import HOOPGW, child_env, run
from tests.integration.test_postgres_clients import _GatewayCase, wait_until
from tests.integration.test_replay import DENY_DELETES, admin_config


class EvidenceTests(_GatewayCase):
    def setUp(self) -> None:
        self.start(extra_policy=DENY_DELETES)

    def cli(self, *args: str):
        return run([*HOOPGW, "--config", admin_config(self.base, self.base / "data"), *args], env=child_env())

    @inlineCallbacks
    def test_every_control_and_the_denied_statement_under_au_6(self):
        yield self.psql("-c", "SELECT count(*) FROM items", "-c", "DELETE FROM items WHERE id = 1")
        yield wait_until(lambda: self.records("session.end"), "session.end")
        yield self.gateway.audit.checkpoint()
        out = self.base / "evidence.json"
        code, output = yield self.cli("evidence", "--since", "1h", "--format", "json", "--out", str(out))
        self.assertEqual(code, 0, output)
        document = json.loads(out.read_text())
        self.assertEqual(set(document["controls"]), set(CONTROLS))
        lines = (self.base / "data" / "audit" / "records.jsonl").read_bytes().splitlines()

        def cited(finding):
            for record in finding["records"]:
                self.assertEqual(hashlib.sha256(lines[record["seq"]]).hexdigest(), record["sha256"])
            return True

        au6 = document["controls"]["AU-6"]["findings"]
        [denied] = [f for f in au6 if f["kind"] == "blocked action"]
        self.assertIn("DELETE FROM items WHERE id = 1", denied["detail"])
        self.assertIn("no-deletes", denied["detail"])
        self.assertEqual((denied["subject"], denied["connection"]), ("alice", "appdb"))
        self.assertTrue(all(cited(f) for section in document["controls"].values() for f in section["findings"]))
        self.assertEqual(len(denied["records"]), 2)  # its action.start and action.end
        au2 = document["controls"]["AU-2"]["summary"]["event_types"]
        self.assertEqual((au2["session.start"], au2["action.start"], au2["action.end"]), (1, 2, 2))
        self.assertTrue(document["controls"]["AU-9"]["summary"]["verified"])
        self.assertEqual(document["controls"]["AU-3"]["summary"]["incomplete"], 0)
        [alice] = document["controls"]["AC-2"]["summary"]["identities"]
        self.assertEqual((alice["subject"], alice["sessions"]), ("alice", 1))
        self.assertEqual(document["controls"]["IA-2"]["summary"]["methods"][0]["methods"], {"jwt": 1})
        self.assertTrue(document["controls"]["AC-3"]["summary"]["policy_changes"])

        again = self.base / "again.json"
        code, output = yield self.cli("evidence", "--since", document["range"]["since"], "--format", "json",
                                      "--out", str(again))
        self.assertEqual(code, 0, output)
        first, second = json.loads(out.read_text()), json.loads(again.read_text())
        first.pop("generated_at"), second.pop("generated_at")
        self.assertEqual(first, second)

        rows_path = self.base / "evidence.csv"
        code, output = yield self.cli("evidence", "--control", "AU-6", "--format", "csv", "--out", str(rows_path))
        self.assertEqual(code, 0, output)
        rows = list(csv.DictReader(io.StringIO(rows_path.read_text())))
        self.assertEqual({r["control"] for r in rows}, {"AU-6"})
        self.assertIn("blocked action", {r["kind"] for r in rows})

        code, output = yield self.cli("evidence", "--control", "XX-1", "--out", str(rows_path))
        self.assertEqual(code, 1)
        self.assertIn(b"control 'XX-1': expected one of", output)
