"""The real gateway client against the real simulator over loopback HTTP.

Nothing of ours is mocked: the client, httpx2 and its connection pool, and the simulator's
uvicorn server all run for real, so these tests catch what the MockTransport unit tests
cannot (framing, multipart, connection resets, real timeouts). The simulator is shared by
the module; every test starts from cleared faults, an empty request log and default
response shapes.
"""

from __future__ import annotations

import io
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import anyio
import httpx2
import pytest
from PIL import Image
from pydantic import SecretStr

from wan_mcp.config import Settings
from wan_mcp.errors import ErrorCode, WanError
from wan_mcp.gateway import (
    NO_RESULT_URL,
    GatewayClient,
    GatewayTask,
    RetryPolicy,
    TaskState,
    make_http_client,
)
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio

KEY = "sk-integration-e4b1c9d27a6f4403"
WRONG_KEY = "sk-wrong-0000000000000000"
T2V = {
    "model": "wan2.6",
    "prompt": "A cute cat running on grass, sunny day",
    "resolution": "720p",
    "duration": 5,
}
JOB_SECONDS = 0.3
# Short, so the whole file runs in seconds; still exercises backoff, budgets and reconciliation.
POLICY = RetryPolicy(
    attempts=4, total_seconds=4.0, base_delay=0.05, max_delay=0.2, reconcile_checks=3, reconcile_interval=0.2
)
DEFAULT_CONFIG: dict[str, Any] = {
    "status_style": "queued",
    "create_envelope": "task",
    "complete_without_url": False,
    "fail_prompts_containing": None,
    "job_seconds": JOB_SECONDS,
    "url_style": "result",
    "balance": 100.0,
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(job_seconds=JOB_SECONDS, api_keys={KEY}, seed=0) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(sim: SimulatorServer) -> Iterator[None]:
    sim.clear_faults()
    sim.clear_requests()
    sim.configure(**DEFAULT_CONFIG)
    yield
    sim.clear_faults()
    sim.configure(**DEFAULT_CONFIG)


def settings_for(sim: SimulatorServer, *, key: str = KEY, read_timeout: float = 5.0) -> Settings:
    return Settings(
        api_key=SecretStr(key),
        base_url=sim.base_url,
        connect_timeout=2.0,
        read_timeout=read_timeout,
        write_timeout=5.0,
        pool_timeout=2.0,
    )


@pytest.fixture
async def http(sim: SimulatorServer) -> AsyncIterator[httpx2.AsyncClient]:
    async with make_http_client(settings_for(sim)) as client:
        yield client


@pytest.fixture
def client(sim: SimulatorServer, http: httpx2.AsyncClient) -> GatewayClient:
    return GatewayClient(http, base_url=sim.base_url, api_key=SecretStr(KEY), retry=POLICY)


def business_id() -> str:
    return f"it-{uuid.uuid4().hex[:16]}"


async def wait_terminal(client: GatewayClient, task_id: str, timeout: float = 10.0) -> GatewayTask:
    with anyio.fail_after(timeout):
        while True:
            task = await client.get_task(task_id)
            if task.terminal:
                return task
            await anyio.sleep(0.05)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (400, 400), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def task_ids(sim: SimulatorServer) -> list[str]:
    return [str(t["id"]) for t in sim.tasks()]


# --- every endpoint, happy path ---------------------------------------------------------------


async def test_create_poll_download(sim: SimulatorServer, client: GatewayClient, http: httpx2.AsyncClient) -> None:
    bid = business_id()
    before = set(task_ids(sim))
    created = await client.create_task(T2V, bid)
    assert created.state is TaskState.QUEUED and created.raw_status == "queued"
    assert created.client_business_id == bid and created.model == "wan2.6"
    assert set(task_ids(sim)) == before | {created.id}

    done = await wait_terminal(client, created.id)
    assert done.state is TaskState.COMPLETED, done
    assert done.video_url and done.video_format == "mp4"
    assert done.completed_at and done.expires_at and done.expires_at - done.completed_at == 86400
    assert done.progress == 100

    by_business_id = await client.get_task(bid)
    assert by_business_id.id == created.id and by_business_id.state is TaskState.COMPLETED

    response = await http.get(done.video_url)  # the shared client, no key attached
    assert response.status_code == 200
    assert response.content[4:8] == b"ftyp"


async def test_progress_moves_through_in_progress(client: GatewayClient, sim: SimulatorServer) -> None:
    sim.configure(job_seconds=1.0)
    created = await client.create_task(T2V, business_id())
    seen: list[tuple[TaskState, int | None]] = []
    with anyio.fail_after(10):
        while not (task := await client.get_task(created.id)).terminal:
            seen.append((task.state, task.progress))
            await anyio.sleep(0.05)
    states = [state for state, _ in seen]
    assert TaskState.IN_PROGRESS in states
    progress = [p for _, p in seen if p is not None]
    assert progress == sorted(progress) and all(0 <= p <= 100 for p in progress)


async def test_upload_image_and_video(client: GatewayClient, http: httpx2.AsyncClient) -> None:
    image = await client.upload_image(png_bytes(), "cat.png", "image/png")
    assert image.url.startswith("http") and image.mime_type == "image/png"
    assert (await http.get(image.url)).status_code == 200

    created = await client.create_task(
        {"model": "wan2.6-flash", "image_urls": [image.url], "resolution": "720p", "duration": 5},
        business_id(),
    )
    done = await wait_terminal(client, created.id)
    assert done.video_url
    video_bytes = (await http.get(done.video_url)).content

    video = await client.upload_video(video_bytes, "ref.mp4", "video/mp4")
    assert video.url.startswith("http") and video.mime_type == "video/mp4"
    r2v = {"model": "wan2.6", "prompt": "character1 waves", "metadata": {"reference_urls": [video.url]}}
    assert (await client.create_task(r2v, business_id())).state is TaskState.QUEUED


async def test_upload_refused_file_is_invalid_file(client: GatewayClient, sim: SimulatorServer) -> None:
    with pytest.raises(WanError) as info:
        await client.upload_image(b"this is not an image", "notes.txt", "text/plain")
    assert info.value.code is ErrorCode.INVALID_FILE
    assert sim.count(endpoint="upload_image") == 1


async def test_balance(client: GatewayClient, sim: SimulatorServer) -> None:
    sim.engine.clear_tasks()  # the module's earlier tasks have spent some of it
    balance = await client.get_balance()
    assert balance.remain_balance == 100.0 and balance.used_balance == 0 and not balance.unlimited


# --- documented response shapes -----------------------------------------------------------------


@pytest.mark.parametrize("style", ["submitted", "pending"])
async def test_alternative_waiting_statuses(client: GatewayClient, sim: SimulatorServer, style: str) -> None:
    sim.configure(status_style=style, job_seconds=2.0)
    created = await client.create_task(T2V, business_id())
    assert created.state is TaskState.QUEUED
    polled = await client.get_task(created.id)
    assert polled.state is TaskState.QUEUED and polled.raw_status == style


async def test_old_create_envelope(client: GatewayClient, sim: SimulatorServer) -> None:
    sim.configure(create_envelope="old")
    bid = business_id()
    before = set(task_ids(sim))
    created = await client.create_task(T2V, bid)
    assert created.raw_status == "submitted" and created.state is TaskState.QUEUED
    assert created.client_business_id == bid
    assert set(task_ids(sim)) == before | {created.id}
    assert (await wait_terminal(client, created.id)).state is TaskState.COMPLETED


async def test_completed_without_url_is_failed(client: GatewayClient, sim: SimulatorServer) -> None:
    sim.configure(complete_without_url=True)
    done = await wait_terminal(client, (await client.create_task(T2V, business_id())).id)
    assert done.state is TaskState.FAILED and done.raw_status == "completed"
    assert done.error_code == NO_RESULT_URL and done.video_url is None
    err = done.as_error()
    assert err is not None and err.code is ErrorCode.GENERATION_FAILED and err.task_id == done.id


async def test_top_level_url_style(client: GatewayClient, sim: SimulatorServer) -> None:
    sim.configure(url_style="top_level")
    done = await wait_terminal(client, (await client.create_task(T2V, business_id())).id)
    assert done.state is TaskState.COMPLETED and done.video_url


async def test_content_policy_failure(client: GatewayClient, sim: SimulatorServer) -> None:
    sim.configure(fail_prompts_containing="forbidden")
    created = await client.create_task({**T2V, "prompt": "something forbidden"}, business_id())
    done = await wait_terminal(client, created.id)
    assert done.state is TaskState.FAILED and done.error_message
    err = done.as_error()
    assert err is not None and err.code is ErrorCode.CONTENT_POLICY


# --- definite refusals: never retried --------------------------------------------------------------


async def test_401_not_retried(sim: SimulatorServer, http: httpx2.AsyncClient) -> None:
    bad = GatewayClient(http, base_url=sim.base_url, api_key=SecretStr(WRONG_KEY), retry=POLICY)
    with pytest.raises(WanError) as info:
        await bad.create_task(T2V, business_id())
    assert info.value.code is ErrorCode.AUTH and "WAN_MCP_API_KEY" in (info.value.hint or "")
    with pytest.raises(WanError):
        await bad.get_task("whatever")
    with pytest.raises(WanError):
        await bad.get_balance()
    assert sim.count(endpoint="create") == 1
    assert sim.count(endpoint="status") == 1
    assert sim.count(endpoint="balance") == 1
    assert sim.tasks() == [] or WRONG_KEY not in str(sim.tasks())


async def test_402_not_retried(client: GatewayClient, sim: SimulatorServer) -> None:
    sim.configure(balance=0.0)
    before = len(sim.tasks())
    with pytest.raises(WanError) as info:
        await client.create_task(T2V, business_id())
    assert info.value.code is ErrorCode.PAYMENT and "balance" in (info.value.hint or "")
    assert sim.count(endpoint="create") == 1 and sim.count(endpoint="status") == 0
    assert len(sim.tasks()) == before


async def test_400_not_retried_and_names_the_field(client: GatewayClient, sim: SimulatorServer) -> None:
    before = len(sim.tasks())
    with pytest.raises(WanError) as info:
        await client.create_task({**T2V, "duration": 7}, business_id())
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert info.value.field == "duration"
    assert sim.count(endpoint="create") == 1 and sim.count(endpoint="status") == 0
    assert len(sim.tasks()) == before


async def test_404_not_retried(client: GatewayClient, sim: SimulatorServer) -> None:
    with pytest.raises(WanError) as info:
        await client.get_task("video_does_not_exist")
    assert info.value.code is ErrorCode.NOT_FOUND
    assert sim.count(endpoint="status") == 1


# --- faults on reads: recovered within bounds -------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "times"),
    [
        ("http_500", 2),
        ("http_502", 1),
        ("http_503", 3),
        ("reset", 2),
        ("malformed_json", 1),
        ("truncated_json", 2),
    ],
)
async def test_status_faults_recover(client: GatewayClient, sim: SimulatorServer, kind: str, times: int) -> None:
    created = await client.create_task(T2V, business_id())
    sim.clear_requests()
    sim.add_fault("status", kind, times=times)
    task = await client.get_task(created.id)
    assert task.id == created.id
    assert sim.count(endpoint="status") == times + 1


