"""
Tests for L{hoopgw.config}: loading, validation, defaults and the effective
configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.config import (
    AuditSettings,
    Config,
    GatewaySettings,
    IdentitySettings,
    IssuerSettings,
    ListenSettings,
    ReviewsSettings,
    SecretRef,
    SSHKeyIdentity,
    TLSSettings,
    config_sha256,
    effective_config,
    find_config,
    load,
    loads,
    parse_duration,
    quickstart,
)
from hoopgw.errors import ConfigError
from hoopgw.model import Connection
from hoopgw.protocols.http.settings import HTTPSettings
from hoopgw.protocols.postgres.settings import PostgresSettings
from hoopgw.protocols.ssh.settings import SSHSettings

EXAMPLE = Path(__file__).parent.parent / "examples" / "hoopgw.toml"
ALICE_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEEspNlYgoeQhNKLr+dfqWEfccKb44/uSy3R2S2+AyhT alice@laptop"
)
BOT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMPLIs/Yt/KwTzfFMcVk6v363pTBAOYNZg1UH2ql9n4s"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO5HK4OGiqXlf8E9B9w8CvUwcGe/S729e3ccpEtkGBSa"

POSTGRES = """
[[connections]]
name = "appdb"
kind = "postgres"
address = "127.0.0.1:5432"
database = "app"
user = "app_rw"
"""

SSH = f"""
[[connections]]
name = "web1"
kind = "ssh"
address = "127.0.0.1:22"
user = "deploy"
password_env = "WEB1_PASSWORD"
host_key = "{HOST_KEY}"
"""

HTTP = """
[[connections]]
name = "k8s"
kind = "http"
upstream = "https://127.0.0.1:6443"
"""

ISSUER = """
[[identity.issuers]]
issuer = "https://idp.example.com"
audience = "hoopgw"
"""

ENV = {"WEB1_PASSWORD": "s3cret"}

FULL = f"""
[gateway]
name = "gw-1"
data_dir = "data"
policies = "/etc/hoopgw/policies"

[listen]
postgres = "tcp:25432:interface=127.0.0.1"
ssh = 'tcp:22222:interface=\\:\\:1'
http = false
api = "tcp:0"

[tls]
cert_file = "tls/cert.pem"
key_file = "tls/key.pem"

[identity]
dev_issuer = false
dev_token_max_ttl = "1h30m"

[[identity.issuers]]
issuer = "https://idp.example.com"
audience = "hoopgw"
jwks_file = "jwks.json"
groups_claim = "roles"
subject_claim = "email"
algorithms = ["EdDSA"]
leeway = 0
ca_file = "idp-ca.pem"

[[identity.issuers]]
issuer = "https://other.example.com"
audience = "gw"
jwks_uri = "https://other.example.com/keys"

[[identity.ssh_keys]]
subject = "alice"
groups = ["dev", "dba"]
public_key = "{ALICE_KEY}"

[[identity.ssh_keys]]
subject = "bot"
public_key = "{BOT_KEY}"

[audit]
sync = "strict"
sync_window_ms = 5
checkpoint_every = 10
checkpoint_interval = "2m"

[[connections]]
name = "appdb"
kind = "postgres"
address = "[::1]:6543"
database = "app"
user = "app_rw"
password_env = "APPDB_PASSWORD"
tls = "require"
ca_file = "pg-ca.pem"

[[connections]]
name = "web1"
kind = "ssh"
address = "web1.internal"
user = "deploy"
key_file = "keys/deploy"
known_hosts = "known_hosts"

