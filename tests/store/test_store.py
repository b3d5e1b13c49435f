"""
Tests for L{hoopgw.store}: the same behaviour suite against L{MemoryStore}
and L{SQLiteStore} (on a temporary file, through the real adbapi pool and
the real reactor), then what only the SQLite store and L{read_sessions} do.
"""

from __future__ import annotations

import enum
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from hoopgw.interfaces import IStore
from hoopgw.store import _sql
from hoopgw.store import (
    SESSION_COLUMNS,
    SessionFilter,
    DuplicateSession,
    MemoryStore,
    SQLiteStore,
    StoreError,
    UnknownSession,
    read_sessions,
)


def session(id: str = "s1", started: Any = "2024-05-01T12:00:00.000000Z", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": id,
        "started": started,
        "subject": "alice",
        "issuer": "https://idp.example.com",
        "groups": ["dev", "dba"],
        "connection": "appdb",
        "kind": "postgres",
        "source": "127.0.0.1:50000",
        "client": {"application_name": "psql", "user": "alice"},
    }
    base.update(extra)
    return base


class _Status(str, enum.Enum):
    closed = "closed"


class StoreBehaviourMixin:
    """
    What every L{IStore} does.  Subclasses define C{makeStore}, returning a
    ready store that the test's cleanup closes.
    """

    async def makeStore(self) -> Any:
        raise NotImplementedError

    async def test_provides(self) -> None:
        """The store provides L{IStore}."""
        store = await self.makeStore()
        self.assertTrue(verifyObject(IStore, store))

    async def test_roundTrip(self) -> None:
        """
        If a session is started, then listing returns it with every column,
        groups as a list, client as a dict, active status and zero bytes.
        """
        store = await self.makeStore()
        await store.session_started(session())
        [row] = await store.list_sessions()
        self.assertEqual(
            row,
            {
                "id": "s1",
                "started": "2024-05-01T12:00:00.000000Z",
                "ended": None,
                "subject": "alice",
                "issuer": "https://idp.example.com",
                "groups": ["dev", "dba"],
                "connection": "appdb",
                "kind": "postgres",
                "source": "127.0.0.1:50000",
                "client": {"application_name": "psql", "user": "alice"},
                "status": "active",
                "recording_sha256": None,
                "bytes_in": 0,
                "bytes_out": 0,
                "counts": {},
            },
        )
        self.assertEqual(tuple(row), SESSION_COLUMNS)

    async def test_ended(self) -> None:
        """
        If a session is ended, then its end time, status, recording digest
        and byte counts are stored, and C{active} filters on whether it ended.
        """
        store = await self.makeStore()
        await store.session_started(session("s1"))
        await store.session_started(session("s2", started="2024-05-01T12:00:01.000000Z"))
        await store.session_ended(
            "s1", "2024-05-01T12:05:00.000000Z", _Status.closed, "ab" * 32, bytes_in=10, bytes_out=20,
            counts={"actions": 3, "succeeded": 2, "blocked": 1},
        )
        [ended] = await store.list_sessions(active=False)
        self.assertEqual(
            (ended["id"], ended["ended"], ended["status"], ended["recording_sha256"], ended["bytes_in"], ended["bytes_out"]),
            ("s1", "2024-05-01T12:05:00.000000Z", "closed", "ab" * 32, 10, 20),
        )
        self.assertEqual(ended["counts"], {"actions": 3, "succeeded": 2, "blocked": 1})
        [active] = await store.list_sessions(active=True)
        self.assertEqual((active["id"], active["status"]), ("s2", "active"))

    async def test_filters(self) -> None:
        """Sessions are listed by id, subject, connection and start time (since inclusive, until exclusive)."""
        store = await self.makeStore()
        await store.session_started(session("s1", started="2024-05-01T12:00:00.000000Z"))
        await store.session_started({**session("s2", started="2024-05-01T13:00:00.000000Z"), "subject": "bob"})
        await store.session_started({**session("s3", started="2024-05-01T14:00:00.000000Z"), "connection": "other"})

        async def ids(**where: Any) -> list[str]:
            return [r["id"] for r in await store.list_sessions(where=SessionFilter(**where))]

        self.assertEqual(await ids(), ["s3", "s2", "s1"])
        self.assertEqual(await ids(subject="alice"), ["s3", "s1"])
        self.assertEqual(await ids(subject="alice", connection="appdb"), ["s1"])
        self.assertEqual(await ids(since="2024-05-01T13:00:00.000000Z"), ["s3", "s2"])
        self.assertEqual(await ids(until="2024-05-01T13:00:00.000000Z"), ["s1"])
        self.assertEqual(await ids(subject="nobody"), [])
        self.assertEqual(await ids(session="s2"), ["s2"])
        self.assertEqual(await ids(session="s2", subject="alice"), [])
        self.assertEqual(await ids(session="s9"), [])

    async def test_endInterrupted(self) -> None:
        """
        Sessions not ended are marked interrupted (their ids returned, oldest
        first, byte counts kept); ended ones are left alone; a second call
        finds none.
        """
        store = await self.makeStore()
        await store.session_started(session("s2", started="2024-05-01T12:00:02.000000Z", bytes_in=9))
        await store.session_started(session("s1", started="2024-05-01T12:00:01.000000Z"))
        await store.session_started(session("s3", started="2024-05-01T12:00:03.000000Z"))
        await store.session_ended("s3", "2024-05-01T12:05:00.000000Z", "closed", None)
        ids = await store.end_interrupted("2024-05-02T08:00:00.000000Z")
        self.assertEqual(ids, ["s1", "s2"])
        rows = {r["id"]: r for r in await store.list_sessions()}
        self.assertEqual(
            [(rows[i]["status"], rows[i]["ended"]) for i in ("s1", "s2")],
            [("interrupted", "2024-05-02T08:00:00.000000Z")] * 2,
        )
        self.assertEqual(rows["s2"]["bytes_in"], 9)
        self.assertEqual(rows["s3"]["status"], "closed")
        self.assertEqual(await store.end_interrupted("2024-05-02T09:00:00.000000Z"), [])

    async def test_endedKeepsBytes(self) -> None:
        """If a session is ended without byte counts, then the stored counts stay."""
        store = await self.makeStore()
        await store.session_started(session(bytes_in=5, bytes_out=7))
        await store.session_ended("s1", "2024-05-01T12:05:00.000000Z", "closed", None)
        [row] = await store.list_sessions()
        self.assertEqual((row["bytes_in"], row["bytes_out"], row["recording_sha256"]), (5, 7, None))

    async def test_newestFirstAndLimit(self) -> None:
        """Sessions are listed newest first, at most C{limit} of them."""
        store = await self.makeStore()
        for n in (2, 0, 3, 1):
            await store.session_started(session(f"s{n}", started=f"2024-05-01T12:00:0{n}.000000Z"))
        rows = await store.list_sessions(limit=3)
        self.assertEqual([row["id"] for row in rows], ["s3", "s2", "s1"])
        self.assertEqual(await store.list_sessions(limit=0), [])

    async def test_timesNormalised(self) -> None:
        """
        If times are given as Unix seconds or aware datetimes, then they are
        stored as UTC RFC 3339 with microseconds.
        """
        store = await self.makeStore()
        await store.session_started(session(started=1714564800.25))
        plus2 = timezone(timedelta(hours=2))
        await store.session_ended("s1", datetime(2024, 5, 1, 14, 1, tzinfo=plus2), "closed", None)
        [row] = await store.list_sessions()
        self.assertEqual(
            (row["started"], row["ended"]),
            ("2024-05-01T12:00:00.250000Z", "2024-05-01T12:01:00.000000Z"),
        )

    async def test_naiveTimeRefused(self) -> None:
        """If a time has no timezone, then the store refuses it with ValueError."""
        store = await self.makeStore()
        with self.assertRaises(ValueError):
            await store.session_started(session(started=datetime(2024, 5, 1)))
        self.assertEqual(await store.list_sessions(), [])

    async def test_missingKeys(self) -> None:
        """If a required key is missing, then the store refuses the session, naming it."""
        store = await self.makeStore()
        incomplete = session()
        del incomplete["subject"]
        with self.assertRaises(ValueError) as caught:
            await store.session_started(incomplete)
        self.assertIn("subject", str(caught.exception))

    async def test_extraKeysIgnored(self) -> None:
        """If the mapping has keys that are not columns, then they are ignored."""
        store = await self.makeStore()
        await store.session_started(session(identity={"sub": "alice"}))
        [row] = await store.list_sessions()
        self.assertNotIn("identity", row)

    async def test_duplicate(self) -> None:
        """If a session id is started twice, then the second fails with DuplicateSession."""
        store = await self.makeStore()
        await store.session_started(session())
        with self.assertRaises(DuplicateSession):
            await store.session_started(session(subject="mallory"))
        [row] = await store.list_sessions()
        self.assertEqual(row["subject"], "alice")

    async def test_unknownEnded(self) -> None:
        """If an unknown session is ended, then the call fails with UnknownSession."""
        store = await self.makeStore()
        with self.assertRaises(UnknownSession):
            await store.session_ended("nope", "2024-05-01T12:05:00.000000Z", "closed", None)

    async def test_badLimit(self) -> None:
        """If the limit is negative, then listing fails with ValueError."""
        store = await self.makeStore()
        with self.assertRaises(ValueError):
            await store.list_sessions(limit=-1)

    async def test_rowsAreCopies(self) -> None:
        """If a caller changes a listed row, then the stored session does not change."""
        store = await self.makeStore()
        await store.session_started(session())
        [row] = await store.list_sessions()
        row["groups"].append("root")
        row["client"]["x"] = 1
        [again] = await store.list_sessions()
        self.assertEqual((again["groups"], again["client"]), (["dev", "dba"], {"application_name": "psql", "user": "alice"}))

    async def test_reviews(self) -> None:
        """A review record is stored whole, updated in place, listed newest first and by state."""
        store = await self.makeStore()

        def review(review_id: str, created: str, state: str = "pending") -> dict:
            return {"id": review_id, "created": created, "state": state, "session": "s1", "connection": "db",
                    "requester": {"issuer": "i", "subject": "alice", "groups": ["dev"]},
                    "action": {"id": "s1/1", "kind": "sql.delete", "input": "DELETE FROM t"}, "approvals": []}

        await store.review_saved(review("a", "2024-05-01T12:00:00.000000Z"))
        await store.review_saved(review("b", "2024-05-01T12:01:00.000000Z"))
        await store.review_saved({**review("a", "2024-05-01T12:00:00.000000Z", "approved"),
                                  "approvals": [{"by": {"subject": "bob"}}]})
        self.assertEqual([r["id"] for r in await store.list_reviews()], ["b", "a"])
        self.assertEqual([r["id"] for r in await store.list_reviews(state="pending")], ["b"])
        stored = await store.get_review("a")
        self.assertEqual((stored["state"], stored["approvals"]), ("approved", [{"by": {"subject": "bob"}}]))
        self.assertIsNone(await store.get_review("nope"))
        with self.assertRaises(ValueError):
            await store.review_saved({"id": "c"})

    async def test_grants(self) -> None:
        """A grant record is stored whole, updated in place, listed newest first and by state."""
        store = await self.makeStore()

        def grant(grant_id: str, created: str, state: str = "pending") -> dict:
            return {"id": grant_id, "created": created, "state": state, "connection": "db", "duration_seconds": 3600,
                    "requester": {"issuer": "i", "subject": "alice", "groups": ["dev"]}, "review": "r1"}

        await store.grant_saved(grant("a", "2024-05-01T12:00:00.000000Z"))
        await store.grant_saved(grant("b", "2024-05-01T12:01:00.000000Z"))
        await store.grant_saved({**grant("a", "2024-05-01T12:00:00.000000Z", "active"), "expires": "x"})
        self.assertEqual([r["id"] for r in await store.list_grants()], ["b", "a"])
        self.assertEqual([r["id"] for r in await store.list_grants(state="active")], ["a"])
        self.assertEqual((await store.get_grant("a"))["expires"], "x")
        self.assertIsNone(await store.get_grant("nope"))
        self.assertIsNone(await store.get_review("a"))  # a table of its own
        with self.assertRaises(ValueError):
            await store.grant_saved({"id": "c", "created": "x", "state": "pending", "connection": "db"})

    async def test_closed(self) -> None:
        """If the store is closed, then every operation fails with StoreError."""
        store = await self.makeStore()
        await store.close()
        with self.assertRaises(StoreError):
            await store.session_started(session())
        with self.assertRaises(StoreError):
            await store.session_ended("s1", "2024-05-01T12:05:00.000000Z", "closed", None)
        with self.assertRaises(StoreError):
            await store.list_sessions()


