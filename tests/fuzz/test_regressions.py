"""
Product bugs the fuzzers found (tests/fuzz/), each as its smallest
reproducer.

Each was red when found and guards its fix now.  A new finding goes here
first, marked C{todo} (an expected failure) until the product code is
fixed.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.postgres.sql import classify, redact_secrets, statement_info
from hoopgw.protocols.http.wire import ParseError, Parser
from hoopgw.protocols.postgres import lexical



class RedactionTests(SynchronousTestCase):
    """
    hoopgw.protocols.postgres.sql.redact_secrets, and the statement texts of classify()
    and statement_info(), which the audit trail records: a password must
    never reach them (found by fuzz_sql.py).
    """

    def assertRedacted(self, text: str, secret: str) -> None:
        for recorded in (redact_secrets(text), *(i.text for i in classify(text)), statement_info(text).text):
            self.assertNotIn(secret, recorded)

    def test_non_ascii_before_the_password(self):
        """
        pglast.parser.scan's token offsets count characters, but
        redact_secrets slices the UTF-8 bytes with them: every non-ASCII
        character before the password shifts the redaction one byte to the
        left, and enough of them leave the password whole.
        """
        self.assertRedacted("ALTER ROLE \"ééééééééééé\" PASSWORD 'hunter2'", "hunter2")


    def test_comment_between_password_and_string(self):
        """A comment between PASSWORD and the string: the token before the string is the comment."""
        self.assertRedacted("ALTER ROLE alice PASSWORD /* new */ 'hunter2'", "hunter2")
        self.assertRedacted("ALTER ROLE alice PASSWORD -- new\n'hunter2'", "hunter2")


    def test_quoted_password_option(self):
        """OPTIONS ("password" '...') is the same option as OPTIONS (password '...')."""
        self.assertRedacted("CREATE USER MAPPING FOR alice SERVER s OPTIONS (\"password\" 'hunter2')", "hunter2")


    def test_statement_info_of_several_statements(self):
        """
        statement_info() of a Parse holding several statements merges their
        facts under the whole, unredacted text; the front end records that
        text as the input of the Bind/Execute pipelined behind the Parse.
        """
        self.assertNotIn("hunter2", statement_info("ALTER ROLE alice PASSWORD 'hunter2'; SELECT 1").text)



class SensitiveTests(SynchronousTestCase):
    def test_non_ascii_before_a_backslash_string(self):
        """
        hoopgw.protocols.postgres.lexical.sensitive slices UTF-8 bytes with
        pglast's character offsets too: after a non-ASCII character it reads
        the wrong bytes as the string, and a backslash in a standard string
        (read differently with standard_conforming_strings off) goes unseen
        (found by fuzz_sql.py's check against its own token reading).
        """
        self.assertTrue(lexical.sensitive("SELECT 'a\\b'"))
        self.assertTrue(lexical.sensitive("SELECT 'é', 'a\\b'"))



class HeadLimitTests(SynchronousTestCase):
    def test_head_of_exactly_max_head_bytes_trickled_in(self):
        """
        hoopgw.protocols.http.wire.Parser: a head of exactly max_head bytes
        is accepted when it arrives whole, but refused with 431 when its
        final CRLF CRLF arrives in pieces (the partial-head check counts up
        to 3 bytes of the terminator): the outcome depends on how TCP cut
        the stream (found by fuzz_http_wire.py's differential check).
        """
        head = b"GET / HTTP/1.1\r\nHost: gw\r\nX-Pad: "
        data = head + b"a" * (256 - len(head)) + b"\r\n\r\n"
        whole = Parser(max_head=256)
        self.assertEqual(len(whole.feed(data)), 2)  # the head and END
        trickled = Parser(max_head=256)
        try:
            for i in range(len(data)):
                trickled.feed(data[i : i + 1])
        except ParseError as e:
            self.fail(f"refused when trickled in: {e.status} {e.reason}")

