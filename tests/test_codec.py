from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import msgspec
import pydantic
import pytest

from redkit import ConfigError, SerializationError
from redkit.codec import (
    JsonCodec,
    MsgpackCodec,
    get_codec,
    guarded_decoder,
    strict_json_encoder,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "go"


@dataclasses.dataclass
class UserDC:
    id: int
    name: str
    roles: list[str]


class UserStruct(msgspec.Struct):
    id: int
    name: str
    roles: list[str]


class UserModel(pydantic.BaseModel):
    id: int
    name: str
    roles: list[str]


@pytest.mark.parametrize("codec", [JsonCodec(), MsgpackCodec()], ids=["json", "msgpack"])
@pytest.mark.parametrize(
    "value",
    [
        UserDC(1, "ada", ["admin"]),
        UserStruct(2, "bob", []),
        UserModel(id=3, name="cy", roles=["ops"]),
    ],
    ids=["dataclass", "struct", "pydantic"],
)
def test_typed_round_trip(codec: JsonCodec, value: object) -> None:
    kind = type(value)
    assert codec.decode(codec.encode(value), type=kind) == value
    assert codec.decode(codec.encode([value, value]), type=list[kind]) == [value, value]  # type: ignore[valid-type]


def test_untyped_json_is_plain_data() -> None:
    codec = get_codec("json")
    when = dt.datetime(2026, 11, 26, 11, 4, 5, tzinfo=dt.timezone.utc)
    data = codec.encode({"a": [1, 2.5, None, True], "when": when})
    assert json.loads(data) == {"a": [1, 2.5, None, True], "when": "2026-11-26T11:04:05Z"}
    assert codec.decode(data) == {"a": [1, 2.5, None, True], "when": "2026-11-26T11:04:05Z"}


def test_unencodable_value_names_its_type() -> None:
    class Opaque:
        pass

    with pytest.raises(SerializationError, match="Opaque"):
        get_codec("json").encode({"x": Opaque()})
    with pytest.raises(SerializationError, match="Opaque"):
        get_codec("msgpack").encode(Opaque())


def test_bytes_that_do_not_fit_the_type() -> None:
    codec = get_codec("json")
    with pytest.raises(SerializationError, match="UserDC"):
        codec.decode(b'{"id": "not a number", "name": "x", "roles": []}', type=UserDC)
    with pytest.raises(SerializationError):
        codec.decode(b"\x80\x04pickle-ish")
    with pytest.raises(SerializationError, match="UserModel"):
        codec.decode(b'{"id": "x"}', type=UserModel)


def test_codec_lookup() -> None:
    assert get_codec("json") is get_codec("json")
    custom = MsgpackCodec()
    assert get_codec(custom) is custom
    with pytest.raises(ConfigError, match="pickle"):
        get_codec("pickle")


def test_go_session_record_decodes() -> None:
    raw = (FIXTURES / "session_record.json").read_bytes()
    record = get_codec("json").decode(raw)
    assert record["user_id"] == "42" and record["data"]["cart"] == [1, 2, 3]


@dataclasses.dataclass
class Scored:
    note: str | None
    score: float


class ScoredModel(pydantic.BaseModel):
    score: float


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        {"price": float("-inf")},
        [1, [2, {"x": float("nan")}]],
        Scored(None, float("nan")),
        ScoredModel(score=float("-inf")),
    ],
    ids=["nan", "inf", "nested-inf", "deep-nan", "dataclass", "pydantic"],
)
def test_json_refuses_non_finite_floats(value: object) -> None:
    with pytest.raises(SerializationError, match="NaN or an infinite float"):
        get_codec("json").encode(value)


def test_json_keeps_null_beside_finite_floats() -> None:
    assert get_codec("json").encode({"a": None, "b": 1.5, "c": "null"}) == (
        b'{"a":null,"b":1.5,"c":"null"}'
    )


def test_msgpack_keeps_non_finite_floats() -> None:
    # msgpack has NaN and infinities; only JSON would store something else.
    codec = get_codec("msgpack")
    assert codec.decode(codec.encode(float("inf"))) == float("inf")


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_deep_nesting_is_a_serialization_error(name: str) -> None:
    codec = get_codec(name)
    with pytest.raises(SerializationError, match="nested too deeply"):
        codec.encode(_nested(5000))
    deep = msgspec.json.encode(_nested(900)) if name == "json" else None
    if deep is not None:  # decodable depth: still a value
        assert codec.decode(deep) == _nested(900)
    raw = b"[" * 100_000 + b"]" * 100_000 if name == "json" else b"\x91" * 100_000 + b"\x90"
    with pytest.raises(SerializationError, match="nested too deeply"):
        codec.decode(raw)


def test_guarded_decoder_maps_every_failure() -> None:
    typed = guarded_decoder(msgspec.json.Decoder(UserDC).decode, "user record")
    with pytest.raises(SerializationError, match="user record does not decode"):
        typed(b'{"id": "x"}')
    decode = guarded_decoder(msgspec.json.Decoder().decode, "user record")
    with pytest.raises(SerializationError, match="user record is nested too deeply"):
        decode(b"[" * 100_000)
    with pytest.raises(SerializationError):
        decode(b"\xff\xfe")


def test_strict_encoder_names_what_it_encodes() -> None:
    encode = strict_json_encoder(None, "an event payload")
    assert encode({"a": 1}) == b'{"a":1}'
    with pytest.raises(SerializationError, match="an event payload"):
        encode({"a": float("nan")})
    with pytest.raises(SerializationError, match="an event payload"):
        encode(object())
