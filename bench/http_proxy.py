"""
HTTP proxy benchmark: small-request rate and latency, and a large streamed
response, through hoopgw's HTTPS front end, against nginx directly, nginx as
a reverse proxy, and Twisted's own reverse proxy, on the same machine in the
same run, with hoopgw run as its own process (`twistd -n hoopgw`).

    python bench/http_proxy.py [--quick] [--rounds 3] [--seconds 10]
                               [--stream-mb 100] [--no-profile]
                               [--profile-seconds 10] [--keep]

Everything is started here and stopped here, also on failure or Ctrl-C, all
on loopback:

  nginx        one foreground process (`nginx -c <conf> -g 'daemon off;'`,
               1 worker, access log off) with three server blocks: the origin
               (a static ~300-byte JSON file and a sparse 100 MB file), the
               same files over TLS with the gateway's certificate ("nginx
               tls": what wrk's own TLS costs), and a reverse proxy in front
               of the origin (HTTP/1.1 keep-alive upstream)
  twisted      `twisted.web.proxy.ReverseProxyResource` to the origin and
               nothing else (a tiny script, its own process): the Python floor
  hoopgw       `twistd -n hoopgw --config <temp>`: the `http` listener (TLS,
               its self-signed certificate), audit on (sync "batched"), the
               default policy, one `kind = "http"` connection `web` to the
               origin; a dev token (`hoopgw token issue --sub bench`)

Measurements (targets alternate within each round, the order reversed every
other round; medians of the rounds; every ratio is taken within a round):

  small GETs   wrk --latency -t1 -c1 and -t2 -c16 for N seconds, keep-alive,
               GET /file.json (plain HTTP, except nginx tls and hoopgw: HTTPS,
               and hoopgw's requests carry the bearer token)
  streaming    curl -o /dev/null of the 100 MB file, direct and through
               hoopgw; the gateway's VmHWM before/after and VmRSS sampled
               every 20 ms while it streams
  profile      py-spy (raw stacks, 200 Hz) on the gateway under wrk -c16

(Not `bench/http.py`: bench/ is the first entry of sys.path for every script
in it, and a module named `http` there hides the standard library's `http`
package, which urllib, twisted.web and hoopgw import.)

The proxies' CPU comes from /proc/<pid>/stat (user + system, all threads).
MB = 10^6 bytes.  Prints markdown tables; L{main} returns the rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from _procs import bench_run, cpu_seconds, fmt, median, status_kib, stop_process, wait_for  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
CURL = shutil.which("curl") or "/usr/bin/curl"
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
HOOPGW = [sys.executable, "-c", "import sys; from hoopgw.cli import main; sys.exit(main())"]
CONNECTION = "web"
TARGETS = ["nginx", "nginx tls", "nginx proxy", "twisted proxy", "tls relay", "hoopgw"]
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")

FLOOR = """
import sys
from twisted.internet import reactor
from twisted.web import proxy, server
port, upstream = int(sys.argv[1]), int(sys.argv[2])
site = server.Site(proxy.ReverseProxyResource("127.0.0.1", upstream, b""))
site.log = lambda request: None  # no access log, like the others
reactor.listenTCP(port, site, interface="127.0.0.1")
print("floor ready", flush=True)
reactor.run()
"""


# The floor of hoopgw's own design: Twisted terminating TLS as the gateway
# does (its certificate, pyOpenSSL's memory BIO) and copying bytes to nginx
# over one persistent upstream connection per client connection; nothing
# parsed, decided or recorded.
TLS_RELAY = """
import sys
from pathlib import Path
from twisted.internet import protocol, reactor
from twisted.internet.ssl import CertificateOptions, PrivateCertificate
from twisted.protocols.tls import TLSMemoryBIOFactory
port, upstream, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

class Up(protocol.Protocol):
    def __init__(self, down):
        self.down = down
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.down.up = self
        self.transport.write(b"".join(self.down.pending))
        self.down.pending = None
    def dataReceived(self, data):
        self.down.transport.write(data)
    def connectionLost(self, reason=None):
        self.down.transport.loseConnection()

