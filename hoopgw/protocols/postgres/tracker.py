"""
The server's protocol state as the gateway forwards to it: which answer
belongs to which message, when the server skips to Sync, when it reads the
client's messages as COPY data, and what each statement and portal name
holds.  Pure: no sockets, no Deferreds; the front end feeds it what it
forwards and what the server answers (the shape of C{ssh/sftp_filter.py}).

The model follows PostgreSQL's C{PostgresMain} (PostgreSQL 15 docs,
"Message Flow"):

  - Each message the server answers gets an L{Expect}ed answer, in order:
    a Query's statements (C{CommandComplete} each) then its
    C{ReadyForQuery}; Parse, Bind, Close (C{...Complete}); Describe
    (C{RowDescription} or C{NoData}); Execute (C{CommandComplete},
    C{EmptyQueryResponse} or C{PortalSuspended}); FunctionCall (its
    response, then C{ReadyForQuery}); Sync (C{ReadyForQuery}).  Flush,
    Terminate and COPY data are not answered.
  - An error in an extended-protocol message makes the server skip every
    message up to the next Sync (L{Tracker.skipping} until one is
    forwarded); an error in a Query skips the rest of that Query.
  - A C{COPY ... FROM STDIN} puts the server in copy-in mode, where it
    reads CopyData until CopyDone or CopyFail, ignores Sync and Flush,
    and fails on anything else; an error ends copy-in at once.  Whether a
    COPY gets that far only the server's answer tells, so the front end
    holds the client's next messages (L{Tracker.holding}) until it comes.
  - A server answer that fits none of this is a desync (L{Desync}): the
    gateway's view is no longer the server's, and the session must end.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any, Callable, cast

from attrs import define, field, frozen

from hoopgw.interfaces import IActionHandle
from hoopgw.model import Outcome, Status
from hoopgw.protocols.postgres.sql import PreparedStatements, StatementInfo
from hoopgw.protocols.postgres import codec

__all__ = ["Copy", "Desync", "ends_portals", "Expect", "NameChange", "Pending", "Portal", "Tracker", "rows_from_tag"]

_COUNTED_TAGS = ("SELECT", "INSERT", "UPDATE", "DELETE", "COPY", "MERGE", "FETCH", "MOVE")


def rows_from_tag(tag: str) -> int | None:
    """The row count in a CommandComplete tag ("INSERT 0 3" -> 3)."""
    command, _, rest = tag.partition(" ")
    if command in _COUNTED_TAGS and rest:
        try:
            return int(rest.rsplit(" ", 1)[-1])
        except ValueError:
            return None
    return None


class Desync(Exception):
    """The server answered in a way the gateway's model does not allow."""


class Expect(enum.Enum):
    """What answers one forwarded message (see the module docstring)."""

    # Set on each member below (annotations only: not members).
    accepts: frozenset[type[codec.Message] | bytes]  # the answers that complete it
    extended: bool  # an error in it skips the rest to Sync
    runs_code: bool  # it can run code on the server
    ends_group: bool  # its answer is a ReadyForQuery

    STATEMENT = "statement"  # one statement of a Query
    END = "end"  # the ReadyForQuery after a Query or a FunctionCall
    PARSE = "parse"
    BIND = "bind"
    DESCRIBE = "describe"
    EXECUTE = "execute"
    CLOSE = "close"
    CALL = "call"  # a FunctionCall
    SYNC = "sync"


_FUNCTION_CALL_RESPONSE = b"V"

