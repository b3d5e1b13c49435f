"""
What flows inside the upgraded connections of C{kubectl exec}, C{attach}
and C{port-forward}, read from a copy of what the relay forwards.

Exec and attach, for the terminal recording: RFC 6455 frames carrying the Kubernetes channel protocol
(C{v4.channel.k8s.io}, C{v5.channel.k8s.io}), where every binary message
starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 error (a JSON
Status), 4 resize (C{{"Width": W, "Height": H}}), and in v5 255 close.

The relay copies bytes as they come; these readers only look at a copy, so
a frame they cannot make sense of stops the recording, never the session.
Port-forward (kubectl 1.31+: SPDY/3.1 tunnelled in WebSocket binary
messages, subprotocol C{SPDY/3.1+portforward.k8s.io}; or a plain SPDY/3.1
upgrade): kubectl names the pod port only in the headers of the SPDY
streams it opens per local connection (C{streamtype: data}, C{port},
C{requestid}), never in the URL, so these are read to record each
forwarded connection's port.

Sans-IO: bytes in, callbacks out, no transport in sight.  Payload is passed
on in the pieces it arrives in, so a large frame costs no buffering.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hoopgw.interfaces import ITerminalRecorder

__all__ = [
    "ChannelReader",
    "ExecTap",
    "FrameError",
    "PortForwardTap",
    "RESIZE",
    "SPDY_DICTIONARY",
    "STDERR",
    "STDIN",
    "STDOUT",
    "SpdyExecTap",
    "SpdyStreamReader",
]

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255

_CONTINUATION, _TEXT, _BINARY, _CLOSE_FRAME = 0x0, 0x1, 0x2, 0x8
# A resize message is a few dozen bytes; anything longer is not one.
_MAX_RESIZE = 256


class FrameError(ValueError):
    """The bytes are not a WebSocket frame stream this reader understands."""


class _StreamReader:
    """
    A reader of one direction that stops at the first thing it does not
    understand: L{feed} raises L{FrameError} once, then C{broken} says why
    and later bytes are ignored.
    """

    broken: str | None = None

    def feed(self, data: bytes) -> None:
        if self.broken is not None:
            return
        try:
            self._feed(data)
        except FrameError as e:
            self.broken = str(e)
            raise

    def _feed(self, data: bytes) -> None:
        raise NotImplementedError


class ChannelReader(_StreamReader):
    """
    Reads one direction of a WebSocket (C{masked}: the client's direction,
    RFC 6455 section 5.3) and calls C{on_data(channel, chunk)} for the
    payload of each binary message after its channel byte.  Control frames
    (ping, pong, close) may come between the fragments of a message and are
    skipped.

    @raise FrameError: from L{feed}, once the stream is not understood; the
        reader is then done.
    """

    def __init__(self, *, masked: bool, on_data: Callable[[int, bytes], object], channels: bool = True) -> None:
        self.masked = masked
        self.on_data = on_data
        # Without channels (the port-forward tunnel) a message is raw bytes,
        # handed on as channel 0.
        self.channels = channels
        self._head = b""  # a frame header still incomplete
        self._remaining = 0  # payload bytes of the current frame still to come
        self._mask = b""
        self._offset = 0  # position in the mask of the next payload byte
        self._control = False  # the current frame is a control frame (skipped)
        self._in_message = False  # between the first and the final fragment
        self._final = False
        self._channel: int | None = None  # of the message being read; None until its first byte

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
            if not self.channels:
                self._channel = 0
            elif not chunk:
                return
            else:
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


class _RecordingTap:
    """Reads a copy of both directions for a recorder; a stream it cannot parse stops the recording (and C{on_stop} says so)."""

    _client: ChannelReader | SpdyStreamReader
    _upstream: ChannelReader | SpdyStreamReader

    def __init__(self, recorder: ITerminalRecorder) -> None:
        self.recorder = recorder
        self._resize = b""
        self.stopped: str | None = None
        # Told once, with the reason, when the stream stops being understood:
        # the front end ends the session rather than let it go on unrecorded.
        self.on_stop: Callable[[str], object] | None = None

    def from_client(self, data: bytes) -> None:
        self._feed(self._client, data)

    def from_upstream(self, data: bytes) -> None:
        self._feed(self._upstream, data)

    def _feed(self, reader: ChannelReader | SpdyStreamReader, data: bytes) -> None:
        if self.stopped is not None:
            return
        try:
            reader.feed(data)
        except FrameError as e:
            self.stopped = f"recording stopped: {e}"
            if self.on_stop is not None:
                self.on_stop(self.stopped)


class ExecTap(_RecordingTap):
    """
    Feeds an exec or attach WebSocket's terminal to a recorder (an
    L{hoopgw.recording.asciicast.AsciicastRecorder}): stdout and stderr as
    output, stdin as input (kept only if the recorder records input), resize
    messages as resizes.  C{from_client} / C{from_upstream} take the raw
    bytes the relay forwards.
    """

    def __init__(self, recorder: ITerminalRecorder) -> None:
        super().__init__(recorder)
        self._client = ChannelReader(masked=True, on_data=self._client_data)
        self._upstream = ChannelReader(masked=False, on_data=self._upstream_data)

    def _client_data(self, channel: int, chunk: bytes) -> None:
        if channel == STDIN:
            self.recorder.input(chunk)
        elif channel == RESIZE:
            self._resize_data(chunk)

    def _upstream_data(self, channel: int, chunk: bytes) -> None:
        if channel in (STDOUT, STDERR):
            self.recorder.output(chunk)

    def _resize_data(self, chunk: bytes) -> None:
        self._resize = _resized(self.recorder, self._resize + chunk)


# -- SPDY/3.1 (draft-mbelshe-httpbis-spdy-00 as SPDY/3, section 2) --------------


def _spdy_dictionary() -> bytes:
    """The SPDY/3 header compression dictionary (section 2.6.10.1)."""
    words = (
        "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges "
        "age allow authorization cache-control connection content-base content-encoding content-language "
        "content-length content-location content-md5 content-range content-type date etag expect expires from "
        "host if-match if-modified-since if-none-match if-range if-unmodified-since last-modified location "
        "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after server te trailer "
        "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status"
    ).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
        "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    return b"".join(struct.pack("!I", len(w)) + w.encode() for w in words) + tail.encode()


SPDY_DICTIONARY = _spdy_dictionary()

_SYN_STREAM, _HEADERS = 1, 8
# A header block kubectl sends is a few dozen bytes; a decompressed block
# beyond this is not one worth reading (and must not cost memory).
_MAX_HEADER_BLOCK = 16 * 1024
_MAX_CONTROL_FRAME = 64 * 1024


class SpdyStreamReader(_StreamReader):
    """
    Reads one direction of a SPDY/3 connection: C{on_stream(stream_id,
    headers)} for every SYN_STREAM (header names lower-case) and, if given,
    C{on_data(stream_id, chunk)} for DATA payload in the pieces it arrives
    in (never buffered).  HEADERS blocks are decompressed too, since the
    header compression context spans the whole direction.  With
    C{read_headers=False} (a direction whose header blocks do not matter,
    the server's) control frames are passed over undecompressed.

    @raise FrameError: from L{feed}, once the stream is not understood.
    """

    def __init__(
        self,
        on_stream: Callable[[int, dict[str, str]], object] | None = None,
        *,
        on_data: Callable[[int, bytes], object] | None = None,
        read_headers: bool = True,
    ) -> None:
        self.on_stream = on_stream
        self.on_data = on_data
        self.read_headers = read_headers
        self._buffer = b""
        self._skip = 0  # DATA payload bytes still to come
        self._data_stream = 0  # the stream they belong to
        self._inflate = zlib.decompressobj(zdict=SPDY_DICTIONARY)

    def _feed(self, data: bytes) -> None:
        if self._skip:
            piece = data[: self._skip]
            self._skip -= len(piece)
            data = data[len(piece) :]
            self._deliver(self._data_stream, piece)
        buffer = self._buffer + data if self._buffer else data
        pos = 0
        while len(buffer) - pos >= 8:
            first, flags_length = struct.unpack_from("!II", buffer, pos)
            length = flags_length & 0xFFFFFF
            if not first & 0x80000000:  # DATA: handed on as it passes
                stream_id = first & 0x7FFFFFFF
                available = min(length, len(buffer) - pos - 8)
                self._deliver(stream_id, buffer[pos + 8 : pos + 8 + available])
                if available < length:
                    self._skip = length - available
                    self._data_stream = stream_id
                    pos = len(buffer)
                    break
                pos += 8 + length
                continue
            if (first >> 16) & 0x7FFF != 3:
                raise FrameError(f"SPDY version {(first >> 16) & 0x7FFF} is not 3")
            if length > _MAX_CONTROL_FRAME:
                raise FrameError(f"a {length}-byte SPDY control frame")
            if len(buffer) - pos - 8 < length:
                break
            payload = buffer[pos + 8 : pos + 8 + length]
            pos += 8 + length
            if not self.read_headers:
                continue
            kind = first & 0xFFFF
            if kind == _SYN_STREAM:
                if length < 10:
                    raise FrameError("a SYN_STREAM shorter than its fixed fields")
                stream_id = struct.unpack_from("!I", payload)[0] & 0x7FFFFFFF
                headers = self._headers(payload[10:])
                if self.on_stream is not None:
                    self.on_stream(stream_id, headers)
            elif kind == _HEADERS:
                if length < 4:
                    raise FrameError("a HEADERS frame shorter than its stream id")
                self._headers(payload[4:])
        self._buffer = buffer[pos:]

    def _deliver(self, stream_id: int, piece: bytes) -> None:
        if piece and self.on_data is not None:
            self.on_data(stream_id, piece)

    def _headers(self, block: bytes) -> dict[str, str]:
        try:
            raw = self._inflate.decompress(block, _MAX_HEADER_BLOCK)
        except zlib.error as e:
            raise FrameError(f"a SPDY header block does not decompress: {e}") from None
        if self._inflate.unconsumed_tail:
            raise FrameError(f"a SPDY header block over {_MAX_HEADER_BLOCK} bytes")
        headers: dict[str, str] = {}
        try:
            (count,) = struct.unpack_from("!I", raw)
            offset = 4
            for _ in range(count):
                (n,) = struct.unpack_from("!I", raw, offset)
                name = raw[offset + 4 : offset + 4 + n]
                offset += 4 + n
                (n,) = struct.unpack_from("!I", raw, offset)
                value = raw[offset + 4 : offset + 4 + n]
                offset += 4 + n
                headers[name.decode("utf-8", "replace").lower()] = value.decode("utf-8", "replace")
        except struct.error:
            raise FrameError("a SPDY header block ends inside a field") from None
        return headers


class PortForwardTap:
    """
    Finds the pod port of each connection kubectl forwards: the
    C{streamtype: data} streams of the client's SPDY direction, whether the
    SPDY travels in WebSocket messages (C{tunnelled}) or directly.  Calls
    C{on_forward(port, request_id)} once per data stream.  Only the client
    direction is read; a stream that cannot be parsed stops the reading
    (C{stopped} says why, and C{on_stop} is told).
    """

    def __init__(self, on_forward: Callable[[str, str], object], *, tunnelled: bool) -> None:
        self.on_forward = on_forward
        self._spdy = SpdyStreamReader(self._stream)
        self._tunnel = ChannelReader(masked=True, on_data=self._unwrapped, channels=False) if tunnelled else None
        self.stopped: str | None = None
        self.on_stop: Callable[[str], object] | None = None  # as for _RecordingTap

    def from_client(self, data: bytes) -> None:
        if self.stopped is not None:
            return
        try:
            if self._tunnel is not None:
                self._tunnel.feed(data)
            else:
                self._spdy.feed(data)
        except FrameError as e:
            self.stopped = f"port-forward streams no longer read: {e}"
            if self.on_stop is not None:
                self.on_stop(self.stopped)

    def from_upstream(self, data: bytes) -> None:
        """The API server's direction carries nothing this needs."""

    def _unwrapped(self, channel: int, chunk: bytes) -> None:
        self._spdy.feed(chunk)

    def _stream(self, stream_id: int, headers: dict[str, str]) -> None:
        if headers.get("streamtype") == "data":
            self.on_forward(headers.get("port", ""), headers.get("requestid", ""))


class SpdyExecTap(_RecordingTap):
    """
    The SPDY/3.1 counterpart of L{ExecTap} (kubectl before 1.30, or its
    fallback when the WebSocket upgrade fails): the client opens one stream
    per channel (C{streamtype} stdin, stdout, stderr, resize, error); what
    the server sends on stdout and stderr is output, the client's stdin
    input, its resize messages resizes.
    """

    def __init__(self, recorder: ITerminalRecorder) -> None:
        super().__init__(recorder)
        self._types: dict[int, str] = {}
        self._client = SpdyStreamReader(self._stream, on_data=self._client_data)
        self._upstream = SpdyStreamReader(on_data=self._upstream_data, read_headers=False)

    def _stream(self, stream_id: int, headers: dict[str, str]) -> None:
        self._types[stream_id] = headers.get("streamtype", "")

    def _client_data(self, stream_id: int, chunk: bytes) -> None:
        kind = self._types.get(stream_id)
        if kind == "stdin":
            self.recorder.input(chunk)
        elif kind == "resize":
            self._resize = _resized(self.recorder, self._resize + chunk)

    def _upstream_data(self, stream_id: int, chunk: bytes) -> None:
        if self._types.get(stream_id) in ("stdout", "stderr"):
            self.recorder.output(chunk)


def _resized(recorder: ITerminalRecorder, pending: bytes) -> bytes:
    """
    Feed resize messages (C{{"Width": W, "Height": H}}, one JSON object
    each, possibly cut or several in a row) to C{recorder}; return what is
    left of an incomplete one.
    """
    pending = pending[-_MAX_RESIZE:]
    decoder = json.JSONDecoder()
    text = pending.decode("utf-8", "replace")
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos >= len(text):
            return b""
        try:
            size, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return text[pos:].encode()
        if isinstance(size, dict):
            width, height = size.get("Width"), size.get("Height")
            if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
                recorder.resize(width, height)
