"""RateLimitMiddleware and limiter.depends() on real HTTP responses: httpx
over ASGI with Starlette and FastAPI, and one real uvicorn server."""

# No "from __future__ import annotations": FastAPI reads the routes' annotations.

import asyncio
import contextlib
import json
import re
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from redkit import ConfigError
from redkit.ratelimit import (
    Decision,
    RateLimiter,
    RateLimitMiddleware,
    RateLimitRule,
    RequestInfo,
    by_client_ip,
    by_user_or_ip,
)
from redkit.server import free_port
from redkit.testing import connected

from ._util import redis_now, wait_for_redis_time

pytestmark = pytest.mark.timeout(60)

PEER = ("203.0.113.5", 40000)


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def starlette_app(limiter: RateLimiter, rules: list[RateLimitRule], **options) -> Starlette:
    routes = [
        Route(path, ok, methods=["GET", "POST", "OPTIONS"])
        for path in ("/auth/login", "/api/items", "/api/a/b/c", "/healthz", "/other")
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(RateLimitMiddleware, limiter=limiter, rules=rules, **options)],
    )


def http(app, peer=PEER) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=peer), base_url="http://testserver"
    )


async def test_headers_and_429_on_real_responses(client):
    limiter = RateLimiter(client)
    app = starlette_app(limiter, [RateLimitRule("/auth/*", "5/minute")])
    async with http(app) as web:
        for left in (4, 3, 2, 1, 0):
            r = await web.post("/auth/login")
            assert r.status_code == 200
            assert r.text == "ok"
            assert r.headers["ratelimit-policy"] == '"/auth/*-5-per-60s";q=5;w=60'
            match = re.fullmatch(r'"/auth/\*-5-per-60s";r=(\d+);t=(\d+)', r.headers["ratelimit"])
            assert match
            assert int(match[1]) == left
            assert 0 < int(match[2]) <= 120
            assert r.headers["x-ratelimit-limit"] == "5"
            assert r.headers["x-ratelimit-remaining"] == str(left)
            assert 0 < int(r.headers["x-ratelimit-reset"]) <= 120
            assert "retry-after" not in r.headers
        r = await web.post("/auth/login")
        assert r.status_code == 429
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["error"]["code"] == "RATE_LIMITED"
        assert body["error"]["message"]
        assert set(body) == {"error"}
        assert set(body["error"]) == {"code", "message"}
        assert 1 <= int(r.headers["retry-after"]) <= 120
        assert r.headers["x-ratelimit-remaining"] == "0"
        assert r.headers["ratelimit-policy"]
        # a path no rule matches is untouched
        r = await web.get("/other")
        assert r.status_code == 200
        assert "ratelimit" not in r.headers


async def test_star_crosses_slashes_and_first_rule_wins(client):
    limiter = RateLimiter(client)
    rules = [RateLimitRule("/auth/*", "2/minute"), RateLimitRule("/*", "3/minute")]
    app = starlette_app(limiter, rules)
    async with http(app) as web:
        assert (await web.get("/api/a/b/c")).headers["x-ratelimit-limit"] == "3"
        for _ in range(2):
            assert (await web.post("/auth/login")).headers["x-ratelimit-limit"] == "2"
        assert (await web.post("/auth/login")).status_code == 429
        # the auth requests were not charged to the catch-all rule
        r = await web.get("/api/items")
        assert r.status_code == 200
        assert r.headers["x-ratelimit-remaining"] == "1"


async def test_match_all_charges_every_matching_rule(client):
    limiter = RateLimiter(client)
    rules = [RateLimitRule("/auth/*", "2/minute"), RateLimitRule("/*", "3/minute")]
    app = starlette_app(limiter, rules, match="all")
    async with http(app) as web:
        r = await web.post("/auth/login")
        policies = r.headers["ratelimit-policy"]
        assert '"/auth/*-2-per-60s";q=2;w=60' in policies
        assert '"/*-3-per-60s";q=3;w=60' in policies
        assert r.headers["x-ratelimit-limit"] == "2"  # the tighter one binds
        await web.post("/auth/login")
        assert (await web.post("/auth/login")).status_code == 429
        # two admitted auth requests used two of the catch-all's three
        r = await web.get("/api/items")
        assert r.status_code == 200
        assert r.headers["x-ratelimit-remaining"] == "0"
        assert (await web.get("/api/items")).status_code == 429


