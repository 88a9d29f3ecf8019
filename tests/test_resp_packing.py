"""The shared connections' packer writes exactly the bytes redis-py's own
``pack_command`` writes, for every argument type, and raises redis-py's
error for the ones it refuses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from redkit._resp import LARGE, packer

CONNECTION = Connection()
PACK = packer(CONNECTION)

ARGUMENT = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(min_size=LARGE - 2, max_size=LARGE + 2),
    st.builds(memoryview, st.binary(max_size=50)),
    st.builds(bytearray, st.binary(max_size=50)),
)
NAME = st.sampled_from(["GET", "EVALSHA", "CONFIG GET", b"SET", b"CLIENT SETNAME", "xadd"])


def wire(parts: list[Any]) -> bytes:
    return b"".join(bytes(p) for p in parts)


@given(NAME, st.lists(ARGUMENT, max_size=70))
def test_same_bytes_as_redis_py(name: Any, args: list[Any]) -> None:
    command = (name, *args)
    assert wire(PACK(command)) == wire(CONNECTION.pack_command(*command))


def test_large_values_stay_separate_buffers() -> None:
    value = b"x" * (LARGE * 4)
    parts = PACK(("SET", "k", value))
    assert any(part is value for part in parts)


@pytest.mark.parametrize("bad", [True, None, object(), [1]])
def test_refused_types_raise_redis_pys_error(bad: Any) -> None:
    with pytest.raises(DataError) as ours:
        PACK(("SET", "k", bad))
    with pytest.raises(DataError) as theirs:
        CONNECTION.pack_command("SET", "k", bad)
    assert str(ours.value) == str(theirs.value)


def test_another_encoding_is_packed_by_redis_py() -> None:
    latin = Connection(encoding="latin-1")
    assert wire(packer(latin)(("SET", "k", "café"))) == wire(latin.pack_command("SET", "k", "café"))
