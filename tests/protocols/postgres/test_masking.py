"""
Masking PostgreSQL results (protocols/postgres/masking.py) and finding a
result column's origin (protocols/postgres/origins.py), without a server.
The real thing, through psql and psycopg, is
tests/integration/test_postgres_masking.py.
"""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.masking.engine import REDACTED
from hoopgw.masking.service import MaskingService
from hoopgw.model import Connection, Identity
from hoopgw.policy.rules import MaskRule, PolicySet
from hoopgw.protocols.postgres import codec
from hoopgw.protocols.postgres.tracker import Desync
from hoopgw.protocols.postgres.masking import ResultMasking
from hoopgw.protocols.postgres.origins import Relation, column_names, view_origins
from hoopgw.testing import FixedCatalog, NullMetrics

KEY = b"k" * 32
PEOPLE, STAFF, STAFF2, PART = 16384, 16389, 16393, 16400
RELATIONS = {
    PEOPLE: Relation(PEOPLE, "public", "people", "r", {1: "id", 2: "ssn", 3: "salary", 4: "note"}),
    STAFF: Relation(STAFF, "public", "staff", "v", {1: "i", 2: "s", 3: "u"}, origins={1: (PEOPLE, 1), 2: (PEOPLE, 2)}),
    STAFF2: Relation(STAFF2, "public", "staff2", "v", {1: "x"}, origins={1: (STAFF, 2)}),
    PART: Relation(PART, "public", "people_2026", "r", {1: "id", 2: "ssn"}, ancestors=("public.people",)),
}

# pg_rewrite.ev_action of "CREATE VIEW vv AS SELECT s AS x FROM v WHERE i > 0" (PostgreSQL 15).
VIEW_TREE = (
    "({QUERY :commandType 1 :querySource 0 :canSetTag true :utilityStmt <> :resultRelation 0 "
    ":cteList <> :rtable ({RANGETBLENTRY :alias {ALIAS :aliasname old :colnames <>} :eref {ALIAS "
    ':aliasname old :colnames ("x")} :rtekind 0 :relid 16393 :relkind v} {RANGETBLENTRY :alias <> '
    ':eref {ALIAS :aliasname v :colnames ("i" "s" "u" "n")} :rtekind 0 :relid 16389}) :jointree '
    "{FROMEXPR :fromlist ({RANGETBLREF :rtindex 3}) :quals {OPEXPR :opno 521 :args ({VAR :varno 3 "
    ":varattno 1} {CONST :consttype 23 :constvalue 4 [ 0 0 0 0 0 0 0 0 ]}) :location 245}} "
    ":targetList ({TARGETENTRY :expr {VAR :varno 3 :varattno 2 :vartype 25} :resno 1 :resname x "
    ":ressortgroupref 0 :resorigtbl 16389 :resorigcol 2 :resjunk false} {TARGETENTRY :expr {SUBLINK "
    ":subselect {QUERY :targetList ({TARGETENTRY :expr {VAR} :resno 1 :resname \\(odd\\ name\\) "
    ":resorigtbl 16384 :resorigcol 3 :resjunk false})}} :resno 2 :resname y :resorigtbl 0 "
    ":resorigcol 0 :resjunk false}) :override 0 :onConflict <> :returningList <>})"
)


def field(name: str, table: int = 0, column: int = 0, type_oid: int = 25, fmt: int = 0) -> codec.FieldDescription:
    return codec.FieldDescription(name, table, column, type_oid, -1, -1, fmt)


