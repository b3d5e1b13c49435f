"""
What the fuzz harnesses share (tests/fuzz/README.md).

Importable without atheris: every harness's C{one_input(data)} is plain
Python, so C{tests/fuzz/test_corpus.py} runs the seed corpora through the
same checks in the ordinary test suite.  Only a harness run as a script
(C{python tests/fuzz/fuzz_x.py ...}) imports atheris and has the hoopgw
modules it tests instrumented for coverage.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Callable, ContextManager

ROOT = Path(__file__).resolve().parents[2]
CORPORA = Path(__file__).resolve().parent / "corpus"


class Violation(AssertionError):
    """An invariant the harness checks does not hold (not an C{assert}: C{python -O} keeps it)."""


def check(condition: object, problem: str) -> None:
    if not condition:
        raise Violation(problem)


def instrumented(module_name: str) -> ContextManager[Any]:
    """
    Around a harness's hoopgw imports: coverage instrumentation of the
    C{hoopgw} package when the harness runs under atheris (as C{__main__}),
    nothing when it is imported (by the seed test, or without atheris).
    """
    if module_name != "__main__":
        return contextlib.nullcontext()
    try:
        import atheris
    except ImportError:
        return contextlib.nullcontext()
    return atheris.instrument_imports(include=["hoopgw"])


def fuzz(one_input: Callable[[bytes], None]) -> None:
    """Run C{one_input} under libFuzzer; its flags and corpus come from C{sys.argv}."""
    import atheris

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


class Input:
    """
    Fuzz bytes read as a sequence of small decisions.  Never raises: past
    the end it reads zeros, so every input is a valid script.
    """

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def below(self, n: int) -> int:
        """A number in C{range(n)}."""
        return self.byte() % n

    def take(self, n: int) -> bytes:
        value = self.data[self.pos : self.pos + n]
        self.pos += len(value)
        return value

    def sized(self) -> bytes:
        """A 2-byte big-endian length, then that many bytes (fewer at the end)."""
        return self.take(self.byte() << 8 | self.byte())

    def rest(self) -> bytes:
        return self.take(self.left)


def chunks(data: bytes, seed: int) -> list[bytes]:
    """
    C{data} cut into non-empty pieces, deterministically from C{seed}: 0 is
    one piece, 1 one byte each, otherwise sizes from 1 to C{seed} drawn
    from a linear congruential sequence.
    """
    if not data:
        return []
    if seed == 0:
        return [data]
    if seed == 1:
        return [data[i : i + 1] for i in range(len(data))]
    out, pos, state = [], 0, seed
    while pos < len(data):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        size = 1 + (state >> 8) % seed
        out.append(data[pos : pos + size])
        pos += size
    return out


def corpus_files(target: str) -> list[Path]:
    """The seed files of C{target}'s corpus (C{corpus/<target>/}), sorted."""
    return sorted(p for p in (CORPORA / target).iterdir() if p.is_file() and not p.name.startswith("."))
