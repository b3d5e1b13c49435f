"""
One Redis command as a hoopgw action: its kind, the text the trail shows,
the facts policy matches (C{redis.commands}, C{redis.keys}) and the details
policy does not look at.  Pure functions over a parsed L{Command} and what
the target said the command is (L{Lookup}).

Kinds.  One per command, as the target names it (not as the client typed
it), lower-case, a container's subcommand after a dot: C{redis.get},
C{redis.flushall}, C{redis.config.set}, C{redis.client.kill}.  A name the
target does not know, or could not be asked about, is C{redis.unknown}: its
spelling is the client's choice, and the kinds of the trail and of the
metrics stay a set the target bounds.

Facts.  C{redis.commands}: the command's name upper-case, and for a
subcommand the ACL spelling too (C{("CONFIG", "CONFIG|SET")}).
C{redis.keys}: its keys (L{hoopgw_redis.commands.find_keys}), as text
(UTF-8, other bytes as C{\\xNN}).  Both may be I{incomplete}
(L{Described.keys_unknown}, L{Described.commands_unknown}): then every deny
or review rule on them must match (L{hoopgw_redis.policy}):

  - keys: a spec the target cannot resolve, a key longer than
    C{max_key_length} or more than C{max_keys} keys, a script (C{EVAL},
    C{FCALL}, ...: a script may touch keys it does not declare), a command
    that reaches every key (C{FLUSHALL}, C{FLUSHDB}, C{SWAPDB}, C{KEYS},
    C{SCAN}, C{RANDOMKEY}, C{DEBUG}, C{REPLICAOF}), and any command the
    target could not be asked about;
  - commands: a script (it runs commands the gateway cannot see), and any
    command the target could not be asked about (it may be another one
    renamed).

The text.  The arguments as C{redis-cli} would quote them; an argument over
C{max_shown} bytes as its length and the start of its SHA-256
(C{<1048576 bytes sha256:3f2a...>}), never the value; past C{max_args}
arguments, a count of the rest.  Passwords are never recorded: C{AUTH}'s,
C{HELLO ... AUTH}'s, C{MIGRATE ... AUTH/AUTH2}'s (options read as
redis-server reads them; past one it would refuse, every argument),
C{ACL SETUSER}'s C{>pass}/C{<pass}/C{#hash}/C{!hash} rules (in a selector
too) and C{CONFIG SET}'s password parameters show as C{<redacted>}.  A
command with an argument not shown as it is (L{Described.hidden}) has its
error replies recorded by their code alone: redis-server quotes arguments
in some errors (C{ACL SETUSER}'s refused rule, an unknown command's first
arguments), and a script can return any of them as an error.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from attrs import field, frozen

from hoopgw_redis.commands import NO_KEYS, CommandInfo, KeySet, find_keys, resolve
from hoopgw_redis.resp import Command, keyword

__all__ = ["Described", "Lookup", "Limits", "describe", "render", "REDACTED"]

REDACTED = "<redacted>"

# Canonical names (the target's), lower-case.
SCRIPTS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
KEYSPACE = frozenset({"flushall", "flushdb", "swapdb", "keys", "scan", "randomkey", "debug", "replicaof", "slaveof"})
# CONFIG SET parameters whose values are secrets (redis-server redacts these too).
_SECRET_PARAMETERS = frozenset({
    b"requirepass", b"masterauth", b"primaryauth", b"tls-key-file-pass", b"tls-client-key-file-pass",
})
_ACL_SECRET_PREFIXES = (b">", b"<", b"#", b"!")
# An ACL rule's parts: a selector "(~k >pw)", or a rule typed with a space in it.
_ACL_PARTS = re.compile(rb"[\s()]+")
_KIND_UNSAFE = re.compile(r"[^a-z0-9_.-]")


@frozen
class Lookup:
    """
    What the target said a command name is: its L{CommandInfo}, C{info=None}
    with C{known=True} when it said the name is no command, or
    C{known=False} when it could not be asked (C{why}).
    """

    info: CommandInfo | None = None
    known: bool = True
    why: str = ""

    @classmethod
    def unavailable(cls, why: str) -> Lookup:
        return cls(None, False, why)


NOT_A_COMMAND = Lookup()


@frozen
class Limits:
    """What the trail and the facts show of one command."""

    max_shown: int = 256  # an argument longer than this is summarised
    max_args: int = 64  # arguments shown in the input; the rest are counted
    max_key_length: int = 1024  # a longer key makes the key set incomplete
    max_keys: int = 1024  # more keys make it incomplete


@frozen
class Described:
    """One command as an action: see the module's docstring."""

    kind: str
    canonical: str  # "GET", "CONFIG|SET"; a name the target does not know: as typed, upper-case
    input: str
    commands: tuple[str, ...]
    keys: tuple[str, ...]
    keys_unknown: str = ""  # why the key set is incomplete ("": it is complete)
    commands_unknown: str = ""  # why the command's own commands cannot be read
    details: dict[str, Any] = field(factory=dict)
    # An argument is not in the input as it is (a password, a long one summarised, one past
    # max_args): an error reply may quote it, so its text is not recorded (only its code).
    hidden: bool = False

    @property
    def attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {"redis.commands": self.commands}
        if self.keys or self.keys_unknown:
            attributes["redis.keys"] = self.keys
        return attributes


