"""
In-memory implementations of the shared services, for hoopgw's own tests and
for anyone writing a protocol front end on hoopgw: build a
L{SessionService} with L{memory_session_service} and drive it from a test
with no files, sockets or threads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from zope.interface import implementer

from hoopgw.audit.canonical import canonical_json
from hoopgw.audit.log import RESERVED_FIELDS
from hoopgw.errors import AuditUnavailable, AuthenticationFailed
from hoopgw.interfaces import IAuditLog, IIdentityVerifier, IMetrics, IPolicy, IRecorder
from hoopgw.model import Action, Connection, Decision, Effect, Identity
from hoopgw.sessions import SessionService
from hoopgw.store.memory import MemoryStore

if TYPE_CHECKING:
    from hoopgw.protocols.postgres.origins import Relation
    from hoopgw.protocols.postgres.reach import RelationGraph

__all__ = [
    "FixedCatalog",
    "MemoryAuditLog",
    "MemoryIdentityVerifier",
    "MemoryRecorder",
    "MemoryStore",
    "NullMetrics",
    "StaticPolicy",
    "memory_session_service",
]


@implementer(IAuditLog)
@define
class MemoryAuditLog:
    """
    Keeps records as dicts.  C{break_with(reason)} makes it fail closed like
    a real log whose disk filled up.
    """

    log_id: str = "memory"
    failed: str | None = None
    records: list[dict[str, Any]] = field(factory=list)

    def append(self, event: str, body: Mapping[str, Any]) -> Deferred[int]:
        if self.failed is not None:
            raise AuditUnavailable(f"audit log unavailable: {self.failed}")
        # Refuse what the real log refuses, so a front end tested against
        # this double does not meet its first ValueError in production.
        clash = RESERVED_FIELDS.intersection(body)
        if clash:
            raise ValueError(f"audit record body for {event!r} has reserved key(s) {sorted(clash)}")
        record: dict[str, Any] = {"seq": len(self.records), "event": event, **body}
        canonical_json(record)
        self.records.append(record)
        return succeed(record["seq"])

    def checkpoint(self) -> Deferred[int]:
        return succeed(len(self.records))

    def break_with(self, reason: str) -> None:
        self.failed = reason

    def events(self) -> list[str]:
        return [r["event"] for r in self.records]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event"] == event]


@implementer(IIdentityVerifier)
@define
class MemoryIdentityVerifier:
    """Tokens and SSH key blobs mapped to identities in a dict."""

    tokens: dict[str, Identity] = field(factory=dict)
    keys: dict[bytes, Identity] = field(factory=dict)

    def verify_token(self, token: str) -> Deferred[Identity]:
        identity = self.tokens.get(token)
        if identity is None:
            return fail(AuthenticationFailed("unknown token"))
        return succeed(identity)

    def verified_identity(self, token: str) -> Identity | None:
        return None  # every token goes through verify_token

    def identity_for_public_key(self, key_blob: bytes) -> Identity | None:
        return self.keys.get(key_blob)

    def public_key_refusal(self, key_blob: bytes) -> str:
        return "public key not mapped to an identity"


@implementer(IPolicy)
@define
class StaticPolicy:
    """
    Decides by action kind from a dict, with a default.  The Deferred it
    returns can be held back (C{hold=True}) to test a front end that must
    wait for a decision that arrives later (a human review).
    """

    decisions: dict[str, Decision] = field(factory=dict)
    default: Decision = Decision(effect=Effect.allow, rule="test-allow")
    hold: bool = False
    pending: list[tuple[Deferred[Decision], Decision]] = field(factory=list)
    seen: list[Action] = field(factory=list)

    def decide(self, identity: Identity, connection: Connection, action: Action) -> Deferred[Decision]:
        self.seen.append(action)
        decision = self.decisions.get(action.kind, self.default)
        if self.hold:
            d: Deferred[Decision] = Deferred()
            self.pending.append((d, decision))
            return d
        return succeed(decision)

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for d, decision in pending:
            d.callback(decision)


@implementer(IRecorder)
@define
class MemoryRecorder:
    path: Any = None
    chunks: list[bytes] = field(factory=list)
    closed: bool = False

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def close(self) -> Deferred[str]:
        self.closed = True
        return succeed(hashlib.sha256(b"".join(self.chunks)).hexdigest())


@define
class FixedCatalog:
    """
    A PostgreSQL target's catalog answered from memory (the shape of
    L{hoopgw.protocols.postgres.catalog.Catalog}), for front-end tests whose
    target is not a real server: a relation graph (default: no relations)
    function names by OID and the relations result columns come from (by
    OID, for masking), or nothing at all (C{unreadable}); its reads can be
    held back (C{hold}, then L{release}).  Counts L{invalidate} calls.
    """

    relations: RelationGraph | None = None
    functions: Mapping[int, str] = field(factory=dict)
    tables: Mapping[int, Relation] = field(factory=dict)  # by OID, for masking
    unreadable: bool = False  # answer as a catalog that cannot be read
    hold: bool = False  # answer graph() only on release(), as a slow read does
    held: list[Deferred[RelationGraph | None]] = field(factory=list)
    invalidations: int = 0

    def graph(self) -> Deferred[RelationGraph | None]:
        if self.hold:
            d: Deferred[RelationGraph | None] = Deferred()
            self.held.append(d)
            return d
        return succeed(self.current())

    def release(self) -> None:
        held, self.held, self.hold = self.held, [], False
        for d in held:
            d.callback(self.current())

    def function(self, oid: int) -> Deferred[str | None]:
        return succeed(self.functions.get(oid))

    def current(self) -> RelationGraph | None:
        if self.unreadable or self.hold:
            return None
        if self.relations is None:
            from hoopgw.protocols.postgres.reach import EMPTY

            self.relations = EMPTY
        return self.relations

    def newer(self, missing: tuple[tuple[str, str | None, str], ...]) -> Deferred[RelationGraph | None]:
        return self.graph()

    def known_origins(self, oids: Iterable[int]) -> Mapping[int, Relation] | None:
        """Result columns' relations (L{tables}, by OID) at once, unless held or unreadable."""
        if self.unreadable or self.hold:
            return None
        return self.tables

    def origins(self, oids: Iterable[int]) -> Deferred[Mapping[int, Relation] | None]:
        if self.hold:
            d: Deferred[RelationGraph | None] = Deferred()
            origins = d.addCallback(lambda _: None if self.unreadable else self.tables)
            self.held.append(d)
            return origins
        return succeed(None if self.unreadable else self.tables)

    def invalidate(self) -> None:
        self.invalidations += 1

    def close(self) -> None:
        pass


