"""
Real clients through the PostgreSQL front end, beyond the basics of
test_postgres_proxy: cancel (Ctrl-C in psql, spoofed keys), COPY both ways,
the extended protocol driven by psycopg (parameters, binary results,
pipelines, executemany), LISTEN/NOTIFY and notices, TLS to the target, and
a large result streamed with bounded memory.

psycopg is blocking, so it runs in a thread while the in-process gateway's
reactor keeps running; so do the superuser queries used to wait for a
statement to be running on the server.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from hoopgw.audit.search import search
from hoopgw.config import loads
from hoopgw.gateway import Gateway, shipped_policies
from hoopgw.model import Identity
from tests.integration._postgres import PostgresCluster, start_postgres
from tests.integration._process import run, spawn, start_tripwire
from tests.integration.test_postgres_proxy import PSQL, require

try:
    import psycopg
except ImportError:  # pragma: no cover - depends on the environment
    psycopg = None  # type: ignore[assignment]


def require_psycopg() -> None:
    if psycopg is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("psycopg is missing under CI (pip install -e .[test])")
        raise SkipTest("psycopg is not installed")


@inlineCallbacks
def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0, interval: float = 0.05):
    """
    Poll C{condition} (a value or a Deferred of one) until it is truthy;
    fires with that value, fails after C{timeout} seconds naming C{what}.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = yield condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        yield deferLater(reactor, interval, lambda: None)


def running(cluster: PostgresCluster, query: str) -> Callable[[], Deferred]:
    """A condition: C{query} is running on the server (as the gateway's role)."""
    literal = query.replace("'", "''")
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
        f"AND usename LIKE 'app_%' AND query = '{literal}'"
    )
    return lambda: deferToThread(lambda: cluster.psql(sql).strip() != "0")


def raw_cancel(port: int, pid: int, secret: bytes) -> bytes:
    """
    Send a CancelRequest over a plain connection, as libpq's PQcancel does
    (no SSLRequest first), and read until the gateway closes.  Blocking:
    run it in a thread.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack(">iii", 16, 80877102, pid) + secret)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        return answer


def vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


# -- a test CA -----------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(directory: Path) -> dict[str, Path]:
    """
    A CA and two server certificates it signed: "good" for localhost and
    127.0.0.1, "wrong" for wrong.example only.  Returns the PEM file paths.
    """
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("hoopgw test CA"))
        .issuer_name(_name("hoopgw test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": directory / "ca.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    sans = {
        "good": [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        "wrong": [x509.DNSName("wrong.example")],
    }
    for label, names in sans.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(str(names[0].value)))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        paths[f"{label}.crt"] = directory / f"{label}.crt"
        paths[f"{label}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{label}.key"] = directory / f"{label}.key"
        paths[f"{label}.key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return paths


# -- the fixture ---------------------------------------------------------------


def deny_every_review(reviews: Any) -> None:
    """Have every review opened be denied by an approver it names, on the next turn of the reactor."""

    def deny(review: Any) -> None:
        kind, _, name = review.requirement.approvers[0].partition(":")
        approver = Identity("test", name if kind == "user" else "test-reviewer", (name,) if kind == "group" else ())
        reactor.callLater(0, lambda: reviews.deny(review.id, approver, "denied by the test").addErrback(lambda _: None))

    reviews.observers.append(deny)


class _GatewayCase(TestCase):
    """A PostgreSQL cluster with an items table, and the gateway in front of it."""

    timeout = 180

    def start(
        self,
        *,
        tls: str = "disable",
        ca_file: Path | None = None,
        ssl: tuple[str, str] | None = None,
        extra_policy: str | None = None,
        only_policy: str | None = None,
        api: bool = False,
        extra_config: str = "",
        listeners: tuple[str, ...] = (),
    ) -> None:
        """
        Start the cluster and the gateway (the shipped policy, plus
        C{extra_policy}'s rules when given; C{only_policy} instead of it;
        C{extra_config}'s tables added to the configuration; C{listeners}:
        which of ssh and http listen too).
        """
        require(PSQL)
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)
        policies = ""
        if extra_policy is not None or only_policy is not None:
            folder = self.base / "policies"
            folder.mkdir()
            if only_policy is None:
                shutil.copy(shipped_policies() / "default.toml", folder / "default.toml")
            (folder / "extra.toml").write_text(extra_policy or only_policy or "")
            policies = f'policies = "{folder}"'

        method = "hostssl" if ssl is not None else "host"
        self.cluster = start_postgres(
            self,
            hba=[f"{method} all app_scram 127.0.0.1/32 scram-sha-256"],
            roles={"app_scram": "scram-secret"},
            settings={"password_encryption": "scram-sha-256", "log_connections": "on"},
            ssl=ssl,
        )
        self.cluster.psql(
            "CREATE TABLE items (id int PRIMARY KEY, name text);"
            "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g;"
            "GRANT ALL ON items TO app_scram;"
        )
        os.environ["HOOPGW_TEST_SCRAM"] = "scram-secret"
        ca = f'ca_file = "{ca_file}"' if ca_file is not None else ""
        config = loads(
            f"""
