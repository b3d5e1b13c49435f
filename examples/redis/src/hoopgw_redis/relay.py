"""
One client connection of the Redis front end, sans I/O: bytes from the
client and replies from the target in, what to send where and what to ask
the pipeline out (an L{Output}).  The Twisted glue
(L{hoopgw_redis.frontend}) feeds it and carries its outputs out; tests drive
it with a recording output and no sockets.

Before authentication (redis-server's own rules, for clients that cannot
tell the two apart): C{AUTH <connection> <token>} and C{HELLO <2|3> AUTH
<connection> <token> [SETNAME name]} log in (L{Output.login}); C{QUIT} is
answered; every other command gets C{-NOAUTH Authentication required.}
(C{HELLO} without C{AUTH} its own C{NOAUTH}).  The request parser runs with
redis-server's pre-authentication limits (10 arguments, 16 KiB per
argument), and the bytes received before the login succeeds are bounded
(L{RelayLimits.preauth_bytes}): past it the connection is closed.  A
client pipelining a larger command right behind its C{AUTH} is refused by
those limits, where redis-server, which reads one command at a time, would
take it; no client library does that.

After it, every command is an action, decided one after the other in the
order received (L{Output.decide}, answered by L{Relay.decided}); an allowed
command is forwarded at once, without waiting for the replies of those
before it, so a pipeline stays a pipeline; a refused one is answered in its
place, after the replies of the commands before it.  Replies are matched to
commands in order (L{Replies}); out-of-band data (pub/sub messages,
RESP3 pushes) is relayed as it comes.  Both pass the L{Relay.masker} on
their way to the client (the session's masks by detector): the client and
the outcomes see the masked values, while what the relay follows of the
target's state (below) it reads from the values as the target sent them.

What the gateway follows of the target's state, from the commands it
forwards and the replies they get:

  - MULTI: a command refused inside a transaction marks it, and its
    C{EXEC} is answered C{-EXECABORT} (the transaction is discarded on the
    target, nothing in it runs), as redis-server does for a command it
    refuses while queueing.  Queued commands' outcomes are recorded when
    C{EXEC} (or C{DISCARD}, C{RESET}, a watched key) settles them.
  - pub/sub: the subscriptions, from the confirmations, so that a RESP2
    client's messages are told from replies and an C{UNSUBSCRIBE} with no
    channel is given its many confirmations.
  - the protocol (C{HELLO}, C{RESET}) and the database (C{SELECT}), for
    the trail.

What it cannot follow it refuses (the gateway's own refusal, recorded):
C{MONITOR} (every client's commands, other sessions' included),
C{SYNC}/C{PSYNC}/C{REPLCONF} (the replication stream), C{CLIENT REPLY
OFF|SKIP} (commands without replies), (P|S)SUBSCRIBE/UNSUBSCRIBE and
C{HELLO} inside C{MULTI} (replies nested in C{EXEC}'s), and C{AUTH} or
C{HELLO ... AUTH} once logged in: a connection's identity and target do not
change (open another connection).  C{RESET} is forwarded, and the gateway
logs in to the target again at once (the target's C{RESET} logs out).
C{QUIT} never reaches the target: once the replies before it are sent, the
gateway answers C{+OK} and closes.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from attrs import evolve, field, frozen
from hoopgw.frontend import Outcome, Status

from hoopgw_redis.resp import (
    DEFAULT_MAX_BULK_LENGTH,
    DEFAULT_MAX_ELEMENTS,
    DEFAULT_MAX_LINE_LENGTH,
    DEFAULT_MAX_MESSAGE_LENGTH,
    Attributed,
    Command,
    Error,
    Map,
    Null,
    ProtocolError,
    Push,
    RequestParser,
    SimpleString,
    encode,
    encode_command,
    error_reply,
    keyword,
)

__all__ = [
    "Hello", "Login", "Masker", "Output", "Phase", "Relay", "RelayLimits", "Replies", "TranscriptLines", "Verdict",
    "parse_hello",
]

NOAUTH = b"-NOAUTH Authentication required.\r\n"
NOAUTH_HELLO = (
    b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> "
    b"AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol "
    b"version at the same time\r\n"
)
NOPROTO = b"-NOPROTO unsupported protocol version\r\n"
OK = b"+OK\r\n"
EXECABORT = b"-EXECABORT Transaction discarded because of previous errors (hoopgw refused a command in it).\r\n"
_QUEUED = SimpleString(b"QUEUED")


@frozen
class RelayLimits:
    """What one client connection may make the gateway hold."""

    # Before authentication (redis-server: 10 arguments, 16 KiB per argument).
    preauth_bytes: int = 64 * 1024
    preauth_bulk: int = 16 * 1024
    preauth_elements: int = 10
    preauth_line: int = 16 * 1024
    auth_failures: int = 5  # failed logins before the connection is closed
    # After it: the codec's limits, and when to stop reading the client.
    max_bulk_length: int = DEFAULT_MAX_BULK_LENGTH
    max_elements: int = DEFAULT_MAX_ELEMENTS
    max_line_length: int = DEFAULT_MAX_LINE_LENGTH
    max_message_length: int = DEFAULT_MAX_MESSAGE_LENGTH
    queued_bytes: int = 1024 * 1024  # commands received, not yet decided
    pending_replies: int = 10_000  # commands forwarded, not yet answered


class Phase(str, enum.Enum):
    ANONYMOUS = "anonymous"  # no identity yet
    LOGGING_IN = "logging in"  # token, session and target login under way
    READY = "ready"  # the relay
    CLOSING = "closing"  # no more commands: what is owed is sent, then the connection closes
    CLOSED = "closed"


@frozen
class Login:
    """A client's login: the connection it names (as the user), its token, and HELLO's protocol (None: AUTH)."""

    user: str
    token: str = field(repr=False)
    protocol: int | None = None
    setname: bytes | None = None


@frozen
class Hello:
    protocol: int | None
    user: bytes | None = None
    token: bytes | None = field(default=None, repr=False)
    setname: bytes | None = None


@frozen
class Verdict:
    """
    The decision on one command: whether it may be forwarded, the target's
    name for it (C{"EXEC"}, C{"CONFIG|SET"}), the glue's C{token} for its
    outcome (an L{hoopgw.sessions.ActionHandle}), and, refused, the reply.
    """

    allowed: bool
    canonical: str
    token: Any = None
    reply: bytes = b""
    # The command has an argument its action's input does not show (a password, a long
    # one): its error replies' text is not recorded, only their code (they may quote it).
    hidden: bool = False


class Masker(Protocol):
    """
    C{masker(value, keep)}: the value as the client may see it, and the
    values masked per mask name (or None); C{keep} leading items of an array
    or push pass as they are.  C{masker.each(values)}: the values of one
    reply (an C{EXEC}'s results), each so, under one budget
    (L{hoopgw_redis.masking.ReplyMasker}).
    """

    def __call__(self, value: Any, keep: int = 0) -> tuple[Any, Mapping[str, int] | None]: ...

    def each(self, values: Sequence[Any]) -> list[tuple[Any, Mapping[str, int] | None]]: ...


class TranscriptLines(Protocol):
    """
    Where the replies go in the session's transcript (L{hoopgw_redis.transcript.Transcript}):
    C{owner} is the command's C{token} (its action), C{"login"}, or C{None}.
    """

    def command(self, owner: Any, text: str, *, refused: bool = False) -> None: ...

    def reply(
        self, owner: Any, value: Any, size: int, masked: Mapping[str, int] | None = None, *, hidden: bool = False
    ) -> None: ...

    def local(self, owner: Any, data: bytes, *, hidden: bool = False) -> None: ...


class Output(Protocol):
    """Where a L{Relay}'s outputs go."""

    def to_client(self, data: bytes) -> None: ...

    def to_target(self, data: bytes) -> None: ...

    def login(self, login: Login) -> None:
        """Authenticate, open the session and log in to the target; answer with logged_in or login_refused."""

    def decide(self, command: Command) -> None:
        """Decide a command (and record it); answer with L{Relay.decided}."""

    def finished(self, token: Any, outcome: Outcome) -> None:
        """A forwarded command's outcome."""

    def close(self) -> None:
        """Close the client connection once what was written is sent."""

    def reading(self, on: bool) -> None:
        """Read from the client, or stop (flow control)."""


def _decimal(data: bytes) -> int | None:
    text = data.decode("latin-1")
    body = text[1:] if text.startswith("-") else text
    if not body.isascii() or not body.isdigit() or len(body) > 19 or (len(body) > 1 and body[0] == "0"):
        return None
    return int(text)


def parse_hello(args: Sequence[bytes]) -> Hello | bytes:
    """
    C{HELLO [protover [AUTH user pass] [SETNAME name]]} as redis-server
    reads it: the request, or the error reply it gets.
    """
    if len(args) < 2:
        return Hello(None)
    version = _decimal(args[1])
    if version is None:
        return error_reply("Protocol version is not an integer or out of range")
    if version not in (2, 3):
        return NOPROTO
    user = token = setname = None
    i = 2
    while i < len(args):
        option, more = keyword(args[i]), len(args) - i - 1
        if option == b"auth" and more >= 2:
            user, token = args[i + 1], args[i + 2]
            i += 3
        elif option == b"setname" and more >= 1:
            setname = args[i + 1]
            i += 2
        else:
            return error_reply(f"Syntax error in HELLO option '{args[i].decode('utf-8', 'replace')}'")
    return Hello(version, user, token, setname)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Attributed) else value


