"""
The gateway's own SSH client leg to a connection's target.

The gateway logs in with the connection's credentials (a key or a password
from the configuration, never the client's), and only to a host that shows
the pinned host key: C{host_key} in the connection's settings, or an entry
of its C{known_hosts} file.  Any other key ends the attempt with
L{HostKeyMismatch} naming both fingerprints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from attrs import define, frozen
from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.ssh import connection, transport, userauth
from twisted.conch.ssh.keys import BadKeyError, EncryptedKeyError, Key
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from hoopgw.errors import ConfigError, HoopgwError
from hoopgw.identity.ssh import openssh_fingerprint
from hoopgw.model import Connection
from hoopgw.protocols.ssh.channels import WindowGate
from hoopgw.protocols.ssh.keepalive import KeepAlive, abort
from hoopgw.protocols.ssh.packets import FastPackets
from hoopgw.protocols import set_no_delay
from hoopgw.protocols.ssh.settings import SSHSettings

__all__ = [
    "HostKeyMismatch",
    "HostKeyPin",
    "TargetConfig",
    "TargetConnection",
    "TargetError",
    "TargetTransport",
    "connect_target",
]

log = Logger()


class TargetError(HoopgwError):
    """The target could not be reached or refused the gateway's login; safe to show."""


class HostKeyMismatch(TargetError):
    """The target showed a host key other than the pinned one(s)."""

    def __init__(self, expected: tuple[str, ...], presented: str) -> None:
        self.expected = expected
        self.presented = presented
        super().__init__(
            f"the target's host key {presented} is not the pinned key "
            f"({', '.join(expected) or 'none pinned'}); refusing to connect"
        )


@frozen
class HostKeyPin:
    """The host keys (wire blobs) the target may show; anything else is refused."""

    keys: frozenset[bytes]
    source: str  # "host_key" or "known_hosts <path>", for messages

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(sorted(openssh_fingerprint(blob) for blob in self.keys))

    def check(self, blob: bytes) -> None:
        """@raise HostKeyMismatch: unless C{blob} is pinned."""
        if blob not in self.keys:
            raise HostKeyMismatch(self.fingerprints, openssh_fingerprint(blob))

    @classmethod
    def from_settings(cls, settings: SSHSettings, *, where: str) -> "HostKeyPin":
        """Start-up only (reads a known_hosts file)."""
        if settings.host_key is not None:
            key = Key.fromString(settings.host_key.encode("utf-8"))
            return cls(frozenset({key.blob()}), "host_key")
        if settings.known_hosts is None:
            # config.py refuses this; a pin is never optional.
            raise ConfigError(None, where, "missing host key check; expected host_key or known_hosts")
        return cls(_known_host_keys(settings.known_hosts, settings.host, settings.port), f"known_hosts {settings.known_hosts}")


def _known_host_keys(path: Path, host: str, port: int) -> frozenset[bytes]:
    # OpenSSH writes "[host]:port" for any port but 22.
    name = host if port == 22 else f"[{host}]:{port}"
    entries = KnownHostsFile.fromPath(FilePath(str(path)))
    keys: set[bytes] = set()
    for entry in entries.iterentries():
        key = getattr(entry, "publicKey", None)  # (not every entry kind has one)
        if key is not None and entry.matchesHost(name.encode("utf-8")):
            keys.add(key.blob())
    return frozenset(keys)


