"""
Keys found from the target's key specs (hoopgw_redis.commands): against a
recorded COMMAND INFO of redis-server 7.0 (tests/captured_commands.py), and
against a live redis-server's own COMMAND GETKEYS for arguments Hypothesis
draws.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw_redis.commands import CommandInfo, KeySet, KeySpec, find_keys, parse_command_info, resolve
from hoopgw_redis.resp import Error, Null, ReplyParser, SimpleString, encode_command

from tests import capture_commands, captured_commands
from tests._redis import start_redis


def table(data: bytes = captured_commands.COMMAND_INFO) -> dict[str, CommandInfo]:
    (reply,) = ReplyParser().feed(data)
    infos = [parse_command_info(entry) for entry in reply]
    return {info.name: info for info in infos if info is not None}


TABLE = table()


def keys(*args: bytes) -> KeySet:
    info = TABLE[args[0].decode().lower()]
    return find_keys(resolve(info, args), args)


# (arguments, keys found, complete)
EXAMPLES = [
    ((b"GET", b"k"), (b"k",), True),
    ((b"SET", b"k", b"v", b"EX", b"10"), (b"k",), True),
    ((b"DEL", b"a", b"b", b"c"), (b"a", b"b", b"c"), True),
    ((b"MGET", b"a", b"b"), (b"a", b"b"), True),
    ((b"MSET", b"a", b"1", b"b", b"2"), (b"a", b"b"), True),
    ((b"HSET", b"h", b"f", b"v", b"g", b"w"), (b"h",), True),
    ((b"LPUSH", b"l", b"x", b"y"), (b"l",), True),
    ((b"BLPOP", b"l1", b"l2", b"0"), (b"l1", b"l2"), True),
    ((b"BLMOVE", b"src", b"dst", b"LEFT", b"RIGHT", b"0"), (b"src", b"dst"), True),
    ((b"EXPIRE", b"k", b"10"), (b"k",), True),
    ((b"RENAME", b"old", b"new"), (b"old", b"new"), True),
    ((b"COPY", b"a", b"b", b"DB", b"3"), (b"a", b"b"), True),
    ((b"SMOVE", b"s1", b"s2", b"m"), (b"s1", b"s2"), True),
    ((b"BITOP", b"AND", b"dest", b"s1", b"s2"), (b"dest", b"s1", b"s2"), True),
    ((b"EVAL", b"return 1", b"2", b"k1", b"k2", b"arg"), (b"k1", b"k2"), True),
    ((b"EVAL", b"return 1", b"0", b"arg"), (), True),
    ((b"EVALSHA", b"abc", b"1", b"k1"), (b"k1",), True),
    ((b"FCALL", b"f", b"1", b"k1", b"a"), (b"k1",), True),
    ((b"EVAL", b"return 1", b"3", b"k1"), (), False),  # more keys than arguments: refused by the target
    ((b"EVAL", b"return 1", b"x"), (), False),  # not a number
    ((b"ZUNIONSTORE", b"d", b"2", b"z1", b"z2", b"WEIGHTS", b"1", b"2"), (b"d", b"z1", b"z2"), True),
    ((b"LMPOP", b"2", b"l1", b"l2", b"LEFT"), (b"l1", b"l2"), True),
    ((b"XREAD", b"COUNT", b"2", b"STREAMS", b"s1", b"s2", b"0", b"0"), (b"s1", b"s2"), True),
    ((b"XREADGROUP", b"GROUP", b"g", b"c", b"STREAMS", b"s1", b">"), (b"s1",), True),
    ((b"GEORADIUS", b"g", b"0", b"0", b"1", b"km", b"STORE", b"dest"), (b"g", b"dest"), True),
    ((b"GEORADIUS", b"g", b"0", b"0", b"1", b"km"), (b"g",), True),
    # A keyword as the last argument names nothing (the target does not look there either).
    ((b"GEORADIUS", b"g", b"0", b"0", b"1", b"km", b"STORE"), (b"g",), True),
    ((b"SORT", b"l", b"BY", b"w_*", b"STORE", b"dst"), (b"l",), False),
    # The empty key says "see KEYS"; the spec names it too (a name more is harmless, a name less is not).
    ((b"MIGRATE", b"h", b"6379", b"", b"0", b"5000", b"KEYS", b"a", b"b"), (b"", b"a", b"b"), False),
    ((b"MIGRATE", b"h", b"6379", b"k", b"0", b"5000"), (b"k",), True),
    ((b"OBJECT", b"ENCODING", b"k"), (b"k",), True),
    ((b"MEMORY", b"USAGE", b"k"), (b"k",), True),
    ((b"CONFIG", b"SET", b"maxmemory", b"1"), (), True),
    ((b"PUBLISH", b"chan", b"m"), (), True),
    ((b"SPUBLISH", b"chan", b"m"), (), True),  # shard channels are routing hints (not_key), not keys
    ((b"FLUSHALL",), (), True),  # (actions.py makes such commands reach every key)
    ((b"PING",), (), True),
]


class KeysTests(SynchronousTestCase):
    def test_examples(self):
        """The keys of common commands, as the recorded key specs give them."""
        for args, expected, complete in EXAMPLES:
            found = keys(*args)
            self.assertEqual((found.keys, found.complete), (expected, complete), args)
            if not complete:
                self.assertTrue(found.why, args)

    def test_case_of_keywords(self):
        """Keywords are found whatever their case, as the target compares them."""
        self.assertEqual(keys(b"XREAD", b"streams", b"s", b"0").keys, (b"s",))

    def test_subcommands(self):
        """A container resolves to its subcommand, whatever its case; an unknown one stays the container."""
        self.assertEqual(resolve(TABLE["config"], (b"CONFIG", b"set")).name, "config|set")
        self.assertEqual(resolve(TABLE["client"], (b"client", b"KILL")).name, "client|kill")
        self.assertEqual(resolve(TABLE["config"], (b"CONFIG", b"nosuch")).name, "config")
        self.assertEqual(resolve(TABLE["config"], (b"CONFIG",)).name, "config")

    def test_unknown_name(self):
        """COMMAND INFO answers a null for a name that is no command."""
        self.assertIsNone(parse_command_info(Null.BULK))

    def test_legacy_target(self):
        """A target without key specs (Redis 6): the legacy range, and movable keys unknown."""
        get = CommandInfo(name="get", arity=2, legacy=(1, 1, 1), specs=None)
        self.assertEqual(find_keys(get, (b"GET", b"k")), KeySet((b"k",)))
        mset = CommandInfo(name="mset", arity=-3, legacy=(1, -1, 2), specs=None)
        self.assertEqual(find_keys(mset, (b"MSET", b"a", b"1", b"b", b"2")).keys, (b"a", b"b"))
        evaluate = CommandInfo(name="eval", arity=-3, flags={"movablekeys"}, specs=None)
        self.assertFalse(find_keys(evaluate, (b"EVAL", b"s", b"1", b"k")).complete)

    def test_unknown_spec(self):
        """A spec of a type the gateway does not know makes the set incomplete."""
        info = CommandInfo(name="x", arity=-1, specs=[KeySpec(begin="unknown"), KeySpec(index=1, lastkey=0)])
        found = find_keys(info, (b"X", b"k"))
        self.assertEqual(found.keys, (b"k",))
        self.assertFalse(found.complete)

    @given(st.lists(st.binary(max_size=6), max_size=10))
    def test_never_raises(self, rest):
        """Any arguments to any recorded command: a key set, never an exception."""
        for info in TABLE.values():
            args = (info.name.encode(), *rest)
            found = find_keys(resolve(info, args), args)
            self.assertTrue(set(found.keys) <= set(args[1:]))


# Arguments for the differential test: words the key specs look for, and plain ones.
_WORDS = st.sampled_from([b"k1", b"k2", b"0", b"1", b"2", b"3", b"STREAMS", b"STORE", b"STOREDIST", b"KEYS",
                          b"BY", b"GET", b"WEIGHTS", b"LEFT", b"streams", b"x"])
_DIFFERENTIAL = ["get", "set", "del", "mget", "mset", "hset", "blpop", "blmove", "rename", "copy", "bitop",
                 "eval", "evalsha", "fcall", "zunionstore", "zinterstore", "lmpop", "blmpop", "zmpop",
                 "sintercard", "xread", "xreadgroup", "georadius", "georadiusbymember", "sort", "migrate",
                 "object", "memory"]


class LiveCommandsTests(SynchronousTestCase):
    def setUp(self):
        self.server = start_redis(self)
        self.client = self.server.connect()
        self.addCleanup(self.client.close)

    def test_record_is_current(self):
        """The recorded COMMAND INFO reads as the live server's does (its version may differ)."""
        live = table(capture_commands.capture(self.server))
        for name in capture_commands.NAMES:
            if name in TABLE and name in live:
                self.assertEqual(live[name].specs, TABLE[name].specs, name)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(_DIFFERENTIAL), st.lists(_WORDS, max_size=8))
    def test_keys_as_the_server_finds_them(self, name, rest):
        """
        For drawn arguments, COMMAND GETKEYS on the live server and the
        gateway agree: where the server names keys, the gateway names the
        same ones (or says its set is incomplete); where the server says the
        command has none, the gateway names none (or says its set is
        incomplete) -- never fewer keys than the server, silently.  Where
        the server refuses the arguments (the command would not run), the
        gateway may name keys anyway.
        """
        info = TABLE[name]
        args = (name.upper().encode(), *rest)
        if info.container and len(args) > 1:
            args = (args[0], b"USAGE" if name == "memory" else b"ENCODING", *args[1:])
        found = find_keys(resolve(info, args), args)
        self.client.send(encode_command(b"COMMAND", b"GETKEYS", *args))
        (reply,) = self.client.read(1)
        if isinstance(reply, Error):
            if b"no key arguments" in reply.message:
                self.assertTrue(not found.keys or not found.complete, (args, reply, found))
        else:
            server_keys = tuple(reply)
            if found.complete:
                self.assertEqual(found.keys, server_keys, args)
            else:
                self.assertTrue(set(server_keys) <= set(found.keys) or found.why, (args, server_keys, found))
