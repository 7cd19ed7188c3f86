"""The SSRF guard and data: URL decoding. No network: only literal IPs and "localhost" resolve."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from wan_mcp.core.arguments import Problem
from wan_mcp.core.boundary import UrlPolicy, display_url
from wan_mcp.core.request.sources import MAX_DATA_BYTES, decode_data_url
from wan_mcp.errors import ErrorCode, WanError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


SSRF_CORPUS = [
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/video.mp4",
    "http://127.1/",
    "http://127.255.255.254/",
    "http://localhost/",
    "http://localhost./",
    "http://LOCALHOST:9000/x",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://100.100.100.200/latest/meta-data/",
    "http://169.254.169.254/latest/meta-data/iam/",
    "http://169.254.1.1/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:7f00:1::]/",
    "http://[fd00::1]/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://[ff02::1]/",
    "http://0.0.0.0/",
    "http://0/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://198.18.0.1/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://017700000001/",
    "http://user:pass@example.com/",
    "http://user@example.com/",
    "https://:token@example.com/",
    "file:///etc/passwd",
    "ftp://example.com/file",
    "gopher://127.0.0.1:6379/_INFO",
    "dict://127.0.0.1:11211/",
    "javascript:alert(1)",
    "data:text/html,hi",
    "//example.com/x",
    "example.com/x",
    "http:///x",
    "",
    "http://exa mple.com/",
    "http://example.com/\r\nX-Injected: 1",
    "http://[::1",
]


@pytest.mark.parametrize("url", SSRF_CORPUS)
async def test_ssrf_corpus_is_blocked(url: str) -> None:
    with pytest.raises(WanError) as caught:
        await UrlPolicy().check(url, field="image_url")
    err = caught.value
    assert err.code is ErrorCode.URL_BLOCKED
    assert err.field == "image_url"
    assert err.hint


async def test_blocked_message_names_the_address_and_hides_credentials() -> None:
    with pytest.raises(WanError) as caught:
        await UrlPolicy().check("http://169.254.169.254/latest?token=abc", field="u")
    text = str(caught.value)
    assert "169.254.169.254" in text and "metadata" in text
    assert "token=abc" not in text
    with pytest.raises(WanError) as caught:
        await UrlPolicy().check("http://user:hunter22@example.com/", field="u")
    assert "hunter22" not in str(caught.value)


async def test_allow_list_lets_exactly_that_address_through() -> None:
    policy = UrlPolicy(["127.0.0.1"])
    await policy.check("http://127.0.0.1:1234/sim/video.mp4?sig=1", field="u")
    await policy.check("http://2130706433/", field="u")  # the same address, spelled differently
    for url in (
        "http://127.0.0.2/",
        "http://10.0.0.1/",
        "http://[::1]/",
        "http://169.254.169.254/",
        "http://user:x@127.0.0.1/",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
    ):
        with pytest.raises(WanError):
            await policy.check(url, field="u")


async def test_allow_list_cidr_and_hostname() -> None:
    policy = UrlPolicy(["10.1.0.0/16", "localhost", "", "  "])
    await policy.check("http://10.1.2.3/", field="u")
    await policy.check("http://localhost:8000/", field="u")
    with pytest.raises(WanError):
        await policy.check("http://10.2.0.1/", field="u")


async def test_metadata_is_never_allowed_by_a_cidr() -> None:
    policy = UrlPolicy(["169.254.0.0/16", "fd00::/8"])
    await policy.check("http://169.254.1.1/", field="u")
    for url in ("http://169.254.169.254/", "http://[fd00:ec2::254]/", "http://[::ffff:169.254.169.254]/"):
        with pytest.raises(WanError, match="metadata"):
            await policy.check(url, field="u")


async def test_public_literals_pass() -> None:
    policy = UrlPolicy()
    await policy.check("https://8.8.8.8/x.mp4", field="u")
    await policy.check("http://[2606:4700:4700::1111]/", field="u")
    await policy.check("https://1.1.1.1:8443/path?q=1#frag", field="u")


def test_address_allowed_covers_tunnelled_ipv4() -> None:
    policy = UrlPolicy()
    for text in (
        "::ffff:10.0.0.1",
        "2002:a00:1::",
        "64:ff9b::10.0.0.1",
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",
    ):
        assert not policy.address_allowed(ipaddress.ip_address(text)), text
    assert policy.address_allowed(ipaddress.ip_address("::ffff:8.8.8.8"))


def test_display_url_strips_secrets() -> None:
    shown = display_url("https://u:p@files.example.com:8443/a/b.mp4?X-Amz-Signature=deadbeef#x")
    assert shown == "https://files.example.com:8443/a/b.mp4?..."
    assert "deadbeef" not in display_url("not a url?sig=deadbeef")
    assert len(display_url("https://x.com/" + "a" * 5000)) < 250


# --- data: URLs: the ONE decoder (generate_video's image and upload_image's data) ---------------


def _decoded(value: str) -> tuple[bytes, str]:
    try:
        return decode_data_url(value, field="data")
    except Problem as problem:
        raise problem.error() from None


def test_decode_data_url_roundtrip() -> None:
    payload = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    encoded = base64.b64encode(payload).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    data, media_type = _decoded(f"data:Image/PNG;base64,{wrapped}")
    assert data == payload and media_type == "image/png"


def test_url_safe_unpadded_base64_is_accepted() -> None:
    payload = bytes(range(250, 256)) * 3 + b"\xff"
    encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    assert "-" in encoded or "_" in encoded
    assert _decoded(f"data:image/png;base64,{encoded}")[0] == payload


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("data:image/png;base64", "not base64-encoded"),
        ("data:image/png,hello", "not base64-encoded"),
        ("data:text/html;base64,PGgxPg==", "not an image"),
        ("data:;base64,AAAA", "not an image"),
        ("data:image/png;base64,A", "whole number of bytes"),
        ("data:image/png;base64,AA!A", "not base64"),
        ("data:image/png;base64,", "no image bytes"),
        ("data:image/png;base64,ÀÀÀÀ", "not base64"),
    ],
)
def test_decode_data_url_errors(value: str, fragment: str) -> None:
    with pytest.raises(WanError, match=fragment) as caught:
        _decoded(value)
    assert caught.value.code is ErrorCode.INVALID_REQUEST and caught.value.field == "data"


def test_decode_data_url_size_cap_before_decoding() -> None:
    value = "data:image/png;base64," + "A" * (MAX_DATA_BYTES * 4 // 3 + 8)
    with pytest.raises(WanError, match="limit"):
        _decoded(value)
