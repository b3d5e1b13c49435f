"""
Best-effort reconstruction of shell command lines from what a client types
into a pty, for C{ssh.shell.line} audit records.

Only the input stream is seen, so the result is an estimate of what the
shell's line editor (readline, zle) held when Enter was pressed: typing,
cursor movement and the common editing keys are replayed; anything whose
effect depends on the shell's state (history recall, tab completion, reverse
search, yank, bindings not modelled here) marks the line C{certain=False}.
Records built from these lines must say they are best-effort; the
asciicast recording is the authoritative evidence.

Limits a front end must handle: typing at a prompt that does not echo
(C{sudo}'s password prompt) looks exactly like typing a command, and
full-screen programs (vim, less) produce meaningless "lines".  The input
alone cannot tell these apart; the SSH front end decides when to feed this.
"""

from __future__ import annotations

import codecs

from attrs import define, field, frozen

__all__ = ["MAX_LINE", "LineReconstructor", "ShellLine"]

# A line longer than this is cut (and marked uncertain), so a client cannot
# grow the gateway's memory by never pressing Enter.
MAX_LINE = 64 * 1024
# Longest escape sequence kept for interpretation; longer ones (nothing a
# keyboard sends) are consumed without being stored.
_MAX_SEQUENCE = 32

ESC = "\x1b"

# SS3 keypad keys in application keypad mode that insert a character.
_KEYPAD = {
    **{chr(ord("p") + i): str(i) for i in range(10)},
    "j": "*",
    "k": "+",
    "l": ",",
    "m": "-",
    "n": ".",
    "o": "/",
    "X": "=",
}

# Mode names of the escape-sequence parser.
_TEXT, _ESC, _CSI, _SS3 = "text", "esc", "csi", "ss3"


@frozen
class ShellLine:
    """One line submitted with Enter; C{certain} is C{False} when guessed."""

    text: str
    certain: bool


def _is_word(ch: str) -> bool:
    # readline's word characters for Meta-b/f/d/DEL: letters and digits.
    return ch.isalnum()


