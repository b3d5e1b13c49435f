"""
What the relay of an allowed upgrade records, besides the action's own
outcome: a terminal (C{kubectl exec -it}, C{attach -it}) as asciicast, each
connection C{kubectl port-forward} opens as an observed action.  The taps
read a copy of what is relayed (L{hoopgw.protocols.http.channels}).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.interfaces import IActionHandle, ISession, ITerminalRecorder
from hoopgw.masking.stream import masked_recorder
from hoopgw.model import Action, Outcome, Status
from hoopgw.protocols.http.channels import ExecTap, PortForwardTap, SpdyExecTap
from hoopgw.protocols.http.k8s import K8sRequest
from hoopgw.recording.asciicast import AsciicastRecorder

__all__ = ["exec_tap", "forward_tap"]

log = Logger()


def exec_tap(
    session: ISession,
    handle: IActionHandle,
    info: K8sRequest | None,
    upgrade: bytes,
    *,
    clock: IReactorTime,
    abort: Callable[[], object],
) -> ExecTap | SpdyExecTap | None:
    """
    A terminal (C{kubectl exec -it}, C{attach -it}: C{tty=true}), over
    WebSocket or SPDY/3.1, is recorded as asciicast from its
    stdin/stdout/stderr and resize channels, like an SSH terminal; the
    recording's SHA-256 goes into C{session.end}.  An exec or attach
    without a terminal is recorded the same way only with the
    connection's C{record_exec_output} (else its action has the command
    and byte counts).
    """
    if info is None:
        return None
    if info.display_verb not in ("exec", "attach"):
        return None
    settings = session.connection.settings
    if not info.tty and not getattr(settings, "record_exec_output", False):
        return None
    command = " ".join(info.exec_command) or None
    masks = session.masks
    if command is not None and masks is not None and masks.trail:
        command = masks.trail_text(command, {})  # the recording's header is stored too

    def make(path: str, fd: int) -> ITerminalRecorder:
        recording = AsciicastRecorder(
            path,
            fd=fd,
            clock=clock,
            width=80,  # kubectl sends the real size as its first resize message
            height=24,
            command=command,
            title=f"{session.identity.subject} on {session.connection.name}: {info.display_verb} {info.namespace}/{info.name}",
            record_input=bool(getattr(settings, "record_input", False)),
            # A recorded exec does not go on unrecorded (disk full): end it.
            on_failure=lambda reason: abort(),
        )
        return masked_recorder(recording, session.masks)  # what is stored is masked, for everyone

    recorder = session.open_recording(handle.number, make)
    if recorder is None:
        return None
    return ExecTap(recorder) if upgrade == b"websocket" else SpdyExecTap(recorder)


def forward_tap(
    session: ISession, info: K8sRequest | None, upgrade: bytes, *, abort: Callable[[], object]
) -> PortForwardTap | None:
    """
    C{kubectl port-forward} names the pod port only inside the SPDY
    streams it opens per local connection, never in the URL: each one is
    recorded as an observed C{k8s.portforward.connection} action with its
    port (what was forwarded, recorded, not decided: the relay does not
    hold a stream for policy).
    """
    if info is None or info.display_verb != "portforward":
        return None
    pod = f"{info.namespace}/{info.name}"

    def forwarded(port: str, request_id: str) -> None:
        action = Action(
            kind="k8s.portforward.connection",
            input=f"{pod} port {port}",
            attributes={"k8s.ports": (port,)},
            details={"pod": pod, "port": port, "request_id": request_id, "observed": True},
        )
        d = session.observe(action)
        d.addCallback(lambda handle: handle.finish(Outcome(status=Status.succeeded)))

        def unrecorded(failure: Failure) -> None:
            # A forwarded connection the trail cannot hold ends the relay.
            log.failure("port-forward connection not audited; the relay is ended", failure)
            abort()

        d.addErrback(unrecorded)

    return PortForwardTap(forwarded, tunnelled=upgrade == b"websocket")
