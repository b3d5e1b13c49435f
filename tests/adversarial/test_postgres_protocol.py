"""
Attacks on the PostgreSQL front end's view of the session (issue 11, items
1-3), each against a real PostgreSQL through the gateway, its effect checked
on the server: the rows of C{payments} (writes to it need a review, which is
refused) and a sequence that a function advances.

  - lexical settings: C{standard_conforming_strings} and the client
    encoding changed by SET, set_config, start-up parameters, role
    settings, and by a function the gateway cannot see into, then an
    attack in the next message (or pipelined in the same batch);
  - protocol state: Sync and Flush inside COPY FROM STDIN, messages
    pipelined behind a COPY that fails or succeeds;
  - Bind runs code: an IMMUTABLE function folded by the planner at Bind,
    with no Execute.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from hoopgw.protocols.postgres import codec
from tests.integration.test_postgres_clients import RawClient, _GatewayCase

# The function the policy denies by name, and a volatile one that changes a
# lexical setting where the gateway cannot see (as a PL/pgSQL body can).
SETUP = """
CREATE TABLE payments (id int PRIMARY KEY, amount int);
INSERT INTO payments SELECT g, g * 10 FROM generate_series(1, 5) g;
GRANT SELECT, INSERT, UPDATE, DELETE ON payments TO app_scram;
CREATE SEQUENCE bumps;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE bumps TO app_scram;
CREATE FUNCTION bump(i int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS
  $$ BEGIN PERFORM nextval('bumps'); RETURN i; END $$;
CREATE FUNCTION hidden_setting(name text, value text) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN RETURN set_config(name, value, false); END $$;
CREATE FUNCTION innocent() RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN PERFORM set_config('standard_conforming_strings', 'off', false); RETURN 'ok'; END $$;
CREATE FUNCTION innocent_gbk() RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN PERFORM set_config('client_encoding', 'GBK', false); RETURN 'ok'; END $$;
"""

DENY_BUMP = """
[[rule]]
name = "no-bump"
effect = "deny"
sql.functions = ["bump", "public.bump"]
message = "bump() is not allowed"
"""

# Under standard_conforming_strings = off the server reads one string and
# then a DELETE; under on, the gateway reads one SELECT of a string.
SCS_ATTACK = "SELECT 'a\\''; DELETE FROM payments WHERE id > 0; --'"


def errors(messages: list[Any]) -> list[tuple[str, str]]:
    return [(m.code, m.message) for m in messages if isinstance(m, codec.ErrorResponse)]


class _Case(_GatewayCase):
    def setUp(self):
        self.start(extra_policy=DENY_BUMP)
        self.cluster.psql(SETUP)

    def payments(self) -> int:
        return int(self.count("SELECT count(*) FROM payments"))

    def bumps(self) -> int:
        return int(self.count("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM bumps"))

    def raw(self, work, **startup: str):
        """Run C{work(client)} on a fresh raw client in a thread."""

        def run():
            client = RawClient(self.port, self.token, **startup)
            try:
                return work(client)
            finally:
                client.close()

        return deferToThread(run)


class LexicalSettingsTests(_Case):
    @inlineCallbacks
    def test_set_standard_conforming_strings_off_is_refused(self):
        """
        SET, SET LOCAL and set_config() turning standard_conforming_strings
        off are refused (0A000) and not run; the attack after them is read
        as the server reads it and runs no DELETE.
        """
        spellings = [
            "SET standard_conforming_strings = off",
            "SET SESSION standard_conforming_strings TO 'off'",
            "set standard_conforming_strings=0",
            "BEGIN; SET LOCAL standard_conforming_strings = false",
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            "SELECT pg_catalog.set_config($$standard_conforming_strings$$, 'no', false)",
            "SELECT set_config('standard_conforming_' || 'strings', 'off', false)",
            "SELECT hidden_setting('standard_conforming_strings', 'off')",
        ]

        def work(client):
            answers = []
            for spelling in spellings:
                answers.append(client.batch(codec.Query(spelling)))
                answers.append(client.batch(codec.Query(SCS_ATTACK)))
                answers.append(client.batch(codec.Query("ROLLBACK")))
            return answers

        answers = yield self.raw(work)
        self.assertEqual(self.payments(), 5, "a DELETE ran on the server")
        for spelling, answer in zip(spellings[:-1], answers[::3]):
            self.assertIn("0A000", [code for code, _ in errors(answer)], spelling)

    @inlineCallbacks
    def test_a_hidden_change_ends_the_session(self):
        """
        A function that turns standard_conforming_strings off where the
        gateway cannot see: the server's report of it ends the session
        (FATAL 08P01), and the attack sent next never reaches the server.
        """

        def work(client):
            first = client.batch(codec.Query("SELECT innocent()"))
            try:
                second = client.batch(codec.Query(SCS_ATTACK))
            except OSError:
                second = []
            return first, second

        first, second = yield self.raw(work)
        self.assertEqual(self.payments(), 5)
        self.assertIn("08P01", [code for code, _ in errors(first)])

    @inlineCallbacks
    def test_pipelined_behind_a_hidden_change(self):
        """
        The attack pipelined behind the hidden change, as a second Query and
        as a Parse in the same extended batch: the gateway cannot know the
        setting the server will read it under, so it refuses it (0A000).
        """

        def work(client):
            client.sock.sendall(codec.encode(codec.Query("SELECT innocent()")) + codec.encode(codec.Query(SCS_ATTACK)))
            return client.read_until_ready(2)

        answers = yield self.raw(work)
        self.assertEqual(self.payments(), 5)

        def extended(client):
            return client.batch(
                codec.Parse("", "SELECT innocent()", ()),
                codec.Bind("", "", (), (), ()),
                codec.Execute("", 0),
                codec.Parse("", SCS_ATTACK.split(";")[0] + "; DELETE FROM payments WHERE id > 0", ()),
                codec.Bind("", "", (), (), ()),
                codec.Execute("", 0),
                codec.Sync(),
            )

        answers = yield self.raw(extended)
        self.assertEqual(self.payments(), 5)
        self.assertIn("0A000", [code for code, _ in errors(answers)])

    @inlineCallbacks
    def test_role_setting_is_overridden(self):
        """ALTER ROLE ... SET standard_conforming_strings = off does not reach a session through the gateway."""
        self.cluster.psql("ALTER ROLE app_scram SET standard_conforming_strings = off")

        def work(client):
            shown = client.batch(codec.Query("SHOW standard_conforming_strings"))
            attack = client.batch(codec.Query(SCS_ATTACK))
            return shown, attack

        shown, attack = yield self.raw(work)
        [row] = [m for m in shown if isinstance(m, codec.DataRow)]
        self.assertEqual(row.values[0], b"on")
        self.assertEqual(self.payments(), 5)

    @inlineCallbacks
    def test_unsafe_client_encodings_are_refused(self):
        """
        GBK, SJIS, BIG5, ... (a backslash byte can end a character): refused
        as a start-up parameter (FATAL 0A000), by SET / SET NAMES /
        set_config (0A000), and by a hidden change (the session ends).
        """

        def at_startup(client):
            return client.startup_answers

        answers = yield self.raw(at_startup, client_encoding="GBK")
        self.assertIn("0A000", [code for code, _ in errors(answers)])

        spellings = [
            "SET client_encoding = 'GBK'",
            "SET NAMES 'sjis'",
            "SET client_encoding TO 'WIN950'",
            "SELECT set_config('client_encoding', 'BIG5', false)",
        ]

        def work(client):
            return [client.batch(codec.Query(s)) for s in spellings]

        answers = yield self.raw(work)
        for spelling, answer in zip(spellings, answers):
            self.assertIn("0A000", [code for code, _ in errors(answer)], spelling)

        def hidden(client):
            return client.batch(codec.Query("SELECT innocent_gbk()"))

        answers = yield self.raw(hidden)
        self.assertIn("08P01", [code for code, _ in errors(answers)])
        self.assertEqual(self.payments(), 5)

    @inlineCallbacks
    def test_latin1_text_is_read_in_latin1(self):
        """A LATIN1 client's statement is read in LATIN1: its action records the text the server ran."""

        def work(client):
            # The byte 0xE9 (é in LATIN1), not valid UTF-8 on its own.
            return client.batch(codec.Query("SELECT 'caf\udce9' AS word"))

        answers = yield self.raw(work, client_encoding="LATIN1")
        self.assertEqual(errors(answers), [])
        [(start, end)] = [a for a in self.actions("sql.query") if "caf" in a[0]["action"]["input"]]
        self.assertEqual(start["action"]["input"], "SELECT 'café' AS word")
        self.assertEqual(end["outcome"]["status"], "succeeded")


class ProtocolStateTests(_Case):
    @inlineCallbacks
    def test_sync_inside_copy_is_not_a_batch_end(self):
        """
        Syncs and Flushes inside COPY FROM STDIN (which the server ignores)
        do not shift the gateway's view: the COPY, the SELECT and the DELETE
        after it are each recorded with their own outcome, and the DELETE
        (a write to payments) is refused.
        """
        self.cluster.psql("CREATE TABLE sink (v text); GRANT ALL ON sink TO app_scram")

        def work(client):
            return client.batch(
                codec.Query("COPY sink FROM STDIN"),
                codec.CopyData.from_data(b"one\n"),
                codec.Sync(),
                codec.Flush(),
                codec.Sync(),
                codec.CopyData.from_data(b"two\n"),
                codec.CopyDone(),
                codec.Parse("", "SELECT 1", ()),
                codec.Bind("", "", (), (), ()),
                codec.Execute("", 0),
                codec.Sync(),
                codec.Parse("", "DELETE FROM payments WHERE id > 0", ()),
                codec.Bind("", "", (), (), ()),
                codec.Execute("", 0),
                codec.Sync(),
                syncs=3,
            )

        answers = yield self.raw(work)
        self.assertEqual(self.payments(), 5)
        self.assertEqual(self.count("SELECT count(*) FROM sink"), "2")
        [(copy_start, copy_end)] = self.actions("sql.copy")
        self.assertEqual((copy_end["outcome"]["status"], copy_end["outcome"]["rows"]), ("succeeded", 2))
        executes = [(s["action"]["input"], e["outcome"]["status"]) for s, e in self.actions("sql.execute")]
        self.assertEqual(executes, [("SELECT 1", "succeeded"), ("DELETE FROM payments WHERE id > 0", "blocked")])
        self.assertEqual([type(m).__name__ for m in answers].count("ReadyForQuery"), 3)

    @inlineCallbacks
    def test_messages_pipelined_behind_a_failing_copy(self):
        """
        A COPY that fails before copy-in (no such table), with data, a Sync
        and a DELETE pipelined behind it: the server ignores the data, and
        the DELETE is judged and refused as itself.
        """

        def work(client):
            return client.batch(
                codec.Query("COPY nosuch FROM STDIN"),
                codec.CopyData.from_data(b"x\n"),
                codec.Sync(),
                codec.CopyDone(),
                codec.Parse("", "DELETE FROM payments WHERE id > 0", ()),
                codec.Bind("", "", (), (), ()),
                codec.Execute("", 0),
                codec.Sync(),
                syncs=3,
            )

        answers = yield self.raw(work)
        self.assertEqual(self.payments(), 5)
        codes = [code for code, _ in errors(answers)]
        self.assertEqual(codes[0], "42P01")
        self.assertIn("42501", codes)

    @inlineCallbacks
    def test_copy_in_an_extended_batch(self):
        """
        COPY FROM STDIN through Parse/Bind/Execute/Sync (as libpq sends it),
        the data, CopyDone and a Sync: the rows arrive and the client gets
        the server's answers; a Query during copy-in ends the connection
        (FATAL 08P01) before it reaches the server.
        """
        self.cluster.psql("CREATE TABLE sink (v text); GRANT ALL ON sink TO app_scram")

        def work(client):
            return client.batch(
                codec.Parse("", "COPY sink FROM STDIN", ()),
                codec.Bind("", "", (), (), ()),
                codec.Execute("", 0),
                codec.Sync(),
                codec.CopyData.from_data(b"a\nb\nc\n"),
                codec.CopyDone(),
                codec.Sync(),
            )

        answers = yield self.raw(work)
        self.assertEqual(errors(answers), [])
        self.assertEqual(self.count("SELECT count(*) FROM sink"), "3")

        def violation(client):
            return client.batch(
                codec.Query("COPY sink FROM STDIN"),
                codec.CopyData.from_data(b"d\n"),
                codec.Query("DELETE FROM payments WHERE id > 0"),
            )

        answers = yield self.raw(violation)
        self.assertEqual(errors(answers)[-1][0], "08P01")
        self.assertEqual(self.payments(), 5)
        self.assertEqual(self.count("SELECT count(*) FROM sink"), "3")


class BindTests(_Case):
    @inlineCallbacks
    def test_bind_without_execute_runs_nothing_refused(self):
        """
        Parse + Bind + Sync of a statement calling a denied IMMUTABLE
        function (the planner folds it at Bind): refused at the Bind, so
        the function never runs (its sequence does not move), and the
        refusal is recorded.
        """
        self.assertEqual(self.bumps(), 0)

        def work(client):
            return client.batch(
                codec.Parse("", "SELECT bump(1)", ()),
                codec.Bind("", "", (), (), ()),
                codec.Sync(),
            )

        answers = yield self.raw(work)
        self.assertEqual(self.bumps(), 0, "the denied function ran at Bind")
        self.assertEqual(errors(answers)[0][0], "42501")
        [(start, end)] = self.actions("sql.execute")
        self.assertEqual(end["outcome"]["status"], "blocked")

    @inlineCallbacks
    def test_allowed_bind_and_execute_are_one_action(self):
        """An allowed Bind starts the action its Execute finishes (rows, one record pair)."""

        def work(client):
            return client.batch(
                codec.Parse("", "SELECT id FROM payments WHERE id <= $1", ()),
                codec.Bind("", "", (), (b"3",), ()),
                codec.Execute("", 0),
                codec.Sync(),
            )

        answers = yield self.raw(work)
        self.assertEqual(errors(answers), [])
        [(start, end)] = self.actions("sql.execute")
        self.assertEqual(start["action"]["details"]["parameters"], ["3"])
        self.assertEqual((end["outcome"]["status"], end["outcome"]["rows"]), ("succeeded", 3))


class SecretTests(_Case):
    @inlineCallbacks
    def test_passwords_never_enter_the_trail(self):
        """
        CREATE/ALTER ROLE ... PASSWORD, psql's \\password (a SCRAM verifier),
        user-mapping options and connection strings: the statements run, and
        no byte of the secret is in the audit log; the records say where it was.
        """
        self.cluster.psql("ALTER ROLE app_scram CREATEROLE")
        statements = [
            "CREATE ROLE r1 LOGIN PASSWORD 'hunter2-plain'",
            "ALTER ROLE r1 WITH ENCRYPTED PASSWORD 'SCRAM-SHA-256$4096:hunter2-verifier'",
            "ALTER USER r1 PASSWORD E'hunter2-\\\\escaped'",
            "ALTER ROLE r1 PASSWORD $pw$hunter2-dollar$pw$",
            "ALTER ROLE r1 PASSWORD U&'hunter2-unicode'",
            "SELECT 'dbname=x password=hunter2-conninfo' AS c",
            "ALTER ROLE r1 PASSWORD 'hunter2-unterminated",
        ]

        def work(client):
            return [client.batch(codec.Query(s)) for s in statements] + [
                client.batch(
                    codec.Parse("", "CREATE ROLE r2 PASSWORD 'hunter2-parse'", ()),
                    codec.Bind("", "", (), (), ()),
                    codec.Execute("", 0),
                    codec.Sync(),
                )
            ]

        answers = yield self.raw(work)
        self.assertEqual([errors(a) for a in answers[:6]], [[]] * 6)
        self.assertEqual(self.count("SELECT count(*) FROM pg_roles WHERE rolname IN ('r1', 'r2')"), "2")
        trail = b"".join(p.read_bytes() for p in (self.base / "data" / "audit").rglob("*") if p.is_file())
        self.assertIn(b"'[redacted]'", trail)
        self.assertNotIn(b"hunter2", trail)


class MoreSecretTests(_Case):
    @inlineCallbacks
    def test_other_spellings_never_enter_the_trail(self):
        """
        A comment between PASSWORD and the password, a password without
        quotes (a syntax error, recorded all the same), a URI connection
        string, and a password sent as a Bind parameter: none reaches the trail.
        """
        self.cluster.psql("ALTER ROLE app_scram CREATEROLE; CREATE ROLE r1")

        def work(client):
            return [
                client.batch(codec.Query("ALTER ROLE r1 PASSWORD /* rotated */ 'hunter2-comment'")),
                client.batch(codec.Query("ALTER ROLE r1 PASSWORD -- c\n 'hunter2-linecomment'")),
                client.batch(codec.Query("ALTER ROLE r1 PASSWORD hunter2unquoted")),
                client.batch(codec.Query("ALTER ROLE r1 PASSWORD N'hunter2-national'")),
                client.batch(codec.Query("SELECT 'postgresql://u:hunter2-uri@h/db' AS c")),
                client.batch(
                    codec.Parse("", "ALTER ROLE r1 PASSWORD $1", ()),
                    codec.Bind("", "", (), (b"hunter2-param",), ()),
                    codec.Execute("", 0),
                    codec.Sync(),
                ),
            ]

        answers = yield self.raw(work)
        self.assertEqual([errors(a) for a in answers[:2]], [[], []])
        trail = b"".join(p.read_bytes() for p in (self.base / "data" / "audit").rglob("*") if p.is_file())
        self.assertNotIn(b"hunter2", trail)


class SecretOptionTests(_Case):
    def setUp(self):
        super().setUp()
        self.cluster.psql(
            "CREATE EXTENSION postgres_fdw; CREATE EXTENSION dblink;"
            "CREATE SERVER loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1');"
            "GRANT USAGE ON FOREIGN SERVER loop TO app_scram;"
        )

    @inlineCallbacks
    def test_sslpassword_never_enters_the_trail(self):
        """
        postgres_fdw takes the client key's passphrase as a user-mapping
        option, C{sslpassword}, as it takes C{password}: the mapping is made
        on the server, and its value is not in the audit log.
        """

        def work(client):
            return [
                client.batch(codec.Query(
                    "CREATE USER MAPPING FOR app_scram SERVER loop "
                    "OPTIONS (user 'app_scram', sslpassword 'hunter2-sslpassword')"
                )),
                client.batch(codec.Query(
                    "ALTER USER MAPPING FOR app_scram SERVER loop OPTIONS (SET sslpassword 'hunter2-set')"
                )),
            ]

        answers = yield self.raw(work)
        self.assertEqual([errors(a) for a in answers], [[], []])
        self.assertIn("sslpassword=hunter2-set", self.count("SELECT umoptions::text FROM pg_user_mappings"))
        trail = b"".join(p.read_bytes() for p in (self.base / "data" / "audit").rglob("*") if p.is_file())
        self.assertIn(b"'[redacted]'", trail)
        self.assertNotIn(b"hunter2", trail)

    @inlineCallbacks
    def test_passwords_in_bodies_never_enter_the_trail(self):
        """
        The idempotent way to create a role (a DO block), an EXECUTE of a
        quoted ALTER ROLE inside one, and a function body: the shipped
        policy refuses them (it cannot see into them), and records each
        statement all the same -- with no password in it.
        """
        statements = [
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'r_do') THEN "
            "CREATE ROLE r_do LOGIN PASSWORD 'hunter2-do'; END IF; END $$",
            "DO $$ BEGIN EXECUTE 'ALTER ROLE r_do PASSWORD ''hunter2-execute'''; END $$",
            "CREATE FUNCTION rotate() RETURNS void LANGUAGE plpgsql AS "
            "'BEGIN ALTER ROLE r_do PASSWORD ''hunter2-function''; END'",
        ]

        def work(client):
            return [client.batch(codec.Query(s)) for s in statements]

        answers = yield self.raw(work)
        self.assertEqual([[code for code, _ in errors(a)] for a in answers], [["42501"]] * 3)
        self.assertEqual(self.count("SELECT count(*) FROM pg_roles WHERE rolname = 'r_do'"), "0")
        inputs = [s["action"]["input"] for s, _ in self.actions("sql.query")]
        self.assertEqual(len(inputs), 3)
        self.assertTrue(all("PASSWORD '[redacted]'" in i or "PASSWORD ''[redacted]''" in i for i in inputs), inputs)
        trail = b"".join(p.read_bytes() for p in (self.base / "data" / "audit").rglob("*") if p.is_file())
        self.assertNotIn(b"hunter2", trail)

    @inlineCallbacks
    def test_connection_string_parameters_never_enter_the_trail(self):
        """
        A connection string sent as a Bind parameter (a driver's
        C{execute("SELECT dblink_connect(%s)", (conninfo,))}), in key/value
        or URI form, text or binary: the server gets it, the trail does not.
        """
        conninfos = [
            b"hostaddr=127.0.0.1 port=1 dbname=x user=u password=hunter2-kv",
            b"postgresql://u:hunter2-uri@127.0.0.1:1/x",
        ]

        def work(client):
            return [
                client.batch(
                    codec.Parse("", "SELECT dblink_connect($1::text)", ()),
                    codec.Bind("", "", (fmt,), (conninfo,), ()),
                    codec.Execute("", 0),
                    codec.Sync(),
                )
                for conninfo in conninfos for fmt in (0, 1)
            ]

        answers = yield self.raw(work)
        # libpq on the server tried the connection (port 1: refused).
        for answer in answers:
            self.assertIn("08001", [code for code, _ in errors(answer)])
        trail = b"".join(p.read_bytes() for p in (self.base / "data" / "audit").rglob("*") if p.is_file())
        self.assertNotIn(b"hunter2", trail)
        self.assertNotIn(b"aHVudGVyMi", trail)  # base64 of "hunter2"


