"""
The store's SQL, written once for every SQL store.

Statements use standard SQL with named C{:name} parameters and quoted
identifiers.  Everything that differs between SQLite and PostgreSQL lives in
a L{Dialect}: how parameters are spelled, where the schema version is kept,
and how a unique-key violation is recognised.  Building statements is pure
(text and parameters out), so a store that executes them in a thread
(L{hoopgw.store.sqlite}) and one that executes them asynchronously
(txpostgres) share all of it.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any, Callable, Mapping, Sequence

from attrs import frozen

from hoopgw.store._common import GRANT_COLUMNS, REVIEW_COLUMNS, SESSION_COLUMNS, SessionFilter, StoreError

# Not preceded by a colon or word character: leaves PostgreSQL casts
# ("x::text") alone.
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


def quote(identifier: str) -> str:
    """Quote an identifier (C{groups} is a keyword in both dialects)."""
    return '"' + identifier.replace('"', '""') + '"'


@frozen
class Dialect:
    """
    The differences between SQL databases, in one place.

    @ivar name: C{"sqlite"} or C{"postgresql"}.
    @ivar parameter: turns a parameter name into its placeholder.
    @ivar read_version: statement returning the schema version as one row.
    @ivar write_version: turns a version into the statement that records it.
    @ivar prelude: statements each migration transaction starts with.
    @ivar is_unique_violation: recognises the driver's unique-key error.
    """

    name: str
    parameter: Callable[[str], str]
    read_version: str
    write_version: Callable[[int], Sequence[str]]
    prelude: tuple[str, ...]
    is_unique_violation: Callable[[BaseException], bool]

    def sql(self, text: str) -> str:
        """Render neutral SQL (C{:name} parameters) for this dialect."""
        return _PARAMETER.sub(lambda match: self.parameter(match.group(1)), text)


def _sqlite_unique(error: BaseException) -> bool:
    return isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error)


SQLITE = Dialect(
    name="sqlite",
    parameter=lambda name: ":" + name,
    # The version lives in the database header, so it changes atomically
    # with the migration's transaction and needs no table of its own.
    read_version="PRAGMA user_version",
    write_version=lambda version: (f"PRAGMA user_version = {int(version)}",),
    # Take the write lock up front: Python's sqlite3 would otherwise run
    # DDL outside any transaction and a half-applied migration could remain.
    prelude=("BEGIN IMMEDIATE",),
    is_unique_violation=_sqlite_unique,
)


def _postgres_unique(error: BaseException) -> bool:
    return getattr(error, "pgcode", None) == "23505"


#: For a txpostgres store (psycopg2's pyformat parameters).
POSTGRESQL = Dialect(
    name="postgresql",
    parameter=lambda name: f"%({name})s",
    read_version="SELECT coalesce(max(version), 0) FROM hoopgw_schema",
    write_version=lambda version: (
        f"INSERT INTO hoopgw_schema (version) VALUES ({int(version)})",
    ),
    # Serialise migrations of several gateway processes sharing one database.
    prelude=(
        "CREATE TABLE IF NOT EXISTS hoopgw_schema (version INTEGER PRIMARY KEY)",
        "LOCK TABLE hoopgw_schema IN EXCLUSIVE MODE",
    ),
    is_unique_violation=_postgres_unique,
)


#: Migration N (1-based) is MIGRATIONS[N - 1]; append, never edit.  Types
#: are those SQLite and PostgreSQL both understand; times are UTC RFC 3339
#: text (sorts as text), JSON values are text.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE sessions (
            "id" TEXT PRIMARY KEY,
            "started" TEXT NOT NULL,
            "ended" TEXT,
            "subject" TEXT NOT NULL,
            "issuer" TEXT NOT NULL,
            "groups" TEXT NOT NULL,
            "connection" TEXT NOT NULL,
            "kind" TEXT NOT NULL,
            "source" TEXT NOT NULL,
            "client" TEXT NOT NULL,
            "status" TEXT NOT NULL,
            "recording_sha256" TEXT,
            "bytes_in" BIGINT NOT NULL DEFAULT 0,
            "bytes_out" BIGINT NOT NULL DEFAULT 0
        )""",
        'CREATE INDEX sessions_started ON sessions ("started")',
        'CREATE INDEX sessions_subject ON sessions ("subject")',
    ),
    (
        """CREATE TABLE reviews (
            "id" TEXT PRIMARY KEY,
            "created" TEXT NOT NULL,
            "state" TEXT NOT NULL,
            "session" TEXT NOT NULL,
            "requester" TEXT NOT NULL,
            "connection" TEXT NOT NULL,
            "document" TEXT NOT NULL
        )""",
        'CREATE INDEX reviews_state ON reviews ("state", "created")',
    ),
    (
        """CREATE TABLE grants (
            "id" TEXT PRIMARY KEY,
            "created" TEXT NOT NULL,
            "state" TEXT NOT NULL,
            "requester" TEXT NOT NULL,
            "connection" TEXT NOT NULL,
            "document" TEXT NOT NULL
        )""",
        'CREATE INDEX grants_state ON grants ("state", "created")',
    ),
    (
        # Outcome counts per session ({"succeeded": n, "blocked": n, ..., "reviewed": n}), set at its end.
        """ALTER TABLE sessions ADD COLUMN "counts" TEXT NOT NULL DEFAULT '{}'""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

_JSON_COLUMNS = ("groups", "client", "counts")
_COLUMN_LIST = ", ".join(quote(column) for column in SESSION_COLUMNS)

Statement = tuple[str, Mapping[str, Any]]


def pending_migrations(current: int) -> list[tuple[int, tuple[str, ...]]]:
    """
    The migrations a database at schema version C{current} still needs.

    @raise StoreError: the database was written by a newer hoopgw.
    """
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"the store's schema version is {current}, newer than this "
            f"hoopgw understands ({SCHEMA_VERSION}); upgrade hoopgw"
        )
    return [(version, MIGRATIONS[version - 1]) for version in range(current + 1, SCHEMA_VERSION + 1)]


def insert_session(row: Mapping[str, Any]) -> Statement:
    """An INSERT for a row from L{hoopgw.store._common.new_session_row}."""
    params = dict(row)
    for column in _JSON_COLUMNS:
        params[column] = json.dumps(params[column], sort_keys=True, separators=(",", ":"))
    placeholders = ", ".join(":" + column for column in SESSION_COLUMNS)
    return (f"INSERT INTO sessions ({_COLUMN_LIST}) VALUES ({placeholders})", params)


def end_session(
    session_id: str,
    ended: str,
    status: str,
    recording_sha256: str | None,
    bytes_in: int | None,
    bytes_out: int | None,
    counts: Mapping[str, int] | None = None,
) -> Statement:
    """An UPDATE ending a session; byte and outcome counts are kept when C{None}."""
    sets = ['"ended" = :ended', '"status" = :status', '"recording_sha256" = :recording_sha256']
    params: dict[str, Any] = {
        "id": session_id,
        "ended": ended,
        "status": status,
        "recording_sha256": recording_sha256,
    }
    if bytes_in is not None:
        sets.append('"bytes_in" = :bytes_in')
        params["bytes_in"] = bytes_in
    if bytes_out is not None:
        sets.append('"bytes_out" = :bytes_out')
        params["bytes_out"] = bytes_out
    if counts is not None:
        sets.append('"counts" = :counts')
        params["counts"] = json.dumps({str(k): int(v) for k, v in counts.items()}, sort_keys=True)
    return (f'UPDATE sessions SET {", ".join(sets)} WHERE "id" = :id', params)


INTERRUPTED = "interrupted"


def select_active_ids() -> Statement:
    return ('SELECT "id" FROM sessions WHERE "ended" IS NULL ORDER BY "started", "id"', {})


def end_interrupted(ended: str) -> Statement:
    """Every session not ended is marked interrupted (its byte counts kept)."""
    return (
        'UPDATE sessions SET "ended" = :ended, "status" = :status WHERE "ended" IS NULL',
        {"ended": ended, "status": INTERRUPTED},
    )


def select_sessions(*, limit: int, active: bool | None = None, where: SessionFilter | None = None) -> Statement:
    """Sessions newest first, as C{where} (or just C{active}: C{True}/C{False} filters on C{ended}) says."""
    where = where if where is not None else SessionFilter(active=active)
    clauses = []
    params: dict[str, Any] = {"limit": check_limit(limit)}
    if where.active is True:
        clauses.append('"ended" IS NULL')
    elif where.active is False:
        clauses.append('"ended" IS NOT NULL')
    for column, operator, value in (
        ("id", "=", where.session),
        ("subject", "=", where.subject),
        ("connection", "=", where.connection),
        ("started", ">=", where.since),
        ("started", "<", where.until),
    ):
        if value is not None:
            name = f"{column}_{len(params)}"
            clauses.append(f"{quote(column)} {operator} :{name}")
            params[name] = value
    text = " WHERE " + " AND ".join(clauses) if clauses else ""
    return (
        f'SELECT {_COLUMN_LIST} FROM sessions{text} ORDER BY "started" DESC, "id" DESC LIMIT :limit',
        params,
    )


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit: expected a non-negative integer, got {limit!r}")
    return limit


def decode_session(values: Sequence[Any]) -> dict[str, Any]:
    """A row as selected by L{select_sessions}, as a dict of decoded values."""
    row = dict(zip(SESSION_COLUMNS, values))
    for column in _JSON_COLUMNS:
        row[column] = json.loads(row[column])
    return row


# Reviews and grants: a document per id, with the columns queries filter and sort on.
DOCUMENT_TABLES: Mapping[str, tuple[str, ...]] = {"reviews": REVIEW_COLUMNS, "grants": GRANT_COLUMNS}


def save_document(table: str, row: Mapping[str, Any]) -> Statement:
    """An INSERT of a row (L{hoopgw.store._common.review_row}, C{grant_row}), or an UPDATE of the one stored (an upsert)."""
    columns = DOCUMENT_TABLES[table]
    params = dict(row)
    params["document"] = json.dumps(params["document"], sort_keys=True, separators=(",", ":"))
    names = ", ".join(quote(column) for column in columns)
    placeholders = ", ".join(":" + column for column in columns)
    updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in columns if c != "id")
    return (
        f'INSERT INTO {table} ({names}) VALUES ({placeholders}) ON CONFLICT ("id") DO UPDATE SET {updates}',
        params,
    )


def select_documents(table: str, *, limit: int, state: str | None) -> Statement:
    """Documents newest first, of one state or all."""
    assert table in DOCUMENT_TABLES
    where = ' WHERE "state" = :state' if state is not None else ""
    return (
        f'SELECT "document" FROM {table}{where} ORDER BY "created" DESC, "id" DESC LIMIT :limit',
        {"limit": check_limit(limit), "state": state},
    )


def select_document(table: str, document_id: str) -> Statement:
    assert table in DOCUMENT_TABLES
    return (f'SELECT "document" FROM {table} WHERE "id" = :id', {"id": document_id})
