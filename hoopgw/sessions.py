"""
The pipeline every protocol front end shares (docs/architecture.md).

A front end authenticates a client through L{SessionService}, opens a
L{Session} on a named connection, and for each sub-task calls
L{Session.check}; only when the returned L{ActionHandle} says the action is
allowed does it forward the action, and it reports how the action ended with
L{ActionHandle.finish}.  The C{action.start} record is handed to the OS
before C{check}'s Deferred fires, so a gateway killed at any point never has
forwarded an action it has not logged.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar, cast

from attrs import define, field
from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgw.audit import events
from hoopgw.errors import AuditUnavailable, AuthenticationFailed, NotPermitted, WrongKind
from hoopgw.interfaces import (
    IActionHandle,
    IAuditLog,
    IIdentityVerifier,
    IMetrics,
    IPolicy,
    IRecorder,
    ISession,
    ISessionService,
    IStore,
)
from hoopgw.masking.service import SessionMasks
from hoopgw.model import Action, Connection, Decision, Effect, Identity, Outcome, Source, Status
from hoopgw.recording.asciicast import RECORDING_FLAGS, RECORDING_MODE

if TYPE_CHECKING:
    from hoopgw.grants import GrantService
    from hoopgw.masking.service import MaskingService
    from hoopgw.reviews import Review, ReviewService

log = Logger()

# The rule named by refusals that are the gateway's own, not policy's.
GATEWAY_RULE = "hoopgw"
# The decision of an observation: recorded, never enforced.
OBSERVED = Decision(effect=Effect.allow, rule=None, message="observed: recorded, never enforced")

_REVIEW_UNAVAILABLE = (
    "needs review by {approvers} (rule {rule}); this gateway cannot hold actions "
    "for review yet, so it is refused"
)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _printable(value: Any) -> Any:
    """C{value} with every lone surrogate replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, Mapping):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(v) for v in value]
    return value


# A JWT's shape: three base64url parts, long enough to be one.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


def _credential_sha256(credential: str) -> str | None:
    """
    What the trail keeps of a refused credential: its SHA-256 if it has a
    token's shape (to match against a leaked token), else nothing: a user
    who typed a password where the token goes would leave a hash an
    auditor's laptop reverses in seconds.
    """
    if _TOKEN_SHAPE.fullmatch(credential) is None:
        return None
    return hashlib.sha256(credential.encode("utf-8", "surrogatepass")).hexdigest()


def _elapsed_us(clock: IReactorTime, since: float) -> int:
    return int((clock.seconds() - since) * 1_000_000)


_V = TypeVar("_V")
# What L{_fired} returns for a Deferred that has not fired with a value.
_PENDING: Any = object()


def _fired(d: Deferred[_V]) -> _V:
    """
    The value C{d} has already fired with (a policy's decision, a record's
    seq: almost always at once), so that the immediate path needs no
    callbacks; L{_PENDING} when something waits (a review, a strict sync)
    or C{d} failed: then the caller chains on C{d}, which keeps its result.
    """
    # (Called and not paused: every callback it had has run.)
    if d.called and not d.paused:
        result = d.result
        if not isinstance(result, (Failure, Deferred)):
            return cast(_V, result)
    return cast(_V, _PENDING)


def _later(result: _V | Deferred[_V]) -> Deferred[_V]:
    """C{result} as a Deferred: the one a result that waits already is, or one fired with it."""
    return result if isinstance(result, Deferred) else succeed(result)


def _refusal(decision: Decision) -> Decision:
    """
    Without a review service, an action that needs review is refused (fail
    closed), with a message that says why.
    """
    if decision.effect is not Effect.review:
        return decision
    review = decision.review
    approvers = ", ".join(getattr(review, "approvers", ())) or "an approver"
    message = _REVIEW_UNAVAILABLE.format(approvers=approvers, rule=decision.rule)
    return Decision(effect=Effect.review, rule=decision.rule, message=message, review=review)


def _host(address: str) -> str:
    """
    Whom a L{Source} address counts as: its host ("10.0.0.5:50412" ->
    "10.0.0.5"), or for IPv6 its /64, which one client typically holds
    whole (counting its addresses apart would give it 2**64 budgets).
    """
    if address.startswith("["):
        host = address[1 : address.find("]")]
        try:
            return str(ipaddress.IPv6Network(f"{host}/64", strict=False))
        except ValueError:
            return host
    host, sep, _ = address.rpartition(":")
    return host if sep else address


@define
class _Window:
    """One host's failures in the current window of a L{FailureLimiter}."""

    started: float
    timer: IDelayedCall  # ends the window
    failures: int = 0
    suppressed: int = 0
    protocols: set[str] = field(factory=set)


