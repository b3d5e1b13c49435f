"""
SSH proxy benchmark: bulk throughput and idle-session memory of hoopgw's SSH
front end, against OpenSSH's sshd directly, on the same machine in the same
run, with hoopgw run as its own process (`twistd -n hoopgw`).

    python bench/ssh.py [--quick] [--rounds 3] [--download-mib 1024]
                        [--upload-mib 256] [--sessions 200] [--no-profile]
                        [--profile-seconds 10] [--profile-dir DIR] [--keep]

Everything is started here and stopped here, also on failure or Ctrl-C: a
throwaway OpenSSH sshd on loopback (its own host key; `Ciphers aes128-ctr`
and `MACs hmac-sha2-256`, so the gateway's Conch target leg negotiates the
same cipher and MAC as a direct client; generous MaxStartups/MaxSessions),
and the gateway (audit on, sync "batched", the default policy, one
`[[connections]]` to the sshd with a key, the client's key mapped in
`[[identity.ssh_keys]]`).  Every OpenSSH client runs with
`-c aes128-ctr -m hmac-sha2-256`, direct and through the gateway.

Measurements (direct and gateway alternate within each round; medians):

  download   ssh HOST 'head -c <N> /dev/zero' > /dev/null
  scp        scp <N>-byte file HOST:dir/     (SFTP mode, OpenSSH 9's default)
  scp -O     the same with the legacy protocol (`scp -t` on the target)
  sessions   N concurrent `ssh HOST 'read x || true'` held through the gateway:
             the gateway's RSS before / with them / after they end
  profile    py-spy on the gateway during 1 GiB downloads

Wall times include the login (a separate `ssh HOST true` is timed too); the
gateway's CPU comes from /proc/<pid>/stat (user + system, all threads), the
clients' from getrusage(RUSAGE_CHILDREN).  MB = 10^6 bytes.

Prints markdown tables; L{main} returns the rows.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import pwd
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _procs import bench_run, cpu_seconds, cpu_system, fmt, median, status_kib, stop_process, wait_for  # noqa: E402 (bench/ is on sys.path)

SSHD = "/usr/sbin/sshd"
SSH = shutil.which("ssh") or "/usr/bin/ssh"
SCP = shutil.which("scp") or "/usr/bin/scp"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

CIPHER, MAC = "aes128-ctr", "hmac-sha2-256"
CONNECTION = "bench"
MiB = 1024 * 1024


# Experiments, off by default: start the gateway with Conch's default
# channel window (128 KiB) and hoopgw's HIGH_WATER (4 MiB) replaced, and/or
# with an explicit info-level --logger (hoopgw's own default since
# `--log-level`), to measure what they would give.  hoopgw's code is not changed; the patch
# lives only in this gateway process.
PATCH = """
import sys
from twisted.conch.ssh import channel
from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate, textFileLogObserver
import hoopgw.protocols.ssh.channels as relay
WINDOW, HIGH_WATER = {window}, {high_water}
def observer():
    return FilteringLogObserver(textFileLogObserver(sys.stdout), [LogLevelFilterPredicate(LogLevel.info)])
if HIGH_WATER:
    relay.HIGH_WATER = HIGH_WATER
if WINDOW:
    _init = channel.SSHChannel.__init__
    def __init__(self, localWindow=0, *args, **kwargs):
        _init(self, localWindow or WINDOW, *args, **kwargs)
    channel.SSHChannel.__init__ = __init__
