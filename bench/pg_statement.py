"""
PostgreSQL front-end micro-benchmark: the gateway's CPU per statement,
in-process, for the two shapes `pgbench -S` sends.

    /tmp/probe/bin/python bench/pg_statement.py [--statements 20000] [--rounds 5] [--profile]

A L{ClientProtocol} is driven through start-up on StringTransports, then
fed N statements and, for each, the target's answer:

  - simple: a Query whose text differs only in its literal
    (C{SELECT abalance FROM pgbench_accounts WHERE aid = <n>;}, as
    `pgbench -M simple` sends), answered RowDescription, DataRow,
    CommandComplete, ReadyForQuery;
  - prepared: one Parse of the C{$1} form, then per statement Bind,
    Describe (portal), Execute, Sync (what libpq's PQsendQueryPrepared
    sends for `pgbench -M prepared`), answered BindComplete,
    RowDescription, DataRow, CommandComplete, ReadyForQuery.

The services are the real ones: L{AuditLog} in a temporary directory
(batched sync; its fdatasync and checkpoints run inline on the reactor's
L{Clock}, which advances 100 µs per statement, so a group commit happens
every 100 statements), L{PolicyService} with the shipped default policy,
and L{Metrics}.  Only the identity verifier, the session index and the
sockets are in memory.  No TLS, no syscalls other than the audit log's.

Reported: µs of CPU (process time) per statement, the best of C{--rounds};
with C{--profile} a cProfile breakdown of one extra round per mode (top
functions by own time, and the hoopgw frames by inclusive time).

With C{--breakdown}, where the time goes without a profiler's distortion:
besides the whole pipeline, one rig per shared service with that service
replaced by the cheapest stand-in keeping its contract (the audit log's
C{append} a fired Deferred, policy a fixed allow decision, metrics
L{NullMetrics}), all rounds alternating between the rigs; a service's
cost is the whole pipeline's median minus its rig's.  What is left is the
front end's own work: framing, the tracker, classification, the record
bodies and the Deferreds between them.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import itertools
import random
import statistics
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hoopgw.audit.log import AuditLog  # noqa: E402
from hoopgw.protocols.postgres.settings import PostgresSettings  # noqa: E402
from hoopgw.metrics import Metrics  # noqa: E402
from hoopgw.model import Action, Connection, Decision, Identity  # noqa: E402
from hoopgw.policy.service import PolicyService  # noqa: E402
from hoopgw.protocols.postgres import codec  # noqa: E402
from hoopgw.protocols.postgres.frontend import PostgresFrontEnd  # noqa: E402
from hoopgw.sessions import SessionService  # noqa: E402
from hoopgw.testing import MemoryIdentityVerifier, MemoryStore, NullMetrics  # noqa: E402

IDENTITY = Identity(
    issuer="https://idp.example.com", subject="bench", groups=("dev",), auth_method="token",
    token_id="01HV3K0000000000000000", credential_sha256="9f" * 32,
)
SETTINGS = PostgresSettings(host="127.0.0.1", port=5432, database="bench", user="bench", tls="disable")
CONNECTION = Connection(name="bench", kind="postgres", target="127.0.0.1:5432", settings=SETTINGS)
SIMPLE = "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"
PREPARED = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
STEP = 0.0001  # the clock's advance per statement



def _catalog() -> dict[str, Any]:
    """
    The target's catalog as a fresh snapshot of pgbench's tables (the steady
    state: a decision looks it up, nothing is read).  Trees from before the
    catalog was consulted per statement take no such argument.
    """
    try:
        from hoopgw.protocols.postgres.reach import RelationGraph
        from hoopgw.testing import FixedCatalog
    except ImportError:
        return {}
    tables = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")
    graph = RelationGraph([(16384 + i, "public", name) for i, name in enumerate(tables)])
    catalog = FixedCatalog(relations=graph)
    return {"catalog_for": lambda connection: catalog}

class _TLSStringTransport(StringTransport):
    def startTLS(self, options: Any, normal: bool = True) -> None:
        pass


def _encode(*messages: codec.Message) -> bytes:
    return b"".join(codec.encode(m) for m in messages)


class Rig:
    """One gateway (real audit, policy, metrics) with one client connected and ready."""

    def __init__(self, directory: Path) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        policies = directory / "policies"
        policies.mkdir()
        shutil.copy(ROOT / "policies" / "default.toml", policies / "default.toml")
        metrics = Metrics(self.clock)
        self.audit = AuditLog(
            directory / "audit",
            signing_key=Ed25519PrivateKey.generate(),
            origin="hoopgw/bench",
            reactor=self.clock,
            sync="batched",
            metrics=metrics,
            sync_runner=maybeDeferred,
        )
        self.audit.startService()
        self.sessions = SessionService(
            audit=self.audit,
            policy=PolicyService.from_directory(policies),
            identity=MemoryIdentityVerifier(tokens={"token": IDENTITY}),
            store=MemoryStore(),
            connections={CONNECTION.name: CONNECTION},
            clock=self.clock,
            metrics=metrics,
        )
        self.backends: list[Any] = []

        def connect(settings: Any, backend: Any) -> Any:
            backend.makeConnection(StringTransport())
            self.backends.append(backend)
            return succeed(backend)

        self.front = PostgresFrontEnd(
            sessions=self.sessions, tls_options=object(), reactor=self.clock, connect=connect, **_catalog()
        )
        self.client = self.front.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        self.transport = _TLSStringTransport()
        self.client.makeConnection(self.transport)
        self.client.dataReceived(codec.encode(codec.SSLRequest()))
        self.client.dataReceived(codec.encode(codec.StartupMessage({"user": "bench", "database": "bench"})))
        self.client.dataReceived(codec.encode(codec.PasswordMessage(b"token")))
        [self.backend] = self.backends
        self.backend.dataReceived(
            _encode(
                codec.AuthenticationOk(),
                codec.ParameterStatus("server_version", "15.0"),
                codec.ParameterStatus("client_encoding", "UTF8"),
                codec.ParameterStatus("standard_conforming_strings", "on"),
                codec.BackendKeyData(4242, b"\x01\x02\x03\x04"),
                codec.ReadyForQuery("I"),
            )
        )
        assert self.client.state == "ready", self.client.state
        self.transport.clear()
        self.backend.transport.clear()

    def close(self) -> None:
        self.client.connectionLost(None)
        self.clock.advance(1)
        self.audit.stopService()
        self.clock.advance(1)


_ROW_DESCRIPTION = codec.RowDescription([codec.FieldDescription("abalance", type_oid=23, type_size=4)])
_ANSWER_SIMPLE = _encode(
    _ROW_DESCRIPTION,
    codec.DataRow.from_values([b"0"]),
    codec.CommandComplete("SELECT 1"),
    codec.ReadyForQuery("I"),
)
_ANSWER_PREPARED = _encode(
    codec.GenericMessage.from_body(b"2", b""),  # BindComplete
    _ROW_DESCRIPTION,
    codec.DataRow.from_values([b"0"]),
    codec.CommandComplete("SELECT 1"),
    codec.ReadyForQuery("I"),
)


def _requests(mode: str, n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    if mode == "simple":
        return [codec.encode(codec.Query(SIMPLE.format(aid=rng.randint(1, 100_000)))) for _ in range(n)]
    return [
        _encode(
            codec.Bind("", "P0_1", (0,), (str(rng.randint(1, 100_000)).encode(),), ()),
            codec.Describe("P", ""),
            codec.Execute("", 0),
            codec.Sync(),
        )
        for _ in range(n)
    ]


def _run(rig: Rig, mode: str, requests: list[bytes], profile: cProfile.Profile | None = None) -> float:
    """Feed every request and its answer; return CPU µs per statement."""
    answer = _ANSWER_SIMPLE if mode == "simple" else _ANSWER_PREPARED
    client, backend, clock = rig.client, rig.backend, rig.clock
    client_out, backend_out = rig.transport, backend.transport
    if profile is not None:
        profile.enable()
    started = time.process_time()
    for request in requests:
        client.dataReceived(request)
        backend.dataReceived(answer)
        client_out.clear()
        backend_out.clear()
        clock.advance(STEP)
    elapsed = time.process_time() - started
    if profile is not None:
        profile.disable()
    return elapsed / len(requests) * 1e6


def _prepare(rig: Rig, mode: str) -> None:
    if mode == "prepared":
        rig.client.dataReceived(_encode(codec.Parse("P0_1", PREPARED, (23,)), codec.Sync()))
        rig.backend.dataReceived(_encode(codec.GenericMessage.from_body(b"1", b""), codec.ReadyForQuery("I")))
    rig.transport.clear()
    rig.backend.transport.clear()


def _check(rig: Rig, mode: str, count: int) -> None:
    """The run did what the gateway does: every statement forwarded, decided and finished."""
    client = rig.client
    assert client.state == "ready" and not client._waiting and not client._queue, "statement stuck"
    assert not client.tracker.expect, "statements never completed"


def _profile_report(profile: cProfile.Profile, statements: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(22)
    raw = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (cc, nc, tt, ct, callers) in raw.items():
        if "/hoopgw/" in filename:
            rows.append((ct, f"{Path(filename).name}:{line}({name})", nc))
    rows.sort(reverse=True)
    lines = ["", "hoopgw frames, inclusive µs per statement (calls per statement):", ""]
    for ct, where, nc in rows[:25]:
        lines.append(f"  {ct / statements * 1e6:7.1f} µs  {nc / statements:5.2f}×  {where}")
    return out.getvalue() + "\n".join(lines)


class _FixedPolicy:
    """The policy service, deciding every action with one fixed decision (what the shipped policy gives pgbench)."""

    def __init__(self, real: PolicyService, decision: Decision) -> None:
        self._real = real
        self._decision = decision

    def decide(self, identity: Any, connection: Any, action: Any) -> Any:
        return succeed(self._decision)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _without_audit(rig: Rig) -> None:
    seq = itertools.count()
    rig.audit.append = lambda event, body: succeed(next(seq))  # type: ignore[method-assign]


def _without_policy(rig: Rig) -> None:
    policy = rig.sessions.policy
    allowed = policy.decide(IDENTITY, CONNECTION, Action(kind="sql.query", input=SIMPLE.format(aid=1)))
    decision = allowed.result
    assert decision.allowed
    rig.sessions.policy = _FixedPolicy(policy, decision)  # type: ignore[assignment]


def _without_metrics(rig: Rig) -> None:
    rig.sessions.metrics = NullMetrics()
    rig.audit._metrics = None


_STAND_INS = {
    "audit log (two appends)": _without_audit,
    "policy decision": _without_policy,
    "metrics": _without_metrics,
}


def breakdown(statements: int = 10_000, rounds: int = 5) -> list[dict[str, Any]]:
    """µs per statement of each shared service, by difference with a rig whose service is a stand-in (module docstring)."""
    rows = []
    for mode in ("simple", "prepared"):
        with tempfile.TemporaryDirectory(prefix="hoopgw-pgstmt-") as tmp:
            rigs: dict[str, Rig] = {}
            for name in ("whole pipeline", *_STAND_INS):
                folder = Path(tmp) / str(len(rigs))
                folder.mkdir()
                rig = rigs[name] = Rig(folder)
                if name in _STAND_INS:
                    _STAND_INS[name](rig)
                _prepare(rig, mode)
                _run(rig, mode, _requests(mode, 2000, 0))
            results: dict[str, list[float]] = {name: [] for name in rigs}
            for r in range(rounds):
                requests = _requests(mode, statements, r + 1)
                for name, rig in rigs.items():
                    results[name].append(_run(rig, mode, requests))
                    _check(rig, mode, statements)
            for rig in rigs.values():
                rig.close()
        whole = statistics.median(results["whole pipeline"])
        rows.append({"mode": mode, "part": "whole pipeline", "us": round(whole, 1)})
        rest = whole
        for name in _STAND_INS:
            cost = whole - statistics.median(results[name])
            rest -= cost
            rows.append({"mode": mode, "part": name, "us": round(cost, 1)})
        rows.append({"mode": mode, "part": "the front end's own work (the rest)", "us": round(rest, 1)})
    print("| mode | part | CPU µs/statement (median of rounds) |")
    print("|---|---|---:|")
    for row in rows:
        print(f"| {row['mode']} | {row['part']} | {row['us']} |")
    return rows


def main(statements: int = 20_000, rounds: int = 5, profile: bool = False) -> list[dict[str, Any]]:
    rows = []
    for mode in ("simple", "prepared"):
        with tempfile.TemporaryDirectory(prefix="hoopgw-pgstmt-") as tmp:
            rig = Rig(Path(tmp))
            _prepare(rig, mode)
            _run(rig, mode, _requests(mode, 2000, 0))  # warm-up (caches, metrics children)
            results = []
            for r in range(rounds):
                results.append(_run(rig, mode, _requests(mode, statements, r + 1)))
                _check(rig, mode, statements)
            records = rig.audit._seq
            report = None
            if profile:
                prof = cProfile.Profile()
                _run(rig, mode, _requests(mode, statements, 99), prof)
                report = _profile_report(prof, statements)
            rig.close()
        rows.append({
            "mode": mode,
            "statements": statements,
            "best_us": round(min(results), 1),
            "median_us": round(sorted(results)[len(results) // 2], 1),
            "records": records,
        })
        if report is not None:
            print(f"### cProfile, {mode}\n\n```\n{report}\n```\n")
    print("| mode | statements/round | rounds | CPU µs/statement, best | median |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['mode']} | {row['statements']:,} | {rounds} | {row['best_us']} | {row['median_us']} |")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--breakdown", action="store_true", help="the cost of each shared service, by stand-ins")
    args = parser.parse_args()
    if args.breakdown:
        breakdown(args.statements, args.rounds)
    else:
        main(args.statements, args.rounds, args.profile)
