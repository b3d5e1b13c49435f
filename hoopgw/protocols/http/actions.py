"""
What a request is decided as: its canonical target
(L{hoopgw.protocols.http.paths}), its API description
(L{hoopgw.protocols.http.k8s}) and its L{Action}, each a pure function of
the request, cached here, on the decision path (the model's values stay
plain frozen values); and the masking of a JSON patch's values for the
audit record.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from hoopgw.model import Action
from hoopgw.protocols.http.k8s import K8sRequest, K8sRequestError, from_routed
from hoopgw.protocols.http.paths import PathError, RoutedPath, split_request_target

__all__ = ["describe_request", "json_pointer", "mask_patch_values", "request_action", "split_target"]

# Clients repeat the same few targets (a poll, kubectl's discovery): the
# canonical form and API description are pure functions of the target (and
# method), immutable, and on a Kubernetes path cost more than the rest of
# the request's own Python.  Kept for at most 256 targets of up to 1 KiB.
_CACHED_TARGET = 1024
_split_cached = lru_cache(maxsize=256)(split_request_target)
_describe_cached = lru_cache(maxsize=256)(from_routed)


def _build_action(info: K8sRequest, removed: tuple[bytes, ...]) -> Action:
    action = info.to_action()
    if not removed:
        return action
    details = dict(action.details)
    # Names only: what the client tried to pass on, never the values.
    details["removed_headers"] = [name.decode("ascii") for name in removed]
    return Action(action.kind, action.input, action.attributes, details)


# The same requests make the same actions (immutable; a request body's
# record is added to a copy).  The removed names are part of the key: every
# request that carries its bearer token has Authorization removed.
_action_cached = lru_cache(maxsize=256)(_build_action)


def split_target(target: bytes) -> RoutedPath | PathError:
    return _split_cached(target) if len(target) <= _CACHED_TARGET else split_request_target(target)


def describe_request(method: str, routed: RoutedPath) -> K8sRequest | K8sRequestError:
    if len(routed.path) + len(routed.query) <= _CACHED_TARGET:
        return _describe_cached(method, routed)
    return from_routed(method, routed)


def request_action(info: K8sRequest, removed: tuple[bytes, ...]) -> Action:
    # The removed names are the client's too: they count against the bound.
    if len(info.path) + len(info.query.raw) + sum(map(len, removed)) <= _CACHED_TARGET:
        return _action_cached(info, removed)
    return _build_action(info, removed)


def mask_patch_values(rules: Any, operations: Any, counts: dict[tuple[str, str], int]) -> Any:
    """A JSON patch with each operation's value masked where its path leads to something the masks name."""
    if not isinstance(operations, list):
        return operations
    out = []
    for operation in operations:
        if isinstance(operation, dict) and "value" in operation and isinstance(operation.get("path"), str):
            mask = rules.reaches(json_pointer(operation["path"]))
            if mask is not None:
                key = (mask.name, "path")
                counts[key] = counts.get(key, 0) + 1
                operation = {**operation, "value": mask.masker.text_value(json.dumps(operation["value"]))}
        out.append(operation)
    return out


def json_pointer(text: str) -> list[str]:
    """A JSON pointer's reference tokens (RFC 6901)."""
    if not text:
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in text.split("/")[1:]]
