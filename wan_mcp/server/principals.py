"""Who is calling over HTTP/SSE: every way a request proves it, and what each principal may do.

Three kinds of principal, one verifier (the SDK's ``TokenVerifier``, so its middleware answers
401 with ``WWW-Authenticate`` and binds SSE sessions to the principal that opened them):

- each token in ``WAN_MCP_HTTP_TOKEN`` (or the generated token file) is its own principal,
  named ``token-<digest prefix>``: a deployment listing several tokens gets isolation as is;
- each tenant of the tenants file (tokens kept as SHA-256 digests), with its budgets, rate
  and optionally its own gateway key from the environment;
- OAuth 2.1 JWT access tokens from the configured issuer (:mod:`.oauth`), principal ``sub``.

Opaque tokens are compared by digest in constant time, with no early exit (timing does not
tell which tenant matched). A tool call then becomes a core :class:`Tenant` here, with the
tenant's own gateway key from the ``X-Wan-Api-Key`` header when it sends one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio
import httpx2
from mcp.server.auth.provider import AccessToken, TokenVerifier
from pydantic import SecretStr

from wan_mcp.config import Settings
from wan_mcp.core.clock import SYSTEM_CLOCK, Clock
from wan_mcp.core.tenancy import LOCAL, Tenant, TenantRates
from wan_mcp.errors import ErrorCode, WanError, register_secret
from wan_mcp.server.tenants_file import TenantEntry, load_tenants, token_sha256

if TYPE_CHECKING:  # PyJWT loads only when OAuth is configured (stdio and token-only servers start without it)
    from wan_mcp.server.oauth import JwtVerifier

__all__ = ["BYOK_HEADER", "Principals", "token_principal"]

log = logging.getLogger("wan_mcp.principals")

#: The request header a tenant may send its own gateway key in (never the MCP Authorization header).
BYOK_HEADER: Final = "x-wan-api-key"
_KEY_SHAPE: Final = re.compile(r"^[\x21-\x7e]{8,512}$")
#: How often the tenants file is checked for changes (``wan-mcp tenant add`` while serving).
RELOAD_SECONDS: Final = 5.0


def token_principal(token: str) -> str:
    """The principal a static token stands for: a digest prefix (never the token itself)."""
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _Grant:
    """What the owner granted one principal (budgets and rate ``None``: the server's settings)."""

    entry: TenantEntry
    api_key: SecretStr | None = None


class Principals(TokenVerifier):
    """The HTTP/SSE server's verifier and its tenant directory."""

    def __init__(
        self,
        *,
        static_tokens: list[str],
        tenants_file: Path | None,
        jwt: JwtVerifier | None = None,
        scope: str = "wan",
        accept_key_header: bool = True,
        rate_per_minute: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._scope = scope
        # Process-wide (an SSE connection's lifespan, and so its service, lives per connection).
        self._rates = TenantRates(rate_per_minute, clock)
        self._static = {token_sha256(t): TenantEntry(id=token_principal(t)) for t in static_tokens}
        self._file = tenants_file
        self._jwt = jwt
        self._accept_key_header = accept_key_header
        self._clock = clock
        self._file_state: tuple[float, int] | None = None
        self._checked_at = clock.monotonic()
        self._grants: dict[str, _Grant] = {}
        self._by_digest: dict[str, str] = {}
        self._load()

    @classmethod
    def from_settings(
        cls, settings: Settings, static_tokens: list[str], *, http: Callable[[], httpx2.AsyncClient], audience: str
    ) -> Principals:
        jwt = None
        if settings.oauth_issuer:
            from wan_mcp.server.oauth import JwtVerifier

            jwt = JwtVerifier(
                issuer=settings.oauth_issuer,
                audience=audience,
                http=http,
                jwks_url=settings.oauth_jwks_url,
                principal_claim=settings.oauth_principal_claim,
            )
        return cls(
            static_tokens=static_tokens,
            tenants_file=settings.resolved_tenants_file,
            jwt=jwt,
            scope=settings.oauth_scope,
            accept_key_header=settings.byok_header,
            rate_per_minute=settings.tenant_rate_per_minute,
        )

    @property
    def tenant_count(self) -> int:
        return len(self._grants)

    # --- the tenants file -------------------------------------------------------------------

    def _stat(self) -> tuple[float, int] | None:
        if self._file is None:
            return None
        try:
            st = self._file.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime, st.st_size)

    def _load(self) -> None:
        """Read the file (a bad file at start-up is a CONFIG error; while serving, the last good one stays)."""
        self._file_state = self._stat()
        entries = list(self._static.values())
        if self._file is not None:
            entries += load_tenants(self._file)
        grants: dict[str, _Grant] = {}
        by_digest: dict[str, str] = {}
        for entry in entries:
            grants[entry.id] = _Grant(entry, _env_key(entry))
            if entry.token_sha256:
                by_digest[entry.token_sha256] = entry.id
        for digest in self._static:
            by_digest[digest] = self._static[digest].id
        self._grants, self._by_digest = grants, by_digest

    async def _maybe_reload(self) -> None:
        now = self._clock.monotonic()
        if self._file is None or now - self._checked_at < RELOAD_SECONDS:
            return
        self._checked_at = now
        state = await anyio.to_thread.run_sync(self._stat)
        if state == self._file_state:
            return
        try:
            await anyio.to_thread.run_sync(self._load)
            log.info("tenants file %s reloaded: %d principal(s)", self._file, len(self._grants))
        except WanError as err:
            self._file_state = state  # do not retry a broken file every call; the last good one stays
            log.warning("%s", err.render())

    # --- TokenVerifier --------------------------------------------------------------------

    async def verify_token(self, token: str) -> AccessToken | None:
        await self._maybe_reload()
        candidate = token_sha256(token).encode()
        principal: str | None = None
        for digest, name in self._by_digest.items():  # no early exit: timing does not reveal which matched
            if hmac.compare_digest(candidate, digest.encode()):
                principal = name
        if principal is not None:
            # A static or tenants-file token holds the one scope the server asks for.
            return AccessToken(token="(redacted)", client_id=principal, subject=principal, scopes=[self._scope])  # noqa: S106
        if self._jwt is not None:
            return await self._jwt.verify(token)
        return None

    # --- a tool call as a tenant ---------------------------------------------------------

    def tenant(self, access: AccessToken | None, headers: Mapping[str, str] | None) -> Tenant:
        """The core tenant a request acts as (stdio and unauthenticated calls: the local user)."""
        if access is None:
            return LOCAL
        grant = self._grants.get(access.client_id)
        entry = grant.entry if grant is not None else TenantEntry(id=access.client_id)  # an OAuth subject
        key = grant.api_key if grant is not None else None
        sent = (headers or {}).get(BYOK_HEADER)
        if sent is not None:
            key = self._header_key(sent)
        return Tenant(
            id=entry.id,
            remote=True,
            api_key=key,
            budget_daily_usd=entry.budget_daily_usd,
            budget_session_usd=entry.budget_session_usd,
            rate_per_minute=entry.rate_per_minute,
        )

    def admit(self, tenant: Tenant, tool: str) -> None:
        """Count one call against ``tenant``'s rate; RATE_LIMITED (with the wait) once it is used up."""
        self._rates.admit(tenant, tool)

    def _header_key(self, sent: str) -> SecretStr:
        if not self._accept_key_header:
            raise WanError(
                ErrorCode.INVALID_REQUEST,
                "this server does not accept gateway keys from clients",
                field="X-Wan-Api-Key",
                hint="remove the X-Wan-Api-Key header; the server's owner pays with the server's key "
                "(or enables the header with WAN_MCP_BYOK_HEADER=1)",
            )
        sent = sent.strip()
        if not _KEY_SHAPE.match(sent):
            raise WanError(
                ErrorCode.INVALID_REQUEST,
                "the X-Wan-Api-Key header is not a gateway key",
                field="X-Wan-Api-Key",
                allowed=["8 to 512 visible ASCII characters, e.g. sk-..."],
                hint="send your ToAPIs key exactly as the console shows it, or leave the header out",
            )
        register_secret(sent, transient=True)
        return SecretStr(sent)


def _env_key(entry: TenantEntry) -> SecretStr | None:
    """The tenant's own gateway key, from the environment variable the file names (never the file)."""
    if entry.api_key_env is None:
        return None
    value = os.environ.get(entry.api_key_env, "").strip()
    if not value:
        raise WanError(
            ErrorCode.CONFIG,
            f"tenant {entry.id!r} names the environment variable {entry.api_key_env} for its gateway key, "
            "but it is not set",
            hint=f"set {entry.api_key_env} in the server's environment, or remove api_key_env from the tenant",
        )
    register_secret(value)
    return SecretStr(value)
