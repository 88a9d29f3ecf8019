"""`python -m redkit.demo` as a user runs it: embedded Redis, Ctrl-C, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from redkit.server import _answers, free_port


def _redis_pids(port: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "redis-server" in cmdline and f":{port}" in cmdline:
            pids.append(int(entry.name))
    return pids


def test_demo_runs_on_embedded_redis_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    http_port, redis_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "redkit.demo",
            "--port",
            str(http_port),
            "--redis-port",
            str(redis_port),
            "--db",
            str(tmp_path / "demo.db"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("REDIS_")},
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.1)
        else:
            raise AssertionError("the demo did not answer")
        assert health.status_code == 200
        assert health.json()["status"] == "healthy"
        assert _redis_pids(redis_port)
        page = httpx.get(f"http://127.0.0.1:{http_port}/")
        assert "alice" in page.text
        assert "wonderland" in page.text
        # A browser tab left open on the live feed must not hold up Ctrl-C.
        feed = httpx.Client(timeout=30)
        stream = feed.stream("GET", f"http://127.0.0.1:{http_port}/events/stream")
        response = stream.__enter__()
        assert next(response.iter_lines()) == ": connected"
    finally:
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        output, _ = proc.communicate(timeout=30)
        stopped_in = time.monotonic() - started
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert "CancelledError" not in output
    # uvicorn's graceful-shutdown timeout is 3 s; the feed ends at once.
    assert stopped_in < 3, stopped_in
    stream.__exit__(None, None, None)
    feed.close()
    assert "embedded" in output
    assert _redis_pids(redis_port) == []
    assert not _answers("127.0.0.1", redis_port)
    assert (tmp_path / "demo.db").exists()
