"""Streamed result downloads: every hop checked by the URL policy, a size cap, one deadline.

Downloads stream into a private ``.part`` file with a size cap and an overall deadline,
then ``fsync`` + ``os.replace``: a result file either exists complete or not at all.
Redirects are followed by hand so each hop is checked again, and the peer we actually
connected to is checked once more (a DNS answer can change between check and connect).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import os
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2

from wan_mcp.core import offload
from wan_mcp.core.boundary.url_policy import IPAddress, UrlPolicy, display_url
from wan_mcp.errors import ErrorCode, WanError

__all__ = ["DownloadResult", "download_to"]

_WRITE_BATCH = 1 << 20
_REDIRECTS = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    sha256: str
    size_bytes: int
    content_type: str | None


_RETRY_HINT = "the URL stays valid until expires_at; call get_task_status again to retry the download"


def _failed(url: str, why: str, *, hint: str = _RETRY_HINT, code: ErrorCode = ErrorCode.DOWNLOAD_FAILED) -> WanError:
    return WanError(code, f"downloading {display_url(url)} failed: {why}", hint=hint)


def _uses_proxy(url: httpx2.URL) -> bool:
    """Whether the environment routes this URL through a proxy (then the peer is the proxy)."""
    proxies = urllib.request.getproxies()
    if not any(k in proxies for k in (url.scheme, "all")):
        return False
    return not urllib.request.proxy_bypass(url.host)


def _peer_address(response: httpx2.Response) -> IPAddress | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    try:
        peer = stream.get_extra_info("server_addr")
    except Exception:  # a transport without socket info (e.g. ASGI/mock): nothing to check
        return None
    if not isinstance(peer, tuple) or not peer:
        return None
    try:
        return ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return None


class _PartFile:
    """The private ``.part`` file a download streams into; removed unless committed."""

    def __init__(self, url: str, dest: Path) -> None:
        self.url = url
        self.dest = dest
        self.part = dest.with_name(dest.name + ".part")
        self.fd: int | None = None
        self.opened = False
        self.committed = False
        self._buffer: list[bytes] = []
        self._buffered = 0

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        try:
            self.fd = os.open(self.part, flags, 0o600)
        except FileExistsError:  # left by a crashed run; never written through (O_NOFOLLOW + EXCL)
            self.part.unlink()
            self.fd = os.open(self.part, flags, 0o600)

    async def _io(self, step: Callable[[], Awaitable[None]]) -> None:
        try:
            await step()
        except OSError as exc:
            raise _disk_error(self.url, self.dest, exc) from None

    async def open(self) -> None:
        self.opened = True
        await self._io(lambda: offload.run_sync(self._open))

    def _write_all(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    async def write(self, chunk: bytes) -> None:
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= _WRITE_BATCH:
            await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            await self._io(lambda: offload.run_sync(self._write_all, data))

    def _commit(self) -> None:
        assert self.fd is not None
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        self.part.replace(self.dest)
        if hasattr(os, "O_DIRECTORY"):
            with contextlib.suppress(OSError):  # make the rename itself durable; best effort
                dfd = os.open(self.dest.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)

    async def commit(self) -> None:
        await self.flush()
        await self._io(lambda: offload.run_sync(self._commit))
        self.committed = True

    def discard(self) -> None:
        """Synchronous on purpose: it runs during cancellation, where awaiting is not allowed."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        with contextlib.suppress(OSError):
            self.part.unlink()


def _disk_error(url: str, dest: Path, exc: OSError) -> WanError:
    if exc.errno == errno.ENOSPC or exc.errno == getattr(errno, "EDQUOT", -1):
        why = f"the disk holding {dest.parent} is full"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = f"the output folder {dest.parent} is not writable ({exc.strerror})"
    else:
        why = f"writing to {dest.parent} failed ({exc.strerror})"
    return _failed(
        url,
        why,
        hint="free disk space or set WAN_MCP_OUTPUT_DIR to a writable folder; " + _RETRY_HINT,
    )


async def download_to(
    http: httpx2.AsyncClient,
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    policy: UrlPolicy,
    timeout: float = 300.0,  # noqa: ASYNC109 - the contract: one overall deadline, enforced inside
    max_redirects: int = 5,
    verify: Callable[[Path], str | None] | None = None,
) -> DownloadResult:
    """Fetch ``url`` into ``dest`` atomically, checking every hop with ``policy``.

    ``verify`` (blocking, run in a worker thread) is shown the complete ``.part`` file
    before it is committed and returns why the content is unusable, or None; a refusal
    is a DOWNLOAD_FAILED like any other, so the caller can simply retry.

    Raises ``WanError`` with DOWNLOAD_FAILED, URL_BLOCKED or TIMEOUT; never leaves a
    partial file behind.
    """
    part = _PartFile(url, dest)
    try:
        with anyio.fail_after(timeout):
            result = await _download(
                http, url, part, max_bytes=max_bytes, policy=policy, max_redirects=max_redirects, verify=verify
            )
    except TimeoutError:
        raise _failed(url, f"it did not finish within {timeout:g} s", code=ErrorCode.TIMEOUT) from None
    except httpx2.TimeoutException:
        raise _failed(url, "the file host stopped responding", code=ErrorCode.TIMEOUT) from None
    except httpx2.HTTPError as exc:
        raise _failed(url, f"network error ({exc.__class__.__name__})") from None
    finally:
        if part.opened and not part.committed:
            part.discard()
    return result


