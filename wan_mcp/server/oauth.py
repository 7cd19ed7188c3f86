"""OAuth 2.1 resource-server mode: JWT access tokens checked against the issuer's JWKS.

As the MCP authorization spec asks of a resource server: the signature (by a key the issuer
publishes), the issuer, the audience (this server's resource URL, RFC 8707), the expiry and
the required scope are all checked; the principal is the ``sub`` (or a configured claim) of
that issuer. Signatures are PyJWT's work, never ours. Only asymmetric algorithms are
accepted (an HMAC "key" taken from a public JWKS would let anyone sign). The token itself is
never passed on: the gateway is called with the server's or the tenant's own key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any, Final

import anyio
import httpx2
import jwt
from mcp.server.auth.provider import AccessToken

from wan_mcp.core.clock import SYSTEM_CLOCK, Clock

__all__ = ["ALGORITHMS", "JwtVerifier", "oauth_principal"]

log = logging.getLogger("wan_mcp.oauth")

ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
#: How long fetched keys are trusted before they are fetched again (key rotation is picked up).
JWKS_TTL_SECONDS: Final = 600.0
#: An unknown ``kid`` re-fetches the keys at most this often (a flood of forged kids costs one GET).
JWKS_REFETCH_SECONDS: Final = 30.0
#: Clock skew tolerated on ``exp``/``nbf``/``iat``.
LEEWAY_SECONDS: Final = 30
MAX_DOCUMENT_BYTES: Final = 256 * 1024
MAX_TOKEN_CHARS: Final = 16 * 1024


def oauth_principal(issuer: str, subject: str) -> str:
    """The tenant id of ``subject`` at ``issuer``: a digest (path-safe, and ``sub`` is unique per issuer only)."""
    return "oauth-" + hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()[:20]


class JwtVerifier:
    """Verifies JWT access tokens; returns ``None`` for any token that fails a check (logged, not told)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        http: Callable[[], httpx2.AsyncClient],
        jwks_url: str | None = None,
        principal_claim: str = "sub",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._http = http
        self._jwks_url = jwks_url
        self._claim = principal_claim
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = anyio.Lock()

    async def verify(self, token: str) -> AccessToken | None:
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            return None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            log.info("refused an access token: algorithm %r is not accepted", alg)
            return None
        key = await self._key(kid if isinstance(kid, str) else None)
        if key is None:
            log.info("refused an access token: no key %r at the issuer's JWKS", kid)
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            log.info("refused an access token: %s", exc)
            return None
        subject = claims.get(self._claim)
        if not isinstance(subject, str) or not subject:
            log.info("refused an access token: no %r claim", self._claim)
            return None
        return AccessToken(
            token="(redacted)",  # noqa: S106 - never kept, never passed on
            client_id=oauth_principal(self._issuer, subject),
            scopes=_scopes(claims),
            expires_at=int(claims["exp"]),
            resource=self._audience,
            subject=subject,
            claims={"iss": self._issuer},
        )

    async def _key(self, kid: str | None) -> jwt.PyJWK | None:
        key = None if self._age() > JWKS_TTL_SECONDS else self._lookup(kid)
        if key is None and self._age() > JWKS_REFETCH_SECONDS:  # stale keys, or a kid not seen yet
            async with self._lock:
                if self._age() > JWKS_REFETCH_SECONDS:  # not fetched meanwhile by another waiter
                    await self._refresh()
            key = self._lookup(kid)
        return key

    def _age(self) -> float:
        return float("inf") if self._fetched_at is None else self._clock.monotonic() - self._fetched_at

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    async def _refresh(self) -> None:
        self._fetched_at = self._clock.monotonic()
        try:
            url = self._jwks_url or await self._discover()
            doc = await self._get_json(url)
            keys: dict[str, jwt.PyJWK] = {}
            for index, raw in enumerate(doc.get("keys", []) if isinstance(doc, dict) else []):
                try:
                    key = jwt.PyJWK.from_dict(raw)
                except jwt.PyJWTError:
                    continue  # a key type this build cannot use (or a symmetric one): skip it
                if key.key_type == "oct":
                    continue
                keys[str(raw.get("kid") or f"#{index}")] = key
            self._keys = keys
        except (httpx2.HTTPError, ValueError, OSError) as exc:
            log.warning("cannot fetch the OAuth issuer's keys (%s); tokens are refused until it answers", exc)

    async def _discover(self) -> str:
        """The ``jwks_uri`` from the issuer's metadata (RFC 8414, then OpenID Connect discovery)."""
        base = self._issuer.rstrip("/")
        for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
            try:
                doc = await self._get_json(base + path)
            except (httpx2.HTTPError, ValueError):
                continue
            if isinstance(doc, dict) and doc.get("issuer") == self._issuer and isinstance(doc.get("jwks_uri"), str):
                self._jwks_url = str(doc["jwks_uri"])
                return self._jwks_url
        raise ValueError(f"no metadata with a jwks_uri for issuer {self._issuer}")

    async def _get_json(self, url: str) -> Any:
        async with self._http().stream("GET", url, headers={"accept": "application/json"}, timeout=10.0) as response:
            response.raise_for_status()
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ValueError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
        return json.loads(body)


def _scopes(claims: dict[str, Any]) -> list[str]:
    """``scope`` (RFC 9068: space-separated) or ``scp`` (a list, as some issuers send)."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return scope.split()
    scp = claims.get("scp")
    if isinstance(scp, list):
        return [s for s in scp if isinstance(s, str)]
    return []
