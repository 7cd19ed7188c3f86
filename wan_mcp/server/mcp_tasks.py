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

A client that would rather not poll sends ``subscriptions/listen`` with ``taskIds``: each followed
task's state is pushed as ``notifications/tasks`` on every change, the last one carrying the result
(:class:`TaskListenHandler`, which the SDK's handler becomes through ``registration.serve_listen``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver.server import require_client_extension
from mcp.server.subscriptions import ListenHandler, SubscriptionBus, _honored_subset
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import (
    SUBSCRIPTION_ID_META_KEY,
    ResourceUpdated,
    ServerEvent,
    event_matches,
    event_to_notification,
)
from mcp.types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    CallToolRequestParams,
    CallToolResult,
    Notification,
    RequestParams,
    SubscriptionFilter,
    SubscriptionsAcknowledgedNotification,
    SubscriptionsAcknowledgedNotificationParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from wan_mcp.core.journal import TERMINAL, TaskRecord
from wan_mcp.core.tenancy import Tenant
from wan_mcp.core.views import TaskView, iso
from wan_mcp.errors import ErrorCode, WanError
from wan_mcp.server.tools import AS_TASK, AppState, acting, error_result, status_result

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
#: The resource of a task (``resources.py``): a listen stream subscribed to one hears its every change.
TASK_URI: Final = "task://"
#: Task handles one subscriptions/listen stream may follow.
_MAX_FOLLOWED: Final = 100
#: Each wait of a followed task (its status is sent on every change meanwhile, and again after).
FOLLOW_WAIT: Final = 30.0


@contextmanager
def _as_task() -> Iterator[None]:
    token = AS_TASK.set(True)
    try:
        yield
    finally:
        AS_TASK.reset(token)


@dataclass(frozen=True)
class Followed:
    state: AppState
    tenant: Tenant
    handle: str
    task_id: str


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
        return await self._detail(state, tenant, params.task_id, task_id)

    async def _detail(
        self, state: AppState, tenant: Tenant, handle: str, task_id: str, *, wait: float = 0, on_update: Any = None
    ) -> dict[str, Any]:
        """The task as ``tasks/get`` (and ``notifications/tasks``) show it; ``wait``: first wait that long
        for it to finish (``on_update`` hears each change on the way)."""
        record = await state.service.journal.get(task_id, tenant=tenant.id)
        if record is None:
            raise _not_found()
        note = self._cancelled.get((tenant.id, task_id))
        if note is not None:
            return self._task(handle, record, "cancelled", note, None)
        try:
            answer = await state.service.status(
                task_id, wait_seconds=wait, download=True, on_update=on_update, tenant=tenant
            )
        except WanError as err:
            err = err.with_task(task_id)
            if err.code in _PASSING:
                return self._task(handle, record, "working", err.render(), None)
            done = error_result(err).model_dump(by_alias=True, mode="json", exclude_none=True)
            return {**self._task(handle, record, "completed", err.render(), None), "result": done}
        view = answer.view
        fresh = await state.service.journal.get(task_id, tenant=tenant.id) or record
        if view.status in TERMINAL:
            done = status_result(answer).model_dump(by_alias=True, mode="json", exclude_none=True)
            return {**self._task(handle, fresh, "completed", view.summary(), None), "result": done}
        return self._task(handle, fresh, "working", view.summary(), view.next_poll_seconds)

    async def honour(self, ctx: ServerRequestContext[Any, Any], handles: list[str]) -> list[Followed]:
        """The task handles of a ``subscriptions/listen`` request that this principal may follow."""
        require_client_extension(ctx, EXTENSION)  # -32021 for a client that did not declare it
        state, tenant = self._caller(ctx, count=None)
        keys = await self._keys(state)
        return [
            Followed(state, tenant, h, task_id) for h in handles[:_MAX_FOLLOWED] if (task_id := keys.read(tenant.id, h))
        ]

    async def watchable(self, ctx: ServerRequestContext[Any, Any], uris: list[str]) -> list[Followed]:
        """The ``task://`` resources of a listen request that are this principal's tasks (others never fire)."""
        state, tenant = self._caller(ctx, count=None)
        found = []
        for uri in uris[:_MAX_FOLLOWED]:
            task_id = uri.removeprefix(TASK_URI)
            if await state.service.journal.get(task_id, tenant=tenant.id) is not None:
                found.append(Followed(state, tenant, uri, task_id))
        return found

    async def follow(self, followed: list[tuple[Followed, Callable[[dict[str, Any]], Awaitable[None]]]]) -> None:
        """Hand each followed task's state (as ``tasks/get`` shows it) to its sender on every change, until
        every one is terminal."""
        async with anyio.create_task_group() as tg:
            for one, send in followed:
                tg.start_soon(self._follow_one, one.state, one.tenant, one.handle, one.task_id, send)

    async def _follow_one(
        self,
        state: AppState,
        tenant: Tenant,
        handle: str,
        task_id: str,
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        last: tuple[str, str] | None = None

        async def tell(detail: dict[str, Any]) -> None:
            nonlocal last
            key = (detail["status"], detail.get("statusMessage", ""))
            if key != last:  # a change, not a heartbeat
                last = key
                await send(detail)

        async def changed(rec: TaskRecord) -> None:
            view = TaskView.from_record(rec)
            await tell(self._task(handle, rec, "working", view.summary(), None))

        detail = await self._detail(state, tenant, handle, task_id)
        await tell(detail)
        while detail["status"] == "working":
            detail = await self._detail(state, tenant, handle, task_id, wait=FOLLOW_WAIT, on_update=changed)
            await tell(detail)

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
        return acting(state, getattr(ctx.request, "headers", None), count=count)

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


class TaskStatusNotification(Notification[dict[str, Any], Literal["notifications/tasks"]]):
    """``notifications/tasks``: a followed task's full state, as ``tasks/get`` would answer it then."""

    method: Literal["notifications/tasks"] = "notifications/tasks"
    params: dict[str, Any]


class TaskListenHandler(ListenHandler):
    """The SDK's ``subscriptions/listen`` handler, plus tasks that are followed, not just announced.

    ``taskIds`` (the tasks extension): the principal's handles are echoed in the acknowledgement and
    each followed task's state is pushed on every change (``notifications/tasks``) until it is
    terminal. ``task://`` resource subscriptions: the server follows those tasks too (no client has
    to poll for anything to change) and sends ``notifications/resources/updated`` on each change.
    Other kinds are served as the SDK serves them; a stream that asked for tasks only ends once every
    followed task has. A request with neither is the SDK's own.
    """

    def __init__(self, bus: SubscriptionBus, tasks: TasksExtension) -> None:
        super().__init__(bus)
        self._tasks = tasks

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams
    ) -> SubscriptionsListenResult:
        wanted = (params.notifications.model_extra or {}).get("taskIds")
        task_uris = [u for u in params.notifications.resource_subscriptions or () if u.startswith(TASK_URI)]
        if wanted is None and not task_uris:
            return await super().__call__(ctx, params)
        if wanted is not None and (not isinstance(wanted, list) or not all(isinstance(h, str) for h in wanted)):
            raise MCPError(INVALID_PARAMS, "notifications.taskIds must be a list of task ids from generate_video")
        subscription_id = ctx.request_id
        if subscription_id is None:
            raise MCPError(INVALID_REQUEST, "subscriptions/listen requires a request id")
        handles = [] if wanted is None else await self._tasks.honour(ctx, wanted)
        resources = await self._tasks.watchable(ctx, task_uris)
        others = _honored_subset(params.notifications)
        extra = {} if wanted is None else {"taskIds": [f.handle for f in handles]}
        honoured = SubscriptionFilter.model_validate({**others.model_dump(by_alias=True, exclude_none=True), **extra})
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: subscription_id}
        uris = frozenset(others.resource_subscriptions or ())
        # A stream that asked for tasks (as handles or task:// resources) and nothing else ends with them.
        rest = others.model_copy(
            update={"resource_subscriptions": [u for u in uris if not u.startswith(TASK_URI)] or None}
        )
        events, inbox = anyio.create_memory_object_stream[ServerEvent](_MAX_FOLLOWED * 10)

        def deliver(event: ServerEvent) -> None:
            if event_matches(others, uris, event):
                with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
                    events.send_nowait(event)

        async def notify(note: Any) -> None:
            await ctx.session.send_notification(cast(Any, note), related_request_id=subscription_id)

        async def task_state(detail: dict[str, Any]) -> None:
            await notify(TaskStatusNotification(params={**detail, "_meta": meta}))

        def resource_updated(uri: str) -> Callable[[dict[str, Any]], Awaitable[None]]:
            async def send(_detail: dict[str, Any]) -> None:
                await notify(event_to_notification(ResourceUpdated(uri=uri), meta))

            return send

        followed = [(f, task_state) for f in handles] + [(f, resource_updated(f.handle)) for f in resources]
        unsubscribe = self._bus.subscribe(deliver)
        try:
            await ctx.session.send_notification(
                SubscriptionsAcknowledgedNotification(
                    params=SubscriptionsAcknowledgedNotificationParams(notifications=honoured, _meta=meta)
                ),
                related_request_id=subscription_id,
            )
            async with anyio.create_task_group() as tg:

                async def forward() -> None:
                    async for event in inbox:
                        await ctx.session.send_notification(
                            event_to_notification(event, meta), related_request_id=subscription_id
                        )

                tg.start_soon(forward)
                await self._tasks.follow(followed)
                if rest == SubscriptionFilter():
                    tg.cancel_scope.cancel()  # tasks only, and every one is terminal: the stream ends
        finally:
            unsubscribe()
            events.close()
            inbox.close()
        return SubscriptionsListenResult(_meta=meta)
