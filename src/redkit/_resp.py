"""Commands in Redis's wire form, packed faster than redis-py packs them.

The shared connections pack every command of every task, and redis-py's
``pack_command`` spends most of a many-argument command's client time
(a rate-limit script's EVALSHA has ten). :func:`packer` gives the same
bytes for the same arguments: ``bytes``, ``str`` (UTF-8, strict), ``int``
and ``float`` are written here; anything else goes through redis-py's own
encoder (so a ``bool`` or an unknown type raises redis-py's ``DataError``,
as it always did). Values of :data:`LARGE` bytes or more stay separate
buffers rather than being copied into one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["LARGE", "packer"]

LARGE = 16384
"""Arguments at least this long are sent as buffers of their own."""

_LENGTHS = [b"$%d\r\n" % n for n in range(256)]
_COUNTS = [b"*%d\r\n" % n for n in range(64)]

Packer = Callable[[tuple[Any, ...]], list[bytes]]


def packer(connection: Any) -> Packer:
    """The packing function for commands to ``connection`` (a redis-py
    connection: its encoder and its own ``pack_command`` as the fallback)."""
    encoder = connection.encoder
    fallback: Callable[..., list[bytes]] = connection.pack_command
    if encoder.encoding.lower().replace("-", "").replace("_", "") != "utf8" or (
        encoder.encoding_errors != "strict"
    ):
        return lambda args: fallback(*args)
    encode = encoder.encode

    def pack(args: tuple[Any, ...]) -> list[bytes]:
        name = args[0]
        if type(name) is str:
            if " " in name:
                args = (*name.encode().split(), *args[1:])
        elif type(name) is not bytes or b" " in name:
            return fallback(*args)
        count = len(args)
        pieces: list[Any] = [_COUNTS[count] if count < 64 else b"*%d\r\n" % count]
        out: list[bytes] | None = None
        for arg in args:
            kind = type(arg)
            if kind is bytes:
                data = arg
            elif kind is str:
                data = arg.encode()
            elif kind is int:
                data = b"%d" % arg
            elif kind is float:
                data = repr(arg).encode()
            else:
                data = encode(arg)
            size = len(data)
            pieces.append(_LENGTHS[size] if size < 256 else b"$%d\r\n" % size)
            if size >= LARGE or kind is memoryview:
                if out is None:
                    out = []
                out.append(b"".join(pieces))
                out.append(data)
                pieces = [b"\r\n"]
            else:
                pieces.append(data)
                pieces.append(b"\r\n")
        packed = b"".join(pieces)
        if out is None:
            return [packed]
        out.append(packed)
        return out

    return pack
