"""
Tests for L{hoopgw.frontends}: front ends are Twisted plugins providing
L{IFrontEnd}, and the configuration, the policy's conditions, the metrics
and the gateway's listeners come from the ones installed.
"""

from __future__ import annotations

from pathlib import Path

from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import twisted.plugins
from hoopgw.config import ListenSettings, PreauthLimits, PreauthSettings, Table, loads
from hoopgw.errors import ConfigError, PluginError
from hoopgw.frontends import FrontEnd, FrontEnds, installed
from hoopgw.interfaces import IFrontEnd
from hoopgw.policy.rules import CONDITIONS, ConditionKind, ConditionSpec
from hoopgw.protocols.http import plugin as http_plugin
from hoopgw.protocols.postgres import plugin as postgres_plugin
from hoopgw.protocols.ssh import plugin as ssh_plugin

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
