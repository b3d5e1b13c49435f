"""
The gateway's side of PostgreSQL password authentication to a target
server: SCRAM-SHA-256 (RFC 5802, RFC 7677; PostgreSQL docs "SASL
Authentication"), MD5 and cleartext.  Pure: bytes in, bytes out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from attrs import define, field

from hoopgw.errors import HoopgwError

SCRAM_SHA_256 = "SCRAM-SHA-256"

# The most PBKDF2 rounds a target may ask for (PostgreSQL's default is 4096;
# 100,000 take some tens of milliseconds, on the reactor thread).
MAX_SCRAM_ITERATIONS = 100_000


class BackendAuthError(HoopgwError):
    """The target's authentication exchange failed or was not trustworthy."""


def md5_password(user: str, password: str, salt: bytes) -> bytes:
    """PostgreSQL's AuthenticationMD5Password answer: md5(md5(password + user) + salt)."""
    inner = hashlib.md5(password.encode() + user.encode()).hexdigest().encode()
    return b"md5" + hashlib.md5(inner + salt).hexdigest().encode()


def _attributes(message: bytes) -> dict[str, str]:
    try:
        text = message.decode("utf-8")
        return dict(part.split("=", 1) for part in text.split(","))
    except ValueError:
        raise BackendAuthError("malformed SCRAM message from the server") from None


@define
class ScramClient:
    """
    One SCRAM-SHA-256 exchange without channel binding ("n,,"), as libpq does
    when the server offers no -PLUS mechanism it must use.  The user name is
    empty in the messages: PostgreSQL takes it from the StartupMessage.
    """

    password: str = field(repr=False)
    user: str = ""
    nonce: str = field(factory=lambda: base64.b64encode(secrets.token_bytes(18)).decode())
    _client_first_bare: str = field(default="", init=False, repr=False)
    _server_signature: bytes = field(default=b"", init=False, repr=False)

    def first_message(self) -> bytes:
        self._client_first_bare = f"n={self.user},r={self.nonce}"
        return ("n,," + self._client_first_bare).encode()

    def final_message(self, server_first: bytes) -> bytes:
        attrs = _attributes(server_first)
        try:
            nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        except (KeyError, ValueError):
            raise BackendAuthError("malformed SCRAM server-first message") from None
        if not nonce.startswith(self.nonce) or len(nonce) == len(self.nonce):
            raise BackendAuthError("SCRAM server nonce does not extend the client nonce")
        if not 1 <= iterations <= MAX_SCRAM_ITERATIONS:
            # PBKDF2 runs on the reactor thread: a hostile target asking for
            # millions of rounds would stall every connection of the gateway.
            raise BackendAuthError(
                f"SCRAM iteration count {iterations} from the target is outside 1..{MAX_SCRAM_ITERATIONS} "
                f"(PostgreSQL's default is 4096; lower scram_iterations for this role)"
            )
        # SASLprep is skipped like libpq does for passwords it cannot prepare;
        # connection passwords are operator-chosen ASCII in practice.
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._client_first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self._server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_final(self, server_final: bytes) -> None:
        """The server must prove it knows the password too (mutual authentication)."""
        attrs = _attributes(server_final)
        if "e" in attrs:
            raise BackendAuthError(f"SCRAM error from the server: {attrs['e']}")
        try:
            signature = base64.b64decode(attrs["v"])
        except (KeyError, ValueError):
            raise BackendAuthError("malformed SCRAM server-final message") from None
        if not self._server_signature or not hmac.compare_digest(signature, self._server_signature):
            raise BackendAuthError("the server's SCRAM signature is wrong: it does not know the password")
