"""Edge cases of the gateway client the simulator cannot produce, on ``httpx2.MockTransport``.

Each test scripts exact responses and exceptions per request, with a fake clock and
sleep, so retry budgets, Retry-After dates and the create/reconcile decision are checked
deterministically and instantly. Everything normal is covered against the real simulator
in tests/integration/test_gateway_client.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx2
import pytest
from pydantic import SecretStr

from wan_mcp import __version__
from wan_mcp.config import Settings
from wan_mcp.errors import ErrorCode, WanError
from wan_mcp.gateway import (
    GatewayClient,
    GatewayTask,
    RetryPolicy,
    TaskState,
    VideoProvider,
    make_http_client,
)

pytestmark = pytest.mark.anyio

KEY = "sk-mocktest-7f3a9c2e1b5d4f60"
BASE = "https://gateway.test"
BID = "biz-0001"

Step = httpx2.Response | Callable[[httpx2.Request], httpx2.Response]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeTime:
    """A clock that only moves when the client sleeps, so budgets are exact."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Upstream:
    """Scripted gateway: one queue of steps per HTTP method; the last step repeats."""

    def __init__(self, *, post: list[Step] | None = None, get: list[Step] | None = None) -> None:
        self.steps = {"POST": list(post or []), "GET": list(get or [])}
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        queue = self.steps[request.method]
        step = queue.pop(0) if len(queue) > 1 else queue[0]
        return step(request) if callable(step) else step

    def count(self, method: str) -> int:
        return sum(1 for r in self.requests if r.method == method)


def raises(exc_type: type[httpx2.RequestError], text: str = "boom") -> Callable[[httpx2.Request], httpx2.Response]:
    def step(request: httpx2.Request) -> httpx2.Response:
        raise exc_type(text, request=request)

    return step


def task_json(status: str = "queued", **extra: Any) -> dict[str, Any]:
    return {
        "id": "video_abc",
        "object": "generation.task",
        "model": "wan2.6",
        "status": status,
        "progress": 0,
        "created_at": 1768380224,
        **extra,
    }


def ok(body: Any = None) -> httpx2.Response:
    return httpx2.Response(200, json=task_json() if body is None else body)


def err(status: int, message: str = "nope", headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(status, json={"error": {"code": status, "message": message, "type": "x"}}, headers=headers)


FAST = RetryPolicy(
    attempts=4, total_seconds=30, base_delay=0.5, max_delay=8, reconcile_checks=3, reconcile_interval=1.0
)


def make(upstream: Upstream, time: FakeTime, *, retry: RetryPolicy = FAST, api_key: str | None = KEY) -> GatewayClient:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(upstream))
    return GatewayClient(
        http,
        base_url=BASE,
        api_key=SecretStr(api_key) if api_key else None,
        retry=retry,
        sleep=time.sleep,
        clock=time.clock,
    )


def assert_no_key(error: BaseException) -> None:
    for text in (str(error), repr(error), json.dumps(getattr(error, "to_dict", dict)())):
        assert KEY not in text
        assert "Bearer" not in text


# --- the HTTP client and the key -----------------------------------------------------------


async def test_make_http_client_has_no_auth_and_explicit_limits() -> None:
    settings = Settings(api_key=SecretStr(KEY), connect_timeout=3, read_timeout=4, write_timeout=5, pool_timeout=6)
    async with make_http_client(settings) as http:
        assert "authorization" not in http.headers
        assert http.headers["user-agent"] == f"wan-mcp/{__version__}"
        assert http.follow_redirects is False
        t = http.timeout
        assert (t.connect, t.read, t.write, t.pool) == (3, 4, 5, 6)


async def test_shared_client_with_default_auth_is_refused() -> None:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        with pytest.raises(ValueError, match="Authorization") as info:
            GatewayClient(http, base_url=BASE, api_key=SecretStr(KEY))
        assert KEY not in str(info.value)


async def test_bearer_sent_to_gateway_only_per_request() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=task_json())

    settings = Settings(api_key=SecretStr(KEY))
    async with make_http_client(settings, transport=httpx2.MockTransport(handler)) as http:
        client = GatewayClient(http, base_url=BASE, api_key=settings.api_key)
        await client.get_task("video_abc")
        await http.get("https://files.thirdparty.test/video.mp4")  # a result download
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].headers["user-agent"].startswith("wan-mcp/")
    assert "authorization" not in seen[1].headers
    assert KEY not in repr(client)


async def test_missing_key_is_config_and_sends_nothing() -> None:
    up = Upstream(get=[ok()])
    with pytest.raises(WanError) as info:
        await make(up, FakeTime(), api_key=None).get_task("video_abc")
    assert info.value.code is ErrorCode.CONFIG
    assert "WAN_MCP_API_KEY" in (info.value.hint or "")
    assert up.requests == []


