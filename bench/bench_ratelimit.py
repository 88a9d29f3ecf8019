"""Rate limiting: RateLimiter.hit per algorithm beside a raw redis-py EVALSHA
of a comparable script and the ``limits`` library (async redis storage), and
the per-request cost of RateLimitMiddleware on a Starlette app."""

from __future__ import annotations

from typing import Any

from tests._asgi import http_scope, no_body

from bench.harness import Case, Env
from redkit import Script
from redkit.ratelimit import RateLimiter, RateLimitMiddleware, RateLimitRule

RATE = "1000000/minute"  # never refuses during a run: every hit writes

# A minimal fixed-window check on Redis time, for reference: what a
# hand-written limiter would send (TIME, GET, SET ... PX).
MINIMAL_SCRIPT = """
local t = redis.call('TIME')
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + 1 > tonumber(ARGV[1]) then return {0, used} end
redis.call('SET', KEYS[1], used + 1, 'PX', ARGV[2])
return {1, used + 1}
"""


async def cases(env: Env) -> list[Case]:
    raw = env.raw_client()
    minimal = Script("bench_ratelimit_minimal", MINIMAL_SCRIPT)
    await raw.script_load(minimal.source)
    out: list[Case] = []
    for algorithm in ("sliding_window", "fixed_window", "sliding_log", "gcra"):
        limiter = RateLimiter(raw, prefix="bench", algorithm=algorithm)  # type: ignore[arg-type]
        # the very call hit() makes, sent by hand: same script, keys, arguments
        plan = limiter._plan(RATE)
        head = "bench:ratelimit:{ip:10.0.0.2}"
        keys = [head] + ([f"{head}:{f}" for f in plan.fields] if algorithm == "sliding_log" else [])
        args = plan.hit_args
        sha = limiter._script.sha
        await raw.script_load(limiter._script.source)

        async def raw_evalsha(
            sha: str = sha, keys: list[str] = keys, args: tuple[str, ...] = args
        ) -> object:
            return await raw.evalsha(sha, len(keys), *keys, *args)

        async def hit(limiter: RateLimiter = limiter) -> object:
            return await limiter.hit("ip:10.0.0.1", RATE)

        out.append(
            Case(
                "ratelimit",
                f"raw EVALSHA {algorithm}.lua",
                raw_evalsha,
                baseline=algorithm == "sliding_window",
                note="redis-py, no redkit code",
            )
        )
        out.append(Case("ratelimit", f"redkit hit {algorithm}", hit))

    async def raw_minimal() -> object:
        return await raw.evalsha(minimal.sha, 1, "bench:rl:minimal", "1000000", "60000")

    out.append(
        Case("ratelimit", "raw EVALSHA minimal fixed window", raw_minimal, note="TIME+GET+SET")
    )
    multi = RateLimiter(raw, prefix="bench-multi", algorithm="sliding_window")  # type: ignore[arg-type]
    three = ["1000000/second", "10000000/minute", "100000000/hour"]

    async def hit_three() -> object:
        return await multi.hit("ip:10.0.0.1", three)

    out.append(Case("ratelimit", "redkit hit sliding_window, 3 limits", hit_three))
    out += _limits_cases(env)
    out += _middleware_cases(raw)
    return out


def _limits_cases(env: Env) -> list[Case]:
    from limits import parse
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import (
        FixedWindowRateLimiter,
        MovingWindowRateLimiter,
        SlidingWindowCounterRateLimiter,
    )

    storage = RedisStorage(f"async+redis://{env.host}:{env.port}", implementation="redispy")
    item = parse(RATE)
    cases = []
    for name, strategy in (
        ("moving window", MovingWindowRateLimiter),
        ("sliding window counter", SlidingWindowCounterRateLimiter),
        ("fixed window", FixedWindowRateLimiter),
    ):
        limiter = strategy(storage)

        async def hit(limiter: Any = limiter, space: str = name) -> object:
            return await limiter.hit(item, space, "10.0.0.1")

        cases.append(
            Case("ratelimit", f"limits 5.8 {name}", hit, counted=False, note="redis-py storage")
        )
    return cases


def _middleware_cases(raw: Any) -> list[Case]:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def items(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    routes = [Route("/api/items", items)]
    bare = Starlette(routes=routes)
    limiter = RateLimiter(raw, prefix="bench-mw")
    limited = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                RateLimitMiddleware,
                limiter=limiter,
                rules=[RateLimitRule("/auth/*", "5/minute"), RateLimitRule("/*", RATE)],
            )
        ],
    )
    scope = http_scope(
        "/api/items",
        headers=[(b"host", b"testserver")],
        client=("203.0.113.9", 40000),
        server=("testserver", 80),
    )

    async def send(message: Any) -> None:
        return None

    async def call_bare() -> object:
        return await bare(dict(scope), no_body, send)

    async def call_limited() -> object:
        return await limited(dict(scope), no_body, send)

    return [
        Case("ratelimit-mw", "Starlette app, no middleware", call_bare, baseline=True),
        Case("ratelimit-mw", "same app + RateLimitMiddleware", call_limited),
    ]
