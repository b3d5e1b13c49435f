"""
The HTTP front end as an L{IFrontEnd <hoopgw.interfaces.IFrontEnd>} plugin
(C{twisted/plugins/hoopgw_frontends.py} names it): its connection keys, the
C{http.*} and C{k8s.*} conditions its actions carry
(L{hoopgw.protocols.http.k8s} finds the Kubernetes ones) and its listener.
"""

from __future__ import annotations

from hoopgw.frontends import FrontEnd
from hoopgw.policy.rules import ConditionKind, ConditionSpec
from hoopgw.protocols.http.settings import KEYS, parse_connection

__all__ = ["CONDITIONS", "front_end"]

CONDITIONS = (
    ConditionSpec("k8s.verbs", ConditionKind.globs, "lower",
                  "Kubernetes API verbs: get, list, create, delete, deletecollection, ..."),
    ConditionSpec("k8s.resources", ConditionKind.globs, "lower",
                  "Kubernetes resources: pods, namespaces, ..."),
    ConditionSpec("k8s.subresources", ConditionKind.globs, "lower",
                  "Kubernetes subresources: exec, log, status, ..."),
    ConditionSpec("k8s.namespaces", ConditionKind.globs, None, "Kubernetes namespaces"),
    ConditionSpec("k8s.names", ConditionKind.globs, None, "Kubernetes object names"),
    ConditionSpec("k8s.groups", ConditionKind.globs, None,
                  'Kubernetes API groups ("" is the core group)'),
    ConditionSpec("http.methods", ConditionKind.globs, "upper", "HTTP methods: GET, POST, ..."),
    ConditionSpec("http.paths", ConditionKind.globs, None,
                  "HTTP request paths below the connection's prefix"),
)  # fmt: skip

front_end = FrontEnd(
    kind="http",
    description="HTTP APIs, the Kubernetes API first among them (kubectl, curl), over TLS",
    factory="hoopgw.protocols.http.proxy.make_front_end",
    parse=parse_connection,
    connection_keys=KEYS,
    conditions=CONDITIONS,
    action_kinds=("http.request", "k8s.*"),
    default_listener="tcp:18443:interface=127.0.0.1",
)
