"""Connection settings: the Go service's fields, read from code, a URL or the
environment, validated once so that a bad value fails at start-up with a
message naming it."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import unquote

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
    A username or password in the URL is percent-encoded (``/`` as ``%2F``,
    ``@`` as ``%40``, ``%`` as ``%25``); a ``password=`` query option is
    refused. ``cluster=True`` treats the address as a seed node of a Redis
    Cluster; ``sentinels`` plus ``sentinel_master`` ask Sentinel for the
    master.

    ``min_idle_conns`` (Go's MinIdleConns): redis-py keeps no floor of idle
    connections, so :func:`redkit.connect` opens that many connections up
    front on a standalone or Sentinel client; afterwards the pool grows on
    demand up to ``pool_size`` and idle connections are not reopened.

    ``pool_size`` caps a standalone or Sentinel pool, and a command waits (up
    to ``connect_timeout``) for a free connection. On a cluster each node's
    cap is ``max(pool_size, 100)`` and at most that many commands are in
    flight at once; the rest wait the same way.

    ``autopipeline`` (on by default) sends the ordinary commands of every
    task that shares the client on a few shared connections per server,
    written together once per event-loop iteration (see
    ``docs/autopipelining.md``); blocking commands, transactions, pub/sub and
    connection-state commands still take a pooled connection each.
    ``autopipeline=False`` (``REDIS_AUTOPIPELINE=false``) gives redis-py's
    plain pooled client.

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
    autopipeline: bool = True

    def __post_init__(self) -> None:
        if self.url is not None:
            for key, value in _parse_url(self.url).items():
                object.__setattr__(self, key, value)
        for name, (low, high) in _INT_LIMITS.items():
            _check_int(name, getattr(self, name), low, high)
        for name in ("ssl", "cluster", "autopipeline"):
            if not isinstance(getattr(self, name), bool):
                raise _FieldError(
                    (name,), f"{name} must be True or False, got {_show(getattr(self, name))}"
                )
        for name in ("read_timeout", "write_timeout", "connect_timeout"):
            value = getattr(self, name)
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise _FieldError(
                    (name,), f"{name} must be a positive number of seconds, got {_show(value)}"
                )
        if not _is_host(self.host):
            raise _FieldError(
                ("host",), f"host must be a host name or address, got {_show(self.host)}"
            )
        if self.password is not None and not _is_text(self.password):
            # Never the value, not even in part.
            raise _FieldError(("password",), "password must be text that encodes as UTF-8")
        for name in ("username", "sentinel_master", "unix_socket_path"):
            value = getattr(self, name)
            if value is not None and not _is_text(value):
                raise _FieldError(
                    (name,), f"{name} must be text that encodes as UTF-8, got {_show(value)}"
                )
        if self.ssl_cert_reqs not in ("required", "optional", "none"):
            raise _FieldError(
                ("ssl_cert_reqs",),
                "ssl_cert_reqs must be 'required', 'optional' or 'none', "
                f"got {_show(self.ssl_cert_reqs)}",
            )
        if not isinstance(self.sentinels, (tuple, list)):
            raise _FieldError(
                ("sentinels",),
                f"sentinels must be (host, port) pairs, got {_show(self.sentinels)}",
            )
        object.__setattr__(self, "sentinels", tuple(self.sentinels))
        for sentinel in self.sentinels:
            if (
                not isinstance(sentinel, tuple)
                or len(sentinel) != 2
                or not _is_host(sentinel[0])
                or not isinstance(sentinel[1], int)
                or isinstance(sentinel[1], bool)
                or not 1 <= sentinel[1] <= 65535
            ):
                raise _FieldError(
                    ("sentinels",), f"sentinels must be (host, port) pairs, got {_show(sentinel)}"
                )
        if bool(self.sentinels) != bool(self.sentinel_master):
            raise _FieldError(
                ("sentinels", "sentinel_master"),
                "sentinel_master and sentinels must be given together",
            )
        if self.cluster and self.sentinels:
            raise _FieldError(
                ("cluster", "sentinels"), "cluster and sentinel settings cannot be combined"
            )
        if self.cluster and self.unix_socket_path:
            raise _FieldError(
                ("cluster", "unix_socket_path"),
                "a cluster seed node must be a TCP address, not a unix socket",
            )
        if self.cluster and self.db != 0:
            raise _FieldError(("cluster", "db"), f"Redis Cluster has only db 0, got db={self.db}")

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
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> RedisSettings:
        """Settings for ``url``, with other fields from ``overrides``."""
        _check_names(overrides)
        return cls(url=url, **overrides)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RedisSettings:
        """Settings from ``REDIS_*`` variables with the Go service's defaults.

        ``REDIS_URL`` wins over ``REDIS_HOST``/``PORT``/``PASSWORD``/``DB`` for
        what it names. Also read: ``REDIS_USERNAME``, ``REDIS_MAX_RETRIES``,
        ``REDIS_POOL_SIZE``, ``REDIS_MIN_IDLE_CONNS``, ``REDIS_READ_TIMEOUT``,
        ``REDIS_WRITE_TIMEOUT``, ``REDIS_CONNECT_TIMEOUT`` (durations such as
        ``3s`` or ``500ms``), ``REDIS_CLUSTER`` and ``REDIS_AUTOPIPELINE``
        (true/false),
        ``REDIS_SENTINELS`` (``host:port,host:port``) with
        ``REDIS_SENTINEL_MASTER``. A bad value raises :class:`ConfigError`
        naming the variable and its value (never a password: not the value of
        ``REDIS_PASSWORD``, not the password inside ``REDIS_URL``).
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        # Which variable each field came from, to name it in errors.
        origin: dict[str, str] = {}

        def text(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        def take(field: str, var: str, value: Any) -> None:
            kwargs[field] = value
            origin[field] = var

        for var, field in (
            ("REDIS_HOST", "host"),
            ("REDIS_PASSWORD", "password"),
            ("REDIS_USERNAME", "username"),
            ("REDIS_SENTINEL_MASTER", "sentinel_master"),
        ):
            if (value := text(var)) is not None:
                take(field, var, value)
        for var, field in (
            ("REDIS_PORT", "port"),
            ("REDIS_DB", "db"),
            ("REDIS_MAX_RETRIES", "max_retries"),
            ("REDIS_POOL_SIZE", "pool_size"),
            ("REDIS_MIN_IDLE_CONNS", "min_idle_conns"),
        ):
            if (value := text(var)) is not None:
                low, high = _INT_LIMITS[field]
                number = _whole_number(value)
                if number is None or not low <= number <= high:
                    raise ConfigError(
                        f"{var} must be a whole number from {low} to {high}, got {_show(value)}"
                    )
                take(field, var, number)
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
                        f"{var} must be a duration such as 3s or 500ms, got {_show(value)}"
                    ) from None
                if seconds <= 0:
                    raise ConfigError(f"{var} must be longer than zero, got {_show(value)}")
                take(field, var, seconds)
        if (value := text("REDIS_CLUSTER")) is not None:
            take("cluster", "REDIS_CLUSTER", _parse_bool("REDIS_CLUSTER", value))
        if (value := text("REDIS_AUTOPIPELINE")) is not None:
            take("autopipeline", "REDIS_AUTOPIPELINE", _parse_bool("REDIS_AUTOPIPELINE", value))
        if (value := text("REDIS_SENTINELS")) is not None:
            take("sentinels", "REDIS_SENTINELS", _parse_nodes("REDIS_SENTINELS", value))
        if (value := text("REDIS_URL")) is not None:
            try:
                from_url = _parse_url(value)
            except ConfigError as exc:
                raise ConfigError(f"REDIS_URL: {exc}") from None
            kwargs["url"] = value
            origin.update(dict.fromkeys(from_url, "REDIS_URL"))
        try:
            return cls(**kwargs)
        except _FieldError as exc:
            named = [
                f"{var}={_env_value(var, env[var])}" if var != "REDIS_PASSWORD" else var
                for var in dict.fromkeys(origin[f] for f in exc.fields if f in origin)
            ]
            source = f" (from {', '.join(named)})" if named else ""
            raise ConfigError(f"{exc}{source}") from None


