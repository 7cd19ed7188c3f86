"""The HTTP client for the ToAPIs gateway: retries, reconciliation, and the key's custody.

Three promises shape this module:

* **One create call makes at most one upstream task.** A ``POST`` is repeated only when
  the request provably never left this process (connect error, connect/pool timeout) or
  the gateway explicitly refused it (429). Any other failure is *ambiguous*: the task may
  exist. It is then reconciled by looking the task up under the caller's
  ``client_business_id``, never by posting again.
* **Reads recover on their own, within bounds.** Status, upload and balance calls retry
  transient failures with exponential backoff and full jitter, bounded by both an attempt
  count and a time budget, and honour ``Retry-After``.
* **The API key only ever goes to the gateway.** The shared ``httpx2.AsyncClient`` also
  downloads result files from third-party hosts, so it carries no default auth header;
  this client adds ``Authorization`` per request. Errors and log lines are built from our
  own words, upstream *messages* and exception class names, and pass through
  :func:`~wan_mcp.errors.redact`; request headers are never logged and httpx2 exceptions
  (which hold the request, headers included) are never chained onto our errors.
"""

from __future__ import annotations

import copy
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import anyio.to_thread
import httpx2
from pydantic import SecretStr

from wan_mcp import __version__
from wan_mcp.config import Settings
from wan_mcp.errors import ErrorCode, WanError, redact, register_secret
from wan_mcp.gateway.wire import (
    MAX_JSON_BYTES,
    Balance,
    GatewayTask,
    UploadedFile,
    decode_json,
    error_from_response,
    parse_balance,
    parse_retry_after,
    parse_task,
    parse_upload,
    protocol_error,
)

__all__ = [
    "BALANCE_PATH",
    "CREATE_PATH",
    "STATUS_PATH",
    "UPLOAD_IMAGE_PATH",
    "UPLOAD_VIDEO_PATH",
    "GatewayClient",
    "RetryPolicy",
    "make_http_client",
]

logger = logging.getLogger("wan_mcp.gateway")

CREATE_PATH = "/v1/videos/generations"
STATUS_PATH = "/v1/videos/generations/{id}"
UPLOAD_IMAGE_PATH = "/v1/uploads/images"
UPLOAD_VIDEO_PATH = "/v1/uploads/videos"
BALANCE_PATH = "/v1/user/balance"

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


def make_http_client(settings: Settings, *, transport: httpx2.AsyncBaseTransport | None = None) -> httpx2.AsyncClient:
    """The one HTTP client of the process (gateway calls *and* result downloads).

    Deliberately without an ``Authorization`` header: downloads go to third-party file
    hosts, which must never see the key. Redirects are not followed, so a misconfigured
    ``base_url`` fails loudly instead of silently carrying requests elsewhere.
    ``transport`` exists for tests (``httpx2.MockTransport``).
    """
    limits = httpx2.Limits(max_connections=20, max_keepalive_connections=10, keepalive_expiry=30.0)
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.write_timeout,
            pool=settings.pool_timeout,
        ),
        limits=limits,
        headers={"User-Agent": f"wan-mcp/{__version__}"},
        follow_redirects=False,
        transport=transport if transport is not None else LazyTransport(limits),
    )


