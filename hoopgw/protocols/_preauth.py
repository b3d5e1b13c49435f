"""
Limits on connections that have not authenticated yet: one mechanism for
every listener (PostgreSQL, SSH, HTTP, the API).

A listener's factory is wrapped in a L{PreauthGuard}.  Every connection it
accepts is I{pending} until its protocol calls L{authenticated}; while
pending, a connection

  - must authenticate within C{timeout} seconds of being accepted, or is
    closed (PostgreSQL's C{authentication_timeout}, OpenSSH's
    C{LoginGraceTime}, an HTTP server's header timeout);
  - may send at most C{max_bytes} bytes (a token, a start-up packet, a
    request head, a key exchange are all far smaller; what a client
    pipelines behind its credential waits in the gateway's memory);
  - counts against C{max_per_source} (pending connections from one IPv4
    address or IPv6 /64) and C{max_per_listener} (pending connections on
    the listener), as OpenSSH's C{MaxStartups} and C{PerSourceMaxStartups}
    without the random early drop.  A connection over either cap is refused
    at once: a short message where the protocol lets the server speak first
    in the clear (the front end's C{busy_refusal}), then closed.  Another
    source still gets in while one is at its cap.

Each refusal and each closing is recorded through the C{record} callback
(the gateway passes L{hoopgw.sessions.SessionService.auth_failed}, whose
C{auth.failed} records are already rate-limited per source and in total)
and logged: the first of a minute at once, the rest as one summary line.

An authenticated connection costs nothing more: its wrapper hands reads
straight to the protocol (an instance attribute replaces the method), and
writes never went through it.  The API listener has no authentication: its
connections stay pending for their whole life, so each lasts at most
C{timeout}.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any, Callable, cast

from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocol, IProtocolFactory, IReactorTime, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from hoopgw.config import PreauthLimits
from hoopgw.model import SHUTDOWN_REASON, Source
from hoopgw.protocols import IStreamTransport

__all__ = ["BUSY_MESSAGE", "PreauthGuard", "api_refusal", "authenticated", "guarded", "source_key"]

log = Logger()

# How long a refused connection may take to flush its refusal before it is
# aborted (a client that does not read must not hold it).
REFUSAL_GRACE = 1.0
# Closings are logged one by one at most once per this many seconds per
# listener; the others in the window are summed up in one line.
LOG_WINDOW = 60.0

# What a connection is closed for: the log's and the records' wording.
_OVER_SOURCE = "source"
_OVER_LISTENER = "listener"
_DEADLINE = "deadline"
_BYTES = "bytes"


def source_key(address: IAddress | Any) -> str | None:
    """
    Whom a peer address counts as: its IPv4 address (an IPv4-mapped IPv6
    address too), or the /64 of an IPv6 address, which one client typically
    holds whole.  C{None} for an address without a host (a UNIX socket):
    such connections count only against the listener's cap.
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str) or not host:
        return None
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if ip.version == 6:
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


#: What a connection refused over a cap is told, where its protocol can say it.
BUSY_MESSAGE = (
    "hoopgw: too many connections are still authenticating from your address or on this listener; try again later"
)


def api_refusal() -> bytes:
    """The admin API's refusal over a cap: a 503 (the listener speaks HTTP in the clear)."""
    body = BUSY_MESSAGE.encode("utf-8") + b"\n"
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Retry-After: 10\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body


def _guard_of(protocol: Any) -> "_Guarded | None":
    """The guard below C{protocol}: its transport, or (under a TLS layer) its transport's transport."""
    transport = getattr(protocol, "transport", None)
    for _ in range(3):
        if transport is None:
            return None
        if type(transport) is _Guarded:
            return transport
        transport = transport.__dict__.get("transport") if hasattr(transport, "__dict__") else None
    return None


def authenticated(protocol: Any) -> None:
    """
    C{protocol}'s connection has authenticated: the listener's deadline no
    longer applies to it and it stops counting against the caps.  Safe to
    call more than once, and on a connection that is not guarded (unit
    tests, a front end of your own): then it does nothing.
    """
    guard = _guard_of(protocol)
    if guard is not None:
        guard.authenticated()


def guarded(protocol: Any) -> bool:
    """Whether C{protocol}'s connection is under a listener's pre-authentication limits."""
    return _guard_of(protocol) is not None


