"""
Masking HTTP responses: what the streaming JSON masker
(L{hoopgw.masking.jsonbody}) costs, in process and through the gateway.

    python bench/http_masking.py [--items 3000] [--rounds 5] [--keep]

  in process   a ConfigMapList of N ConfigMaps (~1.3 KB each: labels, a
               last-applied annotation, five data values, one of them a
               password) fed to L{JsonStreamMasker} in 16 KiB chunks:
               kinds/json_paths alone, detectors alone (card, email), both;
               MB/s and µs per object (median of the rounds)
  gateway      `twistd -n hoopgw` with two HTTP connections to one upstream
               (a twisted.web static file, its own process): `plain` (no
               mask) and `masked` (a ConfigMap mask and the detectors);
               curl fetches the list through each, alternating, and
               directly; wall time (median) and the masked / plain ratio
               taken within each round

MB = 10^6 bytes.  Prints markdown tables; L{main} returns the rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _procs import bench_run, median, start_gateway, stop_process, wait_for  # noqa: E402

from hoopgw.masking.jsonbody import JsonStreamMasker  # noqa: E402
from hoopgw.masking.service import MaskingService  # noqa: E402
from hoopgw.model import Connection, Identity  # noqa: E402
from hoopgw.policy.rules import MaskRule, PolicySet  # noqa: E402

CHUNK = 16 * 1024
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MASKS_TOML = """
[[mask]]
name = "config"
connections = ["masked"]
kinds = ["ConfigMap"]
json_paths = ["data.db_password"]

[[mask]]
name = "pii"
connections = ["masked"]
detectors = ["card", "email"]
"""
UPSTREAM = r"""
import sys
from twisted.internet import reactor
from twisted.web import server, static
root = static.File(sys.argv[2])
root.contentTypes[".json"] = "application/json"
reactor.listenTCP(int(sys.argv[1]), server.Site(root), interface="127.0.0.1")
print("listening", flush=True)
reactor.run()
"""


def config_map_list(items: int) -> bytes:
    objects = []
    for i in range(items):
        data = {
            "db_password": f"s3cret-{i:06d}",
            "app.properties": f"threads=8\nport=80{i % 10}\nregion=eu-west-1\nretries=3\n",
            "owner": "team-payments",
            "feature_flags": "a=on,b=off,c=on",
            "version": f"1.{i % 50}.{i % 7}",
        }
        applied = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"app-{i}", "namespace": "prod"},
                   "data": data}
        objects.append({
            "metadata": {
                "name": f"app-{i}", "namespace": "prod", "uid": f"6f1c{i:08d}-aaaa-bbbb-cccc-0123456789ab",
                "resourceVersion": str(1000 + i), "creationTimestamp": "2026-11-01T10:00:00Z",
                "labels": {"app": "payments", "tier": "backend"},
                "annotations": {LAST_APPLIED: json.dumps(applied)},
            },
            "data": data,
        })
    document = {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": "99999"},
                "items": objects}
    return json.dumps(document).encode()


def _masks(*rules: MaskRule) -> Any:
    service = MaskingService(SimpleNamespace(policy_set=PolicySet(masks=list(rules))), b"k" * 32)
    return service.for_session(Identity("bench", "bench", ()), Connection("masked", "http", "x"))


def in_process(body: bytes, items: int, rounds: int) -> list[dict[str, Any]]:
    config = MaskRule("config", kinds=("ConfigMap",), json_paths=("data.db_password",))
    pii = MaskRule("pii", detectors=("card", "email"))
    cases = {"kinds + json_paths": _masks(config), "detectors": _masks(pii), "both": _masks(config, pii)}
    rows = []
    for name, masks in cases.items():
        times = []
        for _ in range(rounds):
            masker = JsonStreamMasker(masks.client_json, masks, {})
            start = time.perf_counter()
            size = 0
            for at in range(0, len(body), CHUNK):
                size += len(masker.feed(body[at:at + CHUNK]))
            size += len(masker.finish())
            times.append(time.perf_counter() - start)
        seconds = median(times)
        rows.append({"masks": name, "MB/s": len(body) / seconds / 1e6, "us_per_object": seconds / items * 1e6})
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Servers:
    def __init__(self, base: Path, body: bytes) -> None:
        self.base = base
        self.body = body
        self.stack = contextlib.ExitStack()

    def start(self) -> None:
        files = self.base / "files"
        files.mkdir()
        (files / "list.json").write_bytes(self.body)
        self.upstream_port = _free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-c", UPSTREAM, str(self.upstream_port), str(files)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.stack.callback(stop_process, upstream, group=True)
        assert upstream.stdout is not None
        if b"listening" not in upstream.stdout.readline():
            raise RuntimeError("the upstream did not start")
        directory = self.base / "gateway"
        (directory / "policies").mkdir(parents=True)
        (directory / "policies" / "allow.toml").write_text(
            '[[rule]]\nname = "allow"\neffect = "allow"\n' + MASKS_TOML
        )
        self.port = _free_port()
        connections = "".join(
            f'\n[[connections]]\nname = "{name}"\nkind = "http"\nupstream = "http://127.0.0.1:{self.upstream_port}"\n'
            for name in ("plain", "masked")
        )
        config = directory / "hoopgw.toml"
        config.write_text(f"""
