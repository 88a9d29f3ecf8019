from __future__ import annotations

from redkit import Script
from redkit._failures import is_cluster
from redkit.connection import Client

INCR_BY = Script("incr_by", "return redis.call('INCRBY', KEYS[1], ARGV[1])")


async def _flush_scripts(client: Client) -> None:
    if is_cluster(client):
        from redis.asyncio import RedisCluster

        await client.execute_command(  # type: ignore[no-untyped-call]
            "SCRIPT FLUSH", target_nodes=RedisCluster.PRIMARIES
        )
    else:
        await client.script_flush()


async def test_script_runs_and_survives_script_flush(client: Client) -> None:
    await _flush_scripts(client)
    # First call meets NOSCRIPT and falls back to EVAL, which caches it.
    assert await INCR_BY(client, ["{s}:n"], [2]) == 2
    assert await INCR_BY(client, ["{s}:n"], [3]) == 5
    await _flush_scripts(client)
    assert await INCR_BY(client, ["{s}:n"], [1]) == 6


async def test_keys_on_every_slot_are_routed(client: Client) -> None:
    keys = [f"script-key-{i}" for i in range(30)]
    for key in keys:
        await INCR_BY(client, [key], [1])
    assert [int(v) for v in [await client.get(k) for k in keys]] == [1] * 30


def test_packaged_script_loads() -> None:
    script = Script.from_package("redkit", "py.typed")
    assert script.source == ""
    assert len(script.sha) == 40
