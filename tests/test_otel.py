"""OpenTelemetry spans of redkit's operations, exported by the SDK's
in-memory exporter, on real servers; trace context from a publisher's span
to the handler's."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from _telemetry_workload import EXPECTED_CALLS, SECRET, exercise
from redkit import (
    Cache,
    Client,
    DistributedLock,
    Event,
    LockNotAcquired,
    Publisher,
    StreamConsumer,
    StreamPublisher,
    Subscriber,
)
from redkit import _telemetry as telemetry
from redkit.lock import Lease
from redkit.otel import instrument, instrumented, uninstrument
from redkit.server import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]
GO_EVENT = (ROOT / "tests" / "fixtures" / "go" / "event_user_created.json").read_bytes().strip()


class Traces:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer: Tracer = self.provider.get_tracer("tests")

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return [s for s in found if name is None or s.name == name]


@pytest.fixture
def traces() -> Iterator[Traces]:
    found = Traces()
    instrument(tracer_provider=found.provider)
    try:
        yield found
    finally:
        uninstrument()
        found.provider.shutdown()


async def eventually(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout:g}s: {what}")
        await asyncio.sleep(0.02)


async def test_each_operation_runs_in_a_child_span(client: Client, traces: Traces) -> None:
    with traces.tracer.start_as_current_span("request") as request:
        components = await exercise(client, "tm-otel")
    context = request.get_span_context()
    spans = [s for s in traces.spans() if s.name != "request"]
    names: dict[str, int] = {}
    for span in spans:
        names[span.name] = names.get(span.name, 0) + 1
    assert names == EXPECTED_CALLS
    for span in spans:
        assert span.context.trace_id == context.trace_id, span.name
        assert span.parent is not None and span.parent.span_id == context.span_id, span.name
        assert span.status.status_code is StatusCode.UNSET, span.name
    by_name = {s.name: s for s in spans}
    assert by_name["cache.get"].kind is SpanKind.CLIENT
    assert by_name["cache.get"].attributes["db.system.name"] == "redis"
    assert by_name["ratelimit.hit"].attributes["redkit.ratelimit.allowed"] is True
    publish = by_name["events.publish"]
    assert publish.kind is SpanKind.PRODUCER
    assert publish.attributes["messaging.destination.name"] == "tm-otel-users"
    assert publish.attributes["redkit.event.type"] == "user.created"
    acquired = [s for s in spans if s.name == "lock.acquire"]
    assert sorted(s.attributes["redkit.lock.name"] for s in acquired) == [
        "job-a",
        "job-b",
        "job-c",
    ]
    assert all(s.attributes["redkit.lock.fencing_token"] >= 1 for s in acquired)
    assert by_name["semaphore.acquire"].attributes["redkit.lock.name"] == "pool"
    assert components["locks"].stats().acquired == 3


async def test_secrets_and_keys_never_become_attributes(
    redis_client: Client, traces: Traces
) -> None:
    await exercise(redis_client, "tm-secret")
    texts = [
        str(value)
        for span in traces.spans()
        for value in (span.attributes or {}).values()
        if isinstance(value, str)
    ]
    # a record's key ends with the secret half of its session id
    records = [k async for k in redis_client.scan_iter("tm-secret:session:*")]
    secrets = [k.decode().rsplit(":", 1)[-1] for k in records if not k.endswith(b":user")]
    assert len(secrets) == 1 and len(secrets[0]) > 20
    for text in texts:
        assert "user:" not in text  # cache keys
        assert "client-1" not in text  # the rate-limit key
        assert secrets[0] not in text
        assert SECRET not in text


async def test_a_failed_operation_records_its_error(redis_client: Client, traces: Traces) -> None:
    locks = DistributedLock(redis_client, prefix="tm-fail")
    held = await locks.lock("busy", ttl=5)
    with pytest.raises(LockNotAcquired):
        await locks.lock("busy", ttl=5)
    await held.release()
    await locks.aclose()
    failed = traces.spans("lock.acquire")[-1]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "redkit.errors.LockNotAcquired"
    assert [e.name for e in failed.events] == ["exception"]


async def test_a_published_event_continues_the_trace_in_its_handler(
    client: Client, traces: Traces
) -> None:
    seen: list[tuple[int, int]] = []

    async def on_created(event: Event[Any]) -> None:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        seen.append((context.trace_id, context.span_id))

    subscriber = Subscriber(client)
    subscriber.on("user.created", on_created)
    async with subscriber.running("tm-otel-trace"):
        with traces.tracer.start_as_current_span("signup") as request:
            await Publisher(client, source="api").publish(
                "tm-otel-trace", "user.created", {"id": 7}
            )
        await eventually(lambda: seen, "the handler ran")
    publish = traces.spans("events.publish")[-1]
    await eventually(lambda: traces.spans("events.handle"), "the handler span ended")
    handle = traces.spans("events.handle")[-1]
    trace_id = request.get_span_context().trace_id
    assert publish.context.trace_id == handle.context.trace_id == trace_id
    assert handle.parent is not None and handle.parent.span_id == publish.context.span_id
    assert handle.kind is SpanKind.CONSUMER
    assert handle.attributes["messaging.destination.name"] == "tm-otel-trace"
    assert handle.attributes["redkit.event.type"] == "user.created"
    assert seen == [(trace_id, handle.context.span_id)]  # current inside the handler


async def test_a_stream_entry_continues_the_trace_in_its_handler(
    client: Client, traces: Traces
) -> None:
    seen: list[int] = []

    def on_placed(event: Event[Any]) -> None:  # sync: runs in a worker thread
        from opentelemetry import trace

        seen.append(trace.get_current_span().get_span_context().trace_id)

    consumer = StreamConsumer(client, "tm-otel-orders", group="billing", consumer="c1")
    consumer.on("order.placed", on_placed)
    with traces.tracer.start_as_current_span("checkout") as request:
        await StreamPublisher(client).publish("tm-otel-orders", "order.placed", {"id": 1})
    async with consumer.running():
        await eventually(lambda: seen, "the handler ran")
        await eventually(lambda: traces.spans("streams.handle"), "the handler span ended")
    trace_id = request.get_span_context().trace_id
    publish = traces.spans("streams.publish")[-1]
    handle = traces.spans("streams.handle")[-1]
    assert seen == [trace_id]
    assert handle.context.trace_id == trace_id
    assert handle.parent is not None and handle.parent.span_id == publish.context.span_id
    assert handle.attributes["redkit.stream.entry_id"]


async def test_a_failing_handler_marks_its_span(redis_client: Client, traces: Traces) -> None:
    subscriber = Subscriber(redis_client)

    @subscriber.on("user.created")
    async def broken(event: Event[Any]) -> None:
        raise RuntimeError("no database")

    async with subscriber.running("tm-otel-broken"):
        await Publisher(redis_client).publish("tm-otel-broken", "user.created", {})
        await eventually(lambda: traces.spans("events.handle"), "the handler span ended")
    handle = traces.spans("events.handle")[-1]
    assert handle.status.status_code is StatusCode.ERROR
    assert handle.attributes["error.type"] == "builtins.RuntimeError"


async def test_an_event_without_trace_context_starts_its_own_trace(
    redis_client: Client, traces: Traces
) -> None:
    subscriber = Subscriber(redis_client)
    seen: list[Event[Any]] = []
    subscriber.on("user.created", seen.append)
    # Started inside a span: its workers must not make that span the parent
    # of every untraced event.
    with traces.tracer.start_as_current_span("startup"):
        async with subscriber.running("tm-otel-go"):
            await redis_client.publish("tm-otel-go", GO_EVENT)  # as the Go service sends it
            await eventually(lambda: traces.spans("events.handle"), "the handler span ended")
    handle = traces.spans("events.handle")[-1]
    assert handle.parent is None
    assert seen[0].traceparent is None
    assert seen[0].payload["email"] == "ana@example.com"


async def test_the_envelope_carries_trace_context_only_while_tracing(
    redis_client: Client,
) -> None:
    streams = StreamPublisher(redis_client)

    async def last_envelope() -> dict[str, Any]:
        entries = await redis_client.xrevrange("tm-otel-wire", count=1)
        envelope: dict[str, Any] = json.loads(entries[0][1][b"event"])
        return envelope

    await streams.publish("tm-otel-wire", "order.placed", {"id": 1})
    assert list(await last_envelope()) == ["type", "payload", "timestamp", "source", "id"]

    found = Traces()
    instrument(tracer_provider=found.provider)
    try:
        await streams.publish("tm-otel-wire", "order.placed", {"id": 2})  # no span around
        with found.tracer.start_as_current_span("checkout"):
            await streams.publish("tm-otel-wire", "order.placed", {"id": 3})
    finally:
        uninstrument()
    traced = await last_envelope()
    publish = found.spans("streams.publish")[-1]
    assert list(traced) == ["type", "payload", "timestamp", "source", "id", "traceparent"]
    context = publish.context
    assert traced["traceparent"] == (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    )
    assert context.trace_flags.sampled
    # the span of the publish without a parent is a root: still carried
    assert len(found.spans("streams.publish")) == 2
    await streams.publish("tm-otel-wire", "order.placed", {"id": 4})
    assert "traceparent" not in await last_envelope()


def test_the_module_surface() -> None:
    import redkit.otel

    assert redkit.otel.__all__ == ["instrument", "instrumented", "uninstrument"]


def test_uninstrument_puts_the_original_functions_back() -> None:
    original = Cache.__dict__["get"], Lease.__dict__["release"]
    instrument(tracer_provider=TracerProvider())
    try:
        assert instrumented()
        assert Cache.__dict__["get"] is not original[0]
        assert Lease.__dict__["__call__"] is Lease.__dict__["release"]
    finally:
        uninstrument()
    assert not instrumented()
    assert telemetry.tracing is None
    assert (Cache.__dict__["get"], Lease.__dict__["release"]) == original
    assert Lease.__dict__["__call__"] is original[1]


def _run(script: str, redis_server: EmbeddedRedis) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "OTEL_"))}
    env.update(PYTHONPATH=str(ROOT / "src"), REDIS_URL=redis_server.url)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_tracer_provider_set_after_instrument_is_used(redis_server: EmbeddedRedis) -> None:
    script = """
import asyncio, os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import redkit, redkit.otel

async def main():
    client = await redkit.connect(url=os.environ["REDIS_URL"])
    cache = redkit.Cache(client, prefix="tm-global", default_ttl=60)
    redkit.otel.instrument()  # no provider yet: nothing records, nothing breaks
    await cache.set("k", 1)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert await cache.get("k") == 1
    print([s.name for s in exporter.get_finished_spans()])
    await cache.aclose()
    await client.aclose()

asyncio.run(main())
"""
    assert _run(script, redis_server).strip() == "['cache.get']"


def test_without_opentelemetry_redkit_runs_and_the_import_names_the_extra(
    redis_server: EmbeddedRedis,
) -> None:
    script = """
import asyncio, os, sys
sys.modules["opentelemetry"] = None  # as if it were not installed
import redkit
from redkit import _telemetry

async def main():
    client = await redkit.connect(url=os.environ["REDIS_URL"])
    await redkit.Publisher(client).publish("tm-plain", "x.y", {"a": 1})
    await client.aclose()

asyncio.run(main())
assert _telemetry.tracing is None
try:
    import redkit.otel
except ImportError as exc:
    print(exc)
"""
    assert "pip install 'redkit[otel]'" in _run(script, redis_server)
