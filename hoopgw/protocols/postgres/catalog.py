"""
The target's catalog, read on the gateway's own connection to it: what a
client names only by number (a FunctionCall's function OID), and what a
statement's relations reach (L{reach.RelationGraph}: views, partitions,
rules, triggers, foreign-key cascades, names).

One connection per configured target, opened on first use with the
connection's own credentials and TLS settings and kept (txpostgres over
psycopg2's asynchronous mode: nothing blocks the reactor).  Function names
are cached for C{ttl} seconds; the relation graph is one snapshot (one
query, so one consistent view of the catalog), kept for C{graph_ttl}
seconds and dropped earlier by L{Catalog.invalidate}, which the front end
calls when a session's DDL has ended (committed or not).  A lookup that
fails (the target is down, the query errors) answers C{None}: the caller
treats the object, or the statement, as unknown, which the shipped policy
refuses.

Each snapshot also carries every name a relation had in the earlier ones
(by OID), so a rule naming C{public.payments} still protects it after it,
or its schema, is renamed outside the gateway.  A rename while the
gateway was not running is not seen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.protocols.postgres.origins import Relation, view_origins
from hoopgw.protocols.postgres.reach import RelationGraph, Routine
from hoopgw.protocols.postgres.settings import PostgresSettings

__all__ = ["Catalog"]

log = Logger()

_FUNCTION = (
    "SELECT n.nspname, p.proname FROM pg_catalog.pg_proc p "
    "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = %s"
)
_CACHE_MAX = 4096

# One statement, so one snapshot (OIDs come back as JSON strings).
#   relations: tables, partitioned tables, views, materialized views, foreign tables;
#   rules: the relations a rule references (a view's _RETURN rule, event '1',
#     is its definition; others by event: '2' update, '3' insert, '4' delete);
#   triggers: not the server's own (foreign keys' are internal), with their
#     events (tgtype) and arguments (NUL-separated, hex);
#   uses: functions that run on a relation's events, from pg_depend --
#     column defaults, CHECK constraints, partition keys, index expressions, statistics
#     expressions, row security policies, rules and view definitions, trigger
#     WHEN clauses -- and what its columns' types run (type_runs);
#   type_uses: what a value of a type runs: its domains' CHECKs and defaults
#     (also of the domains, arrays, composites and ranges it is made of) and
#     the casts to it (type_runs);
#   functions: bodies that can be read (not C or internal), with what their
#     parameter and result types and parameter defaults run; C and internal
#     ones only when their types run something (judged by name otherwise);
#   aggregates: the functions an aggregate runs;
#   function_names: every function, to tell a call of a new one;
#   cascades: foreign keys with their actions (all of them: TRUNCATE ...
#     CASCADE follows every one);
#   operators: those defined in the database (not pg_catalog's), with the
#     function each runs.
_GRAPH = """
WITH RECURSIVE
-- What depends on which function (defaults, constraints, indexes, policies, rules, types, ...).
proc_deps(classid, objid, fn) AS MATERIALIZED (
  SELECT classid, objid, refobjid FROM pg_catalog.pg_depend
  WHERE refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
),
type_parts(parent, child) AS (
  SELECT oid, typbasetype FROM pg_catalog.pg_type WHERE typbasetype <> 0
  UNION ALL SELECT oid, typelem FROM pg_catalog.pg_type WHERE typelem <> 0 AND typcategory = 'A'
  UNION ALL SELECT t.oid, a.atttypid FROM pg_catalog.pg_type t
            JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid
            WHERE t.typtype = 'c' AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL SELECT rngtypid, rngsubtype FROM pg_catalog.pg_range
  UNION ALL SELECT rngmultitypid, rngtypid FROM pg_catalog.pg_range
),
-- Not the server's internal functions (language 12), which run no SQL.
type_own(typ, fn) AS (
  SELECT o.typ, o.fn FROM (
    SELECT c.contypid AS typ, d.fn AS fn FROM pg_catalog.pg_constraint c JOIN proc_deps d
      ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid = c.oid
    WHERE c.contypid <> 0
    UNION ALL SELECT d.objid, d.fn FROM proc_deps d
    WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
    UNION ALL SELECT casttarget, castfunc FROM pg_catalog.pg_cast WHERE castfunc <> 0
  ) o JOIN pg_catalog.pg_proc p ON p.oid = o.fn
  WHERE p.prolang <> 12
),
type_runs(typ, fn) AS (
  SELECT typ, fn FROM type_own
  UNION SELECT p.parent, r.fn FROM type_runs r JOIN type_parts p ON p.child = r.typ
),
-- What a function's parameter defaults call, by name.
default_calls(fn, names) AS (
  SELECT d.objid, pg_catalog.array_agg(dn.nspname || '.' || dp.proname)
  FROM proc_deps d JOIN pg_catalog.pg_proc dp ON dp.oid = d.fn
  JOIN pg_catalog.pg_namespace dn ON dn.oid = dp.pronamespace
  WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND dp.prolang <> 12
  GROUP BY d.objid
),
-- What types run, by name, without the server's internal functions.
type_calls(typ, name) AS MATERIALIZED (
  SELECT DISTINCT r.typ, n.nspname || '.' || p.proname
  FROM type_runs r JOIN pg_catalog.pg_proc p ON p.oid = r.fn
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
)
SELECT json_build_object(
  'relations', (SELECT coalesce(json_agg(json_build_array(c.oid, n.nspname, c.relname, c.relkind)), '[]')
                FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')),
  'inherits', (SELECT coalesce(json_agg(json_build_array(inhrelid, inhparent)), '[]')
               FROM pg_catalog.pg_inherits),
  'rules', (SELECT coalesce(json_agg(DISTINCT jsonb_build_array(r.ev_class, r.ev_type, d.refobjid)), '[]')
            FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_depend d
              ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
             AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> r.ev_class),
  'triggers', (SELECT coalesce(json_agg(json_build_array(t.tgrelid, t.tgtype, n.nspname, p.proname, l.lanname,
                                                         p.prosrc, pg_catalog.encode(t.tgargs, 'hex'))), '[]')
               FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
               JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
               JOIN pg_catalog.pg_language l ON l.oid = p.prolang
               WHERE NOT t.tgisinternal),
  'uses', (SELECT coalesce(json_agg(DISTINCT jsonb_build_array(u.rel, u.ev, n.nspname || '.' || p.proname)), '[]')
           FROM (SELECT ad.adrelid AS rel, 'ium' AS ev, d.fn AS fn
                 FROM pg_catalog.pg_attrdef ad JOIN proc_deps d
                   ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid
                 UNION ALL
                 SELECT c.conrelid, 'ium', d.fn
                 FROM pg_catalog.pg_constraint c JOIN proc_deps d
                   ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid = c.oid
                 WHERE c.conrelid <> 0
                 UNION ALL
                 SELECT a.attrelid, 'ium', r.fn
                 FROM type_runs r JOIN pg_catalog.pg_attribute a ON a.atttypid = r.typ
                 WHERE a.attnum > 0 AND NOT a.attisdropped
                 UNION ALL
                 -- a partitioned table's key expressions
                 SELECT c.oid, 'ium', d.fn
                 FROM pg_catalog.pg_class c
                 JOIN proc_deps d ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
                 WHERE c.relkind = 'p'
                 UNION ALL
                 SELECT i.indrelid, 'ium', d.fn
                 FROM pg_catalog.pg_index i JOIN proc_deps d
                   ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = i.indexrelid
                 UNION ALL
                 SELECT s.stxrelid, 'm', d.fn
                 FROM pg_catalog.pg_statistic_ext s JOIN proc_deps d
                   ON d.classid = 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass AND d.objid = s.oid
                 UNION ALL
                 SELECT po.polrelid, 'riud', d.fn
                 FROM pg_catalog.pg_policy po JOIN proc_deps d
                   ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objid = po.oid
                 UNION ALL
                 SELECT r.ev_class, CASE r.ev_type WHEN '1' THEN 'riudm' WHEN '2' THEN 'u' WHEN '3' THEN 'i' ELSE 'd' END,
                        d.fn
                 FROM pg_catalog.pg_rewrite r JOIN proc_deps d
                   ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
                 UNION ALL
                 SELECT t.tgrelid, 'iudt', d.fn
                 FROM pg_catalog.pg_trigger t JOIN proc_deps d
                   ON d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND d.objid = t.oid AND d.fn <> t.tgfoid
                 WHERE NOT t.tgisinternal) u
           JOIN pg_catalog.pg_proc p ON p.oid = u.fn
           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
           WHERE p.prolang <> 12),
  'type_uses', (SELECT coalesce(json_agg(json_build_array(n.nspname, t.typname, c.name)), '[]')
                FROM type_calls c JOIN pg_catalog.pg_type t ON t.oid = c.typ
                JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace),
  'functions', (SELECT coalesce(json_agg(json_build_array(n.nspname, p.proname, l.lanname,
                   CASE WHEN l.lanname = 'plpgsql' OR p.prosqlbody IS NOT NULL
                        THEN pg_catalog.pg_get_functiondef(p.oid) ELSE p.prosrc END,
                   ARRAY(SELECT DISTINCT c.name FROM type_calls c
                         WHERE c.typ = p.prorettype
                            OR c.typ = ANY(coalesce(p.proallargtypes, p.proargtypes::pg_catalog.oid[]))
                         UNION SELECT unnest(dc.names)))), '[]')
                FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                JOIN pg_catalog.pg_language l ON l.oid = p.prolang
                LEFT JOIN default_calls dc ON dc.fn = p.oid
                WHERE p.prokind IN ('f', 'p')
                  AND (l.lanname NOT IN ('c', 'internal')
                       -- a built-in whose parameter or result types run something (a range
                       -- constructor over a domain)
                       OR (p.prorettype || coalesce(p.proallargtypes, p.proargtypes::pg_catalog.oid[]))
                          OPERATOR(pg_catalog.&&) (SELECT pg_catalog.array_agg(DISTINCT typ) FROM type_calls))),
  'aggregates', (SELECT coalesce(json_agg(json_build_array(n.nspname, p.proname,
                    ARRAY(SELECT fn.nspname || '.' || f.proname
                          FROM pg_catalog.pg_proc f JOIN pg_catalog.pg_namespace fn ON fn.oid = f.pronamespace
                          WHERE f.oid IN (a.aggtransfn, a.aggfinalfn, a.aggcombinefn, a.aggserialfn,
                                          a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn)))), '[]')
                 FROM pg_catalog.pg_aggregate a JOIN pg_catalog.pg_proc p ON p.oid = a.aggfnoid
                 JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')),
  'function_names', (SELECT coalesce(json_agg(json_build_array(n.nspname, p.proname)), '[]')
                     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace),
  'cascades', (SELECT coalesce(json_agg(json_build_array(confrelid, confdeltype, confupdtype, conrelid)), '[]')
               FROM pg_catalog.pg_constraint WHERE contype = 'f'),
  'operators', (SELECT coalesce(json_agg(json_build_array(n.nspname, o.oprname, pn.nspname || '.' || p.proname)), '[]')
                FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
                JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode
                JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
                WHERE n.nspname <> 'pg_catalog')
)::text
"""

# Whether any of the relations or functions named exists (bare names: in any schema).
_EXISTS = """
SELECT EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
                 AND (c.relname = ANY(%s::text[])
                      OR (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))))
    OR EXISTS (SELECT FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
               WHERE p.proname = ANY(%s::text[])
                  OR (n.nspname, p.proname) IN (SELECT * FROM unnest(%s::text[], %s::text[])))
