"""
Sans-IO codec for the PostgreSQL frontend/backend protocol, version 3.

Bytes in, messages out (L{FrontendParser}, L{BackendParser}); messages in,
bytes out (L{encode}).  No transport in sight, in the manner of
C{twisted.protocols.haproxy._v2parser}: the proxy feeds what it reads and
writes what it gets back, and tests can chop and replay streams freely.

Hot path.  The gateway relays most messages untouched, so:

  - every parsed message keeps the exact bytes it was read from (C{raw}, the
    type byte and length included) and L{encode} returns them as they are,
    so forwarding never re-encodes;
  - L{DataRow}, L{CopyData} and L{GenericMessage} are I{lazy}: their only
    field is C{raw}, and their contents are decoded (and validated) only when
    asked for (L{DataRow.values}, L{CopyData.data}, ...).  A malformed DataRow
    is therefore reported when it is decoded, not when it is framed;
  - the other messages the gateway inspects are decoded when framed; they are
    rare next to DataRow and CopyData.

Building messages: decoded messages are frozen attrs values built from their
fields (C{Query("SELECT 1")}); lazy ones from class methods
(L{DataRow.from_values}, L{CopyData.from_data}, L{GenericMessage.from_body}).
C{attrs.evolve} on a parsed decoded message gives a message without C{raw},
which L{encode} encodes afresh from its fields.

Text fields are C{str} decoded from UTF-8 with C{surrogateescape}, so any
bytes round-trip exactly (a client_encoding other than UTF-8 shows up as
escaped surrogates rather than an error).  Secrets (passwords, SASL
payloads, cancel keys) are C{bytes} and never appear in C{repr}.

Safety.  Lengths are checked on the header, before anything is buffered
beyond what was received: a length below 4 or above the parser's maximum
raises L{ProtocolError} as soon as the 5 header bytes (4 in the startup
phase, 8 for the exact sizes of SSLRequest, GSSENCRequest and
CancelRequest) are in.  What may come before authentication is capped at
what it can legitimately be: a startup message at 10,000 bytes (the
server's MAX_STARTUP_PACKET_LENGTH), a password message at
L{MAX_PASSWORD_MESSAGE}.  Malformed bodies raise L{ProtocolError} naming the message
and the problem.  After an error a parser stays failed: every later C{feed}
raises.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import Any, ClassVar, TypeVar

from attrs import field, frozen

from hoopgw.errors import HoopgwError

__all__ = [
    "ProtocolError",
    "Message",
    "encode",
    "error_response",
    "FrontendParser",
    "BackendParser",
    "FrontendPhase",
    "BackendPhase",
    "DEFAULT_MAX_BACKEND_MESSAGE",
    "DEFAULT_MAX_FRONTEND_MESSAGE",
    "MAX_STARTUP_MESSAGE",
    "MAX_SMALL_FRONTEND_MESSAGE",
    "MAX_PASSWORD_MESSAGE",
    # Lazy messages (both directions where the protocol shares them).
    "GenericMessage",
    "DataRow",
    "DataRows",
    "CopyData",
    "CopyDone",
    # Frontend, startup phase.
    "StartupMessage",
    "SSLRequest",
    "GSSENCRequest",
    "CancelRequest",
    # Frontend, tagged.
    "Query",
    "Parse",
    "Bind",
    "Execute",
    "Describe",
    "Close",
    "Sync",
    "Flush",
    "Terminate",
    "FunctionCall",
    "CopyFail",
    "PasswordMessage",
    "SASLInitialResponse",
    "SASLResponse",
    # Backend.
    "EncryptionResponse",
    "AuthenticationOk",
    "AuthenticationCleartextPassword",
    "AuthenticationMD5Password",
    "AuthenticationSASL",
    "AuthenticationSASLContinue",
    "AuthenticationSASLFinal",
    "AuthenticationOther",
    "ParameterStatus",
    "BackendKeyData",
    "ReadyForQuery",
    "FieldDescription",
    "RowDescription",
    "CommandComplete",
    "ErrorResponse",
    "NoticeResponse",
    "ParseComplete",
    "BindComplete",
    "CloseComplete",
    "NoData",
    "ParameterDescription",
    "PortalSuspended",
    "EmptyQueryResponse",
    "CopyInResponse",
    "CopyOutResponse",
    "CopyBothResponse",
    "NotificationResponse",
    "NegotiateProtocolVersion",
]

# The server's own limits: MAX_STARTUP_PACKET_LENGTH, PQ_SMALL_MESSAGE_LIMIT.
MAX_STARTUP_MESSAGE = 10_000
MAX_SMALL_FRONTEND_MESSAGE = 10_000
# Rows and COPY data can be large; the server caps a field at 1 GiB.
DEFAULT_MAX_BACKEND_MESSAGE = 1 << 30
DEFAULT_MAX_FRONTEND_MESSAGE = 256 << 20
# A password message ('p') comes before authentication, from anyone.  The
# gateway asks clients for a cleartext password only, which is a token of at
# most 16 KiB (hoopgw.identity's MAX_TOKEN_LENGTH); 1 KiB of slack covers
# surrounding whitespace, the NUL and the header.  (The server's own limit,
# PG_MAX_AUTH_TOKEN_LENGTH, is 65535.)
MAX_PASSWORD_MESSAGE = 16 * 1024 + 1024

PROTOCOL_3 = 3
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
# Cancel keys are 4 bytes in 3.0; protocol 3.2 allows up to 256.
_MAX_SECRET_KEY = 256

_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
# The one-number unpackers, typed as what their format makes (a Struct's
# own say tuple[Any, ...]): bound once, no attribute lookup per read.
_unpack_i16: Callable[[bytes, int], tuple[int]] = _I16.unpack_from
_unpack_u16: Callable[[bytes, int], tuple[int]] = _U16.unpack_from
_unpack_i32: Callable[[bytes, int], tuple[int]] = _I32.unpack_from
_unpack_u32: Callable[[bytes, int], tuple[int]] = _U32.unpack_from
_pack_i32 = _I32.pack


class ProtocolError(HoopgwError):
    """
    The peer broke the protocol: a bad length, a malformed body, an
    unsupported version, data where none may be.  The message is safe to log
    (it names the message type and the problem, never field contents).

    @ivar messages: set by a parser that failed: the messages it parsed
        from the same data before the error.
    """

    messages: list[Message]


# -- helpers ---------------------------------------------------------------


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _cstr(value: str, what: str) -> bytes:
    data = value.encode("utf-8", "surrogateescape")
    if b"\0" in data:
        raise ValueError(f"{what} must not contain a NUL character")
    return data + b"\0"


def _cbytes(value: bytes, what: str) -> bytes:
    if b"\0" in value:
        raise ValueError(f"{what} must not contain a NUL byte")
    return value + b"\0"


def _int16s(values: Sequence[int]) -> bytes:
    return _U16.pack(len(values)) + b"".join(_I16.pack(v) for v in values)


def _nullable(value: bytes | None) -> bytes:
    if value is None:
        return b"\xff\xff\xff\xff"
    return _pack_i32(len(value)) + value


def _tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


def _pairs(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(k), str(v)) for k, v in items)


class _Reader:
    """Bounds-checked reads from one message's body; errors name the message."""

    __slots__ = ("buf", "end", "pos", "what")

    def __init__(self, buf: bytes, pos: int, what: str) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)
        self.what = what

    def error(self, problem: str) -> ProtocolError:
        return ProtocolError(f"{self.what}: {problem}")

    @property
    def left(self) -> int:
        return self.end - self.pos

    def _take(self, n: int, item: str) -> int:
        pos = self.pos
        if self.end - pos < n:
            raise self.error(f"truncated {item}: needs {n} bytes, {self.end - pos} left")
        self.pos = pos + n
        return pos

    def byte(self, item: str) -> int:
        return self.buf[self._take(1, item)]

    def int16(self, item: str) -> int:
        return _unpack_i16(self.buf, self._take(2, item))[0]

    def count16(self, item: str, min_size: int) -> int:
        """An Int16 count of items that each take at least C{min_size} bytes."""
        n = _unpack_u16(self.buf, self._take(2, f"{item} count"))[0]
        if n * min_size > self.left:
            raise self.error(f"{n} {item} claimed but only {self.left} bytes remain")
        return n

    def int32(self, item: str) -> int:
        return _unpack_i32(self.buf, self._take(4, item))[0]

    def uint32(self, item: str) -> int:
        return _unpack_u32(self.buf, self._take(4, item))[0]

    def raw_cstring(self, item: str) -> bytes:
        nul = self.buf.find(0, self.pos, self.end)
        if nul < 0:
            raise self.error(f"{item} is missing its NUL terminator")
        value = self.buf[self.pos : nul]
        self.pos = nul + 1
        return value

    def cstring(self, item: str) -> str:
        return _text(self.raw_cstring(item))

    def take(self, n: int, item: str) -> bytes:
        pos = self._take(n, item)
        return self.buf[pos : pos + n]

    def rest(self) -> bytes:
        value = self.buf[self.pos : self.end]
        self.pos = self.end
        return value

    def nullable(self, item: str) -> bytes | None:
        n = self.int32(f"{item} length")
        if n == -1:
            return None
        if n < 0:
            raise self.error(f"{item} has negative length {n} (only -1, NULL, is allowed)")
        return self.take(n, item)

    def done(self) -> None:
        if self.pos != self.end:
            raise self.error(f"{self.end - self.pos} unexpected bytes after the last field")


