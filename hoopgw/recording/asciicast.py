"""
Terminal session recordings in asciicast v2, the format stock
C{asciinema play} / C{asciinema cat} and asciinema-player replay.

The file is newline-delimited JSON: one header object (version, initial
size, start time, environment), then one C{[elapsed, kind, data]} array per
event, where C{kind} is C{"o"} (output), C{"i"} (input) or C{"r"} (resize,
data C{"COLSxROWS"}).  See U{https://docs.asciinema.org/manual/asciicast/v2/}.

The SSH and Kubernetes-exec front ends feed the bytes they relay; this module
knows nothing of either protocol.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from hoopgw.interfaces import ITerminalRecorder

__all__ = ["Asciicast", "AsciicastEvent", "AsciicastRecorder", "read_asciicast"]

log = Logger()

# A single huge event (a `cat` of a large file arrives as one big chunk) is
# split so that no line of the file, and no frame a player must hold, is
# unbounded.
MAX_EVENT_CHARS = 16 * 1024
# Lines are kept in memory until this many bytes or this many seconds have
# accumulated, then written with one os.write: one syscall per event would
# put the disk on the reactor's hot path.
FLUSH_BYTES = 64 * 1024
FLUSH_DELAY = 0.2
# How a recording's file is opened: created, never an existing one (it is
# evidence: never overwritten), appended to, readable by the gateway alone.
RECORDING_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
RECORDING_MODE = 0o600


def _decoder() -> codecs.IncrementalDecoder:
    # "replace": a target may send any bytes; the recording must still be
    # valid UTF-8 JSON, so invalid sequences become U+FFFD.
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def _positive(name: str) -> Callable[[Any, Any, int], None]:
    def check(instance: Any, attribute: Any, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")

    return check


@implementer(ITerminalRecorder)
@define(eq=False)
class AsciicastRecorder:
    """
    Writes one asciicast v2 file.  Creating the recorder creates the file
    (exclusively, mode 0600: it holds what the target printed) and writes the
    header; after that the only I/O is one C{os.write} per flush.

    Output and input arrive as bytes in arbitrary chunks; each direction has
    its own incremental UTF-8 decoder, so a character split across chunks is
    recorded whole.

    Input is recorded only with C{record_input=True}: keystrokes include
    passwords typed at prompts that do not echo (C{sudo}), which output
    recording never captures.  The SSH front end decides per connection
    (from the connection's configuration) whether to enable it.

    If the file cannot be written (disk full), C{failed} says why,
    C{on_failure} is called once, and later events are dropped; C{close}
    still returns the SHA-256 of exactly the bytes that reached the file, so
    the digest in C{session.end} always matches the file.  A front end that
    must not run unrecorded ends the session from C{on_failure}.
    """

    path: str = field(converter=os.fspath)
    clock: IReactorTime = field(kw_only=True)
    width: int = field(kw_only=True, validator=_positive("width"))
    height: int = field(kw_only=True, validator=_positive("height"))
    term: str | None = field(default=None, kw_only=True)
    shell: str | None = field(default=None, kw_only=True)
    title: str | None = field(default=None, kw_only=True)
    command: str | None = field(default=None, kw_only=True)
    timestamp: int | None = field(default=None, kw_only=True)
    record_input: bool = field(default=False, kw_only=True)
    max_event_chars: int = field(
        default=MAX_EVENT_CHARS, kw_only=True, validator=_positive("max_event_chars")
    )
    flush_bytes: int = field(default=FLUSH_BYTES, kw_only=True)
    flush_delay: float = field(default=FLUSH_DELAY, kw_only=True)
    on_failure: Callable[[str], object] | None = field(default=None, kw_only=True)
    # A file already opened for it (L{hoopgw.sessions.Session.open_recording}
    # opens it exclusively, mode 0600): the recorder owns it once created.
    fd: int | None = field(default=None, kw_only=True)

    failed: str | None = field(default=None, init=False)
    bytes_written: int = field(default=0, init=False)
    closed: bool = field(default=False, init=False)
    _fd: int = field(default=-1, init=False)
    _start: float = field(default=0.0, init=False)
    _last: float = field(default=0.0, init=False)
    _sha256: Any = field(factory=hashlib.sha256, init=False)
    _buffer: list[bytes] = field(factory=list, init=False)
    _buffered: int = field(default=0, init=False)
    _flush_call: IDelayedCall | None = field(default=None, init=False)
    _out: codecs.IncrementalDecoder = field(factory=_decoder, init=False)
    _in: codecs.IncrementalDecoder = field(factory=_decoder, init=False)
    _digest: str | None = field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._start = self.clock.seconds()
        header: dict[str, Any] = {
            "version": 2,
            "width": self.width,
            "height": self.height,
            "timestamp": int(self._start) if self.timestamp is None else self.timestamp,
        }
        env = {k: v for k, v in (("TERM", self.term), ("SHELL", self.shell)) if v is not None}
        if env:
            header["env"] = env
        if self.title is not None:
            header["title"] = self.title
        if self.command is not None:
            header["command"] = self.command
        if self.fd is None:
            # O_EXCL: an existing recording is evidence and is never overwritten.
            self._fd = os.open(self.path, RECORDING_FLAGS, RECORDING_MODE)
        else:
            self._fd = self.fd
        data = _header_line(header)
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write of the header to {self.path}")
        except BaseException:
            if self.fd is None:  # a file given to it stays its opener's until it is created
                os.close(self._fd)
            self._fd = -1
            raise
        self._sha256.update(data)
        self.bytes_written = written

    # Events

    def output(self, data: bytes) -> None:
        """Record bytes the target sent to the terminal."""
        self._event("o", self._out.decode(data))

    # Interchangeable with hoopgw.testing.MemoryRecorder for output.
    write = output

    def input(self, data: bytes) -> None:
        """Record bytes the client typed, if C{record_input} is set."""
        if self.record_input:
            self._event("i", self._in.decode(data))

    def resize(self, cols: int, rows: int) -> None:
        """
        Record a terminal size change.  Sizes below 1 (an SSH client may send
        0 for "unknown") are not recorded: players cannot draw them.
        """
        if cols >= 1 and rows >= 1:
            self._event("r", f"{int(cols)}x{int(rows)}")

    def _event(self, kind: str, text: str) -> None:
        if self.closed or self.failed is not None or not text:
            return
        # A wall clock may step backwards; players expect times that never do.
        now = max(self._last, self.clock.seconds() - self._start)
        self._last = now
        size = self.max_event_chars
        for i in range(0, len(text), size):
            self._buffer.append(_event_line(now, kind, text[i : i + size]))
            self._buffered += len(self._buffer[-1])
        if self._buffered >= self.flush_bytes or self.flush_delay <= 0:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = self.clock.callLater(self.flush_delay, self._timed_flush)

    # Writing

    def _timed_flush(self) -> None:
        self._flush_call = None
        self.flush()

    def flush(self) -> None:
        """Write buffered events to the file now."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if self._buffer and self._fd >= 0:
            self._write_buffer()

    def _write_buffer(self) -> None:
        data = memoryview(b"".join(self._buffer))
        self._buffer.clear()
        self._buffered = 0
        while data and self.failed is None:
            try:
                n = os.write(self._fd, data)
            except InterruptedError:
                continue
            except OSError as e:
                self._fail(e.strerror or str(e))
                return
            # Hash exactly what reached the file, so the digest stays true
            # even if a later write fails part-way.
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
        """
        Finish the recording: emit any incomplete trailing character as
        U+FFFD, write what is buffered and close the file.  Idempotent.

        @return: L{Deferred} firing with the hex SHA-256 of the file's bytes.
        """
        if self._digest is None:
            self._event("o", self._out.decode(b"", final=True))
            if self.record_input:
                self._event("i", self._in.decode(b"", final=True))
            self.closed = True
            self.flush()
            if self._fd >= 0:
                try:
                    os.close(self._fd)
                except OSError as e:
                    self._fail(e.strerror or str(e))
                self._fd = -1
            self._digest = self._sha256.hexdigest()
        return succeed(self._digest)


def _header_line(header: dict[str, Any]) -> bytes:
    # "replace": a title or command taken from a client may hold lone
    # surrogates (surrogateescape); the file must stay valid UTF-8.
    return (json.dumps(header, ensure_ascii=False) + "\n").encode("utf-8", "replace")


def _event_line(elapsed: float, kind: str, data: str) -> bytes:
    # Fixed notation: json.dumps would print 1e-06, which some readers of
    # this "seconds with microseconds" field do not expect.  json.dumps
    # escapes every control character (CR and LF included), so the only raw
    # newline is the line terminator.
    return f"[{elapsed:.6f}, {json.dumps(kind)}, {json.dumps(data, ensure_ascii=False)}]\n".encode()


@frozen
class AsciicastEvent:
    time: float
    kind: str
    data: str


@frozen
class Asciicast:
    """A parsed asciicast v2 file."""

    header: dict[str, Any]
    events: tuple[AsciicastEvent, ...]

    def output(self) -> str:
        """All output data, concatenated (what C{asciinema cat} prints)."""
        return "".join(e.data for e in self.events if e.kind == "o")

    def input(self) -> str:
        return "".join(e.data for e in self.events if e.kind == "i")


def read_asciicast(path: str | os.PathLike[str]) -> Asciicast:
    """
    Parse an asciicast v2 file, for tests and offline replay (this reads the
    whole file: not for use on the reactor thread).

    @raise ValueError: naming the line, if the file is not asciicast v2.
    """
    with open(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    where = os.fspath(path)

    def parse(number: int, line: bytes) -> Any:
        try:
            return json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{where}:{number}: not a JSON line ({e})") from None

    if not lines:
        raise ValueError(f"{where}: empty file, expected an asciicast v2 header")
    header = parse(1, lines[0])
    if not isinstance(header, dict) or header.get("version") != 2:
        raise ValueError(f"{where}:1: expected an asciicast v2 header object")
    for key in ("width", "height"):
        if not isinstance(header.get(key), int):
            raise ValueError(f"{where}:1: header {key!r} must be an integer")
    events = []
    for number, line in enumerate(lines[1:], start=2):
        event = parse(number, line)
        if (
            not isinstance(event, list)
            or len(event) != 3
            or not isinstance(event[0], (int, float))
            or isinstance(event[0], bool)
            or not isinstance(event[1], str)
            or not isinstance(event[2], str)
        ):
            raise ValueError(f"{where}:{number}: expected [time, kind, data]")
        events.append(AsciicastEvent(float(event[0]), event[1], event[2]))
    return Asciicast(header=header, events=tuple(events))
