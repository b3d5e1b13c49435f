"""
A Redis connection's settings: the C{[[connections]]} keys of C{kind =
"redis"}, read by L{parse_connection} with the configuration's own table
reader (L{hoopgw.config.Table}), so its errors name the file, the key and
what was expected, as for hoopgw's own kinds.

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
    max_masked_value = 1048576  # bytes: a longer reply string is withheld when masks apply
    max_masked_reply = 4194304  # bytes scanned per reply, at most: the rest is withheld

The keys follow the other kinds' (C{user}, C{password_env},
C{password_file}, C{tls}, C{ca_file}, C{login_timeout}), so one vocabulary
covers every connection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attrs import frozen
from hoopgw.frontend import SecretRef, Table, describe_type, format_address, quote, setting_default

__all__ = ["DEFAULT_PORT", "KEYS", "TLS_MODES", "RedisSettings", "client_tls_options", "parse_connection"]

DEFAULT_PORT = 6379
TLS_MODES = ("disable", "require", "verify-full")
# Besides name and kind (IFrontEnd.connection_keys): any other key is refused before parse_connection.
KEYS = ("address", "ca_file", "db", "login_timeout", "max_masked_reply", "max_masked_value", "password_env",
        "password_file", "tls", "user")


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
    # Masking runs on the reactor thread, at about 2 s a megabyte of digits: a
    # longer reply value is withheld rather than scanned, or it stalls every session.
    max_masked_value: int = 1 << 20
    # ... and a reply's strings are scanned up to this many bytes in all (each
    # counting at least 16): the rest of what would be scanned is withheld.
    max_masked_reply: int = 4 << 20

    @property
    def address(self) -> str:
        """The printable target, never a secret (Connection.target)."""
        return format_address(self.host, self.port)


_DB = "a database number (0 or more)"


def parse_connection(table: Table) -> tuple[str, RedisSettings]:
    """
    The target (C{host:port}) and settings of one C{[[connections]]} table
    of kind C{redis} (L{hoopgw.interfaces.IFrontEnd.parse_connection}).

    @raise hoopgw.errors.ConfigError: naming the file, the key and what was expected.
    """
    host, port = table.address(DEFAULT_PORT)
    user = table.string("user", what="the connection's ACL user name on the target")
    if user is not None and any(c.isspace() for c in user):
        raise table.error("user", f"expected an ACL user name (no spaces), got {quote(user)}")
    password = table.secret("password_env", "password_file")
    if user is not None and password is None:
        # AUTH <user> with no password cannot log in; saying so here beats a refusal at the first login.
        raise table.error(None, f'user {quote(user)} needs a password: expected one of "password_env", "password_file"')
    tls = table.choice("tls", TLS_MODES, setting_default(RedisSettings, "tls"))
    if table.has("ca_file") and tls != "verify-full":
        # A CA only means something when the chain is checked: a silent no-op would mislead.
        raise table.error("ca_file", f'is only used with tls = "verify-full", but tls = {quote(tls)}')
    ca_file = table.path_value("ca_file", check="file")
    if ca_file is not None and table.reader.check_secrets:
        # Read now, not when the listener is built: a file that is no
        # certificate is one line naming the key, not a traceback at start.
        _check_certificates(table, ca_file)
    db: int = setting_default(RedisSettings, "db")
    if table.has("db"):
        value: Any = table.data["db"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise table.error("db", f"expected {_DB}, got {describe_type(value)}")
        if not 0 <= value < 2**31:
            raise table.error("db", f"expected {_DB}, got {value}")
        db = value
    settings = RedisSettings(
        host=host,
        port=port,
        user=user,
        password=password,
        tls=tls,
        ca_file=ca_file,
        db=db,
        login_timeout=table.duration("login_timeout", setting_default(RedisSettings, "login_timeout")),
        max_masked_value=table.positive_int("max_masked_value", setting_default(RedisSettings, "max_masked_value")),
        max_masked_reply=table.positive_int("max_masked_reply", setting_default(RedisSettings, "max_masked_reply")),
    )
    return settings.address, settings


def _check_certificates(table: Table, path: Path) -> None:
    from cryptography.x509 import load_pem_x509_certificates

    try:
        load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        raise table.error("ca_file", f"expected a file of PEM certificates, got {quote(str(path), 200)}, "
                          "which holds none") from None


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