class OriginTests(SynchronousTestCase):
    def test_view_origins_from_the_stored_definition(self) -> None:
        """Only the top query's target entries count; a sublink's own target list does not."""
        self.assertEqual(view_origins(VIEW_TREE), {1: (STAFF, 2)})

    def test_an_alias_that_looks_like_a_field(self) -> None:
        """CREATE VIEW odd AS SELECT id AS ":resno", ...: the alias is a value, never a field."""
        tree = (
            "({QUERY :targetList ({TARGETENTRY :expr {VAR :varno 1} :resno 1 :resname :resno "
            ":ressortgroupref 0 :resorigtbl 16384 :resorigcol 3 :resjunk false}) :override 0})"
        )
        self.assertEqual(view_origins(tree), {1: (PEOPLE, 3)})
        unreadable = Relation(STAFF, "public", "odd", "v", {1: "x"}, origins=None)
        self.assertIsNone(column_names({STAFF: unreadable}, STAFF, 1))  # unknown: masked

    def test_column_names_follow_views_ancestors_and_whole_rows(self) -> None:
        self.assertEqual(column_names(RELATIONS, STAFF2, 1), ("public.staff2.x", "public.staff.s", "public.people.ssn"))
        self.assertEqual(column_names(RELATIONS, STAFF, 3), ("public.staff.u",))  # an expression: no further
        self.assertEqual(column_names(RELATIONS, PART, 2), ("public.people_2026.ssn", "public.people.ssn"))
        whole = column_names(RELATIONS, PEOPLE, 0)
        self.assertIn("public.people.ssn", whole)
        self.assertIsNone(column_names(RELATIONS, 99999, 1))  # unknown relation
        self.assertIsNone(column_names(RELATIONS, PEOPLE, 9))  # dropped column


def session_masks(*masks: MaskRule, groups: tuple[str, ...] = ("dev",)):
    service = MaskingService(SimpleNamespace(policy_set=PolicySet(masks=masks)), KEY)
    return service.for_session(Identity("dev", "alice", groups), Connection("db", "postgres", "x"))


PII = MaskRule("pii", columns=("public.people.ssn", "public.people.salary"), detectors=("card",))


