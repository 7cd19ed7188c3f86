"""Asking the user to approve a spend through MCP elicitation, on both protocol eras.

Why by hand rather than the SDK's ``Resolve``/``Elicit``: our tools take the raw argument
object (see :mod:`.registration`), and whether to ask at all depends on the service's own
checks (a duplicate costs nothing, an over-budget call is refused without asking, a
confirm token already carries consent). So the service calls a :data:`Confirmer` at the
right moment, and this module answers it:

* 2025-era connections with a back channel: a plain ``elicitation/create`` mid-call.
* 2026-07-28 connections: no server-initiated requests, so the first round ends the call
  with an ``InputRequiredResult`` (raised as :class:`InputRequired` and returned by the tool);
  the client asks the user and retries the same call with ``input_responses``. The SDK seals
  ``request_state`` (we put the question's digest in it), so an answer counts only for the
  exact request and price it was asked about.

Clients without form elicitation (claude.ai, Claude Desktop) get ``None``: the service then
falls back to the single-use ``confirm_token``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from mcp.server.elicitation import AcceptedElicitation, DeclinedElicitation, render_elicitation_schema
from mcp.server.mcpserver import Context
from mcp.types import ElicitRequest, ElicitRequestFormParams, ElicitResult, InputRequiredResult
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field

from wan_mcp.core.spending import Confirmer, Decision, SpendQuestion

__all__ = ["InputRequired", "confirmer_for"]

#: The key of our one question in ``input_requests`` / ``input_responses``.
ANSWER_KEY: Final = "wan_confirm_spend"
_MODERN: Final = "2026-07-28"
_STATE_PREFIX: Final = "wan-spend:"


class ApproveSpend(BaseModel):
    """The form the user sees: one yes/no (elicitation schemas must be flat primitives)."""

    approve: bool = Field(description="Approve this spend and start the video?")


class InputRequired(Exception):
    """The call must end now with this result; the client asks the user and retries it."""

    def __init__(self, result: InputRequiredResult) -> None:
        super().__init__("input required")
        self.result = result


def _modern(ctx: Context[Any, Any]) -> bool:
    version = ctx.protocol_version
    return version is not None and is_version_at_least(version, _MODERN)


def _declares_form_elicitation(ctx: Context[Any, Any]) -> bool:
    caps = ctx.client_capabilities
    elicitation = caps.elicitation if caps is not None else None
    # A bare ``elicitation: {}`` (the shape before modes existed) means form; url-only does not.
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def confirmer_for(ctx: Context[Any, Any]) -> Confirmer | None:
    """How to ask this client's user, or None when it cannot be asked (token fallback)."""
    if not _declares_form_elicitation(ctx):
        return None
    if _modern(ctx):
        return _InputRequiredConfirmer(ctx)
    if not ctx.session.can_send_request:
        return None  # stateless legacy HTTP: no back channel to ask on
    return _BackChannelConfirmer(ctx)


def _state_for(question: SpendQuestion) -> str:
    return _STATE_PREFIX + hashlib.sha256(question.key.encode()).hexdigest()


class _InputRequiredConfirmer:
    def __init__(self, ctx: Context[Any, Any]) -> None:
        self._ctx = ctx

    async def __call__(self, question: SpendQuestion) -> Decision:
        answer = (self._ctx.input_responses or {}).get(ANSWER_KEY)
        if isinstance(answer, ElicitResult) and self._ctx.request_state == _state_for(question):
            if answer.action == "accept":
                approved = isinstance(answer.content, dict) and answer.content.get("approve") is True
                return Decision.ACCEPT if approved else Decision.DECLINE
            return Decision.DECLINE if answer.action == "decline" else Decision.CANCEL
        # First round, or an answer to another question (the request or its price changed): ask.
        request = ElicitRequest(
            params=ElicitRequestFormParams(
                message=question.message, requested_schema=render_elicitation_schema(ApproveSpend)
            )
        )
        raise InputRequired(
            InputRequiredResult(input_requests={ANSWER_KEY: request}, request_state=_state_for(question))
        )


class _BackChannelConfirmer:
    def __init__(self, ctx: Context[Any, Any]) -> None:
        self._ctx = ctx

    async def __call__(self, question: SpendQuestion) -> Decision:
        result = await self._ctx.elicit(question.message, ApproveSpend)
        if isinstance(result, AcceptedElicitation):
            return Decision.ACCEPT if result.data.approve else Decision.DECLINE
        return Decision.DECLINE if isinstance(result, DeclinedElicitation) else Decision.CANCEL
