"""
Writing without Twisted's delays, for a relay that already writes one
joined batch per read.

Twisted's TLS transport (C{BufferingTLSTransport}) holds every write until
the next reactor iteration so many small writes become one TLS record: a
C{callLater(0)}, an extra reactor turn and its latency on every answer.
L{flush} sends what it holds now.

Below it, a TCP transport never sends in C{write}: it buffers, asks the
reactor to watch the socket for writability (an C{epoll_ctl}), sends on the
next turn and stops watching (another C{epoll_ctl}).  L{send_at_once} makes
a write whose connection has nothing waiting go to the socket at once, and
leaves the rest (a full socket buffer, a write behind others) to Twisted.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import FileDescriptor


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


def send_at_once(transport: Any) -> None:
    """
    Make the TCP connection under C{transport} send a write at once when
    nothing of it waits to be sent (else Twisted buffers it, as always).
    Call it when the connection is made, and again after C{startTLS}: the
    TLS layer then writes its records through an object of its own.  A
    transport that is not a Twisted TCP connection is left as it is.
    """
    tcp: Any = transport
    for _ in range(4):  # (wrappers that forward what they lack: the pre-authentication guard, a TLS layer)
        if isinstance(tcp, FileDescriptor):
            break
        tcp = getattr(tcp, "transport", None)
    else:
        return
    if not all(hasattr(tcp, name) for name in ("socket", "dataBuffer", "offset", "_tempDataLen", "_writeDisconnected")):
        return  # (not a socket, or a Twisted whose FileDescriptor changed: its own timing)
    writer: Any = tcp
    if getattr(tcp, "TLS", False):
        # startTLS: the TLS layer writes its records through a bypass object
        # (twisted.internet._newtls._BypassTLS), not through the connection,
        # whose own write (the class's, since TLS) now encrypts.
        vars(tcp).pop("write", None)
        writer = getattr(getattr(tcp, "protocol", None), "transport", None)
        if writer is None or writer is tcp:
            return
    if "write" in vars(writer):
        return  # (installed already)
    buffered = writer.write
    plain = writer is tcp

    def write(data: bytes) -> None:
        if plain and getattr(tcp, "TLS", False):
            # TLS started and nobody called this again: never send around
            # it; the connection's own write encrypts from now on.
            vars(tcp).pop("write", None)
            tcp.write(data)
            return
        if (
            data
            and tcp.connected
            and not tcp.disconnected
            and not tcp._writeDisconnected
            and not getattr(tcp, "_aborting", False)  # (Twisted drops what is written after an abort)
            and not tcp._tempDataLen
            and tcp.offset >= len(tcp.dataBuffer)
        ):
            sent = tcp.writeSomeData(data)
            # (An int: how much the socket took; an exception: the connection
            # is lost, and Twisted's own write path finds it out.)
            if type(sent) is int and sent > 0:
                if sent == len(data):
                    return
                data = data[sent:]
        buffered(data)

    writer.write = write
