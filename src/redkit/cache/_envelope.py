"""The bytes redkit stores under a cache key.

A fixed 18-byte header, then the codec's payload (zlib-compressed when the
``COMPRESSED`` flag is set)::

    magic  u8   0xC7: written by redkit's cache (anything else is foreign)
    flags  u8   bit 0: payload is zlib-compressed
    gen    u32  namespace generation the value was written under (clear())
    expiry u64  Redis server time (ms) at which the key expires
    delta  u32  how long the loader took (ms), for early refresh

The header costs one ``unpack_from`` on a hit; the payload is then decoded
straight from the stored bytes.
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["COMPRESSED", "HEADER", "HEADER_SIZE", "MAGIC", "pack", "unpack_payload"]

MAGIC = 0xC7
COMPRESSED = 0x01
HEADER = struct.Struct("<BBIQI")
HEADER_SIZE = HEADER.size
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


def unpack_payload(flags: int, raw: bytes) -> bytes:
    """The codec payload of a stored value whose header had ``flags``."""
    body = raw[HEADER_SIZE:]
    if flags & COMPRESSED:
        return zlib.decompress(body)
    return body
