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
from .metrics import prometheus_text
from .scripts import Script
from .settings import RedisSettings

__all__ = [
    "Client",
    "Codec",
    "ConfigError",
    "ConnectionUnavailable",
    "HealthStatus",
    "JsonCodec",
    "KeySpace",
    "LockError",
    "LockLost",
    "LockNotAcquired",
    "MsgpackCodec",
    "RedisServerError",
    "RedisSettings",
    "RedkitError",
    "Script",
    "SerializationError",
    "__version__",
    "close",
    "connect",
    "health",
    "prometheus_text",
]
