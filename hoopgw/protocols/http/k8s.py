"""
What a request to the Kubernetes API is, in the API server's own terms.

L{request_info} follows the API server's C{RequestInfoFactory.NewRequestInfo}
(k8s.io/apiserver C{pkg/endpoints/request/requestinfo.go}), the function
whose result RBAC and the "Authorization - request attributes" documentation
speak of: verb, API group and version, namespace, resource, subresource and
name are derived from the decoded path segments, the method and the query
exactly as it does, so a policy on C{k8s.*} judges what the API server will
authorize and execute.

Where the gateway departs from it, it does so towards the stricter reading:

  - C{exec}, C{attach} and C{portforward} are decided as C{create}, whatever
    the method.  RBAC has always needed C{create} for the POST (SPDY) form;
    the WebSocket form is a GET, which C{requestinfo.go} calls C{get}, and
    until Kubernetes 1.35 (KEP-4006, "synthetic RBAC create check") a bare
    C{get} on C{pods/exec} was enough to run commands.  Deciding it as
    C{create} means an allow rule for read verbs never lets a command run.
  - Besides the verb, the request has a I{display verb}: C{exec},
    C{attach}, C{portforward}, C{proxy} or C{log} for those subresources,
    else the verb.  Both are in C{k8s.verbs}, so C{k8s.verbs = ["exec"]}
    works, and the action kind is C{k8s.<display verb>}.
  - The kubelet API reached through C{nodes/proxy}
    (C{/api/v1/nodes/N/proxy/run/<ns>/<pod>/<container>?cmd=...}, and
    C{exec}, C{attach}, C{portforward} likewise, also under the deprecated
    C{/api/v1/proxy/nodes/N/...}) runs commands in any pod of the node:
    it is decided as an exec (display verb C{exec}, C{k8s.subresources}
    has C{exec} besides C{proxy}, the command in the details), so an exec
    rule holds for it too.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from attrs import field, frozen

from hoopgw.model import Action
from hoopgw.policy.rules import UNPINNED
from hoopgw.protocols.http.paths import QueryParams, RoutedPath
from hoopgw.protocols.http.redact import redact_target

__all__ = [
    "API_PREFIXES",
    "GROUPLESS_API_PREFIXES",
    "K8sRequest",
    "K8sRequestError",
    "from_routed",
    "request_info",
]

API_PREFIXES = frozenset({"api", "apis"})
"""The API server's C{APIPrefixes}: paths below these are resource paths."""

GROUPLESS_API_PREFIXES = frozenset({"api"})
"""The API server's C{GrouplessAPIPrefixes}: the core group has no group segment."""

# requestinfo.go: verbs that are path segments (deprecated forms).
_SPECIAL_VERBS = frozenset({"proxy", "watch"})
# Verbs on a whole collection: every object in it, whatever its name.
_COLLECTION_VERBS = frozenset({"list", "watch", "deletecollection"})
# Built-in resources with no namespace (a list of them spans none): any
# other, a custom resource included, is taken as namespaced, so a list of it
# without a namespace spans them all.
_CLUSTER_SCOPED = frozenset({
    ("", "nodes"), ("", "namespaces"), ("", "persistentvolumes"), ("", "componentstatuses"),
    ("rbac.authorization.k8s.io", "clusterroles"), ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("storage.k8s.io", "storageclasses"), ("storage.k8s.io", "csidrivers"), ("storage.k8s.io", "csinodes"),
    ("storage.k8s.io", "volumeattachments"), ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("apiregistration.k8s.io", "apiservices"), ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"),
    ("scheduling.k8s.io", "priorityclasses"), ("node.k8s.io", "runtimeclasses"),
    ("networking.k8s.io", "ingressclasses"), ("certificates.k8s.io", "certificatesigningrequests"),
    ("flowcontrol.apiserver.k8s.io", "flowschemas"), ("flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations"),
    ("authentication.k8s.io", "tokenreviews"), ("authentication.k8s.io", "selfsubjectreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"), ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("metrics.k8s.io", "nodes"), ("networking.k8s.io", "ipaddresses"), ("networking.k8s.io", "servicecidrs"),
    ("storage.k8s.io", "volumeattributesclasses"), ("resource.k8s.io", "deviceclasses"),
    ("resource.k8s.io", "resourceslices"), ("certificates.k8s.io", "clustertrustbundles"),
    ("admissionregistration.k8s.io", "mutatingadmissionpolicies"),
    ("admissionregistration.k8s.io", "mutatingadmissionpolicybindings"),
})  # fmt: skip
_SPECIAL_VERBS_NO_SUBRESOURCES = frozenset({"proxy"})
# requestinfo.go: /namespaces/{ns}/status is the namespace's subresource,
# /namespaces/{ns}/pods a namespaced resource.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
# Streaming subresources that run something on a node: decided as create
# (see the module docstring).
_STREAMING = frozenset({"exec", "attach", "portforward"})
_DISPLAYED = _STREAMING | {"proxy", "log"}
# Kubelet API endpoints that run something in a container (kubelet
# server.go: /run, /exec, /attach, /portforward).
_KUBELET_EXEC = frozenset({"run", "exec", "attach", "portforward"})


