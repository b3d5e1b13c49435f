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
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from hoopgw.masking.jsonbody import JsonBodyError
from hoopgw.model import Action
from hoopgw.protocols.http.bodies import body_record
from hoopgw.protocols.http.k8s import K8sRequest, K8sRequestError, from_routed
from hoopgw.protocols.http.paths import PathError, RoutedPath, split_request_target
from hoopgw.protocols.http.wire import Head

if TYPE_CHECKING:
    from hoopgw.masking.service import SessionMasks

__all__ = [
    "describe_request",
    "json_pointer",
    "mask_patch_values",
    "patch_reads_masked",
    "request_action",
    "split_target",
    "with_body",
]

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


def with_body(
    action: Action,
    info: K8sRequest,
    head: Head,
    held: Sequence[bytes],
    *,
    received: int,
    whole: bool,
    cap: int,
    masks: SessionMasks | None,
) -> Action:
    """
    C{action} with the record of the request body the audit trail keeps:
    its first C{cap} bytes of what is C{held} (of C{received}; C{whole}
    once the body ended), masked where the connection's masks name values.
    """
    details = dict(action.details)
    first = b"".join(held)[:cap]
    if head.content_length is not None:
        total: int | None = head.content_length
    else:
        total = received if whole else None
    content_type = head.getRawHeaders(b"content-type")
    record = details["body"] = body_record(
        first,
        total=total,
        resource=info.resource,
        content_type=content_type[0].decode("ascii", "replace") if content_type else "",
        cap=cap,
    )
    masked = None
    if masks is not None and masks.trail_json is not None:
        if "json" in record:
            # What the connection's masks name (a ConfigMap's values) is stored masked, for everyone.
            counts: dict[tuple[str, str], int] = {}
            try:
                document = masks.trail_json.mask_document(record["json"], counts)
                if content_type and b"json-patch" in content_type[0].lower():
                    document = mask_patch_values(masks.trail_json, document, counts)
                record["json"] = document
            except JsonBodyError as e:
                del record["json"]
                record["omitted"] = str(e)
            masked = masks.settle(counts) if counts else None
        elif "text" in record:
            # YAML (server-side apply), or JSON cut at the cap: the paths cannot be followed.
            del record["text"]
            record.pop("truncated", None)
            record["omitted"] = "may hold values the connection's masks name (not JSON, or over the size cap)"
    return Action(action.kind, action.input, action.attributes, details, masked)


def patch_reads_masked(
    masks: SessionMasks | None, method: str, head: Head, held: Sequence[bytes], *, received: int, whole: bool
) -> str | None:
    """
    Why a JSON patch must not be forwarded for an identity under JSON
    path masks: its C{copy}, C{move} or C{test} operations read a masked
    value (into a field the client sees, or as a yes/no oracle).
    """
    if masks is None or not masks.masks_bodies or method != "PATCH":
        return None
    content_type = head.getRawHeaders(b"content-type")
    if not content_type or b"json-patch" not in content_type[0].lower():
        return None
    body = b"".join(held)
    if not whole or received > len(body):
        return "a JSON patch too large for the gateway to read whole cannot be checked against the masks"
    try:
        # As the API server reads it: invalid UTF-8 replaced, not refused.
        operations = json.loads(body.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return "the gateway cannot read this JSON patch, so it cannot check it against the masks"
    if not isinstance(operations, list):
        return None
    for operation in operations:
        if not isinstance(operation, dict):
            continue
        op = operation.get("op")
        if op == "test":
            # A yes/no answer about any value, masked or found by a detector.
            return "JSON patch 'test' operations are not allowed while masks apply to you"
        pointer = operation.get("from") if op in ("copy", "move") else None
        if pointer is None or masks.client_json is None:
            continue
        if not isinstance(pointer, str) or masks.client_json.reaches(json_pointer(pointer)) is not None:
            return (
                f"the JSON patch's {op!r} operation reads {pointer!r}, which is masked for you: "
                "masked values are not copied or moved"
            )
    return None
