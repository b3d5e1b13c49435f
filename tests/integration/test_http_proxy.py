"""
The HTTP front end with real clients: curl against a small twisted.web
upstream of the test's own (what it received is recorded, so tests assert
on what crossed the gateway), and the real kubectl against the fake
Kubernetes API server (tests/integration/_fake_k8s.py).

The gateway runs in this process, on the test's reactor; so do both
upstreams.  curl and kubectl are spawned, never blocking the reactor.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IPullProducer
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web import resource, server
from zope.interface import implementer

from hoopgw.audit.search import search
from hoopgw.config import loads
from hoopgw.gateway import Gateway, shipped_policies
from hoopgw.recording.asciicast import read_asciicast
from tests.integration._fake_k8s import (
    FakeKubernetes,
    exchange,
    make_test_ca,
    run_kubectl,
    spawn_kubectl,
    spawn_kubectl_tty,
    start_echo_server,
    start_fake_k8s,
    start_port_forward,
    write_kubeconfig,
)
from tests.integration._process import PACKAGE_ROOT, run, spawn, start_tripwire
from tests.integration.test_postgres_clients import wait_until

CURL = shutil.which("curl")

# kubectl's switches off WebSocket (1.30+ tries it first): SPDY/3.1 only.
SPDY_EXEC = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
SPDY_PORT_FORWARD = {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}


def require_curl() -> str:
    if CURL is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("curl is missing under CI")
        raise SkipTest("curl is not installed")
    return CURL


def vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


# -- the test's own upstream -------------------------------------------------------


@attrs.frozen
class Seen:
    method: str
    uri: str
    headers: dict[str, list[str]]
    size: int
    sha256: str

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


_CHUNK = b"x" * 65536


@implementer(IPullProducer)
class _Bytes:
    """C{size} bytes, written only as fast as the gateway reads them."""

    def __init__(self, request: server.Request, size: int) -> None:
        self.request = request
        self.left = size

    def resumeProducing(self) -> None:
        n = min(len(_CHUNK), self.left)
        self.left -= n
        self.request.write(_CHUNK[:n])
        if not self.left:
            self.request.unregisterProducer()
            self.request.finish()

    def stopProducing(self) -> None:
        self.left = 0


class _Upstream(resource.Resource):
    """
    C{/base/big?size=N}: N bytes; C{/base/fail}: a 500 with a Status body;
    anything else: the request as JSON.  Every request is recorded.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Seen] = []

    def render(self, request: server.Request) -> Any:
        request.content.seek(0)
        digest = hashlib.sha256()
        size = 0
        while chunk := request.content.read(65536):
            digest.update(chunk)
            size += len(chunk)
        headers = {
            name.decode().lower(): [v.decode() for v in values]
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        seen = Seen(request.method.decode(), request.uri.decode(), headers, size, digest.hexdigest())
        self.seen.append(seen)
        request.setHeader(b"content-type", b"application/json")
        if request.path == b"/base/big":
            n = int(request.args[b"size"][0])
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"content-length", b"%d" % n)
            request.registerProducer(_Bytes(request, n), False)
            return server.NOT_DONE_YET
        if request.path == b"/base/slow":
            # The answer after ?delay= seconds.
            body = json.dumps(attrs.asdict(seen)).encode()

            def answer() -> None:
                request.write(body)
                request.finish()

            call = reactor.callLater(float(request.args[b"delay"][0]), answer)
            request.notifyFinish().addErrback(lambda _: call.cancel() if call.active() else None)
            return server.NOT_DONE_YET
        if request.path == b"/base/cookie":
            request.setHeader(b"set-cookie", b"upstream-session=minted-for-the-gateway")
        if request.path == b"/base/fail":
            request.setResponseCode(500)
            return json.dumps({"kind": "Status", "message": "the upstream broke"}).encode()
        return json.dumps(attrs.asdict(seen)).encode()


def start_upstream(testcase: TestCase) -> tuple[_Upstream, int, bytes]:
    """The test upstream on TLS (a throwaway CA); returns it, its port and the CA PEM."""
    ca = make_test_ca()
    upstream = _Upstream()
    site = server.Site(upstream)
    port = reactor.listenTCP(0, TLSMemoryBIOFactory(ca.server_options(), False, site), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return upstream, port.getHost().port, ca.ca_cert_pem


def start_silent(testcase: TestCase) -> int:
    """A TCP server that accepts connections and never answers; returns its port."""
    from twisted.internet.protocol import Factory, Protocol

    factory = Factory.forProtocol(Protocol)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port


_RAW_CLIENT = r"""
import socket, ssl, sys
ca, port, head, body = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
CRLF = bytes([13, 10])
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False
with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
    with context.wrap_socket(raw) as sock:
        sock.sendall(head.encode().replace(bytes([10]), CRLF) + CRLF)
        received = b""
        try:
            if body:
                sock.sendall(body.encode().replace(bytes([10]), CRLF))
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
        except OSError:
            pass
sys.stdout.write(received.decode("latin-1"))
"""


# -- the fixture ------------------------------------------------------------------


class _GatewayCase(TestCase):
    timeout = 120

    def start(self, fake: FakeKubernetes, *, extra_policy: str = "", extra_config: str = "", api: bool = False) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)
        self.fake = fake
        self.upstream, web_port, web_ca = start_upstream(self)
        silent_port = start_silent(self)
        (self.base / "web-ca.pem").write_bytes(web_ca)
        (self.base / "k8s-ca.pem").write_bytes(fake.ca.ca_cert_pem)
        (self.base / "k8s-token").write_text(fake.token + "\n")
        policies = self.base / "policies"
        policies.mkdir()
        shutil.copy(shipped_policies() / "default.toml", policies / "default.toml")
        (policies / "exec.toml").write_text(
            '[[rule]]\nname = "no-exec-in-tests"\neffect = "deny"\nk8s.subresources = ["exec"]\n'
            'k8s.names = ["locked*"]\n'
            'message = "exec is not allowed here"\n'
            '[[rule]]\nname = "no-port-forward-in-tests"\neffect = "deny"\nk8s.subresources = ["portforward"]\n'
            'k8s.names = ["locked*"]\n'
            'message = "port-forward is not allowed here"\n'
        )
        if extra_policy:
            (policies / "extra.toml").write_text(extra_policy)
        os.environ["HOOPGW_TEST_WEB_TOKEN"] = "upstream-web-token"
        self.config_text = f"""
[gateway]
data_dir = "data"
policies = "policies"
[listen]
postgres = false
ssh = false
http = "tcp:0:interface=127.0.0.1"
api = {'"tcp:0:interface=127.0.0.1"' if api else 'false'}
[[connections]]
name = "k8s"
kind = "http"
upstream = "{fake.url}"
token_file = "k8s-token"
ca_file = "k8s-ca.pem"
impersonate = true
[[connections]]
name = "k8s-idle"
kind = "http"
upstream = "{fake.url}"
token_file = "k8s-token"
ca_file = "k8s-ca.pem"
impersonate = true
upgrade_idle_timeout = "1s"
[[connections]]
name = "k8s-rec"
kind = "http"
upstream = "{fake.url}"
token_file = "k8s-token"
ca_file = "k8s-ca.pem"
impersonate = true
record_exec_output = true
record_input = true
[[connections]]
name = "web"
kind = "http"
upstream = "https://localhost:{web_port}/base"
token_env = "HOOPGW_TEST_WEB_TOKEN"
ca_file = "web-ca.pem"
[[connections]]
name = "silent"
kind = "http"
upstream = "http://127.0.0.1:{silent_port}"
[[connections]]
name = "cookies"
kind = "http"
upstream = "https://localhost:{web_port}/base"
ca_file = "web-ca.pem"
pass_cookies = true
[[connections]]
name = "wrongca"
kind = "http"
upstream = "https://127.0.0.1:{web_port}/base"
ca_file = "k8s-ca.pem"
{extra_config}"""
        (self.base / "hoopgw.toml").write_text(self.config_text)
        config = loads(self.config_text, source=self.base / "hoopgw.toml", base_dir=self.base)
        self.gateway = Gateway(config, reactor=reactor)
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        self.port = self.gateway.listeners["http"].port.getHost().port
        self.token = self.gateway.identity.dev_issuer.issue("alice", ("dev",), 600)
        front = self.gateway.listeners["http"].factory.front
        self.front = front
        self.addCleanup(front.close)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    @inlineCallbacks
    def curl(self, path: str, *args: str, token: str | None = ..., keep_body: bool = True) -> Any:  # type: ignore[assignment]
        """
        Fires with (status, headers (lower-case name -> value), body bytes),
        or with the body's size instead of the body if not C{keep_body}.
        """
        curl = require_curl()
        out = Path(self.mktemp())
        head = Path(self.mktemp())
        token = self.token if token is ... else token
        auth = ["-H", f"Authorization: Bearer {token}"] if token is not None else []
        argv = [curl, "-sS", "--cacert", str(self.gateway.tls_cert), "-D", str(head), *auth, *args]
        if keep_body:
            argv += ["-o", str(out), self.url(path)]
        else:
            argv += ["-o", "/dev/null", "-w", "%{size_download}", self.url(path)]
        code, output = yield run(argv)
        if code != 0:
            raise AssertionError(f"curl failed ({code}): {output.decode(errors='replace')}")
        blocks = head.read_bytes().decode().strip().split("\r\n\r\n")
        lines = blocks[-1].split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, out.read_bytes() if keep_body else int(output)

    @inlineCallbacks
    def raw(self, head: str, body: str = "") -> Any:
        """Send C{head} (lines joined by CRLF) and C{body} on one TLS connection; fires with the reply."""
        code, output = yield run([
            sys.executable, "-c", _RAW_CLIENT, str(self.gateway.tls_cert), str(self.port),
            head.replace("\r\n", "\n"), body,
        ])
        self.assertEqual(code, 0, output)
        return output.decode("latin-1")

    def records(self, event: str) -> list[dict[str, Any]]:
        return list(search(self.base / "data" / "audit", event=event))

    def actions(self) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        ends = {r["action"]["id"]: r for r in self.records("action.end")}
        return [(s, ends.get(s["action"]["id"])) for s in self.records("action.start")]

    def audit_text(self) -> str:
        return "".join(p.read_text() for p in sorted((self.base / "data" / "audit").rglob("*")) if p.is_file()
                       and p.suffix in (".jsonl", ".log", ""))


