"""The demo's database: a SQLite users table behind a small async repository.

SQLite calls run in a worker thread, one connection per call, so the event
loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

from .passwords import hash_password

__all__ = ["DuplicateUsername", "NotADemoDatabase", "User", "UserRepository"]

P = ParamSpec("P")
T = TypeVar("T")

SEED_USERS = (
    ("alice", "wonderland", "Alice Liddell", "alice@example.com"),
    ("bob", "builder", "Bob Builder", "bob@example.com"),
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
)
"""


@dataclasses.dataclass(frozen=True)
class User:
    """A user as the API shows it (never the password hash)."""

    id: int
    username: str
    name: str
    email: str
    created_at: str


class DuplicateUsername(Exception):
    """Raised by :meth:`UserRepository.create` when the username is taken."""


class NotADemoDatabase(Exception):
    """Raised by :meth:`UserRepository.prepare` for a SQLite file whose
    ``users`` table is not the demo's."""


_COLUMNS = {"id", "username", "name", "email", "password_hash", "created_at"}


class UserRepository:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one call: committed (or rolled back) and closed
        at the end (a sqlite3 connection's own ``with`` does not close it)."""
        conn = sqlite3.connect(self.path, timeout=5)
        try:
            conn.row_factory = sqlite3.Row
            with conn:
                yield conn
        finally:
            conn.close()

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def init(self) -> None:
        """Create the table and the demo users on first run."""
        await self._run(self._init)

    def prepare(self) -> None:
        """:meth:`init`, called before the event loop runs: raises
        ``sqlite3.Error`` when the file cannot be opened or is not SQLite,
        :class:`NotADemoDatabase` when its users table is someone else's."""
        self._init()

    def _init(self) -> None:
        with self._connect() as conn:
            conn.execute(_SCHEMA)
            found = {row["name"] for row in conn.execute("PRAGMA table_info(users)")}
            if missing := _COLUMNS - found:
                names = ", ".join(sorted(missing))
                raise NotADemoDatabase(f"its users table is not the demo's (no {names})")
            if conn.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0:
                now = _now()
                conn.executemany(
                    "INSERT INTO users (username, name, email, password_hash, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(u, n, e, hash_password(p), now) for u, p, n, e in SEED_USERS],
                )

    async def get(self, user_id: int) -> User | None:
        return await self._run(self._get, user_id)

    def _get(self, user_id: int) -> User | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT id, username, name, email, created_at FROM users WHERE id = ?", (user_id,)
            ).fetchone()
        return User(**dict(row)) if row else None

    async def credentials(self, username: str) -> tuple[int, str] | None:
        """``(id, password_hash)`` for a username, or None."""
        return await self._run(self._credentials, username)

    def _credentials(self, username: str) -> tuple[int, str] | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT id, password_hash FROM users WHERE username = ?", (username,)
            ).fetchone()
        return (int(row["id"]), str(row["password_hash"])) if row else None

    async def page(self, page: int, limit: int) -> list[User]:
        return await self._run(self._page, page, limit)

    def _page(self, page: int, limit: int) -> list[User]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT id, username, name, email, created_at FROM users "
                "ORDER BY id LIMIT ? OFFSET ?",
                (limit, (page - 1) * limit),
            ).fetchall()
        return [User(**dict(r)) for r in rows]

    async def create(self, username: str, name: str, email: str, password: str) -> User:
        return await self._run(self._create, username, name, email, password)

    def _create(self, username: str, name: str, email: str, password: str) -> User:
        try:
            with self._connect() as conn:
                cur = conn.execute(
                    "INSERT INTO users (username, name, email, password_hash, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (username, name, email, hash_password(password), _now()),
                )
                user_id = int(cur.lastrowid or 0)
        except sqlite3.IntegrityError:
            raise DuplicateUsername(username) from None
        user = self._get(user_id)
        assert user is not None
        return user

    async def update(self, user_id: int, name: str | None, email: str | None) -> User | None:
        return await self._run(self._update, user_id, name, email)

    def _update(self, user_id: int, name: str | None, email: str | None) -> User | None:
        with self._connect() as conn:
            conn.execute(
                "UPDATE users SET name = COALESCE(?, name), email = COALESCE(?, email) "
                "WHERE id = ?",
                (name, email, user_id),
            )
        return self._get(user_id)

    async def delete(self, user_id: int) -> bool:
        return await self._run(self._delete, user_id)

    def _delete(self, user_id: int) -> bool:
        with self._connect() as conn:
            return conn.execute("DELETE FROM users WHERE id = ?", (user_id,)).rowcount > 0


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
