"""`python -m redkit.demo` as a user runs it, in subprocesses on this
checkout's sources: the demo's own Redis shared by two instances and stopped
by the last, Ctrl-C and SIGTERM, and starts that cannot succeed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from redkit.demo.__main__ import EXIT_DATABASE, EXIT_PORT, EXIT_REDIS
from redkit.demo.shared_redis import DIR_PREFIX
from redkit.server import EmbeddedRedis, _answers, free_port

SRC = Path(__file__).resolve().parents[2] / "src"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    env["PYTHONPATH"] = str(SRC)
    env.update(extra)
    return env


def _redis_pids(port: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if ("redis-server" in cmdline or "valkey-server" in cmdline) and f":{port}" in cmdline:
            pids.append(int(entry.name))
    return pids


def _demo_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob(DIR_PREFIX + "*"))


class Demo:
    """One ``python -m redkit.demo`` process; its output is collected as it
    comes."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "redkit.demo", "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env or _env(),
            cwd=cwd,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines if text in line), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line with {text!r} in:\n{self.output}")
                self._changed.wait(min(left, 0.2))

    def stop(self, signum: int = signal.SIGINT, timeout: float = 30) -> int:
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def finish(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)


@pytest.fixture
def demos(tmp_path: Path) -> Iterator[list[Demo]]:
    """Started demos, killed at the end whatever happened; a demo Redis a
    failed test leaves behind is stopped too."""
    started: list[Demo] = []
    before = _demo_dirs()
    try:
        yield started
    finally:
        for demo in started:
            demo.kill()
        for directory in _demo_dirs() - before:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int((directory / "redis.pid").read_text()), signal.SIGKILL)


def _start(demos: list[Demo], cwd: Path, *args: str, env: dict[str, str] | None = None) -> Demo:
    demo = Demo(cwd, *args, env=env)
    demos.append(demo)
    return demo


def _serving(demos: list[Demo], cwd: Path, *args: str, env: dict[str, str] | None = None) -> Demo:
    """A started demo, once its ready line is out; by then it must answer at once."""
    demo = _start(demos, cwd, *args, env=env)
    demo.wait_for_line("redkit demo ready on")
    health = httpx.get(f"{demo.url}/healthz", timeout=5)  # no retry: ready means ready
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"
    return demo


def _on_demo_redis(redis_port: int) -> tuple[str, ...]:
    """Arguments of instances that share the demo's own Redis on ``redis_port``."""
    return ("--redis-port", str(redis_port), "--db", "demo.db")


def _two_sharing(demos: list[Demo], cwd: Path) -> tuple[int, Demo, Demo]:
    """Two instances on one demo Redis (the first starts it): its port, both."""
    redis_port = free_port()
    first = _serving(demos, cwd, *_on_demo_redis(redis_port))
    second = _serving(demos, cwd, *_on_demo_redis(redis_port))
    return redis_port, first, second


def _stop_last(demo: Demo, redis_port: int, signum: int = signal.SIGINT) -> None:
    """Stop the last instance on the demo's Redis, which stops that Redis."""
    assert demo.stop(signum) == 0, demo.output
    assert demo.lines[-1] == (
        f"Redis on 127.0.0.1:{redis_port} stopped (this was the last demo instance)"
    )
    assert "Traceback" not in demo.output
    assert not _answers("127.0.0.1", redis_port)
    assert _redis_pids(redis_port) == []


