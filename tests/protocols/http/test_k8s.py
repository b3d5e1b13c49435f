"""
Tests for L{hoopgw.protocols.http.k8s}.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.model import Effect, Identity
from hoopgw.policy.loader import build_policy_set
from hoopgw.policy.rules import CONDITIONS, UNPINNED, Unpinned
from hoopgw.protocols.http.k8s import (
    K8sRequest,
    K8sRequestError,
    from_routed,
    request_info,
)
from hoopgw.protocols.http.paths import QueryParams, RoutedPath, split_request_target

POLICIES = Path(__file__).parents[3] / "policies"


def info(case: SynchronousTestCase, method: str, target: bytes) -> K8sRequest:
    routed = split_request_target(b"/k8s" + target)
    assert isinstance(routed, RoutedPath), routed
    result = from_routed(method, routed)
    case.assertIsInstance(result, K8sRequest)
    assert isinstance(result, K8sRequest)
    return result


def summary(r: K8sRequest) -> tuple[str, str, str, str, str, str]:
    return (r.verb, r.api_group, r.namespace, r.resource, r.name, r.subresource)


class VerbTests(SynchronousTestCase):
    """The verbs of requestinfo.go, by method and by the path's shape."""

    def test_collection_verbs(self) -> None:
        """GET on a collection is list (watch with watch=1/true), DELETE deletecollection, POST create."""
        cases = [
            ("GET", b"/api/v1/namespaces/default/pods", "list"),
            ("GET", b"/api/v1/namespaces/default/pods?watch=1", "watch"),
            ("GET", b"/api/v1/namespaces/default/pods?watch=true", "watch"),
            ("GET", b"/api/v1/namespaces/default/pods?watch=TRUE", "watch"),
            ("GET", b"/api/v1/namespaces/default/pods?watch=", "watch"),
            ("GET", b"/api/v1/namespaces/default/pods?watch=0", "list"),
            ("GET", b"/api/v1/namespaces/default/pods?watch=False", "list"),
            ("GET", b"/api/v1/namespaces/default/pods?watch=false&watch=1", "list"),
            ("HEAD", b"/api/v1/pods", "list"),
            ("POST", b"/api/v1/namespaces/default/pods", "create"),
            ("DELETE", b"/api/v1/namespaces/default/pods", "deletecollection"),
        ]
        for method, target, verb in cases:
            r = info(self, method, target)
            self.assertEqual((r.verb, r.display_verb), (verb, verb), (method, target))
            self.assertEqual(r.resource, "pods")

    def test_object_verbs(self) -> None:
        """GET, PUT, PATCH, DELETE on a named object are get, update, patch, delete."""
        for method, verb in (("GET", "get"), ("PUT", "update"), ("PATCH", "patch"), ("DELETE", "delete")):
            r = info(self, method, b"/apis/apps/v1/namespaces/prod/deployments/web")
            self.assertEqual(summary(r), (verb, "apps", "prod", "deployments", "web", ""))
            self.assertEqual(r.api_version, "v1")
            self.assertEqual(r.api_prefix, "apis")
            self.assertEqual(r.action_kind(), f"k8s.{verb}")

    def test_watch_prefix(self) -> None:
        """The deprecated C{/watch/} prefix makes the verb watch, with or without a name."""
        r = info(self, "GET", b"/api/v1/watch/namespaces/default/pods/web")
        self.assertEqual(summary(r), ("watch", "", "default", "pods", "web", ""))
        r = info(self, "GET", b"/apis/apps/v1/watch/deployments")
        self.assertEqual(summary(r), ("watch", "apps", "", "deployments", "", ""))

    def test_proxy_prefix(self) -> None:
        """The deprecated C{/proxy/} prefix is the proxy verb, with no subresource."""
        r = info(self, "GET", b"/api/v1/proxy/namespaces/default/pods/web/metrics/x")
        self.assertEqual(summary(r), ("proxy", "", "default", "pods", "web", ""))
        self.assertEqual(r.parts, ("pods", "web", "metrics", "x"))
        self.assertEqual(r.action_kind(), "k8s.proxy")

    def test_special_verb_alone(self) -> None:
        """C{/api/v1/watch} names nothing; the API server fails it, so does the gateway."""
        r = split_request_target(b"/k8s/api/v1/watch")
        assert isinstance(r, RoutedPath)
        self.assertIsInstance(from_routed("GET", r), K8sRequestError)

    def test_unknown_method(self) -> None:
        """A method the API server has no verb for has verb "" and displays as unknown."""
        r = info(self, "OPTIONS", b"/api/v1/pods/x")
        self.assertEqual((r.verb, r.display_verb, r.action_kind()), ("", "unknown", "k8s.unknown"))
        self.assertEqual(r.attributes()["k8s.verbs"], ("unknown",))
        # Methods are case-sensitive: "get" is not GET.
        self.assertEqual(info(self, "get", b"/api/v1/pods/x").verb, "")

    def test_field_selector_name(self) -> None:
        """
        A list pinned to one name by C{fieldSelector=metadata.name=N} is a
        list of that name, as requestinfo.go has it; other selectors pin none.
        """
        cases = [
            (b"metadata.name%3Dweb", "web"),
            (b"metadata.name%3D%3Dweb", "web"),
            (b"status.phase%3DRunning,metadata.name%3Dweb", "web"),
            (b"metadata.name!%3Dweb", ""),
            (b"metadata.name%3D..", ""),
            (b"metadata.name%3Da%2Fb", ""),
            (b"metadata.name%3Dw\\%2Ceb", ""),
            (b"spec.nodeName%3Dn1", ""),
            (b"garbage", ""),
        ]
        for selector, name in cases:
            r = info(self, "GET", b"/api/v1/namespaces/ns/pods?fieldSelector=" + selector.replace(b"\\", b"%5C"))
            self.assertEqual((r.verb, r.name), ("list", name), selector)


