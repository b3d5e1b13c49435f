"""
Fuzz the value detectors and the masker (hoopgw.masking).

Input: one byte choosing the strategy (its low two bits), then text (UTF-8,
undecodable bytes replaced), as a column value or a line of output would be.

Checked: L{find} never raises and its spans are in bounds, ordered and do
not overlap; L{Masker.text} never raises, masks exactly the spans found,
and never leaves a found value in clear where it was; user patterns
taken from the text are either refused with L{PatternError} or compile;
the L{Gate} passes every text something is found in.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz._fuzzing import check, fuzz, instrumented

with instrumented(__name__):
    from hoopgw.masking.detectors import DETECTORS, Gate, PatternError, compile_pattern, find
    from hoopgw.masking.engine import STRATEGIES, Masker

ALL = tuple(DETECTORS)
MASKERS = {s: Masker.build(ALL, s, b"k" * 32) for s in STRATEGIES}
GATE = Gate(MASKERS["redact"].detectors)


def one_input(data: bytes) -> None:
    if not data:
        return
    strategy = STRATEGIES[data[0] & 3]
    text = data[1:].decode("utf-8", "replace")
    masker = MASKERS[strategy]
    spans = find(text, masker.detectors)
    previous_end = 0
    for span in spans:
        check(previous_end <= span.start < span.end <= len(text), f"span {span} out of order or bounds")
        previous_end = span.end
    masked, found = masker.text(text)
    check(found == spans, "text() found other spans than find()")
    if spans:
        # The gate that skips values before decoding must not skip this one.
        check(GATE.passes(text.encode("utf-8", "surrogatepass")), "the gate turned away a value with a find")
    if not spans:
        check(masked == text, "a text with nothing found was changed")
    # Each found value is gone from where it was (the same characters may
    # stand elsewhere, not found as a value there).
    values: dict[str, int] = {}
    for span in spans:
        value = text[span.start:span.end]
        if len(value) >= 8 and strategy != "partial":
            values[value] = values.get(value, 0) + 1
    for value, found in values.items():
        check(masked.count(value) <= text.count(value) - found, f"a found value left in clear: {value!r}")
    if 0 < len(text) <= 64:
        try:
            compile_pattern(text)
        except PatternError:
            pass


if __name__ == "__main__":
    fuzz(one_input)