def _login(url: str) -> httpx.Cookies:
    response = httpx.post(
        f"{url}/auth/login", json={"username": "alice", "password": "wonderland"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.cookies


def test_demo_runs_on_its_own_redis_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path, demos: list[Demo]
) -> None:
    redis_port = free_port()
    before = _demo_dirs()
    demo = _serving(demos, tmp_path, *_on_demo_redis(redis_port))
    assert "Redis: started Redis " in demo.output
    assert f"on 127.0.0.1:{redis_port} (it stops with the last demo instance)" in demo.output
    assert len(_redis_pids(redis_port)) == 1
    assert len(_demo_dirs() - before) == 1
    page = httpx.get(f"{demo.url}/")
    assert "alice" in page.text
    assert "wonderland" in page.text
    # A browser tab left open on the live feed must not hold up Ctrl-C.
    with (
        httpx.Client(timeout=30) as feed,
        feed.stream("GET", f"{demo.url}/events/stream") as response,
    ):
        assert next(response.iter_lines()) == ": connected"
        started = time.monotonic()
        code = demo.stop(signal.SIGINT)
        stopped_in = time.monotonic() - started
    assert code == 0, demo.output
    assert "Traceback" not in demo.output
    assert "CancelledError" not in demo.output
    # uvicorn's graceful-shutdown timeout is 3 s; the feed ends at once.
    assert stopped_in < 3, stopped_in
    assert demo.lines[-1] == (
        f"Redis on 127.0.0.1:{redis_port} stopped (this was the last demo instance)"
    )
    assert _redis_pids(redis_port) == []
    assert not _answers("127.0.0.1", redis_port)
    assert _demo_dirs() - before == set()  # its data directory is gone too
    assert (tmp_path / "demo.db").exists()


def test_stopping_the_first_instance_leaves_the_second_its_redis_and_sessions(
    tmp_path: Path, demos: list[Demo]
) -> None:
    redis_port, first, second = _two_sharing(demos, tmp_path)
    assert "Redis: sharing the demo's Redis " in second.output
    signed_in_on_first = _login(first.url)
    signed_in_on_second = _login(second.url)

    assert first.stop(signal.SIGINT) == 0, first.output
    assert first.lines[-1] == (
        f"Redis on 127.0.0.1:{redis_port} left running for 1 other demo instance"
    )
    assert "Traceback" not in first.output
    assert _answers("127.0.0.1", redis_port)

    # The second instance keeps serving, sessions included (the one made
    # through the first instance too: they live in Redis).
    assert httpx.get(f"{second.url}/healthz").status_code == 200
    for cookies in (signed_in_on_second, signed_in_on_first):
        me = httpx.get(f"{second.url}/me", cookies=cookies)
        assert me.status_code == 200, me.text
        assert me.json()["user"]["username"] == "alice"
    order = httpx.post(f"{second.url}/orders", json={"item": "tea"})
    assert order.status_code == 202

    # The last one out stops it (SIGTERM as from a process manager).
    _stop_last(second, redis_port, signal.SIGTERM)


def test_a_killed_instance_does_not_keep_the_demo_redis_alive(
    tmp_path: Path, demos: list[Demo]
) -> None:
    redis_port, first, second = _two_sharing(demos, tmp_path)
    first.kill()  # SIGKILL: no hand-over, the kernel closes its connection
    cookies = _login(second.url)
    assert httpx.get(f"{second.url}/me", cookies=cookies).status_code == 200
    _stop_last(second, redis_port)


def test_a_demo_redis_left_by_a_killed_demo_is_adopted_and_stopped(
    tmp_path: Path, demos: list[Demo]
) -> None:
    redis_port = free_port()
    lone = _serving(demos, tmp_path, *_on_demo_redis(redis_port))
    lone.kill()  # nobody is left to stop its Redis
    assert _answers("127.0.0.1", redis_port)
    heir = _serving(demos, tmp_path, *_on_demo_redis(redis_port))
    assert "Redis: sharing the demo's Redis" in heir.output
    _stop_last(heir, redis_port)


def test_failing_orders_log_one_line_each_without_a_traceback(
    tmp_path: Path, demos: list[Demo]
) -> None:
    demo = _serving(demos, tmp_path, *_on_demo_redis(free_port()))
    placed = httpx.post(f"{demo.url}/orders", json={"item": "kettle", "fail_times": 1})
    event_id = placed.json()["event_id"]
    # The demo's claim_idle is 3 s: the retry comes 3 to 4.5 s later.
    deadline = time.monotonic() + 20
    while event_id not in httpx.get(f"{demo.url}/orders/processed").json():
        assert time.monotonic() < deadline, demo.output
        time.sleep(0.2)
    line = demo.wait_for_line("simulated failure 1 of 1")
    assert line.startswith(
        f"ERROR redkit.events: handler OrderBook.fulfil raised (event {event_id} "
        "of type 'order.placed'"
    )
    assert line.endswith(", delivery 1): simulated failure 1 of 1")
    assert demo.stop() == 0
    assert "Traceback" not in demo.output


def test_a_redis_the_demo_did_not_start_is_left_running(
    tmp_path: Path, demos: list[Demo], redis_server: EmbeddedRedis
) -> None:
    demo = _serving(demos, tmp_path, *_on_demo_redis(redis_server.port))
    assert "(not started by the demo; it is left running)" in demo.output
    assert demo.stop(signal.SIGINT) == 0, demo.output
    assert demo.lines[-1] == (
        f"Redis on 127.0.0.1:{redis_server.port} left running (the demo did not start it)"
    )
    assert _answers("127.0.0.1", redis_server.port)


def test_a_demo_started_with_redis_url_uses_it_and_leaves_it(
    tmp_path: Path, demos: list[Demo], redis_server: EmbeddedRedis
) -> None:
    demo = _serving(demos, tmp_path, "--db", "demo.db", env=_env(REDIS_URL=redis_server.url))
    assert f"Redis: 127.0.0.1:{redis_server.port} (from the environment)" in demo.output
    assert demo.stop(signal.SIGTERM) == 0, demo.output
    assert _answers("127.0.0.1", redis_server.port)


# -- starts that cannot succeed ----------------------------------------------


def _failed_start(
    demos: list[Demo], cwd: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    demo = _start(demos, cwd, *args, env=env)
    code = demo.finish()
    return code, demo.output


def _one_line(output: str) -> str:
    assert "Traceback" not in output
    assert "demo ready" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("redkit demo: ")
    return lines[0]


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something else listens on."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", free_port()))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_a_taken_http_port_is_reported_before_anything_starts(
    tmp_path: Path, listening: int
) -> None:
    redis_port = free_port()
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "redkit.demo", "--port", str(listening)),
            *("--redis-port", str(redis_port), "--db", "demo.db"),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == EXIT_PORT == 3
    line = _one_line(proc.stdout + proc.stderr)
    assert line == (
        f"redkit demo: cannot listen on 127.0.0.1:{listening}: it is already in use; "
        "stop what runs there, or pick another port with --port"
    )
    assert not _answers("127.0.0.1", redis_port)  # no Redis was started for nothing
    assert not (tmp_path / "demo.db").exists()


