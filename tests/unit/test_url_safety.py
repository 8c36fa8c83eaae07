"""Unit tests: which output URLs the downloader may fetch (allow-list, https, public addresses)."""

from __future__ import annotations

import ipaddress

import pytest

from kling_pipeline.errors import PermanentError, TransientError
from kling_pipeline.finalize.policy import DownloadPolicy, RefusedUrl, Target, vet_url
from kling_pipeline.settings import DEFAULT_OUTPUT_HOSTS

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"
POLICY = DownloadPolicy(allowed_hosts=DEFAULT_OUTPUT_HOSTS)
OPEN_POLICY = DownloadPolicy(allowed_hosts=("*",))


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

    # When vetting / Then it is accepted on the first vetted address, non-default port kept
    target = vet_url("https://cdn.wavespeed.ai:8443/v.mp4", POLICY, dns)
    assert (target.address, target.port, target.host_header) == (
        PUBLIC_V6,
        8443,
        "cdn.wavespeed.ai:8443",
    )


@pytest.mark.parametrize(
    "host",
    ["cdn.wavespeed.ai", "a.b.wavespeed.ai", "CDN.WaveSpeed.AI", "static-1.wavespeed.ai"],
)
def test_wildcard_pattern_matches_subdomains_when_allowed(host: str) -> None:
    # Given the default allow-list ("*.wavespeed.ai", one CloudFront host)
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


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "10.0.0.1",
        "127.0.0.1",
        "::1",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "fd00:ec2::254",
        "fe80::1",
    ],
)
def test_internal_address_refused_when_allow_list_is_open(address: str) -> None:
    # Given an allow-list admitting every host
    host = f"[{address}]" if ":" in address else address

    # When vetting an https URL straight to an internal address
    error = refused(f"https://{host}/v.mp4", OPEN_POLICY)

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
    # Given a policy naming only 127.0.0.1:8765 as local
    policy = DownloadPolicy(allowed_hosts=("*",), local_hosts=("127.0.0.1:8765",))

    # When / Then any other port, name, address or scheme falls back to the normal rules
    refused(url, policy)
