"""JSON paths, and JSON bodies masked by path, kind and detectors as they stream."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.masking.engine import REDACTED
from hoopgw.masking.jsonbody import LAST_APPLIED, JsonBodyError, JsonStreamMasker
from hoopgw.masking.jsonpath import ANY, JsonPathError, compile_json_path, step
from hoopgw.masking.service import MaskingService
from hoopgw.model import Connection, Identity
from hoopgw.policy.rules import MaskRule, PolicySet

B64_REDACTED = base64.b64encode(REDACTED.encode()).decode()
CARD = "4111 1111 1111 1111"


def session_masks(*rules: MaskRule):
    service = MaskingService(SimpleNamespace(policy_set=PolicySet(masks=list(rules))), b"k" * 32)
    return service.for_session(Identity("dev", "alice", ("dev",)), Connection("k8s", "http", "x"))


def stream(masks, data: bytes, sizes=None) -> tuple[bytes, dict]:
    counts: dict = {}
    masker = JsonStreamMasker(masks.client_json, masks, counts)
    out = []
    if sizes is None:
        out.append(masker.feed(data))
    else:
        at = 0
        for size in sizes:
            out.append(masker.feed(data[at : at + size]))
            at += size
        out.append(masker.feed(data[at:]))
    out.append(masker.finish())
    return b"".join(out), counts


KINDS = session_masks(
    MaskRule("secrets", kinds=("Secret",)),
    MaskRule("config", kinds=("ConfigMap",), json_paths=("data.password", "data.api_token_x")),
    MaskRule("env", kinds=("Pod",), json_paths=("spec.containers[*].env[*].value",)),
)
SECRET = {
    "kind": "Secret",
    "apiVersion": "v1",
    "metadata": {"name": "db", "annotations": {LAST_APPLIED: json.dumps({"kind": "Secret", "data": {"pw": "aHVudGVyMg=="}})}},
    "data": {"pw": "aHVudGVyMg==", "user": "YWRh"},
    "type": "Opaque",
}


class JsonPathTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(compile_json_path("data.*"), ("data", ANY))
        self.assertEqual(compile_json_path("$.spec.containers[*].env[0]['value']"), ("spec", "containers", ANY, "env", 0, "value"))
        self.assertEqual(compile_json_path("$['a.b'][*]"), ("a.b", ANY))
        self.assertEqual(compile_json_path("..password"), (("..", "password"),))

    def test_refused(self) -> None:
        for path, why in [
            ("$", "whole document"),
            ("data[?(@.x)]", "filters and slices"),
            ("data[1:2]", "filters and slices"),
            ("data[-1]", "negative index"),
            ("data..", "after '..'"),
            ("data.", "after '.'"),
            ("data x", "unexpected"),
        ]:
            with self.assertRaises(JsonPathError) as caught:
                compile_json_path(path)
            self.assertIn(why, str(caught.exception))

    def test_step(self) -> None:
        path = compile_json_path("..token")
        self.assertEqual(step(path, 0, "spec"), (0,))
        self.assertEqual(step(path, 0, "token"), (0, 1))
        self.assertEqual(step(compile_json_path("[0]"), 0, 0), (1,))
        self.assertEqual(step(compile_json_path("[0]"), 0, "0"), ())


class KindTests(SynchronousTestCase):
    def test_secret_values_base64_of_the_mask(self) -> None:
        """A Secret's data stays base64 (typed clients decode it), its keys stay, its last-applied copy too."""
        out, counts = stream(KINDS, json.dumps(SECRET).encode())
        got = json.loads(out)
        self.assertEqual(got["data"], {"pw": B64_REDACTED, "user": B64_REDACTED})
        self.assertEqual(json.loads(got["metadata"]["annotations"][LAST_APPLIED])["data"], {"pw": B64_REDACTED})
        self.assertEqual((got["type"], got["metadata"]["name"]), ("Opaque", "db"))
        self.assertEqual(counts, {("secrets", "path"): 3})

    def test_list_items_take_the_list_kind(self) -> None:
        items = [{k: v for k, v in SECRET.items() if k != "kind"} for _ in range(3)]
        out, _ = stream(KINDS, json.dumps({"kind": "SecretList", "metadata": {}, "items": items}).encode())
        self.assertNotIn(b"aHVudGVyMg", out)
        self.assertNotIn(b"YWRh", out)

    def test_watch_events_and_table_rows(self) -> None:
        pod = {"kind": "Pod", "spec": {"containers": [{"env": [{"name": "T", "value": "s3cret"}]}]}}
        table_row = {"cells": ["db"], "object": {"kind": "PartialObjectMetadata", "metadata": SECRET["metadata"]}}
        events = [{"type": "ADDED", "object": SECRET}, {"type": "MODIFIED", "object": pod},
                  {"kind": "Table", "rows": [table_row]}]
        data = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        out, _ = stream(KINDS, data)
        self.assertNotIn(b"aHVudGVyMg", out)
        self.assertNotIn(b"s3cret", out)
        self.assertEqual(out.count(b"\n"), 3)

    def test_other_kinds_untouched_byte_for_byte(self) -> None:
        data = json.dumps({"kind": "Service", "data": {"pw": "x"}, "spec": {"containers": [{"env": [{"value": "v"}]}]}}, indent=2).encode()
        self.assertEqual(stream(KINDS, data)[0], data)

    def test_kind_after_the_value_masks_more(self) -> None:
        """A member before its object's kind is masked as though the object were of every kind named."""
        out, _ = stream(KINDS, b'{"data": {"password": "p", "other": "o"}, "kind": "Service"}')
        self.assertEqual(json.loads(out)["data"]["password"], REDACTED)

    def test_configmap_paths(self) -> None:
        doc = {"kind": "ConfigMap", "data": {"password": "p", "api_token_x": "t", "color": "blue"}}
        got = json.loads(stream(KINDS, json.dumps(doc).encode())[0])
        self.assertEqual(got["data"], {"password": REDACTED, "api_token_x": REDACTED, "color": "blue"})

    def test_covered_numbers_become_null(self) -> None:
        masks = session_masks(MaskRule("m", json_paths=("a",)))
        got = json.loads(stream(masks, b'{"a": {"n": 1, "t": true, "s": "x", "z": null}, "b": 2}')[0])
        self.assertEqual(got, {"a": {"n": None, "t": None, "s": REDACTED, "z": None}, "b": 2})

    def test_unparsable_last_applied_replaced_whole(self) -> None:
        doc = {"kind": "Secret", "metadata": {"annotations": {LAST_APPLIED: "{not json"}}}
        got = json.loads(stream(KINDS, json.dumps(doc).encode())[0])
        self.assertEqual(got["metadata"]["annotations"][LAST_APPLIED], REDACTED)


