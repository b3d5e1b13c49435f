"""
The audit trail's vocabulary: the name of every event the gateway writes,
and the one place each event's body is built.

docs/audit-format.md lists the same events, with what each body holds;
C{tests/test_audit_events.py} keeps the two equal, and checks that no other
module of C{hoopgw} spells an event's name: writers call the builders here,
readers (the verifier, replay, evidence) compare with the names here.

The builders take what the caller already has (records of identities,
decisions, outcomes) and return the body as a new dict the log may own;
they do no I/O.  The fields the log itself sets on every record (C{v},
C{log}, C{seq}, C{prev}, C{time}, C{event}) are the log's
(L{hoopgw.audit.log.RESERVED_FIELDS}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from hoopgw.audit.canonical import Checked, checked

if TYPE_CHECKING:
    from hoopgw.masking.service import Counts, SessionMasks
    from hoopgw.model import Action

__all__ = [
    "ACTION_END",
    "ACTION_START",
    "AUTH_FAILED",
    "AUTH_FAILED_SUPPRESSED",
    "EVENTS",
    "GATEWAY_START",
    "GATEWAY_STOP",
    "GRANT_APPROVED",
    "GRANT_CANCELLED",
    "GRANT_DENIED",
    "GRANT_EXPIRED",
    "GRANT_REQUESTED",
    "GRANT_REVOKED",
    "GRANT_USED",
    "INTERRUPTED_LISTED",
    "LOG_CLOSED",
    "LOG_RECOVERED",
    "LOG_TAIL_SET_ASIDE",
    "POLICY_LOADED",
    "POLICY_REJECTED",
    "REQUEST_REFUSED",
    "REQUEST_REFUSED_SUPPRESSED",
    "REVIEW_APPROVED",
    "REVIEW_CANCELLED",
    "REVIEW_DENIED",
    "REVIEW_EXPIRED",
    "REVIEW_REQUESTED",
    "SESSIONS_INTERRUPTED",
    "SESSION_END",
    "SESSION_REFUSED",
    "SESSION_START",
    "SSH_KEY_ENROLLED",
    "SSH_KEY_REMOVED",
    "SessionRecords",
    "action_end",
    "auth_failed",
    "gateway_record",
    "grant",
    "log_closed",
    "log_recovered",
    "log_tail_set_aside",
    "policy_loaded",
    "policy_rejected",
    "request_refused",
    "review",
    "session_end",
    "session_refused",
    "sessions_interrupted",
    "ssh_key",
    "suppressed",
]

# -- the gateway and its log ------------------------------------------------------

GATEWAY_START = "gateway.start"
GATEWAY_STOP = "gateway.stop"
LOG_CLOSED = "log.closed"
LOG_RECOVERED = "log.recovered"
LOG_TAIL_SET_ASIDE = "log.tail.set_aside"
POLICY_LOADED = "policy.loaded"
POLICY_REJECTED = "policy.rejected"
SESSIONS_INTERRUPTED = "sessions.interrupted"

# -- sessions and their actions ---------------------------------------------------

SESSION_START = "session.start"
SESSION_END = "session.end"
SESSION_REFUSED = "session.refused"
ACTION_START = "action.start"
ACTION_END = "action.end"

# -- refusals before any session --------------------------------------------------

AUTH_FAILED = "auth.failed"
AUTH_FAILED_SUPPRESSED = "auth.failed.suppressed"
REQUEST_REFUSED = "request.refused"
REQUEST_REFUSED_SUPPRESSED = "request.refused.suppressed"

# -- people's decisions -----------------------------------------------------------

REVIEW_REQUESTED = "review.requested"
REVIEW_APPROVED = "review.approved"
REVIEW_DENIED = "review.denied"
REVIEW_EXPIRED = "review.expired"
REVIEW_CANCELLED = "review.cancelled"
GRANT_REQUESTED = "grant.requested"
GRANT_APPROVED = "grant.approved"
GRANT_DENIED = "grant.denied"
GRANT_CANCELLED = "grant.cancelled"
GRANT_USED = "grant.used"
GRANT_EXPIRED = "grant.expired"
GRANT_REVOKED = "grant.revoked"
SSH_KEY_ENROLLED = "identity.ssh_key.enrolled"
SSH_KEY_REMOVED = "identity.ssh_key.removed"

#: Every event the gateway writes.
EVENTS = frozenset(
    {
        GATEWAY_START, GATEWAY_STOP, LOG_CLOSED, LOG_RECOVERED, LOG_TAIL_SET_ASIDE, POLICY_LOADED,
        POLICY_REJECTED, SESSIONS_INTERRUPTED, SESSION_START, SESSION_END, SESSION_REFUSED, ACTION_START,
        ACTION_END, AUTH_FAILED, AUTH_FAILED_SUPPRESSED, REQUEST_REFUSED, REQUEST_REFUSED_SUPPRESSED,
        REVIEW_REQUESTED, REVIEW_APPROVED, REVIEW_DENIED, REVIEW_EXPIRED, REVIEW_CANCELLED, GRANT_REQUESTED,
        GRANT_APPROVED, GRANT_DENIED, GRANT_CANCELLED, GRANT_USED, GRANT_EXPIRED, GRANT_REVOKED,
        SSH_KEY_ENROLLED, SSH_KEY_REMOVED,
    }
)  # fmt: skip

#: C{sessions.interrupted} lists at most this many session ids (C{count} has them all).
INTERRUPTED_LISTED = 1_000

#: A session keeps the forms of at most this many actions recorded again.
_FORMS_KEPT = 256

_BLOCKED = "blocked"  # (Status.blocked's value: the model is not imported by the log's layer)


# -- the gateway and its log ------------------------------------------------------


def gateway_record(description: Mapping[str, Any]) -> dict[str, Any]:
    """C{gateway.start} and C{gateway.stop}: the gateway's description (L{Gateway.describe})."""
    return dict(description)


