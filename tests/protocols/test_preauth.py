"""
The listeners' pre-authentication limits (L{hoopgw.protocols._preauth}) on a
L{task.Clock}, and their configuration.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.config import PreauthLimits, PreauthSettings, effective_config, loads
from hoopgw.errors import ConfigError
from hoopgw.frontends import installed
from hoopgw.model import Source
from hoopgw.protocols import _preauth
from hoopgw.protocols.postgres import codec
from tests.adversarial.preauth_corpus import StartupStreamTests  # noqa: F401  (collected here)

LIMITS = PreauthLimits(timeout=60, max_per_source=2, max_per_listener=4, max_bytes=65536)


class Recorder(Protocol):
    """The listener's protocol: keeps what it got."""

    def __init__(self) -> None:
        self.data = b""
        self.made = False
        self.lost = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = True


class Transport(StringTransport):
    """A transport whose abort is seen (and that is lost once aborted)."""

    def __init__(self, peer: object) -> None:
        super().__init__(peerAddress=peer)
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class _Case(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.records: list[tuple[Source, str]] = []
        self.guard = self.make_guard(LIMITS)

    def make_guard(self, limits: PreauthLimits, *, refusal: bytes = b"go away\r\n", proxied: bool = False) -> _preauth.PreauthGuard:
        guard = _preauth.PreauthGuard(
            Factory.forProtocol(Recorder),
            listener="postgres",
            limits=limits,
            clock=self.clock,
            record=lambda source, reason: self.records.append((source, reason)),
            refusal=refusal,
            proxied=proxied,
        )
        guard.doStart()
        return guard

    def connect(self, host: str = "10.0.0.1", port: int = 40000, *, guard: _preauth.PreauthGuard | None = None):
        guard = guard or self.guard
        address = IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)
        protocol = guard.buildProtocol(address)
        transport = Transport(address)
        protocol.makeConnection(transport)
        return protocol, transport

    def lose(self, protocol: Protocol) -> None:
        protocol.connectionLost(Failure(ConnectionDone()))


class DeadlineTests(_Case):
    def test_unauthenticated_connection_closed_at_the_deadline(self) -> None:
        """A connection that has not authenticated when the deadline passes is aborted and recorded."""
        protocol, transport = self.connect()
        self.assertTrue(protocol.wrappedProtocol.made)
        self.clock.advance(59.9)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)
        [(source, reason)] = self.records
        self.assertEqual(source, Source("postgres", "10.0.0.1:40000"))
        self.assertEqual(reason, "not authenticated within 60 s of connecting (timeout)")
        self.assertEqual(self.guard.pending, set())
        self.assertEqual(self.guard.per_source, {})
        self.assertEqual(self.clock.getDelayedCalls(), [self.guard._log_timer])

    def test_authenticated_connection_is_not_affected(self) -> None:
        """
        After L{_preauth.authenticated} the deadline no longer applies, the
        connection no longer counts, and reads go straight to the protocol.
        """
        protocol, transport = self.connect()
        inner = protocol.wrappedProtocol
        _preauth.authenticated(inner)
        _preauth.authenticated(inner)  # twice is fine
        self.assertEqual(self.guard.pending, set())
        self.clock.advance(3600)
        self.assertFalse(transport.aborted)
        self.assertEqual(self.records, [])
        self.assertEqual(protocol.dataReceived, inner.dataReceived)
        protocol.dataReceived(b"x" * 1_000_000)
        self.assertEqual(len(inner.data), 1_000_000)
        self.assertFalse(transport.aborted)

    def test_authenticated_through_a_tls_layer(self) -> None:
        """A protocol under a TLS layer (the HTTP listener) finds the guard below its transport."""
        protocol, transport = self.connect()
        tls = protocol.wrappedProtocol  # stands for TLSMemoryBIOProtocol
        above = Recorder()
        above.makeConnection(tls)
        self.assertTrue(_preauth.guarded(above))
        _preauth.authenticated(above)
        self.assertEqual(self.guard.pending, set())

    def test_not_guarded(self) -> None:
        """Outside a guarded listener (unit tests of the front ends) the hook does nothing."""
        protocol = Recorder()
        protocol.makeConnection(StringTransport())
        self.assertFalse(_preauth.guarded(protocol))
        _preauth.authenticated(protocol)
        _preauth.authenticated(Recorder())

    def test_lost_connection_releases_its_place(self) -> None:
        """A connection that goes away stops counting and leaves no timer behind."""
        protocol, transport = self.connect()
        self.lose(protocol)
        self.assertEqual(self.guard.pending, set())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(protocol.connected, 0)

    def test_writes_do_not_go_through_the_wrapper(self) -> None:
        protocol, transport = self.connect()
        protocol.wrappedProtocol.transport.write(b"hello")
        self.assertEqual(protocol.write, transport.write)
        self.assertEqual(transport.value(), b"hello")


