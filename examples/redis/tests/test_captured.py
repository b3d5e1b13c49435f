"""
The codec against bytes a real redis-server sent (L{tests.captured},
recorded by L{tests.capture}): every request parses to the command the
server ran, every reply parses and re-encodes to the very bytes it came as.
"""

from __future__ import annotations

import math
from typing import Any

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
    RequestParser,
    Set,
    SimpleString,
    Verbatim,
    encode,
    encode_command as cmd,
)

from tests._strategies import by_size, encoded, feed_all
from tests.captured import PROTOCOL_ERRORS, REDIS_VERSION, SCENARIOS

# What some replies must parse to, by scenario and the request that caused them.
EXPECTED: dict[str, dict[bytes, list[Any]]] = {
    "resp2_basics": {
        cmd(b"GET", b"missing"): [Null.BULK],
        cmd(b"BLPOP", b"nolist", b"0.01"): [Null.ARRAY],
        cmd(b"TYPE", b"l"): [SimpleString(b"list")],
        cmd(b"DECR", b"n"): [-(2**63) + 1],
        cmd(b"GET", b"bin"): [b"\r\n\x00\xff$3\r\n"],
        cmd(b"GET", b"bytes"): [bytes(range(256))],
        cmd(b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"): [(b"m", b"1.5", b"top", b"inf")],
        cmd(b"EVAL", b"return {1, {2, {3, {4, {}}}}, 'x', false, {err='in array'}}", b"0"): [
            (1, (2, (3, (4, ()))), b"x", Null.BULK, Error(b"in array"))
        ],
        cmd(b"EVAL", b"return redis.error_reply('MYCODE custom error')", b"0"): [Error(b"MYCODE custom error")],
        cmd(b"EXEC"): [
            (-(2**63) + 2, Error(b"WRONGTYPE Operation against a key holding the wrong kind of value")),
            Error(b"EXECABORT Transaction discarded because of previous errors."),
        ],
    },
    "resp2_pubsub": {
        cmd(b"PING"): [(b"pong", b"")],
        b"": [(b"message", b"ch", b"hello"), (b"message", b"ch", b"again"), (b"pmessage", b"c*", b"ch", b"again")],
    },
    "resp3_basics": {
        cmd(b"GET", b"missing"): [Null.NULL],
        cmd(b"BLPOP", b"nolist", b"0.01"): [Null.NULL],
        cmd(b"HGETALL", b"h"): [Map([(b"f1", b"v1"), (b"f2", b"v2")])],
        cmd(b"SISMEMBER", b"s", b"x"): [1],
        cmd(b"ZSCORE", b"z", b"m"): [Double(1.5)],
        cmd(b"ZSCORE", b"z", b"top"): [Double(math.inf)],
        cmd(b"ZSCORE", b"tenths", b"m"): [Double(0.1)],
        cmd(b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"): [
            ((b"bottom", Double(-math.inf)), (b"m", Double(1.5)), (b"top", Double(math.inf)))
        ],
        cmd(b"CONFIG", b"GET", b"maxmemory-policy"): [Map([(b"maxmemory-policy", b"noeviction")])],
        cmd(b"EVAL", b"redis.setresp(3); return {double=3.5}", b"0"): [Double(3.5)],
    },
    "resp3_debug_protocol": {
        cmd(b"DEBUG", b"PROTOCOL", b"string"): [b"Hello World"],
        cmd(b"DEBUG", b"PROTOCOL", b"integer"): [12345],
        cmd(b"DEBUG", b"PROTOCOL", b"double"): [Double(3.141)],
        cmd(b"DEBUG", b"PROTOCOL", b"bignum"): [BigNumber(1234567999999999999999999999999999999)],
        cmd(b"DEBUG", b"PROTOCOL", b"null"): [Null.NULL],
        cmd(b"DEBUG", b"PROTOCOL", b"array"): [(0, 1, 2)],
        cmd(b"DEBUG", b"PROTOCOL", b"set"): [Set([0, 1, 2])],
        cmd(b"DEBUG", b"PROTOCOL", b"map"): [Map([(0, False), (1, True), (2, False)])],
        cmd(b"DEBUG", b"PROTOCOL", b"attrib"): [
            Attributed([(b"key-popularity", (b"key:123", 90))], b"Some real reply following the attribute")
        ],
        cmd(b"DEBUG", b"PROTOCOL", b"push"): [
            Push([b"server-cpu-usage", 42]),
            b"Some real reply following the push reply",
        ],
        cmd(b"DEBUG", b"PROTOCOL", b"verbatim"): [Verbatim(b"txt", b"This is a verbatim\nstring")],
        cmd(b"DEBUG", b"PROTOCOL", b"true"): [True],
        cmd(b"DEBUG", b"PROTOCOL", b"false"): [False],
    },
    "resp3_tracking": {
        b"": [Push([b"invalidate", (b"tracked",)])],
    },
    "resp3_pubsub": {
        cmd(b"SUBSCRIBE", b"ch", b"other"): [Push([b"subscribe", b"ch", 1]), Push([b"subscribe", b"other", 2])],
        b"": [Push([b"message", b"ch", b"hello\r\nworld"])],
        cmd(b"PING"): [SimpleString(b"PONG")],
    },
}


class CapturedRepliesTests(SynchronousTestCase):
    def test_version(self) -> None:
        self.assertTrue(REDIS_VERSION)

    def test_replies_reencode_exactly(self) -> None:
        """Every reply redis-server sent parses completely and re-encodes to the same bytes."""
        for name, steps in SCENARIOS.items():
            for sent, received in steps:
                parser = ReplyParser()
                values = parser.feed(received)
                self.assertTrue(values, (name, sent))
                self.assertEqual(parser.buffered, 0, (name, sent))
                self.assertEqual(encoded(values), received, (name, sent))

    def test_replies_byte_by_byte(self) -> None:
        """Each scenario's whole reply stream, fed one byte at a time, parses to the same values."""
        for name, steps in SCENARIOS.items():
            stream = b"".join(received for _, received in steps)
            self.assertEqual(feed_all(ReplyParser(), by_size(stream, 1)), ReplyParser().feed(stream), name)

    def test_expected_values(self) -> None:
        """Replies parse to the values they stand for (all of a request's replies, in order, where it was sent twice)."""
        for name, expectations in EXPECTED.items():
            got: dict[bytes, list[Any]] = {}
            for sent, received in SCENARIOS[name]:
                if sent in expectations:
                    got.setdefault(sent, []).extend(ReplyParser().feed(received))
            self.assertEqual(got, expectations, name)

    def test_hello(self) -> None:
        """The RESP3 handshake's reply is a map naming the server and the protocol."""
        [hello] = ReplyParser().feed(SCENARIOS["resp3_basics"][0][1])
        assert isinstance(hello, Map)
        fields = dict(hello.pairs)
        self.assertEqual(fields[b"server"], b"redis")
        self.assertEqual(fields[b"proto"], 3)
        self.assertEqual(fields[b"version"], REDIS_VERSION.encode())

    def test_deep_reply(self) -> None:
        """COMMAND DOCS nests maps, sets and arrays: well within the default depth."""
        [sent, received] = next(s for s in SCENARIOS["resp3_basics"] if s[0] == cmd(b"COMMAND", b"DOCS", b"SET"))
        [docs] = ReplyParser().feed(received)
        self.assertIsInstance(docs, Map)


class CapturedRequestsTests(SynchronousTestCase):
    def test_requests(self) -> None:
        """Every array request parses and re-encodes to the bytes sent."""
        for name, steps in SCENARIOS.items():
            for sent, _ in steps:
                if sent.startswith(b"*"):
                    commands = RequestParser().feed(sent)
                    self.assertTrue(commands, (name, sent))
                    self.assertEqual(b"".join(encode(c) for c in commands), sent)

    def test_inline_as_redis_ran_them(self) -> None:
        """
        Each inline line means for the parser what it meant for redis-server:
        ECHO's reply is the argument the parser found, C{EVAL "return ARGV"
        0 ...} returns the arguments after the 0.
        """
        checked = 0
        for sent, received in SCENARIOS["inline"]:
            [command] = RequestParser().feed(sent)
            self.assertTrue(command.inline)
            [reply] = ReplyParser().feed(received)
            if command.name == "ECHO":
                self.assertEqual(reply, command.args[1], sent)
                checked += 1
            elif command.name == "EVAL":
                self.assertEqual(reply, command.args[3:], sent)
                checked += 1
        self.assertGreaterEqual(checked, 6)

    def test_protocol_errors(self) -> None:
        """Whatever redis-server refuses as a protocol error, the parser refuses too."""
        for sent, received in PROTOCOL_ERRORS:
            self.assertTrue(received.startswith(b"-ERR Protocol error"), received)
            self.assertRaises(ProtocolError, RequestParser().feed, sent)