class Down(protocol.Protocol):
    up = None
    def connectionMade(self):
        self.transport.transport.setTcpNoDelay(True)  # as the gateway does: whole answers, no Nagle delay
        self.pending = []
        protocol.ClientCreator(reactor, Up, self).connectTCP("127.0.0.1", upstream)
    def dataReceived(self, data):
        if self.up is None:
            self.pending.append(data)
        else:
            self.up.transport.write(data)
    def connectionLost(self, reason=None):
        if self.up is not None:
            self.up.transport.loseConnection()

pem = PrivateCertificate.loadPEM(Path(cert).read_bytes() + Path(key).read_bytes())
options = CertificateOptions(privateKey=pem.privateKey.original, certificate=pem.original,
                             acceptableProtocols=[b"http/1.1"])
reactor.listenTCP(port, TLSMemoryBIOFactory(options, False, protocol.Factory.forProtocol(Down)), interface="127.0.0.1")
print("relay ready", flush=True)
reactor.run()
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Servers:
    """nginx, the Twisted floor and the gateway; C{close} stops whatever was started."""

    def __init__(self, base: Path, stream_bytes: int) -> None:
        self.base = base
        self.stream_bytes = stream_bytes
        self.stack = contextlib.ExitStack()
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.token = ""

    def close(self) -> None:
        self.stack.close()

    def start(self) -> None:
        www = self.base / "www"
        www.mkdir()
        body = {
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "web-7d4b9c6f5-x2k8q", "namespace": "default", "uid": "8f1d2c3e-4a5b-6c7d-8e9f-0a1b2c3d4e5f",
                         "labels": {"app": "web", "tier": "frontend"}, "resourceVersion": "123456"},
            "status": {"phase": "Running", "podIP": "10.0.0.17", "hostIP": "192.168.1.10", "startTime": "2026-01-01T00:00:00Z"},
        }
        self.small = json.dumps(body).encode()
        (www / "file.json").write_bytes(self.small)
        with open(www / "big.bin", "wb") as f:
            f.truncate(self.stream_bytes)  # sparse: nginx reads zeros from the page cache
        for name in ("nginx", "nginx tls", "nginx proxy"):
            self.ports[name] = free_port()
        self._start_gateway()  # first: nginx's TLS block uses its certificate
        self._start_nginx(www)
        self._start_floor()
        self._start_tls_relay()

    def _popen(self, name: str, argv: list[str], logfile: Path, **kw: Any) -> subprocess.Popen:
        with open(logfile, "ab") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True, **kw)
        self.stack.callback(stop_process, process, group=True, grace=10)
        return process

    def _wait(self, name: str, process: subprocess.Popen, port: int, logfile: Path, extra=lambda: True) -> None:
        try:
            wait_for(lambda: process.poll() is not None or (listening(port) and extra()), 60, name)
            if process.poll() is not None:
                raise RuntimeError("exited")
        except RuntimeError as e:
            raise RuntimeError(f"{name} did not start ({e}):\n{logfile.read_text(errors='replace')}")

    def _start_nginx(self, www: Path) -> None:
        log("starting nginx ...")
        origin, front, tls = self.ports["nginx"], self.ports["nginx proxy"], self.ports["nginx tls"]
        certs = self.gateway_config.parent / "data" / "tls"
        d = self.base / "nginx"
        d.mkdir()
        user = "user root;" if os.getuid() == 0 else ""
        conf = d / "nginx.conf"
        conf.write_text(f"""
{user}
worker_processes 1;
pid {d / 'nginx.pid'};
error_log {d / 'error.log'} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d / 'body'};
    proxy_temp_path {d / 'proxy'};
    fastcgi_temp_path {d / 'fastcgi'};
    uwsgi_temp_path {d / 'uwsgi'};
    scgi_temp_path {d / 'scgi'};
    types {{ application/json json; application/octet-stream bin; }}
    sendfile on;
    keepalive_requests 1000000;
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{origin};
        root {www};
    }}
    server {{
        listen 127.0.0.1:{tls} ssl;
        ssl_certificate {certs / 'gateway.crt'};
        ssl_certificate_key {certs / 'gateway.key'};
        root {www};
    }}
    server {{
        listen 127.0.0.1:{front};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
    }}
}}
""")
        logfile = d / "stdout.log"
        process = self._popen("nginx", [NGINX, "-c", str(conf), "-p", str(d), "-g", "daemon off;"], logfile)
        self._wait("nginx", process, front, logfile, lambda: listening(origin) and listening(tls))
        self.nginx = process

    def _start_floor(self) -> None:
        log("starting the bare Twisted reverse proxy ...")
        port = self.ports["twisted proxy"] = free_port()
        logfile = self.base / "floor.log"
        process = self._popen("twisted proxy", [sys.executable, "-c", FLOOR, str(port), str(self.ports["nginx"])], logfile)
        self._wait("twisted proxy", process, port, logfile)
        self.pids["twisted proxy"] = process.pid

    def _start_tls_relay(self) -> None:
        log("starting the bare Twisted TLS relay ...")
        port = self.ports["tls relay"] = free_port()
        certs = self.gateway_config.parent / "data" / "tls"
        logfile = self.base / "tls-relay.log"
        argv = [sys.executable, "-c", TLS_RELAY, str(port), str(self.ports["nginx"]),
                str(certs / "gateway.crt"), str(certs / "gateway.key")]
        process = self._popen("tls relay", argv, logfile)
        self._wait("tls relay", process, port, logfile)
        self.pids["tls relay"] = process.pid

    def _start_gateway(self) -> None:
        log("starting hoopgw (twistd) ...")
        d = self.base / "gateway"
        d.mkdir()
        port, api = free_port(), free_port()
        self.ports["hoopgw"] = port
        self.gateway_config = d / "hoopgw.toml"
        self.gateway_config.write_text(f"""
[gateway]
name = "bench"
data_dir = "data"

[listen]
http = "tcp:{port}:interface=127.0.0.1"
api = "tcp:{api}:interface=127.0.0.1"
postgres = false
ssh = false

[audit]
sync = "batched"

[[connections]]
name = "{CONNECTION}"
kind = "http"
upstream = "http://127.0.0.1:{self.ports['nginx']}"
""")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.gateway_log = d / "twistd.log"
        process = self._popen("hoopgw", TWISTD + ["-n", "--pidfile=", "hoopgw", "--config", str(self.gateway_config)],
                              self.gateway_log, cwd=str(d), env=env)
        # Not its own group's leader for signals: stop only the process.
        self._wait("hoopgw", process, port, self.gateway_log, lambda: b"hoopgw ready" in self.gateway_log.read_bytes())
        self.pids["hoopgw"] = process.pid
        self.gateway_pid = process.pid
        token = subprocess.run(HOOPGW + ["--config", str(self.gateway_config), "token", "issue", "--sub", "bench", "--ttl", "1h"],
                               capture_output=True, text=True, cwd=str(d), env=env, timeout=60, check=False)
        if token.returncode != 0:
            raise RuntimeError(f"hoopgw token issue failed: {token.stderr}")
        self.token = token.stdout.strip()

    def url(self, target: str, path: str) -> str:
        if target in ("nginx tls", "tls relay"):
            return f"https://127.0.0.1:{self.ports[target]}/{path}"
        if target == "hoopgw":
            return f"https://127.0.0.1:{self.ports['hoopgw']}/{CONNECTION}/{path}"
        return f"http://127.0.0.1:{self.ports[target]}/{path}"

    def headers(self, target: str) -> list[str]:
        return ["-H", f"Authorization: Bearer {self.token}"] if target == "hoopgw" else []