@define
class LineReconstructor:
    """
    Replays a pty input stream through a model of an Emacs-mode line editor.
    L{feed} takes bytes in any chunking and returns the lines completed by
    them; the result does not depend on how the stream was chunked.
    """

    max_line: int = MAX_LINE
    _decoder: codecs.IncrementalDecoder = field(
        factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"), init=False
    )
    _line: list[str] = field(factory=list, init=False)
    _cursor: int = field(default=0, init=False)
    _uncertain: bool = field(default=False, init=False)
    _kill: str = field(default="", init=False)
    _mode: str = field(default=_TEXT, init=False)
    _sequence: str = field(default="", init=False)
    _pasting: bool = field(default=False, init=False)
    _after_cr: bool = field(default=False, init=False)
    _out: list[ShellLine] = field(factory=list, init=False)

    def feed(self, data: bytes) -> list[ShellLine]:
        """Consume input bytes; return the lines they completed, in order."""
        # Decoding first is safe: every control and escape byte is ASCII,
        # and UTF-8 never hides an ASCII byte inside a multi-byte sequence.
        for ch in self._decoder.decode(data):
            self._char(ch)
        out, self._out = self._out, []
        return out

    # Escape-sequence grammar (ECMA-48: CSI = ESC [ params* intermediates* final,
    # SS3 = ESC O final, other escapes = ESC intermediates* final).

    def _char(self, ch: str) -> None:
        mode = self._mode
        if mode == _TEXT:
            if ch == ESC:
                self._mode, self._sequence = _ESC, ""
                self._after_cr = False
            else:
                self._key(ch)
            return
        code = ord(ch)
        if mode == _ESC:
            if ch == "[" and not self._sequence:
                self._mode = _CSI
            elif ch == "O" and not self._sequence:
                self._mode = _SS3
            elif 0x20 <= code <= 0x2F:
                self._sequence = (self._sequence + ch)[:_MAX_SEQUENCE]
            elif 0x30 <= code <= 0x7E:
                self._mode = _TEXT
                self._meta(self._sequence + ch)
            elif ch in "\x7f\x08" and not self._sequence:
                self._mode = _TEXT
                self._meta(ch)
            else:
                # Not a sequence after all: drop the ESC, handle the char.
                self._mode = _TEXT
                if not self._pasting:
                    self._mark()
                self._char(ch)
        elif mode == _CSI:
            if 0x20 <= code <= 0x3F:
                if len(self._sequence) < _MAX_SEQUENCE:
                    self._sequence += ch
                else:
                    self._sequence = "\x00"  # too long to be a key: never matches
            elif 0x40 <= code <= 0x7E:
                self._mode = _TEXT
                self._csi(self._sequence, ch)
            else:
                self._mode = _TEXT
                self._char(ch)
        else:  # _SS3
            self._mode = _TEXT
            if 0x40 <= code <= 0x7E:
                self._ss3(ch)
            else:
                self._char(ch)

    # Keys

    def _key(self, ch: str) -> None:
        after_cr, self._after_cr = self._after_cr, ch == "\r"
        if self._pasting:
            # Pasted text is inserted literally, newlines included (the
            # shell runs it only on the Enter that follows the paste).
            if ch == "\r" or (ch == "\n" and not after_cr):
                self._insert("\n")
            elif ch == "\t" or (ch >= " " and not ("\x7f" <= ch <= "\x9f")):
                self._insert(ch)
            return
        if ch >= " " and not ("\x7f" <= ch <= "\x9f"):
            self._insert(ch)
        elif ch == "\r":
            self._enter()
        elif ch == "\n":
            if not after_cr:  # CR LF is one Enter
                self._enter()
        elif ch in "\x7f\x08":  # DEL, Ctrl-H: backspace
            if self._cursor > 0:
                del self._line[self._cursor - 1]
                self._cursor -= 1
        elif ch == "\x03":  # Ctrl-C: the shell discards the line
            self._reset()
        elif ch == "\x15":  # Ctrl-U
            # bash kills from the cursor back, zsh kills the whole line: the
            # two agree only when the cursor is at the end.
            if self._cursor < len(self._line):
                self._mark()
            self._kill_range(0, self._cursor)
        elif ch == "\x17":  # Ctrl-W: back to the previous whitespace
            i = self._cursor
            while i > 0 and self._line[i - 1].isspace():
                i -= 1
            while i > 0 and not self._line[i - 1].isspace():
                i -= 1
            self._kill_range(i, self._cursor)
        elif ch == "\x0b":  # Ctrl-K: kill to end
            self._kill_range(self._cursor, len(self._line))
        elif ch == "\x01":  # Ctrl-A
            self._cursor = 0
        elif ch == "\x05":  # Ctrl-E
            self._cursor = len(self._line)
        elif ch == "\x02":  # Ctrl-B
            self._cursor = max(0, self._cursor - 1)
        elif ch == "\x06":  # Ctrl-F
            self._cursor = min(len(self._line), self._cursor + 1)
        elif ch == "\x04":  # Ctrl-D: delete at cursor (EOF on an empty line)
            self._delete()
        elif ch == "\x19":  # Ctrl-Y: readline may have joined several kills
            self._mark()
            for c in self._kill:
                self._insert(c)
        elif ch in "\x10\x0e":  # Ctrl-P, Ctrl-N: history
            self._recall()
        elif ch == "\x0c":  # Ctrl-L: clears the screen, not the line
            pass
        else:
            # Tab (completion), Ctrl-R (search), Ctrl-T, Ctrl-_ (undo), Ctrl-X
            # prefixes... change the line in ways the input does not show.
            self._mark()

    def _meta(self, sequence: str) -> None:
        """An ESC-prefixed key (Meta/Alt in Emacs mode)."""
        if self._pasting:
            return
        if sequence == "b":
            self._cursor = self._word_left()
        elif sequence == "f":
            self._cursor = self._word_right()
        elif sequence == "d":
            self._kill_range(self._cursor, self._word_right())
        elif sequence in ("\x7f", "\x08"):
            self._kill_range(self._word_left(), self._cursor)
        else:
            # Meta-. (last argument), vi-mode commands after ESC, ...
            self._mark()

    def _csi(self, params: str, final: str) -> None:
        if params == "200" and final == "~":
            self._pasting = True
            return
        if params == "201" and final == "~":
            self._pasting = False
            return
        if self._pasting:
            return
        # "1;5" and friends carry modifiers (Ctrl, Alt): word movement.
        modified = ";" in params
        if final in "AB":
            self._recall()
        elif final == "D":
            self._cursor = self._word_left() if modified else max(0, self._cursor - 1)
        elif final == "C":
            self._cursor = self._word_right() if modified else min(len(self._line), self._cursor + 1)
        elif final == "H":
            self._cursor = 0
        elif final == "F":
            self._cursor = len(self._line)
        elif final == "~":
            key = params.split(";", 1)[0]
            if key in ("1", "7"):
                self._cursor = 0
            elif key in ("4", "8"):
                self._cursor = len(self._line)
            elif key == "3":
                self._delete()
            elif key in ("5", "6"):  # PageUp/Down: history search in many setups
                self._recall()
        # Other sequences (function keys, focus and mouse reports) do not
        # edit the line; they are consumed.

    def _ss3(self, final: str) -> None:
        if self._pasting:
            return
        if final in "ABCDHF":
            self._csi("", final)
        elif final == "M":  # keypad Enter
            self._enter()
        elif final in _KEYPAD:
            self._insert(_KEYPAD[final])

    # Line editing

    def _insert(self, ch: str) -> None:
        if len(self._line) >= self.max_line:
            self._mark()
            return
        self._line.insert(self._cursor, ch)
        self._cursor += 1

    def _delete(self) -> None:
        if self._cursor < len(self._line):
            del self._line[self._cursor]

    def _kill_range(self, start: int, end: int) -> None:
        if start < end:
            self._kill = "".join(self._line[start:end])
            del self._line[start:end]
        self._cursor = start

    def _word_left(self) -> int:
        i = self._cursor
        while i > 0 and not _is_word(self._line[i - 1]):
            i -= 1
        while i > 0 and _is_word(self._line[i - 1]):
            i -= 1
        return i

    def _word_right(self) -> int:
        i, n = self._cursor, len(self._line)
        while i < n and not _is_word(self._line[i]):
            i += 1
        while i < n and _is_word(self._line[i]):
            i += 1
        return i

    def _recall(self) -> None:
        # The recalled entry replaces the line; only what is typed after it
        # is known.
        self._line.clear()
        self._cursor = 0
        self._mark()

    def _mark(self) -> None:
        self._uncertain = True

    def _enter(self) -> None:
        if self._line or self._uncertain:
            self._out.append(ShellLine("".join(self._line), certain=not self._uncertain))
        self._reset()

    def _reset(self) -> None:
        self._line.clear()
        self._cursor = 0
        self._uncertain = False
