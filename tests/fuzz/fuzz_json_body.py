"""
Fuzz the streaming JSON masker (hoopgw.masking.jsonbody) that masks HTTP
response bodies.

Input: one byte giving the chunk size (0: the whole body at once), then the
body.

Checked: L{JsonStreamMasker} raises nothing but L{JsonBodyError}; fed in
chunks it gives what it gives fed whole (or refuses both ways); what it
lets through parses as JSON documents; masked by paths alone, it gives what
L{JsonRules.mask_document} gives for the parsed documents; with the
detectors on, every string, member name and integer the paths leave is
what the detectors make of it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz._fuzzing import check, fuzz, instrumented

with instrumented(__name__):
    from hoopgw.masking.jsonbody import JsonBodyError, JsonStreamMasker
    from hoopgw.masking.service import MaskingService

from hoopgw.model import Connection, Identity
from hoopgw.policy.rules import MaskRule, PolicySet

PATH_RULES = (
    MaskRule("secrets", kinds=("Secret", "ConfigMap")),
    MaskRule("env", kinds=("Pod",), json_paths=("spec.containers[*].env[*].value",)),
    MaskRule("paths", json_paths=("..password", "items[0].data", "$['a.b'][*]")),
)
DETECTORS = MaskRule("pii", detectors=("card", "email", "ssn", "jwt"))


def _masks(*rules: MaskRule):
    service = MaskingService(SimpleNamespace(policy_set=PolicySet(masks=list(rules))), b"k" * 32)
    return service.for_session(Identity("dev", "fuzz", ()), Connection("k8s", "http", "x"))


PATHS = _masks(*PATH_RULES)
ALL = _masks(*PATH_RULES, DETECTORS)
class _Duplicate(ValueError):
    pass


def _pairs(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _Duplicate("a member twice")  # a stream sees both, a parsed document the last
    return dict(pairs)


DECODER = json.JSONDecoder(strict=False, object_pairs_hook=_pairs)


def _run(masks, body: bytes, size: int) -> bytes | None:
    masker = JsonStreamMasker(masks.client_json, masks, {})
    out = []
    try:
        if size:
            for at in range(0, len(body), size):
                out.append(masker.feed(body[at:at + size]))
        else:
            out.append(masker.feed(body))
        out.append(masker.finish())
    except JsonBodyError:
        return None
    return b"".join(out)


def _documents(data: bytes) -> list:
    text = data.decode("utf-8", "surrogateescape")
    documents, at = [], 0
    while True:
        while at < len(text) and text[at] in " \t\r\n":
            at += 1
        if at == len(text):
            return documents
        value, at = DECODER.raw_decode(text, at)
        documents.append(value)


def _compare(given, by_paths, got, wrong: list) -> None:
    """C{got} (masked by paths and detectors) against C{given} and C{by_paths} (masked by paths alone)."""
    if by_paths != given and not isinstance(given, (dict, list)):
        return  # masked by a path: the strategy's value
    if isinstance(given, dict):
        if not isinstance(got, dict) or len(got) != len(given):
            if isinstance(got, dict) and len(got) < len(given):
                return  # two member names masked alike: one object member
            wrong.append(("object", given, got))
            return
        for (key, value), (masked_key, masked), expected in zip(given.items(), got.items(), by_paths.values()):
            if masked_key != ALL.client_text(key, {}):
                wrong.append(("member name", key, masked_key))
            _compare(value, expected, masked, wrong)
    elif isinstance(given, list):
        if not isinstance(got, list) or len(got) != len(given):
            wrong.append(("array", given, got))
            return
        for value, expected, masked in zip(given, by_paths, got):
            _compare(value, expected, masked, wrong)
    elif isinstance(given, str):
        if got != ALL.client_text(given, {}):
            wrong.append(("string", given, got))
    elif isinstance(given, int) and not isinstance(given, bool):
        text = str(given)
        if got != (None if ALL.client_text(text, {}) is not text else given):
            wrong.append(("number", given, got))


def one_input(data: bytes) -> None:
    if not data:
        return
    size, body = data[0], data[1:]
    whole = _run(ALL, body, 0)
    check(_run(ALL, body, size) == whole, "the output depends on how the body is cut")
    if whole is None:
        return
    try:
        outputs = _documents(whole)
        inputs = _documents(body)
    except _Duplicate:
        return
    except (ValueError, RecursionError):
        check(False, "the masker let through what is not JSON")
        return
    by_paths = _run(PATHS, body, size)
    check(by_paths is not None, "refused with detectors, accepted without")
    expected = [PATHS.client_json.mask_document(d, {}, as_streamed=True) for d in inputs]
    check(_documents(by_paths) == expected, "streamed and parsed masking differ")
    check(len(outputs) == len(inputs), "documents lost or added")
    wrong: list = []
    for given, masked_by_paths, got in zip(inputs, expected, outputs):
        _compare(given, masked_by_paths, got, wrong)
    check(not wrong, f"values not masked as the detectors say: {wrong[:2]!r}")


if __name__ == "__main__":
    fuzz(one_input)
