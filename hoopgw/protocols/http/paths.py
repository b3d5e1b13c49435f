"""
The request-target of a request to the HTTP front end, split into the
connection it names and the path the upstream will route.

The gateway serves C{https://GW:18443/<connection>/<rest>} and forwards
C{/<rest>} and the query to the connection's upstream.  Policy must judge the
path I{as the upstream will route it}, and upstreams decode paths: Go's
C{net/http} (the Kubernetes API server) routes on C{url.URL.Path}, where
C{%2F} has become C{/} and C{%2E%2E} C{..}.  So a path is decided on its
decoded segments, and what is forwarded is not the client's bytes but the
canonical encoding of exactly those segments (L{RoutedPath.path}): whatever
the client sent, the upstream sees the segments that were decided on.

Encodings that have no single meaning across servers are refused (HTTP 400),
never guessed at:

  - C{%2F} and C{%5C} (and a raw C{\\}): a C{/} inside a segment cannot be
    forwarded without C{%2F}, which Go decodes into a new segment, and some
    servers treat C{\\} as C{/};
  - dot-segments C{.} and C{..}, also as C{%2E}: Go leaves them in
    C{URL.Path} and some servers resolve them (RFC 3986 section 5.2.4),
    so C{pods/x/../../secrets} means different things to different hops;
    no honest client sends them (client-go builds paths with C{path.Join},
    curl removes them);
  - empty segments (C{//}): the API server's C{splitPath} keeps them as
    empty parts, C{http.ServeMux} would redirect them away;
  - a raw C{;}: path parameters (RFC 3986 section 3.3) that Java servers
    strip before routing (C{/admin;x} is C{/admin} to Tomcat);
  - C{%00} and other control characters, bytes that are not UTF-8 once
    decoded (overlong forms, surrogates), a C{%} not followed by two hex
    digits, any byte the RFC 3986 grammar does not allow raw (space, C{"},
    C{<}, non-ASCII, ...), and a fragment (C{#}).

Percent-decoding happens exactly once: C{%252F} is the three characters
C{%2F} in a segment, forwarded as C{%252F}.  No Unicode normalisation is
applied: a segment is its code points, as for Go.

The query is forwarded byte for byte, but only once it is known to parse the
same way for the gateway as for Go's C{url.ParseQuery}, which I{skips} pairs
it cannot parse (a C{;} since Go 1.17, a bad escape): such a query is
refused rather than judged on pairs the upstream would not see.
"""

from __future__ import annotations

from collections.abc import Iterator

from attrs import field, frozen

from hoopgw.config import CONNECTION_NAME

__all__ = [
    "DEFAULT_MAX_TARGET_LENGTH",
    "PathError",
    "QueryParams",
    "RoutedPath",
    "encode_segment",
    "parse_query",
    "split_request_target",
]

DEFAULT_MAX_TARGET_LENGTH = 16 * 1024
"""
The longest request-target accepted by default, in bytes.  RFC 9110 section
4.1 recommends supporting at least 8000 octets; Kubernetes paths and
selectors are far shorter.
"""

# The connection name, as hoopgw.config accepts it.

_ALPHA_DIGIT = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_UNRESERVED = _ALPHA_DIGIT + b"-._~"
# RFC 3986 section 3.3: pchar = unreserved / pct-encoded / sub-delims / ":" / "@".
# A raw ";" is refused (path parameters, see the module docstring).
_PATH_RAW = frozenset(_UNRESERVED + b"!$&'()*+,=:@%/")
# RFC 3986 section 3.4: query = *( pchar / "/" / "?" ); ";" refused as Go
# (since 1.17) drops the pairs that hold one.
_QUERY_RAW = frozenset(_UNRESERVED + b"!$&'()*+,=:@%/?")
# What the canonical form leaves unencoded: pchar literals but ";".
_CANONICAL_SAFE = frozenset((_UNRESERVED + b"!$&'()*+,=:@").decode("ascii"))
_HEX = frozenset(b"0123456789abcdefABCDEF")
# Decoded bytes a segment may not hold: "/" and "\" (separators to some
# server), NUL and the other controls (RFC 9110 section 5.5 spirit: no
# server agrees on them).
_FORBIDDEN_DECODED = frozenset(range(0x20)) | {0x7F, ord("/"), ord("\\")}