class _Guarded(ProtocolWrapper):
    """
    One accepted connection: the transport of the listener's protocol (or of
    its TLS layer), pending until L{authenticated}.
    """

    transport: IStreamTransport

    def __init__(self, factory: PreauthGuard, wrapped: IProtocol, key: str | None) -> None:
        super().__init__(factory, wrapped)
        self.guard = factory
        self.key = key  # None: not counted per source (yet, if the listener is proxied)
        self.counted = not factory.proxied  # a proxied connection is counted per source at its first bytes
        self.pending = True
        self.received = 0
        self.timer: IDelayedCall | None = None
        self.source: Source | None = None

    def makeConnection(self, transport: ITransport) -> None:
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        # Writes go straight to the transport, never through this wrapper:
        # its bound methods replace this wrapper's (instance attributes).
        setattr(self, "write", transport.write)
        setattr(self, "writeSequence", transport.writeSequence)
        guard = self.guard
        self.timer = guard.clock.callLater(guard.limits.timeout, self._expired)
        # (It provides what the transport provides: directlyProvides above.)
        self.wrappedProtocol.makeConnection(cast(ITransport, self))

    def _source(self) -> Source:
        if self.source is None:
            try:
                self.source = Source.from_address(self.guard.listener, self.transport.getPeer())
            except Exception:
                self.source = Source(self.guard.listener, "unknown")
        return self.source

    def dataReceived(self, data: bytes) -> None:
        if self.pending:
            if not self.counted:
                # Behind a PROXY-protocol listener the client's address is
                # known only now (the header is read before these bytes).
                self.counted = True
                if not self.guard.admit_late(self):
                    return
            self.received += len(data)
            if self.received > self.guard.limits.max_bytes:
                self.close(_BYTES)
                return
        self.wrappedProtocol.dataReceived(data)

    def authenticated(self) -> None:
        if not self.pending:
            return
        self._release()
        # Reads go straight to the protocol from now on (an instance
        # attribute replaces the method).
        setattr(self, "dataReceived", self.wrappedProtocol.dataReceived)

    def _release(self) -> None:
        self.pending = False
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self.guard.release(self)

    def _expired(self) -> None:
        self.timer = None
        if self.pending:
            self.close(_DEADLINE)

    def close(self, why: str) -> None:
        """Close a pending connection now (past its deadline or its byte budget, or at listener stop)."""
        if not self.pending:
            return
        self._release()
        self.guard.closed(self._source(), why)
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = 0
        if self.pending:
            self._release()
        timer, self.timer = self.timer, None  # (the abort of a client told the listener stopped)
        if timer is not None and timer.active():
            timer.cancel()
        wrapped = self.wrappedProtocol
        # Break the cycles through this wrapper (as ProtocolWrapper does).
        self.__dict__.pop("dataReceived", None)
        # (Twisted's ProtocolWrapper.connectionLost sets it None too, which
        # its annotation, IProtocol, leaves out.)
        self.wrappedProtocol = None  # type: ignore[assignment]
        wrapped.connectionLost(reason)


