"""
`hoopgw evidence` (issue 14) over sessions the real psql made through the
gateway: every control's section, the denied statement under AU-6 citing
records that exist in the trail with their hashes, the log verified under
AU-9/AU-10, CSV rows, and the same bytes twice but for generated_at.

The OSCAL format is loaded by compliance-trestle (the OSCAL models in
Python) and its citations checked against the trail; the HTML format is
parsed (a section per control, the chart, nothing fetched, the trail's text
escaped) and, with Chromium, rendered to a screenshot.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

from trestle.oscal import OSCAL_VERSION_REGEX
from trestle.oscal.assessment_results import AssessmentResults
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest

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

    @inlineCallbacks
    def session_with_a_hostile_statement(self):
        """A session whose denied statement carries markup, and the time just before it."""
        since = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        yield self.psql("-c", "SELECT count(*) FROM items", "-c", f"DELETE FROM items WHERE note = '{SCRIPT}'")
        yield wait_until(lambda: self.records("session.end"), "session.end")
        yield self.gateway.audit.checkpoint()
        return since

    @inlineCallbacks
    def write(self, since: str, format: str, name: str):
        out = self.base / name
        code, output = yield self.cli("evidence", "--since", since, "--format", format, "--out", str(out))
        self.assertEqual(code, 0, output)
        return out

    @inlineCallbacks
    def test_oscal_loads_in_trestle_and_cites_the_trail(self):
        since = yield self.session_with_a_hostile_statement()
        path = yield self.write(since, "oscal", "evidence.oscal.json")
        self.assertIsNotNone(AssessmentResults.oscal_read(path))  # trestle's own loader: parse and validate
        document = json.loads(path.read_text())["assessment-results"]
        self.assertRegex(document["metadata"]["oscal-version"], OSCAL_VERSION_REGEX)
        [result] = document["results"]
        [selection] = result["reviewed-controls"]["control-selections"]
        self.assertEqual({c["control-id"] for c in selection["include-controls"]}, {c.lower() for c in CONTROLS})
        uuids = [document["uuid"], result["uuid"], *(o["uuid"] for o in result["observations"]),
                 *(f["uuid"] for f in result["findings"]), *(r["uuid"] for r in document["back-matter"]["resources"])]
        self.assertEqual(len(uuids), len(set(uuids)))

        # Every cited record is in the trail, with the hash the report gives it.
        lines = (self.base / "data" / "audit" / "records.jsonl").read_bytes().splitlines()
        resources = {r["uuid"]: r for r in document["back-matter"]["resources"]}
        self.assertIn(document["import-ap"]["href"][1:], resources)
        observations = {o["uuid"]: o for o in result["observations"]}
        cited = 0
        for observation in observations.values():
            for evidence in observation.get("relevant-evidence", []):
                [rlink] = resources[evidence["href"].removeprefix("#")]["rlinks"]
                seq = int(rlink["href"].removeprefix("records.jsonl#seq-"))
                self.assertEqual(evidence["description"], f"audit record #{seq}")
                self.assertEqual(rlink["hashes"], [{"algorithm": "SHA-256", "value": hashlib.sha256(lines[seq]).hexdigest()}])
                cited += 1
        self.assertGreater(cited, 2)

        # The denied statement: an observation of AU-6's finding, citing its action.start and action.end.
        findings = {f["target"]["target-id"]: f for f in result["findings"]}
        au6 = findings["au-6_smt"]
        self.assertEqual((au6["target"]["type"], au6["target"]["status"]["state"]), ("statement-id", "satisfied"))
        [denied] = [observations[r["observation-uuid"]] for r in au6["related-observations"]
                    if "DELETE FROM items" in observations[r["observation-uuid"]]["description"]]
        self.assertIn(SCRIPT, denied["description"])
        self.assertIn("no-deletes", denied["description"])
        self.assertEqual(denied["title"], "AU-6: blocked action")
        self.assertEqual(len(denied["relevant-evidence"]), 2)
        self.assertEqual(findings["au-9_smt"]["target"]["status"]["state"], "satisfied")  # the log verifies

        # Reproducible: the same range, the same bytes but for last-modified.
        again = yield self.write(since, "oscal", "again.oscal.json")
        self.assertEqual(*(re.sub(rb'"last-modified": "[^"]*"', b"", p.read_bytes()) for p in (path, again)))

    @inlineCallbacks
    def test_html_is_self_contained_and_escaped(self):
        since = yield self.session_with_a_hostile_statement()
        path = yield self.write(since, "html", "evidence.html")
        data = path.read_bytes()
        page = _Page()
        page.feed(data.decode())
        page.close()
        self.assertEqual(page.sections, [c.lower() for c in CONTROLS])
        # Nothing fetched: no script at all, no URL with a scheme or a host anywhere in an attribute.
        self.assertNotIn(b"<script", data.lower())
        self.assertEqual(page.tags & {"script", "img", "link", "iframe", "object", "embed", "image", "use"}, set())
        self.assertEqual([v for v in page.urls if not v.startswith("#")], [])
        self.assertNotRegex(data, rb"(?i)(src|href)\s*=\s*[\"']?(https?:)?//")
        self.assertNotIn(b"url(", data)
        # The trail's text, shown as text.
        self.assertIn(SCRIPT, page.text)
        self.assertIn(b"&lt;script&gt;alert(1)&lt;/script&gt;", data)
        # The chart: inline SVG, one bar segment per outcome in a bucket (the SELECT succeeded, the DELETE was blocked).
        self.assertIn("svg", page.tags)
        self.assertTrue(any("succeeded" in t for t in page.titles))
        self.assertTrue(any("blocked" in t for t in page.titles))

        again = yield self.write(since, "html", "again.html")
        self.assertEqual(*(re.sub(rb"<th>generated at</th><td>[^<]*</td>", b"", p.read_bytes()) for p in (path, again)))

    @inlineCallbacks
    def test_html_renders_in_a_browser(self):
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        if browser is None:
            if os.environ.get("CI") == "true":
                raise AssertionError("chromium is missing under CI (.ci/run installs it)")
            raise SkipTest("no chromium to render the report")
        since = yield self.session_with_a_hostile_statement()
        path = yield self.write(since, "html", "evidence.html")
        png = self.base / "evidence.png"
        code, output = yield run([
            "timeout", "120", browser, "--headless", "--disable-gpu", "--hide-scrollbars",
            # Root (CI) cannot use Chromium's sandbox; the page is our own file, with no script.
            *(["--no-sandbox"] if os.geteuid() == 0 else []),
            # Nothing from the network: no updates, sync or first-run fetches.
            "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={self.base / 'chromium'}", "--window-size=1280,2400",
            f"--screenshot={png}", path.as_uri(),
        ], env=child_env(HOME=str(self.base)))
        self.assertEqual(code, 0, output)
        image = png.read_bytes()
        self.assertEqual(image[:8], b"\x89PNG\r\n\x1a\n")
        self.assertEqual((int.from_bytes(image[16:20], "big"), int.from_bytes(image[20:24], "big")), (1280, 2400))
        self.assertGreater(len(image), 20_000)  # a page of tables and a chart, not a blank one


SCRIPT = "<script>alert(1)</script>"


class _Page(HTMLParser):
    """What the tests look at: control sections, tags, URL-bearing attributes, text, SVG titles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[str] = []
        self.tags: set[str] = set()
        self.urls: list[str] = []
        self.text = ""
        self.titles: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "section" and attrs.get("class") == "control":
            self.sections.append(attrs["id"])
        self.urls += [value or "" for name, value in attrs.items()
                      if name in ("src", "href", "xlink:href", "action", "formaction", "poster", "data", "srcset")]
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        self.text += data
        if self._in_title:
            self.titles.append(data)
