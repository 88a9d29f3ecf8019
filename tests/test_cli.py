from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis as SyncRedis

from redkit.cli import main
from redkit.server import EmbeddedCluster, EmbeddedRedis, free_port


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


def _run_server(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "redkit.cli", "server", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
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
    out = subprocess.run(["pgrep", "-f", "redis-server"], capture_output=True, text=True).stdout
    pids = []
    for pid in out.split():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
        except OSError:
            continue
        # redis-server retitles itself "redis-server 127.0.0.1:PORT".
        if any(re.search(rf":{p}\b", cmdline) for p in ports):
            pids.append(int(pid))
    return pids


def test_server_command_runs_until_interrupted() -> None:
    port = free_port()
    proc, output = _run_server("--port", str(port))
    try:
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
    result = CliRunner().invoke(main, ["server", "--port", str(redis_server.port)])
    assert result.exit_code != 0
    assert "already in use" in result.output
