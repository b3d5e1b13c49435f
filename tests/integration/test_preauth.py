"""
Issue 11, item 12 against the real listeners: the whole gateway in-process
(PostgreSQL, SSH, HTTP and API listeners on loopback, with a 2 s
pre-authentication deadline and 3 pending connections per source), attacked
by raw clients of the test's own over real sockets.  Each attack test fails
against the gateway before the pre-authentication limits (a 200 MiB
PasswordMessage was read and held, idle connections stayed open for ever or
60 s, a source could open any number of pending connections); an
authenticated session is not affected by the deadline.

And the HTTP half of item 6: credentials in query strings, sent with the
real curl, never reach the audit trail, while the upstream gets the request
untouched.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IHandshakeListener, IPullProducer
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web import resource, server
from zope.interface import implementer

from hoopgw.audit.search import search
from hoopgw.config import loads
from hoopgw.gateway import Gateway
from hoopgw.protocols.postgres import codec
from tests.integration._postgres import start_postgres
from tests.integration._process import run
from tests.integration._ssh import SSHGatewayCase
from tests.integration.test_postgres_proxy import PSQL, require

TIMEOUT = 2.0  # the test gateway's [preauth] timeout
PER_SOURCE = 3
CURL = shutil.which("curl")

SSL_REQUEST = struct.pack(">ii", 8, codec.SSL_REQUEST_CODE)
STARTUP = codec.encode(codec.StartupMessage({"user": "alice", "database": "appdb"}))
ASK_PASSWORD = codec.encode(codec.AuthenticationCleartextPassword())


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


@implementer(IHandshakeListener)
class Client(Protocol):
    """A raw client: what it received, when it was closed, its TLS handshake."""

    def __init__(self) -> None:
        self.received = b""
        self.connected_at = 0.0
        self.lost_at: float | None = None
        self.closed: Deferred = Deferred()
        self.handshake: Deferred = Deferred()
        self._waiting: list[tuple[bytes, Deferred]] = []

    def connectionMade(self) -> None:
        self.connected_at = reactor.seconds()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for waiter in list(self._waiting):
            if waiter[0] in self.received:
                self._waiting.remove(waiter)
                waiter[1].callback(self.received)

    def wait_for(self, marker: bytes, timeout: float = 10) -> Deferred:
        if marker in self.received:
            d: Deferred = Deferred()
            d.callback(self.received)
            return d
        d = Deferred()
        self._waiting.append((marker, d))
        return d.addTimeout(timeout, reactor)

    def handshakeCompleted(self) -> None:
        self.handshake.callback(None)

    def start_tls(self) -> Deferred:
        self.transport.startTLS(CertificateOptions())
        return self.handshake.addTimeout(10, reactor)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost_at = reactor.seconds()
        for _, waiter in self._waiting:
            waiter.errback(reason)
        self._waiting = []
        self.closed.callback(None)

    @property
    def open_for(self) -> float:
        assert self.lost_at is not None
        return self.lost_at - self.connected_at


def connect(port: int, source: str = "127.0.0.1") -> Deferred:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    return connectProtocol(endpoint, Client())


@implementer(IPullProducer)
class Flood:
    """Up to C{size} bytes of junk, written only as fast as the socket takes them."""

    def __init__(self, transport: Any, size: int) -> None:
        self.transport = transport
        self.left = size
        self.sent = 0
        self.chunk = b"\x00" * 65536

    def resumeProducing(self) -> None:
        if self.left <= 0:
            self.transport.unregisterProducer()
            return
        self.left -= len(self.chunk)
        self.sent += len(self.chunk)
        self.transport.write(self.chunk)

    def stopProducing(self) -> None:
        self.left = 0


class _Upstream(resource.Resource):
    """The HTTP connection's upstream: answers 200 and keeps the URIs it received."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.uris: list[str] = []

    def render(self, request: server.Request) -> bytes:
        self.uris.append(request.uri.decode())
        request.setHeader(b"content-type", b"application/json")
        return b'{"ok": true}'


class PreauthListenerTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)
        self.upstream = _Upstream()
        upstream_port = reactor.listenTCP(0, server.Site(self.upstream), interface="127.0.0.1")
        self.addCleanup(upstream_port.stopListening)
        self.config_text = f"""
[gateway]
data_dir = "data"
[listen]
postgres = "tcp:0:interface=127.0.0.1"
ssh = "tcp:0:interface=127.0.0.1"
http = "tcp:0:interface=127.0.0.1"
api = "tcp:0:interface=127.0.0.1"
[preauth]
timeout = "{int(TIMEOUT)}s"
max_per_source = {PER_SOURCE}
max_per_listener = 50
[[connections]]
name = "appdb"
kind = "postgres"
address = "127.0.0.1:1"
database = "app"
user = "app"
tls = "disable"
[[connections]]
name = "web"
kind = "http"
upstream = "http://127.0.0.1:{upstream_port.getHost().port}/base"
"""
        config = loads(self.config_text, source=None, base_dir=self.base)
        self.gateway = Gateway(config, reactor=reactor)
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        self.ports = {name: listener.port.getHost().port for name, listener in self.gateway.listeners.items()}
        self.token = self.gateway.identity.dev_issuer.issue("alice", ("dev",), 600)
        self.clients: list[Client] = []
        self.addCleanup(self._close_clients)

    def _close_clients(self) -> Deferred:
        waiting = []
        for client in self.clients:
            if client.lost_at is None:
                client.transport.abortConnection()
                waiting.append(client.closed)
        return gatherResults(waiting)

    @inlineCallbacks
    def client(self, listener: str, source: str = "127.0.0.1"):
        client = yield connect(self.ports[listener], source)
        self.clients.append(client)
        return client

    def records(self, event: str) -> list[dict]:
        return list(search(self.base / "data" / "audit", event=event))

    def logged(self) -> list[str]:
        from twisted.logger import formatEvent

        events: list[str] = []
        observer: Callable[[dict], None] = lambda event: events.append(formatEvent(event))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return events

    # -- the PostgreSQL start-up phase ----------------------------------------

    @inlineCallbacks
    def postgres_until_password(self, source: str = "127.0.0.1"):
        """A client through SSLRequest, TLS and StartupMessage, asked for its password."""
        client = yield self.client("postgres", source)
        client.transport.write(SSL_REQUEST)
        yield client.wait_for(b"S")
        yield client.start_tls()
        client.transport.write(STARTUP)
        yield client.wait_for(ASK_PASSWORD)
        return client

    @inlineCallbacks
    def test_huge_password_message_is_refused_at_once(self):
        """
        A PasswordMessage announcing 200 MiB, then streaming junk, is refused
        as soon as its 5 header bytes are in: the connection is closed long
        before its deadline, after a few MiB at most crossed the socket
        buffers, and the gateway's memory does not grow with what was sent.
        """
        logged = self.logged()
        client = yield self.postgres_until_password()
        before = rss_kb()
        client.transport.write(b"p" + struct.pack(">i", 200 << 20))
        flood = Flood(client.transport, 64 << 20)
        client.transport.registerProducer(flood, False)
        yield client.closed.addTimeout(3 * TIMEOUT + 10, reactor)
        grown = rss_kb() - before
        self.assertLess(client.open_for, TIMEOUT, "closed by the deadline, not at once")
        self.assertLess(flood.sent, 32 << 20)
        self.assertLess(grown, 16 * 1024, f"the gateway grew by {grown} KiB")
        self.assertTrue(
            any("declares length 209715200, which exceeds the limit of 17408 bytes" in line for line in logged),
            logged,
        )

    # -- the deadline, on every listener --------------------------------------

    @inlineCallbacks
    def test_connections_that_never_authenticate_are_closed_at_the_deadline(self):
        """
        On every listener, a connection that does not authenticate is closed
        at the deadline (not before), whatever it did or did not send: raw
        TCP, TLS and nothing more, a start-up packet and no password, an SSH
        version line, a request head trickled a byte at a time (slowloris).
        Each closing is recorded as a rate-limited auth.failed.
        """
        started = reactor.seconds()
        attacks: dict[str, Client] = {}
        source = iter(f"127.0.1.{n}" for n in range(1, 100))

        for listener in ("postgres", "ssh", "http", "api"):
            attacks[f"{listener}: raw TCP, silent"] = yield self.client(listener, next(source))

        client = yield self.client("postgres", next(source))
        client.transport.write(SSL_REQUEST)
        yield client.wait_for(b"S")
        yield client.start_tls()
        attacks["postgres: TLS, no start-up message"] = client
        attacks["postgres: start-up, no password"] = yield self.postgres_until_password(next(source))

        client = yield self.client("ssh", next(source))
        yield client.wait_for(b"SSH-2.0-")
        client.transport.write(b"SSH-2.0-OpenSSH_9.6 attacker\r\n")
        attacks["ssh: version line, then nothing"] = client

        client = yield self.client("http", next(source))
        yield client.start_tls()
        attacks["http: TLS, no request"] = client

        trickles = []
        for listener, tls in (("http", True), ("api", False)):
            client = yield self.client(listener, next(source))
            if tls:
                yield client.start_tls()
            head = iter(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 1000)
            trickle = LoopingCall(lambda c=client, h=head: c.transport.write(bytes([next(h)])))
            trickle.start(0.2)
            trickles.append(trickle)
            attacks[f"{listener}: request head a byte every 0.2 s"] = client

        try:
            yield gatherResults([c.closed for c in attacks.values()]).addTimeout(TIMEOUT + 10, reactor)
        finally:
            for trickle in trickles:
                if trickle.running:
                    trickle.stop()
        for what, client in attacks.items():
            self.assertGreaterEqual(client.open_for, TIMEOUT - 0.5, what)
            self.assertLess(client.lost_at - started, TIMEOUT + 8, what)
        yield sleep(0.2)
        reasons = [r for r in self.records("auth.failed") if r.get("method") == "preauth"]
        self.assertEqual(
            {r["protocol"] for r in reasons if r["reason"] == f"not authenticated within {TIMEOUT:g} s of connecting (timeout)"},
            {"postgres", "ssh", "http", "api"},
        )
        for listener in self.gateway.listeners.values():
            self.assertEqual(listener.guard.pending, set())

    # -- the caps -------------------------------------------------------------

    @inlineCallbacks
    def test_nth_pending_connection_from_one_source_is_refused(self):
        """
        With max_per_source pending connections open from one address, the
        next one from it is refused at once, on every listener, with a
        message where the protocol lets the server speak first; another
        address still gets in.
        """
        expected = {
            "postgres": b"E",  # FATAL 53300
            "ssh": b"hoopgw: too many connections",
            "api": b"HTTP/1.1 503 ",
            "http": b"",  # TLS from the first byte: closed without a word
        }
        for listener, refusal in expected.items():
            held = []
            for _ in range(PER_SOURCE):
                held.append((yield self.client(listener, "127.0.2.1")))
            yield sleep(0.2)  # accepted and counted
            refused = yield self.client(listener, "127.0.2.1")
            yield refused.closed.addTimeout(5, reactor)
            self.assertLess(refused.open_for, 1.5, listener)
            self.assertTrue(refused.received.startswith(refusal), (listener, refused.received))
            if listener == "postgres":
                [error] = codec.BackendParser().feed(refused.received)
                self.assertEqual(error.code, "53300")
            if listener == "ssh":
                self.assertNotIn(b"SSH-2.0-", refused.received)

            other = yield self.client(listener, "127.0.2.2")
            if listener == "postgres":
                other.transport.write(SSL_REQUEST)
                yield other.wait_for(b"S")
            elif listener == "ssh":
                yield other.wait_for(b"SSH-2.0-")
            elif listener == "http":
                yield other.start_tls()
            else:
                other.transport.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                yield other.wait_for(b"HTTP/1.1 200 ")
            self.assertIsNone(other.lost_at, listener)
            for client in [*held, other]:
                client.transport.abortConnection()
                yield client.closed
        refusals = [r for r in self.records("auth.failed") if r.get("method") == "preauth"]
        self.assertEqual(
            sorted(r["protocol"] for r in refusals),
            ["api", "http", "postgres", "ssh"],
        )
        for record in refusals:
            self.assertEqual(
                record["reason"],
                f"too many connections still authenticating from this source (max_per_source {PER_SOURCE})",
            )
            self.assertTrue(record["source"].startswith("127.0.2.1:"))

    # -- what must not change -------------------------------------------------

    @inlineCallbacks
    def test_authenticated_http_connection_outlives_the_deadline(self):
        """A keep-alive connection whose first request authenticated carries requests past the deadline."""
        client = yield self.client("http")
        yield client.start_tls()
        request = (
            f"GET /web/items?limit=1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {self.token}\r\n\r\n"
        ).encode()
        client.transport.write(request)
        yield client.wait_for(b'{"ok": true}')
        yield sleep(TIMEOUT + 1)
        self.assertIsNone(client.lost_at)
        client.received = b""
        client.transport.write(request)
        yield client.wait_for(b'{"ok": true}')
        self.assertTrue(client.received.startswith(b"HTTP/1.1 200 "))
        self.assertEqual(self.gateway.listeners["http"].guard.pending, set())

    @inlineCallbacks
    def test_unauthenticated_http_requests_do_not_extend_the_deadline(self):
        """Requests refused 401 on a keep-alive connection do not keep it past the deadline."""
        client = yield self.client("http")
        yield client.start_tls()
        loop = LoopingCall(lambda: client.transport.write(b"GET /web/x HTTP/1.1\r\nHost: gw\r\n\r\n"))
        loop.start(0.3)
        try:
            yield client.closed.addTimeout(TIMEOUT + 10, reactor)
        finally:
            loop.stop()
        self.assertIn(b"401 Unauthorized", client.received)
        self.assertGreaterEqual(client.open_for, TIMEOUT - 0.5)

    # -- item 6: credentials in query strings ----------------------------------

    @inlineCallbacks
    def test_credentials_in_query_strings_never_reach_the_trail(self):
        """
        curl sends credentials in the query (and in a refused request's
        target); the upstream gets them untouched, the audit trail has only
        their names and the marker.
        """
        if CURL is None:
            if os.environ.get("CI") == "true":
                raise AssertionError("curl is missing under CI")
            raise SkipTest("curl is not installed")
        secrets = ["S3cretAccess", "S3cretSig", "S3cretPass", "S3cretKey", "S3cretRefused"]
        base = f"https://127.0.0.1:{self.ports['http']}"
        common = [CURL, "-sS", "--cacert", str(self.gateway.tls_cert), "-H", f"Authorization: Bearer {self.token}"]
        query = (
            f"/web/items?limit=5&access_token={secrets[0]}&Sig={secrets[1]}"
            f"&pass%77ord={secrets[2]}&X-API-Key={secrets[3]}&access_token={secrets[0]}"
        )
        code, output = yield run([*common, "-o", "/dev/null", "-w", "%{http_code}", base + query])
        self.assertEqual((code, output), (0, b"200"), output)
        # A refused target (a ';' in the query) is recorded in request.refused.
        code, output = yield run([*common, "-o", "/dev/null", "-w", "%{http_code}", base + f"/web/x?a=1;token={secrets[4]}"])
        self.assertEqual((code, output), (0, b"400"), output)

        self.assertEqual(self.upstream.uris, ["/base" + query.removeprefix("/web")])
        yield sleep(0.2)
        trail = "".join(p.read_text(errors="replace") for p in (self.base / "data").rglob("*") if p.is_file())
        for secret in secrets:
            self.assertNotIn(secret, trail)
        [start] = self.records("action.start")
        self.assertEqual(
            start["action"]["input"],
            "GET /items?limit=5&access_token=<redacted>&Sig=<redacted>&pass%77ord=<redacted>"
            "&X-API-Key=<redacted>&access_token=<redacted>",
        )
        [refused] = self.records("request.refused")
        self.assertEqual(refused["request"]["target"], "/web/x?a=1;token=<redacted>")


