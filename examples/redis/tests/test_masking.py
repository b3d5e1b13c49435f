"""
Replies masked by detector (hoopgw_redis.masking): the values of every RESP
type through hoopgw's own masks; the relay's outcomes and counts; any
chunking of the target's bytes; and with the real thing, redis-cli and
redis-py reading masked values while the trail never holds them.
"""

from __future__ import annotations

import re
import time
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from hoopgw.masking.service import MaskingService, SessionMasks
from hoopgw.model import Connection, Identity, Status
from hoopgw.policy.loader import build_policy_set

from hoopgw_redis.masking import BUDGET_WITHHELD, DEFAULT_MAX_REPLY, VALUE_COST, WITHHELD, ReplyMasker, withheld
from hoopgw_redis.resp import (
    Attributed,
    BigNumber,
    Double,
    Error,
    Map,
    Null,
    Push,
    ReplyParser,
    Set,
    SimpleString,
    Verbatim,
    encode,
)

from tests._gateway import RedisGateway, require_cli
from tests._redis import start_redis
from tests._strategies import _aggregates, chunked, scalars
from tests.test_frontend import require_redis_py, wait_until
from tests.test_relay import cmd, logged_in, make, reply

CARD = "4111 1111 1111 1111"
CARD_DIGITS = "4111111111111111"
EMAIL = "alice@example.com"
ALICE = Identity(issuer="test", subject="alice", groups=("dev",))
AUDITOR = Identity(issuer="test", subject="carol", groups=("dev", "pii-readers"))

MASKS = """
[[mask]]
name = "pii"
connections = ["cache"]
detectors = ["card", "email"]
strategy = "partial"
except_groups = ["pii-readers"]
"""


def session_masks(text: str = MASKS, identity: Identity = ALICE) -> SessionMasks | None:
    policy = SimpleNamespace(policy_set=build_policy_set([("masks.toml", text.encode())]))
    return MaskingService(policy, b"k" * 32).for_session(identity, Connection("cache", "redis", "h:6379"))


def masker(text: str = MASKS, identity: Identity = ALICE) -> ReplyMasker:
    masks = session_masks(text, identity)
    return ReplyMasker(lambda: masks)


