"""
Tests for L{hoopgw.frontends}: front ends are Twisted plugins providing
L{IFrontEnd}, and the configuration, the policy's conditions, the metrics
and the gateway's listeners come from the ones installed.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import globalLogPublisher
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

import twisted.plugins
from hoopgw.audit.search import search
from hoopgw.config import ListenSettings, PreauthLimits, PreauthSettings, Table, loads
from hoopgw.errors import ConfigError, PluginError
from hoopgw.frontends import FrontEnd, FrontEnds, installed
from hoopgw.gateway import Gateway
from hoopgw.interfaces import IFrontEnd
from hoopgw.model import Action, Identity
from hoopgw.policy.loader import parse_policy_file
from hoopgw.policy.rules import CONDITIONS, ConditionKind, ConditionSpec
from hoopgw.protocols.http import plugin as http_plugin
from hoopgw.protocols.postgres import plugin as postgres_plugin
from hoopgw.protocols.ssh import plugin as ssh_plugin

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {"http": http_plugin.front_end, "postgres": postgres_plugin.front_end, "ssh": ssh_plugin.front_end}


def _parse(table: Table) -> tuple[str, None]:
    return "nowhere", None


def front_end(kind: str = "toy", **parts: object) -> FrontEnd:
    """A front end made in code, for the registry's checks."""
    values: dict = dict(
        kind=kind, description="a toy", factory="nowhere.make", parse=_parse, default_listener="tcp:0"
    )
    values.update(parts)
    return FrontEnd(**values)


class ShippedTests(SynchronousTestCase):
    def test_conformance(self) -> None:
        """Each shipped front end provides IFrontEnd (and IPlugin, so getPlugins lists it)."""
        for kind, plugin in SHIPPED.items():
            with self.subTest(kind):
                self.assertTrue(verifyObject(IFrontEnd, plugin))
                self.assertTrue(IPlugin.providedBy(plugin))
                self.assertEqual(plugin.kind, kind)

    def test_installed(self) -> None:
        """
        The shipped front ends are found as plugins: getPlugins(IFrontEnd)
        over twisted.plugins yields the very objects their packages define,
        named by twisted/plugins/hoopgw_frontends.py.
        """
        self.assertEqual(dict(installed()), SHIPPED)
        self.assertIs(installed(), installed())
        found = list(getPlugins(IFrontEnd, twisted.plugins))
        for plugin in SHIPPED.values():
            self.assertIn(plugin, found)
        self.assertIn("twisted.plugins.hoopgw_frontends.postgres", installed().names["postgres"])
        self.assertEqual(installed().broken, ())

    def test_defaults(self) -> None:
        """The listeners and pre-authentication limits are as before plugins: SSH allows 120 s."""
        self.assertEqual(
            dict(ListenSettings()),
            {
                "http": "tcp:18443:interface=127.0.0.1",
                "postgres": "tcp:15432:interface=127.0.0.1",
                "ssh": "tcp:12222:interface=127.0.0.1",
                "api": "tcp:18009:interface=127.0.0.1",
            },
        )
        self.assertEqual(
            dict(PreauthSettings()),
            {"http": PreauthLimits(), "postgres": PreauthLimits(), "ssh": PreauthLimits(timeout=120), "api": PreauthLimits()},
        )

    def test_conditions(self) -> None:
        """
        The policy's conditions are the front ends' own: sql.* from the
        PostgreSQL plugin, ssh.* from SSH's, http.* and k8s.* from HTTP's.
        """
        for plugin in SHIPPED.values():
            for spec in plugin.conditions:
                self.assertEqual(CONDITIONS[spec.name], spec)
        self.assertEqual(
            {name.partition(".")[0] for name in CONDITIONS},
            {"sql", "ssh", "http", "k8s"},
        )
        self.assertEqual(
            {spec.name.partition(".")[0] for spec in postgres_plugin.front_end.conditions}, {"sql"}
        )

    def test_connection_keys(self) -> None:
        """A front end's connection keys are those its parser reads; name and kind are config.py's."""
        for plugin in SHIPPED.values():
            self.assertNotIn("name", plugin.connection_keys)
            self.assertNotIn("kind", plugin.connection_keys)