async def test_exempt_paths_and_methods(client):
    limiter = RateLimiter(client)
    app = starlette_app(
        limiter,
        [RateLimitRule("/*", "1/minute")],
        exempt_paths=["/healthz"],
        exempt_methods=["options"],
    )
    async with http(app) as web:
        for _ in range(3):
            r = await web.get("/healthz")
            assert r.status_code == 200
            assert "x-ratelimit-limit" not in r.headers
            assert (await web.options("/api/items")).status_code == 200
        assert (await web.get("/api/items")).status_code == 200
        assert (await web.get("/api/items")).status_code == 429


async def test_headers_can_be_turned_off(client):
    limiter = RateLimiter(client)
    rules = [RateLimitRule("/*", "1/minute")]
    async with http(starlette_app(limiter, rules, classic_headers=False)) as web:
        r = await web.get("/api/items")
        assert "ratelimit" in r.headers
        assert "x-ratelimit-limit" not in r.headers
        r = await web.get("/api/items")
        assert r.status_code == 429
        assert "retry-after" in r.headers
    await limiter.reset("ip:203.0.113.5")
    async with http(starlette_app(limiter, rules, headers=False)) as web:
        r = await web.get("/api/items")
        assert not [h for h in r.headers if "ratelimit" in h]
        r = await web.get("/api/items")
        # Retry-After stays: it is how a client knows when to come back
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert not [h for h in r.headers if "ratelimit" in h]


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_log", "gcra", "sliding_window"])
async def test_retry_after_header_is_never_early(client, algorithm):
    limiter = RateLimiter(client, algorithm=algorithm)
    app = starlette_app(limiter, [RateLimitRule("/*", "2/second")])
    async with http(app) as web:
        for _ in range(10):  # a fixed window may roll over meanwhile: until refused
            r = await web.get("/api/items")
            answered = await redis_now(client)
            if r.status_code == 429:
                break
        assert r.status_code == 429
        wait = int(r.headers["retry-after"])
        assert wait >= 1
        await wait_for_redis_time(client, lambda now: now >= answered + wait)
        assert (await web.get("/api/items")).status_code == 200


async def test_spoofed_forwarding_headers_from_untrusted_peers_change_nothing(client):
    limiter = RateLimiter(client)
    app = starlette_app(limiter, [RateLimitRule("/*", "2/minute")], trusted_proxies=["10.0.0.0/8"])
    async with http(app) as web:
        spoofs = [
            {"x-forwarded-for": "1.1.1.1"},
            {"x-forwarded-for": "2.2.2.2, 10.0.0.1"},
            {"forwarded": "for=3.3.3.3"},
            {"x-real-ip": "4.4.4.4"},
        ]
        statuses = [(await web.get("/api/items", headers=h)).status_code for h in spoofs]
        assert statuses == [200, 200, 429, 429]
    assert (await limiter.peek("ip:203.0.113.5", "2/minute", name="/*")).remaining == 0
    for spoofed in ("1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4", "10.0.0.1"):
        assert (await limiter.peek(f"ip:{spoofed}", "2/minute", name="/*")).remaining == 2


