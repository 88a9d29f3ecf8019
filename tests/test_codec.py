from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import msgspec
import pydantic
import pytest

from redkit import SerializationError
from redkit.codec import JsonCodec, MsgpackCodec, get_codec

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
    with pytest.raises(ValueError, match="pickle"):
        get_codec("pickle")


def test_go_session_record_decodes() -> None:
    raw = (FIXTURES / "session_record.json").read_bytes()
    record = get_codec("json").decode(raw)
    assert record["user_id"] == "42" and record["data"]["cart"] == [1, 2, 3]
