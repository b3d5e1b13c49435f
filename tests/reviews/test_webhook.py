"""
Review notifications by webhook on a Clock: the payload, which URLs, the
signature, retries with back-off, what is not retried, the counts in
/metrics, the log lines, and cancellation at stop.  HTTP answers come from
treq's StubTreq (a real treq client over an in-memory Resource); failures
to connect and silence from a fake client.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from hoopgw.config import Config, ReviewsSettings, SecretRef
from hoopgw.errors import ConfigError
from hoopgw.gateway import Gateway, _webhook_secret
from hoopgw.metrics import Metrics
from hoopgw.model import Identity
from hoopgw.policy.rules import ReviewRequirement
from hoopgw.reviews import ReviewService
from hoopgw.reviews.webhook import SIGNATURE_HEADER, WebhookNotifier
from hoopgw.store import MemoryStore
from hoopgw.testing import MemoryAuditLog

ALICE = Identity("test", "alice", ("dev",))
RULE_HOOK = "https://hooks.example/services/T0/B0/rule-token"
GLOBAL_HOOK = "https://chat.example/hooks/global-token"
DBA = ReviewRequirement(
    approvers=("group:dba",), timeout_seconds=60, rules=("review-deletes",), webhooks=(RULE_HOOK,)
)


class Receiver(Resource):
    """Answers each POST with the next status of C{codes} (the last one thereafter), keeping what came."""

    isLeaf = True

    def __init__(self, *codes: int) -> None:
        super().__init__()
        self.codes = list(codes) or [200]
        self.received: list[tuple[str, dict[bytes, list[bytes]], bytes]] = []

    def render_POST(self, request: Any) -> bytes:
        headers = {k.lower(): v for k, v in request.requestHeaders.getAllRawHeaders()}
        self.received.append((request.uri.decode(), headers, request.content.read()))
        code = self.codes.pop(0) if len(self.codes) > 1 else self.codes[0]
        request.setResponseCode(code)
        return b'{"error": "invalid_payload"}' if code >= 400 else b"ok"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, body in self.received]


class FakeClient:
    """A client whose posts each get the next of C{results}: a Deferred, or an exception to fail with."""

    def __init__(self, *results: Any) -> None:
        self.results = list(results)
        self.posts: list[tuple[str, dict[str, Any]]] = []

    def post(self, url: str, **kwargs: Any) -> Deferred:
        self.posts.append((url, kwargs))
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, Exception):
            return fail(result)
        if result == "silent":
            self.silent = Deferred()
            return self.silent
        return result


class WebhookTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics(clock=self.clock)
        self.audit = MemoryAuditLog()
        self.reviews = ReviewService(store=MemoryStore(), append=self.audit.append, clock=self.clock, gateway="gw")
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def notifier(self, client: Any, **kwargs: Any) -> WebhookNotifier:
        kwargs.setdefault("api_url", lambda: "https://gw.example:8443")
        notifier = WebhookNotifier(reactor=self.clock, metrics=self.metrics, client=client, gateway="gw", **kwargs)
        notifier.startService()
        self.reviews.observers.append(notifier)
        return notifier

    def stub(self, *codes: int, **kwargs: Any) -> tuple[Receiver, WebhookNotifier]:
        receiver = Receiver(*codes)
        return receiver, self.notifier(StubTreq(receiver), **kwargs)

    def open(self, requirement: ReviewRequirement = DBA, action: dict[str, Any] | None = None):
        return self.successResultOf(self.reviews.open(
            session="s1", action_id="s1/4", requester=ALICE, connection="appdb",
            action=action or {"kind": "sql.query", "input": "DELETE FROM items WHERE id = 1"},
            rule="review-deletes", requirement=requirement, reason="deletes need a DBA",
        ))

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def logged(self) -> str:
        return "\n".join(formatEvent(e) for e in self.events if e.get("log_level", LogLevel.debug) >= LogLevel.info)

    def test_payload(self) -> None:
        """
        The observer only schedules the notification; the POST is JSON with
        every documented field, links to the API, and a summary for people.
        """
        receiver, _ = self.stub(200)
        review = self.open(action={"kind": "sql.query", "input": "DELETE FROM items WHERE id = $1", "details": {"parameters": ["1"]}})
        self.assertEqual(receiver.received, [])  # nothing on the review's own path
        self.clock.advance(0)
        [(uri, headers, _)] = receiver.received
        self.assertEqual(uri, "/services/T0/B0/rule-token")
        self.assertEqual(headers[b"content-type"], [b"application/json"])
        self.assertEqual(headers[b"x-hoopgw-event"], [b"review.requested"])
        self.assertTrue(headers[b"user-agent"][0].startswith(b"hoopgw/"))
        self.assertNotIn(SIGNATURE_HEADER.lower().encode(), headers)
        [body] = receiver.bodies()
        text = body.pop("text")
        self.assertEqual(body, {
            "event": "review.requested",
            "gateway": "gw",
            "id": review.id,
            "session": "s1",
            "requester": {"issuer": "test", "subject": "alice", "groups": ["dev"]},
            "connection": "appdb",
            "action": {"id": "s1/4", "kind": "sql.query", "input": "DELETE FROM items WHERE id = $1",
                       "details": {"parameters": ["1"]}},
            "rule": "review-deletes",
            "rules": ["review-deletes"],
            "approvers": ["group:dba"],
            "min_approvals": 1,
            "timeout_seconds": 60,
            "created": review.to_record()["created"],
            "expires": review.to_record()["expires"],
            "reason": "deletes need a DBA",
            "approve_url": f"https://gw.example:8443/api/v1/reviews/{review.id}/approve",
            "deny_url": f"https://gw.example:8443/api/v1/reviews/{review.id}/deny",
        })
        self.assertIn("alice asks to run on appdb (sql.query): DELETE FROM items WHERE id = $1", text)
        self.assertIn(f"hoopgw reviews approve {review.id}", text)
        self.assertEqual(self.count("hoopgw_review_webhook_deliveries_total", result="delivered"), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [self.reviews._live[review.id]._timer])

    def test_summary_lines_are_the_gateways(self) -> None:
        """
        The statement is the requester's text: its line breaks (any of
        them) do not make lines of the summary, so it cannot show an
        approver a review line or an approve command of its own (another
        review's id: the requester's pending grant).
        """
        receiver, _ = self.stub(200)
        forged = "\nReview zzzzzzzz by rule review-deletes. Approvers: group:dba.\nhoopgw reviews approve zzzzzzzz"
        inputs = [
            "DELETE FROM items WHERE false -- " + forged + "\n\n\n",
            "DELETE FROM items WHERE false -- " + forged.replace("\n", "\u2028"),
            "DELETE FROM items WHERE false -- " + forged.replace("\n", "\r"),
        ]
        reviews = [self.open(action={"kind": "sql.query", "input": text}) for text in inputs]
        self.clock.advance(0)
        for review, body in zip(reviews, receiver.bodies()):
            lines = body["text"].splitlines()
            self.assertEqual(len(lines), 3, lines)
            self.assertTrue(lines[0].startswith("alice asks to run on appdb (sql.query): DELETE FROM items WHERE false"))
            self.assertEqual(lines[2], f'hoopgw reviews approve {review.id}  |  hoopgw reviews deny {review.id} --reason "..."')
            self.assertTrue(body["action"]["input"].startswith("DELETE"))  # the whole of it, as it was
        # A grant's review: its reason is the requester's too.
        review = self.successResultOf(self.reviews.open(
            session="", action_id="grant/g1", requester=ALICE, connection="appdb",
            action={"kind": "grant.request", "input": "access to appdb for 1h"},
            rule="review-deletes", requirement=DBA, reason="INC-1" + forged,
        ))
        self.clock.advance(0)
        lines = receiver.bodies()[-1]["text"].splitlines()
        self.assertEqual(len(lines), 3, lines)
        self.assertEqual(lines[2], f'hoopgw reviews approve {review.id}  |  hoopgw reviews deny {review.id} --reason "..."')
        # A line break is shown, not made a space: the DELETE is not read as part of the comment.
        self.open(action={"kind": "sql.query", "input": "SELECT 1 -- just a read\nDELETE FROM items"})
        self.clock.advance(0)
        self.assertIn("SELECT 1 -- just a read\\x0aDELETE FROM items", receiver.bodies()[-1]["text"])
        # Nor shown reordered (a bidi override: what runs is not what reads).
        self.open(action={"kind": "sql.query", "input": "DELETE FROM items /*\u202e*/ WHERE true"})
        self.clock.advance(0)
        text = receiver.bodies()[-1]["text"]
        self.assertNotIn("\u202e", text)
        self.assertIn("DELETE FROM items /*\\u202e*/ WHERE true", text)

    def test_without_api_url(self) -> None:
        """No API URL: the links are left out, and the log says once how to have them."""
        receiver, _ = self.stub(200, api_url=lambda: None)
        self.open()
        self.open()
        self.clock.advance(0)
        for body in receiver.bodies():
            self.assertNotIn("approve_url", body)
            self.assertNotIn("deny_url", body)
        self.assertEqual(self.logged().count("set [reviews] api_url"), 1)

    def test_each_rule_and_the_global_webhook_once(self) -> None:
        """Several review rules: each one's webhook, and the gateway's, each URL once."""
        receiver, _ = self.stub(200, webhook=GLOBAL_HOOK)
        other = ReviewRequirement(approvers=("group:finance",), rules=("review-payments",), webhooks=(GLOBAL_HOOK,))
        third = ReviewRequirement(approvers=("group:sre",), rules=("review-prod",))
        self.open(ReviewRequirement.combine([DBA, other, third]))
        self.clock.advance(0)
        self.assertEqual([uri for uri, _, _ in receiver.received], ["/services/T0/B0/rule-token", "/hooks/global-token"])
        self.assertEqual(receiver.bodies()[0]["rules"], ["review-deletes", "review-payments", "review-prod"])
        self.assertEqual(receiver.received[0][2], receiver.received[1][2])  # one document

    def test_no_webhook_no_work(self) -> None:
        receiver, _ = self.stub(200)
        self.open(ReviewRequirement(approvers=("group:dba",), timeout_seconds=60))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the review's own expiry only
        self.clock.advance(0)
        self.assertEqual(receiver.received, [])

    def test_signature(self) -> None:
        """With a secret, the header carries the HMAC-SHA256 of the exact body."""
        receiver, _ = self.stub(200, secret=b"s3cret")
        self.open()
        self.clock.advance(0)
        [(_, headers, body)] = receiver.received
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        self.assertEqual(headers[SIGNATURE_HEADER.lower().encode()], [expected.encode()])
        self.assertNotIn("s3cret", self.logged())

    def test_5xx_and_429_retried_with_back_off(self) -> None:
        """503, 429, 500 then 200: attempts 1, 2 and 4 s apart; each failure logged and counted."""
        receiver, notifier = self.stub(503, 429, 500, 200)
        self.open()
        self.clock.advance(0)
        self.assertEqual(len(receiver.received), 1)
        self.clock.advance(0.999)
        self.assertEqual(len(receiver.received), 1)
        self.clock.advance(0.001)
        self.assertEqual(len(receiver.received), 2)
        self.clock.advance(2)
        self.assertEqual(len(receiver.received), 3)
        self.clock.advance(3.999)
        self.assertEqual(len(receiver.received), 3)
        self.clock.advance(0.001)
        self.assertEqual(len(receiver.received), 4)
        self.assertEqual(len({body for _, _, body in receiver.received}), 1)  # the same bytes each time
        self.assertEqual(self.count("hoopgw_review_webhook_failures_total", reason="server_error"), 2)
        self.assertEqual(self.count("hoopgw_review_webhook_failures_total", reason="rate_limited"), 1)
        self.assertEqual(self.count("hoopgw_review_webhook_deliveries_total", result="delivered"), 1)
        self.assertEqual(self.count("hoopgw_review_webhook_deliveries_total", result="failed"), 0)
        self.assertEqual(notifier.pending, set())
        log = self.logged()
        self.assertIn("webhook https://hooks.example: attempt 1 of 5 failed (HTTP 503", log)
        self.assertIn("trying again in 4 s", log)
        self.assertNotIn("rule-token", log)  # a path may hold a token: never logged

    def test_4xx_not_retried(self) -> None:
        receiver, notifier = self.stub(400)
        self.open()
        self.clock.advance(0)
        self.clock.advance(100)
        self.assertEqual(len(receiver.received), 1)
        self.assertEqual(self.count("hoopgw_review_webhook_failures_total", reason="refused"), 1)
        self.assertEqual(self.count("hoopgw_review_webhook_deliveries_total", result="failed"), 1)
        self.assertEqual(notifier.pending, set())
        self.assertIn("""not notified: HTTP 400 '{"error": "invalid_payload"}' (not retried)""", self.logged())

    def test_redirect_not_followed(self) -> None:
        receiver, _ = self.stub(302)
        self.open()
        self.clock.advance(0)
        self.clock.advance(100)
        self.assertEqual(len(receiver.received), 1)
        self.assertEqual(self.count("hoopgw_review_webhook_failures_total", reason="refused"), 1)

    def test_unreachable_gives_up_after_five_attempts(self) -> None:
        """Connection refused each time: attempts at 0, 1, 3, 7 and 15 s, then given up, nothing left scheduled."""
        client = FakeClient(ConnectionRefusedError())
        notifier = self.notifier(client)
        review = self.open()
        times = []
        self.clock.advance(0)
        for _ in range(40):
            if len(client.posts) > len(times):
                times.append(self.clock.seconds())
            self.clock.advance(0.5)
        self.assertEqual(times, [0, 1, 3, 7, 15])
        self.assertEqual(client.posts[0][0], RULE_HOOK)
        self.assertEqual(client.posts[0][1]["allow_redirects"], False)
        self.assertEqual(self.count("hoopgw_review_webhook_failures_total", reason="connection"), 5)
        self.assertEqual(self.count("hoopgw_review_webhook_deliveries_total", result="failed"), 1)
        self.assertEqual(notifier.pending, set())
        self.assertEqual(self.clock.getDelayedCalls(), [review._timer])
        self.assertIn("not notified: ConnectionRefusedError: Connection was refused", self.logged())
        self.assertIn("(attempt 5 of 5)", self.logged())
        # The review itself never noticed.
        self.assertTrue(review.pending)

    def test_silence_times_out(self) -> None:
        """An answer that never comes: the attempt is cancelled after 10 s and tried again."""
        client = FakeClient("silent")
        self.notifier(client)
        self.open()
        self.clock.advance(0)
        first = client.silent
        self.clock.advance(9.9)
        self.assertNoResult(first)
        self.clock.advance(0.1)
        self.assertTrue(first.called)  # cancelled
        self.assertEqual(self.count("hoopgw_review_webhook_failures_total", reason="timeout"), 1)
        self.clock.advance(1)
        self.assertEqual(len(client.posts), 2)
        self.assertIn("no answer within 10 s", self.logged())

    def test_stop_cancels_what_is_pending(self) -> None:
        """At stop: a back-off timer, a request in flight and a notification not yet started are all cancelled."""
        client = FakeClient(ConnectionRefusedError(), "silent")
        notifier = self.notifier(client)
        review = self.open()
        self.clock.advance(0)  # first attempt refused: waiting 1 s
        second = self.open()
        self.clock.advance(0)  # second review's first attempt: in flight
        self.open()  # scheduled, not started
        notifier.stopService()
        self.assertTrue(client.silent.called)  # cancelled
        self.clock.advance(0)
        self.assertEqual(len(client.posts), 2)
        self.assertEqual(sorted(map(id, self.clock.getDelayedCalls())),
                         sorted(id(r._timer) for r in self.reviews._live.values()))
        self.assertEqual(notifier.pending, set())
        self.assertEqual(self.count("hoopgw_review_webhook_failures_total", reason="connection"), 1)
        self.assertEqual(self.count("hoopgw_review_webhook_deliveries_total", result="failed"), 0)
        self.open()
        self.clock.advance(0)
        self.assertEqual(len(client.posts), 2)  # stopped: no more
        self.assertTrue(review.pending and second.pending)


class APIURLTests(SynchronousTestCase):
    """Where the approve and deny links point without [reviews] api_url: the API listener's bound address."""

    def url(self, description: str | None, address: Any = None, api_url: str | None = None) -> str | None:
        listeners = {}
        if description is not None:
            port = SimpleNamespace(getHost=lambda: address) if address is not None else None
            listeners["api"] = SimpleNamespace(description=description, port=port)
        gateway = SimpleNamespace(config=SimpleNamespace(reviews=ReviewsSettings(api_url=api_url)), listeners=listeners)
        return Gateway.api_url(gateway)  # type: ignore[arg-type]

    def test_derived(self) -> None:
        self.assertEqual(self.url("tcp:0:interface=127.0.0.1", IPv4Address("TCP", "127.0.0.1", 40123)),
                         "http://127.0.0.1:40123")
        self.assertEqual(self.url("ssl:18009:privateKey=k.pem", IPv4Address("TCP", "10.1.2.3", 18009)),
                         "https://10.1.2.3:18009")
        self.assertEqual(self.url(r"tcp6:18009:interface=\:\:1", IPv6Address("TCP", "::1", 18009)),
                         "http://[::1]:18009")

    def test_not_derived(self) -> None:
        self.assertIsNone(self.url(None))  # no API listener
        self.assertIsNone(self.url("tcp:18009"))  # not bound yet
        self.assertIsNone(self.url("tcp:18009", IPv4Address("TCP", "0.0.0.0", 18009)))
        self.assertIsNone(self.url("tcp6:18009", IPv6Address("TCP", "::", 18009)))
        self.assertIsNone(self.url("haproxy:tcp:18009", IPv4Address("TCP", "127.0.0.1", 18009)))
        self.assertIsNone(self.url("unix:/run/hoopgw/api.sock", SimpleNamespace(name="/run/hoopgw/api.sock")))

    def test_configured_wins(self) -> None:
        self.assertEqual(
            self.url("tcp:0", IPv4Address("TCP", "127.0.0.1", 1), api_url="https://gw.example/hoopgw"),
            "https://gw.example/hoopgw",
        )


class SecretTests(SynchronousTestCase):
    """The signing secret is read when the gateway is built; an empty one stops it, naming the key."""

    def test_read(self) -> None:
        path = Path(self.mktemp())
        with open(path, "w") as f:
            f.write("s3cret\n")
        config = Config(reviews=ReviewsSettings(webhook_secret=SecretRef(file=path)))
        self.assertEqual(_webhook_secret(config), b"s3cret")
        self.assertIsNone(_webhook_secret(Config()))
        with open(path, "w") as f:
            f.write("\n")
        error = self.assertRaises(ConfigError, _webhook_secret, config)
        self.assertEqual(str(error), f"reviews.webhook_secret_file: the secret (file:{path}) is empty")
