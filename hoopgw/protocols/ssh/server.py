"""
The client-facing SSH server: `ssh -p 12222 web1@gateway`.

The SSH user name names the connection.  A client authenticates with a
public key mapped in C{[[identity.ssh_keys]]} or enrolled with a token
(L{hoopgw.identity.enrolled}), or with a token as its password or
keyboard-interactive answer.  Only then, and before the client
is told it has logged in, the gateway opens the session (policy decides
C{session.open}) and logs in to the target with the connection's own
credentials, its host key pinned; a refusal at either step reaches the
client as a banner and a disconnect message that says why.

Each client connection gets its own cred L{Portal} (its checkers and realm
know the client's address, for the audit records).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, cast

from attrs import define, field, frozen
from twisted.conch.avatar import ConchUser
from twisted.conch.error import ConchError, ValidPublicKey
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import common, connection, factory, keys, transport, userauth
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials, ISSHPrivateKey, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from hoopgw.errors import AuditUnavailable, AuthenticationFailed, HoopgwError, NotPermitted
from hoopgw.interfaces import ISession, ISessionService, ITerminalRecorder
from hoopgw.identity.ssh import openssh_fingerprint
from hoopgw.keys import load_or_create_ed25519
from hoopgw.masking.stream import masked_recorder
from hoopgw.model import Action, Identity, Outcome, Source, Status
from hoopgw.protocols import _preauth, set_no_delay
from hoopgw.protocols.ssh.channels import (
    FilterFactory,
    RelayChannel,
    Reply,
    SessionChannel,
    WindowGate,
    open_forward_channel,
    open_session_channel,
)
from hoopgw.protocols.ssh.keepalive import KeepAlive, abort
from hoopgw.protocols.ssh.packets import FastPackets
from hoopgw.protocols.ssh.sftp_filter import sftp_filter
from hoopgw.recording.asciicast import AsciicastRecorder
from hoopgw.protocols.ssh.target import (
    ConnectFunction,
    HostKeyMismatch,
    TargetConfig,
    TargetConnection,
    TargetError,
    TCPConnector,
    connect_target,
)

if TYPE_CHECKING:
    from hoopgw.gateway import GatewayContext

__all__ = [
    "GatewayAvatar",
    "SSHFrontEnd",
    "SessionRefused",
    "host_key_path",
    "load_host_key",
    "make_front_end",
]

log = Logger()

TOKEN_PROMPT = b"hoopgw token: "


class SessionRefused(HoopgwError):
    """Authenticated, but no session: the message is shown to the client."""


def host_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / "keys" / "ssh_host_ed25519"


def load_host_key(data_dir: Path) -> keys.Key:
    """The gateway's SSH host key, generated (0600) on first start."""
    return keys.Key(load_or_create_ed25519(host_key_path(data_dir), what="SSH host key"))


# -- credentials and checkers ---------------------------------------------------


class IKeyboardInteractive(ICredentials):
    """A keyboard-interactive login: C{conversation(prompts)} asks the client."""

    username: bytes = Attribute("The SSH user name (the connection's name).")
    conversation: Callable[[list[tuple[bytes, bool]]], Deferred[list[bytes]]] = Attribute(
        "Asks the client C{(prompt, echo)}s; fires with its answers."
    )


@implementer(IKeyboardInteractive)
@frozen
class KeyboardInteractive:
    username: bytes
    conversation: Callable[[list[tuple[bytes, bool]]], Deferred[list[bytes]]]


@frozen
class Authenticated:
    """A checker's avatar id: who, and which connection (the SSH user name)."""

    identity: Identity
    user: str