@frozen
class PathError:
    """
    Why a request-target is refused; the front end answers with C{status}
    (400, or 414 for an over-long target) and C{reason} as the message.
    """

    reason: str
    status: int = 400


def _items(value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in value)


@frozen
class QueryParams:
    """
    A parsed query: C{items} are the decoded (name, value) pairs in order,
    repeated names kept (Kubernetes repeats C{command=} for exec), and
    C{raw} is the query exactly as forwarded (without the C{?}).
    """

    raw: str = ""
    items: tuple[tuple[str, str], ...] = field(default=(), converter=_items)

    def get_all(self, name: str) -> tuple[str, ...]:
        """Every value of C{name}, in order."""
        return tuple(v for k, v in self.items if k == name)

    def first(self, name: str) -> str | None:
        """The first value of C{name} (what Go's C{Values.Get} returns), or C{None}."""
        for k, v in self.items:
            if k == name:
                return v
        return None

    def __contains__(self, name: object) -> bool:
        return any(k == name for k, _ in self.items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)


@frozen(cache_hash=True)  # a key of the proxy's caches, hashed per request
class RoutedPath:
    """
    A request-target, split and canonical.

    @ivar connection: the connection named by the first segment.
    @ivar segments: the decoded segments below the connection, as the
        upstream will route them (no empty, C{.} or C{..} segment; a trailing
        slash is not a segment, as for Kubernetes' C{splitPath}).
    @ivar path: what is forwarded: C{/} and the segments, each canonically
        percent-encoded (L{encode_segment}), and the trailing slash if the
        client sent one.
    @ivar query: the query as forwarded, byte-exact (without the C{?}).
    @ivar raw_query_params: C{query} parsed as Go parses it.
    @ivar trailing_slash: whether C{path} ends with a C{/} after a segment.
    """

    connection: str
    segments: tuple[str, ...]
    path: str
    query: str = ""
    raw_query_params: QueryParams = field(factory=QueryParams)
    trailing_slash: bool = False

    @property
    def decoded_path(self) -> str:
        """The path as the upstream decodes it (Go's C{URL.Path})."""
        return "/" + "/".join(self.segments) + ("/" if self.trailing_slash else "")

    @property
    def target(self) -> str:
        """The request-target to send upstream: C{path}, then C{?query} if any."""
        return self.path + "?" + self.query if self.query else self.path


def encode_segment(segment: str) -> str:
    """
    The canonical encoding of one decoded segment: unreserved characters
    and the pchar delimiters but C{;} stay as they are, everything else is
    UTF-8 percent-encoded with upper-case hex (RFC 3986 sections 2.1 and
    6.2.2.1).  C{%} itself becomes C{%25}, so decoding once gives back
    C{segment}.
    """
    if all(c in _CANONICAL_SAFE for c in segment):
        return segment
    out = []
    for c in segment:
        if c in _CANONICAL_SAFE:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
    return "".join(out)


def _percent_decode(raw: bytes, *, plus_is_space: bool) -> bytes | str:
    """
    Decode C{%XX} escapes once; C{+} becomes a space in queries (as Go's
    C{QueryUnescape}), stays C{+} in paths.  A C{%} without two hex digits
    is an error message (a C{str}), as Go refuses it too.
    """
    if b"%" not in raw and not (plus_is_space and b"+" in raw):
        return raw
    out = bytearray()
    i = 0
    n = len(raw)
    while i < n:
        b = raw[i]
        if b == 0x25:  # %
            if i + 2 >= n:
                return "a '%' not followed by two hex digits"
            h1, h2 = raw[i + 1], raw[i + 2]
            if h1 not in _HEX or h2 not in _HEX:
                return "a '%' not followed by two hex digits"
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        elif b == 0x2B and plus_is_space:  # +
            out.append(0x20)
            i += 1
        else:
            out.append(b)
            i += 1
    return bytes(out)


