"""
The gateway's configuration: TOML in, frozen attrs values out.

The value classes below are the schema.  L{load} / L{loads} validate a file
against it; every error is a L{hoopgw.errors.ConfigError} naming the file,
the key and what was expected.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

import attrs
from attrs import evolve, field, frozen

from hoopgw.errors import ConfigError, quote_choices
from hoopgw.errors import describe_type as _type_name
from hoopgw.errors import quote as _quote
from hoopgw.model import Connection

if TYPE_CHECKING:
    from hoopgw.frontends import FrontEnds

__all__ = [
    "API_LISTENER",
    "AuditSettings",
    "CONFIG_ENV",
    "Config",
    "ConfigChoice",
    "DEFAULT_CONFIG_PATH",
    "GatewaySettings",
    "IdentitySettings",
    "IssuerSettings",
    "ListenSettings",
    "PREAUTH_KEYS",
    "PreauthLimits",
    "PreauthSettings",
    "ReviewsSettings",
    "SSHKeyIdentity",
    "SecretRef",
    "Table",
    "TLSSettings",
    "config_sha256",
    "effective_config",
    "find_config",
    "format_address",
    "load",
    "loads",
    "parse_duration",
    "quickstart",
    "setting_default",
    "url_problem",
]

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# Units in descending order, each at most once: "1h30m" but not "30m1h" or "1m1m".
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", re.ASCII)


def parse_duration(text: object) -> int:
    """
    Parse a duration such as C{"30s"}, C{"15m"}, C{"2h"}, C{"1d"} or
    C{"1h30m"} into whole seconds.

    Units (C{d}, C{h}, C{m}, C{s}) appear in that order, each at most once.
    A bare number is refused: its unit would be a guess.

    @raise ValueError: if C{text} is not such a duration; the message quotes
        it and shows the expected form.
    """
    if isinstance(text, str):
        match = _DURATION.fullmatch(text)
        if match is not None and any(match.groups()):
            return sum(
                int(number) * _UNIT_SECONDS[unit]
                for number, unit in zip(match.groups(), "dhms", strict=True)
                if number is not None
            )
        got = _quote(text)
    else:
        got = _type_name(text)
    raise ValueError(f'expected a duration such as "30s", "15m", "2h", "1d" or "1h30m", got {got}')


@frozen
class SecretRef:
    """
    A reference to a secret: an environment variable or a file.  Only the
    reference is ever printed; L{read} is called when the secret is used.
    """

    env: str | None = None
    file: Path | None = None

    def read(self, environ: Mapping[str, str] | None = None) -> str:
        """
        The secret's value, for immediate use.  Blocking (a file read): call
        it at start-up or in a thread, never per request on the reactor.

        @raise ConfigError: if the variable is unset or the file unreadable.
        """
        if self.env is not None:
            value = (os.environ if environ is None else environ).get(self.env)
            if value is None:
                raise ConfigError(None, f"${self.env}", "environment variable is not set")
            return value
        assert self.file is not None
        try:
            return self.file.read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or type(e).__name__
            raise ConfigError(None, self.describe(), f"cannot read secret file: {reason}") from None

    def describe(self) -> str:
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"


@frozen
class GatewaySettings:
    name: str = "hoopgw"
    data_dir: Path = Path("hoopgw-data")
    policies: Path | None = None  # None: the policies shipped with hoopgw


@frozen
class TLSSettings:
    """The gateway's own certificate; generated (self-signed) in data_dir if unset."""

    cert_file: Path | None = None
    key_file: Path | None = None


@frozen
class IssuerSettings:
    """
    A trusted OIDC/JWT issuer.  Exactly one of C{jwks_uri} and C{jwks_file}
    may be set; with neither, keys are found through OIDC discovery from
    C{issuer}.
    """

    issuer: str
    audience: str
    jwks_uri: str | None = None
    jwks_file: Path | None = None
    groups_claim: str = "groups"
    subject_claim: str = "sub"
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    leeway_seconds: int = 30
    ca_file: Path | None = None  # trust anchor for https fetches; system store if unset
    # `hoopgw login` (published at /.well-known/hoopgw on the API listener):
    # the IdP's public client for native apps, the scopes it asks for, and the
    # RFC 8707 resource that makes the IdP issue tokens for this gateway.
    login_client_id: str | None = None
    login_scopes: tuple[str, ...] = ("openid", "offline_access")
    login_resource: str | None = None


@frozen
class SSHKeyIdentity:
    subject: str
    public_key: str
    groups: tuple[str, ...] = ()


@frozen
class IdentitySettings:
    dev_issuer: bool = True
    dev_token_max_ttl_seconds: int = 24 * 3600
    issuers: tuple[IssuerSettings, ...] = ()
    ssh_keys: tuple[SSHKeyIdentity, ...] = ()


@frozen
class AuditSettings:
    """
    C{sync}: C{"batched"} (fdatasync by group commit within
    C{sync_window_ms}) or C{"strict"} (an append's Deferred fires after the
    fdatasync that covers it).
    """

    sync: str = "batched"
    sync_window_ms: int = 10
    checkpoint_every: int = 1000
    checkpoint_interval_seconds: int = 60
    # Where each signed checkpoint is also sent: http(s) URLs of C2SP
    # tlog-witnesses and absolute directory paths (hoopgw.audit.witness).
    witnesses: tuple[str, ...] = ()
    witness_timeout_seconds: int = 10
    # (url, cosignature vkey) of the tlog-witnesses configured with their
    # key: their answers count only with a cosignature by it.
    witness_vkeys: tuple[tuple[str, str], ...] = ()


@frozen
class PreauthLimits:
    """
    One listener's limits on connections that have not authenticated yet
    (L{hoopgw.protocols._preauth}): the pre-authentication deadline, the
    caps on such connections per source (an IPv4 address, an IPv6 /64) and
    per listener, and the bytes one may send.
    """

    timeout: int = 60
    max_per_source: int = 32
    max_per_listener: int = 256
    max_bytes: int = 256 * 1024


