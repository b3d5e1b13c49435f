"""
The PostgreSQL front end's logic with no sockets: in-memory services, the
client and the target on StringTransports, bytes made by the codec.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.config import PostgresSettings
from hoopgw.model import Connection, Decision, Effect, Identity
from hoopgw.protocols.postgres import codec
from hoopgw.protocols.postgres.frontend import PostgresFrontEnd, rows_from_tag
from hoopgw.testing import MemoryAuditLog, MemoryIdentityVerifier, StaticPolicy, memory_session_service

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

    def describe(self, description: codec.RowDescription) -> None:
        self.descriptions.append(description)

    def row(self, row: codec.DataRow) -> codec.DataRow:
        value = row.values[0]
        return row.replace_column(0, value.upper() if value is not None else None)


class FrontEndTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.audit = MemoryAuditLog()
        self.policy = StaticPolicy()
        self.sessions = memory_session_service(
            connections=(CONNECTION,),
            audit=self.audit,
            policy=self.policy,
            identity=MemoryIdentityVerifier(tokens={"good-token": ALICE}),
            clock=Clock(),
        )
        self.backends = []
        self.transform = None
        self.front = PostgresFrontEnd(
            sessions=self.sessions,
            tls_options=object(),
            reactor=Clock(),
            connect=self.connect,
            transform_for=lambda session: self.transform,
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
            + codec.encode(codec.BackendKeyData(4242, b"\x01\x02\x03\x04"))
            + codec.encode(codec.ReadyForQuery("I"))
        )
        welcome = frames(transport.value())
        self.assertEqual(
            [type(m) for m in welcome],
            [codec.AuthenticationOk, codec.ParameterStatus, codec.BackendKeyData, codec.ReadyForQuery],
        )
        # The client holds the gateway's own key, not the target's.
        self.assertNotEqual(welcome[2].process_id, 4242)
        transport.clear()
        return client, transport, backend

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
        If an Execute in a pipelined batch is refused, the target gets a
        stand-in Execute of a portal that does not exist in its place, and the
        client gets the target's answers in order with that error replaced by
        the gateway's 42501 naming the rule.
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
        self.assertEqual([type(m) for m in sent], [codec.Parse, codec.Bind, codec.Execute, codec.Sync])
        self.assertEqual(sent[2].portal, "hoopgw_refused_1")
        backend.dataReceived(
            b"".join(
                codec.encode(m)
                for m in (
                    codec.GenericMessage.from_body(b"1", b""),
                    codec.GenericMessage.from_body(b"2", b""),
                    codec.error_response("ERROR", "34000", 'portal "hoopgw_refused_1" does not exist'),
                    codec.ReadyForQuery("I"),
                )
            )
        )
        answers = frames(transport.value())
        self.assertEqual(answers[2].code, "42501")
        self.assertEqual(answers[2].message, "hoopgw: no deletes")
        self.assertIn("no-deletes", answers[2].detail)
        self.assertIsInstance(answers[3], codec.ReadyForQuery)
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

    def _tagged(self) -> codec.FrontendParser:
        parser = codec.FrontendParser()
        parser.feed(codec.encode(codec.StartupMessage({"user": "x"})))
        return parser

    def test_rows_from_tag(self) -> None:
        """CommandComplete tags give row counts where PostgreSQL puts one."""
        self.assertEqual(
            [rows_from_tag(t) for t in ("SELECT 5", "INSERT 0 3", "UPDATE 2", "COPY 10", "CREATE TABLE", "BEGIN")],
            [5, 3, 2, 10, None, None],
        )
