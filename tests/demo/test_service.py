"""The reference service over real HTTP: two instances on one Redis."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx

from redkit.server import EmbeddedRedis

from .conftest import Clients, Instance


async def _login(
    client: httpx.AsyncClient, username: str = "alice", password: str = "wonderland"
) -> None:
    response = await client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text


@contextlib.asynccontextmanager
async def _live_feed(client: httpx.AsyncClient) -> AsyncIterator[asyncio.Queue[str]]:
    """The lines of an instance's live feed as they come, from the moment it
    is connected (the demo subscribes before it sends ": connected")."""
    received: asyncio.Queue[str] = asyncio.Queue()

    async def listen() -> None:
        async with client.stream("GET", "/events/stream") as stream:
            async for line in stream.aiter_lines():
                await received.put(line)

    listener = asyncio.create_task(listen())
    try:
        assert await asyncio.wait_for(received.get(), 10) == ": connected"
        yield received
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def test_cache_aside_and_cross_instance_invalidation(clients: Clients) -> None:
    ca, cb = clients
    first = await ca.get("/users/1")
    assert first.status_code == 200
    assert first.headers["x-cache"] == "MISS"
    assert (await ca.get("/users/1")).headers["x-cache"] == "HIT"
    # The other instance finds it in Redis without loading.
    assert (await cb.get("/users/1")).headers["x-cache"] == "HIT"
    assert (await cb.get("/users?page=1&limit=10")).headers["x-cache"] == "MISS"
    assert (await cb.get("/users?page=1&limit=10")).headers["x-cache"] == "HIT"

    await _login(ca)
    renamed = await ca.put("/users/1", json={"name": "Alice Renamed"})
    assert renamed.status_code == 200
    # B's local tier and the shared Redis entry were both invalidated.
    fresh = await cb.get("/users/1")
    assert fresh.headers["x-cache"] == "MISS"
    assert fresh.json()["name"] == "Alice Renamed"
    listed = await cb.get("/users?page=1&limit=10")
    assert listed.headers["x-cache"] == "MISS"
    assert listed.json()["users"][0]["name"] == "Alice Renamed"


async def test_sessions_are_shared_and_login_rotates_the_id(
    instances: tuple[Instance, Instance],
) -> None:
    a, b = instances
    async with a.client() as ca:
        assert (await ca.put("/prefs", json={"theme": "dark"})).status_code == 200
        anonymous = ca.cookies["session"]
        await _login(ca)
        signed_in = ca.cookies["session"]
        assert signed_in != anonymous
        me = await ca.get("/me")
        assert me.json()["session"] == {"theme": "dark"}  # data carried over
        cookie = signed_in

    # The same cookie works on the other instance.
    async with b.client() as cb:
        cb.cookies.set("session", cookie)
        me = await cb.get("/me")
        assert me.status_code == 200
        assert me.json()["user"]["username"] == "alice"
        sessions = await cb.get("/me/sessions")
        assert len(sessions.json()["sessions"]) == 1

    # The id from before the login is dead (no session fixation).
    async with b.client() as old:
        old.cookies.set("session", anonymous)
        assert (await old.get("/me")).status_code == 401


async def test_logout_everywhere(instances: tuple[Instance, Instance]) -> None:
    a, b = instances
    async with a.client() as one, b.client() as two:
        await _login(one)
        await _login(two)
        assert len((await one.get("/me/sessions")).json()["sessions"]) == 2
        ended = await two.post("/auth/logout-all")
        assert ended.json() == {"sessions_ended": 2}
        assert (await one.get("/me")).status_code == 401
        assert (await two.get("/me")).status_code == 401


async def test_auth_rate_limit_and_headers(clients: Clients) -> None:
    ca, cb = clients
    statuses = []
    for client in (ca, cb, ca, cb, ca):
        response = await client.post("/auth/login", json={"username": "x", "password": "y"})
        statuses.append(response.status_code)
        assert response.headers["x-ratelimit-limit"] == "5"
        assert "ratelimit-policy" in response.headers
    assert statuses == [401] * 5
    # The sixth attempt from this IP is refused, whichever instance gets it.
    refused = await cb.post("/auth/login", json={"username": "alice", "password": "wonderland"})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
    assert int(refused.headers["retry-after"]) >= 1
    # Other routes still have their own allowance.
    ok = await ca.get("/users/2")
    assert ok.status_code == 200
    assert int(ok.headers["x-ratelimit-remaining"]) > 0


async def test_events_reach_the_other_instance_live_feed(clients: Clients) -> None:
    ca, cb = clients
    await _login(ca)
    async with _live_feed(cb) as received:
        await ca.put("/users/2", json={"email": "bob@builder.example"})
        lines = []
        while not any(line.startswith("data:") for line in lines):
            lines.append(await asyncio.wait_for(received.get(), 10))
        assert "event: live" in lines
        data = json.loads(next(line for line in lines if line.startswith("data:"))[5:])
        assert data["channel"] == "users"
        assert data["type"] == "user.updated"
        assert data["source"] == "a"
        assert data["payload"]["email"] == "bob@builder.example"
        assert datetime.fromisoformat(data["timestamp"]).tzinfo is not None


async def test_report_lock_gives_409_with_the_holders_fencing_token(clients: Clients) -> None:
    ca, cb = clients
    started = await ca.post("/reports/rebuild?seconds=3")
    assert started.status_code == 202
    token = started.json()["fencing_token"]
    assert started.json()["instance"] == "a"
    busy = await cb.post("/reports/rebuild?seconds=1")
    assert busy.status_code == 409
    assert busy.json()["error"] == {
        "code": "REPORT_RUNNING",
        "message": "a report rebuild is already running on a",
        "fencing_token": token,
        "instance": "a",
    }
    # While it runs, either instance says who holds the lock, and the
    # lease (2 s, shorter than the job) gets renewed.
    running = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        running = (await cb.get("/reports/status")).json()["running"]
        if running and running["renewals"] >= 2:
            break
        await asyncio.sleep(0.1)
    assert running is not None
    assert running["instance"] == "a"
    assert running["fencing_token"] == token
    assert running["lease_ttl"] == 2.0
    assert running["renewals"] >= 2
    # The job outlives its 2 s lease because the lease is renewed.
    for _ in range(100):
        status = (await cb.get("/reports/status")).json()
        if status["last"] and status["last"]["fencing_token"] == token:
            break
        await asyncio.sleep(0.1)
    assert status["running"] is None
    last = status["last"]
    assert {k: last[k] for k in ("fencing_token", "instance", "seconds", "lease_ttl")} == {
        "fencing_token": token,
        "instance": "a",
        "seconds": 3.0,
        "lease_ttl": 2.0,
    }
    assert last["held_throughout"] is True
    # Renewed every ttl / 3: about 4 times in 3 s.
    assert 3 <= last["renewals"] <= 5, last
    finished = datetime.fromisoformat(last["finished_at"])
    began = datetime.fromisoformat(last["started_at"])
    assert 2.9 <= (finished - began).total_seconds() < 4.5
    assert (await cb.get("/reports/last")).json() == last
    again = await cb.post("/reports/rebuild?seconds=0.1")
    assert again.status_code == 202
    assert again.json()["fencing_token"] > token


async def test_orders_go_through_the_durable_stream(clients: Clients) -> None:
    ca, cb = clients
    ids = [
        (await ca.post("/orders", json={"item": f"book-{i}"})).json()["event_id"] for i in range(5)
    ]
    for _ in range(100):
        done = (await cb.get("/orders/processed")).json()
        if set(ids) <= set(done):
            break
        await asyncio.sleep(0.1)
    assert {done[i]["item"] for i in ids} == {f"book-{i}" for i in range(5)}


async def test_bad_requests_get_json_errors(instances: tuple[Instance, Instance]) -> None:
    a, _ = instances
    async with a.client() as ca:
        unknown = await ca.get("/users/987654")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "NOT_FOUND"
        for bad in ("abc", "0", "-3", "1.5", "99999999999999999999999"):
            response = await ca.get(f"/users/{bad}")
            assert response.status_code == 422, bad
            assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        assert (await ca.put("/users/1", json={"name": "x"})).status_code == 401
        malformed = await ca.post(
            "/auth/login", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 422
        assert (await ca.post("/reports/rebuild?seconds=-1")).status_code == 422


async def test_unknown_user_and_wrong_password_take_the_same_time(
    instances: tuple[Instance, Instance],
) -> None:
    a, b = instances

    async def timed(client: httpx.AsyncClient, username: str) -> float:
        started = time.perf_counter()
        response = await client.post("/auth/login", json={"username": username, "password": "nope"})
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "wrong username or password"
        return time.perf_counter() - started

    unknown, wrong = [], []
    # Four attempts stay within the auth limit of 5 a minute from one address.
    async with a.client() as ca, b.client() as cb:
        for client in (ca, cb):
            unknown.append(await timed(client, "nobody-by-this-name"))
            wrong.append(await timed(client, "alice"))
    # Both pay for one scrypt check; without the dummy check an unknown user
    # answers in a fraction of the time.
    # The fastest of each: scheduling noise only ever adds time.
    ratio = min(unknown) / min(wrong)
    assert 0.5 < ratio < 2.0, (unknown, wrong)


async def test_redis_down(instances: tuple[Instance, Instance], demo_redis: EmbeddedRedis) -> None:
    a, _ = instances
    async with a.client() as ca:
        await _login(ca)
        assert (await ca.get("/users/2")).status_code == 200  # cached in the local tier
        demo_redis.stop()
        health = await ca.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy"
        # Sessions fail closed: a signed-in request gets a clear 503.
        me = await ca.get("/me")
        assert me.status_code == 503
        assert me.json()["error"]["code"] in ("SESSION_STORE_UNAVAILABLE", "REDIS_UNAVAILABLE")

    async with a.client() as anonymous:
        # The cache fails open: reads come from the database.
        user = await anonymous.get("/users/1")
        assert user.status_code == 200
        assert user.json()["username"] == "alice"
        login = await anonymous.post(
            "/auth/login", json={"username": "alice", "password": "wonderland"}
        )
        assert login.status_code == 503


async def test_signed_in_routes_have_a_per_user_limit(clients: Clients) -> None:
    ca, cb = clients
    await _login(ca)
    cb.cookies.set("session", ca.cookies["session"])
    statuses = [(await (ca if i % 2 else cb).get("/me")).status_code for i in range(60)]
    assert statuses == [200] * 60
    refused = await ca.get("/me")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
    # The sliding window weighs the previous window too: a full window
    # can take up to two periods to drain.
    assert 1 <= int(refused.headers["retry-after"]) <= 120
    # Anonymous routes are not charged to the user.
    assert (await ca.get("/users/1")).status_code == 200


async def _orders_until(
    client: httpx.AsyncClient, done: Callable[[dict[str, Any]], bool], timeout: float = 20
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        orders = {o["id"]: o for o in (await client.get("/orders")).json()["orders"]}
        if all(done(o) for o in orders.values()) or time.monotonic() > deadline:
            return orders
        await asyncio.sleep(0.1)


async def test_orders_show_attempts_instances_and_dead_letters(clients: Clients) -> None:
    ca, cb = clients
    placed = {}
    for item, fail_times in (("pen", 0), ("ink", 2), ("paper", 10)):
        response = await ca.post("/orders", json={"item": item, "fail_times": fail_times})
        assert response.status_code == 202
        placed[item] = response.json()["event_id"]
    # Read from the other instance: the record is in Redis.
    orders = await _orders_until(cb, lambda o: o["status"] != "pending")
    listing = (await cb.get("/orders")).json()
    assert listing["max_attempts"] == 3
    assert listing["retry_after"] == 1.0
    assert [o["item"] for o in listing["orders"]] == ["paper", "ink", "pen"]  # newest first

    pen = orders[placed["pen"]]
    assert pen["status"] == "processed"
    assert pen["placed_by"] == "a"
    assert pen["processed_by"] in ("a", "b")
    assert len(pen["attempts"]) == 1
    assert pen["attempts"][0]["instance"] == pen["processed_by"]
    assert "error" not in pen["attempts"][0]

    ink = orders[placed["ink"]]
    assert ink["status"] == "processed"
    assert [a.get("error") for a in ink["attempts"]] == [
        "simulated failure 1 of 2",
        "simulated failure 2 of 2",
        None,
    ]
    assert ink["attempts"][-1]["instance"] == ink["processed_by"]
    times = [datetime.fromisoformat(a["at"]) for a in ink["attempts"]]
    # A failed attempt is retried once it was idle for claim_idle (1 s).
    assert all(
        (later - earlier).total_seconds() >= 0.9 for earlier, later in itertools.pairwise(times)
    )

    paper = orders[placed["paper"]]
    assert paper["status"] == "dead-lettered"
    assert paper["processed_by"] is None
    assert len(paper["attempts"]) == 3
    assert all(a["error"].startswith("simulated failure") for a in paper["attempts"])
    dead = paper["dead_letter"]
    assert dead["deliveries"] == 3
    assert "SimulatedFailure: simulated failure 3 of 10" in dead["error"]
    assert dead["consumer"] in ("a", "b")

    done = (await ca.get("/orders/processed")).json()
    assert set(done) == {placed["pen"], placed["ink"]}
    assert done[placed["ink"]]["attempts"] == 3


async def test_order_events_reach_the_live_feed(instances: tuple[Instance, Instance]) -> None:
    a, b = instances
    async with a.client() as ca, b.client() as cb, _live_feed(cb) as received:
        event_id = (await ca.post("/orders", json={"item": "lamp", "fail_times": 10})).json()[
            "event_id"
        ]
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["type"] != "order.dead_lettered":
            line = await asyncio.wait_for(received.get(), 20)
            if line.startswith("data:"):
                seen.append(json.loads(line[5:]))
        types = [e["type"] for e in seen]
        assert types == ["order.failed"] * 3 + ["order.dead_lettered"]
        assert [e["payload"]["attempt"] for e in seen[:3]] == [1, 2, 3]
        assert all(e["payload"]["id"] == event_id for e in seen)
        assert all(e["channel"] == "activity" for e in seen)
        assert seen[-1]["payload"]["deliveries"] == 3
        assert {e["source"] for e in seen} <= {"a", "b"}


async def test_logging_out_is_not_under_the_auth_limit(
    instances: tuple[Instance, Instance],
) -> None:
    a, _ = instances
    async with a.client() as ca:
        await _login(ca)
        for _ in range(4):  # five logins: the auth allowance is spent
            response = await ca.post("/auth/login", json={"username": "alice", "password": "no"})
            assert response.status_code == 401
        refused = await ca.post("/auth/login", json={"username": "alice", "password": "wonderland"})
        assert refused.status_code == 429
        out = await ca.post("/auth/logout")
        assert out.status_code == 200
        assert out.json() == {"logged_out": True}
        assert "ratelimit-policy" in out.headers
        assert "auth" not in out.headers["ratelimit-policy"]
        assert (await ca.get("/me")).status_code == 401


async def test_preferences_live_in_the_session(clients: Clients) -> None:
    ca, cb = clients
    empty = await ca.get("/prefs")
    assert empty.json() == {"theme": None, "session": {}, "signed_in_as": None}
    assert "session" not in ca.cookies  # nothing stored, no session made
    dark = await ca.put("/prefs", json={"theme": "dark"})
    assert dark.json() == {"theme": "dark", "session": {"theme": "dark"}, "signed_in_as": None}
    await _login(ca)
    kept = (await ca.get("/prefs")).json()
    assert kept == {"theme": "dark", "session": {"theme": "dark"}, "signed_in_as": "1"}
    cb.cookies.set("session", ca.cookies["session"])
    assert (await cb.get("/prefs")).json() == kept  # the other instance reads the same
    assert (await cb.put("/prefs", json={"theme": "light"})).status_code == 200
    assert (await ca.get("/prefs")).json()["theme"] == "light"
    assert (await ca.put("/prefs", json={"theme": "pink"})).status_code == 422
    await ca.post("/auth/logout")
    assert (await ca.get("/prefs")).json() == {
        "theme": None,
        "session": {},
        "signed_in_as": None,
    }
