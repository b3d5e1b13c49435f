"""
The PostgreSQL front end with the real thing on both sides: a PostgreSQL 15
cluster started by the test (SCRAM and MD5 roles), the gateway in-process,
and the real `psql` and `pgbench` binaries as clients.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import struct
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase

from hoopgw.audit.search import search
from hoopgw.audit.verify import verify
from hoopgw.config import loads
from hoopgw.gateway import Gateway
from tests.integration._postgres import start_postgres
from tests.integration._process import run

PSQL = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
PGBENCH = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"


def require(program: str) -> None:
    if not os.path.exists(program):
        if os.environ.get("CI") == "true":
            raise AssertionError(f"{program} is missing under CI")
        raise SkipTest(f"{program} is not installed")


class PostgresProxyTests(TestCase):
    timeout = 120

    def setUp(self):
        require(PSQL)
        self.cluster = start_postgres(
            self,
            hba=[
                "host all app_scram 127.0.0.1/32 scram-sha-256",
                "host all app_md5 127.0.0.1/32 md5",
            ],
            roles={"app_scram": "scram-secret", "app_md5": "md5-secret"},
            settings={"password_encryption": "scram-sha-256"},
        )
        # The md5 role needs an MD5 verifier; the table belongs to both roles.
        self.cluster.psql(
            "SET password_encryption = 'md5'; ALTER ROLE app_md5 PASSWORD 'md5-secret';"
            "CREATE TABLE items (id int PRIMARY KEY, name text);"
            "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g;"
            "GRANT ALL ON items TO app_scram, app_md5;"
        )
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir()
        os.environ["HOOPGW_TEST_SCRAM"] = "scram-secret"
        os.environ["HOOPGW_TEST_MD5"] = "md5-secret"
        config = loads(
            f"""
