"""The prometheus_client collector, on components that ran on a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from _telemetry_workload import exercise
from redkit import Cache, Client, ConfigError, StreamConsumer, Subscriber
from redkit import _telemetry as telemetry
from redkit.metrics import (
    disable_latency_histograms,
    enable_latency_histograms,
    prometheus_text,
)
from redkit.prometheus import RedkitCollector

ROOT = Path(__file__).resolve().parents[1]


def _parsed(text: str) -> dict[str, tuple[str, str, set[tuple[str, tuple[Any, ...], float]]]]:
    return {
        family.name: (
            family.type,
            family.documentation,
            {(s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples},
        )
        for family in text_string_to_metric_families(text)
    }


async def test_the_collector_and_prometheus_text_agree(client: Client) -> None:
    enable_latency_histograms()  # the workload runs timed
    try:
        components: dict[str, Any] = await exercise(client, "tm-prom")
    finally:
        disable_latency_histograms()
    components["subscriber"] = Subscriber(client)
    components["orders"] = StreamConsumer(client, "tm-prom-orders", group="g", consumer="c1")
    collector = RedkitCollector(components, labels={"instance": "api-1"})
    try:
        registry = CollectorRegistry()
        registry.register(collector)
        from_client = _parsed(generate_latest(registry).decode())
        ours = _parsed(prometheus_text(components, labels={"instance": "api-1"}, latency=True))
    finally:
        collector.close()
    assert from_client == ours
    # what the agreement covers: counters, gauges and the histogram
    assert from_client["redkit_cache_hits"][0] == "counter"
    assert ("redkit_cache_hits_total", (("instance", "api-1"),), 1.0) in from_client[
        "redkit_cache_hits"
    ][2]
    assert from_client["redkit_subscriber_in_flight"][0] == "gauge"
    assert from_client["redkit_orders_in_flight"][0] == "gauge"
    assert from_client["redkit_locks_acquired"][0] == "counter"
    kind, _, samples = from_client["redkit_operation_duration_seconds"]
    assert kind == "histogram"
    operations = {dict(labels)["operation"] for _, labels, _ in samples}
    assert {"cache.get", "session.get", "ratelimit.hit", "events.publish", "lock.acquire"} <= (
        operations
    )


async def test_every_scrape_reads_the_stats_again(redis_client: Client) -> None:
    cache = Cache(redis_client, prefix="tm-scrape", default_ttl=60)
    collector = RedkitCollector({"cache": cache}, latency=False)
    registry = CollectorRegistry()
    registry.register(collector)
    assert registry.get_sample_value("redkit_cache_misses_total") == 0
    await cache.get("absent")
    assert registry.get_sample_value("redkit_cache_misses_total") == 1
    assert registry.get_sample_value("redkit_operation_duration_seconds_count") is None
    await cache.aclose()


def test_latency_is_on_while_a_collector_holds_it() -> None:
    was_on = telemetry.latency_enabled()
    collector = RedkitCollector({})
    assert telemetry.latency_enabled()
    collector.close()
    collector.close()  # once only
    assert telemetry.latency_enabled() is was_on
    assert not RedkitCollector({}, latency=False).latency


def test_a_registry_takes_one_collector_of_the_histograms() -> None:
    registry = CollectorRegistry()
    collectors = [RedkitCollector({}), RedkitCollector({}), RedkitCollector({}, namespace="app")]
    try:
        registry.register(collectors[0])
        with pytest.raises(ValueError, match="redkit_operation_duration_seconds"):
            registry.register(collectors[1])
        registry.register(RedkitCollector({}, latency=False))
        registry.register(collectors[2])
    finally:
        for collector in collectors:
            collector.close()


def test_bad_components_are_refused_when_built() -> None:
    with pytest.raises(ConfigError, match="components must map"):
        RedkitCollector([("cache", object())])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot export stats of type object"):
        RedkitCollector({"thing": object()}, latency=False)
    with pytest.raises(ConfigError, match="labels"):
        RedkitCollector({}, labels={"instance": 1}, latency=False)  # type: ignore[dict-item]
    assert not telemetry.latency_enabled()


def test_the_module_exports_the_collector() -> None:
    import redkit.prometheus

    assert redkit.prometheus.__all__ == ["RedkitCollector"]


def test_without_prometheus_client_the_import_names_the_extra() -> None:
    script = """
import sys
sys.modules["prometheus_client"] = None  # as if it were not installed
import redkit  # needs nothing optional
from redkit.metrics import (
    disable_latency_histograms,
    enable_latency_histograms,
    prometheus_text,
)
prometheus_text({})
try:
    import redkit.prometheus
except ImportError as exc:
    print(exc)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'redkit[prometheus]'" in done.stdout
