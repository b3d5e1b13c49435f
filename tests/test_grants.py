"""Just-in-time access grants: the service on a Clock, policy's grant condition, and the [[grant]] loader."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.errors import AuditUnavailable, ConfigError
from hoopgw.grants import GrantError, GrantService, GrantState
from hoopgw.model import Action, Connection, Identity, Source
from hoopgw.policy.loader import build_policy_set
from hoopgw.policy.service import PolicyService
from hoopgw.reviews import ReviewService
from hoopgw.store import MemoryStore
from hoopgw.testing import MemoryAuditLog, memory_session_service

ALICE = Identity("test", "alice", ("dev",))
BOB = Identity("test", "bob", ("dba",))
EVE = Identity("test", "eve", ("dev",))
DB = Connection("prod-db", "postgres", "127.0.0.1:5432")
OTHER = Connection("other", "postgres", "127.0.0.1:5433")

POLICY = b"""
[[rule]]
name = "sessions"
effect = "allow"
actions = ["session.open"]

[[rule]]
name = "reads"
effect = "allow"
actions = ["sql.select"]

[[rule]]
name = "writes-under-a-grant"
effect = "allow"
actions = ["sql.delete"]
grant = true

[[rule]]
name = "review-deletes"
effect = "review"
actions = ["sql.delete"]
grant = false
review.approvers = ["group:dba"]

