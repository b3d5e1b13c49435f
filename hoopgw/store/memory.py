"""
An in-memory L{IStore} for tests and library users: the same validation,
rows and errors as L{hoopgw.store.sqlite.SQLiteStore}, nothing persisted.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
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
    sort_key,
)


@implementer(IStore)
@define
class MemoryStore:
    """
    L{IStore} in a dict.  Every method's Deferred has already fired.

    @ivar sessions: stored rows by id (exposed for tests to inspect).
    """

    sessions: dict[str, dict[str, Any]] = field(factory=dict)
    reviews: dict[str, dict[str, Any]] = field(factory=dict)
    grants: dict[str, dict[str, Any]] = field(factory=dict)
    _closed: bool = False

    def whenReady(self) -> Deferred["MemoryStore"]:
        return succeed(self)

    def session_started(self, session: Any) -> Deferred[None]:
        if self._closed:
            return fail(StoreError("the store is closed"))
        try:
            row = new_session_row(session)
        except ValueError:
            return fail()
        if row["id"] in self.sessions:
            return fail(DuplicateSession(f"session {row['id']!r} is already stored"))
        self.sessions[row["id"]] = row
        return succeed(None)

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
        if self._closed:
            return fail(StoreError("the store is closed"))
        try:
            ended_text = format_time(ended, "ended")
        except ValueError:
            return fail()
        row = self.sessions.get(session_id)
        if row is None:
            return fail(UnknownSession(f"no session {session_id!r}"))
        row.update(
            ended=ended_text,
            status=str(getattr(status, "value", status)),
            recording_sha256=recording_sha256,
        )
        if bytes_in is not None:
            row["bytes_in"] = int(bytes_in)
        if bytes_out is not None:
            row["bytes_out"] = int(bytes_out)
        if counts is not None:
            row["counts"] = {str(k): int(v) for k, v in counts.items()}
        return succeed(None)

    def list_sessions(
        self, limit: int = 100, active: bool | None = None, where: SessionFilter | None = None
    ) -> Deferred[list[dict[str, Any]]]:
        if self._closed:
            return fail(StoreError("the store is closed"))
        try:
            _sql.check_limit(limit)
        except ValueError:
            return fail()
        where = where if where is not None else SessionFilter(active=active)
        rows = [row for row in self.sessions.values() if where.matches(row)]
        rows.sort(key=sort_key, reverse=True)
        # Copies, so that a caller cannot change what the store holds.
        return succeed(copy.deepcopy(rows[:limit]))

    def end_interrupted(self, ended: Any) -> Deferred[list[str]]:
        if self._closed:
            return fail(StoreError("the store is closed"))
        try:
            ended_text = format_time(ended, "ended")
        except ValueError:
            return fail()
        open_rows = sorted((r for r in self.sessions.values() if r["ended"] is None), key=sort_key)
        for row in open_rows:
            row.update(ended=ended_text, status=_sql.INTERRUPTED)
        return succeed([row["id"] for row in open_rows])

    def review_saved(self, review: Any) -> Deferred[None]:
        return self._save(self.reviews, review_row, review)

    def list_reviews(self, limit: int = 100, state: str | None = None) -> Deferred[list[dict[str, Any]]]:
        return self._list(self.reviews, limit, state)

    def get_review(self, review_id: str) -> Deferred[dict[str, Any] | None]:
        return self._get(self.reviews, review_id)

    def grant_saved(self, grant: Any) -> Deferred[None]:
        return self._save(self.grants, grant_row, grant)

    def list_grants(self, limit: int = 100, state: str | None = None) -> Deferred[list[dict[str, Any]]]:
        return self._list(self.grants, limit, state)

    def get_grant(self, grant_id: str) -> Deferred[dict[str, Any] | None]:
        return self._get(self.grants, grant_id)

    def _save(self, table: dict[str, dict[str, Any]], row: Any, record: Any) -> Deferred[None]:
        if self._closed:
            return fail(StoreError("the store is closed"))
        try:
            stored = row(record)
        except ValueError:
            return fail()
        table[stored["id"]] = stored
        return succeed(None)

    def _list(self, table: dict[str, dict[str, Any]], limit: int, state: str | None) -> Deferred[list[dict[str, Any]]]:
        if self._closed:
            return fail(StoreError("the store is closed"))
        try:
            limit = _sql.check_limit(limit)
        except ValueError:
            return fail()
        rows = sorted(
            (r for r in table.values() if state is None or r["state"] == state),
            key=lambda r: (r["created"], r["id"]), reverse=True,
        )
        return succeed([copy.deepcopy(r["document"]) for r in rows[:limit]])

    def _get(self, table: dict[str, dict[str, Any]], document_id: str) -> Deferred[dict[str, Any] | None]:
        if self._closed:
            return fail(StoreError("the store is closed"))
        row = table.get(document_id)
        return succeed(None if row is None else copy.deepcopy(row["document"]))

    def close(self) -> Deferred[None]:
        self._closed = True
        return succeed(None)