# -- message base classes ----------------------------------------------------


class Message:
    """
    A protocol message.  C{raw} is the exact bytes it was parsed from (type
    byte and length included), or None for a message built in code.
    """

    __slots__ = ()
    raw: bytes | None
    TAG: ClassVar[bytes]

    def _encode(self) -> bytes:
        raise NotImplementedError


@frozen
class _Decoded(Message):
    """A message whose fields are decoded when it is framed."""

    # init=False: attrs.evolve() must not carry stale bytes to a changed copy.
    raw: bytes | None = field(default=None, init=False, eq=False, repr=False)

    def _body(self) -> bytes:
        return b""

    def _encode(self) -> bytes:
        body = self._body()
        return self.TAG + _pack_i32(len(body) + 4) + body


_D = TypeVar("_D", bound=_Decoded)


def _parsed(message: _D, raw: bytes) -> _D:
    object.__setattr__(message, "raw", raw)
    return message


def _empty(cls: type[_D]) -> Callable[[bytes], _D]:
    """Decoder for a message with no body: one shared parsed instance."""
    canonical = cls.TAG + b"\x00\x00\x00\x04"
    shared = _parsed(cls(), canonical)
    name = cls.__name__

    def decode(raw: bytes) -> _D:
        if len(raw) != 5:
            raise ProtocolError(f"{name}: expected an empty body, got {len(raw) - 5} bytes")
        return shared

    return decode


# -- lazy messages -------------------------------------------------------------


@frozen
class GenericMessage(Message):
    """A tagged message the gateway does not inspect: type byte and body."""

    raw: bytes

    @classmethod
    def from_body(cls, tag: bytes, body: bytes) -> GenericMessage:
        if len(tag) != 1:
            raise ValueError("a message tag is exactly one byte")
        return cls(tag + _pack_i32(len(body) + 4) + body)

    @property
    def tag(self) -> bytes:
        return self.raw[:1]

    @property
    def body(self) -> bytes:
        return self.raw[5:]

    def _encode(self) -> bytes:
        return self.raw


@frozen
class CopyData(Message):
    """COPY payload (either direction); C{data} is sliced out on demand."""

    TAG: ClassVar[bytes] = b"d"
    raw: bytes

    @classmethod
    def from_data(cls, data: bytes) -> CopyData:
        return cls(b"d" + _pack_i32(len(data) + 4) + data)

    @property
    def data(self) -> bytes:
        return self.raw[5:]

    def _encode(self) -> bytes:
        return self.raw


@frozen
class DataRow(Message):
    """
    One result row.  Only C{raw} is stored; L{values} decodes (and validates)
    it when asked, and L{replace_column} splices new bytes in without
    decoding the other columns.
    """

    TAG: ClassVar[bytes] = b"D"
    raw: bytes

    @classmethod
    def from_values(cls, values: Sequence[bytes | None]) -> DataRow:
        body = _U16.pack(len(values)) + b"".join(_nullable(v) for v in values)
        return cls(b"D" + _pack_i32(len(body) + 4) + body)

    @property
    def column_count(self) -> int:
        if len(self.raw) < 7:
            raise ProtocolError("DataRow: truncated column count")
        return _unpack_u16(self.raw, 5)[0]

    @property
    def values(self) -> tuple[bytes | None, ...]:
        """The column values: bytes in the column's format, None for NULL."""
        raw = self.raw
        end = len(raw)
        count = self.column_count
        if count * 4 > end - 7:
            raise ProtocolError(f"DataRow: {count} columns claimed but only {end - 7} bytes remain")
        values: list[bytes | None] = []
        append = values.append
        pos = 7
        for i in range(count):
            if end - pos < 4:
                raise ProtocolError(f"DataRow: truncated length of column {i}")
            n = _unpack_i32(raw, pos)[0]
            pos += 4
            if n < 0:
                if n != -1:
                    raise ProtocolError(f"DataRow: column {i} has negative length {n} (only -1, NULL, is allowed)")
                append(None)
            else:
                if pos + n > end:
                    raise ProtocolError(f"DataRow: column {i} claims {n} bytes but only {end - pos} remain")
                append(raw[pos : pos + n])
                pos += n
        if pos != end:
            raise ProtocolError(f"DataRow: {end - pos} unexpected bytes after the last column")
        return tuple(values)

    def replace_column(self, index: int, value: bytes | None) -> DataRow:
        """This row with column C{index} set to C{value}; other bytes are copied as they are."""
        return self.replace_columns({index: value})

    def replace_columns(self, changes: Mapping[int, bytes | None]) -> DataRow:
        """
        This row with the given columns (index -> new value) replaced.  Only
        the columns up to the last replaced one are walked; the bytes around
        them are copied in slices.
        """
        if not changes:
            return self
        count = self.column_count
        for index in changes:
            if not 0 <= index < count:
                raise IndexError(f"DataRow has {count} columns, no column {index}")
        raw = self.raw
        end = len(raw)
        parts: list[bytes] = []
        copied = 5
        pos = 7
        for i in range(max(changes) + 1):
            if end - pos < 4:
                raise ProtocolError(f"DataRow: truncated length of column {i}")
            n = _unpack_i32(raw, pos)[0]
            if n < -1:
                raise ProtocolError(f"DataRow: column {i} has negative length {n} (only -1, NULL, is allowed)")
            after = pos + 4 + (max(0, n))
            if after > end:
                raise ProtocolError(f"DataRow: column {i} claims {n} bytes but only {end - pos - 4} remain")
            if i in changes:
                parts.append(raw[copied:pos])
                parts.append(_nullable(changes[i]))
                copied = after
            pos = after
        parts.append(raw[copied:])
        body = b"".join(parts)
        return _new_row(b"D" + _pack_i32(len(body) + 4) + body)

    def _encode(self) -> bytes:
        return self.raw