async def test_trusted_proxy_uses_the_rightmost_untrusted_address(client):
    limiter = RateLimiter(client)
    app = starlette_app(limiter, [RateLimitRule("/*", "1/minute")], trusted_proxies=["10.0.0.0/8"])
    async with http(app, peer=("10.1.2.3", 5000)) as web:
        # the client put a fake address first; the proxies appended the real one
        h = {"x-forwarded-for": "6.6.6.6, 198.51.100.7, 10.9.9.9"}
        assert (await web.get("/api/items", headers=h)).status_code == 200
        h = {"x-forwarded-for": "7.7.7.7, 198.51.100.7"}
        assert (await web.get("/api/items", headers=h)).status_code == 429
        # another client behind the same proxy has its own allowance
        h = {"x-forwarded-for": "198.51.100.8"}
        assert (await web.get("/api/items", headers=h)).status_code == 200
        # Forwarded is not the header named (X-Forwarded-For is, by default):
        # the proxy itself is the client
        h = {"forwarded": 'for="[2001:db8::1]:4711";proto=https, for=10.0.0.2'}
        assert (await web.get("/api/items", headers=h)).status_code == 200
        assert (await web.get("/api/items", headers=h)).status_code == 429
    seen = {
        ip: (await limiter.peek(f"ip:{ip}", "1/minute", name="/*")).remaining
        for ip in ("198.51.100.7", "198.51.100.8", "2001:db8::1", "6.6.6.6", "7.7.7.7", "10.1.2.3")
    }
    assert seen == {
        "198.51.100.7": 0,
        "198.51.100.8": 0,
        "2001:db8::1": 1,
        "6.6.6.6": 1,
        "7.7.7.7": 1,
        "10.1.2.3": 0,
    }


async def test_client_sent_forwarded_cannot_choose_the_identity_behind_an_xff_proxy(client):
    # nginx, HAProxy and cloud load balancers append X-Forwarded-For and pass
    # a client's Forwarded header through untouched
    limiter = RateLimiter(client)
    rules = [RateLimitRule("/auth/*", "3/minute")]
    app = starlette_app(limiter, rules, trusted_proxies=["10.0.0.0/8"])
    async with http(app, peer=("10.1.2.3", 5000)) as web:
        statuses = []
        for i in range(6):
            h = {"forwarded": f"for=1.2.3.{i}", "x-forwarded-for": f"6.6.6.{i}, 198.51.100.20"}
            statuses.append((await web.post("/auth/login", headers=h)).status_code)
        assert statuses == [200, 200, 200, 429, 429, 429]
    assert (await limiter.peek("ip:198.51.100.20", "3/minute", name="/auth/*")).remaining == 0
    for i in range(6):
        for spoofed in (f"1.2.3.{i}", f"6.6.6.{i}"):
            peek = await limiter.peek(f"ip:{spoofed}", "3/minute", name="/auth/*")
            assert peek.remaining == 3


async def test_forwarded_opted_in_ignores_x_forwarded_for(client):
    limiter = RateLimiter(client)
    rules = [RateLimitRule("/auth/*", "2/minute")]
    app = starlette_app(limiter, rules, trusted_proxies=["10.0.0.0/8"], proxy_header="forwarded")
    async with http(app, peer=("10.1.2.3", 5000)) as web:
        statuses = []
        for i in range(4):
            h = {
                "forwarded": f"for=6.6.6.{i}, for=198.51.100.21;proto=https",
                "x-forwarded-for": f"7.7.7.{i}",
            }
            statuses.append((await web.post("/auth/login", headers=h)).status_code)
        assert statuses == [200, 200, 429, 429]
        # X-Forwarded-For alone: not this deployment's header, so the proxy itself
        h = {"x-forwarded-for": "198.51.100.22"}
        assert (await web.post("/auth/login", headers=h)).status_code == 200
    assert (await limiter.peek("ip:198.51.100.21", "2/minute", name="/auth/*")).remaining == 0
    assert (await limiter.peek("ip:10.1.2.3", "2/minute", name="/auth/*")).remaining == 1
    for ip in ("198.51.100.22", *(f"7.7.7.{i}" for i in range(4))):
        assert (await limiter.peek(f"ip:{ip}", "2/minute", name="/auth/*")).remaining == 2


