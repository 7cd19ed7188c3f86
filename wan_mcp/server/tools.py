"""The six tools: thin adapters between MCP and :mod:`wan_mcp.core.service`.

Each tool receives the raw argument object and validates it with our own rules, so
every mistake comes back as one actionable sentence (field, allowed values, fix)
instead of a pydantic dump, and the published input schema is the compact one from
``core/request.py`` rather than one derived from a Python signature. ``WanError``
becomes ``ToolError`` (the only exception whose text reaches the model).
"""

from __future__ import annotations

import base64
import functools
import math
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, ImageContent, InputRequiredResult, ResourceLink, TextContent, ToolAnnotations
from pydantic import BaseModel

from wan_mcp.config import Settings
from wan_mcp.core.arguments import Problem, ToolArguments
from wan_mcp.core.journal import STATUS_ORDER, TaskRecord
from wan_mcp.core.media.film import MAX_FILM_PARTS
from wan_mcp.core.request import video_request_schema
from wan_mcp.core.service import StatusResult, VideoService
from wan_mcp.core.tenancy import LOCAL, Tenant
from wan_mcp.core.views import PlanView, TaskList, TaskView, UploadView, UsageView
from wan_mcp.errors import WanError
from wan_mcp.server.consent import InputRequired, confirmer_for
from wan_mcp.server.player import UI_META
from wan_mcp.server.principals import Principals
from wan_mcp.server.registration import ToolFn, make_tool
from wan_mcp.server.schemas import output_schema

#: Set (by the MCP Tasks extension, ``mcp_tasks.py``) while a ``generate_video`` call answers with a
#: task handle: the call then returns as soon as the job is submitted, whatever ``wait_seconds`` says.
AS_TASK: ContextVar[bool] = ContextVar("wan_mcp_as_task", default=False)


@dataclass
class AppState:
    """What the lifespan hands every tool call."""

    service: VideoService
    settings: Settings
    #: Who may call over HTTP/SSE and as which tenant (``None`` on stdio: one local user).
    principals: Principals | None = None


def _state(ctx: Context[Any, Any]) -> AppState:
    state = ctx.request_context.lifespan_context
    assert isinstance(state, AppState)
    return state


def caller(ctx: Context[Any, Any], tool: str) -> tuple[AppState, Tenant]:
    """The app state and the tenant this call acts as, its call counted against the tenant's rate."""
    return acting(_state(ctx), ctx.headers, count=tool)


def acting(state: AppState, headers: Mapping[str, str] | None, *, count: str | None) -> tuple[AppState, Tenant]:
    """The tenant a request with these headers acts as (``count``: the tool whose rate it counts against;
    ``None`` for a request already counted). Shared by the tools and the MCP Tasks methods."""
    if state.principals is None:
        return state, LOCAL
    tenant = state.principals.tenant(get_access_token(), headers)
    if count is not None:
        state.principals.admit(tenant, count)
    return state, tenant


class ProgressReporter:
    """Turns task updates into spec-conformant progress notifications.

    ``progress`` must strictly increase, so heartbeats (which keep hosts such as Claude
    Code from timing out) advance by a hundredth while the gateway's percent stands
    still. The SDK drops these when the caller sent no progress token.
    """

    def __init__(self, ctx: Context[Any, Any]) -> None:
        self._ctx = ctx
        self._last = -1.0

    async def update(self, record: TaskRecord) -> None:
        percent = float(record.progress or 0)
        if record.status == "completed":
            percent = 100.0
        value = max(percent, self._last + 0.01)
        if value > 100.0 or (value >= 100.0 and record.status != "completed"):
            value = min(99.99, value)
            if value <= self._last:
                return
        self._last = value
        phase = record.status.replace("_", " ")
        shown = f"{record.progress}%" if record.progress is not None else "waiting"
        await self._ctx.report_progress(round(value, 2), 100.0, f"task {record.id}: {phase} ({shown})")


def _wait(service: VideoService, args: ToolArguments) -> float:
    value = args.take("wait_seconds", "number", None, example="30")
    if value is not None and not math.isfinite(value):
        value = -1
    return service.clamp_wait(value, 0.0)


