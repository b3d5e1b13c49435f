"""
Keys and tokens for the identity tests: real keys, real signatures, and the
forged tokens an attacker would send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

NOW = 1_800_000_000
ISSUER = "https://idp.example.com"
AUDIENCE = "hoopgw"

# Generated once per test run: RSA generation is the slow part.
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()

ALG_KEY = {"RS256": RSA_KEY, "ES256": EC_KEY, "EdDSA": ED_KEY}
KIDS = {"RS256": "rsa1", "ES256": "ec1", "EdDSA": "ed1"}


def all_keys_jwks() -> dict[str, Any]:
    return jwks(*((ALG_KEY[alg], KIDS[alg]) for alg in KIDS))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(private_key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    return jwk


def jwks(*keys: tuple[Any, str]) -> dict[str, Any]:
    return {"keys": [public_jwk(key, kid) for key, kid in keys]}


def write_jwks(directory: Path, document: dict[str, Any]) -> Path:
    path = directory / "jwks.json"
    path.write_text(json.dumps(document))
    return path


def claims(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": AUDIENCE,
        "groups": ["dba", "dev"],
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 300,
        "jti": "token-1",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def sign(
    alg: str = "RS256",
    key: Any = None,
    kid: str | None = "",
    headers: dict[str, Any] | None = None,
    **claim_overrides: Any,
) -> str:
    """A genuinely signed token (PyJWT), with optional extra headers."""
    extra = {"typ": "at+jwt"}
    if kid == "":
        kid = KIDS[alg]
    if kid is not None:
        extra["kid"] = kid
    extra.update(headers or {})
    return jwt.encode(claims(**claim_overrides), key if key is not None else ALG_KEY[alg], algorithm=alg, headers=extra)


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand, as an attacker would."""
    return ".".join(
        [
            b64(json.dumps(header).encode()),
            b64(json.dumps(payload).encode()),
            b64(signature),
        ]
    )


def forge_hs256(secret: bytes, kid: str = "rsa1") -> str:
    """RS/HS confusion: HMAC-SHA256 keyed with the issuer's public key."""
    signing_input = ".".join(
        [
            b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()),
            b64(json.dumps(claims()).encode()),
        ]
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(mac)


def public_pem(private_key: Any) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
