"""
Assembly: one L{Gateway} service built from a L{Config}, holding the shared
services and one listener per configured protocol.

Construction does all the start-up I/O (reading policies, keys, the audit
log's tail) so that a broken configuration stops C{twistd} with one precise
message before the reactor runs.
"""

from __future__ import annotations

import ipaddress
import os
from importlib.metadata import version as _version
import site
import sys
import sysconfig
from collections.abc import Generator
from pathlib import Path
from typing import Any

from attrs import define
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

import hoopgw
from hoopgw.audit import events
from hoopgw.audit.log import AuditLog
from hoopgw.config import API_LISTENER, Config, config_sha256
from hoopgw.errors import AuditUnavailable, ConfigError, HoopgwError
from hoopgw.frontends import installed
from hoopgw.identity.enrolled import SSHKeyEnrolment
from hoopgw.identity.service import IdentityService
from hoopgw.interfaces import ISessionService
from hoopgw.masking.engine import load_key
from hoopgw.masking.service import MaskingService
from hoopgw.model import SHUTDOWN_REASON
from hoopgw.grants import GrantService
from hoopgw.reviews import ReviewService
from hoopgw.reviews.webhook import WebhookNotifier
from hoopgw.metrics import Metrics
from hoopgw.policy.rules import PolicySet
from hoopgw.policy.service import PolicyService
from hoopgw.protocols import _preauth
from hoopgw.sessions import SessionService
from hoopgw.store import FILENAME as STORE_FILENAME
from hoopgw.store.sqlite import SQLiteStore
from hoopgw.tls import client_trust, ensure_certificate

log = Logger()

__version__ = _version("hoopgw")


def shipped_policies() -> Path:
    """
    The policy folder installed with hoopgw (``<data>/share/hoopgw/policies``
    under whichever install scheme pip used: prefix, user, Debian's
    /usr/local), or the checkout's ``policies/`` when running from source.
    """
    roots = [Path(sys.prefix), Path(site.getuserbase())]
    roots += [Path(sysconfig.get_paths(scheme)["data"]) for scheme in sysconfig.get_scheme_names()]
    for root in roots:
        candidate = root / "share" / "hoopgw" / "policies"
        if (candidate / "default.toml").is_file():
            return candidate
    return Path(hoopgw.__file__).resolve().parent.parent / "policies"


def policies_dir(config: Config) -> Path:
    return config.gateway.policies if config.gateway.policies is not None else shipped_policies()


@define
class GatewayContext:
    """What a protocol front end needs to build its factory (L{hoopgw.interfaces.IFrontEnd.build})."""

    config: Config
    sessions: ISessionService
    reactor: Any
    tls_cert: Path
    tls_key: Path


# Why the sessions live when the gateway stops end (shown to clients, in session.end).


