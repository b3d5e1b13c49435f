"""
Masking the bodies of an HTTP connection's responses, for the masks that
apply to the identity (policy C{[[mask]]}: C{json_paths}, C{kinds},
C{detectors}, C{patterns}):

  - a JSON body (C{application/json}, C{*+json}, a watch stream's
    documents one after the other) streams through
    L{hoopgw.masking.jsonbody.JsonStreamMasker}: paths and kinds, and the
    detectors on every string, member name and number;
  - a C{text/plain} body (C{kubectl logs}) streams through
    L{hoopgw.masking.stream.StreamMasker}: the detectors;
  - a body of another type (other text, none, or unknown) is looked at:
    JSON if it starts as JSON, else text through the detectors; while masks
    name JSON paths, only C{text/plain} or an untyped body may be text;
  - a text body in a charset the detectors cannot read (UTF-16, ...) is
    refused;
  - a compressed body, a part of one (C{206}, C{Content-Range}), a form
    that encodes the same objects otherwise (protobuf, CBOR, YAML,
    MessagePack), a multipart body or an ambiguous type is refused (502) --
    the gateway asks for none of them (L{request_headers}), so only an
    upstream that ignores the request sends one;
  - images, audio, video, fonts and archives pass unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from attrs import define

from hoopgw.masking.jsonbody import JsonBodyError, JsonRules, JsonStreamMasker
from hoopgw.masking.jsonpath import JsonPath, compile_json_path
from hoopgw.masking.service import Counts, SessionMasks
from hoopgw.masking.stream import StreamMasker

__all__ = ["BodyMasker", "JsonBodyError", "request_headers", "response_header", "response_masker"]


class BodyMasker(Protocol):
    """A response body's masking, as it streams: what each chunk becomes, and what is left at its end."""

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...

_JSON = re.compile(rb"\s*application/(?:[\w.+-]*\+)?json(?:l)?\s*(?:;|$)|\s*application/x-ndjson\s*(?:;|$)", re.I)
# Forms of the same objects the gateway cannot follow: never asked for, refused.
_OTHER_FORMS = re.compile(rb"protobuf|cbor|msgpack|yaml|bson|smile|avro", re.I)
# Media that carry no text a detector or a path could mean: passed as they are.
_BINARY = re.compile(
    rb"(?:image|audio|video|font)/|application/(?:zip|gzip|x-gzip|x-tar|x-bzip2|x-xz|zstd|pdf|wasm)\s*(?:;|$)", re.I
)
# Asking for a compressed body or a part of one (a JSON document cut in the
# middle cannot be followed): a masked response is whole and plain.
_WHOLE_BODY = frozenset({b"accept-encoding", b"accept-charset", b"range", b"if-range"})
# Charsets the detectors read (ASCII-compatible, one byte per ASCII character).
_READABLE_CHARSETS = frozenset({b"utf-8", b"utf8", b"us-ascii", b"ascii", b"iso-8859-1", b"latin1", b"latin-1"})
_CHARSET = re.compile(rb";\s*charset\s*=\s*\"?([^\s;\"]+)", re.I)
_BOM = b"\xef\xbb\xbf"
_SNIFF_LIMIT = 4096


def request_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """
    The request headers for a session whose responses are masked: no
    compression, no ranges, and JSON rather than the other forms of the
    same objects (protobuf, YAML, ...).
    """
    out = []
    accepts: list[bytes] = []
    asked = False
    for name, value in headers:
        lower = name.lower()
        if lower in _WHOLE_BODY:
            continue
        if lower == b"accept":
            asked = True
            accepts.extend(r.strip() for r in value.split(b",") if r.strip() and not _OTHER_FORMS.search(r))
            continue
        out.append((name, value))
    if asked:
        out.append((b"Accept", b", ".join(accepts) if accepts else b"application/json"))
    return out


# Response headers that frame or date the answer: no value of the API's in them,
# and a masked Content-Length (nine digits: a bare SSN) would break the framing.
_FRAMING_HEADERS = frozenset({
    b"content-length", b"transfer-encoding", b"content-type", b"content-encoding", b"connection", b"keep-alive",
    b"date", b"expires", b"last-modified", b"age", b"retry-after",
})


def response_header(masks: SessionMasks, name: bytes, value: bytes, counts: Counts) -> bytes:
    """
    A response header's value through the detectors, as the body is (a
    download's file name, a created resource's Location, a header of the
    API's own carry its values); the same object if nothing is found.
    """
    if not masks.finders or name.lower() in _FRAMING_HEADERS:
        return value
    text = value.decode("latin-1")
    masked = masks.client_text(text, counts)
    return value if masked is text else masked.encode("latin-1", "replace")


