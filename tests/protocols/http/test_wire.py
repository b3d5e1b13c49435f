"""
The HTTP/1.1 framing parser (L{hoopgw.protocols.http.wire}): what it
accepts, the request-smuggling classes it refuses (each with a precise
status and message), and, with Hypothesis, that any chunking of the input
parses the same and that arbitrary bytes only ever raise its own error.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.http.wire import END, Head, ParseError, Parser


def parse_all(data: bytes, *, response: bool = False, pieces: list[int] | None = None, eof: bool = False) -> list[object]:
    """
    Every event of C{data} fed in C{pieces} (sizes), messages read one after
    another; consecutive body bytes merged, heads as comparable tuples.
    """
    parser = Parser(response=response)
    events: list[object] = []
    chunks = []
    offset = 0
    for size in pieces or []:
        chunks.append(data[offset : offset + size])
        offset += size
    chunks.append(data[offset:])

    def collect(new: list[object]) -> None:
        for event in new:
            if isinstance(event, Head):
                events.append((event.method, event.target, event.code, tuple(event.headers),
                               event.content_length, event.chunked, event.keep_alive))
            elif type(event) is bytes and events and type(events[-1]) is bytes:
                events[-1] = events[-1] + event
            else:
                events.append(event)
            if event is END:
                parser.next_message()
                collect(parser.feed(b""))

    for chunk in chunks:
        collect(parser.feed(chunk))
    if eof:
        collect(parser.feed_eof())
    return events


GET = b"GET /k8s/api/v1/pods HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer t\r\n\r\n"
POST = b"POST /web/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = (
    b"PUT /web/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: y\r\n\r\n"
)


class RequestTests(SynchronousTestCase):
    def test_get_post_chunked_pipelined(self):
        """Three pipelined requests: heads, bodies without framing, an END each, in order."""
        events = parse_all(GET + POST + CHUNKED)
        self.assertEqual(
            [e if not isinstance(e, tuple) else e[:2] for e in events],
            [(b"GET", b"/k8s/api/v1/pods"), END, (b"POST", b"/web/x"), b"hello", END,
             (b"PUT", b"/web/x"), b"hello world", END],
        )

    def test_stops_after_each_message(self):
        """Nothing past END is parsed until next_message(): responses stay in request order."""
        parser = Parser()
        events = parser.feed(GET + POST)
        self.assertEqual(events[-1], END)
        self.assertEqual(len(events), 2)
        self.assertEqual(parser.buffered, len(POST))
        parser.next_message()
        self.assertEqual(parser.feed(b"")[1:], [b"hello", END])

    def test_header_values_trimmed_names_kept(self):
        [head] = Parser().feed(b"GET / HTTP/1.1\r\nHost:  gw \t\r\nX-A:\r\n\r\n")[:1]
        assert isinstance(head, Head)
        self.assertEqual(head.headers, [(b"Host", b"gw"), (b"X-A", b"")])
        self.assertEqual(head.getRawHeaders(b"host"), [b"gw"])

    def test_keep_alive(self):
        """HTTP/1.1 keeps the connection unless Connection: close; HTTP/1.0 only with keep-alive."""
        cases = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n", False),
            (b"GET / HTTP/1.0\r\n\r\n", False),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
        ]
        for data, keep in cases:
            head = Parser().feed(data)[0]
            assert isinstance(head, Head)
            self.assertEqual(head.keep_alive, keep, data)

    def test_leading_empty_lines_ignored(self):
        self.assertEqual(parse_all(b"\r\n\r\n" + GET)[1], END)


class RefusalTests(SynchronousTestCase):
    def refused(self, data: bytes, status: int, words: str, *, response: bool = False) -> None:
        parser = Parser(response=response)
        with self.assertRaises(ParseError) as caught:
            for i in range(len(data)):  # byte by byte: refused as soon as it is known
                parser.feed(data[i : i + 1])
            parser.feed_eof()
        self.assertEqual(caught.exception.status, status, caught.exception.reason)
        self.assertIn(words, caught.exception.reason)
        # Nothing more is accepted after.
        self.assertRaises(ParseError, parser.feed, b"GET / HTTP/1.1\r\n\r\n")

    def test_smuggling_classes(self):
        """Each ambiguity that lets two parsers disagree on a message's end is a 400 naming it."""
        self.refused(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n", 400, "obs-fold")
        self.refused(b"GET / HTTP/1.1\nHost: a\n\n", 400, "bare LF")
        self.refused(b"GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n", 400, "bare CR")
        self.refused(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "whitespace before the colon")
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400,
                     "conflicting Content-Length")
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400, "not a decimal number")
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400, "not a decimal number")
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                     400, "both Content-Length and Transfer-Encoding")
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "only the chunked")
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501, "only the chunked")
        self.refused(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0")
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400, "invalid chunk size")
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n", 400, "invalid chunk size")
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\n", 400, "invalid chunk size")
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 17 + b"\r\n", 400,
                     "invalid chunk size")
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX", 400,
                     "not followed by CRLF")
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello", 400, "bare CR or LF")
        self.refused(b"GET / HTTP/1.1\r\n\r\n", 400, "exactly one Host")
        self.refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "exactly one Host")
        self.refused(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP/1.1 only")
        self.refused(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request line")
        self.refused(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400, "control character")
        self.refused(b"GET / HTTP/1.1\r\nHost: a\r\nX(: 1\r\n\r\n", 400, "invalid header name")
        self.refused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel", 400, "ended inside a message")

    def test_oversized_heads(self):
        """A head over the limit is 431 as soon as it passes the limit, complete or not."""
        parser = Parser(max_head=100)
        with self.assertRaises(ParseError) as caught:
            parser.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 200)
        self.assertEqual(caught.exception.status, 431)
        parser = Parser(max_fields=3)
        with self.assertRaises(ParseError) as caught:
            parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 4 + b"\r\n")
        self.assertEqual(caught.exception.status, 431)


