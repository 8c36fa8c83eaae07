"""Unit tests: which output URLs the downloader may fetch (allow-list, https, port, addresses)."""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from kling_pipeline.errors import PermanentError, TransientError
from kling_pipeline.finalize.policy import (
    DownloadPolicy,
    InvalidHostPattern,
    RefusedUrl,
    Target,
    check_host_pattern,
    is_public_address,
    vet_url,
)
from kling_pipeline.settings import DEFAULT_OUTPUT_HOSTS

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"
POLICY = DownloadPolicy(allowed_hosts=DEFAULT_OUTPUT_HOSTS)
#: A policy listing the IP literals the address tests use, so only the address check decides.
LITERAL_HOSTS = ("169.254.169.254", "10.0.0.1", "127.0.0.1", "172.16.5.4", "192.168.1.1")
LITERAL_POLICY = DownloadPolicy(allowed_hosts=LITERAL_HOSTS)
#: Where WaveSpeed serves outputs from (its examples and users' reports).
WAVESPEED_CDN_HOSTS = (
    "d2p7pge43lyniu.cloudfront.net",
    "d11ewybssaphwx.cloudfront.net",
    "d1q70pf5vjeyhc.cloudfront.net",
    "d2h7xmz5gqybh9.cloudfront.net",
    "cdn.wavespeed.ai",
    "static.wavespeed.ai",
)


