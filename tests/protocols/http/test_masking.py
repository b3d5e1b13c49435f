"""Which response bodies are masked how, and what the gateway asks the upstream for while masks apply."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.masking.jsonbody import JsonStreamMasker
from hoopgw.policy.rules import MaskRule
from hoopgw.protocols.http.masking import request_headers, response_masker
from tests.masking.test_jsonbody import session_masks

DETECTORS = session_masks(MaskRule("pii", detectors=("card",)))
PATHS = session_masks(MaskRule("pw", json_paths=("..password",)), MaskRule("pii", detectors=("card",)))
CARD = b"4111 1111 1111 1111"


def masked(masks, content_type: bytes, body: bytes, code: int = 200) -> bytes | str | None:
    headers = [(b"Content-Type", content_type)] if content_type else []
    masker = response_masker(masks, code, headers, {})
    if masker is None or isinstance(masker, str):
        return masker
    return masker.feed(body[:5]) + masker.feed(body[5:]) + masker.finish()


class ResponseTests(SynchronousTestCase):
    def test_json_types(self) -> None:
        body = json.dumps({"password": "p", "note": CARD.decode()}).encode()
        for content_type in (b"application/json", b"application/json; charset=utf-8", b"APPLICATION/JSON",
                             b"application/merge-patch+json", b"application/json;stream=watch"):
            self.assertEqual(json.loads(masked(PATHS, content_type, body)),
                             {"password": "[redacted]", "note": "[redacted]"}, content_type)

    def test_json_under_another_type_is_found(self) -> None:
        body = json.dumps({"password": "p", "note": CARD.decode()}).encode()
        self.assertEqual(json.loads(masked(PATHS, b"", b"\n  " + body)), {"password": "[redacted]", "note": "[redacted]"})
        for content_type in (b"text/json", b"application/octet-stream", b"application/x-json", b"text/html", b"text/plain"):
            out = masked(DETECTORS, content_type, body)
            self.assertNotIn(CARD, out, content_type)

    def test_plain_text_is_text(self) -> None:
        """kubectl logs: lines that start like JSON and are not are passed, by the detectors only."""
        log = b"[INFO] server starting\n{\"level\":\"info\"}\npanic: " + CARD + b"\n"
        self.assertEqual(masked(PATHS, b"text/plain; charset=utf-8", log),
                         b"[INFO] server starting\n{\"level\":\"info\"}\npanic: [redacted]\n")

    def test_invalid_write_messages_withheld(self) -> None:
        status = {"kind": "Status", "code": 422, "message": "Pod is invalid: ... Value: \"s3cret\"",
                  "details": {"causes": [{"message": "Value: \"s3cret\"", "field": "spec"}]}}
        out = json.loads(masked(PATHS, b"application/json", json.dumps(status).encode(), 422))
        self.assertNotIn("s3cret", json.dumps(out))
        self.assertEqual(out["details"]["causes"][0]["field"], "spec")
        self.assertEqual(json.loads(masked(PATHS, b"application/json", json.dumps(status).encode(), 404))["message"],
                         status["message"])

    def test_text_by_detectors(self) -> None:
        self.assertEqual(masked(DETECTORS, b"text/plain", b"paid " + CARD + b"\n"), b"paid [redacted]\n")

    def test_whole_values_in_log_lines(self) -> None:
        """kubectl logs of JSON or CSV lines: a bare SSN is a whole value there too, as it is in a JSON body."""
        ssn = session_masks(MaskRule("pii", detectors=("ssn",)))
        log = b'{"level":"info","ssn":"536228726","n":536228726}\nid,536228726,Ada\ninvoice 123456789 paid\n'
        self.assertEqual(
            masked(ssn, b"text/plain", log),
            b'{"level":"info","ssn":"[redacted]","n":[redacted]}\nid,[redacted],Ada\ninvoice 123456789 paid\n',
        )

    def test_refused(self) -> None:
        for masks, headers, code, why in [
            (DETECTORS, [(b"Content-Type", b"application/yaml")], 200, "application/yaml"),
            (DETECTORS, [(b"Content-Type", b"application/vnd.kubernetes.protobuf")], 200, "protobuf"),
            (DETECTORS, [(b"Content-Type", b"multipart/byteranges; boundary=x")], 200, "multipart"),
            (DETECTORS, [(b"Content-Type", b"application/json"), (b"Content-Encoding", b"gzip")], 200, "gzip"),
            (DETECTORS, [(b"Content-Type", b"application/json"), (b"Content-Type", b"text/plain")], 200, "two"),
            (DETECTORS, [(b"Content-Type", b"application/json")], 206, "part"),
            (DETECTORS, [(b"Content-Type", b"text/plain"), (b"Content-Range", b"bytes 0-9/99")], 200, "part"),
            (PATHS, [(b"Content-Type", b"text/html")], 200, "not JSON"),
            (PATHS, [(b"Content-Type", b"application/octet-stream")], 200, "not JSON"),
            (DETECTORS, [(b"Content-Type", b"text/plain; charset=UTF-16")], 200, "UTF-16"),
            (DETECTORS, [(b"Content-Type", b'application/json; charset="utf-32"')], 200, "utf-32"),
        ]:
            refusal = response_masker(masks, code, headers, {})
            self.assertIsInstance(refusal, str, headers)
            self.assertIn(why, refusal)

    def test_binary_media_pass(self) -> None:
        for content_type in (b"image/png", b"application/zip", b"font/woff2"):
            self.assertIsNone(response_masker(PATHS, 200, [(b"Content-Type", content_type)], {}))
        self.assertIsInstance(response_masker(PATHS, 200, [(b"Content-Type", b"application/json")], {}), JsonStreamMasker)


class RequestTests(SynchronousTestCase):
    def test_plain_whole_json(self) -> None:
        headers = [(b"Accept", b"application/vnd.kubernetes.protobuf, application/json"), (b"Accept-Encoding", b"gzip"),
                   (b"Range", b"bytes=0-10"), (b"If-Range", b"x"), (b"X-Other", b"1"), (b"Accept-Charset", b"utf-16")]
        self.assertEqual(request_headers(headers), [(b"X-Other", b"1"), (b"Accept", b"application/json")])
        self.assertEqual(request_headers([(b"Accept", b"application/yaml")]), [(b"Accept", b"application/json")])
        self.assertEqual(request_headers([(b"Accept", b"*/*")]), [(b"Accept", b"*/*")])
        self.assertEqual(request_headers([]), [])
