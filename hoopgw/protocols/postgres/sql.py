"""
SQL classification with the real PostgreSQL parser (pglast / libpg_query):
what each statement of a query string is, reads, writes and calls, as the
facts (L{StatementInfo.attributes}) that C{sql.*} policy conditions match.

Pure functions and values, no I/O.  A statement is judged by every
statement it contains: CTEs (C{WITH d AS (DELETE ...) SELECT}), subqueries,
C{EXPLAIN [ANALYZE]}, C{PREPARE}, C{CREATE TABLE AS}, C{COPY (query)},
C{DECLARE ... CURSOR FOR}, C{CREATE SCHEMA}'s elements.  Comments, case,
whitespace and dollar quoting are the parser's business, so they cannot
hide a statement from it.

What the gateway cannot see:

  - the body of C{DO} (PL/pgSQL, and any dynamic SQL it builds) and of the
    functions and procedures a statement calls: C{DO} is kind C{do}, a call
    names its function in C{functions} (C{CALL} is kind C{call}); a policy
    that must be sure denies or reviews them (the PostgreSQL front end
    reads the bodies of functions that exist on the target, see
    L{hoopgw.protocols.postgres.reach}, and L{body_statements});
  - C{search_path}: an unqualified table C{t} is reported as C{public.t}
    (and listed in C{unqualified}).  What it resolves to depends on the
    session's C{search_path} (and on temporary tables), which a static
    classifier cannot know; reporting C{public.t} makes a rule about
    C{public.t} catch both spellings, and the PostgreSQL front end adds
    every relation of that name through the target's catalog
    (L{hoopgw.protocols.postgres.reach}), as it does for what views,
    partitions, rules, triggers and called functions reach.

Kinds (L{StatementInfo.kinds}), the top-level statement's first:

  - C{select insert update delete merge copy truncate drop grant revoke do
    call prepare execute deallocate explain set reset show listen unlisten
    notify vacuum analyze lock declare fetch move close discard checkpoint
    load cluster reindex comment security_label refresh_materialized_view
    reassign_owned import_foreign_schema set_constraints};
  - transactions, one kind per command: C{begin} (also START TRANSACTION)
    C{commit rollback savepoint release_savepoint rollback_to_savepoint
    prepare_transaction commit_prepared rollback_prepared};
  - C{create_<object>} / C{alter_<object>} for DDL, the object as SQL names
    it: C{create_table} (also CREATE TABLE AS and SELECT INTO),
    C{create_materialized_view}, C{create_view}, C{create_index},
    C{create_function}, C{create_procedure}, C{create_schema},
    C{create_extension}, C{create_role}, C{create_database},
    C{alter_table}, C{alter_index}, C{alter_sequence}, C{alter_role},
    C{alter_system}, ...; every C{DROP ...} (table, database, role, owned,
    ...) is C{drop};
  - also named: the row operations of C{MERGE}'s actions and of C{INSERT
    ... ON CONFLICT DO UPDATE} (C{update}, C{delete}, C{insert}), and the
    C{deallocate} that C{DISCARD ALL} does;
  - C{unknown}: text the parser refuses (then the only kind, for the
    whole string: PostgreSQL runs none of a query string that does not
    parse), or a statement nested too deeply to walk (then followed by the
    kinds its keywords suggest, see L{_lexical}).

An empty string, or one of only comments, classifies as C{()}.

Caching: L{classify} is memoised by exact text (LRU, 4096 entries), and
a single-statement text also by its literal-normalised form
(C{pglast.parser.normalize}: constants become C{$n}, every other byte is
kept), so texts differing only in literals (simple-protocol traffic) share
one classification and only the statement text is rebuilt; see
L{_shapes}.  A key of C{pglast.parser.fingerprint} is deliberately *not*
used: the fingerprint also ignores schema names (C{t} and C{s.t}), digits
in names (C{payments_2024} and C{payments_2025}), prepared-statement names
and a constant C{WHERE} (C{DELETE FROM t} and C{DELETE FROM t WHERE
true}), so it would hand one statement another's classification; the
normalised text keeps all of those.
"""

from __future__ import annotations

import functools
import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from attrs import define, evolve, field, fields, frozen
from pglast import parser as _pg

__all__ = ["PreparedStatements", "StatementInfo", "body_statements", "classify", "mentions_secret", "parameter_holds_secret", "recordable", "redact_secrets", "runs_sql_text", "statement_info"]

UNKNOWN = "unknown"

# Kinds whose effects the gateway cannot see statically: they may write.
_OPAQUE = frozenset({"do", "call", "execute", UNKNOWN})


def _strs(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _pairs(value: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(value)


@frozen
class StatementInfo:
    """
    What one top-level statement is.

    @ivar text: the statement's exact text in the query string, from its
        first token to its end (comments inside kept), for auditing
        statements one by one.
    @ivar kinds: lower-case kinds of every statement it contains, the
        top-level one first, each once.
    @ivar reads: tables read, C{schema.table} (unqualified: C{public.NAME}).
        The targets of C{UPDATE}, C{DELETE} and C{MERGE} are read as well as
        written (their rows are filtered and can be returned).
    @ivar writes: tables whose rows or definition the statement changes:
        inserted into, updated, deleted from, merged into, copied into,
        truncated, created (also C{CREATE TABLE AS}, C{SELECT INTO}, views),
        altered, renamed, dropped, refreshed.
    @ivar functions: functions called, C{schema.name} when written so,
        else the bare name.  Syntax the parser turns into calls shows up
        qualified: C{EXTRACT(...)} is C{pg_catalog.extract}.
    @ivar without_where: an C{UPDATE} or C{DELETE} inside has no C{WHERE}
        (C{WHERE CURRENT OF} counts as a C{WHERE}: it touches one row).
    @ivar program: C{COPY ... TO/FROM PROGRAM} (runs a shell command on
        the database server).
    @ivar writes_data: it writes a table, or it is a kind whose effects
        cannot be seen (C{do}, C{call}, C{execute}, C{unknown}).  Functions
        called are not seen through here (the PostgreSQL front end reads
        their bodies in the target's catalog, L{hoopgw.protocols.postgres.reach}).
    @ivar prepared_name: the name in C{PREPARE}, C{EXECUTE} and
        C{DEALLOCATE}; C{None} for C{DEALLOCATE ALL} / C{DISCARD ALL}.
    @ivar executes: names of the prepared statements it runs with
        C{EXECUTE}, at any depth (C{EXPLAIN ANALYZE EXECUTE p}, C{CREATE
        TABLE t AS EXECUTE p}).
    @ivar copy_in: a C{COPY ... FROM STDIN}: the server reads the client's
        next messages as data (copy-in mode) if it starts.
    @ivar unqualified: the relation names in C{reads} and C{writes} that
        were written without a schema (C{t}, reported as C{public.t}): which
        relation they are depends on the session's C{search_path}, so the
        target's catalog resolves them (L{hoopgw.protocols.postgres.reach}).
        Not a fact rules match.
    @ivar types: type names it uses (casts, column definitions), as
        written (C{int} is C{pg_catalog.int4}): a domain's CHECK and
        default, a cast's function run through them.  Not a fact rules match.
    @ivar column_calls: the last name of every qualified column reference
        (C{s.f}, C{(s).f}), which may be a function called in column
        notation, C{f(s)}.  Not a fact rules match.
    @ivar operators: the operators it uses, as written (C{=},
        C{pg_temp.###} for C{OPERATOR(pg_temp.###)}): one defined in the
        database runs its function.  Not a fact rules match.
    @ivar renames: C{(old, new)} qualified names of the relations it renames
        or moves to another schema, so that a session can follow them before
        the target's catalog can.  Not a fact rules match.
    @ivar changes_catalog: a function it calls runs DDL (its body, read in
        the target's catalog by L{hoopgw.protocols.postgres.reach}).  Not a
        fact rules match.
    @ivar settings: run-time parameters it sets or resets (C{SET},
        C{RESET}, also inside C{ALTER ROLE ... SET}), lower-case; C{all}
        for C{RESET ALL}.  Values are literals, so they are not facts (see
        L{_shapes}): a caller that cares reads them from the text.
    """

    text: str
    kinds: tuple[str, ...] = field(converter=_strs)
    reads: tuple[str, ...] = field(default=(), converter=_strs)
    writes: tuple[str, ...] = field(default=(), converter=_strs)
    functions: tuple[str, ...] = field(default=(), converter=_strs)
    without_where: bool = False
    program: bool = False
    writes_data: bool = False
    prepared_name: str | None = None
    copy_in: bool = False
    settings: tuple[str, ...] = field(default=(), converter=_strs)
    executes: tuple[str, ...] = field(default=(), converter=_strs)
    unqualified: tuple[str, ...] = field(default=(), converter=_strs)
    types: tuple[str, ...] = field(default=(), converter=_strs)
    column_calls: tuple[str, ...] = field(default=(), converter=_strs)
    operators: tuple[str, ...] = field(default=(), converter=_strs)
    renames: tuple[tuple[str, str], ...] = field(default=(), converter=_pairs)
    changes_catalog: bool = False
    # Built once: the same statement is judged on every execution.
    _attributes: Mapping[str, Any] = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_attributes", MappingProxyType({
            "sql.statements": self.kinds,
            "sql.reads": self.reads,
            "sql.writes": self.writes,
            "sql.functions": self.functions,
            "sql.without_where": self.without_where,
            "sql.program": self.program,
        }))

    def attributes(self) -> Mapping[str, Any]:
        """The facts for C{Action.attributes} (a read-only mapping)."""
        return self._attributes


