"""
Refused tokens become evidence: the whole gateway in-process (real identity
service with a JWKS file, real audit log), attacked with forged tokens.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from hoopgw.audit.search import search
from hoopgw.audit.verify import verify
from hoopgw.config import loads
from hoopgw.errors import AuthenticationFailed
from hoopgw.gateway import Gateway
from hoopgw.model import Source
from tests.identity.helpers import (
    ISSUER,
    all_keys_jwks,
    claims,
    forge,
    forge_hs256,
    public_pem,
    RSA_KEY,
    sign,
    write_jwks,
)

SOURCE = Source("test", "127.0.0.1:40001")


class RefusedTokensAudited(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_each_attack_refused_and_audited_without_the_token(self):
        """
        If forged, expired or misdirected tokens are presented, each is refused
        with its own reason and leaves one auth.failed record carrying that
        reason, the source and the token's SHA-256 — and no record contains
        any token.  A genuine token is accepted, and the log still verifies.
        """
        base = Path(self.mktemp()).resolve()
        base.mkdir()
        jwks = write_jwks(base, all_keys_jwks())
        config = loads(
            f"""
[gateway]
data_dir = "data"
[listen]
postgres = false
ssh = false
http = false
api = false
[[identity.issuers]]
issuer = "{ISSUER}"
audience = "hoopgw"
jwks_file = "{jwks}"
""",
            source=None,
            base_dir=base,
        )
        gateway = Gateway(config, reactor=reactor)
        gateway.startService()
        now = int(time.time())
        live = dict(iat=now, nbf=now, exp=now + 300)
        attacks = {
            "alg none": (forge({"alg": "none", "typ": "JWT", "kid": "rsa1"}, claims(**live)), "algorithm not allowed"),
            "alg NoNe": (forge({"alg": "NoNe", "kid": "rsa1"}, claims(**live)), "algorithm not allowed"),
            "HS256 keyed with the public key": (forge_hs256(public_pem(RSA_KEY)), "algorithm not allowed"),
            "jku header": (sign(headers={"jku": "https://evil.example/jwks"}, **live), "forbidden header jku"),
            "forged kid": (sign(kid="../../etc/passwd", **live), "unknown key id"),
            "expired": (sign(iat=now - 900, nbf=now - 900, exp=now - 600), "token expired"),
            "wrong audience": (sign(aud="someone-else", **live), "wrong audience"),
            "issuer with trailing slash": (sign(iss=ISSUER + "/", **live), "unknown issuer"),
            "not a JWT": ("not-a-token", "malformed token"),
        }
        for name, (token, reason) in attacks.items():
            failure = yield self.assertFailure(
                gateway.sessions.authenticate_token(token, source=SOURCE), AuthenticationFailed
            )
            self.assertEqual(failure.reason, reason, name)
        good = sign(**live)
        identity = yield gateway.sessions.authenticate_token(good, source=SOURCE)
        self.assertEqual((identity.subject, identity.groups), ("alice", ("dba", "dev")))
        yield gateway.stopService()

        audit_dir = base / "data" / "audit"
        records = list(search(audit_dir, event="auth.failed"))
        self.assertEqual(
            [(r["reason"], r.get("credential_sha256"), r["source"]) for r in records],
            [
                # (Not a token's shape, so perhaps a password: no hash of it.)
                (reason, hashlib.sha256(token.encode()).hexdigest() if token.count(".") == 2 else None, "127.0.0.1:40001")
                for token, reason in attacks.values()
            ],
        )
        raw = b"".join(p.read_bytes() for p in audit_dir.iterdir() if p.is_file())
        for token, _ in list(attacks.values()) + [(good, None)]:
            for part in token.split("."):
                if len(part) > 16:
                    self.assertNotIn(part.encode(), raw)
        report = verify(audit_dir, (audit_dir / "audit.vkey").read_text())
        self.assertTrue(report.ok, report.first_error)
