"""COPY TO rows as fields (protocols/postgres/copyout.py): what a COPY copies, and PostgreSQL's text and CSV row syntax."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.postgres.copyout import (
    CopySpec, copy_spec, csv_field, csv_fields, csv_value, text_field, text_fields, text_value,
)


class SpecTests(SynchronousTestCase):
    def test_relation_columns_and_options(self) -> None:
        self.assertEqual(copy_spec("COPY people TO STDOUT"), CopySpec(None, "people", None))
        self.assertEqual(
            copy_spec("copy public.people (id, ssn) to stdout with (format csv, header, delimiter ';', quote '''', null 'x')"),
            CopySpec("public", "people", ("id", "ssn"), "csv", ";", "'", "'", "x", True, custom_null=True),
        )
        self.assertEqual(copy_spec("COPY people TO STDOUT WITH CSV HEADER").header, True)
        self.assertEqual(copy_spec("COPY people TO STDOUT (FORMAT binary)").format, "binary")

    def test_header_read_as_postgresql_reads_it(self) -> None:
        """HEADER 'OFF' is no header (an outside tester's find: the first row was taken for one)."""
        for value, header in (("'OFF'", False), ("'False'", False), ('"ON"', True), ("'1'", True), ("0", False)):
            self.assertEqual(copy_spec(f"COPY people TO STDOUT (FORMAT csv, HEADER {value})").header, header, value)
        self.assertIsNone(copy_spec("COPY people TO STDOUT (FORMAT csv, HEADER 'maybe')"))

    def test_what_cannot_be_masked_by_column(self) -> None:
        for text in (
            "COPY (SELECT ssn FROM people) TO STDOUT",
            "COPY people TO '/tmp/x'",
            "COPY people TO PROGRAM 'cat'",
            "COPY people TO STDOUT (ENCODING 'SJIS')",
        ):
            self.assertFalse(copy_spec(text).by_column, text)
        for text in ("COPY people FROM STDIN", "SELECT 1; COPY people TO STDOUT", "not sql at all"):
            self.assertIsNone(copy_spec(text), text)


fields = st.lists(st.text(alphabet=st.sampled_from("ab\t\n\r\\;,\"' 1"), max_size=8), min_size=1, max_size=6)


class RowSyntaxTests(SynchronousTestCase):
    @given(fields, st.sampled_from(["\t", ";", "|"]))
    def test_text_fields_split_what_text_field_writes(self, values: list[str], delimiter: str) -> None:
        written = [text_field(v, delimiter) for v in values]
        self.assertEqual(text_fields(delimiter.join(written), delimiter), written)

    @given(fields, st.sampled_from([(",", '"', '"'), (";", "'", "'"), (",", '"', "\\")]))
    def test_csv_fields_split_what_csv_field_writes(self, values: list[str], syntax: tuple[str, str, str]) -> None:
        delimiter, quote, escape = syntax
        written = [csv_field(v, quote, escape) for v in values]
        self.assertEqual(csv_fields(delimiter.join(written), delimiter, quote, escape), written)

    @given(fields, st.sampled_from([(",", '"', '"'), (";", "'", "\\")]))
    def test_values_read_back(self, values: list[str], syntax: tuple[str, str, str]) -> None:
        """What a masked field is made from is the value, not its spelling (quotes, escapes)."""
        delimiter, quote, escape = syntax
        for value in values:
            self.assertEqual(csv_value(csv_field(value, quote, escape), quote, escape), value)
            self.assertEqual(text_value(text_field(value, delimiter)), value)

    def test_escaped_delimiters_stay_inside_their_field(self) -> None:
        self.assertEqual(text_fields("a\\\tb\tc", "\t"), ["a\\\tb", "c"])
        self.assertEqual(csv_fields('"a,""b",c', ",", '"', '"'), ['"a,""b"', "c"])
