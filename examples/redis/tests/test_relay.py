"""
The relay's state machine (hoopgw_redis.relay) with no sockets and no
pipeline: a recording output stands for the glue, decisions are made (or
held) by the test, and the target's replies are values fed by hand.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.model import Status

from hoopgw_redis.relay import Login, Phase, Relay, RelayLimits, Verdict, parse_hello
from hoopgw_redis.resp import Command, Error, Null, Push, ReplyParser, SimpleString, encode, encode_command

from tests._strategies import chunked

OK = SimpleString(b"OK")
QUEUED = SimpleString(b"QUEUED")


class Recorder:
    """An L{Output} that records; decides at once by C{deny} (names refused), or holds decisions."""

    def __init__(self, *, deny: tuple[str, ...] = (), hold: bool = False) -> None:
        self.client = b""
        self.target = b""
        self.logins: list[Login] = []
        self.decisions: list[Command] = []
        self.finished: list[tuple[Any, Any]] = []
        self.closed = False
        self.reading_calls: list[bool] = []
        self.deny = deny
        self.hold = hold
        self.relay: Relay | None = None

    def to_client(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.client += data

    def to_target(self, data: bytes) -> None:
        self.target += data

    def login(self, login: Login) -> None:
        self.logins.append(login)

    def decide(self, command: Command) -> None:
        self.decisions.append(command)
        if not self.hold:
            self.answer(command)

    def answer(self, command: Command) -> None:
        assert self.relay is not None
        name = command.name
        token = f"{name}#{len(self.decisions)}"
        refusal = self.relay.refusal(name, command.args)
        if refusal is not None or name in self.deny:
            self.relay.decided(Verdict(False, name, token, b"-NOPERM denied " + name.encode() + b"\r\n"))
        else:
            self.relay.decided(Verdict(True, name, token))

    def finished_(self, token: Any, outcome: Any) -> None:
        self.finished.append((token, outcome))

    def close(self) -> None:
        self.closed = True

    def reading(self, on: bool) -> None:
        self.reading_calls.append(on)

    def replies(self) -> list[Any]:
        return ReplyParser().feed(self.client)

    def sent(self) -> list[tuple[bytes, ...]]:
        from hoopgw_redis.resp import RequestParser

        return [c.args for c in RequestParser().feed(self.target)]


# The Output protocol's method is "finished"; the recorder keeps the list under that name.
Recorder.finished_method = Recorder.finished_  # type: ignore[attr-defined]


def make(**kwargs: Any) -> tuple[Relay, Recorder]:
    out = Recorder(**kwargs)
    relay = Relay(_Out(out))
    out.relay = relay
    return relay, out


class _Out:
    """Adapts the recorder (whose list is called finished) to the Output protocol."""

    def __init__(self, recorder: Recorder) -> None:
        self.r = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self.r, name)

    def finished(self, token: Any, outcome: Any) -> None:
        self.r.finished.append((token, outcome))


def cmd(*args: bytes) -> bytes:
    return encode_command(*args)


def logged_in(relay: Relay, out: Recorder, protocol: int = 2) -> None:
    relay.data_received(cmd(b"AUTH", b"cache", b"token"))
    assert out.logins == [Login("cache", "token")]
    relay.logged_in(b"+OK\r\n", protocol=protocol, db=0, relogin=[("AUTH", cmd(b"AUTH", b"pw"), "relogin failed")])
    out.client = b""


def reply(relay: Relay, *values: Any) -> None:
    relay.target_replies(list(values))


class PreauthTests(SynchronousTestCase):
    def test_as_redis_server(self):
        """Before login: NOAUTH for commands, HELLO's own errors, QUIT answered and closed."""
        relay, out = make()
        relay.data_received(cmd(b"PING") + cmd(b"GET", b"k") + cmd(b"HELLO", b"3") + cmd(b"HELLO", b"x")
                            + cmd(b"HELLO", b"4") + cmd(b"HELLO", b"3", b"FOO") + cmd(b"AUTH", b"a", b"b", b"c")
                            + b"ping\r\n" + cmd(b"QUIT") + cmd(b"PING"))
        replies = out.replies()
        self.assertEqual([r.message if isinstance(r, Error) else r for r in replies], [
            b"NOAUTH Authentication required.",
            b"NOAUTH Authentication required.",
            replies[2].message,
            b"ERR Protocol version is not an integer or out of range",
            b"NOPROTO unsupported protocol version",
            b"ERR Syntax error in HELLO option 'FOO'",
            b"ERR syntax error",
            b"NOAUTH Authentication required.",
            OK,
        ])
        self.assertTrue(replies[2].message.startswith(b"NOAUTH HELLO must be called"))
        self.assertTrue(out.closed)
        self.assertEqual(out.logins, [])
        self.assertEqual(out.target, b"")

    def test_hello_auth(self):
        """HELLO 3 AUTH conn token SETNAME n logs in with protocol 3 and the name."""
        relay, out = make()
        relay.data_received(cmd(b"hello", b"3", b"auth", b"cache", b"tok", b"setname", b"me"))
        self.assertEqual(out.logins, [Login("cache", "tok", 3, b"me")])
        self.assertEqual(relay.phase, Phase.LOGGING_IN)

    def test_parse_hello(self):
        self.assertEqual(parse_hello([b"HELLO"]).protocol, None)
        self.assertEqual(parse_hello([b"HELLO", b"2", b"AUTH", b"u"]), b"-ERR Syntax error in HELLO option 'AUTH'\r\n")

    def test_limits(self):
        """Before login, more than 10 arguments or a 16 KiB argument is a protocol error, then the connection closes."""
        for data in (cmd(b"AUTH", *[b"x"] * 10), cmd(b"AUTH", b"cache", b"t" * (16 * 1024 + 1))):
            relay, out = make()
            relay.data_received(data)
            self.assertTrue(out.replies()[0].message.startswith(b"ERR Protocol error"))
            self.assertTrue(out.closed)
            self.assertEqual(out.logins, [])

    def test_bytes_bounded(self):
        """More than 64 KiB before the login succeeds closes the connection, even while it is under way."""
        relay, out = make()
        relay.data_received(cmd(b"AUTH", b"cache", b"tok"))
        for _ in range(40):
            relay.data_received(cmd(b"SET", b"k", b"v" * 2000))
            if out.closed:
                break
        self.assertTrue(out.closed)
        self.assertIn(b"before authentication", out.client)
        self.assertEqual(relay.phase, Phase.CLOSED)
        relay.logged_in(b"+OK\r\n", protocol=2, db=0)
        self.assertEqual(out.decisions, [])

    def test_pipelined_behind_auth(self):
        """Commands sent behind AUTH wait for the login, then are decided in order (none before it)."""
        relay, out = make()
        relay.data_received(cmd(b"AUTH", b"cache", b"tok") + cmd(b"SET", b"k", b"v") + cmd(b"GET", b"k"))
        self.assertEqual(out.decisions, [])
        relay.logged_in(b"+OK\r\n", protocol=2, db=0)
        self.assertEqual([c.name for c in out.decisions], ["SET", "GET"])
        self.assertEqual(out.replies(), [OK])  # the others' replies come from the target

    def test_failures_close(self):
        """A refused login may be retried; the fifth refusal closes the connection."""
        relay, out = make()
        for i in range(5):
            relay.data_received(cmd(b"AUTH", b"cache", b"bad"))
            self.assertEqual(relay.phase, Phase.LOGGING_IN)
            relay.login_refused(b"-WRONGPASS no\r\n")
        self.assertTrue(out.closed)
        self.assertEqual(len(out.replies()), 5)