class ResultMaskingTests(SynchronousTestCase):
    def masking(self, *masks: MaskRule, catalog: FixedCatalog | None = None) -> ResultMasking:
        current = session_masks(*masks)
        return ResultMasking(lambda: current, catalog or FixedCatalog(tables=RELATIONS))

    def test_by_origin_through_a_view_of_a_view_with_detectors_elsewhere(self) -> None:
        masking = self.masking(PII)
        self.assertIsNone(masking.describe(codec.RowDescription([
            field("x", STAFF2, 1), field("i", STAFF, 1, 23), field("note", PEOPLE, 4), field("n"),
        ])))
        raw = masking.row(codec.DataRow.from_values([b"536-22-8726", b"1", b"card 4111111111111111", b"plain"]))
        self.assertEqual(codec.DataRow(raw).values, (REDACTED.encode(), b"1", f"card {REDACTED}".encode(), b"plain"))
        self.assertEqual(masking.take_counts(), {"pii": 2})
        self.assertIsNone(masking.take_counts())

    def test_masks_changed_mid_result(self) -> None:
        """
        A policy reload changes the session's masks while a result streams:
        its rows were planned for the old masks (here: none applied to its
        columns), so none goes out; the front end ends the session (Desync).
        The next result is planned for the new ones.
        """
        masks = [session_masks(MaskRule("other", columns=("public.other.x",)))]
        masking = ResultMasking(lambda: masks[0], FixedCatalog(tables=RELATIONS))
        description = codec.RowDescription([field("ssn", PEOPLE, 2)])
        masking.describe(description)
        row = codec.DataRow.from_values([b"536-22-8726"])
        self.assertEqual(masking.row(row), row.raw)  # no mask covers it
        masks[0] = session_masks(PII)  # the reload
        self.assertTrue(masking.active())  # (the front end asks at each read)
        self.assertRaises(Desync, masking.row, row)
        masking.describe(description)
        self.assertEqual(codec.DataRow(masking.row(row)).values, (REDACTED.encode(),))

    def test_plan_made_while_masks_were_removed_is_not_reused(self) -> None:
        """
        Rows held for the catalog while a reload removes the session's masks
        pass untouched; the plan made for them must not serve a later
        result of the same query (the same RowDescription object: decoders
        share one per bytes) once masks are back, however many results
        come between.
        """
        masks = [session_masks(PII)]
        catalog = FixedCatalog(tables=RELATIONS, hold=True)
        masking = ResultMasking(lambda: masks[0], catalog)
        description = codec.RowDescription([field("ssn", PEOPLE, 2)])
        held = masking.describe(description)
        masks[0] = None  # the reload, while the catalog is read
        catalog.release()
        self.successResultOf(held)
        self.assertFalse(masking.active())  # (the held rows go out as they are)
        masks[0] = session_masks(PII)  # masks back
        row = codec.DataRow.from_values([b"536-22-8726"])
        for between in ([], [codec.RowDescription([field("b", type_oid=16)])]):
            self.assertTrue(masking.active())
            for other in between:
                masking.describe(other)
            self.assertIsNone(masking.describe(description))
            self.assertEqual(codec.DataRow(masking.row(row)).values, (REDACTED.encode(),))

    def test_types_the_client_parses_become_null(self) -> None:
        """A number masked by origin cannot be "[redacted]" (psycopg would refuse it); binary values neither."""
        masking = self.masking(PII)
        masking.describe(codec.RowDescription([
            field("salary", PEOPLE, 3, 23), field("ssn", PEOPLE, 2, 25, fmt=1), field("j", type_oid=114),
            field("b", type_oid=20, fmt=1), field("t", type_oid=25, fmt=1),
        ]))
        raw = masking.row(codec.DataRow.from_values([
            b"987654", b"536-22-8726", b'{"n": 4111111111111111, "s": "4111111111111111"}',
            struct.pack(">q", 4111111111111111), b"x 4111111111111111",
        ]))
        salary, ssn, document, big, text = codec.DataRow(raw).values
        self.assertEqual((salary, ssn, big), (None, None, None))
        self.assertEqual(document, b'{"n": "[redacted]", "s": "[redacted]"}')  # a number masked as a string: still JSON
        self.assertEqual(text, f"x {REDACTED}".encode())

    def test_numbers_inside_binary_arrays_records_and_money(self) -> None:
        card = struct.pack(">q", 4111111111111111)
        array = struct.pack(">iiIii", 1, 0, 20, 1, 1) + struct.pack(">i", 8) + card
        record = struct.pack(">i", 2) + struct.pack(">Ii", 23, 4) + struct.pack(">i", 7) + struct.pack(">Ii", 20, 8) + card
        money = struct.pack(">q", 411111111111111100)
        masking = self.masking(MaskRule("cards", detectors=("card",)))
        masking.describe(codec.RowDescription([
            field("a", type_oid=1016, fmt=1), field("r", type_oid=2249, fmt=1), field("m", type_oid=790, fmt=1),
            field("ok", type_oid=1016, fmt=1),
        ]))
        harmless = struct.pack(">iiIii", 1, 0, 20, 1, 1) + struct.pack(">i", 8) + struct.pack(">q", 42)
        out = codec.DataRow(masking.row(codec.DataRow.from_values([array, record, money, harmless]))).values
        self.assertEqual(out, (None, None, None, harmless))

    def test_origin_masks_of_every_strategy_whatever_the_detectors(self) -> None:
        """A column masked by origin is masked whole, also when the value is too short for any detector."""
        for strategy, expected in (("partial", b"*"), ("hash", b"hmac:")):
            masking = self.masking(
                MaskRule("pii", columns=("public.people.ssn",), detectors=("card",), strategy=strategy),
                MaskRule("mail", detectors=("email",)),
            )
            masking.describe(codec.RowDescription([field("ssn", PEOPLE, 2)]))
            for value in (b"536-22-8726", b"12", b"hello world"):
                [out] = codec.DataRow(masking.row(codec.DataRow.from_values([value]))).values
                self.assertNotEqual(out, value, (strategy, value))
                self.assertIn(expected, out)

    def test_a_binary_copy_field_that_is_not_what_it_seems(self) -> None:
        """An array header with a short element (bytes a user stored): searched as it is, no exception."""
        masking = self.masking(MaskRule("cards", detectors=("card",)))
        field_bytes = struct.pack(">iiIii", 1, 0, 23, 1, 1) + struct.pack(">i", 3) + b"abc"
        row = struct.pack(">h", 1) + struct.pack(">i", len(field_bytes)) + field_bytes
        data = codec.CopyData.from_data(row)
        self.assertEqual(masking.copy_row(data, binary=True).data, row)

    def test_json_stays_json(self) -> None:
        masking = self.masking(PII)
        masking.describe(codec.RowDescription([field("j", type_oid=3802, fmt=1)]))
        raw = masking.row(codec.DataRow.from_values([b'\x01{"s": "4111111111111111"}']))
        [value] = codec.DataRow(raw).values
        self.assertEqual(json.loads(value[1:]), {"s": REDACTED})

    def test_unknown_origin_is_masked(self) -> None:
        """The catalog cannot say what a column is: it is masked (fail closed)."""
        masking = self.masking(PII, catalog=FixedCatalog(unreadable=True))
        d = masking.describe(codec.RowDescription([field("a", 55555, 1), field("b")]))
        self.assertIsNotNone(d)
        self.successResultOf(d)
        self.assertIsNone(masking.describe(masking._ready_for))  # planned: no second read
        raw = masking.row(codec.DataRow.from_values([b"anything", b"plain"]))
        self.assertEqual(codec.DataRow(raw).values, (REDACTED.encode(), b"plain"))

    def test_nothing_to_do_passes_rows_untouched(self) -> None:
        masking = self.masking(MaskRule("other", columns=("x.y.z",)))
        masking.describe(codec.RowDescription([field("ssn", PEOPLE, 2), field("ok", type_oid=16)]))
        row = codec.DataRow.from_values([b"536-22-8726", b"t"])
        self.assertIs(masking.row(row), row.raw)

    def test_reports_and_notifications(self) -> None:
        masking = self.masking(MaskRule("cards", detectors=("card",)))
        error = codec.error_response("ERROR", "23505", "duplicate", detail="Key (card)=(4111111111111111) exists")
        masked = masking.report(error)
        self.assertEqual(masked.detail, f"Key (card)=({REDACTED}) exists")
        self.assertEqual(masked.code, "23505")
        # With masks by column, an integrity violation's detail (stored values) is withheld.
        withheld = self.masking(PII).report(
            codec.error_response("ERROR", "23502", "null value", detail="Failing row contains (null, 987654).")
        )
        self.assertNotIn("987654", withheld.detail)
        # Fields in the client's encoding: full-width digits under EUC_JP.
        masking.codec = "euc_jp"
        sent = "card ４１１１ １１１１ １１１１ １１１１".encode("euc_jp").decode("utf-8", "surrogateescape")
        shown = masking.report(codec.error_response("ERROR", "22P02", sent)).message
        self.assertEqual(shown.encode("utf-8", "surrogateescape").decode("euc_jp"), f"card {REDACTED}")
        masking = self.masking(PII)
        note = masking.notification(codec.NotificationResponse(1, "ch", "4111111111111111"))
        self.assertEqual(note.payload, REDACTED)

    def test_copy_rows(self) -> None:
        masking = self.masking(MaskRule("cards", detectors=("card",)))
        line = masking.copy_row(codec.CopyData.from_data(b"1\t4111111111111111\tok\n"), binary=False)
        self.assertEqual(line.data, f"1\t{REDACTED}\tok\n".encode())
        header = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
        row = header + struct.pack(">h", 2) + struct.pack(">i", 16) + b"4111111111111111" + struct.pack(">i", 2) + b"ok"
        out = masking.copy_row(codec.CopyData.from_data(row), binary=True).data
        self.assertEqual(out, header + struct.pack(">h", 2) + struct.pack(">i", -1) + struct.pack(">i", 2) + b"ok")

    @given(st.lists(st.one_of(st.none(), st.binary(max_size=40), st.sampled_from([b"4111111111111111", b"536-22-8726"])), min_size=1, max_size=8))
    def test_rewritten_rows_are_well_formed(self, values: list[bytes | None]) -> None:
        """For any row: the result parses, keeps its column count, changes only what a mask covers."""
        masking = self.masking(PII)
        fields = [field(f"c{i}", PEOPLE if i == 0 else 0, 2 if i == 0 else 0) for i in range(len(values))]
        masking.describe(codec.RowDescription(fields))
        out = codec.DataRow(masking.row(codec.DataRow.from_values(values))).values
        self.assertEqual(len(out), len(values))
        self.assertEqual(out[0], None if values[0] is None else REDACTED.encode())
        for before, after in zip(values[1:], out[1:]):
            if before is None or b"4111111111111111" not in before:
                self.assertEqual(after, before)
            else:
                self.assertNotIn(b"4111111111111111", after)

    @given(st.lists(
        st.tuples(
            st.sampled_from([(25, 0), (23, 0), (20, 1), (17, 0), (3802, 1), (2249, 0), (25, 1), (700, 1), (1700, 1)]),
            st.one_of(st.none(), st.binary(max_size=24), st.sampled_from([
                b"4111111111111111", b"x 536-22-8726 y", b"\\x34313131313131313131313131313131", b"\x01\"4111111111111111\"",
            ])),
        ),
        min_size=1, max_size=10,
    ))
    def test_any_types_and_formats(self, columns: list[tuple[tuple[int, int], bytes | None]]) -> None:
        """Whatever the types and formats: the row parses, a changed value is NULL or shows the mask, no canary is left."""
        masking = self.masking(MaskRule("m", detectors=("card", "ssn")))
        masking.describe(codec.RowDescription(
            [field(f"c{i}", type_oid=t, fmt=f) for i, ((t, f), _) in enumerate(columns)]
        ))
        values = [v for _, v in columns]
        out = codec.DataRow(masking.row(codec.DataRow.from_values(values))).values
        self.assertEqual(len(out), len(values))
        for before, after in zip(values, out):
            if after != before:
                self.assertTrue(after is None or REDACTED.encode() in after, (before, after))
            if after is not None:
                self.assertNotIn(b"4111111111111111", after)
                self.assertNotIn(b"536-22-8726", after)

    def test_held_until_the_catalog_answers(self) -> None:
        catalog = FixedCatalog(tables=RELATIONS, hold=True)
        masking = self.masking(PII, catalog=catalog)
        description = codec.RowDescription([field("ssn", PEOPLE, 2)])
        d = masking.describe(description)
        self.assertNoResult(d)
        catalog.release()
        self.successResultOf(d)
        self.assertIsNone(masking.describe(description))
        raw = masking.row(codec.DataRow.from_values([b"536-22-8726"]))
        self.assertEqual(codec.DataRow(raw).values, (REDACTED.encode(),))


