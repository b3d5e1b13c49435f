"""
A gateway wired for real around the Redis front end, for the tests with the
real thing: hoopgw's own audit log (hash-chained, on disk, in a temporary
directory), its policy service over a policy folder written by the test,
its identity service with the
dev issuer (real signed tokens), and the front end listening on 127.0.0.1,
port 0: what the gateway's start-up does for a [[connections]] entry of
kind "redis", in the test's process (tests/test_twistd.py runs the real
twistd).  The redis.* conditions come from the plugin, found on sys.path
(src/twisted/plugins) as the gateway finds it.

    gateway = RedisGateway(self, redis_server, policy=POLICY)
    token = gateway.token("alice", ["dev"])
    redis-cli -p gateway.port --user cache --pass token ...
    gateway.records("action.start")
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import SkipTest

from hoopgw.audit.log import RECORDS_FILE, AuditLog
from hoopgw.config import IdentitySettings
from hoopgw.identity.service import IdentityService
from hoopgw.model import Connection
from hoopgw.policy.service import PolicyService
from hoopgw.sessions import SessionService
from hoopgw.testing import MemoryStore, NullMetrics

from hoopgw_redis.frontend import RedisFrontEnd
from hoopgw_redis.settings import RedisSettings

from tests._redis import RedisServer

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"

# Everyone may open "cache" and run redis.* actions; the tests add denials.
BASE_POLICY = """
[[rule]]
name = "dev-may-use-cache"
effect = "allow"
groups = ["dev"]
connections = ["cache"]
actions = ["session.open", "redis.*"]
"""


def require_cli() -> None:
    if not os.path.exists(REDIS_CLI):
        if os.environ.get("CI") == "true":
            raise AssertionError("redis-cli is missing under CI")
        raise SkipTest("redis-cli is not installed (apt-get install redis-tools)")


class RedisGateway:
    def __init__(
        self,
        case: Any,
        server: RedisServer,
        *,
        policy: str = "",
        settings: RedisSettings | None = None,
        reviews: bool = False,
        masking: bool = False,
        audit: dict[str, Any] | None = None,
        recordings: bool = True,
        **front_end: Any,
    ) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="hoopgw-redis-gw-"))
        case.addCleanup(shutil.rmtree, self.base, True)
        (self.base / "policies").mkdir()
        (self.base / "policies" / "base.toml").write_text(BASE_POLICY + policy)
        self.policy = PolicyService.from_directory(self.base / "policies")
        self.key = Ed25519PrivateKey.generate()
        self.audit = AuditLog(self.base / "audit", signing_key=self.key, origin="hoopgw-redis-test", reactor=reactor,
                              **(audit or {}))
        self.audit.startService()
        case.addCleanup(self.audit.stopService)
        self.identity = IdentityService.from_settings(
            IdentitySettings(dev_issuer=True), data_dir=self.base, gateway_name="redis-test", reactor=reactor
        )
        if settings is None:
            settings = RedisSettings(host=server.host, port=server.port, tls="disable")
        self.settings = settings
        self.sessions = SessionService(
            audit=self.audit,
            policy=self.policy,
            identity=self.identity,
            store=MemoryStore(),
            connections={"cache": Connection(name="cache", kind="redis", target=settings.address, settings=settings)},
            clock=reactor,
            metrics=NullMetrics(),
            gateway="redis-test",
            # As the gateway has it (data_dir/recordings): each session's transcript.
            recordings=self.base / "recordings" if recordings else None,
        )
        if masking:
            from hoopgw.masking.service import MaskingService

            # The policy's [[mask]] tables, as the gateway has them (its key: 32 bytes, here made up).
            self.sessions.masking = MaskingService(self.policy, b"k" * 32)
        if reviews:
            from hoopgw.reviews import ReviewService

            self.sessions.reviews = ReviewService(
                store=self.sessions.store, append=self.sessions._append, clock=reactor, gateway="redis-test"
            )
        front_end.setdefault("require_tls", False)
        self.front = RedisFrontEnd(sessions=self.sessions, reactor=reactor, **front_end)
        self.server = server
        self.port = 0
        self._case = case

    @inlineCallbacks
    def listen(self, endpoint: Any = None) -> Any:
        endpoint = endpoint or TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        listening = yield endpoint.listen(self.front)
        self._case.addCleanup(listening.stopListening)
        self._case.addCleanup(self._close_sessions)
        self.port = listening.getHost().port
        return self

    def _close_sessions(self) -> Deferred:
        return self.sessions.close_all("test over", grace=2)

    def token(self, subject: str = "alice", groups: tuple[str, ...] = ("dev",)) -> str:
        assert self.identity.dev_issuer is not None
        return self.identity.dev_issuer.issue(subject, groups, 600)

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        path = self.base / "audit" / RECORDS_FILE
        text = path.read_text()
        # Read from a test's thread while the gateway appends: a last line
        # without its newline is still being written.
        complete = text[: text.rfind("\n") + 1]
        records = [json.loads(line) for line in complete.splitlines() if line.strip()]
        return [r for r in records if event is None or r["event"] == event]

    def session_end(self) -> dict[str, Any]:
        """The one session.end record (a test with one session)."""
        ends = self.records("session.end")
        assert len(ends) == 1, ends
        return ends[0]

    def actions(self) -> list[tuple[str, dict[str, Any]]]:
        """(event, record) of every action.start / action.end, in log order."""
        return [(r["event"], r) for r in self.records() if r["event"] in ("action.start", "action.end")]

    def cli(self, *args: str, token: str | None = None, user: str = "cache", stdin: str | None = None,
            timeout: float = 20, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        """Run the real redis-cli against the gateway (blocking: call it in a thread)."""
        argv = [REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port), *extra]
        if token is not None:
            argv += ["--user", user, "--pass", token, "--no-auth-warning"]
        return subprocess.run(argv + list(args), input=stdin, capture_output=True, text=True, timeout=timeout)

    def direct(self) -> Any:
        """A blocking client straight to the real server (not through the gateway), to check effects."""
        return self.server.connect()
