"""
Values that flow through the session pipeline.

Every protocol front end speaks in these terms, and every shared service
(identity, policy, audit, store) consumes them, so they carry no protocol
detail beyond the free-form C{attributes} an action exposes to policy.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Mapping

from attrs import field, frozen


def _tuple_of_str(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


@frozen
class Identity:
    """
    A verified principal.

    C{credential_sha256} is the hex SHA-256 of the presented credential (a
    token, or the public key blob) so that an auditor can tie records to a
    credential without the credential ever being stored.
    """

    issuer: str
    subject: str
    groups: tuple[str, ...] = field(default=(), converter=_tuple_of_str)
    auth_method: str = "token"
    token_id: str | None = None
    credential_sha256: str | None = None
    expires: int | None = None

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "iss": self.issuer,
            "sub": self.subject,
            "groups": list(self.groups),
            "method": self.auth_method,
        }
        if self.token_id is not None:
            record["token_id"] = self.token_id
        if self.credential_sha256 is not None:
            record["credential_sha256"] = self.credential_sha256
        return record


@frozen
class Connection:
    """
    A target that identities reach through the gateway.

    C{settings} is the kind-specific part (see L{hoopgw.config}); C{target}
    is the printable address used in audit records (never a secret).
    """

    name: str
    kind: str
    target: str
    settings: Any = field(default=None, eq=False, repr=False)


@frozen
class Action:
    """
    One sub-task of a session: a SQL statement, an exec command, an HTTP
    request, ...

    @ivar kind: an action kind such as C{"sql.query"} or C{"k8s.delete"}.
    @ivar input: the exact command as the audit trail should show it
        (already masked if it carries sensitive values).
    @ivar attributes: facts that policy conditions match on, keyed by
        condition name (C{"sql.statements"}, C{"k8s.resources"}, ...).  Values
        are strings, booleans or tuples of strings.
    @ivar details: extra audit content that policy does not look at.
    """

    kind: str
    input: str = ""
    attributes: Mapping[str, Any] = field(factory=dict)
    details: Mapping[str, Any] = field(factory=dict)
    # Values the front end masked in the above before building it, per mask
    # (a request body's JSON paths): counted into the record's "masked".
    masked: Mapping[str, int] | None = field(default=None, eq=False)


class Effect(str, Enum):
    allow = "allow"
    deny = "deny"
    review = "review"


@frozen
class Decision:
    """
    What policy decided for one action.

    C{rule} names the rule that decided, or C{None} when no rule matched
    (which denies: no matching allow means no access).
    """

    effect: Effect
    rule: str | None = None
    message: str = ""
    review: Any = None

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.allow

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"effect": self.effect.value}
        if self.rule is not None:
            record["rule"] = self.rule
        if self.message:
            record["message"] = self.message
        return record


class Status(str, Enum):
    succeeded = "succeeded"
    failed = "failed"
    blocked = "blocked"
    expired = "expired"


@frozen
class Outcome:
    """
    How an action ended.  Sizes are counts, durations are microseconds, so
    that records hold integers only (canonical JSON has no float ambiguity).
    """

    status: Status
    error: str | None = None
    code: str | None = None
    rows: int | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    duration_us: int | None = None
    # Values masked in what the action returned, per mask name (never the values).
    masked: Mapping[str, int] | None = None

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"status": self.status.value}
        for name in ("error", "code", "rows", "bytes_in", "bytes_out", "duration_us", "masked"):
            value = getattr(self, name)
            if value is not None:
                record[name] = value
        return record


@frozen
class Source:
    """Where a client came from, as the transport saw it."""

    protocol: str
    address: str

    @classmethod
    def from_address(cls, protocol: str, address: Any) -> "Source":
        host = getattr(address, "host", None)
        port = getattr(address, "port", None)
        if host is None:
            return cls(protocol, str(address))
        if ":" in host:
            return cls(protocol, f"[{host}]:{port}")
        return cls(protocol, f"{host}:{port}")


# What each client is told when the gateway stops (sessions and connections still logging in alike).
SHUTDOWN_REASON = "the gateway is shutting down"
