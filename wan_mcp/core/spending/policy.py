"""The user's spending rules: budgets, the confirmation threshold and read-only mode.

Why one place: the daily and session budgets are enforced inside the journal's reservation
transaction (so N concurrent calls can never reserve past them), quoted back in error
messages, and shown by ``get_usage``; all three must agree on what "today" and "this
session" mean and on which setting raises which limit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, Literal

from wan_mcp.core.journal import SpendLimit
from wan_mcp.core.spending.prices import MICRO

__all__ = ["Spend", "SpendingPolicy", "day_start"]

DAILY_SETTING: Final = "WAN_MCP_BUDGET_DAILY_USD"
SESSION_SETTING: Final = "WAN_MCP_BUDGET_SESSION_USD"
CONFIRM_SETTING: Final = "WAN_MCP_CONFIRM_ABOVE_USD"
READ_ONLY_SETTING: Final = "WAN_MCP_READ_ONLY"


def day_start(now: float) -> float:
    """Midnight (local time of the server) of the day ``now`` falls in: when "today" began."""
    local = datetime.fromtimestamp(now).astimezone()
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def _micro(usd: float | None) -> int | None:
    """USD from settings to micro-dollars; ``None`` and ``0`` both mean "no limit"."""
    if usd is None or usd <= 0:
        return None
    return round(usd * MICRO)


@dataclass(frozen=True)
class SpendingPolicy:
    """Limits in micro-dollars (``None`` = unlimited) and the process's session id."""

    daily_micro: int | None
    session_micro: int | None
    confirm_above_micro: int | None
    read_only: bool
    session: str
    #: Whose rows the budgets count (``None``: every row).
    tenant: str | None = None

    @classmethod
    def from_usd(
        cls,
        *,
        daily: float | None,
        session: float | None,
        confirm_above: float | None,
        read_only: bool,
        session_id: str,
    ) -> SpendingPolicy:
        return cls(
            daily_micro=_micro(daily),
            session_micro=_micro(session),
            confirm_above_micro=None if confirm_above is None or confirm_above < 0 else round(confirm_above * MICRO),
            read_only=read_only,
            session=session_id,
        )

    def limits(self, now: float) -> list[SpendLimit]:
        """The budgets in force at ``now``, daily first (the one a user most often meets)."""
        out: list[SpendLimit] = []
        if self.daily_micro is not None:
            out.append(SpendLimit("daily", self.daily_micro, since=day_start(now), spender=None, tenant=self.tenant))
        if self.session_micro is not None:
            out.append(SpendLimit("session", self.session_micro, since=None, spender=self.session, tenant=self.tenant))
        return out

    def for_tenant(
        self, tenant: str, *, daily_usd: float | None, session_usd: float | None, remote: bool
    ) -> SpendingPolicy:
        """This policy as ``tenant`` lives it: its own rows, its own budgets where the owner set them
        (``None`` keeps the server's), and for a remote tenant a session of its own in this process."""
        return replace(
            self,
            daily_micro=self.daily_micro if daily_usd is None else _micro(daily_usd),
            session_micro=self.session_micro if session_usd is None else _micro(session_usd),
            session=f"{self.session}:{tenant}" if remote else self.session,
            tenant=tenant,
        )

    def needs_confirmation(self, micro_usd: int) -> bool:
        return self.confirm_above_micro is not None and micro_usd > self.confirm_above_micro

    @staticmethod
    def setting(name: Literal["daily", "session"]) -> str:
        return DAILY_SETTING if name == "daily" else SESSION_SETTING

    def usage_scopes(self, now: float) -> list[SpendLimit]:
        """Both scopes, limited or not (``get_usage`` shows today's and this session's spend)."""
        return [
            SpendLimit("daily", self.daily_micro or 0, since=day_start(now), spender=None, tenant=self.tenant),
            SpendLimit("session", self.session_micro or 0, since=None, spender=self.session, tenant=self.tenant),
        ]


@dataclass(frozen=True)
class Spend:
    """Micro-USD spent today and in this session, read against the policy's budgets."""

    today: int
    session: int
    policy: SpendingPolicy

    def _scopes(self) -> tuple[tuple[Literal["daily", "session"], int | None, int], ...]:
        return (("daily", self.policy.daily_micro, self.today), ("session", self.policy.session_micro, self.session))

    def left_usd(self, name: Literal["daily", "session"]) -> float | None:
        """USD left in that budget (None: no such budget)."""
        limit, spent = (
            (self.policy.daily_micro, self.today) if name == "daily" else (self.policy.session_micro, self.session)
        )
        return None if limit is None else max(0, limit - spent) / MICRO

    def passed_by(self, micro_usd: int) -> list[tuple[Literal["daily", "session"], int, int]]:
        """The budgets a cost of ``micro_usd`` would pass, as (name, limit, spent)."""
        return [
            (name, limit, spent)
            for name, limit, spent in self._scopes()
            if limit is not None and spent + micro_usd > limit
        ]
