"""Server-side sessions in Redis: :class:`SessionStore` and the ASGI
:class:`SessionMiddleware` with :func:`load_session`, :func:`login` and
:func:`logout` for handlers."""

from .asgi import SessionMiddleware, load_session, login, logout, session_user_id
from .store import Session, SessionDataTooLarge, SessionStats, SessionStore

__all__ = [
    "Session",
    "SessionDataTooLarge",
    "SessionMiddleware",
    "SessionStats",
    "SessionStore",
    "load_session",
    "login",
    "logout",
    "session_user_id",
]
