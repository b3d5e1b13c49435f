"""
Identity: JWT access tokens from trusted issuers (JWKS file, JWKS URI or
OIDC discovery), the dev issuer, SSH public keys, and twisted.cred checkers.
"""

from hoopgw.identity.cred import SSHKeyChecker, TokenChecker
from hoopgw.identity.dev import DevIssuer
from hoopgw.identity.service import IdentityService, https_client
from hoopgw.identity.ssh import SSHKeyMap, openssh_fingerprint

__all__ = [
    "DevIssuer",
    "IdentityService",
    "SSHKeyChecker",
    "SSHKeyMap",
    "TokenChecker",
    "https_client",
    "openssh_fingerprint",
]
