"""One voice to the agent (issue 8, section 3): one argument checker and one wording for all
four tools, host-injected arguments ignored, every error mirrored in the structured content,
every result carrying its next step, and every name a message mentions real."""

from __future__ import annotations

import ast
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

import wan_mcp
from tests.helpers import ok, simulator_settings, text
from wan_mcp.config import Settings
from wan_mcp.core.arguments import HOST_INJECTED
from wan_mcp.server.app import build_server
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio
KEY = "sk-voice-SECRET-0123456789abcdef"

#: A call per tool that is valid and costs little (upload needs a file; given per test).
VALID: dict[str, dict[str, Any]] = {
    "generate_video": {"prompt": "a calm lake", "resolution": "720p"},
    "get_task_status": {"task_id": "__filled_in__"},
    "list_tasks": {},
}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(job_seconds=600, api_keys={KEY}) as server:
        yield server


@pytest.fixture
async def client(sim: SimulatorServer, tmp_path: Path) -> AsyncIterator[Client]:
    async with Client(build_server(simulator_settings(sim, tmp_path, key=KEY))) as c:
        yield c


async def _calls(client: Client, tmp_path: Path) -> dict[str, dict[str, Any]]:
    task = ok(await client.call_tool("generate_video", {"prompt": "a quiet harbour", "resolution": "720p"}))
    image = tmp_path / "in" / "red.png"
    from PIL import Image

    Image.new("RGB", (640, 480), (200, 30, 30)).save(image)
    return {**VALID, "get_task_status": {"task_id": task["task_id"]}, "upload_image": {"path": str(image)}}


async def test_host_injected_arguments_are_ignored_by_every_tool(client: Client, tmp_path: Path) -> None:
    calls = await _calls(client, tmp_path)
    for name, args in calls.items():
        for injected in HOST_INJECTED:
            result = await client.call_tool(name, {**args, injected: True})
            assert not result.is_error, (name, text(result))


async def test_a_misspelt_argument_is_refused_in_the_same_words_by_every_tool(client: Client, tmp_path: Path) -> None:
    calls = await _calls(client, tmp_path)
    misspelt = {"generate_video": "resolutoin", "get_task_status": "task_idd", "upload_image": "pathh",
                "list_tasks": "limitt"}  # fmt: skip
    for name, args in calls.items():
        wrong = misspelt[name]
        result = await client.call_tool(name, {**args, wrong: 1})
        assert result.is_error
        message = text(result)
        assert message.startswith(f"[invalid_request] field '{wrong}': \"{wrong}\" is not an argument of {name}.")
        assert "Allowed: " in message and "did you mean '" in message, message
        error = result.structured_content["error"]
        assert error["field"] == wrong and error["code"] == "invalid_request" and error["allowed"]
        assert result.structured_content["next"].startswith("remove it")


async def test_generate_video_lists_its_own_arguments_as_allowed(client: Client) -> None:
    result = await client.call_tool("generate_video", {"prompt": "x", "waitseconds": 3})
    allowed = result.structured_content["error"]["allowed"]
    assert "wait_seconds" in allowed and "prompt" in allowed
    assert "did you mean 'wait_seconds'" in text(result)


async def test_wrong_types_are_named_in_json_terms_on_every_tool(client: Client) -> None:
    cases = [
        ("generate_video", {"prompt": "x", "duration": "5"}, "duration", 'expected an integer, got string "5"'),
        ("generate_video", {"prompt": "x", "wait_seconds": "5"}, "wait_seconds", 'expected a number, got string "5"'),
        ("get_task_status", {"task_id": 5}, "task_id", "expected a string, got integer 5"),
        ("get_task_status", {"task_id": "x", "download": "yes"}, "download", 'expected a boolean, got string "yes"'),
        ("list_tasks", {"limit": "5"}, "limit", 'expected an integer, got string "5"'),
        ("upload_image", {"path": ["a"]}, "path", 'expected a string, got array ["a"]'),
    ]
    for name, args, field, fragment in cases:
        result = await client.call_tool(name, args)
        assert result.is_error and fragment in text(result), (name, text(result))
        assert result.structured_content["error"]["field"] == field
        assert not re.search(r"\b(int|str|bool|float|list)\b", text(result)), text(result)  # no Python type names