class ValueTests(SynchronousTestCase):
    """Each RESP type through the masks (strategy partial: the last four letters and digits stay)."""

    def test_bulk_strings(self):
        mask = masker()
        shown, masked = mask(f"card {CARD}, mail {EMAIL}".encode())
        self.assertEqual(shown, b"card **** **** **** 1111, mail *****@******e.com")
        self.assertEqual(masked, {"pii": 2})

    def test_too_long_withheld(self):
        """
        A string longer than max_value that a detector could match is
        withheld, not scanned (masking runs on the reactor thread), and
        counted as such; one no detector could match passes as it is.
        """
        masks = session_masks()
        mask = ReplyMasker(lambda: masks, max_value=64)
        long = f"card {CARD} ".encode() * 10
        shown, masked = mask((long, f"card {CARD}".encode()))
        self.assertEqual(shown, (withheld(len(long)), b"card **** **** **** 1111"))
        self.assertEqual(masked, {"pii": 1, WITHHELD: 1})
        plain = b"x" * 1000
        self.assertIs(mask(plain)[0], plain)

    def test_unchanged_is_the_same_object(self):
        """Nothing found: the very value comes back, and nothing is counted."""
        mask = masker()
        for value in (b"hello", (b"a", 1, (b"b",)), Map(((b"k", b"v"),)), SimpleString(b"OK"), 42, Null.BULK, True,
                      Error(b"ERR no"), Double(1.5, b"1.5"), b"\xff\xfe not utf-8"):
            shown, masked = mask(value)
            self.assertIs(shown, value)
            self.assertIsNone(masked)

    def test_every_type(self):
        mask = masker()
        card = CARD_DIGITS.encode()
        value = (
            card,
            SimpleString(b"mail " + EMAIL.encode()),
            Error(b"ERR unknown command 'x', with args beginning with: '" + card + b"' "),
            Verbatim(b"txt", b"card " + card),
            Map(((EMAIL.encode(), b"k"), (b"field", card))),
            Set((card, b"plain")),
            Attributed(((b"ttl", b"3"),), card),
            (b"nested", (card,)),
            b"bytes \xff\xfe around " + card,
        )
        shown, masked = mask(value)
        self.assertNotIn(CARD_DIGITS.encode(), encode(shown))
        self.assertNotIn(EMAIL.encode(), encode(shown))
        self.assertEqual(shown[0], b"************1111")
        self.assertEqual(type(shown[1]), SimpleString)
        self.assertTrue(shown[2].message.startswith(b"ERR unknown command"))  # still an error, its code kept
        self.assertEqual(shown[3], Verbatim(b"txt", b"card ************1111"))
        self.assertEqual(shown[4].pairs[1], (b"field", b"************1111"))
        self.assertEqual(shown[5].items[1], b"plain")
        self.assertEqual(shown[6].attributes, ((b"ttl", b"3"),))
        self.assertEqual(shown[8], b"bytes \xff\xfe around ************1111")  # other bytes kept as they are
        self.assertEqual(masked, {"pii": 10})
        self.assertEqual(ReplyParser().feed(encode(shown)), [shown])  # still valid RESP

    def test_numbers(self):
        """A number a detector finds becomes a bulk string of its masked text; other numbers stay numbers."""
        mask = masker()
        self.assertEqual(mask(int(CARD_DIGITS)), (b"************1111", {"pii": 1}))
        self.assertEqual(mask(BigNumber(int(CARD_DIGITS))), (b"************1111", {"pii": 1}))
        self.assertEqual(mask(Double(float(CARD_DIGITS), CARD_DIGITS.encode()))[0], b"************1111")
        self.assertEqual(mask(1234), (1234, None))

    def test_keep(self):
        """A pub/sub message's kind and channel pass as they are; its payload is masked."""
        mask = masker()
        message = (b"message", EMAIL.encode(), b"to " + EMAIL.encode())
        shown, masked = mask(message, 2)
        self.assertEqual(shown[:2], message[:2])
        self.assertNotIn(EMAIL.encode(), shown[2])
        self.assertEqual(masked, {"pii": 1})
        shown, _ = mask(Push(message), 2)
        self.assertEqual(type(shown), Push)
        self.assertEqual(shown.items[:2], message[:2])

    def test_strategies(self):
        for strategy, expected in (("redact", b"card [redacted]"), ("null", b"card [redacted]")):
            mask = masker(MASKS.replace('"partial"', f'"{strategy}"'))
            self.assertEqual(mask(b"card " + CARD_DIGITS.encode())[0], expected)
        shown, _ = masker(MASKS.replace('"partial"', '"hash"'))(CARD_DIGITS.encode())
        self.assertRegex(shown.decode(), r"\Ahmac:[0-9a-f]{32}\Z")

    def test_except_groups_and_no_masks(self):
        """Someone in except_groups, or no mask on the connection: nothing is masked."""
        self.assertEqual(masker(identity=AUDITOR)(CARD_DIGITS.encode()), (CARD_DIGITS.encode(), None))
        self.assertIsNone(session_masks(MASKS.replace('["cache"]', '["other"]')))
        none = ReplyMasker(lambda: None)
        self.assertEqual(none(CARD_DIGITS.encode()), (CARD_DIGITS.encode(), None))

    def test_patterns(self):
        """A policy's own patterns are detectors too."""
        mask = masker('[[mask]]\nname = "ids"\npatterns = ["EMP-[0-9]{6}"]\n')
        self.assertEqual(mask(b"id EMP-123456"), (b"id [redacted]", {"ids": 1}))


# Leaves a detector finds, among any others.
SECRETS = st.sampled_from([CARD_DIGITS.encode(), f"card {CARD}".encode(), EMAIL.encode(), int(CARD_DIGITS),
                           SimpleString(f"to {EMAIL}".encode()), Error(f"ERR {CARD}".encode())])
SECRET_VALUES = st.recursive(st.one_of(scalars, SECRETS), _aggregates, max_leaves=40)


