"""The reference service: every redkit component wired into one FastAPI app.

Layers: the handlers here parse and answer HTTP, the use cases in
``usecases.py`` hold the logic, ``repository.py`` talks to SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import secrets
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from importlib import resources
from typing import Any

import msgspec
import uvicorn
from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import (
    Cache,
    ConnectionUnavailable,
    DistributedLock,
    Event,
    InvalidationStrategy,
    Invalidator,
    LocalCache,
    Publisher,
    RateLimiter,
    RateLimitMiddleware,
    RateLimitRule,
    RedisSettings,
    RedkitError,
    SessionMiddleware,
    SessionStore,
    StreamConsumer,
    StreamPublisher,
    Subscriber,
    by_client_ip,
    health,
    load_session,
    login,
    logout,
    prometheus_text,
    session_user_id,
)
from .._failures import is_cluster
from ..connection import build_client
from ..ratelimit import USER_RATE, Decision
from .feed import EventFeed
from .orders import ACTIVITY_CHANNEL, ORDERS_STREAM, OrderBook
from .reports import ReportBusy, Reports
from .repository import UserRepository
from .usecases import USERS_CHANNEL, DuplicateUsername, UserService

__all__ = ["DemoConfig", "DemoServer", "create_app"]

log = logging.getLogger("redkit.demo")

USER_EVENTS = ("user.created", "user.updated", "user.deleted")
ACTIVITY_EVENTS = (
    "order.failed",
    "order.processed",
    "order.dead_lettered",
    "report.started",
    "report.finished",
)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """How one instance of the demo runs."""

    redis: RedisSettings
    db_path: str = "redkit-demo.db"
    instance: str = dataclasses.field(default_factory=lambda: "demo-" + secrets.token_hex(3))
    secret_key: str = "redkit-demo-secret-key-change-me"
    https_only: bool = False
    report_lease_ttl: float = 2.0
    # Short so that a failed order's retries (after claim_idle, by any
    # instance) and its dead letter can be watched on the page.
    order_claim_idle: float = 3.0
    order_max_deliveries: int = 3
    # The presets of the Go service; the benchmark raises api_rate so that
    # it measures the limiter's cost rather than its refusals.
    api_rate: str = "100/minute"
    auth_rate: str = "5/minute"
    # Off only to measure what the session and rate-limit middleware cost.
    middleware: bool = True


class LoginBody(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_.-]+$")
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=200)
    password: str = Field(min_length=4, max_length=256)


class UserUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, min_length=3, max_length=200)


class RateLimited(Exception):
    """A signed-in route refused by the per-user limit."""

    def __init__(self, decision: Decision) -> None:
        super().__init__("per-user rate limit")
        self.decision = decision


class Prefs(BaseModel):
    theme: str = Field(pattern=r"^(light|dark)$")


class OrderBody(BaseModel):
    item: str = Field(min_length=1, max_length=100)
    quantity: int = Field(default=1, ge=1, le=1000)
    # Fulfilment fails this many times first (10: always, a dead letter).
    fail_times: int = Field(default=0, ge=0, le=10)


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


class Services:
    """Everything the handlers use. Built before the event loop runs (the
    middleware needs the store and the limiter), started and stopped by the
    app's lifespan, or earlier by :class:`DemoServer`."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.repo = UserRepository(config.db_path)
        self.feed = EventFeed()
        self.client = client = build_client(config.redis)
        self.cache = Cache(
            client,
            prefix="app",
            default_ttl=600,
            local=LocalCache(max_entries=1000, ttl=30),
            source=config.instance,
        )
        self.invalidator = Invalidator(self.cache, strategy=InvalidationStrategy.ON_EVENT)
        self.publisher = Publisher(client, source=config.instance)
        self.users = UserService(self.repo, self.cache, self.invalidator, self.publisher)
        self.sessions = SessionStore(
            client,
            # One demo secret for the cookie and the id tags: redkit
            # domain-separates the two uses (docs/session.md).
            secret=config.secret_key,
            prefix="app",
            ttl=timedelta(hours=24),
            absolute_ttl=timedelta(days=7),
        )
        self.limiter = RateLimiter(client, prefix="app", fail_open=True)
        self.locks = DistributedLock(client, prefix="app")
        self._jobs: set[asyncio.Task[Any]] = set()
        self.reports = Reports(
            client,
            self.locks,
            self.publisher,
            config.instance,
            config.report_lease_ttl,
            self.spawn,
        )
        self.subscriber = Subscriber(client, max_concurrency=16, handler_timeout=5.0)
        for event_type in USER_EVENTS + ACTIVITY_EVENTS:
            self.subscriber.on(event_type, self._to_feed)
        self.orders = OrderBook(
            client,
            StreamPublisher(client, maxlen=10_000, source=config.instance),
            self.publisher,
            config.instance,
            config.order_max_deliveries,
        )
        self.consumer = StreamConsumer(
            client,
            ORDERS_STREAM,
            group="fulfilment",
            consumer=config.instance,
            max_deliveries=config.order_max_deliveries,
            claim_idle=config.order_claim_idle,
        )
        self.consumer.on("order.placed", self.orders.fulfil)
        # Dead letters are events too: a second group reads the dead-letter
        # stream and tells the page (an alert, in a real service).
        self.dead_letters = StreamConsumer(
            client,
            self.consumer.dead_letter_stream,
            group="dead-letter-alerts",
            consumer=config.instance,
            claim_idle=config.order_claim_idle,
        )
        self.dead_letters.on("order.placed", self.orders.dead_lettered)
        self._stack = contextlib.AsyncExitStack()
        self._started = False

    async def start(self) -> None:
        """Open everything; idempotent. On failure what was opened is closed
        again and the error raised: ``ConnectionUnavailable`` when Redis
        cannot be reached, ``sqlite3.Error`` for the database."""
        if self._started:
            return
        try:
            await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        self._started = True

    async def _open(self) -> None:
        self._stack.push_async_callback(self.client.aclose)
        await self.repo.init()
        status = await health(self.client, timeout=self.config.redis.connect_timeout)
        if not status.healthy:
            raise ConnectionUnavailable(
                f"cannot reach Redis at {self.config.redis.address}: {status.error}"
            )
        if is_cluster(self.client):
            await self.client.initialize()
        await self.cache.start()
        self._stack.push_async_callback(self.cache.aclose)
        await self._stack.enter_async_context(self.invalidator)
        await self._stack.enter_async_context(
            self.subscriber.running(USERS_CHANNEL, ACTIVITY_CHANNEL)
        )
        await self._stack.enter_async_context(self.consumer.running())
        await self._stack.enter_async_context(self.dead_letters.running())
        self._stack.push_async_callback(self.locks.aclose)

    async def stop(self) -> None:
        """Close everything; idempotent."""
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        await self._stack.aclose()
        self._started = False

    async def _to_feed(self, event: Event[Any]) -> None:
        data = {
            "channel": event.channel,
            "type": event.type,
            "source": event.source,
            "timestamp": event.timestamp.isoformat(),
            "payload": event.payload,
        }
        self.feed.publish("live", msgspec.json.encode(data).decode())

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return task

    def metrics(self) -> str:
        client_stats = getattr(self.client, "stats", None)  # without autopipelining: none
        return prometheus_text(
            {
                **({"redis_client": client_stats()} if client_stats is not None else {}),
                "cache": self.cache.stats(),
                "invalidator": self.invalidator.stats(),
                "ratelimit": self.limiter.stats(),
                "sessions": self.sessions.stats(),
                "publisher": self.publisher.stats(),
                "subscriber": self.subscriber.stats(),
                "stream_consumer": self.consumer.stats(),
                "dead_letter_consumer": self.dead_letters.stats(),
                "locks": self.locks.stats(),
            },
            labels={"instance": self.config.instance},
        )


