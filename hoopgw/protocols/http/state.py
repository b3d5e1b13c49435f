"""
The state of an HTTP exchange and of the client connection that carries
it, apart from any socket (the shape of h11's C{_state.py}).

One request has three sides, each in one state:

  - the request (what the gateway has read of the client's request):
    C{SEND_BODY} while its body arrives, then C{DONE}; C{ERROR} when the
    body broke (too large, malformed, stalled) and nothing more is read;

  - the upstream leg (what became of the request): C{DECIDING}
    (authenticated, described, decided; C{HELD} while a review holds it),
    then either C{NOT_FORWARDED} (the gateway answered it itself) or
    C{CONNECTING} (allowed: a pooled connection is found or made),
    C{AWAITING_HEAD} (the request head went; the response head is awaited,
    under the response timeout; back to C{CONNECTING}, once, for a new
    connection when a reused one turns out closed before any answer),
    C{STREAMING} (the response body is relayed) and C{SETTLED} (the leg's outcome is known).  An upgrade goes
    C{UPGRADING} (a connection of its own) to C{SWITCHED} or C{SETTLED};

  - the response (what the gateway has written to the client): C{IDLE},
    C{SEND_BODY} once the upstream's head is the client's, then C{DONE}
    (whole, and the connection may carry the next request) or
    C{MUST_CLOSE} (whole or cut off, and the connection ends after it);
    C{SWITCHED} after a 101; C{CLOSED} once the client is gone.

The client connection's cycle is C{IDLE} (between requests), C{BUSY} (an
exchange in progress), C{CLOSING} and C{CLOSED}.  L{ConnectionState.next_step}
says what the connection does with the bytes it has read: C{READ} on
(a request head, or the body the exchange reads), C{PAUSED} (the request
is read whole: the next one waits until its response is written, whatever
it waits on: the decision, a review, the upstream, the client's window),
C{NEXT_CYCLE} (the response is whole: L{ConnectionState.start_next_cycle})
or C{STOP}.

An input that is impossible in the current state raises L{StateError}
and changes nothing.  The transitions are dictionary lookups (the tables
are at the bottom): the exchange and the connection are these classes, so
a request costs no object of its own for its state.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AWAITING_HEAD",
    "BUSY",
    "CLOSED",
    "CLOSING",
    "CONNECTING",
    "ConnectionState",
    "DECIDING",
    "DONE",
    "ERROR",
    "ExchangeState",
    "FINISHED",
    "HELD",
    "IDLE",
    "MUST_CLOSE",
    "NEXT_CYCLE",
    "NOT_FORWARDED",
    "PAUSED",
    "READ",
    "SEND_BODY",
    "SETTLED",
    "STOP",
    "STREAMING",
    "SWITCHED",
    "State",
    "StateError",
    "UPGRADING",
]


class State:
    """A state (or a step): compared by identity, hashed by identity (cheap as dictionary keys)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# Shared by the sides where they mean the same, as in h11.
IDLE: Final = State("IDLE")
SEND_BODY: Final = State("SEND_BODY")
DONE: Final = State("DONE")
ERROR: Final = State("ERROR")
MUST_CLOSE: Final = State("MUST_CLOSE")
SWITCHED: Final = State("SWITCHED")
CLOSED: Final = State("CLOSED")

DECIDING: Final = State("DECIDING")
HELD: Final = State("HELD")
NOT_FORWARDED: Final = State("NOT_FORWARDED")
CONNECTING: Final = State("CONNECTING")
AWAITING_HEAD: Final = State("AWAITING_HEAD")
STREAMING: Final = State("STREAMING")
SETTLED: Final = State("SETTLED")
UPGRADING: Final = State("UPGRADING")

BUSY: Final = State("BUSY")
CLOSING: Final = State("CLOSING")

READ: Final = State("READ")
PAUSED: Final = State("PAUSED")
NEXT_CYCLE: Final = State("NEXT_CYCLE")
STOP: Final = State("STOP")

FINISHED: Final = frozenset({DONE, MUST_CLOSE, SWITCHED, CLOSED})
"""Response states after which nothing more of this response is written."""