def parse_query(raw_query: bytes) -> QueryParams | PathError:
    """
    Parse a query (without the C{?}) exactly as Go's C{url.ParseQuery}
    does for the queries it accepts whole: pairs split on C{&}, empty pairs
    skipped, name and value split at the first C{=}, each unescaped with
    C{+} as a space.  A query Go would parse only in part (a C{;}, a bad
    escape) and a value that is not UTF-8 are refused.
    """
    for b in raw_query:
        if b not in _QUERY_RAW:
            if b == ord(";"):
                return PathError("a ';' in the query (Go drops such pairs)")
            return PathError(f"byte 0x{b:02x} is not allowed in a query (RFC 3986 section 3.4)")
    items = []
    for pair in raw_query.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        decoded = []
        for part in (name, value):
            result = _percent_decode(part, plus_is_space=True)
            if isinstance(result, str):
                return PathError(f"bad escape in the query: {result}")
            try:
                decoded.append(result.decode("utf-8"))
            except UnicodeDecodeError:
                return PathError("the query does not decode to UTF-8")
        items.append((decoded[0], decoded[1]))
    return QueryParams(raw_query.decode("ascii"), tuple(items))


def _decode_segment(raw: bytes) -> str | PathError:
    decoded = _percent_decode(raw, plus_is_space=False)
    if isinstance(decoded, str):
        return PathError(f"bad escape in the path: {decoded}")
    bad = _FORBIDDEN_DECODED.intersection(decoded)
    if bad:
        return PathError(
            f"the path segment {raw.decode('ascii')!r} decodes to byte 0x{min(bad):02x}, "
            "which is refused inside a segment"
        )
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        # Strict UTF-8: overlong forms and encoded surrogates fail here too.
        return PathError(f"the path segment {raw.decode('ascii')!r} is not UTF-8")
    if text in (".", ".."):
        return PathError("dot-segments ('.', '..') are refused in paths (RFC 3986 section 5.2.4)")
    return text


def split_request_target(
    raw_target: bytes, *, max_length: int = DEFAULT_MAX_TARGET_LENGTH
) -> RoutedPath | PathError:
    """
    Split an origin-form request-target (RFC 9112 section 3.2.1) into the
    connection it names and the canonical path and query to forward.

    Absolute-form, authority-form and asterisk-form targets (RFC 9112
    sections 3.2.2 to 3.2.4) are refused: the gateway is not a forward
    proxy.  See the module docstring for what else is refused and why.
    Never raises for any C{bytes}.
    """
    if len(raw_target) > max_length:
        return PathError(f"the request-target is longer than {max_length} bytes", 414)
    if not raw_target.startswith(b"/"):
        if raw_target == b"*":
            return PathError("asterisk-form request-targets are not served")
        if b"://" in raw_target:
            return PathError("absolute-form request-targets are not served (not a forward proxy)")
        return PathError("the request-target must be a path starting with '/'")
    raw_path, _, raw_query = raw_target.partition(b"?")
    for b in raw_path:
        if b not in _PATH_RAW:
            if b == ord(";"):
                return PathError("path parameters (';') are refused")
            if b == ord("#"):
                return PathError("a fragment ('#') is not part of a request-target")
            return PathError(f"byte 0x{b:02x} is not allowed in a path (RFC 3986 section 3.3)")
    if b"#" in raw_query:
        return PathError("a fragment ('#') is not part of a request-target")
    query = parse_query(raw_query)
    if isinstance(query, PathError):
        return query

    raw_segments = raw_path[1:].split(b"/")
    if not raw_segments[0] and len(raw_segments) > 1:
        return PathError("empty path segments ('//') are refused")
    connection = _decode_segment(raw_segments[0])
    if isinstance(connection, PathError):
        return connection
    if not CONNECTION_NAME.fullmatch(connection):
        return PathError("the path must start with a connection name: /<connection>/...", 404)
    rest = raw_segments[1:]
    trailing_slash = False
    if rest and rest[-1] == b"":
        # "/k8s/" and "/k8s/api/": the trailing slash is kept in the
        # forwarded path but is not a segment (splitPath trims it).
        rest = rest[:-1]
        trailing_slash = bool(rest)
    segments = []
    for raw in rest:
        if not raw:
            return PathError("empty path segments ('//') are refused")
        segment = _decode_segment(raw)
        if isinstance(segment, PathError):
            return segment
        segments.append(segment)
    path = "/" + "/".join(encode_segment(s) for s in segments)
    if trailing_slash:
        path += "/"
    return RoutedPath(
        connection=connection,
        segments=tuple(segments),
        path=path,
        query=query.raw,
        raw_query_params=query,
        trailing_slash=trailing_slash,
    )