class CurlTests(_GatewayCase):
    def setUp(self) -> None:
        require_curl()
        fake = FakeKubernetes().listen()
        self.addCleanup(fake.stop)
        self.start(fake)

    @inlineCallbacks
    def test_get_forwards_path_query_and_the_connections_own_credential(self):
        """
        A GET reaches the upstream at its path prefix with the canonical
        path and the query byte for byte, the connection's token instead of
        the client's, the upstream's Host, and without the client's
        impersonation or forwarding claims; the action is recorded with the
        names of the headers removed and its outcome.
        """
        status, headers, body = yield self.curl(
            "/web/things/a%20b?x=1&y=%2F&x=2",
            "-H", "Impersonate-User: root", "-H", "X-Forwarded-For: 10.0.0.1", "-H", "X-Custom: kept",
        )
        self.assertEqual(status, 200, body)
        [seen] = self.upstream.seen
        self.assertEqual(seen.uri, "/base/things/a%20b?x=1&y=%2F&x=2")
        self.assertEqual(seen.header("authorization"), "Bearer upstream-web-token")
        self.assertNotIn(self.token, json.dumps(seen.headers))
        self.assertIsNone(seen.header("impersonate-user"))
        self.assertIsNone(seen.header("x-forwarded-for"))
        self.assertEqual(seen.header("x-custom"), "kept")
        self.assertEqual(seen.header("host"), f"localhost:{self.upstream_port()}")
        self.assertEqual(headers["content-type"], "application/json")
        [(start, end)] = self.actions()
        self.assertEqual(start["action"]["kind"], "http.request")
        self.assertEqual(start["action"]["input"], "GET /things/a%20b?x=1&y=%2F&x=2")
        self.assertEqual(start["action"]["details"]["removed_headers"], ["authorization", "impersonate-user", "x-forwarded-for"])
        self.assertEqual(end["outcome"]["status"], "succeeded")
        self.assertEqual(end["outcome"]["code"], "200")
        self.assertEqual(end["outcome"]["bytes_out"], len(body))
        self.assertNotIn(self.token, self.audit_text())

    def upstream_port(self) -> int:
        return int(self.config_text.split("https://localhost:")[1].split("/")[0])

    @inlineCallbacks
    def test_kubernetes_connection_impersonates_the_identity(self):
        """
        On a connection with impersonate = true, the API server receives the
        connection's token and Impersonate-User/Group naming the identity,
        and the request is decided as k8s.list on pods in default.
        """
        self.fake.add_pod("web")
        status, _, body = yield self.curl("/k8s/api/v1/namespaces/default/pods", "-H", "Impersonate-Group: system:masters")
        self.assertEqual(status, 200, body)
        self.assertEqual([p["metadata"]["name"] for p in json.loads(body)["items"]], ["web"])
        request = self.fake.requests[-1]
        self.assertEqual(request.bearer_token, self.fake.token)
        self.assertEqual(request.impersonate_user, "alice")
        self.assertEqual(request.impersonate_groups, ["dev"])
        [(start, end)] = self.actions()
        self.assertEqual(start["action"]["kind"], "k8s.list")
        self.assertEqual(start["action"]["attributes"]["k8s.namespaces"], ["default"])
        self.assertEqual(end["outcome"]["status"], "succeeded")

    @inlineCallbacks
    def test_missing_or_bad_token_is_401_and_nothing_is_forwarded(self):
        """
        Without a token, or with one the gateway did not issue, the answer
        is 401 with WWW-Authenticate: Bearer and a Status; both attempts are
        audited as auth.failed and the upstream sees nothing.
        """
        for token in (None, "not-a-token"):
            status, headers, body = yield self.curl("/k8s/api/v1/namespaces", token=token)
            self.assertEqual(status, 401)
            self.assertTrue(headers["www-authenticate"].startswith("Bearer"))
            document = json.loads(body)
            self.assertEqual((document["kind"], document["reason"], document["code"]), ("Status", "Unauthorized", 401))
        self.assertEqual(self.fake.requests, [])
        self.assertEqual(len(self.records("auth.failed")), 2)
        self.assertNotIn("not-a-token", self.audit_text())

    @inlineCallbacks
    def test_path_smuggling(self):
        """
        An encoded slash and a dot-segment are refused with 400; an encoded
        letter (%65xec) is decided as exec and refused by the exec rule, and
        the API server never sees any of them.
        """
        status, _, body = yield self.curl("/k8s/api/v1/namespaces/default/pods/web%2F..%2Fx")
        self.assertEqual(status, 400, body)
        status, _, body = yield self.curl("/k8s/api/v1/namespaces/default/pods/../secrets", "--path-as-is")
        self.assertEqual(status, 400, body)
        self.assertIn("dot-segments", json.loads(body)["message"])
        status, _, body = yield self.curl("/k8s/api/v1/namespaces/default/pods/locked/%65xec?command=id", "-X", "POST")
        self.assertEqual(status, 403, body)
        self.assertIn("no-exec-in-tests", json.loads(body)["message"])
        self.assertEqual(self.fake.requests, [])
        [(start, end)] = self.actions()
        self.assertEqual(start["action"]["kind"], "k8s.exec")
        self.assertEqual(end["outcome"]["status"], "blocked")

    @inlineCallbacks
    def test_methods_other_than_upper_case_known_ones_are_refused(self):
        """
        "delete" is not DELETE to a policy, yet servers run it as one: a
        method that is not an upper-case known method is refused with 405
        before anything is decided or sent.
        """
        for method, path in (("delete", "/k8s/api/v1/namespaces/x"), ("Delete", "/web/x"), ("TRACE", "/web/x"),
                             ("PROPFIND", "/web/x")):
            status, headers, body = yield self.curl(path, "-X", method)
            self.assertEqual(status, 405, (method, body))
            self.assertIn("DELETE", headers["allow"])
        self.assertEqual((self.fake.requests, self.upstream.seen, self.actions()), ([], [], []))

    @inlineCallbacks
    def test_method_overrides_are_not_forwarded(self):
        """
        Method-override headers are removed and recorded by name; a _method
        query parameter is refused (400) on a non-Kubernetes connection.
        """
        status, _, body = yield self.curl(
            "/web/x", "-X", "POST", "-H", "X-HTTP-Method-Override: DELETE", "-H", "X-HTTP-Method: DELETE",
            "-H", "X-Method-Override: DELETE", "--data-binary", "{}",
        )
        self.assertEqual(status, 200, body)
        [seen] = self.upstream.seen
        self.assertEqual(seen.method, "POST")
        for name in ("x-http-method-override", "x-http-method", "x-method-override"):
            self.assertIsNone(seen.header(name))
        [(start, _)] = self.actions()
        self.assertEqual(
            start["action"]["details"]["removed_headers"],
            ["authorization", "x-http-method-override", "x-http-method", "x-method-override"],
        )
        for query in ("_method=DELETE", "a=1&%5Fmethod=delete", "_METHOD=PUT"):
            status, _, body = yield self.curl(f"/web/x?{query}", "-X", "POST", "--data-binary", "{}")
            self.assertEqual(status, 400, (query, body))
            self.assertIn("_method", json.loads(body)["error"])
        self.assertEqual(len(self.upstream.seen), 1)

    @inlineCallbacks
    def test_path_overrides_are_not_forwarded(self):
        """
        X-Original-URL and X-Rewrite-URL make Zend/Laminas, older Symfony and
        IIS applications route another path than the request's: removed, so
        the path decided is the path run.
        """
        status, _, body = yield self.curl(
            "/web/public", "-H", "X-Original-URL: /admin/delete", "-H", "X-Rewrite-URL: /admin/delete",
        )
        self.assertEqual(status, 200, body)
        [seen] = self.upstream.seen
        self.assertEqual(seen.uri, "/base/public")
        self.assertIsNone(seen.header("x-original-url"))
        self.assertIsNone(seen.header("x-rewrite-url"))

    @inlineCallbacks
    def test_method_override_query_parameter_as_php_names_it(self):
        """
        PHP names a query parameter with its leading spaces dropped and its
        other spaces and dots made underscores, so for Laravel and Symfony
        ".method", " .method" and " _method" are _method: refused too.
        """
        for query in (".method=DELETE", "+_method=DELETE", "%20%2Emethod=PUT", "a=1&%2Emethod=PUT",
                      "+.method=DELETE"):
            status, _, body = yield self.curl(f"/web/x?{query}", "-X", "POST", "--data-binary", "{}")
            self.assertEqual(status, 400, (query, body))
            self.assertIn("_method", json.loads(body)["error"])
        self.assertEqual(self.upstream.seen, [])

    @inlineCallbacks
    def test_method_overrides_with_underscores_are_not_forwarded(self):
        """
        CGI, WSGI and Rack read a header's name with "-" and "_" alike
        (HTTP_X_HTTP_METHOD_OVERRIDE), so X_HTTP_Method_Override is the
        override header to many upstreams: it is removed as well, and so
        are the other removed headers spelled with underscores.
        """
        status, _, body = yield self.curl(
            "/web/x", "-X", "POST", "-H", "X_HTTP_Method_Override: DELETE", "-H", "X_Method_Override: DELETE",
            "-H", "X_Forwarded_For: 10.0.0.1", "-H", "Impersonate_User: admin", "-H", "X_Remote_User: admin",
            "--data-binary", "{}",
        )
        self.assertEqual(status, 200, body)
        [seen] = self.upstream.seen
        self.assertEqual(seen.method, "POST")
        for name in ("x_http_method_override", "x_method_override", "x_forwarded_for", "impersonate_user",
                     "x_remote_user"):
            self.assertIsNone(seen.header(name), name)
        [(start, _)] = self.actions()
        self.assertEqual(
            start["action"]["details"]["removed_headers"],
            ["authorization", "x_http_method_override", "x_method_override", "x_forwarded_for", "impersonate_user",
             "x_remote_user"],
        )

    @inlineCallbacks
    def test_cookies_do_not_cross_the_gateway(self):
        """
        The client's Cookie does not reach the upstream, nor the upstream's
        Set-Cookie the client; a connection with pass_cookies = true lets
        both through.
        """
        status, headers, body = yield self.curl("/web/cookie", "-H", "Cookie: upstream-session=someone-elses")
        self.assertEqual(status, 200, body)
        self.assertIsNone(self.upstream.seen[-1].header("cookie"))
        self.assertNotIn("set-cookie", headers)
        [(start, _)] = self.actions()
        self.assertIn("cookie", start["action"]["details"]["removed_headers"])
        self.assertNotIn("someone-elses", self.audit_text())
        status, headers, body = yield self.curl("/cookies/cookie", "-H", "Cookie: a=b")
        self.assertEqual(status, 200, body)
        self.assertEqual(self.upstream.seen[-1].header("cookie"), "a=b")
        self.assertEqual(headers["set-cookie"], "upstream-session=minted-for-the-gateway")

    @inlineCallbacks
    def test_upstream_that_never_answers_is_504(self):
        """
        An upstream that accepts the connection and never answers: after
        the response timeout, 504 with an error body, the outcome failed.
        """
        self.front.response_timeout = 0.5
        status, _, body = yield self.curl("/silent/x")
        self.assertEqual(status, 504, body)
        self.assertIn("did not answer within 0.5 s", json.loads(body)["error"])
        [(_, end)] = self.actions()
        self.assertEqual(
            (end["outcome"]["status"], end["outcome"]["error"]),
            ("failed", "upstream did not answer within 0.5 s"),
        )

    @inlineCallbacks
    def test_stalled_request_body(self):
        """
        A request body that stops arriving (10 of 100 declared bytes, then
        nothing) is answered 408 once nothing has come for the idle timeout,
        the connection is closed, nothing reaches the upstream, and the
        refusal is recorded.
        """
        self.front.idle_timeout = 1
        auth = f"Authorization: Bearer {self.token}"
        reply = yield self.raw("POST /web/stall HTTP/1.1\nHost: gw\n" + auth + "\nContent-Length: 100\n", "x" * 10)
        self.assertTrue(reply.startswith("HTTP/1.1 408 "), reply)
        self.assertIn("the request body stalled: no bytes for 1 s", reply)
        self.assertFalse([r for r in self.upstream.seen if "/stall" in r.uri])
        [refused] = [r for r in self.records("request.refused") if r["code"] == 408]
        self.assertEqual(refused["outcome"]["error"], "the request body stalled: no bytes for 1 s")

    @inlineCallbacks
    def test_request_bodies_are_refused_before_they_are_read(self):
        """
        A declared body over the maximum is refused with 413 as soon as the
        headers are in, without 100 Continue; a body without a bearer token
        with 401; a chunked body is cut off with 413 past the maximum.
        Nothing is forwarded, and nothing is decided.
        """
        auth = f"Authorization: Bearer {self.token}"
        reply = yield self.raw(
            "POST /web/x HTTP/1.1\nHost: gw\n" + auth + "\nContent-Length: 100000000000\nExpect: 100-continue\n"
        )
        self.assertTrue(reply.startswith("HTTP/1.1 413 "), reply)
        self.assertNotIn("100 Continue", reply)
        reply = yield self.raw("POST /web/x HTTP/1.1\nHost: gw\nContent-Length: 10\nExpect: 100-continue\n")
        self.assertTrue(reply.startswith("HTTP/1.1 401 "), reply)
        self.assertIn("WWW-Authenticate: Bearer", reply)
        self.assertNotIn("100 Continue", reply)
        reply = yield self.raw("POST /web/x HTTP/1.1\nHost: gw\nAuthorization: Basic eDp5\nTransfer-Encoding: chunked\n",
                               "5\nhello\n0\n\n")
        self.assertTrue(reply.startswith("HTTP/1.1 401 "), reply)
        self.front.max_body = 1000
        chunk = "x" * 600
        reply = yield self.raw(
            "POST /web/x HTTP/1.1\nHost: gw\n" + auth + "\nTransfer-Encoding: chunked\n",
            f"258\n{chunk}\n258\n{chunk}\n0\n\n",
        )
        self.assertTrue(reply.startswith("HTTP/1.1 413 "), reply)
        # Under the maximum, a body still goes through.
        status, _, body = yield self.curl("/web/x", "-X", "POST", "--data-binary", "y" * 999)
        self.assertEqual(status, 200, body)
        self.assertEqual([seen.size for seen in self.upstream.seen], [999])
        self.assertEqual(len(self.actions()), 1)

    @inlineCallbacks
    def test_smuggling_framings_are_refused_and_audited(self):
        """
        A request with both Content-Length and Transfer-Encoding, an
        obs-fold header, or a bad chunk size is answered 400 naming the
        problem, the connection closed, nothing forwarded; each refusal is
        a request.refused record with the source (and never the token).
        """
        auth = f"Authorization: Bearer {self.token}"
        reply = yield self.raw(
            "POST /web/x HTTP/1.1\nHost: gw\n" + auth + "\nContent-Length: 4\nTransfer-Encoding: chunked\n",
            "0\n\nGET /web/smuggled HTTP/1.1\nHost: gw\n\n",
        )
        self.assertTrue(reply.startswith("HTTP/1.1 400 "), reply)
        self.assertIn("both Content-Length and Transfer-Encoding", reply)
        self.assertEqual(reply.count("HTTP/1.1"), 1, reply)
        reply = yield self.raw("GET /web/x HTTP/1.1\nHost: gw\n" + auth + "\nX-A: 1\n folded\n")
        self.assertTrue(reply.startswith("HTTP/1.1 400 "), reply)
        self.assertIn("obs-fold", reply)
        reply = yield self.raw("POST /web/x HTTP/1.1\nHost: gw\n" + auth + "\nTransfer-Encoding: chunked\n",
                               "zz\nhello\n0\n\n")
        self.assertTrue(reply.startswith("HTTP/1.1 400 "), reply)
        self.assertIn("invalid chunk size", reply)
        self.assertEqual(self.upstream.seen, [])
        refused = self.records("request.refused")
        self.assertEqual(len(refused), 3)
        self.assertEqual(self.actions(), [])  # refused before any decision
        for record in refused:
            self.assertTrue(record["source"].startswith("127.0.0.1:"))
            self.assertEqual(record["outcome"]["status"], "blocked")
        self.assertNotIn(self.token, self.audit_text())

    @inlineCallbacks
    def test_pipelined_requests_are_answered_in_order_on_one_upstream_connection(self):
        """
        Three requests sent at once on one connection are answered in order;
        the upstream sees them one after another on one kept-alive
        connection; a refused method among them is audited as
        request.refused.
        """
        auth = f"Authorization: Bearer {self.token}"
        one = "GET /web/first HTTP/1.1\nHost: gw\n" + auth + "\n\n"
        two = "TRACE /web/x HTTP/1.1\nHost: gw\n" + auth + "\n\n"
        three = "POST /web/third HTTP/1.1\nHost: gw\n" + auth + "\nContent-Length: 2\nConnection: close\n\n{}"
        reply = yield self.raw(one.rstrip("\n"), "\n" + two + three)
        statuses = re.findall(r"HTTP/1\.1 ([0-9]{3}) ", reply)
        self.assertEqual(statuses, ["200", "405", "200"], reply)
        self.assertLess(reply.index("/base/first"), reply.index("/base/third"))
        self.assertEqual([seen.uri for seen in self.upstream.seen], ["/base/first", "/base/third"])
        self.assertEqual(len(self.front.upstreams["web"].pool._idle_connections), 1)
        [refused] = self.records("request.refused")
        self.assertEqual((refused["code"], refused["request"]["method"]), (405, "TRACE"))
        self.assertIn("credential_sha256", refused)

    @inlineCallbacks
    def test_reserved_kubernetes_identities_are_not_impersonated(self):
        """
        An identity with a group (or subject) in the API server's system:
        namespace is refused with 403 before anything is sent, the action
        recorded as blocked.
        """
        token = self.gateway.identity.dev_issuer.issue("alice", ("dev", "system:masters"), 600)
        status, _, body = yield self.curl("/k8s/api/v1/namespaces/default/pods", token=token)
        self.assertEqual(status, 403, body)
        self.assertIn("system:masters", json.loads(body)["message"])
        self.assertEqual(self.fake.requests, [])
        [(_, end)] = self.actions()
        self.assertEqual(end["outcome"]["status"], "blocked")
        # On a connection that does not impersonate, the group is no claim.
        status, _, body = yield self.curl("/web/x", token=token)
        self.assertEqual(status, 200, body)

    @inlineCallbacks
    def test_denied_request_is_403_status_naming_the_rule(self):
        """
        DELETE of a namespace is refused by the default policy: 403 with a
        Kubernetes Status naming the rule, the action blocked, nothing sent.
        """
        status, _, body = yield self.curl("/k8s/api/v1/namespaces/x", "-X", "DELETE")
        self.assertEqual(status, 403)
        document = json.loads(body)
        self.assertEqual(
            {k: document[k] for k in ("kind", "apiVersion", "status", "reason", "code")},
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403},
        )
        self.assertIn("no-namespace-delete", document["message"])
        self.assertEqual(self.fake.requests, [])
        [(start, end)] = self.actions()
        self.assertEqual((start["action"]["kind"], start["decision"]["effect"]), ("k8s.delete", "deny"))
        self.assertEqual(end["outcome"]["status"], "blocked")

    @inlineCallbacks
    def test_generic_connection_errors_are_plain_json(self):
        """A generic connection's errors are {"error": ...}, and an upstream 500's message is its outcome."""
        status, _, body = yield self.curl("/web/a%2Fb")
        self.assertEqual((status, set(json.loads(body))), (400, {"error"}))
        status, _, body = yield self.curl("/web/fail")
        self.assertEqual(status, 500)
        [(_, end)] = self.actions()
        self.assertEqual(
            (end["outcome"]["status"], end["outcome"]["code"], end["outcome"]["error"]),
            ("failed", "500", "the upstream broke"),
        )

    @inlineCallbacks
    def test_upstream_certificate_is_verified(self):
        """An upstream whose certificate the configured CA did not sign: 502, outcome failed."""
        status, _, body = yield self.curl("/wrongca/anything")
        self.assertEqual(status, 502, body)
        self.assertEqual(self.upstream.seen, [])
        [(_, end)] = self.actions()
        self.assertEqual(end["outcome"]["status"], "failed")
        self.assertIn("upstream unreachable", end["outcome"]["error"])

    @inlineCallbacks
    def test_large_response_streams_with_flat_memory(self):
        """
        A 100 MB response reaches curl whole, and the gateway (this process,
        upstream included) grows its peak RSS by a few MB only: the body is
        relayed as it arrives, never buffered.
        """
        clear_refs = Path("/proc/self/clear_refs")
        if not clear_refs.exists():
            raise SkipTest("needs /proc/self/clear_refs to reset the peak RSS")
        yield self.curl("/web/warm-up")
        size = 100 * 1024 * 1024
        clear_refs.write_text("5")
        before = vm_kb("VmRSS")
        status, _, received = yield self.curl(f"/web/big?size={size}", keep_body=False)
        growth_mb = (vm_kb("VmHWM") - before) / 1024
        self.assertEqual((status, received), (200, size))
        self.assertLess(growth_mb, 16, f"the gateway's peak RSS grew by {growth_mb:.1f} MB")
        end = self.actions()[-1][1]
        self.assertEqual((end["outcome"]["status"], end["outcome"]["bytes_out"]), ("succeeded", size))

    @inlineCallbacks
    def test_chunked_upload(self):
        """
        A chunked 5 MB upload reaches the upstream byte for byte, still
        chunked (it is streamed, so its length is not known in advance);
        the audit record says it was streamed, the outcome has its size.
        """
        data = os.urandom(5 * 1024 * 1024)
        path = Path(self.mktemp())
        path.write_bytes(data)
        status, _, body = yield self.curl(
            "/web/upload", "-X", "POST", "-T", str(path), "-H", "Transfer-Encoding: chunked",
            "-H", "Content-Type: application/octet-stream",
        )
        self.assertEqual(status, 200, body)
        [seen] = self.upstream.seen
        self.assertEqual((seen.size, seen.sha256), (len(data), hashlib.sha256(data).hexdigest()))
        self.assertIsNone(seen.header("content-length"))
        self.assertEqual(seen.header("transfer-encoding"), "chunked")
        [(start, end)] = self.actions()
        self.assertEqual(start["action"]["details"]["body"], {"streamed": True, "omitted": "not JSON or UTF-8 text"})
        self.assertEqual(end["outcome"]["bytes_in"], len(data))

    @inlineCallbacks
    def test_bodies_at_the_audit_cap_are_recorded_and_forwarded(self):
        """
        Bodies of exactly the audit cap (64 KiB) and one byte more, with a
        Content-Length (curl asks for 100 Continue) and chunked, are
        decided with their first 64 KiB in the record and reach the
        upstream whole.
        """
        for size in (65536, 65537):
            for chunked in (False, True):
                path = Path(self.mktemp())
                data = b"a" * size
                path.write_bytes(data)
                extra = ["-H", "Transfer-Encoding: chunked"] if chunked else []
                status, _, body = yield self.curl("/web/edge", "-X", "POST", "-T", str(path), *extra,
                                                  "-H", "Content-Type: text/plain")
                self.assertEqual(status, 200, body)
                seen = self.upstream.seen[-1]
                self.assertEqual((seen.size, seen.sha256), (size, hashlib.sha256(data).hexdigest()))
                start, end = self.actions()[-1]
                record = start["action"]["details"]["body"]
                self.assertEqual(len(record["text"]), 65536, (size, chunked))
                self.assertEqual(record.get("truncated", False), size > 65536, (size, chunked))
                self.assertEqual(end["outcome"]["bytes_in"], size)

    @inlineCallbacks
    def test_large_chunked_upload_streams_with_flat_memory(self):
        """
        A 128 MiB chunked upload (far beyond any buffer) reaches the
        upstream whole while the gateway (this process, upstream included)
        grows its peak RSS by a few MB only: the body is forwarded as it
        arrives, with the client paused while the upstream is behind.
        """
        clear_refs = Path("/proc/self/clear_refs")
        if not clear_refs.exists():
            raise SkipTest("needs /proc/self/clear_refs to reset the peak RSS")
        size = 128 * 1024 * 1024
        path = Path(self.mktemp())
        with path.open("wb") as f:
            f.truncate(size)  # sparse: zeros, read fast, no memory
        expected = hashlib.sha256()
        zeros = bytes(1024 * 1024)
        for _ in range(size // len(zeros)):
            expected.update(zeros)
        yield self.curl("/web/warm-up")
        clear_refs.write_text("5")
        before = vm_kb("VmRSS")
        status, _, body = yield self.curl(
            "/web/upload", "-X", "PUT", "-T", str(path), "-H", "Transfer-Encoding: chunked",
            "-H", "Content-Type: application/octet-stream",
        )
        growth_mb = (vm_kb("VmHWM") - before) / 1024
        self.assertEqual(status, 200, body)
        seen = self.upstream.seen[-1]
        self.assertEqual((seen.size, seen.sha256), (size, expected.hexdigest()))
        self.assertLess(growth_mb, 16, f"the gateway's peak RSS grew by {growth_mb:.1f} MB")
        start, end = self.actions()[-1]
        self.assertEqual(start["action"]["details"]["body"]["streamed"], True)
        self.assertEqual((end["outcome"]["status"], end["outcome"]["bytes_in"]), ("succeeded", size))

    @inlineCallbacks
    def test_secret_values_are_masked_in_the_audit_trail(self):
        """
        A Secret created through the gateway reaches the API server as sent,
        but its data and stringData values are "<masked>" in the audit
        record, and appear nowhere in the audit files.
        """
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db"},
            "data": {"password": "aHVudGVyMi1zZWNyZXQ="},
            "stringData": {"token": "plain-text-secret-value"},
        }
        status, _, body = yield self.curl(
            "/k8s/api/v1/namespaces/default/secrets", "-X", "POST", "-H", "Content-Type: application/json",
            "--data-binary", json.dumps(secret),
        )
        self.assertEqual(status, 201, body)
        [(start, end)] = self.actions()
        recorded = start["action"]["details"]["body"]["json"]
        self.assertEqual(recorded["data"], {"password": "<masked>"})
        self.assertEqual(recorded["stringData"], {"token": "<masked>"})
        text = self.audit_text()
        self.assertNotIn("aHVudGVyMi1zZWNyZXQ=", text)
        self.assertNotIn("plain-text-secret-value", text)

    @inlineCallbacks
    def test_one_session_per_client_connection(self):
        """
        Two requests on one curl connection are one session with two
        actions; the session ends when the connection closes.
        """
        auth = f"Authorization: Bearer {self.token}"
        code, output = yield run([
            require_curl(), "-sS", "--cacert", str(self.gateway.tls_cert), "-H", auth, "-o", "/dev/null",
            self.url("/web/one"), "--next", "--cacert", str(self.gateway.tls_cert), "-H", auth, "-o", "/dev/null",
            self.url("/web/two"),
        ])
        self.assertEqual(code, 0, output)
        [start] = self.records("session.start")
        self.assertEqual([a["session"] for a, _ in self.actions()], [start["session"]] * 2)
        yield self.gateway.sessions.close_all("test")  # nothing left open
        [end] = self.records("session.end")
        self.assertEqual(end["session"], start["session"])


