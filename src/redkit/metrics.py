"""Prometheus text exposition of redkit's counters, without a client library.

Every component's ``stats()`` returns a frozen dataclass of numbers;
:func:`prometheus_text` renders any number of them:

    prometheus_text({"cache": cache.stats(), "ratelimit": limiter.stats()})

gives ``redkit_cache_hits 12`` and so on, one sample per field, with a
``# TYPE`` line. Fields are counters unless their dataclass field carries
``metadata={"kind": "gauge"}``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["prometheus_text"]

_NAME = re.compile(r"[^a-zA-Z0-9_]")


def _metric_name(*parts: str) -> str:
    return _NAME.sub("_", "_".join(p for p in parts if p))


def prometheus_text(
    stats: Mapping[str, Any], *, namespace: str = "redkit", labels: Mapping[str, str] | None = None
) -> str:
    """Text in the Prometheus exposition format for ``{component: stats}``.

    ``stats`` values are dataclass instances (or plain mappings of name to
    number); booleans and non-numbers are skipped. ``labels`` are added to
    every sample (for instance ``{"instance": "api-1"}``).
    """
    label_text = ""
    if labels:
        inner = ",".join(f'{_NAME.sub("_", k)}="{_escape(v)}"' for k, v in sorted(labels.items()))
        label_text = "{" + inner + "}"
    lines: list[str] = []
    for component, snapshot in stats.items():
        for field, value, kind in _fields(snapshot):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            name = _metric_name(namespace, component, field)
            if kind == "counter" and not name.endswith("_total"):
                name += "_total"
            lines.append(f"# TYPE {name} {kind}")
            lines.append(f"{name}{label_text} {value}")
    return "\n".join(lines) + "\n"


def _fields(snapshot: Any) -> list[tuple[str, Any, str]]:
    if dataclasses.is_dataclass(snapshot) and not isinstance(snapshot, type):
        return [
            (f.name, getattr(snapshot, f.name), f.metadata.get("kind", "counter"))
            for f in dataclasses.fields(snapshot)
        ]
    if isinstance(snapshot, Mapping):
        return [(str(k), v, "counter") for k, v in snapshot.items()]
    raise TypeError(f"cannot export stats of type {type(snapshot).__qualname__}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