class ShapeTests(SynchronousTestCase):
    """Namespaces, groups, subresources and non-resource URLs."""

    def test_namespace_as_resource(self) -> None:
        """
        C{/api/v1/namespaces/foo} is the resource namespaces, named foo, in
        namespace foo (requestinfo.go reads the namespace before the resource).
        """
        self.assertEqual(summary(info(self, "DELETE", b"/api/v1/namespaces/foo")),
                         ("delete", "", "foo", "namespaces", "foo", ""))
        self.assertEqual(summary(info(self, "GET", b"/api/v1/namespaces")),
                         ("list", "", "", "namespaces", "", ""))
        self.assertEqual(summary(info(self, "DELETE", b"/api/v1/namespaces")),
                         ("deletecollection", "", "", "namespaces", "", ""))

    def test_namespace_subresources(self) -> None:
        """C{status} and C{finalize} after a namespace are its subresources, not resources in it."""
        self.assertEqual(summary(info(self, "PUT", b"/api/v1/namespaces/foo/finalize")),
                         ("update", "", "foo", "namespaces", "foo", "finalize"))
        self.assertEqual(summary(info(self, "GET", b"/api/v1/namespaces/foo/status")),
                         ("get", "", "foo", "namespaces", "foo", "status"))
        self.assertEqual(summary(info(self, "GET", b"/api/v1/namespaces/foo/secrets")),
                         ("list", "", "foo", "secrets", "", ""))

    def test_cluster_scoped(self) -> None:
        """A resource outside C{namespaces/} has namespace ""."""
        self.assertEqual(summary(info(self, "GET", b"/apis/rbac.authorization.k8s.io/v1/clusterroles/admin")),
                         ("get", "rbac.authorization.k8s.io", "", "clusterroles", "admin", ""))
        self.assertEqual(summary(info(self, "GET", b"/api/v1/nodes/n1/status")),
                         ("get", "", "", "nodes", "n1", "status"))

    def test_subresources(self) -> None:
        """Status and scale keep the method's verb; the audit shows the verb."""
        r = info(self, "PUT", b"/apis/apps/v1/namespaces/d/deployments/web/scale")
        self.assertEqual(summary(r), ("update", "apps", "d", "deployments", "web", "scale"))
        self.assertEqual(r.display_verb, "update")
        self.assertEqual(r.attributes()["k8s.resources"], ("deployments", "deployments/scale"))
        r = info(self, "PATCH", b"/api/v1/namespaces/d/pods/web/status")
        self.assertEqual(summary(r), ("patch", "", "d", "pods", "web", "status"))

    def test_encoded_subresource(self) -> None:
        """C{%65xec} is the exec subresource, judged as exec."""
        r = info(self, "POST", b"/api/v1/namespaces/d/pods/web/%65xec?command=id")
        self.assertEqual((r.subresource, r.display_verb, r.exec_command), ("exec", "exec", ("id",)))

    def test_non_resource(self) -> None:
        """
        Discovery, version, health and OpenAPI paths are not resources: the
        verb is the lower-cased method and the action is http.request.
        """
        for target in (b"/version", b"/healthz", b"/apis", b"/api", b"/api/v1", b"/apis/apps",
                       b"/apis/apps/v1", b"/openapi/v2", b"/openapi/v3/apis/apps/v1", b"/", b"/metrics"):
            r = info(self, "GET", target)
            self.assertFalse(r.is_resource, target)
            self.assertEqual((r.verb, r.action_kind()), ("get", "http.request"))
            attributes = r.attributes()
            self.assertNotIn("k8s.resources", attributes)
            self.assertEqual(attributes["http.paths"][0], target.decode())

    def test_prefixes_configurable(self) -> None:
        """API prefixes are parameters, as on the API server's factory."""
        r = request_info("GET", ("custom", "v1", "things"), QueryParams(),
                         api_prefixes=frozenset({"custom"}), groupless_api_prefixes=frozenset({"custom"}))
        assert isinstance(r, K8sRequest)
        self.assertEqual((r.is_resource, r.resource, r.verb), (True, "things", "list"))


