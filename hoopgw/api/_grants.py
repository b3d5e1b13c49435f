"""
C{/api/v1/grants}: asking for, reading and revoking just-in-time access
grants (L{hoopgw.grants}) with the caller's own bearer token.  A request is
approved as a review: C{POST /api/v1/reviews/{review}/approve}.

    POST /api/v1/grants                 {"connection": "prod-db", "duration": "1h", "reason": "INC-123"}
    GET  /api/v1/grants[?state=active]  the grants the caller asked for or may approve
    GET  /api/v1/grants/{id}
    POST /api/v1/grants/{id}/revoke     {"reason": "..."} (optional)

Errors are JSON C{{"error": "..."}}: 400 (a bad body, a duration over the
rule's maximum, no reason), 401, 403 (no C{[[grant]]} rule lets the caller
ask), 404 (no such grant, or not one the caller asked for or may approve),
409 (a grant for that connection already pending or active; already
ended), 503 (the audit log cannot record it: nothing was done -- or, for a
revocation whose record was lost after it was accepted, done anyway, as
the message says).
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from hoopgw.api._json import JSONResource, Refused, postpath
from hoopgw.api._reviews import visible
from hoopgw.config import parse_duration
from hoopgw.grants import GrantError, GrantState

__all__ = ["GrantsResource"]

_STATES = {state.value for state in GrantState}
_EXAMPLE = '{"connection": "prod-db", "duration": "1h", "reason": "INC-123"}'


class GrantsResource(JSONResource):
    """Everything under C{/api/v1/grants} (module docstring)."""

    errors = (GrantError,)

    def __init__(self, grants: Any, sessions: Any) -> None:
        super().__init__(sessions)
        self._grants = grants

    async def _handle(self, request: Request) -> tuple[int, Any]:
        path = [p.decode("utf-8", "replace") for p in postpath(request) if p]
        method = request.method
        if not path and method == b"POST":
            identity = await self._identity(request)
            document = self.body(request, _EXAMPLE)
            connection = document.get("connection")
            if not isinstance(connection, str) or not connection:
                raise Refused(400, f"connection: required; expected a connection's name ({_EXAMPLE})")
            try:
                duration = parse_duration(document.get("duration"))
            except ValueError as e:
                raise Refused(400, f"duration: {e}") from None
            reason = document.get("reason", "")
            if not isinstance(reason, str):
                raise Refused(400, f"reason: expected a string ({_EXAMPLE})")
            return 201, await self._grants.request(identity, connection, duration, reason.strip()[:2000])
        if not path and method in (b"GET", b"HEAD"):
            identity = await self._identity(request)
            state = request.args.get(b"state", [b""])[0].decode("ascii", "replace") or None
            if state is not None and state not in _STATES:
                raise Refused(400, f"state: expected one of {', '.join(sorted(_STATES))}, got {state!r}")
            records = await self._grants.list(state=state, limit=1000)
            return 200, {"grants": [r for r in records if visible(r, identity)]}
        if len(path) == 1 and method in (b"GET", b"HEAD"):
            identity = await self._identity(request)
            record = await self._grants.get(path[0])
            if record is None or not visible(record, identity):
                raise Refused(404, f"no grant {path[0]!r} you asked for or may approve")
            return 200, record
        if len(path) == 2 and path[1] == "revoke":
            if method != b"POST":
                request.setHeader(b"allow", b"POST")
                raise Refused(405, "revoke is a POST")
            identity = await self._identity(request)
            return 200, await self._grants.revoke(path[0], identity, self.reason(request))
        raise Refused(404, "not found")