class RegistryTests(SynchronousTestCase):
    def test_duplicate_kind(self) -> None:
        """Two plugins claiming one kind stop start-up, naming both."""
        first, second = front_end("pg"), front_end("pg", description="another")
        error = self.assertRaises(
            PluginError, FrontEnds, [first, second], names={id(first): "twisted.plugins.a.pg", id(second): "twisted.plugins.b.pg"}
        )
        self.assertEqual(
            str(error),
            'two plugins claim the connection kind "pg": twisted.plugins.a.pg and twisted.plugins.b.pg; '
            "uninstall one of them",
        )

    def test_same_object_twice(self) -> None:
        """One object named by two plugin modules is one front end, not a clash."""
        one = front_end()
        self.assertEqual(dict(FrontEnds([one, one])), {"toy": one})

    def test_reserved_kinds(self) -> None:
        """
        "api" is the API listener's; timeout, max_bytes... are [preauth]'s own
        keys, beside the [preauth.<kind>] tables: no front end may take them.
        """
        for kind in ("api", "timeout", "max_bytes"):
            toy = front_end(kind)
            error = self.assertRaises(PluginError, FrontEnds, [toy], names={id(toy): "twisted.plugins.x.toy"})
            self.assertIn(f'plugin twisted.plugins.x.toy: the kind "{kind}" is reserved', str(error))

    def test_malformed_kind(self) -> None:
        for kind in ("", "Redis", "1c", "a-b", "a.b", "x" * 33):
            with self.subTest(kind):
                error = self.assertRaises(PluginError, FrontEnds, [front_end(kind)])
                self.assertIn("expected a kind of lower-case letters", str(error))

    def test_condition_clash(self) -> None:
        """Two plugins declaring one condition are refused too: the policy could not say whose it is."""
        spec = ConditionSpec("toy.words", ConditionKind.globs)
        one, two = front_end("one", conditions=[spec]), front_end("two", conditions=[spec])
        error = self.assertRaises(PluginError, FrontEnds, [one, two], names={id(one): "p.one", id(two): "p.two"})
        self.assertEqual(str(error), 'two plugins claim the policy condition "toy.words": p.one and p.two')

    def test_malformed_condition(self) -> None:
        toy = front_end(conditions=[ConditionSpec("words", ConditionKind.globs)])
        error = self.assertRaises(PluginError, FrontEnds, [toy], names={id(toy): "p.toy"})
        self.assertIn('plugin p.toy: condition names are dotted lower-case words such as "proto.things"', str(error))

    def test_parts_of_the_wrong_type(self) -> None:
        toy = front_end(conditions=["toy.words"])
        error = self.assertRaises(PluginError, FrontEnds, [toy], names={id(toy): "p.toy"})
        self.assertEqual(str(error), "plugin p.toy: expected ConditionSpec values as conditions, got 'toy.words'")
        toy = front_end(default_listener=15432)
        error = self.assertRaises(PluginError, FrontEnds, [toy], names={id(toy): "p.toy"})
        self.assertEqual(str(error), "plugin p.toy: expected an endpoint string or None as default_listener, got 15432")

    def test_not_a_front_end(self) -> None:
        """An object that says it is a front end but lacks a part is refused, named."""

        class Half:
            kind = "half"

        from zope.interface import alsoProvides

        half = Half()
        alsoProvides(half, IFrontEnd)
        error = self.assertRaises(PluginError, FrontEnds, [half], names={id(half): "p.half"})
        self.assertTrue(str(error).startswith("plugin p.half does not provide IFrontEnd: "), str(error))