class DataRows(Message):
    """
    Consecutive DataRows framed as one slice of the read buffer, for a
    relay that inspects none of them (L{BackendParser.row_runs}): their
    bytes, exactly as received, and how many rows they are.
    """

    __slots__ = ("count", "raw")
    TAG: ClassVar[bytes] = b"D"

    def __init__(self, raw: bytes, count: int) -> None:
        self.raw: bytes = raw
        self.count = count

    def __repr__(self) -> str:
        return f"DataRows({self.count} rows, {len(self.raw)} bytes)"

    def _encode(self) -> bytes:
        return self.raw


_M = TypeVar("_M", bound=Message)


def _lazy(cls: type[_M]) -> Callable[[bytes], _M]:
    """
    Decoder for a lazy message: skips the attrs __init__ (the one field
    needs no conversion), a quarter of the per-message cost when relaying rows.
    """
    new = object.__new__
    setattr_ = object.__setattr__

    def decode(raw: bytes) -> _M:
        message: _M = new(cls)
        setattr_(message, "raw", raw)
        return message

    return decode


_lazy_generic = _lazy(GenericMessage)
_new_row = _lazy(DataRow)


# -- frontend: startup phase (untagged) ----------------------------------------


@frozen
class _Untagged(_Decoded):
    TAG: ClassVar[bytes] = b""

    def _encode(self) -> bytes:
        body = self._body()
        return _pack_i32(len(body) + 4) + body


