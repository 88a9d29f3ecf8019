"""Property tests: every decoder of bytes from outside the process in
sessions decodes or raises its documented error, and the middleware never
answers 500 for a hostile cookie or stored record.

- the record decoder (both layouts' records): a Session or
  SerializationError, for any bytes and for records built to hurt (deep
  nesting, 1e400 and 10**400, invalid UTF-8, lone surrogate escapes, wrong
  field types, bad timestamps, truncation);
- the cookie verifier: the signed value or None, for any object and any
  text (invalid base64, huge, non-ASCII, lone surrogates);
- the ASGI middleware on a real server: raw Cookie header bytes, and
  hostile records stored under a validly signed id.

A fixed budget keeps the file to a few seconds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _asgi import http_scope, response_status
from _json_values import json_values, nested
from redkit import SerializationError, connect
from redkit.connection import Client
from redkit.server import EmbeddedRedis
from redkit.session import Session, SessionStore
from redkit.session._record import decode_record
from redkit.session.asgi import _cookie_value, _Signer
from redkit.testing import flush, settings_for

from ._apps import KEY, sign, starlette_app
from ._helpers import SECRET

BUDGET = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- hostile records ------------------------------------------------------------

ID = "c0dctApWjo2ooEXO0RATfg.5R-rDaS6JQpe298hsipmIeWTHXx5QRW7f3Gz7s3yqY0"


def _quoted(text: str) -> bytes:
    return b'"' + text.encode("utf-8", "surrogatepass") + b'"'


encoded_values = json_values(finite=True, width=3, max_leaves=12).map(msgspec.json.encode)

# Past the recursion limit, far past it, and anything up to that.
depths = st.one_of(st.sampled_from([1_200, 20_000, 100_000]), st.integers(1, 100_000))

# JSON fragments no store writes.
hostile_fragments = st.one_of(
    st.sampled_from(
        [
            b"1e400",
            b"-1e400",
            b"1" + b"0" * 400,
            b"NaN",
            b"Infinity",
            b"null",
            b"true",
            b"[]",
            b"{}",
            b'"\\ud800"',
            b'"\\udfff tail"',
            b'"\\ud800\\u0041"',
            b'"\xff\xfe"',
            b'"\xed\xa0\x80"',
            b'"\x00"',
            b'"unterminated',
            b"",
        ]
    ),
    st.builds(nested, depths),
    st.builds(lambda n: b"{" + b'"k":{' * n + b"}" * (n + 1), depths),
    st.binary(max_size=12),
    encoded_values,
)

timestamps = st.one_of(
    st.sampled_from(
        [
            "2026-11-26T11:04:05.092674Z",
            "2026-11-26T11:04:05.5Z",
            "2026-11-26T11:04:05.123456789+02:00",
            "2026-11-26T11:04:05+99:00",
            "2026-11-26T11:04:05-24:00",
            "2026-11-26T11:04:05+23:60",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59.999999999-23:59",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-26T25:00:00Z",
            "2026-11-26T11:04:05.1234567890Z",
            "\uff12\uff10\uff12\uff16-11-26T11:04:05Z",
            "2026-11-26T11:04:05\ud800Z",
            "2026-11-26",
            "",
        ]
    ),
    st.text(max_size=30),
).map(_quoted)

strings = st.one_of(st.just(ID), st.text(max_size=40)).map(_quoted)
data_values = st.one_of(
    encoded_values.map(lambda v: b'{"v":' + v + b"}"), hostile_fragments, st.just(b"null")
)


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """A session record with any field replaced by something hostile,
    fields reordered, dropped or repeated, and the result maybe truncated."""
    fields: dict[str, bytes] = {
        "id": draw(st.one_of(st.just(_quoted(ID)), strings, hostile_fragments)),
        "user_id": draw(st.one_of(strings, hostile_fragments)),
        "data": draw(data_values),
        "created_at": draw(st.one_of(timestamps, hostile_fragments)),
        "expires_at": draw(st.one_of(timestamps, hostile_fragments)),
    }
    names = draw(st.permutations(list(fields)))
    names = names[: draw(st.integers(min_value=3, max_value=5))]
    if draw(st.booleans()):
        names.append(draw(st.sampled_from(names)))
    body = b"{" + b",".join(b'"' + n.encode() + b'":' + fields[n] for n in names) + b"}"
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        body = body[: draw(st.integers(min_value=0, max_value=len(body)))]
    return body


@st.composite
def near_records(draw: st.DrawFn) -> bytes:
    """A record a store could have written (canonical order, live dates),
    with one or two fields replaced by something hostile: what gets past
    the scripts' own checks to the Python decoder."""
    fields: dict[str, bytes] = {
        "id": _quoted(ID),
        "user_id": b'""',
        "data": b'{"a":1}',
        "created_at": _quoted(datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
        "expires_at": b'"2999-01-01T00:00:00.000000Z"',
    }
    names = st.sampled_from(["data", "data", *fields])  # data most often
    for name in draw(st.lists(names, min_size=1, max_size=2)):
        if name == "data":
            fields[name] = draw(data_values)
        elif name in ("created_at", "expires_at"):
            fields[name] = draw(st.one_of(timestamps, hostile_fragments))
        else:
            fields[name] = draw(st.one_of(strings, hostile_fragments))
    return b"{" + b",".join(b'"' + n.encode() + b'":' + v for n, v in fields.items()) + b"}"


def _check_decoded(raw: Any) -> None:
    try:
        session = decode_record(raw)
    except SerializationError:
        return
    assert isinstance(session, Session)
    assert isinstance(session.id, str)
    assert isinstance(session.user_id, str)
    assert isinstance(session.data, dict)
    for moment in (session.created_at, session.expires_at):
        assert isinstance(moment, datetime)
        assert moment.tzinfo is not None


@BUDGET
@given(st.binary(max_size=300))
def test_record_decoder_on_arbitrary_bytes(raw: bytes) -> None:
    _check_decoded(raw)


@BUDGET
@given(st.one_of(records(), near_records()))
def test_record_decoder_on_hostile_records(raw: bytes) -> None:
    _check_decoded(raw)


@BUDGET
@given(st.one_of(st.text(max_size=60), st.integers(), st.none(), st.lists(st.integers())))
def test_record_decoder_on_other_objects(raw: Any) -> None:
    # decode_responses=True clients give str; anything else is refused.
    _check_decoded(raw)


# -- cookies ----------------------------------------------------------------------

any_char = st.integers(min_value=0, max_value=0x10FFFF).map(chr)  # lone surrogates too
any_text = st.lists(any_char, max_size=80).map("".join)
b64ish = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.", max_size=80
)
SIGNER = _Signer([KEY.encode()])


