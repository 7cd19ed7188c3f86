"""Who is calling: the tenant that owns every row, upload, file, budget and rate a call touches.

Why in core: isolation is a rule of the use cases, not of a transport. The server layer turns
an authenticated request (a static token, a tenants-file entry, an OAuth ``sub``) into a
:class:`Tenant`; the service answers every question *as* that tenant, so another tenant's task,
upload or file does not exist for it (same answer as for an id never made) and one tenant's
budget or rate never slows another. A stdio server has one implicit tenant, :data:`LOCAL`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import SecretStr

from wan_mcp.core.clock import SYSTEM_CLOCK, Clock
from wan_mcp.core.journal import LOCAL_TENANT
from wan_mcp.errors import ErrorCode, WanError

__all__ = ["LOCAL", "RATE_SETTING", "TENANTS_FOLDER", "TENANT_ID", "Tenant", "TenantRates", "tenant_folder"]

#: What a tenant id may look like: it names a folder (the tenant's output files) and a journal key.
TENANT_ID: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
RATE_SETTING: Final = "WAN_MCP_TENANT_RATE_PER_MINUTE"
#: Inside the output folder: one folder per remote tenant (``tenants/<id>/``), which only that
#: tenant may read or write; the local user's files stay where they always were.
TENANTS_FOLDER: Final = "tenants"


def tenant_folder(output_root: Path, tenant_id: str) -> Path:
    """A remote tenant's own folder inside the shared output folder (its files, and only its)."""
    return output_root / TENANTS_FOLDER / tenant_id


@dataclass(frozen=True)
class Tenant:
    """A principal and what the server's owner granted it.

    ``None`` in a budget or rate means "the server's setting"; ``0`` means unlimited (as in
    the settings). ``api_key`` is the tenant's own gateway key (from its request header or a
    key the tenants file names in the environment): memory only, never written or echoed.
    """

    id: str
    #: Reached over HTTP: an id it does not own is never looked up at the gateway, and its files
    #: live in a folder of its own.
    remote: bool = False
    api_key: SecretStr | None = None
    budget_daily_usd: float | None = None
    budget_session_usd: float | None = None
    rate_per_minute: float | None = None

    def __post_init__(self) -> None:
        if not TENANT_ID.match(self.id):
            raise ValueError(f"tenant id {self.id!r} must match {TENANT_ID.pattern}")

    def __repr__(self) -> str:  # the dataclass repr would show SecretStr as '**********' anyway; keep it short
        return f"Tenant({self.id!r}, remote={self.remote}, own_key={self.api_key is not None})"


#: The one user of a stdio server (and the owner of every row from before tenants existed).
LOCAL: Final = Tenant(LOCAL_TENANT)

#: At most this many tenants' rate buckets are kept; full (idle) buckets are dropped first.
_MAX_BUCKETS: Final = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class TenantRates:
    """A token bucket per tenant: ``rate_per_minute`` calls, refilled continuously.

    One tenant emptying its bucket is refused with the wait; the others are untouched (no
    shared queue, no sleeping: the call is answered at once). Runs on the injected clock.
    """

    def __init__(self, default_per_minute: float | None, clock: Clock = SYSTEM_CLOCK) -> None:
        self._default = default_per_minute
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def rate(self, tenant: Tenant) -> float | None:
        """Calls per minute allowed to ``tenant`` (``None``: unlimited; stdio is never limited)."""
        if not tenant.remote:
            return None
        rate = tenant.rate_per_minute if tenant.rate_per_minute is not None else self._default
        return None if rate is None or rate <= 0 else rate

    def admit(self, tenant: Tenant, tool: str) -> None:
        """Take one call from ``tenant``'s bucket, or raise RATE_LIMITED saying when to retry."""
        rate = self.rate(tenant)
        if rate is None:
            return
        now = self._clock.monotonic()
        bucket = self._buckets.get(tenant.id)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[tenant.id] = _Bucket(tokens=rate, at=now)
        bucket.tokens = min(rate, bucket.tokens + (now - bucket.at) * rate / 60.0)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait = math.ceil((1.0 - bucket.tokens) * 60.0 / rate)
        raise WanError(
            ErrorCode.RATE_LIMITED,
            f"too many calls: this client may make {rate:g} tool calls per minute and has used them",
            field=tool,
            retry_after=float(wait),
            hint=f"wait {wait} s, then call {tool} again; while waiting, do not retry in a loop "
            f"(the server's owner sets the rate: rate_per_minute in the tenants file or {RATE_SETTING})",
        )

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled (idle tenants); they would start full anyway."""
        for key in [k for k, b in self._buckets.items() if (now - b.at) > 60.0]:
            del self._buckets[key]
        while len(self._buckets) >= _MAX_BUCKETS:  # all busy: drop the oldest, i.e. reset it to full
            del self._buckets[next(iter(self._buckets))]