[[grant]]
name = "prod-db-jit"
connections = ["prod-*"]
groups = ["dev"]
max_duration = "2h"
review.approvers = ["group:dba"]
"""


class _Log(MemoryAuditLog):
    """Refuses one kind of record, as a log that fails between two records."""

    refuse: str | None = None

    def append(self, event, body):
        if event == self.refuse:
            raise AuditUnavailable(f"audit log unavailable: {event} refused")
        return super().append(event, body)


class _StrictLog(_Log):
    """As with audit sync = "strict": the records in C{hold} are confirmed (or lost) later, by C{release}."""

    def __init__(self) -> None:
        super().__init__()
        self.hold: set[str] = set()
        self.waiting: list[tuple[str, Deferred]] = []

    def append(self, event, body):
        d = super().append(event, body)
        if event not in self.hold:
            return d
        synced: Deferred = Deferred()
        self.waiting.append((event, synced))
        return synced

    def release(self, event: str, error: Exception | None = None) -> None:
        [synced] = [w for e, w in self.waiting if e == event]
        self.waiting = [(e, w) for e, w in self.waiting if w is not synced]
        synced.callback(0) if error is None else synced.errback(error)


def policy() -> PolicyService:
    return PolicyService(build_policy_set([("policies/p.toml", POLICY)]))


class PolicyGrantTests(SynchronousTestCase):
    def test_grant_condition(self) -> None:
        policy_set = build_policy_set([("policies/p.toml", POLICY)])
        delete = Action("sql.delete", "DELETE FROM t")
        held = {("alice", "prod-db")}

        def holds(identity: Identity, connection: str) -> bool:
            return (identity.subject, connection) in held

        # Without a grant: the write is not allowed at all (the review rule only gates what an allow grants).
        self.assertEqual(policy_set.evaluate(EVE, "prod-db", delete, holds).effect.value, "deny")
        # Under a grant: allowed, and the review rule (grant = false) no longer applies.
        decision = policy_set.evaluate(ALICE, "prod-db", delete, holds)
        self.assertEqual((decision.effect.value, decision.rule), ("allow", "writes-under-a-grant"))
        # No one to ask: nobody holds a grant.
        self.assertEqual(policy_set.evaluate(ALICE, "prod-db", delete).effect.value, "deny")
        # A grant is for one connection.
        self.assertEqual(policy_set.evaluate(ALICE, "other", delete, holds).effect.value, "deny")

    def test_grant_rule_lookup(self) -> None:
        policy_set = build_policy_set([("policies/p.toml", POLICY)])
        rule = policy_set.grant_rule(ALICE, "prod-db")
        self.assertEqual((rule.name, rule.max_duration_seconds, rule.review.approvers), ("prod-db-jit", 7200, ("group:dba",)))
        self.assertIsNone(policy_set.grant_rule(BOB, "prod-db"))  # not in "dev"
        self.assertIsNone(policy_set.grant_rule(ALICE, "other"))

    def assertLoadError(self, text: str, message: str) -> None:
        error = self.assertRaises(ConfigError, build_policy_set, [("p.toml", text.encode())])
        self.assertEqual(str(error), message)

    def test_loader_errors(self) -> None:
        self.assertLoadError(
            '[[rule]]\nname = "r"\neffect = "allow"\ngrant = "yes"\n',
            'p.toml: rule[0] ("r").grant: expected true (only while the identity holds an access grant for the '
            "connection) or false (only while it holds none), got a string",
        )
        self.assertLoadError(
            '[[grant]]\nname = "g"\nconnections = ["db"]\n',
            'p.toml: grant[0] ("g").review.approvers: required for a grant; expected an array such as '
            '["group:dba", "user:alice"]',
        )
        self.assertLoadError(
            '[[grant]]\nname = "g"\nconnections = ["db"]\nreview.approvers = ["group:dba"]\nmax_duration = "forever"\n',
            'p.toml: grant[0] ("g").max_duration: expected a duration such as "30s", "15m", "2h", "1d" or "1h30m", '
            'got "forever"',
        )
        self.assertLoadError(
            '[[grant]]\nname = "g"\nreview.approvers = ["group:dba"]\n',
            'p.toml: grant[0] ("g").connections: required; expected an array of connection names or globs such as ["prod-*"]',
        )
        self.assertLoadError(
            '[[grant]]\nname = "g"\nconnections = ["db"]\nreview.approvers = ["group:dba"]\nduration = "1h"\n',
            'p.toml: grant[0] ("g").duration: unknown key; expected one of "connections", "groups", "max_duration", '
            '"name", "review", "users"; did you mean "max_duration"?',
        )
        self.assertLoadError(
            '[[grant]]\nname = "g"\nconnections = ["db"]\nreview.approvers = ["group:dba"]\n'
            '[[grant]]\nname = "g"\nconnections = ["x"]\nreview.approvers = ["group:dba"]\n',
            'p.toml: grant[1] ("g").name: duplicate grant name; expected a name not used elsewhere, '
            "already used by p.toml: grant[0]",
        )


class ServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.audit = _Log()
        self.store = MemoryStore()
        self.policy = policy()
        self.sessions = memory_session_service(
            connections=(DB, OTHER), audit=self.audit, policy=self.policy, clock=self.clock, store=self.store
        )
        self.reviews = ReviewService(store=self.store, append=self.sessions._append, clock=self.clock, gateway="gw")
        self.sessions.reviews = self.reviews
        self.grants = self.make_service()
        self.sessions.grants = self.grants
        self.policy.holds_grant = self.grants.holds

    def make_service(self) -> GrantService:
        return GrantService(
            store=self.store, append=self.sessions._append, clock=self.clock, policy=self.policy,
            reviews=self.reviews, connections=self.sessions.connections, gateway="gw", sessions=self.sessions,
        )

    def request(self, duration: int = 3600) -> dict:
        return self.successResultOf(self.grants.request(ALICE, "prod-db", duration, "INC-123"))

    def approve(self, grant: dict) -> None:
        self.successResultOf(self.reviews.approve(grant["review"], BOB, "go"))

    def open(self, identity: Identity = ALICE):
        return self.successResultOf(self.sessions.open(identity, "prod-db", kind="postgres", source=Source("postgres", "127.0.0.1:1")))

    def test_life_of_a_grant(self) -> None:
        session = self.open()
        delete = Action("sql.delete", "DELETE FROM t")
        self.assertFalse(self.successResultOf(session.check(delete)).allowed)
        grant = self.request()
        self.assertEqual(grant["state"], "pending")
        self.assertFalse(self.grants.holds(ALICE, "prod-db"))
        self.approve(grant)
        self.assertTrue(self.grants.holds(ALICE, "prod-db"))
        self.assertTrue(self.successResultOf(session.check(delete)).allowed)
        self.assertEqual(session.grant, grant["id"])
        self.clock.advance(3599)
        self.assertFalse(session.closed)
        self.clock.advance(1)
        self.assertFalse(self.grants.holds(ALICE, "prod-db"))
        self.assertTrue(session.closed)
        self.assertEqual(self.store.grants[grant["id"]]["state"], "expired")
        events = [e for e in self.audit.events() if e.startswith(("grant.", "review.", "session.end"))]
        self.assertEqual(events, ["grant.requested", "review.requested", "review.approved", "grant.approved", "grant.used",
                                  "grant.expired", "session.end"])
        end = self.audit.of("session.end")[-1]
        self.assertEqual(end["end"]["status"], "terminated")
        self.assertIn(f"grant {grant['id']} expired", end["end"]["error"])

    def test_requester_never_approves_and_outsiders_are_refused(self) -> None:
        grant = self.request()
        self.assertEqual(self.failureResultOf(self.reviews.approve(grant["review"], ALICE)).value.code, 403)
        self.assertEqual(self.failureResultOf(self.reviews.approve(grant["review"], EVE)).value.code, 403)
        self.assertFalse(self.grants.holds(ALICE, "prod-db"))

    def test_denied(self) -> None:
        grant = self.request()
        self.successResultOf(self.reviews.deny(grant["review"], BOB, "use the runbook"))
        self.assertEqual(self.store.grants[grant["id"]]["state"], "denied")
        self.assertFalse(self.grants.holds(ALICE, "prod-db"))
        self.assertEqual(self.audit.of("grant.denied")[0]["grant"]["decision"]["reason"], "use the runbook")

    def test_refused_requests_record_nothing(self) -> None:
        for args, code in (
            ((ALICE, "nope", 60, "x"), 404),
            ((BOB, "prod-db", 60, "x"), 403),  # no [[grant]] covers dba
            ((ALICE, "other", 60, "x"), 403),
            ((ALICE, "prod-db", 7201, "x"), 400),
            ((ALICE, "prod-db", 60, "  "), 400),
        ):
            self.assertEqual(self.failureResultOf(self.grants.request(*args)).value.code, code, args)
        self.assertEqual(self.audit.events(), [])
        self.request()
        error = self.failureResultOf(self.grants.request(ALICE, "prod-db", 60, "again")).value
        self.assertIsInstance(error, GrantError)
        self.assertEqual(error.code, 409)

    def test_revoked_by_an_approver_ends_sessions_at_once(self) -> None:
        grant = self.request()
        self.approve(grant)
        session = self.open()
        self.assertEqual(session.grant, grant["id"])
        self.assertEqual(self.failureResultOf(self.grants.revoke(grant["id"], EVE, "no")).value.code, 404)
        record = self.successResultOf(self.grants.revoke(grant["id"], BOB, "incident closed"))
        self.assertEqual(record["state"], "revoked")
        self.assertTrue(session.closed)
        self.assertFalse(self.grants.holds(ALICE, "prod-db"))
        self.assertEqual(self.failureResultOf(self.grants.revoke(grant["id"], BOB, "")).value.code, 409)
        self.assertIn("revoked by bob: incident closed", self.audit.of("session.end")[-1]["end"]["error"])

    def test_withdrawn_while_pending(self) -> None:
        grant = self.request()
        record = self.successResultOf(self.grants.revoke(grant["id"], ALICE, "not needed"))
        self.assertEqual(record["state"], "cancelled")
        self.assertEqual(self.store.reviews[grant["review"]]["state"], "cancelled")
        self.assertFalse(self.grants.holds(ALICE, "prod-db"))

    def test_sessions_that_never_used_it_stay(self) -> None:
        other = self.successResultOf(self.sessions.open(ALICE, "other", kind="postgres", source=Source("postgres", "127.0.0.1:1")))
        grant = self.request(60)
        self.approve(grant)
        self.clock.advance(60)
        self.assertFalse(other.closed)

    def test_fail_closed(self) -> None:
        """A grant whose activation the trail cannot hold is not active; a request it cannot hold is not made."""
        grant = self.request()
        self.audit.refuse = "grant.approved"
        self.approve(grant)  # the review's own approval is recorded
        self.assertFalse(self.grants.holds(ALICE, "prod-db"))
        self.assertEqual(self.store.grants[grant["id"]]["state"], "cancelled")
        self.flushLoggedErrors(AuditUnavailable)
        self.audit.break_with("disk full")
        self.failureResultOf(self.grants.request(EVE, "prod-db", 60, "x"), AuditUnavailable)

    def test_restart(self) -> None:
        grant = self.request(600)
        self.approve(grant)
        pending = self.successResultOf(self.grants.request(EVE, "prod-db", 60, "x"))
        self.grants.close()
        self.clock.advance(100)
        restarted = self.make_service()
        self.successResultOf(restarted.restore())
        self.assertTrue(restarted.holds(ALICE, "prod-db"))
        self.assertEqual(self.store.grants[pending["id"]]["state"], "cancelled")
        self.clock.advance(500)
        self.assertFalse(restarted.holds(ALICE, "prod-db"))
        self.assertEqual(self.store.grants[grant["id"]]["state"], "expired")
        # Past its window when the gateway comes back: expired at once.
        late = self.make_service()
        self.store.grants[grant["id"]]["state"] = "active"
        self.store.grants[grant["id"]]["document"]["state"] = "active"
        self.successResultOf(late.restore())
        self.assertEqual(self.store.grants[grant["id"]]["state"], "expired")
        self.assertEqual(GrantState(self.store.grants[pending["id"]]["state"]), GrantState.cancelled)

    def test_other_issuer_same_name_holds_nothing(self) -> None:
        """A grant is the identity's that asked: the same subject from another issuer neither holds nor revokes it."""
        grant = self.request()
        self.approve(grant)
        namesake = Identity("other-issuer", "alice", ("dev",))
        self.assertFalse(self.grants.holds(namesake, "prod-db"))
        self.assertEqual(self.failureResultOf(self.grants.revoke(grant["id"], namesake, "")).value.code, 404)

    def test_strangers_learn_nothing(self) -> None:
        """Revoking a grant one may not see answers 404, live or ended: no state, no approvers."""
        grant = self.request(60)
        error = self.failureResultOf(self.grants.revoke(grant["id"], EVE, "")).value
        self.assertEqual((error.code, "dba" in str(error)), (404, False))
        self.approve(grant)
        self.clock.advance(61)
        self.assertEqual(self.failureResultOf(self.grants.revoke(grant["id"], EVE, "")).value.code, 404)
        self.assertEqual(self.failureResultOf(self.grants.revoke(grant["id"], BOB, "")).value.code, 409)


