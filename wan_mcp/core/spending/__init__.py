"""Spending you can bound: prices and quotes, the user's budgets, and confirmation of big spends.

:mod:`.prices` (the table and a request's quote, in exact micro-dollars), :mod:`.policy`
(budgets, threshold, read-only; what "today" and "this session" mean) and
:mod:`.confirmation` (asking the user, or the single-use token when the host cannot ask).
The reservation itself is the journal's (:meth:`TaskJournal.reserve`): budgets hold only if
the check and the write are one transaction.
"""

from wan_mcp.core.spending.confirmation import (
    CONFIRM_TOKEN_TTL_SECONDS,
    Confirmer,
    Decision,
    SpendQuestion,
    new_confirm_token,
    token_digest,
)
from wan_mcp.core.spending.policy import Spend, SpendingPolicy, day_start
from wan_mcp.core.spending.prices import MICRO, PriceTable, Quote, format_usd

__all__ = [
    "CONFIRM_TOKEN_TTL_SECONDS",
    "MICRO",
    "Confirmer",
    "Decision",
    "PriceTable",
    "Quote",
    "Spend",
    "SpendQuestion",
    "SpendingPolicy",
    "day_start",
    "format_usd",
    "new_confirm_token",
    "token_digest",
]
