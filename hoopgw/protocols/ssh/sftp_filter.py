"""
The SFTP subsystem's channel filter: every SFTP request is an action,
decided before the target sees it.

The client's stream is framed with L{SFTPParser} and each packet handed to
the L{SFTPAuditor} in the order it crossed the gateway.  A packet that makes
a request (OPEN, REMOVE, RENAME, ...) is held until C{session.check} has
decided it, and every packet after it waits behind it, so the target sees
the client's packets in their order and never one policy has not passed.  A
refused request never reaches the target: the client gets a
C{SSH_FX_PERMISSION_DENIED} STATUS in its place.  A request a review rule
matches waits for the review (SFTP has no message for it: the client is
told on the channel's stderr, which C{sftp} prints), and the channel
closing withdraws it.

Bulk data is cheap: READ, WRITE and their DATA and STATUS replies are not
actions (a 50 MB transfer is some 1600 of them); the auditor counts their
bytes on the file handle, and the handle's CLOSE reports them.

The server's stream is only observed: the bytes pass on unchanged, and each
reply that answers a request finishes that request's action.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.errors import AuditUnavailable, NotPermitted
from hoopgw.model import Action, Outcome, Status
from hoopgw.policy.rules import glob_witness
from hoopgw.protocols.ssh.channels import FilterOutput, fixed_start, rule_paths
from hoopgw.protocols.ssh.sftp import (
    DEFAULT_MAX_LENGTH,
    Packet,
    Request,
    Sender,
    SFTPAuditor,
    SFTPParser,
    encode,
)
from hoopgw.interfaces import IActionHandle, ISession

if TYPE_CHECKING:
    from hoopgw.reviews import Review

__all__ = ["UNKNOWN_HANDLE", "UNRESOLVED", "SFTPFilter", "sftp_filter"]

log = Logger()


@frozen
class _Held:
    """Where a chunk's relay stopped for a decision."""

    packets: list[Packet]
    index: int
    to_target: list[bytes]
    to_client: list[bytes]


UNRESOLVED = (
    "a relative SFTP path is refused until the client has asked for its starting "
    'directory (REALPATH ".")'
)


UNKNOWN_HANDLE = (
    "an SFTP request on a handle the server has not handed out, or that is being closed, is refused: "
    "it could be any file"
)


def _unresolved(request: Request) -> bool:
    """
    Whether C{request} names a relative path with no absolute form yet (the
    home directory is unknown), other than the C{REALPATH "."} that asks
    for it.
    """
    if request.op == "realpath" and request.paths in ((".",), ("",)):
        return False
    return len(request.absolute) < len(request.paths)