[gateway]
name = "bench"
data_dir = "data"
policies = "policies"

[listen]
http = "tcp:{self.port}:interface=127.0.0.1"
api = false
postgres = false
ssh = false

[audit]
sync = "batched"
{connections}""")
        self.gateway, self.token = start_gateway(config, self.stack, dict(os.environ))
        self.cert = directory / "data" / "tls" / "gateway.crt"
        wait_for(self.cert.exists, 10, "the gateway's certificate")

    def close(self) -> None:
        self.stack.close()

    def fetch(self, target: str) -> float:
        if target == "direct":
            argv = ["curl", "-sS", "-o", "/dev/null", f"http://127.0.0.1:{self.upstream_port}/list.json"]
        else:
            argv = ["curl", "-sS", "-o", "/dev/null", "--cacert", str(self.cert),
                    "-H", f"Authorization: Bearer {self.token}", f"https://127.0.0.1:{self.port}/{target}/list.json"]
        start = time.perf_counter()
        subprocess.run(argv, check=True, timeout=120)
        return time.perf_counter() - start


def through_gateway(body: bytes, rounds: int, keep: bool) -> list[dict[str, Any]]:
    base = Path(tempfile.mkdtemp(prefix="hoopgw-bench-http-masking-"))
    servers = Servers(base, body)
    times: dict[str, list[float]] = {"direct": [], "plain": [], "masked": []}
    ratios = []
    with bench_run(servers, base, keep=keep):
        servers.fetch("plain")  # warm: the session, the connection pool
        for round_ in range(rounds):
            order = ["direct", "plain", "masked"]
            if round_ % 2:
                order.reverse()
            seen = {target: servers.fetch(target) for target in order}
            for target, seconds in seen.items():
                times[target].append(seconds)
            ratios.append(seen["masked"] / seen["plain"])
    rows = [{"target": t, "seconds": median(v), "MB/s": len(body) / median(v) / 1e6} for t, v in times.items()]
    rows.append({"target": "masked / plain", "ratio": median(ratios)})
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    body = config_map_list(args.items)
    print(f"A ConfigMapList of {args.items} objects, {len(body) / 1e6:.1f} MB.\n")
    rows = in_process(body, args.items, args.rounds)
    print("| in process, 16 KiB chunks | MB/s | µs per object |")
    print("|---|---:|---:|")
    for row in rows:
        print(f"| {row['masks']} | {row['MB/s']:.1f} | {row['us_per_object']:.1f} |")
    print()
    gateway = through_gateway(body, args.rounds, args.keep)
    print("| through the gateway (curl, median) | seconds | MB/s |")
    print("|---|---:|---:|")
    for row in gateway[:-1]:
        print(f"| {row['target']} | {row['seconds']:.3f} | {row['MB/s']:.1f} |")
    print(f"\nmasked / plain (within each round, median): {gateway[-1]['ratio']:.2f}×")
    return rows + gateway


if __name__ == "__main__":
    main()
