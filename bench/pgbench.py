"""
PostgreSQL proxy benchmark: `pgbench -S` and a 1,000,000-row scan against
PostgreSQL directly, through pgbouncer, and through hoopgw run as its own
process (`twistd -n hoopgw`), on the same machine in the same run.

    python bench/pgbench.py [--seconds 20 | --quick] [--rounds 3] [--clients 1,4]
                            [--scale 1] [--no-profile] [--no-scan] [--keep]

Everything is started here and stopped here, also on failure or Ctrl-C: a
throwaway PostgreSQL 15 cluster (TLS on, a SCRAM role "bench"), pgbouncer
(session pooling, client TLS allowed, run as the postgres user since it
refuses root), and the gateway (audit on, sync "batched", the default
policy, a dev token as the password).  Loopback only.

Targets, visited in alternating order within each round:

  direct          libpq -> PostgreSQL, plaintext
  direct+tls      libpq -> PostgreSQL, TLS (sslmode=require)
  pgbouncer       libpq -> pgbouncer -> PostgreSQL, plaintext
  pgbouncer+tls   libpq -TLS-> pgbouncer -> PostgreSQL
  relay+tls       libpq -TLS-> a bare Twisted relay -> PostgreSQL: TLS terminated
                  exactly as hoopgw does it, then bytes copied, nothing parsed,
                  decided or recorded (bench/_pg_relay.py): the floor of the design
  hoopgw          libpq -TLS-> hoopgw -> PostgreSQL (hoopgw always requires TLS)

The same self-signed P-256 certificate serves all three TLS ends, so the
TLS targets pay the same handshake and cipher.  Ratios are computed per
round against that round's direct run (then the median is taken), which
cancels most of the drift of a shared machine.

Latency percentiles come from pgbench's per-transaction log (--log); the
gateway's and pgbouncer's CPU time per transaction from /proc/<pid>/stat.
The profile is py-spy (sampling, --nonblocking) attached to the gateway
process under a 4-client `-S` load, summarised by function.

Prints markdown tables; L{main} returns the rows.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _procs import bench_run, CLK_TCK, cpu_seconds, fmt, median, postgres_gateway_config, start_gateway, status_kib, stop_process, wait_for  # noqa: E402 (bench/ is on sys.path)

from hoopgw.tls import ensure_certificate
from tests.integration._postgres import PG_BIN, PostgresCluster
from tests.integration._process import free_port

PGBENCH = str(PG_BIN / "pgbench")
PSQL = str(PG_BIN / "psql")
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")

ROLE, ROLE_PASSWORD = "bench", "bench-secret"
TARGETS = ("direct", "direct+tls", "pgbouncer", "pgbouncer+tls", "relay+tls", "hoopgw")
SCAN_SQL = "SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g"


# -- small helpers ----------------------------------------------------------------


def cpu_split(pid: int | None) -> tuple[float, float, float]:
    """(user, system, the main thread's user + system) CPU seconds of a process."""
    if pid is None:
        return (0.0, 0.0, 0.0)
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        main = (
            Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        )
    except OSError:
        return (0.0, 0.0, 0.0)
    return (
        int(fields[11]) / CLK_TCK,
        int(fields[12]) / CLK_TCK,
        (int(main[11]) + int(main[12])) / CLK_TCK,
    )


def percentile(ordered: list[int], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[index])




# -- the three servers ------------------------------------------------------------


class Target:
    def __init__(
        self,
        name: str,
        port: int,
        database: str,
        password: str,
        sslmode: str,
        pid: Callable[[], int | None],
    ):
        self.name = name
        self.port = port
        self.database = database
        self.password = password
        self.sslmode = sslmode
        self.pid = pid  # the proxy process whose CPU is counted (None for direct)

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGPASSWORD": self.password,
            "PGSSLMODE": self.sslmode,
            "PGCONNECT_TIMEOUT": "10",
        }

    def conninfo(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", ROLE, self.database]


class Servers:
    """Starts the cluster, pgbouncer and the gateway; C{close} stops whatever was started."""

    def __init__(self, base: Path, scale: int, log: Callable[[str], None]) -> None:
        self.base = base
        self.scale = scale
        self.log = log
        self.stack = contextlib.ExitStack()
        self.cluster: PostgresCluster | None = None
        self.bouncer: subprocess.Popen | None = None
        self.bouncer_pidfile = base / "pgbouncer" / "pgbouncer.pid"
        self.gateway: subprocess.Popen | None = None
        self.gateway_config = base / "gateway" / "hoopgw.toml"
        self.targets: dict[str, Target] = {}

    def close(self) -> None:
        self.stack.close()

    def start(self) -> None:
        cert, key = ensure_certificate(self.base / "tls")
        self._start_postgres(str(cert), str(key))
        self._start_pgbouncer(cert, key)
        self._start_relay(cert, key)
        self._start_gateway(cert, key)

    # PostgreSQL: TLS on, SCRAM for the bench role, pgbench tables.
    def _start_postgres(self, cert: str, key: str) -> None:
        self.log("starting PostgreSQL ...")
        cluster = PostgresCluster(
            hba=[f"host all {ROLE} 127.0.0.1/32 scram-sha-256"],
            roles={ROLE: ROLE_PASSWORD},
            settings={
                "password_encryption": "'scram-sha-256'",
                "max_connections": "50",
            },
            ssl=(cert, key),
        )
        self.stack.callback(cluster.stop)
        cluster.start()
        self.cluster = cluster
        cluster._run(
            PGBENCH,
            "-i",
            "-q",
            "-s",
            str(self.scale),
            "-h",
            str(cluster.socket_dir),
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            "postgres",
        )
        cluster.psql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ROLE}")
        self.targets["direct"] = Target(
            "direct", cluster.port, "postgres", ROLE_PASSWORD, "disable", lambda: None
        )
        self.targets["direct+tls"] = Target(
            "direct+tls",
            cluster.port,
            "postgres",
            ROLE_PASSWORD,
            "require",
            lambda: None,
        )

    # pgbouncer: session pooling, client TLS allowed, plaintext to the server.
    def _start_pgbouncer(self, cert: Path, key: Path) -> None:
        self.log("starting pgbouncer ...")
        assert self.cluster is not None
        directory = self.base / "pgbouncer"
        directory.mkdir()
        shutil.copyfile(cert, directory / "server.crt")
        shutil.copyfile(key, directory / "server.key")
        os.chmod(directory / "server.key", 0o600)
        port = free_port()
        (directory / "userlist.txt").write_text(f'"{ROLE}" "{ROLE_PASSWORD}"\n')
        (directory / "pgbouncer.ini").write_text(
            f"""
[databases]
benchdb = host=127.0.0.1 port={self.cluster.port} dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {directory}/userlist.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = {directory}/pgbouncer.log
pidfile = {self.bouncer_pidfile}
client_tls_sslmode = allow
client_tls_cert_file = {directory}/server.crt
client_tls_key_file = {directory}/server.key
server_tls_sslmode = disable
log_connections = 0
log_disconnections = 0
stats_period = 3600
"""
        )
        argv = [PGBOUNCER, str(directory / "pgbouncer.ini")]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            owner = pwd.getpwnam("postgres")
            for path in [directory, *directory.iterdir()]:
                os.chown(path, owner.pw_uid, owner.pw_gid)
            argv = ["runuser", "-u", "postgres", "--", *argv]
        with open(directory / "stdout.log", "ab") as out:
            self.bouncer = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        bouncer = self.bouncer
        self.stack.callback(stop_process, bouncer, group=True, first=signal.SIGINT)
        try:
            wait_for(
                lambda: self._bouncer_pid() is not None or bouncer.poll() is not None,
                15,
                "pgbouncer",
            )
            if bouncer.poll() is not None:
                raise RuntimeError("pgbouncer exited")
        except RuntimeError:
            log = (
                (directory / "pgbouncer.log").read_text(errors="replace")
                if (directory / "pgbouncer.log").exists()
                else ""
            )
            raise RuntimeError(
                f"pgbouncer did not start:\n{log}\n{(directory / 'stdout.log').read_text(errors='replace')}"
            )
        for name, sslmode in (("pgbouncer", "disable"), ("pgbouncer+tls", "require")):
            self.targets[name] = Target(
                name, port, "benchdb", ROLE_PASSWORD, sslmode, self._bouncer_pid
            )

    def _bouncer_pid(self) -> int | None:
        try:
            return int(self.bouncer_pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    # The floor: Twisted terminating TLS as hoopgw does, then copying bytes.
    def _start_relay(self, cert: Path, key: Path) -> None:
        self.log("starting the bare Twisted TLS relay ...")
        assert self.cluster is not None
        port = free_port()
        log_path = self.base / "relay.log"
        with open(log_path, "ab") as out:
            relay = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("_pg_relay.py")), str(port), str(self.cluster.port), str(cert), str(key)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.stack.callback(stop_process, relay, group=False)
        wait_for(lambda: b"listening" in log_path.read_bytes() or relay.poll() is not None, 30, "relay")
        if relay.poll() is not None:
            raise RuntimeError(f"the relay did not start:\n{log_path.read_text(errors='replace')}")
        self.targets["relay+tls"] = Target(
            "relay+tls", port, "postgres", ROLE_PASSWORD, "require", lambda: relay.pid
        )

    # hoopgw: its own process, audit on (batched sync), default policy.
    def _start_gateway(self, cert: Path, key: Path) -> None:
        self.log("starting hoopgw (twistd) ...")
        assert self.cluster is not None
        directory = self.gateway_config.parent
        directory.mkdir()
        port = free_port()
        self.gateway_config.write_text(
            postgres_gateway_config(
                port=port, cert=cert, key=key, target_port=self.cluster.port, role=ROLE, connections=("benchdb",)
            )
        )
        self.gateway_log = directory / "twistd.log"
        gateway, token = start_gateway(
            self.gateway_config, self.stack, dict(os.environ, HOOPGW_BENCH_PASSWORD=ROLE_PASSWORD)
        )
        self.gateway = gateway
        self.targets["hoopgw"] = Target(
            "hoopgw",
            port,
            "benchdb",
            token,
            "require",
            lambda: gateway.pid,
        )


