"""
Audit trail benchmark: append throughput (batched and strict) and offline
verification speed.

    /tmp/probe/bin/python bench/audit.py [--records 1000000] [--append 200000]

Prints a markdown table; C{main()} returns the rows.  The log runs on a
L{Clock} with fdatasync called inline (not in a thread) every group-commit
window, so the numbers include the real fdatasync cost on this disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock

from hoopgw.audit.log import RECORDS_FILE, AuditLog
from hoopgw.audit.verify import verify

KEY = Ed25519PrivateKey.generate()


def record_body(i: int) -> dict:
    """A realistic ~400-byte action record body."""
    return {
        "session": f"01HV3K{i // 20:020d}",
        "connection": "appdb",
        "target": "10.0.12.7:5432",
        "source": {"protocol": "postgres", "address": f"10.1.2.{i % 250}:{40000 + i % 20000}"},
        "identity": {
            "iss": "https://idp.example.com",
            "sub": "alice@example.com",
            "groups": ["dba", "dev"],
            "method": "token",
            "credential_sha256": "9f2b5e0c4d1a7b3e8f6a2c9d0e1b4a7c5d8e2f1a3b6c9d0e4f7a1b2c5d8e9f0a",
        },
        "action": {"kind": "sql.query", "input": f"SELECT id, email FROM users WHERE id = {i}"},
        "decision": {"effect": "allow", "rule": "dev-may-use-appdb"},
    }


def _log(directory: Path, clock: Clock, **kwargs: object) -> AuditLog:
    return AuditLog(
        directory,
        signing_key=KEY,
        origin="hoopgw/bench",
        reactor=clock,
        sync_runner=maybeDeferred,
        **kwargs,  # type: ignore[arg-type]
    )


def bench_append(root: Path, n: int, sync: str, batch: int) -> float:
    """Records/s appending C{n} records, C{batch} per group commit."""
    clock = Clock()
    log = _log(root / f"append-{sync}", clock, sync=sync, sync_window_ms=10, checkpoint_every=1000)
    log.startService()
    bodies = [record_body(i) for i in range(batch)]
    done = []
    started = time.perf_counter()
    for start in range(0, n, batch):
        for i in range(batch):
            d = log.append("action.start", bodies[i])
            if sync == "strict":
                d.addCallback(done.append)
        clock.advance(0.01)  # the window passes: one fdatasync for the batch
    elapsed = time.perf_counter() - started
    log.stopService()
    clock.advance(0.01)
    if sync == "strict":
        assert len(done) == n, (len(done), n)
    return n / elapsed


def generate(directory: Path, n: int) -> None:
    clock = Clock()
    log = _log(directory, clock, sync="batched", checkpoint_every=100_000)
    log.startService()
    bodies = [record_body(i) for i in range(1000)]
    for start in range(0, n, 1000):
        for i in range(1000):
            log.append("action.start", bodies[i])
        clock.advance(0.01)
    log.stopService()
    clock.advance(0.01)


def main(argv: list[str] | None = None) -> list[tuple[str, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the verified log")
    parser.add_argument("--append", type=int, default=200_000, help="records per append run")
    args = parser.parse_args(argv)
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="hoopgw-bench-") as tmp:
        root = Path(tmp)
        rate = bench_append(root, args.append, "batched", 1000)
        rows.append(("append, batched (fdatasync per 10 ms window)", f"{rate:,.0f} records/s", "aim >= 50,000"))
        rate = bench_append(root, args.append // 4, "strict", 100)
        rows.append(("append, strict (100 concurrent appends per fdatasync)", f"{rate:,.0f} records/s", ""))
        directory = root / "verify"
        generate(directory, args.records)
        size = (directory / RECORDS_FILE).stat().st_size
        vkey = _log(directory, Clock()).vkey
        for workers, label in ((0, "1 process"), (None, f"{os.cpu_count()} worker processes")):
            started = time.perf_counter()
            report = verify(directory, vkey, workers=workers)
            elapsed = time.perf_counter() - started
            assert report.ok and report.records == args.records + 1, report  # + the closing record
            rows.append(
                (
                    f"verify {args.records:,} records ({size / args.records:.0f} B each), {label}",
                    f"{args.records / elapsed:,.0f} records/s",
                    "aim >= 200,000",
                )
            )
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, {platform.system()} {platform.release()}")
    print()
    print("| measurement | result | note |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