class CollectionTests(_GatewayCase):
    """
    A request on a whole collection reaches objects of every name, and one
    with no namespace every namespace: rules on names and namespaces hold
    for it (checked on the API server's own objects).
    """

    POLICY = """
[[rule]]
name = "no-guarded"
effect = "deny"
k8s.resources = ["pods"]
k8s.verbs = ["get", "list", "delete", "deletecollection"]
k8s.names = ["guarded*"]
[[rule]]
name = "no-system-secrets"
effect = "deny"
k8s.resources = ["secrets"]
k8s.namespaces = ["kube-system"]
"""

    def setUp(self) -> None:
        require_curl()
        fake = FakeKubernetes().listen()
        self.addCleanup(fake.stop)
        self.start(fake, extra_policy=self.POLICY)

    @inlineCallbacks
    def test_deletecollection_and_cluster_wide_list_refused(self):
        self.fake.add_pod("guarded-1")
        self.fake.add_pod("web-1")
        self.fake.create("secrets", {"metadata": {"name": "root-ca"}, "data": {"key": "c2VjcmV0"}}, namespace="kube-system")
        status, _, body = yield self.curl("/k8s/api/v1/namespaces/default/pods", "-X", "DELETE")
        self.assertEqual(status, 403, body)
        self.assertIn(b"no-guarded", body)
        self.assertEqual(sorted(p["metadata"]["name"] for p in self.fake.list("pods")), ["guarded-1", "web-1"])
        status, _, body = yield self.curl("/k8s/api/v1/secrets")
        self.assertEqual(status, 403, body)
        self.assertIn(b"no-system-secrets", body)
        self.assertNotIn(b"c2VjcmV0", body)
        # One object by name, outside the rules, still goes.
        status, _, body = yield self.curl("/k8s/api/v1/namespaces/default/pods/web-1")
        self.assertEqual(status, 200, body)
        [start] = [s for s, _ in self.actions() if s["action"]["input"] == "DELETE /api/v1/namespaces/default/pods"]
        self.assertEqual(start["action"]["attributes"]["k8s.names"], ["", "*"])


