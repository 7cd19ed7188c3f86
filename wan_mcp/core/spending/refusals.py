"""Every refusal the spending rules can give, and the question put to the user: one voice.

Pure functions from facts to :class:`WanError` (what went wrong, the field, the numbers, the
setting to change and the next step, mirrored as structured ``extra`` for hosts that show the
model only the structured content). The service decides *when*; this module says *what*.
"""

from __future__ import annotations

from typing import Literal

from wan_mcp.core.journal import SpendLimit
from wan_mcp.core.request import ValidatedRequest
from wan_mcp.core.spending.confirmation import CONFIRM_TOKEN_TTL_SECONDS, Decision, SpendQuestion
from wan_mcp.core.spending.policy import READ_ONLY_SETTING, SpendingPolicy
from wan_mcp.core.spending.prices import MICRO, Quote, format_usd
from wan_mcp.errors import ErrorCode, WanError

__all__ = ["confirmation_required", "not_confirmed", "over_budget", "read_only", "spend_question", "token_refused"]

_MODES = {"t2v": "text-to-video", "i2v": "image-to-video", "r2v": "reference-to-video"}


def read_only(tool: str, why: str) -> WanError:
    return WanError(
        ErrorCode.READ_ONLY,
        f"this server is read-only ({READ_ONLY_SETTING}=1) and {tool} {why}, so nothing was sent",
        hint="generate_video(dry_run=true) still shows the exact request and its quote, and get_usage the "
        f"spend; to make videos, the user unsets {READ_ONLY_SETTING} in the server's settings",
    )


def over_budget(limit: SpendLimit, spent: int, quote: Quote) -> WanError:
    setting = SpendingPolicy.setting(limit.name)
    scope = "today" if limit.name == "daily" else "by this server session"
    later = (
        "wait until tomorrow (midnight, server time)"
        if limit.name == "daily"
        else "restart the server for a new session"
    )
    return WanError(
        ErrorCode.BUDGET_EXCEEDED,
        f"the {limit.name} budget would be exceeded: {format_usd(spent)} of {format_usd(limit.limit_micro)} "
        f"already spent {scope} (estimate), and this call costs about {format_usd(quote.micro_usd)} "
        f"({quote.basis}); nothing was submitted or uploaded",
        hint=f"tell the user; they can raise {setting} (now {limit.limit_micro / MICRO:g}) in the server's "
        f"settings, or {later}; a cheaper request (720p, a shorter duration) costs less",
        extra={
            "budget": limit.name,
            "limit_usd": limit.limit_micro / MICRO,
            "spent_usd": spent / MICRO,
            "quote": quote.as_dict(),
            "setting": setting,
        },
    )


def spend_question(v: ValidatedRequest, quote: Quote, fingerprint: str) -> SpendQuestion:
    """What the user is asked: the cost and the key parameters; ``key`` pins the request and price."""
    req = v.request
    prompt = (req.prompt or "")[:160] + ("..." if req.prompt and len(req.prompt) > 160 else "")
    message = (
        f"Spend about {format_usd(quote.micro_usd)} ({quote.credits} credits, estimate) on a "
        f"{req.duration} s {req.resolution} {_MODES[v.mode]} video with {req.model}?"
        + (f' Prompt: "{prompt}"' if prompt else "")
    )
    return SpendQuestion(message=message, key=f"{fingerprint}:{quote.micro_usd}")


def not_confirmed(decision: Decision, quote: Quote) -> WanError:
    how = "declined" if decision is Decision.DECLINE else "dismissed"
    return WanError(
        ErrorCode.NOT_CONFIRMED,
        f"the user {how} spending about {format_usd(quote.micro_usd)} on this video; nothing was sent",
        hint="do not retry unless the user asks; offer a cheaper request (720p, a shorter duration) or "
        "generate_video(dry_run=true) to show what it would cost",
        extra={"quote": quote.as_dict()},
    )


def confirmation_required(quote: Quote, *, threshold_micro: int, token: str, expires_iso: str | None) -> WanError:
    """The host cannot ask the user: the quote, and a single-use token for this exact request."""
    return WanError(
        ErrorCode.CONFIRMATION_REQUIRED,
        f"this call costs about {format_usd(quote.micro_usd)} ({quote.basis}), above the "
        f"{format_usd(threshold_micro)} that needs the user's approval; nothing was sent",
        field="confirm_token",
        hint=f"show the user this cost and ask; only if they agree, call generate_video again with the SAME "
        f"arguments plus confirm_token='{token}' (valid {CONFIRM_TOKEN_TTL_SECONDS / 60:g} min, once)",
        extra={"quote": quote.as_dict(), "confirm_token": token, "confirm_token_expires_at": expires_iso},
    )


def token_refused(reason: Literal["unknown", "expired", "used", "other_request"]) -> WanError:
    why = {
        "unknown": "is not one this server issued",
        "expired": "has expired",
        "used": "was already used",
        "other_request": "was issued for a different request (a token confirms only the exact call it was quoted for)",
    }[reason]
    return WanError(
        ErrorCode.CONFIRMATION_REQUIRED,
        f"this confirm_token {why}; nothing was sent",
        field="confirm_token",
        hint="call generate_video again without confirm_token to get a fresh quote and token, and ask the user",
    )
