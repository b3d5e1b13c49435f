"""
A rule on a table protects the table, not a name (issue 11, item 5): writes
to a protected table through what already exists on the target -- a view,
a partition or a new parent, a rule or a trigger on another table, a
foreign key's cascade, another schema on the search_path, a name it got
outside the gateway -- are refused, each checked on the real server (the
rows are still there) with stock psql through the gateway.

The ways to reach the table are made directly on the server, as the
superuser: the gateway did not see them being made (what it sees being
made counts as a write to the table, tests/policy/test_sql.py).
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from hoopgw.protocols.postgres import codec

from tests.integration.test_postgres_clients import RawClient, _GatewayCase

# public.payments: the shipped policy sends writes to review, which fails
# closed.  billing.ledger: denied here by name.
SETUP = """
CREATE SCHEMA billing;
CREATE TABLE customers (id int PRIMARY KEY);
INSERT INTO customers SELECT g FROM generate_series(1, 5) g;
CREATE TABLE payments (id int PRIMARY KEY, customer int REFERENCES customers ON DELETE CASCADE, amount int);
INSERT INTO payments SELECT g, g, g * 10 FROM generate_series(1, 5) g;
CREATE VIEW pay_view AS SELECT id, amount FROM payments;
CREATE TABLE billing.ledger (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE billing.ledger_2024 PARTITION OF billing.ledger FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO billing.ledger SELECT g, date '2024-03-01' FROM generate_series(1, 5) g;
CREATE TABLE notes (x int);
CREATE RULE wipe AS ON INSERT TO notes DO ALSO DELETE FROM payments WHERE id > 0;
CREATE TABLE feed (x int);
CREATE FUNCTION feed_trigger() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN DELETE FROM billing.ledger WHERE id > 0; RETURN NEW; END $$;
CREATE TRIGGER feed_after AFTER INSERT ON feed FOR EACH ROW EXECUTE FUNCTION feed_trigger();
CREATE TABLE dyn (x int);
CREATE FUNCTION dyn_trigger() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN EXECUTE 'DELETE FROM pay' || 'ments WHERE id > 0'; RETURN NEW; END $$;
CREATE TRIGGER dyn_after AFTER INSERT ON dyn FOR EACH ROW EXECUTE FUNCTION dyn_trigger();
CREATE TABLE scratch (x int);
CREATE FUNCTION tidy() RETURNS int LANGUAGE sql AS $$ DELETE FROM payments WHERE id > 0 RETURNING 1 $$;
CREATE FUNCTION outer_tidy() RETURNS void LANGUAGE plpgsql AS $$ BEGIN PERFORM billing.close_books(); END $$;
CREATE FUNCTION billing.close_books() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM billing.ledger WHERE id > 0; END;
CREATE FUNCTION dyn_tidy() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'DELETE FROM payments WHERE id > 0'; END $$;
CREATE FUNCTION harmless(i int) RETURNS int LANGUAGE sql AS $$ SELECT i + count(*)::int FROM scratch $$;
GRANT USAGE ON SCHEMA billing TO app_scram;
CREATE FUNCTION wipe_int() RETURNS int LANGUAGE plpgsql AS $$ BEGIN DELETE FROM payments WHERE id > 0; RETURN 1; END $$;
CREATE FUNCTION wipe_bool() RETURNS bool LANGUAGE plpgsql AS $$ BEGIN DELETE FROM payments WHERE id > 0; RETURN true; END $$;
CREATE FUNCTION pay_trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM payments WHERE id > 0; RETURN NEW; END $$;
CREATE TABLE rowish (x int);
CREATE FUNCTION wipe_row(rowish) RETURNS int LANGUAGE plpgsql AS $$ BEGIN DELETE FROM payments WHERE id > 0; RETURN 1; END $$;
CREATE VIEW calls_wipe AS SELECT wipe_int() AS n;
CREATE TABLE ruled (x int);
CREATE RULE ruled_wipe AS ON INSERT TO ruled DO ALSO SELECT wipe_int();
CREATE SCHEMA "fin.ops";
CREATE FUNCTION "fin.ops".purge() RETURNS int LANGUAGE sql AS $$ DELETE FROM payments WHERE id > 0 RETURNING 1 $$;
GRANT USAGE ON SCHEMA "fin.ops" TO app_scram;
CREATE TABLE defaulted (x int, y int DEFAULT wipe_int());
CREATE TABLE checked (x int CHECK (wipe_bool()));
CREATE DOMAIN guarded AS int CHECK (wipe_bool());
CREATE TABLE domained (x guarded);
CREATE TABLE secured (x int);
ALTER TABLE secured ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON secured USING (wipe_bool());
INSERT INTO secured VALUES (1);
CREATE FUNCTION wipe_step(s int, x int) RETURNS int LANGUAGE plpgsql AS
  $$ BEGIN DELETE FROM payments WHERE id > 0; RETURN s; END $$;
CREATE AGGREGATE wipe_agg(int) (SFUNC = wipe_step, STYPE = int, INITCOND = '0');
CREATE FUNCTION imm(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM wipe_int(); RETURN i; END $$;
CREATE DOMAIN defdom AS int DEFAULT wipe_int();
CREATE TABLE dom_default (x int, y defdom);
CREATE DOMAIN outer_dom AS guarded;
CREATE TABLE dom_nested (x outer_dom);
CREATE TABLE dom_array (x guarded[]);
CREATE TYPE dom_comp AS (v guarded);
CREATE TABLE dom_composite (x dom_comp);
CREATE VIEW checking_view AS SELECT x FROM scratch WHERE wipe_bool() WITH CHECK OPTION;
CREATE FUNCTION wipe_any(anyelement) RETURNS int LANGUAGE plpgsql AS $$ BEGIN DELETE FROM payments WHERE id > 0; RETURN 1; END $$;
CREATE FUNCTION wipe_two(r rowish, n int DEFAULT 0) RETURNS int LANGUAGE plpgsql AS $$ BEGIN DELETE FROM payments WHERE id > 0; RETURN 1; END $$;
CREATE FUNCTION pg_catalog.wipe_cat() RETURNS int LANGUAGE sql AS $$ DELETE FROM public.payments WHERE id > 0 RETURNING 1 $$;
CREATE TABLE owned_idx (x int);
INSERT INTO owned_idx VALUES (1);
CREATE INDEX owned_idx_e ON owned_idx ((imm(x)));
CREATE TABLE owned_chk (x int);
INSERT INTO owned_chk VALUES (1);
ALTER TABLE owned_chk ADD CONSTRAINT c CHECK (wipe_bool()) NOT VALID;
CREATE TABLE owned_add (x int);
INSERT INTO owned_add VALUES (1);
CREATE MATERIALIZED VIEW wipe_mv AS SELECT wipe_int() AS n WITH NO DATA;
CREATE MATERIALIZED VIEW pay_mv AS SELECT id FROM payments WITH NO DATA;
ALTER TABLE owned_idx OWNER TO app_scram;
ALTER TABLE owned_chk OWNER TO app_scram;
ALTER TABLE owned_add OWNER TO app_scram;
ALTER MATERIALIZED VIEW wipe_mv OWNER TO app_scram;
ALTER MATERIALIZED VIEW pay_mv OWNER TO app_scram;
CREATE FUNCTION add_one(a int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN a := a + 1; RETURN a; END $$;
CREATE FUNCTION scratch_total(OUT total int) LANGUAGE plpgsql AS $$ BEGIN SELECT count(*) INTO total FROM scratch; END $$;
CREATE FUNCTION decl_dom() RETURNS int LANGUAGE plpgsql AS $$ DECLARE w guarded; BEGIN w := 1; RETURN 1; END $$;
CREATE FUNCTION out_dom(OUT a guarded, OUT b int) LANGUAGE plpgsql AS $$ BEGIN a := 1; b := 2; END $$;
CREATE FUNCTION tab_dom() RETURNS TABLE (a guarded, b int) LANGUAGE sql AS 'SELECT 1, 2';
CREATE FUNCTION defarg(a int DEFAULT wipe_int()) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN a; END $$;
CREATE PROCEDURE defproc(a int DEFAULT wipe_int()) LANGUAGE sql AS 'SELECT 1';
CREATE TABLE keyed (x int) PARTITION BY LIST (imm(x));
CREATE TABLE keyed1 PARTITION OF keyed FOR VALUES IN (1);
CREATE TABLE moves (x int) PARTITION BY LIST (x);
CREATE TABLE moves1 PARTITION OF moves FOR VALUES IN (1);
CREATE TABLE moves2 PARTITION OF moves FOR VALUES IN (2);
INSERT INTO moves VALUES (1);
CREATE TRIGGER moved AFTER INSERT ON moves2 FOR EACH ROW EXECUTE FUNCTION pay_trg();
CREATE TYPE grange AS RANGE (subtype = guarded);
CREATE TABLE multi (x gmultirange);
CREATE DOMAIN vdom AS int;
CREATE TABLE vd (x vdom);
INSERT INTO vd VALUES (1);
ALTER DOMAIN vdom ADD CONSTRAINT c CHECK (wipe_bool()) NOT VALID;
ALTER DOMAIN vdom OWNER TO app_scram;
CREATE TABLE rowtyped (id int, name text);
CREATE FUNCTION rowtyped_trigger() RETURNS trigger LANGUAGE plpgsql AS
  $$ DECLARE r rowtyped%ROWTYPE; BEGIN r.name := 'x'; RETURN NEW; END $$;
CREATE TRIGGER rowtyped_before BEFORE INSERT ON rowtyped FOR EACH ROW EXECUTE FUNCTION rowtyped_trigger();
CREATE FUNCTION slicer() RETURNS int[] LANGUAGE plpgsql AS
  $$ DECLARE a int[] := ARRAY[1, 2, 3]; BEGIN a[1:2] := ARRAY[5, 6]; RETURN a; END $$;
CREATE FUNCTION app_wipe() RETURNS int LANGUAGE sql AS $$ DELETE FROM payments WHERE id > 0 RETURNING 1 $$;
ALTER FUNCTION app_wipe() OWNER TO app_scram;
CREATE TABLE triggered (x int);
CREATE TRIGGER triggered_after AFTER INSERT ON triggered FOR EACH ROW EXECUTE FUNCTION pay_trg();
ALTER TABLE triggered OWNER TO app_scram;
CREATE EXTENSION refint;
CREATE TABLE parent_ri (id int);
INSERT INTO parent_ri VALUES (1);
CREATE TRIGGER ri BEFORE DELETE OR UPDATE ON parent_ri FOR EACH ROW
  EXECUTE FUNCTION check_foreign_key(1, 'cascade', 'id', 'payments', 'id');
GRANT USAGE ON SCHEMA billing TO app_scram;
GRANT ALL ON ALL TABLES IN SCHEMA public, billing TO app_scram;
-- CREATE INDEX owned_idx_e ran imm(x), whose wipe_int() emptied payments:
-- refill it, or the tests' row counts would compare nothing.
INSERT INTO payments SELECT g, g, g * 10 FROM generate_series(1, 5) g;
"""

DENY_LEDGER = """
[[rule]]
name = "no-ledger-writes"
effect = "deny"
sql.writes = ["billing.ledger"]
message = "the ledger is append-only through its own service"
"""


class ReachTests(_GatewayCase):
    def setUp(self):
        self.start(extra_policy=DENY_LEDGER)
        self.cluster.psql(SETUP)

    def test_protected_rows_are_there(self):
        """The row counts the tests compare are of tables that hold rows."""
        self.assertEqual(self.rows(), (5, 5))

    def rows(self) -> tuple[int, int]:
        return int(self.count("SELECT count(*) FROM payments")), int(self.count("SELECT count(*) FROM billing.ledger"))

    @inlineCallbacks
    def refused(self, sql: str, rule: str):
        """C{sql} through the gateway is refused by C{rule}; nothing changed on the server."""
        before = self.rows()
        code, output = yield self.psql("-c", sql)
        self.assertNotEqual(code, 0, (sql, output[-2000:]))
        self.assertIn(f"refused by policy rule {rule!r}".encode(), output, sql)
        self.assertEqual(self.rows(), before, sql)

    @inlineCallbacks
    def test_through_an_updatable_view(self):
        yield self.refused("DELETE FROM pay_view WHERE id > 0", "review-payment-writes")
        yield self.refused("UPDATE pay_view SET amount = 0 WHERE true", "review-payment-writes")

    @inlineCallbacks
    def test_through_a_partition_and_a_new_parent(self):
        yield self.refused("DELETE FROM billing.ledger_2024 WHERE id > 0", "no-ledger-writes")
        # A new parent, made and attached outside the gateway.
        self.cluster.psql(
            "CREATE TABLE everything (id int, at date) PARTITION BY RANGE (at);"
            "ALTER TABLE everything ATTACH PARTITION billing.ledger FOR VALUES FROM ('2000-01-01') TO ('2100-01-01');"
            "GRANT ALL ON everything TO app_scram;"
        )
        yield self.refused("DELETE FROM everything WHERE id > 0", "no-ledger-writes")
        # Old-style inheritance: writes to the parent land in the child.
        self.cluster.psql(
            "CREATE TABLE pay_archive (id int, customer int, amount int);"
            "CREATE TABLE pay_child () INHERITS (pay_archive);"
            "GRANT ALL ON pay_archive, pay_child TO app_scram;"
        )
        code, output = yield self.psql("-c", "DELETE FROM pay_archive WHERE id > 0")
        self.assertEqual(code, 0, output)  # neither is protected

    @inlineCallbacks
    def test_through_another_schema_on_the_search_path(self):
        yield self.refused("SET search_path = billing, public; DELETE FROM ledger WHERE id > 0", "no-ledger-writes")
        yield self.refused("SET search_path = billing; DELETE FROM ledger_2024 WHERE id > 0", "no-ledger-writes")

    @inlineCallbacks
    def test_through_a_rule_on_another_table(self):
        yield self.refused("INSERT INTO notes VALUES (1)", "review-payment-writes")

    @inlineCallbacks
    def test_through_a_trigger_on_another_table(self):
        yield self.refused("INSERT INTO feed VALUES (1)", "no-ledger-writes")
        self.assertEqual(self.count("SELECT count(*) FROM feed"), "0")

    @inlineCallbacks
    def test_a_trigger_running_dynamic_sql_is_unknown(self):
        yield self.refused("INSERT INTO dyn VALUES (1)", "no-unknown-statements")

    @inlineCallbacks
    def test_through_a_cascading_foreign_key(self):
        yield self.refused("DELETE FROM customers WHERE id = 1", "review-payment-writes")

    @inlineCallbacks
    def test_through_functions_that_exist_on_the_target(self):
        yield self.refused("SELECT tidy()", "review-payment-writes")
        yield self.refused("SELECT outer_tidy()", "no-ledger-writes")  # PL/pgSQL -> BEGIN ATOMIC
        yield self.refused("SELECT * FROM public.tidy()", "review-payment-writes")
        yield self.refused("SELECT dyn_tidy()", "no-unknown-statements")

    @inlineCallbacks
    def test_functions_that_run_implicitly(self):
        """Functions of views, rules, column notation, defaults, CHECKs, domains, row security."""
        for sql in (
            "SELECT * FROM calls_wipe",
            "INSERT INTO ruled VALUES (1)",
            "SELECT r.wipe_row FROM rowish r",
            "INSERT INTO defaulted (x) VALUES (1)",
            "INSERT INTO checked VALUES (1)",
            "INSERT INTO domained VALUES (1)",
            "SELECT * FROM secured",
            "SELECT wipe_agg(x) FROM (VALUES (1)) v(x)",  # an aggregate's state function
            "SELECT 1::guarded",  # a statement that names no table: the domain's CHECK
            "INSERT INTO dom_default (x) VALUES (1)",
            "INSERT INTO dom_nested VALUES (1)",
            "INSERT INTO dom_array VALUES ('{1}')",
            "INSERT INTO dom_composite VALUES ('(1)')",
            "INSERT INTO checking_view VALUES (2)",
            "SELECT r.wipe_any FROM rowish r",
            "SELECT r.wipe_two FROM rowish r",
            "SELECT wipe_cat()",
            # Maintenance evaluates a table's expressions over its rows.
            "ANALYZE owned_idx",
            "REINDEX TABLE owned_idx",
            "VACUUM FULL owned_idx",
            "ALTER TABLE owned_chk VALIDATE CONSTRAINT c",
            "ALTER TABLE owned_add ADD COLUMN z guarded",
            "REFRESH MATERIALIZED VIEW wipe_mv",
            "SELECT decl_dom()",  # a DECLAREd variable's domain
            "SELECT * FROM out_dom()",  # OUT parameters' types
            "SELECT * FROM tab_dom()",  # RETURNS TABLE columns' types
            "SELECT defarg()",  # a parameter's default
            "CALL defproc()",
            "INSERT INTO keyed VALUES (1)",  # a partition key expression
            "UPDATE moves SET x = 2 WHERE x = 1",  # a row moving partitions fires INSERT triggers
            "INSERT INTO multi VALUES ('{[1,2]}')",  # a multirange of a range of a domain
            "ALTER DOMAIN vdom VALIDATE CONSTRAINT c",

            "DELETE FROM parent_ri WHERE id = 1",  # contrib refint: a C trigger naming its table
        ):
            yield self.refused(sql, "review-payment-writes")
        # Maintenance naming no table reaches every table (the ledger's deny
        # rule beats the payments review).
        for sql in ("ANALYZE", "VACUUM FULL", "REINDEX SCHEMA public"):
            yield self.refused(sql, "no-ledger-writes")

    @inlineCallbacks
    def test_builtins_that_run_sql_text_are_unknown(self):
        for sql in (
            "SELECT query_to_xml('select wip' || 'e_int()', true, false, '')",
            "SELECT table_to_xml('calls_wipe', true, false, '')",
            "SELECT length(schema_to_xml('public', true, false, '')::text)",
            "SELECT * FROM ts_stat('SELECT to_tsvector(''x'')')",
        ):
            yield self.refused(sql, "no-unknown-statements")
        # Summarising a BRIN index named in text runs its expressions over new
        # rows (made here as the superuser: imm() empties payments; refilled).
        self.cluster.psql(
            "CREATE INDEX owned_brin ON owned_idx USING brin ((imm(x))) WITH (pages_per_range = 1);"
            "INSERT INTO owned_idx SELECT 1 FROM generate_series(1, 2000);"
            "DELETE FROM payments; INSERT INTO payments SELECT g, g, g * 10 FROM generate_series(1, 5) g;"
        )
        yield self.refused("SELECT brin_summarize_new_values('owned_brin')", "no-unknown-statements")
        yield self.refused("SELECT pg_catalog.brin_summarize_range('owned_brin', 5)", "no-unknown-statements")
        # contrib's tablefunc, a trusted extension: crosstab runs its query
        # texts (a volatile function they call writes), connectby reads the
        # table it names.
        self.cluster.psql("CREATE EXTENSION tablefunc")
        for sql in (
            "SELECT * FROM crosstab('SELECT 1::text, 1::text, wip' || 'e_int()::text') AS ct(a text, b text)",
            "SELECT * FROM public.crosstab2('SELECT 1::text, 1::text, wip' || 'e_int()::text')",
            "SELECT * FROM crosstab('SELECT 1::text, 1::text, 1::text', 'SELECT wip' || 'e_int()::text') AS ct(a text, b text)",
            "SELECT * FROM connectby('calls_wipe', 'n', 'n', '1', 0) AS t(a int, b int, level int)",
        ):
            yield self.refused(sql, "no-unknown-statements")
        # Also through an operator: made in the same query, or on the target.
        self.cluster.psql(
            "CREATE SCHEMA own AUTHORIZATION app_scram;"
            "CREATE OPERATOR public.@@@ (FUNCTION = crosstab2, RIGHTARG = text);"
        )
        for sql in (
            "CREATE OPERATOR own.@@@ (FUNCTION = crosstab2, RIGHTARG = text); "
            "SELECT * FROM (SELECT OPERATOR(own.@@@) ('SELECT 1::text, 1::text, wip' || 'e_int()::text')) s",
            "SELECT * FROM (SELECT @@@ ('SELECT 1::text, 1::text, wip' || 'e_int()::text')) s",
        ):
            yield self.refused(sql, "no-unknown-statements")

    @inlineCallbacks
    def test_dynamic_sql_in_a_function_made_in_the_same_query(self):
        yield self.refused(
            "CREATE FUNCTION pg_temp.f() RETURNS SETOF int LANGUAGE plpgsql AS $b$ BEGIN RETURN QUERY EXECUTE "
            "'DELETE FROM pay' || 'ments WHERE id > 0 RETURNING id'; END $b$; SELECT * FROM pg_temp.f();",
            "no-unknown-statements",
        )

    @inlineCallbacks
    def test_a_trigger_made_in_the_same_transaction(self):
        """The catalog cannot see a trigger not yet committed: its function is followed from the CREATE TRIGGER."""
        yield self.refused(
            "CREATE TEMP TABLE t (x int); "
            "CREATE TRIGGER s AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION pay_trg(); INSERT INTO t VALUES (1)",
            "review-payment-writes",
        )

    @inlineCallbacks
    def test_made_or_renamed_in_the_same_transaction(self):
        """What the catalog cannot see yet: copies of a table's expressions, renames."""
        self.cluster.psql("CREATE SCHEMA own AUTHORIZATION app_scram")
        for sql in (
            "CREATE TEMP TABLE x1 (LIKE checked INCLUDING ALL); INSERT INTO x1 VALUES (1)",
            "CREATE TEMP TABLE x2 (LIKE defaulted INCLUDING DEFAULTS); INSERT INTO x2 (x) VALUES (1)",
            "CREATE TEMP TABLE x3 (LIKE domained); INSERT INTO x3 VALUES (1)",
            "CREATE TEMP TABLE x4 AS SELECT * FROM domained WITH NO DATA; INSERT INTO x4 VALUES (1)",
            "SELECT x INTO TEMP x6 FROM domained WHERE false; INSERT INTO x6 VALUES (1)",
            # A child takes its parent's CHECK.
            "CREATE TABLE own.c () INHERITS (owned_chk); INSERT INTO own.c VALUES (1)",
            "ALTER FUNCTION app_wipe() RENAME TO app_zz; SELECT app_zz()",
            "ALTER FUNCTION app_wipe() RENAME TO add_one; SELECT add_one()",
            "BEGIN; ALTER TABLE triggered RENAME TO zz; INSERT INTO zz VALUES (1); COMMIT",
            # ALTER INDEX renames a table as well.
            "ALTER INDEX triggered RENAME TO zz; INSERT INTO zz VALUES (1)",
            # A domain renamed or moved: its CHECK runs under the new name.
            "ALTER DOMAIN vdom RENAME TO v2; SELECT 1::v2",
            "ALTER TYPE vdom RENAME TO v3; SELECT 1::v3",
            "ALTER DOMAIN vdom SET SCHEMA own; SELECT 1::own.vdom",
        ):
            yield self.refused(sql, "review-payment-writes")
        # As separate messages in one transaction.
        before = self.rows()
        code, output = yield self.psql(
            "-c", "BEGIN", "-c", "ALTER TABLE triggered RENAME TO zz2", "-c", "INSERT INTO zz2 VALUES (1)", "-c", "COMMIT"
        )
        self.assertIn(b"refused by policy rule 'review-payment-writes'", output)
        self.assertEqual(self.rows(), before)

    @inlineCallbacks
    def test_objects_made_in_the_same_transaction_that_run_a_function(self):
        """An operator, aggregate or cast made and used before the catalog can show it."""
        self.cluster.psql("CREATE SCHEMA own AUTHORIZATION app_scram")
        for sql in (
            "CREATE OPERATOR pg_temp.### (FUNCTION = wipe_step, LEFTARG = int, RIGHTARG = int); "
            "SELECT 1 OPERATOR(pg_temp.###) 2",
            "CREATE AGGREGATE pg_temp.agg(int) (SFUNC = wipe_step, STYPE = int, INITCOND = '0'); SELECT pg_temp.agg(1)",
            "CREATE TYPE own.ct AS (a int); CREATE CAST (own.ct AS int) WITH FUNCTION wipe_any(anyelement); "
            "SELECT row(1)::own.ct::int",
            # A range of a domain whose CHECK deletes payments.
            "CREATE TYPE own.r AS RANGE (SUBTYPE = guarded); SELECT own.r(1, 2)",
            "CREATE TYPE own.r2 AS RANGE (SUBTYPE = guarded); SELECT '[1,2]'::own.r2",
        ):
            yield self.refused(sql, "review-payment-writes")
        # As separate messages in one transaction.
        before = self.rows()
        code, output = yield self.psql(
            "-c", "BEGIN", "-c", "CREATE OPERATOR own.### (FUNCTION = wipe_step, LEFTARG = int, RIGHTARG = int)",
            "-c", "SELECT 1 OPERATOR(own.###) 2", "-c", "COMMIT",
        )
        self.assertIn(b"refused by policy rule 'review-payment-writes'", output)
        self.assertEqual(self.rows(), before)

    @inlineCallbacks
    def test_what_a_function_runs_is_judged_as_the_statement(self):
        """
        DROP, TRUNCATE, a DELETE without WHERE and COPY ... PROGRAM in a
        function's body are refused as if written in the statement calling
        it, for a function made in the same query and one on the target.
        """
        marker = self.cluster.base / "copy-program-ran"
        self.cluster.psql(
            "INSERT INTO scratch VALUES (1);"
            "CREATE FUNCTION trunc_owned() RETURNS void LANGUAGE plpgsql AS $$ BEGIN TRUNCATE owned_add; END $$;"
            "CREATE FUNCTION drop_owned() RETURNS void LANGUAGE sql AS 'DROP TABLE owned_add';"
            "CREATE FUNCTION wipe_scratch() RETURNS void LANGUAGE sql AS 'DELETE FROM scratch';"
            # A DBA's function that may run a program for its callers.
            "CREATE FUNCTION shell() RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS "
            f"$$ BEGIN COPY (SELECT 1) TO PROGRAM 'touch {marker}'; END $$;"
        )

        def state():
            return self.count("SELECT count(*) FROM owned_add"), self.count("SELECT count(*) FROM scratch")

        before = state()
        for sql, rule in (
            ("SELECT trunc_owned()", "no-destructive-ddl"),
            ("SELECT drop_owned()", "no-destructive-ddl"),
            ("CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE sql AS 'TRUNCATE owned_add'; SELECT pg_temp.f()",
             "no-destructive-ddl"),
            ("SELECT wipe_scratch()", "no-unbounded-writes"),
            ("SELECT shell()", "no-copy-program"),
        ):
            code, output = yield self.psql("-c", sql)
            self.assertIn(f"refused by policy rule {rule!r}".encode(), output, sql)
            self.assertEqual(state(), before, sql)
        self.assertFalse(marker.exists())

    @inlineCallbacks
    def test_parameter_defaults_and_types_of_a_function_made_in_the_same_query(self):
        for sql in (
            "CREATE FUNCTION pg_temp.f(a int DEFAULT wipe_int()) RETURNS int LANGUAGE sql AS $$SELECT a$$; "
            "SELECT pg_temp.f()",
            "CREATE PROCEDURE pg_temp.p(a int DEFAULT wipe_int()) LANGUAGE sql AS $$SELECT 1$$; CALL pg_temp.p()",
            "CREATE FUNCTION pg_temp.h() RETURNS guarded LANGUAGE sql AS $$SELECT 1$$; SELECT pg_temp.h()",
        ):
            yield self.refused(sql, "review-payment-writes")

    @inlineCallbacks
    def test_a_c_trigger_made_in_the_same_query_names_its_table(self):
        """contrib's refint cascades into the table its arguments name, before any catalog shows the trigger."""
        self.cluster.psql("CREATE SCHEMA own AUTHORIZATION app_scram")
        # One on the target names it in capitals (refint's SQL folds them).
        self.cluster.psql(
            "CREATE TABLE parent_ri2 (id int); INSERT INTO parent_ri2 VALUES (1);"
            "CREATE TRIGGER ri2 BEFORE DELETE ON parent_ri2 FOR EACH ROW "
            "EXECUTE FUNCTION check_foreign_key(1, 'cascade', 'id', 'PAYMENTS', 'id');"
            "GRANT ALL ON parent_ri2 TO app_scram;"
        )
        yield self.refused("DELETE FROM parent_ri2 WHERE id = 1", "review-payment-writes")
        for target in ("payments", "PAYMENTS", "public.payments"):
            yield self.refused(
                "CREATE TABLE own.p (id int); INSERT INTO own.p VALUES (1); "
                "CREATE TRIGGER ri BEFORE DELETE ON own.p FOR EACH ROW "
                f"EXECUTE FUNCTION check_foreign_key(1, 'cascade', 'id', '{target}', 'id'); "
                "DELETE FROM own.p WHERE id = 1",
                "review-payment-writes",
            )

    @inlineCallbacks
    def test_a_cascading_foreign_key_made_in_the_same_query(self):
        """The catalog cannot show the new key yet: its cascade is followed from the statement that adds it."""
        self.cluster.psql(
            "CREATE SCHEMA own AUTHORIZATION app_scram;"
            "CREATE TABLE owned_del (id int, c int); INSERT INTO owned_del VALUES (1, 1);"
            "CREATE TRIGGER owned_del_t AFTER DELETE OR UPDATE ON owned_del FOR EACH ROW EXECUTE FUNCTION pay_trg();"
            "ALTER TABLE owned_del OWNER TO app_scram;"
        )
        for action in ("ON DELETE CASCADE", "ON DELETE SET NULL", "ON UPDATE CASCADE"):
            yield self.refused(
                "CREATE TABLE own.k (id int PRIMARY KEY); INSERT INTO own.k VALUES (1); "
                f"ALTER TABLE owned_del ADD FOREIGN KEY (c) REFERENCES own.k {action}; "
                "DELETE FROM own.k WHERE id = 1; UPDATE own.k SET id = 2 WHERE id = 1",
                "review-payment-writes",
            )

    @inlineCallbacks
    def test_casts_written_as_calls(self):
        for sql in ("SELECT guarded(1)", "SELECT public.guarded(1)", "INSERT INTO scratch SELECT 1 WHERE guarded(1) = 1",
                    "SELECT grange(1, 2)"):
            yield self.refused(sql, "review-payment-writes")

    @inlineCallbacks
    def test_a_function_in_a_schema_with_a_dot(self):
        yield self.refused('SET search_path = "fin.ops", public; SELECT purge()', "review-payment-writes")

    @inlineCallbacks
    def test_a_function_made_since_the_snapshot(self):
        code, output = yield self.psql("-c", "SELECT count(*) FROM scratch")  # the gateway reads the catalog
        self.assertEqual(code, 0, output)
        self.cluster.psql(
            "CREATE FUNCTION late_fn() RETURNS int LANGUAGE sql AS $$ DELETE FROM payments WHERE id > 0 RETURNING 1 $$"
        )
        yield self.refused("SELECT late_fn()", "review-payment-writes")

    @inlineCallbacks
    def test_function_call_by_oid(self):
        """A protocol FunctionCall of a function that deletes payments is judged by its body too."""
        oid = int(self.count("SELECT 'tidy'::regproc::oid"))
        before = self.rows()

        def run():
            client = RawClient(self.port, self.token)
            try:
                return client.batch(codec.FunctionCall(oid, (), (), 0))
            finally:
                client.close()

        messages = yield deferToThread(run)
        [error] = [m for m in messages if isinstance(m, codec.ErrorResponse)]
        self.assertEqual(error.code, "42501")
        self.assertIn("review-payment-writes", error.detail)
        self.assertEqual(self.rows(), before)

    @inlineCallbacks
    def test_renamed_outside_the_gateway(self):
        code, output = yield self.psql("-c", "SELECT count(*) FROM scratch")  # the gateway reads the catalog
        self.assertEqual(code, 0, output)
        self.cluster.psql("ALTER SCHEMA billing RENAME TO books; ALTER TABLE payments RENAME TO pay2;")
        before = self.count("SELECT count(*) FROM pay2"), self.count("SELECT count(*) FROM books.ledger")
        code, output = yield self.psql("-c", "DELETE FROM books.ledger WHERE id > 0")
        self.assertIn(b"refused by policy rule 'no-ledger-writes'", output)
        code, output = yield self.psql("-c", "DELETE FROM pay2 WHERE id > 0")
        self.assertIn(b"refused by policy rule 'review-payment-writes'", output)
        self.assertEqual((self.count("SELECT count(*) FROM pay2"), self.count("SELECT count(*) FROM books.ledger")), before)

    @inlineCallbacks
    def test_unprotected_tables_are_not_caught(self):
        """The reach is not a blanket: writes that reach no protected table run."""
        for sql in ("INSERT INTO scratch VALUES (1)", "DELETE FROM scratch WHERE x = 1", "SELECT * FROM pay_view",
                    "SELECT harmless(1)", "SELECT now(), count(*) FROM scratch",
                    # Only a DELETE of customers cascades into payments.
                    "INSERT INTO customers VALUES (99)", "UPDATE customers SET id = id WHERE id = 99",
                    "SELECT * FROM parent_ri",
                    # PL/pgSQL with parameters is read with them; a
                    # materialized view's refresh writes only itself.
                    "SELECT add_one(1)", "SELECT scratch_total()", "REFRESH MATERIALIZED VIEW pay_mv",
                    # a %ROWTYPE variable's field, an array slice assignment
                    "INSERT INTO rowtyped VALUES (1, 'a')", "SELECT slicer()"):
            code, output = yield self.psql("-c", sql)
            self.assertEqual(code, 0, (sql, output))
        # The record names what the statement reached.
        starts = [s for s, _ in self.actions("sql.query") if s["action"]["input"] == "SELECT * FROM pay_view"]
        self.assertTrue(starts)
