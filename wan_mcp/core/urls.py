"""URL policy (SSRF guard), streamed result downloads, and ``data:`` URL decoding.

A URL reaching us may have been written by a prompt-injected model or planted in a
gateway response, so every fetch is checked first: http(s) only, no credentials, and
every address the host resolves to must be public unless the operator allow-listed it.
Redirects are followed by hand so each hop is checked again, and the peer we actually
connected to is checked once more (a DNS answer can change between check and connect).

Downloads stream into a private ``.part`` file with a size cap and an overall deadline,
then ``fsync`` + ``os.replace``: a result file either exists complete or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import os
import re
import socket
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx2

from wan_mcp.core import offload
from wan_mcp.errors import ErrorCode, WanError

__all__ = ["DownloadResult", "UrlPolicy", "display_url", "download_to"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud metadata endpoints: refused even if a CIDR allow-list entry happens to cover them.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("169.254.170.2"),  # ECS task metadata
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud metadata
        ipaddress.ip_address("fd00:ec2::254"),
    }
)

#: Belt and braces over ``ipaddress.is_global``, whose tables changed across Python patches.
_BLOCKED_NETS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_RESOLVE_TIMEOUT = 10.0
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")
_WRITE_BATCH = 1 << 20

_REDIRECTS = {301, 302, 303, 307, 308}


def display_url(url: str) -> str:
    """The URL as we may show it: no credentials, no query (signed URLs carry tokens there)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        shown = f"{parts.scheme}://{host}{port}{parts.path}"
        if parts.query:
            shown += "?..."
    except ValueError:
        shown = url.split("?", 1)[0].split("#", 1)[0]
        if "@" in shown:
            shown = shown.rsplit("@", 1)[1]
    return shown if len(shown) <= 200 else shown[:160] + "..." + shown[-30:]


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address tunnels to, if any (mapped, compat, 6to4, NAT64, Teredo)."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    packed = addr.packed
    if addr in _NAT64:
        return ipaddress.IPv4Address(packed[-4:])
    if packed[:12] == bytes(12) and int(addr) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed[-4:])
    return None


def _is_blocked(addr: IPAddress) -> bool:
    if isinstance(addr, ipaddress.IPv6Address):
        inner = _embedded_ipv4(addr)
        if inner is not None and _is_blocked(inner):
            return True
    if any(addr in net for net in _BLOCKED_NETS if net.version == addr.version):
        return True
    return (
        not addr.is_global
        or addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
    )


def _is_metadata(addr: IPAddress) -> bool:
    if addr in METADATA_ADDRESSES:
        return True
    return isinstance(addr, ipaddress.IPv6Address) and _embedded_ipv4(addr) in METADATA_ADDRESSES


def _literal_ip(host: str) -> IPAddress | None:
    """Parse every literal form a resolver would accept: dotted, decimal, octal, hex, short."""
    bare = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(bare) and any(c.isdigit() for c in bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


class UrlPolicy:
    """Decides whether the server may fetch a URL (SSRF guard)."""

    def __init__(self, allow_private: Sequence[str] = ()) -> None:
        hosts: set[str] = set()
        nets: list[IPNetwork] = []
        for entry in allow_private:
            text = entry.strip()
            if not text:
                continue
            try:
                nets.append(ipaddress.ip_network(text.strip("[]"), strict=False))
            except ValueError:
                hosts.add(text.lower().rstrip("."))
        self._hosts = frozenset(hosts)
        self._nets = tuple(nets)

    def address_allowed(self, addr: IPAddress) -> bool:
        """Whether connecting to ``addr`` is acceptable under this policy."""
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            return self.address_allowed(addr.ipv4_mapped)  # the socket really goes to the IPv4 host
        if _is_metadata(addr):
            return False
        if not _is_blocked(addr):
            return True
        return any(addr in net for net in self._nets if net.version == addr.version)

    def _blocked(self, url: str, field: str, why: str) -> WanError:
        return WanError(
            ErrorCode.URL_BLOCKED,
            f"the URL {display_url(url)} is not allowed: {why}",
            field=field,
            hint="use a public http(s) URL, or pass a local file path inside the allowed folders; "
            "an operator can allow a private host with WAN_MCP_ALLOW_PRIVATE_URLS",
        )

    async def check(self, url: str, *, field: str) -> None:
        """Refuse ``url`` (``WanError(URL_BLOCKED)``) unless every address it reaches is allowed."""
        await self.resolve(url, field=field)

    async def resolve(self, url: str, *, field: str) -> frozenset[IPAddress]:
        """Like :meth:`check`, returning the addresses that were approved (empty for an
        allow-listed host name, which is trusted whatever it resolves to)."""
        if not isinstance(url, str) or not url.strip():
            raise self._blocked(str(url), field, "it is empty")
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
            raise self._blocked(url, field, "it contains whitespace or control characters")
        try:
            parsed = httpx2.URL(url)
        except (httpx2.InvalidURL, ValueError, TypeError) as exc:
            # The client would refuse it too, but say why when it is an IP in disguise.
            try:
                host = urlsplit(url).hostname or ""
            except ValueError:
                host = ""
            literal = _literal_ip(host) if host else None
            if literal is not None and not self.address_allowed(literal):
                raise self._blocked(url, field, f"it points at the private address {literal}") from None
            raise self._blocked(url, field, f"it is not a valid URL ({exc})") from None
        scheme = parsed.scheme.lower()
        if scheme not in ("http", "https"):
            raise self._blocked(url, field, f"only http:// and https:// URLs are fetched, not {scheme or '?'}:")
        if parsed.userinfo:
            raise self._blocked(url, field, "URLs with a user name or password are refused")
        try:
            host = parsed.raw_host.decode("ascii").lower()
        except UnicodeDecodeError:
            raise self._blocked(url, field, "the host name is not valid") from None
        if not host:
            raise self._blocked(url, field, "it has no host")
        if host.rstrip(".") in self._hosts:
            return frozenset()
        literal = _literal_ip(host)
        bare = host.rstrip(".")
        if literal is not None:
            addresses: set[IPAddress] = {literal}
        elif bare == "localhost" or bare.endswith(".localhost"):  # RFC 6761: always loopback
            addresses = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
        else:
            addresses = await self._lookup(url, host, parsed.port or (443 if scheme == "https" else 80), field)
        for addr in sorted(addresses, key=str):
            if not self.address_allowed(addr):
                shown = "a cloud metadata address" if _is_metadata(addr) else "a private address"
                if literal is not None:
                    raise self._blocked(url, field, f"{addr} is {shown}")
                raise self._blocked(url, field, f"{host} resolves to {shown} ({addr})")
        return frozenset(addresses)

    async def _lookup(self, url: str, host: str, port: int, field: str) -> set[IPAddress]:
        try:
            with anyio.fail_after(_RESOLVE_TIMEOUT):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise self._blocked(url, field, f"resolving {host} took too long, so it cannot be checked") from None
        except (OSError, UnicodeError) as exc:
            raise self._blocked(url, field, f"the host {host} could not be resolved ({exc})") from None
        addresses: set[IPAddress] = set()
        for info in infos:
            raw = str(info[4][0]).split("%", 1)[0]
            try:
                addresses.add(ipaddress.ip_address(raw))
            except ValueError:
                raise self._blocked(url, field, f"{host} resolved to an unreadable address") from None
        if not addresses:
            raise self._blocked(url, field, f"the host {host} has no addresses")
        return addresses


# --- downloads ----------------------------------------------------------------------------


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
        request = http.build_request("GET", current)
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
                try:
                    nxt = str(response.url.join(response.headers["location"]))
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
