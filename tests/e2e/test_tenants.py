"""One server, many users: isolation, OAuth sign-in, own keys and per-tenant budgets, end to end.

Each transport (streamable HTTP and SSE) gets one real ``wan-mcp serve`` process with these
principals:

- alice, bob, dora, erin: static tenants from a tenants file written by the same code as
  ``wan-mcp tenant add`` (bob pays with his own key from the environment; dora has a USD 1
  daily budget; erin may make 3 calls a minute);
- carol: an OAuth principal whose JWT comes from a real authorization server on loopback
  (``tests/oauth_server.py``, authlib), and who sends her own key in ``X-Wan-Api-Key``.

Every cross-tenant attempt must be answered exactly as for an id never made, and cause no
gateway request (counted at the simulator, which also records which key made which task).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from PIL import Image

from tests.e2e.conftest import Dirs, HttpServer, connect, free_port, server_env, start_http_server
from tests.helpers import error, files_of, ok, text
from tests.oauth_server import AuthServer, OAuthClient
from tests.tasks_client import CreateTaskResult, TasksClient, get_task, listen_tasks
from wan_mcp.server.tenants_file import TenantEntry, add_tenant
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio

KEY_SERVER = f"sk-server-{secrets.token_hex(12)}"
KEY_BOB = f"sk-bob-{secrets.token_hex(12)}"
KEY_CAROL = f"sk-carol-{secrets.token_hex(12)}"
CAROL_SECRET = secrets.token_urlsafe(16)
NEVER = "video_NEVERMADE0000000000000000"  # shaped like a gateway id, never made


def owner_of(key: str) -> str:
    """How the simulator names the account (key) that made a task."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class Stage:
    server: HttpServer
    sim: SimulatorServer
    auth: AuthServer
    tokens: dict[str, str]
    dirs: Dirs

    @property
    def secrets(self) -> list[str]:
        return [KEY_SERVER, KEY_BOB, KEY_CAROL, CAROL_SECRET, *self.tokens.values()]


