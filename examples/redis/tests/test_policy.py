"""
The redis.* conditions (hoopgw_redis.policy) and the actions they see
(hoopgw_redis.actions): the matchers directly, and the same decisions from
hoopgw's own policy engine on the attributes the front end hands it.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.errors import ConfigError
from hoopgw.model import Action, Effect, Identity
from hoopgw.policy.loader import build_policy_set
from hoopgw.policy.rules import CONDITIONS, Condition, PolicySet, Rule

from hoopgw_redis.actions import NOT_A_COMMAND, Described, Limits, Lookup, describe, render
from hoopgw.frontends import FrontEnds

from hoopgw_redis.plugin import front_end
from hoopgw_redis.policy import COMMANDS, KEYS, fail_closed, matches
from hoopgw_redis.resp import Command

from tests.test_commands import TABLE

ALICE = Identity(issuer="test", subject="alice", groups=("dev",))


def described(*args: bytes, inline: bool = False) -> Described:
    name = args[0].decode().lower()
    lookup = Lookup(TABLE[name]) if name in TABLE else NOT_A_COMMAND
    return describe(Command(tuple(args), inline), lookup, db=0)


class DescribeTests(SynchronousTestCase):
    def test_kinds_and_facts(self):
        d = described(b"set", b"session:1", b"v")
        self.assertEqual((d.kind, d.canonical, d.commands, d.keys), ("redis.set", "SET", ("SET",), ("session:1",)))
        d = described(b"CONFIG", b"set", b"maxmemory", b"1")
        self.assertEqual((d.kind, d.commands), ("redis.config.set", ("CONFIG", "CONFIG|SET")))
        self.assertEqual(d.attributes, {COMMANDS: ("CONFIG", "CONFIG|SET")})

    def test_scripts_and_keyspace_are_incomplete(self):
        """Scripts: keys and commands unknown; FLUSHALL, KEYS, SCAN, ...: every key."""
        d = described(b"EVAL", b"return redis.call('del','session:1')", b"1", b"app:1")
        self.assertEqual(d.keys, ("app:1",))
        self.assertTrue(d.keys_unknown)
        self.assertTrue(d.commands_unknown)
        for name in (b"FLUSHALL", b"FLUSHDB", b"KEYS", b"SCAN", b"RANDOMKEY", b"SWAPDB"):
            self.assertTrue(described(name).keys_unknown, name)
        self.assertFalse(described(b"GET", b"k").keys_unknown)

    def test_renamed_command(self):
        """A name the target says is FLUSHALL (rename-command) is FLUSHALL, whatever the client typed."""
        d = describe(Command((b"zapall",)), Lookup(TABLE["flushall"]))
        self.assertEqual((d.kind, d.commands, d.details["typed"]), ("redis.flushall", ("FLUSHALL",), "zapall"))

    def test_unknown_and_unavailable(self):
        d = describe(Command((b"NOSUCH", b"k")), NOT_A_COMMAND)
        self.assertEqual((d.kind, d.keys_unknown, d.commands_unknown), ("redis.unknown", "", ""))
        d = describe(Command((b"GET", b"k")), Lookup.unavailable("down"))
        self.assertEqual(d.kind, "redis.unknown")
        self.assertIn("down", d.keys_unknown)
        self.assertIn("down", d.commands_unknown)

    def test_long_name(self):
        """A made-up name of a megabyte is summarised in the facts too."""
        d = describe(Command((b"X" * 1_000_000, b"k")), NOT_A_COMMAND)
        self.assertLess(len(d.canonical), 100)
        self.assertLess(len(d.input), 200)

    def test_long_and_many_keys(self):
        d = described(b"GET", b"k" * 2000)
        self.assertEqual(d.keys, ())
        self.assertIn("longer than 1024", d.keys_unknown)
        self.assertIn("sha256:", d.details["long_keys"][0])
        d = describe(Command((b"MGET", *[b"k%d" % i for i in range(2000)])), Lookup(TABLE["mget"]))
        self.assertEqual(len(d.keys), 1024)
        self.assertIn("more than 1024", d.keys_unknown)

    def test_key_text(self):
        """Keys are text: UTF-8, and other bytes as \\xNN (so an ASCII prefix always reads as itself)."""
        self.assertEqual(described(b"GET", b"session:\xff\xc3\xa9").keys, ("session:\\xffé",))


class RenderTests(SynchronousTestCase):
    def test_quoting(self):
        self.assertEqual(render([b"SET", b"k", b"hello world"], "set"), 'SET k "hello world"')
        self.assertEqual(render([b"SET", b"k", b'a"\\\n\x00\xff'], "set"), 'SET k "a\\"\\\\\\n\\x00\\xff"')

    def test_large_values_summarised(self):
        text = render([b"SET", b"k", b"x" * 1_000_000], "set")
        self.assertTrue(text.startswith("SET k <1000000 bytes sha256:"))
        self.assertNotIn("xxxx", text)

    def test_many_arguments(self):
        text = render([b"MSET"] + [b"a"] * 100, "mset", Limits(max_args=10))
        self.assertTrue(text.endswith("... (91 more arguments)"))

    def test_passwords_never_shown(self):
        cases = [
            ([b"AUTH", b"user", b"secret"], "auth", "AUTH user <redacted>"),
            ([b"AUTH", b"secret"], "auth", "AUTH <redacted>"),
            ([b"auth", b"a", b"secret", b"more"], "auth", "auth <redacted> <redacted> <redacted>"),
            ([b"HELLO", b"3", b"AUTH", b"u", b"secret", b"SETNAME", b"n"], "hello", "HELLO 3 AUTH u <redacted> SETNAME n"),
            ([b"MIGRATE", b"h", b"1", b"k", b"0", b"10", b"AUTH", b"secret"], "migrate", "MIGRATE h 1 k 0 10 AUTH <redacted>"),
            ([b"MIGRATE", b"h", b"1", b"k", b"0", b"10", b"AUTH2", b"u", b"secret"], "migrate",
             "MIGRATE h 1 k 0 10 AUTH2 u <redacted>"),
            ([b"ACL", b"SETUSER", b"bob", b"on", b">secret", b"#abc", b"~*"], "acl|setuser",
             "ACL SETUSER bob on <redacted> <redacted> ~*"),
            ([b"CONFIG", b"SET", b"requirepass", b"secret", b"maxmemory", b"1"], "config|set",
             "CONFIG SET requirepass <redacted> maxmemory 1"),
            # AUTH renamed away on the target: still a password.
            ([b"AUTH", b"u", b"secret"], "", "AUTH u <redacted>"),
            # Options read as redis-server reads them: a SETNAME named "auth" hides nothing.
            ([b"HELLO", b"3", b"SETNAME", b"auth", b"AUTH", b"u", b"secret"], "hello",
             "HELLO 3 SETNAME auth AUTH <redacted> <redacted>"),
            ([b"HELLO", b"3", b"SETNAME", b"n", b"BOGUS", b"secret"], "hello", "HELLO 3 SETNAME n <redacted> <redacted>"),
            ([b"HELLO", b"3", b"AUTH", b"secret"], "hello", "HELLO 3 <redacted> <redacted>"),
            ([b"MIGRATE", b"h", b"1", b"k", b"0", b"10", b"AUTH", b"pw", b"REPLAEC", b"secret"], "migrate",
             "MIGRATE h 1 k 0 10 AUTH <redacted> <redacted> <redacted>"),
            ([b"MIGRATE", b"h", b"1", b"", b"0", b"10", b"COPY", b"KEYS", b"a", b"b"], "migrate",
             'MIGRATE h 1 "" 0 10 COPY KEYS a b'),
            # A password rule inside a selector, or typed with a space in its argument: redis-server
            # quotes the rule it refuses in its error.
            ([b"ACL", b"SETUSER", b"bob", b"(~k >secret)", b"on >secret", b"~*"], "acl|setuser",
             "ACL SETUSER bob <redacted> <redacted> ~*"),
            ([b"CONFIG", b"SET", b"primaryauth", b"secret"], "config|set", "CONFIG SET primaryauth <redacted>"),
        ]
        for args, canonical, expected in cases:
            self.assertEqual(render(args, canonical), expected)
            self.assertNotIn("secret", render(args, canonical))

    def test_hidden(self):
        """Whether an argument is not in the input as it is: a password, a summary, past the count."""
        cases = [
            ((b"GET", b"k"), False),
            ((b"SET", b"k", b"x" * 300), True),
            ((b"AUTH", b"u", b"pw"), True),
            ((b"MSET", *[b"a"] * 100), True),
        ]
        for args, hidden in cases:
            self.assertEqual(describe(Command(args), NOT_A_COMMAND, limits=Limits(max_args=64)).hidden, hidden, args)


POLICY = """
[[rule]]
name = "allow"
effect = "allow"
actions = ["redis.*"]

