"""
The fake Kubernetes API server (L{tests.integration._fake_k8s}) driven by
the real kubectl, with no gateway in between: if these pass, a gateway
test that fails has found a gateway bug, not a fake one.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.integration._fake_k8s import (
    SPDY_DICTIONARY,
    SpdyConnection,
    exchange,
    run_kubectl,
    spawn_kubectl,
    start_echo_server,
    start_fake_k8s,
    start_port_forward,
)

# kubectl's switches off WebSocket (1.30+ tries it first): SPDY/3.1 only.
SPDY_EXEC = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
SPDY_PORT_FORWARD = {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}

POD_MANIFEST = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "app", "labels": {"tier": "one"}},
    "spec": {"containers": [{"name": "main", "image": "nginx:1"}]},
}


class FakeKubernetesTests(TestCase):
    def setUp(self) -> None:
        self.fake = start_fake_k8s(self)
        self.kubeconfig = self.fake.write_kubeconfig(self.mktemp())

    def kubectl(self, *args: str, stdin: bytes | None = None):
        return run_kubectl(self.kubeconfig, *args, stdin=stdin)

    def assertSucceeded(self, result: tuple[int, str, str]) -> str:
        code, out, err = result
        self.assertEqual(code, 0, f"kubectl failed ({code}):\n{out}\n{err}")
        return out

    # -- discovery and reads ----------------------------------------------

    @inlineCallbacks
    def test_get_pods_table(self):
        """C{kubectl get pods} prints the server's Table: name, ready, status, restarts, age."""
        self.fake.add_pod("web", containers=["main", "sidecar"])
        out = self.assertSucceeded((yield self.kubectl("get", "pods")))
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["NAME", "READY", "STATUS", "RESTARTS", "AGE"])
        self.assertEqual(lines[1].split()[:4], ["web", "2/2", "Running", "0"])
        table_requests = [r for r in self.fake.requests if r.path == "/api/v1/namespaces/default/pods"]
        self.assertIn("as=Table", table_requests[0].header("Accept"))

    @inlineCallbacks
    def test_get_pod_json(self):
        """C{kubectl get pod x -o json} prints the stored object with full metadata."""
        created = self.fake.add_pod("web", labels={"app": "web"})
        pod = json.loads(self.assertSucceeded((yield self.kubectl("get", "pod", "web", "-o", "json"))))
        self.assertEqual((pod["kind"], pod["apiVersion"]), ("Pod", "v1"))
        self.assertEqual(pod["metadata"]["name"], "web")
        self.assertEqual(pod["metadata"]["namespace"], "default")
        self.assertEqual(pod["metadata"]["labels"], {"app": "web"})
        for field in ("uid", "resourceVersion", "creationTimestamp"):
            self.assertEqual(pod["metadata"][field], created["metadata"][field])

    @inlineCallbacks
    def test_get_missing_pod(self):
        """A missing object is a NotFound Status, which kubectl reports and exits 1 for."""
        code, _out, err = yield self.kubectl("get", "pod", "ghost")
        self.assertEqual(code, 1)
        self.assertIn('pods "ghost" not found', err)

    # -- authentication and the request record ---------------------------

    @inlineCallbacks
    def test_wrong_token(self):
        """Without the fake's token every request gets a 401 Status and kubectl fails."""
        kubeconfig = self.fake.write_kubeconfig(self.mktemp(), token="not-the-token")
        code, _out, err = yield run_kubectl(kubeconfig, "get", "pods")
        self.assertNotEqual(code, 0)
        self.assertIn("the server has asked for the client to provide credentials", err)
        self.assertTrue(self.fake.requests)
        self.assertTrue(all(r.bearer_token == "not-the-token" for r in self.fake.requests))

    @inlineCallbacks
    def test_records_impersonation(self):
        """Each request is recorded with its headers: here kubectl's --as/--as-group impersonation."""
        self.assertSucceeded(
            (yield self.kubectl("get", "pods", "--as", "alice", "--as-group", "dev", "--as-group", "ops"))
        )
        listing = next(r for r in self.fake.requests if r.path == "/api/v1/namespaces/default/pods")
        self.assertEqual(listing.method, "GET")
        self.assertEqual(listing.query["limit"], ["500"])
        self.assertEqual(listing.impersonate_user, "alice")
        self.assertEqual(listing.impersonate_groups, ["dev", "ops"])
        self.assertEqual(listing.bearer_token, self.fake.token)
        self.assertEqual(listing.body_size, 0)

    @inlineCallbacks
    def test_exec_credential_plugin(self):
        """A kubeconfig whose user is an exec credential plugin: kubectl sends the token it prints."""
        credential = {
            "apiVersion": "client.authentication.k8s.io/v1",
            "kind": "ExecCredential",
            "status": {"token": self.fake.token},
        }
        kubeconfig = self.fake.write_kubeconfig(
            self.mktemp(),
            token=None,
            exec_credential={"command": sys.executable, "args": ["-c", f"print({json.dumps(json.dumps(credential))})"]},
        )
        self.fake.add_pod("web")
        out = self.assertSucceeded((yield run_kubectl(kubeconfig, "get", "pods", "-o", "name")))
        self.assertEqual(out.split(), ["pod/web"])

    # -- writes ------------------------------------------------------------

    @inlineCallbacks
    def test_apply_creates_then_updates(self):
        """
        C{kubectl apply -f} (client-side, default validation) creates the pod,
        then patches it with a strategic merge patch on the second run.
        """
        manifest = self.mktemp()
        with open(manifest, "w") as f:
            json.dump(POD_MANIFEST, f)
        out = self.assertSucceeded((yield self.kubectl("apply", "-f", manifest)))
        self.assertIn("pod/app created", out)
        first = self.fake.get("pods", "app")
        self.assertIn("kubectl.kubernetes.io/last-applied-configuration", first["metadata"]["annotations"])

        changed = json.loads(json.dumps(POD_MANIFEST))
        changed["metadata"]["labels"] = {"tier": "two"}
        changed["spec"]["containers"][0]["image"] = "nginx:2"
        with open(manifest, "w") as f:
            json.dump(changed, f)
        out = self.assertSucceeded((yield self.kubectl("apply", "-f", manifest)))
        self.assertIn("pod/app configured", out)
        second = self.fake.get("pods", "app")
        self.assertEqual(second["metadata"]["labels"], {"tier": "two"})
        self.assertEqual(second["spec"]["containers"][0]["image"], "nginx:2")
        self.assertEqual(second["metadata"]["uid"], first["metadata"]["uid"])
        self.assertGreater(int(second["metadata"]["resourceVersion"]), int(first["metadata"]["resourceVersion"]))
        patch = next(r for r in self.fake.requests if r.method == "PATCH")
        self.assertEqual(patch.header("Content-Type"), "application/strategic-merge-patch+json")

    @inlineCallbacks
    def test_create_configmap_from_file(self):
        """C{kubectl create -f} of a ConfigMap, then C{get configmaps} shows its data count."""
        manifest = self.mktemp()
        with open(manifest, "w") as f:
            json.dump(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "settings"},
                    "data": {"a": "1", "b": "2"},
                },
                f,
            )
        self.assertSucceeded((yield self.kubectl("create", "-f", manifest)))
        out = self.assertSucceeded((yield self.kubectl("get", "configmaps")))
        self.assertEqual(out.splitlines()[1].split()[:2], ["settings", "2"])

    @inlineCallbacks
    def test_create_typed(self):
        """
        C{kubectl create namespace|configmap|secret} send protobuf bodies
        (kubectl's typed clients); the fake decodes what they set.
        """
        self.assertSucceeded((yield self.kubectl("create", "namespace", "team")))
        self.assertSucceeded((yield self.kubectl("create", "configmap", "cfg", "-n", "team", "--from-literal=a=1")))
        self.assertSucceeded(
            (yield self.kubectl("create", "secret", "generic", "pw", "-n", "team", "--from-literal=pw=hunter2"))
        )
        creates = [r for r in self.fake.requests if r.method == "POST"]
        self.assertEqual([r.header("Content-Type") for r in creates], ["application/vnd.kubernetes.protobuf"] * 3)
        self.assertEqual(self.fake.get("configmaps", "cfg", namespace="team")["data"], {"a": "1"})
        secret = self.fake.get("secrets", "pw", namespace="team")
        self.assertEqual((secret["type"], secret["data"]), ("Opaque", {"pw": "aHVudGVyMg=="}))
        out = self.assertSucceeded((yield self.kubectl("get", "secrets", "-n", "team")))
        self.assertEqual(out.splitlines()[1].split()[:3], ["pw", "Opaque", "1"])

    @inlineCallbacks
    def test_delete_pod(self):
        """C{kubectl delete pod} removes it and waits until a read says it is gone."""
        self.fake.add_pod("web")
        out = self.assertSucceeded((yield self.kubectl("delete", "pod", "web")))
        self.assertIn('pod "web" deleted', out)
        self.assertEqual(self.fake.list("pods"), [])

    @inlineCallbacks
    def test_delete_namespace(self):
        """C{kubectl delete namespace} removes the namespace and what was in it."""
        self.fake.create("namespaces", {"metadata": {"name": "team"}})
        self.fake.add_pod("job", namespace="team")
        out = self.assertSucceeded((yield self.kubectl("delete", "namespace", "team")))
        self.assertIn('namespace "team" deleted', out)
        self.assertEqual([n["metadata"]["name"] for n in self.fake.list("namespaces")], ["default", "kube-system"])
        self.assertEqual(self.fake.list("pods", namespace="team"), [])

    @inlineCallbacks
    def test_delete_by_label(self):
        """C{kubectl delete pods -l} deletes only the matching pods."""
        self.fake.add_pod("a", labels={"app": "x"})
        self.fake.add_pod("b", labels={"app": "y"})
        self.assertSucceeded((yield self.kubectl("delete", "pods", "-l", "app=x")))
        self.assertEqual([p["metadata"]["name"] for p in self.fake.list("pods")], ["b"])

    # -- streams -------------------------------------------------------------

    @inlineCallbacks
    def test_watch(self):
        """
        C{kubectl get pods -w} prints the listing, then a row for each change
        the test makes to the store, until the test kills it.
        """
        self.fake.add_pod("web")
        proc = spawn_kubectl(self.kubeconfig, "get", "pods", "-w")
        yield proc.wait_for("web")
        yield self.fake.wait_for_request(lambda r: r.query.get("watch") == ["true"] or r.query.get("watch") == ["1"])
        self.fake.add_pod("worker", phase="Pending")
        yield proc.wait_for("worker")
        self.fake.modify("pods", "worker", lambda pod: pod["status"].update(phase="Failed"))
        yield proc.wait_for("Failed")
        self.assertEqual(self.fake.watching("pods"), 1)
        yield proc.kill()
        lines = proc.stdout.decode().splitlines()
        self.assertEqual(lines[0].split(), ["NAME", "READY", "STATUS", "RESTARTS", "AGE"])
        self.assertEqual(
            [line.split()[:3] for line in lines[1:]],
            [["web", "1/1", "Running"], ["worker", "0/1", "Pending"], ["worker", "0/1", "Failed"]],
        )
        # The server side of the watch ends when kubectl goes away.
        yield self.fake.wait_until_idle()
        self.assertEqual(self.fake.watching(), 0)

    @inlineCallbacks
    def test_logs(self):
        """C{kubectl logs} prints the pod's log so far and exits."""
        self.fake.add_pod("web")
        self.fake.push_log("web", "one\ntwo\n")
        out = self.assertSucceeded((yield self.kubectl("logs", "web")))
        self.assertEqual(out, "one\ntwo\n")
        log = next(r for r in self.fake.requests if r.path.endswith("/log"))
        self.assertEqual(log.query["container"], ["main"])

    @inlineCallbacks
    def test_logs_follow(self):
        """C{kubectl logs -f} prints lines as the test pushes them, and exits when the log ends."""
        self.fake.add_pod("web")
        self.fake.push_log("web", "before\n")
        proc = spawn_kubectl(self.kubeconfig, "logs", "-f", "web")
        yield proc.wait_for("before\n")
        yield self.fake.wait_for_request(lambda r: r.path.endswith("/log") and r.query.get("follow") == ["true"])
        self.fake.push_log("web", "after\n")
        yield proc.wait_for("after\n")
        self.fake.end_logs("web")
        code, out, err = yield proc.ended
        self.assertEqual((code, out), (0, "before\nafter\n"), err)

    @inlineCallbacks
    def test_exec_echo(self):
        """C{kubectl exec -- echo hi} (WebSocket, v5.channel.k8s.io) prints the output and exits 0."""
        self.fake.add_pod("web")
        code, out, err = yield self.kubectl("exec", "web", "--", "echo", "hi")
        self.assertEqual((code, out), (0, "hi\n"), err)
        exec_request = next(r for r in self.fake.requests if r.path.endswith("/exec"))
        self.assertEqual(exec_request.query["command"], ["echo", "hi"])
        self.assertIn("v5.channel.k8s.io", exec_request.header("Sec-WebSocket-Protocol"))

    @inlineCallbacks
    def test_exec_exit_code(self):
        """The command's exit status reaches kubectl through the error channel: it exits 3."""
        self.fake.add_pod("web")
        code, _out, err = yield self.kubectl("exec", "web", "--", "sh", "-c", "exit 3")
        self.assertEqual(code, 3, err)
        self.assertIn("command terminated with exit code 3", err)

    @inlineCallbacks
    def test_exec_stderr(self):
        """Output on the stderr channel comes out on kubectl's stderr."""
        self.fake.add_pod("web")
        code, out, err = yield self.kubectl("exec", "web", "--", "sh", "-c", "echo oops >&2")
        self.assertEqual((code, out, err), (0, "", "oops\n"))

    @inlineCallbacks
    def test_exec_stdin(self):
        """C{kubectl exec -i -- cat} sends stdin and its end (v5 close signal); cat echoes it all."""
        self.fake.add_pod("web")
        data = b"".join(b"line %d\n" % i for i in range(2000))
        code, out, err = yield self.kubectl("exec", "-i", "web", "--", "cat", stdin=data)
        self.assertEqual(code, 0, err)
        self.assertEqual(out.encode(), data)

    # -- SPDY/3.1 ----------------------------------------------------------

    @inlineCallbacks
    def test_exec_over_spdy(self):
        """
        With WebSocket switched off kubectl exec upgrades to SPDY/3.1
        (v5.channel.k8s.io, its first choice): stdin reaches cat and comes back on stdout,
        stderr and the exit status come through their streams.
        """
        self.fake.add_pod("web")
        data = b"".join(b"line %d\n" % i for i in range(2000))
        code, out, err = yield run_kubectl(self.kubeconfig, "exec", "-i", "web", "--", "cat", stdin=data, env=SPDY_EXEC)
        self.assertEqual(code, 0, err)
        self.assertEqual(out.encode(), data)
        [request] = [r for r in self.fake.requests if r.path.endswith("/exec")]
        self.assertEqual((request.method, request.header("Upgrade")), ("POST", "SPDY/3.1"))
        self.assertEqual(request.header_values("X-Stream-Protocol-Version")[:2], ["v5.channel.k8s.io", "v4.channel.k8s.io"])
        code, out, err = yield run_kubectl(
            self.kubeconfig, "exec", "web", "--", "sh", "-c", "echo oops >&2", env=SPDY_EXEC
        )
        self.assertEqual((code, out, err), (0, "", "oops\n"))
        code, _out, err = yield run_kubectl(self.kubeconfig, "exec", "web", "--", "sh", "-c", "exit 3", env=SPDY_EXEC)
        self.assertEqual(code, 3, err)

    @inlineCallbacks
    def port_forward(self, env=None):
        """Forward to the pod's port 80 (the test's echo server); two connections each get their bytes back."""
        self.fake.add_pod("web")
        self.fake.expose("web", 80, start_echo_server(self))
        proc, port = yield start_port_forward(self.kubeconfig, "pod/web", ":80", env=env)
        self.addCleanup(proc.kill)
        for i in range(2):
            data = b"hello %d\n" % i * 1000
            echoed = yield exchange(port, data)
            self.assertEqual(echoed, data)
        code, _out, _err = yield proc.kill()
        return [r for r in self.fake.requests if r.path.endswith("/portforward")]

    @inlineCallbacks
    def test_port_forward(self):
        """
        kubectl port-forward (1.31+) tunnels SPDY/3.1 in WebSocket binary
        messages (subprotocol SPDY/3.1+portforward.k8s.io); bytes go both
        ways through the pod's port, one connection after another.
        """
        [request] = yield self.port_forward()
        self.assertEqual((request.method, request.header("Upgrade")), ("GET", "websocket"))
        self.assertEqual(request.header("Sec-WebSocket-Protocol"), "SPDY/3.1+portforward.k8s.io")

    @inlineCallbacks
    def test_port_forward_over_spdy(self):
        """With WebSocket switched off kubectl port-forward upgrades to SPDY/3.1 (portforward.k8s.io)."""
        [request] = yield self.port_forward(SPDY_PORT_FORWARD)
        self.assertEqual((request.method, request.header("Upgrade")), ("POST", "SPDY/3.1"))
        self.assertEqual(request.header_values("X-Stream-Protocol-Version"), ["portforward.k8s.io"])

    @inlineCallbacks
    def test_port_forward_to_a_closed_port(self):
        """A pod port nothing listens on: the kubelet's message comes back on the error stream and kubectl prints it."""
        self.fake.add_pod("web")
        proc, port = yield start_port_forward(self.kubeconfig, "pod/web", ":81")
        self.addCleanup(proc.kill)
        echoed = yield exchange(port, b"hello\n")
        self.assertEqual(echoed, b"")
        yield proc.wait_for("error forwarding port 81 to pod web")