"""

# tgtype's event bits (pg_trigger.h).
_TRIGGER_EVENTS = ((4, "i"), (8, "d"), (16, "u"), (32, "t"))


# What a result column's origin is (origins.py): each relation by OID, with
# its live columns, its inheritance ancestors, and a view's definition.
_RELATIONS = """
SELECT c.oid::pg_catalog.int8, n.nspname, c.relname, c.relkind::pg_catalog.text,
  COALESCE((SELECT pg_catalog.json_object_agg(a.attnum, pg_catalog.json_build_array(a.attname, a.atttypid, a.attgenerated))
            FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)::pg_catalog.text, '{}'),
  (SELECT r.ev_action::pg_catalog.text FROM pg_catalog.pg_rewrite r
   WHERE r.ev_class = c.oid AND r.rulename = '_RETURN'),
  ARRAY(WITH RECURSIVE up(oid) AS (
          SELECT inhparent FROM pg_catalog.pg_inherits WHERE inhrelid = c.oid
          UNION SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid = up.oid)
        SELECT un.nspname || '.' || uc.relname FROM up
        JOIN pg_catalog.pg_class uc ON uc.oid = up.oid
        JOIN pg_catalog.pg_namespace un ON un.oid = uc.relnamespace),
  pg_catalog.pg_has_role(c.relowner, 'MEMBER')
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = ANY(%s::pg_catalog.oid[])
"""


def _redefinable_views(relations: dict[int, Relation], oids: Iterable[int]) -> list[int]:
    """The views the connection's role may redefine on the way from C{oids} to their tables."""
    found: list[int] = []
    todo, seen = list(oids), set()
    while todo:
        oid = todo.pop()
        relation = relations.get(oid)
        if oid in seen or relation is None:
            continue
        seen.add(oid)
        if relation.kind == "v" and relation.owned:
            found.append(oid)
        todo.extend(o for o, _ in (relation.origins or {}).values())
    return found


