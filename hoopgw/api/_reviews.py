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

import json
from typing import Any, Mapping

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from hoopgw.errors import AuditUnavailable, AuthenticationFailed
from hoopgw.model import Identity, Source
from hoopgw.policy.rules import ReviewRequirement
from hoopgw.reviews import ReviewError, ReviewState

__all__ = ["ReviewsResource"]

_log = Logger()
_STATES = {state.value for state in ReviewState}
_MAX_BODY = 16 * 1024


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _json(request: Request, code: int, body: Any) -> None:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.write(json.dumps(body, sort_keys=True).encode("utf-8") + b"\n")
    request.finish()


def _visible(record: Mapping[str, Any], identity: Identity) -> bool:
    """Whether the caller requested this review or is one of its approvers."""
    requester = record.get("requester", {})
    if (requester.get("issuer"), requester.get("subject")) == (identity.issuer, identity.subject):
        return True
    try:
        return ReviewRequirement(approvers=tuple(record.get("approvers", ()))).may_approve(identity)
    except ValueError:
        return False


class ReviewsResource(Resource):
    """Everything under C{/api/v1/reviews} (module docstring)."""

    isLeaf = True

    def __init__(self, reviews: Any, sessions: Any) -> None:
        super().__init__()
        self._reviews = reviews
        self._sessions = sessions

    def render(self, request: Request) -> Any:
        d = ensureDeferred(self._handle(request))
        finished: list[bool] = []
        request.notifyFinish().addErrback(lambda _: finished.append(True))

        def done(result: tuple[int, Any]) -> None:
            if not finished:
                _json(request, *result)

        def failed(failure: Any) -> None:
            if failure.check(_Refused):
                result = (failure.value.code, {"error": str(failure.value)})
            elif failure.check(ReviewError):
                result = (failure.value.code, {"error": str(failure.value)})
            elif failure.check(AuditUnavailable):
                result = (503, {"error": f"nothing was decided: {failure.value}"})
            else:
                _log.failure("review API request failed", failure)
                result = (500, {"error": "internal error"})
            if not finished:
                _json(request, *result)

        d.addCallbacks(done, failed)
        return NOT_DONE_YET

    async def _identity(self, request: Request) -> Identity:
        header = request.getHeader(b"authorization") or b""
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            request.setHeader(b"www-authenticate", b"Bearer")
            raise _Refused(401, "a bearer token is required (Authorization: Bearer <token>)")
        address = request.getClientAddress()
        source = Source("api", f"{getattr(address, 'host', '?')}:{getattr(address, 'port', 0)}")
        try:
            return await self._sessions.authenticate_token(token.strip().decode("ascii", "replace"), source=source)
        except AuthenticationFailed as e:
            request.setHeader(b"www-authenticate", b"Bearer")
            raise _Refused(401, f"the bearer token was refused: {e.reason}") from None

    async def _handle(self, request: Request) -> tuple[int, Any]:
        path = [p.decode("utf-8", "replace") for p in request.postpath if p]
        method = request.method
        if len(path) == 0 and method in (b"GET", b"HEAD"):
            identity = await self._identity(request)
            state = request.args.get(b"state", [b""])[0].decode("ascii", "replace") or None
            if state is not None and state not in _STATES:
                raise _Refused(400, f"state: expected one of {', '.join(sorted(_STATES))}, got {state!r}")
            records = await self._reviews.list(state=state, limit=1000)
            return 200, {"reviews": [r for r in records if _visible(r, identity)]}
        if len(path) == 1 and method in (b"GET", b"HEAD"):
            identity = await self._identity(request)
            record = await self._reviews.get(path[0])
            if record is None or not _visible(record, identity):
                raise _Refused(404, f"no review {path[0]!r} you requested or may decide")
            return 200, record
        if len(path) == 2 and path[1] in ("approve", "deny"):
            if method != b"POST":
                request.setHeader(b"allow", b"POST")
                raise _Refused(405, f"{path[1]} is a POST")
            identity = await self._identity(request)
            reason = self._reason(request)
            # (An identity outside the approvers is told it is not one; ids are random and not listed to it.)
            if path[1] == "approve":
                return 200, await self._reviews.approve(path[0], identity, reason)
            if not reason:
                raise _Refused(400, 'a denial needs a reason: {"reason": "..."}')
            return 200, await self._reviews.deny(path[0], identity, reason)
        raise _Refused(404, "not found")

    @staticmethod
    def _reason(request: Request) -> str:
        body = request.content.read(_MAX_BODY + 1) if request.content is not None else b""
        if len(body) > _MAX_BODY:
            raise _Refused(400, f"the body is over {_MAX_BODY} bytes")
        if not body.strip():
            return ""
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise _Refused(400, 'the body is not JSON: expected {"reason": "..."}') from None
        reason = document.get("reason", "") if isinstance(document, dict) else None
        if not isinstance(reason, str):
            raise _Refused(400, 'reason: expected a string ({"reason": "..."})')
        return reason.strip()[:2000]