#: The admin API's key in C{[listen]} and C{[preauth]}, beside the front ends' kinds.
API_LISTENER = "api"
_API_ENDPOINT = "tcp:18009:interface=127.0.0.1"

_V = TypeVar("_V")


def _installed(front_ends: FrontEnds | None) -> FrontEnds:
    if front_ends is not None:
        return front_ends
    from hoopgw.frontends import installed

    return installed()


class _PerListener(Mapping[str, _V], Generic[_V]):
    """
    A value for each listener: the API's (C{"api"}) and each installed
    front end's kind.  Built as C{dict()} is, from a mapping and keywords,
    over the defaults, which come from the front ends (L{hoopgw.frontends};
    C{front_ends} gives them instead of the installed ones).
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, _V] | None = None, /, *, front_ends: FrontEnds | None = None, **given: _V) -> None:
        self._values: dict[str, _V] = {**self._defaults(_installed(front_ends)), **(values or {}), **given}

    @staticmethod
    def _defaults(front_ends: FrontEnds) -> dict[str, _V]:
        raise NotImplementedError

    def __getitem__(self, name: str) -> _V:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        return hash(frozenset(self._values.items()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._values!r})"

    @property
    def api(self) -> _V:
        """The API listener's value."""
        return self._values[API_LISTENER]


class ListenSettings(_PerListener["str | None"]):
    """
    C{[listen]}: a Twisted server endpoint string for each listener, or
    C{None} where the gateway does not listen.  What C{[listen]} does not
    name keeps its default: the API's, or the front end's
    L{default_listener <hoopgw.interfaces.IFrontEnd.default_listener>}.
    """

    __slots__ = ()

    @staticmethod
    def _defaults(front_ends: FrontEnds) -> dict[str, str | None]:
        values: dict[str, str | None] = {kind: front_end.default_listener for kind, front_end in front_ends.items()}
        values[API_LISTENER] = _API_ENDPOINT
        return values


class PreauthSettings(_PerListener[PreauthLimits]):
    """
    L{PreauthLimits} for each listener; a front end's default is its
    L{preauth <hoopgw.interfaces.IFrontEnd.preauth>} (SSH allows 120 s, as
    OpenSSH's LoginGraceTime).
    """

    __slots__ = ()

    @staticmethod
    def _defaults(front_ends: FrontEnds) -> dict[str, PreauthLimits]:
        values = {kind: front_end.preauth for kind, front_end in front_ends.items()}
        values[API_LISTENER] = PreauthLimits()
        return values


@frozen
class ReviewsSettings:
    """
    C{[reviews]}: notifications of reviews that open (L{hoopgw.reviews.webhook}).

    @ivar webhook: a URL every review is POSTed to, besides the rules' own.
    @ivar api_url: the API as the people notified reach it; C{None}: derived
        from the API listener's address where it can be.
    @ivar webhook_secret: the key of each notification's HMAC-SHA256 signature.
    """

    webhook: str | None = None
    api_url: str | None = None
    webhook_secret: SecretRef | None = None


@frozen
class Config:
    source: Path | None = None  # None: the embedded quickstart defaults
    gateway: GatewaySettings = GatewaySettings()
    # Their defaults depend on the front ends installed: asked for when made.
    listen: ListenSettings = field(factory=ListenSettings)
    tls: TLSSettings = TLSSettings()
    identity: IdentitySettings = IdentitySettings()
    audit: AuditSettings = AuditSettings()
    preauth: PreauthSettings = field(factory=PreauthSettings)
    reviews: ReviewsSettings = ReviewsSettings()
    connections: tuple[Connection, ...] = field(default=())

    def connection(self, name: str) -> Connection | None:
        for connection in self.connections:
            if connection.name == name:
                return connection
        return None


# --- loading ---------------------------------------------------------------


def _default(cls: type, name: str) -> Any:
    # Slotted attrs classes keep defaults on their fields, not as class attributes.
    return getattr(attrs.fields(cls), name).default


#: The default of field C{name} of the attrs class C{cls}: for a front end's
#: parser to fill in what its table omits (L{Table}).
setting_default = _default


# Connection names appear in URLs, database names and SSH user names.
# Connection names appear in URLs, database and SSH user names: one grammar for all.
CONNECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", re.ASCII)
_CONNECTION_NAME_EXPECTED = (
    'expected a name of at most 63 letters, digits, "_", "." or "-", '
    "starting with a letter or digit (it appears in URLs, database names and SSH user names)"
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})", re.ASCII)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_SYNC_MODES = ("batched", "strict")
# Asymmetric algorithms only: a JWKS holds public keys, and "none" or an
# HMAC algorithm would let anyone holding the "public" key mint tokens.
_JWT_ALGORITHMS = (
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "PS256",
    "PS384",
    "PS512",
    "RS256",
    "RS384",
    "RS512",
)
_DURATION_EXPECTED = (
    'a positive duration such as "30s", "15m", "2h", "1d" or "1h30m" (or whole seconds)'
)
_TOP_KEYS = ("audit", "connections", "gateway", "identity", "listen", "preauth", "reviews", "tls")
_REVIEWS_KEYS = ("api_url", "webhook", "webhook_secret_env", "webhook_secret_file")
#: The keys of C{[preauth]} itself, beside its C{[preauth.<listener>]} tables.
PREAUTH_KEYS = ("max_bytes", "max_per_listener", "max_per_source", "timeout")
# A pre-authentication byte budget below this would cut off a TLS handshake
# followed by a request head or a token.
_MIN_PREAUTH_BYTES = 64 * 1024