@pytest.fixture(scope="module", params=["http", "sse"])
def stage(request: pytest.FixtureRequest, e2e_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    transport: str = request.param
    root = tmp_path_factory.mktemp(f"tenants-{transport}")
    dirs = Dirs(root, root / "inputs", root / "data", root / "videos")
    dirs.inputs.mkdir(parents=True)
    port = free_port()
    resource = f"http://127.0.0.1:{port}/{'mcp' if transport == 'http' else 'sse'}"
    with (
        SimulatorServer(job_seconds=1.0, api_keys={KEY_SERVER, KEY_BOB, KEY_CAROL}) as sim,
        AuthServer(resource) as auth,
    ):
        auth.add_client(OAuthClient("carol-app", CAROL_SECRET))
        tenants = root / "tenants.json"
        tokens = {
            "alice": add_tenant(tenants, TenantEntry("alice")),
            "bob": add_tenant(tenants, TenantEntry("bob", api_key_env="BOB_TOAPIS_KEY")),
            "dora": add_tenant(tenants, TenantEntry("dora", budget_daily_usd=1.0)),
            "erin": add_tenant(tenants, TenantEntry("erin", rate_per_minute=3)),
        }
        env = server_env(
            sim,
            dirs,
            WAN_MCP_API_KEY=KEY_SERVER,
            WAN_MCP_TENANTS_FILE=str(tenants),
            WAN_MCP_OAUTH_ISSUER=auth.issuer,
            BOB_TOAPIS_KEY=KEY_BOB,
            # Paths allowed for remote clients here, to show a tenant still cannot name another's files.
            WAN_MCP_ALLOW_REMOTE_PATHS="1",
            WAN_MCP_CONFIRM_ABOVE_USD="100",
            WAN_MCP_BUDGET_DAILY_USD="0",
        )
        server = start_http_server(env, transport, e2e_logs, port=port)
        try:
            tokens["carol"] = auth.token("carol-app", CAROL_SECRET)
            yield Stage(server, sim, auth, tokens, dirs)
        finally:
            server.stop()


def _png_data_url() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (640, 360), (30, 120, 200)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _answer(result: Any, ident: str) -> tuple[str, str]:
    """What a caller learns from a result, with ``ident`` blanked (to compare two ids' answers)."""
    shown = json.dumps(result.structured_content, sort_keys=True)
    return text(result).replace(ident, "<ID>"), shown.replace(ident, "<ID>")


async def _resource_error(client: Any, ident: str) -> str:
    with pytest.raises(MCPError) as caught:
        await client.read_resource(f"task://{ident}")
    return str(caught.value).replace(ident, "<ID>")


async def test_another_tenants_task_upload_and_files_do_not_exist_for_you(stage: Stage) -> None:
    image = _png_data_url()
    async with connect(stage.server, stage.tokens["alice"]) as alice:
        made = ok(
            await alice.call_tool(
                "generate_video", {"prompt": "a red kite over dunes", "resolution": "720p", "wait_seconds": 30}
            )
        )
        uploaded = ok(await alice.call_tool("upload_image", {"data": image}))
    assert made["status"] == "completed" and made["local_path"], made
    task, path = made["task_id"], made["local_path"]
    assert "/tenants/alice/" in path
    seen_before = len(stage.sim.requests())

    for name in ("bob", "carol"):
        headers = {"X-Wan-Api-Key": KEY_CAROL} if name == "carol" else None
        async with connect(stage.server, stage.tokens[name], headers=headers) as other:
            for tool, args in (
                ("get_task_status", {"task_id": "{id}", "wait_seconds": 5}),
                ("get_task_status", {"task_id": "{id}", "download": False}),
                ("generate_video", {"prompt": "go on", "continue_from": "{id}", "resolution": "720p"}),
                ("join_videos", {"task_ids": ["{id}", "{id}"]}),
            ):
                answers = []
                for ident in (task, NEVER):
                    filled = json.loads(json.dumps(args).replace("{id}", ident))
                    result = await other.call_tool(tool, filled)
                    assert result.is_error, (name, tool, text(result))
                    answers.append(_answer(result, ident))
                assert answers[0] == answers[1], (name, tool, answers)
            assert await _resource_error(other, task) == await _resource_error(other, NEVER)
            listed = ok(await other.call_tool("list_tasks", {"limit": 100}))
            assert task not in json.dumps(listed)

            # Files: alice's video cannot be named, and the refusal matches a path that never existed.
            answers = []
            for candidate in (path, str(Path(path).with_name("never-made.mp4"))):
                result = await other.call_tool(
                    "generate_video", {"prompt": "reuse", "reference_videos": [candidate], "resolution": "720p"}
                )
                assert error(result)["error"]["code"] == "file_access", text(result)
                answers.append(_answer(result, candidate))
            assert answers[0] == answers[1], answers

            # The duplicate guard and the upload cache are per tenant: nothing of alice's is reported.
            again = ok(await other.call_tool("upload_image", {"data": image}))
            assert again["cached"] is False and again["url"] != uploaded["url"]
            twin = ok(
                await other.call_tool("generate_video", {"prompt": "a red kite over dunes", "resolution": "720p"})
            )
            assert twin["task_id"] != task and not twin.get("deduplicated")

    # Not one gateway request was about alice's task on behalf of anybody else.
    asked = [r for r in stage.sim.requests()[seen_before:] if task in r.path]
    assert asked == [], asked


async def test_each_tenant_reaches_the_gateway_with_its_own_key_and_no_key_is_kept(stage: Stage) -> None:
    made: dict[str, dict[str, Any]] = {}
    for name, headers in (("alice", None), ("bob", None), ("carol", {"X-Wan-Api-Key": KEY_CAROL})):
        async with connect(stage.server, stage.tokens[name], headers=headers) as client:
            made[name] = ok(
                await client.call_tool(
                    "generate_video", {"prompt": f"a lantern for {name}", "resolution": "720p", "wait_seconds": 30}
                )
            )
            assert made[name]["status"] == "completed", made[name]
            usage = ok(await client.call_tool("get_usage", {}))
            if name == "alice":  # the server's account: its balance is the owner's business
                assert "balance_usd" not in usage and "owner" in usage["balance_note"], usage
            else:  # their own key's balance (or why the gateway could not tell)
                assert "balance_usd" in usage or usage.get("balance_unlimited") or usage.get("balance_note"), usage
    owners = {t["id"]: t["owner"] for t in stage.sim.tasks()}
    assert owners[made["alice"]["task_id"]] == owner_of(KEY_SERVER)
    assert owners[made["bob"]["task_id"]] == owner_of(KEY_BOB)
    assert owners[made["carol"]["task_id"]] == owner_of(KEY_CAROL)

    # A task made with carol's own key is tracked only while her key comes with her calls.
    async with connect(stage.server, stage.tokens["carol"], headers={"X-Wan-Api-Key": KEY_CAROL}) as carol:
        running = ok(await carol.call_tool("generate_video", {"prompt": "slow tide", "resolution": "720p"}))
    seen = len(stage.sim.requests())
    async with connect(stage.server, stage.tokens["carol"]) as carol:
        keyless = ok(await carol.call_tool("get_task_status", {"task_id": running["task_id"], "wait_seconds": 3}))
    if keyless["status"] != "completed":  # (a 1 s job may have been seen finished by the first wait)
        assert "X-Wan-Api-Key" in keyless["next"], keyless
        assert not [r for r in stage.sim.requests()[seen:] if running["task_id"] in r.path]
    async with connect(stage.server, stage.tokens["carol"], headers={"X-Wan-Api-Key": KEY_CAROL}) as carol:
        done = ok(await carol.call_tool("get_task_status", {"task_id": running["task_id"], "wait_seconds": 30}))
    assert done["status"] == "completed", done

    # No key and no token in any log line, result or journal byte.
    exposed = stage.server.logs() + json.dumps(made)
    journal = b"".join(files_of(stage.dirs.data, "journal.sqlite3*").values())
    for index, secret in enumerate(stage.secrets):  # (the index, never the secret, in a failure message)
        assert secret not in exposed, f"secret #{index} in a log line or result"
        assert secret.encode() not in journal, f"secret #{index} in the journal"


async def test_one_tenants_budget_and_rate_do_not_stop_another(stage: Stage) -> None:
    async with connect(stage.server, stage.tokens["dora"]) as dora:
        for prompt in ("fox one", "fox two"):  # USD 0.50 each (720p, 5 s): her USD 1 is spent
            ok(await dora.call_tool("generate_video", {"prompt": prompt, "resolution": "720p"}))
        refused = error(await dora.call_tool("generate_video", {"prompt": "fox three", "resolution": "720p"}))
        assert refused["error"]["code"] == "budget_exceeded", refused
        usage = ok(await dora.call_tool("get_usage", {}))
        assert usage["spent_today_usd"] == 1.0 and usage["daily_left_usd"] == 0
    async with connect(stage.server, stage.tokens["alice"]) as alice:
        ok(await alice.call_tool("generate_video", {"prompt": "fox for alice", "resolution": "720p"}))
        mine = ok(await alice.call_tool("get_usage", {}))
        assert mine.get("daily_left_usd") is None  # the server's setting (0 = unlimited) applies to her

    for _ in range(3):  # a new connection each time: the rate is the tenant's, not the connection's
        async with connect(stage.server, stage.tokens["erin"]) as erin:
            ok(await erin.call_tool("list_tasks", {}))
    async with connect(stage.server, stage.tokens["erin"]) as erin:
        limited = error(await erin.call_tool("list_tasks", {}))
        assert limited["error"]["code"] == "rate_limited" and limited["error"]["retry_after"] >= 1, limited
    async with connect(stage.server, stage.tokens["alice"]) as alice:
        ok(await alice.call_tool("list_tasks", {}))  # erin's bucket is hers alone


async def test_oauth_tokens_are_checked_and_the_metadata_points_to_the_issuer(stage: Stage) -> None:
    server, auth = stage.server, stage.auth
    auth.add_client(OAuthClient("elsewhere", "s1", audience="https://other.example/mcp"))
    auth.add_client(OAuthClient("expired", "s2", expires_in=-300))
    auth.add_client(OAuthClient("noscope", "s3", scope="profile"))
    auth.add_client(OAuthClient("liar", "s4", issuer="https://issuer.example"))
    bad = {
        "another audience": auth.token("elsewhere", "s1"),
        "expired": auth.token("expired", "s2"),
        "another issuer": auth.token("liar", "s4"),
    }
    with AuthServer(server.url) as stranger:  # same claims, but signed by keys the issuer never published
        stranger.add_client(OAuthClient("carol-app", CAROL_SECRET))
        bad["unknown signing key"] = stranger.token("carol-app", CAROL_SECRET)
    metadata_url = (
        f"{server.base}/.well-known/oauth-protected-resource{'/mcp' if server.transport == 'http' else '/sse'}"
    )
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }

    def attempt(token: str) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
        if server.transport == "http":
            return httpx2.post(server.url, json=init, headers=headers, timeout=10)
        return httpx2.get(server.url, headers=headers, timeout=10)

    for why, token in bad.items():
        reply = attempt(token)
        assert reply.status_code == 401, (why, reply.status_code, reply.text)
        assert f'resource_metadata="{metadata_url}"' in reply.headers["www-authenticate"], why
    scopeless = attempt(auth.token("noscope", "s3", scope="profile"))
    assert scopeless.status_code == 403 and "insufficient_scope" in scopeless.headers["www-authenticate"]

    for url in (metadata_url, f"{server.base}/.well-known/oauth-protected-resource"):
        prm = httpx2.get(url, timeout=10).json()
        assert prm["resource"] == server.url and prm["authorization_servers"] == [auth.issuer + "/"], prm
        assert prm["scopes_supported"] == ["wan"]


