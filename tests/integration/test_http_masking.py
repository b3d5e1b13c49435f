"""
Masking Kubernetes and HTTP responses, with the real kubectl and curl:
canary values planted in the fake API server's Secrets, ConfigMaps, Pod
specs and logs are read back every way kubectl offers (get in every
output form, lists, Tables, watch, describe, logs, apply) and then looked
for in the client's output, the audit trail and the gateway's log.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web import resource, server

from tests.integration._fake_k8s import run_kubectl, spawn_kubectl, start_fake_k8s, write_kubeconfig
from tests.integration.test_http_proxy import _GatewayCase, _Upstream, require_curl
from tests.integration.test_postgres_clients import wait_until

SECRET_VALUE = "secret-canary-XYZ"
SECRET_B64 = base64.b64encode(SECRET_VALUE.encode()).decode()
CONFIG_PASSWORD = "cm-canary-PW1"
ENV_TOKEN = "env-canary-TOK"
CARD = "4111 1111 1111 1111"
EMAIL = "ada.canary@example.org"
CANARIES = (SECRET_VALUE, SECRET_B64, CONFIG_PASSWORD, ENV_TOKEN, "1111 1111", EMAIL)

MASKS = """
[[mask]]
name = "k8s-secrets"
connections = ["k8s"]
kinds = ["Secret"]
except_groups = ["sre"]

[[mask]]
name = "k8s-config"
connections = ["k8s"]
kinds = ["ConfigMap"]
json_paths = ["data.db_password"]
except_groups = ["sre"]

[[mask]]
name = "pod-env"
connections = ["k8s"]
kinds = ["Pod"]
json_paths = ["spec.containers[*].env[*].value"]
except_groups = ["sre"]

[[mask]]
name = "pii"
connections = ["k8s", "web"]
detectors = ["card", "email"]
except_groups = ["sre"]
"""


def leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    # Also what JSON escaping or YAML folding would spell otherwise.
    flat = text.replace("\\u0040", "@")
    return [c for c in CANARIES if c in flat]


class _Compressed(resource.Resource):
    """The test upstream's /base/gzip: JSON sent gzip-encoded whatever the client asked."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        import gzip

        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-encoding", b"gzip")
        return gzip.compress(json.dumps({"card": CARD}).encode())