@frozen
class K8sRequestError:
    """
    A resource path the API server itself cannot interpret (it answers
    500); the gateway answers 400 with C{reason} and forwards nothing.
    """

    reason: str
    status: int = 400


@frozen(cache_hash=True)  # a key of the proxy's action cache, hashed per request
class K8sRequest:
    """
    One request to the Kubernetes API, as the API server understands it.

    @ivar is_resource: C{False} for non-resource URLs (C{/version},
        C{/healthz}, C{/apis}, C{/openapi/v2}, ...), which carry only
        C{verb} (the lower-cased method, as the API server has it), C{path}
        and C{method}.
    @ivar verb: the authorization verb the gateway decides on: C{get},
        C{list}, C{watch}, C{create}, C{update}, C{patch}, C{delete},
        C{deletecollection}, C{proxy}; C{""} for a method the API server
        has no verb for.  C{create} for exec, attach and portforward.
    @ivar display_verb: what the audit trail calls the request: C{exec},
        C{attach}, C{portforward}, C{proxy}, C{log}, else C{verb}
        (C{"unknown"} when C{verb} is C{""}).
    @ivar namespace: C{""} for cluster-scoped requests; for
        C{/api/v1/namespaces/foo} it is C{"foo"} (requestinfo.go sets it
        from the path before it knows the resource is C{namespaces}).
    @ivar api_group: C{""} for the core group.
    @ivar parts: the path parts from the resource on (C{resource/name/sub...}).
    @ivar path: the path as forwarded (canonical, percent-encoded).
    @ivar exec_command: the C{command} query values of an exec, in order.
    @ivar container: the C{container} query value, if any (exec, attach, log).
    @ivar ports: the C{ports} query values of a portforward.
    """

    is_resource: bool
    verb: str
    method: str
    path: str
    display_verb: str = ""
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    parts: tuple[str, ...] = ()
    query: QueryParams = field(factory=QueryParams)
    decoded_path: str = ""
    exec_command: tuple[str, ...] = ()
    container: str | None = None
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False
    ports: tuple[str, ...] = ()
    node_exec: tuple[str, ...] = ()
    """The kubelet path below C{nodes/N/proxy} when it runs something (C{run/ns/pod/ctr}), else C{()}."""

    def verbs(self) -> tuple[str, ...]:
        """The verb and display verb, each once, the verb first."""
        return tuple(dict.fromkeys(v for v in (self.verb, self.display_verb) if v))

    def action_kind(self) -> str:
        """C{k8s.<display verb>} (C{k8s.delete}, C{k8s.exec}), C{http.request} for non-resource URLs."""
        if not self.is_resource:
            return "http.request"
        return "k8s." + self.display_verb

    def attributes(self) -> dict[str, Any]:
        """
        The policy facts (see C{policies/README.md}).  Every C{k8s.*}
        attribute of a resource request is present, empty strings included
        (C{""} is the core group, a cluster-scoped namespace, a collection's
        name, no subresource), so C{k8s.namespaces = [""]} picks
        cluster-scoped requests.  C{k8s.resources} has C{pods} and, for a
        subresource, the RBAC spelling C{pods/exec} too.  A request on a
        whole collection (list, watch, deletecollection) reaches objects of
        every name, and one without a namespace on a namespaced resource
        those of every namespace: L{UNPINNED} is added there, so that a deny
        or review rule on names or namespaces holds for it.
        """
        paths: tuple[str, ...] = (self.path,)
        if self.decoded_path and self.decoded_path != self.path:
            paths += (self.decoded_path,)
        attributes: dict[str, Any] = {
            "http.methods": (self.method,),
            "http.paths": paths,
            "k8s.verbs": self.verbs(),
        }
        if self.is_resource:
            resources: tuple[str, ...] = (self.resource,)
            if self.subresource:
                resources += (f"{self.resource}/{self.subresource}",)
            if self.verb == "proxy" and not self.subresource and self.name:
                # The deprecated /proxy/<resource>/<name> form reaches the
                # same proxy as <resource>/<name>/proxy: rules on the
                # latter hold for it.
                resources += (f"{self.resource}/proxy",)
            subresources: tuple[str, ...] = (self.subresource,)
            if self.node_exec:
                if "nodes/proxy" not in resources:
                    resources += ("nodes/proxy",)
                subresources = tuple(dict.fromkeys((*subresources, "proxy", "exec")))
            names: tuple[str, ...] = (self.name,)
            namespaces: tuple[str, ...] = (self.namespace,)
            if self.verb in _COLLECTION_VERBS:
                if not self.name:
                    names = ("", UNPINNED)
                if not self.namespace and (self.api_group, self.resource) not in _CLUSTER_SCOPED:
                    namespaces = ("", UNPINNED)
            attributes.update({
                "k8s.resources": resources,
                "k8s.subresources": subresources,
                "k8s.namespaces": namespaces,
                "k8s.names": names,
                "k8s.groups": (self.api_group,),
            })
        return attributes

    def input(self) -> str:
        """
        The request as the audit trail shows it: the command line of an
        exec, else the method and target, credentials redacted
        (L{hoopgw.protocols.http.redact.redact_target}, as for every target
        the gateway records).
        """
        if (self.subresource == "exec" or self.node_exec) and self.exec_command:
            return shlex.join(self.exec_command)
        target = redact_target(self.path + "?" + self.query.raw if self.query.raw else self.path)
        return f"{self.method} {target}"

    def details(self) -> dict[str, Any]:
        """Audit content policy does not look at."""
        details: dict[str, Any] = {"verb": self.verb}
        if self.is_resource:
            details.update({
                "api_version": self.api_version,
                "group": self.api_group,
                "resource": self.resource,
            })
            for key in ("namespace", "name", "subresource"):
                value = getattr(self, key)
                if value:
                    details[key] = value
        if self.subresource in ("exec", "attach", "log") and self.container is not None:
            details["container"] = self.container
        if self.subresource == "exec":
            details["command"] = list(self.exec_command)
        if self.subresource in ("exec", "attach"):
            details.update(stdin=self.stdin, stdout=self.stdout, stderr=self.stderr, tty=self.tty)
        if self.subresource == "portforward":
            details["ports"] = list(self.ports)
        if self.node_exec:
            details["kubelet"] = "/".join(self.node_exec)
            details["command"] = list(self.exec_command)
        return details

    def to_action(self) -> Action:
        """The L{Action} to decide and record for this request."""
        return Action(self.action_kind(), self.input(), self.attributes(), self.details())


