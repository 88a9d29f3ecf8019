"""redkit's metrics through ``prometheus_client`` (``pip install
'redkit[prometheus]'``).

    from prometheus_client import REGISTRY
    from redkit.prometheus import RedkitCollector

    REGISTRY.register(RedkitCollector({"cache": cache, "sessions": store}))

Each scrape reads every component's ``stats()`` (no I/O) and the latency
histograms; the families are those of :func:`redkit.prometheus_text`, name
for name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as exc:
    raise ImportError(
        "redkit.prometheus needs prometheus_client: pip install 'redkit[prometheus]'"
    ) from exc

from . import _telemetry
from .errors import ConfigError
from .metrics import Family, _metric_name, families, latency_histograms

__all__ = ["RedkitCollector"]


class RedkitCollector:
    """A ``prometheus_client`` collector of redkit components' stats and of
    the operation latency histograms.

    ``components`` maps a name (the metric names' middle part:
    ``redkit_<name>_<field>``) to a component (anything with ``stats()``:
    :class:`~redkit.Cache`, :class:`~redkit.SessionStore`,
    :class:`~redkit.RateLimiter`, publishers, subscribers, consumers,
    :class:`~redkit.DistributedLock` ...) or to a function returning stats.
    Gauge fields (``in_flight``) are gauges, the rest counters.

    ``latency=True`` (the default) turns on the latency histograms
    (:func:`redkit.metrics.enable_latency_histograms`, with ``buckets``)
    and exports them as ``<namespace>_operation_duration_seconds``; only one
    collector per registry and namespace can have it (both would export the
    same family: the registry raises ``ValueError`` when the second is
    registered). :meth:`close` turns timing off again for this collector.
    ``labels`` are added to every sample.
    """

    def __init__(
        self,
        components: Mapping[str, Any],
        *,
        namespace: str = "redkit",
        labels: Mapping[str, str] | None = None,
        latency: bool = True,
        buckets: Sequence[float] | None = None,
    ) -> None:
        if not isinstance(components, Mapping):
            raise ConfigError(
                f"components must map names to components, got {type(components).__name__}"
            )
        self.components = dict(components)
        self.namespace = namespace
        self.labels = dict(labels or {})
        self.latency = bool(latency)
        # Built once now, so a bad name, label or stats source fails here
        # rather than at every scrape.
        families(self.components, namespace=namespace, labels=self.labels)
        self._timing = False
        if self.latency:
            _telemetry.enable_latency(buckets)
            self._timing = True

    def __repr__(self) -> str:
        return f"<RedkitCollector {sorted(self.components)} latency={self.latency}>"

    def close(self) -> None:
        """Stop the timing this collector started (what was recorded stays;
        other collectors keep theirs). Unregister it from its registry
        yourself."""
        if self._timing:
            self._timing = False
            _telemetry.disable_latency()

    def collect(self) -> Iterator[Metric]:
        found = families(
            self.components, namespace=self.namespace, labels=self.labels, latency=self.latency
        )
        for family in found:
            yield _metric(family)

    def describe(self) -> Iterator[Metric]:
        """The families this collector exports, the latency histogram
        included before anything was timed: a registry refuses a second
        collector exporting one of them when it is registered, not at some
        later scrape."""
        yield from self.collect()
        if self.latency and not latency_histograms():
            name = _metric_name(self.namespace, "operation_duration_seconds")
            yield HistogramMetricFamily(name, "", labels=[*self.labels, "operation"])


def _metric(family: Family) -> Metric:
    if family.kind == "histogram":
        return _histogram(family)
    names = [k for k, _ in family.samples[0].labels]
    metric: CounterMetricFamily | GaugeMetricFamily
    if family.kind == "counter":
        metric = CounterMetricFamily(family.name, family.help, labels=names)
    else:
        metric = GaugeMetricFamily(family.name, family.help, labels=names)
    for sample in family.samples:
        metric.add_metric([v for _, v in sample.labels], sample.value)
    return metric


def _histogram(family: Family) -> Metric:
    # Samples come per series: its buckets (ending at +Inf), _count, _sum.
    label_names: list[str] = []
    buckets: list[tuple[str, float]] = []
    metric: HistogramMetricFamily | None = None
    for sample in family.samples:
        labels = [(k, v) for k, v in sample.labels if k != "le"]
        if metric is None:
            label_names = [k for k, _ in labels]
            metric = HistogramMetricFamily(family.name, family.help, labels=label_names)
        if sample.name.endswith("_bucket"):
            buckets.append((dict(sample.labels)["le"], sample.value))
        elif sample.name.endswith("_sum"):
            metric.add_metric([v for _, v in labels], buckets, sample.value)
            buckets = []
    assert metric is not None
    return metric
