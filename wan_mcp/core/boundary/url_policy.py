"""The URL policy (SSRF guard): which hosts the server may fetch from.

A URL reaching us may have been written by a prompt-injected model or planted in a
gateway response, so every fetch is checked first: http(s) only, no credentials, and
every address the host resolves to must be public unless the operator allow-listed it.
Redirects are followed by hand so each hop is checked again, and the peer we actually
connected to is checked once more (a DNS answer can change between check and connect).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import anyio
import httpx2

from wan_mcp.errors import ErrorCode, WanError

__all__ = ["IPAddress", "Resolver", "UrlPolicy", "display_url"]

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


#: Host name and port in, addresses (text) out; injectable so a test can play a rebinding DNS.
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


class UrlPolicy:
    """Decides whether the server may fetch a URL (SSRF guard)."""

    def __init__(self, allow_private: Sequence[str] = (), *, resolver: Resolver | None = None) -> None:
        self._resolver = resolver or _system_resolver
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
                raws = await self._resolver(host, port)
        except TimeoutError:
            raise self._blocked(url, field, f"resolving {host} took too long, so it cannot be checked") from None
        except (OSError, UnicodeError) as exc:
            raise self._blocked(url, field, f"the host {host} could not be resolved ({exc})") from None
        addresses: set[IPAddress] = set()
        for raw in raws:
            try:
                addresses.add(ipaddress.ip_address(raw))
            except ValueError:
                raise self._blocked(url, field, f"{host} resolved to an unreadable address") from None
        if not addresses:
            raise self._blocked(url, field, f"the host {host} has no addresses")
        return addresses
