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

The recorder (L{TranscriptRecorder}) writes to the file the session opened
for it (C{ISession.open_recording}); its SHA-256 goes into C{session.end}.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from hoopgw.frontend import IRecorder

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

__all__ = ["KEY", "SUFFIX", "Transcript", "TranscriptRecorder", "open_transcript", "summary"]

log = Logger()

#: The recording's name: C{<session id>-transcript.cast} in the recordings folder.
KEY = "transcript"
SUFFIX = ".cast"
# Lines wait in memory until this many bytes or this many seconds, then go
# out in one write: a write per command would put the disk on the hot path.
FLUSH_BYTES = 64 * 1024
FLUSH_DELAY = 0.2
# No event (one line of the file) is longer than this many characters: a
# long line is cut into several events, as the asciicast recorder does.
MAX_EVENT_CHARS = 16 * 1024
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


def _event_line(elapsed: float, text: str) -> bytes:
    # As hoopgw's asciicast recorder writes an event (fixed notation; JSON
    # escapes every control character, so the only raw newline ends the line).
    return f"[{elapsed:.6f}, \"o\", {json.dumps(text, ensure_ascii=False)}]\n".encode("utf-8", "replace")


@implementer(IRecorder)
class TranscriptRecorder:
    """
    Writes one asciicast v2 file of text lines (L{line}), on a file already
    opened for it (C{fd}, which it owns once created: closed by L{close}).
    Creating it writes the header (C{OSError} if it cannot: the file is
    still its opener's to close).  If the file cannot be written later (disk
    full), C{failed} says why, C{on_failure} is called once and later lines
    are dropped; L{close} still returns the SHA-256 of exactly the bytes
    that reached the file, so the digest in C{session.end} matches it.
    """

    def __init__(
        self,
        path: str,
        fd: int,
        *,
        clock: IReactorTime,
        title: str,
        width: int = 80,
        height: int = 24,
        flush_bytes: int = FLUSH_BYTES,
        flush_delay: float = FLUSH_DELAY,
        on_failure: Callable[[str], object] | None = None,
    ) -> None:
        self.path = path
        self.clock = clock
        self.flush_bytes = flush_bytes
        self.flush_delay = flush_delay
        self.on_failure = on_failure
        self.failed: str | None = None
        self.closed = False
        self.bytes_written = 0
        self._fd = fd
        self._start = clock.seconds()
        self._last = 0.0
        self._sha256 = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._flush_call: IDelayedCall | None = None
        self._digest: str | None = None
        header = {"version": 2, "width": width, "height": height, "timestamp": int(self._start), "title": title}
        data = (json.dumps(header, ensure_ascii=False) + "\n").encode("utf-8", "replace")
        # The header now, a session that records nothing more still has a valid file; if it cannot
        # be written, OSError: the file stays its opener's, and the session is not opened unrecorded.
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        self._sha256.update(data)
        self.bytes_written = written

    def line(self, text: str) -> None:
        """Record one line of text (terminal-safe already: see L{_escape})."""
        if self.closed or self.failed is not None:
            return
        # A wall clock may step backwards; players expect times that never do.
        now = max(self._last, self.clock.seconds() - self._start)
        self._last = now
        text += "\r\n"
        for i in range(0, len(text), MAX_EVENT_CHARS):
            event = _event_line(now, text[i : i + MAX_EVENT_CHARS])
            self._buffer.append(event)
            self._buffered += len(event)
        if self._buffered >= self.flush_bytes or self.flush_delay <= 0:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = self.clock.callLater(self.flush_delay, self._timed_flush)

    def _timed_flush(self) -> None:
        self._flush_call = None
        self.flush()

    def flush(self) -> None:
        """Write what is buffered now."""
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        if not self._buffer:
            return
        data = memoryview(b"".join(self._buffer))
        self._buffer.clear()
        self._buffered = 0
        while data and self.failed is None and self._fd >= 0:
            try:
                n = os.write(self._fd, data)
            except InterruptedError:
                continue
            except OSError as e:
                self._fail(e.strerror or str(e))
                return
            # Hash exactly what reached the file: the digest stays true even if a later write fails.
            self._sha256.update(data[:n])
            self.bytes_written += n
            data = data[n:]

    def _fail(self, reason: str) -> None:
        self.failed = reason
        log.error("recording {path} failed: {reason}", path=self.path, reason=reason)
        if self.on_failure is not None:
            try:
                self.on_failure(reason)
            except Exception:  # the front end's bug must not stop close() yielding the digest
                log.failure("recording failure callback raised")

    def close(self) -> Deferred[str]:
        """Write what is buffered and close the file (idempotent); fires with the file's SHA-256."""
        if self._digest is None:
            self.flush()
            self.closed = True
            fd, self._fd = self._fd, -1
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError as e:
                    self._fail(e.strerror or str(e))
            self._digest = self._sha256.hexdigest()
        return succeed(self._digest)


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
        recorder: TranscriptRecorder,
        masks: Callable[[], SessionMasks | None],
        literals: Callable[[str], Any] | None = None,
    ) -> None:
        self.recorder = recorder
        self._masks = masks
        self._literals = literals

    def _trail(self, text: str) -> str:
        """C{text} as the trail would store it (every mask of the connection); not counted again."""
        masks = self._masks()
        if masks is None or not masks.trail:
            return text
        return masks.trail_text(text, {}, self._literals)

    def header(self, text: str) -> None:
        self.recorder.line(_escape(self._trail(text)))

    def command(self, owner: Owner, text: str, *, refused: bool = False) -> None:
        """
        A command, C{text} its action's input (L{hoopgw_redis.actions.describe}:
        passwords already redacted, arguments quoted as redis-cli does).
        """
        shown = self._trail(text)
        self.recorder.line(f"{_label(owner)} > {_escape(shown)}{' (refused)' if refused else ''}")

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
        self.recorder.line(text)

    def local(self, owner: Owner, data: bytes, *, hidden: bool = False) -> None:
        """A reply of the gateway's own (already encoded: C{data})."""
        try:
            values = ReplyParser().feed(data)
        except ProtocolError:
            values = []
        if len(values) != 1:
            self.recorder.line(f"{_label(owner)} < {len(data)} bytes")
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

    def make(path: str, fd: int) -> TranscriptRecorder:
        return TranscriptRecorder(path, fd, clock=clock, title=title, on_failure=on_failure)

    recorder = session.open_recording(KEY, make, suffix=SUFFIX)
    if recorder is None:
        return None
    transcript = Transcript(recorder, lambda: session.masks, session.literals)
    transcript.header(f"hoopgw: {identity.subject} on {connection.name} ({connection.target}), session {session.id}")
    return transcript
