"""
Sans-IO codec for RESP, the Redis serialization protocol, versions 2 and 3.

Bytes in, values out; values in, bytes out.  No transport in sight: a front
end feeds what it reads and writes what L{encode} returns, and tests chop
and replay streams freely.

    requests = RequestParser()     # what a client sends
    for command in requests.feed(data):
        command.name, command.args # "GET", (b"GET", b"k")

    replies = ReplyParser()        # what the server sends
    for reply in replies.feed(data):
        ...                        # bytes, int, Null.BULK, Map(...), Push(...), ...

    encode(reply) / encode_command(b"GET", b"k") / error_reply("denied", code="NOPERM")

Requests (L{RequestParser}) are parsed as redis-server parses them
(C{processMultibulkBuffer} and C{processInlineBuffer} in C{networking.c}):
arrays of bulk strings, or inline commands split like C{sdssplitargs}
(quotes, C{\\xHH} escapes, a line ending in LF alone).  Where redis-server is
lenient in ways no client relies on, the parser refuses instead: it does not
skip the two bytes after a length or a bulk string without looking at them,
does not wait for a CR after an LF, and rejects a NUL in an inline command
(redis-server never runs one: its C{strchr} stops at the NUL and waits).
A request either means for the gateway exactly what it means for
redis-server, or it is refused.

Replies (L{ReplyParser}) are parsed strictly, every RESP2 and RESP3 type:
the server is redis-server, which never sends a malformed line, so a
malformed one means a desynchronised stream, and guessing would put a reply
in front of the wrong command.  Lines end in CRLF, lengths and integers are
canonical decimals, a push is only ever a whole message.

Not supported: RESP3 streamed strings and aggregates (C{$?}, C{*?}, C{;},
C{.}).  redis-server never sends them (no command replies that way, and
modules' postponed lengths are filled in before sending) and neither hiredis
nor redis-py reads them, so a gateway that accepted them would have no
client to pass them to.  They raise L{ProtocolError} by name.

Values.  A bulk string is C{bytes}, an integer C{int}, a boolean C{bool}, an
array a C{tuple}; the three nulls (C{$-1}, C{*-1}, C{_}) are the members of
L{Null}, so a reply re-encodes as it came; the rest are small frozen
classes (L{SimpleString}, L{Error}, L{Double}, L{BigNumber}, L{Verbatim},
L{Map}, L{Set}, L{Push}, L{Attributed}).  A parsed command is a L{Command}.

Limits.  Each parser bounds the length of a bulk string, the number of
elements of one aggregate, the nesting depth, the length of a line and the
length of a whole message (its wire bytes), all keyword arguments and
plain attributes (a front end can tighten them until the client has
authenticated, as redis-server does).  A violation raises L{ProtocolError}
as soon as a header shows it, before the bytes are waited for.  After an
error a parser stays failed.

Hot path.  Received bytes wait in one C{bytearray} and are parsed only once
they can complete something (the rest of a bulk string, or a line end); the
parser consumes every complete line and bulk string, keeping its place in
an unfinished message, so the bytes waiting are never more than one
unfinished line or bulk string: no message is re-parsed from its start and
no buffer is copied once per chunk.  Lines are found with C{bytes.find}; the
lengths most used are looked up in a table rather than validated and
converted.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar, Union

from attrs import field, frozen

__all__ = [
    "ProtocolError",
    "RequestParser",
    "ReplyParser",
    "Command",
    "Reply",
    "Null",
    "SimpleString",
    "Error",
    "Double",
    "BigNumber",
    "Verbatim",
    "Map",
    "Set",
    "Push",
    "Attributed",
    "encode",
    "encode_command",
    "error_reply",
    "keyword",
    "DEFAULT_MAX_BULK_LENGTH",
    "DEFAULT_MAX_ELEMENTS",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_LINE_LENGTH",
    "DEFAULT_MAX_MESSAGE_LENGTH",
]

# redis-server takes bulk strings up to proto-max-bulk-len, 512 MB.  A gateway
# holds a whole message before it decides on it, per session, so its default
# is lower: above nearly every real value, far below what a few sessions
# could use to exhaust memory.  Raise it per listener when values are bigger.
DEFAULT_MAX_BULK_LENGTH = 16 * 1024 * 1024
# Per aggregate: arguments of one command, elements of one reply array
# (a map counts keys and values).
DEFAULT_MAX_ELEMENTS = 1024 * 1024
# COMMAND DOCS nests 12 levels; a Lua script may return a table 100 deep
# (redis-py stops at 200); a parser bomb nests millions.  Parsing keeps no
# Python stack per level, but encode() recurses, three frames a level: stay
# well below 300.
DEFAULT_MAX_DEPTH = 128
# redis-server's PROTO_INLINE_MAX_SIZE, for inline commands and every other line.
DEFAULT_MAX_LINE_LENGTH = 64 * 1024
# The wire bytes of one command or one reply: what one session can make the
# gateway hold at once.
DEFAULT_MAX_MESSAGE_LENGTH = 64 * 1024 * 1024

_CR = 13
_LF = 10


class ProtocolError(Exception):
    """
    The peer broke the protocol: a malformed line, a bad length, a limit
    exceeded, a type that cannot be where it is.  The message names the
    problem and quotes at most a few (escaped) bytes of the input, so it is
    safe to log and to return to a client (C{error_reply("Protocol error: "
    + str(e))}, then close, as redis-server does).  C{messages}: what the
    same C{feed} completed before the error (L{_Parser.feed}).
    """

    messages: Sequence[Any] = ()


def _show(data: bytes, limit: int = 24) -> str:
    """A short quotation of peer bytes for an error message, escaped as Python escapes bytes."""
    quoted = repr(data[:limit])[1:]
    return quoted[:-1] + "..." + quoted[-1] if len(data) > limit else quoted


# -- values -------------------------------------------------------------------


class Null(enum.Enum):
    """
    The three ways to say nothing, kept apart so a reply re-encodes as it
    came: RESP2 clients tell a null bulk string from a null array.  Each
    member's value is its encoding.
    """

    BULK = b"$-1\r\n"
    ARRAY = b"*-1\r\n"
    NULL = b"_\r\n"


_NULL_BULK = Null.BULK
_NULL_ARRAY = Null.ARRAY
_NULL = Null.NULL


def _no_line_breaks(value: bytes, what: str) -> None:
    if b"\r" in value or b"\n" in value:
        raise ValueError(f"{what} cannot contain CR or LF: {_show(value)}")


@frozen
class SimpleString:
    """C{+OK}: a status reply, on one line."""

    value: bytes


_ERROR_CODE = re.compile(rb"[A-Z][A-Z0-9_]*")


@frozen
class Error:
    """
    An error reply: C{-CODE message} (simple), or C{!len} (RESP3 bulk, any
    bytes) when C{bulk}.  C{message} is the whole text, code included.
    Build one from untrusted text with L{Error.from_message}.
    """

    message: bytes
    bulk: bool = False

    @property
    def code(self) -> bytes:
        """The first word, by convention an upper-case code (C{ERR}, C{WRONGTYPE}, C{NOPERM})."""
        return self.message.split(b" ", 1)[0]

    @classmethod
    def from_message(cls, message: str | bytes, *, code: str | bytes = "ERR") -> Error:
        """
        A simple error C{-<code> <message>}.  CR and LF in C{message}
        become spaces (as in redis-server's C{addReplyErrorFormat}), so no
        text can end the line and start a reply of its own; C{code} is ours,
        and must be an upper-case word.
        """
        if isinstance(message, str):
            message = message.encode("utf-8", "surrogateescape")
        if isinstance(code, str):
            code = code.encode("ascii")
        if not _ERROR_CODE.fullmatch(code):
            raise ValueError(f"not an error code: {_show(code)}")
        return cls(code + b" " + message.replace(b"\r", b" ").replace(b"\n", b" "))


@frozen(eq=False)
class Double:
    """
    C{,1.5}: a RESP3 floating-point number.  A parsed one keeps its C{text}
    and re-encodes with it: redis-server 7.0 prints 17 digits
    (C{0.10000000000000001}), and a relayed reply should read as the server
    wrote it.  Without a text it encodes as Python's shortest spelling.
    Doubles compare by value, and NaN equals NaN.
    """

    value: float
    text: bytes | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Double):
            return NotImplemented
        a, b = self.value, other.value
        return a == b or (a != a and b != b)

    def __hash__(self) -> int:
        return hash(("Double", "nan" if self.value != self.value else self.value))


@frozen
class BigNumber:
    """C{(3492890328409238509324850943850943825024385}: an integer beyond 64 bits."""

    value: int


@frozen
class Verbatim:
    """C{=15\\r\\ntxt:Some string}: text to show as it is; C{format} is three bytes (C{txt}, C{mkd})."""

    format: bytes
    text: bytes


def _items(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(items)


def _pairs(pairs: Iterable[tuple[Any, Any]]) -> tuple[tuple[Any, Any], ...]:
    return tuple(pairs)


@frozen
class Map:
    """C{%}: key-value pairs, in the order received (keys may be any value, even unhashable ones)."""

    pairs: tuple[tuple[Any, Any], ...] = field(converter=_pairs)


@frozen
class Set:
    """C{~}: an unordered collection, kept in the order received."""

    items: tuple[Any, ...] = field(converter=_items)


@frozen
class Push:
    """C{>}: out-of-band data (pub/sub messages, invalidations); the first item names its kind."""

    items: tuple[Any, ...] = field(converter=_items)

    @property
    def kind(self) -> Any:
        return self.items[0]


@frozen
class Attributed:
    """
    A value preceded by a RESP3 attribute (C{|}): auxiliary data about the
    value, not part of it.  It stands wherever the value stands (an element,
    a map key, a whole reply).
    """

    attributes: tuple[tuple[Any, Any], ...] = field(converter=_pairs)
    value: Any


Reply = Union[
    bytes, int, bool, Null, SimpleString, Error, Double, BigNumber, Verbatim, tuple[Any, ...], Map, Set, Push, Attributed
]


@frozen
class Command:
    """
    A command from a client: its arguments, the name first.  C{inline} says
    it came as a line of text (telnet style) rather than an array; it
    re-encodes as an array either way.  The arguments never show in
    C{repr}: some are passwords (C{AUTH}, C{HELLO ... AUTH}).
    """

    args: tuple[bytes, ...]
    inline: bool = False

    @property
    def name(self) -> str:
        """The command's name upper-cased (ASCII only, as redis-server compares them)."""
        return self.args[0].upper().decode("ascii", "surrogateescape")

    def __repr__(self) -> str:
        kind = ", inline" if self.inline else ""
        n = len(self.args) - 1
        return f"Command({self.name!r}, {n} argument{'' if n == 1 else 's'}{kind})"


# -- decimals -----------------------------------------------------------------

# redis-server's string2ll: "0", or an optional minus, a non-zero digit and
# at most 18 more digits.  No "+", no leading zeros, no spaces, no "_"
# (which int() would all take).
_CANONICAL_INT = re.compile(rb"-?[1-9][0-9]{0,18}|0")
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _decimal(text: bytes) -> int | None:
    """The value of a canonical signed 64-bit decimal, or None."""
    if not _CANONICAL_INT.fullmatch(text):
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


# The lengths and counts most used, looked up with their type byte and line
# end: one slice and one dict lookup validate and convert a header.
_CACHED = 1024


def _headers(prefix: bytes, suffix: bytes = b"\r\n") -> dict[bytes, int]:
    return {prefix + str(i).encode() + suffix: i for i in range(_CACHED)}


_BULK_HEADERS = _headers(b"$")
_ARRAY_HEADERS = _headers(b"*")
_COUNTS = _headers(b"", b"")
_SMALL_INTS = {str(i).encode(): i for i in range(-_CACHED, _CACHED)}


# -- inline commands ----------------------------------------------------------

# One argument as sdssplitargs reads it: blanks (C isspace) skipped, then
# unquoted bytes up to a space, tab, CR or LF (a VT or FF does not end an
# argument; it is only skipped before one), then optionally one quoted part,
# which must be followed by a blank or the end.  Possessive repeats: a
# backslash-quote is an escape, never a backslash and then a closing quote.
_INLINE_ARGUMENT = re.compile(
    rb"[ \t\n\v\f\r]*+"
    rb"([^ \t\n\r\"']*+)"
    rb"(?:\"((?:\\x[0-9a-fA-F]{2}|\\[\s\S]|[^\\\"])*+)\"(?=[ \t\n\v\f\r]|\Z)"
    rb"|'((?:\\'|[^'])*+)'(?=[ \t\n\v\f\r]|\Z))?"
)
_DOUBLE_QUOTED_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[\s\S])")
_ESCAPED = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"a": b"\a"}