[[connections]]
name = "k8s.prod"
kind = "http"
upstream = "https://k8s.internal:6443/"
token_file = "k8s-token"
client_cert = "client.pem"
client_key = "client.key"
ca_file = "k8s-ca.pem"
insecure = true
impersonate = true
"""

FULL_FILES = (
    "tls/cert.pem",
    "tls/key.pem",
    "jwks.json",
    "idp-ca.pem",
    "pg-ca.pem",
    "keys/deploy",
    "known_hosts",
    "k8s-token",
    "client.pem",
    "client.key",
    "k8s-ca.pem",
)


class ConfigTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir()

    def write(self, relative: str, content: str = "x") -> Path:
        path = self.base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        return path

    def loadText(self, text: str, *, check_secrets: bool = True, environ=None) -> Config:
        return loads(
            text,
            source=Path("hoopgw.toml"),
            base_dir=self.base,
            check_secrets=check_secrets,
            environ=ENV if environ is None else environ,
        )

    def assertError(self, text: str, message: str, **kwargs) -> ConfigError:
        error = self.assertRaises(ConfigError, self.loadText, text, **kwargs)
        self.assertEqual(str(error), message)
        return error


class ParseDurationTests(SynchronousTestCase):
    def test_units(self) -> None:
        """
        If a duration names seconds, minutes, hours, days or a descending
        combination of them, then parse_duration returns its total seconds.
        """
        self.assertEqual(parse_duration("30s"), 30)
        self.assertEqual(parse_duration("15m"), 900)
        self.assertEqual(parse_duration("2h"), 7200)
        self.assertEqual(parse_duration("1d"), 86400)
        self.assertEqual(parse_duration("1h30m"), 5400)
        self.assertEqual(parse_duration("1d2h3m4s"), 93784)
        self.assertEqual(parse_duration("0s"), 0)

    def test_invalid(self) -> None:
        """
        If the text is not such a duration (no unit, unknown unit, units out of
        order or repeated, signs, spaces, fractions, not a string), then
        parse_duration raises ValueError quoting it and showing the form.
        """
        form = 'expected a duration such as "30s", "15m", "2h", "1d" or "1h30m", got '
        for text in ["", "30", "30x", "30m1h", "1m1m", "-5s", " 5s", "1.5h", "5 s", "h"]:
            error = self.assertRaises(ValueError, parse_duration, text)
            self.assertEqual(str(error), form + json.dumps(text))
        error = self.assertRaises(ValueError, parse_duration, 30)
        self.assertEqual(str(error), form + "an integer")

    @given(
        st.tuples(*(st.one_of(st.none(), st.integers(0, 10**6)) for _ in range(4))).filter(
            lambda parts: any(p is not None for p in parts)
        )
    )
    def test_roundTrip(self, parts) -> None:
        """
        If a duration is written from any numbers of days, hours, minutes and
        seconds, then parse_duration returns the matching total.
        """
        text = "".join(f"{n}{unit}" for n, unit in zip(parts, "dhms", strict=True) if n is not None)
        expected = sum(
            (n or 0) * factor for n, factor in zip(parts, (86400, 3600, 60, 1), strict=True)
        )
        self.assertEqual(parse_duration(text), expected)


class LoadValidTests(ConfigTestCase):
    def test_full(self) -> None:
        """
        If every section and key is given, with all three connection kinds,
        then each value arrives in the matching settings class, with relative
        paths resolved against the base directory.
        """
        for relative in FULL_FILES:
            self.write(relative)
        b = self.base
        config = self.loadText(FULL, environ={"APPDB_PASSWORD": "pw"})
        self.assertEqual(config.source, Path("hoopgw.toml"))
        self.assertEqual(
            config.gateway,
            GatewaySettings(
                name="gw-1", data_dir=b / "data", policies=Path("/etc/hoopgw/policies")
            ),
        )
        self.assertEqual(
            config.listen,
            ListenSettings(
                postgres="tcp:25432:interface=127.0.0.1",
                ssh="tcp:22222:interface=\\:\\:1",
                http=None,
                api="tcp:0",
            ),
        )
        self.assertEqual(
            config.tls, TLSSettings(cert_file=b / "tls/cert.pem", key_file=b / "tls/key.pem")
        )
        self.assertEqual(
            config.identity,
            IdentitySettings(
                dev_issuer=False,
                dev_token_max_ttl_seconds=5400,
                issuers=(
                    IssuerSettings(
                        issuer="https://idp.example.com",
                        audience="hoopgw",
                        jwks_file=b / "jwks.json",
                        groups_claim="roles",
                        subject_claim="email",
                        algorithms=("EdDSA",),
                        leeway_seconds=0,
                        ca_file=b / "idp-ca.pem",
                    ),
                    IssuerSettings(
                        issuer="https://other.example.com",
                        audience="gw",
                        jwks_uri="https://other.example.com/keys",
                    ),
                ),
                ssh_keys=(
                    SSHKeyIdentity(subject="alice", public_key=ALICE_KEY, groups=("dev", "dba")),
                    SSHKeyIdentity(subject="bot", public_key=BOT_KEY),
                ),
            ),
        )
        self.assertEqual(
            config.audit,
            AuditSettings(
                sync="strict",
                sync_window_ms=5,
                checkpoint_every=10,
                checkpoint_interval_seconds=120,
            ),
        )
        self.assertEqual(
            list(config.connections),
            [
                Connection("appdb", "postgres", "[::1]:6543"),
                Connection("web1", "ssh", "web1.internal:22"),
                Connection("k8s.prod", "http", "https://k8s.internal:6443/"),
            ],
        )
        appdb, web1, k8s = (c.settings for c in config.connections)
        self.assertEqual(
            appdb,
            PostgresSettings(
                host="::1",
                port=6543,
                database="app",
                user="app_rw",
                password=SecretRef(env="APPDB_PASSWORD"),
                tls="require",
                ca_file=b / "pg-ca.pem",
            ),
        )
        self.assertEqual(
            web1,
            SSHSettings(
                host="web1.internal",
                port=22,
                user="deploy",
                key=SecretRef(file=b / "keys/deploy"),
                known_hosts=b / "known_hosts",
            ),
        )
        self.assertEqual(
            k8s,
            HTTPSettings(
                upstream="https://k8s.internal:6443/",
                token=SecretRef(file=b / "k8s-token"),
                client_cert=b / "client.pem",
                client_key=b / "client.key",
                ca_file=b / "k8s-ca.pem",
                insecure=True,
                impersonate=True,
            ),
        )
        self.assertIs(config.connection("web1"), config.connections[1])
        self.assertIsNone(config.connection("nope"))

    def test_minimalConnections(self) -> None:
        """
        If connections give only their required keys, then the defaults apply:
        port 5432 / 22 when the address has none, tls "verify-full", no
        password, no token.
        """
        config = self.loadText(POSTGRES.replace("127.0.0.1:5432", "db.internal") + SSH + HTTP)
        appdb, web1, k8s = (c.settings for c in config.connections)
        self.assertEqual(
            appdb, PostgresSettings(host="db.internal", port=5432, database="app", user="app_rw")
        )
        self.assertEqual(config.connections[0].target, "db.internal:5432")
        self.assertEqual(appdb.tls, "verify-full")
        self.assertEqual(web1.password, SecretRef(env="WEB1_PASSWORD"))
        self.assertEqual(web1.host_key, HOST_KEY)
        self.assertEqual(k8s, HTTPSettings(upstream="https://127.0.0.1:6443"))

    def test_empty(self) -> None:
        """
        If the document is empty, then every class default applies and the
        data directory is "hoopgw-data" beside the configuration file.
        """
        config = self.loadText("")
        self.assertEqual(
            config,
            Config(
                source=Path("hoopgw.toml"),
                gateway=GatewaySettings(data_dir=self.base / "hoopgw-data"),
            ),
        )

    def test_quickstart(self) -> None:
        """
        quickstart() is the class defaults with data under ./hoopgw-data,
        listeners on 127.0.0.1 only, the dev issuer on, no connections.
        """
        config = quickstart(base_dir=self.base)
        self.assertEqual(
            config, Config(source=None, gateway=GatewaySettings(data_dir=self.base / "hoopgw-data"))
        )
        for name in ("postgres", "ssh", "http", "api"):
            self.assertIn("interface=127.0.0.1", config.listen[name])
        self.assertTrue(config.identity.dev_issuer)
        self.assertEqual(quickstart().gateway.data_dir, Path.cwd() / "hoopgw-data")

    def test_loadResolvesAgainstFile(self) -> None:
        """
        If load() reads a file, then relative paths resolve against the file's
        directory and source is the file's absolute path.
        """
        self.write("conf/secret", "pw")
        path = self.write(
            "conf/gw.toml", POSTGRES + 'password_file = "secret"\n[gateway]\ndata_dir = "d"\n'
        )
        config = load(path)
        self.assertEqual(config.source, path)
        self.assertEqual(config.gateway.data_dir, self.base / "conf" / "d")
        self.assertEqual(
            config.connections[0].settings.password, SecretRef(file=self.base / "conf" / "secret")
        )

    def test_example(self) -> None:
        """
        The shipped examples/hoopgw.toml loads (without its secrets present)
        and holds postgres, ssh and http connections, an issuer and SSH keys.
        """
        config = load(EXAMPLE, check_secrets=False)
        self.assertEqual([c.kind for c in config.connections], ["postgres", "ssh", "http"])
        self.assertEqual(len(config.identity.issuers), 1)
        self.assertEqual(len(config.identity.ssh_keys), 2)
        self.assertEqual(config.reviews.webhook, "https://chat.example.com/hooks/hoopgw")

    def test_checkSecretsOff(self) -> None:
        """
        If check_secrets is false, then referenced files and variables need not
        exist.
        """
        config = self.loadText(
            POSTGRES + 'password_file = "missing"\n' + SSH, check_secrets=False, environ={}
        )
        self.assertEqual(
            config.connections[0].settings.password, SecretRef(file=self.base / "missing")
        )


class FindConfigTests(ConfigTestCase):
    """
    find_config(): how the gateway and the admin command both choose their
    configuration: --config, else $HOOPGW_CONFIG, else the default path if
    it exists, else the quickstart defaults.
    """

    def test_order(self) -> None:
        given = self.write("given.toml", "")
        named = self.write("named.toml", "")
        default = self.write("default.toml", "")
        missing = self.base / "missing.toml"
        env = {"HOOPGW_CONFIG": str(named)}
        cases = [
            (find_config(str(given), environ=env, default=default), (given, "--config")),
            (find_config(None, environ=env, default=default), (named, "$HOOPGW_CONFIG")),
            (find_config(None, environ={"HOOPGW_CONFIG": ""}, default=default), (default, "default")),
            (find_config(None, environ={}, default=default), (default, "default")),
            (find_config(None, environ={}, default=missing), (None, "quickstart")),
            (find_config("", environ={}, default=missing), (None, "quickstart")),
        ]
        for choice, expected in cases:
            self.assertEqual((choice.path, choice.origin), expected)

    def test_load(self) -> None:
        """
        A chosen file loads as load() does; the quickstart choice is
        quickstart(); a file named by $HOOPGW_CONFIG that cannot be read is
        an error that says where its name came from.
        """
        path = self.write("gw.toml", '[gateway]\ndata_dir = "d"\n')
        choice = find_config(None, environ={"HOOPGW_CONFIG": str(path)}, default=self.base / "missing")
        self.assertEqual(choice.load(), load(path))
        self.assertEqual(choice.describe(), f"{path} (named by $HOOPGW_CONFIG)")
        quick = find_config(None, environ={}, default=self.base / "missing")
        self.assertEqual(quick.load(), quickstart())
        self.assertEqual(
            quick.describe(), f"the quickstart defaults (no --config, $HOOPGW_CONFIG or {self.base / 'missing'})"
        )
        gone = find_config(None, environ={"HOOPGW_CONFIG": str(self.base / "gone.toml")})
        with self.assertRaises(ConfigError) as caught:
            gone.load()
        self.assertEqual(
            str(caught.exception),
            f"{self.base / 'gone.toml'}: cannot read configuration file: No such file or directory "
            "(the configuration named by $HOOPGW_CONFIG)",
        )
        with self.assertRaises(ConfigError) as caught:
            find_config(str(self.base / "gone.toml")).load()
        self.assertNotIn("named by", str(caught.exception))


class ReviewsTests(ConfigTestCase):
    """[reviews]: the webhook every review is notified to, the API's public URL, the signing secret."""

    def test_defaults(self) -> None:
        self.assertEqual(self.loadText("").reviews, ReviewsSettings())

    def test_values(self) -> None:
        self.write("hook-secret", "s3cret\n")
        reviews = self.loadText(
            '[reviews]\nwebhook = "https://chat.example/hooks/abc"\n'
            'api_url = "https://gw.example/hoopgw/"\nwebhook_secret_file = "hook-secret"\n'
        ).reviews
        self.assertEqual(
            reviews,
            ReviewsSettings(
                webhook="https://chat.example/hooks/abc",
                api_url="https://gw.example/hoopgw",
                webhook_secret=SecretRef(file=self.base / "hook-secret"),
            ),
        )
        config = self.loadText('[reviews]\nwebhook_secret_env = "WEB1_PASSWORD"\n')
        self.assertEqual(effective_config(config)["reviews"]["webhook_secret"], "env:WEB1_PASSWORD")

    def test_errors(self) -> None:
        """Unknown keys, URLs that are not absolute http(s) ones, a URL to no API, two secrets, a missing one."""
        self.write("hook-secret")
        cases = [
            (
                '[reviews]\nwebhooks = "https://x"\n',
                'reviews.webhooks: unknown key; expected one of "api_url", "webhook", '
                '"webhook_secret_env", "webhook_secret_file"',
            ),
            ("[reviews]\nwebhook = 1\n", "reviews.webhook: expected a URL, got an integer"),
            ('reviews = "x"\n', "reviews: expected a table ([reviews]), got a string"),
            (
                '[reviews]\nwebhook = "chat.example/hooks"\n',
                'reviews.webhook: expected an absolute https or http URL, got "chat.example/hooks"',
            ),
            (
                '[reviews]\nwebhook = "https://chat.example/hooks?token=abc"\n',
                "reviews.webhook: expected an absolute https or http URL without user info, "
                "query or fragment, got a URL with them",
            ),
            (
                '[reviews]\napi_url = "gw.example"\n',
                'reviews.api_url: expected an absolute https or http URL, got "gw.example"',
            ),
            (
                '[listen]\napi = false\n[reviews]\napi_url = "https://gw.example"\n',
                "reviews.api_url: expected no API URL while the API listener is off ([listen] api = false)",
            ),
            (
                '[reviews]\nwebhook_secret_env = "WEB1_PASSWORD"\nwebhook_secret_file = "hook-secret"\n',
                'reviews: expected at most one of "webhook_secret_env", "webhook_secret_file", '
                'got "webhook_secret_env", "webhook_secret_file"',
            ),
            (
                '[reviews]\nwebhook_secret_env = "HOOK_SECRET"\n',
                'reviews.webhook_secret_env: environment variable "HOOK_SECRET" is not set',
            ),
            (
                '[reviews]\nwebhook_secret_file = "missing"\n',
                f'reviews.webhook_secret_file: cannot read secret file "{self.base / "missing"}": '
                "No such file or directory",
            ),
        ]
        for text, message in cases:
            self.assertError(text, "hoopgw.toml: " + message)