def _result(text: str, view: BaseModel, extra: list[Any] | None = None) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text), *(extra or [])],
        structured_content=view.model_dump(mode="json", exclude_none=True),
    )


def error_result(err: WanError) -> CallToolResult:
    """An error the agent can act on, in the text AND the structured content.

    Some hosts (Claude Code, Codex) show the model only ``structuredContent`` when present, so
    the field, the allowed values, the task id and the next step are mirrored there.
    """
    error = err.to_dict()
    return CallToolResult(
        content=[TextContent(type="text", text=err.render())],
        structured_content={**err.extra, "error": error, "next": err.hint or "fix the call as the message says"},
        is_error=True,
    )


def speaks_wan_errors(fn: ToolFn) -> ToolFn:
    """The one ``WanError`` -> error result translation, shared by the tools."""

    @functools.wraps(fn)
    async def wrapper(arguments: dict[str, Any], ctx: Context[Any, Any]) -> CallToolResult | InputRequiredResult:
        try:
            return await fn(arguments, ctx)
        except WanError as err:
            return error_result(err)
        except InputRequired as ask:  # MCP 2026-07-28: the client asks the user, then retries the call
            return ask.result

    return wrapper


# --- the tools ---------------------------------------------------------------------------


@speaks_wan_errors
async def generate_video(arguments: dict[str, Any], ctx: Context[Any, Any]) -> CallToolResult:
    state, tenant = caller(ctx, "generate_video")
    args = ToolArguments("generate_video", arguments, VideoService.TOOL_ARGUMENTS)
    wait = _wait(state.service, args)
    if AS_TASK.get():  # a background job: answer with its handle once submitted
        wait = 0.0
    dry_run = args.take("dry_run", "boolean", False)
    confirm_token = args.take("confirm_token", "string")
    args.finish(rest_is_checked=True)  # the request fields are parse_video_request's to check
    view = await state.service.generate(
        args.rest(),
        wait_seconds=wait,
        on_update=ProgressReporter(ctx).update,
        dry_run=bool(dry_run),
        confirm_token=confirm_token,
        confirm=confirmer_for(ctx),
        tenant=tenant,
    )
    if isinstance(view, PlanView):
        return _result(view.summary(), view)
    return _result(view.summary(), view, _file_links(view))


@speaks_wan_errors
async def get_task_status(arguments: dict[str, Any], ctx: Context[Any, Any]) -> CallToolResult:
    state, tenant = caller(ctx, "get_task_status")
    args = ToolArguments("get_task_status", arguments, ("task_id", "wait_seconds", "download"))
    task_id = args.take("task_id", "string")
    wait = _wait(state.service, args)
    download = args.take("download", "boolean", True)
    if task_id is None:
        args.add(Problem("task_id", "task_id is required", "pass the task_id from generate_video, or call list_tasks"))
    args.finish()
    result = await state.service.status(
        task_id, wait_seconds=wait, download=bool(download), on_update=ProgressReporter(ctx).update, tenant=tenant
    )
    return status_result(result)


@speaks_wan_errors
async def upload_image(arguments: dict[str, Any], ctx: Context[Any, Any]) -> CallToolResult:
    state, tenant = caller(ctx, "upload_image")
    args = ToolArguments("upload_image", arguments, ("path", "data"))
    path = args.take("path", "string")
    data = args.take("data", "string")
    args.finish()
    view = await state.service.upload_image(path=path, data=data, tenant=tenant)
    return _result(view.summary(), view)


@speaks_wan_errors
async def list_tasks(arguments: dict[str, Any], ctx: Context[Any, Any]) -> CallToolResult:
    state, tenant = caller(ctx, "list_tasks")
    args = ToolArguments("list_tasks", arguments, ("status", "limit"))
    status = args.take("status", "string")
    limit = args.take("limit", "integer", 20, example="20")
    args.finish()
    view = await state.service.list_tasks(status=status, limit=int(limit), tenant=tenant)
    return _result(view.summary(), view)


