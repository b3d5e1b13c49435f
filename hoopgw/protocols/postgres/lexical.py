"""
The lexical settings under which the server reads a client's SQL, so that
the gateway classifies exactly the text the server will run.

PostgreSQL lexes each Query (and each Parse) whole, with the settings in
force when it arrives: C{standard_conforming_strings} decides whether a
backslash escapes a quote in C{'...'}, and the client encoding decides
which bytes form one character (the server converts the text to its own
encoding before lexing).  Both are the client's to change.

What the gateway does (one concept, one place; pure, no I/O):

  - C{standard_conforming_strings} is pinned C{on}: the gateway's own
    start-up packet sets it (a start-up value beats C{ALTER ROLE/DATABASE/
    SYSTEM SET}), a statement that would turn it off is refused
    (L{setting_refusal}), and a server report of any other value ends the
    session (L{Settings.report}).
  - Client encodings in which an ASCII backslash can be the second byte of
    a character (SJIS, BIG5, GBK, UHC, GB18030, JOHAB, SHIFT_JIS_2004) are
    refused the same three ways; the others are ASCII-safe, and the gateway
    decodes the client's text in them (L{Settings.text}).
  - A function can change either setting without the gateway seeing it
    (C{set_config} inside PL/pgSQL); the server reports the change only
    when it is next idle.  So a text pipelined behind anything that may run
    code is checked for the bytes whose reading a change would alter
    (L{sensitive}) and refused if it has any; at the report, the session
    ends.  Nothing is classified under settings the gateway does not know.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator, Mapping

from attrs import define
from pglast import parser as _pg

__all__ = ["LexicalError", "Settings", "sensitive", "setting_refusal"]

STANDARD_CONFORMING_STRINGS = "standard_conforming_strings"
CLIENT_ENCODING = "client_encoding"

# Sent in the gateway's start-up packet to the target.
PINNED = {STANDARD_CONFORMING_STRINGS: "on"}

# PostgreSQL's encoding names (as the server reports them) whose bytes can
# be decoded here; all are ASCII-safe (a byte below 0x80 is that ASCII
# character).  SQL_ASCII means "no conversion": the server reads the bytes
# in its own encoding.
_CODECS = {
    "UTF8": "utf-8",
    "SQL_ASCII": None,
    "LATIN1": "iso8859-1", "LATIN2": "iso8859-2", "LATIN3": "iso8859-3", "LATIN4": "iso8859-4",
    "LATIN5": "iso8859-9", "LATIN6": "iso8859-10", "LATIN7": "iso8859-13", "LATIN8": "iso8859-14",
    "LATIN9": "iso8859-15", "LATIN10": "iso8859-16",
    "ISO_8859_5": "iso8859-5", "ISO_8859_6": "iso8859-6", "ISO_8859_7": "iso8859-7", "ISO_8859_8": "iso8859-8",
    "WIN866": "cp866", "WIN874": "cp874", "WIN1250": "cp1250", "WIN1251": "cp1251", "WIN1252": "cp1252",
    "WIN1253": "cp1253", "WIN1254": "cp1254", "WIN1255": "cp1255", "WIN1256": "cp1256", "WIN1257": "cp1257",
    "WIN1258": "cp1258", "KOI8R": "koi8_r", "KOI8U": "koi8_u",
    "EUC_JP": "euc_jp", "EUC_CN": "gb2312", "EUC_KR": "euc_kr", "EUC_JIS_2004": "euc_jis_2004",
}

# The client-only encodings whose second byte can be 0x40-0x7E, a backslash
# among them: a gateway reading UTF-8 sees "\\'" where the server sees one
# character and a closing quote.
UNSAFE = frozenset({"SJIS", "SHIFT_JIS_2004", "BIG5", "GBK", "UHC", "GB18030", "JOHAB"})

# What a SET / set_config may name as the client encoding: PostgreSQL's
# names and aliases (encnames.c), cleaned as it cleans them (lower case,
# letters and digits only), for the encodings above.
_ALIASES = {
    "utf8": "UTF8", "unicode": "UTF8", "sqlascii": "SQL_ASCII",
    **{f"latin{n}": f"LATIN{n}" for n in range(1, 11)},
    "iso88591": "LATIN1", "iso88592": "LATIN2", "iso88593": "LATIN3", "iso88594": "LATIN4",
    "iso88599": "LATIN5", "iso885910": "LATIN6", "iso885913": "LATIN7", "iso885914": "LATIN8",
    "iso885915": "LATIN9", "iso885916": "LATIN10",
    "iso88595": "ISO_8859_5", "iso88596": "ISO_8859_6", "iso88597": "ISO_8859_7", "iso88598": "ISO_8859_8",
    "win866": "WIN866", "alt": "WIN866", "win874": "WIN874",
    **{f"win{n}": f"WIN{n}" for n in range(1250, 1259)},
    **{f"windows{n}": f"WIN{n}" for n in (866, 874, *range(1250, 1259))},
    "koi8": "KOI8R", "koi8r": "KOI8R", "koi8u": "KOI8U",
    "eucjp": "EUC_JP", "euccn": "EUC_CN", "euckr": "EUC_KR", "eucjis2004": "EUC_JIS_2004",
}

_TRUE = frozenset({"on", "true", "yes", "1", "t", "tr", "tru", "y", "ye"})


class LexicalError(Exception):
    """The server's lexical settings are ones the gateway cannot follow."""


