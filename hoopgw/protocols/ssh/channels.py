"""
The channel relay: each client channel is paired with a channel of the same
kind on the target leg, and everything between them passes through here.

Ordering is the whole game.  Everything the client sends on a channel
(requests, data, EOF, close) runs through one serial queue, so a command's
stdin never overtakes the command's policy check, and a check that waits
(for a review, later) holds back what follows it.  Everything the target
sends back is written in arrival order, and EOF, exit status and close wait
until the data before them has left (L{OrderedChannel.after_output}), because
Conch sends those at once even while data sits in a window-full buffer.

A session channel runs at most one program (C{shell}, C{exec},
C{subsystem}); it is an L{Action} whose outcome is the program's exit status.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import socket
import struct
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from attrs import frozen
from twisted.conch.error import ConchError
from twisted.conch.ssh import channel as _channel
from twisted.conch.ssh import common, connection
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.errors import AuditUnavailable, NotPermitted
from hoopgw.masking.stream import StreamMasker
from hoopgw.model import Action, Outcome, Status
from hoopgw.protocols.ssh.commands import (
    MAX_COMMAND_LENGTH,
    ParsedCommand,
    command_lines,
    command_patterns,
    parse_command,
    policy_lines,
)
from hoopgw.policy.rules import restrictive_patterns
from hoopgw.protocols.ssh.sftp import DEFAULT_MAX_LENGTH, PacketType
from hoopgw.recording.lines import LineReconstructor, ShellLine
from hoopgw.interfaces import IActionHandle, ISession, ITerminalRecorder

if TYPE_CHECKING:
    from hoopgw.reviews import Review

    # WindowGate is a mixin of SSHConnection subclasses: typed as one, an
    # object at run time.
    _Connection = connection.SSHConnection
else:
    _Connection = object

__all__ = [
    "HIGH_WATER",
    "RELAY_WINDOW",
    "ChannelFilter",
    "ChannelHost",
    "FilterFactory",
    "FilterOutput",
    "ForwardChannel",
    "IdentityFilter",
    "OrderedChannel",
    "Reply",
    "SessionChannel",
    "TargetChannel",
    "WindowGate",
    "command_lines",
    "env_allowed",
    "legacy_scp",
    "open_forward_channel",
    "open_session_channel",
]

log = Logger()

EXTENDED_DATA_STDERR = connection.EXTENDED_DATA_STDERR

# Environment variables a client may set on the target (as OpenSSH's
# default AcceptEnv): anything else could change how the target's shell
# runs what policy approved (LD_PRELOAD, BASH_ENV, PATH, ...).
def env_allowed(name: str) -> bool:
    return name in ("LANG", "TERM") or name.startswith("LC_")


_SFTP_SERVERS = frozenset({"sftp-server", "internal-sftp"})
# Output held for masking (the end of what may be a value) goes out after this long without more:
# on a terminal after a small write (an echo), or else (bulk output).
_MASK_QUIET = 0.05
_MASK_QUIET_BULK = 0.5
_MASK_INTERACTIVE = 512

# What the audit record keeps of an exec command line too long to read.
_REFUSED_COMMAND_HEAD = 1024
# What the target's shell would expand in a path: globs, braces, ~, $, `.
_EXPANDED = re.compile(r"[*?\[\]{}$`~]")

_RECURSIVE_SCP = (
    "a recursive legacy scp copy reaches folders and files the gateway cannot see, "
    "and a rule on paths below it applies; use scp in SFTP mode (without -O)"
)


def rule_paths(session: ISession, kind: str) -> list[str]:
    """The C{ssh.sftp.paths} patterns of the deny and review rules in force that may apply to C{session}'s C{kind}."""
    rules = getattr(getattr(session.service.policy, "policy_set", None), "rules", None) or ()
    found = restrictive_patterns(rules, session.identity, session.connection.name, kind, "ssh.sftp.paths")
    return [pattern for patterns in found for pattern in patterns]


def fixed_start(pattern: str) -> str:
    """A glob's start before its first wildcard."""
    return re.split(r"[*?\[]", pattern, maxsplit=1)[0]


def legacy_scp(
    parsed: ParsedCommand, path_patterns: Callable[[], Sequence[str]] = tuple
) -> tuple[tuple[str, ...], bool, str | None] | None:
    """
    For legacy scp's remote end (C{scp -t PATH}: upload, C{scp -f PATH}:
    download): the paths and whether it writes, for the C{ssh.sftp.paths}
    and C{ssh.sftp.write} conditions, and why it must be refused (a path the
    gateway cannot know before the target's shell expands it, a relative
    path leaving the login directory, or a recursive copy where one of
    C{path_patterns}, the deny and review rules' C{ssh.sftp.paths}, may
    match what is below PATH); C{None} for any other command.
    """
    paths: list[str] = []
    write = found = recursive = False
    for line in parsed.lines:
        if line.split(" ", 1)[0] != "scp":
            continue
        words = line.split(" ")
        options: set[str] = set()
        operands: list[str] = []
        rest = iter(words[1:])
        for w in rest:
            if w == "--":
                operands.extend(rest)
            elif w.startswith("-") and len(w) > 1 and not operands:
                options.update(w[1:])
            else:
                operands.append(w)
        if not options & {"t", "f"}:
            continue
        found = True
        write = write or "t" in options
        recursive = recursive or "r" in options
        for path in operands:
            if _EXPANDED.search(path):
                return (), True, (
                    f"the legacy scp path {path!r} would be expanded by the target's shell; "
                    "use scp in SFTP mode (without -O)"
                )
            if path.startswith("/"):
                absolute = "/" + posixpath.normpath(path).lstrip("/")
            else:
                absolute = posixpath.normpath(path)
                if absolute == ".." or absolute.startswith("../"):
                    return (), True, (
                        f"the legacy scp path {path!r} leaves the login directory, which the "
                        "gateway does not know; use an absolute path"
                    )
            paths.extend([path, absolute])
            if "t" in options or "r" in options:
                paths.append(absolute.rstrip("/") + "/")  # the files scp creates in it, or reads below it
            if "r" in options:
                # What a recursive copy creates or reads is at any depth below
                # PATH, named only in scp's stream: a rule whose pattern may
                # match there (its fixed start below PATH, or PATH below its
                # fixed start) could not see it.
                below = absolute.rstrip("/") + "/"
                for pattern in path_patterns():
                    start = fixed_start(pattern)
                    if start.startswith(below) or below.startswith(start):
                        return (), True, _RECURSIVE_SCP
    if not found:
        return None
    return tuple(dict.fromkeys(paths)), write, None


@frozen
class FilterOutput:
    """
    What a filter makes of a client chunk: bytes for the target, and bytes
    to answer the client with directly (an SFTP request refused by policy
    is answered by the gateway and never reaches the target).
    """

    to_target: bytes
    to_client: bytes = b""