async def test_every_result_carries_its_next_step(client: Client, tmp_path: Path) -> None:
    calls = await _calls(client, tmp_path)
    for name, args in calls.items():
        result = ok(await client.call_tool(name, args))
        assert result.get("next"), (name, result)
    running = ok(await client.call_tool("get_task_status", calls["get_task_status"]))
    assert f"get_task_status(task_id='{running['task_id']}'" in running["next"]
    for row in ok(await client.call_tool("list_tasks", {}))["tasks"]:
        assert row.get("next")


async def test_the_next_poll_told_to_the_agent_follows_the_configured_timing(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    settings: Settings = simulator_settings(sim, tmp_path, key=KEY, poll_first_seconds=2, poll_interval_seconds=3)
    async with Client(build_server(settings)) as client:
        task = ok(await client.call_tool("generate_video", {"prompt": "timing advice", "resolution": "720p"}))
    assert task["next_poll_seconds"] in (1, 2)  # the first check is due ~2 s after the submission, never "10"


async def test_upload_image_accepts_what_generate_video_accepts_url_safe_unpadded_base64(client: Client) -> None:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((640, 480), 90).convert("RGB").save(buffer, "PNG")
    encoded = base64.urlsafe_b64encode(buffer.getvalue()).decode().rstrip("=")
    assert "-" in encoded or "_" in encoded  # noise makes both alphabets differ
    uploaded = ok(await client.call_tool("upload_image", {"data": f"data:image/png;base64,{encoded}"}))
    assert uploaded["url"].startswith("http")
    dry = await client.call_tool("generate_video", {"image": f"data:image/png;base64,{encoded}", "prompt": "x",
                                                    "resolution": "720p"})  # fmt: skip
    assert not dry.is_error, text(dry)


# --- names a message mentions exist ---------------------------------------------------------

_CALL = re.compile(r"\b([a-z]+(?:_[a-z]+)+)\(")
#: Names shaped like a tool's (a verb and an object), whether or not followed by "(".
_TOOLISH = re.compile(r"\b((?:get|list|upload|generate|join|cancel|check|show)_[a-z]+(?:_[a-z]+)*)\b")
_SETTING = re.compile(r"\bWAN_MCP_([A-Z_]+[A-Z])\b")
#: Env names read directly (before Settings exists), not Settings fields.
_ENV_ONLY = {"CONFIG", "LOG_LEVEL", "REAL_API_KEY", "REAL_SPEND"}


def _strings(package: Path) -> Iterator[tuple[Path, str]]:
    for path in package.rglob("*.py"):
        if "simulator" in path.parts:
            continue  # the simulator speaks for the gateway, not for us
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                yield path, node.value


async def test_every_tool_and_setting_a_message_names_exists(client: Client) -> None:
    tools = {t.name for t in (await client.list_tools()).tools}
    fields = {name.upper() for name in Settings.model_fields}
    package = Path(wan_mcp.__file__).parent
    python_calls = {"isinstance", "get_task", "create_task", "upload_image", "model_validate"}
    for path, value in _strings(package):
        if value.startswith(("SELECT", "INSERT", "UPDATE", "CREATE", "PRAGMA")) or '"""' in value:
            continue
        value = re.sub(r'python3 -c "[^"]*"?', "", value)  # a shell command to copy is Python, not a tool
        for name in _CALL.findall(value):
            if name in python_calls or not any(w in value for w in ("call ", "Call ", "Next", "use ", "pass ")):
                continue
            assert name in tools, f"{path.name}: {value[:80]!r} names {name}(), which is no tool"
        for name in _TOOLISH.findall(value):
            if name in python_calls or "wan_mcp." in value or value.isidentifier():
                continue
            assert name in tools, f"{path.name}: {value[:80]!r} names {name}, which is no tool"
        for name in _SETTING.findall(value):
            assert name in fields or name in _ENV_ONLY, f"{path.name}: WAN_MCP_{name} is no setting"
