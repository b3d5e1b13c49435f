"""
Interfaces of the services every protocol front end shares, and of a front
end itself as the gateway sees it (L{IFrontEnd}).

A front end is written against L{ISessionService}, L{ISession} and
L{IActionHandle} (L{hoopgw.sessions} implements them; L{hoopgw.testing}
builds the real service over in-memory doubles of L{IAuditLog},
L{IPolicy}, L{IIdentityVerifier}, L{IStore}, L{IRecorder} and
L{IMetrics}).  The public face for front ends is L{hoopgw.frontend}.

Each method that may wait returns a L{Deferred}; nothing here knows about a
wire protocol.  The annotations are the contract: mypy, with mypy-zope,
checks every C{@implementer} against them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from zope.interface import Attribute, Interface

from hoopgw.model import Action, Connection, Decision, Identity, Outcome, Source

if TYPE_CHECKING:
    from hoopgw.config import PreauthLimits, Table
    from hoopgw.gateway import GatewayContext
    from hoopgw.masking.service import MaskingService, SessionMasks
    from hoopgw.policy.rules import ConditionSpec
    from hoopgw.reviews import Review, ReviewService
    from hoopgw.store import SessionFilter


class IAuditLog(Interface):
    """
    An append-only, hash-chained, signed log of records.
    """

    log_id: str = Attribute("Stable identifier of this log (one per gateway process).")
    failed: str | None = Attribute("C{None}, or the reason the log cannot be written (fail closed).")

    def append(event: str, body: Mapping[str, Any]) -> Deferred[int]:
        """
        Append one record.

        The record's bytes are handed to the operating system (write(2))
        before this returns: a caller that forwards an action once this
        returns has logged it first.  Raises L{hoopgw.errors.AuditUnavailable}
        synchronously if the log cannot be written.

        @param event: the record type, e.g. C{"action.start"}.
        @param body: JSON-compatible mapping (str keys; str, int, bool, None,
            lists and mappings of those).  C{seq}, C{prev}, C{time}, C{log} and
            C{event} are added by the log.
        @return: a L{Deferred} firing with the record's C{seq} once it is
            durable according to the configured sync mode (immediately in
            C{batched} mode, after fdatasync in C{strict} mode).
        """

    def checkpoint() -> Deferred[int]:
        """
        Write a signed checkpoint now.  @return: L{Deferred} firing with the
        checkpoint's tree size.
        """


class IIdentityVerifier(Interface):
    def verify_token(token: str) -> Deferred[Identity]:
        """
        Verify a bearer token (str).

        @return: L{Deferred} firing with an L{hoopgw.model.Identity} or failing
            with L{hoopgw.errors.AuthenticationFailed} whose C{reason} is safe
            to log (never contains the token).
        """

    def verified_identity(token: str) -> Identity | None:
        """
        The L{hoopgw.model.Identity} of a token verified in full moments
        ago and still valid, or C{None}: a synchronous shortcut for the
        per-request path; C{None} means "ask L{verify_token}", which also
        reports a refusal.
        """

    def identity_for_public_key(key_blob: bytes) -> Identity | None:
        """
        Map an SSH public key blob (bytes, wire format) to an
        L{hoopgw.model.Identity}, or C{None} if no identity is configured
        (or enrolled, and still valid) for it.
        """

    def public_key_refusal(key_blob: bytes) -> str:
        """
        Why a key L{identity_for_public_key} maps to nothing is refused, safe
        to log: C{"public key not mapped to an identity"}, or C{"enrolled
        key expired"}.
        """


class IPolicy(Interface):
    def decide(identity: Identity, connection: Connection, action: Action) -> Deferred[Decision]:
        """
        Decide an action.

        @type identity: L{hoopgw.model.Identity}
        @type connection: L{hoopgw.model.Connection}
        @type action: L{hoopgw.model.Action}
        @return: L{Deferred} firing with a L{hoopgw.model.Decision}.
        """


class IRecorder(Interface):
    """A session's replayable recording (asciicast, SQL or HTTP transcript)."""

    path: object = Attribute("Where the recording is stored (a path), or C{None} for memory.")

    def close() -> Deferred[str]:
        """Finish the recording. @return: L{Deferred} firing with its hex SHA-256."""


# What ISession.open_recording returns: the recorder its caller built.
_R = TypeVar("_R", bound=IRecorder)


class ITerminalRecorder(IRecorder):
    """
    A terminal's recording (L{hoopgw.recording.asciicast.AsciicastRecorder}):
    what the program wrote, what was typed, the window's size.
    """

    failed: str | None = Attribute("C{None}, or why the recording stopped (later events are dropped).")

    def output(data: bytes) -> None:
        """Record bytes the program wrote to the terminal."""

    def input(data: bytes) -> None:
        """Record bytes typed (kept only if the recording keeps input)."""

    def resize(cols: int, rows: int) -> None:
        """Record a change of the terminal's size."""


class IStore(Interface):
    """
    The gateway's queryable state: sessions, reviews and access grants.
    """

    def session_started(session: Mapping[str, Any]) -> Deferred[None]:
        """
        Persist a new session.

        @param session: a mapping with at least C{id}, C{started}, C{subject},
            C{issuer}, C{connection}, C{kind}; optionally C{groups} (list),
            C{source}, C{client} (mapping), C{status}.  Times may be Unix
            seconds, an aware datetime or an RFC 3339 UTC string.
        @return: L{Deferred}.
        """

    def session_ended(
        session_id: str,
        ended: float | datetime | str,
        status: str,
        recording_sha256: str | None,
        *,
        bytes_in: int | None = None,
        bytes_out: int | None = None,
        counts: Mapping[str, int] | None = None,
    ) -> Deferred[None]:
        """
        Mark a session ended; C{counts} are its actions by outcome
        (C{{"actions": n, "succeeded": n, "blocked": n, ..., "reviewed": n}}).
        @return: L{Deferred}.
        """

    def list_sessions(
        limit: int = 100, active: bool | None = None, where: SessionFilter | None = None
    ) -> Deferred[list[dict[str, Any]]]:
        """
        @param where: a L{hoopgw.store.SessionFilter} (subject, connection,
            time range), instead of C{active} alone.
        @return: L{Deferred} firing with a list of mappings, newest first.
        """

    def end_interrupted(ended: float | datetime | str) -> Deferred[list[str]]:
        """
        Mark every session not ended as C{interrupted} (at start-up: the
        previous process ended without closing them).

        @return: L{Deferred} firing with the ids of the sessions marked.
        """

    def review_saved(review: Mapping[str, Any]) -> Deferred[None]:
        """
        Store a review record (L{hoopgw.reviews.Review.to_record}: its C{id},
        C{created}, C{state}, C{session}, C{requester}, C{connection} and
        the rest), new or changed.  @return: L{Deferred}.
        """

    def list_reviews(limit: int = 100, state: str | None = None) -> Deferred[list[dict[str, Any]]]:
        """@return: L{Deferred} firing with review records, newest first (of C{state} only if given)."""

    def get_review(review_id: str) -> Deferred[dict[str, Any] | None]:
        """@return: L{Deferred} firing with the review record, or C{None}."""

    def grant_saved(grant: Mapping[str, Any]) -> Deferred[None]:
        """
        Store a grant record (L{hoopgw.grants.Grant.to_record}: its C{id},
        C{created}, C{state}, C{requester}, C{connection} and the rest), new
        or changed.  @return: L{Deferred}.
        """

    def list_grants(limit: int = 100, state: str | None = None) -> Deferred[list[dict[str, Any]]]:
        """@return: L{Deferred} firing with grant records, newest first (of C{state} only if given)."""

    def get_grant(grant_id: str) -> Deferred[dict[str, Any] | None]:
        """@return: L{Deferred} firing with the grant record, or C{None}."""

    def close() -> Deferred[None]:
        """Release resources. @return: L{Deferred}."""


class IMetrics(Interface):
    """
    What the services report for the gateway's Prometheus metrics
    (L{hoopgw.metrics.Metrics}; L{hoopgw.testing.NullMetrics} keeps
    nothing).  Each report is a call on the reactor thread that returns at
    once: the per-action ones (L{action_finished}, L{audit_written},
    L{values_masked}) are on the hot path.
    """

    content_type: str = Attribute("The C{Content-Type} of what L{render} returns.")

    def audit_written(seconds: float) -> None:
        """One audit record was handed to the operating system in C{seconds}."""

    def checkpoint_written(unix_time: float) -> None:
        """A checkpoint was signed at C{unix_time} (the clock's time base)."""

    def audit_failed() -> None:
        """The audit log cannot be written (the gateway fails closed)."""

    def audit_recovered() -> None:
        """The audit log can be written again."""

    def session_opened(kind: str) -> None:
        """A session of a connection of C{kind} was opened."""

    def session_refused(kind: str) -> None:
        """A session was refused to a client of the front end serving C{kind}."""

    def session_closed(kind: str) -> None:
        """A session of a connection of C{kind} ended."""

    def action_finished(kind: str, outcome: str) -> None:
        """
        An action ended.

        @param kind: its kind (C{"sql.query"}), counted by its family (C{"sql"}).
        @param outcome: a L{hoopgw.model.Status} or its value.
        """

    def values_masked(mask: str, detector: str, count: int) -> None:
        """C{count} values masked by C{mask}, found by C{detector} (or C{"column"})."""

    def auth_failed(protocol: str) -> None:
        """A credential was refused on a listener of C{protocol}."""

    def webhook_attempt_failed(reason: str) -> None:
        """
        One attempt to notify a review webhook failed (C{reason}: one of
        L{hoopgw.metrics.WEBHOOK_FAILURE_REASONS}).
        """

    def webhook_delivered() -> None:
        """A review notification was delivered."""

    def webhook_given_up() -> None:
        """A review notification was not delivered and will not be tried again."""

    def render() -> bytes:
        """The metrics in the Prometheus text exposition format."""


class IActionHandle(Interface):
    """
    An action that has been decided and logged (L{ISession.check}): forward
    it only if L{allowed}, then report how it ended with L{finish}, once.
    """

    id: str = Attribute("C{<session id>/<number>}, as the trail names the action.")
    number: int = Attribute("Its number in the session, from 1.")
    action: Action = Attribute("The L{Action} decided.")
    decision: Decision = Attribute("What decided it: policy's decision, or the gateway's own refusal.")
    allowed: bool = Attribute(
        """
        Whether to forward it: policy allowed it, or it was held for review
        and approved.  A refused action's outcome (C{blocked}) is already
        recorded.
        """
    )
    review: Review | None = Attribute(
        "The L{hoopgw.reviews.Review} that held it, if policy sent it to review (its C{id}, its C{refusal()})."
    )

    def finish(outcome: Outcome) -> Deferred[int | None]:
        """
        Record how the action ended (C{action.end}); only the first call
        counts.  A record that cannot be written is logged, not raised: the
        action has already happened.

        @return: a L{Deferred} firing with the record's C{seq} once it is
            written, or C{None} (a second call; the record lost, and
            logged): it never fails.
        """


class ISession(Interface):
    """
    One client's session on one connection (L{ISessionService.open}).

    For each thing the client asks for, a front end calls L{check} and
    forwards it only if the handle is L{allowed <IActionHandle.allowed>};
    C{action.start} is handed to the OS before C{check}'s Deferred fires.
    When the client leaves, the front end calls L{close}.  The gateway ends
    a session from its side (an access grant ended, the gateway stops)
    through L{on_terminate}, which a front end sets.
    """

    id: str = Attribute("The session's id, in every record of it.")
    identity: Identity = Attribute("Who: the verified L{Identity}.")
    connection: Connection = Attribute("Where to: the L{Connection}, its C{settings} the front end's own.")
    source: Source = Attribute("Where the client came from.")
    client: dict[str, Any] = Attribute("What the client said of itself (application name, version), as recorded.")
    service: ISessionService = Attribute("The L{ISessionService} that opened it.")
    started: float = Attribute("When it was opened (the service's clock).")
    closed: bool = Attribute("Whether L{close} was called.")
    termination: str | None = Attribute("Why the gateway ended it, or C{None}.")
    actions: int = Attribute("How many actions it has decided so far.")
    counts: dict[str, int] = Attribute("Its actions by outcome status, and C{reviewed}.")
    bytes_in: int = Attribute("Bytes from the client, as C{session.end} reports them (see L{traffic}).")
    bytes_out: int = Attribute("Bytes to the client, as C{session.end} reports them (see L{traffic}).")
    grant: str | None = Attribute("The access grant it acts under, if any: it ends with the grant.")
    masks: SessionMasks | None = Attribute(
        "What is masked in this session, for the client and in the trail (C{None}: nothing)."
    )
    recorder: IRecorder | None = Attribute("Its first recording (L{add_recording}), or C{None}.")
    traffic: Callable[[], tuple[int, int]] | None = Attribute(
        """
        Set by a front end that counts its own traffic: returns C{(bytes_in,
        bytes_out)}, read when the session ends, so C{session.end} has the
        right numbers whoever ends it.
        """
    )
    literals: Callable[[str], Any] | None = Attribute(
        """
        Set by a front end whose inputs spell values in literals (SQL's
        C{E'...'}): what the trail's detectors must also read.
        """
    )
    on_terminate: Callable[[str], object] | None = Attribute(
        """
        Set by the front end: ends the client's connection, telling it the
        reason where its protocol can, and closes the session (L{terminate}).
        """
    )
    on_shutdown: Callable[[str], object] | None = Attribute(
        """
        Set by a front end that can end more gently when the gateway stops
        (a request in progress finishes first); else L{on_terminate} is used.
        """
    )

    def check(
        action: Action,
        on_held: Callable[[Review], object] | None = None,
        hold_limit: int | None = None,
    ) -> Deferred[IActionHandle]:
        """
        Decide C{action} and write its C{action.start} record.

        An action policy sends to review is held: C{on_held(review)} is
        called once the review is open (the front end tells its client the
        review's id), and the Deferred fires when the review is decided.
        Without C{on_held}, such an action is refused.  C{hold_limit} caps
        how long it may wait (seconds).

        @return: a L{Deferred} firing with an L{IActionHandle} once the
            record has been written; forward the action only if
            C{handle.allowed}.  Fails with L{hoopgw.errors.AuditUnavailable}
            if the log cannot be written (do not forward), or
            L{hoopgw.errors.NotPermitted} if the session is closed.
        """

    def check_now(
        action: Action,
        on_held: Callable[[Review], object] | None = None,
        hold_limit: int | None = None,
    ) -> IActionHandle | Deferred[IActionHandle]:
        """
        L{check}, with its result as soon as it is there: the handle itself
        when policy decided at once and the record is written (the usual
        case, with no Deferred and no callback on a front end's hot path),
        else the Deferred L{check} returns, which fails as L{check}'s does.
        The same contract in another shape: use either.
        """

    def observe(action: Action) -> Deferred[IActionHandle]:
        """
        Record something that has already happened (a line typed into a
        shell) without asking policy: recorded, never enforced.  Fails as
        L{check} does.
        """

    def refuse(action: Action, message: str) -> Deferred[IActionHandle]:
        """
        Record C{action} as refused by the gateway itself, before policy
        (it cannot be read as the target would read it): the handle fires
        already blocked, its rule C{GATEWAY_RULE}.
        """

    def attach_recorder(recorder: IRecorder) -> None:
        """Make C{recorder} the session's recording: its SHA-256 goes into C{session.end}."""

    def add_recording(recorder: IRecorder) -> None:
        """
        Add a recording: the first is I{the} recording, later ones are
        listed in C{session.end}.  All are closed with the session.
        """

    def open_recording(key: str | int, make: Callable[[str, int], _R], *, suffix: str = ".cast") -> _R | None:
        """
        Open a new file for a recording and add the recorder C{make} builds
        over it (L{add_recording}).  The session owns the folder (the
        gateway's C{data_dir/recordings}) and the name,
        C{<session id>-<key><suffix>} (C{key}: a channel or action number,
        letters, digits, C{-} and C{_}); the file is created exclusively
        (an existing recording is never overwritten: a taken name gets a
        C{.<n>} before the suffix), mode 0600, and given to C{make(path,
        fd)}, which owns it once it returns (if it raises, the file is
        closed).  The front end builds its recorder there, e.g.
        C{AsciicastRecorder(path, fd=fd, ...)}.

        @return: the recorder C{make} returned, or C{None} if the gateway
            keeps no recordings (nothing is opened, C{make} is not called).
        @raise ValueError: C{key} or C{suffix} is not one name's part.
        """

    def ended() -> Deferred[None]:
        """A L{Deferred} firing once C{session.end} has been written (or lost, and logged)."""

    def terminate(reason: str, *, shutdown: bool = False) -> Deferred[int | None]:
        """
        End the session from the gateway's side: the front end's
        L{on_terminate} (or with C{shutdown}, L{on_shutdown}) closes the
        client's connection; C{session.end} says C{terminated}, with
        C{reason}.

        @return: a L{Deferred} firing once the front end was told (C{None}),
            or without one, as L{close}'s.
        """

    def close(
        *, status: str = "closed", error: str | None = None, details: Mapping[str, Any] | None = None
    ) -> Deferred[int | None]:
        """
        End the session: close its recordings and write C{session.end}
        (C{status}, C{error}, byte counts, duration and C{details}).
        Idempotent.

        @return: a L{Deferred} firing with the C{seq} of C{session.end} once
            it is written, or C{None} (already closed; the record lost, and
            logged): it never fails.
        """


class ISessionService(Interface):
    """
    Authentication, session admission and the action pipeline every front
    end shares (L{hoopgw.sessions.SessionService}).  A front end
    authenticates its client (L{authenticate_token}, or L{identity} for a
    public key), opens a session (L{open}) and decides each action through
    it (L{ISession.check}).  It knows nothing of any wire protocol.
    """

    connections: Mapping[str, Connection] = Attribute("The configured connections, by name.")
    clock: IReactorTime = Attribute("The clock of every timer and duration (a L{Clock} in tests).")
    identity: IIdentityVerifier = Attribute("Verifies tokens and maps SSH public keys to identities.")
    policy: IPolicy = Attribute("Decides actions (L{ISession.check} asks it; front ends need not).")
    masking: MaskingService | None = Attribute(
        "Builds each session's masks (L{ISession.masks}), or C{None} when the gateway masks nothing."
    )
    reviews: ReviewService | None = Attribute(
        "Holds actions for human approval, or C{None}: then review rules refuse."
    )
    active: Mapping[str, ISession] = Attribute("The sessions open now, by id.")

    def verified_identity(token: str) -> Identity | None:
        """
        The identity of a token verified moments ago and still valid, or
        C{None}: then L{authenticate_token} decides (and audits a refusal).
        A synchronous shortcut for a per-request path.
        """

    def authenticate_token(token: str, *, source: Source, user: str | None = None) -> Deferred[Identity]:
        """
        Verify a bearer token.  A refusal is audited (C{auth.failed}) with
        its reason and the token's SHA-256, never the token.

        @return: a L{Deferred} firing with an L{Identity}, or failing with
            L{hoopgw.errors.AuthenticationFailed} (its C{reason} safe to
            show the client).
        """

    def auth_failed(
        *,
        source: Source,
        reason: str,
        method: str,
        user: str | None = None,
        credential_sha256: str | None = None,
        key_fingerprint: str | None = None,
    ) -> Deferred[int | None]:
        """
        Record a refused authentication attempt of a front end's own (a
        wrong SSH key, a password sent in the clear): C{auth.failed}, rate
        limited per client host.

        @return: a L{Deferred} firing with the record's C{seq}, or C{None}
            when it was only counted (or lost, and logged): it never fails.
        """

    def refused(
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
        Record a request the front end refused before any session or
        decision (a malformed request, a start-up sent in the clear):
        C{request.refused}, with C{code} as the client was answered (an
        HTTP status, an SQLSTATE, an SSH disconnect reason), the reason,
        the front end's description of the C{request}, and the identity if
        verified (else the presented C{token}'s SHA-256, never the token).

        @return: as L{auth_failed}.
        """

    def open(
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
        connection must be of that kind, then C{session.start} is written.

        @return: a L{Deferred} firing with an L{ISession}, or failing with
            L{hoopgw.errors.NotPermitted} (its message safe to show the
            client; a L{hoopgw.errors.WrongKind} for a connection of
            another kind) or L{hoopgw.errors.AuditUnavailable}.
        """

    def withdraw_review(review: Review | None, reason: str) -> bool:
        """
        The client that waited for C{review} left (or withdrew it): a
        pending review is cancelled, with its record.  Whether one was
        pending.
        """

    def close_all(reason: str, *, grace: float | None = None) -> Deferred[None]:
        """
        Admit no new sessions and end every active one through its front
        end (L{ISession.terminate} with C{shutdown}); after C{grace}
        seconds, those still open are ended at once.

        @return: a L{Deferred} firing once every C{session.end} is written.
        """

    def end_remaining(reason: str) -> Deferred[None]:
        """
        Close every session still active directly, without its front end
        (the last resort of a stop): C{session.end} says C{terminated},
        with C{reason}.
        """


class IFrontEnd(Interface):
    """
    A protocol front end, as the gateway knows it: everything about a kind
    of connection that is not the shared pipeline.

    Front ends are Twisted plugins: an object providing this interface and
    L{twisted.plugin.IPlugin} in a module of a C{twisted/plugins/} folder
    on C{sys.path}, found by L{hoopgw.frontends.installed}.  Nothing here
    runs per connection: the gateway reads these once, at start-up, and
    the factory L{build} returns does the work.
    """

    kind: str = Attribute(
        """
        The connection kind this front end serves (C{"postgres"}): the
        value of C{kind} in C{[[connections]]}, its key in C{[listen]} and
        C{[preauth.<kind>]}, its C{kind} label in metrics.  Lower-case
        letters, digits and C{_}, starting with a letter; not C{"api"} or a
        C{[preauth]} key, which the gateway uses.
        """
    )

    description: str = Attribute("One line saying what it serves, for people.")

    connection_keys: Sequence[str] = Attribute(
        """
        The keys a C{[[connections]]} table of this kind may have besides
        C{name} and C{kind} (a sequence of str).  Any other key is refused
        before L{parse_connection} is called.
        """
    )

    conditions: Sequence[ConditionSpec] = Attribute(
        """
        The policy conditions its actions can be judged by: a sequence of
        L{hoopgw.policy.rules.ConditionSpec}, named C{"<prefix>.<what>"}
        (C{"sql.statements"}).  A condition's L{ConditionKind
        <hoopgw.policy.rules.ConditionKind>} says how a rule writes it and
        how it matches: C{globs} is an array of patterns that matches when
        any pattern matches the action's attribute of that name (a string,
        or any string of a collection); C{bool} is C{true} or C{false}
        that matches when the attribute is that boolean.  An action without
        the attribute does not match.  So the front end's whole part in a
        decision is putting these attributes on its L{Action
        <hoopgw.model.Action>}s.
        """
    )

    action_kinds: Sequence[str] = Attribute(
        """
        The kinds of the actions its sessions decide, as glob patterns
        (C{"sql.query"}, C{"ssh.sftp.*"}), besides the shared
        C{"session.open"}: for documentation and metrics (their families,
        the part before the first dot, are counted from the start).
        """
    )

    default_listener: str | None = Attribute(
        """
        The Twisted server endpoint string the gateway listens on when
        C{[listen]} does not name this kind (C{"tcp:15432:interface=127.0.0.1"}),
        or C{None} for a front end that listens only when asked to.
        """
    )

    preauth: PreauthLimits = Attribute(
        """
        The L{hoopgw.config.PreauthLimits} of its listener when neither
        C{[preauth]} nor C{[preauth.<kind>]} says otherwise.
        """
    )

    def busy_refusal(message: str) -> bytes:
        """
        What a connection refused over its listener's pre-authentication
        caps is sent before it is closed: C{message} in the protocol's own
        words where the server may speak first in the clear (PostgreSQL's
        FATAL 53300, which libpq reports even in answer to its SSLRequest;
        a line before SSH's version line, RFC 4253 section 4.2), or C{b""}
        for a plain close (a listener that is TLS from the first byte).
        """

    def parse_connection(table: Table) -> tuple[str, Any]:
        """
        Read one C{[[connections]]} table of this kind.  Called at start-up
        (and by the admin command), never per connection.

        @param table: a L{hoopgw.config.Table}: typed accessors (C{string},
            C{required}, C{address}, C{secret}, C{path_value}, C{duration},
            ...) whose errors name the file, the key and what was expected.
            Its keys are already checked against L{connection_keys}.
        @return: C{(target, settings)}: the target as records and messages
            show it (C{"db.internal:5432"}), and the settings value the
            factory finds on L{Connection.settings <hoopgw.model.Connection>}
            (a frozen attrs value, so that the effective configuration
            shows it).
        @raise hoopgw.errors.ConfigError: from the table, for what is wrong.
        """

    def build(context: GatewayContext) -> IProtocolFactory:
        """
        Make the listener's protocol factory over the shared services.

        @param context: a L{hoopgw.gateway.GatewayContext}: the
            configuration, the L{SessionService
            <hoopgw.sessions.SessionService>}, the reactor and the
            gateway's TLS certificate and key.
        @return: an L{IProtocolFactory
            <twisted.internet.interfaces.IProtocolFactory>}; the gateway
            listens with it on the kind's endpoint, behind the
            pre-authentication limits.
        """
