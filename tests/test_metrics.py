from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import redkit
import redkit.metrics
from _telemetry_workload import EXPECTED_CALLS, exercise
from redkit import Cache, Client, ConfigError, Publisher, Subscriber
from redkit import _telemetry as telemetry
from redkit.lock import Acquisition, DistributedLock, Lease
from redkit.metrics import (
    DEFAULT_LATENCY_BUCKETS,
    disable_latency_histograms,
    enable_latency_histograms,
    latency_histograms,
    prometheus_text,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class FakeStats:
    hits: int = 3
    misses: int = 1
    size: int = dataclasses.field(default=7, metadata={"kind": "gauge"})
    healthy: bool = True


@pytest.fixture
def timing() -> Iterator[None]:
    enable_latency_histograms()
    try:
        yield
    finally:
        disable_latency_histograms()


def _counts() -> dict[str, int]:
    return {name: h.count for name, h in latency_histograms().items()}


def test_renders_counters_and_gauges_with_labels() -> None:
    text = prometheus_text(
        {"cache": FakeStats(), "rate-limit": {"allowed": 5}}, labels={"instance": 'a"1'}
    )
    lines = text.splitlines()
    assert "# TYPE redkit_cache_hits_total counter" in lines
    assert "# HELP redkit_cache_hits_total FakeStats.hits of redkit component 'cache'" in lines
    assert 'redkit_cache_hits_total{instance="a\\"1"} 3' in lines
    assert 'redkit_cache_size{instance="a\\"1"} 7' in lines
    assert "# TYPE redkit_cache_size gauge" in lines
    assert 'redkit_rate_limit_allowed_total{instance="a\\"1"} 5' in lines
    assert not any("healthy" in line for line in lines)
    assert text.endswith("\n")


def test_rejects_what_it_cannot_read() -> None:
    with pytest.raises(TypeError, match="list"):
        prometheus_text({"x": [1, 2]})


def test_labels_must_be_text() -> None:
    with pytest.raises(ConfigError, match="labels"):
        prometheus_text({"x": FakeStats()}, labels={"instance": 3})  # type: ignore[dict-item]


async def test_components_and_functions_are_read_through_stats(client: Client) -> None:
    cache = Cache(client, prefix="tm-read", default_ttl=60)
    await cache.set("k", 1)
    await cache.get("k")
    publisher = Publisher(client)
    text = prometheus_text({"cache": cache, "events": publisher.stats})
    assert "redkit_cache_hits_total 1" in text.splitlines()
    assert "redkit_cache_sets_total 1" in text.splitlines()
    assert "redkit_events_published_total 0" in text.splitlines()
    await cache.aclose()


def test_the_gauges_among_every_stats_class() -> None:
    # Every stats dataclass redkit exports: which fields are levels (now),
    # not counts (since start). A new stats field that is a level must be
    # marked {"kind": "gauge"} and added here.
    classes = [
        getattr(redkit, name)
        for name in redkit.__all__
        if name.endswith("Stats") and dataclasses.is_dataclass(getattr(redkit, name))
    ]
    assert len(classes) == 10
    gauges = {
        f"{cls.__name__}.{f.name}"
        for cls in classes
        for f in dataclasses.fields(cls)
        if f.metadata.get("kind") == "gauge"
    }
    assert gauges == {
        "SubscriberStats.in_flight",
        "StreamConsumerStats.in_flight",
        "ClientStats.in_flight",
    }


async def test_a_running_handler_is_exported_as_a_gauge(redis_client: Client) -> None:
    subscriber = Subscriber(redis_client, handler_timeout=10)
    release = asyncio.Event()
    started = asyncio.Event()

    @subscriber.on("job.started")
    async def hold(event: redkit.Event[object]) -> None:
        started.set()
        await release.wait()

    async with subscriber.running("tm-gauge"):
        await Publisher(redis_client).publish("tm-gauge", "job.started")
        await asyncio.wait_for(started.wait(), 10)
        lines = prometheus_text({"subscriber": subscriber}).splitlines()
        release.set()
    assert "# TYPE redkit_subscriber_in_flight gauge" in lines
    assert "redkit_subscriber_in_flight 1" in lines
    assert "# TYPE redkit_subscriber_received_total counter" in lines


# -- latency -------------------------------------------------------------------


async def test_each_hot_operation_is_timed(client: Client, timing: None) -> None:
    before = _counts()
    await exercise(client, "tm-hot")
    after = _counts()
    grown = {name: after[name] - before.get(name, 0) for name in after}
    assert {k: v for k, v in grown.items() if v} == EXPECTED_CALLS
    for name, histogram in latency_histograms().items():
        assert histogram.buckets[-1] == (math.inf, histogram.count), name
        assert histogram.sum > 0, name
        counts = [count for _, count in histogram.buckets]
        assert counts == sorted(counts), name


async def test_a_timed_call_lands_in_the_bucket_of_its_duration(
    redis_client: Client, timing: None
) -> None:
    locks = DistributedLock(redis_client, prefix="tm-slow")
    holder = await locks.lock("slow", ttl=5)

    async def let_go() -> None:
        await asyncio.sleep(0.3)
        await holder.release()

    before = latency_histograms().get("lock.acquire")
    waiting = asyncio.ensure_future(let_go())
    async with locks.acquire("slow", ttl=5, timeout=5):
        pass
    await waiting
    await locks.aclose()
    after = latency_histograms()["lock.acquire"]
    under = dict(after.buckets)
    earlier = dict(before.buckets) if before else dict.fromkeys(under, 0)
    # The waited acquisition took at least 0.3 s: past 0.25, within 5.
    assert under[0.25] - earlier[0.25] == 0
    assert under[5.0] - earlier[5.0] == 1
    assert after.sum - (before.sum if before else 0.0) >= 0.3


async def test_timed_calls_refuse_bad_arguments_as_before(
    redis_client: Client, timing: None
) -> None:
    locks = DistributedLock(redis_client, prefix="tm-args")
    with pytest.raises(ConfigError, match="name"):
        locks.lock("", ttl=5)  # the call raises: nothing to await
    with pytest.raises(ConfigError, match="ttl"):
        locks.acquire("job", ttl=-1)
    await locks.aclose()


def test_every_marked_operation_sits_on_its_class() -> None:
    # A mark on a function that is no longer its class's attribute (moved,
    # renamed, wrapped by another decorator) would never be swapped.
    marked = telemetry.operations()
    assert len(marked) == 20
    for key, op in marked.items():
        assert op.fn in vars(op.owner()).values(), key
        assert key in telemetry.DETAILS


def test_the_metrics_surface() -> None:
    assert sorted(redkit.metrics.__all__) == [
        "DEFAULT_LATENCY_BUCKETS",
        "LatencyHistogram",
        "disable_latency_histograms",
        "enable_latency_histograms",
        "latency_histograms",
        "prometheus_text",
    ]
    assert redkit.prometheus_text is prometheus_text


async def test_timing_off_puts_the_original_functions_back(redis_client: Client) -> None:
    originals = {
        "get": Cache.__dict__["get"],
        "release": Lease.__dict__["release"],
        "__call__": Lease.__dict__["__call__"],
        "_take": Acquisition.__dict__["_take"],
    }
    enable_latency_histograms()
    try:
        assert Cache.__dict__["get"] is not originals["get"]
        assert Lease.__dict__["__call__"] is Lease.__dict__["release"]
        assert Lease.__dict__["release"] is not originals["release"]
        assert Acquisition.__dict__["_take"] is not originals["_take"]
    finally:
        disable_latency_histograms()
    assert Cache.__dict__["get"] is originals["get"]
    assert Lease.__dict__["release"] is originals["release"]
    assert Lease.__dict__["__call__"] is originals["__call__"]
    assert Acquisition.__dict__["_take"] is originals["_take"]
    # and nothing is counted while off
    before = _counts()
    cache = Cache(redis_client, prefix="tm-off", default_ttl=60)
    await cache.get("k")
    await cache.aclose()
    assert _counts() == before


async def test_enabling_is_counted_and_what_was_recorded_stays(redis_client: Client) -> None:
    cache = Cache(redis_client, prefix="tm-count", default_ttl=60)
    enable_latency_histograms()
    enable_latency_histograms()
    try:
        disable_latency_histograms()
        assert telemetry.latency_enabled()  # one enable is still open
        start = _counts().get("cache.get", 0)
        await cache.get("k")
    finally:
        disable_latency_histograms()
    assert not telemetry.latency_enabled()
    await cache.get("k")
    assert _counts()["cache.get"] == start + 1
    disable_latency_histograms()  # one too many: nothing to undo
    assert not telemetry.latency_enabled()
    await cache.aclose()


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ([], "at least one"),
        ([0.1, 0.05], "increase"),
        ([0.0, 1.0], "> 0"),
        ([float("nan")], "finite"),
        ([True], "seconds"),
        ("0.1", "sequence"),
    ],
)
def test_bad_buckets_are_refused(buckets: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        enable_latency_histograms(buckets)  # type: ignore[arg-type]
    assert not telemetry.latency_enabled()


def test_one_process_keeps_one_bucket_layout() -> None:
    # A fresh interpreter: the first enable of this test process is long gone.
    script = """
from redkit import ConfigError
from redkit.metrics import enable_latency_histograms, disable_latency_histograms, latency_histograms
from redkit import _telemetry
enable_latency_histograms([0.01, 0.1])
disable_latency_histograms()
enable_latency_histograms()  # no choice: the layout already chosen
assert _telemetry.latency().bounds == (0.01, 0.1)
try:
    enable_latency_histograms([0.5])
except ConfigError as exc:
    print("refused:", exc)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "refused: latency histograms already use buckets [0.01, 0.1]" in done.stdout


def test_bucket_bounds_are_inclusive() -> None:
    histogram = telemetry.Histogram((0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.002, 0.01, 0.5):
        histogram.add(seconds)
    assert histogram.counts == [2, 2, 1]
    assert histogram.sum == pytest.approx(0.5135)


async def test_prometheus_text_renders_the_histograms(redis_client: Client, timing: None) -> None:
    cache = Cache(redis_client, prefix="tm-text", default_ttl=60)
    await cache.get("k")
    await cache.aclose()
    text = prometheus_text({"cache": cache}, latency=True, labels={"instance": "a"})
    lines = text.splitlines()
    assert "# TYPE redkit_operation_duration_seconds histogram" in lines
    count = latency_histograms()["cache.get"].count
    assert (
        f'redkit_operation_duration_seconds_bucket{{instance="a",operation="cache.get",le="+Inf"}} '
        f"{count}" in lines
    )
    assert (
        f'redkit_operation_duration_seconds_count{{instance="a",operation="cache.get"}} {count}'
        in lines
    )
    # A parser that knows the format reads it back whole.
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    histogram = parsed["redkit_operation_duration_seconds"]
    assert histogram.type == "histogram"
    bounds = {
        s.labels["le"]
        for s in histogram.samples
        if s.name.endswith("_bucket") and s.labels["operation"] == "cache.get"
    }
    assert bounds == {repr(b) for b in DEFAULT_LATENCY_BUCKETS} | {"+Inf"}
    assert "redkit_operation_duration_seconds" not in prometheus_text({"cache": cache})