async def test_status_fault_beyond_attempts_is_raised(client: GatewayClient, sim: SimulatorServer) -> None:
    created = await client.create_task(T2V, business_id())
    sim.clear_requests()
    sim.add_fault("status", "http_503", times=-1)
    with pytest.raises(WanError) as info:
        await client.get_task(created.id)
    assert info.value.code is ErrorCode.UPSTREAM_UNAVAILABLE and "gave up after 4 attempts" in info.value.message
    assert sim.count(endpoint="status") == POLICY.attempts


async def test_429_retry_after_is_honoured(client: GatewayClient, sim: SimulatorServer) -> None:
    created = await client.create_task(T2V, business_id())
    sim.clear_requests()
    sim.add_fault("status", "http_429", times=1, retry_after=1)
    started = anyio.current_time()
    await client.get_task(created.id)
    assert anyio.current_time() - started >= 0.95
    assert sim.count(endpoint="status") == 2


async def test_429_retry_after_beyond_budget(client: GatewayClient, sim: SimulatorServer) -> None:
    sim.add_fault("balance", "http_429", times=1, retry_after=60)
    with anyio.fail_after(2):
        with pytest.raises(WanError) as info:
            await client.get_balance()
    assert info.value.code is ErrorCode.RATE_LIMITED and info.value.retry_after == 60
    assert sim.count(endpoint="balance") == 1


