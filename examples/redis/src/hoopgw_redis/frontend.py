"""
The Redis front end's Twisted glue: a listener's factory (L{RedisFrontEnd}),
one protocol per client (L{RedisClient}) around the sans-IO L{Relay}, the
gateway's own connections to the target (L{Upstream}) and the catalog of
the target's commands (L{Catalog}); and L{make_front_end}, what the
plugin (L{hoopgw_redis.plugin}) names to build the gateway's listener.

    front = RedisFrontEnd(sessions=service, reactor=reactor)
    endpoints.serverFromString(reactor, "ssl:16379:...").listen(front)

    redis-cli -p 16379 --tls --user cache --pass "$(hoopgw token issue --sub alice)"

Each client gets its own connection to the target, opened once it has
logged in, as the connection's own ACL user (C{AUTH}, or C{HELLO <2|3>
AUTH ...} for a client that asked for a protocol with C{HELLO}), with TLS as
the connection says; the client's token never leaves the gateway.  The
token is the password (C{AUTH <connection> <token>}), so by default it is
only taken over TLS: a token sent in the clear is refused, and recorded.

Every command is an action (L{hoopgw_redis.actions}): the target's catalog
connection (one per connection and listener, C{COMMAND INFO}, cached) says
what the command is, so its kind, its keys and the rules that match it
follow what the target will run (a renamed command is known by what it
is); policy decides; an allowed command is forwarded, a refused one
answered C{-NOPERM hoopgw: rule '...' ...}.  Replies pass the session's
masks by detector (L{hoopgw_redis.masking}).  A command held for review
waits, and the commands after it wait behind it (the client waits, as for
a slow command); other sessions go on.  If the audit log cannot be
written, the command is refused and the connection closed (fail closed).
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IProtocolFactory, ISSLTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from hoopgw.frontend import (
    GATEWAY_RULE,
    Action,
    AuditUnavailable,
    AuthenticationFailed,
    Connection,
    HoopgwError,
    IActionHandle,
    ISession,
    ISessionService,
    IStreamTransport,
    NotPermitted,
    ReadPause,
    Reading,
    Source,
    mark_authenticated,
    server_options,
)

from hoopgw_redis.actions import NOT_A_COMMAND, Described, Limits, Lookup, describe
from hoopgw_redis.commands import parse_command_info
from hoopgw_redis.masking import ReplyMasker
from hoopgw_redis.policy import fail_closed
from hoopgw_redis.relay import Login, Phase, Relay, RelayLimits, Verdict
from hoopgw_redis.resp import Command, Error, ProtocolError, ReplyParser, encode, encode_command, error_reply
from hoopgw_redis.settings import RedisSettings, client_tls_options
from hoopgw_redis.transcript import Transcript, open_transcript

__all__ = [
    "KIND", "Catalog", "RecordingUnavailable", "RedisClient", "RedisFrontEnd", "TargetError", "Upstream",
    "make_front_end",
]

log = Logger()

KIND = "redis"
# Longer names are not looked up (redis-server's and modules' names are short).
MAX_NAME = 128
AUDIT_DOWN = "the gateway's audit log is unavailable, so it refuses all traffic"


class TargetError(HoopgwError):
    """The gateway could not reach the target, or log in to it; the message is safe to show."""


class RecordingUnavailable(HoopgwError):
    """The session's transcript could not be opened: the session does not go on unrecorded."""


def _set_no_delay(transport: Any) -> None:
    # A relay's small writes must not wait for the peer's delayed ACK.
    try:
        transport.setTcpNoDelay(True)
    except (AttributeError, OSError):
        pass