# Answers whose Status message may quote the values of the request or the object.
QUOTING_CODES = frozenset({400, 422})
WITHHELD = "the API server's message is withheld: it may quote values masked for you"


class _WithheldText:
    strategy = "redact"

    def value(self, text: str) -> str:
        return WITHHELD

    text_value = value


@define(frozen=True)
class _Withheld:
    """A Status object's messages, as a mask (counted under the identity's first path mask)."""

    name: str
    masker: Any = _WithheldText()
    paths: tuple[JsonPath, ...] = (compile_json_path("message"), compile_json_path("details.causes[*].message"))
    kinds: Mapping[str, Any] = {}
    kind_paths: tuple[JsonPath, ...] = ()


class _TextBody:
    """A text body through the detectors: C{feed}/C{finish} as L{JsonStreamMasker}'s."""

    def __init__(self, masks: SessionMasks, counts: Counts) -> None:
        self._stream = StreamMasker(lambda text: masks.replacements(text, counts), keys=masks.finds_keys())

    def feed(self, data: bytes) -> bytes:
        return self._stream.feed(data)

    def finish(self) -> bytes:
        return self._stream.flush()


class _Sniffed:
    """
    A body whose type does not say JSON: masked as JSON if it is JSON (its
    first character, after white space, opens an object or an array), as
    text otherwise.
    """

    def __init__(self, masks: SessionMasks, counts: Counts) -> None:
        self._masks = masks
        self._counts = counts
        self._head = b""
        self._inner: BodyMasker | None = None

    def _choose(self, head: bytes) -> BodyMasker:
        start = head[3:] if head.startswith(_BOM) else head
        first = start.lstrip(b" \t\r\n")[:1]
        inner: BodyMasker
        if first in (b"{", b"["):
            inner = JsonStreamMasker(self._masks.client_json, self._masks, self._counts)
        elif self._masks.finders:
            inner = _TextBody(self._masks, self._counts)
        else:
            inner = _Unchanged()
        self._inner = inner
        return inner

    def feed(self, data: bytes) -> bytes:
        inner = self._inner
        if inner is None:
            head = self._head + data
            if not head.lstrip(b" \t\r\n\xef\xbb\xbf") and len(head) < _SNIFF_LIMIT:
                self._head = head
                return b""
            self._head = b""
            inner = self._choose(head)
            data = head
        return inner.feed(data)

    def finish(self) -> bytes:
        inner = self._inner
        if inner is None:
            inner = self._choose(self._head)
            return inner.feed(self._head) + inner.finish()
        return inner.finish()


class _Unchanged:
    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


def response_masker(
    masks: SessionMasks, code: int, headers: Sequence[tuple[bytes, bytes]], counts: Counts
) -> BodyMasker | str | None:
    """
    How to mask a response body with this status and these headers: an
    object with C{feed(bytes) -> bytes} and C{finish() -> bytes}, C{None}
    (nothing in it to mask), or a refusal (C{str}: why it cannot be masked).
    """
    content_type = b""
    types = 0
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            return f"the response is {value.decode('latin-1')}-encoded, and masks apply to it"
        if lower == b"content-type":
            content_type = value
            types += 1
        elif lower == b"content-range":
            return "the response is a part of a body (Content-Range), and masks apply to it"
    if code == 206:
        return "the response is a part of a body (206), and masks apply to it"
    if types > 1:
        return "the response has two Content-Type headers (clients may read either), and masks apply to it"
    charset = _CHARSET.search(content_type)
    if charset is not None and charset.group(1).lower() not in _READABLE_CHARSETS:
        return f"the response is in {charset.group(1).decode('latin-1')}, which the detectors cannot read, and masks apply to it"
    if _JSON.match(content_type):
        rules = masks.client_json
        if rules is not None and code in QUOTING_CODES:
            # The API server's explanation of an invalid write quotes values
            # (a Pod update's diff of its spec): withheld while paths are masked.
            rules = JsonRules((*rules.masks, _Withheld(rules.masks[0].name)))
        return JsonStreamMasker(rules, masks, counts)
    media = content_type.split(b";", 1)[0].strip().lower()
    if _OTHER_FORMS.search(media) or media.startswith(b"multipart/"):
        return f"the response is {media.decode('latin-1')}, which the gateway cannot mask, and masks apply to it"
    if _BINARY.match(media):
        return None
    if masks.client_json is not None and media not in (b"", b"text/plain"):
        return (
            f"the response is {media.decode('latin-1')}, not JSON, and masks name JSON paths in this "
            "connection's responses"
        )
    if media == b"text/plain":
        # Plain text (kubectl logs: lines that may start with "[" or "{"): the detectors only.
        return _TextBody(masks, counts) if masks.finders else None
    return _Sniffed(masks, counts)