class _FieldError(ConfigError):
    """A field failed validation; ``fields`` lets from_env name the variables
    the bad values came from."""

    def __init__(self, fields: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.fields = fields


_INT_LIMITS = {
    "port": (1, 65535),
    "db": (0, 1 << 16),
    "max_retries": (0, 100),
    "pool_size": (1, 1 << 20),
    "min_idle_conns": (0, 1 << 20),
}
_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(RedisSettings))
_SHOWN_MAX = 120


def _check_names(names: Iterable[str]) -> None:
    for name in names:
        if name not in _FIELD_NAMES:
            raise ConfigError(f"unknown setting {_show(name)}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _FieldError(
            (name,), f"{name} must be a whole number from {low} to {high}, got {_show(value)}"
        )


def _show(value: object) -> str:
    """``repr(value)``, cut short: a message names a bad value but need not
    carry a megabyte of it."""
    shown = repr(value)
    return shown if len(shown) <= _SHOWN_MAX else shown[: _SHOWN_MAX - 3] + "..."


def _env_value(var: str, value: str) -> str:
    return _show(_redact_url(value)) if var == "REDIS_URL" else _show(value)


def _whole_number(text: str) -> int | None:
    """The integer ``text`` spells in ASCII digits (spaces around allowed), or
    None; never more digits than any limit needs."""
    match = re.fullmatch(r"\s*([+-]?)([0-9]{1,30})\s*", text)
    if match is None:
        return None
    number = int(match.group(2))
    return -number if match.group(1) == "-" else number


