"""
Fuzz the SQL classification (hoopgw.protocols.postgres.sql) and the
lexical checks (hoopgw.protocols.postgres.lexical) with query texts.

Input: the bytes of a query string as a client sends them (up to a NUL,
which ends it on the wire).  They are decoded as the gateway decodes
them: by the codec (UTF-8 with
C{surrogateescape}) and, when not ASCII, also re-read under one other
client encoding the gateway accepts (L{lexical.Settings.text}), chosen by
the input's length.

Checked: L{classify}, L{statement_info}, L{redact_secrets},
L{recordable}, L{sensitive} and L{setting_refusal} never raise, and
return what they promise; a prepared-statement map follows the
statements; and the texts that reach the audit trail (L{redact_secrets}'s
and L{recordable}'s output, every statement's C{text}) never hold a string
constant that is a secret: one written after C{PASSWORD} (or
C{"password"}, an option name) or C{CONNECTION}.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz._fuzzing import check, fuzz, instrumented

with instrumented(__name__):
    from pglast import parser as pg

    from hoopgw.protocols.postgres import codec, lexical, sql

# Client encodings the gateway reads (lexical._CODECS), as the server names them.
ENCODINGS = ("LATIN1", "WIN1252", "WIN1251", "KOI8R", "EUC_JP", "EUC_KR", "EUC_CN", "ISO_8859_7")
_COMMENTS = frozenset({"C_COMMENT", "SQL_COMMENT"})
_SECRET_BEFORE = frozenset({"PASSWORD", "CONNECTION"})
# A connection string's password (dblink_connect('... password=...')).
_CONNINFO_PASSWORD = re.compile(r"(?i)password\s*=")
_STRINGS = frozenset({"SCONST", "USCONST"})


def secrets(text: str) -> list[str]:
    """
    The string constants of C{text} that are secrets: written after a
    PASSWORD or CONNECTION keyword, or after a C{"password"} option name
    (comments between them skipped, as the server skips them), and
    connection strings with a C{password=}.  Nothing
    when the text cannot be scanned (then it is not recorded as it is).
    """
    try:
        tokens = pg.scan(text)
    except Exception:
        return []
    found, previous = [], ""
    for token in tokens:
        if token.name in _COMMENTS:
            continue
        # pglast's token offsets count characters.
        spelled = text[token.start : token.end + 1]
        if token.name in _STRINGS and (previous == "PASSWORD" or _CONNINFO_PASSWORD.search(spelled)):
            found.append(spelled)
        # OPTIONS ("password" '...') names the same option as OPTIONS (password '...').
        previous = "PASSWORD" if token.name in _SECRET_BEFORE or spelled == '"password"' else token.name
    return found


def leaked(original: str, recorded: str) -> list[str]:
    """
    The secrets of C{original} that C{recorded} (its redacted form, or a
    statement of it) still holds: more times than C{original} holds them
    outside secret positions.
    """
    if recorded == sql.UNRECORDABLE:
        return []
    found = [s for s in secrets(original) if s != "'[redacted]'"]
    # The marker's quotes must not make a secret's spelling out of the text
    # around it ('[redacted]'host=x' holds 'host=x' only by juxtaposition).
    recorded = recorded.replace("'[redacted]'", "\0")
    return [s for s in set(found) if recorded.count(s) > original.count(s) - found.count(s)]


def _texts(data: bytes) -> list[str]:
    # As the codec decodes a Query: a C string (it ends at a NUL), UTF-8,
    # any bytes kept (surrogateescape).
    text = codec._text(data.partition(b"\0")[0])
    texts = [text]
    if not text.isascii():
        settings = lexical.Settings()
        settings.report("client_encoding", ENCODINGS[len(data) % len(ENCODINGS)])
        texts.append(settings.text(text))
    return texts


def _classified(text: str) -> None:
    infos = sql.classify(text)
    check(isinstance(infos, tuple), "classify() did not return a tuple")
    prepared = sql.PreparedStatements()
    for info in infos:
        check(isinstance(info, sql.StatementInfo), "classify() returned something else than a StatementInfo")
        check(info.kinds or not text.strip(), "a statement without kinds")
        check(not leaked(text, info.text), f"a statement's text records a secret: {info.text!r}")
        attributes = info.attributes()
        check(attributes["sql.statements"] == info.kinds, "attributes() differ from the fields")
        prepared.observe(info)
        prepared.resolve(info)
    one = sql.statement_info(text)
    check(isinstance(one, sql.StatementInfo), "statement_info() did not return a StatementInfo")
    check(not leaked(text, one.text), f"statement_info()'s text records a secret: {one.text!r}")
    prepared.parse("s", text)


def _redacted(text: str) -> None:
    redacted = sql.redact_secrets(text)
    check(isinstance(redacted, str), "redact_secrets() did not return text")
    leaks = leaked(text, redacted)
    check(not leaks, f"redact_secrets() left secrets {leaks!r} in {redacted!r}")
    recordable = sql.recordable(text)
    check(not leaked(text, recordable), f"recordable() left a secret in {recordable!r}")


def backslash_in_standard_string(text: str) -> bool:
    """Whether a standard C{'...'} (or C{N'...'}) string constant of C{text} holds a backslash."""
    try:
        tokens = pg.scan(text)
    except Exception:
        return False
    return any(
        token.name == "SCONST" and "\\" in text[token.start : token.end + 1] and text[token.start] in "'nN"
        for token in tokens
    )


def _lexical(text: str) -> None:
    sensitive = lexical.sensitive(text)
    check(sensitive in (True, False), "sensitive() did not return a bool")
    if backslash_in_standard_string(text):
        check(sensitive, f"sensitive() misses the backslash in a standard string of {text!r}")
    refusal = lexical.setting_refusal(text)
    check(refusal is None or isinstance(refusal, str), "setting_refusal() returned neither None nor text")


def one_input(data: bytes) -> None:
    for text in _texts(data):
        _classified(text)
        _redacted(text)
        _lexical(text)


if __name__ == "__main__":
    fuzz(one_input)