class _Lifecycle(Service):
    """
    Writes the gateway's own evidence: C{policy.loaded} and C{gateway.start}
    records once the listeners are bound, C{gateway.stop} (after ending live
    sessions) first thing at stop.
    """

    # An operator's SIGTERM must not wait forever on a session that cannot
    # finish its recording; its session.end still says it was terminated.
    close_timeout = 10.0

    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway

    def startService(self) -> None:
        Service.startService(self)
        gateway = self.gateway
        # Warm the issuers' key caches; failures are logged and retried on use.
        gateway.identity.prefetch()
        gateway.record_policies(gateway.policy.policy_set, reason="start")
        gateway.append(events.GATEWAY_START, events.gateway_record(gateway.describe()))
        # Queued on the store's one thread before any session of this
        # process can be stored (those need a login first), so only the
        # previous process's leftovers are marked.
        d = gateway.store.end_interrupted(gateway.reactor.seconds())
        d.addCallback(self._interrupted)
        d.addErrback(lambda f: log.failure("could not mark interrupted sessions", f))
        # Reviews the previous process left pending: their sessions are gone.
        def cancelled(ids: list[str]) -> None:
            if ids:
                log.warn("{count} review(s) left pending by the previous gateway process cancelled", count=len(ids))

        cancelling = gateway.reviews.cancel_orphans().addCallback(cancelled)
        cancelling.addErrback(lambda f: log.failure("could not cancel the reviews left pending", f))
        # Grants still in their window are active again; the others end.
        gateway.grants.restore().addErrback(lambda f: log.failure("could not restore the access grants", f))
        if gateway.config.identity.dev_issuer and gateway.config.source is not None:
            log.warn(
                "the dev token issuer is on ({key}): anyone who can read that key can act "
                "as any identity; set [identity] dev_issuer = false in production",
                key=str(gateway.config.gateway.data_dir / "keys" / "dev_issuer_ed25519.pem"),
            )

    def _interrupted(self, ids: list[str]) -> None:
        """
        Sessions the previous process never ended (it was killed, or the
        machine stopped): their trail has a C{session.start} and no
        C{session.end}; this record says so, once, and the session index
        shows them C{interrupted} instead of active for ever.
        """
        if not ids:
            return
        log.warn(
            "{count} session(s) left open by the previous gateway process marked interrupted",
            count=len(ids),
        )
        self.gateway.append(events.SESSIONS_INTERRUPTED, events.sessions_interrupted(self.gateway.config.gateway.name, ids))

    @inlineCallbacks
    def stopService(self) -> Generator[Deferred[Any], object, None]:
        Service.stopService(self)
        gateway = self.gateway
        gateway.grants.close()  # (they stay active in the store, for the next start)
        # Each client is told why, as its protocol allows (PostgreSQL: FATAL
        # 57P01; SSH: a disconnect message; HTTP: Connection: close on the
        # last response); what has not ended when the grace is over is
        # aborted, and what still has not, closed here without its front end.
        timeout = self.close_timeout
        closing = gateway.sessions.close_all(SHUTDOWN_REASON, grace=timeout * 0.7)
        closing.addTimeout(timeout * 0.85, gateway.reactor)
        try:
            yield closing
        except Exception:
            log.warn(
                "live sessions did not end within {timeout:g}s; ending them without their clients",
                timeout=timeout * 0.85,
            )
            remaining = gateway.sessions.end_remaining(SHUTDOWN_REASON)
            remaining.addTimeout(timeout * 0.15, gateway.reactor)
            try:
                yield remaining
            except Exception:
                log.failure("live sessions did not end within {timeout:g}s", timeout=timeout)
        # Requests with no session left (access grants asked for): cancelled, with their records.
        gateway.reviews.close()
        # Written by the audit log as its last record, the one that closes
        # it: the final checkpoint covers it, a signed end (audit-format.md).
        gateway.audit.close_with(events.GATEWAY_STOP, events.gateway_record(gateway.describe()))


def _webhook_secret(config: Config) -> bytes | None:
    """The key of review notifications' signatures, read at start-up (a file read)."""
    ref = config.reviews.webhook_secret
    if ref is None:
        return None
    value = ref.read()
    if not value:
        key = "reviews.webhook_secret_env" if ref.env is not None else "reviews.webhook_secret_file"
        raise ConfigError(config.source, key, f"the secret ({ref.describe()}) is empty")
    return value.encode("utf-8")


class ListenError(HoopgwError):
    """A configured listener could not be bound."""