class ConfigTests(SynchronousTestCase):
    """config.py knows kinds only through the front ends."""

    def load(self, text: str, front_ends: FrontEnds | None = None):
        return loads(text, source=Path("hoopgw.toml"), base_dir=Path("/tmp"), front_ends=front_ends)

    def assertError(self, text: str, message: str, front_ends: FrontEnds | None = None) -> None:
        error = self.assertRaises(ConfigError, self.load, text, front_ends)
        self.assertEqual(str(error), "hoopgw.toml: " + message)

    def test_unknown_kind(self) -> None:
        """An unknown kind names the kinds installed, and any plugin that could not be loaded."""
        text = '[[connections]]\nname = "cache"\nkind = "redis"\n'
        self.assertError(text, 'connections[0].kind: expected one of "http", "postgres", "ssh", got "redis"')
        broken = FrontEnds(SHIPPED.values(), broken=["/x/twisted/plugins/redis.py: ImportError: No module named 'resp'"])
        self.assertError(
            text,
            'connections[0].kind: expected one of "http", "postgres", "ssh", got "redis"; these plugins could not '
            "be loaded: /x/twisted/plugins/redis.py: ImportError: No module named 'resp'",
            broken,
        )

    def test_no_front_end(self) -> None:
        self.assertError(
            '[[connections]]\nname = "db"\nkind = "postgres"\n',
            "connections[0].kind: no front end is installed (no IFrontEnd plugin in twisted.plugins)",
            FrontEnds(),
        )

    def test_dispatch(self) -> None:
        """
        A connection's keys are its front end's: checked against
        connection_keys, then parsed by it.
        """
        toy = front_end(connection_keys=("colour",), parse=lambda table: ("paint", table.required("colour", "a colour")))
        front_ends = FrontEnds([toy])
        config = self.load('[[connections]]\nname = "t"\nkind = "toy"\ncolour = "red"\n', front_ends)
        [connection] = config.connections
        self.assertEqual((connection.kind, connection.target, connection.settings), ("toy", "paint", "red"))
        self.assertError(
            '[[connections]]\nname = "t"\nkind = "toy"\ncolor = "red"\n',
            'connections[0].color: unknown key; expected one of "colour", "kind", "name"',
            front_ends,
        )
        self.assertError(
            '[[connections]]\nname = "t"\nkind = "toy"\ncolour = 5\n',
            "connections[0].colour: expected a colour, got an integer",
            front_ends,
        )

    def test_listen_is_a_map(self) -> None:
        """
        [listen] maps each kind (and "api") to an endpoint or false; a kind
        it does not name keeps its front end's default; existing files read
        as before.
        """
        listen = self.load('[listen]\nssh = false\npostgres = "tcp:5000"\n').listen
        self.assertEqual(listen["ssh"], None)
        self.assertEqual(listen["postgres"], "tcp:5000")
        self.assertEqual(listen["http"], "tcp:18443:interface=127.0.0.1")
        self.assertEqual(listen.api, "tcp:18009:interface=127.0.0.1")
        toy = front_end(default_listener="tcp:7000:interface=127.0.0.1")
        listen = self.load("[listen]\napi = false\n", FrontEnds([toy])).listen
        self.assertEqual(dict(listen), {"toy": "tcp:7000:interface=127.0.0.1", "api": None})

    def test_listen_unknown(self) -> None:
        """
        An unknown [listen] key names the installed kinds; one for a kind
        whose plugin is missing is unknown too, even set to false.
        """
        self.assertError(
            '[listen]\nredis = false\n',
            'listen.redis: unknown key; expected one of "api", "http", "postgres", "ssh"',
        )
        broken = FrontEnds(SHIPPED.values(), broken=["/x/redis.py: RuntimeError: boom"])
        self.assertError(
            '[listen]\nredis = "tcp:6380"\n',
            'listen.redis: unknown key; expected one of "api", "http", "postgres", "ssh"; these plugins could '
            "not be loaded: /x/redis.py: RuntimeError: boom",
            broken,
        )

    def test_listen_example(self) -> None:
        """A bad endpoint's message shows the front end's default as the example."""
        toy = front_end(default_listener="tcp:7000:interface=127.0.0.1")
        self.assertError(
            '[listen]\ntoy = "nope:1"\n',
            'listen.toy: expected a Twisted server endpoint string (e.g. "tcp:7000:interface=127.0.0.1"), '
            "got \"nope:1\": Unknown endpoint type: 'nope'",
            FrontEnds([toy]),
        )

    def test_unusable_default_listener(self) -> None:
        """A plugin's default endpoint is checked as strictly as the file's, and the message says whose it is."""
        toy = front_end(default_listener="nope:1")
        front_ends = FrontEnds([toy], names={id(toy): "twisted.plugins.toy.toy"})
        self.assertError(
            "",
            'listen.toy: the default listener of twisted.plugins.toy.toy, "nope:1", is not a Twisted server '
            "endpoint string (Unknown endpoint type: 'nope'); set [listen] toy",
            front_ends,
        )
        self.assertIsNone(self.load("[listen]\ntoy = false\n", front_ends).listen["toy"])

    def test_preauth_per_kind(self) -> None:
        """[preauth.<kind>] exists for each installed kind, from its front end's defaults."""
        toy = front_end(preauth=PreauthLimits(timeout=5))
        preauth = self.load('[preauth]\nmax_per_source = 3\n[preauth.toy]\nmax_bytes = 65536\n', FrontEnds([toy])).preauth
        self.assertEqual(preauth["toy"], PreauthLimits(timeout=5, max_per_source=3, max_bytes=65536))
        self.assertEqual(preauth.api, PreauthLimits(max_per_source=3))
        self.assertError(
            "[preauth.redis]\ntimeout = 5\n",
            'preauth.redis: unknown key; expected one of "api", "max_bytes", "max_per_listener", '
            '"max_per_source", "timeout", "toy"',
            FrontEnds([toy]),
        )


