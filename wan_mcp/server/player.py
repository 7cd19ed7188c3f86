"""The inline player (MCP Apps, ``io.modelcontextprotocol/ui``): a ``ui://`` page for video tasks.

``generate_video`` and ``get_task_status`` point at it (``_meta.ui.resourceUri``); hosts that render
MCP Apps (Claude, ChatGPT, VS Code, Goose) show it in place of the bare result: the task's live
state, then the video. Its source is ``ui/`` (built with the official ``@modelcontextprotocol/ext-apps``
into one self-contained file shipped here, so installing needs no Node); hosts without Apps keep
today's text and structured results, unchanged. The video plays from the gateway's URL while it is
valid (its file hosts are in the page's CSP ``resourceDomains``), else from the saved file read through
``video://<task id>`` (a blob resource: works on stdio, needs no CSP entry).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Final
from urllib.parse import urlsplit

from mcp.server.apps import Apps, ResourceCsp

from wan_mcp.config import Settings

__all__ = ["PLAYER_URI", "UI_META", "VIDEO_URI", "apps_extension", "player_html"]

PLAYER_URI: Final = "ui://wan-mcp/player.html"
#: The saved MP4 of a task, as a base64 blob for the player (``resources.py``).
VIDEO_URI: Final = "video://{task_id}"
#: What the tools that show a task carry in their ``_meta``.
UI_META: Final[dict[str, Any]] = {"ui": {"resourceUri": PLAYER_URI}}
#: Where the gateway's result files live (its documented file hosts).
FILE_HOSTS: Final = ("https://files.toapis.com", "https://files.dashlyai.cc")


def player_html() -> str:
    return resources.files("wan_mcp.server.ui").joinpath("player.html").read_text(encoding="utf-8")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def apps_extension(settings: Settings) -> Apps:
    """The Apps extension carrying the player page (its CSP names the gateway's file hosts)."""
    apps = Apps()
    hosts = list(dict.fromkeys([*FILE_HOSTS, _origin(settings.base_url)]))
    apps.add_html_resource(
        PLAYER_URI,
        player_html(),
        name="player",
        title="Video player",
        description="A Wan video task: live progress, then the video, with a new-take button.",
        csp=ResourceCsp(resource_domains=hosts),
        prefers_border=True,
    )
    return apps
