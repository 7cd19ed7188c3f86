"""The plan's directions, enforced: cli -> server -> core -> gateway; simulator stands alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "wan_mcp"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules(sub: str) -> list[Path]:
    return sorted((PKG / sub).rglob("*.py"))


FORBIDDEN = {
    "gateway": ("wan_mcp.core", "wan_mcp.server", "wan_mcp.simulator", "wan_mcp.cli", "mcp"),
    "core": ("wan_mcp.server", "wan_mcp.simulator", "wan_mcp.cli", "mcp"),
    "simulator": (
        "wan_mcp.gateway",
        "wan_mcp.core",
        "wan_mcp.server",
        "wan_mcp.cli",
        "wan_mcp.config",
        "wan_mcp.errors",
    ),
    "server": ("wan_mcp.simulator", "wan_mcp.cli"),
}


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_imports_only_downwards(room: str) -> None:
    offenders = []
    for path in _modules(room):
        for name in _imports(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[room]):
                offenders.append(f"{path.relative_to(PKG)} imports {name}")
    assert not offenders, offenders


def test_no_print_to_stdout_in_server_code() -> None:
    for room in ("server", "core", "gateway"):
        for path in _modules(room):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                    assert any(k.arg == "file" for k in node.keywords), f"print() to stdout in {path}"


def test_starting_the_server_imports_neither_pillow_nor_pyav_nor_pyjwt() -> None:
    """Each is loaded when its work happens (media; OAuth sign-in): the cold start and idle RSS stay near
    the SDK's floor (issue 14's film module once imported Pillow at start-up; bench figure 1 caught the cost)."""
    import subprocess
    import sys

    code = (
        "import sys, wan_mcp.server.app, wan_mcp.server.transports, wan_mcp.cli; "
        "print('PIL' in sys.modules, 'av' in sys.modules, 'jwt' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False", "False"], out.stdout
