"""
Masking what a PostgreSQL session returns, row by row as it streams
(the L{RowTransform} the front end calls; L{hoopgw.masking.service} says
which masks apply).

Each result's RowDescription is turned into a plan once: per column,

  - masked by origin: the column is, or selects as it is, a
    C{schema.table.column} a mask names (L{origins}).  A text value (text,
    varchar, char, name, and types of the database's own such as domains
    and enums) becomes the mask's strategy's text, a JSON value that text
    as a JSON string; a value of any other type (a number, a date), which
    the client's parser would refuse as text, and every binary value,
    becomes NULL;
  - searched by the detectors: every other column whose type can hold a
    sensitive value.  In text values (and text arrays, records, JSON) what
    is found is masked in place (JSON that would no longer parse becomes
    NULL); binary values of text types likewise; values of other types are
    decoded (numbers) or searched for the text they embed, and become NULL
    if something is found.  Each element of a record, an array or JSON
    (also a COPY row's fields, an error's quoted value) is searched as a
    whole value too: nine bare digits are an SSN only as one;
  - left alone: types that cannot hold one (booleans, dates and times,
    UUIDs), and everything when no mask applies.

Rows are rewritten one DataRow at a time (nothing is buffered).  The front
end makes sure every row has its description: a Describe of the portal is
sent (and its answer kept from the client) before each Execute.  A column
whose origin the catalog cannot tell (it cannot be read, or the relation is
gone) is masked by the first mask that names columns: fail closed.

Error and notice texts (message, detail, hint, context, the query) and
notification payloads pass the detectors; a COPY TO's text and CSV rows
too, each row whole (it is one CopyData); binary COPY rows field by field.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pglast import parser as _pg
from twisted.internet.defer import Deferred

from hoopgw.masking.service import ActiveMask, Counts, SessionMasks, element_spans, element_value
from hoopgw.protocols.postgres import codec
from hoopgw.protocols.postgres.copyout import CopySpec, csv_field, csv_fields, csv_value, text_field, text_fields, text_value
from hoopgw.protocols.postgres.origins import Relation, column_names
from hoopgw.protocols.postgres.tracker import Desync

if TYPE_CHECKING:
    from hoopgw.protocols.postgres.catalog import CatalogReader
    from hoopgw.protocols.postgres.reach import RelationGraph

__all__ = ["ResultMasking"]

# Types whose values cannot hold a card number, SSN, e-mail, ... (by OID).
_NOTHING_TO_FIND = frozenset({
    16,  # bool
    1082, 1083, 1114, 1184, 1186, 1266,  # date, time, timestamp, timestamptz, interval, timetz
    2950,  # uuid
    3220,  # pg_lsn
})
# Text types: a masked value is still one (text, varchar, bpchar, name, unknown, "char").
_TEXT = frozenset({25, 1043, 1042, 19, 705, 18})
_JSON = frozenset({114, 3802})
# Binary format that is the text itself, after a prefix of that many bytes (jsonb's version).
_TEXT_IN_BINARY = {25: 0, 1043: 0, 1042: 0, 19: 0, 705: 0, 18: 0, 114: 0, 3802: 1}
# Types of their own (OIDs from here on) are taken as text: domains and enums, citext.
_FIRST_USER_OID = 16384
# Report fields that are not texts a query can choose: severity, code, positions, source file, line, routine.
_REPORT_FIXED = frozenset("SVCPpFLR")
# Statistics columns that show sample values of a table's columns.
_STATISTICS_SAMPLES_SET = frozenset((
    "pg_catalog.pg_stats.most_common_vals", "pg_catalog.pg_stats.histogram_bounds",
    "pg_catalog.pg_stats.most_common_elems", "pg_catalog.pg_stats_ext.most_common_vals",
    "pg_catalog.pg_stats_ext_exprs.most_common_vals", "pg_catalog.pg_stats_ext_exprs.histogram_bounds",
    "pg_catalog.pg_stats_ext_exprs.most_common_elems",
))

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_NULL_LENGTH = _I32.pack(-1)
_JSONB_VERSION = b"\x01"
_WITHHELD_DETAIL = "hoopgw: detail withheld: it may show values of columns masked for you"
_UNREAD = b"unread"
_ASCII_DIGITS = b"0123456789"  # stands for a value replaced without being read (never returned)
_INTEGER_SIZES = frozenset({2, 4, 8})


def _numeric(value: bytes) -> str:
    """A binary NUMERIC as text (base-10000 digits)."""
    ndigits, weight, sign, dscale = struct.unpack_from(">hhHh", value)
    digits = struct.unpack_from(f">{ndigits}H", value, 8)
    if sign == 0xC000:
        return "NaN"
    text = "".join(f"{d:04d}" for d in digits) or "0"
    point = (weight + 1) * 4
    if point <= 0:
        text = "0." + "0" * -point + text
    elif point < len(text):
        text = text[:point] + "." + text[point:]
    else:
        text += "0" * (point - len(text))
    text = text.lstrip("0") or "0"
    if text.startswith("."):
        text = "0" + text
    return ("-" if sign == 0x4000 else "") + text


_BINARY_NUMBERS: dict[int, Callable[[bytes, str], str]] = {
    21: lambda v, codec: str(_I16.unpack(v)[0]),
    23: lambda v, codec: str(_I32.unpack(v)[0]),
    20: lambda v, codec: str(_I64.unpack(v)[0]),
    26: lambda v, codec: str(struct.unpack(">I", v)[0]),
    700: lambda v, codec: repr(struct.unpack(">f", v)[0]),
    701: lambda v, codec: repr(struct.unpack(">d", v)[0]),
    1700: lambda v, codec: _numeric(v),
}


def _text(value: bytes, codec: str) -> str:
    """A value in the client's encoding (the session's client_encoding), losslessly."""
    return value.decode(codec, "surrogateescape")


def _bytes(text: str, codec: str) -> bytes:
    return text.encode(codec, "surrogateescape")


def _lenient(value: bytes, codec: str) -> str:
    """A binary value of another type, for the text it may embed (a record's, an array's fields)."""
    return value.decode(codec, "replace")


_BYTEA = 17
_MONEY = 790
_NESTING = 4  # arrays of records of arrays ... followed this deep


def _binary_text(value: bytes, type_oid: int, codec: str, depth: int = 0, leaves: list[str] | None = None) -> str:
    """
    A binary value as the text a detector may find in it: numbers decoded
    (also money, as units), text types as text, arrays and records (whose
    binary form names their elements' types) element by element; anything
    else for the text it embeds.  An array's or a record's elements are
    also added to C{leaves}, each to be searched as a whole value.
    """
    number = _BINARY_NUMBERS.get(type_oid)
    if number is not None:
        return number(value, codec)
    if type_oid == _MONEY and len(value) == 8:
        cents = _I64.unpack(value)[0]
        return f"{'-' if cents < 0 else ''}{abs(cents) // 100}.{abs(cents) % 100:02d}"
    prefix = _TEXT_IN_BINARY.get(type_oid)
    if prefix is not None:
        return _lenient(value[prefix:], codec)
    if depth < _NESTING:
        parts = _array_elements(value)
        if parts is None:
            parts = _record_fields(value)
        if parts is not None:
            texts = [_binary_text(v, t, codec, depth + 1, leaves) for t, v in parts if v is not None]
            if leaves is not None:
                leaves.extend(texts)
            return " ".join(texts)
    return _lenient(value, codec)


def _binary_guess(value: bytes, codec: str, leaves: list[str] | None = None) -> str:
    """A binary value of a type not known (a COPY's field): every reading a detector may find something in."""
    readings = [_binary_text(value, 0, codec, 0, leaves)]
    if len(value) in _INTEGER_SIZES:
        readings.append(str(int.from_bytes(value, "big", signed=True)))
    if len(value) >= 8:
        try:
            readings.append(_numeric(value))
        except (struct.error, ValueError):
            pass
    return " ".join(readings)


def _array_elements(value: bytes) -> list[tuple[int, bytes | None]] | None:
    """A binary array's elements with their type, or C{None} if it is not one."""
    if len(value) < 12:
        return None
    ndim, flags, element = struct.unpack_from(">iiI", value)
    if not 0 <= ndim <= 6 or flags not in (0, 1):
        return None
    at, count = 12, 1 if ndim else 0
    for _ in range(ndim):
        if at + 8 > len(value):
            return None
        size = _I32.unpack_from(value, at)[0]
        if size < 0:
            return None
        count *= size
        at += 8
    return _elements(value, at, count, element)


def _record_fields(value: bytes) -> list[tuple[int, bytes | None]] | None:
    """A binary record's fields with their types, or C{None} if it is not one."""
    if len(value) < 4:
        return None
    count = _I32.unpack_from(value)[0]
    if not 0 <= count <= 1664:  # PostgreSQL's most columns
        return None
    fields: list[tuple[int, bytes | None]] = []
    at = 4
    for _ in range(count):
        if at + 8 > len(value):
            return None
        oid, size = struct.unpack_from(">Ii", value, at)
        at += 8
        if size < 0:
            fields.append((oid, None))
            continue
        if at + size > len(value):
            return None
        fields.append((oid, value[at : at + size]))
        at += size
    return fields if at == len(value) else None


def _elements(value: bytes, at: int, count: int, element: int) -> list[tuple[int, bytes | None]] | None:
    if count > len(value):
        return None
    items: list[tuple[int, bytes | None]] = []
    for _ in range(count):
        if at + 4 > len(value):
            return None
        size = _I32.unpack_from(value, at)[0]
        at += 4
        if size < 0:
            items.append((element, None))
            continue
        if at + size > len(value):
            return None
        items.append((element, value[at : at + size]))
        at += size
    return items if at == len(value) else None


def _bytea_text(value: bytes, codec: str, leaves: list[str] | None = None) -> str:
    """A bytea in text format (C{\\x3533...}, hex) as the text its bytes may hold."""
    if value.startswith(b"\\x"):
        try:
            return _lenient(bytes.fromhex(value[2:].decode("ascii")), codec)
        except ValueError:
            pass
    return _lenient(value, codec)


_OPENERS = ("(", "{", "[")


def _whole_elements(masks: SessionMasks, text: str, counts: Counts, depth: int = 0) -> str:
    """
    C{text} (a record's, an array's or JSON's) with each element
    (L{element_spans}) in which the detectors find something replaced by
    its masked value as a string, so that the text stays what it is (masked
    in place, a number would become a word); the same object if none is.
    A quoted element that reads as a container (a record's JSON field) is
    searched the same way.
    """
    out: list[str] = []
    at = 0
    gate = masks.gate.passes
    for start, end, token in element_spans(text, masks.gate.shortest):
        quoted = token[0] == '"'
        if quoted and "\\" not in token and not (depth < _NESTING and token[1:].lstrip()[:1] in _OPENERS):
            # A plain string: the caller's pass over the whole text masks it
            # in place, as a string still (quotes bound whole values there).
            continue
        value = element_value(token)
        container = depth < _NESTING and quoted and value.lstrip()[:1] in _OPENERS
        if not gate(value.encode("utf-8", "surrogateescape")):
            continue  # nothing a detector could find
        masked = masks.client_text(value, counts)
        if container:
            masked = _whole_elements(masks, masked, counts, depth + 1)
        if masked is value:
            continue
        out.append(text[at:start])
        out.append('"' + masked.replace("\\", "\\\\").replace('"', '\\"') + '"')
        at = end
    if not out:
        return text
    out.append(text[at:])
    return "".join(out)


def _with_elements(masks: SessionMasks, text: str, counts: Counts) -> str:
    """
    C{text} masked; a record's, an array's or JSON's elements first as whole
    values (L{_whole_elements}), where that can find more than the whole
    text's pass: without escapes an element holds nothing that pass does not
    find (separators bound whole values there), so a text it finds nothing
    in costs that one pass, not one per element.
    """
    if text.lstrip()[:1] not in _OPENERS:
        return masks.client_text(text, counts)
    if "\\" not in text and masks.client_text(text, {}) is text:
        return text
    return masks.client_text(_whole_elements(masks, text, counts), counts)


def _found(masks: SessionMasks, text: str, counts: Counts, leaves: list[str] | None = None) -> bool:
    """Whether the detectors find something in C{text}, in one of its elements, or in one of C{leaves} alone."""
    if masks.client_text(text, counts) is not text:
        return True
    # (Without escapes, the elements hold nothing the whole text did not show.)
    if text.lstrip()[:1] in _OPENERS and "\\" in text and _whole_elements(masks, text, counts) is not text:
        return True
    return any(_found(masks, leaf, counts) for leaf in leaves or ())


# Text-format arrays of text types, records: masked parts stay readable in place.
_ARRAYS_AND_RECORDS = frozenset({1009, 1015, 1014, 1003, 2249, 2287})


# What a plan does to one column: masked whole by origin --
_WHOLE = 0  # text: the mask's strategy
_WHOLE_JSON = 1  # json: the strategy's text as a JSON string
_NULL = 2  # any other type, or binary: NULL
# -- or searched by the detectors:
_SPANS = 3  # text (after a prefix of the argument's length): found parts masked
_SPANS_JSON = 4  # json: found parts masked, NULL if that is no longer JSON
_FOUND_NULL = 5  # other types in text: searched, NULL if found
_CONSTANT = 6  # text masked whole to the same value each time (redact)
_DECODED_NULL = 7  # binary, bytea: decoded (the argument) and searched, NULL if found


def _json_or_none(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class ResultMasking:
    """
    The masking of one client connection (module docstring).

    @param masks: the session's masks now (they follow policy reloads).
    @param catalog: has C{known_origins(oids)} (at once, or C{None}) and
        C{origins(oids)} (a Deferred), L{hoopgw.protocols.postgres.catalog.Catalog}'s.
    """

    def __init__(self, masks: Callable[[], SessionMasks | None], catalog: CatalogReader) -> None:
        self._masks = masks
        self._catalog = catalog
        self._plan: list[tuple[int, int, Any]] | None = None
        self._session_masks: SessionMasks | None = None
        # The session's masks as of the read being relayed (L{active}): the
        # ones its rows must have been planned for.
        self._now: SessionMasks | None = None
        self._ready_for: codec.RowDescription | None = None
        self._shortest = 0  # values shorter than this no detector can match
        # The Python codec of the session's client_encoding (the front end
        # sets it as the server reports it): values are searched as text.
        self.codec = "utf-8"
        # Set by the front end: whether the session's open transaction may
        # have changed the catalog (a view redefined), which the gateway's
        # own connection does not see yet.
        self.unsure: Callable[[], bool] = lambda: False
        # Set by the front end: whether nothing has run since the session was
        # last idle outside a transaction, so that the catalog's committed
        # state is the session's (a view its role owns may have been
        # redefined by earlier statements of the same transaction otherwise).
        self.fresh: Callable[[], bool] = lambda: True
        self.counts: Counts = {}
        # The COPY TO under way: its fields' masks by origin, and what is known of it.
        self._copy: list[ActiveMask | None] | None = None
        self._copy_masks: SessionMasks | None = None
        self._copy_spec: CopySpec | None = None
        self._copy_syntax: CopySpec | None = None
        self._copy_header = False
        self._copy_types: dict[int, int] = {}
        self._copy_ready_for: codec.CopyOutResponse | None = None

    def active(self) -> bool:
        """
        Whether the session has masks now (else its messages pass
        untouched).  Asked once per read relayed: the masks it finds are
        the ones that read's rows must have been planned for (L{row}).
        """
        now = self._now = self._masks()
        if now is None:
            # The held rows a plan was made for pass untouched now (a reload
            # took the masks): that plan must not serve a later result.
            self._ready_for = self._copy_ready_for = None
        return now is not None

    # -- results ---------------------------------------------------------------

    def describe(self, description: codec.RowDescription) -> Deferred[None] | None:
        """
        Plan the rows that follow.  Returns a Deferred when the catalog must
        be read first: the caller holds the rows until it fires.
        """
        # Planned while the rows were held: the next description is theirs.
        # Only the next one: a decoder shares one object for the same bytes
        # (codec._remembered), so identity alone would also match a later
        # result of the same query, planned for other masks.
        ready, self._ready_for = self._ready_for, None
        if description is ready:
            return None
        masks = self._session_masks = self._now = self._masks()
        self._plan = None
        if masks is None or not masks.masks_results:
            return None
        oids = {f.table_oid for f in description.fields if f.table_oid} if masks.by_origin else ()
        if not oids:
            self._plan = self._build(description, masks, None)
            return None
        known = self._catalog.known_origins(oids)
        if known is not None:
            self._plan = self._build(description, masks, known)
            return None
        return self._catalog.origins(oids).addCallback(self._planned, description, masks)

    def _planned(self, relations: Mapping[int, Relation] | None, description: codec.RowDescription, masks: SessionMasks) -> None:
        self._plan = self._build(description, masks, relations if relations is not None else {})
        self._ready_for = description

    def _build(
        self, description: codec.RowDescription, masks: SessionMasks, relations: Mapping[int, Relation] | None
    ) -> list[tuple[int, int, Any]] | None:
        plan: list[tuple[int, int, Any]] = []
        finds = bool(masks.finders)
        unsure = self.unsure()
        fresh = self.fresh()
        for index, field in enumerate(description.fields):
            type_oid = field.type_oid
            texty = type_oid in _TEXT or type_oid >= _FIRST_USER_OID
            mask: ActiveMask | None = None
            if relations is not None and field.table_oid:
                names = column_names(relations, field.table_oid, field.column, trust_owned_views=fresh)
                if names is None or unsure:
                    mask = masks.by_origin[0]  # what it is cannot be told: fail closed
                else:
                    mask = masks.column(names)
                    if mask is None and not _STATISTICS_SAMPLES_SET.isdisjoint(names):
                        mask = masks.by_origin[0]  # sample values of any column
            if mask is not None:
                if field.format:
                    action = _NULL
                else:
                    action = _WHOLE if texty else _WHOLE_JSON if type_oid in _JSON else _NULL
                constant = mask.masker.constant()
                if action == _WHOLE and constant is not None:
                    # The same for every value (redact): no decoding, no call.
                    plan.append((index, _CONSTANT, ((mask.name, "column"), constant)))
                elif action == _NULL or action == _WHOLE and mask.masker.strategy == "null":
                    plan.append((index, _NULL, (mask.name, "column")))
                else:
                    plan.append((index, action, mask))
            elif not finds or type_oid in _NOTHING_TO_FIND:
                continue
            elif not field.format:
                if texty or type_oid in _ARRAYS_AND_RECORDS:
                    plan.append((index, _SPANS, 0))
                elif type_oid in _JSON:
                    plan.append((index, _SPANS_JSON, 0))
                elif type_oid == _BYTEA:
                    plan.append((index, _DECODED_NULL, _bytea_text))
                else:
                    plan.append((index, _FOUND_NULL, None))  # text: gated like the others
            elif type_oid in _JSON:
                plan.append((index, _SPANS_JSON, _TEXT_IN_BINARY[type_oid]))
            elif type_oid in _TEXT_IN_BINARY:
                plan.append((index, _SPANS, _TEXT_IN_BINARY[type_oid]))
            else:
                plan.append((
                    index, _DECODED_NULL,
                    lambda value, codec, leaves, oid=type_oid: _binary_text(value, oid, codec, 0, leaves),
                ))
        self._shortest = masks.gate.shortest
        return plan or None

    def row(self, row: codec.DataRow) -> bytes:
        """
        The row as the client may see it (its bytes).  The row is walked
        only up to the last planned column, and only changed columns are
        rebuilt; the bytes around them are copied in slices.
        """
        masks = self._session_masks
        if self._now is not masks:
            # A policy reload changed the masks after this result's columns
            # were planned (or it began with none): what the new ones cover
            # cannot be told from the old plan, so no row of it goes out.
            raise Desync("the session's masks changed while a result was being relayed (a policy reload)")
        plan = self._plan
        if plan is None:
            return row.raw
        assert masks is not None
        counts = self.counts
        gate = masks.gate.passes
        simple = masks.gate.simple
        if simple is not None:
            least_digits, least_length, needles = simple
        shortest = self._shortest
        codec = self.codec
        raw = row.raw
        end = len(raw)
        unpack = _I32.unpack_from
        pos = 7  # after the tag, the length and the column count
        column = 0
        pieces: list[bytes] | None = None
        copied = 5  # raw[5:copied] is in pieces already
        for index, action, argument in plan:
            while column < index:
                if pos + 4 > end:
                    break
                length = unpack(raw, pos)[0]
                pos += 4 + (length if length > 0 else 0)
                column += 1
            if pos + 4 > end:
                break  # fewer columns than described: nothing more to mask
            length = unpack(raw, pos)[0]
            start = pos + 4
            column += 1
            if length < 0:
                pos = start
                continue
            pos = start + length
            if pos > end:
                raise Desync("the server sent a DataRow whose column overruns it")
            # The common cases first: this runs per value.  C{value} is
            # what the column holds, C{new} what the client gets.
            if action == _CONSTANT:
                key, new = argument
                counts[key] = counts.get(key, 0) + 1
                value = _UNREAD  # not sliced: it is replaced whatever it is
            elif action == _NULL:
                counts[argument] = counts.get(argument, 0) + 1
                new, value = None, _UNREAD
            elif action == _WHOLE or action == _WHOLE_JSON:
                # Masked by origin, whatever it holds (no gate: no detector decides it).
                value = raw[start:pos]
                masked = masks.value(argument, _text(value, codec), counts)
                if masked is None:
                    new = None
                else:
                    new = _bytes(masked if action == _WHOLE else json.dumps(masked), codec)
            elif length < shortest and action != _DECODED_NULL:
                continue  # too short for any detector (as text: a decoded number is longer)
            else:
                value = raw[start:pos]
                new = value
                if action != _DECODED_NULL:
                    # The gate: no detector can match it, not decoded, not searched.
                    if simple is not None:
                        if value.isascii() and (
                            length - len(value.translate(None, _ASCII_DIGITS)) < least_digits or length < least_length
                        ):
                            for needle in needles:
                                if needle in value:
                                    break
                            else:
                                continue
                    elif not gate(value):
                        continue
                if action == _SPANS:
                    text = _text(value[argument:] if argument else value, codec)
                    # A record, an array (or text that reads as one): its elements as whole
                    # values, each masked as a string (found by the pass over the text
                    # after that, it would be masked as it is written).
                    masked = _with_elements(masks, text, counts)
                    if masked is not text:
                        new = value[:argument] + _bytes(masked, codec)
                elif action == _FOUND_NULL:
                    if _found(masks, _lenient(value, codec), counts):
                        new = None
                elif action == _DECODED_NULL:
                    leaves: list[str] = []
                    try:
                        text = argument(value, codec, leaves)
                    except (struct.error, ValueError):
                        text = _lenient(value, codec)
                    if _found(masks, text, counts, leaves):
                        new = None
                elif action == _SPANS_JSON:
                    if argument and value[:1] != _JSONB_VERSION:
                        # Not jsonb as PostgreSQL 15 sends it: searched whole.
                        if _found(masks, _lenient(value, codec), counts):
                            new = None
                    else:
                        text = _text(value[argument:] if argument else value, codec)
                        masked = _with_elements(masks, text, counts)
                        if masked is not text:
                            new = value[:argument] + _bytes(masked, codec) if _json_or_none(masked) else None
            if new is not value:
                if pieces is None:
                    pieces = []
                pieces.append(raw[copied : start - 4])
                pieces.append(_NULL_LENGTH if new is None else _I32.pack(len(new)) + new)
                copied = pos
        if pieces is None:
            return raw
        pieces.append(raw[copied:])
        body = b"".join(pieces)
        return b"D" + _I32.pack(len(body) + 4) + body

    def take_counts(self) -> dict[str, int] | None:
        """Values masked since the last call, per mask (for the statement's action.end); counted in the metrics."""
        if not self.counts:
            return None
        counts, self.counts = self.counts, {}
        masks = self._session_masks or self._masks()
        return masks.settle(counts) if masks is not None else None

    # -- other texts -----------------------------------------------------------

    def _string(self, masks: SessionMasks, value: str) -> str:
        """
        A text field of a server message (decoded as UTF-8 by the codec)
        masked as the client reads it, in its client_encoding; the same
        object if nothing was found.
        """
        codec = self.codec
        if codec == "utf-8":
            return masks.client_text(value, self.counts)
        text = value.encode("utf-8", "surrogateescape").decode(codec, "surrogateescape")
        masked = masks.client_text(text, self.counts)
        if masked is text:
            return value
        return masked.encode(codec, "surrogateescape").decode("utf-8", "surrogateescape")

    def report(self, message: Any) -> Any:
        """
        An ErrorResponse or NoticeResponse with its texts through the
        detectors: message, detail, hint, context, query, and the names a
        RAISE ... USING may set (schema, table, column, type, constraint).
        While masks by column apply, the detail of an integrity violation
        (C{Failing row contains (...)}, C{Key (ssn)=(...)}: stored values,
        of any column) is withheld.
        """
        masks = self._masks()
        if masks is None or not masks.client:
            return message
        withhold = bool(masks.by_origin) and (message.code or "").startswith("23")
        if not masks.finders and not withhold:
            return message
        fields = []
        changed = False
        for code, value in message.fields:
            if code == "D" and withhold:
                key = (masks.by_origin[0].name, "column")
                self.counts[key] = self.counts.get(key, 0) + 1
                value, changed = _WITHHELD_DETAIL, True
            elif code not in _REPORT_FIXED and masks.finders:
                masked = self._string(masks, value)
                if masked is not value:
                    value, changed = masked, True
            fields.append((code, value))
        return type(message)(fields) if changed else message

    def parameter(self, message: codec.ParameterStatus) -> codec.ParameterStatus:
        """A ParameterStatus (set_config('application_name', ...) shows a value) through the detectors."""
        masks = self._masks()
        if masks is None or not masks.finders:
            return message
        value = self._string(masks, message.value)
        return message if value is message.value else codec.ParameterStatus(message.name, value)

    def function_result(self, message: codec.GenericMessage) -> codec.GenericMessage:
        """
        A FunctionCallResponse: a function's result, which has no origin;
        NULL if a detector finds something in it (its format is the call's).
        """
        masks = self._masks()
        body = message.body
        if masks is None or not masks.finders or len(body) < 4 or _I32.unpack_from(body)[0] < 0:
            return message
        value = body[4:]
        text = _lenient(value, self.codec)
        found = masks.client_text(text, self.counts) is not text
        if not found and len(value) in _INTEGER_SIZES:
            number = str(int.from_bytes(value, "big", signed=True))
            found = masks.client_text(number, self.counts) is not number
        return codec.GenericMessage.from_body(b"V", _NULL_LENGTH) if found else message

    def notification(self, message: codec.NotificationResponse) -> codec.NotificationResponse:
        masks = self._masks()
        if masks is None or not masks.finders:
            return message
        payload = self._string(masks, message.payload)
        if payload is message.payload:
            return message
        return codec.NotificationResponse(message.process_id, message.channel, payload)

    # -- COPY TO -----------------------------------------------------------------

    def copy_out(
        self, response: codec.CopyOutResponse, spec: CopySpec | None, graph: RelationGraph | None
    ) -> Deferred[None] | None:
        """
        Plan the rows of the COPY TO that C{response} starts: which fields
        are masked by origin (C{spec} says which relation and columns are
        copied; C{graph}, the catalog's relation graph, which relation the
        name is).  A Deferred when the catalog must be read first (the
        caller holds the rows).  What cannot be told (no spec, an unknown
        relation, a column count that does not match) is masked whole by
        the first mask with C{columns}: fail closed.
        """
        ready, self._copy_ready_for = self._copy_ready_for, None
        if response is ready:  # (planned while the rows were held: see describe)
            return None
        self._copy = None
        self._copy_types = {}
        masks = self._copy_masks = self._masks()
        # Its row syntax, also for a COPY that is not masked by column (its fields searched one by one).
        self._copy_syntax = spec if spec is not None and spec.format != "binary" else None
        if spec is not None and not spec.by_column:
            spec = None  # (refused before it runs while masks by column apply)
        self._copy_spec = spec
        self._copy_header = spec is not None and spec.header
        if masks is None or not masks.by_origin:
            return None
        count = len(response.column_formats)
        oids: tuple[int, ...] = ()
        if spec is not None and spec.relation is not None and graph is not None:  # (by_column: a relation)
            qualified = f"{spec.schema or 'public'}.{spec.relation}"
            oids = tuple(sorted(graph.resolve([qualified], [] if spec.schema else [spec.relation])))
        if spec is None or not oids:  # (no spec: no oids)
            self._copy = [masks.by_origin[0]] * count
            return None
        known = self._catalog.known_origins(oids)
        if known is not None:
            self._copy = self._copy_plan(masks, spec, oids, known, count)
            return None
        copied = spec

        def planned(relations: Mapping[int, Relation] | None) -> None:
            self._copy = self._copy_plan(masks, copied, oids, relations or {}, count)
            self._copy_ready_for = response

        return self._catalog.origins(oids).addCallback(planned)

    def _copy_plan(
        self, masks: SessionMasks, spec: CopySpec, oids: tuple[int, ...], relations: Mapping[int, Relation], count: int
    ) -> list[ActiveMask | None]:
        """Per copied field: the mask by origin, or None; a field of any candidate relation masked is masked."""
        plan: list[ActiveMask | None] = [None] * count
        for oid in oids:
            relation = relations.get(oid)
            attnums = _copied(relation, spec, count) if relation is not None else None
            if attnums is None or self.unsure():
                return [masks.by_origin[0]] * count
            for index, attnum in enumerate(attnums):
                names = column_names(relations, oid, attnum, trust_owned_views=self.fresh())
                mask = masks.column(names) if names is not None else masks.by_origin[0]
                if mask is not None and plan[index] is None:
                    plan[index] = mask
        if len(oids) == 1 and oids[0] in relations:
            # Its fields' types (one relation by that name: else each field is read every way).
            self._copy_types = {
                index: relations[oids[0]].types.get(attnum, 0)
                for index, attnum in enumerate(_copied(relations[oids[0]], spec, count) or ())
            }
        return plan

    def copy_row(self, data: codec.CopyData, binary: bool) -> codec.CopyData:
        """
        One row of a COPY TO: fields masked by origin first (text, CSV,
        binary), then what the detectors find (text or CSV: in the whole
        line; binary: each field, NULL if found).
        """
        masks = self._copy_masks or self._masks()
        if masks is None:
            return data
        if self._copy is not None and any(self._copy):
            if self._copy_header and not binary:
                self._copy_header = False  # the CSV header line: column names
            else:
                data = self._copy_by_origin(data, binary, masks)
        if not masks.finders:
            return data
        payload = data.data
        if not binary:
            text = _text(payload, self.codec)
            masked = masks.client_text(self._copy_fields(masks, text), self.counts)
            return data if masked is text else codec.CopyData.from_data(_bytes(masked, self.codec))
        return self._copy_binary(data, payload, masks)

    def _copy_fields(self, masks: SessionMasks, line: str) -> str:
        """
        A text or CSV row with each field searched as a whole value (nine
        bare digits are an SSN only as one), and as a record, an array or
        JSON if it reads as one; the same object if nothing is found.
        """
        spec = self._copy_syntax
        ending = "\n" if line.endswith("\n") else ""
        body = line[: len(line) - len(ending)]
        csv = spec if spec is not None and spec.format == "csv" else None
        delimiter = spec.delimiter if spec is not None else "\t"
        fields = csv_fields(body, delimiter, csv.quote, csv.escape) if csv is not None else text_fields(body, delimiter)
        changed = False
        for index, field in enumerate(fields):
            value = csv_value(field, csv.quote, csv.escape) if csv is not None else text_value(field)
            masked = _with_elements(masks, value, self.counts)
            if masked is not value:
                fields[index] = csv_field(masked, csv.quote, csv.escape) if csv is not None else text_field(masked, delimiter)
                changed = True
        return delimiter.join(fields) + ending if changed else line

    def _copy_by_origin(self, data: codec.CopyData, binary: bool, masks: SessionMasks) -> codec.CopyData:
        plan = self._copy
        assert plan is not None
        if binary:
            return self._copy_binary(data, data.data, masks, plan)
        spec = self._copy_spec
        line = _text(data.data, self.codec)
        ending = "\n" if line.endswith("\n") else ""
        line = line[: len(line) - len(ending)]
        csv = spec if spec is not None and spec.format == "csv" else None
        delimiter = spec.delimiter if spec is not None else "\t"
        null = spec.null if spec is not None else "\\N"
        if csv is not None:
            fields = csv_fields(line, delimiter, csv.quote, csv.escape)
        else:
            fields = text_fields(line, delimiter)
        if len(fields) != len(plan):
            # Not the shape planned: every field masked (the row is withheld as NULLs).
            return codec.CopyData.from_data(_bytes(delimiter.join([null] * len(plan)) + ending, self.codec))
        custom_null = spec is not None and spec.custom_null
        for index, mask in enumerate(plan):
            if mask is None or (fields[index] == null and not custom_null):
                continue
            if custom_null:
                # NULL 'a guess' would show which values equal the guess: every masked field is the NULL string.
                key = (mask.name, "column")
                self.counts[key] = self.counts.get(key, 0) + 1
                fields[index] = null
                continue
            key = (mask.name, "column")
            self.counts[key] = self.counts.get(key, 0) + 1
            type_oid = self._copy_types.get(index, 0)
            constant = mask.masker.constant()
            if not (type_oid in _TEXT or type_oid >= _FIRST_USER_OID) or mask.masker.strategy == "null":
                fields[index] = null
                continue
            if constant is not None:
                masked = constant.decode()
            else:
                written = fields[index]
                value = csv_value(written, csv.quote, csv.escape) if csv is not None else text_value(written)
                masked = mask.masker.value(value) or ""
            if csv is not None:
                fields[index] = csv_field(masked, csv.quote, csv.escape)
            else:
                fields[index] = text_field(masked, delimiter)
        return codec.CopyData.from_data(_bytes(delimiter.join(fields) + ending, self.codec))

    def _copy_binary(
        self, data: codec.CopyData, payload: bytes, masks: SessionMasks, plan: list[ActiveMask | None] | None = None
    ) -> codec.CopyData:
        start = 0
        if payload.startswith(_COPY_SIGNATURE):
            extension = _I32.unpack_from(payload, len(_COPY_SIGNATURE) + 4)[0]
            start = len(_COPY_SIGNATURE) + 8 + extension
        if len(payload) < start + 2:
            return data
        count = _I16.unpack_from(payload, start)[0]
        if count < 0:
            return data  # the trailer
        parts = [payload[: start + 2]]
        at = start + 2
        changed = False
        for index in range(count):
            length = _I32.unpack_from(payload, at)[0]
            at += 4
            if length < 0:
                parts.append(_NULL_LENGTH)
                continue
            value = payload[at : at + length]
            at += length
            mask = plan[index] if plan is not None and index < len(plan) else None
            if mask is not None:
                key = (mask.name, "column")
                self.counts[key] = self.counts.get(key, 0) + 1
                parts.append(_NULL_LENGTH)
                changed = True
                continue
            if plan is None:
                type_oid = self._copy_types.get(index)
                leaves: list[str] = []
                try:
                    if type_oid:
                        text = _binary_text(value, type_oid, self.codec, 0, leaves)
                    else:
                        text = _binary_guess(value, self.codec, leaves)
                except (struct.error, ValueError):
                    text = _lenient(value, self.codec)  # not what its type says: searched as it is
                if _found(masks, text, self.counts, leaves):
                    parts.append(_NULL_LENGTH)
                    changed = True
                    continue
            parts.append(_I32.pack(length) + value)
        parts.append(payload[at:])
        return codec.CopyData.from_data(b"".join(parts)) if changed else data


def _copied(relation: Relation, spec: CopySpec, count: int) -> list[int] | None:
    """The attribute numbers a COPY copies, in order; None if they cannot be told."""
    if spec.columns is not None:
        by_name = {name: attnum for attnum, name in relation.columns.items()}
        named = [by_name[name] for name in spec.columns if name in by_name]
        return named if len(named) == len(spec.columns) == count else None
    every = sorted(relation.columns)
    for attnums in (every, [a for a in every if a not in relation.generated]):
        if len(attnums) == count:
            return attnums
    return None


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


# A dollar quote's opening, and nine digits in a row (an SSN to the detectors
# only as a whole value, a constant's): a statement with neither, nor a quote,
# has no constant to look at.
_CONSTANTS = re.compile(r"\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$|\d{9}")


def string_literals(text: str) -> list[tuple[int, int, str]]:
    """
    The constants of a statement, as C{(start, end, value)}, for the
    trail's detectors (L{hoopgw.sessions.Session.literals}): string
    constants whose value is spelt otherwise than as one plain C{'...'}
    (C{E'...'} and C{U&'...'} escapes (with a C{UESCAPE}), constants
    continued on another line (also past a comment), C{''}), whole; and
    the text inside plain and dollar-quoted constants and numbers, which
    are their value as written -- each is a whole value to the detectors
    (C{'536228726'} is an SSN, as a Bind parameter of it is).  Decoded by
    PostgreSQL's own parser; one that cannot be decoded is left to the
    detectors as spelt.
    """
    if "'" not in text and _CONSTANTS.search(text) is None:
        return []
    try:
        tokens = _pg.scan(text)
    except Exception:  # noqa: BLE001 -- not SQL the scanner reads: nothing to decode
        return []
    found = []
    at = 0
    while at < len(tokens):
        token = tokens[at]
        at += 1
        if token.name in ("ICONST", "FCONST"):
            found.append((token.start, token.end + 1, text[token.start : token.end + 1]))
            continue
        if token.name not in ("SCONST", "USCONST"):
            continue
        start, end = token.start, token.end + 1
        if (
            token.name == "USCONST" and at + 1 < len(tokens)
            and tokens[at].name == "UESCAPE" and tokens[at + 1].name == "SCONST"
        ):
            end = tokens[at + 1].end + 1
            at += 2
        spelt = text[start:end]
        if spelt.startswith("$"):
            tag = spelt.index("$", 1) + 1
            found.append((start + tag, end - tag, spelt[tag:-tag]))  # as written
            continue
        if spelt.startswith("'") and spelt.count("'") == 2 and "\\" not in spelt:
            found.append((start + 1, end - 1, spelt[1:-1]))  # as written
            continue
        value = _literal_value(spelt)
        if value is not None:
            found.append((start, end, value))
    return found


@functools.lru_cache(maxsize=1024)
def _literal_value(spelt: str) -> str | None:
    try:
        [statement] = json.loads(_pg.parse_sql_json("SELECT " + spelt))["stmts"]
        value: str = statement["stmt"]["SelectStmt"]["targetList"][0]["ResTarget"]["val"]["A_Const"]["sval"]["sval"]
        return value
    except Exception:  # noqa: BLE001 -- anything unexpected: not decoded
        return None

