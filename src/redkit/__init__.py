"""redkit: Redis as the cache, session store, rate limiter, event bus and lock
service of an asyncio web backend."""

from ._version import __version__
from .codec import Codec, JsonCodec, MsgpackCodec
from .connection import Client, close, connect
from .errors import (
    ConfigError,
    ConnectionUnavailable,
    LockError,
    LockLost,
    LockNotAcquired,
    RedisServerError,
    RedkitError,
    SerializationError,
)
from .health import HealthStatus, health
from .keys import KeySpace
from .lock import DistributedLock, Lease, LockStats, Permit, Semaphore
from .metrics import prometheus_text
from .scripts import Script
from .settings import RedisSettings

__all__ = [
    "Client",
    "Codec",
    "ConfigError",
    "ConnectionUnavailable",
    "DistributedLock",
    "HealthStatus",
    "JsonCodec",
    "KeySpace",
    "Lease",
    "LockError",
    "LockLost",
    "LockNotAcquired",
    "LockStats",
    "MsgpackCodec",
    "Permit",
    "RedisServerError",
    "RedisSettings",
    "RedkitError",
    "Script",
    "Semaphore",
    "SerializationError",
    "__version__",
    "close",
    "connect",
    "health",
    "prometheus_text",
]
