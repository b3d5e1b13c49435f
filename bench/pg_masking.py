"""
Masking cost on a PostgreSQL scan (issue 12): a 1,000,000-row SELECT read
with psql, directly (TLS), through the gateway on a connection no mask
covers, and through the gateway on a connection whose mask masks one
column by origin and runs the detectors on the others -- same run,
alternating order, medians.  Also the per-row cost of the rewriting in
process, and the catalog lookup a result's first description costs (cold:
the query on the target; warm: the plan from the cache).

    python bench/pg_masking.py [--rounds 3] [--rows 1000000] [--keep]

Everything is started here and stopped here: a throwaway PostgreSQL 15
cluster (TLS on, a SCRAM role) and the gateway (`twistd -n hoopgw`, audit on,
the shipped policy plus the mask).  Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _procs import bench_run, cpu_seconds, fmt, median, postgres_gateway_config, start_gateway, status_kib  # noqa: E402

from hoopgw.tls import ensure_certificate  # noqa: E402
from tests.integration._postgres import PG_BIN, PostgresCluster  # noqa: E402
from tests.integration._process import free_port  # noqa: E402

PSQL = str(PG_BIN / "psql")
ROLE, PASSWORD = "bench", "bench-secret"
SCAN = "SELECT id, ssn, note FROM people"
MASK = """
[[mask]]
name = "pii"
connections = ["masked"]
columns = ["public.people.ssn"]
detectors = ["card", "ssn", "email"]
"""


class Servers:
    def __init__(self, base: Path, rows: int) -> None:
        self.base = base
        self.rows = rows
        self.stack = contextlib.ExitStack()
        self.cluster: PostgresCluster | None = None
        self.gateway: subprocess.Popen | None = None
        self.port = 0
        self.token = ""

    def close(self) -> None:
        self.stack.close()

    def start(self) -> None:
        cert, key = ensure_certificate(self.base, None, None)
        cluster = PostgresCluster(
            hba=[f"host all {ROLE} 127.0.0.1/32 scram-sha-256"],
            roles={ROLE: PASSWORD},
            settings={"password_encryption": "'scram-sha-256'"},
            ssl=(str(cert), str(key)),
        )
        self.stack.callback(cluster.stop)
        cluster.start()
        self.cluster = cluster
        cluster.psql(
            "CREATE TABLE people (id int, ssn text, note text);"
            f"INSERT INTO people SELECT g, lpad((g % 899 + 100)::text, 3, '0') || '-45-' || lpad((g % 9999 + 1)::text, 4, '0'),"
            f" 'customer note number ' || g FROM generate_series(1, {self.rows}) g;"
            f"GRANT SELECT ON people TO {ROLE};"
        )
        cluster.psql("VACUUM ANALYZE people")
        self._start_gateway(cert, key)

    def _start_gateway(self, cert: Path, key: Path) -> None:
        directory = self.base / "gateway"
        (directory / "policies").mkdir(parents=True)
        default = ROOT / "policies" / "default.toml"
        (directory / "policies" / "default.toml").write_text(default.read_text())
        (directory / "policies" / "mask.toml").write_text(MASK)
        self.port = free_port()
        config = directory / "hoopgw.toml"
        assert self.cluster is not None
        config.write_text(postgres_gateway_config(
            port=self.port, cert=cert, key=key, target_port=self.cluster.port, role=ROLE,
            connections=("plain", "masked"), policies="policies",
        ))
        self.gateway, self.token = start_gateway(config, self.stack, dict(os.environ, HOOPGW_BENCH_PASSWORD=PASSWORD))

    def conninfo(self, target: str) -> tuple[str, dict[str, str]]:
        assert self.cluster is not None
        if target == "direct+tls":
            dsn = f"host=127.0.0.1 port={self.cluster.port} dbname=postgres user={ROLE} sslmode=require"
            return dsn, {"PGPASSWORD": PASSWORD}
        database = "masked" if target == "hoopgw masked" else "plain"
        return f"host=127.0.0.1 port={self.port} dbname={database} user=bench sslmode=require", {"PGPASSWORD": self.token}


def scan(servers: Servers, target: str) -> dict[str, float]:
    dsn, extra = servers.conninfo(target)
    pid = servers.gateway.pid if target != "direct+tls" and servers.gateway is not None else None
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                peak[0] = max(peak[0], status_kib(pid, "VmRSS"))  # type: ignore[arg-type]
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    if pid:
        sampler.start()
    cpu = cpu_seconds(pid)
    started = time.monotonic()
    result = subprocess.run(
        [PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", "-c", SCAN, dsn],
        env={**os.environ, **extra}, capture_output=True, text=True, timeout=600, check=False,
    )
    wall = time.monotonic() - started
    stop.set()
    if pid:
        sampler.join()
    if result.returncode != 0:
        raise RuntimeError(f"scan through {target} failed: {result.stderr}")
    return {"wall": wall, "cpu": cpu_seconds(pid) - cpu if pid else float("nan"), "rss_peak_mib": peak[0] / 1024}


def in_process() -> dict[str, float]:
    """Per-row rewriting cost and the plan from a warm cache, without sockets."""
    from types import SimpleNamespace

    from hoopgw.masking.service import MaskingService
    from hoopgw.model import Connection, Identity
    from hoopgw.policy.rules import MaskRule, PolicySet
    from hoopgw.protocols.postgres import codec
    from hoopgw.protocols.postgres.masking import ResultMasking
    from hoopgw.protocols.postgres.origins import Relation
    from hoopgw.testing import FixedCatalog

    rule = MaskRule("pii", columns=("public.people.ssn",), detectors=("card", "ssn", "email"))
    service = MaskingService(SimpleNamespace(policy_set=PolicySet(masks=[rule])), b"k" * 32)
    masks = service.for_session(Identity("dev", "bench", ()), Connection("masked", "postgres", "x"))
    tables = {16384: Relation(16384, "public", "people", "r", {1: "id", 2: "ssn", 3: "note"})}
    masking = ResultMasking(lambda: masks, FixedCatalog(tables=tables))
    description = codec.RowDescription([
        codec.FieldDescription("id", 16384, 1, 23), codec.FieldDescription("ssn", 16384, 2, 25),
        codec.FieldDescription("note", 16384, 3, 25),
    ])
    row = codec.DataRow.from_values([b"123456", b"123-45-6789", b"customer note number 123456"])
    n = 20000
    plan_us = min(timeit.repeat(lambda: masking.describe(description), number=n, repeat=5)) / n * 1e6
    masking.describe(description)
    row_us = min(timeit.repeat(lambda: masking.row(row), number=n, repeat=5)) / n * 1e6
    untouched = ResultMasking(lambda: None, FixedCatalog())
    untouched.describe(description)
    pass_us = min(timeit.repeat(lambda: untouched.row(row), number=n, repeat=5)) / n * 1e6
    return {"plan_warm_us": plan_us, "row_us": row_us, "row_unmasked_us": pass_us}


def cold_lookup(servers: Servers) -> float:
    """The origins query a result's first description costs on a cold cache (ms, median of 20)."""
    import psycopg2

    from hoopgw.protocols.postgres.catalog import _RELATIONS, relation_from_row

    assert servers.cluster is not None
    conn = psycopg2.connect(host="127.0.0.1", port=servers.cluster.port, dbname="postgres", user=ROLE, password=PASSWORD)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 'public.people'::regclass::oid::int8")
        oid = cur.fetchone()[0]
        times = []
        for _ in range(20):
            started = time.perf_counter()
            cur.execute(_RELATIONS, ([oid],))
            [relation_from_row(r) for r in cur.fetchall()]
            times.append((time.perf_counter() - started) * 1000)
    conn.close()
    return median(times)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="hoopgw-bench-masking-"))
    servers = Servers(base, args.rows)
    targets = ("direct+tls", "hoopgw plain", "hoopgw masked")
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in targets}
    with bench_run(servers, base, keep=args.keep):
        for target in targets[1:]:
            scan(servers, target)  # warm: TLS, session, catalog
        for r in range(args.rounds):
            for target in targets if r % 2 == 0 else tuple(reversed(targets)):
                runs[target].append(scan(servers, target))
                print(f"round {r + 1} {target}: {runs[target][-1]['wall']:.2f} s", file=sys.stderr)
        cold_ms = cold_lookup(servers)
    local = in_process()
    rows = []
    print(f"### {args.rows:,}-row `{SCAN}` via `psql -o /dev/null`, median of {args.rounds} rounds\n")
    print("| target | wall s | × direct+tls | × hoopgw plain | gateway CPU s | gateway RSS peak MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for target in targets:
        mine = runs[target]
        row = {
            "benchmark": "masked scan",
            "target": target,
            "wall_s": median([x["wall"] for x in mine]),
            "x_direct_tls": median([x["wall"] / d["wall"] for x, d in zip(mine, runs["direct+tls"])]),
            "x_plain": median([x["wall"] / d["wall"] for x, d in zip(mine, runs["hoopgw plain"])]),
            "cpu_s": median([x["cpu"] for x in mine]),
            "rss_peak_mib": max(x["rss_peak_mib"] for x in mine),
        }
        rows.append(row)
        print(f"| {target} | {fmt(row['wall_s'], 2)} | {fmt(row['x_direct_tls'], 2)} | {fmt(row['x_plain'], 2)} "
              f"| {fmt(row['cpu_s'], 2)} | {fmt(row['rss_peak_mib'], 1)} |")
    added = (rows[2]["cpu_s"] - rows[1]["cpu_s"]) / args.rows * 1e6
    print()
    print("| cost | µs |")
    print("|---|---:|")
    print(f"| gateway CPU per row, masked − plain (same run) | {added:.2f} |")
    print(f"| one row rewritten in process (3 columns: origin, detectors ×2) | {local['row_us']:.2f} |")
    print(f"| one row passed in process with no mask | {local['row_unmasked_us']:.2f} |")
    print(f"| a result's plan, warm catalog cache | {local['plan_warm_us']:.2f} |")
    print(f"| a result's plan, cold cache: the origins query on the target | {cold_ms * 1000:.0f} |")
    rows.append({"benchmark": "masking costs", "cpu_us_per_row": added, "cold_lookup_ms": cold_ms, **local})
    return rows


if __name__ == "__main__":
    main()
