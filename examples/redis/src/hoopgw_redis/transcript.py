"""
A Redis session's transcript: what the client asked for and what it got,
one line each, timestamped, in the session's recording.

The format is hoopgw's own for recordings, asciicast v2 (what the SSH and
C{kubectl exec} front ends write, and C{hoopgw replay --play}, C{asciinema
play} and C{hoopgw.recording.asciicast.read_asciicast} read): a header
line, then one C{[elapsed, "o", text]} event per line of the transcript, so
playing it prints the session as it went:

    hoopgw: alice on cache (127.0.0.1:6379), session 6f1c...
    [login] < simple string, 5 bytes
    [1] > SET k "4111 1111 1111 1111"          (what the trail stores: masked)
    [1] < simple string, 5 bytes
    [2] > FLUSHALL (refused)
    [2] < error, 98 bytes: NOPERM hoopgw: rule 'no-wipe' denies this command; ...
    [-] < push message, 3 items, 48 bytes

A command is its action's number and its input I{as the trail stores it}:
the text of L{hoopgw_redis.actions.describe} (passwords shown as
C{<redacted>}, long arguments as their length and a hash), through every
mask of the connection (C{SessionMasks.trail_text}), whoever the client is.
A reply is summed up, never shown: its RESP type, its size on the wire,
its item count, how many values the client's masks masked in it; an
error's text is kept, through every mask of the connection, when it is
the reply to a command whose every argument its line shows as it is (no
password, none summarised: redis-server quotes arguments in some errors,
and a script can return any) and is short; else only its code.  The
login itself (C{AUTH}, C{HELLO ... AUTH}) is never a line.

hoopgw's asciicast recorder (C{AsciicastRecorder}) writes to the file the session opened
for it (C{ISession.open_recording}); its SHA-256 goes into C{session.end}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from hoopgw.frontend import AsciicastRecorder

from hoopgw_redis.resp import (
    Attributed,
    BigNumber,
    Double,
    Error,
    Map,
    Null,
    ProtocolError,
    Push,
    ReplyParser,
    Set,
    SimpleString,
    Verbatim,
)

if TYPE_CHECKING:
    from hoopgw.frontend import ISession, SessionMasks

__all__ = ["KEY", "SUFFIX", "Transcript", "open_transcript", "summary"]

log = Logger()

#: The recording's name: C{<session id>-transcript.cast} in the recordings folder.
KEY = "transcript"
SUFFIX = ".cast"
# An error text longer than this is not kept (only its code): a part of it
# could be a part of a value no mask recognises once cut.
MAX_ERROR_TEXT = 1024
# Kinds of out-of-band data named in the transcript (any other: not named,
# as the first item of a module's push could be anything).
_PUSH_KINDS = frozenset({
    b"message", b"pmessage", b"smessage", b"subscribe", b"psubscribe", b"ssubscribe", b"unsubscribe",
    b"punsubscribe", b"sunsubscribe", b"invalidate", b"tracking-redir-broken",
})


def _escape(text: str) -> str:
    """C{text} safe to print on a terminal: control and format characters as escapes."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


_TYPES: dict[type, str] = {
    bytes: "bulk string",
    int: "integer",
    bool: "boolean",
    SimpleString: "simple string",
    Double: "double",
    BigNumber: "big number",
    Verbatim: "verbatim string",
}
_NULLS = {Null.BULK: "null bulk string", Null.ARRAY: "null array", Null.NULL: "null"}


def summary(value: Any, size: int) -> str:
    """
    A reply's type, its item count (an aggregate's) and its size (C{size}
    bytes on the wire), never its content; an error's text is added by
    L{Transcript}, not here.
    """
    kind = type(value)
    if kind is Attributed:
        return "with attributes, " + summary(value.value, size)
    name = _TYPES.get(kind)
    if name is not None:
        return f"{name}, {size} bytes"
    if kind is Null:
        return f"{_NULLS[value]}, {size} bytes"
    if kind is Error:
        return f"{'bulk error' if value.bulk else 'error'}, {size} bytes"
    if kind is tuple:
        return f"array of {len(value)}, {size} bytes"
    if kind is Map:
        return f"map of {len(value.pairs)}, {size} bytes"
    if kind is Set:
        return f"set of {len(value.items)}, {size} bytes"
    if kind is Push:
        first = value.items[0] if value.items else None
        named = f" {first.decode('ascii')}" if type(first) is bytes and first in _PUSH_KINDS else ""
        return f"push{named}, {len(value.items)} items, {size} bytes"
    return f"a value, {size} bytes"


def _masked(masked: Mapping[str, int] | None) -> str:
    if not masked:
        return ""
    return ", masked: " + ", ".join(f"{_escape(name)}={count}" for name, count in sorted(masked.items()))