class FakeDns:
    """A resolver answering fixed addresses per host; IP literals resolve to themselves."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.lookups: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            return self.answers.get(host, [PUBLIC_V4])


def refused(url: str, policy: DownloadPolicy = POLICY, dns: FakeDns | None = None) -> RefusedUrl:
    with pytest.raises(RefusedUrl) as caught:
        vet_url(url, policy, dns or FakeDns())
    assert isinstance(caught.value, PermanentError)
    assert caught.value.code == "output_url_refused"
    return caught.value


# ------------------------------------------------------------------------------ accepted


def test_public_allowed_host_accepted_when_https() -> None:
    # Given an allow-listed host whose DNS answers a public address
    dns = FakeDns({"d1q70pf5vjeyhc.cloudfront.net": [PUBLIC_V4]})

    # When vetting an https URL with a query string
    target = vet_url(
        "https://d1q70pf5vjeyhc.cloudfront.net/outputs/abc/0.mp4?sig=x&exp=1", POLICY, dns
    )

    # Then the connection goes to the vetted address while TLS and Host keep the name
    assert target == Target(
        "https",
        "d1q70pf5vjeyhc.cloudfront.net",
        443,
        "/outputs/abc/0.mp4?sig=x&exp=1",
        PUBLIC_V4,
    )
    assert target.host_header == "d1q70pf5vjeyhc.cloudfront.net"
    assert dns.lookups == [("d1q70pf5vjeyhc.cloudfront.net", 443)]


def test_public_ipv6_and_mapped_public_accepted_when_allowed() -> None:
    # Given an allowed host with public IPv6 answers (one IPv4-mapped)
    dns = FakeDns({"cdn.wavespeed.ai": [PUBLIC_V6, f"::ffff:{PUBLIC_V4}"]})

    # When vetting / Then it is accepted on the first vetted address
    target = vet_url("https://cdn.wavespeed.ai/v.mp4", POLICY, dns)
    assert (target.address, target.port, target.host_header) == (
        PUBLIC_V6,
        443,
        "cdn.wavespeed.ai",
    )


@pytest.mark.parametrize(
    "host",
    ["cdn.wavespeed.ai", "a.b.wavespeed.ai", "CDN.WaveSpeed.AI", "static-1.wavespeed.ai"],
)
def test_wildcard_pattern_matches_subdomains_when_allowed(host: str) -> None:
    # Given the default allow-list ("*.wavespeed.ai", WaveSpeed's CloudFront hosts)
    # When vetting a subdomain of wavespeed.ai / Then it is accepted (host lower-cased)
    target = vet_url(f"https://{host}/v.mp4", POLICY, FakeDns())
    assert target.host == host.lower()


@pytest.mark.parametrize(
    "url",
    [
        "https://wavespeed.ai/v.mp4",
        "https://evilwavespeed.ai/v.mp4",
        "https://cdn.wavespeed.ai.evil.com/v.mp4",
        "https://wavespeed.ai.evil.com/v.mp4",
        "https://other.cloudfront.net/v.mp4",
        "https://cdn.wavespeed.ai@evil.com/v.mp4",
        "https://evil.com#@cdn.wavespeed.ai/v.mp4",
        "https://evil.com?@cdn.wavespeed.ai/v.mp4",
    ],
)
def test_wildcard_pattern_refuses_lookalikes_when_not_subdomain(url: str) -> None:
    # Given the default allow-list
    dns = FakeDns()

    # When vetting a host that only looks like an allowed one
    error = refused(url, dns=dns)

    # Then it is refused before any DNS lookup
    assert "allow-list" in error.message
    assert dns.lookups == []


# ------------------------------------------------------------------------------ refused


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.wavespeed.ai/v.mp4",
        "ftp://cdn.wavespeed.ai/v.mp4",
        "file:///etc/passwd",
        "cdn.wavespeed.ai/v.mp4",
    ],
)
def test_url_refused_when_not_https(url: str) -> None:
    # Given / When a URL on an allowed host but not over https (or with no host at all)
    dns = FakeDns()
    error = refused(url, dns=dns)

    # Then it is refused without resolving anything
    assert "https" in error.message or "no host" in error.message
    assert dns.lookups == []


def test_unknown_host_refused_when_not_on_allow_list() -> None:
    # Given / When an https URL to a host on no allow-list pattern
    dns = FakeDns()
    error = refused("https://example.com/v.mp4", dns=dns)

    # Then the host is named and never resolved
    assert "example.com" in error.message
    assert dns.lookups == []


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/v.mp4",
        "https://127.0.0.1/v.mp4",
        "https://[::1]/v.mp4",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_internal_address_refused_when_default_allow_list(url: str) -> None:
    # Given the default allow-list / When vetting an internal IP literal / Then refused
    refused(url)


@pytest.mark.parametrize("address", LITERAL_HOSTS)
def test_internal_address_refused_when_allow_list_names_it(address: str) -> None:
    # Given an allow-list that (carelessly) names an internal IP literal
    # When vetting an https URL straight to it
    error = refused(f"https://{address}/v.mp4", LITERAL_POLICY)

    # Then the address check still refuses it
    assert "non-public address" in error.message


@pytest.mark.parametrize(
    "answer",
    [
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "169.254.1.1",
        "192.168.0.10",
        "100.64.1.1",
        "::1",
        "fe80::abcd",
        "fc00::1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "2002:a9fe:a9fe::1",
        "64:ff9b::a00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::5db8:d822",
        "224.0.0.251",
        "ff02::1",
    ],
)
def test_allowed_host_refused_when_dns_answers_internal_address(answer: str) -> None:
    # Given an allow-listed host whose DNS answer points inside the network
    dns = FakeDns({"cdn.wavespeed.ai": [answer]})

    # When vetting its URL
    error = refused("https://cdn.wavespeed.ai/v.mp4", dns=dns)

    # Then it is refused naming the address
    assert "non-public address" in error.message
    assert dns.lookups == [("cdn.wavespeed.ai", 443)]


def test_allowed_host_refused_when_any_dns_answer_internal() -> None:
    # Given a host answering one public and one loopback address (DNS rebinding style)
    dns = FakeDns({"cdn.wavespeed.ai": [PUBLIC_V4, "127.0.0.1"]})

    # When / Then the whole URL is refused, not just the bad address skipped
    assert "127.0.0.1" in refused("https://cdn.wavespeed.ai/v.mp4", dns=dns).message


def test_public_embedded_address_accepted_when_6to4_or_nat64() -> None:
    # Given answers embedding a public IPv4 address in 6to4 and NAT64 form
    dns = FakeDns({"cdn.wavespeed.ai": ["2002:5db8:d822::1", "64:ff9b::5db8:d822"]})

    # When / Then they are judged by that public address and accepted
    assert vet_url("https://cdn.wavespeed.ai/v.mp4", POLICY, dns).address == "2002:5db8:d822::1"


@pytest.mark.parametrize("answers", [[], None])
def test_dns_failure_is_transient_when_host_does_not_resolve(answers: list[str] | None) -> None:
    # Given an allowed host whose lookup fails or answers nothing
    def resolver(host: str, port: int) -> list[str]:
        if answers is None:
            raise OSError("Name or service not known")
        return answers

    # When vetting / Then a transient dns_failure is raised (retrying may help)
    with pytest.raises(TransientError) as caught:
        vet_url("https://cdn.wavespeed.ai/v.mp4", POLICY, resolver)
    assert caught.value.code == "dns_failure"


def test_url_refused_when_port_invalid() -> None:
    # Given / When a URL with a port out of range / Then refused, not crashed
    assert "bad port" in refused("https://cdn.wavespeed.ai:99999/v.mp4").message


# ------------------------------------------------------------------------------ local hosts


def test_local_host_allowed_over_http_when_exact_host_port_listed() -> None:
    # Given a policy naming one local test server
    policy = DownloadPolicy(allowed_hosts=DEFAULT_OUTPUT_HOSTS, local_hosts=("127.0.0.1:8765",))
    dns = FakeDns()

    # When vetting a plain-http URL to exactly that host:port
    target = vet_url("http://127.0.0.1:8765/outputs/t/0.mp4", policy, dns)

    # Then it is allowed as is, without DNS or address checks
    assert target == Target("http", "127.0.0.1", 8765, "/outputs/t/0.mp4", "127.0.0.1")
    assert dns.lookups == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8766/outputs/t/0.mp4",
        "http://127.0.0.1/outputs/t/0.mp4",
        "http://localhost:8765/outputs/t/0.mp4",
        "https://127.0.0.1:8766/outputs/t/0.mp4",
        "http://127.0.0.2:8765/outputs/t/0.mp4",
        "ftp://127.0.0.1:8765/outputs/t/0.mp4",
    ],
)
def test_local_exception_refused_when_host_or_port_differs(url: str) -> None:
    # Given a policy naming only 127.0.0.1:8765 as local (and 127.0.0.1 on its allow-list)
    policy = DownloadPolicy(allowed_hosts=LITERAL_HOSTS, local_hosts=("127.0.0.1:8765",))

    # When / Then any other port, name, address or scheme falls back to the normal rules
    refused(url, policy)


# ------------------------------------------------------------------------------ hosts (generated)


def _host_variants() -> list[tuple[str, bool]]:
    """(host, allowed) pairs derived from every default allow-list entry."""
    cases: list[tuple[str, bool]] = []
    for entry in DEFAULT_OUTPUT_HOSTS:
        name = entry.removeprefix("*.")
        if entry.startswith("*."):
            cases += [(f"a.{name}", True), (f"a.b.{name}", True), (f"x-1.y.z.{name}", True)]
            cases += [(name, False)]  # the bare suffix is not below it
        else:
            cases += [(name, True), (name.upper(), True)]
            cases += [(f"a.{name}", False)]  # an exact entry admits no subdomain
        cases += [
            (f"evil{name}", False),
            (f"{name}.evil.com", False),
            (f"{name}evil.com", False),
            (f"a.{name}-x.com", False),
            (name.replace(".", "-"), False),
            (f"a_b.{name}", False),  # not a host name at all
            (f"-a.{name}", False),
        ]
    return cases


@pytest.mark.parametrize(("host", "allowed"), _host_variants())
def test_host_accepted_only_when_matching_an_entry(host: str, allowed: bool) -> None:
    # Given the default allow-list and a DNS answering public addresses
    dns = FakeDns()
    url = f"https://{host}/predictions/abc/1.mp4"

    # When vetting an https URL on that host
    # Then exact entries match only themselves and "*.x" only names below x
    if allowed:
        assert vet_url(url, POLICY, dns).host == host.lower()
    else:
        assert "allow-list" in refused(url, dns=dns).message
        assert dns.lookups == []


@pytest.mark.parametrize("host", WAVESPEED_CDN_HOSTS)
def test_wavespeed_cdn_host_accepted_when_default_allow_list(host: str) -> None:
    # Given / When an output on any host WaveSpeed serves from / Then the default admits it
    assert vet_url(f"https://{host}/output/abc.mp4", POLICY, FakeDns()).host == host


@pytest.mark.parametrize("host", ["d3abcdefghijkl.cloudfront.net", "evil.cloudfront.net"])
def test_other_cloudfront_host_refused_when_default_allow_list(host: str) -> None:
    # Given / When a CloudFront host anyone could create / Then the default refuses it
    refused(f"https://{host}/output/abc.mp4")


# ------------------------------------------------------------------------------ ports (generated)

ALLOWED_HOST = "cdn.wavespeed.ai"


@pytest.mark.parametrize("port", ["", ":443"])
def test_port_accepted_when_https_default(port: str) -> None:
    # Given / When an allowed host with no port or an explicit 443
    target = vet_url(f"https://{ALLOWED_HOST}{port}/v.mp4", POLICY, FakeDns())

    # Then it connects to 443 and sends the bare host name
    assert (target.port, target.host_header) == (443, ALLOWED_HOST)


@pytest.mark.parametrize("port", [0, 1, 22, 80, 442, 444, 4443, 6379, 8080, 8443, 9000, 65535])
def test_port_refused_when_not_443_on_allowed_host(port: int) -> None:
    # Given an allowed host and a DNS answering a public address
    dns = FakeDns()

    # When vetting an https URL on another port
    error = refused(f"https://{ALLOWED_HOST}:{port}/v.mp4", dns=dns)

    # Then it is refused before any lookup, naming the port
    assert str(port) in error.message
    assert dns.lookups == []


@pytest.mark.parametrize(("scheme", "port"), itertools.product(["http", "https"], [8765, 18080]))
def test_local_host_keeps_its_port_when_listed_as_host_port(scheme: str, port: int) -> None:
    # Given a local test server listed as host:port
    policy = DownloadPolicy(allowed_hosts=DEFAULT_OUTPUT_HOSTS, local_hosts=(f"127.0.0.1:{port}",))

    # When / Then its own port is accepted, with the port in the Host header
    target = vet_url(f"{scheme}://127.0.0.1:{port}/outputs/t/0.mp4", policy, FakeDns())
    assert (target.port, target.host_header) == (port, f"127.0.0.1:{port}")


# ------------------------------------------------------------------------ addresses (generated)

#: One sample of every IPv4 range that does not reach the public internet.
NON_PUBLIC_V4 = [
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "100.64.0.1",
    "127.0.0.1",
    "169.254.169.254",
    "169.254.1.1",
    "172.16.5.4",
    "192.0.0.8",
    "192.0.2.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.251",
    "240.0.0.1",
    "255.255.255.255",
]
PUBLIC_V4S = [PUBLIC_V4, "8.8.8.8", "151.101.1.140"]


def _v4(address: str) -> int:
    return int(ipaddress.IPv4Address(address))


#: Every way an IPv6 address embeds an IPv4 address that traffic may be forwarded to.
EMBEDDINGS = {
    "mapped": lambda v4: f"::ffff:{v4}",
    "translated": lambda v4: str(ipaddress.IPv6Address((0xFFFF << 48) | _v4(v4))),
    "compatible": lambda v4: str(ipaddress.IPv6Address(_v4(v4))),
    "6to4": lambda v4: str(ipaddress.IPv6Address((0x2002 << 112) | (_v4(v4) << 80) | 1)),
    "nat64": lambda v4: str(
        ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | _v4(v4))
    ),
    "isatap": lambda v4: str(ipaddress.IPv6Address((0x2600_1F18 << 96) | (0x5EFE << 32) | _v4(v4))),
    "isatap-global": lambda v4: str(
        ipaddress.IPv6Address((0x2600_1F18 << 96) | (0x0200_5EFE << 32) | _v4(v4))
    ),
}


@pytest.mark.parametrize(("embedding", "v4"), itertools.product(sorted(EMBEDDINGS), NON_PUBLIC_V4))
def test_allowed_host_refused_when_answer_embeds_non_public_ipv4(embedding: str, v4: str) -> None:
    # Given an allowed host whose AAAA answer embeds a non-public IPv4 address
    answer = EMBEDDINGS[embedding](v4)
    dns = FakeDns({ALLOWED_HOST: [answer]})

    # When vetting its URL / Then it is refused as non-public
    assert "non-public address" in refused(f"https://{ALLOWED_HOST}/v.mp4", dns=dns).message


@pytest.mark.parametrize(
    ("embedding", "v4"),
    itertools.product(sorted(set(EMBEDDINGS) - {"compatible"}), PUBLIC_V4S),
)
def test_embedded_public_ipv4_accepted_when_form_is_routable(embedding: str, v4: str) -> None:
    # Given / When an answer embedding a public IPv4 in a form still in use
    # Then it is judged by that public address and accepted
    assert is_public_address(EMBEDDINGS[embedding](v4))


@pytest.mark.parametrize("v4", PUBLIC_V4S + NON_PUBLIC_V4)
def test_ipv4_compatible_answer_refused_whatever_it_embeds(v4: str) -> None:
    # Given / When an IPv4-compatible ::a.b.c.d answer (deprecated, may still be tunnelled)
    # Then it is never public
    assert not is_public_address(EMBEDDINGS["compatible"](v4))


@pytest.mark.parametrize(
    "address",
    [
        "::",
        "::1",
        "::a9fe:a9fe",
        "::7f00:1",
        "100::1",
        "2001:db8::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2001:2::1",
        "5f00::1",
        "fc00::1",
        "fd00:ec2::254",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "64:ff9b:1::5db8:d822",
    ],
)
def test_special_ipv6_refused_when_answered(address: str) -> None:
    # Given / When an answer outside global unicast or in a special block / Then not public
    assert not is_public_address(address)


@pytest.mark.parametrize("address", [PUBLIC_V6, "2a00:1450:4001:81c::200e", *PUBLIC_V4S])
def test_public_address_accepted_when_global_unicast(address: str) -> None:
    assert is_public_address(address)


# ------------------------------------------------------------------------------ wildcards


@pytest.mark.parametrize(
    "pattern",
    [
        "*",
        "*.",
        "*.com",
        "*.ai",
        "*.cloudfront.net",
        "*.s3.amazonaws.com",
        "*.x.cloudfront.net",
        "*.github.io",
        "**.wavespeed.ai",
        "*wavespeed.ai",
        "wave*.ai",
        "a.*.wavespeed.ai",
        "*.*.wavespeed.ai",
        "?.wavespeed.ai",
        "[a-z].wavespeed.ai",
        "",
        "exa mple.com",
        "-bad.com",
        "bad-.com",
        "a..b.com",
        "a_b.com",
        "host:443",
        f"{'a' * 64}.com",
    ],
)
def test_host_pattern_refused_when_too_wide_or_malformed(pattern: str) -> None:
    # Given / When an allow-list entry that would admit hosts anyone can get, or no host
    with pytest.raises(InvalidHostPattern) as caught:
        DownloadPolicy(allowed_hosts=("cdn.example.com", pattern))

    # Then the policy cannot be built, naming the entry
    assert caught.value.code == "invalid_output_host_pattern"
    assert repr(pattern) in caught.value.message


@pytest.mark.parametrize(
    ("pattern", "normalised"),
    [
        ("*.wavespeed.ai", "*.wavespeed.ai"),
        ("*.WaveSpeed.AI", "*.wavespeed.ai"),
        (" cdn.example.com ", "cdn.example.com"),
        ("cdn.example.com.", "cdn.example.com"),
        ("d1q70pf5vjeyhc.cloudfront.net", "d1q70pf5vjeyhc.cloudfront.net"),
        ("*.media.example.co.uk", "*.media.example.co.uk"),
        ("93.184.216.34", "93.184.216.34"),
    ],
)
def test_host_pattern_accepted_when_exact_or_safe_wildcard(pattern: str, normalised: str) -> None:
    # Given / When a host or a wildcard below a domain of its own / Then kept, lower-cased
    assert check_host_pattern(pattern) == normalised


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_wildcard_matches_any_depth_when_below_suffix(depth: int) -> None:
    # Given a policy with one wildcard entry
    policy = DownloadPolicy(allowed_hosts=("*.media.example.com",))
    host = ".".join(f"l{n}" for n in range(depth)) + ".media.example.com"

    # When / Then every depth below the suffix is accepted; the suffix and its parent are not
    assert vet_url(f"https://{host}/v.mp4", policy, FakeDns()).host == host
    refused("https://media.example.com/v.mp4", policy)
    refused("https://example.com/v.mp4", policy)