class Upstream(Protocol):
    """
    The gateway's connection to the target: TLS as the settings say, a
    login as the connection's ACL user (pipelined: C{HELLO}/C{AUTH}, then
    C{SELECT}), then every reply to C{deliver}.  C{ready} fires with the
    login's first reply (C{HELLO}'s map, or C{+OK}) or fails with
    L{TargetError}.
    """

    transport: IStreamTransport  # (an annotation: what Twisted's TCP and TLS transports offer)

    def __init__(
        self,
        settings: RedisSettings,
        password: str | None,
        tls_options: Any,
        *,
        protocol: int | None = None,
        setname: bytes | None = None,
    ) -> None:
        self.settings = settings
        self.password = password
        self.tls_options = tls_options
        self.protocol = protocol
        self.setname = setname
        self.parser = ReplyParser()
        self.ready: Deferred[Any] = Deferred()
        self.deliver: Callable[[list[Any]], object] | None = None
        self.on_lost: Callable[[str], object] | None = None
        self._login = self.login_commands()
        self._first: Any = None

    def _auth_args(self) -> list[bytes]:
        if self.password is None:
            return []
        password = self.password.encode("utf-8")
        return [self.settings.user.encode("utf-8"), password] if self.settings.user else [password]

    def login_commands(self) -> list[tuple[str, bytes, str]]:
        """The login, as (name, bytes, what its failing means)."""
        commands = []
        auth = self._auth_args()
        if self.protocol is not None:
            args = [b"HELLO", b"%d" % self.protocol]
            if auth:
                args += [b"AUTH", auth[0] if len(auth) == 2 else b"default", auth[-1]]
            if self.setname is not None:
                args += [b"SETNAME", self.setname]
            commands.append(("HELLO", encode_command(*args), "the target refused the gateway's login"))
        elif auth:
            commands.append(("AUTH", encode_command(b"AUTH", *auth), "the target refused the gateway's login"))
        if self.settings.db:
            commands.append(("SELECT", encode_command(b"SELECT", self.settings.db),
                             f"the target refused SELECT {self.settings.db}"))
        return commands

    def relogin_commands(self) -> list[tuple[str, bytes, str]]:
        """What logs in again after the client's RESET (which logs the target's connection out, to RESP2)."""
        commands = []
        auth = self._auth_args()
        if auth:
            commands.append(("AUTH", encode_command(b"AUTH", *auth),
                             "the gateway could not log in to the target again after RESET"))
        if self.settings.db:
            commands.append(("SELECT", encode_command(b"SELECT", self.settings.db),
                             f"the gateway could not SELECT {self.settings.db} again after RESET"))
        return commands

    def connectionMade(self) -> None:
        if self.tls_options is not None:
            self.transport.startTLS(self.tls_options)
        _set_no_delay(self.transport)
        if self._login:
            self.transport.write(b"".join(data for _, data, _ in self._login))
        else:
            self.ready.callback(None)

    def dataReceived(self, data: bytes) -> None:
        try:
            values = self.parser.feed(data)
        except ProtocolError as e:
            self._fail(TargetError(f"the target broke the protocol: {e}"))
            self.transport.abortConnection()
            return
        if not self.ready.called:
            while values and self._login:
                value = values.pop(0)
                name, _, meaning = self._login.pop(0)
                if isinstance(value, Error):
                    self._fail(TargetError(f"{meaning}: {value.message.decode('utf-8', 'replace')}"))
                    self.transport.loseConnection()
                    return
                if self._first is None:
                    self._first = value
                if not self._login:
                    self.ready.callback(self._first)
            if not values:
                return
        if self.deliver is not None:
            self.deliver(values)

    def _fail(self, error: Exception) -> None:
        if not self.ready.called:
            self.ready.errback(Failure(error))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        why = self._lost(reason)
        if not self.ready.called:
            self.ready.errback(Failure(TargetError(why)))
        elif self.on_lost is not None:
            self.on_lost(why)

    def _lost(self, reason: Failure | None) -> str:
        if reason is None:
            return "connection lost"
        tls = self.settings.tls
        text = reason.getErrorMessage()
        if self.tls_options is not None and ("SSL" in type(reason.value).__name__ or "certificate" in text.lower()
                                             or "VerificationError" in type(reason.value).__name__):
            return f"TLS with the target failed (tls = {tls!r}): {text}"
        return text or type(reason.value).__name__