class ResponseTests(SynchronousTestCase):
    def test_framings(self):
        """Content-Length, chunked, and a body delimited by the close (not reusable)."""
        self.assertEqual(parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", response=True)[1:], [b"ok", END])
        self.assertEqual(
            parse_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", response=True)[1:],
            [b"ok", END],
        )
        events = parse_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", response=True, eof=True)
        self.assertEqual(events[1:], [b"until the end", END])
        self.assertFalse(events[0][-1])  # type: ignore[index]

    def test_no_body(self):
        """204, 304, and the answer to HEAD have no body whatever their head says; 1xx are skipped."""
        for data in (b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"):
            self.assertEqual(parse_all(data, response=True)[1:], [END])
        parser = Parser(response=True)
        parser.head_request = True
        events = parser.feed(b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
        self.assertEqual(len(events), 2)
        assert isinstance(events[0], Head)
        self.assertEqual((events[0].code, events[0].content_length, events[1]), (200, 99, END))

    def test_ambiguous_response_framing_refused(self):
        parser = Parser(response=True)
        with self.assertRaises(ParseError) as caught:
            parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.assertEqual(caught.exception.status, 502)


# -- Hypothesis -----------------------------------------------------------------------

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).map(str.encode)
_value = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c >= 0x21 and c != 0x7F))
_body = st.binary(max_size=300)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE"]))
    target = b"/" + draw(_token)
    headers = [(b"Host", b"gw")] + draw(st.lists(st.tuples(_token.map(lambda t: b"x-" + t), _value), max_size=5))
    body = draw(_body)
    framing = draw(st.sampled_from(["length", "chunked", "none"]))
    lines = [method + b" " + target + b" HTTP/1.1"] + [n + b": " + v for n, v in headers]
    if framing == "none" or not body:
        return b"\r\n".join(lines) + b"\r\n\r\n"
    if framing == "length":
        return b"\r\n".join(lines + [b"Content-Length: %d" % len(body)]) + b"\r\n\r\n" + body
    sizes = draw(st.lists(st.integers(1, 64), min_size=1, max_size=8))
    chunks = []
    offset = 0
    for size in sizes:
        piece = body[offset : offset + size]
        if piece:
            chunks.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
        offset += size
    if offset < len(body):
        chunks.append(b"%X\r\n" % (len(body) - offset) + body[offset:] + b"\r\n")
    return b"\r\n".join(lines + [b"Transfer-Encoding: chunked"]) + b"\r\n\r\n" + b"".join(chunks) + b"0\r\n\r\n"


class HypothesisTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(requests(), min_size=1, max_size=4), st.data())
    def test_any_chunking_parses_the_same(self, messages: list[bytes], data: st.DataObject) -> None:
        """However the bytes are cut into reads, the same heads, bodies and ENDs come out."""
        stream = b"".join(messages)
        whole = parse_all(stream)
        pieces = data.draw(st.lists(st.integers(0, 40), max_size=60))
        self.assertEqual(parse_all(stream, pieces=pieces), whole)
        self.assertEqual(whole.count(END), len(messages))

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=400), st.booleans(), st.lists(st.integers(0, 50), max_size=20))
    def test_arbitrary_bytes_only_raise_parse_error(self, data: bytes, response: bool, pieces: list[int]) -> None:
        """Garbage is refused with ParseError, never any other exception."""
        try:
            parse_all(data, response=response, pieces=pieces, eof=True)
        except ParseError as e:
            self.assertIn(e.status, (400, 431, 501, 502, 505))

    @settings(max_examples=300, deadline=None)
    @given(requests(), st.integers(0, 400), st.binary(min_size=1, max_size=3))
    def test_mutations_only_raise_parse_error(self, message: bytes, at: int, junk: bytes) -> None:
        """A valid request with a few bytes changed parses or raises ParseError, nothing else."""
        at = at % (len(message) + 1)
        try:
            parse_all(message[:at] + junk + message[at + len(junk):], eof=True)
        except ParseError:
            pass

    @settings(max_examples=400, deadline=None)
    @given(requests(), st.integers(0, 400), st.binary(min_size=1, max_size=3), st.booleans())
    def test_one_match_head_equals_line_by_line(self, message: bytes, at: int, junk: bytes, response: bool) -> None:
        """
        The one-regex path for well-formed heads gives the same events, or
        the same error, as the line-by-line path it skips.
        """
        from hoopgw.protocols.http import wire

        if response:
            message = b"HTTP/1.1 200 OK" + message[message.index(b"\r\n"):]
        at = at % (len(message) + 1)
        data = message[:at] + junk + message[at + len(junk):]

        def outcome() -> object:
            try:
                return parse_all(data, response=response, eof=True)
            except ParseError as e:
                return (e.status, e.reason)

        fast = outcome()
        never = wire.re.compile(rb"(?!)")
        self.patch(wire, "_FIELD_LINES", never)
        self.assertEqual(outcome(), fast)
