"""What the tools return, as typed models (they become the tools' outputSchema).

Kept flat and small on purpose: the schemas are sent to the agent with every
``tools/list`` and count against its context, so fields are only those an agent
acts on. Absent values are omitted from the JSON (``exclude_none``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from wan_mcp.core.journal import FILM_MODE, TERMINAL, TaskRecord


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC, or None for a time no calendar can show (total: never raises)."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):
        return None


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    message: str
    hint: str | None = None


class QuoteView(BaseModel):
    """What a call costs, as an estimate from the price table (never under-stated)."""

    model_config = ConfigDict(extra="forbid")
    usd: float
    credits: int
    estimate: bool = True
    basis: str


class TaskView(BaseModel):
    """A task as an agent sees it: status, and once completed, where the video is."""

    model_config = ConfigDict(extra="forbid")
    task_id: str
    status: str
    mode: str | None = None
    model: str | None = None
    progress: int | None = None
    next_poll_seconds: int | None = None
    created_at: str | None = None
    video_url: str | None = None
    url_expires_at: str | None = None
    local_path: str | None = None
    #: On a hosted server: the saved file for this tenant, a signed link that expires (see links.py).
    download_url: str | None = None
    download_expires_at: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    has_audio: bool | None = None
    error: ErrorInfo | None = None
    sent: dict[str, Any] | None = None
    #: The task whose last frame this shot starts from (continue_from).
    continues: str | None = None
    #: A joined film's parts, in order (task ids).
    parts: list[str] | None = None
    deduplicated: bool | None = None
    #: What this generate_video call costs (0 when it returned an existing identical task).
    quote: QuoteView | None = None
    #: The day's estimated spend (USD) including this call.
    spent_today_usd: float | None = None
    #: The one step the agent should take next (hosts such as Claude Code and Codex show the
    #: model only the structured content, never the text block).
    next: str | None = None

    @classmethod
    def from_record(
        cls, rec: TaskRecord, *, include_sent: bool = False, next_poll_seconds: int | None = None
    ) -> TaskView:
        error = None
        if rec.error_code or rec.error_message:
            error = ErrorInfo(code=rec.error_code or "error", message=rec.error_message or "")
        return cls(
            task_id=rec.id,
            status=rec.status,
            mode=rec.mode or None,
            model=rec.model or None,
            progress=rec.progress,
            # From the tracker's timing (TaskTracker.advice), the one source of poll timing.
            next_poll_seconds=None if rec.status in TERMINAL else next_poll_seconds,
            created_at=iso(rec.created_at),
            video_url=rec.video_url,
            url_expires_at=iso(rec.expires_at) if rec.expires_at else None,
            local_path=rec.local_path,
            sha256=rec.sha256,
            size_bytes=rec.size_bytes,
            error=error,
            sent=rec.payload if include_sent else None,
            continues=rec.continues,
            parts=[str(p) for p in rec.payload.get("parts", [])] if rec.mode == FILM_MODE else None,
        )

    def with_next(self) -> TaskView:
        """Fill :attr:`next` from the status (call it once the view is final)."""
        if self.status == "completed":
            if self.download_url:
                self.next = (
                    f"done: give the user download_url (the MP4; valid until {self.download_expires_at}, "
                    f"get_task_status(task_id='{self.task_id}') gives a fresh one)"
                )
            elif self.local_path:
                self.next = f"done: the MP4 is at local_path ({self.local_path}); show it to the user"
            else:
                self.next = f"call get_task_status(task_id='{self.task_id}') to download the MP4, or use video_url"
        elif self.error is not None and self.error.hint:
            self.next = self.error.hint
        elif self.next_poll_seconds is not None:
            self.next = (
                f"call get_task_status(task_id='{self.task_id}', wait_seconds=30); "
                f"next upstream check in ~{self.next_poll_seconds}s"
            )
        return self

    def summary(self) -> str:
        """One line an agent (or a person) reads first."""
        parts = [f"Task {self.task_id}: {self.status}"]
        if self.parts is not None:
            parts.append(f"(film of {len(self.parts)} shots: {', '.join(self.parts)})")
        elif self.mode:
            parts.append(f"({self.mode}, {self.model})")
        if self.continues:
            parts.append(f"continuing {self.continues}")
        if self.progress is not None and self.status not in ("completed", "failed"):
            parts.append(f"{self.progress}%")
        text = " ".join(parts) + "."
        if self.deduplicated:
            text += (
                " An identical request was submitted moments ago; this is that task, not a new charge "
                "(pass a different seed for a new take)."
            )
        elif self.quote is not None:
            text += f" Cost: about USD {self.quote.usd:g} ({self.quote.credits} credits, estimate)."
        if self.spent_today_usd is not None:
            text += f" Spent today: about USD {self.spent_today_usd:g}."
        if self.status == "completed":
            if self.local_path:
                text += f" Saved to {self.local_path}"
                if self.width and self.height:
                    text += f" ({self.width}x{self.height}"
                    text += f", {self.duration_seconds:.1f}s)" if self.duration_seconds else ")"
                text += "."
            if self.download_url:
                text += f" Download: {self.download_url} (valid until {self.download_expires_at})."
            if self.video_url:
                text += f" URL: {self.video_url}"
                text += f" (expires {self.url_expires_at})." if self.url_expires_at else "."
        elif self.error is not None:
            text += f" [{self.error.code}] {self.error.message}"
            if self.error.hint:
                text += f" Next: {self.error.hint}"
        elif self.next_poll_seconds is not None:
            text += (
                f" Still running: call get_task_status(task_id='{self.task_id}', wait_seconds=30)"
                f" (next poll in ~{self.next_poll_seconds}s)."
            )
        return text


class UploadView(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    sha256: str
    mime_type: str
    width: int | None = None
    height: int | None = None
    size_bytes: int
    changes: list[str] = []
    cached: bool = False
    next: str = "pass url as generate_video(image=...) for image-to-video"

    def summary(self) -> str:
        text = f"Uploaded image ({self.width}x{self.height}, {self.mime_type}, {self.size_bytes} bytes): {self.url}"
        if self.cached:
            text += " (same image uploaded before; reused, no new upload)"
        if self.changes:
            text += ". Adjusted for Wan: " + "; ".join(self.changes)
        return text + ". Pass this URL as generate_video(image=...)."


class TaskList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[TaskView]
    next: str = "call get_task_status(task_id=...) for one task's details and its video"

    def summary(self) -> str:
        if not self.tasks:
            return "No tasks in the journal yet."
        lines = [f"{len(self.tasks)} task(s), newest first:"]
        for t in self.tasks:
            line = f"- {t.task_id} {t.status} {t.mode or ''} {t.created_at or ''}".rstrip()
            if t.local_path:
                line += f" -> {t.local_path}"
            lines.append(line)
        return "\n".join(lines)


class PlanView(BaseModel):
    """``generate_video(dry_run=true)``: what would be sent and what it would cost; nothing sent."""

    model_config = ConfigDict(extra="forbid")
    dry_run: bool = True
    mode: str
    model: str
    #: The exact body that would be POSTed; ``<upload: ...>`` marks a URL an upload would fill in.
    payload: dict[str, Any]
    uploads: list[str] = []
    quote: QuoteView
    needs_confirmation: bool = False
    spent_today_usd: float
    daily_left_usd: float | None = None
    session_left_usd: float | None = None
    next: str

    def summary(self) -> str:
        text = (
            f"Dry run: {self.mode} with {self.model} would cost about USD {self.quote.usd:g} "
            f"({self.quote.credits} credits, estimate: {self.quote.basis}). Nothing was sent or uploaded."
        )
        if self.uploads:
            text += " Would upload: " + "; ".join(self.uploads) + "."
        if self.needs_confirmation:
            text += " The user will be asked to confirm this spend."
        return f"{text} Next: {self.next}"


class UsageView(BaseModel):
    """``get_usage``: money at a glance (gateway balance, spend, budgets, prices)."""

    model_config = ConfigDict(extra="forbid")
    balance_usd: float | None = None
    balance_credits: float | None = None
    balance_unlimited: bool | None = None
    balance_note: str | None = None
    spent_today_usd: float
    spent_session_usd: float
    daily_budget_usd: float | None = None
    daily_left_usd: float | None = None
    session_budget_usd: float | None = None
    session_left_usd: float | None = None
    confirm_above_usd: float | None = None
    read_only: bool = False
    prices: list[str]
    prices_as_of: str
    next: str

    def summary(self) -> str:
        lines = []
        if self.balance_unlimited:
            lines.append("Gateway balance: unlimited.")
        elif self.balance_usd is not None:
            lines.append(f"Gateway balance: USD {self.balance_usd:g} ({self.balance_credits:g} credits).")
        else:
            lines.append(f"Gateway balance: unknown ({self.balance_note}).")
        daily = (
            f" of USD {self.daily_budget_usd:g} (USD {self.daily_left_usd:g} left)"
            if self.daily_budget_usd is not None
            else " (no daily budget)"
        )
        lines.append(f"Spent today: USD {self.spent_today_usd:g}{daily}, estimate.")
        session = (
            f" of USD {self.session_budget_usd:g} (USD {self.session_left_usd:g} left)"
            if self.session_budget_usd is not None
            else ""
        )
        lines.append(f"Spent this session: USD {self.spent_session_usd:g}{session}.")
        if self.confirm_above_usd is not None:
            lines.append(f"Calls above USD {self.confirm_above_usd:g} are confirmed by the user first.")
        if self.read_only:
            lines.append("Read-only mode: no paid call is made.")
        lines.append(f"Prices per second of video (estimates, {self.prices_as_of}): " + "; ".join(self.prices) + ".")
        return "\n".join(lines)