class LazyTransport(httpx2.AsyncBaseTransport):
    """httpx2's default transport, built on the first request instead of at start-up.

    Building it imports httpcore2 and loads the CA bundle into an SSL context: ~80 ms of
    CPU that would otherwise sit between a host spawning the stdio server and its
    ``tools/list`` answer (benchmark figure 1). It is built once, on a worker thread, with
    the same arguments ``httpx2.AsyncClient`` itself would pass.
    """

    def __init__(self, limits: httpx2.Limits) -> None:
        self._limits = limits
        self._inner: httpx2.AsyncHTTPTransport | None = None
        self._building: anyio.Lock | None = None

    async def _get(self) -> httpx2.AsyncHTTPTransport:
        if self._inner is None:
            if self._building is None:
                self._building = anyio.Lock()
            async with self._building:
                if self._inner is None:
                    self._inner = await anyio.to_thread.run_sync(lambda: httpx2.AsyncHTTPTransport(limits=self._limits))
        return self._inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        inner = await self._get()
        return await inner.handle_async_request(request)

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try before giving up, and how long to look for an unconfirmed task.

    Both bounds apply: ``attempts`` stops hammering a gateway that fails fast,
    ``total_seconds`` stops an agent waiting on a gateway that fails slowly. Full jitter
    (``uniform(0, cap)``) spreads retries of many clients hit by the same outage.
    ``reconcile_checks`` lookups ``reconcile_interval`` apart give a create that the
    gateway is still processing time to show up before we call it unconfirmed.
    """

    attempts: int = 4
    total_seconds: float = 30.0
    base_delay: float = 0.5
    max_delay: float = 8.0
    reconcile_checks: int = 3
    reconcile_interval: float = 1.0
    #: One exchange (connect, send, the whole answer) never takes longer than this: a gateway
    #: dripping a byte every few seconds would otherwise hold a call (and a shielded create) forever.
    attempt_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.reconcile_checks < 1:
            raise ValueError("reconcile_checks must be at least 1")
        if self.attempt_seconds <= 0:
            raise ValueError("attempt_seconds must be positive")
        if min(self.total_seconds, self.base_delay, self.max_delay, self.reconcile_interval) < 0:
            raise ValueError("retry durations must not be negative")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            attempts=settings.retry_attempts,
            total_seconds=settings.retry_total_seconds,
            attempt_seconds=settings.request_deadline_seconds,
        )

    def backoff(self, retry_index: int) -> float:
        """Delay before retry number ``retry_index`` (0-based), full jitter."""
        cap = min(self.max_delay, self.base_delay * 2 ** min(retry_index, 30))
        return random.uniform(0.0, cap)


async def _read_capped(response: httpx2.Response, limit: int) -> tuple[bytes, bool]:
    """The body, read until ``limit`` bytes; True when more was coming (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


class _Kind(Enum):
    """What a failed attempt tells us about whether the gateway acted on it."""

    UNSENT = "unsent"  # provably never reached the gateway: safe to repeat, even a create
    REFUSED = "refused"  # the gateway answered 429: it did not act (documented-behaviour assumption)
    AMBIGUOUS = "ambiguous"  # it may have acted: repeat reads, reconcile creates
    FINAL = "final"  # a definite answer (4xx, refused upload): repeating cannot help


class _AttemptFailed(Exception):
    def __init__(self, error: WanError, kind: _Kind) -> None:
        super().__init__(error.message)
        self.error = error
        self.kind = kind


class _Unconfirmed(Exception):
    """A create failed ambiguously; the caller must reconcile instead of posting again."""

    def __init__(self, error: WanError) -> None:
        super().__init__(error.message)
        self.error = error


_CREDENTIAL_RE = re.compile(
    r"(?i)(?:authorization\s*[:=]\s*)?bearer\s+\S+|authorization\s*[:=]\s*\S+|\bsk-[A-Za-z0-9_-]{6,}"
)


def _scrub(text: str, limit: int = 200) -> str:
    """Third-party text (exception messages, Location headers) as safe to show.

    :func:`redact` only knows registered secrets; this also removes anything shaped like
    a credential, in case a key was never registered (e.g. one passed only per call).
    """
    return _CREDENTIAL_RE.sub("[redacted]", redact(text))[:limit]


def _amend(error: WanError, suffix: str, *, hint: str | None = None) -> WanError:
    return WanError(
        error.code,
        f"{error.message.rstrip('.')} ({suffix})",
        hint=hint if hint is not None else error.hint,
        field=error.field,
        allowed=error.allowed,
        retry_after=error.retry_after,
        task_id=error.task_id,
        http_status=error.http_status,
    )


class GatewayClient:
    """ToAPIs video gateway calls; satisfies :class:`~wan_mcp.gateway.provider.VideoProvider`.

    ``http`` is shared and not owned (the caller closes it). ``sleep`` and ``clock`` are
    injectable so retry budgets can be tested without waiting.
    """

    def __init__(
        self,
        http: httpx2.AsyncClient,
        *,
        base_url: str,
        api_key: SecretStr | None,
        retry: RetryPolicy = RetryPolicy(),  # frozen, so one shared default is safe
        sleep: Sleep = anyio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        if "authorization" in http.headers:
            raise ValueError(
                "the shared HTTP client must not carry a default Authorization header: it also "
                "downloads from third-party hosts; GatewayClient adds the key per request"
            )
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        if api_key is not None:
            register_secret(api_key.get_secret_value())
        self._retry = retry
        self._sleep = sleep
        self._clock = clock

    def with_key(self, api_key: SecretStr) -> GatewayClient:
        """The same client (connection pool, retries) calling with a tenant's own key.

        For bring-your-own-key tenants: the key is held by the returned object only, redacted
        from every text like the server's own key, never written anywhere.
        """
        register_secret(api_key.get_secret_value(), transient=True)
        twin = copy.copy(self)
        twin._api_key = api_key
        return twin

    def __repr__(self) -> str:
        return f"GatewayClient(base_url={self._base_url!r}, retry={self._retry!r})"

    @property
    def base_url(self) -> str:
        return self._base_url

    # --- public calls ----------------------------------------------------------------

    async def create_task(self, payload: Mapping[str, Any], client_business_id: str) -> GatewayTask:
        """Submit one generation; at most one upstream task per call, whatever fails.

        ``client_business_id`` (journaled by the caller *before* this call) goes top-level
        in the body and overrides any in ``payload``. Retries happen only while no request
        can have been processed: connect errors and connect/pool timeouts (nothing was
        sent), and HTTP 429 (the gateway refused before creating anything, honouring
        ``Retry-After`` within the budget). Treating 429 as "not created" is an assumption
        from the documented rate-limit behaviour, not a documented guarantee. Any other
        failure (read/write timeout, reset, 5xx, 408/409, an unreadable 2xx body) is
        reconciled via ``get_task(client_business_id)``; see :meth:`_reconcile`.
        """
        if not client_business_id or not client_business_id.strip():
            raise ValueError("client_business_id is required: it is how an ambiguous create is reconciled")
        body = {**payload, "client_business_id": client_business_id}
        try:
            task = await self._call("create", "POST", CREATE_PATH, parse_task, json_body=body, retry_ambiguous=False)
        except _Unconfirmed as unconfirmed:
            return await self._reconcile(client_business_id, unconfirmed.error)
        return self._with_business_id(task, client_business_id)

    async def get_task(self, id_or_business_id: str) -> GatewayTask:
        """Current state of a task, by gateway id or by the ``client_business_id`` we sent."""
        if not id_or_business_id or not id_or_business_id.strip():
            raise WanError(
                ErrorCode.INVALID_REQUEST,
                "a task id is required",
                field="task_id",
                hint="pass the task_id returned by generate_video (or its client business id)",
            )
        reference = id_or_business_id.strip()
        path = STATUS_PATH.format(id=quote(reference, safe=""))
        try:
            return await self._call("status", "GET", path, parse_task)
        except WanError as err:
            raise err.with_task(reference) from None

    async def upload_image(self, data: bytes, filename: str, mime: str) -> UploadedFile:
        """Host a local image on the gateway (generation only accepts public URLs)."""
        return await self._upload("upload_image", UPLOAD_IMAGE_PATH, data, filename, mime)

    async def upload_video(self, data: bytes, filename: str, mime: str) -> UploadedFile:
        """Host a local reference video on the gateway (for ``metadata.reference_urls``)."""
        return await self._upload("upload_video", UPLOAD_VIDEO_PATH, data, filename, mime)

    async def get_balance(self) -> Balance:
        return await self._call("balance", "GET", BALANCE_PATH, parse_balance)

    # --- reconciliation ----------------------------------------------------------------

    async def _reconcile(self, business_id: str, cause: WanError) -> GatewayTask:
        """Find out whether an ambiguous create made a task, without ever posting again.

        Found: that task is the result. Not found: look again a bounded number of times
        (the gateway may still be processing the request whose answer we lost), then say
        so with ``SUBMISSION_UNCONFIRMED``; resubmitting is then the caller's informed
        choice. The lookup itself failing also ends in ``SUBMISSION_UNCONFIRMED`` with the
        business id, so the caller can journal it and reconcile later.
        """
        policy = self._retry
        started = self._clock()
        what = f"the create request for client business id {business_id!r} failed ambiguously ({cause.message})"
        logger.info("gateway create ambiguous (%s); reconciling by business id", cause.code.value)
        for check in range(policy.reconcile_checks):
            if check:
                await self._sleep(policy.reconcile_interval)
            try:
                task = await self.get_task(business_id)
            except WanError as err:
                if err.code is ErrorCode.NOT_FOUND:
                    logger.debug("gateway reconcile check %d: no task yet", check + 1)
                    continue
                logger.info("gateway reconcile failed: %s", err.code.value)
                raise WanError(
                    ErrorCode.SUBMISSION_UNCONFIRMED,
                    f"{what}, and looking it up failed too ({err.code.value}: {err.message})",
                    hint=f"do not submit again yet: get_task_status or list_tasks with business id "
                    f"{business_id} will show the task if it was created; check again in a minute",
                ) from None
            logger.info("gateway reconcile found task %s", task.id)
            return self._with_business_id(task, business_id)
        elapsed = self._clock() - started
        raise WanError(
            ErrorCode.SUBMISSION_UNCONFIRMED,
            f"{what}, and {policy.reconcile_checks} lookups over {elapsed:.1f}s found no task for it",
            hint=f"no task exists for this submission yet; list_tasks/get_task_status with business id "
            f"{business_id} will show it if it appears; it is safe to submit again if it does not",
        )

    @staticmethod
    def _with_business_id(task: GatewayTask, business_id: str) -> GatewayTask:
        # Older gateways do not echo it; we know what we sent.
        return task if task.client_business_id else replace(task, client_business_id=business_id)

    # --- the retry loop ------------------------------------------------------------------

    async def _upload(self, op: str, path: str, data: bytes, filename: str, mime: str) -> UploadedFile:
        def parse(body: object) -> UploadedFile:
            return parse_upload(body)

        return await self._call(op, "POST", path, parse, files={"file": (filename, data, mime)}, upload=True)

    async def _call(
        self,
        op: str,
        method: str,
        path: str,
        parse: Callable[[object], T],
        *,
        json_body: Mapping[str, Any] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        upload: bool = False,
        retry_ambiguous: bool = True,
    ) -> T:
        """Attempt until success, a final answer, or the attempts/time budget runs out.

        ``Retry-After`` is a floor on the jittered delay. When the gateway asks for more
        time than the budget has left we stop at once (``RATE_LIMITED`` with
        ``retry_after``) instead of sleeping past the budget or retrying early.
        """
        policy = self._retry
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(
                    op, method, path, parse, attempt=attempt, json_body=json_body, files=files, upload=upload
                )
            except _AttemptFailed as failure:
                error, kind = failure.error, failure.kind
            if kind is _Kind.FINAL:
                raise error
            if kind is _Kind.AMBIGUOUS and not retry_ambiguous:
                raise _Unconfirmed(error)
            elapsed = self._clock() - started
            if attempt >= policy.attempts:
                raise self._exhausted(error, kind, attempt, elapsed)
            remaining = policy.total_seconds - elapsed
            delay = policy.backoff(attempt - 1)
            if error.retry_after is not None:
                if error.retry_after > remaining:
                    why = f"the gateway asked to wait {error.retry_after:g}s, beyond the retry budget"
                    raise self._exhausted(error, kind, attempt, elapsed, why)
                delay = max(delay, error.retry_after)
            if delay > remaining:
                why = f"the {policy.total_seconds:g}s retry budget is used up"
                raise self._exhausted(error, kind, attempt, elapsed, why)
            logger.debug(
                "gateway %s retry in %.2fs after %s (attempt %d/%d)",
                op,
                delay,
                error.code.value,
                attempt,
                policy.attempts,
            )
            await self._sleep(delay)

    @staticmethod
    def _exhausted(error: WanError, kind: _Kind, attempts: int, elapsed: float, why: str | None = None) -> WanError:
        suffix = f"gave up after {attempts} attempt{'s' if attempts > 1 else ''} in {elapsed:.1f}s"
        if why:
            suffix += f": {why}"
        hint = error.hint
        if kind is _Kind.UNSENT:
            hint = (hint.rstrip(".") + ". " if hint else "") + (
                "The request never reached the gateway, so nothing was created or charged"
            )
        return _amend(error, suffix, hint=hint)

    async def _attempt(
        self,
        op: str,
        method: str,
        path: str,
        parse: Callable[[object], T],
        *,
        attempt: int,
        json_body: Mapping[str, Any] | None,
        files: Mapping[str, tuple[str, bytes, str]] | None,
        upload: bool,
    ) -> T:
        """One HTTP exchange, classified by what it proves about the gateway's state."""
        headers = {"Authorization": f"Bearer {self._key()}", "Accept": "application/json"}
        started = self._clock()
        deadline = self._retry.attempt_seconds
        try:
            with anyio.fail_after(deadline):
                async with self._http.stream(
                    method, self._base_url + path, json=json_body, files=files, headers=headers
                ) as response:
                    status = response.status_code
                    content, oversized = await _read_capped(response, MAX_JSON_BYTES)
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                    location = response.headers.get("location")
        except TimeoutError:
            error = WanError(
                ErrorCode.TIMEOUT,
                f"the gateway at {self._base_url} did not finish answering within {deadline:g}s",
                hint="try again; if it keeps happening the gateway is overloaded (raise "
                "WAN_MCP_REQUEST_DEADLINE_SECONDS only for very slow links)",
            )
            raise _AttemptFailed(error, _Kind.AMBIGUOUS) from None
        except httpx2.RequestError as exc:
            error, kind = self._transport_failure(exc)
            logger.debug(
                "gateway %s %s -> %s attempt=%d elapsed=%.3fs",
                method,
                path,
                type(exc).__name__,
                attempt,
                self._clock() - started,
            )
            raise _AttemptFailed(error, kind) from None
        logger.debug(
            "gateway %s %s -> %d attempt=%d elapsed=%.3fs",
            method,
            path,
            status,
            attempt,
            self._clock() - started,
        )

        if 200 <= status < 300:
            try:
                if oversized:
                    raise protocol_error(f"the answer is over the {MAX_JSON_BYTES:,}-byte limit for JSON")
                return parse(decode_json(content))
            except WanError as err:
                # A garbled success may still mean the gateway acted (create) or be a
                # transient proxy hiccup (reads); a well-formed refusal is final.
                raise _AttemptFailed(err, _Kind.AMBIGUOUS if err.code is ErrorCode.PROTOCOL else _Kind.FINAL) from None
            except Exception as exc:  # a parser bug on a hostile body: never a crash, never a lost task
                logger.warning("gateway %s answer could not be read (%s)", op, type(exc).__name__)
                raise _AttemptFailed(protocol_error("the answer could not be read"), _Kind.AMBIGUOUS) from None

        try:
            body: object = decode_json(content) if content and not oversized else None
        except WanError:
            body = None
        error = error_from_response(status, body, retry_after=retry_after, upload=upload)
        if 300 <= status < 400:
            if location:
                error = _amend(error, f"redirect to {_scrub(location)}")
            raise _AttemptFailed(error, _Kind.FINAL)
        if status == 429:
            raise _AttemptFailed(error, _Kind.REFUSED)
        if status == 408 or status >= 500:
            raise _AttemptFailed(error, _Kind.AMBIGUOUS)
        if status == 409 and op == "create":
            # Undocumented [I]: a conflict on create most plausibly means the business id
            # already names a task, which reconciliation will find.
            raise _AttemptFailed(error, _Kind.AMBIGUOUS)
        raise _AttemptFailed(error, _Kind.FINAL)

    def check_ready(self) -> None:
        """Raise the CONFIG error now if no key is set, before the caller has side effects."""
        self._key()

    def _key(self) -> str:
        key = self._api_key.get_secret_value() if self._api_key is not None else ""
        if not key:
            raise WanError(
                ErrorCode.CONFIG,
                "no ToAPIs API key is configured",
                hint="set WAN_MCP_API_KEY in the MCP host's env block, or run `wan-mcp serve --simulate` "
                "to try the server on the built-in simulator",
            )
        return key

    def _transport_failure(self, exc: httpx2.RequestError) -> tuple[WanError, _Kind]:
        """Map an httpx2 exception without ever quoting its request (it holds our headers)."""
        name = type(exc).__name__
        detail = _scrub(str(exc)) or "no details"
        where = self._base_url
        if isinstance(exc, httpx2.ConnectTimeout | httpx2.PoolTimeout):
            return WanError(
                ErrorCode.TIMEOUT,
                f"could not get a connection to the gateway at {where} in time ({name})",
                hint="check the network and base_url, then try again",
            ), _Kind.UNSENT
        if isinstance(exc, httpx2.TimeoutException):
            return WanError(
                ErrorCode.TIMEOUT,
                f"the gateway at {where} did not answer in time ({name})",
                hint="try again; if it keeps timing out, raise WAN_MCP_READ_TIMEOUT",
            ), _Kind.AMBIGUOUS
        if isinstance(exc, httpx2.ConnectError | httpx2.ProxyError):
            return WanError(
                ErrorCode.NETWORK,
                f"could not connect to the gateway at {where} ({name}: {detail})",
                hint="check the network, proxy settings and base_url, then try again",
            ), _Kind.UNSENT
        if isinstance(exc, httpx2.UnsupportedProtocol):
            return WanError(
                ErrorCode.CONFIG,
                f"base_url {where} is not a usable http(s) URL ({detail})",
                hint="set WAN_MCP_BASE_URL to https://toapis.com (or https://toapis.cn)",
            ), _Kind.FINAL
        if isinstance(exc, httpx2.DecodingError):
            return WanError(
                ErrorCode.PROTOCOL,
                f"the gateway sent a body that could not be decoded ({name})",
                hint="retry in a moment",
            ), _Kind.AMBIGUOUS
        if isinstance(exc, httpx2.LocalProtocolError):
            return WanError(
                ErrorCode.PROTOCOL,
                f"the request could not be sent as valid HTTP ({name}: {detail})",
                hint="this is a wan-mcp bug; please report it",
            ), _Kind.FINAL
        return WanError(
            ErrorCode.NETWORK,
            f"the connection to the gateway at {where} broke ({name}: {detail})",
            hint="try again in a moment",
        ), _Kind.AMBIGUOUS