# Who a line is about: an action (its handle), the login ("login") or nobody (None).
Owner = Any


def _label(owner: Owner) -> str:
    if owner is None:
        return "[-]"
    if isinstance(owner, str):
        return f"[{owner}]"
    number = getattr(owner, "number", None)
    return f"[{number}]" if isinstance(number, int) else "[-]"


class Transcript:
    """
    A session's transcript (module docstring): the glue records each
    command (L{command}), the relay each reply as the client gets it
    (L{reply}) and each reply of the gateway's own (L{local}).

    @param masks: the session's masks now (they follow policy reloads).
    @param literals: the session's C{literals} (what the trail's masks also read).
    """

    def __init__(
        self,
        recorder: AsciicastRecorder,
        masks: Callable[[], SessionMasks | None],
        literals: Callable[[str], Any] | None = None,
    ) -> None:
        self.recorder = recorder
        self._masks = masks
        self._literals = literals

    def _line(self, text: str) -> None:
        # (Buffered by the recorder: written in one write per 64 KiB or 0.2 s, never one per command.)
        self.recorder.output((text + "\r\n").encode("utf-8", "replace"))

    def _trail(self, text: str) -> str:
        """C{text} as the trail would store it (every mask of the connection); not counted again."""
        masks = self._masks()
        if masks is None or not masks.trail:
            return text
        return masks.trail_text(text, {}, self._literals)

    def header(self, text: str) -> None:
        self._line(_escape(self._trail(text)))

    def command(self, owner: Owner, text: str, *, refused: bool = False) -> None:
        """
        A command, C{text} its action's input (L{hoopgw_redis.actions.describe}:
        passwords already redacted, arguments quoted as redis-cli does).
        """
        shown = self._trail(text)
        self._line(f"{_label(owner)} > {_escape(shown)}{' (refused)' if refused else ''}")

    def reply(
        self, owner: Owner, value: Any, size: int, masked: Mapping[str, int] | None = None, *, hidden: bool = False
    ) -> None:
        """
        A reply (or out-of-band data) as the client got it: C{size} bytes,
        C{masked} values masked.  C{hidden}: its command has an argument
        its line does not show as it is (a password, a long one:
        L{Described.hidden <hoopgw_redis.actions.Described.hidden>}), which
        an error may quote: an error's code only.
        """
        text = f"{_label(owner)} < {summary(value, size)}{_masked(masked)}"
        plain = value.value if type(value) is Attributed else value
        if type(plain) is Error:
            text += self._error(owner, plain, hidden)
        self._line(text)

    def local(self, owner: Owner, data: bytes, *, hidden: bool = False) -> None:
        """A reply of the gateway's own (already encoded: C{data})."""
        try:
            values = ReplyParser().feed(data)
        except ProtocolError:
            values = []
        if len(values) != 1:
            self._line(f"{_label(owner)} < {len(data)} bytes")
            return
        self.reply(owner, values[0], len(data), hidden=hidden)

    def _error(self, owner: Owner, error: Error, hidden: bool) -> str:
        message = error.message.decode("utf-8", "replace")
        if owner is None or hidden or len(message) > MAX_ERROR_TEXT:
            # Not a command's reply (a protocol error may quote what the
            # client sent), a command with an argument its line does not
            # show (a password), or too long to mask whole: the code only.
            code = error.code.decode("utf-8", "replace")[:32]
            return f": {_escape(self._trail(code))} (text not recorded)"
        return f": {_escape(self._trail(message))}"


def open_transcript(
    session: ISession, clock: IReactorTime, *, on_failure: Callable[[str], object] | None = None
) -> Transcript | None:
    """
    The session's transcript in a recording it opens (C{ISession.open_recording}:
    C{<session id>-transcript.cast}, its SHA-256 in C{session.end}), or
    C{None} when the gateway keeps no recordings.
    """
    identity, connection = session.identity, session.connection
    masks = session.masks
    title = f"{identity.subject} on {connection.name}: Redis commands"
    if masks is not None and masks.trail:
        title = masks.trail_text(title, {})  # the header is stored too: as the trail would store it

    def make(path: str, fd: int) -> AsciicastRecorder:
        return AsciicastRecorder(path, fd=fd, clock=clock, width=80, height=24, title=title, on_failure=on_failure)

    recorder = session.open_recording(KEY, make, suffix=SUFFIX)
    if recorder is None:
        return None
    transcript = Transcript(recorder, lambda: session.masks, session.literals)
    transcript.header(f"hoopgw: {identity.subject} on {connection.name} ({connection.target}), session {session.id}")
    return transcript