[[rule]]
name = "no-flush"
effect = "deny"
redis.commands = ["FLUSHALL", "CONFIG"]

[[rule]]
name = "no-session"
effect = "deny"
redis.keys = ["session:*"]
"""


def policy(text: str = POLICY) -> PolicySet:
    # The conditions as the gateway has them with the plugin installed.
    conditions = {**CONDITIONS, **FrontEnds([front_end]).conditions}
    return build_policy_set([("test.toml", text.encode())], conditions=conditions)


def decide(policy_set: PolicySet, d: Described) -> tuple[Effect, str | None]:
    attributes = fail_closed(d, policy_set.rules, ALICE, "cache")
    assert attributes is not None
    decision = policy_set.evaluate(ALICE, "cache", Action(kind=d.kind, input=d.input, attributes=attributes))
    return decision.effect, decision.rule


class EngineTests(SynchronousTestCase):
    def test_plugin_conditions_load(self):
        """With the plugin's conditions, policies may use them; upper-case command patterns are enforced."""
        policy()
        with self.assertRaises(ConfigError) as e:
            policy('[[rule]]\nname = "x"\neffect = "deny"\nredis.commands = ["flushall"]\n')
        self.assertIn("upper-case", str(e.exception))

    def test_decisions(self):
        p = policy()
        self.assertEqual(decide(p, described(b"GET", b"k")), (Effect.allow, "allow"))
        self.assertEqual(decide(p, described(b"flushall")), (Effect.deny, "no-flush"))
        self.assertEqual(decide(p, described(b"config", b"GET", b"*")), (Effect.deny, "no-flush"))
        self.assertEqual(decide(p, described(b"SET", b"session:1", b"v")), (Effect.deny, "no-session"))
        self.assertEqual(decide(p, described(b"MSET", b"a", b"1", b"session:2", b"2")), (Effect.deny, "no-session"))
        # Fail closed: a script matches the deny rules on commands and on keys.
        self.assertEqual(decide(p, described(b"EVAL", b"return 1", b"0"))[0], Effect.deny)
        # FLUSHDB reaches every key: the rule on session:* keys catches it.
        self.assertEqual(decide(p, described(b"FLUSHDB")), (Effect.deny, "no-session"))
        self.assertEqual(decide(p, described(b"SORT", b"l", b"BY", b"session:*")), (Effect.deny, "no-session"))

    def test_hidden_policy_refuses(self):
        """A policy that does not show its rules: an incomplete command cannot be matched, so it is refused."""
        self.assertIsNone(fail_closed(described(b"EVAL", b"return 1", b"0"), None, ALICE, "cache"))
        self.assertIsNotNone(fail_closed(described(b"GET", b"k"), None, ALICE, "cache"))

    def test_matches(self):
        """The semantics: any value matches; an incomplete fact matches deny and review rules, not allow rules."""
        eval_ = described(b"EVAL", b"return 1", b"1", b"app:1")
        self.assertTrue(matches(KEYS, ["session:*"], eval_, Effect.deny))
        self.assertTrue(matches(KEYS, ["session:*"], eval_, Effect.review))
        self.assertFalse(matches(KEYS, ["session:*"], eval_, Effect.allow))
        self.assertTrue(matches(KEYS, ["app:*"], eval_, Effect.allow))
        self.assertTrue(matches(COMMANDS, ["FLUSHALL"], eval_, Effect.deny))
        self.assertFalse(matches(KEYS, ["*"], described(b"PING"), Effect.deny))