class StrictLogTests(ServiceTests):
    """Records confirmed later (sync = "strict"): what happens in between."""

    def setUp(self) -> None:
        super().setUp()
        self.audit = self.sessions.audit = _StrictLog()

    def test_revoked_while_its_approval_is_made_durable(self) -> None:
        grant = self.request(600)
        self.audit.hold = {"grant.approved"}
        self.approve(grant)
        record = self.successResultOf(self.grants.revoke(grant["id"], BOB, "wrong grant"))
        self.assertEqual(record["state"], "revoked")
        self.audit.release("grant.approved")
        self.assertFalse(self.grants.holds(ALICE, "prod-db"))
        session = self.open()
        self.assertFalse(self.successResultOf(session.check(Action("sql.delete", "DELETE FROM t"))).allowed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_revocation_whose_record_is_lost_later_still_ends_access(self) -> None:
        grant = self.request(600)
        self.approve(grant)
        session = self.open()
        self.audit.hold = {"grant.revoked"}
        d = self.grants.revoke(grant["id"], BOB, "stop")
        self.audit.release("grant.revoked", AuditUnavailable("fdatasync failed"))
        error = self.failureResultOf(d, GrantError).value
        self.assertEqual(error.code, 503)
        self.assertIn("is revoked and its sessions ended", str(error))
        self.assertTrue(session.closed)
        self.assertFalse(self.grants.holds(ALICE, "prod-db"))
