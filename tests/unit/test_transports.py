"""The HTTP lock-down rules, without a socket: bind refusal, allowlists, tokens, log redaction.

The same rules over real HTTP (401/421/403/413, refusal through the CLI) are in tests/e2e/test_http.py.
"""

from __future__ import annotations

import logging
import stat
import sys
from pathlib import Path

import pytest

from wan_mcp.cli import RedactingFormatter
from wan_mcp.config import load_settings
from wan_mcp.errors import ErrorCode, WanError, redact
from wan_mcp.server.principals import Principals
from wan_mcp.server.transports import (
    MIN_TOKEN_CHARS,
    check_bind,
    http_tokens,
    is_loopback,
    transport_security,
)

pytestmark = pytest.mark.anyio
TOKEN_A = "token-A-0123456789abcdef0123456789abcdef"
TOKEN_B = "token-B-fedcba9876543210fedcba9876543210"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "wan.example.com", "::ffff:10.0.0.1"])
def test_non_loopback_hosts_need_a_token(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(WanError) as caught:
        check_bind(load_settings(), host)
    err = caught.value
    assert err.code is ErrorCode.CONFIG and host in err.message
    assert "WAN_MCP_HTTP_TOKEN" in (err.hint or "") and "127.0.0.1" in (err.hint or "")
    check_bind(load_settings(http_token=TOKEN_A), host)  # with a token: fine


def test_loopback_needs_no_token() -> None:
    check_bind(load_settings(), "127.0.0.1")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "192.168.1.5", "fd00::5"])
def test_rebinding_protection_is_always_on(host: str) -> None:
    security = transport_security(load_settings(), host, 8000)
    assert security.enable_dns_rebinding_protection
    hosts = security.allowed_hosts
    assert "127.0.0.1:8000" in hosts and "localhost:8000" in hosts and "[::1]:8000" in hosts
    assert not any(h.startswith(("0.0.0.0", "[::]", "::")) or h == "*" for h in hosts)
    assert all(o.startswith("http://") and "*" not in o for o in security.allowed_origins)


def test_the_bound_name_is_allowed_and_ipv6_is_bracketed() -> None:
    assert "192.168.1.5:8000" in transport_security(load_settings(), "192.168.1.5", 8000).allowed_hosts
    v6 = transport_security(load_settings(), "fd00::5", 8000)
    assert "[fd00::5]:8000" in v6.allowed_hosts and "http://[fd00::5]:8000" in v6.allowed_origins


def test_configured_hosts_and_origins_are_added() -> None:
    settings = load_settings(
        allowed_hosts="wan.example.com,proxy.internal:443,[fd00::7]", allowed_origins="https://app.example.com"
    )
    security = transport_security(settings, "0.0.0.0", 8000)
    hosts = security.allowed_hosts
    assert {"wan.example.com", "wan.example.com:*", "proxy.internal:443", "[fd00::7]", "[fd00::7]:*"} <= set(hosts)
    assert "proxy.internal:443:*" not in hosts
    assert "https://app.example.com" in security.allowed_origins


async def test_every_token_is_accepted_and_nothing_else() -> None:
    verifier = Principals(static_tokens=[TOKEN_A, TOKEN_B], tenants_file=None)
    for token in (TOKEN_A, TOKEN_B):
        access = await verifier.verify_token(token)
        assert access is not None and access.scopes == ["wan"]
        assert token not in access.model_dump_json()  # the principal does not carry the secret
    for token in ("", TOKEN_A[:-1], TOKEN_A + "x", TOKEN_B.upper(), f"{TOKEN_A},{TOKEN_B}", "é" * 10):
        assert await verifier.verify_token(token) is None


def test_tokens_from_env_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAN_MCP_HTTP_TOKEN", f" {TOKEN_A} , {TOKEN_B} ,")
    tokens = [t.get_secret_value() for t in load_settings().http_token]
    assert tokens == [TOKEN_A, TOKEN_B]


