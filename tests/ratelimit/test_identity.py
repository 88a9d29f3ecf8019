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
        ({"x_forwarded_for": "[2001:db8::6]:8080"}, "2001:db8::6"),
        ({"x_forwarded_for": "fe80::1%eth0"}, "fe80::1"),
        # not an address: the walk ends at the proxy that wrote it
        ({"x_forwarded_for": "6.6.6.6, [2001:db8::6]x"}, "10.1.1.1"),
        ({"x_forwarded_for": "6.6.6.6, 198.51.100.1:http"}, "10.1.1.1"),
        ({"x_forwarded_for": "6.6.6.6, 198.51.100.1,"}, "10.1.1.1"),
        ({"x_forwarded_for": "6.6.6.6, 198.51.100.1, " + "1" * 200}, "10.1.1.1"),
        # by default only X-Forwarded-For is read: Forwarded is the client's
        ({"forwarded": "for=198.51.100.4", "x_forwarded_for": "6.6.6.6"}, "6.6.6.6"),
        ({"forwarded": "for=198.51.100.4"}, "10.1.1.1"),
        ({}, "10.1.1.1"),
    ],
)
def test_trusted_proxy_chain_gives_the_rightmost_untrusted_hop(headers, expected):
    assert client_ip(scope("10.1.1.1", **headers), PROXIES) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"forwarded": "for=198.51.100.2;proto=https"}, "198.51.100.2"),
        ({"forwarded": 'for="[2001:db8::5]:443", for=10.0.0.3'}, "2001:db8::5"),
        ({"forwarded": "for=6.6.6.6, for=198.51.100.3"}, "198.51.100.3"),
        ({"forwarded": 'proto=https;For="198.51.100.6:4711"'}, "198.51.100.6"),
        ({"forwarded": "for=198.51.100.4", "x_forwarded_for": "6.6.6.6"}, "198.51.100.4"),
        ({"x_forwarded_for": "6.6.6.6"}, "10.1.1.1"),
        ({"forwarded": "proto=https"}, "10.1.1.1"),
        ({"forwarded": 'for="_hidden", for=10.0.0.3'}, "10.0.0.3"),
        ({"forwarded": "for=unknown"}, "10.1.1.1"),
        ({"forwarded": "for=6.6.6.6;for=198.51.100.1"}, "10.1.1.1"),
        ({"forwarded": 'for="198.51.100.1'}, "10.1.1.1"),
        ({"forwarded": 'for="198.51\\.100.1"'}, "10.1.1.1"),
        # an unclosed quote from the client does not swallow what the proxy appended
        ({"forwarded": 'for=6.6.6.6;x="a, for=198.51.100.9'}, "198.51.100.9"),
    ],
)
def test_forwarded_is_read_only_when_named(headers, expected):
    s = scope("10.1.1.1", **headers)
    assert client_ip(s, PROXIES, proxy_header="forwarded") == expected
    assert client_ip(s, PROXIES, proxy_header="Forwarded") == expected


def test_header_lines_of_the_same_name_are_joined_in_order():
    s = scope("10.1.1.1")
    s["headers"] = [
        (b"x-forwarded-for", b"6.6.6.6"),
        (b"forwarded", b"for=7.7.7.7"),
        (b"X-Forwarded-For", b"198.51.100.1, 10.0.0.7"),
    ]
    assert client_ip(s, PROXIES) == "198.51.100.1"
    s["headers"] = [(b"x-forwarded-for", b"198.51.100.1"), (b"x-forwarded-for", b"198.51.100.2")]
    assert client_ip(s, PROXIES) == "198.51.100.2"
    s["headers"] = [(b"forwarded", b"for=6.6.6.6"), (b"forwarded", b"for=198.51.100.3")]
    assert client_ip(s, PROXIES, proxy_header="forwarded") == "198.51.100.3"


@pytest.mark.parametrize("bad", ["x-real-ip", "", None, 3, ["forwarded"]])
def test_bad_proxy_header_raises_naming_it(bad):
    with pytest.raises(ConfigError, match="proxy_header") as info:
        client_ip(scope(), PROXIES, proxy_header=bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    "client", [(None, 1), (1234, 5), "192.0.2.1", [], (), ("",), ("testclient", 50000), 7]
)
def test_odd_scope_clients_are_no_address(client):
    s = {"type": "http", "client": client, "headers": [(b"x-forwarded-for", b"1.2.3.4")]}
    assert client_ip(s, PROXIES) is None


def test_a_list_client_and_odd_header_entries_are_read_safely():
    s = {"client": ["10.1.1.1", 1], "headers": [(b"x-forwarded-for", "198.51.100.1")]}
    assert client_ip(s, PROXIES) == "198.51.100.1"
    s = {"client": ["10.1.1.1", 1], "headers": [(b"x-forwarded-for", None)]}
    assert client_ip(s, PROXIES) == "10.1.1.1"
    s = {"client": ["10.1.1.1", 1], "headers": [(b"x-forwarded-for",)]}
    assert client_ip(s, PROXIES) == "10.1.1.1"


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


def test_safe_key_digests_lone_surrogates_and_non_strings():
    lone = safe_key("user:\ud800")
    assert lone.startswith("sha256:")
    assert lone != safe_key("user:\udfff")
    assert lone != safe_key("user:\\ud800")
    assert safe_key(42).startswith("sha256:")
    assert safe_key(42) != safe_key("int:42")

    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert safe_key(Unprintable()).startswith("sha256:")


def test_a_user_object_whose_properties_raise_falls_back():
    from starlette.authentication import BaseUser

    class PartialUser(BaseUser):
        # identity is left to BaseUser, which raises NotImplementedError
        @property
        def is_authenticated(self) -> bool:
            return True

        @property
        def display_name(self) -> str:
            return "alice"

    class Broken:
        @property
        def is_authenticated(self) -> bool:
            raise RuntimeError("session backend down")

    info = RequestInfo({**scope(), "user": PartialUser()}, "192.0.2.10")
    assert by_user_or_ip(info) == "user:alice"
    info = RequestInfo({**scope(), "user": Broken(), "state": {"user_id": 9}}, "192.0.2.10")
    assert by_user_or_ip(info) == "user:9"
    assert (
        by_user_or_ip(RequestInfo({**scope(), "user": Broken()}, "192.0.2.10")) == "ip:192.0.2.10"
    )


def test_header_lookup_with_odd_names():
    info = RequestInfo(scope(x_api_key="abc"), None)
    assert info.header("X-Api-Kéy\u20ac") is None
    assert info.header(None) is None  # type: ignore[arg-type]
