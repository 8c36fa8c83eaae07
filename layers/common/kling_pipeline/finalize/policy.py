"""Which output URLs may be downloaded: https, allow-listed hosts, public addresses."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from urllib.parse import urlsplit

from ..errors import PermanentError, TransientError

METADATA_ADDRESS = ipaddress.ip_address("169.254.169.254")
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class RefusedUrl(PermanentError):
    """An output URL the download policy does not allow; nothing was requested from it."""

    default_code = "output_url_refused"


@dataclass(frozen=True)
class DownloadPolicy:
    """Where outputs may come from, and how much of them we accept."""

    allowed_hosts: tuple[str, ...]
    local_hosts: tuple[str, ...] = ()
    max_bytes: int = 2 * 1024**3
    timeout_s: float = 30.0
    max_redirects: int = 3
    #: Wall-clock budget of one output's whole download, resumes included; well inside the
    #: finalize function's 900 s so a slow drip ends as a retryable error, not a timeout.
    deadline_s: float = 600.0


@dataclass(frozen=True)
class Target:
    """A vetted URL: what to connect to, and which name to present for TLS and Host."""

    scheme: str
    host: str
    port: int
    path: str
    address: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv4-mapped, 6to4 and NAT64 addresses reach the IPv4 address they embed (a NAT64
        # gateway will happily forward to 10.x), so that address is the one to judge.
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in NAT64_WELL_KNOWN:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip in NAT64_LOCAL_USE:
            return False
    return ip.is_global and ip != METADATA_ADDRESS and not ip.is_multicast


def vet_url(url: str, policy: DownloadPolicy, resolver: Resolver = system_resolver) -> Target:
    """Refuses anything but https to an allow-listed host resolving to public addresses only.

    The connection later goes to the vetted address (with the host name kept for TLS), so a
    DNS answer that changes between check and use cannot redirect the download.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        raise RefusedUrl(f"output URL has no host: {url[:200]}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RefusedUrl(f"output URL has a bad port: {url[:200]}") from None
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    if f"{host}:{port}" in policy.local_hosts and parts.scheme in ("http", "https"):
        return Target(parts.scheme, host, port, path, host)
    if parts.scheme != "https":
        raise RefusedUrl(f"output URL must use https, got {parts.scheme or 'none'}: {host}")
    if not any(fnmatch(host, pattern.lower()) for pattern in policy.allowed_hosts):
        raise RefusedUrl(f"output host {host} is not on the allow-list")
    try:
        addresses = resolver(host, port)
    except OSError as exc:
        raise TransientError(f"could not resolve {host}: {exc}", code="dns_failure") from None
    if not addresses:
        raise TransientError(f"{host} resolved to no address", code="dns_failure")
    refused = [address for address in addresses if not _is_public(address)]
    if refused:
        raise RefusedUrl(f"output host {host} resolves to a non-public address {refused[0]}")
    return Target("https", host, port, path, addresses[0])
