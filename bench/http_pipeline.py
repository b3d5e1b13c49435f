"""
The HTTP front end's own cost per request, in one process, without sockets,
TLS or a running reactor: what `bench/http_proxy.py` cannot separate from
Twisted's dispatch.

    python bench/http_pipeline.py [--requests 20000] [--rounds 5] [--profile]

A real gateway (`hoopgw.gateway.Gateway` on a temporary data directory:
the file audit log with its hash chain and checkpoints, the shipped default
policy, the dev token issuer, the SQLite store) with one `kind = "http"`
connection.  One client connection and one pooled upstream connection sit
on memory transports; each request is the bytes wrk sends (Host, the bearer
token), its answer the head nginx gives a small JSON file and the body.
Per request: the client's bytes in, the upstream's request out, the
upstream's response in, the client's response out, both audit records
written to the file.

Prints µs per request (median of the rounds); `--profile` adds cProfile's
top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from twisted.internet import reactor  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from hoopgw.config import loads  # noqa: E402
from hoopgw.gateway import Gateway  # noqa: E402
from hoopgw.protocols.http.pool import UpstreamConnection  # noqa: E402
from hoopgw.protocols.http.proxy import HTTPFrontEnd  # noqa: E402

BODY = b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details":' + b'"x"' * 70 + b"}"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Thu, 26 Nov 2026 17:00:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: %d\r\n"
    b"Last-Modified: Thu, 26 Nov 2026 16:00:00 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b'ETag: "6566a1e0-12c"\r\n'
    b"Accept-Ranges: bytes\r\n\r\n" % len(BODY)
) + BODY


class _Transport(StringTransport):
    """A memory transport that forgets what was written (only the last write is looked at)."""

    def write(self, data: bytes) -> None:
        self.last = data

    def writeSequence(self, seq) -> None:
        self.last = b"".join(seq)


def build(data_dir: Path):
    config = loads(
        f"""
[gateway]
name = "bench"
data_dir = "{data_dir}"

[listen]
postgres = false
ssh = false
http = false
api = false

[audit]
sync = "batched"

[[connections]]
name = "web"
kind = "http"
upstream = "http://127.0.0.1:9"
""",
        source=None,
        base_dir=data_dir,
    )
    gateway = Gateway(config, reactor=reactor)
    gateway.audit.startService()
    token = gateway.identity.dev_issuer.issue("bench", ttl_seconds=3600)
    front = HTTPFrontEnd(sessions=gateway.sessions, reactor=reactor)
    pool = front.upstreams["web"].pool
    upstream = UpstreamConnection(pool)
    upstream.makeConnection(_Transport())
    pool._all.add(upstream)
    pool._idle_connections.append(upstream)
    client = front.http.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    client.makeConnection(_Transport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000)))
    request = (
        b"GET /web/file.json HTTP/1.1\r\nHost: 127.0.0.1:18443\r\nAuthorization: Bearer " + token.encode() + b"\r\n\r\n"
    )
    return gateway, client, upstream, request


def one(client, upstream, request: bytes) -> None:
    client.dataReceived(request)
    upstream.dataReceived(RESPONSE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="hoopgw-httppipe-"))
    try:
        gateway, client, upstream, request = build(base / "data")
        for _ in range(200):  # the session opens, caches warm
            one(client, upstream, request)
        assert client.transport.last.endswith(BODY), client.transport.last[:200]
        assert upstream.transport.last.startswith(b"GET /file.json HTTP/1.1\r\n"), upstream.transport.last[:200]
        runs = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for _ in range(args.requests):
                one(client, upstream, request)
            runs.append((time.perf_counter() - t0) / args.requests * 1e6)
            # What the running reactor would have done meanwhile: cancelled timers
            # swept, the batched fdatasync left out (it runs in a thread).
            reactor.runUntilCurrent()
        print(f"http pipeline: {statistics.median(runs):.1f} µs/request (median of {args.rounds} rounds of "
              f"{args.requests}; runs {', '.join(f'{r:.1f}' for r in runs)})")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.requests):
                one(client, upstream, request)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        gateway.audit.stopService()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