class StreamingTests(SynchronousTestCase):
    """exec, attach, portforward, proxy and log."""

    EXEC = (b"/api/v1/namespaces/default/pods/web/exec?command=sh&command=-c&command=rm+-rf+%2Ftmp%2Fx"
            b"&container=app&stdin=true&stdout=1&stderr=true&tty=false")

    def test_exec_post(self) -> None:
        """
        An exec over POST (SPDY) is create on pods/exec, displayed as exec,
        with its command, container and stream flags.
        """
        r = info(self, "POST", self.EXEC)
        self.assertEqual(summary(r), ("create", "", "default", "pods", "web", "exec"))
        self.assertEqual(r.display_verb, "exec")
        self.assertEqual(r.action_kind(), "k8s.exec")
        self.assertEqual(r.exec_command, ("sh", "-c", "rm -rf /tmp/x"))
        self.assertEqual(r.container, "app")
        self.assertEqual((r.stdin, r.stdout, r.stderr, r.tty), (True, True, True, False))
        self.assertEqual(r.input(), "sh -c 'rm -rf /tmp/x'")

    def test_exec_websocket_get(self) -> None:
        """
        An exec over a WebSocket upgrade is a GET, which requestinfo.go calls
        get; the gateway decides it as create, so that allowing reads never
        allows running commands.
        """
        r = info(self, "GET", self.EXEC)
        self.assertEqual(r.verb, "create")
        self.assertEqual(r.attributes()["k8s.verbs"], ("create", "exec"))
        self.assertNotIn("get", r.attributes()["k8s.verbs"])

    def test_attach_and_portforward(self) -> None:
        """attach and portforward are create too; portforward carries its ports."""
        r = info(self, "GET", b"/api/v1/namespaces/d/pods/web/attach?container=c&stdin=1&tty=1")
        self.assertEqual((r.verb, r.display_verb, r.container, r.stdin, r.tty), ("create", "attach", "c", True, True))
        r = info(self, "POST", b"/api/v1/namespaces/d/pods/web/portforward?ports=8080&ports=9090")
        self.assertEqual((r.verb, r.display_verb, r.ports), ("create", "portforward", ("8080", "9090")))
        self.assertEqual(r.details()["ports"], ["8080", "9090"])

    def test_log_and_proxy(self) -> None:
        """log and proxy keep the method's verb and display as log and proxy."""
        r = info(self, "GET", b"/api/v1/namespaces/d/pods/web/log?container=c&follow=true")
        self.assertEqual((r.verb, r.display_verb, r.container), ("get", "log", "c"))
        self.assertEqual(r.attributes()["k8s.verbs"], ("get", "log"))
        r = info(self, "POST", b"/api/v1/namespaces/d/services/https:web:443/proxy/api/x")
        self.assertEqual(summary(r), ("create", "", "d", "services", "https:web:443", "proxy"))
        self.assertEqual(r.action_kind(), "k8s.proxy")
        r = info(self, "GET", b"/api/v1/nodes/n1/proxy/pods")
        self.assertEqual((r.verb, r.display_verb, r.resource, r.subresource), ("get", "proxy", "nodes", "proxy"))

    def test_kubelet_run_through_nodes_proxy_is_exec(self) -> None:
        """
        The kubelet's /run, /exec, /attach, /portforward under nodes/proxy
        (and the deprecated /proxy/nodes/N form) run commands in a pod: an
        exec, with the command in the details, that an exec rule matches.
        """
        r = info(self, "POST", b"/api/v1/nodes/n1/proxy/run/kube-system/etcd-n1/etcd?cmd=cat+%2Fetc%2Fshadow")
        self.assertEqual((r.verb, r.display_verb, r.resource, r.subresource), ("create", "exec", "nodes", "proxy"))
        self.assertEqual(r.action_kind(), "k8s.exec")
        attributes = r.attributes()
        self.assertIn("exec", attributes["k8s.subresources"])
        self.assertIn("nodes/proxy", attributes["k8s.resources"])
        self.assertIn("exec", attributes["k8s.verbs"])
        action = r.to_action()
        self.assertEqual(action.input, "cat /etc/shadow")
        self.assertEqual(action.details["command"], ["cat", "/etc/shadow"])
        self.assertEqual(action.details["kubelet"], "run/kube-system/etcd-n1/etcd")
        r = info(self, "GET", b"/api/v1/nodes/n1/proxy/exec/d/web/app?command=id&output=1")
        self.assertEqual((r.display_verb, r.exec_command), ("exec", ("id",)))
        for kubelet in (b"attach/d/web/app", b"portforward/d/web"):
            r = info(self, "GET", b"/api/v1/nodes/n1/proxy/" + kubelet)
            self.assertEqual(r.display_verb, "exec", kubelet)
        r = info(self, "POST", b"/api/v1/proxy/nodes/n1/run/d/web/app?cmd=id")
        self.assertEqual((r.verb, r.display_verb, r.exec_command), ("proxy", "exec", ("id",)))
        self.assertIn("exec", r.attributes()["k8s.subresources"])
        # Other kubelet paths stay proxy.
        r = info(self, "GET", b"/api/v1/nodes/n1/proxy/stats/summary")
        self.assertEqual((r.display_verb, r.node_exec), ("proxy", ()))

    def test_exec_action(self) -> None:
        """to_action gives the kind, the command line as input, and the details."""
        action = info(self, "POST", self.EXEC).to_action()
        self.assertEqual(action.kind, "k8s.exec")
        self.assertEqual(action.input, "sh -c 'rm -rf /tmp/x'")
        self.assertEqual(action.details["command"], ["sh", "-c", "rm -rf /tmp/x"])
        self.assertEqual(action.details["container"], "app")


