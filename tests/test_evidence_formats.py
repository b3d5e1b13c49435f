"""
The evidence timeline (actions per time bucket and outcome, built in the
single pass) and the html and oscal renderers, on a synthetic trail whose
every name is hostile markup.  The end-to-end checks, over a real session,
are in tests/integration/test_evidence.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

from trestle.oscal.assessment_results import AssessmentResults
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.evidence import controls
from hoopgw.evidence.controls import build_evidence
from hoopgw.evidence.html import render_html
from hoopgw.evidence.oscal import render_oscal

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
HOSTILE = '"><img src=x onerror=alert(1)><script>alert(2)</script>'


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_trail(directory: Path, ends: list[tuple[datetime, str]]) -> Path:
    """An audit dir whose records are an action.start and action.end per (time, outcome)."""
    audit = directory / "audit"
    audit.mkdir(parents=True)
    lines = []
    for moment, status in ends:
        common = {"v": 1, "log": "l", "prev": "p", "time": _time(moment), "session": "s1", "connection": HOSTILE,
                  "identity": {"sub": HOSTILE, "iss": "i", "method": "jwt"}}
        action = {"id": f"a{len(lines)}", "kind": "sql.query", "input": f"SELECT '{HOSTILE}'"}
        lines.append({**common, "seq": len(lines), "event": "action.start", "action": action,
                      "decision": {"effect": "allow", "rule": HOSTILE}})
        lines.append({**common, "seq": len(lines), "event": "action.end", "action": {"id": action["id"]},
                      "outcome": {"status": status, "error": HOSTILE}})
    (audit / "records.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
    return audit


class TimelineTests(SynchronousTestCase):
    def test_the_narrowest_width_that_fits(self):
        # One action every 10 minutes for 3 hours: 5-minute buckets are the first to fit in 60.
        ends = [(T0 + timedelta(minutes=10 * i), ("succeeded", "failed", "blocked")[i % 3]) for i in range(18)]
        timeline = build_evidence(write_trail(Path(self.mktemp()), ends), now=T0)["timeline"]
        self.assertEqual(timeline["bucket_seconds"], 300)
        self.assertEqual(timeline["outcomes"], {"blocked": 6, "failed": 6, "succeeded": 6})
        self.assertEqual(len(timeline["buckets"]), 18)
        self.assertEqual(timeline["buckets"][0], {"start": "2026-03-01T12:00:00Z", "counts": {"succeeded": 1}})
        self.assertEqual([b["start"] for b in timeline["buckets"]], sorted(b["start"] for b in timeline["buckets"]))

    def test_coarsened_while_reading_without_losing_a_count(self):
        self.patch(controls, "_BUCKETS_KEPT", 5)
        ends = [(T0 + timedelta(seconds=7 * i), "succeeded" if i % 4 else "expired") for i in range(200)]
        timeline = build_evidence(write_trail(Path(self.mktemp()), ends), now=T0)["timeline"]
        self.assertIn(timeline["bucket_seconds"], controls._WIDTHS)
        self.assertGreaterEqual(timeline["bucket_seconds"], 60)
        self.assertEqual(timeline["outcomes"], {"expired": 50, "succeeded": 150})
        self.assertEqual(sum(sum(b["counts"].values()) for b in timeline["buckets"]), 200)
        for bucket in timeline["buckets"]:
            start = datetime.fromisoformat(bucket["start"].replace("Z", "+00:00")).timestamp()
            self.assertEqual(start % timeline["bucket_seconds"], 0)

    def test_no_actions(self):
        audit = Path(self.mktemp()) / "audit"
        audit.mkdir(parents=True)
        (audit / "records.jsonl").write_bytes(b"")
        document = build_evidence(audit, now=T0)
        self.assertEqual(document["timeline"], {"bucket_seconds": 1, "outcomes": {}, "buckets": []})
        self.assertIn(b"No actions ended", render_html(document))
        AssessmentResults.parse_obj(json.loads(render_oscal(document))["assessment-results"])

    def test_a_line_that_is_not_a_record_is_named(self):
        """A tampered unsigned tail's line (JSON but not an object, or nested past the parser): a precise error, no crash."""
        for tail in (b"[1]\n", b"[" * 100_000 + b"\n", b"not json\n"):
            audit = write_trail(Path(self.mktemp()), [(T0, "succeeded")])
            size = (audit / "records.jsonl").stat().st_size
            with open(audit / "records.jsonl", "ab") as f:
                f.write(tail)
            with self.assertRaises(ValueError) as raised:
                build_evidence(audit, now=T0)
            self.assertIn(f"records.jsonl: the line at byte {size} is not a record", str(raised.exception))