def _view_origins(definition: str) -> dict[int, tuple[int, int]] | None:
    try:
        return view_origins(definition)
    except (ValueError, KeyError):
        return None  # unreadable: its columns are treated as unknown (masked)


def relation_from_row(row: tuple[Any, ...], former: dict[tuple[int, int], set[str]] | None = None) -> Relation:
    """
    A L{Relation} from a row of C{_RELATIONS}; C{former} (names by
    C{(oid, attnum)}, kept across reads) gains its current names and gives
    the earlier ones.
    """
    oid, schema, name, kind, columns, definition, ancestors, owned = row
    oid = int(oid)
    attributes = {int(k): v for k, v in json.loads(columns).items()}
    current = {attnum: name for attnum, (name, _, _) in attributes.items()}
    earlier: dict[int, tuple[str, ...]] = {}
    if former is not None:
        for attnum, column in current.items():
            seen = former.setdefault((oid, attnum), set())
            seen.add(f"{schema}.{name}.{column}")
            if len(seen) > 1:
                earlier[attnum] = tuple(sorted(seen - {f"{schema}.{name}.{column}"}))
    return Relation(
        oid=oid,
        schema=schema,
        name=name,
        kind=kind,
        columns=current,
        ancestors=tuple(ancestors or ()),
        origins=_view_origins(definition) if definition else {},
        former=earlier,
        types={attnum: int(type_oid) for attnum, (_, type_oid, _) in attributes.items()},
        generated=frozenset(attnum for attnum, (_, _, generated) in attributes.items() if generated),
        owned=bool(owned),
    )


