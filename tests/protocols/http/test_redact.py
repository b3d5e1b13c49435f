"""
Credentials in request-targets are redacted in what is recorded
(L{hoopgw.protocols.http.redact}), never in what is forwarded.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.http import actions, redact
from hoopgw.protocols.http.k8s import from_routed
from hoopgw.protocols.http.paths import split_request_target
from hoopgw.protocols.http.redact import (
    CODE_QUALIFIERS,
    CREDENTIAL_PREFIXES,
    CREDENTIAL_SUFFIXES,
    CREDENTIAL_WORDS,
    MARKER,
    is_credential_name,
    is_credential_value,
    redact_query,
    redact_target,
)
from hoopgw.protocols.http.wire import Head
from tests.adversarial.preauth_corpus import RedactionCorpusTests  # noqa: F401  (collected here)
from tests.integration import test_http_proxy as integration
from tests.integration._fake_k8s import FakeKubernetes

SECRET = "S3CRET"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


JWT = ".".join((
    _b64(b'{"alg":"RS256","typ":"JWT"}'),
    _b64(b'{"sub":"alice","n":"' + SECRET.encode() + b'"}'),
    _b64(b"signature-" + SECRET.encode()),
))
UNSIGNED_JWT = _b64(b'{ "alg": "none" }') + "." + _b64(SECRET.encode()) + "."

# Each must lose SECRET (and keep what is before the "?", "@" or ";").
LEAKS: list[str] = [
    # Bracket and dot sub-keys, encoded or not, at any depth.
    f"/web/x?token%5B%5D={SECRET}",
    f"/web/x?user%5Bpassword%5D={SECRET}",
    f"/web/x?token[]={SECRET}",
    f"/web/x?user[password]={SECRET}",
    f"/web/x?a[b][api_key]={SECRET}",
    f"/web/x?a[b][c][secret]={SECRET}",
    f"/web/x?user.password={SECRET}",
    f"/web/x?credentials.aws.secret={SECRET}",
    f"/web/x?user%255Bpassword%255D={SECRET}",
    f"/web/x?data[0][token]={SECRET}",
    # Names the old list missed, and variants of them.
    *(
        f"/web/x?{name}={SECRET}"
        for name in (
            "secret_key", "access_key", "private_key", "aws_secret_access_key", "subscription-key", "pw",
            "passphrase", "passcode", "otp", "assertion", "SAMLResponse", "ticket", "auth_key",
            "AWS_SECRET_ACCESS_KEY", "secretKey", "SecretAccessKey", "privatekey", "Ocp-Apim-Subscription-Key",
            "client_assertion", "SAMLRequest", "SAMLart", "saml_response", "serviceTicket", "db_pw", "userPw",
            "totp", "mfa_code", "pin", "passwordConfirm", "password2", "new-password", "api.key",
            "authcode", "auth_code", "authorization_code", "device_code", "code", "code_verifier",
            "oauth_verifier", "oauth_token", "jsessionid", "sessionId", "sid", "cookie", "hmac", "X-Amz-Credential",
            "x-ms-signature", "sharedAccessSignature", "tokens", "secrets", "creds", "webhook_secret",
        )
    ),  # fmt: skip
    # Names spelled to slip past a decoder that stops early.
    f"/web/x?%2573ig={SECRET}",
    f"/web/x?p%2561ss%2577ord={SECRET}",
    f"/web/x?pass+word={SECRET}",
    # A bare JWT, a bare token, a bare nested pair.
    f"/web/x?{JWT}",
    f"/web/x?a=1&{JWT}&b=2",
    f"/web/x?{UNSIGNED_JWT}",
    f"/web/x?{JWT.replace('.', '%2E')}",
    f"/web/x?{SECRET}a1b2c3d4e5f6a7b8",
    f"/web/x?ghp_{SECRET}abcdefghijklmnopqrstuvwxyz",
    f"/web/x?next%3D%2Fa%3Fpassword%3D{SECRET}",
    f"/web/x?Bearer%20{SECRET}",
    # A JWT (or a token) as a name.
    f"/web/x?{JWT}=1",
    # Secrets inside another parameter's value.
    f"/web/x?next=/a?password={SECRET}",
    f"/web/x?redirect=%2Fcb%3Faccess_token%3D{SECRET}",
    f"/web/x?redirect=%252Fcb%253Faccess_token%253D{SECRET}",
    f"/web/x?x=Bearer%20{SECRET}",
    f"/web/x?x=bearer+{SECRET}",
    f"/web/x?h=Authorization%3A%20Bearer%20{SECRET}",
    f"/web/x?x=Basic%20{base64.b64encode(f'alice:{SECRET}'.encode()).decode()}",
    f"/web/x?return_to=https%3A%2F%2Fapp%2Fcb%23access_token%3D{SECRET}%26state%3D1",
    f"/web/x?u=https://alice:{SECRET}@h/",
    f"/web/x?u=https%3A%2F%2Falice%3A{SECRET}%40h%2F",
    f"/web/x?u=https%3A%2F%2F{SECRET}%40h%2F",
    f"/web/x?filter=%7B%22password%22%3A%22{SECRET}%22%7D",
    f"/web/x?q=token:{SECRET}",
    f"/web/x?next=/a%3Bjsessionid%3D{SECRET}",
    f"/web/x?state=1&q={JWT}",
    f"/web/x?q=xoxb-{SECRET}-123456789",
    f"/web/x?k=sk_live_{SECRET}1234567890",
    f"/web/x?k=glpat-{SECRET}abcdefghijklmnop",
    f"/web/x?k=AIza{SECRET}abcdefghijklmnopqrstuvwxyz012345",
    f"/web/x?k=-----BEGIN%20RSA%20PRIVATE%20KEY-----{SECRET}",
    # A name holding the nested pair itself.
    f"/web/x?a%3Fpassword%3D{SECRET}=1",
    # Userinfo: absolute-form, authority-form, a token as the user, a '@' in the password.
    f"http://alice:{SECRET}@host/x",
    f"https://alice:{SECRET}@host:8443/x?limit=1",
    f"http://{SECRET}@host/x",
    f"http://alice:a@{SECRET}@host/x",
    f"http://alice:{SECRET}@host",
    f"alice:{SECRET}@host:443",
    f"//alice:{SECRET}@host/x",
    f"/web/proxy/http://alice:{SECRET}@host/x",
    # A raw JWT in a path segment, path parameters, the fragment.
    f"/web/verify/{JWT}",
    f"/web/x;jsessionid={SECRET}/y",
    f"/web/x;a={JWT}",
    f"/web/cb#access_token={SECRET}&state=1",
    f"/web/cb#/route?id_token={SECRET}",
    f"/web/x?a=1;user[password]={SECRET}",
]

# Must be recorded exactly as sent.
PLAIN: list[str] = [
    "/k8s/api/v1/pods?limit=500&watch=true&labelSelector=app%3Dweb&fieldSelector=metadata.name%3Dfoo"
    "&resourceVersion=123",
    "/k8s/api/v1/namespaces/default/pods?limit=500",
    "/k8s/api/v1/namespaces/default/pods?labelSelector=app.kubernetes.io%2Fname%3Dweb%2Ctier%21%3Ddb"
    "%2Cpod-template-hash%3D6d4cf56db6",
    "/k8s/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dnode-1%2Cstatus.phase%21%3DRunning",
    "/k8s/api/v1/pods?resourceVersion=0&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&watch=1"
    "&timeoutSeconds=540&sendInitialEvents=true",
    "/k8s/api/v1/namespaces?limit=500"
    "&continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MTIzNDUsInN0YXJ0IjoiZm9vXHUwMDAwIn0",
    "/k8s/apis/apps/v1/namespaces/a/deployments/d?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
    "/k8s/api/v1/namespaces/a/pods/p?gracePeriodSeconds=30&propagationPolicy=Background&dryRun=All",
    "/k8s/api/v1/namespaces/a/pods/p/log?container=c&follow=true&tailLines=10&sinceSeconds=60&timestamps=true"
    "&previous=false&limitBytes=100&insecureSkipTLSVerifyBackend=true",
    "/k8s/api/v1/namespaces/a/pods/p/exec?command=sh&command=-c&command=ls%20-l&container=c&stdin=true&stdout=true"
    "&stderr=true&tty=true",
    "/k8s/api/v1/namespaces/a/pods/p/portforward?ports=8080&ports=9090",
    "/k8s/api/v1/namespaces/a/pods?timeout=32s&pretty=true&orphanDependents=false",
    "/k8s/openapi/v3/apis/apps/v1?hash=8d9fb8d2c4a0a0a1b2c3d4e5f6a7b8c9d0e1f2a3",
    "/web/items?page=2&per_page=50&sort=created_at&order=desc&q=hello+world",
    "/web/items?status_code=200&country_code=FR&zip=75001&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    "&code_challenge_method=S256&state=af0ifjsldkj&nonce=n-0S6_WzA2Mj&client_id=s6BhdRkqt3&response_type=code"
    "&redirect_uri=https%3A%2F%2Fclient.example.org%2Fcb&scope=openid%20profile",
    "/web/items?id=550e8400-e29b-41d4-a716-446655440000&commit=0123456789abcdef0123456789abcdef01234567",
    "/web/items?monkey=banana&keyword=x&keys=a,b&signed=1&container=c&command=ls&author=bob&hockey=1",
    "/web/items?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20240101T000000Z&X-Amz-Expires=900"
    "&X-Amz-SignedHeaders=host",
    "/web/items?email=alice%40example.com&next=%2Fhome&url=https%3A%2F%2Fexample.com%2F%40alice",
    "/web/items?time=10:30:00&range=bytes%3D0-99&v=1.2.3",
    "/web/items?wsdl",
    "/web/items?token",
    "/web/items?token=",
    "/web/items?q=basic+setup",
    "/web/api/v1/users/@me/settings",
    "/web/file.json",
    "/web/a/b.c/d.e.f",
]


class RedactTests(SynchronousTestCase):
    def test_leaks(self) -> None:
        """Every leak class the review found, and variants: the secret is gone, what precedes it stays."""
        for target in LEAKS:
            redacted = redact_target(target)
            self.assertNotIn(SECRET, redacted, target)
            self.assertNotIn(SECRET.lower(), redacted.lower(), target)
            self.assertIn(MARKER, redacted, target)
            # Idempotent: a recorded target recorded again is unchanged.
            self.assertEqual(redact_target(redacted), redacted, target)

    def test_plain_targets_are_the_same_object(self) -> None:
        """kubectl's usual parameters, OAuth's public ones, IDs and hashes stay readable."""
        for target in PLAIN:
            self.assertIs(redact_target(target), target, target)

    def test_exact_forms(self) -> None:
        """The name (and the user name) stays: the trail says what was sent, and where."""
        for target, expected in (
            (f"/web/x?token%5B%5D={SECRET}&limit=5", f"/web/x?token%5B%5D={MARKER}&limit=5"),
            (f"/web/x?user[password]={SECRET}", f"/web/x?user[password]={MARKER}"),
            (f"/web/x?a=1&{JWT}&b=2", f"/web/x?a=1&{MARKER}&b=2"),
            (f"/web/x?next=/a?password={SECRET}&limit=5", f"/web/x?next={MARKER}&limit=5"),
            (f"/web/x?x=Bearer%20{SECRET}", f"/web/x?x={MARKER}"),
            (f"http://alice:{SECRET}@host/x?limit=1", f"http://alice:{MARKER}@host/x?limit=1"),
            (f"http://{SECRET}@host/x", f"http://{MARKER}@host/x"),
            (f"alice:{SECRET}@host:443", f"alice:{MARKER}@host:443"),
            (f"/web/verify/{JWT}/x", f"/web/verify/{MARKER}/x"),
            (f"/web/x;jsessionid={SECRET}/y", f"/web/x;jsessionid={MARKER}/y"),
            (f"/web/x?token={SECRET}&watch=1&TOKEN={SECRET}", f"/web/x?token={MARKER}&watch=1&TOKEN={MARKER}"),
        ):
            self.assertEqual(redact_target(target), expected, target)

    def test_names(self) -> None:
        """Decoded repeatedly, sub-keys and camel-case words read, whole words, compounds by their ends."""
        for name in ("token", "TOKEN", "Access-Token", "access%5Ftoken", "%73ig", "%2573ig", "x-amz-signature",
                     "csrf_token", " password ", "tokens", "user[password]", "a.b.secret", "SAMLResponse",
                     "mySecretKey", "mysecretkey", "code", "Code", "authCode", "dbpass", "userPass", "ROOTPASS"):  # fmt: skip
            self.assertTrue(is_credential_name(name), name)
        for name in ("limit", "watch", "signed", "keys", "container", "command", "monkey", "keyword", "author",
                     "status_code", "country_code", "code_challenge", "state", "nonce", "continue",
                     "insecureSkipTLSVerifyBackend", "timeoutSeconds", "labelSelector", "passing",
                     "bypass", "cacheBypass", "compass", "bypass_cache"):  # fmt: skip
            self.assertFalse(is_credential_name(name), name)

    def test_values(self) -> None:
        """Values are judged whatever their name; the entropy rule is for bare pairs only."""
        for value in (JWT, UNSIGNED_JWT, f"Bearer {SECRET}", f"/a?password={SECRET}", f"https://a:{SECRET}@h/"):
            self.assertTrue(is_credential_value(value), value)
        long_id = "a1b2c3d4e5f6a7b8c9d0"
        self.assertFalse(is_credential_value(long_id))
        self.assertTrue(is_credential_value(long_id, bare=True))
        # Base64 of JSON (a Kubernetes continue token) is no JWT; neither is a dotted name.
        continue_token = _b64(json.dumps({"v": "meta.k8s.io/v1", "rv": 1, "start": "a"}).encode())
        for value in (continue_token, "eyes.example.com", "keyword.a.b", "basic setup", "app=web"):
            self.assertFalse(is_credential_value(value), value)

    def test_prefilter_is_sound(self) -> None:
        """
        A query is only parsed if it holds a hint: every word, suffix,
        prefix and value form the rules know must hold one (a qualifier
        counts before "code" only).
        """
        qualified = (f"{q}_code" for q in CODE_QUALIFIERS)
        for text in (*CREDENTIAL_WORDS, *CREDENTIAL_SUFFIXES, *CREDENTIAL_PREFIXES, *qualified, "code", JWT,
                     "bearer x", "basic x", "//a@", "ghp_", "gho_", "github_pat_", "glpat-", "xoxb-", "sk_live_",
                     "rk_test_", "sk-", "aiza", "ya29.", "private key-----"):  # fmt: skip
            self.assertIsNotNone(redact._HINT.search(text.lower()), text)

    def test_linear_time(self) -> None:
        """Targets built to make a regular expression backtrack (up to 8 KiB) cost milliseconds."""
        n = 8000
        for target in ("/web/x?q=" + "ey" * (n // 2) + ".", "/web/" + "ey" * (n // 2), "/web/x?q=" + "_ey" * (n // 3),
                       "/web/x?q=" + "xoxb-" * (n // 5), "/web/x?q=" + "a" * n + "=", "/web/x?q=" + "//a" * (n // 3),
                       "/web/x?" + "a=&" * (n // 3), "//" + "a" * n, "/web/x?" + "aB" * (n // 2) + "=1",
                       "/web/x?q=" + "bearer " * (n // 7), "/web/x?q=" + "%25" * (n // 3), "a:" * (n // 2) + "@",
                       "/web/x?" + "token=a&" * (n // 8), "/web/x?q=" + "{\"a\":" * (n // 5)):  # fmt: skip
            started = time.thread_time()  # CPU time: immune to a loaded machine
            redact_target(target)
            self.assertLess(time.thread_time() - started, 0.1, target[:40])

    @settings(max_examples=400, deadline=None)
    @given(
        st.sampled_from(sorted(CREDENTIAL_WORDS)),
        st.sampled_from(["{}", "{}[]", "user[{}]", "a.{}", "x-{}", "my_{}", "{}_2", "a[b][{}]"]),
        st.booleans(),
        st.booleans(),
        st.text("abcdefXYZ0123456789_-~", min_size=4, max_size=30),
    )
    def test_any_credential_word_anywhere(self, word, shape, upper, encode, value) -> None:
        """A credential word in any shape of name, upper-cased or percent-encoded: the value is gone."""
        name = shape.format(word.upper() if upper else word)
        if encode:
            name = "".join(f"%{ord(c):02X}" for c in name)
        secret = "Zq9" + value
        redacted = redact_target(f"/web/x?limit=1&{name}={secret}&watch=1")
        self.assertNotIn(secret, redacted)
        self.assertTrue(redacted.startswith("/web/x?limit=1&") and redacted.endswith("&watch=1"), redacted)

    @settings(max_examples=1000, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.sampled_from(["=", "&", ";", "%", "+", "[", "]", ".", "@", "//", ":", "%3D", "%26", "%25", "%5B",
                                 "ey", "eyJ", "J9", "Bearer ", "Basic ", "YTpi", "code", "device_", "_"]),
                st.sampled_from(sorted(CREDENTIAL_WORDS) + ["limit", "watch", "app", "a1b2c3d4e5f6a7b8c9"]),
                st.text("aZ09-_.~", max_size=6),
            ),
            max_size=25,
        )
    )
    def test_prefilter_changes_nothing(self, pieces) -> None:
        """The prefilters (of the query, of each pair) never skip what the full rules would redact."""
        query = "".join(pieces)
        filtered = redact_query(query)
        self.patch(redact, "_hinted", lambda text: True)
        self.assertEqual(filtered, redact_query(query), query)

    @settings(max_examples=500, deadline=None)
    @given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200))
    def test_never_raises_and_is_idempotent(self, target) -> None:
        redacted = redact_target(target)
        self.assertEqual(redact_target(redacted), redacted)

    def test_query_alone(self) -> None:
        self.assertEqual(redact_query(f"token={SECRET}&watch=1"), f"token={MARKER}&watch=1")
        query = "limit=500&watch=1"
        self.assertIs(redact_query(query), query)
        self.assertEqual(redact_query(""), "")
        self.assertIs(redact_target("/k8s/api"), "/k8s/api")

    def test_action_input_redacted_forwarded_target_untouched(self) -> None:
        """The action (and its cached copy) holds the redacted query; the routed target sent upstream does not."""
        raw = b"/web/api/items?access_token=S3CRET&limit=5&token%5B%5D=S3CRET&" + JWT.encode()
        routed = split_request_target(raw)
        info = from_routed("GET", routed)
        action = actions.request_action(info, (b"authorization",))
        self.assertEqual(action.input, f"GET /api/items?access_token={MARKER}&limit=5&token%5B%5D={MARKER}&{MARKER}")
        self.assertNotIn("S3CRET", repr(action))
        self.assertIs(actions.request_action(info, (b"authorization",)), action)
        self.assertEqual(routed.target, raw.decode().removeprefix("/web"))

    def test_kubernetes_input_keeps_kubectl_parameters(self) -> None:
        raw = b"/k8s/api/v1/namespaces/default/pods?limit=500&labelSelector=app%3Dweb&access_token=S3CRET"
        action = actions.request_action(from_routed("GET", split_request_target(raw)), ())
        self.assertEqual(
            action.input,
            f"GET /api/v1/namespaces/default/pods?limit=500&labelSelector=app%3Dweb&access_token={MARKER}",
        )

    def test_long_targets_are_redacted_too(self) -> None:
        """Targets over the caches' bound take the uncached path: redacted all the same."""
        raw = b"/web/api?pad=" + b"x" * 2000 + b"&token=S3CRET"
        info = from_routed("GET", split_request_target(raw))
        self.assertNotIn("S3CRET", actions.request_action(info, ()).input)

    def test_head_repr(self) -> None:
        for target in (b"/web/api?token=S3CRET", b"http://alice:S3CRET@h/", b"/web/x?" + JWT.encode()):
            head = Head(b"GET", target, b"HTTP/1.1", 0, b"", [], None, False, True, False)
            self.assertNotIn("S3CRET", repr(head))