[gateway]
data_dir = "data"
{policies}
[listen]
postgres = "tcp:0:interface=127.0.0.1"
ssh = {'"tcp:0:interface=127.0.0.1"' if "ssh" in listeners else 'false'}
http = {'"tcp:0:interface=127.0.0.1"' if "http" in listeners else 'false'}
api = {'"tcp:0:interface=127.0.0.1"' if api else 'false'}
[[connections]]
name = "appdb"
kind = "postgres"
address = "127.0.0.1:{self.cluster.port}"
database = "postgres"
user = "app_scram"
password_env = "HOOPGW_TEST_SCRAM"
tls = "{tls}"
{ca}
{extra_config}
""",
            source=None,
            base_dir=self.base,
        )
        self.gateway = Gateway(config, reactor=reactor)
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        self.port = self.gateway.listeners["postgres"].port.getHost().port
        self.token = self.gateway.identity.dev_issuer.issue("alice", ("dev",), 600)
        if self.auto_deny:
            deny_every_review(self.gateway.reviews)

    # Statements the shipped policy sends to review are denied at once by a
    # test approver (these tests are about what is refused, not about holding).
    auto_deny = True

    def env(self) -> dict[str, str]:
        return {"PGPASSWORD": self.token, "PATH": os.environ.get("PATH", ""), "PGCONNECT_TIMEOUT": "10"}

    def psql_argv(self, *args: str) -> list[str]:
        dsn = f"host=127.0.0.1 port={self.port} dbname=appdb user=alice sslmode=require"
        return [PSQL, "-X", "-A", "-t", dsn, *args]

    def psql(self, *args: str, cwd: str | None = None) -> Deferred:
        return run(self.psql_argv(*args), env=self.env(), cwd=cwd)

    def connect(self, **options: Any) -> psycopg.Connection:
        """A psycopg connection through the gateway (blocking: call in a thread)."""
        return psycopg.connect(
            host="127.0.0.1", port=self.port, dbname="appdb", user="alice",
            password=self.token, sslmode="require", connect_timeout=10, **options,
        )

    def records(self, event: str) -> list[dict[str, Any]]:
        return list(search(self.base / "data" / "audit", event=event))

    def actions(self, kind: str) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """(action.start, action.end or None) of every action of C{kind}, in order."""
        ends = {r["action"]["id"]: r for r in self.records("action.end")}
        return [
            (start, ends.get(start["action"]["id"]))
            for start in self.records("action.start")
            if start["action"]["kind"] == kind
        ]

    def count(self, sql: str) -> str:
        return self.cluster.psql(sql).strip()


class CancelTests(_GatewayCase):
    def setUp(self):
        self.start()

    @inlineCallbacks
    def test_ctrl_c_in_psql_cancels_the_query(self):
        """
        If psql gets SIGINT while its query runs on the target, it sends the
        gateway's key in a plaintext CancelRequest; the gateway cancels that
        query on the target with the target's key: psql reports "canceling
        statement due to user request" at once, the cancel is an audited
        sql.cancel action, and the query's outcome is failed with 57014.
        """
        proc = spawn(self.psql_argv("-c", "SELECT pg_sleep(30)"), marker=None, env=self.env())
        yield wait_until(running(self.cluster, "SELECT pg_sleep(30)"), "pg_sleep to run on the target")
        sent = time.monotonic()
        proc.signal("INT")
        code = yield proc.ended
        self.assertLess(time.monotonic() - sent, 10)
        self.assertNotEqual(code, 0)
        self.assertIn(b"canceling statement due to user request", proc.output)
        [(start, end)] = self.actions("sql.cancel")
        self.assertEqual(start["decision"]["effect"], "allow")
        self.assertEqual(end["outcome"]["status"], "succeeded")
        [(query, outcome)] = self.actions("sql.query")
        self.assertEqual(query["action"]["input"], "SELECT pg_sleep(30)")
        self.assertEqual((outcome["outcome"]["status"], outcome["outcome"]["code"]), ("failed", "57014"))
        self.assertEqual(self.records("auth.failed"), [])

    @inlineCallbacks
    def test_cancel_over_tls(self):
        """
        If a client cancels over TLS (libpq 17+ PQcancelCreate: SSLRequest,
        then the CancelRequest), the query is cancelled just the same, and
        the connection runs the next query.
        """
        require_psycopg()
        conn = yield deferToThread(self.connect, autocommit=True)
        self.addCleanup(conn.close)
        query = deferToThread(conn.execute, "SELECT pg_sleep(30)")
        yield wait_until(running(self.cluster, "SELECT pg_sleep(30)"), "pg_sleep to run on the target")
        yield deferToThread(conn.cancel_safe)
        failure = yield self.assertFailure(query, psycopg.errors.QueryCanceled)
        self.assertIn("canceling statement due to user request", str(failure))
        [(_, end)] = self.actions("sql.cancel")
        self.assertEqual(end["outcome"]["status"], "succeeded")
        # The session goes on after the cancel.
        row = yield deferToThread(lambda: conn.execute("SELECT count(*) FROM items").fetchone())
        self.assertEqual(row, (100,))

    @inlineCallbacks
    def test_spoofed_key_cancels_nothing(self):
        """
        If a CancelRequest carries a wrong secret for a real (gateway) process
        id, or an unknown process id, nothing is cancelled: the running query
        completes, each attempt is an auth.failed record, and no sql.cancel
        action exists.
        """
        require_psycopg()
        conn = yield deferToThread(self.connect, autocommit=True)
        self.addCleanup(conn.close)
        pid = conn.info.backend_pid  # the gateway's process id, from its BackendKeyData
        query = deferToThread(lambda: conn.execute("SELECT pg_sleep(1.5), 'done'").fetchone())
        yield wait_until(running(self.cluster, "SELECT pg_sleep(1.5), 'done'"), "pg_sleep to run on the target")
        answer = yield deferToThread(raw_cancel, self.port, pid, b"\x00\x00\x00\x00")
        self.assertEqual(answer, b"")
        yield deferToThread(raw_cancel, self.port, pid ^ 0x5A5A, b"\x01\x02\x03\x04")
        failed = yield wait_until(lambda: len(self.records("auth.failed")) == 2 and self.records("auth.failed"),
                                  "two auth.failed records")
        self.assertEqual({(r["method"], r["reason"]) for r in failed}, {("cancel", "cancel request with an unknown key")})
        row = yield query
        self.assertEqual(row[1], "done")
        self.assertEqual(self.actions("sql.cancel"), [])


class ShutdownTests(_GatewayCase):
    """A gateway that stops tells each psql why, as a server shut down by its administrator does."""

    FATAL = (
        b"FATAL:  terminating connection due to administrator command "
        b"(hoopgw: the gateway is shutting down)"
    )

    def setUp(self):
        self.start()

    @inlineCallbacks
    def test_running_statement(self):
        """
        If the gateway stops while psql waits for a statement, psql prints
        FATAL 57P01 with the reason; the statement is cancelled on the
        target (its outcome unknown), and session.end says terminated.
        """
        proc = spawn(self.psql_argv("-c", "SELECT pg_sleep(30)"), marker=None, env=self.env())
        yield wait_until(running(self.cluster, "SELECT pg_sleep(30)"), "pg_sleep to run on the target")
        yield self.gateway.stopService()
        code = yield proc.ended
        self.assertNotEqual(code, 0)
        self.assertIn(self.FATAL, proc.output)
        self.assertNotIn(b"SSL SYSCALL error", proc.output)
        [end] = self.records("session.end")
        self.assertEqual((end["end"]["status"], end["end"]["error"]), ("terminated", "the gateway is shutting down"))
        [(_, outcome)] = self.actions("sql.query")
        self.assertEqual(outcome["outcome"]["status"], "failed")
        self.assertIn("outcome unknown", outcome["outcome"]["error"])
        still = running(self.cluster, "SELECT pg_sleep(30)")
        yield wait_until(lambda: still().addCallback(lambda yes: not yes), "pg_sleep to be cancelled", timeout=10)

    @inlineCallbacks
    def test_idle_session(self):
        """If psql is connected but idle, it reads the FATAL with its next statement."""
        proc = spawn(self.psql_argv(), marker=None, env=self.env())
        answered = proc.wait_for(b"connected\n")
        proc.transport.write(b"SELECT 'connected';\n")
        yield answered
        yield self.gateway.stopService()
        proc.transport.write(b"SELECT 'after the stop';\n")
        proc.transport.closeStdin()
        code = yield proc.ended
        self.assertNotEqual(code, 0)
        self.assertIn(self.FATAL, proc.output)
        self.assertNotIn(b"after the stop\n", proc.output)
        [end] = self.records("session.end")
        self.assertEqual(end["end"]["status"], "terminated")


    @inlineCallbacks
    def test_client_still_logging_in(self):
        """
        A client the gateway has asked for its password when it stops reads
        FATAL 57P01 with the reason too (no session exists yet to tell it).
        """
        import ssl

        def ask_for_password() -> ssl.SSLSocket:
            raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            raw.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
            self.assertEqual(raw.recv(1), b"S")
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            tls = context.wrap_socket(raw)
            body = struct.pack("!i", 196608) + b"user\0alice\0database\0appdb\0\0"
            tls.sendall(struct.pack("!i", len(body) + 4) + body)
            self.assertEqual(tls.recv(9)[:1], b"R")  # AuthenticationCleartextPassword
            return tls

        def read_all(tls: ssl.SSLSocket) -> bytes:
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
            return data

        tls = yield deferToThread(ask_for_password)
        self.addCleanup(tls.close)
        reading = deferToThread(read_all, tls)
        yield self.gateway.stopService()
        data = yield reading
        self.assertEqual(data[:1], b"E")
        self.assertIn(b"C57P01\0", data)
        self.assertIn(b"terminating connection due to administrator command (hoopgw: the gateway is shutting down)", data)


class CopyTests(_GatewayCase):
    def setUp(self):
        self.start()

    @inlineCallbacks
    def test_copy_from_and_to_files(self):
        """
        If psql runs \\copy FROM a file and \\copy TO a file through the
        gateway, the rows reach the table and come back byte for byte; each
        COPY is an audited sql.copy action with the row count of its
        CommandComplete tag.
        """
        work = Path(self.mktemp()).resolve()
        work.mkdir()
        lines = "".join(f"{i}\tcopied {i}\n" for i in range(1001, 1501))
        (work / "in.tsv").write_text(lines)
        code, output = yield self.psql("-c", "\\copy items FROM 'in.tsv'", cwd=str(work))
        self.assertEqual(code, 0, output)
        self.assertEqual(self.count("SELECT count(*) FROM items WHERE name LIKE 'copied %'"), "500")
        code, output = yield self.psql(
            "-c", "\\copy (SELECT * FROM items WHERE id > 1000 ORDER BY id) TO 'out.tsv'", cwd=str(work)
        )
        self.assertEqual(code, 0, output)
        self.assertEqual((work / "out.tsv").read_text(), lines)
        code, output = yield self.psql("-c", "\\copy items TO 'all.tsv'", cwd=str(work))
        self.assertEqual(code, 0, output)
        self.assertEqual(len((work / "all.tsv").read_text().splitlines()), 600)
        copies = self.actions("sql.copy")
        self.assertEqual(
            [(start["action"]["input"], end["outcome"]["status"], end["outcome"]["rows"]) for start, end in copies],
            [
                ("COPY  items FROM STDIN", "succeeded", 500),
                ("COPY  ( SELECT * FROM items WHERE id > 1000 ORDER BY id ) TO STDOUT", "succeeded", 500),
                ("COPY  items TO STDOUT", "succeeded", 600),
            ],
        )

    @inlineCallbacks
    def test_copy_query_to_stdout(self):
        """If psql runs COPY (SELECT ...) TO STDOUT, its output is the server's, and the COPY is audited with its rows."""
        code, output = yield self.psql("-c", "COPY (SELECT id, name FROM items WHERE id <= 3 ORDER BY id) TO STDOUT")
        self.assertEqual((code, output), (0, b"1\titem 1\n2\titem 2\n3\titem 3\n"))
        [(start, end)] = self.actions("sql.copy")
        self.assertEqual(start["action"]["attributes"]["sql.reads"], ["public.items"])
        self.assertEqual((end["outcome"]["status"], end["outcome"]["rows"]), ("succeeded", 3))

    @inlineCallbacks
    def test_copy_from_failing_on_the_server(self):
        """
        If a COPY FROM fails on the server half way (a duplicate key), psql
        gets the server's error, nothing is loaded, the action's outcome is
        failed with 23505, and the session goes on.
        """
        work = Path(self.mktemp()).resolve()
        work.mkdir()
        (work / "dup.tsv").write_text("".join(f"{i}\tx\n" for i in range(2001, 3001)) + "5\tclash\n")
        _, output = yield self.psql("-c", "\\copy items FROM 'dup.tsv'", "-c", "SELECT count(*) FROM items",
                                    cwd=str(work))
        self.assertIn(b"duplicate key value", output)
        self.assertIn(b"\n100\n", b"\n" + output)
        [(_, end)] = self.actions("sql.copy")
        self.assertEqual((end["outcome"]["status"], end["outcome"]["code"]), ("failed", "23505"))


