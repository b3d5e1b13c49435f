"""The front ends (PostgreSQL, SSH, HTTP) and what they share."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IConsumer, IPushProducer, ITLSTransport
from zope.interface import implementer

__all__ = ["IStreamTransport", "ReadPause", "Reading", "set_no_delay"]


class IStreamTransport(ITLSTransport, IPushProducer, IConsumer):
    """
    What the front ends use of a connection's transport, for annotations
    (C{transport: IStreamTransport} in a protocol class narrows Twisted's
    C{ITransport | None}): a TCP transport (TLS started on it or not) that
    is also a push producer (reading paused and resumed) and a consumer (a
    producer streams into it).  Twisted's TCP and TLS transports, and the
    pre-authentication guard's wrapper, have all of it without declaring
    this combination: nothing checks it at run time.
    """


def set_no_delay(transport: Any) -> None:
    """
    Turn Nagle's algorithm off on a TCP transport, as PostgreSQL, libpq and
    pgbouncer do: a proxy's small write (an answer, a notice, a request
    head) must not wait for the ACK of the one before it, which the peer's
    delayed ACK holds back up to 40 ms.  A transport that is not TCP (a
    Unix socket, a test's memory transport) is left as it is.
    """
    try:
        if isinstance(transport.getHost(), (IPv4Address, IPv6Address)):
            transport.setTcpNoDelay(True)
    except (AttributeError, OSError):
        pass


class Reading:
    """
    Whether a transport reads, for several reasons at once: it reads again
    only once none of them holds (the peer's send buffer is full, messages
    wait in the gateway's queue).
    """

    def __init__(self, transport: IPushProducer) -> None:
        self.transport = transport
        self.reasons: set[str] = set()

    def pause(self, reason: str) -> None:
        if not self.reasons:
            self.transport.pauseProducing()
        self.reasons.add(reason)

    def resume(self, reason: str) -> None:
        if reason in self.reasons:
            self.reasons.discard(reason)
            if not self.reasons:
                self.transport.resumeProducing()


@implementer(IPushProducer)
class ReadPause:
    """
    One side's reading as a producer for the other side: paused while the
    other's send buffer is full.  Only the protocols close connections, so
    stopProducing does nothing.
    """

    def __init__(self, reading: Reading) -> None:
        self.reading = reading

    def pauseProducing(self) -> None:
        self.reading.pause("peer")

    def resumeProducing(self) -> None:
        self.reading.resume("peer")

    def stopProducing(self) -> None:
        pass
