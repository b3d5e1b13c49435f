"""
The PostgreSQL front end's logic with no sockets: in-memory services, the
client and the target on StringTransports, bytes made by the codec.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import (
    ConnectError,
    ConnectionDone,
    ConnectionRefusedError,
    DNSLookupError,
    NoRouteError,
    TCPTimedOutError,
)
from twisted.python.failure import Failure
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.model import Connection, Decision, Effect, Identity, Status
from hoopgw.protocols.postgres import codec
from hoopgw.protocols.postgres.backend import unreachable
from hoopgw.protocols.postgres.frontend import PostgresFrontEnd, rows_from_tag
from hoopgw.protocols.postgres.reach import RelationGraph
from hoopgw.protocols.postgres.settings import PostgresSettings
from hoopgw.testing import FixedCatalog, MemoryAuditLog, MemoryIdentityVerifier, StaticPolicy, memory_session_service

ALICE = Identity(issuer="test", subject="alice", groups=("dev",))
SETTINGS = PostgresSettings(host="127.0.0.1", port=5432, database="app", user="app", tls="disable")
CONNECTION = Connection(name="appdb", kind="postgres", target="127.0.0.1:5432", settings=SETTINGS)


class TLSStringTransport(StringTransport):
    """A StringTransport that accepts startTLS (the bytes stay readable)."""

    tls_started = False

    def startTLS(self, options, normal=True):
        self.tls_started = True


def frames(data: bytes, parser=None) -> list[codec.Message]:
    return (parser or codec.BackendParser()).feed(data)


class UpperFirstColumn:
    """A transform that changes one column, as masking will."""

    def __init__(self) -> None:
        self.descriptions: list[codec.RowDescription] = []

    def active(self) -> bool:
        return True

    def describe(self, description: codec.RowDescription) -> None:
        self.descriptions.append(description)

    def row(self, row: codec.DataRow) -> bytes:
        value = row.values[0]
        return row.replace_column(0, value.upper() if value is not None else None).raw

    def take_counts(self) -> None:
        return None

    def report(self, message: codec.Message) -> codec.Message:
        return message

    notification = parameter = function_result = report

    def copy_row(self, data: codec.CopyData, binary: bool) -> codec.CopyData:
        return data


class NoDropPolicy(StaticPolicy):
    """Denies any action whose statement kinds include DROP; allows the rest."""

    def decide(self, identity, connection, action):
        if "drop" in (action.attributes or {}).get("sql.statements", ()):
            self.seen.append(action)
            return succeed(Decision(effect=Effect.deny, rule="no-drop", message="no DROP"))
        return super().decide(identity, connection, action)


def encoded(*messages: codec.Message) -> bytes:
    return b"".join(codec.encode(m) for m in messages)


PARSE_COMPLETE = codec.GenericMessage.from_body(b"1", b"")
BIND_COMPLETE = codec.GenericMessage.from_body(b"2", b"")
CLOSE_COMPLETE = codec.GenericMessage.from_body(b"3", b"")


class _FrontEndCase(SynchronousTestCase):
    connections: tuple[Connection, ...] = (CONNECTION,)

    def setUp(self) -> None:
        self.audit = MemoryAuditLog()
        self.policy = NoDropPolicy()
        self.sessions = memory_session_service(
            connections=self.connections,
            audit=self.audit,
            policy=self.policy,
            identity=MemoryIdentityVerifier(tokens={"good-token": ALICE}),
            clock=Clock(),
        )
        self.backends = []
        self.transform = None
        self.catalog = FixedCatalog()
        self.front = PostgresFrontEnd(
            sessions=self.sessions,
            tls_options=object(),
            reactor=Clock(),
            connect=self.connect,
            transform_for=lambda session: self.transform,
            catalog_for=lambda connection: self.catalog,
        )

    def connect(self, settings, backend):
        backend.makeConnection(StringTransport())
        self.backends.append(backend)
        return succeed(backend)

    def start(self):
        """Connect a client through TLS, token and target start-up; return (client, its transport, target transport)."""
        client = self.front.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = TLSStringTransport()
        client.makeConnection(transport)
        client.dataReceived(codec.encode(codec.SSLRequest()))
        self.assertEqual(transport.value(), b"S")
        self.assertTrue(transport.tls_started)
        transport.clear()
        client.dataReceived(codec.encode(codec.StartupMessage({"user": "alice", "database": "appdb"})))
        self.assertEqual(transport.value(), codec.encode(codec.AuthenticationCleartextPassword()))
        transport.clear()
        client.dataReceived(codec.encode(codec.PasswordMessage(b"good-token")))
        [backend] = self.backends
        startup = frames(backend.transport.value(), codec.FrontendParser())
        self.assertEqual(startup[0].parameters[:2], (("user", "app"), ("database", "app")))
        self.assertNotIn(b"good-token", backend.transport.value())
        backend.transport.clear()
        backend.dataReceived(
            codec.encode(codec.AuthenticationOk())
            + codec.encode(codec.ParameterStatus("server_version", "15.0"))
            + codec.encode(codec.ParameterStatus("client_encoding", "UTF8"))
            + codec.encode(codec.ParameterStatus("standard_conforming_strings", "on"))
            + codec.encode(codec.BackendKeyData(4242, b"\x01\x02\x03\x04"))
            + codec.encode(codec.ReadyForQuery("I"))
        )
        welcome = frames(transport.value())
        self.assertEqual(
            [type(m) for m in welcome],
            [codec.AuthenticationOk] + [codec.ParameterStatus] * 3 + [codec.BackendKeyData, codec.ReadyForQuery],
        )
        # The client holds the gateway's own key, not the target's.
        self.assertNotEqual(welcome[4].process_id, 4242)
        transport.clear()
        return client, transport, backend

    def _tagged(self) -> codec.FrontendParser:
        parser = codec.FrontendParser()
        parser.feed(codec.encode(codec.StartupMessage({"user": "x"})))
        return parser


class StartupRefusalTests(_FrontEndCase):
    """Start-ups refused before any session: how the client reads them, and what the trail holds."""

    connections = (CONNECTION, Connection(name="web1", kind="ssh", target="127.0.0.1:22"))

    def client(self, *messages: codec.Message) -> TLSStringTransport:
        client = self.front.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = TLSStringTransport()
        client.makeConnection(transport)
        for message in messages:
            client.dataReceived(codec.encode(message))
        return transport

    def test_startup_in_the_clear(self) -> None:
        """
        If a StartupMessage comes without TLS, the client reads FATAL 28000
        and one request.refused record says who asked for what (no token was
        asked for, so there is none to hash).
        """
        transport = self.client(codec.StartupMessage({"user": "alice", "database": "appdb"}))
        [fatal] = frames(transport.value())
        self.assertEqual((fatal.severity, fatal.code), ("FATAL", "28000"))
        self.assertTrue(transport.disconnecting)
        [record] = self.audit.of("request.refused")
        self.assertEqual(
            {k: v for k, v in record.items() if k not in ("gateway", "seq", "event")},
            {
                "source": "127.0.0.1:50000",
                "protocol": "postgres",
                "code": "28000",
                "request": {"message": "StartupMessage", "database": "appdb"},
                "user": "alice",
                "outcome": {"status": "blocked", "error": fatal.message},
            },
        )
        self.assertEqual(self.audit.events(), ["request.refused"])

    def test_out_of_order(self) -> None:
        """A query where the token should be: FATAL 08P01, and recorded with the message's type."""
        transport = self.client(
            codec.SSLRequest(), codec.StartupMessage({"user": "alice", "database": "appdb"}), codec.Query("SELECT 1")
        )
        fatal = frames(transport.value()[1:])[-1]
        self.assertEqual(fatal.code, "08P01")
        [record] = self.audit.of("request.refused")
        self.assertEqual(
            (record["code"], record["request"], record["user"]),
            ("08P01", {"message": "Query", "database": "appdb"}, "alice"),
        )

    def test_database_of_another_kind(self) -> None:
        """
        If the database names an SSH connection policy lets the client open,
        the client reads FATAL 3D000 naming both kinds, one session.refused
        record says so, and nothing is connected to.
        """
        transport = self.client(
            codec.SSLRequest(),
            codec.StartupMessage({"user": "alice", "database": "web1"}),
            codec.PasswordMessage(b"good-token"),
        )
        fatal = frames(transport.value()[1:])[-1]
        self.assertEqual(
            (fatal.severity, fatal.code, fatal.message),
            ("FATAL", "3D000", 'connection "web1" is of kind ssh, not postgres'),
        )
        self.assertEqual(self.backends, [])
        self.assertEqual(self.audit.events(), ["session.refused"])
        [record] = self.audit.of("session.refused")
        self.assertEqual(record["decision"], {"effect": "deny", "rule": "hoopgw", "message": fatal.message})


