"""HTTP surface of the simulated gateway: Starlette routes over an :class:`Engine`.

Every way a client can get a request wrong answers a 400 in the documented envelope, never a
500 and never a hang: bodies are read against a size cap (declared *and* actual), with a
deadline, before anything is parsed, and parsing failures of any kind become 400s. Uploads
answer in their own ``{"success", "message", "data"}`` envelope; everything else, including
auth failures on the upload routes, uses ``{"error": {"code", "message", "type"}}``.

Videos are rendered on the first download (in a worker thread, once per task even under
concurrent downloads) and cached, so creating hundreds of tasks in a test costs nothing.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from wan_mcp.simulator.connection import ConnectionRegistry
from wan_mcp.simulator.engine import Engine, SimError
from wan_mcp.simulator.middleware import BALANCE_PATHS, FaultMiddleware
from wan_mcp.simulator.uploads import (
    IMAGE_MAX_BYTES,
    IMAGE_TOO_LARGE,
    IMAGE_UNSUPPORTED,
    VIDEO_MAX_BYTES,
    VIDEO_TOO_LARGE,
    VIDEO_UNSUPPORTED,
    sniff_image,
    sniff_video,
)
from wan_mcp.simulator.validation import InvalidRequest

logger = logging.getLogger(__name__)

CREATE_MAX_BYTES: Final = 1024 * 1024
CONTROL_MAX_BYTES: Final = 64 * 1024
MULTIPART_OVERHEAD: Final = 256 * 1024  # headers, boundaries and a small `purpose` field
BODY_TIMEOUT_SECONDS: Final = 30.0
DRAIN_LIMIT: Final = 64 * 1024 * 1024


class UploadError(Exception):
    """A 400 from an upload route, rendered in the upload envelope."""

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


def bad_request(message: str, headers: dict[str, str] | None = None) -> SimError:
    return SimError(400, "invalid_request_error", message, headers)


# Sent with a refusal that leaves an unread body behind: the connection cannot be reused.
CLOSE: Final = {"connection": "close"}
TooLarge = Callable[[dict[str, str] | None], Exception]


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _read_body(request: Request, limit: int, too_large: TooLarge) -> bytes:
    """The whole body, or ``too_large()`` once it passes ``limit`` (the rest is drained, not kept)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise bad_request("invalid Content-Length header", CLOSE)
        if int(declared) > DRAIN_LIMIT:
            raise too_large(CLOSE)  # too big even to drain: answer at once and drop the connection
    chunks: list[bytes] = []
    size = 0
    oversize = False
    with anyio.move_on_after(BODY_TIMEOUT_SECONDS) as scope:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                oversize = True
                if size > DRAIN_LIMIT:
                    break
                continue  # keep draining so the client can read our answer
            chunks.append(chunk)
    if scope.cancelled_caught:
        raise bad_request("request body was not received in time", CLOSE)
    if oversize:
        raise too_large(CLOSE if size > DRAIN_LIMIT else None)
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(raw: bytes, what: str = "body") -> Any:
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise bad_request(f"invalid request parameters: {what} is not valid JSON ({type(exc).__name__})") from None


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def build_app(engine: Engine, connections: ConnectionRegistry | None = None) -> ASGIApp:
    """The complete ASGI app: routes, error envelopes and the fault/log middleware around them."""

    # --- gateway routes -------------------------------------------------------------------------

    async def create(request: Request) -> Response:
        owner = engine.authenticate(request.headers.get("authorization"))
        engine.check_balance()
        if _media_type(request) != "application/json":
            raise bad_request("invalid request parameters: Content-Type must be application/json")
        raw = await _read_body(
            request,
            CREATE_MAX_BYTES,
            lambda headers: bad_request("invalid request parameters: body larger than 1 MB", headers),
        )
        task, created = engine.create_task(_parse_json(raw), owner)
        if not created:
            logger.info("create: client_business_id matched existing task %s", task.id)
        return JSONResponse(engine.create_view(task, _base_url(request)))

    async def status(request: Request) -> Response:
        owner = engine.authenticate(request.headers.get("authorization"))
        task = engine.find_task(request.path_params["reference"], owner)
        return JSONResponse(engine.task_view(task, _base_url(request)))

    async def upload(request: Request, kind: str) -> Response:
        engine.authenticate(request.headers.get("authorization"))
        max_bytes, too_large, unsupported, sniff = (
            (IMAGE_MAX_BYTES, IMAGE_TOO_LARGE, IMAGE_UNSUPPORTED, sniff_image)
            if kind == "image"
            else (VIDEO_MAX_BYTES, VIDEO_TOO_LARGE, VIDEO_UNSUPPORTED, sniff_video)
        )
        if _media_type(request) != "multipart/form-data":
            raise UploadError("Content-Type must be multipart/form-data with the file in a 'file' field")
        raw = await _read_body(request, max_bytes + MULTIPART_OVERHEAD, lambda headers: UploadError(too_large, headers))
        data = await _form_file(request, raw)
        if len(data) > max_bytes:
            raise UploadError(too_large)
        mime_type = sniff(data)
        if mime_type is None:
            raise UploadError(unsupported)
        stored = engine.add_upload(kind, data, mime_type)
        url = f"{_base_url(request)}/files/uploads/{stored.name}"
        payload = {"id": stored.id, "url": url, "mime_type": stored.mime_type, "size": stored.size}
        return JSONResponse({"success": True, "message": "", "data": payload})

    async def upload_image(request: Request) -> Response:
        return await upload(request, "image")

    async def upload_video(request: Request) -> Response:
        return await upload(request, "video")

    async def balance(request: Request) -> Response:
        engine.authenticate(request.headers.get("authorization"))
        return JSONResponse(engine.balance_view())

    # --- file host (public, like a CDN: no auth) ----------------------------------------------------

    async def uploaded_file(request: Request) -> Response:
        stored = engine.uploads.get(request.path_params["name"])
        if stored is None:
            raise SimError(404, "not_found_error", "File not found")
        return Response(stored.data, media_type=stored.mime_type)

    async def video_file(request: Request) -> Response:
        task = engine.video_task(request.path_params["name"])
        data = task.video if task.video is not None else await anyio.to_thread.run_sync(engine.render_video, task)
        return Response(data, media_type="video/mp4", headers={"cache-control": "private, max-age=86400"})

    # --- control plane --------------------------------------------------------------------------

    def loopback_only(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            if not _is_loopback(request):
                raise SimError(403, "permission_error", "control endpoints are loopback-only")
            return await handler(request)

        return guarded

    async def control_body(request: Request) -> dict[str, Any]:
        raw = await _read_body(
            request, CONTROL_MAX_BYTES, lambda headers: bad_request("control body larger than 64 KB", headers)
        )
        body = _parse_json(raw) if raw.strip() else {}
        if not isinstance(body, dict):
            raise bad_request("control body must be a JSON object")
        return body

    async def sim_requests(request: Request) -> Response:
        if request.method == "DELETE":
            engine.clear_requests()
            return JSONResponse({"ok": True})
        endpoint = request.query_params.get("endpoint")
        return JSONResponse([entry.as_dict() for entry in engine.requests(endpoint)])

    async def sim_faults(request: Request) -> Response:
        if request.method == "DELETE":
            engine.clear_faults()
            return JSONResponse({"ok": True})
        if request.method == "GET":
            return JSONResponse([vars(fault) for fault in engine.pending_faults()])
        body = await control_body(request)
        unknown = set(body) - {"endpoint", "kind", "times", "retry_after", "delay", "probability"}
        if unknown:
            raise bad_request(f"unknown fault keys: {', '.join(sorted(unknown))}")
        options = {key: value for key, value in body.items() if value is not None}
        try:
            fault = engine.add_fault(
                options.pop("endpoint", ""),
                options.pop("kind", ""),
                times=options.get("times", 1),
                retry_after=options.get("retry_after"),
                delay=options.get("delay"),
                probability=options.get("probability", 1.0),
            )
        except (ValueError, TypeError) as exc:
            raise bad_request(str(exc)) from None
        return JSONResponse({"ok": True, "fault": vars(fault)})

    async def sim_config(request: Request) -> Response:
        if request.method == "POST":
            try:
                engine.configure(**await control_body(request))
            except (ValueError, TypeError) as exc:
                raise bad_request(str(exc)) from None
        return JSONResponse(vars(engine.config))

    async def sim_tasks(request: Request) -> Response:
        if request.method == "DELETE":
            engine.clear_tasks()
            return JSONResponse({"ok": True})
        return JSONResponse(engine.tasks(_base_url(request)))

    async def sim_finish(request: Request) -> Response:
        return JSONResponse({"finished": engine.finish_tasks_now()})

    async def sim_reset(request: Request) -> Response:
        engine.reset()
        return JSONResponse({"ok": True})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    # --- errors ---------------------------------------------------------------------------------

    async def on_sim_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SimError)
        return JSONResponse(exc.envelope(), status_code=exc.status, headers=exc.headers)

    async def on_invalid(request: Request, exc: Exception) -> Response:
        return JSONResponse(bad_request(str(exc)).envelope(), status_code=400)

    async def on_upload_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, UploadError)
        return JSONResponse({"success": False, "message": exc.message}, status_code=400, headers=exc.headers)

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        err_type = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "invalid_request_error")
        message = "Not found" if exc.status_code == 404 else str(exc.detail)
        envelope = {"error": {"code": exc.status_code, "message": message, "type": err_type}}
        return JSONResponse(envelope, status_code=exc.status_code, headers=exc.headers)

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        return Response(status_code=400)  # nobody is listening; just end the cycle quietly

    async def on_crash(request: Request, exc: Exception) -> Response:
        envelope = {"error": {"code": 500, "message": "simulator bug: " + type(exc).__name__, "type": "server_error"}}
        return JSONResponse(envelope, status_code=500)

    control: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
        ("/_sim/requests", sim_requests, ["GET", "DELETE"]),
        ("/_sim/faults", sim_faults, ["GET", "POST", "DELETE"]),
        ("/_sim/config", sim_config, ["GET", "POST"]),
        ("/_sim/tasks", sim_tasks, ["GET", "DELETE"]),
        ("/_sim/tasks/finish", sim_finish, ["POST"]),
        ("/_sim/reset", sim_reset, ["POST"]),
    ]
    routes = [
        Route("/v1/videos/generations", create, methods=["POST"]),
        Route("/v1/videos/generations/{reference}", status, methods=["GET"]),
        Route("/v1/uploads/images", upload_image, methods=["POST"]),
        Route("/v1/uploads/videos", upload_video, methods=["POST"]),
        *(Route(path, balance, methods=["GET"]) for path in BALANCE_PATHS),
        Route("/files/uploads/{name}", uploaded_file, methods=["GET"]),
        Route("/files/videos/{name}", video_file, methods=["GET"]),
        *(Route(path, loopback_only(handler), methods=methods) for path, handler, methods in control),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            SimError: on_sim_error,
            InvalidRequest: on_invalid,
            UploadError: on_upload_error,
            HTTPException: on_http_exception,
            ClientDisconnect: on_disconnect,
            Exception: on_crash,
        },
    )
    return FaultMiddleware(app, engine, connections or ConnectionRegistry())


async def _form_file(request: Request, raw: bytes) -> bytes:
    """The bytes of the multipart ``file`` field, parsed from an already size-checked body."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return {"type": "http.disconnect"}
        replayed = True
        return {"type": "http.request", "body": raw, "more_body": False}

    parsed = Request(request.scope, receive=replay)
    try:
        form = await parsed.form(max_files=4, max_fields=16, max_part_size=64 * 1024)
    except Exception as exc:  # any parser failure on client bytes is the client's 400, never our 500
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
        raise UploadError(f"Malformed multipart body: {detail}") from None
    try:
        item = form.get("file")
        if not isinstance(item, UploadFile):
            raise UploadError("Missing file: send the file in a multipart field named 'file'")
        return await item.read()
    finally:
        await form.close()
