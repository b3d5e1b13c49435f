"""
Tests for L{hoopgw.protocols.postgres.codec}.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.postgres import codec
from hoopgw.protocols.postgres.codec import (
    AuthenticationCleartextPassword,
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationOther,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    BackendKeyData,
    BackendParser,
    BackendPhase,
    Bind,
    BindComplete,
    CancelRequest,
    Close,
    CloseComplete,
    CommandComplete,
    CopyBothResponse,
    CopyData,
    CopyDone,
    CopyFail,
    CopyInResponse,
    CopyOutResponse,
    DataRow,
    Describe,
    EmptyQueryResponse,
    EncryptionResponse,
    ErrorResponse,
    Execute,
    FieldDescription,
    Flush,
    FrontendParser,
    FrontendPhase,
    FunctionCall,
    GenericMessage,
    GSSENCRequest,
    Message,
    NegotiateProtocolVersion,
    NoData,
    NoticeResponse,
    NotificationResponse,
    ParameterDescription,
    ParameterStatus,
    Parse,
    ParseComplete,
    PasswordMessage,
    PortalSuspended,
    ProtocolError,
    Query,
    ReadyForQuery,
    RowDescription,
    SASLInitialResponse,
    SASLResponse,
    SSLRequest,
    StartupMessage,
    Sync,
    Terminate,
    encode,
    error_response,
)

# -- strategies --------------------------------------------------------------

# Text fields: any code point but surrogates (not encodable) and NUL (the terminator).
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=12)
name = text.filter(bool)
blob = st.binary(max_size=24)
nul_free = blob.filter(lambda b: b"\0" not in b)
i16 = st.integers(-(2**15), 2**15 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
u32 = st.integers(0, 2**32 - 1)
nullable = st.none() | blob
small = {"max_size": 5}

FRONTEND_TAGS = set(b"QPBEDCSHXFdcfp")
BACKEND_TAGS = set(b"RSKZTDCEN123ntsIGHWdcAv")


def generic(known: set[int]) -> st.SearchStrategy[GenericMessage]:
    return st.builds(
        GenericMessage.from_body,
        st.integers(0, 255).filter(lambda t: t not in known).map(lambda t: bytes([t])),
        blob,
    )


startup_messages = st.one_of(
    st.builds(StartupMessage, st.lists(st.tuples(name, text), **small), st.integers(0, 0xFFFF)),
    st.builds(CancelRequest, i32, st.binary(min_size=4, max_size=256)),
)

frontend_messages = st.one_of(
    st.builds(Query, text),
    st.builds(Parse, text, text, st.lists(u32, **small)),
    st.builds(Bind, text, text, st.lists(i16, **small), st.lists(nullable, **small), st.lists(i16, **small)),
    st.builds(Execute, text, u32),
    st.builds(Describe, st.sampled_from("SP"), text),
    st.builds(Close, st.sampled_from("SP"), text),
    st.just(Sync()),
    st.just(Flush()),
    st.just(Terminate()),
    st.builds(FunctionCall, u32, st.lists(i16, **small), st.lists(nullable, **small), i16),
    st.builds(CopyData.from_data, blob),
    st.just(CopyDone()),
    st.builds(CopyFail, text),
    st.builds(PasswordMessage, nul_free),
    generic(FRONTEND_TAGS),
)

fields = st.builds(FieldDescription, text, u32, i16, u32, i16, i32, i16)
report_fields = st.lists(st.tuples(st.characters(min_codepoint=1, max_codepoint=255), text), **small)

backend_messages = st.one_of(
    st.just(AuthenticationOk()),
    st.just(AuthenticationCleartextPassword()),
    st.builds(AuthenticationMD5Password, st.binary(min_size=4, max_size=4)),
    st.builds(AuthenticationSASL, st.lists(name, **small)),
    st.builds(AuthenticationSASLContinue, blob),
    st.builds(AuthenticationSASLFinal, blob),
    st.builds(AuthenticationOther, i32.filter(lambda c: c not in (0, 3, 5, 10, 11, 12)), blob),
    st.builds(ParameterStatus, text, text),
    st.builds(BackendKeyData, i32, st.binary(min_size=4, max_size=256)),
    st.builds(ReadyForQuery, st.sampled_from("ITE")),
    st.builds(RowDescription, st.lists(fields, **small)),
    st.builds(DataRow.from_values, st.lists(nullable, max_size=8)),
    st.builds(CommandComplete, text),
    st.builds(ErrorResponse, report_fields),
    st.builds(NoticeResponse, report_fields),
    st.sampled_from([ParseComplete(), BindComplete(), CloseComplete(), NoData(), PortalSuspended(), EmptyQueryResponse(), CopyDone()]),
    st.builds(ParameterDescription, st.lists(u32, **small)),
    st.builds(CopyInResponse, st.integers(-128, 127), st.lists(i16, **small)),
    st.builds(CopyOutResponse, st.integers(-128, 127), st.lists(i16, **small)),
    st.builds(CopyBothResponse, st.integers(-128, 127), st.lists(i16, **small)),
    st.builds(CopyData.from_data, blob),
    st.builds(NotificationResponse, i32, text, text),
    st.builds(NegotiateProtocolVersion, i32, st.lists(text, **small)),
    generic(BACKEND_TAGS),
)

STARTUP = StartupMessage({"user": "alice", "database": "appdb", "application_name": "psql"})


def tagged_frontend() -> FrontendParser:
    """A frontend parser past its startup phase."""
    parser = FrontendParser()
    parser.feed(encode(STARTUP))
    return parser


def feed_in_chunks(parser: codec._Framer, data: bytes, cuts: list[int]) -> list[Message]:
    out: list[Message] = []
    start = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        out.extend(parser.feed(data[start:cut]))
        start = cut
    return out


def touch(message: Message) -> None:
    """Decode everything a lazy message decodes on demand."""
    if isinstance(message, DataRow):
        _ = message.values
        if message.column_count:
            message.replace_column(message.column_count - 1, b"masked")
    elif isinstance(message, CopyData):
        _ = message.data
    elif isinstance(message, GenericMessage):
        _ = message.tag, message.body


def fresh(message: Message) -> bytes:
    """The message encoded from its fields, not from the bytes it was parsed from."""
    if isinstance(message, codec._Decoded):
        copy = attrs.evolve(message)
        assert copy.raw is None
        return encode(copy)
    return encode(message)


# Every message type, once, for the plain round-trip tests.
EXAMPLE_STARTUP = [
    STARTUP,
    StartupMessage([("user", "bob")], minor_version=2),
    SSLRequest(),
    GSSENCRequest(),
    CancelRequest(4242, b"\x01\x02\x03\x04"),
]
EXAMPLE_FRONTEND = [
    Query("SELECT 1; SELECT 'é'"),
    Parse("s1", "SELECT $1::int", (23,)),
    Bind("p1", "s1", (0, 1), (b"42", None, b""), (1,)),
    Execute("p1", 100),
    Describe("S", "s1"),
    Close("P", "p1"),
    Sync(),
    Flush(),
    Terminate(),
    FunctionCall(1598, (0,), (b"x", None), 1),
    CopyData.from_data(b"1\tone\n"),
    CopyDone(),
    CopyFail("aborted by user"),
    PasswordMessage(b"eyJhbGciOi.token"),
    GenericMessage.from_body(b"z", b"\x00\x01"),
]
EXAMPLE_BACKEND = [
    AuthenticationOk(),
    AuthenticationCleartextPassword(),
    AuthenticationMD5Password(b"salt"),
    AuthenticationSASL(("SCRAM-SHA-256", "SCRAM-SHA-256-PLUS")),
    AuthenticationSASLContinue(b"r=abc,s=c2FsdA==,i=4096"),
    AuthenticationSASLFinal(b"v=signature"),
    AuthenticationOther(7, b""),
    ParameterStatus("server_version", "15.6"),
    BackendKeyData(4242, b"\x00\x00\x10\x01"),
    ReadyForQuery("T"),
    RowDescription((FieldDescription("id", 16384, 1, 23, 4, -1, 0), FieldDescription("?column?"))),
    DataRow.from_values((b"1", None, b"")),
    CommandComplete("SELECT 1"),
    error_response("ERROR", "42601", "syntax error", detail="near x", hint="check it"),
    NoticeResponse({"S": "NOTICE", "M": "hello"}),
    ParseComplete(),
    BindComplete(),
    CloseComplete(),
    NoData(),
    ParameterDescription((23, 25)),
    PortalSuspended(),
    EmptyQueryResponse(),
    CopyInResponse(0, (0, 0)),
    CopyOutResponse(1, (1,)),
    CopyBothResponse(0, ()),
    CopyData.from_data(b"\x00\x01"),
    CopyDone(),
    NotificationResponse(4242, "jobs", "42"),
    NegotiateProtocolVersion(0, ("_pq_.compression",)),
    GenericMessage.from_body(b"V", b"\x00\x00\x00\x01x"),  # FunctionCallResponse passes through
]


class RoundTripTests(SynchronousTestCase):
    def assertRoundTrip(self, parser: codec._Framer, message: Message) -> None:
        data = encode(message)
        parsed = parser.feed(data)
        self.assertEqual(parsed, [message])
        self.assertIs(type(parsed[0]), type(message))
        self.assertEqual(encode(parsed[0]), data)
        self.assertEqual(fresh(parsed[0]), data)
        self.assertEqual(parser.buffered, 0)

    def test_startup_messages(self) -> None:
        """Every startup-phase message parses back to the value it was encoded from."""
        for message in EXAMPLE_STARTUP:
            self.assertRoundTrip(FrontendParser(), message)

    def test_frontend_messages(self) -> None:
        """Every tagged frontend message parses back to the value it was encoded from."""
        parser = tagged_frontend()
        for message in EXAMPLE_FRONTEND:
            self.assertRoundTrip(parser, message)

    def test_auth_responses(self) -> None:
        """
        'p' messages are decoded as the proxy says: PasswordMessage by default,
        SASLInitialResponse or SASLResponse once announced, or left undecoded.
        """
        parser = tagged_frontend()
        self.assertRoundTrip(parser, PasswordMessage(b"secret"))
        parser.expect_auth_response(SASLInitialResponse)
        self.assertRoundTrip(parser, SASLInitialResponse("SCRAM-SHA-256", b"n,,n=,r=nonce"))
        self.assertRoundTrip(parser, SASLInitialResponse("SCRAM-SHA-256", None))
        parser.expect_auth_response(SASLResponse)
        self.assertRoundTrip(parser, SASLResponse(b"c=biws,r=nonce,p=proof\x00"))
        parser.expect_auth_response(GenericMessage)
        self.assertRoundTrip(parser, GenericMessage.from_body(b"p", b"\x60\x82gss"))
        self.assertRaises(ValueError, parser.expect_auth_response, Query)

    def test_backend_messages(self) -> None:
        """Every backend message parses back to the value it was encoded from."""
        parser = BackendParser()
        for message in EXAMPLE_BACKEND:
            self.assertRoundTrip(parser, message)

    def test_all_types_covered(self) -> None:
        """The examples above cover every message class the codec exports."""
        exported = {getattr(codec, n) for n in codec.__all__}
        classes = {c for c in exported if isinstance(c, type) and issubclass(c, Message) and c is not Message}
        covered = {type(m) for m in EXAMPLE_STARTUP + EXAMPLE_FRONTEND + EXAMPLE_BACKEND}
        covered |= {SASLInitialResponse, SASLResponse, EncryptionResponse}
        covered |= {codec.DataRows}  # (framed only in runs: RowRunTests)
        self.assertEqual(classes - covered, set())

    def test_raw_is_forwarded_untouched(self) -> None:
        """
        A parsed message encodes to the very bytes object it was parsed from;
        a copy changed with attrs.evolve is encoded afresh from its fields.
        """
        parser = tagged_frontend()
        [query] = parser.feed(encode(Query("SELECT 1")))
        self.assertIs(encode(query), query.raw)
        changed = attrs.evolve(query, query="SELECT 2")
        self.assertIsNone(changed.raw)
        self.assertEqual(encode(changed), encode(Query("SELECT 2")))

    def test_untagged_answers(self) -> None:
        """EncryptionResponse encodes to its single byte."""
        self.assertEqual(encode(EncryptionResponse("S")), b"S")
        self.assertEqual(encode(EncryptionResponse("N")), b"N")
        self.assertRaises(ValueError, encode, EncryptionResponse("x"))

    def test_secrets_not_in_repr(self) -> None:
        """Passwords, SASL payloads and cancel keys never appear in a repr."""
        for message in [
            PasswordMessage(b"hunter2"),
            SASLInitialResponse("SCRAM-SHA-256", b"hunter2"),
            SASLResponse(b"hunter2"),
            AuthenticationSASLContinue(b"hunter2"),
            BackendKeyData(1, b"hunter2"),
            CancelRequest(1, b"hunter2"),
        ]:
            self.assertNotIn("hunter2", repr(message))

    def test_encode_refuses_nul(self) -> None:
        """A NUL inside a string field cannot be framed and raises ValueError."""
        for message in [Query("a\0b"), StartupMessage({"user": "a\0"}), PasswordMessage(b"a\0"), ParameterStatus("a", "\0")]:
            self.assertRaises(ValueError, encode, message)

    def test_encode_refuses_out_of_range(self) -> None:
        """An integer that does not fit its wire field raises ValueError."""
        self.assertRaises(ValueError, encode, Execute("", -1))
        self.assertRaises(ValueError, encode, ParameterDescription((2**32,)))

    def test_error_response_builder(self) -> None:
        """error_response fills S, V, C, M and, when given, D and H."""
        error = error_response("FATAL", "28P01", "token rejected", hint="get a new one")
        self.assertEqual(
            error.fields,
            (("S", "FATAL"), ("V", "FATAL"), ("C", "28P01"), ("M", "token rejected"), ("H", "get a new one")),
        )
        self.assertEqual((error.severity, error.code, error.message, error.detail, error.hint), ("FATAL", "28P01", "token rejected", None, "get a new one"))
        self.assertFalse(isinstance(NoticeResponse(()), ErrorResponse))

    def test_startup_accessors(self) -> None:
        """The database defaults to the user name, as the server does."""
        self.assertEqual(STARTUP.database, "appdb")
        self.assertEqual(StartupMessage({"user": "bob"}).database, "bob")
        self.assertEqual(STARTUP.get("application_name"), "psql")


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(frontend_messages, max_size=10))
    def test_frontend_round_trip(self, messages: list[Message]) -> None:
        """Generated frontend messages parse back equal and re-encode to the same bytes."""
        data = b"".join(encode(m) for m in messages)
        parsed = tagged_frontend().feed(data)
        self.assertEqual(parsed, messages)
        self.assertEqual(b"".join(fresh(m) for m in parsed), data)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(backend_messages, max_size=10))
    def test_backend_round_trip(self, messages: list[Message]) -> None:
        """Generated backend messages parse back equal and re-encode to the same bytes."""
        data = b"".join(encode(m) for m in messages)
        parsed = BackendParser().feed(data)
        self.assertEqual(parsed, messages)
        self.assertEqual(b"".join(fresh(m) for m in parsed), data)

    @settings(max_examples=200, deadline=None)
    @given(startup_messages)
    def test_startup_round_trip(self, message: Message) -> None:
        """Generated StartupMessage and CancelRequest values parse back equal."""
        self.assertEqual(FrontendParser().feed(encode(message)), [message])

    @settings(max_examples=300, deadline=None)
    @given(st.lists(frontend_messages, max_size=8), st.data())
    def test_frontend_chunking(self, messages: list[Message], data: st.DataObject) -> None:
        """
        A client stream (StartupMessage, then tagged messages) cut at any
        points parses to the same messages as when fed whole.
        """
        stream = encode(STARTUP) + b"".join(encode(m) for m in messages)
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
        whole = FrontendParser().feed(stream)
        self.assertEqual(whole, [STARTUP, *messages])
        self.assertEqual(feed_in_chunks(FrontendParser(), stream, cuts), whole)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(backend_messages, max_size=8), st.data())
    def test_backend_chunking(self, messages: list[Message], data: st.DataObject) -> None:
        """A server stream cut at any points parses to the same messages as when fed whole."""
        stream = b"".join(encode(m) for m in messages)
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
        parser = BackendParser()
        self.assertEqual(feed_in_chunks(parser, stream, cuts), messages)
        self.assertEqual(parser.buffered, 0)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def test_datarow_replace(self, data: st.DataObject) -> None:
        """Replacing a column gives the row built from the changed values."""
        values = data.draw(st.lists(nullable, min_size=1, max_size=8))
        index = data.draw(st.integers(0, len(values) - 1))
        value = data.draw(nullable)
        row = DataRow.from_values(values)
        changed = list(values)
        changed[index] = value
        self.assertEqual(row.replace_column(index, value), DataRow.from_values(changed))
        self.assertEqual(row.replace_column(index, value).values, tuple(changed))


class RememberedDecodingTests(SynchronousTestCase):
    """
    The decoders that remember recent messages (RowDescription,
    CommandComplete, ReadyForQuery, Describe, Execute) answer as decoding
    afresh would, however often the same bytes come, and never remember
    what they refuse.
    """

    @settings(max_examples=300, deadline=None)
    @given(st.lists(backend_messages, max_size=8), st.lists(frontend_messages, max_size=8), st.integers(1, 3))
    def test_same_as_decoding_afresh(self, backend: list[Message], frontend: list[Message], times: int) -> None:
        for messages, parser in ((backend, BackendParser), (frontend, tagged_frontend)):
            data = b"".join(encode(m) for m in messages)
            for _ in range(times):
                parsed = parser().feed(data)
                self.assertEqual(parsed, messages)
                self.assertEqual([m.raw for m in parsed], [encode(m) for m in messages])

    def test_bounded(self) -> None:
        """Past its bound a decoder starts again; a long message is never kept."""
        decode = codec._remembered(codec._decode_command_complete)
        seen = next(c.cell_contents for c in decode.__closure__ if type(c.cell_contents) is dict)
        for n in range(codec._REMEMBERED + 10):
            decode(encode(CommandComplete(f"SELECT {n}")))
        self.assertLessEqual(len(seen), codec._REMEMBERED)
        long = encode(CommandComplete("x" * codec._REMEMBERED_LONGEST))
        self.assertEqual(decode(long).tag, "x" * codec._REMEMBERED_LONGEST)
        self.assertNotIn(long, seen)

    def test_refused_every_time(self) -> None:
        """A malformed message is refused again, not answered from memory."""
        for _ in range(2):
            parser = BackendParser()
            parser.feed(encode(ReadyForQuery("I")))
            self.assertRaises(ProtocolError, parser.feed, b"Z\x00\x00\x00\x05X")


class RowRunTests(SynchronousTestCase):
    """
    With C{row_runs}, each run of DataRows is one L{codec.DataRows}: the same
    bytes, the same rows and the same other messages as framing row by row,
    however the stream is cut.
    """

    rows = st.lists(nullable, max_size=3).map(DataRow.from_values)
    streams = st.lists(st.one_of(rows, rows, rows, backend_messages), max_size=12)

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(streams, st.data())
    def test_same_as_row_by_row(self, messages: list[Message], data: st.DataObject) -> None:
        stream = b"".join(encode(m) for m in messages)
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
        parser = BackendParser()
        parser.row_runs = True
        runs = feed_in_chunks(parser, stream, cuts)
        self.assertEqual(parser.buffered, 0)
        self.assertEqual(b"".join(encode(m) for m in runs), stream)
        self.assertEqual(sum(m.count for m in runs if type(m) is codec.DataRows),
                         sum(1 for m in messages if type(m) is DataRow))
        self.assertEqual([m for m in runs if type(m) is not codec.DataRows],
                         [m for m in messages if type(m) is not DataRow])
        self.assertNotIn(DataRow, {type(m) for m in runs})
        # Runs are maximal within what one feed completed: never two in a row.
        for one, two in zip(runs, runs[1:]):
            self.assertFalse(type(one) is codec.DataRows and type(two) is codec.DataRows and not cuts)

    def test_bad_length_inside_a_run(self) -> None:
        """A row of a run that declares a length beyond the limit fails the parser, as row by row."""
        parser = BackendParser(max_message_length=64)
        parser.row_runs = True
        good = encode(DataRow.from_values([b"x"]))
        bad = b"D" + struct.pack(">i", 100) + b"\0" * 96  # all in, and too long
        with self.assertRaises(ProtocolError) as caught:
            parser.feed(good + good + bad)
        self.assertIn("exceeds the limit of 64 bytes", str(caught.exception))
        self.assertTrue(parser.failed)

    def test_partial_row_waits(self) -> None:
        """The last row of a read, not all in: the rows before it now, it with the next read."""
        parser = BackendParser()
        parser.row_runs = True
        row = encode(DataRow.from_values([b"abc"]))
        [first] = parser.feed(row * 3 + row[:4])
        self.assertEqual((first.count, first.raw), (3, row * 3))
        [second] = parser.feed(row[4:])
        self.assertEqual((second.count, second.raw), (1, row))


def _fuzz(test: SynchronousTestCase, parser: codec._Framer, stream: bytes, cuts: list[int]) -> None:
    """Feed arbitrary bytes: only ProtocolError may escape, and what parses re-encodes exactly."""
    try:
        messages = feed_in_chunks(parser, stream, cuts)
    except ProtocolError:
        test.assertTrue(parser.failed)
        test.assertRaises(ProtocolError, parser.feed, b"x")
        return
    for message in messages:
        test.assertEqual(fresh(message), message.raw)
        try:
            touch(message)
        except ProtocolError:
            pass


# Frames with a correct length and an arbitrary body reach the body decoders.
def framed(tags: set[int]) -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda tag, body: bytes([tag]) + struct.pack(">i", len(body) + 4) + body,
        st.sampled_from(sorted(tags)),
        st.binary(max_size=40),
    )


class ArbitraryInputTests(SynchronousTestCase):
    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=5))
    def test_frontend_startup_phase(self, stream: bytes, cuts: list[int]) -> None:
        """Arbitrary bytes in the startup phase raise nothing but ProtocolError."""
        _fuzz(self, FrontendParser(), stream, cuts)

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=5))
    def test_frontend_tagged_phase(self, stream: bytes, cuts: list[int]) -> None:
        """Arbitrary bytes after a StartupMessage raise nothing but ProtocolError."""
        _fuzz(self, tagged_frontend(), stream, cuts)

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=5))
    def test_backend(self, stream: bytes, cuts: list[int]) -> None:
        """Arbitrary server bytes raise nothing but ProtocolError."""
        _fuzz(self, BackendParser(), stream, cuts)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=50))
    def test_backend_encryption_response(self, stream: bytes) -> None:
        """Arbitrary bytes as the answer to an SSLRequest raise nothing but ProtocolError."""
        parser = BackendParser()
        parser.expect_encryption_response()
        _fuzz(self, parser, stream, [])

    @settings(max_examples=1000, deadline=None)
    @given(st.lists(framed(FRONTEND_TAGS), min_size=1, max_size=4), st.sampled_from([PasswordMessage, SASLInitialResponse, SASLResponse]))
    def test_frontend_bodies(self, frames: list[bytes], auth: type[Message]) -> None:
        """
        Well-framed frontend messages with arbitrary bodies either raise
        ProtocolError or decode to values that encode to exactly those bytes.
        """
        parser = tagged_frontend()
        parser.expect_auth_response(auth)
        _fuzz(self, parser, b"".join(frames), [])

    @settings(max_examples=1000, deadline=None)
    @given(st.lists(framed(BACKEND_TAGS), min_size=1, max_size=4))
    def test_backend_bodies(self, frames: list[bytes]) -> None:
        """
        Well-framed backend messages with arbitrary bodies either raise
        ProtocolError (DataRow: when decoded) or decode to values that
        encode to exactly those bytes.
        """
        _fuzz(self, BackendParser(), b"".join(frames), [])

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=60))
    def test_startup_bodies(self, body: bytes) -> None:
        """A well-framed startup message with an arbitrary body raises only ProtocolError."""
        for code in (3 << 16, 3 << 16 | 2, 80877102, 80877103):
            _fuzz(self, FrontendParser(), struct.pack(">ii", len(body) + 8, code) + body, [])


class LengthLimitTests(SynchronousTestCase):
    def assertRaisesOnByte(self, parser: codec._Framer, data: bytes, at: int) -> ProtocolError:
        """Feeding C{data} byte by byte raises on byte number C{at} (1-based), not before."""
        for i in range(at - 1):
            self.assertEqual(parser.feed(data[i : i + 1]), [])
        error = self.assertRaises(ProtocolError, parser.feed, data[at - 1 : at])
        self.assertEqual(parser.buffered, 0)
        self.assertRaises(ProtocolError, parser.feed, b"Z\x00\x00\x00\x05I")
        return error

    def test_huge_backend_length(self) -> None:
        """
        A backend header claiming 2**31-1 bytes raises on its 5th byte,
        before any body is buffered.
        """
        error = self.assertRaisesOnByte(BackendParser(), b"D\x7f\xff\xff\xff", 5)
        self.assertIn("'D' declares length 2147483647, which exceeds the limit of 1073741824 bytes", str(error))

    def test_negative_length(self) -> None:
        """Negative and too-small lengths raise on the 5th byte."""
        for length in (-1, -(2**31), 0, 3):
            error = self.assertRaisesOnByte(BackendParser(), b"D" + struct.pack(">i", length), 5)
            self.assertIn(f"declares length {length}, which is below the minimum of 4", str(error))
            self.assertRaisesOnByte(tagged_frontend(), b"Q" + struct.pack(">i", length), 5)

    def test_allowed_length_is_not_preallocated(self) -> None:
        """
        A header claiming a large but allowed length holds only the bytes
        actually received: nothing is allocated for the claimed size.
        """
        parser = BackendParser()
        self.assertEqual(parser.feed(b"D" + struct.pack(">i", (1 << 30) - 1) + b"\x00" * 100), [])
        self.assertEqual(parser.buffered, 105)
        self.assertLess(sum(len(c) for c in parser._chunks), 200)

    def test_configurable_maximum(self) -> None:
        """The backend maximum is configurable."""
        parser = BackendParser(max_message_length=100)
        self.assertEqual(len(parser.feed(encode(CopyData.from_data(b"x" * 96)))), 1)
        self.assertRaises(ProtocolError, parser.feed, encode(CopyData.from_data(b"x" * 97))[:5])

    def test_startup_limit(self) -> None:
        """A startup message longer than 10,000 bytes (as the server) raises on its 4th byte."""
        error = self.assertRaisesOnByte(FrontendParser(), struct.pack(">i", 10_001), 4)
        self.assertIn("startup message declares length 10001, which exceeds the limit of 10000 bytes", str(error))
        self.assertRaisesOnByte(FrontendParser(), struct.pack(">i", 2**31 - 1), 4)
        self.assertRaisesOnByte(FrontendParser(), struct.pack(">i", 7), 4)

    def test_frontend_limits(self) -> None:
        """
        Tagged frontend messages are capped at 256 MiB; those that are
        always small (Sync, Execute, ...) at 10,000 bytes, as the server does.
        """
        error = self.assertRaisesOnByte(tagged_frontend(), b"Q" + struct.pack(">i", (256 << 20) + 1), 5)
        self.assertIn("exceeds the limit of 268435456 bytes", str(error))
        self.assertEqual(tagged_frontend().feed(b"Q" + struct.pack(">i", 256 << 20)), [])
        error = self.assertRaisesOnByte(tagged_frontend(), b"S" + struct.pack(">i", 10_001), 5)
        self.assertIn("'S' declares length 10001, which exceeds the limit of 10000 bytes", str(error))


class MalformedTests(SynchronousTestCase):
    def assertMalformed(self, parser: codec._Framer, tag: bytes, body: bytes, expected: str) -> None:
        data = tag + struct.pack(">i", len(body) + 4) + body
        error = self.assertRaises(ProtocolError, parser.feed, data)
        self.assertEqual(str(error), expected)
        self.assertTrue(parser.failed)

    def test_frontend(self) -> None:
        """Malformed frontend bodies raise ProtocolError naming the message and the problem."""
        cases = [
            (b"Q", b"SELECT 1", "Query: query string is missing its NUL terminator"),
            (b"Q", b"SELECT 1\0x", "Query: 1 unexpected bytes after the last field"),
            (b"B", b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0", "Bind: parameter 0 has negative length -2 (only -1, NULL, is allowed)"),
            (b"B", b"\0\0\0\0\x03\xe8", "Bind: 1000 parameters claimed but only 0 bytes remain"),
            (b"B", b"\0\0\0\0\0\x01\0\0\0\x09ab\0\0", "Bind: truncated parameter 0: needs 9 bytes, 4 left"),
            (b"P", b"\0SELECT\0\0\x02\0\0\0\x17", "Parse: 2 parameter types claimed but only 4 bytes remain"),
            (b"D", b"Xname\0", "Describe: kind must be 'S' or 'P', got b'X'"),
            (b"S", b"\0", "Sync: expected an empty body, got 1 bytes"),
            (b"E", b"\0\0\0", "Execute: truncated maximum row count: needs 4 bytes, 2 left"),
        ]
        for tag, body, expected in cases:
            self.assertMalformed(tagged_frontend(), tag, body, expected)

    def test_backend(self) -> None:
        """Malformed backend bodies raise ProtocolError naming the message and the problem."""
        cases = [
            (b"Z", b"X", "ReadyForQuery: transaction status must be 'I', 'T' or 'E', got b'X'"),
            (b"T", b"\0\x01id\0\0\0\0\0", "RowDescription: 1 fields claimed but only 7 bytes remain"),
            (b"T", b"\0\x01id" + b"\0" * 20, "RowDescription: 1 unexpected bytes after the last field"),
            (b"E", b"SERROR\0", "ErrorResponse: truncated field code: needs 1 bytes, 0 left"),
            (b"R", b"\0\0\0\x05ab", "AuthenticationMD5Password: truncated salt: needs 4 bytes, 2 left"),
            (b"R", b"\0\0\0\x0aSCRAM\0", "AuthenticationSASL: mechanism name is missing its NUL terminator"),
            (b"K", b"\0\0\0\x01ab", "BackendKeyData: secret key of 2 bytes (expected 4 to 256)"),
            (b"v", b"\0\0\0\0\x7f\0\0\0", "NegotiateProtocolVersion: 2130706432 unrecognized options claimed but only 0 bytes remain"),
        ]
        for tag, body, expected in cases:
            self.assertMalformed(BackendParser(), tag, body, expected)

    def test_datarow_on_decode(self) -> None:
        """
        A malformed DataRow is framed (it is relayed without decoding) and
        raises ProtocolError naming the problem when its values are decoded.
        """
        cases = [
            (b"\0\x02\0\0\0\x01a\xff\xff\xff\xfd", "DataRow: column 1 has negative length -3 (only -1, NULL, is allowed)"),
            (b"\0\x01\0\0\0\x09abc", "DataRow: column 0 claims 9 bytes but only 3 remain"),
            (b"\x01\0", "DataRow: 256 columns claimed but only 0 bytes remain"),
            (b"\0\x01\xff\xff\xff\xffzz", "DataRow: 2 unexpected bytes after the last column"),
            (b"\0", "DataRow: truncated column count"),
        ]
        for body, expected in cases:
            [row] = BackendParser().feed(b"D" + struct.pack(">i", len(body) + 4) + body)
            error = self.assertRaises(ProtocolError, getattr, row, "values")
            self.assertEqual(str(error), expected)

    def test_unsupported_protocol(self) -> None:
        """A StartupMessage for a protocol other than 3.x raises a precise ProtocolError."""
        for version, shown in ((2 << 16, "2.0"), (4 << 16 | 1, "4.1"), (1234 << 16 | 5555, "1234.5555")):
            parser = FrontendParser()
            error = self.assertRaises(ProtocolError, parser.feed, struct.pack(">ii", 9, version) + b"\0")
            self.assertEqual(str(error), f"StartupMessage: unsupported frontend protocol {shown}: the gateway supports 3.0 to 3.65535")

    def test_newer_minor_version(self) -> None:
        """A 3.x StartupMessage with x > 0 is accepted; the minor version is reported."""
        [message] = FrontendParser().feed(encode(StartupMessage({"user": "a"}, minor_version=2)))
        self.assertEqual(message.minor_version, 2)

    def test_messages_before_error(self) -> None:
        """Messages completed before the error in the same feed travel on the error."""
        parser = tagged_frontend()
        error = self.assertRaises(ProtocolError, parser.feed, encode(Query("SELECT 1")) + b"Q\x00\x00\x00\x05x")
        self.assertEqual(error.messages, [Query("SELECT 1")])

    def test_failed_stays_failed(self) -> None:
        """After an error, any further feed raises ProtocolError, even of valid bytes."""
        parser = BackendParser()
        self.assertRaises(ProtocolError, parser.feed, b"Z\x00\x00\x00\x05X")
        error = self.assertRaises(ProtocolError, parser.feed, encode(ReadyForQuery()))
        self.assertIn("parser already failed", str(error))


class PhaseTests(SynchronousTestCase):
    def test_switches_after_startup(self) -> None:
        """The frontend parser reads tagged messages right after a StartupMessage, in the same feed."""
        parser = FrontendParser()
        self.assertIs(parser.phase, FrontendPhase.STARTUP)
        self.assertEqual(parser.feed(encode(STARTUP) + encode(Query("x"))), [STARTUP, Query("x")])
        self.assertIs(parser.phase, FrontendPhase.TAGGED)

    def test_ssl_request_then_startup(self) -> None:
        """After SSLRequest and the proxy's answer, the StartupMessage parses."""
        parser = FrontendParser()
        self.assertEqual(parser.feed(encode(SSLRequest())), [SSLRequest()])
        self.assertIs(parser.phase, FrontendPhase.ENCRYPTION_PENDING)
        parser.encryption_answered()
        self.assertEqual(parser.feed(encode(STARTUP)), [STARTUP])
        self.assertRaises(RuntimeError, parser.encryption_answered)

    def test_bytes_after_ssl_request_refused(self) -> None:
        """
        Bytes sent after an SSLRequest before the proxy answered it are
        refused, in the same feed or a later one (CVE-2021-23214).
        """
        for request in (SSLRequest(), GSSENCRequest()):
            error = self.assertRaises(ProtocolError, FrontendParser().feed, encode(request) + encode(STARTUP))
            self.assertIn("before it was answered", str(error))
            parser = FrontendParser()
            parser.feed(encode(request))
            self.assertRaises(ProtocolError, parser.feed, b"\x00")
            self.assertTrue(parser.failed)

    def test_cancel_request(self) -> None:
        """A CancelRequest ends the stream: nothing may follow."""
        parser = FrontendParser()
        self.assertEqual(parser.feed(encode(CancelRequest(7, b"abcd"))), [CancelRequest(7, b"abcd")])
        self.assertIs(parser.phase, FrontendPhase.CANCELLED)
        self.assertRaises(ProtocolError, parser.feed, b"x")

    def test_backend_encryption_response(self) -> None:
        """
        The server's one-byte answer to an SSLRequest parses as an
        EncryptionResponse; bytes following it in the same read are refused
        (CVE-2021-23222); an old server's ErrorResponse parses as one.
        """
        parser = BackendParser()
        parser.expect_encryption_response()
        self.assertEqual(parser.feed(b"S"), [EncryptionResponse("S")])
        self.assertIs(parser.phase, BackendPhase.TAGGED)

        parser = BackendParser()
        parser.expect_encryption_response()
        error = self.assertRaises(ProtocolError, parser.feed, b"N" + encode(ReadyForQuery()))
        self.assertIn("6 bytes received right after the encryption response", str(error))

        parser = BackendParser()
        parser.expect_encryption_response()
        old = error_response("FATAL", "08P01", "unsupported frontend protocol")
        self.assertEqual(parser.feed(encode(old)), [old])


