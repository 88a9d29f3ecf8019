"""The public surface is deliberate: what ``redkit`` and each of its
packages export is exactly their ``__all__``, every name resolves, the
top level re-exports the packages' very objects, and nothing private leaks."""

from __future__ import annotations
import __future__

import importlib
import inspect
import pkgutil
from types import ModuleType

import redkit

TOP, CACHE, EVENTS, LOCK = "redkit", "redkit.cache", "redkit.events", "redkit.lock"
RATELIMIT, SESSION, SERVER = "redkit.ratelimit", "redkit.session", "redkit.server"

# Every public name, with the packages whose ``__all__`` lists it: one table
# pins every ``__all__`` at once, so adding, dropping or moving a public name
# is a change here.
PUBLIC: dict[str, tuple[str, ...]] = {
    "Acquisition": (LOCK,),
    "Algorithm": (RATELIMIT,),
    "ALGORITHMS": (RATELIMIT,),
    "API_RATE": (RATELIMIT,),
    "AUTH_RATE": (RATELIMIT,),
    "build_client": (TOP,),
    "by_client_ip": (TOP, RATELIMIT),
    "by_user_or_ip": (TOP, RATELIMIT),
    "Cache": (TOP, CACHE),
    "CachedFunction": (TOP, CACHE),
    "CacheStats": (TOP, CACHE),
    "Client": (TOP,),
    "ClientStats": (TOP,),
    "client_ip": (RATELIMIT,),
    "close": (TOP,),
    "Codec": (TOP,),
    "ConfigError": (TOP,),
    "connect": (TOP,),
    "ConnectionUnavailable": (TOP,),
    "NotReplicated": (TOP,),
    "current_session": (TOP,),
    "dead_letter_stream_for": (EVENTS,),
    "Decision": (TOP, RATELIMIT),
    "decode_event": (EVENTS,),
    "DEFAULT_LATENCY_BUCKETS": (TOP,),
    "disable_latency_histograms": (TOP,),
    "DistributedLock": (TOP, LOCK),
    "EmbeddedCluster": (SERVER,),
    "EmbeddedRedis": (SERVER,),
    "EmbeddedSentinelGroup": (SERVER,),
    "enable_latency_histograms": (TOP,),
    "encode_event": (EVENTS,),
    "Event": (TOP, EVENTS),
    "find_redis_server": (SERVER,),
    "format_timestamp": (EVENTS,),
    "free_port": (SERVER,),
    "Gap": (TOP, EVENTS),
    "health": (TOP,),
    "HealthStatus": (TOP,),
    "InvalidationStrategy": (TOP, CACHE),
    "Invalidator": (TOP, CACHE),
    "InvalidatorStats": (TOP, CACHE),
    "JsonCodec": (TOP,),
    "KeyFunc": (RATELIMIT,),
    "KeySpace": (TOP,),
    "latency_histograms": (TOP,),
    "LatencyHistogram": (TOP,),
    "Lease": (TOP, LOCK),
    "Lifespan": (TOP,),
    "load_session": (TOP, SESSION),
    "LocalCache": (TOP, CACHE),
    "LockError": (TOP,),
    "LockLost": (TOP,),
    "LockNotAcquired": (TOP,),
    "LockStats": (TOP, LOCK),
    "login": (TOP, SESSION),
    "logout": (TOP, SESSION),
    "MISSING": (TOP, CACHE),
    "MsgpackCodec": (TOP,),
    "new_event": (EVENTS,),
    "OnLost": (LOCK,),
    "parse_timestamp": (EVENTS,),
    "Permit": (TOP, LOCK),
    "prometheus_text": (TOP,),
    "Publisher": (TOP, EVENTS),
    "PublisherStats": (TOP, EVENTS),
    "Rate": (TOP, RATELIMIT),
    "rate_limit_headers": (RATELIMIT,),
    "RateLimiter": (TOP, RATELIMIT),
    "RateLimitMiddleware": (TOP, RATELIMIT),
    "RateLimitRule": (TOP, RATELIMIT),
    "RateLimitStats": (TOP, RATELIMIT),
    "RateSpec": (RATELIMIT,),
    "RateState": (TOP, RATELIMIT),
    "RedisReplyError": (TOP,),
    "RedisServerError": (TOP,),
    "RedisSettings": (TOP,),
    "RedkitError": (TOP,),
    "RequestInfo": (TOP, RATELIMIT),
    "Script": (TOP,),
    "Semaphore": (TOP, LOCK),
    "SerializationError": (TOP,),
    "server_version": (SERVER,),
    "Session": (TOP, SESSION),
    "session_user_id": (TOP, SESSION),
    "SessionDataTooLarge": (TOP, SESSION),
    "SessionMiddleware": (TOP, SESSION),
    "SessionStats": (TOP, SESSION),
    "SessionStore": (TOP, SESSION),
    "StreamConsumer": (TOP, EVENTS),
    "StreamConsumerStats": (TOP, EVENTS),
    "StreamPublisher": (TOP, EVENTS),
    "StreamPublisherStats": (TOP, EVENTS),
    "Subscriber": (TOP, EVENTS),
    "SubscriberStats": (TOP, EVENTS),
    "USER_RATE": (RATELIMIT,),
    "__version__": (TOP,),
    "WrongEventLoop": (TOP,),
}


def _packages() -> list[str]:
    found = [TOP]
    for info in pkgutil.iter_modules(redkit.__path__, "redkit."):
        if info.ispkg:
            found.append(info.name)
    return found


def _expected(package: str) -> set[str]:
    return {name for name, homes in PUBLIC.items() if package in homes}


def _module(package: str) -> ModuleType:
    return importlib.import_module(package)


def test_the_table_names_only_packages_that_exist() -> None:
    named = {home for homes in PUBLIC.values() for home in homes}
    assert named <= set(_packages())


def test_every_all_is_the_expected_surface() -> None:
    for package in _packages():
        exported = list(getattr(_module(package), "__all__", []))
        assert set(exported) == _expected(package), package
        assert len(exported) == len(set(exported)), package


def test_every_public_name_resolves() -> None:
    for name, homes in PUBLIC.items():
        for package in homes:
            assert getattr(_module(package), name) is not None, (package, name)


def test_the_top_level_re_exports_the_packages_objects() -> None:
    for name, homes in PUBLIC.items():
        if TOP in homes:
            for package in homes[1:]:
                assert getattr(redkit, name) is getattr(_module(package), name), name


def test_no_undeclared_public_names() -> None:
    for package in _packages():
        module = _module(package)
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and not inspect.ismodule(value)
            and value is not __future__.annotations
        }
        assert public <= _expected(package), (package, public - _expected(package))


def test_errors_say_when_they_are_raised() -> None:
    errors = importlib.import_module("redkit.errors")
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, redkit.RedkitError)
        assert cls.__doc__ and len(cls.__doc__) > 30, name