class ShutdownTests(_GatewayCase):
    """A gateway that stops ends each client connection with its last response, as servers do."""

    def setUp(self) -> None:
        require_curl()
        fake = FakeKubernetes().listen()
        self.addCleanup(fake.stop)
        self.start(fake)

    @inlineCallbacks
    def test_request_in_progress_finishes_with_connection_close(self):
        """
        If the gateway stops while a request waits for its upstream, the
        response still reaches curl, saying Connection: close; the action
        succeeded, and session.end says terminated with the reason.
        """
        head = Path(self.mktemp())
        proc = spawn([
            require_curl(), "-sS", "--cacert", str(self.gateway.tls_cert), "-H", f"Authorization: Bearer {self.token}",
            "-D", str(head), "-o", "/dev/null", self.url("/web/slow?delay=2"),
        ], marker=None)
        yield wait_until(lambda: any(s.uri.startswith("/base/slow") for s in self.upstream.seen), "the upstream's request")
        yield self.gateway.stopService()
        code = yield proc.ended
        self.assertEqual(code, 0, proc.output)
        lines = head.read_text().lower().splitlines()
        self.assertTrue(lines[0].startswith("http/1.1 200"), lines)
        self.assertIn("connection: close", lines)
        [(_, end)] = self.actions()
        self.assertEqual(end["outcome"]["status"], "succeeded")
        [session] = self.records("session.end")
        self.assertEqual((session["end"]["status"], session["end"]["error"]), ("terminated", "the gateway is shutting down"))

    @inlineCallbacks
    def test_idle_keep_alive_connection_is_closed(self):
        """
        If a client holds a keep-alive connection open between requests when
        the gateway stops, the gateway closes it at once (not after its idle
        timeout), and the session ends terminated.
        """
        request = f"GET /web/one HTTP/1.1\nHost: gateway\nAuthorization: Bearer {self.token}\n"
        proc = spawn([sys.executable, "-c", _RAW_CLIENT, str(self.gateway.tls_cert), str(self.port), request, ""], marker=None)
        yield wait_until(lambda: self.records("action.end"), "the request's outcome")
        stopped = reactor.seconds()
        yield self.gateway.stopService()
        code = yield proc.ended
        self.assertLess(reactor.seconds() - stopped, 10)
        self.assertEqual(code, 0, proc.output)
        self.assertEqual(proc.output.count(b"HTTP/1.1 200"), 1, proc.output)
        [session] = self.records("session.end")
        self.assertEqual((session["end"]["status"], session["end"]["error"]), ("terminated", "the gateway is shutting down"))


