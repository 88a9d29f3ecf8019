"""ASGI by hand, for tests and benchmarks that call an app directly (no
HTTP client, no server): a request scope and one request's answer."""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]


def http_scope(
    path: str = "/",
    *,
    method: str = "GET",
    headers: Iterable[tuple[bytes, bytes]] = (),
    client: tuple[str, int] | None = ("127.0.0.1", 1),
    server: tuple[str, int] = ("127.0.0.1", 80),
) -> dict[str, Any]:
    """The scope of one HTTP/1.1 request; ``path`` may end in ``?query``."""
    route, _, query = path.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": route,
        "raw_path": route.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": list(headers),
        "client": client,
        "server": server,
    }


async def no_body() -> Message:
    """``receive`` of a request without a body."""
    return {"type": "http.request", "body": b"", "more_body": False}


async def response_status(app: Any, scope: dict[str, Any]) -> int:
    """Run ``app`` on one request without a body; the status it answered
    (exactly one response start, or the assertion fails)."""
    statuses: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, no_body, send)
    (status,) = statuses
    return status
