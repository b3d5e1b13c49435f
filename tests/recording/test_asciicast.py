"""
Tests for L{hoopgw.recording.asciicast}: the asciicast v2 writer and reader.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from hoopgw.interfaces import IRecorder
from hoopgw.recording import AsciicastRecorder, read_asciicast
from hoopgw.recording.asciicast import FLUSH_BYTES, FLUSH_DELAY


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """C{data} split at the given offsets (taken modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


class RecorderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.clock = Clock()
        self.clock.advance(1_700_000_000)

    def recorder(self, name: str = "s.cast", **kwargs: object) -> AsciicastRecorder:
        kwargs.setdefault("width", 80)
        kwargs.setdefault("height", 24)
        return AsciicastRecorder(self.dir / name, clock=self.clock, **kwargs)  # type: ignore[arg-type]

    def close(self, recorder: AsciicastRecorder) -> str:
        return self.successResultOf(recorder.close())

    def test_provides_irecorder(self) -> None:
        """The recorder provides L{IRecorder}; C{path} names its file."""
        r = self.recorder()
        self.assertTrue(verifyObject(IRecorder, r))
        self.assertEqual(r.path, str(self.dir / "s.cast"))
        self.close(r)

    def test_header(self) -> None:
        """
        The first line is a v2 header with size, start time, TERM/SHELL in
        C{env}, and the title and command when given.
        """
        r = self.recorder(term="xterm-256color", shell="/bin/bash", title="web1", command="bash -l")
        self.close(r)
        cast = read_asciicast(r.path)
        self.assertEqual(
            cast.header,
            {
                "version": 2,
                "width": 80,
                "height": 24,
                "timestamp": 1_700_000_000,
                "env": {"TERM": "xterm-256color", "SHELL": "/bin/bash"},
                "title": "web1",
                "command": "bash -l",
            },
        )
        self.assertEqual(cast.events, ())

    def test_minimal_header(self) -> None:
        """Without TERM, SHELL, title or command, the header has none of them."""
        r = self.recorder(timestamp=42)
        self.close(r)
        self.assertEqual(
            read_asciicast(r.path).header, {"version": 2, "width": 80, "height": 24, "timestamp": 42}
        )

    def test_bad_size(self) -> None:
        """A size that is not a positive integer is refused before any file is made."""
        for width in (0, -1, 1.5, True):
            self.assertRaises(ValueError, self.recorder, width=width)
        self.assertEqual(list(self.dir.iterdir()), [])

    def test_file_created_exclusively_private(self) -> None:
        """
        The file is created mode 0600 and an existing recording is never
        overwritten.
        """
        r = self.recorder()
        self.assertEqual(stat.S_IMODE(os.stat(r.path).st_mode), 0o600)
        self.assertRaises(FileExistsError, self.recorder)
        self.close(r)

    def test_events_and_times(self) -> None:
        """
        Output, input and resize events carry the seconds elapsed since the
        recording started, by the injected clock.
        """
        r = self.recorder(record_input=True)
        self.clock.advance(0.25)
        r.input(b"ls\r")
        self.clock.advance(0.000001)
        r.output(b"ls\r\n")
        self.clock.advance(1.5)
        r.resize(120, 40)
        self.close(r)
        events = [(e.time, e.kind, e.data) for e in read_asciicast(r.path).events]
        self.assertEqual(
            events,
            [(0.25, "i", "ls\r"), (0.250001, "o", "ls\r\n"), (1.750001, "r", "120x40")],
        )
        # Fixed notation, as asciinema writes it.
        self.assertIn(b'\n[0.250001, "o", "ls\\r\\n"]\n', Path(r.path).read_bytes())

    def test_times_never_decrease(self) -> None:
        """A clock that steps backwards does not make event times go backwards."""
        r = self.recorder()
        self.clock.advance(5)
        r.output(b"a")
        self.clock.rightNow -= 3
        r.output(b"b")
        self.close(r)
        self.assertEqual([e.time for e in read_asciicast(r.path).events], [5.0, 5.0])

    def test_input_only_when_enabled(self) -> None:
        """Input is not recorded unless C{record_input} is set."""
        r = self.recorder("off.cast")
        r.input(b"secret\r")
        r.output(b"$ ")
        self.close(r)
        self.assertEqual([e.kind for e in read_asciicast(r.path).events], ["o"])
        self.assertNotIn(b"secret", Path(r.path).read_bytes())

        r = self.recorder("on.cast", record_input=True)
        r.input(b"secret\r")
        self.close(r)
        self.assertEqual(read_asciicast(r.path).input(), "secret\r")

    def test_split_character(self) -> None:
        """A UTF-8 character split across output chunks is recorded whole."""
        r = self.recorder()
        euro = "€".encode()
        r.output(b"price " + euro[:1])
        r.output(euro[1:2])
        r.output(euro[2:] + b"5")
        self.close(r)
        cast = read_asciicast(r.path)
        self.assertEqual(cast.output(), "price €5")
        self.assertNotIn("\ufffd", cast.output())

    def test_input_decoder_separate(self) -> None:
        """
        A partial character pending in one direction does not absorb bytes of
        the other.
        """
        r = self.recorder(record_input=True)
        r.output("é".encode()[:1])
        r.input(b"x")
        r.output("é".encode()[1:])
        self.close(r)
        cast = read_asciicast(r.path)
        self.assertEqual((cast.output(), cast.input()), ("é", "x"))

    def test_invalid_bytes(self) -> None:
        """
        Invalid UTF-8 becomes U+FFFD, and a character cut off at the end of
        the session is closed out as U+FFFD too: the file is always valid.
        """
        r = self.recorder()
        r.output(b"a\xffb\xe2\x82")
        self.close(r)
        self.assertEqual(read_asciicast(r.path).output(), "a\ufffdb\ufffd")

    def test_control_characters_escaped(self) -> None:
        """
        Terminal control characters (CR, ESC, NUL) are JSON-escaped, so each
        event stays on one line.
        """
        r = self.recorder()
        data = "\x1b[1;31mred\x1b[0m\r\n\x00\x07\u2028end"
        r.output(data.encode())
        self.close(r)
        raw = Path(r.path).read_bytes()
        self.assertEqual(raw.count(b"\n"), 2)
        self.assertNotIn(b"\r", raw)
        self.assertEqual(read_asciicast(r.path).output(), data)

    def test_large_output_split(self) -> None:
        """
        One large output chunk becomes several events of at most
        C{max_event_chars} characters, together equal to the chunk.
        """
        r = self.recorder(max_event_chars=1000)
        data = ("x" * 999 + "é") * 10 + "tail"
        r.output(data.encode())
        self.close(r)
        events = read_asciicast(r.path).events
        self.assertEqual(len(events), 11)
        self.assertTrue(all(len(e.data) <= 1000 for e in events))
        self.assertEqual("".join(e.data for e in events), data)

    def test_buffered_until_delay(self) -> None:
        """
        Events are held in memory and written together once the flush delay
        has passed since the first of them, with no write per event.
        """
        r = self.recorder()
        size = os.path.getsize(r.path)
        r.output(b"one")
        self.clock.advance(FLUSH_DELAY / 2)
        r.output(b"two")
        self.assertEqual(os.path.getsize(r.path), size)
        self.clock.advance(FLUSH_DELAY)
        self.assertEqual(read_asciicast(r.path).output(), "onetwo")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.close(r)

    def test_buffered_until_size(self) -> None:
        """Once the buffer reaches its byte bound it is written at once."""
        r = self.recorder()
        r.output(b"x" * FLUSH_BYTES)
        self.assertEqual(read_asciicast(r.path).output(), "x" * FLUSH_BYTES)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.close(r)

    def test_unbuffered(self) -> None:
        """With C{flush_delay=0} each event is written as it arrives."""
        r = self.recorder(flush_delay=0)
        r.output(b"now")
        self.assertEqual(read_asciicast(r.path).output(), "now")
        self.close(r)

    def test_close_flushes_and_digests(self) -> None:
        """
        C{close} writes what is buffered, cancels the pending flush, and
        fires with the SHA-256 of the file's bytes; closing again gives the
        same digest and later events are ignored.
        """
        r = self.recorder(record_input=True)
        r.output(b"hello")
        r.input(b"q")
        digest = self.close(r)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        raw = Path(r.path).read_bytes()
        self.assertEqual(digest, hashlib.sha256(raw).hexdigest())
        self.assertEqual(r.bytes_written, len(raw))
        r.output(b"late")
        self.assertEqual(self.close(r), digest)
        self.assertEqual(Path(r.path).read_bytes(), raw)

    def test_given_file(self) -> None:
        """
        Given a descriptor (C{fd}), the recorder writes there and opens
        nothing itself (L{hoopgw.sessions.Session.open_recording} made the
        file); it owns the descriptor: C{close} closes it.
        """
        path = self.dir / "given.cast"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        r = AsciicastRecorder(path, fd=fd, clock=self.clock, width=80, height=24)
        r.output(b"hello")
        digest = self.close(r)
        self.assertEqual(digest, hashlib.sha256(path.read_bytes()).hexdigest())
        self.assertEqual(read_asciicast(path).output(), "hello")
        self.assertRaises(OSError, os.fstat, fd)

    def test_given_file_header_failure(self) -> None:
        """
        If the header cannot be written to a given descriptor, the error
        reaches the caller and the descriptor is left open for its opener
        to close (it was never the recorder's).
        """
        if not os.path.exists("/dev/full"):
            raise SkipTest("no /dev/full to simulate a full disk")
        fd = os.open("/dev/full", os.O_WRONLY)
        self.addCleanup(os.close, fd)
        self.assertRaises(OSError, AsciicastRecorder, "full.cast", fd=fd, clock=self.clock, width=80, height=24)
        os.fstat(fd)  # still open

    def test_write_failure(self) -> None:
        """
        If the file cannot be written, C{failed} says why, C{on_failure} is
        told once, later events are dropped, and C{close} still fires with the
        digest of the bytes actually in the file.
        """
        if not os.path.exists("/dev/full"):
            raise SkipTest("no /dev/full to simulate a full disk")
        reasons: list[str] = []
        r = self.recorder(on_failure=reasons.append, flush_delay=0)
        r.output(b"kept")
        # The disk fills up: the recording's descriptor now refers to
        # /dev/full, where every write fails with ENOSPC.
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, r._fd)
        os.close(full)
        r.output(b"lost")
        r.output(b"also lost")
        self.assertEqual(len(reasons), 1)
        self.assertEqual(r.failed, reasons[0])
        digest = self.close(r)
        self.assertEqual(digest, hashlib.sha256(Path(r.path).read_bytes()).hexdigest())
        self.assertEqual(read_asciicast(r.path).output(), "kept")

    def test_surrogates_in_header(self) -> None:
        """A title holding a lone surrogate (undecodable client text) still gives valid UTF-8."""
        r = self.recorder(title="x\udcff")
        self.close(r)
        self.assertEqual(read_asciicast(r.path).header["title"], "x?")

    def test_small_resize_ignored(self) -> None:
        """A resize to zero columns or rows (size unknown) is not recorded."""
        r = self.recorder()
        r.resize(0, 24)
        r.resize(80, 0)
        self.close(r)
        self.assertEqual(read_asciicast(r.path).events, ())

    @settings(max_examples=60, deadline=None)
    @given(data=st.binary(max_size=300), cuts=st.lists(st.integers(min_value=0), max_size=20))
    def test_any_chunking(self, data: bytes, cuts: list[int]) -> None:
        """
        However the output is chunked, the recording holds the same text as
        decoding the whole stream at once, and its digest matches the file.
        """
        directory = tempfile.mkdtemp(dir=self.dir)
        r = AsciicastRecorder(
            os.path.join(directory, "c.cast"), clock=self.clock, width=80, height=24, max_event_chars=7
        )
        for chunk in chunked(data, cuts):
            r.output(chunk)
            self.clock.advance(0.01)
        digest = self.close(r)
        self.assertEqual(read_asciicast(r.path).output(), data.decode("utf-8", "replace"))
        self.assertEqual(digest, hashlib.sha256(Path(r.path).read_bytes()).hexdigest())


