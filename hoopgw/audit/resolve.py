"""
C{hoopgw audit resolve-tail}: an operator's decision about the records
after the last signed checkpoint, when the gateway refused to start because
of them (docs/audit-format.md, "Start-up refusals").

  - C{set-aside}: move every byte after the last checkpoint's records into
    C{<audit dir>/set-aside/} and cut the records file there.  The only
    choice after a clean stop's signed end (those records were not written
    by hoopgw).
  - C{adopt}: keep the records (they must chain correctly), moving only a
    torn last line aside; the next start adopts them as after a crash, in a
    C{log.recovered} record that names the range and this decision.  Not
    possible after a signed end.

Either way the decision goes into C{tail-resolution.json}; the next start
checks it against the files (the decision file is not authenticated: the
set-aside file must exist with the size, SHA-256 and lines it names, at the
last checkpoint), records only the facts it checked (C{log.tail.set_aside},
or in C{log.recovered}), signs them with a checkpoint, and removes the
file.  The command refuses when checkpoint sizes decrease in the notes file
(a replayed older note must never decide where records are cut).  It takes
the records file's lock, so it cannot run while the gateway does.
"""

from __future__ import annotations

import datetime
import json
import os
from hashlib import sha256
from pathlib import Path
from typing import IO, Any

from hoopgw.audit import events
from hoopgw.keys import create_private_file
from hoopgw.audit.checkpoint import CheckpointError, Verifier
from hoopgw.audit.log import (
    CHECKPOINTS_FILE,
    CLOSES_FIELD,
    GENESIS_PREV,
    RECORDS_FILE,
    RESOLUTION_FILE,
    SET_ASIDE_DIR,
    AuditStateError,
    _chain_problem,
    _check_line,
    lock_records,
)
from hoopgw.audit.search import format_time

__all__ = ["ResolveError", "resolve_tail"]

ACTIONS = ("adopt", "set-aside")


