"""
Tests for the encoding side of L{hoopgw_redis.resp}: L{encode},
L{encode_command}, L{error_reply}, and the public face of the module.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw_redis import resp
from hoopgw_redis.resp import (
    Attributed,
    BigNumber,
    Command,
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
    encode_command,
    error_reply,
)


class EncodeTests(SynchronousTestCase):
    def test_every_type(self) -> None:
        cases: list[tuple[Any, bytes]] = [
            (b"hello", b"$5\r\nhello\r\n"),
            (b"", b"$0\r\n\r\n"),
            (42, b":42\r\n"),
            (-(2**63), b":-9223372036854775808\r\n"),
            (True, b"#t\r\n"),
            (False, b"#f\r\n"),
            (Null.BULK, b"$-1\r\n"),
            (Null.ARRAY, b"*-1\r\n"),
            (Null.NULL, b"_\r\n"),
            (SimpleString(b"OK"), b"+OK\r\n"),
            (Error(b"ERR no"), b"-ERR no\r\n"),
            (Error(b"ERR\r\nno", bulk=True), b"!7\r\nERR\r\nno\r\n"),
            (Double(1.5), b",1.5\r\n"),
            (Double(1e300), b",1e+300\r\n"),
            (Double(math.inf), b",inf\r\n"),
            (Double(-math.inf), b",-inf\r\n"),
            (Double(math.nan), b",nan\r\n"),
            (BigNumber(2**100), b"(1267650600228229401496703205376\r\n"),
            (Verbatim(b"txt", b"Some string"), b"=15\r\ntxt:Some string\r\n"),
            ((), b"*0\r\n"),
            ((b"a", 1), b"*2\r\n$1\r\na\r\n:1\r\n"),
            (Map([(b"k", 1)]), b"%1\r\n$1\r\nk\r\n:1\r\n"),
            (Set([1]), b"~1\r\n:1\r\n"),
            (Push([b"message", b"ch", b"hi"]), b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"),
            (Attributed([(b"ttl", 3600)], 3), b"|1\r\n$3\r\nttl\r\n:3600\r\n:3\r\n"),
        ]
        for value, data in cases:
            self.assertEqual(encode(value), data, value)

    def test_bool_is_not_int(self) -> None:
        """A bool encodes as a RESP3 boolean, never as the integer it also is."""
        self.assertEqual(encode((True, 1)), b"*2\r\n#t\r\n:1\r\n")

    def test_unencodable(self) -> None:
        """Values no peer could read back are refused, not sent broken."""
        self.assertRaises(ValueError, encode, SimpleString(b"OK\r\n+INJECTED"))
        self.assertRaises(ValueError, encode, Error(b"ERR x\ny"))
        self.assertRaises(ValueError, encode, 2**63)
        self.assertRaises(ValueError, encode, Verbatim(b"text", b"x"))
        self.assertRaises(ValueError, encode, Push([]))
        self.assertRaises(ValueError, encode, Double(1.0, b"1\r\n:2"))
        self.assertRaises(TypeError, encode, "str")
        self.assertRaises(TypeError, encode, 1.5)
        self.assertRaises(TypeError, encode, None)
        self.assertRaises(TypeError, encode, [b"a list"])

    def test_command(self) -> None:
        self.assertEqual(encode_command(b"GET", b"k"), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        self.assertEqual(
            encode_command("AUTH", "ålice", 7, bytearray(b"x")),
            b"*4\r\n$4\r\nAUTH\r\n$6\r\n\xc3\xa5lice\r\n$1\r\n7\r\n$1\r\nx\r\n",
        )
        self.assertRaises(ValueError, encode_command)
        self.assertRaises(TypeError, encode_command, b"SET", True)
        self.assertRaises(TypeError, encode_command, b"SET", None)
        self.assertEqual(encode(Command((b"PING",), inline=True)), b"*1\r\n$4\r\nPING\r\n")


class ErrorReplyTests(SynchronousTestCase):
    def test_error_reply(self) -> None:
        self.assertEqual(error_reply("unknown command 'FOO'"), b"-ERR unknown command 'FOO'\r\n")
        self.assertEqual(error_reply(b"denied by rule no-flush", code="NOPERM"), b"-NOPERM denied by rule no-flush\r\n")

    def test_no_injection(self) -> None:
        """
        CR and LF in a message become spaces: whatever the text (a key name,
        a rule name, a server's message), it stays one error reply.
        """
        reply = error_reply("key 'a'\r\n+OK\r\n$1\r\nx\r\n\n\r")
        self.assertEqual(reply, b"-ERR key 'a'  +OK  $1  x    \r\n")
        [value] = ReplyParser().feed(reply)
        assert isinstance(value, Error)
        self.assertEqual(value.code, b"ERR")

    @given(st.text(), st.binary())
    def test_always_one_error(self, text: str, data: bytes) -> None:
        """Any message, text or bytes, encodes to exactly one error reply carrying it."""
        for message in (text, data):
            reply = error_reply(message, code="DENIED")
            [value] = ReplyParser().feed(reply)
            assert isinstance(value, Error)
            self.assertEqual(value.code, b"DENIED")

    def test_code_checked(self) -> None:
        """The code is the gateway's own: an upper-case word, or a programming error."""
        for code in ["", "err", "ERR X", "ERR\r\n", "-ERR"]:
            self.assertRaises(ValueError, error_reply, "x", code=code)

    def test_from_message(self) -> None:
        """Inside an array (an EXEC reply), an error is built the same way."""
        self.assertEqual(
            encode((1, Error.from_message("denied\nhere", code="NOPERM"))), b"*2\r\n:1\r\n-NOPERM denied here\r\n"
        )


class PublicFaceTests(SynchronousTestCase):
    def test_all(self) -> None:
        """Everything in __all__ exists, and nothing private is in it."""
        for name in resp.__all__:
            self.assertTrue(hasattr(resp, name), name)
            self.assertFalse(name.startswith("_"), name)
        self.assertEqual(len(resp.__all__), len(set(resp.__all__)))