@define
class LoginState:
    """
    One client connection's authentication attempts.  A public key that no
    identity maps (or whose enrolment expired) is recorded once, when the
    connection ends without a login: OpenSSH offers every key it has, and
    each unsigned offer is a query, not an attempt.
    """

    sessions: ISessionService
    source: Source
    user: str | None = None
    unknown_keys: dict[str, str] = field(factory=dict)  # fingerprint -> why it was refused
    authenticated: bool = False
    lost: bool = False

    def finish(self) -> None:
        self.lost = True
        if self.authenticated:
            return
        for fingerprint, reason in self.unknown_keys.items():
            self.sessions.auth_failed(
                source=self.source,
                reason=reason,
                method="publickey",
                user=self.user,
                key_fingerprint=fingerprint,
            )


def _user(credentials: Any) -> str:
    name: str = credentials.username.decode("utf-8", "replace")
    return name


@implementer(ICredentialsChecker)
@define
class PublicKeyChecker:
    """
    Verifies the signature as L{twisted.conch.checkers.SSHPublicKeyChecker};
    the key names the identity (mapped in the configuration, or enrolled).
    """

    login: LoginState
    credentialInterfaces = (ISSHPrivateKey,)

    # Twisted types an avatar id as bytes (or ANONYMOUS); this portal's realm
    # takes an Authenticated (identity and connection), so the override is
    # deliberate (as hoopgw.identity.cred's checkers).
    def requestAvatarId(self, credentials: Any) -> Deferred[Authenticated]:  # type: ignore[override]
        user = _user(credentials)
        self.login.user = user
        sessions = self.login.sessions
        fingerprint = openssh_fingerprint(credentials.blob)
        identity = sessions.identity.identity_for_public_key(credentials.blob)
        if identity is None:
            # An expired enrolment is refused as an unknown key is (the
            # client is told no more), its record saying why.
            reason = sessions.identity.public_key_refusal(credentials.blob)
            self.login.unknown_keys[fingerprint] = reason
            return fail(UnauthorizedLogin(reason))
        if credentials.signature is None:
            return fail(ValidPublicKey())  # "this key would do": the client signs next
        try:
            valid = keys.Key.fromString(credentials.blob).verify(credentials.signature, credentials.sigData)
        except Exception:
            valid = False  # a malformed signature is a bad one
        if not valid:
            sessions.auth_failed(
                source=self.login.source,
                reason="bad public key signature",
                method="publickey",
                user=user,
                key_fingerprint=fingerprint,
            )
            return fail(UnauthorizedLogin("bad signature"))
        return succeed(Authenticated(identity, user))


@implementer(ICredentialsChecker)
@define
class TokenChecker:
    """A token as the password or the keyboard-interactive answer."""

    login: LoginState
    credentialInterfaces = (IUsernamePassword, IKeyboardInteractive)

    # The avatar id is an Authenticated, as PublicKeyChecker's.
    def requestAvatarId(self, credentials: Any) -> Deferred[Authenticated]:  # type: ignore[override]
        user = _user(credentials)
        self.login.user = user
        answer: Deferred[bytes]
        if IKeyboardInteractive.providedBy(credentials):
            answer = credentials.conversation([(TOKEN_PROMPT, False)]).addCallback(
                lambda answers: answers[0] if answers else b""
            )
        else:
            answer = succeed(credentials.password)
        return answer.addCallback(self._verify, user)

    def _verify(self, answer: bytes, user: str) -> Deferred[Authenticated]:
        token = answer.decode("utf-8", "replace").strip()
        d = self.login.sessions.authenticate_token(token, source=self.login.source, user=user)

        def refused(failure: Failure) -> Failure:
            failure.trap(AuthenticationFailed)  # already audited, without the token
            return Failure(UnauthorizedLogin(cast(AuthenticationFailed, failure.value).reason))

        return d.addCallbacks(lambda identity: Authenticated(identity, user), refused)


# -- the realm: session and target leg before "login succeeded" ----------------------


