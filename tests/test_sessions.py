"""
Tests for L{hoopgw.sessions}: the pipeline every front end shares.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.errors import AuditUnavailable, AuthenticationFailed, NotPermitted, WrongKind
from hoopgw.model import Action, Connection, Decision, Effect, Identity, Outcome, Source, Status
from hoopgw.recording.asciicast import AsciicastRecorder, read_asciicast
from hoopgw.testing import (
    MemoryAuditLog,
    MemoryIdentityVerifier,
    MemoryRecorder,
    StaticPolicy,
    memory_session_service,
)

ALICE = Identity(issuer="test", subject="alice", groups=("dev",), credential_sha256="ab" * 32)
SOURCE = Source("postgres", "127.0.0.1:50000")


class SessionServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.audit = MemoryAuditLog()
        self.policy = StaticPolicy()
        self.identity = MemoryIdentityVerifier(tokens={"good-token": ALICE})
        self.service = memory_session_service(
            audit=self.audit, policy=self.policy, identity=self.identity, clock=self.clock
        )

    def open(self):
        return self.successResultOf(self.service.open(ALICE, "db", kind="postgres", source=SOURCE, client={"application_name": "psql"}))

    def test_token_accepted(self) -> None:
        """If the verifier accepts a token, authenticate_token fires with its identity and writes nothing."""
        identity = self.successResultOf(self.service.authenticate_token("good-token", source=SOURCE))
        self.assertEqual(identity, ALICE)
        self.assertEqual(self.audit.records, [])

    def test_token_refused_audited_without_token(self) -> None:
        """
        If a token is refused, an auth.failed record carries the reason and
        the token's SHA-256, and the token itself appears nowhere.
        """
        token = "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"
        failure = self.failureResultOf(
            self.service.authenticate_token(token, source=SOURCE, user="alice"),
            AuthenticationFailed,
        )
        self.assertEqual(failure.value.reason, "unknown token")
        [record] = self.audit.of("auth.failed")
        self.assertEqual(record["reason"], "unknown token")
        self.assertEqual(record["source"], "127.0.0.1:50000")
        self.assertEqual(record["credential_sha256"], hashlib.sha256(token.encode()).hexdigest())
        self.assertNotIn(token, repr(self.audit.records))

    def test_password_refused_audited_without_hash(self) -> None:
        """
        A refused credential without a token's shape (a password typed where
        the token goes) leaves no hash: an unsalted SHA-256 of a password is
        the password to anyone with a word list.
        """
        for password in ("hunter2", "correct horse battery staple", "P@ss.w0rd.2026"):
            self.failureResultOf(self.service.authenticate_token(password, source=SOURCE), AuthenticationFailed)
        records = self.audit.of("auth.failed")
        self.assertEqual(len(records), 3)
        for record in records:
            self.assertNotIn("credential_sha256", record)
        self.service.refused(SOURCE, 405, "method not allowed", token="hunter2")
        [refused] = self.audit.of("request.refused")
        self.assertNotIn("credential_sha256", refused)

    def test_auth_failures_rate_limited_per_host(self) -> None:
        """
        If one host fails more than the limit within the window, the excess
        attempts are refused as before but not written one by one: one
        auth.failed.suppressed record counts them when the window ends.
        Another host keeps its own budget.
        """
        limit = self.service.failures.limit
        for port in range(limit + 5):
            source = Source("postgres", f"10.0.0.5:{40000 + port}")
            self.failureResultOf(self.service.authenticate_token("bad", source=source), AuthenticationFailed)
        self.failureResultOf(
            self.service.authenticate_token("bad", source=Source("ssh", "[2001:db8::1]:22")), AuthenticationFailed
        )
        self.assertEqual(len(self.audit.of("auth.failed")), limit + 1)
        self.assertEqual(self.audit.of("auth.failed.suppressed"), [])
        self.clock.advance(self.service.failures.window)
        [summary] = self.audit.of("auth.failed.suppressed")
        self.assertEqual(
            (summary["source_host"], summary["suppressed"], summary["failures"], summary["protocols"]),
            ("10.0.0.5", 5, limit + 5, ["postgres"]),
        )
        self.assertEqual(summary["outcome"], {"status": "blocked"})
        # A fresh window: recorded one by one again.
        self.failureResultOf(
            self.service.authenticate_token("bad", source=Source("postgres", "10.0.0.5:1")), AuthenticationFailed
        )
        self.assertEqual(len(self.audit.of("auth.failed")), limit + 2)

    def test_auth_failure_counts_flushed_at_shutdown(self) -> None:
        """Counts still pending when the gateway stops are written then."""
        limit = self.service.failures.limit
        for _ in range(limit + 2):
            self.service.auth_failed(source=SOURCE, reason="bad key", method="publickey")
        self.successResultOf(self.service.close_all("stopping"))
        [summary] = self.audit.of("auth.failed.suppressed")
        self.assertEqual(summary["suppressed"], 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_auth_failures_ipv6_counted_per_64(self) -> None:
        """Addresses of one IPv6 /64 share one budget (a client holds them all)."""
        self.service.failures.limit = 2
        for i in range(5):
            self.service.auth_failed(source=Source("http", f"[2001:db8:1:2::{i + 1:x}]:443"), reason="x", method="token")
        self.service.auth_failed(source=Source("http", "[2001:db8:1:3::1]:443"), reason="x", method="token")
        self.assertEqual(len(self.audit.of("auth.failed")), 3)
        self.clock.advance(self.service.failures.window)
        [summary] = self.audit.of("auth.failed.suppressed")
        self.assertEqual((summary["source_host"], summary["suppressed"]), ("2001:db8:1:2::/64", 3))

    def test_auth_failures_total_per_window(self) -> None:
        """Many hosts together write at most the total per window; the rest
        are counted per host, and a new window starts afresh."""
        self.service.failures.total = 5
        for i in range(8):
            self.service.auth_failed(source=Source("ssh", f"10.0.1.{i}:22"), reason="x", method="publickey")
        self.assertEqual(len(self.audit.of("auth.failed")), 5)
        self.clock.advance(self.service.failures.window)
        self.assertEqual(sum(r["suppressed"] for r in self.audit.of("auth.failed.suppressed")), 3)
        self.service.auth_failed(source=Source("ssh", "10.0.1.1:22"), reason="x", method="publickey")
        self.assertEqual(len(self.audit.of("auth.failed")), 6)

    def test_auth_failure_hosts_bounded(self) -> None:
        """Beyond the number of tracked hosts, the others share one budget."""
        self.service.failures.hosts = 2
        self.service.failures.limit = 1
        for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"):
            self.service.auth_failed(source=Source("http", f"{host}:1"), reason="x", method="token")
        self.assertEqual(len(self.audit.of("auth.failed")), 3)
        self.clock.advance(self.service.failures.window)
        [summary] = self.audit.of("auth.failed.suppressed")
        self.assertEqual((summary["source_host"], summary["suppressed"]), ("*", 2))

    def test_open_writes_session_start(self) -> None:
        """If policy allows session.open, a session.start record names identity, connection and source."""
        session = self.open()
        [record] = self.audit.of("session.start")
        self.assertEqual(record["session"], session.id)
        self.assertEqual(record["connection"], "db")
        self.assertEqual(record["identity"]["sub"], "alice")
        self.assertEqual(record["source"], "127.0.0.1:50000")
        self.assertEqual(record["client"], {"application_name": "psql"})
        self.assertIn(session.id, self.service.active)

    def test_open_denied(self) -> None:
        """If policy denies session.open, the open fails with NotPermitted and a session.refused record."""
        self.policy.decisions["session.open"] = Decision(effect=Effect.deny, rule="nope", message="not you")
        failure = self.failureResultOf(self.service.open(ALICE, "db", kind="postgres", source=SOURCE), NotPermitted)
        self.assertEqual(str(failure.value), "not you")
        [record] = self.audit.of("session.refused")
        self.assertEqual(record["decision"], {"effect": "deny", "rule": "nope", "message": "not you"})
        self.assertEqual(self.audit.of("session.start"), [])

    def test_open_unknown_connection(self) -> None:
        """If the connection does not exist, the open is refused and audited."""
        self.failureResultOf(self.service.open(ALICE, "nosuch", kind="postgres", source=SOURCE), NotPermitted)
        [record] = self.audit.of("session.refused")
        self.assertEqual(record["connection"], "nosuch")

    def test_refused_request(self) -> None:
        """
        A request refused before any session is one request.refused record:
        the code the client was answered, the reason, the front end's
        description, the user name given; a token only as its SHA-256.
        """
        self.successResultOf(
            self.service.refused(
                Source("http", "10.0.0.5:4000"), 405, "method not allowed",
                request={"method": "TRACE", "target": "/db/"}, token="eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", user="bob",
            )
        )
        [record] = self.audit.of("request.refused")
        self.assertEqual(
            {k: v for k, v in record.items() if k not in ("seq", "event")},
            {
                "gateway": "hoopgw",
                "source": "10.0.0.5:4000",
                "protocol": "http",
                "code": 405,
                "request": {"method": "TRACE", "target": "/db/"},
                "credential_sha256": hashlib.sha256(b"eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl").hexdigest(),
                "user": "bob",
                "outcome": {"status": "blocked", "error": "method not allowed"},
            },
        )
        self.assertNotIn("eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", repr(self.audit.records))

    def test_refused_request_with_identity(self) -> None:
        """With a verified identity, the record names it (and no token hash)."""
        self.service.refused(SOURCE, "08P01", "out of order", identity=ALICE, token="ignored")
        [record] = self.audit.of("request.refused")
        self.assertEqual(record["identity"]["sub"], "alice")
        self.assertNotIn("credential_sha256", record)

    def test_refused_requests_rate_limited_per_host(self) -> None:
        """
        Refusals of clients with no verified identity count against their
        host's budget (their own, not failed logins'): past it they are
        counted in one request.refused.suppressed record.  A refusal with a
        verified identity is always written.
        """
        limit = self.service.refusals.limit
        for port in range(limit + 3):
            self.service.refused(Source("postgres", f"10.0.0.5:{port}"), "28000", "in the clear")
        self.service.refused(Source("postgres", "10.0.0.5:1"), "28000", "in the clear", identity=ALICE)
        self.assertEqual(len(self.audit.of("request.refused")), limit + 1)
        # Failed logins still have their whole budget.
        self.service.auth_failed(source=Source("postgres", "10.0.0.5:9"), reason="x", method="token")
        self.assertEqual(len(self.audit.of("auth.failed")), 1)
        self.successResultOf(self.service.close_all("stopping"))
        [summary] = self.audit.of("request.refused.suppressed")
        self.assertEqual(
            (summary["source_host"], summary["suppressed"], summary["failures"], summary["protocols"]),
            ("10.0.0.5", 3, limit + 3, ["postgres"]),
        )
        self.assertEqual(self.audit.of("auth.failed.suppressed"), [])

    def test_open_wrong_kind(self) -> None:
        """
        If policy lets the identity open a connection of another kind than
        the front end serves, the open fails with WrongKind naming both
        kinds, in one session.refused record decided by the gateway itself;
        no session starts.
        """
        self.service.connections = {"web1": Connection(name="web1", kind="ssh", target="10.0.0.9:22")}
        failure = self.failureResultOf(
            self.service.open(ALICE, "web1", kind="postgres", source=SOURCE, client={"user": "alice"}), WrongKind
        )
        message = 'connection "web1" is of kind ssh, not postgres'
        self.assertEqual((str(failure.value), failure.value.kind, failure.value.expected), (message, "ssh", "postgres"))
        self.assertEqual(self.audit.events(), ["session.refused"])
        [record] = self.audit.of("session.refused")
        self.assertEqual(record["decision"], {"effect": "deny", "rule": "hoopgw", "message": message})
        self.assertEqual(record["outcome"], {"status": "blocked", "error": message})
        self.assertEqual((record["connection"], record["client"]), ("web1", {"user": "alice"}))
        self.assertEqual(self.service.active, {})

    def test_open_wrong_kind_forbidden(self) -> None:
        """
        If policy does not let the identity open a connection of another
        kind, the refusal is policy's, exactly as for a forbidden connection
        of the right kind: nothing tells the client the connection's kind.
        """
        self.service.connections = {
            "web1": Connection(name="web1", kind="ssh", target="10.0.0.9:22"),
            "db1": Connection(name="db1", kind="postgres", target="10.0.0.9:5432"),
        }
        self.policy.decisions["session.open"] = Decision(effect=Effect.deny, rule="nope", message="not you")
        answers = []
        for name in ("web1", "db1"):
            failure = self.failureResultOf(self.service.open(ALICE, name, kind="postgres", source=SOURCE), NotPermitted)
            self.assertNotIsInstance(failure.value, WrongKind)
            answers.append(str(failure.value))
        self.assertEqual(answers, ["not you", "not you"])
        web1, db1 = self.audit.of("session.refused")
        self.assertEqual(
            {k: v for k, v in web1.items() if k not in ("seq", "connection")},
            {k: v for k, v in db1.items() if k not in ("seq", "connection")},
        )

    def test_open_names_are_exact(self) -> None:
        """
        A name that differs in case or by whitespace from a connection of
        another kind is no connection: refused as unknown, saying nothing of
        that connection's kind.
        """
        self.service.connections = {"web1": Connection(name="web1", kind="ssh", target="10.0.0.9:22")}
        for name in ("WEB1", "Web1", " web1", "web1 ", "web1\n", "web1\x00"):
            failure = self.failureResultOf(self.service.open(ALICE, name, kind="postgres", source=SOURCE), NotPermitted)
            self.assertNotIsInstance(failure.value, WrongKind)
            self.assertEqual(str(failure.value), f"no connection named {name!r}")
        self.assertEqual(self.audit.events(), ["session.refused"] * 6)
        self.assertEqual(self.policy.seen, [])

    def test_allowed_action_logged_before_forwarding(self) -> None:
        """
        If an action is allowed, its action.start record exists by the time
        the handle is delivered, and finish() writes action.end with the outcome.
        """
        session = self.open()
        handle = self.successResultOf(session.check(Action(kind="sql.query", input="SELECT 1")))
        self.assertTrue(handle.allowed)
        self.assertEqual(self.audit.events()[-1], "action.start")
        self.assertEqual(self.audit.records[-1]["action"]["input"], "SELECT 1")
        self.clock.advance(0.25)
        handle.finish(Outcome(status=Status.succeeded, rows=1))
        end = self.audit.records[-1]
        self.assertEqual(end["event"], "action.end")
        self.assertEqual(end["outcome"], {"status": "succeeded", "rows": 1, "duration_us": 250000})
        self.assertEqual(end["action"]["id"], handle.id)

    def test_check_now_immediate(self) -> None:
        """
        check_now gives the handle itself when policy decided at once and
        the record is written: no Deferred, action.start already written.
        """
        session = self.open()
        handle = session.check_now(Action(kind="sql.query", input="SELECT 1"))
        self.assertNotIsInstance(handle, Deferred)
        self.assertTrue(handle.allowed)
        self.assertEqual(self.audit.events()[-1], "action.start")

    def test_check_now_denied(self) -> None:
        """A denial is returned at once too, its blocked outcome already recorded."""
        self.policy.decisions["sql.query"] = Decision(effect=Effect.deny, rule="no", message="no")
        session = self.open()
        handle = session.check_now(Action(kind="sql.query", input="DROP TABLE t"))
        self.assertNotIsInstance(handle, Deferred)
        self.assertFalse(handle.allowed)
        self.assertEqual(self.audit.events()[-2:], ["action.start", "action.end"])

    def test_check_now_waits_for_policy(self) -> None:
        """A decision that comes later (policy held): a Deferred, and no record until it comes."""
        session = self.open()
        self.policy.hold = True
        d = session.check_now(Action(kind="sql.query", input="SELECT 1"))
        self.assertIsInstance(d, Deferred)
        self.assertNoResult(d)
        self.assertNotIn("action.start", self.audit.events())
        self.policy.release()
        self.assertTrue(self.successResultOf(d).allowed)

    def test_check_now_waits_for_the_record(self) -> None:
        """
        A record the log has not made durable yet (strict sync): a Deferred
        that fires once it is, never the handle before.
        """
        session = self.open()
        log = self.audit
        waiting: list[Deferred[int]] = []

        class Strict:
            """The memory log, its records durable only when the test says so."""

            failed = None

            def append(self, event: str, body: Any) -> Deferred[int]:
                log.append(event, body)
                d: Deferred[int] = Deferred()
                waiting.append(d)
                return d

        self.service.audit = Strict()  # type: ignore[assignment]
        d = session.check_now(Action(kind="sql.query", input="SELECT 1"))
        self.assertIsInstance(d, Deferred)
        self.assertNoResult(d)
        waiting[0].callback(1)
        self.assertTrue(self.successResultOf(d).allowed)

    def test_check_now_bug_fails_the_deferred(self) -> None:
        """A bug while recording (here, attributes that are no mapping) fails the Deferred, never raises at the call site."""
        session = self.open()
        broken = Action(kind="sql.query", input="SELECT 1", attributes=42)  # type: ignore[arg-type]
        self.failureResultOf(session.check_now(broken), AttributeError)
        self.failureResultOf(session.check(broken), AttributeError)

    def test_check_now_log_unavailable(self) -> None:
        """A log that cannot be written: a failed Deferred, as check gives (the caller must not forward)."""
        session = self.open()
        self.audit.break_with("disk full")
        self.failureResultOf(session.check_now(Action(kind="sql.query", input="SELECT 1")), AuditUnavailable)

    def test_repeated_action_recorded_alike(self) -> None:
        """
        One Action checked three times (a cached HTTP request) gives records
        with the same content under their own ids, its attributes as lists;
        from its second record on, its audit form is read-only and shared.
        """
        session = self.open()
        action = Action(kind="http.request", input="GET /x", attributes={"http.paths": ("/x",)}, details={"verb": "get"})
        handles = [self.successResultOf(session.check(action)) for _ in range(3)]
        one, two, three = (r["action"] for r in self.audit.of("action.start"))
        self.assertEqual([r["id"] for r in (one, two, three)], [h.id for h in handles])
        same = lambda r: {k: v for k, v in r.items() if k != "id"}
        self.assertEqual(same(one), same(two))
        self.assertEqual(same(one), same(three))
        self.assertEqual(one["attributes"], {"http.paths": ["/x"]})
        self.assertIs(two["details"], three["details"])
        self.assertRaises(TypeError, three["details"].__setitem__, "verb", "delete")

    def test_masked_in_the_trail(self) -> None:
        """
        What a connection's masks find in an action is stored masked, for
        everyone: its input, its details and the facts policy matched (its
        attributes), counted once; the decision saw the real facts.
        """
        from types import SimpleNamespace

        from hoopgw.masking.service import MaskingService
        from hoopgw.policy.loader import build_policy_set

        masks = b'[[mask]]\nname = "pii"\ndetectors = ["email"]\nexcept_groups = ["dev"]\n'
        policy_set = build_policy_set([("masks.toml", masks)])
        self.service.masking = MaskingService(SimpleNamespace(policy_set=policy_set), b"k" * 32)
        session = self.open()
        action = Action(kind="redis.get", input="GET user:alice@example.com",
                        attributes={"redis.keys": ("user:alice@example.com",), "redis.commands": ("GET",)},
                        details={"typed": "alice@example.com"})
        self.successResultOf(session.check(action))
        self.assertEqual(self.policy.seen[-1].attributes["redis.keys"], ("user:alice@example.com",))
        [start] = self.audit.of("action.start")
        self.assertNotIn("alice@example.com", repr(start))
        self.assertEqual(start["action"]["attributes"], {"redis.keys": ["user:[redacted]"], "redis.commands": ["GET"]})
        self.assertEqual(start["action"]["masked"], {"pii": 2})  # the input's and the details'

    def test_repeated_action_masked_after_a_reload(self) -> None:
        """
        One Action recorded again (a cached HTTP request is one object for
        every session) is stored as the masks in effect now have it: a mask
        a policy reload adds covers its next record, though its form
        without that mask was already recorded twice.
        """
        from types import SimpleNamespace

        from hoopgw.masking.service import MaskingService
        from hoopgw.policy.loader import build_policy_set

        session = self.open()
        action = Action(kind="http.request", input="GET /users/alice@example.com", details={"verb": "get"})
        for _ in range(2):
            self.successResultOf(session.check(action))
        masks = b'[[mask]]\nname = "pii"\ndetectors = ["email"]\n'
        policy = SimpleNamespace(policy_set=build_policy_set([("masks.toml", masks)]))
        self.service.masking = MaskingService(policy, b"k" * 32)
        self.successResultOf(session.check(action))
        other = self.open()
        self.successResultOf(other.check(action))
        inputs = [r["action"]["input"] for r in self.audit.of("action.start")]
        self.assertEqual(inputs[:2], ["GET /users/alice@example.com"] * 2)
        self.assertEqual(len(inputs), 4)
        for stored in inputs[2:]:
            self.assertNotIn("alice@example.com", stored)

    def test_repeated_action_counted_each_time(self) -> None:
        """
        What a mask masks in an action recorded again is counted in the
        metrics at each record, the shared form's as the first's.
        """
        from types import SimpleNamespace

        from hoopgw.masking.service import MaskingService
        from hoopgw.policy.loader import build_policy_set

        counted: list[tuple[str, str, int]] = []
        metrics = SimpleNamespace(values_masked=lambda mask, detector, count: counted.append((mask, detector, count)))
        masks = b'[[mask]]\nname = "pii"\ndetectors = ["email"]\n'
        policy = SimpleNamespace(policy_set=build_policy_set([("masks.toml", masks)]))
        self.service.masking = MaskingService(policy, b"k" * 32, metrics)  # type: ignore[arg-type]
        session = self.open()
        action = Action(kind="http.request", input="GET /users/alice@example.com", details={"verb": "get"})
        for _ in range(3):
            self.successResultOf(session.check(action))
        self.assertEqual(counted, [("pii", "email", 1)] * 3)

    def test_action_form_not_shared_unless_read_only(self) -> None:
        """
        An action whose details canonical JSON checks each time (a float)
        keeps no shared form: every record gets its own copy.
        """
        session = self.open()
        action = Action(kind="sql.query", input="SELECT 1", details={"ratio": 1.0})
        for _ in range(3):
            self.successResultOf(session.check(action))
        one, two, three = (r["action"]["details"] for r in self.audit.of("action.start"))
        self.assertEqual(one, three)
        self.assertIsNot(two, three)

    def test_denied_action_blocked(self) -> None:
        """If an action is denied, both its decision and a blocked outcome are recorded, and it is not allowed."""
        self.policy.decisions["sql.query"] = Decision(effect=Effect.deny, rule="no-drop", message="no drops")
        session = self.open()
        handle = self.successResultOf(session.check(Action(kind="sql.query", input="DROP TABLE t")))
        self.assertFalse(handle.allowed)
        start, end = self.audit.records[-2:]
        self.assertEqual(start["decision"]["rule"], "no-drop")
        self.assertEqual(end["outcome"], {"status": "blocked", "error": "no drops"})

    def test_review_fails_closed(self) -> None:
        """If policy asks for review, the action is refused with a message that says reviews are not available."""
        self.policy.decisions["sql.query"] = Decision(effect=Effect.review, rule="review-payments")
        session = self.open()
        handle = self.successResultOf(session.check(Action(kind="sql.query", input="UPDATE payments SET x=1")))
        self.assertFalse(handle.allowed)
        self.assertIn("cannot hold actions for review yet", handle.decision.message)
        self.assertEqual(self.audit.records[-1]["outcome"]["status"], "blocked")

    def test_decision_that_fires_later(self) -> None:
        """If the decision arrives later, nothing is logged or allowed until it does."""
        session = self.open()
        self.policy.hold = True
        d = session.check(Action(kind="sql.query", input="SELECT 2"))
        self.assertNoResult(d)
        self.assertEqual(self.audit.events(), ["session.start"])
        self.policy.release()
        self.assertTrue(self.successResultOf(d).allowed)
        self.assertEqual(self.audit.events(), ["session.start", "action.start"])

    def test_audit_failure_refuses_actions(self) -> None:
        """If the audit log cannot be written, check() fails with AuditUnavailable and no decision is asked."""
        session = self.open()
        self.audit.break_with("disk full")
        seen = len(self.policy.seen)
        failure = self.failureResultOf(session.check(Action(kind="sql.query", input="SELECT 1")), AuditUnavailable)
        self.assertIn("disk full", str(failure.value))
        self.assertEqual(len(self.policy.seen), seen)

    def test_audit_failure_refuses_sessions(self) -> None:
        """If the audit log cannot be written, opening a session fails with AuditUnavailable."""
        self.audit.break_with("read-only file system")
        self.failureResultOf(self.service.open(ALICE, "db", kind="postgres", source=SOURCE), AuditUnavailable)
        self.assertEqual(self.service.active, {})

    def test_further_recordings_listed(self) -> None:
        """The first recording added is the session's recording; later ones
        are closed with the session and listed in session.end with their
        path and SHA-256."""
        session = self.open()
        first, second, third = MemoryRecorder(path="a.cast"), MemoryRecorder(path="b.cast"), MemoryRecorder(path="c.cast")
        second.write(b"hello")
        for recorder in (first, second, third):
            session.add_recording(recorder)
        self.successResultOf(session.close())
        [record] = self.audit.of("session.end")
        self.assertEqual(record["end"]["recording"], "a.cast")
        self.assertEqual(
            record["end"]["recordings"],
            [
                {"path": "b.cast", "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},
                {"path": "c.cast", "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
            ],
        )
        self.assertTrue(all(r.closed for r in (first, second, third)))

    def test_close_records_recording_hash(self) -> None:
        """If a session with a recorder closes, session.end carries the recording's SHA-256 and byte counts."""
        session = self.open()
        recorder = MemoryRecorder()
        recorder.write(b"hello")
        session.attach_recorder(recorder)
        session.bytes_in, session.bytes_out = 10, 20
        self.clock.advance(2)
        self.successResultOf(session.close())
        [record] = self.audit.of("session.end")
        self.assertEqual(
            record["end"]["recording_sha256"],
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        )
        self.assertEqual(record["end"]["bytes_in"], 10)
        self.assertEqual(record["end"]["duration_us"], 2_000_000)
        self.assertEqual(self.service.active, {})
        self.successResultOf(session.close())
        self.assertEqual(len(self.audit.of("session.end")), 1)

    def test_unencodable_text_still_recorded(self) -> None:
        """
        If a client's or target's text cannot be encoded as JSON (a lone
        surrogate), the record is still written, with that character replaced
        and the record marked sanitized.
        """
        session = self.open()
        handle = self.successResultOf(session.check(Action(kind="sql.query", input="SELECT 1")))
        self.successResultOf(handle.finish(Outcome(status=Status.failed, error="bad \ud800 text")))
        end = self.audit.records[-1]
        self.assertEqual((end["event"], end["outcome"]["error"], end["sanitized"]), ("action.end", "bad \ufffd text", True))
        failure = self.failureResultOf(
            self.service.authenticate_token("nope", source=SOURCE, user="x\udcff"), AuthenticationFailed
        )
        self.assertEqual(failure.value.reason, "unknown token")
        self.assertEqual(self.audit.records[-1]["user"], "x\ufffd")

    def test_no_sessions_while_closing(self) -> None:
        """If the gateway is shutting down, live sessions end and new ones are refused."""
        session = self.open()
        self.successResultOf(self.service.close_all("gateway shutting down"))
        self.assertTrue(session.closed)
        [end] = self.audit.of("session.end")
        self.assertEqual(end["end"]["status"], "terminated")
        failure = self.failureResultOf(self.service.open(ALICE, "db", kind="postgres", source=SOURCE), NotPermitted)
        self.assertEqual(str(failure.value), "the gateway is shutting down")

    def test_close_all_ends_sessions_through_their_front_ends(self) -> None:
        """
        At shutdown each session is ended by its front end (on_shutdown where
        it has one, else on_terminate) with the reason; the Deferred fires
        once every session.end is written.  A session still open when the
        grace is over is terminated at once, and closed.
        """
        told: list[tuple[str, str]] = []
        quick, gentle, stuck = self.open(), self.open(), self.open()
        quick.on_terminate = lambda reason: (told.append(("quick", reason)), quick.close())
        gentle.on_terminate = lambda reason: told.append(("gentle: aborted", reason))
        gentle.on_shutdown = lambda reason: told.append(("gentle", reason))
        stuck.on_terminate = lambda reason: told.append(("stuck", reason))
        done = self.service.close_all("the gateway is shutting down", grace=5)
        self.assertNoResult(done)
        self.assertEqual(
            told, [("quick", "the gateway is shutting down"), ("gentle", "the gateway is shutting down"),
                   ("stuck", "the gateway is shutting down")],
        )
        gentle.close(status="closed")  # its last response went out
        self.assertNoResult(done)
        self.clock.advance(5)
        self.assertEqual(told[-1], ("stuck", "the gateway is shutting down"))
        self.successResultOf(done)
        ends = self.audit.of("session.end")
        self.assertEqual(
            [(e["end"]["status"], e["end"]["error"]) for e in ends], [("terminated", "the gateway is shutting down")] * 3
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_end_remaining(self) -> None:
        """The last resort of a stop: sessions closed without their front ends, still terminated with the reason."""
        session = self.open()
        session.on_terminate = lambda reason: None  # a front end that never closes it
        self.successResultOf(self.service.end_remaining("the gateway is shutting down"))
        self.assertTrue(session.closed)
        [end] = self.audit.of("session.end")
        self.assertEqual((end["end"]["status"], end["end"]["error"]), ("terminated", "the gateway is shutting down"))

    def test_failed_recording_still_ends_session(self) -> None:
        """If the recording cannot be closed, session.end is still written and says why."""
        session = self.open()

        class BrokenRecorder(MemoryRecorder):
            def close(self):
                from twisted.internet.defer import fail

                return fail(OSError("disk full"))

        session.attach_recorder(BrokenRecorder())
        self.successResultOf(session.close())
        [record] = self.audit.of("session.end")
        self.assertEqual(record["end"]["recording_error"], "disk full")
        self.assertNotIn("recording_sha256", record["end"])
        self.flushLoggedErrors(OSError)

    def test_closed_session_refuses_actions(self) -> None:
        """If a session is closed, check() fails with NotPermitted."""
        session = self.open()
        session.close()
        self.failureResultOf(session.check(Action(kind="sql.query")), NotPermitted)


class OpenRecordingTests(SynchronousTestCase):
    """
    L{hoopgw.sessions.Session.open_recording}: the session owns the
    recordings folder, the files' names and modes, and adds what is
    recorded there to C{session.end}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.audit = MemoryAuditLog()
        self.folder = FilePath(self.mktemp()).child("recordings")
        self.folder.parent().makedirs()
        self.service = memory_session_service(audit=self.audit, clock=self.clock, recordings=Path(self.folder.path))

    def open(self):
        return self.successResultOf(self.service.open(ALICE, "db", kind="postgres", source=SOURCE))

    def asciicast(self, path: str, fd: int) -> AsciicastRecorder:
        recorder = AsciicastRecorder(path, fd=fd, clock=self.clock, width=80, height=24, flush_bytes=0)

        def close() -> None:
            if not recorder.closed:
                recorder.close()

        self.addCleanup(close)
        return recorder

    def memory(self, path: str, fd: int) -> MemoryRecorder:
        os.close(fd)
        return MemoryRecorder(path=path)

    def test_folder_made_private_once(self) -> None:
        """The service makes the recordings folder (mode 0700) when it is made, not per recording."""
        self.assertEqual(stat.S_IMODE(os.stat(self.folder.path).st_mode), 0o700)
        os.chmod(self.folder.path, 0o750)  # an operator's choice, after start-up: left alone
        self.open().open_recording(1, self.asciicast)
        self.assertEqual(stat.S_IMODE(os.stat(self.folder.path).st_mode), 0o750)

    def test_named_by_session_and_key(self) -> None:
        """A recording is C{<folder>/<session id>-<key><suffix>}: the names replay and bundles read today."""
        session = self.open()
        recorder = session.open_recording(3, self.asciicast)
        self.assertEqual(recorder.path, os.path.join(self.folder.path, f"{session.id}-3.cast"))
        other = session.open_recording("exec_1", self.memory, suffix=".log")
        self.assertEqual(other.path, os.path.join(self.folder.path, f"{session.id}-exec_1.log"))

    def test_private_file_written_through_fd(self) -> None:
        """The file is the gateway's alone (0600), and C{make}'s descriptor writes to it."""
        session = self.open()
        seen = []

        def make(path: str, fd: int) -> MemoryRecorder:
            seen.append((path, fd))
            os.write(fd, b"header\n")
            return MemoryRecorder(path=path)

        recorder = session.open_recording(7, make)
        [(path, fd)] = seen
        self.addCleanup(os.close, fd)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(recorder.path, path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"header\n")

    def test_existing_file_never_overwritten(self) -> None:
        """
        If the name is taken (a file left there, or the same key twice), the
        existing file is left as it is and the recording gets the next free
        name, C{<session>-<key>.<n><suffix>}.
        """
        session = self.open()
        taken = self.folder.child(f"{session.id}-1.cast")
        taken.setContent(b"evidence")
        first = session.open_recording(1, self.asciicast)
        second = session.open_recording(1, self.asciicast)
        self.assertEqual(taken.getContent(), b"evidence")
        self.assertEqual(
            [os.path.basename(first.path), os.path.basename(second.path)],
            [f"{session.id}-1.2.cast", f"{session.id}-1.3.cast"],
        )

    def test_registered_in_session_end(self) -> None:
        """
        The first recording opened is the session's recording and later ones
        are listed, each with the path and the SHA-256 of the file as written.
        """
        session = self.open()
        first = session.open_recording(1, self.asciicast)
        second = session.open_recording(2, self.asciicast)
        self.assertIs(session.recorder, first)
        self.assertEqual(session.recordings, [second])
        first.output(b"hello")
        self.clock.advance(1)
        self.successResultOf(session.close())
        [record] = self.audit.of("session.end")
        end = record["end"]

        def sha(path: str) -> str:
            with open(path, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()

        self.assertEqual((end["recording"], end["recording_sha256"]), (first.path, sha(first.path)))
        self.assertEqual(end["recordings"], [{"path": second.path, "sha256": sha(second.path)}])
        self.assertEqual(read_asciicast(first.path).output(), "hello")

    def test_no_folder_no_recording(self) -> None:
        """A service without a recordings folder keeps none: C{None}, C{make} not called, nothing added."""
        service = memory_session_service(clock=self.clock)
        session = self.successResultOf(service.open(ALICE, "db", kind="postgres", source=SOURCE))
        calls = []
        self.assertIsNone(session.open_recording(1, lambda path, fd: calls.append(path)))
        self.assertEqual(calls, [])
        self.assertIsNone(session.recorder)

    def test_make_fails(self) -> None:
        """If C{make} raises, the file is closed, nothing is added, and the error reaches the caller."""
        session = self.open()
        seen = []

        def make(path: str, fd: int) -> MemoryRecorder:
            seen.append(fd)
            raise ValueError("width must be a positive integer")

        self.assertRaises(ValueError, session.open_recording, 1, make)
        self.assertRaises(OSError, os.fstat, seen[0])
        self.assertIsNone(session.recorder)

    def test_names_stay_in_folder(self) -> None:
        """A key or suffix that is not part of one name (a path, C{..}) is refused before anything is made."""
        session = self.open()
        for key, suffix in (("../x", ".cast"), ("a/b", ".cast"), ("", ".cast"), ("1\n", ".cast"), (1, "/x"), (1, "cast")):
            self.assertRaises(ValueError, session.open_recording, key, self.asciicast, suffix=suffix)
        self.assertEqual(self.folder.listdir(), [])
