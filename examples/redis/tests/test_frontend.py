"""
The Redis front end with the real thing on both sides: a redis-server
started by each test, a gateway pipeline wired for real (hoopgw's audit
log on disk, its policy service over a policy folder, dev-issuer tokens),
the front end on 127.0.0.1 port 0, and the real redis-cli and redis-py as
clients.  Effects are checked on the real server, directly.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from hoopgw.audit.verify import verify
from hoopgw.errors import AuditUnavailable

from hoopgw_redis.resp import Null, Push, ReplyParser, SimpleString, encode_command

from tests._gateway import RedisGateway, require_cli
from tests._redis import start_redis

try:
    import redis as redis_py
except ImportError:  # pragma: no cover
    redis_py = None


def require_redis_py() -> None:
    if redis_py is None:
        import os

        from twisted.trial.unittest import SkipTest

        if os.environ.get("CI") == "true":
            raise AssertionError("the redis Python client is missing under CI (pip install 'examples/redis[test]')")
        raise SkipTest("the redis Python client is not installed")


def wait_until(predicate: Any, timeout: float = 10.0) -> Any:
    """Poll (from a thread) until predicate() is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


class RawClient:
    """A blocking socket speaking RESP through the codec (for precise checks)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.parser = ReplyParser()
        self.pending: list[Any] = []

    def send(self, *commands: tuple[Any, ...]) -> None:
        self.sock.sendall(b"".join(encode_command(*c) for c in commands))

    def read(self, count: int = 1) -> list[Any]:
        while len(self.pending) < count:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed; got {self.pending!r}")
            self.pending += self.parser.feed(data)
        out, self.pending = self.pending[:count], self.pending[count:]
        return out

    def call(self, *args: Any) -> Any:
        self.send(args)
        return self.read()[0]

    def closed(self) -> bool:
        self.sock.settimeout(5)
        try:
            return self.sock.recv(65536) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


DENY_FLUSH = """
[[rule]]
name = "no-flushall"
effect = "deny"
redis.commands = ["FLUSHALL", "FLUSHDB"]

