"""Property tests for the client identity: whatever a client puts in
X-Forwarded-For or Forwarded, and whatever odd values reach the scope,
client_ip() returns an address (or None) and never one the client wrote to
the left of the address its proxy appended (no Redis needed)."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redkit.keys import validate_key_part
from redkit.ratelimit import by_user_or_ip, client_ip
from redkit.ratelimit.identity import RequestInfo, parse_networks, safe_key

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TRUSTED = parse_networks(["10.0.0.0/8", "127.0.0.1", "2001:db8:ffff::/48"])


def trusted(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in net for net in TRUSTED)


def canonical(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


trusted_addresses = st.one_of(
    st.ip_addresses(network="10.0.0.0/8"),
    st.just(ipaddress.ip_address("127.0.0.1")),
    st.ip_addresses(network="2001:db8:ffff::/48"),
)
untrusted_addresses = st.ip_addresses().filter(lambda a: not trusted(canonical(a)))
ports = st.integers(0, 65535).map(str)


@st.composite
def xff_hop(draw: st.DrawFn, addresses: st.SearchStrategy) -> tuple[str, str]:
    """(what a proxy writes in X-Forwarded-For, the address it stands for)."""
    address = draw(addresses)
    text = str(address)
    if address.version == 6:
        form = draw(st.sampled_from(["{a}", "[{a}]", "[{a}]:{p}"]))
    else:
        form = draw(st.sampled_from(["{a}", "{a}:{p}"]))
    hop = form.format(a=text, p=draw(ports))
    space = draw(st.sampled_from(["", " ", "\t", "  "]))
    return space + hop, canonical(address)


@st.composite
def forwarded_element(draw: st.DrawFn, addresses: st.SearchStrategy) -> tuple[str, str]:
    """(a Forwarded element a proxy writes, the address its for= stands for)."""
    address = draw(addresses)
    text = str(address)
    if address.version == 6:
        form = draw(st.sampled_from(['"[{a}]"', '"[{a}]:{p}"']))
    else:
        form = draw(st.sampled_from(["{a}", '"{a}:{p}"', '"{a}"']))
    node = form.format(a=text, p=draw(ports))
    name = draw(st.sampled_from(["for", "For", "FOR"]))
    others = draw(
        st.lists(st.sampled_from(["proto=https", "by=10.0.0.1", 'host="example.com"']), max_size=2)
    )
    pairs = [*others]
    pairs.insert(draw(st.integers(0, len(pairs))), f"{name}={node}")
    return draw(st.sampled_from(["", " "])) + ";".join(pairs), canonical(address)


# What a hostile client writes: raw bytes, or text made of the pieces that
# trip parsers up.
hostile_pieces = st.sampled_from(
    [
        "for=",
        'for="',
        "for=_hidden",
        'for="_hidden"',
        "for=unknown",
        '"[2001:db8::1]:443"',
        "[2001:db8::1",
        "[::ffff:10.0.0.1]:80",
        "fe80::1%eth0",
        "fe80::1%25\x00",
        '"\\"quoted\\", for=1.1.1.1"',
        "\\",
        '"',
        ",",
        ";",
        "=",
        " ",
        "\t",
        "\x00",
        "\r\n",
        "\x7f",
        "\xff",
        "9" * 400,
        "1.2.3.4",
        "10.0.0.1",
        "127.0.0.1",
        "198.51.100.99",
        "::1",
        "2001:db8:ffff::1",
        "1.2.3.4:99999999999999999999",
        "_obf:_port",
    ]
)
hostile_text = st.one_of(
    st.lists(hostile_pieces, max_size=30).map("".join),
    st.integers(0, 3000).map(lambda n: ", ".join(["10.0.0.1"] * n)),
    st.integers(0, 3000).map(lambda n: ",".join(["for=6.6.6.6"] * n)),
    st.text(max_size=200),
)
hostile_values = st.one_of(
    st.binary(max_size=300), hostile_text.map(lambda t: t.encode("latin-1", "replace"))
)


@st.composite
def proxied_request(draw: st.DrawFn, header: str) -> tuple[dict, str]:
    """A request that passed through trusted proxies appending to ``header``,
    with whatever the client wrote before them; and the real client."""
    element = forwarded_element if header == "forwarded" else xff_hop
    hop, client = draw(element(untrusted_addresses))
    chain = [hop] + [draw(element(trusted_addresses))[0] for _ in range(draw(st.integers(0, 3)))]
    appended = ", ".join(chain).encode("latin-1")
    sent = draw(st.lists(hostile_values, max_size=3))
    name = header.encode()
    style = draw(st.sampled_from(["append", "new line", "one line"]))
    if style == "append" and sent:
        # nginx: the client's lines joined, the proxy's hops after a comma
        lines = [b", ".join(sent) + b", " + appended]
    elif style == "new line":
        lines = [*sent, appended]  # HAProxy: a header line of its own
    else:
        lines = [appended]
    other = b"x-forwarded-for" if header == "forwarded" else b"forwarded"
    headers = [(draw(st.sampled_from([name, name.title(), name.upper()])), v) for v in lines]
    noise = [(other, v) for v in draw(st.lists(hostile_values, max_size=2))]
    noise += [(b"x-real-ip", b"6.6.6.6"), (b"host", b"example.com")]
    for item in noise:
        headers.insert(draw(st.integers(0, len(headers))), item)
    peer = str(draw(trusted_addresses))
    return {"type": "http", "client": (peer, 443), "headers": headers}, client


@SETTINGS
@given(proxied_request("x-forwarded-for"))
def test_x_forwarded_for_gives_the_address_the_proxy_appended(request):
    scope, client = request
    assert client_ip(scope, TRUSTED) == client


@SETTINGS
@given(proxied_request("forwarded"))
def test_forwarded_gives_the_address_the_proxy_appended(request):
    scope, client = request
    assert client_ip(scope, TRUSTED, proxy_header="forwarded") == client


header_names = st.sampled_from(
    [b"x-forwarded-for", b"forwarded", b"X-Forwarded-For", b"FORWARDED", b"host"]
)
odd_values = st.one_of(
    hostile_values,
    hostile_text,  # a server handing over text instead of bytes
    st.text(st.characters(exclude_categories=()), max_size=50),  # lone surrogates too
    st.none(),
    st.integers(),
)
peers = st.one_of(
    trusted_addresses.map(str),
    untrusted_addresses.map(str),
    st.text(st.characters(exclude_categories=()), max_size=60),
    hostile_text,
)
clients = st.one_of(
    st.tuples(peers, st.integers()),
    st.lists(peers, max_size=3),
    st.none(),
    peers,
    st.integers(),
    st.tuples(st.none(), st.integers()),
)


@SETTINGS
@given(
    clients,
    st.lists(st.tuples(header_names, odd_values), max_size=6),
    st.sampled_from(["x-forwarded-for", "forwarded"]),
)
def test_any_scope_gives_a_canonical_address_or_none(client, headers, proxy_header):
    scope = {"type": "http", "client": client, "headers": headers}
    found = client_ip(scope, TRUSTED, proxy_header=proxy_header)
    assert client_ip(scope) == client_ip(scope, (), proxy_header=proxy_header)
    if found is None:
        return
    address = ipaddress.ip_address(found)
    assert str(address) == found
    assert "%" not in found
    assert not (isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped)
    assert safe_key(f"ip:{found}") == f"ip:{found}"  # usable as a key as it is
    peer = client_ip(scope)  # the peer alone, headers ignored
    if peer is None or not trusted(peer):
        assert found == peer


user_ids = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=600),
    st.integers(),
    st.floats(),
    st.binary(max_size=20),
    st.none(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@SETTINGS
@given(user_ids, st.one_of(st.none(), untrusted_addresses.map(str)))
def test_any_user_id_gives_a_usable_key(user_id, ip):
    info = RequestInfo({"type": "http", "state": {"user_id": user_id}}, ip)
    key = safe_key(by_user_or_ip(info))
    assert validate_key_part(key, allow_braces=False) == key
