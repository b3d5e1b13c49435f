"""
End to end with a real OpenID Provider: node's C{oidc-provider} issues an
RFC 9068 JWT access token through the client_credentials grant, and
L{IdentityService} verifies it after finding the keys by OIDC discovery.

Needs node and C{npm ci --prefix tests/integration/oidc}; the test runs
C{npm ci} itself when node_modules is missing.  Without node it is skipped,
except under CI=true, where a missing tool is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SkipTest, TestCase

from hoopgw.config import IdentitySettings, IssuerSettings
from hoopgw.errors import AuthenticationFailed
from hoopgw.identity import IdentityService, https_client

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "hoopgw-test"
CLIENT_SECRET = "hoopgw-test-secret"


def _unavailable(why: str) -> Exception:
    if os.environ.get("CI") == "true":
        return AssertionError(f"OIDC integration test cannot run under CI: {why}")
    return SkipTest(why)


def ensure_provider() -> str:
    """
    Return the path of node, installing the provider's packages with
    C{npm ci} if node_modules is missing.  Raises SkipTest (AssertionError
    under CI=true) if that is not possible.
    """
    node = shutil.which("node")
    if node is None:
        raise _unavailable("node is not installed")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise _unavailable("npm is not installed and node_modules is missing")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=PROVIDER_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise _unavailable(f"npm ci failed: {result.stderr[-2000:]}")
    return node


class ProviderProcess(protocol.ProcessProtocol):
    """Fires C{ready} with the issuer URL from the "listening" line."""

    def __init__(self) -> None:
        self.ready: Deferred[str] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for line in self.output.splitlines():
            if line.startswith(b"listening ") and not self.ready.called:
                self.ready.callback(line.split()[1].decode())

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"provider exited before listening: {self.output.decode(errors='replace')}"))
        self.ended.callback(None)


def start_provider(testcase: TestCase) -> Deferred[str]:
    """Start the provider for C{testcase} (stopped at its cleanup); fires with the issuer URL."""
    node = ensure_provider()
    process = ProviderProcess()
    transport = reactor.spawnProcess(  # type: ignore[attr-defined]
        process, node, [node, "provider.mjs", "0"], env=dict(os.environ), path=str(PROVIDER_DIR)
    )

    def stop() -> Deferred[None]:
        if process.ended.called:
            return process.ended
        transport.signalProcess("TERM")
        return process.ended

    testcase.addCleanup(stop)
    return process.ready.addTimeout(60, reactor)


class OIDCProviderTests(TestCase):
    timeout = 120

    async def start_provider(self) -> str:
        return await start_provider(self)

    async def fetch_token(self, issuer: str, http: Any) -> str:
        response = await http.post(
            issuer + "/token",
            data={"grant_type": "client_credentials", "resource": "urn:hoopgw", "scope": "gateway"},
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
        body = await response.content()
        self.assertEqual(response.code, 200, body)
        return json.loads(body)["access_token"]

    def service(self, issuer: str, audience: str = "hoopgw") -> IdentityService:
        return IdentityService.from_settings(
            IdentitySettings(dev_issuer=False, issuers=(IssuerSettings(issuer=issuer, audience=audience),)),
            data_dir=Path(self.mktemp()),
            gateway_name="it",
            reactor=reactor,
        )

    async def _test_real_provider(self) -> None:
        issuer = await self.start_provider()
        http = https_client(reactor)
        token = await self.fetch_token(issuer, http)

        service = self.service(issuer)
        identity = await service.verify_token(token)
        self.assertEqual(
            (identity.issuer, identity.subject, identity.groups, identity.auth_method),
            (issuer, CLIENT_ID, ("dba", "dev"), "jwt"),
        )
        self.assertIsNotNone(identity.token_id)

        # Same issuer, other audience: refused.
        with self.assertRaises(AuthenticationFailed) as caught:
            await self.service(issuer, audience="kubernetes").verify_token(token)
        self.assertEqual(caught.exception.reason, "wrong audience")

        # A token whose signature was altered is refused.
        header, payload, signature = token.split(".")
        with self.assertRaises(AuthenticationFailed) as caught:
            await service.verify_token(f"{header}.{payload}.{signature[:-4]}AAAA")
        self.assertEqual(caught.exception.reason, "bad signature")

    def test_real_provider(self) -> Deferred[None]:
        """If oidc-provider issues a JWT access token for audience hoopgw,
        then IdentityService configured with only the issuer URL finds the
        keys by discovery and verifies it to the client's identity with the
        groups claim; a tampered token or another audience is refused."""
        return Deferred.fromCoroutine(self._test_real_provider())