class _Listener(Service):
    """
    One listener from an endpoint string.  Unlike C{strports.service}, a
    port that cannot be bound stops the gateway: an operator expects a
    daemon that cannot serve to say so and exit, not to run half-deaf.
    """

    def __init__(
        self, name: str, description: str, factory: IProtocolFactory, reactor: Any, guard: IProtocolFactory | None = None
    ) -> None:
        self.name = f"listener:{name}"
        self.protocol = name
        self.description = description
        self.factory = factory
        # What listens: the factory under its pre-authentication limits.
        self.guard = guard
        self.reactor = reactor
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] | None = None
        self.failure: str | None = None
        self._binding = False

    def startService(self) -> None:
        Service.startService(self)
        endpoint = serverFromString(self.reactor, self.description)
        self._binding = True
        self.listening = endpoint.listen(self.guard if self.guard is not None else self.factory)
        self.listening.addCallbacks(self._listening, self._failed)
        self._binding = False
        if self.failure is not None:
            # Most endpoints (TCP, UNIX) bind synchronously: refuse to start
            # at all, before any record claims this listener exists.
            raise ListenError(f"cannot listen for {self.protocol} on {self.description}: {self.failure}")

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        address = port.getHost()
        host, number = getattr(address, "host", None), getattr(address, "port", None)
        where = f"{host}:{number}" if number is not None else str(getattr(address, "name", address))
        log.info("hoopgw {protocol} listening on {where}", protocol=self.protocol, where=where)
        return port

    def _failed(self, failure: Failure) -> Failure:
        self.failure = failure.getErrorMessage()
        if not self._binding and self.running:
            # An endpoint that failed later: a daemon that cannot serve says
            # so and exits rather than run half-deaf.
            log.critical(
                "hoopgw cannot listen for {protocol} on {description}: {error}; stopping",
                protocol=self.protocol,
                description=self.description,
                error=self.failure,
            )
            self.reactor.stop()
        return failure  # consumed by the gateway's readiness gather

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