@frozen
class TargetConfig:
    """Everything needed to reach one SSH connection's target, read at start-up."""

    name: str
    host: str
    port: int
    user: str
    pin: HostKeyPin
    key: Key | None = None
    password: str | None = None
    keepalive_interval: float = 15
    keepalive_count_max: int = 3
    login_timeout: float = 30

    @classmethod
    def from_connection(cls, connection: Connection) -> "TargetConfig":
        """
        Read the connection's secret and host key pin now (start-up, blocking).

        @raise ConfigError: naming the connection, never the secret.
        """
        settings: SSHSettings = connection.settings
        where = f"connections[{connection.name}]"
        key = password = None
        if settings.key is not None:
            text = settings.key.read()
            try:
                key = Key.fromString(text.encode("utf-8") + b"\n")
            except EncryptedKeyError:
                raise ConfigError(None, f"{where}.key_file", "expected an unencrypted private key, got an encrypted one") from None
            except (BadKeyError, ValueError, TypeError, IndexError):
                raise ConfigError(None, f"{where}.key_file", "expected an OpenSSH or PEM private key") from None
            if key.isPublic():
                raise ConfigError(None, f"{where}.key_file", "expected a private key, got a public key")
        elif settings.password is not None:
            password = settings.password.read()
        try:
            pin = HostKeyPin.from_settings(settings, where=where)
        except (BadKeyError, ValueError, OSError) as e:
            raise ConfigError(None, f"{where}.host_key", f"cannot read the pinned host key: {e}") from None
        if not pin.keys:
            raise ConfigError(
                None, f"{where}.known_hosts", f"no entry for {settings.host}:{settings.port} in {settings.known_hosts}"
            )
        return cls(
            name=connection.name,
            host=settings.host,
            port=settings.port,
            user=settings.user,
            pin=pin,
            key=key,
            password=password,
            keepalive_interval=settings.keepalive_interval,
            keepalive_count_max=settings.keepalive_count_max,
            login_timeout=settings.login_timeout,
        )


class _UserAuth(userauth.SSHUserAuthClient):
    """Offers the connection's one key or password, once."""

    preferredOrder = [b"publickey", b"password"]
    transport: TargetTransport

    # (Conch's methods are called by class name: it leaves them unannotated,
    # see untyped_calls_exclude in setup.cfg.)
    def __init__(self, config: TargetConfig, instance: TargetConnection) -> None:
        userauth.SSHUserAuthClient.__init__(self, config.user.encode("utf-8"), instance)
        self.config = config
        self._offered_key = False
        self._offered_password = False

    def getPublicKey(self) -> Key | None:
        if self.config.key is None or self._offered_key:
            return None
        self._offered_key = True
        public: Key = self.config.key.public()
        return public

    def getPrivateKey(self) -> Deferred[Key]:
        assert self.config.key is not None
        return succeed(self.config.key)

    def getPassword(self, prompt: Any = None) -> Deferred[bytes] | None:
        if self.config.password is None or self._offered_password:
            return None
        self._offered_password = True
        return succeed(self.config.password.encode("utf-8"))

    def auth_keyboard_interactive(self) -> bool:
        # The gateway has no one to type answers; skip to the end quickly.
        return False

    def ssh_USERAUTH_FAILURE(self, packet: bytes) -> Any:
        # Remember why the login ends, should the methods run out.
        self.transport.failure_reason = "the target refused the gateway's credentials"
        return userauth.SSHUserAuthClient.ssh_USERAUTH_FAILURE(self, packet)


class TargetConnection(WindowGate, connection.SSHConnection):
    """
    The connection service on the target leg.  C{on_lost} is called once
    when the target connection ends (after every channel's C{closed}).
    """

    transport: TargetTransport

    # (Conch's methods by class name, as in _UserAuth.)
    def __init__(self) -> None:
        connection.SSHConnection.__init__(self)
        self.ready: Deferred[TargetConnection] = Deferred()
        self.on_lost: Callable[[str | None], object] | None = None
        self.keepalive: KeepAlive | None = None

    def serviceStarted(self) -> None:
        connection.SSHConnection.serviceStarted(self)
        transport = self.transport
        transport.connection_service = self
        config = transport.config
        if transport.clock is not None:
            self.keepalive = KeepAlive(
                self,
                clock=transport.clock,
                interval=config.keepalive_interval,
                count_max=config.keepalive_count_max,
                peer="target",
                on_dead=self._dead,
            )
            self.keepalive.start()
        self.ready.callback(self)

    def _dead(self, reason: str) -> None:
        self.transport.failure_reason = reason  # for session.end
        abort(self.transport)

    def serviceStopped(self) -> None:
        if self.keepalive is not None:
            self.keepalive.stop()
        connection.SSHConnection.serviceStopped(self)

    def gotGlobalRequest(self, requestType: bytes, data: bytes) -> int:
        # hostkeys-00@openssh.com and the like: nothing to do for a proxy.
        return 0

    def close(self) -> None:
        """End the target connection (the client is gone)."""
        if self.transport is not None:
            self.transport.loseConnection()