class ResolveError(Exception):
    """Nothing can be resolved as asked; the message says why and what to do."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path: Path, data: bytes) -> None:
    if not create_private_file(path, data):
        raise FileExistsError(f"{path} already exists")
    _fsync_dir(path.parent)


def resolve_tail(directory: Path | str, vkey_text: str, action: str, *, now: datetime.datetime | None = None) -> str:
    """
    Resolve the unsigned tail of the log in C{directory} (see the module
    docstring); return a description of what was done.

    @raise ResolveError: there is nothing to resolve, or not this way.
    @raise AuditStateError: the log is in use (the gateway runs).
    """
    from hoopgw.audit.verify import read_checkpoints

    if action not in ACTIONS:
        raise ValueError(f"action {action!r}: expected one of {', '.join(ACTIONS)}")
    directory = Path(directory)
    records = directory / RECORDS_FILE
    cp_path = directory / CHECKPOINTS_FILE
    try:
        verifier = Verifier.from_vkey(vkey_text)
    except CheckpointError as e:
        raise ResolveError(str(e)) from None
    try:
        fd = os.open(records, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ResolveError(f"{records} does not exist: nothing to resolve") from None
    try:
        lock_records(fd, records)
        try:
            notes = cp_path.read_bytes()
        except FileNotFoundError:
            notes = b""
        try:
            checkpoints = [cp for _, _, cp in read_checkpoints(notes, verifier, str(cp_path))]
        except CheckpointError as e:
            raise ResolveError(f"{e}: restore {cp_path} from a backup or a witness's copy first") from None
        # The last note decides where the records are cut: it must be the
        # newest (a replayed older note at the end would cut signed records).
        for index, (before, after) in enumerate(zip(checkpoints, checkpoints[1:]), 2):
            if after.size < before.size:
                raise ResolveError(
                    f"{cp_path}: checkpoint {index} (size {after.size}) is smaller than the one "
                    f"before it (size {before.size}): an older note was appended again (replayed) "
                    f"or the notes were reordered, so the last note is not the newest; refusing to "
                    f"cut anything by it. Restore {cp_path} from a backup or a witness's copy first"
                )
            if after.origin != before.origin:
                raise ResolveError(
                    f"{cp_path}: checkpoint {index} has origin {after.origin!r}, but the one before "
                    f"it {before.origin!r}: notes of another log; restore {cp_path} first"
                )
        if not checkpoints:
            raise ResolveError(
                f"{cp_path} has no checkpoint, so there is no signed part of the log to keep: "
                f"restore it from a backup or a witness's copy, or move {directory} aside"
            )
        last = checkpoints[-1]
        size = last.size
        log_id = last.origin.rsplit("/", 1)[-1]
        with open(fd, "rb", closefd=False) as f:
            offset, last_line = _offset_of(f, size, records)
            f.seek(offset)
            tail = f.read()
        closed = False
        if size:
            closed = json.loads(last_line).get(CLOSES_FIELD) is True
        cut = tail.rfind(b"\n") + 1
        complete, torn = tail[:cut], tail[cut:]
        lines = complete.split(b"\n")[:-1] if complete else []
        count = len(lines)
        if not tail:
            raise ResolveError(f"{records}: nothing after the last checkpoint (size {size}): nothing to resolve")
        if action == "adopt":
            if closed:
                raise ResolveError(
                    f"{records}: the last checkpoint (size {size}) is the log's signed end (seq "
                    f"{size - 1} closed it at a clean stop): records after it were not written by "
                    f"hoopgw and cannot be adopted; use --set-aside"
                )
            prev = sha256(last_line).hexdigest() if size else GENESIS_PREV
            position = offset
            for seq, line in enumerate(lines, size):
                where = f"{records}: record at byte {position} (seq {seq})"
                try:
                    record = _check_line(line, where)
                except AuditStateError as e:
                    raise ResolveError(f"{str(e).removesuffix('; refusing to start')}: use --set-aside") from None
                problem = _chain_problem(record, log_id, seq, prev)
                if problem:
                    raise ResolveError(f"{where}: {problem}: it cannot be adopted; use --set-aside")
                prev = sha256(line).hexdigest()
                position += len(line) + 1
        moment = now or datetime.datetime.now(datetime.timezone.utc)
        stamp = moment.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        moved = tail if action == "set-aside" else torn
        entry: dict[str, Any] = {
            "action": action,
            "checkpoint": size,
            "first_seq": size,
            "count": count,
            "torn_bytes": len(torn),
            "closed_before": closed,
            "resolved_at": format_time(moment),
        }
        if action == "adopt":
            entry["sha256"] = sha256(complete).hexdigest()
            entry["reason"] = (
                "an operator adopted the records after the last signed checkpoint "
                "(hoopgw audit resolve-tail --adopt)"
            )
        else:
            entry["sha256"] = sha256(tail).hexdigest()
            entry["bytes"] = len(tail)
            entry["reason"] = (
                "records after the log's signed end (appended after a clean stop: not written by hoopgw)"
                if closed
                else "records after the last signed checkpoint, set aside by an operator"
            ) + " (hoopgw audit resolve-tail --set-aside)"
        target = None
        if moved:
            folder = directory / SET_ASIDE_DIR
            folder.mkdir(mode=0o700, exist_ok=True)
            span = f"{size}-{size + count - 1}" if action == "set-aside" and count else f"{size + count}-torn"
            target = folder / f"records-{span}-{stamp}.jsonl"
            _write_new(target, moved)
            entry["file"] = str(target.relative_to(directory))
            entry["file_sha256"] = sha256(moved).hexdigest()
        marker = directory / RESOLUTION_FILE
        try:
            existing = json.loads(marker.read_bytes())
            entries = existing["entries"] if isinstance(existing, dict) else None
            if not isinstance(entries, list):
                raise ValueError("no entries")
        except FileNotFoundError:
            entries = []
        except (ValueError, KeyError) as e:
            raise ResolveError(f"{marker} is damaged ({e}); move it aside first") from None
        entries.append(entry)
        tmp = marker.with_name(marker.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        _write_new(tmp, json.dumps({"v": 1, "entries": entries}, sort_keys=True, indent=1).encode() + b"\n")
        os.replace(tmp, marker)
        _fsync_dir(directory)
        if moved:
            os.ftruncate(fd, offset + (cut if action == "adopt" else 0))
            os.fsync(fd)
    finally:
        os.close(fd)
    what = f"seq {size}..{size + count - 1} ({count} records)" if count else "no whole record"
    if action == "set-aside":
        return (
            f"set aside {what}{f' and {len(torn)} torn bytes' if torn else ''} after checkpoint size "
            f"{size} into {target}; the next start records it ({events.LOG_TAIL_SET_ASIDE})"
        )
    return (
        f"adopting {what} after checkpoint size {size}"
        + (f"; {len(torn)} torn bytes moved to {target}" if torn else "")
        + "; the next start records them as log.recovered (written but not signed at the time)"
    )


def _offset_of(f: IO[bytes], size: int, records: Path) -> tuple[int, bytes]:
    """(byte offset where record C{size} starts, the line of record C{size - 1})."""
    if size == 0:
        return 0, b""
    seen = 0
    offset = 0
    pending = b""
    f.seek(0)
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        data = pending + chunk
        start = 0
        while True:
            i = data.find(b"\n", start)
            if i < 0:
                break
            seen += 1
            if seen == size:
                return offset + i + 1, data[start:i]
            start = i + 1
        offset += start
        pending = data[start:]
    raise ResolveError(
        f"{records} holds {seen} records, fewer than the last checkpoint's {size}: records were "
        f"removed; restore the file from a backup"
    )
