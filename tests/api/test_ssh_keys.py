"""
C{/api/v1/ssh-keys} through the API's site (L{make_api_site}), on
in-memory services: status codes and bodies of enrolling, listing and
removing keys with a bearer token.
"""

from __future__ import annotations

import hashlib
import json
from io import BytesIO
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh.keys import Key
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from hoopgw.api import make_api_site
from hoopgw.config import SSHKeyIdentity
from hoopgw.identity.enrolled import EnrolledKeys, SSHKeyEnrolment, sign_proof
from hoopgw.identity.ssh import SSHKeyMap, openssh_fingerprint
from hoopgw.metrics import Metrics
from hoopgw.model import Identity
from hoopgw.testing import MemoryAuditLog, MemoryIdentityVerifier, memory_session_service

NOW = 1_800_000_000


def line(key: Key) -> str:
    return key.public().toString("openssh").decode() + " me@laptop"


def identity(subject: str, expires: int | None = NOW + 600) -> Identity:
    token = f"{subject}-token"
    return Identity(issuer="https://idp", subject=subject, groups=("dev",), auth_method="jwt", expires=expires,
                    credential_sha256=hashlib.sha256(token.encode()).hexdigest())


class SSHKeysAPITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.audit = MemoryAuditLog()
        verifier = MemoryIdentityVerifier(tokens={
            "alice-token": identity("alice"),
            "mallory-token": identity("mallory"),
            "forever-token": identity("forever", expires=None),
        })
        sessions = memory_session_service(audit=self.audit, identity=verifier, clock=self.clock)
        self.mapped = Key(ed25519.Ed25519PrivateKey.generate())
        self.keys = EnrolledKeys(clock=self.clock)
        enrolment = SSHKeyEnrolment(
            keys=self.keys,
            static=SSHKeyMap.from_settings([SSHKeyIdentity(subject="ops", public_key=line(self.mapped))]),
            append=sessions._append,
        )
        self.site = make_api_site(metrics=Metrics(self.clock), health=lambda: {"status": "ok"},
                                  sessions=sessions, ssh_keys=enrolment)
        self.key = Key(ed25519.Ed25519PrivateKey.generate())
        self.fingerprint = openssh_fingerprint(self.key.public().blob())

    def request(self, method: bytes, path: str, body: Any = None, token: str | None = "alice-token",
                raw: bytes | None = None) -> tuple[int, Any]:
        segments = [s.encode() for s in path.split("/")[1:]]
        request = DummyRequest(segments)
        request.method = method
        request.path = path.encode()
        request.content = BytesIO(raw if raw is not None else json.dumps(body).encode() if body is not None else b"")
        if token is not None:
            request.requestHeaders.addRawHeader(b"authorization", b"Bearer " + token.encode())
        resource = self.site.getResourceFor(request)
        resource.render(request)
        self.assertTrue(request.finished, "the request did not finish")
        return request.responseCode, json.loads(b"".join(request.written))

    def enrol(self, key: Key | None = None, token: str = "alice-token") -> tuple[int, Any]:
        key = key or self.key
        body = {"public_key": line(key), "signature": sign_proof(key, token)}
        return self.request(b"POST", "/api/v1/ssh-keys", body, token=token)

    def test_enrol(self) -> None:
        """POST answers 201 with the fingerprint, the token's expiry and the subject; GET lists it."""
        code, body = self.enrol()
        self.assertEqual(code, 201, body)
        self.assertEqual((body["fingerprint"], body["expires"], body["subject"]), (self.fingerprint, NOW + 600, "alice"))
        self.assertEqual(self.keys.identity_for_public_key(self.key.public().blob()).subject, "alice")
        code, body = self.request(b"GET", "/api/v1/ssh-keys")
        self.assertEqual((code, [k["fingerprint"] for k in body["ssh_keys"]]), (200, [self.fingerprint]))
        code, body = self.request(b"GET", "/api/v1/ssh-keys", token="mallory-token")
        self.assertEqual((code, body), (200, {"ssh_keys": []}))
        [record] = self.audit.of("identity.ssh_key.enrolled")
        self.assertNotIn("alice-token", json.dumps(record))

    def test_refusals(self) -> None:
        """No token: 401; a bad body, key or a token without expiry: 400; a mapped key: 409."""
        self.assertEqual(self.enrol(token="nope")[0], 401)
        self.assertEqual(self.request(b"POST", "/api/v1/ssh-keys", {"public_key": line(self.key)}, token=None)[0], 401)
        for raw, expected in [
            (b"not json", "not JSON"),
            (b"[]", "not a JSON object"),
            (b"{}", "public_key: required"),
            (json.dumps({"public_key": line(self.key)}).encode(), "signature: required"),
            (b'{"public_key": "ssh-dss AAAA"}', "not accepted"),
            (b"{" + b" " * 17000 + b"}", "over 16384 bytes"),
        ]:
            code, body = self.request(b"POST", "/api/v1/ssh-keys", raw=raw)
            self.assertEqual(code, 400, raw[:40])
            self.assertIn(expected, body["error"])
        code, body = self.enrol(token="forever-token")
        self.assertEqual(code, 400)
        self.assertIn("no expiry", body["error"])
        code, body = self.enrol(self.mapped)
        self.assertEqual(code, 409)
        self.assertEqual(len(self.keys), 0)
        self.assertEqual(self.audit.of("identity.ssh_key.enrolled"), [])

    def test_taken(self) -> None:
        """A key another identity enrolled is refused with 409 and stays theirs."""
        self.assertEqual(self.enrol()[0], 201)
        code, body = self.enrol(token="mallory-token")
        self.assertEqual(code, 409, body)
        self.assertEqual(self.keys.identity_for_public_key(self.key.public().blob()).subject, "alice")

    def test_log_down(self) -> None:
        """With the audit log down: 503, nothing enrolled."""
        self.audit.break_with("disk full")
        code, body = self.enrol()
        self.assertEqual(code, 503)
        self.assertIn("nothing was done", body["error"])
        self.assertEqual(len(self.keys), 0)

    def test_delete(self) -> None:
        """
        DELETE of one's own key (its "/" encoded or not) removes it;
        another's, or an unknown one, is a 404.
        """
        self.assertEqual(self.enrol()[0], 201)
        code, body = self.request(b"DELETE", "/api/v1/ssh-keys/" + quote(self.fingerprint, safe=""),
                                  token="mallory-token")
        self.assertEqual(code, 404, body)
        self.assertIsNotNone(self.keys.identity_for_public_key(self.key.public().blob()))
        # DummyRequest takes the path as given: the encoded form is Twisted's to decode.
        code, body = self.request(b"DELETE", "/api/v1/ssh-keys/" + self.fingerprint)
        self.assertEqual((code, body["removed"]), (200, True), body)
        self.assertIsNone(self.keys.identity_for_public_key(self.key.public().blob()))
        self.assertEqual(len(self.audit.of("identity.ssh_key.removed")), 1)
        self.assertEqual(self.request(b"DELETE", "/api/v1/ssh-keys/" + self.fingerprint)[0], 404)

    def test_methods(self) -> None:
        """Other methods are a 405 naming the allowed ones."""
        self.assertEqual(self.request(b"PUT", "/api/v1/ssh-keys")[0], 405)
        self.assertEqual(self.request(b"GET", "/api/v1/ssh-keys/SHA256:x")[0], 405)