def create_app(config: DemoConfig) -> FastAPI:
    services = Services(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(title="redkit demo", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.services = services

    if config.middleware:
        _middleware(app, services, config)
    _routes(app, services)
    _errors(app)
    return app


def _middleware(app: FastAPI, services: Services, config: DemoConfig) -> None:
    app.add_middleware(
        RateLimitMiddleware,
        limiter=services.limiter,
        rules=[
            # Only signing in: failed passwords must not lock anyone out of
            # signing out.
            RateLimitRule("/auth/login", config.auth_rate, key=by_client_ip, name="auth"),
            RateLimitRule("/*", config.api_rate, key=by_client_ip, name="api"),
        ],
        match="all",
        exempt_paths=["/healthz", "/metrics", "/events/stream"],
    )
    app.add_middleware(
        SessionMiddleware,
        store=services.sessions,
        secret_key=config.secret_key,
        secure=config.https_only,
        # Routes load the session when they need it, so public and cached
        # routes neither wait for nor depend on the session store.
        eager=False,
    )


def _routes(app: FastAPI, services: Services) -> None:
    static = resources.files("redkit.demo").joinpath("static/index.html")

    async def current_user(request: Request) -> int:
        """The signed-in user, charged against the per-user preset
        (60/minute): the IP limits come from the middleware, this one needs
        the session, which only signed-in routes load."""
        await load_session(request)
        user_id = session_user_id(request)
        if user_id is None:
            raise HTTPException(401, "sign in first")
        decision = await services.limiter.hit(f"user:{user_id}", USER_RATE)
        if not decision.allowed:
            raise RateLimited(decision)
        return int(user_id)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home() -> str:
        return static.read_text(encoding="utf-8")

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        status = await health(services.client, timeout=1.0)
        body = {**status.as_dict(), "instance": services.config.instance}
        return JSONResponse(body, status_code=200 if status.healthy else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        return services.metrics()

    @app.get("/users/{user_id}")
    async def get_user(user_id: int = Path(ge=1, le=2**62)) -> JSONResponse:
        read = await services.users.get(user_id)
        cache = {"X-Cache": "HIT" if read.hit else "MISS"}
        if read.value is None:
            return JSONResponse(
                {"error": {"code": "NOT_FOUND", "message": f"no user {user_id}"}},
                status_code=404,
                headers=cache,
            )
        return JSONResponse(msgspec.to_builtins(read.value), headers=cache)

    @app.get("/users")
    async def list_users(
        page: int = Query(1, ge=1, le=10_000), limit: int = Query(20, ge=1, le=100)
    ) -> JSONResponse:
        read = await services.users.list(page, limit)
        return JSONResponse(
            {"page": page, "limit": limit, "users": msgspec.to_builtins(read.value)},
            headers={"X-Cache": "HIT" if read.hit else "MISS"},
        )

    @app.post("/users", status_code=201)
    async def create_user(body: UserCreate, request: Request) -> Any:
        await current_user(request)
        try:
            user = await services.users.create(body.username, body.name, body.email, body.password)
        except DuplicateUsername:
            raise HTTPException(409, f"username {body.username!r} is taken") from None
        return msgspec.to_builtins(user)

    @app.put("/users/{user_id}")
    async def update_user(
        body: UserUpdate, request: Request, user_id: int = Path(ge=1, le=2**62)
    ) -> Any:
        await current_user(request)
        user = await services.users.update(user_id, body.name, body.email)
        if user is None:
            raise HTTPException(404, f"no user {user_id}")
        return msgspec.to_builtins(user)

    @app.delete("/users/{user_id}", status_code=204)
    async def delete_user(request: Request, user_id: int = Path(ge=1, le=2**62)) -> None:
        await current_user(request)
        if not await services.users.delete(user_id):
            raise HTTPException(404, f"no user {user_id}")

    @app.post("/auth/login")
    async def do_login(body: LoginBody, request: Request) -> Any:
        user_id = await services.users.authenticate(body.username, body.password)
        if user_id is None:
            raise HTTPException(401, "wrong username or password")
        await login(request, str(user_id))
        user = await services.repo.get(user_id)
        return {"user": msgspec.to_builtins(user)}

    @app.post("/auth/logout")
    async def do_logout(request: Request) -> Any:
        return {"logged_out": await logout(request)}

    @app.post("/auth/logout-all")
    async def do_logout_all(request: Request) -> Any:
        user_id = await current_user(request)
        ended = await services.sessions.destroy_all_for_user(str(user_id))
        await logout(request)
        return {"sessions_ended": ended}

    @app.put("/prefs")
    async def set_prefs(body: Prefs, request: Request) -> Any:
        """Anonymous visitors get a session too, once they store something."""
        session = await load_session(request)
        session["theme"] = body.theme
        return await _prefs(request)

    @app.get("/prefs")
    async def get_prefs(request: Request) -> Any:
        return await _prefs(request)

    @app.get("/me")
    async def me(request: Request) -> Any:
        user_id = await current_user(request)
        user = await services.repo.get(user_id)
        if user is None:
            raise HTTPException(401, "the account no longer exists")
        return {"user": msgspec.to_builtins(user), "session": dict(await load_session(request))}

    @app.get("/me/sessions")
    async def my_sessions(request: Request) -> Any:
        user_id = await current_user(request)
        sessions = await services.sessions.list_for_user(str(user_id))
        return {
            "sessions": [
                {
                    "created_at": s.created_at.isoformat(),
                    "expires_at": s.expires_at.isoformat(),
                    "id_hint": s.id[:6] + "...",
                }
                for s in sessions
            ]
        }

    @app.post("/reports/rebuild", status_code=202)
    async def rebuild_report(seconds: float = Query(5.0, gt=0, le=120)) -> Any:
        try:
            started = await services.reports.start(seconds)
        except ReportBusy as busy:
            holder = busy.holder or {}
            where = f" on {holder['instance']}" if holder.get("instance") else ""
            return _error(
                409,
                "REPORT_RUNNING",
                f"a report rebuild is already running{where}",
                fencing_token=holder.get("fencing_token"),
                instance=holder.get("instance"),
            )
        return {"status": "started", **started}

    @app.get("/reports/status")
    async def report_status() -> Any:
        return await services.reports.status()

    @app.get("/reports/last")
    async def last_report() -> Any:
        return (await services.reports.status())["last"] or {"report": None}

    @app.post("/orders", status_code=202)
    async def place_order(body: OrderBody) -> Any:
        event_id = await services.orders.place(body.item, body.quantity, body.fail_times)
        return {"event_id": event_id}

    @app.get("/orders")
    async def recent_orders() -> Any:
        return {
            "orders": await services.orders.recent(),
            "max_attempts": services.config.order_max_deliveries,
            "retry_after": services.config.order_claim_idle,
        }

    @app.get("/orders/processed")
    async def processed_orders() -> Any:
        return await services.orders.processed()

    @app.get("/events/stream")
    async def event_stream(request: Request) -> StreamingResponse:
        queue = services.feed.subscribe()

        async def body() -> AsyncIterator[str]:
            try:
                yield ": connected\n\n"
                while not await request.is_disconnected():
                    try:
                        event, data = await asyncio.wait_for(queue.get(), 10)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if not event:
                        return
                    yield f"event: {event}\ndata: {data}\n\n"
            finally:
                services.feed.unsubscribe(queue)

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )


async def _prefs(request: Request) -> dict[str, Any]:
    session = await load_session(request)
    return {
        "theme": session.get("theme"),
        "session": dict(session),
        "signed_in_as": session_user_id(request),
    }


def _errors(app: FastAPI) -> None:
    codes = {
        400: "BAD_REQUEST",
        401: "UNAUTHORIZED",
        403: "FORBIDDEN",
        404: "NOT_FOUND",
        405: "METHOD_NOT_ALLOWED",
        409: "CONFLICT",
        422: "VALIDATION_ERROR",
    }

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, codes.get(exc.status_code, "HTTP_ERROR"), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        return _error(422, "VALIDATION_ERROR", "the request is not valid", details=details)

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, exc: RateLimited) -> JSONResponse:
        # The middleware adds the per-IP limit headers to every response; the
        # per-user refusal adds only when to come back.
        retry = exc.decision.retry_after
        headers = {"Retry-After": str(max(1, math.ceil(retry)))} if retry is not None else {}
        response = _error(429, "RATE_LIMITED", "too many requests for this user; slow down")
        response.headers.update(headers)
        return response

    @app.exception_handler(ConnectionUnavailable)
    async def redis_down(request: Request, exc: ConnectionUnavailable) -> JSONResponse:
        log.warning("Redis unavailable on %s: %s", request.url.path, exc)
        return _error(503, "REDIS_UNAVAILABLE", "a backing service is unavailable; try again")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "INTERNAL_ERROR", "something went wrong on our side")


class DemoServer(uvicorn.Server):
    """uvicorn for the demo app.

    It starts the app's services before uvicorn's own startup, so that a
    start that cannot succeed (Redis unreachable, database unusable) ends
    with :attr:`startup_error` set and nothing served, instead of uvicorn's
    traceback and ``sys.exit``; ``on_ready`` is called once the socket
    listens. On shutdown it ends the live-feed streams first: they never
    finish on their own, and uvicorn waits for open responses before it
    runs the app's shutdown.
    """

    def __init__(
        self, config: uvicorn.Config, *, on_ready: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self.on_ready = on_ready
        self.startup_error: BaseException | None = None

    def _services(self) -> Services | None:
        services = getattr(getattr(self.config.app, "state", None), "services", None)
        return services if isinstance(services, Services) else None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        services = self._services()
        if services is not None:
            try:
                await services.start()
            except (RedkitError, sqlite3.Error, OSError) as exc:
                self.startup_error = exc
                self.should_exit = True
                return
        await super().startup(sockets)
        if self.started and self.on_ready is not None:
            self.on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        services = self._services()
        if services is not None:
            services.feed.close()
        await super().shutdown(sockets)
        if services is not None:  # lifespan="off" leaves them to us
            await services.stop()
