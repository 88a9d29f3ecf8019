from __future__ import annotations

import dataclasses

import pytest

from redkit.metrics import prometheus_text


@dataclasses.dataclass(frozen=True)
class FakeStats:
    hits: int = 3
    misses: int = 1
    size: int = dataclasses.field(default=7, metadata={"kind": "gauge"})
    healthy: bool = True


def test_renders_counters_and_gauges_with_labels() -> None:
    text = prometheus_text(
        {"cache": FakeStats(), "rate-limit": {"allowed": 5}}, labels={"instance": 'a"1'}
    )
    lines = text.splitlines()
    assert "# TYPE redkit_cache_hits_total counter" in lines
    assert 'redkit_cache_hits_total{instance="a\\"1"} 3' in lines
    assert 'redkit_cache_size{instance="a\\"1"} 7' in lines
    assert "# TYPE redkit_cache_size gauge" in lines
    assert 'redkit_rate_limit_allowed_total{instance="a\\"1"} 5' in lines
    assert not any("healthy" in line for line in lines)
    assert text.endswith("\n")


def test_rejects_what_it_cannot_read() -> None:
    with pytest.raises(TypeError, match="list"):
        prometheus_text({"x": [1, 2]})
