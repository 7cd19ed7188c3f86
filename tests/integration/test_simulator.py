"""The offline gateway simulator, over real loopback HTTP with httpx2: nothing is mocked.

Other suites trust the simulator to behave like the documented gateway, so this file pins
that behaviour down: every endpoint, every validation rule, the task lifecycle, every fault
kind as the client experiences it, and the MP4 files themselves (probed with PyAV).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import av
import httpx2
import pytest
from PIL import Image

from wan_mcp.simulator.engine import RequestLogEntry
from wan_mcp.simulator.harness import SimulatorServer, main

pytestmark = pytest.mark.anyio

KEY = "sk-sim-test-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
T2V: dict[str, Any] = {"model": "wan2.6", "prompt": "A cute cat running on grass", "resolution": "720p"}
NETWORK_DROP = (httpx2.ReadError, httpx2.RemoteProtocolError)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(job_seconds=0.3, seed=0) as server:
        yield server


@pytest.fixture
def sim(shared_sim: SimulatorServer) -> SimulatorServer:
    """One server for the module (a stop costs ~0.15 s), reset to a blank slate for each test."""
    shared_sim.reset()
    return shared_sim


@pytest.fixture
async def client(sim: SimulatorServer) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=20.0) as http:
        yield http


# --- helpers ------------------------------------------------------------------------------------------


def image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 140, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


def probe(data: bytes) -> dict[str, Any]:
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio
        return {
            "codec": video.codec_context.name,
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "duration": container.duration / 1_000_000,
            "audio": audio[0].codec_context.name if audio else None,
        }


async def create(client: httpx2.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/videos/generations", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def wait_terminal(client: httpx2.AsyncClient, ref: str, timeout: float = 10.0) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            response = await client.get(f"/v1/videos/generations/{ref}")
            assert response.status_code == 200, response.text
            task: dict[str, Any] = response.json()
            if task["status"] in ("completed", "failed"):
                return task
            await anyio.sleep(0.03)


async def generate(client: httpx2.AsyncClient, body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    task = await wait_terminal(client, (await create(client, body))["id"])
    assert task["status"] == "completed", task
    response = await client.get(task["result"]["data"][0]["url"])
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    return task, response.content


async def upload(client: httpx2.AsyncClient, kind: str, data: bytes, name: str = "f.bin") -> httpx2.Response:
    return await client.post(f"/v1/uploads/{kind}", files={"file": (name, data, "application/octet-stream")})


def assert_error(response: httpx2.Response, status: int, err_type: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == status and body["error"]["type"] == err_type, body
    message: str = body["error"]["message"]
    return message


# --- endpoints ----------------------------------------------------------------------------------------


async def test_create_returns_a_queued_generation_task(client: httpx2.AsyncClient) -> None:
    task = await create(client, {**T2V, "aspect_ratio": "9:16"})
    assert task["id"].startswith("video_") and len(task["id"]) > 10
    assert task["object"] == "generation.task" and task["model"] == "wan2.6"
    assert task["status"] == "queued" and task["progress"] == 0
    assert isinstance(task["created_at"], int) and task["metadata"] == {"aspect_ratio": "9:16"}
    assert "client_business_id" not in task


async def test_flash_create_echoes_empty_metadata(client: httpx2.AsyncClient) -> None:
    task = await create(client, {"model": "wan2.6-flash", "image_urls": ["https://example.com/a.jpg"]})
    assert task["model"] == "wan2.6-flash" and task["metadata"] == {}


@pytest.mark.parametrize("path", ["/v1/user/balance", "/user/balance", "/v1/balance"])
async def test_balance_endpoints(client: httpx2.AsyncClient, sim: SimulatorServer, path: str) -> None:
    sim.configure(balance=12.5)
    body = (await client.get(path)).json()
    assert body["success"] is True and body["remain_balance"] == 12.5 and body["credits_per_usd"] == 200
    assert body["remain_credits"] == 2500 and body["unlimited_quota"] is False and "used_balance" in body


@pytest.mark.parametrize(
    ("fmt", "mime", "ext"),
    [
        ("PNG", "image/png", ".png"),
        ("JPEG", "image/jpeg", ".jpg"),
        ("WEBP", "image/webp", ".webp"),
        ("GIF", "image/gif", ".gif"),
    ],
)
async def test_image_upload_is_sniffed_and_served(client: httpx2.AsyncClient, fmt: str, mime: str, ext: str) -> None:
    data = image_bytes(64, 48, fmt)
    response = await upload(client, "images", data, name="misleading.txt")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["message"] == ""
    assert body["data"]["id"].startswith("upload_") and body["data"]["mime_type"] == mime
    assert body["data"]["size"] == len(data) and body["data"]["url"].endswith(ext)
    served = await client.get(body["data"]["url"], headers={"Authorization": ""})  # file host is public
    assert served.status_code == 200 and served.content == data and served.headers["content-type"] == mime


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00", "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", "video/quicktime"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "video/webm"),
    ],
)
async def test_video_upload_is_sniffed(client: httpx2.AsyncClient, head: bytes, mime: str) -> None:
    response = await upload(client, "videos", head + b"\x00" * 256)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["mime_type"] == mime


async def test_health_and_unknown_route(client: httpx2.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"ok": True}
    assert_error(await client.get("/v1/nothing-here"), 404, "not_found_error")
    assert_error(await client.get("/files/uploads/upload_missing.png"), 404, "not_found_error")
    assert_error(await client.get("/files/videos/video_missing.mp4"), 404, "not_found_error")


# --- auth, balance, unknown ids ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed() -> Iterator[SimulatorServer]:
    with SimulatorServer(api_keys={KEY}, job_seconds=0.3) as server:
        yield server


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/videos/generations"),
        ("GET", "/v1/videos/generations/video_x"),
        ("POST", "/v1/uploads/images"),
        ("POST", "/v1/uploads/videos"),
        ("GET", "/v1/user/balance"),
        ("GET", "/user/balance"),
        ("GET", "/v1/balance"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer sk-wrong", KEY])
async def test_bad_credentials_get_401(keyed: SimulatorServer, method: str, path: str, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    async with httpx2.AsyncClient(base_url=keyed.base_url) as http:
        response = await http.request(method, path, headers=headers, json=T2V)
    message = assert_error(response, 401, "authentication_error")
    assert "API key" in message


async def test_configured_key_is_accepted(keyed: SimulatorServer) -> None:
    async with httpx2.AsyncClient(base_url=keyed.base_url, headers=AUTH) as http:
        assert (await http.post("/v1/videos/generations", json=T2V)).status_code == 200


async def test_zero_balance_gives_402_on_every_create(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    sim.configure(balance=0)
    for response in (
        await client.post("/v1/videos/generations", json=T2V),
        await client.post("/v1/videos/generations", content=b"not json", headers={"content-type": "text/plain"}),
    ):
        assert_error(response, 402, "payment_required")
    assert sim.tasks() == []


async def test_unknown_task_is_404(client: httpx2.AsyncClient) -> None:
    message = assert_error(await client.get("/v1/videos/generations/video_nope"), 404, "not_found_error")
    assert message == "Task not found"


# --- validation ------------------------------------------------------------------------------------------

IMG = "https://example.com/cat.jpg"
REF = "https://cdn.example.com/ref.mp4"
FLASH_I2V: dict[str, Any] = {"model": "wan2.6-flash", "image_urls": [IMG]}
BAD_BODIES: list[tuple[str, Any, str]] = [
    ("body-array", [T2V], "body"),
    ("body-string", "wan2.6", "body"),
    ("body-null", None, "body"),
    ("model-missing", {"prompt": "x"}, "model"),
    ("model-unknown", {**T2V, "model": "wan2.5"}, "model"),
    ("model-number", {**T2V, "model": 2.6}, "model"),
    ("prompt-missing-t2v", {"model": "wan2.6"}, "prompt"),
    ("prompt-blank-t2v", {**T2V, "prompt": "   "}, "prompt"),
    ("prompt-number", {**T2V, "prompt": 42}, "prompt"),
    ("duration-7", {**T2V, "duration": 7}, "duration"),
    ("duration-string", {**T2V, "duration": "5"}, "duration"),
    ("duration-float", {**T2V, "duration": 5.0}, "duration"),
    ("duration-bool", {**T2V, "duration": True}, "duration"),
    ("resolution-480p", {**T2V, "resolution": "480p"}, "resolution"),
    ("resolution-case", {**T2V, "resolution": "1080P"}, "resolution"),
    ("aspect-21:9", {**T2V, "aspect_ratio": "21:9"}, "aspect_ratio"),
    ("aspect-with-image", {**T2V, "image_urls": [IMG], "aspect_ratio": "16:9"}, "aspect_ratio"),
    ("two-images", {**T2V, "image_urls": [IMG, IMG]}, "image_urls"),
    ("images-not-list", {**T2V, "image_urls": IMG}, "image_urls"),
    ("image-data-uri", {**T2V, "image_urls": ["data:image/png;base64,iVBORw0KGgo="]}, "image_urls[0]"),
    ("image-ftp", {**T2V, "image_urls": ["ftp://example.com/a.png"]}, "image_urls[0]"),
    ("image-not-url", {**T2V, "image_urls": ["cat.jpg"]}, "image_urls[0]"),
    ("image-number", {**T2V, "image_urls": [7]}, "image_urls[0]"),
    ("image-and-reference", {**T2V, "image_urls": [IMG], "metadata": {"reference_urls": [REF]}}, "reference_urls"),
    ("metadata-not-object", {**T2V, "metadata": "x"}, "metadata"),
    ("references-not-list", {**T2V, "metadata": {"reference_urls": REF}}, "metadata.reference_urls"),
    ("references-too-many", {**T2V, "metadata": {"reference_urls": [REF] * 4}}, "metadata.reference_urls"),
    ("reference-base64", {**T2V, "metadata": {"reference_urls": ["data:video/mp4;base64,AAAA"]}}, "reference_urls[0]"),
    ("flash-prompt-only", {"model": "wan2.6-flash", "prompt": "a cat"}, "image_urls"),
    ("flash-aspect", {**FLASH_I2V, "aspect_ratio": "16:9"}, "aspect_ratio"),
    ("flash-negative", {**FLASH_I2V, "negative_prompt": "blur"}, "negative_prompt"),
    ("flash-seed", {**FLASH_I2V, "seed": 1}, "seed"),
    ("flash-prompt-extend", {**FLASH_I2V, "prompt_extend": False}, "prompt_extend"),
    ("flash-shot-type", {**FLASH_I2V, "shot_type": "single"}, "shot_type"),
    ("shot-type-unknown", {**T2V, "shot_type": "double"}, "shot_type"),
    ("prompt-extend-string", {**T2V, "prompt_extend": "true"}, "prompt_extend"),
    ("audio-int", {**FLASH_I2V, "audio": 0}, "audio"),
    ("watermark-string", {**T2V, "watermark": "no"}, "watermark"),
    ("seed-string", {**T2V, "seed": "42"}, "seed"),
    ("seed-float", {**T2V, "seed": 1.5}, "seed"),
    ("seed-negative", {**T2V, "seed": -1}, "seed"),
    ("negative-prompt-number", {**T2V, "negative_prompt": 3}, "negative_prompt"),
    ("business-id-number", {**T2V, "client_business_id": 42}, "client_business_id"),
    ("business-id-empty", {**T2V, "client_business_id": ""}, "client_business_id"),
    ("business-id-in-metadata", {**T2V, "metadata": {"client_business_id": 7}}, "metadata.client_business_id"),
]


@pytest.mark.parametrize(("body", "field"), [(b, f) for _, b, f in BAD_BODIES], ids=[i for i, _, _ in BAD_BODIES])
async def test_invalid_bodies_are_400_naming_the_field(
    client: httpx2.AsyncClient, sim: SimulatorServer, body: Any, field: str
) -> None:
    response = await client.post(
        "/v1/videos/generations", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    message = assert_error(response, 400, "invalid_request_error")
    assert field in message, message
    assert sim.tasks() == []


GOOD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    (
        "doc-t2v",
        {"model": "wan2.6", "prompt": "A cat", "aspect_ratio": "16:9", "resolution": "1080p", "duration": 5},
        "t2v",
    ),
    (
        "doc-i2v",
        {"model": "wan2.6", "prompt": "runs", "image_urls": [IMG], "resolution": "1080p", "duration": 10},
        "i2v",
    ),
    (
        "doc-r2v",
        {"model": "wan2.6", "prompt": "waves", "metadata": {"reference_urls": [REF]}, "shot_type": "single"},
        "r2v",
    ),
    (
        "doc-t2v-full",
        {
            "model": "wan2.6",
            "prompt": "dog",
            "negative_prompt": "blurry",
            "aspect_ratio": "16:9",
            "resolution": "1080p",
            "duration": 10,
            "seed": 12345,
            "prompt_extend": True,
            "shot_type": "multi",
            "watermark": False,
        },
        "t2v",
    ),
    ("flash-i2v", {**FLASH_I2V, "prompt": "smiles", "resolution": "1080p", "duration": 5, "audio": True}, "i2v"),
    ("flash-silent", {**FLASH_I2V, "resolution": "720p", "duration": 5, "audio": False}, "i2v"),
    ("flash-r2v", {"model": "wan2.6-flash", "metadata": {"reference_urls": [REF]}, "audio": True}, "r2v"),
    ("i2v-no-prompt", {"model": "wan2.6", "image_urls": [IMG]}, "i2v"),
    ("nulls-are-absent", {**T2V, "seed": None, "aspect_ratio": None, "image_urls": None, "metadata": None}, "t2v"),
    ("flash-null-seed", {**FLASH_I2V, "seed": None}, "i2v"),
    ("unknown-keys-ignored", {**T2V, "callback_url": "https://x.example/cb", "metadata": {"foo": 1}}, "t2v"),
    ("wan26-audio-false-ignored", {**T2V, "audio": False}, "t2v"),
    ("duration-15", {**T2V, "duration": 15}, "t2v"),
]


@pytest.mark.parametrize(("body", "mode"), [(b, m) for _, b, m in GOOD_BODIES], ids=[i for i, _, _ in GOOD_BODIES])
async def test_documented_bodies_are_accepted(
    client: httpx2.AsyncClient, sim: SimulatorServer, body: dict[str, Any], mode: str
) -> None:
    task = await create(client, body)
    (held,) = sim.tasks()
    assert held["id"] == task["id"] and held["mode"] == mode


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{garbage", "application/json"),
        (b"", "application/json"),
        (b"\xff\xfe\x00{}", "application/json"),
        (b'{"model": NaN}', "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (json.dumps(T2V).encode(), "text/plain"),
        (json.dumps(T2V).encode(), "application/x-www-form-urlencoded"),
    ],
    ids=["garbage", "empty", "bad-utf8", "nan", "deep-nesting", "text-plain", "form"],
)
async def test_bad_create_payloads_are_400(client: httpx2.AsyncClient, content: bytes, content_type: str) -> None:
    response = await client.post("/v1/videos/generations", content=content, headers={"content-type": content_type})
    assert_error(response, 400, "invalid_request_error")


async def test_huge_create_body_is_400_not_a_hang(client: httpx2.AsyncClient) -> None:
    body = json.dumps({**T2V, "padding": "x" * (2 * 1024 * 1024)}).encode()
    response = await client.post("/v1/videos/generations", content=body, headers={"content-type": "application/json"})
    assert "1 MB" in assert_error(response, 400, "invalid_request_error")
    assert (await client.get("/v1/balance")).status_code == 200  # the server is still fine


async def test_streamed_body_without_length_is_capped(client: httpx2.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    response = await client.post(
        "/v1/videos/generations", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_request_error")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"content": b"just bytes", "headers": {"content-type": "application/octet-stream"}}, "multipart/form-data"),
        (
            {"data": {"purpose": "generation"}, "files": {"other": ("a.png", b"\x89PNG\r\n\x1a\n", "image/png")}},
            "'file'",
        ),
        ({"content": b"--x\r\ngarbage", "headers": {"content-type": "multipart/form-data; boundary=x"}}, "file"),
        ({"files": {"file": ("a.png", b"GIF8 not really", "image/png")}}, "Unsupported image type"),
        ({"files": {"file": ("a.png", b"", "image/png")}}, "Unsupported image type"),
        (
            {"files": {"file": ("a.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (10 * 1024 * 1024), "image/png")}},
            "Image too large",
        ),
    ],
    ids=["not-multipart", "no-file-field", "garbage-multipart", "not-an-image", "empty", "too-large"],
)
async def test_bad_image_uploads_are_400_in_upload_envelope(
    client: httpx2.AsyncClient, kwargs: dict[str, Any], message: str
) -> None:
    response = await client.post("/v1/uploads/images", **kwargs)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False and message in body["message"], body


async def test_bad_video_uploads(client: httpx2.AsyncClient) -> None:
    response = await upload(client, "videos", image_bytes(8, 8))
    assert response.status_code == 400 and "Unsupported or invalid video" in response.json()["message"]
    too_big = b"\x00\x00\x00\x18ftypisom" + b"\x00" * (50 * 1024 * 1024)
    response = await upload(client, "videos", too_big)
    assert response.status_code == 400 and response.json()["message"] == "Video too large. Maximum size is 50MB"


# --- lifecycle ---------------------------------------------------------------------------------------------


async def test_lifecycle_queued_then_rising_progress_then_completed(
    client: httpx2.AsyncClient, sim: SimulatorServer
) -> None:
    sim.configure(job_seconds=1.0)
    task = await create(client, T2V)
    seen: list[tuple[str, int]] = [(task["status"], task["progress"])]
    with anyio.fail_after(5):
        while seen[-1][0] != "completed":
            await anyio.sleep(0.05)
            body = (await client.get(f"/v1/videos/generations/{task['id']}")).json()
            seen.append((body["status"], body["progress"]))
    statuses = [status for status, _ in seen]
    assert statuses[0] == "queued" and seen[0][1] == 0
    assert "in_progress" in statuses and statuses.index("in_progress") < statuses.index("completed")
    progress = [p for s, p in seen if s == "in_progress"]
    assert progress == sorted(progress) and len(set(progress)) > 2 and all(0 < p < 100 for p in progress)
    assert set(statuses) <= {"queued", "in_progress", "completed"}
    assert body["progress"] == 100 and body["expires_at"] - body["completed_at"] == 86400
    assert body["completed_at"] >= body["created_at"]
    assert body["result"] == {
        "type": "video",
        "data": [{"url": f"{sim.base_url}/files/videos/{task['id']}.mp4", "format": "mp4"}],
    }
    assert "error" not in body


async def test_content_policy_prompts_fail(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    sim.configure(fail_prompts_containing="forbidden")
    task = await wait_terminal(client, (await create(client, {**T2V, "prompt": "something FORBIDDEN here"}))["id"])
    assert task["status"] == "failed" and task["progress"] == 0
    assert task["error"]["code"] == "generation_failed" and "content policy" in task["error"]["message"]
    assert "result" not in task and "completed_at" not in task
    assert (await client.get(f"/files/videos/{task['id']}.mp4")).status_code == 404


async def test_business_id_lookup_dedupe_and_scope(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    first = await create(client, {**T2V, "client_business_id": "order_1"})
    assert first["client_business_id"] == "order_1"
    again = await create(client, {**T2V, "prompt": "different", "client_business_id": "order_1"})
    assert again["id"] == first["id"] and len(sim.tasks()) == 1
    by_bid = (await client.get("/v1/videos/generations/order_1")).json()
    assert by_bid["id"] == first["id"] and by_bid["client_business_id"] == "order_1"
    legacy = await create(client, {**T2V, "metadata": {"client_business_id": "order_2"}})
    assert (await client.get("/v1/videos/generations/order_2")).json()["id"] == legacy["id"]
    other = {"Authorization": "Bearer sk-another-user"}
    assert_error(await client.get("/v1/videos/generations/order_1", headers=other), 404, "not_found_error")
    assert (await client.get(f"/v1/videos/generations/{first['id']}", headers=other)).status_code == 200
    elsewhere = await client.post(
        "/v1/videos/generations", json={**T2V, "client_business_id": "order_1"}, headers=other
    )
    assert elsewhere.json()["id"] != first["id"]


@pytest.mark.parametrize("style", ["submitted", "pending"])
async def test_status_style(client: httpx2.AsyncClient, sim: SimulatorServer, style: str) -> None:
    sim.configure(status_style=style, job_seconds=5)
    task = await create(client, T2V)
    assert task["status"] == style
    assert (await client.get(f"/v1/videos/generations/{task['id']}")).json()["status"] == style


async def test_old_create_envelope(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    sim.configure(create_envelope="old")
    body = (await client.post("/v1/videos/generations", json=T2V)).json()
    assert body["code"] == 200 and body["data"][0]["status"] == "submitted"
    assert (await wait_terminal(client, body["data"][0]["task_id"]))["status"] == "completed"


async def test_complete_without_url(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    sim.configure(complete_without_url=True)
    task = await wait_terminal(client, (await create(client, T2V))["id"])
    assert task["status"] == "completed" and task["result"]["data"] == [] and "url" not in task


async def test_top_level_url_style(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    sim.configure(url_style="top_level")
    task = await wait_terminal(client, (await create(client, T2V))["id"])
    assert "result" not in task and task["url"].endswith(f"/files/videos/{task['id']}.mp4")


async def test_expired_url_is_410(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    task = await wait_terminal(client, (await create(client, {**T2V, "duration": 5}))["id"])
    sim.configure(url_ttl_seconds=0)
    response = await client.get(task["result"]["data"][0]["url"])
    assert_error(response, 410, "expired_error")
    assert (await client.get(f"/v1/videos/generations/{task['id']}")).json()["expires_at"] == task["completed_at"]


async def test_unfinished_video_file_is_404(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    sim.configure(job_seconds=30)
    task = await create(client, T2V)
    assert_error(await client.get(f"/files/videos/{task['id']}.mp4"), 404, "not_found_error")


# --- faults ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "err_type"),
    [
        ("http_429", 429, "rate_limit_error"),
        ("http_500", 500, "server_error"),
        ("http_502", 502, "bad_gateway"),
        ("http_503", 503, "service_unavailable"),
    ],
)
async def test_http_faults_fire_in_order_then_clear(
    client: httpx2.AsyncClient, sim: SimulatorServer, kind: str, status: int, err_type: str
) -> None:
    sim.add_fault("create", kind, times=2, retry_after=3 if kind == "http_429" else None)
    for _ in range(2):
        response = await client.post("/v1/videos/generations", json=T2V)
        assert_error(response, status, err_type)
        assert ("retry-after" in response.headers) == (kind == "http_429")
        if kind == "http_429":
            assert response.headers["retry-after"] == "3"
    assert sim.tasks() == []  # an error answer means nothing was created
    assert (await client.post("/v1/videos/generations", json=T2V)).status_code == 200
    assert [e.status for e in sim.requests("create")] == [status, status, 200]
    assert [e.fault for e in sim.requests("create")] == [kind, kind, None]


async def test_429_default_retry_after_and_until_cleared(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    sim.add_fault("balance", "http_429", times=-1)
    for _ in range(3):
        response = await client.get("/v1/balance")
        assert response.status_code == 429 and response.headers["retry-after"] == "1"
    sim.clear_faults()
    assert (await client.get("/v1/balance")).status_code == 200


async def test_faults_are_fifo_per_endpoint(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    sim.add_fault("balance", "http_503")
    sim.add_fault("balance", "http_502", times=2)
    sim.add_fault("status", "http_500")
    codes = [(await client.get("/v1/balance")).status_code for _ in range(4)]
    assert codes == [503, 502, 502, 200]
    assert (await client.get("/v1/videos/generations/x")).status_code == 500


async def test_reset_closes_the_connection_without_a_response(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    task = await create(client, T2V)
    sim.add_fault("status", "reset")
    with pytest.raises(NETWORK_DROP):
        await client.get(f"/v1/videos/generations/{task['id']}")
    assert (await client.get(f"/v1/videos/generations/{task['id']}")).status_code == 200  # next one is fine
    statuses = [e.status for e in sim.requests("status")]
    assert statuses == [0, 200]


async def test_reset_on_create_creates_nothing(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    sim.add_fault("create", "reset")
    with pytest.raises(NETWORK_DROP):
        await client.post("/v1/videos/generations", json={**T2V, "client_business_id": "r1"})
    assert sim.tasks() == []
    assert_error(await client.get("/v1/videos/generations/r1"), 404, "not_found_error")


async def test_drop_response_creates_the_task_then_resets(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    sim.add_fault("create", "drop_response")
    with pytest.raises(NETWORK_DROP):
        await client.post("/v1/videos/generations", json={**T2V, "client_business_id": "lost-1"})
    (held,) = sim.tasks()
    found = (await client.get("/v1/videos/generations/lost-1")).json()
    assert found["id"] == held["id"]
    assert sim.requests("create") == [RequestLogEntry("POST", "/v1/videos/generations", 0, "create", "drop_response")]


async def test_stall_outlasts_a_client_read_timeout(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    sim.add_fault("balance", "stall", delay=5)
    with pytest.raises(httpx2.ReadTimeout):
        await client.get("/v1/balance", timeout=0.3)
    assert sim.count("balance") == 1  # logged while still in flight


async def test_stall_ends_in_a_reset(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    sim.add_fault("status", "stall", delay=0.3)
    with pytest.raises(NETWORK_DROP):
        await client.get("/v1/videos/generations/whatever")
    assert [r.status for r in sim.requests("status")] == [0]  # held, then cut: no answer was ever sent


async def test_delay_answers_normally_but_late(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    sim.add_fault("create", "delay", delay=0.4)
    responses: list[httpx2.Response] = []

    async def post() -> None:
        responses.append(await client.post("/v1/videos/generations", json=T2V))

    async with anyio.create_task_group() as tg:
        tg.start_soon(post)
        while sim.count("create") == 0:
            await anyio.sleep(0.01)
        assert [r.status for r in sim.requests("create")] == [0] and responses == []  # held back...
    assert responses[0].status_code == 200 and len(sim.tasks()) == 1  # ...then answered normally
    assert [r.status for r in sim.requests("create")] == [200]


@pytest.mark.parametrize("kind", ["malformed_json", "truncated_json"])
async def test_garbled_bodies_are_200_and_not_json(client: httpx2.AsyncClient, sim: SimulatorServer, kind: str) -> None:
    sim.add_fault("create", kind)
    sim.add_fault("status", kind)
    created = await client.post("/v1/videos/generations", json={**T2V, "client_business_id": "garbled"})
    status = await client.get("/v1/videos/generations/garbled")
    for response in (created, status):
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.content)
    if kind == "truncated_json":
        assert status.content.startswith(b'{"id":"video_')
    assert len(sim.tasks()) == 1  # the create did happen; only its answer was spoiled


async def test_upload_and_file_faults(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    data = image_bytes(32, 32)
    sim.add_fault("upload_image", "http_503")
    sim.add_fault("upload_image", "reset")
    assert_error(await upload(client, "images", data), 503, "service_unavailable")
    with pytest.raises(NETWORK_DROP):
        await upload(client, "images", data)
    url = (await upload(client, "images", data)).json()["data"]["url"]
    sim.add_fault("file", "truncated_json")
    assert (await client.get(url)).content == data[: len(data) // 2]
    sim.add_fault("upload_video", "http_429", retry_after=0.25)
    response = await upload(client, "videos", b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64)
    assert response.status_code == 429 and response.headers["retry-after"] == "0.25"
    assert [sim.count(e) for e in ("upload_image", "file", "upload_video")] == [3, 1, 1]


async def test_bad_fault_specs_are_rejected(sim: SimulatorServer) -> None:
    for args, kwargs in [
        (("nowhere", "reset"), {}),
        (("status", "explode"), {}),
        (("status", "drop_response"), {}),
        (("status", "reset"), {"times": 0}),
        (("status", "delay"), {}),
        (("status", "http_429"), {"retry_after": -1}),
    ]:
        with pytest.raises(ValueError):
            sim.add_fault(*args, **kwargs)


async def test_probabilistic_faults_replay_with_the_seed() -> None:
    async def pattern(seed: int) -> list[int]:
        with SimulatorServer(seed=seed) as server:
            server.add_fault("balance", "http_500", times=-1, probability=0.5)
            async with httpx2.AsyncClient(base_url=server.base_url, headers=AUTH) as http:
                return [(await http.get("/v1/balance")).status_code for _ in range(16)]

    first, second, other = await pattern(7), await pattern(7), await pattern(8)
    assert first == second and first != other and {200, 500} == set(first)


async def test_request_log_counts(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    task = await create(client, T2V)
    await client.get(f"/v1/videos/generations/{task['id']}")
    await client.get("/user/balance")
    await client.get("/healthz")  # control paths are not logged
    await client.get("/_sim/requests")
    assert [sim.count(e) for e in ("create", "status", "balance")] == [1, 1, 1] and sim.count() == 3
    assert sim.requests()[0] == RequestLogEntry("POST", "/v1/videos/generations", 200, "create")
    sim.clear_requests()
    assert sim.requests() == []


# --- HTTP control plane -------------------------------------------------------------------------------------


async def test_http_control_endpoints(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    fault = {"endpoint": "balance", "kind": "http_429", "times": 1, "retry_after": 2, "delay": None}
    assert (await client.post("/_sim/faults", json=fault)).status_code == 200
    assert len((await client.get("/_sim/faults")).json()) == 1
    assert (await client.get("/v1/balance")).headers["retry-after"] == "2"
    await client.post("/_sim/faults", json={"endpoint": "balance", "kind": "http_500", "times": -1})
    assert (await client.delete("/_sim/faults")).status_code == 200
    assert (await client.get("/v1/balance")).status_code == 200

    log = (await client.get("/_sim/requests")).json()
    assert [(e["method"], e["path"], e["status"], e["endpoint"]) for e in log] == [
        ("GET", "/v1/balance", 429, "balance"),
        ("GET", "/v1/balance", 200, "balance"),
    ]
    await client.delete("/_sim/requests")
    assert (await client.get("/_sim/requests")).json() == []

    config = (await client.post("/_sim/config", json={"status_style": "submitted", "job_seconds": 2})).json()
    assert config["status_style"] == "submitted" and config["job_seconds"] == 2.0
    task = await create(client, T2V)
    assert task["status"] == "submitted"
    tasks = (await client.get("/_sim/tasks")).json()
    assert [t["id"] for t in tasks] == [task["id"]] and tasks[0]["request"] == T2V
    assert KEY not in json.dumps(tasks)
    assert (await client.get(f"/v1/videos/generations/{task['id']}")).json()["status"] != "completed"
    assert (await client.post("/_sim/tasks/finish")).json() == {"finished": 1}
    assert (await client.get(f"/v1/videos/generations/{task['id']}")).json()["status"] == "completed"
    assert (await client.post("/_sim/tasks/finish")).json() == {"finished": 0}

    for path, body in [
        ("/_sim/faults", {"endpoint": "nowhere", "kind": "reset"}),
        ("/_sim/faults", {"endpoint": "status", "kind": "reset", "bogus": 1}),
        ("/_sim/config", {"no_such_knob": True}),
        ("/_sim/config", {"status_style": "sleeping"}),
        ("/_sim/config", {"complete_without_url": "yes"}),
    ]:
        assert_error(await client.post(path, json=body), 400, "invalid_request_error")
    assert_error(await client.post("/_sim/config", content=b"[1]"), 400, "invalid_request_error")
    assert (await client.post("/_sim/reset")).json() == {"ok": True}
    assert (await client.get("/_sim/tasks")).json() == [] and sim.engine.config.status_style == "queued"


# --- the MP4 files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "size"),
    [
        ("16:9", "720p", (1280, 720)),
        ("9:16", "720p", (720, 1280)),
        ("1:1", "720p", (960, 960)),
        ("4:3", "720p", (1088, 832)),
        ("3:4", "720p", (832, 1088)),
        ("1:1", "1080p", (1440, 1440)),
    ],
)
async def test_video_size_follows_the_table(
    client: httpx2.AsyncClient, aspect_ratio: str, resolution: str, size: tuple[int, int]
) -> None:
    _, data = await generate(client, {**T2V, "aspect_ratio": aspect_ratio, "resolution": resolution})
    info = probe(data)
    assert info["codec"] == "h264" and (info["width"], info["height"]) == size
    assert abs(info["duration"] - 5) < 0.5 and info["audio"] == "aac"


async def test_default_1080p_15s_render(client: httpx2.AsyncClient) -> None:
    _, data = await generate(client, {"model": "wan2.6", "prompt": "A long sunset over the sea", "duration": 15})
    info = probe(data)
    assert (info["width"], info["height"]) == (1920, 1080) and abs(info["duration"] - 15) < 0.5
    assert info["audio"] == "aac"  # render time is a benchmark figure (bench/), not a test


@pytest.mark.parametrize(("audio", "expected"), [(False, None), (True, "aac"), (None, "aac")])
async def test_flash_audio_switch(client: httpx2.AsyncClient, audio: bool | None, expected: str | None) -> None:
    body: dict[str, Any] = {**FLASH_I2V, "resolution": "720p"}
    if audio is not None:
        body["audio"] = audio
    _, data = await generate(client, body)
    info = probe(data)
    assert info["audio"] == expected and info["codec"] == "h264"


@pytest.mark.parametrize(
    ("image_size", "video_size"),
    [((600, 1000), (720, 1280)), ((1000, 980), (960, 960)), ((1200, 880), (1088, 832)), ((1600, 900), (1280, 720))],
)
async def test_i2v_orientation_follows_the_uploaded_image(
    client: httpx2.AsyncClient, sim: SimulatorServer, image_size: tuple[int, int], video_size: tuple[int, int]
) -> None:
    url = (await upload(client, "images", image_bytes(*image_size, fmt="JPEG"))).json()["data"]["url"]
    _, data = await generate(
        client, {"model": "wan2.6-flash", "image_urls": [url], "resolution": "720p", "audio": False}
    )
    info = probe(data)
    assert (info["width"], info["height"]) == video_size
    assert sim.tasks()[0]["width"] == video_size[0]


async def test_i2v_foreign_url_renders_a_placeholder(client: httpx2.AsyncClient) -> None:
    _, data = await generate(client, {"model": "wan2.6", "image_urls": [IMG], "resolution": "720p"})
    assert (probe(data)["width"], probe(data)["height"]) == (1280, 720)


async def test_r2v_draws_from_an_uploaded_reference(client: httpx2.AsyncClient) -> None:
    _, reference = await generate(client, {**T2V, "aspect_ratio": "1:1"})
    url = (await upload(client, "videos", reference, "ref.mp4")).json()["data"]["url"]
    body = {"model": "wan2.6", "metadata": {"reference_urls": [url]}, "aspect_ratio": "9:16", "resolution": "720p"}
    _, data = await generate(client, body)
    info = probe(data)
    assert (info["width"], info["height"]) == (720, 1280) and info["audio"] == "aac"


async def test_same_prompt_and_seed_give_identical_bytes(client: httpx2.AsyncClient) -> None:
    body = {**T2V, "seed": 4242, "shot_type": "multi"}
    (_, first), (_, second) = await generate(client, body), await generate(client, body)
    (_, other) = await generate(client, {**body, "seed": 4243})
    assert first == second and first != other


async def test_concurrent_downloads_render_once(client: httpx2.AsyncClient, sim: SimulatorServer) -> None:
    task = await wait_terminal(client, (await create(client, T2V))["id"])
    url = task["result"]["data"][0]["url"]
    results: list[bytes] = []

    async def fetch() -> None:
        results.append((await client.get(url)).content)

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(fetch)
    assert len(set(results)) == 1 and probe(results[0])["codec"] == "h264"
    assert (await client.get("/v1/balance")).status_code == 200


# --- harness -------------------------------------------------------------------------------------------------


def _sim_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "wan-mcp-simulator" or "AnyIO" in t.name]


def test_stop_is_fast_with_a_stalled_request_in_flight() -> None:
    before = set(_sim_threads())
    errors: list[BaseException] = []
    with SimulatorServer() as server:
        assert server.port > 0 and server.base_url == f"http://127.0.0.1:{server.port}"
        server.add_fault("status", "stall")  # 30 s by default

        def call() -> None:
            try:
                httpx2.get(f"{server.base_url}/v1/videos/generations/x", headers=AUTH, timeout=60)
            except BaseException as exc:
                errors.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 5
        while server.count("status") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    caller.join(30)
    assert not caller.is_alive() and isinstance(errors[0], NETWORK_DROP)
    assert set(_sim_threads()) <= before  # nothing of this server outlives stop()


async def test_async_variant_runs_on_the_callers_loop() -> None:
    async with (
        SimulatorServer(job_seconds=0.1).running() as server,
        httpx2.AsyncClient(base_url=server.base_url, headers=AUTH) as http,
    ):
        task = await create(http, T2V)
        assert (await wait_terminal(http, task["id"]))["status"] == "completed"
    with pytest.raises(httpx2.ConnectError):
        async with httpx2.AsyncClient() as http:
            await http.get(f"{server.base_url}/healthz")


def test_non_loopback_hosts_are_refused() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SimulatorServer(host="0.0.0.0")
    assert main(["--host", "0.0.0.0", "--port", "0"]) == 2


def test_cli_serves_and_exits_zero_on_ctrl_c() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "wan_mcp.simulator.harness",
        "--port",
        "0",
        "--job-seconds",
        "0.2",
        "--api-key",
        KEY,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stderr is not None
        base_url = ""
        deadline = time.monotonic() + 20
        while not base_url and time.monotonic() < deadline:
            line = process.stderr.readline()
            if "running on http://" in line:
                base_url = line.split("running on ")[1].split()[0]
        assert base_url, "the CLI never reported its address"
        assert httpx2.get(f"{base_url}/v1/balance", headers=AUTH).status_code == 200
        assert httpx2.get(f"{base_url}/v1/balance", headers={"Authorization": "Bearer nope"}).status_code == 401
        process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0 and stdout == ""


async def test_render_on_create_has_the_file_ready_before_the_job_ends(
    client: httpx2.AsyncClient, sim: SimulatorServer
) -> None:
    sim.configure(render_on_create=True, job_seconds=600)
    task = await create(client, T2V)
    held = sim.engine.find_task(task["id"], sim.engine.authenticate(AUTH["Authorization"]))
    with anyio.fail_after(60):  # a hang guard: the outcome is "rendered while still running"
        while held.video is None:
            await anyio.sleep(0.05)
    assert sim.engine.phase(held)[0] in ("queued", "in_progress") and held.video.startswith(b"\x00\x00\x00")
    with pytest.raises(ValueError, match="render_on_create must be a boolean"):
        sim.configure(render_on_create="yes")


async def test_render_by_shape_gives_tasks_of_one_shape_one_rendering(sim: SimulatorServer) -> None:
    engine = sim.engine
    owner = engine.authenticate(AUTH["Authorization"])
    engine.configure(job_seconds=0)
    tasks = []
    for prompt in ("a red fox", "a blue whale", "a blue whale"):
        async with httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH) as client:
            made = await create(client, {**T2V, "prompt": prompt})
        tasks.append(engine.find_task(made["id"], owner))
    apart = [engine.render_video(t) for t in tasks[:2]]
    assert apart[0] != apart[1]  # by default every prompt has its own video
    engine.configure(render_by_shape=True)
    tasks[2].video = None
    fresh = engine.render_video(tasks[2])
    again = [engine.render_video(t) for t in tasks]  # the first two keep what they rendered
    assert again[:2] == apart
    assert fresh.startswith(b"\x00\x00\x00")
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH) as client:
        other = engine.find_task((await create(client, {**T2V, "prompt": "a green frog"}))["id"], owner)
    assert engine.render_video(other) is fresh  # one rendering for the shape, not a new one per prompt
    with pytest.raises(ValueError, match="render_by_shape must be a boolean"):
        sim.configure(render_by_shape="yes")
