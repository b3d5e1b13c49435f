"""
The session's transcript (hoopgw_redis.transcript): the recorder's file is
asciicast v2 as hoopgw reads it, its digest the file's; the lines are the
commands as the trail stores them and a summary of each reply, never a
value, a token or a password; and through the real redis-cli and redis-py,
session.end names the recording and its SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from hoopgw.frontend import AsciicastRecorder
from hoopgw.recording.asciicast import read_asciicast
from hoopgw.replay import recordings

from hoopgw_redis.resp import (
    Attributed,
    BigNumber,
    Double,
    Error,
    Map,
    Null,
    Push,
    Set,
    SimpleString,
    Verbatim,
    encode,
    error_reply,
)
from hoopgw_redis.transcript import MAX_ERROR_TEXT, Transcript, summary

from tests._gateway import RedisGateway, require_cli
from tests._redis import start_redis
from tests.test_frontend import require_redis_py
from tests.test_masking import CARD, CARD_DIGITS, EMAIL, MASKS, session_masks
from tests.test_relay import cmd, logged_in, make, reply

RECORDING_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND


class Handle:
    """What the transcript reads of an action's handle: its number (and IActionHandle)."""

    def __init__(self, number: int) -> None:
        self.number = number


def _handle(number: int) -> Any:
    from zope.interface import directlyProvides

    from hoopgw.frontend import IActionHandle

    handle = Handle(number)
    directlyProvides(handle, IActionHandle)
    return handle


class RecorderTests(SynchronousTestCase):
    def test_asciicast_as_hoopgw_reads_it(self):
        """
        The transcript's lines go to hoopgw's asciicast recorder (its own
        tests cover buffering, failures and the digest), one event a line,
        as hoopgw's reader and C{hoopgw replay --play} read them.
        """
        path = Path(self.mktemp())
        clock = Clock()
        clock.advance(1_700_000_000)
        fd = os.open(path, RECORDING_FLAGS, 0o600)
        recorder = AsciicastRecorder(str(path), fd=fd, clock=clock, width=80, height=24, title="alice on cache")
        transcript = Transcript(recorder, lambda: None)
        transcript.header("hoopgw: alice on cache")
        clock.advance(1.5)
        transcript.local("login", b"+OK\r\n")
        sha = self.successResultOf(recorder.close())
        cast = read_asciicast(path)
        self.assertEqual((cast.header["version"], cast.header["title"], cast.header["timestamp"]),
                         (2, "alice on cache", 1_700_000_000))
        self.assertEqual([(e.time, e.kind, e.data) for e in cast.events],
                         [(0.0, "o", "hoopgw: alice on cache\r\n"), (1.5, "o", "[login] < simple string, 5 bytes\r\n")])
        self.assertEqual(sha, hashlib.sha256(path.read_bytes()).hexdigest())
        self.assertEqual(oct(path.stat().st_mode & 0o777), "0o600")


class SummaryTests(SynchronousTestCase):
    def test_every_type(self):
        cases = [
            (b"secret", "bulk string"),
            (42, "integer"),
            (True, "boolean"),
            (SimpleString(b"OK"), "simple string"),
            (Double(1.5), "double"),
            (BigNumber(10**30), "big number"),
            (Verbatim(b"txt", b"hi"), "verbatim string"),
            (Null.BULK, "null bulk string"),
            (Null.ARRAY, "null array"),
            (Null.NULL, "null"),
            (Error(b"ERR x"), "error"),
            (Error(b"ERR x", bulk=True), "bulk error"),
            ((b"a", b"b"), "array of 2"),
            (Map(((b"k", b"v"),)), "map of 1"),
            (Set((b"a",)), "set of 1"),
            (Push((b"message", b"ch", b"payload")), "push message, 3 items"),
            (Push((b"4111111111111111", b"x")), "push, 2 items"),  # an unknown kind is not named
            (Attributed(((b"ttl", 3),), b"v"), "with attributes, bulk string"),
        ]
        for value, expected in cases:
            self.assertEqual(summary(value, len(encode(value))), f"{expected}, {len(encode(value))} bytes")
            self.assertNotIn("secret", summary(value, 1))


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def output(self, data: bytes) -> None:
        self.lines.append(data.decode("utf-8").removesuffix("\r\n"))


def transcript(masks: Any = None) -> tuple[Transcript, list[str]]:
    lines = Lines()
    return Transcript(lines, lambda: masks), lines.lines  # type: ignore[arg-type]


