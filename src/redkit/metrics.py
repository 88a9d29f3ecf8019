"""Prometheus exposition of redkit's counters and operation latencies.

Every component's ``stats()`` returns a frozen dataclass of numbers;
:func:`prometheus_text` renders any number of them, without a client
library:

    prometheus_text({"cache": cache, "ratelimit": limiter.stats()})

gives ``redkit_cache_hits_total 12`` and so on, one sample per field, with
``# HELP`` and ``# TYPE`` lines. Fields are counters unless their dataclass
field is declared with ``redkit._counters.gauge()`` (``in_flight``: handler
calls running now). :class:`redkit.prometheus.RedkitCollector` exports the same
families through ``prometheus_client``; both are built by :func:`families`,
so names, types and help texts agree.

Latency histograms are off until :func:`enable_latency_histograms`: then
the hot operations (cache reads, session reads, rate-limit decisions,
publishes, lock acquisitions and releases ...) are timed into one histogram
per operation, exported as ``redkit_operation_duration_seconds`` with an
``operation`` label. While they are off, those operations run no timing
code at all.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from . import _counters, _telemetry
from .errors import ConfigError

__all__ = [
    "DEFAULT_LATENCY_BUCKETS",
    "LatencyHistogram",
    "disable_latency_histograms",
    "enable_latency_histograms",
    "latency_histograms",
    "prometheus_text",
]

_NAME = re.compile(r"[^a-zA-Z0-9_]")

DEFAULT_LATENCY_BUCKETS = _telemetry.DEFAULT_BUCKETS
"""Upper bounds (seconds) of the latency buckets unless you choose others."""


@dataclasses.dataclass(frozen=True)
class LatencyHistogram:
    """Durations of one operation since timing first started: how many took
    at most each bound (cumulative, as Prometheus counts them), how many in
    all and their sum in seconds."""

    buckets: tuple[tuple[float, int], ...]
    """``(upper bound in seconds, calls that took at most that)``; the
    last bound is ``inf`` and counts every call."""
    count: int
    sum: float


def enable_latency_histograms(buckets: Sequence[float] | None = None) -> None:
    """Time redkit's hot operations from now on (about 0.3 us per call).

    Calls are counted: timing stops when every call has had its
    :func:`disable_latency_histograms`. The first call chooses the bucket
    bounds (default :data:`DEFAULT_LATENCY_BUCKETS`); one process keeps one
    layout, so later calls naming other bounds raise
    :class:`~redkit.ConfigError`, as do bounds that are not increasing
    positive seconds. :class:`redkit.prometheus.RedkitCollector` calls this
    itself.
    """
    _telemetry.enable_latency(buckets)


def disable_latency_histograms() -> None:
    """Undo one :func:`enable_latency_histograms`. What was recorded is
    kept (Prometheus counters never go down) and timing carries on into the
    same histograms when enabled again."""
    _telemetry.disable_latency()


def latency_histograms() -> dict[str, LatencyHistogram]:
    """The histogram of every operation timed so far, by operation name
    (``"cache.get"``, ``"lock.acquire"`` ...)."""
    recorded = _telemetry.latency()
    if recorded is None:
        return {}
    snapshot: dict[str, LatencyHistogram] = {}
    for name, histogram in sorted(recorded.histograms.items()):
        counts = list(histogram.counts)  # one copy: calls may land meanwhile
        running = 0
        buckets: list[tuple[float, int]] = []
        for bound, count in zip((*histogram.bounds, math.inf), counts, strict=True):
            running += count
            buckets.append((bound, running))
        snapshot[name] = LatencyHistogram(tuple(buckets), running, histogram.sum)
    return snapshot


# -- families ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclasses.dataclass(frozen=True)
class Family:
    """One metric family as Prometheus sees it. ``name`` is the family's
    name without a counter's ``_total``; ``samples`` carry full names."""

    name: str
    kind: str  # "counter", "gauge" or "histogram"
    help: str
    samples: tuple[Sample, ...]

    @property
    def exposed_name(self) -> str:
        """The name on ``# TYPE`` lines (a counter's with ``_total``)."""
        return self.name + "_total" if self.kind == "counter" else self.name


def _metric_name(*parts: str) -> str:
    return _NAME.sub("_", "_".join(p for p in parts if p))