def shape(value: Any) -> Any:
    """A value's shape: its aggregates and how many items each has; every leaf the same."""
    kind = type(value)
    if kind is tuple:
        return ("array", tuple(shape(v) for v in value))
    if kind is Map:
        return ("map", tuple((shape(k), shape(v)) for k, v in value.pairs))
    if kind in (Set, Push):
        return (kind.__name__, tuple(shape(v) for v in value.items))
    if kind is Attributed:
        return ("attributed", shape(tuple(x for pair in value.attributes for x in pair)), shape(value.value))
    return "leaf"


class CountingMasks:
    """A session's masks whose scans are counted (and their bytes)."""

    def __init__(self, masks: SessionMasks) -> None:
        self.masks = masks
        self.scans = 0
        self.scanned = 0
        self.finders, self.gate, self.settle = masks.finders, masks.gate, masks.settle

    def client_text(self, text: str, counts: Any) -> str:
        self.scans += 1
        self.scanned += len(text)
        return self.masks.client_text(text, counts)


class BudgetTests(SynchronousTestCase):
    """A reply's masking budget: what is scanned is bounded, the rest withheld, never passed unscanned."""

    def test_the_rest_withheld(self):
        """Past the budget, each value that would be scanned is withheld and counted; the others pass."""
        masks = session_masks()
        value = f"card {CARD}".encode()  # 24 bytes
        mask = ReplyMasker(lambda: masks, max_reply=4 * len(value))
        shown, masked = mask((value,) * 4 + (b"plain",) + (value,) * 6 + (b"x", 7))
        self.assertEqual(shown, (b"card **** **** **** 1111",) * 4 + (b"plain",) + (BUDGET_WITHHELD,) * 6 + (b"x", 7))
        self.assertEqual(masked, {"pii": 4, WITHHELD: 6})
        self.assertTrue(all(v is BUDGET_WITHHELD for v in shown[5:11]))  # one object: no copy per value

    def test_once_spent_spent(self):
        """A value that does not fit ends the budget: a later, shorter one is withheld too (the rest is)."""
        masks = session_masks()
        mask = ReplyMasker(lambda: masks, max_reply=30)
        shown, masked = mask((f"card {CARD} and more".encode(), EMAIL.encode()))
        self.assertEqual(shown, (BUDGET_WITHHELD, BUDGET_WITHHELD))
        self.assertEqual(masked, {WITHHELD: 2})

    def test_each_value_costs_at_least(self):
        """A reply of very many short values: each scan costs VALUE_COST at least, so few are scanned."""
        masks = CountingMasks(session_masks('[[mask]]\nname = "ids"\npatterns = ["EMP-[0-9]+"]\n'))
        mask = ReplyMasker(lambda: masks, max_reply=10 * VALUE_COST)  # type: ignore[arg-type,return-value]
        shown, masked = mask(tuple(b"%d" % i for i in range(100_000)))
        self.assertEqual(masks.scans, 10)
        self.assertEqual(shown[:10], tuple(b"%d" % i for i in range(10)))
        self.assertEqual(set(shown[10:]), {BUDGET_WITHHELD})
        self.assertEqual(masked, {WITHHELD: 100_000 - 10})

    def test_scanning_bounded(self):
        """However large and deeply nested the reply, what is scanned stays within the budget."""
        masks = CountingMasks(session_masks())
        budget = 64 * 1024
        mask = ReplyMasker(lambda: masks, max_reply=budget)  # type: ignore[arg-type,return-value]
        leaf = f"card {CARD} ".encode() * 40
        value: Any = tuple(leaf for _ in range(1000))
        for _ in range(100):
            value = (Map(((b"k", value),)), leaf)
        started = time.monotonic()
        shown, masked = mask(value)
        self.assertLess(time.monotonic() - started, 10)
        self.assertLessEqual(masks.scanned, budget)
        self.assertEqual(shape(shown), shape(value))
        self.assertNotIn(CARD.encode(), encode(shown))
        self.assertGreater(masked[WITHHELD], 1000)

    def test_max_value_still_applies(self):
        masks = session_masks()
        mask = ReplyMasker(lambda: masks, max_value=64, max_reply=DEFAULT_MAX_REPLY)
        long = f"card {CARD} ".encode() * 10
        self.assertEqual(mask((long, CARD_DIGITS.encode())),
                         ((withheld(len(long)), b"************1111"), {"pii": 1, WITHHELD: 1}))

    def test_each_one_budget(self):
        """An EXEC's results are one reply: one budget, each result with its own counts."""
        masks = session_masks()
        value = f"card {CARD}".encode()
        mask = ReplyMasker(lambda: masks, max_reply=3 * len(value))
        results = mask.each([(value, value), (value, value), b"plain"])
        self.assertEqual(results, [((b"card **** **** **** 1111",) * 2, {"pii": 2}),
                                   ((b"card **** **** **** 1111", BUDGET_WITHHELD), {"pii": 1, WITHHELD: 1}),
                                   (b"plain", None)])

    def test_exec_through_the_relay(self):
        masks = session_masks()
        relay, out = make()
        logged_in(relay, out)
        relay.masker = ReplyMasker(lambda: masks, max_reply=30)
        relay.data_received(cmd(b"MULTI") + cmd(b"GET", b"a") + cmd(b"GET", b"b") + cmd(b"EXEC"))
        reply(relay, SimpleString(b"OK"), SimpleString(b"QUEUED"), SimpleString(b"QUEUED"),
              (CARD_DIGITS.encode(), CARD_DIGITS.encode()))
        self.assertEqual(out.replies()[-1], (b"************1111", BUDGET_WITHHELD))
        outcomes = {token: outcome for token, outcome in out.finished}
        self.assertEqual((outcomes["GET#2"].masked, outcomes["GET#3"].masked), ({"pii": 1}, {WITHHELD: 1}))

    @settings(max_examples=300, deadline=None)
    @given(SECRET_VALUES, st.integers(min_value=1, max_value=400))
    def test_never_unscanned(self, value, budget):
        """
        Whatever the reply and the budget: its shape is kept, no value a
        detector finds reaches the client, and with a budget that is not
        reached the reply is masked as without one.
        """
        masks = session_masks()
        shown, masked = ReplyMasker(lambda: masks, max_reply=budget)(value)
        self.assertEqual(shape(shown), shape(value))
        data = encode(shown)
        for secret in (CARD, CARD_DIGITS, EMAIL):
            self.assertNotIn(secret.encode(), data)
        self.assertEqual(ReplyParser().feed(data), [shown])
        if not masked or WITHHELD not in masked:
            self.assertEqual((shown, masked), masker()(value))