@implementer(IRealm)
@define
class _Realm:
    front: "SSHFrontEnd"
    transport: "GatewayServerTransport"

    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: type[Interface]
    ) -> Deferred[tuple[type[Interface], object, Callable[[], None]]]:
        if IConchUser not in interfaces:
            return fail(NotImplementedError("only IConchUser avatars"))
        return Deferred.fromCoroutine(self._login(avatarId))

    async def _login(self, auth: Authenticated) -> tuple[type[Interface], object, Callable[[], None]]:
        front, login = self.front, self.transport.login
        sessions = front.sessions
        client = {"user": auth.user, "software": self.transport.otherVersionString.decode("utf-8", "replace")}
        try:
            session = await sessions.open(
                auth.identity, auth.user, kind="ssh", source=login.source, client=client
            )
        except NotPermitted as e:
            raise SessionRefused(f"session refused: {e}") from None
        except AuditUnavailable:
            raise SessionRefused("the gateway's audit log is unavailable, so it refuses all traffic") from None
        config = front.targets.get(auth.user)
        try:
            if config is None:
                raise TargetError(f"connection {auth.user!r} has no target settings")
            target: TargetConnection = await connect_target(config, front.connect, clock=front.reactor)
        except TargetError as e:
            details: dict[str, Any] = {}
            if isinstance(e, HostKeyMismatch):
                details["target_host_key"] = {"expected": list(e.expected), "presented": e.presented}
            # One line for the operator, as PostgreSQL's front end says it (the client and session.end have it too).
            log.warn("ssh session {session} ({connection}): cannot connect to the target: {error}",
                     session=session.id, connection=auth.user, error=str(e))
            session.close(status="failed", error=str(e), details=details)
            raise SessionRefused(f"cannot connect to {auth.user!r}: {e}") from None
        avatar = GatewayAvatar(front=front, session=session, target=target, client=self.transport, config=config)
        if login.lost:  # the client gave up while we connected
            avatar.logout()
            raise SessionRefused("client disconnected")
        if session.closed:  # the gateway ended it while we connected (its access grant ended)
            avatar.logout()
            raise SessionRefused(f"session ended: {session.termination or 'closed'}")
        login.authenticated = True
        # The listener's pre-authentication deadline and caps stop here.
        _preauth.authenticated(self.transport)
        return IConchUser, avatar, avatar.logout


# -- the avatar: one logged-in client ------------------------------------------------