class RendererTests(SynchronousTestCase):
    def setUp(self) -> None:
        ends = [(T0 + timedelta(seconds=30 * i), ("succeeded", "blocked", "failed", "cancelled")[i % 4]) for i in range(8)]
        self.document = build_evidence(write_trail(Path(self.mktemp()), ends), now=T0)

    def test_html_escapes_the_trail(self):
        page = render_html(self.document)
        self.assertEqual(page, render_html(self.document))
        for raw in (b"<img", b"<script", b"onerror=alert(1)>"):
            self.assertNotIn(raw, page)
        parsed = _Markup()
        parsed.feed(page.decode())
        self.assertEqual(parsed.tags & {"img", "script"}, set())
        self.assertEqual({a for a in parsed.attributes if a.startswith("on") or a == "src"}, set())
        self.assertIn(HOSTILE, parsed.text)
        self.assertIn(b"&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt;", page)
        # An outcome the chart has no colour for is still drawn, and named.
        self.assertIn(b"cancelled (2)", page)
        self.assertIn(b"one bar per 10 seconds", page)  # 210 s in 22 buckets

    def test_html_shows_bidi_controls(self):
        """
        A right-to-left override in the trail (a blocked statement's text,
        an error) would show the text after it reversed in the report: it
        is shown as its escape instead.
        """
        audit = Path(self.mktemp()) / "audit"
        audit.mkdir(parents=True)
        record = {"v": 1, "log": "l", "prev": "p", "seq": 0, "time": _time(T0), "session": "s1", "connection": "c",
                  "identity": {"sub": "alice", "iss": "i", "method": "jwt"}, "event": "action.end",
                  "action": {"id": "a0", "kind": "sql.query"},
                  "outcome": {"status": "failed", "error": "permission denied -- \u202e\u2066DELETE\u2069"}}
        (audit / "records.jsonl").write_text(json.dumps(record) + "\n")
        page = render_html(build_evidence(audit, now=T0))
        for control in ("\u202e", "\u2066", "\u2069"):
            self.assertNotIn(control.encode(), page)
        self.assertIn(b"permission denied -- \\u202e\\u2066DELETE\\u2069", page)

    def test_oscal_is_valid_and_deterministic(self):
        data = render_oscal(self.document)
        self.assertEqual(data, render_oscal(self.document))
        results = AssessmentResults.parse_obj(json.loads(data)["assessment-results"])
        [result] = results.results
        states = {f.target.target_id: f.target.status.state.value for f in result.findings}
        self.assertEqual(states["au-6_smt"], "satisfied")  # blocked and failed actions are for review
        self.assertEqual(states["au-9_smt"], "not-satisfied")  # not verified (no verify given, no vkey)
        self.assertEqual(states["au-3_smt"], "satisfied")
        described = " ".join(o.description for o in result.observations)
        self.assertIn(HOSTILE, described)  # JSON carries it as it is; escaping is a renderer's concern

    def test_another_range_other_uuids(self):
        other = {**self.document, "range": {**self.document["range"], "since": _time(T0)}}
        first = json.loads(render_oscal(self.document))["assessment-results"]
        second = json.loads(render_oscal(other))["assessment-results"]
        self.assertNotEqual(first["uuid"], second["uuid"])
        self.assertEqual(second["results"][0]["start"], _time(T0))


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.text = ""

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)

    def handle_data(self, data):
        self.text += data