# -- plugins in a folder of their own, as a separately installed package has ----------------


def doc_files(name: str = "front-ends.md") -> dict[str, str]:
    """The files of the docs' example: each ```python block that starts with "# <path>"."""
    text = (REPO / "docs" / name).read_text()
    files = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        first = block.partition("\n")[0]
        if first.startswith("# ") and first.endswith(".py"):
            files[first[2:]] = block
    return files


class PluginFolder:
    """
    A sys.path entry with a twisted/plugins folder, as a package installed
    beside hoopgw has: added to twisted.plugins.__path__ as its __init__
    adds each such folder at import (pluginPackagePaths), and removed, with
    the modules imported from it, when the test ends.
    """

    def __init__(self, testcase: SynchronousTestCase, files: dict[str, str] | None = None) -> None:
        self.root = Path(testcase.mktemp()).resolve()
        self.plugins = self.root / "twisted" / "plugins"
        self.plugins.mkdir(parents=True)
        for relative, text in (files or {}).items():
            self.add(relative, text)
        sys.path.insert(0, str(self.root))
        twisted.plugins.__path__.append(str(self.plugins))
        importlib.invalidate_caches()
        testcase.addCleanup(self._remove)

    def add(self, relative: str, text: str) -> None:
        """Write a file (before the plugins are looked up: the lookup is made once per __path__)."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def _remove(self) -> None:
        sys.path.remove(str(self.root))
        twisted.plugins.__path__.remove(str(self.plugins))
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", None) or "").startswith(str(self.root)):
                del sys.modules[name]


def install_echo(testcase: SynchronousTestCase) -> PluginFolder:
    """The docs' echo front end, installed for the test."""
    return PluginFolder(testcase, doc_files())


ECHO_CONNECTION = '[[connections]]\nname = "hello"\nkind = "echo"\nprefix = "hello says: "\n'


