"""Streamed, capped, atomic downloads against a real local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx2
import pytest

from wan_mcp.core.boundary import UrlPolicy, download_to
from wan_mcp.errors import ErrorCode, WanError

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]

BODY = bytes(range(256)) * 400  # 102,400 bytes
BIG = 3_000_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def _redirect(self, location: str, code: int = 302) -> None:
        self.send_response(code)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        Handler.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        path = self.path.split("?", 1)[0]
        if path == "/file.mp4":
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif path == "/big.mp4":
            self.send_response(200)
            self.send_header("Content-Length", str(BIG))
            self.end_headers()
            self.wfile.write(b"\x00" * BIG)
        elif path == "/no-length-big.mp4":  # HTTP/1.0, body until close, no Content-Length
            self.send_response(200)
            self.end_headers()
            for _ in range(BIG // 65536 + 1):
                try:
                    self.wfile.write(b"\x00" * 65536)
                except OSError:
                    return
        elif path == "/lying.mp4":  # promises more than it sends
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:1000])
            self.close_connection = True
        elif path == "/redirect-ok":
            self._redirect("/file.mp4?sig=abc", 307)
        elif path == "/redirect-relative-chain":
            self._redirect("redirect-ok", 301)
        elif path == "/redirect-private":
            self._redirect("http://10.0.0.1/x.mp4")
        elif path == "/redirect-metadata":
            self._redirect("http://169.254.169.254/latest/meta-data/")
        elif path == "/redirect-file":
            self._redirect("file:///etc/passwd")
        elif path == "/loop-a":
            self._redirect("/loop-b")
        elif path == "/loop-b":
            self._redirect("/loop-a")
        elif path.startswith("/hop/"):
            self._redirect(f"/hop/{int(path.rsplit('/', 1)[1]) + 1}")
        elif path in ("/gone-404", "/gone-410"):
            code = int(path[-3:])
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/error-500":
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/slow.mp4":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            deadline = time.monotonic() + 5
            try:
                while time.monotonic() < deadline:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                return
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    # A misconfigured shared client with a default Authorization header: it must still not leak.
    async with httpx2.AsyncClient(headers={"Authorization": "Bearer sk-must-not-leak"}, trust_env=False) as c:
        yield c


POLICY = UrlPolicy(["127.0.0.1"])


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_normal_file(server: str, http: httpx2.AsyncClient, tmp_path: Path) -> None:
    Handler.seen.clear()
    dest = tmp_path / "task-1.mp4"
    result = await download_to(http, f"{server}/file.mp4?token=secret", dest, max_bytes=1 << 20, policy=POLICY)
    assert result.path == dest and dest.read_bytes() == BODY
    assert result.sha256 == hashlib.sha256(BODY).hexdigest()
    assert result.size_bytes == len(BODY) and result.content_type == "video/mp4"
    assert _leftovers(tmp_path) == ["task-1.mp4"]  # no .part left
    assert (dest.stat().st_mode & 0o777) == 0o600
    ((_, headers),) = Handler.seen
    assert "authorization" not in headers and "cookie" not in headers


async def test_existing_stale_part_is_replaced(server: str, http: httpx2.AsyncClient, tmp_path: Path) -> None:
    dest = tmp_path / "t.mp4"
    (tmp_path / "t.mp4.part").write_bytes(b"stale from a crash")
    await download_to(http, f"{server}/file.mp4", dest, max_bytes=1 << 20, policy=POLICY)
    assert dest.read_bytes() == BODY and _leftovers(tmp_path) == ["t.mp4"]


async def test_redirect_to_allowed_path_is_followed(server: str, http: httpx2.AsyncClient, tmp_path: Path) -> None:
    Handler.seen.clear()
    result = await download_to(
        http, f"{server}/redirect-relative-chain", tmp_path / "r.mp4", max_bytes=1 << 20, policy=POLICY
    )
    assert result.sha256 == hashlib.sha256(BODY).hexdigest()
    assert [p for p, _ in Handler.seen] == ["/redirect-relative-chain", "/redirect-ok", "/file.mp4?sig=abc"]
    assert all("authorization" not in h for _, h in Handler.seen)


@pytest.mark.parametrize(
    ("path", "code", "fragment"),
    [
        ("/big.mp4", ErrorCode.DOWNLOAD_FAILED, "over the 1,000,000-byte limit"),
        ("/no-length-big.mp4", ErrorCode.DOWNLOAD_FAILED, "grew past"),
        ("/lying.mp4", ErrorCode.DOWNLOAD_FAILED, "failed"),
        ("/redirect-private", ErrorCode.URL_BLOCKED, "10.0.0.1"),
        ("/redirect-metadata", ErrorCode.URL_BLOCKED, "metadata"),
        ("/redirect-file", ErrorCode.URL_BLOCKED, "only http"),
        ("/loop-a", ErrorCode.DOWNLOAD_FAILED, "loop"),
        ("/hop/0", ErrorCode.DOWNLOAD_FAILED, "more than 5 redirects"),
        ("/gone-404", ErrorCode.DOWNLOAD_FAILED, "expired or vanished"),
        ("/gone-410", ErrorCode.DOWNLOAD_FAILED, "expired or vanished"),
        ("/error-500", ErrorCode.DOWNLOAD_FAILED, "HTTP 500"),
    ],
)
async def test_failures_leave_nothing(
    server: str, http: httpx2.AsyncClient, tmp_path: Path, path: str, code: ErrorCode, fragment: str
) -> None:
    with pytest.raises(WanError) as caught:
        await download_to(
            http,
            f"{server}{path}?X-Signature=s3cr3t",
            tmp_path / "x.mp4",
            max_bytes=1_000_000,
            policy=POLICY,
            timeout=10,
        )
    err = caught.value
    assert err.code is code, str(err)
    assert fragment in err.message
    assert "s3cr3t" not in str(err)  # the signed query string is never echoed
    assert f"{server}{path}" in err.message  # the URL (minus query) is
    assert err.hint
    assert _leftovers(tmp_path) == []


async def test_blocked_first_hop_never_connects(http: httpx2.AsyncClient, tmp_path: Path) -> None:
    with pytest.raises(WanError) as caught:
        await download_to(http, "http://10.0.0.1/x.mp4", tmp_path / "x.mp4", max_bytes=100, policy=POLICY)
    assert caught.value.code is ErrorCode.URL_BLOCKED
    assert _leftovers(tmp_path) == []


async def test_slow_server_hits_the_deadline(server: str, http: httpx2.AsyncClient, tmp_path: Path) -> None:
    with pytest.raises(WanError) as caught:
        await download_to(http, f"{server}/slow.mp4", tmp_path / "s.mp4", max_bytes=1 << 20, policy=POLICY, timeout=0.5)
    assert caught.value.code is ErrorCode.TIMEOUT
    assert "get_task_status" in (caught.value.hint or "")  # the deadline fired: a TIMEOUT, not a hang
    assert _leftovers(tmp_path) == []


def _readonly_dir(kind: str, tmp_path: Path) -> Path:
    if kind == "chmod":
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            pytest.skip("root ignores directory permissions")
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        return folder
    if kind == "sysfs":
        if not sys.platform.startswith("linux") or not Path("/sys/kernel").is_dir():
            pytest.skip("needs Linux sysfs")
        return Path("/sys/kernel")
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    return blocker


@pytest.mark.parametrize("kind", ["chmod", "sysfs", "parent-is-a-file"])
async def test_unwritable_output_dir(server: str, http: httpx2.AsyncClient, tmp_path: Path, kind: str) -> None:
    folder = _readonly_dir(kind, tmp_path)
    try:
        with pytest.raises(WanError) as caught:
            await download_to(http, f"{server}/file.mp4", folder / "w.mp4", max_bytes=1 << 20, policy=POLICY)
        err = caught.value
        assert err.code is ErrorCode.DOWNLOAD_FAILED
        assert str(folder) in err.message and "WAN_MCP_OUTPUT_DIR" in (err.hint or "")
        assert not (folder / "w.mp4").exists()
    finally:
        if kind == "chmod":
            folder.chmod(0o700)


# --- DNS rebinding (issue 9): the connection goes to the address that was checked -----------------


async def test_a_rebinding_name_is_fetched_from_the_address_that_passed_the_check(
    http: httpx2.AsyncClient, tmp_path: Path
) -> None:
    import asyncio

    hits: dict[str, int] = {"127.0.0.2": 0, "127.0.0.1": 0}

    def handler(address: str) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            hits[address] += 1
            assert b"\r\nhost: rebind.test:" in head.lower()  # the name still travels as the Host
            body = b"the approved host's file"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            writer.close()

        return handle

    allowed = await asyncio.start_server(handler("127.0.0.2"), "127.0.0.2", 0)
    port = allowed.sockets[0].getsockname()[1]
    internal = await asyncio.start_server(handler("127.0.0.1"), "127.0.0.1", port)
    answers = iter([["127.0.0.2"], ["127.0.0.1"]])  # public-looking for the check, internal afterwards

    async def rebinding(host: str, _port: int) -> list[str]:
        assert host == "rebind.test"
        return next(answers, ["127.0.0.1"])

    policy = UrlPolicy(["127.0.0.2/32"], resolver=rebinding)
    try:
        result = await download_to(
            http, f"http://rebind.test:{port}/v.mp4", tmp_path / "v.mp4", max_bytes=1000, policy=policy
        )
    finally:
        allowed.close()
        internal.close()
    assert result.path.read_bytes() == b"the approved host's file"
    assert hits == {"127.0.0.2": 1, "127.0.0.1": 0}
