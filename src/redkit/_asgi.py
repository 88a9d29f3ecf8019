"""What redkit's ASGI middlewares share: the ASGI types and the JSON error
answer (the rate limiter's 429 and 503, the session store's 503).

Starlette is not imported: the middlewares are plain ASGI.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "Headers", "Message", "Receive", "Scope", "Send", "error_body", "send_json"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_JSON = (b"content-type", b"application/json")


def error_body(code: str, message: str) -> bytes:
    """``{"error": {"code": ..., "message": ...}}`` as JSON bytes."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


async def send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> None:
    """Answer with ``status`` and the JSON ``body``: ``Content-Type`` and
    ``Content-Length`` first, then ``headers``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
