"""
Statements held for review (issue 13): what a held statement costs the
gateway while it waits, and how soon it runs once approved.

    python bench/pg_reviews.py [--rounds 4] [--sessions 100] [--seconds 10] [--clients 4]
                               [--samples 150] [--approve-after 0.2,0] [--keep]

1. Many held at once.  C{--sessions} real psql processes, each its own
   session through the gateway (TLS, a dev token), first idle, then each
   with a statement a review rule holds (C{DELETE FROM held WHERE id = -1};
   psql has printed the review's id).  The gateway's RSS after a warm-up
   with none of them, with them idle and with them all held: the idle step
   is what a session costs, the held step what holding its statement adds.
   The gateway's CPU while they wait with no other traffic.  And
   C{pgbench -S} on other connections through the same gateway with none,
   with the idle ones and with the held ones, in alternating order per
   round; the TPS ratios are taken per round, then their median.  Every
   round runs a fresh gateway process (same data directory), so that each
   round's RSS steps are a first allocation, not memory the allocator had
   kept from the round before.

2. Approval to execution.  A raw PostgreSQL-protocol client (TLS, the
   token, one Query at a time) sends a statement that is held, waits
   C{--approve-after} seconds (0.2: a person or a bot that takes that
   long at least; 0: approved the moment the notice arrives, which is what
   exposed Nagle's algorithm on the client leg), then POSTs the approval
   to C{/api/v1/reviews/ID/approve} on a kept-alive connection with an
   approver's token; the time from sending the POST to the statement's
   CommandComplete reaching the client.  Alone for each delay, and with
   the psql sessions' statements held meanwhile for the first.  For scale,
   the same statement on a table no review rule covers: Query to
   CommandComplete.

Everything is started here and stopped here: a throwaway PostgreSQL 15
cluster (TLS on, a SCRAM role, pgbench tables at scale 1) and the gateway
(C{twistd -n hoopgw}, audit on with batched sync, the shipped policy plus
a review rule on C{public.held}, the API listener).  Loopback only.
Measures; never passes or fails.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _procs import (  # noqa: E402 (bench/ is on sys.path)
    bench_run, cpu_seconds, fmt, issue_token, median, postgres_gateway_config, start_gateway, status_kib, stop_process,
)
from pgbench import PGBENCH, PSQL, Target, percentile, run_pgbench  # noqa: E402

from hoopgw.protocols.postgres import codec  # noqa: E402
from hoopgw.tls import ensure_certificate  # noqa: E402
from tests.integration._postgres import PostgresCluster  # noqa: E402
from tests.integration._process import free_port  # noqa: E402
from tests.integration.test_postgres_clients import RawClient  # noqa: E402

ROLE, PASSWORD = "bench", "bench-secret"
CONNECTION = "benchdb"
HELD = "DELETE FROM held WHERE id = -1"  # a write the review rule covers; deletes nothing (no commit to flush)
FREE = "DELETE FROM free WHERE id = -1"  # the same on a table no review rule covers
REVIEW_RULE = """
[[rule]]
name = "bench-review-held"
effect = "review"
sql.writes = ["public.held"]
review.approvers = ["group:dba"]
review.timeout = "30m"
message = "bench: writes to public.held wait for a DBA"
"""
_REVIEW_ID = re.compile(rb"waits for review (\w+)")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Servers:
    """The cluster (kept for the whole run) and one gateway process at a time (L{restart_gateway})."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.stack = contextlib.ExitStack()
        self.gateway_stack = contextlib.ExitStack()
        self.cluster: PostgresCluster | None = None
        self.gateway: subprocess.Popen | None = None
        self.config = base / "gateway" / "hoopgw.toml"
        self.env = dict(os.environ, HOOPGW_BENCH_PASSWORD=PASSWORD)
        self.port = 0
        self.api_port = 0
        self.token = ""  # the requester's (sub "bench", no group)
        self.approver = ""  # sub "approver", group "dba"

    def close(self) -> None:
        try:
            self.gateway_stack.close()
        finally:
            self.stack.close()

    def start(self) -> None:
        cert, key = ensure_certificate(self.base / "tls")
        log("starting PostgreSQL ...")
        cluster = PostgresCluster(
            hba=[f"host all {ROLE} 127.0.0.1/32 scram-sha-256"],
            roles={ROLE: PASSWORD},
            settings={"password_encryption": "'scram-sha-256'", "max_connections": "300"},
            ssl=(str(cert), str(key)),
        )
        self.stack.callback(cluster.stop)
        cluster.start()
        self.cluster = cluster
        cluster._run(PGBENCH, "-i", "-q", "-s", "1", "-h", str(cluster.socket_dir), "-p", str(cluster.port), "-U", "postgres", "postgres")
        cluster.psql(
            f"CREATE TABLE held (id int); CREATE TABLE free (id int);"
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ROLE}; GRANT ALL ON held, free TO {ROLE};"
        )
        directory = self.config.parent
        (directory / "policies").mkdir(parents=True)
        (directory / "policies" / "default.toml").write_text((ROOT / "policies" / "default.toml").read_text())
        (directory / "policies" / "review.toml").write_text(REVIEW_RULE)
        self.port, self.api_port = free_port(), free_port()
        self.config.write_text(postgres_gateway_config(
            port=self.port, cert=cert, key=key, target_port=cluster.port, role=ROLE, connections=(CONNECTION,),
            policies="policies", api_port=self.api_port,
        ))
        self.restart_gateway()
        self.approver = issue_token(self.config, self.env, "approver", ("dba",))

    def restart_gateway(self) -> None:
        """Stop the running gateway (if any) and start a fresh process on the same ports and data."""
        self.gateway_stack.close()
        self.gateway_stack = contextlib.ExitStack()
        log("starting hoopgw (twistd) ...")
        self.gateway, self.token = start_gateway(self.config, self.gateway_stack, self.env)

    @property
    def pid(self) -> int:
        assert self.gateway is not None
        return self.gateway.pid

    def target(self) -> Target:
        return Target("hoopgw", self.port, CONNECTION, self.token, "require", lambda: self.pid)

    def psql_argv(self) -> list[str]:
        return [PSQL, "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", ROLE, CONNECTION]

    def psql_env(self) -> dict[str, str]:
        return self.target().env()

    def api(self) -> "Approver":
        return Approver(self.api_port, self.approver)