@implementer(IConchUser)
class GatewayAvatar(ConchUser):
    """
    One client's session: pairs its channels with the target's and ends
    the session (with byte counts and the last exit status) on logout.
    """

    def __init__(
        self,
        *,
        front: SSHFrontEnd,
        session: ISession,
        target: TargetConnection,
        client: GatewayServerTransport,
        config: TargetConfig | None = None,
    ) -> None:
        ConchUser.__init__(self)  # by name: Conch leaves it unannotated (untyped_calls_exclude, setup.cfg)
        self.config = config  # the connection's keep-alive settings (both legs)
        self.client_error: str | None = None  # why the gateway ended the client leg
        self.front = front
        self.session = session
        self.target = target
        self.client = client
        session.on_terminate = self._terminated
        self.filters: Mapping[str, FilterFactory] = front.filters
        self.channels: set[RelayChannel] = set()
        self.exit_status: int | None = None
        self.target_error: str | None = None
        self._target_gone = False
        target.on_lost = self._target_lost

    def start_recording(self, channel: SessionChannel, *, command: str | None = None) -> ITerminalRecorder | None:
        """
        Record a channel (a terminal, or an exec with record_exec_output) in
        C{recordings/<session>-<channel>.cast} (L{ISession.open_recording}).
        The session's first is its recording (its SHA-256 in C{session.end});
        any later one (C{ssh -tt} twice over one connection) is listed with
        its SHA-256 in C{session.end}'s C{recordings}.
        """
        pty = channel.pty or {}
        settings = self.session.connection.settings

        def make(path: str, fd: int) -> ITerminalRecorder:
            recording = AsciicastRecorder(
                path,
                fd=fd,
                clock=self.front.reactor,
                # 0 means "unknown" in a pty-req; players need a size.
                width=pty.get("cols") or 80,
                height=pty.get("rows") or 24,
                term=pty.get("term") or None,
                command=command,
                title=f"{self.session.identity.subject} on {self.session.connection.name}",
                record_input=bool(getattr(settings, "record_input", False)),
                on_failure=channel.recording_failed,
            )
            return masked_recorder(recording, self.session.masks)  # what is stored is masked, for everyone

        return self.session.open_recording(str(channel.id), make)

    def open_channel(self, kind: bytes, window: int, max_packet: int, data: bytes) -> Deferred[RelayChannel]:
        if kind == b"session":
            return open_session_channel(self, window, max_packet).addCallback(self._track)
        if kind == b"direct-tcpip":
            return maybeDeferred(open_forward_channel, self, window, max_packet, data).addCallback(self._track)
        return fail(ConchError(connection.OPEN_UNKNOWN_CHANNEL_TYPE, "unknown channel type"))

    def _track(self, channel: RelayChannel) -> RelayChannel:
        self.channels.add(channel)
        return channel

    def channel_closed(self, channel: RelayChannel) -> None:
        self.channels.discard(channel)
        status = getattr(channel, "exit_status", None)
        if status is not None:
            self.exit_status = status
        if self._target_gone and not self.channels:
            self._disconnect_client()

    def gotGlobalRequest(self, requestType: bytes, data: bytes) -> int:
        if requestType in (b"tcpip-forward", b"streamlocal-forward@openssh.com"):
            # ssh -R would let the target reach into the client's network.
            d = self.session.check(Action(kind="ssh.forward.remote", input=requestType.decode("ascii", "replace")))
            d.addCallback(
                lambda handle: handle.finish(
                    Outcome(status=Status.blocked, error="remote forwarding is not offered through the gateway")
                )
            )
            d.addErrback(lambda f: log.failure("refused remote forward not audited", f))
        return 0  # keepalive@openssh.com, no-more-sessions@openssh.com: "no" is fine

    def _target_lost(self, reason: str | None) -> None:
        self._target_gone = True
        self.target_error = reason
        # Each channel closes after its data drains (the target leg has
        # closed its channels); the client goes when the last one has.
        if not self.channels:
            self._disconnect_client()

    def _terminated(self, reason: str) -> None:
        """The gateway ends the session (its access grant ended): the client reads why in the disconnect message."""
        self.client_error = reason
        if self.client.transport is not None and not getattr(self.client, "_lost", False):
            self.client.sendDisconnect(transport.DISCONNECT_BY_APPLICATION, f"hoopgw: {reason}".encode("utf-8"))
        else:
            self.session.close()

    def _disconnect_client(self) -> None:
        if self.client.transport is not None and not getattr(self.client, "_lost", False):
            self.client.sendDisconnect(transport.DISCONNECT_BY_APPLICATION, b"the target closed the connection")

    def logout(self) -> None:
        self.target.on_lost = None
        if not self._target_gone:
            self.target.close()
        details: dict[str, Any] = {"exit_status": self.exit_status} if self.exit_status is not None else {}
        error = self.target_error or self.client_error
        if error is not None:
            self.session.close(status="failed", error=error, details=details or None)
        else:
            self.session.close(status="closed", details=details or None)


# -- SSH services ------------------------------------------------------------------------


