"""
Tests for L{hoopgw.frontend}: the public face for front ends holds what
the documentation says a front end imports, each name the very object of
the module it lives in.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys

from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

import hoopgw.frontend
from hoopgw.frontend import mark_authenticated
from tests.protocols.test_preauth import _Case
from tests.test_frontends import REPO, doc_files

# Where each name re-exported lives (its home stays where it was).
HOMES = {
    "AsciicastRecorder": "hoopgw.recording.asciicast",
    "GATEWAY_RULE": "hoopgw.sessions",
    "Action": "hoopgw.model",
    "AuditUnavailable": "hoopgw.errors",
    "AuthenticationFailed": "hoopgw.errors",
    "ConditionKind": "hoopgw.policy.rules",
    "ConditionSpec": "hoopgw.policy.rules",
    "ConfigError": "hoopgw.errors",
    "Connection": "hoopgw.model",
    "Decision": "hoopgw.model",
    "Effect": "hoopgw.model",
    "FrontEnd": "hoopgw.frontends",
    "FrontEnds": "hoopgw.frontends",
    "GatewayContext": "hoopgw.gateway",
    "HoopgwError": "hoopgw.errors",
    "IActionHandle": "hoopgw.interfaces",
    "IFrontEnd": "hoopgw.interfaces",
    "IMetrics": "hoopgw.interfaces",
    "IRecorder": "hoopgw.interfaces",
    "ISession": "hoopgw.interfaces",
    "ISessionService": "hoopgw.interfaces",
    "IStreamTransport": "hoopgw.protocols",
    "ITerminalRecorder": "hoopgw.interfaces",
    "Identity": "hoopgw.model",
    "NotPermitted": "hoopgw.errors",
    "Outcome": "hoopgw.model",
    "PreauthLimits": "hoopgw.config",
    "Review": "hoopgw.reviews",
    "SecretRef": "hoopgw.config",
    "Source": "hoopgw.model",
    "Status": "hoopgw.model",
    "Table": "hoopgw.config",
    "WrongKind": "hoopgw.errors",
    "installed": "hoopgw.frontends",
    "SessionMasks": "hoopgw.masking.service",
    "glob_witness": "hoopgw.policy.rules",
    "UNPINNED": "hoopgw.policy.rules",
    "restrictive_patterns": "hoopgw.policy.rules",
    "Reading": "hoopgw.protocols",
    "ReadPause": "hoopgw.protocols",
    "server_options": "hoopgw.tls",
    "quote": "hoopgw.errors",
    "describe_type": "hoopgw.errors",
    "format_address": "hoopgw.config",
    "setting_default": "hoopgw.config",
}

# Modules the documentation's code may import from hoopgw: the public face,
# and the doubles a front end's tests use.
PUBLIC = {"hoopgw.frontend", "hoopgw.testing"}


def doc_imports(name: str = "front-ends.md") -> list[tuple[str, str, str]]:
    """(file, module, name) of each import of hoopgw in the docs' code blocks."""
    found = []
    for path, code in doc_files(name).items():
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "hoopgw":
                found.extend((path, node.module, alias.name) for alias in node.names)
            elif isinstance(node, ast.Import):
                found.extend((path, alias.name, "") for alias in node.names if alias.name.split(".")[0] == "hoopgw")
    return found


class PublicFaceTests(SynchronousTestCase):
    def test_all_importable(self) -> None:
        """Every name of __all__ is importable from hoopgw.frontend, once and in order."""
        names = hoopgw.frontend.__all__
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual(names, sorted(names))
        for name in names:
            with self.subTest(name):
                namespace: dict[str, object] = {}
                exec(f"from hoopgw.frontend import {name}", namespace)
                self.assertIs(namespace[name], getattr(hoopgw.frontend, name))

    def test_star(self) -> None:
        """C{from hoopgw.frontend import *} gives exactly __all__."""
        namespace: dict[str, object] = {}
        exec("from hoopgw.frontend import *", namespace)
        self.assertEqual(set(namespace) - {"__builtins__"}, set(hoopgw.frontend.__all__))

    def test_same_objects(self) -> None:
        """Each re-exported name is its home module's own object, not a copy or a wrapper."""
        self.assertEqual(set(HOMES) | {"mark_authenticated"}, set(hoopgw.frontend.__all__))
        for name, home in HOMES.items():
            with self.subTest(name):
                self.assertIs(getattr(hoopgw.frontend, name), getattr(importlib.import_module(home), name))

    def test_unknown_name(self) -> None:
        """A name the module does not have is an AttributeError, as for any module."""
        self.assertRaises(AttributeError, getattr, hoopgw.frontend, "SessionServce")
        self.assertRaises(ImportError, exec, "from hoopgw.frontend import Nothing", {})

    def test_gateway_on_demand(self) -> None:
        """
        Importing hoopgw.frontend (as a plugin module does, when twistd or
        the admin command lists the plugins) does not import hoopgw.gateway
        and every service it assembles; asking for GatewayContext does.
        """
        code = (
            "import sys, hoopgw.frontend\n"
            "print('hoopgw.gateway' in sys.modules)\n"
            "hoopgw.frontend.GatewayContext\n"
            "print('hoopgw.gateway' in sys.modules)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
        )
        self.assertEqual(result.stdout.split(), ["False", "True"])

    def test_docs_import_public_face(self) -> None:
        """
        The code of docs/front-ends.md imports from hoopgw only
        hoopgw.frontend (and hoopgw.testing's doubles), and only names of
        its __all__: a front end written from the docs uses nothing private.
        """
        imports = doc_imports()
        self.assertIn(("echo_gateway/__init__.py", "hoopgw.frontend", "mark_authenticated"), imports)
        for path, module, name in imports:
            with self.subTest(f"{path}: {module} {name}"):
                self.assertIn(module, PUBLIC)
                exported = importlib.import_module(module).__all__
                self.assertIn(name, exported)


class MarkAuthenticatedTests(_Case):
    def test_guarded(self) -> None:
        """
        mark_authenticated takes a guarded connection out of the
        pre-authentication limits: no deadline, no longer pending.
        """
        protocol, transport = self.connect()
        self.assertEqual(len(self.guard.pending), 1)
        mark_authenticated(protocol.wrappedProtocol)
        mark_authenticated(protocol.wrappedProtocol)  # twice is fine
        self.assertEqual(self.guard.pending, set())
        self.clock.advance(3600)
        self.assertFalse(transport.aborted)

    def test_unguarded(self) -> None:
        """On a connection with no pre-authentication guard, mark_authenticated does nothing."""
        protocol = Protocol()
        protocol.makeConnection(StringTransport())
        mark_authenticated(protocol)
        mark_authenticated(Protocol())
