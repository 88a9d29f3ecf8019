"""Replies meet the commands they answer: many tasks, mixed commands, error
replies and a 10 MB value on the same shared connections."""

from __future__ import annotations

import asyncio
import random

import pytest
from redis.exceptions import ResponseError

from redkit.connection import Client

from ._helpers import delta, stats

TASKS = 256
ROUNDS = 40
OPS = ("set", "get", "incr", "hset", "hgetall", "lpush", "lrange", "eval", "not_integer")
# Echoes its key and argument back, and a number one more than ARGV[2].
ECHO = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}"


async def _worker(client: Client, task: int) -> int:
    """ROUNDS commands on the task's own keys, each reply checked against
    what this task's command must return; the commands it sent."""
    rng = random.Random(task)
    tag = f"{{w{task}}}"  # one slot per task, so EVAL's key is on its node
    text, number, fields, items, word = (f"{tag}:{n}" for n in ("s", "n", "h", "l", "w"))
    assert await client.set(word, f"word-{task}") is True
    value: bytes | None = None
    counter = 0
    mapping: dict[bytes, bytes] = {}
    pushed: list[bytes] = []
    for step in range(ROUNDS):
        op = rng.choice(OPS)
        mark = f"{task}:{step}:{rng.randrange(1 << 30)}"
        if op == "set":
            value = mark.encode()
            assert await client.set(text, value) is True
        elif op == "get":
            assert await client.get(text) == value
        elif op == "incr":
            counter += 1
            assert await client.incr(number) == counter
        elif op == "hset":
            field = f"f{rng.randrange(4)}".encode()
            new = field not in mapping
            mapping[field] = mark.encode()
            assert await client.hset(fields, field, mark) == int(new)
        elif op == "hgetall":
            assert await client.hgetall(fields) == mapping
        elif op == "lpush":
            pushed.insert(0, mark.encode())
            assert await client.lpush(items, mark) == len(pushed)
        elif op == "lrange":
            assert await client.lrange(items, 0, -1) == pushed
        elif op == "eval":
            reply = await client.eval(ECHO, 1, text, mark, step)
            assert reply == [text.encode(), mark.encode(), step + 1]
        else:
            # An error reply fails only its own command.
            with pytest.raises(ResponseError, match="not an integer"):
                await client.incr(word)
    return ROUNDS + 1


async def test_every_task_gets_the_replies_to_its_own_commands(client: Client) -> None:
    before = stats(client)
    sent = await asyncio.gather(*(_worker(client, task) for task in range(TASKS)))
    after = stats(client)
    grown = delta(before, after)
    assert sum(sent) == TASKS * (ROUNDS + 1)
    assert grown["commands"] == sum(sent)
    assert grown["dedicated"] == 0
    assert grown["dropped"] == 0
    assert grown["reconnects"] == 0
    assert after.in_flight == 0
    # Batching: the socket writes carried many commands each.
    assert grown["commands"] / grown["batches"] > 2


async def test_a_10mb_value_among_small_concurrent_commands(client: Client) -> None:
    big = random.Random(10).randbytes(10 << 20)
    small = {f"{{big}}:small:{i}": f"value-{i}".encode() for i in range(300)}
    await asyncio.gather(*(client.set(k, v) for k, v in small.items()))
    keys = list(small)

    # The large write goes out with small reads around it.
    stored, *first = await asyncio.gather(
        client.set("{big}:value", big), *(client.get(k) for k in keys)
    )
    assert stored is True
    assert first == list(small.values())

    # The large reply comes back among small writes and reads.
    changed = {k: v + b"-2" for k, v in small.items()}
    writes = [client.set(k, v) for k, v in changed.items()]
    results = await asyncio.gather(*writes[:150], client.get("{big}:value"), *writes[150:])
    assert results.pop(150) == big
    assert results == [True] * len(changed)
    again = await asyncio.gather(
        *(client.get(k) for k in keys[:150]),
        client.strlen("{big}:value"),
        *(client.get(k) for k in keys[150:]),
    )
    assert again.pop(150) == len(big)
    assert again == list(changed.values())
    assert stats(client).in_flight == 0
