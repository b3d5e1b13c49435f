"""
Fuzz the HTTP/1.1 framing parser (hoopgw.protocols.http.wire.Parser).

Input: the bytes a client sends (or, when they start with C{HTTP/}, an
upstream's responses), read message after message as the proxy reads them
(L{Parser.next_message} after each L{END}), then the connection's end
(L{Parser.feed_eof}).  Responses are read twice: as answers to GET and to
HEAD requests.  Each is parsed with the default limits and with small
ones (a 256-byte head, 8 fields).

Checked: only L{ParseError} is raised, and a parser that raised keeps
raising; the bytes parse to the same events whole, one byte at a time
(with the default limits) and in pieces chosen from the input's CRC (where
two readings of one stream disagree is where request smuggling lives);
every head is consistent (chunked or a length, never both; a body of
exactly C{Content-Length} bytes; a printable repr).
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz._fuzzing import Violation, check, chunks, fuzz, instrumented

with instrumented(__name__):
    from hoopgw.protocols.http.wire import END, Head, ParseError, Parser

LIMITS = ({}, {"max_head": 256, "max_fields": 8})


def _head(head: Head) -> tuple[object, ...]:
    check(not (head.chunked and head.content_length is not None), "a head both chunked and with a length")
    check(head.content_length is None or head.content_length >= 0, "a negative Content-Length")
    check(isinstance(repr(head), str), "repr(head)")
    head.getRawHeaders(b"host")
    return (head.method, head.target, head.version, head.code, head.reason, tuple(head.headers),
            head.content_length, head.chunked, head.keep_alive, head.has_body)


def _parse(pieces: list[bytes], response: bool, head_request: bool, limits: dict[str, int]) -> tuple[list[object], int | None]:
    """The events (heads as tuples, each message's body joined) and the error status, if any."""
    parser = Parser(response=response, **limits)
    parser.head_request = head_request
    events: list[object] = []
    state = {"head": None, "body": 0}

    def collect(new: list[object]) -> None:
        for event in new:
            if isinstance(event, Head):
                events.append(_head(event))
                state["head"], state["body"] = event, 0
            elif event is END:
                head = state["head"]
                check(head is not None, "END without a head")
                if head.has_body and not head.chunked and head.content_length is not None:
                    check(state["body"] == head.content_length, "a body that is not Content-Length bytes long")
                if not head.has_body:
                    check(state["body"] == 0, "body bytes in a message without a body")
                events.append("END")
                state["head"] = None
            else:
                check(type(event) is bytes and event, f"an event that is not a head, END or body bytes: {event!r}")
                check(state["head"] is not None, "body bytes without a head")
                state["body"] += len(event)
                if events and type(events[-1]) is bytes:
                    events[-1] += event
                else:
                    events.append(event)

    def drive(new: list[object]) -> None:
        collect(new)
        while parser.done:  # the next pipelined message, as the proxy reads it
            parser.next_message()
            parser.head_request = head_request
            collect(parser.feed(b""))

    try:
        for piece in pieces:
            drive(parser.feed(piece))
        drive(parser.feed_eof())
    except ParseError as e:
        check(e.status in (400, 431, 501, 502, 505), f"ParseError with status {e.status}")
        try:
            parser.feed(b"x")
        except ParseError:
            return events, e.status
        raise Violation("a parser that raised ParseError accepted more bytes") from None
    return events, None


def one_input(data: bytes) -> None:
    response = data.startswith(b"HTTP/")
    seed = zlib.crc32(data) & 0xFF
    for limits in LIMITS:
        for head_request in (False, True) if response else (False,):
            whole = _parse([data] if data else [], response, head_request, limits)
            # One byte at a time is the slowest reading: once per input.
            first = limits is LIMITS[0] and not head_request
            for pieces in (chunks(data, 1), chunks(data, seed or 2)) if first else (chunks(data, seed or 2),):
                parts = _parse(pieces, response, head_request, limits)
                # Events before an error depend on where the pieces end; whether there is one must not.
                same = (whole[1] is None) == (parts[1] is None) and (whole[1] is not None or whole[0] == parts[0])
                check(same, f"parsed differently whole and in {len(pieces)} pieces "
                            f"(limits {limits}, HEAD {head_request}): {whole!r} vs {parts!r}")


if __name__ == "__main__":
    fuzz(one_input)