def _unescape_one(match: re.Match[bytes]) -> bytes:
    escape = match.group(1)
    if len(escape) == 3:
        return bytes((int(escape[1:], 16),))
    return _ESCAPED.get(escape, escape)


def _split_inline(line: bytes) -> list[bytes]:
    """The arguments of an inline command, as redis-server's sdssplitargs finds them."""
    if b"\0" in line:
        raise ProtocolError("NUL byte in an inline command")
    args = []
    pos = 0
    end = len(line)
    match = _INLINE_ARGUMENT.match
    while True:
        m = match(line, pos)
        assert m is not None  # everything in the pattern is optional
        plain, double, single = m.groups()
        pos = m.end()
        if double is not None:
            if b"\\" in double:
                double = _DOUBLE_QUOTED_ESCAPE.sub(_unescape_one, double)
            args.append(plain + double)
        elif single is not None:
            args.append(plain + single.replace(b"\\'", b"'"))
        elif plain:
            args.append(plain)
        elif pos == end:
            return args
        else:
            raise ProtocolError("unbalanced quotes in an inline command")


# -- parsing ------------------------------------------------------------------


_Message = TypeVar("_Message")


class _Parser(Generic[_Message]):
    """Buffering, failure and limits shared by both directions."""

    def __init__(
        self,
        *,
        max_bulk_length: int,
        max_elements: int,
        max_line_length: int,
        max_message_length: int,
    ) -> None:
        self.max_bulk_length = max_bulk_length
        self.max_elements = max_elements
        self.max_line_length = max_line_length
        self.max_message_length = max_message_length
        # Received, not yet consumed: at most one unfinished line or bulk string.
        self._pending = bytearray()
        # Bytes _pending must hold before parsing can progress (a bulk
        # string's rest); 0 while a line end is awaited.
        self._need = 0
        # Wire bytes of the unfinished message consumed by earlier feeds.
        self._message_length = 0
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        return len(self._pending)

    @property
    def failed(self) -> bool:
        return self._error is not None

    def feed(self, data: bytes | bytearray | memoryview) -> list[_Message]:
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
        if type(data) is not bytes:
            # A memoryview's "in" compares integers: b"\n" would never be in one.
            data = bytes(data)
        pending = self._pending
        if self._need:
            if len(pending) + len(data) < self._need:
                pending += data
                return []
        elif b"\n" not in data:
            pending += data
            if len(pending) > self.max_line_length + 1:
                error = ProtocolError(self._line_too_long())
                self._fail(error, [])
                raise error
            return []
        if pending:
            pending += data
            buf = bytes(pending)
            del pending[:]
        else:
            buf = data
        out: list[_Message] = []
        try:
            pos = self._parse(buf, out)
            if self._message_length > self.max_message_length:
                raise ProtocolError(self._message_too_long())
        except ProtocolError as e:
            self._fail(e, out)
            raise
        if pos < len(buf):
            pending += memoryview(buf)[pos:]
        return out

    def _fail(self, error: ProtocolError, out: list[_Message]) -> None:
        error.messages = out
        self._error = error
        self._pending = bytearray()

    def _check_line(self, pos: int, end: int) -> None:
        """No line end from C{pos} on: fail now if the line is already too long to be one."""
        if end - pos > self.max_line_length + 1:
            raise ProtocolError(self._line_too_long())

    def _line_too_long(self) -> str:
        return f"line longer than {self.max_line_length} bytes"

    def _message_too_long(self) -> str:
        return f"message longer than {self.max_message_length} bytes"

    def _parse(self, buf: bytes, out: list[_Message]) -> int:
        raise NotImplementedError()


