"""
What a command is, as the target itself says: C{COMMAND INFO} read into
values, and the keys of a command found as redis-server finds them.

Pure functions over values; the front end asks the target (its catalog
connection, L{hoopgw_redis.frontend}) and hands the replies here.

    info = parse_command_info(reply)        # one element of COMMAND INFO's reply
    command = resolve(info, args)           # the subcommand for CONFIG SET, ...
    keys = find_keys(command, args)         # KeySet(keys=(b"k",), complete=True)

Why the target and not a table of our own: the target knows its version's
commands, its modules' commands, and the names an operator gave commands
with C{rename-command} (C{COMMAND INFO zapall} answers C{flushall}).  The
gateway judges what the target will run, by behaviour, not by the name.

Keys are found with the target's key specs (Redis 7), as
C{getKeysUsingKeySpecs} in C{db.c} reads them: a begin search by index or
by keyword (searched forwards or backwards, never the last or first
argument itself, case-insensitively), then a range (with a step and a
limit) or a key count read from an argument.  Where the gateway cannot be
sure, the set says so (L{KeySet.complete} false, with the reason): a spec
of an unknown type (C{SORT ... BY/GET/STORE}), a spec flagged
C{incomplete} (C{MIGRATE ... KEYS}), arguments that do not fit the spec
(the target refuses the command, but the gateway does not guess), and a
Redis 6 target's C{movablekeys} commands (no key specs, only a legacy
first/last/step).  Specs flagged C{not_key} (routing hints) are skipped,
as the target skips them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from attrs import field, frozen

from hoopgw_redis.resp import Map, Null, SimpleString, Verbatim, keyword as c_keyword

__all__ = ["CommandInfo", "KeySet", "KeySpec", "find_keys", "parse_command_info", "resolve"]


def _text(value: Any) -> str:
    """A name or flag as the reply spells it (bulk or status string), lower-cased."""
    if isinstance(value, SimpleString):
        value = value.value
    elif isinstance(value, Verbatim):
        value = value.text
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").lower()
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _int(value: Any) -> int:
    if type(value) is not int:
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    return value


def _pairs(value: Any) -> dict[str, Any]:
    """A flat key-value array (RESP2) or a map (RESP3), by lower-case key."""
    if isinstance(value, Map):
        items: Iterable[tuple[Any, Any]] = value.pairs
    elif isinstance(value, tuple) and len(value) % 2 == 0:
        items = zip(value[0::2], value[1::2])
    else:
        raise ValueError(f"expected key-value pairs, got {type(value).__name__}")
    return {_text(k): v for k, v in items}


def _items(value: Any) -> tuple[Any, ...]:
    if isinstance(value, tuple):
        return value
    items = getattr(value, "items", None)  # a RESP3 set
    if isinstance(items, tuple):
        return items
    raise ValueError(f"expected an array, got {type(value).__name__}")


def _frozen_texts(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@frozen
class KeySpec:
    """
    One key spec of a command (C{COMMAND INFO}'s C{key_specs}): where its
    keys begin (C{begin}: C{"index"} at C{index}, C{"keyword"} after
    C{keyword} searched from C{startfrom}, or C{"unknown"}) and how they are
    found from there (C{find}: C{"range"} with C{lastkey}, C{keystep} and
    C{limit}; C{"keynum"} with C{keynumidx}, C{firstkey} and C{keystep}; or
    C{"unknown"}).  C{flags} are lower-case (C{"rw"}, C{"access"},
    C{"incomplete"}, C{"not_key"}, ...).
    """

    begin: str = "index"
    index: int = 0
    keyword: bytes = b""
    startfrom: int = 0
    find: str = "range"
    lastkey: int = 0
    keystep: int = 1
    limit: int = 0
    keynumidx: int = 0
    firstkey: int = 0
    flags: frozenset[str] = field(default=frozenset(), converter=_frozen_texts)


def _key_spec(value: Any) -> KeySpec:
    spec = _pairs(value)
    flags = frozenset(_text(f) for f in _items(spec.get("flags", ())))
    begin = _pairs(spec["begin_search"])
    find = _pairs(spec["find_keys"])
    begin_type, find_type = _text(begin["type"]), _text(find["type"])
    fields: dict[str, Any] = {"flags": flags}
    if begin_type == "index":
        fields.update(begin="index", index=_int(_pairs(begin["spec"])["index"]))
    elif begin_type == "keyword":
        search = _pairs(begin["spec"])
        keyword = search["keyword"]
        fields.update(
            begin="keyword",
            keyword=keyword.value if isinstance(keyword, SimpleString) else keyword,
            startfrom=_int(search["startfrom"]),
        )
    else:
        fields.update(begin="unknown")
    if find_type == "range":
        found = _pairs(find["spec"])
        fields.update(find="range", lastkey=_int(found["lastkey"]), keystep=_int(found["keystep"]),
                      limit=_int(found["limit"]))
    elif find_type == "keynum":
        found = _pairs(find["spec"])
        fields.update(find="keynum", keynumidx=_int(found["keynumidx"]), firstkey=_int(found["firstkey"]),
                      keystep=_int(found["keystep"]))
    else:
        fields.update(find="unknown")
    if not isinstance(fields.get("keyword", b""), bytes):
        raise ValueError("a key spec's keyword is not a string")
    return KeySpec(**fields)


def _specs(value: Iterable[KeySpec]) -> tuple[KeySpec, ...]:
    return tuple(value)


def _optional_specs(value: Iterable[KeySpec] | None) -> tuple[KeySpec, ...] | None:
    return None if value is None else _specs(value)


def _subcommands(value: Mapping[str, CommandInfo]) -> Mapping[str, CommandInfo]:
    return dict(value)


@frozen
class CommandInfo:
    """
    A command as the target describes it.  C{name} is the target's own,
    lower-case (C{"get"}, C{"config|set"} for a subcommand), whatever name
    the client used.  C{specs} is C{None} for a target without key specs
    (Redis 6): then C{legacy} (first key, last key, step) and the
    C{movablekeys} flag say what is known.
    """

    name: str
    arity: int
    flags: frozenset[str] = field(default=frozenset(), converter=_frozen_texts)
    categories: frozenset[str] = field(default=frozenset(), converter=_frozen_texts)
    legacy: tuple[int, int, int] = (0, 0, 0)
    specs: tuple[KeySpec, ...] | None = field(default=(), converter=_optional_specs)
    subcommands: Mapping[str, CommandInfo] = field(factory=dict, converter=_subcommands, eq=False)

    @property
    def container(self) -> bool:
        return bool(self.subcommands)


def parse_command_info(value: Any) -> CommandInfo | None:
    """
    One entry of C{COMMAND INFO}'s (or C{COMMAND}'s) reply; C{None} for the
    null the target answers for a name that is no command.

    @raise ValueError: for a reply of another shape (then the gateway knows
        nothing of the command, and fails closed).
    """
    if isinstance(value, Null):
        return None
    entry = _items(value)
    if len(entry) < 7:
        raise ValueError(f"a COMMAND INFO entry has at least 7 fields, got {len(entry)}")
    name = _text(entry[0])
    specs: tuple[KeySpec, ...] | None = None
    subcommands: dict[str, CommandInfo] = {}
    if len(entry) >= 10:
        specs = tuple(_key_spec(s) for s in _items(entry[8]))
        for sub in _items(entry[9]):
            info = parse_command_info(sub)
            if info is not None:
                subcommands[info.name.partition("|")[2] or info.name] = info
    return CommandInfo(
        name=name,
        arity=_int(entry[1]),
        flags=(_text(f) for f in _items(entry[2])),
        legacy=(_int(entry[3]), _int(entry[4]), _int(entry[5])),
        categories=(_text(c).lstrip("@") for c in _items(entry[6])),
        specs=specs,
        subcommands=subcommands,
    )


def resolve(info: CommandInfo, args: Sequence[bytes]) -> CommandInfo:
    """
    The command that C{args} runs: a container's subcommand (C{CONFIG SET}
    is C{config|set}) when the second argument names one, else C{info}
    itself (the target refuses an unknown subcommand).
    """
    if info.container and len(args) > 1:
        sub = info.subcommands.get(args[1].decode("latin-1").lower())
        if sub is not None:
            return sub
    return info


@frozen
class KeySet:
    """
    The keys of one command.  C{complete} is false when the command may
    touch keys that are not in C{keys}; C{why} then says why.
    """

    keys: tuple[bytes, ...] = ()
    complete: bool = True
    why: str = ""


NO_KEYS = KeySet()


def _decimal(data: bytes) -> int | None:
    """As the target's string2ll: a canonical signed decimal, or None."""
    if not data or len(data) > 20:
        return None
    text = data.decode("latin-1")
    body = text[1:] if text.startswith("-") else text
    if not body.isascii() or not body.isdigit() or (len(body) > 1 and body[0] == "0") or text == "-0":
        return None
    return int(text)