@define
class FailureLimiter:
    """
    Caps C{auth.failed} records per client host: the first C{limit} in a
    C{window} are written one by one; the rest are counted and written as
    one C{auth.failed.suppressed} record when the window ends.  A client
    guessing tokens in a loop cannot fill the audit disk, and the trail
    still says how many attempts there were.  At most C{hosts} hosts are
    tracked at once; beyond that every other host shares one budget ("*").
    And at most C{total} records are written per window whoever sends them,
    so many hosts together cannot fill the disk either.
    """

    clock: IReactorTime
    #: Called with (host, protocols, suppressed, failures, window_s, since_us) at a window's end.
    write: Callable[[str, set[str], int, int, int, int], object]
    limit: int = 20
    window: float = 60.0
    hosts: int = 10_000
    total: int = 1_000
    _windows: dict[str, _Window] = field(factory=dict, init=False)
    _written: int = field(default=0, init=False)
    _written_since: float = field(default=0.0, init=False)

    def admit(self, source: Source) -> bool:
        """C{True}: write this failure's record; C{False}: it was counted."""
        now = self.clock.seconds()
        if now - self._written_since >= self.window:
            self._written, self._written_since = 0, now
        host = _host(source.address)
        entry = self._windows.get(host)
        if entry is None:
            if len(self._windows) >= self.hosts:
                host = "*"
                entry = self._windows.get(host)
            if entry is None:
                entry = _Window(self.clock.seconds(), self.clock.callLater(self.window, self._end, host))
                self._windows[host] = entry
        entry.failures += 1
        if entry.failures <= self.limit and self._written < self.total:
            self._written += 1
            return True
        entry.suppressed += 1
        entry.protocols.add(source.protocol)
        return False

    def _end(self, host: str) -> None:
        entry = self._windows.pop(host)
        failures, suppressed, protocols, started = entry.failures, entry.suppressed, entry.protocols, entry.started
        if suppressed:
            self.write(host, protocols, suppressed, failures, int(self.window), int(started * 1_000_000))

    def flush(self) -> None:
        """Write every pending count now (the gateway is stopping)."""
        for host, entry in list(self._windows.items()):
            if entry.timer.active():
                entry.timer.cancel()
            self._end(host)


