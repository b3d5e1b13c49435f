"""
The embedded store: one SQLite file in the data directory.

All SQLite work runs in the single thread of an L{adbapi.ConnectionPool}
(one connection, so writes are serialised and never block the reactor).
The database is in WAL mode so that the admin CLI can read it
(L{read_sessions}) while the gateway writes.
"""

from __future__ import annotations

import json
import sqlite3
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from attrs import define, field
from twisted.enterprise.adbapi import ConnectionPool, Transaction
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.interfaces import IReactorCore, IReactorThreads
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgw.interfaces import IStore
from hoopgw.store import _sql
from hoopgw.store._common import (
    DuplicateSession,
    StoreError,
    UnknownSession,
    format_time,
    new_session_row,
    SessionFilter,
    grant_row,
    review_row,
)

_T = TypeVar("_T")

_log = Logger()

#: How long a connection waits for a lock held by another process (the
#: admin CLI only reads, so this is a safety net, not a queue).
_BUSY_TIMEOUT_SECONDS = 5.0


def _configure(connection: sqlite3.Connection) -> None:
    # journal_mode is persistent in the file; synchronous is per connection.
    # NORMAL is durable across process crashes in WAL mode: the audit log,
    # not this queryable copy, is the evidence that must survive power loss.
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")


def _migrate(transaction: Transaction, dialect: _sql.Dialect) -> int:
    current: int
    transaction.execute(dialect.read_version)
    (current,) = transaction.fetchone()
    steps = _sql.pending_migrations(current)
    if not steps:
        return current
    for statement in dialect.prelude:
        transaction.execute(statement)
    # Read again under the write lock: another process may have migrated.
    transaction.execute(dialect.read_version)
    (current,) = transaction.fetchone()
    for version, statements in _sql.pending_migrations(current):
        for statement in statements:
            transaction.execute(statement)
        for statement in dialect.write_version(version):
            transaction.execute(statement)
    return _sql.SCHEMA_VERSION