# What each expectation accepts as its answer, and its traits, kept on the
# members themselves: an Enum member hashes in Python, and this runs for
# every message.
for _expect, _accepts in (
    (Expect.STATEMENT, (codec.CommandComplete,)),
    (Expect.EXECUTE, (codec.CommandComplete, codec.EmptyQueryResponse, codec.PortalSuspended)),
    (Expect.PARSE, (codec.ParseComplete,)),
    (Expect.BIND, (codec.BindComplete,)),
    (Expect.CLOSE, (codec.CloseComplete,)),
    (Expect.DESCRIBE, (codec.RowDescription, codec.NoData)),
    (Expect.CALL, (_FUNCTION_CALL_RESPONSE,)),
    (Expect.SYNC, (codec.ReadyForQuery,)),
    (Expect.END, (codec.ReadyForQuery,)),
):
    _expect.accepts = frozenset(_accepts)
    # An error in an extended-protocol message skips the rest to Sync.
    _expect.extended = _expect in (Expect.PARSE, Expect.BIND, Expect.DESCRIBE, Expect.EXECUTE, Expect.CLOSE)
    # Messages that can run code on the server (settings may change under them).
    _expect.runs_code = _expect in (Expect.STATEMENT, Expect.BIND, Expect.EXECUTE, Expect.CALL)
    _expect.ends_group = _expect in (Expect.SYNC, Expect.END)

# Server messages that complete some expectation (RowDescription only a
# Describe's: in a Query it precedes the rows).
_COMPLETIONS = frozenset[type[codec.Message] | bytes]().union(*(e.accepts for e in Expect)) - {codec.RowDescription}


@frozen
class Portal:
    """A portal as bound: the statement's facts at Bind time, not its name."""

    statement: str
    info: StatementInfo | None  # None: the statement was unknown at Bind
    parameters: tuple[bytes | None, ...]
    formats: tuple[int, ...]


# Statements after which the portals the gateway knew may be gone, or others
# there under their names: cursors declared or closed in SQL, transactions
# (and savepoints rolled back to) ending, DISCARD ALL.
_ENDS_PORTALS = frozenset(
    {"declare", "close", "commit", "rollback", "rollback_to_savepoint", "prepare_transaction", "discard"}
)


def ends_portals(info: StatementInfo) -> bool:
    return not _ENDS_PORTALS.isdisjoint(info.kinds)


@frozen
class NameChange:
    """
    A change to the statement/portal names that a forwarded message makes,
    applied once the server has answered it without an error.
    """

    what: str  # "parse", "bind", "close-statement", "close-portal", "sql" (a statement of a Query)
    name: str = ""
    value: Any = None  # StatementInfo (parse, sql) or Portal (bind)

    def apply(self, prepared: PreparedStatements, portals: dict[str, Portal]) -> None:
        what = self.what
        if what == "parse":
            prepared.register(self.name, self.value)
        elif what == "bind":
            portals[self.name] = self.value
        elif what == "close-statement":
            prepared.forget(self.name)
        elif what == "close-portal":
            portals.pop(self.name, None)
        elif what == "sql":
            prepared.observe(self.value)
            if self.ends_portals:
                portals.clear()

    def touches(self, kind: str | None, name: str | None) -> bool:
        """Whether this change can alter what statement or portal C{name} holds (L{Tracker.names_uncertain})."""
        what = self.what
        if what == "sql":
            info = self.value
            if kind != "statement" and self.ends_portals:
                return True
            if kind == "portal" or not info.kinds or info.kinds[0] not in ("prepare", "deallocate", "discard"):
                return False
            # DEALLOCATE ALL and DISCARD ALL name none: every statement.
            return name is None or info.prepared_name is None or info.prepared_name == name
        changes_portal = what in ("bind", "close-portal")
        if kind is not None and (kind == "portal") != changes_portal:
            return False
        return name is None or self.name == name

    @property
    def ends_portals(self) -> bool:
        """A statement of a Query after which the gateway no longer knows the portals (L{ends_portals})."""
        return self.what == "sql" and ends_portals(self.value)


@define(eq=False, slots=True)
class Pending:
    """One forwarded message awaiting its answer."""

    expect: Expect
    handle: IActionHandle | None = None  # the action whose outcome this answer gives
    marker: str | None = None  # a refused message's stand-in
    denial: codec.ErrorResponse | None = None
    rows: int = 0
    change: NameChange | None = None
    copy_in: bool = False  # may put the server in copy-in mode
    replaces: IActionHandle | None = None  # a Bind's: the action of the portal it replaces, never executed
    own: bool = False  # the gateway's own message (a Describe for masking): its answer is not the client's
    masked: dict[str, int] | None = None  # values masked in its answer, per mask