class DetectorTests(SynchronousTestCase):
    masks = session_masks(MaskRule("cards", detectors=("card", "email")))

    def test_strings_keys_numbers_and_escapes(self) -> None:
        data = json.dumps({"a": f"pay {CARD}", CARD: 1, "n": 4111111111111111, "e": "\\u0034"}).encode()
        data = data.replace(b'"pay 4111', b'"pay \\u0034111')
        out, counts = stream(self.masks, data)
        got = json.loads(out)
        self.assertEqual(got, {"a": f"pay {REDACTED}", REDACTED: 1, "n": None, "e": "\\u0034"})
        self.assertEqual(counts, {("cards", "card"): 3})

    def test_nothing_found_is_byte_identical(self) -> None:
        data = b'{ "a" : [1, 2.5e3, -0, true, false, null, "x\\"y", {}] }\n{"b":[]}'
        self.assertEqual(stream(self.masks, data)[0], data)

    def test_not_json_refused(self) -> None:
        for data in (b"{'a': 1}", b'{"a" 1}', b"[1,,2]", b'{"a": 1', b"]", b'{"a": tru}', b'"open'):
            with self.assertRaises(JsonBodyError):
                stream(self.masks, data)

    def test_long_string_over_many_chunks(self) -> None:
        """A long value arriving in many pieces is looked at once, and found."""
        value = "x" * 200_000 + "\\\\" + '\\"' + CARD
        data = b'{"v": "' + value.encode() + b'"}'
        out, counts = stream(self.masks, data, [1000] * 205)
        self.assertNotIn(b"1111 1111", out)
        self.assertEqual(counts, {("cards", "card"): 1})


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.text(max_size=12),
                     st.sampled_from([CARD, "ada@example.org", "hunter2"]))
