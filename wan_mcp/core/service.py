"""The use cases behind the four tools, independent of MCP.

The server layer is a thin adapter over :class:`VideoService`; everything that
decides *what happens* lives here so it can be tested without a protocol in between,
and so another front (a CLI, a REST shim) would behave identically.

The order of operations is the product's promise:
validate (no side effect) -> resolve local media (uploads, de-duplicated) ->
journal the submission -> POST once with a business id -> journal the task id ->
only then tell the agent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx2

from wan_mcp.config import Settings
from wan_mcp.core import offload
from wan_mcp.core.arguments import Problem
from wan_mcp.core.boundary import FileBoundary, UrlPolicy, download_to
from wan_mcp.core.caches import Lru
from wan_mcp.core.journal import (
    TERMINAL,
    Duplicate,
    OverBudget,
    Submission,
    TaskJournal,
    TaskRecord,
    TokenRefused,
    UploadRecord,
    check_list_status,
)
from wan_mcp.core.leases import DownloadLeases
from wan_mcp.core.links import DownloadLinks
from wan_mcp.core.media import (
    DescribeHelpers,
    VideoDescriber,
    looks_like_image,
    prepare_image,
    sniff_video,
    video_problem,
)
from wan_mcp.core.media.film import MAX_FILM_PARTS, FilmError, join_clips, last_frame_png
from wan_mcp.core.request import (
    MediaSource,
    SourceKind,
    ValidatedRequest,
    decode_data_url,
    parse_video_request,
    request_fingerprint,
)
from wan_mcp.core.spending import (
    CONFIRM_TOKEN_TTL_SECONDS,
    MICRO,
    Confirmer,
    Decision,
    PriceTable,
    Quote,
    Spend,
    SpendingPolicy,
    format_usd,
    new_confirm_token,
    refusals,
    token_digest,
)
from wan_mcp.core.tenancy import LOCAL, Tenant, tenant_folder
from wan_mcp.core.tracker import TaskTracker, UpdateFn, observation_of
from wan_mcp.core.views import ErrorInfo, PlanView, QuoteView, TaskList, TaskView, UploadView, UsageView, iso
from wan_mcp.errors import ErrorCode, WanError
from wan_mcp.gateway.provider import VideoProvider
from wan_mcp.gateway.wire import classify_failure

log = logging.getLogger("wan_mcp.service")

_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
#: Codes after which the gateway provably created nothing (nothing billed): safe to forget.
_DEFINITE_REJECTIONS = frozenset(
    {
        ErrorCode.INVALID_REQUEST,
        ErrorCode.AUTH,
        ErrorCode.PAYMENT,
        ErrorCode.CONTENT_POLICY,
        ErrorCode.RATE_LIMITED,
        ErrorCode.CONFIG,
    }
)
#: How many finished files' probe + poster results are kept in memory (posters are <= 24 kB).
_DESCRIBED_CACHE = 64
#: How many images may be decoded and re-encoded at the same time (each can hold ~160 MB).
IMAGE_PREPARATIONS = 1
#: How many finished videos may be probed and given a poster at once (helper processes, see
#: media/describer.py): when a thousand tasks finish together, decoding them all at once spikes
#: memory and starves the event loop; two at a time keep both bounded (each takes 5-10 ms, bench
#: figures 9 and 12).
DESCRIBE_CONCURRENCY = 2
#: How many result files may download at once. The process's one HTTP client has 20 connections,
#: shared with every gateway call: a hundred jobs finishing together once held all of them, so
#: downloads and status reads queued past the pool timeout and failed (found by the three-replica
#: test; tests/integration/test_download_pool.py). Four at a time keep most of the pool free.
DOWNLOAD_CONCURRENCY = 4
#: How many settled status results (completed and saved, or failed) are answered from memory.
_SETTLED_CACHE = 256
#: A finished task's journal row (completed but not saved here: ``download=false``, or saved by another
#: process) is read again at most this often. Agents poll finished tasks in tight loops; each read was a
#: worker-thread hop, ~15 % of a status call's CPU over HTTP (bench figure 6). The row of a finished
#: task changes only when a file is saved, which this process sees at once; another process's save is
#: seen within this long.
ROW_REUSE_SECONDS = 2.0


@dataclass(frozen=True)
class ServiceOptions:
    max_wait_seconds: float = 45.0
    dedupe_window_seconds: float = 600.0
    upload_cache_ttl_seconds: float = 86_400.0
    max_download_bytes: int = 1024**3
    max_image_bytes: int = 10 * 1024**2
    max_video_upload_bytes: int = 50 * 1024**2
    poster_frames: bool = True
    #: Whether tool arguments may name files on this machine (off for remote HTTP/SSE clients).
    local_paths: bool = True
    keep_image_metadata: bool = False
    #: Budgets, the confirmation threshold and read-only mode (default: no limits, never asks).
    spending: SpendingPolicy = field(default_factory=lambda: SpendingPolicy(None, None, None, False, "local"))

    @classmethod
    def from_settings(cls, s: Settings, *, local_paths: bool = True) -> ServiceOptions:
        return cls(
            spending=SpendingPolicy.from_usd(
                daily=s.budget_daily_usd,
                session=s.budget_session_usd,
                confirm_above=s.confirm_above_usd,
                read_only=s.read_only,
                session_id=f"process-{uuid.uuid4().hex}",
            ),
            local_paths=local_paths,
            max_wait_seconds=s.max_wait_seconds,
            max_download_bytes=s.max_download_bytes,
            max_image_bytes=s.max_image_bytes,
            keep_image_metadata=s.keep_image_metadata,
            max_video_upload_bytes=s.max_video_upload_bytes,
            poster_frames=s.poster_frames,
        )


@dataclass(frozen=True)
class StatusResult:
    view: TaskView
    poster_jpeg: bytes | None = None


def new_business_id() -> str:
    return f"wanmcp_{uuid.uuid4().hex}"


class VideoService:
    #: generate_video's own arguments besides the request fields (taken out by the tool layer).
    TOOL_ARGUMENTS = ("wait_seconds", "dry_run", "confirm_token")

    def __init__(
        self,
        *,
        provider: VideoProvider,
        journal: TaskJournal,
        tracker: TaskTracker,
        boundary: FileBoundary,
        url_policy: UrlPolicy,
        http: httpx2.AsyncClient,
        options: ServiceOptions,
        prices: PriceTable | None = None,
        wall_clock: Callable[[], float] = time.time,
        links: DownloadLinks | None = None,
    ) -> None:
        """``links``: on a hosted server, signs each remote tenant's finished file into a download URL
        (a server-side path means nothing to a client on another machine)."""
        self._links = links
        self._provider = provider
        self._journal = journal
        self._tracker = tracker
        self._boundary = boundary
        self._url_policy = url_policy
        self._http = http
        self._opts = options
        self._download_locks: dict[str, anyio.Lock] = {}
        self._describe = VideoDescriber(
            posters=options.poster_frames, capacity=_DESCRIBED_CACHE, helpers=DescribeHelpers(size=DESCRIBE_CONCURRENCY)
        )
        tracker.on_near_end(self._describe.warm)
        self._settled: Lru[tuple[str, str], StatusResult] = Lru(_SETTLED_CACHE)  # by (tenant, task id)
        self._finished_rows: Lru[tuple[str, str], tuple[float, TaskRecord]] = Lru(_SETTLED_CACHE)  # (read at, row)
        self._boundaries: dict[str, FileBoundary] = {}
        self._leases = DownloadLeases(journal)
        # Decoding an image can hold ~160 MB (MAX_FULL_DECODE_PIXELS): one at a time, however many
        # uploads agents start at once (six parallel 38 MP uploads peaked at 1.2 GB, now ~290 MB).
        self._image_work = anyio.CapacityLimiter(IMAGE_PREPARATIONS)
        self._download_work = anyio.CapacityLimiter(DOWNLOAD_CONCURRENCY)
        self._prices = prices if prices is not None else PriceTable.load()
        self._spending = options.spending
        self._now = wall_clock
        # Submissions of this process whose POST is in flight: an identical call waits for the
        # answer instead of reporting a task id that does not exist yet.
        self._inflight: dict[str, anyio.Event] = {}

    @property
    def journal(self) -> TaskJournal:
        return self._journal

    # --- tenants ------------------------------------------------------------------------------

    def _policy(self, tenant: Tenant) -> SpendingPolicy:
        return self._spending.for_tenant(
            tenant.id, daily_usd=tenant.budget_daily_usd, session_usd=tenant.budget_session_usd, remote=tenant.remote
        )

    def _provider_for(self, tenant: Tenant) -> VideoProvider:
        """The backend calling with the tenant's own key when it has one, else with the server's."""
        return self._provider if tenant.api_key is None else self._provider.with_key(tenant.api_key)

    def _task_provider(self, record: TaskRecord, tenant: Tenant) -> VideoProvider | None:
        """For a task made with the tenant's own key: the backend with that key, if this call carries it."""
        return self._provider_for(tenant) if record.own_key and tenant.api_key is not None else None

    def _boundary_for(self, tenant_id: str) -> FileBoundary:
        """The local user's boundary; a remote tenant writes (and may read) only its own folder.

        A remote tenant's read roots are its folder plus the configured roots that do not
        contain the shared output root (which holds every other tenant's folder).
        """
        if tenant_id == LOCAL.id:
            return self._boundary
        boundary = self._boundaries.get(tenant_id)
        if boundary is None:
            shared = self._boundary.output_root
            own = tenant_folder(shared, tenant_id)
            configured = self._boundary.read_roots
            others = [r for r in configured if not (shared.is_relative_to(r) or r.is_relative_to(shared))]
            roots = [own, *others]
            boundary = self._boundaries[tenant_id] = FileBoundary(
                roots, own, restrict_dotdirs=self._boundary.restrict_dotdirs
            )
        return boundary

    def clamp_wait(self, wait_seconds: float | None, default: float) -> float:
        value = default if wait_seconds is None else float(wait_seconds)
        if value != value or value < 0:  # NaN or negative
            raise WanError(
                ErrorCode.INVALID_REQUEST,
                f"{wait_seconds} is not a valid wait",
                field="wait_seconds",
                hint=f"use 0 (return at once) up to {self._opts.max_wait_seconds:g}",
            )
        return min(value, self._opts.max_wait_seconds)

    # --- generate_video ----------------------------------------------------------------

    async def generate(
        self,
        args: Mapping[str, Any],
        *,
        wait_seconds: float,
        on_update: UpdateFn | None = None,
        dry_run: bool = False,
        confirm_token: str | None = None,
        confirm: Confirmer | None = None,
        tenant: Tenant = LOCAL,
    ) -> TaskView | PlanView:
        """Validate, quote, check budgets and consent, upload, reserve and POST once.

        Nothing with a side effect (an upload, a journal row, a POST) happens before the
        request is valid, within every budget and, above the threshold, approved by the user;
        the budgets and the duplicate guard are checked again atomically with the journal write.
        """
        # Off the loop: an inline image is base64-decoded here (once), which takes ~100 ms for 10 MB.
        validated = await offload.run_sync(partial(parse_video_request, args, tool_arguments=self.TOOL_ARGUMENTS))
        quote = self._quote(validated)
        policy = self._policy(tenant)
        if dry_run:
            return await self._plan(validated, quote, tenant)
        self._refuse_if_read_only("generate_video", "it starts a paid job")
        provider = self._provider_for(tenant)
        provider.check_ready()  # no key: say so before uploading or journaling anything
        fingerprint = request_fingerprint(validated)
        window = self._opts.dedupe_window_seconds

        duplicate = await self._journal.find_recent_duplicate(fingerprint, window, tenant=tenant.id)
        if duplicate is not None:
            return await self._duplicate_view(duplicate, tenant)
        limits = policy.limits(self._now())
        for limit, spent in zip(limits, await self._journal.spent(limits), strict=True):
            if spent + quote.micro_usd > limit.limit_micro:
                raise refusals.over_budget(limit, spent, quote)
        token_sha = None
        if policy.needs_confirmation(quote.micro_usd):
            if confirm_token is not None:
                token_sha = token_digest(confirm_token)  # used up atomically with the reservation below
            elif confirm is not None:
                decision = await confirm(refusals.spend_question(validated, quote, fingerprint))
                if decision is not Decision.ACCEPT:
                    raise refusals.not_confirmed(decision, quote)
            else:
                raise await self._confirmation_required(quote, fingerprint, tenant)

        continues = validated.request.continue_from
        image_url: str | None
        reference_urls: list[str] = []
        if continues is not None:
            image_url = await self._last_frame_url(continues, tenant)
        else:
            image_url, reference_urls = await self._resolve_media(validated, tenant)
        payload = validated.to_payload(image_url=image_url, reference_urls=reference_urls)
        business_id = new_business_id()
        outcome = await self._journal.reserve(
            Submission(
                business_id=business_id,
                model=validated.request.model,
                mode=validated.mode,
                payload=payload,
                fingerprint=fingerprint,
                cost_micro_usd=quote.micro_usd,
                spender=policy.session,
                continues=continues,
                tenant=tenant.id,
                own_key=tenant.api_key is not None,
            ),
            limits=policy.limits(self._now()),
            dedupe_within=window,
            confirm_token_sha256=token_sha,
        )
        if isinstance(outcome, Duplicate):
            return await self._duplicate_view(outcome.record, tenant)
        if isinstance(outcome, OverBudget):
            raise refusals.over_budget(outcome.limit, outcome.spent_micro, quote)
        if isinstance(outcome, TokenRefused):
            raise refusals.token_refused(outcome.reason)

        done = self._inflight[business_id] = anyio.Event()
        try:
            # Shielded: once the POST may have left, a client cancel must not stop us from
            # journaling what the gateway answered (invariant 3). Every step is time-bounded.
            with anyio.CancelScope(shield=True):
                record = await self._submit(business_id, payload, provider)
        finally:
            done.set()
            self._inflight.pop(business_id, None)
        if wait_seconds > 0:
            record = await self._tracker.wait(
                record, within=wait_seconds, on_update=on_update, provider=self._task_provider(record, tenant)
            )
        view = self._view(record, include_sent=True)
        if record.status == "completed" and wait_seconds > 0:
            view = (await self._finish(record, download=True)).view
            view.sent = payload
        view.quote = _quote_view(quote)
        view.spent_today_usd = await self._spent_today(tenant)
        return self._explain(view)

    # --- spending ---------------------------------------------------------------------------

    def _quote(self, v: ValidatedRequest) -> Quote:
        req = v.request
        return self._prices.quote(model=req.model, resolution=req.resolution, audio=v.has_audio, seconds=req.duration)

    async def _spend(self, tenant: Tenant) -> Spend:
        """What ``tenant`` spent today and in this session (the journal's sums, every status but rejected)."""
        policy = self._policy(tenant)
        today, session = await self._journal.spent(policy.usage_scopes(self._now()))
        return Spend(today=today, session=session, policy=policy)

    async def _spent_today(self, tenant: Tenant) -> float:
        return (await self._spend(tenant)).today / MICRO

    def _refuse_if_read_only(self, tool: str, why: str) -> None:
        if self._spending.read_only:
            raise refusals.read_only(tool, why)

    async def _duplicate_view(self, record: TaskRecord, tenant: Tenant) -> TaskView:
        """An identical request made moments ago: that task, at no new cost.

        If its POST is still in flight in this process, wait (bounded) for the gateway's answer
        so the agent gets a real task id rather than our business id.
        """
        done = self._inflight.get(record.business_id)
        if done is not None and record.status == "submitting":
            with anyio.move_on_after(self._opts.max_wait_seconds):
                await done.wait()
            record = await self._journal.get(record.business_id) or record
        view = self._view(record, include_sent=True)
        view.deduplicated = True
        view.quote = QuoteView(usd=0, credits=0, basis=f"identical to task {record.id}: no new job, no new charge")
        view.spent_today_usd = await self._spent_today(tenant)
        return self._explain(view)

    async def _confirmation_required(self, quote: Quote, fingerprint: str, tenant: Tenant) -> WanError:
        """No way to ask the user from here: hand out a single-use token for this exact request."""
        token = new_confirm_token()
        expires_at = self._now() + CONFIRM_TOKEN_TTL_SECONDS
        await self._journal.add_confirmation(
            token_digest(token),
            fingerprint=fingerprint,
            cost_micro_usd=quote.micro_usd,
            expires_at=expires_at,
            tenant=tenant.id,
        )
        threshold = self._spending.confirm_above_micro or 0
        return refusals.confirmation_required(
            quote, threshold_micro=threshold, token=token, expires_iso=iso(expires_at)
        )

    async def _plan(self, v: ValidatedRequest, quote: Quote, tenant: Tenant) -> PlanView:
        """``dry_run``: everything but the side effects; local files are checked, not read or sent."""
        uploads: list[str] = []
        sources: list[tuple[str, MediaSource]] = [("image", v.image)] if v.image is not None else []
        sources += [(f"reference_videos[{i}]", src) for i, src in enumerate(v.references)]
        for name, src in sources:
            if src.kind is SourceKind.URL:
                continue
            if src.kind is SourceKind.PATH:
                self._check_local_paths(name)
                await offload.run_sync(partial(self._boundary_for(tenant.id).check, src.value, field=name))
            uploads.append(f"{name}: {src.describe()} (uploaded at submit; reused if sent before)")
        if v.request.continue_from is not None:
            source = await self._journal.get(v.request.continue_from, tenant=tenant.id)
            state = "not in the journal yet" if source is None else source.status
            uploads.append(
                f"continue_from: the last frame of {v.request.continue_from} ({state}; it must be completed "
                "when you submit), extracted and uploaded at submit"
            )
        spend = await self._spend(tenant)
        policy = spend.policy
        steps = [
            f"it would exceed the {name} budget ({format_usd(spent)} of {format_usd(limit)} spent): "
            f"the user can raise {SpendingPolicy.setting(name)}"
            for name, limit, spent in spend.passed_by(quote.micro_usd)
        ]
        needs = policy.needs_confirmation(quote.micro_usd)
        if policy.read_only:
            steps.append("this server is read-only (WAN_MCP_READ_ONLY=1): it will not submit")
        if not steps:
            steps.append(
                "to make it, call generate_video with the same arguments and no dry_run"
                + ("; the user will be asked to approve the cost" if needs else "")
            )
        return PlanView(
            mode=v.mode,
            model=v.request.model,
            payload=v.preview_payload(),
            uploads=uploads,
            quote=_quote_view(quote),
            needs_confirmation=needs,
            spent_today_usd=spend.today / MICRO,
            daily_left_usd=spend.left_usd("daily"),
            session_left_usd=spend.left_usd("session"),
            next="; ".join(steps),
        )

    async def usage(self, tenant: Tenant = LOCAL) -> UsageView:
        """``get_usage``: the gateway's balance (when it tells), the journal's spend, budgets, prices.

        A remote tenant sees only its own: its spend and budgets, and a balance only for its own
        key (the server's account balance is the owner's business).
        """
        spend = await self._spend(tenant)
        policy = spend.policy
        view = UsageView(
            spent_today_usd=spend.today / MICRO,
            spent_session_usd=spend.session / MICRO,
            confirm_above_usd=None if policy.confirm_above_micro is None else policy.confirm_above_micro / MICRO,
            read_only=policy.read_only,
            prices=self._prices.lines(),
            prices_as_of=self._prices.as_of,
            next="generate_video(dry_run=true) quotes one call exactly; budgets are the server's settings",
        )
        daily, session = policy.daily_micro, policy.session_micro
        view.daily_budget_usd = None if daily is None else daily / MICRO
        view.session_budget_usd = None if session is None else session / MICRO
        view.daily_left_usd, view.session_left_usd = spend.left_usd("daily"), spend.left_usd("session")
        if tenant.remote and tenant.api_key is None:
            view.balance_note = "the gateway account is the server owner's; your spend and budgets are above"
            return view
        try:
            provider = self._provider_for(tenant)
            provider.check_ready()
            balance = await provider.get_balance()
        except WanError as err:
            # Tolerated: an account without the endpoint, no key, a gateway down. Spend and budgets
            # come from our own journal and still answer.
            view.balance_note = (
                "the gateway offers no balance endpoint" if err.code is ErrorCode.NOT_FOUND else err.message
            )
        else:
            view.balance_unlimited = balance.unlimited
            if not balance.unlimited:
                view.balance_usd = balance.remain_balance
                view.balance_credits = balance.remain_credits
        return view

    async def _submit(self, business_id: str, payload: dict[str, Any], provider: VideoProvider) -> TaskRecord:
        try:
            task = await provider.create_task(payload, business_id)
        except WanError as err:
            if err.code in _DEFINITE_REJECTIONS:
                await self._journal.mark_rejected(business_id, error_code=err.code.value, error_message=err.message)
                raise
            raise await self._unconfirmed(business_id, err.code.value, err.message) from err
        except Exception as exc:  # anything unforeseen after the POST may have left: the same promise
            log.exception("create %s failed unexpectedly", business_id)
            raise await self._unconfirmed(business_id, "protocol", type(exc).__name__) from None
        record = await self._journal.attach_task(
            business_id, task_id=task.id, status=task.state.value, progress=task.progress
        )
        if task.terminal:
            record = await self._journal.observe(task.id, observation_of(task))
        return record

    def _check_local_paths(self, field: str) -> None:
        if not self._opts.local_paths:
            raise WanError(
                ErrorCode.FILE_ACCESS,
                "this server is reached over HTTP, so a path names a file on the server's disk, not yours; "
                "local paths are not accepted here",
                field=field,
                allowed=["data:image/...;base64,...", "http(s) URL"],
                hint="send the image as a data: URL (or upload_image(data=...)) or give a public http(s) URL; "
                "the server's owner can allow server-side paths with WAN_MCP_ALLOW_REMOTE_PATHS=1",
            )

    async def _unconfirmed(self, business_id: str, code: str, why: str) -> WanError:
        """Journal an unknown create outcome; the error tells the agent to look, not to resubmit."""
        await self._journal.mark_unconfirmed(business_id, error_code=code, error_message=why)
        return WanError(
            ErrorCode.SUBMISSION_UNCONFIRMED,
            f"the gateway did not confirm the submission ({why})",
            task_id=business_id,
            hint=f"do NOT resubmit yet: call get_task_status(task_id='{business_id}') in a minute; it finds "
            "the task if the gateway created it, or says it is safe to submit again",
        )

    async def _resolve_media(self, v: ValidatedRequest, tenant: Tenant) -> tuple[str | None, list[str]]:
        image_url = None
        if v.image is not None:
            image_url = await self._image_url(v.image, field="image", tenant=tenant)
        refs = [
            await self._video_url(src, field=f"reference_videos[{i}]", tenant=tenant)
            for i, src in enumerate(v.references)
        ]
        return image_url, refs

    async def _image_url(self, src: MediaSource, *, field: str, tenant: Tenant) -> str:
        if src.kind is SourceKind.URL:
            return src.value
        return (await self._upload_image_source(src, field=field, tenant=tenant)).url

    async def _video_url(self, src: MediaSource, *, field: str, tenant: Tenant) -> str:
        if src.kind is SourceKind.URL:
            return src.value
        if src.kind is SourceKind.PATH:
            self._check_local_paths(field)
        else:
            raise WanError(
                ErrorCode.INVALID_REQUEST,
                "reference videos must be URLs or local files",
                field=field,
                hint="save the video to a file inside an allowed folder and pass its path",
            )
        path, data = await offload.run_sync(
            partial(
                self._boundary_for(tenant.id).read_bytes,
                src.value,
                field=field,
                max_bytes=self._opts.max_video_upload_bytes,
                accept=lambda head: sniff_video(head) is not None,
            )
        )
        mime = sniff_video(data)
        if mime is None:
            raise WanError(
                ErrorCode.INVALID_FILE,
                f"{path.name} is not an MP4, MOV or WebM video",
                field=field,
                allowed=["mp4", "mov", "webm"],
                hint="convert it to MP4 (H.264) and try again",
            )
        digest = hashlib.sha256(data).hexdigest()
        cached = await self._cached_upload(digest, "video", tenant)
        if cached is not None:
            return cached.url
        uploaded = await self._provider_for(tenant).upload_video(data, f"reference-{digest[:12]}{_ext(mime)}", mime)
        await self._journal.put_upload(
            UploadRecord(
                sha256=digest,
                kind="video",
                url=uploaded.url,
                mime_type=mime,
                size_bytes=len(data),
                width=None,
                height=None,
                created_at=time.time(),
                changes=(),
                tenant=tenant.id,
            )
        )
        return uploaded.url

    # --- films ----------------------------------------------------------------------------

    async def _completed_file(self, task_id: str, *, field: str, tenant: Tenant) -> TaskRecord:
        """``tenant``'s completed task with its MP4 on disk (downloaded now if needed), or an error naming ``field``."""
        try:
            record = self._live(task_id, tenant) or await self._lookup(task_id, tenant)
        except WanError as err:
            raise WanError(err.code, err.message, field=field, hint=err.hint, task_id=task_id) from None
        if record.status != "completed":
            hint = (
                f"wait until it is completed: get_task_status(task_id='{record.id}', wait_seconds=30)"
                if record.status not in TERMINAL
                else "use a completed task (list_tasks(status='completed') lists them)"
            )
            raise WanError(
                ErrorCode.INVALID_REQUEST,
                f"task {record.id} is {record.status}, not completed, so it has no video to use",
                field=field,
                hint=hint,
                task_id=record.id,
            )
        if record.local_path is None or not await offload.run_sync(Path(record.local_path).is_file):
            if not record.video_url:
                raise WanError(
                    ErrorCode.INVALID_FILE,
                    f"the video of task {record.id} is no longer on disk and has no URL to fetch it again",
                    field=field,
                    hint="make the shot again, or pick another task",
                    task_id=record.id,
                )
            record = await self._download(replace(record, local_path=None))
        return record

    async def _last_frame_url(self, task_id: str, tenant: Tenant) -> str:
        """The exact last frame of ``task_id``'s video, uploaded like upload_image would (de-duplicated)."""
        record = await self._completed_file(task_id, field="continue_from", tenant=tenant)
        assert record.local_path is not None
        try:
            png = await offload.run_sync(last_frame_png, Path(record.local_path))
        except FilmError as err:
            raise WanError(
                ErrorCode.INVALID_FILE,
                f"the last frame of task {record.id} cannot be read: {err.why}",
                field="continue_from",
                hint="continue from another completed task",
                task_id=record.id,
            ) from None
        frame = MediaSource(kind=SourceKind.DATA, value=f"last frame of {record.id}", data=png, media_type="image/png")
        return (await self._upload_image_source(frame, field="continue_from", tenant=tenant)).url

    async def join(
        self,
        task_ids: Sequence[str],
        *,
        transition: str,
        crossfade_seconds: float,
        on_progress: Callable[[float], Awaitable[None]] | None = None,
        tenant: Tenant = LOCAL,
    ) -> StatusResult:
        """Join completed tasks' videos, in order, into one MP4: local work, no upstream call, no cost."""
        if transition not in ("cut", "crossfade"):
            raise WanError(
                ErrorCode.INVALID_REQUEST,
                f"{transition!r} is not a transition",
                field="transition",
                allowed=["cut", "crossfade"],
                hint="use cut (hard cut) or crossfade (blend of crossfade_seconds)",
            )
        if not 2 <= len(task_ids) <= MAX_FILM_PARTS:
            raise WanError(
                ErrorCode.INVALID_REQUEST,
                f"{len(task_ids)} task id(s) given; a film joins 2 to {MAX_FILM_PARTS}",
                field="task_ids",
                allowed=[f"2..{MAX_FILM_PARTS} task ids"],
                hint="list the completed shots in order, e.g. task_ids=['video_A', 'video_B']",
            )
        if not 0.1 <= crossfade_seconds <= 2.0:
            raise WanError(
                ErrorCode.INVALID_REQUEST,
                f"{crossfade_seconds:g} s is out of range",
                field="crossfade_seconds",
                allowed=["0.1..2"],
                hint="use 0.5 (the default) or another value from 0.1 to 2 seconds",
            )
        records = [await self._completed_file(t, field=f"task_ids[{i}]", tenant=tenant) for i, t in enumerate(task_ids)]
        paths = [Path(r.local_path or "") for r in records]
        film_id = f"film_{uuid.uuid4().hex}"
        dest = self._boundary_for(tenant.id).output_path(film_id)
        part = dest.with_name(dest.name + ".part")
        progress = [0.0]
        try:
            async with anyio.create_task_group() as tg:
                if on_progress is not None:
                    tg.start_soon(self._relay_progress, progress, on_progress)
                try:
                    result = await offload.run_sync(
                        partial(
                            join_clips,
                            paths,
                            part,
                            transition="crossfade" if transition == "crossfade" else "cut",
                            crossfade_seconds=crossfade_seconds,
                            progress=lambda fraction: progress.__setitem__(0, fraction),
                        )
                    )
                finally:
                    tg.cancel_scope.cancel()  # no progress after this point: the result comes next
            await offload.run_sync(os.replace, part, dest)
        except FilmError as err:
            bad = records[min(err.index, len(records) - 1)]
            raise WanError(
                ErrorCode.INVALID_FILE,
                f"task {bad.id} cannot be joined: {err.why}",
                field=f"task_ids[{err.index}]",
                hint="leave that task out, or make the shot again",
                task_id=bad.id,
            ) from None
        finally:
            await offload.run_sync(partial(part.unlink, missing_ok=True))
        await self._journal.record_film(
            film_id,
            payload={
                "parts": [r.id for r in records],
                "transition": transition,
                "crossfade_seconds": crossfade_seconds if transition == "crossfade" else 0,
                "stream_copied": result.copied,
            },
            local_path=str(dest),
            sha256=result.sha256,
            size_bytes=result.size_bytes,
            tenant=tenant.id,
        )
        return await self.status(film_id, wait_seconds=0, download=False, tenant=tenant)

    @staticmethod
    async def _relay_progress(progress: list[float], report: Callable[[float], Awaitable[None]]) -> None:
        """Pass the encoder's progress (set from its worker thread) on, twice a second, only when it moved."""
        shown = -1.0
        while True:
            await anyio.sleep(0.5)
            if progress[0] > shown:
                shown = progress[0]
                await report(shown)

    # --- upload_image ---------------------------------------------------------------------

    async def upload_image(self, *, path: str | None, data: str | None, tenant: Tenant = LOCAL) -> UploadView:
        self._refuse_if_read_only("upload_image", "sends a file to the gateway")
        if (path is None) == (data is None):
            raise WanError(
                ErrorCode.INVALID_REQUEST,
                "give exactly one of 'path' or 'data'",
                field="path" if path else "data",
                hint="pass path='/abs/file.png' for a local file, or data='data:image/png;base64,...'",
            )
        if path is not None:
            src = MediaSource(kind=SourceKind.PATH, value=path, data=None, media_type=None)
            return await self._upload_image_source(src, field="path", tenant=tenant)
        assert data is not None
        if not data.startswith("data:"):
            data = "data:image/*;base64," + data  # bare base64 is accepted here: the field says what it is
        raw, media_type = await offload.run_sync(_decode, data)
        return await self._upload_image_source(
            MediaSource(kind=SourceKind.DATA, value="data", data=raw, media_type=media_type),
            field="data",
            tenant=tenant,
        )

    async def _upload_image_source(self, src: MediaSource, *, field: str, tenant: Tenant) -> UploadView:
        provider = self._provider_for(tenant)
        provider.check_ready()
        if src.kind is SourceKind.PATH:
            self._check_local_paths(field)
            _, raw = await offload.run_sync(
                partial(
                    self._boundary_for(tenant.id).read_bytes,
                    src.value,
                    field=field,
                    max_bytes=self._opts.max_image_bytes * 5,
                    accept=looks_like_image,
                )
            )
        else:
            assert src.data is not None
            raw = src.data
        prepared = await offload.run_sync(
            partial(
                prepare_image,
                raw,
                field=field,
                max_bytes=self._opts.max_image_bytes,
                keep_metadata=self._opts.keep_image_metadata,
            ),
            limiter=self._image_work,
        )
        record = await self._cached_upload(prepared.sha256, "image", tenant)
        cached = record is not None
        if record is None:
            uploaded = await provider.upload_image(
                prepared.data, f"image-{prepared.sha256[:12]}{_ext(prepared.mime_type)}", prepared.mime_type
            )
            record = UploadRecord(
                sha256=prepared.sha256,
                kind="image",
                url=uploaded.url,
                mime_type=prepared.mime_type,
                size_bytes=len(prepared.data),
                width=prepared.width,
                height=prepared.height,
                created_at=time.time(),
                changes=tuple(prepared.changes),
                tenant=tenant.id,
            )
            await self._journal.put_upload(record)
        return UploadView(
            url=record.url,
            sha256=record.sha256,
            mime_type=record.mime_type,
            width=record.width,
            height=record.height,
            size_bytes=record.size_bytes,
            changes=list(prepared.changes),
            cached=cached,
        )

    async def _cached_upload(self, sha256: str, kind: str, tenant: Tenant) -> UploadRecord | None:
        rec = await self._journal.get_upload(sha256, kind, tenant=tenant.id)
        if rec is None or time.time() - rec.created_at > self._opts.upload_cache_ttl_seconds:
            return None  # upload URLs have no documented lifetime: re-upload after a day
        return rec

    # --- get_task_status -------------------------------------------------------------------

    async def status(
        self,
        task_id: str,
        *,
        wait_seconds: float,
        download: bool = True,
        on_update: UpdateFn | None = None,
        tenant: Tenant = LOCAL,
    ) -> StatusResult:
        key = (tenant.id, task_id)
        settled = self._settled.get(key)
        if settled is not None:
            # Finished and saved (or failed): nothing about it can change, so agents asking
            # again and again are answered from memory, with no thread hop or file probe.
            view = self._with_link(settled.view.model_copy(deep=True), tenant.id)  # a fresh expiry each time
            return StatusResult(view.with_next(), settled.poster_jpeg)
        result = await self._status(
            task_id, wait_seconds=wait_seconds, download=download, on_update=on_update, tenant=tenant
        )
        view = result.view
        if view.status == "failed" or (view.status == "completed" and view.local_path):
            self._settled.put(key, StatusResult(view.model_copy(deep=True), result.poster_jpeg))
        return result

    def _live(self, task_id: str, tenant: Tenant) -> TaskRecord | None:
        """The tracker's live record for ``task_id`` if ``tenant`` owns it (no journal read)."""
        record = self._tracker.latest(task_id)
        return record if record is not None and record.tenant == tenant.id else None

    def _finished_row(self, task_id: str, tenant: Tenant) -> TaskRecord | None:
        """``tenant``'s finished task as read from the journal less than ROW_REUSE_SECONDS ago."""
        known = self._finished_rows.get((tenant.id, task_id))
        if known is None or not 0 <= self._now() - known[0] < ROW_REUSE_SECONDS:
            return None
        return known[1]

    async def _status(
        self, task_id: str, *, wait_seconds: float, download: bool, on_update: UpdateFn | None, tenant: Tenant
    ) -> StatusResult:
        record = self._live(task_id, tenant) or self._finished_row(task_id, tenant)
        if record is None:
            record = await self._lookup(task_id, tenant)
            if record.terminal:
                self._finished_rows.put((tenant.id, task_id), (self._now(), record))
        if record.status in ("submitting", "unconfirmed"):
            record = await self._reconcile(record, tenant)
        if record.status not in TERMINAL and record.task_id is not None:
            provider = self._task_provider(record, tenant)
            if record.own_key and provider is None:
                # Made with the tenant's own key, which is not in memory (a restart, or a call
                # without the header): answer from the journal; never ask with the server's key.
                view = self._view(record).with_next()
                view.next = (
                    f"task {record.id} was made with your own gateway key; call get_task_status again with "
                    "the key in the X-Wan-Api-Key header to resume tracking it"
                )
                return StatusResult(view)
            if wait_seconds > 0:
                record = await self._tracker.wait(record, within=wait_seconds, on_update=on_update, provider=provider)
            else:
                record = await self._tracker.refresh(record, provider=provider)
        if record.status == "completed":
            return await self._finish(record, download=download)
        return StatusResult(self._explain(self._view(record)))

    async def _lookup(self, task_id: str, tenant: Tenant) -> TaskRecord:
        """``tenant``'s task by id. Another tenant's id is answered exactly like one never made.

        Only the stdio server's one user may look an unknown id up at the gateway (a task made
        elsewhere with the same key); on HTTP an id outside the caller's rows could be another
        tenant's task on a shared key, so it is never asked about.
        """
        if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
            raise WanError(
                ErrorCode.INVALID_REQUEST,
                f"{task_id!r} is not a task id",
                field="task_id",
                hint="pass the task_id returned by generate_video, or call list_tasks to find it",
            )
        record = await self._journal.get(task_id, tenant=tenant.id)
        if record is not None:
            return record
        if tenant.remote or await self._journal.get(task_id) is not None:
            raise WanError(
                ErrorCode.NOT_FOUND,
                f"no task {task_id} among your tasks",
                field="task_id",
                hint="call list_tasks to see your tasks; ids from generate_video stay valid here",
            )
        # Not ours (another machine, or a journal that was reset): ask the gateway, and
        # journal it so the next call is served locally.
        try:
            task = await self._provider.get_task(task_id)
        except WanError as err:
            if err.code is ErrorCode.NOT_FOUND:
                raise WanError(
                    ErrorCode.NOT_FOUND,
                    f"no task {task_id} in the journal or at the gateway",
                    field="task_id",
                    hint="call list_tasks to see known tasks; ids expire at the gateway after ~24 h",
                ) from err
            raise err.with_task(task_id) from None
        await self._journal.record_submission(
            business_id=f"import_{task.id}",
            model=task.model or "",
            mode="",
            payload={},
            fingerprint="",
        )
        await self._journal.attach_task(
            f"import_{task.id}", task_id=task.id, status=task.state.value, progress=task.progress
        )
        return await self._journal.observe(task.id, observation_of(task))

    async def _reconcile(self, record: TaskRecord, tenant: Tenant = LOCAL) -> TaskRecord:
        """Find out whether an unconfirmed submission became a task, by its business id.

        Business ids are scoped to the key that sent them, so a submission made with a tenant's
        own key waits until that tenant calls with it.
        """
        provider = self._task_provider(record, tenant) or (None if record.own_key else self._provider)
        if provider is None:
            return record
        try:
            task = await provider.get_task(record.business_id)
        except WanError as err:
            if err.code is ErrorCode.NOT_FOUND and time.time() - record.created_at > 120:
                return await self._journal.mark_rejected(
                    record.business_id,
                    error_code="not_created",
                    error_message="the gateway never created this task; nothing was billed. It is safe to submit again",
                )
            return record
        record = await self._journal.attach_task(
            record.business_id, task_id=task.id, status=task.state.value, progress=task.progress
        )
        return await self._journal.observe(task.id, observation_of(task))

    async def aclose(self) -> None:
        """Stop the media helper processes (the rest belongs to whoever opened the journal and client)."""
        await self._describe.aclose()

    async def reconcile_unsettled(self) -> int:
        """At start-up: settle submissions a previous run left in flight. Returns how many."""
        settled = 0
        for record in await self._journal.unsettled():
            updated = await self._reconcile(record)
            settled += updated.status != record.status
        return settled

    async def _finish(self, record: TaskRecord, *, download: bool) -> StatusResult:
        poster: bytes | None = None
        view = self._view(record)
        if download and record.local_path is None and record.video_url:
            record = await self._download(record)
            view = self._view(record)
        if record.local_path:
            path = Path(record.local_path)
            info, poster = await self._describe(path)
            if info is not None:
                view.width, view.height = info.width, info.height
                view.duration_seconds = round(info.duration, 2)
                view.has_audio = info.has_audio
        return StatusResult(self._explain(view), poster)

    async def _saved_file(self, task_id: str) -> TaskRecord | None:
        """The task's row if its file is saved and still on disk (deleted since: it is fetched again)."""
        fresh = await self._journal.get(task_id)
        if fresh is not None and fresh.local_path and await offload.run_sync(Path(fresh.local_path).is_file):
            return fresh
        return None

    async def _download(self, record: TaskRecord) -> TaskRecord:
        assert record.task_id is not None and record.video_url is not None
        lock = self._download_locks.setdefault(record.task_id, anyio.Lock())
        async with lock:
            saved = await self._saved_file(record.task_id)
            if saved is not None:
                return saved
            if record.expires_at is not None and record.expires_at < time.time():
                raise WanError(
                    ErrorCode.DOWNLOAD_FAILED,
                    "the result URL expired before it was downloaded",
                    task_id=record.task_id,
                    hint="submit the request again; gateway URLs live 24 h",
                )
            if not await self._leases.claim(record.task_id):
                # Another server process (a second host window sharing the data dir) is
                # downloading it: wait for its result instead of fetching it twice.
                fresh = await self._leases.wait_for_other(record.task_id)
                if fresh is not None:
                    return fresh
            try:
                # The lease is ours now, but its previous holder (another process or replica) may
                # have saved the file just before releasing it: never fetch a file twice.
                saved = await self._saved_file(record.task_id)
                if saved is not None:
                    return saved
                try:
                    dest = self._boundary_for(record.tenant).output_path(record.task_id)
                except WanError as err:  # the output folder cannot be created: same promise as a full disk
                    raise WanError(
                        ErrorCode.DOWNLOAD_FAILED,
                        f"the video is ready but cannot be saved: {err.message}",
                        task_id=record.task_id,
                        hint="set WAN_MCP_OUTPUT_DIR to a writable folder (or fix this one), then call "
                        "get_task_status again to retry the download; download=false returns the URL now",
                    ) from None
                try:
                    async with self._download_work:
                        result = await download_to(
                            self._http,
                            record.video_url,
                            dest,
                            max_bytes=self._opts.max_download_bytes,
                            policy=self._url_policy,
                            # A 200 with an HTML page or a cut body must not become "the video".
                            verify=video_problem,
                        )
                except WanError as err:
                    raise err.with_task(record.task_id) from err
                return await self._journal.record_download(
                    record.task_id,
                    local_path=str(result.path),
                    sha256=result.sha256,
                    size_bytes=result.size_bytes,
                )
            finally:
                await self._leases.release(record.task_id)

    # --- list_tasks ------------------------------------------------------------------------

    async def list_tasks(self, *, status: str | None, limit: int, tenant: Tenant = LOCAL) -> TaskList:
        check_list_status(status)
        if not 1 <= limit <= 100:
            raise WanError(
                ErrorCode.INVALID_REQUEST,
                f"{limit} is out of range",
                field="limit",
                allowed=["1..100"],
                hint="use a limit between 1 and 100",
            )
        records = await self._journal.list(status=status, limit=limit, tenant=tenant.id)
        return TaskList(tasks=[self._view(r).with_next() for r in records])

    async def task_view(self, task_id: str, tenant: Tenant = LOCAL) -> TaskView | None:
        record = await self._journal.get(task_id, tenant=tenant.id)
        return None if record is None else self._view(record).with_next()

    # --- wording ------------------------------------------------------------------------------

    def _view(self, record: TaskRecord, *, include_sent: bool = False) -> TaskView:
        view = TaskView.from_record(record, include_sent=include_sent, next_poll_seconds=self._tracker.advice(record))
        return self._with_link(view, record.tenant)

    def _with_link(self, view: TaskView, tenant_id: str) -> TaskView:
        """A remote tenant's saved file, as a signed download URL (none for the local user)."""
        if self._links is None or tenant_id == LOCAL.id or not view.local_path:
            return view
        link = self._links.sign(
            tenant=tenant_id, task_id=view.task_id, local_path=view.local_path, size_bytes=view.size_bytes
        )
        if link is not None:
            view.download_url, view.download_expires_at = link.url, iso(link.expires_at)
        return view

    def _explain(self, view: TaskView) -> TaskView:
        """Attach the next step: to failures classified (content policy vs other), else from the status."""
        if view.error is None or view.status not in ("failed", "rejected", "unconfirmed"):
            return view.with_next()
        code = classify_failure(view.error.code, view.error.message)
        hint = {
            ErrorCode.CONTENT_POLICY: "the prompt or image was refused by moderation: rephrase it (no real "
            "people, violence or explicit content) or use another image, then call generate_video again",
            ErrorCode.NOT_FOUND: "submit the request again with generate_video",
        }.get(code)
        if view.status == "unconfirmed":
            hint = f"call get_task_status(task_id='{view.task_id}') again shortly; do not resubmit yet"
        elif hint is None:
            hint = "this attempt failed upstream; try generate_video again (nothing to fix in the request)"
        view.error = ErrorInfo(
            code=code.value if view.status == "failed" else view.error.code,
            message=view.error.message,
            hint=hint,
        )
        return view.with_next()


def _quote_view(quote: Quote) -> QuoteView:
    return QuoteView(usd=quote.usd, credits=quote.credits, basis=quote.basis)


def _decode(data: str) -> tuple[bytes, str]:
    """upload_image's ``data``, through the same decoder as generate_video's ``image``."""
    try:
        return decode_data_url(data, field="data")
    except Problem as problem:
        raise problem.error() from None


def _ext(mime: str) -> str:
    return {
        "image/jpeg": ".jpg",
        "image/png": ".png",
        "image/webp": ".webp",
        "video/mp4": ".mp4",
        "video/quicktime": ".mov",
        "video/webm": ".webm",
    }.get(mime, "")