class AttributeTests(SynchronousTestCase):
    """What policy sees."""

    def test_attribute_names_are_conditions(self) -> None:
        """Every attribute is a registered condition, so rules can use it."""
        for r in (info(self, "POST", StreamingTests.EXEC), info(self, "GET", b"/version")):
            for name in r.attributes():
                self.assertIn(name, CONDITIONS)

    def test_resource_attributes(self) -> None:
        """A resource request carries every k8s attribute, "" where the API server has ""."""
        self.assertEqual(
            info(self, "GET", b"/api/v1/nodes").attributes(),
            {
                "http.methods": ("GET",),
                "http.paths": ("/api/v1/nodes",),
                "k8s.verbs": ("list",),
                "k8s.resources": ("nodes",),
                "k8s.subresources": ("",),
                "k8s.namespaces": ("",),
                "k8s.names": ("", "*"),  # (every node: UNPINNED)
                "k8s.groups": ("",),
            },
        )

    def test_collections_unpinned(self) -> None:
        """
        A list, watch or deletecollection reaches every name; without a
        namespace, on a namespaced (or custom) resource, every namespace.
        """
        for method, path, names, namespaces in (
            ("GET", b"/api/v1/namespaces/default/pods", ("", UNPINNED), ("default",)),
            ("DELETE", b"/api/v1/namespaces/default/pods", ("", UNPINNED), ("default",)),
            ("GET", b"/api/v1/watch/namespaces/default/pods", ("", UNPINNED), ("default",)),
            ("GET", b"/api/v1/secrets", ("", UNPINNED), ("", UNPINNED)),
            ("GET", b"/apis/example.com/v1/widgets", ("", UNPINNED), ("", UNPINNED)),
            ("GET", b"/api/v1/namespaces", ("", UNPINNED), ("",)),
            ("GET", b"/apis/rbac.authorization.k8s.io/v1/clusterroles", ("", UNPINNED), ("",)),
            ("GET", b"/apis/metrics.k8s.io/v1beta1/nodes", ("", UNPINNED), ("",)),  # kubectl top nodes
            ("GET", b"/apis/metrics.k8s.io/v1beta1/pods", ("", UNPINNED), ("", UNPINNED)),
            ("GET", b"/api/v1/namespaces/default/pods/web-1", ("web-1",), ("default",)),
            ("GET", b"/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-1", ("web-1",), ("default",)),
            ("DELETE", b"/api/v1/namespaces/default/pods/web-1", ("web-1",), ("default",)),
            ("GET", b"/api/v1/nodes/n1", ("n1",), ("",)),
        ):
            attributes = info(self, method, path).attributes()
            self.assertEqual((attributes["k8s.names"], attributes["k8s.namespaces"]), (names, namespaces), path)
            for value in (*attributes["k8s.names"], *attributes["k8s.namespaces"]):
                self.assertIs(type(value) is Unpinned, value is UNPINNED)

    def test_paths_decoded_and_forwarded(self) -> None:
        """http.paths has the forwarded path and, when it differs, the decoded one."""
        r = info(self, "GET", b"/api/v1/namespaces/caf%C3%A9/configmaps/")
        self.assertEqual(r.attributes()["http.paths"],
                         ("/api/v1/namespaces/caf%C3%A9/configmaps/", "/api/v1/namespaces/café/configmaps/"))

    def test_default_policy_namespace_delete(self) -> None:
        """
        The shipped no-namespace-delete rule denies deleting a namespace
        (and all of them), and the default policy allows other requests.
        """
        path = POLICIES / "default.toml"
        policy = build_policy_set([(str(path), path.read_bytes())])
        alice = Identity("https://idp", "alice", ("dev",))

        def decide(method: str, target: bytes) -> tuple[Effect, str | None]:
            decision = policy.evaluate(alice, "k8s", info(self, method, target).to_action())
            return decision.effect, decision.rule

        self.assertEqual(decide("DELETE", b"/api/v1/namespaces/foo"), (Effect.deny, "no-namespace-delete"))
        self.assertEqual(decide("DELETE", b"/api/v1/namespaces"), (Effect.deny, "no-namespace-delete"))
        self.assertEqual(decide("DELETE", b"/api/v1/namespace%73/foo"), (Effect.deny, "no-namespace-delete"))
        self.assertEqual(decide("GET", b"/api/v1/namespaces/foo")[0], Effect.allow)
        self.assertEqual(decide("DELETE", b"/api/v1/namespaces/foo/pods/web")[0], Effect.allow)
        self.assertEqual(
            decide("POST", b"/api/v1/nodes/n1/proxy/run/d/web/app?cmd=id"), (Effect.deny, "no-node-proxy")
        )
        self.assertEqual(decide("GET", b"/api/v1/proxy/nodes/n1/pods"), (Effect.deny, "no-node-proxy"))

    def test_rules_on_names_and_namespaces_hold_for_collections(self) -> None:
        """
        A deny or review rule on names or namespaces holds for a request on
        a whole collection, which returns or deletes those objects too; an
        allow rule on names allows a collection only with C{"*"}.
        """
        namespaces = b"""
[[rule]]
name = "no-system-secrets"
effect = "deny"
k8s.resources = ["secrets"]
k8s.namespaces = ["kube-system"]
[[rule]]
name = "review-prod"
effect = "review"
k8s.namespaces = ["prod"]
k8s.verbs = ["list"]
review.approvers = ["group:sre"]
"""
        names = b"""
[[rule]]
name = "no-guarded"
effect = "deny"
k8s.verbs = ["get", "list", "watch", "deletecollection"]
k8s.names = ["guarded*"]
[[rule]]
name = "web-only"
effect = "allow"
k8s.names = ["web*"]
[[rule]]
name = "nodes"
effect = "allow"
k8s.resources = ["nodes", "configmaps"]
k8s.names = ["*"]
"""
        everything = b'[[rule]]\nname = "everything"\neffect = "allow"\nk8s.names = ["*"]\n'
        alice = Identity("https://idp", "alice", ("dev",))

        def decide(policy: bytes, method: str, target: bytes) -> tuple[Effect, str | None]:
            decision = build_policy_set([("p.toml", policy)]).evaluate(
                alice, "k8s", info(self, method, target).to_action()
            )
            return decision.effect, decision.rule

        both = names + namespaces
        self.assertEqual(decide(both, "GET", b"/api/v1/namespaces/default/pods"), (Effect.deny, "no-guarded"))
        self.assertEqual(decide(both, "DELETE", b"/api/v1/namespaces/default/pods"), (Effect.deny, "no-guarded"))
        self.assertEqual(decide(both, "GET", b"/api/v1/namespaces/default/pods/web-1"), (Effect.allow, "web-only"))
        self.assertEqual(decide(both, "GET", b"/api/v1/namespaces/default/pods/guarded-1"), (Effect.deny, "no-guarded"))
        self.assertEqual(decide(both, "GET", b"/api/v1/secrets/x"), (Effect.deny, None))  # (no allow rule)
        self.assertEqual(decide(both, "GET", b"/api/v1/nodes"), (Effect.deny, "no-guarded"))
        self.assertEqual(decide(both, "PUT", b"/api/v1/namespaces/kube-system/configmaps/c")[0], Effect.allow)
        self.assertEqual(decide(both, "GET", b"/api/v1/configmaps?watch=0"), (Effect.deny, "no-guarded"))
        self.assertEqual(decide(both, "POST", b"/api/v1/namespaces/prod/configmaps")[0], Effect.allow)
        # The namespace rules alone.
        only = namespaces + everything
        self.assertEqual(decide(only, "GET", b"/api/v1/secrets"), (Effect.deny, "no-system-secrets"))
        self.assertEqual(decide(only, "GET", b"/api/v1/namespaces/default/secrets")[0], Effect.allow)
        self.assertEqual(decide(only, "GET", b"/api/v1/configmaps"), (Effect.review, "review-prod"))
        self.assertEqual(decide(only, "GET", b"/api/v1/nodes")[0], Effect.allow)  # (nodes have no namespace)
        self.assertEqual(decide(only, "GET", b"/api/v1/namespaces/default/configmaps")[0], Effect.allow)


class PropertyTests(SynchronousTestCase):
    @given(
        st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO"]),
        st.lists(st.sampled_from(["api", "apis", "v1", "apps", "namespaces", "ns", "pods", "web",
                                  "exec", "watch", "proxy", "status", "finalize", "log", "x"]),
                 max_size=8),
        st.lists(st.tuples(st.sampled_from(["watch", "command", "fieldSelector", "container"]),
                           st.text(max_size=8)), max_size=4),
    )
    def test_total(self, method: str, segments: list[str], params: list[tuple[str, str]]) -> None:
        """
        Any method, segments and query give a request or an error value,
        and a resource request's action kind is k8s.<lower-case word>.
        """
        result = request_info(method, segments, QueryParams("", tuple(params)))
        self.assertIsInstance(result, (K8sRequest, K8sRequestError))
        if isinstance(result, K8sRequest) and result.is_resource:
            kind = result.action_kind()
            self.assertTrue(kind.startswith("k8s.") and kind[4:].isalpha() and kind.islower(), kind)
            result.to_action()