class SFTPFilter:
    """
    One SFTP channel's auditor, between the channel relay (which calls it in
    order, one chunk at a time, waiting on any Deferred it returns) and the
    session pipeline.

    @ivar actions: request id -> the action of a forwarded request awaiting
        the server's reply.
    """

    def __init__(self, session: ISession, subsystem: IActionHandle, *, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        self.session = session
        self.subsystem = subsystem
        self.auditor = SFTPAuditor()
        self.client = SFTPParser(Sender.client, max_length)
        self.server = SFTPParser(Sender.server, max_length)
        self.actions: dict[int, IActionHandle] = {}
        self.refused = 0
        self.closed_ = False
        self.review: Review | None = None  # the review a request waits for
        # Set by the channel (see L{bind_stderr}): tells the client outside the SFTP stream.
        self._stderr: Callable[[str], None] | None = None

    def bind_stderr(self, write: Callable[[str], None]) -> None:
        """Where the filter tells the client that a request waits for review (the channel's stderr)."""
        self._stderr = write

    # -- client to target ------------------------------------------------------

    def client_data(self, data: bytes) -> Deferred[Any] | FilterOutput:
        """
        Frame C{data}; return what the target and the client receive, at once
        if the chunk holds no request, else once every request in it has
        been decided.

        @raise SFTPError: the client's stream is malformed (the channel closes).
        """
        return self._relay(_Held(self.client.feed(data), 0, [], []))

    def _relay(self, held: _Held) -> Deferred[Any] | FilterOutput:
        packets, out = held.packets, held.to_target
        for index in range(held.index, len(packets)):
            packet = packets[index]
            request = self.auditor.client_packet(packet)
            if request is None:  # INIT, READ, WRITE: counted, not decided
                out.append(encode(packet))
                continue
            d = self.session.check(self._action(request), self._held_for_review)
            d.addCallbacks(
                self._decided,
                self._undecided,
                callbackArgs=(request, held, index),
                errbackArgs=(request, held, index),
            )
            return d
        return FilterOutput(b"".join(out), b"".join(held.to_client))

    def _decided(
        self, handle: IActionHandle, request: Request, held: _Held, index: int
    ) -> Deferred[Any] | FilterOutput:
        if handle.allowed and not self.closed_ and (_unresolved(request) or request.unknown_handle):
            # "../../etc/shadow" before the home directory is known has no
            # absolute form, and a handle not (or no longer) known no path,
            # so no path rule could match them: refused.
            why = UNRESOLVED if _unresolved(request) else UNKNOWN_HANDLE
            handle.finish(Outcome(status=Status.blocked, error=why))
            self._refuse(request, f"hoopgw: {why}", held)
        elif handle.allowed and not self.closed_:
            self.actions[request.request_id] = handle
            held.to_target.append(encode(held.packets[index]))
        else:
            decision = handle.decision
            if decision is not None and not handle.allowed:
                rule = decision.rule or "no matching allow rule"
                why = handle.review.refusal() if handle.review is not None else decision.message or "refused by policy"
                message = f"hoopgw: {why} (rule {rule!r})"
                if handle.review is not None and self._stderr is not None:
                    # sftp prints its own words for a permission-denied reply, not the gateway's.
                    self._stderr(message + "\n")
            else:
                # Allowed, but the channel closed while it was decided.
                message = "hoopgw: the channel closed"
                handle.finish(Outcome(status=Status.failed, error="the SFTP channel closed before forwarding"))
            self._refuse(request, message, held)
        return self._relay(_Held(held.packets, index + 1, held.to_target, held.to_client))

    def _undecided(
        self, failure: Failure, request: Request, held: _Held, index: int
    ) -> Deferred[Any] | FilterOutput:
        # No decision, no record: the request must not reach the target.
        failure.trap(AuditUnavailable, NotPermitted)
        message = (
            "hoopgw: the gateway's audit log is unavailable, so it refuses all traffic"
            if failure.check(AuditUnavailable)
            else f"hoopgw: {failure.getErrorMessage()}"
        )
        self._refuse(request, message, held)
        return self._relay(_Held(held.packets, index + 1, held.to_target, held.to_client))

    def _action(self, request: Request) -> Action:
        """
        The request's action; for a rename, with the paths it moves too: a
        folder renamed takes what is below it, so a rename of C{/srv} (or
        onto it) changes C{/srv/ro/file}; likewise a symlink to (or at) a
        folder gives what is below it another name (C{link/ro/file}, which
        no path rule would see).  For each deny and review rule
        with an C{ssh.sftp.paths} pattern whose fixed start lies below a
        renamed path, a path the pattern matches is added, so that the
        rule sees the rename.
        """
        action = request.action()
        if request.op not in ("rename", "symlink") or not request.absolute:
            return action
        extra = [
            witness
            for pattern in rule_paths(self.session, request.kind)
            if any(fixed_start(pattern).startswith(path.rstrip("/") + "/") for path in request.absolute)
            for witness in (glob_witness(pattern),)
            if witness is not None
        ]
        if not extra:
            return action
        paths = tuple(dict.fromkeys((*action.attributes["ssh.sftp.paths"], *extra)))
        return Action(action.kind, action.input, {**action.attributes, "ssh.sftp.paths": paths}, action.details)

    def _held_for_review(self, review: Review) -> None:
        self.review = review
        if self.closed_:
            self._withdraw("the client closed the channel")
        elif self._stderr is not None:
            rule = f" (rule {review.rule!r})" if review.rule else ""
            self._stderr(
                f"hoopgw: this SFTP operation waits for review {review.id}{rule}; it runs once approved "
                f"(an approver runs: hoopgw reviews approve {review.id})\n"
            )

    def _withdraw(self, reason: str) -> None:
        self.session.service.withdraw_review(self.review, reason)

    def _refuse(self, request: Request, message: str, held: _Held) -> None:
        self.refused += 1
        held.to_client.append(self.auditor.refusal(request, message))

    # -- target to client ------------------------------------------------------

    def target_data(self, data: bytes) -> bytes:
        """
        Note the server's replies and finish the actions they answer; the
        bytes go to the client unchanged.

        @raise SFTPError: the server's stream is malformed (the channel closes).
        """
        for packet in self.server.feed(data):
            completion = self.auditor.server_packet(packet)
            if completion is None:
                continue
            handle = self.actions.pop(completion.request.request_id, None)
            if handle is not None:
                handle.finish(completion.outcome())
        return data

    # -- end ------------------------------------------------------------------

    def closed(self) -> None:
        """Requests forwarded and never answered end as failed; one waiting for review is withdrawn."""
        self.closed_ = True
        self._withdraw("the client closed the channel")
        actions, self.actions = self.actions, {}
        for handle in actions.values():
            handle.finish(Outcome(status=Status.failed, error="the SFTP channel closed before the server answered"))


def sftp_filter(session: ISession, subsystem: IActionHandle) -> SFTPFilter:
    """The L{FilterFactory} for the C{sftp} subsystem."""
    return SFTPFilter(session, subsystem)