class FrontEndTests(_FrontEndCase):
    def test_decision_that_fires_later_holds_the_statement(self) -> None:
        """
        If policy has not decided yet, the statement is not forwarded, and a
        statement pipelined behind it waits too; once decided, both go in order.
        """
        client, transport, backend = self.start()
        self.policy.hold = True
        client.dataReceived(codec.encode(codec.Query("SELECT 1")) + codec.encode(codec.Query("SELECT 2")))
        self.assertEqual(backend.transport.value(), b"")
        self.policy.release()
        self.assertEqual(backend.transport.value(), codec.encode(codec.Query("SELECT 1")))
        self.policy.release()
        self.assertEqual(
            backend.transport.value(),
            codec.encode(codec.Query("SELECT 1")) + codec.encode(codec.Query("SELECT 2")),
        )

    def test_transform_changes_one_column(self) -> None:
        """If a row transform is set, the client receives rows with that column changed and the others intact."""
        self.transform = UpperFirstColumn()
        client, transport, backend = self.start()
        client.dataReceived(codec.encode(codec.Query("SELECT name, note FROM t")))
        description = codec.RowDescription([codec.FieldDescription("name"), codec.FieldDescription("note")])
        backend.dataReceived(
            b"".join(
                codec.encode(m)
                for m in (
                    description,
                    codec.DataRow.from_values([b"abc", None]),
                    codec.DataRow.from_values([b"def", b"keep"]),
                    codec.CommandComplete("SELECT 2"),
                    codec.ReadyForQuery("I"),
                )
            )
        )
        rows = [m.values for m in frames(transport.value()) if isinstance(m, codec.DataRow)]
        self.assertEqual(rows, [(b"ABC", None), (b"DEF", b"keep")])
        self.assertEqual(len(self.transform.descriptions), 1)
        [end] = self.audit.of("action.end")
        self.assertEqual(end["outcome"]["rows"], 2)

    def test_refused_execute_in_a_pipeline(self) -> None:
        """
        If an execution in a pipelined batch is refused, it is refused at its
        Bind (where the planner can first run code): the target gets a
        stand-in Bind of a statement that does not exist in its place and
        nothing more of the batch but its Sync, and the client gets the
        target's answers in order with that error replaced by the gateway's
        42501 naming the rule.
        """
        self.policy.decisions["sql.execute"] = Decision(effect=Effect.deny, rule="no-deletes", message="no deletes")
        client, transport, backend = self.start()
        client.dataReceived(
            b"".join(
                codec.encode(m)
                for m in (
                    codec.Parse("", "DELETE FROM t WHERE id = $1", ()),
                    codec.Bind("", "", (), (b"7",), ()),
                    codec.Execute("", 0),
                    codec.Sync(),
                )
            )
        )
        sent = frames(backend.transport.value(), self._tagged())
        self.assertEqual([type(m) for m in sent], [codec.Parse, codec.Bind, codec.Sync])
        marker = sent[1].statement
        self.assertTrue(marker.startswith("hoopgw_refused_"), marker)
        backend.dataReceived(
            b"".join(
                codec.encode(m)
                for m in (
                    codec.GenericMessage.from_body(b"1", b""),
                    codec.error_response("ERROR", "26000", f'prepared statement "{marker}" does not exist'),
                    codec.ReadyForQuery("I"),
                )
            )
        )
        answers = frames(transport.value())
        self.assertEqual(answers[1].code, "42501")
        self.assertEqual(answers[1].message, "hoopgw: no deletes")
        self.assertIn("no-deletes", answers[1].detail)
        self.assertIsInstance(answers[2], codec.ReadyForQuery)
        [start] = self.audit.of("action.start")
        self.assertEqual(start["action"]["details"]["parameters"], ["7"])
        self.assertEqual(self.audit.of("action.end")[0]["outcome"]["status"], "blocked")

    def test_failed_statement_outcome(self) -> None:
        """If the target answers a statement with an error, its outcome is failed with SQLSTATE and message."""
        client, transport, backend = self.start()
        client.dataReceived(codec.encode(codec.Query("SELECT * FROM missing")))
        backend.dataReceived(
            codec.encode(codec.error_response("ERROR", "42P01", 'relation "missing" does not exist'))
            + codec.encode(codec.ReadyForQuery("I"))
        )
        [end] = self.audit.of("action.end")
        self.assertEqual(
            end["outcome"],
            {"status": "failed", "code": "42P01", "error": 'relation "missing" does not exist', "duration_us": 0},
        )

    def test_client_disconnect_closes_session(self) -> None:
        """If the client goes away, the target connection is closed and session.end records the bytes."""
        client, transport, backend = self.start()
        client.connectionLost(None)
        self.assertTrue(backend.transport.disconnecting)
        [end] = self.audit.of("session.end")
        self.assertGreater(end["end"]["bytes_in"], 0)

    def test_terminate_then_the_target_closes_first(self) -> None:
        """
        After the client's Terminate the server closes: if the gateway sees
        that before the client's own close, the session still ends as a
        plain close, not "target closed" (which would depend on a race).
        """
        client, transport, backend = self.start()
        client.dataReceived(codec.encode(codec.Terminate()))
        backend.connectionLost(Failure(ConnectionDone()))
        client.connectionLost(Failure(ConnectionDone()))
        [end] = self.audit.of("session.end")
        self.assertEqual((end["end"]["status"], end["end"].get("error")), ("closed", None))
        self.assertEqual(transport.value(), b"")  # no FATAL for a close the client asked for

    def test_target_login_timeout(self) -> None:
        """If the target accepts the connection but never finishes start-up,
        after login_timeout the client gets FATAL 08006 saying so, the
        target connection is aborted and session.end says why."""
        client = self.front.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = TLSStringTransport()
        client.makeConnection(transport)
        client.dataReceived(codec.encode(codec.SSLRequest()))
        client.dataReceived(codec.encode(codec.StartupMessage({"user": "alice", "database": "appdb"})))
        client.dataReceived(codec.encode(codec.PasswordMessage(b"good-token")))
        transport.clear()
        [backend] = self.backends
        self.front.reactor.advance(SETTINGS.login_timeout - 1)
        self.assertEqual(transport.value(), b"")
        self.front.reactor.advance(1)
        [error] = frames(transport.value())
        self.assertEqual(error.code, "08006")
        why = f"the target did not finish connecting and logging in within {SETTINGS.login_timeout} s (login_timeout)"
        self.assertEqual(error.message, f"cannot connect to the target: {why}")
        self.assertTrue(backend.transport.disconnecting or backend.transport.disconnected)
        [end] = self.audit.of("session.end")
        self.assertEqual((end["end"]["status"], end["end"]["error"]), ("failed", why))
        # A late answer from the aborted target changes nothing.
        backend.dataReceived(codec.encode(codec.AuthenticationOk()) + codec.encode(codec.ReadyForQuery("I")))
        self.assertEqual(len(frames(transport.value())), 1)

    def _login_to_a_down_target(self, connected):
        """Log a client in while the target's connection attempt is C{connected}; return its transport."""
        self.connect = lambda settings, backend: connected  # (read by the front end at each login)
        self.front.connect = self.connect
        client = self.front.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = TLSStringTransport()
        client.makeConnection(transport)
        client.dataReceived(codec.encode(codec.SSLRequest()))
        client.dataReceived(codec.encode(codec.StartupMessage({"user": "alice", "database": "appdb"})))
        transport.clear()
        client.dataReceived(codec.encode(codec.PasswordMessage(b"good-token")))
        return transport

    def test_target_refuses_the_connection(self) -> None:
        """If the target's port refuses the connection, the client gets FATAL
        08001 naming the address, and session.end says failed with that reason."""
        transport = self._login_to_a_down_target(fail(ConnectionRefusedError("Connection refused")))
        [error] = frames(transport.value())
        why = "connection refused by 127.0.0.1:5432"
        self.assertEqual((error.severity, error.code, error.message), ("FATAL", "08001", f"cannot connect to the target: {why}"))
        [end] = self.audit.of("session.end")
        self.assertEqual((end["end"]["status"], end["end"]["error"]), ("failed", why))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_target_does_not_answer(self) -> None:
        """If the connection attempt is not answered within login_timeout (a
        black-holed address), the client gets FATAL 08001 saying so, and the
        attempt is cancelled."""
        cancelled = []
        transport = self._login_to_a_down_target(Deferred(lambda d: cancelled.append(d)))
        self.front.reactor.advance(SETTINGS.login_timeout)
        [error] = frames(transport.value())
        why = f"no answer from 127.0.0.1:5432 within {SETTINGS.login_timeout:g} s (login_timeout)"
        self.assertEqual((error.code, error.message), ("08001", f"cannot connect to the target: {why}"))
        self.assertEqual(len(cancelled), 1)
        [end] = self.audit.of("session.end")
        self.assertEqual((end["end"]["status"], end["end"]["error"]), ("failed", why))

    def test_target_unreachable_reasons(self) -> None:
        """Each way a TCP connection fails reads as what happened, naming the address tried."""
        cases = (
            (ConnectionRefusedError(), "connection refused by 127.0.0.1:5432"),
            (NoRouteError(), "no route to 127.0.0.1:5432"),
            (TCPTimedOutError(), "no answer from 127.0.0.1:5432 (connection timed out)"),
            (DNSLookupError("no such name"), "cannot resolve '127.0.0.1' (the target 127.0.0.1:5432)"),
            (ConnectError("something else"), "cannot reach 127.0.0.1:5432: An error occurred while connecting: something else."),
        )
        for error, why in cases:
            self.assertEqual(str(unreachable(Failure(error), SETTINGS)), why)
        v6 = PostgresSettings(host="::1", port=5433, database="app", user="app", tls="disable")
        self.assertEqual(str(unreachable(Failure(ConnectionRefusedError()), v6)), "connection refused by [::1]:5433")

    def test_rows_from_tag(self) -> None:
        """CommandComplete tags give row counts where PostgreSQL puts one."""
        self.assertEqual(
            [rows_from_tag(t) for t in ("SELECT 5", "INSERT 0 3", "UPDATE 2", "COPY 10", "CREATE TABLE", "BEGIN")],
            [5, 3, 2, 10, None, None],
        )


