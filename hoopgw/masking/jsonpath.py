"""
The JSON paths of a mask's C{json_paths}: a small subset of JSONPath
(RFC 9535) that can be followed while a document streams past, with no
look-ahead and no filter expressions.

    $                   the root (optional: C{data.*} is C{$.data.*})
    .name  ['name']     a member (bracketed: any name, e.g. with dots)
    .*  [*]             every member of an object, every element of an array
    [3]                 one element of an array
    ..name  ..*         a member at any depth below (descendants)

A path names a value; a value a path names is masked whole, with all it
contains.
"""

from __future__ import annotations

import re
from typing import Union

__all__ = ["ANY", "ANY_INDEX", "JsonPath", "JsonPathError", "Segment", "StepKey", "compile_json_path", "step"]


class JsonPathError(ValueError):
    """A path the gateway refuses (why in the message)."""


class _Any:
    def __repr__(self) -> str:
        return "*"


ANY = _Any()


class _AnyIndex:
    def __repr__(self) -> str:
        return "[?]"


# A key standing for every element index at once (a JSON pointer's "+0" or
# "-1", which some servers read as an index): it meets any index segment.
ANY_INDEX = _AnyIndex()
# A member name, an element index, ANY, or ("..", name | ANY): a descendant.
Segment = Union[str, int, _Any, tuple[str, Union[str, _Any]]]
JsonPath = tuple[Segment, ...]
# A step down a document: a member name, an element index, or ANY_INDEX.
StepKey = Union[str, int, _AnyIndex]

_NAME = re.compile(r"[A-Za-z_$@-][\w$@-]*", re.ASCII)
_BRACKET = re.compile(r"""\[\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|(\*)|(-?\d+))\s*\]""")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def compile_json_path(text: str) -> JsonPath:
    """The segments of C{text}; L{JsonPathError} with the reason if it is not in the subset."""
    at = 1 if text.startswith("$") else 0
    segments: list[Segment] = []
    if at == 0 and text and text[0] not in ".[":
        text = "." + text  # "data.*" is "$.data.*"
    while at < len(text):
        if text.startswith("..", at):
            at += 2
            if text.startswith("*", at):
                segments.append(("..", ANY))
                at += 1
                continue
            match = _NAME.match(text, at)
            if match is None:
                raise JsonPathError(f"expected a member name or * after '..' at offset {at}")
            segments.append(("..", match.group()))
            at = match.end()
        elif text.startswith(".", at):
            at += 1
            if text.startswith("*", at):
                segments.append(ANY)
                at += 1
                continue
            match = _NAME.match(text, at)
            if match is None:
                raise JsonPathError(f"expected a member name or * after '.' at offset {at}")
            segments.append(match.group())
            at = match.end()
        elif text.startswith("[", at):
            match = _BRACKET.match(text, at)
            if match is None:
                raise JsonPathError(
                    f"expected ['name'], [*] or [N] at offset {at} (filters and slices are not supported)"
                )
            quoted = match.group(1) if match.group(1) is not None else match.group(2)
            if quoted is not None:
                segments.append(_unescape(quoted))
            elif match.group(3):
                segments.append(ANY)
            else:
                index = int(match.group(4))
                if index < 0:
                    raise JsonPathError(f"negative index at offset {at}: a streamed array's length is not known")
                segments.append(index)
            at = match.end()
        else:
            raise JsonPathError(f"unexpected {text[at]!r} at offset {at}")
    if not segments:
        raise JsonPathError("the path names the whole document; name the values to mask")
    return tuple(segments)


def step(path: JsonPath, position: int, key: StepKey) -> tuple[int, ...]:
    """
    Where C{path} is after one more step down to C{key} (a member name or
    an element index) from C{position}: the positions reached (none: the
    path does not lead there; C{len(path)}: it names that value).
    """
    segment = path[position]
    if type(segment) is tuple:
        name = segment[1]
        if name is ANY or name == key:
            return (position, position + 1)  # matched here, and may match deeper too
        return (position,)
    if segment is ANY or segment == key and type(segment) is type(key):
        return (position + 1,)
    if key is ANY_INDEX and type(segment) is int:
        return (position + 1,)
    return ()
