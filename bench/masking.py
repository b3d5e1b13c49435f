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
    return rows


if __name__ == "__main__":
    main()