class SecretScanCostTests(_Case):
    @inlineCallbacks
    def test_long_colon_run_after_scheme(self):
        """
        A 300,000-character string of colons after a C{://}, in a query and
        as a Bind parameter: looking for a URI password in it takes linear
        time, so the server answers at once (a quadratic search held the
        gateway's one thread for minutes, every session with it).
        """
        text = "://" + ":" * 300_000

        def work(client):
            started = time.monotonic()
            answers = [
                client.batch(codec.Query(f"SELECT length('{text}')")),
                client.batch(
                    codec.Parse("", "SELECT length($1::text)", ()),
                    codec.Bind("", "", (), (text.encode(),), ()),
                    codec.Execute("", 0),
                    codec.Sync(),
                ),
            ]
            return answers, time.monotonic() - started

        answers, took = yield self.raw(work)
        self.assertEqual([errors(a) for a in answers], [[], []])
        self.assertLess(took, 20)


class FunctionCallTests(_Case):
    """A FunctionCall names its function by OID: judged as that function (issue 11, item 4)."""

    def setUp(self):
        self.start(extra_policy=DENY_BUMP + '''
[[rule]]
name = "no-lo-unlink"
effect = "deny"
sql.functions = ["lo_unlink"]
message = "large objects may not be removed"
''')
        self.cluster.psql(SETUP + "SELECT lo_create(4242); ALTER LARGE OBJECT 4242 OWNER TO app_scram;")

    def large_object(self) -> bool:
        return self.count("SELECT count(*) FROM pg_largeobject_metadata WHERE oid = 4242") == "1"

    @inlineCallbacks
    def test_denied_function_by_oid(self):
        """
        FunctionCall of OID 964 (lo_unlink), which a rule denies by name: refused,
        the large object is still there, and the record names the function.
        """

        def work(client):
            return client.batch(codec.FunctionCall(964, (1,), (b"\x00\x00\x10\x92",), 1))

        answers = yield self.raw(work)
        self.assertTrue(self.large_object(), "lo_unlink ran on the server")
        self.assertEqual(errors(answers)[0][0], "42501")
        [(start, end)] = self.actions("sql.call")
        self.assertEqual(start["action"]["input"], "function call pg_catalog.lo_unlink (oid 964)")
        self.assertEqual(start["action"]["attributes"]["sql.functions"], ["lo_unlink", "pg_catalog.lo_unlink"])
        self.assertEqual(end["outcome"]["status"], "blocked")

    @inlineCallbacks
    def test_unknown_oid_is_refused(self):
        """An OID the catalog does not know is unknown, which the shipped policy refuses."""

        def work(client):
            return client.batch(codec.FunctionCall(987654321, (), (), 0))

        answers = yield self.raw(work)
        self.assertEqual(errors(answers)[0][0], "42501")
        [(start, end)] = self.actions("sql.call")
        self.assertIn("unknown", start["action"]["attributes"]["sql.statements"])

    @inlineCallbacks
    def test_allowed_function_by_oid(self):
        """FunctionCall of an allowed function (version(), OID 89) runs and is recorded as succeeded."""

        def work(client):
            return client.batch(codec.FunctionCall(89, (), (), 0))

        answers = yield self.raw(work)
        self.assertEqual(errors(answers), [])
        [(start, end)] = self.actions("sql.call")
        self.assertEqual(start["action"]["input"], "function call pg_catalog.version (oid 89)")
        self.assertEqual(end["outcome"]["status"], "succeeded")


