"""
The JSON resources of C{/api/v1} (reviews, grants): the caller's bearer
token checked by the gateway's identity service, bodies read with a limit,
errors as JSON C{{"error": "..."}} with a precise status.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from hoopgw.errors import AuditUnavailable, AuthenticationFailed
from hoopgw.model import Action, Identity, Source

__all__ = ["CheckpointsResource", "JSONResource", "Refused", "WhoAmIResource", "postpath", "write_json"]

_log = Logger()
MAX_BODY = 16 * 1024


class Refused(Exception):
    """A request answered with C{code} and this message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def postpath(request: Request) -> list[bytes]:
    """The path segments below the resource (twisted.web sets them before any resource sees the request)."""
    segments = request.postpath
    assert segments is not None
    return segments


def write_json(request: Request, code: int, body: Any) -> None:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.write(json.dumps(body, sort_keys=True).encode("utf-8") + b"\n")
    request.finish()


class JSONResource(Resource):
    """
    A leaf whose C{handle(request)} coroutine returns C{(status, body)} or
    raises L{Refused}, one of C{errors} (exceptions with a C{code}), or
    L{AuditUnavailable} (503: nothing was done).
    """

    isLeaf = True
    errors: tuple[type[Exception], ...] = ()

    def __init__(self, sessions: Any) -> None:
        Resource.__init__(self)  # by name: Twisted leaves it unannotated (untyped_calls_exclude, setup.cfg)
        self._sessions = sessions

    async def _handle(self, request: Request) -> tuple[int, Any]:
        raise NotImplementedError

    def render(self, request: Request) -> Any:
        d = ensureDeferred(self._handle(request))
        finished: list[bool] = []
        request.notifyFinish().addErrback(lambda _: finished.append(True))

        def done(result: tuple[int, Any]) -> None:
            if not finished:
                write_json(request, *result)

        def failed(failure: Any) -> None:
            if failure.check(Refused, *self.errors):
                result = (failure.value.code, {"error": str(failure.value)})
            elif failure.check(AuditUnavailable):
                result = (503, {"error": f"nothing was done: {failure.value}"})
            else:
                _log.failure("API request failed", failure)
                result = (500, {"error": "internal error"})
            if not finished:
                write_json(request, *result)

        d.addCallbacks(done, failed)
        return NOT_DONE_YET

    async def _identity(self, request: Request) -> Identity:
        header = request.getHeader(b"authorization") or b""
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            request.setHeader(b"www-authenticate", b"Bearer")
            raise Refused(401, "a bearer token is required (Authorization: Bearer <token>)")
        address = request.getClientAddress()
        source = Source("api", f"{getattr(address, 'host', '?')}:{getattr(address, 'port', 0)}")
        try:
            identity: Identity = await self._sessions.authenticate_token(
                token.strip().decode("ascii", "replace"), source=source
            )
            return identity
        except AuthenticationFailed as e:
            request.setHeader(b"www-authenticate", b"Bearer")
            raise Refused(401, f"the bearer token was refused: {e.reason}") from None

    @staticmethod
    def body(request: Request, example: str) -> dict[str, Any]:
        """The request's JSON object (C{{}} for an empty body); C{example} shows the expected form in errors."""
        body = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(body) > MAX_BODY:
            raise Refused(400, f"the body is over {MAX_BODY} bytes")
        if not body.strip():
            return {}
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise Refused(400, f"the body is not JSON: expected {example}") from None
        if not isinstance(document, dict):
            raise Refused(400, f"the body is not a JSON object: expected {example}")
        return document

    @classmethod
    def reason(cls, request: Request) -> str:
        """The body's C{reason} (optional, empty when absent)."""
        reason = cls.body(request, '{"reason": "..."}').get("reason", "")
        if not isinstance(reason, str):
            raise Refused(400, 'reason: expected a string ({"reason": "..."})')
        return reason.strip()[:2000]


class CheckpointsResource(JSONResource):
    """
    C{POST /api/v1/checkpoints}: sign a checkpoint of the audit log now (any
    authenticated identity: it reveals the log's size, nothing else), so
    that the records just written can be exported in a session bundle.
    """

    # Each checkpoint costs a signature, three fsyncs and a call to every
    # witness: one per interval at most, and none for a log that has not grown.
    min_interval = 1.0

    def __init__(self, audit: Any, sessions: Any, clock: Any = None) -> None:
        super().__init__(sessions)
        self._audit = audit
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock
        self._signed: tuple[float, int] | None = None  # (when, size) of the last one asked for here

    async def _handle(self, request: Request) -> tuple[int, Any]:
        if [p for p in postpath(request) if p]:
            raise Refused(404, "not found")
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            raise Refused(405, "a checkpoint is asked for with POST")
        identity = await self._identity(request)
        now = self._clock.seconds()
        if self._signed is not None:
            when, size = self._signed
            if self._audit.size <= size:
                return 200, {"size": size}
            if now - when < self.min_interval:
                request.setHeader(b"retry-after", b"1")
                raise Refused(429, "a checkpoint was signed less than a second ago; ask again in a moment")
        self._signed = (now, self._audit.size)
        size = await self._audit.checkpoint()
        self._signed = (now, size)
        _log.info("checkpoint {size} signed at the request of {subject}", size=size, subject=identity.subject)
        return 201, {"size": size}


class WhoAmIResource(JSONResource):
    """
    C{GET /api/v1/whoami}: the caller's identity as the gateway verified it
    (issuer, subject, groups, the token's expiry) and the connections policy
    lets it open now (C{session.open} decided, nothing recorded: no session
    is opened).
    """

    def __init__(self, sessions: Any) -> None:
        super().__init__(sessions)

    async def _handle(self, request: Request) -> tuple[int, Any]:
        if [p for p in postpath(request) if p]:
            raise Refused(404, "not found")
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET")
            raise Refused(405, "whoami is a GET")
        identity = await self._identity(request)
        opens = []
        for name, connection in sorted(self._sessions.connections.items()):
            decision = await self._sessions.policy.decide(identity, connection, Action(kind="session.open", input=name))
            if decision.allowed:
                opens.append({"name": name, "kind": connection.kind})
        body = {"issuer": identity.issuer, "subject": identity.subject, "groups": list(identity.groups),
                "method": identity.auth_method, "connections": opens}
        expires = getattr(identity, "expires", None)
        if expires is not None:
            body["expires"] = expires
        return 200, body
