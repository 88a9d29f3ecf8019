"""What telemetry costs the hot paths: each operation with nothing observing
(the baseline), with latency histograms, with ``redkit.otel`` instrumented
but no tracer provider set, with an SDK tracer provider (spans recorded,
none exported), and with a ``prometheus_client`` Histogram observed around
the call by hand (what a user would write without redkit's histograms).

Timing and tracing are process-wide switches, so each case turns its state
on at its first call of a round (the harness runs one case's round in one
go): every case, the baseline too, pays the same one comparison per call.

Group ``tel-local`` is a local-tier cache hit (no round trip, about 2 us):
there the cost of a wrapper shows plainly. The other groups go to Redis,
where a round trip is 100x that.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.harness import Case, Env
from redkit import _telemetry
from redkit.cache import Cache, LocalCache

Op = Callable[[], Awaitable[Any]]
SMALL = {"id": 42, "name": "Ada"}
STATES = ("off", "latency", "otel-no-provider", "otel-sdk", "prometheus_client")


class Switch:
    """Puts the process in one telemetry state at a time."""

    def __init__(self) -> None:
        import prometheus_client
        from opentelemetry.sdk.trace import TracerProvider

        self.now = "off"
        self.provider = TracerProvider()  # records spans, exports none
        self.histogram = prometheus_client.Histogram(
            "bench_operation_seconds",
            "bench",
            ["operation"],
            registry=prometheus_client.CollectorRegistry(),
        )

    def to(self, state: str) -> None:
        import redkit.metrics
        import redkit.otel

        if self.now == "latency":
            redkit.metrics.disable_latency_histograms()
        if self.now.startswith("otel"):
            redkit.otel.uninstrument()
        if state == "latency":
            redkit.metrics.enable_latency_histograms()
        elif state == "otel-no-provider":
            redkit.otel.instrument()  # the global provider, never set here
        elif state == "otel-sdk":
            redkit.otel.instrument(tracer_provider=self.provider)
        self.now = state

    def case(self, group: str, name: str, op: Op, state: str) -> Case:
        switch = self
        if state == "prometheus_client":
            child = self.histogram.labels(name)
            clock = time.perf_counter

            async def observed() -> Any:
                if switch.now != state:
                    switch.to(state)
                start = clock()
                try:
                    return await op()
                finally:
                    child.observe(clock() - start)

            return Case(group, f"{name} [{state}]", observed)

        async def run() -> Any:
            if switch.now != state:
                switch.to(state)
            return await op()

        return Case(group, f"{name} [{state}]", run, baseline=state == "off")


async def cases(env: Env) -> list[Case]:
    assert _telemetry.tracing is None
    assert not _telemetry.latency_enabled()
    switch = Switch()
    client = env.raw_client()

    local_client = env.raw_client()
    local = Cache(local_client, prefix="bench-tel", default_ttl=3600, local=LocalCache())
    await local.start()
    env.closers.append(local.aclose)
    await local.set("user:42", SMALL)
    parts = await env.components(client, "bench-tel", SMALL)
    cache, store, session, limiter = parts.cache, parts.store, parts.session, parts.limiter
    publisher, locks = parts.publisher, parts.locks

    async def local_hit() -> object:
        return await local.get("user:42")

    async def cache_get() -> object:
        return await cache.get("user:42")

    async def session_get() -> object:
        return await store.get(session.id)

    async def rate_hit() -> object:
        return await limiter.hit("client-1", "1000000/second")

    async def publish() -> object:
        return await publisher.publish("bench-tel", "user.created", {"id": 1})

    async def lock_and_release() -> None:
        async with locks.acquire("uncontended", ttl=10, timeout=1, auto_renew=False):
            pass

    ops = [
        ("tel-local", "cache local-tier hit", local_hit),
        ("tel-cache", "cache get hit", cache_get),
        ("tel-session", "session get", session_get),
        ("tel-ratelimit", "rate-limit hit", rate_hit),
        ("tel-publish", "publish", publish),
        ("tel-lock", "lock acquire+release", lock_and_release),
    ]
    found = [switch.case(group, name, op, state) for group, name, op in ops for state in STATES]

    async def back_to_off() -> None:
        switch.to("off")

    env.closers.append(back_to_off)
    return found