# -- statement kinds ----------------------------------------------------------

_TRANSACTION = {
    "TRANS_STMT_BEGIN": "begin",
    "TRANS_STMT_START": "begin",
    "TRANS_STMT_COMMIT": "commit",
    "TRANS_STMT_ROLLBACK": "rollback",
    "TRANS_STMT_SAVEPOINT": "savepoint",
    "TRANS_STMT_RELEASE": "release_savepoint",
    "TRANS_STMT_ROLLBACK_TO": "rollback_to_savepoint",
    "TRANS_STMT_PREPARE": "prepare_transaction",
    "TRANS_STMT_COMMIT_PREPARED": "commit_prepared",
    "TRANS_STMT_ROLLBACK_PREPARED": "rollback_prepared",
}

# ALTER TABLE subcommands that destroy data, as a DROP does (the kind "drop"
# is added); DROP CONSTRAINT, a routine migration step, destroys none.
_DROPPING_SUBCOMMANDS = frozenset({"AT_DropColumn"})

# Node names whose generic spelling (CamelCase minus "Stmt", snake_cased)
# is not what SQL calls the statement.
_NAMED = {
    "SelectStmt": "select", "InsertStmt": "insert", "UpdateStmt": "update",
    "DeleteStmt": "delete", "MergeStmt": "merge", "CopyStmt": "copy",
    "TruncateStmt": "truncate", "DoStmt": "do", "CallStmt": "call",
    "PrepareStmt": "prepare", "ExecuteStmt": "execute", "DeallocateStmt": "deallocate",
    "ExplainStmt": "explain", "VariableShowStmt": "show", "ListenStmt": "listen",
    "UnlistenStmt": "unlisten", "NotifyStmt": "notify", "LockStmt": "lock",
    "DeclareCursorStmt": "declare", "ClosePortalStmt": "close", "DiscardStmt": "discard",
    "CheckPointStmt": "checkpoint", "LoadStmt": "load", "ClusterStmt": "cluster",
    "ReindexStmt": "reindex", "CommentStmt": "comment", "SecLabelStmt": "security_label",
    "ConstraintsSetStmt": "set_constraints",
    "DropStmt": "drop", "DropOwnedStmt": "drop", "DropRoleStmt": "drop",
    "DropSubscriptionStmt": "drop", "DropTableSpaceStmt": "drop",
    "DropUserMappingStmt": "drop", "DropdbStmt": "drop",
    "CreateStmt": "create_table", "ViewStmt": "create_view", "IndexStmt": "create_index",
    "CreatedbStmt": "create_database", "CreateSeqStmt": "create_sequence",
    "CreateTrigStmt": "create_trigger", "CreateEventTrigStmt": "create_event_trigger",
    "CreatePLangStmt": "create_language", "CreateFdwStmt": "create_foreign_data_wrapper",
    "CreateForeignServerStmt": "create_server", "CreateTableSpaceStmt": "create_tablespace",
    "CreateStatsStmt": "create_statistics", "CreateAmStmt": "create_access_method",
    "CreateOpClassStmt": "create_operator_class", "CreateOpFamilyStmt": "create_operator_family",
    "CompositeTypeStmt": "create_type", "CreateEnumStmt": "create_type",
    "CreateRangeStmt": "create_type", "RuleStmt": "create_rule",
    "AlterSeqStmt": "alter_sequence", "AlterEnumStmt": "alter_type",
    "AlterEventTrigStmt": "alter_event_trigger", "AlterFdwStmt": "alter_foreign_data_wrapper",
    "AlterForeignServerStmt": "alter_server", "AlterTableMoveAllStmt": "alter_table",
    "AlterTableSpaceOptionsStmt": "alter_tablespace", "AlterRoleSetStmt": "alter_role",
    "AlterDatabaseSetStmt": "alter_database", "AlterDatabaseRefreshCollStmt": "alter_database",
    "AlterTSConfigurationStmt": "alter_text_search_configuration",
    "AlterTSDictionaryStmt": "alter_text_search_dictionary",
    "AlterOpFamilyStmt": "alter_operator_family", "AlterStatsStmt": "alter_statistics",
    "AlterExtensionContentsStmt": "alter_extension", "ReplicaIdentityStmt": "alter_table",
    "RefreshMatViewStmt": "refresh_materialized_view",
}

_OBJECTS = {
    "matview": "materialized_view", "tabconstraint": "table", "domconstraint": "domain",
    "fdw": "foreign_data_wrapper", "foreign_server": "server", "opclass": "operator_class",
    "opfamily": "operator_family", "tsconfiguration": "text_search_configuration",
    "tsdictionary": "text_search_dictionary", "tsparser": "text_search_parser",
    "tstemplate": "text_search_template", "amop": "operator_family",
    "amproc": "operator_family", "largeobject": "large_object", "routine": "function",
}

# Objects that are relations: naming one in DDL writes it.
_RELATIONS = frozenset({
    "OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_FOREIGN_TABLE",
    "OBJECT_SEQUENCE", "OBJECT_COLUMN", "OBJECT_TABCONSTRAINT",
})

# Options naming a function that the object made or altered runs:
# operators (and the planner's estimators), aggregates, ranges, base types.
_ROUTINE_OPTIONS = frozenset({
    "function", "procedure", "restrict", "join",
    "sfunc", "sfunc1", "finalfunc", "combinefunc", "serialfunc", "deserialfunc",
    "msfunc", "minvfunc", "mfinalfunc",
    "subtype_diff", "canonical",
    "input", "output", "receive", "send", "typmod_in", "typmod_out", "analyze", "subscript",
})

# A trigger argument that reads as a (schema-qualified) table name.
_TABLE_TEXT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?")

# Objects that run code when called.
_ROUTINES = frozenset({"OBJECT_FUNCTION", "OBJECT_PROCEDURE", "OBJECT_ROUTINE", "OBJECT_AGGREGATE"})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _object(objtype: str | None) -> str:
    name = (objtype or "OBJECT_TABLE").removeprefix("OBJECT_").lower()
    return _OBJECTS.get(name, name)


@functools.lru_cache(maxsize=None)
def _generic_kind(node: str) -> str:
    return _CAMEL.sub("_", node.removesuffix("Stmt")).lower()


# -- the walk -----------------------------------------------------------------


def _name(rangevar: Mapping[str, Any]) -> str:
    # The catalog (database) part of a.b.c is ignored: PostgreSQL only
    # allows the current database there.
    return f"{rangevar.get('schemaname', 'public')}.{rangevar['relname']}"


def _dotted(names: Iterable[Any]) -> str:
    return ".".join(n["String"]["sval"] for n in names if "String" in n)