class DriverTests(_GatewayCase):
    """The extended protocol as a real driver (psycopg 3 on libpq) speaks it."""

    def setUp(self):
        require_psycopg()
        self.start()

    def executes(self) -> list[tuple[str, list[Any], str | None, int | None]]:
        """(statement, parameters, status, rows) of every sql.execute action."""
        return [
            (
                start["action"]["input"],
                start["action"].get("details", {}).get("parameters"),
                end and end["outcome"]["status"],
                end and end["outcome"].get("rows"),
            )
            for start, end in self.actions("sql.execute")
        ]

    @inlineCallbacks
    def test_parameters_and_binary_results(self):
        """
        If psycopg runs parameterised queries, with text and binary results,
        it gets the server's values, and each execution is an sql.execute
        action carrying its parameters.
        """

        def work():
            with self.connect(autocommit=True) as conn:
                cur = conn.cursor()
                text = cur.execute("SELECT id, name FROM items WHERE id = %s", (7,)).fetchall()
                binary = cur.execute(
                    "SELECT id, name, %s::numeric FROM items WHERE id BETWEEN %s AND %s ORDER BY id",
                    ("1.5", 8, 9), binary=True,
                ).fetchall()
                return text, binary

        text, binary = yield deferToThread(work)
        self.assertEqual(text, [(7, "item 7")])
        self.assertEqual([(r[0], r[1], str(r[2])) for r in binary], [(8, "item 8", "1.5"), (9, "item 9", "1.5")])
        executes = self.executes()
        # psycopg sends a Python int as a binary int2: recorded as base64 of the wire bytes.
        self.assertEqual(executes[0], ("SELECT id, name FROM items WHERE id = $1", [{"base64": "AAc="}], "succeeded", 1))
        statement, parameters, status, rows = executes[1]
        self.assertEqual((statement, status, rows),
                         ("SELECT id, name, $1::numeric FROM items WHERE id BETWEEN $2 AND $3 ORDER BY id",
                          "succeeded", 2))
        self.assertEqual(parameters, ["1.5", {"base64": "AAg="}, {"base64": "AAk="}])

    @inlineCallbacks
    def test_executemany(self):
        """If psycopg runs executemany (pipelined), every row is inserted and each execution is audited with 1 row."""

        def work():
            with self.connect() as conn:
                conn.cursor().executemany(
                    "INSERT INTO items (id, name) VALUES (%s, %s)", [(300 + i, f"many {i}") for i in range(20)]
                )

        yield deferToThread(work)
        self.assertEqual(self.count("SELECT count(*) FROM items WHERE name LIKE 'many %'"), "20")
        inserts = [e for e in self.executes() if e[0].startswith("INSERT")]
        self.assertEqual(len(inserts), 20)
        self.assertEqual({(e[2], e[3]) for e in inserts}, {("succeeded", 1)})
        self.assertEqual(inserts[3][1], [{"base64": "AS8="}, "many 3"])  # 303 as a binary int2

    @inlineCallbacks
    def test_pipeline_with_a_denied_statement(self):
        """
        If a pipeline holds a denied statement, the driver raises a 42501
        error naming the rule for it; statements synced before it are
        committed; those after the previous Sync are rolled back and the ones
        after it are not run, exactly as for a server error at that point;
        and the connection stays usable.
        """

        def work():
            with self.connect(autocommit=True) as conn:
                error = None
                try:
                    with conn.pipeline() as p:
                        conn.execute("INSERT INTO items VALUES (%s, %s)", (201, "synced"))
                        p.sync()
                        conn.execute("INSERT INTO items VALUES (%s, %s)", (202, "rolled back"))
                        conn.execute("DROP TABLE items")
                        conn.execute("INSERT INTO items VALUES (%s, %s)", (203, "not run"))
                except psycopg.Error as e:
                    error = e
                after = conn.execute("SELECT count(*) FROM items").fetchone()[0]
                return error, after

        error, after = yield deferToThread(work)
        self.assertIsInstance(error, psycopg.errors.InsufficientPrivilege)
        self.assertEqual(error.sqlstate, "42501")
        self.assertIn("destructive DDL", error.diag.message_primary)
        self.assertIn("no-destructive-ddl", error.diag.message_detail)
        self.assertEqual(after, 101)
        self.assertEqual(self.count("SELECT string_agg(name, ',') FROM items WHERE id > 200"), "synced")
        executes = [(e[0], e[2]) for e in self.executes()]
        # The last SELECT, without parameters, is a simple Query; the INSERT
        # after the refusal is not sent (the server would skip it to Sync).
        self.assertEqual(len(executes), 3, executes)
        self.assertEqual(executes[0], ("INSERT INTO items VALUES ($1, $2)", "succeeded"))
        # executes[1] completed on the server before the implicit transaction
        # it was in was rolled back; its outcome is the server's answer to it.
        self.assertEqual(executes[2], ("DROP TABLE items", "blocked"))


