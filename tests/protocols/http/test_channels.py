"""
The exec recording's reader of WebSocket frames and Kubernetes channels:
any chunking reads the same, masking undone, control frames skipped,
arbitrary bytes only ever raise L{FrameError}.
"""

from __future__ import annotations

import json
import os
import struct
import zlib

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.http.channels import (
    SPDY_DICTIONARY,
    ChannelReader,
    ExecTap,
    FrameError,
    PortForwardTap,
    SpdyExecTap,
    SpdyStreamReader,
)


def frame(opcode: int, payload: bytes, *, final: bool = True, masked: bool = False, mask: bytes | None = None) -> bytes:
    first = (0x80 if final else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([first, (0x80 if masked else 0) | n])
    elif n < 65536:
        head = bytes([first, (0x80 if masked else 0) | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, (0x80 if masked else 0) | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = mask if mask is not None else os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def message(channel: int, data: bytes, *, masked: bool = False, pieces: int = 1) -> bytes:
    """One binary message, fragmented into C{pieces} frames, with a ping in between."""
    payload = bytes([channel]) + data
    cut = [len(payload) * i // pieces for i in range(pieces + 1)]
    out = b""
    for i in range(pieces):
        out += frame(0x2 if i == 0 else 0x0, payload[cut[i] : cut[i + 1]], final=i == pieces - 1, masked=masked)
        if i < pieces - 1:
            out += frame(0x9, b"ping", masked=masked)
    return out


def read(data: bytes, *, masked: bool, chunks: list[int] | None = None) -> dict[int, bytes]:
    got: dict[int, bytes] = {}
    reader = ChannelReader(masked=masked, on_data=lambda ch, b: got.__setitem__(ch, got.get(ch, b"") + b))
    pos = 0
    for size in chunks or []:
        reader.feed(data[pos : pos + size])
        pos += size
    reader.feed(data[pos:])
    return got


messages = st.lists(
    st.tuples(st.sampled_from([0, 1, 2, 3, 4, 255]), st.binary(max_size=300), st.integers(1, 3)), max_size=6
)


class ChannelReaderTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(messages, st.booleans(), st.lists(st.integers(1, 40), max_size=30))
    def test_any_chunking_reads_the_same(self, items, masked, chunks) -> None:
        """Whatever the fragmentation and the read sizes, each channel gets
        exactly its bytes, unmasked."""
        data = b"".join(message(ch, d, masked=masked, pieces=p) for ch, d, p in items)
        expected: dict[int, bytes] = {}
        for ch, d, _ in items:
            if d:
                expected[ch] = expected.get(ch, b"") + d
        self.assertEqual(read(data, masked=masked, chunks=chunks), expected)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200), st.booleans())
    def test_arbitrary_bytes(self, data, masked) -> None:
        """Arbitrary bytes only ever raise FrameError."""
        try:
            read(data, masked=masked)
        except FrameError:
            pass

    def test_long_lengths(self) -> None:
        """16- and 64-bit lengths."""
        for size in (126, 65535, 65536, 70000):
            data = os.urandom(size)
            self.assertEqual(read(message(1, data), masked=False, chunks=[3, 7, 1000]), {1: data})

    def test_protocol_errors(self) -> None:
        """Unmasked client frames, masked server frames, reserved bits, an
        orphan continuation, a long or fragmented control frame are refused."""
        cases = [
            (frame(0x2, b"\x01x"), True),
            (frame(0x2, b"\x01x", masked=True), False),
            (bytes([0xC2, 0x00]), False),
            (frame(0x0, b"x"), False),
            (frame(0x9, b"x" * 126), False),
            (frame(0x9, b"x", final=False), False),
            (frame(0x3, b"x"), False),
            (frame(0x2, b"\x01a", final=False) + frame(0x2, b"\x01b"), False),
        ]
        for data, masked in cases:
            self.assertRaises(FrameError, read, data, masked=masked)


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def output(self, data: bytes) -> None:
        self.events.append(("o", data))

    def input(self, data: bytes) -> None:
        self.events.append(("i", data))

    def resize(self, cols: int, rows: int) -> None:
        self.events.append(("r", (cols, rows)))


class ExecTapTests(SynchronousTestCase):
    def test_terminal_events(self) -> None:
        """stdout and stderr are output, stdin input, resize messages
        resizes; the error channel and the v5 close channel are not output."""
        recorder = _Recorder()
        tap = ExecTap(recorder)
        tap.from_client(message(4, json.dumps({"Width": 120, "Height": 40}).encode(), masked=True))
        tap.from_client(message(0, b"ls\r", masked=True, pieces=2))
        tap.from_upstream(message(1, b"file\r\n") + message(2, b"warn\r\n"))
        tap.from_upstream(message(3, b'{"status":"Success"}') + message(255, b"\x00"))
        self.assertEqual(
            recorder.events,
            [("r", (120, 40)), ("i", b"l"), ("i", b"s\r"), ("o", b"file\r\n"), ("o", b"warn\r\n")],
        )

    def test_broken_stream_stops_recording(self) -> None:
        """Bytes that are not WebSocket frames stop the recording (with a
        reason, told once to on_stop, which ends the relay); nothing is
        raised into the relay."""
        recorder = _Recorder()
        tap = ExecTap(recorder)
        stops: list[str] = []
        tap.on_stop = stops.append
        tap.from_upstream(b"\xff\xff garbage")
        self.assertEqual(stops, [tap.stopped])
        tap.from_upstream(message(1, b"later"))
        self.assertIn("recording stopped", tap.stopped)
        self.assertEqual(recorder.events, [])


# -- SPDY/3 ---------------------------------------------------------------------


class _SpdyClient:
    """Frames as kubectl writes them: one header compression context for the direction."""

    def __init__(self) -> None:
        self.deflate = zlib.compressobj(zdict=SPDY_DICTIONARY)

    def block(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack("!I", len(headers)) + b"".join(
            struct.pack("!I", len(k)) + k.encode() + struct.pack("!I", len(v)) + v.encode() for k, v in headers.items()
        )
        return self.deflate.compress(raw) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    def syn_stream(self, stream_id: int, headers: dict[str, str]) -> bytes:
        payload = struct.pack("!IIH", stream_id, 0, 0) + self.block(headers)
        return struct.pack("!HHI", 0x8000 | 3, 1, len(payload)) + payload

    @staticmethod
    def data(stream_id: int, payload: bytes, fin: bool = False) -> bytes:
        return struct.pack("!II", stream_id, (0x01 if fin else 0) << 24 | len(payload)) + payload

    @staticmethod
    def ping(ping_id: int) -> bytes:
        return struct.pack("!HHII", 0x8000 | 3, 6, 4, ping_id)

    @staticmethod
    def settings(initial_window: int) -> bytes:
        # One entry: SETTINGS_INITIAL_WINDOW_SIZE (id 7), no flags.
        return struct.pack("!HHIIII", 0x8000 | 3, 4, 12, 1, 7, initial_window)

    @staticmethod
    def window_update(stream_id: int, delta: int) -> bytes:
        return struct.pack("!HHIII", 0x8000 | 3, 9, 8, stream_id, delta)


def port_forward_bytes(ports: list[int]) -> bytes:
    """
    kubectl's client direction: an error and a data stream per connection,
    with data between; and the SPDY/3.1 flow-control frames a peer may send
    (SETTINGS, WINDOW_UPDATE; kubectl's spdystream sends none), which the
    readers must pass over.
    """
    client = _SpdyClient()
    out = client.settings(1 << 20)
    for n, port in enumerate(ports):
        error_id, data_id = 4 * n + 1, 4 * n + 3
        common = {"port": str(port), "requestid": str(n)}
        out += client.syn_stream(error_id, {"streamtype": "error", **common})
        out += client.syn_stream(data_id, {"streamtype": "data", **common})
        out += client.data(data_id, os.urandom(70000)) + client.ping(2 * n + 1)
        out += client.window_update(data_id, 70000) + client.window_update(0, 70000)
        out += client.data(data_id, b"", fin=True)
    return out


class SpdyStreamReaderTests(SynchronousTestCase):
    @settings(max_examples=50, deadline=None)
    @given(st.lists(st.integers(1, 65535), min_size=1, max_size=4), st.lists(st.integers(1, 5000), max_size=40))
    def test_streams_at_any_chunking(self, ports, chunks) -> None:
        """Every SYN_STREAM's headers come out, whatever the read sizes;
        large DATA frames pass without being buffered."""
        data = port_forward_bytes(ports)
        seen: list[tuple[int, dict[str, str]]] = []
        reader = SpdyStreamReader(lambda sid, headers: seen.append((sid, headers)))
        pos = 0
        for size in chunks:
            reader.feed(data[pos : pos + size])
            pos += size
            self.assertLess(len(reader._buffer), 70000)
        reader.feed(data[pos:])
        self.assertEqual(
            [(sid, h["streamtype"], h["port"]) for sid, h in seen],
            [x for n, p in enumerate(ports) for x in ((4 * n + 1, "error", str(p)), (4 * n + 3, "data", str(p)))],
        )

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=300))
    def test_arbitrary_bytes(self, data) -> None:
        """Arbitrary bytes only ever raise FrameError."""
        try:
            SpdyStreamReader(lambda *a: None).feed(data)
        except FrameError:
            pass

    def test_header_bomb_refused(self) -> None:
        """A header block that inflates beyond the limit is refused, not inflated."""
        deflate = zlib.compressobj(zdict=SPDY_DICTIONARY)
        raw = struct.pack("!I", 1) + struct.pack("!I", 4) + b"port" + struct.pack("!I", 10_000_000) + b"0" * 10_000_000
        block = deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)
        payload = struct.pack("!IIH", 1, 0, 0) + block
        frame = struct.pack("!HHI", 0x8000 | 3, 1, len(payload)) + payload
        self.assertRaises(FrameError, SpdyStreamReader(lambda *a: None).feed, frame)


