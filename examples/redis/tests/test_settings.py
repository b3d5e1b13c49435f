"""
A [[connections]] table of kind "redis", read by hoopgw's configuration
through the plugin (hoopgw_redis.plugin): the values, and errors that name
the file, the key and what was expected.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.config import SecretRef, loads
from hoopgw.errors import ConfigError
from hoopgw.frontends import FrontEnds
from hoopgw.tls import ensure_certificate

from hoopgw_redis.plugin import front_end
from hoopgw_redis.settings import RedisSettings

ENV = {"CACHE_PASSWORD": "pw"}


def load(body: str, *, base_dir: Path = Path("/tmp"), check_secrets: bool = True):
    """A configuration whose third [[connections]] table is C{body} (the first two are fine)."""
    text = "".join(f'[[connections]]\nname = "ok{i}"\nkind = "redis"\naddress = "h"\n\n' for i in range(2))
    text += '[[connections]]\nname = "cache"\nkind = "redis"\n' + body
    return loads(text, source=Path("hoopgw.toml"), base_dir=base_dir, check_secrets=check_secrets, environ=ENV,
                 front_ends=FrontEnds([front_end]))


class SettingsTests(SynchronousTestCase):
    def certificate(self) -> bytes:
        """A self-signed certificate (PEM), as a CA file holds."""
        cert, _ = ensure_certificate(Path(self.mktemp()))
        return cert.read_bytes()

    def test_full(self):
        ca = Path(self.mktemp()).resolve()
        ca.write_bytes(self.certificate())
        connection = load(f'address = "redis.internal:6380"\nuser = "app"\npassword_env = "CACHE_PASSWORD"\n'
                          f'tls = "verify-full"\nca_file = "{ca}"\ndb = 3\nlogin_timeout = "1m"\n'
                          f'max_masked_value = 65536\nmax_masked_reply = 131072\n').connections[2]
        self.assertEqual((connection.name, connection.kind, connection.target),
                         ("cache", "redis", "redis.internal:6380"))
        self.assertEqual(connection.settings, RedisSettings(
            host="redis.internal", port=6380, user="app", password=SecretRef(env="CACHE_PASSWORD"),
            tls="verify-full", ca_file=ca, db=3, login_timeout=60, max_masked_value=65536, max_masked_reply=131072))

    def test_defaults(self):
        connection = load('address = "[::1]"\n').connections[2]
        settings = connection.settings
        self.assertEqual((settings.host, settings.port, settings.tls, settings.db, settings.user, settings.password,
                          settings.login_timeout, settings.max_masked_value, settings.max_masked_reply),
                         ("::1", 6379, "verify-full", 0, None, None, 30, 1 << 20, 4 << 20))
        self.assertEqual(connection.target, "[::1]:6379")

    def test_relative_paths(self):
        """password_file and ca_file are relative to the configuration file's folder."""
        base = Path(self.mktemp()).resolve()
        base.mkdir()
        (base / "pw").write_text("pw\n")
        (base / "ca.pem").write_bytes(self.certificate())
        settings = load('address = "h"\npassword_file = "pw"\nca_file = "ca.pem"\n', base_dir=base).connections[2].settings
        self.assertEqual((settings.password.read(), settings.ca_file), ("pw", base / "ca.pem"))

    def test_errors(self):
        at = "hoopgw.toml: connections[2]"
        cases = [
            ("", f'{at}.address: missing required key; expected "host:port"'),
            ("address = 6379\n", f'{at}.address: expected "host:port" (e.g. "127.0.0.1:6379" or "[::1]:6379"), '
                                 "got an integer"),
            ('address = "h:99999"\n', "the port 99999 is not in 1-65535"),
            ('address = "::1"\n', "an IPv6 address needs brackets"),
            ('address = "h"\ntls = "on"\n', f'{at}.tls: expected one of "disable", "require", "verify-full", got "on"'),
            ('address = "h"\ntls = true\n', f'{at}.tls: expected one of "disable", "require", "verify-full", '
                                            "got a boolean"),
            ('address = "h"\ntls = "require"\nca_file = "x"\n', f'{at}.ca_file: is only used with tls = "verify-full"'),
            ('address = "h"\nca_file = "/nonexistent/ca.pem"\n', f"{at}.ca_file: cannot read file"),
            (f'address = "h"\nca_file = "{__file__}"\n', f'{at}.ca_file: expected a file of PEM certificates, got '
                                                    f'"{__file__}", which holds none'),
            ('address = "h"\ndb = -1\n', f"{at}.db: expected a database number (0 or more), got -1"),
            ('address = "h"\ndb = "0"\n', f"{at}.db: expected a database number (0 or more), got a string"),
            ('address = "h"\ndb = true\n', f"{at}.db: expected a database number (0 or more), got a boolean"),
            ('address = "h"\nuser = "app"\n', f'{at}: user "app" needs a password'),
            ('address = "h"\nuser = "a b"\npassword_env = "CACHE_PASSWORD"\n', f'{at}.user: expected an ACL user name'),
            ('address = "h"\npassword_env = "NOPE"\n', f'{at}.password_env: environment variable "NOPE" is not set'),
            ('address = "h"\npassword_env = "A"\npassword_file = "b"\n', f"{at}: expected at most one of"),
            ('address = "h"\npassword_file = "/nonexistent/pw"\n', f"{at}.password_file: cannot read secret file"),
            ('address = "h"\nmax_masked_value = 0\n', f"{at}.max_masked_value"),
            ('address = "h"\nmax_masked_reply = 0\n', f"{at}.max_masked_reply: expected a positive integer, got 0"),
            ('address = "h"\nmax_masked_reply = -5\n', f"{at}.max_masked_reply: expected a positive integer, got -5"),
            ('address = "h"\nmax_masked_reply = "4MiB"\n',
             f"{at}.max_masked_reply: expected a positive integer, got a string"),
            ('address = "h"\nmax_masked_reply = true\n',
             f"{at}.max_masked_reply: expected a positive integer, got a boolean"),
            ('address = "h"\nmax_masked_reply = 1.5\n',
             f"{at}.max_masked_reply: expected a positive integer, got a float"),
            ('address = "h"\nlogin_timeout = "soon"\n', f'{at}.login_timeout: expected a positive duration such as "30s"'),
            # A typo: refused by hoopgw before the front end sees the table, naming the keys there are.
            ('address = "h"\ndatabase = 1\n', f'{at}.database: unknown key; expected one of "address", "ca_file", '
                                              '"db", "kind", "login_timeout", "max_masked_reply", "max_masked_value", "name", '
                                              '"password_env", '
                                              '"password_file", "tls", "user"'),
            ('adress = "h"\n', f"{at}.adress: unknown key"),
        ]
        for body, expected in cases:
            with self.assertRaises(ConfigError, msg=body) as e:
                load(body)
            self.assertIn(expected, str(e.exception), body)

    def test_secrets_not_checked(self):
        """Without check_secrets (policy check, docs), references are kept but not read."""
        settings = load('address = "h"\npassword_env = "NOPE"\n', check_secrets=False).connections[2].settings
        self.assertEqual(settings.password, SecretRef(env="NOPE"))