def _key_part(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _quote(key)


class _Reader:
    """What every table of one document shares: where errors point, where paths go."""

    def __init__(self, file: str | None, base_dir: Path, check_secrets: bool, environ: Any) -> None:
        self.file = file
        self.base_dir = base_dir
        self.check_secrets = check_secrets
        self.environ = environ

    def error(self, key: str, expected: str) -> ConfigError:
        return ConfigError(self.file, key, expected)


class Table:
    """
    One TOML table at a known key path, with typed accessors whose errors
    name the full key (C{connections[1].address}).  Front ends read their
    C{[[connections]]} tables with it (L{hoopgw.interfaces.IFrontEnd.parse_connection}).
    """

    def __init__(self, reader: _Reader, path: str, data: dict[str, Any]) -> None:
        self.reader = reader
        self.path = path
        self.data = data

    def key(self, name: str) -> str:
        part = _key_part(name)
        return f"{self.path}.{part}" if self.path else part

    def error(self, name: str | None, expected: str) -> ConfigError:
        return self.reader.error(self.key(name) if name is not None else self.path, expected)

    def check_keys(self, allowed: tuple[str, ...], *, hint: str = "") -> None:
        """Refuse a key not in C{allowed}; C{hint} ends the message."""
        for name in self.data:
            if name not in allowed:
                raise self.error(name, f"unknown key; expected one of {quote_choices(allowed)}{hint}")

    def has(self, name: str) -> bool:
        return name in self.data

    def _get(self, name: str, required: bool, what: str) -> Any:
        if name not in self.data:
            if required:
                raise self.error(name, f"missing required key; expected {what}")
            return None
        return self.data[name]

    def string(self, name: str, *, required: bool = False, what: str = "a string") -> str | None:
        value = self._get(name, required, what)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(name, f"expected {what}, got {_type_name(value)}")
        if not value.strip():
            got = "a blank string" if value else "an empty string"
            raise self.error(name, f"expected {what}, got {got}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, False, "true or false")
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {_type_name(value)}")
        return value

    def positive_int(self, name: str, default: int) -> int:
        value = self._get(name, False, "a positive integer")
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"expected a positive integer, got {_type_name(value)}")
        if value < 1:
            raise self.error(name, f"expected a positive integer, got {value}")
        return value

    def duration(self, name: str, default: int, *, allow_zero: bool = False) -> int:
        """Whole seconds, from a duration string or an integer."""
        value = self._get(name, False, _DURATION_EXPECTED)
        if value is None:
            return default
        if isinstance(value, str):
            try:
                seconds = parse_duration(value)
            except ValueError:
                raise self.error(
                    name, f"expected {_DURATION_EXPECTED}, got {_quote(value)}"
                ) from None
        elif isinstance(value, int) and not isinstance(value, bool):
            seconds = value
        else:
            raise self.error(name, f"expected {_DURATION_EXPECTED}, got {_type_name(value)}")
        if seconds < (0 if allow_zero else 1):
            got = _quote(value) if isinstance(value, str) else str(value)
            raise self.error(name, f"expected {_DURATION_EXPECTED}, got {got}")
        return seconds

    def choice(self, name: str, choices: tuple[str, ...], default: str | None) -> str:
        what = f"one of {quote_choices(choices)}"
        value = self._get(name, default is None, what)
        if value is None:
            assert default is not None
            return default
        if not isinstance(value, str):
            raise self.error(name, f"expected {what}, got {_type_name(value)}")
        if value not in choices:
            raise self.error(name, f"expected {what}, got {_quote(value)}")
        return value

    def strings(
        self, name: str, default: tuple[str, ...] = (), *, non_empty: bool = False
    ) -> tuple[str, ...]:
        what = "a non-empty array of strings" if non_empty else "an array of strings"
        value = self._get(name, False, what)
        if value is None:
            return default
        if not isinstance(value, list):
            raise self.error(name, f"expected {what}, got {_type_name(value)}")
        if non_empty and not value:
            raise self.error(name, f"expected {what}, got an empty array")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.reader.error(
                    f"{self.key(name)}[{index}]", f"expected a string, got {_type_name(item)}"
                )
            if not item.strip():
                raise self.reader.error(
                    f"{self.key(name)}[{index}]", "expected a string, got an empty string"
                )
        return tuple(value)

    def subset(self, name: str, choices: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
        """A non-empty array of distinct items of C{choices}."""
        values = self.strings(name, default, non_empty=True)
        for index, value in enumerate(values):
            if value not in choices:
                raise self.reader.error(
                    f"{self.key(name)}[{index}]", f"expected one of {quote_choices(choices)}, got {_quote(value)}"
                )
            if value in values[:index]:
                raise self.reader.error(f"{self.key(name)}[{index}]", f"expected each method once, got {_quote(value)} again")
        return values

    def path_value(
        self, name: str, *, required: bool = False, check: str | None = None
    ) -> Path | None:
        """
        A file or directory path, relative to the configuration file's
        directory.  C{check} is C{"file"} or C{"secret file"}: with
        C{check_secrets}, such a file must be readable now, so that a missing
        one is reported at start-up rather than at first use.
        """
        text = self.string(name, required=required, what="a path")
        if text is None:
            return None
        if "\x00" in text:
            raise self.error(name, "expected a path, got a string containing a NUL character")
        path = Path(self.reader.base_dir, Path(text).expanduser())
        if check is not None and self.reader.check_secrets:
            _check_readable(self, name, path, check)
        return path

    def env_name(self, name: str) -> str | None:
        text = self.string(name, what="the name of an environment variable")
        if text is None:
            return None
        if not _ENV_NAME.fullmatch(text):
            raise self.error(
                name,
                'expected the name of an environment variable (letters, digits and "_", '
                f"not starting with a digit), got {_quote(text)}",
            )
        if self.reader.check_secrets:
            value = self.reader.environ.get(text)
            # Only the variable's name is ever reported, never its value.
            if value is None:
                raise self.error(name, f"environment variable {_quote(text)} is not set")
            if not value:
                raise self.error(name, f"environment variable {_quote(text)} is empty")
        return text

    def at_most_one(self, names: tuple[str, ...]) -> None:
        present = [name for name in names if name in self.data]
        if len(present) > 1:
            raise self.reader.error(
                self.path,
                f"expected at most one of {quote_choices(names)}, got {quote_choices(present)}",
            )

    def secret(self, env_key: str, file_key: str) -> SecretRef | None:
        """A secret referenced by an environment variable or a file, not both."""
        self.at_most_one((env_key, file_key))
        env = self.env_name(env_key)
        if env is not None:
            return SecretRef(env=env)
        file = self.path_value(file_key, check="secret file")
        if file is not None:
            return SecretRef(file=file)
        return None

    def required(self, name: str, what: str) -> str:
        """A string that must be there (C{what} says what it holds, for errors)."""
        value = self.string(name, required=True, what=what)
        assert value is not None
        return value

    def address(self, default_port: int, name: str = "address") -> tuple[str, int]:
        """
        A target's required C{"host:port"}, C{"[v6]:port"} or C{"host"}
        (then C{default_port}), as (host, port).
        """
        example = f'"host:port" (e.g. "127.0.0.1:{default_port}" or "[::1]:{default_port}")'
        text = self.required(name, example)
        try:
            return _parse_address(text, default_port)
        except ValueError as e:
            raise self.error(name, f"expected {example}, got {_quote(text)}: {e}") from None

    def url(self, name: str, schemes: tuple[str, ...], *, required: bool = False, what: str = "a URL") -> str | None:
        """An absolute URL of one of C{schemes}, without credentials, query or fragment (L{url_problem})."""
        value = self.string(name, required=required, what=what)
        if value is not None:
            _check_url(self, name, value, schemes)
        return value

    def public_key(self, name: str) -> str | None:
        """An OpenSSH public key line, checked and stripped."""
        text = self.string(name, what="an OpenSSH public key line")
        if text is None:
            return None
        _parse_public_key(self, name, text)
        return text.strip()

    def table(self, name: str) -> "Table":
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise self.error(
                name, f"expected a table ([{self.key(name)}]), got {_type_name(value)}"
            )
        return Table(self.reader, self.key(name), value)

    def tables(self, name: str) -> list["Table"]:
        value = self.data.get(name, [])
        what = f"an array of tables ([[{self.key(name)}]])"
        if not isinstance(value, list):
            raise self.error(name, f"expected {what}, got {_type_name(value)}")
        result = []
        for index, item in enumerate(value):
            key = f"{self.key(name)}[{index}]"
            if not isinstance(item, dict):
                raise self.reader.error(key, f"expected a table, got {_type_name(item)}")
            result.append(Table(self.reader, key, item))
        return result


def _check_readable(table: Table, name: str, path: Path, what: str) -> None:
    # Opening is enough to prove readability; the content (maybe a secret) is
    # not read here, so it is never held by the configuration.
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise table.error(name, f"cannot read {what} {_quote(str(path), 200)}: {reason}") from None
    except ValueError as e:
        raise table.error(name, f"cannot read {what} {_quote(str(path), 200)}: {e}") from None


def _toml_error(file: str | None, text: str, error: Exception) -> ConfigError:
    message = str(error)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match is not None:
        line, column = match.group(1), match.group(2)
    else:
        # Point at the end of the text, so every syntax error has a line and column.
        match = re.search(r"\s*\(at end of document\)$", message)
        lines = text.split("\n")
        line, column = str(len(lines)), str(len(lines[-1]) + 1)
    reason = message[: match.start()] if match is not None else message
    return ConfigError(file, f"line {line}, column {column}", f"invalid TOML: {reason}")


def _parse_address(text: str, default_port: int) -> tuple[str, int]:
    """
    Split C{"host:port"}, C{"[v6]:port"}, C{"host"} or C{"[v6]"}.

    @raise ValueError: with the reason the text is not such an address.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError('"[" without a closing "]"')
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{_quote(host)} is not an IPv6 address") from None
        if not rest:
            return host, default_port
        if not rest.startswith(":"):
            raise ValueError(f'expected ":" and a port after "]", got {_quote(rest)}')
        port_text = rest[1:]
    else:
        if text.count(":") > 1:
            raise ValueError('an IPv6 address needs brackets, e.g. "[::1]:5432"')
        host, colon, port_text = text.partition(":")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{_quote(host)} is not a host name or IP address")
        if not colon:
            return host, default_port
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"the port {_quote(port_text)} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"the port {port} is not in 1-65535")
    return host, port


def format_address(host: str, port: int) -> str:
    """C{host:port}, or C{[v6]:port}: a target as messages and records show it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    """
    What is wrong with C{url} as an absolute URL of one of C{schemes} (a
    host, no user info, query or fragment), as the rest of an "expected
    ..." message; C{None} if nothing is.  Shared with the policy loader.
    """
    what = f"an absolute {' or '.join(schemes)} URL"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        return f"expected {what}, got {_quote(url)}: {e}"
    if parts.scheme not in schemes or not parts.hostname:
        return f"expected {what}, got {_quote(url)}"
    if parts.query or parts.fragment or parts.username or parts.password:
        # Credentials in a URL would be printed wherever the target is.
        return f"expected {what} without user info, query or fragment, got a URL with them"
    return None


def _check_url(table: Table, name: str, url: str, schemes: tuple[str, ...]) -> None:
    problem = url_problem(url, schemes)
    if problem is not None:
        raise table.error(name, problem)


def _parse_public_key(table: Table, name: str, text: str) -> bytes:
    """Check an OpenSSH public key line; return its wire-format blob."""
    from twisted.conch.ssh.keys import BadKeyError, Key

    what = 'an OpenSSH public key line (e.g. "ssh-ed25519 AAAA... alice@laptop")'
    if "PRIVATE KEY" in text:
        # Never echo, or even parse, what looks like private key material.
        raise table.error(name, f"expected {what}, got a private key")
    try:
        key = Key.fromString(text.strip().encode("utf-8"))
        if not key.isPublic():
            raise ValueError("not a public key")
        blob: bytes = key.blob()
        return blob
    except Exception as e:
        # Conch raises BadKeyError for what it can name, and assorted
        # struct/binascii errors for a damaged body.
        reason = str(e) if isinstance(e, BadKeyError) else "the key data is malformed"
        raise table.error(name, f"expected {what}, got {_quote(text)}: {reason}") from None


def _parse_endpoint(text: str) -> Any:
    """
    A server endpoint from Twisted's own parser (no socket is opened).

    @raise ValueError: why C{text} is not one.
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    try:
        endpoint = serverFromString(MemoryReactor(), text)
    except Exception as e:
        # Endpoint parsers are plugins and raise whatever they like.
        raise ValueError(str(e) or type(e).__name__) from None
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ValueError(f"the port {port} is not in 0-65535")
    return endpoint


def _check_endpoint(table: Table, name: str, text: str, example: str) -> Any:
    try:
        return _parse_endpoint(text)
    except ValueError as e:
        what = f"a Twisted server endpoint string (e.g. {_quote(example)})"
        raise table.error(name, f"expected {what}, got {_quote(text)}: {e}") from None


def _gateway(reader: _Reader, table: Table) -> GatewaySettings:
    table.check_keys(("data_dir", "name", "policies"))
    name = table.string("name", what="a gateway name")
    if name is not None and not name.isprintable():
        raise table.error(
            "name",
            "expected a gateway name of printable characters, got a string with control characters",
        )
    return GatewaySettings(
        name=name if name is not None else _default(GatewaySettings, "name"),
        data_dir=table.path_value("data_dir")
        or Path(reader.base_dir, _default(GatewaySettings, "data_dir")),
        policies=table.path_value("policies"),
    )


def _listen(table: Table, front_ends: FrontEnds) -> ListenSettings:
    defaults = ListenSettings(front_ends=front_ends)
    names = tuple(defaults)
    # A kind whose plugin is missing is unknown too, even "= false": a typo
    # or a missing install is said at once, not found when nothing listens.
    table.check_keys(names, hint=front_ends.hint())
    values: dict[str, str | None] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name in names:
        if not table.has(name):
            continue
        value = table.data[name]
        if value is False:
            values[name] = None
            continue
        if not isinstance(value, str):
            got = "true" if value is True else _type_name(value)
            raise table.error(
                name,
                f"expected a Twisted server endpoint string, or false to disable it, got {got}",
            )
        endpoint = _check_endpoint(table, name, value, defaults[name] or "tcp:PORT:interface=127.0.0.1")
        # Two listeners on one TCP port would fail at start with a less helpful error.
        port = getattr(endpoint, "_port", None)
        identity = (type(endpoint).__name__, port, getattr(endpoint, "_interface", None))
        if isinstance(port, int) and port != 0:
            if identity in seen:
                raise table.error(
                    name, f"expected a port of its own, got the port of {table.key(seen[identity])}"
                )
            seen[identity] = name
        values[name] = value
    for name, default in defaults.items():
        if name not in values and default is not None and name in front_ends:
            # A plugin's own default, checked as strictly as the file's.
            try:
                _parse_endpoint(default)
            except ValueError as e:
                raise table.error(
                    name,
                    f"the default listener of {front_ends.names.get(name, name)}, {_quote(default)}, is not "
                    f"a Twisted server endpoint string ({e}); set [listen] {name}",
                ) from None
    return ListenSettings(values, front_ends=front_ends)


def _tls(table: Table) -> TLSSettings:
    table.check_keys(("cert_file", "key_file"))
    for present, absent in (("cert_file", "key_file"), ("key_file", "cert_file")):
        if table.has(present) and not table.has(absent):
            raise table.error(
                absent, f"missing required key; expected a path, since {_quote(present)} is set"
            )
    return TLSSettings(
        cert_file=table.path_value("cert_file", check="file"),
        key_file=table.path_value("key_file", check="secret file"),
    )


def _issuer(table: Table) -> IssuerSettings:
    table.check_keys(
        (
            "algorithms",
            "audience",
            "ca_file",
            "groups_claim",
            "issuer",
            "jwks_file",
            "jwks_uri",
            "leeway",
            "login_client_id",
            "login_resource",
            "login_scopes",
            "subject_claim",
        )
    )
    issuer = table.string("issuer", required=True, what='the issuer (the tokens\' "iss")')
    audience = table.string("audience", required=True, what='the audience (the tokens\' "aud")')
    assert issuer is not None and audience is not None
    table.at_most_one(("jwks_file", "jwks_uri"))
    jwks_uri = table.string("jwks_uri", what="a URL")
    if jwks_uri is not None:
        _check_url(table, "jwks_uri", jwks_uri, ("https", "http"))
    jwks_file = table.path_value("jwks_file", check="file")
    if jwks_uri is None and jwks_file is None:
        # Keys come from OIDC discovery, which only works from an https issuer.
        what = 'an https URL for OIDC discovery (or set "jwks_uri" or "jwks_file")'
        parts = urlsplit(issuer)
        if parts.scheme != "https" or not parts.hostname:
            raise table.error("issuer", f"expected {what}, got {_quote(issuer)}")
    algorithms = table.strings("algorithms", _default(IssuerSettings, "algorithms"), non_empty=True)
    for index, algorithm in enumerate(algorithms):
        if algorithm not in _JWT_ALGORITHMS:
            raise table.reader.error(
                f"{table.key('algorithms')}[{index}]",
                f"expected one of {quote_choices(_JWT_ALGORITHMS)}, got {_quote(algorithm)}",
            )
    return IssuerSettings(
        issuer=issuer,
        audience=audience,
        jwks_uri=jwks_uri,
        jwks_file=jwks_file,
        groups_claim=table.string("groups_claim", what="a claim name")
        or _default(IssuerSettings, "groups_claim"),
        subject_claim=table.string("subject_claim", what="a claim name")
        or _default(IssuerSettings, "subject_claim"),
        algorithms=algorithms,
        leeway_seconds=table.duration(
            "leeway", _default(IssuerSettings, "leeway_seconds"), allow_zero=True
        ),
        ca_file=table.path_value("ca_file", check="file"),
        login_client_id=table.string("login_client_id", what="the client id `hoopgw login` uses at this issuer"),
        login_scopes=table.strings("login_scopes", _default(IssuerSettings, "login_scopes"), non_empty=True),
        login_resource=table.string("login_resource", what="a resource indicator (RFC 8707), e.g. a URL or URN"),
    )


def _identity(table: Table) -> IdentitySettings:
    table.check_keys(("dev_issuer", "dev_token_max_ttl", "issuers", "ssh_keys"))
    issuers = []
    seen_issuers: dict[str, str] = {}
    for issuer_table in table.tables("issuers"):
        issuer = _issuer(issuer_table)
        if issuer.issuer in seen_issuers:
            raise issuer_table.error(
                "issuer",
                f"expected each issuer once, got {_quote(issuer.issuer)} again "
                f"(first at {seen_issuers[issuer.issuer]})",
            )
        seen_issuers[issuer.issuer] = issuer_table.path
        issuers.append(issuer)
    ssh_keys = []
    seen_keys: dict[bytes, str] = {}
    for key_table in table.tables("ssh_keys"):
        key_table.check_keys(("groups", "public_key", "subject"))
        subject = key_table.string("subject", required=True, what="a subject (the identity's name)")
        public_key = key_table.string(
            "public_key", required=True, what="an OpenSSH public key line"
        )
        assert subject is not None and public_key is not None
        blob = _parse_public_key(key_table, "public_key", public_key)
        if blob in seen_keys:
            # One key, two identities: which one a login gets would be a guess.
            raise key_table.error(
                "public_key", f"expected each key once, got the key of {seen_keys[blob]} again"
            )
        seen_keys[blob] = key_table.path
        ssh_keys.append(
            SSHKeyIdentity(
                subject=subject, public_key=public_key.strip(), groups=key_table.strings("groups")
            )
        )
    return IdentitySettings(
        dev_issuer=table.boolean("dev_issuer", _default(IdentitySettings, "dev_issuer")),
        dev_token_max_ttl_seconds=table.duration(
            "dev_token_max_ttl", _default(IdentitySettings, "dev_token_max_ttl_seconds")
        ),
        issuers=tuple(issuers),
        ssh_keys=tuple(ssh_keys),
    )


def _audit(table: Table) -> AuditSettings:
    table.check_keys(
        (
            "checkpoint_every",
            "checkpoint_interval",
            "sync",
            "sync_window_ms",
            "witness",
            "witness_timeout",
        )
    )
    witnesses, witness_vkeys = _audit_witnesses(table)
    return AuditSettings(
        sync=table.choice("sync", _SYNC_MODES, _default(AuditSettings, "sync")),
        sync_window_ms=table.positive_int(
            "sync_window_ms", _default(AuditSettings, "sync_window_ms")
        ),
        checkpoint_every=table.positive_int(
            "checkpoint_every", _default(AuditSettings, "checkpoint_every")
        ),
        checkpoint_interval_seconds=table.duration(
            "checkpoint_interval", _default(AuditSettings, "checkpoint_interval_seconds")
        ),
        witnesses=witnesses,
        witness_timeout_seconds=table.duration(
            "witness_timeout", _default(AuditSettings, "witness_timeout_seconds")
        ),
        witness_vkeys=witness_vkeys,
    )


_WITNESS_EXPECTED = (
    'a tlog-witness URL ("https://witness.example/prefix") or a directory path '
    '(ideally on another mount), a table {url = "https://...", vkey = "<witness key>"}, '
    "or an array of them"
)


def _audit_witnesses(table: Table) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """
    C{[audit] witness}: one entry or an array of them, each an http(s)
    URL (the witness's submission prefix; checkpoints go to
    C{<url>/add-checkpoint}) or a directory, relative to the configuration
    file's directory, or an inline table C{{url = ..., vkey = ...}}: a
    tlog-witness and its cosignature key.  With C{check_secrets} a
    directory must exist and be writable now, so a typo is reported at
    start rather than at the first checkpoint.

    @return: (the entries, (url, vkey) of those given with a key).
    """
    if not table.has("witness"):
        return (), ()
    value = table.data["witness"]
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise table.error("witness", f"expected {_WITNESS_EXPECTED}, got an empty array")
    result: list[str] = []
    vkeys: list[tuple[str, str]] = []
    for index, item in enumerate(items):
        key = f"{table.key('witness')}[{index}]" if isinstance(value, list) else table.key("witness")
        vkey = None
        if isinstance(item, dict):
            unknown = sorted(set(item) - {"url", "vkey"})
            if unknown or not isinstance(item.get("url"), str) or "://" not in item["url"]:
                raise table.reader.error(
                    key,
                    'expected a table {url = "https://...", vkey = "<name>+<key id>+<base64 key>"} '
                    f"(a tlog-witness and its cosignature key), got keys {sorted(item)}",
                )
            vkey = item.get("vkey")
            if vkey is not None:
                from hoopgw.audit.checkpoint import CheckpointError
                from hoopgw.audit.witness import CosignatureVerifier

                if not isinstance(vkey, str):
                    raise table.reader.error(f"{key}.vkey", f"expected a witness key string, got {_type_name(vkey)}")
                try:
                    CosignatureVerifier.from_vkey(vkey)
                except CheckpointError as e:
                    raise table.reader.error(f"{key}.vkey", f"expected a tlog-witness cosignature key: {e}") from None
                vkey = vkey.strip()
            item = item["url"]
        if not isinstance(item, str):
            raise table.reader.error(key, f"expected {_WITNESS_EXPECTED}, got {_type_name(item)}")
        if not item.strip() or "\x00" in item:
            raise table.reader.error(key, f"expected {_WITNESS_EXPECTED}, got {_quote(item)}")
        if "://" in item:
            parts = urlsplit(item)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise table.reader.error(
                    key, f"expected an http:// or https:// URL with a host, got {_quote(item)}"
                )
            if parts.query or parts.fragment or parts.username or parts.password or " " in item:
                raise table.reader.error(
                    key,
                    f"expected a witness URL without query, fragment or credentials "
                    f"(checkpoints are POSTed to <url>/add-checkpoint), got {_quote(item)}",
                )
            try:
                parts.port
            except ValueError:
                raise table.reader.error(key, f"expected a valid port in the URL, got {_quote(item)}") from None
            entry = item.rstrip("/")
        else:
            path = Path(table.reader.base_dir, Path(item).expanduser())
            if table.reader.check_secrets:
                if not path.is_dir():
                    raise table.reader.error(
                        key,
                        f"expected an existing directory for the witness copies, got {_quote(item)} "
                        f"({'not a directory' if path.exists() else 'does not exist'}: {path})",
                    )
                if not os.access(path, os.W_OK | os.X_OK):
                    raise table.reader.error(
                        key, f"expected a directory the gateway can write, got {_quote(item)} ({path})"
                    )
            entry = str(path)
        if entry in result:
            raise table.reader.error(key, f"expected each witness once, got {_quote(item)} again")
        result.append(entry)
        if vkey is not None:
            vkeys.append((entry, vkey))
    return tuple(result), tuple(vkeys)


def _preauth_limits(table: Table, base: PreauthLimits) -> PreauthLimits:
    max_bytes = table.positive_int("max_bytes", base.max_bytes)
    if max_bytes < _MIN_PREAUTH_BYTES:
        raise table.error(
            "max_bytes",
            f"expected a number of bytes of at least {_MIN_PREAUTH_BYTES} "
            f"(a TLS handshake and a token or request head must fit), got {max_bytes}",
        )
    return PreauthLimits(
        timeout=table.duration("timeout", base.timeout),
        max_per_source=table.positive_int("max_per_source", base.max_per_source),
        max_per_listener=table.positive_int("max_per_listener", base.max_per_listener),
        max_bytes=max_bytes,
    )


def _preauth(table: Table, front_ends: FrontEnds) -> PreauthSettings:
    """
    C{[preauth]}: its keys apply to every listener, C{[preauth.<listener>]}
    overrides them for one; a key set nowhere keeps the listener's default.
    """
    defaults = PreauthSettings(front_ends=front_ends)
    table.check_keys(PREAUTH_KEYS + tuple(defaults), hint=front_ends.hint())
    values = {}
    for name, default in defaults.items():
        shared = _preauth_limits(table, default)
        own = table.table(name)
        own.check_keys(PREAUTH_KEYS)
        values[name] = _preauth_limits(own, shared)
    return PreauthSettings(values, front_ends=front_ends)


def _reviews(table: Table, listen: ListenSettings) -> ReviewsSettings:
    table.check_keys(_REVIEWS_KEYS)
    webhook = table.string("webhook", what="a URL")
    if webhook is not None:
        _check_url(table, "webhook", webhook, ("https", "http"))
    api_url = table.string("api_url", what="a URL")
    if api_url is not None:
        _check_url(table, "api_url", api_url, ("https", "http"))
        if listen.api is None:
            # Reviews are decided through the API: links to a listener that is off lead nowhere.
            raise table.error(
                "api_url", "expected no API URL while the API listener is off ([listen] api = false)"
            )
        api_url = api_url.rstrip("/")
    return ReviewsSettings(
        webhook=webhook,
        api_url=api_url,
        webhook_secret=table.secret("webhook_secret_env", "webhook_secret_file"),
    )


def _connection(table: Table, front_ends: FrontEnds) -> Connection:
    """One C{[[connections]]} table: C{name} and C{kind} here, the rest by the kind's front end."""
    if not front_ends:
        raise table.error("kind", "no front end is installed (no IFrontEnd plugin in twisted.plugins)" + front_ends.hint())
    try:
        kind = table.choice("kind", tuple(front_ends), None)
    except ConfigError as e:
        raise ConfigError(e.file, e.key, e.expected + front_ends.hint()) from None
    front_end = front_ends[kind]
    table.check_keys(("kind", "name", *front_end.connection_keys))
    name = table.string("name", required=True, what="a connection name")
    assert name is not None
    if not CONNECTION_NAME.fullmatch(name):
        raise table.error("name", f"{_CONNECTION_NAME_EXPECTED}, got {_quote(name)}")
    target, settings = front_end.parse_connection(table)
    return Connection(name=name, kind=kind, target=target, settings=settings)


def _config(reader: _Reader, document: dict[str, Any], source: Path | None, front_ends: FrontEnds) -> Config:
    top = Table(reader, "", document)
    top.check_keys(_TOP_KEYS)
    gateway = _gateway(reader, top.table("gateway"))
    listen = _listen(top.table("listen"), front_ends)
    tls = _tls(top.table("tls"))
    identity = _identity(top.table("identity"))
    audit = _audit(top.table("audit"))
    preauth = _preauth(top.table("preauth"), front_ends)
    reviews = _reviews(top.table("reviews"), listen)
    connections = []
    first: dict[str, str] = {}
    for table in top.tables("connections"):
        connection = _connection(table, front_ends)
        if connection.name in first:
            raise table.error(
                "name",
                f"expected a unique connection name, got {_quote(connection.name)} again "
                f"(first at {first[connection.name]})",
            )
        first[connection.name] = table.path
        connections.append(connection)
    return Config(
        source=source,
        gateway=gateway,
        listen=listen,
        tls=tls,
        identity=identity,
        audit=audit,
        preauth=preauth,
        reviews=reviews,
        connections=tuple(connections),
    )


def loads(
    text: str,
    *,
    source: Path | None,
    base_dir: Path,
    check_secrets: bool = True,
    environ: Mapping[str, str] | None = None,
    front_ends: FrontEnds | None = None,
) -> Config:
    """
    Parse and validate a configuration document.

    @param source: the file the text came from, named in errors and kept in
        L{Config.source}; C{None} for text from elsewhere.
    @param base_dir: relative paths in the document resolve against it.
    @param check_secrets: if true, every referenced file must be readable and
        every referenced environment variable set (and non-empty).  Values are
        never read into the configuration.
    @param environ: the environment to check variables in; L{os.environ} if
        C{None}.
    @param front_ends: the kinds of connection there are, and how each is
        read; the installed ones (L{hoopgw.frontends.installed}) if C{None}.
    @raise ConfigError: for the first problem found.
    @raise hoopgw.errors.PluginError: if the installed plugins cannot be
        used together.
    """
    file = str(source) if source is not None else "<string>"
    try:
        document = tomllib.loads(text)
    except (ValueError, RecursionError) as e:
        # TOMLDecodeError is a ValueError; a deeply nested document exhausts
        # the parser's recursion instead.
        if isinstance(e, RecursionError):
            raise ConfigError(file, "", "invalid TOML: nested too deeply") from None
        raise _toml_error(file, text, e) from None
    reader = _Reader(
        file,
        Path(base_dir).absolute(),
        check_secrets,
        os.environ if environ is None else environ,
    )
    return _config(reader, document, source, _installed(front_ends))


def load(
    path: Path | str, *, check_secrets: bool = True, environ: Mapping[str, str] | None = None
) -> Config:
    """
    Read, parse and validate a configuration file.  Relative paths in it
    resolve against the file's directory.  See L{loads}.

    @raise ConfigError: if the file cannot be read or is invalid.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(
            path, "", f"cannot read configuration file: {e.strerror or type(e).__name__}"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, "", f"invalid TOML: not UTF-8 (byte offset {e.start})") from None
    absolute = path.absolute()
    config = loads(
        text, source=path, base_dir=absolute.parent, check_secrets=check_secrets, environ=environ
    )
    return evolve(config, source=absolute)


def quickstart(*, base_dir: Path | None = None) -> Config:
    """
    The embedded defaults used when no configuration file is given: the
    class defaults, data under C{./hoopgw-data} (relative to C{base_dir},
    the current directory by default), listeners on 127.0.0.1 only, the dev
    token issuer on, and no connections.
    """
    base = (Path.cwd() if base_dir is None else Path(base_dir)).absolute()
    return Config(
        source=None,
        gateway=GatewaySettings(data_dir=base / _default(GatewaySettings, "data_dir")),
    )


#: The environment variable naming the configuration file when C{--config} is not given.
CONFIG_ENV = "HOOPGW_CONFIG"

#: The configuration file used when neither C{--config} nor C{$HOOPGW_CONFIG} names one, if it exists.
DEFAULT_CONFIG_PATH = Path("/etc/hoopgw/hoopgw.toml")


@frozen
class ConfigChoice:
    """
    Which configuration a process uses, and why: C{path} C{None} means the
    embedded quickstart defaults (data under C{./hoopgw-data}).

    @ivar origin: C{"--config"}, C{"$HOOPGW_CONFIG"}, C{"default"} (the file
        at L{DEFAULT_CONFIG_PATH}) or C{"quickstart"}.
    """

    path: Path | None
    origin: str
    default_path: Path = DEFAULT_CONFIG_PATH

    def load(self, *, check_secrets: bool = True, environ: Mapping[str, str] | None = None) -> Config:
        """
        The configuration: the file, or L{quickstart} (relative to the current directory).

        @raise ConfigError: the file cannot be read or is invalid; a file
            that came from C{$HOOPGW_CONFIG} or the default path says so.
        """
        if self.path is None:
            return quickstart()
        try:
            return load(self.path, check_secrets=check_secrets, environ=environ)
        except ConfigError as e:
            if self.origin == "--config":
                raise
            raise ConfigError(e.file, e.key, f"{e.expected} (the configuration {self.describe_origin()})") from None

    def describe_origin(self) -> str:
        if self.origin == "$HOOPGW_CONFIG":
            return f"named by ${CONFIG_ENV}"
        if self.origin == "default":
            return "found at the default path"
        if self.origin == "--config":
            return "given with --config"
        return "quickstart"

    def describe(self) -> str:
        """
        C{/etc/hoopgw/hoopgw.toml (found at the default path)}, or C{the
        quickstart defaults (no --config, $HOOPGW_CONFIG or
        /etc/hoopgw/hoopgw.toml)}.
        """
        if self.path is None:
            return f"the quickstart defaults (no --config, ${CONFIG_ENV} or {self.default_path})"
        return f"{self.path.absolute()} ({self.describe_origin()})"


def find_config(
    given: Path | str | None,
    *,
    environ: Mapping[str, str] | None = None,
    default: Path = DEFAULT_CONFIG_PATH,
) -> ConfigChoice:
    """
    The configuration file the gateway (C{twistd hoopgw}) and the admin
    command (C{hoopgw}) both use, first found of: C{given} (C{--config}),
    the file C{$HOOPGW_CONFIG} names (when set and not empty), C{default}
    (L{DEFAULT_CONFIG_PATH}) if it exists, else the quickstart defaults.
    Nothing is read here: L{ConfigChoice.load} does.
    """
    if given:
        return ConfigChoice(Path(given), "--config", default)
    named = (os.environ if environ is None else environ).get(CONFIG_ENV)
    if named:
        return ConfigChoice(Path(named), "$HOOPGW_CONFIG", default)
    try:
        found = default.exists()
    except OSError:
        found = True  # there, but unreadable to us: loading it says so, rather than quietly not using it
    if found:
        return ConfigChoice(default, "default", default)
    return ConfigChoice(None, "quickstart", default)


def _plain(value: Any) -> Any:
    if isinstance(value, SecretRef):
        # The reference, never the value.
        return value.describe()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, _PerListener):
        return {name: _plain(item) for name, item in value.items()}
    if isinstance(value, Connection):
        record = {"name": value.name, "kind": value.kind, "target": value.target}
        if value.settings is not None:
            record.update(_plain(value.settings))
        return record
    if attrs.has(type(value)):
        return {a.name: _plain(getattr(value, a.name)) for a in attrs.fields(type(value))}
    return value


def effective_config(config: Config) -> dict[str, Any]:
    """
    The effective configuration as JSON-compatible data: every setting with
    its default filled in, paths resolved, secrets as references
    (C{"env:NAME"}, C{"file:/path"}) only.
    """
    result = _plain(config)
    assert isinstance(result, dict)
    return result


def config_sha256(config: Config) -> str:
    """Hex SHA-256 of the canonical JSON form of L{effective_config}."""
    canonical = json.dumps(
        effective_config(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