@implementer(ISessionService)
@define
class SessionService:
    """
    Authentication, session admission and the action pipeline, over the
    shared services.  Knows nothing of any wire protocol.
    """

    audit: IAuditLog
    policy: IPolicy
    identity: IIdentityVerifier
    store: IStore
    connections: Mapping[str, Connection]
    clock: IReactorTime
    metrics: IMetrics
    gateway: str = "hoopgw"
    # Builds each session's masks (hoopgw.masking.service); None: no masking.
    masking: MaskingService | None = None
    # Holds actions for human approval (hoopgw.reviews); None: review rules refuse.
    reviews: ReviewService | None = None
    # Just-in-time access grants (hoopgw.grants): a session that acts under one ends with it.
    grants: GrantService | None = None
    # The folder of the sessions' recordings (Session.open_recording), made
    # (mode 0700) when the service is; None: sessions record nothing.
    recordings: Path | None = None
    _active: dict[str, Session] = field(factory=dict, init=False)
    _closing: bool = field(default=False, init=False)
    failures: FailureLimiter = field(init=False)
    # Refused requests of clients with no verified identity: a budget of
    # their own, so that refusals do not use up the one of failed logins.
    refusals: FailureLimiter = field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.recordings is not None:
            # Once, at start-up: no recording is opened on the reactor thread with a mkdir first.
            self.recordings.mkdir(mode=0o700, exist_ok=True)
        self.failures = FailureLimiter(self.clock, partial(self._suppressed, events.AUTH_FAILED_SUPPRESSED))
        self.refusals = FailureLimiter(self.clock, partial(self._suppressed, events.REQUEST_REFUSED_SUPPRESSED))

    def _suppressed(self, event: str, *counts: Any) -> None:
        d = self._append(event, events.suppressed(self.gateway, *counts))
        d.addErrback(lambda f: log.failure("{event} record lost", f, event=event))

    @property
    def active(self) -> Mapping[str, ISession]:
        return self._active

    def _append(self, event: str, body: dict[str, Any]) -> Deferred[int]:
        """
        Append a record; a log that cannot be written fails the Deferred
        with L{AuditUnavailable} so the caller refuses the work.
        """
        try:
            return self.audit.append(event, body)
        except AuditUnavailable as e:
            return fail(e)
        except ValueError:
            # A client or target put text in the body that JSON cannot hold
            # (a lone surrogate): the record must still be written, so write
            # it with such characters replaced, and say so in the record.
            try:
                return self.audit.append(event, {**_printable(body), "sanitized": True})
            except Exception as e:
                return fail(e)

    def auth_failed(
        self,
        *,
        source: Source,
        reason: str,
        method: str,
        user: str | None = None,
        credential_sha256: str | None = None,
        key_fingerprint: str | None = None,
    ) -> Deferred[int | None]:
        """
        Record a refused authentication attempt.  Front ends with failure
        modes of their own (a wrong SSH key, a plaintext password refused)
        call this directly.
        """
        self.metrics.auth_failed(source.protocol)
        if not self.failures.admit(source):
            return succeed(None)
        body = events.auth_failed(
            self.gateway, source.address, source.protocol, method, reason,
            user=user, credential_sha256=credential_sha256, key_fingerprint=key_fingerprint,
        )  # fmt: skip
        d = self._append(events.AUTH_FAILED, body)
        return d.addErrback(lambda f: log.failure("{event} record lost", f, event=events.AUTH_FAILED))

    def refused(
        self,
        source: Source,
        code: int | str,
        reason: str,
        *,
        request: Mapping[str, Any] | None = None,
        identity: Identity | None = None,
        token: str | None = None,
        user: str | None = None,
    ) -> Deferred[int | None]:
        """
        Record a request a front end refused before any session or decision
        (an HTTP method it does not relay, a body too large, a malformed
        request; a PostgreSQL start-up sent in the clear or out of order; an
        SSH login that breaks the protocol): a C{request.refused} record with
        the source, C{code} as the client was answered (an HTTP status, an
        SQLSTATE, an SSH disconnect reason), the reason, the front end's
        description of the C{request}, the identity when it is verified (else
        the presented C{token}'s SHA-256, never the token) and the C{user}
        name the client gave.

        A client with no verified identity costs nothing to refuse (a
        PostgreSQL start-up in the clear is one packet), so its refusals
        count against its host's budget as failed logins do (a
        L{FailureLimiter} of their own): past it, one
        C{request.refused.suppressed} record counts the rest.

        @return: a L{Deferred} that fires once the record is written; a lost
            record is logged, never raised (the client is refused anyway).
        """
        if identity is None and not self.refusals.admit(source):
            return succeed(None)
        try:
            body = events.request_refused(
                self.gateway, source.address, source.protocol, code, reason, request=request,
                identity=identity.to_record() if identity is not None else None,
                credential_sha256=_credential_sha256(token) if identity is None and token is not None else None,
                user=user,
            )  # fmt: skip
            d = self._append(events.REQUEST_REFUSED, body)
        except Exception:
            log.failure("{event} record lost", event=events.REQUEST_REFUSED)
            return succeed(None)
        return d.addErrback(lambda f: log.failure("{event} record lost", f, event=events.REQUEST_REFUSED))

    def verified_identity(self, token: str) -> Identity | None:
        """
        The identity of a token verified moments ago and still valid, or
        C{None}: then L{authenticate_token} decides (and audits a refusal).
        """
        return self.identity.verified_identity(token)

    def authenticate_token(self, token: str, *, source: Source, user: str | None = None) -> Deferred[Identity]:
        """
        Verify a bearer token.  A refusal is audited with its reason and the
        token's SHA-256, never the token.

        @return: L{Deferred} firing with an L{Identity}, or failing with
            L{AuthenticationFailed}.
        """
        d = maybeDeferred(self.identity.verify_token, token)

        def refused(failure: Failure) -> Failure:
            value = failure.value
            reason = value.reason if isinstance(value, AuthenticationFailed) else "token verification error"
            if not failure.check(AuthenticationFailed):
                log.failure("token verification raised unexpectedly", failure)
            self.auth_failed(
                source=source,
                reason=reason,
                method="token",
                user=user,
                credential_sha256=_credential_sha256(token),
            )
            return Failure(AuthenticationFailed(reason))

        return d.addErrback(refused)

    def open(
        self,
        identity: Identity,
        connection_name: str,
        *,
        kind: str,
        source: Source,
        client: Mapping[str, Any] | None = None,
    ) -> Deferred[ISession]:
        """
        Admit C{identity} to a connection through a front end serving
        connections of C{kind}: policy decides C{session.open}, the
        connection must be of that kind, then a C{session.start} record is
        written.

        @return: L{Deferred} firing with a L{Session}, or failing with
            L{NotPermitted} (whose message is safe to show the client; a
            L{WrongKind} for a connection of another kind) or
            L{AuditUnavailable}.
        """
        client = dict(client or {})
        if self._closing:
            return fail(NotPermitted(None, "the gateway is shutting down"))
        connection = self.connections.get(connection_name)
        if connection is None:
            # Refused like a policy denial, so a probe cannot tell a missing
            # connection from a forbidden one by timing or wording class.
            decision = Decision(
                effect=Effect.deny, message=f"no connection named {connection_name!r}"
            )
            return self._refuse_session(identity, connection_name, "unknown", source, client, decision)

        action = Action(kind="session.open", input=connection_name)
        d = maybeDeferred(self.policy.decide, identity, connection, action)

        def decided(decision: Decision) -> Deferred[ISession]:
            if not decision.allowed:
                return self._refuse_session(
                    identity, connection_name, connection.kind, source, client, _refusal(decision)
                )
            if connection.kind != kind:
                # Checked after policy: whom policy does not let open the
                # connection is answered as for any connection forbidden to
                # it, so a probe learns nothing of its kind; whom it does may
                # be told plainly which kind of client it needs.
                refusal = WrongKind(None, connection_name, connection.kind, kind)
                refusal.decision = Decision(effect=Effect.deny, rule=GATEWAY_RULE, message=str(refusal))
                # (Counted as a refused session of the kind asked for.)
                return self._refuse_session(
                    identity, connection_name, kind, source, client, refusal.decision, refusal
                )
            return self._start_session(identity, connection, source, client, decision)

        return d.addCallback(decided)

    def _refuse_session(
        self,
        identity: Identity,
        connection_name: str,
        kind: str,
        source: Source,
        client: Mapping[str, Any],
        decision: Decision,
        refusal: NotPermitted | None = None,
    ) -> Deferred[ISession]:
        self.metrics.session_refused(kind)
        message = decision.message or f"{identity.subject} may not open {connection_name!r}"
        body = events.session_refused(
            self.gateway, connection_name, source.address, source.protocol, identity.to_record(), client,
            decision.to_record(), message,
        )
        if refusal is None:
            refusal = NotPermitted(decision, message)
        failure: Deferred[ISession] = fail(refusal)
        return self._append(events.SESSION_REFUSED, body).addCallback(lambda _: failure)

    def _start_session(
        self,
        identity: Identity,
        connection: Connection,
        source: Source,
        client: Mapping[str, Any],
        decision: Decision,
    ) -> Deferred[ISession]:
        session = Session(
            id=secrets.token_hex(12),
            identity=identity,
            connection=connection,
            source=source,
            client=dict(client),
            service=self,
            started=self.clock.seconds(),
        )
        d = self._append(events.SESSION_START, session.records.session_start(decision.to_record()))

        def started(_: object) -> ISession:
            self._active[session.id] = session
            if self.grants is not None and self.grants.any_active:
                self.grants.attach(session)
            self.metrics.session_opened(connection.kind)
            stored = self.store.session_started(
                {
                    "id": session.id,
                    "started": session.started,
                    "subject": identity.subject,
                    "issuer": identity.issuer,
                    "groups": list(identity.groups),
                    "connection": connection.name,
                    "kind": connection.kind,
                    "source": source.address,
                    "client": dict(client),
                    "status": "active",
                }
            )
            # The store is an index for `sessions list`; the audit log already
            # holds the evidence, so a store failure is logged, not fatal.
            stored.addErrback(lambda f: log.failure("session index write failed", f))
            return session

        return d.addCallback(started)

    def withdraw_review(self, review: Review | None, reason: str) -> bool:
        """
        The client that waited for C{review} left (or withdrew it): a pending
        review is cancelled, with its record, so nothing runs after.  Whether
        one was pending.
        """
        if review is None or not review.pending or self.reviews is None:
            return False
        d = self.reviews.cancel(review, reason)
        d.addErrback(lambda f: log.failure("review.cancelled not recorded for {id}", f, id=review.id))
        return True

    def _forget(self, session: "Session") -> None:
        if self._active.pop(session.id, None) is not None:
            self.metrics.session_closed(session.connection.kind)

    def close_all(self, reason: str, *, grace: float | None = None) -> Deferred[None]:
        """
        Admit no new sessions and end every active one through its front
        end, which tells the client C{reason} where its protocol can
        (L{Session.terminate} with C{shutdown}: a request in progress may
        finish first).  After C{grace} seconds any session still open is
        ended at once (its client connection aborted).  Each C{session.end}
        says C{terminated}, with the reason.

        @return: L{Deferred} firing once every session's C{session.end} has
            been written (or lost, and logged).
        """
        self._closing = True
        self.failures.flush()
        self.refusals.flush()
        sessions = list(self._active.values())
        ended = [s.ended() for s in sessions]
        for session in sessions:
            session.terminate(reason, shutdown=True)
        done = gatherResults(ended, consumeErrors=True)
        if grace is not None and not done.called:
            timer = self.clock.callLater(grace, self._end_now, sessions, reason)

            def settled(result: object) -> object:
                if timer.active():
                    timer.cancel()
                return result

            done.addBoth(settled)
        return done.addCallback(lambda _: None)

    def _end_now(self, sessions: list["Session"], reason: str) -> None:
        """Sessions that outlived the shutdown's grace: their connections aborted, then closed."""
        for session in sessions:
            if session.closed:
                continue
            session.terminate(reason)
            if not session.closed:
                session.close()

    def end_remaining(self, reason: str) -> Deferred[None]:
        """
        Close every session still active directly, without its front end
        (the last resort of a stop whose sessions did not end in time):
        C{session.end} is still written, C{terminated} with C{reason}.
        """
        self._closing = True
        remaining = list(self._active.values())
        for session in remaining:
            if session.termination is None:
                session.termination = reason
        return gatherResults([s.close() for s in remaining], consumeErrors=True).addCallback(lambda _: None)