class EchoPluginTests(SynchronousTestCase):
    """The docs' toy front end, dropped into a twisted/plugins folder on sys.path."""

    def setUp(self) -> None:
        install_echo(self)

    def test_discovered(self) -> None:
        """getPlugins finds it beside the shipped ones; it provides IFrontEnd."""
        front_ends = installed()
        self.assertEqual(list(front_ends), ["echo", "http", "postgres", "ssh"])
        self.assertTrue(verifyObject(IFrontEnd, front_ends["echo"]))
        self.assertIn("twisted.plugins.echo_frontend.echo (", front_ends.names["echo"])
        self.assertEqual(installed().broken, ())

    def test_connection(self) -> None:
        """Its connection key is parsed by it; a wrong value is refused with the precise message."""
        config = loads(ECHO_CONNECTION, source=Path("hoopgw.toml"), base_dir=Path("/tmp"))
        [connection] = config.connections
        self.assertEqual((connection.kind, connection.target, connection.settings.prefix), ("echo", "echo", "hello says: "))
        self.assertEqual(config.listen["echo"], "tcp:17007:interface=127.0.0.1")
        for value, got in (("5", "an integer"), ('""', "an empty string")):
            error = self.assertRaises(
                ConfigError, loads, ECHO_CONNECTION.replace('"hello says: "', value), source=Path("hoopgw.toml"), base_dir=Path("/tmp")
            )
            self.assertEqual(
                str(error), f"hoopgw.toml: connections[0].prefix: expected the text put before each echoed line, got {got}"
            )
        error = self.assertRaises(
            ConfigError, loads, ECHO_CONNECTION + "colour = 1\n", source=Path("hoopgw.toml"), base_dir=Path("/tmp")
        )
        self.assertEqual(str(error), 'hoopgw.toml: connections[0].colour: unknown key; expected one of "kind", "name", "prefix"')

    def test_condition(self) -> None:
        """Its condition is one a policy file may use, and it matches the attribute its actions carry."""
        rules, _, _ = parse_policy_file(
            b'[[rule]]\nname = "all"\neffect = "allow"\n'
            b'[[rule]]\nname = "no-shouting"\neffect = "deny"\necho.words = ["*!"]\n',
            file="echo.toml",
        )
        from hoopgw.policy.rules import PolicySet

        policy = PolicySet(rules)
        alice = Identity("https://idp", "alice", ())
        line = lambda text: Action(kind="echo.line", input=text, attributes={"echo.words": tuple(text.split())})
        self.assertEqual(policy.evaluate(alice, "hello", line("hi there")).rule, "all")
        self.assertEqual(policy.evaluate(alice, "hello", line("stop now!")).rule, "no-shouting")
        error = self.assertRaises(
            ConfigError, parse_policy_file, b'[[rule]]\nname = "x"\neffect = "deny"\necho.word = ["a"]\n', file="echo.toml"
        )
        self.assertIn('unknown condition; expected one of "echo.words", "http.methods"', str(error))
        self.assertIn('did you mean "echo.words"?', str(error))