class SSHTimingTests(ConfigTestCase):
    def test_defaults(self) -> None:
        """
        Without keep-alive or login settings, an SSH connection sends a
        keep-alive every 15 s, gives up after 3 unanswered, and allows 30 s
        for the target login.
        """
        settings = self.loadText(SSH).connections[0].settings
        self.assertEqual(
            (settings.keepalive_interval, settings.keepalive_count_max, settings.login_timeout), (15, 3, 30)
        )

    def test_values(self) -> None:
        """Durations and counts are read; a keep-alive interval of 0 turns them off."""
        settings = self.loadText(
            SSH + 'keepalive_interval = "1m"\nkeepalive_count_max = 5\nlogin_timeout = 10\n'
        ).connections[0].settings
        self.assertEqual(
            (settings.keepalive_interval, settings.keepalive_count_max, settings.login_timeout), (60, 5, 10)
        )
        off = self.loadText(SSH + "keepalive_interval = 0\n").connections[0].settings
        self.assertEqual(off.keepalive_interval, 0)

    def test_errors(self) -> None:
        """Each bad value is refused with the key and what is expected."""
        duration = 'a positive duration such as "30s", "15m", "2h", "1d" or "1h30m" (or whole seconds)'
        cases = [
            (SSH + 'keepalive_interval = "often"\n',
             f'connections[0].keepalive_interval: expected {duration}, got "often"'),
            (SSH + "keepalive_interval = -1\n", f"connections[0].keepalive_interval: expected {duration}, got -1"),
            (SSH + "keepalive_count_max = 0\n", "connections[0].keepalive_count_max: expected a positive integer, got 0"),
            (SSH + 'keepalive_count_max = "3"\n',
             "connections[0].keepalive_count_max: expected a positive integer, got a string"),
            (SSH + "login_timeout = 0\n", f"connections[0].login_timeout: expected {duration}, got 0"),
            (SSH + "login_timeout = true\n", f"connections[0].login_timeout: expected {duration}, got a boolean"),
        ]
        for text, message in cases:
            self.assertError(text, "hoopgw.toml: " + message)


