"""One ``redis-server`` process: start, stop, kill, pause, restart."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

from ..errors import RedisServerError
from ._binary import find_redis_server
from ._ports import PortInUse, _answers, _port_in_use, free_port

_LIVE: set[EmbeddedRedis] = set()
_LIVE_LOCK = threading.Lock()
_PR_SET_PDEATHSIG = 1
_CLUSTER_BUS_OFFSET = 10_000


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
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
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
        made_dir = self._dir is None
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="redkit-redis-")
        try:
            self._start_on_a_port()
        except BaseException:
            if made_dir:  # a failed start leaves nothing behind
                self.cleanup()
            raise
        return self

    def _start_on_a_port(self) -> None:
        attempts = 1 if self._requested_port else 5
        for attempt in range(attempts):
            if not self._requested_port and (attempt or not self.port):
                self.port = free_port(self.host, with_bus=self._cluster_node)
            elif self._requested_port:
                self._check_requested_port()
            try:
                self._spawn()
                return
            except _PortTaken:
                if self._requested_port or attempt + 1 == attempts:
                    raise PortInUse(self.port) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_requested_port(self) -> None:
        if _port_in_use(self.host, self.port):
            raise PortInUse(self.port)
        bus = self.port + _CLUSTER_BUS_OFFSET
        # A taken bus port makes redis-server exit with a message that does
        # not say which port; naming it here saves a user the log hunt.
        if self._cluster_node and _port_in_use(self.host, bus):
            raise PortInUse(bus, bus_of=self.port)

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


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for server in live:
        with contextlib.suppress(Exception):
            server.stop()
