"""
The token parser and header rules, including property tests: arbitrary
input never raises anything but AuthenticationFailed.
"""

from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.errors import AuthenticationFailed
from hoopgw.identity._jose import check_header, parse_unverified

from . import helpers as h

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


class ParserTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=200))
    def test_arbitrary_text(self, token: str) -> None:
        """If the input is any text, parsing either succeeds or raises
        AuthenticationFailed with a fixed reason."""
        try:
            parse_unverified(token)
        except AuthenticationFailed as e:
            self.assertIn(e.reason, ("malformed token", "token too large"))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.binary(max_size=40), min_size=1, max_size=5))
    def test_arbitrary_segments(self, segments: list[bytes]) -> None:
        """If the segments are base64url of arbitrary bytes, parsing either
        succeeds with two JSON objects or raises AuthenticationFailed."""
        token = ".".join(h.b64(s) for s in segments)
        try:
            parsed = parse_unverified(token)
        except AuthenticationFailed as e:
            self.assertEqual(e.reason, "malformed token")
        else:
            self.assertIsInstance(parsed.header, dict)
            self.assertIsInstance(parsed.claims, dict)

    @settings(max_examples=200, deadline=None)
    @given(
        st.dictionaries(st.text(max_size=8), json_values, max_size=5),
        st.dictionaries(st.text(max_size=8), json_values, max_size=5),
        st.binary(max_size=64),
    )
    def test_round_trip(self, header: dict, claims: dict, signature: bytes) -> None:
        """If a token is encoded from JSON objects, parsing returns them."""
        parsed = parse_unverified(h.forge(header, claims, signature))
        self.assertEqual((parsed.header, parsed.claims), (header, claims))

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(st.sampled_from(["alg", "typ", "kid", "crit", "jku", "jwk", "x5c", "x5u", "b64", "zip"]), json_values, max_size=5))
    def test_header_rules(self, header: dict) -> None:
        """If a header passes the checks, its alg is pinned, its typ (if
        any) is accepted, and it has no key-injection header or crit."""
        try:
            alg = check_header(header, ("RS256",))
        except AuthenticationFailed:
            return
        self.assertEqual(alg, "RS256")
        for name in ("crit", "jku", "jwk", "x5c", "x5u", "b64"):
            self.assertNotIn(name, header)

    def test_large(self) -> None:
        """If the token is longer than 16 KiB, it is refused unparsed."""
        with self.assertRaises(AuthenticationFailed) as caught:
            parse_unverified("a" * (16 * 1024 + 1))
        self.assertEqual(caught.exception.reason, "token too large")

    def test_deep_json(self) -> None:
        """If the JSON is nested deeply enough to exhaust recursion, the
        token is malformed rather than crashing the verifier."""
        deep = b"[" * 100000
        header = h.b64(json.dumps({"alg": "RS256"}).encode())
        with self.assertRaises(AuthenticationFailed):
            parse_unverified(f"{header}.{h.b64(deep)[:15000]}.c2ln")
