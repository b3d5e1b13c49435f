"""
Remote key sources (JWKS URI and OIDC discovery) against an in-memory IdP
served through L{treq.testing.StubTreq}: caching, rotation, the refresh
cooldown and shared in-flight fetches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from hoopgw.config import IdentitySettings, IssuerSettings
from hoopgw.errors import AuthenticationFailed
from hoopgw.identity import IdentityService

from . import helpers as h


class FakeIdP(Resource):
    """Serves discovery and a JWKS; can hold requests to simulate latency."""

    isLeaf = True

    def __init__(self, issuer: str = h.ISSUER) -> None:
        super().__init__()
        self.documents: dict[bytes, Any] = {
            b"/.well-known/openid-configuration": {"issuer": issuer, "jwks_uri": h.ISSUER + "/jwks"},
            b"/jwks": h.jwks((h.RSA_KEY, "rsa1")),
        }
        self.requests: list[bytes] = []
        self.hold = False
        self.held: list[Any] = []

    def render_GET(self, request: Any) -> Any:
        self.requests.append(request.path)
        if request.path not in self.documents:
            request.setResponseCode(404)
            return b"not found"
        body = json.dumps(self.documents[request.path]).encode()
        if self.hold:
            self.held.append((request, body))
            return NOT_DONE_YET
        return body

    def release(self) -> None:
        held, self.held = self.held, []
        for request, body in held:
            request.write(body)
            request.finish()


class RemoteKeyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(h.NOW)
        self.idp = FakeIdP()
        self.http = StubTreq(self.idp)

    def service(self, **issuer: Any) -> IdentityService:
        directory = Path(self.mktemp())
        return IdentityService.from_settings(
            IdentitySettings(
                dev_issuer=False,
                issuers=(IssuerSettings(issuer=h.ISSUER, audience=h.AUDIENCE, **issuer),),
            ),
            data_dir=directory,
            gateway_name="gw",
            reactor=self.clock,
            http=self.http,
        )

    def verify(self, service: IdentityService, token: str) -> Any:
        d = service.verify_token(token)
        self.http.flush()
        return d

    def reason(self, service: IdentityService, token: str) -> str:
        failure = self.failureResultOf(self.verify(service, token), AuthenticationFailed)
        return failure.value.reason

    def test_discovery(self) -> None:
        """If neither jwks_uri nor jwks_file is set, the keys are found
        through the discovery document's jwks_uri, and then cached."""
        service = self.service()
        identity = self.successResultOf(self.verify(service, h.sign()))
        self.assertEqual(identity.subject, "alice")
        self.assertEqual(self.idp.requests, [b"/.well-known/openid-configuration", b"/jwks"])
        self.successResultOf(self.verify(service, h.sign()))
        self.assertEqual(len(self.idp.requests), 2)

    def test_discovery_issuer_mismatch(self) -> None:
        """If the discovery document names another issuer (a trailing slash
        is enough), no key is fetched and tokens are refused."""
        self.idp.documents[b"/.well-known/openid-configuration"]["issuer"] = h.ISSUER + "/"
        service = self.service()
        self.assertEqual(self.reason(service, h.sign()), "issuer keys unavailable")
        self.assertEqual(self.idp.requests, [b"/.well-known/openid-configuration"])
        self.flushLoggedErrors()

    def test_discovery_insecure_jwks_uri(self) -> None:
        """If discovery points the JWKS to plain http on a remote host, it is
        not fetched."""
        self.idp.documents[b"/.well-known/openid-configuration"]["jwks_uri"] = "http://idp.example.com/jwks"
        self.assertEqual(self.reason(self.service(), h.sign()), "issuer keys unavailable")
        self.assertEqual(self.idp.requests, [b"/.well-known/openid-configuration"])

    def test_jwks_uri(self) -> None:
        """If jwks_uri is set, discovery is skipped."""
        service = self.service(jwks_uri=h.ISSUER + "/jwks")
        self.successResultOf(self.verify(service, h.sign()))
        self.assertEqual(self.idp.requests, [b"/jwks"])

    def test_fetch_errors(self) -> None:
        """If the JWKS answers 404, or is not JSON, or not a JWKS, tokens are
        refused as keys unavailable (and the reason names no URL)."""
        service = self.service(jwks_uri=h.ISSUER + "/missing")
        self.assertEqual(self.reason(service, h.sign()), "issuer keys unavailable")
        for document in ("[]", {"keys": "no"}, {"keys": []}):
            idp = FakeIdP()
            idp.documents[b"/jwks"] = document
            self.http = StubTreq(idp)
            self.assertEqual(self.reason(self.service(jwks_uri=h.ISSUER + "/jwks"), h.sign()), "issuer keys unavailable")

    def test_rotation(self) -> None:
        """If the IdP rotates to a new key, a token with the new kid triggers
        one refetch and verifies; a kid still unknown after it is refused."""
        service = self.service(jwks_uri=h.ISSUER + "/jwks")
        self.successResultOf(self.verify(service, h.sign()))
        self.clock.advance(120)
        self.idp.documents[b"/jwks"] = h.jwks((h.RSA_KEY, "rsa1"), (h.RSA_KEY_2, "rsa2"))
        self.successResultOf(self.verify(service, h.sign(key=h.RSA_KEY_2, kid="rsa2")))
        self.assertEqual(self.idp.requests, [b"/jwks", b"/jwks"])
        self.clock.advance(120)
        self.assertEqual(self.reason(service, h.sign(kid="rsa3")), "unknown key id")
        self.assertEqual(len(self.idp.requests), 3)

    def test_cooldown(self) -> None:
        """If unknown kids arrive within the cooldown of the last fetch, no
        fetch is made; after the cooldown one is."""
        service = self.service(jwks_uri=h.ISSUER + "/jwks")
        self.successResultOf(self.verify(service, h.sign()))
        for i in range(50):
            self.assertEqual(self.reason(service, h.sign(kid=f"forged{i}")), "unknown key id")
        self.assertEqual(len(self.idp.requests), 1)
        self.idp.documents[b"/jwks"] = h.jwks((h.RSA_KEY_2, "rsa2"))
        self.clock.advance(59)
        self.assertEqual(self.reason(service, h.sign(key=h.RSA_KEY_2, kid="rsa2")), "unknown key id")
        self.assertEqual(len(self.idp.requests), 1)
        self.clock.advance(1)
        self.successResultOf(self.verify(service, h.sign(key=h.RSA_KEY_2, kid="rsa2")))
        self.assertEqual(len(self.idp.requests), 2)

    def test_shared_fetch(self) -> None:
        """If several verifications need keys while a fetch is in flight,
        they share that one fetch and each gets its own result."""
        self.idp.hold = True
        service = self.service()
        good = [service.verify_token(h.sign()) for _ in range(5)]
        forged = service.verify_token(h.sign(kid="forged"))
        self.http.flush()
        for d in good + [forged]:
            self.assertNoResult(d)
        self.idp.release()
        self.http.flush()
        self.idp.release()
        self.http.flush()
        for d in good:
            self.assertEqual(self.successResultOf(d).subject, "alice")
        self.assertEqual(self.failureResultOf(forged, AuthenticationFailed).value.reason, "unknown key id")
        self.assertEqual(self.idp.requests, [b"/.well-known/openid-configuration", b"/jwks"])

    def test_timeout(self) -> None:
        """If the IdP does not answer within 10 seconds, waiting tokens are
        refused and a later token (after the cooldown) fetches again."""
        self.idp.hold = True
        service = self.service(jwks_uri=h.ISSUER + "/jwks")
        d = self.verify(service, h.sign())
        self.assertNoResult(d)
        self.clock.advance(10)
        self.assertEqual(self.failureResultOf(d, AuthenticationFailed).value.reason, "issuer keys unavailable")
        self.idp.hold = False
        self.clock.advance(60)
        self.successResultOf(self.verify(service, h.sign()))

    def test_outage_keeps_keys(self) -> None:
        """If the cached keys are older than an hour and the IdP is down,
        the cached keys are still used."""
        service = self.service(jwks_uri=h.ISSUER + "/jwks")
        self.successResultOf(self.verify(service, h.sign()))
        del self.idp.documents[b"/jwks"]
        self.clock.advance(3600)
        self.assertEqual(self.successResultOf(self.verify(service, h.sign(iat=h.NOW + 3600, nbf=h.NOW + 3600, exp=h.NOW + 3900))).subject, "alice")
        self.assertEqual(len(self.idp.requests), 2)

    def test_max_age_drops_withdrawn_key(self) -> None:
        """If the IdP withdraws a key, tokens signed by it stop verifying
        once the cache is an hour old."""
        service = self.service(jwks_uri=h.ISSUER + "/jwks")
        self.successResultOf(self.verify(service, h.sign()))
        self.idp.documents[b"/jwks"] = h.jwks((h.RSA_KEY_2, "rsa2"))
        self.clock.advance(3600)
        token = h.sign(iat=h.NOW + 3600, nbf=h.NOW + 3600, exp=h.NOW + 3900)
        self.assertEqual(self.reason(service, token), "unknown key id")

    def test_prefetch(self) -> None:
        """If prefetch is called at start-up, the first token needs no fetch;
        prefetch succeeds even when the IdP is down."""
        service = self.service(jwks_uri=h.ISSUER + "/jwks")
        d = service.prefetch()
        self.http.flush()
        self.successResultOf(d)
        self.assertEqual(len(self.idp.requests), 1)
        self.successResultOf(service.verify_token(h.sign()))
        self.assertEqual(len(self.idp.requests), 1)
        down = self.service(jwks_uri=h.ISSUER + "/gone")
        d = down.prefetch()
        self.http.flush()
        self.assertIsNone(self.successResultOf(d))