class DiscoveryEdgeTests(SynchronousTestCase):
    """What the plugin system may hand the gateway, and what it does then."""

    def test_separate_process(self) -> None:
        """
        In a process of its own, a twisted/plugins folder on PYTHONPATH is all
        it takes: twisted.plugins picks it up at import, as for an installed package.
        """
        folder = PluginFolder(self, doc_files())
        environ = dict(os.environ, PYTHONPATH=os.pathsep.join([str(folder.root), str(REPO)]))
        output = subprocess.run(
            [sys.executable, "-c", "from hoopgw.frontends import installed; print(' '.join(installed()))"],
            env=environ, capture_output=True, text=True, check=True, timeout=60,
        ).stdout
        self.assertEqual(output.split(), ["echo", "http", "postgres", "ssh"])

    def test_duplicate_modules(self) -> None:
        """Two plugin modules claiming one kind stop the start, naming both."""
        files = doc_files()
        plugin = files.pop("twisted/plugins/echo_frontend.py")
        folder = PluginFolder(self, files)
        folder.add("twisted/plugins/echo_a.py", plugin)
        folder.add("twisted/plugins/echo_b.py", plugin)
        error = self.assertRaises(PluginError, installed)
        self.assertRegex(
            str(error),
            r'^two plugins claim the connection kind "echo": twisted\.plugins\.echo_a\.echo \(.*/echo_a\.py\) '
            r"and twisted\.plugins\.echo_b\.echo \(.*/echo_b\.py\); uninstall one of them$",
        )
        self.assertRaises(PluginError, loads, "", source=None, base_dir=Path("/tmp"))

    def test_shipped_kind_again(self) -> None:
        """A plugin that claims a shipped kind is refused the same way, naming hoopgw's own."""
        folder = PluginFolder(self)
        folder.add(
            "twisted/plugins/mine.py",
            "from hoopgw.frontends import FrontEnd\n"
            "postgres = FrontEnd(kind='postgres', description='mine', factory='x.y', parse=print)\n",
        )
        error = self.assertRaises(PluginError, installed)
        self.assertIn("twisted.plugins.hoopgw_frontends.postgres (", str(error))
        self.assertIn("twisted.plugins.mine.postgres (", str(error))

    def test_api_kind(self) -> None:
        """A plugin whose kind is the API listener's is refused, named."""
        folder = PluginFolder(self)
        folder.add(
            "twisted/plugins/api_plugin.py",
            "from hoopgw.frontends import FrontEnd\n"
            "api = FrontEnd(kind='api', description='mine', factory='x.y', parse=print)\n",
        )
        error = self.assertRaises(PluginError, installed)
        self.assertRegex(str(error), r'^plugin twisted\.plugins\.api_plugin\.api \(.*\): the kind "api" is reserved')

    def test_raises_on_import(self) -> None:
        """
        A plugin module that raises on import is left out, and the others
        found: the gateway warns naming its file, and a connection of a kind
        it may have held fails naming the kinds installed and that file.
        """
        folder = install_echo(self)
        folder.add("twisted/plugins/redis_frontend.py", "raise RuntimeError('no RESP codec here')\n")
        logged: list[dict] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        front_ends = installed()
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(list(front_ends), ["echo", "http", "postgres", "ssh"])
        problem = f"{folder.plugins / 'redis_frontend.py'}: RuntimeError: no RESP codec here"
        self.assertEqual(front_ends.broken, (problem,))
        self.assertIn(problem, [event.get("problem") for event in logged])
        error = self.assertRaises(
            ConfigError, loads, '[[connections]]\nname = "c"\nkind = "redis"\n', source=None, base_dir=Path("/tmp")
        )
        self.assertEqual(
            str(error),
            '<string>: connections[0].kind: expected one of "echo", "http", "postgres", "ssh", got "redis"; '
            f"these plugins could not be loaded: {problem}",
        )
        self.assertEqual(len(loads(ECHO_CONNECTION, source=None, base_dir=Path("/tmp")).connections), 1)
        error = self.assertRaises(
            ConfigError, parse_policy_file, b'[[rule]]\nname = "x"\neffect = "deny"\nredis.commands = ["FLUSHALL"]\n', file="p.toml"
        )
        self.assertTrue(str(error).endswith(f"; these plugins could not be loaded: {problem}"), str(error))

    def test_cli_says_it(self) -> None:
        """The admin command says what is wrong with the plugins in one line, as for a bad file."""
        import io

        from hoopgw.cli import main

        folder = PluginFolder(self)
        for module in ("a", "b"):
            folder.add(
                f"twisted/plugins/{module}.py",
                "from hoopgw.frontends import FrontEnd\n"
                "toy = FrontEnd(kind='toy', description='mine', factory='x.y', parse=print)\n",
            )
        config = folder.root / "hoopgw.toml"
        config.write_text("")
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        self.assertEqual(main(["--config", str(config), "-q", "policy", "check"]), 1)
        self.assertTrue(stderr.getvalue().startswith('hoopgw: two plugins claim the connection kind "toy": '), stderr.getvalue())

    def test_syntax_error(self) -> None:
        """A plugin module that does not compile is named too."""
        folder = PluginFolder(self)
        folder.add("twisted/plugins/typo.py", "def (\n")
        front_ends = installed()
        self.flushLoggedErrors(SyntaxError)
        [problem] = front_ends.broken
        self.assertTrue(problem.startswith(f"{folder.plugins / 'typo.py'}: SyntaxError: "), problem)

    def test_unwritable_cache(self) -> None:
        """
        A plugin cache that cannot be written (here a directory where the
        file would go, which even root cannot replace) changes nothing.
        """
        folder = install_echo(self)
        (folder.plugins / "dropin.cache").mkdir()
        self.assertIn("echo", installed())
        self.assertEqual(installed().broken, ())

    def test_no_init(self) -> None:
        """The repository's twisted/plugins is a plugin folder, not a package: no __init__.py there."""
        self.assertFalse((REPO / "twisted" / "plugins" / "__init__.py").exists())
        self.assertFalse((REPO / "twisted" / "__init__.py").exists())
        self.assertTrue((REPO / "twisted" / "plugins" / "hoopgw_frontends.py").exists())