_documents = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["data", "kind", "items", "object", "spec", "metadata", "x", "password"]),
                        inner, max_size=4),
    ),
    max_leaves=25,
)


RULES = (
    MaskRule("secrets", kinds=("Secret", "ConfigMap")),
    MaskRule("paths", json_paths=("..password", "items[*].spec")),
    MaskRule("cards", detectors=("card", "email")),
)


class StreamPropertyTests(SynchronousTestCase):
    masks = session_masks(*RULES)
    paths_only = session_masks(*[m for m in RULES if not m.detectors])

    @settings(max_examples=300, deadline=None)
    @given(documents=st.lists(_documents, min_size=1, max_size=3), cuts=st.lists(st.integers(0, 40), max_size=30),
           indent=st.sampled_from([None, 1]))
    def test_any_chunking_same_output_same_as_the_tree(self, documents, cuts, indent) -> None:
        """
        However the body is cut, the output is the same; it is JSON, and
        (without detectors) what masking the parsed document gives.
        """
        data = b"\n".join(json.dumps(d, indent=indent).encode() for d in documents)
        whole, _ = stream(self.masks, data)
        self.assertEqual(stream(self.masks, data, cuts)[0], whole)
        parsed = [json.loads(line) for line in whole.split(b"\n")] if indent is None else None
        tree = [self.paths_only.client_json.mask_document(d, {}, as_streamed=True) for d in documents]
        compact = b"\n".join(json.dumps(d).encode() for d in documents)
        got = [json.loads(x) for x in stream(self.paths_only, compact)[0].split(b"\n")]
        self.assertEqual(got, tree)
        if parsed is not None:
            self.assertNotIn(CARD, json.dumps(parsed))
            self.assertNotIn("ada@example.org", json.dumps(parsed))


