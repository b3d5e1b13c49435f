"""
Tests for L{hoopgw.audit.canonical}.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum

import rfc8785
from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.audit.canonical import MAX_SAFE_INTEGER, CanonicalizationError, canonical_json

# Any str Python can UTF-8 encode: every code point but lone surrogates,
# control characters included.
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
keys = st.one_of(
    text,
    # Keys that put non-BMP characters next to U+E000..U+FFFF, where UTF-16
    # and code point order disagree.
    st.text(st.sampled_from(["a", "\ue000", "\uffff", "\U00010000", "\U0010ffff", "\x7f", "é"]), max_size=4),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
    text,
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=30,
)
records = st.dictionaries(keys, values, max_size=8)


class Color(str, Enum):
    red = "red"


class CanonicalJSONTests(SynchronousTestCase):
    @settings(max_examples=400, deadline=None)
    @given(records)
    def test_equals_reference(self, record: dict) -> None:
        """
        For any record of dicts, lists, str (any code point, control
        characters included), safe ints, bools and None, the output is
        byte-equal to the C{rfc8785} reference implementation.
        """
        self.assertEqual(canonical_json(record), rfc8785.dumps(record))

    @settings(max_examples=300, deadline=None)
    @given(records)
    def test_record_equals_reference(self, body: dict) -> None:
        """
        For any body next to an audit record's own fields, L{canonical_record}
        (which walks the body only) is byte-equal to the reference's
        encoding of the merged record.
        """
        from hoopgw.audit.canonical import canonical_record

        header = {"v": 1, "log": "ab" * 16, "seq": 7, "prev": "0" * 64, "time": "2026-11-26T00:00:00.000000Z",
                  "event": "action.start"}
        body = {k: v for k, v in body.items() if k not in header}
        self.assertEqual(canonical_record(header, body), rfc8785.dumps({**header, **body}))

    def test_record_body_not_walked_fast(self) -> None:
        """If the body holds what the walk refuses (a float), the record still comes out canonical or refused."""
        from hoopgw.audit.canonical import canonical_record

        self.assertEqual(canonical_record({"v": 1}, {"n": 2.0}), b'{"n":2,"v":1}')
        self.assertRaises(CanonicalizationError, canonical_record, {"v": 1}, {"n": 2.5})

    @settings(max_examples=100, deadline=None)
    @given(values)
    def test_any_top_level_value(self, value: object) -> None:
        """
        If the top level is not an object, the output still equals the
        reference.
        """
        self.assertEqual(canonical_json(value), rfc8785.dumps(value))

    def test_utf16_key_order(self) -> None:
        """
        If one key starts with U+E000 and another with U+10000, the non-BMP
        key (a D800 surrogate in UTF-16) sorts first, unlike code point order.
        """
        record = {"\ue000": 1, "\U00010000": 2}
        self.assertEqual(canonical_json(record), '{"\U00010000":2,"\ue000":1}'.encode())

    def test_escapes(self) -> None:
        """
        If strings hold control characters, quotes and backslashes, they are
        escaped as JCS prescribes; other characters are raw UTF-8.
        """
        self.assertEqual(
            canonical_json({"a": '\x00\x08\t\n\x0c\r\x1f"\\\x7f\u2028é'}),
            b'{"a":"\\u0000\\b\\t\\n\\f\\r\\u001f\\"\\\\\x7f\xe2\x80\xa8\xc3\xa9"}',
        )

    def test_integral_float(self) -> None:
        """
        If a float is integral, it is written as that integer (as ES6 would).
        """
        self.assertEqual(canonical_json({"a": 2.0, "b": [-0.0]}), b'{"a":2,"b":[0]}')

    def test_rejects_fraction(self) -> None:
        """
        If a float is not integral, or not finite, it is refused with the
        path to it.
        """
        for bad in (1.5, float("nan"), float("inf")):
            e = self.assertRaises(CanonicalizationError, canonical_json, {"x": [{"y": bad}]})
            self.assertIn("/x/0/y", str(e))

    def test_rejects_unsafe_integers(self) -> None:
        """
        If an integer is beyond +-(2**53 - 1), it is refused; the bounds are
        accepted.
        """
        self.assertEqual(canonical_json([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER]), b"[9007199254740991,-9007199254740991]")
        for bad in (MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1):
            e = self.assertRaises(CanonicalizationError, canonical_json, {"n": bad})
            self.assertIn("/n", str(e))

    def test_rejects_non_str_keys(self) -> None:
        """
        If a key is not a str, it is refused rather than coerced.
        """
        e = self.assertRaises(CanonicalizationError, canonical_json, {1: "a"})
        self.assertIn("expected str", str(e))

    def test_rejects_lone_surrogate(self) -> None:
        """
        If a string holds a lone surrogate, it is refused (not UTF-8).
        """
        self.assertRaises(CanonicalizationError, canonical_json, {"a": "\ud800"})

    def test_rejects_other_types(self) -> None:
        """
        If a value is not a JSON type (bytes, a set), it is refused naming
        the type.
        """
        e = self.assertRaises(CanonicalizationError, canonical_json, {"a": b"x"})
        self.assertIn("bytes", str(e))

    def test_subclasses(self) -> None:
        """
        If values are str enums, tuples or other mappings, they encode as
        their plain JSON equivalents.
        """
        self.assertEqual(
            canonical_json(OrderedDict([("b", (Color.red,)), ("a", True)])),
            b'{"a":true,"b":["red"]}',
        )


# Strings weighted towards the characters whose escaping differs between
# JSON encoders: controls, DEL, the JavaScript line separators, quotes,
# backslash, the solidus, non-ASCII BMP and non-BMP.
tricky_text = st.text(
    st.one_of(
        st.sampled_from(['"', "\\", "/", "\x00", "\x08", "\x1f", "\x7f", "\x80", "\u2028", "\u2029", "\ufeff", "\U0001f600"]),
        st.characters(max_codepoint=0x20),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=12,
)
# Keys without non-BMP characters: there code point order is UTF-16 order.
bmp_keys = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), max_codepoint=0xFFFF), max_size=6),
    st.text(st.sampled_from(["a", "B", "\x7f", "é", "\u2028", "\ue000", "\uffff", "\x00"]), max_size=4),
)
bmp_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
        st.sampled_from([0, -1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER]),
        tricky_text,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(bmp_keys, children, max_size=5)
    ),
    max_leaves=30,
)


class OrjsonFastPathTests(SynchronousTestCase):
    """
    The fast path is C{orjson.dumps(value, option=ORJSON_CANONICAL)}; these
    prove it byte-equal to the reference on the domain the walk lets
    through, and show the walk keeps out what orjson would render otherwise.
    """

    @settings(max_examples=1000, deadline=None)
    @given(st.dictionaries(bmp_keys, bmp_values, max_size=8))
    def test_orjson_equals_reference(self, record: dict) -> None:
        """
        For any record of dicts with keys free of non-BMP characters, lists,
        str (controls, DEL, U+2028/9, quotes, backslash, non-BMP), safe ints
        (bounds included), bools and None, orjson's sorted strict output is
        byte-equal to C{rfc8785.dumps}, and so is L{canonical_json}'s.
        """
        import orjson

        from hoopgw.audit.canonical import ORJSON_CANONICAL, _fast_ok

        expected = rfc8785.dumps(record)
        self.assertTrue(_fast_ok(record))
        self.assertEqual(orjson.dumps(record, option=ORJSON_CANONICAL), expected)
        self.assertEqual(canonical_json(record), expected)

    def test_walk_routes_what_orjson_renders_differently(self) -> None:
        """
        If a record holds a non-BMP key, an unsafe integer, a float, a
        subclass or a type orjson renders natively (UUID, datetime, enum,
        dataclass, orjson.Fragment), the fast path is not taken: the value
        is refused, or encoded as JCS says.
        """
        import dataclasses
        import datetime
        import uuid

        import orjson

        from hoopgw.audit.canonical import _fast_ok

        @dataclasses.dataclass
        class Point:
            x: int

        class Plain(Enum):
            one = 1

        for value in (
            {"\U00010000": 1, "\ue000": 2},
            {"a": MAX_SAFE_INTEGER + 1},
            {"a": 1.0},
            {"a": Color.red},
            {"a": uuid.UUID(int=1)},
            {"a": datetime.datetime(2024, 1, 1)},
            {"a": Plain.one},
            {"a": Point(1)},
            {"a": orjson.Fragment(b"[1]")},
            OrderedDict(a=1),
        ):
            self.assertFalse(_fast_ok(value), value)
        self.assertEqual(canonical_json({"\ue000": 2, "\U00010000": 1}), '{"\U00010000":1,"\ue000":2}'.encode())
        self.assertEqual(canonical_json({"a": 1.0}), b'{"a":1}')
        for bad in (uuid.UUID(int=1), datetime.datetime(2024, 1, 1), Plain.one, Point(1), orjson.Fragment(b"[1]")):
            self.assertRaises(CanonicalizationError, canonical_json, {"a": bad})

    def test_lone_surrogate_after_fast_walk(self) -> None:
        """
        If the walk passes a string holding a lone surrogate, orjson's error
        sends it to the slow path, which refuses it saying where.
        """
        e = self.assertRaises(CanonicalizationError, canonical_json, {"ok": "x", "a": "ab\udc00"})
        self.assertIn("lone surrogate", str(e))


class CheckedTests(SynchronousTestCase):
    """
    L{checked}: a value walked once, then passed by the walk without a
    look inside, encodes byte-identically to the value it was made from.
    """

    @settings(max_examples=500, deadline=None)
    @given(st.dictionaries(bmp_keys, bmp_values, max_size=8), st.one_of(records, st.dictionaries(bmp_keys, bmp_values, max_size=8)))
    def test_same_bytes(self, record: dict, inner: dict) -> None:
        """
        Every dict value of a record, and a further nested dict of any kind
        (non-BMP keys included, which L{checked} leaves to the walk),
        replaced by its L{checked} form: the output is unchanged and equal
        to the reference.
        """
        from hoopgw.audit.canonical import checked

        plain = {**record, "inner": inner}
        swapped = {k: checked(v) if type(v) is dict else v for k, v in plain.items()}
        self.assertEqual(swapped, plain)
        self.assertEqual(canonical_json(swapped), canonical_json(plain))
        self.assertEqual(canonical_json(swapped), rfc8785.dumps(plain))

    def test_read_only(self) -> None:
        """A checked value cannot change after its check, nor can what it holds; copies are plain."""
        from hoopgw.audit.canonical import Checked, checked

        value = checked({"groups": ["a", "b"], "nested": {"k": ("x",)}})
        self.assertIsInstance(value, Checked)
        for change in (
            lambda: value.__setitem__("x", 1),
            lambda: value.update(x=1),
            lambda: value.pop("groups"),
            lambda: value["groups"].append("root"),
            lambda: value["groups"].__setitem__(0, "root"),
            lambda: value["nested"].__setitem__("k", 1),
        ):
            self.assertRaises(TypeError, change)
        self.assertEqual(canonical_json(value), b'{"groups":["a","b"],"nested":{"k":["x"]}}')
        self.assertIs(type(value.copy()), dict)
        import copy

        self.assertIs(type(copy.deepcopy(value)), dict)

    def test_not_fast_path_unchanged(self) -> None:
        """A value the walk would not pass is returned as it is, to be judged in every record."""
        from hoopgw.audit.canonical import checked

        for value in ({"a": 1.0}, {"\U00010000": 1}, {"a": [MAX_SAFE_INTEGER + 1]}, ["a"], "a"):
            self.assertIs(checked(value), value)

    def test_checked_list_elsewhere(self) -> None:
        """A list taken out of a checked value encodes in any record, by either path."""
        from hoopgw.audit.canonical import checked

        groups = checked({"groups": ["a", "é"]})["groups"]
        self.assertEqual(canonical_json({"g": groups}), '{"g":["a","é"]}'.encode())
        self.assertEqual(canonical_json({"g": groups, "f": 2.0}), '{"f":2,"g":["a","é"]}'.encode())