class GatewayServerConnection(WindowGate, connection.SSHConnection):
    """
    The connection service facing the client.  Channel opens are answered
    once the target has opened its side (and, for forwards, policy has
    decided); request replies may carry an action to run after the reply.
    """

    keepalive: KeepAlive | None = None
    transport: GatewayServerTransport

    # (Conch's methods by class name: it leaves them unannotated, see
    # untyped_calls_exclude in setup.cfg; WindowGate has none of them.)
    def serviceStarted(self) -> None:
        connection.SSHConnection.serviceStarted(self)
        avatar = getattr(self.transport, "avatar", None)
        config = getattr(avatar, "config", None)
        if config is not None:
            self.keepalive = KeepAlive(
                self,
                clock=self.transport.factory.reactor,
                interval=config.keepalive_interval,
                count_max=config.keepalive_count_max,
                peer="client",
                on_dead=self._dead,
            )
            self.keepalive.start()

    def _dead(self, reason: str) -> None:
        self.transport.avatar.client_error = reason  # for session.end
        abort(self.transport)

    def serviceStopped(self) -> None:
        self.stopped = True
        if self.keepalive is not None:
            self.keepalive.stop()
        connection.SSHConnection.serviceStopped(self)

    def ssh_CHANNEL_OPEN(self, packet: bytes) -> None:
        kind, rest = common.getNS(packet)
        sender, window, max_packet = struct.unpack(">3L", rest[:12])
        d = maybeDeferred(self.transport.avatar.open_channel, kind, window, max_packet, rest[12:])
        d.addCallbacks(self._opened, self._open_failed, callbackArgs=(sender,), errbackArgs=(sender,))
        d.addErrback(lambda f: log.failure("ssh channel open failed", f))

    def _opened(self, channel: RelayChannel, sender: int) -> None:
        if getattr(self, "stopped", False):
            channel.target.loseConnection()
            return
        local = self.localChannelID
        self.localChannelID += 1
        # (Conch's SSHConnection sets it so too; the type Conch infers from
        # SSHChannel's "self.id = None" leaves the number out.)
        channel.id = local  # type: ignore[assignment]
        channel.conn = self
        self.channels[local] = channel
        self.channelsToRemoteChannel[channel] = sender
        self.localToRemoteChannel[local] = sender
        self.transport.sendPacket(
            connection.MSG_CHANNEL_OPEN_CONFIRMATION,
            struct.pack(">4L", sender, local, channel.localWindowSize, channel.localMaxPacket),
        )
        channel.channelOpen(b"")

    def _open_failed(self, failure: Failure, sender: int) -> None:
        if getattr(self, "stopped", False):
            return
        code: int
        text: object
        if failure.check(ConchError):
            args = failure.value.args if failure.value is not None else ()
            first, second = args[0], args[1] if len(args) > 1 else None
            number, text = (first, second) if isinstance(first, int) else (second, first)
            code = number if isinstance(number, int) else connection.OPEN_CONNECT_FAILED
        else:
            log.failure("ssh channel open failed", failure)
            code, text = connection.OPEN_CONNECT_FAILED, "the gateway could not open the channel"
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.transport.sendPacket(
            connection.MSG_CHANNEL_OPEN_FAILURE,
            struct.pack(">2L", sender, code) + common.NS(str(text or "").encode("utf-8")) + common.NS(b""),
        )

    def ssh_CHANNEL_REQUEST(self, packet: bytes) -> None:
        local = struct.unpack(">L", packet[:4])[0]
        request, rest = common.getNS(packet[4:])
        want_reply = rest[0:1] != b"\x00"
        channel = self.channels[local]
        channel.want_reply = want_reply
        d = maybeDeferred(channel.requestReceived, request, rest[1:])

        def crashed(failure: Failure) -> bool:
            log.failure("ssh channel request {request} failed", failure, request=request)
            return False

        d.addErrback(crashed)
        d.addCallback(self._answer, channel, want_reply)
        d.addErrback(lambda f: log.failure("ssh channel reply failed", f))

    def _answer(self, result: Any, channel: RelayChannel, want_reply: bool) -> None:
        reply = result if isinstance(result, Reply) else Reply(bool(result))
        if want_reply and not channel.localClosed and channel in self.channelsToRemoteChannel:
            self.transport.sendPacket(
                connection.MSG_CHANNEL_SUCCESS if reply.ok else connection.MSG_CHANNEL_FAILURE,
                struct.pack(">L", self.channelsToRemoteChannel[channel]),
            )
        if reply.then is not None:
            reply.then()


MSG_USERAUTH_INFO_REQUEST = 60


