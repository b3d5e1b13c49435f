"""
RFC 8785 (JSON Canonicalization Scheme) for audit records.

Records are encoded by C{orjson} with C{OPT_SORT_KEYS | OPT_STRICT_INTEGER}
once a validation walk has shown they hold only the values for which its
output is byte-identical to JCS (proven against the C{rfc8785} reference by
the Hypothesis tests in C{tests/audit/test_canonical.py}):

  - no whitespace (RFC 8785 §3.2.1);
  - strings as raw UTF-8 except C{"}, C{\\}, and U+0000..U+001F, escaped
    as the two-character forms for \\b \\t \\n \\f \\r, otherwise
    C{\\u00xx} in lower-case hex (§3.2.2.2); U+007F, U+2028 and U+2029 raw;
  - integers as decimal digits, which equals the ES6 form of the same
    IEEE 754 double for |n| <= 2**53 - 1 (§3.2.2.3);
  - keys sorted by code point, which equals JCS's UTF-16 code unit order
    (§3.2.3) unless two keys differ first at a position where one has a
    non-BMP character and the other U+E000..U+FFFF.

The walk (exact dicts with str keys free of non-BMP characters, lists,
tuples, str, bool, None and safe ints) is what makes this safe: C{orjson}
would also render floats (C{1.0}, not JCS's C{1}), UUIDs, enums and
C{orjson.Fragment} raw JSON.  Anything else goes to the original path: a
precise check, then the C{json} module's C encoder over a value rebuilt in
JCS key order (its settings are equally JCS for plain values).  Lone
surrogates fail the final UTF-8 encode there.

A value that is the same in many records (a session's identity) is walked
once: L{checked} returns a read-only L{Checked} copy, which the walk then
passes without looking inside (orjson renders dict and list subclasses as
what they are).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NoReturn

import orjson

__all__ = ["CanonicalizationError", "Checked", "canonical_json", "canonical_record", "checked", "MAX_SAFE_INTEGER", "ORJSON_CANONICAL"]

MAX_SAFE_INTEGER = 2**53 - 1

#: STRICT_INTEGER repeats the walk's bound (|n| <= 2**53 - 1) in C.
ORJSON_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER

_encode_ordered = json.JSONEncoder(
    ensure_ascii=False,
    separators=(",", ":"),
    sort_keys=False,
    allow_nan=False,
    check_circular=False,
).encode


class CanonicalizationError(ValueError):
    """
    A value cannot be represented in RFC 8785 canonical JSON.  The message
    names where in the value (a JSON-pointer-like path) and why.
    """


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


class Checked(dict[str, Any]):
    """
    A dict the walk has passed, read-only all the way down (nested dicts are
    L{Checked}, lists and tuples L{CheckedList}), so that it cannot change
    after its check: made by L{checked} only.
    """

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a checked audit value is read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def copy(self) -> dict[str, Any]:
        return dict(self)

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))


class CheckedList(list[Any]):
    """A list inside a L{Checked} dict: read-only, equal to the list it was."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a checked audit value is read-only")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = clear = extend = insert = pop = remove = reverse = sort = _read_only

    def copy(self) -> list[Any]:
        return list(self)

    def __reduce__(self) -> Any:
        return (list, (list(self),))