async def test_key_absent_from_every_error_and_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="wan_mcp.gateway")
    scenarios: list[Upstream] = [
        Upstream(get=[err(401, f"bad key {KEY}")]),
        Upstream(get=[raises(httpx2.ConnectError, f"refused while sending Authorization: Bearer {KEY}")]),
        Upstream(get=[raises(httpx2.ReadError, f"reset {KEY}")]),
        Upstream(get=[raises(httpx2.ReadTimeout, KEY)]),
        Upstream(get=[httpx2.Response(200, content=f"not json {KEY}".encode())]),
        Upstream(get=[httpx2.Response(302, headers={"location": f"https://evil.test/?k={KEY}"})]),
        Upstream(post=[raises(httpx2.ReadTimeout, KEY)], get=[raises(httpx2.RemoteProtocolError, KEY)]),
    ]
    for up in scenarios:
        client = make(up, FakeTime(), retry=RetryPolicy(attempts=2, base_delay=0, reconcile_checks=1))
        with pytest.raises(WanError) as info:
            if up.steps["POST"]:
                await client.create_task({"model": "wan2.6", "prompt": "x"}, BID)
            else:
                await client.get_task("video_abc")
        assert_no_key(info.value)
        assert info.value.__cause__ is None  # httpx2 exceptions hold the request (and its headers)
    assert caplog.records
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert "authorization" not in record.getMessage().lower()


# --- reads: what is retried, and for how long -----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, ErrorCode.INVALID_REQUEST),
        (401, ErrorCode.AUTH),
        (403, ErrorCode.AUTH),
        (402, ErrorCode.PAYMENT),
        (404, ErrorCode.NOT_FOUND),
        (422, ErrorCode.CONTENT_POLICY),
    ],
)
async def test_reads_never_retry_definite_answers(status: int, code: ErrorCode) -> None:
    up, time = Upstream(get=[err(status)]), FakeTime()
    with pytest.raises(WanError) as info:
        await make(up, time).get_task("video_abc")
    assert info.value.code is code and info.value.http_status == status
    assert info.value.task_id == "video_abc"  # the agent sees which task the error is about
    assert up.count("GET") == 1 and time.sleeps == []


async def test_403_hint_names_key_and_region() -> None:
    with pytest.raises(WanError) as info:
        await make(Upstream(get=[err(403, "permission denied")]), FakeTime()).get_balance()
    assert info.value.code is ErrorCode.AUTH
    text = str(info.value)
    assert "permission denied" in text and "WAN_MCP_API_KEY" in text and "toapis.cn" in text


@pytest.mark.parametrize(
    "failure",
    [
        err(500),
        err(502),
        err(503),
        err(429),
        httpx2.Response(200, content=b'{"id": "vi'),
        raises(httpx2.ConnectError),
        raises(httpx2.ReadTimeout),
        raises(httpx2.ReadError),
        raises(httpx2.RemoteProtocolError),
        raises(httpx2.PoolTimeout),
    ],
)
async def test_reads_retry_transient_failures(failure: Step) -> None:
    up, time = Upstream(get=[failure, ok(task_json("in_progress", progress=40))]), FakeTime()
    t = await make(up, time).get_task("video_abc")
    assert t.state is TaskState.IN_PROGRESS and t.progress == 40
    assert up.count("GET") == 2 and len(time.sleeps) == 1


async def test_attempts_bound() -> None:
    up, time = Upstream(get=[err(503)]), FakeTime()
    with pytest.raises(WanError) as info:
        await make(up, time).get_task("video_abc")
    assert info.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert "gave up after 4 attempts" in info.value.message
    assert up.count("GET") == 4 and len(time.sleeps) == 3


async def test_time_budget_bound() -> None:
    """Exponential delays run into the 5 s budget long before 10 attempts are used."""
    policy = RetryPolicy(attempts=10, total_seconds=5, base_delay=2, max_delay=100)
    up, time = Upstream(get=[raises(httpx2.ConnectError)]), FakeTime()
    with pytest.raises(WanError) as info:
        await make(up, time, retry=policy).get_task("video_abc")
    assert info.value.code is ErrorCode.NETWORK
    assert sum(time.sleeps) <= 5
    assert up.count("GET") < 10
    assert "5s retry budget is used up" in info.value.message
    assert "nothing was created" in (info.value.hint or "")


async def test_backoff_is_full_jitter_within_caps() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8)
    for n, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0), (500, 8.0)]:
        samples = [policy.backoff(n) for _ in range(200)]
        assert all(0 <= s <= cap for s in samples)
        assert max(samples) > cap / 2  # jitter covers the range, not a fixed fraction


def test_retry_policy_from_settings() -> None:
    policy = RetryPolicy.from_settings(Settings(retry_attempts=7, retry_total_seconds=12))
    assert (policy.attempts, policy.total_seconds) == (7, 12)
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