class AttackTests(SynchronousTestCase):
    """What an outside round found (tests/masking and tests/integration/test_http_masking.py)."""

    pii = session_masks(MaskRule("secrets", kinds=("Secret",), strategy="partial"),
                        MaskRule("pii", detectors=("card", "ssn")))

    def test_deep_nesting_refused_not_crashed(self) -> None:
        with self.assertRaises(JsonBodyError):
            stream(KINDS, b"[" * 5000 + b"]" * 5000)
        with self.assertRaises(JsonBodyError):
            stream(session_masks(MaskRule("m", json_paths=("x",))), b'{"a":' * 600 + b"1" + b"}" * 600)
        with self.assertRaises(JsonBodyError):
            KINDS.client_json.mask_document(json.loads("[" * 900 + "]" * 900), {})

    def test_deep_last_applied_replaced_whole(self) -> None:
        """Anyone who can annotate an object must not break everyone's kubectl get."""
        for copy in ("[" * 5000 + "]" * 5000, '{"a":' * 900 + "1" + "}" * 900):
            doc = {"kind": "Table", "rows": [{"object": {"kind": "PartialObjectMetadata",
                                                          "metadata": {"annotations": {LAST_APPLIED: copy}}}}]}
            got = json.loads(stream(KINDS, json.dumps(doc).encode())[0])
            self.assertEqual(got["rows"][0]["object"]["metadata"]["annotations"][LAST_APPLIED], REDACTED)

    def test_system_metadata_not_searched(self) -> None:
        """A 9-digit resourceVersion is no SSN: clients send it back (watches, updates)."""
        doc = {"kind": "ConfigMapList", "metadata": {"resourceVersion": "123456789", "continue": "123456789"},
               "items": [{"metadata": {"resourceVersion": "223456789", "uid": "123-45-6789", "generation": 123456789,
                                       "ownerReferences": [{"uid": "123456789"}], "labels": {"x": "123-45-6789"}}}]}
        got = json.loads(stream(self.pii, json.dumps(doc).encode())[0])
        item = got["items"][0]["metadata"]
        self.assertEqual((got["metadata"]["resourceVersion"], item["resourceVersion"], item["generation"]),
                         ("123456789", "223456789", 123456789))
        self.assertEqual(item["ownerReferences"][0]["uid"], "123456789")
        self.assertEqual(item["labels"]["x"], REDACTED)

    def test_base64_values_masked_as_what_they_stand_for(self) -> None:
        card = base64.b64encode(b"4111111111111234").decode()
        got = json.loads(stream(self.pii, json.dumps({"kind": "Secret", "data": {"c": card}}).encode())[0])
        self.assertEqual(base64.b64decode(got["data"]["c"]), b"************1234")
        hashed = session_masks(MaskRule("h", kinds=("Secret",), strategy="hash"))
        doc = {"kind": "Secret", "data": {"a": base64.b64encode(b"same").decode()}, "stringData": {"b": "same"}}
        got = json.loads(stream(hashed, json.dumps(doc).encode())[0])
        self.assertEqual(base64.b64decode(got["data"]["a"]).decode(), got["stringData"]["b"])

    def test_copy_of_a_root_path_masked(self) -> None:
        """A mask without kinds masks the object's last-applied copy by its paths too."""
        masks = session_masks(MaskRule("pw", json_paths=("data.password", "items[*].data.password")))
        copy = json.dumps({"data": {"password": "x1", "other": "y"}})
        doc = {"metadata": {"annotations": {LAST_APPLIED: copy}}, "data": {"password": "x1"}}
        got = json.loads(stream(masks, json.dumps(doc).encode())[0])
        self.assertEqual(json.loads(got["metadata"]["annotations"][LAST_APPLIED])["data"],
                         {"password": REDACTED, "other": "y"})
        listed = {"items": [doc]}
        got = json.loads(stream(masks, json.dumps(listed).encode())[0])
        self.assertNotIn("x1", json.dumps(got))

    def test_many_descendant_segments_stay_cheap(self) -> None:
        masks = session_masks(MaskRule("m", json_paths=("..*..*..*.password",)))
        doc = b'{"a":' * 200 + b"1" + b"}" * 200
        import time
        start = time.thread_time()  # CPU time: immune to a loaded machine
        stream(masks, doc)
        self.assertLess(time.thread_time() - start, 2.0)

    def test_copy_masked_as_its_object_whatever_kind_it_claims(self) -> None:
        copy = json.dumps({"kind": "Foo", "data": {"pw": "aHVudGVyMg=="}, "kind ": "x"})
        doc = {"kind": "Secret", "metadata": {"annotations": {LAST_APPLIED: copy}}}
        got = json.loads(stream(KINDS, json.dumps(doc).encode())[0])
        self.assertNotIn("aHVudGVyMg", got["metadata"]["annotations"][LAST_APPLIED])

    def test_array_of_objects_at_the_root(self) -> None:
        got = json.loads(stream(KINDS, json.dumps([SECRET, SECRET]).encode())[0])
        self.assertEqual([g["data"]["pw"] for g in got], [B64_REDACTED] * 2)

    def test_numbers_in_other_spellings(self) -> None:
        got = json.loads(stream(self.pii, b'{"n": 4.111111111111111e15, "m": 4111111111111111.0, "k": 1.5}')[0])
        self.assertEqual(got, {"n": None, "m": None, "k": 1.5})

    def test_byte_order_mark_and_lone_surrogates(self) -> None:
        out, _ = stream(self.pii, b'\xef\xbb\xbf{"a": "\\ud800 4111 1111 1111 1111"}')
        self.assertTrue(out.startswith(b"\xef\xbb\xbf"))
        self.assertNotIn(b"1111 1111", out)

    def test_reaches(self) -> None:
        rules = KINDS.client_json
        for pointer, reads in [("/data/pw", True), ("/data", True), ("", True), ("/spec/containers/0/env/0/value", True),
                               ("/metadata/annotations/" + LAST_APPLIED.replace("/", "~1"), True),
                               ("/metadata/annotations", True), ("/metadata/name", False), ("/spec/replicas", False)]:
            tokens = [t.replace("~1", "/") for t in pointer.split("/")[1:]]
            self.assertEqual(rules.reaches(tokens) is not None, reads, pointer)
        env = session_masks(MaskRule("e", json_paths=("spec.containers[0].env[0].value",))).client_json
        for pointer in ("/spec/containers/0/env/0/value", "/spec/containers/-1/env/+0/value", "/spec/containers/00/env"):
            self.assertIsNotNone(env.reaches(pointer.split("/")[1:]), pointer)
        self.assertIsNone(env.reaches(["spec", "containers", "²"]))
