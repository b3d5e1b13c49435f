"""
What flows inside a C{kubectl exec} / C{attach} WebSocket, for the
recording: RFC 6455 frames carrying the Kubernetes channel protocol
(C{v4.channel.k8s.io}, C{v5.channel.k8s.io}), where every binary message
starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 error (a JSON
Status), 4 resize (C{{"Width": W, "Height": H}}), and in v5 255 close.

The relay copies bytes as they come; these readers only look at a copy, so
a frame they cannot make sense of stops the recording, never the session.
Sans-IO: bytes in, callbacks out, no transport in sight.  Payload is passed
on in the pieces it arrives in, so a large frame costs no buffering.
"""

from __future__ import annotations

import json
from collections.abc import Callable

__all__ = ["ChannelReader", "FrameError", "STDIN", "STDOUT", "STDERR", "RESIZE", "ExecTap"]

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255

_CONTINUATION, _TEXT, _BINARY, _CLOSE_FRAME = 0x0, 0x1, 0x2, 0x8
# A resize message is a few dozen bytes; anything longer is not one.
_MAX_RESIZE = 256


class FrameError(ValueError):
    """The bytes are not a WebSocket frame stream this reader understands."""


class ChannelReader:
    """
    Reads one direction of a WebSocket (C{masked}: the client's direction,
    RFC 6455 section 5.3) and calls C{on_data(channel, chunk)} for the
    payload of each binary message after its channel byte.  Control frames
    (ping, pong, close) may come between the fragments of a message and are
    skipped.

    @raise FrameError: from L{feed}, once the stream is not understood; the
        reader is then done.
    """

    def __init__(self, *, masked: bool, on_data: Callable[[int, bytes], object]) -> None:
        self.masked = masked
        self.on_data = on_data
        self._head = b""  # a frame header still incomplete
        self._remaining = 0  # payload bytes of the current frame still to come
        self._mask = b""
        self._offset = 0  # position in the mask of the next payload byte
        self._control = False  # the current frame is a control frame (skipped)
        self._in_message = False  # between the first and the final fragment
        self._final = False
        self._channel: int | None = None  # of the message being read; None until its first byte
        self.broken: str | None = None

    def feed(self, data: bytes) -> None:
        if self.broken is not None:
            return
        try:
            self._feed(data)
        except FrameError as e:
            self.broken = str(e)
            raise

    def _feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._remaining:
                take = min(self._remaining, end - pos)
                chunk = data[pos : pos + take]
                pos += take
                self._remaining -= take
                if not self._control:
                    self._payload(chunk)
                if not self._remaining:
                    self._frame_done()
                continue
            # A header is at most 14 bytes: 2, then 2 or 8 of length, then 4 of mask.
            had = len(self._head)
            self._head += data[pos : pos + 14 - had]
            size = self._parse_head(self._head)
            if size is None:
                return  # all of data is in _head now; the rest comes later
            pos += size - had
            self._head = b""

    def _parse_head(self, head: bytes) -> int | None:
        """The header's size once it is complete (and the frame started), else None."""
        if len(head) < 2:
            return None
        first, second = head[0], head[1]
        if first & 0x70:
            raise FrameError("reserved frame bits set (no extension was negotiated)")
        if bool(second & 0x80) != self.masked:
            raise FrameError("a client frame must be masked and a server frame must not")
        length = second & 0x7F
        size = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if self.masked else 0)
        if len(head) < size:
            return None
        if length == 126:
            length = int.from_bytes(head[2:4], "big")
        elif length == 127:
            length = int.from_bytes(head[2:10], "big")
            if length >> 63:
                raise FrameError("frame length has its most significant bit set")
        self._mask = head[size - 4 : size] if self.masked else b""
        self._offset = 0
        self._start_frame(first & 0x0F, bool(first & 0x80), length)
        return size

    def _start_frame(self, opcode: int, final: bool, length: int) -> None:
        self._control = bool(opcode & 0x08)
        if self._control:
            if length > 125 or not final:
                raise FrameError("a control frame must be final with at most 125 bytes")
        elif opcode == _CONTINUATION:
            if not self._in_message:
                raise FrameError("a continuation frame outside a message")
        elif opcode in (_TEXT, _BINARY):
            if self._in_message:
                raise FrameError("a new message before the previous one ended")
            self._in_message = True
            self._channel = None
        else:
            raise FrameError(f"unknown opcode {opcode:#x}")
        if not self._control:
            self._final = final
        self._remaining = length
        if not length:
            self._frame_done()

    def _frame_done(self) -> None:
        if self._control:
            self._control = False
            return
        if self._final:
            self._in_message = False
            self._channel = None

    def _payload(self, chunk: bytes) -> None:
        if self._mask:
            chunk = _unmask(chunk, self._mask, self._offset)
            self._offset = (self._offset + len(chunk)) % 4
        if self._channel is None:
            if not chunk:
                return
            self._channel, chunk = chunk[0], chunk[1:]
        if chunk:
            self.on_data(self._channel, chunk)


def _unmask(chunk: bytes, mask: bytes, offset: int) -> bytes:
    """XOR with the mask repeated, starting at C{offset}: one C-level XOR of big integers."""
    n = len(chunk)
    if not n:
        return chunk
    key = (mask[offset:] + mask[:offset]) * (n // 4 + 1)
    return (int.from_bytes(chunk, "big") ^ int.from_bytes(key[:n], "big")).to_bytes(n, "big")


class ExecTap:
    """
    Feeds an exec or attach WebSocket's terminal to a recorder (an
    L{hoopgw.recording.asciicast.AsciicastRecorder}): stdout and stderr as
    output, stdin as input (kept only if the recorder records input), resize
    messages as resizes.  C{from_client} / C{from_upstream} take the raw
    bytes the relay forwards.
    """

    def __init__(self, recorder: object) -> None:
        self.recorder = recorder
        self._client = ChannelReader(masked=True, on_data=self._client_data)
        self._upstream = ChannelReader(masked=False, on_data=self._upstream_data)
        self._resize = b""
        self.stopped: str | None = None

    def from_client(self, data: bytes) -> None:
        self._feed(self._client, data)

    def from_upstream(self, data: bytes) -> None:
        self._feed(self._upstream, data)

    def _feed(self, reader: ChannelReader, data: bytes) -> None:
        if self.stopped is not None:
            return
        try:
            reader.feed(data)
        except FrameError as e:
            self.stopped = f"recording stopped: {e}"

    def _client_data(self, channel: int, chunk: bytes) -> None:
        if channel == STDIN:
            self.recorder.input(chunk)  # type: ignore[attr-defined]
        elif channel == RESIZE:
            self._resize_data(chunk)

    def _upstream_data(self, channel: int, chunk: bytes) -> None:
        if channel in (STDOUT, STDERR):
            self.recorder.output(chunk)  # type: ignore[attr-defined]

    def _resize_data(self, chunk: bytes) -> None:
        # kubectl sends each resize as one small message; collect until it parses.
        self._resize = (self._resize + chunk)[-_MAX_RESIZE:]
        try:
            size = json.loads(self._resize)
        except ValueError:
            return
        self._resize = b""
        if isinstance(size, dict):
            width, height = size.get("Width"), size.get("Height")
            if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
                self.recorder.resize(width, height)  # type: ignore[attr-defined]