class ChannelFilter(Protocol):
    """
    The seam where a protocol auditor (the SFTP tracker) sits on a channel.
    C{client_data} may return a Deferred: the channel's queue waits on it,
    so an operation can be held for a decision.  Whatever it returns is
    what the target receives (plain bytes), or a L{FilterOutput}.  Either
    method may raise: the channel then closes on both legs.  A filter with
    a C{bind_stderr(write)} method is given a way to tell the client
    something outside its protocol (C{write(text)} on the channel's stderr).
    """

    def client_data(self, data: bytes) -> "Deferred[bytes | FilterOutput] | bytes | FilterOutput": ...

    def target_data(self, data: bytes) -> bytes: ...

    def closed(self) -> None: ...


class IdentityFilter:
    """Passes everything through unchanged (every channel today)."""

    def client_data(self, data: bytes) -> bytes:
        return data

    def target_data(self, data: bytes) -> bytes:
        return data

    def closed(self) -> None:
        pass


FilterFactory = Callable[[ISession, IActionHandle], ChannelFilter]


def _sftp_start(head: bytes, kind: int) -> bool | None:
    """
    Whether C{head} (up to 5 bytes) starts an SFTP packet of type C{kind}:
    a length of 5 to 256 KiB (so its first byte is 0, its second at most
    4), then the type; C{None} while too few bytes have come to tell.
    """
    n = len(head)
    if n >= 1 and head[0] != 0 or n >= 2 and head[1] > 4:
        return False
    if n >= 4 and not 5 <= int.from_bytes(head[:4], "big") <= DEFAULT_MAX_LENGTH:
        return False
    if n < 5:
        return None
    return head[4] == kind


class _SFTPSniffer:
    """
    The filter of a shell or exec channel until its first bytes show
    whether it speaks SFTP, whatever the program is called (C{sftp -s
    /tmp/my-sftp-server}, a target's C{ForceCommand internal-sftp}).

    An SFTP client's first packet is INIT (OpenSSH's sftp-server exits on
    anything else first): when the client's first five bytes are an INIT
    header, the channel gets the SFTP filter, as the sftp subsystem does,
    once policy has allowed an C{ssh.subsystem} action for it.  Nothing is
    held back meanwhile (C{scp -f} starts with one NUL byte and waits for
    the answer): the at most four bytes forwarded before the fifth are the
    start of the INIT the filter then forwards, and are cut from its output.

    Only the first bytes of each direction are looked at (no per-byte cost
    afterwards): a program that reads other bytes first and then starts an
    SFTP server is not filtered, but if the target's first output is an
    SFTP VERSION the channel is closed (see docs/ssh.md).
    """

    def __init__(self, channel: "SessionChannel") -> None:
        self.channel = channel
        self.head = b""  # the client's first bytes, forwarded, while they may begin an INIT
        self.target_head = b""
        self.client_known = self.target_known = False

    def client_data(self, data: bytes) -> Any:
        if self.client_known:
            return data
        head = self.head + data
        verdict = _sftp_start(head[:5], PacketType.INIT)
        if verdict is None:
            self.head = head
            return data
        self.client_known = True
        sent, self.head = len(self.head), b""
        if verdict:
            return self.channel.sftp_detected(head, sent)
        self._settled()
        return data

    def target_data(self, data: bytes) -> bytes:
        if self.target_known:
            return data
        head = self.target_head + data[:5]
        verdict = _sftp_start(head[:5], PacketType.VERSION)
        if verdict is None:
            self.target_head = head
            return data
        self.target_known = True
        self.target_head = b""
        if verdict:
            self.channel.sftp_unseen()
            return b""
        self._settled()
        return data

    def _settled(self) -> None:
        if self.client_known and self.target_known and self.channel.filter is self:
            self.channel.filter = IdentityFilter()  # nothing more to look at

    def closed(self) -> None:
        pass


class _Stopped:
    """The filter of a channel being closed: nothing more passes either way."""

    def client_data(self, data: bytes) -> bytes:
        return b""

    def target_data(self, data: bytes) -> bytes:
        return b""

    def closed(self) -> None:
        pass


class ChannelHost(Protocol):
    """
    What a channel needs from the client connection it belongs to.  A host
    may also offer C{start_recording(channel) -> ITerminalRecorder | None}
    (the gateway's avatar does): terminal channels are then recorded.
    """

    # (Read-only: a host's own attributes may be of narrower types.)
    @property
    def session(self) -> ISession: ...

    @property
    def target(self) -> connection.SSHConnection: ...

    @property
    def filters(self) -> Mapping[str, FilterFactory]: ...

    def channel_closed(self, channel: "RelayChannel") -> None: ...


# The end of a terminal's output that asks for a secret ("Password: ",
# "[sudo] password for deploy: ", "Enter passphrase for key ...: ", OpenSSL's
# "Enter pass phrase for key.pem:", Vault's "Token (will be hidden): "): a
# line typed there is not echoed, and is not made an ssh.shell.line record.
# A prompt may show a "*" per key typed (sudo's pwfeedback, erasing with
# "\b \b"): by Enter the prompt is followed by them.
_SECRET_PROMPT = re.compile(
    r"(?i)(password|pass ?phrase|passcode|\bpin\b|\btoken\b|\bsecret\b)[^\n]{0,80}:[\s*\x08]*$"
)
# How much of the terminal's output is kept to look for such a prompt.
_TAIL = 256
_CSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


@frozen
class Reply:
    """
    A channel request's answer, and what to do once the answer is sent
    (a refused exec's message goes after the success reply).
    """

    ok: bool
    then: Callable[[], object] | None = None


class _Serial:
    """Runs steps one after the other, each waiting for the previous one's Deferred."""

    def __init__(self) -> None:
        self._tail: Deferred[object] = succeed(None)

    def run(self, step: Callable[[], object]) -> Deferred[object]:
        done: Deferred[object] = Deferred()

        def go(_: object) -> Deferred[object]:
            d = maybeDeferred(step)
            d.chainDeferred(done)
            return d

        self._tail.addCallback(go)
        return done


# Flow control.  Conch grants a sender more window as soon as half of it is
# used, whatever became of the data; a relay that did so would buffer a fast
# target's output for a slow client without limit.  So a channel grants its
# sender more window only while what waits to go out on the other leg (and,
# client to target, what waits in the channel's queue) is below this mark:
# per direction the gateway holds at most HIGH_WATER plus one window (6 MiB),
# and only while the receiving side reads more slowly than the sender sends.
HIGH_WATER = 4 * 1024 * 1024

