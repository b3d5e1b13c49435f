"""
Masking engine micro-benchmark: the cost of the value detectors
(L{hoopgw.masking.detectors}) and of masking a text with all of them
(L{hoopgw.masking.engine.Masker}), per value, for the shapes a result
column holds: values no detector can match (the pre-filters alone), values
with digits that match nothing (the regexes run), and values that hold a
sensitive value (found, validated, replaced).

    python bench/masking.py

Prints a markdown table; L{main} returns its rows.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hoopgw.masking.detectors import DETECTORS  # noqa: E402
from hoopgw.masking.engine import Masker  # noqa: E402

VALUES = {
    "word (no digit, no @)": "shipped",
    "sentence, no digit": "The quick brown fox jumps over the lazy dog near the river bank",
    "number": "1234.56",
    "date and amount": "2024-01-15 total 1234.56 EUR",
    "email": "ada.lovelace@example.org",
    "card, spaced": "4111 1111 1111 1111",
    "log line with an IP and a card": "2024-01-15T10:00:00Z 10.0.0.1 paid with 5555555555554444 ok",
    "200-char text with digits": ("order 42 shipped to 12 Main St, unit 7, on 2024-01-15; "
                                  "tracking 1Z999AA10123456784; weight 2.5 kg; items 3 of 5; ") * 2,
}
ROUNDS = 20000


def _per_call(fn: Any, value: str) -> float:
    start = time.perf_counter()
    for _ in range(ROUNDS):
        fn(value)
    return (time.perf_counter() - start) / ROUNDS * 1e6


def _best(fn: Any, value: str, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn(value)
        best = min(best, time.perf_counter() - start)
    return best * 1e6


def session_rows() -> list[dict[str, Any]]:
    """
    A session whose mask runs the ssn, card and email detectors on results
    and on the trail: a PostgreSQL text cell holding JSON or an array (its
    elements searched as whole values where needed), and a statement's text
    as the trail stores it (best of 20).
    """
    import json
    from types import SimpleNamespace

    from hoopgw.masking.service import MaskingService
    from hoopgw.model import Connection, Identity
    from hoopgw.policy.rules import MaskRule, PolicySet
    from hoopgw.protocols.postgres import masking as pg

    service = MaskingService(
        SimpleNamespace(policy_set=PolicySet(masks=[MaskRule("m", detectors=("ssn", "card", "email"))])), b"k" * 32
    )
    masks = service.for_session(Identity("dev", "alice", ("dev",)), Connection("db", "postgres", "x"))
    cell = getattr(pg, "_with_elements", lambda m, text, counts: m.client_text(text, counts))
    items = [{"id": i, "name": f"user {i}", "note": "some ordinary text here", "ts": "2026-12-05T10:00:00Z"}
             for i in range(150)]
    escaped = [{"id": i, "note": 'line one\nline two "quoted"', "ts": "2026-12-05T10:00:00Z"} for i in range(150)]
    shapes = {
        "jsonb cell, plain": (lambda text: cell(masks, text, {}), json.dumps({"items": items})),
        "jsonb cell, escapes": (lambda text: cell(masks, text, {}), json.dumps({"items": escaped})),
        "int[] cell, 500 elements": (lambda text: cell(masks, text, {}), "{" + ",".join(str(100000 + i) for i in range(500)) + "}"),
        "trail text, pgbench -S": (
            lambda text: masks.trail_text(text, {}, pg.string_literals),
            "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
        ),
        "trail text, 1,000-row INSERT": (
            lambda text: masks.trail_text(text, {}, pg.string_literals),
            "INSERT INTO t VALUES " + ",".join(f"({i}, 'name {i}', 'x{i}@example.org', 12345678)" for i in range(1000)),
        ),
    }
    return [{"shape": name, "chars": len(text), "us": _best(fn, text, 20)} for name, (fn, text) in shapes.items()]


def main() -> list[dict[str, Any]]:
    masker = Masker.build(tuple(DETECTORS), "partial", b"k" * 32)
    rows = []
    for name, value in VALUES.items():
        masked, spans = masker.text(value)
        rows.append({"value": name, "chars": len(value), "found": len(spans), "us": _per_call(masker.text, value)})
    print("| value | chars | values found | µs per value (all 9 detectors, partial) |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['value']} | {row['chars']} | {row['found']} | {row['us']:.2f} |")
    print()
    print("| session masking (ssn, card, email) | chars | µs, best of 20 |")
    print("|---|---:|---:|")
    for row in session_rows():
        print(f"| {row['shape']} | {row['chars']} | {row['us']:.1f} |")
    return rows


if __name__ == "__main__":
    main()
