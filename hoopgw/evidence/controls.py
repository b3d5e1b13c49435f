"""
Evidence per NIST SP 800-53 control, built read-only from the audit trail
(one streaming pass over the records in a time range), the log's
verification, and the configuration.

The result is a plain, deterministic document (sorted keys and lists; the
only field that changes between two runs over the same range is
C{generated_at}): per control, a summary and the findings, each citing the
records it comes from by sequence number and the SHA-256 of the record's
line (what the Merkle tree commits to, as C{0x00 || line}); the trail's
extent; and a timeline of actions by outcome (for the HTML chart).

The renderers (L{hoopgw.evidence.html}, L{hoopgw.evidence.oscal}) take this
document and nothing else, so every format says the same thing.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hoopgw.audit import events
from hoopgw.audit.log import RECORDS_FILE, VKEY_FILE

__all__ = ["CONTROLS", "DEFICIENCIES", "OUTCOMES", "build_evidence", "findings_rows"]

#: The controls covered, with their titles (NIST SP 800-53 rev. 5).
CONTROLS: dict[str, str] = {
    "AC-2": "Account Management",
    "AC-3": "Access Enforcement",
    "AC-6": "Least Privilege",
    "AU-2": "Event Logging",
    "AU-3": "Content of Audit Records",
    "AU-6": "Audit Record Review, Analysis, and Reporting",
    "AU-8": "Time Stamps",
    "AU-9": "Protection of Audit Information",
    "AU-10": "Non-repudiation",
    "AU-12": "Audit Record Generation",
    "IA-2": "Identification and Authentication (Organizational Users)",
    "SC-7": "Boundary Protection",
    "SC-8": "Transmission Confidentiality and Integrity",
}

#: Controls whose findings are deficiencies (the control is not satisfied
#: over the range).  Elsewhere (AU-6, AC-3, AC-6) the findings are what the
#: control produces for review: refused and blocked requests, rejected
#: policies, are enforcement working, not failing.
DEFICIENCIES = frozenset({"AU-3", "AU-8", "AU-9", "AU-10", "SC-8"})

#: Action outcomes (hoopgw.model.Status), in the timeline's stacking order.
OUTCOMES = ("succeeded", "failed", "blocked", "expired")

# Timeline bucket widths in seconds; each divides the next, so counts kept at
# one width re-bucket exactly into any wider one.  The first width that
# gives at most _BARS buckets over the trail's span is used.
_WIDTHS = (1, 10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
_BARS = 60
# Distinct buckets kept while reading before coarsening: bounds memory on a long trail.
_BUCKETS_KEPT = 10_000

# What every record of these kinds must carry (AU-3: what, when, where, source, outcome, identity).
_COMMON = ("v", "log", "seq", "prev", "time", "event")
_REQUIRED: dict[str, tuple[str, ...]] = {
    events.SESSION_START: ("session", "connection", "source", "identity.sub", "identity.iss", "identity.method"),
    events.SESSION_END: ("session", "connection", "identity.sub", "end.status"),
    events.SESSION_REFUSED: ("connection", "source", "identity.sub", "decision.effect", "outcome.status"),
    events.ACTION_START: ("session", "connection", "identity.sub", "action.id", "action.kind", "action.input", "decision.effect"),
    events.ACTION_END: ("session", "connection", "identity.sub", "action.id", "outcome.status"),
    events.AUTH_FAILED: ("source", "reason", "method"),
}
# Refusals a reviewer reads one by one (AU-6), and the counts of those not written one by one.
_REFUSALS = frozenset(
    {events.AUTH_FAILED, events.AUTH_FAILED_SUPPRESSED, events.SESSION_REFUSED, events.REQUEST_REFUSED, events.REQUEST_REFUSED_SUPPRESSED}
)
_SAMPLES = 20
_GAPS = 5


def _get(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _cite(record: dict[str, Any], line: bytes) -> dict[str, Any]:
    return {"seq": record.get("seq"), "sha256": hashlib.sha256(line).hexdigest()}


def _records(
    audit_dir: Path, since: str | None, until: str | None, position: list[int]
) -> Iterator[tuple[dict[str, Any], bytes]]:
    with open(audit_dir / RECORDS_FILE, "rb") as f:
        for raw in f:
            position[0] += len(raw)
            if not raw.endswith(b"\n"):
                break  # a record being written (or torn by a crash): not a record yet
            line = raw[:-1]
            # Times are fixed-width RFC 3339: text order is time order, read without parsing the line.
            # (Canonical JSON sorts keys: the record's own "time" is the last one on its line.)
            at = line.rfind(b'"time":"')
            if at >= 0 and (since is not None or until is not None):
                time = line[at + 8 : at + 35].decode("ascii", "replace")
                if since is not None and time < since or until is not None and time >= until:
                    continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as e:  # (RecursionError: nested deeper than any record)
                record = e
            if not isinstance(record, dict):
                # Only an unsigned tail can hold such a line (verification
                # refuses it anywhere else): say where, rather than crash.
                start = position[0] - len(raw)
                raise ValueError(f"{audit_dir / RECORDS_FILE}: the line at byte {start} is not a record (a JSON object)")
            yield record, line


def _text_time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_evidence(
    audit_dir: Path | str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    controls: tuple[str, ...] = (),
    connection: str | None = None,
    config: Any = None,
    verify: Callable[[Path, str], Any] | None = None,
    now: datetime | None = None,
    progress: Callable[[int, int, int], object] | None = None,
) -> dict[str, Any]:
    """
    The evidence document (module docstring) over records with C{since <=
    time < until}, of C{connection} only if given (records with no
    connection, such as the gateway's own, are kept), for C{controls} (all
    by default).

    @param verify: C{verify(audit_dir, vkey_text)} returning a
        L{hoopgw.audit.verify.VerifyReport} (AU-9, AU-10); C{None} skips it.
    @param progress: called with (records read, bytes read, bytes in all)
        every 100,000 records.
    """
    audit_dir = Path(audit_dir)
    wanted = tuple(controls) or tuple(CONTROLS)
    for name in wanted:
        if name not in CONTROLS:
            raise ValueError(f"control {name!r}: expected one of {', '.join(CONTROLS)}")
    since_text, until_text = _text_time(since), _text_time(until)

    event_counts: Counter[str] = Counter()
    incomplete: list[dict[str, Any]] = []
    incomplete_count = 0
    complete_samples: list[dict[str, Any]] = []
    review_findings: list[dict[str, Any]] = []
    starts: dict[str, tuple[dict[str, Any], bytes]] = {}
    granted_sessions: dict[str, str] = {}
    identities: dict[tuple[str, str], dict[str, Any]] = {}
    methods: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    policies: list[dict[str, Any]] = []
    grants: dict[str, dict[str, Any]] = {}
    listeners: list[dict[str, Any]] = []
    backwards: list[dict[str, Any]] = []
    backwards_count = 0
    gaps: list[tuple[float, dict[str, Any]]] = []
    previous: tuple[float, str, dict[str, Any]] | None = None
    first = last = None
    outcomes: Counter[tuple[int, str]] = Counter()
    width_index = 0
    count = read = 0
    position = [0]
    total = (audit_dir / RECORDS_FILE).stat().st_size
    for record, line in _records(audit_dir, since_text, until_text, position):
        read += 1
        if progress is not None and read % 100_000 == 0:
            progress(read, position[0], total)
        if connection is not None and record.get("connection") not in (None, connection):
            continue
        count += 1
        event = record.get("event", "?")
        event_counts[event] += 1
        time = record.get("time", "")
        first = first or time
        last = time
        cite = _cite(record, line)
        # AU-3
        missing = [key for key in (*_COMMON, *_REQUIRED.get(event, ())) if _get(record, key) in (None, "")]
        if missing:
            incomplete_count += 1
            if len(incomplete) < _SAMPLES:
                incomplete.append({**cite, "event": event, "missing": missing})
        elif event in _REQUIRED and len(complete_samples) < 3:
            complete_samples.append({**cite, "event": event})
        # AU-8
        try:
            seconds = datetime.fromisoformat(time.replace("Z", "+00:00")).timestamp()
        except ValueError:
            seconds = None
        if seconds is not None and previous is not None:
            gap = seconds - previous[0]
            if gap < 0:
                backwards_count += 1
                if len(backwards) < _SAMPLES:
                    backwards.append({**cite, "time": time, "previous_time": previous[1]})
            else:
                gaps.append((gap, {"from": previous[2], "to": cite, "seconds": round(gap, 6)}))
                gaps.sort(key=lambda g: -g[0])
                del gaps[_GAPS:]
        if seconds is not None:
            previous = (seconds, time, cite)
        # AC-2, IA-2
        identity = record.get("identity")
        if isinstance(identity, dict) and identity.get("sub") is not None:
            key = (str(identity.get("iss")), str(identity.get("sub")))
            seen = identities.setdefault(key, {"issuer": key[0], "subject": key[1], "first": time, "last": time,
                                               "sessions": 0, "groups": set()})
            seen["last"] = time
            seen["groups"].update(identity.get("groups") or ())
            if event == events.SESSION_START:
                seen["sessions"] += 1
                methods[key][str(identity.get("method"))] += 1
        # AU-6
        if event == events.ACTION_START:
            starts[_get(record, "action.id")] = (record, line)
        elif event == events.ACTION_END:
            started = starts.pop(_get(record, "action.id"), None)
            status = _get(record, "outcome.status")
            if seconds is not None:
                width = _WIDTHS[width_index]
                outcomes[(int(seconds // width) * width, str(status))] += 1
                if len(outcomes) > _BUCKETS_KEPT and width_index + 1 < len(_WIDTHS):
                    width_index += 1
                    outcomes = _rebucket(outcomes, _WIDTHS[width_index])
            if status in ("blocked", "failed"):
                review_findings.append(_action_finding(status, record, started, cite))
        elif event in _REFUSALS:
            review_findings.append({
                "kind": event, "time": time, "subject": _get(record, "identity.sub"),
                "connection": record.get("connection"), "session": record.get("session"),
                "detail": record.get("reason") or _get(record, "outcome.error") or f"{record.get('suppressed', '')} suppressed",
                "records": [cite],
            })
        elif event.startswith("review.") and event != events.REVIEW_REQUESTED:
            review = record.get("review", {})
            review_findings.append({
                "kind": event, "time": time, "subject": _get(review, "requester.subject"),
                "connection": review.get("connection"), "session": record.get("session") or None,
                "detail": f"review {review.get('id')} of {_get(review, 'action.kind')} "
                          f"{_get(review, 'action.input')!r}: {review.get('state')}"
                          + (f" by {_get(review, 'decision.by.subject')}" if _get(review, "decision.by.subject") else "")
                          + (f" ({_get(review, 'decision.reason')})" if _get(review, "decision.reason") else ""),
                "records": [cite],
            })
        if event == events.GRANT_USED:
            granted_sessions[str(record.get("session"))] = str(_get(record, "grant.id"))
        if event == events.ACTION_START and record.get("session") in granted_sessions:
            review_findings.append({
                "kind": "action under a grant", "time": time, "subject": _get(record, "identity.sub"),
                "connection": record.get("connection"), "session": record.get("session"),
                "detail": f"grant {granted_sessions[record['session']]}: {_get(record, 'action.kind')} "
                          f"{_get(record, 'action.input')!r} ({_get(record, 'decision.effect')})",
                "records": [cite],
            })
        # AC-3, AC-6
        if event in (events.POLICY_LOADED, events.POLICY_REJECTED):
            policies.append({"time": time, "event": event, "reason": record.get("reason"), "path": record.get("path"),
                             "sha256": record.get("sha256"), "error": record.get("error"), "records": [cite]})
        if event.startswith("grant."):
            grant = record.get("grant", {})
            entry = grants.setdefault(str(grant.get("id")), {"id": grant.get("id"), "records": []})
            entry.update({k: grant.get(k) for k in ("connection", "state", "duration_seconds", "reason", "approved",
                                                     "expires", "ended", "rule")})
            entry["requester"] = _get(grant, "requester.subject")
            entry["records"].append(cite)
        # SC-7
        if event == events.GATEWAY_START:
            listeners.append({"time": time, "listeners": record.get("listeners"),
                              "connections": record.get("connections"), "records": [cite]})

    sections: dict[str, dict[str, Any]] = {}
    trail = {"records": count, "first": first, "last": last}
    if "AU-2" in wanted or "AU-12" in wanted:
        logged = {"event_types": dict(sorted(event_counts.items())), **trail}
        for name in ("AU-2", "AU-12"):
            if name in wanted:
                sections[name] = {"summary": logged, "findings": []}
    if "AU-3" in wanted:
        sections["AU-3"] = {
            "summary": {"records": count, "incomplete": incomplete_count, "required_fields": {
                "every record": list(_COMMON), **{k: list(v) for k, v in sorted(_REQUIRED.items())}},
                "sample": complete_samples},
            "findings": [{"kind": "incomplete record", "detail": f"{i['event']} without {', '.join(i['missing'])}",
                          "records": [{"seq": i["seq"], "sha256": i["sha256"]}]} for i in incomplete],
        }
    if "AU-6" in wanted:
        kinds = Counter(f["kind"] for f in review_findings)
        sections["AU-6"] = {"summary": {"findings": dict(sorted(kinds.items()))}, "findings": review_findings}
    if "AU-8" in wanted:
        sections["AU-8"] = {
            "summary": {"time_source": "the gateway host's clock, as UTC RFC 3339 with microseconds",
                        "out_of_order": backwards_count, "largest_gaps": [g for _, g in gaps], **trail},
            "findings": [{"kind": "time went backwards", "time": b["time"],
                          "detail": f"{b['time']} after {b['previous_time']}",
                          "records": [{"seq": b["seq"], "sha256": b["sha256"]}]} for b in backwards],
        }
    if "AU-9" in wanted or "AU-10" in wanted:
        vkey = (audit_dir / VKEY_FILE).read_text() if (audit_dir / VKEY_FILE).is_file() else ""
        verified: dict[str, Any] = {"verified": False, "detail": "not verified"}
        if verify is not None and vkey:
            report = verify(audit_dir, vkey)
            verified = {"verified": bool(report.ok), "records": report.records, "checkpoints": report.checkpoints,
                        "last_checkpoint_size": report.last_checkpoint_size, "error": report.first_error,
                        "log": report.log_id, "key_id": report.key_id, "closed": report.closed,
                        "unsigned_tail": report.unsigned}
        verified["vkey"] = vkey.strip()
        findings: list[dict[str, Any]] = [] if verified.get("verified") else [
            {"kind": "log does not verify", "detail": verified.get("error") or verified.get("detail"), "records": []}
        ]
        for name in ("AU-9", "AU-10"):
            if name in wanted:
                sections[name] = {"summary": verified, "findings": findings}
    if "AC-2" in wanted:
        sections["AC-2"] = {"summary": {"identities": [
            {**{k: v for k, v in seen.items() if k != "groups"}, "groups": sorted(seen["groups"])}
            for _, seen in sorted(identities.items())]}, "findings": []}
    if "AC-3" in wanted or "AC-6" in wanted:
        enforced = {"policy_changes": policies, "grants": [grants[k] for k in sorted(grants)]}
        for name in ("AC-3", "AC-6"):
            if name in wanted:
                sections[name] = {"summary": enforced, "findings": [
                    {"kind": "policy rejected", "time": p["time"], "detail": p["error"], "records": p["records"]}
                    for p in policies if p["event"] == events.POLICY_REJECTED]}
    if "IA-2" in wanted:
        sections["IA-2"] = {"summary": {"methods": [
            {"issuer": key[0], "subject": key[1], "methods": dict(sorted(counts.items()))}
            for key, counts in sorted(methods.items())]}, "findings": []}
    if "SC-7" in wanted:
        sections["SC-7"] = {"summary": {"starts": listeners, "configured": _configured_boundary(config)}, "findings": []}
    if "SC-8" in wanted:
        sections["SC-8"] = {"summary": {"legs": _tls_legs(config)}, "findings": [
            {"kind": "unprotected leg", "detail": leg["detail"], "records": []}
            for leg in _tls_legs(config) if not leg["protected"]]}
    return {
        "format": "hoopgw-evidence/1",
        "generated_at": _text_time(now or datetime.now(timezone.utc)),
        "range": {"since": since_text, "until": until_text, "connection": connection},
        "audit_dir": str(audit_dir),
        "trail": trail,
        "timeline": _timeline(outcomes, width_index),
        "controls": {name: {"title": CONTROLS[name], **sections[name]} for name in CONTROLS if name in sections},
    }


def _rebucket(counts: Counter[tuple[int, str]], width: int) -> Counter[tuple[int, str]]:
    wider: Counter[tuple[int, str]] = Counter()
    for (start, status), n in counts.items():
        wider[(start // width * width, status)] += n
    return wider


def _timeline(counts: Counter[tuple[int, str]], width_index: int) -> dict[str, Any]:
    """
    Action ends per time bucket and outcome: the narrowest width (at least
    the one counted at) that spans the trail in at most C{_BARS} buckets.
    Only non-empty buckets are listed, in time order.
    """
    if counts:
        low, high = min(s for s, _ in counts), max(s for s, _ in counts)
        width_index = next((i for i in range(width_index, len(_WIDTHS))
                            if (high // _WIDTHS[i] - low // _WIDTHS[i]) < _BARS), len(_WIDTHS) - 1)
        counts = _rebucket(counts, _WIDTHS[width_index])
    buckets: dict[int, dict[str, int]] = defaultdict(dict)
    for (start, status), n in counts.items():
        buckets[start][status] = n
    totals: Counter[str] = Counter()
    for (_, status), n in counts.items():
        totals[status] += n
    return {
        "bucket_seconds": _WIDTHS[width_index],
        "outcomes": dict(sorted(totals.items())),
        "buckets": [{"start": _epoch_text(start), "counts": dict(sorted(buckets[start].items()))}
                    for start in sorted(buckets)],
    }


def _epoch_text(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _action_finding(status: str, end: dict[str, Any], started: tuple[dict[str, Any], bytes] | None,
                    cite: dict[str, Any]) -> dict[str, Any]:
    start = started[0] if started else {}
    records = ([_cite(start, started[1])] if started else []) + [cite]
    decision = start.get("decision", {})
    rule = decision.get("rule")
    return {
        "kind": f"{status} action", "time": end.get("time"), "subject": _get(end, "identity.sub"),
        "connection": end.get("connection"), "session": end.get("session"),
        "detail": f"{_get(end, 'action.kind')} {_get(start, 'action.input')!r}: "
                  f"{_get(end, 'outcome.error') or status}" + (f" (rule {rule})" if rule else ""),
        "records": records,
    }


def _configured_boundary(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    listen = config.listen
    return {
        "listeners": {name: endpoint for name, endpoint in listen.items() if endpoint},
        "connections": [{"name": c.name, "kind": c.kind, "target": c.target} for c in config.connections],
    }


def _tls_legs(config: Any) -> list[dict[str, Any]]:
    """How each leg is protected, from the configuration (SC-8)."""
    if config is None:
        return []
    legs = []
    own = "the configured certificate" if config.tls.cert_file else "a self-signed certificate in the data dir"
    for name in ("postgres", "http"):
        if config.listen.get(name):
            legs.append({"leg": f"client to gateway ({name})", "protected": True,
                         "detail": f"TLS with {own} (PostgreSQL: SSLRequest required)" if name == "postgres"
                         else f"TLS with {own}"})
    if config.listen.get("ssh"):
        legs.append({"leg": "client to gateway (ssh)", "protected": True, "detail": "SSH transport (Conch)"})
    if config.listen.api:
        api = config.listen.api
        legs.append({"leg": "API", "protected": api.startswith("ssl:"),
                     "detail": f"{api} ({'TLS' if api.startswith('ssl:') else 'plain HTTP: keep it on loopback'})"})
    for c in config.connections:
        s = c.settings
        if c.kind == "postgres":
            legs.append({"leg": f"gateway to {c.name} (postgres)", "protected": s.tls != "disable",
                         "detail": f"tls = {s.tls}" + (f", ca_file {s.ca_file}" if s.ca_file else "")})
        elif c.kind == "http":
            https = s.upstream.startswith("https:")
            legs.append({"leg": f"gateway to {c.name} (http)", "protected": https and not s.insecure,
                         "detail": ("https" if https else "plain http") + (", certificate not verified" if s.insecure else "")})
        elif c.kind == "ssh":
            pinned = bool(s.host_key or s.known_hosts)
            legs.append({"leg": f"gateway to {c.name} (ssh)", "protected": pinned,
                         "detail": "SSH, host key pinned" if pinned else "SSH, host key not pinned"})
    return legs


def _cell(value: Any) -> str:
    # A cell a spreadsheet would run as a formula (SQL text and subjects come
    # from clients: "=HYPERLINK(...)") is kept as text, as OWASP advises.
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def findings_rows(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One row per finding (the CSV format), in control order; cells safe to open in a spreadsheet."""
    for name, section in document["controls"].items():
        for finding in section["findings"]:
            yield {
                "control": name,
                "kind": _cell(finding.get("kind")),
                "time": _cell(finding.get("time")),
                "subject": _cell(finding.get("subject")),
                "connection": _cell(finding.get("connection")),
                "session": _cell(finding.get("session")),
                "detail": _cell(finding.get("detail")),
                "records": " ".join(f"#{r['seq']}:{r['sha256']}" for r in finding.get("records", [])),
            }
