"""RedisSettings from a [[connections]] table: the values, and errors that name the key and what was expected."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.config import SecretRef
from hoopgw.errors import ConfigError

from hoopgw_redis.settings import RedisSettings, parse_settings

ENV = {"CACHE_PASSWORD": "pw"}


def parse(table, **kwargs):
    kwargs.setdefault("environ", ENV)
    kwargs.setdefault("file", "hoopgw.toml")
    kwargs.setdefault("where", "connections[2]")
    return parse_settings({"name": "cache", "kind": "redis", **table}, **kwargs)


class SettingsTests(SynchronousTestCase):
    def test_full(self):
        ca = Path(self.mktemp())
        ca.write_text("x")
        settings = parse({"address": "redis.internal:6380", "user": "app", "password_env": "CACHE_PASSWORD",
                          "tls": "verify-full", "ca_file": str(ca), "db": 3, "login_timeout": "1m"})
        self.assertEqual(settings, RedisSettings(host="redis.internal", port=6380, user="app",
                                                 password=SecretRef(env="CACHE_PASSWORD"), tls="verify-full",
                                                 ca_file=ca, db=3, login_timeout=60))
        self.assertEqual(settings.address, "redis.internal:6380")

    def test_defaults(self):
        settings = parse({"address": "[::1]"})
        self.assertEqual((settings.host, settings.port, settings.tls, settings.db, settings.user, settings.password),
                         ("::1", 6379, "verify-full", 0, None, None))
        self.assertEqual(settings.address, "[::1]:6379")

    def test_password_file(self):
        secret = Path(self.mktemp())
        secret.write_text("pw\n")
        settings = parse({"address": "h", "password_file": str(secret)})
        self.assertEqual(settings.password.read(), "pw")

    def test_errors(self):
        cases = [
            ({}, 'hoopgw.toml: connections[2].address: missing required key; expected "host:port"'),
            ({"address": 6379}, "connections[2].address: expected \"host:port\""),
            ({"address": "h:99999"}, "the port 99999 is not in 1-65535"),
            ({"address": "::1"}, "an IPv6 address needs brackets"),
            ({"address": "h", "tls": "on"}, 'connections[2].tls: expected one of "disable", "require", "verify-full", got "on"'),
            ({"address": "h", "tls": "require", "ca_file": "x"}, 'connections[2].ca_file: is only used with tls = "verify-full"'),
            ({"address": "h", "db": -1}, "connections[2].db: expected a database number (0 or more), got -1"),
            ({"address": "h", "db": "0"}, "connections[2].db: expected a database number (0 or more), got a string"),
            ({"address": "h", "user": "app"}, 'connections[2]: user "app" needs a password'),
            ({"address": "h", "password_env": "NOPE"}, 'connections[2].password_env: environment variable "NOPE" is not set'),
            ({"address": "h", "password_env": "A", "password_file": "b"}, "expected at most one of"),
            ({"address": "h", "password_file": "/nonexistent/pw"}, "connections[2].password_file: cannot read secret file"),
            ({"address": "h", "login_timeout": "soon"}, 'connections[2].login_timeout: expected a duration such as "30s" or "2m", got "soon"'),
            ({"address": "h", "database": 1}, 'connections[2].database: unknown key; expected one of'),
        ]
        for table, expected in cases:
            with self.assertRaises(ConfigError, msg=table) as e:
                parse(table)
            self.assertIn(expected, str(e.exception), table)

    def test_secrets_not_checked(self):
        """Without check_secrets (policy check, docs), references are kept but not read."""
        settings = parse({"address": "h", "password_env": "NOPE"}, check_secrets=False)
        self.assertEqual(settings.password, SecretRef(env="NOPE"))
