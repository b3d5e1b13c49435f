"""
A C{kind = "ssh"} connection: its C{[[connections]]} keys, parsed into
L{SSHSettings} with the configuration's own table reader (so its errors
name the file, the key and what was expected).
"""

from __future__ import annotations

from pathlib import Path

from attrs import frozen

from hoopgw.config import SecretRef, Table, format_address, setting_default
from hoopgw.errors import quote_choices

__all__ = ["DEFAULT_PORT", "KEYS", "SSHSettings", "parse_connection"]

DEFAULT_PORT = 22
KEYS = (
    "address",
    "host_key",
    "keepalive_count_max",
    "keepalive_interval",
    "key_file",
    "known_hosts",
    "login_timeout",
    "mask_terminal",
    "password_env",
    "password_file",
    "record_exec_output",
    "record_input",
    "user",
)


@frozen
class SSHSettings:
    host: str
    port: int
    user: str
    key: SecretRef | None = None  # key_file
    password: SecretRef | None = None
    host_key: str | None = None
    known_hosts: Path | None = None
    # Keystrokes in terminal recordings ("i" events): off by default, as they
    # include whatever is typed at prompts that do not echo (passwords).
    record_input: bool = False
    # Output of commands run without a terminal (ssh host cmd) recorded as
    # asciicast too: off by default, as it may be bulk data (backups, dumps).
    record_exec_output: bool = False
    # Terminal and exec output passes the detectors of the masks that apply
    # before it reaches the client (recordings are masked whatever this says).
    mask_terminal: bool = False
    # Keep-alives on both legs (keepalive@openssh.com): a peer that leaves
    # keepalive_count_max requests unanswered, keepalive_interval seconds
    # apart, is taken for dead and its session ended.  0 turns them off.
    keepalive_interval: int = 15
    keepalive_count_max: int = 3
    # Seconds for the target leg's TCP connect, key exchange and login.
    login_timeout: int = 30


def parse_connection(table: Table) -> tuple[str, SSHSettings]:
    """The target (C{host:port}) and settings of one C{[[connections]]} table."""
    host, port = table.address(DEFAULT_PORT)
    user = table.required("user", "a user name on the target")
    credentials = ("key_file", "password_env", "password_file")
    if not any(table.has(credential) for credential in credentials):
        raise table.error(None, f"missing credential; expected one of {quote_choices(credentials)}")
    table.at_most_one(credentials)
    host_keys = ("host_key", "known_hosts")
    if not any(table.has(check) for check in host_keys):
        # The target's host key is always checked: a proxy that accepts any
        # key is a man in the middle.
        raise table.error(None, f"missing host key check; expected one of {quote_choices(host_keys)}")
    table.at_most_one(host_keys)
    key_file = table.path_value("key_file", check="secret file")
    host_key = table.public_key("host_key")
    settings = SSHSettings(
        host=host,
        port=port,
        user=user,
        key=SecretRef(file=key_file) if key_file is not None else None,
        password=table.secret("password_env", "password_file"),
        host_key=host_key,
        known_hosts=table.path_value("known_hosts", check="file"),
        record_input=table.boolean("record_input", setting_default(SSHSettings, "record_input")),
        record_exec_output=table.boolean("record_exec_output", setting_default(SSHSettings, "record_exec_output")),
        mask_terminal=table.boolean("mask_terminal", setting_default(SSHSettings, "mask_terminal")),
        keepalive_interval=table.duration(
            "keepalive_interval", setting_default(SSHSettings, "keepalive_interval"), allow_zero=True
        ),
        keepalive_count_max=table.positive_int(
            "keepalive_count_max", setting_default(SSHSettings, "keepalive_count_max")
        ),
        login_timeout=table.duration("login_timeout", setting_default(SSHSettings, "login_timeout")),
    )
    return format_address(host, port), settings
