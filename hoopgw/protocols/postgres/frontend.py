"""
The PostgreSQL front end: `psql`, `pgbench`, drivers connect here as to a
server.  TLS, a token as the password, a session on the connection named by
the database, then every statement is decided by policy and audited before
the gateway's own connection to the target runs it.  This module is the
glue: the start-up handshake is L{startup}'s, the server's protocol state
L{tracker}'s, the lexical settings L{lexical}'s, what statements reach on
the target L{reach}'s over L{catalog}'s snapshots.

Ordering.  Clients pipeline (the extended protocol always does), and every
decision is a Deferred, so client messages queue behind a pending decision
(and behind a COPY not yet started, or name changes not yet answered) and
are forwarded strictly in order; while they wait, the client is not read.
An extended-protocol execution is decided at its Bind, where the planner
can first run code.  A refused statement is never sent; in its place the
gateway sends one the server rejects (a syntax error for a Query, a Bind of
a statement that does not exist, an Execute of a portal that does not
exist).  The server's own error then arrives exactly where the client
expects it, aborts the transaction as a real error would, makes the server
skip to Sync in the extended protocol -- and the gateway replaces that
error with its own naming the rule.  A stand-in's name is fresh and random
each time, and client names with the reserved C{hoopgw_} prefix end the
connection (FATAL 08P01), so the stand-in can never be a portal the client
made.
"""

from __future__ import annotations

import base64
import enum
import hmac
import secrets
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, cast, Protocol as TypingProtocol

from attrs import evolve

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.errors import AuditUnavailable, NotPermitted
from hoopgw.interfaces import IActionHandle, ISession, ISessionService
from hoopgw.model import Action, Connection, Outcome, Source, Status
from hoopgw.protocols.postgres.settings import PostgresSettings
from hoopgw.protocols.postgres.sql import (
    StatementInfo,
    classify,
    mentions_secret,
    parameter_holds_secret,
    recordable,
    statement_info,
)
from hoopgw.protocols import IStreamTransport, ReadPause, Reading, _preauth, _tls as tls, set_no_delay
from hoopgw.protocols.postgres import codec, lexical, reach, startup
from hoopgw.protocols.postgres.reach import RelationGraph
from hoopgw.protocols.postgres.tracker import (
    Copy,
    Desync,
    Expect,
    NameChange,
    Pending,
    Portal,
    Tracker,
    ends_portals,
    rows_from_tag,
)
from hoopgw.protocols.postgres.catalog import Catalog, CatalogReader
from hoopgw.protocols.postgres.copyout import copy_spec
from hoopgw.protocols.postgres.masking import ResultMasking, string_literals
from hoopgw.protocols.postgres.auth import BackendAuthError
from hoopgw.protocols.postgres.backend import (
    BackendProtocol,
    TargetUnreachable,
    client_tls_options,
    target_address,
    unreachable,
)
from hoopgw.sessions import GATEWAY_RULE

if TYPE_CHECKING:
    from hoopgw.gateway import GatewayContext
    from hoopgw.reviews import Review

__all__ = ["ClientProtocol", "PostgresFrontEnd", "RowTransform", "make_front_end", "rows_from_tag"]

log = Logger()

# Decisions now (their handles) or later (a Deferred of them): see ClientProtocol._then.
_Handles = list[IActionHandle] | Deferred[list[IActionHandle]]


class RowTransform(TypingProtocol):
    """
    The masking seam (L{ResultMasking} is the gateway's): sees each
    result's RowDescription (answering a Deferred to hold the rows until it
    is ready), then rewrites its DataRows; also error and notice texts,
    notification payloads, parameter reports, fast-path results and COPY TO
    rows (a COPY TO's plan is L{ResultMasking}'s own).
    """

    def active(self) -> bool: ...

    def describe(self, description: codec.RowDescription) -> Deferred[None] | None: ...

    def row(self, row: codec.DataRow) -> bytes: ...

    def take_counts(self) -> dict[str, int] | None: ...

    def report(self, message: codec.ErrorResponse | codec.NoticeResponse) -> codec.ErrorResponse | codec.NoticeResponse: ...

    def notification(self, message: codec.NotificationResponse) -> codec.NotificationResponse: ...

    def parameter(self, message: codec.ParameterStatus) -> codec.ParameterStatus: ...

    def function_result(self, message: codec.GenericMessage) -> codec.GenericMessage: ...

    def copy_row(self, data: codec.CopyData, binary: bool) -> codec.CopyData: ...


# What a client may send while one of its statements waits for review.
_HELD_QUEUE_LIMIT = 1 << 20
# The outcome of what was forwarded before the gateway itself ended the
# session: the server got it and may have run it, but its answer is not read.
_ENDED_AFTER_FORWARDING = "outcome unknown: forwarded before the gateway ended the session"


def _action_kind(info: StatementInfo, default: str) -> str:
    """C{sql.copy} for a COPY (the DESIGN's action kind, so rules can name it), else C{default}."""
    return "sql.copy" if info.kinds[:1] == ("copy",) else default


def _parameter_record(value: bytes | None, binary: bool) -> Any:
    if value is None:
        return None
    # A connection string bound to a statement that does not say so
    # (SELECT dblink_connect($1)) carries its password all the same.
    if parameter_holds_secret(value):
        return "[redacted]"
    if binary:
        return {"base64": base64.b64encode(value).decode()}
    return value.decode("utf-8", "replace")


# Server messages masking looks at (other than DataRows).
_MASKED = frozenset({
    codec.RowDescription, codec.ErrorResponse, codec.NoticeResponse, codec.NotificationResponse,
    codec.CopyOutResponse, codec.CopyData, codec.GenericMessage, codec.ParameterStatus,
})

# Statement and portal names the gateway keeps for its own stand-ins.
RESERVED_PREFIX = "hoopgw_"

# Messages judged by what names hold (and the Query, whose EXECUTE does).
_USES_NAMES = frozenset({codec.Bind, codec.Execute, codec.Query, codec.FunctionCall})
# The server keys statements and portals by their first 63 bytes in its own
# encoding; names that are plain ASCII and no longer are the same to both.
_NAME_MAX = 63
_NAME_RULE = "a statement or portal name that is not ASCII, or longer than 63 bytes,"


def _plain_name(name: str) -> bool:
    return len(name) <= _NAME_MAX and name.isascii()


# The extended-protocol messages that name a statement or a portal.
_NAMING = frozenset({codec.Parse, codec.Bind, codec.Describe, codec.Close, codec.Execute})


def _names(message: codec.Message) -> tuple[str, ...]:
    # (Casts, not isinstance: this runs for each extended-protocol message.)
    kind = type(message)
    if kind is codec.Parse:
        return (cast(codec.Parse, message).statement,)
    if kind is codec.Bind:
        bind = cast(codec.Bind, message)
        return (bind.portal, bind.statement)
    if kind is codec.Execute:
        return (cast(codec.Execute, message).portal,)
    return (cast("codec.Describe | codec.Close", message).name,)


# Settings whose change the gateway must follow or refuse (lexical.py).
_LEXICAL_SETTINGS = frozenset({lexical.STANDARD_CONFORMING_STRINGS, lexical.CLIENT_ENCODING})
_SET_CONFIG = frozenset({"set_config", "pg_catalog.set_config"})
_PIPELINED_SENSITIVE = (
    "this statement has a backslash in a string, or non-ASCII text, and was pipelined behind a statement "
    "that may change standard_conforming_strings or client_encoding, so the gateway cannot know how the "
    "server will read it; send it once the previous results are in"
)
_UNKNOWN_STATEMENT = StatementInfo(text="", kinds=("unknown",), writes_data=True)


