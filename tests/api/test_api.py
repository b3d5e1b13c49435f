"""
Tests for L{hoopgw.api}: status codes, content types and bodies of the API
listener, through C{DummyRequest} and once through a real loopback listener.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from hoopgw.api import make_api_site
from hoopgw.metrics import Metrics

OK = {"status": "ok", "checks": {"audit": "ok", "store": "ok"}}
FAILING = {"status": "failing", "checks": {"audit": "disk full", "store": "ok"}}


def get(site: Site, path: bytes, method: bytes = b"GET") -> DummyRequest:
    """Render C{path} on C{site} as the site would, and return the finished request."""
    request = DummyRequest(path[1:].split(b"/"))
    request.method = method
    request.path = path
    resource = site.getResourceFor(request)
    body = resource.render(request)
    assert isinstance(body, bytes)
    request.write(body)
    request.finish()
    return request


def header(request: DummyRequest, name: bytes) -> bytes | None:
    return request.responseHeaders.getRawHeaders(name, [None])[0]


def body_json(request: DummyRequest) -> Any:
    return json.loads(b"".join(request.written))


class APIResourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics(self.clock)
        self.health: Mapping[str, Any] = OK
        self.site = make_api_site(metrics=self.metrics, health=lambda: self.health)

    def test_healthOk(self) -> None:
        """If health reports ok, then GET /healthz is 200 with the report as JSON."""
        request = get(self.site, b"/healthz")
        self.assertEqual(request.responseCode, 200)
        self.assertEqual(header(request, b"content-type"), b"application/json")
        self.assertEqual(header(request, b"cache-control"), b"no-store")
        self.assertEqual(body_json(request), OK)

    def test_healthFailing(self) -> None:
        """If health reports failing, then GET /healthz is 503 with the reasons."""
        self.health = FAILING
        request = get(self.site, b"/healthz")
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(body_json(request), FAILING)

    def test_healthRaises(self) -> None:
        """
        If the health callable raises, then GET /healthz is 503 with a
        generic reason (the error is logged, not shown).
        """

        def broken() -> Mapping[str, Any]:
            raise RuntimeError("secret detail")

        site = make_api_site(metrics=self.metrics, health=broken)
        request = get(site, b"/healthz")
        self.assertEqual(request.responseCode, 503)
        self.assertNotIn(b"secret detail", b"".join(request.written))
        self.assertEqual(body_json(request)["status"], "failing")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_healthNotJSON(self) -> None:
        """If the health report cannot be encoded as JSON, then GET /healthz is 503."""
        site = make_api_site(metrics=self.metrics, health=lambda: {"status": "ok", "checks": {"x": object()}})
        request = get(site, b"/healthz")
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(body_json(request)["status"], "failing")
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_metrics(self) -> None:
        """GET /metrics is 200 with the metrics' text and Content-Type."""
        self.metrics.auth_failed("ssh")
        request = get(self.site, b"/metrics")
        self.assertEqual(request.responseCode, 200)
        self.assertEqual(header(request, b"content-type"), self.metrics.content_type.encode())
        families = {
            family.name: family
            for family in text_string_to_metric_families(b"".join(request.written).decode())
        }
        [sample] = [s for s in families["hoopgw_auth_failures"].samples if s.labels == {"protocol": "ssh"}]
        self.assertEqual(sample.value, 1)

    def test_head(self) -> None:
        """HEAD /metrics is 200 with GET's headers and no body."""
        request = get(self.site, b"/metrics", method=b"HEAD")
        self.assertEqual(request.responseCode, 200)
        self.assertEqual(b"".join(request.written), b"")
        self.assertEqual(int(header(request, b"content-length") or 0), len(self.metrics.render()))

    def test_notFound(self) -> None:
        """Any other path, including / and paths below the endpoints, is a JSON 404."""
        for path in (b"/", b"/nope", b"/metrics/", b"/healthz/x", b"/metrics/x/y"):
            request = get(self.site, path)
            self.assertEqual(request.responseCode, 404, path)
            self.assertEqual(header(request, b"content-type"), b"application/json")
            self.assertEqual(body_json(request), {"error": "not found"})

    def test_methodNotAllowed(self) -> None:
        """A method other than GET or HEAD on an endpoint is a JSON 405 with Allow."""
        for path in (b"/metrics", b"/healthz"):
            for method in (b"POST", b"PUT", b"DELETE"):
                request = get(self.site, path, method=method)
                self.assertEqual(request.responseCode, 405)
                self.assertEqual(header(request, b"allow"), b"GET, HEAD")
                self.assertEqual(body_json(request)["error"], "method not allowed")


class APIListenerTests(TestCase):
    """The site served on a real loopback listener, fetched with treq."""

    async def test_realListener(self) -> None:
        """
        If the site listens on a loopback port, then an HTTP client gets 200
        with the metrics' Content-Type from /metrics, 503 from a failing
        /healthz, and 405 for POST; the access log goes to twisted.logger
        with the path but not the query string.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        metrics = Metrics(reactor)
        site = make_api_site(metrics=metrics, health=lambda: FAILING)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        client = treq.client.HTTPClient(Agent(reactor, pool=pool))
        base = f"http://127.0.0.1:{port.getHost().port}"

        response = await client.get(base + "/metrics")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [metrics.content_type.encode()]
        )
        self.assertIn(b"hoopgw_audit_failed 0.0", await response.content())

        response = await client.get(base + "/healthz?token=hunter2")
        self.assertEqual(response.code, 503)
        self.assertEqual(await response.json(), FAILING)

        response = await client.post(base + "/healthz", data=b"x")
        self.assertEqual(response.code, 405)
        await response.content()

        access = [e for e in events if e.get("log_namespace") == "hoopgw.api.access"]
        self.assertEqual(
            [(e["method"], e["path"], e["code"], e["log_level"]) for e in access],
            [
                ("GET", "/metrics", 200, LogLevel.debug),
                ("GET", "/healthz", 503, LogLevel.info),
                ("POST", "/healthz", 405, LogLevel.info),
            ],
        )
        self.assertEqual(access[0]["client"], "127.0.0.1")