def test_body_cap_default_fits_a_10_mib_image_as_base64() -> None:
    cap = load_settings().max_request_body_bytes
    base64_of_10_mib = 4 * -(-10 * 1024**2 // 3)
    assert cap == 16 * 1024**2 and base64_of_10_mib + 64 * 1024 < cap


def test_log_lines_never_carry_a_registered_secret() -> None:
    secret = "sk-redact-me-0123456789abcdef"
    load_settings(api_key=secret)  # registers it
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise RuntimeError(f"boom with {secret}")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "key=%s", (secret,), sys.exc_info())
    line = formatter.format(record)
    assert secret not in line and "key=***" in line and "boom with ***" in line


def test_with_no_token_configured_one_is_made_once_private_and_reused(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    tokens, path = http_tokens(settings)
    assert path == tmp_path / "data" / "http-token" and path is not None
    assert len(tokens) == 1 and len(tokens[0]) >= MIN_TOKEN_CHARS
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert http_tokens(settings) == (tokens, path)  # the same token at the next start
    assert redact(f"x {tokens[0]} y") == "x *** y"  # and it never reaches a log line


def test_short_tokens_are_refused() -> None:
    with pytest.raises(WanError) as caught:
        http_tokens(load_settings(http_token="short-but-not-32-characters"))
    assert (
        caught.value.code is ErrorCode.CONFIG and "32" in caught.value.message and "token_urlsafe" in str(caught.value)
    )
    assert http_tokens(load_settings(http_token=TOKEN_A)) == ([TOKEN_A], None)


def test_tenants_or_oauth_open_the_network_and_no_token_is_generated_beside_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wan_mcp.doctor import _tenants_check
    from wan_mcp.server.tenants_file import TenantEntry, add_tenant

    with pytest.raises(WanError):
        check_bind(load_settings(data_dir=tmp_path), "0.0.0.0")
    oauth = load_settings(data_dir=tmp_path, oauth_issuer="https://id.example.com")
    check_bind(oauth, "0.0.0.0")
    assert http_tokens(oauth) == ([], None) and not (tmp_path / "http-token").exists()
    assert _tenants_check(oauth)[0] is True and "OAuth sign-in from https://id.example.com" in _tenants_check(oauth)[2]

    add_tenant(tmp_path / "tenants.json", TenantEntry("alice", api_key_env="ALICE_TOAPIS_KEY"))
    settings = load_settings(data_dir=tmp_path)
    check_bind(settings, "0.0.0.0")
    assert http_tokens(settings) == ([], None)
    ok, label, detail = _tenants_check(settings)
    assert (ok, label) == (False, "tenants") and "$ALICE_TOAPIS_KEY" in detail and "set them" in detail
    with pytest.raises(WanError) as refused:  # the server refuses to start without the tenant's key
        Principals(static_tokens=[], tenants_file=tmp_path / "tenants.json")
    assert refused.value.code is ErrorCode.CONFIG and "ALICE_TOAPIS_KEY" in (refused.value.hint or "")
    monkeypatch.setenv("ALICE_TOAPIS_KEY", "sk-alice-0123456789")
    assert _tenants_check(settings)[0] is True
    Principals(static_tokens=[], tenants_file=tmp_path / "tenants.json")


async def test_doctor_names_the_journal_and_its_failure(tmp_path: Path) -> None:
    from wan_mcp.doctor import _journal_check

    ok, _, detail = await _journal_check(load_settings(data_dir=tmp_path))
    assert ok is True and detail.startswith("SQLite")
    ok, _, detail = await _journal_check(
        load_settings(data_dir=tmp_path, database_url="postgresql://nobody:pw-not-shown@127.0.0.1:1/wan")
    )
    assert ok is False and "cannot be reached" in detail and "pw-not-shown" not in detail
    assert "WAN_MCP_DATABASE_URL" in detail