class RequestParser(_Parser[Command]):
    """
    Parses what a client sends into L{Command}s, as redis-server does.

    An array with no elements (C{*0}, or any negative count) and an empty
    inline line are skipped without a word, as redis-server skips them.
    """

    def __init__(
        self,
        *,
        max_bulk_length: int = DEFAULT_MAX_BULK_LENGTH,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_message_length: int = DEFAULT_MAX_MESSAGE_LENGTH,
    ) -> None:
        super().__init__(
            max_bulk_length=max_bulk_length,
            max_elements=max_elements,
            max_line_length=max_line_length,
            max_message_length=max_message_length,
        )
        # The unfinished command: arguments so far, how many to go, and the
        # length of the bulk string whose header was read (-1: none).
        self._args: list[bytes] = []
        self._left = 0
        self._bulk = -1

    def _parse(self, buf: bytes, out: list[Command]) -> int:
        end = len(buf)
        pos = 0
        find = buf.find
        append = out.append
        bulk_headers = _BULK_HEADERS
        max_bulk = self.max_bulk_length
        max_message = self.max_message_length
        args = self._args
        left = self._left
        bulk = self._bulk
        carried = self._message_length
        start = 0
        try:
            while True:
                if not left:
                    if pos >= end:
                        break
                    start = pos
                    carried = 0
                    nl = find(b"\n", pos)
                    if nl < 0:
                        self._check_line(pos, end)
                        break
                    if buf[pos] != 42:  # not '*': an inline command
                        line_end = nl - 1 if nl > pos and buf[nl - 1] == _CR else nl
                        if line_end - pos > self.max_line_length:
                            raise ProtocolError(self._line_too_long())
                        argv = _split_inline(buf[pos:line_end])
                        pos = nl + 1
                        if argv:
                            if len(argv) > self.max_elements:
                                raise ProtocolError(
                                    f"inline command of {len(argv)} arguments exceeds the limit of {self.max_elements}"
                                )
                            append(Command(tuple(argv), True))
                        continue
                    count = _ARRAY_HEADERS.get(buf[pos : nl + 1])
                    if count is None:
                        count = self._array_header(buf, pos, nl)
                    pos = nl + 1
                    if count <= 0:
                        continue
                    if count > self.max_elements:
                        raise ProtocolError(f"command of {count} arguments exceeds the limit of {self.max_elements}")
                    args = []
                    left = count
                if bulk < 0:
                    nl = find(b"\n", pos)
                    if nl < 0:
                        self._check_line(pos, end)
                        break
                    bulk = bulk_headers.get(buf[pos : nl + 1], -1)
                    if bulk < 0:
                        bulk = self._bulk_header(buf, pos, nl)
                    if bulk > max_bulk:
                        raise ProtocolError(f"bulk string of {bulk} bytes exceeds the limit of {max_bulk}")
                    pos = nl + 1
                    if carried + pos - start + bulk + 2 > max_message:
                        raise ProtocolError(self._message_too_long())
                stop = pos + bulk
                if stop + 2 > end:
                    break
                if buf[stop] != 13 or buf[stop + 1] != 10:  # CR LF
                    raise ProtocolError(f"bulk string of {bulk} bytes not followed by CRLF")
                args.append(buf[pos:stop])
                pos = stop + 2
                bulk = -1
                left -= 1
                if not left:
                    append(Command(tuple(args)))
        finally:
            self._args = args
            self._left = left
            self._bulk = bulk
            self._message_length = carried + pos - start if left else 0
            self._need = bulk + 2 if bulk >= 0 else 0
        return pos

    @staticmethod
    def _array_header(buf: bytes, pos: int, nl: int) -> int:
        cr = nl - 1
        if buf[cr] != _CR:
            raise ProtocolError("array header ends in LF without CR")
        count = _decimal(buf[pos + 1 : cr])
        if count is None:
            raise ProtocolError(f"invalid array length {_show(buf[pos + 1 : cr])}")
        return count

    @staticmethod
    def _bulk_header(buf: bytes, pos: int, nl: int) -> int:
        cr = nl - 1
        if cr < pos or buf[cr] != _CR:
            raise ProtocolError("bulk string header ends in LF without CR")
        if buf[pos] != 36:  # '$'
            raise ProtocolError(f"expected '$' for a command argument, got {_show(buf[pos : pos + 1])}")
        length = _decimal(buf[pos + 1 : cr])
        if length is None or length < 0:
            raise ProtocolError(f"invalid bulk length {_show(buf[pos + 1 : cr])}")
        return length

    def _line_too_long(self) -> str:
        if self._left:
            return f"bulk string header longer than {self.max_line_length} bytes"
        return f"inline command or array header longer than {self.max_line_length} bytes"