# The window each relay channel grants its sender: OpenSSH's 2 MiB.  Conch's
# default (128 KiB, topped up at half) costs a round trip through the
# gateway every 64 KiB; bench/ssh.py measured 0.33x -> 0.52x direct for a
# 1 GiB download with these windows and an info-level log (docs/benchmarks.md).
RELAY_WINDOW = 2 * 1024 * 1024


class WindowGate(_Connection):
    """
    Mixed into both legs' connection services: a channel may hold back the
    window adjustment Conch makes after each data packet
    (L{OrderedChannel.hold_window}) and send it later
    (L{OrderedChannel.release_window}).
    """

    def adjustWindow(self, channel: Any, bytesToAdd: int) -> None:
        hold = getattr(channel, "hold_window", None)
        if hold is not None and hold():
            return
        adjust: Callable[[Any, int], None] = super().adjustWindow  # (Conch's: unannotated)
        adjust(channel, bytesToAdd)


class OrderedChannel(_channel.SSHChannel):
    """
    An SSH channel whose EOF, requests and close are sent only after the
    data written before them (Conch would send them at once), and which
    grants its sender window only as fast as the other leg takes the data.
    """

    conn: connection.SSHConnection

    if TYPE_CHECKING:
        # Conch leaves these unannotated: their types, for the checker only.
        def channelOpen(self, specificData: bytes) -> None: ...

        def startWriting(self) -> None: ...

        def stopWriting(self) -> None: ...

        def writeExtended(self, dataType: int, data: bytes) -> None: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("localWindow", RELAY_WINDOW)
        super().__init__(*args, **kwargs)
        self._after: deque[Callable[[], object]] = deque()
        self.window_held = False
        # What waits for the peer's window, as the chunks written: Conch keeps
        # one bytes buffer that it extends (+=) and re-slices on every window
        # adjustment, copying the whole backlog each time (several MiB for a
        # slow reader, at every 96 KiB an OpenSSH client acknowledges).
        self._out: deque[bytes] = deque()
        self._out_size = 0

    # -- output: Conch's write, with a queue of chunks -----------------------------

    def write(self, data: bytes) -> None:
        if self._out:
            self._out.append(data)
            self._out_size += len(data)
            return
        sent = self._send(data)
        if sent < len(data):
            self._out.append(data[sent:])
            self._out_size += len(data) - sent
            self.areWriting = 0
            self.stopWriting()
        elif self.closing:
            self.loseConnection()  # try again, as Conch's

    def _send(self, data: bytes) -> int:
        """Send as much of C{data} as the peer's window takes; return how much."""
        top = min(len(data), self.remoteWindowLeft)
        if top <= 0:
            return 0
        rmp = self.remoteMaxPacket
        send: Callable[[_channel.SSHChannel, bytes], None] = self.conn.sendData  # (Conch's: unannotated)
        if top <= rmp and top == len(data):
            send(self, data)
        else:
            view = memoryview(data)
            for offset in range(0, top, rmp):
                send(self, bytes(view[offset : min(offset + rmp, top)]))
        self.remoteWindowLeft -= top
        return top

    def _flush(self) -> None:
        out = self._out
        while out and self.remoteWindowLeft > 0:
            chunk = out.popleft()
            sent = self._send(chunk)
            self._out_size -= sent
            if sent < len(chunk):
                out.appendleft(chunk[sent:])
                break

    def loseConnection(self) -> None:
        self.closing = 1
        if not self._out and not self.extBuf:
            self.conn.sendClose(self)

    def _output_waiting(self) -> bool:
        return bool(self._out or self.extBuf)

    # -- flow control ----------------------------------------------------------

    def backlog(self) -> int:
        """Bytes written to this channel that wait for the peer's window."""
        if self.extBuf:
            return self._out_size + sum(len(data) for _, data in self.extBuf)
        return self._out_size

    def sink_backlog(self) -> int:
        """Bytes received on this channel that have not yet left the gateway."""
        return 0

    def hold_window(self) -> bool:
        """Whether to hold back the sender's window now (see L{WindowGate})."""
        if self.sink_backlog() >= HIGH_WATER:
            self.window_held = True
            return True
        return False

    def release_window(self) -> None:
        """The other leg drained: grant the window held back, if any."""
        if not self.window_held or self.sink_backlog() >= HIGH_WATER:
            return
        self.window_held = False
        if not self.localClosed and self.localWindowLeft < self.localWindowSize and self.conn is not None:
            self.conn.adjustWindow(self, self.localWindowSize - self.localWindowLeft)

    def drained(self) -> None:
        """This channel's backlog shrank: let the channel feeding it send more."""

    def after_output(self, thunk: Callable[[], object]) -> None:
        if self._after or self._output_waiting():
            self._after.append(thunk)
        else:
            thunk()

    def addWindowBytes(self, data: int) -> None:
        # As Conch's, with the chunk queue in place of its one buffer.
        self.remoteWindowLeft += data
        if not self.areWriting and not self.closing:
            self.areWriting = True
            self.startWriting()
        self._flush()
        if self.extBuf:
            pending, self.extBuf = self.extBuf, []
            for data_type, chunk in pending:
                self.writeExtended(data_type, chunk)
        if self.closing and not self._output_waiting() and not self.localClosed:
            self.loseConnection()
        while self._after and not self._output_waiting():
            self._after.popleft()()
        self.drained()

    def eof_after_output(self) -> None:
        self.after_output(lambda: self.conn.sendEOF(self))

    def request_after_output(self, request: bytes, data: bytes) -> None:
        self.after_output(lambda: self.conn.sendRequest(self, request, data))

    def close_after_output(self) -> None:
        self.after_output(self.loseConnection)

    def discard_output(self) -> None:
        """The peer is gone: drop what waits for window space, and close."""
        self._out.clear()
        self._out_size = 0
        self.extBuf = []
        self._after.clear()
        self.loseConnection()


