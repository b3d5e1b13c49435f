"""
Record what a real redis-server sends into C{tests/captured.py}, the fixture
the codec tests replay without a server.

    cd examples/redis && PYTHONPATH=src:. python -m tests.capture

Each scenario is a list of steps, (bytes sent, bytes received in answer),
on one connection; a step with nothing sent holds pushes that another
connection caused.  C{PROTOCOL_ERRORS} are inputs that redis-server refuses:
(bytes sent, everything received before it closed the connection).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

from hoopgw_redis.resp import encode_command as cmd

from tests._redis import Client, RedisServer

Steps = list[tuple[bytes, bytes]]


class _Recorder:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.steps: Steps = []

    def step(self, data: bytes, replies: int = 1) -> list[Any]:
        before = len(self.client.received) - self.client.parser.buffered
        if data:
            self.client.send(data)
        values = self.client.read(replies)
        self.steps.append((data, self.client.received[before:]))
        return values


def resp2_basics(r: _Recorder, other: Client) -> None:
    for data in [
        cmd(b"PING"),
        cmd(b"SET", b"k", b"v"),
        cmd(b"GET", b"k"),
        cmd(b"GET", b"missing"),
        cmd(b"ECHO", b""),
        cmd(b"INCR", b"n"),
        cmd(b"INCRBY", b"n", b"-9223372036854775807"),
        cmd(b"DECR", b"n"),
        cmd(b"INCRBYFLOAT", b"f", b"1.5"),
        cmd(b"RPUSH", b"l", b"a", b"b", b"c"),
        cmd(b"LRANGE", b"l", b"0", b"-1"),
        cmd(b"TYPE", b"l"),
        cmd(b"HSET", b"h", b"f1", b"v1", b"f2", b"v2"),
        cmd(b"HGETALL", b"h"),
        cmd(b"SADD", b"s", b"x"),
        cmd(b"SMEMBERS", b"s"),
        cmd(b"ZADD", b"z", b"1.5", b"m", b"inf", b"top"),
        cmd(b"ZSCORE", b"z", b"m"),
        cmd(b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"),
        cmd(b"GET", b"l"),
        cmd(b"NOSUCHCOMMAND", b"arg"),
        cmd(b"BLPOP", b"nolist", b"0.01"),
        cmd(b"SET", b"bin", b"\r\n\x00\xff$3\r\n"),
        cmd(b"GET", b"bin"),
        cmd(b"SET", b"bytes", bytes(range(256))),
        cmd(b"GET", b"bytes"),
        cmd(b"EVAL", b"return {1, {2, {3, {4, {}}}}, 'x', false, {err='in array'}}", b"0"),
        cmd(b"EVAL", b"return redis.error_reply('MYCODE custom error')", b"0"),
        cmd(b"EVAL", b"return {ok='fine'}", b"0"),
        cmd(b"CONFIG", b"GET", b"maxmemory-policy"),
    ]:
        r.step(data)
    r.step(cmd(b"MULTI"))
    r.step(cmd(b"INCR", b"n"))
    r.step(cmd(b"GET", b"l"))
    r.step(cmd(b"EXEC"))
    r.step(cmd(b"MULTI"))
    r.step(cmd(b"NOSUCHCOMMAND"))
    r.step(cmd(b"EXEC"))
    # Several commands in one write, several replies in one read.
    r.step(cmd(b"PING") + cmd(b"GET", b"k") + cmd(b"EXISTS", b"k", b"missing"), 3)


def resp2_debug_protocol(r: _Recorder, other: Client) -> None:
    for kind in [b"string", b"integer", b"double", b"bignum", b"null", b"array", b"set", b"map",
                 b"attrib", b"push", b"verbatim", b"true", b"false"]:  # fmt: skip
        r.step(cmd(b"DEBUG", b"PROTOCOL", kind))


def resp3_basics(r: _Recorder, other: Client) -> None:
    r.step(cmd(b"HELLO", b"3"))
    for data in [
        cmd(b"SET", b"k", b"v"),
        cmd(b"GET", b"missing"),
        cmd(b"HSET", b"h", b"f1", b"v1", b"f2", b"v2"),
        cmd(b"HGETALL", b"h"),
        cmd(b"SADD", b"s", b"x", b"y"),
        cmd(b"SISMEMBER", b"s", b"x"),
        cmd(b"SMEMBERS", b"s"),
        cmd(b"ZADD", b"z", b"1.5", b"m", b"inf", b"top", b"-inf", b"bottom"),
        cmd(b"ZSCORE", b"z", b"m"),
        cmd(b"ZSCORE", b"z", b"top"),
        cmd(b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"),
        # redis-server 7.0 prints 17 digits: 0.10000000000000001.
        cmd(b"ZADD", b"tenths", b"0.1", b"m"),
        cmd(b"ZSCORE", b"tenths", b"m"),
        cmd(b"BLPOP", b"nolist", b"0.01"),
        cmd(b"CONFIG", b"GET", b"maxmemory-policy"),
        cmd(b"EVAL", b"redis.setresp(3); return redis.call('HGETALL', 'h')", b"0"),
        cmd(b"EVAL", b"redis.setresp(3); return {double=3.5}", b"0"),
        cmd(b"LATENCY", b"DOCTOR"),
        cmd(b"COMMAND", b"DOCS", b"SET"),
        cmd(b"NOSUCHCOMMAND"),
    ]:
        r.step(data)


def resp3_debug_protocol(r: _Recorder, other: Client) -> None:
    r.step(cmd(b"HELLO", b"3"))
    for kind in [b"string", b"integer", b"double", b"bignum", b"null", b"array", b"set", b"map",
                 b"attrib", b"push", b"verbatim", b"true", b"false"]:  # fmt: skip
        # "push" answers with a push and then a reply: two messages.
        r.step(cmd(b"DEBUG", b"PROTOCOL", kind), 2 if kind == b"push" else 1)


def resp3_tracking(r: _Recorder, other: Client) -> None:
    r.step(cmd(b"HELLO", b"3"))
    r.step(cmd(b"CLIENT", b"TRACKING", b"ON"))
    r.step(cmd(b"GET", b"tracked"))
    other.call(b"SET", b"tracked", b"changed")
    r.step(b"")  # the invalidation push
    r.step(cmd(b"PING"))


def resp3_pubsub(r: _Recorder, other: Client) -> None:
    r.step(cmd(b"HELLO", b"3"))
    r.step(cmd(b"SUBSCRIBE", b"ch", b"other"), 2)
    other.call(b"PUBLISH", b"ch", b"hello\r\nworld")
    r.step(b"")
    r.step(cmd(b"PING"))
    r.step(cmd(b"UNSUBSCRIBE"), 2)


def resp2_pubsub(r: _Recorder, other: Client) -> None:
    r.step(cmd(b"SUBSCRIBE", b"ch"))
    other.call(b"PUBLISH", b"ch", b"hello")
    r.step(b"")
    r.step(cmd(b"PING"))
    r.step(cmd(b"PSUBSCRIBE", b"c*"))
    other.call(b"PUBLISH", b"ch", b"again")
    r.step(b"", 2)
    r.step(cmd(b"UNSUBSCRIBE"))
    r.step(cmd(b"PUNSUBSCRIBE"))


def inline(r: _Recorder, other: Client) -> None:
    # As typed into telnet or nc: LF or CRLF, quotes, escapes, blank lines.
    for line in [
        b"PING\r\n",
        b"PING\n",
        b"\r\n\n   \t\r\nECHO skipped-blank-lines\r\n",
        b"SET inline-key \"two words\"\r\n",
        b"GET inline-key\r\n",
        b'ECHO "a\\x41\\n\\t\\"\\\\"\r\n',
        b"ECHO 'it\\'s'\r\n",
        b'EVAL "return ARGV" 0 a\x0bb "" \'\' x"y z" \'q\'\r\n',
        b"EVAL \"return ARGV\" 0 a\rb\tc\r\n",
        b'ECHO "\\xZZ\\q"\r\n',
    ]:
        r.step(line)


SCENARIOS: dict[str, Callable[[_Recorder, Client], None]] = {
    "resp2_basics": resp2_basics,
    "resp2_debug_protocol": resp2_debug_protocol,
    "resp2_pubsub": resp2_pubsub,
    "resp3_basics": resp3_basics,
    "resp3_debug_protocol": resp3_debug_protocol,
    "resp3_tracking": resp3_tracking,
    "resp3_pubsub": resp3_pubsub,
    "inline": inline,
}

# Requests redis-server answers with "-ERR Protocol error: ..." and a close.
PROTOCOL_ERRORS = [
    b"*1\r\n$-1\r\n",
    b"*1\r\n$04\r\nPING\r\n",
    b"*1\r\n$ 4\r\nPING\r\n",
    b"*1\r\n$-0\r\n",
    b"*03\r\n",
    b"*+3\r\n",
    b"*3000000000\r\n",
    b"*1\r\n:1\r\n",
    b"*2\r\n$4\r\nECHO\r\n*1\r\n",
    b'ECHO "a"b\r\n',
    b"ECHO 'a\r\n",
    b'ECHO "a\\\r\n',
    b"ECHO 'a\\'\r\n",
]


def capture(server: RedisServer) -> dict[str, Any]:
    scenarios = {}
    for name, scenario in SCENARIOS.items():
        with server.connect() as main, server.connect() as other:
            main.call(b"FLUSHALL")
            recorder = _Recorder(main)
            scenario(recorder, other)
            scenarios[name] = recorder.steps
    errors = []
    for data in PROTOCOL_ERRORS:
        with server.connect() as client:
            client.send(data)
            errors.append((data, client.read_until_closed()))
    return {"version": server.version, "scenarios": scenarios, "errors": errors}


def _write(result: dict[str, Any], path: Path) -> None:
    lines = [
        '"""',
        f"What redis-server {result['version']} sent, recorded by tests/capture.py (do not edit by hand).",
        '"""',
        "",
        f"REDIS_VERSION = {result['version']!r}",
        "",
        "# name -> [(bytes sent, bytes received in answer), ...], one connection each.",
        "SCENARIOS: dict[str, list[tuple[bytes, bytes]]] = {",
    ]
    for name, steps in result["scenarios"].items():
        lines.append(f"    {name!r}: [")
        for sent, received in steps:
            lines.append(f"        ({sent!r}, {received!r}),")
        lines.append("    ],")
    lines += ["}", "", "# (bytes sent, everything received before the server closed the connection)", "PROTOCOL_ERRORS = ["]
    for sent, received in result["errors"]:
        lines.append(f"    ({sent!r}, {received!r}),")
    lines += ["]", ""]
    path.write_text("\n".join(lines))


def main() -> int:
    server = RedisServer()
    try:
        server.start()
        result = capture(server)
    finally:
        server.stop()
    path = Path(__file__).with_name("captured.py")
    _write(result, path)
    print(f"wrote {path} from redis-server {result['version']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    try:
        sys.exit(main())
    finally:
        print(f"{time.monotonic() - started:.1f}s", file=sys.stderr)