def _key_text(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")


_PLAIN = re.compile(rb"[!#-&(-~]+")  # printable ASCII, no space, quote or backslash
_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x07: "\\a", 0x08: "\\b"}


def _quoted(arg: bytes) -> str:
    """As redis-cli prints an argument: plain if it can be, else double-quoted with escapes."""
    if _PLAIN.fullmatch(arg):
        return arg.decode("ascii")
    out = ['"']
    for byte in arg:
        escape = _ESCAPES.get(byte)
        if escape is not None:
            out.append(escape)
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    out.append('"')
    return "".join(out)


def _summary(arg: bytes) -> str:
    return f"<{len(arg)} bytes sha256:{hashlib.sha256(arg).hexdigest()[:16]}>"


def _secret_positions(canonical: str, args: Sequence[bytes]) -> set[int]:
    """Which arguments are passwords (canonical: the target's name, lower-case)."""
    # As redis-server reads the options (a NUL ends them), so no spelling hides a password.
    words = [keyword(a) for a in args]
    if canonical == "auth":
        # AUTH user pass; any other shape: everything (a syntax error may still hold a password).
        return {2} if len(args) == 3 else set(range(1, len(args)))
    count = len(args)
    secret: set[int] = set()
    if canonical == "hello":
        # Read as redis-server reads the options (parse_hello): AUTH takes two, SETNAME one;
        # past anything else (a syntax error) every argument may be a password.
        j = 2
        while j < count:
            more = count - 1 - j
            if words[j] == b"auth" and more >= 2:
                secret.add(j + 2)
                j += 3
            elif words[j] == b"setname" and more >= 1:
                j += 2
            else:
                secret.update(range(j, count))
                break
        # And whatever the reading (a SETNAME named "auth"), the password after any AUTH.
        for i in range(2, count):
            if words[i] == b"auth":
                secret.update((i + 2,) if i + 2 < count else range(i + 1, count))
        return secret
    if canonical == "migrate":
        # As redis-server reads the options after the fifth argument: COPY, REPLACE,
        # AUTH pass, AUTH2 user pass, KEYS k...; past anything else, everything.
        j = 6
        while j < count:
            word, more = words[j], count - 1 - j
            if word in (b"copy", b"replace"):
                j += 1
            elif word == b"auth" and more >= 1:
                secret.add(j + 1)
                j += 2
            elif word == b"auth2" and more >= 2:
                secret.add(j + 2)
                j += 3
            elif word == b"keys":
                break
            else:
                secret.update(range(j, count))
                break
        # And whatever the reading (a key named "auth"), what follows any AUTH or AUTH2.
        for i in range(6, count):
            if words[i] == b"auth" and i + 1 < count:
                secret.add(i + 1)
            elif words[i] == b"auth2" and i + 2 < count:
                secret.add(i + 2)
        return secret
    if canonical == "acl|setuser":
        # A password rule alone (">pw"), or inside a selector or an argument with spaces:
        # redis-server quotes a rule it refuses in its error.
        return {i for i in range(3, count)
                if any(part.startswith(_ACL_SECRET_PREFIXES) for part in _ACL_PARTS.split(args[i]))}
    if canonical == "config|set":
        return {i + 1 for i in range(2, len(args) - 1, 2) if words[i] in _SECRET_PARAMETERS}
    return set()


