"""The start-up handshake's logic (startup.py); through real clients in tests/integration."""

from __future__ import annotations

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.errors import AuditUnavailable, AuthenticationFailed, NotPermitted, WrongKind
from hoopgw.protocols.postgres import codec, lexical, startup
from hoopgw.protocols.postgres.backend import BackendAuthError, TargetUnreachable


class HandshakeTests(SynchronousTestCase):
    def test_tls_then_startup_then_token(self) -> None:
        handshake = startup.Handshake(tls_available=True)
        self.assertEqual(handshake.receive(codec.GSSENCRequest()), startup.Encryption(b"N"))
        self.assertEqual(handshake.receive(codec.SSLRequest()), startup.Encryption(b"S", start_tls=True))
        # A second SSLRequest once TLS runs: no.
        self.assertEqual(handshake.receive(codec.SSLRequest()), startup.Encryption(b"N"))
        message = codec.StartupMessage({"user": "alice", "database": "appdb", "application_name": "psql"})
        self.assertEqual(handshake.receive(message), startup.AskPassword())
        self.assertEqual(handshake.receive(codec.PasswordMessage(b"tok\xffen")), startup.Authenticate("tok\ufffden"))
        self.assertEqual((handshake.user, handshake.database), ("alice", "appdb"))
        self.assertEqual(handshake.client(), {"user": "alice", "application_name": "psql", "tls": True})
        # Nothing more is start-up.
        self.assertEqual(handshake.receive(codec.PasswordMessage(b"x")).code, "08P01")

    def test_plaintext_startup_is_refused_before_the_password(self) -> None:
        handshake = startup.Handshake(tls_available=True)
        step = handshake.receive(codec.StartupMessage({"user": "alice"}))
        self.assertEqual(step.code, "28000")
        handshake = startup.Handshake(tls_available=False)
        self.assertEqual(handshake.receive(codec.SSLRequest()), startup.Encryption(b"N"))
        self.assertEqual(handshake.receive(codec.StartupMessage({"user": "alice"})).code, "28000")

    def test_out_of_order(self) -> None:
        handshake = startup.Handshake(tls_available=True)
        self.assertEqual(handshake.receive(codec.PasswordMessage(b"early")).code, "08P01")
        handshake = startup.Handshake(tls_available=True)
        request = codec.CancelRequest(1, b"\x00\x00\x00\x01")
        self.assertEqual(handshake.receive(request), startup.Cancel(request))

    def test_database_defaults_to_the_user(self) -> None:
        handshake = startup.Handshake(tls_available=True)
        handshake.receive(codec.SSLRequest())
        handshake.receive(codec.StartupMessage({"user": "alice"}))
        self.assertEqual(handshake.database, "alice")


class ParameterTests(SynchronousTestCase):
    def test_only_passed_parameters_and_the_pins(self) -> None:
        message = codec.StartupMessage(
            {"user": "alice", "database": "appdb", "options": "-c standard_conforming_strings=off",
             "TimeZone": "UTC", "replication": "database", "standard_conforming_strings": "off"}
        )
        parameters = startup.target_parameters(message)
        self.assertEqual(parameters["TimeZone"], "UTC")
        for absent in ("user", "database", "options", "replication"):
            self.assertNotIn(absent, parameters)
        for name, value in lexical.PINNED.items():
            self.assertEqual(parameters[name], value)

    def test_welcome_carries_the_gateways_key(self) -> None:
        messages = startup.welcome({"server_version": "15.0"}, 77, b"\x01\x02\x03\x04")
        self.assertEqual(
            [type(m) for m in messages],
            [codec.AuthenticationOk, codec.ParameterStatus, codec.BackendKeyData, codec.ReadyForQuery],
        )
        self.assertEqual(messages[2].process_id, 77)


class RefusalTests(SynchronousTestCase):
    def test_codes(self) -> None:
        cases = (
            (AuthenticationFailed("expired"), "28P01", None, False),
            (NotPermitted(None, "no rule allows it"), "28000", None, False),
            (WrongKind(None, "web1", "ssh", "postgres"), "3D000", None, False),
            (AuditUnavailable("disk full"), "57P03", None, False),
            (BackendAuthError("bad password"), "08006", "bad password", False),
            (TargetUnreachable("connection refused by 127.0.0.1:5432"), "08001", "connection refused by 127.0.0.1:5432", False),
            (RuntimeError("bug"), "08006", "internal error", True),
        )
        for error, code, session_error, unexpected in cases:
            refusal = startup.refusal(Failure(error), "alice")
            self.assertEqual((refusal.code, refusal.session_error, refusal.unexpected), (code, session_error, unexpected), error)
        self.assertIn('"alice"', startup.refusal(Failure(AuthenticationFailed("expired")), "alice").message)

    def test_wrong_kind_names_the_kind(self) -> None:
        """A database naming a connection of another kind reads as the server's own 3D000, naming both kinds."""
        refusal = startup.refusal(Failure(WrongKind(None, "web1", "ssh", "postgres")), "alice")
        self.assertEqual((refusal.code, refusal.message), ("3D000", 'connection "web1" is of kind ssh, not postgres'))
