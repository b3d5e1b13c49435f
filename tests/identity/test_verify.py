"""
Token verification through L{IdentityService}: the positive cases for each
pinned algorithm, and every attack rejected with its reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.config import IdentitySettings, IssuerSettings
from hoopgw.errors import AuthenticationFailed
from hoopgw.identity import IdentityService
from hoopgw.interfaces import IIdentityVerifier
from hoopgw.model import Identity
from zope.interface.verify import verifyObject

from . import helpers as h


class VerifyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(h.NOW + 10)
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.service = self.make_service()

    def make_service(self, **issuer_overrides: object) -> IdentityService:
        issuer = IssuerSettings(
            issuer=h.ISSUER,
            audience=h.AUDIENCE,
            jwks_file=h.write_jwks(self.dir, h.all_keys_jwks()),
            **issuer_overrides,  # type: ignore[arg-type]
        )
        return IdentityService.from_settings(
            IdentitySettings(dev_issuer=False, issuers=(issuer,)),
            data_dir=self.dir,
            gateway_name="gw",
            reactor=self.clock,
        )

    def identity(self, token: str) -> Identity:
        return self.successResultOf(self.service.verify_token(token))

    def assertRefused(self, token: str, reason: str) -> None:
        failure = self.failureResultOf(self.service.verify_token(token), AuthenticationFailed)
        self.assertEqual(failure.value.reason, reason)
        if isinstance(token, str) and len(token) > 8:
            self.assertNotIn(token, str(failure.value))

    def test_interface(self) -> None:
        """IdentityService provides IIdentityVerifier."""
        self.assertTrue(verifyObject(IIdentityVerifier, self.service))

    def test_algorithms(self) -> None:
        """If a token is signed with RS256, ES256 or EdDSA by a key of the
        issuer, then it verifies to the identity its claims describe."""
        for alg in ("RS256", "ES256", "EdDSA"):
            token = h.sign(alg)
            identity = self.identity(token)
            self.assertEqual(
                identity,
                Identity(
                    issuer=h.ISSUER,
                    subject="alice",
                    groups=("dba", "dev"),
                    auth_method="jwt",
                    token_id="token-1",
                    credential_sha256=__import__("hashlib").sha256(token.encode()).hexdigest(),
                    expires=h.NOW + 300,
                ),
            )

    def test_groups_string_and_missing(self) -> None:
        """If the groups claim is a space-separated string, it is split; if
        it is absent, the identity has no groups; any other shape is refused."""
        self.assertEqual(self.identity(h.sign(groups="a b  c")).groups, ("a", "b", "c"))
        self.assertEqual(self.identity(h.sign(groups=None)).groups, ())
        self.assertRefused(h.sign(groups={"a": 1}), "malformed groups claim")
        self.assertRefused(h.sign(groups=["a", 1]), "malformed groups claim")

    def test_custom_claims(self) -> None:
        """If groups_claim and subject_claim are configured, they are read."""
        self.service = self.make_service(groups_claim="roles", subject_claim="email")
        identity = self.identity(h.sign(roles=["ops"], email="a@example.com"))
        self.assertEqual((identity.subject, identity.groups), ("a@example.com", ("ops",)))

    def test_audience_list(self) -> None:
        """If aud is a list containing the configured audience, it is accepted."""
        self.assertEqual(self.identity(h.sign(aud=["other", "hoopgw"])).subject, "alice")

    def test_typ(self) -> None:
        """If typ is JWT or application/at+jwt (any case) the token is
        accepted; any other typ (an ID token's, say) is refused."""
        for typ in ("JWT", "at+JWT", "application/at+jwt"):
            self.identity(h.sign(headers={"typ": typ}))
        self.assertRefused(h.sign(headers={"typ": "id_token+jwt"}), "wrong token type")
        self.assertRefused(h.sign(headers={"typ": "dpop+jwt"}), "wrong token type")

    def test_alg_none(self) -> None:
        """If alg is none in any spelling, with or without a signature, the
        token is refused before any key is used."""
        for spelling in ("none", "None", "NONE", "nOnE"):
            for signature in (b"", b"x" * 32):
                token = h.forge({"alg": spelling, "typ": "JWT", "kid": "rsa1"}, h.claims(), signature)
                self.assertRefused(token, "algorithm not allowed")

    def test_hs256_key_confusion(self) -> None:
        """If a token is HS256-signed with the issuer's public key, as PEM
        bytes or as JWK JSON, it is refused."""
        pem = h.public_pem(h.RSA_KEY)
        jwk = json.dumps(h.public_jwk(h.RSA_KEY, "rsa1")).encode()
        for secret in (pem, pem.strip(), jwk):
            self.assertRefused(h.forge_hs256(secret), "algorithm not allowed")

    def test_alg_not_pinned(self) -> None:
        """If the issuer pins RS256 only, an ES256 token is refused."""
        self.service = self.make_service(algorithms=("RS256",))
        self.assertRefused(h.sign("ES256"), "algorithm not allowed")
        self.identity(h.sign("RS256"))

    def test_alg_key_type_mismatch(self) -> None:
        """If the header alg is pinned but the kid names a key of another
        type, the token is refused."""
        token = h.sign("ES256", kid="rsa1")
        self.assertRefused(token, "algorithm does not match key")

    def test_forged_kid(self) -> None:
        """If the kid names no key of the issuer (including injection
        attempts), the token is refused."""
        for kid in ("nope", "../../../dev/null", "' OR 1=1 --", "rsa1\x00"):
            self.assertRefused(h.sign(kid=kid), "unknown key id")

    def test_key_from_other_issuer(self) -> None:
        """If a token claims the issuer but is signed by another key under a
        known kid, the signature fails."""
        self.assertRefused(h.sign("RS256", key=h.RSA_KEY_2), "bad signature")

    def test_forbidden_headers(self) -> None:
        """If the header carries jku, x5u, jwk, x5c or crit, the token is refused."""
        values = {
            "jku": "https://evil.example/jwks",
            "x5u": "https://evil.example/cert.pem",
            "jwk": h.public_jwk(h.RSA_KEY_2, "rsa1"),
            "x5c": ["MIIB"],
            "crit": ["exp"],
        }
        for name, value in values.items():
            # Signed by the attacker's key, which the header points to.
            token = h.sign("RS256", key=h.RSA_KEY_2, headers={name: value})
            self.assertRefused(token, f"forbidden header {name}")

    def test_verified_token_cached(self) -> None:
        """If the same token comes again, its signature is not checked again
        (its issuer's keys are not even looked up) but its claims are: it
        still expires on time, and after the cache's age it is verified in
        full."""
        token = h.sign(exp=h.NOW + 10 + 90)
        first = self.identity(token)
        self.assertEqual(len(self.service.verified), 1)
        calls = []

        class CountingKeys:
            def __init__(self, keys):
                self.keys = keys

            def key_for(self, *args):
                calls.append(args)
                return self.keys.key_for(*args)

        for verifier in self.service.issuers.values():
            verifier.keys = CountingKeys(verifier.keys)
        self.assertEqual(self.identity(token), first)
        self.assertEqual(calls, [])
        self.clock.advance(self.service.verified.seconds)
        self.assertEqual(self.identity(token), first)
        self.assertEqual(len(calls), 1)
        self.clock.advance(60)
        self.assertRefused(token, "token expired")

    def test_verified_token_cache_expiry_before_age(self) -> None:
        """If a cached token's exp passes before the cache entry's age, the
        token is refused at once and forgotten."""
        token = h.sign(exp=h.NOW + 10 + 5)
        self.identity(token)
        self.clock.advance(35)
        self.assertRefused(token, "token expired")
        self.assertEqual(len(self.service.verified), 0)

    def test_verified_token_cache_bounded(self) -> None:
        """The cache holds at most its size, dropping the oldest."""
        self.service.verified.size = 3
        tokens = [h.sign(jti=f"t{i}") for i in range(5)]
        for token in tokens:
            self.identity(token)
        self.assertEqual(len(self.service.verified), 3)
        self.assertIsNone(self.service.verified.get(tokens[0]))
        self.assertIsNotNone(self.service.verified.get(tokens[4]))

    def test_refused_token_not_cached(self) -> None:
        """A refused token leaves nothing in the cache."""
        self.assertRefused(h.sign(kid="nope"), "unknown key id")
        self.assertEqual(len(self.service.verified), 0)

    def test_expired(self) -> None:
        """If now is at or past exp plus leeway, the token is refused; just
        inside the leeway it is accepted."""
        self.identity(h.sign(exp=h.NOW + 10 - 29))
        self.assertRefused(h.sign(exp=h.NOW + 10 - 30), "token expired")
        self.assertRefused(h.sign(exp=h.NOW - 3600), "token expired")

    def test_not_yet_valid(self) -> None:
        """If nbf or iat lies beyond now plus leeway, the token is refused."""
        self.identity(h.sign(nbf=h.NOW + 10 + 30))
        self.assertRefused(h.sign(nbf=h.NOW + 10 + 31), "token not yet valid")
        self.assertRefused(h.sign(iat=h.NOW + 3600), "token issued in the future")

    def test_leeway_zero(self) -> None:
        """If leeway_seconds is 0, a token expires exactly at exp."""
        self.service = self.make_service(leeway_seconds=0)
        self.assertRefused(h.sign(exp=h.NOW + 10), "token expired")
        self.identity(h.sign(exp=h.NOW + 11))

    def test_required_claims(self) -> None:
        """If exp, aud or sub is missing, or exp is not a number, the token is refused."""
        self.assertRefused(h.sign(exp=None), "missing exp claim")
        self.assertRefused(h.sign(exp="tomorrow"), "malformed exp claim")
        self.assertRefused(h.sign(exp=True), "malformed exp claim")
        self.assertRefused(h.sign(aud=None), "missing aud claim")
        self.assertRefused(h.sign(sub=None), "missing sub claim")
        self.assertRefused(h.sign(sub=""), "missing sub claim")
        self.assertRefused(h.sign(iss=None), "missing iss claim")

    def test_wrong_audience(self) -> None:
        """If aud does not contain the configured audience, the token is refused."""
        self.assertRefused(h.sign(aud="kubernetes"), "wrong audience")
        self.assertRefused(h.sign(aud=["a", "b"]), "wrong audience")
        self.assertRefused(h.sign(aud="HOOPGW"), "wrong audience")

    def test_wrong_issuer(self) -> None:
        """If iss differs from the configured issuer, even by a trailing
        slash or case, the token is refused."""
        for iss in (h.ISSUER + "/", h.ISSUER.upper(), "https://evil.example.com"):
            self.assertRefused(h.sign(iss=iss), "unknown issuer")

    def test_malformed(self) -> None:
        """If the token is not three base64url parts of JSON objects, it is
        refused as malformed."""
        good = h.sign()
        header, payload, signature = good.split(".")
        dup_header = h.b64(b'{"alg":"none","alg":"RS256","kid":"rsa1"}')
        dup_payload = h.b64(b'{"sub":"alice","sub":"root"}')
        cases = [
            "",
            "abc",
            "a.b",
            good + ".x",
            f"{header}.{payload}",
            f"{header}!.{payload}.{signature}",
            f"{header}.{payload}=.{signature}",
            f"{h.b64(b'not json')}.{payload}.{signature}",
            f"{h.b64(b'[1, 2]')}.{payload}.{signature}",
            f"{header}.{h.b64(b'{')}.{signature}",
            f"{header}.{h.b64(bytes([0xff, 0xfe]))}.{signature}",
            f"{header}.{payload}.a",
            # Duplicate member names are ambiguous (parsers disagree on the winner).
            f"{dup_header}.{payload}.{signature}",
            f"{header}.{dup_payload}.{signature}",
        ]
        for token in cases:
            self.assertRefused(token, "malformed token")

    def test_too_large(self) -> None:
        """If the token is over 16 KiB, it is refused unparsed."""
        self.assertRefused(h.sign(pad="x" * 20000), "token too large")

    def test_tampered(self) -> None:
        """If the claims are changed after signing, the signature fails."""
        header, _, signature = h.sign().split(".")
        payload = h.b64(json.dumps(h.claims(sub="root")).encode())
        self.assertRefused(f"{header}.{payload}.{signature}", "bad signature")

    def test_non_string(self) -> None:
        """If verify_token is given something other than a str, it is refused."""
        self.assertRefused(b"abc", "malformed token")  # type: ignore[arg-type]


class ConfigurationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.jwks_file = h.write_jwks(self.dir, h.all_keys_jwks())

    def build(self, *issuers: IssuerSettings, **kwargs: object) -> IdentityService:
        return IdentityService.from_settings(
            IdentitySettings(dev_issuer=False, issuers=issuers),
            data_dir=self.dir,
            gateway_name="gw",
            reactor=Clock(),
            **kwargs,  # type: ignore[arg-type]
        )

    def test_symmetric_algorithms_refused(self) -> None:
        """If an issuer pins HS256 or none, construction fails naming the
        issuer and the algorithm."""
        for alg in ("HS256", "hs512", "none", "None"):
            with self.assertRaises(ValueError) as caught:
                self.build(IssuerSettings(issuer=h.ISSUER, audience="a", jwks_file=self.jwks_file, algorithms=("RS256", alg)))
            self.assertIn(repr(alg), str(caught.exception))
            self.assertIn("identity.issuers[0]", str(caught.exception))
            self.assertIn("asymmetric", str(caught.exception))

    def test_unknown_and_empty_algorithms(self) -> None:
        """If an issuer pins an unknown algorithm or none at all, construction fails."""
        for algorithms in (("RS257",), ()):
            with self.assertRaises(ValueError):
                self.build(IssuerSettings(issuer=h.ISSUER, audience="a", jwks_file=self.jwks_file, algorithms=algorithms))

    def test_duplicate_issuer(self) -> None:
        """If an issuer is configured twice, construction fails naming the second."""
        issuer = IssuerSettings(issuer=h.ISSUER, audience="a", jwks_file=self.jwks_file)
        with self.assertRaises(ValueError) as caught:
            self.build(issuer, issuer)
        self.assertIn("identity.issuers[1].issuer", str(caught.exception))

    def test_both_key_sources(self) -> None:
        """If both jwks_uri and jwks_file are set, construction fails."""
        with self.assertRaises(ValueError) as caught:
            self.build(IssuerSettings(issuer=h.ISSUER, audience="a", jwks_file=self.jwks_file, jwks_uri=h.ISSUER + "/jwks"))
        self.assertIn("jwks_uri and jwks_file", str(caught.exception))

    def test_bad_jwks_file(self) -> None:
        """If the JWKS file is missing, not JSON, or holds no usable key,
        construction fails naming the file."""
        missing = self.dir / "missing.json"
        notjson = self.dir / "bad.json"
        notjson.write_text("{")
        empty = self.dir / "empty.json"
        empty.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
        for path in (missing, notjson, empty):
            with self.assertRaises(ValueError) as caught:
                self.build(IssuerSettings(issuer=h.ISSUER, audience="a", jwks_file=path))
            self.assertIn(str(path), str(caught.exception))

    def test_http_issuer(self) -> None:
        """If the issuer (for discovery) or jwks_uri is http on a non-loopback
        host, construction fails unless allow_insecure_http is set; http on
        loopback is accepted."""
        for issuer in (
            IssuerSettings(issuer="http://idp.example.com", audience="a"),
            IssuerSettings(issuer=h.ISSUER, audience="a", jwks_uri="http://idp.example.com/jwks"),
            IssuerSettings(issuer="ftp://idp.example.com", audience="a"),
        ):
            with self.assertRaises(ValueError) as caught:
                self.build(issuer, http=object())
            self.assertIn("https", str(caught.exception))
        self.build(IssuerSettings(issuer="http://idp.example.com", audience="a"), http=object(), allow_insecure_http=True)
        self.build(IssuerSettings(issuer="http://127.0.0.1:9", audience="a"), http=object())
        self.build(IssuerSettings(issuer="http://[::1]:9", audience="a"), http=object())


class HTTPSClientTests(SynchronousTestCase):
    def test_ca_file(self) -> None:
        """If ca_file holds PEM certificates, a client trusting them is
        built; if it holds anything else, the error names the file."""
        import twisted.test

        from hoopgw.identity import https_client

        pem = Path(twisted.test.__file__).parent / "server.pem"
        self.assertTrue(hasattr(https_client(Clock(), pem), "get"))
        bad = Path(self.mktemp())
        bad.write_text("not a certificate")
        with self.assertRaises(ValueError) as caught:
            https_client(Clock(), bad)
        self.assertIn(str(bad), str(caught.exception))
