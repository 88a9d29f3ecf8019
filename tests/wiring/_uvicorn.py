"""Run an app module under uvicorn in a subprocess, as a user would, with
this checkout's redkit; stop it with a signal and hand back what it wrote."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redkit.server import free_port

SRC = Path(__file__).resolve().parents[2] / "src"

# What a clean start and stop must never print.
WARNINGS = (
    "Traceback",
    "Task was destroyed",
    "Event loop is closed",
    "nclosed",  # Unclosed client session, unclosed transport <...>
    "never awaited",
    "ResourceWarning",
    "RuntimeWarning",
    "ERROR",
    "Exception in",
)


class Served:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.stderr = ""

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Send ``sig``, wait for the exit; returns the exit code and keeps
        what the process wrote to stderr in ``self.stderr``."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"the app did not stop within {timeout}s:\n{err}") from None
        self.stderr = err
        return self.proc.returncode


def env_for(**variables: str) -> dict[str, str]:
    """The test's environment without REDIS_* settings, plus ``variables``,
    with this checkout's sources first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    env.update(PYTHONPATH=path, PYTHONUNBUFFERED="1", **variables)
    return env


@contextmanager
def serve(
    app_dir: Path,
    source: str,
    env: dict[str, str],
    *,
    module: str = "app",
    start_timeout: float = 30.0,
) -> Iterator[Served]:
    """``source`` written to ``app_dir/<module>.py`` and run as ``uvicorn
    <module>:app`` with warnings shown (ResourceWarning and RuntimeWarning
    are hidden by default); yields once the port accepts connections, kills
    the process if the block leaves it running."""
    (app_dir / f"{module}.py").write_text(source)
    target = f"{module}:app"
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-W",
            "default::ResourceWarning",
            "-W",
            "default::RuntimeWarning",
            "-m",
            "uvicorn",
            target,
            "--app-dir",
            str(app_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=app_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = Served(proc, port)
    try:
        deadline = time.monotonic() + start_timeout
        while not _accepts(port):
            if proc.poll() is not None:
                raise AssertionError(f"the app exited at start-up:\n{proc.communicate()[1]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the app did not listen within {start_timeout}s")
            time.sleep(0.05)
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
