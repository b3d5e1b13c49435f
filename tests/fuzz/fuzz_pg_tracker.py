"""
Fuzz the PostgreSQL protocol tracker (hoopgw.protocols.postgres.tracker).

The input is a script of operations, one byte each (some followed by
argument bytes), played against one L{Tracker} the way the front end
drives it (frontend.py): the client's messages are forwarded as their
L{Pending} entries, never while the tracker is holding for a COPY, only
COPY's end during copy-in, no extended message while the server skips to
Sync; the server's messages, taken from a table of real answers or parsed
from the input by the codec's L{BackendParser}, are answered (DataRows
counted, as the front end does).  One operation forwards any entry
whatever the state, beyond what the front end does (without an action,
so that every outcome is still owed).  The session ends at a L{Desync} or
at the end of the script, with L{Tracker.close}.

Checked: the only exception is L{Desync}; C{awaiting_copy} and
C{unsettled} never go negative and C{awaiting_copy} is the number of
entries that may still start copy-in; the queue never holds more entries
than were forwarded; C{answer} returns the server's message or the
gateway's own denial; and once closed, every action the tracker was given
has had its outcome reported.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz._fuzzing import Input, check, fuzz, instrumented

with instrumented(__name__):
    from hoopgw.model import Outcome
    from hoopgw.protocols.postgres.sql import statement_info
    from hoopgw.protocols.postgres import codec
    from hoopgw.protocols.postgres.tracker import Copy, Desync, Expect, NameChange, Pending, Portal, Tracker

MARKERS = tuple(f"hoopgw_refused_{i}" for i in range(4))
PORTALS = ("", "p1", "p2")
STATEMENTS = ("", "s1", "s2")
# Statements as the front end classifies them (a COPY FROM STDIN may start copy-in).
INFOS = tuple(
    statement_info(text)
    for text in ("SELECT 1", "COPY t FROM STDIN", "PREPARE s1 AS SELECT 1", "DEALLOCATE s1", "DISCARD ALL",
                 "INSERT INTO t VALUES (1)")
)


def _error(message: str, code: str = "42601", severity: str = "ERROR") -> codec.ErrorResponse:
    return codec.error_response(severity, code, message)


# What a server answers, built with the codec and parsed back (so each has its raw bytes).
_ANSWERS_BUILT = (
    codec.CommandComplete("SELECT 1"),
    codec.CommandComplete("INSERT 0 3"),
    codec.CommandComplete("COPY 2"),
    codec.CommandComplete("SET"),
    codec.CommandComplete("PREPARE"),
    codec.CommandComplete("DEALLOCATE"),
    codec.ReadyForQuery("I"),
    codec.ReadyForQuery("T"),
    codec.ReadyForQuery("E"),
    _error('syntax error at or near "x"'),
    _error(f'prepared statement "{MARKERS[0]}" does not exist', "26000"),
    _error(f'portal "{MARKERS[1]}" does not exist', "34000"),
    _error(f'prepared statement "{MARKERS[2]}" does not exist', "26000"),
    _error("terminating connection due to administrator command", "57P01", "FATAL"),
    codec.ParseComplete(),
    codec.BindComplete(),
    codec.CloseComplete(),
    codec.NoData(),
    codec.RowDescription([codec.FieldDescription("a", 0, 0, 23, 4, -1, 0)]),
    codec.EmptyQueryResponse(),
    codec.PortalSuspended(),
    codec.CopyInResponse(0, (0,)),
    codec.CopyOutResponse(0, (0,)),
    codec.CopyBothResponse(0, ()),
    codec.CopyData.from_data(b"1\n"),
    codec.CopyDone(),
    codec.GenericMessage.from_body(b"V", b"\x00\x00\x00\x01" + b"7"),  # FunctionCallResponse
    codec.DataRow.from_values([b"1", None]),
    codec.NoticeResponse([("S", "NOTICE"), ("C", "00000"), ("M", "hello")]),
    codec.ParameterStatus("application_name", "psql"),
    codec.NotificationResponse(42, "jobs", "done"),
)
ANSWERS = tuple(codec.BackendParser().feed(b"".join(codec.encode(m) for m in _ANSWERS_BUILT)))

# Operations (one byte each, modulo their count).
(QUERY, FUNCTION_CALL, PARSE, BIND, EXECUTE, DESCRIBE, CLOSE, SYNC, REFUSED_QUERY, REFUSED_EXTENDED,
 COPY_END, ANSWER, ANSWER_BYTES, VIEW, ANSWER_MANY, ANY_FORWARD) = range(16)
OPERATIONS = 16
EXPECTS = tuple(Expect)


class _Script:
    def __init__(self, data: bytes) -> None:
        self.input = Input(data)
        self.tracker = Tracker(finish=self.finish)
        self.handles = 0
        self.finished: dict[int, int] = {}
        self.forwards = 0

    def handle(self) -> int:
        self.handles += 1
        self.finished[self.handles] = 0
        return self.handles

    def finish(self, handle: object, outcome: object) -> None:
        check(handle in self.finished, f"finish() called with {handle!r}, not a handle it was given")
        check(isinstance(outcome, Outcome), "finish() called without an Outcome")
        self.finished[handle] += 1  # type: ignore[index]

    def forward(self, pending: Pending, stand_in: bool = False) -> None:
        self.forwards += 1
        if stand_in:
            self.tracker.forward_stand_in(pending)
        else:
            self.tracker.forward(pending)

    def denial(self) -> codec.ErrorResponse:
        return _error("hoopgw: denied by rule x", "42501")

    def client(self, op: int) -> None:
        """One client message forwarded as the front end would (or dropped, as it would)."""
        tracker, read = self.tracker, self.input
        if tracker.holding:
            return  # the front end forwards nothing until the COPY's answer
        if tracker.copy is Copy.IN:
            if op == COPY_END:
                tracker.copy_ended()
            return  # CopyData is not tracked; other messages end the session
        if tracker.skipping and op in (PARSE, BIND, EXECUTE, DESCRIBE, CLOSE, REFUSED_EXTENDED):
            return  # the server skips them: the front end drops them
        if op == QUERY:
            for _ in range(read.below(4)):
                info = INFOS[read.below(len(INFOS))]
                change = NameChange("sql", value=info) if info.kinds[0] in ("prepare", "deallocate", "discard") else None
                self.forward(Pending(Expect.STATEMENT, handle=self.handle(), change=change, copy_in=info.copy_in))
            self.forward(Pending(Expect.END))
        elif op == FUNCTION_CALL:
            self.forward(Pending(Expect.CALL, handle=self.handle()))
            self.forward(Pending(Expect.END))
        elif op == PARSE:
            info = INFOS[read.below(len(INFOS))]
            self.forward(Pending(Expect.PARSE, change=NameChange("parse", STATEMENTS[read.below(3)], info)))
        elif op == BIND:
            portal, statement = PORTALS[read.below(3)], STATEMENTS[read.below(3)]
            info = tracker.view()[0].execute_info(statement)
            handle = self.handle()
            self.forwards += 1
            tracker.forward_bind(portal, Pending(Expect.BIND, handle=handle,
                                                 change=NameChange("bind", portal, Portal(statement, info, (), ()))))
        elif op == EXECUTE:
            portal = PORTALS[read.below(3)]
            handle = tracker.take_bound(portal)
            if handle is None:
                handle = self.handle()  # decided at Execute: the portal's Bind was not seen
            bound = tracker.view()[1].get(portal)
            copy_in = bound is not None and bound.info is not None and bound.info.copy_in
            self.forward(Pending(Expect.EXECUTE, handle=handle, copy_in=copy_in))
        elif op == DESCRIBE:
            self.forward(Pending(Expect.DESCRIBE))
        elif op == CLOSE:
            statement = read.byte() & 1
            name = (STATEMENTS if statement else PORTALS)[read.below(3)]
            self.forward(Pending(Expect.CLOSE, change=NameChange("close-statement" if statement else "close-portal", name)))
        elif op == SYNC:
            self.forward(Pending(Expect.SYNC))
        elif op == REFUSED_QUERY:
            self.forward(Pending(Expect.STATEMENT, marker=MARKERS[read.below(4)], denial=self.denial()))
            self.forward(Pending(Expect.END))
        elif op == REFUSED_EXTENDED:
            expect = (Expect.PARSE, Expect.BIND, Expect.EXECUTE)[read.below(3)]
            self.forward(Pending(expect, marker=MARKERS[read.below(4)], denial=self.denial()), stand_in=True)

    def answer(self, message: codec.Message) -> None:
        if type(message) is codec.DataRow:
            self.tracker.count_rows(1)
            return
        head = self.tracker.expect[0] if self.tracker.expect else None
        reply = self.tracker.answer(message)
        check(reply is message or (head is not None and reply is head.denial),
              "answer() returned neither the message nor the refused message's denial")

    def server_bytes(self, data: bytes) -> list[codec.Message]:
        try:
            return codec.BackendParser().feed(data)
        except codec.ProtocolError as e:
            return list(getattr(e, "messages", []))

    def invariants(self) -> None:
        tracker = self.tracker
        check(tracker.awaiting_copy >= 0, f"awaiting_copy is {tracker.awaiting_copy}")
        check(tracker.awaiting_copy == sum(p.copy_in for p in tracker.expect),
              "awaiting_copy is not the number of entries that may start copy-in")
        check(tracker.unsettled >= 0, f"unsettled is {tracker.unsettled}")
        check(len(tracker.expect) <= self.forwards, "more entries expected than were forwarded")
        check(tracker.holding == (tracker.awaiting_copy > 0 and tracker.copy is Copy.NONE), "holding is inconsistent")

    def run(self) -> None:
        read = self.input
        try:
            while read.left:
                op = read.below(OPERATIONS)
                if op == ANSWER:
                    self.answer(ANSWERS[read.below(len(ANSWERS))])
                elif op == ANSWER_MANY:
                    for _ in range(read.below(8)):
                        self.answer(ANSWERS[read.below(len(ANSWERS))])
                elif op == ANSWER_BYTES:
                    for message in self.server_bytes(read.sized()):
                        self.answer(message)
                        self.invariants()
                elif op == VIEW:
                    self.tracker.view()
                elif op == ANY_FORWARD:
                    # Any entry, whatever the state: beyond what the front end does.
                    flags = read.byte()
                    pending = Pending(EXPECTS[read.below(len(EXPECTS))], copy_in=bool(flags & 1))
                    self.forward(pending, stand_in=bool(flags & 2))
                else:
                    self.client(op)
                self.invariants()
        except Desync:
            pass  # the front end ends the session
        self.tracker.close("connection closed")
        unfinished = [h for h, n in self.finished.items() if n == 0]
        check(not unfinished, f"actions {unfinished} never got an outcome")


def one_input(data: bytes) -> None:
    _Script(data).run()


if __name__ == "__main__":
    fuzz(one_input)
