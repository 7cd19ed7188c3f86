"""``wan-mcp doctor``: what a newcomer checks first, in the order things break.

Prints one line per check with what to fix. The key is shown only as a fingerprint
(sha256 prefix), so the output can be pasted into an issue.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

import anyio

from wan_mcp import __version__
from wan_mcp.config import Settings, load_settings
from wan_mcp.errors import WanError


def fingerprint(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def _writable(path: Path) -> str | None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return f"{path} is not writable ({exc.strerror})"
    return None


def _line(ok: bool | None, label: str, detail: str) -> str:
    mark = {True: "ok  ", False: "FAIL", None: "skip"}[ok]
    return f"[{mark}] {label}: {detail}"


async def _gateway_checks(settings: Settings) -> list[tuple[bool | None, str, str]]:
    from wan_mcp.gateway.client import GatewayClient, RetryPolicy, make_http_client

    out: list[tuple[bool | None, str, str]] = []
    if settings.api_key is None:
        out.append(
            (
                False,
                "api key",
                "WAN_MCP_API_KEY is not set; set it in the MCP host's env block "
                "(or try `wan-mcp serve --simulate`)",
            )
        )
        out.append((None, "gateway", "needs a key"))
        return out
    out.append((True, "api key", f"present ({fingerprint(settings.api_key.get_secret_value())})"))
    async with make_http_client(settings) as http:
        client = GatewayClient(
            http,
            base_url=settings.base_url,
            api_key=settings.api_key,
            retry=RetryPolicy(attempts=2, total_seconds=10),
        )
        try:
            balance = await client.get_balance()
            out.append((True, "gateway", f"{settings.base_url} answered; balance {balance.remain_balance}"))
        except WanError as err:
            out.append((False, "gateway", str(err)))
    return out


def run_doctor() -> int:
    checks: list[tuple[bool | None, str, str]] = []
    try:
        settings = load_settings()
    except (WanError, ValueError) as exc:
        print(_line(False, "config", str(exc)), file=sys.stderr)
        return 1
    cfg = os.environ.get("WAN_MCP_CONFIG")
    checks.append((True, "version", f"wan-mcp {__version__}, Python {sys.version.split()[0]}"))
    checks.append((True, "config", f"file {cfg}" if cfg else "env/defaults (no WAN_MCP_CONFIG)"))
    for label, path in (("data dir", settings.data_dir), ("output dir", settings.resolved_output_dir)):
        problem = _writable(path)
        checks.append((problem is None, label, problem or str(path)))
    roots = ", ".join(str(p) for p in settings.read_roots)
    checks.append(
        (True, "read roots", roots + (" (dot-folders excluded)" if settings.restrict_dotdirs else ""))
    )
    try:
        import av  # noqa: F401

        checks.append((True, "PyAV", "installed (poster frames, video probing)"))
    except ImportError:
        checks.append((None, "PyAV", "not installed: pip install 'wan-mcp[media]' for poster frames"))
    checks.extend(anyio.run(_gateway_checks, settings))
    for ok, label, detail in checks:
        print(_line(ok, label, detail))
    return 1 if any(ok is False for ok, _, _ in checks) else 0
