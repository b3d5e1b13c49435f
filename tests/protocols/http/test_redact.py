"""
Credentials in request-targets are redacted in what is recorded
(L{hoopgw.protocols.http.redact}), never in what is forwarded.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.http import proxy
from hoopgw.protocols.http.k8s import from_routed
from hoopgw.protocols.http.paths import split_request_target
from hoopgw.protocols.http.redact import MARKER, is_credential_name, redact_query, redact_target
from hoopgw.protocols.http.wire import Head
from tests.adversarial.preauth_corpus import RedactionCorpusTests  # noqa: F401  (collected here)


class RedactTests(SynchronousTestCase):
    def test_names(self) -> None:
        """Case-insensitive, percent-decoded once, '-' as '_', the listed names and suffixes."""
        for name in ("token", "TOKEN", "Access-Token", "access%5Ftoken", "%73ig", "x-amz-signature", "csrf_token", " password "):
            self.assertTrue(is_credential_name(name), name)
        for name in ("limit", "watch", "tokens", "signed", "keys", "%2573ig", "container", "command"):
            self.assertFalse(is_credential_name(name), name)

    def test_every_occurrence_and_only_the_value(self) -> None:
        self.assertEqual(
            redact_query("token=a&watch=1&TOKEN=b&x=2"),
            f"token={MARKER}&watch=1&TOKEN={MARKER}&x=2",
        )

    def test_nothing_to_redact_is_the_same_object(self) -> None:
        query = "limit=500&watch=1"
        self.assertIs(redact_query(query), query)
        self.assertEqual(redact_query(""), "")
        self.assertIs(redact_target("/k8s/api"), "/k8s/api")

    def test_action_input_redacted_forwarded_target_untouched(self) -> None:
        """The action (and its cached copy) holds the redacted query; the routed target sent upstream does not."""
        raw = b"/web/api/items?access_token=S3CRET&limit=5"
        routed = split_request_target(raw)
        info = from_routed("GET", routed)
        action = proxy._request_action(info, (b"authorization",))
        self.assertEqual(action.input, f"GET /api/items?access_token={MARKER}&limit=5")
        self.assertNotIn("S3CRET", repr(action))
        self.assertIs(proxy._request_action(info, (b"authorization",)), action)
        self.assertEqual(routed.target, "/api/items?access_token=S3CRET&limit=5")

    def test_long_targets_are_redacted_too(self) -> None:
        """Targets over the caches' bound take the uncached path: redacted all the same."""
        raw = b"/web/api?pad=" + b"x" * 2000 + b"&token=S3CRET"
        info = from_routed("GET", split_request_target(raw))
        self.assertNotIn("S3CRET", proxy._request_action(info, ()).input)

    def test_head_repr(self) -> None:
        head = Head(b"GET", b"/web/api?token=S3CRET", b"HTTP/1.1", 0, b"", [], None, False, True, False)
        self.assertNotIn("S3CRET", repr(head))
