"""The front ends (PostgreSQL, SSH, HTTP) and what they share."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address

__all__ = ["set_no_delay"]


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
