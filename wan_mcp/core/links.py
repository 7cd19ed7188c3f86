"""Signed, expiring download links: how a remote tenant gets its finished video.

A path on the server means nothing to a client on another machine, so a hosted server hands each
remote tenant a link to its file instead. The link is its own credential (a client fetching a
video rarely holds the MCP bearer token): an HS256 JWT (PyJWT, already here for OAuth) naming the
tenant, the task and the file, valid for a bounded time. The key is the journal's ``server_key``,
made once and shared by every replica on the journal, so any replica serves a link another one
signed. Only files inside the tenant's own output folder are ever served.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote

from wan_mcp.core.tenancy import tenant_folder
from wan_mcp.errors import ErrorCode, WanError

__all__ = ["LINK_KEY", "DownloadLinks", "Link", "LinkClaims"]

#: The journal's ``server_key`` name for the links' signing key.
LINK_KEY: Final = "download-links"
#: Where the HTTP transports serve links (``<base>/files/<task id>.mp4?sig=...``).
FILES_PATH: Final = "/files"
_AUDIENCE: Final = "wan-mcp:file"
_ALGORITHM: Final = "HS256"
_FRESH: Final = "call get_task_status with the task id for a fresh download_url, and use it exactly as given"


@dataclass(frozen=True)
class Link:
    url: str
    expires_at: float


@dataclass(frozen=True)
class LinkClaims:
    """What a valid link names: whose file, of which task, where under the output folder, how big."""

    tenant: str
    task_id: str
    path: Path  # absolute, inside the tenant's folder
    size_bytes: int


class DownloadLinks:
    """Signs links for tenants' files and checks them (``output_dir`` is the shared output folder)."""

    def __init__(
        self,
        key: bytes,
        *,
        base_url: str,
        output_dir: Path,
        ttl_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._base = base_url.rstrip("/")
        self._output = output_dir.resolve()
        self._ttl = ttl_seconds
        self._clock = clock

    def folder(self, tenant: str) -> Path:
        return tenant_folder(self._output, tenant)

    def sign(self, *, tenant: str, task_id: str, local_path: str, size_bytes: int | None) -> Link | None:
        """A link to ``local_path`` for ``tenant``; ``None`` when the file is not in the tenant's folder."""
        path = Path(local_path).resolve()
        if size_bytes is None or not path.is_relative_to(self.folder(tenant)):
            return None
        expires = int(self._clock() + self._ttl)
        claims = {
            "sub": tenant,
            "tid": task_id,
            "path": path.relative_to(self._output).as_posix(),
            "size": size_bytes,
            "exp": expires,
            "aud": _AUDIENCE,
        }
        import jwt  # (loaded on first use: a stdio server never signs, and starts without it)

        token = jwt.encode(claims, self._key, algorithm=_ALGORITHM)
        return Link(f"{self._base}{FILES_PATH}/{quote(task_id, safe='')}.mp4?sig={token}", float(expires))

    def check(self, name: str, token: str) -> LinkClaims:
        """The claims of a link fetched as ``/files/<name>?sig=<token>``; a ``WanError`` if it is not ours,
        altered, expired, or names a file outside its tenant's folder."""
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                audience=_AUDIENCE,
                # expiry is compared below, on this deployment's clock (the one that signed)
                options={"require": ["exp", "sub", "tid", "path", "size"], "verify_exp": False},
            )
        except jwt.InvalidTokenError:
            raise WanError(
                ErrorCode.AUTH,
                "this download link is not valid (altered, or signed by another server)",
                hint=_FRESH,
            ) from None
        tenant, task_id, rel, size, exp = (claims[k] for k in ("sub", "tid", "path", "size", "exp"))
        if not all(isinstance(v, str) for v in (tenant, task_id, rel)) or not isinstance(size, int):
            raise WanError(ErrorCode.AUTH, "this download link is not valid (malformed claims)", hint=_FRESH)
        if not isinstance(exp, (int, float)) or exp <= self._clock():
            raise WanError(
                ErrorCode.AUTH,
                "this download link has expired",
                hint=_FRESH,
            )
        if name != f"{task_id}.mp4":
            raise WanError(ErrorCode.AUTH, "this download link is not valid (its name was changed)", hint=_FRESH)
        path = (self._output / rel).resolve()
        if not path.is_relative_to(self.folder(tenant)):
            raise WanError(ErrorCode.AUTH, "this download link is not valid (outside its owner's folder)", hint=_FRESH)
        return LinkClaims(tenant=tenant, task_id=task_id, path=path, size_bytes=size)
