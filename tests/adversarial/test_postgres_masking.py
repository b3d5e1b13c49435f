"""
Attacks on result masking (issue 12), from three outside rounds: each test
plants the canaries of tests/integration/test_postgres_masking.py, tries
one way to get them past the gateway as alice (not exempt) -- the fast-path
FunctionCall, RAISE ... USING fields, ParameterStatus, a view redefined in
an uncommitted transaction (also behind a pipelined query, also through an
operator's function), binary Bind parameters, renames by the table's owner,
statistics views, bytea, values written next to other text, integrity
violations' details, client encodings, numbers inside binary arrays and
records, escaped literals in the trail, view aliases that look like node
fields, COPY TO's options (HEADER 'OFF', ENCODING, NULL), a view redefined
by an implicit cast's function, the extended protocol's corners -- and asserts none reaches the
client, the audit trail or the gateway's log.  Each failed on the code
before its fix (the passing protocol-corner tests were kept as guards).
"""

from __future__ import annotations

import base64
import socket
import ssl
import struct
import time

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from tests.integration.test_postgres_clients import require_psycopg
from tests.integration.test_postgres_masking import CARD, EMAIL, NOTE_CARD, SALARY, SSN, MaskingCase

try:
    import psycopg
except ImportError:  # require_psycopg() says so (a failure under CI)
    psycopg = None  # type: ignore[assignment]

CANARIES = (SSN, CARD, NOTE_CARD, EMAIL, SALARY, "536228726")
B64 = tuple(base64.b64encode(c.encode()).decode() for c in (SSN, CARD, NOTE_CARD, EMAIL))