async def _download(
    http: httpx2.AsyncClient,
    url: str,
    part: _PartFile,
    *,
    max_bytes: int,
    policy: UrlPolicy,
    max_redirects: int,
    verify: Callable[[Path], str | None] | None,
) -> DownloadResult:
    current = url
    seen: set[str] = set()
    for _hop in range(max_redirects + 1):
        try:
            approved = await policy.resolve(current, field="video_url")
        except WanError as exc:
            why = exc.message.split(" is not allowed: ", 1)[-1]
            if current != url:
                why = f"it redirected to {display_url(current)}, which is refused: {why}"
            raise _failed(
                url,
                why,
                code=ErrorCode.URL_BLOCKED,
                hint="the server may not fetch from that address; if the host is yours (e.g. a local "
                "simulator), allow it with WAN_MCP_ALLOW_PRIVATE_URLS",
            ) from None
        seen.add(current)
        request = _pinned_request(http, current, approved)
        for name in ("authorization", "proxy-authorization", "cookie"):
            if name in request.headers:
                del request.headers[name]
        response = await http.send(request, stream=True, follow_redirects=False, auth=None)
        try:
            peer = _peer_address(response)
            if peer is not None and approved and not policy.address_allowed(peer) and not _uses_proxy(request.url):
                raise _failed(
                    url,
                    f"the connection went to the private address {peer}",
                    code=ErrorCode.URL_BLOCKED,
                    hint="the host's DNS answer changed between check and connect; do not retry",
                )
            status = response.status_code
            if status in _REDIRECTS and "location" in response.headers:
                try:  # relative to the URL as named, not to the pinned address
                    nxt = str(httpx2.URL(current).join(response.headers["location"]))
                except (httpx2.InvalidURL, ValueError):
                    raise _failed(url, "the file host sent an invalid redirect") from None
                if nxt in seen:
                    raise _failed(url, "the file host redirects in a loop")
                current = nxt
                continue
            if status in (404, 410):
                raise _failed(
                    url,
                    f"the result URL expired or vanished (HTTP {status})",
                    hint="call get_task_status: if the task is still listed, its URL may have "
                    "been refreshed; otherwise generate the video again",
                )
            if status != 200:
                raise _failed(url, f"the file host answered HTTP {status}")
            return await _stream_body(url, response, part, max_bytes, verify)
        finally:
            await response.aclose()
    raise _failed(url, f"more than {max_redirects} redirects")


def _pinned_request(http: httpx2.AsyncClient, url: str, approved: frozenset[IPAddress]) -> httpx2.Request:
    """A GET that connects to an address the policy approved, not to a second DNS answer.

    Checking a name and then letting the client resolve it again leaves a window: a rebinding
    name answers a public address to the check and a private one to the connect. So the
    request goes to an approved address; the Host header and TLS (SNI and certificate
    checks) still use the name. Allow-listed names (``approved`` empty), literal addresses and
    proxied requests keep the URL as it is.
    """
    request = http.build_request("GET", url)
    target = request.url
    host = target.host
    if not approved or _uses_proxy(target) or _literal_host(host):
        return request
    address = sorted(approved, key=lambda a: (a.version, str(a)))[0]
    return http.build_request(
        "GET",
        target.copy_with(host=str(address)),
        headers={"Host": request.headers["host"]},
        extensions={"sni_hostname": host} if target.scheme == "https" else {},
    )


def _literal_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def _stream_body(
    url: str,
    response: httpx2.Response,
    part: _PartFile,
    max_bytes: int,
    verify: Callable[[Path], str | None] | None = None,
) -> DownloadResult:
    declared = response.headers.get("content-length")
    length: int | None = None
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            length = None
        if length is not None and length > max_bytes:
            raise _failed(
                url,
                f"the file is {length:,} bytes, over the {max_bytes:,}-byte limit",
                hint="raise WAN_MCP_MAX_DOWNLOAD_BYTES if the file is expected to be this large",
            )
    await part.open()
    digest = hashlib.sha256()
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise _failed(
                url,
                f"the file grew past the {max_bytes:,}-byte limit while downloading",
                hint="raise WAN_MCP_MAX_DOWNLOAD_BYTES if the file is expected to be this large",
            )
        digest.update(chunk)
        await part.write(chunk)
    encoded = response.headers.get("content-encoding", "identity").lower() not in ("", "identity")
    if length is not None and not encoded and size != length:
        raise _failed(url, f"the connection ended after {size:,} of {length:,} bytes")
    if verify is not None:
        await part.flush()
        problem = await offload.run_sync(verify, part.part)
        if problem is not None:
            raise _failed(url, f"the file host sent an unusable file: {problem}")
    await part.commit()
    return DownloadResult(
        path=part.dest,
        sha256=digest.hexdigest(),
        size_bytes=size,
        content_type=response.headers.get("content-type"),
    )
