"""
A Redis connection's settings: the C{[[connections]]} keys of C{kind =
"redis"}, parsed with errors that name the file, the key and what was
expected, as C{hoopgw.config} does for its own kinds.

    [[connections]]
    name = "cache"            # redis-cli --user cache --pass "$TOKEN"
    kind = "redis"
    address = "127.0.0.1:6379"
    user = "app"              # the connection's ACL user (omitted: the default user)
    password_env = "CACHE_PASSWORD"   # or password_file
    tls = "verify-full"       # disable | require | verify-full
    ca_file = "secrets/redis-ca.pem"  # verify-full only; omitted: the system's roots
    db = 0                    # SELECT after login
    login_timeout = "30s"

The keys follow the other kinds' (C{user}, C{password_env},
C{password_file}, C{tls}, C{ca_file}), so one vocabulary covers every
connection.  L{parse_settings} takes the C{[[connections]]} table as a
mapping; the plugin interface will hand it over from C{hoopgw.config}.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import frozen
from hoopgw.config import SecretRef, parse_duration
from hoopgw.errors import ConfigError, describe_type, quote, quote_choices

__all__ = ["DEFAULT_PORT", "KEYS", "TLS_MODES", "RedisSettings", "client_tls_options", "parse_settings"]

DEFAULT_PORT = 6379
TLS_MODES = ("disable", "require", "verify-full")
KEYS = ("name", "kind", "address", "user", "password_env", "password_file", "tls", "ca_file", "db",
        "login_timeout")

_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@frozen
class RedisSettings:
    """How the gateway reaches one Redis target, as the connection's own ACL user."""

    host: str
    port: int = DEFAULT_PORT
    user: str | None = None  # None: the default user (AUTH <password>, or no AUTH at all)
    password: SecretRef | None = None
    tls: str = "verify-full"
    ca_file: Path | None = None
    db: int = 0
    login_timeout: int = 30

    @property
    def address(self) -> str:
        """The printable target, never a secret (Connection.target)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _address(text: str) -> tuple[str, int]:
    """C{host:port}, C{host}, C{[v6]:port} or C{[v6]}; ValueError says what is wrong."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError('"[" without a closing "]"')
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{quote(host)} is not an IPv6 address") from None
        if not rest:
            return host, DEFAULT_PORT
        if not rest.startswith(":"):
            raise ValueError(f'expected ":" and a port after "]", got {quote(rest)}')
        port_text = rest[1:]
    else:
        if text.count(":") > 1:
            raise ValueError('an IPv6 address needs brackets, e.g. "[::1]:6379"')
        host, colon, port_text = text.partition(":")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{quote(host)} is not a host name or IP address")
        if not colon:
            return host, DEFAULT_PORT
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"the port {quote(port_text)} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"the port {port} is not in 1-65535")
    return host, port


class _Table:
    def __init__(self, table: Mapping[str, Any], where: str, file: str | None) -> None:
        self.table = table
        self.where = where
        self.file = file

    def error(self, key: str | None, expected: str) -> ConfigError:
        return ConfigError(self.file, f"{self.where}.{key}" if key else self.where, expected)

    def string(self, key: str, what: str, *, required: bool = False) -> str | None:
        if key not in self.table:
            if required:
                raise self.error(key, f"missing required key; expected {what}")
            return None
        value = self.table[key]
        if not isinstance(value, str):
            raise self.error(key, f"expected {what}, got {describe_type(value)}")
        if not value.strip():
            raise self.error(key, f"expected {what}, got {'a blank string' if value else 'an empty string'}")
        return value