class PublicAPITests(SynchronousTestCase):
    def test_reexports(self) -> None:
        """C{hoopgw.recording} re-exports exactly the public names of its modules."""
        from hoopgw import recording
        from hoopgw.recording import asciicast, lines

        for name in recording.__all__:
            module = asciicast if name in asciicast.__all__ else lines
            self.assertIs(getattr(recording, name), getattr(module, name))
        self.assertEqual(sorted(recording.__all__), sorted(asciicast.__all__ + lines.__all__))


class ReadTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        Path(path).write_text(text, encoding="utf-8")
        return path

    def test_not_asciicast(self) -> None:
        """A file that is not asciicast v2 is refused, naming the line."""
        for text, line in [
            ("", ""),
            ('{"version": 1, "width": 80, "height": 24}\n', ":1:"),
            ('{"version": 2, "width": 80}\n', ":1:"),
            ('{"version": 2, "width": 80, "height": 24}\n[1, "o"]\n', ":2:"),
            ('{"version": 2, "width": 80, "height": 24}\n[0, "o", "a"]\nnot json\n', ":3:"),
        ]:
            e = self.assertRaises(ValueError, read_asciicast, self.write(text))
            self.assertIn(line, str(e))


def asciinema_cat(path: str) -> bytes:
    """Run the stock asciinema 2.x player's C{cat} on C{path}."""
    if importlib.util.find_spec("asciinema") is None:
        why = "asciinema is not installed (pip install asciinema)"
        if os.environ.get("CI") == "true":
            raise AssertionError(why)
        raise SkipTest(why)
    result = subprocess.run(
        [sys.executable, "-m", "asciinema", "cat", path],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        # No controlling terminal: `asciinema cat` would put /dev/tty in raw mode.
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"asciinema cat failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


class StockPlayerTests(SynchronousTestCase):
    def test_asciinema_cat(self) -> None:
        """
        Stock asciinema reads the recording and prints exactly the output
        data, whatever the chunking, escapes, split characters and
        interleaved input and resize events.
        """
        clock = Clock()
        path = os.path.join(self.mktemp() + ".cast")
        r = AsciicastRecorder(
            path,
            clock=clock,
            width=80,
            height=24,
            term="xterm-256color",
            shell="/bin/bash",
            title="web1 \u2014 deploy",
            record_input=True,
            max_event_chars=50,
        )
        chunks = [
            b"\x1b[1;32mdeploy@web1\x1b[0m:~$ ",
            "caf\u00e9 \U0001f680".encode()[:-2],
            "caf\u00e9 \U0001f680".encode()[-2:] + b"\r\n",
            b"\xff\xfe invalid\r\n",
            b'line\twith\ttabs \\ "quotes" \x07\x08\r\n',
            "\u2028\u2029 separators".encode() + b"y" * 200,
        ]
        expected = b"".join(chunks).decode("utf-8", "replace")
        for chunk in chunks:
            clock.advance(0.1)
            r.input(b"k")
            r.output(chunk)
            r.resize(100, 30)
        self.successResultOf(r.close())
        self.assertEqual(read_asciicast(path).output(), expected)
        self.assertEqual(asciinema_cat(path), expected.encode("utf-8"))

    def test_asciinema_header_fields(self) -> None:
        """The header is what asciinema itself writes: integers for size and time."""
        path = self.mktemp()
        r = AsciicastRecorder(path, clock=Clock(), width=132, height=43, timestamp=1504467315)
        self.successResultOf(r.close())
        header = json.loads(Path(path).read_bytes().split(b"\n")[0])
        self.assertEqual(header, {"version": 2, "width": 132, "height": 43, "timestamp": 1504467315})
        self.assertEqual(asciinema_cat(path), b"")
