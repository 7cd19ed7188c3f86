"""Fault schedules: which failure the next request to an endpoint meets.

Faults are queued per endpoint and fire in FIFO order, ``times`` each (``-1`` = until cleared),
so a test can script an exact sequence ("two 429s, then a reset, then success"). The optional
``probability`` (an addition to the shared contract) draws from a RNG seeded by the simulator's
seed, so even random chaos replays identically.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, replace
from typing import Final

ENDPOINTS: Final = ("create", "status", "upload_image", "upload_video", "file", "balance")
KINDS: Final = (
    "http_429",
    "http_500",
    "http_502",
    "http_503",
    "reset",
    "delay",
    "stall",
    "malformed_json",
    "truncated_json",
    "drop_response",
)
DEFAULT_STALL_SECONDS: Final = 30.0
DEFAULT_RETRY_AFTER: Final = 1.0


@dataclass(frozen=True)
class Fault:
    """One scheduled failure; ``times`` counts down as it fires."""

    endpoint: str
    kind: str
    times: int = 1
    retry_after: float | None = None
    delay: float | None = None
    probability: float = 1.0


def make_fault(
    endpoint: str,
    kind: str,
    *,
    times: int = 1,
    retry_after: float | None = None,
    delay: float | None = None,
    probability: float = 1.0,
) -> Fault:
    """Build a fault, rejecting schedules that could never fire the way the caller meant."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}")
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "drop_response" and endpoint != "create":
        raise ValueError("drop_response only applies to the create endpoint")
    if isinstance(times, bool) or not isinstance(times, int) or (times < 1 and times != -1):
        raise ValueError("times must be a positive integer, or -1 for 'until cleared'")
    for name, value in (("retry_after", retry_after), ("delay", delay)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise ValueError(f"{name} must be a non-negative number of seconds")
    if kind == "delay" and delay is None:
        raise ValueError("a delay fault needs delay=<seconds>")
    if isinstance(probability, bool) or not isinstance(probability, int | float) or not 0 < probability <= 1:
        raise ValueError("probability must be in (0, 1]")
    return Fault(endpoint, kind, times, retry_after, delay, float(probability))


class FaultSchedule:
    """Thread-safe per-endpoint FIFO queues; tests mutate it from their own thread."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, list[Fault]] = {endpoint: [] for endpoint in ENDPOINTS}
        self._rng = random.Random(f"faults:{seed}")

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._queues[fault.endpoint].append(fault)

    def clear(self) -> None:
        with self._lock:
            for queue in self._queues.values():
                queue.clear()

    def pending(self) -> list[Fault]:
        with self._lock:
            return [fault for queue in self._queues.values() for fault in queue]

    def take(self, endpoint: str) -> Fault | None:
        """Consume one firing of the head fault for ``endpoint``, if it fires this time."""
        with self._lock:
            queue = self._queues.get(endpoint)
            if not queue:
                return None
            head = queue[0]
            if head.probability < 1.0 and self._rng.random() >= head.probability:
                return None
            if head.times == -1:
                return head
            if head.times <= 1:
                queue.pop(0)
            else:
                queue[0] = replace(head, times=head.times - 1)
            return head