async def test_retry_after_seconds_is_a_floor() -> None:
    up, time = Upstream(get=[err(429, headers={"Retry-After": "6"}), ok()]), FakeTime()
    await make(up, time).get_task("video_abc")
    assert time.sleeps == [6]


async def test_retry_after_http_date_is_honoured() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    up, time = Upstream(get=[err(429, headers={"Retry-After": when}), ok()]), FakeTime()
    await make(up, time).get_task("video_abc")
    assert len(time.sleeps) == 1 and 3 <= time.sleeps[0] <= 5.1


async def test_retry_after_beyond_budget_stops_with_rate_limited() -> None:
    up, time = Upstream(get=[err(429, headers={"Retry-After": "120"}), ok()]), FakeTime()
    with pytest.raises(WanError) as info:
        await make(up, time).get_task("video_abc")
    assert info.value.code is ErrorCode.RATE_LIMITED
    assert info.value.retry_after == 120
    assert "beyond the retry budget" in info.value.message
    assert up.count("GET") == 1 and time.sleeps == []


async def test_redirect_is_not_followed() -> None:
    up = Upstream(get=[httpx2.Response(301, headers={"location": "https://toapis.cn/v1/x"})])
    with pytest.raises(WanError) as info:
        await make(up, FakeTime()).get_task("video_abc")
    assert info.value.code is ErrorCode.PROTOCOL
    assert "toapis.cn" in info.value.message and "base_url" in (info.value.hint or "")
    assert up.count("GET") == 1


async def test_business_id_is_path_quoted() -> None:
    up = Upstream(get=[ok()])
    await make(up, FakeTime()).get_task("order/2026 #1")
    assert up.requests[0].url.raw_path == b"/v1/videos/generations/order%2F2026%20%231"


async def test_upload_is_multipart_with_file_field() -> None:
    body = {
        "success": True,
        "message": "",
        "data": {"id": "upload_1", "url": "https://files.test/u.png", "mime_type": "image/png", "size": 4},
    }
    up = Upstream(post=[httpx2.Response(200, json=body)])
    f = await make(up, FakeTime()).upload_image(b"\x89PNG", "cat.png", "image/png")
    assert f.url == "https://files.test/u.png"
    request = up.requests[0]
    assert request.url.path == "/v1/uploads/images"
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert b'name="file"; filename="cat.png"' in request.content
    assert b"Content-Type: image/png" in request.content


async def test_upload_refusal_with_200_is_final() -> None:
    up = Upstream(
        post=[httpx2.Response(200, json={"success": False, "message": "Video too large. Maximum size is 50MB"})]
    )
    with pytest.raises(WanError) as info:
        await make(up, FakeTime()).upload_video(b"x", "a.mp4", "video/mp4")
    assert info.value.code is ErrorCode.INVALID_FILE
    assert up.count("POST") == 1


# --- create: retried only when provably unsent, otherwise reconciled ------------------------------


@pytest.mark.parametrize("exc", [httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout])
async def test_create_retries_when_the_request_never_left(exc: type[httpx2.RequestError]) -> None:
    up, time = Upstream(post=[raises(exc), ok()]), FakeTime()
    t = await make(up, time).create_task({"model": "wan2.6", "prompt": "cat"}, BID)
    assert t.id == "video_abc" and t.client_business_id == BID
    assert up.count("POST") == 2 and up.count("GET") == 0


async def test_create_429_is_retried_honouring_retry_after() -> None:
    up, time = Upstream(post=[err(429, headers={"Retry-After": "2"}), ok()]), FakeTime()
    await make(up, time).create_task({"model": "wan2.6", "prompt": "cat"}, BID)
    assert up.count("POST") == 2 and time.sleeps == [2]


async def test_create_puts_business_id_top_level_and_wins() -> None:
    up = Upstream(post=[ok()])
    await make(up, FakeTime()).create_task({"model": "wan2.6", "prompt": "cat", "client_business_id": "old"}, BID)
    assert json.loads(up.requests[0].content) == {
        "model": "wan2.6",
        "prompt": "cat",
        "client_business_id": BID,
    }


@pytest.mark.parametrize(
    "ambiguous",
    [
        raises(httpx2.ReadTimeout),
        raises(httpx2.WriteTimeout),
        raises(httpx2.ReadError),
        raises(httpx2.RemoteProtocolError),
        err(500),
        err(502),
        err(503),
        err(409),
        httpx2.Response(200, content=b"<html>"),
        httpx2.Response(200, json={"object": "generation.task"}),
    ],
)
async def test_create_ambiguous_failure_is_reconciled_not_reposted(ambiguous: Step) -> None:
    up = Upstream(post=[ambiguous, ok()], get=[ok(task_json("in_progress", client_business_id=BID))])
    t = await make(up, FakeTime()).create_task({"model": "wan2.6", "prompt": "cat"}, BID)
    assert t.id == "video_abc" and t.state is TaskState.IN_PROGRESS and t.client_business_id == BID
    assert up.count("POST") == 1
    assert up.requests[1].method == "GET" and up.requests[1].url.path == f"/v1/videos/generations/{BID}"


