"""
The API listener's resources: C{/healthz}, C{/metrics}, C{/api/v1/reviews}
(L{hoopgw.api._reviews}), C{/api/v1/grants} (L{hoopgw.api._grants}) and
C{/api/v1/ssh-keys} (L{hoopgw.api._sshkeys}).

Every response the API makes itself is JSON (or the metrics text), never
Twisted's HTML error pages, so that probes and scripts can read them.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Protocol

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

_log = Logger()

#: Methods every API endpoint serves (HEAD is GET without the body).
_ALLOWED = (b"GET", b"HEAD")

HealthCheck = Callable[[], Mapping[str, Any]]


class MetricsSource(Protocol):
    content_type: str

    def render(self) -> bytes: ...


def _json(request: Request, code: int, body: Mapping[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, sort_keys=True).encode("utf-8") + b"\n"


class _Endpoint(Resource):
    """
    A leaf serving GET and HEAD through L{get}; any other method gets a JSON
    405 naming the allowed ones.
    """

    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)  # by name: Twisted leaves it unannotated (untyped_calls_exclude, setup.cfg)

    def get(self, request: Request) -> bytes:
        raise NotImplementedError

    def render(self, request: Request) -> bytes:
        if request.method not in _ALLOWED:
            request.setHeader(b"allow", b", ".join(_ALLOWED))
            return _json(request, 405, {"error": "method not allowed", "allowed": ["GET", "HEAD"]})
        body = self.get(request)
        if request.method == b"HEAD":
            # Headers as GET would send them; an empty body keeps
            # twisted.web from overwriting Content-Length with 0.
            request.setHeader(b"content-length", b"%d" % (len(body),))
            return b""
        return body


class HealthResource(_Endpoint):
    """
    C{GET /healthz}: 200 and the health mapping when its C{status} is
    C{"ok"}, else 503 (load balancers and orchestrators act on the code).
    """

    def __init__(self, health: HealthCheck) -> None:
        super().__init__()
        self._health = health

    def get(self, request: Request) -> bytes:
        try:
            report = dict(self._health())
            ok = report.get("status") == "ok"
            return _json(request, 200 if ok else 503, report)
        except Exception:
            # A broken check (or a report JSON cannot carry) is a failing
            # gateway; the reason goes to the log, not to an unauthenticated
            # client.
            _log.failure("health check failed to report")
            report = {"status": "failing", "checks": {"health": "the health check raised an error"}}
            return _json(request, 503, report)


class MetricsResource(_Endpoint):
    """C{GET /metrics}: the Prometheus text exposition."""

    def __init__(self, metrics: MetricsSource) -> None:
        super().__init__()
        self._metrics = metrics

    def get(self, request: Request) -> bytes:
        body = self._metrics.render()
        request.setResponseCode(200)
        request.setHeader(b"content-type", self._metrics.content_type.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return body


class DiscoveryResource(_Endpoint):
    """
    C{GET /.well-known/hoopgw}: what a client needs to log in and connect
    (L{hoopgw.cli.login}): the gateway's name, each issuer people log in
    with (its client id, scopes, resource), and the listeners' addresses.
    Public, as an IdP's discovery document is: it holds no secret.
    """

    def __init__(self, describe: Callable[[], Mapping[str, Any]]) -> None:
        super().__init__()
        self._describe = describe

    def get(self, request: Request) -> bytes:
        return _json(request, 200, dict(self._describe()))


class NotFound(Resource):
    """A JSON 404 for any method."""

    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)

    def render(self, request: Request) -> bytes:
        return _json(request, 404, {"error": "not found"})


class Root(Resource):
    """
    Dispatches C{/<name>} to the endpoint of that name; everything else
    (C{/}, unknown names, deeper paths) is a JSON 404.
    """

    def __init__(self, routes: Mapping[bytes, Resource], api: Mapping[bytes, Resource] | None = None) -> None:
        Resource.__init__(self)
        self._routes = dict(routes)
        self._api = dict(api or {})

    def getChild(self, path: bytes, request: Request) -> Resource:
        prepath, postpath = request.prepath, request.postpath
        assert prepath is not None and postpath is not None  # set before the resources are traversed
        if path == b"api" and postpath[:1] == [b"v1"] and len(postpath) >= 2:
            resource = self._api.get(postpath[1])
            if resource is not None:
                # /api/v1/<name>[/...]: the rest of the path is the resource's.
                prepath.extend(postpath[:2])
                del postpath[:2]
                return resource
        if path == b".well-known" and postpath == [b"hoopgw"]:
            resource = self._routes.get(b".well-known/hoopgw")
            if resource is not None:
                prepath.append(postpath.pop())
                return resource
        # postpath is empty when path was the last segment: "/metrics" is an
        # endpoint, "/metrics/x" and "/metrics/" are not.
        if not postpath:
            resource = self._routes.get(path)
            if resource is not None:
                return resource
        return NotFound()

    def render(self, request: Request) -> bytes:
        return NotFound().render(request)