def _flag(query: QueryParams, name: str) -> bool:
    # apimachinery Convert_Slice_string_To_bool: absent, "0" or "false"
    # (any case) is false; anything else, "" included, is true.
    value = query.first(name)
    if value is None:
        return False
    return not (value == "0" or value.casefold() == "false")


def _split_term(term: str) -> tuple[str, str, str] | None:
    # fields.splitTerm: the earliest operator wins, "!=" tried before "=="
    # before "=".
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op):]
    return None


def _field_selector_name(selector: str) -> str:
    """
    The name a C{fieldSelector} pins with C{metadata.name=N} (or C{==}),
    as C{requestinfo.go} takes it (C{RequiresExactMatch}, then
    C{IsValidPathSegmentName}); C{""} when it pins none.

    Escaped selectors (C{\\}) are not interpreted: no name, so a
    name-scoped allow rule does not apply, the safe direction.  A selector
    the API server cannot parse fails the list itself.
    """
    if "\\" in selector:
        return ""
    terms = []
    for part in selector.split(","):
        if not part:
            continue
        term = _split_term(part)
        if term is None:
            return ""
        terms.append((part, term))
    # fields.ParseSelector sorts the terms; RequiresExactMatch takes the
    # first equality on the field.
    for _, (key, op, value) in sorted(terms):
        if key == "metadata.name" and op != "!=":
            if value in (".", "..") or "/" in value or "%" in value:
                return ""
            return value
    return ""