# -- measurements -------------------------------------------------------------------


def run_pgbench(
    target: Target, clients: int, mode: str, seconds: int, logdir: Path, tag: str
) -> dict[str, float]:
    prefix = logdir / tag
    argv = [
        PGBENCH,
        "-n",
        "-S",
        "-M",
        mode,
        "-c",
        str(clients),
        "-j",
        "1",
        "-T",
        str(seconds),
        "--log",
        f"--log-prefix={prefix}",
        *target.conninfo(),
    ]
    pid = target.pid()
    (u0, s0, m0), t0 = cpu_split(pid), time.monotonic()
    result = subprocess.run(
        check=False,
        args=argv,
        env=target.env(),
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        cwd=str(logdir),
    )
    (u1, s1, m1), t1 = cpu_split(pid), time.monotonic()
    cpu0, cpu1 = u0 + s0, u1 + s1
    if result.returncode != 0:
        raise RuntimeError(
            f"pgbench against {target.name} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    tps_match = re.search(
        r"tps = ([0-9.]+) \(without initial connection time\)", result.stdout
    )
    done = re.search(r"number of transactions actually processed: (\d+)", result.stdout)
    if tps_match is None or done is None:
        raise RuntimeError(f"cannot read pgbench output:\n{result.stdout}")
    latencies: list[int] = []
    for path in logdir.glob(f"{tag}.*"):
        with open(path) as f:
            for line in f:
                latencies.append(int(line.split(None, 3)[2]))
        path.unlink()
    latencies.sort()
    transactions = int(done.group(1))
    return {
        "tps": float(tps_match.group(1)),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "proxy_cpu_us": (cpu1 - cpu0) / transactions * 1e6
        if pid is not None and transactions
        else float("nan"),
        "proxy_cpu_share": (cpu1 - cpu0) / (t1 - t0)
        if pid is not None
        else float("nan"),
        "proxy_sys_fraction": (s1 - s0) / (cpu1 - cpu0)
        if pid is not None and cpu1 > cpu0
        else float("nan"),
        "proxy_main_thread_share": (m1 - m0) / (t1 - t0)
        if pid is not None
        else float("nan"),
    }


