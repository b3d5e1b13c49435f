"""
Request headers on their way from the client to the upstream.

The client's credential stops at the gateway (the gateway authenticates to
the upstream with the connection's own), and so does anything by which the
client could speak for someone else: impersonation, forwarding and
front-proxy identity headers.  Hop-by-hop headers end at the gateway too
(RFC 9110 section 7.6.1): the proxy frames the upstream request itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from attrs import field, frozen

from hoopgw.model import Identity
from hoopgw.protocols.http.wire import FIELD_VALUE, TOKEN

__all__ = [
    "HOP_BY_HOP",
    "HeaderError",
    "SanitizedHeaders",
    "bearer_token",
    "impersonation_headers",
    "sanitize_request_headers",
]

HOP_BY_HOP = frozenset({
    b"connection",
    b"keep-alive",
    b"proxy-connection",  # not standard, still sent by some clients
    b"te",
    b"trailer",
    b"transfer-encoding",  # the proxy re-frames the body
    b"upgrade",
})
"""
Headers that describe one connection (RFC 9110 section 7.6.1, RFC 9112
section 9.6), lower-case; C{upgrade} passes only when the proxy is carrying
out an allowed upgrade.
"""

# Credentials and claims about who or where the client is.
_REMOVED = frozenset({
    b"authorization",
    b"proxy-authorization",
    b"forwarded",
    b"x-real-ip",
    # Kubernetes request-header ("front proxy") authentication: honoured by
    # an API server that trusts the gateway's client certificate as a front
    # proxy; the defaults of --requestheader-*-headers.
    b"x-remote-user",
    b"x-remote-group",
    b"x-remote-uid",
    # Method overrides: a framework behind the upstream (Rails, Laravel,
    # Express method-override, Google APIs) would run another method than
    # the one the gateway decided.
    b"x-http-method-override",
    b"x-http-method",
    b"x-method-override",
    # Path overrides: Zend/Laminas, older Symfony and IIS applications
    # route X-Original-URL or X-Rewrite-URL instead of the request's path.
    b"x-original-url",
    b"x-rewrite-url",
})

# Sessions of the upstream: a client must not present one the gateway did
# not mint for it (see L{sanitize_request_headers}'s C{pass_cookies}).
_COOKIES = frozenset({b"cookie", b"cookie2"})
_REMOVED_PREFIXES = (b"impersonate-", b"x-forwarded-", b"x-remote-extra-")

# RFC 9110 section 5.5: field-vchar = VCHAR / obs-text, with SP and HTAB
# between; CR, LF and NUL must be rejected, other controls are no better.
_VALUE_BYTES = frozenset(range(0x20, 0x7F)) | frozenset(range(0x80, 0x100)) | {0x09}


@frozen
class HeaderError:
    """Why a request's headers are refused; the front end answers C{status}."""

    reason: str
    status: int = 400


