"""
The client's side of the PostgreSQL start-up handshake, message by message:
encryption negotiation, the start-up packet, the password (the token).
Pure: no sockets, no Deferreds.  The front end feeds L{Handshake.receive}
each start-up message and does what the L{Step} it returns says; once the
token is verified and the target is logged in, L{welcome} is what the
client gets.  What the target gets (L{target_parameters}) and how a failed
start-up reads to the client (L{refusal}) are here too.

  - C{SSLRequest} is answered C{S} and TLS starts (C{N} when no TLS is
    configured, or it already runs); C{GSSENCRequest} is answered C{N}.
  - The password is a bearer token: a C{StartupMessage} over plaintext is
    refused (28000) before the password is asked for.
  - C{CancelRequest} is its own short connection (L{Cancel}).
  - Anything else, or out of order, is a protocol violation (08P01).

A database that names a connection of another kind is refused with 3D000,
as the server's own "database does not exist", once policy has let the
client open it; a refused start-up is recorded by the front end
(C{SessionService.refused}).
"""

from __future__ import annotations

import enum
from typing import Any

from attrs import frozen
from twisted.python.failure import Failure

from hoopgw.errors import AuditUnavailable, AuthenticationFailed, HoopgwError, NotPermitted, WrongKind
from hoopgw.protocols.postgres import codec, lexical
from hoopgw.protocols.postgres.auth import BackendAuthError
from hoopgw.protocols.postgres.backend import TargetUnreachable

__all__ = [
    "PASSED_PARAMETERS",
    "AskPassword",
    "Authenticate",
    "Cancel",
    "Encryption",
    "Handshake",
    "Refuse",
    "Refusal",
    "refusal",
    "target_parameters",
    "welcome",
]

# Start-up parameters passed on to the target; `options` (arbitrary -c
# settings) and `replication` are not.
PASSED_PARAMETERS = frozenset(
    {"application_name", "client_encoding", "datestyle", "timezone", "extra_float_digits", "intervalstyle"}
)


@frozen
class Encryption:
    """Answer an encryption request with C{answer}; start TLS after it if C{start_tls}."""

    answer: bytes
    start_tls: bool = False


@frozen
class Cancel:
    """A CancelRequest: the connection is only that; close it and cancel."""

    request: codec.CancelRequest


@frozen
class AskPassword:
    """The start-up packet is in: ask for the password (the token)."""


@frozen
class Authenticate:
    """Verify C{token}, open the session and log in to the target."""

    token: str


@frozen
class Refuse:
    """End the connection with a FATAL C{code} and C{message}."""

    code: str
    message: str


Step = Encryption | Cancel | AskPassword | Authenticate | Refuse


class Stage(enum.Enum):
    STARTUP = "startup"  # encryption requests, then the start-up packet
    PASSWORD = "password"  # the token is asked for
    DONE = "done"  # the token is in (or the connection is refused)


class Handshake:
    """One client's start-up (module docstring)."""

    def __init__(self, *, tls_available: bool) -> None:
        self.tls_available = tls_available
        self.tls = False
        self.stage = Stage.STARTUP
        self.startup: codec.StartupMessage | None = None

    def receive(self, message: codec.Message) -> Step:
        if self.stage is Stage.STARTUP:
            if isinstance(message, codec.SSLRequest):
                if self.tls or not self.tls_available:
                    return Encryption(b"N")
                self.tls = True
                return Encryption(b"S", start_tls=True)
            if isinstance(message, codec.GSSENCRequest):
                return Encryption(b"N")
            if isinstance(message, codec.CancelRequest):
                self.stage = Stage.DONE
                return Cancel(message)
            if isinstance(message, codec.StartupMessage):
                if not self.tls:
                    self.stage = Stage.DONE
                    return Refuse("28000", "hoopgw requires TLS: connect with sslmode=require (or stronger)")
                self.startup = message
                self.stage = Stage.PASSWORD
                return AskPassword()
        elif self.stage is Stage.PASSWORD and isinstance(message, codec.PasswordMessage):
            self.stage = Stage.DONE
            return Authenticate(message.password.decode("utf-8", "replace"))
        self.stage = Stage.DONE
        return Refuse("08P01", f"unexpected {type(message).__name__} during start-up")

    @property
    def user(self) -> str:
        return (self.startup.user if self.startup is not None else None) or ""

    @property
    def database(self) -> str:
        return (self.startup.database if self.startup is not None else None) or self.user

    def client(self) -> dict[str, Any]:
        """What the session records about the client."""
        startup = self.startup
        return {
            "user": self.user,
            "application_name": (startup.get("application_name") if startup is not None else None) or "",
            "tls": self.tls,
        }


def target_parameters(startup: codec.StartupMessage) -> dict[str, str]:
    """The start-up parameters the target gets: the passed ones, then the lexical settings the gateway pins."""
    parameters = {name: value for name, value in startup.parameters if name.lower() in PASSED_PARAMETERS}
    parameters.update(lexical.PINNED)
    return parameters


def welcome(parameters: dict[str, str], process_id: int, secret: bytes) -> list[codec.Message]:
    """
    What the client gets once the target is logged in: the target's
    parameters, and the gateway's own cancel key (never the target's).
    """
    return [
        codec.AuthenticationOk(),
        *(codec.ParameterStatus(name, value) for name, value in parameters.items()),
        codec.BackendKeyData(process_id, secret),
        codec.ReadyForQuery("I"),
    ]


@frozen
class Refusal:
    """
    How a failed start-up reads: the client's FATAL C{code} and C{message};
    C{session_error}: the session was opened and ends failed with it
    (C{None}: there is none to end); C{unexpected}: log the failure.
    """

    code: str
    message: str
    session_error: str | None = None
    unexpected: bool = False


def refusal(failure: Failure, user: str) -> Refusal:
    """The L{Refusal} for a start-up that failed with C{failure}."""
    value = failure.value
    if isinstance(value, AuthenticationFailed):
        return Refusal("28P01", f'password authentication failed for user "{user}": token rejected ({value.reason})')
    if failure.check(WrongKind):
        # As the server's own 'database "x" does not exist' (invalid_catalog_name):
        # the name is no PostgreSQL database.  Only an identity policy lets
        # open the connection gets here (see SessionService.open).
        return Refusal("3D000", str(failure.value))
    if failure.check(NotPermitted):
        return Refusal("28000", str(failure.value))
    if failure.check(AuditUnavailable):
        return Refusal("57P03", "the gateway's audit log is unavailable, so it refuses all traffic")
    if failure.check(TargetUnreachable):
        # As libpq's own "could not connect" (sqlclient_unable_to_establish_sqlconnection).
        return Refusal("08001", f"cannot connect to the target: {failure.value}", session_error=str(failure.value))
    if failure.check(BackendAuthError, HoopgwError):
        return Refusal("08006", f"cannot connect to the target: {failure.value}", session_error=str(failure.value))
    return Refusal("08006", "cannot connect to the target", session_error="internal error", unexpected=True)
