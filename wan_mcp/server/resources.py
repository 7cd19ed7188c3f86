"""Server instructions, the ``task://{id}`` resource and the prompt-writing prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from wan_mcp.config import Settings
from wan_mcp.core import offload
from wan_mcp.core.views import TaskView
from wan_mcp.errors import WanError
from wan_mcp.server.player import VIDEO_URI

#: The largest saved video ``video://`` hands out inline (base64 in one message).
MAX_INLINE_VIDEO: Final = 64 * 2**20

INSTRUCTIONS = """\
Wan 2.6 video generation (ToAPIs gateway). Each generate_video call starts a PAID job \
(billed per second of output; 1080p costs more than 720p): confirm intent before spending. \
Every result carries a quote; generate_video(dry_run=true) quotes without sending; get_usage shows \
spend and budgets. A call above the approval threshold asks the user, or answers confirmation_required \
with a confirm_token: ask the user, and only if they agree repeat the call with it.
Longer than 15 s: make shot 1, continue each next shot with generate_video(continue_from=<previous task_id>), \
then join_videos(task_ids=[...]) (prompt wan_film has the steps).
Flow: (1) optional: upload_image(path=...) for a local image, or pass the path/URL as `image` directly; \
(2) generate_video(...) returns a task_id at once; (3) get_task_status(task_id, wait_seconds=30) until \
status is completed (jobs usually take 1-5 min; 15 s 1080p up to 10 min). The completed result has \
local_path (the MP4 on this machine) and url (expires in 24 h).
Lost a task_id? list_tasks. Errors say which field is wrong and how to fix it; a task_id in an error \
means the job exists: poll it, do not resubmit.
Prompt tips: subject + action + camera + style + sound cue; for reference videos name subjects \
character1, character2 in list order."""


def instructions(settings: Settings, *, remote: bool) -> str:
    """The instructions, with where local pictures may come from on this server (so the agent knows)."""
    if remote and not settings.allow_remote_paths:
        files = "Images: pass a data:image/...;base64 URL or a public http(s) URL (paths on this server are refused)."
    else:
        folders = ", ".join(str(p) for p in settings.read_roots)
        files = f"Local files are read only from: {folders} (ask the user to put pictures in the first one)."
    return f"{INSTRUCTIONS}\n{files}"


async def _own_task(ctx: Context[Any, Any], task_id: str, scheme: str) -> TaskView:
    """The caller's task (its read counted against the caller's rate); another tenant's reads as never made."""
    from wan_mcp.server.tools import caller

    try:
        state, tenant = caller(ctx, scheme)
    except WanError as err:
        raise ResourceError(err.render()) from None
    view = await state.service.task_view(task_id, tenant)
    if view is None:  # another tenant's task is answered exactly like one never made
        raise ResourceNotFoundError(f"No task {task_id} among your tasks; call list_tasks to see them.")
    return view


def register_resources(server: MCPServer[Any]) -> None:
    @server.resource(
        "task://{task_id}",
        mime_type="application/json",
        title="Video task",
        description="A task from the local journal (status, URLs, local file).",
    )
    async def task_resource(task_id: str, ctx: Context[Any, Any]) -> str:
        view = await _own_task(ctx, task_id, "task://")
        return view.model_dump_json(exclude_none=True)

    @server.resource(
        VIDEO_URI,
        mime_type="video/mp4",
        title="Video file",
        description=f"A finished task's saved MP4 (for the inline player; up to {MAX_INLINE_VIDEO // 2**20} MiB).",
    )
    async def video_resource(task_id: str, ctx: Context[Any, Any]) -> bytes:
        view = await _own_task(ctx, task_id, "video://")
        if not view.local_path:
            raise ResourceError(
                f"task {task_id} has no saved video yet ({view.status}); "
                f"call get_task_status(task_id='{task_id}') to fetch it"
            )
        path = Path(view.local_path)

        def read() -> bytes:
            with path.open("rb") as fh:
                data = fh.read(MAX_INLINE_VIDEO + 1)
            if len(data) > MAX_INLINE_VIDEO:
                raise ResourceError(
                    f"the video of task {task_id} is larger than {MAX_INLINE_VIDEO // 2**20} MiB: too large to show "
                    "inline; open it from local_path or download_url"
                )
            return data

        try:
            return await offload.run_sync(read)
        except OSError as exc:
            raise ResourceError(
                f"the video of task {task_id} cannot be read ({exc.strerror}); "
                f"call get_task_status(task_id='{task_id}') to fetch it again"
            ) from None

    @server.prompt(name="wan_video_prompt", title="Write a Wan video prompt")
    def wan_video_prompt(
        subject: str, style: str = "cinematic", camera: str = "slow dolly-in", audio: str = "ambient sound"
    ) -> str:
        """Draft a strong Wan 2.6 prompt (subject, motion, camera, style, audio cue)."""
        return (
            f"Write one Wan 2.6 video prompt (under 120 words) about: {subject}.\n"
            "Structure it as: subject and appearance; the single main action and how it moves; "
            f"camera ({camera}); lighting and {style} style; setting; sound cue ({audio}).\n"
            "Use concrete visual words, present tense, one continuous shot unless asked for multi-shot. "
            "Avoid real people's names, logos and on-screen text. Also suggest a short negative_prompt "
            "(e.g. 'blurry, low quality, deformed'). Then call generate_video with it. For cuts inside one "
            "clip use shot_type='multi' and time the shots in the prompt: 'Shot 1 [0-3 s]: ... Shot 2 [3-5 s]: "
            "...' (they must start at 0, follow each other and end within the duration)."
        )

    @server.prompt(name="wan_film", title="Plan a film longer than one clip")
    def wan_film(story: str, seconds: str = "30", resolution: str = "720p") -> str:
        """Plan and make a film of several shots that flow into each other (continue_from + join_videos)."""
        return (
            f"Make a film of about {seconds} s about: {story}.\n"
            "1. Plan shots of 5-15 s each (Wan 2.6 makes at most 15 s per clip); write one prompt per shot, "
            "each continuing the action of the one before.\n"
            f"2. Quote the whole film first: generate_video(dry_run=true, resolution='{resolution}', ...) for "
            "each shot; tell the user the total and ask before spending.\n"
            "3. Shot 1: generate_video(prompt=..., duration=...) (text-to-video, or image=... to start from a "
            "picture). Wait with get_task_status(task_id, wait_seconds=30) until completed.\n"
            "4. Each next shot: generate_video(continue_from=<previous task_id>, prompt=...): its first frame is "
            "the previous shot's last frame (no image, reference_videos or aspect_ratio). Wait until completed.\n"
            "5. join_videos(task_ids=[shot 1, shot 2, ...], transition='cut' or 'crossfade'): one MP4, free.\n"
            "Show the user the film's local_path."
        )
