"""
Run every fuzz harness (tests/fuzz/fuzz_*.py) for a short while, as CI does.

    python tests/fuzz/run.py [--seconds 15] [--seed 1] [--keep DIR] [TARGET ...]

Each harness runs under libFuzzer (atheris) on a temporary copy of its seed
corpus (libFuzzer adds the inputs it finds to its first corpus folder; the
repository's stays as committed), with C{-timeout=10}: an input that runs
longer is a hang.  The exit status is non-zero when any harness found a
crash (an exception its target may not raise, a broken invariant), a hang
or ran out of memory, or did not finish in time; each reproducer's path is
printed with the command that replays it, and its bytes in base64, so a CI
log is enough to reproduce.

The libFuzzer seed is fixed (C{--seed 1}) so that a run explores the same
inputs each time; C{--seed 0} lets libFuzzer pick one.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CORPORA = HERE / "corpus"
DICTIONARIES = HERE / "dict"
TIMEOUT = 10  # seconds for one input: longer is a hang
SLACK = 60  # seconds on top of --seconds before a harness run counts as stuck
_ARTIFACT_PREFIXES = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")


def harnesses() -> dict[str, Path]:
    return {p.stem.removeprefix("fuzz_"): p for p in sorted(HERE.glob("fuzz_*.py"))}


def run_one(target: str, harness: Path, seconds: int, seed: int, work: Path) -> tuple[bool, str, list[Path]]:
    """Fuzz C{target}; return (passed, libFuzzer's output, reproducers)."""
    corpus = work / "corpus"
    artifacts = work / "artifacts"
    shutil.copytree(CORPORA / target, corpus)
    artifacts.mkdir()
    command = [
        sys.executable, str(harness), str(corpus),
        f"-max_total_time={seconds}", f"-timeout={TIMEOUT}", "-rss_limit_mb=2048",
        f"-artifact_prefix={artifacts}/", f"-seed={seed}", "-print_final_stats=1",
    ]
    dictionary = DICTIONARIES / f"{target}.dict"
    if dictionary.is_file():
        command.append(f"-dict={dictionary}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               PYTHONDONTWRITEBYTECODE="1")
    log = work / "fuzz.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            status = process.wait(timeout=seconds + TIMEOUT + SLACK)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = None
    output = log.read_text("utf-8", "replace")
    found = sorted(p for p in artifacts.iterdir() if p.name.startswith(_ARTIFACT_PREFIXES))
    if status is None:
        output += f"\n[run.py] the harness did not stop within {seconds + TIMEOUT + SLACK} s: killed\n"
    return status == 0 and not found, output, found


def _stats(output: str) -> str:
    runs = next((line.split()[-1] for line in output.splitlines() if line.startswith("stat::number_of_executed_units")), "?")
    cov = [line for line in output.splitlines() if line.startswith("#") and "cov:" in line]
    last = cov[-1].split("cov:")[1].split()[0] if cov else "?"
    return f"{runs} runs, coverage {last}"


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the fuzz harnesses briefly; fail on any crash or hang.")
    parser.add_argument("targets", nargs="*", help="targets to run (default: all): " + ", ".join(harnesses()))
    parser.add_argument("--seconds", type=int, default=15, help="fuzzing time per harness (default 15)")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed (default 1; 0: random)")
    parser.add_argument("--keep", type=Path, help="copy each harness's work folder (corpus, artifacts, log) here")
    args = parser.parse_args()

    available = harnesses()
    unknown = set(args.targets) - set(available)
    if unknown:
        parser.error(f"no harness for {', '.join(sorted(unknown))}")
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("run.py: atheris is not installed (pip install 'atheris>=2.3', or: tox -e fuzz)", file=sys.stderr)
        return 2

    failures = []
    started = time.monotonic()
    for target in args.targets or available:
        with tempfile.TemporaryDirectory(prefix=f"hoopgw-fuzz-{target}-") as tmp:
            work = Path(tmp)
            t0 = time.monotonic()
            passed, output, found = run_one(target, available[target], args.seconds, args.seed, work)
            took = time.monotonic() - t0
            print(f"fuzz {target}: {'ok' if passed else 'FAILED'} in {took:.0f} s ({_stats(output)})", flush=True)
            kept = None
            if args.keep is not None or not passed:
                kept = Path(args.keep or tempfile.mkdtemp(prefix="hoopgw-fuzz-failed-")) / target
                shutil.copytree(work, kept, dirs_exist_ok=True)
            if passed:
                continue
            failures.append(target)
            print("\n".join(output.splitlines()[-60:]))
            for artifact in found:
                reproducer = kept / "artifacts" / artifact.name  # type: ignore[operator]
                data = artifact.read_bytes()
                print(f"\n  reproducer: {reproducer}\n  replay:     PYTHONPATH=. {Path(sys.executable).name} "
                      f"{available[target].relative_to(ROOT)} {reproducer}")
                if len(data) <= 4096:
                    print(f"  base64:     {base64.b64encode(data).decode()}")
            print(f"  log:        {kept / 'fuzz.log'}\n", flush=True)  # type: ignore[operator]
    print(f"fuzz: {len(args.targets or available)} harnesses in {time.monotonic() - started:.0f} s, "
          f"{'failed: ' + ', '.join(failures) if failures else 'no crash or hang'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