class KubernetesMaskingTests(_GatewayCase):
    timeout = 180

    def setUp(self) -> None:
        fake = start_fake_k8s(self)
        self.start(fake)
        (self.base / "policies" / "masks.toml").write_text(MASKS)
        self.gateway.reload_policy()
        self.logged: list[str] = []
        observer = lambda event: self.logged.append(formatEvent(event) or "")  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.kubeconfig = write_kubeconfig(
            self.base / "kubeconfig", server=self.url("/k8s"), ca_pem=self.gateway.tls_cert.read_bytes(),
            token=self.token,
        )
        sre = self.gateway.identity.dev_issuer.issue("bob", ("sre",), 600)
        self.sre_kubeconfig = write_kubeconfig(
            self.base / "kubeconfig-sre", server=self.url("/k8s"), ca_pem=self.gateway.tls_cert.read_bytes(),
            token=sre,
        )
        applied = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                              "data": {"password": SECRET_B64}})
        fake.create("secrets", {
            "metadata": {"name": "db", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied}},
            "data": {"password": SECRET_B64}, "stringData": {"token": SECRET_VALUE},
        })
        fake.create("configmaps", {
            "metadata": {"name": "app", "annotations": {"owner": EMAIL}},
            "data": {"db_password": CONFIG_PASSWORD, "color": "blue", "note": f"card {CARD}"},
        })
        fake.add_pod("web")
        fake.modify("pods", "web", lambda pod: pod["spec"]["containers"][0].__setitem__(
            "env", [{"name": "API_TOKEN", "value": ENV_TOKEN}, {"name": "MODE", "value": "prod"}]))
        fake.push_log("web", f"charged {CARD} for {EMAIL}\n")

    def assert_trail_clean(self) -> None:
        self.assertEqual(leaks(self.audit_text()), [])
        self.assertEqual(leaks("\n".join(self.logged)), [])

    @inlineCallbacks
    def test_every_way_kubectl_reads(self):
        """No canary reaches alice's kubectl, whatever the command and output form; kubectl still works."""
        commands = [
            ("get", "secret", "db", "-o", "yaml"),
            ("get", "secret", "db", "-o", "json"),
            ("get", "secret", "db", "-o", "jsonpath={.data.password}"),
            ("get", "secrets", "-o", "json"),
            ("get", "secrets"),
            ("get", "secrets,configmaps,pods", "-o", "yaml"),
            ("describe", "secret", "db", "--show-events=false"),
            ("get", "configmap", "app", "-o", "yaml"),
            ("describe", "configmap", "app", "--show-events=false"),
            ("get", "pods", "-o", "yaml"),
            ("get", "pod", "web", "-o", "jsonpath={.spec.containers[0].env}"),
            ("describe", "pod", "web", "--show-events=false"),
            ("logs", "web"),
        ]
        for argv in commands:
            code, out, err = yield run_kubectl(self.kubeconfig, *argv)
            self.assertEqual(code, 0, f"{argv}: {err}")
            self.assertEqual(leaks(out + err), [], f"kubectl {' '.join(argv)}:\n{out}")
        code, out, err = yield run_kubectl(self.kubeconfig, "get", "secret", "db", "-o", "json")
        secret = json.loads(out)
        self.assertEqual(base64.b64decode(secret["data"]["password"]), b"[redacted]")
        self.assertEqual(sorted(secret["data"]), ["password", "token"])  # the keys stay
        code, out, err = yield run_kubectl(self.kubeconfig, "get", "configmap", "app", "-o", "json")
        self.assertEqual(json.loads(out)["data"]["color"], "blue")
        # The trail counts what was masked, per mask (never the values).
        masked = [end["outcome"].get("masked") for _, end in self.actions() if end and end["outcome"].get("masked")]
        self.assertTrue(any("k8s-secrets" in m for m in masked), masked)
        self.assertTrue(any("pii" in m for m in masked), masked)
        self.assert_trail_clean()

    @inlineCallbacks
    def test_watch_masks_every_event(self):
        """kubectl get -w -o json: the first list and each later event are masked as they stream."""
        proc = spawn_kubectl(self.kubeconfig, "get", "secrets", "-w", "-o", "json")
        self.addCleanup(proc.kill)
        yield self.fake.wait_for_request(lambda r: r.query.get("watch") in (["1"], ["true"]))
        yield proc.wait_for('"password"')
        second = base64.b64encode(b"second-" + SECRET_VALUE.encode()).decode()
        self.fake.create("secrets", {"metadata": {"name": "later"}, "data": {"k": second}})
        yield proc.wait_for('"later"')
        yield proc.kill()
        out = proc.describe()
        self.assertEqual(leaks(out), [])
        self.assertNotIn(second, out)
        self.assert_trail_clean()

    @inlineCallbacks
    def test_exempt_group_sees_values_the_trail_does_not(self):
        """bob (sre, exempt) reads the values; what the gateway stores of his apply is masked all the same."""
        code, out, err = yield run_kubectl(self.sre_kubeconfig, "get", "configmap", "app", "-o", "json")
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["data"]["db_password"], CONFIG_PASSWORD)
        code, out, err = yield run_kubectl(self.sre_kubeconfig, "get", "secret", "db", "-o", "json")
        self.assertEqual(json.loads(out)["data"]["password"], SECRET_B64)
        manifest = self.base / "cm.json"
        manifest.write_text(json.dumps({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"},
            "data": {"db_password": CONFIG_PASSWORD, "note": f"mail {EMAIL}"},
        }))
        code, out, err = yield run_kubectl(self.sre_kubeconfig, "apply", "-f", str(manifest))
        self.assertEqual(code, 0, err)
        self.assertEqual(self.fake.get("configmaps", "applied")["data"]["db_password"], CONFIG_PASSWORD)
        [create] = [s for s, _ in self.actions() if s["action"]["kind"] == "k8s.create"]
        self.assertEqual(create["action"]["details"]["body"]["json"]["data"]["db_password"], "[redacted]")
        # The value and its last-applied copy (kubectl sorts members: the kind comes after data).
        self.assertEqual(create["action"]["masked"], {"k8s-config": 2, "pii": 2})
        self.assertEqual(create["action"]["details"]["body"]["json"]["data"]["note"], "mail [redacted]")
        self.assert_trail_clean()

    @inlineCallbacks
    def test_apply_answer_is_masked(self):
        """The object the API server sends back to kubectl apply (with its last-applied copy) is masked."""
        manifest = self.base / "secret.json"
        manifest.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "new"}, "data": {"password": SECRET_B64},
        }))
        code, out, err = yield run_kubectl(self.kubeconfig, "apply", "-f", str(manifest), "-o", "json")
        self.assertEqual(code, 0, err)
        self.assertEqual(leaks(out), [])
        annotation = json.loads(out)["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
        self.assertEqual(json.loads(annotation)["data"]["password"], base64.b64encode(b"[redacted]").decode())
        self.assertEqual(self.fake.get("secrets", "new")["data"]["password"], SECRET_B64)  # stored as sent
        self.assert_trail_clean()

    @inlineCallbacks
    def test_protobuf_and_compression_are_not_asked_for(self):
        """
        A client asking for protobuf and gzip gets masked JSON: the gateway
        asks the API server for JSON without compression.
        """
        require_curl()
        status, headers, body = yield self.curl(
            "/k8s/api/v1/namespaces/default/secrets/db",
            "-H", "Accept: application/vnd.kubernetes.protobuf, application/json",
            "-H", "Accept-Encoding: gzip",
        )
        self.assertEqual(status, 200)
        self.assertEqual(leaks(body), [])
        seen = [r for r in self.fake.requests if r.path.endswith("/secrets/db")][-1]
        self.assertEqual(seen.header("accept"), "application/json")
        self.assertIsNone(seen.header("accept-encoding"))


    @inlineCallbacks
    def test_other_forms_and_ranges_are_not_asked_for(self):
        """YAML, protobuf, compression and ranges the client asks for: the API server is asked for whole JSON."""
        require_curl()
        status, headers, body = yield self.curl(
            "/k8s/api/v1/namespaces/default/configmaps/app", "-H", "Accept: application/yaml", "-r", "0-40",
        )
        self.assertEqual(status, 200)
        self.assertEqual(leaks(body), [])
        self.assertEqual(json.loads(body)["data"]["db_password"], "[redacted]")
        seen = [r for r in self.fake.requests if r.path.endswith("/configmaps/app")][-1]
        self.assertEqual((seen.header("accept"), seen.header("range")), ("application/json", None))

    @inlineCallbacks
    def test_invalid_write_message_withheld_in_the_trail(self):
        """A 422's message (which can quote values) is withheld at the client and in the trail."""
        require_curl()
        status, headers, body = yield self.curl(
            "/k8s/api/v1/namespaces/default/configmaps", "-X", "POST", "-H", "Content-Type: application/json",
            "--data", json.dumps({"metadata": {}, "data": {"db_password": "x"}}),
        )
        self.assertEqual(status, 422)
        self.assertIn(b"withheld", body)
        _, end = self.actions()[-1]
        self.assertIn("withheld", end["outcome"]["error"])

    @inlineCallbacks
    def test_logs_that_look_like_json(self):
        """Log lines starting with "[" or "{" are text: printed whole, cards masked."""
        self.fake.push_log("web", "[INFO] ready\n{\"level\":\"info\"}\npanic: " + CARD + "\n")
        code, out, err = yield run_kubectl(self.kubeconfig, "logs", "web")
        self.assertEqual(code, 0, err)
        self.assertIn('[INFO] ready\n{"level":"info"}\npanic: [redacted]', out)

    @inlineCallbacks
    def test_json_patch_values_kept_out_of_the_trail(self):
        code, out, err = yield run_kubectl(
            self.kubeconfig, "patch", "configmap", "app", "--type=json",
            "-p", json.dumps([{"op": "replace", "path": "/data/db_password", "value": "NEW-" + CONFIG_PASSWORD}]),
        )
        self.assertEqual(code, 0, err)
        self.assertNotIn("NEW-" + CONFIG_PASSWORD, self.audit_text())

    @inlineCallbacks
    def test_json_patch_may_not_read_masked_values(self):
        """A JSON patch that copies, moves or tests a masked value is refused; nothing is forwarded."""
        for operation in (
            {"op": "copy", "from": "/data/password", "path": "/metadata/annotations/x"},
            {"op": "move", "from": "/data", "path": "/metadata/labels"},
            {"op": "test", "path": "/data/password", "value": SECRET_B64},
        ):
            before = len(self.fake.requests)
            code, out, err = yield run_kubectl(
                self.kubeconfig, "patch", "secret", "db", "--type=json", "-p", json.dumps([operation]),
            )
            self.assertNotEqual(code, 0)
            self.assertIn("mask", err)
            self.assertFalse([r for r in self.fake.requests[before:] if r.method == "PATCH"])
        code, out, err = yield run_kubectl(
            self.kubeconfig, "patch", "secret", "db", "--type=json",
            "-p", json.dumps([{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]),
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(self.fake.get("secrets", "db")["metadata"]["labels"], {"a": "b"})


class HTTPMaskingTests(_GatewayCase):
    timeout = 120

    def setUp(self) -> None:
        require_curl()
        fake = start_fake_k8s(self)
        self.start(fake)
        (self.base / "policies" / "masks.toml").write_text(MASKS)
        self.gateway.reload_policy()

    @inlineCallbacks
    def test_detectors_on_a_plain_api(self):
        """An HTTP API's JSON answer passes the detectors; its length changes, so it is re-framed."""
        status, headers, body = yield self.curl(f"/web/echo?note=+{CARD.replace(' ', '')}&to={EMAIL}")
        self.assertEqual(status, 200)
        self.assertEqual(leaks(body), [])
        self.assertNotIn(CARD.replace(" ", ""), body.decode())
        self.assertIn("[redacted]", json.loads(body)["uri"])
        self.assertNotIn("content-length", headers)

    @inlineCallbacks
    def test_policy_reloaded_while_the_answer_is_awaited(self):
        """
        A request forwarded under masks is answered under them when the
        policy is reloaded without them before its answer comes: the masks
        it was forwarded with apply to its whole exchange, and its outcome
        is recorded with what they masked.
        """
        asked = self.curl(f"/web/slow?delay=1&note=+{CARD.replace(' ', '')}")
        yield wait_until(lambda: any(s.uri.startswith("/base/slow") for s in self.upstream.seen), "the upstream's request")
        (self.base / "policies" / "masks.toml").unlink()
        self.gateway.reload_policy()
        status, headers, body = yield asked
        self.assertEqual(status, 200)
        self.assertEqual(leaks(body), [])
        _, end = self.actions()[-1]
        self.assertEqual(end["outcome"]["status"], "succeeded")
        self.assertEqual(end["outcome"]["masked"], {"pii": 1})

    @inlineCallbacks
    def test_response_headers_pass_the_detectors(self):
        """
        What an API puts in its response headers (a download's file name, a
        created resource's Location, a redirect) passes the detectors as
        its body does, with a body or without one.
        """
        original = _Upstream.render

        def render(upstream: Any, request: server.Request) -> Any:
            if request.path in (b"/base/export", b"/base/moved"):
                request.setHeader(b"content-disposition", f'attachment; filename="{EMAIL}.csv"'.encode())
                request.setHeader(b"x-card", CARD.encode())
                if request.path == b"/base/moved":
                    request.setResponseCode(302)
                    request.setHeader(b"location", f"/users/{EMAIL}".encode())
                    return b""
                request.setHeader(b"content-type", b"text/csv")
                return b"id\n1\n"
            return original(upstream, request)

        self.patch(_Upstream, "render", render)
        for path, code, args in (("/web/export", 200, ()), ("/web/moved", 302, ()), ("/web/export", 200, ("-I",))):
            status, headers, body = yield self.curl(path, *args)
            self.assertEqual(status, code)
            self.assertEqual(leaks(json.dumps(headers)), [], headers)
            self.assertIn("[redacted]", headers["x-card"])
            if path == "/web/moved":
                self.assertIn("[redacted]", headers["location"])
            self.assertEqual(leaks(body), [])

    @inlineCallbacks
    def test_compressed_answer_refused(self):
        """An upstream that compresses anyway is refused with 502: nothing of the body goes."""
        original = _Upstream.render
        compressed = _Compressed()

        def render(upstream: Any, request: server.Request) -> Any:
            if request.path == b"/base/gzip":
                return compressed.render(request)
            return original(upstream, request)

        self.patch(_Upstream, "render", render)
        status, headers, body = yield self.curl("/web/gzip")
        self.assertEqual(status, 502)
        self.assertIn(b"gzip-encoded", body)
        _, end = self.actions()[-1]
        self.assertEqual(end["outcome"]["status"], "failed")
        self.assertIn("gzip-encoded", end["outcome"]["error"])
