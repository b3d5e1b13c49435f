"""The review service's state machine on a Clock, and the session layer holding an action for it."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.errors import AuditUnavailable
from hoopgw.model import Action, Connection, Decision, Effect, Identity, Outcome, Source, Status
from hoopgw.policy.rules import ReviewRequirement
from hoopgw.reviews import AlreadyDecided, NotAnApprover, ReviewService, ReviewState, SelfApproval, UnknownReview
from hoopgw.store import MemoryStore
from hoopgw.testing import MemoryAuditLog, StaticPolicy, memory_session_service

ALICE = Identity("test", "alice", ("dev", "dba"))
BOB = Identity("test", "bob", ("dba",))
CAROL = Identity("test", "carol", ("dba",))
EVE = Identity("test", "eve", ("dev",))
DB = Connection("db", "postgres", "127.0.0.1:5432")
DBA = ReviewRequirement(approvers=("group:dba",), timeout_seconds=60, rules=("review-deletes",))


class ServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.audit = MemoryAuditLog()
        self.store = MemoryStore()
        self.reviews = ReviewService(store=self.store, append=self.audit.append, clock=self.clock, gateway="gw")

    def open(self, requirement: ReviewRequirement = DBA, timeout: int | None = None):
        return self.successResultOf(self.reviews.open(
            session="s1", action_id="s1/1", requester=ALICE, connection="db",
            action={"kind": "sql.delete", "input": "DELETE FROM t"}, rule="review-deletes",
            requirement=requirement, reason="deletes need a DBA", timeout=timeout,
        ))

    def test_a_front_end_that_cannot_wait_as_long(self) -> None:
        """A shorter limit (an HTTP connection's hold_timeout) expires the review then, and says so; never a longer one."""
        review = self.open(timeout=5)
        self.assertEqual(review.to_record()["timeout_seconds"], 5)
        self.clock.advance(5)
        self.assertEqual(review.state, ReviewState.expired)
        self.assertEqual(review.refusal(), f"review {review.id} expired after 5 s without enough approvals")
        self.assertEqual(self.open(timeout=600).timeout_seconds, 60)

    def test_approved(self) -> None:
        review = self.open()
        waiting = review.wait()
        self.assertNoResult(waiting)
        record = self.successResultOf(self.reviews.approve(review.id, BOB, "looks fine"))
        self.assertEqual(record["state"], "approved")
        self.assertIs(self.successResultOf(waiting), review)
        self.assertEqual(self.audit.events(), ["review.requested", "review.approved"])
        approved = self.audit.of("review.approved")[0]
        self.assertEqual((approved["review"]["decision"]["by"]["subject"], approved["review"]["decision"]["reason"]),
                         ("bob", "looks fine"))
        self.assertEqual(self.store.reviews[review.id]["state"], "approved")

    def test_requester_never_approves_even_as_an_approver(self) -> None:
        review = self.open()
        self.assertIsInstance(self.failureResultOf(self.reviews.approve(review.id, ALICE)).value, SelfApproval)
        self.assertIsInstance(self.failureResultOf(self.reviews.deny(review.id, ALICE, "no")).value, SelfApproval)
        self.assertEqual(self.audit.events(), ["review.requested"])

    def test_one_person_whatever_the_issuer(self) -> None:
        """The same subject from another issuer is the same person: not the requester's approver, not a second approval."""
        review = self.open(ReviewRequirement(approvers=("group:dba",), min_approvals=2, timeout_seconds=60))
        other = Identity("https://idp.example", "alice", ("dba",))
        self.assertIsInstance(self.failureResultOf(self.reviews.approve(review.id, other)).value, SelfApproval)
        self.successResultOf(self.reviews.approve(review.id, BOB))
        again = Identity("https://idp.example", "bob", ("dba",))
        self.assertIsInstance(self.failureResultOf(self.reviews.approve(review.id, again)).value, AlreadyDecided)
        self.assertTrue(review.pending)

    def test_outsider_refused_with_who_may(self) -> None:
        review = self.open()
        failure = self.failureResultOf(self.reviews.approve(review.id, EVE))
        self.assertIsInstance(failure.value, NotAnApprover)
        self.assertIn("group:dba", str(failure.value))

    def test_denied_expired_unknown_decided(self) -> None:
        review = self.open()
        self.successResultOf(self.reviews.deny(review.id, BOB, "not during the freeze"))
        self.assertEqual(review.state, ReviewState.denied)
        self.assertIn("not during the freeze", review.refusal())
        self.assertIsInstance(self.failureResultOf(self.reviews.approve(review.id, CAROL)).value, AlreadyDecided)
        self.assertIsInstance(self.failureResultOf(self.reviews.approve("nosuchid", CAROL)).value, UnknownReview)
        second = self.open()
        self.clock.advance(60)
        self.assertEqual(second.state, ReviewState.expired)
        self.assertEqual(self.audit.events()[-1], "review.expired")

    def test_two_distinct_approvers(self) -> None:
        review = self.open(ReviewRequirement(approvers=("group:dba",), min_approvals=2, timeout_seconds=60))
        self.successResultOf(self.reviews.approve(review.id, BOB))
        self.assertTrue(review.pending)
        self.assertIsInstance(self.failureResultOf(self.reviews.approve(review.id, BOB)).value, AlreadyDecided)
        self.successResultOf(self.reviews.approve(review.id, CAROL))
        self.assertEqual(review.state, ReviewState.approved)
        self.assertEqual([r["review"]["state"] for r in self.audit.of("review.approved")], ["pending", "approved"])

    def test_approve_and_expire_in_the_same_tick(self) -> None:
        review = self.open()
        self.clock.advance(59.999)
        self.successResultOf(self.reviews.approve(review.id, BOB))
        self.clock.advance(1)
        self.assertEqual(review.state, ReviewState.approved)
        self.assertEqual(self.audit.events(), ["review.requested", "review.approved"])
        late = self.open()
        self.clock.advance(60)
        self.assertIsInstance(self.failureResultOf(self.reviews.approve(late.id, BOB)).value, AlreadyDecided)

    def test_decide_after_cancel(self) -> None:
        review = self.open()
        self.successResultOf(self.reviews.cancel(review, "client went away"))
        self.assertIsInstance(self.failureResultOf(self.reviews.approve(review.id, BOB)).value, AlreadyDecided)
        self.assertEqual(self.audit.events(), ["review.requested", "review.cancelled"])

    def test_fail_closed(self) -> None:
        """An approval the trail cannot hold is not taken; an unrecordable request is never opened."""
        review = self.open()
        self.audit.break_with("disk full")
        self.assertIsInstance(self.failureResultOf(self.reviews.approve(review.id, BOB)).value, AuditUnavailable)
        self.assertTrue(review.pending)
        self.failureResultOf(self.reviews.open(
            session="s1", action_id="s1/2", requester=ALICE, connection="db", action={"kind": "k", "input": "i"},
            rule="r", requirement=DBA,
        ), AuditUnavailable)

    def test_orphans_cancelled_at_start(self) -> None:
        review = self.open()
        restarted = ReviewService(store=self.store, append=self.audit.append, clock=self.clock, gateway="gw")
        self.assertEqual(self.successResultOf(restarted.cancel_orphans()), [review.id])
        self.assertEqual(self.store.reviews[review.id]["state"], "cancelled")
        self.assertIn("restarted", self.audit.of("review.cancelled")[0]["review"]["decision"]["reason"])


class HeldActionTests(SynchronousTestCase):
    """Session.check holding an action policy sends to review."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.audit = MemoryAuditLog()
        self.policy = StaticPolicy(decisions={"sql.delete": Decision(Effect.review, "review-deletes", "deletes need a DBA", DBA)})
        self.sessions = memory_session_service(connections=(DB,), audit=self.audit, policy=self.policy, clock=self.clock)
        self.sessions.reviews = ReviewService(store=MemoryStore(), append=self.sessions._append, clock=self.clock)
        self.session = self.successResultOf(self.sessions.open(ALICE, "db", kind="postgres", source=Source("postgres", "127.0.0.1:1")))

    def test_held_until_approved(self) -> None:
        held = []
        d = self.session.check(Action("sql.delete", "DELETE FROM t"), on_held=held.append)
        self.assertNoResult(d)
        [review] = held
        start = self.audit.of("action.start")[-1]
        self.assertEqual(start["decision"]["review"], review.id)
        self.successResultOf(self.sessions.reviews.approve(review.id, BOB))
        handle = self.successResultOf(d)
        self.assertTrue(handle.allowed)
        self.successResultOf(handle.finish(Outcome(status=Status.succeeded)))
        self.assertEqual(self.audit.of("action.end")[-1]["outcome"]["review"], review.id)

    def test_denied_is_blocked_with_the_reason(self) -> None:
        held = []
        d = self.session.check(Action("sql.delete", "DELETE FROM t"), on_held=held.append)
        self.successResultOf(self.sessions.reviews.deny(held[0].id, BOB, "not now"))
        handle = self.successResultOf(d)
        self.assertFalse(handle.allowed)
        end = self.audit.of("action.end")[-1]["outcome"]
        self.assertEqual(end["status"], "blocked")
        self.assertIn("not now", end["error"])

    def test_session_close_cancels(self) -> None:
        d = self.session.check(Action("sql.delete", "DELETE FROM t"), on_held=lambda review: None)
        self.successResultOf(self.session.close())
        self.assertFalse(self.successResultOf(d).allowed)
        self.assertIn("review.cancelled", self.audit.events())

    def test_a_front_end_that_cannot_hold_gets_a_refusal(self) -> None:
        handle = self.successResultOf(self.session.check(Action("sql.delete", "DELETE FROM t")))
        self.assertFalse(handle.allowed)
        self.assertNotIn("review.requested", self.audit.events())

    def test_without_a_review_service_refused(self) -> None:
        self.sessions.reviews = None
        handle = self.successResultOf(self.session.check(Action("sql.delete", "DELETE FROM t")))
        self.assertFalse(handle.allowed)