def render(args: Sequence[bytes], canonical: str, limits: Limits = Limits()) -> str:
    """
    The input text of a command (C{canonical}: the target's name for it,
    lower-case, which says where its passwords are).
    """
    return _render(args, canonical, limits)[0]


def _render(args: Sequence[bytes], canonical: str, limits: Limits) -> tuple[str, bool]:
    """The input text, and whether an argument is not in it as it is (a password, a summary, past the count)."""
    secret = _secret_positions(canonical, args)
    if canonical not in ("auth", "hello") and args and keyword(args[0]) in (b"auth", b"hello"):
        # Typed as AUTH/HELLO but unknown to the target (renamed away): still a password.
        secret |= _secret_positions(args[0].decode("latin-1").lower(), args)
    shown = []
    hidden = False
    for i, arg in enumerate(args[: limits.max_args]):
        if i in secret:
            shown.append(REDACTED)
            hidden = True
        elif len(arg) > limits.max_shown:
            shown.append(_summary(arg))
            hidden = True
        else:
            shown.append(_quoted(arg))
    if len(args) > limits.max_args:
        rest = len(args) - limits.max_args
        shown.append(f"... ({rest} more argument{'s' if rest != 1 else ''})")
        hidden = True
    return " ".join(shown), hidden


def _kind(canonical: str) -> str:
    return "redis." + _KIND_UNSAFE.sub("_", canonical.lower().replace("|", "."))


def describe(command: Command, lookup: Lookup, *, db: int | None = None, limits: Limits = Limits()) -> Described:
    """C{command} as an action, given what the target said its name is."""
    args = command.args
    # A made-up name may be megabytes long: never in full in the facts or the trail.
    typed = args[0].decode("utf-8", "backslashreplace") if len(args[0]) <= limits.max_shown else _summary(args[0])
    details: dict[str, Any] = {"args": len(args) - 1, "bytes": sum(map(len, args))}
    if db is not None:
        details["db"] = db
    if command.inline:
        details["inline"] = True
    commands_unknown = ""
    info = lookup.info
    if info is not None:
        command_info = resolve(info, args)
        canonical = command_info.name.upper()
        commands: tuple[str, ...] = (info.name.upper(),)
        if command_info is not info:
            commands += (canonical,)
        kind = _kind(canonical)
        keyset = find_keys(command_info, args)
        base = info.name
    elif lookup.known:
        # The target says it is no command: it will refuse it, touching nothing.
        canonical = typed.upper()
        commands = (canonical,)
        kind = "redis.unknown"
        keyset = NO_KEYS
        base = ""
    else:
        canonical = typed.upper()
        commands = (canonical,)
        kind = "redis.unknown"
        why = f"the gateway could not ask the target what {canonical} is ({lookup.why})"
        keyset = KeySet((), False, why)
        commands_unknown = why
        base = ""
    if canonical.lower() != typed.lower():
        details["typed"] = typed
    if base in SCRIPTS:
        keyset = KeySet(keyset.keys, False, "a script may touch keys it does not declare")
        commands_unknown = "a script runs commands the gateway cannot see"
    elif base in KEYSPACE:
        keyset = KeySet(keyset.keys, False, f"{base.upper()} reaches every key")
    keys = []
    why = keyset.why
    for key in keyset.keys[: limits.max_keys]:
        if len(key) > limits.max_key_length:
            why = why or f"a key is longer than {limits.max_key_length} bytes"
            details.setdefault("long_keys", []).append(_summary(key))
        else:
            keys.append(_key_text(key))
    if len(keyset.keys) > limits.max_keys:
        why = why or f"more than {limits.max_keys} keys"
    if why:
        details["keys_unknown"] = why
    if commands_unknown:
        details["commands_unknown"] = commands_unknown
    text, hidden = _render(args, canonical.lower(), limits)
    return Described(
        kind=kind,
        canonical=canonical,
        input=text,
        hidden=hidden,
        commands=commands,
        keys=tuple(dict.fromkeys(keys)),
        keys_unknown=why,
        commands_unknown=commands_unknown,
        details=details,
    )