class PostgresSessionTests(TestCase):
    """A psql session through the gateway, against a real PostgreSQL, lasts past the deadline."""

    timeout = 90

    def setUp(self) -> None:
        require(PSQL)
        cluster = start_postgres(self, hba=["host all app 127.0.0.1/32 scram-sha-256"], roles={"app": "app-secret"})
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)
        os.environ["HOOPGW_TEST_PREAUTH_PG"] = "app-secret"
        config = loads(
            f"""
[gateway]
data_dir = "data"
[listen]
postgres = "tcp:0:interface=127.0.0.1"
ssh = false
http = false
api = false
[preauth]
timeout = "{int(TIMEOUT)}s"
[[connections]]
name = "appdb"
kind = "postgres"
address = "127.0.0.1:{cluster.port}"
database = "postgres"
user = "app"
password_env = "HOOPGW_TEST_PREAUTH_PG"
tls = "disable"
""",
            source=None,
            base_dir=self.base,
        )
        self.gateway = Gateway(config, reactor=reactor)
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        self.port = self.gateway.listeners["postgres"].port.getHost().port

    @inlineCallbacks
    def test_authenticated_session_outlives_the_deadline(self):
        token = self.gateway.identity.dev_issuer.issue("alice", ("dev",), 600)
        env = {"PGPASSWORD": token, "PATH": os.environ.get("PATH", ""), "PGCONNECT_TIMEOUT": "10"}
        dsn = f"host=127.0.0.1 port={self.port} dbname=appdb user=alice sslmode=require"
        code, output = yield run(
            [PSQL, "-X", "-A", "-t", dsn, "-c", f"SELECT pg_sleep({TIMEOUT + 1.5})", "-c", "SELECT 'still here'"],
            env=env,
        )
        self.assertEqual(code, 0, output)
        self.assertIn(b"still here", output)
        self.assertEqual(self.gateway.listeners["postgres"].guard.pending, set())


class SSHSessionTests(SSHGatewayCase):
    """An SSH session through the gateway, against a real sshd, lasts past the deadline."""

    extra_config = f'[preauth]\ntimeout = "{int(TIMEOUT)}s"\n'

    @inlineCallbacks
    def test_authenticated_session_outlives_the_deadline(self):
        code, output = yield self.ssh(f"sleep {TIMEOUT + 1.5}; echo still here")
        self.assertEqual(code, 0, output)
        self.assertIn(b"still here", output)
        self.assertEqual(self.gateway.listeners["ssh"].guard.pending, set())
