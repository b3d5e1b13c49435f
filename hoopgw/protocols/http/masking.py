"""
Masking the bodies of an HTTP connection's responses, for the masks that
apply to the identity (policy C{[[mask]]}: C{json_paths}, C{kinds},
C{detectors}, C{patterns}):

  - a JSON body (C{application/json}, C{*+json}, a watch stream's
    documents one after the other) streams through
    L{hoopgw.masking.jsonbody.JsonStreamMasker}: paths and kinds, and the
    detectors on every string, member name and number;
  - a text body (C{text/*}, XML, form data; C{kubectl logs}) streams
    through L{hoopgw.masking.stream.StreamMasker}: the detectors;
  - a body in a form that encodes the same objects otherwise (protobuf,
    CBOR, YAML, MessagePack) while masks name JSON paths, or a compressed
    body, is refused (502) -- the gateway asks the upstream for JSON and
    no compression (L{request_headers}), so only an upstream that ignores
    C{Accept} sends one;
  - any other body (images, archives) passes unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from hoopgw.masking.jsonbody import JsonBodyError, JsonStreamMasker
from hoopgw.masking.stream import StreamMasker

__all__ = ["JsonBodyError", "request_headers", "response_masker"]

_JSON = re.compile(rb"\s*application/(?:[\w.+-]*\+)?json(?:l|-seq)?\s*(?:;|$)|\s*application/x-ndjson\s*(?:;|$)", re.I)
_TEXT = re.compile(
    rb"\s*(?:text/|application/(?:[\w.+-]*\+)?xml\s*(?:;|$)|application/x-www-form-urlencoded|application/javascript)",
    re.I,
)
# Forms of the objects JSON paths name that the gateway cannot follow.
_OTHER_FORMS = re.compile(rb"protobuf|cbor|msgpack|yaml|bson", re.I)


def request_headers(headers: Sequence[tuple[bytes, bytes]], *, json_paths: bool) -> list[tuple[bytes, bytes]]:
    """
    The request headers for a session whose responses are masked: no
    compression, and (when masks name JSON paths) JSON rather than the
    other forms of the same objects.
    """
    out = []
    accepts: list[bytes] = []
    for name, value in headers:
        lower = name.lower()
        if lower == b"accept-encoding":
            continue
        if lower == b"accept" and json_paths:
            accepts.extend(r.strip() for r in value.split(b",") if r.strip() and not _OTHER_FORMS.search(r))
            continue
        out.append((name, value))
    if json_paths:
        out.append((b"Accept", b", ".join(accepts) if accepts else b"application/json"))
    return out


class _TextBody:
    """A text body through the detectors: C{feed}/C{finish} as L{JsonStreamMasker}'s."""

    def __init__(self, masks: Any, counts: dict) -> None:
        self._stream = StreamMasker(lambda text: masks.replacements(text, counts), keys=masks.finds_keys())

    def feed(self, data: bytes) -> bytes:
        return self._stream.feed(data)

    def finish(self) -> bytes:
        return self._stream.flush()


def response_masker(masks: Any, headers: Sequence[tuple[bytes, bytes]], counts: dict) -> Any:
    """
    How to mask a response body with these headers: an object with
    C{feed(bytes) -> bytes} and C{finish() -> bytes}, C{None} (nothing to
    mask), or a refusal (C{str}: why the body cannot be masked).
    """
    content_type = b""
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            return f"the response is {value.decode('latin-1')}-encoded, and masks apply to it"
        if lower == b"content-type":
            content_type = value
    if _JSON.match(content_type):
        return JsonStreamMasker(masks.client_json, masks, counts)
    if masks.client_json is not None and _OTHER_FORMS.search(content_type):
        return f"the response is {content_type.decode('latin-1')}, not JSON, and masks name JSON paths in it"
    if masks.finders and (not content_type or _TEXT.match(content_type)):
        return _TextBody(masks, counts)
    return None