EVIL = "DELETE FROM payments WHERE id > 0"


class NameTests(_Case):
    """
    What a name holds must be what the server holds (a review's attacks):
    changes across a Sync that fail, names the server cuts or converts,
    EXECUTE nested in another statement, portals closed or declared in SQL.
    """

    @inlineCallbacks
    def test_failed_parse_across_a_sync(self):
        """
        Parse s (a DELETE), then in one write: Parse s (fails: exists), Sync,
        Bind s, Execute, Sync.  The server skips nothing after that Sync, so
        the Bind runs the DELETE: it must be judged as the DELETE.
        """

        def work(client):
            client.batch(codec.Parse("s", EVIL, ()), codec.Sync())
            return client.batch(
                codec.Parse("s", "SELECT 1", ()),
                codec.Sync(),
                codec.Bind("", "s", (), (), ()),
                codec.Execute("", 0),
                codec.Sync(),
                syncs=2,
            )

        yield self.raw(work)
        self.assertEqual(self.payments(), 5, "the DELETE ran, judged as SELECT 1")

    @inlineCallbacks
    def test_failed_prepare_then_execute_pipelined(self):
        """Two pipelined Queries, PREPARE s (fails: exists) and EXECUTE s, run the DELETE s holds: refused."""

        def work(client):
            client.batch(codec.Parse("s", EVIL, ()), codec.Sync())
            client.sock.sendall(codec.encode(codec.Query("PREPARE s AS SELECT 1")) + codec.encode(codec.Query("EXECUTE s")))
            return client.read_until_ready(2)

        yield self.raw(work)
        self.assertEqual(self.payments(), 5)

    @inlineCallbacks
    def test_long_and_converted_names(self):
        """
        Protocol-level names the server cuts at 63 bytes, or converts from
        the client encoding, end the connection (FATAL 08P01), so two names
        can never be one to the server and two to the gateway.  (SQL names
        are cut and converted by the same lexer on both sides.)
        """
        long = "a" * 63

        def work(client):
            return client.batch(codec.Parse(long + "_benign", "SELECT 1", ()), codec.Sync())

        answers = yield self.raw(work)
        self.assertEqual(errors(answers)[-1][0], "08P01")

        def converted(client):
            return client.batch(codec.Parse("\u00e9", EVIL, ()), codec.Sync())

        answers = yield self.raw(converted, client_encoding="LATIN1")
        self.assertEqual(errors(answers)[-1][0], "08P01")
        self.assertEqual(self.payments(), 5)

    @inlineCallbacks
    def test_nested_execute(self):
        """EXPLAIN ANALYZE EXECUTE p and CREATE TABLE ... AS EXECUTE p are judged by what p holds."""

        def work(client):
            client.batch(codec.Parse("p", EVIL, ()), codec.Parse("b", "SELECT bump(7)", ()), codec.Sync())
            return [
                client.batch(codec.Query("EXPLAIN ANALYZE EXECUTE p")),
                client.batch(codec.Query("CREATE TEMP TABLE x AS EXECUTE b")),
            ]

        answers = yield self.raw(work)
        self.assertEqual(self.payments(), 5)
        self.assertEqual(self.bumps(), 0, "the denied function ran")
        self.assertEqual([errors(a)[0][0] for a in answers], ["42501", "42501"])

    @inlineCallbacks
    def test_execute_in_a_function_body(self):
        """
        A protocol Parse reaches the server before any Bind is judged, so a
        SQL function whose body is EXECUTE p runs what the session prepared:
        such a body is unknown, made in the same query or on the target.
        """
        self.cluster.psql("CREATE FUNCTION exec_p() RETURNS void LANGUAGE sql AS 'EXECUTE p'")

        def work(client):
            client.batch(codec.Parse("p", EVIL, ()), codec.Sync())
            return [
                client.batch(codec.Query(
                    "CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE sql AS 'EXECUTE p'; SELECT pg_temp.f()"
                )),
                client.batch(codec.Query("SELECT exec_p()")),
            ]

        answers = yield self.raw(work)
        self.assertEqual(self.payments(), 5)
        self.assertEqual([errors(a)[0][0] for a in answers], ["42501", "42501"])
        self.assertTrue(all("no-unknown-statements" in m.detail for a in answers
                            for m in a if isinstance(m, codec.ErrorResponse)), answers)

    @inlineCallbacks
    def test_portal_closed_and_declared_in_sql(self):
        """
        A portal bound as SELECT 1, CLOSEd in SQL and DECLAREd again as a
        cursor over payments: its Execute is not the SELECT 1 its Bind was
        decided as (it is unknown, which the shipped policy refuses).
        """

        def work(client):
            client.batch(codec.Query("BEGIN"))
            client.batch(codec.Parse("s", "SELECT 1 AS harmless", ()), codec.Bind("p", "s", (), (), ()), codec.Sync())
            client.batch(codec.Query("CLOSE p"))
            client.batch(codec.Query("DECLARE p CURSOR FOR SELECT id, amount FROM payments"))
            return client.batch(codec.Execute("p", 0), codec.Sync())

        answers = yield self.raw(work)
        self.assertEqual([m for m in answers if isinstance(m, codec.DataRow)], [], "the cursor's rows came back")
        self.assertEqual(errors(answers)[0][0], "42501")

    @inlineCallbacks
    def test_data_behind_a_slow_copy_is_not_buffered(self):
        """
        While the gateway waits to learn whether a COPY started, it stops
        reading: a client streaming CopyData behind a slow statement does not
        grow the gateway (the kernel's buffers fill instead).
        """
        import resource

        self.cluster.psql("CREATE TABLE sink (v text); GRANT ALL ON sink TO app_scram")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        def work(client):
            client.sock.sendall(codec.encode(codec.Query("SELECT pg_sleep(2); COPY sink FROM STDIN")))
            chunk = codec.encode(codec.CopyData.from_data(b"x" * 65000 + b"\n")) * 16
            client.sock.settimeout(0.5)
            sent = 0
            try:
                while sent < 300 << 20:
                    client.sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass  # the gateway stopped reading: the send buffer is full
            time.sleep(2.5)  # the COPY starts: the gateway reads (and sees the end) again
            return sent

        sent = yield self.raw(work)
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        self.assertLess(sent, 100 << 20, "the gateway kept reading")
        self.assertLess(grown_mb, 64, f"the gateway grew by {grown_mb:.0f} MB")


