"""
Where a result column comes from, by name: a RowDescription gives each
column's table OID and attribute number (PostgreSQL follows aliases,
subqueries, CTEs, joins and RETURNING to the table a column is selected
from as it is; an expression has none), and the catalog
(L{hoopgw.protocols.postgres.catalog.Catalog.origins}) says what those
are.  A view or materialized view reports itself: its column is followed
to the column it selects, through the origins PostgreSQL stored with the
view's definition (each target entry's C{resorigtbl}/C{resorigcol} in
C{pg_rewrite.ev_action}), so a view of a view of C{users.ssn} is still
C{public.users.ssn}.  Pure: no I/O.

A column's names are every C{schema.table.column} it is: its own, the
names it had before that the gateway saw (a column or table renamed since),
its table's ancestors' (a partition is also its parent's column), and those
of the column a view column selects, recursively.  Attribute number 0 is a
whole row (C{SELECT users FROM users}): all of the relation's columns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from attrs import frozen

__all__ = ["Relation", "column_names", "view_origins"]


@frozen
class Relation:
    """
    One relation as the catalog describes it.

    @ivar columns: attribute number -> column name (live columns only).
    @ivar ancestors: C{schema.table} of its inheritance parents, recursively.
    @ivar origins: for a view or materialized view, attribute number ->
        (table OID, attribute number) of the column it selects as it is.
    """

    oid: int
    schema: str
    name: str
    kind: str
    columns: Mapping[int, str]
    ancestors: tuple[str, ...] = ()
    origins: Mapping[int, tuple[int, int]] | None = {}  # None: a view whose definition could not be read
    former: Mapping[int, tuple[str, ...]] = {}  # attnum -> schema.table.column names it had before
    types: Mapping[int, int] = {}  # attnum -> type OID
    generated: frozenset[int] = frozenset()  # generated columns (not copied out)
    owned: bool = False  # the connection's role may redefine it (it owns it, or is a member of its owner)


# A node tree's tokens: braces and parentheses, or atoms (with backslash escapes).
_TOKEN = re.compile(r"[{}()]|(?:[^\s{}()\\]|\\.)+", re.S)
_OPEN = frozenset("{(")
_CLOSE = frozenset("})")


def view_origins(tree: str) -> dict[int, tuple[int, int]]:
    """
    From a view's C{_RETURN} rule (C{pg_rewrite.ev_action}, a list of one
    Query node): each output column's origin, by attribute number (the
    target entry's C{resno}), where PostgreSQL recorded one.  Raises
    ValueError if the tree is not as expected (the caller treats the view
    as unknown).
    """
    origins: dict[int, tuple[int, int]] = {}
    depth = 0
    in_targets = False  # inside the top Query's :targetList
    entry: dict[str, str] = {}
    key: str | None = None  # a target entry's field whose value comes next
    for token in _TOKEN.findall(tree):
        if token in _OPEN:
            depth += 1
            key = None  # the value is a node
            continue
        if token in _CLOSE:
            depth -= 1
            if in_targets and depth == 3 and entry:
                # A TARGETENTRY ended: {resno, resorigtbl, resorigcol}.
                table = int(entry.get(":resorigtbl", "0"))
                if table:
                    origins[int(entry[":resno"])] = (table, int(entry.get(":resorigcol", "0")))
                entry = {}
            elif in_targets and depth < 3:
                break
            continue
        if depth == 2 and token == ":targetList":
            in_targets = True
        elif in_targets and depth == 4:
            # Fields alternate with their values: a value (a column alias
            # such as ":resno") is never read as a field.
            if key is None:
                key = token
            else:
                entry[key] = token
                key = None
    return origins


def column_names(
    relations: Mapping[int, Relation], oid: int, attnum: int, *, trust_owned_views: bool = True
) -> tuple[str, ...] | None:
    """
    Every C{schema.table.column} that column C{attnum} of relation C{oid}
    is (module docstring); C{None} if a relation on the way is unknown, or
    is a view the session's role may have redefined in its open
    transaction (unless C{trust_owned_views}).
    """
    names: list[str] = []
    if not _collect(relations, oid, attnum, names, 0, trust_owned_views):
        return None
    return tuple(names)


_MAX_DEPTH = 64  # views of views; PostgreSQL itself refuses a cycle


def _collect(
    relations: Mapping[int, Relation], oid: int, attnum: int, names: list[str], depth: int, trust_owned_views: bool
) -> bool:
    relation = relations.get(oid)
    if relation is None or depth > _MAX_DEPTH:
        return False
    if relation.kind == "v" and relation.owned and not trust_owned_views:
        return False
    attnums = tuple(relation.columns) if attnum == 0 else (attnum,)
    for number in attnums:
        column = relation.columns.get(number)
        if column is None:
            return False  # dropped, or the catalog changed since: unknown
        names.append(f"{relation.schema}.{relation.name}.{column}")
        names.extend(relation.former.get(number, ()))
        for ancestor in relation.ancestors:
            names.append(f"{ancestor}.{column}")
        if relation.origins is None:
            return False  # what a view column selects is unknown
        origin = relation.origins.get(number)
        if origin is not None and not _collect(relations, origin[0], origin[1], names, depth + 1, trust_owned_views):
            return False
    return True
