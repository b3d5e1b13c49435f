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
naming the rule.
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
        endpoint = HostnameEndpoint(self.reactor, settings.host, settings.port, timeout=10)
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
        self.prepared = PreparedStatements()
        self.portals: dict[str, tuple[str, tuple[bytes | None, ...], tuple[int, ...]]] = {}
        self._queue: deque[codec.Message] = deque()
        self._waiting = False
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
        backend = self.backend
        out: list[bytes] = []
        while self._queue and not self._waiting and self.state == "ready":
            message = self._queue.popleft()
            kind = type(message)
            check = self._checks.get(kind)
            if check is not None:
                if out:  # what preceded the statement goes first
                    backend.write_raw(b"".join(out))  # type: ignore[union-attr]
                    out = []
                self._waiting = True
                check(self, message)
                continue
            if kind is codec.Parse:
                self.prepared.parse(message.statement, message.query)  # type: ignore[attr-defined]
            elif kind is codec.Bind:
                self.portals[message.portal] = (  # type: ignore[attr-defined]
                    message.statement,  # type: ignore[attr-defined]
                    message.parameters,  # type: ignore[attr-defined]
                    message.parameter_formats,  # type: ignore[attr-defined]
                )
            elif kind is codec.Close:
                if message.kind == "S":  # type: ignore[attr-defined]
                    self.prepared.forget(message.name)  # type: ignore[attr-defined]
                else:
                    self.portals.pop(message.name, None)  # type: ignore[attr-defined]
            elif kind is codec.Sync:
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

    def _decide(self, actions: list[Action]) -> Deferred:
        """Check actions one after the other (records stay in statement order)."""
        session = self.session
        assert session is not None
        handles: list[ActionHandle] = []
        d: Deferred = succeed(None)
        for action in actions:
            d.addCallback(lambda _, a=action: session.check(a))
            d.addCallback(handles.append)
        d.addCallback(lambda _: handles)
        return d

    def _resume(self, _: object = None) -> None:
        self._waiting = False
        self._drain()

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
        self._denials += 1
        return f"hoopgw_refused_{self._denials}"

    def _check_query(self, message: codec.Query) -> None:
        infos = classify(message.query)
        actions: list[Action] = []
        for info in infos:
            resolved = self.prepared.resolve(info)
            self.prepared.observe(info)
            actions.append(Action(kind=_action_kind(info, "sql.query"), input=info.text, attributes=resolved.attributes()))
        d = self._decide(actions)

        def decided(handles: list[ActionHandle]) -> None:
            group = self._groups[-1]
            refused = next((h for h in handles if not h.allowed), None)
            if refused is None:
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
        statement, parameters, formats = self.portals.get(message.portal, ("", (), ()))
        info = self.prepared.execute_info(statement)
        if info is None:
            info = StatementInfo(text="", kinds=("unknown",), writes_data=True)
        resolved = self.prepared.resolve(info)
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
        d = self._decide([action])

        def decided(handles: list[ActionHandle]) -> None:
            [handle] = handles
            if handle.allowed:
                self._groups[-1].append(_Pending(handle))
                self.backend.write(message)  # type: ignore[union-attr]
            else:
                marker = self._stand_in()
                self._groups[-1].append(_Pending(None, marker=marker, denial=self._denial(handle)))
                self.backend.write(codec.Execute(marker, 0))  # type: ignore[union-attr]

        d.addCallback(decided)
        d.addCallbacks(self._resume, self._refused_all)

    def _check_function_call(self, message: codec.FunctionCall) -> None:
        action = Action(
            kind="sql.call",
            input=f"function call oid {message.function_oid}",
            attributes={"sql.statements": ("call",), "sql.functions": (str(message.function_oid),)},
        )
        d = self._decide([action])

        def decided(handles: list[ActionHandle]) -> None:
            [handle] = handles
            if handle.allowed:
                self._groups[-1].append(_Pending(handle))
                self.backend.write(message)  # type: ignore[union-attr]
            else:
                marker = self._stand_in()
                self._groups[-1].append(_Pending(None, marker=marker, denial=self._denial(handle)))
                self.backend.write(codec.Query(marker))  # type: ignore[union-attr]
            self._close_group()

        d.addCallback(decided)
        d.addCallbacks(self._resume, self._refused_all)

    # -- the relay: server to client -----------------------------------------

    def _server_messages(self, messages: list[codec.Message]) -> None:
        out: list[bytes] = []
        transform = self.transform
        for message in messages:
            kind = type(message)
            if kind is codec.DataRow:
                group = self._groups[0]
                if group:
                    group[0].rows += 1
                if transform is not None:
                    message = transform.row(message)  # type: ignore[arg-type]
            elif kind is codec.CommandComplete:
                self._complete(Status.succeeded, tag=message.tag)  # type: ignore[attr-defined]
            elif kind is codec.ErrorResponse:
                message = self._error(message)  # type: ignore[arg-type]
            elif kind is codec.EmptyQueryResponse or kind is codec.PortalSuspended:
                self._complete(Status.succeeded)
            elif kind is codec.ReadyForQuery:
                self._end_group()
            elif kind is codec.RowDescription and transform is not None:
                transform.describe(message)  # type: ignore[arg-type]
            elif kind is codec.GenericMessage and message.tag == b"V":  # type: ignore[attr-defined]
                self._complete(Status.succeeded)  # FunctionCallResponse
            out.append(codec.encode(message))
        data = b"".join(out)
        self.bytes_out += len(data)
        self.transport.write(data)

    def _complete(self, status: Status, *, tag: str | None = None, error: str | None = None, code: str | None = None) -> None:
        group = self._groups[0]
        if not group:
            return
        pending = group.popleft()
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
            session.bytes_in, session.bytes_out = self.bytes_in, self.bytes_out
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