class LoadFileErrorTests(ConfigTestCase):
    def test_missingFile(self) -> None:
        """
        If the configuration file does not exist, then the error names it and
        the reason.
        """
        path = self.base / "nope.toml"
        error = self.assertRaises(ConfigError, load, path)
        self.assertEqual(
            str(error), f"{path}: cannot read configuration file: No such file or directory"
        )

    def test_notUTF8(self) -> None:
        """
        If the file is not UTF-8, then the error says so with the byte offset.
        """
        path = self.base / "bad.toml"
        path.write_bytes(b"a = 1\n\xff")
        error = self.assertRaises(ConfigError, load, path)
        self.assertEqual(str(error), f"{path}: invalid TOML: not UTF-8 (byte offset 6)")

    def test_fileNameAsGiven(self) -> None:
        """
        Errors from load() name the file as the caller gave it.
        """
        path = self.write("gw.toml", "[gatway]\n")
        error = self.assertRaises(ConfigError, load, str(path))
        self.assertEqual(error.file, str(path))
        self.assertEqual(error.key, "gatway")


class ErrorMessageTests(ConfigTestCase):
    def test_tomlSyntax(self) -> None:
        """
        If the TOML is malformed, then the error gives the line and column.
        """
        self.assertError(
            "[gateway]\nname = \n",
            "hoopgw.toml: line 2, column 8: invalid TOML: Invalid value",
        )
        self.assertError(
            'a = "unterminated',
            "hoopgw.toml: line 1, column 18: invalid TOML: Unterminated string",
        )

    def test_tooDeep(self) -> None:
        """
        If arrays nest deeper than the parser can follow, then that is a
        ConfigError too.
        """
        self.assertError(
            "a = " + "[" * 100000 + "]" * 100000,
            "hoopgw.toml: invalid TOML: nested too deeply",
        )

    def test_unknownKeys(self) -> None:
        """
        If a key is unknown at any level, then the error names it and lists
        the keys allowed there.
        """
        cases = [
            (
                "[gatway]\n",
                'gatway: unknown key; expected one of "audit", "connections", '
                '"gateway", "identity", "listen", "preauth", "reviews", "tls"',
            ),
            (
                '[gateway]\ndtaa_dir = "x"\n',
                'gateway.dtaa_dir: unknown key; expected one of "data_dir", "name", "policies"',
            ),
            (
                '[listen]\nhttps = "tcp:1"\n',
                'listen.https: unknown key; expected one of "api", "http", "postgres", "ssh"',
            ),
            (
                '[tls]\ncert = "x"\n',
                'tls.cert: unknown key; expected one of "cert_file", "key_file"',
            ),
            (
                "[identity]\ndev = true\n",
                'identity.dev: unknown key; expected one of "dev_issuer", '
                '"dev_token_max_ttl", "issuers", "ssh_keys"',
            ),
            (
                ISSUER + 'jwks = "x"\n',
                "identity.issuers[0].jwks: unknown key; expected one of "
                '"algorithms", "audience", "ca_file", "groups_claim", "issuer", "jwks_file", '
                '"jwks_uri", "leeway", "login_client_id", "login_resource", "login_scopes", "subject_claim"',
            ),
            (
                '[[identity.ssh_keys]]\nkey = "x"\n',
                "identity.ssh_keys[0].key: unknown key; "
                'expected one of "groups", "public_key", "subject"',
            ),
            (
                "[audit]\nsync_window = 1\n",
                "audit.sync_window: unknown key; expected one of "
                '"checkpoint_every", "checkpoint_interval", "sync", "sync_window_ms", "witness", "witness_timeout"',
            ),
            (
                POSTGRES + 'password = "hunter2"\n',
                "connections[0].password: unknown key; "
                'expected one of "address", "ca_file", "database", "kind", "login_timeout", "name", '
                '"password_env", "password_file", "require_auth", "tls", "user"',
            ),
            (
                POSTGRES + 'require_auth = ["scram-sha-256", "trust"]\n',
                'connections[0].require_auth[1]: expected one of "md5", "none", '
                '"password", "scram-sha-256", got "trust"',
            ),
            (
                POSTGRES + 'require_auth = ["md5", "md5"]\n',
                'connections[0].require_auth[1]: expected each method once, got "md5" again',
            ),
            (
                POSTGRES + "require_auth = []\n",
                "connections[0].require_auth: expected a non-empty array of strings, got an empty array",
            ),
            (
                POSTGRES + 'login_timeout = "soon"\n',
                'connections[0].login_timeout: expected a positive duration such as "30s", "15m", '
                '"2h", "1d" or "1h30m" (or whole seconds), got "soon"',
            ),
            (
                SSH + "port = 22\n",
                'connections[0].port: unknown key; expected one of "address", '
                '"host_key", "keepalive_count_max", "keepalive_interval", "key_file", "kind", '
                '"known_hosts", "login_timeout", "mask_terminal", "name", "password_env", '
                '"password_file", "record_exec_output", "record_input", "user"',
            ),
            (
                SSH + 'record_input = "yes"\n',
                "connections[0].record_input: expected true or false, got a string",
            ),
            (
                HTTP + "token = 1\n",
                'connections[0].token: unknown key; expected one of "ca_file", '
                '"client_cert", "client_key", "hold_timeout", "impersonate", "insecure", "kind", "name", '
                '"pass_cookies", "record_exec_output", "record_input", "token_env", "token_file", '
                '"upgrade_idle_timeout", "upstream"',
            ),
            (
                HTTP + 'hold_timeout = "0s"\n',
                'connections[0].hold_timeout: expected a positive duration such as "30s", "15m", '
                '"2h", "1d" or "1h30m" (or whole seconds), got "0s"',
            ),
            (
                HTTP + "record_exec_output = 1\n",
                "connections[0].record_exec_output: expected true or false, got an integer",
            ),
            (
                '[gateway]\n"data dir" = 1\n',
                'gateway."data dir": unknown key; expected one of "data_dir", "name", "policies"',
            ),
        ]
        for text, message in cases:
            self.assertError(text, "hoopgw.toml: " + message)

    def test_wrongTypes(self) -> None:
        """
        If a value has the wrong type, then the error says what type was
        expected and which was found, without the value.
        """
        cases = [
            ("gateway = 1\n", "gateway: expected a table ([gateway]), got an integer"),
            ("[gateway]\ndata_dir = 7\n", "gateway.data_dir: expected a path, got an integer"),
            (
                '[gateway]\nname = ""\n',
                "gateway.name: expected a gateway name, got an empty string",
            ),
            (
                "[listen]\napi = 18009\n",
                "listen.api: expected a Twisted server endpoint string, "
                "or false to disable it, got an integer",
            ),
            (
                "[listen]\napi = true\n",
                "listen.api: expected a Twisted server endpoint string, "
                "or false to disable it, got true",
            ),
            (
                '[identity]\ndev_issuer = "yes"\n',
                "identity.dev_issuer: expected true or false, got a string",
            ),
            (
                "[identity]\nissuers = 3\n",
                "identity.issuers: expected an array of tables "
                "([[identity.issuers]]), got an integer",
            ),
            (
                "[connections]\n",
                "connections: expected an array of tables ([[connections]]), got a table",
            ),
            ("connections = [1]\n", "connections[0]: expected a table, got an integer"),
            (
                "[audit]\nsync_window_ms = 1.5\n",
                "audit.sync_window_ms: expected a positive integer, got a float",
            ),
            (
                "[audit]\ncheckpoint_every = true\n",
                "audit.checkpoint_every: expected a positive integer, got a boolean",
            ),
            (
                "[audit]\ncheckpoint_every = 0\n",
                "audit.checkpoint_every: expected a positive integer, got 0",
            ),
            (
                '[audit]\ncheckpoint_interval = "soon"\n',
                "audit.checkpoint_interval: expected a "
                'positive duration such as "30s", "15m", "2h", "1d" or "1h30m" (or whole seconds), '
                'got "soon"',
            ),
            (
                '[audit]\ncheckpoint_interval = "0s"\n',
                "audit.checkpoint_interval: expected a "
                'positive duration such as "30s", "15m", "2h", "1d" or "1h30m" (or whole seconds), '
                'got "0s"',
            ),
            (
                "[identity]\ndev_token_max_ttl = 1979-05-27\n",
                "identity.dev_token_max_ttl: expected "
                'a positive duration such as "30s", "15m", "2h", "1d" or "1h30m" (or whole seconds), '
                "got a date",
            ),
            (
                '[[identity.ssh_keys]]\nsubject = "a"\ngroups = "dev"\npublic_key = "'
                + ALICE_KEY
                + '"\n',
                "identity.ssh_keys[0].groups: expected an array of strings, got a string",
            ),
            (
                '[[identity.ssh_keys]]\nsubject = "a"\ngroups = ["dev", 2]\npublic_key = "'
                + ALICE_KEY
                + '"\n',
                "identity.ssh_keys[0].groups[1]: expected a string, got an integer",
            ),
            (
                ISSUER + "algorithms = []\n",
                "identity.issuers[0].algorithms: expected a non-empty "
                "array of strings, got an empty array",
            ),
            (
                HTTP + 'insecure = "no"\n',
                "connections[0].insecure: expected true or false, got a string",
            ),
            (
                POSTGRES.replace('user = "app_rw"', "user = 5"),
                "connections[0].user: expected a user name on the target, got an integer",
            ),
        ]
        for text, message in cases:
            self.assertError(text, "hoopgw.toml: " + message)

    def test_missingRequired(self) -> None:
        """
        If a required key is missing, then the error names it and what it
        should hold.
        """
        cases = [
            (
                POSTGRES.replace('name = "appdb"\n', ""),
                "connections[0].name: missing required key; expected a connection name",
            ),
            (
                POSTGRES.replace('kind = "postgres"\n', ""),
                "connections[0].kind: missing required "
                'key; expected one of "http", "postgres", "ssh"',
            ),
            (
                POSTGRES.replace('address = "127.0.0.1:5432"\n', ""),
                "connections[0].address: "
                'missing required key; expected "host:port" (e.g. "127.0.0.1:5432" or "[::1]:5432")',
            ),
            (
                POSTGRES.replace('database = "app"\n', ""),
                "connections[0].database: missing "
                "required key; expected a database name on the target",
            ),
            (
                SSH.replace('user = "deploy"\n', ""),
                "connections[0].user: missing required key; expected a user name on the target",
            ),
            (
                HTTP.replace('upstream = "https://127.0.0.1:6443"\n', ""),
                "connections[0].upstream: "
                'missing required key; expected an upstream URL (e.g. "https://127.0.0.1:6443")',
            ),
            (
                '[[identity.issuers]]\naudience = "a"\n',
                "identity.issuers[0].issuer: missing "
                'required key; expected the issuer (the tokens\' "iss")',
            ),
            (
                '[[identity.issuers]]\nissuer = "https://i"\n',
                "identity.issuers[0].audience: "
                'missing required key; expected the audience (the tokens\' "aud")',
            ),
            (
                f'[[identity.ssh_keys]]\npublic_key = "{ALICE_KEY}"\n',
                "identity.ssh_keys[0].subject: "
                "missing required key; expected a subject (the identity's name)",
            ),
            (
                '[[identity.ssh_keys]]\nsubject = "a"\n',
                "identity.ssh_keys[0].public_key: missing "
                "required key; expected an OpenSSH public key line",
            ),
        ]
        for text, message in cases:
            self.assertError(text, "hoopgw.toml: " + message)

    def test_kind(self) -> None:
        """
        If a connection's kind is unknown, then the error lists the kinds.
        """
        self.assertError(
            POSTGRES + POSTGRES.replace('"postgres"', '"mysql"').replace("appdb", "other"),
            'hoopgw.toml: connections[1].kind: expected one of "http", "postgres", "ssh", '
            'got "mysql"',
        )

    def test_duplicateNames(self) -> None:
        """
        If two connections share a name, then the second is reported with a
        pointer to the first.
        """
        self.assertError(
            POSTGRES + HTTP + HTTP.replace('"k8s"', '"appdb"'),
            'hoopgw.toml: connections[2].name: expected a unique connection name, got "appdb" '
            "again (first at connections[0])",
        )

    def test_unsafeNames(self) -> None:
        """
        If a connection name is not a safe identifier, then it is refused
        with the allowed form.
        """
        for name in ["app db", "-x", ".x", "a/b", "é", "a" * 64, "a:b", "a@b"]:
            self.assertError(
                HTTP.replace('"k8s"', json.dumps(name)),
                "hoopgw.toml: connections[0].name: expected a name of at most 63 letters, "
                'digits, "_", "." or "-", starting with a letter or digit (it appears in URLs, '
                f"database names and SSH user names), got {json.dumps(name, ensure_ascii=False)}",
            )
        for name in ["a", "0", "a" * 63, "app_db.v2-x"]:
            config = self.loadText(HTTP.replace('"k8s"', json.dumps(name)))
            self.assertEqual(config.connections[0].name, name)

    def test_addresses(self) -> None:
        """
        Addresses are "host:port", "[v6]:port", or a host alone (the kind's
        default port); anything else is refused with the reason.
        """
        valid = {
            "10.0.0.1:6432": ("10.0.0.1", 6432, "10.0.0.1:6432"),
            "[::1]:5432": ("::1", 5432, "[::1]:5432"),
            "[::1]": ("::1", 5432, "[::1]:5432"),
            "db.internal:65535": ("db.internal", 65535, "db.internal:65535"),
        }
        for address, (host, port, target) in valid.items():
            config = self.loadText(POSTGRES.replace("127.0.0.1:5432", address))
            self.assertEqual(
                (
                    config.connections[0].settings.host,
                    config.connections[0].settings.port,
                    config.connections[0].target,
                ),
                (host, port, target),
            )
        prefix = (
            'hoopgw.toml: connections[0].address: expected "host:port" '
            '(e.g. "127.0.0.1:5432" or "[::1]:5432"), got '
        )
        invalid = {
            "db:0": "the port 0 is not in 1-65535",
            "db:65536": "the port 65536 is not in 1-65535",
            "db:http": 'the port "http" is not a number',
            "db:": 'the port "" is not a number',
            "::1:5432": 'an IPv6 address needs brackets, e.g. "[::1]:5432"',
            "[::1:5432": '"[" without a closing "]"',
            "[db]:5432": '"db" is not an IPv6 address',
            "[::1]5432": 'expected ":" and a port after "]", got "5432"',
            ":5432": '"" is not a host name or IP address',
            "a b:1": '"a b" is not a host name or IP address',
        }
        for address, reason in invalid.items():
            self.assertError(
                POSTGRES.replace("127.0.0.1:5432", address),
                prefix + json.dumps(address) + ": " + reason,
            )

    def test_enums(self) -> None:
        """
        tls and sync accept only their listed values.
        """
        self.assertError(
            POSTGRES + 'tls = "prefer"\n',
            'hoopgw.toml: connections[0].tls: expected one of "disable", "require", '
            '"verify-full", got "prefer"',
        )
        self.assertError(
            '[audit]\nsync = "fast"\n',
            'hoopgw.toml: audit.sync: expected one of "batched", "strict", got "fast"',
        )
        self.assertError(
            ISSUER + 'algorithms = ["RS256", "HS256"]\n',
            'hoopgw.toml: identity.issuers[0].algorithms[1]: expected one of "ES256", "ES384", '
            '"ES512", "EdDSA", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", got "HS256"',
        )

    def test_secretReferences(self) -> None:
        """
        A secret is referenced by at most one of its env/file keys; with
        check_secrets the variable must be set and non-empty and the file
        readable, and the message names the variable or file, not the value.
        """
        missing = self.base / "missing"
        cases = [
            (
                POSTGRES + 'password_env = "A"\npassword_file = "f"\n',
                {"A": "x"},
                'connections[0]: expected at most one of "password_env", "password_file", '
                'got "password_env", "password_file"',
            ),
            (
                POSTGRES + 'password_env = "APPDB_PASSWORD"\n',
                {},
                'connections[0].password_env: environment variable "APPDB_PASSWORD" is not set',
            ),
            (
                POSTGRES + 'password_env = "APPDB_PASSWORD"\n',
                {"APPDB_PASSWORD": ""},
                'connections[0].password_env: environment variable "APPDB_PASSWORD" is empty',
            ),
            (
                POSTGRES + 'password_env = "1BAD"\n',
                {},
                "connections[0].password_env: expected the name of an environment variable "
                '(letters, digits and "_", not starting with a digit), got "1BAD"',
            ),
            (
                POSTGRES + 'password_file = "missing"\n',
                {},
                f'connections[0].password_file: cannot read secret file "{missing}": '
                "No such file or directory",
            ),
            (
                POSTGRES + 'password_file = "."\n',
                {},
                f'connections[0].password_file: cannot read secret file "{self.base}": '
                "Is a directory",
            ),
            (
                HTTP + 'token_env = "T"\ntoken_file = "t"\n',
                {},
                'connections[0]: expected at most one of "token_env", "token_file", '
                'got "token_env", "token_file"',
            ),
            (
                HTTP + 'token_file = "missing"\n',
                {},
                f'connections[0].token_file: cannot read secret file "{missing}": '
                "No such file or directory",
            ),
            (
                SSH + 'key_file = "k"\n',
                ENV,
                'connections[0]: expected at most one of "key_file", "password_env", '
                '"password_file", got "key_file", "password_env"',
            ),
            (
                SSH.replace('password_env = "WEB1_PASSWORD"\n', ""),
                ENV,
                'connections[0]: missing credential; expected one of "key_file", "password_env", '
                '"password_file"',
            ),
            (
                SSH.replace('password_env = "WEB1_PASSWORD"', 'key_file = "missing"'),
                ENV,
                f'connections[0].key_file: cannot read secret file "{missing}": '
                "No such file or directory",
            ),
            (
                '[tls]\ncert_file = "c"\nkey_file = "missing"\n',
                {},
                f'tls.cert_file: cannot read file "{self.base / "c"}": No such file or directory',
            ),
            (
                POSTGRES + 'ca_file = "missing"\n',
                {},
                f'connections[0].ca_file: cannot read file "{missing}": No such file or directory',
            ),
        ]
        for text, environ, message in cases:
            self.assertError(text, "hoopgw.toml: " + message, environ=environ)

    def test_pairs(self) -> None:
        """
        client_cert and client_key, and tls cert_file and key_file, come in
        pairs; jwks_uri and jwks_file exclude each other.
        """
        cases = [
            (
                HTTP + 'client_cert = "c"\n',
                "connections[0].client_key: missing required key; "
                'expected a path, since "client_cert" is set',
            ),
            (
                HTTP + 'client_key = "k"\n',
                "connections[0].client_cert: missing required key; "
                'expected a path, since "client_key" is set',
            ),
            (
                '[tls]\ncert_file = "c"\n',
                'tls.key_file: missing required key; expected a path, since "cert_file" is set',
            ),
            (
                '[tls]\nkey_file = "k"\n',
                'tls.cert_file: missing required key; expected a path, since "key_file" is set',
            ),
            (
                ISSUER + 'jwks_uri = "https://i/k"\njwks_file = "k"\n',
                "identity.issuers[0]: "
                'expected at most one of "jwks_file", "jwks_uri", got "jwks_file", "jwks_uri"',
            ),
            (
                SSH.replace(f'host_key = "{HOST_KEY}"\n', ""),
                'connections[0]: missing host key check; expected one of "host_key", "known_hosts"',
            ),
            (
                SSH + 'known_hosts = "k"\n',
                'connections[0]: expected at most one of "host_key", '
                '"known_hosts", got "host_key", "known_hosts"',
            ),
        ]
        for text, message in cases:
            self.assertError(text, "hoopgw.toml: " + message)

    def test_urls(self) -> None:
        """
        upstream and jwks_uri must be absolute http(s) URLs without user info;
        an issuer used for OIDC discovery must be an https URL.
        """
        cases = [
            (
                HTTP.replace("https://127.0.0.1:6443", "ftp://x"),
                'connections[0].upstream: expected an absolute https or http URL, got "ftp://x"',
            ),
            (
                HTTP.replace("https://127.0.0.1:6443", "https://x:99999"),
                "connections[0].upstream: "
                'expected an absolute https or http URL, got "https://x:99999": '
                "Port out of range 0-65535",
            ),
            (
                HTTP.replace("https://127.0.0.1:6443", "https://u:p@x"),
                "connections[0].upstream: "
                "expected an absolute https or http URL without user info, query or fragment, "
                "got a URL with them",
            ),
            (
                ISSUER + 'jwks_uri = "/jwks"\n',
                'identity.issuers[0].jwks_uri: expected an absolute https or http URL, got "/jwks"',
            ),
            (
                '[[identity.issuers]]\nissuer = "corp"\naudience = "a"\n',
                "identity.issuers[0]."
                'issuer: expected an https URL for OIDC discovery (or set "jwks_uri" or '
                '"jwks_file"), got "corp"',
            ),
        ]
        for text, message in cases:
            self.assertError(text, "hoopgw.toml: " + message)
        config = self.loadText(
            '[[identity.issuers]]\nissuer = "corp"\naudience = "a"\njwks_uri = "http://i/k"\n'
        )
        self.assertEqual(config.identity.issuers[0].issuer, "corp")

    def test_duplicateIssuersAndKeys(self) -> None:
        """
        An issuer, or an SSH key, appears at most once.
        """
        self.assertError(
            ISSUER + ISSUER,
            "hoopgw.toml: identity.issuers[1].issuer: expected each issuer once, got "
            '"https://idp.example.com" again (first at identity.issuers[0])',
        )
        key = f'[[identity.ssh_keys]]\nsubject = "a"\npublic_key = "{ALICE_KEY}"\n'
        self.assertError(
            key + key.replace(" alice@laptop", ""),
            "hoopgw.toml: identity.ssh_keys[1].public_key: expected each key once, got the key "
            "of identity.ssh_keys[0] again",
        )

    def test_publicKeys(self) -> None:
        """
        SSH public keys and pinned host keys must parse; a private key is
        refused without being echoed.
        """
        self.assertError(
            '[[identity.ssh_keys]]\nsubject = "a"\npublic_key = "ssh-ed25519 AAAA"\n',
            "hoopgw.toml: identity.ssh_keys[0].public_key: expected an OpenSSH public key line "
            '(e.g. "ssh-ed25519 AAAA... alice@laptop"), got "ssh-ed25519 AAAA": '
            "the key data is malformed",
        )
        sentinel = "SENTINEL-PRIVATE-MATERIAL"
        error = self.assertError(
            SSH.replace(HOST_KEY, f"-----BEGIN OPENSSH PRIVATE KEY-----{sentinel}"),
            "hoopgw.toml: connections[0].host_key: expected an OpenSSH public key line "
            '(e.g. "ssh-ed25519 AAAA... alice@laptop"), got a private key',
        )
        self.assertNotIn(sentinel, str(error))

    def test_endpoints(self) -> None:
        """
        Listener strings are parsed by Twisted's own endpoint parser; its
        reason is part of the message, and ports stay in range and distinct.
        """
        prefix = (
            "hoopgw.toml: listen.api: expected a Twisted server endpoint string "
            '(e.g. "tcp:18009:interface=127.0.0.1"), got '
        )
        self.assertError(
            '[listen]\napi = "tcp:notaport"\n',
            prefix + "\"tcp:notaport\": invalid literal for int() with base 10: 'notaport'",
        )
        self.assertError(
            '[listen]\napi = "nope:1"\n', prefix + "\"nope:1\": Unknown endpoint type: 'nope'"
        )
        self.assertError(
            '[listen]\napi = "tcp:70000"\n',
            prefix + '"tcp:70000": the port 70000 is not in 0-65535',
        )
        self.assertError(
            '[listen]\npostgres = "tcp:9000"\napi = "tcp:9000"\n',
            "hoopgw.toml: listen.api: expected a port of its own, got the port of listen.postgres",
        )
        config = self.loadText(
            '[listen]\npostgres = false\nssh = "unix:/tmp/x.sock"\napi = "tcp:0"\nhttp = "tcp:0"\n'
        )
        self.assertEqual(
            config.listen,
            ListenSettings(postgres=None, ssh="unix:/tmp/x.sock", http="tcp:0", api="tcp:0"),
        )


