"""
Masking a byte stream as it passes (a terminal's output, what is typed),
for the values a session's masks find, without breaking terminal escape
sequences.  No protocol knowledge: a front end feeds what passes and sends
what comes out.

  - A value may arrive in pieces: the trailing run of characters that could
    still be part of one (digits, letters, separators, C{@.-+/=_%} and
    spaces; at most C{hold} bytes) is held back until more arrives, or
    until L{StreamMasker.flush} (the front end calls it after a short
    quiet time, and before the stream ends).  An unfinished escape
    sequence is held back too.
  - Escape sequences (CSI, OSC, two-byte ESC) are invisible to the
    detectors, so C{4111 1111} with colours between its digits is still
    found; a masked value's escape sequences are kept, after its mask, so
    the terminal's state stays as the program set it.

Against a user who can run commands on the target this is best effort: a
program can always print a value in a shape no detector knows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable

from zope.interface import implementer

from hoopgw.interfaces import ITerminalRecorder

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from hoopgw.masking.service import SessionMasks

__all__ = ["MaskedRecorder", "StreamMasker", "masked_recorder"]

_ESCAPE = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[ -/]*[0-~])")
# An OSC's text (a window title, a hyperlink's target) is searched on its own.
_OSC = re.compile(rb"(\x1b\])([^\x07\x1b]*)(\x07|\x1b\\)")
# A private key's block runs over many packets: from its BEGIN line to its END line.
_KEY_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_KEY_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_KEY_CONTEXT = 64
REDACTED_BYTES = b"[redacted]"
# What a value is made of (and the CSI sequences that may colour it): held
# back at the end of a chunk.
_VALUE_BYTES = frozenset(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz@.-+/=_% ()\x1b[;?"
    b"\xc2\xa0\xe2\x80\x87\xaf"  # the no-break spaces between a number's groups (U+00A0, U+2007, U+202F)
)
_LONGEST_ESCAPE = 4096  # an unterminated sequence longer than this is not waited for

Replacements = Callable[[str], list[tuple[int, int, str]]]


class StreamMasker:
    """
    @param replacements: C{text -> [(start, end, replacement)]}, ordered and
        not overlapping (L{hoopgw.masking.service.SessionMasks.replacements}).
    """

    def __init__(self, replacements: Replacements, hold: int = 2048, keys: bool = False) -> None:
        self.replacements = replacements
        self.hold = hold
        self.keys = keys  # a private key's block is masked to its END line (the private_key detector is on)
        self._held = b""
        self._in_key = False
        self._recent = ""  # the end of what was passed on, for a BEGIN line cut in two

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def feed(self, data: bytes) -> bytes:
        """What of C{data} (after what was held) can be passed on now, masked."""
        data = self._held + data if self._held else data
        cut = len(data)
        escape = data.rfind(b"\x1b")
        if escape >= 0 and cut - escape <= _LONGEST_ESCAPE:
            complete = _ESCAPE.match(data, escape)
            if complete is None or complete.end() > cut:
                cut = escape  # an escape sequence not finished yet
        # The trailing run that could still grow into a value: its last
        # C{hold} bytes at most (a value is shorter than that).
        at, limit = cut, cut - self.hold
        while at > 0 and at > limit and data[at - 1] in _VALUE_BYTES:
            at -= 1
        cut = at
        self._held = data[cut:]
        return self._mask(data[:cut])

    def flush(self) -> bytes:
        """Everything held, masked (a quiet moment, or the end of the stream)."""
        held, self._held = self._held, b""
        return self._mask(held)

    def _mask(self, data: bytes) -> bytes:
        if self._in_key and data:
            # Inside a private key's block: nothing of it passes, to its END line.
            visible = data.decode("utf-8", "surrogateescape")
            end = _KEY_END.search(visible)
            if end is None:
                return b""
            self._in_key = False
            data = visible[end.end() :].encode("utf-8", "surrogateescape")
        if not data:
            return data
        if self.keys:
            # A BEGIN line cut between two chunks (the first one flushed on
            # its own): the key starts here.
            text = data.decode("utf-8", "surrogateescape")
            joined = self._recent + text
            begin = _KEY_BEGIN.search(joined)
            if begin is not None and begin.start() < len(self._recent) < begin.end():
                rest = text[begin.end() - len(self._recent) :]
                self._in_key, self._recent = True, ""
                return REDACTED_BYTES + self._mask(rest.encode("utf-8", "surrogateescape"))
            self._recent = joined[-_KEY_CONTEXT:]
        if b"\x1b]" in data:
            data = _OSC.sub(self._osc, data)
        masked = self._visible(data)
        if self.keys:
            text = data.decode("utf-8", "replace")
            last = None
            for last in _KEY_BEGIN.finditer(text):
                pass
            if last is not None and _KEY_END.search(text, last.end()) is None:
                self._in_key = True  # the detector masked it to the end of this chunk
        return masked

    def _osc(self, match: re.Match[bytes]) -> bytes:
        payload = match.group(2)
        masked = self._visible(payload)
        return match.group(1) + masked + match.group(3) if masked is not payload else match.group()

    def _visible(self, data: bytes) -> bytes:
        """C{data} with what is found in its visible text masked (escape sequences kept)."""
        escapes = list(_ESCAPE.finditer(data)) if b"\x1b" in data else []
        if not escapes:
            text = data.decode("utf-8", "surrogateescape")
            found = self.replacements(text)
            if not found:
                return data
            out, at = [], 0
            for start, end, replacement in found:
                out.append(text[at:start])
                out.append(replacement)
                at = end
            out.append(text[at:])
            return "".join(out).encode("utf-8", "surrogateescape")
        # Visible bytes, and where each came from.
        visible = bytearray()
        origin: list[int] = []
        at = 0
        for match in escapes:
            visible += data[at : match.start()]
            origin.extend(range(at, match.start()))
            at = match.end()
        visible += data[at:]
        origin.extend(range(at, len(data)))
        text = bytes(visible).decode("utf-8", "surrogateescape")
        found = self.replacements(text)
        if not found:
            return data
        masked = bytearray()
        copied = 0
        for start, end, replacement in found:
            first = origin[len(text[:start].encode("utf-8", "surrogateescape"))]
            last = origin[len(text[:end].encode("utf-8", "surrogateescape")) - 1] + 1
            masked += data[copied:first]
            masked += replacement.encode("utf-8", "surrogateescape")
            # The escape sequences inside the value, kept (the terminal's state).
            for match in escapes:
                if first <= match.start() < last:
                    masked += match.group()
            copied = last
        masked += data[copied:]
        return bytes(masked)


@implementer(ITerminalRecorder)
class MaskedRecorder:
    """
    A terminal recorder whose output and input pass a session's trail
    masks -- every mask of the connection, whoever the identity: what is
    stored is masked.  Everything else is the recorder's own.
    """

    def __init__(self, recorder: ITerminalRecorder, masks: SessionMasks) -> None:
        self._recorder = recorder
        self._masks = masks
        self._counts: dict[tuple[str, str], int] = {}
        keys = masks.finds_keys(trail=True)
        self._output = StreamMasker(self._replacements, keys=keys)
        self._input = StreamMasker(self._typed, keys=keys)
        self._closed = False

    def _replacements(self, text: str) -> list[tuple[int, int, str]]:
        return self._masks.replacements(text, self._counts, trail=True)

    def _typed(self, text: str) -> list[tuple[int, int, str]]:
        return self._masks.replacements(text, self._counts, trail=True, typed=True)  # its words: whole values

    def output(self, data: bytes) -> None:
        self._recorder.output(self._output.feed(data))

    def input(self, data: bytes) -> None:
        self._recorder.input(self._input.feed(data))

    @property
    def path(self) -> object:
        return self._recorder.path

    @property
    def failed(self) -> str | None:
        return self._recorder.failed

    def resize(self, cols: int, rows: int) -> None:
        self._recorder.resize(cols, rows)

    def close(self) -> Deferred[str]:
        if not self._closed:
            self._closed = True
            held = self._output.flush()
            if held:
                self._recorder.output(held)
            held = self._input.flush()
            if held:
                self._recorder.input(held)
            counts, self._counts = self._counts, {}
            if counts:
                self._masks.settle(counts)
        return self._recorder.close()


def masked_recorder(recorder: ITerminalRecorder, masks: SessionMasks | None) -> ITerminalRecorder:
    """C{recorder}, masked by C{masks}' trail masks if there are any (L{MaskedRecorder})."""
    if masks is None or not masks.trail:
        return recorder
    return MaskedRecorder(recorder, masks)
