"""The ``wan-mcp`` command: serve | simulator | demo | doctor | tenant. No logic of its own.

Each sub-command parses flags, builds :class:`Settings` (flags win over env and the
config file) and hands over to the module that does the work.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, cast

from wan_mcp import __version__
from wan_mcp.errors import WanError, redact

SIMULATOR_KEY = "sk-simulator-local-demo-key"


class RedactingFormatter(logging.Formatter):
    """Last line of defence: a registered secret (key, HTTP tokens) never reaches a log line,
    not even inside a traceback or a third-party library's message."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _setup_logging() -> None:
    # stdout is the MCP wire for stdio: everything human goes to stderr.
    level = os.environ.get("WAN_MCP_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(stream=sys.stderr, level=level)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))


def _settings_epilog() -> str:
    """Every setting with its env name and meaning, from ``Settings`` (the one place they live)."""
    from wan_mcp.config import ENV_PREFIX, Settings

    lines = ["settings (env, or the JSON file named by WAN_MCP_CONFIG; flags win):"]
    for name, info in Settings.model_fields.items():
        default = info.default if info.default_factory is None else "(computed)"
        shown = "-" if default is None or name in ("api_key", "http_token") else default
        lines.append(f"  {ENV_PREFIX}{name.upper():<28} {info.description or ''} [default: {shown}]")
    lines.append(f"  {ENV_PREFIX}LOG_LEVEL{'':<20} log level for stderr (stdout is the MCP wire) [default: INFO]")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wan-mcp", description="MCP server for Wan 2.6 video generation (ToAPIs).")
    p.add_argument("--version", action="version", version=f"wan-mcp {__version__}")
    sub = p.add_subparsers(dest="command")

    raw = argparse.RawDescriptionHelpFormatter
    serve = sub.add_parser(
        "serve",
        help="run the MCP server (default: stdio)",
        description="Run the MCP server on stdio (for desktop hosts), SSE or streamable HTTP.",
        epilog=_settings_epilog(),
        formatter_class=raw,
    )
    serve.add_argument("--transport", choices=["stdio", "sse", "http"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--simulate",
        action="store_true",
        help="serve against an in-process gateway simulator (no key, no network, no cost)",
    )
    serve.add_argument("--base-url", help="gateway base URL (default https://toapis.com)")
    serve.add_argument("--data-dir", help="journal location")
    serve.add_argument("--output-dir", help="where videos are saved")

    sim = sub.add_parser(
        "simulator",
        help="run the offline ToAPIs gateway simulator",
        description="The offline gateway on loopback (real HTTP, real MP4s); no settings of the server apply. "
        "Run `wan-mcp simulator --help` for its own flags (port, keys, job time, faults).",
    )
    sim.add_argument("rest", nargs=argparse.REMAINDER, help="simulator flags (see wan-mcp simulator --help)")

    demo = sub.add_parser(
        "demo",
        help="the whole flow on the built-in simulator, driven by an MCP client",
        description="Starts the simulator and the real server (in this process, or with --stdio as a subprocess "
        "the way desktop hosts run it), makes a text-, an image- and a reference-to-video job through the "
        "official MCP client, joins them into a film, checks each MP4 and prints a table. "
        "Needs no key; ignores WAN_MCP_* settings except WAN_MCP_LOG_LEVEL (everything lives under --out).",
    )
    demo.add_argument("--out", default="wan-mcp-demo", help="folder for inputs, journal and videos")
    demo.add_argument("--job-seconds", type=float, default=3.0, help="simulated generation time per job")
    demo.add_argument(
        "--stdio", action="store_true", help="run the server as a stdio subprocess (as hosts do) instead of in-process"
    )

    sub.add_parser(
        "doctor",
        help="check configuration, folders, key and gateway reachability",
        description="Checks what a newcomer checks first, in the order things break: config file, data and "
        "output dirs, read roots, PyAV, HTTP tokens (fingerprints only), the key and one cheap gateway call. "
        "Exits 1 if any check fails.",
        epilog=_settings_epilog(),
        formatter_class=raw,
    )

    tenant = sub.add_parser(
        "tenant",
        help="manage the tenants of an HTTP/SSE server (tokens, budgets, rate, own key)",
        description="Tenants share one HTTP/SSE endpoint, each isolated (tasks, uploads, files, budgets). The "
        "tenants file (WAN_MCP_TENANTS_FILE, default <data dir>/tenants.json) keeps token digests only; a "
        "running server picks changes up within seconds.",
    )
    tsub = tenant.add_subparsers(dest="tenant_command", required=True)
    add = tsub.add_parser("add", help="add a tenant; prints its bearer token ONCE")
    add.add_argument("name", help="lower-case letters, digits, - and _ (e.g. alice)")
    add.add_argument("--budget-daily-usd", type=float, help="its daily budget (default: the server's)")
    add.add_argument("--budget-session-usd", type=float, help="its budget per server process (default: the server's)")
    add.add_argument("--rate-per-minute", type=float, help="its tool calls per minute (default: the server's)")
    add.add_argument(
        "--api-key-env", help="name of an environment variable holding its own gateway key (never the key)"
    )
    add.add_argument("--rotate", action="store_true", help="give an existing tenant a new token (old one stops)")
    tsub.add_parser("list", help="list tenants (names and grants; never tokens)")
    remove = tsub.add_parser("remove", help="remove a tenant (its token stops working)")
    remove.add_argument("name")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _run(argv)
    finally:
        # Whatever the command opened is closed by now; what is left is the interpreter's exit, whose
        # last garbage collections walk every object of the ~1,500 modules loaded: 0.13-0.17 s measured
        # (a host waits that long for a stdio server to go; the demo's wall time). Frozen objects are
        # not walked; modules are still torn down and atexit handlers still run.
        gc.freeze()


def _run(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "simulator":
        from wan_mcp.simulator.harness import main as simulator_main

        return simulator_main(args_list[1:])
    args = _parser().parse_args(args_list)
    _setup_logging()
    try:
        if args.command in (None, "serve"):
            return _serve(args)
        if args.command == "demo":
            from wan_mcp.demo import run_demo

            return run_demo(out=args.out, job_seconds=args.job_seconds, stdio=args.stdio)
        if args.command == "doctor":
            from wan_mcp.doctor import run_doctor

            return run_doctor()
        if args.command == "tenant":
            return _tenant(args)
    except WanError as err:
        print(f"wan-mcp: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


def _serve(args: argparse.Namespace) -> int:
    import anyio

    from wan_mcp.config import load_settings
    from wan_mcp.server.transports import Transport, install_sigterm_as_interrupt, serve

    overrides: dict[str, Any] = {
        "base_url": getattr(args, "base_url", None),
        "data_dir": getattr(args, "data_dir", None),
        "output_dir": getattr(args, "output_dir", None),
    }
    transport = getattr(args, "transport", "stdio")
    host, port = getattr(args, "host", "127.0.0.1"), getattr(args, "port", 8000)
    install_sigterm_as_interrupt()
    base = load_settings(**overrides)
    if getattr(args, "simulate", False) or base.simulate:
        from wan_mcp.simulator.harness import SimulatorServer

        with SimulatorServer(job_seconds=base.simulator_job_seconds, balance=base.simulator_balance_usd) as sim:
            sim.configure(render_on_create=True)  # files are ready when jobs end, as a real gateway's are
            logging.getLogger("wan_mcp").info("simulated gateway at %s (no key, no cost)", sim.base_url)
            settings = load_settings(
                **{
                    **overrides,
                    "base_url": sim.base_url,
                    "api_key": SIMULATOR_KEY,
                    "data_dir": base.data_dir / "simulator",
                    "output_dir": base.output_dir or base.data_dir / "simulator" / "videos",
                    "allow_private_urls": [*base.allow_private_urls, "127.0.0.1"],
                }
            )
            anyio.run(serve, settings, cast(Transport, transport), host, port)
        return 0
    anyio.run(serve, base, cast(Transport, transport), host, port)
    return 0


def _tenant(args: argparse.Namespace) -> int:
    from wan_mcp.config import load_settings
    from wan_mcp.server.tenants_file import TenantEntry, add_tenant, load_tenants, remove_tenant

    path = load_settings().resolved_tenants_file
    if args.tenant_command == "add":
        entry = TenantEntry(
            id=args.name,
            api_key_env=args.api_key_env,
            budget_daily_usd=args.budget_daily_usd,
            budget_session_usd=args.budget_session_usd,
            rate_per_minute=args.rate_per_minute,
        )
        token = add_tenant(path, entry, rotate=args.rotate)
        print(token)  # stdout: the token alone, once (scripts capture it); the rest goes to stderr
        print(
            f"tenant {args.name!r} {'given a new token' if args.rotate else 'added'} in {path}; the token above is "
            "shown only now (the file keeps its SHA-256). Clients send: Authorization: Bearer <token>",
            file=sys.stderr,
        )
        return 0
    if args.tenant_command == "list":
        for e in load_tenants(path):
            grants = [
                f"{name}={value:g}"
                for name, value in (
                    ("budget_daily_usd", e.budget_daily_usd),
                    ("budget_session_usd", e.budget_session_usd),
                    ("rate_per_minute", e.rate_per_minute),
                )
                if value is not None
            ]
            if e.api_key_env:
                grants.append(f"own key from ${e.api_key_env}")
            print(f"{e.id}\t{', '.join(grants) or 'server defaults'}")
        return 0
    if not remove_tenant(path, args.name):
        print(f"wan-mcp: no tenant {args.name!r} in {path}", file=sys.stderr)
        return 1
    print(f"tenant {args.name!r} removed from {path}", file=sys.stderr)
    return 0
