"""
The dev issuer: its key file, the tokens it issues, and the verifier's
treatment of them when the dev issuer is on or off.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import jwt
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.config import IdentitySettings
from hoopgw.errors import AuthenticationFailed
from hoopgw.identity import DevIssuer, IdentityService


class DevIssuerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.clock = Clock()
        self.clock.advance(1_800_000_000)

    def test_key_created_once(self) -> None:
        """If no key exists, one is created with mode 0600 and reused by the
        next load, so earlier tokens keep verifying."""
        first = DevIssuer.load_or_create(self.dir, "gw")
        path = self.dir / "keys" / "dev_issuer_ed25519.pem"
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        second = DevIssuer.load_or_create(self.dir, "gw")
        self.assertEqual(first.public_jwk, second.public_jwk)
        self.assertEqual(first.issuer, "hoopgw-dev:gw")

    def test_key_readable_by_others(self) -> None:
        """If the key file is readable by group or others, loading fails
        naming the file and the fix."""
        DevIssuer.load_or_create(self.dir, "gw")
        path = self.dir / "keys" / "dev_issuer_ed25519.pem"
        os.chmod(path, 0o644)
        with self.assertRaises(ValueError) as caught:
            DevIssuer.load_or_create(self.dir, "gw")
        self.assertIn("chmod 600", str(caught.exception))

    def test_token_shape(self) -> None:
        """If a token is issued, it is EdDSA, typ at+jwt, with iss, sub,
        aud hoopgw, groups, a random jti and iat/nbf/exp from the clock."""
        issuer = DevIssuer.load_or_create(self.dir, "gw", clock=self.clock)
        token = issuer.issue("alice", ["dba"], 600)
        header = jwt.get_unverified_header(token)
        self.assertEqual((header["alg"], header["typ"], header["kid"]), ("EdDSA", "at+jwt", issuer.public_jwk["kid"]))
        claims = jwt.decode(token, options={"verify_signature": False})
        self.assertEqual(
            {k: claims[k] for k in ("iss", "sub", "aud", "groups", "iat", "nbf", "exp")},
            {"iss": "hoopgw-dev:gw", "sub": "alice", "aud": "hoopgw", "groups": ["dba"],
             "iat": 1_800_000_000, "nbf": 1_800_000_000, "exp": 1_800_000_600},
        )
        self.assertNotEqual(claims["jti"], jwt.decode(issuer.issue("alice"), options={"verify_signature": False})["jti"])

    def test_ttl_capped(self) -> None:
        """If the ttl exceeds the maximum, it is refused naming the cap (never
        silently shortened); at the cap it is issued; a non-positive ttl or
        an empty subject is refused."""
        issuer = DevIssuer.load_or_create(self.dir, "gw", max_ttl_seconds=5400, clock=self.clock)
        with self.assertRaises(ValueError) as caught:
            issuer.issue("alice", ttl_seconds=5401)
        self.assertEqual(
            str(caught.exception),
            "dev token: ttl: 1h30m1s is over the dev issuer's cap of 1h30m ([identity] dev_token_max_ttl)",
        )
        claims = jwt.decode(issuer.issue("alice", ttl_seconds=5400), options={"verify_signature": False})
        self.assertEqual(claims["exp"] - claims["iat"], 5400)
        for kwargs in ({"subject": "a", "ttl_seconds": 0}, {"subject": ""}, {"subject": "a", "groups": ["a b"]}):
            with self.assertRaises(ValueError):
                issuer.issue(**kwargs)  # type: ignore[arg-type]

    def test_verified_when_on(self) -> None:
        """If the dev issuer is on, its tokens verify to an identity until
        they expire."""
        service = IdentityService.from_settings(IdentitySettings(), data_dir=self.dir, gateway_name="gw", reactor=self.clock)
        assert service.dev_issuer is not None
        token = service.dev_issuer.issue("alice", ["dba"], 60)
        identity = self.successResultOf(service.verify_token(token))
        self.assertEqual((identity.issuer, identity.subject, identity.groups, identity.auth_method),
                         ("hoopgw-dev:gw", "alice", ("dba",), "jwt"))
        self.clock.advance(60)
        failure = self.failureResultOf(service.verify_token(token), AuthenticationFailed)
        self.assertEqual(failure.value.reason, "token expired")

    def test_no_leeway_for_its_own_tokens(self) -> None:
        """
        The leeway for other issuers' clocks does not apply to the dev
        issuer's tokens, which this gateway's clock dated: expired at exp
        exactly (first use and cached), not valid a second before nbf/iat.
        """
        service = IdentityService.from_settings(IdentitySettings(), data_dir=self.dir, gateway_name="gw", reactor=self.clock)
        assert service.dev_issuer is not None
        self.assertEqual(service.dev_issuer.settings().leeway_seconds, 0)
        token = service.dev_issuer.issue("alice", (), 60)
        self.successResultOf(service.verify_token(token))
        self.clock.advance(59)
        self.successResultOf(service.verify_token(token))
        self.clock.advance(1)
        self.assertEqual(self.failureResultOf(service.verify_token(token), AuthenticationFailed).value.reason, "token expired")
        self.clock.advance(1)
        self.assertEqual(self.failureResultOf(service.verify_token(token), AuthenticationFailed).value.reason, "token expired")

        early = DevIssuer(
            issuer=service.dev_issuer.issuer,
            private_key=service.dev_issuer.private_key,
            clock=type("Later", (), {"seconds": lambda _: self.clock.seconds() + 1})(),
        ).issue("alice", (), 60)
        self.assertEqual(self.failureResultOf(service.verify_token(early), AuthenticationFailed).value.reason,
                         "token not yet valid")

    def test_other_key_hinted(self) -> None:
        """
        If a dev token names this gateway but was signed by another key (a
        token minted on another data dir), the refusal says so.
        """
        token = DevIssuer.load_or_create(Path(self.mktemp()), "gw", clock=self.clock).issue("alice")
        service = IdentityService.from_settings(IdentitySettings(), data_dir=self.dir, gateway_name="gw", reactor=self.clock)
        reason = self.failureResultOf(service.verify_token(token), AuthenticationFailed).value.reason
        self.assertEqual(
            reason,
            "unknown key id: not signed by this gateway's dev issuer key "
            "(issued with another data dir? see hoopgw --config / HOOPGW_CONFIG)",
        )

    def test_refused_when_off(self) -> None:
        """If the dev issuer is off, its tokens are refused with "dev issuer
        disabled" and no key file is created for the verifier."""
        token = DevIssuer.load_or_create(self.dir, "gw", clock=self.clock).issue("alice")
        other = Path(self.mktemp())
        service = IdentityService.from_settings(
            IdentitySettings(dev_issuer=False), data_dir=other, gateway_name="gw", reactor=self.clock
        )
        failure = self.failureResultOf(service.verify_token(token), AuthenticationFailed)
        self.assertEqual(failure.value.reason, "dev issuer disabled")
        self.assertFalse(other.exists())

    def test_other_gateway(self) -> None:
        """If a token comes from another gateway's dev issuer (another name),
        it is refused as an unknown issuer."""
        token = DevIssuer.load_or_create(Path(self.mktemp()), "other", clock=self.clock).issue("alice")
        service = IdentityService.from_settings(IdentitySettings(), data_dir=self.dir, gateway_name="gw", reactor=self.clock)
        self.assertEqual(self.failureResultOf(service.verify_token(token), AuthenticationFailed).value.reason, "unknown issuer")