async def test_a_tenant_gets_its_video_as_a_signed_link_that_only_opens_its_own_file(stage: Stage) -> None:
    async with connect(stage.server, stage.tokens["alice"]) as alice:
        made = ok(
            await alice.call_tool(
                "generate_video", {"prompt": "a paper crane at dusk", "resolution": "720p", "wait_seconds": 30}
            )
        )
    assert made["status"] == "completed", made
    link: str = made["download_url"]
    assert link.startswith(stage.server.base + "/files/" + made["task_id"] + ".mp4?sig=")
    assert "download_url" in made["next"] and made["download_expires_at"]
    saved = Path(made["local_path"]).read_bytes()
    async with httpx2.AsyncClient(timeout=30) as web:  # no bearer token: the link is the credential
        whole = await web.get(link)
        assert whole.status_code == 200 and whole.content == saved
        assert whole.headers["content-type"] == "video/mp4"
        part = await web.get(link, headers={"Range": "bytes=0-99"})  # players seek
        assert part.status_code == 206 and part.content == saved[:100]
        assert (await web.head(link)).status_code == 200

        # An altered signature, another task's name, or no signature: refused, saying what to do.
        base, _, sig = link.partition("?sig=")
        tampered = sig[:-4] + ("AAAA" if not sig.endswith("AAAA") else "BBBB")
        for wrong in (f"{base}?sig={tampered}", link.replace(made["task_id"], NEVER), base):
            refused = await web.get(wrong)
            assert refused.status_code == 403, (wrong, refused.text)
            assert "get_task_status" in refused.json()["error"]["hint"]

        # Bob's own link opens bob's file only; nothing in it reaches alice's.
        async with connect(stage.server, stage.tokens["bob"]) as bob:
            his = ok(
                await bob.call_tool(
                    "generate_video", {"prompt": "a tin robot waving", "resolution": "720p", "wait_seconds": 30}
                )
            )
        got = await web.get(his["download_url"])
        assert got.status_code == 200 and got.content == Path(his["local_path"]).read_bytes() != saved

        # The file gone from the server: 404 naming the task, and the next step.
        Path(his["local_path"]).unlink()
        gone = await web.get(his["download_url"])
        assert gone.status_code == 404 and gone.json()["error"]["task_id"] == his["task_id"]


