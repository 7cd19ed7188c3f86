"""Settings precedence and the example config file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wan_mcp.config import Settings, load_settings, settings_from_values
from wan_mcp.errors import WanError, redact

ROOT = Path(__file__).resolve().parents[2]


def test_precedence_defaults_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"max_wait_seconds": 10, "poll_interval_seconds": 7, "read_timeout": 5}))
    monkeypatch.setenv("WAN_MCP_CONFIG", str(cfg))
    monkeypatch.setenv("WAN_MCP_POLL_INTERVAL_SECONDS", "8")
    monkeypatch.setenv("WAN_MCP_READ_TIMEOUT", "6")
    s = load_settings(read_timeout=9)
    assert s.max_wait_seconds == 10  # file beats default
    assert s.poll_interval_seconds == 8  # env beats file
    assert s.read_timeout == 9  # flag beats env
    assert s.connect_timeout == 10  # default


def test_settings_from_values_see_neither_the_environment_nor_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"budget_daily_usd": 1, "base_url": "https://file.example"}))
    monkeypatch.setenv("WAN_MCP_CONFIG", str(cfg))
    monkeypatch.setenv("WAN_MCP_API_KEY", "sk-users-own-key-0123456789")
    monkeypatch.setenv("WAN_MCP_TENANTS_FILE", str(tmp_path / "tenants.json"))
    s = settings_from_values(base_url="http://127.0.0.1:9", poll_interval_seconds=0.1)
    assert isinstance(s, Settings)
    assert s.base_url == "http://127.0.0.1:9" and s.poll_interval_seconds == 0.1  # the values given
    assert s.api_key is None and s.tenants_file is None  # not the user's key or tenants
    assert s.budget_daily_usd == Settings.model_fields["budget_daily_usd"].default  # not the file's
    assert load_settings().budget_daily_usd == 1  # (the same environment does reach the server's own)


def test_missing_config_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAN_MCP_CONFIG", str(tmp_path / "nope.json"))
    with pytest.raises(WanError) as info:
        load_settings()
    assert "nope.json" in str(info.value) and "WAN_MCP_CONFIG" in str(info.value)


def test_lists_from_env_use_pathsep_or_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAN_MCP_ALLOWED_DIRS", "/a:/b")
    monkeypatch.setenv("WAN_MCP_ALLOW_PRIVATE_URLS", "127.0.0.1, ::1")
    s = load_settings()
    assert s.allowed_dirs == [Path("/a"), Path("/b")]
    assert s.allow_private_urls == ["127.0.0.1", "::1"]
    assert not s.restrict_dotdirs


def test_defaults_never_use_cwd() -> None:
    s = load_settings()
    assert s.data_dir.is_absolute() and s.resolved_output_dir.is_absolute()
    assert s.restrict_dotdirs and s.read_roots == [s.resolved_inbox_dir, s.resolved_output_dir]
    assert Path.home() not in s.read_roots  # issue 9: never the whole home by default


def test_key_is_secret_and_registered_for_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("WAN_MCP_API_KEY", key)
    s = load_settings()
    assert key not in repr(s) and key not in str(s.model_dump())
    assert redact(f"boom {key} boom") == "boom *** boom"


def test_example_config_lists_every_setting_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    example = json.loads((ROOT / "config.example.json").read_text())
    example.pop("$comment")
    assert set(example) == set(Settings.model_fields)
    monkeypatch.setenv("WAN_MCP_CONFIG", str(ROOT / "config.example.json"))
    from_file = load_settings()
    defaults = Settings.model_validate({})
    for name in Settings.model_fields:
        if name == "data_dir":
            continue  # platform-specific default; the file shows the Linux one
        assert getattr(from_file, name) == getattr(defaults, name), name


@pytest.mark.parametrize("folder", ["/", "~", "/etc", "/usr", "/home", "/root/.."])
def test_a_broad_read_root_needs_the_explicit_setting(folder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAN_MCP_ALLOWED_DIRS", folder)
    with pytest.raises(WanError) as caught:
        load_settings()
    assert "WAN_MCP_ALLOW_BROAD_DIRS=1" in str(caught.value) and "could upload any file" in str(caught.value)
    monkeypatch.setenv("WAN_MCP_ALLOW_BROAD_DIRS", "1")
    assert load_settings().allowed_dirs == [Path(folder)]


def test_home_set_to_root_never_widens_the_default_to_the_whole_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/")
    s = load_settings()
    assert Path("/") not in s.read_roots and s.resolved_inbox_dir.name == "wan-mcp"
    monkeypatch.setenv("WAN_MCP_ALLOWED_DIRS", "~")  # ~ is / here
    with pytest.raises(WanError, match="root of a file system"):
        load_settings()


def test_a_specific_folder_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAN_MCP_ALLOWED_DIRS", str(tmp_path / "pictures"))
    assert load_settings().read_roots[0] == tmp_path / "pictures"
