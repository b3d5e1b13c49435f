"""The SSH server's login service (server.py); through the real ssh client in tests/integration."""

from __future__ import annotations

from twisted.conch.ssh import transport
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.model import Source
from hoopgw.protocols.ssh.server import GatewayUserAuthServer, LoginState
from hoopgw.testing import MemoryAuditLog, memory_session_service


class _Transport:
    """What the login service uses of its transport: the login state, and disconnects."""

    def __init__(self, login: LoginState) -> None:
        self.login = login
        self.disconnects: list[tuple[int, bytes]] = []

    def sendDisconnect(self, reason: int, description: bytes) -> None:
        self.disconnects.append((reason, description))


class InfoResponseTests(SynchronousTestCase):
    def test_unexpected_info_response_is_refused_and_recorded(self) -> None:
        """
        A keyboard-interactive answer nobody asked for breaks the protocol:
        the client is disconnected (protocol error) and one request.refused
        record says so, with the user name it tried.
        """
        audit = MemoryAuditLog()
        sessions = memory_session_service(audit=audit)
        login = LoginState(sessions=sessions, source=Source("ssh", "10.0.0.5:40000"), user="web1")
        service = GatewayUserAuthServer()
        service.transport = _Transport(login)
        service._conversation = None
        service.ssh_USERAUTH_INFO_RESPONSE(b"\x00\x00\x00\x00")
        self.assertEqual(service.transport.disconnects, [(transport.DISCONNECT_PROTOCOL_ERROR, b"unexpected info response")])
        [record] = audit.of("request.refused")
        self.assertEqual(
            {k: v for k, v in record.items() if k not in ("seq", "event", "gateway")},
            {
                "source": "10.0.0.5:40000",
                "protocol": "ssh",
                "code": transport.DISCONNECT_PROTOCOL_ERROR,
                "request": {"message": "USERAUTH_INFO_RESPONSE"},
                "user": "web1",
                "outcome": {"status": "blocked", "error": "unexpected info response"},
            },
        )
