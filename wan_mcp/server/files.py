"""``GET|HEAD /files/<task id>.mp4?sig=...``: a remote tenant's finished video, served by any replica.

The signed link (:mod:`wan_mcp.core.links`) is the credential: whoever the agent hands it to (the
user's browser, a player) can fetch the file until it expires, without the MCP bearer token. The
route needs only the signing key, read once from the journal every replica shares, and the shared
output folder; it answers a bad, altered or expired link with 403 and a file no longer there with
404, each with a JSON body saying what to do next. Range requests are served (players seek).
"""

from __future__ import annotations

import logging
import os
import stat

import anyio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from wan_mcp.config import Settings
from wan_mcp.core import offload
from wan_mcp.core.links import FILES_PATH, DownloadLinks
from wan_mcp.errors import ErrorCode, WanError
from wan_mcp.server.app import download_links, open_journal

__all__ = ["FILES_ROUTE", "FileRoute"]

log = logging.getLogger("wan_mcp.files")

FILES_ROUTE = FILES_PATH + "/{name}"


def _refusal(status: int, err: WanError) -> JSONResponse:
    return JSONResponse({"error": err.to_dict()}, status_code=status, headers={"Cache-Control": "no-store"})


class FileRoute:
    """The Starlette endpoint; ``base_url`` is where this server's links point (the same on every replica)."""

    def __init__(self, settings: Settings, base_url: str) -> None:
        self._settings = settings
        self._base = base_url
        self._links: DownloadLinks | None = None
        self._loading: anyio.Lock | None = None

    async def _checker(self) -> DownloadLinks:
        """The link checker, with the key read from the journal on first use (then kept)."""
        if self._links is None:
            if self._loading is None:
                self._loading = anyio.Lock()
            async with self._loading:
                if self._links is None:
                    journal = await open_journal(self._settings)
                    try:
                        self._links = await download_links(self._settings, journal, self._base)
                    finally:
                        await journal.close()
        return self._links

    async def handle(self, request: Request) -> Response:
        name = request.path_params.get("name", "")
        token = request.query_params.get("sig", "")
        if not token or len(token) > 4096:
            return _refusal(
                403,
                WanError(
                    ErrorCode.AUTH,
                    "this download link has no valid signature",
                    hint="call get_task_status with the task id for a fresh download_url, and use it exactly as given",
                ),
            )
        try:
            claims = (await self._checker()).check(name, token)
        except WanError as err:
            if err.code is ErrorCode.JOURNAL:  # the key cannot be read now: try again shortly
                return _refusal(503, err)
            return _refusal(403, err)

        def look() -> os.stat_result | None:
            try:
                found = claims.path.stat()
            except OSError:
                return None
            return found if stat.S_ISREG(found.st_mode) and found.st_size == claims.size_bytes else None

        found = await offload.run_sync(look)
        if found is None:
            return _refusal(
                404,
                WanError(
                    ErrorCode.NOT_FOUND,
                    f"the video of task {claims.task_id} is no longer on this server",
                    task_id=claims.task_id,
                    hint=f"call get_task_status(task_id='{claims.task_id}') to fetch it again and get a new link",
                ),
            )
        log.info("serving %s to a link holder of tenant %s", claims.task_id, claims.tenant)
        return FileResponse(
            claims.path,
            stat_result=found,
            media_type="video/mp4",
            filename=f"{claims.task_id}.mp4",
            content_disposition_type="inline",
            headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"},
        )
