"""
Tests for L{hoopgw.protocols.postgres.sql}: SQL classification with the PostgreSQL
parser, and the shipped default policy's decisions on what it classifies.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from pglast import parser as pg
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.model import Action, Identity
from hoopgw.policy.loader import load_policy_dir
from hoopgw.policy.rules import evaluate
from hoopgw.protocols.postgres import sql as sql_module
from hoopgw.protocols.postgres.sql import PreparedStatements, StatementInfo, classify

REPO = Path(__file__).resolve().parents[2]
ALICE = Identity("https://idp", "alice", ("dev",))


def one(sql: str) -> StatementInfo:
    infos = classify(sql)
    assert len(infos) == 1, infos
    return infos[0]


def facts(info: StatementInfo) -> tuple[object, ...]:
    """Everything but the text."""
    return (info.kinds, info.reads, info.writes, info.functions, info.without_where,
            info.program, info.writes_data, info.prepared_name)


class ClassifyTests(SynchronousTestCase):
    def test_select(self) -> None:
        """
        A SELECT reads its tables (unqualified ones as public.NAME) and
        calls its functions, schema-qualified when written so.
        """
        info = one("SELECT pg_sleep(1), pg_catalog.now() FROM a JOIN b.c ON true "
                   "WHERE x IN (SELECT y FROM z)")
        self.assertEqual(info.kinds, ("select",))
        self.assertEqual(info.reads, ("public.a", "b.c", "public.z"))
        self.assertEqual(info.writes, ())
        self.assertEqual(info.functions, ("pg_sleep", "pg_catalog.now"))
        self.assertFalse(info.writes_data)

    def test_attributes(self) -> None:
        """
        C{attributes()} is the mapping of C{sql.*} facts for C{Action.attributes}.
        """
        info = one("DELETE FROM t")
        self.assertEqual(dict(info.attributes()), {
            "sql.statements": ("delete",),
            "sql.reads": ("public.t",),
            "sql.writes": ("public.t",),
            "sql.functions": (),
            "sql.without_where": True,
            "sql.program": False,
        })

    def test_multiStatement(self) -> None:
        """
        Each top-level statement is classified on its own, with its exact
        text from its first token (byte offsets of non-ASCII text included).
        """
        infos = classify("SELECT 'é' ;  /* gap */ DELETE FROM ü /* c */ WHERE a = 1;\n select 2")
        self.assertEqual([i.text for i in infos],
                         ["SELECT 'é'", "DELETE FROM ü /* c */ WHERE a = 1", "select 2"])
        self.assertEqual([i.kinds for i in infos], [("select",), ("delete",), ("select",)])
        self.assertEqual(infos[1].writes, ("public.ü",))

    def test_empty(self) -> None:
        """
        An empty string, or one of only comments, holds no statement.
        """
        self.assertEqual(classify(""), ())
        self.assertEqual(classify("  -- nothing\n/* here */ "), ())

    def test_unparseable(self) -> None:
        """
        Text the parser refuses is one statement of kind unknown, which
        may write.
        """
        info = one("SELEC * FROM t; DROP TABLE t")
        self.assertEqual(info.kinds, ("unknown",))
        self.assertTrue(info.writes_data)

    def test_dollarQuoting(self) -> None:
        """
        A dollar-quoted string hides nothing: the parser finds where it ends.
        """
        self.assertEqual(facts(one("SELECT $a$ '; DROP TABLE t; --' $a$")),
                         facts(one("SELECT 'x'")))
        # $a$ ' $a$ is a complete string, so the DROP after it is a statement.
        infos = classify("SELECT $a$ ' $a$; DROP TABLE t; --'")
        self.assertEqual([i.kinds for i in infos], [("select",), ("drop",)])
        self.assertEqual(infos[1].text, "DROP TABLE t")

    def test_comments(self) -> None:
        """
        Nested block comments and line comments are not statements, and do
        not hide the statement around them.
        """
        info = one("/* a /* nested */ DROP TABLE x; */ DeLeTe\n\tFROM   t -- WHERE id = 1\n")
        self.assertEqual(info.kinds, ("delete",))
        self.assertTrue(info.without_where)

    def test_caseAndQuoting(self) -> None:
        """
        Unquoted names are folded to lower case; quoted ones keep theirs.
        """
        self.assertEqual(one('SELECT * FROM Public.Users, "Tbl"').reads,
                         ("public.users", "public.Tbl"))

    def test_cte(self) -> None:
        """
        A data-modifying CTE makes the statement a delete too; the CTE's
        name is not a table.
        """
        info = one("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d")
        self.assertEqual(info.kinds, ("select", "delete"))
        self.assertEqual((info.reads, info.writes), (("public.t",), ("public.t",)))
        self.assertTrue(info.without_where)

    def test_cteScope(self) -> None:
        """
        In a plain WITH a CTE sees only earlier ones, so a later CTE's name
        inside an earlier one is a table; WITH RECURSIVE sees itself.
        """
        self.assertEqual(one("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a, b").reads,
                         ("public.b",))
        self.assertEqual(one("WITH RECURSIVE r AS (SELECT 1 UNION SELECT * FROM r) "
                             "SELECT * FROM r").reads, ())
        self.assertEqual(one("WITH x AS (SELECT 1) SELECT * FROM s.x").reads, ("s.x",))

    def test_explain(self) -> None:
        """
        EXPLAIN (ANALYZE runs it) contains the explained statement.
        """
        for sql in ("EXPLAIN ANALYZE DELETE FROM t", "EXPLAIN (ANALYZE) DELETE FROM t",
                    "explain delete from t"):
            info = one(sql)
            self.assertEqual(info.kinds, ("explain", "delete"), sql)
            self.assertTrue(info.without_where)

    def test_where(self) -> None:
        """
        without_where is true for UPDATE and DELETE without WHERE only;
        WHERE CURRENT OF counts as a WHERE.
        """
        self.assertTrue(one("DELETE FROM t").without_where)
        self.assertFalse(one("DELETE FROM t WHERE id = 1").without_where)
        self.assertTrue(one("UPDATE t SET a = 1").without_where)
        self.assertFalse(one("UPDATE t SET a = 1 WHERE CURRENT OF c").without_where)
        self.assertFalse(one("INSERT INTO t VALUES (1)").without_where)

    def test_writes(self) -> None:
        """
        Statements that change tables name them in writes.
        """
        cases = {
            "INSERT INTO t SELECT * FROM u": (("insert", "select"), ("public.u",), ("public.t",)),
            "UPDATE public.payments SET a = 1 FROM x WHERE id = 2":
                (("update",), ("public.payments", "public.x"), ("public.payments",)),
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE "
            "WHEN NOT MATCHED THEN INSERT VALUES (1)":
                (("merge", "delete", "insert"), ("public.t", "public.s"), ("public.t",)),
            "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 1":
                (("insert", "update", "select"), (), ("public.t",)),
            "CREATE TABLE a AS SELECT * FROM b": (("create_table", "select"), ("public.b",), ("public.a",)),
            "SELECT * INTO n FROM o": (("select", "create_table"), ("public.o",), ("public.n",)),
            "COPY t FROM STDIN": (("copy",), (), ("public.t",)),
            "COPY t TO STDOUT": (("copy",), ("public.t",), ()),
            "COPY (SELECT * FROM q) TO STDOUT": (("copy", "select"), ("public.q",), ()),
            "TRUNCATE a, s.b": (("truncate",), (), ("public.a", "s.b")),
            "DROP TABLE a, s.b": (("drop",), (), ("public.a", "s.b")),
            "ALTER TABLE t ADD c int": (("alter_table",), (), ("public.t",)),
            "ALTER TABLE t RENAME COLUMN a TO b": (("alter_table",), (), ("public.t",)),
            # A column's data is dropped: a drop as well (a constraint's is no data).
            "ALTER TABLE t DROP COLUMN a": (("alter_table", "drop"), (), ("public.t",)),
            "ALTER TABLE t ADD c int, DROP COLUMN IF EXISTS a": (("alter_table", "drop"), (), ("public.t",)),
            "ALTER TABLE t DROP CONSTRAINT IF EXISTS k": (("alter_table",), (), ("public.t",)),
            "ALTER TYPE p DROP ATTRIBUTE a": (("alter_type", "drop"), (), ("public.p",)),
            "ALTER TABLE t ALTER COLUMN a DROP DEFAULT": (("alter_table",), (), ("public.t",)),
            # A view is another way to reach t (an updatable one writes it).
            "CREATE VIEW v AS SELECT * FROM t": (("create_view", "select"), ("public.t",), ("public.v", "public.t")),
            "REFRESH MATERIALIZED VIEW m": (("refresh_materialized_view",), (), ("public.m",)),
        }
        for sql, expected in cases.items():
            info = one(sql)
            self.assertEqual((info.kinds, info.reads, info.writes), expected, sql)
            self.assertEqual(info.writes_data, bool(expected[2]), sql)

    def test_program(self) -> None:
        """
        COPY ... TO/FROM PROGRAM sets program.
        """
        self.assertTrue(one("COPY t TO PROGRAM 'x'").program)
        self.assertTrue(one("copy t from program 'curl x'").program)
        self.assertFalse(one("COPY t TO '/tmp/x'").program)

    def test_opaque(self) -> None:
        """
        DO and CALL are kinds of their own and may write; the DO body is
        not looked into.
        """
        info = one("DO $$ BEGIN DROP TABLE t; END $$")
        self.assertEqual((info.kinds, info.writes, info.writes_data), (("do",), (), True))
        info = one("CALL s.p(f(1))")
        self.assertEqual((info.kinds, info.functions, info.writes_data), (("call",), ("s.p", "f"), True))

    def test_kinds(self) -> None:
        """
        Utility statements get the kinds the module documents.
        """
        cases = {
            "BEGIN": "begin", "START TRANSACTION": "begin", "COMMIT": "commit",
            "ROLLBACK": "rollback", "SAVEPOINT a": "savepoint",
            "RELEASE a": "release_savepoint", "ROLLBACK TO a": "rollback_to_savepoint",
            "PREPARE TRANSACTION 'x'": "prepare_transaction",
            "SET a = 1": "set", "RESET ALL": "reset", "SHOW a": "show",
            "LISTEN c": "listen", "NOTIFY c": "notify", "UNLISTEN *": "unlisten",
            "VACUUM t": "vacuum", "ANALYZE t": "analyze", "LOCK t": "lock",
            "GRANT SELECT ON t TO a": "grant", "REVOKE r FROM a": "revoke",
            "CREATE INDEX ON t (a)": "create_index", "CREATE ROLE r": "create_role",
            "CREATE EXTENSION x": "create_extension", "ALTER SYSTEM SET a = 1": "alter_system",
            "DROP ROLE r": "drop", "DROP DATABASE d": "drop", "DROP OWNED BY a": "drop",
            "CREATE DATABASE d": "create_database", "ALTER INDEX i RENAME TO j": "alter_index",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'": "create_function",
            "DEALLOCATE ALL": "deallocate", "CHECKPOINT": "checkpoint", "LOAD 'x'": "load",
            "FETCH c": "fetch", "CLOSE c": "close",
        }
        for sql, kind in cases.items():
            self.assertEqual(one(sql).kinds[0], kind, sql)
        self.assertEqual(one("DISCARD ALL").kinds, ("discard", "deallocate"))

    def test_deepNesting(self) -> None:
        """
        A statement too deeply nested to walk is unknown plus the kinds its
        keywords suggest, over-matching: a DELETE cannot hide in it.
        """
        sql = "WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d WHERE " + "NOT " * 1000 + "true"
        info = one(sql)
        self.assertEqual(info.kinds[0], "unknown")
        self.assertIn("delete", info.kinds)
        self.assertTrue(info.without_where)
        self.assertIn("public.t", info.writes)

    def test_fingerprintNotACacheKey(self) -> None:
        """
        Statements with equal fingerprints can classify differently, which
        is why the fingerprint is not used as a cache key.
        """
        for a, b in [("SELECT * FROM t", "SELECT * FROM s.t"),
                     ("DELETE FROM t", "DELETE FROM t WHERE true"),
                     ("PREPARE a AS SELECT 1", "PREPARE b AS SELECT 1")]:
            self.assertEqual(pg.fingerprint(a), pg.fingerprint(b))
            self.assertNotEqual(facts(one(a)), facts(one(b)))


class PreparedStatementsTests(SynchronousTestCase):
    def test_prepareExecute(self) -> None:
        """
        PREPARE contains its statement; EXECUTE resolves to what was prepared.
        """
        session = PreparedStatements()
        prepare, execute = classify("PREPARE p AS DELETE FROM t; EXECUTE P")
        self.assertEqual((prepare.kinds, prepare.prepared_name), (("prepare", "delete"), "p"))
        self.assertEqual((execute.kinds, execute.prepared_name), (("execute",), "p"))
        session.observe(prepare)
        stored = session.execute_info("p")
        assert stored is not None
        self.assertEqual((stored.kinds, stored.writes), (("delete",), ("public.t",)))
        resolved = session.resolve(execute)
        self.assertEqual((resolved.kinds, resolved.writes, resolved.without_where),
                         (("execute", "delete"), ("public.t",), True))

    def test_executeUnknown(self) -> None:
        """
        EXECUTE of a statement the gateway did not see prepared is unknown.
        """
        resolved = PreparedStatements().resolve(one("EXECUTE q(pg_sleep(1))"))
        self.assertEqual(resolved.kinds, ("execute", "unknown"))
        self.assertEqual(resolved.functions, ("pg_sleep",))
        self.assertTrue(resolved.writes_data)

    def test_readOnlyExecute(self) -> None:
        """
        A resolved EXECUTE of a SELECT does not write data.
        """
        session = PreparedStatements()
        session.observe(one("PREPARE r AS SELECT * FROM t"))
        self.assertFalse(session.resolve(one("EXECUTE r")).writes_data)

    def test_deallocate(self) -> None:
        """
        DEALLOCATE forgets one statement; DEALLOCATE ALL and DISCARD ALL forget all.
        """
        session = PreparedStatements()
        for sql in ("PREPARE a AS SELECT 1", "PREPARE b AS SELECT 1"):
            session.observe(one(sql))
        session.parse("s1", "DELETE FROM t WHERE id = $1")
        session.observe(one("DEALLOCATE a"))
        self.assertIsNone(session.execute_info("a"))
        self.assertIsNotNone(session.execute_info("b"))
        stored = session.execute_info("s1")
        assert stored is not None
        self.assertEqual(stored.kinds, ("delete",))
        session.observe(one("DISCARD ALL"))
        self.assertIsNone(session.execute_info("b"))
        session.observe(one("PREPARE c AS SELECT 1"))
        session.observe(one("DEALLOCATE ALL"))
        self.assertIsNone(session.execute_info("c"))

    def test_protocolClose(self) -> None:
        """
        A protocol-level statement is forgotten by name.
        """
        session = PreparedStatements()
        session.parse("", "SELECT 1")
        session.forget("")
        self.assertIsNone(session.execute_info(""))


class DefaultPolicyTests(SynchronousTestCase):
    """
    The evasions of SQL guardrails, classified and decided by the shipped
    default policy.
    """

    def setUp(self) -> None:
        self.policy = load_policy_dir(REPO / "policies")

    def decide(self, info: StatementInfo) -> tuple[str, str | None]:
        action = Action("sql.query", info.text, info.attributes())
        decision = evaluate(self.policy, ALICE, "appdb", action)
        return decision.effect.value, decision.rule

    def decisions(self, sql: str) -> list[tuple[str, str | None]]:
        return [self.decide(info) for info in classify(sql)]

    def test_denied(self) -> None:
        """
        Each evasion is denied by the rule meant for it.
        """
        cases = {
            "/* a /* nested */ c */ DROP /* x */ TABLE t": "no-destructive-ddl",
            "-- comment\nTRUNCATE t": "no-destructive-ddl",
            "dRoP\n\t  TaBlE   t": "no-destructive-ddl",
            "DROP TABLE t": "no-destructive-ddl",
            "TRUNCATE t": "no-destructive-ddl",
            "DELETE FROM t": "no-unbounded-writes",
            "EXPLAIN ANALYZE DELETE FROM t": "no-unbounded-writes",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d": "no-unbounded-writes",
            "PREPARE p AS DELETE FROM t": "no-unbounded-writes",
            "COPY t TO PROGRAM 'x'": "no-copy-program",
            "DO $$ BEGIN DELETE FROM t; END $$": "no-do-blocks",
        }
        for sql, rule in cases.items():
            self.assertEqual(self.decisions(sql), [("deny", rule)], sql)

    def test_multiStatement(self) -> None:
        """
        Each statement of a string is decided on its own.
        """
        allowed = ("allow", "authenticated-may-use-everything")
        self.assertEqual(self.decisions("SELECT 1; DROP TABLE t; select 2"),
                         [allowed, ("deny", "no-destructive-ddl"), allowed])
        self.assertEqual(self.decisions("SELECT $a$ ' $a$; DROP TABLE t; --'"),
                         [allowed, ("deny", "no-destructive-ddl")])
        self.assertEqual(self.decisions("SELECT $a$ '; DROP TABLE t; --' $a$"), [allowed])

    def test_executePrepared(self) -> None:
        """
        EXECUTE of a prepared unbounded DELETE is denied once resolved.
        """
        session = PreparedStatements()
        prepare, execute = classify("PREPARE p AS DELETE FROM t; EXECUTE p")
        session.observe(prepare)
        self.assertEqual(self.decide(session.resolve(execute)), ("deny", "no-unbounded-writes"))

    def test_boundedAndReviewed(self) -> None:
        """
        A DELETE with WHERE is allowed; an UPDATE of public.payments waits
        for review.
        """
        self.assertEqual(self.decisions("DELETE FROM t WHERE id = 1"),
                         [("allow", "authenticated-may-use-everything")])
        self.assertEqual(self.decisions("UPDATE public.payments SET amount = 0 WHERE id = 1"),
                         [("review", "review-payment-writes")])
        self.assertEqual(self.decisions("update PAYMENTS set amount = 0 where id = 1"),
                         [("review", "review-payment-writes")])


# -- properties ------------------------------------------------------------------

STATEMENTS = [
    "SELECT a, b FROM public.users u JOIN orders o ON o.uid = u.id WHERE u.id = 1",
    "DELETE FROM t WHERE id = 1",
    "DELETE FROM t",
    "UPDATE public.payments SET amount = amount * 2",
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    "EXPLAIN ANALYZE DELETE FROM t",
    "PREPARE p (int) AS DELETE FROM t WHERE id = $1",
    "COPY t TO PROGRAM 'gzip > /tmp/x'",
    "INSERT INTO audit.log SELECT now(), pg_catalog.current_user()",
    "DROP TABLE IF EXISTS s.t CASCADE",
    "SELECT $q$ ; DROP TABLE t; $q$",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1",
]

_WHITESPACE = st.sampled_from([" ", "  ", "\t", "\n", "\r\n", " /* c */ ", "/* a /* b */ c */",
                               " -- line\n", "\n--\n"])


def _tokens(sql: str) -> list[str]:
    # Token texts (the scanner's offsets are inclusive), comments excluded.
    raw = sql.encode("utf-8")
    return [raw[t.start:t.end + 1].decode("utf-8") for t in pg.scan(sql)
            if t.name not in ("C_COMMENT", "SQL_COMMENT")]


@st.composite
def _respaced(draw: st.DrawFn) -> tuple[str, str]:
    sql = draw(st.sampled_from(STATEMENTS))
    tokens = _tokens(sql)
    out = [draw(_WHITESPACE)]
    for token in tokens:
        # Unquoted words may change case; quoted text and strings may not.
        if token[0].isalpha() and draw(st.booleans()):
            token = token.upper() if draw(st.booleans()) else token.lower()
        out.append(token)
        out.append(draw(_WHITESPACE))
    return sql, "".join(out)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=200))
    def test_neverRaises(self, text: str) -> None:
        """
        classify never raises; what the parser refuses is one unknown
        statement.
        """
        try:
            pg.parse_sql_json(text)
            parses = True
        except Exception:
            parses = False
        infos = classify(text)
        if not parses:
            self.assertEqual([i.kinds for i in infos], [("unknown",)])
        for info in infos:
            self.assertTrue(info.kinds)

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet="SELECT*FROM t;$'\"-/ \n()xDROPWHERE=1", max_size=80))
    def test_neverRaisesSqlish(self, text: str) -> None:
        """
        Nor on text made of SQL's own punctuation and keywords.
        """
        self.assertIsInstance(classify(text), tuple)

    @settings(max_examples=300, deadline=None)
    @given(_respaced())
    def test_whitespaceAndComments(self, pair: tuple[str, str]) -> None:
        """
        Extra whitespace and comments between tokens, and the case of
        unquoted words, do not change a statement's classification.
        """
        sql, respaced = pair
        self.assertEqual(facts(one(respaced)), facts(one(sql)), respaced)


class BenchTests(SynchronousTestCase):
    def test_mainRows(self) -> None:
        """
        The classification benchmark returns one row per statement, with
        positive cold and warm costs.
        """
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "_hoopgw_bench_sql_classify", REPO / "bench" / "sql_classify.py")
        assert spec is not None and spec.loader is not None
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        rows = bench.main(count=5)
        self.assertEqual(len(rows), len(bench.STATEMENTS))
        self.assertTrue(all(row["cold_us"] > 0 and row["warm_us"] > 0 for row in rows))


# -- the literal-normalised cache ---------------------------------------------------

def _corpus() -> list[str]:
    """
    Every SQL text in this file (the evasion corpus above: CTEs, EXPLAIN,
    dollar quoting, comments, PREPARE/EXECUTE, WHERE true, ...) that parses.
    """
    import ast

    texts: dict[str, None] = {}
    for node in ast.walk(ast.parse(Path(__file__).read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip():
            try:
                if pg.parse_sql_json(node.value) and pg.normalize(node.value) is not None:
                    texts[node.value] = None
            except Exception:
                pass
    return list(texts)


CORPUS = _corpus() + [
    "DELETE FROM t WHERE true", "DELETE FROM t WHERE 1=1", "UPDATE t SET a = 1 WHERE false",
    "DELETE FROM t WHERE 'a' = 'a'", "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
    " -- lead\n SELECT 'é', 1 FROM ü WHERE x = 'ü' ; -- trail\n ; ",
    "SELECT * FROM payments_2024 WHERE id = 1", "SELECT * FROM s.t WHERE id = 1",
    "PREPARE b AS SELECT 1", "EXECUTE p(1, 'x')", "DO $$ BEGIN DELETE FROM t; END $$",
    "SELECT set_config('search_path', 'evil', false)", "SELECT nextval('s')",
    "SELECT * FROM t LIMIT 5 OFFSET 10", "SELECT interval '7 days', date '2024-01-01', B'101', X'ff', 1.5e3",
]
_LITERALS = {"SCONST", "ICONST", "FCONST", "BCONST", "XCONST"}


@st.composite
def _literal_variant(draw: st.DrawFn) -> tuple[str, str]:
    """A corpus text and the same text with its literals drawn afresh (same token kinds)."""
    sql = draw(st.sampled_from(CORPUS))
    raw = sql.encode("utf-8")
    out, copied = [], 0
    for token in pg.scan(sql):
        if token.name not in _LITERALS:
            continue
        old = raw[token.start:token.end + 1].decode("utf-8")
        if token.name == "ICONST":
            new = str(draw(st.integers(0, 2**31 - 1)))
        elif token.name == "FCONST":
            new = draw(st.sampled_from(["0.5", "1e9", "3.25", "12.0"]))
        elif token.name in ("BCONST", "XCONST"):
            new = old  # bit strings: keep (their digits are checked)
        elif old.startswith("$"):
            tag = old[:old.index("$", 1) + 1]
            body = draw(st.text(alphabet="abc ;'DROP TABLE x", max_size=12))
            new = tag + body.replace("$", "") + tag
        elif old[:1] in ("'", "E", "e", "U", "u", "N", "n"):
            body = draw(st.text(alphabet="abcé ;DROP TABLE x\"", max_size=12))
            new = "'" + body + "'"
        else:
            new = old
        out.append(raw[copied:token.start].decode("utf-8"))
        out.append(new)
        copied = token.end + 1
    out.append(raw[copied:].decode("utf-8"))
    return sql, "".join(out)


class NormalisedCacheTests(SynchronousTestCase):
    """
    L{classify} shares a classification between single-statement texts of
    the same literal-normalised form, rebuilding only the text.
    """

    def full(self, sql: str) -> tuple[StatementInfo, ...]:
        """The classification from the parse tree, no cache at all (secrets redacted, as always)."""
        return tuple(sql_module._without_secrets(info) for info in sql_module._classify(sql)[0])

    def cached(self, sql: str) -> tuple[StatementInfo, ...]:
        """Through the normalised cache (not the exact-text one)."""
        return classify.__wrapped__(sql)

    @settings(max_examples=1000, deadline=None)
    @given(_literal_variant())
    def test_sameAsFullClassification(self, pair: tuple[str, str]) -> None:
        """
        Whatever text of a form classified the cache entry, another text of
        that form gets exactly what the full walk gives it: every fact and
        its own text (the audit input).
        """
        sql, variant = pair
        self.cached(sql)  # primes the entry for this form
        expected = self.full(variant)
        self.assertEqual(self.cached(variant), expected, variant)
        self.assertEqual([dict(i.attributes()) for i in self.cached(variant)],
                         [dict(i.attributes()) for i in expected])

    def test_corpusBothWays(self) -> None:
        """
        Every corpus text, classified through an entry primed by any other
        text of its normalised form, equals its full classification; texts
        of one form have equal facts.
        """
        by_form: dict[str, list[str]] = {}
        for sql in CORPUS:
            by_form.setdefault(pg.normalize(sql), []).append(sql)
        for texts in by_form.values():
            for primer in texts:
                sql_module._shapes.clear()
                self.cached(primer)
                for sql in texts:
                    self.assertEqual(self.cached(sql), self.full(sql), (primer, sql))
                    if any(k.startswith("create_") and k.endswith(("function", "procedure"))
                           for i in self.full(sql) for k in i.kinds):
                        continue  # a body's facts come from a literal: not shared by shape
                    self.assertEqual([facts(i) for i in self.full(sql)],
                                     [facts(i) for i in self.full(primer)], (primer, sql))

    def test_hits(self) -> None:
        """Texts that differ only in a literal are parsed once."""
        calls = []
        real = sql_module._classify

        def counting(sql: str):  # type: ignore[no-untyped-def]
            calls.append(sql)
            return real(sql)

        self.patch(sql_module, "_classify", counting)
        sql_module._shapes.clear()
        texts = [f"SELECT abalance FROM pgbench_accounts WHERE aid = {n};" for n in range(900001, 900011)]
        infos = [self.cached(t) for t in texts]
        self.assertEqual(len(calls), 1)
        self.assertEqual([i.text for [i] in infos], [t.rstrip(";") for t in texts])

    def test_constantWhere(self) -> None:
        """
        WHERE true and WHERE 1=1 are WHERE clauses, as before; a DELETE
        without one never shares their entry (and the other way round).
        """
        for primer in ("DELETE FROM t WHERE true", "DELETE FROM t WHERE 1=1", "DELETE FROM t"):
            sql_module._shapes.clear()
            self.cached(primer)
            self.assertFalse(one("DELETE FROM t WHERE true").without_where)
            self.assertFalse(self.cached("DELETE FROM t WHERE false")[0].without_where)
            self.assertFalse(self.cached("DELETE FROM t WHERE 2=3")[0].without_where)
            self.assertTrue(self.cached("DELETE FROM t")[0].without_where)
            self.assertTrue(self.cached("UPDATE t SET a = 5")[0].without_where)

    def test_namesAreKept(self) -> None:
        """
        What the fingerprint conflates stays apart: schemas, digits in
        names, prepared-statement names.
        """
        for a, b in [("SELECT * FROM t WHERE id = 1", "SELECT * FROM s.t WHERE id = 2"),
                     ("SELECT * FROM payments_2024", "SELECT * FROM payments_2025"),
                     ("PREPARE a AS SELECT 1", "PREPARE b AS SELECT 2")]:
            self.assertNotEqual(pg.normalize(a), pg.normalize(b))
            self.cached(a)
            self.assertEqual(self.cached(b), self.full(b))
            self.assertNotEqual(facts(self.cached(a)[0]), facts(self.cached(b)[0]))

    def test_multiStatementNotShared(self) -> None:
        """A string of several statements is classified in full each time."""
        sql_module._shapes.clear()
        self.cached("BEGIN; DELETE FROM t WHERE id = 1; COMMIT")
        self.assertEqual(len(sql_module._shapes), 0)


class RedactSecretsTests(SynchronousTestCase):
    """Passwords in statement texts are replaced before anything records them (issue 11, item 6)."""

    def test_password_literals(self) -> None:
        """Every spelling of a password constant is replaced, the rest of the text kept."""
        from hoopgw.protocols.postgres.sql import redact_secrets

        cases = {
            "CREATE ROLE x PASSWORD 'p'": "CREATE ROLE x PASSWORD '[redacted]'",
            "alter user x with encrypted password 'SCRAM-SHA-256$4096:x'": "alter user x with encrypted password '[redacted]'",
            "ALTER ROLE x PASSWORD $$p$$ VALID UNTIL 'infinity'": "ALTER ROLE x PASSWORD '[redacted]' VALID UNTIL 'infinity'",
            "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', password 'p')": "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', password '[redacted]')",
            "CREATE SUBSCRIPTION s CONNECTION 'host=h password=p' PUBLICATION p": "CREATE SUBSCRIPTION s CONNECTION '[redacted]' PUBLICATION p",
            "SELECT dblink_connect('dbname=d PASSWORD = p')": "SELECT dblink_connect('[redacted]')",
            "SELECT 'password' AS password": "SELECT 'password' AS password",
            "CREATE ROLE x PASSWORD N'p'": "CREATE ROLE x PASSWORD N'[redacted]'",
            "CREATE ROLE x PASSWORD X'beef'": "CREATE ROLE x PASSWORD '[redacted]'",
            "ALTER USER MAPPING FOR u SERVER s OPTIONS (ADD sslpassword 'p')": "ALTER USER MAPPING FOR u SERVER s OPTIONS (ADD sslpassword '[redacted]')",
            "CREATE USER MAPPING FOR u SERVER s OPTIONS (password_required 'false')": "CREATE USER MAPPING FOR u SERVER s OPTIONS (password_required 'false')",
            # A column named so is SQL, and so is what follows it.
            "SELECT id FROM users WHERE encrypted_password IS NULL": "SELECT id FROM users WHERE encrypted_password IS NULL",
            "SELECT 1 FROM u WHERE reset_password LIKE 'x%'": "SELECT 1 FROM u WHERE reset_password LIKE 'x%'",
            "SELECT 1 FROM u WHERE password IS NOT NULL": "SELECT 1 FROM u WHERE password IS NOT NULL",
            "ALTER ROLE x PASSWORD hunter2": "ALTER ROLE x PASSWORD '[redacted]'",
        }
        for text, expected in cases.items():
            self.assertEqual(redact_secrets(text), expected, text)

    def test_unreadable_text_is_not_recorded(self) -> None:
        """Text the scanner cannot read (an unterminated string) is not recorded at all."""
        from hoopgw.protocols.postgres.sql import UNRECORDABLE, classify

        [info] = classify("ALTER ROLE x PASSWORD 'secret")
        self.assertEqual(info.text, UNRECORDABLE)

    def test_classification_records_the_redacted_text(self) -> None:
        """The statement text classify returns (what the trail records) carries no password; the facts are kept."""
        from hoopgw.protocols.postgres.sql import classify

        [role, select] = classify("CREATE ROLE r PASSWORD 'hunter2'; SELECT 1")
        self.assertEqual(role.text, "CREATE ROLE r PASSWORD '[redacted]'")
        self.assertEqual(role.kinds, ("create_role",))
        self.assertEqual(select.text, "SELECT 1")


class ReachabilityTests(SynchronousTestCase):
    """
    DDL that makes another way to reach a table counts as a write to it
    (issue 11, item 5): a rule on public.payments protects the table through
    views, rules, partitions, inheritance, triggers and function bodies.
    """

    def test_ways_to_reach_a_table(self) -> None:
        for sql in (
            "CREATE VIEW v AS SELECT * FROM payments",
            "CREATE OR REPLACE VIEW v AS SELECT id FROM (SELECT * FROM payments) p",
            "CREATE RULE r AS ON INSERT TO t DO INSTEAD SELECT * FROM payments",
            "CREATE RULE r AS ON UPDATE TO t DO ALSO DELETE FROM payments",
            "ALTER TABLE p ATTACH PARTITION payments FOR VALUES IN (1)",
            "ALTER TABLE payments INHERIT p",
            "ALTER TABLE p DETACH PARTITION payments",
            "CREATE TRIGGER tr AFTER INSERT ON payments FOR EACH ROW EXECUTE FUNCTION f()",
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$DELETE FROM payments$$",
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM payments; END",
            "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN DELETE FROM payments; END$$",
            "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$BEGIN RETURN (SELECT count(*) FROM payments); END$$",
            "CREATE PROCEDURE p() LANGUAGE sql AS 'UPDATE payments SET amount = 0'",
        ):
            [info] = classify(sql)
            self.assertIn("public.payments", info.writes, sql)

    def test_objects_that_run_a_function(self) -> None:
        """
        An operator, aggregate, cast, range or type made here runs functions
        named in its definition: a later statement of the same transaction
        can run them before any catalog shows the object, so they are called.
        """
        for sql, functions in (
            ("CREATE OPERATOR s.### (FUNCTION = wipe, LEFTARG = int, RIGHTARG = int)", ("wipe",)),
            ("CREATE OPERATOR ### (PROCEDURE = 'wipe', RIGHTARG = int, RESTRICT = s.sel, JOIN = joinsel)",
             ("wipe", "s.sel", "joinsel")),
            ("CREATE AGGREGATE a(int) (SFUNC = s.step, STYPE = int, FINALFUNC = fin, COMBINEFUNC = comb)",
             ("s.step", "fin", "comb")),
            ("CREATE AGGREGATE a (BASETYPE = int, SFUNC1 = step, STYPE1 = int)", ("step",)),
            ("CREATE AGGREGATE a(int) (SFUNC = step, STYPE = int, MSFUNC = ms, MINVFUNC = mi, MSTYPE = int)",
             ("step", "ms", "mi")),
            ("CREATE CAST (s.t AS int) WITH FUNCTION wipe(anyelement)", ("wipe",)),
            ("CREATE TYPE r AS RANGE (SUBTYPE = int, SUBTYPE_DIFF = diff)", ("diff",)),
            ("ALTER OPERATOR ### (int, int) SET (RESTRICT = sel)", ("sel",)),
            ("ALTER TYPE t SET (RECEIVE = recv)", ("recv",)),
            ("CREATE OPERATOR CLASS c FOR TYPE int USING btree AS OPERATOR 1 <, FUNCTION 1 cmp(int, int)", ("cmp",)),
        ):
            [info] = classify(sql)
            self.assertEqual(info.functions, functions, sql)
        # Type names in the same definitions are types, not functions.
        [info] = classify("CREATE AGGREGATE a(int) (SFUNC = step, STYPE = guarded)")
        self.assertEqual(info.kinds, ("create_aggregate",))
        self.assertEqual(info.functions, ("step",))
        self.assertIn("guarded", info.types)
        [info] = classify("CREATE TYPE r AS RANGE (SUBTYPE = s.guarded)")
        self.assertEqual((info.functions, info.types), ((), ("s.guarded",)))

    def test_what_a_body_runs_is_the_statements_own(self) -> None:
        """A string body's kinds and missing WHERE count, as a BEGIN ATOMIC body's do."""
        for sql, kinds in (
            ("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'TRUNCATE t'", ("create_function", "truncate")),
            ("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN DROP TABLE t; END$$",
             ("create_function", "drop")),
            ("CREATE PROCEDURE p() LANGUAGE sql AS $$DELETE FROM t$$", ("create_procedure", "delete")),
        ):
            [info] = classify(sql)
            self.assertEqual(info.kinds, kinds, sql)
        [info] = classify("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'UPDATE t SET x = 1'")
        self.assertTrue(info.without_where)
        [info] = classify("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'UPDATE t SET x = 1 WHERE y = 2'")
        self.assertFalse(info.without_where)

    def test_what_a_new_functions_signature_runs(self) -> None:
        """Its parameters' defaults are called, its parameter and result types named."""
        [info] = classify("CREATE FUNCTION f(a int DEFAULT wipe()) RETURNS int LANGUAGE sql AS 'SELECT a'")
        self.assertEqual(info.functions, ("wipe",))
        for sql in (
            "CREATE FUNCTION f(a guarded) RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE FUNCTION f() RETURNS guarded LANGUAGE sql AS 'SELECT 1'",
            "CREATE FUNCTION f(OUT a guarded) LANGUAGE sql AS 'SELECT 1'",
            "CREATE FUNCTION f() RETURNS TABLE (a guarded) LANGUAGE plpgsql AS 'BEGIN END'",
        ):
            [info] = classify(sql)
            self.assertIn("guarded", info.types, sql)

    def test_types_renamed_or_moved_are_named(self) -> None:
        for sql in ("ALTER DOMAIN s.d RENAME TO e", "ALTER TYPE s.d RENAME TO e", "ALTER DOMAIN s.d SET SCHEMA t"):
            [info] = classify(sql)
            self.assertIn("s.d", info.types, sql)

    def test_cascading_foreign_keys_delete_and_update(self) -> None:
        for sql, kinds in (
            ("ALTER TABLE r ADD FOREIGN KEY (c) REFERENCES k ON DELETE CASCADE", ("alter_table", "delete")),
            ("ALTER TABLE r ADD FOREIGN KEY (c) REFERENCES k ON DELETE SET NULL", ("alter_table", "update")),
            ("CREATE TABLE c (x int REFERENCES k ON UPDATE CASCADE)", ("create_table", "update")),
            ("ALTER TABLE r ADD FOREIGN KEY (c) REFERENCES k", ("alter_table",)),
        ):
            [info] = classify(sql)
            self.assertEqual(info.kinds, kinds, sql)

    def test_alter_index_renames_a_table_too(self) -> None:
        [info] = classify("ALTER INDEX s.t RENAME TO u")
        self.assertEqual(info.renames, (("s.t", "s.u"),))

    def test_trigger_arguments_naming_a_table(self) -> None:
        """A C trigger function (refint) may write the table its arguments name."""
        [info] = classify("CREATE TRIGGER r BEFORE DELETE ON s.p FOR EACH ROW "
                          "EXECUTE FUNCTION check_foreign_key(1, 'cascade', 'id', 'Payments', 'id')")
        self.assertIn("public.payments", info.writes)
        [info] = classify("CREATE TRIGGER r AFTER INSERT ON p FOR EACH ROW EXECUTE FUNCTION f('billing.ledger', '1 2')")
        self.assertIn("billing.ledger", info.writes)
        self.assertNotIn("public.1 2", info.writes)

    def test_execute_in_a_body_is_unknown(self) -> None:
        """What p holds is the calling session's: a body that EXECUTEs it cannot be read."""
        [info] = classify("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'EXECUTE p'")
        self.assertIn("unknown", info.kinds)

    def test_functions_that_run_sql_text_are_unknown(self) -> None:
        for sql in (
            "SELECT query_to_xml('DELETE FROM t', true, false, '')",
            "SELECT * FROM crosstab('SELECT 1, 2, 3') AS ct(a int, b int)",
            "SELECT * FROM ext.crosstab3('SELECT 1, 2, 3')",
            "SELECT * FROM connectby('secrets', 'id', 'parent', '1', 0) AS t(a int, b int, level int)",
        ):
            [info] = classify(sql)
            self.assertIn("unknown", info.kinds, sql)
        [info] = classify("SELECT own.query_to_xml('x')")  # a function of the database's own: its body is read
        self.assertNotIn("unknown", info.kinds)

    def test_bodies_that_cannot_be_read_are_unknown(self) -> None:
        for sql in (
            "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN EXECUTE 'DELETE FROM payments'; END$$",
            "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN FOR r IN EXECUTE 'x' LOOP END LOOP; END$$",
            "CREATE FUNCTION f() RETURNS int LANGUAGE plpython3u AS $$return 1$$",
        ):
            [info] = classify(sql)
            self.assertIn("unknown", info.kinds, sql)

    def test_function_bodies_are_not_shared_by_shape(self) -> None:
        """Two bodies differ only in a literal to the normaliser: each is read for itself."""
        [first] = classify("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$SELECT 1$$")
        [second] = classify("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$DELETE FROM payments$$")
        self.assertEqual(first.writes, ())
        self.assertIn("public.payments", second.writes)
