"""
`hoopgw login` end to end (issue 15) against a real OpenID Provider (node's
oidc-provider, its own login and consent pages driven by a scripted
browser): the device flow and the browser flow with PKCE and a loopback
redirect, the token cache (owner-only, refused otherwise), refresh, status,
logout, and the real psql through the gateway with the cached token.
"""

from __future__ import annotations

import json
import re
import stat
import sys
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from tests.integration import _browser
from tests.integration._process import HOOPGW, child_env, run, spawn
from tests.integration.test_oidc import start_provider
from tests.integration.test_postgres_clients import _GatewayCase

BROWSER = Path(_browser.__file__)


class LoginTests(_GatewayCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.issuer = yield start_provider(self)
        self.start(api=True, extra_config=f"""
[[identity.issuers]]
issuer = "{self.issuer}"
audience = "hoopgw"
jwks_uri = "{self.issuer}/jwks"
login_client_id = "hoopgw-cli"
login_resource = "urn:hoopgw"
""")
        self.api = f"http://127.0.0.1:{self.gateway.listeners['api'].port.getHost().port}"
        self.home = Path(self.mktemp()).resolve()
        self.home.mkdir()

    def env(self, **extra: str) -> dict[str, str]:
        env = child_env(XDG_CONFIG_HOME=str(self.home), **extra)
        for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER", "HOOPGW_GATEWAY"):
            env.pop(name, None)
        env.update(extra)
        return env

    def hoopgw(self, *args: str, **env: str):
        return run([*HOOPGW, *args], env=self.env(**env))

    @inlineCallbacks
    def psql_with(self, token: str):
        dsn = f"host=127.0.0.1 port={self.port} dbname=appdb user=alice sslmode=require"
        return (yield run([self.psql_argv()[0], "-X", "-A", "-t", dsn, "-c", "SELECT 1"],
                          env=child_env(PGPASSWORD=token)))

    @inlineCallbacks
    def test_device_flow_cache_refresh_status_logout(self):
        proc = spawn([*HOOPGW, "login", "--gateway", self.api, "--device"], marker=b"enter the code", env=self.env())
        yield proc.ready
        url = re.search(rb"open (\S+)", proc.output).group(1).decode()
        yield deferToThread(_browser.run, url, "alice")
        code = yield proc.ended
        self.assertEqual(code, 0, proc.output)
        self.assertIn(b"as alice (groups: dba, dev), refreshed as needed", proc.output)

        cache = self.home / "hoopgw" / "credentials"
        [entry_path] = [p for p in cache.iterdir() if p.suffix == ".json"]
        self.assertEqual((stat.S_IMODE(cache.stat().st_mode), stat.S_IMODE(entry_path.stat().st_mode)), (0o700, 0o600))
        code, token = yield self.hoopgw("token")  # the gateway logged in to last
        self.assertEqual(code, 0, token)
        token = token.decode().strip()
        code, output = yield self.psql_with(token)
        self.assertEqual((code, output.strip()), (0, b"1"), output)
        [start] = [r for r in self.records("session.start") if r["identity"]["iss"] == self.issuer]
        self.assertEqual((start["identity"]["sub"], start["identity"]["groups"]), ("alice", ["dba", "dev"]))

        code, output = yield self.hoopgw("status", "--json")
        self.assertEqual(code, 0, output)
        me = json.loads(output)
        self.assertEqual((me["subject"], me["groups"], me["issuer"]), ("alice", ["dba", "dev"], self.issuer))
        self.assertIn({"name": "appdb", "kind": "postgres"}, me["connections"])

        # Expired: refreshed with the refresh token, and the new token works.
        entry = json.loads(entry_path.read_text())
        entry["expires_at"] = 0
        entry_path.write_text(json.dumps(entry))
        code, fresh = yield self.hoopgw("token", "--gateway", self.api)
        self.assertEqual(code, 0, fresh)
        self.assertNotEqual(fresh.decode().strip(), token)
        code, output = yield self.psql_with(fresh.decode().strip())
        self.assertEqual(code, 0, output)
        code, credential = yield self.hoopgw("token", "exec-credential")
        self.assertEqual(json.loads(credential)["status"]["token"], fresh.decode().strip())

        # Expired, and the IdP no longer honours the refresh token (revoked, or
        # none was given): the user is told to log in again; nothing stale is used.
        saved = entry_path.read_text()
        for refresh, said in (("not-a-refresh-token", b"session with the identity provider ended"),
                              (None, b"gave no refresh token")):
            entry = json.loads(saved)
            entry.update(expires_at=0, refresh_token=refresh)
            entry_path.write_text(json.dumps(entry))
            code, output = yield self.hoopgw("token")
            self.assertEqual(code, 1, output)
            self.assertIn(said, output)
            self.assertIn(b"hoopgw login", output)
        entry_path.write_text(saved)

        # A cache others can read is refused, never used.
        entry_path.chmod(0o644)
        code, output = yield self.hoopgw("token")
        self.assertEqual(code, 1)
        self.assertIn(b"readable by others", output)
        entry_path.chmod(0o600)

        code, output = yield self.hoopgw("logout", "--gateway", self.api)
        self.assertEqual(code, 0, output)
        code, output = yield self.hoopgw("token", "--gateway", self.api)
        self.assertEqual(code, 1)
        self.assertIn(b"not logged in", output)

    @inlineCallbacks
    def test_browser_flow_with_pkce(self):
        browser = f"{sys.executable} {BROWSER} %s alice"
        code, output = yield self.hoopgw("login", "--gateway", self.api, BROWSER=browser)
        self.assertEqual(code, 0, output)
        self.assertIn(b"in your browser", output)
        code, token = yield self.hoopgw("token", "--gateway", self.api)
        self.assertEqual(code, 0, token)
        code, output = yield self.psql_with(token.decode().strip())
        self.assertEqual((code, output.strip()), (0, b"1"), output)

    @inlineCallbacks
    def test_what_the_gateway_publishes(self):
        response = yield deferToThread(__import__("requests").get, f"{self.api}/.well-known/hoopgw", timeout=10)
        published = response.json()
        self.assertEqual(published["issuers"], [{"issuer": self.issuer, "client_id": "hoopgw-cli",
                                                 "scopes": ["openid", "offline_access"], "resource": "urn:hoopgw"}])
        self.assertEqual(published["listeners"]["postgres"], {"host": "127.0.0.1", "port": self.port})
        self.assertNotIn("connections", published)
        # What pins the gateway's own (here self-signed) certificate, for the client wrappers.
        self.assertEqual(published["tls"], {"names": ["localhost", "127.0.0.1", "::1"],
                                            "ca": self.gateway.tls_cert.read_text()})
