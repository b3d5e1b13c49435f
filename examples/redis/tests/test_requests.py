"""
Tests for L{hoopgw_redis.resp.RequestParser}: what clients send, parsed as
redis-server parses it, or refused.
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw_redis.resp import Command, ProtocolError, RequestParser, encode, encode_command

from tests._strategies import (
    big_arguments,
    by_size,
    chunked,
    commands,
    feed_all,
    inline_line,
    outcome,
    request_streams,
)


def parse(data: bytes, **limits: int) -> list[tuple[bytes, ...]]:
    return [c.args for c in RequestParser(**limits).feed(data)]


def refusal(data: bytes, **limits: int) -> str:
    """The message of the error parsing C{data} raises (fed at once)."""
    parser = RequestParser(**limits)
    try:
        parser.feed(data)
    except ProtocolError as e:
        return str(e)
    raise AssertionError(f"{data!r} was accepted")


class ArrayTests(SynchronousTestCase):
    def test_command(self) -> None:
        """An array of bulk strings is a command, its arguments in order, binary-safe."""
        [command] = RequestParser().feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\n\r\n\x00\xff\n\r\n")
        self.assertEqual(command.args, (b"SET", b"k", b"\r\n\x00\xff\n"))
        self.assertFalse(command.inline)
        self.assertEqual(command.name, "SET")

    def test_name_upper_case(self) -> None:
        """A command's name is upper-cased as redis-server compares names: ASCII letters only."""
        [command] = RequestParser().feed(encode_command(b"get\xc3\xa9", b"k"))
        self.assertEqual(command.name, "GET\udcc3\udca9")

    def test_pipeline(self) -> None:
        """Commands sent back to back come out in order from one feed."""
        data = encode_command(b"PING") + encode_command(b"GET", b"k") + encode_command(b"ECHO", b"")
        self.assertEqual(parse(data), [(b"PING",), (b"GET", b"k"), (b"ECHO", b"")])

    def test_empty_arrays_skipped(self) -> None:
        """
        C{*0} and negative counts are skipped without a command, as
        redis-server skips them (it answers nothing).
        """
        data = b"*0\r\n*-1\r\n*-5\r\n" + encode_command(b"PING")
        self.assertEqual(parse(data), [(b"PING",)])

    def test_byte_by_byte(self) -> None:
        """Fed one byte at a time, a command completes on its last byte, and not before."""
        data = encode_command(b"SET", b"key", b"value")
        parser = RequestParser()
        for i in range(len(data) - 1):
            self.assertEqual(parser.feed(data[i : i + 1]), [])
        [command] = parser.feed(data[-1:])
        self.assertEqual(command.args, (b"SET", b"key", b"value"))
        self.assertEqual(parser.buffered, 0)

    def test_accepts_bytearray_and_memoryview(self) -> None:
        data = encode_command(b"GET", b"k")
        self.assertEqual(RequestParser().feed(bytearray(data))[0].args, (b"GET", b"k"))
        self.assertEqual(RequestParser().feed(memoryview(data))[0].args, (b"GET", b"k"))

    def test_repr_hides_arguments(self) -> None:
        """A command's repr names it and counts its arguments, never shows them: some are passwords."""
        [command] = RequestParser().feed(encode_command(b"AUTH", b"alice", b"s3cret-token"))
        self.assertNotIn("s3cret", repr(command))
        self.assertNotIn("alice", repr(command))
        self.assertEqual(repr(command), "Command('AUTH', 2 arguments)")

    def test_reencodes_as_sent(self) -> None:
        """A command re-encodes to the bytes it came as; an inline one becomes an array."""
        data = encode_command(b"SET", b"k", b"v")
        [command] = RequestParser().feed(data)
        self.assertEqual(encode(command), data)
        [inline] = RequestParser().feed(b"SET k v\n")
        self.assertEqual(encode(inline), data)


