"""FastAPI dependencies for handlers: ``current_session``.

(The cache or any other component: ``Lifespan.depends(component)``; a rate
limit on one route: ``RateLimiter.depends(...)``.)
"""

from __future__ import annotations

import inspect
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from .session import load_session

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

__all__ = ["current_session"]


class _CurrentSession:
    """The request's session data, read from Redis on first use:
    ``session: Annotated[MutableMapping[str, Any], Depends(current_session)]``.

    What :func:`~redkit.load_session` returns, under
    :class:`~redkit.SessionMiddleware`: changes made to it are saved when the
    response starts. Raises :class:`~redkit.ConnectionUnavailable` when the
    store cannot be reached (the middleware answers 503)."""

    __name__ = "current_session"
    __qualname__ = "current_session"

    def __repr__(self) -> str:
        return "redkit.current_session"

    @property
    def __signature__(self) -> inspect.Signature:
        # FastAPI injects the request by the parameter's annotation, which
        # must be Starlette's class itself; it is imported only when FastAPI
        # asks, so that importing redkit does not need Starlette.
        from starlette.requests import HTTPConnection

        request = inspect.Parameter(
            "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection
        )
        return inspect.Signature([request], return_annotation=MutableMapping[str, Any])

    async def __call__(self, request: HTTPConnection) -> MutableMapping[str, Any]:
        return await load_session(request)


current_session = _CurrentSession()