from twisted.scripts.twistd import run
run()
"""


def twistd_argv(window: int, high_water: int, log_info: bool) -> list[str]:
    if not window and not high_water and not log_info:
        return TWISTD
    argv = [sys.executable, "-c", PATCH.format(window=window, high_water=high_water)]
    return argv + (["--logger", "__main__.observer"] if log_info else [])


# -- small helpers ----------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def new_key(path: Path) -> str:
    """An Ed25519 key pair (no passphrase); returns the public line."""
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path.with_name(path.name + ".pub").read_text().strip()


# -- the servers --------------------------------------------------------------------


class Servers:
    """The bench sshd and the gateway; C{close} stops whatever was started."""

    def __init__(self, base: Path, window: int = 0, high_water: int = 0, log_info: bool = False) -> None:
        self.base = base
        self.log_info = log_info
        self.window = window
        self.high_water = high_water
        self.stack = contextlib.ExitStack()
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.sshd: subprocess.Popen | None = None
        self.sshd_port = 0
        self.gateway: subprocess.Popen | None = None
        self.gateway_port = 0
        self.api_port = 0
        self.client_key = base / "client_key"

    def close(self) -> None:
        self.stack.close()

    def start(self) -> None:
        host_public = new_key(self.base / "sshd_host_ed25519")
        target_public = new_key(self.base / "target_key")
        client_public = new_key(self.client_key)
        # Direct clients log in with the client key; the gateway with its own.
        (self.base / "authorized_keys").write_text(f"{target_public}\n{client_public}\n")
        (self.base / "remote").mkdir()
        self._start_sshd()
        self._start_gateway(host_public, client_public)

    def _start_sshd(self) -> None:
        log("starting sshd ...")
        self.sshd_port = free_port()
        config = self.base / "sshd_config"
        config.write_text(
            f"""
Port {self.sshd_port}
ListenAddress 127.0.0.1
HostKey {self.base / "sshd_host_ed25519"}
PidFile none
StrictModes no
AuthorizedKeysFile {self.base / "authorized_keys"}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
UseDNS no
X11Forwarding no
AllowTcpForwarding no
Ciphers {CIPHER}
MACs {MAC}
MaxStartups 1000
MaxSessions 1000
LogLevel DEBUG1
Subsystem sftp {SFTP_SERVER}
"""
        )
        if os.getuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.sshd_log = self.base / "sshd.log"
        self.sshd = subprocess.Popen(
            [SSHD, "-D", "-f", str(config), "-E", str(self.sshd_log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            start_new_session=True,
        )
        # Its own process group: the per-connection children go with it.
        self.stack.callback(stop_process, self.sshd, group=True)
        sshd = self.sshd
        wait_for(
            lambda: sshd.poll() is not None
            or (self.sshd_log.exists() and b"Server listening" in self.sshd_log.read_bytes()),
            15,
            "sshd",
        )
        if sshd.poll() is not None:
            raise RuntimeError(f"sshd exited:\n{self.sshd_log.read_text(errors='replace')}")

    def _start_gateway(self, host_public: str, client_public: str) -> None:
        log("starting hoopgw (twistd) ...")
        directory = self.base / "gateway"
        directory.mkdir()
        self.gateway_port, self.api_port = free_port(), free_port()
        self.gateway_config = directory / "hoopgw.toml"
        self.gateway_config.write_text(
            f"""
[gateway]
name = "bench"
data_dir = "data"

[listen]
ssh = "tcp:{self.gateway_port}:interface=127.0.0.1"
api = "tcp:{self.api_port}:interface=127.0.0.1"
postgres = false
http = false

[audit]
sync = "batched"

[[identity.ssh_keys]]
subject = "bench"
groups = ["dev"]
public_key = "{client_public}"

