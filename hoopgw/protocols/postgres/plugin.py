"""
The PostgreSQL front end as an L{IFrontEnd <hoopgw.interfaces.IFrontEnd>}
plugin (C{twisted/plugins/hoopgw_frontends.py} names it): its connection
keys, the C{sql.*} conditions its actions carry
(L{hoopgw.protocols.postgres.sql} finds their values) and its listener.
"""

from __future__ import annotations

from hoopgw.frontends import FrontEnd
from hoopgw.policy.rules import ConditionKind, ConditionSpec
from hoopgw.protocols.postgres.settings import KEYS, parse_connection

__all__ = ["CONDITIONS", "busy_refusal", "front_end"]

CONDITIONS = (
    ConditionSpec("sql.statements", ConditionKind.globs, "lower",
                  "statement kinds from the PostgreSQL parser: select, insert, drop, ..."),
    ConditionSpec("sql.reads", ConditionKind.globs, None,
                  "tables read, schema-qualified: public.users"),
    ConditionSpec("sql.writes", ConditionKind.globs, None,
                  "tables written, schema-qualified: public.payments"),
    ConditionSpec("sql.functions", ConditionKind.globs, None,
                  "functions called, schema-qualified when written so: pg_catalog.pg_sleep"),
    ConditionSpec("sql.without_where", ConditionKind.boolean, None,
                  "an UPDATE or DELETE without a WHERE clause"),
    ConditionSpec("sql.program", ConditionKind.boolean, None,
                  "COPY ... TO/FROM PROGRAM (runs a shell command on the database server)"),
)  # fmt: skip

def busy_refusal(message: str) -> bytes:
    """FATAL 53300 (too_many_connections): libpq reports it even in answer to its SSLRequest."""
    from hoopgw.protocols.postgres import codec  # (when a listener is built: finding plugins imports no codec)

    return codec.encode(codec.error_response("FATAL", "53300", message))


front_end = FrontEnd(
    kind="postgres",
    description="PostgreSQL: psql, libpq and every client of the wire protocol",
    factory="hoopgw.protocols.postgres.frontend.make_front_end",
    parse=parse_connection,
    connection_keys=KEYS,
    conditions=CONDITIONS,
    action_kinds=("sql.query", "sql.execute", "sql.copy", "sql.call", "sql.cancel", "sql.commit"),
    default_listener="tcp:15432:interface=127.0.0.1",
    busy=busy_refusal,
)
