"""Distributed locks and semaphores on Redis: leases with fencing tokens,
automatic renewal, loss signalling, release that survives cancellation, and
waiting with backoff plus early wake-up.

See ``docs/lock.md`` for usage, fencing and the limits of Redis locks.
"""

from ._acquire import Acquisition
from ._common import LockStats
from ._lease import Lease, OnLost, Permit
from ._lock import DistributedLock
from ._semaphore import Semaphore

__all__ = [
    "Acquisition",
    "DistributedLock",
    "Lease",
    "LockStats",
    "OnLost",
    "Permit",
    "Semaphore",
]