[gateway]
data_dir = "data"
[listen]
postgres = "tcp:0:interface=127.0.0.1"
ssh = false
http = false
api = false
[[connections]]
name = "appdb"
kind = "postgres"
address = "127.0.0.1:{self.cluster.port}"
database = "postgres"
user = "app_scram"
password_env = "HOOPGW_TEST_SCRAM"
tls = "disable"
[[connections]]
name = "legacy"
kind = "postgres"
address = "127.0.0.1:{self.cluster.port}"
database = "postgres"
user = "app_md5"
password_env = "HOOPGW_TEST_MD5"
tls = "disable"
require_auth = ["md5"]
[[connections]]
name = "legacy-unlisted"
kind = "postgres"
address = "127.0.0.1:{self.cluster.port}"
database = "postgres"
user = "app_md5"
password_env = "HOOPGW_TEST_MD5"
tls = "disable"
""",
            source=None,
            base_dir=self.base,
        )
        self.gateway = Gateway(config, reactor=reactor)
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        self.port = self.gateway.listeners["postgres"].port.getHost().port
        self.token = self.gateway.identity.dev_issuer.issue("alice", ("dev",), 600)

    def psql(self, *args: str, database: str = "appdb", token: str | None = None, sslmode: str = "require"):
        env = {
            "PGPASSWORD": token or self.token,
            "PATH": os.environ.get("PATH", ""),
            "PGCONNECT_TIMEOUT": "10",
        }
        dsn = f"host=127.0.0.1 port={self.port} dbname={database} user=alice sslmode={sslmode}"
        return run([PSQL, "-X", "-A", "-t", dsn, *args], env=env)

    def records(self, event: str):
        return list(search(self.base / "data" / "audit", event=event))

    @inlineCallbacks
    def test_select_audited(self):
        """
        If psql runs a SELECT through the gateway (TLS, token as password,
        SCRAM to the server), it gets the server's rows, and the audit trail
        holds the statement with the identity and its outcome with the row count.
        """
        code, output = yield self.psql("-c", "SELECT count(*) FROM items WHERE id <= 42")
        self.assertEqual((code, output.strip()), (0, b"42"), output)
        [start] = [r for r in self.records("action.start") if r["action"]["kind"] == "sql.query"]
        self.assertEqual(start["action"]["input"], "SELECT count(*) FROM items WHERE id <= 42")
        self.assertEqual(start["identity"]["sub"], "alice")
        self.assertEqual(start["connection"], "appdb")
        self.assertEqual(start["action"]["attributes"]["sql.reads"], ["public.items"])
        [end] = [r for r in self.records("action.end") if r["action"]["id"] == start["action"]["id"]]
        self.assertEqual(end["outcome"]["status"], "succeeded")
        self.assertEqual(end["outcome"]["rows"], 1)
        [session] = self.records("session.start")
        self.assertEqual(session["client"]["application_name"], "psql")

    @inlineCallbacks
    def test_md5_backend(self):
        """If the connection's role uses MD5, the gateway authenticates with MD5 and the query runs."""
        code, output = yield self.psql("-c", "SELECT current_user", database="legacy")
        self.assertEqual((code, output.strip()), (0, b"app_md5"), output)

    @inlineCallbacks
    def test_md5_refused_unless_required(self):
        """If the target asks for MD5 and the connection's require_auth does
        not list it (the default: SCRAM or nothing), psql is refused with
        the reason, no password proof is sent, and session.end says why."""
        code, output = yield self.psql("-c", "SELECT current_user", database="legacy-unlisted")
        self.assertNotEqual(code, 0)
        self.assertIn(b"asked for 'md5' authentication", output)
        self.assertIn(b"require_auth (scram-sha-256, none)", output)
        [end] = self.records("session.end")
        self.assertEqual(end["end"]["status"], "failed")
        self.assertIn("require_auth", end["end"]["error"])

    @inlineCallbacks
    def test_denied_statement_session_stays_usable(self):
        """
        If a statement is denied (DROP by the default policy), psql shows a
        42501 error naming the rule, the table still exists, and the same
        session goes on to run the next statement.
        """
        code, output = yield self.psql(
            "-v", "VERBOSITY=verbose", "-c", "DROP TABLE items", "-c", "SELECT count(*) FROM items"
        )
        self.assertIn(b"42501", output)
        self.assertIn(b"destructive DDL", output)
        self.assertIn(b"no-destructive-ddl", output)
        self.assertIn(b"\n100\n", b"\n" + output)
        self.assertEqual(self.cluster.psql("SELECT count(*) FROM items").strip(), "100")
        drops = [r for r in self.records("action.end") if r["outcome"]["status"] == "blocked"]
        self.assertEqual(len(drops), 1)

    @inlineCallbacks
    def test_dropped_column_is_a_drop(self):
        """ALTER TABLE ... DROP COLUMN loses the column's data: the rule against DROP refuses it, and the column stays."""
        code, output = yield self.psql("-v", "VERBOSITY=verbose", "-c", "ALTER TABLE items DROP COLUMN name")
        self.assertIn(b"no-destructive-ddl", output)
        self.assertEqual(self.cluster.psql("SELECT count(name) FROM items").strip(), "100")

    @inlineCallbacks
    def test_multi_statement_query_with_a_denied_statement(self):
        """
        If one statement of a multi-statement query is denied, nothing of the
        query runs: each statement has its own record, the denied one blocked
        by its rule, the others blocked as not run.
        """
        code, output = yield self.psql("-c", "INSERT INTO items VALUES (500, 'x'); DELETE FROM items")
        self.assertNotEqual(code, 0)
        self.assertIn(b"no-unbounded-writes", output)
        self.assertEqual(self.cluster.psql("SELECT count(*) FROM items").strip(), "100")
        starts = [r for r in self.records("action.start") if r["action"]["kind"] == "sql.query"]
        self.assertEqual(
            [(r["action"]["input"], r["decision"]["effect"]) for r in starts],
            [("INSERT INTO items VALUES (500, 'x')", "allow"), ("DELETE FROM items", "deny")],
        )

    @inlineCallbacks
    def test_bad_token_refused(self):
        """If the password is not a valid token, psql fails with 28P01 and an auth.failed record exists."""
        code, output = yield self.psql("-c", "SELECT 1", token="not-a-token")
        self.assertNotEqual(code, 0)
        self.assertIn(b"token rejected (malformed token)", output)
        [failed] = self.records("auth.failed")
        self.assertEqual(failed["reason"], "malformed token")

    @inlineCallbacks
    def test_plaintext_refused(self):
        """
        If the client does not use TLS, the gateway refuses before asking for
        the token (psql never sends it), and one request.refused record says
        who asked for what.
        """
        code, output = yield self.psql("-c", "SELECT 1", sslmode="disable")
        self.assertEqual(code, 2, output)
        self.assertIn(b"requires TLS", output)
        [record] = self.records("request.refused")
        self.assertEqual(
            (record["protocol"], record["code"], record["user"], record["request"]),
            ("postgres", "28000", "alice", {"message": "StartupMessage", "database": "appdb"}),
        )
        self.assertNotIn(self.token, json.dumps(record))
        self.assertEqual(self.records("auth.failed") + self.records("session.*"), [])

    @inlineCallbacks
    def test_pgbench_prepared(self):
        """
        If pgbench runs its select-only script with the extended protocol
        (-M prepared), every transaction succeeds, and each Execute is an
        audited sql.execute action carrying its Bind parameter.
        """
        require(PGBENCH)
        self.cluster._run("pgbench", "-i", "-s", "1", "-q", "-h", str(self.cluster.socket_dir),
                          "-p", str(self.cluster.port), "-U", "postgres", "postgres")
        self.cluster.psql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_scram")
        env = {"PGPASSWORD": self.token, "PGSSLMODE": "require", "PATH": os.environ.get("PATH", "")}
        code, output = yield run(
            [PGBENCH, "-n", "-S", "-M", "prepared", "-t", "20", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "alice", "appdb"],
            env=env,
        )
        self.assertEqual(code, 0, output)
        self.assertIn(b"number of transactions actually processed: 20/20", output)
        executes = [r for r in self.records("action.start") if r["action"]["kind"] == "sql.execute"]
        self.assertEqual(len(executes), 20)
        self.assertIn("SELECT abalance FROM pgbench_accounts WHERE aid = $1", executes[0]["action"]["input"])
        self.assertEqual(len(executes[0]["action"]["details"]["parameters"]), 1)
        ends = [r for r in self.records("action.end") if r["action"]["kind"] == "sql.execute"]
        self.assertEqual({r["outcome"]["status"] for r in ends}, {"succeeded"})

    @inlineCallbacks
    def test_log_verifies_after_sessions(self):
        """After sessions through the gateway and a clean stop, `audit verify` accepts the log."""
        yield self.psql("-c", "SELECT 1")
        yield self.gateway.stopService()
        audit = self.base / "data" / "audit"
        report = verify(audit, (audit / "audit.vkey").read_text())
        self.assertTrue(report.ok, report.first_error)
        [end] = self.records("session.end")
        self.assertGreater(end["end"]["bytes_in"], 0)


