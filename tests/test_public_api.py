"""The public surface is deliberate: what ``redkit`` exports is exactly
``__all__``, every name resolves, and nothing private leaks."""

from __future__ import annotations

import importlib
import inspect

import redkit

EXPECTED = {
    "Event",
    "Publisher",
    "PublisherStats",
    "StreamConsumer",
    "StreamConsumerStats",
    "StreamPublisher",
    "StreamPublisherStats",
    "Subscriber",
    "SubscriberStats",
    "Gap",
    "Session",
    "SessionDataTooLarge",
    "SessionMiddleware",
    "SessionStats",
    "SessionStore",
    "load_session",
    "login",
    "logout",
    "session_user_id",
    "Cache",
    "CacheStats",
    "CachedFunction",
    "InvalidationStrategy",
    "Invalidator",
    "InvalidatorStats",
    "LocalCache",
    "MISSING",
    "RateLimiter",
    "Rate",
    "Decision",
    "RateState",
    "RateLimitStats",
    "RateLimitMiddleware",
    "RateLimitRule",
    "RequestInfo",
    "by_client_ip",
    "by_user_or_ip",
    "Client",
    "build_client",
    "Lifespan",
    "current_session",
    "WrongEventLoop",
    "Codec",
    "ConfigError",
    "ConnectionUnavailable",
    "HealthStatus",
    "JsonCodec",
    "KeySpace",
    "Lease",
    "DistributedLock",
    "LockStats",
    "Permit",
    "Semaphore",
    "LockError",
    "LockLost",
    "LockNotAcquired",
    "NotReplicated",
    "MsgpackCodec",
    "RedisReplyError",
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
    "DEFAULT_LATENCY_BUCKETS",
    "LatencyHistogram",
    "disable_latency_histograms",
    "enable_latency_histograms",
    "latency_histograms",
}


def test_all_is_the_expected_surface() -> None:
    assert set(redkit.__all__) == EXPECTED
    assert len(redkit.__all__) == len(set(redkit.__all__))


def test_every_public_name_resolves() -> None:
    for name in redkit.__all__:
        assert getattr(redkit, name) is not None, name


def test_no_undeclared_public_names() -> None:
    public = {
        name
        for name, value in vars(redkit).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public <= set(redkit.__all__), public - set(redkit.__all__)


def test_errors_say_when_they_are_raised() -> None:
    errors = importlib.import_module("redkit.errors")
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, redkit.RedkitError)
        assert cls.__doc__ and len(cls.__doc__) > 30, name