@speaks_wan_errors
async def join_videos(arguments: dict[str, Any], ctx: Context[Any, Any]) -> CallToolResult:
    state, tenant = caller(ctx, "join_videos")
    args = ToolArguments("join_videos", arguments, ("task_ids", "transition", "crossfade_seconds"))
    task_ids = args.take("task_ids", "array")
    transition = args.take("transition", "string", "cut")
    crossfade = args.take("crossfade_seconds", "number", 0.5, example="0.5")
    if task_ids is None:
        args.add(
            Problem("task_ids", "task_ids is required", "list the completed shots in order, e.g. ['video_A', ...]")
        )
    elif not all(isinstance(t, str) for t in task_ids):
        args.add(Problem("task_ids", "every item must be a task id string", "e.g. ['video_A', 'video_B']"))
    args.finish()

    async def progress(fraction: float) -> None:
        await ctx.report_progress(round(100 * fraction, 2), 100.0, f"joining {len(task_ids)} shots")

    result = await state.service.join(
        task_ids, transition=str(transition), crossfade_seconds=float(crossfade), on_progress=progress, tenant=tenant
    )
    return status_result(result)


@speaks_wan_errors
async def get_usage(arguments: dict[str, Any], ctx: Context[Any, Any]) -> CallToolResult:
    state, tenant = caller(ctx, "get_usage")
    ToolArguments("get_usage", arguments, ()).finish()
    view = await state.service.usage(tenant)
    return _result(view.summary(), view)


def status_result(result: StatusResult) -> CallToolResult:
    """A task (or film) answer: the view, a link to its file, and its poster frame when there is one."""
    extra = _file_links(result.view)
    if result.poster_jpeg:
        extra.append(
            ImageContent(type="image", data=base64.b64encode(result.poster_jpeg).decode(), mime_type="image/jpeg")
        )
    return _result(result.view.summary(), result.view, extra)


def _file_links(view: TaskView) -> list[Any]:
    links: list[Any] = []
    if view.local_path:
        links.append(
            ResourceLink(
                type="resource_link",
                uri=Path(view.local_path).as_uri(),
                name=Path(view.local_path).name,
                mime_type="video/mp4",
            )
        )
    elif view.video_url and view.status == "completed":
        links.append(
            ResourceLink(type="resource_link", uri=view.video_url, name=f"{view.task_id}.mp4", mime_type="video/mp4")
        )
    return links


# --- registration ---------------------------------------------------------------------------

_WAIT = {
    "type": "number",
    "minimum": 0,
    "maximum": 45,
    "description": "Seconds to wait for completion, with progress (0 = return at once).",
}

DESCRIPTIONS = {
    "generate_video": (
        "Start a PAID Wan 2.6 video job (default 1080p, 5 s: about USD 0.75). Mode from fields: prompt only = "
        "text-to-video; image = image-to-video; reference_videos = reference-to-video. Returns task_id and its "
        "quote at once; then poll get_task_status. dry_run=true quotes without sending. Identical calls within "
        "10 min return the same task; budgets and user approval of big spends apply."
    ),
    "get_task_status": (
        "Status of a task (from the local journal, else the gateway). wait_seconds blocks with progress. "
        "When completed, downloads the MP4 once and returns local_path, url (expires 24 h) and a poster frame."
    ),
    "upload_image": (
        "Upload one image for image-to-video; give exactly one of path (local file in an allowed folder) or "
        "data (base64 or data: URL). Fixes format/size for Wan, reuses earlier uploads. Returns url."
    ),
    "list_tasks": "Recent tasks from the local journal, newest first (find a lost task_id here).",
    "get_usage": "Money at a glance: gateway balance, spend today and this session, budgets left, prices.",
    "join_videos": (
        "Join completed tasks' videos in order into one MP4 film (local, free). Longer stories: shot 1, then "
        "generate_video(continue_from=previous task_id) per shot, then join."
    ),
}