# Commands of a pipeline: a few shapes, random arguments.
_ARGS = st.binary(max_size=12)
_COMMANDS = st.lists(
    st.one_of(
        st.tuples(st.just(b"SET"), _ARGS, _ARGS),
        st.tuples(st.just(b"GET"), _ARGS),
        st.tuples(st.just(b"del"), _ARGS, _ARGS),
        st.tuples(st.just(b"FLUSHALL")),
        st.tuples(st.just(b"Ping")),
    ),
    min_size=1,
    max_size=40,
)


class PipelineTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(_COMMANDS, st.data())
    def test_one_decision_per_command_in_order(self, commands, data):
        """
        However the client's bytes are split, each command is decided once,
        in order; the allowed ones reach the target in order; the client
        gets one reply per command, refusals in their place.
        """
        stream = cmd(b"AUTH", b"cache", b"tok") + b"".join(cmd(*c) for c in commands)
        relay, out = make(deny=("FLUSHALL",))
        hold = data.draw(st.booleans())
        out.hold = hold
        logged = False
        for chunk in chunked(stream, data.draw(st.lists(st.integers(0, 10**6), max_size=30))):
            relay.data_received(chunk)
            if not logged and out.logins:
                relay.logged_in(b"+OK\r\n", protocol=2, db=0)
                logged = True
            while hold and len(out.decisions) > sum(1 for _ in out.finished) and relay.deciding is not None:
                out.answer(relay.deciding)
                break
        if not logged:
            relay.logged_in(b"+OK\r\n", protocol=2, db=0)
        while hold and relay.deciding is not None:
            out.answer(relay.deciding)
        self.assertEqual([c.args for c in out.decisions], [tuple(c) for c in commands])
        allowed = [tuple(c) for c in commands if c[0].upper() != b"FLUSHALL"]
        self.assertEqual(out.sent(), allowed)
        # The target answers each forwarded command: every command has its reply, in order.
        reply(relay, *[b"r%d" % i for i in range(len(allowed))])
        replies = out.replies()[1:]
        self.assertEqual(len(replies), len(commands))
        i = 0
        for command, answer in zip(commands, replies):
            if command[0].upper() == b"FLUSHALL":
                self.assertEqual(answer, Error(b"NOPERM denied FLUSHALL"))
            else:
                self.assertEqual(answer, b"r%d" % i)
                i += 1
        self.assertEqual(len(out.finished), len(allowed))

    def test_refusal_waits_for_earlier_replies(self):
        """A refused command's error comes after the replies of the commands before it."""
        relay, out = make(deny=("FLUSHALL",))
        logged_in(relay, out)
        relay.data_received(cmd(b"GET", b"a") + cmd(b"FLUSHALL") + cmd(b"GET", b"b"))
        self.assertEqual(out.client, b"")
        reply(relay, b"1")
        self.assertEqual(out.replies(), [b"1", Error(b"NOPERM denied FLUSHALL")])
        reply(relay, b"2")
        self.assertEqual(out.replies()[-1], b"2")

    def test_held_decision_keeps_order(self):
        """While a decision is held (a review), later commands wait; nothing after it is forwarded first."""
        relay, out = make(hold=True)
        logged_in(relay, out)
        relay.data_received(cmd(b"SET", b"a", b"1") + cmd(b"GET", b"a"))
        self.assertEqual(len(out.decisions), 1)
        self.assertEqual(out.target, b"")
        out.answer(relay.deciding)
        self.assertEqual(len(out.decisions), 2)
        out.answer(relay.deciding)
        self.assertEqual(out.sent(), [(b"SET", b"a", b"1"), (b"GET", b"a")])

    def test_queue_bound_pauses_reading(self):
        """Commands waiting on a held decision past the bound stop the client being read; draining resumes it."""
        relay, out = make(hold=True)
        logged_in(relay, out)
        relay.data_received(cmd(b"GET", b"a"))
        for _ in range(3):
            relay.data_received(cmd(b"SET", b"k", b"v" * 400_000))
        self.assertEqual(out.reading_calls[-1], False)
        while relay.deciding is not None:
            out.answer(relay.deciding)
        self.assertEqual(out.reading_calls[-1], True)

    def test_quit(self):
        """QUIT after a forwarded command: +OK once its reply is sent, then the connection closes; QUIT is not forwarded."""
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"GET", b"a") + cmd(b"QUIT") + cmd(b"GET", b"b"))
        self.assertFalse(out.closed)
        reply(relay, b"v")
        self.assertEqual(out.replies(), [b"v", OK])
        self.assertTrue(out.closed)
        self.assertEqual(out.sent(), [(b"GET", b"a")])

    def test_protocol_error_after_commands(self):
        """A protocol error: the commands before it are answered, then the error, then the connection closes."""
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"GET", b"a") + b"*1\r\n$x\r\n")
        reply(relay, b"v")
        replies = out.replies()
        self.assertEqual(replies[0], b"v")
        self.assertTrue(replies[1].message.startswith(b"ERR Protocol error"))
        self.assertTrue(out.closed)

    def test_reply_without_command(self):
        """A reply nobody waits for: the gateway has lost track, and closes (fail closed)."""
        relay, out = make()
        logged_in(relay, out)
        reply(relay, b"unexpected")
        self.assertIn(b"no command waiting", out.client)
        self.assertTrue(out.closed)

    def test_nothing_after_losing_track(self):
        """
        Once the gateway has lost track mid-batch, the rest of the batch is
        not relayed: the error is the last thing the client reads (mypy
        --strict found the check that was meant to stop it never could).
        """
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"GET", b"k"))
        reply(relay, b"v", b"unexpected", b"more", Push((b"message", b"ch", b"x")))
        replies = out.replies()
        self.assertEqual(len(replies), 2, replies)
        self.assertEqual(replies[0], b"v")
        self.assertIn(b"no command waiting", replies[1].message)
        self.assertTrue(out.closed)

    def test_hidden_arguments_error_code_only(self):
        """
        A command with an argument the trail does not show (a password, a
        long value): its error's text, which may quote it, is not in the
        outcome, only its code.
        """
        relay, out = make(hold=True)
        logged_in(relay, out)
        relay.data_received(cmd(b"ACL", b"SETUSER", b"bob", b"#abc") + cmd(b"GET", b"k"))
        relay.decided(Verdict(True, "ACL|SETUSER", "ACL#1", hidden=True))
        relay.decided(Verdict(True, "GET", "GET#2"))
        reply(relay, Error(b"ERR Error in ACL SETUSER modifier '#abc': bad"), Error(b"WRONGTYPE Operation"))
        (_, first), (_, second) = out.finished
        self.assertEqual((first.code, first.error),
                         ("ERR", "ERR (text not recorded: the command has an argument the trail does not show)"))
        self.assertEqual((second.code, second.error), ("WRONGTYPE", "WRONGTYPE Operation"))
        self.assertIn(b"#abc", out.client)  # the client reads the error as it came

    def test_nothing_after_quit(self):
        """QUIT's +OK is the last reply: what the target sends after it, in the same batch, is not relayed."""
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"GET", b"k") + cmd(b"QUIT"))
        reply(relay, b"v", (b"message", b"ch", b"x"))
        self.assertEqual(out.replies(), [b"v", OK])
        self.assertTrue(out.closed)

    def test_client_leaves(self):
        """The client leaves: forwarded commands' outcomes are failed (unknown), a decision in flight is not sent."""
        relay, out = make(hold=True)
        logged_in(relay, out)
        relay.data_received(cmd(b"BLPOP", b"q", b"0") + cmd(b"GET", b"x"))
        out.answer(relay.deciding)
        relay.connection_lost()
        self.assertEqual(out.finished[0][0], "BLPOP#1")
        self.assertEqual(out.finished[0][1].status, Status.failed)
        self.assertIn("client left", out.finished[0][1].error)
        out.answer(relay.deciding)
        self.assertEqual(out.finished[1][0], "GET#2")
        self.assertIn("not sent", out.finished[1][1].error)
        self.assertEqual(out.sent(), [(b"BLPOP", b"q", b"0")])

    def test_target_leaves(self):
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"GET", b"x"))
        relay.target_lost("connection reset")
        self.assertIn(b"target closed the connection", out.client)
        self.assertEqual(out.finished[0][1].status, Status.failed)
        self.assertTrue(out.closed)


