"""
The audit trail's vocabulary (L{hoopgw.audit.events}) is the one the docs
list, and the only place an event's name is spelled.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import hoopgw
from hoopgw.audit import events

ROOT = Path(hoopgw.__file__).parent
DOC = ROOT.parent / "docs" / "audit-format.md"


def documented_events() -> set[str]:
    """The events of the table under "The events:" in docs/audit-format.md (its first column)."""
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("The events ("):]
    names: set[str] = set()
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            if names:
                break
            continue
        first = line.split("|")[1]
        names.update(re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", first))
    return names


class VocabularyTests(SynchronousTestCase):
    def test_constants(self) -> None:
        """Every upper-case name of the module that holds a dotted name is an event, and every event has one."""
        constants = {
            value for name, value in vars(events).items()
            if name.isupper() and isinstance(value, str) and "." in value
        }  # fmt: skip
        self.assertEqual(constants, set(events.EVENTS))

    def test_documented(self) -> None:
        """docs/audit-format.md lists exactly the events the gateway writes."""
        self.assertEqual(documented_events(), set(events.EVENTS))

    def test_spelled_once(self) -> None:
        """
        No other module of the package spells an event's name: writers use
        the builders and names of L{events}, readers compare with its names,
        so a renamed or new event cannot leave a reader behind.
        """
        found = []
        for path in sorted(ROOT.rglob("*.py")):
            if path == Path(events.__file__):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and node.value in events.EVENTS:
                    found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {node.value!r}")
        self.assertEqual(found, [])


class BuilderTests(SynchronousTestCase):
    def test_session_records_share_the_constant_part(self) -> None:
        """The four records of a session carry its constant part, checked once, and each its own fields."""
        records = events.SessionRecords(
            gateway="gw", session="s1", connection="db", kind="postgres", target="db:5432",
            address="127.0.0.1", protocol="postgres", identity={"sub": "alice"}, client={"application": "psql"},
        )  # fmt: skip
        common = {"gateway", "session", "connection", "kind", "target", "source", "protocol", "identity", "client"}
        start = records.action_start({"id": "a1", "kind": "sql.query", "input": "SELECT 1"}, {"effect": "allow"})
        end = records.action_end("a1", "sql.query", {"status": "ok"})
        self.assertEqual(set(start), common | {"action", "decision"})
        self.assertEqual(set(end), common | {"action", "outcome"})
        self.assertEqual(end["action"], {"id": "a1", "kind": "sql.query"})
        self.assertEqual(records.session_end({"status": "ok"})["end"], {"status": "ok"})
        self.assertIs(start["identity"], end["identity"])  # (checked for canonical JSON once)

    def test_no_client(self) -> None:
        """A session whose client said nothing of itself has no C{client}."""
        records = events.SessionRecords(
            gateway="gw", session="s1", connection="db", kind="postgres", target="db:5432",
            address="127.0.0.1", protocol="postgres", identity={"sub": "alice"}, client={},
        )  # fmt: skip
        self.assertNotIn("client", records.session_start({"effect": "allow"}))

    def test_interrupted_lists_at_most(self) -> None:
        body = events.sessions_interrupted("gw", (str(i) for i in range(events.INTERRUPTED_LISTED + 5)))
        self.assertEqual(body["count"], events.INTERRUPTED_LISTED + 5)
        self.assertEqual(len(body["sessions"]), events.INTERRUPTED_LISTED)

    def test_refusals_never_carry_the_credential(self) -> None:
        """A refusal records a credential's SHA-256 only when no identity was verified."""
        body = events.request_refused(
            "gw", "127.0.0.1", "http", 413, "too large", identity={"sub": "alice"}, credential_sha256="ab" * 32,
        )  # fmt: skip
        self.assertNotIn("credential_sha256", body)
        self.assertEqual(body["outcome"], {"status": "blocked", "error": "too large"})
