"""
Tests for L{hoopgw_redis.resp.ReplyParser}: what a server sends, every RESP2
and RESP3 type, parsed strictly.
"""

from __future__ import annotations

import math
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

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
    encode,
)

from tests._strategies import by_size, chunked, encoded, feed_all, outcome, replies, values


def parse(data: bytes, **limits: int) -> list[Any]:
    return ReplyParser(**limits).feed(data)


def parse_one(data: bytes, **limits: int) -> Any:
    parser = ReplyParser(**limits)
    [value] = parser.feed(data)
    assert parser.buffered == 0
    return value


def refusal(data: bytes, **limits: int) -> str:
    try:
        ReplyParser(**limits).feed(data)
    except ProtocolError as e:
        return str(e)
    raise AssertionError(f"{data!r} was accepted")


class RESP2Tests(SynchronousTestCase):
    def test_simple_string(self) -> None:
        self.assertEqual(parse_one(b"+OK\r\n"), SimpleString(b"OK"))
        self.assertEqual(parse_one(b"+\r\n"), SimpleString(b""))

    def test_error(self) -> None:
        error = parse_one(b"-WRONGTYPE Operation against a key\r\n")
        self.assertEqual(error, Error(b"WRONGTYPE Operation against a key"))
        self.assertEqual(error.code, b"WRONGTYPE")
        self.assertFalse(error.bulk)

    def test_integer(self) -> None:
        self.assertEqual(parse_one(b":0\r\n"), 0)
        self.assertEqual(parse_one(b":-1\r\n"), -1)
        self.assertEqual(parse_one(b":1000000\r\n"), 1000000)
        self.assertEqual(parse_one(b":9223372036854775807\r\n"), 2**63 - 1)
        self.assertEqual(parse_one(b":-9223372036854775808\r\n"), -(2**63))
        self.assertIs(type(parse_one(b":1\r\n")), int)

    def test_invalid_integers(self) -> None:
        """Integers are canonical signed 64-bit decimals: beyond that is a big number's job."""
        for text in [b"", b"+1", b"01", b"-0", b" 1", b"1 ", b"1_0", b"1.0", b"9223372036854775808", b"9" * 5000]:
            self.assertIn("invalid integer", refusal(b":" + text + b"\r\n"), text)

    def test_bulk_string(self) -> None:
        self.assertEqual(parse_one(b"$5\r\nhello\r\n"), b"hello")
        self.assertEqual(parse_one(b"$0\r\n\r\n"), b"")
        self.assertEqual(parse_one(b"$4\r\n\r\n\r\n\r\n"), b"\r\n\r\n")
        self.assertEqual(parse_one(b"$2000\r\n" + b"x" * 2000 + b"\r\n"), b"x" * 2000)

    def test_nulls(self) -> None:
        """C{$-1} and C{*-1} are two nulls, kept apart so each re-encodes as it came."""
        self.assertIs(parse_one(b"$-1\r\n"), Null.BULK)
        self.assertIs(parse_one(b"*-1\r\n"), Null.ARRAY)
        self.assertEqual(encode(Null.BULK), b"$-1\r\n")
        self.assertEqual(encode(Null.ARRAY), b"*-1\r\n")

    def test_other_negative_lengths(self) -> None:
        """Only -1 means null; C{$-2} and the like are errors, as are nulls of other types."""
        self.assertEqual(refusal(b"$-2\r\n"), "invalid bulk string length '-2'")
        self.assertEqual(refusal(b"*-2\r\n"), "invalid array length '-2'")
        self.assertIn("invalid bulk string length", refusal(b"$-9223372036854775808\r\n"))
        for data, name in [(b"%-1\r\n", "map"), (b"~-1\r\n", "set"), (b">-1\r\n", "push"), (b"|-1\r\n", "attribute"),
                           (b"!-1\r\n", "bulk error"), (b"=-1\r\n", "verbatim string")]:  # fmt: skip
            self.assertEqual(
                refusal(data), f"{name} of length -1 (only a bulk string or an array can be null)", data
            )

    def test_array(self) -> None:
        self.assertEqual(parse_one(b"*0\r\n"), ())
        self.assertEqual(parse_one(b"*2\r\n$3\r\nfoo\r\n:1\r\n"), (b"foo", 1))
        self.assertEqual(
            parse_one(b"*2\r\n*3\r\n:1\r\n:2\r\n:3\r\n*2\r\n+Hello\r\n-World\r\n"),
            ((1, 2, 3), (SimpleString(b"Hello"), Error(b"World"))),
        )
        self.assertEqual(parse_one(b"*3\r\n$3\r\nfoo\r\n$-1\r\n$3\r\nbar\r\n"), (b"foo", Null.BULK, b"bar"))
        self.assertEqual(parse_one(b"*2\r\n*-1\r\n*0\r\n"), (Null.ARRAY, ()))

    def test_pipelined(self) -> None:
        self.assertEqual(parse(b"+OK\r\n:1\r\n$1\r\nx\r\n*1\r\n:2\r\n"), [SimpleString(b"OK"), 1, b"x", (2,)])