class GatewayUserAuthServer(userauth.SSHUserAuthServer):
    """
    Public key, password and keyboard-interactive (the token as the
    answer), through this connection's portal.  A refused session ends the
    connection with its reason rather than inviting another attempt.
    """

    # As OpenSSH's LoginGraceTime, for a transport outside the gateway's
    # listeners; a listener's connections have its [preauth] timeout instead,
    # from the moment they are accepted (hoopgw.protocols._preauth).
    loginTimeout = 120
    interfaceToMethod = {
        ISSHPrivateKey: b"publickey",
        IUsernamePassword: b"password",
        IKeyboardInteractive: b"keyboard-interactive",
    }

    transport: GatewayServerTransport

    def serviceStarted(self) -> None:
        # As Conch's, with this connection's portal instead of the factory's.
        self.clock = self.transport.factory.reactor
        self._conversation: Deferred[list[bytes]] | None = None
        self.authenticatedWith = []
        self.loginAttempts = 0
        self.user = None
        self.nextService = None
        self.portal = self.transport.portal
        self.supportedAuthentications = [
            self.interfaceToMethod[i] for i in self.portal.listCredentialsInterfaces() if i in self.interfaceToMethod
        ]
        if not self.transport.isEncrypted("in"):
            self.supportedAuthentications = [
                m for m in self.supportedAuthentications if m not in (b"password", b"keyboard-interactive")
            ]
        if _preauth.guarded(self.transport):
            # (Conch's own code sets it None too, which the type it infers
            # from its callLater leaves out.)
            self._cancelLoginTimeout = None  # type: ignore[assignment]
        else:
            self._cancelLoginTimeout = self.clock.callLater(self.loginTimeout, self.timeoutAuthentication)

    def serviceStopped(self) -> None:
        userauth.SSHUserAuthServer.serviceStopped(self)  # by name: unannotated
        conversation, self._conversation = self._conversation, None
        if conversation is not None:
            conversation.errback(UnauthorizedLogin("client disconnected"))

    def auth_keyboard_interactive(self, packet: bytes) -> Deferred[Any]:
        if self._conversation is not None:
            return fail(ConchError("keyboard-interactive already in progress"))
        user = self.user
        assert user is not None  # (ssh_USERAUTH_REQUEST sets it before any method)
        credentials = KeyboardInteractive(user, self._converse)
        d: Deferred[Any] = self.portal.login(credentials, None, IConchUser).addErrback(self._ebPassword)
        return d

    def _converse(self, prompts: list[tuple[bytes, bool]]) -> Deferred[list[bytes]]:
        data = common.NS(b"") + common.NS(b"") + common.NS(b"") + struct.pack(">L", len(prompts))
        for prompt, echo in prompts:
            data += common.NS(prompt) + (b"\x01" if echo else b"\x00")
        self.transport.sendPacket(MSG_USERAUTH_INFO_REQUEST, data)
        conversation: Deferred[list[bytes]] = Deferred()
        self._conversation = conversation
        return conversation

    def ssh_USERAUTH_INFO_RESPONSE(self, packet: bytes) -> None:
        conversation, self._conversation = self._conversation, None
        if conversation is None:
            reason = "unexpected info response"
            login = self.transport.login
            login.sessions.refused(
                login.source,
                transport.DISCONNECT_PROTOCOL_ERROR,
                reason,
                request={"message": "USERAUTH_INFO_RESPONSE"},
                user=login.user,
            )
            self.transport.sendDisconnect(transport.DISCONNECT_PROTOCOL_ERROR, reason.encode("ascii"))
            return
        try:
            count = struct.unpack(">L", packet[:4])[0]
            answers = list(common.getNS(packet[4:], count)[:count]) if count else []
        except (struct.error, IndexError, ValueError):
            conversation.errback(UnauthorizedLogin("malformed keyboard-interactive response"))
            return
        conversation.callback(answers)

    def _ebBadAuth(self, reason: Failure) -> None:
        if reason.check(SessionRefused):
            message = str(reason.value)
            self.transport.sendPacket(
                userauth.MSG_USERAUTH_BANNER, common.NS(f"hoopgw: {message}\r\n".encode("utf-8")) + common.NS(b"")
            )
            self.transport.sendDisconnect(
                transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, f"hoopgw: {message}".encode("utf-8")[:400]
            )
            return
        userauth.SSHUserAuthServer._ebBadAuth(self, reason)  # by name: unannotated


