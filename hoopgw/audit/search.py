"""
Streaming search over an audit directory's records file.

Records are read line by line (constant memory) and yielded in log order.
Searching does not verify: run L{hoopgw.audit.verify.verify} for that.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from hoopgw.audit.log import RECORDS_FILE

__all__ = ["search", "format_time"]


def format_time(moment: datetime) -> str:
    """
    C{moment} in the records' time format.  A naive datetime is taken as
    UTC.  The format is fixed width, so string order is time order.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _named(value: Any, key: str) -> Any:
    # Sessions and connections may be recorded as a plain id/name or as an
    # object carrying it.
    if isinstance(value, dict):
        return value.get(key)
    return value


def search(
    directory: Path | str,
    *,
    session: str | None = None,
    subject: str | None = None,
    connection: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    event: str | None = None,
) -> Iterator[dict[str, Any]]:
    """
    Yield the records matching every given filter, in log order.

    @param session: the record's C{session} (or C{session.id}).
    @param subject: the record's C{identity.sub}.
    @param connection: the record's C{connection} (or C{connection.name}).
    @param since: records at or after this time.
    @param until: records strictly before this time.
    @param event: the record's C{event}; a trailing C{*} matches a prefix
        (C{"action.*"}).
    """
    path = Path(directory) / RECORDS_FILE
    since_text = format_time(since) if since is not None else None
    until_text = format_time(until) if until is not None else None
    # Each exact filter value must appear JSON-encoded in a matching line:
    # a substring test skips most lines without parsing them.
    needles = [
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        for value in (session, subject, connection)
        if value is not None
    ]
    prefix = event[:-1] if event is not None and event.endswith("*") else None
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            if not line.endswith(b"\n"):
                return  # a torn last line is not a record
            if needles and not all(needle in line for needle in needles):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            if event is not None:
                name = record.get("event")
                if not isinstance(name, str):
                    continue
                if prefix is not None:
                    if not name.startswith(prefix):
                        continue
                elif name != event:
                    continue
            if session is not None and _named(record.get("session"), "id") != session:
                continue
            if connection is not None and _named(record.get("connection"), "name") != connection:
                continue
            if subject is not None:
                identity = record.get("identity")
                if not isinstance(identity, dict) or identity.get("sub") != subject:
                    continue
            if since_text is not None or until_text is not None:
                moment = record.get("time")
                if not isinstance(moment, str):
                    continue
                if since_text is not None and moment < since_text:
                    continue
                if until_text is not None and moment >= until_text:
                    continue
            yield record
