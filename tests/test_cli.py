from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis as SyncRedis

from redkit.cli import human_bytes, main
from redkit.server import (
    EmbeddedCluster,
    EmbeddedRedis,
    find_redis_server,
    free_port,
    server_version,
)
from redkit.server._ports import _port_in_use

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_doctor_on_a_live_server_warns_and_exits_zero(redis_server: EmbeddedRedis) -> None:
    result = CliRunner().invoke(main, ["doctor", "--url", redis_server.url], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "healthy" in result.output
    assert "maxmemory is not set" in result.output
    assert "persistence is off" in result.output


def test_doctor_warns_about_evicting_everything(
    server_factory: Callable[..., EmbeddedRedis],
) -> None:
    server = server_factory(
        extra_args=(
            "--maxmemory",
            "64mb",
            "--maxmemory-policy",
            "allkeys-lru",
            "--appendonly",
            "yes",
        )
    )
    result = CliRunner().invoke(main, ["doctor", "--url", server.url], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "maxmemory-policy is allkeys-lru" in result.output
    assert "maxmemory is not set" not in result.output
    assert "persistence is off" not in result.output


def test_doctor_latency_threshold(redis_server: EmbeddedRedis) -> None:
    result = CliRunner().invoke(
        main, ["doctor", "--url", redis_server.url, "--latency-ms", "0"], terminal_width=200
    )
    assert result.exit_code == 0
    assert "threshold 0 ms" in result.output


def test_doctor_on_a_dead_port_exits_non_zero() -> None:
    port = free_port()
    started = time.monotonic()
    result = CliRunner().invoke(
        main, ["doctor", "--url", f"redis://127.0.0.1:{port}", "--timeout", "1"], terminal_width=200
    )
    assert result.exit_code == 1
    assert f"127.0.0.1:{port}" in result.output and "unhealthy" in result.output
    assert time.monotonic() - started < 5


def test_doctor_prints_an_unreachable_server_error_once() -> None:
    port = free_port()
    result = CliRunner().invoke(
        main, ["doctor", "--url", f"redis://127.0.0.1:{port}", "--timeout", "1"]
    )
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"unhealthy: cannot connect to Redis at 127.0.0.1:{port}: ")
    assert result.output.count("cannot connect") == 1


def test_doctor_on_a_paused_server_names_the_address_once(fresh_server: EmbeddedRedis) -> None:
    with fresh_server.paused():
        result = CliRunner().invoke(main, ["doctor", "--url", fresh_server.url, "--timeout", "0.5"])
    assert result.exit_code == 1
    assert result.output.count(f"127.0.0.1:{fresh_server.port}") == 1, result.output
    assert result.output.startswith("unhealthy: ")
    assert len(result.output.splitlines()) == 1


def test_doctor_names_the_address_when_the_error_does_not(
    server_factory: Callable[..., EmbeddedRedis],
) -> None:
    # Without INFO, health() fails after connect() succeeded, with the
    # server's own error text, which names no address.
    server = server_factory(extra_args=("--rename-command", "INFO", ""))
    result = CliRunner().invoke(main, ["doctor", "--url", server.url])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"unhealthy: 127.0.0.1:{server.port}: "), result.output
    assert "INFO" in result.output.upper()
    assert len(result.output.splitlines()) == 1


def test_doctor_on_a_cluster_node_without_the_flag_says_so(
    redis_cluster: EmbeddedCluster,
) -> None:
    address = f"{redis_cluster.host}:{redis_cluster.port}"
    result = CliRunner().invoke(main, ["doctor", "--url", redis_cluster.url])
    assert result.exit_code == 1, result.output
    expected = (
        f"error: {address} is a Redis Cluster node: add --cluster (a single-server client "
        "fails on the keys that other nodes serve)"
    )
    assert result.output.splitlines()[-1] == expected
    assert result.output.count("Cluster node") == 1
    assert "healthy" not in result.output.splitlines()[-1]


def test_doctor_on_a_cluster_node_from_the_environment_names_the_variable(
    redis_cluster: EmbeddedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_cluster.url)
    monkeypatch.delenv("REDIS_CLUSTER", raising=False)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        f"error: {redis_cluster.host}:{redis_cluster.port} is a Redis Cluster node: add "
        "--cluster or set REDIS_CLUSTER=true (a single-server client fails on the keys that "
        "other nodes serve)"
    )


