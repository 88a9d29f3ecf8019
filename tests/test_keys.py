from __future__ import annotations

import pytest

from redkit import ConfigError, KeySpace
from redkit.keys import escape_glob, validate_key_part


def test_key_convention() -> None:
    ks = KeySpace()
    assert ks.key("user", "123") == "app:user:123"
    assert ks.key("session", "abc", "data") == "app:session:abc:data"
    assert KeySpace("svc:v2").key("lock", "payment:order-123") == "svc:v2:lock:payment:order-123"


def test_hash_tags_keep_related_keys_in_one_slot() -> None:
    from redis.crc import key_slot

    ks = KeySpace()
    a = ks.tagged("ratelimit", "client-1", "a")
    b = ks.tagged("ratelimit", "client-1", "b")
    assert a == "app:ratelimit:{client-1}:a"
    assert key_slot(a.encode()) == key_slot(b.encode()) == key_slot(b"client-1")
    assert ks.tagged("lock", "job") == "app:lock:{job}"


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ("", "empty"),
        ("a\nb", "control character"),
        ("tab\there", "control character"),
        ("x" * 513, "513 characters"),
        (42, "must be a string"),
    ],
)
def test_bad_parts_are_rejected(part: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KeySpace().key("user", part)  # type: ignore[arg-type]


def test_braces_are_refused_where_they_would_move_a_hash_tag() -> None:
    with pytest.raises(ValueError, match="prefix"):
        KeySpace("a{b}")
    with pytest.raises(ValueError, match="hash tag"):
        KeySpace().tagged("lock", "x}y")
    assert validate_key_part("{ok}") == "{ok}"


def test_pattern_escapes_the_prefix_only() -> None:
    ks = KeySpace("we*ird")
    assert ks.pattern("user", "list", "*") == "we\\*ird:user:list:*"
    assert escape_glob("a?[b]\\") == "a\\?\\[b\\]\\\\"


def test_owns_and_relative() -> None:
    ks = KeySpace("app")
    assert ks.owns(b"app:user:1") and not ks.owns("apple:user:1")
    assert ks.relative("app:user:1") == "user:1"
    with pytest.raises(ValueError, match="not under prefix"):
        ks.relative("other:user:1")


@pytest.mark.parametrize("part", ["\ud800", "user-\udfff", "\udc80abc"])
def test_lone_surrogates_are_refused(part: str) -> None:
    # JSON can carry "\ud800"; as a key part it would fail only later, when
    # redis-py encodes the command, far from the caller.
    with pytest.raises(ConfigError, match="lone surrogate"):
        validate_key_part(part, "user id")


def test_non_ascii_text_is_a_key_part() -> None:
    assert validate_key_part("zoë-日本-🙂") == "zoë-日本-🙂"


@pytest.mark.parametrize("part", ["{user}:42", "user:{42}", "a{b}c"])
def test_tag_mode_takes_one_brace_pair(part: str) -> None:
    assert validate_key_part(part, "cache key", allow_braces="tag") == part


@pytest.mark.parametrize("part", ["a{b", "a}b", "a{b}c}", "{a}{b}", "x{}y", "}a{", "{{a}}"])
def test_tag_mode_refuses_stray_braces(part: str) -> None:
    with pytest.raises(ConfigError, match="one non-empty"):
        validate_key_part(part, "cache key", allow_braces="tag")


def test_no_brace_mode_refuses_any_brace() -> None:
    with pytest.raises(ConfigError, match="must not contain"):
        validate_key_part("{a}", "lock name", allow_braces=False)