def _pairs(value: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((bytes(n), bytes(v)) for n, v in value)


def _names(value: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(value)


@frozen
class SanitizedHeaders:
    """
    @ivar headers: the headers to forward, in order, duplicates kept, names
        and values as received (values without surrounding whitespace).
    @ivar removed: the lower-cased names that were removed, each once, in
        order of first appearance (for the audit trail; values never are).
    """

    headers: tuple[tuple[bytes, bytes], ...] = field(converter=_pairs)
    removed: tuple[bytes, ...] = field(converter=_names)


def _is_token(value: bytes) -> bool:
    return TOKEN.fullmatch(value) is not None


def sanitize_request_headers(
    headers: Sequence[tuple[bytes, bytes]],
    *,
    allow_upgrade: bool = False,
    pass_cookies: bool = False,
    parsed: bool = False,
) -> SanitizedHeaders | HeaderError:
    """
    Check a request's headers and remove what must not reach the upstream:

      - the client's credentials (C{Authorization}, C{Proxy-Authorization});
      - identity claims: C{Impersonate-*} (user, group, uid, extra),
        C{X-Remote-User}, C{X-Remote-Group}, C{X-Remote-Uid},
        C{X-Remote-Extra-*};
      - forwarding claims: C{Forwarded}, C{X-Forwarded-*}, C{X-Real-Ip}
        (the gateway states the client address itself if at all);
      - method overrides: C{X-HTTP-Method-Override}, C{X-HTTP-Method},
        C{X-Method-Override} (the method decided is the method sent), and
        path overrides: C{X-Original-URL}, C{X-Rewrite-URL};
      - C{Cookie} (and the obsolete C{Cookie2}), unless C{pass_cookies};
      - hop-by-hop headers (L{HOP_BY_HOP}) and every header the
        C{Connection} headers name (RFC 9110 section 7.6.1); C{Upgrade}
        stays when C{allow_upgrade}, and the caller then sends its own
        C{Connection: Upgrade}.

    Names are compared case-insensitively, and for the credentials,
    claims and overrides with C{_} read as C{-}.  A name that is not a token
    (which includes the leading whitespace of an obs-fold continuation line,
    RFC 9112 section 5.2) or a value with CR, LF, NUL or another control
    character (RFC 9110 section 5.5) refuses the request.  With C{parsed},
    the fields come from L{hoopgw.protocols.http.wire.Parser}, which has
    already refused those by the same grammar, and are not checked again.
    """
    checked: list[tuple[bytes, bytes, bytes]] = []
    nominated: set[bytes] = set()
    for name, value in headers:
        if not parsed:
            if not _is_token(name):
                return HeaderError(f"invalid header name {name[:64]!r}")
            value = value.strip(b" \t")
            if FIELD_VALUE.fullmatch(value) is None:
                for b in value:
                    if b not in _VALUE_BYTES:
                        return HeaderError(
                            f"header {name.decode('ascii')!r} has byte 0x{b:02x} in its value"
                        )
        lower = name.lower()
        if lower == b"connection":
            # Connection = #connection-option; empty list elements are allowed
            # (RFC 9110 section 5.6.1).
            for option in value.split(b","):
                option = option.strip(b" \t")
                if not option:
                    continue
                if not _is_token(option):
                    return HeaderError(f"invalid Connection option {option[:64]!r}")
                nominated.add(option.lower())
        checked.append((name, lower, value))
    if allow_upgrade:
        nominated.discard(b"upgrade")

    kept: list[tuple[bytes, bytes]] = []
    removed: dict[bytes, None] = {}
    for name, lower, value in checked:
        # CGI, WSGI and Rack name a header HTTP_X_HTTP_METHOD_OVERRIDE
        # whether it was sent with "-" or "_": both spellings are removed.
        dashed = lower.replace(b"_", b"-")
        if lower == b"upgrade" and allow_upgrade:
            kept.append((name, value))
        elif (
            lower in HOP_BY_HOP
            or dashed in _REMOVED
            or dashed.startswith(_REMOVED_PREFIXES)
            or lower in nominated
            or (lower in _COOKIES and not pass_cookies)
        ):
            removed[lower] = None
        else:
            kept.append((name, value))
    return SanitizedHeaders(kept, tuple(removed))


def _header_value(text: str, what: str) -> bytes:
    value = text.encode("utf-8")
    if not value or value != value.strip(b" \t") or any(b not in _VALUE_BYTES for b in value):
        # A value that the HTTP layer would change (trim) or that could
        # split the header would name someone else upstream.
        raise ValueError(f"{what} {text!r} cannot be sent as an HTTP header value")
    return value


def impersonation_headers(
    identity: Identity, *, user_prefix: str = "", group_prefix: str = ""
) -> list[tuple[bytes, bytes]]:
    """
    The Kubernetes user impersonation headers for C{identity}: one
    C{Impersonate-User} (the subject) and one C{Impersonate-Group} per group,
    in order ("User impersonation" in the Kubernetes authentication docs;
    repeated headers are how several groups are sent).

    The connection's own credential must be allowed to C{impersonate} those
    users and groups.  The prefixes play the part of the API server's
    C{--oidc-username-prefix} and C{--oidc-groups-prefix}, keeping gateway
    identities apart from the cluster's own (C{"hoopgw:"}).

    @raise ValueError: for a subject or group that is empty, has surrounding
        whitespace or control characters: sent, it would name someone else.
    """
    headers = [(b"Impersonate-User", _header_value(user_prefix + identity.subject, "subject"))]
    for group in identity.groups:
        headers.append((b"Impersonate-Group", _header_value(group_prefix + group, "group")))
    return headers


_BEARER = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +([!-~]+)[ \t]*")


def bearer_token(values: Sequence[bytes] | None) -> str | None:
    """The token of the single C{Authorization: Bearer} header, if that is what was sent."""
    if not values or len(values) != 1:
        return None
    match = _BEARER.fullmatch(values[0])
    return match.group(1).decode("ascii") if match else None
