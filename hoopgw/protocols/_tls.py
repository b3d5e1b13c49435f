"""
Writing through Twisted's TLS layer without its one-turn delay.

Twisted's TLS transport (C{BufferingTLSTransport}) holds every write until
the next reactor iteration so many small writes become one TLS record.  A
relay that already writes one joined batch per read gains nothing from
that and pays a C{callLater(0)}, an extra reactor turn and its latency on
every answer.  L{flush} sends what is buffered now.
"""

from __future__ import annotations

from typing import Any


def flush(transport: Any) -> None:
    """
    Encrypt and hand to the socket whatever C{transport}'s TLS layer holds.
    A no-op on plaintext transports, and on a Twisted whose TLS layer no
    longer has the aggregator (then writes keep Twisted's own timing).
    """
    # After startTLS the TCP transport's protocol is the TLS layer; a
    # TLS listener's protocol sees the TLS layer as its transport.
    for layer in (getattr(transport, "protocol", None), transport):
        aggregator = getattr(layer, "_aggregator", None)
        if aggregator is not None:
            aggregator.flush()
            return