class RESP3Tests(SynchronousTestCase):
    def test_null(self) -> None:
        self.assertIs(parse_one(b"_\r\n"), Null.NULL)
        self.assertEqual(refusal(b"_x\r\n"), "null with a payload: 'x'")

    def test_boolean(self) -> None:
        self.assertIs(parse_one(b"#t\r\n"), True)
        self.assertIs(parse_one(b"#f\r\n"), False)
        for text in [b"", b"T", b"true", b"1", b"tt"]:
            self.assertIn("invalid boolean", refusal(b"#" + text + b"\r\n"))

    def test_double(self) -> None:
        self.assertEqual(parse_one(b",1.23\r\n"), Double(1.23))
        self.assertEqual(parse_one(b",10\r\n"), Double(10.0))
        self.assertEqual(parse_one(b",-0.5e-3\r\n"), Double(-0.0005))
        self.assertEqual(parse_one(b",1E+300\r\n"), Double(1e300))
        self.assertEqual(parse_one(b",inf\r\n"), Double(math.inf))
        self.assertEqual(parse_one(b",-inf\r\n"), Double(-math.inf))
        self.assertTrue(math.isnan(parse_one(b",nan\r\n").value))

    def test_double_keeps_its_text(self) -> None:
        """
        A double re-encodes as it was spelt: redis-server 7.0 prints 17
        digits, which Python would shorten (same number, other bytes).
        """
        double = parse_one(b",0.10000000000000001\r\n")
        self.assertEqual(double, Double(0.1))
        self.assertEqual(double.text, b"0.10000000000000001")
        self.assertEqual(encode(double), b",0.10000000000000001\r\n")
        self.assertEqual(encode(parse_one(b",-nan\r\n")), b",-nan\r\n")
        self.assertEqual(encode(Double(0.1)), b",0.1\r\n")

    def test_double_legacy_spellings(self) -> None:
        """redis-server before 7.2 printed NaN as libc did: -nan, NAN, nan(...)."""
        for text in [b"-nan", b"NAN", b"nan(0x1)", b"NaN", b"+nan"]:
            self.assertTrue(math.isnan(parse_one(b"," + text + b"\r\n").value), text)
        self.assertEqual(parse_one(b",-Infinity\r\n"), Double(-math.inf))

    def test_invalid_doubles(self) -> None:
        """The RESP3 grammar: an integral part is required, as digits after a point or an exponent."""
        for text in [b"", b".5", b"5.", b"1e", b"1.5e+", b" 1", b"1_0", b"0x10", b"in", b"1.2.3", b"+1.5"]:
            self.assertIn("invalid double", refusal(b"," + text + b"\r\n"), text)

    def test_double_nan_equality(self) -> None:
        """Doubles compare as they encode: NaN equals NaN, and hashes the same."""
        self.assertEqual(Double(math.nan), Double(float("nan")))
        self.assertEqual(hash(Double(math.nan)), hash(Double(float("nan"))))
        self.assertNotEqual(Double(1.0), Double(2.0))
        self.assertNotEqual(Double(1.0), 1.0)

    def test_big_number(self) -> None:
        self.assertEqual(
            parse_one(b"(3492890328409238509324850943850943825024385\r\n"),
            BigNumber(3492890328409238509324850943850943825024385),
        )
        self.assertEqual(parse_one(b"(-12\r\n"), BigNumber(-12))
        for text in [b"", b"1.5", b"-", b"1e5", b" 1"]:
            self.assertIn("invalid big number", refusal(b"(" + text + b"\r\n"), text)

    def test_big_number_too_many_digits(self) -> None:
        """More digits than int() converts is the codec's error, not a ValueError."""
        self.assertIn("too long", refusal(b"(" + b"1" * 5000 + b"\r\n"))

    def test_bulk_error(self) -> None:
        error = parse_one(b"!21\r\nSYNTAX invalid syntax\r\n")
        self.assertEqual(error, Error(b"SYNTAX invalid syntax", bulk=True))
        self.assertEqual(error.code, b"SYNTAX")
        self.assertEqual(parse_one(b"!4\r\na\r\nb\r\n"), Error(b"a\r\nb", bulk=True))

    def test_verbatim(self) -> None:
        self.assertEqual(parse_one(b"=15\r\ntxt:Some string\r\n"), Verbatim(b"txt", b"Some string"))
        self.assertEqual(parse_one(b"=4\r\nmkd:\r\n"), Verbatim(b"mkd", b""))
        self.assertIn("without a format prefix", refusal(b"=3\r\ntxt\r\n"))
        self.assertIn("without a format prefix", refusal(b"=5\r\ntxt;x\r\n"))

    def test_map(self) -> None:
        self.assertEqual(parse_one(b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n"), Map([(SimpleString(b"first"), 1), (SimpleString(b"second"), 2)]))
        self.assertEqual(parse_one(b"%0\r\n"), Map([]))
        # Keys may be aggregates.
        self.assertEqual(parse_one(b"%1\r\n*1\r\n:1\r\n#t\r\n"), Map([((1,), True)]))

    def test_set(self) -> None:
        self.assertEqual(parse_one(b"~3\r\n+orange\r\n#t\r\n:100\r\n"), Set([SimpleString(b"orange"), True, 100]))
        self.assertEqual(parse_one(b"~0\r\n"), Set([]))

    def test_attribute(self) -> None:
        """An attribute annotates the value that follows it, wherever that stands (spec's examples)."""
        value = parse_one(
            b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n"
        )
        self.assertEqual(
            value,
            Attributed(
                [(SimpleString(b"key-popularity"), Map([(b"a", Double(0.1923)), (b"b", Double(0.0012))]))],
                (2039123, 9543892),
            ),
        )
        inner = parse_one(b"*3\r\n:1\r\n:2\r\n|1\r\n+ttl\r\n:3600\r\n:3\r\n")
        self.assertEqual(inner, (1, 2, Attributed([(SimpleString(b"ttl"), 3600)], 3)))
        self.assertEqual(parse_one(b"|0\r\n|0\r\n:1\r\n"), Attributed([], Attributed([], 1)))

    def test_push(self) -> None:
        push = parse_one(b">3\r\n+message\r\n+somechannel\r\n+this is the message\r\n")
        self.assertEqual(push, Push([SimpleString(b"message"), SimpleString(b"somechannel"), SimpleString(b"this is the message")]))
        self.assertEqual(push.kind, SimpleString(b"message"))

    def test_push_interleaved(self) -> None:
        """A push may come before or after a reply, as separate messages (spec's GET example)."""
        push = b">3\r\n+message\r\n+somechannel\r\n+this is the message\r\n"
        self.assertEqual(parse(push + b"$9\r\nGet-Reply\r\n")[1], b"Get-Reply")
        self.assertEqual(parse(b"$9\r\nGet-Reply\r\n" + push)[0], b"Get-Reply")

    def test_push_only_whole(self) -> None:
        """A push is always a whole message, never inside another value."""
        self.assertEqual(
            refusal(b"*1\r\n>1\r\n+x\r\n"), "push inside another value (a push is always a whole message)"
        )
        self.assertIn("push inside another value", refusal(b"|0\r\n>1\r\n+x\r\n"))
        self.assertEqual(refusal(b">0\r\n"), "push with no elements (its first element names its kind)")

    def test_streamed_types_refused(self) -> None:
        """Streamed strings and aggregates are not supported, and say so."""
        self.assertEqual(refusal(b"$?\r\n;4\r\nHell\r\n;0\r\n"), "streamed bulk string ($?) is not supported")
        self.assertEqual(refusal(b"*?\r\n:1\r\n.\r\n"), "streamed array (*?) is not supported")
        self.assertEqual(refusal(b"%?\r\n"), "streamed map (%?) is not supported")
        self.assertEqual(refusal(b"~?\r\n"), "streamed set (~?) is not supported")
        self.assertEqual(refusal(b";4\r\n"), "streamed string chunk (;) is not supported")
        self.assertEqual(refusal(b".\r\n"), "streamed aggregate end (.) is not supported")

    def test_unknown_type(self) -> None:
        self.assertEqual(refusal(b"@1\r\n"), "unknown type byte '@'")
        self.assertEqual(refusal(b"\x00\r\n"), "unknown type byte '\\x00'")
        self.assertEqual(refusal(b"OK\r\n"), "unknown type byte 'O'")


class FramingTests(SynchronousTestCase):
    """Lines end in CRLF; bulk strings are followed by CRLF; nothing is guessed."""

    def test_lf_only(self) -> None:
        """
        A server never ends a line in LF alone: a stream that does is out
        of sync, and a gateway that guessed would answer the wrong command.
        """
        self.assertEqual(refusal(b"+OK\n"), "line ends in LF without CR")
        self.assertEqual(refusal(b"$1\nx\r\n"), "line ends in LF without CR")
        self.assertEqual(refusal(b"\n"), "line ends in LF without CR")
        self.assertEqual(refusal(b"\r\n"), "empty line")

    def test_cr_inside_line(self) -> None:
        self.assertEqual(refusal(b"+O\rK\r\n"), "CR inside a simple string")
        self.assertEqual(refusal(b"-E\rR\r\n"), "CR inside a simple error")
        self.assertIn("invalid bulk string length", refusal(b"$1\r1\r\n"))

    def test_missing_crlf_after_bulk(self) -> None:
        self.assertEqual(refusal(b"$3\r\nfooXY"), "bulk string of 3 bytes not followed by CRLF")
        self.assertEqual(refusal(b"$3\r\nfoo\r:1\r\n"), "bulk string of 3 bytes not followed by CRLF")
        self.assertEqual(refusal(b"!3\r\nfoo\n\n"), "bulk string of 3 bytes not followed by CRLF")

    def test_length_longer_than_data(self) -> None:
        """A length beyond what came waits for more; it never reads into the next message."""
        parser = ReplyParser()
        self.assertEqual(parser.feed(b"$10\r\nabc\r\n+OK\r\n"), [])
        self.assertEqual(parser.buffered, 10)

    def test_byte_by_byte(self) -> None:
        data = b"*3\r\n$3\r\nfoo\r\n%1\r\n+k\r\n,1.5\r\n|1\r\n+a\r\n#t\r\n~1\r\n_\r\n"
        parser = ReplyParser()
        for i in range(len(data) - 1):
            self.assertEqual(parser.feed(data[i : i + 1]), [])
        [value] = parser.feed(data[-1:])
        self.assertEqual(
            value,
            (b"foo", Map([(SimpleString(b"k"), Double(1.5))]), Attributed([(SimpleString(b"a"), True)], Set([Null.NULL]))),
        )

    def test_stays_failed(self) -> None:
        parser = ReplyParser()
        error = self.assertRaises(ProtocolError, parser.feed, b"+OK\r\n:1\r\n+bad\n")
        self.assertEqual(error.messages, [SimpleString(b"OK"), 1])
        self.assertIn("parser already failed", str(self.assertRaises(ProtocolError, parser.feed, b"+OK\r\n")))


class LimitTests(SynchronousTestCase):
    def test_bulk_length(self) -> None:
        """Checked on the header: a huge length fails before any of its body is waited for."""
        self.assertEqual(parse_one(b"$100\r\n" + b"x" * 100 + b"\r\n", max_bulk_length=100), b"x" * 100)
        self.assertEqual(refusal(b"$101\r\n", max_bulk_length=100), "bulk string of 101 bytes exceeds the limit of 100")
        self.assertIn("exceeds the limit", refusal(b"!101\r\n", max_bulk_length=100))
        self.assertIn("exceeds the limit", refusal(b"=101\r\n", max_bulk_length=100))
        self.assertIn("exceeds the limit", refusal(b"$9223372036854775807\r\n"))
        self.assertIn("invalid bulk string length", refusal(b"$9223372036854775808\r\n"))

    def test_elements(self) -> None:
        """Per aggregate; a map's keys and values both count."""
        self.assertEqual(len(parse_one(b"*4\r\n" + b":1\r\n" * 4, max_elements=4)), 4)
        self.assertEqual(refusal(b"*5\r\n", max_elements=4), "array of 5 elements exceeds the limit of 4")
        self.assertEqual(len(parse_one(b"%2\r\n" + b":1\r\n" * 4, max_elements=4).pairs), 2)
        self.assertEqual(refusal(b"%3\r\n", max_elements=4), "map of 6 elements exceeds the limit of 4")
        self.assertEqual(refusal(b"|3\r\n", max_elements=4), "attribute of 6 elements exceeds the limit of 4")
        self.assertIn("exceeds the limit", refusal(b"~5\r\n", max_elements=4))
        self.assertIn("exceeds the limit", refusal(b">5\r\n", max_elements=4))
        self.assertIn("exceeds the limit", refusal(b"*1048577\r\n"))

    def test_depth(self) -> None:
        """Nesting to the limit passes; one level more fails when its header comes."""
        self.assertEqual(parse_one(b"*1\r\n" * 4 + b":1\r\n", max_depth=4), ((((1,),),),))
        self.assertEqual(refusal(b"*1\r\n" * 5, max_depth=4), "values nested deeper than 4 levels")
        # Attributes nest too.
        self.assertIn("nested deeper", refusal(b"|0\r\n" * 5, max_depth=4))
        # Empty aggregates are values, not levels.
        self.assertEqual(parse_one(b"*1\r\n" * 3 + b"*0\r\n", max_depth=3), ((((),),),))

    def test_default_depth(self) -> None:
        """A Lua script's table 100 deep passes (redis-server sends it); 129 levels do not."""
        self.assertEqual(len(encode(parse_one(b"*1\r\n" * 128 + b"*0\r\n"))), 4 * 128 + 4)
        self.assertIn("nested deeper than 128", refusal(b"*1\r\n" * 129))

    def test_nesting_bomb(self) -> None:
        """A million levels of nesting fail at the limit, fast, and fed byte by byte too."""
        bomb = b"*1\r\n" * 1_000_000
        started = time.perf_counter()
        self.assertIn("nested deeper than 128", refusal(bomb))
        outcome(ReplyParser, by_size(bomb[:4000], 1))
        self.assertEqual(outcome(ReplyParser, by_size(bomb[:4000], 1))[1], "failed")
        self.assertIn("nested deeper", refusal(b"|1\r\n" * 1_000_000))
        self.assertIn("nested deeper", refusal(b"%1\r\n*1\r\n" * 1_000_000))
        self.assertLess(time.perf_counter() - started, 5)

    def test_width_bomb(self) -> None:
        """A count that cannot fit the message limit fails on its header (each element takes 3 bytes at least)."""
        self.assertEqual(refusal(b"*1000\r\n", max_message_length=3000), "message longer than 3000 bytes")
        self.assertEqual(len(parse_one(b"*999\r\n" + b"_\r\n" * 999, max_message_length=3004)), 999)

    def test_line_length(self) -> None:
        self.assertEqual(parse_one(b"+" + b"x" * 99 + b"\r\n", max_line_length=100), SimpleString(b"x" * 99))
        line = b"+" + b"x" * 100 + b"\r\n"
        for chunks in ([line], by_size(line, 1), by_size(line, 7)):
            self.assertEqual(outcome(lambda: ReplyParser(max_line_length=100), chunks)[1], "failed")
        parser = ReplyParser(max_line_length=100)
        parser.feed(b"+" + b"x" * 100)
        error = self.assertRaises(ProtocolError, parser.feed, b"x")
        self.assertEqual(str(error), "line longer than 100 bytes")

    def test_message_length(self) -> None:
        """The whole message is bounded, whichever the chunking."""
        data = b"*3\r\n" + b"+" + b"x" * 40 + b"\r\n" + b":1\r\n" + b"$3\r\nabc\r\n"
        limit = len(data)
        self.assertEqual(len(parse_one(data, max_message_length=limit)), 3)
        for size in (len(data), 1, 5):
            self.assertEqual(
                outcome(lambda: ReplyParser(max_message_length=limit - 1), by_size(data, size))[1], "failed", size
            )
        # Messages are counted one by one.
        self.assertEqual(len(parse(data * 10, max_message_length=limit)), 10)

    def test_state_bounded(self) -> None:
        """At most one unfinished line or bulk string is held, and the stack never exceeds the depth."""
        parser = ReplyParser(max_bulk_length=500, max_line_length=100, max_depth=8)
        stream = encoded([(b"x" * 500, (((b"y" * 300,),),), SimpleString(b"z" * 90))] * 20)
        for chunk in by_size(stream, 77):
            parser.feed(chunk)
            self.assertLessEqual(parser.buffered, 501)
            self.assertLessEqual(len(parser._stack), 8)


class PerformanceTests(SynchronousTestCase):
    """Linear buffering, with bounds generous enough to catch only quadratic behaviour."""

    def test_large_array_in_chunks(self) -> None:
        """An array of 300,000 bulk strings fed in 4 kB chunks: never re-parsed from its start."""
        data = encoded([tuple(b"member:%d" % i for i in range(300_000))])
        started = time.perf_counter()
        [value] = feed_all(ReplyParser(), by_size(data, 4096))
        self.assertLess(time.perf_counter() - started, 10)
        self.assertEqual(len(value), 300_000)

    def test_large_bulk_byte_by_byte(self) -> None:
        data = encode(b"v" * 300_000)
        started = time.perf_counter()
        [value] = feed_all(ReplyParser(), by_size(data, 1))
        self.assertLess(time.perf_counter() - started, 10)
        self.assertEqual(len(value), 300_000)


class PropertyTests(SynchronousTestCase):
    @given(replies)
    @settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
    def test_roundtrip(self, value: Any) -> None:
        """
        encode, parse: the same value; and re-encoding gives the same
        bytes (which also tells a boolean from an integer, C{True == 1}).
        """
        data = encode(value)
        parsed = parse_one(data, max_depth=1000)
        self.assertEqual(parsed, value)
        self.assertEqual(encode(parsed), data)

    @given(st.lists(replies, max_size=10), st.lists(st.integers(min_value=0), max_size=40))
    @settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    def test_any_chunking(self, messages: list[Any], cuts: list[int]) -> None:
        """Any chunking of a valid stream parses to the same messages."""
        data = encoded(messages)
        out, failed, buffered = outcome(lambda: ReplyParser(max_depth=1000), chunked(data, cuts))
        self.assertEqual((failed, buffered), (None, 0))
        self.assertEqual(out, messages)

    @given(st.lists(st.tuples(st.binary(min_size=1, max_size=8), st.integers(0, 200_000)), min_size=1, max_size=4),
           st.sampled_from([7, 1000, 65536]))  # fmt: skip
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_large_values(self, specs: list[tuple[bytes, int]], size: int) -> None:
        """Bulk strings up to 200 kB, alone and in arrays and maps, in 7-byte to 64 kB chunks."""
        blobs = [(pattern * (n // len(pattern) + 1))[:n] for pattern, n in specs]
        messages = [*blobs, tuple(blobs), Map([(b, b) for b in blobs])]
        self.assertEqual(feed_all(ReplyParser(), by_size(encoded(messages), size)), messages)

    @given(st.binary(max_size=3000), st.lists(st.integers(min_value=0), max_size=20))
    @settings(max_examples=1000)
    def test_arbitrary_bytes(self, data: bytes, cuts: list[int]) -> None:
        """Arbitrary bytes only ever raise L{ProtocolError}, with the same outcome whichever the chunking."""

        def make() -> ReplyParser:
            return ReplyParser(max_bulk_length=64, max_elements=8, max_depth=4, max_line_length=64, max_message_length=512)

        self.assertEqual(outcome(make, [data])[:2], outcome(make, chunked(data, cuts))[:2])

    @given(st.data())
    @settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
    def test_mutated_streams(self, data: st.DataObject) -> None:
        """
        Valid streams with bytes inserted, deleted or changed: only ever
        L{ProtocolError}, the same outcome whichever the chunking, bounded state.
        """
        stream = bytearray(encoded(data.draw(st.lists(values, min_size=1, max_size=4))))
        for _ in range(data.draw(st.integers(1, 4))):
            where = data.draw(st.integers(0, len(stream)))
            what = data.draw(st.sampled_from(["insert", "delete", "replace"]))
            byte = data.draw(st.sampled_from(b"\r\n$*%~>|!=:+-_#,(;.?0123456789 x"))
            if what == "insert":
                stream[where:where] = bytes([byte])
            elif where < len(stream):
                if what == "delete":
                    del stream[where]
                else:
                    stream[where] = byte
        cuts = data.draw(st.lists(st.integers(min_value=0), max_size=20))

        def make() -> ReplyParser:
            return ReplyParser(max_bulk_length=50, max_elements=10, max_depth=6, max_line_length=80, max_message_length=2000)

        whole = outcome(make, [bytes(stream)])
        pieces = outcome(make, chunked(bytes(stream), cuts))
        self.assertEqual(whole[:2], pieces[:2])
        self.assertLessEqual(pieces[2], 81)
