"""
The target leg's start-up: which authentication requests the gateway
answers, per the connection's C{require_auth}.
"""

from __future__ import annotations

import attrs
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.postgres import codec
from hoopgw.protocols.postgres.auth import BackendAuthError
from hoopgw.protocols.postgres.backend import BackendProtocol

from .test_frontend import SETTINGS


def start(**settings: object) -> BackendProtocol:
    backend = BackendProtocol(
        attrs.evolve(SETTINGS, **settings), password="s3cret", startup={}, tls_options=None
    )
    backend.makeConnection(StringTransport())
    backend.transport.clear()
    backend.started = backend.ready  # the protocol lets go of it once fired
    return backend


def sent(backend: BackendProtocol) -> list[codec.Message]:
    parser = codec.FrontendParser()
    parser.feed(codec.encode(codec.StartupMessage({"user": "x"})))
    return parser.feed(backend.transport.value())


class RequireAuthTests(SynchronousTestCase):
    def refused(self, backend: BackendProtocol, method: str) -> None:
        failure = self.failureResultOf(backend.started, BackendAuthError)
        self.assertEqual(
            str(failure.value),
            f"the target asked for {method!r} authentication, which the connection's require_auth "
            f"({', '.join(backend.settings.require_auth)}) does not allow",
        )
        self.assertTrue(backend.transport.disconnecting or backend.transport.disconnected)

    def test_default_refuses_cleartext_and_md5(self) -> None:
        """By default a target asking for the password in clear, or for an
        MD5 hash, gets nothing: the password is never sent."""
        for request, method in (
            (codec.AuthenticationCleartextPassword(), "password"),
            (codec.AuthenticationMD5Password(b"salt"), "md5"),
        ):
            backend = start()
            backend.dataReceived(codec.encode(request))
            self.assertEqual(backend.transport.value(), b"")
            self.refused(backend, method)

    def test_listed_methods_answered(self) -> None:
        """A method listed in require_auth is answered."""
        backend = start(require_auth=("md5",))
        backend.dataReceived(codec.encode(codec.AuthenticationMD5Password(b"salt")))
        [answer] = sent(backend)
        self.assertIsInstance(answer, codec.PasswordMessage)
        self.assertTrue(answer.password.startswith(b"md5"))
        backend = start(require_auth=("password",))
        backend.dataReceived(codec.encode(codec.AuthenticationCleartextPassword()))
        self.assertEqual(sent(backend)[0].password, b"s3cret")

    def test_scram_allowed_by_default(self) -> None:
        """SCRAM is answered with a client-first message by default."""
        backend = start()
        backend.dataReceived(codec.encode(codec.AuthenticationSASL(("SCRAM-SHA-256",))))
        self.assertIn(b"SCRAM-SHA-256\x00", backend.transport.value())
        self.assertNoResult(backend.started)

    def test_scram_only_refuses_trust(self) -> None:
        """A connection that requires SCRAM refuses a target that lets the
        gateway in without asking (it may not be the real server)."""
        backend = start(require_auth=("scram-sha-256",))
        backend.dataReceived(codec.encode(codec.AuthenticationOk()))
        self.refused(backend, "none")

    def test_trust_allowed_by_default(self) -> None:
        """By default a trust target (no password asked) is accepted."""
        backend = start()
        backend.dataReceived(codec.encode(codec.AuthenticationOk()) + codec.encode(codec.ReadyForQuery("I")))
        self.assertIs(self.successResultOf(backend.started), backend)


class SkippedAuthenticationTests(SynchronousTestCase):
    def test_no_authentication_at_all(self) -> None:
        """A target that goes straight to ReadyForQuery (no AuthenticationOk)
        is refused, whatever require_auth says."""
        for require in (("scram-sha-256",), ("scram-sha-256", "none")):
            backend = start(require_auth=require)
            backend.dataReceived(codec.encode(codec.ReadyForQuery("I")))
            failure = self.failureResultOf(backend.started, BackendAuthError)
            self.assertEqual(str(failure.value), "the target sent ReadyForQuery before authentication succeeded")

    def test_scram_left_half_way(self) -> None:
        """A target that starts SCRAM and then sends ReadyForQuery (its
        signature never checked) is refused."""
        backend = start()
        backend.dataReceived(
            codec.encode(codec.AuthenticationSASL(("SCRAM-SHA-256",)))
            + codec.encode(codec.ParameterStatus("server_version", "15"))
            + codec.encode(codec.ReadyForQuery("I"))
        )
        failure = self.failureResultOf(backend.started, BackendAuthError)
        self.assertIn("before authentication succeeded", str(failure.value))