class TransactionTests(SynchronousTestCase):
    def test_refused_command_aborts_exec(self):
        """
        A command refused inside MULTI: EXEC is not forwarded, DISCARD is,
        the client gets EXECABORT; the queued commands' outcomes are failed
        once the target confirms the DISCARD.
        """
        relay, out = make(deny=("FLUSHALL",))
        logged_in(relay, out)
        relay.data_received(cmd(b"MULTI") + cmd(b"SET", b"k", b"v") + cmd(b"FLUSHALL") + cmd(b"EXEC") + cmd(b"GET", b"k"))
        self.assertEqual(out.sent(), [(b"MULTI",), (b"SET", b"k", b"v"), (b"DISCARD",), (b"GET", b"k")])
        reply(relay, OK, QUEUED, OK, Null.BULK)
        replies = out.replies()
        self.assertEqual(replies[:3], [OK, QUEUED, Error(b"NOPERM denied FLUSHALL")])
        self.assertEqual(replies[3].code, b"EXECABORT")
        self.assertEqual(replies[4], Null.BULK)
        outcomes = dict(out.finished)
        self.assertEqual(outcomes["EXEC#4"].code, "EXECABORT")
        self.assertEqual(outcomes["SET#2"].status, Status.failed)
        self.assertIn("not run", outcomes["SET#2"].error)

    def test_exec_results(self):
        """EXEC's results are the queued commands' outcomes."""
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"MULTI") + cmd(b"SET", b"k", b"v") + cmd(b"INCR", b"k") + cmd(b"EXEC"))
        reply(relay, OK, QUEUED, QUEUED, (OK, Error(b"ERR not an integer")))
        outcomes = dict(out.finished)
        self.assertEqual(outcomes["SET#2"].status, Status.succeeded)
        self.assertEqual(outcomes["INCR#3"].status, Status.failed)
        self.assertEqual(outcomes["INCR#3"].code, "ERR")
        self.assertEqual(outcomes["EXEC#4"].status, Status.succeeded)

    def test_watch_aborts(self):
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"MULTI") + cmd(b"SET", b"k", b"v") + cmd(b"EXEC"))
        reply(relay, OK, QUEUED, Null.ARRAY)
        outcomes = dict(out.finished)
        self.assertIn("watched key", outcomes["SET#2"].error)
        self.assertEqual(outcomes["EXEC#3"].status, Status.failed)

    def test_refusals_inside_multi(self):
        """SUBSCRIBE and HELLO inside MULTI are refused by the gateway, and abort the transaction."""
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"MULTI") + cmd(b"SUBSCRIBE", b"c") + cmd(b"HELLO", b"3") + cmd(b"EXEC"))
        self.assertEqual(out.sent(), [(b"MULTI",), (b"DISCARD",)])
        reply(relay, OK, OK)
        self.assertEqual([r.code if isinstance(r, Error) else r for r in out.replies()],
                         [OK, b"NOPERM", b"NOPERM", b"EXECABORT"])

    def test_gateway_refusals(self):
        """MONITOR, SYNC, CLIENT REPLY OFF and AUTH after login are the gateway's refusals."""
        relay, out = make()
        logged_in(relay, out)
        for args in ((b"MONITOR",), (b"SYNC",), (b"PSYNC", b"?", b"-1"), (b"CLIENT", b"REPLY", b"OFF"),
                     (b"AUTH", b"other", b"tok"), (b"HELLO", b"3", b"AUTH", b"other", b"tok")):
            canonical = "CLIENT|REPLY" if args[0] == b"CLIENT" else args[0].decode()
            self.assertIsNotNone(relay.refusal(canonical, args), args)
        self.assertIsNone(relay.refusal("CLIENT|REPLY", (b"CLIENT", b"REPLY", b"ON")))
        self.assertIsNone(relay.refusal("HELLO", (b"HELLO", b"3")))

    def test_reset_logs_in_again(self):
        """RESET is forwarded, then the gateway's own AUTH; its reply is not the client's."""
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"RESET") + cmd(b"GET", b"k"))
        self.assertEqual(out.sent(), [(b"RESET",), (b"AUTH", b"pw"), (b"GET", b"k")])
        reply(relay, SimpleString(b"RESET"), OK, b"v")
        self.assertEqual(out.replies(), [SimpleString(b"RESET"), b"v"])

    def test_relogin_refused(self):
        """The target refuses the gateway's login after RESET: the connection is closed."""
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"RESET"))
        reply(relay, SimpleString(b"RESET"), Error(b"WRONGPASS no"))
        self.assertIn(b"relogin failed", out.client)
        self.assertTrue(out.closed)