[[connections]]
name = "{CONNECTION}"
kind = "ssh"
address = "127.0.0.1:{self.sshd_port}"
user = "{self.user}"
key_file = "{self.base / 'target_key'}"
host_key = "{host_public}"
"""
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.gateway_log = directory / "twistd.log"
        with open(self.gateway_log, "ab") as out:
            self.gateway = subprocess.Popen(
                twistd_argv(self.window, self.high_water, self.log_info) + ["-n", "--pidfile=", "hoopgw", "--config", str(self.gateway_config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(directory),
                env=env,
                start_new_session=True,
            )
        gateway = self.gateway
        self.stack.callback(stop_process, gateway, group=False)
        try:
            wait_for(
                lambda: b"hoopgw ready" in self.gateway_log.read_bytes() or gateway.poll() is not None,
                60,
                "hoopgw",
            )
            if gateway.poll() is not None:
                raise RuntimeError("exited")
        except RuntimeError as e:
            raise RuntimeError(f"hoopgw did not start ({e}):\n{self.gateway_log.read_text(errors='replace')}")

    # -- targets --

    def target(self, name: str) -> tuple[str, int]:
        """(SSH user, port) of a target."""
        if name == "direct":
            return self.user, self.sshd_port
        return CONNECTION, self.gateway_port

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/metrics", timeout=10) as response:
            return response.read().decode("utf-8", "replace")

    def sessions_active(self) -> int:
        m = re.search(r'^hoopgw_sessions_active\{kind="ssh"\} ([0-9.e+]+)$', self.metrics(), re.M)
        return int(float(m.group(1))) if m else -1


# -- clients -------------------------------------------------------------------------


def client_options(servers: Servers, *, port_flag: str = "-p", port: int) -> list[str]:
    return [
        "-F", "/dev/null",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
        "-o", "LogLevel=ERROR",
        "-i", str(servers.client_key),
        "-c", CIPHER, "-o", f"MACs={MAC}",
        port_flag, str(port),
    ]


def client_env(servers: Servers) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(servers.base)}


def ssh_argv(servers: Servers, target: str, *args: str) -> list[str]:
    user, port = servers.target(target)
    return [SSH, *client_options(servers, port=port), *args[:-1], f"{user}@127.0.0.1", args[-1]]


def timed(servers: Servers, argv: list[str], *, timeout: float, stdout: Any = subprocess.DEVNULL) -> dict[str, float]:
    """Run one client to completion; wall time, the gateway's and the clients' CPU."""
    pid = servers.gateway.pid if servers.gateway else None
    g0, k0, c0, t0 = cpu_seconds(pid), cpu_system(pid), children_cpu(), time.monotonic()
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE,
        env=client_env(servers), timeout=timeout, check=False,
    )
    t1, g1, k1, c1 = time.monotonic(), cpu_seconds(pid), cpu_system(pid), children_cpu()
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    return {"wall": t1 - t0, "gateway_cpu": g1 - g0, "gateway_sys": k1 - k0, "client_cpu": c1 - c0}


def run_download(servers: Servers, target: str, size: int) -> dict[str, float]:
    return timed(servers, ssh_argv(servers, target, f"head -c {size} /dev/zero"), timeout=600) | {"bytes": size}


def run_scp(servers: Servers, target: str, source: Path, legacy: bool) -> dict[str, float]:
    user, port = servers.target(target)
    destination = servers.base / "remote" / f"upload-{target}"
    argv = [SCP, *(["-O"] if legacy else []), "-q", *client_options(servers, port_flag="-P", port=port),
            str(source), f"{user}@127.0.0.1:{destination}"]
    try:
        result = timed(servers, argv, timeout=600)
        size = destination.stat().st_size
        if size != source.stat().st_size:
            raise RuntimeError(f"scp to {target}: {size} bytes arrived of {source.stat().st_size}")
    finally:
        with contextlib.suppress(OSError):
            destination.unlink()
    return result | {"bytes": size}


def run_login(servers: Servers, target: str) -> dict[str, float]:
    return timed(servers, ssh_argv(servers, target, "true"), timeout=60) | {"bytes": 0}


def negotiated(servers: Servers, target: str) -> str:
    """The cipher and MAC the client leg negotiated (from ssh -v)."""
    argv = ssh_argv(servers, target, "true")
    argv[argv.index("LogLevel=ERROR")] = "LogLevel=DEBUG1"
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=client_env(servers), timeout=60, check=False)
    found = sorted(set(re.findall(rb"kex: (server->client|client->server) cipher: (\S+) MAC: (\S+)", result.stderr)))
    return ", ".join(f"{d.decode()} {c.decode()}/{m.decode()}" for d, c, m in found) or "?"


def target_leg_ciphers(servers: Servers) -> list[str]:
    """What sshd negotiated, per client software (OpenSSH direct, Conch for the gateway)."""
    text = servers.sshd_log.read_text(errors="replace")
    seen: dict[str, set[str]] = {}
    peer = "?"
    for line in text.splitlines():
        m = re.search(r"Remote protocol version [^,]+, remote software version (\S+)", line)
        if m:
            peer = m.group(1)
        m = re.search(r"kex: (client->server|server->client) cipher: (\S+) MAC: (\S+)", line)
        if m:
            seen.setdefault(peer, set()).add(f"{m.group(1)} {m.group(2)}/{m.group(3)}")
    return [f"{peer}: {', '.join(sorted(v))}" for peer, v in seen.items()]


# -- idle sessions ---------------------------------------------------------------------


def hold_sessions(servers: Servers, count: int, logfile: Path) -> dict[str, Any]:
    """
    C{count} concurrent C{ssh HOST 'read x || true'} through the gateway, stdin held
    open, started at most 16 logins at a time; the gateway's RSS before, once
    all are established, and after they have ended (stdin closed: C{read}
    sees EOF, the command exits 0, every session ends cleanly).
    """
    assert servers.gateway is not None
    pid = servers.gateway.pid
    # One session first, so lazily imported code and first-use caches are in "before".
    run_login(servers, "hoopgw")
    wait_for(lambda: servers.sessions_active() == 0, 30, "the warm-up session to end")
    time.sleep(1)
    before_rss, before_fds = status_kib(pid, "VmRSS"), open_fds(pid)
    cpu0 = cpu_seconds(pid)
    clients: list[subprocess.Popen] = []
    errors = open(logfile, "ab")
    t0 = time.monotonic()
    try:
        argv = ssh_argv(servers, "hoopgw", "read x || true")
        for i in range(count):
            # Bounded: no more than 16 logins in flight at once.
            wait_for(lambda: servers.sessions_active() >= i - 16, 120, f"session {i - 16} to open", interval=0.02)
            clients.append(
                subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=client_env(servers))
            )
            dead = [c for c in clients if c.poll() is not None]
            if dead:
                raise RuntimeError(f"{len(dead)} ssh clients exited early (see {logfile})")
        wait_for(lambda: servers.sessions_active() >= count, 120, f"{count} sessions", interval=0.1)
        # The gauge counts logged-in sessions; the command runs once the exec
        # is decided and written: wait for every ssh.exec action.start.
        audit_dir = servers.gateway_config.parent / "data" / "audit"

        def execs_started() -> int:
            from hoopgw.audit.search import search

            return sum(1 for r in search(audit_dir, event="action.start") if r["action"]["input"] == "read x || true")

        wait_for(lambda: execs_started() >= count, 120, f"{count} ssh.exec actions", interval=0.5)
        established = time.monotonic() - t0
        login_cpu = cpu_seconds(pid) - cpu0
        dead = [c for c in clients if c.poll() is not None]
        if dead:
            raise RuntimeError(f"{len(dead)} ssh clients exited early (see {logfile})")
        time.sleep(2)  # let the reactor settle; sample RSS a few times
        samples = []
        for _ in range(5):
            samples.append(status_kib(pid, "VmRSS"))
            time.sleep(0.2)
        held_rss, held_fds = median(samples), open_fds(pid)
        idle0, t_idle = cpu_seconds(pid), time.monotonic()
        time.sleep(3)
        idle_cpu = (cpu_seconds(pid) - idle0) / (time.monotonic() - t_idle)
        # Tear down: EOF on every stdin, so each `read x || true` ends with status 0.
        t1 = time.monotonic()
        for c in clients:
            with contextlib.suppress(OSError):
                c.stdin.close()
        for c in clients:
            try:
                c.wait(60)
            except subprocess.TimeoutExpired:
                pass
        codes = Counter(c.poll() for c in clients)
        wait_for(lambda: servers.sessions_active() == 0, 60, "every session to end", interval=0.1)
        teardown = time.monotonic() - t1
        time.sleep(2)
        after_rss, after_fds = status_kib(pid, "VmRSS"), open_fds(pid)
    finally:
        for c in clients:
            if c.poll() is None:
                with contextlib.suppress(OSError, ValueError):
                    c.stdin.close()
                stop_process(c, group=False)
        errors.close()
    return {
        "sessions": count,
        "established_s": established,
        "login_cpu_ms": login_cpu / count * 1000,
        "rss_before_mib": before_rss / 1024,
        "rss_held_mib": held_rss / 1024,
        "rss_after_mib": after_rss / 1024,
        "kib_per_session": (held_rss - before_rss) / count,
        "fds_before": before_fds,
        "fds_held": held_fds,
        "fds_after": after_fds,
        "idle_cpu_cores": idle_cpu,
        "teardown_s": teardown,
        "exit_codes": dict(codes),
        "hwm_mib": status_kib(pid, "VmHWM") / 1024,
    }


# -- profile -----------------------------------------------------------------------------


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> tuple[str, str, str]:
    """(function, short file, 'function (file:line)') with site-packages paths trimmed."""
    m = _FRAME.match(frame)
    if not m:
        return frame, "", frame
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    line = m.group("line")
    return m.group("func"), path, f"{m.group('func')} ({path}:{line})" if line else f"{m.group('func')} ({path})"


# Where a reactor-thread sample is, judged by its innermost frame.
def category(qualified: str, path: str) -> str:
    func = qualified.rsplit(".", 1)[-1]
    if path.endswith("twisted/conch/ssh/transport.py"):
        if func in ("encrypt", "decrypt"):
            return "AES-CTR (cryptography, called per packet)"
        if func in ("makeMAC", "verify"):
            return "HMAC-SHA2-256 (stdlib hmac, per packet)"
        return "Conch transport framing (sendPacket, getPacket, dataReceived)"
    if path == "hmac.py":
        return "HMAC-SHA2-256 (stdlib hmac, per packet)"
    if path.startswith("cryptography/"):
        return "AES-CTR (cryptography, called per packet)"
    if path.startswith("twisted/conch/"):
        return "Conch connection and channel (connection.py, channel.py)"
    if path.startswith("hoopgw/protocols/ssh/"):
        return "hoopgw channel relay (hoopgw/protocols/ssh)"
    if path.startswith(("hoopgw/audit/", "hoopgw/sessions")):
        return "audit and sessions"
    if path.startswith("hoopgw/"):
        return "hoopgw, other"
    if func == "doPoll":
        return "epoll_wait (waiting; py-spy counts it as not idle)"
    if func in ("writeSomeData", "untilConcludes"):
        return "socket send(2) (loopback: includes the receiver's TCP work)"
    if func in ("doRead", "_dataReceived"):
        return "socket recv(2)"
    if path.startswith(("twisted/internet/", "twisted/python/", "twisted/logger/")):
        return "Twisted reactor, write buffers, logging context"
    return f"other ({path or func})"


def summarise_profile(path: Path, expected: int) -> dict[str, Any]:
    self_lines: Counter[str] = Counter()
    categories: Counter[str] = Counter()
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
        if not any(f[0] == "ReactorBase.mainLoop" or f[0] == "mainLoop" for f in frames):
            others[frames[-1][2]] += n
            continue
        total += n
        func, file, where = frames[-1]
        categories[category(func, file)] += n
        self_lines[where] += n
        for label in {f"{f[0]} ({f[1]})" for f in frames}:
            inclusive[label] += n
    other = sum(others.values())
    return {
        "samples": total,
        "busy": total / expected if expected else float("nan"),
        "other_busy": other / expected if expected else float("nan"),
        "others": others.most_common(3),
        "categories": categories.most_common(),
        "self_lines": self_lines.most_common(20),
        "inclusive": inclusive.most_common(30),
    }


PERF = shutil.which("perf")

LIBRARIES = {
    "libpython": "CPython interpreter (Conch, Twisted, hoopgw Python code)",
    "[kernel": "kernel (TCP send/recv on loopback, epoll, scheduling)",
    "libcrypto": "OpenSSL libcrypto (HMAC-SHA-256 via hashlib/hmac; also AES)",
    "libc.so": "libc (memmove of bytes copies, malloc)",
    "_rust": "cryptography's Rust binding (AES-CTR `update`)",
}


def perf_by_library(pid: int, seconds: int, out: Path) -> list[tuple[str, float]]:
    """On-CPU samples of the gateway by shared object (perf record -F 499), as (name, share)."""
    if PERF is None:
        return []
    record = subprocess.run([PERF, "record", "-q", "-F", "499", "-p", str(pid), "-o", str(out), "--", "sleep", str(seconds)],
                            capture_output=True, text=True, timeout=seconds + 60, check=False)
    if record.returncode != 0:
        log(f"perf record failed: {record.stderr.strip()[:200]}")
        return []
    report = subprocess.run([PERF, "report", "-i", str(out), "--no-children", "--sort", "dso", "--stdio"],
                            capture_output=True, text=True, timeout=120, check=False)
    split: Counter[str] = Counter()
    for line in report.stdout.splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+(\S+)", line)
        if not m:
            continue
        name = next((label for key, label in LIBRARIES.items() if m.group(2).startswith(key)), "other")
        split[name] += float(m.group(1)) / 100
    return split.most_common()


def profile_gateway(servers: Servers, seconds: int, size: int, out: Path, use_perf: bool = True) -> dict[str, Any]:
    """py-spy (raw stacks, --nonblocking) on the gateway while 1 GiB downloads run back to back."""
    assert servers.gateway is not None
    stop = threading.Event()
    done: list[dict[str, float]] = []
    failure: list[BaseException] = []

    def load() -> None:
        while not stop.is_set():
            try:
                done.append(run_download(servers, "hoopgw", size))
            except BaseException as e:  # noqa: BLE001 - reported below
                failure.append(e)
                return

    thread = threading.Thread(target=load, daemon=True)
    pid = servers.gateway.pid
    thread.start()
    try:
        time.sleep(2)
        rate = 200
        g0, t0 = cpu_seconds(pid), time.monotonic()
        spy = subprocess.run(
            [PY_SPY, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate),
             "--nonblocking", "--format", "raw", "-o", str(out)],
            capture_output=True, text=True, timeout=seconds + 60, check=False,
        )
        cores = (cpu_seconds(pid) - g0) / (time.monotonic() - t0)
        perf_split = perf_by_library(pid, seconds, out.with_suffix(".perf")) if use_perf else []
    finally:
        stop.set()
        thread.join(timeout=600)
    if failure:
        raise RuntimeError(f"download during the profile failed: {failure[0]}")
    if spy.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {spy.stdout}{spy.stderr}")
    rates = [d["bytes"] / d["wall"] / 1e6 for d in done]
    return summarise_profile(out, rate * seconds) | {"mb_s": median(rates), "gateway_cores": cores,
                                                      "perf": perf_split}


# -- the run --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB down, 64 MiB up, 50 sessions, 5 s profile")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians over them (default 3)")
    parser.add_argument("--download-mib", type=int, default=None, help="download size (default 1024)")
    parser.add_argument("--upload-mib", type=int, default=None, help="scp upload size (default 256)")
    parser.add_argument("--sessions", type=int, default=None, help="idle sessions held at once (default 200)")
    parser.add_argument("--no-legacy-scp", action="store_true", help="skip the scp -O rows")
    parser.add_argument("--no-sessions", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--profile-seconds", type=int, default=None, help="py-spy duration (default 10)")
    parser.add_argument("--profile-dir", default=None, help="keep py-spy's raw stacks here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--conch-window", type=int, default=0,
                        help="experiment: Conch's default channel window in bytes for the gateway process "
                             "(channels that pass none; hoopgw's relay channels pass RELAY_WINDOW, 2 MiB)")
    parser.add_argument("--high-water", type=int, default=0,
                        help="experiment: hoopgw's relay HIGH_WATER in bytes (default: hoopgw's 4 MiB)")
    parser.add_argument("--log-info", action="store_true",
                        help="experiment: filter the gateway's log at info with --logger (hoopgw now does so by default: "
                             "twistd hoopgw --log-level, default info)")
    parser.add_argument("--no-perf", action="store_true", help="skip perf's CPU split by library during the profile")
    args = parser.parse_args([] if argv is None else argv)
    download = (args.download_mib or (256 if args.quick else 1024)) * MiB
    upload = (args.upload_mib or (64 if args.quick else 256)) * MiB
    sessions = args.sessions or (50 if args.quick else 200)
    profile_seconds = args.profile_seconds or (5 if args.quick else 10)

    base = Path(tempfile.mkdtemp(prefix="hoopgw-sshbench-"))
    servers = Servers(base, args.conch_window, args.high_water, args.log_info)
    rows: list[dict[str, Any]] = []
    with bench_run(servers, base, keep=args.keep):
        source = base / "upload.bin"
        with open(source, "wb") as f:
            chunk = os.urandom(MiB)
            for _ in range(upload // MiB):
                f.write(chunk)
        legs = {t: negotiated(servers, t) for t in ("direct", "hoopgw")}
        for name, leg in legs.items():
            log(f"client leg {name}: {leg}")

        tests: list[tuple[str, Callable[[str], dict[str, float]]]] = [
            ("login (`ssh HOST true`)", lambda t: run_login(servers, t)),
            (f"download `head -c {download // MiB}M /dev/zero`", lambda t: run_download(servers, t, download)),
            (f"scp upload {upload // MiB} MiB (SFTP)", lambda t: run_scp(servers, t, source, legacy=False)),
        ]
        if not args.no_legacy_scp:
            tests.append((f"scp -O upload {upload // MiB} MiB (legacy)", lambda t: run_scp(servers, t, source, legacy=True)))
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            order = ["direct", "hoopgw"] if r % 2 == 0 else ["hoopgw", "direct"]
            for test, fn in tests:
                for target in order:
                    run = fn(target)
                    results.setdefault((test, target), []).append(run)
                    rate = run["bytes"] / run["wall"] / 1e6
                    log(f"round {r + 1}/{args.rounds} {test} {target}: {run['wall']:.2f} s, {rate:.0f} MB/s, "
                        f"gateway CPU {run['gateway_cpu']:.2f} s")
        sshd_legs = target_leg_ciphers(servers)

        print(f"### Throughput, `-c {CIPHER} -m {MAC}` on every leg, medians of {args.rounds} rounds\n")
        print(f"Client legs (ssh -v): direct {legs['direct']}; through hoopgw {legs['hoopgw']}. "
              f"sshd's log, per client: {'; '.join(sshd_legs)}.\n")
        print("| transfer | target | wall s | MB/s | × direct | gateway CPU s | gateway CPU s/GB | gateway cores | of it kernel | client CPU s | runs MB/s |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for test, _ in tests:
            direct = results[(test, "direct")]
            for target in ("direct", "hoopgw"):
                runs = results[(test, target)]
                size = runs[0]["bytes"]
                rates = [x["bytes"] / x["wall"] / 1e6 for x in runs] if size else [float("nan")]
                row = {
                    "benchmark": "ssh throughput",
                    "transfer": test,
                    "target": target,
                    "bytes": size,
                    "wall_s": median([x["wall"] for x in runs]),
                    "mb_s": median(rates),
                    "x_direct": median([d["wall"] / x["wall"] for x, d in zip(runs, direct)]) if size else float("nan"),
                    "gateway_cpu_s": median([x["gateway_cpu"] for x in runs]) if target == "hoopgw" else float("nan"),
                    "gateway_cpu_s_per_gb": median([x["gateway_cpu"] / (x["bytes"] / 1e9) for x in runs])
                    if target == "hoopgw" and size else float("nan"),
                    "gateway_cores": median([x["gateway_cpu"] / x["wall"] for x in runs]) if target == "hoopgw" else float("nan"),
                    "gateway_sys_fraction": median([x["gateway_sys"] / x["gateway_cpu"] for x in runs if x["gateway_cpu"]])
                    if target == "hoopgw" else float("nan"),
                    "client_cpu_s": median([x["client_cpu"] for x in runs]),
                    "runs_mb_s": [round(x, 0) for x in rates] if size else [],
                    "runs_wall_s": [round(x["wall"], 3) for x in runs],
                }
                rows.append(row)
                runs_text = ", ".join(fmt(x) for x in row["runs_mb_s"]) if size else ", ".join(f"{x:.2f} s" for x in row["runs_wall_s"])
                print(f"| {test} | {target} | {fmt(row['wall_s'], 2)} | {fmt(row['mb_s'])} | {fmt(row['x_direct'], 2)} "
                      f"| {fmt(row['gateway_cpu_s'], 2)} | {fmt(row['gateway_cpu_s_per_gb'], 2)} | {fmt(row['gateway_cores'], 2)} "
                      f"| {fmt(row['gateway_sys_fraction'] * 100)}{'' if math.isnan(row['gateway_sys_fraction']) else ' %'} "
                      f"| {fmt(row['client_cpu_s'], 2)} | {runs_text} |")
        print()

        if not args.no_sessions:
            log(f"holding {sessions} idle sessions ...")
            held = hold_sessions(servers, sessions, base / "sessions-stderr.log")
            rows.append({"benchmark": "idle sessions"} | held)
            print(f"### {sessions} idle sessions held through the gateway (`ssh HOST 'read x || true'`, stdin open)\n")
            print("| sessions | established in s | gateway CPU per login ms | RSS before MiB | RSS held MiB | RSS per session KiB "
                  "| RSS after teardown MiB | fds before / held / after | idle CPU (cores) | teardown s | exit codes |")
            print("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
            print(f"| {sessions} | {fmt(held['established_s'], 1)} | {fmt(held['login_cpu_ms'], 1)} | {fmt(held['rss_before_mib'], 1)} "
                  f"| {fmt(held['rss_held_mib'], 1)} | {fmt(held['kib_per_session'])} | {fmt(held['rss_after_mib'], 1)} "
                  f"| {held['fds_before']} / {held['fds_held']} / {held['fds_after']} | {fmt(held['idle_cpu_cores'], 3)} "
                  f"| {fmt(held['teardown_s'], 1)} | {', '.join(f'{k}: {v}' for k, v in held['exit_codes'].items())} |")
            print()

        if not args.no_profile:
            if not os.path.exists(PY_SPY):
                print("(py-spy not found: `pip install py-spy` for the profile)\n")
            else:
                keep = Path(args.profile_dir) if args.profile_dir else base
                keep.mkdir(parents=True, exist_ok=True)
                out = keep / "hoopgw-ssh-profile.txt"
                log(f"profiling hoopgw during {download // MiB} MiB downloads ...")
                summary = profile_gateway(servers, profile_seconds, download, out, use_perf=not args.no_perf)
                rows.append({"benchmark": "profile"} | summary)
                samples = summary["samples"] or 1
                print(f"### py-spy on the gateway during `head -c {download // MiB}M` downloads "
                      f"({fmt(summary['mb_s'])} MB/s while sampled, gateway at {summary['gateway_cores']:.2f} cores)\n")
                print(f"Reactor thread: {samples:,} samples at 200 Hz over {profile_seconds} s = busy {summary['busy']:.0%}; "
                      f"other threads {summary['other_busy']:.0%}. Shares are of the reactor thread's samples, "
                      "by innermost Python frame (C calls count in the Python line that makes them).\n")
                if args.profile_dir:
                    print(f"(raw stacks: {out})\n")
                print("| where | share |")
                print("|---|---:|")
                for name, n in summary["categories"]:
                    print(f"| {name} | {n / samples:.1%} |")
                print()
                if summary["perf"]:
                    print(f"On-CPU split of the gateway process by library (`perf record -F 499 -p PID`, {profile_seconds} s, "
                          "same load, after py-spy): py-spy samples wall-clock stacks, so a thread in `send(2)` that the "
                          "scheduler switched away from (the woken peer takes the core) counts as in `send`.\n")
                    print("| library | share of on-CPU samples |")
                    print("|---|---:|")
                    for name, share in summary["perf"]:
                        print(f"| {name} | {share:.1%} |")
                    print()
                print("| self % | line |")
                print("|---:|---|")
                for where, n in summary["self_lines"][:15]:
                    print(f"| {n / samples:.1%} | `{where}` |")
                print()
                print("| inclusive % | function |")
                print("|---:|---|")
                for func, n in summary["inclusive"][:25]:
                    print(f"| {n / samples:.1%} | `{func}` |")
                print()
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