class _Handler:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def stream_opened(self, stream) -> None:
        self.events.append(("opened", stream.id, dict(stream.headers)))

    def stream_data(self, stream, data: bytes) -> None:
        self.events.append(("data", stream.id, data))

    def stream_ended(self, stream) -> None:
        self.events.append(("ended", stream.id))


class SpdyFramingTests(SynchronousTestCase):
    """The fake's SPDY/3.1 server framing, frame by frame, for what kubectl's runs do not show."""

    def setUp(self) -> None:
        self.out = bytearray()
        self.handler = _Handler()
        self.spdy = SpdyConnection(self.out.extend, self.handler)
        self.deflate = zlib.compressobj(zdict=SPDY_DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=SPDY_DICTIONARY)

    def control(self, kind: int, payload: bytes, flags: int = 0) -> bytes:
        return struct.pack("!HHI", 0x8003, kind, flags << 24 | len(payload)) + payload

    def syn_stream(self, stream_id: int, headers: dict[str, str], flags: int = 0) -> bytes:
        raw = struct.pack("!I", len(headers)) + b"".join(
            struct.pack("!I", len(k)) + k.encode() + struct.pack("!I", len(v)) + v.encode() for k, v in headers.items()
        )
        block = self.deflate.compress(raw) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        return self.control(1, struct.pack("!IIBB", stream_id, 0, 0, 0) + block, flags)

    def frames(self) -> list[tuple]:
        """What the server wrote: (control type, flags, payload) or ("data", id, flags, payload)."""
        out, frames = bytes(self.out), []
        while out:
            first, flags_length = struct.unpack("!II", out[:8])
            payload, out = out[8 : 8 + (flags_length & 0xFFFFFF)], out[8 + (flags_length & 0xFFFFFF) :]
            if first & 0x80000000:
                frames.append((first & 0xFFFF, flags_length >> 24, payload))
            else:
                frames.append(("data", first, flags_length >> 24, payload))
        self.out.clear()
        return frames

    def test_streams_replied_data_and_fin(self):
        """
        Each SYN_STREAM is answered with a SYN_REPLY (an empty header block
        on the server's own zlib stream); the streams' headers, data and
        FIN reach the handler, split frames included; server data and FIN
        go out as DATA frames.
        """
        wire = self.syn_stream(1, {"streamtype": "error", "port": "80", "requestid": "0"})
        wire += self.syn_stream(3, {"streamtype": "data", "port": "80", "requestid": "0"})
        wire += struct.pack("!II", 3, 1 << 24 | 5) + b"hello"
        for i in range(len(wire)):  # one byte at a time
            self.spdy.feed(wire[i : i + 1])
        self.assertEqual(self.handler.events, [
            ("opened", 1, {"streamtype": "error", "port": "80", "requestid": "0"}),
            ("opened", 3, {"streamtype": "data", "port": "80", "requestid": "0"}),
            ("data", 3, b"hello"),
            ("ended", 3),
        ])
        replies = self.frames()
        self.assertEqual([(kind, flags) for kind, flags, _ in replies], [(2, 0), (2, 0)])
        for _, _, payload in replies:
            self.assertEqual(self.inflate.decompress(payload[4:]), b"\x00\x00\x00\x00")
        self.assertEqual([struct.unpack("!I", p[:4])[0] for _, _, p in replies], [1, 3])
        stream = self.spdy.streams[3]
        self.spdy.send(stream, b"world", fin=True)
        self.assertEqual(self.frames(), [("data", 3, 1, b"world")])
        self.assertNotIn(3, self.spdy.streams)  # both sides finished

    def test_ping_reset_goaway(self):
        """
        The client's (odd) PINGs are echoed; RST_STREAM ends a stream; data
        for a stream that is not open is answered with RST_STREAM
        INVALID_STREAM; an even or reused stream id with PROTOCOL_ERROR;
        SETTINGS and WINDOW_UPDATE are accepted and ignored; GOAWAY is noted.
        """
        self.spdy.feed(self.control(6, struct.pack("!I", 1)))
        self.assertEqual(self.frames(), [(6, 0, struct.pack("!I", 1))])
        self.spdy.feed(self.control(4, struct.pack("!III", 1, 7, 65536)))
        self.spdy.feed(self.control(9, struct.pack("!II", 0, 1024)))
        self.assertEqual(self.frames(), [])
        self.spdy.feed(self.syn_stream(5, {"streamtype": "stdout"}))
        self.frames()
        self.spdy.feed(self.control(3, struct.pack("!II", 5, 5)))
        self.assertEqual(self.handler.events[-1], ("ended", 5))
        self.spdy.feed(struct.pack("!II", 5, 1) + b"x")
        self.assertEqual(self.frames(), [(3, 0, struct.pack("!II", 5, 2))])
        self.spdy.feed(self.syn_stream(4, {"streamtype": "stdout"}))
        self.spdy.feed(self.syn_stream(5, {"streamtype": "stdout"}))
        self.assertEqual(self.frames(), [(3, 0, struct.pack("!II", 4, 1)), (3, 0, struct.pack("!II", 5, 1))])
        self.spdy.feed(self.control(7, struct.pack("!II", 0, 0)))
        self.assertTrue(self.spdy.gone_away)
