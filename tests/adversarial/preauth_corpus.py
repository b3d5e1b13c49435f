"""
Adversarial corpus for issue 11's item 12 (what an unauthenticated client
may send) and the HTTP half of item 6 (credentials in request-targets never
reach the trail).

  - L{STARTUP_STREAMS}: PostgreSQL start-up phase byte streams, each to be
    refused by the front end's parser after at most a few bytes, however
    large the message it announces;
  - L{SECRET_TARGETS}: request-targets carrying the secret C{S3CRET} under a
    credential's name, spelled every way a client might; none may keep it
    once redacted;
  - L{PLAIN_TARGETS}: targets without a credential, which stay as they are.

Trial collects the test cases through C{tests/protocols/test_preauth.py}
and C{tests/protocols/http/test_redact.py}.
"""

from __future__ import annotations

import struct

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.http.redact import MARKER, redact_query, redact_target
from hoopgw.protocols.postgres import codec

SECRET = "S3CRET"

_SSL = struct.pack(">ii", 8, codec.SSL_REQUEST_CODE)
_STARTUP = codec.encode(codec.StartupMessage({"user": "alice", "database": "appdb"}))


def _header(tag: bytes, length: int) -> bytes:
    return tag + struct.pack(">i", length)


# (what, bytes sent before the parser must have refused, bytes of the stream)
STARTUP_STREAMS: list[tuple[str, int, bytes]] = [
    ("a 200 MiB password message", len(_STARTUP) + 5, _STARTUP + _header(b"p", 200 << 20)),
    ("a password message just over the cap", len(_STARTUP) + 5, _STARTUP + _header(b"p", codec.MAX_PASSWORD_MESSAGE + 1)),
    ("a 2 GiB password message", len(_STARTUP) + 5, _STARTUP + _header(b"p", 2**31 - 1)),
    ("a start-up packet over 10,000 bytes", 4, struct.pack(">i", 10_001)),
    ("a start-up packet of 2 GiB", 4, struct.pack(">i", 2**31 - 1)),
    ("an SSLRequest claiming 10,000 bytes", 8, struct.pack(">ii", 10_000, codec.SSL_REQUEST_CODE)),
    ("a GSSENCRequest claiming 9 bytes", 8, struct.pack(">ii", 9, codec.GSSENC_REQUEST_CODE)),
    ("a CancelRequest claiming 10,000 bytes", 8, struct.pack(">ii", 10_000, codec.CANCEL_REQUEST_CODE)),
    ("a CancelRequest too short for a key", 8, struct.pack(">ii", 12, codec.CANCEL_REQUEST_CODE)),
    ("bytes pipelined behind an SSLRequest", 9, _SSL + b"\x00"),
    ("a Sync claiming 1 MiB", len(_STARTUP) + 5, _STARTUP + _header(b"S", 1 << 20)),
]

SECRET_TARGETS: list[str] = [
    f"/web/api?access_token={SECRET}",
    f"/web/api?ACCESS_TOKEN={SECRET}",
    f"/web/api?Access-Token={SECRET}",
    f"/web/api?access%5Ftoken={SECRET}",
    f"/web/api?%61ccess_token={SECRET}",
    f"/web/api?access_token+={SECRET}",
    f"/web/api?token={SECRET}&token={SECRET}",
    f"/web/api?a=1&password={SECRET}&b=2",
    f"/web/api?passwd={SECRET}",
    f"/web/api?api_key={SECRET}",
    f"/web/api?apiKey={SECRET}",
    f"/web/api?api-key={SECRET}",
    f"/web/api?key={SECRET}",
    f"/web/api?client_secret={SECRET}",
    f"/web/api?refresh_token={SECRET}",
    f"/web/api?id_token={SECRET}",
    f"/web/api?csrf_token={SECRET}",
    f"/web/blob?sv=2022&sig={SECRET}",
    f"/web/obj?X-Amz-Credential=AKIA{SECRET}&X-Amz-Signature={SECRET}&X-Amz-Security-Token={SECRET}",
    f"/web/obj?X-Goog-Signature={SECRET}",
    f"/web/api?oauth_signature={SECRET}",
    f"/web/api?auth={SECRET}",
    f"/web/api?a=1;token={SECRET}",
    f"/web/api;jsessionid={SECRET}/x",
    f"/web/cb#access_token={SECRET}&state=1",
    f"/web/api?q=eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ{SECRET}In0.c2ln",
    f"/web/api?q=eyJhbGciOiJFUzI1NiJ9%2EeyJzdWIiOiJ{SECRET}In0%2Ec2ln",
]

PLAIN_TARGETS: list[str] = [
    "/k8s/api/v1/namespaces/default/pods",
    "/k8s/api/v1/pods?limit=500&watch=1&resourceVersion=12345",
    "/k8s/api/v1/namespaces/a/pods/p/exec?command=ls&container=c&stdout=true",
    "/k8s/api/v1/pods?labelSelector=app%3Dweb&fieldSelector=metadata.name%3Dx",
    "/web/api?token",
    "/web/api?token=",
    "/web/api?monkey=banana",
]


class RedactionCorpusTests(SynchronousTestCase):
    def test_secrets_are_redacted(self) -> None:
        for target in SECRET_TARGETS:
            redacted = redact_target(target)
            self.assertNotIn(SECRET, redacted, target)
            self.assertIn(MARKER, redacted, target)
            # The name stays: the trail still says a credential was sent.
            self.assertEqual(redacted.split("?")[0].split(";")[0].split("#")[0], target.split("?")[0].split(";")[0].split("#")[0])

    def test_queries_alone(self) -> None:
        for target in SECRET_TARGETS:
            if "?" in target and "#" not in target and ";" not in target.split("?")[0]:
                self.assertNotIn(SECRET, redact_query(target.split("?", 1)[1]), target)

    def test_plain_targets_are_untouched(self) -> None:
        for target in PLAIN_TARGETS:
            self.assertIs(redact_target(target), target)


class StartupStreamTests(SynchronousTestCase):
    def test_refused_early(self) -> None:
        """Each stream is refused by the time its first C{at} bytes are in, fed one byte at a time."""
        for what, at, stream in STARTUP_STREAMS:
            parser = codec.FrontendParser()
            refused = False
            for index in range(len(stream)):
                try:
                    parser.feed(stream[index : index + 1])
                except codec.ProtocolError:
                    refused = True
                    self.assertLessEqual(index + 1, at, what)
                    self.assertEqual(parser.buffered, 0, what)
                    break
            self.assertTrue(refused, what)
