"""
C{/api/v1/reviews}: reading and deciding reviews (L{hoopgw.reviews}) with the
caller's own bearer token, verified by the gateway's identity service.

    GET  /api/v1/reviews[?state=pending]    the reviews the caller requested or may decide
    GET  /api/v1/reviews/{id}
    POST /api/v1/reviews/{id}/approve       {"reason": "..."} (optional)
    POST /api/v1/reviews/{id}/deny          {"reason": "..."} (required)

Errors are JSON C{{"error": "..."}} with a precise status: 400 (a bad body
or state), 401 (no or a refused token), 403 (self-approval, not an
approver, not the caller's review), 404, 409 (already decided), 503 (the
audit log cannot record the decision: none was taken).
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.web.server import Request

from hoopgw.api._json import JSONResource, Refused, postpath
from hoopgw.model import Identity
from hoopgw.policy.rules import ReviewRequirement
from hoopgw.reviews import ReviewError, ReviewState

__all__ = ["ReviewsResource", "visible"]

_STATES = {state.value for state in ReviewState}


def visible(record: Mapping[str, Any], identity: Identity) -> bool:
    """Whether the caller requested this review (or grant) or is one of its approvers."""
    requester = record.get("requester", {})
    if (requester.get("issuer"), requester.get("subject")) == (identity.issuer, identity.subject):
        return True
    try:
        return ReviewRequirement(approvers=tuple(record.get("approvers", ()))).may_approve(identity)
    except ValueError:
        return False


class ReviewsResource(JSONResource):
    """Everything under C{/api/v1/reviews} (module docstring)."""

    errors = (ReviewError,)

    def __init__(self, reviews: Any, sessions: Any) -> None:
        super().__init__(sessions)
        self._reviews = reviews

    async def _handle(self, request: Request) -> tuple[int, Any]:
        path = [p.decode("utf-8", "replace") for p in postpath(request) if p]
        method = request.method
        if len(path) == 0 and method in (b"GET", b"HEAD"):
            identity = await self._identity(request)
            state = request.args.get(b"state", [b""])[0].decode("ascii", "replace") or None
            if state is not None and state not in _STATES:
                raise Refused(400, f"state: expected one of {', '.join(sorted(_STATES))}, got {state!r}")
            records = await self._reviews.list(state=state, limit=1000)
            return 200, {"reviews": [r for r in records if visible(r, identity)]}
        if len(path) == 1 and method in (b"GET", b"HEAD"):
            identity = await self._identity(request)
            record = await self._reviews.get(path[0])
            if record is None or not visible(record, identity):
                raise Refused(404, f"no review {path[0]!r} you requested or may decide")
            return 200, record
        if len(path) == 2 and path[1] in ("approve", "deny"):
            if method != b"POST":
                request.setHeader(b"allow", b"POST")
                raise Refused(405, f"{path[1]} is a POST")
            identity = await self._identity(request)
            reason = self.reason(request)
            # (An identity outside the approvers is told it is not one; ids are random and not listed to it.)
            if path[1] == "approve":
                return 200, await self._reviews.approve(path[0], identity, reason)
            if not reason:
                raise Refused(400, 'a denial needs a reason: {"reason": "..."}')
            return 200, await self._reviews.deny(path[0], identity, reason)
        raise Refused(404, "not found")
