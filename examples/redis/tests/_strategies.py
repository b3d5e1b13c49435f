"""
Hypothesis strategies and helpers shared by the codec tests.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from hypothesis import strategies as st

from hoopgw_redis.resp import (
    Attributed,
    BigNumber,
    Double,
    Error,
    Map,
    Null,
    ProtocolError,
    Push,
    Set,
    SimpleString,
    Verbatim,
    encode,
)

# -- requests -----------------------------------------------------------------

arguments = st.binary(max_size=40)
commands = st.lists(arguments, min_size=1, max_size=8).map(tuple)


@st.composite
def big_arguments(draw: st.DrawFn) -> bytes:
    """Arguments up to 300 kB: a drawn pattern repeated (Hypothesis's own buffer holds only a few kB)."""
    pattern = draw(st.binary(min_size=1, max_size=16))
    return (pattern * (draw(st.integers(0, 300_000)) // len(pattern) + 1))[: draw(st.integers(0, 300_000))]


def inline_quote(arg: bytes) -> bytes:
    """An argument as an inline command can carry any bytes: double-quoted, with \\xHH escapes."""
    out = bytearray(b'"')
    for byte in arg:
        if 0x20 <= byte < 0x7F and byte not in b'"\\':
            out.append(byte)
        else:
            out += b"\\x%02x" % byte
    return bytes(out + b'"')


def inline_line(args: Sequence[bytes], ending: bytes = b"\r\n") -> bytes:
    return b" ".join(inline_quote(a) for a in args) + ending


@st.composite
def request_streams(draw: st.DrawFn, max_commands: int = 20) -> tuple[bytes, list[tuple[bytes, ...]]]:
    """A pipeline of commands, each as an array or an inline line (CRLF or LF), and their arguments."""
    from hoopgw_redis.resp import encode_command

    parts = []
    expected = []
    for args in draw(st.lists(commands, max_size=max_commands)):
        form = draw(st.sampled_from(["array", "inline", "inline-lf"]))
        if form == "array":
            parts.append(encode_command(*args))
        else:
            parts.append(inline_line(args, b"\r\n" if form == "inline" else b"\n"))
        expected.append(args)
    return b"".join(parts), expected


# -- replies ------------------------------------------------------------------

no_line_breaks = st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))

scalars = st.one_of(
    st.binary(max_size=40),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.sampled_from(list(Null)),
    no_line_breaks.map(SimpleString),
    no_line_breaks.map(Error),
    st.binary(max_size=30).map(lambda b: Error(b, bulk=True)),
    st.floats(allow_nan=True, allow_infinity=True).map(Double),
    st.integers().map(BigNumber),
    st.builds(Verbatim, st.binary(min_size=3, max_size=3), st.binary(max_size=30)),
)


def _aggregates(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    pairs = st.lists(st.tuples(children, children), max_size=4)
    return st.one_of(
        st.lists(children, max_size=5).map(tuple),
        pairs.map(Map),
        st.lists(children, max_size=5).map(Set),
        st.builds(Attributed, pairs, children),
    )


values = st.recursive(scalars, _aggregates, max_leaves=30)
# A push is only ever a whole message.
replies = st.one_of(values, st.lists(values, min_size=1, max_size=4).map(Push))


# -- feeding ------------------------------------------------------------------


def chunked(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """C{data} cut at the given offsets (taken modulo its length, sorted, deduplicated)."""
    if not data:
        return [data]
    points = sorted({c % len(data) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def by_size(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def feed_all(parser: Any, chunks: Sequence[bytes]) -> list[Any]:
    out: list[Any] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out


def outcome(make: Callable[[], Any], chunks: Sequence[bytes]) -> tuple[list[Any], str | None, int]:
    """
    Feed C{chunks} to a new parser: the messages it returned (those before
    an error included), whether it failed, and the bytes it holds.  Any
    exception but L{ProtocolError} propagates: that is a bug.
    """
    parser = make()
    out: list[Any] = []
    for chunk in chunks:
        try:
            out += parser.feed(chunk)
        except ProtocolError as e:
            return out + e.messages, "failed", 0  # type: ignore[attr-defined]
    return out, None, parser.buffered


def encoded(values: Sequence[Any]) -> bytes:
    return b"".join(encode(v) for v in values)