class CapTests(_Case):
    def test_per_source_cap(self) -> None:
        """
        The (max_per_source + 1)th pending connection from one source is
        refused at once with the refusal message; another source still gets
        in; once one authenticates, the source has room again.
        """
        first, _ = self.connect(port=1)
        self.connect(port=2)
        refused, transport = self.connect(port=3)
        self.assertIsInstance(refused, _preauth._Refused)
        self.assertEqual(transport.value(), b"go away\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            self.records,
            [(Source("postgres", "10.0.0.1:3"), "too many connections still authenticating from this source (max_per_source 2)")],
        )
        other, _ = self.connect("10.0.0.2")
        self.assertIsInstance(other, _preauth._Guarded)
        _preauth.authenticated(first.wrappedProtocol)
        again, _ = self.connect(port=4)
        self.assertIsInstance(again, _preauth._Guarded)

    def test_refused_connection_is_aborted_if_it_does_not_go(self) -> None:
        self.connect(port=1)
        self.connect(port=2)
        refused, transport = self.connect(port=3)
        self.clock.advance(_preauth.REFUSAL_GRACE)
        self.assertTrue(transport.aborted)
        refused.connectionLost(Failure(ConnectionDone()))

    def test_refusal_without_a_message_aborts(self) -> None:
        """The HTTP listener is TLS from the first byte: nothing is written, the connection is aborted."""
        guard = self.make_guard(LIMITS, refusal=b"")
        for port in (1, 2):
            self.connect(port=port, guard=guard)
        _, transport = self.connect(port=3, guard=guard)
        self.assertTrue(transport.aborted)
        self.assertEqual(transport.value(), b"")

    def test_per_listener_cap(self) -> None:
        """Past max_per_listener pending connections, every source is refused."""
        for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"):
            self.connect(host)
        refused, _ = self.connect("10.0.0.5")
        self.assertIsInstance(refused, _preauth._Refused)
        self.assertIn("max_per_listener 4", self.records[-1][1])

    def test_ipv6_counts_per_64(self) -> None:
        """IPv6 addresses of one /64 are one source; another /64 is another."""
        self.connect("2001:db8:0:1::1")
        self.connect("2001:db8:0:1:ffff::2")
        refused, _ = self.connect("2001:db8:0:1::3")
        self.assertIsInstance(refused, _preauth._Refused)
        other, _ = self.connect("2001:db8:0:2::1")
        self.assertIsInstance(other, _preauth._Guarded)

    def test_source_keys(self) -> None:
        self.assertEqual(_preauth.source_key(IPv4Address("TCP", "10.1.2.3", 5)), "10.1.2.3")
        self.assertEqual(_preauth.source_key(IPv6Address("TCP", "::ffff:10.1.2.3", 5)), "10.1.2.3")
        self.assertEqual(_preauth.source_key(IPv6Address("TCP", "fe80::1%eth0", 5)), "fe80::/64")
        self.assertEqual(_preauth.source_key(IPv6Address("TCP", "2001:db8::1", 5)), "2001:db8::/64")
        self.assertIsNone(_preauth.source_key(UNIXAddress("/run/hoopgw.sock")))
        self.assertIsNone(_preauth.source_key(None))

    def test_unix_sockets_count_only_per_listener(self) -> None:
        for _ in range(4):
            protocol = self.guard.buildProtocol(UNIXAddress(None))
            self.assertIsInstance(protocol, _preauth._Guarded)
            protocol.makeConnection(Transport(UNIXAddress(None)))
        self.assertIsInstance(self.guard.buildProtocol(UNIXAddress(None)), _preauth._Refused)

    def test_byte_budget(self) -> None:
        """A pending connection sending more than max_bytes is closed before the excess reaches the protocol."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"x" * 65536)
        self.assertFalse(transport.aborted)
        protocol.dataReceived(b"y")
        self.assertTrue(transport.aborted)
        self.assertEqual(len(protocol.wrappedProtocol.data), 65536)
        self.assertEqual(self.records[-1][1], "sent more than 65536 bytes before authenticating (max_bytes)")

    def test_proxied_listener_counts_the_client_at_its_first_bytes(self) -> None:
        """
        Behind a PROXY-protocol listener, the address at accept is the proxy's:
        connections are counted per source once the client's address is known.
        """
        guard = self.make_guard(LIMITS, proxied=True)
        transports = []
        for port in (1, 2, 3):
            protocol = guard.buildProtocol(IPv4Address("TCP", "10.9.9.9", port))  # the proxy
            self.assertIsInstance(protocol, _preauth._Guarded)
            transport = Transport(IPv4Address("TCP", "192.0.2.7", port))  # the client, from the header
            protocol.makeConnection(transport)
            transports.append((protocol, transport))
        for protocol, transport in transports:
            protocol.dataReceived(b"SSH-2.0-x\r\n")
        self.assertEqual([t.aborted for _, t in transports], [False, False, True])
        self.assertEqual(guard.per_source, {"192.0.2.7": 2})
        self.assertEqual(len(guard.pending), 2)


class RecordingTests(_Case):
    def test_log_is_rate_limited(self) -> None:
        """The first closing of a window is logged at once, the rest as one summary line."""
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        guard = self.make_guard(PreauthLimits(timeout=5, max_per_source=1000, max_per_listener=1000, max_bytes=65536))
        for port in range(100):
            self.connect(port=port, guard=guard)
        self.clock.advance(5)
        self.assertEqual(len(self.records), 100)
        mine = [e for e in events if e.get("listener") == "postgres"]
        self.assertEqual(len(mine), 1)
        self.clock.advance(_preauth.LOG_WINDOW)
        mine = [e for e in events if e.get("listener") == "postgres"]
        self.assertEqual(len(mine), 2)
        self.assertEqual(mine[1]["total"], 99)
        self.assertEqual(mine[1]["details"], "deadline: 99")
        self.clock.advance(_preauth.LOG_WINDOW)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_closes_pending_connections(self) -> None:
        """When the listener stops, connections still authenticating are closed and no timer is left."""
        pending, pending_transport = self.connect(port=1)
        done, done_transport = self.connect(port=2)
        _preauth.authenticated(done.wrappedProtocol)
        self.guard.doStop()
        self.assertTrue(pending_transport.aborted)
        self.assertFalse(done_transport.aborted)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.lose(pending)

    def test_refusals(self) -> None:
        """
        Each front end's refusal is what its protocol lets the server say
        first, from its plugin; a front end that says nothing (HTTP is TLS
        from the first byte, or a plugin without C{busy}) closes plainly.
        """
        front_ends = installed()
        message = _preauth.BUSY_MESSAGE
        [error] = codec.BackendParser().feed(front_ends["postgres"].busy_refusal(message))
        self.assertEqual((error.code, error.severity, error.message), ("53300", "FATAL", message))
        ssh = front_ends["ssh"].busy_refusal(message)
        self.assertEqual(ssh, message.encode() + b"\r\n")
        self.assertFalse(ssh.startswith(b"SSH-"))
        self.assertEqual(front_ends["http"].busy_refusal(message), b"")
        self.assertTrue(_preauth.api_refusal().startswith(b"HTTP/1.1 503 "))


class ConfigTests(SynchronousTestCase):
    def load(self, text: str):
        return loads(text, source=Path("hoopgw.toml"), base_dir=Path("/tmp"))

    def assertError(self, text: str, message: str) -> None:
        error = self.assertRaises(ConfigError, self.load, text)
        self.assertEqual(str(error), "hoopgw.toml: " + message)

    def test_defaults(self) -> None:
        """60 s everywhere but SSH (120 s, as LoginGraceTime); 32 per source, 256 per listener, 256 KiB."""
        settings = self.load("").preauth
        self.assertEqual(settings, PreauthSettings())
        self.assertEqual(settings["postgres"], PreauthLimits(60, 32, 256, 262144))
        self.assertEqual(settings["ssh"].timeout, 120)
        self.assertEqual(effective_config(self.load(""))["preauth"]["ssh"]["timeout"], 120)

    def test_shared_and_per_listener(self) -> None:
        """[preauth] applies to every listener, [preauth.<listener>] overrides it for one."""
        settings = self.load(
            '[preauth]\ntimeout = "30s"\nmax_per_source = 8\n'
            '[preauth.ssh]\ntimeout = "2m"\n[preauth.api]\nmax_per_listener = 16\nmax_bytes = 65536\n'
        ).preauth
        self.assertEqual(settings["postgres"], PreauthLimits(30, 8, 256, 262144))
        self.assertEqual(settings["http"], PreauthLimits(30, 8, 256, 262144))
        self.assertEqual(settings["ssh"], PreauthLimits(120, 8, 256, 262144))
        self.assertEqual(settings["api"], PreauthLimits(30, 8, 16, 65536))

    def test_errors(self) -> None:
        self.assertError(
            "[preauth]\ntimout = 5\n",
            'preauth.timout: unknown key; expected one of "api", "http", "max_bytes", '
            '"max_per_listener", "max_per_source", "postgres", "ssh", "timeout"',
        )
        self.assertError(
            "[preauth.ssh]\nmax_per_sorce = 5\n",
            'preauth.ssh.max_per_sorce: unknown key; expected one of "max_bytes", '
            '"max_per_listener", "max_per_source", "timeout"',
        )
        self.assertError(
            '[preauth]\ntimeout = "0s"\n',
            'preauth.timeout: expected a positive duration such as "30s", "15m", "2h", "1d" or "1h30m" '
            '(or whole seconds), got "0s"',
        )
        self.assertError(
            "[preauth.postgres]\nmax_per_source = 0\n",
            "preauth.postgres.max_per_source: expected a positive integer, got 0",
        )
        self.assertError(
            '[preauth.http]\nmax_per_listener = "many"\n',
            "preauth.http.max_per_listener: expected a positive integer, got a string",
        )
        self.assertError(
            "[preauth]\nmax_bytes = 1000\n",
            "preauth.max_bytes: expected a number of bytes of at least 65536 "
            "(a TLS handshake and a token or request head must fit), got 1000",
        )
        self.assertError("[preauth]\nssh = 5\n", "preauth.ssh: expected a table ([preauth.ssh]), got an integer")
