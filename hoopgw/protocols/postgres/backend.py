"""
The gateway's own connection to a target PostgreSQL server: TLS as the
connection demands (disable | require | verify-full), a StartupMessage with
the connection's user and database, and password authentication with the
connection's credentials.  The client's token never travels here.
"""

from __future__ import annotations

from typing import Any, Callable

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import error as net_error
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.protocols import IStreamTransport, _tls as tls, set_no_delay
from hoopgw.protocols.postgres import codec
from hoopgw.protocols.postgres.auth import SCRAM_SHA_256, BackendAuthError, ScramClient, md5_password
from hoopgw.protocols.postgres.settings import PostgresSettings

log = Logger()


def client_tls_options(settings: PostgresSettings) -> Any:
    """
    TLS options for the target leg.  verify-full checks the chain against
    the connection's CA file (or the system store) and the host name with
    service-identity; require encrypts without verifying, as libpq does.
    """
    if settings.tls == "verify-full":
        trust = (
            ssl.Certificate.loadPEM(settings.ca_file.read_bytes())
            if settings.ca_file is not None
            else ssl.platformTrust()
        )
        return ssl.optionsForClientTLS(settings.host, trustRoot=trust)
    return ssl.CertificateOptions(verify=False, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)


class BackendProtocol(Protocol):
    """
    Connects, authenticates, then hands every server message to C{deliver}.

    C{ready} fires with (parameters, BackendKeyData | None) after the first
    ReadyForQuery, or fails with L{BackendAuthError} / the server's
    ErrorResponse wrapped in L{TargetRefused}.
    """

    transport: IStreamTransport

    def __init__(
        self,
        settings: PostgresSettings,
        *,
        password: str | None,
        startup: dict[str, str],
        tls_options: Any,
    ) -> None:
        self.settings = settings
        self._password = password
        self.startup = startup
        self.tls_options = tls_options
        self.parser = codec.BackendParser()
        self.ready: Deferred[BackendProtocol] | None = Deferred()
        self.parameters: dict[str, str] = {}
        self.key: codec.BackendKeyData | None = None
        # After start-up every parsed batch goes here, as one list per read.
        self.deliver: Callable[[list[codec.Message]], None] | None = None
        # Asked before each read once delivering: may runs of DataRows come
        # framed as one (codec.BackendParser.row_runs)?  Only if nobody reads a row.
        self.rows_unread: Callable[[], bool] | None = None
        self.on_lost: Callable[[Failure], None] | None = None
        self._scram: ScramClient | None = None
        self._asked = False  # the target asked for some proof of the password
        self._authenticated = False  # an AuthenticationOk was accepted
        self.bytes_in = 0
        self.bytes_out = 0
        self._corked: list[bytes] | None = None  # (see cork)

    # -- connection set-up ---------------------------------------------------

    def connectionMade(self) -> None:
        set_no_delay(self.transport)  # as libpq does: a message must not wait for the server's ACK of the last
        tls.send_at_once(self.transport)
        if self.settings.tls == "disable":
            self._send_startup()
        else:
            self.parser.expect_encryption_response()
            self.write(codec.SSLRequest())

    def _send_startup(self) -> None:
        parameters = {"user": self.settings.user, "database": self.settings.database, **self.startup}
        self.write(codec.StartupMessage(parameters))

    def write(self, message: codec.Message) -> None:
        self.write_raw(codec.encode(message))

    def write_raw(self, data: bytes) -> None:
        self.bytes_out += len(data)
        corked = self._corked
        if corked is not None:
            corked.append(data)
        else:
            self.transport.write(data)

    def cork(self) -> None:
        """
        Hold writes until L{uncork}: what one read of the client releases
        (a statement, the Describe, Execute and Sync behind it) goes to the
        server as one write -- one send, one TLS record -- not one per decision.
        """
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked:
            self.transport.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def abort(self) -> None:
        """Close at once; what decisions already released this turn goes first, as uncorked it would have."""
        self.uncork()
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.rows_unread is not None:
            self.parser.row_runs = self.rows_unread()
        try:
            messages = self.parser.feed(data)
        except codec.ProtocolError as e:
            self._fail(BackendAuthError(f"target sent a malformed message: {e}"))
            return
        if self.deliver is not None:
            self.deliver(messages)
            return
        for i, message in enumerate(messages):
            try:
                self._setup(message)
            except BackendAuthError as e:
                self._fail(e)
                return
            if self.deliver is not None and i + 1 < len(messages):
                self.deliver(messages[i + 1 :])
                return

    def _setup(self, message: codec.Message) -> None:
        if isinstance(message, codec.EncryptionResponse):
            if message.answer != "S":
                self._fail(BackendAuthError(f"the target refused TLS (tls = {self.settings.tls!r})"))
                return
            self.transport.startTLS(self.tls_options)
            tls.send_at_once(self.transport)
            self._send_startup()
        elif isinstance(message, codec.AuthenticationOk):
            if self._scram is not None:
                self._fail(BackendAuthError("the target skipped SCRAM's final step"))
                return
            if not self._asked:
                self._allowed("none")
            self._authenticated = True
        elif isinstance(message, codec.AuthenticationCleartextPassword):
            self._allowed("password")
            self.write(codec.PasswordMessage(self._secret().encode()))
        elif isinstance(message, codec.AuthenticationMD5Password):
            self._allowed("md5")
            self.write(codec.PasswordMessage(md5_password(self.settings.user, self._secret(), message.salt)))
        elif isinstance(message, codec.AuthenticationSASL):
            if SCRAM_SHA_256 not in message.mechanisms:
                self._fail(BackendAuthError(f"the target offers only {', '.join(message.mechanisms)}"))
                return
            self._allowed("scram-sha-256")
            self._scram = ScramClient(self._secret())
            self.write(codec.SASLInitialResponse(SCRAM_SHA_256, self._scram.first_message()))
        elif isinstance(message, codec.AuthenticationSASLContinue) and self._scram is not None:
            self.write(codec.SASLResponse(self._scram.final_message(message.data)))
        elif isinstance(message, codec.AuthenticationSASLFinal) and self._scram is not None:
            self._scram.verify_final(message.data)
            self._scram = None
        elif not self._authenticated and isinstance(
            message, (codec.ParameterStatus, codec.BackendKeyData, codec.ReadyForQuery)
        ):
            # Start-up goes on only after AuthenticationOk (as libpq checks):
            # a target skipping authentication, or SCRAM half-way, would
            # otherwise sidestep require_auth and the server signature check.
            raise BackendAuthError(
                f"the target sent {type(message).__name__} before authentication succeeded"
            )
        elif isinstance(message, codec.ParameterStatus):
            self.parameters[message.name] = message.value
        elif isinstance(message, codec.BackendKeyData):
            self.key = message
        elif isinstance(message, codec.ReadyForQuery):
            ready, self.ready = self.ready, None
            if ready is not None:
                ready.callback(self)
        elif isinstance(message, codec.ErrorResponse):
            self._fail(TargetRefused(message))
        elif isinstance(message, codec.NoticeResponse):
            pass
        else:
            self._fail(BackendAuthError(f"unexpected {type(message).__name__} from the target during start-up"))

    def _allowed(self, method: str) -> None:
        """
        Refuse, before anything is sent, an authentication method the
        connection does not allow: a downgrade (a man in the middle asking
        for the password in clear or for a relayable MD5 hash) fails here.
        """
        self._asked = self._asked or method != "none"
        allowed = self.settings.require_auth
        if method not in allowed:
            raise BackendAuthError(
                f"the target asked for {method!r} authentication, which the connection's "
                f"require_auth ({', '.join(allowed)}) does not allow"
            )

    def _secret(self) -> str:
        if self._password is None:
            raise BackendAuthError("the target asks for a password but the connection has none configured")
        return self._password

    def _fail(self, error: Exception) -> None:
        ready, self.ready = self.ready, None
        if self.transport is not None:
            self.transport.abortConnection()
        if ready is not None:
            ready.errback(Failure(error))
        else:
            log.error("target connection failed: {error}", error=str(error))

    def _lost(self, reason: Failure) -> str:
        """Why the connection ended, in words an operator can act on (shown to the client)."""
        tls = self.settings.tls
        if reason.check(VerificationError):
            return f"the target's TLS certificate does not name {self.settings.host} (tls = {tls!r})"
        if reason.check(SSL.Error):
            args = reason.value.args if reason.value is not None else ()
            errors = args[0] if args else None
            if isinstance(errors, list) and errors:
                why = "; ".join(str(e[-1]) for e in errors if isinstance(e, tuple) and e)
            else:
                why = reason.getErrorMessage()
            return f"TLS handshake with the target failed (tls = {tls!r}): {why}"
        return f"the target closed the connection: {reason.getErrorMessage()}"

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        ready, self.ready = self.ready, None
        if ready is not None:
            ready.errback(Failure(BackendAuthError(self._lost(reason))))
        elif self.on_lost is not None:
            self.on_lost(reason)