def run_scan(target: Target, gateway_pid: int | None) -> dict[str, float]:
    """One 1M-row SELECT * through psql -o /dev/null; samples the proxy's RSS meanwhile."""
    peak = [0]
    stop = threading.Event()
    pid = target.pid()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                peak[0] = max(peak[0], status_kib(pid, "VmRSS"))
            time.sleep(0.01)

    before = status_kib(pid, "VmRSS") if pid else 0
    sampler = threading.Thread(target=sample, daemon=True)
    if pid:
        sampler.start()
    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic()
    result = subprocess.run(
        check=False,
        args=[
            PSQL,
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-o",
            "/dev/null",
            "-c",
            SCAN_SQL,
            *target.conninfo(),
        ],
        env=target.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    stop.set()
    if pid:
        sampler.join()
    if result.returncode != 0:
        raise RuntimeError(
            f"psql scan against {target.name} failed:\n{result.stdout}{result.stderr}"
        )
    return {
        "wall": wall,
        "rss_before_mib": before / 1024 if pid else float("nan"),
        "rss_peak_mib": peak[0] / 1024 if pid else float("nan"),
        "hwm_mib": status_kib(pid, "VmHWM") / 1024 if pid else float("nan"),
        "proxy_cpu_s": cpu if pid else float("nan"),
    }


def profile_gateway(
    servers: Servers, mode: str, seconds: int, logdir: Path, out: Path
) -> dict[str, Any]:
    """py-spy (raw collapsed stacks) on the gateway while pgbench -S -c 4 runs against it."""
    target = servers.targets["hoopgw"]
    assert servers.gateway is not None
    argv = [
        PGBENCH,
        "-n",
        "-S",
        "-M",
        mode,
        "-c",
        "4",
        "-j",
        "1",
        "-T",
        str(seconds + 6),
        *target.conninfo(),
    ]
    load = subprocess.Popen(
        argv,
        env=target.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(logdir),
    )
    try:
        time.sleep(3)
        rate = 200
        spy = subprocess.run(
            check=False,
            args=[
                PY_SPY,
                "record",
                "--pid",
                str(servers.gateway.pid),
                "--duration",
                str(seconds),
                "--rate",
                str(rate),
                "--nonblocking",
                "--format",
                "raw",
                "-o",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        output, _ = load.communicate(timeout=seconds + 120)
    finally:
        stop_process(load, group=False)
    if spy.returncode != 0 or not out.exists():
        raise RuntimeError(
            f"py-spy failed ({spy.returncode}): {spy.stdout}{spy.stderr}"
        )
    tps = re.search(r"tps = ([0-9.]+) \(without", output or "")
    return summarise_profile(out, rate * seconds) | {
        "tps": float(tps.group(1)) if tps else float("nan"),
        "mode": mode,
    }


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> tuple[str, str]:
    """('function (file)', 'function (file:line)') with site-packages paths trimmed."""
    m = _FRAME.match(frame)
    if not m:
        return frame, frame
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    func = f"{m.group('func')} ({path})"
    return func, f"{m.group('func')} ({path}:{m.group('line')})" if m.group(
        "line"
    ) else func


def summarise_profile(path: Path, expected: int) -> dict[str, Any]:
    """
    Self and inclusive samples per function, for the reactor thread only
    (stacks through C{mainLoop}); the other threads (the audit log's
    fdatasync, the thread pool) are counted apart.
    """
    self_time: Counter[str] = Counter()
    self_lines: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    others: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        if not frames:
            continue
        # (py-spy names methods with their class in some versions, not in others.)
        if not any(f[0].startswith(("ReactorBase.mainLoop ", "mainLoop (twisted/internet/base.py)")) for f in frames):
            others[frames[-1][0]] += n
            continue
        total += n
        self_time[frames[-1][0]] += n
        self_lines[frames[-1][1]] += n
        for func in {f[0] for f in frames}:
            inclusive[func] += n
    other = sum(others.values())
    return {
        "samples": total,
        "busy": total / expected if expected else float("nan"),
        "other_samples": other,
        "other_busy": other / expected if expected else float("nan"),
        "others": others.most_common(5),
        "self": self_time.most_common(25),
        "self_lines": self_lines.most_common(15),
        "inclusive": inclusive.most_common(40),
    }


# -- the run --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=int, default=20, help="pgbench -T per run (default 20)"
    )
    parser.add_argument("--quick", action="store_true", help="5-second runs")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds; medians are taken over them (default 3)",
    )
    parser.add_argument("--clients", default="1,4", help="client counts (default 1,4)")
    parser.add_argument(
        "--modes",
        default="simple,prepared",
        help="pgbench -M modes (default simple,prepared)",
    )
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}"
    )
    parser.add_argument(
        "--scale", type=int, default=1, help="pgbench -i scale (default 1)"
    )
    parser.add_argument(
        "--scan-rounds",
        type=int,
        default=3,
        help="rounds of the 1M-row scan (default 3)",
    )
    parser.add_argument("--no-scan", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--profile-seconds", type=int, default=10)
    parser.add_argument(
        "--profile-dir",
        default=None,
        help="where to keep py-spy's raw stacks (default: a temp dir, deleted)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (logs, audit trail)",
    )
    args = parser.parse_args([] if argv is None else argv)
    seconds = 5 if args.quick else args.seconds
    clients = [int(c) for c in args.clients.split(",")]
    modes = args.modes.split(",")
    names = [t for t in args.targets.split(",") if t]
    for name in names:
        if name not in TARGETS:
            parser.error(f"unknown target {name!r}")
    if "direct" not in names:
        names.insert(0, "direct")

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    base = Path(tempfile.mkdtemp(prefix="hoopgw-pgbench-"))
    os.chmod(base, 0o755)  # the postgres user runs pgbouncer from inside it
    servers = Servers(base, args.scale, log)
    rows: list[dict[str, Any]] = []
    with bench_run(servers, base, keep=args.keep):
        logdir = base / "logs"
        logdir.mkdir()

        # pgbench -S: every (clients, mode) in every round, targets in alternating order.
        results: dict[tuple[str, int, str], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            if r % 2:
                order.reverse()
            for c in clients:
                for mode in modes:
                    for name in order:
                        run = run_pgbench(
                            servers.targets[name],
                            c,
                            mode,
                            seconds,
                            logdir,
                            f"{name}-{c}-{mode}-{r}",
                        )
                        results.setdefault((name, c, mode), []).append(run)
                        log(
                            f"round {r + 1}/{args.rounds} -c {c} -M {mode} {name}: {run['tps']:,.0f} tps, "
                            f"p50 {run['p50']:.0f} us, p99 {run['p99']:.0f} us"
                        )

        print(
            f"### pgbench -S, {seconds} s per run, median of {args.rounds} rounds (scale {args.scale}, -j 1)\n"
        )
        print(
            "| clients | mode | target | TPS | × direct | × direct+tls | p50 µs | p99 µs | +p50 vs direct µs | +p50 vs direct+tls µs | +p99 vs direct+tls µs | proxy CPU µs/tx | proxy CPU (cores) | of it kernel | proxy main thread (cores) |"
        )
        print(
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )
        for c in clients:
            for mode in modes:
                direct = results[("direct", c, mode)]
                tls = results.get(("direct+tls", c, mode))
                for name in names:
                    runs = results[(name, c, mode)]
                    row = {
                        "benchmark": "pgbench -S",
                        "clients": c,
                        "mode": mode,
                        "target": name,
                        "tps": median([x["tps"] for x in runs]),
                        "x_direct": median(
                            [x["tps"] / d["tps"] for x, d in zip(runs, direct)]
                        ),
                        "x_direct_tls": median(
                            [x["tps"] / d["tps"] for x, d in zip(runs, tls)]
                        )
                        if tls
                        else float("nan"),
                        "p50_us": median([x["p50"] for x in runs]),
                        "p99_us": median([x["p99"] for x in runs]),
                        "added_p50_us": median(
                            [x["p50"] - d["p50"] for x, d in zip(runs, direct)]
                        ),
                        "added_p50_vs_tls_us": median(
                            [x["p50"] - d["p50"] for x, d in zip(runs, tls)]
                        )
                        if tls
                        else float("nan"),
                        "added_p99_vs_tls_us": median(
                            [x["p99"] - d["p99"] for x, d in zip(runs, tls)]
                        )
                        if tls
                        else float("nan"),
                        "proxy_cpu_us_per_tx": median(
                            [x["proxy_cpu_us"] for x in runs]
                        ),
                        "proxy_cpu_cores": median([x["proxy_cpu_share"] for x in runs]),
                        "proxy_sys_fraction": median(
                            [x["proxy_sys_fraction"] for x in runs]
                        ),
                        "proxy_main_thread_cores": median(
                            [x["proxy_main_thread_share"] for x in runs]
                        ),
                        "tps_runs": [round(x["tps"]) for x in runs],
                    }
                    rows.append(row)
                    print(
                        f"| {c} | {mode} | {name} | {fmt(row['tps'])} | {fmt(row['x_direct'], 2)} | {fmt(row['x_direct_tls'], 2)} "
                        f"| {fmt(row['p50_us'])} | {fmt(row['p99_us'])} | {fmt(row['added_p50_us'])} | {fmt(row['added_p50_vs_tls_us'])} "
                        f"| {fmt(row['added_p99_vs_tls_us'])} | {fmt(row['proxy_cpu_us_per_tx'], 1)} | {fmt(row['proxy_cpu_cores'], 2)} "
                        f"| {fmt(row['proxy_sys_fraction'] * 100)}{'' if math.isnan(row['proxy_sys_fraction']) else ' %'} "
                        f"| {fmt(row['proxy_main_thread_cores'], 2)} |"
                    )
        print()

        # The 1M-row scan.
        if not args.no_scan:
            scan_names = [
                n
                for n in ("direct", "direct+tls", "pgbouncer+tls", "hoopgw")
                if n in names
            ]
            scans: dict[str, list[dict[str, float]]] = {}
            for r in range(args.scan_rounds):
                order = scan_names if r % 2 == 0 else list(reversed(scan_names))
                for name in order:
                    scan = run_scan(servers.targets[name], None)
                    scans.setdefault(name, []).append(scan)
                    log(
                        f"scan round {r + 1}/{args.scan_rounds} {name}: {scan['wall']:.2f} s, proxy RSS peak {scan['rss_peak_mib']:.1f} MiB"
                    )
            print(
                f"### 1,000,000-row `SELECT *` via `psql -o /dev/null`, median of {args.scan_rounds} rounds\n"
            )
            print(f"`{SCAN_SQL}` (~{1_000_000 * 118 / 1e6:.0f} MB of DataRows)\n")
            print(
                "| target | wall s | × direct | × direct+tls | proxy RSS before MiB | proxy RSS peak MiB | proxy VmHWM MiB | proxy CPU s |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            for name in scan_names:
                runs = scans[name]
                row = {
                    "benchmark": "scan 1M rows",
                    "target": name,
                    "wall_s": median([x["wall"] for x in runs]),
                    "x_direct": median(
                        [x["wall"] / d["wall"] for x, d in zip(runs, scans["direct"])]
                    ),
                    "x_direct_tls": median(
                        [
                            x["wall"] / d["wall"]
                            for x, d in zip(runs, scans["direct+tls"])
                        ]
                    )
                    if "direct+tls" in scans
                    else float("nan"),
                    "rss_before_mib": median([x["rss_before_mib"] for x in runs]),
                    "rss_peak_mib": max(x["rss_peak_mib"] for x in runs),
                    "hwm_mib": max(x["hwm_mib"] for x in runs),
                    "proxy_cpu_s": median([x["proxy_cpu_s"] for x in runs]),
                    "wall_runs": [round(x["wall"], 2) for x in runs],
                }
                rows.append(row)
                print(
                    f"| {name} | {fmt(row['wall_s'], 2)} | {fmt(row['x_direct'], 2)} | {fmt(row['x_direct_tls'], 2)} | {fmt(row['rss_before_mib'], 1)} "
                    f"| {fmt(row['rss_peak_mib'], 1)} | {fmt(row['hwm_mib'], 1)} | {fmt(row['proxy_cpu_s'], 2)} |"
                )
            print()

        # The profile.
        if not args.no_profile and "hoopgw" in names:
            if not os.path.exists(PY_SPY):
                print("(py-spy not found: `pip install py-spy` for the profile)\n")
            else:
                keep = Path(args.profile_dir) if args.profile_dir else logdir
                keep.mkdir(parents=True, exist_ok=True)
                for mode in modes:
                    log(f"profiling hoopgw under pgbench -S -c 4 -M {mode} ...")
                    out = keep / f"hoopgw-profile-{mode}.txt"
                    summary = profile_gateway(
                        servers, mode, args.profile_seconds, logdir, out
                    )
                    rows.append({"benchmark": "profile"} | summary)
                    samples = summary["samples"] or 1
                    print(
                        f"### py-spy on the gateway, pgbench -S -c 4 -M {mode} ({summary['tps']:,.0f} TPS while sampled)\n"
                    )
                    print(
                        f"Reactor thread: {samples:,} non-idle samples at 200 Hz over {args.profile_seconds} s "
                        f"= busy {summary['busy']:.0%} of the time; other threads (audit fdatasync, pool): "
                        f"{summary['other_busy']:.0%} ({', '.join(f'{f} {n}' for f, n in summary['others'][:3])}). "
                        "Percentages below are of the reactor thread's samples.\n"
                    )
                    if args.profile_dir:
                        print(f"(raw stacks: {out})\n")
                    print("| self % | function |")
                    print("|---:|---|")
                    for func, n in summary["self"][:20]:
                        print(f"| {n / samples:.1%} | `{func}` |")
                    print()
                    print("| inclusive % | function |")
                    print("|---:|---|")
                    for func, n in summary["inclusive"][:40]:
                        print(f"| {n / samples:.1%} | `{func}` |")
                    print()
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