class DetailTests(ConfigTestCase):
    def test_leeway(self) -> None:
        """
        leeway may be zero (as 0 or "0s"), unlike other durations, but a
        boolean is still not a duration.
        """
        for value in ("0", '"0s"', '"0m"'):
            config = self.loadText(ISSUER + f"leeway = {value}\n")
            self.assertEqual(config.identity.issuers[0].leeway_seconds, 0)
        self.assertError(
            ISSUER + "leeway = false\n",
            'hoopgw.toml: identity.issuers[0].leeway: expected a positive duration such as "30s", '
            '"15m", "2h", "1d" or "1h30m" (or whole seconds), got a boolean',
        )
        self.assertError(
            ISSUER + "leeway = -1\n",
            'hoopgw.toml: identity.issuers[0].leeway: expected a positive duration such as "30s", '
            '"15m", "2h", "1d" or "1h30m" (or whole seconds), got -1',
        )

    def test_blank(self) -> None:
        """
        A required string of only spaces is refused as blank.
        """
        self.assertError(
            POSTGRES.replace('"app_rw"', '"  "'),
            "hoopgw.toml: connections[0].user: expected a user name on the target, "
            "got a blank string",
        )

    def test_secretRead(self) -> None:
        """
        SecretRef.read returns the referenced value (a file's stripped
        content, or the variable from the given environment) and raises
        ConfigError naming the reference, not a value, when it cannot.
        """
        path = self.write("token", "abc\n")
        self.assertEqual(SecretRef(file=path).read(), "abc")
        self.assertEqual(SecretRef(env="T").read({"T": "v"}), "v")
        error = self.assertRaises(ConfigError, SecretRef(env="T").read, {})
        self.assertEqual(error.key, "$T")
        missing = self.base / "missing"
        error = self.assertRaises(ConfigError, SecretRef(file=missing).read)
        self.assertEqual(
            str(error),
            f"file:{missing}: cannot read secret file: No such file or directory",
        )