def request_info(
    method: str,
    segments: Sequence[str],
    query: QueryParams,
    *,
    path: str | None = None,
    api_prefixes: frozenset[str] = API_PREFIXES,
    groupless_api_prefixes: frozenset[str] = GROUPLESS_API_PREFIXES,
) -> K8sRequest | K8sRequestError:
    """
    Derive the request attributes as C{RequestInfoFactory.NewRequestInfo}
    does (see the module docstring for the two departures).

    @param method: the HTTP method, as sent (methods are case-sensitive).
    @param segments: the decoded path segments below the connection
        (L{RoutedPath.segments}): no empty segment, as C{splitPath} gives.
    @param query: the parsed query.
    @param path: the path as forwarded; by default the decoded path.
    """
    segments = tuple(segments)
    decoded_path = "/" + "/".join(segments)
    if path is None:
        path = decoded_path
    elif segments and path.endswith("/"):
        decoded_path += "/"
    plain = K8sRequest(
        is_resource=False,
        verb=method.lower(),
        method=method,
        path=path,
        display_verb=method.lower(),
        query=query,
        decoded_path=decoded_path,
    )
    parts = segments
    if len(parts) < 3 or parts[0] not in api_prefixes:
        return plain
    api_prefix = parts[0]
    parts = parts[1:]
    api_group = ""
    if api_prefix not in groupless_api_prefixes:
        # "/apis/apps/v1" is a discovery document, not a resource.
        if len(parts) < 3:
            return plain
        api_group = parts[0]
        parts = parts[1:]
    api_version = parts[0]
    parts = parts[1:]

    verb_via_path = parts[0] in _SPECIAL_VERBS
    if verb_via_path:
        if len(parts) < 2:
            return K8sRequestError(f"unable to determine kind and namespace from {decoded_path!r}")
        verb = parts[0]
        parts = parts[1:]
    else:
        verb = _METHOD_VERBS.get(method, "")

    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]

    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = ""
    if len(parts) >= 3 and verb not in _SPECIAL_VERBS_NO_SUBRESOURCES:
        subresource = parts[2]

    if not name and verb == "get":
        watch = query.first("watch")
        verb = "watch" if watch is not None and not (
            watch == "0" or watch.casefold() == "false"
        ) else "list"
        # requestinfo.go: a list pinned to one name by fieldSelector is
        # authorized as a request for that name.
        selector = query.first("fieldSelector")
        if selector:
            name = _field_selector_name(selector)
    if not name and verb == "delete":
        verb = "deletecollection"

    node_exec: tuple[str, ...] = ()
    if resource == "nodes" and name:
        # /nodes/N/proxy/<kubelet path>, or the deprecated verb form
        # /proxy/nodes/N/<kubelet path> (no subresource there).
        kubelet = parts[3:] if subresource == "proxy" else parts[2:] if verb == "proxy" else ()
        if kubelet and kubelet[0] in _KUBELET_EXEC:
            node_exec = tuple(kubelet)

    if (subresource in _STREAMING or node_exec) and verb in ("get", "create"):
        verb = "create"
    if node_exec:
        display_verb = "exec"
    elif subresource in _DISPLAYED:
        display_verb = subresource
    elif verb:
        display_verb = verb
    else:
        display_verb = "unknown"

    exec_command: tuple[str, ...] = ()
    container = None
    stdio = {"stdin": False, "stdout": False, "stderr": False, "tty": False}
    ports: tuple[str, ...] = ()
    if subresource in ("exec", "attach", "log"):
        container = query.first("container")
    if subresource == "exec":
        exec_command = query.get_all("command")
    if subresource in ("exec", "attach"):
        stdio = {key: _flag(query, key) for key in stdio}
    if subresource == "portforward":
        ports = query.get_all("ports")
    if node_exec:
        # kubelet /run takes cmd (split on whitespace), /exec command=...
        exec_command = tuple(w for c in query.get_all("cmd") for w in c.split()) + query.get_all("command")

    return K8sRequest(
        is_resource=True,
        verb=verb,
        method=method,
        path=path,
        display_verb=display_verb,
        api_prefix=api_prefix,
        api_group=api_group,
        api_version=api_version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        parts=tuple(parts),
        query=query,
        decoded_path=decoded_path,
        exec_command=exec_command,
        container=container,
        ports=ports,
        node_exec=node_exec,
        **stdio,
    )


def from_routed(method: str, routed: RoutedPath, **kwargs: Any) -> K8sRequest | K8sRequestError:
    """L{request_info} for a split request-target (forwarded path and query included)."""
    return request_info(
        method, routed.segments, routed.raw_query_params, path=routed.path, **kwargs
    )