class AsyncMessageTests(_GatewayCase):
    def setUp(self):
        self.start()

    @inlineCallbacks
    def test_notification_reaches_listener(self):
        """
        If a client LISTENs through the gateway and another session NOTIFYs
        the channel, the notification (channel and payload) reaches the client.
        """
        require_psycopg()

        def work():
            with self.connect(autocommit=True) as conn:
                conn.execute("LISTEN hoopgw_events")
                self.cluster.psql("NOTIFY hoopgw_events, 'hello through the gateway'")
                return [(n.channel, n.payload) for n in conn.notifies(timeout=20, stop_after=1)]

        received = yield deferToThread(work)
        self.assertEqual(received, [("hoopgw_events", "hello through the gateway")])

    @inlineCallbacks
    def test_notice_reaches_psql(self):
        """If a function raises a NOTICE, psql prints it, and the statement's result follows."""
        self.cluster.psql(
            "CREATE FUNCTION hoopgw_notice() RETURNS int LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE NOTICE 'hello from the server'; RETURN 42; END $$"
        )
        code, output = yield self.psql("-c", "SELECT hoopgw_notice()")
        self.assertEqual(code, 0, output)
        self.assertIn(b"NOTICE:  hello from the server", output)
        self.assertIn(b"42\n", output)


class TargetTLSTests(_GatewayCase):
    """The gateway's connection to the target over TLS, verified or not, as the connection says."""

    def setUp(self):
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        self.certs = make_ca(directory)

    def serve(self, certificate: str, tls: str) -> None:
        """Start a cluster serving C{certificate} ("good" or "wrong") over TLS only, and the gateway."""
        certs = self.certs
        self.start(tls=tls, ca_file=certs["ca"], ssl=(str(certs[f"{certificate}.crt"]), str(certs[f"{certificate}.key"])))

    @inlineCallbacks
    def test_verify_full_with_the_right_certificate(self):
        """If the target's certificate is signed by ca_file and names 127.0.0.1, verify-full connects over TLS."""
        self.serve("good", "verify-full")
        code, output = yield self.psql("-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        self.assertEqual((code, output), (0, b"t\n"))

    @inlineCallbacks
    def test_verify_full_refuses_a_wrong_host_name(self):
        """
        If the target's certificate is signed by ca_file but names another
        host, verify-full refuses it during the handshake: psql gets a FATAL
        saying the certificate does not match, the target never receives a
        start-up message, and the session ends failed with no action.
        """
        self.serve("wrong", "verify-full")
        code, output = yield self.psql("-v", "VERBOSITY=verbose", "-c", "SELECT 1")
        self.assertNotEqual(code, 0)
        self.assertIn(b"FATAL:  cannot connect to the target", output)
        self.assertIn(b"the target's TLS certificate does not name 127.0.0.1 (tls = 'verify-full')", output)
        self.assertNotIn(b"scram-secret", output)
        log = yield self.cluster.logged("could not accept SSL connection")
        self.assertIn("could not accept SSL connection", log)
        self.assertNotIn("user=app_scram", self.cluster.log())
        [end] = self.records("session.end")
        self.assertEqual(end["end"]["status"], "failed")
        self.assertEqual(self.records("action.start"), [])

    @inlineCallbacks
    def test_verify_full_refuses_an_unknown_ca(self):
        """If the target's certificate is signed by a CA other than ca_file, verify-full refuses it and says so."""
        other = Path(self.mktemp()).resolve()
        other.mkdir(parents=True)
        self.certs.update({k: v for k, v in make_ca(other).items() if k.startswith("good.")})
        self.serve("good", "verify-full")
        code, output = yield self.psql("-c", "SELECT 1")
        self.assertNotEqual(code, 0)
        self.assertIn(b"TLS handshake with the target failed (tls = 'verify-full'): ", output)
        self.assertIn(b"certificate verify failed", output)
        self.assertNotIn("user=app_scram", self.cluster.log())

    @inlineCallbacks
    def test_require_does_not_verify(self):
        """If the connection says tls = "require", the gateway encrypts without checking the certificate, as libpq does."""
        self.serve("wrong", "require")
        code, output = yield self.psql("-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        self.assertEqual((code, output), (0, b"t\n"))


class WrongKindTests(_GatewayCase):
    """
    A database name that names a connection of another kind: refused at
    start-up with what the client can act on, one session.refused record,
    and the target never reached.  Whom policy does not let open it learns
    nothing of its kind.
    """

    def setUp(self):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from twisted.conch.ssh.keys import Key

        host_key = Key(Ed25519PrivateKey.generate()).public().toString("OPENSSH").decode("ascii")
        self.ssh_port, self.ssh_target = start_tripwire(self)
        self.http_port, self.http_target = start_tripwire(self)
        self.start(
            extra_config=f"""
[[connections]]
name = "web1"
kind = "ssh"
address = "127.0.0.1:{self.ssh_port}"
user = "deploy"
password_env = "HOOPGW_TEST_SCRAM"
host_key = "{host_key}"
[[connections]]
name = "api"
kind = "http"
upstream = "http://127.0.0.1:{self.http_port}"
[[connections]]
name = "secret-web"
kind = "ssh"
address = "127.0.0.1:{self.ssh_port}"
user = "deploy"
password_env = "HOOPGW_TEST_SCRAM"
host_key = "{host_key}"
[[connections]]
name = "secret-db"
kind = "postgres"
address = "127.0.0.1:{self.ssh_port}"
database = "postgres"
user = "app_scram"
tls = "disable"
""",
            extra_policy='[[rule]]\nname = "no-secrets"\neffect = "deny"\nconnections = ["secret-*"]\n'
            'actions = ["session.open"]\n',
        )
        self.before = len(self.all_records())
        self.addCleanup(self.nothing_reached)

    def all_records(self) -> list[dict[str, Any]]:
        return list(search(self.base / "data" / "audit"))

    def written(self) -> list[dict[str, Any]]:
        """The records written since the gateway started."""
        return self.all_records()[self.before:]

    def nothing_reached(self) -> None:
        self.assertEqual((self.ssh_target.peers, self.http_target.peers), ([], []))
        self.assertEqual(self.cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_scram'").strip(), "0")

    def psql_to(self, dbname: str) -> Deferred:
        dsn = f"host=127.0.0.1 port={self.port} dbname='{dbname}' user=alice sslmode=require"
        return run([PSQL, "-X", "-A", "-t", dsn, "-c", "SELECT 1"], env=self.env())

    def sqlstate(self, dbname: str) -> Deferred:
        """
        The SQLSTATE of the FATAL a start-up naming C{dbname} gets (libpq
        does not give it for a failed connection, so a raw client reads it).
        """

        def attempt():
            client = RawClient(self.port, self.token, database=dbname)
            client.close()
            [error] = client.startup_answers
            self.assertEqual(error.severity, "FATAL")
            return error.code

        return deferToThread(attempt)

    @inlineCallbacks
    def test_ssh_connection(self):
        """
        psql dbname=<an SSH connection>: FATAL 3D000 naming both kinds, exit
        status 2; one session.refused record, decided by the gateway itself.
        """
        code, output = yield self.psql_to("web1")
        self.assertEqual(code, 2, output)
        self.assertIn(b'FATAL:  connection "web1" is of kind ssh, not postgres\n', output)
        [record] = self.written()
        self.assertEqual(record["event"], "session.refused")
        self.assertEqual(
            (record["connection"], record["protocol"], record["identity"]["sub"], record["client"]["user"]),
            ("web1", "postgres", "alice", "alice"),
        )
        message = 'connection "web1" is of kind ssh, not postgres'
        self.assertEqual(record["decision"], {"effect": "deny", "rule": "hoopgw", "message": message})
        self.assertEqual(record["outcome"], {"status": "blocked", "error": message})
        state = yield self.sqlstate("web1")
        self.assertEqual(state, "3D000")

    @inlineCallbacks
    def test_http_connection(self):
        """psql dbname=<an HTTP connection>: the same, naming http."""
        code, output = yield self.psql_to("api")
        self.assertEqual(code, 2, output)
        self.assertIn(b'FATAL:  connection "api" is of kind http, not postgres\n', output)
        self.assertEqual([r["event"] for r in self.written()], ["session.refused"])

    @inlineCallbacks
    def test_forbidden_connection_of_another_kind(self):
        """
        If policy does not let the client open the connection, the answer is
        policy's, exactly as for a forbidden PostgreSQL connection: 28000,
        the rule, and no word of its kind.
        """
        answers = {}
        for name in ("secret-web", "secret-db"):
            code, output = yield self.psql_to(name)
            state = yield self.sqlstate(name)
            answers[name] = (code, state, output.replace(name.encode(), b"<name>"))
        self.assertEqual(answers["secret-web"], answers["secret-db"])
        code, state, output = answers["secret-web"]
        self.assertEqual((code, state), (2, "28000"))
        self.assertIn(b'FATAL:  denied by policy rule "no-secrets"\n', output)
        self.assertNotIn(b"ssh", output)
        records = self.written()
        self.assertEqual([r["event"] for r in records], ["session.refused"] * 4)
        self.assertEqual({r["decision"]["rule"] for r in records}, {"no-secrets"})

    @inlineCallbacks
    def test_names_in_another_case_or_with_whitespace(self):
        """
        Names are exact: "WEB1", "web1 " or " web1" name no connection, and
        are refused as unknown (28000), saying nothing of web1's kind.
        """
        for name in ("WEB1", "web1 ", " web1"):
            code, output = yield self.psql_to(name)
            self.assertEqual(code, 2, output)
            self.assertIn(f"FATAL:  no connection named {name!r}\n".encode(), output)
            self.assertNotIn(b"ssh", output)
        records = self.written()
        self.assertEqual([r["connection"] for r in records], ["WEB1", "web1 ", " web1"])
        self.assertEqual({r["event"] for r in records}, {"session.refused"})


class LargeResultTests(_GatewayCase):
    def setUp(self):
        self.start()

    @inlineCallbacks
    def test_million_rows_with_bounded_memory(self):
        """
        If psql reads a million-row result (about 110 MB on the wire) through
        the gateway, it gets every row, the SELECT is audited with its row
        count, and the gateway (this process) holds no more than a few MB
        more at its peak than before: rows are relayed as they are read, and
        reading from the target pauses while the client is behind.
        """
        clear_refs = Path("/proc/self/clear_refs")
        if not clear_refs.exists():
            raise SkipTest("needs /proc/self/clear_refs to reset the peak RSS")
        query = "SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g"
        # Warm up (TLS, session, audit log) so the measurement sees only the relay.
        yield self.psql("-c", "SELECT 1")
        clear_refs.write_text("5")  # resets VmHWM to the current RSS
        before = vm_kb("VmRSS")
        code, output = yield self.psql("-o", "/dev/null", "-c", query)
        peak = vm_kb("VmHWM")
        self.assertEqual(code, 0, output)
        growth_mb = (peak - before) / 1024
        [(_, end)] = [a for a in self.actions("sql.query") if a[0]["action"]["input"] == query]
        self.assertEqual((end["outcome"]["status"], end["outcome"]["rows"]), ("succeeded", 1_000_000))
        self.assertLess(growth_mb, 8, f"the gateway's peak RSS grew by {growth_mb:.1f} MB")

    @inlineCallbacks
    def test_stalled_client_pauses_the_target(self):
        """
        If the client stops reading (psql stopped with SIGSTOP) while a large
        result flows, the gateway stops reading from the target, which then
        waits in ClientWrite, instead of buffering the result: its peak RSS
        stays within a few MB; when the client reads again, every row arrives.
        """
        require_psycopg()
        clear_refs = Path("/proc/self/clear_refs")
        if not clear_refs.exists():
            raise SkipTest("needs /proc/self/clear_refs to reset the peak RSS")
        # The result starts only when the test lets it: its first row needs
        # an advisory lock the test holds (over the superuser's Unix socket).
        gate = yield deferToThread(
            psycopg.connect, host=str(self.cluster.socket_dir), port=self.cluster.port, user="postgres",
            dbname="postgres", autocommit=True,
        )
        self.addCleanup(gate.close)
        yield deferToThread(gate.execute, "SELECT pg_advisory_lock(7)")
        query = (
            "SELECT g, repeat('x', 100) FROM (SELECT pg_advisory_lock_shared(7)) AS gate, "
            "generate_series(1, 1000000) g"
        )
        yield self.psql("-c", "SELECT 1")  # warm up
        proc = spawn(self.psql_argv("-o", "/dev/null", "-c", query), marker=None, env=self.env())
        self.addCleanup(proc.signal, "KILL")
        state = (
            "SELECT coalesce(wait_event, 'running') FROM pg_stat_activity WHERE usename = 'app_scram' "
            "AND query LIKE 'SELECT g, repeat%' AND state = 'active'"
        )
        yield wait_until(lambda: deferToThread(lambda: self.cluster.psql(state).strip() == "advisory"),
                         "the query to wait for the advisory lock")
        proc.signal("STOP")
        clear_refs.write_text("5")
        before = vm_kb("VmRSS")
        yield deferToThread(gate.execute, "SELECT pg_advisory_unlock(7)")
        # Either the gateway stops reading from the target (backpressure:
        # the target then blocks in ClientWrite), or the target sends the
        # whole result (and the gateway buffers it).  The gateway runs in this
        # process, so whether it reads is seen on the reactor itself.
        [client] = self.gateway.listeners["postgres"].factory.cancel_keys.values()
        target = client.backend.transport

        def settled() -> Deferred:
            def look() -> str | None:
                event = self.cluster.psql(state).strip() or "finished"
                return event if event in ("ClientWrite", "finished") else None

            def paused(event: str | None) -> str | None:
                if event == "ClientWrite" and target in reactor.getReaders():
                    return None  # only slower than the target, not paused (yet)
                return event

            return deferToThread(look).addCallback(paused)

        blocked = yield wait_until(settled, "the target to block writing or to finish")
        growth_mb = (vm_kb("VmHWM") - before) / 1024
        proc.signal(signal.SIGCONT)  # type: ignore[arg-type]  # Twisted names only a few signals
        code = yield proc.ended
        self.assertEqual(code, 0, proc.output)
        self.assertEqual(blocked, "ClientWrite", f"grew {growth_mb:.1f} MB")
        self.assertLess(growth_mb, 8, f"the gateway's peak RSS grew by {growth_mb:.1f} MB")
        [(_, end)] = [a for a in self.actions("sql.query") if a[0]["action"]["input"] == query]
        self.assertEqual((end["outcome"]["status"], end["outcome"]["rows"]), ("succeeded", 1_000_000))


# -- policy bypasses (security review), at the wire level ------------------------


class ReloadMidResultTests(_GatewayCase):
    """A policy reload that adds a mask while a large result streams (as SIGHUP would, between two reads)."""

    DOMAIN = "canary.example.org"

    def setUp(self):
        self.start(extra_policy="# no masks yet\n")
        self.cluster.psql(
            "CREATE TABLE big (id int, email text);"
            f"INSERT INTO big SELECT g, 'user' || g || '@{self.DOMAIN}' FROM generate_series(1, 100000) g;"
            "GRANT ALL ON big TO app_scram;"
        )

    @inlineCallbacks
    def test_no_row_after_the_reload_unmasked(self):
        """
        The rows relayed before the reload were not masked (no mask applied
        then); after it, none of the result's rows reaches psql, whose
        masking was planned without the new mask: the session ends (08P01)
        instead. The next session's rows are masked.
        """
        from hoopgw.protocols.postgres import codec, frontend

        relay = frontend.ClientProtocol._server_messages
        seen = {"rows": 0, "reloaded": False}
        mask = '[[mask]]\nname = "pii"\ncolumns = ["public.big.email"]\ndetectors = ["email"]\n'

        def spy(protocol, messages):
            for message in messages:
                kind = type(message)
                if not seen["reloaded"]:
                    seen["rows"] += message.count if kind is codec.DataRows else kind is codec.DataRow
            relay(protocol, messages)
            if seen["rows"] > 1000 and not seen["reloaded"]:
                seen["reloaded"] = True
                (self.base / "policies" / "extra.toml").write_text(mask)
                self.gateway.reload_policy()

        frontend.ClientProtocol._server_messages = spy
        self.addCleanup(setattr, frontend.ClientProtocol, "_server_messages", relay)
        code, output = yield self.psql("-c", "SELECT id, email FROM big")
        self.assertTrue(seen["reloaded"])
        self.assertNotEqual(code, 0)
        self.assertIn(b"masks changed while a result was being relayed", output)
        self.assertLessEqual(output.count(self.DOMAIN.encode()), seen["rows"])
        code, output = yield self.psql("-c", "SELECT id, email FROM big ORDER BY id LIMIT 2")
        self.assertEqual((code, output), (0, b"1|[redacted]\n2|[redacted]\n"))


class RawClient:
    """
    A client that speaks the protocol message by message, as no driver will:
    TLS, the token, then batches of messages.  Blocking: use it in a thread.
    """

    def __init__(self, port: int, token: str, **startup: str) -> None:
        import ssl

        from hoopgw.protocols.postgres import codec

        self.codec = codec
        plain = socket.create_connection(("127.0.0.1", port), timeout=20)
        plain.sendall(codec.encode(codec.SSLRequest()))
        assert plain.recv(1) == b"S"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock = context.wrap_socket(plain)
        self.parser = codec.BackendParser()
        self.pending: list[Any] = []
        self.sock.sendall(codec.encode(codec.StartupMessage({"user": "alice", "database": "appdb", **startup})))
        self.read_until_ready()
        self.sock.sendall(codec.encode(codec.PasswordMessage(token.encode())))
        self.startup_answers = self.read_until_ready()

    def read_until_ready(self, count: int = 1) -> list[Any]:
        """Messages up to the C{count}th ReadyForQuery (or a cleartext-password request), or until closed."""
        codec = self.codec
        got: list[Any] = []
        while True:
            while self.pending:
                message = self.pending.pop(0)
                got.append(message)
                if isinstance(message, codec.ReadyForQuery):
                    count -= 1
                    if count == 0:
                        return got
                if isinstance(message, codec.AuthenticationCleartextPassword):
                    return got
            data = self.sock.recv(65536)
            if not data:
                return got
            self.pending.extend(self.parser.feed(data))

    def batch(self, *messages: Any, syncs: int = 1) -> list[Any]:
        self.sock.sendall(b"".join(self.codec.encode(m) for m in messages))
        return self.read_until_ready(syncs)

    def close(self) -> None:
        self.sock.close()


class PolicyBypassTests(_GatewayCase):
    """
    The review's exploits against a real server: each tries to have a DROP
    (refused by the default policy's no-destructive-ddl) run anyway.
    """

    def setUp(self):
        self.start()
        self.cluster.psql(
            "CREATE TABLE t1 (id int); CREATE TABLE t2 (id int); CREATE TABLE t3 (id int);"
            "ALTER TABLE t1 OWNER TO app_scram; ALTER TABLE t2 OWNER TO app_scram; ALTER TABLE t3 OWNER TO app_scram;"
        )

    def exists(self, table: str) -> bool:
        return self.count(f"SELECT count(*) FROM pg_tables WHERE tablename = '{table}'") == "1"

    def errors(self, messages: list[Any]) -> list[tuple[str, str]]:
        from hoopgw.protocols.postgres import codec

        return [(m.code, m.message) for m in messages if isinstance(m, codec.ErrorResponse)]

    @inlineCallbacks
    def test_stand_in_portal_name_cannot_be_bound(self):
        """
        P1: binding a portal named like a stand-in ends the connection with
        FATAL 08P01; the DROP in it never runs.
        """
        from hoopgw.protocols.postgres import codec

        def work():
            client = RawClient(self.port, self.token)
            try:
                return client.batch(
                    codec.Parse("s", "DROP TABLE t1", ()),
                    codec.Bind("hoopgw_refused_1", "s", (), (), ()),
                    codec.Execute("hoopgw_refused_1", 0),
                    codec.Sync(),
                )
            finally:
                client.close()

        answers = yield deferToThread(work)
        self.assertTrue(self.exists("t1"), "the DROP ran on the server")
        self.assertEqual(self.errors(answers)[0][0], "08P01")

    @inlineCallbacks
    def test_portal_runs_what_it_was_bound_from(self):
        """P2: re-parsing the unnamed statement after Bind does not launder the portal."""
        from hoopgw.protocols.postgres import codec

        def work():
            client = RawClient(self.port, self.token)
            try:
                return client.batch(
                    codec.Parse("", "DROP TABLE t3", ()),
                    codec.Bind("p", "", (), (), ()),
                    codec.Parse("", "SELECT 1", ()),
                    codec.Execute("p", 0),
                    codec.Sync(),
                )
            finally:
                client.close()

        answers = yield deferToThread(work)
        self.assertTrue(self.exists("t3"), "the DROP ran on the server")
        self.assertEqual(self.errors(answers)[0][0], "42501")

    @inlineCallbacks
    def test_changes_the_server_skipped_are_not_believed(self):
        """
        P3: a Close and Parse the server skipped after an error (here: a
        refusal's stand-in) do not replace the DROP in the gateway's map,
        and a Parse the server refuses as already existing does not either.
        """
        from hoopgw.protocols.postgres import codec

        def work():
            client = RawClient(self.port, self.token)
            try:
                answers = [client.batch(codec.Parse("s", "DROP TABLE t2", ()), codec.Sync())]
                answers.append(client.batch(
                    codec.Bind("", "s", (), (), ()),
                    codec.Execute("", 0),
                    codec.Close("S", "s"),
                    codec.Parse("s", "SELECT 1", ()),
                    codec.Sync(),
                ))
                answers.append(client.batch(codec.Bind("", "s", (), (), ()), codec.Execute("", 0), codec.Sync()))
                answers.append(client.batch(codec.Parse("s", "SELECT 1", ()), codec.Sync()))
                answers.append(client.batch(codec.Bind("", "s", (), (), ()), codec.Execute("", 0), codec.Sync()))
                return answers
            finally:
                client.close()

        answers = yield deferToThread(work)
        self.assertTrue(self.exists("t2"), "the DROP ran on the server")
        self.assertEqual(self.errors(answers[1])[0][0], "42501")
        self.assertEqual(self.errors(answers[2])[0][0], "42501")
        self.assertEqual(self.errors(answers[3])[0][0], "42P05")  # already exists
        self.assertEqual(self.errors(answers[4])[0][0], "42501")
        self.assertTrue(self.exists("t2"))