def closed_port() -> int:
    """A loopback port nothing listens on: bound, read, closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def login_error(port: int, token: str, database: str) -> dict[str, str]:
    """
    Log in through the gateway over TLS as libpq does (blocking: run it in a
    thread) and return the fields of the ErrorResponse that ends the
    login (libpq prints no SQLSTATE for a failed connection).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        raw.sendall(struct.pack(">ii", 8, 80877103))
        assert raw.recv(1) == b"S"
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(raw) as sock:
            body = struct.pack(">i", 196608) + b"user\0alice\0database\0" + database.encode() + b"\0\0"
            sock.sendall(struct.pack(">i", len(body) + 4) + body)
            received = b""
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
                if received[:1] == b"R" and len(received) >= 9:
                    received = b""
                    password = token.encode() + b"\0"
                    sock.sendall(b"p" + struct.pack(">i", len(password) + 4) + password)
    assert received[:1] == b"E", received
    fields = received[5:].split(b"\0")
    return {f[:1].decode(): f[1:].decode() for f in fields if f}


class TargetDownTests(TestCase):
    """A connection whose target is down: the client, the trail and the gateway's log each say so, once."""

    timeout = 60

    def setUp(self):
        require(PSQL)
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir()
        self.target_port = closed_port()
        config = loads(
            f"""
[gateway]
data_dir = "data"
[listen]
postgres = "tcp:0:interface=127.0.0.1"
ssh = false
http = false
api = false
[[connections]]
name = "down"
kind = "postgres"
address = "127.0.0.1:{self.target_port}"
database = "postgres"
user = "app"
tls = "disable"
""",
            source=None,
            base_dir=self.base,
        )
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.gateway = Gateway(config, reactor=reactor)
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        self.port = self.gateway.listeners["postgres"].port.getHost().port
        self.token = self.gateway.identity.dev_issuer.issue("alice", ("dev",), 600)

    @inlineCallbacks
    def test_connection_refused(self):
        """
        If the target refuses the connection (nothing listens on its port),
        psql gets FATAL 08001 naming the address that refused, session.end
        says failed with that reason, and the gateway logs one warning line
        saying so: no traceback, nothing critical.
        """
        env = {"PGPASSWORD": self.token, "PATH": os.environ.get("PATH", ""), "PGCONNECT_TIMEOUT": "10"}
        dsn = f"host=127.0.0.1 port={self.port} dbname=down user=alice sslmode=require"
        code, output = yield run([PSQL, "-X", "-A", "-t", "-v", "VERBOSITY=verbose", dsn, "-c", "SELECT 1"], env=env)
        self.assertNotEqual(code, 0)
        why = f"connection refused by 127.0.0.1:{self.target_port}"
        self.assertIn(f"FATAL:  cannot connect to the target: {why}".encode(), output)
        self.assertNotIn(b"internal error", output)
        [end] = search(self.base / "data" / "audit", event="session.end")
        self.assertEqual((end["end"]["status"], end["end"]["error"]), ("failed", why))
        # The SQLSTATE, which psql does not print for a failed connection.
        error = yield deferToThread(login_error, self.port, self.token, "down")
        self.assertEqual((error["S"], error["C"]), ("FATAL", "08001"))
        self.assertEqual(error["M"], f"cannot connect to the target: {why}")
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual([e for e in self.events if "log_failure" in e], [])
        levels = [e["log_level"] for e in self.events]
        self.assertNotIn(LogLevel.critical, levels)
        self.assertNotIn(LogLevel.error, levels)
        lines = [formatEvent(e) for e in self.events if "cannot connect to the target" in (e.get("log_format") or "")]
        self.assertEqual(len(lines), 2)  # one per login: psql's and the raw one
        self.assertIn(f"(down): cannot connect to the target: {why}", lines[0])
        self.assertNotIn("\n", lines[0])
