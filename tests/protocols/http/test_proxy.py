"""
Unit tests of the HTTP front end's pure parts: error bodies, response
header filtering, bearer token parsing, what the audit trail keeps of a
request body (Secret masking), the upstream's credentials and TLS policy.
"""

from __future__ import annotations

import json
from pathlib import Path

from twisted.internet import ssl
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.config import SecretRef
from hoopgw.model import Connection, Identity
from hoopgw.protocols.http.bodies import MASK, body_record, mask_secrets
from hoopgw.protocols.http.client import ClientConnection
from hoopgw.protocols.http.k8s import from_routed
from hoopgw.protocols.http.paths import split_request_target
from hoopgw.protocols.http.actions import _action_cached, request_action
from hoopgw.protocols.http.headers import bearer_token
from hoopgw.protocols.http.responses import error_body, response_headers
from hoopgw.protocols.http.upstream import ReservedIdentity, Upstream, UpstreamTLSPolicy
from hoopgw.protocols.http.settings import HTTPSettings
from hoopgw.protocols.http.state import ExchangeState
from tests.integration._fake_k8s import make_test_ca


class RequestActionTests(SynchronousTestCase):
    def test_removed_headers_recorded_and_cached(self) -> None:
        """
        The same request with the same removed headers is one cached Action
        whose details name them; other removed names make another Action.
        """
        info = from_routed("GET", split_request_target(b"/k8s/api/v1/namespaces/default/pods"))
        first = request_action(info, (b"authorization",))
        self.assertIs(request_action(info, (b"authorization",)), first)
        self.assertEqual(first.details["removed_headers"], ["authorization"])
        other = request_action(info, (b"authorization", b"x-forwarded-for"))
        self.assertEqual(other.details["removed_headers"], ["authorization", "x-forwarded-for"])
        self.assertNotIn("removed_headers", request_action(info, ()).details)

    def test_long_removed_names_not_cached(self) -> None:
        """Removed names are the client's: past the size bound they are not kept in the cache."""
        info = from_routed("GET", split_request_target(b"/k8s/api/v1/pods"))
        names = tuple(b"x-forwarded-%d-%s" % (n, b"a" * 100) for n in range(20))
        before = _action_cached.cache_info().currsize
        action = request_action(info, names)
        self.assertEqual(len(action.details["removed_headers"]), 20)
        self.assertEqual(_action_cached.cache_info().currsize, before)
        self.assertIsNot(request_action(info, names), action)


class ErrorBodyTests(SynchronousTestCase):
    def test_kubernetes_status(self):
        """A Kubernetes connection's refusal is a v1 Status that kubectl prints."""
        document = json.loads(error_body(403, "pods is forbidden: no (rule 'x')", kubernetes=True))
        self.assertEqual(
            document,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "pods is forbidden: no (rule 'x')",
                "reason": "Forbidden",
                "code": 403,
            },
        )

    def test_generic(self):
        """A generic connection's error is {"error": message}."""
        self.assertEqual(json.loads(error_body(400, "bad", kubernetes=False)), {"error": "bad"})


class ResponseHeaderTests(SynchronousTestCase):
    def test_hop_by_hop_and_nominated_removed(self):
        """Hop-by-hop headers and those the Connection header names do not reach the client."""
        raw = [
            (b"Content-Type", [b"application/json"]),
            (b"Connection", [b"keep-alive, X-Private"]),
            (b"Keep-Alive", [b"timeout=5"]),
            (b"Transfer-Encoding", [b"chunked"]),
            (b"X-Private", [b"1"]),
            (b"Audit-Id", [b"abc"]),
        ]
        self.assertEqual(
            response_headers(raw), [(b"Content-Type", [b"application/json"]), (b"Audit-Id", [b"abc"])]
        )


    def test_set_cookie_removed_unless_passed(self):
        """
        Set-Cookie and Set-Cookie2 (an upstream session minted for the
        gateway's credential) do not reach the client unless pass_cookies.
        """
        raw = [
            (b"Set-Cookie", [b"session=gateway-session"]),
            (b"set-cookie2", [b"x=1"]),
            (b"Content-Type", [b"application/json"]),
        ]
        self.assertEqual(response_headers(raw), [(b"Content-Type", [b"application/json"])])
        self.assertEqual(response_headers(raw, pass_cookies=True), [(n, list(v)) for n, v in raw])


class BearerTokenTests(SynchronousTestCase):
    def test_forms(self):
        """One Bearer header, any case of the scheme; anything else is no token."""
        self.assertEqual(bearer_token([b"Bearer abc.def"]), "abc.def")
        self.assertEqual(bearer_token([b"bearer abc"]), "abc")
        self.assertIsNone(bearer_token(None))
        self.assertIsNone(bearer_token([b"Basic YWxpY2U6cHc="]))
        self.assertIsNone(bearer_token([b"Bearer a", b"Bearer b"]))
        self.assertIsNone(bearer_token([b"Bearer "]))