class NameTrackingTests(_FrontEndCase):
    """
    Statements and portals: what the gateway judges an Execute by must be
    what the server will run (the bypasses of the security review).
    """

    def sent(self, backend) -> list[codec.Message]:
        messages = frames(backend.transport.value(), self._tagged())
        backend.transport.clear()
        return messages

    def assertRefusedExecute(self, sent: list[codec.Message], portal: str) -> None:
        """The execution was refused at its Bind: a stand-in in its place, the rest of the batch dropped."""
        self.assertEqual([m for m in sent if isinstance(m, codec.Execute)], [], sent)
        [bind] = [m for m in sent if isinstance(m, codec.Bind)]
        self.assertTrue(bind.statement.startswith("hoopgw_refused_"), bind)
        self.assertEqual(self.audit.of("action.end")[-1]["outcome"]["status"], "blocked")
        self.assertIn("drop", self.audit.of("action.start")[-1]["action"]["attributes"]["sql.statements"])

    def test_stand_in_names_are_unguessable(self) -> None:
        """Each stand-in is named with 128 random bits, never a counter."""
        self.policy.decisions["sql.execute"] = Decision(effect=Effect.deny, rule="r")
        client, transport, backend = self.start()
        client.dataReceived(encoded(codec.Execute("", 0), codec.Sync()))
        [first] = [m.portal for m in self.sent(backend) if isinstance(m, codec.Execute)]
        backend.dataReceived(
            encoded(codec.error_response("ERROR", "34000", f'portal "{first}" does not exist'), codec.ReadyForQuery("I"))
        )
        client.dataReceived(encoded(codec.Execute("", 0), codec.Sync()))
        [second] = [m.portal for m in self.sent(backend) if isinstance(m, codec.Execute)]
        self.assertRegex(first, r"^hoopgw_refused_[0-9a-f]{32}$")
        self.assertRegex(second, r"^hoopgw_refused_[0-9a-f]{32}$")
        self.assertNotEqual(first, second)

    def test_reserved_prefix_is_a_protocol_violation(self) -> None:
        """
        P1: a client binding a portal named like a stand-in (to have its own
        DROP run in the refused statement's place) is refused: FATAL 08P01,
        the connection ends, and nothing from the Bind on reaches the server.
        """
        client, transport, backend = self.start()
        client.dataReceived(
            encoded(
                codec.Parse("s", "DROP TABLE payments", ()),
                codec.Bind("hoopgw_refused_1", "s", (), (), ()),
                codec.Execute("hoopgw_refused_1", 0),
                codec.Sync(),
            )
        )
        # Nothing more is sent (the Parse ahead of the Bind is dropped too).
        self.assertEqual(self.sent(backend), [])
        [fatal] = frames(transport.value())
        self.assertEqual((fatal.severity, fatal.code), ("FATAL", "08P01"))
        self.assertIn("reserved", fatal.message)
        self.assertTrue(transport.disconnecting)

    def test_reserved_prefix_in_every_naming_message(self) -> None:
        """Parse, Describe, Close and Execute naming a hoopgw_ name are refused too."""
        for message in (
            codec.Parse("hoopgw_x", "SELECT 1", ()),
            codec.Describe("P", "hoopgw_x"),
            codec.Close("S", "hoopgw_x"),
            codec.Execute("hoopgw_x", 0),
        ):
            self.backends.clear()
            client, transport, backend = self.start()
            client.dataReceived(encoded(message))
            self.assertEqual(self.sent(backend), [])
            self.assertEqual(frames(transport.value())[0].code, "08P01")

    def test_portal_keeps_the_statement_it_was_bound_from(self) -> None:
        """
        P2: a portal bound from the unnamed statement runs what that
        statement held at Bind time, even after the name is parsed again.
        """
        client, transport, backend = self.start()
        client.dataReceived(
            encoded(
                codec.Parse("", "DROP TABLE t1", ()),
                codec.Bind("p", "", (), (), ()),
                codec.Parse("", "SELECT 1", ()),
                codec.Execute("p", 0),
                codec.Sync(),
            )
        )
        self.assertRefusedExecute(self.sent(backend), "p")

    def test_changes_skipped_after_an_error_are_not_applied(self) -> None:
        """
        P3: after an error the server skips to Sync; a Close and Parse it
        skipped leave the statement as it was (DROP), not as the client
        asked (SELECT 1).
        """
        client, transport, backend = self.start()
        client.dataReceived(encoded(codec.Parse("s", "DROP TABLE t2", ()), codec.Sync()))
        backend.dataReceived(encoded(PARSE_COMPLETE, codec.ReadyForQuery("I")))
        self.sent(backend)
        client.dataReceived(
            encoded(
                codec.Parse("", "SELECT 1/0", ()),
                codec.Bind("", "", (), (), ()),
                codec.Execute("", 0),  # fails on the server
                codec.Close("S", "s"),
                codec.Parse("s", "SELECT 1", ()),
                codec.Sync(),
            )
        )
        self.assertEqual(len(self.sent(backend)), 6)
        backend.dataReceived(
            encoded(
                PARSE_COMPLETE,
                BIND_COMPLETE,
                codec.error_response("ERROR", "22012", "division by zero"),
                codec.ReadyForQuery("I"),
            )
        )
        client.dataReceived(encoded(codec.Bind("", "s", (), (), ()), codec.Execute("", 0), codec.Sync()))
        self.assertRefusedExecute(self.sent(backend), "")

    def test_parse_refused_by_the_server_does_not_replace(self) -> None:
        """P3: a named Parse the server refuses (already exists) leaves the old entry."""
        client, transport, backend = self.start()
        client.dataReceived(encoded(codec.Parse("s", "DROP TABLE t2", ()), codec.Sync()))
        backend.dataReceived(encoded(PARSE_COMPLETE, codec.ReadyForQuery("I")))
        client.dataReceived(encoded(codec.Parse("s", "SELECT 1", ()), codec.Sync()))
        backend.dataReceived(
            encoded(
                codec.error_response("ERROR", "42P05", 'prepared statement "s" already exists'),
                codec.ReadyForQuery("I"),
            )
        )
        client.dataReceived(encoded(codec.Bind("", "s", (), (), ()), codec.Execute("", 0), codec.Sync()))
        self.assertRefusedExecute(self.sent(backend), "")

    def test_confirmed_changes_apply(self) -> None:
        """A Close and Parse the server confirmed do replace the statement."""
        client, transport, backend = self.start()
        client.dataReceived(encoded(codec.Parse("s", "DROP TABLE t2", ()), codec.Sync()))
        backend.dataReceived(encoded(PARSE_COMPLETE, codec.ReadyForQuery("I")))
        client.dataReceived(encoded(codec.Close("S", "s"), codec.Parse("s", "SELECT 1", ()), codec.Sync()))
        backend.dataReceived(encoded(CLOSE_COMPLETE, PARSE_COMPLETE, codec.ReadyForQuery("I")))
        self.sent(backend)
        client.dataReceived(encoded(codec.Bind("", "s", (), (), ()), codec.Execute("", 0), codec.Sync()))
        self.assertEqual(self.sent(backend)[1], codec.Execute("", 0))
        self.assertEqual(self.audit.of("action.start")[-1]["action"]["input"], "SELECT 1")

    def test_refused_query_does_not_change_prepared_statements(self) -> None:
        """
        A Query that is refused (never sent) does not DEALLOCATE or PREPARE
        anything in the gateway's map: EXECUTE p is still judged as the DROP
        the server holds.
        """
        client, transport, backend = self.start()
        client.dataReceived(encoded(codec.Parse("p", "DROP TABLE payments", ()), codec.Sync()))
        backend.dataReceived(encoded(PARSE_COMPLETE, codec.ReadyForQuery("I")))
        self.sent(backend)
        client.dataReceived(encoded(codec.Query("DEALLOCATE p; PREPARE p AS SELECT 1; DROP TABLE z")))
        [stand_in] = self.sent(backend)
        backend.dataReceived(
            encoded(
                codec.error_response("ERROR", "42601", f'syntax error at or near "{stand_in.query}"'),
                codec.ReadyForQuery("I"),
            )
        )
        client.dataReceived(encoded(codec.Query("EXECUTE p")))
        [sent] = self.sent(backend)
        self.assertNotEqual(sent, codec.Query("EXECUTE p"))
        self.assertEqual(self.audit.of("action.end")[-1]["outcome"]["status"], "blocked")

    def test_prepare_then_execute_in_one_query(self) -> None:
        """An EXECUTE sees a PREPARE earlier in the same Query."""
        client, transport, backend = self.start()
        client.dataReceived(encoded(codec.Query("PREPARE q AS SELECT 1; EXECUTE q")))
        self.assertEqual(self.sent(backend), [codec.Query("PREPARE q AS SELECT 1; EXECUTE q")])
        backend.dataReceived(
            encoded(codec.CommandComplete("PREPARE"), codec.CommandComplete("SELECT 1"), codec.ReadyForQuery("I"))
        )
        client.dataReceived(encoded(codec.Query("EXECUTE q")))
        self.assertEqual(self.sent(backend), [codec.Query("EXECUTE q")])
        self.assertNotIn("unknown", self.audit.of("action.start")[-1]["action"]["attributes"]["sql.statements"])

    def test_unknown_portal_is_unknown(self) -> None:
        """An Execute of a portal the gateway never saw bound is judged as unknown."""
        client, transport, backend = self.start()
        client.dataReceived(encoded(codec.Parse("", "SELECT 1", ()), codec.Execute("cursor", 0), codec.Sync()))
        self.assertEqual(self.audit.of("action.start")[-1]["action"]["attributes"]["sql.statements"], ["unknown"])

    def test_portals_end_with_the_transaction(self) -> None:
        """A portal is forgotten once the server is idle (its transaction
        ended): a later Execute of its name is judged as unknown, not as
        what it held; inside a transaction block it is still known."""
        client, transport, backend = self.start()
        client.dataReceived(encoded(codec.Parse("", "SELECT 1", ()), codec.Bind("p", "", (), (), ()), codec.Sync()))
        backend.dataReceived(encoded(PARSE_COMPLETE, BIND_COMPLETE, codec.ReadyForQuery("T")))
        client.dataReceived(encoded(codec.Execute("p", 0), codec.Sync()))
        self.assertEqual(self.audit.of("action.start")[-1]["action"]["input"], "SELECT 1")
        backend.dataReceived(encoded(codec.CommandComplete("SELECT 1"), codec.ReadyForQuery("I")))
        self.assertEqual(client.tracker.portals, {})
        client.dataReceived(encoded(codec.Execute("p", 0), codec.Sync()))
        self.assertEqual(self.audit.of("action.start")[-1]["action"]["attributes"]["sql.statements"], ["unknown"])

    def test_query_inside_an_unsynced_batch(self) -> None:
        """A Query after extended messages without a Sync is a protocol violation (FATAL 08P01)."""
        client, transport, backend = self.start()
        client.dataReceived(encoded(codec.Parse("", "SELECT 1", ()), codec.Query("SELECT 2")))
        self.assertNotIn(codec.Query("SELECT 2"), self.sent(backend))
        self.assertEqual(frames(transport.value())[-1].code, "08P01")