def _total(masked: Mapping[str, int] | None, results: Sequence[Mapping[str, int] | None] | None) -> dict[str, int] | None:
    """The values masked in a reply (an C{EXEC}'s: in all its results)."""
    total = dict(masked) if masked else {}
    for counts in results or ():
        for name, count in (counts or {}).items():
            total[name] = total.get(name, 0) + count
    return total or None


def _outcome(value: Any, size: int, masked: Mapping[str, int] | None = None, *, hidden: bool = False) -> Outcome:
    """
    How a command ended, from its reply as the client got it (masked:
    C{masked} says how many values).  C{hidden}: its command had an
    argument the trail does not show, which an error may quote: the
    error's code only.
    """
    value = _plain(value)
    counts = dict(masked) if masked else None
    if isinstance(value, Error):
        message = value.message.decode("utf-8", "replace")
        code = message.split(" ", 1)[0][:32]
        error = f"{code} (text not recorded: the command has an argument the trail does not show)" if hidden \
            else message[:512]
        return Outcome(status=Status.failed, error=error, code=code, bytes_out=size, masked=counts)
    return Outcome(status=Status.succeeded, bytes_out=size, masked=counts)


# (P|S)(UN)SUBSCRIBE: the kind of confirmation each gets, and the subscriptions it is about.
_PUBSUB = {
    "SUBSCRIBE": b"subscribe",
    "PSUBSCRIBE": b"psubscribe",
    "SSUBSCRIBE": b"ssubscribe",
    "UNSUBSCRIBE": b"unsubscribe",
    "PUNSUBSCRIBE": b"punsubscribe",
    "SUNSUBSCRIBE": b"sunsubscribe",
}
_CONFIRMS = {
    b"subscribe": ("channel", True),
    b"psubscribe": ("pattern", True),
    b"ssubscribe": ("shard", True),
    b"unsubscribe": ("channel", False),
    b"punsubscribe": ("pattern", False),
    b"sunsubscribe": ("shard", False),
}
_MESSAGES = frozenset({b"message", b"pmessage", b"smessage"})
# Out-of-band data's leading items passed unmasked: the kind, and the
# channel or pattern the client subscribed to (clients route messages by it).
_KEEP = {b"message": 2, b"smessage": 2, b"pmessage": 2}