class _Walker:
    """
    Collects the facts of one statement from its JSON parse tree.

    Nodes typed as C{Node *} come wrapped as C{{"TypeName": {...}}}; fields
    of a fixed type (a statement's C{relation}, an C{IntoClause}) come
    unwrapped, and an unwrapped dict with C{relname} is a C{RangeVar}.
    """

    def __init__(self) -> None:
        self.kinds: dict[str, None] = {}
        self.reads: dict[str, None] = {}
        self.writes: dict[str, None] = {}
        self.functions: dict[str, None] = {}
        self.without_where = False
        self.program = False
        self.prepared_name: str | None = None
        self.copy_in = False
        self.settings: dict[str, None] = {}
        self.executes: dict[str, None] = {}
        self.unqualified: dict[str, None] = {}
        self.types: dict[str, None] = {}
        self.column_calls: dict[str, None] = {}
        self.operators: dict[str, None] = {}
        self.renames: dict[str, str] = {}
        self.source: str | None = None  # the top-level statement's text, for CREATE FUNCTION
        # Facts read from a literal (a function body): not to be shared by
        # texts of the same normalised shape (see _shapes).
        self.from_literal = False

    def info(self, text: str) -> StatementInfo:
        kinds = tuple(self.kinds) or (UNKNOWN,)
        return StatementInfo(
            text=text,
            kinds=kinds,
            reads=tuple(self.reads),
            writes=tuple(self.writes),
            functions=tuple(self.functions),
            without_where=self.without_where,
            program=self.program,
            writes_data=bool(self.writes) or not _OPAQUE.isdisjoint(kinds),
            prepared_name=self.prepared_name,
            copy_in=self.copy_in,
            settings=tuple(self.settings),
            executes=tuple(self.executes),
            unqualified=tuple(self.unqualified),
            types=tuple(self.types),
            column_calls=tuple(self.column_calls),
            operators=tuple(self.operators),
            renames=tuple(self.renames.items()),
        )

    def walk(self, value: Any, ctes: frozenset[str]) -> None:
        if isinstance(value, list):
            for item in value:
                if isinstance(item, (dict, list)):
                    self.walk(item, ctes)
            return
        if not isinstance(value, dict):
            return
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key[0].isupper() and isinstance(inner, dict):
                handler = _HANDLERS.get(key)
                if handler is not None:
                    handler(self, inner, ctes)
                else:
                    if key.endswith("Stmt"):
                        self.kinds[_generic_kind(key)] = None
                    self.walk_fields(inner, ctes)
                return
        if "relname" in value:
            self.read(value, ctes)
            return
        if "names" in value and "typemod" in value:  # a TypeName
            name = _dotted(value["names"])
            if name:
                self.types[name] = None
        self.walk_fields(value, ctes)

    def walk_fields(self, node: Mapping[str, Any], ctes: frozenset[str], *skip: str) -> None:
        for key, item in node.items():
            if isinstance(item, (dict, list)) and key not in skip:
                self.walk(item, ctes)

    def read(self, rangevar: Mapping[str, Any], ctes: frozenset[str]) -> None:
        # An unqualified name of a CTE in scope is that CTE, not a table.
        if "schemaname" in rangevar or rangevar["relname"] not in ctes:
            self.reads[_name(rangevar)] = None
            if "schemaname" not in rangevar:
                self.unqualified[rangevar["relname"]] = None

    def write(self, rangevar: Mapping[str, Any] | None, also_read: bool = False) -> None:
        # A write target is never a CTE: PostgreSQL resolves it to a table.
        if rangevar:
            name = _name(rangevar)
            self.writes[name] = None
            if "schemaname" not in rangevar:
                self.unqualified[rangevar["relname"]] = None
            if also_read:
                self.reads[name] = None

    def with_clause(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> frozenset[str]:
        """Walk a statement's CTEs; return the names in scope for its body."""
        clause = stmt.get("withClause")
        if not clause:
            return ctes
        entries = [c["CommonTableExpr"] for c in clause.get("ctes", ()) if "CommonTableExpr" in c]
        names = [e["ctename"] for e in entries]
        if clause.get("recursive"):
            # WITH RECURSIVE: every CTE sees every other (and itself).
            scope = ctes.union(names)
            for entry in entries:
                self.walk_fields(entry, scope)
            return scope
        # Plain WITH: a CTE sees only the ones before it, so a later CTE's
        # name in an earlier one is a real table (do not under-report it).
        scope = ctes
        for entry in entries:
            self.walk_fields(entry, scope)
            scope = scope | {entry["ctename"]}
        return scope

    # Statement handlers: record the kind, the targets, then walk the rest.

    def select(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["select"] = None
        scope = self.with_clause(stmt, ctes)
        into = stmt.get("intoClause")
        if into:  # SELECT INTO creates and fills a table
            self.kinds["create_table"] = None
            self.write(into.get("rel"))
            self.walk_fields(into, scope, "rel")
        for arm in ("larg", "rarg"):  # set operations: typed SelectStmt
            if arm in stmt:
                self.select(stmt[arm], scope)
        self.walk_fields(stmt, scope, "withClause", "intoClause", "larg", "rarg")

    def insert(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["insert"] = None
        scope = self.with_clause(stmt, ctes)
        self.write(stmt.get("relation"))
        conflict = stmt.get("onConflictClause")
        if conflict and conflict.get("action") == "ONCONFLICT_UPDATE":
            self.kinds["update"] = None
        self.walk_fields(stmt, scope, "withClause", "relation")

    def update(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self._modify("update", stmt, ctes)

    def delete(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self._modify("delete", stmt, ctes)

    def _modify(self, kind: str, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds[kind] = None
        scope = self.with_clause(stmt, ctes)
        self.write(stmt.get("relation"), also_read=True)
        # WHERE CURRENT OF is a whereClause (CurrentOfExpr): one row.
        if not stmt.get("whereClause"):
            self.without_where = True
        self.walk_fields(stmt, scope, "withClause", "relation")

    def merge(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["merge"] = None
        scope = self.with_clause(stmt, ctes)
        self.write(stmt.get("relation"), also_read=True)
        for clause in stmt.get("mergeWhenClauses", ()):
            command = clause.get("MergeWhenClause", {}).get("commandType", "")
            if command in ("CMD_UPDATE", "CMD_DELETE", "CMD_INSERT"):
                self.kinds[command.removeprefix("CMD_").lower()] = None
        self.walk_fields(stmt, scope, "withClause", "relation")

    def copy(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["copy"] = None
        relation = stmt.get("relation")
        if relation:
            if stmt.get("is_from"):
                self.write(relation)
            else:
                self.read(relation, frozenset())
        if stmt.get("is_program"):
            self.program = True
        elif stmt.get("is_from") and not stmt.get("filename"):
            self.copy_in = True
        self.walk_fields(stmt, ctes, "relation")

    def truncate(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["truncate"] = None
        for item in stmt.get("relations", ()):
            self.write(item.get("RangeVar"))

    def drop(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["drop"] = None
        if stmt.get("removeType") in _RELATIONS:
            for item in stmt.get("objects", ()):
                names = [n["String"]["sval"] for n in item.get("List", {}).get("items", ())
                         if "String" in n]
                if names:
                    schema = names[-2] if len(names) > 1 else "public"
                    self.writes[f"{schema}.{names[-1]}"] = None
                    if len(names) == 1:
                        self.unqualified[names[0]] = None

    def create_table(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["create_table"] = None
        self.write(stmt.get("relation"))
        # A child (INHERITS, PARTITION OF) is another way to write its
        # parents' rows: they count as written.
        for parent in stmt.get("inhRelations", ()):
            self.write(parent.get("RangeVar"))
        self.walk_fields(stmt, ctes, "relation", "inhRelations")

    def create_foreign_table(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["create_foreign_table"] = None
        base = stmt.get("base", {})
        self.write(base.get("relation"))
        self.walk_fields(base, ctes, "relation")

    def create_table_as(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["create_" + _object(stmt.get("objtype"))] = None
        into = stmt.get("into", {})
        self.write(into.get("rel"))
        self.walk_fields(into, ctes, "rel")
        self.walk_fields(stmt, ctes, "into")

    def create_view(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["create_view"] = None
        self.write(stmt.get("view"))
        self.reaching(lambda: self.walk_fields(stmt, ctes, "view"))

    def reaching(self, walk: Any) -> None:
        """
        Walk DDL that makes another way to reach tables (a view, a rule, a
        function body): every table it reads or writes counts as written, as
        a rule on a table protects the table, not one name for it.
        """
        before = set(self.reads)
        walk()
        for name in self.reads:
            if name not in before:
                self.writes[name] = None

    def rule(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["create_rule"] = None
        self.write(stmt.get("relation"))
        self.reaching(lambda: self.walk_fields(stmt, ctes, "relation"))

    def trigger(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        # It changes what a write to its table does; its function runs on
        # writes (in this very transaction, before any catalog can show it).
        self.kinds["create_trigger"] = None
        self.write(stmt.get("relation"))
        function = _dotted(stmt.get("funcname", ()))
        if function:
            self.calls(function)
        # A C trigger function's arguments may name the table it writes
        # (contrib's refint cascades into the one named there, by SQL it
        # builds, so unquoted): written, as for triggers that exist.
        for arg in stmt.get("args", ()):
            name = (arg.get("String") or {}).get("sval", "")
            if _TABLE_TEXT.fullmatch(name):
                schema, _, relname = name.lower().rpartition(".")
                self.write({"schemaname": schema, "relname": relname} if schema else {"relname": relname})
        self.walk_fields(stmt, ctes, "relation", "funcname", "args")

    def refresh(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["refresh_materialized_view"] = None
        self.write(stmt.get("relation"))

    def alter_table(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        # ATTACH/DETACH PARTITION, INHERIT: the other table is changed too.
        self.kinds["alter_" + _object(stmt.get("objtype"))] = None
        # DROP COLUMN (its data is gone) is a drop too: a rule against DROP
        # must not miss it for being inside an ALTER.
        for cmd in stmt.get("cmds") or ():
            if (cmd.get("AlterTableCmd") or {}).get("subtype") in _DROPPING_SUBCOMMANDS:
                self.kinds["drop"] = None
        self.write(stmt.get("relation"))
        self.reaching(lambda: self.walk_fields(stmt, ctes, "relation"))

    def routine(self, objtype: str | None, obj: Mapping[str, Any] | None) -> None:
        """ALTER FUNCTION / RENAME / SET SCHEMA of a function: what it runs can then run under another name."""
        if objtype in _ROUTINES and obj:
            name = _dotted((obj.get("ObjectWithArgs") or obj).get("objname", ()))
            if name:
                self.calls(name)

    def retyped(self, objtype: str | None, obj: Mapping[str, Any] | None) -> None:
        """ALTER TYPE/DOMAIN ... RENAME / SET SCHEMA: its CHECKs can then run under another name."""
        if objtype in ("OBJECT_TYPE", "OBJECT_DOMAIN") and obj:
            name = _dotted((obj.get("List") or {}).get("items", ()))
            if name:
                self.types[name] = None

    def renamed(self, relation: Mapping[str, Any] | None, new: str) -> None:
        if relation and new:
            old = _name(relation)
            self.renames[old] = f"{old.rsplit('.', 1)[0]}.{new}" if "." not in new else new

    def rename(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.routine(stmt.get("renameType"), stmt.get("object"))
        self.retyped(stmt.get("renameType"), stmt.get("object"))
        # ALTER INDEX ... RENAME renames a table too (PostgreSQL allows it for
        # compatibility): followed as a relation's rename.
        if (stmt.get("renameType") in _RELATIONS or stmt.get("renameType") == "OBJECT_INDEX") and (
            stmt.get("renameType") not in ("OBJECT_COLUMN", "OBJECT_TABCONSTRAINT")
        ):
            self.renamed(stmt.get("relation"), stmt.get("newname", ""))
        renamed = stmt.get("renameType")
        if renamed in ("OBJECT_COLUMN", "OBJECT_ATTRIBUTE", "OBJECT_TABCONSTRAINT"):
            renamed = stmt.get("relationType")  # ALTER TABLE t RENAME COLUMN
        self.kinds["alter_" + _object(renamed)] = None
        if stmt.get("relation"):
            self.write(stmt["relation"])
        self.walk_fields(stmt, ctes, "relation")

    def alter_object(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        # ALTER ... SET SCHEMA / OWNER TO / DEPENDS ON: named by the object.
        self.kinds["alter_" + _object(stmt.get("objectType"))] = None
        self.routine(stmt.get("objectType"), stmt.get("object"))
        self.retyped(stmt.get("objectType"), stmt.get("object"))
        if stmt.get("newschema") and stmt.get("objectType") in _RELATIONS and stmt.get("relation"):
            relation = stmt["relation"]
            self.renames[_name(relation)] = f"{stmt['newschema']}.{relation['relname']}"
        if stmt.get("objectType") in _RELATIONS and stmt.get("relation"):
            self.write(stmt["relation"])
        self.walk_fields(stmt, ctes, "relation")

    def define(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["create_" + _object(stmt.get("kind"))] = None
        self.routine_options(stmt.get("definition"))
        self.walk_fields(stmt, ctes)

    def routine_options(self, options: Any) -> None:
        """
        The functions an object made or altered here runs (an operator's,
        an aggregate's state and final functions, a range's subtype_diff,
        a type's I/O), and the types it is made of: as with CREATE TRIGGER,
        a later statement of the same transaction can run them before any
        catalog shows the object.
        """
        for option in options or ():
            element = option.get("DefElem") if isinstance(option, dict) else None
            if not element:
                continue
            arg = element.get("arg") or {}
            if (element.get("defname") or "").lower() not in _ROUTINE_OPTIONS:
                # A type it is made of (a range's SUBTYPE, an aggregate's
                # STYPE): its domains' CHECKs run on the values.
                if "TypeName" in arg:
                    self.types[_dotted(arg["TypeName"].get("names", ()))] = None
                continue
            if "TypeName" in arg:
                name = _dotted(arg["TypeName"].get("names", ()))
            elif "List" in arg:
                name = _dotted(arg["List"].get("items", ()))
            else:
                name = (arg.get("String") or {}).get("sval", "")  # FUNCTION = 'f'
            if name:
                self.calls(name)

    def routine_objects(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        # CREATE CAST ... WITH FUNCTION, CREATE TRANSFORM, an operator
        # class's FUNCTION items, CREATE CONVERSION: what they make runs it.
        for key in ("func", "fromsql", "tosql"):
            if stmt.get(key):
                self.routine("OBJECT_FUNCTION", stmt[key])
        for item in stmt.get("items", ()):
            item = item.get("CreateOpClassItem", {})
            if item.get("itemtype") == 2:  # OPCLASS_ITEM_FUNCTION
                self.routine("OBJECT_FUNCTION", item.get("name"))
        name = _dotted(stmt.get("func_name", ()))
        if name:
            self.calls(name)

    def create_function(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        """
        The body is walked where the gateway can read it: SQL (a string or
        BEGIN ATOMIC) and PL/pgSQL's static statements; every table they
        touch counts as written (L{reaching}).  A body it cannot read (another
        language, PL/pgSQL's dynamic EXECUTE) makes the statement unknown.
        """
        self.kinds["create_procedure" if stmt.get("is_procedure") else "create_function"] = None
        # Its parameters' defaults and types and its result type run when it
        # is called, also later in this transaction, before any catalog shows it.
        self.walk_fields(stmt, ctes, "funcname", "options", "sql_body")
        options = {}
        for option in stmt.get("options", ()):
            element = option.get("DefElem", {})
            options[element.get("defname")] = element.get("arg")
        language = ((options.get("language") or {}).get("String") or {}).get("sval", "sql").lower()
        body = [
            item.get("String", {}).get("sval", "")
            for item in ((options.get("as") or {}).get("List") or {}).get("items", ())
        ]
        self.from_literal = True
        if stmt.get("sql_body") is not None:
            self.reaching(lambda: self.walk(stmt["sql_body"], ctes))
        elif language == "sql" and body:
            self.reaching(lambda: self.absorb(classify(body[0])))
        elif language == "plpgsql" and body:
            self.reaching(lambda: self.absorb(_plpgsql_statements(body[0], self.source)))
        elif language not in ("internal",):
            self.kinds[UNKNOWN] = None

    def absorb(self, infos: Iterable[StatementInfo]) -> None:
        """
        Take in the facts of statements run by the one being walked: their
        kinds and a missing WHERE too (as a C{BEGIN ATOMIC} body's, which is
        walked in place), so a body that drops, truncates or deletes every
        row is judged so when it is made.
        """
        for info in infos:
            self.kinds.update(dict.fromkeys(info.kinds))
            if info.executes:
                # EXECUTE p runs whatever the calling session has prepared as
                # p (a protocol Parse is forwarded before any Bind is judged).
                self.kinds[UNKNOWN] = None
            self.without_where = self.without_where or info.without_where
            self.reads.update(dict.fromkeys(info.reads))
            self.reads.update(dict.fromkeys(info.writes))
            self.functions.update(dict.fromkeys(info.functions))
            self.unqualified.update(dict.fromkeys(info.unqualified))
            self.types.update(dict.fromkeys(info.types))
            self.column_calls.update(dict.fromkeys(info.column_calls))
            self.operators.update(dict.fromkeys(info.operators))
            self.program = self.program or info.program

    def alter_function(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["alter_" + _object(stmt.get("objtype", "OBJECT_FUNCTION"))] = None
        self.routine(stmt.get("objtype", "OBJECT_FUNCTION"), stmt.get("func"))

    def grant(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["grant" if stmt.get("is_grant") else "revoke"] = None
        self.walk_fields(stmt, ctes)

    def do(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        # The body is PL/pgSQL (or another language) that builds and runs
        # SQL at run time: the gateway cannot see through it.
        self.kinds["do"] = None

    def call(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["call"] = None
        funccall = stmt.get("funccall")
        if funccall:
            self.func_call(funccall, ctes)

    def func_call(self, call: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.calls(_dotted(call.get("funcname", ())))
        self.walk_fields(call, ctes, "funcname")

    def calls(self, name: str) -> None:
        """A function called (or that what is made here will call)."""
        self.functions[name] = None
        if runs_sql_text(name):
            self.kinds[UNKNOWN] = None  # dynamic SQL, as EXECUTE is

    def alter_domain(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        # VALIDATE / ADD CONSTRAINT / SET DEFAULT run the domain's checks on
        # the values stored in it.
        self.kinds["alter_domain"] = None
        name = _dotted(stmt.get("typeName", ()))
        if name:
            self.types[name] = None
        self.walk_fields(stmt, ctes, "typeName")

    def prepare(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["prepare"] = None
        self.prepared_name = stmt.get("name")
        self.walk_fields(stmt, ctes)

    def execute(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["execute"] = None
        self.prepared_name = stmt.get("name")
        if stmt.get("name") is not None:
            self.executes[stmt["name"]] = None
        self.walk_fields(stmt, ctes)

    def deallocate(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["deallocate"] = None
        self.prepared_name = None if stmt.get("isall") else stmt.get("name")

    def discard(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["discard"] = None
        if stmt.get("target") == "DISCARD_ALL":
            self.kinds["deallocate"] = None  # DISCARD ALL includes DEALLOCATE ALL

    def transaction(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds[_TRANSACTION.get(stmt.get("kind", ""), "transaction")] = None

    def variable_set(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        kind = stmt.get("kind", "")
        reset = kind.startswith("VAR_RESET")
        self.kinds["reset" if reset else "set"] = None
        if kind == "VAR_RESET_ALL":
            self.settings["all"] = None
        elif stmt.get("name"):
            self.settings[stmt["name"].lower()] = None
        self.walk_fields(stmt, ctes)

    def vacuum(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["vacuum" if stmt.get("is_vacuumcmd") else "analyze"] = None
        self.walk_fields(stmt, ctes)

    def column_ref(self, ref: Mapping[str, Any], ctes: frozenset[str]) -> None:
        fields = ref.get("fields", ())
        if len(fields) > 1 and "String" in fields[-1]:
            self.column_calls[fields[-1]["String"]["sval"]] = None

    def indirection(self, node: Mapping[str, Any], ctes: frozenset[str]) -> None:
        for item in node.get("indirection", ()):
            if "String" in item:
                self.column_calls[item["String"]["sval"]] = None
        self.walk_fields(node, ctes)

    def operator(self, node: Mapping[str, Any], ctes: frozenset[str]) -> None:
        # An A_Expr (a + b, OPERATOR(s.###), = ANY, LIKE) or an ORDER BY ... USING.
        name = _dotted(node.get("name") or node.get("useOp") or ())
        if name:
            self.operators[name] = None
        self.walk_fields(node, ctes, "name", "useOp")

    def constraint(self, node: Mapping[str, Any], ctes: frozenset[str]) -> None:
        # A foreign key whose action deletes or updates the referencing rows
        # (CASCADE, SET NULL, SET DEFAULT): a delete or update of the
        # referenced table later in this transaction, before any catalog
        # shows the key, runs them there, as MERGE's actions are its kinds.
        if node.get("contype") == "CONSTR_FOREIGN":
            if node.get("fk_del_action") == "c":
                self.kinds["delete"] = None
            if node.get("fk_del_action") in ("n", "d") or node.get("fk_upd_action") in ("c", "n", "d"):
                self.kinds["update"] = None
        self.walk_fields(node, ctes)

    def fetch(self, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        self.kinds["move" if stmt.get("ismove") else "fetch"] = None


def _simple(kind: str) -> Any:
    def handler(walker: _Walker, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        walker.kinds[kind] = None
        walker.walk_fields(stmt, ctes)
    return handler


def _naming_routines(node: str, options: str = "") -> Any:
    """A handler for a statement whose object runs the functions it names (L{_Walker.routine_options})."""
    kind = _NAMED.get(node) or _generic_kind(node)

    def handler(walker: _Walker, stmt: Mapping[str, Any], ctes: frozenset[str]) -> None:
        walker.kinds[kind] = None
        if options:
            walker.routine_options(stmt.get(options))
        walker.routine_objects(stmt, ctes)
        walker.walk_fields(stmt, ctes)
    return handler


_HANDLERS: dict[str, Any] = {name: _simple(kind) for name, kind in _NAMED.items()}
_HANDLERS.update({
    "SelectStmt": _Walker.select,
    "InsertStmt": _Walker.insert,
    "UpdateStmt": _Walker.update,
    "DeleteStmt": _Walker.delete,
    "MergeStmt": _Walker.merge,
    "CopyStmt": _Walker.copy,
    "TruncateStmt": _Walker.truncate,
    "DropStmt": _Walker.drop,
    "CreateStmt": _Walker.create_table,
    "CreateForeignTableStmt": _Walker.create_foreign_table,
    "CreateTableAsStmt": _Walker.create_table_as,
    "ViewStmt": _Walker.create_view,
    "RuleStmt": _Walker.rule,
    "CreateTrigStmt": _Walker.trigger,
    "RefreshMatViewStmt": _Walker.refresh,
    "AlterTableStmt": _Walker.alter_table,
    "RenameStmt": _Walker.rename,
    "AlterObjectSchemaStmt": _Walker.alter_object,
    "AlterOwnerStmt": _Walker.alter_object,
    "AlterObjectDependsStmt": _Walker.alter_object,
    "DefineStmt": _Walker.define,
    "CreateFunctionStmt": _Walker.create_function,
    "AlterFunctionStmt": _Walker.alter_function,
    "GrantStmt": _Walker.grant,
    "GrantRoleStmt": _Walker.grant,
    "DoStmt": _Walker.do,
    "CallStmt": _Walker.call,
    "FuncCall": _Walker.func_call,
    "A_Expr": _Walker.operator,
    "SortBy": _Walker.operator,
    "AlterDomainStmt": _Walker.alter_domain,
    "AlterOperatorStmt": _naming_routines("AlterOperatorStmt", "options"),
    "AlterTypeStmt": _naming_routines("AlterTypeStmt", "options"),
    "CreateRangeStmt": _naming_routines("CreateRangeStmt", "params"),
    "CreateCastStmt": _naming_routines("CreateCastStmt"),
    "CreateTransformStmt": _naming_routines("CreateTransformStmt"),
    "CreateOpClassStmt": _naming_routines("CreateOpClassStmt"),
    "AlterOpFamilyStmt": _naming_routines("AlterOpFamilyStmt"),
    "CreateConversionStmt": _naming_routines("CreateConversionStmt"),
    "PrepareStmt": _Walker.prepare,
    "ExecuteStmt": _Walker.execute,
    "DeallocateStmt": _Walker.deallocate,
    "DiscardStmt": _Walker.discard,
    "TransactionStmt": _Walker.transaction,
    "VariableSetStmt": _Walker.variable_set,
    "VacuumStmt": _Walker.vacuum,
    "FetchStmt": _Walker.fetch,
    "RangeVar": lambda walker, rangevar, ctes: walker.read(rangevar, ctes),
    "ColumnRef": _Walker.column_ref,
    "Constraint": _Walker.constraint,
    "A_Indirection": _Walker.indirection,
})


def _plpgsql_statements(body: str, definition: str | None = None) -> tuple[StatementInfo, ...]:
    """
    The SQL a PL/pgSQL body runs, as far as it can be read: each statement
    and expression classified; a dynamic EXECUTE (or a body that does not
    parse) is unknown.  C{definition}, the whole C{CREATE FUNCTION}, is
    read first: which variables exist depends on its parameters.
    """
    tag = "hoopgw"
    while f"${tag}$" in body:
        tag += "_"
    # Without the definition, what RETURN may say and which variables exist
    # are guessed: the first signature that parses.
    attempts = [definition] if definition else []
    attempts += [
        f"CREATE FUNCTION f() RETURNS {returns} LANGUAGE plpgsql AS ${tag}${body}${tag}$"
        for returns in ("void", "int", "SETOF int", "trigger", "event_trigger")
    ]
    tree = None
    for attempt in attempts:
        for _ in range(8):
            try:
                tree = json.loads(_pg.parse_plpgsql_json(attempt))
                break
            except Exception as e:
                # A field of a variable whose type the parser cannot see
                # without the catalog (a %ROWTYPE, a table's row type):
                # declared as record, its fields are taken at run time.
                unknown = _UNKNOWN_FIELD.search(str(e))
                if unknown is None:
                    break
                retyped = re.sub(
                    rf"(?i)(\b{re.escape(unknown.group(1))}\s+)(?!record\b)[^;:=]+?(\s*(?::=|=|;))",
                    r"\1record\2", attempt, count=1,
                )
                if retyped == attempt:
                    break
                attempt = retyped
        if tree is not None:
            break
    else:
        return (_unknown(body),)
    # Every word of the body may name a type (a DECLAREd variable's, whose
    # domain runs its CHECK on assignment): the graph looks them up.
    words = _words(body)
    infos: list[StatementInfo] = []
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                # EXECUTE, FOR ... IN EXECUTE, OPEN ... FOR EXECUTE, RETURN
                # QUERY EXECUTE: SQL built at run time.
                if key.startswith("PLpgSQL_stmt_dyn") or isinstance(value, dict) and "dynquery" in value:
                    infos.append(_unknown("EXECUTE"))
                if key == "PLpgSQL_expr" and isinstance(value, dict):
                    query = value.get("query", "")
                    mode = value.get("parseMode", 0)
                    if mode == 0:
                        infos.extend(classify(query))
                    elif mode in _PLPGSQL_ASSIGN:
                        infos.extend(_assignment(query))
                    else:
                        infos.extend(classify(f"SELECT {query}"))
                elif isinstance(value, (dict, list)):
                    stack.append(value)
    if words:
        infos.append(StatementInfo(text="", kinds=(), types=words))
    return tuple(infos)


_UNKNOWN_FIELD = re.compile(r'"(\w+)\.\w+" is not a known variable')


def _words(body: str) -> tuple[str, ...]:
    """The identifiers of a body, and its dotted pairs (schema.type)."""
    try:
        tokens = _pg.scan(body)
    except Exception:
        return ()
    words: dict[str, None] = {}
    previous = ""
    for token in tokens:
        if token.name == "IDENT" or token.kind in ("UNRESERVED_KEYWORD", "COL_NAME_KEYWORD", "TYPE_FUNC_NAME_KEYWORD"):
            raw = body[token.start:token.end + 1]
            word = raw.strip('"')
            if not raw.startswith('"') and word.isascii():
                word = word.lower()  # as the server folds unquoted names
            words[word] = None
            if previous:
                words[f"{previous}.{word}"] = None
            previous = word
        elif token.name != "ASCII_46":
            previous = ""
    return tuple(words)


@functools.lru_cache(maxsize=4096)
def body_statements(language: str, source: str) -> tuple[StatementInfo, ...] | None:
    """
    What an existing function's body runs, as far as it can be read: SQL
    (C{source} is the body, or for a C{BEGIN ATOMIC} body the whole
    definition), PL/pgSQL's static statements (C{source} is the body or,
    better, the whole definition, whose parameters are its variables; a
    dynamic C{EXECUTE} is unknown).  C{None} for a body in another language.
    """
    language = language.lower()
    if language == "plpgsql":
        if source.lstrip()[:6].upper() == "CREATE":
            body = _plpgsql_body(source)
            return _plpgsql_statements(body if body is not None else source, source)
        return _plpgsql_statements(source)
    if language != "sql":
        return None
    if not source.lstrip()[:6].upper().startswith("CREATE"):
        return classify(source)
    try:
        tree = json.loads(_pg.parse_sql_json(source))
        body = tree["stmts"][0]["stmt"]["CreateFunctionStmt"]["sql_body"]
    except Exception:
        return (_unknown(source),)
    walker = _Walker()
    try:
        walker.walk(body, frozenset())
    except RecursionError:
        return (_lexical(source),)
    return (walker.info(source),)


# Built-in functions that run SQL given as text, or read relations named in
# text: what they run cannot be seen, as with EXECUTE.
_RUNS_SQL_TEXT = frozenset({
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
    "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
    "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema",
    "database_to_xml", "database_to_xmlschema", "database_to_xml_and_xmlschema",
    "cursor_to_xml", "cursor_to_xmlschema", "ts_stat", "ts_rewrite",
    # Summarising a BRIN index named in text evaluates its expressions over
    # the table's rows (as REINDEX would), and the table is not named.
    "brin_summarize_new_values", "brin_summarize_range",
})

# The same from contrib's trusted extensions, which a non-superuser may
# install and which live in any schema: tablefunc's crosstab runs its query
# texts (and the volatile functions they call write), connectby reads the
# relation it names in text.
_EXTENSIONS_RUN_SQL_TEXT = frozenset({"crosstab", "crosstab2", "crosstab3", "crosstab4", "connectby"})


def runs_sql_text(function: str) -> bool:
    """Whether calling C{function} (as written or as the catalog names it) runs SQL the gateway cannot read."""
    return function.removeprefix("pg_catalog.") in _RUNS_SQL_TEXT or function.rpartition(".")[2] in _EXTENSIONS_RUN_SQL_TEXT


# PL/pgSQL's RAW_PARSE_PLPGSQL_ASSIGN1..3: "target := expression".
_PLPGSQL_ASSIGN = frozenset({3, 4, 5})


def _assignment(query: str) -> tuple[StatementInfo, ...]:
    """A PL/pgSQL assignment's SQL: its expression, and its target's subscripts."""
    try:
        tokens = _pg.scan(query)
    except Exception:
        return (_unknown(query),)
    depth = 0
    for token in tokens:
        if token.name in ("ASCII_40", "ASCII_91"):
            depth += 1
        elif token.name in ("ASCII_41", "ASCII_93"):
            depth -= 1
        elif depth == 0 and token.name in ("COLON_EQUALS", "ASCII_61"):
            # Offsets count characters (pglast's scanner).
            target, expression = query[:token.start], query[token.end + 1:]
            infos = classify(f"SELECT {expression}")
            if "[" in target:  # subscripts, slices, fields: a[i], a[1:2], a[i].f
                infos += classify(f"SELECT (NULL::int[]){target[target.index('['):]}")
            return infos
    return (_unknown(query),)


def _plpgsql_body(definition: str) -> str | None:
    """The body of a C{CREATE FUNCTION ... AS '...'} (for the fallback parse)."""
    try:
        stmt = json.loads(_pg.parse_sql_json(definition))["stmts"][0]["stmt"]["CreateFunctionStmt"]
    except Exception:
        return None
    for option in stmt.get("options", ()):
        element = option.get("DefElem", {})
        if element.get("defname") == "as":
            items = ((element.get("arg") or {}).get("List") or {}).get("items", ())
            if items and "String" in items[0]:
                body: str = items[0]["String"]["sval"]
                return body
    return None


# -- classification ------------------------------------------------------------

# Keywords that start (or, for MERGE's actions, are) statements, for the
# lexical fallback; the scanner names keyword tokens by their upper-case text.
_LEXICAL = {
    "SELECT": "select", "INSERT": "insert", "UPDATE": "update", "DELETE_P": "delete",
    "MERGE": "merge", "COPY": "copy", "TRUNCATE": "truncate", "DROP": "drop",
    "ALTER": "alter", "CREATE": "create", "GRANT": "grant", "REVOKE": "revoke",
    "DO": "do", "CALL": "call", "PREPARE": "prepare", "EXECUTE": "execute",
    "EXPLAIN": "explain", "LOCK_P": "lock", "VACUUM": "vacuum",
}


def _lexical(text: str) -> StatementInfo:
    """
    Classify a statement the parser accepted but that nests too deeply to
    walk (thousands of parentheses): from its tokens, over-matching.  It
    is C{unknown} plus every statement keyword it contains, C{without_where}
    when an UPDATE or DELETE keyword appears, C{program} when PROGRAM does,
    and every name in it as both read and written.
    """
    kinds: dict[str, None] = {UNKNOWN: None}
    names: dict[str, None] = {}
    words: dict[str, None] = {}
    program = False
    try:
        tokens = _pg.scan(text)
    except Exception:
        tokens = []
    previous_ident = ""
    for token in tokens:
        if token.name in _LEXICAL:
            kinds[_LEXICAL[token.name]] = None
        if token.name == "PROGRAM":
            program = True
        if token.name == "IDENT" or token.kind in ("UNRESERVED_KEYWORD", "COL_NAME_KEYWORD"):
            word = text[token.start:token.end + 1].strip('"')  # offsets count characters
            if token.name == "IDENT" and not word.startswith('"'):
                word = word.lower() if word.isascii() else word
            names[f"public.{word}"] = None
            words[word] = None
            if previous_ident:
                names[f"{previous_ident}.{word}"] = None
            previous_ident = word
        elif token.name != "ASCII_46":  # "."
            previous_ident = ""
    without_where = "update" in kinds or "delete" in kinds
    return StatementInfo(
        text=text, kinds=kinds, reads=names, writes=names, without_where=without_where,
        program=program, writes_data=True, copy_in="copy" in kinds, unqualified=words,
    )


def _unknown(text: str) -> StatementInfo:
    return StatementInfo(text=text.strip(), kinds=(UNKNOWN,), writes_data=True)


@functools.lru_cache(maxsize=4096)
def classify(sql: str) -> tuple[StatementInfo, ...]:
    """
    Classify each top-level statement of a simple-Query string.

    Never raises: text the parser refuses is one L{StatementInfo} of kind
    C{unknown} (PostgreSQL itself runs none of a string with a syntax
    error).  Memoised by exact text (4096 entries, LRU), and a
    single-statement text by its literal-normalised form (L{_shape}).
    Each statement's C{text} has its secrets replaced (L{redact_secrets}):
    it is what the audit trail records.
    """
    infos = _classify_text(sql)
    if _SECRET_HINT.search(sql) is None:
        return infos
    return tuple(_without_secrets(info) for info in infos)


def _classify_text(sql: str) -> tuple[StatementInfo, ...]:
    try:
        key = _pg.normalize(sql)
    except Exception:
        return _classify(sql)[0]
    shape = _shapes.get(key)
    if shape is not None:
        prefix, suffix, template = shape
        # Normalisation rewrites only literal tokens, all inside the
        # statement: what precedes and follows it is the same text.
        if len(prefix) + len(suffix) <= len(sql) and sql.startswith(prefix) and sql.endswith(suffix):
            _shapes.move_to_end(key)
            return (_with_text(template, sql[len(prefix):len(sql) - len(suffix)].strip()),)
    infos, shape = _classify(sql)
    if shape is not None and key.startswith(shape[0]) and key.endswith(shape[1]):
        _shapes[key] = shape
        if len(_shapes) > _SHAPES_MAX:
            _shapes.popitem(last=False)
    return infos


# -- secrets in statement texts --------------------------------------------------

# Cheap test first: no statement without one of these words carries a secret
# this module knows how to find.
_SECRET_HINT = re.compile(r"(?i)password|connection|://")
_REDACTED = "'[redacted]'"
_COMMENTS = frozenset({"SQL_COMMENT", "C_COMMENT"})
# Keywords whose string argument is a secret: ROLE/USER ... PASSWORD 'x',
# OPTIONS (password 'x') of user mappings and servers, SUBSCRIPTION ...
# CONNECTION 'conninfo'.
_SECRET_BEFORE = frozenset({"PASSWORD", "CONNECTION", "PASSWORD_OPTION"})
# A key/value connection string's password, or a URI's (scheme://user:pw@).
# The user part has no ":" (the first one ends it): a class that allowed it
# made a long run of ":" cost quadratic time, the reactor's.
_CONNINFO_PASSWORD = re.compile(r"(?i)password\s*=|://[^/@\s:]*:[^/@\s]*@")
# The same in a Bind parameter's bytes (text or binary format, any size):
# each part searched only where a cheap byte test says it may be.
_URI_PASSWORD_BYTES = re.compile(rb"://[^/@\s:]*:[^/@\s]*@")
_KEY_PASSWORD_BYTES = re.compile(rb"password\s*=")
# Tokens after PASSWORD that are not a secret themselves.
_NOT_SECRET = frozenset({"NULL_P"})
# Non-reserved words: a bare password, or a name (SELECT password x ...);
# not IS, LIKE, ILIKE, SIMILAR (type and function name keywords), which
# follow a column named password (WHERE password IS NULL).
_WORDS = frozenset({"UNRESERVED_KEYWORD", "COL_NAME_KEYWORD"})
UNRECORDABLE = "[statement not recorded: it may hold a password that hoopgw could not locate]"


# A string constant that is itself SQL (a DO block, a function body, an
# EXECUTE's text) with a password statement in it: read inside, this deep.
# (A CONNECTION string in it holds "password=", which redacts it whole.)
_SECRET_WORD = re.compile(r"(?i)password")
_DOLLAR_QUOTED = re.compile(r"(\$[^$]*\$)(.*)\1", re.DOTALL)
_NESTING = 4


def _redact_inside(literal: str, depth: int) -> str:
    """
    A string constant with the secrets of the SQL it holds redacted
    (C{DO $$ BEGIN CREATE ROLE r PASSWORD 'x'; END $$}); whole, if that SQL
    cannot be read (or nests deeper than L{_NESTING}).
    """
    if depth >= _NESTING:
        return _REDACTED
    dollar = _DOLLAR_QUOTED.fullmatch(literal)
    if dollar is not None:
        inner = redact_secrets(dollar.group(2), _depth=depth + 1)
        # (A redacted text holds no "$": the tag still closes where it did.)
        return _REDACTED if inner == UNRECORDABLE else dollar.group(1) + inner + dollar.group(1)
    if len(literal) >= 2 and literal[0] == literal[-1] == "'":
        inner = redact_secrets(literal[1:-1].replace("''", "'"), _depth=depth + 1)
        return _REDACTED if inner == UNRECORDABLE else "'" + inner.replace("'", "''") + "'"
    # E'...' (backslash escapes) and U&'...': not read inside.
    return _REDACTED


def redact_secrets(text: str, *, _depth: int = 0) -> str:
    """
    C{text} with each string constant that is a password replaced by
    C{'[redacted]'}: after a C{PASSWORD} or C{CONNECTION} keyword (or a
    quoted C{"password"} option name; comments between do not matter), or
    a connection string holding C{password=} (as C{dblink_connect} takes);
    in a string constant that mentions one (a DO block, a function body),
    the SQL it holds is redacted so.  Text the scanner cannot read is
    replaced whole (L{UNRECORDABLE}).
    """
    try:
        tokens = _pg.scan(text)
    except Exception:
        return UNRECORDABLE
    spans: list[tuple[int, int, str]] = []
    previous = ""
    for token in tokens:
        name = token.name
        if name in _COMMENTS:
            continue
        if name == "SCONST" or name == "USCONST":
            # pglast's offsets count characters, not bytes.
            literal = text[token.start:token.end + 1]
            if previous in _SECRET_BEFORE or _CONNINFO_PASSWORD.search(literal):
                spans.append((token.start, token.end + 1, _REDACTED))
            elif _SECRET_WORD.search(literal):
                inside = _redact_inside(literal, _depth)
                if inside != literal:
                    spans.append((token.start, token.end + 1, inside))
        elif previous in ("PASSWORD", "PASSWORD_OPTION") and name == "NCHAR":
            # PASSWORD N'hunter2' (a syntax error the trail still records):
            # the N is a token of its own, the string follows it.
            name = previous
        elif previous in ("PASSWORD", "PASSWORD_OPTION") and name not in _NOT_SECRET and not _depth and (
            name in ("IDENT", "ICONST", "FCONST", "BCONST", "XCONST")
            or (previous == "PASSWORD" and token.kind in _WORDS)
        ):
            # PASSWORD hunter2 (no quotes: a syntax error the trail still
            # records; inside a string, "the password monthly" is prose).
            spans.append((token.start, token.end + 1, _REDACTED))
        # An option named password, or sslpassword (postgres_fdw's user
        # mappings take the client key's passphrase so), or any *password.
        # (A keyword after a column so named is SQL: encrypted_password IS NULL.)
        if name == "IDENT" and text[token.start:token.end + 1].strip('"').lower().endswith("password"):
            name = "PASSWORD_OPTION"
        previous = name
    if not spans:
        return text
    out, last = [], 0
    for start, end, replacement in spans:
        out.append(text[last:start])
        out.append(replacement)
        last = end
    out.append(text[last:])
    return "".join(out)


def parameter_holds_secret(value: bytes) -> bool:
    """Whether a Bind parameter is a connection string with a password (C{dblink_connect($1)})."""
    if b"://" in value and _URI_PASSWORD_BYTES.search(value) is not None:
        return True
    lowered = value.lower()
    return b"password" in lowered and _KEY_PASSWORD_BYTES.search(lowered) is not None


def mentions_secret(text: str) -> bool:
    """Whether C{text} may hold a secret L{redact_secrets} would find (cheap)."""
    return _SECRET_HINT.search(text) is not None


def recordable(text: str) -> str:
    """C{text} as the audit trail may hold it (L{redact_secrets} when it may hold one)."""
    return text if _SECRET_HINT.search(text) is None else redact_secrets(text)


def _without_secrets(info: StatementInfo) -> StatementInfo:
    if _SECRET_HINT.search(info.text) is None:
        return info
    text = redact_secrets(info.text)
    return info if text == info.text else _with_text(info, text)


# Classifications by literal-normalised text (L{_pg.normalize}: libpg_query
# replaces each constant token with C{$n} and keeps every other byte, names,
# keywords, comments and whitespace included).  No fact of a statement comes
# from a literal's value -- kinds, tables and functions are names and
# keywords, C{without_where} is the presence of a WHERE clause, C{program}
# the PROGRAM keyword, prepared names are identifiers -- so two texts with
# the same normalised form have the same facts; only the text differs.
# Unlike the fingerprint, normalisation keeps schema names, digits in names,
# prepared-statement names and a constant WHERE (C{WHERE true} becomes
# C{WHERE $1}, still a WHERE).  Only single-statement texts classified by
# the full walk are kept (the lexical fallback depends on the stack depth),
# as (text before the statement, text after it, facts): both end texts hold
# no literal, so they are the same in every text of that form, and the
# statement's own text is what lies between them.
_SHAPES_MAX = 4096
_shapes: OrderedDict[str, tuple[str, str, StatementInfo]] = OrderedDict()


def _with_text(template: StatementInfo, text: str) -> StatementInfo:
    """C{template} with another C{text}; the facts (and their mapping) are shared."""
    info = object.__new__(StatementInfo)
    for name in _INFO_SLOTS:
        object.__setattr__(info, name, getattr(template, name))
    object.__setattr__(info, "text", text)
    return info


_INFO_SLOTS = tuple(a.name for a in fields(StatementInfo))


def _classify(sql: str) -> tuple[tuple[StatementInfo, ...], tuple[str, str, StatementInfo] | None]:
    """
    Classify C{sql} from its parse tree; also return its shape (see
    L{_shapes}) if it is one statement classified by the full walk.
    """
    try:
        tree = json.loads(_pg.parse_sql_json(sql))
    except RecursionError:
        return tuple(_lexical(text) for text in _split(sql)), None
    except Exception:
        return (_unknown(sql),), None
    raw = sql.encode("utf-8") if not sql.isascii() else None
    infos = []
    shape = None
    stmts = tree.get("stmts", ())
    for entry in stmts:
        # Locations are byte offsets in the UTF-8 text; a missing
        # stmt_len means "to the end".
        start = entry.get("stmt_location", 0)
        length = entry.get("stmt_len", 0)
        end = start + length if length else None
        if raw is None:
            text = sql[start:end].strip()
            if len(stmts) == 1:
                prefix, suffix = sql[:start], sql[end:] if end is not None else ""
        else:
            text = raw[start:end].decode("utf-8").strip()
            if len(stmts) == 1:
                prefix = raw[:start].decode("utf-8")
                suffix = raw[end:].decode("utf-8") if end is not None else ""
        walker = _Walker()
        walker.source = text
        try:
            walker.walk(entry.get("stmt", {}), frozenset())
        except RecursionError:
            infos.append(_lexical(text))
            continue
        info = walker.info(text)
        infos.append(info)
        if len(stmts) == 1 and not walker.from_literal:
            shape = (prefix, suffix, info)
    return tuple(infos), shape


def _split(sql: str) -> list[str]:
    try:
        return [s for s in _pg.split(sql, with_parser=False)]
    except Exception:
        return [sql.strip()]


def statement_info(sql: str) -> StatementInfo:
    """
    The facts of a protocol-level Parse: it holds one statement; should it
    hold several (the server refuses that), their facts are merged.
    """
    infos = classify(sql)
    return _merge(recordable(sql.strip()), infos) if len(infos) != 1 else infos[0]


# -- session state --------------------------------------------------------------


@define
class PreparedStatements:
    """
    A session's prepared statements, by name, as the gateway saw them
    defined, so that running one (C{EXECUTE p}, or Bind/Execute of a
    protocol-level named statement) is judged by what it contains.

    SQL-level C{PREPARE} and protocol-level Parse share one namespace in
    PostgreSQL, so they share this map; the unnamed statement is C{""}.

    Call L{observe} for each statement the gateway forwards (better: once
    it succeeded).  Forward-time is safe too: a C{PREPARE} the server then
    refuses leaves a stricter entry than the server's, never a laxer one.
    """

    _statements: dict[str, StatementInfo] = field(factory=dict)

    def register(self, name: str, info: StatementInfo) -> None:
        """A protocol Parse of C{name} (C{""}: the unnamed statement)."""
        self._statements[name] = info

    def parse(self, name: str, sql: str) -> StatementInfo:
        """
        Register a protocol-level Parse of C{sql} as C{name} and return its
        classification.  A Parse holds one statement; should it hold
        several (the server refuses that), their facts are merged.
        """
        info = statement_info(sql)
        self.register(name, info)
        return info

    def forget(self, name: str) -> None:
        """A protocol Close of statement C{name}, or C{DEALLOCATE name}."""
        self._statements.pop(name, None)

    def clear(self) -> None:
        """C{DEALLOCATE ALL} or C{DISCARD ALL}."""
        self._statements.clear()

    def copy(self) -> "PreparedStatements":
        """An independent copy (the entries themselves are immutable)."""
        return PreparedStatements(dict(self._statements))

    def observe(self, info: StatementInfo) -> None:
        """Track a statement of a simple Query: PREPARE, DEALLOCATE, DISCARD ALL."""
        first = info.kinds[0] if info.kinds else ""
        if first == "prepare" and info.prepared_name is not None:
            # What EXECUTE runs is what PREPARE contains, minus the PREPARE.
            self._statements[info.prepared_name] = StatementInfo(
                text=info.text,
                kinds=info.kinds[1:] or (UNKNOWN,),
                reads=info.reads,
                writes=info.writes,
                functions=info.functions,
                without_where=info.without_where,
                program=info.program,
                copy_in=info.copy_in,
                settings=info.settings,
                executes=info.executes,
                writes_data=info.writes_data,
                prepared_name=info.prepared_name,
                unqualified=info.unqualified,
                types=info.types,
                column_calls=info.column_calls,
                operators=info.operators,
                renames=info.renames,
            )
        elif "deallocate" in info.kinds and first in ("deallocate", "discard"):
            if info.prepared_name is None:
                self.clear()
            else:
                self.forget(info.prepared_name)

    def execute_info(self, name: str) -> StatementInfo | None:
        """What prepared statement C{name} contains, or C{None} if unknown."""
        return self._statements.get(name)

    def resolve(self, info: StatementInfo) -> StatementInfo:
        """
        The facts to judge a statement by: one that runs prepared statements
        (C{EXECUTE p}, at any depth: C{EXPLAIN ANALYZE EXECUTE p}, C{CREATE
        TABLE t AS EXECUTE p}) has its own facts (its parameters may call
        functions) merged with those of each C{p}; C{unknown} is added for a
        C{p} not seen being prepared.  Any other statement is returned as
        it is.
        """
        if not info.executes:
            return info
        merged_from = [info]
        for name in info.executes:
            prepared = self.execute_info(name)
            merged_from.append(prepared if prepared is not None else StatementInfo(text="", kinds=(UNKNOWN,), writes_data=True))
        merged = _merge(info.text, merged_from, prepared_name=info.prepared_name)
        # EXECUTE alone is opaque (it may write); resolved, it writes what p does.
        writes_data = any(p.writes_data for p in merged_from[1:]) or bool(info.writes)
        return evolve(merged, writes_data=writes_data)


def _merge(text: str, infos: Iterable[StatementInfo],
           prepared_name: str | None = None) -> StatementInfo:
    infos = tuple(infos)
    def union(attr: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v for i in infos for v in getattr(i, attr)))
    return StatementInfo(
        text=text,
        kinds=union("kinds") or (UNKNOWN,),
        reads=union("reads"),
        writes=union("writes"),
        functions=union("functions"),
        without_where=any(i.without_where for i in infos),
        program=any(i.program for i in infos),
        copy_in=any(i.copy_in for i in infos),
        settings=union("settings"),
        executes=union("executes"),
        unqualified=union("unqualified"),
        types=union("types"),
        column_calls=union("column_calls"),
        operators=union("operators"),
        renames=tuple(dict.fromkeys(rename for i in infos for rename in i.renames)),
        writes_data=any(i.writes_data for i in infos),
        prepared_name=prepared_name,
    )