class PipelineTests(_FrontEndCase):
    def test_thousand_pipelined_queries(self) -> None:
        """
        If a client pipelines 1,000 Queries whose decisions fire at once, all
        are forwarded, in order (the drain loop does not recurse).
        """
        client, transport, backend = self.start()
        client.dataReceived(b"".join(codec.encode(codec.Query(f"SELECT {i}")) for i in range(1000)))
        sent = frames(backend.transport.value(), self._tagged())
        self.assertEqual([m.query for m in sent], [f"SELECT {i}" for i in range(1000)])

    def writes(self, backend) -> list[bytes]:
        """From now on, each write to the target's transport, as it was made."""
        made: list[bytes] = []
        write = backend.transport.write

        def counted(data: bytes) -> None:
            made.append(data)
            write(data)

        backend.transport.write = counted
        return made

    def test_one_write_per_read(self) -> None:
        """
        What one read of the client releases goes to the target as one
        write: a Parse, the Bind decided in between and the messages after
        it (one send, one TLS record), as libpq sent them.
        """
        client, transport, backend = self.start()
        made = self.writes(backend)
        batch = (
            codec.Parse("s", "SELECT $1", ()),
            codec.Bind("", "s", (), (), ()),
            codec.Describe("P", ""),
            codec.Execute("", 0),
            codec.Sync(),
        )
        client.dataReceived(encoded(*batch))
        self.assertEqual(made, [encoded(*batch)])
        self.assertEqual(len(self.audit.of("action.start")), 1)
        # Two statements in one read: still one write, each recorded before it.
        backend.dataReceived(encoded(codec.ParseComplete(), codec.BindComplete(), codec.NoData(),
                                     codec.CommandComplete("SELECT 1"), codec.ReadyForQuery("I")))
        del made[:]
        client.dataReceived(encoded(codec.Query("SELECT 1"), codec.Query("SELECT 2")))
        self.assertEqual(made, [encoded(codec.Query("SELECT 1"), codec.Query("SELECT 2"))])
        self.assertEqual(len(self.audit.of("action.start")), 3)

    def test_released_before_the_session_ends(self) -> None:
        """
        A read whose later message ends the session (a reserved name): the
        statement decided before it reaches the server before the session's
        end is recorded, and its outcome says it is not known.
        """
        client, transport, backend = self.start()
        events_at_write: list[list[str]] = []
        write = backend.transport.write

        def noted(data: bytes) -> None:
            events_at_write.append([r["event"] for r in self.audit.records])
            write(data)

        backend.transport.write = noted
        client.dataReceived(encoded(codec.Query("DELETE FROM t"), codec.Parse("hoopgw_x", "SELECT 1", ())))
        self.assertEqual([m.query for m in frames(backend.transport.value(), self._tagged())], ["DELETE FROM t"])
        [before] = events_at_write
        self.assertEqual(before[-1], "action.start")
        [end] = self.audit.of("action.end")
        self.assertTrue(end["outcome"]["error"].startswith("outcome unknown"), end)
        self.assertEqual(self.audit.records[-1]["event"], "session.end")

    def test_held_decision_writes_when_it_comes(self) -> None:
        """
        A decision that waits (a review, a full log): what preceded the
        statement goes at once, the statement and what follows when allowed.
        """
        client, transport, backend = self.start()
        made = self.writes(backend)
        self.policy.hold = True
        client.dataReceived(encoded(codec.Parse("s", "SELECT 1", ()), codec.Bind("", "s", (), (), ()), codec.Sync()))
        self.assertEqual(made, [encoded(codec.Parse("s", "SELECT 1", ()))])
        self.policy.release()
        self.assertEqual(made[1:], [encoded(codec.Bind("", "s", (), (), ())), encoded(codec.Sync())])

    def test_decision_after_disconnect(self) -> None:
        """
        If the client disconnects while a statement is being decided, the
        statement is not forwarded once allowed, and its outcome is recorded
        as failed.
        """
        client, transport, backend = self.start()
        self.policy.hold = True
        client.dataReceived(codec.encode(codec.Query("SELECT 1")))
        client.connectionLost(None)
        self.policy.release()
        self.assertEqual(backend.transport.value(), b"")
        [end] = self.audit.of("action.end")
        self.assertEqual(end["outcome"]["status"], Status.failed.value)
        self.assertEqual(end["outcome"]["error"], "client disconnected before the decision")