class SessionMasksTests(SynchronousTestCase):
    def test_who_a_mask_applies_to_and_what_the_trail_stores(self) -> None:
        rule = MaskRule("pii", detectors=("card",), groups=("dev",), users=("a*",), except_groups=("readers",))
        self.assertEqual(len(session_masks(rule).client), 1)
        self.assertEqual(session_masks(rule, groups=("ops",)).client, ())
        exempt = session_masks(rule, groups=("dev", "readers"))
        self.assertEqual(exempt.client, ())
        self.assertEqual(len(exempt.trail), 1)  # the trail is masked for the exempt too
        counts: dict[tuple[str, str], int] = {}
        self.assertEqual(exempt.trail_text("pay 4111111111111111", counts), f"pay {REDACTED}")
        self.assertEqual(counts, {("pii", "card"): 1})
        metrics = NullMetrics()
        metrics.values_masked = lambda *args: seen.append(args)
        seen: list[tuple[str, str, int]] = []
        exempt.metrics = metrics
        self.assertEqual(exempt.settle(counts), {"pii": 1})
        self.assertEqual(seen, [("pii", "card", 1)])

    def test_masks_follow_a_reload(self) -> None:
        policy = SimpleNamespace(policy_set=PolicySet())
        service = MaskingService(policy, KEY)
        identity, connection = Identity("dev", "alice", ()), Connection("db", "postgres", "x")
        self.assertIsNone(service.for_session(identity, connection))
        policy.policy_set = PolicySet(masks=[MaskRule("m", detectors=("email",))])
        self.assertIsNotNone(service.for_session(identity, connection))
