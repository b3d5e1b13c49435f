"""Regression tests for an outside attack round: each asserts the secure behaviour."""
from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from hoopgw_redis.actions import render
from hoopgw_redis.relay import Hello, parse_hello
from hoopgw_redis.resp import Error, SimpleString, keyword
from tests._gateway import RedisGateway
from tests.test_attacks import acl_server, app_settings
from tests.test_frontend import RawClient
from tests.test_masking import MASKS, CARD

POLICY = """
[[rule]]
name = "no-admin"
effect = "deny"
redis.commands = ["FLUSHALL", "CONFIG|SET", "MIGRATE", "CLIENT|KILL", "CLIENT|PAUSE"]

[[rule]]
name = "no-session-keys"
effect = "deny"
redis.keys = ["session:*"]
""" + MASKS


class KeywordTests(SynchronousTestCase):
    """
    redis-server compares keywords with C's strcasecmp, which stops at the
    first NUL: the gateway reads them the same way.
    """

    def test_keyword(self):
        """A keyword ends at its first NUL and compares case-insensitively."""
        self.assertEqual(keyword(b"STORE\x00x"), b"store")
        self.assertEqual(keyword(b"Auth"), b"auth")
        self.assertEqual(keyword(b"\x00AUTH"), b"")

    def test_helloOptions(self):
        """HELLO's options are read as redis-server reads them."""
        self.assertEqual(parse_hello([b"HELLO", b"3", b"AUTH\x00", b"u", b"p", b"setname\x00y", b"n"]),
                         Hello(3, b"u", b"p", b"n"))

    def test_redaction(self):
        """A password after AUTH\\0 or AUTH2\\0 is redacted."""
        shown = render([b"MIGRATE", b"h", b"1", b"k", b"0", b"100", b"auth\x00", b"pw1",
                        b"AUTH2\x00z", b"u", b"pw2"], "migrate")
        self.assertNotIn("pw1", shown)
        self.assertNotIn("pw2", shown)
        shown = render([b"HELLO", b"3", b"AUTH\x00", b"u", b"pw3"], "hello")
        self.assertNotIn("pw3", shown)


class _Base(TestCase):
    timeout = 60
    policy = POLICY

    @inlineCallbacks
    def setUp(self):
        self.server = acl_server(self)
        self.gateway = yield RedisGateway(self, self.server, policy=self.policy, masking=True,
                                          settings=app_settings(self.server)).listen()
        self.token = self.gateway.token("alice", ("dev",))
        with self.server.connect() as d:
            d.call(b"SET", b"session:1", b"s")
            d.call(b"GEOADD", b"geo", b"13.361389", b"38.115556", b"Palermo")
            d.call(b"XADD", b"session:stream", b"1-1", b"f", b"secretsession")
            d.call(b"SET", b"card", f"paid with {CARD}".encode())
            d.call(b"SET", b"s", b"subscribe")

    def client(self):
        c = RawClient(self.gateway.port)
        self.addCleanup(c.close)
        self.assertEqual(c.call(b"AUTH", b"cache", self.token), SimpleString(b"OK"))
        return c

    def trail(self):
        return (self.gateway.base / "audit" / "records.jsonl").read_bytes()