class RawClient:
    """A minimal PostgreSQL protocol client (TLS, cleartext token) for protocol tricks."""

    def __init__(self, port: int, token: str, user: str = "alice") -> None:
        s = socket.create_connection(("127.0.0.1", port), timeout=15)
        s.sendall(struct.pack(">ii", 8, 80877103))
        assert s.recv(1) == b"S"
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.s = ctx.wrap_socket(s)
        body = struct.pack(">i", 196608) + b"user\0" + user.encode() + b"\0database\0appdb\0\0"
        self.s.sendall(struct.pack(">i", len(body) + 4) + body)
        t, payload = self.read()
        assert t == b"R", (t, payload)
        self.send(b"p", token.encode() + b"\0")
        self.until_ready()

    def send(self, kind: bytes, body: bytes) -> None:
        self.s.sendall(kind + struct.pack(">i", len(body) + 4) + body)

    def sendraw(self, data: bytes) -> None:
        self.s.sendall(data)

    @staticmethod
    def msg(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack(">i", len(body) + 4) + body

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.s.recv(n - len(out))
            if not chunk:
                raise EOFError(out)
            out += chunk
        return out

    def read(self) -> tuple[bytes, bytes]:
        head = self._exact(5)
        length = struct.unpack(">i", head[1:])[0]
        return head[:1], self._exact(length - 4)

    def until_ready(self) -> list[tuple[bytes, bytes]]:
        got = []
        while True:
            t, p = self.read()
            got.append((t, p))
            if t == b"Z":
                return got

    def close(self) -> None:
        try:
            self.send(b"X", b"")
            self.s.close()
        except OSError:
            pass


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def parse(name: str, query: str, types: tuple[int, ...] = ()) -> bytes:
    return RawClient.msg(b"P", cstr(name) + cstr(query) + struct.pack(">h", len(types)) + b"".join(struct.pack(">i", t) for t in types))


def bind(portal: str, stmt: str, params: tuple[bytes | None, ...] = (), pformats: tuple[int, ...] = (), rformats: tuple[int, ...] = ()) -> bytes:
    body = cstr(portal) + cstr(stmt)
    body += struct.pack(">h", len(pformats)) + b"".join(struct.pack(">h", f) for f in pformats)
    body += struct.pack(">h", len(params))
    for p in params:
        body += struct.pack(">i", -1) if p is None else struct.pack(">i", len(p)) + p
    body += struct.pack(">h", len(rformats)) + b"".join(struct.pack(">h", f) for f in rformats)
    return RawClient.msg(b"B", body)


def execute(portal: str, rows: int = 0) -> bytes:
    return RawClient.msg(b"E", cstr(portal) + struct.pack(">i", rows))


def describe(kind: str, name: str) -> bytes:
    return RawClient.msg(b"D", kind.encode() + cstr(name))


SYNC = RawClient.msg(b"S", b"")
FLUSH = RawClient.msg(b"H", b"")


def query(q: str) -> bytes:
    return RawClient.msg(b"Q", cstr(q))


class AttackBase(MaskingCase):
    timeout = 120

    def setUp(self) -> None:
        require_psycopg()
        super().setUp()

    def leaks(self, text: str, b64: bool = False) -> list[str]:
        found = [c for c in CANARIES if c in text]
        if b64:
            found += [f"base64:{c}" for c in B64 if c in text]
        return found

    def check(self, client_text: str, what: str) -> None:
        problems = []
        if self.leaks(client_text):
            problems.append(f"client output: {self.leaks(client_text)}")
        trail = self.trail()
        if self.leaks(trail, b64=True):
            problems.append(f"audit trail: {self.leaks(trail, b64=True)}")
        log = "\n".join(self.logged)
        if self.leaks(log, b64=True):
            problems.append(f"gateway log: {self.leaks(log, b64=True)}")
        if problems:
            self.fail(f"{what}: " + "; ".join(problems) + f"\nclient: {client_text[:3000]}")

    def run_psycopg(self, work):
        return deferToThread(work)


class Batch1(AttackBase):
    @inlineCallbacks
    def test_parameter_status_application_name(self) -> None:
        """set_config('application_name', <ssn>) comes back in a ParameterStatus, never masked."""
        def work():
            with self.connect(autocommit=True) as conn:
                conn.execute("SELECT set_config('application_name', (SELECT ssn FROM people LIMIT 1), false)")
                a = conn.info.parameter_status("application_name")
                conn.execute("SELECT set_config('application_name', (SELECT email FROM people LIMIT 1), false)")
                b = conn.info.parameter_status("application_name")
                # (salary::text is computed: only a detector could find it, policies/README.md)
                return repr((a, b))
        out = yield self.run_psycopg(work)
        self.check(out, "ParameterStatus")

    @inlineCallbacks
    def test_raise_using_fields(self) -> None:
        """RAISE ... USING COLUMN/TABLE/SCHEMA/DATATYPE/CONSTRAINT from a pg_temp function."""
        def work():
            seen = []
            with self.connect(autocommit=True) as conn:
                conn.execute(
                    "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE plpgsql AS $$DECLARE s text; e text; BEGIN "
                    "SELECT ssn, email INTO s, e FROM people LIMIT 1; "
                    "RAISE EXCEPTION 'boom' USING COLUMN = s, TABLE = e, SCHEMA = s, DATATYPE = s, CONSTRAINT = s; END$$"
                )
                try:
                    conn.execute("SELECT pg_temp.f()")
                except psycopg.Error as e:
                    d = e.diag
                    seen.append((d.message_primary, d.column_name, d.table_name, d.schema_name, d.datatype_name, d.constraint_name))
                notices = []
                conn.add_notice_handler(lambda d: notices.append((d.message_primary, d.column_name, d.table_name)))
                conn.execute(
                    "CREATE FUNCTION pg_temp.g() RETURNS int LANGUAGE plpgsql AS $$DECLARE s text; BEGIN "
                    "SELECT card INTO s FROM people LIMIT 1; "
                    "RAISE NOTICE 'hi' USING COLUMN = s, TABLE = s; RETURN 1; END$$"
                )
                conn.execute("SELECT pg_temp.g()")
                seen.append(notices)
            return repr(seen)
        out = yield self.run_psycopg(work)
        self.check(out, "RAISE USING fields")

    @inlineCallbacks
    def test_rule_select_extended(self) -> None:
        """A DO ALSO SELECT rule on a temp table: extended-protocol INSERT gets DataRows with no RowDescription."""
        def work():
            seen = []
            with self.connect(autocommit=True) as conn:
                conn.execute("CREATE TEMP TABLE t (a int)")
                conn.execute("CREATE RULE r AS ON INSERT TO t DO ALSO SELECT ssn, email, salary, card, note FROM people")
                for binary in (False, True):
                    cur = conn.cursor(binary=binary)
                    try:
                        cur.execute("INSERT INTO t VALUES (%s)", (1,))
                        seen.append((cur.statusmessage, cur.description))
                        if cur.pgresult is not None:
                            seen.append([cur.pgresult.get_value(r, c) for r in range(cur.pgresult.ntuples) for c in range(cur.pgresult.nfields)])
                    except psycopg.Error as e:
                        seen.append(repr(e))
            return repr(seen)
        out = yield self.run_psycopg(work)
        # And raw, to see the DataRows themselves.
        def raw():
            c = RawClient(self.port, self.token)
            c.sendraw(query("CREATE TEMP TABLE t (a int); CREATE RULE r AS ON INSERT TO t DO ALSO SELECT ssn, email, salary, card, note FROM people"))
            c.until_ready()
            c.sendraw(parse("", "INSERT INTO t VALUES (1)") + bind("", "") + describe("P", "") + execute("") + SYNC)
            got = c.until_ready()
            c.close()
            return repr(got)
        out2 = yield deferToThread(raw)
        self.check(out + out2, "rule DO ALSO SELECT")

    @inlineCallbacks
    def test_uncommitted_view_replace(self) -> None:
        """In one transaction: CREATE OR REPLACE a (committed, harmless) temp view to select salary/ssn."""
        def work():
            with self.connect(autocommit=True) as conn:
                conn.execute("CREATE TEMP VIEW v AS SELECT id, id AS n, name AS s FROM people")
                seen = [conn.execute("SELECT * FROM v").fetchall()]
                conn.autocommit = False
                conn.execute("CREATE OR REPLACE TEMP VIEW v AS SELECT id, salary AS n, ssn AS s FROM people")
                seen.append(conn.execute("SELECT * FROM v").fetchall())
                seen.append(conn.execute("SELECT n, s FROM v", binary=True).fetchall())
                conn.rollback()
            return repr(seen)
        out = yield self.run_psycopg(work)
        self.check(out, "uncommitted view replace")

    @inlineCallbacks
    def test_binary_parameter_in_trail(self) -> None:
        """A text parameter sent in binary (psycopg %b / binary=True) is stored base64 in the trail."""
        def work():
            with self.connect(autocommit=True) as conn:
                conn.execute("INSERT INTO cards VALUES (%b, %b)", (5, CARD))
                conn.execute("SELECT %b::text", (SSN,))
                conn.execute("SELECT %s::text", (EMAIL,), binary=True)
            return ""
        out = yield self.run_psycopg(work)
        self.check(out, "binary parameters")

def datarows(got: list[tuple[bytes, bytes]]) -> list[list[bytes | None]]:
    rows = []
    for t, p in got:
        if t != b"D":
            continue
        n = struct.unpack_from(">h", p)[0]
        at, vals = 2, []
        for _ in range(n):
            ln = struct.unpack_from(">i", p, at)[0]
            at += 4
            if ln < 0:
                vals.append(None)
            else:
                vals.append(p[at:at + ln])
                at += ln
        rows.append(vals)
    return rows


class Batch2(AttackBase):
    @inlineCallbacks
    def test_fastpath_function_call(self) -> None:
        """A FunctionCall (fastpath) of a pg_temp SQL function returning ssn: FunctionCallResponse is not masked."""
        def work():
            c = RawClient(self.port, self.token)
            c.sendraw(query(
                "CREATE FUNCTION pg_temp.leak(int) RETURNS text LANGUAGE sql AS "
                "$$SELECT ssn || ' ' || email || ' ' || card || ' ' || salary FROM people WHERE id = $1$$;"
                "SELECT 'pg_temp.leak(int)'::regprocedure::oid"))
            got = c.until_ready()
            oid = int(datarows(got)[0][0])
            body = struct.pack(">i", oid) + struct.pack(">h", 1) + struct.pack(">h", 0)
            body += struct.pack(">h", 1) + struct.pack(">i", 1) + b"1" + struct.pack(">h", 0)
            c.send(b"F", body)
            got = c.until_ready()
            c.close()
            return repr(got)
        out = yield deferToThread(work)
        self.check(out, "FunctionCall")

    @inlineCallbacks
    def test_binary_cursor_simple_query(self) -> None:
        def work():
            c = RawClient(self.port, self.token)
            c.sendraw(query("BEGIN; DECLARE c BINARY CURSOR FOR SELECT ssn, salary, email, card, note, id FROM people; FETCH ALL c; COMMIT"))
            got = c.until_ready()
            c.close()
            return repr(datarows(got))
        out = yield deferToThread(work)
        self.check(out, "binary cursor")

    @inlineCallbacks
    def test_extended_tricks(self) -> None:
        def work():
            c = RawClient(self.port, self.token)
            out = []
            q = "SELECT ssn, salary, email, card, note, id FROM people, generate_series(1,3)"
            # Describe statement first, then a named portal with mixed result formats, max_rows=1 repeatedly.
            c.sendraw(parse("s1", q) + describe("S", "s1") + bind("p1", "s1", rformats=(1, 0, 1, 0, 1, 0)) +
                      execute("p1", 1) + execute("p1", 1) + execute("p1", 0) + SYNC)
            out.append(c.until_ready())
            # Unnamed, Execute without Describe, Flush between.
            c.sendraw(bind("", "s1") + execute("", 1) + FLUSH)
            out.append([c.read() for _ in range(3)])
            c.sendraw(execute("", 1) + execute("", 5) + SYNC)
            out.append(c.until_ready())
            # SQL cursor executed by protocol Execute.
            c.sendraw(query("BEGIN; DECLARE cur CURSOR WITH HOLD FOR " + q + "; COMMIT"))
            out.append(c.until_ready())
            c.sendraw(execute("cur", 1) + execute("cur", 0) + SYNC)
            out.append(c.until_ready())
            c.sendraw(describe("P", "cur") + SYNC)
            out.append(c.until_ready())
            c.close()
            return repr([datarows(g) for g in out]) + repr(out)
        out = yield deferToThread(work)
        self.check(out, "extended tricks")

    @inlineCallbacks
    def test_pipeline_mode(self) -> None:
        def work():
            seen = []
            with self.connect(autocommit=True) as conn:
                with conn.pipeline():
                    curs = []
                    for i, binary in enumerate((False, True, False, True)):
                        cur = conn.cursor(binary=binary)
                        cur.execute("SELECT ssn, salary, email, card, note FROM people WHERE id = %s", (1,))
                        curs.append(cur)
                    cur = conn.cursor()
                    cur.execute("SELECT set_config('x.y', %s, false)", ("a",))
                    curs.append(cur)
                    cur = conn.cursor(binary=True)
                    cur.execute("SELECT * FROM staff2")
                    curs.append(cur)
                for cur in curs:
                    seen.append(cur.fetchall())
            return repr(seen)
        out = yield self.run_psycopg(work)
        self.check(out, "pipeline")

    @inlineCallbacks
    def test_pg_stats(self) -> None:
        """Values PostgreSQL copies into statistics (autovacuum's ANALYZE): pg_stats."""
        self.cluster.psql(
            "INSERT INTO people (id, salary) SELECT g, 987654 FROM generate_series(10, 40) g;"
            "ANALYZE people")
        code, o = yield self.psql("-c", "SELECT attname, most_common_vals, histogram_bounds FROM pg_stats WHERE tablename = 'people'")
        self.check(o.decode(), "pg_stats")

    @inlineCallbacks
    def test_bytea_text(self) -> None:
        """bytea in text format (hex, escape) is searched as the bytes it holds."""
        code, o = yield self.psql("-c", "SELECT convert_to(note, 'UTF8'), convert_to(ssn, 'UTF8') FROM people")
        code, o2 = yield self.psql("-c", "SET bytea_output = escape; SELECT convert_to(note, 'UTF8') FROM people")
        text = o.decode() + o2.decode()
        self.assertNotIn(SSN.encode().hex(), text)
        self.assertNotIn(NOTE_CARD.encode().hex(), text)
        self.check(text, "bytea")


NOTES = (
    "visa-4111111111111111",
    "paid 12 4111 1111 1111 1111 thanks",
    "ssn-536-22-8726",
    "mail canary.ada@example.org-work",
    "Seat 12 4111-1111-1111-1111",
)


class Batch3(AttackBase):
    @inlineCallbacks
    def test_detector_gaps_stored_notes(self) -> None:
        for i, n in enumerate(NOTES):
            self.cluster.psql(f"INSERT INTO people (id, note) VALUES ({100 + i}, '{n}')")
        code, o = yield self.psql("-c", "SELECT note FROM people WHERE id >= 100 ORDER BY id")
        t = o.decode()
        self.check(t.replace("4111111111111111", CARD).replace("4111-1111-1111-1111", CARD).replace("4111 1111 1111 1111", CARD), "detector gaps")


class Batch4(AttackBase):
    @inlineCallbacks
    def test_uncommitted_view_replace_never_cached(self) -> None:
        """Same as Batch1's, with the view never read before: the catalog reads the committed definition."""
        def work():
            c = RawClient(self.port, self.token)
            c.sendraw(query("CREATE TEMP VIEW harmless AS SELECT id, id AS n FROM people"))
            a = c.until_ready()
            c.sendraw(query("BEGIN; CREATE OR REPLACE TEMP VIEW harmless AS SELECT id, salary AS n FROM people; "
                            "SELECT n FROM harmless; ROLLBACK"))
            b = c.until_ready()
            c.close()
            return repr(a + b)
        o = yield deferToThread(work)
        o = o.encode()
        self.check(o.decode(), "uncommitted view (never cached)")

    @inlineCallbacks
    def test_owner_renames_defeat_masks(self) -> None:
        """The table's owner (the app role, common) renames the table or column through the gateway."""
        self.cluster.psql("ALTER TABLE people OWNER TO app_scram")
        code, o1 = yield self.psql("-c", "ALTER TABLE people RENAME COLUMN salary TO pay")
        code, o2 = yield self.psql("-c", "SELECT pay FROM people")
        code, o3 = yield self.psql("-c", "ALTER TABLE people RENAME TO folks")
        code, o4 = yield self.psql("-c", "SELECT ssn, pay FROM folks")
        self.check("".join(x.decode() for x in (o1, o2, o3, o4)).replace(SSN, "<ssn-detected?>"), "owner renames")

    @inlineCallbacks
    def test_protocol_sanity_after_tricks(self) -> None:
        """Suspended portals, Close, re-Execute, refused Bind in a pipeline: the connection stays in step."""
        def work():
            c = RawClient(self.port, self.token)
            res = []
            q = "SELECT ssn, salary, note FROM people, generate_series(1,4)"
            c.sendraw(parse("s", q) + bind("p", "s", rformats=(1,)) + execute("p", 1) +
                      RawClient.msg(b"C", b"Pp\0") + execute("p", 1) + SYNC)
            res.append(c.until_ready())
            c.sendraw(parse("d", "DROP TABLE cards") + bind("x", "d") + execute("x") + bind("y", "s") + execute("y", 2) + SYNC)
            res.append(c.until_ready())
            c.sendraw(bind("y", "s", rformats=(0, 1, 0)) + execute("y", 2) + FLUSH)
            res.append([c.read() for _ in range(4)])
            c.sendraw(execute("y", 2) + SYNC)
            res.append(c.until_ready())
            c.sendraw(query("SELECT 1"))
            res.append(c.until_ready())
            c.close()
            return repr(res)
        out = yield deferToThread(work)
        self.assertIn("(b'D', b'\\x00\\x01\\x00\\x00\\x00\\x011')", out)
        self.check(out, "protocol sanity")


class Batch5(AttackBase):
    @inlineCallbacks
    def test_copy_refusal_variants(self) -> None:
        outs = []
        for q in ("copy people to stdout", "/* x */ COPY people TO STDOUT", "COPY public.people (salary) TO STDOUT (FORMAT binary)",
                  "SELECT 1; COPY people TO STDOUT", "COPY (TABLE people) TO STDOUT", "\\copy people to stdout"):
            if q.startswith("\\"):
                path = self.mktemp()
                open(path, "w").write(q + "\n")
                code, o = yield self.psql("-f", path)
            else:
                code, o = yield self.psql("-c", q)
            outs.append(o.decode("utf-8", "replace"))
        def ext():
            c = RawClient(self.port, self.token)
            c.sendraw(parse("", "COPY people TO STDOUT") + bind("", "") + execute("") + SYNC)
            got = c.until_ready()
            c.close()
            return repr(got)
        outs.append((yield deferToThread(ext)))
        self.check("\n".join(outs), "COPY variants")


# -- a second outside round ---------------------------------------------------


def raw_session(port: int, token: str, *queries: str) -> str:
    c = RawClient(port, token)
    got = []
    for q in queries:
        c.sendraw(query(q))
        got.append(c.until_ready())
    c.close()
    return repr(got)


class ErrorDetails(AttackBase):
    @inlineCallbacks
    def test_failing_row_detail_shows_origin_masked_column(self) -> None:
        """A NOT NULL violation's DETAIL 'Failing row contains (...)' shows every column of the row."""
        code, o1 = yield self.psql("-c", "UPDATE people SET id = NULL WHERE id = 1")
        code, o2 = yield self.psql("-c", "INSERT INTO people SELECT NULL, name, ssn, email, salary, card, note FROM people")
        self.check(o1.decode() + o2.decode(), "Failing row contains")


class DynamicRename(AttackBase):
    @inlineCallbacks
    def test_rename_in_do_block(self) -> None:
        """The table's owner renames a masked column through dynamic SQL in a DO block (first thing the gateway sees)."""
        self.cluster.psql("ALTER TABLE people OWNER TO app_scram")
        code, o1 = yield self.psql("-c", "DO $$BEGIN EXECUTE 'ALTER TABLE people RENAME COLUMN salary TO pay'; END$$")
        code, o2 = yield self.psql("-c", "SELECT pay FROM people")
        self.check(o1.decode() + o2.decode(), "rename in DO")

    @inlineCallbacks
    def test_rename_table_in_do_block(self) -> None:
        self.cluster.psql("ALTER TABLE people OWNER TO app_scram")
        code, o1 = yield self.psql("-c", "DO $$BEGIN EXECUTE 'ALTER TABLE people RENAME TO folks'; END$$")
        code, o2 = yield self.psql("-c", "SELECT salary, ssn FROM folks")
        self.check((o1.decode() + o2.decode()).replace(SSN, "<ssn-by-detector?>"), "table rename in DO")


class Encodings(AttackBase):
    FULLWIDTH = "４１１１ １１１１ １１１１ １１１１"

    @inlineCallbacks
    def test_fullwidth_card_under_euc_jp(self) -> None:
        """A card in full-width digits is found under UTF8; under client_encoding EUC_JP the gateway reads the bytes as UTF-8."""
        self.cluster.psql(f"INSERT INTO people (id, note) VALUES (50, 'card {self.FULLWIDTH} ok')")

        def work():
            seen = []
            for enc in ("UTF8", "EUC_JP"):
                with self.connect(autocommit=True) as conn:
                    conn.execute(f"SET client_encoding = '{enc}'")
                    seen.append((enc, conn.execute("SELECT note FROM people WHERE id = 50").fetchall()))
                    try:
                        conn.execute("SELECT note::int FROM people WHERE id = 50")
                    except psycopg.Error as e:
                        seen.append((enc, str(e)))
            return seen
        seen = yield deferToThread(work)
        leaked = [s for s in seen if self.FULLWIDTH in repr(s)]
        self.assertEqual(leaked, [], repr(seen))


class BinaryShapes(AttackBase):
    @inlineCallbacks
    def test_binary_containers_of_numbers(self) -> None:
        """Numbers in binary arrays, records, money: only top-level numbers are decoded."""
        def work():
            c = RawClient(self.port, self.token)
            q = ("SELECT ARRAY[replace(card,' ','')::int8], replace(card,' ','')::numeric::money, "
                 "ROW(replace(card,' ','')::int8), ARRAY[replace(card,' ','')::numeric] FROM people")
            c.sendraw(parse("", q) + bind("", "", rformats=(1,)) + describe("P", "") + execute("") + SYNC)
            got = c.until_ready()
            c.close()
            return datarows(got)
        rows = yield deferToThread(work)
        blob = b"".join(v or b"" for r in rows for v in r)
        self.assertNotIn(struct.pack(">q", 4111111111111111), blob, repr(rows))
        self.assertNotIn(struct.pack(">q", 411111111111111100), blob, repr(rows))


class Trail(AttackBase):
    @inlineCallbacks
    def test_statement_spellings(self) -> None:
        stmts = [
            "INSERT INTO cards VALUES (1, '4111 1111' || ' 1111 1111')",
            "INSERT INTO cards VALUES (2, E'4111\\0401111\\0401111\\0401111')",
            "INSERT INTO cards VALUES (3, U&'4111\\00201111\\00201111\\00201111')",
            "INSERT INTO cards VALUES (4, 'canary.ada@example'\n'.org')",
            "INSERT INTO cards VALUES (5, $q$4111 1111 1111 1111$q$)",
            "INSERT INTO cards VALUES (6, 4111111111111111)",
            "INSERT INTO cards VALUES (7, '536-22-' || '8726')",
            "INSERT INTO cards VALUES (8, '4111.1111.1111.1111')",
            "INSERT INTO cards VALUES (9, convert_from(decode('NTM2LTIyLTg3MjY=', 'base64'), 'UTF8'))",
        ]
        for s in stmts:
            yield self.psql("-c", s)
        starts = [r["action"]["input"] for r in self.records("action.start") if "cards" in r["action"].get("input", "")]
        stored = self.cluster.psql("SELECT id, v FROM cards ORDER BY id")
        # What a careful operator expects masked: a literal's value however it is spelt
        # (E'' / U&'' escapes, SQL's adjacent-literal continuation); || and decode() are expressions.
        expected = [s for s in starts if "cards VALUES (2," in s or "cards VALUES (3," in s or "cards VALUES (4," in s]
        self.assertEqual([s for s in expected if "[redacted]" not in s], [],
                         "trail inputs:\n" + "\n".join(map(repr, starts)) + "\nstored:\n" + stored)


class CatalogChangedRace(AttackBase):
    @inlineCallbacks
    def test_pipelined_ready_for_query_clears_flag(self) -> None:
        """
        Query 1 (any) and Query 2 (BEGIN; redefine a view; read it) sent
        together: Query 1's ReadyForQuery 'I' arrives after Query 2 set
        _catalog_changed, and clears it.
        """
        def work():
            c = RawClient(self.port, self.token)
            c.sendraw(query("CREATE TEMP VIEW harmless AS SELECT id, id AS n, name AS s FROM people"))
            c.until_ready()
            c.sendraw(query("SELECT 1") + query(
                "BEGIN; CREATE OR REPLACE TEMP VIEW harmless AS SELECT id, salary AS n, ssn AS s FROM people; "
                "SELECT n, s FROM harmless; ROLLBACK"))
            a = c.until_ready()
            b = c.until_ready()
            c.close()
            return repr(datarows(a + b))
        out = yield deferToThread(work)
        self.check(out.replace(SSN, "<ssn: detector>"), "pipelined RFQ clears _catalog_changed")

    @inlineCallbacks
    def test_ddl_through_operator(self) -> None:
        """A pg_temp operator whose function redefines the view: DDL the gateway does not see."""
        def work():
            c = RawClient(self.port, self.token)
            c.sendraw(query("CREATE TEMP VIEW harmless AS SELECT id, id AS n FROM people"))
            s0 = c.until_ready()
            c.sendraw(query(
                "CREATE FUNCTION pg_temp.sw(int, int) RETURNS int LANGUAGE plpgsql AS $$BEGIN "
                "CREATE OR REPLACE TEMP VIEW harmless AS SELECT id, salary AS n FROM people; RETURN 1; END$$"))
            s1 = c.until_ready()
            c.sendraw(query("CREATE OPERATOR pg_temp.### (FUNCTION = pg_temp.sw, LEFTARG = int, RIGHTARG = int)"))
            s = s0 + s1 + c.until_ready()
            c.sendraw(query("BEGIN"))
            c.until_ready()
            c.sendraw(query("SELECT 1 OPERATOR(pg_temp.###) 1"))
            a = c.until_ready()
            c.sendraw(query("SELECT n FROM harmless"))
            b = c.until_ready()
            c.sendraw(query("ROLLBACK"))
            c.until_ready()
            c.close()
            return repr(s) + repr(a) + repr(datarows(b)) + repr(b)
        out = yield deferToThread(work)
        self.check(out, "DDL through operator")


class ViewParser(AttackBase):
    @inlineCallbacks
    def test_alias_named_like_a_node_field(self) -> None:
        """A view column aliased ":resno": view_origins() takes the alias as the field name and int() fails."""
        def work():
            c = RawClient(self.port, self.token)
            c.sendraw(query('CREATE TEMP VIEW odd AS SELECT id AS ":resno", name FROM people'))
            a = c.until_ready()
            c.sendraw(query("SELECT * FROM odd"))
            b = c.until_ready()
            c.sendraw(query("SELECT name FROM people"))
            d = c.until_ready()
            c.close()
            return repr(a + b + d)
        out = yield deferToThread(work)
        self.flushLoggedErrors()
        warnings = [line for line in self.logged if "catalog" in line]
        self.assertEqual(warnings, [], out)


class HoldEdges(AttackBase):
    @inlineCallbacks
    def test_disconnect_and_many_relations(self) -> None:
        """Many distinct relations in one result, clients gone while the rows are held; the gateway stays up."""
        N = 60
        self.cluster.psql("".join(f"CREATE TABLE t{i} (ssn text); INSERT INTO t{i} VALUES ('{SSN}');" for i in range(N))
                          + "GRANT ALL ON ALL TABLES IN SCHEMA public TO app_scram;")
        cols = ", ".join(f"t{i}.ssn" for i in range(N))
        frm = ", ".join(f"t{i}" for i in range(N))
        q = f"SELECT {cols}, p.salary FROM {frm}, people p"

        t0 = time.time()
        self.cluster.psql(q)
        direct = time.time() - t0

        def work():
            for _ in range(3):
                c = RawClient(self.port, self.token)
                c.sendraw(query(q))
                c.s.close()
            t0 = time.time()
            c = RawClient(self.port, self.token)
            c.s.settimeout(120)
            c.sendraw(query(q))
            got = c.until_ready()
            c.close()
            return repr(datarows(got)), time.time() - t0
        out, took = yield deferToThread(work)
        self.assertLess(took, direct * 3 + 5, (direct, took))
        self.check(out, "many relations")


# -- a third outside round: COPY TO by column, hidden DDL, trail literals -----------


def copydata(got: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(p for t, p in got if t == b"d")


def raw_copy(port: int, token: str, sql: str, user: str = "alice", setup: str | None = None) -> list[tuple[bytes, bytes]]:
    c = RawClient(port, token, user)
    try:
        if setup:
            c.sendraw(query(setup))
            c.until_ready()
        c.sendraw(query(sql))
        return c.until_ready()
    finally:
        c.close()


class CopyOptions(AttackBase):
    @inlineCallbacks
    def test_header_off_spelt_in_capitals(self) -> None:
        """
        HEADER 'OFF' / 'False' / "OFF": PostgreSQL compares case-insensitively
        (no header line), copy_spec compares case-sensitively (header=True),
        so the first data row is skipped by origin masking: salary in clear.
        """
        outs = []
        for q in (
            "COPY people (id, salary, name) TO STDOUT (FORMAT csv, HEADER 'OFF')",
            "COPY people (id, salary, name) TO STDOUT (FORMAT csv, HEADER 'False')",
            'COPY people (id, salary, name) TO STDOUT (FORMAT text, HEADER "OFF")',
        ):
            code, output = yield self.psql("-c", q)
            outs.append(f"{q}\n -> rc={code} {output.decode(errors='replace')}")
        self.check("\n".join(outs), "COPY HEADER 'OFF'")

    @inlineCallbacks
    def test_copy_encoding_option_shifts_fields(self) -> None:
        """
        COPY ... (ENCODING 'SJIS'/'BIG5') while client_encoding is UTF8: the
        gateway decodes the line as UTF-8, so a trail byte 0x5C (backslash)
        of a multibyte character swallows the next delimiter and a trail
        byte 0x7C ('|') makes a new one: the field count still matches and
        salary lands in an unmasked field.  (alice may UPDATE name/note.)
        """
        self.cluster.psql("UPDATE people SET name = 'ソ', note = 'ポ' WHERE id = 1")
        outs = []
        for q in (
            "COPY people (name, salary, note) TO STDOUT (ENCODING 'SJIS', DELIMITER '|')",
            "COPY people (name, salary, note) TO STDOUT (FORMAT csv, ENCODING 'SJIS', DELIMITER '|')",
        ):
            code, output = yield self.psql("-c", q)
            outs.append(f"{q}\n -> rc={code} {output.decode(errors='replace')!r}")
        self.check("\n".join(outs), "COPY ENCODING SJIS")

    @inlineCallbacks
    def test_null_string_equal_to_value(self) -> None:
        """NULL '<a guess>': every masked field is the NULL string, whether the guess is right or not (no oracle)."""
        outputs = []
        for guess in (SALARY, "111"):
            code, output = yield self.psql("-c", f"COPY people (id, salary) TO STDOUT (NULL '{guess}')")
            outputs.append(output.decode().replace(guess, "<null>"))
        self.assertEqual(outputs[0], outputs[1])
        self.assertIn("1\t<null>", outputs[0])

    @inlineCallbacks
    def test_multi_statement_copies(self) -> None:
        """Two COPYs (and a SELECT before one) in one simple Query: each planned from its own statement."""
        def work():
            outs = []
            for sql in (
                "COPY cards TO STDOUT; COPY people (id, salary, name) TO STDOUT",
                "SELECT 1; COPY people (id, salary, name) TO STDOUT",
                "COPY people (name, id) TO STDOUT; COPY people (id, salary, name) TO STDOUT (FORMAT csv)",
                "BEGIN; COPY people (name) TO STDOUT; COPY people (salary) TO STDOUT; COMMIT",
            ):
                got = raw_copy(self.port, self.token, sql)
                outs.append(f"{sql} -> {got!r}")
            return "\n".join(outs)
        out = yield deferToThread(work)
        self.check(out, "multi-statement COPY")

    @inlineCallbacks
    def test_extended_protocol_pipelined_copies(self) -> None:
        """Parse/Bind/Execute COPY cards, then COPY people, one Sync."""
        def work():
            c = RawClient(self.port, self.token)
            c.sendraw(
                parse("", "COPY cards TO STDOUT") + bind("", "") + execute("")
                + parse("s2", "COPY people (id, salary, name) TO STDOUT") + bind("p2", "s2") + execute("p2")
                + SYNC
            )
            got = c.until_ready()
            c.close()
            return repr(got)
        out = yield deferToThread(work)
        self.check(out, "extended COPY pipeline")


class CopyExempt(AttackBase):
    """bob (pii-readers) must get COPY output byte for byte as the server sends it."""

    def setUp(self) -> None:
        super().setUp()
        self.reader = self.gateway.identity.dev_issuer.issue("bob", ("dev", "pii-readers"), 600)

    @inlineCallbacks
    def test_bob_copy_exact(self) -> None:
        def work():
            diffs = []
            for sql in (
                "COPY people TO STDOUT",
                "COPY people TO STDOUT (FORMAT csv, HEADER)",
                "COPY people TO STDOUT (FORMAT binary)",
                "COPY people (salary, ssn) TO STDOUT (FORMAT csv, ENCODING 'LATIN1')",
            ):
                via = copydata(raw_copy(self.port, self.reader, sql, user="bob"))
                direct = self.cluster.psql(sql) if "binary" not in sql else None
                if direct is not None and via.decode("latin-1").strip() != direct.encode().decode("latin-1").strip():
                    diffs.append((sql, via, direct))
                if SSN.encode() not in via and b"binary" not in sql.encode():
                    diffs.append((sql, "no ssn", via))
                if "binary" in sql and SSN.encode() not in via:
                    diffs.append((sql, "no ssn in binary", via))
            return diffs
        diffs = yield deferToThread(work)
        self.assertEqual(diffs, [])


class HiddenDDL(AttackBase):
    """DDL run by a function the gateway does not follow, in an open transaction, then a redefined view read."""

    def _attempt(self, setup: list[str], trigger: str) -> str:
        with self.connect(autocommit=True) as conn:
            conn.execute("CREATE TEMP VIEW v AS SELECT id, id AS n, name AS s FROM people")
            conn.execute(
                "CREATE FUNCTION pg_temp.evil(int, int) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$BEGIN "
                "CREATE OR REPLACE TEMP VIEW v AS SELECT id, salary AS n, ssn AS s FROM people; "
                "RETURN true; END$$"
            )
            for s in setup:
                conn.execute(s)
            seen = [conn.execute("SELECT * FROM v").fetchall()]
            conn.autocommit = False
            try:
                seen.append(conn.execute(trigger).fetchall())
                seen.append(conn.execute("SELECT n, s FROM v").fetchall())
            except psycopg.Error as e:
                seen.append(repr(e))
            conn.rollback()
            return repr(seen)

    @inlineCallbacks
    def test_operator_negator(self) -> None:
        """NOT (a === b) is planned as a !== b (negate_clause): the negator's function runs, unnamed."""
        setup = [
            "CREATE FUNCTION pg_temp.same(int, int) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$SELECT $1 = $2$$",
            "CREATE OPERATOR pg_temp.!== (LEFTARG = int, RIGHTARG = int, FUNCTION = pg_temp.evil)",
            "CREATE OPERATOR pg_temp.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = pg_temp.same, NEGATOR = OPERATOR(pg_temp.!==))",
        ]
        out = yield deferToThread(self._attempt, setup, "SELECT NOT (id OPERATOR(pg_temp.===) 2) FROM people")
        self.check(out, "operator negator")

    @inlineCallbacks
    def test_implicit_cast_to_boolean(self) -> None:
        """WHERE <composite>: the implicit cast's function runs; the statement names no function, operator or boolean."""
        setup = [
            "CREATE TYPE pg_temp.t AS (a int)",
            "CREATE FUNCTION pg_temp.tb(pg_temp.t) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$BEGIN "
            "CREATE OR REPLACE TEMP VIEW v AS SELECT id, salary AS n, ssn AS s FROM people; RETURN true; END$$",
            "CREATE CAST (pg_temp.t AS boolean) WITH FUNCTION pg_temp.tb(pg_temp.t) AS IMPLICIT",
        ]
        out = yield deferToThread(self._attempt, setup, "SELECT 1 FROM people WHERE ROW(1)::pg_temp.t")
        self.check(out, "implicit cast")


class TrailLiterals(AttackBase):
    @inlineCallbacks
    def test_continuations_and_uescape(self) -> None:
        """
        String constants PostgreSQL decodes that string_literals leaves as
        spelt: a continuation across CR (newline = [\\n\\r]), one with a
        comment line between, and U&'...' UESCAPE '!'.  The card reaches
        the trail split or escaped, where no detector finds it.
        """
        spellings = [
            "'4111 1111'\r' 1111 1111'",
            "'4111 1111'\n-- c\n' 1111 1111'",
            "U&'4111 1111 1111 111!0031' UESCAPE '!'",
        ]
        def work():
            c = RawClient(self.port, self.token)
            got = []
            for i, spelt in enumerate(spellings):
                c.sendraw(query(f"INSERT INTO cards VALUES ({10 + i}, {spelt})"))
                got.append(c.until_ready())
            c.close()
            return got
        yield deferToThread(work)
        stored = self.cluster.psql("SELECT id, v FROM cards ORDER BY id")
        self.assertEqual(stored.count(CARD), 3, stored)  # the server read each as the card
        trail = self.trail()
        left = [s for s in ("1111'\\r'", "-- c", "111!0031") if s in trail]
        self.assertEqual(left, [], "card spelt in the trail")


class CopyBinaryNumbers(AttackBase):
    @inlineCallbacks
    def test_card_in_bigint_binary_copy(self) -> None:
        """A card number in a bigint column no mask names: NULL in SELECT (binary), clear in COPY ... (FORMAT binary)."""
        self.cluster.psql(
            "CREATE TABLE accounts (id int, num bigint, amount numeric); "
            "INSERT INTO accounts VALUES (1, 4012888888881881, 4012888888881881); "
            "GRANT ALL ON accounts TO app_scram"
        )
        def work():
            with self.connect(autocommit=True) as conn, conn.cursor() as cur:
                sel = conn.execute("SELECT num, amount FROM accounts", binary=True).fetchall()
                with cur.copy("COPY accounts TO STDOUT (FORMAT binary)") as copy:
                    data = b"".join(bytes(chunk) for chunk in copy)
            return sel, data
        sel, data = yield deferToThread(work)
        num = struct.pack(">q", 4012888888881881)
        self.assertEqual(sel, [(None, None)])
        self.assertNotIn(num, data, "card number as int8 in binary COPY")
