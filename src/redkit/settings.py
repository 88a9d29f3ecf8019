"""Connection settings: the Go service's fields, read from code, a URL or the
environment, validated once so that a bad value fails at start-up with a
message naming it."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from .errors import ConfigError

__all__ = ["RedisSettings", "parse_duration"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_SCHEMES = ("redis", "rediss", "unix")
CertReqs = Literal["required", "optional", "none"]


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration: ``"3s"``, ``"500ms"``, ``"1m30s"``; a
    bare number is seconds. Raises ``ValueError`` for anything else or a
    negative value."""
    raw = text.strip()
    if not raw:
        raise ValueError("empty duration")
    try:
        seconds = float(raw)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _DURATION_PART.finditer(raw):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(raw):
            raise ValueError(f"not a duration: {text!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a non-negative duration: {text!r}")
    return seconds


@dataclasses.dataclass(frozen=True)
class RedisSettings:
    """Where Redis is and how to talk to it.

    ``url`` (``redis://``, ``rediss://`` or ``unix://``) wins over ``host``,
    ``port``, ``db``, ``username`` and ``password`` for the parts it names.
    ``cluster=True`` treats the address as a seed node of a Redis Cluster;
    ``sentinels`` plus ``sentinel_master`` ask Sentinel for the master.

    ``min_idle_conns`` (Go's MinIdleConns): redis-py keeps no floor of idle
    connections, so :func:`redkit.connect` opens that many connections up
    front on a standalone or Sentinel client; afterwards the pool grows on
    demand up to ``pool_size`` and idle connections are not reopened.

    ``pool_size`` caps a standalone pool, and a command waits (up to
    ``connect_timeout``) for a free connection. On a cluster each node's cap
    is ``max(pool_size, 100)`` and at most that many commands are in flight
    at once; the rest wait the same way.

    Timeouts are seconds. ``max_retries`` bounds both the start-up attempts of
    ``connect()`` and redis-py's retries of a command whose connection failed.
    """

    host: str = "localhost"
    port: int = 6379
    password: str | None = dataclasses.field(default=None, repr=False)
    db: int = 0
    max_retries: int = 3
    pool_size: int = 10
    min_idle_conns: int = 5
    read_timeout: float = 3.0
    write_timeout: float = 3.0
    connect_timeout: float = 5.0
    url: str | None = dataclasses.field(default=None, repr=False)
    username: str | None = None
    ssl: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: CertReqs = "required"
    cluster: bool = False
    sentinel_master: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    unix_socket_path: str | None = None

    def __post_init__(self) -> None:
        if self.url is not None:
            self._apply_url(self.url)
        _check_int("port", self.port, 1, 65535)
        _check_int("db", self.db, 0, 1 << 16)
        _check_int("max_retries", self.max_retries, 0, 100)
        _check_int("pool_size", self.pool_size, 1, 1 << 20)
        _check_int("min_idle_conns", self.min_idle_conns, 0, 1 << 20)
        for name in ("read_timeout", "write_timeout", "connect_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if not self.host or any(c.isspace() for c in self.host):
            raise ConfigError(f"host must be a host name or address, got {self.host!r}")
        if self.ssl_cert_reqs not in ("required", "optional", "none"):
            raise ConfigError(
                "ssl_cert_reqs must be 'required', 'optional' or 'none', "
                f"got {self.ssl_cert_reqs!r}"
            )
        if bool(self.sentinels) != bool(self.sentinel_master):
            raise ConfigError("sentinel_master and sentinels must be given together")
        if self.cluster and self.sentinels:
            raise ConfigError("cluster and sentinel settings cannot be combined")
        if self.cluster and self.unix_socket_path:
            raise ConfigError("a cluster seed node must be a TCP address, not a unix socket")
        if self.cluster and self.db != 0:
            raise ConfigError(f"Redis Cluster has only db 0, got db={self.db}")
        for sentinel in self.sentinels:
            if (
                not isinstance(sentinel, tuple)
                or len(sentinel) != 2
                or not isinstance(sentinel[1], int)
            ):
                raise ConfigError(f"sentinels must be (host, port) pairs, got {sentinel!r}")

    def _apply_url(self, url: str) -> None:
        shown = _redact_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"malformed Redis URL {shown!r}: {exc}") from None
        if parts.scheme not in _SCHEMES:
            raise ConfigError(f"Redis URL {shown!r} must start with redis://, rediss:// or unix://")
        updates: dict[str, Any] = {}
        if parts.username:
            updates["username"] = unquote(parts.username)
        if parts.password:
            updates["password"] = unquote(parts.password)
        if parts.scheme == "unix":
            if not parts.path:
                raise ConfigError(f"Redis URL {shown!r} names no socket path")
            updates["unix_socket_path"] = parts.path
        else:
            if not parts.hostname:
                raise ConfigError(f"Redis URL {shown!r} names no host")
            updates["host"] = parts.hostname
            if port is not None:
                updates["port"] = port
            if parts.scheme == "rediss":
                updates["ssl"] = True
            db_text = parts.path.lstrip("/")
            if db_text:
                if not db_text.isdigit():
                    raise ConfigError(f"Redis URL {shown!r} has a database that is not a number")
                updates["db"] = int(db_text)
        for key, value in _query(parts.query).items():
            if key == "db" and value.isdigit():
                updates["db"] = int(value)
            elif key == "db":
                raise ConfigError(f"Redis URL {shown!r} has a database that is not a number")
        for key, value in updates.items():
            object.__setattr__(self, key, value)

    @property
    def address(self) -> str:
        """``host:port`` or the socket path, for messages (never credentials)."""
        if self.unix_socket_path:
            return f"unix:{self.unix_socket_path}"
        if self.sentinels:
            nodes = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel {self.sentinel_master}@{nodes}"
        return f"{self.host}:{self.port}"

    def replace(self, **changes: Any) -> RedisSettings:
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> RedisSettings:
        """Settings for ``url``, with other fields from ``overrides``."""
        return cls(url=url, **overrides)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RedisSettings:
        """Settings from ``REDIS_*`` variables with the Go service's defaults.

        ``REDIS_URL`` wins over ``REDIS_HOST``/``PORT``/``PASSWORD``/``DB`` for
        what it names. Also read: ``REDIS_USERNAME``, ``REDIS_MAX_RETRIES``,
        ``REDIS_POOL_SIZE``, ``REDIS_MIN_IDLE_CONNS``, ``REDIS_READ_TIMEOUT``,
        ``REDIS_WRITE_TIMEOUT``, ``REDIS_CONNECT_TIMEOUT`` (durations such as
        ``3s`` or ``500ms``), ``REDIS_CLUSTER`` (true/false),
        ``REDIS_SENTINELS`` (``host:port,host:port``) with
        ``REDIS_SENTINEL_MASTER``. A bad value raises :class:`ConfigError`
        naming the variable.
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}

        def text(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        if (value := text("REDIS_HOST")) is not None:
            kwargs["host"] = value
        if (value := text("REDIS_PASSWORD")) is not None:
            kwargs["password"] = value
        if (value := text("REDIS_USERNAME")) is not None:
            kwargs["username"] = value
        for var, field in (
            ("REDIS_PORT", "port"),
            ("REDIS_DB", "db"),
            ("REDIS_MAX_RETRIES", "max_retries"),
            ("REDIS_POOL_SIZE", "pool_size"),
            ("REDIS_MIN_IDLE_CONNS", "min_idle_conns"),
        ):
            if (value := text(var)) is not None:
                try:
                    kwargs[field] = int(value, 10)
                except ValueError:
                    raise ConfigError(f"{var} must be a whole number, got {value!r}") from None
        for var, field in (
            ("REDIS_READ_TIMEOUT", "read_timeout"),
            ("REDIS_WRITE_TIMEOUT", "write_timeout"),
            ("REDIS_CONNECT_TIMEOUT", "connect_timeout"),
        ):
            if (value := text(var)) is not None:
                try:
                    seconds = parse_duration(value)
                except ValueError:
                    raise ConfigError(
                        f"{var} must be a duration such as 3s or 500ms, got {value!r}"
                    ) from None
                if seconds <= 0:
                    raise ConfigError(f"{var} must be longer than zero, got {value!r}")
                kwargs[field] = seconds
        if (value := text("REDIS_CLUSTER")) is not None:
            kwargs["cluster"] = _parse_bool("REDIS_CLUSTER", value)
        if (value := text("REDIS_SENTINELS")) is not None:
            kwargs["sentinels"] = _parse_nodes("REDIS_SENTINELS", value)
        if (value := text("REDIS_SENTINEL_MASTER")) is not None:
            kwargs["sentinel_master"] = value
        if (value := text("REDIS_URL")) is not None:
            kwargs["url"] = value
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"from environment: {exc}") from None


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {value!r}")


def _parse_bool(var: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{var} must be true or false, got {value!r}")


def _parse_nodes(var: str, value: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for item in value.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{var} must be host:port pairs separated by commas, got {value!r}")
        nodes.append((host, int(port)))
    return tuple(nodes)


def _query(query: str) -> dict[str, str]:
    out = {}
    for item in query.split("&"):
        if item:
            key, _, value = item.partition("=")
            out[unquote(key)] = unquote(value)
    return out


def _redact_url(url: str) -> str:
    """The URL with any password replaced, safe for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<unparseable>" if "@" in url else url
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostpart}" if ":" in userinfo else f"{scheme}://***@{hostpart}"
