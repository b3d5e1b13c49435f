"""
Tests for L{hoopgw.store._sql}: the statements every SQL store shares and
the dialect differences kept apart from them.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.store import StoreError, _sql


class DialectTests(SynchronousTestCase):
    def test_sqliteParameters(self) -> None:
        """SQLite statements keep the neutral C{:name} parameters (its named style)."""
        sql, params = _sql.select_sessions(limit=5, active=True)
        self.assertEqual(_sql.SQLITE.sql(sql), sql)
        self.assertIn('WHERE "ended" IS NULL', sql)
        self.assertEqual(params, {"limit": 5})

    def test_postgresParameters(self) -> None:
        """
        PostgreSQL statements get psycopg2's C{%(name)s} parameters, and
        casts (C{::text}) are left alone.
        """
        sql, _ = _sql.end_session("s1", "t", "closed", None, 1, None)
        rendered = _sql.POSTGRESQL.sql(sql)
        self.assertIn('"bytes_in" = %(bytes_in)s', rendered)
        self.assertIn('"id" = %(id)s', rendered)
        self.assertNotIn("bytes_out", rendered)
        self.assertEqual(_sql.POSTGRESQL.sql("SELECT :a::text"), "SELECT %(a)s::text")

    def test_insertEncodesJSON(self) -> None:
        """An INSERT carries groups and client as compact, sorted JSON text."""
        row: dict[str, Any] = {column: None for column in _sql.SESSION_COLUMNS}
        row.update(groups=["b", "a"], client={"z": 1, "a": "x"})
        _, params = _sql.insert_session(row)
        self.assertEqual(params["groups"], '["b","a"]')
        self.assertEqual(params["client"], '{"a":"x","z":1}')

    def test_pendingMigrations(self) -> None:
        """
        An empty database needs every migration, a current one none, and a
        newer one is refused with StoreError.
        """
        self.assertEqual([v for v, _ in _sql.pending_migrations(0)], list(range(1, _sql.SCHEMA_VERSION + 1)))
        self.assertEqual(_sql.pending_migrations(_sql.SCHEMA_VERSION), [])
        self.assertRaises(StoreError, _sql.pending_migrations, _sql.SCHEMA_VERSION + 1)