class GatewayServerTransport(FastPackets, transport.SSHServerTransport):
    """Keeps the connection's login attempts and portal."""

    factory: SSHFrontEnd
    avatar: GatewayAvatar  # (once logged in)

    if TYPE_CHECKING:
        # Conch leaves it unannotated: its type, for the checker only.
        def sendDisconnect(self, reason: int, desc: bytes) -> None: ...

        def isEncrypted(self, direction: str = "out") -> bool: ...

    def connectionMade(self) -> None:
        set_no_delay(self.transport)  # a keystroke's echo must not wait for the client's delayed ACK
        transport.SSHServerTransport.connectionMade(self)  # by name: unannotated
        self._lost = False
        source = Source.from_address("ssh", self.transport.getPeer())
        self.login = LoginState(sessions=self.factory.sessions, source=source)
        self.portal = self.factory.portal_for(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._lost = True
        super().connectionLost(reason)
        self.login.finish()

    def listener_stopped(self, reason: str) -> None:
        """The gateway stops while this client is still logging in: a disconnect message that says so."""
        if self._lost:
            return
        if self.gotVersion:
            self.sendDisconnect(transport.DISCONNECT_BY_APPLICATION, f"hoopgw: {reason}".encode("utf-8"))
        else:  # no version line yet: nothing it could read
            self.transport.loseConnection()


class SSHFrontEnd(factory.SSHFactory):
    """
    One per listener.  Host key, target settings and secrets are read at
    start-up (L{make_front_end}); nothing blocks per login.

    @ivar filters: subsystem name -> L{FilterFactory}: the seam where the
        SFTP auditor sits (no entry: the subsystem's bytes pass unchanged).
    """

    protocol = GatewayServerTransport
    services = {b"ssh-userauth": GatewayUserAuthServer, b"ssh-connection": GatewayServerConnection}

    def __init__(
        self,
        *,
        sessions: ISessionService,
        host_key: keys.Key,
        targets: Mapping[str, TargetConfig],
        reactor: Any,
        connect: ConnectFunction | None = None,
        filters: Mapping[str, FilterFactory] | None = None,
    ) -> None:
        self.sessions = sessions
        self.host_key = host_key
        self.targets = dict(targets)
        self.reactor = reactor
        self.connect = connect or TCPConnector(reactor)
        self.filters = dict(filters or {})
        self.publicKeys = {host_key.sshType(): host_key.public()}
        self.privateKeys = {host_key.sshType(): host_key}
        self.primes = None  # fixed groups and curve25519 only: no moduli file to read

    def portal_for(self, client: GatewayServerTransport) -> Portal:
        portal = Portal(_Realm(self, client))
        portal.registerChecker(PublicKeyChecker(client.login))
        portal.registerChecker(TokenChecker(client.login))
        return portal


def make_front_end(context: GatewayContext) -> SSHFrontEnd:
    """
    The C{ssh} listener's factory (L{IFrontEnd.build
    <hoopgw.interfaces.IFrontEnd.build>}, through
    L{hoopgw.protocols.ssh.plugin}): loads (or creates) the host key in C{data_dir/keys/ssh_host_ed25519} and reads
    every SSH connection's key or password and pinned host key now.
    Terminal recordings go where the sessions keep them (L{ISession.open_recording}).
    """
    sessions = context.sessions
    data_dir = Path(context.config.gateway.data_dir)
    targets = {
        c.name: TargetConfig.from_connection(c) for c in sessions.connections.values() if c.kind == "ssh"
    }
    return SSHFrontEnd(
        sessions=sessions,
        host_key=load_host_key(data_dir),
        targets=targets,
        reactor=context.reactor,
        filters={"sftp": sftp_filter},
    )
