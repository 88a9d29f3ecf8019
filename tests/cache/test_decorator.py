"""cache.cached(...): the template's key is get()'s key, hits decode into
the return annotation, invalidate() takes the function's arguments."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import pytest

from redkit import ConfigError, SerializationError
from redkit.cache import MISSING, Cache


@dataclasses.dataclass
class User:
    id: str
    name: str


async def test_key_and_type_match_get(client: Any) -> None:
    cache = Cache(client)
    calls: list[str] = []

    @cache.cached(ttl=300, key="user:{user_id}", tags=["users"])
    async def get_user(user_id: str) -> User:
        calls.append(user_id)
        return User(user_id, f"name-{user_id}")

    first = await get_user("42")
    again = await get_user(user_id="42")
    assert first == again == User("42", "name-42")
    assert type(again) is User  # decoded into the return annotation
    assert calls == ["42"]
    assert await cache.get("user:42", type=User) == User("42", "name-42")
    assert await client.exists("app:user:42") == 1
    assert get_user.key("42") == get_user.key(user_id="42") == "user:42"
    # a value set through the cache is what the decorated function returns
    await cache.set("user:7", User("7", "set directly"), ttl=60)
    assert await get_user("7") == User("7", "set directly")
    assert calls == ["42"]

    assert await get_user.invalidate(user_id="42") is True
    assert await cache.get("user:42", default=MISSING) is MISSING
    assert await get_user.invalidate(user_id="42") is False
    await get_user("42")
    assert calls == ["42", "42"]
    assert await cache.invalidate_tags("users") == 1  # user:7 was set untagged
    assert get_user.__name__ == "get_user"


async def test_templates_over_several_arguments_and_defaults(client: Any) -> None:
    cache = Cache(client)
    calls = 0

    @cache.cached(ttl=60, key="orders:{user_id}:{page}", tags=["orders:{user_id}"])
    async def orders(user_id: int, page: int = 1, *, db: object = None) -> list[int]:
        nonlocal calls
        calls += 1
        return [user_id, page]

    assert await orders(5) == [5, 1]
    assert await orders(5, 1) == [5, 1]
    assert await orders(user_id=5, page=1, db=object()) == [5, 1]
    assert calls == 1
    assert await orders(5, 2) == [5, 2]
    assert calls == 2
    assert orders.key(5, 2) == "orders:5:2"
    assert await cache.exists("orders:5:2")
    assert await cache.invalidate_tags("orders:5") == 2
    assert await orders(5) == [5, 1]
    assert calls == 3
    with pytest.raises(TypeError):
        await orders()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await orders(5, 1, 2)  # type: ignore[misc]
    with pytest.raises(TypeError, match="needs 'user_id'"):
        orders.key(page=3)


async def test_return_annotations(client: Any) -> None:
    cache = Cache(client)

    @cache.cached(ttl=60, key="team:{team}")
    async def members(team: str) -> list[User]:
        return [User("1", "a"), User("2", "b")]

    @cache.cached(ttl=60, key="maybe:{name}")
    async def maybe(name: str) -> Optional[User]:  # noqa: UP045 - an old spelling on purpose
        return None if name == "none" else User(name, name)

    @cache.cached(ttl=60, key="raw:{n}")
    async def untyped(n: int):  # type: ignore[no-untyped-def]
        return {"n": n}

    await members("x")
    hit = await members("x")
    assert [type(u) for u in hit] == [User, User]
    assert await maybe("none") is None
    assert await maybe("none") is None
    assert await cache.get("maybe:none", default=MISSING) is None
    assert await maybe("ada") == User("ada", "ada")
    assert type(await maybe("ada")) is User
    assert await untyped(3) == {"n": 3}
    assert await untyped(3) == {"n": 3}


async def test_default_key_and_methods(client: Any) -> None:
    cache = Cache(client)

    class Repo:
        def __init__(self) -> None:
            self.calls = 0

        @cache.cached(ttl=60)
        async def find(self, ident: str) -> str:
            self.calls += 1
            return ident.upper()

    one, two = Repo(), Repo()
    assert await one.find("a") == "A"
    assert await two.find("a") == "A"  # same key: `self` is not part of it
    assert one.calls + two.calls == 1
    assert Repo.find.key(one, "a").endswith("Repo.find:a")
    assert one.find.key("a") == Repo.find.key(one, "a")
    assert await one.find.invalidate("a") is True
    assert await two.find("a") == "A"
    assert one.calls + two.calls == 2


async def test_format_specs_and_similar_names(client: Any) -> None:
    cache = Cache(client)

    @cache.cached(ttl=60, key="p:{{literal}}:{user}:{user_id:>4}:{user!r}")
    async def f(user: str, user_id: int) -> str:
        return f"{user}-{user_id}"

    assert f.key("a", 7) == "p:{literal}:a:   7:'a'"
    assert await f("a", 7) == "a-7"
    assert await f(user="a", user_id=7) == "a-7"
    assert await cache.get("p:{literal}:a:   7:'a'") == "a-7"


def test_bad_declarations(redis_client: Any) -> None:
    cache = Cache(redis_client)
    with pytest.raises(ConfigError, match="'uid'"):

        @cache.cached(ttl=60, key="user:{uid}")
        async def f(user_id: str) -> str:
            return user_id

    with pytest.raises(ConfigError, match="'nope'"):

        @cache.cached(ttl=60, key="x:{user_id}", tags=["t:{nope}"])
        async def g(user_id: str) -> str:
            return user_id

    with pytest.raises(ConfigError, match="unnamed"):

        @cache.cached(ttl=60, key="x:{}")
        async def h(user_id: str) -> str:
            return user_id

    with pytest.raises(ConfigError, match="async def"):

        @cache.cached(ttl=60, key="x")  # type: ignore[arg-type]
        def sync(user_id: str) -> str:
            return user_id

    with pytest.raises(ConfigError, match="ttl"):
        cache.cached(ttl=0, key="x")
    with pytest.raises(ConfigError, match="default_ttl"):
        Cache(redis_client, default_ttl=None).cached(key="x")


async def test_undecodable_return_annotation_is_a_loud_error(redis_client: Any) -> None:
    cache = Cache(redis_client)

    @cache.cached(ttl=60, key="x:{n}")
    async def odd(n: int) -> dict[str, object]:
        return {"n": n}

    assert await odd(1) == {"n": 1}  # the miss returns the function's value
    with pytest.raises(SerializationError, match="cannot decode into object"):
        await odd(1)  # a hit cannot be built as dict[str, object]: said loudly

    @cache.cached(ttl=60, key="y:{n}", type=dict)
    async def fixed(n: int) -> dict[str, object]:
        return {"n": n}

    assert await fixed(1) == {"n": 1}
    assert await fixed(1) == {"n": 1}


async def test_unresolvable_return_annotation(redis_client: Any) -> None:
    cache = Cache(redis_client)

    @dataclasses.dataclass
    class Local:  # not visible to get_type_hints from module globals
        n: int

    @cache.cached(ttl=60, key="local:{n}")
    async def make(n: int) -> Local:
        return Local(n)

    with pytest.raises(TypeError, match="pass type="):
        await make(1)

    @cache.cached(ttl=60, key="local2:{n}", type=Local)
    async def make_typed(n: int) -> Local:
        return Local(n)

    assert await make_typed(1) == Local(1)
    assert await make_typed(1) == Local(1)


async def test_bad_argument_values_make_bad_keys(client: Any) -> None:
    cache = Cache(client)

    @cache.cached(ttl=60, key="user:{user_id}")
    async def get_user(user_id: str) -> str:
        return user_id

    with pytest.raises(ConfigError, match="control character"):
        await get_user("bad\nid")
