"""
The exec recording's reader of WebSocket frames and Kubernetes channels:
any chunking reads the same, masking undone, control frames skipped,
arbitrary bytes only ever raise L{FrameError}.
"""

from __future__ import annotations

import json
import os

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.http.channels import ChannelReader, ExecTap, FrameError


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

    def test_broken_stream_stops_recording_only(self) -> None:
        """Bytes that are not WebSocket frames stop the recording (with a
        reason) and nothing is raised into the relay."""
        recorder = _Recorder()
        tap = ExecTap(recorder)
        tap.from_upstream(b"\xff\xff garbage")
        tap.from_upstream(message(1, b"later"))
        self.assertIn("recording stopped", tap.stopped)
        self.assertEqual(recorder.events, [])
