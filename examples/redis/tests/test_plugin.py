"""
The plugin (src/twisted/plugins/hoopgw_redis.py, hoopgw_redis.plugin): found
by hoopgw as any front end is, its parts, and the listener it builds.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor
from twisted.plugin import IPlugin
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from hoopgw.config import loads
from hoopgw.frontends import FrontEnds, installed
from hoopgw.gateway import GatewayContext
from hoopgw.interfaces import IFrontEnd
from hoopgw.tls import ensure_certificate

from hoopgw_redis.frontend import RedisFrontEnd
from hoopgw_redis.plugin import DEFAULT_LISTENER, front_end


class PluginTests(SynchronousTestCase):
    def test_found(self):
        """hoopgw finds the plugin in a twisted/plugins folder on sys.path (installed, or src/ on PYTHONPATH)."""
        found = installed()
        self.assertIs(found["redis"], front_end)
        self.assertIn("twisted.plugins.hoopgw_redis.redis", found.names["redis"])
        self.assertIn(os.path.join("twisted", "plugins", "hoopgw_redis.py"), found.names["redis"])
        self.assertLessEqual({"redis.commands", "redis.keys"}, set(found.conditions))

    def test_parts(self):
        verifyObject(IPlugin, front_end)
        verifyObject(IFrontEnd, front_end)
        self.assertEqual(front_end.kind, "redis")
        self.assertEqual(front_end.action_kinds, ("redis.*",))
        self.assertEqual([c.name for c in front_end.conditions], ["redis.commands", "redis.keys"])
        self.assertEqual(front_end.conditions[0].case, "upper")
        endpoint = serverFromString(MemoryReactor(), DEFAULT_LISTENER)
        self.assertEqual((endpoint._port, endpoint._interface), (16379, "127.0.0.1"))  # loopback only

    def context(self, listen: str) -> GatewayContext:
        data = Path(self.mktemp()).resolve()
        cert, key = ensure_certificate(data)
        listen = listen.format(cert=cert, key=key)
        config = loads(f'[listen]\nredis = "{listen}"\n', source=None, base_dir=data,
                       front_ends=FrontEnds([front_end]))
        sessions = SimpleNamespace(connections={})
        return GatewayContext(config, sessions, MemoryReactor(), cert, key)

    def test_build_tls(self):
        """A tcp: listener: TLS from the first byte, with the gateway's certificate, then RESP."""
        factory = front_end.build(self.context("tcp:0:interface=127.0.0.1"))
        self.assertIsInstance(factory, TLSMemoryBIOFactory)
        self.assertIsInstance(factory.wrappedFactory, RedisFrontEnd)
        self.assertTrue(factory.wrappedFactory.require_tls)

    def test_build_ssl_endpoint(self):
        """An ssl: listener does TLS itself (its own certificate): not wrapped twice."""
        for listen in ("ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
                       "haproxy:ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"):
            factory = front_end.build(self.context(listen))
            self.assertIsInstance(factory, RedisFrontEnd, listen)

