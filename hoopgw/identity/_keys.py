"""
Where an issuer's verification keys come from: a JWKS file read at start-up,
a JWKS URI, or OIDC Discovery from the issuer.

Remote keys are cached.  A token whose C{kid} is unknown triggers one
refresh, at most once per cooldown, so a flood of forged key ids cannot make
the gateway hammer the IdP; verifications that need a refresh while one is
in flight wait for that same fetch, each with its own Deferred.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.errors import AuthenticationFailed
from hoopgw.identity._jose import KeySet, UnknownKey, VerificationKey

_log = Logger()

#: A JWKS or discovery document larger than this is refused.
MAX_DOCUMENT_BYTES = 1024 * 1024


class FetchError(Exception):
    """A key or discovery document could not be fetched or understood."""


class HTTPGetter(Protocol):
    """
    The part of treq's API used here: C{treq} itself, a
    L{treq.client.HTTPClient} or a L{treq.testing.StubTreq}.
    """

    def get(
        self,
        url: str,
        /,
        *,
        headers: dict[bytes | str, list[bytes | str]] | None = ...,
        allow_redirects: bool = ...,
    ) -> "Deferred[Any]": ...


class KeySource(Protocol):
    def key_for(self, kid: str | None, alg: str) -> "Deferred[VerificationKey]":
        """
        @return: a Deferred firing with the key, or failing with
            L{AuthenticationFailed}.
        """

    def prefetch(self) -> "Deferred[None]":
        """Load the keys now (start-up); never fails."""


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_fetch_url(url: str, *, what: str, allow_insecure_http: bool) -> None:
    """
    Refuse URLs keys must not be fetched from: anything but https, except
    http to a loopback host (tests, a sidecar IdP) or when explicitly allowed.

    @raise ValueError: naming C{what} and the URL.
    """
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        if allow_insecure_http or is_loopback_host(parts.hostname):
            return
        raise ValueError(
            f"{what}: expected an https URL (http is accepted only for a loopback "
            f"host, since keys fetched in clear text can be replaced), got {url!r}"
        )
    raise ValueError(f"{what}: expected an absolute https URL, got {url!r}")


def discovery_url(issuer: str) -> str:
    # OIDC Discovery 1.0 section 4: remove a terminating "/" before appending.
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


@define
class StaticKeySource:
    """Keys known at start-up (a JWKS file, the dev issuer's own key)."""

    keys: KeySet
    #: The refusal's reason for a key id not in C{keys}, if not "unknown key id" (the dev issuer's hint).
    unknown_reason: str | None = None

    @classmethod
    def from_file(cls, path: Path, *, where: str) -> "StaticKeySource":
        """Read a JWKS file (at start-up). @raise ValueError: naming C{where} and the file."""
        try:
            document = json.loads(Path(path).read_text("utf-8"))
        except OSError as e:
            raise ValueError(f"{where}: cannot read JWKS file {str(path)!r}: {e.strerror}") from None
        except ValueError as e:
            raise ValueError(f"{where}: JWKS file {str(path)!r} is not JSON: {e}") from None
        keys = KeySet.from_jwks(document, where=f"{where}: JWKS file {str(path)!r}")
        if not keys.keys:
            raise ValueError(f"{where}: JWKS file {str(path)!r} holds no usable signing key")
        return cls(keys)

    def key_for(self, kid: str | None, alg: str) -> "Deferred[VerificationKey]":
        try:
            return succeed(self.keys.select(kid, alg))
        except UnknownKey as e:
            error = AuthenticationFailed(self.unknown_reason) if self.unknown_reason else e
            return Deferred.fromCoroutine(_raise(error))
        except AuthenticationFailed as e:
            return Deferred.fromCoroutine(_raise(e))

    def prefetch(self) -> "Deferred[None]":
        return succeed(None)


async def _raise(error: Exception) -> Any:
    raise error


@define
class RemoteKeySource:
    """
    Keys fetched over HTTPS from C{jwks_uri}, or, when that is C{None},
    from the C{jwks_uri} of the issuer's OIDC discovery document.

    @ivar refresh_cooldown: seconds between two fetches triggered by tokens
        (an unknown C{kid}, or stale keys); failed fetches count too.
    @ivar max_age: cached keys older than this are refetched before use, so
        a key the IdP withdrew stops verifying tokens.
    """

    issuer: str
    http: HTTPGetter
    clock: IReactorTime
    jwks_uri: str | None = None
    allow_insecure_http: bool = False
    refresh_cooldown: float = 60.0
    max_age: float = 3600.0
    timeout: float = 10.0
    _keys: KeySet | None = field(default=None, init=False)
    _fetched_at: float | None = field(default=None, init=False)
    _attempted_at: float | None = field(default=None, init=False)
    _waiters: list["Deferred[None]"] | None = field(default=None, init=False)
    _discovered_jwks_uri: str | None = field(default=None, init=False)
    fetches: int = field(default=0, init=False)  # for metrics and tests

    def key_for(self, kid: str | None, alg: str) -> "Deferred[VerificationKey]":
        return Deferred.fromCoroutine(self._key_for(kid, alg))

    async def _key_for(self, kid: str | None, alg: str) -> VerificationKey:
        if self._keys is None or self._stale():
            if self._may_refresh():
                await self._refresh()
            if self._keys is None:
                raise AuthenticationFailed("issuer keys unavailable")
        try:
            return self._keys.select(kid, alg)
        except UnknownKey:
            if not self._may_refresh():
                raise
        await self._refresh()
        return self._keys.select(kid, alg)

    def prefetch(self) -> "Deferred[None]":
        d = self._refresh()
        d.addErrback(lambda f: None)  # _refreshed already logged it
        return d

    def _stale(self) -> bool:
        return self._fetched_at is None or self.clock.seconds() - self._fetched_at >= self.max_age

    def _may_refresh(self) -> bool:
        if self._waiters is not None:
            return True  # joining a fetch in flight costs the IdP nothing
        return (
            self._attempted_at is None
            or self.clock.seconds() - self._attempted_at >= self.refresh_cooldown
        )

    def _refresh(self) -> "Deferred[None]":
        """
        Fetch the keys, or join the fetch in flight.  The returned Deferred
        is the caller's own; a failed fetch keeps the keys already cached.
        """
        mine: Deferred[None] = Deferred()
        if self._waiters is not None:
            self._waiters.append(mine)
            return mine
        self._waiters = [mine]
        self._attempted_at = self.clock.seconds()
        self.fetches += 1
        fetch = Deferred.fromCoroutine(self._fetch())
        fetch.addTimeout(self.timeout, self.clock)
        fetch.addBoth(self._refreshed)
        return mine

    def _refreshed(self, result: KeySet | Failure) -> None:
        waiters, self._waiters = self._waiters or [], None
        if isinstance(result, Failure):
            _log.warn(
                "identity: cannot fetch keys of issuer {issuer}: {error}",
                issuer=self.issuer,
                error=result.getErrorMessage() or getattr(result.type, "__name__", "?"),
            )
            for waiter in waiters:
                # Keep the cached keys: an IdP outage should not lock out
                # tokens signed by keys we already trust.
                waiter.callback(None)
            return
        self._keys = result
        self._fetched_at = self.clock.seconds()
        for waiter in waiters:
            waiter.callback(None)

    async def _fetch(self) -> KeySet:
        uri = self.jwks_uri or self._discovered_jwks_uri
        if uri is None:
            uri = await self._discover()
        document = await self._get_json(uri)
        try:
            keys = KeySet.from_jwks(document, where=uri)
        except ValueError as e:
            raise FetchError(str(e)) from None
        if not keys.keys:
            raise FetchError(f"{uri}: the JWKS holds no usable signing key")
        return keys

    async def _discover(self) -> str:
        url = discovery_url(self.issuer)
        document = await self._get_json(url)
        if not isinstance(document, dict):
            raise FetchError(f"{url}: expected a JSON object")
        # OIDC Discovery 1.0 section 4.3: the issuer MUST be identical to the
        # one the document was fetched for, or an IdP could speak for another.
        if document.get("issuer") != self.issuer:
            raise FetchError(
                f"{url}: expected issuer {self.issuer!r}, got {document.get('issuer')!r}"
            )
        uri = document.get("jwks_uri")
        if not isinstance(uri, str):
            raise FetchError(f"{url}: expected a jwks_uri string")
        try:
            check_fetch_url(uri, what=f"{url}: jwks_uri", allow_insecure_http=self.allow_insecure_http)
        except ValueError as e:
            raise FetchError(str(e)) from None
        self._discovered_jwks_uri = uri
        return uri

    async def _get_json(self, url: str) -> Any:
        response = await self.http.get(
            url, headers={b"Accept": [b"application/json"]}, allow_redirects=False
        )
        if response.code != 200:
            raise FetchError(f"{url}: expected HTTP 200, got {response.code}")
        length = response.length
        if isinstance(length, int) and length > MAX_DOCUMENT_BYTES:
            raise FetchError(f"{url}: document larger than {MAX_DOCUMENT_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0

        def collect(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > MAX_DOCUMENT_BYTES:
                raise FetchError(f"{url}: document larger than {MAX_DOCUMENT_BYTES} bytes")
            chunks.append(data)

        await response.collect(collect)
        try:
            return json.loads(b"".join(chunks).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise FetchError(f"{url}: expected a JSON document: {e}") from None
