"""
Tests for L{hoopgw.protocols.http.paths}.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.http.paths import (
    PathError,
    QueryParams,
    RoutedPath,
    encode_segment,
    parse_query,
    split_request_target,
)


def routed(case: SynchronousTestCase, target: bytes) -> RoutedPath:
    result = split_request_target(target)
    case.assertIsInstance(result, RoutedPath, f"{target!r} refused: {result!r}")
    assert isinstance(result, RoutedPath)
    return result


def refused(case: SynchronousTestCase, target: bytes, status: int = 400) -> PathError:
    result = split_request_target(target)
    case.assertIsInstance(result, PathError, f"{target!r} accepted: {result!r}")
    assert isinstance(result, PathError)
    case.assertEqual(result.status, status)
    return result


class SplitTests(SynchronousTestCase):
    def test_connection_and_segments(self) -> None:
        """
        The first segment names the connection; the rest is the path
        forwarded, the query is forwarded as it came.
        """
        r = routed(self, b"/k8s/api/v1/namespaces/default/pods?limit=500&watch=1")
        self.assertEqual(r.connection, "k8s")
        self.assertEqual(r.segments, ("api", "v1", "namespaces", "default", "pods"))
        self.assertEqual(r.path, "/api/v1/namespaces/default/pods")
        self.assertEqual(r.query, "limit=500&watch=1")
        self.assertEqual(r.raw_query_params.items, (("limit", "500"), ("watch", "1")))
        self.assertEqual(r.target, "/api/v1/namespaces/default/pods?limit=500&watch=1")

    def test_connection_only(self) -> None:
        """C{/k8s} and C{/k8s/} both forward C{/}."""
        for target in (b"/k8s", b"/k8s/"):
            r = routed(self, target)
            self.assertEqual((r.connection, r.segments, r.path), ("k8s", (), "/"))

    def test_unreserved_decoded(self) -> None:
        """
        Percent-encoded unreserved characters are the characters themselves
        (RFC 3986 section 6.2.2.2): C{%65xec} is judged and forwarded as
        C{exec}, in either hex case.
        """
        r = routed(self, b"/k8s/api/v1/namespaces/default/pods/web/%65xec")
        self.assertEqual(r.segments[-1], "exec")
        self.assertEqual(r.path, "/api/v1/namespaces/default/pods/web/exec")
        self.assertEqual(routed(self, b"/k8s/%61%2d%7E").segments, ("a-~",))

    def test_connection_decoded(self) -> None:
        """The connection segment is decoded too, then checked as a connection name."""
        self.assertEqual(routed(self, b"/%6B8s/api").connection, "k8s")
        refused(self, b"/k%208s/api", 404)
        refused(self, b"/", 404)
        refused(self, b"/.hidden/x", 404)

    def test_encoded_slash_refused(self) -> None:
        """
        C{%2F} in any case is refused: Go decodes it into C{URL.Path}, where
        it splits the segment, so no encoding could forward it faithfully.
        """
        for target in (b"/k8s/api/v1/namespaces/default%2Fsecrets", b"/k8s/a%2fb", b"/k8s%2Fapi"):
            refused(self, target)

    def test_backslash_refused(self) -> None:
        """A raw or encoded backslash is refused (a separator to some servers)."""
        refused(self, b"/k8s/a\\b")
        refused(self, b"/k8s/a%5Cb")
        refused(self, b"/k8s/a%5cb")

    def test_dot_segments_refused(self) -> None:
        """
        C{.} and C{..}, raw or encoded, are refused, so
        C{.../pods/x/../../../secrets} is never judged as a request on pods.
        """
        for target in (
            b"/k8s/api/v1/namespaces/default/pods/x/../../../secrets",
            b"/k8s/api/v1/namespaces/default/pods/x/%2E%2E/%2e%2e/secrets",
            b"/k8s/api/v1/./pods",
            b"/k8s/api/v1/.%2E/pods",
            b"/k8s/..",
            b"/k8s/api/..",
            b"/k8s/api/../",
        ):
            refused(self, target)

    def test_dots_inside_segments(self) -> None:
        """Dots that are not whole segments are ordinary characters."""
        r = routed(self, b"/k8s/apis/apps/v1/a..b/...")
        self.assertEqual(r.segments[-2:], ("a..b", "..."))

    def test_empty_segments_refused(self) -> None:
        """C{//} anywhere, including a doubled trailing slash, is refused."""
        for target in (b"//k8s/api", b"/k8s//api", b"/k8s/api//v1", b"/k8s/api//"):
            refused(self, target)

    def test_trailing_slash(self) -> None:
        """
        A trailing slash is forwarded but is not a segment (the API server's
        C{splitPath} trims it).
        """
        r = routed(self, b"/k8s/api/v1/pods/")
        self.assertEqual(r.segments, ("api", "v1", "pods"))
        self.assertEqual(r.path, "/api/v1/pods/")
        self.assertTrue(r.trailing_slash)
        self.assertEqual(r.decoded_path, "/api/v1/pods/")
        self.assertFalse(routed(self, b"/k8s/api/v1/pods").trailing_slash)

    def test_nul_and_controls_refused(self) -> None:
        """C{%00} and other encoded or raw control characters are refused."""
        for target in (b"/k8s/a%00b", b"/k8s/a%0Ab", b"/k8s/a%0d", b"/k8s/a%7F", b"/k8s/a\x00",
                       b"/k8s/a\tb", b"/k8s/a b"):
            refused(self, target)

    def test_double_encoding_decoded_once(self) -> None:
        """
        C{%252F} is decoded once, to the text C{%2F} inside the segment,
        and forwarded as C{%252F}, never as a slash.
        """
        r = routed(self, b"/k8s/api/v1/namespaces/a%252Fb")
        self.assertEqual(r.segments[-1], "a%2Fb")
        self.assertEqual(r.path, "/api/v1/namespaces/a%252Fb")

    def test_unicode(self) -> None:
        """
        UTF-8 percent-encoding decodes to text and is forwarded with
        upper-case hex; raw non-ASCII bytes are not allowed in a target.
        """
        r = routed(self, b"/k8s/caf%c3%a9")
        self.assertEqual(r.segments, ("café",))
        self.assertEqual(r.path, "/caf%C3%A9")
        refused(self, "/k8s/café".encode())

    def test_invalid_utf8_refused(self) -> None:
        """Overlong forms, encoded surrogates and stray bytes are refused."""
        for target in (b"/k8s/%C0%AF", b"/k8s/%E0%80%AE", b"/k8s/%ED%A0%80", b"/k8s/%FF", b"/k8s/%C3"):
            refused(self, target)

    def test_bad_escapes_refused(self) -> None:
        """A C{%} without two hex digits is refused, as Go refuses it."""
        for target in (b"/k8s/a%", b"/k8s/a%2", b"/k8s/a%zz", b"/k8s/a%%41"):
            refused(self, target)

    def test_path_parameters_refused(self) -> None:
        """
        A raw C{;} (path parameters, stripped by some servers before
        routing) is refused; an encoded one is a character, forwarded
        encoded.
        """
        refused(self, b"/k8s/admin;x=1/pods")
        r = routed(self, b"/k8s/a%3Bb")
        self.assertEqual((r.segments, r.path), (("a;b",), "/a%3Bb"))

    def test_other_forms_refused(self) -> None:
        """Absolute-, authority- and asterisk-form targets are refused."""
        for target in (b"http://evil/k8s/api", b"https://gw:18443/k8s/api", b"gw:18443", b"*", b""):
            refused(self, target)

    def test_fragment_refused(self) -> None:
        """A C{#} is not part of a request-target."""
        refused(self, b"/k8s/api#x")
        refused(self, b"/k8s/api?a=1#x")

    def test_sub_delims_kept(self) -> None:
        """
        Characters allowed raw in a segment stay raw, so a well-formed
        target from kubectl is forwarded byte for byte.
        """
        target = b"/k8s/api/v1/namespaces/default/services/https:web:443/proxy/a@b!$&'()*+,="
        r = routed(self, target)
        self.assertEqual(r.path.encode(), target[len(b"/k8s"):])

    def test_very_long(self) -> None:
        """An over-long target is refused with 414; the limit is a parameter."""
        long = b"/k8s/" + b"a/" * 10000
        self.assertEqual(refused(self, long, 414).status, 414)
        r = split_request_target(long, max_length=1 << 20)
        self.assertIsInstance(r, RoutedPath)
        assert isinstance(r, RoutedPath)
        self.assertEqual(len(r.segments), 10000)


class QueryTests(SynchronousTestCase):
    def test_go_parse(self) -> None:
        """
        Pairs split on C{&}, empty ones skipped, at the first C{=}; C{+} is
        a space and escapes are decoded once; repeated names kept in order.
        """
        q = parse_query(b"command=sh&command=-c&command=echo+a%3Db%2B&&flag&x=a=b&%77atch=1")
        assert isinstance(q, QueryParams)
        self.assertEqual(q.get_all("command"), ("sh", "-c", "echo a=b+"))
        self.assertEqual(q.first("flag"), "")
        self.assertEqual(q.first("x"), "a=b")
        self.assertEqual(q.first("watch"), "1")
        self.assertIsNone(q.first("missing"))
        self.assertIn("flag", q)

    def test_forwarded_exactly(self) -> None:
        """The query is forwarded as sent, escapes and all."""
        r = routed(self, b"/k8s/api/v1/pods?labelSelector=app%3Dweb%2Ctier+in+(a,b)&limit=5")
        self.assertEqual(r.query, "labelSelector=app%3Dweb%2Ctier+in+(a,b)&limit=5")
        self.assertEqual(r.raw_query_params.first("labelSelector"), "app=web,tier in (a,b)")

    def test_refused(self) -> None:
        """
        A query Go would parse only in part (a C{;}, a bad escape), bytes
        not allowed in a query and values that are not UTF-8 are refused.
        """
        for target in (b"/k8s/p?watch=1;x=2", b"/k8s/p?a=%zz", b"/k8s/p?a=%", b"/k8s/p?a=b c",
                       b"/k8s/p?a=\xff", b"/k8s/p?a=%FF", b"/k8s/p?a=<b>"):
            refused(self, target)

    def test_controls_in_values(self) -> None:
        """Encoded newlines are data in a query value (a multi-line exec script)."""
        r = routed(self, b"/k8s/x?command=echo%0Aid")
        self.assertEqual(r.raw_query_params.get_all("command"), ("echo\nid",))


# -- properties ----------------------------------------------------------------

segment_text = st.text(
    st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12
).filter(lambda s: s not in (".", "..") and not any(c in s for c in "/\\") and
         not any(ord(c) < 0x20 or ord(c) == 0x7F for c in s))


class PropertyTests(SynchronousTestCase):
    @given(st.lists(segment_text, max_size=8), st.booleans())
    @settings(max_examples=300)
    def test_canonical_idempotent(self, segments: list[str], slash: bool) -> None:
        """
        Encoding segments and parsing them gives them back, and the
        canonical path, parsed again, is itself.
        """
        path = "/" + "/".join(encode_segment(s) for s in segments)
        if slash and segments:
            path += "/"
        first = routed(self, b"/k8s" + path.encode("ascii"))
        self.assertEqual(first.segments, tuple(segments))
        self.assertEqual(first.path, path)
        again = routed(self, b"/k8s" + first.path.encode("ascii"))
        self.assertEqual(again, first)

    @given(st.binary(max_size=64))
    @settings(max_examples=500)
    def test_arbitrary_bytes(self, data: bytes) -> None:
        """Any bytes give a RoutedPath or a PathError, never an exception."""
        result = split_request_target(b"/k8s/" + data)
        self.assertIsInstance(result, (RoutedPath, PathError))
        result = split_request_target(data)
        self.assertIsInstance(result, (RoutedPath, PathError))
        if isinstance(result, RoutedPath):
            again = split_request_target(b"/" + result.connection.encode() + result.target.encode())
            self.assertEqual(again, result)

    @given(st.lists(st.sampled_from(["a", "%2F", "%2e", "%2E%2E", "..", ".", "", "%00", "%5C",
                                     "%25", "%252F", "b%41", ";", "%3B"]), max_size=6))
    def test_forwarded_decodes_to_decided(self, parts: list[str]) -> None:
        """
        Whatever is accepted is forwarded as a path whose decoded segments
        (split on C{/} after decoding, as Go's C{URL.Path} is) are the
        segments that were decided on.
        """
        result = split_request_target(("/k8s/" + "/".join(parts)).encode())
        if isinstance(result, RoutedPath):
            from urllib.parse import unquote

            decoded = unquote(result.path, errors="strict")
            self.assertEqual(tuple(s for s in decoded.split("/") if s), result.segments)
            self.assertNotIn("..", result.segments)
            self.assertNotIn(".", result.segments)
