"""Two demo instances served by uvicorn on loopback ports, sharing one
private Redis and one SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI

from redkit.demo.app import DemoConfig, DemoServer, create_app
from redkit.server import EmbeddedRedis, free_port
from redkit.testing import settings_for


@dataclasses.dataclass
class Instance:
    url: str
    server: DemoServer
    task: asyncio.Task[None]
    app: FastAPI

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10)


# an HTTP client of each of the two instances
Clients = tuple[httpx.AsyncClient, httpx.AsyncClient]


async def start_instance(redis: EmbeddedRedis, db: Path, name: str, **options: Any) -> Instance:
    port = free_port()
    config = DemoConfig(
        redis=settings_for(redis, min_idle_conns=0, max_retries=0),
        db_path=str(db),
        instance=name,
        secret_key="test-secret-key-for-the-demo-0123456789",
        # A failed order is retried after 1 s, so retries fit in a test.
        **{"order_claim_idle": 1.0, **options},
    )
    app = create_app(config)
    server = DemoServer(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
            # The tests call from 127.0.0.1 and set no proxy headers; keep
            # uvicorn from rewriting the client address anyway.
            proxy_headers=False,
        )
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
            raise AssertionError(f"the demo did not start: {server.startup_error}")
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the demo did not start")
    return Instance(f"http://127.0.0.1:{port}", server, task, app)


async def stop_instance(instance: Instance) -> None:
    instance.server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(instance.task, 15)


@pytest_asyncio.fixture
async def demo_redis(
    server_factory: Callable[..., EmbeddedRedis],
) -> EmbeddedRedis:
    return server_factory()


@pytest_asyncio.fixture
async def instances(
    demo_redis: EmbeddedRedis, tmp_path: Path
) -> AsyncIterator[tuple[Instance, Instance]]:
    db = tmp_path / "demo.db"
    first = await start_instance(demo_redis, db, "a")
    second = await start_instance(demo_redis, db, "b")
    try:
        yield first, second
    finally:
        await stop_instance(second)
        await stop_instance(first)


@pytest_asyncio.fixture
async def clients(
    instances: tuple[Instance, Instance],
) -> AsyncIterator[Clients]:
    """An HTTP client of each instance."""
    a, b = instances
    async with a.client() as ca, b.client() as cb:
        yield ca, cb


@pytest.fixture
def login_body() -> dict[str, str]:
    return {"username": "alice", "password": "wonderland"}