class Copy(enum.Enum):
    NONE = "none"
    IN = "in"  # the server reads the client's messages as COPY data


@define(eq=False)
class Tracker:
    """
    The server's protocol state (module docstring).  C{finish(handle,
    outcome)} is called for each action whose outcome an answer gives.
    """

    finish: Callable[[IActionHandle, Outcome], object]
    expect: deque[Pending] = field(factory=deque)
    skipping: bool = False  # the server skips extended messages until the next Sync
    copy: Copy = Copy.NONE
    awaiting_copy: int = 0  # forwarded statements that may yet start copy-in
    unsettled: int = 0  # code-running messages forwarded since the server was last idle
    changes: int = 0  # entries in expect that change names
    # Names as the server confirmed them; the view adds every change
    # forwarded and not yet answered, in order.
    prepared: PreparedStatements = field(factory=PreparedStatements)
    portals: dict[str, Portal] = field(factory=dict)
    _view_prepared: PreparedStatements = field(factory=PreparedStatements)
    _view_portals: dict[str, Portal] = field(factory=dict)
    _view_stale: bool = False
    # Portals bound and not yet executed: the action their Bind started.
    bound: dict[str, IActionHandle] = field(factory=dict)

    # -- the client side: what is forwarded ------------------------------------

    @property
    def holding(self) -> bool:
        """Forward nothing more until the server says whether a COPY started."""
        return self.awaiting_copy > 0 and self.copy is Copy.NONE

    @property
    def settled(self) -> bool:
        """Nothing forwarded since the server was last idle can have changed a setting."""
        return self.unsettled == 0

    def forward(self, pending: Pending) -> None:
        """
        C{pending}'s message is being forwarded (in order).  An
        extended-protocol message forwarded while the server skips to Sync
        (an earlier message of its batch failed while this one was being
        decided) gets no answer: it is accounted as skipped at once.
        """
        if self.skipping and pending.expect.extended:
            if pending.handle is not None:
                self.finish(
                    pending.handle,
                    Outcome(status=Status.failed, error="not run: an earlier statement in the same batch failed"),
                )
            return
        self.expect.append(pending)
        if pending.expect.runs_code:
            self.unsettled += 1
        if pending.copy_in:
            self.awaiting_copy += 1
        change = pending.change
        if change is not None:
            self.changes += 1
            if not self._view_stale:
                change.apply(self._view_prepared, self._view_portals)
            if change.ends_portals:
                bound, self.bound = self.bound, {}
                for handle in bound.values():
                    self._unexecuted(handle, "closed by a later statement before it was executed")
        if pending.expect is Expect.SYNC:
            self.skipping = False

    @property
    def at_batch_end(self) -> bool:
        """The next answer due is a batch's ReadyForQuery (an error now is its commit's)."""
        return bool(self.expect) and self.expect[0].expect.ends_group

    def names_uncertain(self, kind: str | None = None, name: str | None = None) -> bool:
        """
        Whether what a name holds depends on a change still unanswered in an
        earlier batch (before a Sync, or in an earlier Query): whether it
        took, only its answer tells, and the server does not skip what
        follows that batch if it failed.  A message that uses the name must
        wait for the answer.  Within one batch the view is right either way
        (after a failure the server skips the rest of the batch), so a later
        change to the same name in the open batch settles it.

        @param kind: C{"statement"} or C{"portal"}; C{None}: either.
        @param name: the name; C{None}: any name of that kind.
        """
        if not self.changes:
            return False
        crossed = False  # a batch end lies between the entry and now
        for pending in reversed(self.expect):
            if pending.expect.ends_group:
                crossed = True
                continue
            change = pending.change
            if change is None or not change.touches(kind, name):
                continue
            if crossed:
                return True
            if name is not None:
                return False  # the latest change to it is in the open batch
        return False

    def forward_stand_in(self, pending: Pending) -> None:
        """
        A refused extended-protocol message's stand-in is being forwarded: it
        fails on the server, which then skips to Sync, so the gateway stops
        forwarding the batch here.
        """
        self.forward(pending)
        self.skipping = True

    def copy_ended(self) -> None:
        """The client's CopyDone or CopyFail is being forwarded."""
        self.copy = Copy.NONE

    def view(self) -> tuple[PreparedStatements, dict[str, Portal]]:
        """Statements and portals as a message forwarded now will find them."""
        if self._view_stale:
            prepared, portals = self.prepared.copy(), dict(self.portals)
            for pending in self.expect:
                if pending.change is not None:
                    pending.change.apply(prepared, portals)
            self._view_prepared, self._view_portals = prepared, portals
            self._view_stale = False
        return self._view_prepared, self._view_portals

    def forward_bind(self, portal: str, pending: Pending) -> None:
        """
        A Bind of C{portal} starting C{pending.handle}'s action is being
        forwarded.  The unnamed portal's previous action, never executed, ends
        once the server has answered this Bind (its own Bind's answer, which
        comes first, may still end it as failed).
        """
        if self.skipping:
            self.forward(pending)  # skipped: the portal keeps what it held
            return
        pending.replaces = self.bound.pop(portal, None)
        if pending.handle is not None:
            self.bound[portal] = pending.handle
        self.forward(pending)

    def take_bound(self, portal: str) -> IActionHandle | None:
        """The action started by C{portal}'s Bind, for its first Execute (or C{None})."""
        return self.bound.pop(portal, None)

    # -- the server side: its answers ------------------------------------------

    def count_rows(self, rows: int) -> None:
        if self.expect:
            self.expect[0].rows += rows

    def count_masked(self, counts: dict[str, int]) -> None:
        """Values masked in the answer now arriving, per mask (its action.end says how many)."""
        if not self.expect:
            return
        head = self.expect[0]
        if head.masked is None:
            head.masked = counts
        else:
            for name, count in counts.items():
                head.masked[name] = head.masked.get(name, 0) + count

    def answer(self, message: codec.Message) -> codec.Message | None:
        """
        Account for one server message; return what the client gets in its
        place (the gateway's own error for a refused message's stand-in;
        C{None} for the answer to the gateway's own Describe).  Raises
        L{Desync}.
        """
        kind: type[codec.Message] | bytes = type(message)
        if kind is codec.GenericMessage:
            if cast(codec.GenericMessage, message).tag != _FUNCTION_CALL_RESPONSE:
                return message
            kind = _FUNCTION_CALL_RESPONSE
        if kind is codec.ErrorResponse:
            return self._error(cast(codec.ErrorResponse, message))
        if kind in _COMPLETIONS or (kind is codec.RowDescription and self._head_is(Expect.DESCRIBE)):
            if (kind is codec.RowDescription or kind is codec.NoData) and self.expect and self.expect[0].own:
                self._complete(kind, message)
                return None
            self._complete(kind, message)
        elif kind is codec.CopyInResponse:
            if not self.expect or not self.expect[0].copy_in or self.copy is Copy.IN:
                raise Desync("the server started a COPY FROM STDIN the gateway did not expect")
            self.expect[0].copy_in = False
            self.awaiting_copy -= 1
            self.copy = Copy.IN
        elif kind is codec.CopyBothResponse:
            raise Desync("the server started a COPY BOTH (replication), which hoopgw does not relay")
        return message

    def _head_is(self, expect: Expect) -> bool:
        return bool(self.expect) and self.expect[0].expect is expect

    def _complete(self, kind: type[codec.Message] | bytes, message: codec.Message) -> None:
        if not self.expect:
            raise Desync(f"the server sent {_name(kind)} with nothing outstanding")
        head = self.expect[0]
        if kind is codec.EmptyQueryResponse and head.expect is Expect.END:
            return  # an empty Query: its only answer before ReadyForQuery
        if kind not in head.expect.accepts:
            raise Desync(f"the server sent {_name(kind)} where the gateway expected the answer to a {head.expect.value}")
        self.expect.popleft()
        change = head.change
        if change is not None or head.copy_in or head.replaces is not None:
            self._settle(head)
            if change is not None:
                change.apply(self.prepared, self.portals)
        expect = head.expect
        if expect.ends_group:
            if not self.expect:
                self.unsettled = 0
            if cast(codec.ReadyForQuery, message).status == "I":  # (ends_group: accepts only ReadyForQuery)
                # Outside a transaction the server holds no portal.
                self._portals_ended()
            return
        if expect is Expect.CLOSE and head.change is not None and head.change.what == "close-portal":
            handle = self.bound.pop(head.change.name, None)
            if handle is not None:
                self._unexecuted(handle, "closed before it was executed")
        if head.handle is not None and expect is not Expect.BIND:
            rows = rows_from_tag(cast(codec.CommandComplete, message).tag) if kind is codec.CommandComplete else None
            if rows is None:
                rows = head.rows or None
            self.finish(head.handle, Outcome(status=Status.succeeded, rows=rows, masked=head.masked))

    def _error(self, error: codec.ErrorResponse) -> codec.Message:
        if self.copy is Copy.IN:
            self.copy = Copy.NONE  # an error ends copy-in at once
        if not self.expect or self.expect[0].expect.ends_group:
            # Not a message's answer: a commit at Sync or at a Query's end
            # failed, or the server reports on its own (FATAL, shutdown).
            return error
        head = self.expect.popleft()
        self._settle(head)
        reply: codec.Message = error
        if head.marker is not None and head.denial is not None and head.marker in (error.message or ""):
            reply = head.denial  # (a stand-in's marker comes with its denial)
        elif head.handle is not None:
            self.finish(head.handle, Outcome(status=Status.failed, error=error.message, code=error.code, masked=head.masked))
        if head.change is not None:
            self._view_stale = True
        if head.expect.extended:
            self._skip(lambda p: p.expect is not Expect.SYNC)
            if not self.expect:
                self.skipping = True  # the Sync that ends it is still to come
        elif head.expect is Expect.STATEMENT:
            self._skip(lambda p: p.expect is Expect.STATEMENT)
        return reply

    def _skip(self, skipped: Callable[[Pending], bool]) -> None:
        """Entries the server skips after an error: they get no answer."""
        while self.expect and skipped(self.expect[0]):
            pending = self.expect.popleft()
            self._settle(pending)
            if pending.change is not None:
                self._view_stale = True
            if pending.handle is not None:
                self.finish(
                    pending.handle,
                    Outcome(status=Status.failed, error="not run: an earlier statement in the same batch failed"),
                )

    def _settle(self, pending: Pending) -> None:
        """What an answered (or skipped) entry settles besides its own outcome."""
        if pending.change is not None:
            self.changes -= 1
            if pending.change.ends_portals:
                # Cleared whether or not the statement succeeded: a portal the
                # gateway forgets is judged as unknown, never as what it held.
                self.portals.clear()
        if pending.replaces is not None:
            self._unexecuted(pending.replaces, "replaced by another Bind before it was executed")
        if pending.copy_in:
            pending.copy_in = False
            self.awaiting_copy -= 1

    def _portals_ended(self) -> None:
        if self.portals:
            self.portals.clear()
            self._view_stale = True
        if self.bound and not any(p.expect is Expect.BIND for p in self.expect):
            bound, self.bound = self.bound, {}
            for handle in bound.values():
                self._unexecuted(handle, "the transaction ended before it was executed")

    def _unexecuted(self, handle: IActionHandle, why: str) -> None:
        # The planner ran at Bind (it may call functions), so the action
        # happened even though no Execute followed.
        self.finish(handle, Outcome(status=Status.succeeded, error=f"portal {why}"))

    def close(self, why: str) -> None:
        """The connection ended: whatever is outstanding gets no answer."""
        outcome = Outcome(status=Status.failed, error=why)
        for pending in self.expect:
            for handle in (pending.handle, pending.replaces):
                if handle is not None:
                    self.finish(handle, outcome)
        self.expect.clear()
        self.changes = 0
        for handle in self.bound.values():
            self.finish(handle, outcome)
        self.bound.clear()


def _name(kind: type[codec.Message] | bytes) -> str:
    return "FunctionCallResponse" if isinstance(kind, bytes) else kind.__name__