def _clean(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


@define
class Settings:
    """
    The lexical settings in force, as the server last reported them.

    @ivar codec: the Python codec the client's text is in; C{None}: UTF-8,
        decoded already by the codec.
    """

    client_encoding: str = "UTF8"
    server_encoding: str = "UTF8"
    codec: str | None = None

    @classmethod
    def from_startup(cls, parameters: Mapping[str, str]) -> "Settings":
        """The settings the server reported at start-up; L{LexicalError} if unusable."""
        settings = cls(server_encoding=parameters.get("server_encoding", "UTF8"))
        for name in (STANDARD_CONFORMING_STRINGS, CLIENT_ENCODING):
            if name not in parameters:
                raise LexicalError(f"the target did not report {name}")
            settings.report(name, parameters[name])
        return settings

    def report(self, name: str, value: str) -> None:
        """
        A C{ParameterStatus}: follow it, or raise L{LexicalError} if the
        gateway cannot read text under it.
        """
        if name == STANDARD_CONFORMING_STRINGS:
            if value != "on":
                raise LexicalError(
                    f"the target reports standard_conforming_strings = {value!r}; hoopgw pins it to 'on'"
                )
        elif name == CLIENT_ENCODING:
            encoding = value.upper()
            if encoding not in _CODECS:
                raise LexicalError(_encoding_refusal(value))
            self.client_encoding = encoding
            codec: str | None
            if encoding == "SQL_ASCII":
                # No conversion: the server reads the bytes in its own encoding.
                codec = _CODECS.get(self.server_encoding.upper(), "iso8859-1") or "iso8859-1"
            else:
                codec = _CODECS[encoding]
            self.codec = None if codec == "utf-8" else codec
        elif name == "server_encoding":
            self.server_encoding = value

    def text(self, query: str) -> str:
        """
        C{query} (decoded by the codec as UTF-8) as the server reads it:
        re-decoded in the client encoding when that is not UTF-8.
        """
        if self.codec is None:
            return query
        return query.encode("utf-8", "surrogateescape").decode(self.codec, "surrogateescape")


def _encoding_refusal(value: str) -> str:
    if value.upper() in UNSAFE or _clean(value) in _UNSAFE_ALIASES:
        return (
            f"client encoding {value} is not supported through hoopgw: in it a backslash byte can be "
            "part of a character, so the gateway cannot read statements as the server does; use UTF8"
        )
    return f"client encoding {value} is not supported through hoopgw (supported: {', '.join(sorted(_CODECS))})"


_UNSAFE_ALIASES = frozenset({
    "sjis", "shiftjis", "mskanji", "win932", "windows932", "shiftjis2004", "big5", "win950",
    "windows950", "gbk", "win936", "windows936", "cp936", "gb18030", "uhc", "win949", "windows949", "johab",
})

# A backslash anywhere, or a non-ASCII byte followed by a byte an unsafe
# encoding could read as the second half of the same character and that
# matters to the lexer (letters, digits and "_" only lengthen a name).
_ENCODING_SENSITIVE = re.compile(rb"[\x80-\xff][@\[\\\]^`{|}~]")


def sensitive(text: str) -> bool:
    """
    Whether the server could read C{text} differently were
    C{standard_conforming_strings} off or the client encoding one of
    L{UNSAFE}: a backslash inside a standard C{'...'} string (outside
    one, and inside C{E'...'}, dollar quotes, comments and identifiers, a
    backslash reads the same either way), or a non-ASCII byte followed by
    one of C{@[\\]^`{|}~}.
    """
    if "\\" not in text and text.isascii():
        return False
    raw = text.encode("utf-8", "surrogateescape")
    if _ENCODING_SENSITIVE.search(raw):
        return True
    if b"\\" not in raw:
        return False
    try:
        tokens = _pg.scan(text)
    except Exception:
        return True  # cannot tell: treat as sensitive
    for token in tokens:
        if token.name == "SCONST":
            literal = text[token.start:token.end + 1]  # pglast's offsets count characters
            if "\\" in literal and literal[:1] in ("'", "n", "N"):
                return True
    return False


def setting_refusal(sql: str) -> str | None:
    """
    Why a statement that sets run-time parameters (L{StatementInfo.settings}
    or a C{set_config} call) may not run, or C{None}: it would turn
    C{standard_conforming_strings} off or pick a client encoding the gateway
    cannot read, or it calls C{set_config} with a name it cannot read.
    """
    try:
        tree = json.loads(_pg.parse_sql_json(sql))
    except Exception:
        return None  # the server refuses it too
    for node, kind in _nodes(tree):
        if kind == "VariableSetStmt":
            name = (node.get("name") or "").lower()
            if name in (STANDARD_CONFORMING_STRINGS, CLIENT_ENCODING) and node.get("kind") == "VAR_SET_VALUE":
                values = [_constant(arg) for arg in node.get("args", ())]
                refusal = _value_refusal(name, values[0] if len(values) == 1 else None)
                if refusal:
                    return refusal
        elif kind == "FuncCall":
            names = [n.get("String", {}).get("sval", "") for n in node.get("funcname", ())]
            if names and names[-1] == "set_config" and names[:-1] in ([], ["pg_catalog"]):
                args = node.get("args", ())
                name = _constant(args[0]) if args else None
                if name is None:
                    return "set_config() with a parameter name that is not a constant cannot be followed by hoopgw"
                name = name.lower()
                if name in (STANDARD_CONFORMING_STRINGS, CLIENT_ENCODING):
                    refusal = _value_refusal(name, _constant(args[1]) if len(args) > 1 else None)
                    if refusal:
                        return refusal
    return None


def _value_refusal(name: str, value: str | None) -> str | None:
    if name == STANDARD_CONFORMING_STRINGS:
        if value is None or value.lower() not in _TRUE:
            return "standard_conforming_strings is pinned to on by hoopgw (the gateway reads strings as the server does)"
        return None
    if value is None:
        return "client_encoding must be set to a constant through hoopgw"
    if _ALIASES.get(_clean(value)) is None:
        return _encoding_refusal(value)
    return None


def _constant(node: Any) -> str | None:
    """The text of a string or number constant node, else C{None}."""
    if not isinstance(node, dict):
        return None
    const = node.get("A_Const")
    if const is None:
        cast = node.get("TypeCast")
        return _constant(cast.get("arg")) if cast else None
    for key in ("sval", "ival", "fval", "boolval"):
        inner = const.get(key)
        if isinstance(inner, dict):
            value = inner.get(key)
            if key == "boolval":
                return "true" if value else "false"
            # Zero and the empty string are left out of libpg_query's JSON.
            return ("0" if key == "ival" else "") if value is None else str(value)
    return None


def _nodes(value: Any) -> Iterator[tuple[dict[str, Any], str]]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, inner in item.items():
                if isinstance(inner, dict) and key[:1].isupper():
                    yield inner, key
                if isinstance(inner, (dict, list)):
                    stack.append(inner)