def _freeze(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        frozen = Checked()
        for key, item in value.items():
            dict.__setitem__(frozen, key, _freeze(item))
        return frozen
    if kind is list or kind is tuple:
        return CheckedList(_freeze(item) for item in value)
    return value


def checked(value: Any) -> Any:
    """
    C{value} walked once: a read-only L{Checked} copy if the fast path may
    take it as it is (the walk then skips it in every record it is put
    into), else C{value} unchanged, for the walk to judge each time.
    """
    if type(value) is dict and _fast_ok(value):
        return _freeze(value)
    return value


def _fast_ok(value: Any) -> bool:
    """
    C{True} if C{value} is made only of dicts with str keys holding no
    non-BMP character, lists, tuples, str, bool, None and safe ints:
    C{orjson}'s output is then canonical as it is.  Scalars are checked
    inline because a function call per value would cost more than the
    encoding itself.
    """
    kind = type(value)
    if kind is dict:
        items = value.items()
        for key, item in items:
            if type(key) is not str:
                return False
            # Without non-BMP characters, code point order is UTF-16 order.
            if not key.isascii() and max(key) > "\uffff":
                return False
            kind = type(item)
            if kind is str or kind is bool or item is None:
                continue
            if kind is int:
                if -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                    continue
                return False
            if kind is Checked or kind is CheckedList:
                continue
            if not _fast_ok(item):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:
            kind = type(item)
            if kind is str or kind is bool or item is None:
                continue
            if kind is int:
                if -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                    continue
                return False
            if kind is Checked or kind is CheckedList:
                continue
            if not _fast_ok(item):
                return False
        return True
    if kind is Checked or kind is CheckedList:
        return True
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        number: int = value
        return -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER
    return False


def _check(value: Any, path: str) -> bool:
    """
    Validate C{value}; return C{True} if it must be rebuilt before the C
    encoder can encode it canonically.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return False
    if kind is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return False
        raise CanonicalizationError(
            f"{path or '/'}: integer {value} is outside the range JSON numbers "
            f"represent exactly (|n| <= 2**53 - 1)"
        )
    if kind is dict:
        rebuild = False
        for key, item in value.items():
            if type(key) is not str:
                if not isinstance(key, str):
                    raise CanonicalizationError(
                        f"{path or '/'}: object key {key!r} is a {type(key).__name__}, expected str"
                    )
                rebuild = True
            elif not key.isascii():
                rebuild = True
            if _check(item, f"{path}/{key}"):
                rebuild = True
        return rebuild
    if kind is list or kind is tuple:
        rebuild = False
        for index, item in enumerate(value):
            if _check(item, f"{path}/{index}"):
                rebuild = True
        return rebuild
    # Subclasses (str/int enums, OrderedDict, ...) and floats: rare, slow path.
    if isinstance(value, str):
        return True
    if isinstance(value, int):
        _check(int(value), path)
        return True
    if isinstance(value, float):
        _float_as_int(value, path)
        return True
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalizationError(
                    f"{path or '/'}: object key {key!r} is a {type(key).__name__}, expected str"
                )
            _check(item, f"{path}/{key}")
        return True
    if isinstance(value, CheckedList):
        for index, item in enumerate(value):
            _check(item, f"{path}/{index}")
        return True
    raise CanonicalizationError(
        f"{path or '/'}: {type(value).__name__} is not a JSON value "
        f"(expected dict, list, str, int, bool or None)"
    )


def _float_as_int(value: float, path: str) -> int:
    # Audit records hold integers only (sizes, microseconds); an integral
    # float is accepted as that integer, anything else would need ES6
    # number formatting and is refused rather than approximated.
    if not math.isfinite(value) or not value.is_integer():
        raise CanonicalizationError(
            f"{path or '/'}: float {value!r} is not allowed (expected an integer; "
            f"audit records carry counts and microseconds as integers)"
        )
    as_int = int(value)
    if not -MAX_SAFE_INTEGER <= as_int <= MAX_SAFE_INTEGER:
        raise CanonicalizationError(
            f"{path or '/'}: number {value!r} is outside the range JSON numbers "
            f"represent exactly (|n| <= 2**53 - 1)"
        )
    return as_int


def _rebuild(value: Any) -> Any:
    """
    Convert a validated value to plain dicts (inserted in UTF-16 key order),
    lists, str, int, bool and None, for the order-preserving encoder.
    """
    if value is None or value is True or value is False:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)  # the value of a str enum, not its name
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return int(value)
    if isinstance(value, Mapping):
        items = sorted(((str(k), v) for k, v in value.items()), key=lambda kv: _utf16_key(kv[0]))
        return {key: _rebuild(item) for key, item in items}
    return [_rebuild(item) for item in value]


def canonical_record(header: dict[str, Any], body: Mapping[str, Any]) -> bytes:
    """
    L{canonical_json} of C{header} and C{body} merged (C{body}'s keys must
    not be C{header}'s), walking only C{body}: C{header} holds what the
    caller built itself from ASCII keys, str values and safe ints (an audit
    record's C{v}, C{log}, C{seq}, C{prev}, C{time}, C{event}).
    """
    record = header.copy()
    record.update(body)
    if type(body) is dict and _fast_ok(body):
        try:
            return orjson.dumps(record, option=ORJSON_CANONICAL)
        except orjson.JSONEncodeError:
            pass
    return canonical_json(record)


def canonical_json(obj: Any) -> bytes:
    """
    Encode C{obj} as RFC 8785 canonical JSON (UTF-8 bytes, no trailing
    newline).

    @raise CanonicalizationError: if C{obj} holds something JCS cannot
        represent exactly: a non-str key, an integer beyond +-(2**53 - 1), a
        non-integral or non-finite float, a lone surrogate, or a non-JSON type.
    """
    if _fast_ok(obj):
        try:
            return orjson.dumps(obj, option=ORJSON_CANONICAL)
        except orjson.JSONEncodeError:
            pass  # a lone surrogate, or nesting deeper than orjson takes
    # Slow path: precise errors, then a rebuilt value in JCS key order.
    _check(obj, "")
    text = _encode_ordered(_rebuild(obj))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise CanonicalizationError(
            f"string contains a lone surrogate at character {e.start} of the encoded "
            f"record, which is not valid UTF-8"
        ) from None