[[rule]]
name = "no-session-writes"
effect = "deny"
actions = ["redis.set", "redis.del", "redis.hset", "redis.mset"]
redis.keys = ["session:*"]
message = "sessions are written by the application only"
"""


class FrontEndTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.server = start_redis(self)
        self.gateway = yield RedisGateway(self, self.server, policy=DENY_FLUSH).listen()
        self.token = self.gateway.token("alice", ("dev",))

    def raw(self) -> RawClient:
        client = RawClient(self.gateway.port)
        self.addCleanup(client.close)
        return client

    @inlineCallbacks
    def test_cli_get_set_and_records(self):
        """
        redis-cli SET then GET through the gateway: the value lands on the
        real server, each command has its action.start before and its
        action.end after, with the command's kind, text and keys; the
        token is in no record.
        """
        require_cli()
        result = yield deferToThread(self.gateway.cli, "SET", "greeting", "hello world", token=self.token)
        self.assertEqual(result.stdout.strip(), "OK", result.stderr)
        result = yield deferToThread(self.gateway.cli, "GET", "greeting", token=self.token)
        self.assertEqual(result.stdout.strip(), "hello world")
        with self.gateway.direct() as direct:
            self.assertEqual(direct.call(b"GET", b"greeting"), b"hello world")

        starts = self.gateway.records("action.start")
        ends = self.gateway.records("action.end")
        sets = [r for r in starts if r["action"]["kind"] == "redis.set"]
        self.assertEqual(len(sets), 1)
        record = sets[0]
        self.assertEqual(record["action"]["input"], 'SET greeting "hello world"')
        self.assertEqual(record["action"]["attributes"], {"redis.commands": ["SET"], "redis.keys": ["greeting"]})
        self.assertEqual(record["decision"]["effect"], "allow")
        self.assertEqual(record["identity"]["sub"], "alice")
        end = [r for r in ends if r["action"]["id"] == record["action"]["id"]]
        self.assertEqual(end[0]["outcome"]["status"], "succeeded")
        self.assertLess(record["seq"], end[0]["seq"])
        text = (self.gateway.base / "audit" / "records.jsonl").read_text()
        self.assertNotIn(self.token, text)
        self.assertNotIn(self.token.split(".")[2], text)
        # The trail the front end wrote verifies with hoopgw's own verifier.
        report = verify(self.gateway.base / "audit", self.gateway.audit.vkey, workers=0, allow_unsigned_tail=True)
        self.assertTrue(report.ok, report.first_error)

    @inlineCallbacks
    def test_cli_resp3_and_pipe(self):
        """
        redis-cli -3 (HELLO 3 after AUTH) reads RESP3 through the gateway;
        redis-cli --pipe sends 2000 commands in one stream and every reply
        comes back (it counts them), with a FLUSHALL refused among them.
        """
        require_cli()
        result = yield deferToThread(self.gateway.cli, "CLIENT", "INFO", token=self.token, extra=("-3",))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("resp=3", result.stdout)  # the target's connection speaks RESP3 too
        lines = [f"SET pipe:{i} {i}" for i in range(1000)] + ["FLUSHALL"] + [f"GET pipe:{i}" for i in range(999)]
        result = yield deferToThread(self.gateway.cli, "--pipe", token=self.token, stdin="\r\n".join(lines) + "\r\n")
        self.assertIn("errors: 1, replies: 2000", result.stdout + result.stderr)
        with self.gateway.direct() as direct:
            self.assertEqual(direct.call(b"GET", b"pipe:999"), b"999")

    @inlineCallbacks
    def test_flushall_denied_with_rule_named(self):
        """
        A denied FLUSHALL: redis-cli shows the NOPERM error naming the rule,
        redis-py raises NoPermissionError; the keys are still on the server.
        """
        require_cli()
        require_redis_py()
        with self.gateway.direct() as direct:
            direct.call(b"SET", b"keep", b"1")
        result = yield deferToThread(self.gateway.cli, "FLUSHALL", token=self.token)
        self.assertIn("NOPERM hoopgw: rule 'no-flushall' denies this command", result.stdout)

        def with_redis_py():
            client = redis_py.Redis(host="127.0.0.1", port=self.gateway.port, username="cache", password=self.token)
            try:
                client.flushdb()
            except redis_py.exceptions.NoPermissionError as e:
                return str(e)
            finally:
                client.close()
            return None

        message = yield deferToThread(with_redis_py)
        self.assertIn("rule 'no-flushall'", message)
        with self.gateway.direct() as direct:
            self.assertEqual(direct.call(b"GET", b"keep"), b"1")
        blocked = [r for r in self.gateway.records("action.end") if r["outcome"]["status"] == "blocked"]
        self.assertEqual(len(blocked), 2)

    @inlineCallbacks
    def test_key_rule_with_message(self):
        """A rule on redis.keys: SET session:1 is refused with the rule's message; SET other:1 passes."""
        def run():
            client = self.raw()
            self.assertEqual(client.call(b"AUTH", b"cache", self.token), SimpleString(b"OK"))
            refused = client.call(b"SET", b"session:1", b"x")
            allowed = client.call(b"SET", b"other:1", b"x")
            # MSET with one protected key among others: any key matching is enough for a deny.
            mixed = client.call(b"MSET", b"a", b"1", b"session:2", b"2")
            return refused, allowed, mixed

        refused, allowed, mixed = yield deferToThread(run)
        self.assertEqual(refused.code, b"NOPERM")
        self.assertIn(b"rule 'no-session-writes': sessions are written by the application only", refused.message)
        self.assertEqual(allowed, SimpleString(b"OK"))
        self.assertEqual(mixed.code, b"NOPERM")
        with self.gateway.direct() as direct:
            self.assertEqual(direct.call(b"EXISTS", b"session:1", b"session:2", b"a"), 0)
            self.assertEqual(direct.call(b"GET", b"other:1"), b"x")

    @inlineCallbacks
    def test_multi_exec_denied_command_aborts(self):
        """
        MULTI / SET / FLUSHALL (denied) / EXEC: FLUSHALL is refused at
        queueing (NOPERM in place of QUEUED), EXEC answers EXECABORT, and the
        SET never ran on the real server; the queued SET's outcome says it
        did not run.
        """
        def run():
            client = self.raw()
            client.call(b"AUTH", b"cache", self.token)
            client.send((b"MULTI",), (b"SET", b"tx:key", b"v"), (b"FLUSHALL",), (b"EXEC",), (b"PING",))
            return client.read(5)

        replies = yield deferToThread(run)
        self.assertEqual(replies[:2], [SimpleString(b"OK"), SimpleString(b"QUEUED")])
        self.assertEqual(replies[2].code, b"NOPERM")
        self.assertEqual(replies[3].code, b"EXECABORT")
        self.assertEqual(replies[4], SimpleString(b"PONG"))  # the transaction is over on the target too
        with self.gateway.direct() as direct:
            self.assertEqual(direct.call(b"EXISTS", b"tx:key"), 0)
        ends = {r["action"]["kind"]: r["outcome"] for r in self.gateway.records("action.end")}
        self.assertEqual(ends["redis.set"]["status"], "failed")
        self.assertIn("not run", ends["redis.set"]["error"])
        self.assertEqual(ends["redis.flushall"]["status"], "blocked")
        self.assertEqual(ends["redis.exec"]["code"], "EXECABORT")

    @inlineCallbacks
    def test_redis_py_transaction_with_denied_command(self):
        """
        redis-py's transaction pipeline with a denied command raises the
        queueing error, naming the rule (as it does for any command a
        server refuses while queueing); nothing in it ran.
        """
        require_redis_py()

        def run():
            client = redis_py.Redis(host="127.0.0.1", port=self.gateway.port, username="cache", password=self.token)
            pipe = client.pipeline(transaction=True)
            pipe.set("tx:key", "v")
            pipe.flushall()
            try:
                pipe.execute()
            except redis_py.exceptions.ExecAbortError as e:
                return "abort", str(e)
            except redis_py.exceptions.ResponseError as e:
                return "error", str(e)
            finally:
                client.close()
            return "ran", None

        what, message = yield deferToThread(run)
        self.assertEqual(what, "error", message)
        self.assertIn("FLUSHALL", message)
        self.assertIn("rule 'no-flushall'", message)
        with self.gateway.direct() as direct:
            self.assertEqual(direct.call(b"EXISTS", b"tx:key"), 0)

    @inlineCallbacks
    def test_multi_exec_runs(self):
        """An allowed transaction runs; each queued command's outcome comes from EXEC's results."""
        def run():
            client = self.raw()
            client.call(b"AUTH", b"cache", self.token)
            client.send((b"MULTI",), (b"SET", b"t1", b"a"), (b"INCR", b"t1"), (b"GET", b"t1"), (b"EXEC",))
            return client.read(5)

        replies = yield deferToThread(run)
        self.assertEqual(replies[:4], [SimpleString(b"OK")] + [SimpleString(b"QUEUED")] * 3)
        self.assertEqual(replies[4][0], SimpleString(b"OK"))
        self.assertEqual(replies[4][1].code, b"ERR")  # INCR on a non-number
        self.assertEqual(replies[4][2], b"a")
        ends = {r["action"]["kind"]: r["outcome"] for r in self.gateway.records("action.end")}
        self.assertEqual(ends["redis.set"]["status"], "succeeded")
        self.assertEqual(ends["redis.incr"]["status"], "failed")
        self.assertEqual(ends["redis.exec"]["status"], "succeeded")

    @inlineCallbacks
    def test_pipeline_of_1000_in_order(self):
        """redis-py pipelines 1000 commands (no transaction): replies in order, 1000 records each way."""
        require_redis_py()

        def run():
            client = redis_py.Redis(host="127.0.0.1", port=self.gateway.port, username="cache", password=self.token)
            try:
                pipe = client.pipeline(transaction=False)
                for i in range(1000):
                    if i % 2:
                        pipe.get(f"p:{i - 1}")
                    else:
                        pipe.set(f"p:{i}", str(i))
                return pipe.execute()
            finally:
                client.close()

        results = yield deferToThread(run)
        self.assertEqual(len(results), 1000)
        for i, result in enumerate(results):
            self.assertEqual(result, True if i % 2 == 0 else str(i - 1).encode())
        starts = [r for r in self.gateway.records("action.start") if r["action"]["kind"] in ("redis.get", "redis.set")]
        self.assertEqual(len(starts), 1000)
        self.assertEqual([r["action"]["input"] for r in starts[:2]], ["SET p:0 0", "GET p:0"])

    @inlineCallbacks
    def test_subscribe_and_publish(self):
        """SUBSCRIBE through the gateway (RESP2 and RESP3): messages PUBLISHed on the real server arrive."""
        def run(protocol):
            client = self.raw()
            if protocol == 3:
                client.call(b"HELLO", b"3", b"AUTH", b"cache", self.token)
            else:
                client.call(b"AUTH", b"cache", self.token)
            client.send((b"SUBSCRIBE", b"news", b"alerts"))
            confirmations = client.read(2)
            with self.gateway.direct() as direct:
                wait_until(lambda: direct.call(b"PUBLISH", b"news", b"hello") == 1)
            message = client.read(1)[0]
            # Still subscribed: PING works (RESP2: a pong array), then UNSUBSCRIBE with no channel.
            client.send((b"PING",), (b"UNSUBSCRIBE",))
            rest = client.read(3)
            client.send((b"GET", b"x"))
            after = client.read(1)[0]
            return confirmations, message, rest, after

        confirmations, message, rest, after = yield deferToThread(run, 2)
        self.assertEqual(confirmations, [(b"subscribe", b"news", 1), (b"subscribe", b"alerts", 2)])
        self.assertEqual(message, (b"message", b"news", b"hello"))
        self.assertEqual(rest[0], (b"pong", b""))
        self.assertEqual(sorted(r[1] for r in rest[1:]), [b"alerts", b"news"])
        self.assertEqual(after, Null.BULK)

        confirmations, message, rest, after = yield deferToThread(run, 3)
        self.assertEqual(confirmations[0], Push((b"subscribe", b"news", 1)))
        self.assertEqual(message, Push((b"message", b"news", b"hello")))
        self.assertEqual(rest[0], SimpleString(b"PONG"))
        self.assertEqual(after, Null.NULL)

    @inlineCallbacks
    def test_redis_py_pubsub(self):
        """redis-py's PubSub through the gateway gets a published message."""
        require_redis_py()

        def run():
            client = redis_py.Redis(host="127.0.0.1", port=self.gateway.port, username="cache", password=self.token)
            pubsub = client.pubsub()
            pubsub.subscribe("chan")
            first = pubsub.get_message(timeout=5)
            with self.gateway.direct() as direct:
                wait_until(lambda: direct.call(b"PUBLISH", b"chan", b"payload") == 1)
            message = None
            deadline = time.monotonic() + 10
            while message is None and time.monotonic() < deadline:
                message = pubsub.get_message(timeout=1)
            pubsub.close()
            client.close()
            return first, message

        first, message = yield deferToThread(run)
        self.assertEqual(first["type"], "subscribe")
        self.assertEqual(message["data"], b"payload")

    @inlineCallbacks
    def test_blpop_waits_without_blocking_others(self):
        """
        One client BLPOPs (waiting on the real server); meanwhile another
        session works normally; an LPUSH wakes the first with the value.
        """
        def blocked():
            client = self.raw()
            client.call(b"AUTH", b"cache", self.token)
            return client.call(b"BLPOP", b"queue", b"10")

        waiter = deferToThread(blocked)
        # The BLPOP is waiting on the server: other sessions go on.
        with self.gateway.direct() as direct:
            yield deferToThread(wait_until, lambda: b"cmd=blpop" in direct.call(b"CLIENT", b"LIST"))

        def other():
            client = self.raw()
            client.call(b"AUTH", b"cache", self.token)
            started = time.monotonic()
            for i in range(20):
                client.call(b"SET", f"o:{i}".encode(), b"v")
            elapsed = time.monotonic() - started
            self.assertFalse(waiter.called)
            client.call(b"LPUSH", b"queue", b"job-1")
            return elapsed

        elapsed = yield deferToThread(other)
        self.assertLess(elapsed, 5)
        popped = yield waiter
        self.assertEqual(popped, (b"queue", b"job-1"))

    @inlineCallbacks
    def test_hello_3(self):
        """HELLO 3 AUTH: the client gets the target's HELLO map; replies are RESP3 (maps, nulls, doubles)."""
        def run():
            client = self.raw()
            hello = client.call(b"HELLO", b"3", b"AUTH", b"cache", self.token, b"SETNAME", b"tester")
            client.call(b"HSET", b"h", b"f", b"v")
            return hello, client.call(b"HGETALL", b"h"), client.call(b"GET", b"missing"), client.call(b"CLIENT", b"GETNAME")

        hello, hgetall, missing, name = yield deferToThread(run)
        fields = dict(hello.pairs)
        self.assertEqual(fields[b"proto"], 3)
        self.assertEqual(fields[b"server"], b"redis")
        self.assertEqual(dict(hgetall.pairs), {b"f": b"v"})
        self.assertEqual(missing, Null.NULL)
        self.assertEqual(name, b"tester")
        start = self.gateway.records("session.start")[-1]
        self.assertEqual(start["client"], {"resp": 3, "name": "tester"})

    @inlineCallbacks
    def test_redis_py_resp3(self):
        """redis-py with protocol=3 (HELLO 3 AUTH) through the gateway."""
        require_redis_py()

        def run():
            client = redis_py.Redis(host="127.0.0.1", port=self.gateway.port, username="cache", password=self.token,
                                    protocol=3)
            try:
                client.set("r3", "v")
                return client.get("r3"), client.hgetall("nope")
            finally:
                client.close()

        value, empty = yield deferToThread(run)
        self.assertEqual(value, b"v")
        self.assertEqual(empty, {})

    @inlineCallbacks
    def test_preauth(self):
        """Before login: PING and GET are NOAUTH, HELLO 3 without AUTH its own NOAUTH, a bad token WRONGPASS."""
        def run():
            client = self.raw()
            replies = [client.call(b"PING"), client.call(b"GET", b"k"), client.call(b"HELLO", b"3"),
                       client.call(b"HELLO", b"4"), client.call(b"AUTH", b"cache", b"not-a-token"),
                       client.call(b"AUTH", b"just-a-token"), client.call(b"AUTH", b"nosuch", self.token)]
            replies.append(client.call(b"QUIT"))
            return replies, client.closed()

        replies, closed = yield deferToThread(run)
        self.assertEqual(replies[0].message, b"NOAUTH Authentication required.")
        self.assertEqual(replies[1].message, b"NOAUTH Authentication required.")
        self.assertTrue(replies[2].message.startswith(b"NOAUTH HELLO must be called"))
        self.assertEqual(replies[3].message, b"NOPROTO unsupported protocol version")
        self.assertEqual(replies[4].code, b"WRONGPASS")
        self.assertIn(b"AUTH <connection> <token>", replies[5].message)
        self.assertEqual(replies[6].code, b"NOPERM")
        self.assertEqual(replies[7], SimpleString(b"OK"))
        self.assertTrue(closed)
        failed = self.gateway.records("auth.failed")
        self.assertEqual(len(failed), 2)
        self.assertNotIn("not-a-token", json_text(failed))
        self.assertEqual(len(self.gateway.records("session.refused")), 1)

    @inlineCallbacks
    def test_audit_log_down_refuses(self):
        """The audit log fails: the next command is refused and the connection closed; nothing reaches the server."""
        def login():
            client = self.raw()
            client.call(b"AUTH", b"cache", self.token)
            self.assertEqual(client.call(b"SET", b"before", b"1"), SimpleString(b"OK"))
            return client

        client = yield deferToThread(login)
        self.gateway.audit._fail("test: the disk went away")

        def after():
            reply = client.call(b"SET", b"after", b"1")
            return reply, client.closed()

        reply, closed = yield deferToThread(after)
        self.assertIn(b"audit log is unavailable", reply.message)
        self.assertTrue(closed)
        with self.gateway.direct() as direct:
            self.assertEqual(direct.call(b"EXISTS", b"after"), 0)

        def new_login():
            other = self.raw()
            return other.call(b"AUTH", b"cache", self.token), other.closed()

        reply, closed = yield deferToThread(new_login)
        self.assertIn(b"audit log is unavailable", reply.message)
        self.assertTrue(closed)
        # hoopgw logs each record it could not write (session.end here): expected.
        self.flushLoggedErrors(AuditUnavailable)