# Aggregate type bytes.
_ARRAY = 42  # *
_MAP = 37  # %
_SET = 126  # ~
_PUSH = 62  # >
_ATTRIBUTE = 124  # |
_AGGREGATE_NAMES = {_ARRAY: "array", _MAP: "map", _SET: "set", _PUSH: "push", _ATTRIBUTE: "attribute"}
_LENGTH_NAMES = {36: "bulk string", 33: "bulk error", 61: "verbatim string", **_AGGREGATE_NAMES}

# The RESP3 grammar for doubles, and the other spellings of infinity and NaN
# that redis-server before 7.2 could print through libc.
_DOUBLE = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_DOUBLE_SPECIAL = re.compile(rb"([+-]?)(?:(inf(?:inity)?)|nan(?:\([0-9A-Za-z_]*\))?)", re.IGNORECASE)
_BIG_NUMBER = re.compile(rb"[+-]?[0-9]+")


class _Frame:
    """An unfinished aggregate: its type byte, how many values it holds, those read so far."""

    __slots__ = ("kind", "size", "items")

    def __init__(self, kind: int, size: int) -> None:
        self.kind = kind
        self.size = size
        self.items: list[Any] = []


def _build(kind: int, items: list[Any]) -> Any:
    if kind == _ARRAY:
        return tuple(items)
    if kind == _MAP:
        return Map(zip(items[0::2], items[1::2]))
    if kind == _SET:
        return Set(items)
    if kind == _PUSH:
        return Push(items)
    return Attributed(zip(items[0:-1:2], items[1:-1:2]), items[-1])


