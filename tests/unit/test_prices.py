"""The price table and quotes (issue 10): every model x resolution x audio x duration, exactly."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from pathlib import Path

import pytest

from wan_mcp.core.request import parse_video_request
from wan_mcp.core.spending import MICRO, PriceTable, format_usd
from wan_mcp.errors import ErrorCode, WanError

SHIPPED = json.loads((Path(__file__).parents[2] / "wan_mcp/core/spending/prices.json").read_text())
MODELS = ("wan2.6", "wan2.6-flash")
RESOLUTIONS = ("720p", "1080p")
DURATIONS = (5, 10, 15)


def _expected_micro(model: str, resolution: str, audio: bool, seconds: int) -> int:
    per_second = Decimal(str(SHIPPED["usd_per_second"][model][resolution]["audio" if audio else "silent"]))
    return int(per_second * MICRO) * seconds


@pytest.mark.parametrize(
    ("model", "resolution", "audio", "seconds"), list(itertools.product(MODELS, RESOLUTIONS, (True, False), DURATIONS))
)
def test_quotes_match_the_table_for_every_combination(model: str, resolution: str, audio: bool, seconds: int) -> None:
    table = PriceTable.load()
    quote = table.quote(model=model, resolution=resolution, audio=audio, seconds=seconds)
    assert quote.micro_usd == _expected_micro(model, resolution, audio, seconds)
    assert quote.credits == quote.micro_usd * 200 // MICRO  # 1 USD = 200 credits; every price is whole credits
    shown = quote.as_dict()
    assert shown["estimate"] is True and shown["usd"] == quote.micro_usd / MICRO
    assert f"{seconds} s" in shown["basis"] and model in shown["basis"] and resolution in shown["basis"]


def test_published_figures_are_the_higher_ones() -> None:
    """Never under-estimate: standard Wan 2.6 at Alibaba's list price (above the gateway page's 0.06)."""
    per = SHIPPED["usd_per_second"]
    assert per["wan2.6"]["720p"]["audio"] == 0.10 and per["wan2.6"]["1080p"]["audio"] == 0.15
    # Flash: CNY 0.3/0.5 with audio, 0.15/0.25 silent; at any rate up to 6.8 CNY/USD the USD figure is higher.
    for resolution, cny in (("720p", (0.3, 0.15)), ("1080p", (0.5, 0.25))):
        assert per["wan2.6-flash"][resolution]["audio"] >= cny[0] / 6.8
        assert per["wan2.6-flash"][resolution]["silent"] >= cny[1] / 6.8
    assert SHIPPED["as_of"] and SHIPPED["sources"]["wan2.6"] and SHIPPED["sources"]["wan2.6-flash"]


@pytest.mark.parametrize(
    ("args", "micro"),
    [
        ({"prompt": "a cat"}, 750_000),  # defaults: wan2.6, 1080p, 5 s, with audio
        ({"prompt": "a cat", "resolution": "720p", "duration": 15}, 1_500_000),
        ({"image": "https://example.com/a.png", "model": "wan2.6-flash"}, 370_000),  # flash default: audio on
        (
            {"image": "https://example.com/a.png", "model": "wan2.6-flash", "audio": False, "resolution": "720p"},
            115_000,
        ),
    ],
)
def test_a_request_is_quoted_as_it_will_be_sent(args: dict[str, object], micro: int) -> None:
    v = parse_video_request(args)
    table = PriceTable.load()
    assert table.quote(model=v.request.model, resolution=v.request.resolution, audio=v.has_audio,
                       seconds=v.request.duration).micro_usd == micro  # fmt: skip


def test_an_override_file_replaces_entries_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"as_of": "2027-01-01", "usd_per_second": {"wan2.6": {"1080p": {"audio": 0.2}}}}))
    table = PriceTable.load(path)
    assert table.quote(model="wan2.6", resolution="1080p", audio=True, seconds=5).micro_usd == 1_000_000
    assert table.quote(model="wan2.6", resolution="720p", audio=True, seconds=5).micro_usd == 500_000
    assert table.as_of == "2027-01-01"


def test_an_unknown_combination_costs_its_dearest_second() -> None:
    table = PriceTable.load()
    assert table.per_second_micro("wan2.6-flash", "4k", True) == 74_000
    assert table.per_second_micro("wan9", "720p", True) == 150_000


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("not json", "not JSON"),
        ("[]", "top level"),
        ('{"usd_per_second": {"wan2.6": {"720p": {"audio": -1}}}}', "more than 0"),
        ('{"usd_per_second": {"wan2.6": {"720p": {"audio": 1000}}}}', "at most 100"),
        ('{"usd_per_second": {"wan2.6": {"720p": {"loud": 0.1}}}}', "'audio' and/or 'silent'"),
        ('{"usd_per_second": {"wan2.6": {"720p": {"audio": "cheap"}}}}', "not a number"),
        ('{"usd_per_second": {"wan2.6": {"720p": {"audio": true}}}}', "must be a number"),
        ('{"prices": {}}', "no 'usd_per_second'"),
    ],
)
def test_a_bad_price_file_is_refused_with_the_fix(tmp_path: Path, content: str, why: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(WanError) as info:
        PriceTable.load(path)
    assert info.value.code is ErrorCode.CONFIG and why in info.value.message
    assert "WAN_MCP_PRICES_FILE" in (info.value.hint or "")


def test_missing_price_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WanError, match="cannot be read"):
        PriceTable.load(tmp_path / "nope.json")


def test_usd_is_shown_in_cents_or_tenths_of_a_cent() -> None:
    assert format_usd(750_000) == "USD 0.75"
    assert format_usd(2_250_000) == "USD 2.25"
    assert format_usd(225_000) == "USD 0.225"
    assert format_usd(0) == "USD 0.00"


def test_doctor_warns_when_no_daily_budget_is_set(tmp_path: Path) -> None:
    from wan_mcp.config import load_settings
    from wan_mcp.doctor import _spending_checks

    unlimited = _spending_checks(load_settings(data_dir=tmp_path, budget_daily_usd=0))
    assert unlimited[0][0] == "warn" and "WAN_MCP_BUDGET_DAILY_USD=0" in unlimited[0][2]
    default = _spending_checks(load_settings(data_dir=tmp_path))
    assert default[0][0] is True and "USD 25 per day" in default[0][2] and "above USD 2" in default[0][2]
    bad = tmp_path / "prices.json"
    bad.write_text("{}")
    broken = _spending_checks(load_settings(data_dir=tmp_path, prices_file=bad))
    assert broken[-1][0] is False and "usd_per_second" in broken[-1][2]