async def test_depends_reads_only_the_named_proxy_header(client):
    limiter = RateLimiter(client)
    app = FastAPI()
    default = limiter.depends("1/minute", name="xff", trusted_proxies=["10.0.0.0/8"])
    opted = limiter.depends(
        "1/minute", name="fwd", trusted_proxies=["10.0.0.0/8"], proxy_header="forwarded"
    )

    @app.get("/xff")
    async def xff(_: Annotated[Decision, Depends(default)]) -> dict[str, bool]:
        return {"ok": True}

    @app.get("/fwd")
    async def fwd(_: Annotated[Decision, Depends(opted)]) -> dict[str, bool]:
        return {"ok": True}

    async with http(app, peer=("10.1.2.3", 5000)) as web:
        for path in ("/xff", "/fwd"):
            statuses = []
            for i in range(3):
                h = {
                    "forwarded": f"for=6.6.6.{i}, for=198.51.100.30",
                    "x-forwarded-for": f"7.7.7.{i}, 198.51.100.31",
                }
                statuses.append((await web.get(path, headers=h)).status_code)
            assert statuses == [200, 429, 429], path
    assert (await limiter.peek("ip:198.51.100.31", "1/minute", name="xff")).remaining == 0
    assert (await limiter.peek("ip:198.51.100.30", "1/minute", name="fwd")).remaining == 0
    with pytest.raises(ConfigError, match="proxy_header"):
        limiter.depends("1/minute", proxy_header="x-real-ip")  # type: ignore[arg-type]


class SetUser:
    """Test middleware: the ``header`` of a request, read by ``parse``,
    becomes request.state.user_id (X-User, as text, by default)."""

    def __init__(self, app, header=b"x-user", parse=bytes.decode):
        self.app = app
        self.header = header
        self.parse = parse

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == self.header:
                    scope.setdefault("state", {})["user_id"] = self.parse(value)
        await self.app(scope, receive, send)


