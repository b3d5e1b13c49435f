"""
The rows of a C{COPY table TO STDOUT} as fields, for masking by column
(L{hoopgw.protocols.postgres.masking}): what the statement copies (which
relation, which columns, in what format) and the text and CSV row syntax
PostgreSQL writes (C{CopyAttributeOutText}, C{CopyAttributeOutCSV} in
src/backend/commands/copyto.c).  Pure: no I/O.

A C{COPY (query) TO} has no column origins to mask by, a C{COPY ... TO
'file'} or C{PROGRAM} writes where the gateway cannot mask, and a COPY with
its own C{ENCODING} writes bytes the gateway would not read as the client
does: L{CopySpec.by_column} is false for them.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen
from pglast import parser as _pg

__all__ = ["CopySpec", "copy_spec", "csv_field", "csv_fields", "csv_value", "text_field", "text_fields", "text_value"]


@frozen
class CopySpec:
    """A C{COPY ... TO}: what it copies and its row syntax."""

    schema: str | None
    relation: str | None  # None: a query's output
    columns: tuple[str, ...] | None  # None: every column, in order
    format: str = "text"  # text, csv, binary
    delimiter: str = "\t"
    quote: str = '"'
    escape: str = '"'
    null: str = "\\N"
    header: bool = False
    to_stdout: bool = True
    encoding: str | None = None  # its own ENCODING option, if any
    custom_null: bool = False  # its NULL option was given

    @property
    def by_column(self) -> bool:
        """Whether its rows can be masked by column: a relation's, to the client, in the session's encoding."""
        return self.relation is not None and self.to_stdout and self.encoding is None


_TRUE = frozenset({"true", "on", "1"})
_FALSE = frozenset({"false", "off", "0"})


def copy_spec(text: str) -> CopySpec | None:
    """
    What C{text} copies out, if it is one C{COPY ... TO}; else C{None}
    (also for option values PostgreSQL would read in a way the gateway
    does not know).
    """
    try:
        statements = json.loads(_pg.parse_sql_json(text))["stmts"]
    except Exception:  # noqa: BLE001 -- not one statement the parser reads
        return None
    if len(statements) != 1:
        return None
    copy = statements[0]["stmt"].get("CopyStmt")
    if copy is None or copy.get("is_from"):
        return None
    relation = copy.get("relation") or {}
    options = {o["DefElem"]["defname"]: _option(o["DefElem"].get("arg")) for o in copy.get("options", ())}
    form = str(options.get("format") or "text").lower()
    csv = form == "csv"
    quote = str(options.get("quote") or '"')
    header = options.get("header", False)
    if isinstance(header, str):
        # PostgreSQL reads it case-insensitively; anything else is not a header choice for COPY TO.
        if header.lower() in _TRUE:
            header = True
        elif header.lower() in _FALSE:
            header = False
        else:
            return None
    elif isinstance(header, int) and header not in (0, 1):
        return None
    columns = tuple(c["String"]["sval"] for c in copy.get("attlist", ()) if "String" in c) or None
    return CopySpec(
        schema=relation.get("schemaname"),
        relation=None if copy.get("query") else relation.get("relname"),
        columns=columns,
        format=form,
        delimiter=str(options.get("delimiter") or ("," if csv else "\t")),
        quote=quote,
        escape=str(options.get("escape") or quote),
        null=str(options["null"]) if options.get("null") is not None else ("" if csv else "\\N"),
        header=bool(header),
        to_stdout=not copy.get("filename") and not copy.get("is_program"),
        encoding=str(options["encoding"]) if options.get("encoding") is not None else None,
        custom_null="null" in options,
    )


def _option(arg: Any) -> Any:
    if arg is None:
        return True  # HEADER alone
    for kind, field in (("String", "sval"), ("Boolean", "boolval"), ("Integer", "ival")):
        if kind in arg:
            return arg[kind].get(field, 0 if kind == "Integer" else "")
    return None


# -- text format ---------------------------------------------------------------------

_TEXT_ESCAPES = {"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def text_fields(line: str, delimiter: str) -> list[str]:
    """A text-format row (without its newline) split into its fields, as written (escapes kept)."""
    fields, start, at = [], 0, 0
    while at < len(line):
        char = line[at]
        if char == "\\":
            at += 2
            continue
        if char == delimiter:
            fields.append(line[start:at])
            start = at + 1
        at += 1
    fields.append(line[start:])
    return fields


def text_field(value: str, delimiter: str) -> str:
    """C{value} written as a text-format field."""
    out = []
    for char in value:
        escaped = _TEXT_ESCAPES.get(char)
        out.append(escaped if escaped is not None else "\\" + char if char == delimiter else char)
    return "".join(out)


# -- CSV -------------------------------------------------------------------------------


def csv_fields(line: str, delimiter: str, quote: str, escape: str) -> list[str]:
    """A CSV row (without its newline) split into its fields, as written (quotes kept)."""
    fields, start, at, quoted = [], 0, 0, False
    while at < len(line):
        char = line[at]
        if quoted:
            if char == escape and escape != quote and at + 1 < len(line) and line[at + 1] in (quote, escape):
                at += 2
                continue
            if char == quote:
                if escape == quote and at + 1 < len(line) and line[at + 1] == quote:
                    at += 2
                    continue
                quoted = False
        elif char == quote:
            quoted = True
        elif char == delimiter:
            fields.append(line[start:at])
            start = at + 1
        at += 1
    fields.append(line[start:])
    return fields


def csv_field(value: str, quote: str, escape: str) -> str:
    """C{value} written as a (quoted) CSV field."""
    body = value.replace(escape, escape + escape) if escape != quote else value
    return quote + body.replace(quote, escape + quote) + quote


def csv_value(field: str, quote: str, escape: str) -> str:
    """A CSV field's value (its quotes and escapes undone)."""
    if not field.startswith(quote) or len(field) < 2 or not field.endswith(quote):
        return field
    body = field[1:-1]
    if escape == quote:
        return body.replace(quote + quote, quote)
    return body.replace(escape + quote, quote).replace(escape + escape, escape)


_TEXT_UNESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def text_value(field: str) -> str:
    """A text-format field's value (its backslash escapes undone; octal and hex escapes too)."""
    if "\\" not in field:
        return field
    out, at = [], 0
    while at < len(field):
        char = field[at]
        if char != "\\" or at + 1 == len(field):
            out.append(char)
            at += 1
            continue
        following = field[at + 1]
        if following in "01234567":
            digits = following
            while len(digits) < 3 and at + 1 + len(digits) < len(field) and field[at + 1 + len(digits)] in "01234567":
                digits += field[at + 1 + len(digits)]
            out.append(chr(int(digits, 8)))
            at += 1 + len(digits)
        elif following == "x" and at + 2 < len(field) and field[at + 2] in "0123456789abcdefABCDEF":
            digits = field[at + 2]
            if at + 3 < len(field) and field[at + 3] in "0123456789abcdefABCDEF":
                digits += field[at + 3]
            out.append(chr(int(digits, 16)))
            at += 2 + len(digits)
        else:
            out.append(_TEXT_UNESCAPES.get(following, following))
            at += 2
    return "".join(out)