def graph_from_snapshot(snapshot: dict[str, Any], known: dict[int, tuple[str, ...]] | None = None) -> RelationGraph:
    """The L{RelationGraph} of one L{_GRAPH} answer (decoded)."""
    views, rules = [], []
    rule_events = {"2": "u", "3": "i", "4": "d"}
    for relation, event, referenced in snapshot["rules"]:
        if event == "1":
            views.append((int(relation), int(referenced)))
        else:
            rules.append((int(relation), rule_events.get(event, "iud"), int(referenced)))
    triggers = []
    for relation, tgtype, schema, name, language, source, arguments in snapshot["triggers"]:
        events = "".join(event for bit, event in _TRIGGER_EVENTS if int(tgtype) & bit)
        raw = bytes.fromhex(arguments or "")
        args = tuple(a.decode("utf-8", "replace") for a in raw.split(b"\0") if a)
        triggers.append((int(relation), events, Routine(schema, name, language, source or ""), args))
    # ON DELETE CASCADE deletes referencing rows, SET NULL / SET DEFAULT
    # update them; ON UPDATE of any of the three updates them.
    cascades = []
    for referenced, on_delete, on_update, referencing in snapshot["cascades"]:
        # TRUNCATE ... CASCADE empties every referencing table (without
        # CASCADE it fails while one references it).
        cascades.append((int(referenced), "t", int(referencing), "t"))
        if on_delete in ("c", "n", "d"):
            cascades.append((int(referenced), "d", int(referencing), "d" if on_delete == "c" else "u"))
        if on_update in ("c", "n", "d"):
            cascades.append((int(referenced), "u", int(referencing), "u"))
    return RelationGraph(
        [(int(oid), schema, name, kind) for oid, schema, name, kind in snapshot["relations"]],
        inherits=[(int(child), int(parent)) for child, parent in snapshot["inherits"]],
        views=views,
        rules=rules,
        cascades=cascades,
        triggers=triggers,
        uses=[(int(relation), events, function) for relation, events, function in snapshot["uses"]],
        functions=[
            Routine(schema, name, language, source or "", tuple(type_calls or ()))
            for schema, name, language, source, type_calls in snapshot["functions"]
        ],
        type_uses=[(schema, name, function) for schema, name, function in snapshot.get("type_uses", ())],
        aggregates=[(schema, name, tuple(runs)) for schema, name, runs in snapshot.get("aggregates", ())],
        function_names=[(schema, name) for schema, name in snapshot["function_names"]],
        operators=[(schema, symbol, function) for schema, symbol, function in snapshot.get("operators", ())],
        known=known,
    )


