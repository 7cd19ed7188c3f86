"""The simulated gateway's state: tasks on a clock, uploads, auth, balance, faults and the request log.

Nothing here knows about HTTP routing; :mod:`wan_mcp.simulator.app` translates requests into
calls on :class:`Engine`, and tests drive the same object directly (``sim.engine``).

Task progress is computed lazily from a monotonic clock whenever someone looks, so there are
no background tasks to leak or cancel, and a task's phase depends only on elapsed time:
``queued`` for the first 20 % of ``job_seconds``, then ``in_progress`` with rising progress,
then ``completed`` or ``failed``. ``job_seconds`` is captured per task at creation, so
re-configuring speed never rewinds a task already running.

Choices the contract leaves open, marked [I] (ours):
- A repeated ``client_business_id`` from the same key returns the existing task (HTTP 200,
  same id) instead of creating a second one or answering 409, whatever the new body says.
- Business ids are scoped to the key that created the task; task ids are global (unguessable).
- The balance (USD, ``config.balance``) is spent per second of video as each task completes,
  at the gateway's own per-second prices (:data:`USD_PER_SECOND`, deliberately not the server's
  estimates); failed tasks are not billed (the gateway refunds them). When what is left is
  ``<= 0`` every create answers 402, checked before validation.
- ``audio: false`` on ``wan2.6`` is accepted and ignored (the non-flash model always has audio).
- ``complete_without_url`` yields ``result: {"type": "video", "data": []}``: no URL anywhere.
- URL expiry is judged with the *current* ``url_ttl_seconds`` so a test can expire old results.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from PIL import Image

from wan_mcp.simulator.faults import Fault, FaultSchedule, make_fault
from wan_mcp.simulator.render import RenderSpec, render_mp4
from wan_mcp.simulator.uploads import EXTENSIONS, Upload, UploadStore
from wan_mcp.simulator.validation import FRAME_SIZES, GenerationRequest, closest_aspect_ratio, validate_create

logger = logging.getLogger("wan_mcp.simulator.app")

QUEUED_FRACTION: Final = 0.2
#: What the simulated gateway bills per second of output, by (model, resolution, audio).
USD_PER_SECOND: Final[dict[tuple[str, str, bool], float]] = {
    ("wan2.6", "720p", True): 0.04,
    ("wan2.6", "1080p", True): 0.06,
    ("wan2.6-flash", "720p", True): 0.042,
    ("wan2.6-flash", "1080p", True): 0.07,
    ("wan2.6-flash", "720p", False): 0.021,
    ("wan2.6-flash", "1080p", False): 0.035,
}
CREDITS_PER_USD: Final = 200
CONTENT_POLICY_MESSAGE: Final = "Generation failed: Content violates the content policy"
_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

STATUS_STYLES: Final = ("queued", "submitted", "pending")
#: How a job's reported progress moves over its time (real gateways' curves are unknown, so the
#: tracker's completion prediction is measured on several): ``linear`` (queued for the first
#: 20 %, then even), ``queue_heavy`` (queued for 60 %, then even), ``slow_tail`` (a fast start,
#: a slow end), ``stall`` (even to 50 %, stuck there for 40 % of the time, then even again).
PROGRESS_CURVES: Final = ("linear", "queue_heavy", "slow_tail", "stall")
CREATE_ENVELOPES: Final = ("task", "old")
URL_STYLES: Final = ("result", "top_level")


class SimError(Exception):
    """An HTTP error the gateway would answer with ``{"error": {"code", "message", "type"}}``."""

    def __init__(self, status: int, err_type: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.err_type = err_type
        self.message = message
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message, "type": self.err_type}}


def unauthorized() -> SimError:
    return SimError(401, "authentication_error", "Authentication failed, please check your API key")


def task_not_found() -> SimError:
    return SimError(404, "not_found_error", "Task not found")


@dataclass
class SimConfig:
    """Knobs tests flip at runtime (``Engine.configure``); see docs/SIMULATOR_API.md."""

    status_style: str = "queued"
    create_envelope: str = "task"
    complete_without_url: bool = False
    fail_prompts_containing: str | None = None
    job_seconds: float = 0.3
    url_ttl_seconds: int = 86_400
    balance: float = 100.0
    url_style: str = "result"
    progress_curve: str = "linear"
    #: Render each task's MP4 in the background as soon as it is created (one at a time), so a
    #: download never waits on a render: for the demo and ``serve --simulate``, off in tests.
    render_on_create: bool = False
    #: Tasks of one shape (size, duration, audio, model, mode) share one rendering whatever their
    #: prompt and seed: for load benchmarks, where a thousand distinct renders would take minutes.
    render_by_shape: bool = False

    def updated(self, changes: dict[str, Any]) -> SimConfig:
        """A validated copy with ``changes`` applied; raises ValueError naming the bad key."""
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise ValueError(f"unknown config key {key!r}; expected one of {', '.join(sorted(known))}")
        new = copy.copy(self)
        for key, value in changes.items():
            setattr(new, key, _checked_config_value(key, value))
        return new


def _checked_config_value(key: str, value: Any) -> Any:
    enums = {
        "status_style": STATUS_STYLES,
        "create_envelope": CREATE_ENVELOPES,
        "url_style": URL_STYLES,
        "progress_curve": PROGRESS_CURVES,
    }
    if key in enums:
        if value not in enums[key]:
            raise ValueError(f"{key} must be one of {', '.join(enums[key])}")
        return value
    if key in ("complete_without_url", "render_on_create", "render_by_shape"):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be a boolean")
        return value
    if key == "fail_prompts_containing":
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError("fail_prompts_containing must be a non-empty string or null")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key} must be a non-negative number")
    if key == "url_ttl_seconds":
        return int(value)
    return float(value)


@dataclass(frozen=True)
class RequestLogEntry:
    """One request as the simulator saw it. ``status`` 0 = no response sent (reset) or still in flight."""

    method: str
    path: str
    status: int
    endpoint: str
    fault: str | None = None
    at: float = field(default=0.0, compare=False)  # engine clock at arrival (virtual in timing tests)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "endpoint": self.endpoint,
            "fault": self.fault,
            "at": self.at,
        }


@dataclass
class LogRecord:
    """Mutable while the request is in flight, so a stalled request is visible to tests at once."""

    method: str
    path: str
    endpoint: str
    status: int = 0
    fault: str | None = None
    at: float = 0.0

    def freeze(self) -> RequestLogEntry:
        return RequestLogEntry(self.method, self.path, self.status, self.endpoint, self.fault, self.at)


@dataclass
class Task:
    """An upstream task. Immutable facts plus the lazily rendered video."""

    id: str
    owner: str
    request: GenerationRequest
    body: dict[str, Any]
    created_mono: float
    created_wall: float
    job_seconds: float
    seed: int
    aspect_ratio: str
    width: int
    height: int
    fail_message: str | None
    video: bytes | None = field(default=None, repr=False)
    curve: str = "linear"


class Engine:
    """All simulator state behind one lock; safe to call from tests while the server runs."""

    def __init__(
        self,
        *,
        api_keys: Iterable[str] | None = None,
        job_seconds: float = 0.3,
        seed: int = 0,
        balance: float = 100.0,
        url_ttl_seconds: int = 86_400,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.RLock()
        self._api_keys = frozenset(api_keys) if api_keys is not None else None
        self._config = SimConfig().updated(
            {"job_seconds": job_seconds, "balance": balance, "url_ttl_seconds": url_ttl_seconds}
        )
        self._initial_config = copy.copy(self._config)
        self._rng = random.Random(f"seeds:{seed}")  # the seeds of tasks that give none
        self._faults = FaultSchedule(seed)
        self._clock = clock
        self._wall_clock = wall_clock
        self._tasks: dict[str, Task] = {}
        self._business_ids: dict[tuple[str, str], str] = {}
        self._log: list[LogRecord] = []
        self._render_locks: dict[str, threading.Lock] = {}
        self._shape_renders: dict[RenderSpec, bytes] = {}  # render_by_shape: one MP4 per shape
        self.uploads = UploadStore()
        self.base_url: str | None = None  # set by the harness once the port is known
        self.closing = threading.Event()  # set on shutdown: stalls and delays end early
        self._renderer: ThreadPoolExecutor | None = None

    # --- configuration ----------------------------------------------------------------------------

    @property
    def config(self) -> SimConfig:
        with self._lock:
            return copy.copy(self._config)

    def configure(self, **changes: Any) -> None:
        """Apply ``SimConfig`` changes atomically (all or nothing)."""
        with self._lock:
            self._config = self._config.updated(changes)

    # --- faults -----------------------------------------------------------------------------------

    def add_fault(
        self,
        endpoint: str,
        kind: str,
        *,
        times: int = 1,
        retry_after: float | None = None,
        delay: float | None = None,
        probability: float = 1.0,
    ) -> Fault:
        fault = make_fault(endpoint, kind, times=times, retry_after=retry_after, delay=delay, probability=probability)
        self._faults.add(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def pending_faults(self) -> list[Fault]:
        return self._faults.pending()

    def take_fault(self, endpoint: str) -> Fault | None:
        return self._faults.take(endpoint)

    # --- request log ------------------------------------------------------------------------------

    def log_request(self, method: str, path: str, endpoint: str) -> LogRecord:
        record = LogRecord(method, path, endpoint, at=self._clock())
        with self._lock:
            self._log.append(record)
        return record

    def requests(self, endpoint: str | None = None) -> list[RequestLogEntry]:
        with self._lock:
            return [r.freeze() for r in self._log if endpoint is None or r.endpoint == endpoint]

    def count(self, endpoint: str | None = None) -> int:
        return len(self.requests(endpoint))

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    # --- auth and balance -------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> str:
        """Return an owner fingerprint for a valid ``Bearer`` header (never the key itself)."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized()
        if self._api_keys is not None and token not in self._api_keys:
            raise unauthorized()
        return hashlib.sha256(token.encode()).hexdigest()[:16]

    def used_balance(self) -> float:
        """USD billed so far: every completed task's seconds at its price (computed when asked)."""
        with self._lock:
            tasks = list(self._tasks.values())
        used = 0.0
        for task in tasks:
            if self.phase(task)[0] == "completed":
                req = task.request
                used += USD_PER_SECOND.get((req.model, req.resolution, req.audio), 0.07) * req.duration
        return round(used, 6)

    def remaining_balance(self) -> float:
        return round(self.config.balance - self.used_balance(), 6)

    def check_balance(self) -> None:
        if self.remaining_balance() <= 0:
            raise SimError(402, "payment_required", "Insufficient account balance, please top up and retry")

    def balance_view(self) -> dict[str, Any]:
        used = self.used_balance()
        remain = round(self.config.balance - used, 6)
        return {
            "success": True,
            "remain_balance": remain,
            "used_balance": used,
            "remain_credits": int(remain * CREDITS_PER_USD),
            "used_credits": int(used * CREDITS_PER_USD),
            "credits_per_usd": CREDITS_PER_USD,
            "unlimited_quota": False,
        }

    # --- tasks ------------------------------------------------------------------------------------

    def create_task(self, body: object, owner: str) -> tuple[Task, bool]:
        """Validate and create; returns (task, created). Raises SimError or InvalidRequest."""
        self.check_balance()
        config = self.config
        request = validate_create(body)
        assert isinstance(body, dict)
        aspect_ratio = request.aspect_ratio or "16:9"
        if request.mode == "i2v" and request.image_url is not None:
            aspect_ratio = self._image_aspect_ratio(request.image_url)
        width, height = FRAME_SIZES[(aspect_ratio, request.resolution)]
        fail_message = None
        needle = config.fail_prompts_containing
        if needle and needle.lower() in (request.prompt or "").lower():
            fail_message = CONTENT_POLICY_MESSAGE
        with self._lock:
            if request.client_business_id is not None:
                existing = self._business_ids.get((owner, request.client_business_id))
                if existing is not None:
                    return self._tasks[existing], False
            task = Task(
                id=self._new_id("video_"),
                owner=owner,
                request=request,
                body=copy.deepcopy(body),
                created_mono=self._clock(),
                created_wall=self._wall_clock(),
                job_seconds=config.job_seconds,
                seed=request.seed if request.seed is not None else self._rng.randrange(2**31),
                aspect_ratio=aspect_ratio,
                width=width,
                height=height,
                fail_message=fail_message,
                curve=config.progress_curve,
            )
            self._tasks[task.id] = task
            if request.client_business_id is not None:
                self._business_ids[(owner, request.client_business_id)] = task.id
        if config.render_on_create and not self.closing.is_set():
            self._background_render(task)
        return task, True

    def _background_render(self, task: Task) -> None:
        with self._lock:
            if self._renderer is None:
                self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wan-sim-render")
            renderer = self._renderer
        with contextlib.suppress(RuntimeError):  # shut down meanwhile: the download renders on demand
            renderer.submit(self._render_quietly, task)

    def _render_quietly(self, task: Task) -> None:
        if self.closing.is_set():
            return
        try:
            self.render_video(task)
        except Exception:  # the download will render (and report) it again
            logger.exception("background render of %s failed", task.id)

    def close(self) -> None:
        """Stop background renders (pending ones are dropped; downloads render on demand)."""
        self.closing.set()
        with self._lock:
            renderer, self._renderer = self._renderer, None
        if renderer is not None:
            renderer.shutdown(wait=False, cancel_futures=True)

    def render_video(self, task: Task) -> bytes:
        """The task's MP4, rendered once however many callers race for it. Blocking (PyAV).

        The HTTP route calls it from a worker thread; a test may call it ahead of a download
        (``SimulatorServer.prerender``) so that no download waits on a render.
        """
        with self._lock:
            lock = self._render_locks.setdefault(task.id, threading.Lock())
        with lock:
            if task.video is None:
                spec = self.render_spec(task)
                if self.config.render_by_shape:
                    spec = replace(spec, prompt="", negative_prompt="", seed=0, image=None, reference=None,
                                   source_label="")  # fmt: skip
                    with self._lock:
                        shared = self._shape_renders.get(spec)
                    if shared is not None:
                        task.video = shared
                        return shared
                started = time.perf_counter()
                task.video = render_mp4(spec)
                if self.config.render_by_shape:
                    with self._lock:
                        while len(self._shape_renders) >= 8:
                            self._shape_renders.pop(next(iter(self._shape_renders)))
                        self._shape_renders[spec] = task.video
                logger.info(
                    "rendered %s (%s %dx%d %ds audio=%s) in %.2fs, %d bytes",
                    task.id,
                    spec.mode,
                    spec.width,
                    spec.height,
                    spec.duration,
                    spec.audio,
                    time.perf_counter() - started,
                    len(task.video),
                )
        with self._lock:
            self._render_locks.pop(task.id, None)
        return task.video

    def finish_tasks_now(self) -> int:
        """Let every task's job end now (a test's fast-forward); returns how many were still running.

        Lets a test hold a job "running" for as long as it needs (a long ``job_seconds``), then
        see it complete without waiting, so no outcome depends on how fast the machine is.
        """
        with self._lock:
            now = self._clock()
            running = [t for t in self._tasks.values() if now - t.created_mono < t.job_seconds]
            for task in running:
                task.created_mono = now - task.job_seconds
            return len(running)

    def clear_tasks(self) -> None:
        """Forget every task (and its rendered video); ids keep advancing, so none is ever reused."""
        with self._lock:
            self._tasks.clear()
            self._business_ids.clear()

    def reset(self) -> None:
        """Back to the state just after construction (config, faults, log, tasks, uploads)."""
        with self._lock:
            self._config = copy.copy(self._initial_config)
            self._log.clear()
            self.clear_tasks()
            self.uploads.clear()
        self._faults.clear()

    def find_task(self, reference: str, owner: str) -> Task:
        """Look up by task id, else by the caller's own ``client_business_id``."""
        with self._lock:
            task = self._tasks.get(reference)
            if task is None:
                task_id = self._business_ids.get((owner, reference))
                task = self._tasks.get(task_id) if task_id is not None else None
        if task is None:
            raise task_not_found()
        return task

    def phase(self, task: Task) -> tuple[str, int]:
        """(status, progress) right now, before any ``status_style`` renaming."""
        elapsed = self._clock() - task.created_mono
        if elapsed >= task.job_seconds:
            return ("failed", 0) if task.fail_message else ("completed", 100)
        queued = 0.6 if task.curve == "queue_heavy" else QUEUED_FRACTION
        queued_for = task.job_seconds * queued
        if elapsed < queued_for:
            return "queued", 0
        fraction = (elapsed - queued_for) / (task.job_seconds - queued_for)
        if task.curve == "slow_tail":
            fraction = 1 - (1 - fraction) ** 2
        elif task.curve == "stall":
            fraction = 0.5 * min(1.0, fraction / 0.3) + 0.5 * max(0.0, (fraction - 0.7) / 0.3)
        return "in_progress", max(1, min(99, int(1 + 98 * fraction)))

    def completed_at(self, task: Task) -> int:
        return int(task.created_wall + task.job_seconds)

    def video_url(self, task: Task, base_url: str) -> str:
        return f"{base_url}/files/videos/{task.id}.mp4"

    def task_view(self, task: Task, base_url: str) -> dict[str, Any]:
        """The ``generation.task`` object a status GET returns."""
        config = self.config
        status, progress = self.phase(task)
        view: dict[str, Any] = {"id": task.id}
        if task.request.client_business_id is not None:
            view["client_business_id"] = task.request.client_business_id
        view.update(
            {
                "object": "generation.task",
                "model": task.request.model,
                "status": config.status_style if status == "queued" else status,
                "progress": progress,
                "created_at": int(task.created_wall),
            }
        )
        if status == "completed":
            completed_at = self.completed_at(task)
            view["completed_at"] = completed_at
            view["expires_at"] = completed_at + config.url_ttl_seconds
            if config.complete_without_url:
                view["result"] = {"type": "video", "data": []}
            elif config.url_style == "top_level":
                view["url"] = self.video_url(task, base_url)
            else:
                view["result"] = {
                    "type": "video",
                    "data": [{"url": self.video_url(task, base_url), "format": "mp4"}],
                }
        elif status == "failed":
            view["error"] = {"code": "generation_failed", "message": task.fail_message}
        return view

    def create_view(self, task: Task, base_url: str) -> dict[str, Any]:
        """The create response, in the configured envelope."""
        if self.config.create_envelope == "old":
            return {"code": 200, "data": [{"status": "submitted", "task_id": task.id}]}
        view = self.task_view(task, base_url)
        view["metadata"] = {} if task.request.model == "wan2.6-flash" else {"aspect_ratio": task.aspect_ratio}
        return view

    def tasks(self, base_url: str | None = None) -> list[dict[str, Any]]:
        """Every task: its public view plus what the simulator decided (mode, size, seed, body)."""
        with self._lock:
            snapshot = list(self._tasks.values())
        base = base_url or self.base_url or ""
        result = []
        for task in snapshot:
            view = self.task_view(task, base)
            view.update(
                {
                    "mode": task.request.mode,
                    "aspect_ratio": task.aspect_ratio,
                    "resolution": task.request.resolution,
                    "width": task.width,
                    "height": task.height,
                    "duration": task.request.duration,
                    "audio": task.request.audio,
                    "seed": task.seed,
                    "owner": task.owner,
                    "request": copy.deepcopy(task.body),
                }
            )
            result.append(view)
        return result

    def video_task(self, name: str) -> Task:
        """The completed task behind ``/files/videos/<name>``; 404 if none, 410 once expired."""
        task_id = name.removesuffix(".mp4")
        with self._lock:
            task = self._tasks.get(task_id) if name.endswith(".mp4") else None
        if task is None or self.phase(task)[0] != "completed":
            raise SimError(404, "not_found_error", "File not found")
        expires_mono = task.created_mono + task.job_seconds + self.config.url_ttl_seconds
        if self._clock() >= expires_mono:
            raise SimError(410, "expired_error", "The file has expired; submit a new task")
        return task

    def render_spec(self, task: Task) -> RenderSpec:
        request = task.request
        image = reference = None
        source_label = ""
        if request.mode == "i2v" and request.image_url is not None:
            upload = self.local_upload(request.image_url)
            image = upload.data if upload is not None and upload.kind == "image" else None
            source_label = request.image_url
        elif request.mode == "r2v" and request.reference_urls:
            upload = self.local_upload(request.reference_urls[0])
            reference = upload.data if upload is not None and upload.kind == "video" else None
            source_label = request.reference_urls[0]
        return RenderSpec(
            width=task.width,
            height=task.height,
            duration=request.duration,
            audio=request.audio,
            seed=task.seed,
            model=request.model,
            mode=request.mode,
            prompt=request.prompt or "",
            negative_prompt=request.negative_prompt or "",
            shot_type=request.shot_type or "single",
            image=image,
            reference=reference,
            source_label=source_label,
        )

    # --- uploads ----------------------------------------------------------------------------------

    def add_upload(self, kind: str, data: bytes, mime_type: str) -> Upload:
        with self._lock:
            upload_id = "upload_" + secrets.token_hex(6)
        upload = Upload(upload_id, kind, upload_id + EXTENSIONS[mime_type], mime_type, data)
        self.uploads.add(upload)
        return upload

    def local_upload(self, url: str) -> Upload | None:
        """The upload a URL names if it points into our own ``/files/uploads/`` (any host alias)."""
        path = unquote(urlsplit(url).path)
        prefix = "/files/uploads/"
        return self.uploads.get(path[len(prefix) :]) if path.startswith(prefix) else None

    # --- helpers ----------------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        # Ids come from the system's randomness, never from ``seed``: a real gateway never hands
        # out an id twice, and a journal that outlives one simulator session (``serve
        # --simulate`` started again on the same data dir) must not see a repeat.
        value = secrets.randbits(130)
        return prefix + "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(26))

    def _image_aspect_ratio(self, url: str) -> str:
        """i2v orientation follows the image; a foreign URL (unreachable offline) falls back to 16:9."""
        upload = self.local_upload(url)
        if upload is None or upload.kind != "image":
            return "16:9"
        try:
            with Image.open(io.BytesIO(upload.data)) as picture:
                width, height = picture.size
                orientation = picture.getexif().get(0x0112, 1)
        except Exception:  # undecodable upload: the render draws a placeholder anyway
            return "16:9"
        if orientation in (5, 6, 7, 8):  # EXIF rotations by 90 degrees swap the displayed sides
            width, height = height, width
        return closest_aspect_ratio(width, height)