class RelayTests(SynchronousTestCase):
    """The relay with a masker: what the client gets, and the counts in the outcomes."""

    def relay(self):
        relay, out = make()
        logged_in(relay, out)
        relay.masker = masker()
        return relay, out

    def test_reply_and_outcome(self):
        relay, out = self.relay()
        relay.data_received(cmd(b"GET", b"k") + cmd(b"GET", b"other"))
        reply(relay, CARD_DIGITS.encode(), b"plain")
        self.assertEqual(out.replies(), [b"************1111", b"plain"])
        (_, first), (_, second) = out.finished
        self.assertEqual((first.status, first.masked, first.bytes_out), (Status.succeeded, {"pii": 1}, 23))
        self.assertIsNone(second.masked)

    def test_error_outcome_masked(self):
        """An error quoting a value: masked for the client and in the outcome the trail records."""
        relay, out = self.relay()
        relay.data_received(cmd(b"NOSUCH", CARD_DIGITS.encode()))
        reply(relay, Error(b"ERR unknown command 'NOSUCH', with args beginning with: '" + CARD_DIGITS.encode() + b"' "))
        self.assertNotIn(CARD_DIGITS.encode(), out.client)
        (_, outcome), = out.finished
        self.assertEqual((outcome.status, outcome.code, outcome.masked), (Status.failed, "ERR", {"pii": 1}))
        self.assertNotIn(CARD_DIGITS, outcome.error)

    def test_exec_counts_per_command(self):
        """EXEC's results are masked one by one, each counted in its own command's outcome."""
        relay, out = self.relay()
        relay.data_received(cmd(b"MULTI") + cmd(b"GET", b"a") + cmd(b"GET", b"b") + cmd(b"EXEC"))
        reply(relay, SimpleString(b"OK"), SimpleString(b"QUEUED"), SimpleString(b"QUEUED"),
              (EMAIL.encode(), b"plain"))
        self.assertNotIn(EMAIL.encode(), out.client)
        outcomes = {token: outcome for token, outcome in out.finished}
        self.assertEqual(outcomes["GET#2"].masked, {"pii": 1})
        self.assertIsNone(outcomes["GET#3"].masked)
        self.assertIsNone(outcomes["EXEC#4"].masked)

    def test_confirmations_masked(self):
        """A confirmation is masked too, but for its kind: a channel named by a card reads masked."""
        relay, out = self.relay()
        relay.data_received(cmd(b"SUBSCRIBE", CARD_DIGITS.encode()))
        reply(relay, (b"subscribe", CARD_DIGITS.encode(), 1))
        self.assertEqual(out.replies(), [(b"subscribe", b"************1111", 1)])
        self.assertEqual(out.finished[0][1].masked, {"pii": 1})

    def test_messages_counted_in_the_next_outcome(self):
        """A pub/sub message is nobody's reply: its masked values count in the next command's outcome."""
        relay, out = self.relay()
        relay.data_received(cmd(b"SUBSCRIBE", b"news"))
        reply(relay, (b"subscribe", b"news", 1), (b"message", b"news", b"from " + EMAIL.encode()))
        self.assertEqual(out.replies()[1][:2], (b"message", b"news"))
        self.assertNotIn(EMAIL.encode(), out.client)
        self.assertIsNone(out.finished[0][1].masked)  # SUBSCRIBE's own: its confirmation has nothing masked
        relay.data_received(cmd(b"PING"))
        reply(relay, (b"pong", b""))
        self.assertEqual(out.finished[1][1].masked, {"pii": 1})

    def test_pushes(self):
        """RESP3: a message's payload is masked, and any other push but its kind."""
        relay, out = make()
        logged_in(relay, out, protocol=3)
        relay.masker = masker()
        relay.data_received(cmd(b"SUBSCRIBE", b"news"))
        reply(relay, Push((b"subscribe", b"news", 1)), Push((b"message", b"news", CARD_DIGITS.encode())),
              Push((b"invalidate", (EMAIL.encode(),))))
        replies = out.replies()
        self.assertEqual(replies[1], Push((b"message", b"news", b"************1111")))
        self.assertEqual(replies[2].items[0], b"invalidate")
        self.assertNotIn(EMAIL.encode(), out.client)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(min_value=0, max_value=10**6), max_size=30))
    def test_any_chunking(self, cuts):
        """However the target's bytes are cut, the client gets the same masked bytes: values are masked whole."""
        values = [CARD_DIGITS.encode(), (b"x", EMAIL.encode() * 3), Map(((b"f", b"card " + CARD.encode()),)),
                  b"4111111111111" + b"111", Error(b"ERR " + EMAIL.encode())]
        stream = b"".join(encode(v) for v in values)
        expected = None
        for chunks in ([stream], chunked(stream, cuts)):
            relay, out = self.relay()
            relay.data_received(b"".join(cmd(b"GET", b"k%d" % i) for i in range(len(values))))
            parser = ReplyParser()
            for chunk in chunks:
                relay.target_replies(parser.feed(chunk))
            if expected is None:
                expected = out.client
            self.assertEqual(out.client, expected)
            self.assertNotIn(CARD_DIGITS.encode(), out.client)
            self.assertNotIn(EMAIL.encode(), out.client)


