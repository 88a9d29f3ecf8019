"""Cache-aside over Redis: :class:`Cache` with single-flight loads and a
cross-process lease against stampedes, tag invalidation, an O(1)
``clear()``, an optional coherent in-process tier (:class:`LocalCache`),
the ``cache.cached(...)`` decorator and the :class:`Invalidator` strategies.
"""

from . import _golayout  # noqa: F401  (registers Cache(layout="go"))
from .core import MISSING, Cache, CacheStats
from .decorator import CachedFunction
from .invalidation import InvalidationStrategy, Invalidator, InvalidatorStats
from .local import LocalCache

__all__ = [
    "MISSING",
    "Cache",
    "CacheStats",
    "CachedFunction",
    "InvalidationStrategy",
    "Invalidator",
    "InvalidatorStats",
    "LocalCache",
]
