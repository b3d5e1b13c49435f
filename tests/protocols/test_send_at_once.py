"""
L{hoopgw.protocols._tls.send_at_once} over real loopback TCP: a write with
nothing waiting goes to the socket before C{write} returns (no reactor turn,
no watching for writability), a large one is finished by Twisted, and TLS
is never bypassed, even when C{startTLS} comes after it was installed.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.trial.unittest import TestCase

from hoopgw.protocols import _tls


def _certificate() -> ssl.PrivateCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ssl.PrivateCertificate.loadPEM(pem)


class _Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.wanted = 0
        self.done: Deferred[bytes] = Deferred()
        self.made: Deferred[Protocol] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.made.callback(self)

    def connectionLost(self, reason: object = None) -> None:
        self.lost.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.wanted and len(self.data) >= self.wanted and not self.done.called:
            self.done.callback(self.data)


class SendAtOnceTests(TestCase):
    @inlineCallbacks
    def connected(self):
        """A loopback TCP pair: (server-side protocol, client-side protocol)."""
        server = _Collect()
        factory = Factory.forProtocol(lambda: server)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = _Collect()
        reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(lambda: client))
        yield client.made
        yield server.made

        def close() -> Deferred[object]:
            client.transport.abortConnection()
            server.transport.abortConnection()
            return gatherResults([client.lost, server.lost])

        self.addCleanup(close)
        return server, client

    @inlineCallbacks
    def test_sent_before_write_returns(self):
        server, client = yield self.connected()
        _tls.send_at_once(server.transport)
        client.wanted = 5
        server.transport.write(b"hello")
        tcp = server.transport
        self.assertEqual((tcp._tempDataLen, tcp.dataBuffer[tcp.offset:]), (0, b""))
        self.assertNotIn(tcp, reactor.getWriters())  # nothing left for the reactor to send
        self.assertEqual((yield client.done), b"hello")

    @inlineCallbacks
    def test_large_write_finished_by_twisted(self):
        """More than the socket takes at once: the rest is Twisted's, in order, whole."""
        server, client = yield self.connected()
        _tls.send_at_once(server.transport)
        payload = bytes(range(256)) * (32 * 1024)  # 8 MiB
        client.wanted = len(payload) + 3
        server.transport.write(payload)
        server.transport.write(b"end")  # behind what is buffered: buffered too, never ahead of it
        self.assertEqual((yield client.done), payload + b"end")

    @inlineCallbacks
    def test_tls_started_later_is_never_bypassed(self):
        """
        Installed on the plain connection, then startTLS on both sides: the
        writes are encrypted whether or not it is installed again, and the
        peer reads them through TLS.
        """
        server, client = yield self.connected()
        _tls.send_at_once(server.transport)
        certificate = _certificate()
        server.transport.startTLS(certificate.options())
        client.transport.startTLS(ssl.CertificateOptions(verify=False))
        client.wanted = 6
        server.transport.write(b"secret")  # not installed again: must still go through TLS
        self.assertEqual((yield client.done), b"secret")
        _tls.send_at_once(server.transport)  # installed for the TLS layer's own writes
        client.data, client.wanted, client.done = b"", 4, Deferred()
        server.transport.write(b"more")
        self.assertEqual((yield client.done), b"more")

    @inlineCallbacks
    def test_nothing_sent_after_an_abort(self):
        """
        As in Twisted, a write after C{abortConnection} is dropped: the
        connection is gone for its owner, even before the reactor closes it.
        """
        server, client = yield self.connected()
        _tls.send_at_once(server.transport)
        client.wanted = 6
        server.transport.write(b"before")
        self.assertEqual((yield client.done), b"before")
        server.transport.abortConnection()
        server.transport.write(b"after")
        yield client.lost
        self.assertEqual(client.data, b"before")

    def test_not_tcp(self):
        """A transport that is not a socket (a test's memory transport) is left as it is."""
        from twisted.internet.testing import StringTransport

        transport = StringTransport()
        _tls.send_at_once(transport)
        self.assertNotIn("write", vars(transport))