def _confirmation_shaped(items: Sequence[Any], channels: frozenset[bytes]) -> bool:
    """
    Whether items are what redis-server sends to confirm a (un)subscribe:
    the kind, the channel (one of C{channels} when the command named any),
    the subscription count.
    """
    if len(items) != 3 or type(items[2]) is not int:
        return False
    return not channels or items[1] in channels


class _Entry:
    """One reply (or reply run) owed to the client, in order."""

    __slots__ = (
        "token", "canonical", "confirm", "channels", "left", "size", "data", "close", "internal", "db", "owner", "hidden",
    )

    def __init__(self) -> None:
        self.token: Any = None
        self.canonical = ""
        self.confirm: bytes | None = None  # a (un)subscribe: the confirmations it gets
        self.channels: frozenset[bytes] = frozenset()  # ... and the channels its arguments name
        self.left: int | None = 1  # replies to come (None: as many as subscriptions, counted when they start)
        self.size = 0
        self.data: bytes | None = None  # a reply of the gateway's own
        self.close = False  # the connection closes once it is sent
        self.internal: str | None = None  # a command of the gateway's own: what failing it means ("": nothing)
        self.db: tuple[int, int] | None = None  # SELECT: the database before and after
        self.owner: Any = None  # a reply of the gateway's own: whose it is, for the transcript
        self.hidden = False  # its command has an argument the trail does not show (Verdict.hidden)


