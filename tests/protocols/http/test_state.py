"""
The HTTP exchange's state machine (L{hoopgw.protocols.http.state}) on its
own: no socket, no client, no upstream.  Every path a request can take,
every input that is impossible where it comes, and random sequences of
inputs that never break the machine's promises.
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.http.state import (
    AWAITING_HEAD,
    BUSY,
    CLOSED,
    CLOSING,
    CONNECTING,
    DECIDING,
    DONE,
    ERROR,
    HELD,
    IDLE,
    MUST_CLOSE,
    NEXT_CYCLE,
    NOT_FORWARDED,
    PAUSED,
    READ,
    SEND_BODY,
    SETTLED,
    STOP,
    STREAMING,
    SWITCHED,
    UPGRADING,
    ConnectionState,
    ExchangeState,
    StateError,
    _CYCLE,
    _REQUEST,
    _RESPONSE,
    _UPSTREAM,
)

# Every input of an exchange, as a name and how to give it.
INPUTS = {
    "body_finished": lambda e: e.body_finished(),
    "body_broken": lambda e: e.body_broken(),
    "review_started": lambda e: e.review_started(),
    "forward": lambda e: e.forward(),
    "request_sent": lambda e: e.request_sent(),
    "resend": lambda e: e.resend(),
    "response_head": lambda e: e.response_head(),
    "leg_settled": lambda e: e.leg_settled(),
    "start_upgrade": lambda e: e.start_upgrade(),
    "switch_protocols": lambda e: e.switch_protocols(),
    "answer": lambda e: e.answer(keep_alive=True),
    "answer_and_close": lambda e: e.answer(keep_alive=False),
    "whole": lambda e: e.response_whole(keep_alive=True),
    "whole_and_close": lambda e: e.response_whole(keep_alive=False),
    "give_up": lambda e: e.give_up(),
    "client_closed": lambda e: e.client_closed(),
}


def sides(exchange: ExchangeState) -> tuple[object, object, object]:
    return (exchange.request_state, exchange.upstream_state, exchange.response_state)


class PathTests(SynchronousTestCase):
    """Each legal path, input by input, with what the connection does meanwhile."""

    def setUp(self) -> None:
        self.connection = ConnectionState()

    def start(self, *, has_body: bool) -> ExchangeState:
        self.connection.request_started()
        return ExchangeState(has_body=has_body)

    def step(self, exchange: ExchangeState) -> object:
        return self.connection.next_step(exchange)

    def test_simple_get(self) -> None:
        """
        A GET is read whole with its head; while it is decided, forwarded
        and answered the connection waits (pipelined requests stay unread),
        and once the response is whole it reads the next request.
        """
        self.assertIs(self.connection.next_step(None), READ)
        exchange = self.start(has_body=False)
        self.assertEqual(sides(exchange), (DONE, DECIDING, IDLE))
        self.assertIs(self.step(exchange), PAUSED)
        exchange.forward()
        exchange.request_sent()
        self.assertIs(self.step(exchange), PAUSED)
        exchange.response_head()
        self.assertEqual(sides(exchange), (DONE, STREAMING, SEND_BODY))
        exchange.leg_settled()
        exchange.response_whole(keep_alive=True)
        self.assertEqual(sides(exchange), (DONE, SETTLED, DONE))
        self.assertIs(self.step(exchange), NEXT_CYCLE)
        self.connection.start_next_cycle(exchange)
        self.assertIs(self.connection.cycle, IDLE)
        self.assertIs(self.connection.next_step(None), READ)

    def test_body_upload(self) -> None:
        """
        A body is read while it arrives (held, then forwarded once the
        request head went); read whole, the connection waits for the
        response.
        """
        exchange = self.start(has_body=True)
        self.assertEqual(sides(exchange), (SEND_BODY, DECIDING, IDLE))
        self.assertIs(self.step(exchange), READ)
        exchange.forward()
        exchange.request_sent()
        self.assertIs(self.step(exchange), READ)
        exchange.body_finished()
        self.assertIs(self.step(exchange), PAUSED)
        exchange.response_head()
        exchange.leg_settled()
        exchange.response_whole(keep_alive=True)
        self.assertIs(self.step(exchange), NEXT_CYCLE)

    def test_early_response_to_an_upload(self) -> None:
        """
        An upstream that answers before the body is whole: the response
        keeps the connection only if the body ends cleanly first; else it
        must close.
        """
        exchange = self.start(has_body=True)
        exchange.forward()
        exchange.request_sent()
        exchange.response_head()
        self.assertIs(self.step(exchange), READ)  # the rest of the body still goes on
        exchange.leg_settled()
        exchange.response_whole(keep_alive=False)
        self.assertIs(exchange.response_state, MUST_CLOSE)
        self.assertIs(self.step(exchange), STOP)

    def test_continue(self) -> None:
        """A 100 Continue may go while the body is awaited and nothing answered the request; never after."""
        self.assertFalse(ExchangeState(has_body=False).may_send_continue())
        exchange = ExchangeState(has_body=True)
        self.assertTrue(exchange.may_send_continue())
        exchange.answer(keep_alive=False)
        self.assertFalse(exchange.may_send_continue())
        exchange = ExchangeState(has_body=True)
        exchange.client_closed()
        self.assertFalse(exchange.may_send_continue())
        exchange = ExchangeState(has_body=True)
        exchange.body_finished()
        self.assertFalse(exchange.may_send_continue())

    def test_refused_before_the_body(self) -> None:
        """
        A request refused with its body unread (405, 413, 401) is answered
        and the connection closes; it can never be forwarded after.
        """
        exchange = self.start(has_body=True)
        exchange.answer(keep_alive=False)
        self.assertEqual(sides(exchange), (SEND_BODY, NOT_FORWARDED, MUST_CLOSE))
        self.assertIs(self.step(exchange), STOP)
        self.assertRaises(StateError, exchange.forward)
        self.assertRaises(StateError, exchange.start_upgrade)
        self.assertRaises(StateError, exchange.answer, keep_alive=False)

    def test_refused_whole_request_keeps_the_connection(self) -> None:
        """A request read whole and refused (403) leaves the connection for the next one."""
        exchange = self.start(has_body=False)
        exchange.answer(keep_alive=True)
        self.assertEqual(sides(exchange), (DONE, NOT_FORWARDED, DONE))
        self.assertIs(self.step(exchange), NEXT_CYCLE)

    def test_review_approved(self) -> None:
        """A request held for a review waits (PAUSED), then goes on once approved."""
        exchange = self.start(has_body=False)
        exchange.review_started()
        self.assertIs(exchange.upstream_state, HELD)
        self.assertIs(self.step(exchange), PAUSED)
        exchange.forward()
        self.assertIs(exchange.upstream_state, CONNECTING)

    def test_review_denied(self) -> None:
        """A request whose review is denied is answered 403 and never forwarded."""
        exchange = self.start(has_body=False)
        exchange.review_started()
        exchange.answer(keep_alive=True)
        self.assertEqual(sides(exchange), (DONE, NOT_FORWARDED, DONE))
        self.assertRaises(StateError, exchange.forward)
        self.assertRaises(StateError, exchange.review_started)

    def test_upstream_unreachable(self) -> None:
        """No connection, or no response head: the leg settles, then the gateway answers (502/504)."""
        exchange = self.start(has_body=False)
        exchange.forward()
        exchange.leg_settled()
        exchange.answer(keep_alive=True)
        self.assertEqual(sides(exchange), (DONE, SETTLED, DONE))
        exchange = ExchangeState(has_body=False)
        exchange.forward()
        exchange.request_sent()
        exchange.leg_settled()
        exchange.answer(keep_alive=True)
        self.assertEqual(sides(exchange), (DONE, SETTLED, DONE))

    def test_resent_on_a_closed_reused_connection(self) -> None:
        """A reused connection found closed before any answer: the request goes again, on another."""
        exchange = ExchangeState(has_body=False)
        exchange.forward()
        exchange.request_sent()
        exchange.resend()
        self.assertIs(exchange.upstream_state, CONNECTING)
        exchange.request_sent()
        self.assertIs(exchange.upstream_state, AWAITING_HEAD)
        exchange.response_head()
        self.assertRaises(StateError, exchange.resend)

    def test_upstream_fails_mid_response(self) -> None:
        """A response cut off upstream is given up: the connection closes (a cut body never looks whole)."""
        exchange = self.start(has_body=False)
        exchange.forward()
        exchange.request_sent()
        exchange.response_head()
        exchange.leg_settled()
        exchange.give_up()
        self.assertEqual(sides(exchange), (DONE, SETTLED, MUST_CLOSE))
        self.assertIs(self.step(exchange), STOP)
        self.assertRaises(StateError, self.connection.start_next_cycle, exchange)
        self.assertRaises(StateError, exchange.response_whole, keep_alive=True)

    def test_client_gone(self) -> None:
        """
        The client leaving closes the response side whatever it was; the
        leg still settles (its outcome is recorded), nothing more answers.
        """
        for before in ([], ["forward", "request_sent"], ["forward", "request_sent", "response_head"]):
            exchange = ExchangeState(has_body=False)
            for name in before:
                INPUTS[name](exchange)
            exchange.client_closed()
            self.assertIs(exchange.response_state, CLOSED)
            if before:
                exchange.leg_settled()
            self.assertRaises(StateError, exchange.answer, keep_alive=False)
            self.assertRaises(StateError, exchange.client_closed)

    def test_client_gone_after_the_response(self) -> None:
        """A client that leaves after a response that closes the connection: CLOSED."""
        exchange = ExchangeState(has_body=False)
        exchange.answer(keep_alive=False)
        exchange.client_closed()
        self.assertIs(exchange.response_state, CLOSED)

    def test_body_broken(self) -> None:
        """A body that breaks is not read further; the request is refused, the connection closes."""
        exchange = self.start(has_body=True)
        exchange.body_broken()
        exchange.answer(keep_alive=False)
        self.assertEqual(sides(exchange), (ERROR, NOT_FORWARDED, MUST_CLOSE))
        self.assertRaises(StateError, exchange.body_finished)
        self.assertIs(self.step(exchange), STOP)

    def test_keep_alive_cycles(self) -> None:
        """One connection carries requests one after the other, each in its own cycle."""
        for _ in range(3):
            exchange = self.start(has_body=False)
            exchange.answer(keep_alive=True)
            self.connection.start_next_cycle(exchange)
            self.assertIs(self.connection.cycle, IDLE)

    def test_no_next_cycle_before_the_response(self) -> None:
        """The next request is not read before the response to this one is whole."""
        exchange = self.start(has_body=False)
        with self.assertRaises(StateError) as caught:
            self.connection.start_next_cycle(exchange)
        self.assertIn("IDLE", str(caught.exception))
        self.assertIs(self.connection.cycle, BUSY)

    def test_upgrade_switched(self) -> None:
        """An allowed upgrade (exec, port-forward) that the upstream accepts: both sides switch, nothing more is read as HTTP."""
        exchange = self.start(has_body=False)
        exchange.start_upgrade()
        self.assertIs(exchange.upstream_state, UPGRADING)
        exchange.switch_protocols()
        self.assertEqual(sides(exchange), (DONE, SWITCHED, SWITCHED))
        self.assertIs(self.step(exchange), STOP)
        self.assertRaises(StateError, exchange.answer, keep_alive=False)
        exchange.client_closed()

    def test_upgrade_refused_upstream(self) -> None:
        """An upgrade the upstream answers instead: its answer goes back and the connection closes."""
        exchange = self.start(has_body=False)
        exchange.start_upgrade()
        exchange.leg_settled()
        exchange.answer(keep_alive=False)
        self.assertEqual(sides(exchange), (DONE, SETTLED, MUST_CLOSE))
        self.assertRaises(StateError, exchange.switch_protocols)

    def test_gateway_error_during_the_leg(self) -> None:
        """The gateway failing while the leg is under way answers 500; the leg ends as it will."""
        exchange = ExchangeState(has_body=False)
        exchange.forward()
        exchange.answer(keep_alive=False)
        self.assertEqual(sides(exchange), (DONE, CONNECTING, MUST_CLOSE))
        exchange.leg_settled()
        self.assertIs(exchange.upstream_state, SETTLED)

    def test_connection_closing(self) -> None:
        """A closing connection reads nothing and starts no request; it is closed once."""
        self.connection.close_started()
        self.assertIs(self.connection.cycle, CLOSING)
        self.assertIs(self.connection.next_step(None), STOP)
        self.assertRaises(StateError, self.connection.request_started)
        self.assertRaises(StateError, self.connection.close_started)
        self.connection.connection_closed()
        self.assertIs(self.connection.cycle, CLOSED)
        self.assertRaises(StateError, self.connection.connection_closed)

    def test_busy_connection_closing(self) -> None:
        """A connection closed while an exchange runs reads nothing more of it."""
        exchange = self.start(has_body=True)
        self.connection.close_started()
        self.assertIs(self.step(exchange), STOP)


class ImpossibleTests(SynchronousTestCase):
    """Every input a state does not allow raises L{StateError}, precisely, and changes nothing."""

    def test_tables_cover_every_state(self) -> None:
        """Each side's table has a row for each of its states, and leads only to them."""
        for table in (_REQUEST, _UPSTREAM, _RESPONSE, _CYCLE):
            for row in table.values():
                for target in row.values():
                    self.assertIn(target, table)

    def test_message(self) -> None:
        """The error names the side, the input and the state."""
        exchange = ExchangeState(has_body=False)
        with self.assertRaises(StateError) as caught:
            exchange.response_head()
        self.assertEqual(str(caught.exception), "upstream: response_head is impossible in DECIDING")
        self.assertEqual(caught.exception.side, "upstream")
        self.assertIs(caught.exception.state, DECIDING)

    def test_every_impossible_input(self) -> None:
        """From each reachable combination of states, each input either moves the machine or raises and leaves it."""
        seen = 0
        for path in _reachable():
            for name, give in INPUTS.items():
                exchange = _replay(path)
                before = sides(exchange)
                try:
                    give(exchange)
                except StateError:
                    self.assertEqual(sides(exchange), before, (path, name))
                    seen += 1
        self.assertGreater(seen, 100)

    def test_impossible_on_a_fresh_request(self) -> None:
        """Nothing about a response can happen to a request not yet forwarded."""
        for name in ("request_sent", "resend", "response_head", "leg_settled", "switch_protocols", "whole"):
            exchange = ExchangeState(has_body=False)
            self.assertRaises(StateError, INPUTS[name], exchange)
        self.assertRaises(StateError, ExchangeState(has_body=False).body_finished)


