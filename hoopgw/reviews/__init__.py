"""
Human approval of one action: a request that holds a statement, command or
HTTP request until approvers decide, built on the store and the audit
trail, with no protocol knowledge (the session layer holds the action, the
front end tells its client).

A request is a small state machine::

    pending --approve (enough distinct approvers)--> approved
    pending --deny----------------------------------> denied
    pending --timeout-------------------------------> expired
    pending --cancel (client gone, Ctrl-C, restart)-> cancelled

Every transition, and every approval, is one audit record in the chain
(C{review.requested}, C{review.approved}, C{review.denied},
C{review.expired}, C{review.cancelled}) written *before* the transition
takes effect: a decision the trail cannot hold is not taken (fail closed),
and the held action runs only once the approving record is in the log.
Time is the injected clock's.
"""

from __future__ import annotations

import builtins
import secrets
from enum import Enum
from typing import Any, Callable, Mapping

from attrs import define, field
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.audit import events
from hoopgw.errors import HoopgwError
from hoopgw.model import Identity
from hoopgw.store._common import format_time

__all__ = [
    "AlreadyDecided",
    "NotAnApprover",
    "Review",
    "ReviewError",
    "ReviewService",
    "ReviewState",
    "SelfApproval",
    "UnknownReview",
]

log = Logger()

_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud, typed by hand


class ReviewState(str, Enum):
    pending = "pending"
    approved = "approved"
    denied = "denied"
    expired = "expired"
    cancelled = "cancelled"


class ReviewError(HoopgwError):
    """A decision the service refuses; C{code} is the HTTP status the API answers with."""

    code = 400


class UnknownReview(ReviewError):
    code = 404


class AlreadyDecided(ReviewError):
    code = 409


class SelfApproval(ReviewError):
    code = 403


class NotAnApprover(ReviewError):
    code = 403


def short_id(taken: Callable[[str], bool]) -> str:
    """Eight letters and digits, easy to read aloud and type, that C{taken} does not refuse."""
    while True:
        candidate = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
        if not taken(candidate):
            return candidate


def identity_record(identity: Identity) -> dict[str, Any]:
    return {"issuer": identity.issuer, "subject": identity.subject, "groups": list(identity.groups)}


@define(eq=False)
class Review:
    """One request for approval (module docstring); C{to_record} is what is stored and shown."""

    id: str
    session: str
    action_id: str
    requester: Identity
    connection: str
    action: Mapping[str, Any]  # the action's audited form: kind and input (masked as the trail stores it)
    rule: str | None
    requirement: Any  # hoopgw.policy.rules.ReviewRequirement
    reason: str
    created: float
    expires: float
    # The requirement's timeout, or less where the protocol cannot wait as long (an HTTP connection's hold_timeout).
    timeout_seconds: int = 0
    state: ReviewState = ReviewState.pending
    decided: float | None = None
    approvals: list[dict[str, Any]] = field(factory=list)
    decision: dict[str, Any] | None = None  # who decided and why (deny), or why it ended (expire, cancel)
    _waiters: list[Deferred[Review]] = field(factory=list, repr=False)
    _timer: Any = field(default=None, repr=False)

    @property
    def pending(self) -> bool:
        return self.state is ReviewState.pending

    def wait(self) -> Deferred["Review"]:
        """Fires with this review once it is decided (at once if it is)."""
        if not self.pending:
            return succeed(self)
        d: Deferred[Review] = Deferred()
        self._waiters.append(d)
        return d

    def _release(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self)

    def refusal(self) -> str:
        """Why the held action does not run (a denied, expired or cancelled review), for the client and the trail."""
        decision = self.decision or {}
        reason = decision.get("reason")
        by = decision.get("by", {}).get("subject")
        if self.state is ReviewState.denied:
            text = f"review {self.id} was denied by {by}"
            return f"{text}: {reason}" if reason else text
        if self.state is ReviewState.expired:
            return f"review {self.id} expired after {self.timeout_seconds} s without enough approvals"
        return f"review {self.id} was cancelled: {reason}" if reason else f"review {self.id} was cancelled"

    def to_record(self) -> dict[str, Any]:
        requirement = self.requirement
        record: dict[str, Any] = {
            "id": self.id,
            "state": self.state.value,
            "created": format_time(self.created, "created"),
            "expires": format_time(self.expires, "expires"),
            "session": self.session,
            "requester": identity_record(self.requester),
            "connection": self.connection,
            "action": {"id": self.action_id, **self.action},
            "rule": self.rule,
            "rules": list(requirement.rules) or ([self.rule] if self.rule else []),
            "approvers": list(requirement.approvers),
            "min_approvals": requirement.min_approvals,
            "timeout_seconds": self.timeout_seconds,
            "reason": self.reason,
            "approvals": list(self.approvals),
        }
        if self.decided is not None:
            record["decided"] = format_time(self.decided, "decided")
        if self.decision is not None:
            record["decision"] = dict(self.decision)
        return record