class StateError(Exception):
    """An input that is impossible in the current state (a bug in the glue, never the peer's doing)."""

    def __init__(self, side: str, state: State, event: str) -> None:
        super().__init__(f"{side}: {event} is impossible in {state.name}")
        self.side = side
        self.state = state
        self.event = event


class _Row(dict[str, State]):
    """One state's row of a table: the next state for each input it allows."""

    __slots__ = ("side", "state")

    def __init__(self, side: str, state: State, moves: dict[str, State]) -> None:
        super().__init__(moves)
        self.side = side
        self.state = state

    def __missing__(self, event: str) -> State:
        raise StateError(self.side, self.state, event)


def _table(side: str, rows: dict[State, dict[str, State]]) -> dict[State, _Row]:
    return {state: _Row(side, state, moves) for state, moves in rows.items()}


class ExchangeState:
    """One request's three sides (see the module docstring); inputs are its methods."""

    __slots__ = ("request_state", "response_state", "upstream_state")

    def __init__(self, *, has_body: bool) -> None:
        self.request_state = SEND_BODY if has_body else DONE
        self.upstream_state = DECIDING
        self.response_state = IDLE

    def may_send_continue(self) -> bool:
        """Whether a C{100 Continue} may go: the body is awaited, and nothing has answered the request."""
        return self.request_state is SEND_BODY and self.response_state is IDLE

    # -- the request --

    def body_finished(self) -> None:
        """The request body arrived whole."""
        self.request_state = _REQUEST[self.request_state]["body_finished"]

    def body_broken(self) -> None:
        """The request body broke (too large, malformed, stalled): nothing more of it is read."""
        self.request_state = _REQUEST[self.request_state]["body_broken"]

    # -- the upstream leg --

    def review_started(self) -> None:
        """The decision is a review: the request is held until it is decided."""
        self.upstream_state = _UPSTREAM[self.upstream_state]["review_started"]

    def forward(self) -> None:
        """Allowed: the request goes to the upstream, on a connection being found or made."""
        self.upstream_state = _UPSTREAM[self.upstream_state]["forward"]

    def request_sent(self) -> None:
        """The request head went on a connection (its body follows as it arrives)."""
        self.upstream_state = _UPSTREAM[self.upstream_state]["request_sent"]

    def resend(self) -> None:
        """A reused connection was found closed before any answer: the request goes once more, on another."""
        self.upstream_state = _UPSTREAM[self.upstream_state]["resend"]

    def response_head(self) -> None:
        """The upstream's response head came and is the client's: its body is relayed."""
        upstream = _UPSTREAM[self.upstream_state]["response_head"]
        self.response_state = _RESPONSE[self.response_state]["response_head"]
        self.upstream_state = upstream

    def leg_settled(self) -> None:
        """The upstream leg ended (the response whole or cut off, or none came): its outcome is known."""
        self.upstream_state = _UPSTREAM[self.upstream_state]["leg_settled"]

    def start_upgrade(self) -> None:
        """Allowed, an upgrade: the request goes on a connection of its own."""
        self.upstream_state = _UPSTREAM[self.upstream_state]["start_upgrade"]

    def switch_protocols(self) -> None:
        """The upstream switched protocols (101) and so does the client: the relay carries the connection."""
        upstream = _UPSTREAM[self.upstream_state]["switch_protocols"]
        self.response_state = _RESPONSE[self.response_state]["switch_protocols"]
        self.upstream_state = upstream

    # -- the response --

    def answer(self, *, keep_alive: bool) -> None:
        """
        The gateway answered the request itself (an error, or the upstream's
        refused upgrade): the whole response; a request not yet forwarded
        never will be.
        """
        response = _RESPONSE[self.response_state]["answer" if keep_alive else "answer_and_close"]
        self.upstream_state = _UPSTREAM[self.upstream_state]["answer"]
        self.response_state = response

    def response_whole(self, *, keep_alive: bool) -> None:
        """The upstream's response was written whole."""
        self.response_state = _RESPONSE[self.response_state]["whole" if keep_alive else "whole_and_close"]

    def give_up(self) -> None:
        """The response stops here (cut off, or the client is being aborted): the connection ends after it."""
        self.response_state = _RESPONSE[self.response_state]["give_up"]

    def client_closed(self) -> None:
        """The client's connection ended: nothing more is written to it."""
        self.response_state = _RESPONSE[self.response_state]["client_closed"]