class EffectiveConfigTests(ConfigTestCase):
    SENTINEL = "SENTINEL-SECRET-VALUE-8d1f"

    def test_noSecretValues(self) -> None:
        """
        If secrets are set in the environment and in files, then neither the
        effective configuration nor the repr of the Config contains their
        values: only references like "env:APPDB_PASSWORD".
        """
        for relative in FULL_FILES:
            self.write(relative, self.SENTINEL)
        environ = {"APPDB_PASSWORD": self.SENTINEL}
        config = self.loadText(FULL, environ=environ)
        effective = effective_config(config)
        dumped = json.dumps(effective)
        self.assertNotIn(self.SENTINEL, dumped)
        self.assertNotIn(self.SENTINEL, repr(config))
        self.assertNotIn(self.SENTINEL, str(config))
        connections = effective["connections"]
        self.assertEqual(connections[0]["password"], "env:APPDB_PASSWORD")
        self.assertEqual(connections[1]["key"], f"file:{self.base / 'keys/deploy'}")
        self.assertEqual(connections[2]["token"], f"file:{self.base / 'k8s-token'}")

    def test_shape(self) -> None:
        """
        The effective configuration holds every setting with defaults filled
        in, paths as strings and connections with their target.
        """
        config = self.loadText(POSTGRES)
        effective = effective_config(config)
        self.assertEqual(
            effective,
            {
                "source": "hoopgw.toml",
                "gateway": {
                    "name": "hoopgw",
                    "data_dir": str(self.base / "hoopgw-data"),
                    "policies": None,
                },
                "listen": {
                    "postgres": "tcp:15432:interface=127.0.0.1",
                    "ssh": "tcp:12222:interface=127.0.0.1",
                    "http": "tcp:18443:interface=127.0.0.1",
                    "api": "tcp:18009:interface=127.0.0.1",
                },
                "tls": {"cert_file": None, "key_file": None},
                "identity": {
                    "dev_issuer": True,
                    "dev_token_max_ttl_seconds": 86400,
                    "issuers": [],
                    "ssh_keys": [],
                },
                "audit": {
                    "sync": "batched",
                    "sync_window_ms": 10,
                    "checkpoint_every": 1000,
                    "checkpoint_interval_seconds": 60,
                    "witnesses": [],
                    "witness_timeout_seconds": 10,
                    "witness_vkeys": [],
                },
                "preauth": {
                    name: {"timeout": timeout, "max_per_source": 32, "max_per_listener": 256, "max_bytes": 262144}
                    for name, timeout in (("postgres", 60), ("ssh", 120), ("http", 60), ("api", 60))
                },
                "reviews": {"webhook": None, "api_url": None, "webhook_secret": None},
                "connections": [
                    {
                        "name": "appdb",
                        "kind": "postgres",
                        "target": "127.0.0.1:5432",
                        "host": "127.0.0.1",
                        "port": 5432,
                        "database": "app",
                        "user": "app_rw",
                        "password": None,
                        "tls": "verify-full",
                        "ca_file": None,
                        "require_auth": ["scram-sha-256", "none"],
                        "login_timeout": 30,
                    }
                ],
            },
        )

    def test_sha256(self) -> None:
        """
        config_sha256 is the SHA-256 of the canonical JSON of the effective
        configuration: stable for equal configurations, different otherwise.
        """
        config = self.loadText(POSTGRES)
        canonical = json.dumps(
            effective_config(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        self.assertEqual(config_sha256(config), hashlib.sha256(canonical.encode()).hexdigest())
        self.assertEqual(config_sha256(config), config_sha256(self.loadText(POSTGRES)))
        self.assertNotEqual(
            config_sha256(config), config_sha256(self.loadText(POSTGRES + 'tls = "require"\n'))
        )


# A small TOML writer for generated documents: enough to reach the
# validators with plausible and implausible values at every known key.
SECTIONS = {
    "[gateway]": ["name", "data_dir", "policies"],
    "[listen]": ["postgres", "ssh", "http", "api"],
    "[tls]": ["cert_file", "key_file"],
    "[identity]": ["dev_issuer", "dev_token_max_ttl"],
    "[audit]": ["sync", "sync_window_ms", "checkpoint_every", "checkpoint_interval"],
    "[reviews]": ["webhook", "api_url", "webhook_secret_env", "webhook_secret_file"],
    "[[identity.issuers]]": [
        "issuer",
        "audience",
        "jwks_uri",
        "jwks_file",
        "groups_claim",
        "subject_claim",
        "algorithms",
        "leeway",
        "ca_file",
    ],
    "[[identity.ssh_keys]]": ["subject", "groups", "public_key"],
    "[[connections]]": [
        "name",
        "kind",
        "address",
        "database",
        "user",
        "password_env",
        "password_file",
        "tls",
        "ca_file",
        "key_file",
        "host_key",
        "known_hosts",
        "record_input",
        "keepalive_interval",
        "keepalive_count_max",
        "login_timeout",
        "upstream",
        "token_env",
        "token_file",
        "client_cert",
        "client_key",
        "insecure",
        "impersonate",
        "pass_cookies",
    ],
}
SCALARS = st.one_of(
    st.sampled_from(
        [
            "postgres",
            "ssh",
            "http",
            "mysql",
            "127.0.0.1:5432",
            "[::1]:1",
            "::1",
            "db:99999",
            "tcp:0",
            "tcp:notaport",
            "unix:/nonexistent/x",
            "ssl:0",
            "https://i.example",
            "https://i.example:0/x?y",
            "30s",
            "1h30m",
            "0s",
            "batched",
            "strict",
            "require",
            "verify-full",
            "RS256",
            "HOME",
            "PATH",
            ".",
            "",
            "x",
            "appdb",
            ALICE_KEY,
            HOST_KEY,
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "/etc/hostname",
            "~/x",
        ]
    ),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
    st.integers(-2, 70000),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
VALUES = st.one_of(SCALARS, SCALARS, st.lists(SCALARS, max_size=3))


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # JSON escapes are TOML escapes, except surrogate pairs and a raw DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


@st.composite
def documents(draw) -> str:
    lines: list[str] = []
    headers = draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=6))
    seen = set()
    for header in headers:
        if header.startswith("[[") is False and header in seen:
            continue  # a table declared twice is a TOML error, not worth finding repeatedly
        seen.add(header)
        lines.append(header)
        keys = SECTIONS.get(header, ["x"])
        chosen = draw(st.lists(st.sampled_from(keys + ["bogus"]), unique=True, max_size=8))
        for key in chosen:
            if key != "bogus" or draw(st.integers(0, 9)) == 0:
                lines.append(f"{key} = {_toml_value(draw(VALUES))}")
    return "\n".join(lines) + "\n"


class FuzzTests(ConfigTestCase):
    def attempt(self, text: str, check_secrets: bool) -> None:
        try:
            self.loadText(text, check_secrets=check_secrets, environ=dict(os.environ))
        except ConfigError as e:
            self.assertTrue(str(e).startswith("hoopgw.toml"), str(e))

    @settings(max_examples=150, deadline=None)
    @given(st.text(alphabet=st.sampled_from(list("[]{}=\"'.,:#\n\\ azAZ09-_tfe+")), max_size=60))
    def test_arbitraryText(self, text: str) -> None:
        """
        If the text is arbitrary TOML-ish characters, then loading succeeds or
        raises ConfigError, nothing else.
        """
        self.attempt(text, check_secrets=True)

    @settings(max_examples=300, deadline=None)
    @given(documents(), st.booleans())
    def test_arbitraryDocuments(self, text: str, check_secrets: bool) -> None:
        """
        If a well-formed document puts arbitrary values at known keys, then
        loading succeeds or raises ConfigError, nothing else.
        """
        self.attempt(text, check_secrets=check_secrets)
