"""
Review notifications by webhook: each review that opens is POSTed, as one
JSON document (L{payload}), to every webhook that applies to it -- each
matched review rule's C{review.webhook} and the gateway's C{[reviews]
webhook}, each URL once.

Delivery is entirely in the background: the observer the review service
calls only schedules it, and a review, its session and its decision never
wait for a webhook.  An attempt that cannot connect, times out (10 s for
the whole exchange), or is answered 5xx or 429 is tried again after 1, 2,
4 and 8 s (5 attempts in all); any other answer but 2xx (a 4xx, a
redirect, which is not followed) is final.  Each failed attempt is logged
-- the webhook named by its origin only, as a path may hold a token -- and
counted in C{hoopgw_review_webhook_failures_total{reason}}; each
notification's end in C{hoopgw_review_webhook_deliveries_total{result}}.
Deliveries still pending when the gateway stops are cancelled.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from hoopgw.audit import events
from hoopgw.errors import terminal_safe
from hoopgw.interfaces import IMetrics
from hoopgw.reviews import Review, identity_record

__all__ = ["EVENT", "SIGNATURE_HEADER", "WebhookNotifier", "payload"]

log = Logger()

#: The webhook's event: the audit event that opened the review.
EVENT = events.REVIEW_REQUESTED
#: C{sha256=<hex HMAC-SHA256 of the body>} under C{[reviews] webhook_secret_*}.
SIGNATURE_HEADER = "X-Hoopgw-Signature-256"
ATTEMPTS = 5
FIRST_DELAY = 1.0  # then doubled: 1, 2, 4, 8 s
TIMEOUT = 10.0
# The start of a refusing answer's body kept for the log line (it says why: "invalid_payload").
_SNIPPET = 200
# The statement quoted in the summary for people; the whole of it is in "action".
_TEXT_INPUT = 500


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hoopgw")
    except PackageNotFoundError:
        return "unknown"


def origin(url: str) -> str:
    """C{scheme://host[:port]} of a webhook: what logs name (a path may hold a token, as chat webhooks' do)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def payload(review: Review, *, gateway: str, api_url: str | None) -> dict[str, Any]:
    """
    The notification of a review that opened (documented field by field in
    docs/configuration.md, "Review notifications").

    @param api_url: the API's base URL as approvers reach it; without it
        C{approve_url} and C{deny_url} are left out.
    """
    record = review.to_record()
    body: dict[str, Any] = {
        "event": EVENT,
        "gateway": gateway,
        "id": review.id,
        "session": review.session,
        "requester": identity_record(review.requester),
        "connection": review.connection,
        "action": record["action"],
        "rule": record["rule"],
        "rules": record["rules"],
        "approvers": record["approvers"],
        "min_approvals": record["min_approvals"],
        "timeout_seconds": record["timeout_seconds"],
        "created": record["created"],
        "expires": record["expires"],
        "reason": review.reason,
    }
    if api_url is not None:
        base = f"{api_url}/api/v1/reviews/{review.id}"
        body["approve_url"] = f"{base}/approve"
        body["deny_url"] = f"{base}/deny"
    body["text"] = _summary(body)
    return body


def _summary(body: Mapping[str, Any]) -> str:
    # Line breaks (of any kind), other controls and bidi overrides escaped
    # (\x0a): the statement and a grant's reason are the requester's text, and
    # must not make lines of the summary (a review line, an approve command
    # naming another review) nor show reordered.  Escaped, not made spaces:
    # "SELECT 1 -- x\nDELETE ..." must not read as one commented line.  The
    # payload's other fields keep them as they are.
    action = body["action"]
    text = terminal_safe(action.get("input", ""))
    if len(text) > _TEXT_INPUT:
        text = text[:_TEXT_INPUT] + "…"
    reason = terminal_safe(body["reason"])
    lines = [
        f"{terminal_safe(body['requester']['subject'])} asks to run on {body['connection']} ({action.get('kind')}): {text}",
        f"Review {body['id']}"
        + (f" by rule {', '.join(body['rules'])}" if body["rules"] else "")
        + (f": {reason}" if reason else "")
        + f". Approvers: {', '.join(body['approvers'])}"
        + (f" ({body['min_approvals']} needed)" if body["min_approvals"] > 1 else "")
        + f"; expires {body['expires']}.",
        f"hoopgw reviews approve {body['id']}  |  hoopgw reviews deny {body['id']} --reason \"...\"",
    ]
    return "\n".join(lines)


@define(eq=False)
class _Delivery:
    """One notification to one webhook, across its attempts."""

    review: str
    url: str = field(repr=False)  # a path may hold a token
    body: bytes = field(repr=False)
    attempt: int = 0
    timer: Any = None  # the DelayedCall of the next attempt
    request: Deferred[object] | None = None  # the attempt in flight (only ever cancelled)


class _Snippet(Protocol):
    """Reads the start of an answer's body, then drops the connection; C{done} fires with it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = b""
        self.done: Deferred[bytes] = Deferred(lambda _: self._drop())

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionMade(self) -> None:
        if self.limit <= 0:
            self._finish()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return  # what arrives before the connection is dropped
        self.data += data[: self.limit - len(self.data)]
        if len(self.data) >= self.limit:
            self._finish()

    def _finish(self) -> None:
        if not self.done.called:
            self._drop()
            self.done.callback(self.data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(self.data)


def _describe(failure: Failure) -> str:
    """A failed attempt in words: the exception and, for Twisted's wrappers, what they wrap."""
    error = failure.value
    if isinstance(error, (ResponseFailed, ResponseNeverReceived)):
        inner = "; ".join(f.getErrorMessage() for f in error.reasons) or "no answer"
        return f"{type(error).__name__}: {inner}"
    return f"{type(error).__name__}: {failure.getErrorMessage()}"


class WebhookNotifier(Service):
    """
    The review service's observer that notifies webhooks (module
    docstring); a child service of the gateway, so that stopping it cancels
    what is pending.

    @param client: the part of treq's API used: C{post} (a
        L{treq.client.HTTPClient}, a L{treq.testing.StubTreq}); by default
        one with 10 s connection timeouts that verifies TLS against the
        system's trust store.
    @param webhook: C{[reviews] webhook}: notified of every review.
    @param api_url: returns the API's base URL for C{approve_url} and
        C{deny_url}, or C{None}; asked at each notification (an API
        listener on port 0 is known once bound).
    @param secret: the key of the signature header, if any.
    """

    name = "review-webhooks"

    def __init__(
        self,
        *,
        reactor: Any,
        metrics: IMetrics,
        webhook: str | None = None,
        api_url: Callable[[], str | None] = lambda: None,
        secret: bytes | None = None,
        gateway: str = "hoopgw",
        client: Any = None,
        attempts: int = ATTEMPTS,
        first_delay: float = FIRST_DELAY,
        timeout: float = TIMEOUT,
    ) -> None:
        self._reactor = reactor
        self._metrics = metrics
        self.webhook = webhook
        self._api_url = api_url
        self._secret = secret
        self.gateway = gateway
        if client is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool

            client = HTTPClient(Agent(reactor, connectTimeout=timeout, pool=HTTPConnectionPool(reactor, persistent=False)))
        self._client = client
        self.attempts = attempts
        self.first_delay = first_delay
        self.timeout = timeout
        self.pending: set[_Delivery] = set()
        self._scheduled: set[IDelayedCall] = set()  # notifications not started yet
        self._stopped = False
        self._warned_no_urls = False
        self._user_agent = f"hoopgw/{_version()}"

    def urls(self, review: Review) -> tuple[str, ...]:
        """The webhooks to notify of C{review}: its rules' own, then the gateway's; each once."""
        urls = getattr(review.requirement, "webhooks", ())
        if self.webhook is not None:
            urls = (*urls, self.webhook)
        return tuple(dict.fromkeys(urls))

    def __call__(self, review: Review) -> None:
        """The observer: schedules the notification and returns (the review's session never waits)."""
        if self._stopped or not self.urls(review):
            return
        call: IDelayedCall = self._reactor.callLater(0, lambda: self._notify(review, call))
        self._scheduled.add(call)

    def _notify(self, review: Review, call: IDelayedCall) -> None:
        self._scheduled.discard(call)
        api_url = self._api_url()
        if api_url is None and not self._warned_no_urls:
            self._warned_no_urls = True
            log.warn(
                "review notifications carry no approve_url/deny_url: set [reviews] api_url "
                "(the API listener is off, or its address is not one to give out)"
            )
        try:
            # default=str: the action is as the trail holds it; a value JSON has no form for is sent as text.
            body = json.dumps(
                payload(review, gateway=self.gateway, api_url=api_url), ensure_ascii=False, default=str
            ).encode("utf-8")
        except Exception:
            log.failure("review {review}: the notification could not be built", review=review.id)
            return
        for url in self.urls(review):
            delivery = _Delivery(review.id, url, body)
            self.pending.add(delivery)
            self._attempt(delivery)

    def _headers(self, body: bytes) -> dict[str, list[str]]:
        headers = {
            "Content-Type": ["application/json"],
            "User-Agent": [self._user_agent],
            "X-Hoopgw-Event": [EVENT],
        }
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = [f"sha256={digest}"]
        return headers

    def _attempt(self, delivery: _Delivery) -> None:
        delivery.timer = None
        delivery.attempt += 1
        try:
            d = self._client.post(
                delivery.url,
                data=delivery.body,
                headers=self._headers(delivery.body),
                allow_redirects=False,  # a redirect is an answer, not followed: the URL is the operator's
                unbuffered=True,
                reactor=self._reactor,
            )
        except Exception:
            d = fail()
        d.addCallback(self._read)
        # One deadline for the whole exchange, on the injected clock.
        d.addTimeout(self.timeout, self._reactor)
        delivery.request = d
        d.addCallbacks(self._answered, self._failed, callbackArgs=(delivery,), errbackArgs=(delivery,))
        d.addErrback(lambda f: log.failure("review webhook delivery failed unexpectedly", f))

    def _read(self, response: Any) -> Deferred[tuple[int, bytes]]:
        """(status, the start of the body if it is not a 2xx)."""
        code = response.code
        snippet = _Snippet(0 if 200 <= code < 300 else _SNIPPET)
        response.deliverBody(snippet)
        return snippet.done.addCallback(lambda data: (code, data))

    def _answered(self, answer: tuple[int, bytes], delivery: _Delivery) -> None:
        delivery.request = None
        code, data = answer
        if 200 <= code < 300:
            self.pending.discard(delivery)
            self._metrics.webhook_delivered()
            log.debug("review {review}: webhook {target} notified", review=delivery.review, target=origin(delivery.url))
            return
        error = f"HTTP {code}" + (f" {data.decode('utf-8', 'replace')!r}" if data else "")
        if code == 429:
            self._retry(delivery, "rate_limited", error)
        elif code >= 500:
            self._retry(delivery, "server_error", error)
        else:
            self._give_up(delivery, "refused", error, retried=False)

    def _failed(self, failure: Failure, delivery: _Delivery) -> None:
        delivery.request = None
        if self._stopped and failure.check(CancelledError):
            return
        if failure.check(TimeoutError):
            self._retry(delivery, "timeout", f"no answer within {self.timeout:g} s")
        else:
            self._retry(delivery, "connection", _describe(failure))

    def _retry(self, delivery: _Delivery, reason: str, error: str) -> None:
        if self._stopped:
            return
        if delivery.attempt >= self.attempts:
            self._give_up(delivery, reason, error, retried=True)
            return
        self._metrics.webhook_attempt_failed(reason)
        delay = self.first_delay * 2 ** (delivery.attempt - 1)
        log.warn(
            "review {review}: webhook {target}: attempt {attempt} of {attempts} failed ({error}); trying again in {delay:g} s",
            review=delivery.review,
            target=origin(delivery.url),
            attempt=delivery.attempt,
            attempts=self.attempts,
            error=error,
            delay=delay,
        )
        delivery.timer = self._reactor.callLater(delay, self._attempt, delivery)

    def _give_up(self, delivery: _Delivery, reason: str, error: str, *, retried: bool) -> None:
        self.pending.discard(delivery)
        self._metrics.webhook_attempt_failed(reason)
        self._metrics.webhook_given_up()
        log.error(
            "review {review}: webhook {target} not notified: {error} ({why})",
            review=delivery.review,
            target=origin(delivery.url),
            error=error,
            why=f"attempt {delivery.attempt} of {self.attempts}" if retried else "not retried",
        )

    def stopService(self) -> None:
        """Cancel every pending delivery: a notification never outlives the gateway."""
        Service.stopService(self)
        self._stopped = True
        for call in self._scheduled:
            call.cancel()
        self._scheduled.clear()
        pending, self.pending = self.pending, set()
        for delivery in pending:
            if delivery.timer is not None and delivery.timer.active():
                delivery.timer.cancel()
            if delivery.request is not None:
                delivery.request.cancel()
        if pending:
            log.info("{count} review notification(s) cancelled: the gateway is stopping", count=len(pending))