async def test_a_background_job_handle_answers_only_the_tenant_that_made_it(stage: Stage) -> None:
    tasks = TasksClient()
    async with connect(stage.server, stage.tokens["alice"], extensions=[tasks]) as alice:
        raw = await alice.session.call_tool(
            "generate_video", {"prompt": "a lantern festival", "resolution": "720p"}, allow_claimed=True
        )
        assert isinstance(raw, CreateTaskResult)
        assert (await get_task(alice.session, raw.task_id))["status"] in ("working", "completed")
    async with connect(stage.server, stage.tokens["bob"], extensions=[TasksClient()]) as bob:
        answers = []
        for handle in (raw.task_id, "wt1.dmlkZW9fTkVWRVI.AAAAAAAAAAAAAAAAAAAAAAAA"):  # alice's, and one never made
            with pytest.raises(MCPError) as refused:
                await get_task(bob.session, handle)
            answers.append((refused.value.error.code, refused.value.error.message))
        assert answers[0] == answers[1], answers  # another tenant's task is a task never made
        with anyio.fail_after(30):  # nor can he follow it: nothing honoured, so the stream ends at once
            await listen_tasks(bob.session, [raw.task_id])
    async with connect(stage.server, stage.tokens["alice"], extensions=[tasks]) as alice:
        with anyio.fail_after(60):  # she can: each change pushed, the last one carrying the result
            await listen_tasks(alice.session, [raw.task_id])
    await anyio.sleep(0.2)
    assert tasks.notices and tasks.notices[-1]["status"] == "completed", tasks.notices
    async with connect(stage.server, stage.tokens["alice"], extensions=[tasks]) as alice:
        for _ in range(120):  # her own handle still answers her: poll until the job is done
            now = await get_task(alice.session, raw.task_id)
            if now["status"] != "working":
                break
            await anyio.sleep(0.5)
    assert now["status"] == "completed", now
    done = now["result"]["structuredContent"]
    assert done["status"] == "completed" and done["download_url"]  # the final get_task_status result, inlined