def parse_settings(
    table: Mapping[str, Any],
    *,
    where: str = "connections[0]",
    file: str | None = None,
    base_dir: Path | str = ".",
    environ: Mapping[str, str] | None = None,
    check_secrets: bool = True,
) -> RedisSettings:
    """
    The settings of one C{[[connections]]} table of kind C{redis}.

    @param where: the table's key path in the file, for messages.
    @param base_dir: where relative paths (C{password_file}, C{ca_file}) start.
    @param check_secrets: whether a secret's variable must be set and its
        file readable now (start-up), as C{hoopgw.config} checks them.
    @raise ConfigError: naming the file, the key and what was expected.
    """
    t = _Table(table, where, file)
    environ = os.environ if environ is None else environ
    for key in table:
        if key not in KEYS:
            raise t.error(key, f"unknown key; expected one of {quote_choices(KEYS)}")
    example = f'"host:port" (e.g. "127.0.0.1:{DEFAULT_PORT}" or "[::1]:{DEFAULT_PORT}")'
    text = t.string("address", example, required=True)
    assert text is not None
    try:
        host, port = _address(text)
    except ValueError as e:
        raise t.error("address", f"expected {example}, got {quote(text)}: {e}") from None

    user = t.string("user", "the connection's ACL user name on the target")
    if user is not None and any(c.isspace() for c in user):
        raise t.error("user", f"expected an ACL user name (no spaces), got {quote(user)}")
    if "password_env" in table and "password_file" in table:
        raise t.error(None, 'expected at most one of "password_env", "password_file", got both')
    password = None
    env = t.string("password_env", "the name of an environment variable")
    if env is not None:
        if not _ENV_NAME.fullmatch(env):
            raise t.error("password_env", 'expected the name of an environment variable (letters, digits and "_", '
                          f"not starting with a digit), got {quote(env)}")
        if check_secrets:
            value = environ.get(env)
            if value is None:
                raise t.error("password_env", f"environment variable {quote(env)} is not set")
            if not value:
                raise t.error("password_env", f"environment variable {quote(env)} is empty")
        password = SecretRef(env=env)
    path_text = t.string("password_file", "a path")
    if path_text is not None:
        path = Path(base_dir, Path(path_text).expanduser())
        if check_secrets:
            _readable(t, "password_file", path, "secret file")
        password = SecretRef(file=path)
    if user is not None and password is None:
        raise t.error(None, f"user {quote(user)} needs a password: expected one of "
                      '"password_env", "password_file"')

    tls = "verify-full"
    if "tls" in table:
        value = table["tls"]
        if not isinstance(value, str) or value not in TLS_MODES:
            got = quote(value) if isinstance(value, str) else describe_type(value)
            raise t.error("tls", f"expected one of {quote_choices(TLS_MODES)}, got {got}")
        tls = value
    ca_file = None
    ca_text = t.string("ca_file", "a path")
    if ca_text is not None:
        if tls != "verify-full":
            raise t.error("ca_file", f'is only used with tls = "verify-full", but tls = {quote(tls)}')
        ca_file = Path(base_dir, Path(ca_text).expanduser())
        if check_secrets:
            _readable(t, "ca_file", ca_file, "file")

    db = 0
    if "db" in table:
        value = table["db"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise t.error("db", f"expected a database number (0 or more), got {describe_type(value)}")
        if not 0 <= value < 2**31:
            raise t.error("db", f"expected a database number (0 or more), got {value}")
        db = value

    login_timeout = 30
    if "login_timeout" in table:
        value = table["login_timeout"]
        expected = 'a duration such as "30s" or "2m"'
        if isinstance(value, str):
            try:
                login_timeout = parse_duration(value)
            except ValueError:
                raise t.error("login_timeout", f"expected {expected}, got {quote(value)}") from None
        elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
            login_timeout = value
        else:
            got = str(value) if isinstance(value, int) and not isinstance(value, bool) else describe_type(value)
            raise t.error("login_timeout", f"expected {expected}, got {got}")
        if login_timeout < 1:
            raise t.error("login_timeout", f"expected {expected}, got {quote(str(value))}")
    return RedisSettings(host=host, port=port, user=user, password=password, tls=tls, ca_file=ca_file, db=db,
                         login_timeout=login_timeout)


def _readable(t: _Table, key: str, path: Path, what: str) -> None:
    # Opening proves it readable; a secret's content is not read here.
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise t.error(key, f"cannot read {what} {quote(str(path), 200)}: {e.strerror or type(e).__name__}") from None


def client_tls_options(settings: RedisSettings) -> Any:
    """
    TLS options for the target leg (start-up: the CA file is read here).
    verify-full checks the chain and that the certificate names the host
    (an IP address against its IP SANs); require encrypts without checking,
    as redis-cli --insecure does.
    """
    from twisted.internet import ssl

    if settings.tls == "verify-full":
        trust = (
            ssl.Certificate.loadPEM(settings.ca_file.read_bytes())
            if settings.ca_file is not None
            else ssl.platformTrust()
        )
        return ssl.optionsForClientTLS(settings.host, trustRoot=trust)
    return ssl.CertificateOptions(verify=False, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
