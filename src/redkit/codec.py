"""Value encoding: JSON through msgspec by default, msgpack as an option.

``decode(data, type=T)`` builds ``T`` directly (dataclasses, msgspec
Structs, ``TypedDict``, ``list[T]``, datetimes ...), and pydantic models
where pydantic is installed. Pickle is never used: loading a pickle runs
arbitrary code, and Redis contents are not trusted input.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, overload

import msgspec

from .errors import ConfigError, SerializationError

__all__ = [
    "Codec",
    "JsonCodec",
    "MsgpackCodec",
    "get_codec",
    "guarded_decoder",
    "strict_json_encoder",
]

T = TypeVar("T")


class Codec(Protocol):
    """What the components need from a codec."""

    name: str

    def encode(self, value: Any) -> bytes:
        """Bytes for ``value``; :class:`SerializationError` when it has no encoding."""
        ...

    @overload
    def decode(self, data: bytes, type: None = None) -> Any: ...
    @overload
    def decode(self, data: bytes, type: type[T]) -> T: ...
    def decode(self, data: bytes, type: Any = None) -> Any:
        """The value in ``data``, built as ``type`` when given;
        :class:`SerializationError` when the bytes do not fit."""
        ...


def _enc_hook(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic v2
    if callable(dump):
        return dump(mode="json")
    raise NotImplementedError(f"cannot encode objects of type {type(value).__qualname__}")


def _dec_hook(tp: Any, obj: Any) -> Any:
    validate = getattr(tp, "model_validate", None)  # pydantic v2
    if callable(validate):
        return validate(obj)
    raise NotImplementedError(f"cannot decode into {_type_name(tp)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)


# Exceptions msgspec raises for a value or bytes it cannot handle. A
# RecursionError comes from nesting deeper than the interpreter's recursion
# limit (about a thousand levels): bytes from outside the process can be
# built that way on purpose, so it is a bad value like any other.
_ENCODE_FAILURES = (TypeError, NotImplementedError, OverflowError, ValueError, RecursionError)
_DECODE_FAILURES = (msgspec.DecodeError, ValueError, TypeError, NotImplementedError, RecursionError)


def strict_json_encoder(
    enc_hook: Callable[[Any], Any] | None = _enc_hook, what: str = "value"
) -> Callable[[Any], bytes]:
    """A JSON encode function that raises :class:`SerializationError` for
    anything JSON cannot carry faithfully: unsupported types, nesting past
    the recursion limit, and NaN or infinite floats (msgspec writes those as
    ``null``, which would store a different value than the caller passed;
    Go's encoder refuses them). Every JSON writer of redkit uses one."""
    encode = msgspec.json.Encoder(enc_hook=enc_hook).encode

    def encode_strict(value: Any) -> bytes:
        try:
            out = encode(value)
        except RecursionError:
            raise SerializationError(f"cannot encode {what} as JSON: nested too deeply") from None
        except _ENCODE_FAILURES as exc:
            raise SerializationError(
                f"cannot encode {what} of type {type(value).__qualname__} as JSON: {exc}"
            ) from exc
        # A non-finite float comes out as null, so only output with a null
        # in it can hide one; everything else skips the walk.
        if b"null" in out and _holds_non_finite(value, enc_hook):
            raise SerializationError(
                f"cannot encode {what} as JSON: it holds NaN or an infinite float, "
                "which JSON has no number for"
            )
        return out

    return encode_strict


def _holds_non_finite(value: Any, enc_hook: Callable[[Any], Any] | None) -> bool:
    try:
        plain = msgspec.to_builtins(value, enc_hook=enc_hook)
    except _ENCODE_FAILURES:  # encoded fine just before; nothing better to say
        return False
    stack = [plain]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                return True
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is dict:
            stack.extend(item.values())
            stack.extend(key for key in item if type(key) is float)
    return False


def guarded_decoder(decode: Callable[[bytes], T], what: str) -> Callable[[bytes], T]:
    """``decode`` raising :class:`SerializationError` (naming ``what``) for
    any bytes it cannot decode, nesting past the recursion limit included,
    and never another exception."""

    def decode_guarded(data: bytes) -> T:
        try:
            return decode(data)
        except RecursionError:
            raise SerializationError(f"{what} is nested too deeply to decode") from None
        except _DECODE_FAILURES as exc:
            raise SerializationError(f"{what} does not decode: {exc}") from exc

    return decode_guarded


class _BaseCodec:
    name = "base"
    _decode_error: type[Exception] = msgspec.DecodeError

    def __init__(self) -> None:
        self._decoders: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def _make_decoder(self, tp: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _decoder_for(self, tp: Any) -> Any:
        decoder = self._decoders.get(tp)
        if decoder is None:
            with self._lock:
                decoder = self._decoders.get(tp)
                if decoder is None:
                    decoder = self._build_decoder(tp)
                    self._decoders[tp] = decoder
        return decoder

    def _build_decoder(self, tp: Any) -> Any:
        try:
            return self._make_decoder(tp).decode
        except TypeError:
            raise SerializationError(f"cannot decode into {_type_name(tp)}") from None

    def decode(self, data: bytes, type: Any = None) -> Any:
        try:
            return self._decoder_for(type)(data)
        except SerializationError:
            raise
        except RecursionError:
            raise SerializationError("stored bytes are nested too deeply to decode") from None
        except _DECODE_FAILURES as exc:
            raise SerializationError(
                f"stored bytes do not decode as {_type_name(type) if type else self.name}: {exc}"
            ) from exc


class JsonCodec(_BaseCodec):
    """JSON via msgspec: compact, fast, readable with ``redis-cli``, and what
    the Go service reads."""

    name = "json"

    def __init__(self) -> None:
        super().__init__()
        self._encode = strict_json_encoder(_enc_hook, "a value")
        self._decoders[None] = msgspec.json.Decoder().decode

    def _make_decoder(self, tp: Any) -> Any:
        return msgspec.json.Decoder(tp, dec_hook=_dec_hook)

    def encode(self, value: Any) -> bytes:
        return self._encode(value)


class MsgpackCodec(_BaseCodec):
    """MessagePack via msgspec: smaller and faster than JSON, not readable by eye."""

    name = "msgpack"

    def __init__(self) -> None:
        super().__init__()
        self._encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
        self._decoders[None] = msgspec.msgpack.Decoder().decode

    def _make_decoder(self, tp: Any) -> Any:
        return msgspec.msgpack.Decoder(tp, dec_hook=_dec_hook)

    def encode(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value)
        except RecursionError:
            raise SerializationError(
                "cannot encode a value as msgpack: nested too deeply"
            ) from None
        except _ENCODE_FAILURES as exc:
            raise SerializationError(
                f"cannot encode a value of type {type(value).__qualname__} as msgpack: {exc}"
            ) from exc


_NAMED: dict[str, Codec] = {}


def get_codec(codec: str | Codec = "json") -> Codec:
    """A codec by name (``"json"``, ``"msgpack"``) or the codec object itself."""
    if not isinstance(codec, str):
        return codec
    found = _NAMED.get(codec)
    if found is None:
        if codec == "json":
            found = JsonCodec()
        elif codec == "msgpack":
            found = MsgpackCodec()
        else:
            raise ConfigError(f"unknown codec {codec!r}: use 'json', 'msgpack' or a Codec object")
        _NAMED[codec] = found
    return found
