"""
HTTP/1.1 message framing, sans-IO (RFC 9112): bytes in, events out, no
transport in sight, so that it can be chopped and replayed by Hypothesis.

One L{Parser} reads either requests (from a client) or responses (from an
upstream).  L{Parser.feed} returns a list of events, in order:

  - a L{Head} (the request or status line and the header fields);
  - body data, as C{bytes} objects (the body without its framing: chunk
    sizes, extensions and trailers are consumed here);
  - L{END}, when the message is complete.

After L{END} the parser stops and keeps whatever follows (a pipelined
request, bytes after an upgrade) until L{Parser.next_message}: the caller
decides when the next message may be read, which is what keeps responses in
request order.

It is strict where leniency lets two parsers disagree about where a message
ends (request smuggling): obs-fold lines, a bare CR or LF in the head or in
a chunk line, whitespace before a field's colon, a Content-Length that is
not one decimal number (or several that differ), Content-Length together
with Transfer-Encoding, any transfer-coding but C{chunked}, a chunk size
that is not 1 to 16 hex digits, chunk data not followed by CRLF, a head
over the size limit.  Each is a L{ParseError} with the status to answer and
a message that names what was wrong.
"""

from __future__ import annotations

import re

from hoopgw.protocols.http.redact import redact_target

__all__ = ["END", "FIELD_VALUE", "Head", "ParseError", "Parser", "TOKEN"]