def test_an_unreachable_redis_url_is_reported(tmp_path: Path, demos: list[Demo]) -> None:
    port = free_port()
    code, output = _failed_start(
        demos, tmp_path, "--db", "demo.db", env=_env(REDIS_URL=f"redis://127.0.0.1:{port}/0")
    )
    assert code == EXIT_REDIS == 5
    line = _one_line(output)
    assert line.startswith(f"redkit demo: cannot reach Redis at 127.0.0.1:{port}: ")
    assert line.endswith("; start it, or unset REDIS_URL to let the demo run its own")


def test_a_bad_redis_url_is_reported(tmp_path: Path, demos: list[Demo]) -> None:
    code, output = _failed_start(
        demos, tmp_path, "--db", "demo.db", env=_env(REDIS_URL="http://127.0.0.1:6379")
    )
    assert code == EXIT_REDIS
    assert _one_line(output).startswith("redkit demo: bad Redis setting: REDIS_URL")


def test_a_redis_port_taken_by_something_else_is_reported(
    tmp_path: Path, demos: list[Demo], listening: int
) -> None:
    before = _demo_dirs()
    code, output = _failed_start(demos, tmp_path, "--redis-port", str(listening), "--db", "d.db")
    assert code == EXIT_REDIS
    assert _one_line(output) == (
        f"redkit demo: port {listening} is in use by something that is not Redis: "
        "pass --redis-port with a free port"
    )
    assert _demo_dirs() == before


def _not_sqlite(path: Path) -> str:
    path.write_text("these are my notes\n" * 100)
    return str(path)


def _foreign_table(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, login TEXT)")
    return str(path)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: str(d / "missing" / "demo.db"), "there is no directory {d}/missing"),
        (lambda d: str(d), "it is a directory"),
        (lambda d: _not_sqlite(d / "notes.txt"), "file is not a database"),
        (
            lambda d: _foreign_table(d / "other.db"),
            "its users table is not the demo's (no created_at, email, name, password_hash, "
            "username)",
        ),
    ],
    ids=["no-directory", "a-directory", "not-sqlite", "someone-elses-table"],
)
def test_a_bad_db_is_reported_before_redis_starts(
    tmp_path: Path, demos: list[Demo], make: Callable[[Path], str], reason: str
) -> None:
    db = make(tmp_path)
    redis_port = free_port()
    code, output = _failed_start(demos, tmp_path, "--redis-port", str(redis_port), "--db", db)
    assert code == EXIT_DATABASE == 4
    assert _one_line(output) == (
        f"redkit demo: cannot use --db {db}: {reason.format(d=tmp_path)}; pass the path of a "
        "new file (it is created) or of an earlier demo database"
    )
    assert not _answers("127.0.0.1", redis_port)


def test_a_redis_that_needs_a_password_is_reported(
    tmp_path: Path, demos: list[Demo], server_factory: Callable[..., EmbeddedRedis]
) -> None:
    locked = server_factory(password="s3cret-pass")
    code, output = _failed_start(demos, tmp_path, "--redis-port", str(locked.port), "--db", "d.db")
    assert code == EXIT_REDIS
    assert _one_line(output) == (
        f"redkit demo: the Redis on 127.0.0.1:{locked.port} needs a password: set "
        f"REDIS_URL=redis://:PASSWORD@127.0.0.1:{locked.port}/0, or pass --redis-port with a "
        "free port"
    )
    assert locked.running
