"""
twisted.cred checkers over an L{IIdentityVerifier}: the avatar id of a
successful login is the L{hoopgw.model.Identity} itself.
"""

from __future__ import annotations

import struct
from typing import Any

from attrs import define
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgw.errors import AuthenticationFailed
from hoopgw.interfaces import IIdentityVerifier
from hoopgw.model import Identity


class IdentityUnauthorized(UnauthorizedLogin):
    """An L{UnauthorizedLogin} that carries a reason safe to log."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@implementer(ICredentialsChecker)
@define
class TokenChecker:
    """
    Username/password where the password is a bearer token (the Postgres
    password, an SSH password or keyboard-interactive answer).  The user
    name plays no part in authentication: it names the target.
    """

    verifier: IIdentityVerifier
    credentialInterfaces = (IUsernamePassword,)

    # Twisted types an avatar id as bytes (or ANONYMOUS); hoopgw's portals
    # and realms take the Identity itself (module docstring), so the
    # override is deliberate.
    def requestAvatarId(self, credentials: Any) -> "Deferred[Identity]":  # type: ignore[override]
        password = credentials.password
        if isinstance(password, bytes):
            try:
                password = password.decode("ascii")
            except UnicodeDecodeError:
                return fail(IdentityUnauthorized("malformed token"))
        d: Deferred[Identity] = self.verifier.verify_token(password)
        d.addErrback(_unauthorized)
        return d


def _unauthorized(failure: Failure) -> Failure:
    error = failure.value
    if isinstance(error, AuthenticationFailed):
        return Failure(IdentityUnauthorized(error.reason))
    return failure


@implementer(ICredentialsChecker)
@define
class SSHKeyChecker:
    """
    SSH public key authentication against the configured key map: like
    L{twisted.conch.checkers.SSHPublicKeyChecker}, a query without a
    signature answers L{ValidPublicKey} (RFC 4252 section 7, "the key is
    acceptable"), and a signed request must verify.
    """

    verifier: IIdentityVerifier
    credentialInterfaces = (ISSHPrivateKey,)

    # The avatar id is the Identity, as TokenChecker's.
    def requestAvatarId(self, credentials: Any) -> "Deferred[Identity]":  # type: ignore[override]
        identity: Identity | None = self.verifier.identity_for_public_key(credentials.blob)
        if identity is None:
            return fail(IdentityUnauthorized("public key not authorized"))
        if not credentials.signature:
            return fail(ValidPublicKey())
        try:
            key = Key.fromString(credentials.blob)
            valid = key.verify(credentials.signature, credentials.sigData)
        except (BadKeyError, ValueError, TypeError, IndexError, struct.error):
            # A malformed signature blob is a bad signature, not a crash.
            valid = False
        if not valid:
            return fail(IdentityUnauthorized("bad signature"))
        return succeed(identity)