# -- kubectl -------------------------------------------------------------------------


class WrongKindTests(_GatewayCase):
    """
    A path naming a connection of another kind: answered as an unknown
    connection is (403), saying which kind it is; one session.refused
    record; the target never reached.  Whom policy does not let open it
    learns nothing of its kind.
    """

    def setUp(self) -> None:
        require_curl()
        fake = FakeKubernetes().listen()
        self.addCleanup(fake.stop)
        port, self.tripwire = start_tripwire(self)
        host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ"
        self.start(
            fake,
            extra_config=f"""
[[connections]]
name = "appdb"
kind = "postgres"
address = "127.0.0.1:{port}"
database = "app"
user = "app"
tls = "disable"
[[connections]]
name = "web1"
kind = "ssh"
address = "127.0.0.1:{port}"
user = "deploy"
password_env = "HOOPGW_TEST_WEB_TOKEN"
host_key = "{host_key}"
[[connections]]
name = "secret-db"
kind = "postgres"
address = "127.0.0.1:{port}"
database = "app"
user = "app"
tls = "disable"
[[connections]]
name = "secret-web"
kind = "http"
upstream = "http://127.0.0.1:{port}"
""",
            extra_policy='[[rule]]\nname = "no-secrets"\neffect = "deny"\nconnections = ["secret-*"]\n'
            'actions = ["session.open"]\n',
        )
        self.before = len(list(search(self.base / "data" / "audit")))
        self.addCleanup(lambda: self.assertEqual((self.tripwire.peers, self.tripwire.received), ([], b"")))

    def written(self) -> list[dict[str, Any]]:
        return list(search(self.base / "data" / "audit"))[self.before:]

    @inlineCallbacks
    def test_postgres_and_ssh_connections(self):
        """
        curl https://gateway/appdb/... (a PostgreSQL connection) or
        /web1/... (SSH): 403 naming both kinds, in the form an unknown
        connection's answer takes for that path (the Kubernetes Status
        below /api); one session.refused record each, decided by the
        gateway itself.
        """
        status, headers, body = yield self.curl("/appdb/items")
        message = 'connection "appdb" is of kind postgres, not http'
        self.assertEqual((status, json.loads(body)), (403, {"error": message}))
        status, headers, body = yield self.curl("/web1/api/v1/pods")
        self.assertEqual(status, 403)
        self.assertEqual(headers["content-type"], "application/json")
        answer = json.loads(body)
        self.assertEqual(
            (answer["kind"], answer["reason"], answer["code"], answer["message"]),
            ("Status", "Forbidden", 403, 'connection "web1" is of kind ssh, not http'),
        )
        appdb, web1 = self.written()
        for record, name, kind in ((appdb, "appdb", "postgres"), (web1, "web1", "ssh")):
            message = f'connection "{name}" is of kind {kind}, not http'
            self.assertEqual(record["event"], "session.refused")
            self.assertEqual((record["connection"], record["protocol"], record["identity"]["sub"]), (name, "http", "alice"))
            self.assertEqual(record["decision"], {"effect": "deny", "rule": "hoopgw", "message": message})
            self.assertEqual(record["outcome"], {"status": "blocked", "error": message})
        self.assertEqual(self.actions(), [])

    @inlineCallbacks
    def test_kubectl(self):
        """
        kubectl pointed at a PostgreSQL connection fails (exit 1) exactly as
        pointed at an unknown name: Forbidden at discovery; a request it
        prints the answer of says which kind the connection is.
        """
        outputs, kubeconfigs = {}, {}
        for name in ("appdb", "nosuch"):
            kubeconfigs[name] = write_kubeconfig(
                self.base / f"kubeconfig-{name}", server=self.url(f"/{name}"),
                ca_pem=self.gateway.tls_cert.read_bytes(), token=self.token,
            )
            code, out, err = yield run_kubectl(kubeconfigs[name], "get", "pods")
            self.assertEqual((code, out), (1, ""), err)
            outputs[name] = re.sub(r"[EI]\d{4} [0-9:.]+ +\d+ ", "", err)  # klog's time and pid
        self.assertEqual(outputs["appdb"], outputs["nosuch"])
        self.assertIn("Error from server (Forbidden)", outputs["appdb"])
        # (--raw takes the path from the host: the server's /appdb is not prefixed.)
        code, out, err = yield run_kubectl(kubeconfigs["appdb"], "get", "--raw", "/appdb/api/v1/namespaces/default/pods")
        self.assertEqual((code, err), (1, 'Error from server (Forbidden): connection "appdb" is of kind postgres, not http\n'))
        records = self.written()
        self.assertEqual({r["event"] for r in records}, {"session.refused"})
        self.assertEqual({r["connection"] for r in records}, {"appdb", "nosuch"})

    @inlineCallbacks
    def test_forbidden_connection_of_another_kind(self):
        """
        If policy does not let the client open it, the answer is policy's,
        exactly as for a forbidden HTTP connection: no word of its kind.
        """
        answers = {}
        for name in ("secret-db", "secret-web"):
            for path in ("/x", "/api/v1/pods"):
                status, headers, body = yield self.curl(f"/{name}{path}")
                answers[name, path] = (status, headers["content-type"], body.replace(name.encode(), b"<name>"))
        for path in ("/x", "/api/v1/pods"):
            self.assertEqual(answers["secret-db", path], answers["secret-web", path])
            self.assertEqual(answers["secret-db", path][0], 403)
            self.assertEqual(json.loads(answers["secret-db", path][2])["message" if path != "/x" else "error"],
                             'denied by policy rule "no-secrets"')
            self.assertNotIn(b"postgres", answers["secret-db", path][2])
        records = self.written()
        self.assertEqual([(r["event"], r["decision"]["rule"]) for r in records], [("session.refused", "no-secrets")] * 4)

    @inlineCallbacks
    def test_odd_names(self):
        """
        Names are exact: APPDB or "appdb " name no connection (refused as
        unknown, nothing of appdb's kind said); a percent-encoded name is
        the name it spells, and refused as that connection is.
        """
        for path in ("/APPDB/x", "/Appdb/x"):
            status, _, body = yield self.curl(path)
            self.assertEqual((status, json.loads(body)["message"]), (403, f"no connection named {path[1:6]!r}"))
        # No connection name holds a space: refused with the path.
        status, _, body = yield self.curl("/appdb%20/x")
        self.assertEqual(status, 404, body)
        self.assertNotIn(b"postgres", body)
        status, _, body = yield self.curl("/%61ppdb/x")
        self.assertEqual((status, json.loads(body)), (403, {"error": 'connection "appdb" is of kind postgres, not http'}))
        self.assertEqual(
            [(r["event"], r.get("connection")) for r in self.written()],
            [("session.refused", "APPDB"), ("session.refused", "Appdb"), ("request.refused", None),
             ("session.refused", "appdb")],
        )


