"""One error taxonomy for every layer.

Each layer (gateway, core, server) raises :class:`WanError` and nothing else for
failures an agent could act on. The server turns it into ``ToolError`` text, so the
wording here is what a model reads: it must say what went wrong, which field, the
allowed values and the next step, and carry the task id whenever one exists.

Secrets never enter these objects: callers pass messages built from our own words
and from upstream *messages*, never from headers or request objects. As a second
line of defence, :func:`redact` scrubs any registered secret from the rendered text.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable machine-readable error codes (part of the public interface)."""

    INVALID_REQUEST = "invalid_request"  # 400, or our own validation
    AUTH = "auth"  # 401 / 403
    PAYMENT = "payment"  # 402: balance or quota
    NOT_FOUND = "not_found"  # 404: unknown task id
    CONTENT_POLICY = "content_policy"  # moderation refused the prompt or image
    RATE_LIMITED = "rate_limited"  # 429 (+ retry_after)
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"  # 5xx
    NETWORK = "network"  # connect error, reset
    TIMEOUT = "timeout"  # read/write/pool timeout
    PROTOCOL = "protocol"  # unparseable or unexpected body
    GENERATION_FAILED = "generation_failed"  # the task ran and failed upstream
    SUBMISSION_UNCONFIRMED = "submission_unconfirmed"  # create outcome unknown even after reconciling
    FILE_ACCESS = "file_access"  # path outside the allowed roots, unreadable, not a regular file
    INVALID_FILE = "invalid_file"  # not an image/video we can use
    DOWNLOAD_FAILED = "download_failed"  # result file could not be fetched or stored
    URL_BLOCKED = "url_blocked"  # SSRF guard refused a URL
    CONFIG = "config"  # missing key, bad setting
    JOURNAL = "journal"  # the local task journal is corrupt, locked or unwritable
    BUDGET_EXCEEDED = "budget_exceeded"  # this call's quote would pass a spending budget
    READ_ONLY = "read_only"  # WAN_MCP_READ_ONLY: no paid or uploading call is made
    CONFIRMATION_REQUIRED = "confirmation_required"  # the quote is above the threshold: ask the user
    NOT_CONFIRMED = "not_confirmed"  # the user declined or cancelled the spend


class WanError(Exception):
    """An error with enough context for an agent to fix its call or wait and retry."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        hint: str | None = None,
        field: str | None = None,
        allowed: list[str] | None = None,
        retry_after: float | None = None,
        task_id: str | None = None,
        http_status: int | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        self.code = code
        self.message = redact(message)
        self.hint = redact(hint) if hint else None
        self.field = field
        self.allowed = allowed
        self.retry_after = retry_after
        self.task_id = task_id
        self.http_status = http_status
        #: Structured facts an agent acts on beside the message (a quote, a confirm token, the
        #: spend so far); they go into the tool result's structured content, at its top level.
        self.extra = dict(extra) if extra else {}
        super().__init__(self.render())

    def with_task(self, task_id: str | None) -> WanError:
        """Attach a task id learned after the error was raised (e.g. in a wait)."""
        if task_id and not self.task_id:
            self.task_id = task_id
            self.args = (self.render(),)
        return self

    def render(self) -> str:
        """The one-paragraph text an agent reads (``ToolError`` text)."""
        parts = [f"[{self.code.value}]"]
        if self.field:
            parts.append(f"field '{self.field}':")
        parts.append(self.message.rstrip("."))
        text = " ".join(parts) + "."
        if self.allowed:
            text += " Allowed: " + ", ".join(self.allowed) + "."
        if self.task_id:
            text += f" task_id={self.task_id}."
        if self.retry_after is not None:
            text += f" Retry after {self.retry_after:g}s."
        if self.hint:
            text += " Next: " + self.hint.rstrip(".") + "."
        return redact(text)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code.value, "message": self.message}
        for key in ("hint", "field", "allowed", "retry_after", "task_id"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    def __repr__(self) -> str:
        return f"WanError({self.code.value!r}, {self.message!r}, task_id={self.task_id!r})"


# --- secret redaction -------------------------------------------------------------

_secrets: set[str] = set()
#: Keys tenants send with their calls (``X-Wan-Api-Key``), newest last: bounded, because any
#: client may send any number of them and every redaction walks the list.
_transient: OrderedDict[str, None] = OrderedDict()
MAX_TRANSIENT_SECRETS = 256
_secrets_lock = threading.Lock()


def register_secret(value: str | None, *, transient: bool = False) -> None:
    """Remember a secret so :func:`redact` scrubs it from any text we emit.

    Registered at start-up for the gateway key and the HTTP tokens; ``transient`` for a key a
    tenant sends per request (only the most recent :data:`MAX_TRANSIENT_SECRETS` are kept).
    Short values are ignored: redacting a 3-character "secret" would mangle ordinary words.
    """
    if value and len(value) >= 8:
        with _secrets_lock:
            if not transient:
                _secrets.add(value)
                return
            _transient[value] = None
            _transient.move_to_end(value)
            while len(_transient) > MAX_TRANSIENT_SECRETS:
                _transient.popitem(last=False)


def redact(text: str) -> str:
    with _secrets_lock:
        known = (*_secrets, *_transient)
    for secret in known:
        if secret in text:
            text = text.replace(secret, "***")
    return text