class ArrayRefusalTests(SynchronousTestCase):
    """
    Malformed arrays: refused with a message that names the problem.  The
    captured redis-server refusals are in L{tests.test_captured}.
    """

    def test_bulk_length_minus_one(self) -> None:
        """C{$-1} is a null in a reply, never an argument (redis-server: invalid bulk length)."""
        self.assertEqual(refusal(b"*1\r\n$-1\r\n"), "invalid bulk length '-1'")
        self.assertEqual(refusal(b"*1\r\n$-2\r\n"), "invalid bulk length '-2'")

    def test_non_canonical_lengths(self) -> None:
        """Lengths are read as redis-server's string2ll reads them: no sign, no leading zero, no space."""
        for header in [b"$04", b"$+4", b"$ 4", b"$4 ", b"$-0", b"$4_0", b"$", b"$0x4", b"$\xd9\xa4"]:
            self.assertIn("invalid bulk length", refusal(b"*1\r\n" + header + b"\r\nPING\r\n"), header)
        for header in [b"*01", b"*+1", b"* 1", b"*1 ", b"*", b"*1.0"]:
            self.assertIn("invalid array length", refusal(header + b"\r\n"), header)

    def test_huge_lengths(self) -> None:
        """A length beyond 64 bits, or with more digits than int() converts, is invalid, not an OverflowError."""
        self.assertIn("invalid bulk length", refusal(b"*1\r\n$9223372036854775808\r\n"))
        self.assertIn("invalid bulk length", refusal(b"*1\r\n$" + b"9" * 5000 + b"\r\n"))
        self.assertIn("invalid array length", refusal(b"*" + b"9" * 5000 + b"\r\n"))
        self.assertIn("exceeds the limit", refusal(b"*1\r\n$9223372036854775807\r\n"))

    def test_not_a_bulk_string(self) -> None:
        """Arguments are bulk strings: anything else is refused (redis-server: expected '$')."""
        self.assertEqual(refusal(b"*1\r\n:1\r\n"), "expected '$' for a command argument, got ':'")
        self.assertIn("expected '$'", refusal(b"*2\r\n$4\r\nECHO\r\n*1\r\n"))

    def test_missing_crlf_after_bulk(self) -> None:
        """
        The two bytes after a bulk string must be CRLF.  redis-server skips
        them unread; the gateway refuses, so it never reads a command
        differently from the server.
        """
        self.assertEqual(refusal(b"*1\r\n$4\r\nPINGxx"), "bulk string of 4 bytes not followed by CRLF")
        self.assertIn("not followed by CRLF", refusal(b"*1\r\n$4\r\nPING\rx"))
        self.assertIn("not followed by CRLF", refusal(b"*1\r\n$4\r\nPING\n\r"))

    def test_lf_only_header(self) -> None:
        """
        Array and bulk headers end in CRLF.  redis-server waits for a CR
        after an LF-only header until its line limit; the gateway refuses at
        the LF.
        """
        self.assertEqual(refusal(b"*1\n"), "array header ends in LF without CR")
        self.assertEqual(refusal(b"*1\r\n$4\n"), "bulk string header ends in LF without CR")
        self.assertEqual(refusal(b"*1\r\n\n"), "bulk string header ends in LF without CR")

    def test_header_cr_then_other(self) -> None:
        """A CR not followed by LF is part of the line, which is then invalid (redis-server skips the byte)."""
        self.assertIn("invalid array length", refusal(b"*1\rX$4\r\nPING\r\n"))
        self.assertIn("invalid bulk length", refusal(b"*1\r\n$4\rX\r\nPING\r\n"))

    def test_stays_failed(self) -> None:
        """After an error every feed raises, and the commands completed before it are on the error."""
        parser = RequestParser()
        error = self.assertRaises(ProtocolError, parser.feed, encode_command(b"PING") + b"*1\r\n$-1\r\n")
        self.assertEqual([c.args for c in error.messages], [(b"PING",)])
        self.assertTrue(parser.failed)
        again = self.assertRaises(ProtocolError, parser.feed, encode_command(b"PING"))
        self.assertIn("parser already failed", str(again))
        self.assertEqual(parser.buffered, 0)


