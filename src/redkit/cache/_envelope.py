"""The bytes redkit stores under a cache key.

A fixed 18-byte header, then the codec's payload (zlib-compressed when the
``COMPRESSED`` flag is set)::

    magic  u8   0xC7: written by redkit's cache (anything else is foreign)
    flags  u8   bit 0: payload is zlib-compressed; other bits are never set
    gen    u32  namespace generation the value was written under (clear())
    expiry u64  Redis server time (ms) at which the key expires
    delta  u32  how long the loader took (ms), for early refresh

The header costs one ``unpack_from`` on a hit; the payload is then decoded
straight from the stored bytes. Stored bytes come from outside the process:
:func:`unpack` and :func:`unpack_payload` either decode them or raise
:class:`~redkit.errors.SerializationError`, never another exception.
"""

from __future__ import annotations

import struct
import zlib

from ..errors import SerializationError

__all__ = [
    "COMPRESSED",
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_PAYLOAD",
    "pack",
    "unpack",
    "unpack_payload",
]

MAGIC = 0xC7
COMPRESSED = 0x01
HEADER = struct.Struct("<BBIQI")
HEADER_SIZE = HEADER.size
# A compressed payload may inflate to at most this many bytes: Redis's own
# largest string (proto-max-bulk-len), so no value redkit stored is refused,
# while a few stored kilobytes that inflate without end are.
MAX_PAYLOAD = 512 * 1024 * 1024
_U32 = 0xFFFFFFFF


def pack(payload: bytes, gen: int, expiry_ms: int, delta_ms: int, compress_above: int) -> bytes:
    """Header + payload; the payload is compressed when it is larger than
    ``compress_above`` bytes (0 disables) and compression actually helps."""
    flags = 0
    if compress_above and len(payload) > compress_above:
        squeezed = zlib.compress(payload, 1)
        if len(squeezed) < len(payload):
            payload = squeezed
            flags |= COMPRESSED
    header = HEADER.pack(MAGIC, flags, gen & _U32, max(expiry_ms, 0), min(max(delta_ms, 0), _U32))
    return header + payload


def unpack(raw: bytes) -> tuple[int, int, int, int, bytes]:
    """``(flags, gen, expiry_ms, delta_ms, payload)`` of stored bytes, the
    payload decompressed; :class:`SerializationError` when they are not a
    value redkit's cache wrote."""
    try:
        magic, flags, gen, expiry, delta = HEADER.unpack_from(raw)
    except (struct.error, TypeError):
        raise SerializationError("too short for a redkit value") from None
    if magic != MAGIC:
        raise SerializationError("not written by redkit's cache")
    return flags, gen, expiry, delta, unpack_payload(flags, raw)


def unpack_payload(flags: int, raw: bytes) -> bytes:
    """The codec payload of a stored value whose header had ``flags``;
    :class:`SerializationError` for unknown flags or a payload that does not
    decompress."""
    if flags == COMPRESSED:
        return _inflate(memoryview(raw)[HEADER_SIZE:])
    if flags:
        raise SerializationError(f"unknown flags {flags:#04x} in the value header")
    return raw[HEADER_SIZE:]


def _inflate(body: memoryview) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, MAX_PAYLOAD)
        # At the limit, the end of the stream may still be unread: one more
        # byte of output means the payload is over it.
        if not inflater.eof and inflater.decompress(inflater.unconsumed_tail, 1):
            raise SerializationError(f"the compressed payload is larger than {MAX_PAYLOAD} bytes")
    except (zlib.error, ValueError, MemoryError) as exc:
        raise SerializationError(f"the compressed payload does not decompress: {exc}") from None
    if not inflater.eof:
        raise SerializationError("the compressed payload is truncated")
    if inflater.unused_data:
        raise SerializationError("bytes follow the compressed payload")
    return out
