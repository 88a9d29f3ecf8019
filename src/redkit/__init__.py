"""redkit: Redis as the cache, session store, rate limiter, event bus and lock
service of an asyncio web backend."""

from ._version import __version__
from .cache import (
    MISSING,
    Cache,
    CachedFunction,
    CacheStats,
    InvalidationStrategy,
    Invalidator,
    InvalidatorStats,
    LocalCache,
)
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
from .ratelimit import (
    Decision,
    Rate,
    RateLimiter,
    RateLimitMiddleware,
    RateLimitRule,
    RateLimitStats,
    RateState,
    RequestInfo,
    by_client_ip,
    by_user_or_ip,
)
from .scripts import Script
from .session import (
    Session,
    SessionDataTooLarge,
    SessionMiddleware,
    SessionStats,
    SessionStore,
    load_session,
    login,
    logout,
    session_user_id,
)
from .settings import RedisSettings

__all__ = [
    "MISSING",
    "Cache",
    "CacheStats",
    "CachedFunction",
    "Client",
    "Codec",
    "ConfigError",
    "ConnectionUnavailable",
    "Decision",
    "DistributedLock",
    "HealthStatus",
    "InvalidationStrategy",
    "Invalidator",
    "InvalidatorStats",
    "JsonCodec",
    "KeySpace",
    "Lease",
    "LocalCache",
    "LockError",
    "LockLost",
    "LockNotAcquired",
    "LockStats",
    "MsgpackCodec",
    "Permit",
    "Rate",
    "RateLimitMiddleware",
    "RateLimitRule",
    "RateLimitStats",
    "RateLimiter",
    "RateState",
    "RedisServerError",
    "RedisSettings",
    "RedkitError",
    "RequestInfo",
    "Script",
    "Semaphore",
    "SerializationError",
    "Session",
    "SessionDataTooLarge",
    "SessionMiddleware",
    "SessionStats",
    "SessionStore",
    "__version__",
    "by_client_ip",
    "by_user_or_ip",
    "close",
    "connect",
    "health",
    "load_session",
    "login",
    "logout",
    "prometheus_text",
    "session_user_id",
]