class InlineTests(SynchronousTestCase):
    """
    Inline commands, split as redis-server's sdssplitargs splits them.
    Each expectation here was checked against redis-server 7.0.15 (see
    L{tests.test_captured} and L{tests.test_redis_server}).
    """

    def check(self, line: bytes, *args: bytes) -> None:
        commands = RequestParser().feed(line)
        self.assertEqual([c.args for c in commands], [args] if args else [], line)
        self.assertTrue(all(c.inline for c in commands))

    def test_words(self) -> None:
        self.check(b"SET k v\r\n", b"SET", b"k", b"v")
        self.check(b"  SET \t k   v  \r\n", b"SET", b"k", b"v")

    def test_lf_only(self) -> None:
        """An inline command may end in LF alone (telnet, nc), as redis-server accepts."""
        self.check(b"PING\n", b"PING")

    def test_blank_lines_skipped(self) -> None:
        """Empty and blank lines are no command at all."""
        self.assertEqual(parse(b"\r\n\n   \t\r\n\x0b\x0c\nPING\r\n"), [(b"PING",)])

    def test_cr_inside_separates(self) -> None:
        """A CR inside the line separates arguments; only one CR before the LF ends it."""
        self.check(b"ECHO a\rb\r\n", b"ECHO", b"a", b"b")
        self.check(b"PING\r\r\n", b"PING")

    def test_vertical_tab_and_form_feed(self) -> None:
        """VT and FF are skipped between arguments but do not end one (sdssplitargs' quirk)."""
        self.check(b"ECHO a\x0bb\r\n", b"ECHO", b"a\x0bb")
        self.check(b"ECHO \x0c\x0ba\r\n", b"ECHO", b"a")

    def test_double_quotes(self) -> None:
        self.check(b'SET k "two words"\r\n', b"SET", b"k", b"two words")
        self.check(b'ECHO ""\r\n', b"ECHO", b"")
        self.check(b'ECHO "a\\x41\\n\\r\\t\\b\\a\\"\\\\"\r\n', b"ECHO", b'aA\n\r\t\b\a"\\')

    def test_double_quote_escapes_lenient(self) -> None:
        """An unknown escape is the character itself, as is \\x without two hex digits."""
        self.check(b'ECHO "\\xZZ\\q\\x4"\r\n', b"ECHO", b"xZZqx4")
        self.check(b'ECHO "\\xfF"\r\n', b"ECHO", b"\xff")

    def test_single_quotes(self) -> None:
        """Single quotes escape only a single quote."""
        self.check(b"ECHO 'it\\'s \\n'\r\n", b"ECHO", b"it's \\n")
        self.check(b"ECHO ''\r\n", b"ECHO", b"")

    def test_quote_inside_word(self) -> None:
        """A quote inside a word opens a quoted part of that same word."""
        self.check(b'ECHO x"y z"\r\n', b"ECHO", b"xy z")
        self.check(b"ECHO x'y z'\r\n", b"ECHO", b"xy z")

    def test_unbalanced_quotes(self) -> None:
        for line in [b'ECHO "a"b\r\n', b"ECHO 'a\r\n", b'ECHO "a\\\r\n', b"ECHO 'a\\'\r\n", b'ECHO "\r\n', b'"\r\n']:
            self.assertEqual(refusal(line), "unbalanced quotes in an inline command", line)

    def test_nul_refused(self) -> None:
        """
        A NUL is refused: redis-server never runs such a line (its strchr
        stops at the NUL and it waits for a newline until its limit).
        """
        self.assertEqual(refusal(b"ECHO a\x00b\r\n"), "NUL byte in an inline command")

    def test_leading_space_then_star(self) -> None:
        """Only a C{*} in the first byte starts an array; after a space it is an argument."""
        self.check(b" *1\r\n", b"*1")

    def test_mixed_with_arrays(self) -> None:
        data = b"PING\n" + encode_command(b"GET", b"k") + b'ECHO "x"\r\n'
        self.assertEqual(parse(data), [(b"PING",), (b"GET", b"k"), (b"ECHO", b"x")])
        self.assertEqual([c.inline for c in RequestParser().feed(data)], [True, False, True])