#: Writes an audit record; fires with its seq (L{hoopgw.interfaces.IAuditLog.append}).
Append = Callable[[str, dict[str, Any]], Deferred[int]]


@define(eq=False)
class ReviewService:
    """
    Opens, decides and ends reviews (module docstring).

    @ivar store: an L{hoopgw.interfaces.IStore} (C{review_saved},
        C{list_reviews}, C{get_review}).
    @ivar append: writes an audit record (C{event, body -> Deferred}),
        failing with L{hoopgw.errors.AuditUnavailable} when the log cannot.
    """

    store: Any
    append: Append
    clock: IReactorTime
    gateway: str = "hoopgw"
    # Called with each review once it is open (notifications hang here); an error is logged, never raised.
    observers: list[Callable[[Review], object]] = field(factory=list)
    _live: dict[str, Review] = field(factory=dict, init=False)  # pending reviews, by id

    # -- opening -----------------------------------------------------------------

    def new_id(self) -> str:
        """An id no pending review has (the held action's record names it before the review opens)."""
        return short_id(self._live.__contains__)

    def open(
        self,
        *,
        session: str,
        action_id: str,
        requester: Identity,
        connection: str,
        action: Mapping[str, Any],
        rule: str | None,
        requirement: Any,
        reason: str = "",
        review_id: str | None = None,
        timeout: int | None = None,
    ) -> Deferred[Review]:
        """
        Open a pending review: its C{review.requested} record first (a
        failure to write it fails the returned Deferred: the action must be
        refused), then the store, then the expiry timer.

        @param timeout: seconds before it expires, if the front end cannot
            wait as long as C{requirement.timeout_seconds}.
        """
        now = self.clock.seconds()
        seconds = requirement.timeout_seconds if timeout is None else max(1, min(timeout, requirement.timeout_seconds))
        review = Review(
            id=review_id or self.new_id(),
            session=session,
            action_id=action_id,
            requester=requester,
            connection=connection,
            action=dict(action),
            rule=rule,
            requirement=requirement,
            reason=reason,
            created=now,
            expires=now + seconds,
            timeout_seconds=seconds,
        )
        d = self._record(events.REVIEW_REQUESTED, review)

        def opened(_: object) -> Review:
            self._live[review.id] = review
            review._timer = self.clock.callLater(seconds, self._expire, review)
            self._save(review)
            for observer in self.observers:
                try:
                    observer(review)
                except Exception:
                    log.failure("a review observer failed on {id}", id=review.id)
            return review

        return d.addCallback(opened)

    # -- deciding ------------------------------------------------------------------

    def _find(self, review_id: str) -> Deferred[Review]:
        review = self._live.get(review_id)
        if review is not None:
            return succeed(review)

        def stored(record: Mapping[str, Any] | None) -> Review:
            if record is None:
                raise UnknownReview(f"no review {review_id!r}")
            raise AlreadyDecided(f"review {review_id} is already {record.get('state')}")

        record: Deferred[dict[str, Any] | None] = self.store.get_review(review_id)
        return record.addCallback(stored)

    def approve(self, review_id: str, approver: Identity, reason: str = "") -> Deferred[dict[str, Any]]:
        """
        Count C{approver}'s approval; the review is approved once every
        part of its requirement has enough distinct approvers.  Fires with
        the review's record; fails with a L{ReviewError} (or
        L{hoopgw.errors.AuditUnavailable}: nothing was decided).
        """
        return self._find(review_id).addCallback(self._approve, approver, reason)

    def _approve(self, review: Review, approver: Identity, reason: str) -> Deferred[dict[str, Any]]:
        self._check_decider(review, approver)
        # One person, one approval: by subject, as policy's user: entries name people (whatever the issuer).
        if any(a["by"]["subject"] == approver.subject for a in review.approvals):
            raise AlreadyDecided(f"you have already approved review {review.id}")
        approval = {"by": identity_record(approver), "at": format_time(self.clock.seconds(), "at")}
        if reason:
            approval["reason"] = reason
        identities = [Identity(a["by"]["issuer"], a["by"]["subject"], tuple(a["by"]["groups"])) for a in review.approvals]
        done = review.requirement.satisfied_by([*identities, approver])
        extra = {"approval": approval, "approvals": len(review.approvals) + 1}
        if done:
            return self._transition(review, events.REVIEW_APPROVED, ReviewState.approved, {"by": approval["by"], "reason": reason}, extra, approval)
        # Not enough yet: the approval is recorded, the review stays pending.
        d = self._append_checked(events.REVIEW_APPROVED, review, extra, state=ReviewState.pending)
        if isinstance(d, Failure):
            return fail(d)
        review.approvals.append(approval)
        self._save(review)
        return d.addCallback(lambda _: review.to_record())

    def deny(self, review_id: str, approver: Identity, reason: str) -> Deferred[dict[str, Any]]:
        """Deny the review (one approver suffices); fires with its record."""

        def denied(review: Review) -> Deferred[dict[str, Any]]:
            self._check_decider(review, approver)
            return self._transition(
                review, events.REVIEW_DENIED, ReviewState.denied, {"by": identity_record(approver), "reason": reason}, {}, None
            )

        return self._find(review_id).addCallback(denied)

    def cancel(self, review: Review, reason: str) -> Deferred[None]:
        """End a pending review whose action nobody waits for any more (the client left, Ctrl-C, the session closed)."""
        if not review.pending:
            return succeed(None)
        d = self._transition(review, events.REVIEW_CANCELLED, ReviewState.cancelled, {"reason": reason}, {}, None, force=True)
        return d.addCallback(lambda _: None)

    def cancel_session(self, session: str, reason: str) -> None:
        """Cancel every pending review of a session that ended."""
        for review in [r for r in self._live.values() if r.session == session]:
            self.cancel(review, reason).addErrback(lambda f: log.failure("review.cancelled not recorded", f))

    def _expire(self, review: Review) -> None:
        review._timer = None
        if review.pending:
            d = self._transition(review, events.REVIEW_EXPIRED, ReviewState.expired, {"reason": "timeout"}, {}, None, force=True)
            d.addErrback(lambda f: log.failure("review.expired not recorded for {id}", f, id=review.id))

    def _check_decider(self, review: Review, identity: Identity) -> None:
        if not review.pending:
            raise AlreadyDecided(f"review {review.id} is already {review.state.value}")
        if identity.subject == review.requester.subject:
            raise SelfApproval(f"you requested review {review.id}: a requester never decides their own request")
        if not review.requirement.may_approve(identity):
            raise NotAnApprover(
                f"you are not an approver of review {review.id}: it needs "
                + " or ".join(review.requirement.approvers)
            )

    def _transition(
        self,
        review: Review,
        event: str,
        state: ReviewState,
        decision: dict[str, Any],
        extra: dict[str, Any],
        approval: dict[str, Any] | None,
        *,
        force: bool = False,
    ) -> Deferred[dict[str, Any]]:
        """
        Write the record of a review leaving C{pending}, then change its
        state and release the action waiting on it.  If the record cannot
        be written: a decision (approve, deny) is not taken; an end the
        gateway decides itself (expire, cancel; C{force}) happens anyway,
        and the action is refused -- it never runs without its record.
        """
        d = self._append_checked(event, review, extra, state=state, decision=decision)
        if isinstance(d, Failure):
            if not force:
                return fail(d)
            d = fail(d)
        if approval is not None:
            review.approvals.append(approval)
        review.state = state
        review.decided = self.clock.seconds()
        review.decision = {k: v for k, v in decision.items() if v}
        self._live.pop(review.id, None)
        if review._timer is not None and review._timer.active():
            review._timer.cancel()
        review._timer = None
        self._save(review)

        def recorded(_: object) -> dict[str, Any]:
            review._release()
            return review.to_record()

        def unrecorded(failure: Failure) -> Failure:
            # The approving record is not in the log: the action must not run.
            if review.state is ReviewState.approved:
                review.state = ReviewState.cancelled
                review.decision = {"reason": "the audit log could not record the approval"}
            review._release()
            return failure

        return d.addCallbacks(recorded, unrecorded)

    def _append_checked(self, event: str, review: Review, extra: dict[str, Any], **change: Any) -> Deferred[int] | Failure:
        """Append a record about C{review}; a L{Failure} if the log refused it at once, else its Deferred."""
        d = self._record(event, review, extra, **change)
        refused: list[Failure] = []

        def keep(failure: Failure) -> Failure:
            refused.append(failure)
            return failure

        d.addErrback(keep)
        if refused:
            d.addErrback(lambda _: None)
            return refused[0]
        return d

    def _record(self, event: str, review: Review, extra: Mapping[str, Any] | None = None, **change: Any) -> Deferred[int]:
        record = review.to_record()
        if "state" in change:
            record["state"] = change["state"].value
        if change.get("decision"):
            record["decision"] = {k: v for k, v in change["decision"].items() if v}
        body = events.review(self.gateway, review.session, record, extra)
        try:
            return self.append(event, body)
        except Exception:
            return fail()

    def _save(self, review: Review) -> None:
        d = self.store.review_saved(review.to_record())
        d.addErrback(lambda f: log.failure("review {id} not stored", f, id=review.id))

    # -- reading -------------------------------------------------------------------

    def get(self, review_id: str) -> Deferred[dict[str, Any] | None]:
        review = self._live.get(review_id)
        if review is not None:
            return succeed(review.to_record())
        record: Deferred[dict[str, Any] | None] = self.store.get_review(review_id)
        return record

    def list(self, state: str | None = None, limit: int = 100) -> Deferred[list[dict[str, Any]]]:
        records: Deferred[list[dict[str, Any]]] = self.store.list_reviews(limit=limit, state=state)
        return records

    # -- start and stop ------------------------------------------------------------------

    # (builtins.list: in this class body's signatures, "list" is the method above.)
    def cancel_orphans(self) -> Deferred[builtins.list[str]]:
        """
        At start-up: every review the store holds as pending belongs to a
        session of a previous process, which is gone; each is marked
        cancelled, with its record.
        """

        def save(_: object, record: dict[str, Any]) -> Deferred[None]:
            saved: Deferred[None] = self.store.review_saved(record)
            return saved

        def cancel(records: list[dict[str, Any]]) -> Deferred[list[str]]:
            ids: list[str] = []
            waits: list[Deferred[None]] = []
            for record in records:
                if record["id"] in self._live:
                    continue
                ids.append(record["id"])
                record = dict(record)
                record["state"] = ReviewState.cancelled.value
                record["decided"] = format_time(self.clock.seconds(), "decided")
                record["decision"] = {"reason": "the gateway restarted; the session that waited for it is gone"}
                body = events.review(self.gateway, record["session"], record)
                try:
                    d = self.append(events.REVIEW_CANCELLED, body)
                except Exception:
                    d = fail()
                waits.append(d.addCallback(save, record))
            return gatherResults(waits, consumeErrors=True).addCallback(lambda _: ids)

        pending: Deferred[list[dict[str, Any]]] = self.store.list_reviews(
            limit=10_000, state=ReviewState.pending.value
        )
        return pending.addCallback(cancel)

    def close(self, reason: str = "the gateway is stopping") -> None:
        for review in list(self._live.values()):
            self.cancel(review, reason).addErrback(lambda f: None)
