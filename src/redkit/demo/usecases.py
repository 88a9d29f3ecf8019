"""The demo's use cases: what the handlers call, built on the repository and
redkit's components. Cache-aside reads, invalidation and events on writes,
constant-time login."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from ..cache import Cache, Invalidator
from ..events import Publisher
from .passwords import DUMMY_HASH, verify_password
from .repository import DuplicateUsername, User, UserRepository

__all__ = ["DuplicateUsername", "UserService"]

USER_TTL = 300
LIST_TTL = 60
USERS_CHANNEL = "users"


@dataclasses.dataclass(frozen=True)
class Read:
    """A value and whether it came from the cache."""

    value: Any
    hit: bool


@dataclasses.dataclass(eq=False)
class UserService:
    repo: UserRepository
    cache: Cache
    invalidator: Invalidator
    publisher: Publisher

    async def get(self, user_id: int) -> Read:
        """The user (None when unknown; the miss is cached too, so probing
        ids does not hammer the database)."""
        loaded = False

        async def load() -> User | None:
            nonlocal loaded
            loaded = True
            return await self.repo.get(user_id)

        user = await self.cache.get_or_set(
            f"user:{user_id}", load, ttl=USER_TTL, tags=["users"], type=User | None
        )
        return Read(user, hit=not loaded)

    async def list(self, page: int, limit: int) -> Read:
        loaded = False

        async def load() -> list[User]:
            nonlocal loaded
            loaded = True
            return await self.repo.page(page, limit)

        users = await self.cache.get_or_set(
            f"user:list:{page}:{limit}", load, ttl=LIST_TTL, tags=["users"], type=list[User]
        )
        return Read(users, hit=not loaded)

    async def create(self, username: str, name: str, email: str, password: str) -> User:
        user = await self.repo.create(username, name, email, password)
        await self.invalidator.after_create("user")
        await self._publish("user.created", user)
        return user

    async def update(self, user_id: int, name: str | None, email: str | None) -> User | None:
        user = await self.repo.update(user_id, name, email)
        if user is None:
            return None
        await self.invalidator.after_update("user", user_id)
        await self._publish("user.updated", user)
        return user

    async def delete(self, user_id: int) -> bool:
        if not await self.repo.delete(user_id):
            return False
        await self.invalidator.after_delete("user", user_id)
        await self._publish("user.deleted", {"id": user_id})
        return True

    async def authenticate(self, username: str, password: str) -> int | None:
        """The user id when the password is right. An unknown username costs
        one password check too, so timing does not tell which part was
        wrong."""
        found = await self.repo.credentials(username)
        stored = found[1] if found else DUMMY_HASH
        # scrypt is deliberately slow: keep it off the event loop.
        ok = await asyncio.to_thread(verify_password, password, stored)
        return found[0] if found and ok else None

    async def _publish(self, event_type: str, payload: Any) -> None:
        await self.publisher.publish(USERS_CHANNEL, event_type, payload)