def test_doctor_with_the_cluster_flag_on_a_single_server_says_so(
    redis_server: EmbeddedRedis,
) -> None:
    result = CliRunner().invoke(main, ["doctor", "--url", redis_server.url, "--cluster"])
    assert result.exit_code == 1, result.output
    assert result.output == (
        f"error: 127.0.0.1:{redis_server.port} is a single Redis server, not a cluster node: "
        "drop --cluster\n"
    )


def test_doctor_output_to_a_file_is_not_wrapped(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    out = tmp_path / "doctor.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = SRC
    with out.open("w") as file:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "from redkit.cli import main; main()",
                "doctor",
                "--url",
                redis_server.url,
            ],
            stdout=file,
            stderr=subprocess.PIPE,
            env=env,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert (
        "warning: persistence is off (no RDB save schedule, no AOF): a restart loses sessions "
        "and durable event streams"
    ) in lines
    assert lines[-1] == "healthy with 2 warning(s)"


def test_doctor_shows_memory_in_human_units(
    server_factory: Callable[..., EmbeddedRedis],
) -> None:
    server = server_factory(extra_args=("--maxmemory", "64mb"))
    result = CliRunner().invoke(main, ["doctor", "--url", server.url])
    assert result.exit_code == 0, result.output
    assert re.search(r"│ maxmemory +│ 64\.0 MiB +│", result.output), result.output
    assert re.search(r"│ used memory +│ \d+\.\d (KiB|MiB) +│", result.output), result.output
    assert re.search(r"│ latency +│ \d+\.\d\d ms +│", result.output), result.output


def test_doctor_says_which_server_it_is(redis_server: EmbeddedRedis) -> None:
    banner = subprocess.run(
        [redis_server.binary, "--version"], capture_output=True, text=True, check=True
    ).stdout
    name = "valkey" if banner.startswith("Valkey") else "redis"
    version = ".".join(str(n) for n in server_version(redis_server.binary))
    result = CliRunner().invoke(main, ["doctor", "--url", redis_server.url])
    assert re.search(rf"│ server +│ {name} {re.escape(version)} +│", result.output), result.output


def test_doctor_shows_no_maxmemory_as_no_limit(redis_server: EmbeddedRedis) -> None:
    result = CliRunner().invoke(main, ["doctor", "--url", redis_server.url])
    assert re.search(r"│ maxmemory +│ no limit +│", result.output), result.output


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1258291, "1.2 MiB"),
        (1048575, "1.0 MiB"),
        (64 * 2**20, "64.0 MiB"),
        (3 * 2**30 + 2**29, "3.5 GiB"),
        (2**40, "1.0 TiB"),
    ],
)
def test_human_bytes(count: int, text: str) -> None:
    assert human_bytes(count) == text


