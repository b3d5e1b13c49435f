"""
The codec against a live redis-server (from the distribution: apt-get
install redis-server), started by each test on 127.0.0.1 and stopped by its
cleanup.  Skipped without redis-server, unless CI=true.

Differential: for inline lines and mixed pipelines drawn by Hypothesis,
C{EVAL "return ARGV" 0 ...} makes the server say which arguments it ran;
they must be the ones the request parser found, and what the parser
refuses the server must refuse too, or be one of the documented cases
where redis-server is more lenient.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw_redis.resp import (
    Attributed,
    Error,
    Map,
    ProtocolError,
    Push,
    ReplyParser,
    RequestParser,
    Set,
    SimpleString,
    encode,
    encode_command,
)

from tests import capture, captured
from tests._redis import Client, RedisServer, start_redis
from tests._strategies import by_size, chunked, inline_quote

RETURN_ARGV = b'EVAL "return ARGV" 0'


def shape(value: Any) -> Any:
    """A value's types, recursively: what must not change between two runs of the same commands."""
    if isinstance(value, tuple):
        return ("array", [shape(v) for v in value])
    if isinstance(value, (Set, Push)):
        return (type(value).__name__, sorted(map(repr, map(shape, value.items))))
    if isinstance(value, Map):
        return ("map", sorted(repr((shape(k), shape(v))) for k, v in value.pairs))
    if isinstance(value, Attributed):
        return ("attributed", shape(value.attributes), shape(value.value))
    return type(value).__name__


def _parsed(data: bytes) -> list[Any] | None:
    """The argument lists the request parser finds in C{data}, or None if it refuses it."""
    try:
        return [c.args for c in RequestParser().feed(data)]
    except ProtocolError:
        return None


class LiveServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server: RedisServer = start_redis(self)

    def connect(self) -> Client:
        client = self.server.connect()
        self.addCleanup(client.close)
        return client

    def test_scenarios(self) -> None:
        """
        The recorded scenarios, run again: every reply parses, re-encodes
        to its bytes, and has the shape it had when recorded; the protocol
        errors are refused by both.
        """
        live = capture.capture(self.server)
        for name, steps in live["scenarios"].items():
            recorded = captured.SCENARIOS[name]
            self.assertEqual([sent for sent, _ in steps], [sent for sent, _ in recorded], name)
            for (sent, received), (_, then) in zip(steps, recorded):
                parser = ReplyParser()
                values = parser.feed(received)
                self.assertEqual(parser.buffered, 0, (name, sent))
                self.assertEqual(b"".join(map(encode, values)), received, (name, sent))
                self.assertEqual(list(map(shape, values)), list(map(shape, ReplyParser().feed(then))), (name, sent))
        for sent, received in live["errors"]:
            self.assertTrue(received.startswith(b"-ERR Protocol error"), (sent, received))
            self.assertIsNone(_parsed(sent), sent)

    @given(st.text(alphabet=" \t\r\x0b\x0c\"'\\xzA0fF9nrtab", max_size=24).map(lambda s: s.encode()))
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_inline_differential(self, tail: bytes) -> None:
        """
        An inline line with quotes, escapes and blanks: the parser's
        arguments are the server's, and the parser refuses exactly the lines
        the server refuses (unbalanced quotes).
        """
        line = RETURN_ARGV + b" " + tail + b"\r\n"
        ours = _parsed(line)
        with self.server.connect() as client:
            client.send(line)
            [reply] = client.read()
        if ours is None:
            self.assertEqual(reply, Error(b"ERR Protocol error: unbalanced quotes in request"), line)
        else:
            [args] = ours
            self.assertEqual(reply, args[3:], line)

    @given(
        st.lists(st.tuples(st.lists(st.binary(max_size=20), max_size=4), st.sampled_from([b"array", b"\r\n", b"\n"])),
                 min_size=1, max_size=15),
        st.lists(st.integers(min_value=0), max_size=10),
    )  # fmt: skip
    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_pipeline_differential(self, commands: list[tuple[list[bytes], bytes]], cuts: list[int]) -> None:
        """
        A pipeline mixing arrays and inline lines (CRLF and LF), written in
        pieces: the server runs the commands the parser finds, in order.
        """
        parts = []
        for args, form in commands:
            if form == b"array":
                parts.append(encode_command(b"EVAL", b"return ARGV", b"0", *args))
            else:
                parts.append(b" ".join([RETURN_ARGV, *map(inline_quote, args)]) + form)
        data = b"".join(parts)
        ours = _parsed(data)
        assert ours is not None
        with self.server.connect() as client:
            for chunk in chunked(data, cuts):
                client.send(chunk)
            replies = client.read(len(commands))
        self.assertEqual(replies, [tuple(args[3:]) for args in ours])

    def test_lenient_server(self) -> None:
        """
        Where redis-server is more lenient than the parser, on input no
        client sends: it skips the two bytes after a bulk string or a
        header's CR without looking.  The parser refuses these; a gateway
        that re-encodes what it parsed sends the server nothing ambiguous.
        """
        for data in [b"*1\r\n$4\r\nPINGxx", b"*1\rX$4\r\nPING\r\n", b"*1\r\n$4\rXPING\r\n"]:
            self.assertIsNone(_parsed(data), data)
            with self.server.connect() as client:
                client.send(data)
                self.assertEqual(client.read(), [SimpleString(b"PONG")], data)

    def test_lf_only_array(self) -> None:
        """
        An array header ending in LF alone: the server waits for a CR and
        then refuses the whole line; the parser refuses at the LF.
        """
        data = b"*1\n$4\nPING\n"
        self.assertIsNone(_parsed(data))
        with self.server.connect() as client:
            client.send(data)
            client.send(b"\r\n")
            self.assertEqual(client.read_until_closed(), b"-ERR Protocol error: invalid multibulk length\r\n")

    def test_nul_inline(self) -> None:
        """
        A NUL in an inline line: the server never runs it (its strchr stops
        at the NUL, it waits, and refuses once 64 kB are buffered); the
        parser refuses it at once.
        """
        data = b"ECHO a\x00b\r\n"
        self.assertIsNone(_parsed(data))
        with self.server.connect() as client:
            client.send(data + b"x" * 70000)
            self.assertEqual(client.read_until_closed(), b"-ERR Protocol error: too big inline request\r\n")

    def test_large_values(self) -> None:
        """A 4 MB value, a 20,000-element list and 10,000 pipelined GETs, through real sockets."""
        client = self.connect()
        value = bytes(range(256)) * 16384
        client.call(b"SET", b"big", value)
        self.assertEqual(client.call(b"GET", b"big"), value)
        client.call(b"RPUSH", b"list", *[b"item:%d" % i for i in range(20000)])
        self.assertEqual(client.call(b"LRANGE", b"list", b"0", b"-1"), tuple(b"item:%d" % i for i in range(20000)))
        client.call(b"SET", b"k", b"v")
        client.send(encode_command(b"GET", b"k") * 10000)
        self.assertEqual(client.read(10000), [b"v"] * 10000)

    def test_deep_replies(self) -> None:
        """
        The deepest replies a server really sends parse with the default
        limits: COMMAND DOCS (12 levels) and a Lua table 100 deep.
        """
        client = self.connect()
        self.assertIsInstance(client.call(b"COMMAND", b"DOCS"), tuple)
        script = b"local t = {} local cur = t for i = 1, 99 do cur[1] = {} cur = cur[1] end return t"
        reply = client.call(b"EVAL", script, b"0")
        for _ in range(100):
            self.assertIsInstance(reply, tuple)
            reply = reply[0] if reply else None
        self.assertIsNone(reply)

    def test_requests_as_server_sees_them(self) -> None:
        """What redis-server itself received, replayed through the request parser in 1-byte chunks."""
        client = self.connect()
        client.call(b"CLIENT", b"SETNAME", b"codec-test")
        data = encode_command(b"SET", b"k", b"\r\n") + b"SET k2 'v 2'\n"
        client.send(data)
        client.read(2)
        parser = RequestParser()
        commands = [c.args for chunk in by_size(data, 1) for c in parser.feed(chunk)]
        self.assertEqual(commands, [(b"SET", b"k", b"\r\n"), (b"SET", b"k2", b"v 2")])
        self.assertEqual(client.call(b"MGET", b"k", b"k2"), (b"\r\n", b"v 2"))
