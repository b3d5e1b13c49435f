"""
Replaying a session from the audit trail and its recordings (C{hoopgw
replay}), offline: it reads the audit directory and the recordings folder,
never the running gateway.

- A terminal (SSH, C{kubectl exec -it}) plays from its asciicast recording
  as stock C{asciinema play} does: each output event's data written as is,
  after its delay (divided by C{speed}, capped at C{max_idle}).
- Every session can be read as a transcript: each action with its time
  from the session's start, its input and parameters, the decision (rule,
  review and who decided), the outcome (status, rows or HTTP code, SQLSTATE,
  error, duration, masked values), in the order the gateway recorded them.
- C{--json}: the session's records as they are in the trail, in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from hoopgw.audit import events
from hoopgw.audit.search import search
from hoopgw.errors import terminal_safe
from hoopgw.recording.asciicast import read_asciicast

__all__ = ["UnknownSession", "play_asciicast", "recordings", "session_records", "transcript"]


class UnknownSession(LookupError):
    """The trail has no record of the session."""


def session_records(audit_dir: Path | str, session_id: str) -> list[dict[str, Any]]:
    """
    Every record of the session, in log order (C{session.start} first),
    and the records about reviews and grants that name it.

    @raise UnknownSession: no record names the session.
    """
    records = list(search(audit_dir, session=session_id))
    if not records:
        raise UnknownSession(f"no record of session {session_id!r} in {audit_dir}")
    return records


def recordings(records: Iterable[dict[str, Any]]) -> list[Path]:
    """The session's recordings, as its C{session.end} lists them (the first, then the others)."""
    paths: list[Path] = []
    for record in records:
        if record.get("event") != events.SESSION_END:
            continue
        end = record.get("end", {})
        if end.get("recording"):
            paths.append(Path(end["recording"]))
        paths.extend(Path(other["path"]) for other in end.get("recordings", ()) if other.get("path"))
    return paths


def play_asciicast(
    path: Path | str,
    out: IO[bytes],
    *,
    speed: float = 1.0,
    max_idle: float | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> None:
    """
    Write the recording's output to C{out} as C{asciinema play} does: the
    data of each C{"o"} event, after the time since the previous one, capped
    at C{max_idle} (or the recording's own C{idle_time_limit}) and divided
    by C{speed}.
    """
    cast = read_asciicast(path)
    limit = max_idle if max_idle is not None else cast.header.get("idle_time_limit")
    previous = 0.0
    for event in cast.events:
        delay = event.time - previous
        previous = event.time
        if event.kind != "o":
            continue
        if limit is not None:
            delay = min(delay, float(limit))
        if delay > 0 and speed > 0:
            sleep(delay / speed)
        out.write(event.data.encode("utf-8"))
        out.flush()


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _decision(decision: dict[str, Any]) -> str:
    text: str = decision.get("effect", "?")
    if decision.get("rule"):
        text += f' (rule "{decision["rule"]}")'
    if decision.get("review"):
        text += f' review {decision["review"]}'
    if decision.get("message") and decision.get("effect") != "allow":
        text += f": {decision['message']}"
    return text


def _outcome(outcome: dict[str, Any]) -> str:
    parts = [outcome.get("status", "?")]
    for key, label in (("code", "code "), ("rows", "rows "), ("bytes_out", "bytes out "), ("bytes_in", "bytes in ")):
        if outcome.get(key) not in (None, ""):
            parts.append(f"{label}{outcome[key]}")
    if outcome.get("duration_us") is not None:
        parts.append(f"{outcome['duration_us'] / 1000:.1f} ms")
    if outcome.get("masked"):
        parts.append("masked " + ", ".join(f"{name}={count}" for name, count in sorted(outcome["masked"].items())))
    if outcome.get("error"):
        parts.append(f"error: {outcome['error']}")
    return ", ".join(str(p) for p in parts)


def _who(review: dict[str, Any]) -> str:
    decision = review.get("decision") or {}
    by = (decision.get("by") or {}).get("subject")
    text = f"review {review.get('id')} {review.get('state')}"
    if by:
        text += f" by {by}"
    if decision.get("reason"):
        text += f": {decision['reason']}"
    return text


def transcript(records: list[dict[str, Any]]) -> Iterator[str]:
    """
    The session as lines of text (module docstring), each safe to print on a
    terminal: what clients sent (SQL, paths, names) may hold escape
    sequences that would rewrite the lines above.
    """
    return (terminal_safe(line) for line in _transcript(records))


def _transcript(records: list[dict[str, Any]]) -> Iterator[str]:
    start = next((r for r in records if r.get("event") == events.SESSION_START), records[0])
    origin = _seconds(start["time"])
    identity = start.get("identity", {})
    yield (
        f"session {start.get('session')}: {identity.get('sub')} ({identity.get('iss')}) on "
        f"{start.get('connection')} ({start.get('kind') or start.get('protocol')}) from {start.get('source')}, "
        f"started {start['time']}"
    )
    for record in records:
        event = record.get("event")
        at = f"+{_seconds(record['time']) - origin:9.3f}s"
        if event == events.ACTION_START:
            action = record.get("action", {})
            yield f"{at}  {action.get('kind')}  {action.get('input')}"
            details = action.get("details") or {}
            if details.get("parameters"):
                yield f"{'':12}parameters: {details['parameters']}"
            if details.get("verb"):
                what = details.get("resource") or ""
                if details.get("subresource"):
                    what += f"/{details['subresource']}"
                where = "/".join(p for p in (details.get("namespace"), details.get("name")) if p)
                yield f"{'':12}kubernetes: {details['verb']} {what} {where}".rstrip()
            if action.get("masked"):
                masked = ", ".join(f"{n}={c}" for n, c in sorted(action["masked"].items()))
                yield f"{'':12}masked in the input: {masked}"
            yield f"{'':12}decision: {_decision(record.get('decision', {}))}"
        elif event == events.ACTION_END:
            action = record.get("action", {})
            yield f"{at}  {action.get('kind')} ended: {_outcome(record.get('outcome', {}))}"
        elif event and event.startswith("review."):
            yield f"{at}  {event}: {_who(record.get('review', {}))}"
        elif event and event.startswith("grant."):
            grant = record.get("grant", {})
            yield f"{at}  {event}: grant {grant.get('id')} ({grant.get('state')}) on {grant.get('connection')}"
        elif event == events.SESSION_END:
            end = record.get("end", {})
            text = f"{at}  session ended: {end.get('status')}, {end.get('actions')} action(s), " \
                   f"{end.get('bytes_in')} bytes in, {end.get('bytes_out')} bytes out"
            if end.get("error"):
                text += f"; {end['error']}"
            yield text
            for path in recordings([record]):
                yield f"{'':12}recording: {path}"