def _function_call(oid: int, name: str | None) -> tuple[Action, StatementInfo]:
    """
    The action of a FunctionCall of C{oid}, which the catalog names C{name}
    (C{None}: unknown), and the facts it is judged by.
    """
    if name is None:
        info = StatementInfo(
            text=f"function call oid {oid} (not in the target's catalog)",
            kinds=("call", "unknown"),
            functions=(str(oid),),
            writes_data=True,
        )
    else:
        # Both spellings, as rules may name it either way (classify reports
        # a call as written, usually unqualified).
        info = StatementInfo(
            text=f"function call {name} (oid {oid})",
            kinds=("call",),
            functions=(name.split(".", 1)[1], name),
            writes_data=True,
        )
    return Action(kind="sql.call", input=info.text, attributes=info.attributes()), info


def _finish(handle: IActionHandle, outcome: Outcome) -> None:
    handle.finish(outcome)


def _changes_names(info: StatementInfo) -> bool:
    """
    A statement of a Query that PREPARE/DEALLOCATE/DISCARDs prepared
    statements, or after which the gateway no longer knows the portals.
    """
    return info.kinds[:1] in (("prepare",), ("deallocate",), ("discard",)) or ends_portals(info)


class PostgresFrontEnd(Factory):
    """One per listener: builds client protocols, owns the cancel-key map."""

    def __init__(
        self,
        *,
        sessions: ISessionService,
        tls_options: Any,
        reactor: Any,
        connect: Callable[[PostgresSettings, Protocol], Deferred[Any]] | None = None,
        transform_for: Callable[[ISession], RowTransform | None] | None = None,
        catalog_for: Callable[[Connection], CatalogReader] | None = None,
    ) -> None:
        self.sessions = sessions
        # Read once here (start-up), never per login on the reactor.
        self.passwords = {
            c.name: c.settings.password.read()
            for c in sessions.connections.values()
            if c.kind == "postgres" and c.settings.password is not None
        }
        # Target TLS options too: the CA file is read here, not per login.
        self.target_tls = {
            c.name: client_tls_options(c.settings)
            for c in sessions.connections.values()
            if c.kind == "postgres" and c.settings.tls != "disable"
        }
        self.tls_options = tls_options
        self.reactor = reactor
        self.connect = connect or self._connect
        self.transform_for = transform_for or self._masking_for
        self.cancel_keys: dict[int, "ClientProtocol"] = {}
        self._catalog_for = catalog_for or self._new_catalog
        self._catalogs: dict[str, CatalogReader] = {}

    def _masking_for(self, session: ISession) -> RowTransform | None:
        """Masking (masking.py) for every session of a gateway that masks: masks may come with a reload."""
        if session.service.masking is None:
            return None
        return ResultMasking(lambda: session.masks, self.catalog(session.connection))

    def _new_catalog(self, connection: Connection) -> Catalog:
        return Catalog(connection.settings, self.passwords.get(connection.name), reactor=self.reactor)

    def catalog(self, connection: Connection) -> CatalogReader:
        """The target's catalog, on the gateway's own connection to it (opened on first use)."""
        catalog = self._catalogs.get(connection.name)
        if catalog is None:
            catalog = self._catalogs[connection.name] = self._catalog_for(connection)
        return catalog

    def stopFactory(self) -> None:
        catalogs, self._catalogs = self._catalogs, {}
        for catalog in catalogs.values():
            catalog.close()

    def _connect(self, settings: PostgresSettings, protocol: Protocol) -> Deferred[Protocol]:
        endpoint = HostnameEndpoint(self.reactor, settings.host, settings.port, timeout=settings.login_timeout)
        connecting: Deferred[Protocol] = connectProtocol(endpoint, protocol)
        return connecting

    def buildProtocol(self, addr: Any) -> "ClientProtocol":
        protocol = ClientProtocol(self, Source.from_address("postgres", addr))
        protocol.factory = self
        return protocol

    def register_cancel_key(self, client: "ClientProtocol") -> tuple[int, bytes]:
        while True:
            pid = secrets.randbits(31) or 1
            if pid not in self.cancel_keys:
                break
        self.cancel_keys[pid] = client
        return pid, secrets.token_bytes(4)


class Phase(str, enum.Enum):
    """Where a client connection is (a str, so logs and tests read it as text)."""

    STARTUP = "startup"  # SSLRequest, StartupMessage
    PASSWORD = "password"  # the token is asked for
    AUTHENTICATING = "authenticating"  # token, session and target login under way
    READY = "ready"  # the relay
    CLOSING = "closing"  # Terminate forwarded
    CLOSED = "closed"


