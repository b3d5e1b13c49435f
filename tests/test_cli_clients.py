"""The client wrappers' settings from a discovery document (hoopgw.cli.clients), without a gateway."""

from __future__ import annotations

import base64

from twisted.trial.unittest import TestCase

from hoopgw.cli.clients import _address, _server_name, kubeconfig_entry
from hoopgw.errors import CommandError

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
INFO = {
    "listeners": {"postgres": {"host": "0.0.0.0", "port": 15432}, "http": {"host": "10.0.0.5", "port": 18443}},
    "tls": {"names": ["localhost", "127.0.0.1", "::1"], "ca": PEM},
}


class AddressTests(TestCase):
    def test_bound_to_every_address(self) -> None:
        """A listener on every address is reached by the host the API was reached by."""
        self.assertEqual(_address("https://gw.example:18009", INFO, "postgres"), ("gw.example", 15432))

    def test_bound_to_one_address(self) -> None:
        self.assertEqual(_address("https://gw.example:18009", INFO, "http"), ("10.0.0.5", 18443))

    def test_no_such_listener(self) -> None:
        with self.assertRaisesRegex(CommandError, r"has no ssh listener \(\[listen\] ssh\)"):
            _address("https://gw.example:18009", INFO, "ssh")


class TrustTests(TestCase):
    def test_server_name(self) -> None:
        """A host the certificate names is checked by name; another is checked against one of its names."""
        self.assertIsNone(_server_name("127.0.0.1", INFO))
        self.assertEqual(_server_name("gw.example", INFO), "localhost")
        self.assertIsNone(_server_name("gw.example", {"tls": {"names": []}}))

    def test_kubeconfig_entry(self) -> None:
        entry = kubeconfig_entry("https://gw.example:18009", INFO, "k8s prod")
        self.assertEqual(entry["cluster"], {
            "server": "https://10.0.0.5:18443/k8s%20prod",
            "certificate-authority-data": base64.b64encode(PEM.encode()).decode(),
            "tls-server-name": "localhost",
        })
        self.assertEqual(entry["user"]["exec"]["args"][-4:],
                         ["token", "exec-credential", "--gateway", "https://gw.example:18009"])

    def test_kubeconfig_entry_public_certificate(self) -> None:
        """A certificate from a CA clients already trust: nothing pinned, kubectl's own trust store."""
        info = {**INFO, "tls": {"names": ["gw.example"]}}
        entry = kubeconfig_entry("https://gw.example:18009", info, "k8s")
        self.assertEqual(entry["cluster"], {"server": "https://10.0.0.5:18443/k8s"})

    def test_ipv6(self) -> None:
        info = {**INFO, "listeners": {"http": {"host": "::1", "port": 18443}}}
        self.assertEqual(kubeconfig_entry("http://[::1]:18009", info, "k8s")["cluster"]["server"],
                         "https://[::1]:18443/k8s")
