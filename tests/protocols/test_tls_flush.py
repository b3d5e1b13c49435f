"""
L{hoopgw.protocols._tls.flush}: a relay's answer leaves in the same reactor
turn instead of waiting for Twisted's TLS write aggregation.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.protocols.tls import BufferingTLSTransport, _AggregateSmallWrites
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols import _tls


class _Layer:
    def __init__(self, written: list[bytes], clock: Clock) -> None:
        self._aggregator = _AggregateSmallWrites(written.append, clock)
        self.write = self._aggregator.write


class _TCP:
    def __init__(self, protocol: object) -> None:
        self.protocol = protocol


class FlushTests(SynchronousTestCase):
    def test_after_start_tls(self) -> None:
        """If the TLS layer is the TCP transport's protocol (startTLS), what
        it holds is written at once, not on the next reactor turn."""
        written: list[bytes] = []
        clock = Clock()
        layer = _Layer(written, clock)
        layer.write(b"a")
        layer.write(b"b")
        self.assertEqual(written, [])
        _tls.flush(_TCP(layer))
        self.assertEqual(written, [b"ab"])
        clock.advance(0)
        self.assertEqual(written, [b"ab"])

    def test_tls_listener(self) -> None:
        """If the protocol's transport is the TLS layer itself (a TLS
        endpoint), it is flushed too."""
        written: list[bytes] = []
        layer = _Layer(written, Clock())
        layer.write(b"x")
        _tls.flush(layer)
        self.assertEqual(written, [b"x"])

    def test_plaintext(self) -> None:
        """A plaintext transport is left alone."""
        _tls.flush(_TCP(object()))
        _tls.flush(object())

    def test_twisted_still_aggregates(self) -> None:
        """Twisted's TLS transport still has the aggregator this relies on;
        if an upgrade removes it, this fails instead of the relay silently
        keeping Twisted's timing."""
        self.assertIn("_aggregator", BufferingTLSTransport.__annotations__)
