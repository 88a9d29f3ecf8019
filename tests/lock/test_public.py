"""The public surface of redkit.lock is exactly its __all__."""

from __future__ import annotations

import dataclasses

import pytest

import redkit.lock
from redkit.lock import LockStats


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(redkit.lock) if not name.startswith("_")}
    assert set(redkit.lock.__all__) == public
    for name in redkit.lock.__all__:
        assert getattr(redkit.lock, name) is not None


def test_stats_are_a_frozen_dataclass_of_ints() -> None:
    stats = LockStats()
    assert dataclasses.is_dataclass(stats)
    assert all(isinstance(getattr(stats, f.name), int) for f in dataclasses.fields(stats))
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.acquired = 1  # type: ignore[misc]
