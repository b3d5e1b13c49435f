"""
A C{kind = "http"} connection: its C{[[connections]]} keys, parsed into
L{HTTPSettings} with the configuration's own table reader (so its errors
name the file, the key and what was expected).
"""

from __future__ import annotations

from pathlib import Path

from attrs import frozen

from hoopgw.config import SecretRef, Table, setting_default
from hoopgw.errors import quote

__all__ = ["HTTPSettings", "KEYS", "parse_connection"]

KEYS = (
    "ca_file",
    "client_cert",
    "client_key",
    "hold_timeout",
    "impersonate",
    "insecure",
    "pass_cookies",
    "record_exec_output",
    "record_input",
    "token_env",
    "token_file",
    "upgrade_idle_timeout",
    "upstream",
)


@frozen
class HTTPSettings:
    upstream: str
    token: SecretRef | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    ca_file: Path | None = None
    insecure: bool = False
    impersonate: bool = False
    pass_cookies: bool = False
    # Keystrokes in kubectl exec -it recordings ("i" events), as for SSH.
    record_input: bool = False
    # An exec or attach without a terminal recorded too, as for SSH: off by
    # default, as its output may be bulk data (kubectl exec ... -- tar c).
    record_exec_output: bool = False
    # An exec, attach or port-forward silent both ways this long is closed
    # (the kubelet's own streaming idle timeout defaults to 4 h).  0: never.
    upgrade_idle_timeout: int = 4 * 3600
    # The longest a request is held for review before it expires, whatever
    # the rule's review.timeout: an HTTP client waits for its response.
    hold_timeout: int = 60


def parse_connection(table: Table) -> tuple[str, HTTPSettings]:
    """The target (the upstream URL) and settings of one C{[[connections]]} table."""
    upstream = table.url(
        "upstream", ("https", "http"), required=True, what='an upstream URL (e.g. "https://127.0.0.1:6443")'
    )
    assert upstream is not None
    for present, absent in (("client_cert", "client_key"), ("client_key", "client_cert")):
        if table.has(present) and not table.has(absent):
            raise table.error(absent, f"missing required key; expected a path, since {quote(present)} is set")
    settings = HTTPSettings(
        upstream=upstream,
        token=table.secret("token_env", "token_file"),
        client_cert=table.path_value("client_cert", check="file"),
        client_key=table.path_value("client_key", check="secret file"),
        ca_file=table.path_value("ca_file", check="file"),
        insecure=table.boolean("insecure", setting_default(HTTPSettings, "insecure")),
        impersonate=table.boolean("impersonate", setting_default(HTTPSettings, "impersonate")),
        pass_cookies=table.boolean("pass_cookies", setting_default(HTTPSettings, "pass_cookies")),
        record_input=table.boolean("record_input", setting_default(HTTPSettings, "record_input")),
        record_exec_output=table.boolean("record_exec_output", setting_default(HTTPSettings, "record_exec_output")),
        upgrade_idle_timeout=table.duration(
            "upgrade_idle_timeout", setting_default(HTTPSettings, "upgrade_idle_timeout"), allow_zero=True
        ),
        hold_timeout=table.duration("hold_timeout", setting_default(HTTPSettings, "hold_timeout")),
    )
    return upstream, settings