class TranscriptTests(SynchronousTestCase):
    def test_commands_as_the_trail_stores_them(self):
        """Every mask of the connection, whoever the client is (an except_groups identity too)."""
        from tests.test_masking import AUDITOR

        for identity in (None, AUDITOR):
            masks = session_masks() if identity is None else session_masks(identity=identity)
            record, lines = transcript(masks)
            record.command(_handle(1), f'SET k "card {CARD} {EMAIL}"')
            record.command(_handle(2), "FLUSHALL", refused=True)
            self.assertEqual(lines, ['[1] > SET k "card **** **** **** 1111 *****@******e.com"',
                                     "[2] > FLUSHALL (refused)"])

    def test_replies_summed_up(self):
        record, lines = transcript(session_masks())
        record.reply(_handle(1), b"**** 1111", 15, {"pii": 1})
        record.reply(_handle(2), Error(b"ERR no card " + CARD.encode()), 40)
        record.reply(None, Push((b"message", b"ch", b"x")), 30)
        record.local("login", b"+OK\r\n")
        record.local(None, error_reply("Protocol error: invalid bulk length 'eyJhbGciOi'"))
        self.assertEqual(lines, [
            "[1] < bulk string, 15 bytes, masked: pii=1",
            "[2] < error, 40 bytes: ERR no card **** **** **** 1111",
            "[-] < push message, 3 items, 30 bytes",
            "[login] < simple string, 5 bytes",
            "[-] < error, 55 bytes: ERR (text not recorded)",  # not a command's: may quote the client's bytes
        ])

    def test_no_error_text_for_a_command_with_hidden_arguments(self):
        """
        redis-server quotes arguments in some errors (ACL SETUSER's
        modifier): a command with a password or a summarised argument
        keeps its errors' code only.
        """
        record, lines = transcript()
        record.command(_handle(3), "ACL SETUSER bob <redacted> badrule")
        record.reply(_handle(3), Error(b"ERR Error in ACL SETUSER modifier '#abc': bad hash"), 60, hidden=True)
        record.command(_handle(4), "GET k")
        record.reply(_handle(4), Error(b"WRONGTYPE Operation against a key"), 40)
        self.assertEqual(lines[1], "[3] < error, 60 bytes: ERR (text not recorded)")
        self.assertEqual(lines[3], "[4] < error, 40 bytes: WRONGTYPE Operation against a key")

    def test_long_error_text_not_kept(self):
        """Too long to mask whole: a part of a value cut at the end would not be recognised."""
        record, lines = transcript(session_masks())
        message = b"ERR " + b"x" * MAX_ERROR_TEXT + CARD.encode()
        record.reply(_handle(1), Error(message), len(message) + 3)
        self.assertEqual(lines, [f"[1] < error, {len(message) + 3} bytes: ERR (text not recorded)"])

    def test_terminal_safe(self):
        """A line played on a terminal cannot rewrite it: escapes and controls are quoted."""
        record, lines = transcript()
        record.reply(_handle(1), Error(b"ERR \x1b[2J\x1b]0;owned\x07 \xe2\x80\xae"), 40)
        self.assertEqual(lines, ["[1] < error, 40 bytes: ERR \\x1b[2J\\x1b]0;owned\\x07 \\u202e"])


class RelayTests(SynchronousTestCase):
    """The relay gives the transcript each reply as the client gets it, in order, with its owner."""

    def test_replies_and_local_replies(self):
        relay, out = make(deny=("FLUSHALL",))
        lines = Lines()
        relay.transcript = Transcript(lines, lambda: None)  # type: ignore[arg-type]
        logged_in(relay, out)
        relay.data_received(cmd(b"GET", b"k") + cmd(b"FLUSHALL") + cmd(b"SUBSCRIBE", b"ch"))
        reply(relay, b"value")
        reply(relay, (b"subscribe", b"ch", 1))
        reply(relay, (b"message", b"ch", b"payload"))
        relay.data_received(cmd(b"QUIT"))
        # (The test's tokens are strings: they stand as the owners' labels.)
        self.assertEqual(lines.lines, [
            "[login] < simple string, 5 bytes",
            "[GET#1] < bulk string, 11 bytes",
            "[FLUSHALL#2] < error, 25 bytes: NOPERM denied FLUSHALL",
            "[SUBSCRIBE#3] < array of 3, 31 bytes",
            "[-] < array of 3, 38 bytes",
            "[-] > QUIT",
            "[-] < simple string, 5 bytes",
        ])


# A policy where alice may run anything but FLUSHALL, and the masks of tests.test_masking.
POLICY = """
[[rule]]
name = "no-wipe"
effect = "deny"
connections = ["cache"]
actions = ["redis.flushall"]
message = "wiping is not allowed"
""" + MASKS

PASSWORD = "s3cret-Pa55word"


