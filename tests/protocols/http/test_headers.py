"""
Tests for L{hoopgw.protocols.http.headers}.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.model import Identity
from hoopgw.protocols.http.headers import (
    HeaderError,
    SanitizedHeaders,
    impersonation_headers,
    sanitize_request_headers,
)


def sanitized(case: SynchronousTestCase, headers: list[tuple[bytes, bytes]], **kw: bool) -> SanitizedHeaders:
    result = sanitize_request_headers(headers, **kw)
    case.assertIsInstance(result, SanitizedHeaders, repr(result))
    assert isinstance(result, SanitizedHeaders)
    return result


class SanitizeTests(SynchronousTestCase):
    def test_credentials_and_identity_removed(self) -> None:
        """
        The client's credentials and any header that claims an identity
        (impersonation, front-proxy) are removed whatever their case;
        the rest is kept in order, duplicates included.
        """
        headers = [
            (b"Accept", b"application/json"),
            (b"AUTHORIZATION", b"Bearer client-token"),
            (b"proxy-authorization", b"Basic eA=="),
            (b"Impersonate-User", b"system:admin"),
            (b"impersonate-group", b"system:masters"),
            (b"Impersonate-Group", b"other"),
            (b"Impersonate-Uid", b"1"),
            (b"Impersonate-Extra-Scopes", b"x"),
            (b"X-Remote-User", b"admin"),
            (b"X-Remote-Group", b"system:masters"),
            (b"X-Remote-Extra-Foo", b"bar"),
            (b"Accept", b"*/*"),
            (b"User-Agent", b"kubectl/v1.31"),
        ]
        r = sanitized(self, headers)
        self.assertEqual(r.headers, ((b"Accept", b"application/json"), (b"Accept", b"*/*"),
                                     (b"User-Agent", b"kubectl/v1.31")))
        self.assertEqual(r.removed, (b"authorization", b"proxy-authorization", b"impersonate-user",
                                     b"impersonate-group", b"impersonate-uid", b"impersonate-extra-scopes",
                                     b"x-remote-user", b"x-remote-group", b"x-remote-extra-foo"))

    def test_method_overrides_removed(self) -> None:
        """
        Method-override headers, which frameworks behind an upstream honour
        in place of the method decided, are removed whatever their case and
        recorded by name.
        """
        headers = [
            (b"X-HTTP-Method-Override", b"DELETE"),
            (b"x-http-method", b"DELETE"),
            (b"X-Method-Override", b"PUT"),
            (b"Accept", b"*/*"),
        ]
        r = sanitized(self, headers)
        self.assertEqual(r.headers, ((b"Accept", b"*/*"),))
        self.assertEqual(r.removed, (b"x-http-method-override", b"x-http-method", b"x-method-override"))

    def test_cookies_removed_unless_passed(self) -> None:
        """Cookie is removed (and recorded) by default, kept with pass_cookies."""
        headers = [(b"Cookie", b"session=someone-elses"), (b"Accept", b"*/*")]
        r = sanitized(self, headers)
        self.assertEqual((r.headers, r.removed), (((b"Accept", b"*/*"),), (b"cookie",)))
        r = sanitized(self, headers, pass_cookies=True)
        self.assertEqual((r.headers, r.removed), (tuple(headers), ()))

    def test_forwarding_claims_removed(self) -> None:
        """Forwarded, X-Forwarded-* and X-Real-Ip are the gateway's to state, not the client's."""
        r = sanitized(self, [(b"Forwarded", b"for=1.2.3.4"), (b"X-Forwarded-For", b"1.2.3.4"),
                             (b"x-forwarded-proto", b"https"), (b"X-Real-IP", b"1.2.3.4"), (b"Host", b"gw")])
        self.assertEqual(r.headers, ((b"Host", b"gw"),))
        self.assertEqual(r.removed, (b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-real-ip"))

    def test_hop_by_hop_removed(self) -> None:
        """Hop-by-hop headers, and every header Connection names, end at the gateway."""
        r = sanitized(self, [
            (b"Connection", b"keep-alive, X-Secret ,, Upgrade"),
            (b"Keep-Alive", b"timeout=5"),
            (b"TE", b"trailers"),
            (b"Trailer", b"Expires"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Upgrade", b"websocket"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"x-secret", b"1"),
            (b"Content-Type", b"application/json"),
        ])
        self.assertEqual(r.headers, ((b"Content-Type", b"application/json"),))
        self.assertEqual(set(r.removed), {b"connection", b"keep-alive", b"te", b"trailer",
                                          b"transfer-encoding", b"upgrade", b"proxy-connection", b"x-secret"})

    def test_several_connection_headers(self) -> None:
        """Options of every Connection header count."""
        r = sanitized(self, [(b"Connection", b"a"), (b"connection", b"B"), (b"A", b"1"), (b"b", b"2"), (b"c", b"3")])
        self.assertEqual(r.headers, ((b"c", b"3"),))

    def test_upgrade_allowed(self) -> None:
        """With an allowed upgrade, Upgrade stays even though Connection names it; Connection goes."""
        headers = [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"),
                   (b"Sec-WebSocket-Protocol", b"v5.channel.k8s.io")]
        r = sanitized(self, headers, allow_upgrade=True)
        self.assertEqual(r.headers, ((b"Upgrade", b"websocket"), (b"Sec-WebSocket-Protocol", b"v5.channel.k8s.io")))
        self.assertEqual(r.removed, (b"connection",))

    def test_values_trimmed(self) -> None:
        """Surrounding whitespace is not part of a value (RFC 9112 section 5.1)."""
        self.assertEqual(sanitized(self, [(b"Accept", b" \tx \t")]).headers, ((b"Accept", b"x"),))

    def test_bad_values_refused(self) -> None:
        """A value with CR, LF, NUL or another control character refuses the request."""
        for value in (b"a\r\nImpersonate-User: admin", b"a\nb", b"a\rb", b"a\x00b", b"a\x01b", b"a\x7fb"):
            self.assertIsInstance(sanitize_request_headers([(b"X-A", value)]), HeaderError, value)

    def test_bad_names_refused(self) -> None:
        """Names that are not tokens, including an obs-fold continuation, refuse the request."""
        for name in (b"", b" Folded", b"\tx", b"A B", b"A:B", b"Imper\x00sonate-User", b"X\r\nY", b"caf\xc3\xa9"):
            self.assertIsInstance(sanitize_request_headers([(name, b"v")]), HeaderError, name)

    def test_bad_connection_option_refused(self) -> None:
        """A Connection option that is not a token refuses the request."""
        self.assertIsInstance(sanitize_request_headers([(b"Connection", b"a b")]), HeaderError)

    def test_obs_text_kept(self) -> None:
        """Bytes 0x80-0xFF (obs-text) and tabs inside a value are allowed."""
        r = sanitized(self, [(b"X-Name", b"caf\xc3\xa9\tok")])
        self.assertEqual(r.headers, ((b"X-Name", b"caf\xc3\xa9\tok"),))

    @given(st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=12)), max_size=6), st.booleans())
    def test_arbitrary(self, headers: list[tuple[bytes, bytes]], upgrade: bool) -> None:
        """
        Any headers give a result or a HeaderError; what is kept never
        includes a removed name, a credential or a control character.
        """
        result = sanitize_request_headers(headers, allow_upgrade=upgrade)
        self.assertIsInstance(result, (SanitizedHeaders, HeaderError))
        if isinstance(result, SanitizedHeaders):
            for name, value in result.headers:
                lower = name.lower()
                self.assertNotIn(lower, result.removed)
                self.assertFalse(lower.startswith(b"impersonate-"))
                self.assertNotIn(lower, (b"authorization", b"connection", b"transfer-encoding"))
                self.assertFalse(set(value) & (set(range(0x20)) - {9}))


class ImpersonationTests(SynchronousTestCase):
    def test_user_and_groups(self) -> None:
        """One Impersonate-User, then one Impersonate-Group per group, in order."""
        identity = Identity("https://idp", "alice@example.com", ("dev", "dba"))
        self.assertEqual(impersonation_headers(identity), [
            (b"Impersonate-User", b"alice@example.com"),
            (b"Impersonate-Group", b"dev"),
            (b"Impersonate-Group", b"dba"),
        ])

    def test_prefixes(self) -> None:
        """Prefixes keep gateway identities apart from the cluster's own."""
        identity = Identity("https://idp", "alice", ("system:masters",))
        self.assertEqual(impersonation_headers(identity, user_prefix="hoopgw:", group_prefix="hoopgw:"), [
            (b"Impersonate-User", b"hoopgw:alice"),
            (b"Impersonate-Group", b"hoopgw:system:masters"),
        ])

    def test_no_groups(self) -> None:
        """An identity without groups sends only Impersonate-User; non-ASCII is UTF-8."""
        self.assertEqual(impersonation_headers(Identity("i", "zoë")), [(b"Impersonate-User", "zoë".encode())])

    def test_unsendable_refused(self) -> None:
        """
        A subject or group that would split a header or be trimmed on the
        way (naming someone else upstream) raises rather than being sent.
        """
        for identity in (
            Identity("i", "alice\r\nImpersonate-Group: system:masters"),
            Identity("i", ""),
            Identity("i", " alice"),
            Identity("i", "alice", ("dev\x00",)),
            Identity("i", "alice", ("",)),
        ):
            self.assertRaises(ValueError, impersonation_headers, identity)