def _begin(spec: KeySpec, args: Sequence[bytes]) -> int | None:
    """The index of a spec's first key; 0 when its keyword is absent (no keys); None: unknown."""
    argc = len(args)
    if spec.begin == "index":
        return spec.index
    if spec.begin != "keyword":
        return None
    keyword = spec.keyword.lower()
    if spec.startfrom > 0:
        # Forwards from startfrom, not looking at the last argument.
        positions: Iterable[int] = range(spec.startfrom, argc - 1)
    else:
        # Backwards from argc + startfrom, not looking at argument 1.
        positions = range(argc + spec.startfrom, 1, -1)
    for i in positions:
        if 1 <= i < argc and c_keyword(args[i]) == keyword:
            return i + 1
    return 0


def find_keys(info: CommandInfo, args: Sequence[bytes]) -> KeySet:
    """
    The keys C{args} (the command's name first) name, by C{info}'s key
    specs (C{info} already L{resolve}d to the subcommand).
    """
    argc = len(args)
    if info.specs is None:
        return _legacy_keys(info, args)
    keys: list[bytes] = []
    why = ""
    for spec in info.specs:
        if "not_key" in spec.flags:
            continue
        first = _begin(spec, args)
        if first is None or spec.find not in ("range", "keynum"):
            why = why or f"the target cannot say where {info.name.upper()}'s keys are"
            continue
        if first == 0:
            continue  # the keyword is absent: this spec names no key
        step = spec.keystep
        if spec.find == "range":
            if spec.lastkey >= 0:
                last = first + spec.lastkey
            elif not spec.limit:
                last = argc + spec.lastkey
            else:
                last = first + ((argc - first) // spec.limit + spec.lastkey)
        else:
            if spec.keynumidx >= argc - first:
                why = why or f"{info.name.upper()}'s key count is missing"
                continue
            count = _decimal(args[first + spec.keynumidx])
            if count is None or count < 0:
                why = why or f"{info.name.upper()}'s key count is not a number"
                continue
            first += spec.firstkey
            if count == 0:
                continue
            last = first + count - 1
        if last >= argc or last < first or first >= argc or step < 1:
            # The target refuses such a command; the gateway does not guess.
            why = why or f"the arguments do not fit {info.name.upper()}'s key positions"
            continue
        keys.extend(args[i] for i in range(first, last + 1, step))
        if "incomplete" in spec.flags:
            why = why or f"some of {info.name.upper()}'s keys are only found at run time"
    return KeySet(tuple(keys), not why, why)


def _legacy_keys(info: CommandInfo, args: Sequence[bytes]) -> KeySet:
    """A target without key specs: the legacy range, and nothing sure about movable keys."""
    first, last, step = info.legacy
    keys: tuple[bytes, ...] = ()
    if first > 0 and step > 0:
        end = len(args) + last if last < 0 else last
        keys = tuple(args[i] for i in range(first, min(end, len(args) - 1) + 1, step))
    if "movablekeys" in info.flags:
        return KeySet(keys, False, f"the target does not say where {info.name.upper()}'s keys are (no key specs)")
    return KeySet(keys)