@implementer(IStore)
@define
class SQLiteStore:
    """
    L{IStore} on an SQLite file.  Build it with L{SQLiteStore.open}.

    Operations issued before the schema migration finished wait for it (the
    pool's one thread runs interactions in order); if the migration failed,
    every operation fails with a L{StoreError} that names why.
    """

    _pool: ConnectionPool
    _dialect: _sql.Dialect = _sql.SQLITE
    _pending: set[Deferred[None]] = field(factory=set)
    _closed: bool = False
    # Written and read only in the pool's thread, after the migration ran.
    _broken: BaseException | None = None
    _ready: Deferred[int] | None = None
    _ready_waiters: list[Deferred[SQLiteStore]] = field(factory=list)
    _ready_result: Failure | None | bool = None

    @classmethod
    def open(cls, path: str | PathLike[str], *, reactor: IReactorCore) -> "SQLiteStore":
        """
        Open (creating and migrating as needed) the store at C{path}.

        Returns at once without touching the disk; the file is opened and
        migrated in the pool's thread.  L{whenReady} tells when that is done.

        @param reactor: provides L{IReactorCore} and L{IReactorThreads}.
        """
        if not IReactorThreads.providedBy(reactor):
            raise TypeError("SQLiteStore needs a reactor that provides IReactorThreads")
        pool = ConnectionPool(
            "sqlite3",
            str(path),
            check_same_thread=False,
            timeout=_BUSY_TIMEOUT_SECONDS,
            cp_min=1,
            cp_max=1,
            cp_openfun=_configure,
            cp_reactor=reactor,
            cp_noisy=False,
        )
        store = cls(pool)
        store._ready = store._run(store._migrate_in_thread)
        store._ready.addCallbacks(store._migrated, store._migration_failed)
        return store

    # -- readiness ---------------------------------------------------------

    def whenReady(self) -> Deferred["SQLiteStore"]:
        """
        @return: a new L{Deferred} firing with this store once its schema is
            current, or failing with the reason it cannot be.
        """
        d: Deferred[SQLiteStore] = Deferred()
        if self._ready_result is None:
            self._ready_waiters.append(d)
        elif isinstance(self._ready_result, Failure):
            d.errback(self._ready_result)
        else:
            d.callback(self)
        return d

    def _migrate_in_thread(self, transaction: Transaction) -> int:
        try:
            return _migrate(transaction, self._dialect)
        except StoreError as e:
            self._broken = e
            raise
        except Exception as e:
            self._broken = StoreError(f"the store's schema could not be migrated: {e}")
            raise self._broken from e

    def _migrated(self, version: int) -> None:
        _log.debug("store schema at version {version}", version=version)
        self._ready_result = True
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.callback(self)

    def _migration_failed(self, reason: Failure) -> None:
        if not reason.check(StoreError):
            # Opening failed before the migration ran (not a database,
            # no permission): callers see one error type either way.
            reason = Failure(StoreError(f"the store cannot be opened: {reason.value}"))
        _log.failure("the store cannot be used", reason)
        self._ready_result = reason
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.errback(reason)

    # -- running interactions ----------------------------------------------

    def _run(self, interaction: Callable[[Transaction], _T]) -> Deferred[_T]:
        if self._closed:
            return fail(StoreError("the store is closed"))
        # adbapi is unannotated: its Deferred fires with the interaction's result.
        d: Deferred[_T] = self._pool.runInteraction(interaction)
        # A separate Deferred per operation lets close() wait for in-flight
        # work without adding callbacks to (or swallowing errors of) the
        # caller's chain.
        done: Deferred[None] = Deferred()
        self._pending.add(done)

        def finished(result: Any) -> Any:
            self._pending.discard(done)
            done.callback(None)
            return result

        d.addBoth(finished)
        return d

    def _checked(self, transaction: Transaction) -> None:
        if self._broken is not None:
            # A fresh exception each time: re-raising one instance from many
            # operations would chain their tracebacks together.
            raise StoreError(f"the store is unusable: {self._broken}")

    # -- IStore --------------------------------------------------------------

    def session_started(self, session: Any) -> Deferred[None]:
        """
        Persist a new session.

        @param session: a mapping with the keys of
            L{hoopgw.store.SESSION_COLUMNS}; C{id}, C{started}, C{subject},
            C{issuer}, C{connection} and C{kind} are required.  Times are UTC
            RFC 3339 strings, Unix seconds or aware datetimes.
        @return: L{Deferred} firing with C{None}, or failing with
            L{ValueError} (a bad mapping) or L{DuplicateSession}.
        """
        try:
            row = new_session_row(session)
        except ValueError:
            return fail()
        sql, params = _sql.insert_session(row)
        sql = self._dialect.sql(sql)

        def insert(transaction: Transaction) -> None:
            self._checked(transaction)
            try:
                transaction.execute(sql, params)
            except Exception as e:
                if self._dialect.is_unique_violation(e):
                    raise DuplicateSession(f"session {row['id']!r} is already stored") from e
                raise

        return self._run(insert)

    def session_ended(
        self,
        session_id: str,
        ended: Any,
        status: str,
        recording_sha256: str | None,
        *,
        bytes_in: int | None = None,
        bytes_out: int | None = None,
        counts: Mapping[str, int] | None = None,
    ) -> Deferred[None]:
        """
        Mark a session ended.

        @param ended: as C{started} in L{session_started}.
        @param bytes_in: if given, replaces the stored count (likewise
            C{bytes_out}, and C{counts}: the session's actions by outcome).
        @return: L{Deferred} firing with C{None}, or failing with
            L{UnknownSession}.
        """
        try:
            statement = _sql.end_session(
                session_id,
                format_time(ended, "ended"),
                str(getattr(status, "value", status)),
                recording_sha256,
                bytes_in,
                bytes_out,
                counts,
            )
        except ValueError:
            return fail()
        sql, params = self._dialect.sql(statement[0]), statement[1]

        def update(transaction: Transaction) -> None:
            self._checked(transaction)
            transaction.execute(sql, params)
            if transaction.rowcount == 0:
                raise UnknownSession(f"no session {session_id!r}")

        return self._run(update)

    def list_sessions(
        self, limit: int = 100, active: bool | None = None, where: SessionFilter | None = None
    ) -> Deferred[list[dict[str, Any]]]:
        """
        @param active: C{True} only sessions not ended, C{False} only ended
            ones, C{None} all (or C{where}, which says more).
        @return: L{Deferred} firing with up to C{limit} session dicts, newest
            first (C{groups} a list, C{client} a dict).
        """
        try:
            statement = _sql.select_sessions(limit=limit, active=active, where=where)
        except ValueError:
            return fail()
        return self._select(statement, lambda rows: [_sql.decode_session(values) for values in rows])

    def _select(self, statement: _sql.Statement, decode: Callable[[list[Any]], _T]) -> Deferred[_T]:
        """Run a SELECT; fires with C{decode} of its rows."""
        sql, params = self._dialect.sql(statement[0]), statement[1]

        def select(transaction: Transaction) -> _T:
            self._checked(transaction)
            transaction.execute(sql, params)
            return decode(transaction.fetchall())

        return self._run(select)

    def end_interrupted(self, ended: Any) -> Deferred[list[str]]:
        """
        Mark every session not ended as C{interrupted}, in one transaction.

        @return: L{Deferred} firing with their ids, oldest first.
        """
        try:
            mark = _sql.end_interrupted(format_time(ended, "ended"))
        except ValueError:
            return fail()
        select = _sql.select_active_ids()
        dialect = self._dialect

        def update(transaction: Transaction) -> list[str]:
            self._checked(transaction)
            transaction.execute(dialect.sql(select[0]), select[1])
            ids = [row[0] for row in transaction.fetchall()]
            transaction.execute(dialect.sql(mark[0]), mark[1])
            return ids

        return self._run(update)

    def review_saved(self, review: Any) -> Deferred[None]:
        """Store a review record (L{hoopgw.reviews.Review.to_record}), new or changed."""
        return self._save_document("reviews", review_row, review)

    def list_reviews(self, limit: int = 100, state: str | None = None) -> Deferred[list[dict[str, Any]]]:
        """@return: L{Deferred} firing with up to C{limit} review records, newest first."""
        return self._list_documents("reviews", limit, state)

    def get_review(self, review_id: str) -> Deferred[dict[str, Any] | None]:
        """@return: L{Deferred} firing with the review record, or C{None}."""
        return self._get_document("reviews", review_id)

    def grant_saved(self, grant: Any) -> Deferred[None]:
        """Store a grant record (L{hoopgw.grants.Grant.to_record}), new or changed."""
        return self._save_document("grants", grant_row, grant)

    def list_grants(self, limit: int = 100, state: str | None = None) -> Deferred[list[dict[str, Any]]]:
        """@return: L{Deferred} firing with up to C{limit} grant records, newest first."""
        return self._list_documents("grants", limit, state)

    def get_grant(self, grant_id: str) -> Deferred[dict[str, Any] | None]:
        """@return: L{Deferred} firing with the grant record, or C{None}."""
        return self._get_document("grants", grant_id)

    def _save_document(self, table: str, row: Callable[[Any], dict[str, Any]], record: Any) -> Deferred[None]:
        try:
            sql, params = _sql.save_document(table, row(record))
        except ValueError:
            return fail()
        sql = self._dialect.sql(sql)

        def save(transaction: Transaction) -> None:
            self._checked(transaction)
            transaction.execute(sql, params)

        return self._run(save)

    def _list_documents(self, table: str, limit: int, state: str | None) -> Deferred[list[dict[str, Any]]]:
        try:
            statement = _sql.select_documents(table, limit=limit, state=state)
        except ValueError:
            return fail()
        return self._select(statement, lambda rows: [json.loads(row[0]) for row in rows])

    def _get_document(self, table: str, document_id: str) -> Deferred[dict[str, Any] | None]:
        return self._select(_sql.select_document(table, document_id), lambda rows: json.loads(rows[0][0]) if rows else None)

    def close(self) -> Deferred[None]:
        """
        Wait for operations in flight, then close the connection and stop
        the pool's thread.  Later operations fail with L{StoreError}.
        """
        if self._closed:
            return gatherResults(list(self._pending)).addCallback(lambda _: None)
        self._closed = True
        d = gatherResults(list(self._pending))

        def stop(_: object) -> None:
            # Joins the pool's thread; it is idle now, so this is brief.
            self._pool.close()

        return d.addCallback(stop)


