"""
The stock clients set up from `hoopgw login` (issue 15): `hoopgw psql` and
`hoopgw kubectl` exec the real psql and kubectl with the cached token and the
gateway's pinned certificate, and `hoopgw config kubeconfig` writes a context
plain kubectl uses; all against the real OpenID Provider, a real PostgreSQL
and the fake Kubernetes API server, through the gateway.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from twisted.internet.defer import inlineCallbacks

from tests.integration import _browser
from tests.integration._fake_k8s import find_kubectl, start_fake_k8s
from tests.integration._process import HOOPGW, child_env, run, run_split
from tests.integration.test_oidc import start_provider
from tests.integration.test_postgres_clients import PSQL, _GatewayCase

BROWSER = Path(_browser.__file__)


class WrapperTests(_GatewayCase):
    timeout = 180

    @inlineCallbacks
    def setUp(self):
        self.issuer = yield start_provider(self)
        self.fake = start_fake_k8s(self)
        self.kubectl = find_kubectl()
        k8s = Path(self.mktemp()).resolve()
        k8s.mkdir()
        (k8s / "ca.pem").write_bytes(self.fake.ca.ca_cert_pem)
        (k8s / "token").write_text(self.fake.token + "\n")
        self.start(api=True, listeners=("http",), extra_config=f"""
[[identity.issuers]]
issuer = "{self.issuer}"
audience = "hoopgw"
jwks_uri = "{self.issuer}/jwks"
login_client_id = "hoopgw-cli"
login_resource = "urn:hoopgw"
[[connections]]
name = "k8s"
kind = "http"
upstream = "{self.fake.url}"
token_file = "{k8s / 'token'}"
ca_file = "{k8s / 'ca.pem'}"
impersonate = true
""")
        self.api = f"http://127.0.0.1:{self.gateway.listeners['api'].port.getHost().port}"
        self.home = Path(self.mktemp()).resolve()
        self.home.mkdir()
        code, output = yield self.hoopgw("login", "--gateway", self.api,
                                         BROWSER=f"{sys.executable} {BROWSER} %s alice")
        self.assertEqual(code, 0, output)

    def env(self, **extra: str) -> dict[str, str]:
        # The real clients first on PATH; nothing of the caller's own client settings.
        path = os.pathsep.join([os.path.dirname(PSQL), os.path.dirname(self.kubectl), os.environ.get("PATH", "")])
        env = child_env(XDG_CONFIG_HOME=str(self.home), HOME=str(self.home), PATH=path)
        for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER", "HOOPGW_GATEWAY", "KUBECONFIG", "PGHOST", "PGPORT",
                     "PGDATABASE", "PGPASSWORD", "PGSSLMODE", "PGSSLROOTCERT", "PGUSER"):
            env.pop(name, None)
        env.update(extra)
        return env

    def hoopgw(self, *args: str, **env: str):
        return run([*HOOPGW, *args], env=self.env(**env))

    def hoopgw_split(self, *args: str, **env: str):
        return run_split([*HOOPGW, *args], env=self.env(**env))

    @inlineCallbacks
    def test_psql(self):
        """psql runs on the connection as the identity the IdP vouched for, over TLS checked against the pinned
        certificate (verify-full: 127.0.0.1 is one of its names); its own arguments pass through."""
        code, out, err = yield self.hoopgw_split("psql", "appdb", "-X", "-A", "-t", "-c", "SELECT 40 + 2")
        self.assertEqual((code, out.strip()), (0, b"42"), err)
        [start] = [r for r in self.records("session.start") if r["identity"]["iss"] == self.issuer]
        self.assertEqual(start["identity"]["sub"], "alice")
        ca = self.home / "hoopgw" / "credentials" / (f"127.0.0.1_{self.api.rsplit(':', 1)[1]}.ca.pem")
        self.assertEqual(ca.read_bytes(), self.gateway.tls_cert.read_bytes())

        # What psql was given: the pinned file, checked in full; the token in its environment, not its argv.
        fake = self.home / "bin"
        fake.mkdir()
        (fake / "psql").write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                                   "print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}))\n")
        (fake / "psql").chmod(0o755)
        code, out, err = yield self.hoopgw_split("psql", "--gateway", self.api, "appdb", "-c", "SELECT 1",
                                                 PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
        self.assertEqual(code, 0, err)
        seen = json.loads(out)
        self.assertEqual(seen["argv"], ["-c", "SELECT 1"])
        env = seen["env"]
        self.assertEqual((env["PGSSLMODE"], env["PGSSLROOTCERT"], env["PGDATABASE"], env["PGHOST"]),
                         ("verify-full", str(ca), "appdb", "127.0.0.1"))
        code, token = yield self.hoopgw("token")
        self.assertEqual(env["PGPASSWORD"], token.decode().strip())

    @inlineCallbacks
    def test_psql_not_logged_in(self):
        yield self.hoopgw("logout", "--gateway", self.api)
        code, out, err = yield self.hoopgw_split("psql", "--gateway", self.api, "appdb", "-c", "SELECT 1")
        self.assertEqual(code, 1)
        self.assertIn(b"not logged in to " + self.api.encode(), err)

    @inlineCallbacks
    def test_kubectl(self):
        """kubectl lists pods through the gateway with the cached token (its exec plugin is hoopgw) and the pinned
        certificate; the API server saw alice impersonated."""
        self.fake.add_pod("web")
        code, out, err = yield self.hoopgw_split("kubectl", "k8s", "get", "pods", "-o", "name")
        self.assertEqual((code, out.strip()), (0, b"pod/web"), err)
        self.assertEqual({r.impersonate_user for r in self.fake.requests}, {"alice"})

    @inlineCallbacks
    def test_config_kubeconfig(self):
        """hoopgw config kubeconfig adds a context to the user's kubeconfig without disturbing what is there;
        plain kubectl then works with it; a second run replaces it."""
        kubeconfig = self.home / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "other",
            "clusters": [{"name": "other", "cluster": {"server": "https://127.0.0.1:1"}}],
            "users": [{"name": "other", "user": {"token": "x"}}],
            "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
        }))
        for _ in range(2):
            code, output = yield self.hoopgw("config", "kubeconfig", "--kubeconfig", str(kubeconfig), "k8s")
            self.assertEqual(code, 0, output)
        # An entry hoopgw did not write is kept, unless --force.
        code, output = yield self.hoopgw("config", "kubeconfig", "--kubeconfig", str(kubeconfig), "--name", "other", "k8s")
        self.assertEqual(code, 1, output)
        self.assertIn(b"already has an entry named 'other' that hoopgw did not write", output)
        self.fake.add_pod("db")
        code, out, err = yield run_split([self.kubectl, "--kubeconfig", str(kubeconfig), "--context", "k8s",
                                          "get", "pods", "-o", "name"], env=self.env())
        self.assertEqual((code, out.strip()), (0, b"pod/db"), err)
        code, out, err = yield run_split([self.kubectl, "--kubeconfig", str(kubeconfig), "config", "view",
                                          "-o", "json"], env=self.env())
        view = json.loads(out)
        self.assertEqual(view["current-context"], "other")
        self.assertEqual(sorted(c["name"] for c in view["clusters"]), ["k8s", "other"])
        [user] = [u["user"] for u in view["users"] if u["name"] == "k8s"]
        self.assertNotIn("token", user)  # the token is fetched per call, never written down