def _check_labels(labels: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    if not labels:
        return ()
    pairs = []
    for key, value in sorted(labels.items()):
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigError(f"labels must map strings to strings, got {key!r}: {value!r}")
        pairs.append((_NAME.sub("_", key), value))
    return tuple(pairs)


def snapshot_of(source: Any) -> Any:
    """The stats of ``source``: a component (its ``stats()``), a function
    returning stats, or stats themselves (a dataclass or a mapping)."""
    stats = getattr(source, "stats", None)
    if callable(stats):
        return stats()
    if callable(source) and not isinstance(source, type):
        return source()
    return source


def families(
    stats: Mapping[str, Any],
    *,
    namespace: str = "redkit",
    labels: Mapping[str, str] | None = None,
    latency: bool = False,
) -> list[Family]:
    """The metric families for ``{component: stats source}`` (see
    :func:`prometheus_text`), plus the latency histograms when ``latency``."""
    common = _check_labels(labels)
    out: list[Family] = []
    for component, source in stats.items():
        snapshot = snapshot_of(source)
        owner = type(snapshot).__qualname__
        for field, value, kind in _fields(snapshot):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            name = _metric_name(namespace, component, field)
            if kind == "counter" and name.endswith("_total"):
                name = name[: -len("_total")]
            help_text = f"{owner}.{field} of redkit component {component!r}"
            full = name + "_total" if kind == "counter" else name
            out.append(Family(name, kind, help_text, (Sample(full, common, value),)))
    if latency:
        out.extend(_latency_families(namespace, common))
    return out


def _latency_families(namespace: str, common: tuple[tuple[str, str], ...]) -> list[Family]:
    histograms = latency_histograms()
    if not histograms:
        return []
    name = _metric_name(namespace, "operation_duration_seconds")
    samples: list[Sample] = []
    for operation, histogram in histograms.items():
        labels = (*common, ("operation", operation))
        for bound, count in histogram.buckets:
            samples.append(Sample(name + "_bucket", (*labels, ("le", _bound(bound))), count))
        samples.append(Sample(name + "_count", labels, histogram.count))
        samples.append(Sample(name + "_sum", labels, histogram.sum))
    help_text = "Duration of redkit operations (seconds), by operation"
    return [Family(name, "histogram", help_text, tuple(samples))]


def _bound(bound: float) -> str:
    # As the Go client and prometheus_client write "le": +Inf, 0.005, 1.0.
    return "+Inf" if bound == math.inf else repr(float(bound))


def _fields(snapshot: Any) -> list[tuple[str, Any, str]]:
    if dataclasses.is_dataclass(snapshot) and not isinstance(snapshot, type):
        return [
            (f.name, getattr(snapshot, f.name), "gauge" if _counters.is_gauge(f) else "counter")
            for f in dataclasses.fields(snapshot)
        ]
    if isinstance(snapshot, Mapping):
        return [(str(k), v, "counter") for k, v in snapshot.items()]
    raise TypeError(f"cannot export stats of type {type(snapshot).__qualname__}")


# -- the text format ----------------------------------------------------------


def prometheus_text(
    stats: Mapping[str, Any],
    *,
    namespace: str = "redkit",
    labels: Mapping[str, str] | None = None,
    latency: bool = False,
) -> str:
    """Text in the Prometheus exposition format for ``{component: stats}``.

    ``stats`` values are components (anything with ``stats()``), functions
    returning stats, or stats themselves: dataclass instances or plain
    mappings of name to number; booleans and non-numbers are skipped.
    ``labels`` are added to every sample (for instance ``{"instance":
    "api-1"}``). ``latency=True`` adds the histograms of
    :func:`enable_latency_histograms` (none until timing is on).
    """
    lines: list[str] = []
    for family in families(stats, namespace=namespace, labels=labels, latency=latency):
        lines.append(f"# HELP {family.exposed_name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.exposed_name} {family.kind}")
        lines.extend(_sample_line(sample) for sample in family.samples)
    return "\n".join(lines) + "\n"


def _sample_line(sample: Sample) -> str:
    label_text = ""
    if sample.labels:
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels)
        label_text = "{" + inner + "}"
    return f"{sample.name}{label_text} {_value(sample.value)}"


def _value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")