@st.composite
def cookie_texts(draw: st.DrawFn) -> str:
    kind = draw(st.integers(min_value=0, max_value=4))
    if kind == 0:
        return draw(any_text)
    if kind == 1:
        return draw(b64ish)
    if kind == 2:  # the right shape: value.<43 characters>
        return draw(any_text) + "." + "".join(draw(st.lists(any_char, min_size=43, max_size=43)))
    if kind == 3:  # a real cookie, one character changed
        good = SIGNER.sign(ID)
        at = draw(st.integers(min_value=0, max_value=len(good) - 1))
        return good[:at] + draw(any_char) + good[at + 1 :]
    return "A" * draw(st.integers(min_value=0, max_value=200_000)) + "." + "B" * 43


@BUDGET
@given(st.one_of(cookie_texts(), st.binary(max_size=20), st.integers(), st.none()))
def test_cookie_verifier_returns_the_value_or_none(cookie: Any) -> None:
    value = SIGNER.unsign(cookie)
    if value is not None:
        assert SIGNER.sign(value) == cookie


def test_cookie_verifier_accepts_what_it_signed() -> None:
    assert SIGNER.unsign(SIGNER.sign(ID)) == ID
    old = _Signer([b"x" * 16, KEY.encode()])
    assert old.unsign(SIGNER.sign(ID)) == ID


header_values = st.one_of(
    st.binary(max_size=120),
    st.binary(max_size=80).map(lambda b: b"session=" + b),
    cookie_texts().map(lambda t: b"a=1; session=" + t.encode("utf-8", "surrogatepass") + b"; b=2"),
    st.lists(st.binary(max_size=20), max_size=5).map(b";".join),
)


@BUDGET
@given(header_values)
def test_cookie_header_parser_never_raises(value: bytes) -> None:
    found = _cookie_value([(b"cookie", value)], b"session")
    assert found is None or isinstance(found, str)


# -- the middleware on a real server ------------------------------------------------


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop of the test's own: hypothesis calls the example function
    synchronously, and each example runs to completion on it."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def flushed(redis_server: EmbeddedRedis, loop: asyncio.AbstractEventLoop) -> Iterator[Client]:
    """A client on ``loop`` to an emptied server."""
    client = loop.run_until_complete(connect(settings_for(redis_server)))
    try:
        loop.run_until_complete(flush(client))
        yield client
    finally:
        loop.run_until_complete(client.aclose())


async def _status(app: Any, headers: list[tuple[bytes, bytes]], path: str = "/show") -> int:
    return await response_status(app, http_scope(path, headers=[(b"host", b"test"), *headers]))


def test_middleware_never_answers_500_for_hostile_cookies(
    flushed: Client, loop: asyncio.AbstractEventLoop
) -> None:
    store = SessionStore(flushed, secret=SECRET)
    app = starlette_app(store)
    session = loop.run_until_complete(store.create("", {"a": 1}))
    # Signed by the right key, so these reach the store.
    signed_ids = st.one_of(any_text, st.just(session.id), st.just("A" * 22 + "." + "B" * 43))
    cookies = st.one_of(
        header_values,
        signed_ids.filter(str.isascii).map(lambda v: b"session=" + sign(v).encode()),
    )

    @BUDGET
    @given(st.lists(cookies, min_size=1, max_size=3))
    def check(values: list[bytes]) -> None:
        status = loop.run_until_complete(_status(app, [(b"cookie", v) for v in values]))
        assert status == 200

    check()


# Reads, writes, login and logout: each reaches the stored record its own way.
PATHS = [
    "/show",
    "/lazy",
    "/whoami",
    "/put?b=2",
    "/pop?a",
    "/login/7",
    "/logout",
    "/logout?everywhere=1",
]


def test_middleware_never_answers_500_for_hostile_stored_records(
    flushed: Client, loop: asyncio.AbstractEventLoop
) -> None:
    store = SessionStore(flushed, secret=SECRET, max_data_bytes=1 << 20)
    session = loop.run_until_complete(store.create("", {"a": 1}))
    tag, secret = session.id.split(".")
    key = f"app:session:{{{tag}}}:{secret}"
    cookie = [(b"cookie", b"session=" + sign(session.id).encode())]
    apps = [starlette_app(store), starlette_app(store, refresh_every=1e-6)]

    @BUDGET
    @given(
        st.one_of(near_records(), records()),
        st.sampled_from(apps),
        st.integers(0, 3).map(bool),
        st.sampled_from(PATHS),
    )
    def check(raw: bytes, app: Any, own_id: bool, path: str) -> None:
        if own_id:  # the id check passes, so every other field is reached
            raw = raw.replace(ID.encode(), session.id.encode())
        loop.run_until_complete(flushed.set(key, raw, px=60_000))
        assert loop.run_until_complete(_status(app, cookie, path)) == 200

    check()