class TargetRefused(BackendAuthError):
    """The target answered start-up with an ErrorResponse (wrong password, no such database...)."""

    def __init__(self, error: codec.ErrorResponse) -> None:
        self.error = error
        super().__init__(f"target refused: {error.code} {error.message}")


class TargetUnreachable(BackendAuthError):
    """
    No connection to the target at all (refused, no route, no answer, a
    name that does not resolve): the target is down or unreachable, not
    refusing this login.  The message names the address tried.
    """


def target_address(settings: PostgresSettings) -> str:
    """C{host:port} as the connection names the target (C{[v6]:port} for an IPv6 address)."""
    host = settings.host
    return f"[{host}]:{settings.port}" if ":" in host else f"{host}:{settings.port}"


def unreachable(failure: Failure, settings: PostgresSettings) -> TargetUnreachable:
    """Why a TCP connection to the target failed, in words that name the address tried."""
    where = target_address(settings)
    if failure.check(net_error.ConnectionRefusedError):
        why = f"connection refused by {where}"
    elif failure.check(net_error.TimeoutError, net_error.TCPTimedOutError):
        why = f"no answer from {where} (connection timed out)"
    elif failure.check(net_error.NoRouteError):
        why = f"no route to {where}"
    elif failure.check(net_error.DNSLookupError):
        why = f"cannot resolve {settings.host!r} (the target {where})"
    else:
        why = f"cannot reach {where}: {failure.getErrorMessage()}"
    return TargetUnreachable(why)