class PubSubTests(SynchronousTestCase):
    def test_resp2(self):
        """
        RESP2: one confirmation per channel; messages are relayed as they
        come; PING's pong array is PING's reply; UNSUBSCRIBE with no channel
        gets one confirmation per subscription.
        """
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"SUBSCRIBE", b"a", b"b") + cmd(b"PSUBSCRIBE", b"p*"))
        reply(relay, (b"subscribe", b"a", 1), (b"message", b"a", b"early"), (b"subscribe", b"b", 2),
              (b"psubscribe", b"p*", 3), (b"pmessage", b"p*", b"px", b"m"))
        relay.data_received(cmd(b"PING") + cmd(b"UNSUBSCRIBE") + cmd(b"GET", b"k"))
        reply(relay, (b"pong", b""), (b"unsubscribe", b"a", 2), (b"message", b"b", b"late"),
              (b"unsubscribe", b"b", 1), (b"message", b"x", b"y"))
        self.assertEqual(relay.replies.entries[0].canonical, "GET")
        # Still subscribed to a pattern: a message-shaped array is a message, not GET's reply.
        reply(relay, Null.BULK)
        self.assertFalse(relay.replies.entries)
        outcomes = dict(out.finished)
        self.assertEqual(set(outcomes), {"SUBSCRIBE#1", "PSUBSCRIBE#2", "PING#3", "UNSUBSCRIBE#4", "GET#5"})
        self.assertEqual(len(out.replies()), 11)

    def test_resp2_not_subscribed(self):
        """Not subscribed, an array that looks like a message is a reply (LRANGE of such a list)."""
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"LRANGE", b"l", b"0", b"-1"))
        reply(relay, (b"message", b"a", b"b"))
        self.assertEqual(dict(out.finished)["LRANGE#1"].status, Status.succeeded)

    def test_unsubscribe_none(self):
        """UNSUBSCRIBE with no subscription: one confirmation with a null channel."""
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"UNSUBSCRIBE") + cmd(b"PING"))
        reply(relay, (b"unsubscribe", Null.BULK, 0), SimpleString(b"PONG"))
        self.assertEqual(len(out.finished), 2)

    def test_confirmation_misshapen(self):
        """
        A reply to SUBSCRIBE that is not shaped as a confirmation (an MGET
        reply out of step, a value reading "subscribe"): the gateway has
        lost track, and closes rather than pass it unmasked.
        """
        for value in [(b"subscribe", b"4111 1111 1111 1111"), (b"subscribe", b"other", 1),
                      (b"subscribe", b"a", b"1")]:
            relay, out = make()
            logged_in(relay, out)
            relay.data_received(cmd(b"SUBSCRIBE", b"a"))
            reply(relay, value)
            self.assertTrue(out.closed, value)
            self.assertNotIn(b"4111", out.client)
            self.assertEqual(dict(out.finished)["SUBSCRIBE#1"].status, Status.failed)

    def test_client_reply(self):
        """Only CLIENT REPLY ON is relayed; OFF, SKIP, and SKIP\\0 are refused."""
        relay, out = make()
        logged_in(relay, out)
        for arg in (b"ON", b"on\x00x", b"OFF", b"SKIP\x00", b"skip"):
            self.assertEqual(relay.refusal("CLIENT|REPLY", [b"CLIENT", b"REPLY", arg]) is None,
                             arg.lower().startswith(b"on"), arg)

    def test_hello_options_after_login(self):
        """After login HELLO takes only the protocol version (AUTH\\0 and SETNAME included)."""
        relay, out = make()
        logged_in(relay, out)
        self.assertIsNone(relay.refusal("HELLO", [b"HELLO", b"3"]))
        for args in ([b"HELLO", b"2", b"AUTH\x00", b"u", b"p"], [b"HELLO", b"3", b"SETNAME", b"n"]):
            self.assertIsNotNone(relay.refusal("HELLO", args), args)

    def test_resp3_pushes(self):
        """RESP3: confirmations are pushes; other pushes are out of band, between any replies."""
        relay, out = make()
        logged_in(relay, out, protocol=3)
        relay.data_received(cmd(b"SUBSCRIBE", b"a") + cmd(b"GET", b"k"))
        reply(relay, Push((b"subscribe", b"a", 1)), Push((b"message", b"a", b"m1")), b"v",
              Push((b"invalidate", (b"k",))))
        self.assertEqual(len(out.replies()), 4)
        self.assertEqual(set(dict(out.finished)), {"SUBSCRIBE#1", "GET#2"})

    def test_hello_switches(self):
        """HELLO 3 after login: its map reply switches the tracking to RESP3."""
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"HELLO", b"3"))
        from hoopgw_redis.resp import Map

        reply(relay, Map([(b"proto", 3)]))
        self.assertEqual(relay.replies.resp, 3)


class SelectTests(SynchronousTestCase):
    def test_db_predicted_and_corrected(self):
        relay, out = make()
        logged_in(relay, out)
        relay.data_received(cmd(b"SELECT", b"3"))
        self.assertEqual(relay.db, 3)
        reply(relay, OK)
        relay.data_received(cmd(b"SELECT", b"99"))
        self.assertEqual(relay.db, 99)
        reply(relay, Error(b"ERR DB index is out of range"))
        self.assertEqual(relay.db, 3)


def test_encode_sanity() -> None:  # (keeps the import of encode used)
    assert encode(b"x") == b"$1\r\nx\r\n"


class CatalogTests(SynchronousTestCase):
    def test_names_not_asked(self):
        """Names the target never runs as commands (a|b, empty, very long) are answered without asking it."""
        from twisted.internet.task import Clock

        from hoopgw_redis.actions import NOT_A_COMMAND
        from hoopgw_redis.frontend import Catalog

        asked = []
        catalog = Catalog(lambda: asked.append(1), Clock())
        for name in (b"config|set", b"", b"x" * 200):
            self.assertIs(self.successResultOf(catalog.lookup(name)), NOT_A_COMMAND)
        self.assertEqual(asked, [])
