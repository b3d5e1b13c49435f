"""
Exceptions that cross service boundaries.  Each message is safe to log and
to show a client: none carries a credential.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

# The bidirectional controls: a terminal or a browser that does bidi shows
# the text after U+202E reversed, so what ran is not what reads.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_BIDI_CONTROLS = re.compile(f"[{_BIDI}]")
# C0 and C1 controls and DEL: a terminal acts on them (erase a line, set the
# title, hide text), so text from a client or a file never prints them raw;
# nor the bidirectional controls and line separators.
_CONTROLS = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")


_TYPE_NAMES = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (dict, "a table"),
    (list, "an array"),
)


def describe_type(value: object) -> str:
    """The TOML-ish name of a value's type, for "expected X, got Y" messages."""
    for kind, name in _TYPE_NAMES:
        if isinstance(value, kind):
            return name
    # tomllib also produces date, time and datetime values.
    return f"a {type(value).__name__}"


def quote(text: str, limit: int = 80) -> str:
    """Quote a (non-secret) value for an error message, JSON style, shortened."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return json.dumps(text, ensure_ascii=False)


def quote_choices(choices: Iterable[str]) -> str:
    """C{"a", "b", "c"}: the allowed values, sorted, for an error message."""
    return ", ".join(quote(choice) for choice in sorted(choices))


def terminal_safe(value: Any) -> str:
    """C{str(value)} with every control character shown as an escape (C{\\x1b}), safe to print on a terminal."""
    return _CONTROLS.sub(_escape, str(value))


def bidi_safe(value: Any) -> str:
    """C{str(value)} with the bidirectional controls shown as escapes (C{\\u202e}); line breaks kept."""
    return _BIDI_CONTROLS.sub(_escape, str(value))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class HoopgwError(Exception):
    """Base class of the gateway's own errors."""


class ConfigError(HoopgwError):
    """
    A configuration or policy file is unusable.

    The message names the file, the key (dotted, with list indexes) and what
    was expected, e.g.::

        hoopgw.toml: connections[1].kind: expected one of "http", "postgres",
        "ssh", got "mysql"
    """

    def __init__(self, file: object, key: str, expected: str) -> None:
        # file=None: a value with no file behind it (a secret reference read
        # at use, the embedded defaults); the key alone says where.
        self.file = str(file) if file is not None else None
        self.key = key
        self.expected = expected
        where = ": ".join(part for part in (self.file, key) if part) or "<embedded defaults>"
        super().__init__(f"{where}: {expected}")


class CommandError(HoopgwError):
    """An admin or user command cannot do what was asked; the message says why and what to do."""


class AuthenticationFailed(HoopgwError):
    """A credential was refused.  C{reason} is safe to log."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class AuditUnavailable(HoopgwError):
    """
    The audit log cannot be written, so the gateway refuses to forward
    anything (fail closed).
    """


class NotPermitted(HoopgwError):
    """Policy refused an action or a session; carries the decision."""

    def __init__(self, decision: object, message: str) -> None:
        self.decision = decision
        super().__init__(message)


class WrongKind(NotPermitted):
    """
    A session asked for through one front end names a connection of another
    kind (C{psql dbname=web1} where C{web1} is an SSH connection).  Only
    raised once policy has let the identity open that connection, so the
    message may name the connection's kind.
    """

    def __init__(self, decision: object, connection: str, kind: str, expected: str) -> None:
        self.connection = connection
        self.kind = kind
        self.expected = expected
        super().__init__(decision, f'connection "{connection}" is of kind {kind}, not {expected}')


class PluginError(HoopgwError):
    """
    An installed plugin cannot be used: two claim one connection kind or
    one policy condition, a kind is malformed or reserved, an object does
    not provide what it claims.  The message names the plugins.
    """
