"""How every component counts.

A component's ``stats()`` returns a frozen dataclass of numbers (its
``*Stats``). Its fields are counters unless declared with :func:`gauge`
(a value that goes down as well as up, like calls in flight); the metrics
exporters read that mark. While running, a component keeps its counters in
a plain dict made by :func:`counts_for` (``counts["hits"] += 1`` costs
about what an attribute increment does, and the field names are checked
once, here) and builds the snapshot with :func:`snapshot`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["counter_names", "counts_for", "gauge", "is_gauge", "snapshot"]

S = TypeVar("S")

_GAUGE = {"kind": "gauge"}


def gauge() -> Any:
    """A ``*Stats`` field that is a gauge, not a counter
    (``in_flight: int = gauge()``)."""
    return dataclasses.field(metadata=_GAUGE)


def is_gauge(field: dataclasses.Field[Any]) -> bool:
    return field.metadata.get("kind") == "gauge"


def counter_names(stats_type: type[Any]) -> tuple[str, ...]:
    """The counter fields of ``stats_type``, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(stats_type) if not is_gauge(f))


def counts_for(stats_type: type[Any]) -> dict[str, int]:
    """Zeroed counters for every counter field of ``stats_type``."""
    return dict.fromkeys(counter_names(stats_type), 0)


def snapshot(stats_type: type[S], counts: dict[str, int], **gauges: int | float) -> S:
    """``stats_type`` with the current ``counts`` and ``gauges``."""
    return stats_type(**counts, **gauges)
