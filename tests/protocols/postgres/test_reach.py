"""
The relation graph's logic, on hand-built snapshots (the real catalog's
answers are exercised in tests/adversarial/test_postgres_reach.py).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.postgres.sql import classify
from hoopgw.protocols.postgres.catalog import graph_from_snapshot
from hoopgw.protocols.postgres.reach import EMPTY, RelationGraph, Routine, changes_catalog, unreadable, with_renames

PAYMENTS, VIEW, PARENT, CHILD, SIBLING, GRAND, NOTES, FEED, LEDGER, OTHER_LEDGER = range(1, 11)


def graph(**kwargs) -> RelationGraph:
    return RelationGraph(
        [
            (PAYMENTS, "public", "payments"),
            (VIEW, "public", "pay_view"),
            (PARENT, "public", "parent"),
            (CHILD, "public", "child"),
            (SIBLING, "public", "sibling"),
            (GRAND, "public", "grandchild"),
            (NOTES, "public", "notes"),
            (FEED, "public", "feed"),
            (LEDGER, "billing", "ledger"),
            (OTHER_LEDGER, "archive", "ledger"),
        ],
        inherits=[(CHILD, PARENT), (SIBLING, PARENT), (GRAND, CHILD)],
        views=[(VIEW, PAYMENTS)],
        **kwargs,
    )


def one(sql: str):
    [info] = classify(sql)
    return info


class ExpandTests(SynchronousTestCase):
    def test_views_reach_their_base_tables(self) -> None:
        info = graph().expand(one("DELETE FROM pay_view WHERE id = 1"))
        self.assertIn("public.payments", info.writes)
        self.assertIn("public.payments", info.reads)
        self.assertIn("public.payments", graph().expand(one("SELECT * FROM pay_view")).reads)
        self.assertNotIn("public.payments", graph().expand(one("SELECT * FROM pay_view")).writes)

    def test_family_not_siblings(self) -> None:
        info = graph().expand(one("DELETE FROM child WHERE x = 1"))
        self.assertEqual(set(info.writes), {"public.child", "public.parent", "public.grandchild"})
        # A write to the parent lands in every descendant.
        info = graph().expand(one("DELETE FROM parent WHERE x = 1"))
        self.assertEqual(set(info.writes), {"public.parent", "public.child", "public.sibling", "public.grandchild"})

    def test_unqualified_names_match_every_schema_qualified_names_one(self) -> None:
        self.assertEqual(
            set(graph().expand(one("DELETE FROM ledger WHERE x = 1")).writes),
            {"public.ledger", "billing.ledger", "archive.ledger"},
        )
        self.assertEqual(graph().expand(one("DELETE FROM billing.ledger WHERE x = 1")).writes, ("billing.ledger",))
        # public.ledger written out does not mean "any schema".
        self.assertEqual(graph().expand(one("DELETE FROM public.ledger WHERE x = 1")).writes, ("public.ledger",))

    def test_rules_cascades_and_triggers_to_a_fixed_point(self) -> None:
        trigger = Routine("public", "feed_trigger", "plpgsql", "BEGIN INSERT INTO notes VALUES (1); RETURN NEW; END")
        g = graph(rules=[(NOTES, "i", PAYMENTS)], triggers=[(FEED, "iud", trigger, ())], cascades=[(LEDGER, "d", FEED, "d")])
        # ledger --cascade--> feed --trigger--> notes --rule--> payments
        info = g.expand(one("DELETE FROM billing.ledger WHERE id = 1"))
        self.assertEqual(
            set(info.writes), {"billing.ledger", "public.feed", "public.notes", "public.payments"}
        )
        self.assertIn("public.feed_trigger", info.functions)
        # Reading fires none of them.
        self.assertEqual(g.expand(one("SELECT * FROM billing.ledger")).writes, ())

    def test_only_the_events_that_fire(self) -> None:
        g = graph(rules=[(NOTES, "d", PAYMENTS)], cascades=[(LEDGER, "d", FEED, "d")],
                  triggers=[(FEED, "u", Routine("public", "t", "plpgsql", "BEGIN DELETE FROM payments; END"), ())])
        # An INSERT into the referenced table cascades nowhere; an ON DELETE rule
        # does not fire on INSERT; an UPDATE trigger does not fire on DELETE.
        self.assertEqual(g.expand(one("INSERT INTO billing.ledger VALUES (1)")).writes, ("billing.ledger",))
        self.assertEqual(g.expand(one("UPDATE billing.ledger SET x = 1 WHERE x = 2")).writes, ("billing.ledger",))
        self.assertEqual(g.expand(one("INSERT INTO notes VALUES (1)")).writes, ("public.notes",))
        self.assertIn("public.payments", g.expand(one("DELETE FROM notes WHERE x = 1")).writes)
        self.assertEqual(set(g.expand(one("DELETE FROM billing.ledger WHERE x = 1")).writes), {"billing.ledger", "public.feed"})
        self.assertIn("public.payments", g.expand(one("UPDATE feed SET x = 1 WHERE x = 2")).writes)
        # DDL alone fires nothing, but still writes through a view.
        self.assertEqual(g.expand(one("ALTER TABLE notes ADD COLUMN y int")).writes, ("public.notes",))
        self.assertIn("public.payments", g.expand(one("ALTER VIEW pay_view RENAME TO v2")).writes)

    def test_functions_that_run_on_reads_and_writes(self) -> None:
        wipe = Routine("public", "wipe", "plpgsql", "BEGIN DELETE FROM payments WHERE id > 0; RETURN 1; END")
        g = graph(functions=[wipe], uses=[(NOTES, "iu", "public.wipe"), (FEED, "riud", "public.wipe")])
        self.assertIn("public.payments", g.expand(one("INSERT INTO notes VALUES (1)")).writes)  # a default
        self.assertNotIn("public.payments", g.expand(one("DELETE FROM notes WHERE x = 1")).writes)
        self.assertIn("public.payments", g.expand(one("SELECT * FROM feed")).writes)  # a policy, s.f
        self.assertIn("public.payments", g.expand(one("SELECT wipe()")).writes)
        self.assertIn("public.payments", g.expand(one("SELECT public.wipe()")).writes)
        self.assertEqual(g.expand(one("SELECT other.wipe()")).writes, ())

    def test_what_a_body_runs_is_the_statements_own(self) -> None:
        """A called function's DROP, TRUNCATE, DELETE without WHERE, COPY PROGRAM: as if written in the call."""
        g = graph(functions=[
            Routine("public", "trunc", "plpgsql", "BEGIN TRUNCATE notes; END"),
            Routine("public", "dropper", "sql", "DROP TABLE notes"),
            Routine("public", "wipe_all", "sql", "DELETE FROM notes"),
            Routine("public", "shell", "plpgsql", "BEGIN COPY (SELECT 1) TO PROGRAM 'id'; END"),
        ], uses=[(FEED, "i", "public.trunc")])
        info = g.expand(one("SELECT trunc()"))
        self.assertEqual(info.kinds[0], "select")
        self.assertIn("truncate", info.kinds)
        self.assertIn("drop", g.expand(one("SELECT dropper()")).kinds)
        self.assertTrue(g.expand(one("SELECT wipe_all()")).without_where)
        self.assertTrue(g.expand(one("SELECT * FROM public.shell()")).program)
        self.assertTrue(g.expand(one("SELECT * FROM public.shell()")).attributes()["sql.program"])
        # A default's (or a trigger's) body is the table's design: its tables
        # count for the INSERT, its kinds count where it is attached.
        insert = g.expand(one("INSERT INTO feed VALUES (1)"))
        self.assertNotIn("truncate", insert.kinds)
        self.assertIn("public.notes", insert.writes)
        self.assertIn("truncate", g.expand(one("ALTER TABLE feed ALTER COLUMN x SET DEFAULT trunc()")).kinds)
        self.assertIn("truncate", g.expand(one("CREATE TRIGGER t AFTER INSERT ON feed EXECUTE FUNCTION trunc()")).kinds)
        plain = g.expand(one("SELECT 1 FROM notes"))
        self.assertEqual((plain.kinds, plain.without_where, plain.program), (("select",), False, False))

    def test_a_triggers_where_less_write_is_not_the_statements(self) -> None:
        """An INSERT whose trigger keeps a counter (UPDATE without WHERE) is no unbounded write; what it writes still counts."""
        counter = Routine("public", "bump", "plpgsql", "BEGIN UPDATE notes SET x = x + 1; DELETE FROM payments; END")
        g = graph(functions=[counter], triggers=[(FEED, "i", counter, ())])
        info = g.expand(one("INSERT INTO feed VALUES (1)"))
        self.assertFalse(info.without_where)
        self.assertEqual(info.kinds, ("insert", "select"))
        self.assertIn("public.payments", info.writes)
        # Called by name, the same body is the statement's own.
        called = g.expand(one("SELECT bump()"))
        self.assertTrue(called.without_where)
        self.assertIn("delete", called.kinds)

    def test_functions_that_run_sql_text_through_an_operator(self) -> None:
        g = graph(operators=[("public", "@@@", "public.crosstab2")])
        self.assertIn("unknown", g.expand(one("SELECT @@@ 'SELECT 1'")).kinds)
        self.assertIn("unknown", one("CREATE OPERATOR @@@ (FUNCTION = crosstab2, RIGHTARG = text)").kinds)

    def test_execute_in_a_body_is_unknown(self) -> None:
        g = graph(functions=[Routine("public", "exec_p", "sql", "EXECUTE p")])
        self.assertIn("unknown", g.expand(one("SELECT exec_p()")).kinds)

    def test_aggregates_run_their_functions(self) -> None:
        step = Routine("public", "step", "plpgsql", "BEGIN DELETE FROM payments WHERE id > 0; RETURN s; END")
        g = graph(functions=[step], aggregates=[("public", "agg", ("public.step", "pg_catalog.int4pl"))])
        info = g.expand(one("SELECT agg(x) FROM notes"))
        self.assertIn("public.payments", info.writes)
        self.assertIn("public.step", info.functions)

    def test_truncate_cascades_along_every_foreign_key(self) -> None:
        g = graph(cascades=[(LEDGER, "t", FEED, "t"), (FEED, "t", NOTES, "t")])
        self.assertEqual(
            set(g.expand(one("TRUNCATE billing.ledger CASCADE")).writes), {"billing.ledger", "public.feed", "public.notes"}
        )
        self.assertEqual(g.expand(one("DELETE FROM billing.ledger WHERE x = 1")).writes, ("billing.ledger",))

    def test_maintenance_runs_a_tables_expressions(self) -> None:
        wipe = Routine("public", "wipe", "plpgsql", "BEGIN DELETE FROM payments WHERE id > 0; RETURN 1; END")
        g = graph(functions=[wipe], uses=[(NOTES, "ium", "public.wipe")])
        for sql in ("ANALYZE notes", "VACUUM FULL notes", "REINDEX TABLE notes", "CREATE INDEX i ON notes (x)",
                    "CLUSTER notes USING i", "ALTER TABLE notes VALIDATE CONSTRAINT c"):
            self.assertIn("public.payments", g.expand(one(sql)).writes, sql)
        self.assertNotIn("public.payments", g.expand(one("SELECT * FROM notes")).writes)

    def test_maintenance_naming_no_table_reaches_every_table(self) -> None:
        info = graph().expand(one("ANALYZE"))
        self.assertIn("public.payments", info.writes)
        self.assertIn("billing.ledger", info.writes)

    def test_an_update_of_a_partitioned_table_moves_rows(self) -> None:
        trigger = Routine("public", "t", "plpgsql", "BEGIN DELETE FROM payments WHERE id > 0; RETURN NEW; END")
        g = graph(triggers=[(CHILD, "i", trigger, ())])
        self.assertIn("public.payments", g.expand(one("UPDATE parent SET x = 2 WHERE x = 1")).writes)
        self.assertNotIn("public.payments", graph(triggers=[(NOTES, "i", trigger, ())]).expand(
            one("UPDATE notes SET x = 2 WHERE x = 1")).writes)

    def test_pg_temp_is_the_sessions_temporary_schema(self) -> None:
        wipe = Routine("pg_temp_3", "tf", "sql", "DELETE FROM payments WHERE id > 0")
        g = RelationGraph([(PAYMENTS, "public", "payments"), (NOTES, "pg_temp_3", "scratch")],
                          functions=[wipe], function_names=[("pg_temp_3", "tf")])
        self.assertIn("public.payments", g.expand(one("SELECT pg_temp.tf()")).writes)
        self.assertEqual(g.reach(one("SELECT * FROM pg_temp.scratch"))[1], ())
        self.assertEqual(g.reach(one("SELECT * FROM pg_temp.other"))[1], (("relation", None, "other"),))

    def test_renames_in_an_open_transaction(self) -> None:
        renamed = {"public.zz": "public.feed"}
        info = with_renames(one("INSERT INTO zz VALUES (1)"), renamed)
        self.assertEqual(info.writes, ("public.zz", "public.feed"))
        untouched = one("SELECT * FROM notes")
        self.assertIs(with_renames(untouched, renamed), untouched)
        self.assertEqual(with_renames(one("INSERT INTO other.zz VALUES (1)"), renamed).writes, ("other.zz",))

    def test_a_new_child_writes_its_parents_and_a_copy_runs_the_sources_expressions(self) -> None:
        self.assertIn("billing.ledger", one("CREATE TABLE p PARTITION OF billing.ledger FOR VALUES IN (1)").writes)
        self.assertIn("public.checked", one("CREATE TABLE c () INHERITS (checked)").writes)
        wipe = Routine("public", "wipe", "plpgsql", "BEGIN DELETE FROM payments WHERE id > 0; RETURN true; END")
        g = graph(functions=[wipe], uses=[(NOTES, "ium", "public.wipe")])
        for sql in ("CREATE TABLE t (LIKE notes INCLUDING ALL)", "CREATE TABLE t AS SELECT * FROM notes",
                    "SELECT * INTO t FROM notes"):
            self.assertIn("public.payments", g.expand(one(sql)).writes, sql)
        self.assertIn("public.payments", g.expand(one("ALTER FUNCTION wipe() RENAME TO harmless")).writes)
        # A child takes its parent's CHECKs, defaults, key and (a partition) row triggers.
        for sql in ("CREATE TABLE c () INHERITS (notes)", "CREATE TABLE c PARTITION OF notes FOR VALUES IN (1)"):
            self.assertIn("public.payments", g.expand(one(sql)).writes, sql)
        trigger = Routine("public", "t", "plpgsql", "BEGIN DELETE FROM payments WHERE id > 0; RETURN NEW; END")
        g = graph(triggers=[(FEED, "i", trigger, ())])
        self.assertIn("public.payments", g.expand(one("CREATE TABLE c PARTITION OF feed FOR VALUES IN (1)")).writes)

    def test_a_materialized_view_is_read_on_refresh(self) -> None:
        g = RelationGraph([(PAYMENTS, "public", "payments", "r"), (VIEW, "public", "pay_mv", "m")], views=[(VIEW, PAYMENTS)])
        info = g.expand(one("REFRESH MATERIALIZED VIEW pay_mv"))
        self.assertEqual(info.writes, ("public.pay_mv",))
        self.assertIn("public.payments", info.reads)

    def test_types_and_column_notation(self) -> None:
        wipe = Routine("public", "wipe", "plpgsql", "BEGIN DELETE FROM payments WHERE id > 0; RETURN true; END")
        g = graph(functions=[wipe], type_uses=[("public", "guarded", "public.wipe")])
        self.assertIn("public.payments", g.expand(one("SELECT 1::guarded")).writes)
        self.assertIn("public.payments", g.expand(one("SELECT CAST(1 AS public.guarded)")).writes)
        self.assertIn("public.payments", g.expand(one("SELECT s.wipe FROM notes s")).writes)
        self.assertIn("public.payments", g.expand(one("SELECT (s).wipe FROM notes s")).writes)
        self.assertEqual(g.expand(one("SELECT s.x FROM notes s")).writes, ())
        # A function whose parameter or result is such a type runs it too.
        uses = Routine("public", "f", "sql", "SELECT 1", ("public.wipe",))
        self.assertIn("public.payments", graph(functions=[wipe, uses]).expand(one("SELECT f()")).writes)

    def test_c_trigger_arguments_name_what_it_writes(self) -> None:
        refint = Routine("public", "check_foreign_key", "c", "check_foreign_key")
        g = graph(triggers=[(NOTES, "du", refint, ("1", "cascade", "id", "payments", "id"))])
        info = g.expand(one("DELETE FROM notes WHERE id = 1"))
        self.assertIn("public.payments", info.writes)
        self.assertIn("public.check_foreign_key", info.functions)
        self.assertNotIn("unknown", info.kinds)

    def test_names_with_dots(self) -> None:
        purge = Routine("fin.ops", "purge", "sql", "DELETE FROM payments WHERE id > 0")
        g = graph(functions=[purge], function_names=[("fin.ops", "purge")])
        self.assertIn("public.payments", g.expand(one("SELECT purge()")).writes)
        self.assertIn("public.payments", g.expand(one('SELECT "fin.ops".purge()')).writes)
        self.assertEqual(g.reach(one('SELECT "fin.ops".purge()'))[1], ())
        self.assertEqual(
            set(g.reach(one('SELECT * FROM "a.b".c'))[1]), {("relation", "a", "b.c"), ("relation", "a.b", "c")}
        )

    def test_trigger_languages(self) -> None:
        for language, unknown in (("plpgsql", False), ("c", False), ("internal", False), ("plpython3u", True), ("plperl", True)):
            g = graph(triggers=[(FEED, "i", Routine("public", "f", language, "BEGIN RETURN NEW; END"), ())])
            info = g.expand(one("INSERT INTO feed VALUES (1)"))
            self.assertEqual("unknown" in info.kinds, unknown, language)
            self.assertIn("public.f", info.functions)
        for body in (
            "BEGIN EXECUTE 'DELETE FROM ' || 'payments'; RETURN NEW; END",
            "BEGIN RETURN QUERY EXECUTE 'DELETE FROM payments RETURNING id'; END",
            "DECLARE r record; BEGIN FOR r IN EXECUTE 'DELETE FROM payments RETURNING id' LOOP END LOOP; RETURN NEW; END",
        ):
            dynamic = Routine("public", "f", "plpgsql", body)
            info = graph(triggers=[(FEED, "i", dynamic, ())]).expand(one("INSERT INTO feed VALUES (1)"))
            self.assertIn("unknown", info.kinds, body)
            self.assertTrue(info.writes_data)

    def test_earlier_names_are_kept(self) -> None:
        first = graph()
        # Outside the gateway: ALTER SCHEMA billing RENAME TO books; ALTER TABLE payments RENAME TO pay2.
        renamed = RelationGraph(
            [(PAYMENTS, "public", "pay2"), (LEDGER, "books", "ledger")], known=first.names
        )
        self.assertEqual(set(renamed.expand(one("DELETE FROM pay2 WHERE id = 1")).writes), {"public.pay2", "public.payments"})
        self.assertIn("billing.ledger", renamed.expand(one("DELETE FROM books.ledger WHERE id = 1")).writes)
        # The old name still finds it.
        self.assertIn("public.pay2", renamed.expand(one("DELETE FROM public.payments WHERE id = 1")).writes)

    def test_missing_names(self) -> None:
        g = graph()
        self.assertEqual(g.reach(one("SELECT * FROM pay_view"))[1], ())
        self.assertEqual(g.reach(one("SELECT * FROM nowhere.payments"))[1], (("relation", "nowhere", "payments"),))
        self.assertEqual(g.reach(one("CREATE TABLE fresh (x int)"))[1], (("relation", None, "fresh"),))
        self.assertEqual(g.reach(one("SELECT * FROM public.fresh"))[1], (("relation", "public", "fresh"),))
        self.assertEqual(g.reach(one("SELECT 1"))[1], ())
        g = graph(function_names=[("pg_catalog", "now")])
        self.assertEqual(g.reach(one("SELECT now()"))[1], ())
        self.assertEqual(g.reach(one("SELECT late_fn()"))[1], (("function", None, "late_fn"),))

    def test_shapes_share_an_expansion_with_their_own_text(self) -> None:
        g = graph()
        a = g.expand(one("DELETE FROM pay_view WHERE id = 1"))
        b = g.expand(one("DELETE FROM pay_view WHERE id = 2"))
        self.assertEqual(b.text, "DELETE FROM pay_view WHERE id = 2")
        self.assertEqual(a.writes, b.writes)

    def test_nothing_reached_is_the_same_statement(self) -> None:
        info = one("SELECT * FROM elsewhere")
        self.assertIs(EMPTY.expand(info), info)

    def test_unreadable_is_unknown(self) -> None:
        info = unreadable(one("SELECT * FROM payments"))
        self.assertIn("unknown", info.kinds)
        self.assertTrue(info.writes_data)

    def test_changes_catalog(self) -> None:
        for sql, expected in (
            ("CREATE VIEW v AS SELECT 1", True),
            ("ALTER TABLE t RENAME TO u", True),
            ("DROP TABLE t", True),
            ("DO $$ BEGIN END $$", True),
            ("SELECT * FROM t", False),
            ("DELETE FROM t WHERE x = 1", False),
        ):
            self.assertEqual(changes_catalog(one(sql)), expected, sql)


class SnapshotTests(SynchronousTestCase):
    def test_from_the_catalog_query_answer(self) -> None:
        """The JSON the catalog query returns (OIDs as strings) makes the same graph."""
        g = graph_from_snapshot(
            {
                "relations": [
                    ["16384", "public", "payments", "r"], ["16390", "public", "pay_view", "v"], ["16400", "public", "notes", "r"],
                ],
                "inherits": [],
                "rules": [["16390", "1", "16384"], ["16400", "3", "16384"]],
                "triggers": [["16400", 4, "public", "t", "plpgsql", None, ""]],
                "uses": [["16390", "r", "public.wipe"]],
                "type_uses": [],
                "functions": [["public", "wipe", "sql", "DELETE FROM payments WHERE id > 0", None]],
                "function_names": [["public", "wipe"]],
                "cascades": [],
            }
        )
        self.assertIn("public.payments", g.expand(one("SELECT * FROM pay_view")).reads)
        self.assertIn("public.payments", g.expand(one("INSERT INTO notes VALUES (1)")).writes)
        self.assertNotIn("public.payments", g.expand(one("DELETE FROM notes WHERE x = 1")).writes)
        self.assertIn("public.payments", g.expand(one("SELECT * FROM pay_view")).writes)  # via its function
