"""
What the HTTP front end writes to its client of its own: the body of an
error it answers itself (a Kubernetes C{Status} or C{{"error": ...}}), the
upstream response headers that may reach the client, status phrases, and
the message an upstream error body carries (for the audit record).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from hoopgw.model import Connection
from hoopgw.protocols.http.headers import HOP_BY_HOP
from hoopgw.protocols.http.k8s import API_PREFIXES
from hoopgw.protocols.http.paths import RoutedPath
from hoopgw.protocols.http.settings import HTTPSettings

__all__ = [
    "RESPONSE_HOP_BY_HOP",
    "SET_COOKIE",
    "error_body",
    "is_kubernetes",
    "phrase",
    "response_headers",
    "response_pairs",
    "upstream_message",
]

_STATUS_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "RequestEntityTooLarge",
    500: "InternalError",
    501: "NotImplemented",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}

# Response headers that describe the upstream connection, not the response.
RESPONSE_HOP_BY_HOP = HOP_BY_HOP | {b"proxy-authenticate", b"proxy-authentication-info"}

# Response headers that hand the client a session of the upstream, minted
# for the gateway's own credential (see L{response_headers}).
SET_COOKIE = frozenset({b"set-cookie", b"set-cookie2"})


def error_body(code: int, message: str, *, kubernetes: bool) -> bytes:
    """
    The body of an error the gateway itself answers: a Kubernetes
    C{Status} (what kubectl prints: "Error from server (Forbidden):
    <message>") or C{{"error": message}}.
    """
    if kubernetes:
        document: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": _STATUS_REASONS.get(code, ""),
            "code": code,
        }
    else:
        document = {"error": message}
    return json.dumps(document).encode("utf-8") + b"\n"


def response_headers(
    raw: Sequence[tuple[bytes, Sequence[bytes]]], *, pass_cookies: bool = False
) -> list[tuple[bytes, list[bytes]]]:
    """
    The upstream response's headers that reach the client: all but the
    hop-by-hop ones and those its C{Connection} header names (RFC 9110
    section 7.6.1); the gateway frames the response to the client itself.
    C{Set-Cookie} and C{Set-Cookie2} are removed unless C{pass_cookies}:
    a session the upstream opened for the gateway's credential is not the
    client's to keep.
    """
    nominated: set[bytes] = set()
    for name, values in raw:
        if name.lower() == b"connection":
            for value in values:
                nominated.update(o.strip(b" \t").lower() for o in value.split(b",") if o.strip())
    return [
        (name, list(values))
        for name, values in raw
        if name.lower() not in RESPONSE_HOP_BY_HOP
        and name.lower() not in nominated
        and (pass_cookies or name.lower() not in SET_COOKIE)
    ]


def response_pairs(headers: Sequence[tuple[bytes, bytes]], *, pass_cookies: bool) -> list[tuple[bytes, bytes]]:
    """L{response_headers} for a head's (name, value) pairs: the hot path's form."""
    nominated: frozenset[bytes] | set[bytes] = frozenset()
    kept = []
    for pair in headers:
        lower = pair[0].lower()
        if lower in RESPONSE_HOP_BY_HOP:
            if lower == b"connection":
                nominated = set(nominated)
                nominated.update(o.strip(b" \t").lower() for o in pair[1].split(b",") if o.strip())
            continue
        if not pass_cookies and lower in SET_COOKIE:
            continue
        kept.append(pair)
    if nominated:
        kept = [pair for pair in kept if pair[0].lower() not in nominated]
    return kept


def upstream_message(body: bytes) -> str | None:
    """The C{message} of a JSON error body (a Kubernetes Status), if any."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # (an upstream's "[[[[..." nests deeper than the parser recurses)
        return None
    if isinstance(document, dict):
        message = document.get("message") or document.get("error")
        if isinstance(message, str):
            return message[:1000]
    return None


def phrase(code: int) -> bytes:
    try:
        return HTTPStatus(code).phrase.encode("ascii")
    except ValueError:
        return b""


def is_kubernetes(connection: Connection | None, routed: RoutedPath | None) -> bool:
    """Whether errors take the Kubernetes C{Status} form (see the module docstring)."""
    if connection is not None and isinstance(connection.settings, HTTPSettings) and connection.settings.impersonate:
        return True
    if connection is not None and routed is not None and routed.segments[:1] and routed.segments[0] in API_PREFIXES:
        return True
    if connection is not None:
        return False
    # Unknown connections get the Kubernetes form too: kubectl is the client
    # most likely to be pointed at a wrong name, and prints its message.
    return connection is None