class Approver:
    """
    POSTs approvals to the gateway's API on a kept-alive connection.  The
    API listener closes every connection C{[preauth.api] timeout} (60 s)
    after accepting it, or past 256 KiB received (its connections never
    authenticate: the token is per request), so L{fresh} opens a new one
    well before, outside the timed part.
    """

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Length": "0"}
        self.opened = 0.0
        self.sent = 0

    def fresh(self) -> None:
        if self.sent >= 100 or time.monotonic() - self.opened > 30:
            self.connection.close()
            self.connection.connect()
            self.opened, self.sent = time.monotonic(), 0

    def send(self, review: str) -> None:
        self.fresh()
        self.sent += 1
        self.connection.request("POST", f"/api/v1/reviews/{review}/approve", headers=self.headers)

    def answer(self, review: str) -> None:
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 200 or json.loads(body).get("state") != "approved":
            raise RuntimeError(f"approving {review}: {response.status} {body[:300]!r}")

    def approve(self, review: str) -> None:
        self.send(review)
        self.answer(review)

    def close(self) -> None:
        self.connection.close()


class Psqls:
    """
    C{n} psql processes, each a session through the gateway reading its
    statements from a pipe; their output is collected without blocking.
    """

    def __init__(self, servers: Servers) -> None:
        self.servers = servers
        self.procs: list[subprocess.Popen] = []
        self.out: list[bytearray] = []
        self.err: list[bytearray] = []
        self.selector = selectors.DefaultSelector()

    def _pump(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            index, buffer = key.data
            try:
                data = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if data:
                buffer.extend(data)
            else:
                self.selector.unregister(key.fd)

    def _wait(self, done: Any, indices: range, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        pending = set(indices)
        while pending:
            pending = {i for i in pending if not done(i)}
            for i in pending:
                if self.procs[i].poll() is not None:
                    raise RuntimeError(f"psql {i} exited ({self.procs[i].returncode}) waiting for {what}: {bytes(self.err[i])[-500:]!r}")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what} ({len(pending)} psql left)")
            self._pump(0.05)

    def _write(self, i: int, text: str) -> None:
        stdin = self.procs[i].stdin
        assert stdin is not None
        stdin.write(text.encode())
        stdin.flush()

    def open(self, n: int, batch: int = 16) -> None:
        """Start C{n} sessions, C{batch} at a time (the listener allows 32 unauthenticated per source)."""
        for first in range(0, n, batch):
            indices = range(len(self.procs), len(self.procs) + min(batch, n - first))
            for i in indices:
                proc = subprocess.Popen(
                    self.servers.psql_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    env=self.servers.psql_env(),
                )
                self.procs.append(proc)
                self.out.append(bytearray())
                self.err.append(bytearray())
                for stream, buffer in ((proc.stdout, self.out[i]), (proc.stderr, self.err[i])):
                    assert stream is not None
                    os.set_blocking(stream.fileno(), False)
                    self.selector.register(stream.fileno(), selectors.EVENT_READ, (i, buffer))
                self._write(i, "\\echo ready\n")
            self._wait(lambda i: b"ready\n" in self.out[i], indices, "psql sessions to open")

    def hold(self) -> list[str]:
        """Send each session the held statement; return the review ids psql printed."""
        for i in range(len(self.procs)):
            self.out[i].clear()
            self.err[i].clear()
            self._write(i, f"{HELD};\n\\echo done\n")
        self._wait(lambda i: _REVIEW_ID.search(self.err[i]) is not None, range(len(self.procs)), "the statements to be held")
        return [_REVIEW_ID.search(e).group(1).decode() for e in self.err]  # type: ignore[union-attr]

    def wait_done(self) -> None:
        """Until every session's held statement has run (psql reached the line after it)."""
        self._wait(lambda i: b"done\n" in self.out[i], range(len(self.procs)), "the approved statements to run")
        failed = [bytes(e) for e in self.err if b"ERROR" in e]
        if failed:
            raise RuntimeError(f"{len(failed)} approved statements failed: {failed[0][-300:]!r}")

    def close(self) -> None:
        for i, proc in enumerate(self.procs):
            with contextlib.suppress(OSError, ValueError):
                self._write(i, "\\q\n")
                proc.stdin.close()  # type: ignore[union-attr]
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                stop_process(proc, group=False)
            for stream in (proc.stdout, proc.stderr):
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(stream.fileno())  # type: ignore[union-attr]
                stream.close()  # type: ignore[union-attr]
        self.procs.clear()


def rss_kib(pid: int, key: str = "VmRSS") -> float:
    """The median of five samples over half a second, after a second to settle."""
    time.sleep(1.0)
    samples = []
    for _ in range(5):
        samples.append(status_kib(pid, key))
        time.sleep(0.1)
    return median(samples)


def quiet_cpu(pid: int, seconds: float) -> float:
    """The gateway's CPU (share of one core) over C{seconds} with no traffic."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def threads(pid: int) -> int:
    return status_kib(pid, "Threads")


# -- approval to execution ------------------------------------------------------------


class HeldClient:
    """A RawClient (tests' raw protocol client) that runs one Query at a time and times its answers."""

    def __init__(self, servers: Servers) -> None:
        self.raw = RawClient(servers.port, servers.token, user=ROLE, database=CONNECTION)
        self.raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _next(self) -> codec.Message:
        raw = self.raw
        while not raw.pending:
            data = raw.sock.recv(65536)
            if not data:
                raise RuntimeError("the gateway closed the connection")
            raw.pending.extend(raw.parser.feed(data))
        return raw.pending.pop(0)

    def _until(self, kind: type) -> codec.Message:
        while True:
            message = self._next()
            if isinstance(message, codec.ErrorResponse):
                raise RuntimeError(f"error from the gateway: {message.message} ({message.detail})")
            if isinstance(message, kind):
                return message

    def send(self, sql: str) -> None:
        self.raw.sock.sendall(codec.encode(codec.Query(sql)))

    def held(self) -> str:
        """Send the held statement; return its review id once the notice has come."""
        self.send(HELD)
        while True:
            notice = self._until(codec.NoticeResponse)
            found = _REVIEW_ID.search((notice.message or "").encode())  # type: ignore[attr-defined]
            if found:
                return found.group(1).decode()

    def completed(self) -> tuple[float, str]:
        """Wait for CommandComplete (timestamped as it is parsed), then ReadyForQuery."""
        done = self._until(codec.CommandComplete)
        at = time.perf_counter()
        self._until(codec.ReadyForQuery)
        return at, done.tag  # type: ignore[attr-defined]

    def round_trip(self, sql: str) -> float:
        started = time.perf_counter()
        self.send(sql)
        at, _ = self.completed()
        return at - started

    def close(self) -> None:
        self.raw.close()


def approval_latency(servers: Servers, samples: int, approve_after: float) -> dict[str, list[float]]:
    """
    C{samples} held statements approved one after the other: the time from
    sending the POST to CommandComplete at the client, and to the API's
    answer; between them, the same statement on a table no rule holds.
    """
    client, approver = HeldClient(servers), servers.api()
    result: dict[str, list[float]] = {"approve_to_complete": [], "approve_answer": [], "not_held": []}
    try:
        for n in range(samples + 3):  # the first three warm the paths and are dropped
            review = client.held()
            time.sleep(approve_after)
            answered: list[float] = []

            def answer(review: str = review) -> None:
                approver.answer(review)
                answered.append(time.perf_counter())

            approver.fresh()
            sent = time.perf_counter()
            approver.send(review)
            # The API's answer is read in a thread, the statement's in this one: each timed as it comes.
            reader = threading.Thread(target=answer)
            reader.start()
            completed, tag = client.completed()
            reader.join()
            if not answered:
                raise RuntimeError(f"approving {review} failed (see above)")
            if tag != "DELETE 0":
                raise RuntimeError(f"unexpected command tag {tag!r}")
            reference = client.round_trip(FREE)
            if n >= 3:
                result["approve_to_complete"].append((completed - sent) * 1000)
                result["approve_answer"].append((answered[0] - sent) * 1000)
                result["not_held"].append(reference * 1000)
    finally:
        client.close()
        approver.close()
    return result


# -- many held at once ------------------------------------------------------------------


def approve_all(servers: Servers, reviews: list[str]) -> None:
    approver = servers.api()
    try:
        for review in reviews:
            approver.approve(review)
    finally:
        approver.close()


def pgbench_run(servers: Servers, clients: int, seconds: int, logdir: Path, tag: str) -> dict[str, float]:
    return run_pgbench(servers.target(), clients, "simple", seconds, logdir, tag)


def one_round(servers: Servers, r: int, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    """A fresh gateway; RSS at none/idle/held; pgbench in each state (order alternating)."""
    if r > 0:
        servers.restart_gateway()
    pid = servers.pid
    # Warm-up: pgbench's connections, a held statement approved (review, API and store paths).
    pgbench_run(servers, args.clients, 2, logdir, f"warm-{r}")
    client, approver = HeldClient(servers), servers.api()
    for _ in range(3):
        review = client.held()
        approver.approve(review)
        client.completed()
    client.close()
    approver.close()
    out: dict[str, Any] = {"quiet_cpu_none": quiet_cpu(pid, args.quiet)}
    tps: dict[str, dict[str, float]] = {}
    psqls = Psqls(servers)

    def bench(state: str) -> None:
        run = pgbench_run(servers, args.clients, args.seconds, logdir, f"{state}-{r}")
        tps[state] = run
        log(f"round {r + 1}/{args.rounds} {state}: {run['tps']:,.0f} tps, p99 {run['p99']:.0f} µs, "
            f"gateway {run['proxy_cpu_us']:.0f} µs CPU/tx")

    try:
        if r % 2 == 0:
            bench("none")
        out["rss_none"] = rss_kib(pid)
        out["anon_none"] = status_kib(pid, "RssAnon")
        started = time.monotonic()
        psqls.open(args.sessions)
        out["open_s"] = time.monotonic() - started
        out["rss_idle"] = rss_kib(pid)
        out["anon_idle"] = status_kib(pid, "RssAnon")
        if r % 2 == 0:
            bench("idle")
        started = time.monotonic()
        reviews = psqls.hold()
        out["hold_s"] = time.monotonic() - started
        out["rss_held"] = rss_kib(pid)
        out["anon_held"] = status_kib(pid, "RssAnon")
        out["threads_held"] = threads(pid)
        out["quiet_cpu_held"] = quiet_cpu(pid, args.quiet)
        bench("held")
        started = time.monotonic()
        approve_all(servers, reviews)
        psqls.wait_done()
        out["approve_all_s"] = time.monotonic() - started
        if r % 2 == 1:
            bench("idle")
        psqls.close()
        if r % 2 == 1:
            bench("none")
    finally:
        psqls.close()
    out["tps"] = tps
    log(f"round {r + 1}/{args.rounds}: RSS none {out['rss_none'] / 1024:.1f} MiB, +{args.sessions} idle "
        f"{(out['rss_idle'] - out['rss_none']) / 1024:+.2f} MiB, +held {(out['rss_held'] - out['rss_idle']) / 1024:+.2f} MiB; "
        f"quiet CPU none {out['quiet_cpu_none']:.2%}, held {out['quiet_cpu_held']:.2%}")
    return out


def with_held_latency(servers: Servers, args: argparse.Namespace) -> dict[str, list[float]]:
    psqls = Psqls(servers)
    try:
        psqls.open(args.sessions)
        reviews = psqls.hold()
        result = approval_latency(servers, args.samples, args.approve_after[0])
        approve_all(servers, reviews)
        psqls.wait_done()
    finally:
        psqls.close()
    return result


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds of part 1, each on a fresh gateway (default 4)")
    parser.add_argument("--sessions", type=int, default=100, help="psql sessions held at once (default 100)")
    parser.add_argument("--seconds", type=int, default=10, help="pgbench -T per run (default 10)")
    parser.add_argument("--clients", type=int, default=4, help="pgbench -c (default 4)")
    parser.add_argument("--quiet", type=float, default=5.0, help="seconds of no traffic the idle CPU is read over (default 5)")
    parser.add_argument("--samples", type=int, default=150, help="approvals timed per case (default 150)")
    parser.add_argument("--approve-after", default="0.2,0",
                        help="seconds between the notice and the POST, one case each (default 0.2,0)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, audit trail)")
    args = parser.parse_args([] if argv is None else argv)
    args.approve_after = [float(x) for x in args.approve_after.split(",") if x]

    base = Path(tempfile.mkdtemp(prefix="hoopgw-bench-reviews-"))
    servers = Servers(base)
    rounds: list[dict[str, Any]] = []
    latency: dict[str, dict[str, list[float]]] = {}
    with bench_run(servers, base, keep=args.keep):
        logdir = base / "logs"
        logdir.mkdir()
        for r in range(args.rounds):
            rounds.append(one_round(servers, r, args, logdir))
        for delay in args.approve_after:
            log(f"approval latency, alone, {delay:g} s after the notice ({args.samples} samples) ...")
            latency[f"alone, approved {delay:g} s after the notice"] = approval_latency(servers, args.samples, delay)
        log(f"approval latency, {args.sessions} others held ({args.samples} samples) ...")
        latency[f"{args.sessions} others held, approved {args.approve_after[0]:g} s after the notice"] = with_held_latency(servers, args)
    return report(args, rounds, latency)


def report(args: argparse.Namespace, rounds: list[dict[str, Any]], latency: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    n = args.sessions
    rows: list[dict[str, Any]] = []
    mib = lambda kib: kib / 1024  # noqa: E731
    per = lambda key, base: [(x[key] - x[base]) / n for x in rounds]  # noqa: E731  (KiB per session)
    print(f"### {n} psql sessions through the gateway: idle, then each with a statement held for review "
          f"(median of {args.rounds} rounds, a fresh gateway each)\n")
    print("| gateway state | VmRSS MiB | step KiB per session | RssAnon step KiB per session | per-round steps KiB/session |")
    print("|---|---:|---:|---:|---|")
    steps = [
        ("after warm-up, no psql", "rss_none", None, None),
        (f"{n} idle sessions", "rss_idle", "rss_none", ("anon_idle", "anon_none")),
        (f"{n} held statements", "rss_held", "rss_idle", ("anon_held", "anon_idle")),
        (f"{n} held, from none (session + hold)", "rss_held", "rss_none", ("anon_held", "anon_none")),
    ]
    for label, key, base, anon in steps:
        row: dict[str, Any] = {"benchmark": "held sessions RSS", "state": label, "rss_mib": mib(median([x[key] for x in rounds]))}
        if base is not None and anon is not None:
            row["kib_per_session"] = median(per(key, base))
            row["anon_kib_per_session"] = median(per(*anon))
            row["rounds"] = [round(v, 1) for v in per(key, base)]
        rows.append(row)
        print(f"| {label} | {fmt(row['rss_mib'], 1)} | {fmt(row.get('kib_per_session', float('nan')), 1)} "
              f"| {fmt(row.get('anon_kib_per_session', float('nan')), 1)} | {', '.join(map(str, row.get('rounds', []))) or '-'} |")
    print()
    quiet_none = median([x["quiet_cpu_none"] for x in rounds])
    quiet_held = median([x["quiet_cpu_held"] for x in rounds])
    print(f"Gateway CPU with no traffic ({args.quiet:g} s): {quiet_none:.2%} of a core with no psql, {quiet_held:.2%} "
          f"with {n} statements held; threads with them held: {median([x['threads_held'] for x in rounds]):.0f}. "
          f"Opening the {n} sessions took {median([x['open_s'] for x in rounds]):.1f} s, holding their statements "
          f"{median([x['hold_s'] for x in rounds]):.2f} s, approving all {n} over the API until every psql had its answer "
          f"{median([x['approve_all_s'] for x in rounds]):.2f} s (medians).\n")
    rows.append({"benchmark": "quiet CPU", "none": quiet_none, "held": quiet_held})

    print(f"### `pgbench -S -c {args.clients} -j 1 -M simple`, {args.seconds} s, through the gateway beside those sessions "
          f"(median of {args.rounds} rounds, order alternating)\n")
    print("| beside it | TPS | × none (per-round ratio, median) | per-round ratios | p50 µs | p99 µs | gateway CPU µs/tx |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for state, label in (("none", "nothing"), ("idle", f"{n} idle psql sessions"), ("held", f"{n} held statements")):
        runs = [x["tps"][state] for x in rounds]
        ratios = [x["tps"][state]["tps"] / x["tps"]["none"]["tps"] for x in rounds]
        row = {
            "benchmark": "pgbench -S beside held", "state": state, "tps": median([x["tps"] for x in runs]),
            "x_none": median(ratios), "ratios": [round(v, 3) for v in ratios],
            "p50_us": median([x["p50"] for x in runs]), "p99_us": median([x["p99"] for x in runs]),
            "cpu_us_per_tx": median([x["proxy_cpu_us"] for x in runs]),
        }
        rows.append(row)
        print(f"| {label} | {fmt(row['tps'])} | {fmt(row['x_none'], 3)} | {', '.join(f'{v:.3f}' for v in ratios)} "
              f"| {fmt(row['p50_us'])} | {fmt(row['p99_us'])} | {fmt(row['cpu_us_per_tx'], 1)} |")
    print()

    print("### Approval to execution: `POST /api/v1/reviews/ID/approve` sent → the held statement's CommandComplete "
          "at a raw client\n")
    print("| case | samples | p50 ms | p90 ms | p99 ms | max ms | POST → API's answer p50 ms | same statement not held, Query → CommandComplete p50 / p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for case, result in latency.items():
        ordered = sorted(result["approve_to_complete"])
        reference = sorted(result["not_held"])
        row = {
            "benchmark": "approve to complete", "case": case, "samples": len(ordered),
            "p50_ms": percentile(ordered, 50), "p90_ms": percentile(ordered, 90), "p99_ms": percentile(ordered, 99),
            "max_ms": ordered[-1] if ordered else float("nan"),
            "answer_p50_ms": median(result["approve_answer"]),
            "not_held_p50_ms": percentile(reference, 50), "not_held_p99_ms": percentile(reference, 99),
        }
        rows.append(row)
        print(f"| {case} | {row['samples']} | {fmt(row['p50_ms'], 2)} | {fmt(row['p90_ms'], 2)} | {fmt(row['p99_ms'], 2)} "
              f"| {fmt(row['max_ms'], 2)} | {fmt(row['answer_p50_ms'], 2)} | {fmt(row['not_held_p50_ms'], 2)} / {fmt(row['not_held_p99_ms'], 2)} |")
    print()
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
