"""
The floor of the gateway's design, for the pgbench comparison: a Twisted
PostgreSQL relay that terminates the client's TLS exactly as hoopgw does
(SSLRequest, then C{startTLS} through the same TLS memory BIO) and then
copies bytes to the server and back, parsing, deciding and recording
nothing.  Whatever this costs per transaction, hoopgw pays too.

    python bench/_pg_relay.py LISTEN_PORT SERVER_PORT CERT KEY

Prints "listening" once the port is bound.
"""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.internet import protocol, reactor
from twisted.internet.ssl import CertificateOptions, PrivateCertificate

SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"


class ToServer(protocol.Protocol):
    def __init__(self, client: "FromClient") -> None:
        self.client = client

    def connectionMade(self) -> None:
        self.client.server = self
        self.client.transport.resumeProducing()
        if self.client.pending:
            self.transport.write(self.client.pending)
            self.client.pending = b""

    def dataReceived(self, data: bytes) -> None:
        self.client.transport.write(data)

    def connectionLost(self, reason: object = None) -> None:
        self.client.transport.loseConnection()


class FromClient(protocol.Protocol):
    server: ToServer | None = None
    pending = b""
    negotiated = False

    def dataReceived(self, data: bytes) -> None:
        if not self.negotiated:
            self.negotiated = True
            if data[:8] == SSL_REQUEST:
                self.transport.write(b"S")
                self.transport.startTLS(self.factory.tls)
                data = data[8:]
            self.transport.pauseProducing()
            protocol.ClientCreator(reactor, ToServer, self).connectTCP(
                "127.0.0.1", self.factory.server_port
            )
        if self.server is None:
            self.pending += data
        else:
            self.server.transport.write(data)

    def connectionLost(self, reason: object = None) -> None:
        if self.server is not None:
            self.server.transport.loseConnection()


def main(argv: list[str]) -> None:
    listen_port, server_port, cert, key = argv
    factory = protocol.Factory.forProtocol(FromClient)
    factory.server_port = int(server_port)
    pem = PrivateCertificate.loadPEM(Path(cert).read_bytes() + Path(key).read_bytes())
    factory.tls = CertificateOptions(
        privateKey=pem.privateKey.original,
        certificate=pem.original,
        acceptableProtocols=[b"postgresql"],
    )
    reactor.listenTCP(int(listen_port), factory, interface="127.0.0.1")
    print("listening", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