def input_schemas(max_wait: float) -> dict[str, dict[str, Any]]:
    wait = {**_WAIT, "maximum": max_wait}
    gen = video_request_schema()
    gen["properties"]["wait_seconds"] = {**wait, "default": 0}
    gen["properties"]["dry_run"] = {"type": "boolean", "description": "Quote only; send nothing."}
    gen["properties"]["confirm_token"] = {"type": "string", "description": "From confirmation_required."}
    return {
        "generate_video": gen,
        "get_task_status": {
            "type": "object",
            "properties": {
                "task_id": {"type": "string", "description": "From generate_video or list_tasks."},
                "wait_seconds": {**wait, "default": 0},
                "download": {"type": "boolean", "default": True, "description": "Save the MP4 locally."},
            },
            "required": ["task_id"],
            "additionalProperties": False,
        },
        "upload_image": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Local image file."},
                "data": {"type": "string", "description": "Base64 or data:image/...;base64,..."},
            },
            "additionalProperties": False,
        },
        "list_tasks": {
            "type": "object",
            "properties": {
                "status": {
                    "type": "string",
                    "enum": list(STATUS_ORDER),
                },
                "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
            },
            "additionalProperties": False,
        },
        "get_usage": {"type": "object", "properties": {}, "additionalProperties": False},
        "join_videos": {
            "type": "object",
            "properties": {
                "task_ids": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": MAX_FILM_PARTS},
                "transition": {"type": "string", "enum": ["cut", "crossfade"], "default": "cut"},
                "crossfade_seconds": {"type": "number", "minimum": 0.1, "maximum": 2, "default": 0.5},
            },
            "required": ["task_ids"],
            "additionalProperties": False,
        },
    }


_TASK_FIELDS = (
    "task_id",
    "status",
    "mode",
    "progress",
    "next_poll_seconds",
    "local_path",
    "video_url",
    "url_expires_at",
    "error",
    "next",
)


def _shallow(schema: dict[str, Any]) -> dict[str, Any]:
    """Nested objects as plain ``{"type": "object"}``: their fields are explained in the text and
    the ``next`` step, and every byte of tools/list sits in the agent's context."""
    props = schema["properties"]
    schema["properties"] = {k: {"type": "object"} if "properties" in v else v for k, v in props.items()}
    return schema


_OUTPUT_SCHEMAS: dict[str, dict[str, Any]] = {
    # A task, or with dry_run a plan: both shapes validate (nothing required, their fields listed).
    "generate_video": {
        "type": "object",
        "properties": {
            **_shallow(output_schema(TaskView, _TASK_FIELDS))["properties"],
            "quote": {"type": "object"},
            "dry_run": {"type": "boolean"},
        },
    },
    "get_task_status": _shallow(output_schema(TaskView, _TASK_FIELDS)),
    "upload_image": output_schema(UploadView, ("url", "sha256", "width", "height", "changes", "cached", "next")),
    "list_tasks": {
        "type": "object",
        "properties": {"tasks": {"type": "array", "items": {"type": "object"}}, "next": {"type": "string"}},
        "required": ["tasks"],
    },
    "get_usage": output_schema(UsageView, ("spent_today_usd", "daily_left_usd", "next")),
    "join_videos": output_schema(TaskView, ("task_id", "local_path", "next")),
}


def build_tools(settings: Settings) -> list[Tool]:
    schemas = input_schemas(settings.max_wait_seconds)
    specs: list[tuple[ToolFn, str, type[BaseModel] | UnionType, ToolAnnotations]] = [
        (
            generate_video,
            "Generate video",
            TaskView | PlanView,
            ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True),
        ),
        (
            get_task_status,
            "Get task status",
            TaskView,
            ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=True),
        ),
        (
            upload_image,
            "Upload image",
            UploadView,
            ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True),
        ),
        (
            list_tasks,
            "List tasks",
            TaskList,
            ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
        ),
        (
            join_videos,
            "Join videos into a film",
            TaskView,
            ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False),
        ),
        (
            get_usage,
            "Usage and budgets",
            UsageView,
            ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=True),
        ),
    ]
    return [
        make_tool(
            fn,
            name=fn.__name__,
            title=title,
            description=DESCRIPTIONS[fn.__name__],
            annotations=hints,
            input_schema=schemas[fn.__name__],
            output_schema=_OUTPUT_SCHEMAS[fn.__name__],
            output_model=out_model,
            meta=UI_META if fn in (generate_video, get_task_status) else None,  # the inline player
        )
        for fn, title, out_model, hints in specs
    ]