@implementer(IMetrics)
class NullMetrics:
    """Takes every report of L{IMetrics} and keeps nothing; renders no metrics."""

    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def audit_written(self, seconds: float) -> None:
        pass

    def checkpoint_written(self, unix_time: float) -> None:
        pass

    def audit_failed(self) -> None:
        pass

    def audit_recovered(self) -> None:
        pass

    def session_opened(self, kind: str) -> None:
        pass

    def session_refused(self, kind: str) -> None:
        pass

    def session_closed(self, kind: str) -> None:
        pass

    def action_finished(self, kind: str, outcome: str) -> None:
        pass

    def values_masked(self, mask: str, detector: str, count: int) -> None:
        pass

    def auth_failed(self, protocol: str) -> None:
        pass

    def webhook_attempt_failed(self, reason: str) -> None:
        pass

    def webhook_delivered(self) -> None:
        pass

    def webhook_given_up(self) -> None:
        pass

    def render(self) -> bytes:
        return b""


def memory_session_service(
    *,
    connections: tuple[Connection, ...] = (Connection(name="db", kind="postgres", target="127.0.0.1:5432"),),
    audit: MemoryAuditLog | None = None,
    policy: IPolicy | None = None,
    identity: MemoryIdentityVerifier | None = None,
    store: MemoryStore | None = None,
    clock: IReactorTime | None = None,
    metrics: IMetrics | None = None,
    recordings: Path | None = None,
) -> SessionService:
    """
    A L{SessionService} over in-memory services (a L{Clock} by default).
    Its sessions keep recordings (L{ISession.open_recording
    <hoopgw.interfaces.ISession.open_recording>}) only in a given
    C{recordings} folder (made if missing, as the gateway's is).
    """
    return SessionService(
        audit=audit if audit is not None else MemoryAuditLog(),
        policy=policy if policy is not None else StaticPolicy(),
        identity=identity if identity is not None else MemoryIdentityVerifier(),
        store=store if store is not None else MemoryStore(),
        connections={c.name: c for c in connections},
        clock=clock if clock is not None else Clock(),
        metrics=metrics if metrics is not None else NullMetrics(),
        recordings=recordings,
    )
