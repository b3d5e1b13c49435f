"""
SSH keep-alives on both legs: a peer that stops answering is ended.

Every C{interval} seconds a C{keepalive@openssh.com} global request asking
for a reply is sent (as OpenSSH's C{ServerAliveInterval} and
C{ClientAliveInterval} do); any reply, success or failure, shows the peer
is there.  When C{count_max} requests in a row have gone unanswered, the
peer is taken for dead and C{on_dead} is called with the reason, once: a
half-open TCP connection (a target that crashed, a client whose laptop
went to sleep) otherwise holds its session, its channels and the other leg
open for as long as TCP does (hours).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

__all__ = ["KeepAlive", "abort"]

REQUEST = b"keepalive@openssh.com"


def abort(ssh_transport: Any) -> None:
    """
    Close an SSH transport's TCP connection at once: a dead peer acknowledges
    nothing, so a polite close would wait on the unsent data for ever.
    """
    tcp = getattr(ssh_transport, "transport", None)
    if tcp is None:
        return
    kill = getattr(tcp, "abortConnection", None) or tcp.loseConnection
    kill()


class KeepAlive:
    """
    Keep-alives for one SSH connection service (either leg).

    @param connection: the L{twisted.conch.ssh.connection.SSHConnection}.
    @param clock: an L{IReactorTime} (tests pass a L{task.Clock}).
    @param interval: seconds between requests; 0 turns keep-alives off.
    @param count_max: unanswered requests in a row that mean "dead".
    @param on_dead: called once with a reason for the audit trail.
    """

    def __init__(
        self,
        connection: Any,
        *,
        clock: Any,
        interval: float,
        count_max: int,
        peer: str,
        on_dead: Callable[[str], object],
    ) -> None:
        self.connection = connection
        self.interval = interval
        self.count_max = count_max
        self.peer = peer
        self.on_dead = on_dead
        self.unanswered = 0
        self.dead = False
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    def start(self) -> None:
        if self.interval > 0 and not self._loop.running:
            self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        if self.unanswered >= self.count_max:
            self.stop()
            self.dead = True
            self.on_dead(
                f"the {self.peer} did not answer {self.unanswered} keep-alives "
                f"({self.interval:g} s apart); connection closed"
            )
            return
        self.unanswered += 1
        d = self.connection.sendGlobalRequest(REQUEST, b"", wantReply=1)
        if d is not None:
            d.addBoth(self._answered)

    def _answered(self, result: Any) -> None:
        # "Failure" is an answer too: OpenSSH refuses requests it does not
        # know, which is all this one asks for.
        if isinstance(result, Failure):
            result.trap(Exception)
        self.unanswered = 0
