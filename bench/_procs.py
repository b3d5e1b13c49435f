"""
What the benchmarks that run servers as separate processes share: reading a
process's CPU time and memory from /proc, waiting for a condition, stopping
what they started.  Benchmarks block by design (they drive real clients),
so these do too.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        # The command name may hold spaces: fields start after its ")".
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = _stat_fields(pid) if pid is not None else None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if fields else 0.0


def cpu_system(pid: int | None) -> float:
    """System (kernel) CPU time of a process."""
    fields = _stat_fields(pid) if pid is not None else None
    return int(fields[12]) / CLK_TCK if fields else 0.0


def status_kib(pid: int, key: str) -> int:
    """A /proc/PID/status value in KiB (VmRSS, VmHWM, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def stop_process(process: subprocess.Popen, *, group: bool, first: int = signal.SIGTERM, grace: float = 20) -> None:
    """Stop one process we started (or its own process group), politely first."""
    if process.poll() is not None:
        return
    for sig, wait in ((first, grace), (signal.SIGKILL, 10)):
        try:
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextlib.contextmanager
def bench_run(servers: Any, base: Path, *, keep: bool) -> Iterator[None]:
    """
    Start C{servers} (an object with start() and close()) for one benchmark
    run; whatever happens — an error, Ctrl-C, SIGTERM or SIGHUP — close them
    and remove C{base} (unless C{keep}).  Prints the load average at start
    and end, since this machine is shared.
    """
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in previous:
        signal.signal(sig, interrupted)
    try:
        servers.start()
        load_start = loadavg()
        yield
        print(f"(load average at start {load_start}, at end {loadavg()})\n")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            servers.close()
        finally:
            if keep:
                print(f"(kept {base})", file=sys.stderr)
            else:
                shutil.rmtree(base, ignore_errors=True)


ROOT = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
HOOPGW = [sys.executable, "-c", "import sys; from hoopgw.cli import main; sys.exit(main())"]


def postgres_gateway_config(
    *, port: int, cert: Path, key: Path, target_port: int, role: str, connections: tuple[str, ...], policies: str = "",
    api_port: int | None = None,
) -> str:
    """
    A gateway configuration for PostgreSQL benchmarks: one listener on
    C{port}, audit on (batched sync), the target's C{role} (its password in
    C{HOOPGW_BENCH_PASSWORD}) behind each named connection; the API
    listener on C{api_port} when given.
    """
    blocks = "".join(
        f"""
[[connections]]
name = "{name}"
kind = "postgres"
address = "127.0.0.1:{target_port}"
database = "postgres"
user = "{role}"
password_env = "HOOPGW_BENCH_PASSWORD"
tls = "disable"
"""
        for name in connections
    )
    folder = f'policies = "{policies}"' if policies else ""
    api = f'"tcp:{api_port}:interface=127.0.0.1"' if api_port else "false"
    return f"""
[gateway]
name = "bench"
data_dir = "data"
{folder}

[listen]
postgres = "tcp:{port}:interface=127.0.0.1"
ssh = false
http = false
api = {api}

[tls]
cert_file = "{cert}"
key_file = "{key}"

[audit]
sync = "batched"
{blocks}"""


def start_gateway(config: Path, stack: contextlib.ExitStack, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """
    Run the gateway of C{config} (C{twistd -n hoopgw}, in the config's
    folder, logging to twistd.log there) until C{stack} closes; wait for its
    "hoopgw ready" line; return the process and a dev token for "bench".
    """
    directory = config.parent
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}
    log = directory / "twistd.log"
    offset = log.stat().st_size if log.exists() else 0  # a restart appends: only this run's lines count
    with open(log, "ab") as out:
        gateway = subprocess.Popen(
            TWISTD + ["-n", "--pidfile=", "hoopgw", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=str(directory), env=env, start_new_session=True,
        )
    stack.callback(stop_process, gateway, group=False)
    wait_for(lambda: b"hoopgw ready" in log.read_bytes()[offset:] or gateway.poll() is not None, 60, "hoopgw")
    if gateway.poll() is not None:
        raise RuntimeError(f"hoopgw did not start (exited):\n{log.read_text(errors='replace')}")
    return gateway, issue_token(config, env, "bench")


def issue_token(config: Path, env: dict[str, str], sub: str, groups: tuple[str, ...] = ()) -> str:
    """A dev-issuer token (one hour) for C{sub} in C{groups}, from C{hoopgw token issue} on C{config}."""
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}
    argv = HOOPGW + ["--config", str(config), "token", "issue", "--sub", sub, "--ttl", "1h"]
    for group in groups:
        argv += ["--group", group]
    token = subprocess.run(
        argv, capture_output=True, text=True, cwd=str(config.parent), env=env, timeout=60, check=False,
    )
    if token.returncode != 0:
        raise RuntimeError(f"hoopgw token issue failed: {token.stderr}")
    return token.stdout.strip()