class KubectlTests(_GatewayCase):
    timeout = 180

    def setUp(self) -> None:
        fake = start_fake_k8s(self)
        self.start(fake)
        self.kubeconfig = write_kubeconfig(
            self.base / "kubeconfig", server=self.url("/k8s"), ca_pem=self.gateway.tls_cert.read_bytes(),
            token=self.token,
        )

    @inlineCallbacks
    def test_get_pods(self):
        """kubectl get pods lists the pod; the API server saw the gateway's token and alice impersonated."""
        self.fake.add_pod("web")
        code, out, err = yield run_kubectl(self.kubeconfig, "get", "pods")
        self.assertEqual(code, 0, err)
        self.assertIn("web", out)
        self.assertTrue(self.fake.requests)
        for request in self.fake.requests:
            self.assertEqual((request.bearer_token, request.impersonate_user), (self.fake.token, "alice"))
        kinds = {start["action"]["kind"] for start, _ in self.actions()}
        self.assertIn("k8s.list", kinds)

    @inlineCallbacks
    def test_apply(self):
        """kubectl apply -f creates the pod through the gateway; the create is audited with its body."""
        manifest = self.base / "pod.json"
        manifest.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "applied"},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        }))
        code, out, err = yield run_kubectl(self.kubeconfig, "apply", "-f", str(manifest))
        self.assertEqual(code, 0, err)
        self.assertIn("pod/applied created", out)
        self.assertEqual(self.fake.get("pods", "applied")["metadata"]["name"], "applied")
        [create] = [s for s, _ in self.actions() if s["action"]["kind"] == "k8s.create"]
        self.assertEqual(create["action"]["details"]["body"]["json"]["metadata"]["name"], "applied")

    @inlineCallbacks
    def test_delete_namespace_is_denied(self):
        """kubectl delete namespace prints the gateway's refusal naming the rule; the namespace stays."""
        self.fake.create("namespaces", {"metadata": {"name": "x"}})
        code, out, err = yield run_kubectl(self.kubeconfig, "delete", "namespace", "x")
        self.assertNotEqual(code, 0)
        self.assertIn("Forbidden", err)
        self.assertIn("no-namespace-delete", err)
        self.assertEqual(self.fake.get("namespaces", "x")["metadata"]["name"], "x")

    @inlineCallbacks
    def test_logs_follow_streams(self):
        """kubectl logs -f prints lines as the API server sends them, and ends when the log does."""
        self.fake.add_pod("web")
        proc = spawn_kubectl(self.kubeconfig, "logs", "-f", "web")
        yield self.fake.wait_for_request(lambda r: r.path.endswith("/log"))
        self.fake.push_log("web", "first line\n")
        yield proc.wait_for("first line")
        self.fake.push_log("web", "second line\n")
        yield proc.wait_for("second line")
        self.fake.end_logs("web")
        code, out, err = yield proc.ended
        self.assertEqual(code, 0, err)
        [(start, end)] = [a for a in self.actions() if a[0]["action"]["kind"] == "k8s.log"]
        self.assertEqual(end["outcome"]["status"], "succeeded")

    @inlineCallbacks
    def test_get_watch_streams(self):
        """kubectl get -w shows a pod created after the watch started."""
        self.fake.add_pod("first")
        proc = spawn_kubectl(self.kubeconfig, "get", "pods", "-w")
        self.addCleanup(proc.kill)
        yield proc.wait_for("first")
        yield self.fake.wait_for_request(lambda r: r.query.get("watch") in (["1"], ["true"]))
        self.fake.add_pod("second")
        yield proc.wait_for("second")
        yield proc.kill()
        yield wait_until(lambda: self.records("session.end"), "the watch's session to end")
        [(_, end)] = [a for a in self.actions() if a[0]["action"]["kind"] == "k8s.watch"]
        self.assertEqual(end["outcome"]["error"], "client went away")
        # The watch's outcome is in the trail before its session's end.
        events = [(r["event"], r.get("action", {}).get("kind")) for r in search(self.base / "data" / "audit")]
        self.assertLess(events.index(("action.end", "k8s.watch")), events.index(("session.end", None)))

    @inlineCallbacks
    def test_exec_credential_plugin(self):
        """
        A kubeconfig whose user runs `hoopgw token exec-credential` gets a
        token from the dev issuer and lists pods as that subject.
        """
        self.fake.add_pod("web")
        kubeconfig = write_kubeconfig(
            self.base / "kubeconfig-exec", server=self.url("/k8s"), ca_pem=self.gateway.tls_cert.read_bytes(),
            exec_credential={
                "command": sys.executable,
                "args": ["-c", "import sys; from hoopgw.cli import main; sys.exit(main())",
                         "--config", str(self.base / "hoopgw.toml"),
                         "token", "exec-credential", "--sub", "bob", "--group", "ops"],
                "env": [{"name": "PYTHONPATH", "value": PACKAGE_ROOT}],
            },
        )
        code, out, err = yield run_kubectl(kubeconfig, "get", "pods")
        self.assertEqual(code, 0, err)
        self.assertIn("web", out)
        self.assertEqual(self.fake.requests[-1].impersonate_user, "bob")
        self.assertEqual(self.fake.requests[-1].impersonate_groups, ["ops"])

    @inlineCallbacks
    def test_exec_is_decided_before_anything_is_sent(self):
        """
        kubectl exec is decided as k8s.exec before the upgrade reaches the
        API server: refused by the test's exec rule, kubectl prints the
        rule's message and the API server sees no exec request.
        """
        self.fake.add_pod("locked")
        code, out, err = yield run_kubectl(self.kubeconfig, "exec", "locked", "--", "echo", "hi")
        self.assertNotEqual(code, 0)
        self.assertIn("no-exec-in-tests", err)
        self.assertFalse([r for r in self.fake.requests if r.path.endswith("/exec")])
        blocked = [s for s, _ in self.actions() if s["action"]["kind"] == "k8s.exec"]
        self.assertTrue(blocked)
        self.assertEqual({s["action"]["input"] for s in blocked}, {"echo hi"})

    @inlineCallbacks
    def exec_session_end(self):
        """The session.end of the session the (one) k8s.exec ran in."""
        [(start, _)] = self.exec_actions()
        ended = lambda: [r for r in self.records("session.end") if r["session"] == start["session"]]
        yield wait_until(ended, "the exec's session to end")
        return ended()[0]

    def exec_actions(self) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        return [a for a in self.actions() if a[0]["action"]["kind"] == "k8s.exec"]

    @inlineCallbacks
    def test_exec_relays_output_and_exit_status(self):
        """
        An allowed kubectl exec is relayed over WebSocket: its output and
        exit status come through; the API server saw the gateway's token
        and alice impersonated; the action ends with 101 and byte counts.
        """
        self.fake.add_pod("web")
        code, out, err = yield run_kubectl(self.kubeconfig, "exec", "web", "--", "echo", "hi")
        self.assertEqual((code, out), (0, "hi\n"), err)
        [recorded] = [r for r in self.fake.requests if r.path.endswith("/exec")]
        self.assertEqual((recorded.bearer_token, recorded.impersonate_user), (self.fake.token, "alice"))
        self.assertIn("v5.channel.k8s.io", recorded.header("sec-websocket-protocol") or "")
        [(start, end)] = self.exec_actions()
        self.assertEqual(start["action"]["input"], "echo hi")
        self.assertEqual((end["outcome"]["status"], end["outcome"]["code"]), ("succeeded", "101"))
        self.assertGreater(end["outcome"]["bytes_out"], 0)
        self.assertIn("duration_us", end["outcome"])
        yield wait_until(lambda: self.records("session.end"), "the exec's session to end")

        code, out, err = yield run_kubectl(self.kubeconfig, "exec", "web", "--", "sh", "-c", "exit 3")
        self.assertEqual(code, 3, err)

    def test_exec_terminal_recorded(self):
        """
        kubectl exec -it on a real terminal (a pty from script), over
        WebSocket: the session works through the gateway and is recorded as
        asciicast from the channels (the prompt and the answer as output),
        its SHA-256 in session.end, playable by stock asciinema cat;
        keystrokes are not recorded by default.
        """
        return self.terminal_recorded()

    def test_exec_terminal_recorded_over_spdy(self):
        """The same with kubectl's SPDY/3.1 transport (before 1.30, or its fallback)."""
        return self.terminal_recorded(SPDY_EXEC)

    @inlineCallbacks
    def terminal_recorded(self, env=None):
        self.fake.add_pod("web")

        def greet(session, args):
            session.stdout(b"name? ")
            typed = bytearray()

            def more(data: bytes) -> None:
                typed.extend(data)
                if b"\r" in typed or b"\n" in typed:
                    name = bytes(typed).strip().decode()
                    session.stdout(f"\r\nhello {name}\r\n".encode())
                    session.exit(0)

            session.on_stdin = more

        self.fake.commands["greet"] = greet
        proc = spawn_kubectl_tty(self.kubeconfig, "exec", "-it", "web", "--", "greet", env=env)
        yield proc.wait_for(b"name? ")
        proc.write(b"bob\r")
        code, out, err = yield proc.ended
        self.assertEqual(code, 0, out + err)
        self.assertIn("hello bob", out)
        [recorded] = [r for r in self.fake.requests if r.path.endswith("/exec")]
        self.assertEqual(recorded.query.get("tty"), ["true"])
        end = yield self.exec_session_end()
        path = Path(end["end"]["recording"])
        self.assertEqual(path.parent, self.base / "data" / "recordings")
        self.assertEqual(end["end"]["recording_sha256"], hashlib.sha256(path.read_bytes()).hexdigest())
        cast = read_asciicast(path)
        self.assertEqual(cast.header["command"], "greet")
        self.assertIn("name? ", cast.output())
        self.assertIn("hello bob", cast.output())
        self.assertEqual(cast.input(), "")
        code, played = yield run([sys.executable, "-m", "asciinema", "cat", str(path)])
        self.assertEqual(code, 0, played)
        self.assertIn(b"hello bob", played)

    @inlineCallbacks
    def test_exec_without_terminal_not_recorded(self):
        """A kubectl exec without -t has no terminal to record."""
        self.fake.add_pod("web")
        code, out, err = yield run_kubectl(self.kubeconfig, "exec", "web", "--", "echo", "hi")
        self.assertEqual((code, out), (0, "hi\n"), err)
        end = yield self.exec_session_end()
        self.assertNotIn("recording", end["end"])

    def test_exec_without_terminal_recorded_if_asked(self):
        """
        On a connection with record_exec_output (and record_input), an exec
        without a terminal is recorded too: stdin as input, stdout as output,
        the command in the header, the SHA-256 in session.end.
        """
        return self.exec_output_recorded()

    def test_exec_without_terminal_recorded_over_spdy(self):
        """The same with kubectl's SPDY/3.1 transport."""
        return self.exec_output_recorded(SPDY_EXEC)

    @inlineCallbacks
    def exec_output_recorded(self, env=None):
        self.fake.add_pod("web")
        kubeconfig = write_kubeconfig(
            self.base / "kubeconfig-rec", server=self.url("/k8s-rec"), ca_pem=self.gateway.tls_cert.read_bytes(),
            token=self.token,
        )
        code, out, err = yield run_kubectl(kubeconfig, "exec", "-i", "web", "--", "cat", stdin=b"one\ntwo\n", env=env)
        self.assertEqual((code, out), (0, "one\ntwo\n"), err)
        [recorded] = [r for r in self.fake.requests if r.path.endswith("/exec")]
        self.assertNotIn("tty", recorded.query)
        end = yield self.exec_session_end()
        path = Path(end["end"]["recording"])
        self.assertEqual(end["end"]["recording_sha256"], hashlib.sha256(path.read_bytes()).hexdigest())
        cast = read_asciicast(path)
        self.assertEqual(cast.header["command"], "cat")
        self.assertEqual(cast.output(), "one\ntwo\n")
        self.assertEqual(cast.input(), "one\ntwo\n")

    @inlineCallbacks
    def test_client_gone_first_ends_the_exec(self):
        """
        If kubectl goes away while the command still runs (killed), the
        gateway closes its upstream connection too, and the exec's
        action.end and the session.end are written.
        """
        self.fake.add_pod("web")
        proc = spawn_kubectl(self.kubeconfig, "exec", "-i", "web", "--", "cat")  # stdin held open
        proc.write(b"hello\n")
        yield proc.wait_for(b"hello")  # relayed both ways: the upgrade is up
        yield proc.kill("KILL")
        yield wait_until(lambda: (a := self.exec_actions()) and all(e for _, e in a), "the exec's action to end")
        yield self.exec_session_end()

    @inlineCallbacks
    def test_exec_with_stdin(self):
        """kubectl exec -i ... cat: stdin goes through to the container and back."""
        self.fake.add_pod("web")
        code, out, err = yield run_kubectl(self.kubeconfig, "exec", "-i", "web", "--", "cat", stdin=b"one\ntwo\n")
        self.assertEqual((code, out), (0, "one\ntwo\n"), err)
        [(_, end)] = self.exec_actions()
        self.assertGreater(end["outcome"]["bytes_in"], len(b"one\ntwo\n"))

    @inlineCallbacks
    def test_idle_exec_closed(self):
        """
        An exec with nothing sent either way for the connection's
        upgrade_idle_timeout is closed by the gateway: kubectl ends, and the
        action ends failed saying why.
        """
        self.fake.add_pod("web")
        kubeconfig = write_kubeconfig(
            self.base / "kubeconfig-idle", server=self.url("/k8s-idle"),
            ca_pem=self.gateway.tls_cert.read_bytes(), token=self.token,
        )
        proc = spawn_kubectl(kubeconfig, "exec", "-i", "web", "--", "cat")  # stdin held open, silent
        code, out, err = yield proc.ended
        self.assertNotEqual(code, 0)
        yield wait_until(lambda: (a := self.exec_actions()) and all(e for _, e in a), "the exec's action to end")
        [(start, end)] = self.exec_actions()
        self.assertEqual(start["connection"], "k8s-idle")
        self.assertEqual(
            (end["outcome"]["status"], end["outcome"]["error"]),
            ("failed", "closed after 1 s without traffic (upgrade_idle_timeout)"),
        )

    @inlineCallbacks
    def test_attach_with_stdin(self):
        """
        kubectl attach -i: decided and recorded as k8s.attach, relayed over
        WebSocket like exec; stdin reaches the container's process (the
        fake's is cat) and its output comes back.
        """
        self.fake.add_pod("web")
        code, out, err = yield run_kubectl(self.kubeconfig, "attach", "-i", "web", stdin=b"ping\n")
        self.assertIn("ping", out, err)
        [recorded] = [r for r in self.fake.requests if r.path.endswith("/attach")]
        self.assertEqual(recorded.impersonate_user, "alice")
        [(start, end)] = [a for a in self.actions() if a[0]["action"]["kind"] == "k8s.attach"]
        self.assertEqual(start["action"]["attributes"]["k8s.subresources"], ["attach"])
        self.assertEqual((end["outcome"]["status"], end["outcome"]["code"]), ("succeeded", "101"))

    @inlineCallbacks
    def test_exec_over_spdy(self):
        """
        kubectl exec with WebSocket switched off upgrades to SPDY/3.1 and is
        relayed like the WebSocket path: stdin reaches cat and comes back,
        a non-zero exit status comes through, each run is one k8s.exec
        ending with 101 and byte counts.
        """
        self.fake.add_pod("web")
        code, out, err = yield run_kubectl(
            self.kubeconfig, "exec", "-i", "web", "--", "cat", stdin=b"one\ntwo\n", env=SPDY_EXEC
        )
        self.assertEqual((code, out), (0, "one\ntwo\n"), err)
        [recorded] = [r for r in self.fake.requests if r.path.endswith("/exec")]
        self.assertEqual((recorded.method, recorded.header("upgrade")), ("POST", "SPDY/3.1"))
        self.assertEqual((recorded.bearer_token, recorded.impersonate_user), (self.fake.token, "alice"))
        [(start, end)] = self.exec_actions()
        self.assertEqual(start["action"]["input"], "cat")
        self.assertEqual((end["outcome"]["status"], end["outcome"]["code"]), ("succeeded", "101"))
        self.assertGreater(end["outcome"]["bytes_in"], len(b"one\ntwo\n"))
        self.assertGreater(end["outcome"]["bytes_out"], len(b"one\ntwo\n"))

        code, _, err = yield run_kubectl(self.kubeconfig, "exec", "web", "--", "sh", "-c", "exit 3", env=SPDY_EXEC)
        self.assertEqual(code, 3, err)

    def port_forward_actions(self) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        return [a for a in self.actions() if a[0]["action"]["kind"] == "k8s.portforward"]

    @inlineCallbacks
    def port_forward(self, env: dict[str, str] | None = None) -> Any:
        """
        kubectl port-forward pod/web :80 through the gateway to the test's
        echo server; fires with the fake's portforward request and the
        action (start, end) once kubectl is stopped.
        """
        self.fake.add_pod("web")
        self.fake.expose("web", 80, start_echo_server(self))
        proc, port = yield start_port_forward(self.kubeconfig, "pod/web", ":80", env=env)
        self.addCleanup(proc.kill)
        sent = 0
        for i in range(2):  # one SPDY stream pair per local connection
            data = b"ping %d\n" % i * 500
            echoed = yield exchange(port, data)
            self.assertEqual(echoed, data)
            sent += len(data)
        yield proc.kill()
        ended = lambda: (actions := self.port_forward_actions()) and all(end for _, end in actions)
        yield wait_until(ended, "the port-forward's action to end")
        [recorded] = [r for r in self.fake.requests if r.path.endswith("/portforward")]
        self.assertEqual((recorded.bearer_token, recorded.impersonate_user), (self.fake.token, "alice"))
        [(start, end)] = self.port_forward_actions()
        self.assertEqual(start["action"]["attributes"]["k8s.subresources"], ["portforward"])
        self.assertEqual(start["action"]["details"]["name"], "web")
        self.assertEqual((end["outcome"]["status"], end["outcome"]["code"]), ("succeeded", "101"))
        # The forwarded bytes, in SPDY frames, each way.
        self.assertGreater(end["outcome"]["bytes_in"], sent)
        self.assertGreater(end["outcome"]["bytes_out"], sent)
        # Each forwarded connection, with the port kubectl named only inside
        # its SPDY stream headers, as an observed action of the same session.
        connections = [
            (s, e) for s, e in self.actions() if s["action"]["kind"] == "k8s.portforward.connection"
        ]
        self.assertEqual([s["action"]["details"]["port"] for s, _ in connections], ["80", "80"])
        self.assertEqual({s["session"] for s, _ in connections}, {start["session"]})
        self.assertEqual({s["action"]["input"] for s, _ in connections}, {"default/web port 80"})
        self.assertEqual({e["outcome"]["status"] for _, e in connections}, {"succeeded"})
        return recorded, (start, end)

    @inlineCallbacks
    def test_port_forward(self):
        """
        kubectl port-forward (1.31+: SPDY/3.1 tunnelled in WebSocket, the
        SPDY/3.1+portforward.k8s.io subprotocol) is relayed at the first
        attempt, without falling back: bytes reach the pod's port and come
        back; one k8s.portforward action, 101, with byte counts.
        """
        recorded, _ = yield self.port_forward()
        self.assertEqual((recorded.method, recorded.header("upgrade")), ("GET", "websocket"))
        self.assertEqual(recorded.header("sec-websocket-protocol"), "SPDY/3.1+portforward.k8s.io")

    @inlineCallbacks
    def test_port_forward_over_spdy(self):
        """kubectl port-forward with WebSocket switched off upgrades to SPDY/3.1 and is relayed the same way."""
        recorded, _ = yield self.port_forward(SPDY_PORT_FORWARD)
        self.assertEqual((recorded.method, recorded.header("upgrade")), ("POST", "SPDY/3.1"))
        self.assertEqual(recorded.header("x-stream-protocol-version"), "portforward.k8s.io")

    @inlineCallbacks
    def test_port_forward_is_decided_before_anything_is_sent(self):
        """
        kubectl port-forward refused by the test's portforward rule: kubectl
        prints the rule's message and forwards nothing; both of its attempts
        (WebSocket, then the SPDY fallback) are blocked k8s.portforward
        actions and the API server sees neither.
        """
        self.fake.add_pod("locked")
        code, out, err = yield run_kubectl(self.kubeconfig, "port-forward", "--address", "127.0.0.1",
                                           "pod/locked", ":80")
        self.assertNotEqual(code, 0)
        self.assertIn("port-forward is not allowed here", err)
        self.assertNotIn("Forwarding from", out)
        self.assertFalse([r for r in self.fake.requests if r.path.endswith("/portforward")])
        actions = self.port_forward_actions()
        self.assertEqual(len(actions), 2, actions)
        self.assertEqual({e["outcome"]["status"] for _, e in actions}, {"blocked"})
        self.assertEqual({s["decision"]["rule"] for s, _ in actions}, {"no-port-forward-in-tests"})

    @inlineCallbacks
    def test_failed_upgrade_is_passed_on_and_the_connection_closed(self):
        """
        An upgrade the API server refuses (a pod that does not exist) comes
        back with its status and message, and the client connection is
        closed after it (CVE-2018-1002105): nothing sent after it is read.
        """
        code, _, err = yield run_kubectl(self.kubeconfig, "exec", "ghost", "--", "echo", "hi")
        self.assertNotEqual(code, 0)
        self.assertIn("not found", err)
        head = (
            "GET /k8s/api/v1/namespaces/default/pods/ghost/exec?command=id&stdout=true HTTP/1.1\n"
            "Host: gateway\n"
            f"Authorization: Bearer {self.token}\n"
            "Connection: Upgrade\nUpgrade: websocket\nSec-WebSocket-Version: 13\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Protocol: v5.channel.k8s.io\n"
        )
        follow = (
            "GET /k8s/api/v1/namespaces/default/pods HTTP/1.1\nHost: gateway\n"
            f"Authorization: Bearer {self.token}\n\n"
        )
        before = len(self.fake.requests)
        reply = yield self.raw(head, follow)
        self.assertTrue(reply.startswith("HTTP/1.1 404 "), reply)
        self.assertEqual(reply.count("HTTP/1.1"), 1, reply)
        self.assertIn("connection: close", reply.lower())
        self.assertEqual([r.path for r in self.fake.requests[before:]],
                         ["/api/v1/namespaces/default/pods/ghost/exec"])
        ends = [e for _, e in self.exec_actions()]
        self.assertTrue(ends)
        self.assertTrue(all(e["outcome"]["status"] == "failed" for e in ends))

    @inlineCallbacks
    def test_other_upgrades_are_refused(self):
        """An upgrade to anything but the Kubernetes WebSocket channels (or SPDY/3.1) is 400, never forwarded."""
        self.fake.add_pod("web")
        head = (
            "GET /k8s/api/v1/namespaces/default/pods/web/exec?command=id&stdout=true HTTP/1.1\n"
            "Host: gateway\n"
            f"Authorization: Bearer {self.token}\n"
            "Connection: Upgrade\nUpgrade: websocket\nSec-WebSocket-Version: 13\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Protocol: chat\n"
        )
        reply = yield self.raw(head)
        self.assertTrue(reply.startswith("HTTP/1.1 400 "), reply)
        self.assertIn("v5.channel.k8s.io", reply)
        self.assertFalse([r for r in self.fake.requests if r.path.endswith("/exec")])
