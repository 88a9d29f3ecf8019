"""Baselines every component compares with: raw redis-py GET + msgspec JSON
decode, and raw EVALSHA of a one-line script."""

from __future__ import annotations

import msgspec

from bench.harness import Case, Env
from redkit import Script

VALUE = {"id": 42, "name": "Ada Lovelace", "email": "ada@example.com", "roles": ["admin"]}


async def cases(env: Env) -> list[Case]:
    raw = env.raw_client()
    await raw.set("bench:core:value", msgspec.json.encode(VALUE))
    decode = msgspec.json.decode
    script = Script("bench_get", "return redis.call('GET', KEYS[1])")
    await raw.script_load(script.source)

    async def raw_get() -> object:
        return decode(await raw.get("bench:core:value"))

    async def raw_evalsha() -> object:
        return await raw.evalsha(script.sha, 1, "bench:core:value")

    async def redkit_script() -> object:
        return await script(raw, ["bench:core:value"])

    return [
        Case("core", "raw GET+decode (redis-py)", raw_get, baseline=True),
        Case("core", "raw EVALSHA (redis-py)", raw_evalsha),
        Case("core", "redkit Script call", redkit_script),
    ]
