"""
What a statement reaches on the target, beyond the names it spells: a
pure model of the target's catalog (L{RelationGraph}, built from one
snapshot that L{catalog.Catalog} reads) that widens a statement's facts
(L{StatementInfo}) so that a rule on a table protects the table, not one
name for it.

A statement that reads or writes relation R also reads or writes:

  - R under every name it has had while the gateway watched the catalog
    (renamed, or its schema renamed, outside the gateway);
  - for an unqualified name C{t}: every relation called C{t}, in any
    schema.  Which one the server picks depends on the session's
    C{search_path} (and on temporary tables), which the server does not
    report and a function can change unseen; taking them all over-matches,
    the safe direction for deny and review rules;
  - R's inheritance ancestors and descendants (partitions are children):
    a partition's rows are its parent's, and a write to a parent lands in
    its children;
  - through a view: the relations and functions its definition uses
    (a materialized view's refresh reads them);
  - what runs when R is read: the functions of its row security policies,
    and C{s.f} / C{(s).f} may call C{f(s)} (column notation);
  - what runs when R is written, for the events the statement has (insert,
    update, delete, truncate, and "maintenance": ANALYZE, VACUUM, CLUSTER,
    REINDEX, CREATE INDEX, ALTER TABLE, REFRESH): R's rules, foreign keys
    (cascading deletes and updates; TRUNCATE ... CASCADE along all of them),
    triggers, and the functions of its column defaults, CHECK constraints,
    index and statistics expressions, row security policies and column
    types;
  - a type it names (C{1::guarded}, a column definition): its domains'
    CHECKs and defaults, also of the types it is made of, and casts to it;
  - a function it calls (by name; a bare name is every schema's): what its
    body reads, writes and calls, and what its parameter and result types
    run; an aggregate: what its state, final and combine functions do.

What a session makes in a transaction still open (the catalog cannot show
it yet) is followed from the statement that makes it: a table copying
another's expressions (LIKE, CREATE TABLE AS) runs them as it is made, a
child writes its parents, ALTER FUNCTION calls the function, and a rename
is undone by L{with_renames} until the transaction ends.

Bodies are read as the classifier reads them (L{body_statements}: SQL,
C{BEGIN ATOMIC}, PL/pgSQL's static statements with the function's own
parameters), and everything reached is followed again, to a fixed point.

What stays opaque: a body that runs dynamic SQL (PL/pgSQL's C{EXECUTE},
C{query_to_xml} and the like) or is in another language (PL/Python,
PL/Perl, ...) makes the statement C{unknown}, which the shipped policy
refuses.  A function in C -- only a
superuser can create one -- is judged by its name, which is added to
C{sql.functions}; as a trigger's function its arguments that name a
relation (contrib's C{refint} takes the table to cascade into) count as
written.  Operators, implicit casts between types the statement does not
name, event triggers, foreign tables and connections to other servers
(C{dblink}) are not followed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from attrs import evolve, frozen

from hoopgw.protocols.postgres.sql import UNKNOWN, StatementInfo, _with_text, body_statements, runs_sql_text

__all__ = [
    "EMPTY", "RelationGraph", "Routine", "changes_catalog", "events_of", "needs_catalog", "unreadable", "with_renames",
]

# Languages whose functions only a superuser can create: judged by name.
_TRUSTED_LANGUAGES = frozenset({"c", "internal"})

_CACHE_MAX = 4096

# Events: what a statement does to a relation it writes.  "m", maintenance:
# commands that evaluate a table's expressions over its existing rows
# (index expressions, CHECKs, domains, statistics, a materialized view's
# query) without inserting or updating any.
INSERT, UPDATE, DELETE, TRUNCATE, MAINTAIN = "i", "u", "d", "t", "m"
ALL_WRITES = frozenset("iudtm")
_MAINTAIN = frozenset("m")
_MOVES = frozenset("id")
_COPIED = frozenset("ium")
_CHILD_ROWS = frozenset("iu")
_KIND_EVENTS = {
    "insert": frozenset("i"),
    "copy": frozenset("i"),
    "update": frozenset("u"),
    "delete": frozenset("d"),
    "merge": frozenset("iud"),
    "truncate": frozenset("t"),
    **dict.fromkeys(
        ("refresh_materialized_view", "analyze", "vacuum", "cluster", "reindex", "create_index",
         "alter_table", "alter_index", "alter_materialized_view"),
        _MAINTAIN,
    ),
}
# Maintenance that names its tables as it reads them (VACUUM t, CREATE INDEX ON t).
_MAINTAINS_READS = frozenset({"analyze", "vacuum", "cluster", "reindex", "create_index"})
# Kinds whose effects cannot be seen: any event.
_OPAQUE = frozenset({UNKNOWN, "do", "call", "execute"})


def events_of(kinds: Iterable[str]) -> frozenset[str]:
    """The write events statements of these kinds can have (other DDL: none)."""
    events: frozenset[str] = frozenset()
    for kind in kinds:
        if kind in _OPAQUE:
            return ALL_WRITES
        events = events | _KIND_EVENTS.get(kind, frozenset())
    return events


@frozen
class Routine:
    """
    A function on the target (a trigger's, or one a statement calls): its
    schema and name, its language, its source (for a C{BEGIN ATOMIC} body,
    the whole definition).
    """

    schema: str
    name: str
    language: str
    source: str
    # Functions its parameter and result types run (a domain's CHECK).
    type_calls: tuple[str, ...] = ()

    @property
    def function(self) -> str:
        return f"{self.schema}.{self.name}"


@frozen
class _Effect:
    """What a function's body does, read once per snapshot."""

    function: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    unqualified: frozenset[str] = frozenset()
    calls: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    column_calls: tuple[str, ...] = ()
    operators: tuple[str, ...] = ()
    events: frozenset[str] = frozenset()
    # What a rule on statements matches in the body: its kinds (DROP,
    # TRUNCATE), an UPDATE or DELETE without WHERE, COPY ... PROGRAM.
    kinds: tuple[str, ...] = ()
    without_where: bool = False
    program: bool = False
    unknown: bool = False
    ddl: bool = False  # its body changes the catalog (CREATE OR REPLACE VIEW, ALTER TABLE, ...)


def _effect(routine: Routine) -> _Effect:
    if routine.language.lower() in _TRUSTED_LANGUAGES:
        return _Effect(routine.function, calls=routine.type_calls)
    infos = body_statements(routine.language, routine.source)
    if infos is None:  # PL/Python, PL/Perl, ...: not read
        return _Effect(routine.function, calls=routine.type_calls, unknown=True)
    return _Effect(
        routine.function,
        reads=tuple(dict.fromkeys(n for i in infos for n in i.reads)),
        writes=tuple(dict.fromkeys(n for i in infos for n in i.writes)),
        unqualified=frozenset(n for i in infos for n in i.unqualified),
        calls=(*dict.fromkeys(f for i in infos for f in i.functions), *routine.type_calls),
        types=tuple(dict.fromkeys(t for i in infos for t in i.types)),
        column_calls=tuple(dict.fromkeys(c for i in infos for c in i.column_calls)),
        operators=tuple(dict.fromkeys(o for i in infos for o in i.operators)),
        events=events_of(k for i in infos for k in i.kinds),
        kinds=tuple(dict.fromkeys(k for i in infos for k in i.kinds if k != UNKNOWN)),
        without_where=any(i.without_where for i in infos),
        program=any(i.program for i in infos),
        # EXECUTE p in a body runs what the calling session prepared as p.
        unknown=any(UNKNOWN in i.kinds or i.executes for i in infos),
        ddl=any(changes_catalog(i) for i in infos),
    )


def _temporary(schema: str) -> bool:
    """A session's temporary schema (pg_temp_3), which the session calls pg_temp."""
    return schema.startswith("pg_temp_")


def _findable(split: tuple[str | None, str]) -> tuple[str | None, str]:
    """A (schema, name) as the catalog can find it: pg_temp is pg_temp_N (any schema)."""
    return (None, split[1]) if split[0] == "pg_temp" else split


def _splits(name: str) -> list[tuple[str | None, str]]:
    """Every (schema, name) that C{schema.name} can be (either may contain dots)."""
    return [(name[:i], name[i + 1:]) for i, c in enumerate(name) if c == "."]


class RelationGraph:
    """
    One snapshot of the target's relations and what connects them (module
    docstring).  Immutable once built; L{reach} memoises its answers.
    """

    def __init__(
        self,
        relations: Iterable[tuple[int, str, str] | tuple[int, str, str, str]],
        *,
        inherits: Iterable[tuple[int, int]] = (),
        views: Iterable[tuple[int, int]] = (),
        rules: Iterable[tuple[int, str, int]] = (),
        cascades: Iterable[tuple[int, str, int, str]] = (),
        triggers: Iterable[tuple[int, str, Routine, tuple[str, ...]]] = (),
        uses: Iterable[tuple[int, str, str]] = (),
        functions: Iterable[Routine] = (),
        aggregates: Iterable[tuple[str, str, tuple[str, ...]]] = (),
        type_uses: Iterable[tuple[str, str, str]] = (),
        function_names: Iterable[tuple[str, str]] = (),
        operators: Iterable[tuple[str, str, str]] = (),
        known: Mapping[int, tuple[str, ...]] | None = None,
    ) -> None:
        """
        @param relations: C{(oid, schema, name[, relkind])} of every relation
            (relkind C{"m"}: a materialized view, which is read, not written
            through).
        @param inherits: C{(child, parent)}.
        @param views: C{(view, relation its definition reads)}.
        @param rules: C{(relation, events, relation the rule references)}.
        @param cascades: C{(referenced, events, referencing, its events)}: a
            foreign key's action, which on these events of the referenced
            table deletes (C{"d"}) or updates (C{"u"}) referencing rows.
        @param triggers: C{(relation, events, function, arguments)}.
        @param uses: C{(relation, events, function schema.name)}: a function
            that runs on these events of the relation (C{"r"}: reading it).
        @param functions: the functions whose bodies can be read (not C or
            internal ones).
        @param type_uses: C{(type schema, type name, function schema.name)}:
            a function that a value of that type runs (a domain's CHECK or
            default, also of the types it is made of; a cast to it).
        @param aggregates: C{(schema, name, the functions it runs)}: its
            state, final, combine, ... functions (not the server's own).
        @param function_names: C{(schema, name)} of every function, so that
            a call of one the snapshot lacks can be told apart.
        @param operators: C{(schema, symbol, function schema.name)} of the
            operators defined in the database (not the server's own): a
            statement using the symbol may run the function (any of them:
            which one depends on the operand types).
        @param known: every name each oid had in earlier snapshots.
        """
        self._oids: dict[str, list[int]] = {}
        self._by_relname: dict[str, list[int]] = {}
        self.names: dict[int, tuple[str, ...]] = {}
        self._materialized: set[int] = set()
        for oid, schema, name, *kind in relations:
            if kind and kind[0] == "m":
                self._materialized.add(oid)
            qualified = f"{schema}.{name}"
            self._oids.setdefault(qualified, []).append(oid)
            if _temporary(schema):  # a session writes its own as pg_temp.name
                self._oids.setdefault(f"pg_temp.{name}", []).append(oid)
            self._by_relname.setdefault(name, []).append(oid)
            earlier = (known or {}).get(oid, ())
            self.names[oid] = (qualified, *(n for n in earlier if n != qualified))
        # An earlier name still finds the relation: a rule written for it,
        # and clients that still use it.
        for oid, names in self.names.items():
            for name in names[1:]:
                self._oids.setdefault(name, []).append(oid)
        self._parents = _adjacency(inherits)
        self._children = _adjacency((parent, child) for child, parent in inherits)
        self._view_bases = _adjacency(views)
        # Rules' actions may do anything to what they reference.
        self._write_through: dict[int, list[tuple[frozenset[str], int, frozenset[str]]]] = {}
        for source, events, target, target_events in (*((s, e, t, "iud") for s, e, t in rules), *cascades):
            if source != target:
                self._write_through.setdefault(source, []).append((frozenset(events), target, frozenset(target_events)))
        effects: dict[Routine, _Effect] = {}

        def effect_of(routine: Routine) -> _Effect:
            effect = effects.get(routine)
            if effect is None:
                effect = effects[routine] = _effect(routine)
            return effect

        self._triggers: dict[int, list[tuple[frozenset[str], _Effect, tuple[str, ...]]]] = {}
        for oid, events, routine, arguments in triggers:
            effect = effect_of(routine)
            # A C trigger function's arguments may name the table it writes
            # (refint puts it unquoted into the SQL it builds: folded to lower case).
            targets = tuple(a.lower() for a in arguments) if routine.language.lower() in _TRUSTED_LANGUAGES else ()
            self._triggers.setdefault(oid, []).append((frozenset(events), effect, targets))
        self._uses: dict[int, list[tuple[frozenset[str], str]]] = {}
        for oid, events, function in uses:
            self._uses.setdefault(oid, []).append((frozenset(events), function))
        # By qualified name and by bare name (a call written without a
        # schema may be any of them, as a table name may).
        self._routines: dict[str, list[_Effect]] = {}
        for routine in functions:
            effect = effect_of(routine)
            self._routines.setdefault(routine.function, []).append(effect)
            self._routines.setdefault(routine.name, []).append(effect)
            if _temporary(routine.schema):
                self._routines.setdefault(f"pg_temp.{routine.name}", []).append(effect)
        for schema, name, runs in aggregates:
            effect = _Effect(f"{schema}.{name}", calls=runs)
            self._routines.setdefault(f"{schema}.{name}", []).append(effect)
            self._routines.setdefault(name, []).append(effect)
        self._type_uses: dict[str, list[str]] = {}
        for schema, name, function in type_uses:
            self._type_uses.setdefault(f"{schema}.{name}", []).append(function)
            self._type_uses.setdefault(name, []).append(function)
        self._function_names: set[str] = set()
        for schema, name in function_names:
            self._function_names.add(f"{schema}.{name}")
            self._function_names.add(name)
            if _temporary(schema):
                self._function_names.add(f"pg_temp.{name}")
        self._operators: dict[str, list[str]] = {}
        for schema, symbol, function in operators:
            for key in (symbol, f"{schema}.{symbol}", *((f"pg_temp.{symbol}",) if _temporary(schema) else ())):
                self._operators.setdefault(key, []).append(function)
        self._expanded: dict[tuple[Any, ...], tuple[StatementInfo | None, tuple[tuple[str, str | None, str], ...]]] = {}

    # -- resolution ------------------------------------------------------

    def resolve(self, names: Iterable[str], unqualified: Iterable[str]) -> set[int]:
        """The relations C{names} can be (C{public.t} written as C{t}: any schema)."""
        bare = set(unqualified)
        oids: set[int] = set()
        for name in names:
            oids.update(self._oids.get(name, ()))
            schema, _, relname = name.partition(".")
            if schema == "public" and relname in bare:
                oids.update(self._by_relname.get(relname, ()))
        return oids

    def _closure(self, start: Iterable[int], edges: Mapping[int, list[int]]) -> set[int]:
        seen: set[int] = set()
        work = list(start)
        while work:
            oid = work.pop()
            if oid not in seen:
                seen.add(oid)
                work.extend(edges.get(oid, ()))
        return seen

    def _family(self, oid: int) -> set[int]:
        """C{oid} with its ancestors and descendants (not its siblings)."""
        return self._closure((oid,), self._parents) | self._closure((oid,), self._children)

    def expand(self, info: StatementInfo) -> StatementInfo:
        """C{info} with everything it reaches on the target (module docstring)."""
        return self.reach(info)[0]

    def reach(self, info: StatementInfo) -> tuple[StatementInfo, tuple[tuple[str, str | None, str], ...]]:
        """
        L{expand}'s answer, and what C{info} names that this snapshot does
        not hold, as C{(kind, schema, name)} (kind C{"relation"} or
        C{"function"}; schema C{None}: any, the name was written without
        one): if one exists now, a newer snapshot knows it (renamed or
        created since this one).
        """
        if not needs_catalog(info):
            return info, ()
        key = (
            info.kinds, info.reads, info.writes, info.functions, info.unqualified, info.without_where,
            info.program, info.writes_data, info.prepared_name, info.copy_in, info.settings, info.executes,
            info.types, info.column_calls, info.operators,
        )
        cached = self._expanded.get(key)
        if cached is None:
            expanded = self._expand(info)
            # None: nothing reached beyond what it names (the common case).
            cached = (expanded if expanded is not info else None, self._missing(info))
            if len(self._expanded) >= _CACHE_MAX:
                self._expanded.clear()
            self._expanded[key] = cached
        template, missing = cached
        if template is None:
            return info, missing
        if template.text == info.text:
            return template, missing
        return _with_text(template, info.text), missing

    def _missing(self, info: StatementInfo) -> tuple[tuple[str, str | None, str], ...]:
        bare = set(info.unqualified)
        missing: dict[tuple[str, str | None, str], None] = {}
        for name in (*info.reads, *info.writes):
            schema, _, relname = name.partition(".")
            if schema == "public" and relname in bare:
                if relname not in self._by_relname:
                    missing["relation", None, relname] = None
            elif name not in self._oids:
                for split in _splits(name):
                    missing[("relation", *_findable(split))] = None
        for name in info.functions:
            if name not in self._function_names:
                splits = _splits(name)
                for split in splits or [(None, name)]:
                    missing[("function", *_findable(split))] = None
        return tuple(missing)

    def _expand(self, info: StatementInfo) -> StatementInfo:
        functions: dict[str, None] = {}
        body_kinds: dict[str, None] = {}
        without_where = info.without_where
        program = info.program
        unknown = False
        ddl = False
        read: set[int] = set()
        written: dict[int, frozenset[str]] = {}
        to_read = self.resolve(info.reads, info.unqualified)
        statement_events = events_of(info.kinds)
        to_write = [(oid, statement_events) for oid in self.resolve(info.writes, info.unqualified)]
        if not _MAINTAINS_READS.isdisjoint(info.kinds):
            # ANALYZE, VACUUM, REINDEX SCHEMA/DATABASE naming no table: every one.
            maintained = to_read or set(self.names)
            to_write += [(oid, _MAINTAIN) for oid in maintained]
        to_call = list(info.functions)
        # The routines the statement calls by name, and what they call: their
        # bodies' kinds and WHERE-less writes are the statement's own.  A
        # trigger's or a default's are the table's design (a counter kept,
        # a cache cleared), not this statement's slip: their tables count.
        explicit = set(info.functions)
        # (By identity: an equal body a trigger reached is not a call.)
        explicit_effects: set[int] = set()
        if "create_table" in info.kinds:
            # LIKE ... INCLUDING, CREATE TABLE AS, SELECT INTO copy their
            # sources' defaults, CHECKs, indexes, generated columns and column
            # types: they run on the new table's rows, before any catalog shows it.
            for oid in to_read:
                for member in self._family(oid):
                    to_call += [f for fires, f in self._uses.get(member, ()) if fires & _COPIED]
            # A child (INHERITS, PARTITION OF) takes its parents' CHECKs,
            # defaults, column types and partition key, and a partition their
            # row triggers: rows written to it in this transaction run them as
            # rows written to the parents (what it writes) would.
            to_write = [(oid, events | _CHILD_ROWS) for oid, events in to_write]
        to_call += [name for name in info.column_calls if name in self._routines]  # s.f is f(s)
        for operator in info.operators:
            to_call += self._operators.get(operator, ())
        for name in info.types:
            to_call += self._type_uses.get(name, ())
        called: set[str] = set()
        while to_read or to_write or to_call:
            effects: list[_Effect] = []
            while to_call:
                name = to_call.pop()
                if name not in called:
                    called.add(name)
                    routine = self._routines.get(name, ())
                    effects.extend(routine)
                    if name in explicit:
                        for effect in routine:
                            explicit.update(effect.calls)
                            explicit_effects.add(id(effect))
                    # query_to_xml, crosstab, ... reached through an operator,
                    # an aggregate, a default: what they run cannot be read.
                    unknown = unknown or runs_sql_text(name)
                    # guarded(1) is a cast to the type guarded
                    to_call.extend(self._type_uses.get(name, ()))
            while to_read:
                oid = to_read.pop()
                for member in self._family(oid):
                    if member in read:
                        continue
                    read.add(member)
                    to_read.update(self._view_bases.get(member, ()))
                    to_call.extend(f for events, f in self._uses.get(member, ()) if "r" in events)
            while to_write:
                oid, events = to_write.pop()
                if UPDATE in events and self._children.get(oid):
                    # An UPDATE moving a row to another partition deletes it
                    # from one and inserts it into the other.
                    events = events | _MOVES
                for member in self._family(oid):
                    done = written.get(member)
                    if done is not None and events <= done:
                        continue
                    written[member] = events | done if done is not None else events
                    # A write through a view lands in its base relations; a
                    # materialized view's refresh reads them.
                    if member in self._materialized:
                        to_read.update(self._view_bases.get(member, ()))
                    else:
                        to_write.extend((base, events) for base in self._view_bases.get(member, ()))
                    for fires, target, target_events in self._write_through.get(member, ()):
                        if fires & events:
                            to_write.append((target, target_events))
                    for fires, effect, targets in self._triggers.get(member, ()):
                        if fires & events:
                            effects.append(effect)
                            to_write.extend((o, ALL_WRITES) for o in self.resolve(
                                [f"public.{t}" if "." not in t else t for t in targets],
                                [t for t in targets if "." not in t],
                            ))
                    to_call.extend(f for fires, f in self._uses.get(member, ()) if fires & events)
            for effect in effects:
                functions[effect.function] = None
                functions.update(dict.fromkeys(effect.calls))
                to_call.extend(effect.calls)
                to_call.extend(n for n in effect.column_calls if n in self._routines)
                for operator in effect.operators:
                    to_call.extend(self._operators.get(operator, ()))
                for name in effect.types:
                    to_call.extend(self._type_uses.get(name, ()))
                unknown = unknown or effect.unknown
                ddl = ddl or effect.ddl
                if id(effect) in explicit_effects:
                    body_kinds.update(dict.fromkeys(effect.kinds))
                    without_where = without_where or effect.without_where
                program = program or effect.program
                to_read |= self.resolve(effect.reads, effect.unqualified) - read
                to_write.extend((oid, effect.events) for oid in self.resolve(effect.writes, effect.unqualified))
        extra_reads = [n for oid in read for n in self.names.get(oid, ())]
        extra_writes = [n for oid in written for n in self.names.get(oid, ())]
        new_reads = tuple(dict.fromkeys((*info.reads, *sorted(extra_reads))))
        new_writes = tuple(dict.fromkeys((*info.writes, *sorted(extra_writes))))
        new_functions = tuple(dict.fromkeys((*info.functions, *functions)))
        # What the bodies run is judged as the statement's own (after its own kinds).
        kinds = tuple(dict.fromkeys((*info.kinds, *body_kinds)))
        if unknown and UNKNOWN not in kinds:
            kinds = (*kinds, UNKNOWN)
        if (new_reads, new_writes, new_functions, kinds, ddl, without_where, program) == (
            info.reads, info.writes, info.functions, info.kinds, info.changes_catalog, info.without_where, info.program
        ):
            return info
        return evolve(
            info,
            kinds=kinds,
            without_where=without_where,
            program=program,
            changes_catalog=info.changes_catalog or ddl,
            reads=new_reads,
            writes=new_writes,
            functions=new_functions,
            writes_data=info.writes_data or bool(new_writes) or unknown,
        )


def _adjacency(pairs: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    edges: dict[int, list[int]] = {}
    for source, target in pairs:
        if source != target:
            edges.setdefault(source, []).append(target)
    return edges


EMPTY = RelationGraph(())


def unreadable(info: StatementInfo) -> StatementInfo:
    """C{info} when the target's catalog cannot be read: what it reaches is unknown."""
    if UNKNOWN in info.kinds:
        return info
    return evolve(info, kinds=(*info.kinds, UNKNOWN), writes_data=True)


def with_renames(info: StatementInfo, renamed: Mapping[str, str]) -> StatementInfo:
    """
    C{info} with the earlier name of each relation it names that this
    session renamed (or moved) in a transaction still open: the target's
    catalog cannot show the new name yet, so the old one finds it.
    C{renamed} maps new qualified names to old ones.
    """
    bare = {new.rpartition(".")[2]: old for new, old in renamed.items()}
    unqualified = set(info.unqualified)

    def old_names(names: tuple[str, ...]) -> tuple[str, ...]:
        found = []
        for name in names:
            old = renamed.get(name)
            relname = name.partition(".")[2]
            if old is None and name.startswith("public.") and relname in unqualified:
                old = bare.get(relname)
            if old is not None:
                found.append(old)
        return tuple(dict.fromkeys((*names, *found)))

    reads, writes = old_names(info.reads), old_names(info.writes)
    if reads == info.reads and writes == info.writes:
        return info
    return evolve(info, reads=reads, writes=writes)


def needs_catalog(info: StatementInfo) -> bool:
    """Whether C{info} can reach anything through the catalog (else it is judged as it is)."""
    return bool(
        info.reads or info.writes or info.functions or info.types or info.column_calls
    ) or not _MAINTAINS_READS.isdisjoint(info.kinds) or not _COMMON_OPERATORS.issuperset(info.operators)


# Operators of the server's own that statements naming nothing else use all
# the time (1 + 1, a = b): a statement using only these needs no snapshot.
# Others (###, OPERATOR(s.+)) may be the database's own, which run a function.
_COMMON_OPERATORS = frozenset({
    "+", "-", "*", "/", "%", "^", "=", "<", ">", "<=", ">=", "<>", "!=", "||", "~~", "!~~", "~~*", "!~~*",
    "~", "~*", "!~", "!~*", "&", "|", "#", "<<", ">>", "@>", "<@", "&&", "->", "->>", "#>", "#>>", "?",
    "?|", "?&", "@@", "BETWEEN", "NOT BETWEEN", "BETWEEN SYMMETRIC", "NOT BETWEEN SYMMETRIC",
})


# Kinds that can change what the graph holds, besides CREATE/ALTER.
_CHANGES = frozenset({"drop", "do", "call", "execute", UNKNOWN, "import_foreign_schema"})


_changes_by_kind: dict[str, bool] = {}


def changes_catalog(info: StatementInfo) -> bool:
    """Whether C{info} may change relations, their names or what connects them (also through functions it calls)."""
    if info.changes_catalog:
        return True
    for kind in info.kinds:
        changes = _changes_by_kind.get(kind)
        if changes is None:  # kinds are a small, fixed vocabulary
            changes = _changes_by_kind[kind] = kind in _CHANGES or kind.startswith(("create_", "alter_"))
        if changes:
            return True
    return False