class LimitTests(SynchronousTestCase):
    """Every limit holds exactly, is checked on the header, and does not depend on chunking."""

    def test_bulk_length(self) -> None:
        """A bulk string of the limit passes; one byte more is refused on its header, before its body."""
        self.assertEqual(parse(encode_command(b"x" * 100), max_bulk_length=100), [(b"x" * 100,)])
        self.assertEqual(
            refusal(b"*1\r\n$101\r\n", max_bulk_length=100), "bulk string of 101 bytes exceeds the limit of 100"
        )

    def test_default_bulk_length(self) -> None:
        """The default is 16 MiB, not redis-server's 512 MB."""
        parser = RequestParser()
        parser.feed(b"*1\r\n$16777216\r\n")
        self.assertRaises(ProtocolError, RequestParser().feed, b"*1\r\n$16777217\r\n")

    def test_argument_count(self) -> None:
        self.assertEqual(len(parse(encode_command(*[b"a"] * 10), max_elements=10)[0]), 10)
        self.assertEqual(refusal(b"*11\r\n", max_elements=10), "command of 11 arguments exceeds the limit of 10")
        self.assertIn("exceeds the limit of 10", refusal(inline_line([b"a"] * 11), max_elements=10))
        self.assertIn("exceeds the limit", refusal(b"*1048577\r\n"))

    def test_limits_are_attributes(self) -> None:
        """
        Limits can be tightened between feeds, e.g. until the client has
        authenticated (redis-server allows 10 arguments of 16 kB before AUTH).
        """
        parser = RequestParser()
        parser.max_elements = 10
        parser.max_bulk_length = 16384
        self.assertRaises(ProtocolError, parser.feed, b"*11\r\n")
        parser = RequestParser()
        parser.max_bulk_length = 16384
        self.assertRaises(ProtocolError, parser.feed, b"*1\r\n$16385\r\n")

    def test_inline_length(self) -> None:
        """An inline line of the limit passes (its line end aside); longer fails, whole or byte by byte."""
        line = b"ECHO " + b"x" * 95
        self.assertEqual(parse(line + b"\r\n", max_line_length=100), [(b"ECHO", b"x" * 95)])
        self.assertEqual(outcome(lambda: RequestParser(max_line_length=100), by_size(line + b"\r\n", 1))[1], None)
        longer = line + b"x"
        for chunks in ([longer + b"\r\n"], by_size(longer + b"\r\n", 1), by_size(longer + b"\r\n", 7)):
            self.assertEqual(outcome(lambda: RequestParser(max_line_length=100), chunks)[1], "failed")
        # Without any line end, as soon as it is too long.
        parser = RequestParser(max_line_length=100)
        parser.feed(b"x" * 101)
        error = self.assertRaises(ProtocolError, parser.feed, b"x")
        self.assertEqual(str(error), "inline command or array header longer than 100 bytes")

    def test_default_inline_length(self) -> None:
        """redis-server's 64 kB."""
        self.assertEqual(len(parse(b"ECHO " + b"x" * (65536 - 5) + b"\n")), 1)
        self.assertRaises(ProtocolError, RequestParser().feed, b"ECHO " + b"x" * (65536 - 4) + b"\n")

    def test_header_length(self) -> None:
        """A bulk header line without an end is refused once it is longer than the line limit."""
        parser = RequestParser(max_line_length=100)
        self.assertRaises(ProtocolError, parser.feed, b"*1\r\n$" + b"1" * 200)

    def test_message_length(self) -> None:
        """A command's wire bytes are bounded, checked on each bulk header before its body comes."""
        data = encode_command(b"x" * 50, b"y" * 30)
        limit = len(data)
        self.assertEqual(parse(data, max_message_length=limit), [(b"x" * 50, b"y" * 30)])
        self.assertEqual(refusal(data, max_message_length=limit - 1), f"message longer than {limit - 1} bytes")
        # Refused on the second header, before the second argument arrives.
        self.assertRaises(ProtocolError, RequestParser(max_message_length=limit - 1).feed, data[: -(30 + 2)])

    def test_state_bounded(self) -> None:
        """
        Whatever arrives, a parser holds at most one unfinished line or bulk
        string, never the stream.
        """
        parser = RequestParser(max_bulk_length=1000, max_line_length=100)
        for chunk in by_size(encode_command(b"x" * 1000) * 50, 333):
            parser.feed(chunk)
            self.assertLessEqual(parser.buffered, 1000 + 1)