_R = TypeVar("_R", bound=IRecorder)
# A recording's key (a channel or action number) and suffix: one name in one
# folder, nothing that walks out of it.
_RECORDING_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_RECORDING_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,16}")
# How many names open_recording tries for one key before giving up.
_RECORDING_NAMES = 100


@implementer(ISession)
@define(eq=False)
class Session:
    """One client's session on one connection."""

    id: str
    identity: Identity
    connection: Connection
    source: Source
    client: dict[str, Any]
    service: SessionService
    started: float
    recorder: IRecorder | None = None
    # Recordings after the first (a second terminal on one SSH connection,
    # each kubectl exec of an HTTP session): listed in session.end.
    recordings: list[IRecorder] = field(factory=list)
    actions: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    closed: bool = False
    # A front end that counts its own traffic sets this, so session.end has
    # the right numbers even when the gateway ends the session first.
    traffic: Callable[[], tuple[int, int]] | None = None
    # The fields every record of this session starts with, built on first
    # use: identity, connection, source and client are fixed once open.
    _records: events.SessionRecords | None = field(default=None, init=False, repr=False)
    # Set by a front end whose inputs spell values in literals (SQL's
    # E'...', U&'...'): what the trail's detectors must also read.
    literals: Callable[[str], Any] | None = field(default=None, repr=False)
    # (the policy they were built under, the masks): rebuilt after a reload.
    _masks: tuple[object, SessionMasks | None] = field(default=(None, None), init=False, repr=False)
    # The access grant (hoopgw.grants) the session acted under: it ends with the grant.
    grant: str | None = None
    # Actions by outcome status, and "reviewed" (held for review): stored at the end, for listings.
    counts: dict[str, int] = field(factory=dict)
    # Set by the front end: ends the client's connection, telling it why
    # where the protocol can, and closes the session (see terminate).
    on_terminate: Callable[[str], object] | None = field(default=None, repr=False)
    # Set by a front end that can end more gently when the gateway stops
    # (HTTP: a request in progress finishes first); else on_terminate is used.
    on_shutdown: Callable[[str], object] | None = field(default=None, repr=False)
    termination: str | None = None  # why the gateway ended it
    # Waiters for session.end (see ended), and whether it has been written.
    _end_waiters: list[Deferred[None]] = field(factory=list, init=False, repr=False)
    _end_done: bool = field(default=False, init=False, repr=False)

    @property
    def masks(self) -> SessionMasks | None:
        """What is masked in this session, for the client and in the trail (C{None}: nothing)."""
        masking = self.service.masking
        if masking is None:
            return None
        version = masking.version
        if self._masks[0] is not version:
            self._masks = (version, masking.for_session(self.identity, self.connection))
        return self._masks[1]

    @property
    def records(self) -> events.SessionRecords:
        """The bodies of this session's records (built at its first)."""
        records = self._records
        if records is None:
            records = self._records = events.SessionRecords(
                gateway=self.service.gateway,
                session=self.id,
                connection=self.connection.name,
                kind=self.connection.kind,
                target=self.connection.target,
                address=self.source.address,
                protocol=self.source.protocol,
                identity=self.identity.to_record(),
                client=self.client,
            )
        return records

    def attach_recorder(self, recorder: IRecorder) -> None:
        """The recording's SHA-256 goes into C{session.end} when it closes."""
        self.recorder = recorder

    def add_recording(self, recorder: IRecorder) -> None:
        """
        The session's first recording is I{the} recording (C{recording},
        C{recording_sha256} in C{session.end}); later ones are listed there
        as C{recordings} (path and SHA-256 each).  All are closed with the
        session.
        """
        if self.recorder is None:
            self.attach_recorder(recorder)
        else:
            self.recordings.append(recorder)

    def open_recording(
        self, key: str | int, make: Callable[[str, int], _R], *, suffix: str = ".cast"
    ) -> _R | None:
        """
        Open a new recording file in the service's recordings folder, named
        C{<session>-<key><suffix>} (C{<session>-<key>.<n><suffix>} if that
        name is taken: an existing file is evidence, never overwritten),
        created exclusively with mode 0600, and give it to C{make(path, fd)},
        which returns the recorder writing to it (the recorder owns the file
        once made; if C{make} raises, the file is closed and left empty).  The
        recorder is added to the session (L{add_recording}): its SHA-256 goes
        into C{session.end}.

        @param key: what tells this session's recordings apart: a channel or
            action number, letters, digits, C{-} and C{_} only.
        @return: the recorder, or C{None} if the gateway keeps no recordings
            (no folder configured).
        """
        name = f"{self.id}-{key}"
        if not _RECORDING_KEY.fullmatch(str(key)) or not _RECORDING_SUFFIX.fullmatch(suffix):
            raise ValueError(f"not a recording name: {name + suffix!r}")
        folder = self.service.recordings
        if folder is None:
            return None
        for n in range(1, _RECORDING_NAMES + 1):
            path = folder / (f"{name}{suffix}" if n == 1 else f"{name}.{n}{suffix}")
            try:
                fd = os.open(path, RECORDING_FLAGS, RECORDING_MODE)
            except FileExistsError:
                continue
            break
        else:
            raise FileExistsError(f"{_RECORDING_NAMES} recordings named {name}{suffix} already exist in {folder}")
        try:
            recorder = make(str(path), fd)
        except BaseException:
            os.close(fd)
            raise
        self.add_recording(recorder)
        return recorder

    def check(
        self, action: Action, on_held: Callable[[Review], object] | None = None, hold_limit: int | None = None
    ) -> Deferred[IActionHandle]:
        """
        Decide C{action} and write its C{action.start} record.

        An action policy sends to review is held: C{on_held(review)} is
        called once the review is open (a front end tells its client the
        review's id; L{hoopgw.reviews.ReviewService.cancel} ends it if the
        client leaves), and the Deferred fires when the review is decided:
        approved, the handle is allowed; denied, expired or cancelled, it is
        blocked with the reason.  C{hold_limit} caps how long it may wait
        (seconds), where the client cannot wait as long as the rule allows.

        @return: L{Deferred} firing with an L{ActionHandle} once the record
            has been written (and, in strict sync mode, synced).  Forward the
            action only if C{handle.allowed}.  A refused action's outcome
            (C{blocked}) is already recorded.  Fails with L{AuditUnavailable}
            if the log cannot be written: the caller must not forward.
        """
        return _later(self.check_now(action, on_held, hold_limit))

    def check_now(
        self, action: Action, on_held: Callable[[Review], object] | None = None, hold_limit: int | None = None
    ) -> IActionHandle | Deferred[IActionHandle]:
        """
        L{check}, returning the handle itself when nothing waited: policy
        decided at once and the record is written (batched sync), the
        usual case, with no Deferred and no callback on the way; else the
        Deferred L{check} returns.
        """
        handle = self._new_handle(action)
        if not isinstance(handle, ActionHandle):
            return handle
        handle.on_held = on_held
        handle.hold_limit = hold_limit
        grants = self.service.grants
        if grants is not None and self.grant is None and grants.any_active:
            grants.attach(self)
        try:
            d = self.service.policy.decide(self.identity, self.connection, action)
        except Exception:
            return fail()
        decision = _fired(d)
        if decision is _PENDING:
            return d.addCallback(handle._decided)
        try:
            return handle._decided(decision)
        except Exception:
            return fail()  # (a bug: the caller's errback refuses the action)

    def observe(self, action: Action) -> Deferred[IActionHandle]:
        """
        Record something that has already happened (a line typed into a
        shell) without asking policy: its decision is L{OBSERVED}, never
        enforced.  Fails as L{check} does when the session is closed or the
        audit log is unavailable.
        """
        return _later(self._record(action, OBSERVED))

    def refuse(self, action: Action, message: str) -> Deferred[IActionHandle]:
        """
        Record C{action} as refused by the gateway itself, before policy: it
        cannot be read as the target would read it (the rule is
        C{GATEWAY_RULE}).  Fires with its L{ActionHandle}, already blocked.
        """
        return _later(self._record(action, Decision(effect=Effect.deny, rule=GATEWAY_RULE, message=message)))

    def _record(self, action: Action, decision: Decision) -> IActionHandle | Deferred[IActionHandle]:
        """Record C{action} as C{decision} decides it, without asking policy."""
        handle = self._new_handle(action)
        if not isinstance(handle, ActionHandle):
            return handle
        try:
            return handle._decided(decision)
        except Exception:
            return fail()  # (a bug: the caller's errback refuses the action)

    def _new_handle(self, action: Action) -> ActionHandle | Deferred[IActionHandle]:
        if self.closed:
            return fail(NotPermitted(None, "session is closed"))
        failed = self.service.audit.failed
        if failed is not None:
            return fail(AuditUnavailable(f"audit log unavailable: {failed}"))
        self.actions += 1
        return ActionHandle(session=self, action=action, number=self.actions)

    def ended(self) -> Deferred[None]:
        """A L{Deferred} firing once C{session.end} has been written (or lost, and logged)."""
        if self._end_done:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._end_waiters.append(d)
        return d

    def _notify_ended(self, result: int | None) -> int | None:
        # (A failure never gets here: the errback before this one logs it.)
        self._end_done = True
        waiters, self._end_waiters = self._end_waiters, []
        for d in waiters:
            if not d.called:  # (a waiter may have been cancelled: a stop's timeout)
                d.callback(None)
        return result

    def terminate(self, reason: str, *, shutdown: bool = False) -> Deferred[int | None]:
        """
        End the session from the gateway's side (its access grant ended, the
        gateway stops): the front end's C{on_terminate} closes the client's
        connection, telling it C{reason} where its protocol can, and closes
        the session as it does when a client leaves (its actions' outcomes
        first); whoever closes it, C{session.end} says C{terminated}, with
        the reason.  With C{shutdown}, a front end's C{on_shutdown} is used
        instead where it has one (it may let a request in progress finish).
        """
        if self.closed:
            return succeed(None)
        self.termination = reason
        end = self.on_terminate
        if shutdown and self.on_shutdown is not None:
            end = self.on_shutdown
        if end is not None:
            try:
                end(reason)
                return succeed(None)
            except Exception:
                log.failure("ending the client connection of session {id} failed", id=self.id)
        return self.close()

    def close(
        self,
        *,
        status: str = "closed",
        error: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Deferred[int | None]:
        """
        End the session: close its recording, write C{session.end} with the
        recording's SHA-256, byte counts and duration.  Idempotent.
        """
        if self.closed:
            return succeed(None)
        self.closed = True
        if self.termination is not None:
            status, error = "terminated", self.termination
        if self.traffic is not None:
            self.bytes_in, self.bytes_out = self.traffic()
        service = self.service
        service._forget(self)
        if service.reviews is not None:
            # A held action nobody waits for any more.
            service.reviews.cancel_session(self.id, "the session ended")
        recorder = self.recorder
        d: Deferred[str] | Deferred[None] = maybeDeferred(recorder.close) if recorder is not None else succeed(None)
        recording_error: list[str] = []

        def unrecorded(failure: Failure) -> None:
            # A recording that cannot be finished must not cost the session
            # its session.end record: say what went wrong there instead.
            log.failure("recording of session {id} could not be closed", failure, id=self.id)
            recording_error.append(failure.getErrorMessage())
            return None

        d.addErrback(unrecorded)
        others: list[dict[str, Any]] = []

        def close_other(other: IRecorder, entry: dict[str, Any]) -> Deferred[None]:
            def closed(sha: str) -> None:
                entry["sha256"] = sha

            def failed(failure: Failure) -> None:
                entry["error"] = failure.getErrorMessage()

            return maybeDeferred(other.close).addCallbacks(closed, failed)

        def after(sha: str | None, closing: Deferred[None]) -> Deferred[str | None]:
            return closing.addCallback(lambda _: sha)

        for other in self.recordings:
            entry: dict[str, Any] = {"path": str(getattr(other, "path", ""))}
            others.append(entry)
            d.addCallback(after, close_other(other, entry))

        def recorded(sha256: str | None) -> Deferred[int]:
            recorded_error = error
            if error is not None:
                masks = self.masks
                if masks is not None:
                    counts: dict[tuple[str, str], int] = {}
                    recorded_error = masks.trail_text(error, counts)
                    masks.settle(counts)
            path = getattr(self.recorder, "path", None)
            end = events.session_end(
                status, _elapsed_us(service.clock, self.started), self.actions, self.bytes_in, self.bytes_out,
                error=recorded_error, recording=str(path) if path is not None else None, recording_sha256=sha256,
                recording_error=recording_error[0] if recording_error else None, recordings=others, details=details,
            )  # fmt: skip
            written = service._append(events.SESSION_END, self.records.session_end(end))
            stored = service.store.session_ended(
                self.id,
                service.clock.seconds(),
                status,
                sha256,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                counts={"actions": self.actions, **self.counts},
            )
            stored.addErrback(lambda f: log.failure("session index update failed", f))
            return written

        return (
            d.addCallback(recorded)
            .addErrback(lambda f: log.failure("session.end record lost for {id}", f, id=self.id))
            .addBoth(self._notify_ended)
        )


@implementer(IActionHandle)
@define(eq=False)
class ActionHandle:
    """An action that has been decided and logged; report its outcome once."""

    session: Session
    action: Action
    number: int
    decision: Decision | None = None
    started: float = 0.0
    finished: bool = False
    review: Review | None = None  # the review that held it
    on_held: Callable[[Review], object] | None = None
    hold_limit: int | None = None

    @property
    def id(self) -> str:
        return f"{self.session.id}/{self.number}"

    @property
    def allowed(self) -> bool:
        decision = self.decision
        if decision is None:
            return False
        if decision.effect is Effect.review:
            review = self.review
            return review is not None and review.state.value == "approved"
        return decision.allowed

    def _action_record(self) -> dict[str, Any]:
        session = self.session
        record: dict[str, Any] = {"id": self.id}
        record.update(session.records.action_form(self.action, session.masks, session.literals))
        return record

    def _decided(self, decision: Decision) -> IActionHandle | Deferred[IActionHandle]:
        """Record C{decision}: the handle once its C{action.start} is written, or a Deferred if that waits."""
        session = self.session
        service = session.service
        if (
            decision.effect is Effect.review and service.reviews is not None and decision.review is not None
            and self.on_held is not None
        ):
            # (A front end that cannot tell its client passes no on_held: refused, as without reviews.)
            return self._held(decision, service.reviews, self.on_held)
        decision = _refusal(decision)
        self.decision = decision
        self.started = service.clock.seconds()
        d = service._append(events.ACTION_START, session.records.action_start(self._action_record(), decision.to_record()))
        if _fired(d) is _PENDING:
            if not decision.allowed:
                d.addCallback(lambda _: self.finish(self._blocked(decision)))
            return d.addCallback(lambda _: self)
        if not decision.allowed:
            ended = self.finish(self._blocked(decision))
            if _fired(ended) is _PENDING:
                return ended.addCallback(lambda _: self)
        return self

    @staticmethod
    def _blocked(decision: Decision) -> Outcome:
        return Outcome(status=Status.blocked, error=decision.message or f"blocked by rule {decision.rule}")

    def _held(
        self, decision: Decision, reviews: ReviewService, on_held: Callable[[Review], object]
    ) -> Deferred[IActionHandle]:
        """
        Policy sends the action to review: its C{action.start} names the
        review, the review is opened (C{review.requested}), the front end
        told, and the handle returned once the review is decided.
        """
        self.decision = decision
        session = self.session
        service = session.service
        review_id = reviews.new_id()
        session.counts["reviewed"] = session.counts.get("reviewed", 0) + 1
        self.started = service.clock.seconds()
        action_record = self._action_record()
        decision_record = decision.to_record()
        decision_record["review"] = review_id
        d = service._append(events.ACTION_START, session.records.action_start(action_record, decision_record))

        def start(_: object) -> Deferred[Review]:
            return reviews.open(
                session=session.id,
                action_id=self.id,
                requester=session.identity,
                connection=session.connection.name,
                # What the approver approves: the text and its parameters (as the trail stores them).
                action={k: action_record[k] for k in ("kind", "input", "details") if k in action_record},
                rule=decision.rule,
                requirement=decision.review,
                reason=decision.message,
                review_id=review_id,
                timeout=self.hold_limit,
            )

        def opened(review: Review) -> Deferred[Review]:
            self.review = review
            if session.closed:
                # Closed while the request was being recorded: nobody waits for it.
                reviews.cancel(review, "the session ended").addErrback(lambda f: None)
            try:
                on_held(review)
            except Exception:
                log.failure("telling the client of review {id} failed", id=review.id)
            return review.wait()

        def decided(review: Review) -> IActionHandle | Deferred[IActionHandle]:
            self.started = service.clock.seconds()  # the action's duration counts from its approval
            if self.allowed:
                return self
            return self.finish(Outcome(status=Status.blocked, error=review.refusal())).addCallback(lambda _: self)

        def unopened(failure: Failure) -> Failure:
            # The review could not be recorded: the action is refused.
            if self.review is None:
                self.finish(Outcome(status=Status.blocked, error="the review could not be recorded"))
            return failure

        return d.addCallback(start).addCallback(opened).addCallbacks(decided, unopened)

    def finish(self, outcome: Outcome) -> Deferred[int | None]:
        """Record how the action ended (once)."""
        if self.finished:
            return succeed(None)
        self.finished = True
        statuses = self.session.counts
        statuses[outcome.status.value] = statuses.get(outcome.status.value, 0) + 1
        service = self.session.service
        error = outcome.error
        masked = None
        if error:
            masks = self.session.masks
            if masks is not None and masks.trail:
                counts: dict[tuple[str, str], int] = {}
                error = masks.trail_text(error, counts)
                if counts:
                    masked = dict(outcome.masked or {})
                    for name, count in masks.settle(counts).items():
                        masked[name] = masked.get(name, 0) + count
        duration = None
        if outcome.duration_us is None and outcome.status is not Status.blocked:
            duration = _elapsed_us(service.clock, self.started)
        record = events.action_end(
            outcome.to_record(), error=error or None, masked=masked, duration_us=duration,
            review=self.review.id if self.review is not None else None,
        )
        service.metrics.action_finished(self.action.kind, outcome.status.value)
        d = service._append(events.ACTION_END, self.session.records.action_end(self.id, self.action.kind, record))
        # The action has already happened; a lost outcome is the audit log's
        # own failure (it fails closed and says so), so log and carry on.
        return d.addErrback(lambda f: log.failure("action.end record lost for {id}", f, id=self.id))