class PipelineHoldTests(_FrontEndCase):
    """What waits for the server's answers to earlier batches, and what does not."""

    def sent(self, backend) -> list[codec.Message]:
        messages = frames(backend.transport.value(), self._tagged())
        backend.transport.clear()
        return messages

    def test_batches_that_parse_again_are_not_held(self) -> None:
        """
        Pipelined batches that each Parse the unnamed statement before their
        Bind (as psycopg's pipeline mode does) are forwarded at once: each
        Bind's statement was settled by a change in its own batch.
        """
        client, transport, backend = self.start()
        batch = [codec.Parse("", "SELECT 1", ()), codec.Bind("", "", (), (), ()), codec.Execute("", 0), codec.Sync()]
        client.dataReceived(encoded(*batch, *batch, *batch))
        self.assertEqual(len(self.sent(backend)), 12)

    def test_bind_behind_an_earlier_batch_parse_waits(self) -> None:
        """
        A Bind of a statement whose Parse is unanswered in an earlier batch
        waits for the answer (the Parse may fail, and the server would not
        skip the Bind); it is judged by what the answer says the name holds.
        """
        client, transport, backend = self.start()
        client.dataReceived(encoded(codec.Parse("s", "DROP TABLE t", ()), codec.Sync()))
        backend.dataReceived(encoded(PARSE_COMPLETE, codec.ReadyForQuery("I")))
        self.sent(backend)
        client.dataReceived(
            encoded(
                codec.Parse("s", "SELECT 1", ()),
                codec.Sync(),
                codec.Bind("", "s", (), (), ()),
                codec.Execute("", 0),
                codec.Sync(),
            )
        )
        self.assertEqual([type(m) for m in self.sent(backend)], [codec.Parse, codec.Sync])
        backend.dataReceived(
            encoded(
                codec.error_response("ERROR", "42P05", 'prepared statement "s" already exists'),
                codec.ReadyForQuery("I"),
            )
        )
        sent = self.sent(backend)
        self.assertTrue(sent[0].statement.startswith("hoopgw_refused_"), sent)  # judged as the DROP


