"""
Masking values: what a sensitive value becomes (the C{strategy} of a
C{[[mask]]}), for a whole value (a column masked by where it comes from)
and for the sensitive parts of a text (the detectors).  Pure: no protocol
knowledge, no I/O; the per-gateway hash key is read once by the caller
(L{load_key}, at start-up).

Strategies:

  - C{redact}: C{[redacted]};
  - C{partial}: letters and digits but the last four become C{*},
    separators stay (C{****-****-****-1111}); four or fewer are all masked;
  - C{hash}: C{hmac:} and 32 hex digits of HMAC-SHA-256 under the
    gateway's key, so equal values stay equal (joins and counts still work)
    and cannot be reversed without the key;
  - C{null}: no value (SQL NULL, JSON null).  Inside a longer text, where a
    part cannot be null, the part is redacted.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable
from hashlib import sha256
from pathlib import Path

from attrs import frozen

from hoopgw.keys import create_private_file
from hoopgw.masking.detectors import DETECTORS, Detector, Span, find

__all__ = ["REDACTED", "STRATEGIES", "Masker", "load_key", "mask_value"]

REDACTED = "[redacted]"
STRATEGIES = ("redact", "partial", "hash", "null")
_KEEP = 4


def mask_value(strategy: str, value: str, key: bytes) -> str | None:
    """C{value} masked by C{strategy} (module docstring)."""
    if strategy == "redact":
        return REDACTED
    if strategy == "partial":
        keep = sum(c.isalnum() for c in value)
        keep = keep - _KEEP if keep > _KEEP else keep
        out = []
        for c in value:
            if c.isalnum() and keep > 0:
                out.append("*")
                keep -= 1
            else:
                out.append(c)
        return "".join(out)
    if strategy == "hash":
        return "hmac:" + hmac.new(key, value.encode("utf-8", "surrogatepass"), sha256).hexdigest()[:32]
    if strategy == "null":
        return None
    raise ValueError(f"unknown masking strategy {strategy!r}")


def load_key(data_dir: Path) -> bytes:
    """
    The gateway's masking key (C{masking.key} in its data folder, 32 random
    bytes, mode 0600), made on first use.  Blocking: start-up only.
    """
    path = data_dir / "masking.key"
    create_private_file(path, os.urandom(32))
    key = path.read_bytes()
    if len(key) != 32:
        raise ValueError(f"{path}: expected 32 bytes, found {len(key)}")
    return key


@frozen
class Masker:
    """
    One mask's way of masking: its detectors (and user patterns) and its
    strategy.  L{value} masks a whole value; L{text} the detected parts.
    """

    detectors: tuple[Detector, ...]
    strategy: str
    key: bytes

    @classmethod
    def build(cls, detectors: Iterable[str], strategy: str, key: bytes, patterns: Iterable[Detector] = ()) -> "Masker":
        found = tuple(d for name in detectors for d in DETECTORS[name]) + tuple(patterns)
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown masking strategy {strategy!r}")
        return cls(found, strategy, key)

    def value(self, value: str) -> str | None:
        return mask_value(self.strategy, value, self.key)

    def text_value(self, value: str) -> str:
        """A found value masked inside a longer text (where it cannot be null: redacted)."""
        masked = mask_value("redact" if self.strategy == "null" else self.strategy, value, self.key)
        assert masked is not None  # only "null" masks a value to None
        return masked

    def constant(self) -> bytes | None:
        """What every value becomes, when that does not depend on the value (C{redact})."""
        return REDACTED.encode() if self.strategy == "redact" else None

    def text(self, text: str) -> tuple[str, list[Span]]:
        """C{text} with each detected value masked, and where they were (no values)."""
        spans = find(text, self.detectors)
        if not spans:
            return text, spans
        out = []
        at = 0
        for span in spans:
            out.append(text[at:span.start])
            out.append(self.text_value(text[span.start:span.end]))
            at = span.end
        out.append(text[at:])
        return "".join(out), spans