@frozen
class StartupMessage(_Untagged):
    """
    The first message of a session: protocol 3.x and the parameters (user,
    database, options, application_name, ...) in the order sent.
    """

    parameters: tuple[tuple[str, str], ...] = field(converter=_pairs)
    minor_version: int = 0

    def get(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.parameters:
            if key == name:
                return value
        return default

    @property
    def user(self) -> str | None:
        return self.get("user")

    @property
    def database(self) -> str | None:
        # As the server does: the database defaults to the user name.
        return self.get("database") or self.user

    def _body(self) -> bytes:
        parts = [_pack_i32(PROTOCOL_3 << 16 | self.minor_version)]
        for key, value in self.parameters:
            if not key:
                raise ValueError("StartupMessage: a parameter name must not be empty")
            parts.append(_cstr(key, "StartupMessage parameter name"))
            parts.append(_cstr(value, "StartupMessage parameter value"))
        parts.append(b"\0")
        return b"".join(parts)


@frozen
class SSLRequest(_Untagged):
    def _body(self) -> bytes:
        return _pack_i32(SSL_REQUEST_CODE)


@frozen
class GSSENCRequest(_Untagged):
    def _body(self) -> bytes:
        return _pack_i32(GSSENC_REQUEST_CODE)


@frozen
class CancelRequest(_Untagged):
    """Cancel the query of backend C{process_id}, proven by its secret key."""

    process_id: int
    secret_key: bytes = field(repr=False)

    def _body(self) -> bytes:
        return _pack_i32(CANCEL_REQUEST_CODE) + _pack_i32(self.process_id) + self.secret_key


def _decode_startup(raw: bytes, max_secret: int = _MAX_SECRET_KEY) -> _Untagged:
    code = _unpack_i32(raw, 4)[0]
    if code == SSL_REQUEST_CODE or code == GSSENC_REQUEST_CODE:
        name = "SSLRequest" if code == SSL_REQUEST_CODE else "GSSENCRequest"
        if len(raw) != 8:
            raise ProtocolError(f"{name}: expected length 8, got {len(raw)}")
        return _parsed(SSLRequest() if code == SSL_REQUEST_CODE else GSSENCRequest(), raw)
    if code == CANCEL_REQUEST_CODE:
        r = _Reader(raw, 8, "CancelRequest")
        pid = r.int32("process id")
        if not 4 <= r.left <= max_secret:
            raise r.error(f"secret key of {r.left} bytes (expected 4 to {max_secret})")
        return _parsed(CancelRequest(pid, r.rest()), raw)
    major, minor = code >> 16 & 0xFFFF, code & 0xFFFF
    if major != PROTOCOL_3:
        raise ProtocolError(
            f"StartupMessage: unsupported frontend protocol {major}.{minor}: the gateway supports 3.0 to 3.{0xFFFF}"
        )
    r = _Reader(raw, 8, "StartupMessage")
    params: list[tuple[str, str]] = []
    while True:
        key = r.raw_cstring("parameter name")
        if not key:
            break
        params.append((_text(key), r.cstring(f"value of parameter {len(params)}")))
    r.done()
    return _parsed(StartupMessage(params, minor), raw)


# -- frontend: tagged ---------------------------------------------------------


@frozen
class Query(_Decoded):
    """Simple query: one string that may hold several statements."""

    TAG: ClassVar[bytes] = b"Q"
    query: str

    def _body(self) -> bytes:
        return _cstr(self.query, "Query text")


@frozen
class Parse(_Decoded):
    TAG: ClassVar[bytes] = b"P"
    statement: str
    query: str
    parameter_types: tuple[int, ...] = field(default=(), converter=_tuple)

    def _body(self) -> bytes:
        return (
            _cstr(self.statement, "Parse statement name")
            + _cstr(self.query, "Parse query")
            + _U16.pack(len(self.parameter_types))
            + b"".join(_U32.pack(t) for t in self.parameter_types)
        )


@frozen
class Bind(_Decoded):
    TAG: ClassVar[bytes] = b"B"
    portal: str
    statement: str
    parameter_formats: tuple[int, ...] = field(default=(), converter=_tuple)
    parameters: tuple[bytes | None, ...] = field(default=(), converter=_tuple)
    result_formats: tuple[int, ...] = field(default=(), converter=_tuple)

    def _body(self) -> bytes:
        return (
            _cstr(self.portal, "Bind portal name")
            + _cstr(self.statement, "Bind statement name")
            + _int16s(self.parameter_formats)
            + _U16.pack(len(self.parameters))
            + b"".join(_nullable(p) for p in self.parameters)
            + _int16s(self.result_formats)
        )


@frozen
class Execute(_Decoded):
    TAG: ClassVar[bytes] = b"E"
    portal: str
    max_rows: int = 0  # 0: no limit

    def _body(self) -> bytes:
        return _cstr(self.portal, "Execute portal name") + _U32.pack(self.max_rows)


@frozen
class _StatementOrPortal(_Decoded):
    # Siblings, not subclasses, so isinstance(m, Describe) never matches a Close.
    kind: str
    name: str

    def _body(self) -> bytes:
        if self.kind not in ("S", "P"):
            raise ValueError(f"{type(self).__name__} kind must be 'S' or 'P'")
        return self.kind.encode() + _cstr(self.name, f"{type(self).__name__} name")


@frozen
class Describe(_StatementOrPortal):
    """Describe a prepared statement (C{kind} "S") or a portal ("P")."""

    TAG: ClassVar[bytes] = b"D"


@frozen
class Close(_StatementOrPortal):
    """Close a prepared statement (C{kind} "S") or a portal ("P")."""

    TAG: ClassVar[bytes] = b"C"


@frozen
class Sync(_Decoded):
    TAG: ClassVar[bytes] = b"S"


@frozen
class Flush(_Decoded):
    TAG: ClassVar[bytes] = b"H"


@frozen
class Terminate(_Decoded):
    TAG: ClassVar[bytes] = b"X"


@frozen
class FunctionCall(_Decoded):
    TAG: ClassVar[bytes] = b"F"
    function_oid: int
    argument_formats: tuple[int, ...] = field(default=(), converter=_tuple)
    arguments: tuple[bytes | None, ...] = field(default=(), converter=_tuple)
    result_format: int = 0

    def _body(self) -> bytes:
        return (
            _U32.pack(self.function_oid)
            + _int16s(self.argument_formats)
            + _U16.pack(len(self.arguments))
            + b"".join(_nullable(a) for a in self.arguments)
            + _I16.pack(self.result_format)
        )


@frozen
class CopyDone(_Decoded):
    TAG: ClassVar[bytes] = b"c"


@frozen
class CopyFail(_Decoded):
    TAG: ClassVar[bytes] = b"f"
    message: str

    def _body(self) -> bytes:
        return _cstr(self.message, "CopyFail message")


@frozen
class PasswordMessage(_Decoded):
    """A cleartext (or MD5-hashed) password; for the gateway, the client's token."""

    TAG: ClassVar[bytes] = b"p"
    password: bytes = field(repr=False)

    def _body(self) -> bytes:
        return _cbytes(self.password, "password")


@frozen
class SASLInitialResponse(_Decoded):
    """C{data} is None when the client sent no initial response (length -1)."""

    TAG: ClassVar[bytes] = b"p"
    mechanism: str
    data: bytes | None = field(default=None, repr=False)

    def _body(self) -> bytes:
        return _cstr(self.mechanism, "SASL mechanism") + _nullable(self.data)


@frozen
class SASLResponse(_Decoded):
    TAG: ClassVar[bytes] = b"p"
    data: bytes = field(repr=False)

    def _body(self) -> bytes:
        return self.data


def _decode_query(raw: bytes) -> Query:
    r = _Reader(raw, 5, "Query")
    query = r.cstring("query string")
    r.done()
    return _parsed(Query(query), raw)


def _decode_parse(raw: bytes) -> Parse:
    r = _Reader(raw, 5, "Parse")
    statement = r.cstring("statement name")
    query = r.cstring("query string")
    n = r.count16("parameter types", 4)
    types = tuple(r.uint32("parameter type") for _ in range(n))
    r.done()
    return _parsed(Parse(statement, query, types), raw)


def _formats(r: _Reader, item: str) -> tuple[int, ...]:
    n = r.count16(item, 2)
    return tuple(r.int16(item) for _ in range(n))


def _values(r: _Reader, item: str) -> tuple[bytes | None, ...]:
    n = r.count16(item, 4)
    return tuple(r.nullable(f"{item[:-1]} {i}") for i in range(n))


def _decode_bind(raw: bytes) -> Bind:
    r = _Reader(raw, 5, "Bind")
    portal = r.cstring("portal name")
    statement = r.cstring("statement name")
    formats = _formats(r, "parameter formats")
    values = _values(r, "parameters")
    results = _formats(r, "result formats")
    r.done()
    return _parsed(Bind(portal, statement, formats, values, results), raw)


def _decode_execute(raw: bytes) -> Execute:
    r = _Reader(raw, 5, "Execute")
    portal = r.cstring("portal name")
    max_rows = r.uint32("maximum row count")
    r.done()
    return _parsed(Execute(portal, max_rows), raw)


def _describe_decoder(cls: type[_StatementOrPortal]) -> Callable[[bytes], _StatementOrPortal]:
    name = cls.__name__

    def decode(raw: bytes) -> _StatementOrPortal:
        r = _Reader(raw, 5, name)
        kind = r.byte("kind")
        if kind not in (0x53, 0x50):  # 'S', 'P'
            raise r.error(f"kind must be 'S' or 'P', got {bytes([kind])!r}")
        target = r.cstring("name")
        r.done()
        return _parsed(cls(chr(kind), target), raw)

    return decode


def _decode_function_call(raw: bytes) -> FunctionCall:
    r = _Reader(raw, 5, "FunctionCall")
    oid = r.uint32("function OID")
    formats = _formats(r, "argument formats")
    args = _values(r, "arguments")
    result = r.int16("result format")
    r.done()
    return _parsed(FunctionCall(oid, formats, args, result), raw)


def _decode_copy_fail(raw: bytes) -> CopyFail:
    r = _Reader(raw, 5, "CopyFail")
    message = r.cstring("error message")
    r.done()
    return _parsed(CopyFail(message), raw)


def _decode_password(raw: bytes) -> PasswordMessage:
    r = _Reader(raw, 5, "PasswordMessage")
    password = r.raw_cstring("password")
    r.done()
    return _parsed(PasswordMessage(password), raw)


def _decode_sasl_initial(raw: bytes) -> SASLInitialResponse:
    r = _Reader(raw, 5, "SASLInitialResponse")
    mechanism = r.cstring("mechanism name")
    data = r.nullable("initial response")
    r.done()
    return _parsed(SASLInitialResponse(mechanism, data), raw)


def _decode_sasl_response(raw: bytes) -> SASLResponse:
    return _parsed(SASLResponse(raw[5:]), raw)


# -- backend -------------------------------------------------------------------


@frozen
class EncryptionResponse(_Decoded):
    """
    The server's one-byte answer to SSLRequest/GSSENCRequest: "S" (go ahead
    with TLS), "G" (go ahead with GSSAPI) or "N" (no).
    """

    TAG: ClassVar[bytes] = b""
    answer: str

    def _encode(self) -> bytes:
        if self.answer not in ("S", "G", "N"):
            raise ValueError("EncryptionResponse answer must be 'S', 'G' or 'N'")
        return self.answer.encode()


@frozen
class _Authentication(_Decoded):
    TAG: ClassVar[bytes] = b"R"
    CODE: ClassVar[int]

    def _payload(self) -> bytes:
        return b""

    def _body(self) -> bytes:
        return _pack_i32(self.CODE) + self._payload()


@frozen
class AuthenticationOk(_Authentication):
    CODE: ClassVar[int] = 0


@frozen
class AuthenticationCleartextPassword(_Authentication):
    CODE: ClassVar[int] = 3


@frozen
class AuthenticationMD5Password(_Authentication):
    CODE: ClassVar[int] = 5
    salt: bytes

    def _payload(self) -> bytes:
        if len(self.salt) != 4:
            raise ValueError("AuthenticationMD5Password salt is exactly 4 bytes")
        return self.salt


@frozen
class AuthenticationSASL(_Authentication):
    CODE: ClassVar[int] = 10
    mechanisms: tuple[str, ...] = field(converter=_tuple)

    def _payload(self) -> bytes:
        for m in self.mechanisms:
            if not m:
                raise ValueError("AuthenticationSASL: a mechanism name must not be empty")
        return b"".join(_cstr(m, "SASL mechanism") for m in self.mechanisms) + b"\0"


@frozen
class _AuthenticationData(_Authentication):
    data: bytes = field(repr=False)

    def _payload(self) -> bytes:
        return self.data


@frozen
class AuthenticationSASLContinue(_AuthenticationData):
    CODE: ClassVar[int] = 11


@frozen
class AuthenticationSASLFinal(_AuthenticationData):
    CODE: ClassVar[int] = 12


@frozen
class AuthenticationOther(_Decoded):
    """Authentication requests the gateway does not handle (GSS, SSPI, ...)."""

    TAG: ClassVar[bytes] = b"R"
    code: int
    data: bytes = field(default=b"", repr=False)

    def _body(self) -> bytes:
        return _pack_i32(self.code) + self.data


@frozen
class ParameterStatus(_Decoded):
    TAG: ClassVar[bytes] = b"S"
    name: str
    value: str

    def _body(self) -> bytes:
        return _cstr(self.name, "ParameterStatus name") + _cstr(self.value, "ParameterStatus value")


@frozen
class BackendKeyData(_Decoded):
    TAG: ClassVar[bytes] = b"K"
    process_id: int
    secret_key: bytes = field(repr=False)

    def _body(self) -> bytes:
        return _pack_i32(self.process_id) + self.secret_key


@frozen
class ReadyForQuery(_Decoded):
    """C{status}: "I" idle, "T" in a transaction, "E" in a failed transaction."""

    TAG: ClassVar[bytes] = b"Z"
    status: str = "I"

    def _body(self) -> bytes:
        if self.status not in ("I", "T", "E"):
            raise ValueError("ReadyForQuery status must be 'I', 'T' or 'E'")
        return self.status.encode()


@frozen
class FieldDescription:
    """One column of a RowDescription; C{table_oid}/C{column} are 0 if not a table column."""

    name: str
    table_oid: int = 0
    column: int = 0
    type_oid: int = 25  # text
    type_size: int = -1
    type_modifier: int = -1
    format: int = 0


@frozen
class RowDescription(_Decoded):
    TAG: ClassVar[bytes] = b"T"
    fields: tuple[FieldDescription, ...] = field(converter=_tuple)

    def _body(self) -> bytes:
        parts = [_U16.pack(len(self.fields))]
        for f in self.fields:
            parts.append(_cstr(f.name, "RowDescription field name"))
            parts.append(struct.pack(">IhIhih", f.table_oid, f.column, f.type_oid, f.type_size, f.type_modifier, f.format))
        return b"".join(parts)


@frozen
class CommandComplete(_Decoded):
    TAG: ClassVar[bytes] = b"C"
    tag: str

    def _body(self) -> bytes:
        return _cstr(self.tag, "CommandComplete tag")


@frozen
class _Report(_Decoded):
    """
    Fields by one-letter code, in the order sent: S severity (localized),
    V severity, C SQLSTATE, M message, D detail, H hint, P position, ...
    """

    fields: tuple[tuple[str, str], ...] = field(converter=_pairs)

    def get(self, code: str, default: str | None = None) -> str | None:
        for key, value in self.fields:
            if key == code:
                return value
        return default

    @property
    def severity(self) -> str | None:
        return self.get("V") or self.get("S")

    @property
    def code(self) -> str | None:
        return self.get("C")

    @property
    def message(self) -> str | None:
        return self.get("M")

    @property
    def detail(self) -> str | None:
        return self.get("D")

    @property
    def hint(self) -> str | None:
        return self.get("H")

    def _body(self) -> bytes:
        parts = []
        for key, value in self.fields:
            if len(key) != 1 or not 0 < ord(key) < 256:
                raise ValueError(f"{type(self).__name__} field codes are single non-NUL Latin-1 characters")
            parts.append(key.encode("latin-1") + _cstr(value, f"{type(self).__name__} field"))
        parts.append(b"\0")
        return b"".join(parts)


@frozen
class ErrorResponse(_Report):
    __doc__ = _Report.__doc__
    TAG: ClassVar[bytes] = b"E"


@frozen
class NoticeResponse(_Report):
    __doc__ = _Report.__doc__
    TAG: ClassVar[bytes] = b"N"


@frozen
class ParseComplete(_Decoded):
    TAG: ClassVar[bytes] = b"1"


@frozen
class BindComplete(_Decoded):
    TAG: ClassVar[bytes] = b"2"


@frozen
class CloseComplete(_Decoded):
    TAG: ClassVar[bytes] = b"3"


@frozen
class NoData(_Decoded):
    TAG: ClassVar[bytes] = b"n"


@frozen
class PortalSuspended(_Decoded):
    TAG: ClassVar[bytes] = b"s"


@frozen
class EmptyQueryResponse(_Decoded):
    TAG: ClassVar[bytes] = b"I"


@frozen
class ParameterDescription(_Decoded):
    TAG: ClassVar[bytes] = b"t"
    type_oids: tuple[int, ...] = field(converter=_tuple)

    def _body(self) -> bytes:
        return _U16.pack(len(self.type_oids)) + b"".join(_U32.pack(t) for t in self.type_oids)


@frozen
class _CopyResponse(_Decoded):
    """C{format}: 0 text, 1 binary; C{column_formats} one per column."""

    format: int = 0
    column_formats: tuple[int, ...] = field(default=(), converter=_tuple)

    def _body(self) -> bytes:
        return struct.pack(">b", self.format) + _int16s(self.column_formats)


@frozen
class CopyInResponse(_CopyResponse):
    TAG: ClassVar[bytes] = b"G"


@frozen
class CopyOutResponse(_CopyResponse):
    TAG: ClassVar[bytes] = b"H"


@frozen
class CopyBothResponse(_CopyResponse):
    TAG: ClassVar[bytes] = b"W"


@frozen
class NotificationResponse(_Decoded):
    TAG: ClassVar[bytes] = b"A"
    process_id: int
    channel: str
    payload: str = ""

    def _body(self) -> bytes:
        return (
            _pack_i32(self.process_id)
            + _cstr(self.channel, "NotificationResponse channel")
            + _cstr(self.payload, "NotificationResponse payload")
        )


@frozen
class NegotiateProtocolVersion(_Decoded):
    TAG: ClassVar[bytes] = b"v"
    newest_minor: int
    unrecognized_options: tuple[str, ...] = field(default=(), converter=_tuple)

    def _body(self) -> bytes:
        return (
            _pack_i32(self.newest_minor)
            + _pack_i32(len(self.unrecognized_options))
            + b"".join(_cstr(o, "protocol option name") for o in self.unrecognized_options)
        )


def _decode_authentication(raw: bytes) -> _Decoded:
    r = _Reader(raw, 5, "Authentication")
    code = r.int32("authentication code")
    message: _Decoded
    if code == 0:
        r.what = "AuthenticationOk"
        message = AuthenticationOk()
    elif code == 3:
        r.what = "AuthenticationCleartextPassword"
        message = AuthenticationCleartextPassword()
    elif code == 5:
        r.what = "AuthenticationMD5Password"
        message = AuthenticationMD5Password(r.take(4, "salt"))
    elif code == 10:
        r.what = "AuthenticationSASL"
        mechanisms = []
        while name := r.raw_cstring("mechanism name"):
            mechanisms.append(_text(name))
        message = AuthenticationSASL(mechanisms)
    elif code == 11:
        message = AuthenticationSASLContinue(r.rest())
    elif code == 12:
        message = AuthenticationSASLFinal(r.rest())
    else:
        message = AuthenticationOther(code, r.rest())
    r.done()
    return _parsed(message, raw)


def _decode_parameter_status(raw: bytes) -> ParameterStatus:
    r = _Reader(raw, 5, "ParameterStatus")
    name = r.cstring("parameter name")
    value = r.cstring("parameter value")
    r.done()
    return _parsed(ParameterStatus(name, value), raw)


def _decode_backend_key_data(raw: bytes) -> BackendKeyData:
    r = _Reader(raw, 5, "BackendKeyData")
    pid = r.int32("process id")
    if not 4 <= r.left <= _MAX_SECRET_KEY:
        raise r.error(f"secret key of {r.left} bytes (expected 4 to {_MAX_SECRET_KEY})")
    return _parsed(BackendKeyData(pid, r.rest()), raw)


def _decode_ready_for_query(raw: bytes) -> ReadyForQuery:
    r = _Reader(raw, 5, "ReadyForQuery")
    status = r.byte("transaction status")
    if status not in (0x49, 0x54, 0x45):  # I, T, E
        raise r.error(f"transaction status must be 'I', 'T' or 'E', got {bytes([status])!r}")
    r.done()
    return _parsed(ReadyForQuery(chr(status)), raw)


_FIELD = struct.Struct(">IhIhih")


def _decode_row_description(raw: bytes) -> RowDescription:
    r = _Reader(raw, 5, "RowDescription")
    # A field is at least its name's NUL plus 18 bytes.
    n = r.count16("fields", 19)
    fields = []
    for i in range(n):
        name = r.cstring(f"name of field {i}")
        pos = r._take(_FIELD.size, f"field {i}")
        fields.append(FieldDescription(name, *_FIELD.unpack_from(raw, pos)))
    r.done()
    return _parsed(RowDescription(fields), raw)


def _decode_command_complete(raw: bytes) -> CommandComplete:
    r = _Reader(raw, 5, "CommandComplete")
    tag = r.cstring("command tag")
    r.done()
    return _parsed(CommandComplete(tag), raw)


def _notice_decoder(cls: type[_Report]) -> Callable[[bytes], _Report]:
    name = cls.__name__

    def decode(raw: bytes) -> _Report:
        r = _Reader(raw, 5, name)
        fields = []
        while code := r.byte("field code"):
            fields.append((chr(code), r.cstring(f"field {chr(code)!r}")))
        r.done()
        return _parsed(cls(fields), raw)

    return decode


def _decode_parameter_description(raw: bytes) -> ParameterDescription:
    r = _Reader(raw, 5, "ParameterDescription")
    n = r.count16("parameter types", 4)
    oids = tuple(r.uint32("parameter type") for _ in range(n))
    r.done()
    return _parsed(ParameterDescription(oids), raw)


def _copy_response_decoder(cls: type[_CopyResponse]) -> Callable[[bytes], _CopyResponse]:
    name = cls.__name__

    def decode(raw: bytes) -> _CopyResponse:
        r = _Reader(raw, 5, name)
        overall = r.byte("format")
        formats = _formats(r, "column formats")
        r.done()
        return _parsed(cls(overall - 256 if overall > 127 else overall, formats), raw)

    return decode


def _decode_notification(raw: bytes) -> NotificationResponse:
    r = _Reader(raw, 5, "NotificationResponse")
    pid = r.int32("process id")
    channel = r.cstring("channel name")
    payload = r.cstring("payload")
    r.done()
    return _parsed(NotificationResponse(pid, channel, payload), raw)


def _decode_negotiate(raw: bytes) -> NegotiateProtocolVersion:
    r = _Reader(raw, 5, "NegotiateProtocolVersion")
    minor = r.int32("newest minor version")
    n = r.int32("option count")
    if n < 0 or n > r.left:
        raise r.error(f"{n} unrecognized options claimed but only {r.left} bytes remain")
    options = tuple(r.cstring(f"option {i}") for i in range(n))
    r.done()
    return _parsed(NegotiateProtocolVersion(minor, options), raw)


# -- encoding ------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """
    The wire bytes of C{message}: the bytes it was parsed from if it was
    parsed (so relaying is exact and free), else freshly encoded.  Raises
    ValueError for a value that cannot be sent (a NUL inside a string, an
    out-of-range integer, ...).
    """
    raw = message.raw
    if raw is not None:
        return raw
    try:
        return message._encode()
    except struct.error as e:
        raise ValueError(f"{type(message).__name__}: {e}") from None


def error_response(
    severity: str, code: str, message: str, detail: str | None = None, hint: str | None = None
) -> ErrorResponse:
    """
    An ErrorResponse as the server would send it, e.g.
    C{error_response("FATAL", "28P01", "token rejected")}.
    """
    fields = [("S", severity), ("V", severity), ("C", code), ("M", message)]
    if detail is not None:
        fields.append(("D", detail))
    if hint is not None:
        fields.append(("H", hint))
    return ErrorResponse(fields)


# -- parsers -------------------------------------------------------------------

_Decoder = Callable[[bytes], Message]

# What one decoder remembers (see _remembered): the latest this many distinct
# messages, each at most this long.
_REMEMBERED = 256
_REMEMBERED_LONGEST = 2048


def _remembered(decode: Callable[[bytes], _D]) -> Callable[[bytes], _D]:
    """
    C{decode}, remembering what it made of recent messages.  A decoder is a
    function of the bytes alone and its messages are immutable, so the
    answers a server repeats (the same query's RowDescription, a "SELECT 1"
    tag, ReadyForQuery) are decoded once, not for every statement: a dict
    lookup instead of a parse and an attrs object (2-6 µs each).  Bounded:
    long messages are not kept, and a full table starts again.
    """
    seen: dict[bytes, _D] = {}

    def decode_remembered(raw: bytes) -> _D:
        message = seen.get(raw)
        if message is None:
            message = decode(raw)  # (raises for a malformed message: nothing kept)
            if len(raw) <= _REMEMBERED_LONGEST:
                if len(seen) >= _REMEMBERED:
                    seen.clear()
                seen[raw] = message
        return message

    return decode_remembered


_FRONTEND_DECODERS: dict[int, _Decoder] = {
    ord("Q"): _decode_query,
    ord("P"): _decode_parse,
    ord("B"): _decode_bind,
    ord("E"): _remembered(_decode_execute),
    ord("D"): _remembered(_describe_decoder(Describe)),
    ord("C"): _describe_decoder(Close),
    ord("S"): _empty(Sync),
    ord("H"): _empty(Flush),
    ord("X"): _empty(Terminate),
    ord("F"): _decode_function_call,
    ord("d"): _lazy(CopyData),
    ord("c"): _empty(CopyDone),
    ord("f"): _decode_copy_fail,
    ord("p"): _decode_password,
}

# As the server: only these may be large; the rest are capped small.
_LARGE_FRONTEND = frozenset(ord(c) for c in "QPBFdp")
_SMALL_FRONTEND = frozenset(_FRONTEND_DECODERS) - _LARGE_FRONTEND

_AUTH_RESPONSE_DECODERS: dict[type, _Decoder] = {
    PasswordMessage: _decode_password,
    SASLInitialResponse: _decode_sasl_initial,
    SASLResponse: _decode_sasl_response,
    GenericMessage: _lazy_generic,
}

_BACKEND_DECODERS: dict[int, _Decoder] = {
    ord("R"): _decode_authentication,
    ord("S"): _decode_parameter_status,
    ord("K"): _decode_backend_key_data,
    ord("Z"): _remembered(_decode_ready_for_query),
    ord("T"): _remembered(_decode_row_description),
    ord("D"): _lazy(DataRow),
    ord("C"): _remembered(_decode_command_complete),
    ord("E"): _notice_decoder(ErrorResponse),
    ord("N"): _notice_decoder(NoticeResponse),
    ord("1"): _empty(ParseComplete),
    ord("2"): _empty(BindComplete),
    ord("3"): _empty(CloseComplete),
    ord("n"): _empty(NoData),
    ord("t"): _decode_parameter_description,
    ord("s"): _empty(PortalSuspended),
    ord("I"): _empty(EmptyQueryResponse),
    ord("G"): _copy_response_decoder(CopyInResponse),
    ord("H"): _copy_response_decoder(CopyOutResponse),
    ord("W"): _copy_response_decoder(CopyBothResponse),
    ord("d"): _lazy(CopyData),
    ord("c"): _empty(CopyDone),
    ord("A"): _decode_notification,
    ord("v"): _decode_negotiate,
}

# Decoding bugs must still surface as the codec's own error (the contract
# is "only ProtocolError"), so these are converted at the parser's edge.
_DECODING_SLIPS = (struct.error, IndexError, ValueError, OverflowError)


_DATA_ROW = ord("D")


class _Framer:
    """
    Tagged-message framing shared by both directions.

    Received chunks are kept in a list and joined only once enough bytes
    are in to make progress (a header, or the whole pending message), so a
    large message arriving in many chunks costs one join, not one per chunk.
    """

    _what = "message"

    def __init__(self, decoders: dict[int, _Decoder], max_message_length: int) -> None:
        self._decoders = decoders
        self._max = max_message_length
        self._limits: dict[int, int] = {}
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 5
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as messages."""
        return self._have

    @property
    def failed(self) -> bool:
        return self._error is not None

    def feed(self, data: bytes) -> list[Message]:
        """
        Add received bytes; return the messages they complete, in order.
        Raises L{ProtocolError} (and stays failed) if the peer broke the
        protocol; the messages completed before the error in this call are
        on the error as C{messages}.
        """
        if self._error is not None:
            raise ProtocolError(f"parser already failed: {self._error}")
        if not data:
            return []
        self._chunks.append(bytes(data))
        self._have += len(data)
        if self._have < self._need:
            return []
        chunks = self._chunks
        buf = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        out: list[Message] = []
        try:
            pos = self._parse(buf, out)
        except ProtocolError as e:
            self._fail(e, out)
            raise
        except _DECODING_SLIPS as e:
            error = ProtocolError(f"malformed {self._what}: {e}")
            self._fail(error, out)
            raise error from e
        if pos == len(buf):
            self._chunks = []
            self._have = 0
        else:
            rest = buf if pos == 0 else buf[pos:]
            self._chunks = [rest]
            self._have = len(rest)
        return out

    def _fail(self, error: ProtocolError, out: list[Message]) -> None:
        error.messages = out
        self._error = error
        self._chunks = []
        self._have = 0

    def _parse(self, buf: bytes, out: list[Message]) -> int:
        return self._parse_tagged(buf, 0, out)

    def _parse_tagged(self, buf: bytes, pos: int, out: list[Message], runs: bool = False) -> int:
        """
        Frame the messages of C{buf} from C{pos} into C{out}; with C{runs},
        each run of DataRows as one L{DataRows} (L{BackendParser.row_runs}).
        """
        end = len(buf)
        decoders = self._decoders
        limits = self._limits
        maximum = self._max
        row_limit = limits.get(_DATA_ROW, maximum) if limits else maximum
        append = out.append
        while end - pos >= 5:
            length = _unpack_i32(buf, pos + 1)[0]
            tag = buf[pos]
            if length < 4 or length > (limits.get(tag, maximum) if limits else maximum):
                raise self._bad_length(tag, length)
            stop = pos + length + 1
            if stop > end:
                self._need = stop - pos
                return pos
            if runs and tag == _DATA_ROW:
                start, count, pos = pos, 1, stop
                # The run's other rows: each checked as above; one that is
                # not all in is left for the outer loop (and the next read).
                while end - pos >= 5 and buf[pos] == _DATA_ROW:
                    length = _unpack_i32(buf, pos + 1)[0]
                    if length < 4 or length > row_limit:
                        raise self._bad_length(_DATA_ROW, length)
                    stop = pos + length + 1
                    if stop > end:
                        break
                    pos = stop
                    count += 1
                append(DataRows(buf if (start == 0 and pos == end) else buf[start:pos], count))
                continue
            raw = buf if (pos == 0 and stop == end) else buf[pos:stop]
            decoder = decoders.get(tag)
            append(decoder(raw) if decoder is not None else _lazy_generic(raw))
            pos = stop
        self._need = 5
        return pos

    def _bad_length(self, tag: int, length: int) -> ProtocolError:
        limit = self._limits.get(tag, self._max)
        problem = "is below the minimum of 4" if length < 4 else f"exceeds the limit of {limit} bytes"
        return ProtocolError(f"{self._what} of type {bytes([tag])!r} declares length {length}, which {problem}")


class FrontendPhase(Enum):
    STARTUP = "startup"
    ENCRYPTION_PENDING = "encryption-pending"
    TAGGED = "tagged"
    CANCELLED = "cancelled"


class FrontendParser(_Framer):
    """
    Frames what a client sends.

    It starts in the startup phase (untagged messages: L{StartupMessage},
    L{SSLRequest}, L{GSSENCRequest}, L{CancelRequest}) and switches itself to
    tagged messages right after a StartupMessage (the protocol allows
    nothing else).

    After an SSLRequest or GSSENCRequest the client must wait for the
    answer, so the parser refuses any byte until the proxy, having answered
    (and, for "S", started TLS), calls L{encryption_answered}: bytes sent
    ahead of the answer would otherwise be taken as if they came through
    TLS (CVE-2021-23214).  After a CancelRequest nothing more may come.

    Password-type messages ('p') are decoded as L{PasswordMessage} unless
    the proxy, having asked for SASL, says otherwise with
    L{expect_auth_response}.
    """

    _what = "frontend message"

    def __init__(
        self,
        *,
        max_message_length: int = DEFAULT_MAX_FRONTEND_MESSAGE,
        max_small_message_length: int = MAX_SMALL_FRONTEND_MESSAGE,
        max_startup_length: int = MAX_STARTUP_MESSAGE,
        max_password_message_length: int = MAX_PASSWORD_MESSAGE,
    ) -> None:
        super().__init__(dict(_FRONTEND_DECODERS), max_message_length)
        self._limits = {tag: max_small_message_length for tag in _SMALL_FRONTEND}
        self._limits[ord("p")] = max_password_message_length
        self._max_startup = max_startup_length
        self.phase = FrontendPhase.STARTUP
        self._need = 4

    def encryption_answered(self) -> None:
        """The proxy has answered the SSLRequest/GSSENCRequest; startup continues."""
        if self.phase is not FrontendPhase.ENCRYPTION_PENDING:
            raise RuntimeError(f"no encryption request is pending (phase {self.phase.value})")
        self.phase = FrontendPhase.STARTUP
        self._need = 4

    def expect_auth_response(self, kind: type[Message]) -> None:
        """
        Decode the following 'p' messages as C{kind}: L{PasswordMessage}
        (the default), L{SASLInitialResponse}, L{SASLResponse}, or
        L{GenericMessage} to leave them undecoded (GSSAPI/SSPI tokens).
        """
        try:
            self._decoders[ord("p")] = _AUTH_RESPONSE_DECODERS[kind]
        except KeyError:
            raise ValueError(f"not an authentication response type: {kind!r}") from None

    def feed(self, data: bytes) -> list[Message]:
        if data and self._error is None and self.phase in (FrontendPhase.ENCRYPTION_PENDING, FrontendPhase.CANCELLED):
            error = ProtocolError(self._unexpected(len(data)))
            self._fail(error, [])
            raise error
        return super().feed(data)

    def _unexpected(self, n: int) -> str:
        if self.phase is FrontendPhase.CANCELLED:
            return f"{n} bytes received after a CancelRequest"
        return f"{n} bytes received after an encryption request, before it was answered"

    def _parse(self, buf: bytes, out: list[Message]) -> int:
        pos = 0
        end = len(buf)
        while self.phase is FrontendPhase.STARTUP:
            if end - pos < 4:
                self._need = 4
                return pos
            length = _unpack_i32(buf, pos)[0]
            if length < 8 or length > self._max_startup:
                problem = "is below the minimum of 8" if length < 8 else f"exceeds the limit of {self._max_startup} bytes"
                raise ProtocolError(f"startup message declares length {length}, which {problem}")
            if end - pos < 8:
                # The code says which message it is, and requests have exact
                # sizes: checked before their bodies are waited for.
                self._need = 8
                return pos
            _check_request_length(_unpack_i32(buf, pos + 4)[0], length)
            stop = pos + length
            if stop > end:
                self._need = length
                return pos
            message = _decode_startup(buf if (pos == 0 and stop == end) else buf[pos:stop])
            out.append(message)
            pos = stop
            if isinstance(message, StartupMessage):
                self.phase = FrontendPhase.TAGGED
            elif isinstance(message, CancelRequest):
                self.phase = FrontendPhase.CANCELLED
            else:
                self.phase = FrontendPhase.ENCRYPTION_PENDING
            if self.phase is not FrontendPhase.TAGGED and pos < end:
                raise ProtocolError(self._unexpected(end - pos))
        return self._parse_tagged(buf, pos, out)


def _check_request_length(code: int, length: int) -> None:
    """SSLRequest and GSSENCRequest are exactly 8 bytes, a CancelRequest 16 to 268."""
    if code == SSL_REQUEST_CODE or code == GSSENC_REQUEST_CODE:
        if length != 8:
            name = "SSLRequest" if code == SSL_REQUEST_CODE else "GSSENCRequest"
            raise ProtocolError(f"{name} declares length {length}; it is always 8")
    elif code == CANCEL_REQUEST_CODE:
        if not 16 <= length <= 12 + _MAX_SECRET_KEY:
            raise ProtocolError(f"CancelRequest declares length {length}, expected 16 to {12 + _MAX_SECRET_KEY}")


class BackendPhase(Enum):
    TAGGED = "tagged"
    ENCRYPTION_RESPONSE = "encryption-response"


class BackendParser(_Framer):
    """
    Frames what a server sends: tagged messages throughout, except the
    one-byte answer to an SSLRequest/GSSENCRequest, which the proxy
    announces with L{expect_encryption_response} after sending the request.
    Bytes following that answer in the same read are refused: a server (or
    a man in the middle) must not slip plaintext in ahead of TLS
    (CVE-2021-23222).
    """

    _what = "backend message"

    def __init__(self, *, max_message_length: int = DEFAULT_MAX_BACKEND_MESSAGE) -> None:
        super().__init__(_BACKEND_DECODERS, max_message_length)
        self.phase = BackendPhase.TAGGED
        #: Frame each run of consecutive DataRows as one L{DataRows} (a slice
        #: of the read buffer, its rows counted, none decoded): for a relay
        #: that reads no row, so a row costs its framing and nothing more.
        #: Set before each L{feed} by whoever knows (it may change between).
        self.row_runs = False

    def expect_encryption_response(self) -> None:
        """The next byte is the answer to an SSLRequest/GSSENCRequest."""
        if self._have:
            raise RuntimeError("an encryption request must be sent before anything else is received")
        self.phase = BackendPhase.ENCRYPTION_RESPONSE
        self._need = 1

    def _parse(self, buf: bytes, out: list[Message]) -> int:
        if self.phase is BackendPhase.ENCRYPTION_RESPONSE:
            answer = buf[0]
            # A server that predates encryption answers with an ErrorResponse.
            if answer != 0x45:  # 'E'
                if answer not in (0x53, 0x47, 0x4E):  # S, G, N
                    raise ProtocolError(f"encryption response must be 'S', 'G', 'N' or an error, got {bytes([answer])!r}")
                self.phase = BackendPhase.TAGGED
                out.append(_parsed(EncryptionResponse(chr(answer)), buf[:1]))
                if len(buf) > 1:
                    raise ProtocolError(f"{len(buf) - 1} bytes received right after the encryption response")
                self._need = 5
                return 1
            self.phase = BackendPhase.TAGGED
        return self._parse_tagged(buf, 0, out, self.row_runs)