class RealTranscriptTests(TestCase):
    """Through the real redis-cli and redis-py, with a real redis-server."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = start_redis(self)
        self.gateway = RedisGateway(self, self.server, policy=POLICY, masking=True)
        yield self.gateway.listen()
        with self.server.connect() as direct:
            direct.call(b"SET", b"card", f"paid with {CARD}".encode())

    def recording(self) -> tuple[Path, bytes, dict[str, Any]]:
        end = self.gateway.session_end()
        paths = recordings([end])
        self.assertEqual(len(paths), 1, end)
        data = paths[0].read_bytes()
        self.assertEqual(end["end"]["recording_sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(paths[0].parent, self.gateway.base / "recordings")
        self.assertTrue(paths[0].name.startswith(end["session"] + "-transcript"))
        return paths[0], data, end

    def assertNothingSecret(self, data: bytes, *secrets: str) -> None:
        for secret in (CARD, CARD_DIGITS, EMAIL, PASSWORD, *secrets):
            self.assertNotIn(secret.encode(), data)
        for secret in secrets:  # a token: none of its parts either
            for part in secret.split("."):
                self.assertNotIn(part.encode(), data)

    @inlineCallbacks
    def test_redis_cli(self):
        """
        A redis-cli session's commands (masked as the trail has them), a
        summary of each reply, the refusals; no value, token or password:
        not the client's own token, not a second AUTH's or HELLO's, not a
        password given to CONFIG SET or ACL SETUSER.
        """
        require_cli()
        # An identity in except_groups: it reads the values, the recording never holds them.
        token = self.gateway.token("carol", ("dev", "pii-readers"))
        other = self.gateway.token("mallory")
        script = "\n".join([
            f'SET k "card {CARD}"',
            "GET card",
            f"ECHO {EMAIL}",
            "FLUSHALL",
            f"AUTH cache {other}",
            f"HELLO 3 AUTH cache {other}",
            f"CONFIG SET requirepass {PASSWORD}",
            f"ACL SETUSER bob on >{PASSWORD} #{'0' * 63}",
            # Read by the server as a SETNAME named "auth", then AUTH: the password is the last.
            f"HELLO 3 SETNAME auth AUTH cache {PASSWORD}1",
            # Rules the server refuses, quoting them in its error.
            f'ACL SETUSER bob "(~k >{PASSWORD}2)"',
            f'ACL SETUSER bob "on >{PASSWORD}3"',
            # A script returning an argument as an error; an unknown command quoting its arguments.
            f'EVAL "return redis.error_reply(ARGV[1])" 0 {other}',
            f"AUTHX cache {other}",
            "GET nothing",
        ]) + "\n"
        result = yield deferToThread(self.gateway.cli, token=token, stdin=script)
        self.assertIn(f"paid with {CARD}", result.stdout)  # this client may read it
        self.assertIn("NOPERM hoopgw: rule 'no-wipe'", result.stdout)
        # The client's leaving ends the session (the gateway ending it would add its own line).
        yield deferToThread(_wait, lambda: self.gateway.records("session.end"))
        path, data, end = self.recording()
        self.assertNothingSecret(data, token, other)
        lines = read_asciicast(path).output().splitlines()
        numbered = [re.sub(r"^\[\d+\]", "[n]", line) for line in lines[1:]]
        # (redis-cli asks for COMMAND DOCS first, for its hints.)
        self.assertEqual(numbered[1:3], ["[n] > COMMAND DOCS", numbered[2]])
        del numbered[1:3]
        self.assertTrue(lines[0].startswith(f"hoopgw: carol on cache (127.0.0.1:{self.server.port}), session "))
        self.assertEqual(numbered[:9], [
            "[login] < simple string, 5 bytes",
            '[n] > SET k "card **** **** **** 1111"',
            "[n] < simple string, 5 bytes",
            "[n] > GET card",
            "[n] < bulk string, 36 bytes",  # unmasked for this client: no count
            "[n] > ECHO *****@******e.com",
            "[n] < bulk string, 24 bytes",
            "[n] > FLUSHALL (refused)",
            "[n] < error, 87 bytes: NOPERM hoopgw: rule 'no-wipe': wiping is not allowed; nothing was sent to the "
            "server",
        ])
        self.assertIn("[n] > AUTH cache <redacted> (refused)", numbered)
        self.assertIn("[n] > HELLO 3 AUTH cache <redacted> (refused)", numbered)
        self.assertIn("[n] > CONFIG SET requirepass <redacted>", numbered)
        self.assertIn("[n] > ACL SETUSER bob on <redacted> <redacted>", numbered)
        self.assertIn("[n] > HELLO 3 SETNAME auth AUTH <redacted> <redacted> (refused)", numbered)
        self.assertIn("[n] > ACL SETUSER bob <redacted>", numbered)
        # Every error but the gateway's refusal came for a command with an argument not shown: code only.
        errors = [line for line in numbered if " < error" in line and "NOPERM hoopgw: rule" not in line]
        self.assertEqual(len(errors), 8, numbered)
        self.assertTrue(all(line.endswith(": ERR (text not recorded)") for line in errors), errors)
        # The trail has none of them either (action.start's input, action.end's error).
        trail = (self.gateway.base / "audit" / "records.jsonl").read_bytes()
        self.assertNothingSecret(trail, token, other)
        self.assertEqual(numbered[-2:], ["[n] > GET nothing", "[n] < null bulk string, 5 bytes"])
        # Its numbers are the actions' in the trail.
        starts = {r["action"]["id"].split("/")[1]: r["action"]["input"] for r in self.gateway.records("action.start")}
        for line in lines[1:]:
            match = re.match(r"^\[(\d+)\] > (.*?)( \(refused\))?$", line)
            if match:
                self.assertEqual(starts[match.group(1)], match.group(2))

    @inlineCallbacks
    def test_redis_py_masked_replies(self):
        """A masked reply's count is in its line; a pipeline's replies follow their commands' numbers."""
        require_redis_py()
        import redis

        token = self.gateway.token()

        def run() -> Any:
            client = redis.Redis(host="127.0.0.1", port=self.gateway.port, username="cache", password=token,
                                 protocol=3)
            try:
                pipe = client.pipeline(transaction=False)
                pipe.get("card").set("k2", f"to {EMAIL}").get("k2")
                return pipe.execute()
            finally:
                client.close()

        results = yield deferToThread(run)
        self.assertEqual(results, [b"paid with **** **** **** 1111", True, b"to *****@******e.com"])
        yield deferToThread(_wait, lambda: self.gateway.records("session.end"))
        path, data, _ = self.recording()
        self.assertNothingSecret(data, token)
        lines = read_asciicast(path).output().splitlines()
        replies = [line for line in lines if " < " in line and "masked" in line]
        self.assertEqual(len(replies), 2, lines)
        self.assertTrue(all(line.endswith("masked: pii=1") for line in replies))

    @inlineCallbacks
    def test_no_recordings_folder(self):
        """A gateway that keeps no recordings: none, and session.end names none."""
        require_cli()
        gateway = RedisGateway(self, self.server, policy=POLICY, recordings=False)
        yield gateway.listen()
        yield deferToThread(gateway.cli, "PING", token=gateway.token())
        yield gateway.sessions.close_all("test over", grace=2)
        end = gateway.session_end()["end"]
        self.assertNotIn("recording", end)
        self.assertNotIn("recording_sha256", end)

    @inlineCallbacks
    def test_recording_cannot_be_opened(self):
        """No transcript can be opened: the login is refused, the session ends failed, nothing is relayed."""
        require_redis_py()
        import redis

        from hoopgw.sessions import Session

        def full(*args: Any, **kwargs: Any) -> Any:
            raise OSError(28, "No space left on device")

        self.patch(Session, "open_recording", full)
        token = self.gateway.token()

        def run() -> Any:
            client = redis.Redis(host="127.0.0.1", port=self.gateway.port, username="cache", password=token)
            try:
                client.get("card")
            except redis.exceptions.RedisError as e:
                return e
            finally:
                client.close()
            return None

        error = yield deferToThread(run)
        self.assertIn("the session cannot be recorded", str(error))
        ends = yield deferToThread(lambda: _wait(lambda: self.gateway.records("session.end")))
        self.assertEqual(ends[0]["end"]["status"], "failed")
        self.assertEqual(self.gateway.records("action.start"), [])
        from hoopgw_redis.frontend import RecordingUnavailable

        self.assertEqual(len(self.flushLoggedErrors(RecordingUnavailable)), 1)

    @inlineCallbacks
    def test_recording_fails_session_ends(self):
        """The transcript cannot be written (disk full): the session ends, session.end says why."""
        require_redis_py()
        import redis

        token = self.gateway.token()

        def run() -> Any:
            client = redis.Redis(host="127.0.0.1", port=self.gateway.port, username="cache", password=token)
            try:
                client.ping()
                (session,) = self.gateway.sessions._active.values()
                recorder = session.recorder
                os.close(recorder._fd)
                recorder._fd = os.open("/dev/full", os.O_WRONLY)
                recorder.flush_delay = 0
                try:
                    client.get("card")
                    client.get("card")
                except redis.exceptions.RedisError as e:
                    return e
                return None
            finally:
                client.close()

        error = yield deferToThread(run)
        self.assertIsNotNone(error)
        ends = yield deferToThread(lambda: _wait(lambda: self.gateway.records("session.end")))
        self.assertEqual(ends[0]["end"]["status"], "failed")
        self.assertIn("recording failed", ends[0]["end"]["error"])


def _wait(predicate: Any, timeout: float = 10.0) -> Any:
    from tests.test_frontend import wait_until

    return wait_until(predicate, timeout)
