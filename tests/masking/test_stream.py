"""Masking a byte stream (hoopgw/masking/stream.py): values split across chunks, escape sequences kept."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.masking.engine import REDACTED
from hoopgw.masking.service import MaskingService
from hoopgw.masking.stream import StreamMasker
from hoopgw.model import Connection, Identity
from hoopgw.policy.rules import MaskRule, PolicySet

CARD = b"4111 1111 1111 1111"


def masker() -> StreamMasker:
    service = MaskingService(SimpleNamespace(policy_set=PolicySet(masks=[MaskRule("m", detectors=("card", "email"))])), b"k" * 32)
    masks = service.for_session(Identity("dev", "alice", ()), Connection("web1", "ssh", "x"))
    return StreamMasker(lambda text: masks.replacements(text, {}))


def run(chunks: list[bytes]) -> bytes:
    stream = masker()
    return b"".join(stream.feed(chunk) for chunk in chunks) + stream.flush()


class StreamTests(SynchronousTestCase):
    def test_a_value_split_across_chunks(self) -> None:
        self.assertEqual(run([b"pay with 4111 11", b"11 1111 1111 now\r\n"]), f"pay with {REDACTED} now\r\n".encode())

    def test_escape_sequences_inside_a_value_are_kept_after_its_mask(self) -> None:
        out = run([b"\x1b[31m4111 1111\x1b[0m 1111 1111\x1b[0m done\n"])
        self.assertNotIn(b"1111 1111", out)
        self.assertIn(REDACTED.encode(), out)
        self.assertEqual(out.count(b"\x1b[0m"), 2)
        self.assertTrue(out.startswith(b"\x1b[31m"))

    def test_an_unfinished_escape_is_held(self) -> None:
        stream = masker()
        self.assertEqual(stream.feed(b"ok\n\x1b["), b"ok\n")
        self.assertEqual(stream.feed(b"0m\n"), b"\x1b[0m\n")

    def test_what_is_not_a_value_passes_at_once(self) -> None:
        stream = masker()
        self.assertEqual(stream.feed(b"total 12\r\n"), b"total 12\r\n")
        self.assertFalse(stream.holding)

    @settings(max_examples=200)
    @given(st.lists(st.integers(1, 40), max_size=8), st.binary(max_size=30), st.binary(max_size=30))
    def test_any_chunking(self, cuts: list[int], before: bytes, after: bytes) -> None:
        """However the stream is cut, the card never passes in clear, and everything else passes as it was."""
        data = before.replace(b"\x1b", b"") + b" " + CARD + b" " + after.replace(b"\x1b", b"")
        chunks, at = [], 0
        for cut in cuts:
            chunks.append(data[at : at + cut])
            at += cut
        chunks.append(data[at:])
        out = run(chunks)
        self.assertNotIn(CARD, out)
        self.assertEqual(out, run([data]))


class KeyTests(SynchronousTestCase):
    KEY = b"-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAKCAQ\n-----END RSA PRIVATE KEY-----\nafter\n"

    def stream(self) -> StreamMasker:
        service = MaskingService(SimpleNamespace(policy_set=PolicySet(masks=[MaskRule("k", detectors=("private_key",))])), b"k" * 32)
        masks = service.for_session(Identity("dev", "alice", ()), Connection("web1", "ssh", "x"))
        return StreamMasker(lambda text: masks.replacements(text, {}), keys=True)

    def test_a_key_over_many_chunks(self) -> None:
        stream = self.stream()
        out = b"".join(stream.feed(self.KEY[i : i + 7]) for i in range(0, len(self.KEY), 7)) + stream.flush()
        self.assertNotIn(b"MIIEow", out)
        self.assertNotIn(b"AKCAQ", out)
        self.assertTrue(out.endswith(b"after\n"))

    def test_a_begin_line_flushed_in_two(self) -> None:
        """A quiet moment flushed half of the BEGIN line: the key still starts there."""
        stream = self.stream()
        out = stream.feed(b"-----BEGIN RSA PRI") + stream.flush()
        out += stream.feed(self.KEY[len(b"-----BEGIN RSA PRI") :]) + stream.flush()
        self.assertNotIn(b"MIIEow", out)
        self.assertTrue(out.endswith(b"after\n"))


class RecordedTests(SynchronousTestCase):
    def test_a_recording_stores_masked_output_and_input(self) -> None:
        from hoopgw.masking.stream import masked_recorder

        class Recorder:
            def __init__(self) -> None:
                self.out, self.typed, self.closes = b"", b"", 0
                self.path = "x.cast"

            def output(self, data: bytes) -> None:
                self.out += data

            def input(self, data: bytes) -> None:
                self.typed += data

            def close(self) -> str:
                self.closes += 1
                return "sha"

        service = MaskingService(SimpleNamespace(policy_set=PolicySet(masks=[MaskRule("m", detectors=("card",), except_groups=("dev",))])), b"k" * 32)
        masks = service.for_session(Identity("dev", "alice", ("dev",)), Connection("web1", "ssh", "x"))
        inner = Recorder()
        recorder = masked_recorder(inner, masks)  # alice is exempt at the client, not in what is stored
        recorder.output(b"card 4111 1111 ")
        recorder.input(b"echo 4111 1111 1111 1111\r")
        recorder.output(b"1111 1111")
        self.assertEqual(recorder.close(), "sha")
        self.assertEqual(inner.out, f"card {REDACTED}".encode())
        self.assertEqual(inner.typed, f"echo {REDACTED}\r".encode())
        self.assertEqual(recorder.path, "x.cast")
        self.assertIs(masked_recorder(inner, None), inner)

    def test_typed_words_are_whole_values(self) -> None:
        """A bare SSN typed as a word of a command is stored masked; in output, only as a whole value."""
        from hoopgw.masking.stream import masked_recorder

        class Recorder:
            out = typed = b""
            path, failed = "x.cast", None

            def output(self, data: bytes) -> None:
                self.out += data

            def input(self, data: bytes) -> None:
                self.typed += data

            def close(self) -> str:
                return "sha"

        service = MaskingService(SimpleNamespace(policy_set=PolicySet(masks=[MaskRule("m", detectors=("ssn",))])), b"k" * 32)
        masks = service.for_session(Identity("dev", "alice", ()), Connection("web1", "ssh", "x"))
        inner = Recorder()
        recorder = masked_recorder(inner, masks)
        for key in b"grep 536228726 hr.csv\r":
            recorder.input(bytes([key]))
        recorder.output(b"invoice 123456789 paid\r\n")
        recorder.close()
        self.assertEqual(inner.typed, f"grep {REDACTED} hr.csv\r".encode())
        self.assertEqual(inner.out, b"invoice 123456789 paid\r\n")
        self.assertEqual(masks.trail_text("grep -c 536228726 hr.csv", {}), f"grep -c {REDACTED} hr.csv")