class CommitTests(_Case):
    @inlineCallbacks
    def test_failed_commit_is_recorded(self):
        """
        A deferred constraint failing at the Sync's commit rolls back an INSERT
        already recorded as succeeded: the failure is recorded too, as a
        failed sql.commit with the server's SQLSTATE.
        """

        def work(client):
            client.batch(codec.Query("CREATE TEMP TABLE d (id int UNIQUE DEFERRABLE INITIALLY DEFERRED)"))
            return client.batch(
                codec.Parse("", "INSERT INTO d VALUES (1), (1)", ()),
                codec.Bind("", "", (), (), ()),
                codec.Execute("", 0),
                codec.Sync(),
            )

        answers = yield self.raw(work)
        self.assertEqual(errors(answers)[0][0], "23505")
        [(start, end)] = self.actions("sql.commit")
        self.assertEqual((end["outcome"]["status"], end["outcome"]["code"]), ("failed", "23505"))


class ReachabilityTests(_Case):
    """
    A rule on public.payments protects the table, not a name (issue 11,
    item 5): ways to make another path to it are refused, and the rows stay.
    """

    @inlineCallbacks
    def test_other_paths_to_a_protected_table(self):
        self.cluster.psql(
            "CREATE TABLE other (id int); GRANT ALL ON other TO app_scram;"
            "CREATE TABLE parent (id int, amount int) PARTITION BY RANGE (id); ALTER TABLE parent OWNER TO app_scram;"
            "ALTER TABLE payments OWNER TO app_scram; GRANT CREATE ON SCHEMA public TO app_scram;"
        )
        attacks = [
            "CREATE TEMP VIEW v AS SELECT * FROM payments; DELETE FROM v WHERE id > 0",
            "CREATE VIEW v2 AS SELECT id, amount FROM (SELECT * FROM payments) p",
            "CREATE RULE r AS ON INSERT TO other DO ALSO DELETE FROM payments WHERE id > 0",
            "CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM payments WHERE id > 0; END",
            "CREATE FUNCTION f2() RETURNS void LANGUAGE plpgsql AS $$BEGIN DELETE FROM payments WHERE id > 0; END$$",
            "CREATE FUNCTION f3() RETURNS void LANGUAGE plpgsql AS $$BEGIN EXECUTE 'DELETE FROM pay' || 'ments'; END$$",
            "ALTER TABLE parent ATTACH PARTITION payments FOR VALUES FROM (0) TO (100)",
            "ALTER SCHEMA public RENAME TO elsewhere",
        ]

        def work(client):
            return [client.batch(codec.Query(sql)) for sql in attacks]

        answers = yield self.raw(work)
        for sql, answer in zip(attacks, answers):
            self.assertEqual(errors(answer)[0][0], "42501", sql)
        self.assertEqual(self.payments(), 5)
        self.assertEqual(self.count("SELECT count(*) FROM pg_inherits"), "0")
        self.assertEqual(self.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'public'"), "1")