class PortForwardTapTests(SynchronousTestCase):
    def test_plain_spdy(self) -> None:
        """Each forwarded connection's port and request id, once, from plain SPDY."""
        seen: list[tuple[str, str]] = []
        tap = PortForwardTap(lambda port, rid: seen.append((port, rid)), tunnelled=False)
        data = port_forward_bytes([80, 8080])
        for i in range(0, len(data), 777):
            tap.from_client(data[i : i + 777])
        self.assertEqual(seen, [("80", "0"), ("8080", "1")])
        self.assertIsNone(tap.stopped)

    def test_tunnelled_in_websocket(self) -> None:
        """The same, with the SPDY bytes in masked WebSocket binary messages
        cut anywhere (kubectl 1.31+ port-forward)."""
        seen: list[tuple[str, str]] = []
        tap = PortForwardTap(lambda port, rid: seen.append((port, rid)), tunnelled=True)
        data = port_forward_bytes([5432])
        wire = b"".join(frame(0x2, data[i : i + 1000], masked=True) for i in range(0, len(data), 1000))
        for i in range(0, len(wire), 333):
            tap.from_client(wire[i : i + 333])
        self.assertEqual(seen, [("5432", "0")])

    def test_garbage_stops_reading(self) -> None:
        """Bytes that are not SPDY stop the reading, with a reason told once to on_stop; nothing raised."""
        tap = PortForwardTap(lambda *a: None, tunnelled=False)
        stops: list[str] = []
        tap.on_stop = stops.append
        tap.from_client(b"\x80\x02\x00\x01" + b"\x00" * 20)
        tap.from_client(b"more")
        self.assertIn("SPDY version 2", tap.stopped)
        self.assertEqual(stops, [tap.stopped])