async def test_delay_fault_is_just_slow(client: GatewayClient, sim: SimulatorServer) -> None:
    sim.add_fault("balance", "delay", delay=0.3)
    started = anyio.current_time()
    await client.get_balance()
    assert anyio.current_time() - started >= 0.25
    assert sim.count(endpoint="balance") == 1


async def test_stall_with_short_read_timeout_recovers(sim: SimulatorServer) -> None:
    async with make_http_client(settings_for(sim, read_timeout=0.4)) as http:
        client = GatewayClient(http, base_url=sim.base_url, api_key=SecretStr(KEY), retry=POLICY)
        created = await client.create_task(T2V, business_id())
        sim.clear_requests()
        sim.add_fault("status", "stall", delay=2.0)
        with anyio.fail_after(3):
            task = await client.get_task(created.id)
    assert task.id == created.id
    assert sim.count(endpoint="status") == 2


@pytest.mark.parametrize("endpoint", ["upload_image", "balance"])
async def test_other_reads_recover(client: GatewayClient, sim: SimulatorServer, endpoint: str) -> None:
    sim.add_fault(endpoint, "http_502", times=1)
    sim.add_fault(endpoint, "reset", times=1)
    if endpoint == "balance":
        await client.get_balance()
    else:
        await client.upload_image(png_bytes(), "cat.png", "image/png")
    assert sim.count(endpoint=endpoint) == 3