async def test_a_user_id_with_a_lone_surrogate_gets_its_own_allowance(client):
    limiter = RateLimiter(client)
    inner = starlette_app(limiter, [RateLimitRule("/*", "2/minute", key=by_user_or_ip)])
    # JSON can carry a lone surrogate: "\ud800"
    async with http(SetUser(inner, b"x-user-json", json.loads)) as web:
        lone = {"x-user-json": '"\\ud800"'}
        other = {"x-user-json": '"\\udfff"'}
        statuses = [(await web.get("/api/items", headers=lone)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert (await web.get("/api/items", headers=other)).status_code == 200
        assert (await web.get("/api/items")).status_code == 200  # the IP is untouched


async def test_presets_have_the_go_service_numbers(client):
    limiter = RateLimiter(client)
    rules = [RateLimitRule.auth(), RateLimitRule.api()]
    assert [(str(r.rates[0]), r.path, r.key) for r in rules] == [
        ("5/minute", "/auth/*", by_client_ip),
        ("100/minute", "/*", by_client_ip),
    ]
    user = RateLimitRule.user()
    assert str(user.rates[0]) == "60/minute"
    assert user.key is by_user_or_ip
    async with http(starlette_app(limiter, rules)) as web:
        assert (await web.post("/auth/login")).headers["x-ratelimit-limit"] == "5"
        assert (await web.get("/api/items")).headers["x-ratelimit-limit"] == "100"


async def test_user_preset_keys_by_user_then_ip(client):
    limiter = RateLimiter(client)
    inner = starlette_app(limiter, [RateLimitRule("/*", "1/minute", key=by_user_or_ip)])
    app = SetUser(inner)
    async with http(app) as web:
        assert (await web.get("/api/items", headers={"x-user": "42"})).status_code == 200
        assert (await web.get("/api/items", headers={"x-user": "42"})).status_code == 429
        assert (await web.get("/api/items", headers={"x-user": "43"})).status_code == 200
        assert (await web.get("/api/items")).status_code == 200  # by IP
        assert (await web.get("/api/items")).status_code == 429
        # an odd user id still gets its own allowance (hashed into a key)
        odd = {"x-user": "{weird}"}
        assert (await web.get("/api/items", headers=odd)).status_code == 200
        assert (await web.get("/api/items", headers=odd)).status_code == 429


async def test_fastapi_middleware_and_dependency(client):
    limiter = RateLimiter(client, algorithm="gcra")
    app = FastAPI()
    app.add_middleware(
        RateLimitMiddleware, limiter=limiter, rules=[RateLimitRule("/mw/*", "2/minute")]
    )

    @app.get("/mw/x")
    async def mw() -> dict[str, str]:
        return {"ok": "mw"}

    per_user = limiter.depends("2/minute", key=by_user_or_ip)

    @app.get("/dep")
    async def dep(decision: Annotated[Decision, Depends(per_user)]) -> dict[str, int]:
        return {"remaining": decision.remaining}

    async with http(SetUser(app)) as web:
        r = await web.get("/mw/x")
        assert r.status_code == 200
        assert r.json() == {"ok": "mw"}
        assert r.headers["x-ratelimit-remaining"] == "1"
        await web.get("/mw/x")
        r = await web.get("/mw/x")
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "RATE_LIMITED"

        r = await web.get("/dep", headers={"x-user": "7"})
        assert r.status_code == 200
        assert r.json() == {"remaining": 1}
        assert r.headers["x-ratelimit-limit"] == "2"
        assert r.headers["ratelimit-policy"] == '"depends-2-per-60s";q=2;w=60'
        await web.get("/dep", headers={"x-user": "7"})
        r = await web.get("/dep", headers={"x-user": "7"})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["x-ratelimit-remaining"] == "0"
        assert r.json()["error"]["code"] == "RATE_LIMITED"  # the middleware's body
        assert (await web.get("/dep", headers={"x-user": "8"})).status_code == 200


async def test_depends_checks_its_configuration_up_front(client):
    limiter = RateLimiter(client)
    with pytest.raises(ConfigError, match="fortnight"):
        limiter.depends("3/fortnight")
    with pytest.raises(ConfigError, match="cost"):
        limiter.depends("3/minute", cost=0)
    with pytest.raises(ConfigError, match="cost 4"):
        limiter.depends("3/minute", cost=4)
    with pytest.raises(ConfigError, match="proxy"):
        limiter.depends("3/minute", trusted_proxies=["nonsense"])
    with pytest.raises(ConfigError, match="key must be a function"):
        limiter.depends("3/minute", key="user")  # type: ignore[arg-type]


async def test_fail_open_and_fail_closed_in_http(fresh_server):
    async with connected(fresh_server, read_timeout=1.0, connect_timeout=1.0) as redis:
        opened = RateLimiter(redis, timeout=0.5)
        closed = RateLimiter(redis, timeout=0.5, fail_open=False)
        rules = [RateLimitRule("/*", "1/minute")]
        fastapi_app = FastAPI()

        strict = closed.depends("5/minute")

        @fastapi_app.get("/dep")
        async def dep(_: Annotated[Decision, Depends(strict)]) -> dict[str, bool]:
            return {"ok": True}

        fresh_server.stop()
        async with http(starlette_app(opened, rules)) as web:
            for _ in range(3):
                r = await web.get("/api/items")
                assert r.status_code == 200
                assert "x-ratelimit-limit" not in r.headers
        assert opened.stats().failed_open == 3
        async with http(starlette_app(closed, rules)) as web:
            r = await web.get("/api/items")
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "RATE_LIMIT_UNAVAILABLE"
            assert r.headers["retry-after"] == "1"
        async with http(fastapi_app) as web:
            assert (await web.get("/dep")).status_code == 503


def test_bad_middleware_configuration_fails_at_construction(redis_server):
    from redis.asyncio import Redis

    limiter = RateLimiter(Redis(host=redis_server.host, port=redis_server.port))
    rule = RateLimitRule("/*", "1/minute")
    with pytest.raises(ConfigError, match="match"):
        RateLimitMiddleware(ok, limiter=limiter, rules=[rule], match="some")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'not-an-ip'"):
        RateLimitMiddleware(ok, limiter=limiter, rules=[rule], trusted_proxies=["not-an-ip"])
    with pytest.raises(ConfigError, match="'healthz'"):
        RateLimitMiddleware(ok, limiter=limiter, rules=[rule], exempt_paths=["healthz"])
    with pytest.raises(ConfigError, match="rules"):
        RateLimitMiddleware(ok, limiter=limiter, rules=[])
    with pytest.raises(ConfigError, match="unique"):
        RateLimitMiddleware(ok, limiter=limiter, rules=[rule, RateLimitRule("/*", "2/minute")])
    with pytest.raises(ConfigError, match="rules"):
        RateLimitMiddleware(ok, limiter=limiter, rules=rule)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="trusted proxies"):
        RateLimitMiddleware(ok, limiter=limiter, rules=[rule], trusted_proxies=10)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="exempt paths"):
        RateLimitMiddleware(ok, limiter=limiter, rules=[rule], exempt_paths=5)  # type: ignore[arg-type]
    for header in ("x-real-ip", "", None, b"forwarded"):
        with pytest.raises(ConfigError, match="proxy_header"):
            RateLimitMiddleware(ok, limiter=limiter, rules=[rule], proxy_header=header)  # type: ignore[arg-type]
    assert (
        RateLimitMiddleware(
            ok, limiter=limiter, rules=[rule], proxy_header="Forwarded"
        ).proxy_header
        == "forwarded"
    )
    gcra = RateLimiter(Redis(host=redis_server.host, port=redis_server.port), algorithm="gcra")
    from redkit.ratelimit import Rate

    with pytest.raises(ConfigError, match="burst"):
        RateLimitMiddleware(
            ok, limiter=gcra, rules=[RateLimitRule("/*", Rate(5, 60, burst=1), cost=2)]
        )


