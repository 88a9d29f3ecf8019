"""Client IP resolution and key functions (no Redis needed)."""

from __future__ import annotations

import pytest

from redkit import ConfigError
from redkit.ratelimit import RequestInfo, by_client_ip, by_user_or_ip, client_ip
from redkit.ratelimit.identity import parse_networks, safe_key


def scope(peer: str | None = "192.0.2.10", **headers: str) -> dict:
    return {
        "type": "http",
        "path": "/",
        "method": "GET",
        "client": (peer, 5555) if peer else None,
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


PROXIES = parse_networks(["10.0.0.0/8", "2001:db8:ffff::/48"])


def test_peer_address_without_trusted_proxies():
    assert client_ip(scope(x_forwarded_for="1.2.3.4")) == "192.0.2.10"
    assert client_ip(scope(forwarded="for=1.2.3.4")) == "192.0.2.10"
    assert client_ip(scope(None)) is None


def test_untrusted_peer_headers_are_ignored():
    s = scope("192.0.2.10", x_forwarded_for="1.2.3.4", forwarded="for=5.6.7.8")
    assert client_ip(s, PROXIES) == "192.0.2.10"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x_forwarded_for": "198.51.100.1"}, "198.51.100.1"),
        ({"x_forwarded_for": "6.6.6.6, 198.51.100.1"}, "198.51.100.1"),
        ({"x_forwarded_for": "6.6.6.6, 198.51.100.1, 10.0.0.7"}, "198.51.100.1"),
        ({"x_forwarded_for": "10.0.0.9, 10.0.0.7"}, "10.0.0.9"),
        ({"x_forwarded_for": "unknown"}, "10.1.1.1"),
        ({"x_forwarded_for": "198.51.100.1, garbage, 10.0.0.7"}, "10.0.0.7"),
        ({"x_forwarded_for": "198.51.100.1:8080"}, "198.51.100.1"),
        ({"forwarded": "for=198.51.100.2;proto=https"}, "198.51.100.2"),
        ({"forwarded": 'for="[2001:db8::5]:443", for=10.0.0.3'}, "2001:db8::5"),
        ({"forwarded": "for=6.6.6.6, for=198.51.100.3"}, "198.51.100.3"),
        ({"forwarded": "for=198.51.100.4", "x_forwarded_for": "6.6.6.6"}, "198.51.100.4"),
        ({"forwarded": "proto=https"}, "10.1.1.1"),
        ({}, "10.1.1.1"),
    ],
)
def test_trusted_proxy_chain_gives_the_rightmost_untrusted_hop(headers, expected):
    assert client_ip(scope("10.1.1.1", **headers), PROXIES) == expected


def test_ipv6_and_mapped_peers_are_normalised():
    assert client_ip(scope("::ffff:192.0.2.1")) == "192.0.2.1"
    assert client_ip(scope("2001:DB8::1")) == "2001:db8::1"
    s = scope("2001:db8:ffff::1", x_forwarded_for="2001:db8::2")
    assert client_ip(s, PROXIES) == "2001:db8::2"


def test_bad_trusted_proxy_raises_naming_it():
    with pytest.raises(ConfigError, match=r"'10\.0\.0\.0/33'"):
        parse_networks(["10.0.0.0/33"])
    with pytest.raises(ConfigError, match=r"'proxy\.local'"):
        parse_networks("proxy.local")


def test_key_functions():
    info = RequestInfo(scope(), "192.0.2.10")
    assert by_client_ip(info) == "ip:192.0.2.10"
    assert by_client_ip(RequestInfo(scope(None), None)) == "ip:unknown"
    assert by_user_or_ip(info) == "ip:192.0.2.10"

    class User:
        is_authenticated = True
        identity = "42"

    class Anonymous:
        is_authenticated = False
        identity = ""

    assert by_user_or_ip(RequestInfo({**scope(), "user": User()}, "192.0.2.10")) == "user:42"
    assert by_user_or_ip(RequestInfo({**scope(), "user": Anonymous()}, "1.1.1.1")) == "ip:1.1.1.1"
    state = {**scope(), "state": {"user_id": 7}}
    assert by_user_or_ip(RequestInfo(state, "1.1.1.1")) == "user:7"
    assert info.header("X-Missing") is None
    assert RequestInfo(scope(x_api_key="abc"), None).header("X-Api-Key") == "abc"


def test_safe_key_digests_what_cannot_be_a_key():
    assert safe_key("user:42") == "user:42"
    odd = safe_key("user:{x}")
    assert odd.startswith("sha256:")
    assert odd != safe_key("user:{y}")
    assert safe_key("x" * 10_000).startswith("sha256:")
    assert safe_key("").startswith("sha256:")
