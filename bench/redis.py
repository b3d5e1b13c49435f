"""
Redis proxy benchmark: `redis-benchmark -t get,set` at `-P 1` and `-P 16`
against redis-server directly (plaintext and TLS) and through hoopgw run
as its own process (`twistd -n hoopgw`) with the Redis example front end
(examples/redis), on the same machine in the same run.

    python bench/redis.py [--requests 50000 | --quick] [--clients 50] [--rounds 3]
                          [--pipelines 1,16] [--keep]

Everything is started here and stopped here, also on failure or Ctrl-C: a
throwaway redis-server (no persistence, a plaintext port and a TLS port),
and the gateway (audit on, sync "batched", a policy allowing redis.* with
the example's guardrails, `tls = "disable"` to the server, a dev token as
the password: `redis-benchmark --user cache -a TOKEN --tls`).  The plugin is
found with examples/redis/src on PYTHONPATH (or installed).  Loopback only.

Targets, visited in alternating order within each round:

  direct      redis-benchmark -> redis-server, plaintext
  direct+tls  redis-benchmark -TLS-> redis-server
  hoopgw      redis-benchmark -TLS-> hoopgw -> redis-server (hoopgw always requires TLS)

One self-signed certificate serves both TLS ends.  Ratios are taken per
round against that round's direct runs, then the median.  The gateway's
CPU per command is its process CPU time (user + system, all threads, from
/proc/<pid>/stat) over a run divided by the run's commands (GET and SET);
redis-server's likewise.  Every command through the gateway is an action:
decided, written ahead (action.start) and ended (action.end) in the audit
log.  Measured, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "redis"
for path in (str(ROOT), str(EXAMPLE / "src")):
    if path not in sys.path:
        sys.path.insert(0, path)

from _procs import bench_run, cpu_seconds, fmt, median, start_gateway, stop_process, wait_for  # noqa: E402 (bench/ is on sys.path)

from hoopgw.tls import ensure_certificate  # noqa: E402

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_BENCHMARK = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"
TARGETS = ("direct", "direct+tls", "hoopgw")
TESTS = ("SET", "GET")

POLICY = """
[[rule]]
name = "bench-may-use-cache"
effect = "allow"
connections = ["cache"]
actions = ["session.open", "redis.*"]
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Target:
    def __init__(self, name: str, port: int, extra: list[str], pid: Callable[[], int | None]) -> None:
        self.name = name
        self.port = port
        self.extra = extra  # TLS and login options
        self.pid = pid  # the proxy process whose CPU is counted (None: direct)


class Servers:
    """Starts redis-server and the gateway; C{close} stops whatever was started."""

    def __init__(self, base: Path, log: Callable[[str], None], clients: int) -> None:
        self.base = base
        self.log = log
        self.clients = clients
        self.stack = contextlib.ExitStack()
        self.redis: subprocess.Popen | None = None
        self.targets: dict[str, Target] = {}

    def close(self) -> None:
        self.stack.close()

    def start(self) -> None:
        cert, key = ensure_certificate(self.base / "tls")
        self.cert = cert
        self._start_redis(cert, key)
        self._start_gateway(cert, key)

    def _start_redis(self, cert: Path, key: Path) -> None:
        self.log("starting redis-server ...")
        directory = self.base / "redis"
        directory.mkdir()
        port, tls_port = free_port(), free_port()
        log = directory / "redis.log"
        argv = [
            REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--save", "", "--appendonly", "no", "--logfile", str(log),
            "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
        ]  # fmt: skip
        redis = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        self.redis = redis
        self.stack.callback(stop_process, redis, group=False)
        wait_for(lambda: (log.exists() and b"Ready to accept connections" in log.read_bytes()) or redis.poll() is not None,
                 30, "redis-server")
        if redis.poll() is not None:
            raise RuntimeError(f"redis-server did not start:\n{log.read_text(errors='replace')}")
        self.redis_port = port
        tls = ["--tls", "--cacert", str(cert)]
        self.targets["direct"] = Target("direct", port, [], lambda: None)
        self.targets["direct+tls"] = Target("direct+tls", tls_port, tls, lambda: None)

    def _start_gateway(self, cert: Path, key: Path) -> None:
        self.log("starting hoopgw (twistd) ...")
        directory = self.base / "gateway"
        (directory / "policies").mkdir(parents=True)
        guardrails = (EXAMPLE / "policies" / "redis.toml").read_text()
        (directory / "policies" / "redis.toml").write_text(POLICY + guardrails)
        port = free_port()
        config = directory / "hoopgw.toml"
        config.write_text(f"""
[gateway]
name = "bench"
data_dir = "data"
policies = "policies"

[listen]
postgres = false
ssh = false
http = false
api = false
redis = "tcp:{port}:interface=127.0.0.1"

[tls]
cert_file = "{cert}"
key_file = "{key}"

[audit]
sync = "batched"

# redis-benchmark opens all its clients at once from one address: more than
# the default 32 still authenticating per source.
[preauth.redis]
max_per_source = {max(64, 2 * self.clients)}

[[connections]]
name = "cache"
kind = "redis"
address = "127.0.0.1:{self.redis_port}"
tls = "disable"
""")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLE / "src"), env.get("PYTHONPATH")]))
        gateway, token = start_gateway(config, self.stack, env)
        self.gateway = gateway
        login = ["--user", "cache", "-a", token, "--tls", "--cacert", str(cert)]
        self.targets["hoopgw"] = Target("hoopgw", port, login, lambda: gateway.pid)


