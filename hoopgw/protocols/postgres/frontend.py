"""
The PostgreSQL front end: `psql`, `pgbench`, drivers connect here as to a
server.  TLS, a token as the password, a session on the connection named by
the database, then every statement is decided by policy and audited before
the gateway's own connection to the target runs it.

Ordering.  Clients pipeline (the extended protocol always does), and every
decision is a Deferred, so client messages queue behind a pending decision
and are forwarded strictly in order.  A refused statement is never sent; in
its place the gateway sends a harmless statement that the server rejects
(a syntax error for a Query, an unknown portal for an Execute).  The server's
own error then arrives exactly where the client expects it, aborts the
transaction as a real error would, makes the server skip to Sync in the
extended protocol — and the gateway replaces that error with its own 42501
naming the rule.  A stand-in's name is fresh and random each time, and
client names with the reserved C{hoopgw_} prefix end the connection (FATAL
08P01), so the stand-in can never be a portal the client made.

Names.  An Execute is judged by what its portal held when it was bound, and
a Parse/Bind/Close (or PREPARE/DEALLOCATE) counts only once the server has
answered it without an error; see "statement and portal names" below.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections import deque
from typing import Any, Callable, Protocol as TypingProtocol

from attrs import define
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgw.config import PostgresSettings
from hoopgw.errors import AuditUnavailable, AuthenticationFailed, HoopgwError, NotPermitted
from hoopgw.model import Action, Outcome, Source, Status
from hoopgw.policy.sql import PreparedStatements, StatementInfo, classify
from hoopgw.protocols import _tls as tls
from hoopgw.protocols.postgres import codec
from hoopgw.protocols.postgres.backend import BackendAuthError, BackendProtocol, client_tls_options
from hoopgw.sessions import ActionHandle, Session, SessionService

log = Logger()

# Start-up parameters passed on to the target; `options` (arbitrary -c
# settings) and `replication` are not.
PASSED_PARAMETERS = frozenset(
    {"application_name", "client_encoding", "datestyle", "timezone", "extra_float_digits", "intervalstyle"}
)

_COUNTED_TAGS = ("SELECT", "INSERT", "UPDATE", "DELETE", "COPY", "MERGE", "FETCH", "MOVE")


class RowTransform(TypingProtocol):
    """
    The masking seam: sees each result's RowDescription, then may rewrite
    its DataRows column by column.  Identity (no transform) by default.
    """

    def describe(self, description: codec.RowDescription) -> None: ...

    def row(self, row: codec.DataRow) -> codec.DataRow: ...


def rows_from_tag(tag: str) -> int | None:
    """The row count in a CommandComplete tag ("INSERT 0 3" -> 3)."""
    command, _, rest = tag.partition(" ")
    if command in _COUNTED_TAGS and rest:
        try:
            return int(rest.rsplit(" ", 1)[-1])
        except ValueError:
            return None
    return None


def _action_kind(info: StatementInfo, default: str) -> str:
    """C{sql.copy} for a COPY (the DESIGN's action kind, so rules can name it), else C{default}."""
    return "sql.copy" if info.kinds[:1] == ("copy",) else default


def _parameter_record(value: bytes | None, binary: bool) -> Any:
    if value is None:
        return None
    if binary:
        return {"base64": base64.b64encode(value).decode()}
    return value.decode("utf-8", "replace")


@define(eq=False)
class _Pending:
    """A forwarded statement awaiting its completion from the server."""

    handle: ActionHandle | None
    marker: str | None = None  # set for a stand-in of a refused statement
    denial: codec.ErrorResponse | None = None
    rows: int = 0
    # A change to the statement/portal names, applied to the confirmed maps
    # only once the server has answered this message without an error.
    op: tuple | None = None


@define(frozen=True)
class _Portal:
    """A portal as bound: the statement's facts at Bind time, not its name."""

    statement: str
    info: StatementInfo | None  # None: the statement was unknown at Bind
    parameters: tuple[bytes | None, ...]
    formats: tuple[int, ...]


# Statement and portal names the gateway keeps for its own stand-ins.
RESERVED_PREFIX = "hoopgw_"

# The extended-protocol messages that name a statement or a portal.
_NAMING = frozenset({codec.Parse, codec.Bind, codec.Describe, codec.Close, codec.Execute})


def _names(message: codec.Message) -> tuple[str, ...]:
    kind = type(message)
    if kind is codec.Parse:
        return (message.statement,)  # type: ignore[attr-defined]
    if kind is codec.Bind:
        return (message.portal, message.statement)  # type: ignore[attr-defined]
    if kind is codec.Execute:
        return (message.portal,)  # type: ignore[attr-defined]
    return (message.name,)  # type: ignore[attr-defined]  # Describe, Close


def _changes_names(info: StatementInfo) -> bool:
    """A statement of a Query that PREPARE/DEALLOCATE/DISCARDs prepared statements."""
    return info.kinds[:1] in (("prepare",), ("deallocate",), ("discard",))


def _apply(prepared: PreparedStatements, portals: dict[str, _Portal], op: tuple) -> None:
    """Apply one name change (see L{_Pending.op}) to a pair of maps."""
    what = op[0]
    if what == "parse":
        prepared.register(op[1], op[2])
    elif what == "bind":
        portals[op[1]] = op[2]
    elif what == "close-statement":
        prepared.forget(op[1])
    elif what == "close-portal":
        portals.pop(op[1], None)
    elif what == "sql":
        prepared.observe(op[1])


class PostgresFrontEnd(Factory):
    """One per listener: builds client protocols, owns the cancel-key map."""

    def __init__(
        self,
        *,
        sessions: SessionService,
        tls_options: Any,
        reactor: Any,
        connect: Callable[[PostgresSettings, BackendProtocol], Deferred] | None = None,
        transform_for: Callable[[Session], RowTransform | None] | None = None,
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
        self.transform_for = transform_for or (lambda session: None)
        self.cancel_keys: dict[int, "ClientProtocol"] = {}

    def _connect(self, settings: PostgresSettings, protocol: BackendProtocol) -> Deferred:
        endpoint = HostnameEndpoint(self.reactor, settings.host, settings.port, timeout=settings.login_timeout)
        return connectProtocol(endpoint, protocol)

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


class ClientProtocol(Protocol):
    """One client connection: start-up, authentication, then the relay."""

    def __init__(self, front: PostgresFrontEnd, source: Source) -> None:
        self.front = front
        self.source = source
        self.parser = codec.FrontendParser()
        self.state = "startup"
        self.tls = False
        self.startup: codec.StartupMessage | None = None
        self.session: Session | None = None
        self.backend: BackendProtocol | None = None
        self.cancel_pid = 0
        self.cancel_secret = b""
        self.transform: RowTransform | None = None
        # Statements and portals as the server has confirmed them (its answer
        # to each Parse, Bind, Close, PREPARE, DEALLOCATE came in without an
        # error); the view adds every change forwarded and not yet answered,
        # in order: what a statement pipelined behind them will find.
        self.prepared = PreparedStatements()
        self.portals: dict[str, _Portal] = {}
        self._view_prepared = PreparedStatements()
        self._view_portals: dict[str, _Portal] = {}
        self._view_stale = False  # a forwarded change was refused or skipped
        self._batch_open = False  # extended-protocol messages since the last Sync
        self._queue: deque[codec.Message] = deque()
        self._waiting = False
        self._draining = False
        # Statements forwarded, grouped by what ends them (a ReadyForQuery
        # after each Query, Sync or FunctionCall); the last group is open.
        self._groups: deque[deque[_Pending]] = deque([deque()])
        self._closed_groups = 0
        self._denials = 0
        self._linked = False  # the two transports are each other's producers
        self.bytes_in = 0
        self.bytes_out = 0

    # -- plumbing --------------------------------------------------------------

    def _send(self, *messages: codec.Message) -> None:
        data = b"".join(codec.encode(m) for m in messages)
        self.bytes_out += len(data)
        self.transport.write(data)

    def _fatal(self, code: str, message: str) -> None:
        self._send(codec.error_response("FATAL", code, message))
        self._unlink()
        self.transport.loseConnection()
        self.state = "closed"

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

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        try:
            messages = self.parser.feed(data)
        except codec.ProtocolError as e:
            # CVE-2021-23214 class (bytes pipelined behind SSLRequest) lands here too.
            log.info("postgres client {source}: protocol error: {error}", source=self.source.address, error=str(e))
            self.transport.abortConnection()
            self.state = "closed"
            return
        if self.state == "ready":
            self._queue.extend(messages)
            self._drain()
            return
        for message in messages:
            if self.state in ("startup", "password"):
                self._startup_message(message)
            elif self.state == "closed":
                return
            else:
                self._queue.append(message)  # pipelined behind authentication

    # -- start-up and authentication -----------------------------------------

    def _startup_message(self, message: codec.Message) -> None:
        if isinstance(message, codec.SSLRequest):
            if self.tls or self.front.tls_options is None:
                self.transport.write(b"N")
            else:
                self.transport.write(b"S")
                self.transport.startTLS(self.front.tls_options)
                self.tls = True
            self.parser.encryption_answered()
        elif isinstance(message, codec.GSSENCRequest):
            self.transport.write(b"N")
            self.parser.encryption_answered()
        elif isinstance(message, codec.CancelRequest):
            self._cancel(message)
        elif isinstance(message, codec.StartupMessage):
            if not self.tls:
                # The password is a bearer token: never over plaintext.
                self._fatal("28000", "hoopgw requires TLS: connect with sslmode=require (or stronger)")
                return
            self.startup = message
            self.state = "password"
            self._send(codec.AuthenticationCleartextPassword())
        elif isinstance(message, codec.PasswordMessage) and self.state == "password":
            self.state = "authenticating"
            token = message.password.decode("utf-8", "replace")
            self._authenticate(token)
        else:
            self._fatal("08P01", f"unexpected {type(message).__name__} during start-up")

    def _authenticate(self, token: str) -> None:
        assert self.startup is not None
        sessions = self.front.sessions
        user = self.startup.user or ""
        database = self.startup.database or user
        d = sessions.authenticate_token(token, source=self.source, user=user)
        d.addCallback(
            lambda identity: sessions.open(
                identity,
                database,
                source=self.source,
                client={
                    "user": user,
                    "application_name": self.startup.get("application_name") or "",
                    "tls": True,
                },
            )
        )
        d.addCallback(self._session_opened)
        d.addErrback(self._startup_failed, user)

    def _session_opened(self, session: Session) -> Deferred:
        self.session = session
        session.traffic = lambda: (self.bytes_in, self.bytes_out)
        if self.state == "closed":  # the client went away meanwhile
            return session.close(status="client disconnected")
        settings: PostgresSettings = session.connection.settings
        password = self.front.passwords.get(session.connection.name)
        startup = {
            name: value
            for name, value in self.startup.parameters  # type: ignore[union-attr]
            if name.lower() in PASSED_PARAMETERS
        }
        backend = BackendProtocol(
            settings,
            password=password,
            startup=startup,
            tls_options=self.front.target_tls.get(session.connection.name),
        )
        d = self.front.connect(settings, backend)
        d.addCallback(lambda _: backend.ready)

        def too_slow(result: object, timeout: float) -> object:
            # A target that accepts the connection and then stalls (or a
            # black-holed address) must not hold the client for ever.
            backend.ready = None
            if backend.transport is not None:
                backend.transport.abortConnection()
            return Failure(
                BackendAuthError(
                    f"the target did not finish connecting and logging in within {timeout:g} s (login_timeout)"
                )
            )

        d.addTimeout(settings.login_timeout, self.front.reactor, onTimeoutCancel=too_slow)
        d.addCallback(self._backend_ready)
        return d

    def _backend_ready(self, backend: BackendProtocol) -> None:
        if self.state == "closed":
            backend.transport.loseConnection()
            return
        self.backend = backend
        backend.deliver = self._server_messages
        backend.on_lost = self._backend_lost
        # Backpressure both ways: while one side's send buffer is full, stop
        # reading from the other, whose kernel buffer then fills and whose
        # sender blocks (a target streaming a large result to a slow client
        # waits in ClientWrite instead of filling the gateway's memory).
        self.transport.registerProducer(_ReadPause(backend.transport), True)
        backend.transport.registerProducer(_ReadPause(self.transport), True)
        self._linked = True
        self.cancel_pid, self.cancel_secret = self.front.register_cancel_key(self)
        self.transform = self.front.transform_for(self.session)  # type: ignore[arg-type]
        self._send(
            codec.AuthenticationOk(),
            *(codec.ParameterStatus(name, value) for name, value in backend.parameters.items()),
            codec.BackendKeyData(self.cancel_pid, self.cancel_secret),
            codec.ReadyForQuery("I"),
        )
        self.state = "ready"
        self._drain()

    def _startup_failed(self, failure: Failure, user: str) -> None:
        if failure.check(AuthenticationFailed):
            self._fatal("28P01", f'password authentication failed for user "{user}": token rejected ({failure.value.reason})')
        elif failure.check(NotPermitted):
            self._fatal("28000", str(failure.value))
        elif failure.check(AuditUnavailable):
            self._fatal("57P03", "the gateway's audit log is unavailable, so it refuses all traffic")
        elif failure.check(BackendAuthError, HoopgwError):
            self._fatal("08006", f"cannot connect to the target: {failure.value}")
            if self.session is not None:
                self.session.close(status="failed", error=str(failure.value))
        else:
            log.failure("postgres start-up failed", failure)
            self._fatal("08006", "cannot connect to the target")
            if self.session is not None:
                self.session.close(status="failed", error="internal error")

    def _cancel(self, request: codec.CancelRequest) -> None:
        """
        Ctrl-C in psql: the key the client holds is the gateway's own; only a
        matching key cancels, and only that client's query on the target.
        """
        self.transport.loseConnection()
        self.state = "closed"
        owner = self.front.cancel_keys.get(request.process_id)
        if owner is None or not hmac.compare_digest(owner.cancel_secret, request.secret_key):
            self.front.sessions.auth_failed(
                source=self.source, reason="cancel request with an unknown key", method="cancel"
            )
            return
        owner.cancel_backend()

    def cancel_backend(self) -> None:
        backend, session = self.backend, self.session
        if backend is None or backend.key is None or session is None:
            return
        d = session.check(Action(kind="sql.cancel", input="cancel request"))

        def decided(handle: ActionHandle) -> None:
            if not handle.allowed:
                return
            settings: PostgresSettings = session.connection.settings
            request = codec.encode(codec.CancelRequest(backend.key.process_id, backend.key.secret_key))
            sender = _OneShot(request)
            connected = self.front.connect(settings, sender)  # type: ignore[arg-type]
            connected.addCallbacks(
                lambda _: handle.finish(Outcome(status=Status.succeeded)),
                lambda f: handle.finish(Outcome(status=Status.failed, error=f.getErrorMessage())),
            )

        d.addCallback(decided)
        d.addErrback(lambda f: log.failure("cancel request not forwarded", f))

    # -- the relay: client to server -----------------------------------------

    def _drain(self) -> None:
        """
        Forward queued messages until one waits for its decision.  A decision
        that fires at once (the usual case) resumes this same loop rather than
        a nested one, so a long pipeline costs no stack.
        """
        if self._draining:
            return
        self._draining = True
        try:
            self._drain_queue()
        finally:
            self._draining = False

    def _drain_queue(self) -> None:
        backend = self.backend
        out: list[bytes] = []
        while self._queue and not self._waiting and self.state == "ready":
            message = self._queue.popleft()
            kind = type(message)
            if kind in _NAMING:
                if any(name.startswith(RESERVED_PREFIX) for name in _names(message)):
                    self._reserved_name(message)
                    return
                self._batch_open = True
            elif self._batch_open and (kind is codec.Query or kind is codec.FunctionCall):
                self._query_in_batch(message)
                return
            check = self._checks.get(kind)
            if check is not None:
                if out:  # what preceded the statement goes first
                    backend.write_raw(b"".join(out))  # type: ignore[union-attr]
                    out = []
                self._waiting = True
                check(self, message)
                continue
            if kind is codec.Parse:
                # Classified into the view at once (rebuilt if it is stale).
                info = self._view_prepared.parse(message.statement, message.query)  # type: ignore[attr-defined]
                self._forwarding_change(("parse", message.statement, info), applied=True)  # type: ignore[attr-defined]
            elif kind is codec.Bind:
                # The portal holds what the statement holds now (P2), not its name.
                prepared, _ = self._view()
                portal = _Portal(
                    message.statement,  # type: ignore[attr-defined]
                    prepared.execute_info(message.statement),  # type: ignore[attr-defined]
                    message.parameters,  # type: ignore[attr-defined]
                    message.parameter_formats,  # type: ignore[attr-defined]
                )
                self._forwarding_change(("bind", message.portal, portal))  # type: ignore[attr-defined]
            elif kind is codec.Close:
                what = "close-statement" if message.kind == "S" else "close-portal"  # type: ignore[attr-defined]
                self._forwarding_change((what, message.name))  # type: ignore[attr-defined]
            elif kind is codec.Sync:
                self._batch_open = False
                self._close_group()
            elif kind is codec.Terminate:
                self.state = "closing"
            out.append(codec.encode(message))
        if out:
            backend.write_raw(b"".join(out))  # type: ignore[union-attr]
        if self.state == "closing":
            self._unlink()
            self.transport.loseConnection()

    def _close_group(self) -> None:
        self._groups.append(deque())
        self._closed_groups += 1

    # -- statement and portal names --------------------------------------------
    #
    # After an error in the extended protocol the server skips everything up
    # to Sync (a Query too), and it refuses a Parse or Bind of a name in use:
    # a change the gateway forwards holds only once the server has answered
    # it without an error.  So each change rides on a _Pending of its own
    # (one per Parse, Bind, Close; one per PREPARE or DEALLOCATE statement of
    # a Query), is applied to the confirmed maps by its ParseComplete,
    # BindComplete, CloseComplete or CommandComplete, and is dropped by an
    # error or by the ReadyForQuery that ends its group unanswered.  Statements
    # are judged against the view: the confirmed maps plus every change still
    # in flight, in order (an Execute pipelined behind its Parse and Bind).

    def _view(self) -> tuple[PreparedStatements, dict[str, _Portal]]:
        if self._view_stale:
            prepared, portals = self.prepared.copy(), dict(self.portals)
            for group in self._groups:
                for pending in group:
                    if pending.op is not None:
                        _apply(prepared, portals, pending.op)
            self._view_prepared, self._view_portals = prepared, portals
            self._view_stale = False
        return self._view_prepared, self._view_portals

    def _forwarding_change(self, op: tuple, *, applied: bool = False) -> None:
        """Record a name change that is being forwarded (C{applied}: already in the view)."""
        self._groups[-1].append(_Pending(None, op=op))
        if not applied and not self._view_stale:
            _apply(self._view_prepared, self._view_portals, op)

    def _change_answered(self, op: tuple, ok: bool) -> None:
        if ok:
            _apply(self.prepared, self.portals, op)
        else:
            self._view_stale = True

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
        self._teardown("failed", error=f"client used a reserved {RESERVED_PREFIX} name")

    def _query_in_batch(self, message: codec.Message) -> None:
        """
        A Query or FunctionCall after extended-protocol messages without a
        Sync between: the server runs it, or skips it if the batch failed,
        and only then answers with a ReadyForQuery, which the gateway cannot
        know when it forwards it.  Drivers send a Sync first; the connection
        ends.
        """
        self._fatal(
            "08P01",
            f"hoopgw: a {type(message).__name__} message must not follow extended-protocol "
            "messages without a Sync between them",
        )
        self._teardown("failed", error=f"{type(message).__name__} inside an unsynced extended-protocol batch")

    def _decide(self, actions: list[Action]) -> Deferred:
        """Check actions one after the other (records stay in statement order)."""
        session = self.session
        assert session is not None
        if len(actions) == 1:
            # The common case: one Deferred (already fired unless the
            # decision or the audit write is held), no chain around it.
            return session.check(actions[0]).addCallback(lambda handle: [handle])
        handles: list[ActionHandle] = []
        d: Deferred = succeed(None)
        for action in actions:
            d.addCallback(lambda _, a=action: session.check(a))
            d.addCallback(handles.append)
        d.addCallback(lambda _: handles)
        return d

    def _resume(self, _: object = None) -> None:
        # Inside the running loop (a decision that fired at once) this only
        # clears _waiting and the loop carries on; fired later, it drains.
        self._waiting = False
        try:
            self._drain()
        except Exception:
            # Raised here it would end in the decision's Deferred, unseen.
            log.failure("postgres relay failed")
            if self.state == "ready":
                self._fatal("XX000", "the gateway failed relaying this connection")
                self._teardown("failed", error="internal error")

    def _refused_all(self, failure: Failure) -> None:
        if failure.check(AuditUnavailable):
            self._fatal("57P03", "the gateway's audit log is unavailable, so it refuses all traffic")
        else:
            log.failure("statement check failed", failure)
            self._fatal("XX000", "the gateway could not decide this statement")
        self._teardown("failed")

    def _denial(self, handle: ActionHandle) -> codec.ErrorResponse:
        decision = handle.decision
        assert decision is not None
        rule = decision.rule or "no matching allow rule"
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

    def _gone(self, handles: list[ActionHandle]) -> bool:
        """
        The client went away while these were being decided: nothing is
        forwarded, and their outcomes are recorded now (no answer will come).
        """
        if self.state == "ready":
            return False
        for handle in handles:
            handle.finish(Outcome(status=Status.failed, error="client disconnected before the decision"))
        return True

    def _check_query(self, message: codec.Query) -> None:
        infos = classify(message.query)
        actions: list[Action] = []
        prepared = self._view()[0]
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
        d = self._decide(actions)

        def decided(handles: list[ActionHandle]) -> None:
            if self._gone(handles):
                return
            group = self._groups[-1]
            refused = next((h for h in handles if not h.allowed), None)
            if refused is None:
                if copied:
                    for handle, info in zip(handles, infos):
                        change = ("sql", info) if _changes_names(info) else None
                        group.append(_Pending(handle, op=change))
                        if change is not None and not self._view_stale:
                            _apply(self._view_prepared, self._view_portals, change)
                else:
                    group.extend(_Pending(h) for h in handles)
                self.backend.write(message)  # type: ignore[union-attr]
            else:
                for number, handle in enumerate(handles, 1):
                    if handle.allowed:
                        handle.finish(
                            Outcome(
                                status=Status.blocked,
                                error=f"not run: another statement of the same query was refused "
                                f"by rule {refused.decision.rule!r}",  # type: ignore[union-attr]
                            )
                        )
                marker = self._stand_in()
                group.append(_Pending(None, marker=marker, denial=self._denial(refused)))
                self.backend.write(codec.Query(marker))  # type: ignore[union-attr]
            self._close_group()

        d.addCallback(decided)
        d.addCallbacks(self._resume, self._refused_all)

    def _check_execute(self, message: codec.Execute) -> None:
        prepared, portals = self._view()
        portal = portals.get(message.portal)
        if portal is None:  # unknown to the gateway (e.g. a DECLAREd cursor)
            statement, info, parameters, formats = "", None, (), ()
        else:
            statement, info, parameters, formats = portal.statement, portal.info, portal.parameters, portal.formats
        if info is None:
            info = StatementInfo(text="", kinds=("unknown",), writes_data=True)
        # An EXECUTE p inside the portal finds p when it runs: resolve now.
        resolved = prepared.resolve(info)
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
                "portal": message.portal,
                "parameters": [_parameter_record(v, b) for v, b in zip(parameters, binary)],
            },
        )
        # The stand-in: an Execute of a portal that cannot exist.
        self._decide_one(action, message, lambda marker: codec.Execute(marker, 0), ends_group=False)

    def _decide_one(
        self,
        action: Action,
        message: codec.Message,
        stand_in: Callable[[str], codec.Message],
        *,
        ends_group: bool,
    ) -> None:
        """Decide one action; forward C{message}, or C{stand_in(marker)} in its place if refused."""
        d = self._decide([action])

        def decided(handles: list[ActionHandle]) -> None:
            if self._gone(handles):
                return
            [handle] = handles
            if handle.allowed:
                self._groups[-1].append(_Pending(handle))
                self.backend.write(message)  # type: ignore[union-attr]
            else:
                marker = self._stand_in()
                self._groups[-1].append(_Pending(None, marker=marker, denial=self._denial(handle)))
                self.backend.write(stand_in(marker))  # type: ignore[union-attr]
            if ends_group:
                self._close_group()

        d.addCallback(decided)
        d.addCallbacks(self._resume, self._refused_all)

    def _check_function_call(self, message: codec.FunctionCall) -> None:
        action = Action(
            kind="sql.call",
            input=f"function call oid {message.function_oid}",
            attributes={"sql.statements": ("call",), "sql.functions": (str(message.function_oid),)},
        )
        # A FunctionCall ends with ReadyForQuery like a Query; its stand-in
        # is a Query the server rejects (a syntax error naming the marker).
        self._decide_one(action, message, codec.Query, ends_group=True)

    # -- the relay: server to client -----------------------------------------

    def _server_messages(self, messages: list[codec.Message]) -> None:
        out: list[bytes] = []
        append = out.append
        transform = self.transform
        DataRow = codec.DataRow
        rows = 0  # DataRows since the last completion, counted to the head statement
        for message in messages:
            kind = type(message)
            if kind is DataRow:
                rows += 1
                if transform is not None:
                    message = transform.row(message)  # type: ignore[arg-type]
                    append(codec.encode(message))
                else:
                    append(message.raw)  # type: ignore[attr-defined]
                continue
            if rows:
                self._count_rows(rows)
                rows = 0
            if kind is codec.CommandComplete:
                self._complete(Status.succeeded, tag=message.tag)  # type: ignore[attr-defined]
            elif kind is codec.ErrorResponse:
                message = self._error(message)  # type: ignore[arg-type]
            elif kind is codec.EmptyQueryResponse or kind is codec.PortalSuspended:
                self._complete(Status.succeeded)
            elif kind is codec.ParseComplete or kind is codec.BindComplete or kind is codec.CloseComplete:
                self._complete(Status.succeeded)  # confirms that name change
            elif kind is codec.ReadyForQuery:
                self._end_group()
                if message.status == "I" and self.portals:  # type: ignore[attr-defined]
                    # Outside a transaction the server holds no portal (they
                    # end with the transaction, implicit ones at Sync).
                    self.portals.clear()
                    self._view_stale = True
            elif kind is codec.RowDescription and transform is not None:
                transform.describe(message)  # type: ignore[arg-type]
            elif kind is codec.GenericMessage and message.tag == b"V":  # type: ignore[attr-defined]
                self._complete(Status.succeeded)  # FunctionCallResponse
            raw = message.raw
            append(raw if raw is not None else codec.encode(message))
        if rows:
            self._count_rows(rows)
        data = b"".join(out)
        self.bytes_out += len(data)
        self.transport.write(data)
        tls.flush(self.transport)

    def _count_rows(self, rows: int) -> None:
        group = self._groups[0]
        if group:
            group[0].rows += rows

    def _complete(self, status: Status, *, tag: str | None = None, error: str | None = None, code: str | None = None) -> None:
        group = self._groups[0]
        if not group:
            return
        pending = group.popleft()
        if pending.op is not None:
            self._change_answered(pending.op, status is Status.succeeded)
        if pending.handle is not None:
            rows = rows_from_tag(tag) if tag is not None else None
            pending.handle.finish(
                Outcome(status=status, rows=rows if rows is not None else (pending.rows or None), error=error, code=code)
            )

    def _error(self, error: codec.ErrorResponse) -> codec.Message:
        group = self._groups[0]
        head = group[0] if group else None
        if head is not None and head.marker is not None and head.marker in (error.message or ""):
            group.popleft()
            return head.denial  # type: ignore[return-value]
        self._complete(Status.failed, error=error.message, code=error.code)
        return error

    def _end_group(self) -> None:
        if not self._closed_groups:
            return
        self._closed_groups -= 1
        group = self._groups.popleft()
        for pending in group:
            if pending.op is not None:  # skipped by the server after an error
                self._view_stale = True
            if pending.handle is not None:
                pending.handle.finish(
                    Outcome(status=Status.failed, error="not run: an earlier statement in the same batch failed")
                )

        # Messages that are actions: decided (a Deferred) before they are sent.
    _checks: dict[type, Callable[["ClientProtocol", Any], None]] = {
        codec.Query: _check_query,
        codec.Execute: _check_execute,
        codec.FunctionCall: _check_function_call,
    }

    # -- teardown --------------------------------------------------------------

    def _backend_lost(self, reason: Failure) -> None:
        if self.state in ("ready", "closing"):
            if self.state == "ready":
                self._send(codec.error_response("FATAL", "08006", "the target closed the connection"))
            self._unlink()
            self.transport.loseConnection()
            self._teardown("target closed", error=reason.getErrorMessage())

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.state = "closed"
        if self.backend is not None and self.backend.transport is not None:
            self.backend.on_lost = None
            self._unlink()
            self.backend.transport.loseConnection()
        self._teardown("closed")

    def _teardown(self, status: str, error: str | None = None) -> None:
        self.front.cancel_keys.pop(self.cancel_pid, None)
        for group in self._groups:
            for pending in group:
                if pending.handle is not None:
                    pending.handle.finish(Outcome(status=Status.failed, error="connection closed before completion"))
            group.clear()
        session, self.session = self.session, None
        if session is not None:
            session.close(status=status, error=error)


@implementer(IPushProducer)
class _ReadPause:
    """
    One side's transport as a producer for the other side: paused (reading
    stops) while the other's send buffer is full.  Only the protocols close
    connections, so stopProducing does nothing.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class _OneShot(Protocol):
    """Sends one CancelRequest and closes, as libpq's PQcancel does."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def connectionMade(self) -> None:
        self.transport.write(self.data)
        self.transport.loseConnection()


def make_front_end(context: Any) -> PostgresFrontEnd:
    """The L{hoopgw.gateway.FRONT_ENDS} builder for the C{postgres} listener."""
    from hoopgw.tls import server_options

    return PostgresFrontEnd(
        sessions=context.sessions,
        # libpq 17+ offers ALPN "postgresql" (PostgreSQL 17 accepts it too).
        tls_options=server_options(context.tls_cert, context.tls_key, alpn=(b"postgresql",)),
        reactor=context.reactor,
    )