class Replies:
    """
    Replies matched to commands, in order (see the module's docstring): the
    relay adds what it forwards (L{forward}, L{internal}) and what it
    answers itself (L{local}); L{receive} takes each reply of the target.
    """

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.entries: deque[_Entry] = deque()
        self.pending = 0  # entries that wait for the target
        self.resp = 2
        self.transaction: list[_Entry] | None = None  # queued on the target, once MULTI said OK
        self.subscriptions: dict[str, set[bytes]] = {"channel": set(), "pattern": set(), "shard": set()}

    # -- what is owed ---------------------------------------------------------

    def forward(self, token: Any, canonical: str, args: Sequence[bytes], *, hidden: bool = False) -> _Entry:
        entry = _Entry()
        entry.token = token
        entry.canonical = canonical
        entry.hidden = hidden
        confirm = _PUBSUB.get(canonical)
        if confirm is not None:
            entry.confirm = confirm
            if len(args) > 1:
                entry.left = len(args) - 1  # one confirmation per argument, repeats too
                entry.channels = frozenset(args[1:])
            elif not _CONFIRMS[confirm][1]:
                entry.left = None  # one per subscription, or one if there are none
        self.entries.append(entry)
        self.pending += 1
        return entry

    def internal(self, canonical: str, meaning: str) -> None:
        entry = _Entry()
        entry.canonical = canonical
        entry.internal = meaning
        self.entries.append(entry)
        self.pending += 1

    def local(self, data: bytes, *, close: bool = False, owner: Any = None, hidden: bool = False) -> None:
        """
        A reply of the gateway's own (C{owner}: whose, for the transcript;
        C{hidden}: see L{Verdict.hidden}), in its place in line.
        """
        if close:
            self.relay._closing()  # nothing after it is read
        if not self.entries:
            self.relay._write_local(owner, data, hidden)
            if close:
                self.relay._close_when_sent()
            return
        entry = _Entry()
        entry.data = data
        entry.close = close
        entry.left = 0
        entry.owner = owner
        entry.hidden = hidden
        self.entries.append(entry)

    # -- what the target sends ------------------------------------------------

    def _head(self) -> _Entry | None:
        return self.entries[0] if self.entries else None

    def subscribed(self) -> bool:
        return any(self.subscriptions.values())

    def receive(self, value: Any) -> None:
        kind = None
        if type(value) is Push:
            kind = value.items[0]
        elif self.resp == 2 and type(value) is tuple and value and type(value[0]) is bytes:
            # RESP2 has no pushes: a subscribed client's messages are arrays.
            first = value[0]
            head = self._head()
            if self.subscribed() and first in _MESSAGES:
                kind = first
            elif head is not None and head.confirm == first:
                kind = first
            elif self.subscribed() and first in _CONFIRMS and (head is None or head.confirm is None):
                kind = first
        if kind is not None:
            head = self._head()
            items = value.items if type(value) is Push else value
            if kind in _CONFIRMS:
                # The confirmation the command at the head is waiting for, or None (unsolicited).
                waiting = head if head is not None and head.confirm is not None and kind == head.confirm else None
                if not _confirmation_shaped(items, waiting.channels if waiting is not None else frozenset()):
                    # Something else than a confirmation (a reply out of step, a value that
                    # starts with "subscribe"): which reply is whose is no longer known.
                    self.relay._lost_track(f"a reply beginning with {kind!r} is not a pub/sub confirmation")
                    return
                # Masked too, but for its kind: a value passing as a confirmation is not shown raw.
                data = self.relay._aside(value, 1, waiting)
                if waiting is not None:
                    self._confirmation(waiting, items, data)
                else:
                    self._track(kind, items)  # unsolicited (a shard channel gone, ...)
                    self.relay._write(data)
                return
            self.relay._write(self.relay._aside(value, _KEEP.get(kind, 1)))  # out of band
            return
        head = self._head()
        if head is None or head.data is not None:
            self.relay._lost_track("a reply came from the target with no command waiting for it")
            return
        self._reply(head, value)

    def _track(self, kind: bytes, items: Sequence[Any]) -> None:
        which, adds = _CONFIRMS[kind]
        channel = items[1] if len(items) > 1 else None
        subscriptions = self.subscriptions[which]
        if adds and isinstance(channel, bytes):
            subscriptions.add(channel)
        elif not adds:
            if isinstance(channel, bytes):
                subscriptions.discard(channel)
            if len(items) > 2 and items[2] == 0:
                # Nothing left: (P)UNSUBSCRIBE's count is channels and patterns together.
                for name in (("shard",) if which == "shard" else ("channel", "pattern")):
                    self.subscriptions[name].clear()

    def _confirmation(self, head: _Entry, items: Sequence[Any], data: bytes) -> None:
        confirm = head.confirm
        assert confirm is not None  # (only an entry waiting for confirmations gets here)
        if head.left is None:
            head.left = max(1, len(self.subscriptions[_CONFIRMS[confirm][0]]))
        self._track(confirm, items)
        self.relay._write(data)
        head.size += len(data)
        head.left -= 1
        if head.left <= 0:
            self._done(head, Outcome(status=Status.succeeded, bytes_out=head.size))

    def _done(self, head: _Entry, outcome: Outcome | None) -> None:
        self.entries.popleft()
        self.pending -= 1
        if outcome is not None and head.token is not None:
            self.relay._finished(head.token, outcome)
        self._settle()

    def _reply(self, head: _Entry, value: Any) -> None:
        plain = _plain(value)
        if head.internal is not None:
            if isinstance(plain, Error) and head.internal:
                self.entries.popleft()
                self.pending -= 1
                self.relay._lost_track(f"{head.internal}: {plain.message.decode('utf-8', 'replace')}")
                return
            if head.canonical == "DISCARD":
                self._discard("not run: the transaction was discarded, the gateway refused a command in it")
            self._done(head, None)
            return
        shown, masked, results = self._shown(head, value)
        data = encode(shown)
        self.relay._write(data)
        transcript = self.relay.transcript
        if transcript is not None:
            transcript.reply(head.token, shown, len(data), _total(masked, results), hidden=head.hidden)
        if self.transaction is not None and plain == _QUEUED:
            self.entries.popleft()
            self.pending -= 1
            self.transaction.append(head)
            self._settle()
            return
        outcome = _outcome(shown, len(data), masked, hidden=head.hidden)
        canonical = head.canonical
        ok = type(plain) is SimpleString
        if canonical == "MULTI":
            if ok and self.transaction is None:
                self.transaction = []
        elif canonical == "EXEC":
            if isinstance(plain, Null):
                outcome = Outcome(status=Status.failed, error="a watched key changed: nothing ran", bytes_out=len(data))
            self._settle_transaction(_plain(shown), results)
        elif canonical == "DISCARD":
            if ok:
                self._discard("not run: the transaction was discarded (DISCARD)")
        elif canonical == "RESET":
            self._discard("not run: the transaction was discarded (RESET)")
            for subscriptions in self.subscriptions.values():
                subscriptions.clear()
            self.resp = 2
        elif canonical == "HELLO":
            if not isinstance(plain, Error):
                self.resp = 3 if isinstance(plain, Map) else 2
        elif canonical == "SELECT" and head.db is not None and not ok:
            before, after = head.db
            if self.relay.db == after:
                self.relay.db = before  # the prediction was wrong
        self._done(head, outcome)

    def _shown(self, head: _Entry, value: Any) -> tuple[Any, Mapping[str, int] | None, list[Any] | None]:
        """
        A reply as the client may see it, the values masked in it, and for
        an C{EXEC} of the commands queued, the values masked in each one's
        result (theirs, in their C{action.end}).
        """
        masker = self.relay.masker
        if masker is None:
            return value, None, None
        queued = self.transaction
        if head.canonical == "EXEC" and queued is not None and type(value) is tuple and len(value) == len(queued):
            pairs = masker.each(value)  # one reply: one budget for all its results
            return tuple(shown for shown, _ in pairs), None, [masked for _, masked in pairs]
        shown, masked = masker(value, 0)
        return shown, masked, None

    def _settle_transaction(self, value: Any, masked: Sequence[Mapping[str, int] | None] | None = None) -> None:
        queued, self.transaction = self.transaction or [], None
        if type(value) is tuple and len(value) == len(queued):
            for index, (entry, result) in enumerate(zip(queued, value)):
                counts = masked[index] if masked is not None else None
                self.relay._finished(entry.token, _outcome(result, len(encode(result)), counts, hidden=entry.hidden))
            return
        if isinstance(value, Error):
            why = "not run: " + value.message.decode("utf-8", "replace")[:480]
        elif isinstance(value, Null):
            why = "not run: a watched key changed"
        else:
            why = f"outcome unknown: EXEC answered something else than {len(queued)} results"
        for entry in queued:
            self.relay._finished(entry.token, Outcome(status=Status.failed, error=why))

    def _discard(self, why: str) -> None:
        queued, self.transaction = self.transaction or [], None
        for entry in queued:
            self.relay._finished(entry.token, Outcome(status=Status.failed, error=why))

    def _settle(self) -> None:
        """Send the gateway's own replies that are next in line."""
        entries = self.entries
        while entries and (data := entries[0].data) is not None:
            entry = entries.popleft()
            self.relay._write_local(entry.owner, data, entry.hidden)
            if entry.close:
                self.relay._close_when_sent()

    def abandon(self, why: str) -> None:
        """No reply will come (a side left): every outcome still owed is recorded as failed."""
        entries, self.entries = self.entries, deque()
        self.pending = 0
        for entry in entries:
            if entry.token is not None:
                self.relay._finished(entry.token, Outcome(status=Status.failed, error=why))
        self._discard("not run: " + why)