class BodyRecordTests(SynchronousTestCase):
    def test_secret_values_masked(self):
        """A Secret's data and stringData values are masked, its keys kept."""
        body = json.dumps({
            "kind": "Secret",
            "metadata": {"name": "db"},
            "data": {"password": "c2VjcmV0"},
            "stringData": {"token": "clear"},
        }).encode()
        record = body_record(body, total=len(body), resource="secrets")
        self.assertEqual(record["json"]["data"], {"password": MASK})
        self.assertEqual(record["json"]["stringData"], {"token": MASK})
        self.assertNotIn("c2VjcmV0", json.dumps(record))

    def test_last_applied_annotation_masked(self):
        """kubectl apply's copy of the object in the annotation is masked too."""
        applied = json.dumps({"kind": "Secret", "data": {"k": "dmFsdWU="}})
        document = {
            "kind": "Secret",
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied}},
            "data": {"k": "dmFsdWU="},
        }
        masked = mask_secrets(document)
        self.assertNotIn("dmFsdWU=", json.dumps(masked))

    def test_patch_to_secret_masked(self):
        """A merge patch or JSON patch to the secrets resource has no kind, and is masked all the same."""
        self.assertEqual(mask_secrets({"data": {"k": "v"}}, secret_resource=True), {"data": {"k": MASK}})
        self.assertEqual(
            mask_secrets([{"op": "add", "path": "/data/k", "value": "v"}], secret_resource=True),
            [{"op": "add", "path": "/data/k", "value": MASK}],
        )

    def test_secret_list_items_masked(self):
        """Secrets inside a List are masked."""
        masked = mask_secrets({"kind": "List", "items": [{"kind": "Secret", "data": {"k": "v"}}]})
        self.assertEqual(masked["items"][0]["data"], {"k": MASK})

    def test_unparseable_secret_omitted(self):
        """A Secret as YAML, or cut at the cap, cannot be masked: only its size is kept."""
        body = b"kind: Secret\ndata:\n  k: dmFsdWU=\n"
        self.assertEqual(
            set(body_record(body, total=len(body))), {"size", "sha256", "omitted"}
        )
        big = json.dumps({"kind": "ConfigMap", "data": {"k": "x" * 100}}).encode()
        record = body_record(big, total=len(big), resource="secrets", cap=50)
        self.assertEqual(set(record), {"size", "omitted"})

    def test_other_text_truncated(self):
        """Other text over the cap is kept up to the cap and marked truncated."""
        body = b"a" * 100
        self.assertEqual(
            body_record(body, total=100, cap=10), {"size": 100, "text": "a" * 10, "truncated": True}
        )

    def test_binary_omitted(self):
        """A binary body (protobuf) is not kept."""
        record = body_record(b"k8s\x00\xff\xfe", total=6)
        self.assertEqual(record["omitted"], "not JSON or UTF-8 text")


def _connection(tmp: Path, **settings: object) -> Connection:
    return Connection(
        name="k8s", kind="http", target="https://127.0.0.1:6443",
        settings=HTTPSettings(upstream="https://127.0.0.1:6443/prefix/", **settings),  # type: ignore[arg-type]
    )


class UpstreamTests(SynchronousTestCase):
    def test_credentials_and_impersonation(self):
        """The connection's token and, with impersonate, the identity's user and groups."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        (tmp / "token").write_text("sa-token\n")
        upstream = Upstream.from_connection(
            _connection(tmp, token=SecretRef(file=tmp / "token"), impersonate=True), MemoryReactorClock()
        )
        identity = Identity(issuer="dev", subject="alice", groups=("dev", "ops"))
        self.assertEqual(
            upstream.credential_headers(identity),
            [
                (b"Authorization", b"Bearer sa-token"),
                (b"Impersonate-User", b"alice"),
                (b"Impersonate-Group", b"dev"),
                (b"Impersonate-Group", b"ops"),
            ],
        )
        self.assertNotIn("sa-token", repr(upstream))

    def test_reserved_identities_not_impersonated(self):
        """
        A subject or group in the API server's system: namespace (an IdP
        group named system:masters, a subject posing as a service account)
        is never impersonated; without impersonate it is not checked.
        """
        tmp = Path(self.mktemp())
        tmp.mkdir()
        upstream = Upstream.from_connection(_connection(tmp, impersonate=True), MemoryReactorClock())
        for identity in (
            Identity(issuer="dev", subject="alice", groups=("dev", "system:masters")),
            Identity(issuer="dev", subject="system:serviceaccount:kube-system:admin", groups=()),
            Identity(issuer="dev", subject="system:admin", groups=("dev",)),
        ):
            self.assertRaises(ReservedIdentity, upstream.credential_headers, identity)
        self.assertEqual(
            upstream.credential_headers(Identity(issuer="dev", subject="alice", groups=("systems",))),
            [(b"Impersonate-User", b"alice"), (b"Impersonate-Group", b"systems")],
        )
        plain = Upstream.from_connection(_connection(tmp), MemoryReactorClock())
        self.assertEqual(plain.credential_headers(Identity(issuer="dev", subject="alice", groups=("system:masters",))), [])

    def test_url_keeps_prefix_and_canonical_target(self):
        """The forwarded URL is the upstream's base, then the canonical path and query."""
        upstream = Upstream.from_connection(_connection(Path(".")), MemoryReactorClock())
        routed = split_request_target(b"/k8s/api/v1/pods?watch=1")
        self.assertEqual(upstream.url(routed), b"https://127.0.0.1:6443/prefix/api/v1/pods?watch=1")  # type: ignore[arg-type]