class Gateway(MultiService):
    """
    The whole gateway.  Children start in order (audit log, lifecycle
    records, listeners) and stop in reverse, one after the other, so the
    last records are written before the final checkpoint.
    """

    def __init__(self, config: Config, *, reactor: Any) -> None:
        MultiService.__init__(self)
        self.config = config
        self.reactor = reactor
        data_dir = config.gateway.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tls_cert, self.tls_key = ensure_certificate(
            data_dir, config.tls.cert_file, config.tls.key_file
        )
        self._client_trust = client_trust(self.tls_cert)
        # The installed front ends (the configuration was read with them too).
        self.front_ends = installed()
        self.metrics = Metrics(clock=reactor, front_ends=self.front_ends)
        self.policy = PolicyService.from_directory(policies_dir(config))
        self.identity = IdentityService.from_settings(
            config.identity, data_dir=data_dir, gateway_name=config.gateway.name, reactor=reactor
        )
        self.audit = AuditLog.from_settings(
            config.audit,
            data_dir=data_dir,
            gateway_name=config.gateway.name,
            reactor=reactor,
            metrics=self.metrics,
        )
        self.store = SQLiteStore.open(data_dir / STORE_FILENAME, reactor=reactor)
        self.sessions = SessionService(
            audit=self.audit,
            policy=self.policy,
            identity=self.identity,
            store=self.store,
            connections={c.name: c for c in config.connections},
            clock=reactor,
            metrics=self.metrics,
            gateway=config.gateway.name,
            masking=MaskingService(self.policy, load_key(data_dir), self.metrics),
            recordings=data_dir / "recordings",
        )
        self.reviews = ReviewService(
            store=self.store, append=self.sessions._append, clock=reactor, gateway=config.gateway.name
        )
        self.sessions.reviews = self.reviews
        self.grants = GrantService(
            store=self.store,
            append=self.sessions._append,
            clock=reactor,
            policy=self.policy,
            reviews=self.reviews,
            connections=self.sessions.connections,
            gateway=config.gateway.name,
            sessions=self.sessions,
        )
        self.sessions.grants = self.grants
        enrolled = self.identity.enrolled_keys
        assert enrolled is not None  # (from_settings always makes one)
        self.ssh_keys = SSHKeyEnrolment(
            keys=enrolled,
            static=self.identity.ssh_keys,
            append=self.sessions._append,
            gateway=config.gateway.name,
        )
        self.policy.holds_grant = self.grants.holds
        self.webhooks = WebhookNotifier(
            reactor=reactor,
            metrics=self.metrics,
            webhook=config.reviews.webhook,
            api_url=self.api_url,
            secret=_webhook_secret(config),
            gateway=config.gateway.name,
        )
        self.reviews.observers.append(self.webhooks)
        # Start order: the log, the webhooks, the listeners, then the records
        # saying the gateway started; stop runs in reverse, one child after
        # the other (the webhooks' pending deliveries are cancelled once the
        # sessions, and their reviews, have ended).
        # (Service.setServiceParent by name: Twisted leaves it unannotated,
        # see untyped_calls_exclude in setup.cfg.)
        Service.setServiceParent(self.audit, self)
        Service.setServiceParent(self.webhooks, self)
        self.listeners: dict[str, _Listener] = {}
        self._add_listeners()
        Service.setServiceParent(_Lifecycle(self), self)

    def _add_listeners(self) -> None:
        from hoopgw.api import make_api_site

        listen = self.config.listen
        context = GatewayContext(self.config, self.sessions, self.reactor, self.tls_cert, self.tls_key)
        factories: dict[str, IProtocolFactory] = {}
        if listen.api is not None:
            factories[API_LISTENER] = make_api_site(
                metrics=self.metrics, health=self.health, reviews=self.reviews, sessions=self.sessions,
                grants=self.grants, audit=self.audit, discovery=self.discovery, ssh_keys=self.ssh_keys,
            )
        for kind, front_end in self.front_ends.items():
            if listen.get(kind) is not None:
                factories[kind] = front_end.build(context)
        for name, endpoint in listen.items():
            if endpoint is not None and name not in factories:
                # Only a Config made in code gets here: loading refuses such a key.
                log.warn(
                    "listen.{name} is configured but no {name} front end is installed; not listening",
                    name=name,
                )
        for name, factory in factories.items():
            description = listen[name]
            assert description is not None
            limits = self.config.preauth.get(name)
            guard = _preauth.PreauthGuard(
                factory,
                listener=name,
                limits=limits if limits is not None else self.front_ends[name].preauth,
                clock=self.reactor,
                record=self._preauth_closed,
                refusal=(
                    self.front_ends[name].busy_refusal(_preauth.BUSY_MESSAGE)
                    if name in self.front_ends else _preauth.api_refusal()
                ),
                proxied=description.startswith("haproxy:"),
            )
            service = _Listener(name, description, factory, self.reactor, guard)
            Service.setServiceParent(service, self)
            self.listeners[name] = service

    def _preauth_closed(self, source: Any, reason: str) -> None:
        """A connection refused or closed before authenticating: C{auth.failed}, rate-limited per source."""
        self.sessions.auth_failed(source=source, reason=reason, method="preauth")

    def append(self, event: str, body: dict[str, Any]) -> None:
        """Write one of the gateway's own records; a failed log has already said why."""
        try:
            d = self.audit.append(event, body)
        except AuditUnavailable as e:
            log.error("{event} record not written: {error}", event=event, error=str(e))
            return
        d.addErrback(lambda f: log.failure("{event} record lost", f, event=event))

    def describe(self) -> dict[str, Any]:
        config = self.config
        return {
            "gateway": config.gateway.name,
            "version": __version__,
            "pid": os.getpid(),
            "config": str(config.source) if config.source is not None else "<embedded defaults>",
            "config_sha256": config_sha256(config),
            "listeners": {
                name: listener.description
                for name, listener in self.listeners.items()
                if listener.port is not None
            },
            "connections": [
                {"name": c.name, "kind": c.kind, "target": c.target} for c in config.connections
            ],
            "dev_issuer": config.identity.dev_issuer,
            "audit_log": self.audit.log_id,
        }

    def discovery(self) -> dict[str, Any]:
        """
        What `hoopgw login` and the client wrappers read at /.well-known/hoopgw
        (nothing secret): the login issuers, the listeners' addresses, what
        pins the gateway's TLS certificate and SSH host key.
        """
        listeners = {}
        for name, listener in self.listeners.items():
            if listener.port is not None:
                address = listener.port.getHost()
                listeners[name] = {"host": getattr(address, "host", ""), "port": getattr(address, "port", 0)}
        if "ssh" in listeners:
            host_key = getattr(self.listeners["ssh"].factory, "host_key", None)
            if host_key is not None:
                listeners["ssh"]["host_key"] = host_key.public().toString("openssh").decode()
        return {
            "tls": self._client_trust,
            "gateway": self.config.gateway.name,
            "issuers": [
                {"issuer": i.issuer, "client_id": i.login_client_id, "scopes": list(i.login_scopes),
                 **({"resource": i.login_resource} if i.login_resource else {})}
                for i in self.config.identity.issuers if i.login_client_id
            ],
            # (Not the connections: which exist is told only to whom may open them, /api/v1/whoami.)
            "listeners": listeners,
        }

    def record_policies(self, policy_set: PolicySet, *, reason: str) -> None:
        for loaded in policy_set.files:
            self.append(events.POLICY_LOADED, events.policy_loaded(self.config.gateway.name, reason, loaded.to_record()))

    def reload_policy(self) -> None:
        """Re-read the policy folder (SIGHUP); a broken folder keeps the old policy."""
        try:
            policy_set = self.policy.reload()
        except ConfigError as e:
            log.error("policy reload refused, previous policy kept: {error}", error=str(e))
            self.append(events.POLICY_REJECTED, events.policy_rejected(self.config.gateway.name, str(e)))
            return
        log.info(
            "policy reloaded: {rules} rules from {files} files",
            rules=len(policy_set.rules),
            files=len(policy_set.files),
        )
        self.record_policies(policy_set, reason="reload")

    def api_url(self) -> str | None:
        """
        The API's base URL for review notifications' approve and deny
        links: C{[reviews] api_url}; else, once the API listener is bound,
        C{http://} (C{https://} for an C{ssl:} endpoint) and the address it
        is bound to, if that is a specific address; else C{None} (all
        interfaces, a UNIX socket, another kind of endpoint, no API).
        """
        if self.config.reviews.api_url is not None:
            return self.config.reviews.api_url
        listener = self.listeners.get("api")
        if listener is None or listener.port is None:
            return None
        scheme = {"tcp": "http", "tcp6": "http", "ssl": "https"}.get(listener.description.partition(":")[0])
        address = listener.port.getHost()
        host, port = getattr(address, "host", None), getattr(address, "port", None)
        if scheme is None or not host or not port or "%" in host:  # (an IPv6 zone: not for links)
            return None
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        if ip.is_unspecified:
            return None  # 0.0.0.0 or ::, every interface: which name reaches it is not known here
        return f"{scheme}://[{host}]:{port}" if ip.version == 6 else f"{scheme}://{host}:{port}"

    def health(self) -> dict[str, Any]:
        failed = self.audit.failed
        return {
            "status": "ok" if failed is None else "failing",
            "checks": {"audit": "ok" if failed is None else failed},
        }

    def startService(self) -> None:
        try:
            MultiService.startService(self)
        except HoopgwError as e:
            # Start-up refusals (an unwritable or damaged audit log) end the
            # process with one precise line rather than a traceback.
            raise SystemExit(f"hoopgw: {e}")
        waiting = [l.listening for l in self.listeners.values() if l.listening is not None]
        # "ready" only once the reactor runs: before that, signal handlers are
        # not installed and a supervisor's SIGTERM would kill without a stop.
        self.reactor.callWhenRunning(self._announce_ready, gatherResults(waiting, consumeErrors=True))

    def _announce_ready(self, listening: Deferred[list[IListeningPort]]) -> None:
        listening.addCallback(
            lambda _: log.info(
                "hoopgw ready (audit log {log_id}, data in {data_dir})",
                log_id=self.audit.log_id,
                data_dir=str(self.config.gateway.data_dir),
            )
        )
        listening.addErrback(lambda f: None)  # each listener already reported its own failure

    @inlineCallbacks
    def stopService(self) -> Generator[Deferred[Any], object, None]:
        Service.stopService(self)
        for service in reversed(list(self)):
            try:
                yield service.stopService()
            except Exception:
                log.failure("error stopping {service}", service=service)
        yield self.store.close()