def run_benchmark(target: Target, *, pipeline: int, requests: int, clients: int, redis_pid: int) -> dict[str, Any]:
    argv = [REDIS_BENCHMARK, "-h", "127.0.0.1", "-p", str(target.port), *target.extra,
            "-t", "set,get", "-P", str(pipeline), "-n", str(requests), "-c", str(clients), "--csv"]
    pid = target.pid()
    cpu_before, server_before = cpu_seconds(pid), cpu_seconds(redis_pid)
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    wall = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before if pid is not None else float("nan")
    server_cpu = cpu_seconds(redis_pid) - server_before
    if result.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed on {target.name}:\n{result.stdout}\n{result.stderr}")
    rows = {row["test"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    missing = [t for t in TESTS if t not in rows]
    if missing:
        raise RuntimeError(f"redis-benchmark gave no {missing} on {target.name}:\n{result.stdout}\n{result.stderr}")
    commands = requests * len(TESTS)
    return {
        "rps": {t: float(rows[t]["rps"]) for t in TESTS},
        "p50": {t: float(rows[t]["p50_latency_ms"]) * 1000 for t in TESTS},
        "p99": {t: float(rows[t]["p99_latency_ms"]) * 1000 for t in TESTS},
        "cpu_us": cpu / commands * 1e6,
        "cores": cpu / wall,
        "server_us": server_cpu / commands * 1e6,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000, help="requests per test (GET, SET) per run")
    parser.add_argument("--quick", action="store_true", help="10,000 requests per test")
    parser.add_argument("--clients", type=int, default=50, help="redis-benchmark -c (its default)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pipelines", default="1,16", help="redis-benchmark -P values")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    requests = 10_000 if args.quick else args.requests
    pipelines = [int(p) for p in args.pipelines.split(",")]
    for program in (REDIS_SERVER, REDIS_BENCHMARK):
        if not os.path.exists(program):
            raise SystemExit(f"{program} is missing (apt-get install redis-server redis-tools)")
    base = Path(tempfile.mkdtemp(prefix="hoopgw-bench-redis-"))
    servers = Servers(base, lambda text: print(text, file=sys.stderr, flush=True), args.clients)
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with bench_run(servers, base, keep=args.keep):
        assert servers.redis is not None
        for round_ in range(args.rounds):
            # Alternate the order, so that a slower stretch of a shared machine is not always one target's.
            order = TARGETS if round_ % 2 == 0 else tuple(reversed(TARGETS))
            for pipeline in pipelines:
                for name in order:
                    print(f"round {round_ + 1}: {name} -P {pipeline} ...", file=sys.stderr, flush=True)
                    result = run_benchmark(servers.targets[name], pipeline=pipeline, requests=requests,
                                           clients=args.clients, redis_pid=servers.redis.pid)
                    results.setdefault((pipeline, name), []).append(result)
        print(f"### redis-benchmark -t get,set -c {args.clients} -n {requests:,}, medians of {args.rounds} rounds\n")
        print("| -P | target | test | ops/s | × direct | × direct+tls | p50 µs | p99 µs | "
              "gateway CPU µs/command | gateway CPU (cores) | redis-server CPU µs/command |")
        print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        rows = []
        for pipeline in pipelines:
            for name in TARGETS:
                runs = results[(pipeline, name)]
                for test in TESTS:
                    direct = results[(pipeline, "direct")]
                    direct_tls = results[(pipeline, "direct+tls")]
                    ratio = median([r["rps"][test] / d["rps"][test] for r, d in zip(runs, direct)])
                    ratio_tls = median([r["rps"][test] / d["rps"][test] for r, d in zip(runs, direct_tls)])
                    row = {
                        "pipeline": pipeline, "target": name, "test": test,
                        "rps": median([r["rps"][test] for r in runs]), "x_direct": ratio, "x_direct_tls": ratio_tls,
                        "p50": median([r["p50"][test] for r in runs]), "p99": median([r["p99"][test] for r in runs]),
                        "cpu_us": median([r["cpu_us"] for r in runs]), "cores": median([r["cores"] for r in runs]),
                        "server_us": median([r["server_us"] for r in runs]),
                    }
                    rows.append(row)
                    proxy = name == "hoopgw"
                    print(f"| {pipeline} | {name} | {test} | {fmt(row['rps'])} | {row['x_direct']:.2f} | "
                          f"{row['x_direct_tls']:.2f} | {fmt(row['p50'])} | {fmt(row['p99'])} | "
                          f"{fmt(row['cpu_us'], 1) if proxy else '-'} | {fmt(row['cores'], 2) if proxy else '-'} | "
                          f"{fmt(row['server_us'], 1)} |")
        print()
        for pipeline in pipelines:
            per_round = ", ".join(
                "/".join(fmt(r["rps"][t]) for t in TESTS) for r in results[(pipeline, "hoopgw")]
            )
            print(f"hoopgw -P {pipeline}, SET/GET ops/s per round: {per_round}")
        print()
    return rows


if __name__ == "__main__":
    main()
