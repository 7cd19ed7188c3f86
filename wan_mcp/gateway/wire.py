"""What the ToAPIs gateway says on the wire, parsed tolerantly into typed values.

Pure functions only (no I/O), so every documented shape can be tested without HTTP.

Why "tolerant": the gateway's own docs disagree with each other (``queued`` vs
``submitted``, ``result.data[0].url`` vs a top-level ``url``, ``error.message`` vs
``fail_reason``, an old APIMart-style create envelope, two tables of error ``type``
strings). A client that insists on one spelling breaks the day the gateway serves the
other, so we accept every shape the contract shows and normalise it here, once. Where
the body is genuinely unusable we raise :class:`WanError` with ``PROTOCOL`` rather
than guessing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from wan_mcp.errors import ErrorCode, WanError

__all__ = [
    "MAX_JSON_BYTES",
    "NO_RESULT_URL",
    "Balance",
    "GatewayTask",
    "TaskState",
    "UploadedFile",
    "classify_failure",
    "decode_json",
    "error_from_response",
    "parse_balance",
    "parse_retry_after",
    "parse_task",
    "parse_upload",
    "protocol_error",
    "unix_seconds",
    "upstream_text",
]

#: ``error_code`` we give a task the gateway called ``completed`` but left without a file.
NO_RESULT_URL = "no_result_url"

#: Longest upstream message we quote; gateway HTML error pages can be huge.
_MAX_QUOTE = 500
#: Largest JSON body we parse (a task or error object is a few hundred bytes).
MAX_JSON_BYTES = 1024 * 1024
#: Deepest JSON nesting we accept (documented bodies nest 4 levels).
_MAX_DEPTH = 32
#: A plausible Unix time lies in this window (2000-01-01 .. 2100-01-01); anything else is a unit error.
_SANE_SECONDS = (946_684_800.0, 4_102_444_800.0)
#: ANSI/VT escape sequences (CSI, OSC, two-character escapes): a terminal would obey them.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")

_AUTH_HINT = (
    "check WAN_MCP_API_KEY (a ToAPIs key, sk-...) and the region: keys from toapis.cn only work "
    "with base_url https://toapis.cn, keys from toapis.com only with https://toapis.com"
)
_PAYMENT_HINT = "top up the ToAPIs account (`wan-mcp doctor` shows the balance), then submit again"


class TaskState(StrEnum):
    """The four states the rest of the server reasons about, whatever the gateway spelled."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


# Spellings seen in the contract (§5.3) plus the obvious cousins. Anything not listed is
# taken as "still running": polling a finished task a little longer is cheap, declaring a
# running task finished loses the video.
_STATUS_MAP: dict[str, TaskState] = {
    "queued": TaskState.QUEUED,
    "submitted": TaskState.QUEUED,
    "pending": TaskState.QUEUED,
    "in_progress": TaskState.IN_PROGRESS,
    "completed": TaskState.COMPLETED,
    "succeeded": TaskState.COMPLETED,
    "success": TaskState.COMPLETED,
    "failed": TaskState.FAILED,
    "failure": TaskState.FAILED,
    "error": TaskState.FAILED,
    "cancelled": TaskState.FAILED,
    "canceled": TaskState.FAILED,
    "expired": TaskState.FAILED,
}