_EMPTY: dict[int, Any] = {_ARRAY: (), _MAP: Map(()), _SET: Set(())}


class ReplyParser(_Parser[Reply]):
    """Parses what a server sends (RESP2 and RESP3, strictly) into L{Reply} values."""

    def __init__(
        self,
        *,
        max_bulk_length: int = DEFAULT_MAX_BULK_LENGTH,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_message_length: int = DEFAULT_MAX_MESSAGE_LENGTH,
    ) -> None:
        super().__init__(
            max_bulk_length=max_bulk_length,
            max_elements=max_elements,
            max_line_length=max_line_length,
            max_message_length=max_message_length,
        )
        self.max_depth = max_depth
        # Unfinished aggregates, outermost first.
        self._stack: list[_Frame] = []
        # A bulk-like value whose header was read: its type byte and length (-1: none).
        self._bulk_kind = 0
        self._bulk = -1

    def _parse(self, buf: bytes, out: list[Reply]) -> int:
        end = len(buf)
        pos = 0
        find = buf.find
        append = out.append
        stack = self._stack
        max_bulk = self.max_bulk_length
        max_message = self.max_message_length
        bulk_headers = _BULK_HEADERS
        bulk = self._bulk
        kind = self._bulk_kind
        carried = self._message_length
        start = 0
        try:
            while True:
                if bulk < 0:
                    if pos >= end:
                        break
                    nl = find(b"\n", pos)
                    if nl < 0:
                        self._check_line(pos, end)
                        break
                    cr = nl - 1
                    if cr <= pos or buf[cr] != 13:
                        raise ProtocolError("empty line" if cr == pos and buf[cr] == 13 else "line ends in LF without CR")
                    if cr - pos > self.max_line_length:
                        raise ProtocolError(self._line_too_long())
                    kind = buf[pos]
                    if kind == 36:  # $
                        bulk = bulk_headers.get(buf[pos : nl + 1], -1)
                        if bulk < 0:
                            bulk = self._length(buf[pos + 1 : cr], kind)
                        pos = nl + 1
                        if bulk < 0:
                            value: Any = _NULL_BULK
                    elif kind == 58:  # :
                        text = buf[pos + 1 : cr]
                        value = _SMALL_INTS.get(text)
                        if value is None:
                            value = _decimal(text)
                            if value is None:
                                raise ProtocolError(f"invalid integer {_show(text)}")
                        pos = nl + 1
                    elif kind == 43:  # +
                        text = buf[pos + 1 : cr]
                        if b"\r" in text:
                            raise ProtocolError("CR inside a simple string")
                        value = SimpleString(text)
                        pos = nl + 1
                    elif kind == 45:  # -
                        text = buf[pos + 1 : cr]
                        if b"\r" in text:
                            raise ProtocolError("CR inside a simple error")
                        value = Error(text)
                        pos = nl + 1
                    elif kind in _AGGREGATE_NAMES:
                        text = buf[pos + 1 : cr]
                        count = _COUNTS.get(text)
                        if count is None:
                            count = self._length(text, kind)
                        pos = nl + 1
                        if count < 0:
                            value = _NULL_ARRAY
                        elif kind == _PUSH and stack:
                            raise ProtocolError("push inside another value (a push is always a whole message)")
                        elif kind == _PUSH and not count:
                            raise ProtocolError("push with no elements (its first element names its kind)")
                        elif count == 0 and kind != _ATTRIBUTE:
                            value = _EMPTY[kind]
                        else:
                            size = count * 2 if kind == _MAP or kind == _ATTRIBUTE else count
                            if size > self.max_elements:
                                raise ProtocolError(
                                    f"{_AGGREGATE_NAMES[kind]} of {size} elements exceeds the limit of {self.max_elements}"
                                )
                            if len(stack) >= self.max_depth:
                                raise ProtocolError(f"values nested deeper than {self.max_depth} levels")
                            # Every element takes 3 bytes at least ("_\r\n"):
                            # a count that cannot fit is refused before its elements come.
                            if carried + pos - start + 3 * size > max_message:
                                raise ProtocolError(self._message_too_long())
                            stack.append(_Frame(kind, size + 1 if kind == _ATTRIBUTE else size))
                            continue
                    elif kind in (33, 61):  # ! =
                        bulk = self._length(buf[pos + 1 : cr], kind)
                        pos = nl + 1
                    else:
                        value = self._scalar(kind, buf[pos + 1 : cr])
                        pos = nl + 1
                    if bulk >= 0:
                        if bulk > max_bulk:
                            raise ProtocolError(f"bulk string of {bulk} bytes exceeds the limit of {max_bulk}")
                        if carried + pos - start + bulk + 2 > max_message:
                            raise ProtocolError(self._message_too_long())
                if bulk >= 0:
                    stop = pos + bulk
                    if stop + 2 > end:
                        break
                    if buf[stop] != 13 or buf[stop + 1] != 10:  # CR LF
                        raise ProtocolError(f"bulk string of {bulk} bytes not followed by CRLF")
                    value = buf[pos:stop]
                    pos = stop + 2
                    bulk = -1
                    if kind != 36:
                        value = self._blob(kind, value)
                # Place the value: a whole message, or an element, which
                # may complete its aggregate, and that its parent.
                while stack:
                    frame = stack[-1]
                    items = frame.items
                    items.append(value)
                    if len(items) < frame.size:
                        break
                    stack.pop()
                    value = _build(frame.kind, items)
                else:
                    if carried + pos - start > max_message:
                        raise ProtocolError(self._message_too_long())
                    append(value)
                    start = pos
                    carried = 0
        finally:
            self._bulk = bulk
            self._bulk_kind = kind
            self._message_length = carried + pos - start if (stack or bulk >= 0) else 0
            self._need = bulk + 2 if bulk >= 0 else 0
        return pos

    @staticmethod
    def _length(text: bytes, kind: int) -> int:
        """A bulk length or an aggregate count: a canonical decimal, or -1 where RESP2 has its nulls."""
        length = _decimal(text)
        if length is None or length < -1:
            if text == b"?":
                raise ProtocolError(f"streamed {_LENGTH_NAMES[kind]} ({chr(kind)}?) is not supported")
            raise ProtocolError(f"invalid {_LENGTH_NAMES[kind]} length {_show(text)}")
        if length == -1 and kind != 36 and kind != _ARRAY:
            raise ProtocolError(f"{_LENGTH_NAMES[kind]} of length -1 (only a bulk string or an array can be null)")
        return length

    @staticmethod
    def _blob(kind: int, data: bytes) -> Any:
        if kind == 33:  # !
            return Error(data, True)
        # = : three bytes of format, a colon, the text.
        if len(data) < 4 or data[3] != 58:
            raise ProtocolError(f"verbatim string without a format prefix: {_show(data[:8])}")
        return Verbatim(data[:3], data[4:])

    @staticmethod
    def _scalar(kind: int, text: bytes) -> Any:
        if kind == 95:  # _
            if text:
                raise ProtocolError(f"null with a payload: {_show(text)}")
            return _NULL
        if kind == 35:  # #
            if text == b"t":
                return True
            if text == b"f":
                return False
            raise ProtocolError(f"invalid boolean {_show(text)}")
        if kind == 44:  # ,
            if _DOUBLE.fullmatch(text):
                return Double(float(text), text)
            special = _DOUBLE_SPECIAL.fullmatch(text)
            if special is None:
                raise ProtocolError(f"invalid double {_show(text)}")
            if special.group(2) is None:
                return Double(math.nan, text)
            return Double(-math.inf if special.group(1) == b"-" else math.inf, text)
        if kind == 40:  # (
            if not _BIG_NUMBER.fullmatch(text):
                raise ProtocolError(f"invalid big number {_show(text)}")
            try:
                return BigNumber(int(text))
            except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
                raise ProtocolError(f"big number of {len(text)} digits is too long") from None
        if kind == 59 or kind == 46:  # ; .
            raise ProtocolError(f"streamed {'string chunk' if kind == 59 else 'aggregate end'} ({chr(kind)}) is not supported")
        raise ProtocolError(f"unknown type byte {_show(bytes((kind,)))}")


