"""
A C{kind = "postgres"} connection: its C{[[connections]]} keys, parsed
into L{PostgresSettings} with the configuration's own table reader (so its
errors name the file, the key and what was expected).
"""

from __future__ import annotations

from pathlib import Path

from attrs import frozen

from hoopgw.config import SecretRef, Table, format_address, setting_default

__all__ = ["AUTH_METHODS", "DEFAULT_PORT", "KEYS", "PostgresSettings", "TLS_MODES", "parse_connection"]

DEFAULT_PORT = 5432
TLS_MODES = ("disable", "require", "verify-full")
AUTH_METHODS = ("scram-sha-256", "md5", "password", "none")
KEYS = (
    "address",
    "ca_file",
    "database",
    "login_timeout",
    "password_env",
    "password_file",
    "require_auth",
    "tls",
    "user",
)


@frozen
class PostgresSettings:
    host: str
    port: int
    database: str
    user: str
    password: SecretRef | None = None
    tls: str = "verify-full"  # disable | require | verify-full
    ca_file: Path | None = None
    # How the target may make the gateway prove the connection's password
    # (libpq's require_auth).  SCRAM sends only a proof; MD5 sends a hash a
    # man in the middle can relay, "password" the password itself, so both
    # must be asked for.  "none": a target that asks for nothing (trust).
    require_auth: tuple[str, ...] = ("scram-sha-256", "none")
    # Seconds for the target leg's TCP connect, TLS, login and start-up.
    login_timeout: int = 30


def parse_connection(table: Table) -> tuple[str, PostgresSettings]:
    """The target (C{host:port}) and settings of one C{[[connections]]} table."""
    host, port = table.address(DEFAULT_PORT)
    settings = PostgresSettings(
        host=host,
        port=port,
        database=table.required("database", "a database name on the target"),
        user=table.required("user", "a user name on the target"),
        password=table.secret("password_env", "password_file"),
        tls=table.choice("tls", TLS_MODES, setting_default(PostgresSettings, "tls")),
        ca_file=table.path_value("ca_file", check="file"),
        require_auth=table.subset("require_auth", AUTH_METHODS, setting_default(PostgresSettings, "require_auth")),
        login_timeout=table.duration("login_timeout", setting_default(PostgresSettings, "login_timeout")),
    )
    return format_address(host, port), settings