class CatalogTests(_FrontEndCase):
    """The front end's use of the target's catalog (reach.py): widening, failing closed, invalidating."""

    def test_statements_are_judged_by_what_they_reach(self) -> None:
        """If a view over payments is written, the decision sees a write to payments."""
        self.catalog.relations = RelationGraph(
            [(1, "public", "payments"), (2, "public", "pay_view")], views=[(2, 1)]
        )
        client, transport, backend = self.start()
        client.dataReceived(codec.encode(codec.Query("DELETE FROM pay_view WHERE id = 1")))
        [action] = [a for a in self.policy.seen if a.kind == "sql.query"]
        self.assertEqual(action.attributes["sql.writes"], ("public.pay_view", "public.payments"))

    def test_an_unreadable_catalog_makes_the_statement_unknown(self) -> None:
        """If the catalog cannot be read, a statement naming tables is judged as unknown."""
        self.catalog.unreadable = True
        client, transport, backend = self.start()
        client.dataReceived(codec.encode(codec.Query("SELECT * FROM t")) + codec.encode(codec.Query("SELECT 1")))
        actions = [a for a in self.policy.seen if a.kind == "sql.query"]
        # A statement naming no table does not need the catalog.
        self.assertEqual([a.attributes["sql.statements"] for a in actions], [("select", "unknown"), ("select",)])

    def test_client_gone_while_the_catalog_is_read(self) -> None:
        """If the client leaves while the catalog is read, nothing is decided or sent, and nothing fails."""
        self.catalog.hold = True
        client, transport, backend = self.start()
        client.dataReceived(codec.encode(codec.Query("SELECT * FROM t")))
        client.connectionLost(None)
        self.catalog.release()
        self.assertEqual([a for a in self.policy.seen if a.kind == "sql.query"], [])
        self.assertEqual(backend.transport.value(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_ddl_invalidates_once_its_transaction_ends(self) -> None:
        """
        If DDL runs in a transaction, the catalog is read again only once
        the transaction has ended (before, the gateway's own connection
        would not see it).
        """
        client, transport, backend = self.start()
        for query, status in (("BEGIN", "T"), ("CREATE VIEW v AS SELECT 1", "T"), ("SELECT 1", "T"), ("COMMIT", "I")):
            client.dataReceived(codec.encode(codec.Query(query)))
            before = self.catalog.invalidations
            backend.dataReceived(codec.encode(codec.CommandComplete("X")) + codec.encode(codec.ReadyForQuery(status)))
            self.assertEqual(self.catalog.invalidations - before, 1 if query == "COMMIT" else 0, query)
        client.dataReceived(codec.encode(codec.Query("SELECT 1")))
        backend.dataReceived(codec.encode(codec.CommandComplete("SELECT 1")) + codec.encode(codec.ReadyForQuery("I")))
        self.assertEqual(self.catalog.invalidations, 1)


class RememberedDescriptionTests(_FrontEndCase):
    def test_masked_after_masks_come_back(self) -> None:
        """
        The same query's RowDescription, decoded again, is the same object
        (codec._remembered): a plan masking made for it while a reload had
        removed the masks must not leave its next result unmasked.
        """
        from hoopgw.protocols.postgres.masking import ResultMasking
        from tests.protocols.postgres.test_masking import PEOPLE, PII, RELATIONS, field, session_masks

        masks = [session_masks(PII)]
        self.catalog = FixedCatalog(tables=RELATIONS)
        self.transform = ResultMasking(lambda: masks[0], self.catalog)
        client, transport, backend = self.start()
        ssn = b"536-22-8726"

        def query(text: str, description: codec.RowDescription, value: bytes) -> list[codec.Message]:
            transport.clear()
            client.dataReceived(encoded(codec.Query(text)))
            backend.dataReceived(encoded(
                description, codec.DataRow.from_values([value]), codec.CommandComplete("SELECT 1"), codec.ReadyForQuery("I")
            ))
            return [m for m in frames(transport.value()) if isinstance(m, codec.DataRow)]

        people = codec.RowDescription([field("ssn", PEOPLE, 2)])
        self.catalog.hold = True  # its plan waits for the catalog
        client.dataReceived(encoded(codec.Query("SELECT ssn FROM people")))
        backend.dataReceived(encoded(
            people, codec.DataRow.from_values([ssn]), codec.CommandComplete("SELECT 1"), codec.ReadyForQuery("I")
        ))
        masks[0] = None  # a reload removes the masks meanwhile
        self.catalog.release()
        masks[0] = session_masks(PII)  # and another brings them back
        query("SELECT true", codec.RowDescription([field("b", type_oid=16)]), b"t")
        [row] = query("SELECT ssn FROM people", people, ssn)
        self.assertNotEqual(row.values[0], ssn)


class LateDecisionTests(_FrontEndCase):
    def test_decision_that_ends_after_the_batch_failed(self) -> None:
        """
        If an earlier message of the batch fails while a Bind is being
        decided, the server skips that Bind: the gateway expects no answer
        for it (no desync at the ReadyForQuery) and records it as not run.
        """
        client, transport, backend = self.start()
        self.policy.hold = True
        client.dataReceived(
            b"".join(
                codec.encode(m)
                for m in (
                    codec.Bind("", "", (), (), ()),
                    codec.Parse("", "SELECT 1", ()),
                    codec.Bind("", "", (), (), ()),
                    codec.Sync(),
                )
            )
        )
        self.policy.release()  # the first Bind: forwarded with the Parse behind it
        backend.dataReceived(codec.encode(codec.error_response("ERROR", "26000", "unnamed prepared statement does not exist")))
        self.policy.release()  # the second Bind, decided after the batch failed
        backend.dataReceived(codec.encode(codec.ReadyForQuery("I")))
        answers = frames(transport.value())
        self.assertEqual([type(m) for m in answers], [codec.ErrorResponse, codec.ReadyForQuery])
        self.assertEqual(answers[0].code, "26000")
        ends = self.audit.of("action.end")
        self.assertEqual([e["outcome"]["status"] for e in ends], ["failed", "failed"])
        self.assertIn("not run", ends[1]["outcome"]["error"])