class NulKeywords(_Base):
    @inlineCallbacks
    def test_nulKeywordCannotWriteDeniedKey(self):
        """GEORADIUS ... STORE\\0 session:1: redis-server's strcasecmp stops at the NUL; the gateway sees no STORE."""
        def go():
            return self.client().call(b"GEORADIUS", b"geo", b"15", b"37", b"200", b"km", b"STORE\x00x", b"session:1")
        reply = yield deferToThread(go)
        with self.server.connect() as d:
            self.assertEqual(d.call(b"GET", b"session:1"), b"s", f"session:1 overwritten (reply {reply!r})")

    @inlineCallbacks
    def test_nulKeywordCannotReadDeniedKey(self):
        def go():
            return self.client().call(b"XREAD", b"STREAMS\x00", b"session:stream", b"0")
        reply = yield deferToThread(go)
        self.assertIsInstance(reply, Error, repr(reply))

    @inlineCallbacks
    def test_helloAuthNulCannotSwitchUser(self):
        def go():
            c = self.client()
            c.call(b"HELLO", b"2", b"AUTH\x00", b"default", b"defaultpw")
            return c.call(b"ACL", b"WHOAMI")
        who = yield deferToThread(go)
        self.assertEqual(who, b"app")
        self.assertNotIn(b"defaultpw", self.trail())

    @inlineCallbacks
    def test_migrateAuthNulPasswordRedacted(self):
        def go():
            return self.client().call(b"MIGRATE", b"127.0.0.1", b"1", b"k", b"0", b"100", b"AUTH\x00", b"migratesecretpw")
        yield deferToThread(go)
        self.assertNotIn(b"migratesecretpw", self.trail())

    @inlineCallbacks
    def test_clientReplySkipNulCannotDesync(self):
        """CLIENT REPLY SKIP\\0 desyncs replies; an MGET reply lands on a SUBSCRIBE entry and passes as a 'confirmation', unmasked."""
        def go():
            c = self.client()
            c.send((b"CLIENT", b"REPLY", b"SKIP\x00"), (b"PING",), (b"SUBSCRIBE",), (b"PING",), (b"MGET", b"s", b"card"))
            c.sock.settimeout(3)
            return c.read(3)
        replies = yield deferToThread(go)
        self.assertNotIn(CARD.encode(), repr(replies).encode(), replies)



class Unmasking(_Base):
    """
    Masks find whole values; server-side slicing or encoding (GETRANGE
    chunks, DUMP) gets around them, so the shipped guardrails deny those.
    """

    policy = POLICY + (Path(__file__).parent.parent / "policies" / "redis.toml").read_text()

    @inlineCallbacks
    def test_slicingRefused(self):
        """With policies/redis.toml, GETRANGE chunks and DUMP are refused: no piece of the card is read."""
        def go():
            c = self.client()
            out = [c.call(b"GETRANGE", b"card", str(i).encode(), str(i + 5).encode()) for i in range(0, 30, 6)]
            return out + [c.call(b"DUMP", b"card"), c.call(b"GETBIT", b"card", b"80")]
        replies = yield deferToThread(go)
        for reply in replies:
            self.assertIsInstance(reply, Error, replies)
        self.assertNotIn(b"1111", repr(replies).encode())


class ReactorBlock(_Base):
    timeout = 120

    @inlineCallbacks
    def test_largeValueDoesNotBlockReactor(self):
        """
        A ~15 MB value of digit groups would cost ~30 s of masking on the
        reactor, stalling every session: it is withheld instead, and other
        sessions are answered at once.
        """
        import time
        with self.server.connect() as d:
            d.call(b"SET", b"big", b"4111 " * (3 * 1024 * 1024))
        def go():
            att = self.client()
            victim = self.client()
            att.send((b"GET", b"big"))
            time.sleep(0.5)
            t = time.time()
            victim.sock.settimeout(100)
            victim.call(b"PING")
            took = time.time() - t
            att.sock.settimeout(100)
            return took, att.read(1)
        took, got = yield deferToThread(go)
        self.assertLess(took, 2)  # generous: the scan took tens of seconds
        self.assertIn(b"withheld by hoopgw", repr(got).encode())



class TrailLeak(_Base):
    @inlineCallbacks
    def test_trailRawValues(self):
        """A card number in a command's name, a key, a long key or an argument never reaches the trail raw."""
        digits = b"4111111111111111"

        def go():
            c = self.client()
            c.call(digits, b"x")  # an unknown command named by a card
            c.call(b"GET", b"user:" + digits)  # a key holding one
            c.call(b"GET", b"x" * 2000 + digits)  # a long key: summarised
            c.call(b"SELECT", digits)

        yield deferToThread(go)
        self.assertNotIn(digits, self.trail())