# -- encoding -----------------------------------------------------------------


def _encode_bulk(value: bytes, out: list[bytes]) -> None:
    out.append(b"$%d\r\n%s\r\n" % (len(value), value))


def _encode_int(value: int, out: list[bytes]) -> None:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"integer {value} is beyond 64 bits (use BigNumber)")
    out.append(b":%d\r\n" % value)


def _encode_bool(value: bool, out: list[bytes]) -> None:
    out.append(b"#t\r\n" if value else b"#f\r\n")


def _encode_null(value: Null, out: list[bytes]) -> None:
    out.append(value.value)


def _encode_simple(value: SimpleString, out: list[bytes]) -> None:
    _no_line_breaks(value.value, "a simple string")
    out.append(b"+%s\r\n" % value.value)


def _encode_error(value: Error, out: list[bytes]) -> None:
    if value.bulk:
        out.append(b"!%d\r\n%s\r\n" % (len(value.message), value.message))
    else:
        _no_line_breaks(value.message, "a simple error (use Error.from_message)")
        out.append(b"-%s\r\n" % value.message)


def _encode_double(value: Double, out: list[bytes]) -> None:
    if value.text is not None:
        _no_line_breaks(value.text, "a double's text")
        out.append(b",%s\r\n" % value.text)
        return
    number = value.value
    if number != number:
        out.append(b",nan\r\n")
    elif math.isinf(number):
        out.append(b",inf\r\n" if number > 0 else b",-inf\r\n")
    else:
        # repr is the shortest text that reads back as the same float, and
        # fits the RESP3 grammar ("1.5", "1e+300", "-0.0").
        out.append(b",%s\r\n" % repr(number).encode())


