"""
Human approval of a Kubernetes request (issue 13): the real kubectl's
request a review rule matches waits at the gateway while another identity
approves or denies it with the real `hoopgw reviews` CLI; a denial is a 403
Status kubectl prints; a connection's hold_timeout bounds the wait; kubectl
killed while it waits withdraws the request.
"""

from __future__ import annotations

import json

from twisted.internet.defer import inlineCallbacks

from tests.integration._fake_k8s import spawn_kubectl, start_fake_k8s, write_kubeconfig
from tests.integration._process import HOOPGW, child_env, run
from tests.integration.test_http_proxy import _GatewayCase
from tests.integration.test_postgres_clients import wait_until

REVIEWS = """
[[rule]]
name = "review-guarded-deletes"
effect = "review"
k8s.verbs = ["delete"]
k8s.names = ["guarded*"]
review.approvers = ["group:sre"]
review.timeout = "60s"
message = "deleting a guarded pod needs an SRE"
"""

# The same API server through a connection that can hold a request for 2 s only.
SHORT = """
[[connections]]
name = "k8s-short"
kind = "http"
upstream = "{url}"
token_file = "k8s-token"
ca_file = "k8s-ca.pem"
impersonate = true
hold_timeout = "2s"
"""


class KubectlReviewTests(_GatewayCase):
    timeout = 120

    def setUp(self) -> None:
        fake = start_fake_k8s(self)
        self.start(fake, extra_policy=REVIEWS, extra_config=SHORT.format(url=fake.url), api=True)
        self.bob = self.gateway.identity.dev_issuer.issue("bob", ("sre",), 600)
        self.api = f"http://127.0.0.1:{self.gateway.listeners['api'].port.getHost().port}"
        ca = self.gateway.tls_cert.read_bytes()
        self.kubeconfig = write_kubeconfig(self.base / "kubeconfig", server=self.url("/k8s"), ca_pem=ca, token=self.token)
        self.short = write_kubeconfig(self.base / "short", server=self.url("/k8s-short"), ca_pem=ca, token=self.token)

    def reviews(self, token: str, *args: str):
        return run([*HOOPGW, "reviews", *args, "--api", self.api, "--token", token], env=child_env())

    @inlineCallbacks
    def pending(self):
        """The id of the one pending review, once there is one (as an approver sees it through the CLI)."""

        @inlineCallbacks
        def listed():
            code, output = yield self.reviews(self.bob, "list", "--state", "pending", "--json")
            self.assertEqual(code, 0, output)
            return [json.loads(line)["id"] for line in output.splitlines() if line.strip()]

        [review] = yield wait_until(listed, "a pending review")
        return review

    @inlineCallbacks
    def test_approved_while_kubectl_waits(self):
        self.fake.add_pod("guarded-1")
        proc = spawn_kubectl(self.kubeconfig, "delete", "pod", "guarded-1", "--wait=false")
        review = yield self.pending()
        self.assertIsNotNone(self.fake.get("pods", "guarded-1"))  # held: not forwarded yet
        code, output = yield self.reviews(self.token, "approve", review)  # alice requested it
        self.assertEqual(code, 1)
        self.assertIn(b"never decides their own request", output)
        code, output = yield self.reviews(self.bob, "approve", review, "--reason", "INC-7")
        self.assertEqual(code, 0, output)
        code, out, err = yield proc.ended
        self.assertEqual(code, 0, err)
        self.assertIn('pod "guarded-1" deleted', out)
        self.assertFalse(any(p["metadata"]["name"] == "guarded-1" for p in self.fake.list("pods")))
        [(start, end)] = [a for a in self.actions() if a[0]["action"]["kind"] == "k8s.delete"]
        self.assertEqual((start["decision"]["review"], end["outcome"]["review"]), (review, review))
        self.assertEqual(len(self.records("review.approved")), 1)

    @inlineCallbacks
    def test_denied_is_a_forbidden_status_kubectl_prints(self):
        self.fake.add_pod("guarded-2")
        proc = spawn_kubectl(self.kubeconfig, "delete", "pod", "guarded-2", "--wait=false")
        review = yield self.pending()
        code, output = yield self.reviews(self.bob, "deny", review, "--reason", "not during the freeze")
        self.assertEqual(code, 0, output)
        code, out, err = yield proc.ended
        self.assertNotEqual(code, 0)
        self.assertIn("Forbidden", err)
        self.assertIn("not during the freeze", err)
        self.assertIn(review, err)
        self.assertEqual(self.fake.get("pods", "guarded-2")["metadata"]["name"], "guarded-2")
        [(_, end)] = [a for a in self.actions() if a[0]["action"]["kind"] == "k8s.delete"]
        self.assertEqual(end["outcome"]["status"], "blocked")

    @inlineCallbacks
    def test_hold_timeout_bounds_the_wait(self):
        """The rule allows 60 s; the connection holds a request 2 s: it expires then, and never runs."""
        self.fake.add_pod("guarded-3")
        code, out, err = yield spawn_kubectl(self.short, "delete", "pod", "guarded-3", "--wait=false").ended
        self.assertNotEqual(code, 0)
        self.assertIn("expired after 2 s", err)
        self.assertEqual(self.fake.get("pods", "guarded-3")["metadata"]["name"], "guarded-3")
        [expired] = self.records("review.expired")
        self.assertEqual(expired["review"]["timeout_seconds"], 2)

    @inlineCallbacks
    def test_kubectl_killed_while_held_cancels(self):
        self.fake.add_pod("guarded-4")
        proc = spawn_kubectl(self.kubeconfig, "delete", "pod", "guarded-4", "--wait=false")
        review = yield self.pending()
        yield proc.kill("KILL")
        yield wait_until(lambda: self.records("review.cancelled"), "review.cancelled")
        [cancelled] = self.records("review.cancelled")
        self.assertEqual((cancelled["review"]["id"], cancelled["review"]["decision"]["reason"]),
                         (review, "the client went away"))
        code, output = yield self.reviews(self.bob, "approve", review)
        self.assertEqual(code, 1)
        self.assertIn(b"already cancelled", output)
        self.assertEqual(self.fake.get("pods", "guarded-4")["metadata"]["name"], "guarded-4")
