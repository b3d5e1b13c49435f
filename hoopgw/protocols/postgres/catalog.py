"""
The target's catalog, read on the gateway's own connection to it, for what
a client names only by number: a FunctionCall's function OID.

One connection per configured target, opened on first use with the
connection's own credentials and TLS settings and kept (txpostgres over
psycopg2's asynchronous mode: nothing blocks the reactor).  Answers are
cached for C{ttl} seconds.  A lookup that fails (the target is down, the
query errors) answers C{None}: the caller treats the object as unknown,
which the shipped policy refuses.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.config import PostgresSettings

__all__ = ["Catalog"]

log = Logger()

_FUNCTION = (
    "SELECT n.nspname, p.proname FROM pg_catalog.pg_proc p "
    "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = %s"
)
_CACHE_MAX = 4096


def connection_parameters(settings: PostgresSettings, password: str | None) -> dict[str, Any]:
    """libpq parameters for the gateway's own connection to C{settings}' target."""
    parameters: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "dbname": settings.database,
        "user": settings.user,
        "connect_timeout": settings.login_timeout,
        "application_name": "hoopgw catalog",
        "sslmode": settings.tls,
        # As the session leg: the target may make the gateway prove the
        # password only in the ways the connection allows.
        "require_auth": ",".join(settings.require_auth),
    }
    if password is not None:
        parameters["password"] = password
    if settings.tls == "verify-full":
        parameters["sslrootcert"] = str(settings.ca_file) if settings.ca_file is not None else "system"
    return parameters


class Catalog:
    """Catalog lookups for one target (module docstring)."""

    def __init__(
        self,
        settings: PostgresSettings,
        password: str | None,
        *,
        reactor: Any,
        ttl: float = 60.0,
        connect: Callable[[dict[str, Any]], Deferred] | None = None,
    ) -> None:
        self.parameters = connection_parameters(settings, password)
        self.reactor = reactor
        self.ttl = ttl
        self._connect = connect or self._txpostgres
        self._connection: Any = None  # a connected txpostgres Connection
        self._waiting: list[Deferred] | None = None  # lookups waiting for it
        self._functions: dict[int, tuple[float, str | None]] = {}

    def _txpostgres(self, parameters: dict[str, Any]) -> Deferred:
        from txpostgres import txpostgres

        return txpostgres.Connection(reactor=self.reactor).connect(**parameters)

    def _connected(self) -> Deferred:
        if self._connection is not None:
            return succeed(self._connection)
        mine: Deferred = Deferred()  # each lookup its own Deferred
        if self._waiting is None:
            self._waiting = []
            self._connect(self.parameters).addCallbacks(self._up, self._down)
        self._waiting.append(mine)
        return mine

    def _up(self, connection: Any) -> None:
        self._connection = connection
        waiting, self._waiting = self._waiting or [], None
        for d in waiting:
            d.callback(connection)

    def _down(self, failure: Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        for d in waiting:
            d.errback(failure)

    def function(self, oid: int) -> Deferred:
        """
        The schema-qualified name of function C{oid} (C{"pg_catalog.lo_unlink"}),
        or C{None} if there is none or the lookup failed.
        """
        now = self.reactor.seconds()
        cached = self._functions.get(oid)
        if cached is not None and cached[0] > now:
            return succeed(cached[1])
        d = self._connected()
        d.addCallback(lambda connection: connection.runQuery(_FUNCTION, (oid,)))

        def found(rows: list[tuple[str, str]]) -> str | None:
            name = f"{rows[0][0]}.{rows[0][1]}" if rows else None
            if len(self._functions) >= _CACHE_MAX:
                self._functions.clear()
            self._functions[oid] = (now + self.ttl, name)
            return name

        def failed(failure: Failure) -> None:
            log.warn(
                "catalog lookup of function {oid} on {host}:{port} failed: {error}",
                oid=oid,
                host=self.parameters["host"],
                port=self.parameters["port"],
                error=failure.getErrorMessage(),
            )
            self.close()  # the next lookup connects again
            return None

        d.addCallbacks(found, failed)
        return d

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # already closed by the server
                pass