def _encode_big_number(value: BigNumber, out: list[bytes]) -> None:
    out.append(b"(%d\r\n" % value.value)


def _encode_verbatim(value: Verbatim, out: list[bytes]) -> None:
    if len(value.format) != 3:
        raise ValueError(f"a verbatim string's format is three bytes: {_show(value.format)}")
    out.append(b"=%d\r\n%s:%s\r\n" % (len(value.text) + 4, value.format, value.text))


def _encode_items(prefix: bytes, items: tuple[Any, ...], out: list[bytes]) -> None:
    out.append(b"%s%d\r\n" % (prefix, len(items)))
    for item in items:
        _encode(item, out)


def _encode_pairs(prefix: bytes, pairs: tuple[tuple[Any, Any], ...], out: list[bytes]) -> None:
    out.append(b"%s%d\r\n" % (prefix, len(pairs)))
    for key, item in pairs:
        _encode(key, out)
        _encode(item, out)


def _encode_array(value: tuple[Any, ...], out: list[bytes]) -> None:
    _encode_items(b"*", value, out)


def _encode_map(value: Map, out: list[bytes]) -> None:
    _encode_pairs(b"%", value.pairs, out)


def _encode_set(value: Set, out: list[bytes]) -> None:
    _encode_items(b"~", value.items, out)


