"""
The client wrappers' settings from a discovery document (hoopgw.cli.clients),
without a gateway: what a published value may be (it ends up in argv,
environment variables and config files), and what the clients are given.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from twisted.trial.unittest import TestCase

from hoopgw.cli import clients
from hoopgw.cli.clients import Discovery, _quoted, kubeconfig_entry, write_ssh_config
from hoopgw.errors import CommandError
from hoopgw.tls import _self_signed


def _pem() -> str:
    import datetime

    return _self_signed(("localhost", "127.0.0.1"), datetime.datetime.now(datetime.timezone.utc))[0].decode()


PEM = _pem()
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxS1d7Yq0v0qZ0t2W4VYp0bZfQmGSSyQmm9h3I0oKbJ"
URL = "https://gw.example:18009"


def info(**changes):
    document = {
        "gateway": "hoopgw",
        "listeners": {"postgres": {"host": "0.0.0.0", "port": 15432}, "http": {"host": "10.0.0.5", "port": 18443},
                      "ssh": {"host": "::", "port": 12222, "host_key": HOST_KEY}},
        "tls": {"names": ["localhost", "127.0.0.1", "::1"], "ca": PEM},
    }
    document.update(changes)
    return document


class DiscoveryTests(TestCase):
    def test_bound_to_every_address(self) -> None:
        """A listener on every address is reached by the host the API was reached by."""
        published = Discovery.parse(URL, info())
        self.assertEqual(published.address("postgres"), ("gw.example", 15432))
        self.assertEqual(published.address("ssh"), ("gw.example", 12222))
        self.assertEqual(published.address("http"), ("10.0.0.5", 18443))

    def test_no_such_listener(self) -> None:
        published = Discovery.parse(URL, info(listeners={}))
        with self.assertRaisesRegex(CommandError, r"has no ssh listener \(\[listen\] ssh\)"):
            published.address("ssh")

    def test_unusable_values_refuse_the_document(self) -> None:
        """A host that reads as an option, a socket path or config lines; a port out of range; a host key or
        certificate with more in it: the whole document is refused."""
        for host in ("-oProxyCommand=id", "/tmp/sock", "127.0.0.1\nMatch all\n ProxyCommand id", "a b", "a\u2028b",
                     "é.example", 7):
            with self.assertRaisesRegex(CommandError, "published an unusable postgres listener address"):
                Discovery.parse(URL, info(listeners={"postgres": {"host": host, "port": 15432}}))
        for port in (0, 65536, "15432", True, None):
            with self.assertRaisesRegex(CommandError, "unusable postgres listener address"):
                Discovery.parse(URL, info(listeners={"postgres": {"host": "127.0.0.1", "port": port}}))
        for key in (HOST_KEY + "\nevil ssh-ed25519 AAAA", "ssh-ed25519 AAAA AAAA", 5):
            with self.assertRaisesRegex(CommandError, "unusable SSH host key"):
                Discovery.parse(URL, info(listeners={"ssh": {"host": "127.0.0.1", "port": 1, "host_key": key}}))
        for ca in ("not a certificate", PEM + PEM, 3):
            with self.assertRaisesRegex(CommandError, "unusable certificate"):
                Discovery.parse(URL, info(tls={"names": [], "ca": ca}))
        for name in ("-x", "a b", "a\nb", ""):
            with self.assertRaisesRegex(CommandError, "unusable gateway name"):
                Discovery.parse(URL, info(gateway=name))

    def test_server_name(self) -> None:
        """A host the certificate names is checked by name; another is checked against one of its names."""
        published = Discovery.parse(URL, info())
        self.assertIsNone(published.server_name("127.0.0.1"))
        self.assertEqual(published.server_name("gw.example"), "localhost")
        self.assertIsNone(Discovery.parse(URL, info(tls={"names": []})).server_name("gw.example"))


class KubeconfigTests(TestCase):
    def test_kubeconfig_entry(self) -> None:
        entry = kubeconfig_entry(Discovery.parse(URL, info()), "k8s.prod")
        self.assertEqual(entry["cluster"], {
            "server": "https://10.0.0.5:18443/k8s.prod",
            "certificate-authority-data": base64.b64encode(PEM.encode()).decode(),
            "tls-server-name": "localhost",
        })
        # -P: the directory kubectl runs in cannot shadow a module hoopgw imports.
        self.assertEqual(entry["user"]["exec"]["args"], ["-P", "-m", "hoopgw", "token", "exec-credential",
                                                         "--gateway", URL])

    def test_kubeconfig_entry_public_certificate(self) -> None:
        """A certificate from a CA clients already trust: nothing pinned, kubectl's own trust store."""
        entry = kubeconfig_entry(Discovery.parse(URL, info(tls={"names": ["gw.example"]})), "k8s")
        self.assertEqual(entry["cluster"], {"server": "https://10.0.0.5:18443/k8s"})

    def test_ipv6(self) -> None:
        published = Discovery.parse("http://[::1]:18009", info(listeners={"http": {"host": "::1", "port": 18443}}))
        self.assertEqual(kubeconfig_entry(published, "k8s")["cluster"]["server"], "https://[::1]:18443/k8s")