class _Refused(Protocol):
    """A connection over a cap: told so where the protocol allows it, then closed."""

    transport: IStreamTransport

    def __init__(self, guard: PreauthGuard, message: bytes) -> None:
        self.guard = guard
        self.message = message
        self.timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        if not self.message:
            self.transport.abortConnection()
            return
        self.transport.write(self.message)
        self.transport.loseConnection()
        self.timer = self.guard.clock.callLater(REFUSAL_GRACE, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()


class PreauthGuard(WrappingFactory[_Guarded]):
    """
    A listener's factory, wrapped: see the module docstring.

    @param listener: the listener's name (C{postgres}, C{ssh}, C{http},
        C{api}): the protocol of the records' source.
    @param record: called with the L{Source} and the reason of each refused
        or closed connection (C{SessionService.auth_failed}'s arguments).
    @param refusal: bytes written to a connection refused over a cap.
    @param proxied: the listener reads a PROXY protocol header (an
        C{haproxy:} endpoint): the client's address is known at its first
        bytes, not when it is accepted, so it is counted per source then.
    """

    protocol = _Guarded

    def __init__(
        self,
        wrapped: IProtocolFactory,
        *,
        listener: str,
        limits: PreauthLimits,
        clock: IReactorTime,
        record: Callable[[Source, str], object] | None = None,
        refusal: bytes = b"",
        proxied: bool = False,
    ) -> None:
        # Twisted leaves WrappingFactory's __init__ and doStop unannotated,
        # and for a generic class a call by name (setup.cfg's way round)
        # does not type-check either: these two calls are not checked.
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.listener = listener
        self.limits = limits
        self.clock = clock
        self.record = record
        self.refusal = refusal
        self.proxied = proxied
        self.pending: set[_Guarded] = set()
        self.per_source: dict[str, int] = {}
        self._logged: Counter[str] = Counter()
        self._log_timer: IDelayedCall | None = None

    # WrappingFactory's registry of every connection: pending ones are enough.
    def registerProtocol(self, protocol: ProtocolWrapper) -> None:
        pass

    def unregisterProtocol(self, protocol: ProtocolWrapper) -> None:
        pass

    # (WrappingFactory says it builds only its protocol class; as
    # IProtocolFactory allows, and as Twisted's own ThrottlingFactory does,
    # this one also answers another protocol or None.)
    def buildProtocol(self, addr: IAddress | None) -> _Guarded | _Refused | None:  # type: ignore[override]
        limits = self.limits
        key = None if self.proxied else source_key(addr)
        over = None
        if len(self.pending) >= limits.max_per_listener:
            over = _OVER_LISTENER
        elif key is not None and self.per_source.get(key, 0) >= limits.max_per_source:
            over = _OVER_SOURCE
        if over is not None:
            self.closed(Source.from_address(self.listener, addr), over)
            refused = _Refused(self, self.refusal)
            refused.factory = self
            return refused
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        protocol = self.protocol(self, wrapped, key)
        self.pending.add(protocol)
        if key is not None:
            self.per_source[key] = self.per_source.get(key, 0) + 1
        return protocol

    def admit_late(self, protocol: _Guarded) -> bool:
        """Count a proxied connection under its client's address, now known; refuse it if that is over the cap."""
        key = source_key(protocol.transport.getPeer())
        if key is None:
            return True
        if self.per_source.get(key, 0) >= self.limits.max_per_source:
            protocol.close(_OVER_SOURCE)
            return False
        protocol.key = key
        self.per_source[key] = self.per_source.get(key, 0) + 1
        return True

    def release(self, protocol: _Guarded) -> None:
        self.pending.discard(protocol)
        key = protocol.key
        if key is not None:
            count = self.per_source.get(key, 0) - 1
            if count > 0:
                self.per_source[key] = count
            else:
                self.per_source.pop(key, None)

    def closed(self, source: Source, why: str) -> None:
        """Record and log (within limits) a connection refused or closed before authenticating."""
        limits = self.limits
        reason = {
            _OVER_SOURCE: f"too many connections still authenticating from this source (max_per_source {limits.max_per_source})",
            _OVER_LISTENER: f"too many connections still authenticating on the listener (max_per_listener {limits.max_per_listener})",
            _DEADLINE: f"not authenticated within {limits.timeout:g} s of connecting (timeout)",
            _BYTES: f"sent more than {limits.max_bytes} bytes before authenticating (max_bytes)",
        }[why]
        if self.record is not None:
            try:
                self.record(source, reason)
            except Exception:
                log.failure("pre-authentication closing not recorded")
        if self._log_timer is None:
            log.info(
                "hoopgw {listener}: connection from {source} closed: {reason}",
                listener=self.listener,
                source=source.address,
                reason=reason,
            )
            self._log_timer = self.clock.callLater(LOG_WINDOW, self._log_summary)
        else:
            self._logged[why] += 1

    def _log_summary(self) -> None:
        self._log_timer = None
        counts, self._logged = self._logged, Counter()
        if counts:
            log.warn(
                "hoopgw {listener}: {total} more connections closed before authenticating in the last "
                "{window:g} s ({details})",
                listener=self.listener,
                total=sum(counts.values()),
                window=LOG_WINDOW,
                details=", ".join(f"{why}: {n}" for why, n in sorted(counts.items())),
            )
            self._log_timer = self.clock.callLater(LOG_WINDOW, self._log_summary)

    def doStop(self) -> None:
        """
        The listener stops: connections that never authenticated are closed
        (they could not get anywhere now), and no timer outlives it but
        the short one that aborts a client told why that has not gone.
        """
        for protocol in list(self.pending):
            timer, protocol.timer = protocol.timer, None
            if timer is not None and timer.active():
                timer.cancel()
            protocol.pending = False
            self.release(protocol)
            if protocol.transport is None:
                continue
            # Told why where its protocol can say it (PostgreSQL FATAL 57P01,
            # an SSH disconnect message), as sessions are; closed regardless.
            goodbye = getattr(protocol.wrappedProtocol, "listener_stopped", None)
            if goodbye is None:
                protocol.transport.abortConnection()
                continue
            goodbye(SHUTDOWN_REASON)
            protocol.timer = self.clock.callLater(REFUSAL_GRACE, protocol.transport.abortConnection)
        timer, self._log_timer = self._log_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        super().doStop()  # type: ignore[no-untyped-call]  # (see __init__)