def connection_parameters(settings: PostgresSettings, password: str | None) -> dict[str, Any]:
    """libpq parameters for the gateway's own connection to C{settings}' target."""
    parameters: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "dbname": settings.database,
        "user": settings.user,
        "connect_timeout": settings.login_timeout,
        "application_name": "hoopgw catalog",
        # The snapshot query's cost estimate is high and its run short: JIT
        # compiling it would cost ten times the query.
        "options": "-c jit=off",
        "sslmode": settings.tls,
        # As the session leg: the target may make the gateway prove the
        # password only in the ways the connection allows.
        "require_auth": ",".join(settings.require_auth),
    }
    if password is not None:
        parameters["password"] = password
    if settings.tls == "verify-full":
        parameters["sslrootcert"] = str(settings.ca_file) if settings.ca_file is not None else "system"
    return parameters


class CatalogReader(Protocol):
    """
    What the front end and its masking read of a target's catalog:
    L{Catalog}, or L{hoopgw.testing.FixedCatalog} in tests.
    """

    def function(self, oid: int) -> Deferred[str | None]: ...

    def current(self) -> RelationGraph | None: ...

    def graph(self) -> Deferred[RelationGraph | None]: ...

    def newer(self, missing: tuple[tuple[str, str | None, str], ...]) -> Deferred[RelationGraph | None]: ...

    def known_origins(self, oids: Iterable[int]) -> Mapping[int, Relation] | None: ...

    def origins(self, oids: Iterable[int]) -> Deferred[Mapping[int, Relation] | None]: ...

    def invalidate(self) -> None: ...

    def close(self) -> None: ...


