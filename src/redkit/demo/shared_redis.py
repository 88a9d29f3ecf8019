"""The demo's own Redis, shared by every demo instance on this machine.

The first ``redkit demo`` (without ``REDIS_URL``) starts ``redis-server``
as a daemon, not as its child, so that stopping that instance does not take
the Redis away from the others. Every instance holds one connection named
``redkit-demo:<instance>`` while it runs. On the way out an instance clears
its name and lists the named connections in one MULTI: transactions run one
after the other, so exactly one instance, the last, finds nobody left and
shuts the server down. A crashed instance's connection is closed by the
kernel, so it never keeps the server alive; only when *every* instance is
killed does the Redis outlive them, and the next ``redkit demo`` adopts it.

A server is the demo's when its data directory is one the demo made
(``redkit-demo-redis-*``); any other Redis found on the port is used and
left running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.connection import Connection

from .._failures import ANY, AUTH_REFUSED, ERROR_REPLY
from ..errors import ConfigError, RedisServerError
from ..server import _answers, find_redis_server, server_version

__all__ = ["DIR_PREFIX", "PRESENCE_PREFIX", "DemoRedisError", "SharedRedis", "join"]

DIR_PREFIX = "redkit-demo-redis-"
# redis-py's sync connection is untyped.
_CONNECTION: Any = Connection
PRESENCE_PREFIX = "redkit-demo:"


class DemoRedisError(Exception):
    """The demo's Redis can neither be started nor shared; the message says
    what to do."""


class _PortTaken(Exception):
    pass


@dataclasses.dataclass
class SharedRedis:
    """This instance's hold on the Redis at ``host:port``."""

    host: str
    port: int
    started: bool
    """This instance started the server."""
    directory: Path | None
    """The server's data directory when it is the demo's (None: not ours to stop)."""
    version: str
    _presence: Any = dataclasses.field(repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        if self.directory is None:
            return (
                f"Redis: using the Redis {self.version} already on {self.address} "
                "(not started by the demo; it is left running)"
            )
        how = "started" if self.started else "sharing the demo's"
        return (
            f"Redis: {how} Redis {self.version} on {self.address} "
            "(it stops with the last demo instance)"
        )

    def leave(self) -> str:
        """Give up this instance's hold; stop the server if it is the demo's
        and no other instance holds it. Returns what happened, for the log."""
        conn = self._presence
        try:
            others = _leave(conn)
        except ANY:
            conn.disconnect()
            return f"Redis on {self.address} was already gone"
        if self.directory is None:
            conn.disconnect()
            return f"Redis on {self.address} left running (the demo did not start it)"
        if others:
            conn.disconnect()
            plural = "instance" if others == 1 else "instances"
            return f"Redis on {self.address} left running for {others} other demo {plural}"
        with contextlib.suppress(*ANY):
            # The server closes the connection as it exits: no reply comes.
            conn.send_command("SHUTDOWN", "NOSAVE")
            conn.read_response()
        conn.disconnect()
        _wait_until_gone(self.host, self.port)
        shutil.rmtree(self.directory, ignore_errors=True)
        return f"Redis on {self.address} stopped (this was the last demo instance)"


def join(
    port: int, instance: str, *, host: str = "127.0.0.1", start_timeout: float = 10.0
) -> SharedRedis:
    """Share the Redis on ``host:port``, starting the demo's own first when
    nothing answers there. Raises :class:`DemoRedisError`."""
    # Two tries: the server found may be shutting down as its last
    # instance leaves, and then this one starts a new one.
    for _ in range(2):
        started = False
        if not _answers(host, port):
            try:
                _start(host, port, start_timeout)
                started = True
            except _PortTaken:
                if not _answers(host, port):
                    raise DemoRedisError(
                        f"port {port} is in use by something that is not Redis: "
                        "pass --redis-port with a free port"
                    ) from None
        try:
            conn = _connect(host, port, PRESENCE_PREFIX + instance)
        except (ConnectionError, TimeoutError, OSError):
            continue
        try:
            directory, version = _identify(conn)
        except ANY:
            conn.disconnect()
            continue
        return SharedRedis(host, port, started, directory, version, conn)
    raise DemoRedisError(
        f"the Redis on {host}:{port} stopped while this instance was joining it: start again"
    )


def _start(host: str, port: int, timeout: float) -> None:
    try:
        binary = find_redis_server()
        version = ".".join(str(p) for p in server_version(binary))
    except (ConfigError, RedisServerError) as exc:
        raise DemoRedisError(f"cannot start the demo's Redis: {exc}") from None
    directory = Path(tempfile.mkdtemp(prefix=DIR_PREFIX))
    log_file, pid_file = directory / "redis.log", directory / "redis.pid"
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        host,
        "--dir",
        str(directory),
        "--logfile",
        str(log_file),
        "--pidfile",
        str(pid_file),
        "--daemonize",
        "yes",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    # redis-server forks and its parent exits at once; the daemon lives on
    # in a session of its own, reparented away from this process.
    done = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        start_new_session=True,
    )
    if done.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        detail = _last_lines(done.stdout + done.stderr)
        raise DemoRedisError(f"redis-server {version} did not start: {detail}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_file.exists() and _answers(host, port):
            return
        log = _read(log_file)
        if "Address already in use" in log:
            shutil.rmtree(directory, ignore_errors=True)
            raise _PortTaken
        if "aborting" in log or "FATAL" in log:
            shutil.rmtree(directory, ignore_errors=True)
            raise DemoRedisError(f"redis-server {version} did not start: {_last_lines(log)}")
        time.sleep(0.02)
    _kill(pid_file)
    shutil.rmtree(directory, ignore_errors=True)
    raise DemoRedisError(
        f"redis-server on {host}:{port} did not answer within {timeout:g}s: "
        "pass --redis-port with another port, or set REDIS_URL to a running Redis"
    )


def _connect(host: str, port: int, name: str) -> Any:
    conn: Any = _CONNECTION(
        host=host, port=port, socket_connect_timeout=2.0, socket_timeout=5.0, client_name=name
    )
    try:
        conn.connect()
    except AUTH_REFUSED:
        raise DemoRedisError(
            f"the Redis on {host}:{port} needs a password: set "
            f"REDIS_URL=redis://:PASSWORD@{host}:{port}/0, or pass --redis-port with a free port"
        ) from None
    except ERROR_REPLY as exc:
        raise DemoRedisError(f"the Redis on {host}:{port} refused the demo: {exc}") from None
    except ANY as exc:
        raise ConnectionError(str(exc)) from exc
    return conn


def _identify(conn: Any) -> tuple[Path | None, str]:
    """The server's data directory if the demo made it, and its version."""
    conn.send_command("INFO", "server")
    info = _text(conn.read_response())
    version = next(
        (
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith(("redis_version:", "valkey_version:"))
        ),
        "?",
    )
    try:
        conn.send_command("CONFIG", "GET", "dir")
        reply = conn.read_response()
    except ERROR_REPLY:  # CONFIG renamed or refused: not a server the demo made
        return None, version
    if isinstance(reply, dict):  # RESP3, redis-py's default from 8.0
        reply = [item for pair in reply.items() for item in pair]
    values = [_text(v) for v in reply] if isinstance(reply, list) else []
    directory = Path(values[1]) if len(values) == 2 else None
    if directory is None or not directory.name.startswith(DIR_PREFIX):
        return None, version
    return directory, version


def _leave(conn: Any) -> int:
    """Clear this connection's name and count the other demo instances, in
    one transaction."""
    for command in (("MULTI",), ("CLIENT", "SETNAME", ""), ("CLIENT", "LIST")):
        conn.send_command(*command)
        conn.read_response()
    conn.send_command("EXEC")
    replies = conn.read_response()
    listing = _text(replies[1])
    names = (
        field[len("name=") :]
        for line in listing.splitlines()
        for field in line.split(" ")
        if field.startswith("name=")
    )
    return sum(1 for name in names if name.startswith(PRESENCE_PREFIX))


def _wait_until_gone(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _answers(host, port):
        time.sleep(0.02)


def _kill(pid_file: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _last_lines(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-2:]) or "no output"


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