def _encode_push(value: Push, out: list[bytes]) -> None:
    if not value.items:
        raise ValueError("a push needs at least one element, its kind")
    _encode_items(b">", value.items, out)


def _encode_attributed(value: Attributed, out: list[bytes]) -> None:
    _encode_pairs(b"|", value.attributes, out)
    _encode(value.value, out)


def _encode_command(value: Command, out: list[bytes]) -> None:
    out.append(encode_command(*value.args))


_ENCODERS: dict[type, Callable[[Any, list[bytes]], None]] = {
    bytes: _encode_bulk,
    int: _encode_int,
    bool: _encode_bool,
    Null: _encode_null,
    SimpleString: _encode_simple,
    Error: _encode_error,
    Double: _encode_double,
    BigNumber: _encode_big_number,
    Verbatim: _encode_verbatim,
    tuple: _encode_array,
    Map: _encode_map,
    Set: _encode_set,
    Push: _encode_push,
    Attributed: _encode_attributed,
    Command: _encode_command,
}


def _encode(value: Any, out: list[bytes]) -> None:
    # By exact type: a bool is an int to isinstance, and must not encode as one.
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        raise TypeError(f"cannot encode {type(value).__name__} as RESP (bulk strings are bytes)")
    encoder(value, out)


def encode(value: Reply | Command) -> bytes:
    """
    The RESP encoding of a value: a reply (any L{Reply}), or a L{Command}
    (always as an array of bulk strings, whichever way it came).  Raises
    C{ValueError} for a value no peer could read back (a line break in a
    simple string or error, an integer beyond 64 bits), C{TypeError} for
    anything else (C{str} included: say C{bytes} or C{SimpleString}).
    """
    if type(value) is bytes:
        return b"$%d\r\n%s\r\n" % (len(value), value)
    out: list[bytes] = []
    _encode(value, out)
    return out[0] if len(out) == 1 else b"".join(out)


_Argument = Union[bytes, bytearray, memoryview, str, int]


def _argument(arg: _Argument) -> bytes:
    if type(arg) is bytes:
        return arg
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if type(arg) is int:
        return b"%d" % arg
    if isinstance(arg, (bytearray, memoryview)):
        return bytes(arg)
    raise TypeError(f"a command argument is bytes, str or int, not {type(arg).__name__}")


def encode_command(*args: _Argument) -> bytes:
    """A command as clients send it, an array of bulk strings: C{encode_command(b"GET", b"k")}."""
    if not args:
        raise ValueError("a command has at least its name")
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _argument(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def error_reply(message: str | bytes, *, code: str | bytes = "ERR") -> bytes:
    """
    An error reply, C{-ERR message\\r\\n}, safe for any message: its CR and
    LF become spaces (L{Error.from_message}).
    """
    return encode(Error.from_message(message, code=code))


def keyword(arg: bytes) -> bytes:
    """
    An argument as redis-server compares it with a keyword or option
    (C{STORE}, C{AUTH}, C{ON}), lower-cased: it uses C's C{strcasecmp},
    which stops at the first NUL, so C{STORE\\0x} is C{STORE} to it.
    Every such comparison the gateway makes goes through here, or a
    client hides a keyword from the gateway but not from the target.
    """
    return arg.split(b"\0", 1)[0].lower()