POLICY = MASKS + """
[[rule]]
name = "auditors-may-use-cache"
effect = "allow"
groups = ["pii-readers"]
connections = ["cache"]
actions = ["session.open", "redis.*"]
"""


class ServerTests(TestCase):
    """The real redis-server, redis-cli and redis-py, through a gateway with the masks of the policy."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = start_redis(self)
        self.gateway = RedisGateway(self, self.server, policy=POLICY, masking=True)
        yield self.gateway.listen()
        with self.server.connect() as direct:
            direct.call(b"SET", b"card", f"paid with {CARD}".encode())
            direct.call(b"HSET", b"user:1", b"email", EMAIL.encode(), b"card", CARD_DIGITS.encode(), b"name", b"Alice")
            direct.call(b"SET", b"n", CARD_DIGITS.encode())  # INCRBY n 0 answers it as an integer

    def trail(self) -> bytes:
        from hoopgw.audit.log import RECORDS_FILE

        return (self.gateway.base / "audit" / RECORDS_FILE).read_bytes()

    def assertNotInTrail(self, *values: str) -> None:
        trail = self.trail()
        for value in values:
            self.assertNotIn(value.encode(), trail)
            self.assertNotIn(re.sub(r"\D", "", value).encode() or b"\x00", trail)

    @inlineCallbacks
    def test_redis_cli(self):
        require_cli()
        token = self.gateway.token()
        get = yield deferToThread(self.gateway.cli, "GET", "card", token=token)
        self.assertEqual(get.stdout.strip(), "paid with **** **** **** 1111")
        hgetall = yield deferToThread(self.gateway.cli, "HGETALL", "user:1", token=token)
        self.assertEqual(hgetall.stdout.split(), ["email", "*****@******e.com", "card", "************1111",
                                                  "name", "Alice"])
        number = yield deferToThread(self.gateway.cli, "INCRBY", "n", "0", token=token)
        self.assertEqual(number.stdout.strip(), "************1111")  # a bulk string now: not the number
        echoed = yield deferToThread(self.gateway.cli, "ECHO", f"to {EMAIL}", token=token)
        self.assertEqual(echoed.stdout.strip(), "to *****@******e.com")
        # Written through the gateway: stored as sent (masks are about what is read), masked in the trail.
        yield deferToThread(self.gateway.cli, "SET", "new", f"card {CARD}", token=token)
        with self.server.connect() as direct:
            self.assertEqual(direct.call(b"GET", b"new"), f"card {CARD}".encode())
        ends = [r for r in self.gateway.records("action.end")]
        self.assertEqual([r["outcome"].get("masked") for r in ends], [{"pii": 1}, {"pii": 2}, {"pii": 1}, {"pii": 1},
                                                                      None])
        # What a command carries is masked where the session records it, in its action.start.
        (written,) = [r for r in self.gateway.records("action.start") if r["action"]["kind"] == "redis.set"]
        self.assertEqual((written["action"]["input"], written["action"]["masked"]),
                         ('SET new "card **** **** **** 1111"', {"pii": 1}))
        self.assertNotInTrail(CARD, CARD_DIGITS, EMAIL)

    @inlineCallbacks
    def test_reply_budget(self):
        """
        A connection's max_masked_reply: an LRANGE of many cards through
        redis-cli gets the first ones masked and the rest withheld, never
        a card; the trail counts both; an HGETALL through redis-py too.
        """
        require_cli()
        require_redis_py()
        import redis

        from hoopgw_redis.settings import RedisSettings

        value = f"card {CARD}"  # 24 bytes
        settings = RedisSettings(host=self.server.host, port=self.server.port, tls="disable",
                                 max_masked_reply=10 * len(value))
        gateway = RedisGateway(self, self.server, policy=POLICY, masking=True, settings=settings)
        yield gateway.listen()
        with self.server.connect() as direct:
            direct.call(b"RPUSH", b"cards", *[value.encode()] * 50)
            direct.call(b"HSET", b"h", *[x for i in range(30) for x in (b"f%d" % i, value.encode())])
        token = gateway.token()
        result = yield deferToThread(gateway.cli, "LRANGE", "cards", "0", "-1", token=token)
        self.assertEqual(result.stdout.splitlines(),
                         ["card **** **** **** 1111"] * 10 + ["[withheld by hoopgw]"] * 40, result.stderr)

        def hgetall() -> Any:
            client = redis.Redis(host="127.0.0.1", port=gateway.port, username="cache", password=token, protocol=3)
            try:
                return client.hgetall("h")
            finally:
                client.close()

        fields = yield deferToThread(hgetall)
        self.assertEqual(len(fields), 30)  # every field is there (keys pass the gate: none a detector finds)
        self.assertEqual(sorted(set(fields.values())), [b"[withheld by hoopgw]", b"card **** **** **** 1111"])
        self.assertEqual(list(fields.values()).count(b"card **** **** **** 1111"), 10)
        ends = [r["outcome"] for r in gateway.records("action.end")]
        masked = [e["masked"] for e in ends if e.get("masked")]
        self.assertEqual(masked, [{"pii": 10, WITHHELD: 40}, {"pii": 10, WITHHELD: 20}])
        trail = (gateway.base / "audit" / "records.jsonl").read_bytes()
        self.assertNotIn(CARD.encode(), trail)

    @inlineCallbacks
    def test_redis_py(self):
        """RESP2 and RESP3 (maps), a pipeline and a transaction: every value masked, counted per command."""
        require_redis_py()
        import redis

        token = self.gateway.token()

        def run(protocol: int) -> Any:
            client = redis.Redis(host="127.0.0.1", port=self.gateway.port, username="cache", password=token,
                                 protocol=protocol)
            try:
                single = client.get("card"), client.hgetall("user:1")
                pipe = client.pipeline(transaction=True)
                pipe.get("card").hget("user:1", "email").get("missing")
                return single, pipe.execute()
            finally:
                client.close()

        for protocol in (2, 3):
            (card, user), results = yield deferToThread(run, protocol)
            self.assertEqual(card, b"paid with **** **** **** 1111", protocol)
            self.assertEqual(user, {b"email": b"*****@******e.com", b"card": b"************1111", b"name": b"Alice"})
            self.assertEqual(results, [b"paid with **** **** **** 1111", b"*****@******e.com", None])
        ends = [r for r in self.gateway.records("action.end") if r["action"]["kind"] == "redis.hget"]
        self.assertEqual([r["outcome"]["masked"] for r in ends], [{"pii": 1}, {"pii": 1}])
        self.assertNotInTrail(CARD, CARD_DIGITS, EMAIL)

    @inlineCallbacks
    def test_except_groups_see_values_the_trail_does_not(self):
        """An identity in except_groups reads the values; the trail still never holds them."""
        require_cli()
        token = self.gateway.token("carol", ("pii-readers",))
        get = yield deferToThread(self.gateway.cli, "GET", "card", token=token)
        self.assertEqual(get.stdout.strip(), f"paid with {CARD}")
        yield deferToThread(self.gateway.cli, "SET", "k", f"card {CARD}", token=token)
        yield deferToThread(self.gateway.cli, "GET", f"user:{EMAIL}", token=token)  # a key naming a value
        self.assertNotInTrail(CARD, CARD_DIGITS, EMAIL)

    @inlineCallbacks
    def test_redis_py_pubsub(self):
        """A published message's payload is masked; the channel the client subscribed to is not."""
        require_redis_py()
        import redis

        token = self.gateway.token()

        def run() -> Any:
            client = redis.Redis(host="127.0.0.1", port=self.gateway.port, username="cache", password=token)
            pubsub = client.pubsub()
            try:
                pubsub.subscribe(f"to:{EMAIL}")
                pubsub.get_message(timeout=5)
                with self.server.connect() as direct:
                    wait_until(lambda: direct.call(b"PUBLISH", f"to:{EMAIL}".encode(), f"card {CARD}".encode()) == 1)
                message = None
                deadline = time.monotonic() + 10
                while message is None and time.monotonic() < deadline:
                    message = pubsub.get_message(timeout=1)
                return message
            finally:
                pubsub.close()
                client.close()

        message = yield deferToThread(run)
        self.assertEqual((message["channel"], message["data"]), (f"to:{EMAIL}".encode(), b"card **** **** **** 1111"))
