"""
Credentials in request-targets never reach the audit trail.

Clients put secrets in URLs: OAuth's C{access_token}, API keys, S3 and Azure
pre-signed URLs (C{X-Amz-Signature}, C{sig}), a C{password} in a query.
The gateway forwards the request-target as it is, but what it I{records}
(an action's C{input}, a C{request.refused} record's target) has the value of
every credential-named parameter replaced by L{MARKER}:

  - a parameter is credential-named if its name, percent-decoded once (as
    the upstream decodes it, C{+} as a space), with surrounding spaces
    removed, case-folded and with C{-} read as C{_}, is one of
    L{CREDENTIAL_NAMES} or ends with one of L{CREDENTIAL_SUFFIXES}
    (C{access_token}, C{X-Amz-Security-Token}, C{client_secret}, ...);
  - every occurrence is redacted (C{?token=a&token=b}), pairs being split on
    C{&} and on C{;} (which the gateway refuses in forwarded targets, but a
    refused target is recorded too), in the query, in the fragment (OAuth's
    implicit flow puts C{access_token} there) and in path parameters
    (C{/x;jsessionid=...});
  - a value that is a JWT (three base64url parts, the first two JSON
    objects: C{eyJ...}) is redacted whatever its name;
  - the name stays, so the trail still says that a credential was sent, and
    where.

Redacting is a pure function of the target, so the proxy's action cache
keeps the redacted form; a target without C{?}, C{#} or C{;} costs one scan.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

__all__ = [
    "CREDENTIAL_NAMES",
    "CREDENTIAL_SUFFIXES",
    "MARKER",
    "is_credential_name",
    "redact_query",
    "redact_target",
]

MARKER = "<redacted>"
"""What a credential's value becomes: not a valid URL character, so it cannot be mistaken for what was sent."""

CREDENTIAL_NAMES = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "auth",
        "authorization",
        "bearer",
        "client_secret",
        "code",
        "credential",
        "credentials",
        "id_token",
        "jsessionid",
        "jwt",
        "key",
        "pass",
        "passwd",
        "password",
        "phpsessid",
        "private_token",
        "pwd",
        "refresh_token",
        "secret",
        "session",
        "session_id",
        "sessionid",
        "sid",
        "sig",
        "signature",
        "token",
        "x_amz_credential",
        "x_amz_security_token",
        "x_amz_signature",
        "x_goog_credential",
        "x_goog_signature",
    }
)
"""Parameter names (normalised: case-folded, C{-} as C{_}) whose values are credentials."""

CREDENTIAL_SUFFIXES = ("token", "secret", "password", "passwd", "signature", "apikey", "api_key")
"""A normalised name ending with one of these is a credential too (C{csrf_token}, C{oauth_signature})."""

_SPECIAL = re.compile(r"[?#;]")
# Every credential name (and a JWT, and any escape) contains one of these:
# a query without any is returned at once, after one scan.
# (Searched in the lower-cased query: an IGNORECASE alternation is ten times slower.)
_CANDIDATE = re.compile(r"token|secret|pass|pwd|sig|key|auth|code|jwt|bearer|sess|sid|cred|eyj|%")
_PAIRS = re.compile(r"([&;])")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def is_credential_name(name: str) -> bool:
    """Whether a query or path parameter named C{name} (as sent, percent-encoded) holds a credential."""
    if "%" in name or "+" in name:
        name = unquote_plus(name, errors="replace")
    normal = name.strip().casefold().replace("-", "_")
    return normal in CREDENTIAL_NAMES or normal.endswith(CREDENTIAL_SUFFIXES)


def _is_jwt(value: str) -> bool:
    if "%" in value:
        value = unquote_plus(value, errors="replace")
    return "eyJ" in value and _JWT.search(value) is not None


def redact_query(query: str) -> str:
    """
    C{query} (without the C{?}) with the value of every credential-named
    parameter, and every JWT value, replaced by L{MARKER}; C{query} itself
    (the same object) when there is nothing to redact.
    """
    if not query or _CANDIDATE.search(query.lower()) is None:
        return query
    parts = _PAIRS.split(query)
    changed = False
    for index in range(0, len(parts), 2):
        name, equals, value = parts[index].partition("=")
        if equals and value and value != MARKER and (is_credential_name(name) or _is_jwt(value)):
            parts[index] = name + "=" + MARKER
            changed = True
    return "".join(parts) if changed else query


def redact_target(target: str) -> str:
    """
    A request-target as it may be recorded: L{redact_query} applied to its
    query, its fragment and the parameters of each path segment.
    """
    if _SPECIAL.search(target) is None:
        return target
    rest, hash_, fragment = target.partition("#")
    path, question, query = rest.partition("?")
    if ";" in path:
        segments = path.split("/")
        for index, segment in enumerate(segments):
            head, semicolon, params = segment.partition(";")
            if semicolon:
                segments[index] = head + ";" + redact_query(params)
        path = "/".join(segments)
    redacted = path + question + redact_query(query) + hash_ + redact_query(fragment)
    return target if redacted == target else redacted