async def test_create_reconcile_rechecks_404_then_finds_the_task() -> None:
    up, time = Upstream(post=[raises(httpx2.ReadTimeout)], get=[err(404), err(404), ok()]), FakeTime()
    t = await make(up, time).create_task({"model": "wan2.6", "prompt": "cat"}, BID)
    assert t.id == "video_abc"
    assert up.count("POST") == 1 and up.count("GET") == 3
    assert time.sleeps == [1.0, 1.0]


async def test_create_reconcile_not_found_is_submission_unconfirmed() -> None:
    up, time = Upstream(post=[raises(httpx2.ReadTimeout)], get=[err(404)]), FakeTime()
    with pytest.raises(WanError) as info:
        await make(up, time).create_task({"model": "wan2.6", "prompt": "cat"}, BID)
    e = info.value
    assert e.code is ErrorCode.SUBMISSION_UNCONFIRMED
    assert BID in e.message and BID in (e.hint or "")
    assert "safe to submit again" in (e.hint or "")
    assert up.count("POST") == 1 and up.count("GET") == 3
    assert time.sleeps == [1.0, 1.0]


async def test_create_reconcile_lookup_failing_is_submission_unconfirmed() -> None:
    up, time = Upstream(post=[err(502)], get=[err(500)]), FakeTime()
    with pytest.raises(WanError) as info:
        await make(up, time).create_task({"model": "wan2.6", "prompt": "cat"}, BID)
    e = info.value
    assert e.code is ErrorCode.SUBMISSION_UNCONFIRMED
    assert BID in e.message and "do not submit again yet" in (e.hint or "")
    assert up.count("POST") == 1 and up.count("GET") == FAST.attempts


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, ErrorCode.INVALID_REQUEST),
        (401, ErrorCode.AUTH),
        (402, ErrorCode.PAYMENT),
        (404, ErrorCode.NOT_FOUND),
        (422, ErrorCode.CONTENT_POLICY),
    ],
)
async def test_create_definite_refusals_are_neither_retried_nor_reconciled(status: int, code: ErrorCode) -> None:
    up, time = (
        Upstream(post=[err(status, "Content violates the content policy" if status == 422 else "no")], get=[ok()]),
        FakeTime(),
    )
    with pytest.raises(WanError) as info:
        await make(up, time).create_task({"model": "wan2.6", "prompt": "cat"}, BID)
    assert info.value.code is code
    assert len(up.requests) == 1 and time.sleeps == []


async def test_create_connect_errors_exhausted_say_nothing_was_created() -> None:
    up, time = Upstream(post=[raises(httpx2.ConnectError, "connection refused")]), FakeTime()
    with pytest.raises(WanError) as info:
        await make(up, time).create_task({"model": "wan2.6", "prompt": "cat"}, BID)
    assert info.value.code is ErrorCode.NETWORK
    assert "never reached the gateway" in (info.value.hint or "")
    assert up.count("POST") == FAST.attempts and up.count("GET") == 0


async def test_create_connect_error_then_read_timeout_is_reconciled_once() -> None:
    up = Upstream(
        post=[raises(httpx2.ConnectError), raises(httpx2.ReadTimeout), ok()],
        get=[ok(task_json(client_business_id=BID))],
    )
    t = await make(up, FakeTime()).create_task({"model": "wan2.6", "prompt": "cat"}, BID)
    assert t.client_business_id == BID
    assert up.count("POST") == 2 and up.count("GET") == 1


async def test_create_requires_a_business_id() -> None:
    with pytest.raises(ValueError, match="client_business_id"):
        await make(Upstream(post=[ok()]), FakeTime()).create_task({"model": "wan2.6"}, " ")


async def test_debug_log_lines_name_method_path_status_attempt(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="wan_mcp.gateway")
    await make(Upstream(get=[err(503), ok()]), FakeTime()).get_task("video_abc")
    lines = [r.getMessage() for r in caplog.records if r.name == "wan_mcp.gateway"]
    assert any("GET /v1/videos/generations/video_abc -> 503 attempt=1" in line for line in lines)
    assert any("-> 200 attempt=2" in line for line in lines)


async def test_gateway_client_is_a_video_provider() -> None:
    client = make(Upstream(get=[ok()]), FakeTime())
    assert isinstance(client, VideoProvider)
    provider: VideoProvider = client  # the static check is mypy's; this is the runtime one
    assert isinstance(await provider.get_task("video_abc"), GatewayTask)
