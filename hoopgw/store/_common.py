"""
What every store implementation shares: the session row's shape, its
normalisation, and the store's errors.

Normalising here (not in each store) is what makes L{MemoryStore} and
L{SQLiteStore} (and a later PostgreSQL store) return the same rows for the
same calls.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping

from attrs import frozen

from hoopgw.errors import HoopgwError

#: Column order of the C{sessions} table, as rows are returned.
SESSION_COLUMNS: tuple[str, ...] = (
    "id",
    "started",
    "ended",
    "subject",
    "issuer",
    "groups",
    "connection",
    "kind",
    "source",
    "client",
    "status",
    "recording_sha256",
    "bytes_in",
    "bytes_out",
    "counts",
)

_REQUIRED = ("id", "started", "subject", "issuer", "connection", "kind")

#: Status of a session that has not ended.
ACTIVE = "active"


class StoreError(HoopgwError):
    """The store cannot do what was asked; the message is safe to log."""


class UnknownSession(StoreError, LookupError):
    """No session has the given id."""


class DuplicateSession(StoreError):
    """A session with this id was already stored."""


def format_time(value: Any, key: str) -> str:
    """
    Normalise a time to UTC RFC 3339 with microseconds, the audit trail's
    form, so that times sort as text in every SQL dialect.

    @param value: an RFC 3339 string (kept as given), a Unix time in seconds,
        or a timezone-aware L{datetime}.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{key}: expected a time, got {value!r}")
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, timezone.utc)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{key}: a naive datetime is ambiguous; give a timezone")
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raise ValueError(f"{key}: expected a time, got {type(value).__name__}")


@frozen
class SessionFilter:
    """
    Which sessions a listing shows: C{active} C{True} (not ended) or
    C{False} (ended); C{session} (its id), C{subject} and C{connection}
    exactly; sessions that started at or after C{since} and before C{until}
    (RFC 3339 UTC text, as stored).
    """

    active: bool | None = None
    session: str | None = None
    subject: str | None = None
    connection: str | None = None
    since: str | None = None
    until: str | None = None

    def matches(self, row: Mapping[str, Any]) -> bool:
        return (
            (self.active is None or (row["ended"] is None) is self.active)
            and (self.session is None or row["id"] == self.session)
            and (self.subject is None or row["subject"] == self.subject)
            and (self.connection is None or row["connection"] == self.connection)
            and (self.since is None or row["started"] >= self.since)
            and (self.until is None or row["started"] < self.until)
        )


def parse_time(text: str) -> float:
    """The Unix time of a time L{format_time} wrote."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def new_session_row(session: Mapping[str, Any]) -> dict[str, Any]:
    """
    Validate a session mapping and return the row to store, with every
    column present and decoded values (C{groups} a list, C{client} a dict).

    Keys that are not columns are ignored, so a caller may pass a richer
    session mapping.

    @raise ValueError: a required key is missing or a value has the wrong type.
    """
    missing = [key for key in _REQUIRED if session.get(key) is None]
    if missing:
        raise ValueError(f"session is missing {', '.join(missing)}")
    for key in ("id", "subject", "issuer", "connection", "kind"):
        if not isinstance(session[key], str):
            raise ValueError(f"{key}: expected a string")
    groups = session.get("groups") or ()
    if isinstance(groups, str):
        # A lone string would otherwise become a list of its characters.
        raise ValueError("groups: expected a list of strings, got a string")
    client = session.get("client") or {}
    if not isinstance(client, Mapping):
        raise ValueError("client: expected a mapping")
    ended = session.get("ended")
    recording = session.get("recording_sha256")
    return {
        "id": session["id"],
        "started": format_time(session["started"], "started"),
        "ended": None if ended is None else format_time(ended, "ended"),
        "subject": session["subject"],
        "issuer": session["issuer"],
        "groups": [str(group) for group in groups],
        "connection": session["connection"],
        "kind": session["kind"],
        "source": str(session.get("source") or ""),
        # Round-trip through JSON now so that a value the SQL store could not
        # encode fails the same way in every store.
        "client": json.loads(json.dumps(dict(client))),
        "status": _text(session.get("status") or ACTIVE),
        "recording_sha256": None if recording is None else str(recording),
        "bytes_in": int(session.get("bytes_in") or 0),
        "bytes_out": int(session.get("bytes_out") or 0),
        "counts": {},
    }


def _text(value: Any) -> str:
    # A str-valued Enum (hoopgw.model.Status) prints as "Status.x" under
    # str() on Python 3.11; its value is what belongs in a row.
    return str(getattr(value, "value", value))


def sort_key(row: Mapping[str, Any]) -> tuple[str, str]:
    """Newest first is descending on this key (ties broken by id)."""
    return (row["started"], row["id"])


#: Column order of the C{grants} table (as for reviews: C{document} is the
#: whole grant, L{hoopgw.grants.Grant.to_record}).
GRANT_COLUMNS: tuple[str, ...] = ("id", "created", "state", "requester", "connection", "document")


def grant_row(grant: Mapping[str, Any]) -> dict[str, Any]:
    """
    The row to store for a grant record (its C{id}, C{created}, C{state},
    C{requester.subject}, C{connection} required).

    @raise ValueError: a required key is missing or has the wrong type.
    """
    return _document_row("grant", grant, GRANT_COLUMNS)


def _document_row(what: str, record: Mapping[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    for key in columns:
        if key not in ("requester", "document") and not isinstance(record.get(key), str):
            raise ValueError(f"{what} {key}: expected a string")
    requester = record.get("requester")
    if not isinstance(requester, Mapping) or not isinstance(requester.get("subject"), str):
        raise ValueError(f"{what} requester: expected a mapping with a subject")
    row = {key: record[key] for key in columns if key not in ("requester", "document")}
    row["requester"] = requester["subject"]
    row["document"] = json.loads(json.dumps(dict(record)))
    return row


#: Column order of the C{reviews} table.  C{document} is the whole review
#: (L{hoopgw.reviews.Review.to_record}) as JSON; the other columns are what
#: queries filter and sort on.
REVIEW_COLUMNS: tuple[str, ...] = ("id", "created", "state", "session", "requester", "connection", "document")


def review_row(review: Mapping[str, Any]) -> dict[str, Any]:
    """
    The row to store for a review record (its C{id}, C{created}, C{state},
    C{session}, C{requester.subject}, C{connection} required); the whole
    record is kept in C{document}.

    @raise ValueError: a required key is missing or has the wrong type.
    """
    return _document_row("review", review, REVIEW_COLUMNS)
