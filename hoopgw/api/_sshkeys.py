"""
C{/api/v1/ssh-keys}: SSH public keys enrolled with the caller's own bearer
token (L{hoopgw.identity.enrolled}), so that plain C{ssh} logs in as the
caller until the token expires.

    POST   /api/v1/ssh-keys                 {"public_key": "ssh-ed25519 AAAA... comment", "signature": "..."}
    GET    /api/v1/ssh-keys                 the caller's enrolled keys that have not expired
    DELETE /api/v1/ssh-keys/{fingerprint}   the caller's own key (SHA256:..., its "/" as %2F or as is)

C{signature} proves the caller holds the private key: the bearer token
signed with it, as C{ssh-keygen -Y sign -n hoopgw-ssh-key -O hashalg=sha256
-f KEY < TOKEN_FILE} prints it (L{hoopgw.identity.enrolled.check_proof}).
C{POST} answers 201 C{{"fingerprint": "SHA256:...", "expires": <unix>,
"subject": ..., ...}}.  Errors are JSON C{{"error": "..."}}: 400 (no or a
refused key: its type, size or encoding; no or a bad signature; a token
without expiry), 401, 404
(no such key of the caller's), 409 (the key is another identity's, or
mapped in C{[[identity.ssh_keys]]}), 503 (the audit log cannot record it:
nothing was done; the table is full).
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from hoopgw.api._json import JSONResource, Refused, postpath
from hoopgw.identity.enrolled import EnrolmentError

__all__ = ["SSHKeysResource"]

_EXAMPLE = '{"public_key": "ssh-ed25519 AAAA... comment", "signature": "-----BEGIN SSH SIGNATURE-----..."}'


class SSHKeysResource(JSONResource):
    """Everything under C{/api/v1/ssh-keys} (module docstring)."""

    errors = (EnrolmentError,)

    def __init__(self, enrolment: Any, sessions: Any) -> None:
        super().__init__(sessions)
        self._enrolment = enrolment

    @staticmethod
    def _source(request: Request) -> str:
        address = request.getClientAddress()
        return f"{getattr(address, 'host', '?')}:{getattr(address, 'port', 0)}"

    async def _handle(self, request: Request) -> tuple[int, Any]:
        # A fingerprint's base64 may hold "/": the rest of the path, joined.
        fingerprint = "/".join(p.decode("utf-8", "replace") for p in postpath(request))
        method = request.method
        if not fingerprint:
            if method == b"POST":
                identity = await self._identity(request)
                document = self.body(request, _EXAMPLE)
                return 201, await self._enrolment.enrol(
                    identity, document.get("public_key"), document.get("signature"), source=self._source(request)
                )
            if method in (b"GET", b"HEAD"):
                identity = await self._identity(request)
                return 200, {"ssh_keys": self._enrolment.owned_by(identity)}
            request.setHeader(b"allow", b"GET, POST")
            raise Refused(405, "enrol a key with POST; list yours with GET")
        if method == b"DELETE":
            identity = await self._identity(request)
            return 200, await self._enrolment.remove(identity, fingerprint, source=self._source(request))
        request.setHeader(b"allow", b"DELETE")
        raise Refused(405, "an enrolled key is removed with DELETE")
