"""
Review notifications by webhook (issue 13) end to end: psql's statement is
held by a review rule; the rule's webhook and the gateway's receive the
signed JSON on a real Twisted web server (the gateway's, which answers 503
once, is tried again); an approver POSTs to the notification's approve_url
with their token and psql's statement runs; /metrics counts it all.  A
webhook that keeps failing never holds the session up, and what is still
pending when the gateway stops is cancelled.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.integration._process import spawn
from tests.integration.test_postgres_clients import _GatewayCase, wait_until

SECRET = "webhook-s3cret"

REVIEWS = """
[[rule]]
name = "review-item-deletes"
effect = "review"
sql.writes = ["public.items"]
review.approvers = ["group:dba"]
review.timeout = "60s"
review.webhook = "{hook}/rule/T0/token"
message = "deletes from items need a DBA"
"""


class Receiver(Resource):
    """A webhook receiver: answers C{codes[path]} in turn (then 200), keeping each request."""

    isLeaf = True

    def __init__(self, codes: dict[str, list[int]]) -> None:
        super().__init__()
        self.codes = codes
        self.received: list[tuple[str, dict[bytes, list[bytes]], bytes]] = []

    def render_POST(self, request: Any) -> bytes:
        path = request.path.decode()
        headers = {k.lower(): v for k, v in request.requestHeaders.getAllRawHeaders()}
        self.received.append((path, headers, request.content.read()))
        codes = self.codes.get(path) or []
        request.setResponseCode(codes.pop(0) if codes else 200)
        return b"ok"

    def to(self, path: str) -> list[tuple[dict[bytes, list[bytes]], bytes]]:
        return [(headers, body) for p, headers, body in self.received if p == path]


class WebhookTests(_GatewayCase):
    auto_deny = False

    def setUp(self) -> None:
        self.receiver = Receiver({"/global": [503], "/down": [503] * 10})
        port = reactor.listenTCP(0, Site(self.receiver), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.hook = f"http://127.0.0.1:{port.getHost().port}"
        os.environ["HOOPGW_TEST_WEBHOOK_SECRET"] = SECRET
        self.addCleanup(os.environ.pop, "HOOPGW_TEST_WEBHOOK_SECRET", None)
        # The approver's and Prometheus' client: no connection kept open past the test.
        self.http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))

    def start_gateway(self, global_path: str) -> None:
        self.start(
            extra_policy=REVIEWS.format(hook=self.hook),
            api=True,
            extra_config=(
                f'[reviews]\nwebhook = "{self.hook}{global_path}"\n'
                'webhook_secret_env = "HOOPGW_TEST_WEBHOOK_SECRET"\n'
            ),
        )
        self.bob = self.gateway.identity.dev_issuer.issue("bob", ("dba",), 600)
        self.api = f"http://127.0.0.1:{self.gateway.listeners['api'].port.getHost().port}"

    def held(self, sql: str):
        proc = spawn(self.psql_argv("-c", sql), marker=b"waits for review", env=self.env())
        return proc.ready.addCallback(
            lambda _: (proc, re.search(rb"waits for review (\w+)", proc.output).group(1).decode())
        )

    @inlineCallbacks
    def metric(self, name: str, **labels: str):
        response = yield self.http.get(self.api + "/metrics")
        text = (yield response.text()).splitlines()
        label = ",".join(f'{k}="{v}"' for k, v in labels.items())
        [line] = [line for line in text if line.startswith(f"{name}{{{label}}} ")]
        return float(line.split()[-1])

    @inlineCallbacks
    def test_notified_and_approved_from_the_link(self):
        self.start_gateway("/global")
        proc, review = yield self.held("DELETE FROM items WHERE id = 1")
        # The rule's webhook at once; the gateway's answers 503 first, and is tried again 1 s later.
        yield wait_until(lambda: len(self.receiver.to("/global")) == 2 and self.receiver.to("/rule/T0/token"),
                         "both webhooks to be notified")
        [(headers, body)] = self.receiver.to("/rule/T0/token")
        self.assertEqual([b for _, b in self.receiver.to("/global")], [body, body])
        self.assertEqual(headers[b"x-hoopgw-signature-256"],
                         [b"sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest().encode()])
        notice = json.loads(body)
        self.assertEqual(
            {k: notice[k] for k in ("event", "id", "connection", "rule", "rules", "approvers", "reason")},
            {
                "event": "review.requested",
                "id": review,
                "connection": "appdb",
                "rule": "review-item-deletes",
                "rules": ["review-item-deletes"],
                "approvers": ["group:dba"],
                "reason": "deletes from items need a DBA",
            },
        )
        self.assertEqual(notice["requester"]["subject"], "alice")
        self.assertEqual((notice["action"]["kind"], notice["action"]["input"]),
                         ("sql.query", "DELETE FROM items WHERE id = 1"))
        # The API listener is on port 0: the link names the port it is bound to.
        self.assertEqual(notice["approve_url"], f"{self.api}/api/v1/reviews/{review}/approve")
        self.assertEqual(notice["deny_url"], f"{self.api}/api/v1/reviews/{review}/deny")
        response = yield self.http.post(
            notice["approve_url"],
            json={"reason": "from the webhook"},
            headers={"Authorization": f"Bearer {self.bob}"},
        )
        self.assertEqual(response.code, 200, (yield response.text()))
        yield response.content()
        code = yield proc.ended
        self.assertEqual(code, 0, proc.output)
        self.assertIn(b"DELETE 1", proc.output)
        self.assertEqual((yield self.metric("hoopgw_review_webhook_deliveries_total", result="delivered")), 2)
        self.assertEqual((yield self.metric("hoopgw_review_webhook_failures_total", reason="server_error")), 1)
        self.assertEqual((yield self.metric("hoopgw_review_webhook_deliveries_total", result="failed")), 0)

    @inlineCallbacks
    def test_a_failing_webhook_holds_nothing_up(self):
        """
        The gateway's webhook answers 503 every time: the statement is
        approved and runs while it is still being retried; the gateway's
        stop cancels the retry (trial fails a test that leaves a timer).
        """
        self.start_gateway("/down")
        proc, review = yield self.held("DELETE FROM items WHERE id = 2")
        yield wait_until(lambda: self.receiver.to("/down"), "the first attempt")
        response = yield self.http.post(
            f"{self.api}/api/v1/reviews/{review}/approve", headers={"Authorization": f"Bearer {self.bob}"}
        )
        self.assertEqual(response.code, 200)
        yield response.content()
        code = yield proc.ended
        self.assertEqual(code, 0, proc.output)
        self.assertIn(b"DELETE 1", proc.output)
        self.assertLess(len(self.receiver.to("/down")), 5)
        self.assertTrue(self.gateway.webhooks.pending)
        yield self.gateway.stopService()
        self.assertEqual(self.gateway.webhooks.pending, set())