class Catalog:
    """
    What the target's command names are (C{COMMAND INFO <name>}), asked on
    a connection of its own (a session's connection may be inside MULTI,
    subscribed or blocked) and cached: a known name for C{ttl} seconds, a
    name that is no command for C{negative_ttl}, a failed question for
    C{unavailable_ttl} (then commands are judged as unreadable: fail
    closed).  At most C{max_entries} names are kept.
    """

    def __init__(
        self,
        connect: Callable[[], Deferred[Upstream]],
        clock: Any,
        *,
        ttl: float = 300.0,
        negative_ttl: float = 30.0,
        unavailable_ttl: float = 5.0,
        timeout: float = 5.0,
        max_entries: int = 4096,
    ) -> None:
        self._connect = connect
        self.clock = clock
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.unavailable_ttl = unavailable_ttl
        self.timeout = timeout
        self.max_entries = max_entries
        self._cache: dict[bytes, tuple[Lookup, float]] = {}
        self._inflight: dict[bytes, list[Deferred[Lookup]]] = {}
        self._upstream: Upstream | None = None
        self._connecting: Deferred[None] | None = None
        self._asked: deque[tuple[bytes, Any]] = deque()  # questions sent, in order: (name, timer)
        self._warned = False
        self.questions = 0

    def lookup(self, name: bytes) -> Deferred[Lookup]:
        """A L{Deferred} firing with the L{Lookup} of a typed command name (it never fails)."""
        name = name.lower()
        if not name or b"|" in name or len(name) > MAX_NAME:
            # COMMAND INFO reads "a|b" as a subcommand; the target never runs it as a command.
            # No command's name is that long: a client's made-up names do not fill the cache.
            return succeed(NOT_A_COMMAND)
        cached = self._cache.get(name)
        if cached is not None:
            if cached[1] > self.clock.seconds():
                return succeed(cached[0])
            del self._cache[name]
        d: Deferred[Lookup] = Deferred()
        waiters = self._inflight.get(name)
        if waiters is not None:
            waiters.append(d)
            return d
        self._inflight[name] = [d]
        self._ask(name)
        return d

    def _ask(self, name: bytes) -> None:
        upstream = self._upstream
        if upstream is not None and upstream.transport is not None:
            self.questions += 1
            timer = self.clock.callLater(self.timeout, self._too_slow)
            self._asked.append((name, timer))
            upstream.transport.write(encode_command(b"COMMAND", b"INFO", name))
            return
        connecting = self._connecting
        if connecting is None:
            # Kept before connecting: a connection made at once clears it (_connected).
            connecting = self._connecting = Deferred()
            self._connect().addCallbacks(self._connected, self._unreachable).chainDeferred(connecting)
        connecting.addCallback(lambda _: self._ask(name) if name in self._inflight else None)

    def _connected(self, upstream: Upstream) -> None:
        self._connecting = None
        self._upstream = upstream
        upstream.deliver = self._replies
        upstream.on_lost = self._lost

    def _unreachable(self, failure: Failure) -> None:
        self._connecting = None
        why = failure.getErrorMessage() if failure.check(TargetError) else "the catalog connection failed"
        if not failure.check(TargetError):
            log.failure("redis catalog connection failed", failure)
        for name in list(self._inflight):
            self._answer(name, Lookup.unavailable(why))

    def _replies(self, values: list[Any]) -> None:
        for value in values:
            if not self._asked:
                log.warn("redis catalog: a reply came with no question; reconnecting")
                self._drop("an unexpected reply")
                return
            name, timer = self._asked.popleft()
            if timer.active():
                timer.cancel()
            self._answer(name, self._read(name, value))

    def _read(self, name: bytes, value: Any) -> Lookup:
        if isinstance(value, Error):
            message = value.message.decode("utf-8", "replace")
            if not self._warned:
                self._warned = True
                log.warn("redis catalog: the target refuses COMMAND INFO ({message}); every command is judged "
                         "as unreadable (allow COMMAND to the connection's ACL user)", message=message)
            return Lookup.unavailable(f"COMMAND INFO: {message}")
        try:
            entries = value if isinstance(value, tuple) else ()
            if len(entries) != 1:
                raise ValueError(f"{len(entries)} entries for one name")
            info = parse_command_info(entries[0])
        except (ValueError, KeyError, TypeError) as e:
            return Lookup.unavailable(f"an unreadable COMMAND INFO reply ({e})")
        return Lookup(info) if info is not None else NOT_A_COMMAND

    def _answer(self, name: bytes, lookup: Lookup) -> None:
        if lookup.info is not None:
            ttl = self.ttl
        elif lookup.known:
            ttl = self.negative_ttl
        else:
            ttl = self.unavailable_ttl
        if len(self._cache) >= self.max_entries:
            del self._cache[next(iter(self._cache))]
        self._cache[name] = (lookup, self.clock.seconds() + ttl)
        for d in self._inflight.pop(name, []):
            d.callback(lookup)

    def _too_slow(self) -> None:
        self._drop(f"no answer within {self.timeout:g} s")

    def _drop(self, why: str) -> None:
        """The connection is out of step or gone: every open question is answered unavailable."""
        upstream, self._upstream = self._upstream, None
        asked, self._asked = self._asked, deque()
        for name, timer in asked:
            if timer.active():
                timer.cancel()
            self._answer(name, Lookup.unavailable(why))
        if upstream is not None:
            upstream.on_lost = None
            if upstream.transport is not None:
                upstream.transport.abortConnection()

    def _lost(self, why: str) -> None:
        self._drop(f"the catalog connection was lost ({why})")

    def close(self) -> None:
        self._drop("the listener stopped")


