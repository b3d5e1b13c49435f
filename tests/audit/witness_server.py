"""
A small C2SP tlog-witness (c2sp.org/tlog-witness) for the tests: the
C{add-checkpoint} endpoint over Twisted web, on 127.0.0.1.

It does what the spec asks of a witness: the checkpoint's signature must
verify with the log key it knows (403), its origin must be known (404), the
old size must not exceed the checkpoint's (400) and must equal the size it
holds (409, with that size as C{text/x.tlog.size}), the consistency proof
from it must verify (422; L{hoopgw.audit.merkle.verify_consistency}), equal
sizes need equal roots (409); then it stores the checkpoint and answers
with a cosignature/v1 line.
"""

from __future__ import annotations

import base64
import struct
from hashlib import sha256
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Site

from hoopgw.audit.checkpoint import CheckpointError, Verifier, verify_checkpoint
from hoopgw.audit.merkle import ProofError, verify_consistency

WITNESS_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
WITNESS_NAME = "witness.test/w1"


def witness_vkey(name: str, key: Ed25519PrivateKey) -> str:
    """A tlog-witness cosignature/v1 verifier key: name+key id+base64(0x04 || key)."""
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    encoded = base64.b64encode(bytes([4]) + public).decode()
    return f"{name}+{key_id.hex()}+{encoded}"


#: The test witness's cosignature key, as C{--witness-vkey} / C{[audit] witness} take it.
WITNESS_VKEY = witness_vkey(WITNESS_NAME, WITNESS_KEY)


class WitnessResource(Resource):
    isLeaf = True

    def __init__(self, vkey: str, *, clock: Any = None) -> None:
        super().__init__()
        self.verifier = Verifier.from_vkey(vkey)
        self.prefix = self.verifier.name + "/"
        #: origin -> (size, root) of the latest checkpoint cosigned
        self.latest: dict[str, tuple[int, bytes]] = {}
        #: (status, old size, new size, proof length) of every request
        self.requests: list[tuple[int, int | None, int | None, int]] = []
        self.clock = clock or reactor
        #: if set, every request fails with this status (a broken witness)
        self.fail_with: int | None = None

    def held(self, origin: str) -> int:
        return self.latest.get(origin, (0, b""))[0]

    def render_POST(self, request: Any) -> bytes:
        status, body, old, new, proof_len, content_type = self._handle(request)
        self.requests.append((status, old, new, proof_len))
        request.setResponseCode(status)
        if content_type:
            request.setHeader(b"content-type", content_type)
        return body

    def _handle(self, request: Any) -> tuple[int, bytes, int | None, int | None, int, bytes | None]:
        if not request.path.endswith(b"/add-checkpoint"):
            return 404, b"not found\n", None, None, 0, None
        if self.fail_with is not None:
            return self.fail_with, b"broken\n", None, None, 0, None
        data = request.content.read()
        head, sep, note = data.partition(b"\n\n")
        lines = head.split(b"\n")
        if not sep or not lines[0].startswith(b"old "):
            return 400, b"malformed\n", None, None, 0, None
        try:
            old = int(lines[0][4:])
            proof = [base64.b64decode(line, validate=True) for line in lines[1:]]
        except ValueError:
            return 400, b"malformed\n", None, None, 0, None
        try:
            checkpoint = verify_checkpoint(note, self.verifier)
        except CheckpointError:
            return 403, b"bad signature\n", old, None, len(proof), None
        if not checkpoint.origin.startswith(self.prefix):
            return 404, b"unknown origin\n", old, checkpoint.size, len(proof), None
        if old > checkpoint.size:
            return 400, b"old size beyond checkpoint\n", old, checkpoint.size, len(proof), None
        held_size, held_root = self.latest.get(checkpoint.origin, (0, b""))
        if old != held_size:
            return 409, f"{held_size}\n".encode(), old, checkpoint.size, len(proof), b"text/x.tlog.size"
        if old == 0:
            if proof:
                return 400, b"proof from size 0\n", old, checkpoint.size, len(proof), None
        elif old == checkpoint.size:
            if proof or held_root != checkpoint.root:
                return 409, f"{held_size}\n".encode(), old, checkpoint.size, len(proof), b"text/x.tlog.size"
        else:
            try:
                verify_consistency(old, checkpoint.size, held_root, checkpoint.root, proof)
            except ProofError:
                return 422, b"inconsistent\n", old, checkpoint.size, len(proof), None
        self.latest[checkpoint.origin] = (checkpoint.size, checkpoint.root)
        return 200, self._cosign(note), old, checkpoint.size, len(proof), None

    def _cosign(self, note: bytes) -> bytes:
        body = note[: note.find(b"\n\n") + 1]
        timestamp = int(self.clock.seconds())
        message = b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + body
        public = WITNESS_KEY.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        key_id = sha256(WITNESS_NAME.encode() + b"\n\x04" + public).digest()[:4]
        signature = key_id + struct.pack(">Q", timestamp) + WITNESS_KEY.sign(message)
        return f"\u2014 {WITNESS_NAME} {base64.b64encode(signature).decode()}\n".encode()


class _Site(Site):
    """A Site that knows its connections, so stopping can drop them."""

    def __init__(self, resource: Any) -> None:
        super().__init__(resource)
        #: open connections: protocol -> (transport, Deferred fired when lost)
        self.connections: dict[Any, tuple[Any, Deferred]] = {}

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        site = self
        made, lost = protocol.makeConnection, protocol.connectionLost
        gone: Deferred = Deferred()

        def makeConnection(transport: Any) -> None:
            site.connections[protocol] = (transport, gone)
            made(transport)

        def connectionLost(reason: Any) -> None:
            site.connections.pop(protocol, None)
            lost(reason)
            gone.callback(None)

        protocol.makeConnection = makeConnection
        protocol.connectionLost = connectionLost
        return protocol


class WitnessServer:
    """The witness listening on 127.0.0.1 (port 0 unless given)."""

    def __init__(self, vkey: str) -> None:
        self.resource = WitnessResource(vkey)
        self.port: Any = None
        self.number = 0
        self.site = _Site(self.resource)

    def start(self, number: int = 0) -> str:
        self.port = reactor.listenTCP(number, self.site, interface="127.0.0.1")
        self.number = self.port.getHost().port
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.number}/witness"

    def stop(self) -> Deferred:
        """Stop listening and drop every connection (a witness going down)."""
        from twisted.internet.defer import gatherResults

        port, self.port = self.port, None
        waits = [port.stopListening()]
        for transport, gone in list(self.site.connections.values()):
            waits.append(gone)
            transport.abortConnection()
        return gatherResults(waits)
