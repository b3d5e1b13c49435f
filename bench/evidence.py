"""
Evidence and bundle benchmark: `hoopgw evidence` over a log of a million
records (wall time and peak memory of the command, run as a child process
as an auditor runs it), and `hoopgw sessions export` / `audit verify-bundle`
of a 10,000-record session inside that log.

    python bench/evidence.py [--records 1000000] [--session-records 10000]

The log is written by the real AuditLog (on a Clock, fdatasync inline), with
sessions as the gateway writes them: session.start, actions (start and end;
one in 20 blocked), session.end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet.task import Clock

from audit import KEY, _log

# The CLI, reporting its own peak RSS (KiB) on stderr as it exits.
HOOPGW = [sys.executable, "-c", (
    "import resource, sys; from hoopgw.cli import main; code = main(); "
    "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)"
)]
ROOT = Path(__file__).resolve().parent.parent


def _identity(i: int) -> dict:
    return {"iss": "https://idp.example.com", "sub": f"user{i % 50}@example.com", "groups": ["dev"], "method": "jwt",
            "credential_sha256": "9f2b5e0c4d1a7b3e8f6a2c9d0e1b4a7c5d8e2f1a3b6c9d0e4f7a1b2c5d8e9f0a"}


def generate(data_dir: Path, records: int, long_session: int) -> str:
    """A log of about C{records} records; returns the id of the session with C{long_session} records."""
    clock = Clock()
    audit = data_dir / "audit"
    log = _log(audit, clock, sync="batched", checkpoint_every=100_000)
    log.startService()
    (data_dir / "keys").mkdir(parents=True, exist_ok=True)
    key_path = data_dir / "keys" / "audit_ed25519.pem"
    from cryptography.hazmat.primitives import serialization

    key_path.write_bytes(KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    written = 0
    number = 0
    long_id = ""
    while written < records:
        session = f"{number:024x}"
        actions = (long_session - 2) // 2 if number == 7 else 20
        if number == 7:
            long_id = session
        common = {"session": session, "connection": "appdb", "target": "10.0.12.7:5432", "kind": "postgres",
                  "protocol": "postgres", "source": f"10.1.2.{number % 250}:40000", "identity": _identity(number)}
        log.append("session.start", {**common, "client": {"application_name": "psql"},
                                     "decision": {"effect": "allow", "rule": "dev-may-use-appdb"}})
        for a in range(actions):
            blocked = a % 20 == 19
            action = {"id": f"{session}/{a + 1}", "kind": "sql.query", "input": f"SELECT id, email FROM users WHERE id = {a}"}
            log.append("action.start", {**common, "action": action, "decision": {
                "effect": "deny" if blocked else "allow", "rule": "no-pii" if blocked else "dev-may-use-appdb"}})
            log.append("action.end", {**common, "action": {"id": action["id"], "kind": "sql.query"},
                                      "outcome": {"status": "blocked", "error": "no"} if blocked else
                                      {"status": "succeeded", "rows": 1, "duration_us": 900}})
        log.append("session.end", {**common, "end": {"status": "closed", "actions": actions, "duration_us": 1,
                                                     "bytes_in": 1, "bytes_out": 1}})
        written += 2 + 2 * actions
        number += 1
        clock.advance(0.01)
    log.stopService()
    clock.advance(0.01)
    (audit / "audit.vkey").write_text(log.vkey + "\n")
    return long_id


def timed(argv: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS in MiB, output) of one CLI run."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[3:]} failed: {done.stdout}{done.stderr}")
    peak = int(done.stderr.rsplit("peak-rss-kib", 1)[1].split()[0])
    return elapsed, peak / 1024, done.stdout.strip()


def main(argv: list[str] | None = None) -> list[tuple[str, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--session-records", type=int, default=10_000)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hoopgw-bench-evidence-") as tmp:
        data = Path(tmp) / "data"
        started = time.perf_counter()
        session = generate(data, args.records, args.session_records)
        total = sum(1 for _ in open(data / "audit" / "records.jsonl", "rb"))
        size = (data / "audit" / "records.jsonl").stat().st_size
        print(f"(generated {total:,} records, {size / 2**20:.0f} MiB, in {time.perf_counter() - started:.0f} s)", file=sys.stderr)
        config = Path(tmp) / "admin.toml"
        config.write_text(f'[gateway]\ndata_dir = "{data}"\n[listen]\npostgres = false\nssh = false\nhttp = false\napi = false\n')
        base = [*HOOPGW, "--config", str(config)]
        bundle = Path(tmp) / "bundle.tar"
        seconds, peak, _ = timed([*base, "sessions", "export", session, "--out", str(bundle)])
        records = len(json.loads(subprocess.run(["tar", "-xOf", str(bundle), "manifest.json"], capture_output=True).stdout)["records"])
        rows.append((f"sessions export, a {records:,}-record session in {total:,} records", f"{seconds:.1f} s, peak {peak:.0f} MiB", ""))
        seconds, peak, _ = timed([*HOOPGW, "audit", "verify-bundle", str(bundle)])
        rows.append((f"audit verify-bundle, {records:,} records", f"{seconds:.2f} s", ""))
        for fmt in ("csv", "json"):
            out = Path(tmp) / f"evidence.{fmt}"
            seconds, peak, _ = timed([*base, "evidence", "--format", fmt, "--out", str(out)])
            rows.append((f"evidence, every control, {total:,} records, {fmt} ({out.stat().st_size / 2**20:.1f} MiB)",
                         f"{seconds:.1f} s, peak {peak:.0f} MiB", "aim: under 60 s and 500 MB"))
    print("| measurement | result | note |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