async def test_upload_video_recovers(client: GatewayClient, sim: SimulatorServer, http: httpx2.AsyncClient) -> None:
    done = await wait_terminal(client, (await client.create_task(T2V, business_id())).id)
    assert done.video_url
    data = (await http.get(done.video_url)).content
    sim.add_fault("upload_video", "http_503", times=1)
    assert (await client.upload_video(data, "ref.mp4", "video/mp4")).url
    assert sim.count(endpoint="upload_video") == 2


# --- create: one upstream task, whatever fails ------------------------------------------------------


async def test_dropped_create_response_is_recovered_by_business_id(client: GatewayClient, sim: SimulatorServer) -> None:
    before = len(sim.tasks())
    bid = business_id()
    sim.add_fault("create", "drop_response")
    task = await client.create_task(T2V, bid)
    assert task.client_business_id == bid
    assert len(sim.tasks()) == before + 1 and task.id in task_ids(sim)
    assert sim.count(endpoint="create") == 1
    assert sim.count(endpoint="status") >= 1


async def test_create_429_is_retried_without_duplicates(client: GatewayClient, sim: SimulatorServer) -> None:
    before = len(sim.tasks())
    sim.add_fault("create", "http_429", times=1, retry_after=0)
    task = await client.create_task(T2V, business_id())
    assert sim.count(endpoint="create") == 2
    assert len(sim.tasks()) == before + 1 and task.id in task_ids(sim)


