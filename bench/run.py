"""
Run every benchmark (or the named ones) and print their markdown tables.
Benchmarks measure; they never pass or fail.  Results worth keeping go into
docs/benchmarks.md by hand, with the machine line printed here.

    python bench/run.py [NAME ...]
"""

from __future__ import annotations

import argparse
import importlib
import platform
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "audit", "policy", "sql_classify", "masking", "pg_masking", "http_masking", "pg_codec", "pg_statement", "pgbench",
    "pg_reviews", "ssh", "http_pipeline", "http_proxy", "evidence", "redis",
]


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*", default=BENCHMARKS, help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    # Each benchmark runs on its defaults: those that read options from
    # sys.argv must not see the names given here.
    del sys.argv[1:]
    sys.path.insert(0, str(HERE))
    print(f"# hoopgw benchmarks — {time.strftime('%Y-%m-%d')} — {machine()}\n")
    for name in args.names:
        module = importlib.import_module(name)
        print(f"## {name}\n", flush=True)
        module.main()
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