class SpdyExecTapTests(SynchronousTestCase):
    def test_terminal_events(self) -> None:
        """Over SPDY: the client's stdin and resize streams are input and
        resizes, the server's DATA on stdout/stderr output, its error stream
        nothing; DATA cut anywhere and control frames in between change nothing."""
        client, server = _SpdyClient(), _SpdyClient()
        up = b"".join(
            client.syn_stream(sid, {"streamtype": kind})
            for sid, kind in ((1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize"))
        )
        up += client.data(7, b'{"Width":100,"Height":30}') + client.data(3, b"ls\r")
        down = server.syn_stream(2, {}) + server.data(5, b"file-one\r\n" * 3) + server.ping(2)
        down += server.data(1, b'{"status":"Success"}', fin=True)
        recorder = _Recorder()
        tap = SpdyExecTap(recorder)
        for i in range(0, len(up), 5):
            tap.from_client(up[i : i + 5])
        for i in range(0, len(down), 7):
            tap.from_upstream(down[i : i + 7])
        self.assertIsNone(tap.stopped)
        self.assertEqual(recorder.events[0], ("r", (100, 30)))
        self.assertEqual(b"".join(d for k, d in recorder.events if k == "i"), b"ls\r")
        self.assertEqual(b"".join(d for k, d in recorder.events if k == "o"), b"file-one\r\n" * 3)