def test_doctor_on_a_cluster(redis_cluster: EmbeddedCluster) -> None:
    result = CliRunner().invoke(
        main, ["doctor", "--url", redis_cluster.url, "--cluster"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert "cluster" in result.output


@pytest.mark.parametrize(
    "url",
    [
        "redis://u:t0pXs3cretY@h:port/0",
        "redis://:t0pX/s3cretY@host:6379/0",
        "redis://:t0pX#s3cretY@host:6379/0",
        "redis://:t0pX?s3cretY@host:6379/0",
        "redis://host:6379/0?password=t0pXs3cretY",
    ],
)
def test_doctor_rejects_a_malformed_url_without_the_password(url: str) -> None:
    result = CliRunner().invoke(main, ["doctor", "--url", url])
    assert result.exit_code != 0
    assert "t0pX" not in result.output and "s3cretY" not in result.output
    assert "Redis URL" in result.output


def test_doctor_prints_error_text_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    # The host (and so the address and the error) holds rich markup syntax.
    monkeypatch.setenv("REDIS_HOST", "[/x]")
    result = CliRunner().invoke(main, ["doctor", "--timeout", "1"], terminal_width=200)
    assert result.exit_code == 1, result.output
    assert "unhealthy" in result.output and "[/x]:6379" in result.output


def test_doctor_names_the_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:t0pX/s3cretY@host:6379/0")
    monkeypatch.setenv("REDIS_PASSWORD", "t0pXs3cretY")
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code != 0
    assert "REDIS_URL" in result.output
    assert "t0pX" not in result.output and "s3cretY" not in result.output
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("REDIS_PORT", "70000")
    result = CliRunner().invoke(main, ["doctor"])
    assert "REDIS_PORT must be a whole number from 1 to 65535, got '70000'" in result.output


def _run_server(*args: str, **env: str) -> tuple[subprocess.Popen[str], str]:
    """``redkit server`` of this checkout, its output read up to the URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "redkit.cli", "server", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC, **env},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    output = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        output += line
        if "REDIS_URL=" in line or not line:
            break
    return proc, output


def _server_pids(ports: list[int]) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", "redis-server|valkey-server"], capture_output=True, text=True
    ).stdout
    pids = []
    for pid in out.split():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
        except OSError:
            continue
        # The server retitles itself "redis-server 127.0.0.1:PORT" (valkey-server
        # on Valkey).
        if any(re.search(rf":{p}\b", cmdline) for p in ports):
            pids.append(int(pid))
    return pids


def test_server_command_runs_until_interrupted() -> None:
    port = free_port()
    proc, output = _run_server("--port", str(port))
    try:
        binary = find_redis_server()
        assert f"{os.path.basename(binary)} {binary} on 127.0.0.1:{port}" in output, output
        assert f"REDIS_URL=redis://127.0.0.1:{port}/0" in output, output
        assert SyncRedis(port=port).ping()
        assert _server_pids([port])
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    assert proc.returncode == 0
    assert _server_pids([port]) == []


def test_server_command_cluster() -> None:
    proc, output = _run_server("--cluster", "3", "--port", "0")
    try:
        assert "Redis Cluster of 3 masters" in output, output
        ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", output)][:3]
        assert len(ports) == 3
        info = SyncRedis(port=ports[0]).execute_command("CLUSTER INFO")
        assert info["cluster_state"] == "ok"
        assert len(_server_pids(ports)) == 3
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    assert _server_pids(ports) == []


def test_server_command_port_taken(redis_server: EmbeddedRedis) -> None:
    handler = signal.getsignal(signal.SIGINT)
    result = CliRunner().invoke(main, ["server", "--port", str(redis_server.port)])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: port {redis_server.port} is already in use: choose another with --port N, "
        "or --port 0 to pick a free one\n"
    )
    assert result.stdout == ""
    # The command's Ctrl-C handler does not outlive it.
    assert signal.getsignal(signal.SIGINT) is handler


def test_server_command_port_zero_picks_a_free_port() -> None:
    proc, output = _run_server("--port", "0")
    try:
        match = re.search(r"REDIS_URL=redis://127\.0\.0\.1:(\d+)/0", output)
        assert match, output
        assert SyncRedis(port=int(match.group(1))).ping()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    assert proc.returncode == 0


@contextlib.contextmanager
def _held(port: int) -> Iterator[None]:
    """Keep ``port`` taken, unless something else holds it already."""
    if _port_in_use("127.0.0.1", port):
        yield
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


def test_server_cluster_on_the_default_port_when_it_is_taken() -> None:
    with _held(6379):
        result = CliRunner().invoke(main, ["server", "--cluster", "3"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: port 6379 is already in use (a cluster of 3 uses ports 6379-6381, and "
        "16379-16381 for its bus): choose another first port with --port N, or --port 0 to "
        "pick free ports\n"
    )


def test_server_cluster_names_a_taken_bus_port() -> None:
    port = free_port(with_bus=True)
    with _held(port + 10000):
        result = CliRunner().invoke(main, ["server", "--cluster", "1", "--port", str(port)])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: port {port + 10000} (the cluster bus of port {port}) is already in use (a "
        f"cluster of 1 uses ports {port}, and {port + 10000} for its bus): choose another "
        "first port with --port N, or --port 0 to pick free ports\n"
    )
    assert not _port_in_use("127.0.0.1", port), "the node on the free port was left running"


def test_server_cluster_without_room_for_the_bus() -> None:
    result = CliRunner().invoke(main, ["server", "--cluster", "3", "--port", "60000"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: --port 60000 leaves no room for the cluster bus (every port + 10000 must be "
        "at most 65535): use --port 55533 or lower, or --port 0 to pick free ports\n"
    )