class DataRowTests(SynchronousTestCase):
    def test_lazy(self) -> None:
        """A framed DataRow holds only its bytes; values are decoded when asked for."""
        [row] = BackendParser().feed(encode(DataRow.from_values([b"1", None, b"abc"])))
        self.assertEqual(attrs.fields(DataRow)[0].name, "raw")
        self.assertEqual(len(attrs.fields(DataRow)), 1)
        self.assertEqual(row.column_count, 3)
        self.assertEqual(row.values, (b"1", None, b"abc"))

    def test_replace_columns(self) -> None:
        """Several columns can be replaced at once; the others keep their bytes."""
        row = DataRow.from_values([b"a", b"b", None, b"d"])
        self.assertEqual(row.replace_columns({0: None, 2: b"cc"}).values, (None, b"b", b"cc", b"d"))
        self.assertIs(row.replace_columns({}), row)
        self.assertRaises(IndexError, row.replace_column, 4, b"x")
        self.assertRaises(IndexError, row.replace_column, -1, b"x")


class RealServerTests(SynchronousTestCase):
    """Against a real PostgreSQL 15: the codec speaks what the server speaks."""

    def setUp(self) -> None:
        from tests.integration._postgres import start_postgres

        self.cluster = start_postgres(self, roles={"codec": None})

    def exchange(self, sock: socket.socket, parser: BackendParser, data: bytes, until: Callable[[list[Message]], bool]) -> list[Message]:
        sock.sendall(data)
        received: list[Message] = []
        while not until(received):
            chunk = sock.recv(65536)
            self.assertTrue(chunk, "server closed the connection")
            received.extend(parser.feed(chunk))
        return received

    def test_startup_and_queries(self) -> None:
        """
        A StartupMessage and queries encoded by the codec are understood by
        the server, and everything it answers parses; decoded messages
        re-encode to the server's exact bytes.
        """
        parser = BackendParser()
        ready = lambda n: lambda got: sum(isinstance(m, ReadyForQuery) for m in got) >= n
        with socket.create_connection((self.cluster.host, self.cluster.port), timeout=10) as sock:
            startup = StartupMessage({"user": "codec", "database": "postgres", "application_name": "hoopgw-test"})
            got = self.exchange(sock, parser, encode(startup), ready(1))
            self.assertIsInstance(got[0], AuthenticationOk)
            status = {m.name: m.value for m in got if isinstance(m, ParameterStatus)}
            self.assertTrue(status["server_version"].startswith("15"), status)
            self.assertEqual(status["application_name"], "hoopgw-test")
            [key] = [m for m in got if isinstance(m, BackendKeyData)]
            self.assertEqual(len(key.secret_key), 4)
            self.assertEqual(got[-1], ReadyForQuery("I"))

            got += self.exchange(sock, parser, encode(Query("SELECT 1 AS one; SELECT 'x'")), ready(1))
            answer = got[got.index(ReadyForQuery("I")) + 1 :]
            self.assertEqual([type(m) for m in answer], [RowDescription, DataRow, CommandComplete] * 2 + [ReadyForQuery])
            self.assertEqual(answer[0].fields, (FieldDescription("one", 0, 0, 23, 4, -1, 0),))
            self.assertEqual(answer[1].values, (b"1",))
            self.assertEqual(answer[2], CommandComplete("SELECT 1"))
            self.assertEqual(answer[3].fields[0].name, "?column?")
            self.assertEqual(answer[3].fields[0].type_oid, 25)
            self.assertEqual(answer[4].values, (b"x",))

            extended = [
                Parse("", "SELECT $1::int + 1 AS n, NULL::text AS t", (23,)),
                Bind("", "", (0,), (b"41",), (0,)),
                Describe("P", ""),
                Execute("", 0),
                Sync(),
            ]
            more = self.exchange(sock, parser, b"".join(map(encode, extended)), ready(1))
            self.assertEqual([type(m) for m in more], [ParseComplete, BindComplete, RowDescription, DataRow, CommandComplete, ReadyForQuery])
            self.assertEqual(more[3].values, (b"42", None))
            got += more

            error = self.exchange(sock, parser, encode(Query("SELEC 1")), ready(1))
            self.assertIsInstance(error[0], ErrorResponse)
            self.assertEqual((error[0].severity, error[0].code), ("ERROR", "42601"))
            self.assertIsNotNone(error[0].get("P"))
            got += error

            sock.sendall(encode(Terminate()))
            self.assertEqual(sock.recv(1), b"")
        for message in got:
            self.assertEqual(fresh(message), message.raw)