class ConnectionState:
    """The client connection's cycle (see the module docstring); one exchange at a time."""

    __slots__ = ("cycle",)

    def __init__(self) -> None:
        self.cycle = IDLE

    def request_started(self) -> None:
        """A request head was read: its exchange starts."""
        self.cycle = _CYCLE[self.cycle]["request_started"]

    def start_next_cycle(self, exchange: ExchangeState) -> None:
        """C{exchange}'s response was written whole, keeping the connection: the next request may be read."""
        if exchange.response_state is not DONE:
            raise StateError("connection", self.cycle, f"start_next_cycle with the response {exchange.response_state.name}")
        self.cycle = _CYCLE[self.cycle]["start_next_cycle"]

    def close_started(self) -> None:
        """The connection is being closed: nothing more is read from it."""
        self.cycle = _CYCLE[self.cycle]["close_started"]

    def connection_closed(self) -> None:
        """The connection ended."""
        self.cycle = _CYCLE[self.cycle]["connection_closed"]

    def next_step(self, exchange: ExchangeState | None) -> State:
        """What the connection does with what it reads next (see the module docstring)."""
        cycle = self.cycle
        if cycle is IDLE:
            return READ
        if cycle is not BUSY or exchange is None:
            return STOP
        response = exchange.response_state
        if response is DONE:
            return NEXT_CYCLE
        if response in FINISHED:
            return STOP
        if exchange.request_state is SEND_BODY:
            return READ
        return PAUSED


# -- the transitions -----------------------------------------------------------

_REQUEST: Final = _table("request", {
    SEND_BODY: {"body_finished": DONE, "body_broken": ERROR},
    DONE: {},
    ERROR: {},
})

_UPSTREAM: Final = _table("upstream", {
    DECIDING: {
        "review_started": HELD, "forward": CONNECTING, "start_upgrade": UPGRADING, "answer": NOT_FORWARDED,
    },
    HELD: {"forward": CONNECTING, "start_upgrade": UPGRADING, "answer": NOT_FORWARDED},
    NOT_FORWARDED: {},
    # A gateway error answered while the leg is under way (the gateway
    # itself failed) leaves the leg to end as it will.
    CONNECTING: {"request_sent": AWAITING_HEAD, "leg_settled": SETTLED, "answer": CONNECTING},
    AWAITING_HEAD: {
        "response_head": STREAMING, "resend": CONNECTING, "leg_settled": SETTLED, "answer": AWAITING_HEAD,
    },
    STREAMING: {"leg_settled": SETTLED},
    # The upstream's failure (502, 504) is answered after the leg settled.
    SETTLED: {"answer": SETTLED},
    UPGRADING: {"switch_protocols": SWITCHED, "leg_settled": SETTLED, "answer": UPGRADING},
    SWITCHED: {},
})

_RESPONSE: Final = _table("response", {
    IDLE: {
        "answer": DONE, "answer_and_close": MUST_CLOSE, "response_head": SEND_BODY,
        "switch_protocols": SWITCHED, "give_up": MUST_CLOSE, "client_closed": CLOSED,
    },
    SEND_BODY: {"whole": DONE, "whole_and_close": MUST_CLOSE, "give_up": MUST_CLOSE, "client_closed": CLOSED},
    DONE: {"client_closed": CLOSED},
    MUST_CLOSE: {"client_closed": CLOSED},
    SWITCHED: {"client_closed": CLOSED},
    CLOSED: {},
})

_CYCLE: Final = _table("connection", {
    IDLE: {"request_started": BUSY, "close_started": CLOSING, "connection_closed": CLOSED},
    BUSY: {"start_next_cycle": IDLE, "close_started": CLOSING, "connection_closed": CLOSED},
    CLOSING: {"connection_closed": CLOSED},
    CLOSED: {},
})
