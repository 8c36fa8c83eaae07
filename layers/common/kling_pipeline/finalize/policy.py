"""Which output URLs may be downloaded: https, allow-listed hosts, port 443, public addresses."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import PermanentError, TransientError

Resolver = Callable[[str, int], list[str]]

HTTPS_PORT = 443
#: IANA special-purpose IPv4 blocks that are not the public internet (RFC 6890 and updates).
NON_PUBLIC_V4 = tuple(
    ipaddress.IPv4Network(block)
    for block in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
    )
)
#: Only this block of IPv6 is globally routed unicast (RFC 4291); the rest is special.
GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_LOW_32 = 0xFFFFFFFF
_ISATAP_MARKER = 0x5EFE
#: DNS label: letters, digits and inner hyphens, 1..63 characters.
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
#: Suffixes under which anyone can obtain a host name: a wildcard below them guards nothing.
SHARED_SUFFIXES = (
    "cloudfront.net",
    "amazonaws.com",
    "azureedge.net",
    "akamaized.net",
    "fastly.net",
    "appspot.com",
    "github.io",
    "herokuapp.com",
    "netlify.app",
    "pages.dev",
    "r2.dev",
    "vercel.app",
    "workers.dev",
)


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class RefusedUrl(PermanentError):
    """An output URL the download policy does not allow; nothing was requested from it."""

    default_code = "output_url_refused"


class InvalidHostPattern(PermanentError):
    """An allow-list entry that is not a host name or a safe `*.suffix` wildcard."""

    default_code = "invalid_output_host_pattern"


def check_host_pattern(pattern: str) -> str:
    """Returns the pattern lower-cased, or refuses it.

    An entry is an exact host name, or `*.` followed by a suffix of at least two labels that is
    not a shared hosting domain: `*`, `*.com` or `*.cloudfront.net` would let anyone serve
    "outputs", so they are refused rather than silently widening the guard.
    """
    lowered = pattern.strip().lower().rstrip(".")
    wildcard = lowered.startswith("*.")
    name = lowered[2:] if wildcard else lowered
    labels = name.split(".")
    if not name or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidHostPattern(f"output host pattern {pattern!r} is not a host or *.suffix")
    if wildcard and len(labels) < 2:
        raise InvalidHostPattern(f"output host pattern {pattern!r} covers a whole top-level domain")
    if wildcard and any(name == s or name.endswith(f".{s}") for s in SHARED_SUFFIXES):
        raise InvalidHostPattern(
            f"output host pattern {pattern!r} covers a domain where anyone can get a host name;"
            " list the exact hosts instead"
        )
    return lowered


def host_matches(host: str, pattern: str) -> bool:
    """Exact match, or for `*.suffix` one or more labels below the suffix (never the suffix)."""
    if pattern.startswith("*."):
        suffix = pattern[1:]  # keeps the dot: "evilwavespeed.ai" does not end with ".wavespeed.ai"
        return host.endswith(suffix) and len(host) > len(suffix)
    return host == pattern


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

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "allowed_hosts", tuple(check_host_pattern(p) for p in self.allowed_hosts)
        )

    def allows_host(self, host: str) -> bool:
        """Whether `host` (lower-case) is a well-formed name matched by an allow-list entry."""
        if not all(_LABEL.fullmatch(label) for label in host.split(".")):
            return False
        return any(host_matches(host, pattern) for pattern in self.allowed_hosts)


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
        default = HTTPS_PORT if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def _is_public_v4(ip: ipaddress.IPv4Address) -> bool:
    # The table backs up `is_global`, whose answer for some blocks varies by Python release.
    return ip.is_global and not any(ip in network for network in NON_PUBLIC_V4)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address forwards to, for the forms that embed one.

    Traffic to these reaches the embedded address (a NAT64 gateway or 6to4 relay will happily
    forward to 10.x or 169.254.169.254), so that address is the one to judge.
    """
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in IPV4_TRANSLATED or ip in NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & _LOW_32)
    if ip.sixtofour is not None:
        return ip.sixtofour
    interface_id = int(ip) & (2**64 - 1)
    # ISATAP interface identifiers (RFC 5214): [02]00:5efe:a.b.c.d, the u/l bit either way.
    if (interface_id >> 32) & ~0x02000000 == _ISATAP_MARKER:
        return ipaddress.IPv4Address(interface_id & _LOW_32)
    return None


def is_public_address(address: str) -> bool:
    """Whether connecting to `address` can only reach the public internet."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        return _is_public_v4(ip)
    embedded = _embedded_v4(ip)
    if ip.ipv4_mapped is not None or ip in IPV4_TRANSLATED or ip in NAT64_WELL_KNOWN:
        return embedded is not None and _is_public_v4(embedded)
    # Everything outside 2000::/3 is special: IPv4-compatible ::a.b.c.d (deprecated, may still
    # be tunnelled to its IPv4), loopback, link/site-local, unique-local, multicast, NAT64
    # local-use prefixes whose layout we cannot know.
    if ip not in GLOBAL_UNICAST or not ip.is_global:
        return False
    return embedded is None or _is_public_v4(embedded)


def vet_url(url: str, policy: DownloadPolicy, resolver: Resolver = system_resolver) -> Target:
    """Refuses anything but https on port 443 to an allow-listed host with public addresses only.

    The connection later goes to the vetted address (with the host name kept for TLS), so a
    DNS answer that changes between check and use cannot redirect the download. Local test
    servers named exactly as `host:port` in the policy are the only exception.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        raise RefusedUrl(f"output URL has no host: {url[:200]}")
    try:
        explicit_port = parts.port
    except ValueError:
        raise RefusedUrl(f"output URL has a bad port: {url[:200]}") from None
    default_port = HTTPS_PORT if parts.scheme == "https" else 80
    port = default_port if explicit_port is None else explicit_port
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    if f"{host}:{port}" in policy.local_hosts and parts.scheme in ("http", "https"):
        return Target(parts.scheme, host, port, path, host)
    if parts.scheme != "https":
        raise RefusedUrl(f"output URL must use https, got {parts.scheme or 'none'}: {host}")
    if not policy.allows_host(host):
        raise RefusedUrl(f"output host {host} is not on the allow-list")
    if port != HTTPS_PORT:
        raise RefusedUrl(f"output URL must use port {HTTPS_PORT}, got {port}: {host}")
    try:
        addresses = resolver(host, port)
    except OSError as exc:
        raise TransientError(f"could not resolve {host}: {exc}", code="dns_failure") from None
    if not addresses:
        raise TransientError(f"{host} resolved to no address", code="dns_failure")
    refused = [address for address in addresses if not is_public_address(address)]
    if refused:
        raise RefusedUrl(f"output host {host} resolves to a non-public address {refused[0]}")
    return Target("https", host, port, path, addresses[0])
