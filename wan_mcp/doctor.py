"""``wan-mcp doctor``: what a newcomer checks first, in the order things break.

Prints one line per check with what to fix; exits 1 if any check FAILs. The key and
the HTTP tokens are shown only as fingerprints (sha256 prefix), so the output can be
pasted into an issue.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Literal

import anyio

from wan_mcp import __version__
from wan_mcp.config import Settings, load_settings
from wan_mcp.errors import ErrorCode, WanError

#: (True = ok, False = FAIL, None = skipped, "warn" = works but deserves a look), label, detail.
Check = tuple[bool | Literal["warn"] | None, str, str]


#: Where the key for fingerprints lives (in the data dir, readable only by this user).
FINGERPRINT_KEY_FILE = "fingerprint-key"


def fingerprint_key(data_dir: Path) -> bytes:
    """This installation's secret key for fingerprints; a fresh random one if it cannot be stored.

    A plain hash of a short secret can be reversed by trying candidates (a 12-hex sha256 of a
    short token was, in 0.4 s); keyed with a secret the reader of a pasted doctor output does
    not have, and cut to 32 bits, a fingerprint identifies a key for its owner and nobody else.
    """
    path = data_dir / FINGERPRINT_KEY_FILE
    try:
        return path.read_bytes()
    except OSError:
        pass
    key = secrets.token_bytes(32)
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
    except FileExistsError:
        return path.read_bytes()
    except OSError:
        pass  # an unwritable data dir is reported by its own check
    return key


def fingerprint(secret: str, key: bytes) -> str:
    return "hmac:" + hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()[:8]


def _writable(path: Path) -> str | None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-") as probe:
            probe.write(b"x")
            probe.flush()
    except OSError as exc:
        return f"{path} is not writable ({exc.strerror})"
    return None


def _line(ok: bool | Literal["warn"] | None, label: str, detail: str) -> str:
    mark = {True: "ok  ", False: "FAIL", None: "skip", "warn": "WARN"}[ok]
    return f"[{mark}] {label}: {detail}"


async def _gateway_checks(settings: Settings) -> list[Check]:
    from wan_mcp.gateway.client import GatewayClient, RetryPolicy, make_http_client

    out: list[Check] = []
    if settings.api_key is None or not settings.api_key.get_secret_value():
        out.append(
            (
                False,
                "api key",
                "WAN_MCP_API_KEY is not set; set it in the MCP host's env block (or try `wan-mcp serve --simulate`)",
            )
        )
        out.append((None, "gateway", f"{settings.base_url} not contacted: needs a key"))
        return out
    key = fingerprint_key(settings.data_dir)
    out.append((True, "api key", f"present ({fingerprint(settings.api_key.get_secret_value(), key)})"))
    async with make_http_client(settings) as http:
        client = GatewayClient(
            http,
            base_url=settings.base_url,
            api_key=settings.api_key,
            retry=RetryPolicy(attempts=2, total_seconds=10),
        )
        try:
            balance = await client.get_balance()
        except WanError as err:
            if err.code in (ErrorCode.AUTH, ErrorCode.PAYMENT):  # it answered: reachable, the key is the problem
                out.append((True, "gateway", f"{settings.base_url} reachable"))
                out.append((False, "key accepted", str(err)))
            else:
                out.append((False, "gateway", str(err)))
            return out
    out.append((True, "gateway", f"{settings.base_url} reachable"))
    if balance.unlimited:
        out.append((True, "key accepted", "balance: unlimited"))
    elif balance.remain_balance is not None and balance.remain_balance <= 0:
        out.append(
            (False, "key accepted", "but the balance is 0: generate_video will be refused (402); top up the account")
        )
    else:
        out.append((True, "key accepted", f"balance {balance.remain_balance}"))
    return out


def _token_check(settings: Settings) -> Check:
    from wan_mcp.server.transports import MIN_TOKEN_CHARS, TOKEN_FILE

    if not settings.http_token:
        return (
            True,
            "http token",
            f"not set: HTTP/SSE on loopback use the token made at first start in {settings.data_dir / TOKEN_FILE}; "
            "beyond loopback set WAN_MCP_HTTP_TOKEN",
        )
    key = fingerprint_key(settings.data_dir)
    prints = ", ".join(fingerprint(t.get_secret_value(), key) for t in settings.http_token)
    short = [t for t in settings.http_token if len(t.get_secret_value()) < MIN_TOKEN_CHARS]
    if short:
        return (
            False,
            "http token",
            f"{len(short)} shorter than {MIN_TOKEN_CHARS} characters ({prints}): the server refuses them; "
            'use e.g. python3 -c "import secrets; print(secrets.token_urlsafe(32))"',
        )
    return (True, "http token", f"{len(settings.http_token)} configured ({prints})")


async def _journal_check(settings: Settings) -> Check:
    """Where the journal lives; a PostgreSQL one is connected to (and migrated) as the server would."""
    if settings.database_url is None:
        return (True, "journal", f"SQLite {settings.journal_path}")
    from wan_mcp.server.app import open_journal

    try:
        journal = await open_journal(settings)
    except WanError as err:
        return (False, "journal", err.render())
    await journal.close()
    return (True, "journal", "PostgreSQL (WAN_MCP_DATABASE_URL): connected, schema up to date")


def _tenants_check(settings: Settings) -> Check:
    """The tenants file (names, own-key env vars set) and OAuth sign-in, as the HTTP server will read them."""
    from wan_mcp.server.tenants_file import load_tenants

    path = settings.resolved_tenants_file
    try:
        entries = load_tenants(path)
    except WanError as err:
        return (False, "tenants", err.render())
    missing = [f"{e.id} (${e.api_key_env})" for e in entries if e.api_key_env and not os.environ.get(e.api_key_env)]
    if missing:
        return (
            False,
            "tenants",
            f"own-key variables not set for {', '.join(missing)}: the HTTP server refuses to start; "
            "set them, or drop api_key_env from those tenants",
        )
    oauth = f"; OAuth sign-in from {settings.oauth_issuer}" if settings.oauth_issuer else ""
    if not entries:
        return (True, "tenants", f"none in {path} (add with `wan-mcp tenant add NAME`){oauth}")
    return (True, "tenants", f"{len(entries)} in {path}: {', '.join(e.id for e in entries)}{oauth}")


def _spending_checks(settings: Settings) -> list[Check]:
    """Budgets as configured (no daily budget is flagged) and whether the price table loads."""
    from wan_mcp.core.spending import PriceTable

    out: list[Check] = []
    if settings.budget_daily_usd == 0:
        out.append(
            (
                "warn",
                "daily budget",
                "none (WAN_MCP_BUDGET_DAILY_USD=0): an agent may spend without limit; set a daily cap in USD "
                "(the default is 25)",
            )
        )
    else:
        session = settings.budget_session_usd
        out.append(
            (
                True,
                "budgets",
                f"USD {settings.budget_daily_usd:g} per day"
                + (f", USD {session:g} per server session" if session else "")
                + f"; calls above USD {settings.confirm_above_usd:g} are confirmed by the user"
                + ("; READ-ONLY: no paid call is made" if settings.read_only else ""),
            )
        )
    try:
        table = PriceTable.load(settings.prices_file)
    except WanError as err:
        out.append((False, "prices", err.render()))
    else:
        source = f"file {settings.prices_file}" if settings.prices_file else "shipped estimates"
        out.append((True, "prices", f"{source} as of {table.as_of}; quotes never under-state the table"))
    return out


def run_doctor() -> int:
    # The HTTP client logs each request at INFO; the check lines say it better.
    for name in ("httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    checks: list[Check] = []
    try:
        settings = load_settings()
    except (WanError, ValueError) as exc:
        print(_line(False, "config", f"{exc}".strip()))
        print("Fix the setting named above (env WAN_MCP_<NAME> or the WAN_MCP_CONFIG file), then run doctor again.")
        return 1
    cfg = os.environ.get("WAN_MCP_CONFIG")
    checks.append((True, "version", f"wan-mcp {__version__}, Python {sys.version.split()[0]}"))
    checks.append((True, "config", f"file {cfg}" if cfg else "env/defaults (no WAN_MCP_CONFIG)"))
    for label, path in (("data dir", settings.data_dir), ("output dir", settings.resolved_output_dir)):
        problem = _writable(path)
        env = "WAN_MCP_DATA_DIR" if label == "data dir" else "WAN_MCP_OUTPUT_DIR"
        checks.append((problem is None, label, f"{problem}; set {env} to a writable folder" if problem else str(path)))
    roots = ", ".join(str(p) for p in settings.read_roots)
    if settings.allowed_dirs is None:
        roots += (
            " (the inbox and the output folder only; earlier versions read your whole home folder: put "
            "pictures in the inbox, or list folders in WAN_MCP_ALLOWED_DIRS)"
        )
    elif settings.allow_broad_dirs:
        roots += " (WAN_MCP_ALLOW_BROAD_DIRS is on: an agent can upload any file in these)"
    checks.append((True, "read roots", roots))
    checks.append(
        (
            True,
            "remote clients",
            "may name files on this machine (WAN_MCP_ALLOW_REMOTE_PATHS)"
            if settings.allow_remote_paths
            else "send images as data: or http(s) URLs; paths are refused over HTTP/SSE",
        )
    )
    checks.append(
        (
            True,
            "image metadata",
            "kept (WAN_MCP_KEEP_IMAGE_METADATA)"
            if settings.keep_image_metadata
            else "EXIF/XMP/GPS removed before upload",
        )
    )
    try:
        import av  # noqa: F401

        checks.append(
            (True, "PyAV", "installed: the simulator's MP4s (serve --simulate, demo), result probing, poster frames")
        )
    except ImportError:
        checks.append(
            (
                False,
                "PyAV",
                "missing (a core dependency): without it serve --simulate and demo cannot render videos and "
                "results get no duration or poster frame; reinstall wan-mcp (pip install --force-reinstall wan-mcp)",
            )
        )
    checks.append(_token_check(settings))
    checks.append(_tenants_check(settings))
    checks.append(anyio.run(_journal_check, settings))
    checks.extend(_spending_checks(settings))
    checks.extend(anyio.run(_gateway_checks, settings))
    for ok, label, detail in checks:
        print(_line(ok, label, detail))
    failed = [label for ok, label, _ in checks if ok is False]
    print(f"{len(failed)} problem(s): fix the FAIL lines above." if failed else "All checks passed.")
    return 1 if failed else 0