_PATTERNS = st.lists(st.sampled_from(["a*", "b*", "ab", "[ab]c", "*", "c?", "session:*"]), min_size=1, max_size=3)
_RULE = st.tuples(st.sampled_from([Effect.allow, Effect.deny, Effect.review]), st.sampled_from([KEYS, COMMANDS]),
                  _PATTERNS)
_KEYSETS = st.tuples(st.lists(st.sampled_from(["a1", "b", "ab", "ac", "c1", "zz"]), max_size=3), st.booleans(),
                     st.lists(st.sampled_from(["GET", "C1", "AB"]), min_size=1, max_size=2), st.booleans())


class SemanticsTests(SynchronousTestCase):
    @settings(max_examples=400, deadline=None)
    @given(st.lists(_RULE, max_size=5), _KEYSETS)
    def test_engine_never_more_lenient(self, rules, facts):
        """
        hoopgw's engine, on the attributes fail_closed gives it, never lets
        through what the semantics (L{matches}, deny beats review beats
        allow) refuse, and denies whatever they deny.
        """
        keys, keys_complete, commands, commands_complete = facts
        d = Described(kind="redis.x", canonical="X", input="x", commands=tuple(commands), keys=tuple(keys),
                      keys_unknown="" if keys_complete else "unknown",
                      commands_unknown="" if commands_complete else "unknown")
        built = []
        for i, (effect, condition, patterns) in enumerate(rules):
            if condition == COMMANDS:
                patterns = [p.upper() for p in patterns]
            review = None
            if effect is Effect.review:
                from hoopgw.policy.rules import ReviewRequirement

                review = ReviewRequirement(approvers=("group:ops",))
            built.append(Rule(name=f"r{i}", effect=effect, conditions=[Condition(condition, tuple(patterns))],
                              review=review))
        p = PolicySet(rules=built)

        def semantic(effect: Effect) -> list[Rule]:
            return [r for r in built if r.effect is effect
                    and all(matches(c.name, c.value, d, r.effect) for c in r.conditions)]

        if semantic(Effect.deny):
            expected = Effect.deny
        elif not semantic(Effect.allow):
            expected = Effect.deny
        elif semantic(Effect.review):
            expected = Effect.review
        else:
            expected = Effect.allow
        attributes = fail_closed(d, built, ALICE, "cache")
        if attributes is None:
            return  # refused by the gateway: never more lenient
        actual = p.evaluate(ALICE, "cache", Action(kind=d.kind, attributes=attributes)).effect
        if expected is not Effect.allow:
            self.assertIsNot(actual, Effect.allow, (rules, facts))
        if semantic(Effect.deny):
            self.assertIs(actual, Effect.deny, (rules, facts))