def sessions_interrupted(gateway: str, ids: Iterable[str]) -> dict[str, Any]:
    ids = list(ids)
    return {
        "gateway": gateway,
        "count": len(ids),
        "sessions": ids[:INTERRUPTED_LISTED],
        "reason": "the previous gateway process ended without ending these sessions",
    }


def policy_loaded(gateway: str, reason: str, loaded: Mapping[str, Any]) -> dict[str, Any]:
    """One policy file read (C{loaded}: its path and SHA-256), at start or on a reload."""
    return {"gateway": gateway, "reason": reason, **loaded}


def policy_rejected(gateway: str, error: str) -> dict[str, Any]:
    return {"gateway": gateway, "error": error}


def log_closed(reason: str) -> dict[str, Any]:
    return {"reason": reason}


def log_recovered(count: int, first: int, resolution: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    After a run that did not close the log: C{count} records from seq
    C{first} (the last signed size) were written but not signed then.
    """
    body: dict[str, Any] = {
        "count": count,
        "first_seq": first,
        "checkpoint": first,
        "reason": (
            "the previous run did not close the log (the process was killed or crashed, "
            "or the machine stopped): "
            + (
                f"records {first}..{first + count - 1}, after the last signed checkpoint, "
                f"were written but not signed at the time; they are adopted, and the "
                f"checkpoint after this record signs them"
                if count
                else "every record it wrote was already signed"
            )
        ),
    }
    if count:
        body["last_seq"] = first + count - 1
    if resolution is not None:
        body["resolution"] = {k: v for k, v in resolution.items() if k != "action"}
    return body


def log_tail_set_aside(resolution: Mapping[str, Any]) -> dict[str, Any]:
    """The facts a start checked of a tail an operator set aside (C{audit resolve-tail --set-aside})."""
    return {k: v for k, v in resolution.items() if k != "action"}


# -- refusals before any session --------------------------------------------------


def auth_failed(
    gateway: str,
    address: str,
    protocol: str,
    method: str,
    reason: str,
    *,
    user: str | None = None,
    credential_sha256: str | None = None,
    key_fingerprint: str | None = None,
) -> dict[str, Any]:
    """A refused login: never the credential, only its SHA-256 or the key's fingerprint."""
    body: dict[str, Any] = {
        "gateway": gateway,
        "source": address,
        "protocol": protocol,
        "method": method,
        "reason": reason,
        "outcome": {"status": _BLOCKED},
    }
    if user is not None:
        body["user"] = user
    if credential_sha256 is not None:
        body["credential_sha256"] = credential_sha256
    if key_fingerprint is not None:
        body["key_fingerprint"] = key_fingerprint
    return body


def suppressed(
    gateway: str, host: str, protocols: Iterable[str], count: int, failures: int, window_s: int, since_us: int
) -> dict[str, Any]:
    """
    C{auth.failed.suppressed} / C{request.refused.suppressed}: the C{count}
    of C{failures} from one host in a window that its budget did not record.
    """
    return {
        "gateway": gateway,
        "source_host": host,
        "protocols": sorted(protocols),
        "suppressed": count,
        "failures": failures,
        "window_s": window_s,
        "since_us": since_us,
        "outcome": {"status": _BLOCKED},
    }


def request_refused(
    gateway: str,
    address: str,
    protocol: str,
    code: int | str,
    reason: str,
    *,
    request: Mapping[str, Any] | None = None,
    identity: Mapping[str, Any] | None = None,
    credential_sha256: str | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "gateway": gateway,
        "source": address,
        "protocol": protocol,
        "code": code,
        "outcome": {"status": _BLOCKED, "error": reason},
    }
    if request is not None:
        body["request"] = dict(request)
    if identity is not None:
        body["identity"] = identity
    elif credential_sha256 is not None:
        body["credential_sha256"] = credential_sha256
    if user is not None:
        body["user"] = user
    return body


def session_refused(
    gateway: str,
    connection: str,
    address: str,
    protocol: str,
    identity: Mapping[str, Any],
    client: Mapping[str, Any],
    decision: Mapping[str, Any],
    message: str,
) -> dict[str, Any]:
    return {
        "gateway": gateway,
        "connection": connection,
        "source": address,
        "protocol": protocol,
        "identity": identity,
        "client": dict(client),
        "decision": decision,
        "outcome": {"status": _BLOCKED, "error": message},
    }


# -- sessions and their actions ---------------------------------------------------


class SessionRecords:
    """
    The bodies of one session's records: C{session.start}, C{action.start},
    C{action.end} and C{session.end} share the session's constant part
    (gateway, session, connection, kind, target, source, protocol,
    identity, client), built and checked for canonical JSON once.
    """

    __slots__ = ("_common", "_forms")

    def __init__(
        self,
        *,
        gateway: str,
        session: str,
        connection: str,
        kind: str,
        target: str,
        address: str,
        protocol: str,
        identity: Mapping[str, Any],
        client: Mapping[str, Any] | None,
    ) -> None:
        common: dict[str, Any] = {
            "gateway": gateway,
            "session": session,
            "connection": connection,
            "kind": kind,
            "target": target,
            "source": address,
            "protocol": protocol,
            # Walked for canonical JSON once here, not in every record.
            "identity": checked(identity),
        }
        if client:
            common["client"] = checked(client)
        self._common = common
        # id(action) -> (action, masks, form, counts): the forms of actions
        # recorded again (a cached HTTP request is one Action for every
        # session), as these masks stored them (None until its second
        # record), and what they masked in it, counted in the metrics again
        # at each record as if masked again.
        self._forms: dict[int, tuple[Action, SessionMasks | None, dict[str, Any] | None, Counts]] = {}

    def action_form(
        self, action: Action, masks: SessionMasks | None, literals: Callable[[str], Any] | None = None
    ) -> dict[str, Any]:
        """
        C{action} as the trail stores it: its kind, input, attributes (lists
        for collections) and details, through the connection's masks for
        the trail (what a statement carries is stored masked, for everyone;
        the facts policy matched are read from the input, so masked too),
        and C{masked}: how many values each mask masked, with those the
        front end masked before building it.

        Most actions (a statement, a shell line) are recorded once, and
        freezing costs more than the one walk canonical JSON makes; an
        action recorded again gets a read-only form, shared by its later
        records while the session's masks are the same (a policy reload
        makes new ones).  The caller must not change what it is given.
        """
        key = id(action)
        entry = self._forms.get(key)
        if entry is not None and entry[0] is action and entry[1] is masks and entry[2] is not None:
            if entry[3] and masks is not None:
                masks.settle(entry[3])
            return entry[2]
        again = entry is not None and entry[0] is action and entry[1] is masks
        attributes = {
            k: list(v) if isinstance(v, (tuple, list, frozenset, set)) else v for k, v in action.attributes.items()
        }
        details = dict(action.details)
        form: dict[str, Any] = {"kind": action.kind, "input": action.input}
        counts: Counts = {}
        if masks is not None and masks.trail:
            form["input"] = masks.trail_text(action.input, counts, literals)
            details = masks.trail_value(details, counts)
            attributes = masks.trail_value(attributes, {})  # (counted in the input already)
            if counts:
                form["masked"] = masks.settle(counts)
        if action.masked:
            masked = dict(form.get("masked") or {})
            for name, count in action.masked.items():
                masked[name] = masked.get(name, 0) + count
            form["masked"] = masked
        if attributes:
            form["attributes"] = checked(attributes) if again else attributes
        if details:
            form["details"] = checked(details) if again else details
        if not again:
            if len(self._forms) >= _FORMS_KEPT:
                self._forms.clear()
            self._forms[key] = (action, masks, None, counts)
        elif all(type(form[k]) is Checked for k in ("attributes", "details") if k in form):
            self._forms[key] = (action, masks, form, counts)  # shared: only if read-only throughout
        else:
            del self._forms[key]  # (checked each time: nothing to keep)
        return form

    def _body(self, **parts: Any) -> dict[str, Any]:
        body = self._common.copy()
        body.update(parts)
        return body

    def session_start(self, decision: Mapping[str, Any]) -> dict[str, Any]:
        return self._body(decision=decision)

    def action_start(self, action: Mapping[str, Any], decision: Mapping[str, Any]) -> dict[str, Any]:
        """C{action}: the action's id and its audit form; C{decision}: policy's, with its C{review} if held."""
        return self._body(action=action, decision=decision)

    def action_end(self, action_id: str, kind: str, outcome: Mapping[str, Any]) -> dict[str, Any]:
        return self._body(action={"id": action_id, "kind": kind}, outcome=outcome)

    def session_end(self, end: Mapping[str, Any]) -> dict[str, Any]:
        """C{end}: L{session_end}'s."""
        return self._body(end=end)


def action_end(
    outcome: dict[str, Any],
    *,
    error: str | None = None,
    masked: dict[str, int] | None = None,
    duration_us: int | None = None,
    review: str | None = None,
) -> dict[str, Any]:
    """
    C{action.end}'s C{outcome}: the front end's (L{Outcome.to_record
    <hoopgw.model.Outcome.to_record>}), with the error as the trail stores
    it (masked), the masks' counts, the duration the session measured when
    the front end gave none, and the review that held it.  C{outcome} and
    C{masked} are the caller's fresh dicts, completed and kept, not copied:
    this runs once per statement.
    """
    if error is not None:
        outcome["error"] = error
    if masked is not None:
        outcome["masked"] = masked
    if duration_us is not None:
        outcome["duration_us"] = duration_us
    if review is not None:
        outcome["review"] = review
    return outcome


def session_end(
    status: str,
    duration_us: int,
    actions: int,
    bytes_in: int,
    bytes_out: int,
    *,
    error: str | None = None,
    recording: str | None = None,
    recording_sha256: str | None = None,
    recording_error: str | None = None,
    recordings: list[dict[str, Any]] | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """C{session.end}'s C{end}: how it ended, its counts and its recordings (path and SHA-256)."""
    end: dict[str, Any] = {
        "status": status,
        "duration_us": duration_us,
        "actions": actions,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
    }
    if error is not None:
        end["error"] = error
    if recording_sha256 is not None:
        end["recording_sha256"] = recording_sha256
        if recording is not None:
            end["recording"] = recording
    if recording_error:
        end["recording_error"] = recording_error
    if recordings:
        end["recordings"] = recordings
    if details:
        end.update(details)
    return end


# -- people's decisions -----------------------------------------------------------


def review(
    gateway: str,
    session: str | None,
    record: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """C{review.*}: the review as stored (L{Review.to_record <hoopgw.reviews.Review.to_record>}), as it is now."""
    return {"gateway": gateway, "session": session, "review": record, **(extra or {})}


def grant(gateway: str, record: Mapping[str, Any], *, session: str | None = None) -> dict[str, Any]:
    """C{grant.*}: the grant as stored; C{grant.used} names the C{session} that relied on it."""
    body = {"gateway": gateway, "grant": record}
    if session is not None:
        body["session"] = session
    return body


def ssh_key(
    gateway: str,
    identity: Mapping[str, Any],
    key: Mapping[str, Any],
    expires: float | int,
    *,
    source: str | None = None,
    renews: bool | None = None,
    displaces: list[str] | None = None,
) -> dict[str, Any]:
    """
    C{identity.ssh_key.enrolled} (with C{renews} and C{displaces}) and
    C{identity.ssh_key.removed}: the token's identity, the key's
    fingerprint, type and size, and when the enrolment expires.
    """
    body: dict[str, Any] = {"gateway": gateway, "identity": identity, "key": key, "expires": expires}
    if renews is not None:
        body["renews"] = renews
    if displaces is not None:
        body["displaces"] = displaces
    if source is not None:
        body["source"] = source
    return body