def _replay(path: tuple[str, ...], *, has_body: bool = True) -> ExchangeState:
    exchange = ExchangeState(has_body=has_body)
    for name in path:
        INPUTS[name](exchange)
    return exchange


def _reachable() -> list[tuple[str, ...]]:
    """One path to each reachable combination of the three sides (breadth first)."""
    paths: list[tuple[str, ...]] = [()]
    found = {sides(ExchangeState(has_body=True))}
    frontier = [()]
    while frontier:
        following = []
        for path in frontier:
            for name, give in INPUTS.items():
                exchange = _replay(path)
                try:
                    give(exchange)
                except StateError:
                    continue
                if sides(exchange) not in found:
                    found.add(sides(exchange))
                    paths.append(path + (name,))
                    following.append(path + (name,))
        frontier = following
    return paths


# The inputs that put a response on the wire (the gateway's own, the
# upstream's whole, or a switch): one per request at most.
_FINAL = {"answer", "answer_and_close", "whole", "whole_and_close", "switch_protocols"}


class RandomSequenceTests(SynchronousTestCase):
    """Random inputs, in any order: the machine keeps its promises whatever the glue does."""

    @settings(max_examples=500, deadline=None)
    @given(st.booleans(), st.lists(st.sampled_from(sorted(INPUTS)), max_size=30))
    def test_invariants(self, has_body: bool, names: list[str]) -> None:
        """
        Never two responses for one request; never forwarded once answered
        without the upstream; the leg settles once; DONE (keep-alive) at
        most once; a refused input changes nothing.
        """
        exchange = ExchangeState(has_body=has_body)
        final = settled = done = 0
        refused_unforwarded = False
        for name in names:
            before = sides(exchange)
            try:
                INPUTS[name](exchange)
            except StateError:
                self.assertEqual(sides(exchange), before)
                continue
            if name in _FINAL:
                final += 1
            if name == "leg_settled":
                settled += 1
            if exchange.response_state is DONE and before[2] is not DONE:
                done += 1
            if exchange.upstream_state is NOT_FORWARDED:
                refused_unforwarded = True
            if refused_unforwarded:
                self.assertNotIn(name, {"forward", "request_sent", "start_upgrade", "response_head", "switch_protocols"})
        self.assertLessEqual(final, 1)
        self.assertLessEqual(settled, 1)
        self.assertLessEqual(done, 1)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.sampled_from(["request_started", "next", "close_started", "connection_closed"]), max_size=20))
    def test_connection_cycle(self, names: list[str]) -> None:
        """A connection never reads a request while closing or closed, and closes once."""
        connection = ConnectionState()
        exchange = None
        closed = 0
        for name in names:
            before = connection.cycle
            try:
                if name == "request_started":
                    connection.request_started()
                    exchange = ExchangeState(has_body=False)
                elif name == "next":
                    if exchange is not None and exchange.response_state is IDLE:
                        exchange.answer(keep_alive=True)
                    connection.start_next_cycle(exchange or ExchangeState(has_body=False))
                    exchange = None
                elif name == "close_started":
                    connection.close_started()
                else:
                    connection.connection_closed()
                    closed += 1
            except StateError:
                self.assertIs(connection.cycle, before)
                continue
            if name == "request_started":
                self.assertIs(before, IDLE)
        self.assertLessEqual(closed, 1)