@pytest.mark.parametrize("kind", ["http_500", "http_502", "http_503", "reset", "malformed_json", "truncated_json"])
async def test_ambiguous_create_is_reconciled_never_reposted(
    client: GatewayClient, sim: SimulatorServer, kind: str
) -> None:
    before = set(task_ids(sim))
    bid = business_id()
    sim.add_fault("create", kind)
    try:
        task = await client.create_task(T2V, bid)
    except WanError as err:
        # The fault struck before the simulator created anything: the client must say so.
        assert err.code is ErrorCode.SUBMISSION_UNCONFIRMED
        assert bid in str(err) and "safe to submit again" in str(err)
        assert set(task_ids(sim)) == before
        assert sim.count(endpoint="status") == POLICY.reconcile_checks
    else:
        # The simulator created the task and then the answer was garbled: reconciled.
        assert task.client_business_id == bid
        assert set(task_ids(sim)) == before | {task.id}
    assert sim.count(endpoint="create") == 1


async def test_stalled_create_is_reconciled(sim: SimulatorServer) -> None:
    async with make_http_client(settings_for(sim, read_timeout=0.4)) as http:
        client = GatewayClient(http, base_url=sim.base_url, api_key=SecretStr(KEY), retry=POLICY)
        before = set(task_ids(sim))
        sim.add_fault("create", "stall", delay=1.0)
        bid = business_id()
        with anyio.fail_after(5):
            try:
                task = await client.create_task(T2V, bid)
            except WanError as err:
                assert err.code is ErrorCode.SUBMISSION_UNCONFIRMED and bid in str(err)
                assert set(task_ids(sim)) == before
            else:
                assert set(task_ids(sim)) == before | {task.id}
    assert sim.count(endpoint="create") == 1


async def test_every_create_carries_the_business_id(client: GatewayClient, sim: SimulatorServer) -> None:
    bid = business_id()
    task = await client.create_task(T2V, bid)
    held = [t for t in sim.tasks() if t["id"] == task.id]
    assert held and held[0].get("client_business_id") == bid


async def test_create_with_nothing_listening_is_retried_then_network(http: httpx2.AsyncClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on exit: connections are refused
    dead = GatewayClient(http, base_url=f"http://127.0.0.1:{port}", api_key=SecretStr(KEY), retry=POLICY)
    with pytest.raises(WanError) as info:
        await dead.create_task(T2V, business_id())
    assert info.value.code is ErrorCode.NETWORK
    assert "nothing was created" in str(info.value)


# --- the key stays secret ------------------------------------------------------------------------------


async def raised(call: Awaitable[object]) -> WanError:
    with pytest.raises(WanError) as info:
        await call
    return info.value


async def test_key_never_in_logs_or_errors(
    client: GatewayClient, sim: SimulatorServer, http: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, httpx2's, the simulator's, uvicorn's
    sim.add_fault("create", "drop_response")
    created = await client.create_task(T2V, business_id())
    for kind in ("http_500", "reset", "malformed_json"):
        sim.add_fault("status", kind)
    await client.get_task(created.id)

    errors = [await raised(client.get_task("missing"))]
    sim.add_fault("status", "http_503", times=-1)
    errors.append(await raised(client.get_task(created.id)))
    sim.clear_faults()
    sim.add_fault("create", "http_500")
    errors.append(await raised(client.create_task(T2V, business_id())))
    errors.append(await raised(client.create_task({**T2V, "duration": 7}, business_id())))
    wrong = GatewayClient(http, base_url=sim.base_url, api_key=SecretStr(WRONG_KEY), retry=POLICY)
    errors.append(await raised(wrong.get_balance()))

    for err in errors:
        for text in (str(err), repr(err), str(err.to_dict())):
            assert KEY not in text and WRONG_KEY not in text and "Bearer" not in text
    assert any(r.name == "wan_mcp.gateway" for r in caplog.records)
    for record in caplog.records:
        assert KEY not in record.getMessage() and WRONG_KEY not in record.getMessage(), record.name
    assert KEY not in caplog.text and WRONG_KEY not in caplog.text