class ShippedPolicyTests(SynchronousTestCase):
    def test_guardrails(self):
        """policies/redis.toml loads, and refuses what it says whatever the client's spelling."""
        from pathlib import Path

        text = (Path(__file__).parent.parent / "policies" / "redis.toml").read_text()
        allow = '[[rule]]\nname = "allow"\neffect = "allow"\nactions = ["redis.*"]\n'
        p = policy(allow + text)
        cases = [
            ((b"flushall",), "redis-no-wipe"),
            ((b"config", b"set", b"dir", b"/tmp"), "redis-no-admin"),
            ((b"Acl", b"SetUser", b"app", b"nopass"), "redis-no-admin"),
            ((b"client", b"kill", b"type", b"normal"), "redis-no-other-sessions"),
            ((b"KEYS", b"*"), "redis-no-keyspace-scans"),
            ((b"DEBUG", b"SLEEP", b"0"), "redis-no-admin"),
            ((b"CONFIG", b"GET", b"requirepass"), "redis-no-admin"),
            ((b"acl", b"list"), "redis-no-admin"),
            ((b"ACL", b"GETUSER", b"default"), "redis-no-admin"),
            ((b"ACL", b"LOG"), "redis-no-admin"),
            ((b"CLIENT", b"UNBLOCK", b"7"), "redis-no-other-sessions"),
            ((b"CLIENT", b"TRACKING", b"on", b"REDIRECT", b"7"), "redis-no-other-sessions"),
            ((b"GETRANGE", b"k", b"0", b"5"), "redis-no-unmasking"),
            ((b"dump", b"k"), "redis-no-unmasking"),
            ((b"BITFIELD", b"k", b"GET", b"u8", b"0"), "redis-no-unmasking"),
        ]
        for args, rule in cases:
            self.assertEqual(decide(p, described(*args)), (Effect.deny, rule), args)
        self.assertEqual(decide(p, described(b"GET", b"k")), (Effect.allow, "allow"))
        # A script matches every deny rule on commands (fail closed).
        self.assertEqual(decide(p, described(b"EVAL", b"return 1", b"0"))[0], Effect.deny)