class TargetTransport(FastPackets, transport.SSHClientTransport):
    """
    The client transport of the target leg.  C{ready} fires with the
    L{TargetConnection} once logged in, or fails with a L{TargetError}.
    """

    if TYPE_CHECKING:
        # Conch leaves it unannotated: its type, for the checker only.
        def loseConnection(self) -> None: ...

    def __init__(self, config: TargetConfig, clock: IReactorTime | None = None) -> None:
        self.config = config
        self.clock = clock  # for keep-alives; None: none sent
        self.ready: Deferred[TargetConnection] = Deferred()
        self.failure_reason: str | None = None
        self.mismatch: HostKeyMismatch | None = None
        self.connection_service: TargetConnection | None = None
        self.presented_fingerprint: str | None = None

    def connectionMade(self) -> None:
        set_no_delay(self.transport)  # as on the client's leg
        transport.SSHClientTransport.connectionMade(self)  # (by name: unannotated)

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Deferred[bool]:
        # `fingerprint` is MD5; the pin compares whole keys, messages use SHA-256.
        self.presented_fingerprint = openssh_fingerprint(hostKey)
        try:
            self.config.pin.check(hostKey)
        except HostKeyMismatch as e:
            self.mismatch = e
            return fail(e)
        return succeed(True)

    def connectionSecure(self) -> None:
        service = TargetConnection()
        service.ready.addCallback(self._logged_in)
        self.requestService(_UserAuth(self.config, service))

    def _logged_in(self, service: TargetConnection) -> None:
        if not self.ready.called:
            self.ready.callback(service)

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        self.failure_reason = f"the target disconnected: {description.decode('utf-8', 'replace')}"
        transport.SSHClientTransport.receiveError(self, reasonCode, description)  # (by name: unannotated)

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        if not self.ready.called:
            error: TargetError = self.mismatch or TargetError(
                self.failure_reason or "the target closed the connection during login"
            )
            self.ready.errback(error)
            return
        service = self.connection_service
        if service is not None and service.on_lost is not None:
            on_lost, service.on_lost = service.on_lost, None
            on_lost(self.failure_reason)


ConnectFunction = Callable[[TargetConfig, TargetTransport], "Deferred[Any]"]


@define
class TCPConnector:
    """Connects target legs over TCP (tests inject another connector)."""

    reactor: Any
    timeout: float = 10.0

    def __call__(self, config: TargetConfig, protocol: TargetTransport) -> Deferred[TargetTransport]:
        endpoint = HostnameEndpoint(self.reactor, config.host, config.port, timeout=self.timeout)
        connecting: Deferred[TargetTransport] = connectProtocol(endpoint, protocol)
        return connecting


def connect_target(
    config: TargetConfig, connect: ConnectFunction, *, clock: IReactorTime | None = None
) -> Deferred[TargetConnection]:
    """
    Log in to the target: TCP connect, key exchange and authentication must
    finish within C{config.login_timeout} seconds (given a C{clock}), or
    the attempt is abandoned (a target that accepts the connection and then
    says nothing would otherwise hold the client's login for ever).

    @param clock: an L{IReactorTime} for the login timeout and the target
        leg's keep-alives.
    @return: L{Deferred} firing with a logged-in L{TargetConnection}, or
        failing with L{TargetError} (L{HostKeyMismatch} for a wrong key).
    """
    protocol = TargetTransport(config, clock)
    d = connect(config, protocol)
    expired: list[str] = []
    timer: IDelayedCall | None = None

    def expire() -> None:
        expired.append(f"the target did not complete the gateway's login within {config.login_timeout:g} s")
        protocol.failure_reason = expired[0]
        if protocol.transport is not None:
            abort(protocol)  # connectionLost fails protocol.ready with the reason
        else:
            d.cancel()

    if clock is not None and config.login_timeout > 0:
        timer = clock.callLater(config.login_timeout, expire)

    def unreachable(failure: Failure) -> Failure:
        if expired and not failure.check(HostKeyMismatch):
            return Failure(TargetError(expired[0]))
        if failure.check(TargetError):
            return failure
        return Failure(TargetError(f"cannot reach the target {config.host}:{config.port}: {failure.getErrorMessage()}"))

    def done(result: Any) -> Any:
        if timer is not None and timer.active():
            timer.cancel()
        return result

    d.addCallback(lambda _: protocol.ready)
    d.addErrback(unreachable)
    d.addBoth(done)
    return d