def json_text(records: list[dict[str, Any]]) -> str:
    import json

    return json.dumps(records)


REVIEW = """
[[rule]]
name = "review-payments"
effect = "review"
actions = ["redis.set"]
redis.keys = ["payments:*"]
review.approvers = ["group:ops"]
review.timeout = "60s"
"""


class ReviewTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = start_redis(self)
        self.gateway = yield RedisGateway(self, self.server, policy=REVIEW, reviews=True).listen()
        self.token = self.gateway.token("alice", ("dev",))
        self.bob = yield self.gateway.identity.verify_token(self.gateway.token("bob", ("dev", "ops")))

    def client(self) -> RawClient:
        client = RawClient(self.gateway.port)
        self.addCleanup(client.close)
        client.call(b"AUTH", b"cache", self.token)
        return client

    def review_id(self) -> str:
        return wait_until(lambda: self.gateway.records("review.requested"))[-1]["review"]["id"]

    @inlineCallbacks
    def test_held_then_approved(self):
        """
        A command held for review: the client waits (the commands behind it
        too, in order), another session goes on; approved, it runs, then
        the rest.
        """
        held = yield deferToThread(self.client)
        held.send((b"SET", b"payments:1", b"100"), (b"GET", b"payments:1"))
        review = yield deferToThread(self.review_id)

        def other():
            client = self.client()
            return client.call(b"SET", b"free", b"1")

        self.assertEqual((yield deferToThread(other)), SimpleString(b"OK"))
        with self.gateway.direct() as direct:
            self.assertEqual(direct.call(b"EXISTS", b"payments:1"), 0)
        yield self.gateway.sessions.reviews.approve(review, self.bob, "ok")
        replies = yield deferToThread(held.read, 2)
        self.assertEqual(replies, [SimpleString(b"OK"), b"100"])

    @inlineCallbacks
    def test_held_then_denied(self):
        """Denied: the client gets NOPERM naming the rule and the review; nothing ran."""
        held = yield deferToThread(self.client)
        held.send((b"SET", b"payments:2", b"100"),)
        review = yield deferToThread(self.review_id)
        yield self.gateway.sessions.reviews.deny(review, self.bob, "no")
        (reply,) = yield deferToThread(held.read, 1)
        self.assertEqual(reply.code, b"NOPERM")
        self.assertIn(b"review-payments", reply.message)
        self.assertIn(review.encode(), reply.message)
        with self.gateway.direct() as direct:
            self.assertEqual(direct.call(b"EXISTS", b"payments:2"), 0)

    @inlineCallbacks
    def test_client_leaves_while_held(self):
        """The client leaves while its command is held: the review is cancelled, nothing runs later."""
        held = yield deferToThread(self.client)
        held.send((b"SET", b"payments:3", b"100"),)
        yield deferToThread(self.review_id)
        held.close()
        cancelled = yield deferToThread(wait_until, lambda: self.gateway.records("review.cancelled"))
        self.assertEqual(len(cancelled), 1)
        with self.gateway.direct() as direct:
            self.assertEqual(direct.call(b"EXISTS", b"payments:3"), 0)