# -- wrk ------------------------------------------------------------------------------

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def _us(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def run_wrk(servers: Servers, target: str, threads: int, conns: int, seconds: int) -> dict[str, Any]:
    argv = [WRK, f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "5s",
            *servers.headers(target), servers.url(target, "file.json")]
    pid = servers.pids.get(target)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    wall, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
    text = out.stdout
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    total = re.search(r"([0-9]+) requests in", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: ([0-9]+)", text)
    sock = re.search(r"Socket errors: (.*)", text)
    if out.returncode != 0 or not rps:
        raise RuntimeError(f"wrk against {target} failed ({out.returncode}):\n{text}\n{out.stderr}")
    requests = int(total.group(1)) if total else 0
    return {
        "rps": float(rps.group(1)),
        "p50_us": _us(p50.group(1)) if p50 else float("nan"),
        "p99_us": _us(p99.group(1)) if p99 else float("nan"),
        "errors": (int(non2xx.group(1)) if non2xx else 0),
        "socket_errors": sock.group(1).strip() if sock else "",
        "requests": requests,
        "proxy_cpu_us_per_req": cpu / requests * 1e6 if pid and requests else float("nan"),
        "proxy_cores": cpu / wall if pid else float("nan"),
    }


# -- streaming ------------------------------------------------------------------------


def run_stream(servers: Servers, target: str) -> dict[str, Any]:
    argv = [CURL, "-sS", "-k", "--http1.1", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}",
            *servers.headers(target), servers.url(target, "big.bin")]
    pid = servers.gateway_pid
    hwm0 = status_kib(pid, "VmHWM")
    rss0 = status_kib(pid, "VmRSS")
    peak = [rss0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            with contextlib.suppress(OSError):
                peak.append(status_kib(pid, "VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0 = cpu_seconds(pid)
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    finally:
        done.set()
        sampler.join()
    cpu = cpu_seconds(pid) - cpu0
    code, size, seconds = out.stdout.split()
    if out.returncode != 0 or code != "200" or int(size) != servers.stream_bytes:
        raise RuntimeError(f"curl {target}: rc {out.returncode}, {out.stdout} {out.stderr}")
    return {
        "bytes": int(size),
        "seconds": float(seconds),
        "mb_s": int(size) / float(seconds) / 1e6,
        "gateway_cpu_s": cpu if target == "hoopgw" else float("nan"),
        "rss_before_kib": rss0,
        "rss_peak_kib": max(peak),
        "hwm_before_kib": hwm0,
        "hwm_after_kib": status_kib(pid, "VmHWM"),
    }


# -- profile ------------------------------------------------------------------------


def _where(frame: str) -> tuple[str, str]:
    """(function with its file, package) of one py-spy frame `func (path:line)`."""
    m = re.match(r"(.*) \((.*?)(?::[0-9]+)?\)$", frame.strip())
    func, path = (m.group(1), m.group(2)) if m else (frame.strip(), "")
    for marker, package in (("/hoopgw/", "hoopgw"), ("/twisted/", "twisted"), ("/OpenSSL/", "pyOpenSSL"),
                            ("/cryptography/", "cryptography"), ("/attr/", "attrs"), ("/jwt/", "jwt"),
                            ("/orjson", "orjson")):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return f"{func} ({package}/{tail})", package
    return f"{func} ({Path(path).name})", "python stdlib/other" if path else "?"


def profile_gateway(servers: Servers, seconds: int, out: Path) -> dict[str, Any]:
    """py-spy (raw stacks, 200 Hz, idle frames dropped) on the gateway under wrk -t2 -c16."""
    wrk = subprocess.Popen([WRK, "-t2", "-c16", f"-d{seconds + 3}s", *servers.headers("hoopgw"), servers.url("hoopgw", "file.json")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1)
        spy = subprocess.run([PY_SPY, "record", "-p", str(servers.gateway_pid), "-r", "200", "-d", str(seconds),
                              "--format", "raw", "--nonblocking", "--full-filenames", "-o", str(out)],
                             capture_output=True, text=True, timeout=seconds + 60, check=False)
        wrk_out, _ = wrk.communicate(timeout=seconds + 60)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    if spy.returncode != 0 or not out.exists():
        return {"error": (spy.stderr or spy.stdout)[-500:]}
    total, self_count, inclusive, packages = 0, {}, {}, {}
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        if frames and frames[0].startswith("process") or frames and frames[0].startswith("thread"):
            frames = frames[1:]
        if not frames:
            continue
        total += n
        leaf, package = _where(frames[-1])
        self_count[leaf] = self_count.get(leaf, 0) + n
        packages[package] = packages.get(package, 0) + n
        for name, package in {_where(f) for f in frames}:
            if package in ("hoopgw", "jwt", "pyOpenSSL", "cryptography"):
                inclusive[name] = inclusive.get(name, 0) + n
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", wrk_out or "")
    return {
        "samples": total,
        "seconds": seconds,
        "rps": float(rps.group(1)) if rps else float("nan"),
        "packages": sorted(packages.items(), key=lambda kv: -kv[1]),
        "self": sorted(self_count.items(), key=lambda kv: -kv[1])[:15],
        "inclusive": sorted(inclusive.items(), key=lambda kv: -kv[1])[:25],
    }


# -- the run ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s wrk runs, 2 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds; medians over them (default 3)")
    parser.add_argument("--seconds", type=int, default=None, help="wrk duration per run (default 10)")
    parser.add_argument("--stream-mb", type=int, default=100, help="size of the streamed response in MB (default 100)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-profile", action="store_true", help="skip py-spy on the gateway")
    parser.add_argument("--profile-seconds", type=int, default=None, help="py-spy duration (default 10)")
    parser.add_argument("--targets", default=None,
                        help="comma-separated subset of targets to measure (nginx and twisted proxy always are: "
                             "the ratios are taken to them)")
    parser.add_argument("--no-stream", action="store_true", help="skip the streamed response")
    args = parser.parse_args([] if argv is None else argv)
    targets = TARGETS
    if args.targets:
        wanted = {t.strip() for t in args.targets.split(",")}
        unknown = wanted - set(TARGETS)
        if unknown:
            parser.error(f"--targets: unknown {sorted(unknown)}; known: {', '.join(TARGETS)}")
        targets = [t for t in TARGETS if t in wanted | {"nginx", "twisted proxy"}]
    rounds = args.rounds or (2 if args.quick else 3)
    seconds = args.seconds or (3 if args.quick else 10)
    for tool in (NGINX, WRK, CURL):
        if not os.path.exists(tool):
            raise SystemExit(f"{tool} not found: apt-get install -y nginx wrk curl")

    stream = not args.no_stream and "hoopgw" in targets
    base = Path(tempfile.mkdtemp(prefix="hoopgw-httpbench-"))
    os.chmod(base, 0o755)
    servers = Servers(base, args.stream_mb * 1_000_000)
    rows: list[dict[str, Any]] = []
    with bench_run(servers, base, keep=args.keep):
        # Sanity: every target answers 200 with the same body.
        for target in targets:
            out = subprocess.run([CURL, "-sS", "-k", "-w", " %{http_code}", *servers.headers(target),
                                  servers.url(target, "file.json")], capture_output=True, timeout=30, check=False)
            if not out.stdout.endswith(b" 200") or out.stdout[:-4] != servers.small:
                raise RuntimeError(f"{target} answered {out.stdout[:300]!r} {out.stderr[:300]!r}")

        loads = [(1, 1), (2, 16)]
        results: dict[tuple[int, str], list[dict[str, Any]]] = {}
        streams: dict[str, list[dict[str, Any]]] = {}
        for r in range(rounds):
            order = targets if r % 2 == 0 else targets[::-1]
            for threads, conns in loads:
                for target in order:
                    run = run_wrk(servers, target, threads, conns, seconds)
                    results.setdefault((conns, target), []).append(run)
                    log(f"round {r + 1}/{rounds} c{conns} {target}: {run['rps']:,.0f} req/s, p50 {run['p50_us']:.0f} µs, "
                        f"p99 {run['p99_us']:.0f} µs, errors {run['errors']} {run['socket_errors']}")
            for target in (["direct", "hoopgw"] if r % 2 == 0 else ["hoopgw", "direct"]) if stream else ():
                run = run_stream(servers, "nginx" if target == "direct" else "hoopgw")
                streams.setdefault(target, []).append(run)
                log(f"round {r + 1}/{rounds} stream {target}: {run['mb_s']:.0f} MB/s, gateway RSS "
                    f"{run['rss_before_kib'] / 1024:.1f} -> peak {run['rss_peak_kib'] / 1024:.1f} MiB, "
                    f"VmHWM {run['hwm_before_kib'] / 1024:.1f} -> {run['hwm_after_kib'] / 1024:.1f} MiB")

        print(f"### Small GETs (`wrk --latency`, {len(servers.small)}-byte JSON, {seconds} s per run), medians of {rounds} rounds\n")
        print("`× nginx` and `× twisted` are taken within each round, then the median. `+p50` is the target's p50 minus "
              "nginx direct's in the same round. nginx tls and hoopgw are HTTPS (wrk's TLS client; hoopgw's requests carry a "
              "bearer token), the others plain HTTP: compare hoopgw with nginx tls for what TLS alone costs. "
              "Proxy CPU is the proxy process's own (nginx's worker serves both origin and proxy, so none is shown for it).\n")
        print("| clients | target | req/s | × nginx | × twisted proxy | p50 µs | p99 µs | +p50 µs | proxy CPU µs/req | proxy cores | errors | runs req/s |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for threads, conns in loads:
            direct = results[(conns, "nginx")]
            floor = results[(conns, "twisted proxy")]
            for target in targets:
                runs = results[(conns, target)]
                row = {
                    "benchmark": "http small GET",
                    "wrk": f"-t{threads} -c{conns}",
                    "clients": conns,
                    "target": target,
                    "rps": median([x["rps"] for x in runs]),
                    "x_nginx": median([x["rps"] / d["rps"] for x, d in zip(runs, direct)]),
                    "x_twisted": median([x["rps"] / f["rps"] for x, f in zip(runs, floor)]),
                    "p50_us": median([x["p50_us"] for x in runs]),
                    "p99_us": median([x["p99_us"] for x in runs]),
                    "added_p50_us": median([x["p50_us"] - d["p50_us"] for x, d in zip(runs, direct)]),
                    "proxy_cpu_us_per_req": median([x["proxy_cpu_us_per_req"] for x in runs]),
                    "proxy_cores": median([x["proxy_cores"] for x in runs]),
                    "errors": sum(x["errors"] for x in runs),
                    "socket_errors": [x["socket_errors"] for x in runs if x["socket_errors"]],
                    "runs_rps": [round(x["rps"]) for x in runs],
                }
                rows.append(row)
                errors = str(row["errors"]) + (f" ({'; '.join(row['socket_errors'])})" if row["socket_errors"] else "")
                print(f"| {conns} | {target} | {fmt(row['rps'])} | {fmt(row['x_nginx'], 2)} | {fmt(row['x_twisted'], 2)} "
                      f"| {fmt(row['p50_us'])} | {fmt(row['p99_us'])} | {fmt(row['added_p50_us'])} "
                      f"| {fmt(row['proxy_cpu_us_per_req'])} | {fmt(row['proxy_cores'], 2)} | {errors} "
                      f"| {', '.join(fmt(x) for x in row['runs_rps'])} |")
        print()

        if stream:
            mb = args.stream_mb
            print(f"### {mb} MB streamed response (`curl -o /dev/null`), medians of {rounds} rounds\n")
            print("Gateway memory is its VmRSS before each download and the peak of VmRSS sampled every 20 ms during it; "
                  "VmHWM is the process's lifetime peak, before the first and after the last download.\n")
            print("| target | MB/s | × direct | gateway CPU s | gateway RSS before MiB | gateway RSS peak MiB | growth MiB | runs MB/s |")
            print("|---|---:|---:|---:|---:|---:|---:|---|")
            direct = streams["direct"]
            for target in ("direct", "hoopgw"):
                runs = streams[target]
                gw = target == "hoopgw"
                row = {
                    "benchmark": "http stream",
                    "target": target,
                    "bytes": runs[0]["bytes"],
                    "mb_s": median([x["mb_s"] for x in runs]),
                    "x_direct": median([d["seconds"] / x["seconds"] for x, d in zip(runs, direct)]),
                    "gateway_cpu_s": median([x["gateway_cpu_s"] for x in runs]) if gw else float("nan"),
                    "rss_before_mib": median([x["rss_before_kib"] / 1024 for x in runs]) if gw else float("nan"),
                    "rss_peak_mib": max(x["rss_peak_kib"] / 1024 for x in runs) if gw else float("nan"),
                    "growth_mib": max((x["rss_peak_kib"] - x["rss_before_kib"]) / 1024 for x in runs) if gw else float("nan"),
                    "runs_mb_s": [round(x["mb_s"]) for x in runs],
                }
                rows.append(row)
                print(f"| {target} | {fmt(row['mb_s'])} | {fmt(row['x_direct'], 2)} | {fmt(row['gateway_cpu_s'], 2)} "
                      f"| {fmt(row['rss_before_mib'], 1)} | {fmt(row['rss_peak_mib'], 1)} | {fmt(row['growth_mib'], 1)} "
                      f"| {', '.join(fmt(x) for x in row['runs_mb_s'])} |")
            all_runs = [x for t in streams.values() for x in t]
            first = min(all_runs, key=lambda x: x["hwm_before_kib"])["hwm_before_kib"]
            last = max(x["hwm_after_kib"] for x in all_runs)
            rows.append({"benchmark": "http stream VmHWM", "before_kib": first, "after_kib": last})
            print(f"\nGateway VmHWM before the first download {first / 1024:.1f} MiB, after the last {last / 1024:.1f} MiB "
                  f"(the small-GET runs came before).\n")
        if not args.no_profile and "hoopgw" in targets:
            if not os.path.exists(PY_SPY):
                print("(py-spy not found: `pip install py-spy` for the profile)\n")
            else:
                pseconds = args.profile_seconds or (5 if args.quick else 10)
                log(f"profiling hoopgw for {pseconds} s under wrk -t2 -c16 ...")
                summary = profile_gateway(servers, pseconds, base / "hoopgw-http-profile.txt")
                rows.append({"benchmark": "http profile"} | summary)
                if "error" in summary:
                    print(f"(py-spy failed: {summary['error']})\n")
                else:
                    samples = summary["samples"] or 1
                    expected = pseconds * 200
                    print(f"### py-spy on the gateway under `wrk -t2 -c16` ({fmt(summary['rps'])} req/s while sampled)\n")
                    print(f"{summary['samples']:,} non-idle samples at 200 Hz over {pseconds} s "
                          f"(≈ {summary['samples'] / expected:.0%} of one thread's time; `--nonblocking`, idle frames dropped). "
                          "Shares are of those samples; C calls count in the Python frame that makes them.\n")
                    print("| innermost frame's package | share |")
                    print("|---|---:|")
                    for name, n in summary["packages"]:
                        print(f"| {name} | {n / samples:.1%} |")
                    print()
                    print("| self % | function |")
                    print("|---:|---|")
                    for name, n in summary["self"]:
                        print(f"| {n / samples:.1%} | `{name}` |")
                    print()
                    print("| inclusive % | function (hoopgw, PyJWT, pyOpenSSL, cryptography only) |")
                    print("|---:|---|")
                    for name, n in summary["inclusive"]:
                        print(f"| {n / samples:.1%} | `{name}` |")
                    print()
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
