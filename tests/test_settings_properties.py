"""Redis URLs and REDIS_* variables from outside the process: settings come
back or a ConfigError does, never another exception, and no error message or
repr carries the password."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from urllib.parse import quote

from hypothesis import example, given, settings
from hypothesis import strategies as st

from redkit import ConfigError, RedisSettings

# Any code point, lone surrogates included (os.environ holds them for bytes
# that are not UTF-8), with URL delimiters and blanks made frequent.
ANY_CHAR = st.one_of(
    st.characters(codec=None, categories=None, exclude_categories=()),
    st.sampled_from("/#?@:%[]+&=. \t\n\x00"),
)
ANY_TEXT = st.text(ANY_CHAR, max_size=40)
PASSWORD = st.text(ANY_CHAR, min_size=4, max_size=24)

PREFIXES = ["redis://", "rediss://", "unix://", "REDIS://", "redis:/", "", "http://"]
USERS = ["", "app", "u%40x", "a:b"]
SUFFIXES = [
    "@host:6379/0",
    "@h",
    "@[::1]:6380/2",
    "@[::1",
    "@host:notaport/0",
    "@host:99999",
    "@host:0",
    "@h/x",
    "@h/0?db=y",
    "@h/0?db=3&password=x",
    "@/tmp/redis.sock",
    "@:6379",
    "@h:6379/0#frag",
]
LIMIT = settings(max_examples=300, deadline=None)


def _encode(password: str) -> str:
    return quote(password.encode("utf-8", "surrogatepass"), safe="")


def _secret_pieces(password: str) -> list[str]:
    """The password, and every run of it between URL delimiters long enough
    not to match by chance: an error quoting "top" out of "top/secret" leaks
    as surely as one quoting all of it."""
    runs = re.split(r"[/#?@:%\[\]&=+\s]", password)
    return [password, _encode(password)] + [r for r in runs if len(r) >= 4]


def _outcome(url: str) -> list[str]:
    """What a user can see: error messages from each way in, or reprs
    (marked by a leading "ok:")."""
    seen = []
    for attempt in (
        lambda: RedisSettings.from_url(url),
        lambda: RedisSettings(url=url),
        lambda: RedisSettings().replace(url=url),
        lambda: RedisSettings.from_env({"REDIS_URL": url, "REDIS_HOST": "h"}),
    ):
        try:
            result = attempt()
        except ConfigError as exc:
            seen.append(str(exc))
        else:
            seen.append(f"ok: {result!r} {result.address}")
    return seen


def _messages(attempts: list[Callable[[], object]]) -> str:
    out = []
    for attempt in attempts:
        try:
            out.append(repr(attempt()))
        except ConfigError as exc:
            out.append(str(exc))
    return "\n".join(out)


# Everything redkit prints without any password in it: every URL error, the
# env errors, a repr. A random password that happens to be a word of these
# ("None", "Redis") says nothing about a leak.
VOCABULARY = _messages(
    [
        (lambda url=url: RedisSettings.from_env({"REDIS_URL": url, "REDIS_PASSWORD": "\ud800"}))
        for url in [
            "redis://h",
            "redis://:x/y@h",
            "redis://h/0?password=x",
            "redis://h:x",
            "redis://[h",
            "redis://[h]x",
            "redis://h[",
            "redis://",
            "redis://h/x",
            "redis://:%ff@h",
            "redis://h h",
            "http://h",
            "unix://",
            "unix://:%ff@/x",
        ]
    ]
    + [
        lambda: RedisSettings.from_env({"REDIS_SENTINELS": "a:1"}),
        lambda: RedisSettings.from_env({"REDIS_CLUSTER": "1", "REDIS_DB": "1"}),
        lambda: RedisSettings.from_env({"REDIS_CLUSTER": "1", "REDIS_URL": "unix:///x"}),
        lambda: RedisSettings(port=0),
        lambda: RedisSettings(),
    ]
)


def _assert_hidden(password: str, skeleton: str, seen: list[str]) -> None:
    for piece in _secret_pieces(password):
        if piece in skeleton or piece in VOCABULARY:
            continue  # in the URL's other parts or in every message: no way to tell
        for text in seen:
            assert piece not in text, (piece, text)


@given(
    prefix=st.sampled_from(PREFIXES),
    user=st.sampled_from(USERS),
    password=PASSWORD,
    encoded=st.booleans(),
    suffix=st.one_of(st.sampled_from(SUFFIXES), st.text(ANY_CHAR, max_size=8).map("@h".__add__)),
)
@example(prefix="redis://", user="", password="top/secret", encoded=False, suffix="@host:6379/0")
@example(prefix="redis://", user="", password="top#secret", encoded=False, suffix="@host:6379/0")
@example(prefix="redis://", user="", password="top?secret", encoded=False, suffix="@host:6379/0")
@example(prefix="redis://", user="u", password="\u212a\u2100xyz", encoded=False, suffix="@h")
@example(prefix="redis://", user="u", password="ab[cdef", encoded=False, suffix="@h:1/0")
@LIMIT
def test_password_in_userinfo_never_shown(
    prefix: str, user: str, password: str, encoded: bool, suffix: str
) -> None:
    embedded = _encode(password) if encoded else password
    url = f"{prefix}{user}:{embedded}{suffix}"
    _assert_hidden(password, prefix + user + suffix, _outcome(url))


@given(password=PASSWORD, encoded=st.booleans(), before=st.sampled_from(["", "db=1&", "x=y&"]))
@example(password="supersecret", encoded=False, before="")
@LIMIT
def test_password_in_query_is_refused_unshown(password: str, encoded: bool, before: str) -> None:
    embedded = _encode(password) if encoded else password
    url = f"redis://host:6379/0?{before}password={embedded}"
    seen = _outcome(url)
    _assert_hidden(password, url.replace(embedded, ""), seen)
    # Refused, never read nor silently ignored.
    assert not any(text.startswith("ok:") for text in seen), seen


@given(password=PASSWORD)
@LIMIT
def test_password_field_never_in_repr_or_errors(password: str) -> None:
    seen = []
    for attempt in (
        lambda: RedisSettings(password=password),
        lambda: RedisSettings(password=password, port=0),
        lambda: RedisSettings.from_env({"REDIS_PASSWORD": password}),
        lambda: RedisSettings.from_env({"REDIS_PASSWORD": password, "REDIS_SENTINELS": "a:1"}),
    ):
        try:
            seen.append(repr(attempt()))
        except ConfigError as exc:
            seen.append(str(exc))
    _assert_hidden(password, "", seen)


@given(url=ANY_TEXT)
@example(url="redis://h/\u00b2")
@example(url="redis://h?db=\u00b2")
@example(url="redis://h/" + "9" * 5000)
@example(url="redis://h:\u00b2")
@example(url="redis://[::1")
@LIMIT
def test_any_text_as_a_url(url: str) -> None:
    with contextlib.suppress(ConfigError):
        RedisSettings.from_url(url)


URL_PART = st.text(
    st.one_of(st.sampled_from("/#?@:%[]&=0123456789abcdefAF.- "), ANY_CHAR), max_size=10
)


@given(
    scheme=st.sampled_from(["redis", "rediss", "unix", "RediS", "", "http"]),
    sep=st.sampled_from(["://", ":/", ":", "//"]),
    userinfo=st.one_of(st.just(""), URL_PART.map(lambda t: t + "@")),
    host=st.one_of(st.sampled_from(["h", "[::1]", "[::1", "::1", "", "127.0.0.1"]), URL_PART),
    port=st.one_of(
        st.just(""), st.integers(-10, 10**30).map(lambda n: f":{n}"), URL_PART.map(":".__add__)
    ),
    path=st.one_of(
        st.just(""), st.integers(-5, 10**9).map(lambda n: f"/{n}"), URL_PART.map("/".__add__)
    ),
    query=st.one_of(
        st.just(""),
        st.lists(st.tuples(URL_PART, URL_PART), max_size=3).map(
            lambda kv: "?" + "&".join(f"{k}={v}" for k, v in kv)
        ),
        st.sampled_from(["?db=1", "?db=-1", "?db=" + "9" * 5000, "?db=\u0663"]),
    ),
    fragment=st.one_of(st.just(""), URL_PART.map("#".__add__)),
)
@LIMIT
def test_structured_urls(
    scheme: str, sep: str, userinfo: str, host: str, port: str, path: str, query: str, fragment: str
) -> None:
    url = f"{scheme}{sep}{userinfo}{host}{port}{path}{query}{fragment}"
    try:
        parsed = RedisSettings.from_url(url)
    except ConfigError:
        return
    assert 1 <= parsed.port <= 65535 and 0 <= parsed.db <= 1 << 16
    assert parsed.unix_socket_path or parsed.host


VARIABLES = [
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "REDIS_USERNAME",
    "REDIS_DB",
    "REDIS_MAX_RETRIES",
    "REDIS_POOL_SIZE",
    "REDIS_MIN_IDLE_CONNS",
    "REDIS_READ_TIMEOUT",
    "REDIS_WRITE_TIMEOUT",
    "REDIS_CONNECT_TIMEOUT",
    "REDIS_CLUSTER",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
]
ENV_VALUE = st.one_of(
    ANY_TEXT,
    st.integers().map(str),
    st.integers(-(10**400), 10**400).map(str),
    st.floats().map(repr),
    st.floats().map(lambda f: f"{f}s"),
    st.sampled_from(
        [
            "1e400",
            "1e400s",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "-0",
            " 7 ",
            "0x10",
            "1_000",
            "\u0663",
            "\u00b2",
            "+5",
            "9" * 5000,
            "\x00",
            "\ud800",
            "\udcff",
            "1.5h",
            "1e-400s",
            "0.0000000001ns",
            "1m30s",
            "true",
            "FALSE",
            "a:1,b:2",
            "[::1]:26379",
            "a:\u00b2",
            "a:1,,b:2",
            "redis://:p/w@h/0",
            "redis://[::1]:6379",
        ]
    ),
)


@given(var=st.sampled_from(VARIABLES), value=ENV_VALUE)
@example(var="REDIS_SENTINELS", value="a:\u00b2")
@example(var="REDIS_PORT", value="70000")
@example(var="REDIS_POOL_SIZE", value="-3")
@example(var="REDIS_URL", value="redis://:top/secret@host:6379/0")
@LIMIT
def test_each_variable_parses_or_is_named(var: str, value: str) -> None:
    try:
        RedisSettings.from_env({var: value})
    except ConfigError as exc:
        message = str(exc)
        assert var in message, message
        if var == "REDIS_PASSWORD":
            _assert_hidden(value, "", [message]) if len(value) >= 4 else None


@given(env=st.dictionaries(st.sampled_from(VARIABLES), ENV_VALUE, max_size=6))
@example(env={"REDIS_PASSWORD": "true", "REDIS_URL": "", "REDIS_CLUSTER": "00"})
@LIMIT
def test_any_environment_parses_or_names_a_variable(env: dict[str, str]) -> None:
    try:
        RedisSettings.from_env(env)
    except ConfigError as exc:
        message = str(exc)
        assert any(var in message for var in env), message
        password = env.get("REDIS_PASSWORD", "")
        if len(password) >= 4:
            others = "".join(v for k, v in env.items() if k != "REDIS_PASSWORD")
            # What the message says whatever the password ("must be true or
            # false" holds "true"): the same environment with another one.
            try:
                RedisSettings.from_env({**env, "REDIS_PASSWORD": "\x00" * len(password)})
            except ConfigError as other:
                others += str(other)
            _assert_hidden(password, others, [message])
