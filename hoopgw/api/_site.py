"""
The API listener's L{Site}.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from twisted.logger import Logger, LogLevel
from twisted.web.http import Request
from twisted.web.resource import IResource
from twisted.web.server import Site

from hoopgw.api._grants import GrantsResource
from hoopgw.api._json import CheckpointsResource, WhoAmIResource
from hoopgw.api._reviews import ReviewsResource
from hoopgw.api._sshkeys import SSHKeysResource
from hoopgw.api._resources import (
    DiscoveryResource,
    HealthCheck,
    HealthResource,
    MetricsResource,
    MetricsSource,
    Root,
)

# Module level: a Logger read through an instance takes the class's name as
# its namespace, and operators filter on this one.
_access = Logger(namespace="hoopgw.api.access")


class APISite(Site):
    """
    A L{Site} whose access log goes to L{twisted.logger} as structured
    events rather than to the legacy log file in combined log format.

    Successful requests are logged at debug level: Prometheus and health
    probes hit the API every few seconds and would drown the gateway's own
    log.  Anything else (404, 405, 5xx: someone probing, or a broken
    scraper) is logged at info.  Only the path is logged, never the query
    string or headers, so that a credential placed there never reaches a
    log line.
    """

    # An unexpected error must not show a traceback to an unauthenticated client.
    displayTracebacks = False

    def __init__(self, resource: IResource) -> None:
        Site.__init__(self, resource)  # by name: Twisted leaves it unannotated (untyped_calls_exclude, setup.cfg)

    def log(self, request: Request) -> None:
        code = request.code
        level = LogLevel.debug if 200 <= code < 300 else LogLevel.info
        address = request.getClientAddress()
        _access.emit(
            level,
            "{client} {method} {path} {code} {length}",
            client=getattr(address, "host", str(address)),
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("utf-8", "replace"),
            code=code,
            length=request.sentLength,
        )


def make_api_site(
    *,
    metrics: MetricsSource,
    health: HealthCheck,
    reviews: Any = None,
    sessions: Any = None,
    grants: Any = None,
    audit: Any = None,
    discovery: Callable[[], Mapping[str, Any]] | None = None,
    ssh_keys: Any = None,
) -> Site:
    """
    Build the API's site: C{GET /healthz}, C{GET /metrics}, and with
    C{sessions} (whose identity service checks the caller's token)
    C{/api/v1/reviews} for C{reviews} (a L{hoopgw.reviews.ReviewService})
    and C{/api/v1/grants} for C{grants} (a L{hoopgw.grants.GrantService}),
    and C{/api/v1/checkpoints} for C{audit} (the L{hoopgw.audit.log.AuditLog}),
    C{/api/v1/whoami} with C{sessions}, C{/api/v1/ssh-keys} for C{ssh_keys}
    (a L{hoopgw.identity.enrolled.SSHKeyEnrolment}), and
    C{/.well-known/hoopgw} with C{discovery} (what C{hoopgw login} reads).

    @param metrics: a L{hoopgw.metrics.Metrics} (anything with C{render()}
        and C{content_type}).
    @param health: called per request; returns C{{"status": "ok" |
        "failing", "checks": {name: "ok" | reason}}}.
    """
    routes: dict[bytes, Any] = {b"healthz": HealthResource(health), b"metrics": MetricsResource(metrics)}
    if discovery is not None:
        routes[b".well-known/hoopgw"] = DiscoveryResource(discovery)
    root = Root(
        routes,
        {
            name: resource
            for name, resource in (
                (b"reviews", ReviewsResource(reviews, sessions) if reviews is not None else None),
                (b"grants", GrantsResource(grants, sessions) if grants is not None else None),
                (b"checkpoints", CheckpointsResource(audit, sessions) if audit is not None else None),
                (b"whoami", WhoAmIResource(sessions) if sessions is not None else None),
                (b"ssh-keys", SSHKeysResource(ssh_keys, sessions) if ssh_keys is not None else None),
            )
            if resource is not None
        },
    )
    return APISite(root)