class PerformanceTests(SynchronousTestCase):
    """
    Buffering is linear: no re-parsing of a message from its start and no
    copy of the whole buffer per chunk.  Generous bounds, to catch quadratic
    behaviour (which takes minutes at these sizes), not to benchmark.
    """

    def test_large_argument_in_small_chunks(self) -> None:
        """A 4 MB argument fed in 100-byte chunks (40,000 feeds)."""
        data = encode_command(b"SET", b"k", b"v" * 4_000_000)
        parser = RequestParser()
        started = time.perf_counter()
        out = feed_all(parser, by_size(data, 100))
        self.assertLess(time.perf_counter() - started, 5)
        self.assertEqual(len(out[0].args[2]), 4_000_000)

    def test_many_arguments_in_chunks(self) -> None:
        """A command of 500,000 arguments fed in 1 kB chunks."""
        data = encode_command(b"SADD", *[b"m%d" % i for i in range(500_000)])
        started = time.perf_counter()
        [command] = feed_all(RequestParser(), by_size(data, 1024))
        self.assertLess(time.perf_counter() - started, 10)
        self.assertEqual(len(command.args), 500_001)

    def test_long_line_byte_by_byte(self) -> None:
        """An inline line of 60 kB fed one byte at a time."""
        data = b"ECHO " + b"x" * 60_000 + b"\r\n"
        started = time.perf_counter()
        [command] = feed_all(RequestParser(), by_size(data, 1))
        self.assertLess(time.perf_counter() - started, 5)
        self.assertEqual(len(command.args[1]), 60_000)

    def test_lf_flood(self) -> None:
        """LF after LF after an array header: refused at the first, not re-scanned per byte."""
        parser = RequestParser()
        parser.feed(b"*1")
        self.assertRaises(ProtocolError, parser.feed, b"\n")


class PropertyTests(SynchronousTestCase):
    @given(request_streams(), st.lists(st.integers(min_value=0), max_size=30))
    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    def test_any_chunking(self, stream: tuple[bytes, list[tuple[bytes, ...]]], cuts: list[int]) -> None:
        """Any chunking of a valid pipeline (arrays and inline lines) parses to the same commands."""
        data, expected = stream
        out, failed, buffered = outcome(RequestParser, chunked(data, cuts))
        self.assertEqual((failed, buffered), (None, 0))
        self.assertEqual([c.args for c in out], expected)

    @given(commands)
    def test_roundtrip(self, args: tuple[bytes, ...]) -> None:
        """encode_command, parse, encode: the same arguments, the same bytes."""
        data = encode_command(*args)
        [command] = RequestParser().feed(data)
        self.assertEqual(command.args, args)
        self.assertEqual(encode(command), data)
        self.assertEqual(encode(Command(args, inline=True)), data)

    @given(st.lists(big_arguments(), min_size=1, max_size=3), st.sampled_from([1, 7, 1000, 65536]))
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_large_arguments(self, args: list[bytes], size: int) -> None:
        """Arguments up to 300 kB, through 1-byte to 64 kB chunks."""
        if size == 1:
            args = [a[:3000] for a in args]
        [command] = feed_all(RequestParser(), by_size(encode_command(*args), size))
        self.assertEqual(list(command.args), args)

    @given(st.binary(max_size=3000), st.lists(st.integers(min_value=0), max_size=20))
    @settings(max_examples=1000)
    def test_arbitrary_bytes(self, data: bytes, cuts: list[int]) -> None:
        """
        Arbitrary bytes only ever raise L{ProtocolError}, and the outcome
        (commands, failure) does not depend on chunking.
        """

        def make() -> RequestParser:
            return RequestParser(max_bulk_length=64, max_elements=8, max_line_length=64, max_message_length=256)

        self.assertEqual(outcome(make, [data])[:2], outcome(make, chunked(data, cuts))[:2])

    @given(st.data())
    @settings(max_examples=1000)
    def test_mutated_streams(self, data: st.DataObject) -> None:
        """
        Valid pipelines with bytes inserted, deleted or changed: only ever
        L{ProtocolError}, the same whichever the chunking, and bounded state.
        """
        stream, _ = data.draw(request_streams(max_commands=6))
        mutated = bytearray(stream)
        for _ in range(data.draw(st.integers(1, 4))):
            where = data.draw(st.integers(0, len(mutated)))
            what = data.draw(st.sampled_from(["insert", "delete", "replace"]))
            byte = data.draw(st.sampled_from(b"\r\n$*:-0123456789 \"'\\\x00x"))
            if what == "insert":
                mutated[where:where] = bytes([byte])
            elif where < len(mutated):
                if what == "delete":
                    del mutated[where]
                else:
                    mutated[where] = byte
        cuts = data.draw(st.lists(st.integers(min_value=0), max_size=20))

        def make() -> RequestParser:
            return RequestParser(max_bulk_length=30, max_elements=6, max_line_length=200, max_message_length=300)

        whole = outcome(make, [bytes(mutated)])
        pieces = outcome(make, chunked(bytes(mutated), cuts))
        self.assertEqual(whole[:2], pieces[:2])
        self.assertLessEqual(pieces[2], 201)
