"""layout="go": redkit and the Go service exclude each other on one lock
name, on a standalone server and on a cluster."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from redkit import ConfigError, LockNotAcquired
from redkit._ids import uuid4_text
from redkit.lock import DistributedLock

from ._go import RECORD, RELEASE_SCRIPT, go_lock, go_release, set_nx_args
from ._helpers import all_keys, eventually, slot, subscribers, value_is

NAME = RECORD["name"]
KEY = RECORD["key"]
FENCE = "{" + KEY + "}:fence"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture
async def locks(client: Any) -> Any:
    service = DistributedLock(client, layout="go")
    yield service
    await service.aclose()


def test_the_record_is_what_the_go_code_writes() -> None:
    assert KEY == "lock:" + NAME
    assert UUID.fullmatch(RECORD["value"])
    assert RECORD["acquire"] == set_nx_args(KEY, RECORD["value"], 30_000)
    assert set_nx_args(KEY, "v", 1500) == ["set", KEY, "v", "px", "1500", "nx"]
    assert 'redis.call("get", KEYS[1]) == ARGV[1]' in RELEASE_SCRIPT
    assert 'return redis.call("del", KEYS[1])' in RELEASE_SCRIPT
    assert "publish" not in RELEASE_SCRIPT.lower()


def test_tokens_are_random_version_4_uuids() -> None:
    tokens = {uuid4_text() for _ in range(10_000)}
    assert len(tokens) == 10_000
    for token in tokens:
        parsed = uuid.UUID(token)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == token  # canonical: lowercase, hyphenated
    # Every random digit varies, the variant digit over all four values.
    assert {t[19] for t in tokens} == set("89ab")
    assert all(
        len({t[i] for t in tokens}) == 16 for i in range(36) if i not in (8, 13, 14, 18, 19, 23)
    )


async def test_keys_and_token_are_the_go_services(client: Any, locks: DistributedLock) -> None:
    assert locks.layout == "go" and locks.prefix is None
    assert locks.key(NAME) == KEY
    lease = await locks.lock(NAME, ttl=10)
    assert UUID.fullmatch(lease.token) and str(uuid.UUID(lease.token)) == lease.token
    assert await client.get(KEY) == lease.token.encode()
    assert 0 < await client.pttl(KEY) <= 10_000
    # Only the Go key and the fencing counter, which shares its slot.
    assert await all_keys(client) == {KEY, FENCE}
    assert int(await client.get(FENCE)) == lease.fencing_token
    assert slot(client, FENCE) == slot(client, KEY)
    assert await lease.release() is True
    assert await all_keys(client) == {FENCE}


async def test_a_go_held_lock_blocks_redkit_until_the_go_release(
    client: Any, locks: DistributedLock
) -> None:
    value = RECORD["value"]
    assert await client.execute_command("SET", *RECORD["acquire"][1:])  # the Go service's Lock
    assert await locks.is_locked(NAME)
    with pytest.raises(LockNotAcquired):
        await locks.lock(NAME, ttl=10)

    waiter = asyncio.ensure_future(locks.acquire(NAME, ttl=10, timeout=20))
    await eventually(lambda: locks.stats().busy >= 3)  # it waits, trying again
    assert not waiter.done()
    assert await client.get(KEY) == value.encode()

    assert await go_release(client, KEY, value) == 1
    lease = await waiter
    assert await client.get(KEY) == lease.token.encode()
    assert await lease.release() is True


async def test_a_go_release_wakes_no_redkit_waiter(client: Any, locks: DistributedLock) -> None:
    # A name of its own: a cluster forwards PUBLISH between nodes with some
    # delay, so another test's release of the same name could arrive here.
    value = await go_lock(client, "nightly-export", 30_000)
    assert value is not None
    waiter = asyncio.ensure_future(locks.acquire("nightly-export", ttl=10, timeout=20))
    await eventually(lambda: value_is(subscribers(client, "lock:nightly-export:released"), 1))
    await eventually(lambda: locks.stats().busy >= 2)
    assert await go_release(client, "lock:nightly-export", value) == 1
    lease = await waiter
    # Nothing was published: the waiter found the lock free by trying again.
    assert locks.stats().wakeups == 0
    assert await lease.release() is True


async def test_a_go_held_lock_frees_the_name_when_it_expires(
    client: Any, locks: DistributedLock
) -> None:
    value = await go_lock(client, NAME, 300)  # go-redis sends PX 300
    assert value is not None
    lease = await locks.acquire(NAME, ttl=10, timeout=20)
    assert await client.get(KEY) == lease.token.encode()
    assert locks.stats().busy >= 1
    # The Go holder's late release finds another token and deletes nothing.
    assert await go_release(client, KEY, value) == 0
    assert await lease.release() is True


async def test_a_redkit_lock_blocks_the_go_service(client: Any, locks: DistributedLock) -> None:
    lease = await locks.lock(NAME, ttl=30)
    assert await go_lock(client, NAME, 30_000) is None
    assert await go_lock(client, NAME, 1500) is None
    # Go's release with its own value (never stored) leaves the lock alone.
    assert await go_release(client, KEY, str(uuid.uuid4())) == 0
    assert await client.get(KEY) == lease.token.encode()
    assert await lease.release() is True
    assert await go_lock(client, NAME, 30_000) is not None


async def test_the_go_release_script_accepts_redkits_token(
    client: Any, locks: DistributedLock
) -> None:
    lease = await locks.lock(NAME, ttl=30)
    assert await go_release(client, KEY, lease.token) == 1
    assert not await locks.is_locked(NAME)
    assert await go_lock(client, NAME, 30_000) is not None
    # redkit's own release now finds another holder's value: nothing deleted.
    assert await lease.release() is False
    assert lease.lost.is_set()
    assert await locks.is_locked(NAME)


async def test_renewal_keeps_a_go_layout_lock_from_the_go_service(
    client: Any, locks: DistributedLock
) -> None:
    async with locks.acquire(NAME, ttl=0.3, timeout=5) as lease:
        await eventually(lambda: locks.stats().extended >= 4)
        assert await go_lock(client, NAME, 30_000) is None
        assert await client.get(KEY) == lease.token.encode()
        assert 0 < await client.pttl(KEY) <= 300
        assert not lease.lost.is_set()
    assert lease.released and not lease.lost.is_set()
    assert not await locks.is_locked(NAME)


async def test_fencing_tokens_grow_across_go_holders(client: Any, locks: DistributedLock) -> None:
    first = await locks.lock(NAME, ttl=10)
    assert await first.release()
    value = await go_lock(client, NAME, 10_000)
    assert value is not None
    assert await go_release(client, KEY, value) == 1
    second = await locks.lock(NAME, ttl=10)
    # Go holders draw no token; every redkit holder draws a larger one.
    assert second.fencing_token == first.fencing_token + 1
    assert int(await client.get(FENCE)) == second.fencing_token
    assert await client.ttl(FENCE) == -1
    assert await second.release()


async def test_a_redkit_release_wakes_redkit_waiters(client: Any) -> None:
    # Backoff alone would sleep for seconds: only the wake-up makes it quick.
    async with DistributedLock(client, layout="go", retry_base=20, retry_cap=20) as locks:
        holder = await locks.lock("handoff", ttl=30)
        waiter = asyncio.ensure_future(locks.acquire("handoff", ttl=10, timeout=30))
        await eventually(lambda: value_is(subscribers(client, "lock:handoff:released"), 1))
        # The attempt a fresh subscription makes at once has been made.
        await eventually(lambda: locks.stats().busy >= 2)
        assert await holder.release()
        lease = await asyncio.wait_for(waiter, 5)
        assert locks.stats().wakeups == 1
        assert await lease.release()


async def test_a_prefix_in_the_go_layout(client: Any) -> None:
    async with DistributedLock(client, "app", layout="go") as locks:
        assert repr(locks) == "DistributedLock(prefix='app', layout='go')"
        assert locks.key("payment:order-123") == "app:lock:payment:order-123"
        lease = await locks.lock("payment:order-123", ttl=10)
        assert await client.get("app:lock:payment:order-123") == lease.token.encode()
        assert slot(client, "{app:lock:payment:order-123}:fence") == slot(
            client, "app:lock:payment:order-123"
        )
        assert await lease.release()


async def test_semaphores_in_the_go_layout(client: Any, locks: DistributedLock) -> None:
    sem = locks.semaphore("exports", limit=2, ttl=10)
    async with sem.acquire(timeout=1) as permit:
        assert await client.zscore("semaphore:{exports}", permit.token) is not None
        assert UUID.fullmatch(permit.token) is None  # not a Go record: redkit's tokens
    assert await sem.count() == 0


async def test_the_redkit_layout_is_unchanged(client: Any) -> None:
    async with DistributedLock(client) as locks:
        assert repr(locks) == "DistributedLock(prefix='app', layout='redkit')"
        assert locks.key(NAME) == "app:lock:{report-42}"
        lease = await locks.lock(NAME, ttl=10)
        assert re.fullmatch(r"[0-9a-f]{32}", lease.token)
        # Not the Go key: the two layouts do not exclude each other.
        assert await go_lock(client, NAME, 10_000) is not None
        assert await lease.release()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layout": "Go"}, r"layout must be 'redkit' or 'go', got 'Go'"),
        ({"layout": None}, r"layout must be 'redkit' or 'go', got None"),
        ({"layout": "go", "prefix": ""}, r"key prefix must not be empty"),
        ({"layout": "go", "prefix": "a{b}"}, r"key prefix must not contain"),
        ({"prefix": ""}, r"key prefix must not be empty"),
    ],
)
def test_bad_options_are_refused(redis_client: Redis, kwargs: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DistributedLock(redis_client, **kwargs)


async def test_names_with_braces_are_refused_before_any_io(redis_client: Redis) -> None:
    locks = DistributedLock(redis_client, layout="go")
    with pytest.raises(ConfigError, match="must not contain"):
        locks.lock("{report}-42", ttl=10)
    with pytest.raises(ConfigError, match="must not contain"):
        locks.key("report}")
    assert await redis_client.dbsize() == 0