class HeldSync:
    """Runs the audit log's fdatasync only when released (a slow disk)."""

    def __init__(self) -> None:
        self.hold = False
        self.held: list[tuple[Any, Any]] = []

    def __call__(self, f: Any) -> Any:
        from twisted.internet.defer import Deferred, maybeDeferred

        if not self.hold:
            return maybeDeferred(f)
        d: Deferred = Deferred()
        self.held.append((f, d))
        return d

    def release(self) -> None:
        from twisted.internet.defer import maybeDeferred

        held, self.held, self.hold = self.held, [], False
        for f, d in held:
            maybeDeferred(f).chainDeferred(d)


class WriteAheadTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_recorded_before_forwarded(self):
        """
        With the audit log in strict mode and its fdatasync held, a SET is
        written to the log but not sent to the target until the record is
        durable; then it runs.
        """
        server = start_redis(self)
        sync = HeldSync()
        gateway = yield RedisGateway(self, server, audit={"sync": "strict", "sync_runner": sync}).listen()
        token = gateway.token()
        client = yield deferToThread(lambda: RawClient(gateway.port))
        self.addCleanup(client.close)
        yield deferToThread(client.call, b"AUTH", b"cache", token)
        sync.hold = True
        client.send((b"SET", b"wal", b"1"))
        yield deferToThread(wait_until, lambda: [r for r in gateway.records("action.start")
                                                 if r["action"]["kind"] == "redis.set"])
        yield deferLater(reactor, 0.2, lambda: None)
        with gateway.direct() as direct:
            self.assertEqual(direct.call(b"EXISTS", b"wal"), 0)
        sync.release()
        reply = yield deferToThread(client.read, 1)
        self.assertEqual(reply, [SimpleString(b"OK")])
        with gateway.direct() as direct:
            self.assertEqual(direct.call(b"GET", b"wal"), b"1")
