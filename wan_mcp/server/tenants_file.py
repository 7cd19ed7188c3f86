"""The tenants file: who may call an HTTP/SSE server, and what each was granted.

Why a file of digests: a small team shares one endpoint without an identity provider. Each
tenant holds a long random bearer token; the file keeps only its SHA-256 (a leaked file lets
nobody in), plus the tenant's budgets, call rate, and optionally the *name* of an environment
variable holding the tenant's own gateway key (never the key). ``wan-mcp tenant add NAME``
makes the token, prints it once and writes the digest. Shape::

    {"tenants": {"alice": {"token_sha256": "<64 hex>", "budget_daily_usd": 10,
                           "budget_session_usd": null, "rate_per_minute": 60,
                           "api_key_env": "ALICE_TOAPIS_KEY"}}}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from wan_mcp.core.tenancy import TENANT_ID
from wan_mcp.errors import ErrorCode, WanError

__all__ = ["TenantEntry", "add_tenant", "load_tenants", "remove_tenant", "token_sha256"]

#: Names the server gives principals of its own (static tokens, OAuth subjects, stdio): not for the file.
RESERVED_PREFIXES: Final = ("token-", "oauth-")
RESERVED_NAMES: Final = frozenset({"local"})
_ENV_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
_FIELDS: Final = ("token_sha256", "api_key_env", "budget_daily_usd", "budget_session_usd", "rate_per_minute")


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TenantEntry:
    """One tenant as the file states it. ``None`` budgets and rate mean the server's setting."""

    id: str
    token_sha256: str | None = None
    api_key_env: str | None = None
    budget_daily_usd: float | None = None
    budget_session_usd: float | None = None
    rate_per_minute: float | None = None


def _bad(path: Path, what: str) -> WanError:
    return WanError(
        ErrorCode.CONFIG,
        f"the tenants file {path} is not valid: {what}",
        hint="fix it by hand, or rebuild it with `wan-mcp tenant add NAME` (see README: Hosting for several users)",
    )


def check_name(name: str) -> None:
    if not TENANT_ID.match(name) or name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        raise WanError(
            ErrorCode.INVALID_REQUEST,
            f"{name!r} is not a usable tenant name",
            field="name",
            allowed=[TENANT_ID.pattern, "not 'local', not starting with 'token-' or 'oauth-'"],
            hint="use lower-case letters, digits, '-' and '_' (up to 64), e.g. alice or team-video",
        )


def _number(path: Path, name: str, field: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != value:
        raise _bad(path, f"tenant {name!r}: {field} must be a number >= 0 or null")
    return float(value)


def _entry(path: Path, name: str, raw: Any) -> TenantEntry:
    try:
        check_name(name)
    except WanError as err:
        raise _bad(path, err.message) from None
    if not isinstance(raw, dict):
        raise _bad(path, f"tenant {name!r} must be an object")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise _bad(path, f"tenant {name!r} has unknown fields {unknown}; allowed: {list(_FIELDS)}")
    digest = raw.get("token_sha256")
    if digest is not None and (not isinstance(digest, str) or not _HEX64.match(digest)):
        raise _bad(path, f"tenant {name!r}: token_sha256 must be 64 lower-case hex digits (the token's SHA-256)")
    env = raw.get("api_key_env")
    if env is not None and (not isinstance(env, str) or not _ENV_NAME.match(env)):
        raise _bad(path, f"tenant {name!r}: api_key_env must name an environment variable (not hold the key)")
    return TenantEntry(
        id=name,
        token_sha256=digest,
        api_key_env=env,
        budget_daily_usd=_number(path, name, "budget_daily_usd", raw.get("budget_daily_usd")),
        budget_session_usd=_number(path, name, "budget_session_usd", raw.get("budget_session_usd")),
        rate_per_minute=_number(path, name, "rate_per_minute", raw.get("rate_per_minute")),
    )


def load_tenants(path: Path) -> list[TenantEntry]:
    """The file's tenants; a missing file is an empty list, a malformed one a CONFIG error."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _bad(path, f"it cannot be read ({exc.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise _bad(path, f"it is larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(path, f"it is not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tenants", {}), dict):
        raise _bad(path, 'it must be an object {"tenants": {"<name>": {...}}}')
    entries = [_entry(path, name, raw) for name, raw in doc.get("tenants", {}).items()]
    digests = [e.token_sha256 for e in entries if e.token_sha256]
    if len(digests) != len(set(digests)):
        raise _bad(path, "two tenants share one token")
    return entries


def _write(path: Path, entries: list[TenantEntry]) -> None:
    """Atomically replace the file, private to this user (it lists who may spend)."""
    doc = {"tenants": {e.id: {k: v for k, v in asdict(e).items() if k != "id" and v is not None} for e in entries}}
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tenants-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).chmod(0o600)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_tenant(path: Path, entry: TenantEntry, *, rotate: bool = False) -> str:
    """Add ``entry`` (or with ``rotate`` give an existing one a new token); returns the new token.

    The token is returned once, to be shown once: only its digest is written.
    """
    check_name(entry.id)
    entries = load_tenants(path)
    existing = next((e for e in entries if e.id == entry.id), None)
    if existing is not None and not rotate:
        raise WanError(
            ErrorCode.INVALID_REQUEST,
            f"tenant {entry.id!r} already exists in {path}",
            field="name",
            hint="pick another name, or pass --rotate to give it a new token (its old token stops working)",
        )
    token = secrets.token_urlsafe(32)
    fresh = TenantEntry(**{**asdict(existing if rotate and existing else entry), "token_sha256": token_sha256(token)})
    _write(path, [e for e in entries if e.id != entry.id] + [fresh])
    return token


def remove_tenant(path: Path, name: str) -> bool:
    """Drop ``name`` from the file (its token stops working at the server's next read). True if it was there."""
    entries = load_tenants(path)
    kept = [e for e in entries if e.id != name]
    if len(kept) == len(entries):
        return False
    _write(path, kept)
    return True
