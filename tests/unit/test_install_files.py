"""The files hosts install from (issue 13, part 3) say what the code does.

``manifest.json`` (MCP Bundle) is also validated by the official ``mcpb`` tool in ``.ci/run``; these tests
pin what no schema checks: versions, names, the settings each file hands to the server, the tools and
prompts it lists, and that the Dockerfile runs the server the locked-down way.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from wan_mcp import __version__
from wan_mcp.cli import _parser as build_parser
from wan_mcp.config import ENV_PREFIX, Settings, load_settings
from wan_mcp.server.app import build_server

ROOT = Path(__file__).resolve().parents[2]


def _json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / name).read_text())
    return data


def _setting(env_name: str) -> str:
    assert env_name.startswith(ENV_PREFIX), env_name
    field = env_name.removeprefix(ENV_PREFIX).lower()
    assert field in Settings.model_fields, f"{env_name} is no setting"
    return field


async def _listed() -> tuple[set[str], set[str]]:
    server = build_server(load_settings())
    tools = {t.name for t in await server.list_tools()}
    prompts = {p.name for p in await server.list_prompts()}
    return tools, prompts


@pytest.mark.anyio
async def test_the_bundle_manifest_runs_this_package_with_real_settings() -> None:
    manifest = _json("manifest.json")
    assert manifest["version"] == __version__ and manifest["name"] == "wan-mcp"
    server = manifest["server"]
    assert server["type"] == "uv" and (ROOT / server["entry_point"]).is_file()
    config = server["mcp_config"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert config["command"] == "uv" and config["args"][-2:] == ["wan-mcp", "serve"] and "wan-mcp" in scripts
    users = manifest["user_config"]
    for env_name, value in config["env"].items():
        _setting(env_name)
        key = re.fullmatch(r"\$\{user_config\.(\w+)\}", value)
        assert key is not None and key.group(1) in users, value
    assert users["api_key"]["sensitive"] is True and users["inbox_dir"]["type"] == "directory"
    assert users["budget_daily_usd"]["default"] == Settings.model_fields["budget_daily_usd"].default
    tools, prompts = await _listed()
    assert {t["name"] for t in manifest["tools"]} == tools
    assert {p["name"] for p in manifest["prompts"]} == prompts


def test_the_registry_entry_is_this_package_and_the_readme_claims_it() -> None:
    entry = _json("server.json")
    marker = re.search(r"<!-- mcp-name: (\S+) -->", (ROOT / "README.md").read_text())
    assert marker is not None and marker.group(1) == entry["name"]  # the registry's PyPI ownership check
    assert re.fullmatch(r"io\.github\.[\w-]+/[\w-]+", entry["name"]) and len(entry["description"]) <= 100
    [package] = entry["packages"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert package["registryType"] == "pypi" and package["identifier"] == project["name"]
    assert entry["version"] == package["version"] == __version__
    assert package["transport"] == {"type": "stdio"} and package["runtimeHint"] == "uvx"
    args = [a["value"] for a in package["packageArguments"]]
    assert build_parser().parse_args(args).command == "serve"
    secrets = {v["name"] for v in package["environmentVariables"] if v.get("isSecret")}
    assert secrets == {"WAN_MCP_API_KEY"}
    for variable in package["environmentVariables"]:
        _setting(variable["name"])


def test_the_container_runs_unprivileged_over_http_with_a_health_check() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    health = next(line for line in lines if line.startswith("HEALTHCHECK"))
    assert "/healthz" in " ".join(lines[lines.index(health) :])
    command = json.loads([line for line in lines if line.startswith("CMD ")][-1][4:])  # (not HEALTHCHECK's)
    assert command[0] == "wan-mcp"
    args = build_parser().parse_args(command[1:])
    assert (args.command, args.transport, args.host) == ("serve", "http", "0.0.0.0")
    # No secret baked in: a token is required at run time (the server refuses 0.0.0.0 without one).
    code = [line for line in lines if not line.startswith("#")]
    assert not any(name in line for line in code for name in ("WAN_MCP_HTTP_TOKEN", "WAN_MCP_API_KEY"))


def test_a_setting_left_blank_by_a_host_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """MCPB hosts fill an optional user setting left empty with ""; it must mean the default, not a bad value."""
    for name in ("WAN_MCP_API_KEY", "WAN_MCP_INBOX_DIR", "WAN_MCP_BUDGET_DAILY_USD"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert settings.api_key is None and settings.inbox_dir is None
    assert settings.budget_daily_usd == Settings.model_fields["budget_daily_usd"].default
