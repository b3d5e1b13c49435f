"""The catalog's snapshot cache (catalog.py) with a connection the test answers; real reads in tests/adversarial."""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.postgres.catalog import _EXISTS, _GRAPH, Catalog
from hoopgw.protocols.postgres.settings import PostgresSettings

SETTINGS = PostgresSettings(host="127.0.0.1", port=5432, database="app", user="app", tls="disable")


def snapshot(*relations: tuple[int, str, str]) -> list[tuple[str]]:
    return [(json.dumps({
        "relations": [[str(oid), schema, name, "r"] for oid, schema, name in relations],
        "inherits": [], "rules": [], "triggers": [], "uses": [], "type_uses": [], "functions": [],
        "aggregates": [], "function_names": [], "cascades": [],
    }),)]


class FakeConnection:
    def __init__(self) -> None:
        self.queries: list[tuple[str, Deferred]] = []

    def runQuery(self, query: str, arguments=None) -> Deferred:
        d: Deferred = Deferred()
        self.queries.append((query, d))
        return d

    def close(self) -> None:
        pass


class CatalogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.connection = FakeConnection()
        self.connects = 0

        def connect(parameters):
            self.connects += 1
            self.assertEqual(parameters["options"], "-c jit=off")
            return succeed(self.connection)

        self.catalog = Catalog(SETTINGS, "secret", reactor=self.clock, connect=connect, graph_ttl=10)

    def answer(self, rows) -> None:
        query, d = self.connection.queries.pop(0)
        d.callback(rows)

    def test_one_read_for_waiting_callers_then_cached_until_the_ttl(self) -> None:
        first, second = self.catalog.graph(), self.catalog.graph()
        self.assertEqual([q for q, _ in self.connection.queries], [_GRAPH])
        self.answer(snapshot((1, "public", "payments")))
        graphs = [self.successResultOf(first), self.successResultOf(second)]
        self.assertIs(graphs[0], graphs[1])
        self.assertIs(self.catalog.current(), graphs[0])
        self.clock.advance(9)
        self.assertIs(self.successResultOf(self.catalog.graph()), graphs[0])
        self.clock.advance(2)
        self.assertIsNone(self.catalog.current())
        self.catalog.graph()
        self.assertEqual(len(self.connection.queries), 1)

    def test_ddl_during_a_read_reads_again(self) -> None:
        d = self.catalog.graph()
        self.catalog.invalidate()  # a session's DDL ended while the snapshot was being read
        self.answer(snapshot((1, "public", "payments")))
        self.assertNoResult(d)
        self.answer(snapshot((1, "public", "pay2")))
        self.assertEqual(self.successResultOf(d).names[1], ("public.pay2", "public.payments"))

    def test_names_are_kept_across_snapshots(self) -> None:
        self.catalog.graph()
        self.answer(snapshot((1, "public", "payments")))
        self.catalog.invalidate()
        d = self.catalog.graph()
        self.answer(snapshot((1, "books", "payments")))
        self.assertEqual(self.successResultOf(d).names[1], ("books.payments", "public.payments"))

    def test_a_failed_read_answers_none_and_connects_again(self) -> None:
        d = self.catalog.graph()
        _, query = self.connection.queries.pop(0)
        query.errback(RuntimeError("server closed the connection"))
        self.assertIsNone(self.successResultOf(d))
        self.catalog.graph()
        self.assertEqual(self.connects, 2)

    def test_newer_reads_again_only_if_a_missing_name_exists(self) -> None:
        self.catalog.graph()
        self.answer(snapshot((1, "public", "payments")))
        current = self.catalog.current()
        d = self.catalog.newer((("relation", None, "fresh"),))
        query, answer = self.connection.queries.pop(0)
        self.assertEqual(query, _EXISTS)
        answer.callback([(False,)])
        self.assertIs(self.successResultOf(d), current)  # exists nowhere: no snapshot
        d = self.catalog.newer((("relation", "books", "payments"),))
        self.answer([(True,)])
        self.assertNoResult(d)
        self.assertEqual(self.connection.queries[0][0], _GRAPH)
        self.answer(snapshot((1, "books", "payments")))
        self.assertIn("books.payments", self.successResultOf(d).names[1])