def _is_text(value: object) -> bool:
    """A str that can go on the wire (no lone surrogates)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_host(value: object) -> bool:
    return (
        isinstance(value, str)
        and bool(value)
        and _is_text(value)
        and not any(c.isspace() or unicodedata.category(c) == "Cc" for c in value)
    )


def _parse_bool(var: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{var} must be true or false, got {_show(value)}")


def _parse_nodes(var: str, value: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for item in value.split(","):
        host, sep, port_text = item.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        port = _whole_number(port_text) if port_text.strip() == port_text else None
        if not sep or not _is_host(host) or port is None or not 0 < port < 65536:
            raise ConfigError(
                f"{var} must be host:port pairs separated by commas, got {_show(value)}"
            )
        nodes.append((host, port))
    return tuple(nodes)


# --- Redis URLs -------------------------------------------------------------
#
# Parsed here rather than with urllib.parse: urlsplit's errors quote pieces of
# the URL (a password with a raw "/" becomes the "port" it complains about),
# and it silently drops tabs and newlines. Every message below shows the URL
# through _redact_url only.


def _parse_url(url: object) -> dict[str, Any]:
    """The fields a Redis URL sets. Raises ConfigError, never quoting the
    password."""
    if not isinstance(url, str):
        raise ConfigError(f"url must be a string, got {type(url).__name__}")
    text = url.strip()
    shown = _show(_redact_url(text))
    if any(_unsafe_in_url(c) for c in text):
        raise ConfigError(
            f"Redis URL {shown} contains a space, a control character or a lone "
            "surrogate; percent-encode it"
        )
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _SCHEMES:
        raise ConfigError(f"Redis URL {shown} must start with redis://, rediss:// or unix://")
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in tail and (authority or scheme != "unix"):
        # Most likely a password holding a raw "/", "?" or "#".
        raise ConfigError(
            f"Redis URL {shown} has an '@' after its host: percent-encode '/', '?', '#' "
            "and '@' in the username and password (%2F, %3F, %23, %40)"
        )
    # A fragment means nothing to Redis and is ignored, as urllib does.
    path, _, query = tail.partition("#")[0].partition("?")
    userinfo, at, hostport = authority.rpartition("@")
    updates: dict[str, Any] = {}
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = _url_decode(user_text, shown, "username")
        password = _url_decode(password_text, shown, "password")
        if username:
            updates["username"] = username
        if colon and password:
            updates["password"] = password
    if scheme == "unix":
        # A host before the path is ignored, as redis-py and go-redis do.
        socket_path = _url_decode(path, shown, "socket path")
        if not socket_path:
            raise ConfigError(f"Redis URL {shown} names no socket path")
        updates["unix_socket_path"] = socket_path
    else:
        host, port = _url_host_port(hostport, shown)
        updates["host"] = host
        if port is not None:
            updates["port"] = port
        if scheme == "rediss":
            updates["ssl"] = True
        db_text = path[1:]
        if db_text:
            updates["db"] = _url_db(db_text, shown)
    for item in query.split("&"):
        key_text, _, value_text = item.partition("=")
        key = unquote(key_text)
        if key == "db":
            updates["db"] = _url_db(unquote(value_text), shown)
        elif key.lower() == "password":
            raise ConfigError(
                f"Redis URL {shown} has a password in its query, which redkit does not "
                "read: put it before the host, percent-encoded (redis://:PASSWORD@host), "
                "or set password / REDIS_PASSWORD"
            )
    return updates


def _unsafe_in_url(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cs")


def _url_decode(text: str, shown: str, what: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ConfigError(
            f"Redis URL {shown} has a {what} that is not UTF-8 once percent-decoded"
        ) from None


def _url_host_port(hostport: str, shown: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise ConfigError(f"Redis URL {shown} has a '[' without ']' in its host")
        host, after = hostport[1:close], hostport[close + 1 :]
        if after and not after.startswith(":"):
            raise ConfigError(f"Redis URL {shown} has something other than a port after ']'")
        port_text = after[1:]
    else:
        host, _, port_text = hostport.partition(":")
        if "[" in host or "]" in host:
            raise ConfigError(f"Redis URL {shown} has a '[' or ']' out of place in its host")
    if not host:
        raise ConfigError(f"Redis URL {shown} names no host")
    if not port_text:
        return host.lower(), None
    low, high = _INT_LIMITS["port"]
    port = _whole_number(port_text) if port_text.isdigit() else None
    if port is None or not low <= port <= high:
        raise ConfigError(
            f"Redis URL {shown} has a port that is not a whole number from {low} to {high}"
        )
    return host.lower(), port


def _url_db(text: str, shown: str) -> int:
    low, high = _INT_LIMITS["db"]
    db = _whole_number(text) if text.isdigit() else None
    if db is None or not low <= db <= high:
        raise ConfigError(
            f"Redis URL {shown} has a database that is not a whole number from {low} to {high}"
        )
    return db


def _redact_url(url: str) -> str:
    """The URL as messages may show it, with ``***`` over whatever could be a
    password under any reading of it: what lies between the first ``:`` and
    the last ``@`` after the scheme (all of it before the ``@`` when there is
    no ``:``), the query unless it only sets ``db``, the fragment, and, in a URL without
    ``@``, a "port" that is not a number or everything when there is no host
    (a password typed where the host belongs)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    hidden = [False] * len(rest)

    def hide(start: int, end: int) -> None:
        hidden[start:end] = [True] * (end - start)

    userinfo, at, _ = rest.rpartition("@")
    if at:
        colon = userinfo.find(":")
        hide(colon + 1, len(userinfo))  # colon == -1 hides all of it
    else:
        end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
        authority = rest[:end]
        if authority.startswith("["):
            close = authority.find("]")
            host_end = close + 1 if close >= 0 else len(authority)
        else:
            host_end = authority.find(":") if ":" in authority else len(authority)
        if host_end == 0 and authority:
            return f"{scheme}{sep}***"
        port = authority[host_end:]
        if port and not (port.startswith(":") and port[1:].isdigit()):
            hide(host_end + 1, len(authority))
    question = rest.find("?")
    if question >= 0:
        query = rest[question + 1 :].partition("#")[0]
        if not all(item.startswith("db=") for item in query.split("&")):
            hide(question + 1, len(rest))
    fragment = rest.find("#")
    if fragment >= 0:
        hide(fragment, len(rest))
    shown = []
    for index, char in enumerate(rest):
        if not hidden[index]:
            shown.append(char)
        elif index == 0 or not hidden[index - 1]:
            shown.append("***")
    return f"{scheme}{sep}{''.join(shown)}"