class MemoryStoreTests(StoreBehaviourMixin, TestCase):
    async def makeStore(self) -> MemoryStore:
        store = MemoryStore()
        self.addCleanup(store.close)
        return await store.whenReady()


class SQLiteStoreTests(StoreBehaviourMixin, TestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp()).resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def openStore(self) -> SQLiteStore:
        store = SQLiteStore.open(self.path, reactor=reactor)
        self.addCleanup(store.close)
        return store

    async def makeStore(self) -> SQLiteStore:
        return await self.openStore().whenReady()

    def schemaVersion(self) -> int:
        with sqlite3.connect(self.path) as connection:
            return connection.execute("PRAGMA user_version").fetchone()[0]

    async def test_migratesEmptyFile(self) -> None:
        """
        If the file exists but is empty, then opening creates the schema
        (the sessions, reviews and grants tables and their indexes) in WAL mode.
        """
        self.path.touch()
        store = await self.makeStore()
        await store.close()
        self.assertEqual(self.schemaVersion(), _sql.SCHEMA_VERSION)
        with sqlite3.connect(self.path) as connection:
            names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        self.assertTrue({"sessions", "sessions_started", "sessions_subject", "reviews", "reviews_state", "grants",
                         "grants_state"} <= names)
        self.assertEqual(mode, "wal")

    async def test_reopenKeepsData(self) -> None:
        """If a store is closed and opened again, then its sessions are still there."""
        store = await self.makeStore()
        await store.session_started(session())
        await store.close()
        again = await self.makeStore()
        self.assertEqual([row["id"] for row in await again.list_sessions()], ["s1"])
        self.assertEqual(self.schemaVersion(), _sql.SCHEMA_VERSION)

    async def test_newerSchemaRefused(self) -> None:
        """
        If the file's schema is newer than this hoopgw's, then the store is
        not ready and every operation fails with a StoreError saying so.
        """
        with sqlite3.connect(self.path) as connection:
            connection.execute("PRAGMA user_version = 99")
        store = self.openStore()
        with self.assertRaises(StoreError) as caught:
            await store.whenReady()
        self.assertIn("99", str(caught.exception))
        with self.assertRaises(StoreError):
            await store.list_sessions()
        self.flushLoggedErrors(StoreError)

    async def test_notADatabase(self) -> None:
        """If the file is not an SQLite database, then the store is not ready: StoreError."""
        self.path.write_bytes(b"this is not a database" * 100)
        with self.assertRaises(StoreError) as caught:
            await self.openStore().whenReady()
        self.assertIn("not a database", str(caught.exception))
        self.flushLoggedErrors(StoreError)

    async def test_operationsWaitForMigration(self) -> None:
        """
        If operations are issued right after opening, then they run after the
        migration; a later whenReady fires at once.
        """
        store = self.openStore()
        started = store.session_started(session())
        listed = store.list_sessions()
        await started
        self.assertEqual([row["id"] for row in await listed], ["s1"])
        self.assertIs(await store.whenReady(), store)

    async def test_closeWaitsForWrites(self) -> None:
        """If the store is closed with a write in flight, then the write completes first."""
        store = self.openStore()
        written = store.session_started(session())
        await store.close()
        await written
        self.assertEqual([row["id"] for row in read_sessions(self.path)], ["s1"])

    async def test_readWhileOpen(self) -> None:
        """
        If the gateway's pool has the store open, then read_sessions (another
        connection, read-only) sees every committed session, and the pool can
        still write after it.
        """
        store = await self.makeStore()
        await store.session_started(session("s1"))
        self.assertEqual([row["id"] for row in read_sessions(self.path)], ["s1"])
        await store.session_started(session("s2", started="2024-05-01T12:00:01.000000Z"))
        await store.session_ended("s1", "2024-05-01T12:05:00.000000Z", "closed", None)
        self.assertEqual([row["id"] for row in read_sessions(self.path, active=True)], ["s2"])
        self.assertEqual([row["id"] for row in read_sessions(self.path, active=False)], ["s1"])
        self.assertEqual(read_sessions(self.path), await store.list_sessions())

    async def test_readAfterClose(self) -> None:
        """If no gateway has the store open, then read_sessions still reads it."""
        store = await self.makeStore()
        await store.session_started(session())
        await store.close()
        self.assertEqual(len(read_sessions(self.path, limit=10)), 1)

    def test_readMissing(self) -> None:
        """If there is no store file, then read_sessions fails with StoreError and creates none."""
        with self.assertRaises(StoreError):
            read_sessions(self.path)
        self.assertFalse(self.path.exists())

    def test_readUnmigrated(self) -> None:
        """If the file has no schema yet, then read_sessions returns no sessions and leaves it so."""
        self.path.touch()
        self.assertEqual(read_sessions(self.path), [])
        self.assertEqual(self.schemaVersion(), 0)

    async def test_failedMigrationRollsBack(self) -> None:
        """
        If a migration fails part-way, then none of it remains: the schema
        version and the tables are as before it (DDL is transactional).
        """
        store = await self.makeStore()
        await store.close()
        broken = (
            "CREATE TABLE later_feature (id TEXT PRIMARY KEY)",
            "CREATE TABLE nonsense (",
        )
        self.patch(_sql, "MIGRATIONS", _sql.MIGRATIONS + (broken,))
        self.patch(_sql, "SCHEMA_VERSION", len(_sql.MIGRATIONS))
        with self.assertRaises(StoreError):
            await self.openStore().whenReady()
        self.flushLoggedErrors(StoreError)
        self.assertEqual(self.schemaVersion(), len(_sql.MIGRATIONS) - 1)
        with sqlite3.connect(self.path) as connection:
            names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        self.assertNotIn("later_feature", names)