def read_sessions(
    path: str | PathLike[str], *, limit: int = 100, active: bool | None = None, where: SessionFilter | None = None
) -> list[dict[str, Any]]:
    """
    Read sessions synchronously and read-only, for the admin CLI (which runs
    outside the reactor).  Safe while a gateway has the store open (WAL).

    @return: as L{SQLiteStore.list_sessions}.
    @raise StoreError: there is no store at C{path}, or its schema is not
        the one this hoopgw reads.
    """
    store = Path(path)
    if not store.is_file():
        raise StoreError(f"{store}: no store database (has the gateway run with this data_dir?)")
    sql, params = _sql.select_sessions(limit=limit, active=active, where=where)
    # mode=ro: the CLI must never create, migrate or write the file.
    connection = sqlite3.connect(
        store.resolve().as_uri() + "?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_SECONDS
    )
    try:
        (version,) = connection.execute(_sql.SQLITE.read_version).fetchone()
        if version == 0:
            return []
        _sql.pending_migrations(version)
        if version < _sql.SCHEMA_VERSION:
            raise StoreError(
                f"{store}: schema version {version} is older than {_sql.SCHEMA_VERSION}; "
                "start the gateway once to migrate it"
            )
        rows = connection.execute(_sql.SQLITE.sql(sql), params).fetchall()
    except sqlite3.Error as e:
        raise StoreError(f"{store}: {e}") from e
    finally:
        connection.close()
    return [_sql.decode_session(values) for values in rows]
