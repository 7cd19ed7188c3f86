"""Spending you can bound (issue 10), through the official client against the real server
and the simulator: quotes, dry runs, budgets, read-only mode, confirmation on both protocol
eras, the race-free duplicate guard, usage and the simulated balance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client import ClientRequestContext
from mcp.types import ElicitRequestParams, ElicitResult
from PIL import Image

from tests.helpers import error, ok, simulator_settings, text
from wan_mcp.server.app import build_server
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio
KEY = "sk-spend-0123456789abcdef"
CHEAP = {"prompt": "a paper boat", "resolution": "720p", "duration": 5}  # USD 0.50
DEAR = {"prompt": "a long storm", "resolution": "1080p", "duration": 15}  # USD 2.25: above USD 2
ERAS = ["auto", "legacy"]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    # Jobs that never finish on their own: every outcome below is about submissions, not timing.
    with SimulatorServer(job_seconds=3600, api_keys={KEY}) as server:
        yield server


@pytest.fixture
def fresh(sim: SimulatorServer) -> Iterator[SimulatorServer]:
    sim.engine.reset()
    yield sim
    sim.engine.reset()


def _settings(sim: SimulatorServer, tmp: Path, **overrides: Any) -> Any:
    return simulator_settings(sim, tmp, key=KEY, **overrides)


def _seeded(args: dict[str, Any], seed: int) -> dict[str, Any]:
    return {**args, "seed": seed}


async def test_every_result_carries_its_quote_and_the_days_spend(fresh: SimulatorServer, tmp_path: Path) -> None:
    async with Client(build_server(_settings(fresh, tmp_path))) as client:
        first = ok(await client.call_tool("generate_video", CHEAP))
        second = await client.call_tool("generate_video", _seeded(CHEAP, 2))
    assert first["quote"] == {
        "usd": 0.5,
        "credits": 100,
        "estimate": True,
        "basis": "5 s x USD 0.10/s (wan2.6, 720p, with audio)",
    }
    assert first["spent_today_usd"] == 0.5 and ok(second)["spent_today_usd"] == 1.0
    assert "about USD 0.5 (100 credits, estimate)" in text(second) and "Spent today: about USD 1" in text(second)


async def test_a_loop_stops_exactly_at_the_daily_budget(fresh: SimulatorServer, tmp_path: Path) -> None:
    image = tmp_path / "in" / "still.png"
    async with Client(build_server(_settings(fresh, tmp_path, budget_daily_usd=3.0))) as client:
        Image.new("RGB", (640, 360), (10, 20, 30)).save(image)
        made = [ok(await client.call_tool("generate_video", _seeded(CHEAP, i))) for i in range(6)]
        # The 7th would pass USD 3.00: refused before anything is uploaded or journaled.
        refused = await client.call_tool("generate_video", {"prompt": "go on", "image": str(image), **CHEAP})
        listed = ok(await client.call_tool("list_tasks", {"limit": 100}))["tasks"]
    assert len(made) == 6 and fresh.count(endpoint="create") == 6
    assert fresh.count(endpoint="upload_image") == 0 and len(listed) == 6
    data = error(refused)
    assert data["error"]["code"] == "budget_exceeded"
    assert data["budget"] == "daily" and data["spent_usd"] == 3.0 and data["limit_usd"] == 3.0
    assert data["setting"] == "WAN_MCP_BUDGET_DAILY_USD" and data["quote"]["usd"] == 0.5
    message = text(refused)
    for part in ("daily budget", "USD 3.00 of USD 3.00", "about USD 0.50", "WAN_MCP_BUDGET_DAILY_USD", "nothing",
                 "(5 s x USD 0.10/s (wan2.6, 720p, with audio))"):  # fmt: skip
        assert part in message, part


async def test_a_loop_stops_exactly_at_the_session_budget(fresh: SimulatorServer, tmp_path: Path) -> None:
    settings = _settings(fresh, tmp_path, budget_daily_usd=0, budget_session_usd=1.0)
    async with Client(build_server(settings)) as client:
        assert ok(await client.call_tool("generate_video", _seeded(CHEAP, 1)))
        assert ok(await client.call_tool("generate_video", _seeded(CHEAP, 2)))
        refused = error(await client.call_tool("generate_video", _seeded(CHEAP, 3)))
    assert refused["budget"] == "session" and refused["setting"] == "WAN_MCP_BUDGET_SESSION_USD"
    assert "session budget" in refused["error"]["message"] and fresh.count(endpoint="create") == 2
    # A new server process is a new session: same journal, fresh session budget.
    async with Client(build_server(settings)) as client:
        assert ok(await client.call_tool("generate_video", _seeded(CHEAP, 3)))
    assert fresh.count(endpoint="create") == 3


async def test_dry_run_validates_quotes_and_sends_nothing(fresh: SimulatorServer, tmp_path: Path) -> None:
    settings = _settings(fresh, tmp_path, budget_daily_usd=1.0)
    image = tmp_path / "in" / "portrait.png"
    Image.new("RGB", (360, 640), (90, 20, 30)).save(image)
    async with Client(build_server(settings)) as client:
        plan = ok(
            await client.call_tool(
                "generate_video", {"prompt": "wake up", "image": str(image), "duration": 10, "dry_run": True}
            )
        )
        bad = error(await client.call_tool("generate_video", {"prompt": "x", "duration": 7, "dry_run": True}))
        outside = error(
            await client.call_tool("generate_video", {"image": "/etc/hostname", "prompt": "x", "dry_run": True})
        )
        listed = ok(await client.call_tool("list_tasks", {}))["tasks"]
    assert fresh.count() == 0 and listed == []  # zero upstream requests, no journal row
    assert plan["dry_run"] is True and plan["mode"] == "i2v" and plan["model"] == "wan2.6"
    assert plan["payload"]["image_urls"] == [f"<upload: {image}>"] and plan["payload"]["duration"] == 10
    assert plan["payload"]["resolution"] == "1080p" and "aspect_ratio" not in plan["payload"]
    assert plan["quote"]["usd"] == 1.5 and plan["uploads"][0].startswith(f"image: {image}")
    assert "daily budget" in plan["next"]  # USD 1.50 would pass the USD 1 budget: said before spending
    assert bad["error"]["field"] == "duration"
    assert outside["error"]["field"] == "image"


async def test_read_only_refuses_every_paid_path(fresh: SimulatorServer, tmp_path: Path) -> None:
    settings = _settings(fresh, tmp_path, read_only=True)
    image = tmp_path / "in" / "a.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(image)
    async with Client(build_server(settings)) as client:
        gen = error(await client.call_tool("generate_video", CHEAP))
        up = error(await client.call_tool("upload_image", {"path": str(image)}))
        plan = ok(await client.call_tool("generate_video", {**CHEAP, "dry_run": True}))
        usage = ok(await client.call_tool("get_usage", {}))
        listed = ok(await client.call_tool("list_tasks", {}))
    assert gen["error"]["code"] == up["error"]["code"] == "read_only"
    assert "WAN_MCP_READ_ONLY" in gen["error"]["message"] and "dry_run" in gen["next"]
    assert plan["quote"]["usd"] == 0.5 and "read-only" in plan["next"]
    assert usage["read_only"] is True and listed["tasks"] == []
    assert fresh.count(endpoint="create") == 0 and fresh.count(endpoint="upload_image") == 0


async def test_five_simultaneous_identical_calls_make_one_task(fresh: SimulatorServer, tmp_path: Path) -> None:
    spellings = [
        CHEAP,
        {**CHEAP, "prompt": "a paper boat."},
        {**CHEAP, "prompt": "  a   paper boat ", "aspect_ratio": "16:9", "watermark": False},
        {"duration": 5, "resolution": "720p", "prompt": "a paper boat", "prompt_extend": True, "audio": True},
        {**CHEAP, "shot_type": "single", "seed": None},
    ]
    answers: list[dict[str, Any]] = []
    async with Client(build_server(_settings(fresh, tmp_path))) as client:

        async def call(args: dict[str, Any]) -> None:
            answers.append(ok(await client.call_tool("generate_video", args)))

        async with anyio.create_task_group() as tg:
            for args in spellings:
                tg.start_soon(call, args)
        new_take = ok(await client.call_tool("generate_video", _seeded(CHEAP, 99)))
    assert fresh.count(endpoint="create") == 2  # the five became one; a new seed is a new take
    assert len({a["task_id"] for a in answers}) == 1 and new_take["task_id"] != answers[0]["task_id"]
    assert answers[0]["task_id"].startswith("video_")  # the gateway's id, also for those that waited
    assert sum(bool(a.get("deduplicated")) for a in answers) == 4
    assert sorted(a["quote"]["usd"] for a in answers) == [0, 0, 0, 0, 0.5]


def _answering(action: str, approve: bool = True) -> tuple[list[str], Any]:
    asked: list[str] = []

    async def callback(_ctx: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        if action == "accept":
            return ElicitResult(action="accept", content={"approve": approve})
        return ElicitResult(action=action)  # type: ignore[arg-type]

    return asked, callback


@pytest.mark.parametrize("mode", ERAS)
async def test_elicitation_accept_submits_once(fresh: SimulatorServer, tmp_path: Path, mode: str) -> None:
    asked, callback = _answering("accept")
    server = build_server(_settings(fresh, tmp_path))
    async with Client(server, mode=mode, elicitation_callback=callback) as client:  # type: ignore[arg-type]
        cheap = ok(await client.call_tool("generate_video", CHEAP))  # below USD 2: nobody is asked
        assert asked == []
        dear = ok(await client.call_tool("generate_video", DEAR))
    assert len(asked) == 1 and "USD 2.25" in asked[0] and "15 s 1080p" in asked[0] and "a long storm" in asked[0]
    assert dear["quote"]["usd"] == 2.25 and cheap["task_id"] != dear["task_id"]
    assert fresh.count(endpoint="create") == 2


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize(("action", "approve", "word"), [("decline", True, "declined"), ("cancel", True, "dismissed"),
                                                          ("accept", False, "declined")])  # fmt: skip
async def test_elicitation_decline_or_cancel_spends_nothing(
    fresh: SimulatorServer, tmp_path: Path, mode: str, action: str, approve: bool, word: str
) -> None:
    asked, callback = _answering(action, approve)
    async with Client(build_server(_settings(fresh, tmp_path)), mode=mode, elicitation_callback=callback) as client:  # type: ignore[arg-type]
        refused = error(await client.call_tool("generate_video", DEAR))
        listed = ok(await client.call_tool("list_tasks", {}))["tasks"]
    assert len(asked) == 1 and refused["error"]["code"] == "not_confirmed"
    assert word in refused["error"]["message"] and refused["quote"]["usd"] == 2.25
    assert fresh.count() == 0 and listed == []


@pytest.mark.parametrize("mode", ERAS)
async def test_without_elicitation_a_single_use_token_confirms_exactly_that_request(
    fresh: SimulatorServer, tmp_path: Path, mode: str
) -> None:
    async with Client(build_server(_settings(fresh, tmp_path)), mode=mode) as client:  # type: ignore[arg-type]
        first = error(await client.call_tool("generate_video", DEAR))
        assert first["error"]["code"] == "confirmation_required" and fresh.count() == 0
        token = first["confirm_token"]
        assert token.startswith("wct_") and first["quote"]["usd"] == 2.25 and token in first["next"]
        assert "(15 s x USD 0.15/s (wan2.6, 1080p, with audio))" in first["error"]["message"]
        # A token for one request never confirms another (here: another seed, i.e. another take).
        other = error(await client.call_tool("generate_video", {**DEAR, "seed": 5, "confirm_token": token}))
        assert other["error"]["code"] == "confirmation_required" and "different request" in other["error"]["message"]
        forged = error(await client.call_tool("generate_video", {**DEAR, "confirm_token": "wct_forged"}))
        assert "not one this server issued" in forged["error"]["message"]
        assert fresh.count() == 0
        # Spelled differently but the same request as sent: the token confirms it.
        made = ok(await client.call_tool("generate_video", {**DEAR, "watermark": False, "confirm_token": token}))
        again = ok(await client.call_tool("generate_video", {**DEAR, "confirm_token": token}))
    assert made["status"] in ("queued", "in_progress") and made["quote"]["usd"] == 2.25
    assert again["deduplicated"] is True and again["task_id"] == made["task_id"]  # reuse: no second spend
    assert fresh.count(endpoint="create") == 1


async def test_a_used_token_is_refused(fresh: SimulatorServer, tmp_path: Path) -> None:
    fresh.configure(fail_prompts_containing="storm", job_seconds=0.2)
    async with Client(build_server(_settings(fresh, tmp_path))) as client:
        token = error(await client.call_tool("generate_video", DEAR))["confirm_token"]
        made = ok(await client.call_tool("generate_video", {**DEAR, "confirm_token": token, "wait_seconds": 10}))
        assert made["status"] == "failed"  # a failed task is no duplicate: a retry would be a new spend ...
        reused = error(await client.call_tool("generate_video", {**DEAR, "confirm_token": token}))
    assert "already used" in reused["error"]["message"]  # ... which needs a new approval
    assert fresh.count(endpoint="create") == 1


async def test_usage_shows_balance_spend_budgets_and_prices(fresh: SimulatorServer, tmp_path: Path) -> None:
    fresh.configure(job_seconds=0.2, balance=10.0)
    settings = _settings(fresh, tmp_path, budget_daily_usd=5.0, budget_session_usd=4.0)
    async with Client(build_server(settings)) as client:
        done = ok(await client.call_tool("generate_video", {**CHEAP, "wait_seconds": 10}))
        assert done["status"] == "completed"
        usage = ok(await client.call_tool("get_usage", {}))
        fresh.add_fault("balance", "http_500", times=-1)
        degraded = ok(await client.call_tool("get_usage", {}))
    # The simulated gateway billed 5 s at its own 720p price (USD 0.04/s); our estimate is higher.
    assert usage["balance_usd"] == pytest.approx(9.8) and usage["balance_credits"] == pytest.approx(1960)
    assert usage["spent_today_usd"] == 0.5 and usage["spent_session_usd"] == 0.5
    assert usage["daily_left_usd"] == 4.5 and usage["session_left_usd"] == 3.5 and usage["confirm_above_usd"] == 2
    assert any(line.startswith("wan2.6 720p: USD 0.10/s") for line in usage["prices"])
    assert "balance_usd" not in degraded
    assert degraded["balance_note"] and degraded["spent_today_usd"] == 0.5


async def test_the_simulated_balance_runs_out_with_402(fresh: SimulatorServer, tmp_path: Path) -> None:
    fresh.configure(job_seconds=0.2, balance=0.5)
    async with Client(build_server(_settings(fresh, tmp_path))) as client:
        done = ok(await client.call_tool("generate_video", {**CHEAP, "wait_seconds": 10}))  # bills USD 0.20
        assert done["status"] == "completed"
        second = ok(await client.call_tool("generate_video", {**_seeded(CHEAP, 2), "wait_seconds": 10}))
        assert second["status"] == "completed"  # USD 0.30 was left: enough to start; now USD 0.10
        third = ok(await client.call_tool("generate_video", {**_seeded(CHEAP, 3), "wait_seconds": 10}))
        assert third["status"] == "completed"  # balance now -0.10: the gateway lets a started job finish
        refused = error(await client.call_tool("generate_video", _seeded(CHEAP, 4)))
        usage = ok(await client.call_tool("get_usage", {}))
    assert refused["error"]["code"] == "payment" and fresh.count(endpoint="create") == 4
    # Nothing was created, so nothing stays reserved: today's spend is the three made.
    assert usage["spent_today_usd"] == 1.5 and usage["balance_usd"] == pytest.approx(-0.1)