class _Fault:
    """A protocol error in the client's stream: answered in order, then the connection closes."""

    __slots__ = ("reply",)

    def __init__(self, reply: bytes) -> None:
        self.reply = reply


class Relay:
    """See the module's docstring."""

    def __init__(self, out: Output, *, limits: RelayLimits = RelayLimits()) -> None:
        self.out = out
        self.limits = limits
        self.parser = RequestParser(
            max_bulk_length=limits.preauth_bulk,
            max_elements=limits.preauth_elements,
            max_line_length=limits.preauth_line,
            max_message_length=limits.preauth_bytes,
        )
        self.phase = Phase.ANONYMOUS
        self.replies = Replies(self)
        self.queue: deque[Command | _Fault] = deque()
        self.queued_bytes = 0
        self.received = 0  # bytes before the login succeeded
        self.failures = 0  # failed logins
        self.deciding: Command | None = None
        self.multi = False  # a MULTI was forwarded (as far as the gateway can tell before the replies)
        self.dirty = False  # ... and a command in it was refused
        self.db = 0
        self.initial_db = 0
        self.relogin: tuple[tuple[str, bytes, str], ...] = ()
        self._draining = False
        self._depth = 0
        self._client: list[bytes] = []
        self._target: list[bytes] = []
        self._close = False
        self._reading = True
        # Replies and out-of-band data pass it on their way to the client (None: nothing is masked).
        self.masker: Masker | None = None
        self._masked_aside: dict[str, int] = {}
        # The session's transcript (None: none kept): the replies as the client gets them.
        self.transcript: TranscriptLines | None = None

    # -- batching: each entry point writes once -------------------------------

    def _enter(self) -> None:
        self._depth += 1

    def _leave(self) -> None:
        self._depth -= 1
        if self._depth:
            return
        if self._target:
            data, self._target = b"".join(self._target), []
            self.out.to_target(data)
        if self._client:
            data, self._client = b"".join(self._client), []
            self.out.to_client(data)
        if self._close and self.phase is not Phase.CLOSED:
            self.phase = Phase.CLOSED
            self.queue.clear()
            self.out.close()
            return
        pause = (
            self.queued_bytes > self.limits.queued_bytes or self.replies.pending > self.limits.pending_replies
        )
        if pause == self._reading and self.phase is not Phase.CLOSED:
            self._reading = not pause
            self.out.reading(self._reading)

    def _write(self, data: bytes) -> None:
        self._client.append(data)

    def _send(self, data: bytes) -> None:
        self._target.append(data)

    def _write_local(self, owner: Any, data: bytes, hidden: bool = False) -> None:
        """A reply of the gateway's own, to the client and in the transcript."""
        self._client.append(data)
        if self.transcript is not None:
            self.transcript.local(owner, data, hidden=hidden)

    def _aside(self, value: Any, keep: int, entry: _Entry | None = None) -> bytes:
        """
        Out-of-band data (a pub/sub message, a push) as the client may see
        it.  What is masked in it is no command's reply: it is counted in
        the next command's outcome, as PostgreSQL's notifications are.
        (A confirmation's too: C{entry}, its command's.)
        """
        masker = self.masker
        masked = None
        if masker is None:
            shown = value
        else:
            shown, masked = masker(value, keep)
            if masked:
                aside = self._masked_aside
                for name, count in masked.items():
                    aside[name] = aside.get(name, 0) + count
        data = encode(shown)
        if self.transcript is not None:
            if entry is None:
                self.transcript.reply(None, shown, len(data), masked)
            else:
                self.transcript.reply(entry.token, shown, len(data), masked, hidden=entry.hidden)
        return data

    def _finished(self, token: Any, outcome: Outcome) -> None:
        aside = self._masked_aside
        if aside:
            self._masked_aside = {}
            masked = dict(outcome.masked or {})
            for name, count in aside.items():
                masked[name] = masked.get(name, 0) + count
            outcome = evolve(outcome, masked=masked)
        self.out.finished(token, outcome)

    def _closing(self) -> None:
        if self.phase is not Phase.CLOSED:
            self.phase = Phase.CLOSING

    def _close_when_sent(self) -> None:
        self._close = True
        self._closing()

    # -- the client -----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.phase in (Phase.CLOSING, Phase.CLOSED):
            return
        self._enter()
        try:
            if self.phase in (Phase.ANONYMOUS, Phase.LOGGING_IN):
                self.received += len(data)
                if self.received > self.limits.preauth_bytes:
                    self._fatal(error_reply(f"hoopgw: more than {self.limits.preauth_bytes} bytes before authentication"))
                    return
            try:
                commands: list[Command | _Fault] = list(self.parser.feed(data))
            except ProtocolError as e:
                commands = list(e.messages)
                commands.append(_Fault(error_reply(f"Protocol error: {e}")))
            for command in commands:
                if type(command) is Command:
                    self.queued_bytes += sum(map(len, command.args))
                self.queue.append(command)
            self._drain()
        finally:
            self._leave()

    def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            queue = self.queue
            while queue and self.deciding is None:
                phase = self.phase
                if phase is Phase.LOGGING_IN:
                    break
                if phase is Phase.CLOSING or phase is Phase.CLOSED:
                    queue.clear()
                    self.queued_bytes = 0
                    break
                item = queue.popleft()
                if isinstance(item, _Fault):
                    self.replies.local(item.reply, close=True)
                    continue
                self.queued_bytes -= sum(map(len, item.args))
                if phase is Phase.ANONYMOUS:
                    self._anonymous(item)
                else:
                    self._ready(item)
        finally:
            self._draining = False

    def _anonymous(self, command: Command) -> None:
        name = command.name
        args = command.args
        if name == "AUTH":
            if len(args) == 3:
                self._login(Login(_text(args[1]), _text(args[2])))
            elif len(args) == 2:
                self._login(Login("", _text(args[1])))  # no connection named: refused, and recorded
            else:
                self.replies.local(error_reply("syntax error"))
        elif name == "HELLO":
            hello = parse_hello(args)
            if isinstance(hello, bytes):
                self.replies.local(hello)
            elif hello.user is None or hello.token is None:
                self.replies.local(NOAUTH_HELLO)
            else:
                self._login(Login(_text(hello.user), _text(hello.token), hello.protocol, hello.setname))
        elif name == "QUIT":
            self.replies.local(OK, close=True)
        else:
            self.replies.local(NOAUTH)

    def _login(self, login: Login) -> None:
        self.phase = Phase.LOGGING_IN
        self.out.login(login)

    def logged_in(self, reply: bytes, *, protocol: int, db: int, relogin: Sequence[tuple[str, bytes, str]] = ()) -> None:
        """
        The login succeeded: C{reply} is the client's answer (C{+OK}, or the
        target's C{HELLO} reply); C{relogin} the commands (name, bytes, what
        failing means) that log in to the target again after a C{RESET}.
        """
        if self.phase is not Phase.LOGGING_IN:
            return
        self._enter()
        try:
            self.phase = Phase.READY
            limits = self.limits
            parser = self.parser
            parser.max_bulk_length = limits.max_bulk_length
            parser.max_elements = limits.max_elements
            parser.max_line_length = limits.max_line_length
            parser.max_message_length = limits.max_message_length
            self.replies.resp = protocol
            self.db = self.initial_db = db
            self.relogin = tuple(relogin)
            self.replies.local(reply, owner="login")
            self._drain()
        finally:
            self._leave()

    def login_refused(self, reply: bytes, *, close: bool = False) -> None:
        """The login failed: C{reply} says why; the client may try again (up to a limit) unless C{close}."""
        if self.phase is not Phase.LOGGING_IN:
            return
        self._enter()
        try:
            self.failures += 1
            self.replies.local(reply, close=close or self.failures >= self.limits.auth_failures)
            if self.phase is Phase.LOGGING_IN:
                self.phase = Phase.ANONYMOUS
            self._drain()
        finally:
            self._leave()

    def _ready(self, command: Command) -> None:
        if command.name == "QUIT":
            if self.transcript is not None:
                self.transcript.command(None, "QUIT")  # (its arguments, if any, are ignored)
            self.replies.local(OK, close=True)
            return
        self.deciding = command
        self.out.decide(command)

    def refusal(self, canonical: str, args: Sequence[bytes]) -> str | None:
        """
        Why the gateway refuses a command before policy (C{canonical}: the
        target's name, upper-case), in the state the commands before it
        leave; C{None} if it does not.
        """
        base = canonical.partition("|")[0]
        typed = keyword(args[0]) if args else b""
        if base == "AUTH" or typed == b"auth":
            return ("this connection is already logged in; its identity and connection cannot change "
                    "(open another connection to log in again)")
        if (base == "HELLO" or typed == b"hello") and len(args) > 2:
            # Only the protocol may change: AUTH would switch the target's user and SETNAME
            # the gateway's name for the connection; refusing every option leaves no spelling
            # of them (AUTH\0, ...) for the gateway to misread.
            return ("this connection is already logged in: HELLO takes only the protocol version "
                    "(its identity and connection name cannot change; open another connection)")
        if base == "MONITOR":
            return ("MONITOR is not relayed: it streams the commands of every client of the server, "
                    "other sessions' included, which the gateway can neither attribute nor decide")
        if base in ("SYNC", "PSYNC", "REPLCONF"):
            return f"{base} is not relayed: a replication stream carries the whole dataset past every decision"
        if canonical == "CLIENT|REPLY" and (len(args) != 3 or keyword(args[2]) != b"on"):
            # Only ON is harmless; anything else (OFF, SKIP, SKIP\0, ...) may stop replies
            # the gateway counts on to match each reply to its command.
            return "only CLIENT REPLY ON is relayed: the gateway matches every reply to its command"
        if self.multi and (base in _PUBSUB or base == "HELLO"):
            return f"{base} inside MULTI is not relayed: its replies would be nested in EXEC's"
        return None

    def decided(self, verdict: Verdict) -> None:
        """The decision on the command L{Output.decide} was asked for."""
        command, self.deciding = self.deciding, None
        if command is None:
            return
        if self.phase is not Phase.READY:
            if verdict.allowed and verdict.token is not None:
                self._finished(verdict.token, Outcome(status=Status.failed, error="not sent: the connection closed first"))
            return
        self._enter()
        try:
            base = verdict.canonical.partition("|")[0]
            if not verdict.allowed:
                if self.multi:
                    self.dirty = True  # as redis-server flags a transaction whose command it refuses
                self.replies.local(verdict.reply, owner=verdict.token, hidden=verdict.hidden)
            elif base == "EXEC" and self.multi and self.dirty:
                self.multi = self.dirty = False
                self._send(encode_command(b"DISCARD"))
                # (An error is no matter: a MULTI the target refused left nothing to discard.)
                self.replies.internal("DISCARD", "")
                self.replies.local(EXECABORT, owner=verdict.token, hidden=verdict.hidden)
                self._finished(verdict.token, Outcome(
                    status=Status.failed, code="EXECABORT",
                    error="transaction discarded: the gateway refused a command in it"))
            else:
                self._forward(command, verdict, base)
            self._drain()
        finally:
            self._leave()

    def _forward(self, command: Command, verdict: Verdict, base: str) -> None:
        self._send(encode(command))
        entry = self.replies.forward(verdict.token, verdict.canonical, command.args, hidden=verdict.hidden)
        if base == "MULTI":
            self.multi = True
        elif base in ("EXEC", "DISCARD"):
            self.multi = self.dirty = False
        elif base == "RESET":
            # The target's RESET also logs the connection out: log in again before anything else.
            self.multi = self.dirty = False
            self.db = self.initial_db
            for name, data, meaning in self.relogin:
                self._send(data)
                self.replies.internal(name, meaning)
        elif base == "SELECT" and not self.multi and len(command.args) == 2:
            db = _decimal(command.args[1])
            if db is not None and db >= 0:
                entry.db = (self.db, db)
                self.db = db

    # -- the target -----------------------------------------------------------

    def target_replies(self, values: Sequence[Any]) -> None:
        """Replies (and out-of-band data) from the target, in order."""
        if self.phase is Phase.CLOSED:
            return
        self._enter()
        try:
            receive = self.replies.receive
            for value in values:
                receive(value)
                if self._close:
                    # The connection closes once what is written is sent (QUIT's +OK, a fatal
                    # error): nothing more of the batch goes to the client after it.
                    break
        finally:
            self._leave()

    # -- ends -----------------------------------------------------------------

    def _lost_track(self, why: str) -> None:
        """The gateway no longer knows which reply is whose: fail closed."""
        self._fatal(error_reply(f"hoopgw: {why}; the connection is closed"), why=why)

    def _fatal(self, reply: bytes, *, why: str | None = None) -> None:
        self._write_local(None, reply)
        self.replies.abandon(why or reply[1:].decode("utf-8", "replace").strip())
        self._close_when_sent()

    def fail(self, reply: bytes, why: str) -> None:
        """End now, telling the client C{reply} (the audit log is down, a deadline passed, ...)."""
        if self.phase is Phase.CLOSED:
            return
        self._enter()
        try:
            self._fatal(reply, why=why)
        finally:
            self._leave()

    def target_lost(self, why: str) -> None:
        """The target's connection ended."""
        if self.phase is Phase.CLOSED:
            return
        self.fail(error_reply(f"hoopgw: the target closed the connection ({why})"),
                  f"the target closed the connection before replying ({why})")

    def connection_lost(self) -> None:
        """The client's connection ended: nothing more is sent; outcomes still owed are recorded."""
        self.phase = Phase.CLOSED
        self.queue.clear()
        self.replies.abandon("the client left before the reply (the command was sent; whether it ran is not known)")
