"""Asking the user before a big spend: the question, the answer, and the fallback token.

Two paths, one rule ("a call quoted above the threshold is confirmed by the user first"):

* The host can ask (MCP elicitation): the server layer passes a :data:`Confirmer` that shows
  the question and returns the user's :class:`Decision`. Decline or cancel = nothing spent.
* The host cannot (Claude Desktop and claude.ai declare no elicitation): the call returns the
  quote and a short-lived, single-use ``confirm_token`` bound to the exact validated request;
  repeating the call with it submits. Only the token's SHA-256 is stored (in the journal, so
  every process sharing it agrees that a token was used), and it is consumed in the same
  transaction that reserves the spend, so two calls cannot both use it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "CONFIRM_TOKEN_TTL_SECONDS",
    "Confirmer",
    "Decision",
    "SpendQuestion",
    "new_confirm_token",
    "token_digest",
]

#: How long a confirm token stays valid: long enough for a person to read and answer.
CONFIRM_TOKEN_TTL_SECONDS: Final = 600.0
_PREFIX: Final = "wct_"


class Decision(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    CANCEL = "cancel"


@dataclass(frozen=True)
class SpendQuestion:
    """What the user is asked to approve; ``key`` identifies the exact request and price."""

    message: str
    key: str


#: Shows a question to the user and returns their decision. May raise to end the call (a
#: host that answers asynchronously, MCP 2026-07-28 "input required"): the call is retried.
Confirmer = Callable[[SpendQuestion], Awaitable[Decision]]


def new_confirm_token() -> str:
    return _PREFIX + secrets.token_urlsafe(24)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