class TLSPolicyTests(SynchronousTestCase):
    def test_verified_by_default(self):
        """Without insecure, the creator verifies the peer against the CA file with a hostname check."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        (tmp / "ca.pem").write_bytes(make_test_ca().ca_cert_pem)
        policy = UpstreamTLSPolicy(HTTPSettings(upstream="https://x", ca_file=tmp / "ca.pem"))
        creator = policy.creatorForNetloc(b"127.0.0.1", 6443)
        self.assertEqual(type(creator).__name__, "ClientTLSOptions")

    def test_insecure_only_by_choice(self):
        """insecure = true gives options that do not verify."""
        policy = UpstreamTLSPolicy(HTTPSettings(upstream="https://x", insecure=True))
        creator = policy.creatorForNetloc(b"127.0.0.1", 6443)
        self.assertIsInstance(creator, ssl.CertificateOptions)
        self.assertFalse(creator.verify)


def client_connection() -> tuple[ClientConnection, StringTransport, Clock]:
    """A client connection on a memory transport, its front end a stand-in with a clock of its own."""

    class Front:
        idle_timeout = 60.0
        reactor = Clock()

    conn = ClientConnection(Front())
    transport = StringTransport()
    conn.makeConnection(transport)
    return conn, transport, Front.reactor


class IdleTimeoutTests(SynchronousTestCase):
    """
    A client connection is closed after idle_timeout seconds without a
    request, never while one is in progress: one timer per connection,
    which waits out the rest of the timeout if a request came meanwhile.
    """

    def request(self, conn, clock, seconds):
        """A request that takes C{seconds}, then its response, whole, keeping the connection."""
        from hoopgw.protocols.http.state import ExchangeState

        conn.request_started()
        conn._idle_since = None
        exchange = ExchangeState(has_body=False)
        conn.exchange = exchange
        clock.advance(seconds)
        exchange.answer(keep_alive=True)
        conn._next_cycle()

    def test_idle_for_the_whole_timeout(self):
        """Counted from the end of the last request, not from when the timer started."""
        conn, transport, clock = client_connection()
        clock.advance(10)
        self.request(conn, clock, 10)  # idle again from t=20
        clock.advance(59)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_never_during_a_request(self):
        """A request longer than the timeout keeps the connection; the timeout starts again when it ends."""
        conn, transport, clock = client_connection()
        clock.advance(50)
        self.request(conn, clock, 100)  # from t=50 to t=150
        self.assertFalse(transport.disconnecting)
        clock.advance(59.5)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.5)
        self.assertTrue(transport.disconnecting)

    def test_one_timer(self):
        """Requests do not each schedule a timer."""
        conn, _, clock = client_connection()
        for _ in range(5):
            self.request(conn, clock, 1)
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_lost(self):
        """A lost connection leaves no timer behind."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        conn, _, clock = client_connection()
        conn.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])


class ClosingTests(SynchronousTestCase):
    """A client connection that began closing reads no further request."""

    def test_no_next_request_once_closing(self):
        """
        If the connection was aborted (its session ended, say) while a
        response was still streaming, that response ending cleanly does not
        let a pipelined request in: it is not parsed, run or answered.
        """
        conn, transport, _ = client_connection()

        exchange = ExchangeState(has_body=False)
        conn.request_started()
        conn.exchange = exchange
        conn.parser.feed(b"GET /a/x HTTP/1.1\r\nHost: gw\r\n\r\n")  # the request in progress, read whole
        conn.parser.feed(b"GET /a/y HTTP/1.1\r\nHost: gw\r\n\r\n")  # pipelined behind it
        exchange.forward()  # forwarded, its response streaming
        exchange.request_sent()
        exchange.response_head()
        conn.abort()
        exchange.response_whole(keep_alive=True)
        conn.response_done(exchange)
        self.assertIs(conn.exchange, exchange)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(conn.parser.buffered, len(b"GET /a/y HTTP/1.1\r\nHost: gw\r\n\r\n"))
