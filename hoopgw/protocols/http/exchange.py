"""
One request through the HTTP front end's pipeline (see
L{hoopgw.protocols.http.proxy}): refused early, authenticated, decided,
forwarded on a pooled upstream connection (or relayed as an upgrade), its
response streamed back and its outcome recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.errors import AuditUnavailable, AuthenticationFailed, NotPermitted
from hoopgw.interfaces import IActionHandle, ISession
from hoopgw.model import Identity, Outcome, Source, Status
from hoopgw.protocols.http.actions import (
    describe_request,
    patch_reads_masked,
    request_action,
    split_target,
    with_body,
)
from hoopgw.protocols.http.channels import ExecTap, SpdyExecTap
from hoopgw.protocols.http.headers import HeaderError, bearer_token, sanitize_request_headers
from hoopgw.protocols.http.k8s import K8sRequest, K8sRequestError
from hoopgw.protocols.http.masking import QUOTING_CODES, BodyMasker, JsonBodyError, response_header, response_masker
from hoopgw.protocols.http.masking import request_headers as masking_request_headers
from hoopgw.protocols.http.paths import PathError, RoutedPath
from hoopgw.protocols.http.pool import UpstreamConnection
from hoopgw.protocols.http.responses import (
    RESPONSE_HOP_BY_HOP,
    SET_COOKIE,
    is_kubernetes,
    phrase,
    response_pairs,
    upstream_message,
)
from hoopgw.protocols.http.state import (
    AWAITING_HEAD,
    CLOSED,
    DONE,
    ERROR,
    FINISHED,
    IDLE,
    SEND_BODY,
    SETTLED,
    STREAMING,
    ExchangeState,
)
from hoopgw.protocols.http.taps import exec_tap, forward_tap
from hoopgw.protocols.http.upgrade import check_upgrade, connect_upstream, request_head, take_over
from hoopgw.protocols.http.upstream import ReservedIdentity, Upstream
from hoopgw.protocols.http.wire import END, Head, ParseError

if TYPE_CHECKING:
    from hoopgw.masking.service import SessionMasks
    from hoopgw.protocols.http.client import ClientConnection
    from hoopgw.protocols.http.upgrade import _UpstreamSide
    from hoopgw.reviews import Review

__all__ = ["Exchange"]

log = Logger()

# The methods the gateway forwards: upper-case, as policies name them.
# Methods are case-sensitive (RFC 9110 section 9.1), so "delete" is not
# DELETE to a policy glob, yet many servers treat it as DELETE; anything
# else (TRACE, CONNECT, WebDAV, lower-case) is refused before any decision.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# The most of a request body held before it is decided (the audit record
# keeps up to body_cap of it) or before the upstream is connected; past
# this the client is not read until the body can be forwarded.
_BODY_WINDOW = 64 * 1024

# Mutating methods, whose bodies go into the audit record.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Request headers the proxy sets itself: the upstream's Host (from the
# URL), the body's framing (from the client's, re-framed); Expect is
# answered by the gateway (100 Continue once the token is verified).
_REFRAMED = frozenset({b"host", b"content-length", b"expect"})

# Methods a request may be re-sent with when a reused upstream connection
# turns out closed before any byte of the answer (never a POST: it could
# run twice).
_RETRYABLE = frozenset({"GET", "HEAD", "OPTIONS"})

# An upstream error's message is taken from the first bytes of its body.
_ERROR_BODY_CAP = 64 * 1024

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"



def _php_name(name: str) -> str:
    """
    A query parameter's name as PHP registers it (so as Laravel and Symfony
    read it), case folded: leading spaces dropped, other spaces and dots
    made underscores (C{.method} and C{+_method} are C{_method}).
    """
    return name.lstrip(" ").replace(" ", "_").replace(".", "_").casefold()

class _ClientGone(Exception):
    pass


class _Unmaskable(Exception):
    """A response body masks apply to that the gateway cannot mask."""


class _Expired(Exception):
    pass


# The upstream leg's states in which the request has been sent: its body
# goes on as it arrives (before, it is held).
_FORWARDED = frozenset({AWAITING_HEAD, STREAMING})


class Exchange(ExchangeState):
    """
    One request through the pipeline (see the module docstring).  Where it
    is, request, upstream leg and response, is its L{ExchangeState}; what
    else it keeps are facts that hold in any state (the response's framing,
    the reason the body broke, whether the timeout fired).
    """

    # One per request: slots make it cheaper to build and to read.
    __slots__ = (
        "_body_active", "_stall", "body_error", "body_masker", "body_received",
        "body_waiter", "chunked_upstream", "close_after", "conn", "error_head", "expired",
        "front", "handle", "head", "held", "held_size", "keep", "kubernetes", "mask_counts", "masks", "method",
        "origin", "pending", "request_bytes", "response_chunked", "response_code",
        "response_keep_alive", "response_reusable", "response_size", "review", "routed", "session",
        "timer", "unsent_head", "upstream",
    )

    def __init__(self, conn: ClientConnection, head: Head) -> None:
        ExchangeState.__init__(self, has_body=head.has_body)
        self.conn = conn
        self.front = conn.front
        self.head = head
        self.method = head.method.decode("ascii")
        self.kubernetes = True
        self.handle: IActionHandle | None = None
        self.review: Review | None = None  # the review the request is held for
        # Set for an upgrade request: an answer that is not a 101 ends the
        # client connection (see L{_upgrade}).
        self.close_after = _is_upgrade(head)
        # The request body: held (up to _BODY_WINDOW, then the client is not
        # read) until it can be forwarded, then passed on as it arrives.
        self.body_error: str | None = None  # why it broke (the request side is ERROR)
        self.body_received = 0
        self.held: list[bytes] = []
        self.held_size = 0
        self.body_waiter: Deferred[None] | None = None
        self.chunked_upstream = head.chunked
        # The upstream leg (see _forward): plain callbacks, not a coroutine,
        # as it is the per-request hot path.
        # A connection being made: pooled, or an upgrade's own (only cancelled).
        self.pending: Deferred[UpstreamConnection] | Deferred[_UpstreamSide] | None = None
        self.upstream: UpstreamConnection | None = None
        self.session: ISession | None = None
        self.origin: Upstream | None = None  # where the request goes
        self.request_bytes = b""
        self.timer: Any = None  # the response_timeout, until the response head
        # The timeout fired: why the leg ends (504), whatever state it ends in.
        self.expired = False
        # The response's framing to the client, decided with its head.
        self.response_chunked = False
        self.response_keep_alive = False
        self.response_size = 0
        self.response_reusable = False
        self.response_code = 0
        # Masking the response body (hoopgw.protocols.http.masking), when masks apply.
        self.body_masker: BodyMasker | None = None
        self.mask_counts: dict[tuple[str, str], int] | None = None
        # The masks the request was forwarded under: its whole exchange's,
        # even if a policy reload changes the session's before the answer.
        self.masks: SessionMasks | None = None
        self.routed: RoutedPath | None = None
        # The response head, held until the first of the body joins it.
        self.unsent_head = b""
        self.keep = 0
        self.error_head = bytearray()
        # A body that stops arriving is as idle as a connection between
        # requests: after idle_timeout without a byte (while the gateway is
        # reading) the request ends with 408 instead of holding both legs.
        self._body_active = False
        self._stall: Any = None
        timeout = self.front.idle_timeout
        if head.has_body and timeout:
            self._stall = self.front.reactor.callLater(timeout, self._stall_check)

    def _stall_check(self) -> None:
        self._stall = None
        if self.request_state is not SEND_BODY or self.response_state in FINISHED:
            return
        timeout = self.front.idle_timeout
        if self._body_active or self.conn._read_paused:
            # Bytes came, or the gateway itself stopped reading (the upstream
            # is behind): not the client's stall.
            self._body_active = False
            self._stall = self.front.reactor.callLater(timeout, self._stall_check)
            return
        self.body_error = f"the request body stalled: no bytes for {timeout:g} s"
        self.body_broken()
        if self.handle is None:
            self.conn.refused(408, self.body_error, head=self.head)
        self._stop_body(408, self.body_error)

    def _stop_stall(self) -> None:
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None

    # -- answered before the exchange starts ---------------------------------

    def refused_early(self) -> bool:
        """
        The checks made as soon as the head is in, before any body is read
        (and before any C{100 Continue}); answered and audited here if
        refused.
        """
        head = self.head
        conn = self.conn
        front = self.front
        if self.method not in METHODS:
            # Before anything is decided: a policy names methods upper-case.
            allowed = ", ".join(sorted(METHODS))
            message = (
                f"method {self.method[:32]!r} is not allowed through the gateway (allowed: {allowed})"
            )
            conn.refused(405, message, head=head, token=self._token())
            self._refuse(405, message, headers={b"Allow": allowed.encode("ascii")})
            return True
        if not head.has_body:
            return False
        length = head.content_length
        if length is not None and length > front.max_body:
            message = f"the request body is larger than this gateway accepts ({front.max_body} bytes)"
            conn.refused(413, message, head=head, token=self._token())
            self._refuse(413, message)
            return True
        if self._token() is None:
            front.sessions.auth_failed(source=conn.source, reason="no bearer token", method="token")
            self._refuse(
                401,
                "a bearer token is required (Authorization: Bearer <token>)",
                headers={b"WWW-Authenticate": b'Bearer realm="hoopgw"'},
            )
            return True
        return False

    def _refuse(self, code: int, message: str, *, headers: Mapping[bytes, bytes] | None = None) -> None:
        if self.request_state is DONE and not self.close_after:
            keep_alive = self.head.keep_alive and self.conn.may_continue and not self.conn.draining
            self.answer(keep_alive=keep_alive)
            self.conn.write_error(code, message, kubernetes=True, headers=headers, keep_alive=keep_alive)
            self.conn.response_done(self)
        else:
            # The body is not read: the connection cannot carry another request.
            self.answer(keep_alive=False)
            self.conn.respond_and_close(code, message, headers=headers)

    def _token(self) -> str | None:
        return bearer_token(self.head.getRawHeaders(b"authorization"))

    # -- the request body, from the client connection --------------------------

    def body_data(self, data: bytes) -> None:
        if self.response_state in FINISHED:
            return
        self._body_active = True
        self.body_received += len(data)
        if self.body_received > self.front.max_body:
            return self._body_too_large()
        if self.upstream_state in _FORWARDED:
            self._send(data)
            return
        self.held.append(data)
        self.held_size += len(data)
        # Past the window the client waits; the window is always more than
        # body_cap, so a decision waiting for the body's head is never
        # left waiting on a paused client.
        if self.held_size > _BODY_WINDOW and self.held_size > self.front.body_cap:
            self.conn.pause_reading()
        if self.body_waiter is not None and self.held_size > self.front.body_cap:
            waiter, self.body_waiter = self.body_waiter, None
            waiter.callback(None)

    def body_end(self) -> None:
        if self.response_state in FINISHED or self.request_state is not SEND_BODY:
            return
        self.body_finished()
        self._stop_stall()
        if self.upstream_state in _FORWARDED:
            if self.chunked_upstream and self.upstream is not None:
                self.upstream.transport.write(_LAST_CHUNK)
        if self.body_waiter is not None:
            waiter, self.body_waiter = self.body_waiter, None
            waiter.callback(None)

    def body_failed(self, error: ParseError) -> None:
        """The body's framing broke (a bad chunk): nothing more is read, the upstream never sees it end."""
        self.body_error = f"malformed request body: {error.reason}"
        self.body_broken()
        if self.handle is None:  # not decided yet: refused, not an action that failed
            self.conn.refused(error.status, error.reason, head=self.head)
        self._stop_body(error.status, error.reason)

    def _body_too_large(self) -> None:
        limit = self.front.max_body
        self.body_error = f"the request body is larger than this gateway accepts ({limit} bytes)"
        self.body_broken()
        if self.handle is None:
            self.conn.refused(413, self.body_error, head=self.head)
        self._stop_body(413, self.body_error)

    def _stop_body(self, code: int, message: str) -> None:
        self._stop_stall()
        conn = self.conn
        if self.response_state is IDLE:
            self.answer(keep_alive=False)
            conn.respond_and_close(code, message, kubernetes=self.kubernetes)
        else:
            if self.response_state is SEND_BODY:
                self.give_up()
            conn.abort()
        # The exchange's coroutine learns of it (done) where it waits.
        if self.upstream is not None:
            self._abort_upstream(_ClientGone(message))
        if self.pending is not None:
            self.pending.cancel()
        if self.body_waiter is not None:
            waiter, self.body_waiter = self.body_waiter, None
            waiter.callback(None)

    def _send(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None:  # the upstream leg has ended (and answered)
            return
        if self.chunked_upstream:
            upstream.transport.writeSequence((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            upstream.transport.write(data)

    def _body_head(self) -> Deferred[None]:
        """Fires once the first C{body_cap} bytes are held, or the whole body is."""
        if self.request_state is not SEND_BODY or self.held_size > self.front.body_cap or self.response_state is CLOSED:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self.body_waiter = waiter
        return waiter

    # -- the upstream connection's events (UpstreamUser) ----------------------

    def upstream_write_paused(self, paused: bool) -> None:
        if paused:
            self.conn.pause_reading()
        elif self.upstream_state in _FORWARDED:
            self.conn.resume_reading()

    def client_write_paused(self, paused: bool) -> None:
        upstream = self.upstream
        if upstream is not None and self.upstream_state is STREAMING:
            if paused:
                upstream.transport.pauseProducing()
            else:
                upstream.transport.resumeProducing()

    def upstream_events(self, events: list[object]) -> None:
        try:
            state = self.upstream_state
            if state is STREAMING:
                self._response_events(events, 0)
            elif state is AWAITING_HEAD and type(events[0]) is Head:
                self._response_started(events[0], events)
        except Exception:
            self.crashed(Failure())

    def _response_events(self, events: list[object], start: int) -> None:
        for index in range(start, len(events)):
            if self.upstream_state is SETTLED:
                return  # cut off (a body that could not be masked): nothing more of it
            event = events[index]
            if type(event) is bytes:
                self._response_data(event)
            elif event is END:
                self._response_complete()

    def upstream_failed(self, reason: Failure | ParseError) -> None:
        # The failed connection stays set while the leg ends: _request_failed
        # resends on another a reused one that closed before any answer.
        failed = self.upstream
        try:
            self._fail_waiters(reason)
        except Exception:
            self.upstream = None
            self.crashed(Failure())
        if self.upstream is failed:
            self.upstream = None

    def _fail_waiters(self, reason: Failure | BaseException) -> None:
        """The upstream leg ended with C{reason}: before the response head, or cutting its body off."""
        error = reason.value if isinstance(reason, Failure) else reason
        state = self.upstream_state
        if state is AWAITING_HEAD:
            self._request_failed(error)
        elif state is STREAMING:
            self._response_ended(error)

    def _abort_upstream(self, error: Exception) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.close()
        self._fail_waiters(error)

    def _to_client(self, data: bytes) -> None:
        """Write to the client, the response head first if it has not gone yet (one write, one TLS record)."""
        head = self.unsent_head
        if head:
            self.unsent_head = b""
            data = head + data
        self.conn.transport.write(data)

    def _response_data(self, data: bytes) -> None:
        self.response_size += len(data)
        if len(self.error_head) < self.keep:
            self.error_head += data[: self.keep - len(self.error_head)]
        if self.response_state is CLOSED:
            return
        if self.body_masker is not None:
            try:
                data = self.body_masker.feed(data)
            except JsonBodyError as e:
                return self._unmaskable(str(e))
            if not data:
                return
        if self.response_chunked:
            self._to_client(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self._to_client(data)

    def _response_complete(self) -> None:
        gone = self.response_state is CLOSED
        if self.body_masker is not None and not gone:
            try:
                rest = self.body_masker.finish()
            except JsonBodyError as e:
                return self._unmaskable(str(e))
            if rest:
                self._to_client(b"%x\r\n%b\r\n" % (len(rest), rest) if self.response_chunked else rest)
        if self.response_chunked and not gone:
            self._to_client(_LAST_CHUNK)
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            # Reused only when both messages were whole: the request body
            # sent to its end, the response ended by its own framing.
            if self.response_reusable and self.request_state is DONE:
                upstream.release()
            else:
                upstream.close()
        self._response_ended(None)

    def _unmaskable(self, reason: str) -> None:
        """The body stopped being one the masks can follow: nothing more of it goes, and the client sees it cut off."""
        self.body_masker = None
        self._abort_upstream(_Unmaskable(f"the response body could not be masked: {reason}; it was cut off"))

    # -- the client going away -------------------------------------------------

    def client_gone(self) -> None:
        self.client_closed()
        self._stop_stall()
        self._withdraw_review()
        if self.pending is not None:
            self.pending.cancel()
        if self.body_waiter is not None:
            waiter, self.body_waiter = self.body_waiter, None
            waiter.callback(None)
        if self.upstream is not None:
            self._abort_upstream(_ClientGone("client went away"))
        else:
            self._fail_waiters(_ClientGone("client went away"))

    # -- answering -------------------------------------------------------------

    def _respond(self, code: int, message: str, *, headers: Mapping[bytes, bytes] | None = None) -> None:
        """An error of the gateway's own, as the response to this request."""
        if self.response_state in FINISHED:
            return
        conn = self.conn
        keep_alive = (
            self.head.keep_alive and not self.close_after and self.request_state is DONE
            and conn.may_continue and not conn.draining
        )
        self.answer(keep_alive=keep_alive)
        conn.write_error(code, message, kubernetes=self.kubernetes, headers=headers, keep_alive=keep_alive)
        conn.response_done(self)

    def _unauthorized(self, message: str) -> None:
        self._respond(401, message, headers={b"WWW-Authenticate": b'Bearer realm="hoopgw"'})

    def crashed(self, failure: Failure) -> None:
        log.failure("HTTP front end: request handling failed", failure)
        if self.handle is not None:
            self.handle.finish(Outcome(status=Status.failed, error="gateway error"))
        if self.upstream is not None:
            self._abort_upstream(_ClientGone("gateway error"))
        if self.response_state is IDLE:
            self.close_after = True
            self._respond(500, "internal gateway error")
        elif self.response_state is not CLOSED:
            self.conn.abort()

    # -- the pipeline ----------------------------------------------------------

    async def run(self) -> None:
        front = self.front
        sessions = front.sessions
        head = self.head
        conn = self.conn
        source = conn.source
        routed = split_target(head.target)
        if isinstance(routed, PathError):
            # Refused paths still get their connection's error form, if the
            # first segment names one.
            first = head.target.split(b"?", 1)[0].split(b"/")[1:2]
            name = first[0].decode("ascii", "replace") if first else ""
            connection = sessions.connections.get(name)
            self.kubernetes = is_kubernetes(connection, None)
        else:
            connection = sessions.connections.get(routed.connection)
            self.kubernetes = is_kubernetes(connection, routed)

        token = self._token()
        if token is None:
            sessions.auth_failed(source=source, reason="no bearer token", method="token")
            return self._unauthorized("a bearer token is required (Authorization: Bearer <token>)")
        identity = sessions.verified_identity(token)
        if identity is None:
            try:
                identity = await sessions.authenticate_token(token, source=source)
            except AuthenticationFailed as e:
                return self._unauthorized(f"the bearer token was refused: {e.reason}")
        del token
        if not conn.proven:
            conn.authenticated()

        if isinstance(routed, PathError):
            return self._refused(routed.status, routed.reason, identity)
        upstream = front.upstreams.get(routed.connection)
        if not (upstream is not None and upstream.impersonate) and any(
            _php_name(name) == "_method" for name, _ in routed.raw_query_params
        ):
            # Rails, Laravel, Symfony and method-override run a POST with
            # _method=DELETE as a DELETE; the Kubernetes API server does not.
            return self._refused(400, "the _method query parameter (a method override) is not allowed", identity)
        info = describe_request(self.method, routed)
        if isinstance(info, K8sRequestError):
            return self._refused(info.status, info.reason, identity)
        sanitized = sanitize_request_headers(
            head.headers, pass_cookies=upstream.pass_cookies if upstream is not None else False, parsed=True
        )
        if isinstance(sanitized, HeaderError):
            return self._refused(sanitized.status, sanitized.reason, identity)
        if head.has_body and head.version == b"HTTP/1.1" and self.may_send_continue():
            expect = head.getRawHeaders(b"expect")
            if expect and expect[0].lower() == b"100-continue":
                conn.transport.write(_CONTINUE)
        try:
            session = self._cached_session(identity, routed.connection) or await self._session(
                identity, routed.connection, source
            )
        except NotPermitted as e:
            return self._respond(403, str(e))
        except AuditUnavailable as e:
            return self._respond(503, str(e))
        if self.response_state in FINISHED:
            return

        if self.method in _BODY_METHODS and head.has_body:
            await self._body_head()
            if self.response_state in FINISHED:
                return
        action = request_action(info, sanitized.removed)
        whole = self.request_state is DONE
        masks = session.masks
        if self.method in _BODY_METHODS and head.has_body and (self.body_received or not whole):
            action = with_body(
                action, info, head, self.held, received=self.body_received, whole=whole, cap=front.body_cap, masks=masks
            )
        if self.method == "PATCH":  # (the only method it applies to: no call for the others)
            reads = patch_reads_masked(masks, self.method, head, self.held, received=self.body_received, whole=whole)
            if reads is not None:
                return self._refused(403, reads, identity)
        try:
            # A review holds the request (the client waits for its response)
            # for at most the connection's hold_timeout.
            hold = getattr(session.connection.settings, "hold_timeout", None)
            handle = await session.check(action, self._held_for_review, hold)
        except AuditUnavailable as e:
            return self._respond(503, str(e))
        except NotPermitted as e:
            return self._respond(503, str(e))
        self.handle = handle
        if not handle.allowed:
            decision = handle.decision
            assert decision is not None
            rule = f"rule {decision.rule!r}" if decision.rule else "no rule allows it"
            why = handle.review.refusal() if handle.review is not None else decision.message or "refused by policy"
            message = f"{why} (hoopgw {rule}; nothing was forwarded)"
            if info.is_resource:
                what = info.resource + (f' "{info.name}"' if info.name else "")
                message = f"{what} is forbidden: {message}"
            return self._respond(403, message)
        if self.response_state in FINISHED:
            handle.finish(Outcome(status=Status.failed, error=self.body_error or "client went away before the request was forwarded"))
            return
        assert upstream is not None
        if self.close_after:
            return await self._upgrade(session, handle, identity, routed, upstream, sanitized.headers, info)
        self.routed = routed
        self._forward(session, handle, identity, routed, upstream, sanitized.headers)

    def _credentials(
        self, handle: IActionHandle, upstream: Upstream, identity: Identity
    ) -> list[tuple[bytes, bytes]] | None:
        """The connection's credential headers for C{identity}, or C{None} once refused (answered and recorded)."""
        try:
            return upstream.credential_headers(identity)
        except ReservedIdentity as e:
            handle.finish(Outcome(status=Status.blocked, error=str(e)))
            self._respond(403, f"{e} (nothing was forwarded)")
        except ValueError as e:
            handle.finish(Outcome(status=Status.failed, error=str(e)))
            self._respond(400, str(e))
        return None

    def _held_for_review(self, review: Review) -> None:
        # HTTP has no way to tell the client before its response: it waits;
        # kept so that a client leaving cancels the request.
        self.review = review
        if self.response_state in FINISHED:
            # Answered while the review was being recorded (its body broke, or
            # the client left): it will never be forwarded, so nobody decides it.
            reason = "the client went away" if self.response_state is CLOSED else "the request was answered before its review"
            self._withdraw_review(reason)
            return
        self.review_started()

    def _withdraw_review(self, reason: str = "the client went away") -> None:
        self.front.sessions.withdraw_review(self.review, reason)

    def _refused(self, code: int, message: str, identity: Identity) -> None:
        """A request refused before a decision, with its identity known."""
        self.conn.refused(code, message, head=self.head, identity=identity)
        self._respond(code, message)

    def _cached_session(self, identity: Identity, name: str) -> ISession | None:
        """This connection's open session for C{identity} on connection C{name}, if any."""
        session = self.conn.sessions.get(_session_key(identity, name))
        return session if session is not None and not session.closed else None

    async def _session(self, identity: Identity, name: str, source: Source) -> ISession:
        """A new session (see L{_cached_session}), kept for the connection's next requests."""
        conn = self.conn
        user_agent = self.head.getRawHeaders(b"user-agent")
        client = {"user_agent": user_agent[0].decode("utf-8", "replace")[:200]} if user_agent else {}
        session = await self.front.sessions.open(identity, name, kind="http", source=source, client=client)
        # Ended by the gateway (its access grant ended): HTTP cannot say why
        # mid-request; the connection ends, and the session with it.
        session.on_terminate = lambda reason: conn.abort()
        # The gateway stops: the request in progress may finish, its
        # response saying Connection: close; an idle connection just closes.
        session.on_shutdown = lambda reason: conn.drain()
        if self.response_state is CLOSED or conn.cycle is CLOSED:
            # The client connection ended while the session was opening:
            # nobody will reuse it, and nobody else would close it.
            session.close(status="closed")
        else:
            conn.sessions[_session_key(identity, name)] = session
        return session

    def _upstream_head(
        self, upstream: Upstream, routed: RoutedPath, headers: Sequence[tuple[bytes, bytes]],
        credentials: Sequence[tuple[bytes, bytes]],
    ) -> bytes:
        head = self.head
        lines = [
            head.method + b" " + upstream.prefix + routed.target.encode("ascii") + b" HTTP/1.1",
            b"Host: " + upstream.host,
        ]
        for name, value in headers:
            if name.lower() not in _REFRAMED:
                lines.append(name + b": " + value)
        for name, value in credentials:
            lines.append(name + b": " + value)
        if head.chunked:
            lines.append(b"Transfer-Encoding: chunked")
        elif head.content_length is not None:
            lines.append(b"Content-Length: %d" % head.content_length)
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    def _forward(
        self,
        session: ISession,
        handle: IActionHandle,
        identity: Identity,
        routed: RoutedPath,
        upstream: Upstream,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> None:
        """
        Step 5: send the request on a pooled connection (L{_send_request});
        the response head comes to L{_response_started}, its end (or the
        leg's failure) to L{_response_ended}, which records the outcome.
        """
        credentials = self._credentials(handle, upstream, identity)
        if credentials is None:
            return
        masks = session.masks
        if masks is not None and masks.masks_bodies:
            self.masks = masks
            self.mask_counts = {}
            headers = masking_request_headers(headers)
        self.session = session
        self.origin = upstream
        self.request_bytes = self._upstream_head(upstream, routed, headers, credentials)
        # Headers only: the timer stops when they arrive, so a watch streams
        # for as long as it likes.
        self.timer = self.front.reactor.callLater(self.front.response_timeout, self._expire)
        self.forward()
        self._send_request()

    def _expire(self) -> None:
        self.timer = None
        self.expired = True
        try:
            if self.pending is not None:
                self.pending.cancel()
            else:
                self._abort_upstream(_Expired())
        except Exception:
            self.crashed(Failure())

    def _stop_timer(self) -> None:
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None

    def _send_request(self, *, fresh: bool = False) -> None:
        """Send the request on a pooled connection (unless C{fresh}), or on a new one once it is made."""
        assert self.origin is not None
        acquired = self.origin.pool.acquire(fresh=fresh)
        if isinstance(acquired, Deferred):
            self.pending = acquired
            acquired.addCallbacks(self._connected, self._not_connected)
            acquired.addErrback(self.crashed)
        else:
            self._connected(acquired)

    def _not_connected(self, failure: Failure) -> None:
        self.pending = None
        self._request_failed(failure.value)

    def _connected(self, connection: UpstreamConnection) -> None:
        """
        Send the request head (and the body held so far); from then on the
        body flows as it arrives.
        """
        self.pending = None
        if self.response_state in FINISHED:
            connection.release()
            return self._request_failed(_ClientGone("client went away"))
        self.upstream = connection
        # From here the body goes on as it arrives (see body_data).
        self.request_sent()
        connection.start(self, head_request=self.method == "HEAD")
        transport = connection.transport
        transport.write(self.request_bytes)
        held, self.held = self.held, []
        self.held_size = 0
        for data in held:
            self._send(data)
        if self.request_state is DONE and self.chunked_upstream:
            transport.write(_LAST_CHUNK)
        if not connection.write_paused:
            self.conn.resume_reading()

    def _request_failed(self, error: BaseException | None) -> None:
        """
        No response head came.  A reused connection found closed before any
        byte of an answer is tried once more on a new one, for a method that
        cannot run twice by it (L{_RETRYABLE}) and has no body; anything
        else is the request's outcome, answered 502 or 504.
        """
        connection = self.upstream
        self.upstream = None
        if (
            connection is not None and connection.reused and not connection.received
            and self.method in _RETRYABLE and not self.head.has_body
            and not self.expired and self.response_state not in FINISHED
        ):
            self.resend()
            # On a new connection: never reused, so this is the only resend
            # (another idle one may be just as stale).
            return self._send_request(fresh=True)
        self._stop_timer()
        self.leg_settled()
        handle = self.handle
        assert handle is not None and self.routed is not None
        name = self.routed.connection
        size = self.body_received
        timeout = self.front.response_timeout
        if self.response_state is CLOSED:
            handle.finish(Outcome(status=Status.failed, error="client went away", bytes_in=size))
        elif self.request_state is ERROR:
            handle.finish(Outcome(status=Status.failed, error=self.body_error, bytes_in=size))
        elif self.expired:
            why = f"upstream did not answer within {timeout:g} s"
            handle.finish(Outcome(status=Status.failed, error=why, bytes_in=size))
            self._respond(504, f"the upstream of {name!r} did not answer within {timeout:g} s")
        elif isinstance(error, ParseError):
            message = f"upstream sent a malformed response: {error.reason}"
            handle.finish(Outcome(status=Status.failed, error=message, bytes_in=size))
            self._respond(502, f"the upstream of {name!r} sent a malformed response: {error.reason}")
        else:
            message = _describe(error)
            handle.finish(Outcome(status=Status.failed, error=f"upstream unreachable: {message}", bytes_in=size))
            self._respond(502, f"the gateway could not reach the upstream of {name!r}: {message}")

    def _response_started(self, response: Head, events: list[object]) -> None:
        """The response head (C{events[0]}), and what came with it."""
        if response.code == 101:
            # Never asked for: an upgrade is relayed on a connection of its own.
            upstream, self.upstream = self.upstream, None
            if upstream is not None:
                upstream.close()
            return self._request_failed(ParseError(502, "an unrequested 101 Switching Protocols"))
        self._stop_timer()
        assert self.origin is not None
        self.response_code = response.code
        if self.masks is not None and self.mask_counts is not None and response.has_body:
            masker = response_masker(self.masks, response.code, response.headers, self.mask_counts)
            if isinstance(masker, str):
                return self._refuse_unmaskable(masker)
            self.body_masker = masker
        self.unsent_head = self._response_head(response, self.origin.pass_cookies)
        self.keep = _ERROR_BODY_CAP if response.code >= 400 else 0
        self.response_reusable = response.keep_alive
        self.response_head()
        self._response_events(events, 1)
        if self.upstream_state is SETTLED:
            return
        if self.unsent_head and self.response_state is not CLOSED:
            self._to_client(b"")
        if self.conn.write_paused:
            self.client_write_paused(True)

    def _refuse_unmaskable(self, reason: str) -> None:
        """A response whose body masks apply to but cannot be masked: none of it goes; 502."""
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.close()
        self.leg_settled()
        assert self.handle is not None and self.routed is not None
        message = f"{reason}; the gateway does not pass it on"
        self.handle.finish(
            Outcome(status=Status.failed, error=message, code=str(self.response_code), bytes_in=self.body_received)
        )
        self._respond(502, f"the response of {self.routed.connection!r} could not be masked: {message}")

    def _response_ended(self, problem_reason: BaseException | None) -> None:
        """The response is whole (C{None}) or was cut off: answer the next request, record the outcome."""
        if self.upstream_state is SETTLED:
            return
        self.leg_settled()
        gone = self.response_state is CLOSED
        if self.unsent_head and not gone:
            self._to_client(b"")  # a response without a body
        session, handle = self.session, self.handle
        assert session is not None and handle is not None
        code = self.response_code
        size = self.body_received
        session.bytes_in += size
        session.bytes_out += self.response_size
        complete = problem_reason is None
        if not complete and not gone:
            # The body was cut off upstream: say so by closing, not by a
            # clean end that would make a truncated body look whole.
            if self.response_state is SEND_BODY:
                self.give_up()
            self.conn.close()
        elif self.response_state is SEND_BODY:
            self.response_whole(keep_alive=self.response_keep_alive and self.request_state is DONE)
            self.conn.response_done(self)
        problem: str | None = None
        if gone and not complete:
            problem = "client went away"
        elif self.request_state is ERROR:
            problem = self.body_error
        elif isinstance(problem_reason, _Unmaskable):
            problem = str(problem_reason)
        elif not complete:
            problem = f"upstream response cut off: {_describe(problem_reason)}"
        elif code >= 400:
            masks = session.masks
            if code in QUOTING_CODES and masks is not None and masks.trail_json is not None:
                # As at the client: the message can quote values the paths mask.
                problem = f"HTTP {code} (the API server's message is withheld: it may quote masked values)"
            else:
                problem = upstream_message(bytes(self.error_head)) or f"HTTP {code}"
        status = Status.succeeded if code < 400 and problem is None else Status.failed
        masked = None
        if self.mask_counts and self.masks is not None:
            masked = self.masks.settle(self.mask_counts)
        handle.finish(
            Outcome(
                status=status, error=problem, code=str(code), bytes_in=size, bytes_out=self.response_size,
                masked=masked,
            )
        )

    def _response_head(self, response: Head, pass_cookies: bool) -> bytes:
        head = self.head
        lines = [b"HTTP/1.1 %d %s" % (response.code, response.reason or phrase(response.code))]
        masked = self.body_masker is not None  # its length changes: re-framed
        masks, counts = self.masks, self.mask_counts
        for name, value in response_pairs(response.headers, pass_cookies=pass_cookies):
            if masked and name.lower() == b"content-length":
                continue
            if masks is not None and counts is not None:
                value = response_header(masks, name, value, counts)  # (with a body or without)
            lines.append(name + b": " + value)
        keep_alive = head.keep_alive and not self.close_after and not self.conn.draining
        if response.has_body and (response.content_length is None or masked):
            if head.version == b"HTTP/1.1":
                self.response_chunked = True
                lines.append(b"Transfer-Encoding: chunked")
            else:
                keep_alive = False  # an HTTP/1.0 client reads to the close
        if not keep_alive:
            lines.append(b"Connection: close")
        elif head.version == b"HTTP/1.0":
            lines.append(b"Connection: keep-alive")
        self.response_keep_alive = keep_alive
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    async def _upgrade(
        self,
        session: ISession,
        handle: IActionHandle,
        identity: Identity,
        routed: RoutedPath,
        upstream: Upstream,
        headers: Sequence[tuple[bytes, bytes]],
        info: K8sRequest | None = None,
    ) -> None:
        """
        An allowed upgrade (exec, attach, port-forward): relayed by
        L{hoopgw.protocols.http.upgrade} if it is one of the protocols the
        gateway carries; see the module docstring there.
        """
        head = self.head
        upgrade, why = check_upgrade(head)
        if upgrade is None or head.has_body:
            why = why or "an upgrade request must not have a body"
            handle.finish(Outcome(status=Status.failed, error=why, code="400"))
            return self._respond(400, why)
        credentials = self._credentials(handle, upstream, identity)
        if credentials is None:
            return
        self.start_upgrade()
        request = request_head(
            head.method, upstream.prefix + routed.target.encode("ascii"), upstream.host, upgrade,
            [*headers, *credentials],
        )
        reactor = upstream.reactor if upstream.reactor is not None else self.front.reactor
        connected, side = connect_upstream(reactor, upstream.base, upstream.tls, request)
        timeout = self.front.response_timeout
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            if side.transport is not None:
                side.transport.abortConnection()
            elif not connected.called:
                connected.cancel()

        timer = self.front.reactor.callLater(timeout, expire)
        self.pending = connected
        try:
            await connected
            self.pending = None
            if self.response_state is CLOSED:
                side.transport.abortConnection()
                raise _ClientGone()
            answer = await side.head
        except _ClientGone:
            self.leg_settled()
            handle.finish(Outcome(status=Status.failed, error="client went away"))
            return
        except Exception as e:
            self.leg_settled()
            if side.transport is not None:
                side.transport.abortConnection()
            if self.response_state is CLOSED:
                handle.finish(Outcome(status=Status.failed, error="client went away"))
                return
            if expired:
                error = f"upstream did not answer within {timeout:g} s"
                handle.finish(Outcome(status=Status.failed, error=error))
                self._respond(504, f"the upstream of {routed.connection!r} did not answer within {timeout:g} s")
            else:
                error = _describe(e)
                handle.finish(Outcome(status=Status.failed, error=f"upstream unreachable: {error}"))
                self._respond(502, f"the gateway could not reach the upstream of {routed.connection!r}: {error}")
            return
        finally:
            self.pending = None
            if timer.active():
                timer.cancel()

        if answer.code != 101:
            # CVE-2018-1002105: the answer goes back and the client
            # connection ends with it, whatever the client sends next.
            # The body has the same time to arrive as the head had.
            stall = self.front.reactor.callLater(timeout, side.transport.abortConnection)
            body = await side.body
            if stall.active():
                stall.cancel()
            if side.transport is not None:
                side.transport.loseConnection()
            self.leg_settled()
            problem = upstream_message(body) or f"HTTP {answer.code}"
            handle.finish(Outcome(status=Status.failed, error=f"upgrade refused upstream: {problem}",
                                  code=str(answer.code), bytes_out=len(body)))
            if self.response_state in FINISHED:
                return
            self.answer(keep_alive=False)
            lines = [b"HTTP/1.1 %d %s" % (answer.code, answer.phrase or phrase(answer.code))]
            for name, value in response_pairs(answer.headers, pass_cookies=upstream.pass_cookies):
                if name.lower() != b"content-length":
                    lines.append(name + b": " + value)
            lines += [b"Connection: close", b"Content-Length: %d" % len(body), b"\r\n"]
            self.conn.transport.write(b"\r\n".join(lines) + body)
            self.conn.close()
            return

        if self.response_state is CLOSED:
            self.leg_settled()
            side.transport.abortConnection()
            handle.finish(Outcome(status=Status.failed, error="client went away", code="101"))
            return
        lines = [b"HTTP/1.1 101 " + (answer.phrase or b"Switching Protocols")]
        for name, value in answer.headers:
            lower = name.lower()
            if lower not in RESPONSE_HOP_BY_HOP and lower not in SET_COOKIE:
                lines.append(name + b": " + value)
        lines += [b"Upgrade: " + (answer.get(b"upgrade") or [upgrade])[0], b"Connection: Upgrade"]
        self.switch_protocols()
        conn = self.conn
        abort = conn.transport.abortConnection
        tap = exec_tap(session, handle, info, upgrade, clock=self.front.reactor, abort=abort) or forward_tap(
            session, info, upgrade, abort=abort
        )
        if tap is not None:
            # What the gateway can no longer read it does not relay unrecorded.
            tap.on_stop = lambda reason: conn.transport.abortConnection()
        client = take_over(
            conn,
            side,
            b"\r\n".join(lines) + b"\r\n\r\n",
            conn.parser.take_buffered(),
            tap=tap,
            clock=self.front.reactor,
            idle_timeout=getattr(session.connection.settings, "upgrade_idle_timeout", 0),
        )
        await DeferredList([client.lost, side.lost])
        session.bytes_in += client.sent
        session.bytes_out += side.received
        failed = tap.recorder.failed if isinstance(tap, (ExecTap, SpdyExecTap)) else None
        ended: str | None
        if failed:
            ended = f"the terminal recording failed ({failed}); the session was ended"
        elif tap is not None and tap.stopped:
            ended = f"{tap.stopped}; the session was ended"
        else:
            ended = client.idle_closed
        handle.finish(
            Outcome(
                status=Status.failed if ended else Status.succeeded,
                error=ended,
                code="101",
                bytes_in=client.sent,
                bytes_out=side.received,
            )
        )


def _session_key(identity: Identity, connection: str) -> tuple[str, str]:
    """One session per credential (one token, one client certificate) and connection on a client connection."""
    return (identity.credential_sha256 or identity.subject, connection)


def _describe(error: BaseException | Failure | None) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(f.getErrorMessage() for f in reasons)
    if isinstance(error, Failure):
        error = error.value
    return str(error) or type(error).__name__


def _is_upgrade(head: Head) -> bool:
    for name, value in head.headers:
        lower = name.lower()
        if lower == b"upgrade":
            return True
        if lower == b"connection" and any(o.strip(b" \t").lower() == b"upgrade" for o in value.split(b",")):
            return True
    return False
