"""
What the audit trail keeps of a request body: pure functions, no I/O.

A mutating request's body is part of the evidence ("what exactly was
applied"), but it can hold secrets.  Kubernetes Secret objects carry their
values in C{data} and C{stringData}, and C{kubectl apply} copies the whole
object, values included, into the
C{kubectl.kubernetes.io/last-applied-configuration} annotation.  So before
a body is recorded:

  - a JSON body sent to the C{secrets} resource, or any JSON object of
    C{kind: Secret} (also inside a C{List}), has every value of C{data} and
    C{stringData} replaced by C{"<masked>"} (the keys stay: which keys were
    set is evidence, their values are not), and its last-applied annotation
    is masked the same way (parsed, masked, re-serialised; replaced whole if
    it does not parse);
  - a body that cannot be parsed whole (over the size cap, YAML, protobuf,
    not UTF-8) is recorded as text only when it cannot be a Secret: to the
    C{secrets} resource, or mentioning C{Secret} at all, only its size and
    SHA-256 are kept.

Only the first L{DEFAULT_CAP} bytes are ever kept; the size and SHA-256 of
the whole body's size always is, and its SHA-256 when it is within the cap.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["DEFAULT_CAP", "MASK", "body_record", "mask_secrets"]

DEFAULT_CAP = 64 * 1024
"""How much of a request body the audit trail keeps, in bytes."""

MASK = "<masked>"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_SECRET_FIELDS = ("data", "stringData")


# Deeper JSON is not kept (every walk of a record is recursive).
MAX_DEPTH = 64


def _depth(value: Any) -> int:
    """How deep C{value} nests (iteratively: it may be deeper than the interpreter's recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            if depth > deepest:
                deepest = depth
            if depth > MAX_DEPTH:
                return depth
            stack.extend((item, depth + 1) for item in value)
    return deepest


def _mask_object(obj: dict[str, Any], *, force: bool) -> None:
    if not (force or obj.get("kind") == "Secret"):
        return
    for key in _SECRET_FIELDS:
        values = obj.get(key)
        if isinstance(values, dict):
            obj[key] = {k: MASK for k in values}
        elif values is not None:
            obj[key] = MASK
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if isinstance(annotations, dict) and isinstance(annotations.get(LAST_APPLIED), str):
        try:
            applied = json.loads(annotations[LAST_APPLIED])
        except (ValueError, RecursionError):
            applied = None
        if _depth(applied) > MAX_DEPTH:
            applied = None
        if isinstance(applied, dict):
            _mask_object(applied, force=True)
            annotations[LAST_APPLIED] = json.dumps(applied, sort_keys=True)
        else:
            annotations[LAST_APPLIED] = MASK


def mask_secrets(document: Any, *, secret_resource: bool = False) -> Any:
    """
    Mask Secret values in a parsed JSON C{document}, in place, and return
    it.  C{secret_resource}: the request is to the C{secrets} resource, so
    the top-level object is treated as a Secret whatever its C{kind} says
    (a patch has no kind).
    """
    if isinstance(document, dict):
        _mask_object(document, force=secret_resource)
        items = document.get("items")
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict):
                    _mask_object(item, force=secret_resource)
    elif isinstance(document, list) and secret_resource:
        # A JSON patch to a secret: [{"op": "add", "path": "/data/x", "value": ...}]
        for operation in document:
            if isinstance(operation, dict) and "value" in operation:
                operation["value"] = MASK
    return document


def body_record(
    body: bytes, *, total: int | None, resource: str = "", content_type: str = "", cap: int = DEFAULT_CAP
) -> dict[str, Any]:
    """
    The audit record of a request body whose first bytes are C{body} (at
    most C{cap} are looked at) and whose full size is C{total}: C{None}
    for a chunked body that is still arriving, longer than C{cap} (bodies
    stream: the size is known only at the end, and is the outcome's
    C{bytes_in}).

    @return: C{{"size": N}} (C{{"streamed": True}} for an unknown size; and
        C{"sha256"} when whole) plus C{"json"} (parsed, masked), or
        C{"text"} (and C{"truncated": True} if cut), or C{"omitted"} with
        the reason.
    """
    record: dict[str, Any] = {"size": total} if total is not None else {"streamed": True}
    if total is None:
        total = cap + 1  # more than the cap: never whole
    if total <= cap and len(body) == total:
        # Hashed only when small: a large upload sits in a temporary file,
        # and reading it all on the reactor thread would stall every client.
        record["sha256"] = hashlib.sha256(body).hexdigest()
    secret_resource = resource == "secrets"
    head = body[:cap]
    if total <= cap and len(head) == total:
        try:
            document = json.loads(head)
        except (ValueError, RecursionError):
            document = None
        else:
            if _depth(document) > MAX_DEPTH:
                record["omitted"] = f"JSON nested deeper than {MAX_DEPTH} levels"
            else:
                record["json"] = mask_secrets(document, secret_resource=secret_resource)
            return record
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # Binary (protobuf) or cut inside a character: not readable as
        # text, and possibly a Secret in a form the gateway cannot mask.
        record["omitted"] = "not JSON or UTF-8 text"
        return record
    if secret_resource or "Secret" in text:
        record["omitted"] = "may hold Secret values that could not be masked (not JSON, or over the size cap)"
        return record
    record["text"] = text
    if total > len(head):
        record["truncated"] = True
    if content_type:
        record["content_type"] = content_type
    return record