class ParseError(Exception):
    """
    The bytes are not an HTTP/1.1 message this parser accepts.

    @ivar status: the status to answer a client with (400, 431, 501, 505).
    @ivar reason: what was wrong, safe to show the client (no header values).
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _End:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END = _End()
"""The event that ends a message."""


class Head:
    """
    A request's or a response's head.

    @ivar headers: the header fields in order, names as received, values
        without surrounding whitespace.
    @ivar content_length: the body's length, C{None} if chunked or (a
        response) delimited by the connection's close.
    @ivar keep_alive: whether the connection may carry another message
        after this one, as far as this message's head says.
    @ivar has_body: whether body events (possibly none) and L{END} follow
        after the head, rather than L{END} at once.
    """

    __slots__ = (
        "method", "target", "version", "code", "reason", "headers",
        "content_length", "chunked", "keep_alive", "has_body",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        code: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        has_body: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.code = code
        self.reason = reason
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.has_body = has_body

    def getRawHeaders(self, name: bytes) -> list[bytes] | None:
        """The values of header C{name} (lower-case), or C{None}: the L{twisted.web.http_headers.Headers} spelling."""
        values = [v for n, v in self.headers if n.lower() == name]
        return values or None

    def __repr__(self) -> str:
        if self.method:
            # A repr may end up in a log: credentials in the target do not.
            line = self.method + b" " + redact_target(self.target.decode("latin-1")).encode("latin-1", "replace")
        else:
            line = b"%d %s" % (self.code, self.reason)
        return f"<Head {line[:80]!r} {len(self.headers)} fields>"


_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
# RFC 9110 sections 5.1 and 5.6.2: a field name (and a Connection option) is a token.
TOKEN = re.compile(rb"[" + _TCHAR + rb"]+")
# RFC 9110 section 5.5: field-value bytes are VCHAR, obs-text, SP and HTAB.
FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_REQUEST_LINE = re.compile(rb"([" + _TCHAR + rb"]+) ([\x21-\x7e]+) (HTTP/[0-9]\.[0-9])")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_FIELD = re.compile(rb"([" + _TCHAR + rb"]+):([\t\x20-\x7e\x80-\xff]*)")
# A head whose every field line is well-formed, in one match: the common
# case costs one regex call instead of one per line.  Anything else takes
# the line-by-line path, which names what is wrong.
_FIELD_LINES = re.compile(rb"(?:\r\n[" + _TCHAR + rb"]+:[\t\x20-\x7e\x80-\xff]*)*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(;[\t\x20-\x7e\x80-\xff]*)?")
_DIGITS = re.compile(rb"[0-9]{1,18}")

_HEAD, _LENGTH, _CHUNK_SIZE_LINE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_CLOSE, _DONE, _FAILED = range(9)

DEFAULT_MAX_HEAD = 64 * 1024
DEFAULT_MAX_FIELDS = 128
_MAX_CHUNK_LINE = 4096


def _tokens(values: list[bytes]) -> list[bytes]:
    return [t.strip(b" \t").lower() for v in values for t in v.split(b",") if t.strip(b" \t")]


class Parser:
    """
    The framing of HTTP/1.1 requests (C{response=False}) or responses.

    For responses, set L{head_request} before the response to a C{HEAD}
    request is fed: it has no body whatever its head says.
    """

    def __init__(
        self, *, response: bool = False, max_head: int = DEFAULT_MAX_HEAD, max_fields: int = DEFAULT_MAX_FIELDS
    ) -> None:
        self.response = response
        self.max_head = max_head
        self.max_fields = max_fields
        self.head_request = False
        self._state = _HEAD
        self._buffer = bytearray()
        self._remaining = 0
        self._trailer_bytes = 0
        self._scanned = 0
        self._error: ParseError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as events (a pipelined request, say)."""
        return len(self._buffer)

    @property
    def done(self) -> bool:
        """Whether the current message has ended (L{END} was returned)."""
        return self._state == _DONE

    def next_message(self) -> None:
        """Read the next message (after L{END}); call L{feed} to parse what is buffered."""
        if self._state == _DONE:
            self._state = _HEAD
            self.head_request = False

    def take_buffered(self) -> bytes:
        """Everything buffered after the message (after an upgrade: the new protocol's first bytes)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def _fail(self, status: int, reason: str) -> ParseError:
        self._state = _FAILED
        self._error = ParseError(status, reason)
        return self._error

    def feed_eof(self) -> list[object]:
        """
        The connection ended.  A response delimited by the close ends here;
        any other message cut short is a L{ParseError}.
        """
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
            return [END]
        if self._state == _HEAD and not self._buffer.strip(b"\r\n"):
            return []
        if self._state == _DONE:
            return []
        raise self._fail(400, "the connection ended inside a message")

    def feed(self, data: bytes) -> list[object]:
        """
        Parse C{data} (after what was buffered).

        @return: the events (see the module docstring); nothing past L{END}.
        @raise ParseError: for bytes that are not an acceptable message; the
            parser then refuses everything after.
        """
        if self._error is not None:
            raise self._error
        state = self._state
        buffer = self._buffer
        events: list[object] = []
        # The streaming case: body bytes with nothing buffered pass through
        # without a copy into the buffer.
        if state == _LENGTH and not buffer and data:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                events.append(data)
                return events
            events.append(data[:remaining] if len(data) > remaining else data)
            events.append(END)
            self._state = _DONE
            if len(data) > remaining:
                buffer += data[remaining:]
            return events
        if state == _UNTIL_CLOSE:
            if data:
                events.append(data)
            return events
        if state == _HEAD and not buffer and data and (self.response or not data.startswith(b"\r\n")):
            # The common case: a whole head in one read, nothing buffered:
            # parsed from the bytes as they came, the rest fed on.
            end = data.find(b"\r\n\r\n")
            if 0 <= end <= self.max_head:
                head = self._head(data[:end])
                rest = data[end + 4 :]
                if head is not None:
                    events.append(head)
                    self._state = self._after_head(head, events)
                if rest:
                    events += self.feed(rest)
                return events
        if data:
            buffer += data
        pos = 0
        try:
            while True:
                if state == _HEAD:
                    if not self.response:
                        # RFC 9112 section 2.2: empty lines before a request
                        # line (after a previous body) are ignored.
                        while buffer.startswith(b"\r\n", pos):
                            pos += 2
                    # Only the bytes that arrived since the last look are
                    # searched (a head trickled in byte by byte costs O(n)).
                    start = pos + self._scanned - 3 if self._scanned > 3 else pos
                    if start > pos and buffer[start] == 0x0A:
                        start -= 1
                    end = buffer.find(b"\r\n\r\n", start)
                    if end < 0:
                        self._check_partial_head(buffer, pos, start)
                        self._scanned = len(buffer) - pos
                        break
                    self._scanned = 0
                    if end - pos > self.max_head:
                        raise self._fail(431, f"the message head is larger than {self.max_head} bytes")
                    head = self._head(bytes(buffer[pos:end]))
                    pos = end + 4
                    if head is None:  # an interim 1xx response: skipped
                        continue
                    events.append(head)
                    state = self._after_head(head, events)
                    if state == _DONE:
                        break
                    if state == _UNTIL_CLOSE:
                        if pos < len(buffer):
                            events.append(bytes(buffer[pos:]))
                        pos = len(buffer)
                        break
                elif state == _LENGTH or state == _CHUNK_DATA:
                    available = len(buffer) - pos
                    if not available:
                        break
                    n = self._remaining if self._remaining < available else available
                    events.append(bytes(buffer[pos : pos + n]))
                    pos += n
                    self._remaining -= n
                    if self._remaining:
                        break
                    if state == _LENGTH:
                        events.append(END)
                        state = _DONE
                        break
                    state = _CHUNK_CRLF
                elif state == _CHUNK_CRLF:
                    if len(buffer) - pos < 2:
                        break
                    if buffer[pos : pos + 2] != b"\r\n":
                        raise self._fail(400, "chunk data is not followed by CRLF")
                    pos += 2
                    state = _CHUNK_SIZE_LINE
                elif state == _CHUNK_SIZE_LINE:
                    end = buffer.find(b"\r\n", pos)
                    if end < 0:
                        if b"\n" in buffer[pos:] or b"\r" in buffer[pos:-1]:
                            raise self._fail(400, "a bare CR or LF in a chunk size line")
                        if len(buffer) - pos > _MAX_CHUNK_LINE:
                            raise self._fail(400, "a chunk size line is too long")
                        break
                    line = bytes(buffer[pos:end])
                    match = _CHUNK_SIZE.fullmatch(line)
                    if match is None:
                        raise self._fail(400, f"invalid chunk size line {line[:40]!r}")
                    pos = end + 2
                    size = int(match.group(1), 16)
                    if size:
                        self._remaining = size
                        state = _CHUNK_DATA
                    else:
                        self._trailer_bytes = 0
                        state = _TRAILERS
                elif state == _TRAILERS:
                    end = buffer.find(b"\r\n", pos)
                    if end < 0:
                        if b"\n" in buffer[pos:] or b"\r" in buffer[pos:-1]:
                            raise self._fail(400, "a bare CR or LF in the trailer section")
                        if self._trailer_bytes + len(buffer) - pos > self.max_head:
                            raise self._fail(431, "the trailer section is too large")
                        break
                    line = bytes(buffer[pos:end])
                    pos = end + 2
                    if not line:
                        events.append(END)
                        state = _DONE
                        break
                    # Trailer fields are checked like header fields, then
                    # dropped: nothing downstream acts on them.
                    self._trailer_bytes += len(line) + 2
                    if self._trailer_bytes > self.max_head:
                        raise self._fail(431, "the trailer section is too large")
                    self._field(line)
                else:  # _DONE: the rest waits for next_message()
                    break
        finally:
            if pos:
                del buffer[:pos]
            if self._state != _FAILED:
                self._state = state
        return events

    def _after_head(self, head: Head, events: list[object]) -> int:
        """The state after C{head}; L{END} goes into C{events} at once for a message without a body."""
        if not head.has_body:
            events.append(END)
            return _DONE
        if head.chunked:
            return _CHUNK_SIZE_LINE
        if head.content_length is not None:
            self._remaining = head.content_length
            return _LENGTH
        return _UNTIL_CLOSE

    def _check_partial_head(self, buffer: bytearray, pos: int, start: int) -> None:
        pending = len(buffer) - pos
        # A head of max_head bytes may have up to 3 bytes of the CRLF CRLF
        # that ends it pending too (as when it comes in one read).
        if pending > self.max_head + 3:
            raise self._fail(431, f"the message head is larger than {self.max_head} bytes")
        # A head that ends in LF LF (or has any bare LF) would never be
        # complete to this parser and complete to a lenient one: refused
        # now rather than after max_head bytes.
        newlines = buffer.count(b"\n", start)
        if newlines and newlines != buffer.count(b"\r\n", start):
            raise self._fail(400, "a bare LF in the message head (lines end in CRLF)")

    def _field(self, line: bytes) -> tuple[bytes, bytes]:
        if line[:1] in (b" ", b"\t"):
            raise self._fail(400, "obs-fold (a header line starting with whitespace) is not accepted")
        match = _FIELD.fullmatch(line)
        if match is None:
            name = line.partition(b":")[0]
            if b":" not in line:
                raise self._fail(400, f"a header line without a colon: {line[:40]!r}")
            if name != name.rstrip(b" \t"):
                raise self._fail(400, f"whitespace before the colon of header {name.strip()[:40]!r}")
            if not TOKEN.fullmatch(name):
                raise self._fail(400, f"invalid header name {name[:40]!r}")
            raise self._fail(400, f"header {name.decode('ascii')!r} has a control character in its value")
        return match.group(1), match.group(2).strip(b" \t")

    def _head(self, head: bytes) -> Head | None:
        first = head.find(b"\r\n")
        if (
            first >= 0 and _FIELD_LINES.fullmatch(head, first) is not None
            and head.count(b"\r", 0, first) == 0 and head.count(b"\n", 0, first) == 0
        ):
            # Every field line is valid and no line holds a bare CR or LF.
            lines = head.split(b"\r\n")
            fields = [(name, value.strip(b" \t")) for name, _, value in (line.partition(b":") for line in lines[1:])]
        else:
            lines = head.split(b"\r\n")
            if head.count(b"\n") != len(lines) - 1 or head.count(b"\r") != len(lines) - 1:
                raise self._fail(400, "a bare CR or LF in the message head (lines end in CRLF)")
            fields = None
        if len(lines) - 1 > self.max_fields:
            raise self._fail(431, f"more than {self.max_fields} header fields")
        if fields is None:
            field = self._field
            fields = [field(line) for line in lines[1:]]
        start = lines[0]
        headers: list[tuple[bytes, bytes]] = fields
        lengths: list[bytes] = []
        codings: list[bytes] | None = None
        connection: list[bytes] = []
        hosts = 0
        for name, value in fields:
            lower = name.lower()
            if lower == b"content-length":
                lengths.append(value)
            elif lower == b"transfer-encoding":
                codings = (codings or []) + _tokens([value])
            elif lower == b"connection":
                connection.append(value)
            elif lower == b"host":
                hosts += 1
        content_length: int | None = None
        if lengths:
            if any(_DIGITS.fullmatch(v) is None for v in lengths):
                raise self._fail(400, "Content-Length is not a decimal number")
            if len(set(lengths)) > 1 and len({int(v) for v in lengths}) > 1:
                raise self._fail(400, "conflicting Content-Length headers")
            content_length = int(lengths[0])

        if self.response:
            match = _STATUS_LINE.fullmatch(start)
            if match is None:
                raise self._fail(502, f"not an HTTP/1.1 status line: {start[:80]!r}")
            minor, code = match.group(1), int(match.group(2))
            version = b"HTTP/1." + minor
            if 100 <= code < 200 and code != 101:
                return None
            method, target, reason = b"", b"", match.group(3) or b""
        else:
            match = _REQUEST_LINE.fullmatch(start)
            if match is None:
                raise self._fail(400, f"not an HTTP/1.1 request line: {start[:80]!r}")
            method, target, version = match.group(1), match.group(2), match.group(3)
            if version not in (b"HTTP/1.1", b"HTTP/1.0"):
                raise self._fail(505, f"HTTP version {version.decode()} is not supported (HTTP/1.1 only)")
            code, reason = 0, b""
            if version == b"HTTP/1.1" and hosts != 1:
                raise self._fail(400, "an HTTP/1.1 request needs exactly one Host header")

        chunked = False
        if codings is not None:
            if content_length is not None:
                raise self._fail(
                    502 if self.response else 400, "both Content-Length and Transfer-Encoding (ambiguous framing)"
                )
            if version == b"HTTP/1.0":
                raise self._fail(502 if self.response else 400, "Transfer-Encoding in an HTTP/1.0 message")
            if codings != [b"chunked"]:
                raise self._fail(
                    502 if self.response else 501,
                    "only the chunked transfer-coding is supported, got "
                    + repr(b", ".join(codings).decode("ascii", "replace")[:80]),
                )
            chunked = True

        tokens = _tokens(connection) if connection else ()
        keep_alive = (b"close" not in tokens) if version == b"HTTP/1.1" else (b"keep-alive" in tokens)
        if self.response:
            if code == 101 or code == 204 or code == 304 or self.head_request:
                has_body = False
            elif chunked or content_length is not None:
                has_body = bool(chunked or content_length)
            else:
                has_body = True  # delimited by the close
                keep_alive = False
        else:
            has_body = chunked or bool(content_length)
        return Head(method, target, version, code, reason, headers, content_length, chunked, keep_alive, has_body)