class RedisFrontEnd(Factory):
    """
    One per listener.  Secrets (the connections' passwords) and the
    targets' TLS options are read here, at start-up, never per login.

    @param require_tls: take tokens only over TLS (a C{ssl:} listener).
    @param auth_timeout: seconds a client has to log in.
    @param connect: how the target is reached (tests); by default a
        C{HostnameEndpoint} with the connection's C{login_timeout}.
    """

    protocol = None

    def __init__(
        self,
        *,
        sessions: ISessionService,
        reactor: Any,
        require_tls: bool = True,
        auth_timeout: float = 30.0,
        relay_limits: RelayLimits = RelayLimits(),
        action_limits: Limits = Limits(),
        connect: Callable[[RedisSettings, Protocol], Deferred[Any]] | None = None,
        catalog_ttl: float = 300.0,
    ) -> None:
        self.sessions = sessions
        self.reactor = reactor
        self.require_tls = require_tls
        self.auth_timeout = auth_timeout
        self.relay_limits = relay_limits
        self.action_limits = action_limits
        self.catalog_ttl = catalog_ttl
        redis = [c for c in sessions.connections.values() if c.kind == KIND]
        self.passwords = {c.name: c.settings.password.read() for c in redis if c.settings.password is not None}
        self.target_tls = {c.name: client_tls_options(c.settings) for c in redis if c.settings.tls != "disable"}
        self.connect = connect or self._connect
        self._catalogs: dict[str, Catalog] = {}

    def _connect(self, settings: RedisSettings, protocol: Protocol) -> Deferred[Any]:
        endpoint = HostnameEndpoint(self.reactor, settings.host, settings.port, timeout=settings.login_timeout)
        connected: Deferred[Any] = connectProtocol(endpoint, protocol)
        return connected

    def upstream(
        self, connection: Connection, *, protocol: int | None = None, setname: bytes | None = None
    ) -> Deferred[tuple[Upstream, Any]]:
        """A logged-in L{Upstream} to the connection's target (fires once its login is done)."""
        settings: RedisSettings = connection.settings
        upstream = Upstream(settings, self.passwords.get(connection.name), self.target_tls.get(connection.name),
                            protocol=protocol, setname=setname)

        def unreachable(failure: Failure) -> Failure:
            if failure.check(TargetError):
                return failure
            return Failure(TargetError(f"cannot connect to {settings.address}: {failure.getErrorMessage()}"))

        def too_slow(result: object, timeout: float) -> Failure:
            if upstream.transport is not None:
                upstream.transport.abortConnection()
            return Failure(TargetError(f"the target did not log the gateway in within {timeout:g} s (login_timeout)"))

        ready = self.connect(settings, upstream).addCallback(lambda _: upstream.ready)
        logged_in = ready.addCallback(lambda reply: (upstream, reply)).addErrback(unreachable)
        return logged_in.addTimeout(settings.login_timeout, self.reactor, onTimeoutCancel=too_slow)

    def catalog(self, connection: Connection) -> Catalog:
        catalog = self._catalogs.get(connection.name)
        if catalog is None:
            catalog = self._catalogs[connection.name] = Catalog(
                lambda: self.upstream(connection).addCallback(lambda pair: pair[0]),
                self.reactor,
                ttl=self.catalog_ttl,
            )
        return catalog

    def buildProtocol(self, addr: Any) -> RedisClient:
        protocol = RedisClient(self, Source.from_address(KIND, addr))
        protocol.factory = self
        return protocol

    def stopFactory(self) -> None:
        catalogs, self._catalogs = self._catalogs, {}
        for catalog in catalogs.values():
            catalog.close()