class Catalog:
    """Catalog lookups for one target (module docstring)."""

    def __init__(
        self,
        settings: PostgresSettings,
        password: str | None,
        *,
        reactor: Any,
        ttl: float = 60.0,
        graph_ttl: float = 10.0,
        connect: Callable[[dict[str, Any]], Deferred[Any]] | None = None,
    ) -> None:
        self.parameters = connection_parameters(settings, password)
        self.reactor = reactor
        self.ttl = ttl
        self._connect = connect or self._txpostgres
        self._connection: Any = None  # a connected txpostgres Connection
        self._waiting: list[Deferred[Any]] | None = None  # lookups waiting for it
        self._functions: dict[int, tuple[float, str | None]] = {}
        self.graph_ttl = graph_ttl
        self._graph: RelationGraph | None = None
        self._graph_until = 0.0
        self._graph_waiting: list[Deferred[RelationGraph | None]] | None = None  # callers of graph() while it is read
        self._generation = 0  # bumped by invalidate(): a snapshot read across it is not kept
        self._known: dict[int, tuple[str, ...]] = {}  # every name each oid has had
        self._relations: dict[int, Relation] = {}  # result columns' origins, kept like the graph
        self._relations_until = 0.0
        # Every schema.table.column name each (oid, attnum) had when read: a
        # mask on public.users.salary keeps covering it once renamed.
        self._former_columns: dict[tuple[int, int], set[str]] = {}

    def _txpostgres(self, parameters: dict[str, Any]) -> Deferred[Any]:
        from txpostgres import txpostgres

        connecting: Deferred[Any] = txpostgres.Connection(reactor=self.reactor).connect(**parameters)
        return connecting

    def _connected(self) -> Deferred[Any]:
        """A txpostgres Connection (untyped), connected."""
        if self._connection is not None:
            return succeed(self._connection)
        mine: Deferred[Any] = Deferred()  # each lookup its own Deferred
        if self._waiting is None:
            self._waiting = [mine]  # before connecting: it may answer at once
            self._connect(self.parameters).addCallbacks(self._up, self._down)
        else:
            self._waiting.append(mine)
        return mine

    def _up(self, connection: Any) -> None:
        self._connection = connection
        waiting, self._waiting = self._waiting or [], None
        for d in waiting:
            d.callback(connection)

    def _down(self, failure: Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        for d in waiting:
            d.errback(failure)

    def function(self, oid: int) -> Deferred[str | None]:
        """
        The schema-qualified name of function C{oid} (C{"pg_catalog.lo_unlink"}),
        or C{None} if there is none or the lookup failed.
        """
        now = self.reactor.seconds()
        cached = self._functions.get(oid)
        if cached is not None and cached[0] > now:
            return succeed(cached[1])
        d = self._connected()
        d.addCallback(lambda connection: connection.runQuery(_FUNCTION, (oid,)))

        def found(rows: list[tuple[str, str]]) -> str | None:
            name = f"{rows[0][0]}.{rows[0][1]}" if rows else None
            if len(self._functions) >= _CACHE_MAX:
                self._functions.clear()
            self._functions[oid] = (now + self.ttl, name)
            return name

        def failed(failure: Failure) -> None:
            self._failed(failure, f"lookup of function {oid}")

        d.addCallbacks(found, failed)
        return d

    def current(self) -> RelationGraph | None:
        """The graph if it is fresh (L{graph} would fire at once with it), else C{None}."""
        if self._graph is not None and self._graph_until > self.reactor.seconds():
            return self._graph
        return None

    def graph(self) -> Deferred[RelationGraph | None]:
        """
        The target's relation graph (fresh: read at most C{graph_ttl}
        seconds ago, after the last L{invalidate}), or C{None} if it cannot
        be read.  Fires at once when the current snapshot is fresh.
        """
        if self._graph is not None and self._graph_until > self.reactor.seconds():
            return succeed(self._graph)
        mine: Deferred[RelationGraph | None] = Deferred()
        if self._graph_waiting is None:
            self._graph_waiting = [mine]  # before reading: it may answer at once
            self._read_graph()
        else:
            self._graph_waiting.append(mine)
        return mine

    def _read_graph(self) -> None:
        generation = self._generation
        started = self.reactor.seconds()
        d = self._connected()
        d.addCallback(lambda connection: connection.runQuery(_GRAPH))

        def read(rows: list[tuple[str]]) -> RelationGraph | None:
            graph = graph_from_snapshot(json.loads(rows[0][0]), self._known)
            self._known = graph.names
            if generation != self._generation:
                # DDL ended while this was read: the snapshot may predate
                # it.  Read again for the callers now waiting.
                self._read_graph()
                return None
            self._graph, self._graph_until = graph, started + self.graph_ttl
            return graph

        def failed(failure: Failure) -> None:
            self._failed(failure, "snapshot")
            self._answer_graph(None)

        def answer(graph: RelationGraph | None) -> None:
            if graph is not None:
                self._answer_graph(graph)

        d.addCallbacks(read, failed)
        d.addCallback(answer)

    def _answer_graph(self, graph: RelationGraph | None) -> None:
        waiting, self._graph_waiting = self._graph_waiting or [], None
        for d in waiting:
            d.callback(graph)

    def newer(self, missing: tuple[tuple[str, str | None, str], ...]) -> Deferred[RelationGraph | None]:
        """
        For a statement naming relations or functions the current graph
        lacks (L{RelationGraph.reach}'s C{(kind, schema, name)}): a newer
        graph if one of them exists now (renamed or created since the
        snapshot), else the current one; C{None} if the catalog cannot be
        read.  The check is
        one small query, so names that exist nowhere (the table a CREATE
        TABLE makes, one created in a transaction not yet committed, a
        misspelt schema) cost no snapshot.
        """
        current = self._graph
        arguments: list[list[str]] = []
        for kind in ("relation", "function"):
            bare = [name for k, schema, name in missing if k == kind and schema is None]
            qualified = [(schema, name) for k, schema, name in missing if k == kind and schema is not None]
            arguments += [bare, [schema for schema, _ in qualified], [name for _, name in qualified]]
        d = self._connected()
        d.addCallback(lambda connection: connection.runQuery(_EXISTS, tuple(arguments)))

        def exists(rows: list[tuple[bool]]) -> Deferred[RelationGraph | None]:
            if rows[0][0] or current is None or current is not self._graph:
                if self._graph is current:
                    self._graph = None
                return self.graph()
            return succeed(current)

        def failed(failure: Failure) -> RelationGraph | None:
            self._failed(failure, "existence check")
            return None

        return d.addCallbacks(exists, failed)

    def known_origins(self, oids: Iterable[int]) -> dict[int, Relation] | None:
        """
        The relations L{origins} knows (at once) if it knows every one of
        C{oids} and what their views select, else C{None}; never at once
        for a view the connection's role may redefine (read for every
        result: a function can redefine it without the gateway seeing DDL).
        """
        if self._relations_until <= self.reactor.seconds():
            self._relations.clear()
            return None
        known = self._relations
        for oid in oids:
            if oid not in known:
                return None
        redefinable = _redefinable_views(known, oids)
        if redefinable:
            # A view the session's role may redefine (through code the
            # gateway does not see) is read again for every result.
            for oid in redefinable:
                del known[oid]
            return None
        return known

    def origins(self, oids: Iterable[int]) -> Deferred[Mapping[int, Relation] | None]:
        """
        Fires with the relations (by OID) that C{oids} name, and those their
        views select from, recursively (L{origins.column_names}); kept for
        C{graph_ttl} seconds and dropped by L{invalidate}.  An OID that
        names nothing (dropped meanwhile) is missing from the answer.  Fires
        with C{None} if the catalog cannot be read.
        """
        oids = tuple(oids)
        known = self.known_origins(oids)
        if known is not None:
            return succeed(known)
        if not self._relations:
            self._relations_until = self.reactor.seconds() + self.graph_ttl
        generation = self._generation
        wanted = [oid for oid in oids if oid not in self._relations]
        d = self._connected()

        def read(connection: Any, wanted: list[int], rounds: int) -> Deferred[dict[int, Relation]]:
            query: Deferred[list[tuple[Any, ...]]] = connection.runQuery(_RELATIONS, (wanted,))
            return query.addCallback(found, connection, wanted, rounds)

        def found(
            rows: list[tuple[Any, ...]], connection: Any, wanted: list[int], rounds: int
        ) -> dict[int, Relation] | Deferred[dict[int, Relation]]:
            fetched = [relation_from_row(row, self._former_columns) for row in rows]
            relations = self._relations if generation == self._generation else {}
            for relation in fetched:
                relations[relation.oid] = relation
            for oid in wanted:
                if oid not in relations:
                    # Gone (or never there): a placeholder, so it is not asked for again.
                    relations[oid] = Relation(oid, "", "", "", {})
            more = {o for r in fetched for o, _ in (r.origins or {}).values() if o not in relations}
            if more and rounds < 16:
                return read(connection, sorted(more), rounds + 1)
            return relations

        def failed(failure: Failure) -> None:
            self._failed(failure, "lookup of result columns")

        d.addCallback(read, wanted, 0)
        d.addErrback(failed)
        return d

    def invalidate(self) -> None:
        """Something may have changed the catalog (DDL ended in a session): read it again before the next use."""
        self._generation += 1
        self._graph = None
        self._relations.clear()

    def _failed(self, failure: Failure, what: str) -> None:
        """A read failed: say so, and drop the connection (the next read connects again)."""
        log.warn(
            "catalog {what} on {host}:{port} failed: {error}",
            what=what,
            host=self.parameters["host"],
            port=self.parameters["port"],
            error=failure.getErrorMessage(),
        )
        self.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # already closed by the server
                pass
