"""Hypothesis strategies and checks for JSON-shaped values, shared by the
property tests of the codecs, the session records and the event envelope."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st


def json_values(
    *, finite: bool, width: int, max_leaves: int, text: int = 12, keys: int = 6
) -> st.SearchStrategy[Any]:
    """Nested lists and objects of JSON scalars, ints far past 64 bits
    included; with ``finite=False`` NaN and the infinities too."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=not finite, allow_infinity=not finite)
        | st.text(max_size=text)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=width)
            | st.dictionaries(st.text(max_size=keys), inner, max_size=width)
        ),
        max_leaves=max_leaves,
    )


def nested(depth: int) -> bytes:
    """``depth`` empty arrays, one inside the other."""
    return b"[" * depth + b"]" * depth


def holds_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(holds_non_finite(item) for item in value)
    if isinstance(value, dict):
        return any(holds_non_finite(item) for item in value.values())
    return False