class TargetChannel(OrderedChannel):
    """The target leg's half of a pair: relays to C{peer}, the client's half."""

    def __init__(self, kind: bytes, open_data: bytes = b"", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.name = kind
        self.open_data = open_data
        self.opened: Deferred[TargetChannel] = Deferred()
        self.peer: RelayChannel | None = None

    def channelOpen(self, specificData: bytes) -> None:
        self.opened.callback(self)

    def openFailed(self, reason: Failure) -> None:
        self.opened.errback(reason)

    def sink_backlog(self) -> int:
        return self.peer.backlog() if self.peer is not None else 0

    def drained(self) -> None:
        if self.peer is not None:
            self.peer.release_window()

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.from_target(data)

    def extReceived(self, dataType: int, data: bytes) -> None:
        if self.peer is not None:
            self.peer.from_target(data, extended=dataType)

    def eofReceived(self) -> None:
        if self.peer is not None:
            self.peer.eof_after_output()

    def requestReceived(self, requestType: bytes, data: bytes) -> bool:
        if self.peer is None:
            return False
        return self.peer.target_request(requestType, data)

    def closed(self) -> None:
        if self.peer is not None:
            self.peer.target_closed()


class RelayChannel(OrderedChannel):
    """The client's half of a pair; subclasses add the kind's requests."""

    def __init__(self, host: ChannelHost, target: TargetChannel, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.target = target
        target.peer = self
        self.filter: ChannelFilter = IdentityFilter()
        self.handle: IActionHandle | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.want_reply = False  # set per request by the server connection
        self.refused = False  # nothing more goes to the target
        self.queued = 0  # client bytes waiting in the queue (behind a decision)
        self.gone = False  # closed() has run
        self._serial = _Serial()

    @property
    def session(self) -> ISession:
        return self.host.session

    # -- client to target ----------------------------------------------------

    def _queue(self, step: Callable[[], object]) -> Deferred[object]:
        d = self._serial.run(step)
        d.addErrback(self._step_failed)
        return d

    def _step_failed(self, failure: Failure) -> None:
        log.failure("ssh channel relay step failed", failure)
        self.refused = True
        self.discard_output()
        self.target.close_after_output()

    def sink_backlog(self) -> int:
        return self.queued + self.target.backlog()

    def drained(self) -> None:
        self.target.release_window()

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.session.bytes_in += len(data)
        self.queued += len(data)

        def forward() -> Deferred[object] | None:
            self.queued -= len(data)
            if self.refused:
                self.release_window()
                return None
            self.client_input(data)
            return maybeDeferred(self.filter.client_data, data).addCallback(self._filtered).addBoth(self._stepped)

        self._queue(forward)

    def _stepped(self, result: Any) -> Any:
        # Once the chunk is written on (or dropped), the client may send more.
        self.release_window()
        return result

    def client_input(self, data: bytes) -> None:
        """Called with the client's data, in order, as it is forwarded."""

    def _filtered(self, out: Any) -> None:  # bytes | FilterOutput
        if isinstance(out, FilterOutput):
            if out.to_client and not self.localClosed:
                self.write(out.to_client)
            out = out.to_target
        if out and not self.refused:
            self.target.write(out)

    def extReceived(self, dataType: int, data: bytes) -> None:
        pass  # clients have no stderr to send

    def eofReceived(self) -> None:
        self._queue(lambda: None if self.refused else self.target.eof_after_output())

    def closeReceived(self) -> None:
        # The client reads nothing more: what waits for its window is dropped.
        self.discard_output()
        self._queue(self.target.close_after_output)

    # -- target to client ----------------------------------------------------

    def from_target(self, data: bytes, extended: int | None = None) -> None:
        self.bytes_out += len(data)
        self.session.bytes_out += len(data)
        if extended is None:
            try:
                data = self.filter.target_data(data)
            except Exception:  # noqa: BLE001 - any filter's error ends the channel
                # A stream the auditor cannot follow is one it cannot audit.
                log.failure("ssh channel: the target's stream cannot be audited; closing")
                self.refused = True
                self.discard_output()
                self.target.discard_output()
                return
            if data:
                self.write(data)
        else:
            self.writeExtended(extended, data)

    def target_request(self, request: bytes, data: bytes) -> bool:
        return False

    def target_closed(self) -> None:
        self.close_after_output()

    # -- end -----------------------------------------------------------------

    def outcome(self) -> Outcome:
        return Outcome(status=Status.succeeded, bytes_in=self.bytes_in, bytes_out=self.bytes_out)

    def closed(self) -> None:
        self.gone = True
        self.filter.closed()
        if not self.target.localClosed:
            self.target.close_after_output()
        if self.handle is not None:
            self.handle.finish(self.outcome())
        self.host.channel_closed(self)


def _replied(_: object) -> bool:
    return True


def _request_failed(failure: Failure) -> bool:
    failure.trap(ConchError)  # the target answered "failure"
    return False


def _exit_signal(data: bytes) -> tuple[str, str]:
    name, rest = common.getNS(data)
    message = ""
    try:
        message = common.getNS(rest[1:])[0].decode("utf-8", "replace")
    except (struct.error, IndexError):
        pass
    return name.decode("ascii", "replace"), message


class SessionChannel(RelayChannel):
    """A C{session} channel: a shell, a command or a subsystem."""

    name = b"session"

    def __init__(self, host: ChannelHost, target: TargetChannel, **kwargs: Any) -> None:
        super().__init__(host, target, **kwargs)
        self.program: str | None = None  # "shell", "exec" or "subsystem", once started
        self.pty: dict[str, Any] | None = None
        self.exit_status: int | None = None
        self.exit_signal: tuple[str, str] | None = None
        self.recorder: ITerminalRecorder | None = None
        self.lines: LineReconstructor | None = None  # an interactive shell's typed lines
        self.shell_lines = 0
        self._tail = ""  # the end of the terminal's output, for secret prompts
        self.sftp_handle: IActionHandle | None = None  # SFTP found spoken on a shell or exec channel
        # Masking (hoopgw.masking.stream): the client's output per stream
        # (None: stdout) with mask_terminal.  (Recordings mask themselves.)
        self._client_maskers: dict[int | None, StreamMasker] | None = None
        self._mask_counts: dict[tuple[str, str], int] = {}
        self._mask_flush: IDelayedCall | None = None  # the delayed call that flushes held output
        self._mask_bulk_at = float("-inf")  # when the target last wrote a large chunk
        self._mask_fed = 0  # writes from the target seen, to tell whether more came while a flush waited
        self._behind_held: list[Callable[[], object]] = []  # the target's requests, waiting behind held output
        self._review: Review | None = None  # the review its exec command waits for

    def requestReceived(self, requestType: bytes, data: bytes) -> Deferred[object] | bool:
        handler = self._handlers.get(requestType)
        if handler is None:
            # keepalive@openssh.com and unknown requests: "no", as OpenSSH
            # says; queued all the same, as replies go in request order.
            return self._queue(lambda: False)
        want_reply = self.want_reply
        return self._queue(lambda: handler(self, data, want_reply)).addCallback(
            lambda reply: reply if reply is not None else False
        )

    # -- relayed as they are ---------------------------------------------------

    def _relay(self, request: bytes, data: bytes, want_reply: bool) -> Deferred[bool] | bool:
        if self.refused or self.target.localClosed:
            return False
        d: Deferred[object] | None = self.target.conn.sendRequest(self.target, request, data, wantReply=want_reply)
        if d is None:
            return True  # no reply wanted
        return d.addCallbacks(_replied, _request_failed)

    def _pty_req(self, data: bytes, want_reply: bool) -> Any:
        term, rest = common.getNS(data)
        cols, rows, width, height = struct.unpack(">4L", rest[:16])
        self.pty = {"term": term.decode("ascii", "replace"), "cols": cols, "rows": rows}
        return self._relay(b"pty-req", data, want_reply)

    def _window_change(self, data: bytes, want_reply: bool) -> Any:
        if self.pty is not None and len(data) >= 8:
            self.pty["cols"], self.pty["rows"] = struct.unpack(">2L", data[:8])
            if self.recorder is not None:
                self.recorder.resize(self.pty["cols"], self.pty["rows"])
        return self._relay(b"window-change", data, want_reply)

    def _env(self, data: bytes, want_reply: bool) -> Any:
        name, _value, _ = common.getNS(data, 2)
        if not env_allowed(name.decode("ascii", "replace")):
            log.debug("ssh env {name} refused", name=name.decode("ascii", "replace"))
            return False
        return self._relay(b"env", data, want_reply)

    def _signal(self, data: bytes, want_reply: bool) -> Any:
        return self._relay(b"signal", data, want_reply)

    # -- programs: decided by policy first -------------------------------------

    def _shell(self, data: bytes, want_reply: bool) -> Any:
        return self._start(b"shell", data, Action(kind="ssh.shell", input="shell", details=self._details()))

    def _exec(self, data: bytes, want_reply: bool) -> Any:
        raw = common.getNS(data)[0]
        if len(raw) > MAX_COMMAND_LENGTH:
            # Not read at all (the reader runs on the reactor): refused
            # whatever the policy, the audit record keeping its start.
            head = raw[:_REFUSED_COMMAND_HEAD].decode("utf-8", "replace")
            return self._refuse_feature(
                "ssh.exec", f"{head}... ({len(raw)} bytes)",
                f"a command line of {len(raw)} bytes, longer than the {MAX_COMMAND_LENGTH} the gateway reads, "
                "is refused",
            )
        command = raw.decode("utf-8", "replace")
        parsed = parse_command(command)
        details = self._details()
        if parsed.error is not None:
            details["parse_error"] = parsed.error
        if parsed.unreadable is not None:
            details["unreadable"] = parsed.unreadable
        if parsed.unknown:
            details["unknown_arguments"] = list(parsed.unknown)
        # Fail closed: what the gateway cannot read matches the deny (and
        # review) rules' ssh.commands patterns (commands.policy_lines), so
        # it needs them; with a policy it cannot look into, it is refused.
        patterns = self._command_patterns()
        lines = policy_lines(parsed, patterns) if patterns is not None else parsed.lines
        if lines is None or (patterns is None and (parsed.unreadable is not None or parsed.unknown)):
            why = parsed.unreadable or f"the arguments of {', '.join(parsed.unknown)} are only known at run time"
            return self._refuse_feature(
                "ssh.exec", command, f"the gateway cannot read this command line ({why}) and cannot "
                "match it against the policy's ssh.commands rules, so it is refused",
            )
        attributes: dict[str, Any] = {"ssh.commands": lines}
        if parsed.simple is not None:
            attributes["ssh.simple_command"] = (parsed.simple,)
        filter_name = None
        programs = {line.split(" ", 1)[0] for line in parsed.lines}
        if programs & _SFTP_SERVERS:
            # An sftp-server run as a command speaks SFTP: it gets the SFTP
            # filter, as the subsystem does, or it is not run at all.
            program = posixpath.basename(parsed.simple.split(" ", 1)[0]) if parsed.simple else None
            if program not in _SFTP_SERVERS or "sftp" not in self.host.filters:
                return self._refuse_feature(
                    "ssh.exec", command,
                    "an SFTP server can only run as the sftp subsystem, or as a command on its own,",
                )
            filter_name = "sftp"
        scp = legacy_scp(parsed, lambda: rule_paths(self.session, "ssh.exec"))
        if scp is not None:
            paths, write, problem = scp
            if problem is not None:
                return self._refuse_feature("ssh.exec", command, problem)
            attributes["ssh.sftp.paths"] = paths
            attributes["ssh.sftp.write"] = write
        action = Action(kind="ssh.exec", input=command, attributes=attributes, details=details)
        return self._start(b"exec", data, action, filter_name=filter_name)

    def _command_patterns(self) -> tuple[tuple[str, ...], ...] | None:
        """The ssh.commands patterns of each deny and review rule in force, if the policy shows them."""
        rules = getattr(getattr(self.session.service.policy, "policy_set", None), "rules", None)
        if rules is None:
            return None
        return command_patterns(rules, self.session.identity, self.session.connection.name)

    def _subsystem(self, data: bytes, want_reply: bool) -> Any:
        name = common.getNS(data)[0].decode("ascii", "replace")
        factory = self.host.filters.get(name)
        if factory is None:
            # A subsystem the gateway cannot read (sftp included, when no
            # SFTP filter is registered) would be a blind tunnel.
            return self._refuse_feature("ssh.subsystem", name, f"the {name!r} subsystem is not offered")
        action = Action(kind="ssh.subsystem", input=name, attributes={"ssh.subsystem": name}, details=self._details())
        return self._start(b"subsystem", data, action, filter_name=name)

    def _details(self) -> dict[str, Any]:
        return {"pty": dict(self.pty)} if self.pty is not None else {}

    def _start(self, request: bytes, data: bytes, action: Action, filter_name: str | None = None) -> Any:
        if self.program is not None or self.refused:
            return False  # one program per session channel, as sshd
        self.program = request.decode("ascii")
        # An exec command a review rule matches waits for it (the client is
        # told on stderr); a shell is not held (its lines are observed only).
        d = self.session.check(action, self._held_for_review if self.program == "exec" else None)

        def decided(handle: IActionHandle) -> Any:
            if self.localClosed or self.remoteClosed or self.gone:
                # The client left while the decision was pending: nothing is
                # started, and closed() has run without a handle to finish.
                self.refused = True
                if handle.allowed:
                    handle.finish(Outcome(status=Status.failed, error="client disconnected before the decision"))
                return False
            self.handle = handle
            if not handle.allowed:
                self.refused = True  # at once: what the client queued behind it must not go
                return Reply(True, then=lambda: self._refuse(handle))
            if filter_name is not None:
                factory = self.host.filters.get(filter_name)
                if factory is None:  # checked before deciding; never a blind tunnel
                    handle.finish(Outcome(status=Status.failed, error=f"no {filter_name} filter"))
                    self.refused = True
                    return Reply(True, then=lambda: self._fail(f"the {filter_name!r} filter is not available"))
                self.filter = factory(self.session, handle)
                self._bind_filter()
            elif self.program in ("shell", "exec"):
                # Whatever the program is called, the client's first bytes
                # tell whether it speaks SFTP.
                self.filter = _SFTPSniffer(self)
            if self.pty is not None and self.program in ("shell", "exec"):
                self._start_recording(action)
            elif self.program == "exec" and filter_name is None and self._record_exec_output():
                self._start_recording(action)
            if filter_name is None:
                self._start_masking()
            started = self._relay(request, data, True)

            def answered(ok: bool) -> bool:
                if not ok:
                    handle.finish(Outcome(status=Status.failed, error=f"the target refused the {self.program} request"))
                return ok

            return (started if isinstance(started, Deferred) else succeed(started)).addCallback(answered)

        def failed(failure: Failure) -> Reply:
            failure.trap(AuditUnavailable, NotPermitted)
            message = (
                "the gateway's audit log is unavailable, so it refuses all traffic"
                if failure.check(AuditUnavailable)
                else str(failure.value)
            )
            self.refused = True
            return Reply(True, then=lambda: self._fail(message))

        d.addCallbacks(decided, failed)
        return d

    # -- SFTP spoken on a shell or exec channel ---------------------------------

    def sftp_detected(self, head: bytes, sent: int) -> Deferred[Any]:
        """
        The client's first bytes are an SFTP INIT (see L{_SFTPSniffer}):
        decide an C{ssh.subsystem} action, as for the sftp subsystem; then
        the channel gets the SFTP filter, fed C{head} (whose first C{sent}
        bytes have already gone to the target), or is closed.
        """
        details: dict[str, Any] = {"detected": self.program}
        if self.handle is not None:
            details["channel_action"] = self.handle.id
            if self.program == "exec":
                details["command"] = self.handle.action.input
        action = Action(kind="ssh.subsystem", input="sftp", attributes={"ssh.subsystem": "sftp"}, details=details)
        factory = self.host.filters.get("sftp")
        if factory is None:
            message = "an SFTP server started by a command is not offered without the SFTP filter"
            d = self.session.check(action)
            d.addCallback(lambda handle: handle.finish(Outcome(status=Status.blocked, error=message)))
            d.addBoth(lambda _: self._stop(message))
            return d

        def decided(handle: IActionHandle) -> Any:
            if self.gone or self.localClosed or self.refused:
                if handle.allowed:
                    handle.finish(Outcome(status=Status.failed, error="the channel closed before SFTP started"))
                return b""
            if not handle.allowed:
                decision = handle.decision
                rule = decision.rule or "no matching allow rule"
                return self._stop(f"{decision.message or 'refused by policy'} (rule {rule!r}); SFTP was refused")
            self.sftp_handle = handle
            self.filter = factory(self.session, handle)
            self._bind_filter()
            # SFTP is audited per operation, not recorded as a terminal.
            self.lines = None
            if self.recorder is not None:
                self.recorder.close()
                self.recorder = None
            if sent:
                self.filter = _Trimmed(self, self.filter, sent)
            return self.filter.client_data(head)

        def failed(failure: Failure) -> bytes:
            failure.trap(AuditUnavailable, NotPermitted)
            return self._stop(
                "the gateway's audit log is unavailable, so it refuses all traffic"
                if failure.check(AuditUnavailable) else str(failure.value)
            )

        d = self.session.check(action)
        d.addCallbacks(decided, failed)
        return d

    def sftp_unseen(self) -> None:
        """
        The target's first output is an SFTP VERSION, but the client's
        first bytes were no INIT: an SFTP session the gateway did not see
        start (a program that read other bytes first).  Nothing of it
        reaches the client; the channel is closed.
        """
        message = "the target answered with SFTP to a stream that did not start as SFTP; the channel is closed"
        self._refuse_feature("ssh.subsystem", "sftp", message)
        self._stop(message)

    def _stop(self, message: str) -> bytes:
        self.filter = _Stopped()
        self._fail(message)
        return b""

    # -- terminal recording and shell lines ------------------------------------

    def _start_recording(self, action: Action) -> None:
        start = getattr(self.host, "start_recording", None)
        if start is not None:
            command = action.input if self.program == "exec" else None
            masks = self.session.masks
            if command is not None and masks is not None and masks.trail:
                command = masks.trail_text(command, {})  # the recording's header is stored too
            self.recorder = start(self, command=command)
        if self.program == "shell":
            # Lines only for a shell: in `ssh -t host top` keystrokes are not commands.
            self.lines = LineReconstructor()

    def _record_exec_output(self) -> bool:
        return bool(getattr(self.session.connection.settings, "record_exec_output", False))

    def recording_failed(self, reason: str) -> None:
        """A terminal session must not go on unrecorded: end it."""
        self._fail(f"the session recording failed ({reason}); the session is ended")

    # -- masking -----------------------------------------------------------------

    def _start_masking(self) -> None:
        masks = self.session.masks
        if masks is not None and masks.finders and getattr(self.session.connection.settings, "mask_terminal", False):
            self._client_maskers = {}

    def _masked_for_client(self, data: bytes, extended: int | None) -> bytes:
        maskers = self._client_maskers
        assert maskers is not None
        masker = maskers.get(extended)
        if masker is None:
            masks = self.session.masks
            counts = self._mask_counts
            masker = maskers[extended] = StreamMasker(
                lambda text: masks.replacements(text, counts) if masks is not None else [],
                keys=masks is not None and masks.finds_keys(),
            )
        self._mask_fed += 1
        now = self.session.service.clock.seconds()
        if len(data) >= _MASK_INTERACTIVE:
            self._mask_bulk_at = now
        # A terminal's small writes (echoes), unless bulk output was flowing a moment ago.
        interactive = self.pty is not None and now - self._mask_bulk_at > _MASK_QUIET_BULK * 2
        data = masker.feed(data)
        if masker.holding and self.pty is not None:
            # (Without a terminal nothing is echoed: what is held waits for
            # more, or for the end of the stream -- no timer can split a value.)
            # What is held (the end of a line being typed) goes out after a
            # moment without more from the target: a short one for a
            # terminal's echo, a longer one within bulk output (a target
            # pausing mid-line under load must not split a value).
            quiet = _MASK_QUIET if interactive else _MASK_QUIET_BULK
            if self._mask_flush is None:
                self._mask_flush = self.session.service.clock.callLater(quiet, self._quiet)
            else:
                self._mask_flush.reset(quiet)
        return data

    def _quiet(self, fed: int | None = None) -> None:
        clock = self.session.service.clock
        if self._output_waiting() or getattr(self.target, "window_held", False):
            # Quiet only because the gateway itself holds the stream back (a
            # slow client): the rest of a value may be right behind.
            self._mask_flush = clock.callLater(_MASK_QUIET_BULK, self._quiet)
            return
        if fed is None:
            # Timers run before the reactor reads: after a long turn of the
            # reactor, the target's next bytes may be waiting unread.  Look
            # again once they have been read.
            self._mask_flush = clock.callLater(0, self._quiet, self._mask_fed)
            return
        if fed != self._mask_fed:
            self._mask_flush = clock.callLater(_MASK_QUIET_BULK, self._quiet)  # more came meanwhile
            return
        self._flush_masked()

    def _flush_masked(self) -> None:
        self._mask_flush = None
        for extended, masker in (self._client_maskers or {}).items():
            data = masker.flush()
            if data:
                if extended is None:
                    self.write(data)
                else:
                    self.writeExtended(extended, data)
        self._release_behind_held()

    def _holding(self) -> bool:
        return any(masker.holding for masker in (self._client_maskers or {}).values())

    def request_after_output(self, request: bytes, data: bytes) -> None:
        if self._holding():
            # sshd sends a program's exit status when it exits, with the
            # end of its output often still to come: flushing what is held
            # here would cut a value in two.  The request waits behind it.
            self._behind_held.append(lambda: self.conn.sendRequest(self, request, data))
        else:
            super().after_output(lambda: self.conn.sendRequest(self, request, data))

    def _release_behind_held(self) -> None:
        waiting, self._behind_held = self._behind_held, []
        for send in waiting:
            super().after_output(send)

    def after_output(self, thunk: Callable[[], object]) -> None:
        # EOF and close end the stream: what is held for masking goes first.
        if self._client_maskers:
            if self._mask_flush is not None:
                self._mask_flush.cancel()
            self._flush_masked()
        super().after_output(thunk)

    def _settle_masking(self) -> None:
        if self._mask_flush is not None:
            self._mask_flush.cancel()
            self._mask_flush = None
        masks = self.session.masks
        if self._mask_counts and masks is not None:
            counts, self._mask_counts = self._mask_counts, {}
            masks.settle(counts)

    def client_input(self, data: bytes) -> None:
        if self.recorder is not None:
            self.recorder.input(data)
        if self.lines is not None:
            for line in self.lines.feed(data):
                self._shell_line(line)

    def _shell_line(self, line: ShellLine) -> None:
        if _SECRET_PROMPT.search(self._tail):
            # Typed at a prompt that does not echo: a password, not a command.
            return
        self.shell_lines += 1
        action = Action(
            kind="ssh.shell.line",
            input=line.text,
            details={"best_effort": True, "certain": line.certain, "observed": True},
        )
        # Observed, not enforced: the shell has already received the keys,
        # so policy is not asked (a "blocked" record would be false evidence).
        d = self.session.observe(action)
        d.addCallback(lambda handle: handle.finish(Outcome(status=Status.succeeded)))
        d.addErrback(lambda f: log.failure("ssh.shell.line not audited", f))

    def from_target(self, data: bytes, extended: int | None = None) -> None:
        raw = data
        if self._client_maskers is not None and self.sftp_handle is None and not self.localClosed:
            data = self._masked_for_client(data, extended)
        if data:
            super().from_target(data, extended)
        if self._behind_held and not self._holding():
            self._release_behind_held()
        if self.recorder is not None:
            self.recorder.output(raw)
        if self.lines is not None:
            text = _CSI.sub("", data[-_TAIL:].decode("utf-8", "replace"))
            self._tail = (self._tail + text)[-_TAIL:]

    def closed(self) -> None:
        # The client left while its command waited: nothing will run.
        self.session.service.withdraw_review(self._review, "the client closed the channel")
        self._settle_masking()
        if self.recorder is not None:
            self.recorder.close()
        super().closed()
        if self.sftp_handle is not None:
            self.sftp_handle.finish(self.outcome())

    def _refuse(self, handle: IActionHandle) -> None:
        decision = handle.decision
        assert decision is not None
        rule = decision.rule or "no matching allow rule"
        what = {"exec": "the command was not run", "shell": "no shell was started"}.get(
            self.program or "", "nothing was started"
        )
        message = handle.review.refusal() if handle.review is not None else decision.message or "refused by policy"
        self._fail(f"{message} (rule {rule!r}); {what}")

    def _bind_filter(self) -> None:
        """A filter that can tell the client something outside its protocol (SFTP: a held request) writes on stderr."""
        bind = getattr(self.filter, "bind_stderr", None)
        if bind is not None:
            bind(self._stderr_notice)

    def _stderr_notice(self, text: str) -> None:
        if not (self.localClosed or self.gone):
            self.writeExtended(EXTENDED_DATA_STDERR, text.encode("utf-8"))

    def _held_for_review(self, review: Review) -> None:
        """An exec command held for review: the client is told on stderr, and waits."""
        self._review = review
        if self.localClosed or self.gone:
            return
        rule = f" (rule {review.rule!r})" if review.rule else ""
        self.writeExtended(
            connection.EXTENDED_DATA_STDERR,
            f"hoopgw: this command waits for review {review.id}{rule}; it runs once approved "
            f"(an approver runs: hoopgw reviews approve {review.id})\n".encode(),
        )

    def _fail(self, message: str) -> None:
        """Tell the client why on stderr and end the channel with exit status 1."""
        self.refused = True
        newline = "\r\n" if self.pty is not None else "\n"
        self.writeExtended(EXTENDED_DATA_STDERR, f"hoopgw: {message}{newline}".encode("utf-8"))
        self.request_after_output(b"exit-status", struct.pack(">L", 1))
        self.eof_after_output()
        self.close_after_output()
        self.target.close_after_output()

    def _refuse_feature(self, kind: str, input: str, message: str) -> Deferred[bool]:
        """Refuse a request the gateway does not offer, and audit it as blocked."""
        d = self.session.check(Action(kind=kind, input=input))
        d.addCallback(
            lambda handle: handle.finish(Outcome(status=Status.blocked, error=message + " through the gateway"))
        )
        d.addErrback(lambda f: log.failure("refused {kind} not audited", f, kind=kind))
        return d.addCallback(lambda _: False)

    def _agent(self, data: bytes, want_reply: bool) -> Any:
        return self._refuse_feature("ssh.agent", "auth-agent-req@openssh.com", "agent forwarding is not offered")

    def _x11(self, data: bytes, want_reply: bool) -> Any:
        return self._refuse_feature("ssh.x11", "x11-req", "X11 forwarding is not offered")

    _handlers: dict[bytes, Callable[["SessionChannel", bytes, bool], Any]] = {
        b"pty-req": _pty_req,
        b"window-change": _window_change,
        b"env": _env,
        b"signal": _signal,
        b"shell": _shell,
        b"exec": _exec,
        b"subsystem": _subsystem,
        b"auth-agent-req@openssh.com": _agent,
        b"x11-req": _x11,
    }

    # -- from the target -------------------------------------------------------

    def target_request(self, request: bytes, data: bytes) -> bool:
        if request == b"exit-status" and len(data) >= 4:
            self.exit_status = struct.unpack(">L", data[:4])[0]
        elif request == b"exit-signal":
            try:
                self.exit_signal = _exit_signal(data)
            except (struct.error, IndexError, ValueError):
                return False
        else:
            return False  # keepalive@openssh.com, eow@openssh.com: not the client's business
        self.request_after_output(request, data)
        return True

    def outcome(self) -> Outcome:
        bytes_in, bytes_out = self.bytes_in, self.bytes_out
        if self.exit_status is not None:
            status = Status.succeeded if self.exit_status == 0 else Status.failed
            return Outcome(status=status, code=str(self.exit_status), bytes_in=bytes_in, bytes_out=bytes_out)
        if self.exit_signal is not None:
            name, message = self.exit_signal
            error = f"killed by signal {name}" + (f": {message}" if message else "")
            return Outcome(status=Status.failed, code=f"SIG{name}", error=error, bytes_in=bytes_in, bytes_out=bytes_out)
        return Outcome(
            status=Status.failed, error="the channel closed before the program exited", bytes_in=bytes_in, bytes_out=bytes_out
        )


class _Trimmed:
    """
    A channel's SFTP filter until the first C{sent} bytes it forwards, which
    went to the target before SFTP was recognised, have been cut from its
    output (the filter may forward them only once the INIT is complete).
    """

    def __init__(self, channel: RelayChannel, inner: ChannelFilter, sent: int) -> None:
        self.channel, self.inner, self.sent = channel, inner, sent

    def client_data(self, data: bytes) -> Any:
        out = self.inner.client_data(data)
        if isinstance(out, Deferred):
            return out.addCallback(self._cut)
        return self._cut(out)

    def _cut(self, out: Any) -> Any:
        to_target = out.to_target if isinstance(out, FilterOutput) else out
        cut = min(self.sent, len(to_target))
        self.sent -= cut
        if not self.sent and self.channel.filter is self:
            self.channel.filter = self.inner
        if isinstance(out, FilterOutput):
            return FilterOutput(to_target[cut:], out.to_client)
        return to_target[cut:]

    def target_data(self, data: bytes) -> bytes:
        return self.inner.target_data(data)

    def closed(self) -> None:
        self.inner.closed()


class ForwardChannel(RelayChannel):
    """A C{direct-tcpip} channel (ssh -L, -W): bytes only."""

    name = b"direct-tcpip"


def _open_target(host: ChannelHost, kind: bytes, data: bytes) -> Deferred[TargetChannel]:
    target = TargetChannel(kind, data, conn=host.target)
    host.target.openChannel(target, data)
    return target.opened


def open_session_channel(host: ChannelHost, window: int, max_packet: int) -> Deferred[SessionChannel]:
    """
    Open a session channel on the target, then the client's.

    @return: L{Deferred} firing with the client's L{SessionChannel}, or
        failing with L{ConchError} (the target's refusal).
    """
    return _open_target(host, b"session", b"").addCallback(
        lambda target: SessionChannel(host, target, remoteWindow=window, remoteMaxPacket=max_packet)
    )


def parse_direct_tcpip(data: bytes) -> tuple[str, int, str, int]:
    host, rest = common.getNS(data)
    port = struct.unpack(">L", rest[:4])[0]
    origin, rest = common.getNS(rest[4:])
    origin_port = struct.unpack(">L", rest[:4])[0]
    return host.decode("utf-8", "replace"), port, origin.decode("utf-8", "replace"), origin_port


_NUMERIC_HOST = re.compile(r"[0-9A-Fa-fXx.]+")


def forward_destinations(dest_host: str, dest_port: int) -> tuple[str, ...]:
    """
    The C{ssh.forward.destinations} of a forward to C{dest_host}: as sent,
    then as the target's resolver reads it, so that a rule on
    C{127.0.0.1:*} holds for C{127.1}, C{2130706433}, C{0x7f.0.0.1} (IPv4
    numbers as C{inet_aton} reads them), C{[::ffff:127.0.0.1]} and
    C{LOCALHOST.} (names in lower case, without the root's dot).
    """
    hosts = [dest_host]
    name = dest_host.lower().removesuffix(".")
    hosts.append(name)
    if _NUMERIC_HOST.fullmatch(name):
        try:
            hosts.append(socket.inet_ntoa(socket.inet_aton(name)))
        except OSError:
            pass
    try:
        address = ipaddress.IPv6Address(name.partition("%")[0])
    except ValueError:
        pass
    else:
        hosts.append(address.compressed)
        if address.ipv4_mapped is not None:
            hosts.append(str(address.ipv4_mapped))
    return tuple(dict.fromkeys(f"[{h}]:{dest_port}" if ":" in h else f"{h}:{dest_port}" for h in hosts))


def open_forward_channel(host: ChannelHost, window: int, max_packet: int, data: bytes) -> Deferred[ForwardChannel]:
    """
    Decide an C{ssh.forward} action for a C{direct-tcpip} request and, if it
    is allowed, open the same channel on the target (the target host makes
    the TCP connection, under its own C{AllowTcpForwarding}).
    """
    try:
        dest_host, dest_port, origin, origin_port = parse_direct_tcpip(data)
    except (struct.error, IndexError, ValueError):
        raise ConchError(connection.OPEN_CONNECT_FAILED, "malformed direct-tcpip request")
    destinations = forward_destinations(dest_host, dest_port)
    action = Action(
        kind="ssh.forward",
        input=destinations[0],
        attributes={"ssh.forward.destinations": destinations},
        details={"origin": f"{origin}:{origin_port}"},
    )
    d = host.session.check(action)

    def decided(handle: IActionHandle) -> Deferred[ForwardChannel]:
        if not handle.allowed:
            decision = handle.decision
            rule = decision.rule or "no matching allow rule"
            raise ConchError(
                connection.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"hoopgw: {decision.message or 'forwarding refused by policy'} (rule {rule!r})",
            )
        opened = _open_target(host, b"direct-tcpip", data)

        def made(target: TargetChannel) -> ForwardChannel:
            channel = ForwardChannel(host, target, remoteWindow=window, remoteMaxPacket=max_packet)
            channel.handle = handle
            return channel

        def failed(failure: Failure) -> Failure:
            handle.finish(Outcome(status=Status.failed, error=f"the target refused: {failure.getErrorMessage()}"))
            return failure

        return opened.addCallbacks(made, failed)

    def unavailable(failure: Failure) -> ForwardChannel:
        failure.trap(AuditUnavailable, NotPermitted)
        raise ConchError(connection.OPEN_ADMINISTRATIVELY_PROHIBITED, f"hoopgw: {failure.getErrorMessage()}")

    return d.addCallbacks(decided, unavailable)
