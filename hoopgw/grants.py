"""
Just-in-time access grants: time-bound access to one connection that
policy otherwise withholds, asked for by the person who needs it, approved
like a review, and audited from request to end.

A grant's life::

    pending --review approved--> active --duration over--> expired
    pending --review denied----> denied        active --revoke--> revoked
    pending --review expired, cancelled, revoke----------------> cancelled

Who may ask for access to which connection, for how long at most, and who
approves, is a C{[[grant]]} of the policy (L{hoopgw.policy.rules.GrantRule});
the approval is a review (L{hoopgw.reviews}: the same approver rules, and
the requester never approves their own request).  Policy sees grants
through rules with C{grant = true} (only while the identity holds an active
grant for the connection) or C{grant = false}.

A session that acts while its identity holds a grant for its connection
depends on it (C{grant.used}, once per session): when the grant expires or
is revoked, those sessions are ended (the front end tells the client where
its protocol can).  Every step is an audit record (C{grant.requested},
C{grant.approved}, C{grant.denied}, C{grant.cancelled}, C{grant.used},
C{grant.expired}, C{grant.revoked}) written before it takes effect; a grant
whose approval cannot be recorded is not activated.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Callable, Mapping

from attrs import define, field
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.audit import events
from hoopgw.errors import AuditUnavailable, HoopgwError
from hoopgw.model import Identity
from hoopgw.policy.rules import GrantRule, ReviewRequirement
from hoopgw.reviews import Review, ReviewService, ReviewState, identity_record, short_id
from hoopgw.store._common import format_time, parse_time

__all__ = ["Grant", "GrantError", "GrantService", "GrantState", "describe_duration"]

log = Logger()


class GrantState(str, Enum):
    pending = "pending"
    active = "active"
    denied = "denied"
    cancelled = "cancelled"
    expired = "expired"
    revoked = "revoked"


class GrantError(HoopgwError):
    """A request the service refuses; C{code} is the HTTP status the API answers with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def describe_duration(seconds: int) -> str:
    """C{5400} -> C{"1h30m"}: how people write durations in the configuration."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


@define(eq=False)
class Grant:
    """One grant (module docstring); C{to_record} is what is stored, shown and audited."""

    id: str
    requester: Identity
    connection: str
    duration_seconds: int
    reason: str
    rule: str
    approvers: tuple[str, ...]
    created: float
    review: str = ""
    state: GrantState = GrantState.pending
    approved: float | None = None
    expires: float | None = None
    ended: float | None = None
    approval: dict[str, Any] | None = None  # who approved it (the review's last approver), and why
    decision: dict[str, Any] | None = None  # how it ended: who denied or revoked it and why, or what cancelled it
    sessions: list[str] = field(factory=list)  # the sessions that used it
    _timer: Any = field(default=None, repr=False)

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "state": self.state.value,
            "created": format_time(self.created, "created"),
            "requester": identity_record(self.requester),
            "connection": self.connection,
            "duration_seconds": self.duration_seconds,
            "reason": self.reason,
            "rule": self.rule,
            "approvers": list(self.approvers),
            "review": self.review,
            "sessions": list(self.sessions),
        }
        for key in ("approved", "expires", "ended"):
            value = getattr(self, key)
            if value is not None:
                record[key] = format_time(value, key)
        if self.approval is not None:
            record["approval"] = dict(self.approval)
        if self.decision is not None:
            record["decision"] = dict(self.decision)
        return record


#: Writes an audit record; fires with its seq (L{hoopgw.interfaces.IAuditLog.append}).
Append = Callable[[str, dict[str, Any]], Deferred[int]]


@define(eq=False)
class GrantService:
    """
    Asks for, activates, ends and answers questions about grants (module
    docstring).

    @ivar policy: the L{hoopgw.policy.PolicyService} (its C{[[grant]]} rules).
    @ivar reviews: the L{hoopgw.reviews.ReviewService} that approves requests.
    @ivar sessions: the L{hoopgw.sessions.SessionService} whose sessions a
        grant's end closes; set once both exist.
    """

    store: Any
    append: Append
    clock: IReactorTime
    policy: Any
    reviews: ReviewService
    connections: Mapping[str, Any]
    gateway: str = "hoopgw"
    sessions: Any = None
    _grants: dict[str, Grant] = field(factory=dict, init=False)  # pending and active, by id
    # Active grants by (issuer, subject, connection): the identity that asked, exactly.
    _active: dict[tuple[str, str, str], Grant] = field(factory=dict, init=False)

    # -- what policy and sessions ask ------------------------------------------

    def holds(self, identity: Identity, connection_name: str) -> bool:
        """Whether C{identity} holds an active grant for that connection now."""
        grant = self._active.get((identity.issuer, identity.subject, connection_name))
        return (
            grant is not None and grant.state is GrantState.active and grant.expires is not None
            and self.clock.seconds() < grant.expires
        )

    @property
    def any_active(self) -> bool:
        return bool(self._active)

    def attach(self, session: Any) -> None:
        """
        C{session} acts while its identity holds a grant for its connection:
        it depends on the grant from now on (ended with it), with a
        C{grant.used} record (once per session).
        """
        identity = session.identity
        grant = self._active.get((identity.issuer, identity.subject, session.connection.name))
        if grant is None or session.id in grant.sessions or not self.holds(session.identity, session.connection.name):
            return
        grant.sessions.append(session.id)
        session.grant = grant.id
        self._save(grant)
        d = self._record(events.GRANT_USED, grant, session=session.id)
        d.addErrback(lambda f: log.failure("grant.used not recorded for {id}", f, id=grant.id))

    # -- asking --------------------------------------------------------------------

    def request(self, identity: Identity, connection_name: str, duration_seconds: int, reason: str) -> Deferred[dict[str, Any]]:
        """
        Ask for access: checked against the policy's C{[[grant]]} rules, then
        C{grant.requested} is recorded and a review opened.  Fires with the
        grant's record (pending, naming its review); fails with
        L{GrantError} (nothing was recorded) or L{AuditUnavailable}.
        """
        try:
            rule = self._check_request(identity, connection_name, duration_seconds, reason)
        except GrantError:
            return fail()
        grant = Grant(
            id=short_id(lambda candidate: candidate in self._grants),
            requester=identity,
            connection=connection_name,
            duration_seconds=duration_seconds,
            reason=reason,
            rule=rule.name,
            approvers=rule.review.approvers,
            created=self.clock.seconds(),
            review=self.reviews.new_id(),
        )
        self._grants[grant.id] = grant
        d = self._record(events.GRANT_REQUESTED, grant)

        def requested(_: object) -> Deferred[Review]:
            return self.reviews.open(
                session="",
                action_id=f"grant/{grant.id}",
                requester=identity,
                connection=connection_name,
                action={
                    "kind": "grant.request",
                    "input": f"access to {connection_name} for {describe_duration(duration_seconds)}",
                    "details": {"grant": grant.id, "duration_seconds": duration_seconds},
                },
                rule=rule.name,
                requirement=rule.review,
                reason=reason,
                review_id=grant.review,
            )

        def opened(review: Review) -> dict[str, Any]:
            self._save(grant)
            review.wait().addCallback(self._reviewed, grant)
            return grant.to_record()

        def unopened(failure: Failure) -> Failure:
            self._grants.pop(grant.id, None)
            return failure

        return d.addCallback(requested).addCallbacks(opened, unopened)

    def _check_request(self, identity: Identity, connection_name: str, duration_seconds: int, reason: str) -> GrantRule:
        if connection_name not in self.connections:
            raise GrantError(404, f"no connection named {connection_name!r}")
        rule: GrantRule | None = self.policy.policy_set.grant_rule(identity, connection_name)
        if rule is None:
            raise GrantError(403, f"no [[grant]] rule of the policy lets {identity.subject} ask for access to {connection_name!r}")
        if duration_seconds < 1:
            raise GrantError(400, "duration: expected a positive duration such as \"30m\" or \"1h\"")
        if duration_seconds > rule.max_duration_seconds:
            raise GrantError(
                400,
                f"duration: at most {describe_duration(rule.max_duration_seconds)} on {connection_name!r} "
                f"(grant rule {rule.name!r}), got {describe_duration(duration_seconds)}",
            )
        if not reason.strip():
            raise GrantError(400, 'reason: required; say why (e.g. "INC-123: fix the stuck payments")')
        for grant in self._grants.values():
            if _same(grant.requester, identity) and grant.connection == connection_name:
                raise GrantError(409, f"you already have grant {grant.id} ({grant.state.value}) for {connection_name!r}")
        return rule

    def _reviewed(self, review: Review, grant: Grant) -> None:
        if grant.state is not GrantState.pending:
            return  # revoked (withdrawn) meanwhile: already ended
        if review.state is ReviewState.approved:
            now = self.clock.seconds()
            grant.approval = dict(review.decision or {})
            d = self._change(grant, events.GRANT_APPROVED, GrantState.active, {}, approved=now, expires=now + grant.duration_seconds)
            d.addCallbacks(lambda _: self._activate(grant), self._unrecorded, errbackArgs=(grant,))
            return
        state = GrantState.denied if review.state is ReviewState.denied else GrantState.cancelled
        event = events.GRANT_DENIED if state is GrantState.denied else events.GRANT_CANCELLED
        d = self._change(grant, event, state, {**(review.decision or {}), "review": review.state.value})
        d.addErrback(lambda f: log.failure("{event} not recorded for {id}", f, event=event, id=grant.id))

    def _unrecorded(self, failure: Failure, grant: Grant) -> None:
        # Access the trail cannot show was approved is never given.
        log.failure("grant {id} not activated: its approval is not recorded", failure, id=grant.id)
        d = self._change(grant, events.GRANT_CANCELLED, GrantState.cancelled, {"reason": "its approval could not be recorded"}, force=True)
        d.addErrback(lambda f: None)

    def _activate(self, grant: Grant) -> None:
        if grant.state is not GrantState.active or grant.expires is None:
            return  # revoked while its approval was being made durable
        key = _key(grant)
        self._active[key] = grant
        grant._timer = self.clock.callLater(max(0.0, grant.expires - self.clock.seconds()), self._expire, grant)

    # -- ending ----------------------------------------------------------------------

    def revoke(self, grant_id: str, by: Identity, reason: str) -> Deferred[dict[str, Any]]:
        """
        End a grant before its time (an active one: C{revoked}, its sessions
        ended; a pending one: C{cancelled}, its review withdrawn).  The
        requester may give up their own grant; otherwise only one of its
        approvers may revoke it; anyone else is told there is no such grant.
        """
        grant = self._grants.get(grant_id)
        if grant is None:
            stored: Deferred[dict[str, Any] | None] = self.store.get_grant(grant_id)
            return stored.addCallback(self._not_live, grant_id, by)
        if not (_same(by, grant.requester) or self._may_approve(grant, by)):
            return fail(GrantError(404, f"no grant {grant_id!r} you asked for or may approve"))
        decision = {"by": identity_record(by), "reason": reason}
        if grant.state is GrantState.pending:
            d = self._change(grant, events.GRANT_CANCELLED, GrantState.cancelled, decision)
            review = self.reviews._live.get(grant.review)
            if review is not None:
                d.addCallback(lambda record: self.reviews.cancel(review, "the grant request was withdrawn").addCallback(lambda _: record))
            return d
        d = self._change(grant, events.GRANT_REVOKED, GrantState.revoked, decision)
        if grant.state is not GrantState.revoked:
            return d  # the log refused the record at once: nothing was done
        why = f"grant {grant.id} was revoked by {by.subject}" + (f": {reason}" if reason else "")
        # Access ends even if the record is lost after it was accepted (the log then fails closed).
        d.addBoth(self._ended, grant, why)

        def unsynced(failure: Failure) -> Failure:
            failure.trap(AuditUnavailable)
            raise GrantError(503, f"grant {grant.id} is revoked and its sessions ended, but the audit log failed: {failure.value}")

        return d.addErrback(unsynced)

    def _not_live(self, record: Mapping[str, Any] | None, grant_id: str, by: Identity) -> dict[str, Any]:
        if record is None or not (_same(by, _requester(record)) or ReviewRequirement(
            approvers=tuple(record.get("approvers", ()))
        ).may_approve(by)):
            raise GrantError(404, f"no grant {grant_id!r} you asked for or may approve")
        raise GrantError(409, f"grant {grant_id} is already {record.get('state')}")

    def _may_approve(self, grant: Grant, identity: Identity) -> bool:
        return ReviewRequirement(approvers=grant.approvers).may_approve(identity)

    def _expire(self, grant: Grant) -> None:
        grant._timer = None
        if grant.state is not GrantState.active:
            return
        d = self._change(grant, events.GRANT_EXPIRED, GrantState.expired, {}, force=True)
        d.addBoth(self._ended, grant, f"grant {grant.id} expired")
        d.addErrback(lambda f: log.failure("grant.expired not recorded for {id}", f, id=grant.id))

    def _ended(self, result: Any, grant: Grant, reason: str) -> Any:
        """The sessions that depended on C{grant} end (whether or not its end could be recorded: access ends)."""
        if self.sessions is not None:
            for session_id in grant.sessions:
                session = self.sessions.active.get(session_id)
                if session is not None:
                    session.terminate(f"{reason}; the session depended on it")
        return result

    def _change(
        self, grant: Grant, event: str, state: GrantState, decision: dict[str, Any], *, force: bool = False, **times: float
    ) -> Deferred[dict[str, Any]]:
        """
        Record C{event} with the grant in its new state, then make the
        change.  A record that cannot be written stops a change people ask
        for; an end the gateway decides itself (C{force}: expiry) happens
        anyway, as access must end.
        """
        before = (grant.state, grant.approved, grant.expires, grant.ended, grant.decision)
        grant.state = state
        for key, value in times.items():
            setattr(grant, key, value)
        if state not in (GrantState.pending, GrantState.active):
            grant.ended = self.clock.seconds()
            grant.decision = {k: v for k, v in decision.items() if v} or None
        ending = state not in (GrantState.pending, GrantState.active)
        if ending:
            # The index first: a crash after the record must not bring the grant back at restart.
            self._save(grant)
        d = self._record(event, grant)
        refused: list[Failure] = []

        def keep(failure: Failure) -> Failure:
            refused.append(failure)
            return failure

        d.addErrback(keep)
        if refused and not force:
            grant.state, grant.approved, grant.expires, grant.ended, grant.decision = before
            if ending:
                self._save(grant)
            d.addErrback(lambda _: None)
            return fail(refused[0])
        if ending:
            self._grants.pop(grant.id, None)
            active_key = _key(grant)
            if self._active.get(active_key) is grant:
                del self._active[active_key]
            if grant._timer is not None and grant._timer.active():
                grant._timer.cancel()
            grant._timer = None
        self._save(grant)
        return d.addCallback(lambda _: grant.to_record())

    def _record(self, event: str, grant: Grant, *, session: str | None = None) -> Deferred[int]:
        body = events.grant(self.gateway, grant.to_record(), session=session)
        try:
            return self.append(event, body)
        except Exception:
            return fail()

    def _save(self, grant: Grant) -> None:
        d = self.store.grant_saved(grant.to_record())
        d.addErrback(lambda f: log.failure("grant {id} not stored", f, id=grant.id))

    # -- reading ---------------------------------------------------------------------

    def get(self, grant_id: str) -> Deferred[dict[str, Any] | None]:
        grant = self._grants.get(grant_id)
        return succeed(grant.to_record()) if grant is not None else self.store.get_grant(grant_id)

    def list(self, state: str | None = None, limit: int = 100) -> Deferred[list[dict[str, Any]]]:
        listed: Deferred[list[dict[str, Any]]] = self.store.list_grants(limit=limit, state=state)
        return listed

    # -- start and stop ----------------------------------------------------------------

    def restore(self) -> Deferred[None]:
        """
        At start-up: active grants still in their window are active again
        (their sessions are gone); those past it are marked expired, and
        requests left pending (their review was cancelled with the process)
        cancelled, each with its record.
        """
        now = self.clock.seconds()

        def grants(records: list[dict[str, Any]]) -> Deferred[None]:
            waits = []
            for record in records:
                grant = _from_record(record)
                if grant.id in self._grants:
                    continue
                self._grants[grant.id] = grant
                grant.sessions.clear()
                if grant.state is GrantState.active and grant.expires is not None and grant.expires > now:
                    self._activate(grant)
                elif grant.state is GrantState.active:
                    waits.append(self._change(grant, events.GRANT_EXPIRED, GrantState.expired, {}, force=True))
                else:
                    reason = "the gateway restarted; the request's review was cancelled"
                    waits.append(self._change(grant, events.GRANT_CANCELLED, GrantState.cancelled, {"reason": reason}, force=True))
            return gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

        d = gatherResults(
            [self.store.list_grants(limit=10_000, state=s.value) for s in (GrantState.active, GrantState.pending)],
            consumeErrors=True,
        )
        return d.addCallback(lambda lists: grants([r for records in lists for r in records]))

    def close(self) -> None:
        for grant in self._grants.values():
            if grant._timer is not None and grant._timer.active():
                grant._timer.cancel()
            grant._timer = None


def _same(one: Identity, other: Identity) -> bool:
    """The same identity: a grant is the identity's that asked (issuer and subject), not its namesake's."""
    return (one.issuer, one.subject) == (other.issuer, other.subject)


def _key(grant: Grant) -> tuple[str, str, str]:
    return (grant.requester.issuer, grant.requester.subject, grant.connection)


def _requester(record: Mapping[str, Any]) -> Identity:
    requester = record["requester"]
    return Identity(requester["issuer"], requester["subject"], tuple(requester.get("groups", ())))


def _from_record(record: Mapping[str, Any]) -> Grant:
    grant = Grant(
        id=record["id"],
        requester=_requester(record),
        connection=record["connection"],
        duration_seconds=int(record["duration_seconds"]),
        reason=record.get("reason", ""),
        rule=record.get("rule", ""),
        approvers=tuple(record.get("approvers", ())),
        created=parse_time(record["created"]),
        review=record.get("review", ""),
        state=GrantState(record["state"]),
        approval=record.get("approval"),
        decision=record.get("decision"),
        sessions=list(record.get("sessions", ())),
    )
    for key in ("approved", "expires", "ended"):
        if record.get(key):
            setattr(grant, key, parse_time(record[key]))
    return grant