@dataclass(frozen=True, slots=True)
class GatewayTask:
    """One upstream task as last seen. Timestamps are Unix seconds (floats, any of them may be absent)."""

    id: str
    state: TaskState
    raw_status: str
    progress: int | None = None
    model: str | None = None
    created_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    video_url: str | None = None
    video_format: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    client_business_id: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in (TaskState.COMPLETED, TaskState.FAILED)

    def as_error(self) -> WanError | None:
        """The error an agent should see for a failed task (None unless failed).

        Lives here so the core and the gateway word failed tasks the same way and both
        route content-policy refusals to ``CONTENT_POLICY`` through :func:`classify_failure`.
        """
        if self.state is not TaskState.FAILED:
            return None
        code = classify_failure(self.error_code, self.error_message)
        reason = self.error_message or "the gateway gave no reason"
        if code is ErrorCode.CONTENT_POLICY:
            hint = "rephrase the prompt (or use another image) so it stays within the content policy"
        elif self.error_code == NO_RESULT_URL:
            hint = "submit the same request again; `wan-mcp doctor` shows the balance, in case that attempt was billed"
        else:
            hint = "submit the request again; if it keeps failing, simplify the prompt or change the inputs"
        return WanError(code, f"the video task failed upstream: {reason}", hint=hint, task_id=self.id)


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file the gateway now hosts; ``url`` is what generation requests reference."""

    url: str
    id: str | None = None
    mime_type: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Balance:
    """Account balance. ``unlimited`` folds ``unlimited_quota`` and the ``remain_balance == -1`` sentinel."""

    remain_balance: float | None
    used_balance: float | None
    remain_credits: float | None
    unlimited: bool


# --- failure classification ------------------------------------------------------

_CONTENT_POLICY_RE = re.compile(
    r"content[\s_-]*polic|moderat|violat|sensitive|data[\s_-]*inspection|inappropriate|unsafe content",
    re.IGNORECASE,
)
_CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "content_policy", "datainspectionfailed"})


def classify_failure(code: str | None, message: str | None) -> ErrorCode:
    """Map a task failure (or an HTTP error ``type``/message) to an error code.

    Public because the core layer words failed tasks with it too: a moderation refusal
    needs a different next step (rephrase) from a transient generation failure (resubmit),
    and the gateway only tells them apart in free text.
    """
    if code and code.strip().lower().replace(".", "") in _CONTENT_POLICY_CODES:
        return ErrorCode.CONTENT_POLICY
    if message and _CONTENT_POLICY_RE.search(message):
        return ErrorCode.CONTENT_POLICY
    return ErrorCode.GENERATION_FAILED


# --- small tolerant readers ------------------------------------------------------


def _str(value: object) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _num(value: object) -> float | None:
    """A finite number, or None; never raises (a 400-digit integer overflows a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def unix_seconds(value: object) -> float | None:
    """Unix seconds. Milli-, micro- and nanoseconds are scaled down; an implausible time is None.

    Stored as is, a microsecond ``expires_at`` once read as the year 57877 and broke every
    view of the task; a value that is no time at all must simply count as absent.
    """
    number = _num(value)
    if number is None or number <= 0:
        return None
    for scale in (1.0, 1e3, 1e6, 1e9):
        seconds = number / scale
        if _SANE_SECONDS[0] <= seconds <= _SANE_SECONDS[1]:
            return seconds
    return None


def _progress(value: object) -> int | None:
    number = _num(value)
    if number is None:
        return None
    return max(0, min(100, int(number)))


def _http_url(value: object) -> str | None:
    """Only absolute http(s) URLs are usable results; anything else counts as missing."""
    text = _str(value)
    if text and text.lower().startswith(("http://", "https://")):
        return text
    return None


def upstream_text(text: str) -> str:
    """Gateway text made safe to show: escapes and control characters gone, whitespace folded, capped.

    Upstream text can be anything (an HTML page, a terminal escape, an instruction planted
    for the model), so it is cleaned here and always presented quoted, as data (:func:`_quote`).
    """
    text = _ESCAPES.sub("", text)
    text = "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in text)
    text = " ".join(text.split()).replace('"', "'")
    return text if len(text) <= _MAX_QUOTE else text[: _MAX_QUOTE - 1] + "…"


def _quote(text: str) -> str:
    """Upstream text as a quotation: ``gateway said "..."``, never words of our own."""
    return f'gateway said "{upstream_text(text)}"'


def _first(value: object) -> Mapping[str, Any] | None:
    """``data`` is a list in the documented shapes; tolerate a bare object too."""
    if isinstance(value, list) and value and isinstance(value[0], Mapping):
        return value[0]
    if isinstance(value, Mapping):
        return value
    return None


def protocol_error(what: str) -> WanError:
    return WanError(
        ErrorCode.PROTOCOL,
        f"the gateway sent an unexpected response: {what}",
        hint="retry in a moment; if it persists, check base_url points at the ToAPIs gateway",
    )


# --- bodies -------------------------------------------------------------------------


def _depth(value: object) -> int:
    """Nesting depth of decoded JSON, iteratively (no recursion to overflow)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if level > _MAX_DEPTH:
                break
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def decode_json(content: bytes) -> object:
    """Parse a body; oversized, non-JSON, too deep or truncated bodies are ``PROTOCOL`` errors, never crashes."""
    if len(content) > MAX_JSON_BYTES:
        raise protocol_error(f"the body is {len(content):,} bytes, over the {MAX_JSON_BYTES:,}-byte limit for JSON")
    try:
        decoded = json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        snippet = upstream_text(content[:80].decode("utf-8", "replace"))
        raise protocol_error(f"the body is not valid JSON ({len(content)} bytes, starting '{snippet}')") from None
    if _depth(decoded) > _MAX_DEPTH:
        raise protocol_error(f"the JSON nests deeper than {_MAX_DEPTH} levels")
    return decoded


def parse_task(body: object) -> GatewayTask:
    """Read a task from a create or status response, in any documented shape."""
    if not isinstance(body, Mapping):
        raise protocol_error("a task response is not a JSON object")
    obj: Mapping[str, Any] = body
    # Old APIMart-style create envelope: {"code":200,"data":[{"status":"submitted","task_id":...}]}
    if "id" not in obj and "task_id" not in obj and "data" in obj:
        inner = _first(obj.get("data"))
        if inner is None:
            raise protocol_error("the create envelope has no task in 'data'")
        obj = inner
    task_id = _str(obj.get("id")) or _str(obj.get("task_id"))
    if task_id is None:
        raise protocol_error("the task has no 'id'")

    raw_status = _str(obj.get("status")) or ""
    state = _STATUS_MAP.get(raw_status.lower(), TaskState.IN_PROGRESS)

    result = obj.get("result")
    first = _first(result.get("data")) if isinstance(result, Mapping) else None
    video_url = _http_url(first.get("url")) if first else None
    video_format = _str(first.get("format")) if first else None
    if video_url is None:
        video_url = _http_url(obj.get("url"))
        video_format = video_format or _str(obj.get("format"))

    error = obj.get("error")
    error_code: str | None = None
    error_message: str | None = None
    if isinstance(error, Mapping):
        error_code = _str(error.get("code")) or _str(error.get("type"))
        error_message = _str(error.get("message"))
    elif isinstance(error, str):
        error_message = _str(error)
    error_message = error_message or _str(obj.get("fail_reason"))

    if state is TaskState.COMPLETED and video_url is None:
        # litellm does the same: a "success" we cannot download is a failure to the user.
        state = TaskState.FAILED
        error_code = NO_RESULT_URL
        error_message = (
            "the gateway marked the task completed but returned no video file URL, so there is "
            "nothing to download; submit the request again"
        )
    if state is TaskState.FAILED and error_message is not None:
        error_message = _quote(error_message)

    metadata = obj.get("metadata")
    business_id = _str(obj.get("client_business_id"))
    if business_id is None and isinstance(metadata, Mapping):
        business_id = _str(metadata.get("client_business_id"))

    return GatewayTask(
        id=task_id,
        state=state,
        raw_status=raw_status,
        progress=_progress(obj.get("progress")),
        model=_str(obj.get("model")),
        created_at=unix_seconds(obj.get("created_at")),
        completed_at=unix_seconds(obj.get("completed_at")),
        expires_at=unix_seconds(obj.get("expires_at")),
        video_url=video_url,
        video_format=video_format,
        error_code=error_code,
        error_message=error_message,
        client_business_id=business_id,
    )


_FILE_PROBLEM_RE = re.compile(
    r"unsupported|too large|maximum size|invalid .*file|file type|image type|format|corrupt|mime|empty",
    re.IGNORECASE,
)


def _upload_failure(message: str | None, http_status: int | None) -> WanError:
    text = _quote(message) if message else "the gateway refused the upload without a reason"
    if http_status == 413 or http_status == 415 or _FILE_PROBLEM_RE.search(text):
        return WanError(
            ErrorCode.INVALID_FILE,
            f"the gateway refused the file: {text}",
            hint="images: JPEG, PNG, WebP or GIF up to 10 MB; videos: MP4, WebM or MOV up to 50 MB. "
            "Convert or shrink the file and upload it again",
            http_status=http_status,
        )
    return WanError(
        ErrorCode.INVALID_REQUEST,
        f"the gateway refused the upload: {text}",
        hint="fix what the message names and upload again",
        http_status=http_status,
    )


def parse_upload(body: object, *, http_status: int | None = None) -> UploadedFile:
    """Read the upload envelope ``{"success", "message", "data"}``.

    ``success: false`` is the file's fault (type, size) or the request's, never transient,
    so it is raised as ``INVALID_FILE``/``INVALID_REQUEST`` rather than retried.
    """
    if not isinstance(body, Mapping):
        raise protocol_error("an upload response is not a JSON object")
    if body.get("success") is False:
        raise _upload_failure(_str(body.get("message")), http_status)
    data = body.get("data")
    source: Mapping[str, Any] = data if isinstance(data, Mapping) else body
    url = _http_url(source.get("url"))
    if url is None:
        raise protocol_error("the upload succeeded but the response has no file URL (data.url)")
    size = _num(source.get("size"))
    return UploadedFile(
        url=url,
        id=_str(source.get("id")),
        mime_type=_str(source.get("mime_type")) or _str(source.get("content_type")),
        size=int(size) if size is not None and size >= 0 else None,
    )


def parse_balance(body: object) -> Balance:
    """Read ``GET /v1/user/balance`` (flat, or wrapped in ``data``)."""
    if not isinstance(body, Mapping):
        raise protocol_error("a balance response is not a JSON object")
    if body.get("success") is False:
        raise protocol_error(f"the balance request failed: {_quote(_str(body.get('message')) or 'no reason')}")
    data = body.get("data")
    source: Mapping[str, Any] = data if isinstance(data, Mapping) else body
    remain = _num(source.get("remain_balance"))
    used = _num(source.get("used_balance"))
    credits = _num(source.get("remain_credits"))
    if remain is None and used is None and credits is None:
        raise protocol_error("the balance response has none of remain_balance, used_balance, remain_credits")
    unlimited = source.get("unlimited_quota") is True or source.get("unlimited") is True or remain == -1
    return Balance(remain_balance=remain, used_balance=used, remain_credits=credits, unlimited=unlimited)


# --- HTTP errors --------------------------------------------------------------------

_FIELDS = (
    "client_business_id",
    "negative_prompt",
    "reference_urls",
    "prompt_extend",
    "aspect_ratio",
    "image_urls",
    "resolution",
    "shot_type",
    "watermark",
    "duration",
    "metadata",
    "prompt",
    "model",
    "audio",
    "seed",
)


def _named_field(message: str) -> str | None:
    lowered = message.lower()
    for name in _FIELDS:  # longest first, so "negative_prompt" wins over "prompt"
        if re.search(rf"\b{name}\b", lowered):
            return name
    return None


#: 4xx statuses with their own meaning; every other 4xx is the request's fault.
_SPECIAL_4XX = frozenset({401, 402, 403, 404, 408, 422, 429})


def _envelope(body: object) -> tuple[str | None, str | None]:
    """(type, message) from ``{"error":{...}}``, the upload/DashScope flat shapes, or nothing."""
    if not isinstance(body, Mapping):
        return None, None
    error = body.get("error")
    if isinstance(error, Mapping):
        return _str(error.get("type")) or _str(error.get("code")), _str(error.get("message"))
    if isinstance(error, str):
        return None, _str(error)
    code = body.get("code")
    kind = code if isinstance(code, str) else None
    return kind, _str(body.get("message")) or _str(body.get("msg")) or _str(body.get("detail"))


def error_from_response(
    status: int,
    body: object,
    *,
    retry_after: float | None = None,
    upload: bool = False,
) -> WanError:
    """Turn a non-2xx response into the one error taxonomy.

    Keyed on the HTTP status, because the docs show two conflicting tables of ``type``
    strings; ``type`` only refines (a 400 typed ``content_policy_violation`` is still a
    content-policy refusal). ``body`` is whatever :func:`decode_json` made of it, or
    None when it was not JSON (proxies answer 502 with HTML).
    """
    kind, upstream = _envelope(body)
    said = f": {_quote(upstream)}" if upstream else ""

    if status == 422 or (status == 400 and classify_failure(kind, upstream) is ErrorCode.CONTENT_POLICY):
        return WanError(
            ErrorCode.CONTENT_POLICY,
            f"the gateway refused the content (HTTP {status}){said}",
            hint="rephrase the prompt (or use another image) so it stays within the content policy",
            http_status=status,
        )
    if upload and status in (400, 413, 415):
        return _upload_failure(upstream, status)
    if status == 400 or (400 <= status < 500 and status not in _SPECIAL_4XX):
        field = _named_field(upstream) if upstream else None
        hint = (
            f"fix '{field}' as the message says and submit again"
            if field
            else "fix the request as the message says and submit again"
        )
        return WanError(
            ErrorCode.INVALID_REQUEST,
            f"the gateway rejected the request (HTTP {status}){said}",
            hint=hint,
            field=field,
            http_status=status,
        )
    if status in (401, 403):
        return WanError(
            ErrorCode.AUTH,
            f"the gateway refused the API key (HTTP {status}){said}",
            hint=_AUTH_HINT,
            http_status=status,
        )
    if status == 402:
        return WanError(
            ErrorCode.PAYMENT,
            f"the ToAPIs account cannot pay for this (HTTP 402){said}",
            hint=_PAYMENT_HINT,
            http_status=status,
        )
    if status == 404:
        return WanError(
            ErrorCode.NOT_FOUND,
            f"the gateway does not know this task (HTTP 404){said}",
            hint="check the task id (task ids and client business ids are scoped to the API key; "
            "results expire after 24 h)",
            http_status=status,
        )
    if status == 429:
        return WanError(
            ErrorCode.RATE_LIMITED,
            f"the gateway is rate limiting requests (HTTP 429){said}",
            hint="wait as long as it asks, then try again; avoid polling more often than every 10 s",
            retry_after=retry_after,
            http_status=status,
        )
    if status == 408 or status >= 500:
        return WanError(
            ErrorCode.UPSTREAM_UNAVAILABLE,
            f"the gateway is having trouble (HTTP {status}){said}",
            hint="try again in a minute; nothing is wrong with the request itself",
            retry_after=retry_after,
            http_status=status,
        )
    return WanError(
        ErrorCode.PROTOCOL,
        f"the gateway answered with an unexpected HTTP {status}{said}",
        hint="check base_url: it must be the gateway root, e.g. https://toapis.com (no redirects)",
        http_status=status,
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now; both forms RFC 9110 allows (delta-seconds, HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    number = _num(value)
    if number is not None:
        return max(0.0, number)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())
