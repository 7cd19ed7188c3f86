"""A client side of the MCP Tasks extension (SEP-2663) for the tests: what Claude Code does.

The SDK's client has no tasks runtime either, only the plumbing: a ``ClientExtension`` that
declares ``io.modelcontextprotocol/tasks`` on every request and claims the ``resultType: "task"``
shape of ``tools/call``; its resolver polls ``tasks/get`` (at the server's ``pollIntervalMs``) until
the task is terminal and returns the inlined tool result, so ``client.call_tool`` reads as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import anyio
from mcp.client.extension import ClaimContext, ClientExtension, NotificationBinding, ResultClaim
from mcp.client.session import ClientSession
from mcp.types import (
    CallToolResult,
    NotificationParams,
    Request,
    RequestParams,
    Result,
    SubscriptionFilter,
    SubscriptionsListenRequestParams,
)
from pydantic import ConfigDict, TypeAdapter

EXTENSION = "io.modelcontextprotocol/tasks"


class CreateTaskResult(Result):
    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"]
    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None


class TaskIdParams(RequestParams):
    task_id: str


class UpdateParams(TaskIdParams):
    input_responses: dict[str, Any]


class GetTask(Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams
    name_param = "taskId"  # SEP-2663: Mcp-Name carries the task id (balancers route on it)


class CancelTask(Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams
    name_param = "taskId"


class UpdateTask(Request[UpdateParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    params: UpdateParams
    name_param = "taskId"


class Listen(Request[SubscriptionsListenRequestParams, Literal["subscriptions/listen"]]):
    method: Literal["subscriptions/listen"] = "subscriptions/listen"
    params: SubscriptionsListenRequestParams


class TaskNotice(NotificationParams):
    model_config = ConfigDict(extra="allow")


ANY: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


async def listen_tasks(session: ClientSession, handles: list[str], **kinds: Any) -> dict[str, Any]:
    """``subscriptions/listen`` for these task handles; returns when the server ends the stream."""
    wanted = SubscriptionFilter.model_validate({"taskIds": handles, **kinds})
    return await session.send_request(Listen(params=SubscriptionsListenRequestParams(notifications=wanted)), ANY)


async def get_task(session: ClientSession, task_id: str) -> dict[str, Any]:
    return await session.send_request(GetTask(params=TaskIdParams(task_id=task_id)), ANY)


async def cancel_task(session: ClientSession, task_id: str) -> dict[str, Any]:
    return await session.send_request(CancelTask(params=TaskIdParams(task_id=task_id)), ANY)


async def update_task(session: ClientSession, task_id: str, responses: dict[str, Any]) -> dict[str, Any]:
    return await session.send_request(UpdateTask(params=UpdateParams(task_id=task_id, input_responses=responses)), ANY)


class TasksClient(ClientExtension):
    """Declares the extension; resolves each task by polling. ``created`` and ``polls`` record what happened."""

    identifier: ClassVar[str] = EXTENSION

    def __init__(self, *, max_polls: int = 600) -> None:
        self.created: list[CreateTaskResult] = []
        self.notices: list[dict[str, Any]] = []
        self.polls: list[dict[str, Any]] = []
        self._max_polls = max_polls

    def notifications(self) -> Sequence[NotificationBinding[Any]]:
        return [NotificationBinding(method="notifications/tasks", params_type=TaskNotice, handler=self._noticed)]

    async def _noticed(self, params: TaskNotice) -> None:
        self.notices.append(params.model_dump(by_alias=True, exclude_none=True))

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=self._resolve)]

    async def _resolve(self, created: CreateTaskResult, ctx: ClaimContext) -> CallToolResult:
        self.created.append(created)
        for _ in range(self._max_polls):
            got = await get_task(ctx.session, created.task_id)
            self.polls.append(got)
            if got["status"] == "completed":
                return CallToolResult.model_validate(got["result"])
            if got["status"] in ("failed", "cancelled"):
                raise AssertionError(f"task ended {got['status']}: {got}")
            await anyio.sleep(min(got.get("pollIntervalMs", 1000), 2000) / 1000)
        raise AssertionError(f"task {created.task_id} still running after {self._max_polls} polls")