class _Lines(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.waiting: list[tuple[int, Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._check()

    def connectionLost(self, reason: object) -> None:
        self._check(closed=True)

    def _check(self, closed: bool = False) -> None:
        for count, d in list(self.waiting):
            if self.received.count(b"\n") >= count or closed:
                self.waiting.remove((count, d))
                d.callback(self.received)

    def lines(self, count: int) -> Deferred:
        d: Deferred = Deferred()
        self.waiting.append((count, d))
        self._check()
        return d.addTimeout(10, reactor)


class EchoGatewayTests(TestCase):
    """The toy front end's listener, started by a real gateway."""

    timeout = 60

    @inlineCallbacks
    def test_echo(self):
        """
        A client through the echo listener logs in with a token, has its
        lines echoed, and a shouted one denied by the policy condition; the
        trail records the session and its actions.
        """
        install_echo(self)
        base = Path(self.mktemp()).resolve()
        (base / "policies").mkdir(parents=True)
        (base / "policies" / "echo.toml").write_text(
            '[[rule]]\nname = "anyone-may-echo"\neffect = "allow"\nconnections = ["hello"]\n'
            'actions = ["session.open", "echo.*"]\n'
            '[[rule]]\nname = "no-shouting"\neffect = "deny"\necho.words = ["*!"]\nmessage = "no shouting"\n'
        )
        config = loads(
            '[gateway]\ndata_dir = "data"\npolicies = "policies"\n'
            '[listen]\necho = "tcp:0:interface=127.0.0.1"\npostgres = false\nssh = false\nhttp = false\napi = false\n'
            + ECHO_CONNECTION,
            source=None,
            base_dir=base,
        )
        gateway = Gateway(config, reactor=reactor)
        gateway.startService()
        self.addCleanup(gateway.stopService)
        self.assertEqual(list(gateway.listeners), ["echo"])
        port = gateway.listeners["echo"].port.getHost().port
        token = gateway.identity.dev_issuer.issue("alice", ("dev",), 600)
        client = _Lines()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        client.transport.write(f"hello {token}\nhi there\nstop now!\n".encode())
        received = yield client.lines(3)
        client.transport.loseConnection()
        self.assertEqual(received, b"hello alice\nhello says: hi there\ndenied: no shouting\n")
        yield gateway.stopService()
        audit = base / "data" / "audit"
        [start] = search(audit, event="session.start")
        self.assertEqual((start["kind"], start["connection"], start["identity"]["sub"]), ("echo", "hello", "alice"))
        ends = [(r["action"]["kind"], r["outcome"]["status"]) for r in search(audit, event="action.end")]
        self.assertEqual(ends, [("echo.line", "succeeded"), ("echo.line", "blocked")])