@pytest.mark.parametrize(
    ("args", "kwargs", "fragment"),
    [
        (("/x", "5/fortnight"), {}, "fortnight"),
        (("/x", "0/minute"), {}, "0/minute"),
        (("/x", "-5/minute"), {}, "-5/minute"),
        (("x", "5/minute"), {}, "'x'"),
        (("/x", "5/minute"), {"cost": 0}, "cost"),
        (("/x", "5/minute"), {"cost": 6}, "cost 6"),
        (("/x", "5/minute", "not callable"), {}, "key"),
        (("/x", "5/minute"), {"name": ""}, "name"),
        (("/x", []), {}, "empty"),
        (("/x", "5/minute"), {"methods": 3}, "methods"),
        (("/x", "5/minute"), {"methods": [None]}, "methods"),
    ],
)
def test_bad_rules_fail_at_construction(args, kwargs, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        RateLimitRule(*args, **kwargs)


@contextlib.asynccontextmanager
async def uvicorn_on_loopback(app):
    """``app`` served by uvicorn on 127.0.0.1; yields the port."""
    import uvicorn

    port = free_port()
    # proxy_headers=False: uvicorn would otherwise rewrite the peer from
    # X-Forwarded-For itself (it trusts 127.0.0.1 by default)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", proxy_headers=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start within 5 s"
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_real_uvicorn_server_on_loopback(client):
    limiter = RateLimiter(client)
    app = starlette_app(limiter, [RateLimitRule("/*", "2/minute")])
    async with uvicorn_on_loopback(app) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as web:
            r1 = await web.get("/api/items", headers={"x-forwarded-for": "9.9.9.9"})
            r2 = await web.get("/api/items")
            r3 = await web.get("/api/items")
        assert [r1.status_code, r2.status_code, r3.status_code] == [200, 200, 429]
        assert r1.headers["x-ratelimit-remaining"] == "1"
        assert r1.headers["ratelimit"].startswith('"/*-2-per-60s";r=1;t=')
        assert json.loads(r3.content)["error"]["code"] == "RATE_LIMITED"
        assert int(r3.headers["retry-after"]) >= 1
        # the peer was 127.0.0.1 and the spoofed header counted for nothing
        assert (await limiter.peek("ip:127.0.0.1", "2/minute", name="/*")).remaining == 0
        assert (await limiter.peek("ip:9.9.9.9", "2/minute", name="/*")).remaining == 2


HOSTILE_VALUES = [
    b"for=",
    b'for="',
    b'for="[2001:db8::1',
    b"for=_hidden, for=unknown",
    b'for="\\"x\\", for=1.1.1.1',
    b"fe80::1%eth0, [::1]:99999999999999999999",
    b"\xff\xfe\x80 \t\x7f",
    b"9" * 4000,
    b", ".join([b"10.0.0.1"] * 1500),
    b",".join([b"for=127.0.0.1"] * 1500),
    b';;;===,,,"""',
]


@pytest.mark.parametrize("proxy_header", ["x-forwarded-for", "forwarded"])
async def test_hostile_proxy_headers_on_a_real_server_never_get_a_500(client, proxy_header):
    limiter = RateLimiter(client)
    app = starlette_app(
        limiter,
        [RateLimitRule("/*", "1000/minute")],
        trusted_proxies=["127.0.0.1"],
        proxy_header=proxy_header,
    )
    async with uvicorn_on_loopback(app) as port:
        statuses = []
        for value in HOSTILE_VALUES:
            for name in (b"X-Forwarded-For", b"Forwarded"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(
                    b"GET /api/items HTTP/1.1\r\nHost: testserver\r\n"
                    + name
                    + b": "
                    + value
                    + b"\r\n"
                    + name
                    + b": 203.0.113.1, for=203.0.113.1\r\n"
                    + b"Connection: close\r\n\r\n"
                )
                await writer.drain()
                status_line = await asyncio.wait_for(reader.readline(), 10)
                writer.close()
                await writer.wait_closed()
                statuses.append(status_line.split(b" ")[1])
        assert set(statuses) == {b"200"}, statuses


def by_api_key(request: RequestInfo) -> str | None:
    value = request.header("x-api-key")
    return None if value is None else f"key:{value}"


async def test_a_rule_whose_key_is_none_gives_way_to_the_next(client):
    limiter = RateLimiter(client)

    rules = [
        RateLimitRule("/*", "1/minute", key=by_api_key),
        RateLimitRule("/*", "2/minute", name="ip"),
    ]
    async with http(starlette_app(limiter, rules)) as web:
        with_key = {"x-api-key": "abc"}
        assert (await web.get("/api/items", headers=with_key)).headers["x-ratelimit-limit"] == "1"
        assert (await web.get("/api/items", headers=with_key)).status_code == 429
        r = await web.get("/api/items")
        assert r.headers["x-ratelimit-limit"] == "2"
        assert r.headers["x-ratelimit-remaining"] == "1"


async def test_match_all_stops_charging_at_the_first_refusal(client):
    limiter = RateLimiter(client)

    rules = [
        RateLimitRule("/*", "1/day", name="ip"),
        RateLimitRule("/*", "5/day", key=by_api_key, name="key"),
    ]
    async with http(starlette_app(limiter, rules, match="all")) as web:
        headers = {"x-api-key": "abc"}
        r = await web.get("/api/items", headers=headers)
        assert r.status_code == 200
        assert (
            r.headers["ratelimit-policy"]
            == '"ip-1-per-86400s";q=1;w=86400, "key-5-per-86400s";q=5;w=86400'
        )
        for _ in range(3):
            assert (await web.get("/api/items", headers=headers)).status_code == 429
    # the refusals by the IP rule charged nothing to the API key
    assert (await limiter.peek("key:abc", "5/day", name="key")).remaining == 4
