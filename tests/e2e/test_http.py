"""End to end over real HTTP: `wan-mcp serve --transport http|sse` on a free loopback port.

The official client runs the whole flow over streamable HTTP (stateless, progress
streamed) and SSE; the server is locked down: bearer tokens (401), Host/Origin
allowlists (421/403) also on a wildcard bind, a body cap (413), a /healthz that says
nothing, refusal to listen beyond loopback without a token, and a graceful stop on
SIGTERM/SIGINT during a wait. Upstream is the simulator; every request goes to 127.0.0.1.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from PIL import Image

from tests.e2e.conftest import (
    TOKENS,
    HttpServer,
    connect,
    free_port,
    http_env,
    start_http_server,
)
from tests.helpers import ok as _data
from tests.helpers import text as _text
from wan_mcp.core.media import probe_video
from wan_mcp.server.principals import token_principal
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _post(server: HttpServer, *, token: str | None = TOKENS[0], **kw: Any) -> httpx2.Response:
    headers = {**MCP_HEADERS, **kw.pop("headers", {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}" if token else "Bearer"
    kw.setdefault("json", INIT)
    return httpx2.post(server.base + "/mcp", headers=headers, timeout=30, **kw)


# --- the whole flow on each HTTP transport ------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_generate_status_download_over_http_transports(
    transport: str, http_server: HttpServer, sse_server: HttpServer, leak_fresh: SimulatorServer
) -> None:
    server = http_server if transport == "http" else sse_server
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    async with connect(server) as client:
        task = _data(
            await client.call_tool("generate_video", {"prompt": f"a kite over {transport}", "resolution": "720p"})
        )
        assert task["status"] in ("queued", "in_progress") and task["mode"] == "t2v"
        done = _data(
            await client.call_tool(
                "get_task_status", {"task_id": task["task_id"], "wait_seconds": 30}, progress_callback=on_progress
            )
        )
        listed = _data(await client.call_tool("list_tasks", {}))
    assert done["status"] == "completed", done
    path = Path(done["local_path"])
    # Each remote principal's files live in a folder of its own (the token's principal name).
    assert path.is_file() and path.parent == server.data.parent / "videos" / "tenants" / token_principal(TOKENS[0])
    info = probe_video(path)
    assert info is not None and (info.width, info.height) == (1280, 720)
    assert task["task_id"] in [t["task_id"] for t in listed["tasks"]]
    await anyio.sleep(0.2)  # notifications race the result
    assert seen, "no progress notification arrived"
    values = [p for p, _ in seen]
    assert values == sorted(values) and all(task["task_id"] in (m or "") for _, m in seen)


async def test_streamable_http_is_stateless(http_server: HttpServer) -> None:
    """No session id is handed out: any replica behind a balancer can serve any request."""
    response = _post(http_server)
    assert response.status_code == 200, response.text
    assert "mcp-session-id" not in response.headers


async def test_a_10_mib_image_as_base64_fits_through_upload_image(
    http_server: HttpServer, leak_fresh: SimulatorServer
) -> None:
    side = 1860  # random RGB noise: the PNG is barely smaller than the raw pixels
    png = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(png, format="PNG", compress_level=0)
    raw = png.getvalue()
    assert 9.5 * 1024**2 < len(raw) <= 10 * 1024**2
    data = "data:image/png;base64," + base64.b64encode(raw).decode()
    assert len(data) > 13 * 1024**2
    async with connect(http_server) as client:
        uploaded = _data(await client.call_tool("upload_image", {"data": data}))
    assert uploaded["url"].startswith("http://127.0.0.1") and (uploaded["width"], uploaded["height"]) == (side, side)


# --- bearer tokens ------------------------------------------------------------------------


async def test_requests_without_or_with_a_wrong_token_get_401(http_server: HttpServer, sse_server: HttpServer) -> None:
    for token in (None, "", "not-the-token", TOKENS[0] + "x", TOKENS[0][:-1]):
        response = _post(http_server, token=token)
        assert response.status_code == 401, (token, response.status_code)
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert _post(http_server, headers={"Authorization": TOKENS[0]}, token=None).status_code == 401  # no scheme
    for token in (None, "not-the-token"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        assert httpx2.get(sse_server.url, headers=headers, timeout=10).status_code == 401
        assert httpx2.post(sse_server.base + "/messages/?session_id=x", headers=headers, json={}).status_code == 401


async def test_every_configured_token_works_with_the_official_client(http_server: HttpServer) -> None:
    for token in TOKENS:
        async with connect(http_server, token) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
        assert "generate_video" in tools


async def test_the_official_client_with_a_wrong_token_fails(http_server: HttpServer) -> None:
    with pytest.raises(BaseException) as caught:
        async with connect(http_server, "wrong-token-0123456789") as client:
            await client.list_tools()
    assert "401" in repr(caught.value) or "error response" in repr(caught.value).lower()


@pytest.mark.parametrize(("transport", "host"), [("http", "0.0.0.0"), ("sse", "::")])
def test_refuses_to_listen_beyond_loopback_without_a_token(
    transport: str, host: str, leak_sim: SimulatorServer, tmp_path: Path
) -> None:
    env = http_env(leak_sim, tmp_path)
    del env["WAN_MCP_HTTP_TOKEN"]
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "wan_mcp", "serve", "--transport", transport, "--host", host, "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode != 0  # it exits by itself (the 20 s timeout is a hang guard)
    message = done.stderr
    assert "refusing to listen" in message and host in message
    assert "WAN_MCP_HTTP_TOKEN" in message and "Authorization: Bearer" in message and "127.0.0.1" in message


# --- DNS rebinding: Host and Origin allowlists ---------------------------------------------


def _rebinding_checks(server: HttpServer) -> None:
    port = server.port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", "0.0.0.0"):
        response = _post(server, headers={"Host": host})
        assert response.status_code == 421, (host, response.status_code)
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null", "http://127.0.0.1:1"):
        response = _post(server, headers={"Origin": origin})
        assert response.status_code == 403, (origin, response.status_code)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        response = _post(server, headers={"Host": host, "Origin": f"http://{host}"})
        assert response.status_code == 200, (host, response.text)


async def test_foreign_host_and_origin_are_refused_on_loopback(http_server: HttpServer, sse_server: HttpServer) -> None:
    _rebinding_checks(http_server)
    auth = {"Authorization": f"Bearer {TOKENS[0]}"}
    assert httpx2.get(sse_server.url, headers={**auth, "Host": "evil.example"}, timeout=10).status_code == 421
    assert httpx2.get(sse_server.url, headers={**auth, "Origin": "http://evil.example"}, timeout=10).status_code == 403


async def test_wildcard_bind_with_a_token_keeps_rebinding_protection_on(
    leak_sim: SimulatorServer, e2e_logs: Path, tmp_path: Path
) -> None:
    """The SDK turns the check off for 0.0.0.0; ours stays on. Requests still only go to 127.0.0.1."""
    env = http_env(
        leak_sim, tmp_path, WAN_MCP_ALLOWED_HOSTS="wan.example.test", WAN_MCP_ALLOWED_ORIGINS="https://app.example.test"
    )
    server = start_http_server(env, "http", e2e_logs, host="0.0.0.0")
    try:
        _rebinding_checks(server)
        assert _post(server, token=None).status_code == 401
        for host in ("wan.example.test", f"wan.example.test:{server.port}"):  # listed: allowed, any port
            assert _post(server, headers={"Host": host}).status_code == 200, host
        assert _post(server, headers={"Origin": "https://app.example.test"}).status_code == 200
        assert _post(server, headers={"Host": "wan.example.test.evil"}).status_code == 421
    finally:
        assert server.stop() == 0


# --- body cap, health ------------------------------------------------------------------------


async def test_bodies_over_the_cap_get_413(http_server: HttpServer, sse_server: HttpServer) -> None:
    cap = 16 * 1024**2
    big = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","pad":"' + b"x" * cap + b'"}'
    assert _post(http_server, content=big, json=None).status_code == 413
    # no Content-Length (chunked): counted while streaming
    assert _post(http_server, content=iter([big[: cap // 2], big[cap // 2 :]]), json=None).status_code == 413
    auth = {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/json"}
    response = httpx2.post(sse_server.base + "/messages/?session_id=" + "0" * 32, headers=auth, content=big)
    assert response.status_code == 413


async def test_healthz_is_open_and_says_nothing(http_server: HttpServer, sse_server: HttpServer) -> None:
    for server in (http_server, sse_server):
        response = httpx2.get(server.base + "/healthz", timeout=5)  # no token
        assert response.status_code == 200
        assert response.json() == {"ok": True}
        assert "server" not in response.headers
        blob = (response.text + str(response.headers)).lower()
        for telltale in ("wan", "mcp", "uvicorn", "python", "version", "/", "0.1"):
            assert telltale not in blob.replace("application/json", ""), telltale


async def test_readyz_says_whether_the_journal_answers_and_nothing_else(http_server: HttpServer) -> None:
    response = httpx2.get(http_server.base + "/readyz", timeout=5)  # no token
    assert response.status_code == 200 and response.json() == {"ok": True}


# --- graceful stop --------------------------------------------------------------------------


@pytest.mark.parametrize(("transport", "sig"), [("http", signal.SIGTERM), ("sse", signal.SIGINT)])
async def test_stop_signal_during_a_wait_answers_still_running_then_restart_completes(
    transport: str, sig: int, leak_fresh: SimulatorServer, e2e_logs: Path, tmp_path: Path
) -> None:
    leak_fresh.configure(job_seconds=600.0)  # runs past the 30 s wait: only the stop can end it early
    env = http_env(leak_fresh, tmp_path)
    server = start_http_server(env, transport, e2e_logs)
    try:
        async with connect(server) as client:
            task = _data(await client.call_tool("generate_video", {"prompt": "a long dusk", "resolution": "720p"}))

            async def stop_soon() -> None:
                await anyio.sleep(0.8)
                server.proc.send_signal(sig)

            with anyio.fail_after(25):  # a hang guard: the 30 s wait must end early, by the stop
                async with anyio.create_task_group() as tg:
                    tg.start_soon(stop_soon)
                    result = await client.call_tool("get_task_status", {"task_id": task["task_id"], "wait_seconds": 30})
        assert not result.is_error, _text(result)
        view = result.structured_content
        assert view["task_id"] == task["task_id"] and view["status"] in ("queued", "in_progress")
        assert "Still running" in _text(result) and "get_task_status" in _text(result)
        rc = await anyio.to_thread.run_sync(server.stop)
        assert rc == 0, server.logs()
        assert not any(server.data.glob("*-wal")), "the journal was not closed cleanly"
    finally:
        server.stop(signal.SIGKILL)
    leak_fresh.engine.finish_tasks_now()  # the job ends while the server is down
    restarted = start_http_server(env, transport, e2e_logs)
    try:
        async with connect(restarted) as client:
            done = _data(await client.call_tool("get_task_status", {"task_id": task["task_id"], "wait_seconds": 30}))
        assert done["status"] == "completed" and Path(done["local_path"]).is_file()
        assert leak_fresh.count(endpoint="create") == 1
    finally:
        assert restarted.stop() == 0


# --- safe by default (issue 9): a remote client names no file on the server's disk ------------------


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_remote_clients_cannot_name_server_files_by_default(
    transport: str, leak_fresh: SimulatorServer, e2e_logs: Path, tmp_path: Path
) -> None:
    env = http_env(leak_fresh, tmp_path)
    del env["WAN_MCP_ALLOW_REMOTE_PATHS"]
    picture = tmp_path / "inputs" / "owner-photo.png"
    Image.new("RGB", (800, 600), (90, 30, 200)).save(picture)
    server = start_http_server(env, transport, e2e_logs)
    try:
        async with connect(server) as client:
            for tool, args in (
                ("upload_image", {"path": str(picture)}),
                ("generate_video", {"image": str(picture), "prompt": "move", "resolution": "720p"}),
            ):
                refused = await client.call_tool(tool, args)
                assert refused.is_error and "WAN_MCP_ALLOW_REMOTE_PATHS" in _text(refused), _text(refused)
                assert refused.structured_content["error"]["field"] in ("path", "image")
            buf = io.BytesIO()
            Image.new("RGB", (800, 600), (90, 30, 200)).save(buf, format="PNG")
            data = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
            assert _data(await client.call_tool("upload_image", {"data": data}))["url"].startswith("http")
    finally:
        server.stop()
    assert leak_fresh.count(endpoint="create") == 0 and leak_fresh.count(endpoint="upload_image") == 1


async def test_no_unauthenticated_door_even_on_loopback(
    leak_fresh: SimulatorServer, e2e_logs: Path, tmp_path: Path
) -> None:
    env = http_env(leak_fresh, tmp_path)
    del env["WAN_MCP_HTTP_TOKEN"]  # nothing configured: the server makes its own token
    server = start_http_server(env, "http", e2e_logs)
    try:
        token_file = Path(env["WAN_MCP_DATA_DIR"]) / "http-token"
        token = token_file.read_text().strip()
        assert len(token) >= 32 and (token_file.stat().st_mode & 0o077) == 0
        bare = httpx2.post(server.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
        assert bare.status_code == 401  # another user of this machine cannot spend the key
        async with connect(server, token) as client:
            assert {t.name for t in (await client.list_tools()).tools} >= {"generate_video"}
    finally:
        server.stop()
    logs = server.logs()
    assert str(token_file) in logs and token not in logs  # the path is told, never the token


async def test_an_sse_session_is_bound_to_the_token_that_opened_it(sse_server: HttpServer) -> None:
    """A second token (another user of a shared server) learning a session id cannot post into it."""
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    async with (
        httpx2.AsyncClient(base_url=sse_server.base, timeout=10) as http,
        http.stream("GET", "/sse", headers=headers) as stream,
    ):
        # Read with a held iterator, never `break` out of `async for`: the abandoned generator
        # would be finalized at some later point and close the stream, ending the session.
        lines = stream.aiter_lines()
        endpoint = ""
        while not endpoint.startswith("/messages"):
            endpoint = (await lines.__anext__()).removeprefix("data: ")
        assert "session_id=" in endpoint
        message = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        foreign = await http.post(endpoint, json=message, headers={"Authorization": f"Bearer {TOKENS[1]}"})
        unknown = await http.post(
            endpoint.split("session_id=")[0] + "session_id=" + "0" * 32,
            json=message,
            headers={"Authorization": f"Bearer {TOKENS[1]}"},
        )
        own = await http.post(endpoint, json=message, headers=headers)
    assert foreign.status_code == unknown.status_code == 404 and foreign.text == unknown.text  # indistinguishable
    assert own.status_code == 202


# --- limits before authentication (issue 9) ----------------------------------------------------------


async def test_slow_header_floods_are_shed_and_healthz_still_answers(
    leak_fresh: SimulatorServer, e2e_logs: Path, tmp_path: Path
) -> None:
    import socket as sockets

    env = http_env(leak_fresh, tmp_path, WAN_MCP_HTTP_HEADER_TIMEOUT_SECONDS="1")
    server = start_http_server(env, "http", e2e_logs)
    flood: list[sockets.socket] = []
    try:
        for _ in range(600):
            s = sockets.create_connection(("127.0.0.1", server.port), timeout=30)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and never the rest
            flood.append(s)
        during = httpx2.get(f"{server.base}/healthz", timeout=30)
        assert during.status_code in (200, 503)  # answered at once (503 past MAX_CONNECTIONS), never hung
        # The server, not the client, ends every connection whose headers never complete...
        for s in flood:
            s.settimeout(30)
            assert s.recv(1024) == b""
        # ...so once the flood is shed, the server is fully available again.
        after = httpx2.get(f"{server.base}/healthz", timeout=30)
        assert after.status_code == 200 and after.json() == {"ok": True}
    finally:
        for s in flood:
            s.close()
        server.stop()


async def test_one_token_cannot_hold_every_sse_session(sse_server: HttpServer) -> None:
    from wan_mcp.server.limits import MAX_SSE_SESSIONS_PER_TOKEN

    async with httpx2.AsyncClient(base_url=sse_server.base, timeout=10) as http, anyio.create_task_group() as tg:
        opened = anyio.Event()
        count = [0]

        async def hold(token: str) -> None:
            async with http.stream("GET", "/sse", headers={"Authorization": f"Bearer {token}"}) as stream:
                assert stream.status_code == 200
                count[0] += 1
                if count[0] == MAX_SSE_SESSIONS_PER_TOKEN:
                    opened.set()
                await anyio.sleep_forever()

        for _ in range(MAX_SSE_SESSIONS_PER_TOKEN):
            tg.start_soon(hold, TOKENS[0])
        with anyio.fail_after(30):
            await opened.wait()
        refused = await http.get("/sse", headers={"Authorization": f"Bearer {TOKENS[0]}"})
        assert refused.status_code == 429 and "too many open SSE sessions" in refused.text
        async with http.stream("GET", "/sse", headers={"Authorization": f"Bearer {TOKENS[1]}"}) as other:
            assert other.status_code == 200  # another token is not slowed by it
        tg.cancel_scope.cancel()