class PsqlTests(TestCase):
    def setUp(self) -> None:
        self.home = Path(self.mktemp()).resolve()
        self.patch(os, "environ", {**os.environ, "XDG_CONFIG_HOME": str(self.home)})
        self.patch(clients, "cached_token", lambda gateway: "TOKEN")

    def invocation(self, document, environ=None):
        self.patch(clients, "gateway_info", lambda gateway: Discovery.parse(URL, document))
        return clients.psql(URL, "appdb", ["-c", "SELECT 1"], environ=environ or {})

    def test_host_not_named_by_the_certificate(self) -> None:
        """The check stays verify-full: libpq is told a name the certificate holds, and the address to dial."""
        env = self.invocation(info(listeners={"postgres": {"host": "10.0.0.7", "port": 15432}})).env
        self.assertEqual((env["PGSSLMODE"], env["PGHOST"], env["PGHOSTADDR"]), ("verify-full", "localhost", "10.0.0.7"))
        self.assertEqual(Path(env["PGSSLROOTCERT"]).read_text(), PEM)

    def test_the_callers_pg_settings_are_dropped(self) -> None:
        """A PGSERVICE (whose file could say sslmode=disable and another host) and the like never reach psql."""
        caller = {"PGSERVICE": "prod", "PGSERVICEFILE": "/tmp/x", "PGHOSTADDR": "10.9.9.9", "PGSSLNEGOTIATION": "direct",
                  "PGAPPNAME": "mine", "PGPASSFILE": "/tmp/p", "PATH": "/bin"}
        env = self.invocation(info(listeners={"postgres": {"host": "127.0.0.1", "port": 15432}}), caller).env
        self.assertEqual({k: v for k, v in env.items() if k.startswith("PG") and k not in
                          ("PGHOST", "PGPORT", "PGDATABASE", "PGPASSWORD", "PGSSLMODE", "PGSSLROOTCERT")},
                         {"PGAPPNAME": "mine"})
        self.assertEqual(env["PATH"], "/bin")

    def test_callers_root_kept_when_none_is_published(self) -> None:
        """A certificate from a CA the gateway does not publish: the caller's own PGSSLROOTCERT, still verify-full."""
        document = info(listeners={"postgres": {"host": "127.0.0.1", "port": 15432}}, tls={"names": ["127.0.0.1"]})
        env = self.invocation(document, {"PGSSLROOTCERT": "/etc/corp-ca.pem", "PGSERVICE": "x"}).env
        self.assertEqual((env["PGSSLMODE"], env["PGSSLROOTCERT"]), ("verify-full", "/etc/corp-ca.pem"))
        self.assertNotIn("PGSERVICE", env)


class SSHConfigTests(TestCase):
    def test_quoted(self) -> None:
        self.assertEqual(_quoted("/a b/%h"), '"/a b/%%h"')
        for value in ('a"b', "a\\b", "a\nb", "a\x00b", "a\u2028b", "a\x85b"):
            with self.assertRaises(CommandError):
                _quoted(value)

    def test_symbolic_link_written_through(self) -> None:
        """A ~/.ssh/config that links to a dotfiles repository stays a link; the file it names gets the block."""
        base = Path(self.mktemp()).resolve()
        base.mkdir()
        real = base / "dotfiles-ssh-config"
        real.write_text("Host *\n    User me\n")
        link = base / "config"
        link.symlink_to(real)
        write_ssh_config(link, URL, f"# BEGIN hoopgw {URL}\nHost x\nMatch all\n# END hoopgw {URL}\n")
        self.assertTrue(link.is_symlink())
        self.assertTrue(real.read_text().startswith(f"# BEGIN hoopgw {URL}\n"))
        self.assertTrue(real.read_text().endswith("Host *\n    User me\n"))