class GatewayRedactionTests(integration._GatewayCase):
    """curl through the real gateway: the upstream gets every secret, the audit files and logs none."""

    def setUp(self) -> None:
        integration.require_curl()
        fake = FakeKubernetes().listen()
        self.addCleanup(fake.stop)
        self.start(fake)
        self.logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            # The test upstream's access log (twisted.web's, through the
            # legacy log file) shows what it received: everything.
            if not (event.get("log_namespace") == "twisted.python.log" and '"curl/' in str(event.get("log_io"))):
                self.logged.append(formatEvent(event) + repr(event.get("log_failure", "")))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    @inlineCallbacks
    def test_secrets_in_targets_never_reach_the_trail(self):
        secrets = [f"Sekr{i:02d}x" for i in range(16)]
        jwt = JWT.replace(_b64(b"signature-" + SECRET.encode()), _b64(secrets[6].encode()))
        basic = base64.b64encode(f"alice:{secrets[8]}".encode()).decode()
        query = (
            f"limit=5&token%5B%5D={secrets[0]}&user%5Bpassword%5D={secrets[1]}&aws_secret_access_key={secrets[2]}"
            f"&subscription-key={secrets[3]}&pw={secrets[4]}&SAMLResponse={secrets[5]}&{jwt}"
            f"&next=/a?password={secrets[7]}&x=Basic%20{basic}&redirect=%2Fcb%3Faccess_token%3D{secrets[9]}"
            f"&x=Bearer%20{secrets[10]}&watch=true"
        )
        status, _, body = yield self.curl(f"/web/items?{query}")
        self.assertEqual(status, 200, body)
        # Forwarded untouched.
        self.assertEqual([s.uri for s in self.upstream.seen], [f"/base/items?{query}"])
        status, _, body = yield self.curl(
            "/k8s/api/v1/namespaces/default/pods?limit=500&labelSelector=app%3Dweb"
            f"&fieldSelector=metadata.name%3Dfoo&resourceVersion=123&ticket={secrets[11]}"
        )
        self.assertEqual(status, 200, body)
        # Refused, and recorded in request.refused: a raw '[', absolute-form
        # and authority-form targets with userinfo.
        status, _, _ = yield self.curl(f"/web/x?token[]={secrets[12]}", "-g")
        self.assertEqual(status, 400)
        status, _, _ = yield self.curl("/web/x", "--request-target", f"http://alice:{secrets[13]}@host/x")
        self.assertEqual(status, 400)
        status, _, _ = yield self.curl("/web/x", "-X", "CONNECT", "--request-target", f"alice:{secrets[14]}@host:443")
        self.assertIn(status, (400, 405))
        status, _, _ = yield self.curl("/web/x", "--request-target", f"/web/x?{secrets[15]}a1b2c3d4e5f6;a=1")
        self.assertEqual(status, 400)

        yield deferLater(reactor, 0.2, lambda: None)
        trail = "".join(
            p.read_text(errors="replace") for p in sorted((self.base / "data").rglob("*")) if p.is_file()
        )
        logs = "\n".join(self.logged)
        for secret in secrets:
            self.assertNotIn(secret, trail, secret)
            self.assertNotIn(secret, logs, secret)

        web, k8s = (start["action"]["input"] for start in self.records("action.start"))
        self.assertEqual(
            web,
            f"GET /items?limit=5&token%5B%5D={MARKER}&user%5Bpassword%5D={MARKER}&aws_secret_access_key={MARKER}"
            f"&subscription-key={MARKER}&pw={MARKER}&SAMLResponse={MARKER}&{MARKER}&next={MARKER}&x={MARKER}"
            f"&redirect={MARKER}&x={MARKER}&watch=true",
        )
        self.assertEqual(
            k8s,
            "GET /api/v1/namespaces/default/pods?limit=500&labelSelector=app%3Dweb"
            f"&fieldSelector=metadata.name%3Dfoo&resourceVersion=123&ticket={MARKER}",
        )
        self.assertEqual(
            [r["request"]["target"] for r in self.records("request.refused")],
            [
                f"/web/x?token[]={MARKER}",
                f"http://alice:{MARKER}@host/x",
                f"alice:{MARKER}@host:443",
                f"/web/x?{MARKER};a=1",
            ],
        )