class ClientProtocol(Protocol):
    """One client connection: start-up, authentication, then the relay."""

    transport: IStreamTransport

    def __init__(self, front: PostgresFrontEnd, source: Source) -> None:
        self.front = front
        self.source = source
        self.parser = codec.FrontendParser()
        self.state = Phase.STARTUP
        self.handshake = startup.Handshake(tls_available=front.tls_options is not None)
        self.session: ISession | None = None
        self.backend: BackendProtocol | None = None
        self.cancel_pid = 0
        self.cancel_secret = b""
        self.transform: RowTransform | None = None
        self._held: list[codec.Message] | None = None  # server messages held while masking reads the catalog
        self._backend_reading: Reading | None = None
        self._copy_out_binary = False  # the COPY TO under way is in binary format
        self.tracker = Tracker(finish=_finish)
        self.reading: Reading | None = None  # the client transport's, once connected
        self.settings = lexical.Settings()
        self._batch_open = False  # extended-protocol messages since the last Sync
        self._queue: deque[codec.Message] = deque()
        self._waiting = False
        self._draining = False
        self._denials = 0
        self._review: Review | None = None  # the review a statement of this session waits for
        self._held_bytes = 0  # received while it waits
        self._catalog_changed = False  # DDL was sent in the transaction now open
        self._fresh = True  # nothing has run since the server was last idle outside a transaction
        self._renamed: dict[str, str] = {}  # relations it renamed meanwhile: new name -> old
        self._linked = False  # the two transports are each other's producers
        self.bytes_in = 0
        self.bytes_out = 0

    # -- plumbing --------------------------------------------------------------

    def _send(self, *messages: codec.Message) -> None:
        data = b"".join(codec.encode(m) for m in messages)
        self.bytes_out += len(data)
        self.transport.write(data)

    def _fatal(self, code: str, message: str) -> None:
        backend = self.backend
        if backend is not None:
            # What earlier decisions released this turn (recorded, corked)
            # reaches the server before the session's end is recorded.
            backend.uncork()
        self._send(codec.error_response("FATAL", code, message))
        self._unlink()
        self.transport.loseConnection()
        self.state = Phase.CLOSED

    def _terminated(self, reason: str) -> None:
        """
        The gateway ends the session (its access grant ended, the gateway
        stops): FATAL 57P01, as a server's "terminating connection due to
        administrator command", with the gateway's reason.  A statement still running
        on the target is cancelled there (closing the connection would not
        stop it: the server notices only when it next writes); whether it
        finished first is not known, and its outcome says so.
        """
        backend, session = self.backend, self.session
        if backend is not None and backend.key is not None and session is not None and self.tracker.expect:
            self._send_cancel(session, backend).addErrback(
                lambda f: log.failure("the statement of a terminated session could not be cancelled", f)
            )
        if self.state is not Phase.CLOSED:
            self._fatal("57P01", f"terminating connection due to administrator command (hoopgw: {reason})")
        if backend is not None and backend.transport is not None:
            backend.on_lost = None
            backend.abort()
        self._teardown(
            "closed",
            unfinished=f"outcome unknown: the session was ended ({reason}) while this ran; "
            "the gateway asked the server to cancel it",
        )

    def listener_stopped(self, reason: str) -> None:
        """The gateway stops while this client is still logging in: FATAL 57P01, as for a session."""
        if self.session is not None:
            return  # its session is told (Session.on_terminate)
        if self.state is not Phase.CLOSED:
            self._fatal("57P01", f"terminating connection due to administrator command (hoopgw: {reason})")

    def _unlink(self) -> None:
        """
        Undo the backpressure links before closing: a TLS transport with a
        producer registered does not close, and a paused peer must not stay
        paused by a side that is gone.
        """
        if not self._linked:
            return
        self._linked = False
        backend = self.backend
        for transport in (self.transport, backend.transport if backend is not None else None):
            # A lost transport has dropped its producer (and, with TLS, cannot be asked).
            if transport is not None and getattr(transport, "connected", True):
                transport.unregisterProducer()

    def connectionMade(self) -> None:
        self.reading = Reading(self.transport)
        # An answer forwarded right after a write the client has not ACKed yet
        # (a held statement's notice, then its result once approved) must not
        # wait out the client's delayed ACK.
        set_no_delay(self.transport)
        tls.send_at_once(self.transport)  # (a relay writes one batch per read: no reason to wait a turn)

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        try:
            messages = self.parser.feed(data)
        except codec.ProtocolError as e:
            # CVE-2021-23214 class (bytes pipelined behind SSLRequest) lands here too.
            log.info("postgres client {source}: protocol error: {error}", source=self.source.address, error=str(e))
            self.transport.abortConnection()
            self.state = Phase.CLOSED
            return
        if self.state is Phase.READY:
            self._queue.extend(messages)
            self._drain()
            if self._review is not None and self.state is Phase.READY:
                # A statement waits for a human: keep reading, so that a client
                # that leaves is seen (and its request cancelled) -- but only so much.
                self._held_bytes += len(data)
                if self._held_bytes > _HELD_QUEUE_LIMIT:
                    self._fatal("54000", "hoopgw: too much sent while a statement waits for review")
                    self._teardown("failed", error="the client sent over 1 MiB while a statement waited for review")
                return
            if self._queue and self.reading is not None and self.state is Phase.READY:
                # Messages wait (a decision, a COPY not yet started, answers
                # that settle names): read no more until they are forwarded,
                # so one client cannot fill the gateway's memory.
                self.reading.pause("queue")
            return
        for message in messages:
            if self.state is Phase.STARTUP or self.state is Phase.PASSWORD:
                self._startup_message(message)
            elif self.state is Phase.CLOSED:
                return
            else:
                self._queue.append(message)  # pipelined behind authentication

    # -- start-up and authentication -----------------------------------------

    def _startup_message(self, message: codec.Message) -> None:
        step = self.handshake.receive(message)
        if isinstance(step, startup.Encryption):
            self.transport.write(step.answer)
            if step.start_tls:
                self.transport.startTLS(self.front.tls_options)
                tls.send_at_once(self.transport)  # (TLS writes its records through an object of its own)
            self.parser.encryption_answered()
        elif isinstance(step, startup.AskPassword):
            self.state = Phase.PASSWORD
            self._send(codec.AuthenticationCleartextPassword())
        elif isinstance(step, startup.Authenticate):
            self.state = Phase.AUTHENTICATING
            self._authenticate(step.token)
        elif isinstance(step, startup.Cancel):
            self._cancel(step.request)
        else:
            self._refused(step.code, step.message, message)

    def _refused(self, code: str, reason: str, message: codec.Message) -> None:
        """A start-up refused before any session (sent in the clear, out of order): FATAL, and recorded."""
        request: dict[str, Any] = {"message": type(message).__name__}
        user = None
        # The start-up packet refused, or the one before the message refused.
        asked = message if isinstance(message, codec.StartupMessage) else self.handshake.startup
        if asked is not None:
            user = asked.user or ""
            request["database"] = asked.database or ""
        self.front.sessions.refused(self.source, code, reason, request=request, user=user)
        self._fatal(code, reason)

    def _authenticate(self, token: str) -> None:
        sessions = self.front.sessions
        handshake = self.handshake
        d = sessions.authenticate_token(token, source=self.source, user=handshake.user).addCallback(
            lambda identity: sessions.open(
                identity, handshake.database, kind="postgres", source=self.source, client=handshake.client()
            )
        )
        d.addCallback(self._session_opened)
        d.addErrback(self._startup_failed, handshake.user)

    def _session_opened(self, session: ISession) -> Deferred[None]:
        self.session = session
        session.literals = string_literals  # E'...' and U&'...' values, for the trail's detectors
        session.traffic = lambda: (self.bytes_in, self.bytes_out)
        session.on_terminate = self._terminated
        if self.state is Phase.CLOSED:  # the client went away meanwhile
            return session.close(status="client disconnected").addCallback(lambda _: None)
        settings: PostgresSettings = session.connection.settings
        password = self.front.passwords.get(session.connection.name)
        asked = self.handshake.startup
        assert asked is not None  # (authenticated: the start-up packet came first)
        backend = BackendProtocol(
            settings,
            password=password,
            startup=startup.target_parameters(asked),
            tls_options=self.front.target_tls.get(session.connection.name),
        )
        ready = backend.ready
        assert ready is not None  # (a new protocol's)

        def connected(_: object) -> Deferred[BackendProtocol]:
            return ready

        def not_connected(failure: Failure) -> Failure:
            return Failure(unreachable(failure, settings))

        # No TCP connection at all (refused, no route, no name): the target
        # is down or unreachable, and the client is told so (08001).
        d: Deferred[BackendProtocol] = self.front.connect(settings, backend).addCallbacks(connected, not_connected)

        def too_slow(result: object, timeout: float) -> Failure:
            # A target that accepts the connection and then stalls (or a
            # black-holed address) must not hold the client for ever.
            backend.ready = None
            if backend.transport is None:
                # Never connected: a black-holed address, or a name lookup that hangs.
                return Failure(
                    TargetUnreachable(
                        f"no answer from {target_address(settings)} within {timeout:g} s (login_timeout)"
                    )
                )
            backend.transport.abortConnection()
            return Failure(
                BackendAuthError(
                    f"the target did not finish connecting and logging in within {timeout:g} s (login_timeout)"
                )
            )

        d.addTimeout(settings.login_timeout, self.front.reactor, onTimeoutCancel=too_slow)
        return d.addCallback(self._backend_ready)

    def _backend_ready(self, backend: BackendProtocol) -> None:
        if self.state is Phase.CLOSED:
            backend.transport.loseConnection()
            return
        session, reading = self.session, self.reading
        assert session is not None and reading is not None  # (the session is open, the client connected)
        try:
            self.settings = lexical.Settings.from_startup(backend.parameters)
        except lexical.LexicalError as e:
            backend.transport.loseConnection()
            self._fatal("0A000", f"hoopgw: {e}")
            session.close(status="failed", error=str(e))
            return
        self.backend = backend
        backend.deliver = self._server_messages
        backend.rows_unread = self._rows_unread
        backend.on_lost = self._backend_lost
        # Backpressure both ways: while one side's send buffer is full, stop
        # reading from the other, whose kernel buffer then fills and whose
        # sender blocks (a target streaming a large result to a slow client
        # waits in ClientWrite instead of filling the gateway's memory).
        self._backend_reading = Reading(backend.transport)
        self.transport.registerProducer(ReadPause(self._backend_reading), True)
        backend.transport.registerProducer(ReadPause(reading), True)
        self._linked = True
        self.cancel_pid, self.cancel_secret = self.front.register_cancel_key(self)
        self.transform = self.front.transform_for(session)
        if isinstance(self.transform, ResultMasking):
            self.transform.unsure = lambda: self._catalog_changed
            self.transform.fresh = lambda: self._fresh
            self.transform.codec = self.settings.codec or "utf-8"
        self._send(*startup.welcome(backend.parameters, self.cancel_pid, self.cancel_secret))
        _preauth.authenticated(self)  # the listener's pre-authentication deadline and caps end here
        self.state = Phase.READY
        self._drain()

    def _startup_failed(self, failure: Failure, user: str) -> None:
        refusal = startup.refusal(failure, user)
        if refusal.unexpected:
            log.failure("postgres start-up failed", failure)
        elif refusal.session_error is not None and self.session is not None:
            # The target is down, or refused the gateway's login: one line
            # for the operator (the client and session.end have the reason).
            log.warn(
                "postgres session {session} ({connection}): cannot connect to the target: {error}",
                session=self.session.id,
                connection=self.session.connection.name,
                error=refusal.session_error,
            )
        self._fatal(refusal.code, refusal.message)
        if refusal.session_error is not None and self.session is not None:
            self.session.close(status="failed", error=refusal.session_error)

    def _cancel(self, request: codec.CancelRequest) -> None:
        """
        Ctrl-C in psql: the key the client holds is the gateway's own; only a
        matching key cancels, and only that client's query on the target.
        """
        self.transport.loseConnection()
        self.state = Phase.CLOSED
        owner = self.front.cancel_keys.get(request.process_id)
        if owner is None or not hmac.compare_digest(owner.cancel_secret, request.secret_key):
            self.front.sessions.auth_failed(
                source=self.source, reason="cancel request with an unknown key", method="cancel"
            )
            return
        owner.cancel_backend()

    def cancel_backend(self) -> None:
        # Nothing runs on the server yet while a review holds it: Ctrl-C withdraws the request.
        if self.front.sessions.withdraw_review(self._review, "withdrawn by the client (a cancel request)"):
            return
        backend, session = self.backend, self.session
        if backend is None or backend.key is None or session is None:
            return
        d = session.check(Action(kind="sql.cancel", input="cancel request"))

        def decided(handle: IActionHandle) -> None:
            if not handle.allowed:
                return
            def sent(_: object) -> None:
                handle.finish(Outcome(status=Status.succeeded))

            def not_sent(failure: Failure) -> None:
                handle.finish(Outcome(status=Status.failed, error=failure.getErrorMessage()))

            self._send_cancel(session, backend).addCallbacks(sent, not_sent)

        d.addCallback(decided)
        d.addErrback(lambda f: log.failure("cancel request not forwarded", f))

    def _send_cancel(self, session: ISession, backend: BackendProtocol) -> Deferred[Any]:
        """A CancelRequest with the target's key, on a connection of its own (as libpq's PQcancel)."""
        settings: PostgresSettings = session.connection.settings
        key = backend.key
        assert key is not None  # (callers check: the target gave one)
        request = codec.encode(codec.CancelRequest(key.process_id, key.secret_key))
        return self.front.connect(settings, _OneShot(request))

    # -- the relay: client to server -----------------------------------------

    def _drain(self) -> None:
        """
        Forward queued messages until one waits for its decision, or for the
        server to say whether a COPY started.  A decision that fires at once
        (the usual case) resumes this same loop rather than a nested one, so
        a long pipeline costs no stack.  What it forwards, decided statements
        included, goes to the server as one write (L{BackendProtocol.cork});
        what a refused message dropped from its batch is never written.
        """
        if self._draining:
            return
        self._draining = True
        backend = self.backend
        if backend is not None:
            backend.cork()
        try:
            self._drain_queue()
        finally:
            self._draining = False
            if backend is not None:
                backend.uncork()

    def _drain_queue(self) -> None:
        backend = self.backend
        if backend is None:
            return  # (not relaying yet: nothing is forwarded before READY, which comes with the backend)
        tracker = self.tracker
        queue = self._queue
        out: list[bytes] = []
        while queue and not self._waiting and self.state is Phase.READY and not tracker.holding:
            message = queue.popleft()
            kind = type(message)
            if tracker.copy is Copy.IN:
                # The server reads COPY data: it ignores Sync and Flush there,
                # and would take any other message as the copy's failure.
                if kind is codec.CopyData:
                    out.append(message.raw or codec.encode(message))  # (parsed: raw, always)
                elif kind is codec.CopyDone or kind is codec.CopyFail:
                    tracker.copy_ended()
                    out.append(codec.encode(message))
                elif kind is not codec.Sync and kind is not codec.Flush:
                    self._protocol_violation(f"a {kind.__name__} message during COPY FROM STDIN")
                    return
                continue
            if kind is codec.CopyData or kind is codec.CopyDone or kind is codec.CopyFail:
                continue  # outside copy-in the server ignores them
            if kind in _USES_NAMES and tracker.changes and self._names_uncertain(message):
                queue.appendleft(message)  # forwarded once the server has answered them
                break
            if kind in _NAMING:
                names = _names(message)
                if any(name.startswith(RESERVED_PREFIX) for name in names):
                    self._reserved_name(message)
                    return
                if not all(_plain_name(name) for name in names):
                    self._protocol_violation(_NAME_RULE)
                    return
                if tracker.skipping:
                    continue  # the server skips it: an earlier message of this batch failed
                self._batch_open = True
            elif self._batch_open and (kind is codec.Query or kind is codec.FunctionCall):
                self._query_in_batch(message)
                return
            if kind is codec.Execute:
                execute = cast(codec.Execute, message)
                handle = tracker.take_bound(execute.portal)
                if handle is not None:
                    # Decided and recorded at its Bind.
                    self._describe_for_masking(execute.portal, out.append)
                    tracker.forward(Pending(Expect.EXECUTE, handle=handle, copy_in=self._copies_in(execute)))
                    out.append(message.raw or codec.encode(message))
                    continue
            elif kind is codec.Parse:
                parse = cast(codec.Parse, message)
                refusal = self._parse_refusal(parse)
                if refusal is not None:
                    if out:
                        backend.write_raw(b"".join(out))
                        out = []
                    self._waiting = True
                    self._refuse_parse(parse, refusal)
                    continue
            check = self._checks.get(kind)
            if check is not None:
                if out:  # what preceded the statement goes first
                    backend.write_raw(b"".join(out))
                    out = []
                self._waiting = True
                check(self, message)
                continue
            if kind is codec.Describe:
                tracker.forward(Pending(Expect.DESCRIBE))
            elif kind is codec.Close:
                close = cast(codec.Close, message)
                what = "close-statement" if close.kind == "S" else "close-portal"
                tracker.forward(Pending(Expect.CLOSE, change=NameChange(what, close.name)))
            elif kind is codec.Sync:
                self._batch_open = False
                tracker.forward(Pending(Expect.SYNC))
            elif kind is codec.Terminate:
                self.state = Phase.CLOSING
            out.append(codec.encode(message))
        if out:
            backend.write_raw(b"".join(out))
        if not queue and self.reading is not None and self.state is Phase.READY:
            self.reading.resume("queue")
        if self.state is Phase.CLOSING:
            self._unlink()
            self.transport.loseConnection()

    def _names_uncertain(self, message: codec.Message) -> bool:
        """A Bind waits only for its statement's name, an Execute for its portal's; a Query for any."""
        kind = type(message)
        if kind is codec.Bind:
            return self.tracker.names_uncertain("statement", cast(codec.Bind, message).statement)
        if kind is codec.Execute:
            return self.tracker.names_uncertain("portal", cast(codec.Execute, message).portal)
        return self.tracker.names_uncertain()

    def _copies_in(self, message: codec.Execute) -> bool:
        portal = self.tracker.view()[1].get(message.portal)
        return portal is not None and portal.info is not None and portal.info.copy_in

    # -- reading statements as the server will -----------------------------------

    def _parse_refusal(self, message: codec.Parse) -> str | None:
        """
        Forward a Parse at once (classified into the view), or say why it
        cannot be read as the server will read it.
        """
        text = self.settings.text(message.query)
        if not self.tracker.settled and lexical.sensitive(text):
            return _PIPELINED_SENSITIVE
        info = statement_info(text)
        self.tracker.forward(Pending(Expect.PARSE, change=NameChange("parse", message.statement, info)))
        return None

    def _refuse_parse(self, message: codec.Parse, refusal: str) -> None:
        text = self.settings.text(message.query)
        action = Action(kind="sql.execute", input=recordable(text.strip()), details={"statement": message.statement})
        session, backend = self.session, self.backend
        assert session is not None and backend is not None  # (relaying)
        d = session.refuse(action, refusal)

        def refused(handle: IActionHandle) -> None:
            if self._gone([handle]):
                return
            marker = self._stand_in()
            # A Parse the server rejects (a syntax error naming the marker),
            # under a name of the gateway's so the client's names stay.
            self.tracker.forward_stand_in(Pending(Expect.PARSE, marker=marker, denial=self._denial(handle)))
            backend.write(codec.Parse(marker, marker))

        d.addCallback(refused)
        d.addCallbacks(self._resume, self._refused_all)

    def _setting_refusal(self, info: StatementInfo) -> str | None:
        """Why the gateway cannot follow a statement: it changes a setting the gateway pins (L{lexical.setting_refusal})."""
        if not info.settings and not info.functions:
            return None
        if _LEXICAL_SETTINGS.isdisjoint(info.settings) and _SET_CONFIG.isdisjoint(info.functions):
            return None
        return lexical.setting_refusal(info.text)

    def _describe_for_masking(self, portal: str, send: Callable[[bytes], object]) -> None:
        """
        Before an Execute whose rows may be masked: the gateway's own
        Describe of the portal, whose answer (kept from the client) plans the
        rows with their real formats, whatever the client described before.
        """
        if self.transform is None or self.session is None:
            return
        masks = self.session.masks
        if masks is None or not masks.masks_results:
            return
        self.tracker.forward(Pending(Expect.DESCRIBE, own=True))
        send(codec.encode(codec.Describe("P", portal)))

    def _masking_refusal(self, info: StatementInfo) -> str | None:
        """
        A COPY TO while masks by column apply, other than C{COPY relation
        TO STDOUT} (masked by column, copyout.py): a query's output has no
        column origins to mask by, and a file or program is beyond the
        gateway's reach, so it is refused rather than sent in clear.
        """
        if info.kinds[:1] != ("copy",) or info.copy_in or self.transform is None or self.session is None:
            return None
        masks = self.session.masks
        if masks is None or not masks.client:
            return None
        spec = copy_spec(info.text)
        if spec is not None and spec.encoding is not None:
            return (
                "COPY ... (ENCODING ...) is refused while masks apply to you on this connection "
                f"(mask {masks.client[0].name!r}): its rows would not be read as your client reads them; "
                "set client_encoding instead"
            )
        if masks.by_origin and (spec is None or not spec.by_column):
            return (
                "COPY (query) TO and COPY ... TO a file or program are refused while masks by column apply to you "
                f"on this connection (mask {masks.by_origin[0].name!r}): use COPY table TO STDOUT, or SELECT"
            )
        return None

    def _check_or_refuse(
        self, actions: list[Action], infos: list[StatementInfo], judged: list[StatementInfo] | None = None
    ) -> _Handles:
        """
        Decide C{actions}, unless one of them changes a setting the gateway
        pins; C{judged} (default C{infos}) are the facts each is judged by,
        widened by what their relations reach on the target (L{reach}).
        """
        for action, info in zip(actions, infos):
            refusal = self._setting_refusal(info) or self._masking_refusal(info)
            if refusal is not None:
                session = self.session
                assert session is not None  # (relaying)
                return session.refuse(action, refusal).addCallback(self._decided_one)
        return self._judge(actions, judged if judged is not None else infos)

    def _judge(self, actions: list[Action], judged: list[StatementInfo]) -> _Handles:
        """Decide C{actions}, each by its facts in C{judged} widened by what they reach on the target."""
        names = False
        for info in judged:  # loops, not generators: this runs per statement
            if not self._catalog_changed and reach.changes_catalog(info):
                # Read again once the transaction it ran in has ended (before,
                # the gateway's own connection would not see the change).
                self._catalog_changed = True
            if info.renames:
                for old, new in info.renames:
                    self._renamed[new] = self._renamed.get(old, old)
            if not names and reach.needs_catalog(info):
                names = True
        if self._renamed:
            judged = [reach.with_renames(info, self._renamed) for info in judged]
        if not names:
            return self._decide(actions)
        session = self.session
        assert session is not None  # (relaying)
        catalog = self.front.catalog(session.connection)
        fresh = catalog.current()
        if fresh is not None:
            return self._widened(fresh, catalog, actions, judged, True)
        return catalog.graph().addCallback(self._widened, catalog, actions, judged, True)

    def _widened(
        self,
        graph: RelationGraph | None,
        catalog: CatalogReader,
        actions: list[Action],
        judged: list[StatementInfo],
        again: bool,
    ) -> _Handles:
        # A method, not a closure: a closure that passes itself on would be
        # a reference cycle per statement, left to the garbage collector.
        if self.state is not Phase.READY:
            return []  # the client left while the catalog was read: nothing to decide
        widened = []
        remember: set[int] = set()
        for action, info in zip(actions, judged):
            if graph is None:
                reached = reach.unreadable(info)
            else:
                reached, missing = graph.reach(info)
                if missing and again:
                    # A name the snapshot lacks: renamed or created since?
                    return catalog.newer(missing).addCallback(self._widened, catalog, actions, judged, False)
                if reached.changes_catalog and not self._catalog_changed:
                    self._catalog_changed = True  # DDL in a function it calls
                if reach.changes_catalog(reached) and reached.writes:
                    remember |= graph.resolve(reached.writes, reached.unqualified)
            attributes = reached.attributes()
            widened.append(action if attributes is action.attributes else evolve(action, attributes=attributes))
        if remember and self._masks_by_origin():
            # Before DDL runs: the names its relations' columns have now, so
            # that a mask naming one still covers it once renamed.
            return catalog.origins(remember).addCallback(lambda _: self._decide(widened))
        return self._decide(widened)

    def _masks_by_origin(self) -> bool:
        masks = self.session.masks if self.session is not None else None
        return masks is not None and bool(masks.by_origin)

    # -- statement and portal names --------------------------------------------
    #
    # The tracker (tracker.py) keeps them: a change the gateway forwards holds
    # only once the server has answered it without an error, and statements
    # are judged against the view -- the confirmed names plus every change
    # still in flight, in order (an Execute pipelined behind its Parse and Bind).

    def _reserved_name(self, message: codec.Message) -> None:
        """
        A client naming a statement or portal C{hoopgw_...}: the namespace of
        the gateway's stand-ins.  A protocol violation; the connection ends.
        """
        self._fatal(
            "08P01",
            f'hoopgw: statement and portal names beginning with "{RESERVED_PREFIX}" are reserved '
            f"for the gateway ({type(message).__name__} refused)",
        )
        self._teardown("failed", error=f"client used a reserved {RESERVED_PREFIX} name", unfinished=_ENDED_AFTER_FORWARDING)

    def _query_in_batch(self, message: codec.Message) -> None:
        """
        A Query or FunctionCall after extended-protocol messages without a
        Sync between: the server runs it, or skips it if the batch failed,
        and only then answers with a ReadyForQuery, which the gateway cannot
        know when it forwards it.  Drivers send a Sync first; the connection
        ends.
        """
        self._protocol_violation(f"a {type(message).__name__} message after extended-protocol messages without a Sync")

    def _protocol_violation(self, what: str) -> None:
        """A message order whose effect on the server the gateway cannot follow: the connection ends."""
        self._fatal("08P01", f"hoopgw: {what} is not relayed (the gateway cannot follow its effect on the server)")
        self._teardown("failed", error=f"protocol violation: {what}", unfinished=_ENDED_AFTER_FORWARDING)

    def _decide(self, actions: list[Action]) -> _Handles:
        """
        Check actions one after the other (records stay in statement
        order): their handles at once when every decision and record was
        immediate (the usual case: no Deferred on the way), else a Deferred
        from the first that waited.
        """
        session = self.session
        assert session is not None
        handles: list[IActionHandle] = []
        for i, action in enumerate(actions):
            result = session.check_now(action, self._held_for_review)
            if isinstance(result, Deferred):
                d: Deferred[object] = result.addCallback(handles.append)
                for later in actions[i + 1:]:
                    d.addCallback(self._check_next, session, later, handles)
                return d.addCallback(lambda _: handles)
            handles.append(result)
        return handles

    def _check_next(
        self, _: object, session: ISession, action: Action, handles: list[IActionHandle]
    ) -> Deferred[None]:
        """Check C{action} once the one before it is checked, and keep its handle."""
        return session.check(action, self._held_for_review).addCallback(handles.append)

    def _decided_one(self, handle: IActionHandle) -> list[IActionHandle]:
        return [handle]

    def _held_for_review(self, review: Review) -> None:
        """A statement held for review: psql is told at once (it waits, as for a slow statement)."""
        self._review = review
        self._held_bytes = 0
        if self.state is not Phase.READY:
            return
        if self.reading is not None:
            self.reading.resume("queue")  # (see dataReceived: a client leaving must be seen)
        rule = f" (rule {review.rule!r})" if review.rule else ""
        self._send(codec.NoticeResponse([
            ("S", "NOTICE"), ("V", "NOTICE"), ("C", "00000"),
            ("M", f"hoopgw: this statement waits for review {review.id}{rule}; it runs once approved"),
            ("D", f"approvers: {', '.join(review.requirement.approvers)}; it expires in "
                  f"{review.timeout_seconds} s; Ctrl-C withdraws it"),
            ("H", f"an approver runs: hoopgw reviews approve {review.id}"),
        ]))
        review.wait().addCallback(self._review_ended)

    def _review_ended(self, review: Review) -> None:
        if self._review is review:
            self._review = None
            if self._queue and self.reading is not None and self.state is Phase.READY:
                self.reading.pause("queue")  # as dataReceived would have

    def _resume(self, _: object = None) -> None:
        # Inside the running loop (a decision that fired at once) this only
        # clears _waiting and the loop carries on; fired later, it drains.
        self._waiting = False
        try:
            self._drain()
        except Exception:
            # Raised here it would end in the decision's Deferred, unseen.
            log.failure("postgres relay failed")
            if self.state is Phase.READY:
                self._fatal("XX000", "the gateway failed relaying this connection")
                self._teardown("failed", error="internal error")

    def _then(self, handles: _Handles, decided: Callable[[list[IActionHandle]], None]) -> None:
        """
        Act on decisions (C{decided}), then go on relaying: at once when
        they were immediate, else when they fire; a failure to decide (the
        audit log unavailable) ends the connection either way.
        """
        if isinstance(handles, Deferred):
            handles.addCallback(decided)
            handles.addCallbacks(self._resume, self._refused_all)
            return
        try:
            decided(handles)
        except Exception:
            self._refused_all(Failure())
            return
        self._resume()

    def _refused_all(self, failure: Failure) -> None:
        if failure.check(NotPermitted) and (self.session is None or self.session.closed):
            return  # the client left (the session closed) while earlier statements were decided
        if failure.check(AuditUnavailable):
            self._fatal("57P03", "the gateway's audit log is unavailable, so it refuses all traffic")
        else:
            log.failure("statement check failed", failure)
            self._fatal("XX000", "the gateway could not decide this statement")
        self._teardown("failed", unfinished=_ENDED_AFTER_FORWARDING)

    def _denial(self, handle: IActionHandle) -> codec.ErrorResponse:
        decision = handle.decision
        if decision.rule == GATEWAY_RULE:
            return codec.error_response(
                "ERROR", "0A000", f"hoopgw: {decision.message}", detail="nothing was sent to the server"
            )
        rule = decision.rule or "no matching allow rule"
        review = handle.review
        if review is not None:
            return codec.error_response(
                "ERROR",
                "42501",
                f"hoopgw: {review.refusal()}",
                detail=f"refused by policy rule {rule!r} after review {review.id}; nothing was sent to the server",
            )
        return codec.error_response(
            "ERROR",
            "42501",
            f"hoopgw: {decision.message or 'statement refused'}",
            detail=f"refused by policy rule {rule!r}; nothing was sent to the server",
        )

    def _stand_in(self) -> str:
        """
        A fresh, unguessable name for a stand-in: the client cannot have made
        a portal of that name (and may not use the reserved prefix at all).
        """
        self._denials += 1
        return f"{RESERVED_PREFIX}refused_{secrets.token_hex(16)}"

    def _gone(self, handles: list[IActionHandle]) -> bool:
        """
        The client went away while these were being decided: nothing is
        forwarded, and their outcomes are recorded now (no answer will come).
        """
        if self.state is Phase.READY:
            return False
        for handle in handles:
            handle.finish(Outcome(status=Status.failed, error="client disconnected before the decision"))
        return True

    def _check_query(self, message: codec.Query) -> None:
        text = self.settings.text(message.query)
        session, backend = self.session, self.backend
        assert session is not None and backend is not None  # (relaying)
        if not self.tracker.settled and lexical.sensitive(text):
            action = Action(kind="sql.query", input=recordable(text.strip()))
            d: _Handles = session.refuse(action, _PIPELINED_SENSITIVE).addCallback(self._decided_one)
            infos: tuple[StatementInfo, ...] = ()
        else:
            infos = classify(text)
            actions: list[Action] = []
            judged: list[StatementInfo] = []
            prepared = self.tracker.view()[0]
            copied = False
            for info in infos:
                resolved = prepared.resolve(info)
                if _changes_names(info):
                    # An EXECUTE later in the same Query sees this PREPARE; the
                    # view itself changes only if the Query is forwarded.
                    if not copied:
                        prepared, copied = prepared.copy(), True
                    prepared.observe(info)
                actions.append(Action(kind=_action_kind(info, "sql.query"), input=info.text, attributes=resolved.attributes()))
                judged.append(resolved)
            d = self._check_or_refuse(actions, list(infos), judged)

        def decided(handles: list[IActionHandle]) -> None:
            if self._gone(handles):
                return
            tracker = self.tracker
            refused = next((h for h in handles if not h.allowed), None)
            if refused is None:
                for handle, info in zip(handles, infos):
                    change = NameChange("sql", value=info) if _changes_names(info) else None
                    tracker.forward(Pending(Expect.STATEMENT, handle=handle, change=change, copy_in=info.copy_in))
                backend.write(message)
            else:
                for handle in handles:
                    if handle.allowed:
                        handle.finish(
                            Outcome(
                                status=Status.blocked,
                                error=f"not run: another statement of the same query was refused "
                                f"by rule {refused.decision.rule!r}",
                            )
                        )
                marker = self._stand_in()
                tracker.forward(Pending(Expect.STATEMENT, marker=marker, denial=self._denial(refused)))
                backend.write(codec.Query(marker))
            tracker.forward(Pending(Expect.END))

        self._then(d, decided)

    def _execution(
        self,
        statement: str,
        portal: str,
        info: StatementInfo | None,
        parameters: tuple[bytes | None, ...],
        formats: tuple[int, ...],
    ) -> tuple[Action, StatementInfo]:
        """The action of running a bound statement, and the facts it is judged by."""
        if info is None:
            info = _UNKNOWN_STATEMENT
        # An EXECUTE p inside the portal finds p when it runs: resolve now.
        resolved = self.tracker.view()[0].resolve(info)
        binary = [
            (formats[i] if len(formats) > 1 else formats[0]) == 1 if formats else False
            for i in range(len(parameters))
        ]
        action = Action(
            kind=_action_kind(info, "sql.execute"),
            input=info.text,
            attributes=resolved.attributes(),
            details={
                "statement": statement,
                "portal": portal,
                "parameters": (
                    [_parameter_record(v, b) for v, b in zip(parameters, binary)]
                    if not mentions_secret(info.text)
                    # ALTER ROLE r PASSWORD $1 (the server refuses it, but it is sent)
                    else ["[redacted]"] * len(parameters)
                ),
            },
        )
        return action, resolved

    def _check_bind(self, message: codec.Bind) -> None:
        """
        A Bind is where code can first run (the planner folds functions over
        constants and parameters), so the execution is decided and recorded
        here; its first Execute carries the outcome.
        """
        prepared, _ = self.tracker.view()
        info = prepared.execute_info(message.statement)
        portal = Portal(message.statement, info, message.parameters, message.parameter_formats)
        action, resolved = self._execution(
            message.statement, message.portal, info, message.parameters, message.parameter_formats
        )
        d = self._check_or_refuse([action], [resolved])
        backend = self.backend
        assert backend is not None  # (relaying)

        def decided(handles: list[IActionHandle]) -> None:
            if self._gone(handles):
                return
            [handle] = handles
            tracker = self.tracker
            if handle.allowed:
                tracker.forward_bind(
                    message.portal, Pending(Expect.BIND, handle=handle, change=NameChange("bind", message.portal, portal))
                )
                backend.write(message)
            else:
                marker = self._stand_in()
                # A Bind of a statement that cannot exist: the server fails it
                # and skips to Sync.
                tracker.forward_stand_in(Pending(Expect.BIND, marker=marker, denial=self._denial(handle)))
                backend.write(codec.Bind(marker, marker))

        self._then(d, decided)

    def _check_execute(self, message: codec.Execute) -> None:
        """An Execute of a portal whose Bind did not start it: resumed, or unknown (a DECLAREd cursor)."""
        portal = self.tracker.view()[1].get(message.portal)
        if portal is None:
            action, resolved = self._execution("", message.portal, None, (), ())
        else:
            action, resolved = self._execution(portal.statement, message.portal, portal.info, portal.parameters, portal.formats)
        d = self._check_or_refuse([action], [resolved])
        copy_in = resolved.copy_in
        backend = self.backend
        assert backend is not None  # (relaying)

        def decided(handles: list[IActionHandle]) -> None:
            if self._gone(handles):
                return
            [handle] = handles
            if handle.allowed:
                self._describe_for_masking(message.portal, backend.write_raw)
                self.tracker.forward(Pending(Expect.EXECUTE, handle=handle, copy_in=copy_in))
                backend.write(message)
            else:
                marker = self._stand_in()
                # The stand-in: an Execute of a portal that cannot exist.
                self.tracker.forward_stand_in(Pending(Expect.EXECUTE, marker=marker, denial=self._denial(handle)))
                backend.write(codec.Execute(marker, 0))

        self._then(d, decided)

    def _check_function_call(self, message: codec.FunctionCall) -> None:
        """
        A FunctionCall names its function by OID: judged as the function the
        target's catalog says it is, and as unknown if the catalog cannot say.
        """
        session, backend = self.session, self.backend
        assert session is not None and backend is not None  # (relaying)

        def judge(name: str | None) -> Deferred[list[IActionHandle]]:
            action, info = _function_call(message.function_oid, name)
            handles = self._judge([action], [info]) if name is not None else self._decide([action])
            return handles if isinstance(handles, Deferred) else succeed(handles)

        def decided(handles: list[IActionHandle]) -> None:
            if self._gone(handles):
                return
            [handle] = handles
            tracker = self.tracker
            if handle.allowed:
                tracker.forward(Pending(Expect.CALL, handle=handle))
                backend.write(message)
            else:
                # Its stand-in is a Query the server rejects (a syntax error
                # naming the marker); both end with ReadyForQuery.
                marker = self._stand_in()
                tracker.forward(Pending(Expect.CALL, marker=marker, denial=self._denial(handle)))
                backend.write(codec.Query(marker))
            tracker.forward(Pending(Expect.END))

        self._then(self.front.catalog(session.connection).function(message.function_oid).addCallback(judge), decided)

    # -- the relay: server to client -----------------------------------------

    def _rows_unread(self) -> bool:
        """
        Whether the next read's rows are relayed without a look at any of
        them (no masking now, nothing held): runs of them may then come
        framed as one (codec.DataRows), a slice of what was read.
        """
        if self._held is not None:
            return False
        transform = self.transform
        return transform is None or not transform.active()

    def _server_messages(self, messages: list[codec.Message]) -> None:
        if self._held is not None:
            self._held.extend(messages)  # behind a result whose masking waits for the catalog
            return
        out: list[bytes] = []
        append = out.append
        masking = self.transform
        if masking is not None and not masking.active():
            masking = None  # nothing to mask in this session (checked per batch: masks follow reloads)
        tracker = self.tracker
        DataRow = codec.DataRow
        DataRows = codec.DataRows
        rows = 0  # DataRows since the last completion, counted to the head statement
        try:
            for index, message in enumerate(messages):
                if type(message) is DataRows:
                    if masking is not None:
                        # Framed unread while masks applied to nobody; they
                        # apply now (never expected): never relayed unmasked.
                        self._lost_track(out, "rows framed for relaying unread while masks apply")
                        return
                    rows += message.count
                    append(message.raw)
                    continue
                if type(message) is DataRow:  # (narrows message, for mypy: no cast per row)
                    rows += 1
                    if masking is not None:
                        append(masking.row(message))
                    else:
                        append(message.raw)
                    continue
                kind: type[codec.Message] | None = type(message)
                if rows:
                    tracker.count_rows(rows)
                    rows = 0
                if masking is not None:
                    if kind in _MASKED:
                        # (Casts: kind says which message it is.)
                        if kind is codec.RowDescription:
                            wait = masking.describe(cast(codec.RowDescription, message))
                            if wait is not None:
                                self._hold(messages[index:], wait, out)
                                return
                        elif kind is codec.CopyData:
                            message = masking.copy_row(cast(codec.CopyData, message), self._copy_out_binary)
                        elif kind is codec.CopyOutResponse:
                            response = cast(codec.CopyOutResponse, message)
                            self._copy_out_binary = response.format == 1
                            if isinstance(masking, ResultMasking):
                                wait = self._copy_out(masking, response)
                                if wait is not None:
                                    self._hold(messages[index:], wait, out)
                                    return
                        elif kind is codec.NotificationResponse:
                            message = masking.notification(cast(codec.NotificationResponse, message))
                        elif kind is codec.GenericMessage:
                            generic = cast(codec.GenericMessage, message)
                            if generic.tag == b"V":
                                message = masking.function_result(generic)
                        elif kind is codec.ParameterStatus:
                            status = cast(codec.ParameterStatus, message)
                            self.settings.report(status.name, status.value)
                            if isinstance(masking, ResultMasking):
                                masking.codec = self.settings.codec or "utf-8"
                            message = masking.parameter(status)
                            kind = None  # reported
                        else:
                            message = masking.report(cast("codec.ErrorResponse | codec.NoticeResponse", message))
                    counts = masking.take_counts()
                    if counts is not None:
                        tracker.count_masked(counts)
                if kind is codec.ParameterStatus:
                    status = cast(codec.ParameterStatus, message)
                    self.settings.report(status.name, status.value)
                elif kind is codec.ErrorResponse and tracker.at_batch_end:
                    self._commit_failed(cast(codec.ErrorResponse, message))
                idle = False
                if kind is codec.ReadyForQuery:
                    idle = self._fresh = cast(codec.ReadyForQuery, message).status == "I"
                elif kind is codec.CommandComplete or kind is codec.PortalSuspended:
                    self._fresh = False
                answer = tracker.answer(message)
                if idle and self._catalog_changed and not tracker.expect and not self._waiting and self.session is not None:
                    # Idle with nothing outstanding or being decided: the DDL
                    # has run and is committed or gone (an earlier query's
                    # ReadyForQuery, the DDL pipelined behind it, is not that).
                    self._catalog_changed = False
                    self._renamed.clear()  # the catalog shows them now (and keeps the old names)
                    self.front.catalog(self.session.connection).invalidate()
                if answer is None:
                    continue  # the answer to the gateway's own Describe
                raw = answer.raw
                append(raw if raw is not None else codec.encode(answer))
        except (Desync, lexical.LexicalError) as e:
            self._lost_track(out, str(e))
            return
        if rows:
            tracker.count_rows(rows)
        self._to_client(out)
        if self._queue and not self._waiting:
            self._drain()  # the server's answer may have released a hold

    def _copy_out(self, masking: ResultMasking, response: codec.CopyOutResponse) -> Deferred[None] | None:
        """A COPY TO starts: masking plans its fields from the statement (the head of what is outstanding)."""
        head = self.tracker.expect[0] if self.tracker.expect else None
        action = head.handle.action if head is not None and head.handle is not None else None
        spec = copy_spec(action.input) if action is not None else None
        session = self.session
        assert session is not None  # (relaying)
        graph = self.front.catalog(session.connection).current()
        return masking.copy_out(response, spec, graph)

    def _to_client(self, out: list[bytes]) -> None:
        data = b"".join(out)
        self.bytes_out += len(data)
        self.transport.write(data)
        tls.flush(self.transport)

    def _hold(self, rest: list[codec.Message], wait: Deferred[None], out: list[bytes]) -> None:
        """
        A result's masking needs the catalog: send what came before, read no
        more from the server, and go on with C{rest} once it is known.
        """
        self._to_client(out)
        self._held = list(rest)
        reading = self._backend_reading
        if reading is not None:
            reading.pause("masking")

        def release(_: object) -> None:
            held, self._held = self._held, None
            if reading is not None:
                reading.resume("masking")
            if self.state is Phase.READY and held:
                try:
                    self._server_messages(held)
                except Exception:
                    # Raised here it would end in the catalog's Deferred, unseen,
                    # with the client waiting: fail closed, as the relay does.
                    log.failure("masking a held result failed")
                    if self.state is Phase.READY:
                        self._lost_track([], "the gateway could not mask a result")

        def failed(failure: Failure) -> None:
            # Rows that cannot be planned are not sent in clear.
            log.failure("masking plan failed", failure)
            self._held = None
            if self.state is Phase.READY:
                self._lost_track([], "the gateway could not plan the masking of a result")

        wait.addCallbacks(release, failed)

    def _commit_failed(self, error: codec.ErrorResponse) -> None:
        """
        An error at the end of a batch (a Sync's or a Query's implicit
        commit: a deferred constraint): the statements recorded as
        succeeded were rolled back.  Recorded as an observed action of its own.
        """
        if self.session is None or error.severity != "ERROR":
            return
        action = Action(kind="sql.commit", input="the implicit commit at the end of the batch")
        d = self.session.observe(action)
        d.addCallback(lambda handle: handle.finish(Outcome(status=Status.failed, error=error.message, code=error.code)))
        d.addErrback(lambda f: log.failure("commit failure not recorded", f))

    def _lost_track(self, out: list[bytes], why: str) -> None:
        """The server's state is no longer one the gateway can follow: fail closed."""
        log.warn("postgres session {source}: {why}; ending it", source=self.source.address, why=why)
        data = b"".join(out)
        self.bytes_out += len(data)
        self.transport.write(data)
        self._fatal("08P01", f"hoopgw: {why}; the session is ended")
        if self.backend is not None and self.backend.transport is not None:
            self.backend.on_lost = None
            self.backend.abort()
        self._teardown("failed", error=why)

    # Messages that are actions: decided (a Deferred) before they are sent.
    _checks: dict[type[codec.Message], Callable[[ClientProtocol, Any], None]] = {
        codec.Query: _check_query,
        codec.Bind: _check_bind,
        codec.Execute: _check_execute,
        codec.FunctionCall: _check_function_call,
    }

    # -- teardown --------------------------------------------------------------

    def _backend_lost(self, reason: Failure) -> None:
        if self.state is Phase.CLOSING:
            # The client said Terminate and the server closed in answer: a
            # plain close, whichever side's end the gateway noticed first.
            self._unlink()
            self.transport.loseConnection()
            self._teardown("closed")
        elif self.state is Phase.READY:
            self._send(codec.error_response("FATAL", "08006", "the target closed the connection"))
            self._unlink()
            self.transport.loseConnection()
            self._teardown("target closed", error=reason.getErrorMessage())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.state = Phase.CLOSED
        if self.backend is not None and self.backend.transport is not None:
            self.backend.on_lost = None
            self._unlink()
            self.backend.transport.loseConnection()
        self._teardown("closed")

    def _teardown(
        self, status: str, error: str | None = None, unfinished: str = "connection closed before completion"
    ) -> None:
        self.front.cancel_keys.pop(self.cancel_pid, None)
        self.tracker.close(unfinished)
        session, self.session = self.session, None
        if session is not None:
            session.close(status=status, error=error)


class _OneShot(Protocol):
    """Sends one CancelRequest and closes, as libpq's PQcancel does."""

    transport: ITransport

    def __init__(self, data: bytes) -> None:
        self.data = data

    def connectionMade(self) -> None:
        self.transport.write(self.data)
        self.transport.loseConnection()


def make_front_end(context: GatewayContext) -> PostgresFrontEnd:
    """The C{postgres} listener's factory (L{IFrontEnd.build <hoopgw.interfaces.IFrontEnd.build>}, through L{hoopgw.protocols.postgres.plugin})."""
    from hoopgw.tls import server_options

    return PostgresFrontEnd(
        sessions=context.sessions,
        # libpq 17+ offers ALPN "postgresql" (PostgreSQL 17 accepts it too).
        tls_options=server_options(context.tls_cert, context.tls_key, alpn=(b"postgresql",)),
        reactor=context.reactor,
    )