def _credential_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class RedisClient(Protocol):
    """One client connection: the L{Relay}'s outputs carried out (see L{hoopgw_redis.relay.Output})."""

    transport: IStreamTransport

    def __init__(self, front: RedisFrontEnd, source: Source) -> None:
        self.front = front
        self.source = source
        self.relay = Relay(self, limits=front.relay_limits)
        self.session: ISession | None = None
        self.upstream: Upstream | None = None
        self.transcript: Transcript | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.status = "closed"
        self.error: str | None = None
        self.review: Any = None
        self._deadline: Any = None
        self._reading: Reading | None = None
        self._target_reading: Reading | None = None
        self._linked = False

    # -- the client's connection ------------------------------------------------

    def connectionMade(self) -> None:
        self._reading = Reading(self.transport)
        _set_no_delay(self.transport)
        self._deadline = self.front.reactor.callLater(self.front.auth_timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        if self.relay.phase in (Phase.ANONYMOUS, Phase.LOGGING_IN):
            self.relay.fail(error_reply(f"hoopgw: not logged in within {self.front.auth_timeout:g} s"),
                            "login timed out")

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.relay.data_received(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        self.relay.connection_lost()
        self._unlink()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.on_lost = None
            if upstream.transport is not None:
                # Abort: a command blocked on the target (BLPOP) ends with the client.
                upstream.transport.abortConnection()
        self.front.sessions.withdraw_review(self.review, "the client left")
        session, self.session = self.session, None
        if session is not None:
            session.close(status=self.status, error=self.error)

    def _unlink(self) -> None:
        """Undo the producer links: a closing transport must not keep a producer, nor leave a peer paused."""
        if not self._linked:
            return
        self._linked = False
        for transport in (self.transport, self.upstream.transport if self.upstream is not None else None):
            if transport is not None and getattr(transport, "connected", True):
                transport.unregisterProducer()

    # -- Output -----------------------------------------------------------------

    def to_client(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.transport.write(data)

    def to_target(self, data: bytes) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.write(data)

    def close(self) -> None:
        self._unlink()
        self.transport.loseConnection()

    def reading(self, on: bool) -> None:
        if self._reading is not None:
            (self._reading.resume if on else self._reading.pause)("queue")

    def finished(self, token: Any, outcome: Any) -> None:
        if IActionHandle.providedBy(token):
            token.finish(outcome)

    # -- logging in ---------------------------------------------------------------

    def _tls(self) -> bool:
        return ISSLTransport.providedBy(self.transport)

    def login(self, login: Login) -> None:
        sessions = self.front.sessions
        if not login.user:
            sessions.auth_failed(source=self.source, reason="AUTH without a connection name", method="token",
                                 credential_sha256=_credential_sha256(login.token))
            self.relay.login_refused(error_reply(
                "hoopgw: name the connection as the user: AUTH <connection> <token>"))
            return
        if self.front.require_tls and not self._tls():
            sessions.auth_failed(source=self.source, reason="a token sent without TLS", method="token",
                                 user=login.user, credential_sha256=_credential_sha256(login.token))
            self.relay.login_refused(error_reply(
                "hoopgw requires TLS: connect with --tls (the token is a bearer credential)"), close=True)
            return
        client: dict[str, Any] = {"resp": login.protocol or 2}
        if login.setname is not None:
            client["name"] = login.setname.decode("utf-8", "replace")
        identified = sessions.authenticate_token(login.token, source=self.source, user=login.user)
        opened = identified.addCallback(lambda identity: sessions.open(identity, login.user, kind=KIND,
                                                                       source=self.source, client=client))
        opened.addCallback(self._opened, login).addErrback(self._login_failed)

    def _opened(self, session: ISession, login: Login) -> Deferred[None] | None:
        self.session = session
        session.traffic = lambda: (self.bytes_in, self.bytes_out)
        session.on_terminate = self._terminated
        if self.relay.phase is not Phase.LOGGING_IN:  # the client left meanwhile
            self.session = None
            session.close(status="client disconnected")
            return None
        d = self.front.upstream(session.connection, protocol=login.protocol, setname=login.setname)
        return d.addCallback(self._target_ready, login)

    def _target_ready(self, pair: tuple[Upstream, Any], login: Login) -> None:
        upstream, reply = pair
        if self.relay.phase is not Phase.LOGGING_IN:
            upstream.transport.loseConnection()
            return
        self.upstream = upstream
        session = self.session
        if session is not None:
            try:
                # The session's transcript (when the gateway keeps recordings): its SHA-256 in session.end.
                transcript = open_transcript(session, self.front.reactor, on_failure=self._recording_failed)
            except (OSError, ValueError) as e:
                upstream.transport.abortConnection()
                raise RecordingUnavailable(f"the session cannot be recorded ({e.__class__.__name__})") from e
            self.transcript = self.relay.transcript = transcript
        if session is not None and session.service.masking is not None:
            # Asked per value, not kept: a session's masks follow policy reloads.
            self.relay.masker = ReplyMasker(lambda: session.masks, max_value=upstream.settings.max_masked_value,
                                            max_reply=upstream.settings.max_masked_reply)
        upstream.deliver = self.relay.target_replies
        upstream.on_lost = self._target_lost
        # Backpressure both ways: while one side cannot take more, the other is not read.
        self._target_reading = Reading(upstream.transport)
        self.transport.registerProducer(ReadPause(self._target_reading), True)
        if self._reading is not None:
            upstream.transport.registerProducer(ReadPause(self._reading), True)
        self._linked = True
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        mark_authenticated(self)  # out of the listener's pre-authentication limits
        answer = encode(reply) if login.protocol is not None and reply is not None else b"+OK\r\n"
        self.relay.logged_in(answer, protocol=login.protocol or 2, db=upstream.settings.db,
                             relogin=upstream.relogin_commands())

    def _login_failed(self, failure: Failure) -> None:
        close = True
        if isinstance(failure.value, AuthenticationFailed):
            reply, close = error_reply(f"hoopgw: token rejected ({failure.value.reason})", code="WRONGPASS"), False
        elif failure.check(NotPermitted):
            reply, close = error_reply(f"hoopgw: {failure.value}", code="NOPERM"), False
        elif failure.check(AuditUnavailable):
            reply = error_reply(f"hoopgw: {AUDIT_DOWN}")
        elif failure.check(RecordingUnavailable):
            log.failure("redis session could not be recorded", failure)
            reply = error_reply(f"hoopgw: {failure.value}")
            self.status, self.error = "failed", str(failure.value)
        elif failure.check(TargetError):
            reply = error_reply(f"hoopgw: cannot connect to the target: {failure.value}")
            if self.session is not None:
                log.warn("redis session {session} ({connection}): {error}", session=self.session.id,
                         connection=self.session.connection.name, error=str(failure.value))
                self.status, self.error = "failed", str(failure.value)
        else:
            log.failure("redis login failed", failure)
            reply = error_reply("hoopgw: internal error")
            self.status, self.error = "failed", "internal error"
        self.relay.login_refused(reply, close=close)
        session = self.session
        if session is not None and self.relay.phase is not Phase.READY:
            self.session = None
            session.close(status=self.status, error=self.error)

    # -- commands ---------------------------------------------------------------

    def decide(self, command: Command) -> None:
        session = self.session
        assert session is not None
        d = self.front.catalog(session.connection).lookup(command.args[0])
        d.addCallback(self._judge, session, command)
        d.addErrback(self._decide_failed)

    def _judge(self, lookup: Lookup, session: ISession, command: Command) -> Deferred[None]:
        described = describe(command, lookup, db=self.relay.db, limits=self.front.action_limits)
        refusal = self.relay.refusal(described.canonical, command.args)
        attributes: Any = described.attributes
        if refusal is None and (described.keys_unknown or described.commands_unknown):
            # Fail closed: what cannot be read matches the deny and review rules on it.
            rules = getattr(getattr(session.service.policy, "policy_set", None), "rules", None)
            attributes = fail_closed(described, rules, session.identity, session.connection.name)
            if attributes is None:
                refusal = (f"the gateway cannot read this command fully "
                           f"({described.keys_unknown or described.commands_unknown}) "
                           "and cannot match it against the policy's redis.* rules")
                attributes = described.attributes
        action = Action(kind=described.kind, input=described.input, attributes=attributes,
                        details=described.details)
        if refusal is not None:
            d = session.refuse(action, refusal)
        else:
            d = session.check(action, on_held=self._held)
        return d.addCallback(self._decided, described)

    def _decided(self, handle: IActionHandle, described: Described) -> None:
        if handle.review is not None and handle.review is self.review:
            self.review = None
        allowed = handle.allowed
        if self.transcript is not None:
            self.transcript.command(handle, described.input, refused=not allowed)
        self.relay.decided(Verdict(allowed, described.canonical, handle, b"" if allowed else self._denial(handle),
                                   hidden=described.hidden))

    def _held(self, review: Any) -> None:
        # The client waits, as for a slow command; one that leaves withdraws the request.
        self.review = review

    @staticmethod
    def _denial(handle: IActionHandle) -> bytes:
        decision = handle.decision
        assert decision is not None
        if decision.rule == GATEWAY_RULE:
            return error_reply(f"hoopgw: {decision.message} (nothing was sent to the server)")
        rule = decision.rule
        review = handle.review
        if review is not None:
            return error_reply(f"hoopgw: {review.refusal()} (rule '{rule}', review {review.id}); "
                               "nothing was sent to the server", code="NOPERM")
        if rule is None:
            return error_reply(f"hoopgw: {decision.message}; nothing was sent to the server", code="NOPERM")
        message = decision.message
        if not message or message == f'denied by policy rule "{rule}"':
            return error_reply(f"hoopgw: rule '{rule}' denies this command; nothing was sent to the server",
                               code="NOPERM")
        return error_reply(f"hoopgw: rule '{rule}': {message}; nothing was sent to the server", code="NOPERM")

    def _decide_failed(self, failure: Failure) -> None:
        if failure.check(NotPermitted) and (self.session is None or self.session.closed):
            return  # the client left while it was decided
        if failure.check(AuditUnavailable):
            self.status, self.error = "failed", "audit log unavailable"
            self.relay.fail(error_reply(f"hoopgw: {AUDIT_DOWN}"), "audit log unavailable")
            return
        log.failure("redis command could not be decided", failure)
        self.status, self.error = "failed", "internal error"
        self.relay.fail(error_reply("hoopgw: the gateway could not decide this command"), "internal error")

    # -- ends -------------------------------------------------------------------

    def _recording_failed(self, reason: str) -> None:
        # Called from inside a write of the transcript (the relay may be mid-reply): ended on the next turn.
        self.front.reactor.callLater(0, self._unrecorded, reason)

    def _unrecorded(self, reason: str) -> None:
        """The transcript cannot be written (disk full): the session does not go on unrecorded."""
        self.status, self.error = "failed", f"the session's recording failed ({reason})"
        self.relay.fail(error_reply("hoopgw: the session's recording failed, so the connection is closed"),
                        self.error)

    def _target_lost(self, why: str) -> None:
        self.status, self.error = "target closed", why
        self.relay.target_lost(why)  # the client is told, and closed
        self.upstream = None  # (gone: nothing to abort when the client's side closes)

    def _terminated(self, reason: str) -> None:
        """The gateway ends the session (a grant ended, the gateway stops): the client is told, then closed."""
        self.relay.fail(error_reply(f"hoopgw: the session was ended ({reason})"), f"the session was ended ({reason})")
        if self.transport is not None:
            self.transport.loseConnection()


# A [listen] redis endpoint that does TLS itself (its own certificate).
_TLS_ENDPOINT = re.compile(r"(?:haproxy:)?ssl:")


def make_front_end(context: Any) -> IProtocolFactory:
    """
    The C{redis} listener's factory (L{IFrontEnd.build
    <hoopgw.interfaces.IFrontEnd.build>}, through L{hoopgw_redis.plugin}):
    TLS from the first byte with the gateway's certificate, then RESP; an
    C{ssl:} endpoint in C{[listen]} does TLS itself, with the certificate
    it names.  Secrets and the targets' TLS options are read here, at
    start-up.
    """

    front = RedisFrontEnd(sessions=context.sessions, reactor=context.reactor)
    if _TLS_ENDPOINT.match(context.config.listen.get(KIND) or ""):
        return front
    # No ALPN: no Redis client offers a protocol name, and naming one would
    # fail the handshake of a client that offers another.
    return TLSMemoryBIOFactory(server_options(context.tls_cert, context.tls_key), False, front)
