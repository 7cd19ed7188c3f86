"""Background jobs for hosts that run MCP Tasks (extension ``io.modelcontextprotocol/tasks``, SEP-2663).

A video takes one to five minutes; an agent that waits holds its turn the whole time. A client that
declares the tasks extension on a 2026-07-28 ``tools/call`` of ``generate_video`` gets, instead of
the usual answer, a task handle as soon as the job is journaled and submitted (``resultType:
"task"``); it then polls ``tasks/get``, which answers from the journal and the tracker and, once the
job is done, carries the final tool result (the same one ``get_task_status`` gives: file, poster,
link). Everything else, and every client that does not declare the extension, is unchanged.

The SDK (2.3) has no tasks runtime, only the plumbing used here (``Extension``, ``MethodBinding``,
``intercept_tool_call``, and the runner passing an extension ``resultType`` through); this module is
the one place to swap for the official implementation when it ships.

Task ids are stateless handles: the gateway task id with an HMAC over (tenant, task id) under a key
kept in the journal (``server_key``), so they are unguessable, answer only the principal that made
them, survive restarts, and any replica on a shared journal resolves any of them. The journal row,
written before the gateway call returns, is what a handle resolves to, so ``tasks/get`` works from
the moment the handle is returned (the SEP's durability rule).

Not here yet: ``notifications/tasks`` pushes (the SDK's ``subscriptions/listen`` handler knows no
``taskIds`` filter); clients poll ``tasks/get`` at ``pollIntervalMs``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver.server import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolRequestParams, CallToolResult, RequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from wan_mcp.core.journal import TERMINAL, TaskRecord
from wan_mcp.core.tenancy import LOCAL, Tenant
from wan_mcp.core.views import iso
from wan_mcp.errors import ErrorCode, WanError
from wan_mcp.server.tools import AS_TASK, AppState, error_result, status_result

__all__ = ["EXTENSION", "TasksExtension"]

EXTENSION: Final = "io.modelcontextprotocol/tasks"
#: The journal's ``server_key`` name for the handles' HMAC key.
HANDLE_KEY: Final = "task-handles"
#: The gateway keeps a task id about 24 hours; so long does a handle stay useful.
TTL_MS: Final = 24 * 3600 * 1000
_PREFIX: Final = "wt1"
_MAX_HANDLE: Final = 512
#: Cancelled handles remembered per process (bounded; cancellation is advisory, see ``_cancel``).
_MAX_CANCELLED: Final = 10_000
#: Errors after which polling again may help: the task stays ``working`` with the reason.
_PASSING: Final = frozenset(
    {ErrorCode.NETWORK, ErrorCode.TIMEOUT, ErrorCode.UPSTREAM_UNAVAILABLE, ErrorCode.RATE_LIMITED, ErrorCode.JOURNAL}
)
_MODERN: Final = frozenset(MODERN_PROTOCOL_VERSIONS)


@contextmanager
def _as_task() -> Iterator[None]:
    token = AS_TASK.set(True)
    try:
        yield
    finally:
        AS_TASK.reset(token)


class TaskIdParams(RequestParams):
    task_id: str


class UpdateTaskParams(TaskIdParams):
    input_responses: dict[str, Any] | None = None


class Handles:
    """``wt1.<base64url task id>.<base64url HMAC-SHA256(key, tenant NUL task id)[:18]>``."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, tenant: str, task_id: str) -> str:
        digest = hmac.new(self._key, f"{tenant}\0{task_id}".encode(), hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode()

    def make(self, tenant: str, task_id: str) -> str:
        body = base64.urlsafe_b64encode(task_id.encode()).decode().rstrip("=")
        return f"{_PREFIX}.{body}.{self._mac(tenant, task_id)}"

    def read(self, tenant: str, handle: str) -> str | None:
        """The task id ``handle`` names for ``tenant``; ``None`` if it is not one this server gave that tenant."""
        parts = handle.split(".")
        if len(handle) > _MAX_HANDLE or len(parts) != 3 or parts[0] != _PREFIX:
            return None
        try:
            task_id = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()
        except (binascii.Error, ValueError):
            return None
        return task_id if hmac.compare_digest(parts[2], self._mac(tenant, task_id)) else None


def _not_found() -> MCPError:
    # Foreign, forged, malformed and unknown handles all read alike (nothing to tell them apart by).
    return MCPError(INVALID_PARAMS, "Failed to retrieve task: Task not found")


def _declared(ctx: ServerRequestContext[Any, Any]) -> bool:
    """A 2026-07-28 request whose client declared the extension (the only case a task may be returned)."""
    if ctx.protocol_version not in _MODERN:
        return False
    capabilities = ctx.session.client_capabilities
    return bool(capabilities and capabilities.extensions and EXTENSION in capabilities.extensions)


def _iso_ms(ts: float) -> str:
    return iso(ts) or iso(time.time()) or ""


class TasksExtension(Extension):
    """``generate_video`` as a background job, and ``tasks/get|update|cancel`` (see the module doc)."""

    identifier = EXTENSION

    def __init__(self) -> None:
        self._handles: Handles | None = None
        self._cancelled: OrderedDict[tuple[str, str], str] = OrderedDict()

    def methods(self) -> list[MethodBinding]:
        return [
            MethodBinding("tasks/get", TaskIdParams, self._get, _MODERN),
            MethodBinding("tasks/update", UpdateTaskParams, self._update, _MODERN),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel, _MODERN),
        ]

    # --- creation ------------------------------------------------------------------------------

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if params.name != "generate_video" or not _declared(ctx):
            return await call_next(ctx)
        with _as_task():
            result = await call_next(ctx)
        # Refusals, quotes, questions for the user and jobs already finished stay plain results: a
        # task stands only for a job still to wait for.
        if not isinstance(result, CallToolResult) or result.is_error:
            return result
        data = result.structured_content or {}
        task_id, status = data.get("task_id"), data.get("status")
        if not isinstance(task_id, str) or not isinstance(status, str) or status in TERMINAL or "dry_run" in data:
            return result
        state, tenant = self._caller(ctx, count=None)
        record = await state.service.journal.get(task_id, tenant=tenant.id)
        if record is None:  # (journaled before the tool returned; a None here is a bug, not a task)
            return result
        handle = (await self._keys(state)).make(tenant.id, task_id)
        message = " ".join(getattr(c, "text", "") for c in result.content).strip()
        poll = data.get("next_poll_seconds")
        return {
            "resultType": "task",
            **self._task(handle, record, "working", message, poll if isinstance(poll, int) else None),
        }

    # --- the methods ---------------------------------------------------------------------------

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        state, tenant, task_id = await self._open(ctx, params.task_id, count="get_task_status")
        record = await state.service.journal.get(task_id, tenant=tenant.id)
        if record is None:
            raise _not_found()
        note = self._cancelled.get((tenant.id, task_id))
        if note is not None:
            return self._task(params.task_id, record, "cancelled", note, None)
        try:
            answer = await state.service.status(task_id, wait_seconds=0, download=True, tenant=tenant)
        except WanError as err:
            err = err.with_task(task_id)
            if err.code in _PASSING:
                return self._task(params.task_id, record, "working", err.render(), None)
            done = error_result(err).model_dump(by_alias=True, mode="json", exclude_none=True)
            return {**self._task(params.task_id, record, "completed", err.render(), None), "result": done}
        view = answer.view
        fresh = await state.service.journal.get(task_id, tenant=tenant.id) or record
        if view.status in TERMINAL:
            done = status_result(answer).model_dump(by_alias=True, mode="json", exclude_none=True)
            return {**self._task(params.task_id, fresh, "completed", view.summary(), None), "result": done}
        return self._task(params.task_id, fresh, "working", view.summary(), view.next_poll_seconds)

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams) -> dict[str, Any]:
        await self._open(ctx, params.task_id, count="get_task_status")
        return {}  # this server never asks for input inside a task: any response is for no outstanding key

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        state, tenant, task_id = await self._open(ctx, params.task_id, count="get_task_status")
        if await state.service.journal.get(task_id, tenant=tenant.id) is None:
            raise _not_found()
        self._cancelled[(tenant.id, task_id)] = (
            f"Tracking stopped. The gateway cannot cancel a video job: {task_id} is still being made and "
            f"charged, and get_task_status(task_id='{task_id}') fetches it later."
        )
        while len(self._cancelled) > _MAX_CANCELLED:
            self._cancelled.popitem(last=False)
        return {}

    # --- plumbing ------------------------------------------------------------------------------

    @staticmethod
    def _caller(ctx: ServerRequestContext[Any, Any], *, count: str | None) -> tuple[AppState, Tenant]:
        """The app state and tenant of this request (``count``: the tool whose rate the call counts against)."""
        state = ctx.lifespan_context
        assert isinstance(state, AppState)
        if state.principals is None:
            return state, LOCAL
        tenant = state.principals.tenant(get_access_token(), getattr(ctx.request, "headers", None))
        if count is not None:
            state.principals.admit(tenant, count)
        return state, tenant

    async def _keys(self, state: AppState) -> Handles:
        if self._handles is None:
            self._handles = Handles(await state.service.journal.server_key(HANDLE_KEY))
        return self._handles

    async def _open(
        self, ctx: ServerRequestContext[Any, Any], handle: str, *, count: str
    ) -> tuple[AppState, Tenant, str]:
        require_client_extension(ctx, EXTENSION)  # -32021 for a client that did not declare it
        try:
            state, tenant = self._caller(ctx, count=count)
        except WanError as err:
            raise MCPError(INVALID_PARAMS, err.render()) from None
        task_id = (await self._keys(state)).read(tenant.id, handle)
        if task_id is None:
            raise _not_found()
        return state, tenant, task_id

    @staticmethod
    def _task(handle: str, record: TaskRecord, status: str, message: str, poll_seconds: int | None) -> dict[str, Any]:
        task: dict[str, Any] = {
            "taskId": handle,
            "status": status,
            "statusMessage": message,
            "createdAt": _iso_ms(record.created_at),
            "lastUpdatedAt": _iso_ms(record.updated_at),
            "ttlMs": TTL_MS,
        }
        if poll_seconds is not None:
            task["pollIntervalMs"] = max(1, poll_seconds) * 1000
        return task
