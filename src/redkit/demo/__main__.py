"""``python -m redkit.demo`` / ``redkit demo``: run the reference service.

Exit status (docs/demo.md):

- 0: stopped with Ctrl-C or SIGTERM
- 1: the ``demo`` extra (FastAPI, uvicorn) is not installed
- 2: bad command line
- 3: the HTTP port cannot be listened on (in use, not allowed, bad --host)
- 4: the SQLite file cannot be used (--db)
- 5: Redis cannot be reached or started (or a bad REDIS_* setting)
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import click

from ..errors import ConfigError
from ..settings import RedisSettings

__all__ = [
    "EXIT_DATABASE",
    "EXIT_MISSING_EXTRA",
    "EXIT_PORT",
    "EXIT_REDIS",
    "StartFailure",
    "main",
    "run",
]

EXIT_MISSING_EXTRA = 1
EXIT_PORT = 3
EXIT_DATABASE = 4
EXIT_REDIS = 5

_REDIS_VARIABLES = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT")


class StartFailure(Exception):
    """The demo cannot start: ``code`` is the exit status, the message says
    what failed and what to do."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    db: str = "redkit-demo.db",
    redis_port: int = 6379,
) -> None:
    """Serve the demo with uvicorn until Ctrl-C (SIGTERM too, under
    :func:`main`).

    With ``REDIS_URL`` (or ``REDIS_HOST`` / ``REDIS_PORT``) set, that Redis is
    used and left alone. Otherwise the instance shares the demo's Redis on
    ``127.0.0.1:redis_port``, starting it if nothing answers there; the last
    instance to stop stops it (see ``shared_redis``). Raises
    :class:`StartFailure` when the demo cannot start.
    """
    try:
        import uvicorn

        from .app import DemoConfig, DemoServer, create_app
        from .repository import NotADemoDatabase, UserRepository
        from .shared_redis import DemoRedisError, SharedRedis, join
    except ImportError as exc:
        raise StartFailure(
            EXIT_MISSING_EXTRA,
            f"the demo needs FastAPI and uvicorn ({exc}): pip install 'redkit[demo]'",
        ) from None

    _log_without_simulated_tracebacks()
    instance = f"{host}:{port}"
    # Cheapest checks first, so that a start that cannot succeed has started
    # nothing (no Redis) by the time it says why.
    listener = _listen(host, port)
    try:
        try:
            UserRepository(db).prepare()
        except (sqlite3.Error, OSError, NotADemoDatabase) as exc:
            raise StartFailure(EXIT_DATABASE, _database_problem(db, exc)) from None
        shared: SharedRedis | None = None
        if any(os.environ.get(v) for v in _REDIS_VARIABLES):
            try:
                settings = RedisSettings.from_env()
            except ConfigError as exc:
                raise StartFailure(EXIT_REDIS, f"bad Redis setting: {exc}") from None
            redis_line = f"Redis: {settings.address} (from the environment)"
            hint = "start it, or unset REDIS_URL to let the demo run its own"
        else:
            try:
                shared = join(redis_port, instance)
            except DemoRedisError as exc:
                raise StartFailure(EXIT_REDIS, str(exc)) from None
            settings = RedisSettings(host=shared.host, port=shared.port)
            redis_line = shared.describe()
            hint = "pass --redis-port with a free port, or set REDIS_URL"
        try:
            config = DemoConfig(
                redis=settings,
                db_path=db,
                instance=instance,
                secret_key=os.environ.get("REDKIT_DEMO_SECRET", DemoConfig.secret_key),
            )
            ready = (
                f"{redis_line}\nredkit demo ready on http://{_url_host(host)}:{port}/ "
                f"(instance {instance}; Ctrl-C stops it)"
            )
            server = DemoServer(
                uvicorn.Config(
                    create_app(config),
                    log_level="warning",
                    timeout_graceful_shutdown=3,
                    lifespan="on",
                ),
                on_ready=lambda: click.echo(ready),
            )
            # uvicorn shuts down gracefully on Ctrl-C or SIGTERM, then
            # raises the signal again: KeyboardInterrupt here.
            with contextlib.suppress(KeyboardInterrupt):
                server.run(sockets=[listener])
            _check_started(server.startup_error, db, settings.address, hint)
        finally:
            if shared is not None:
                click.echo(shared.leave())
    finally:
        listener.close()


def _check_started(error: BaseException | None, db: str, address: str, hint: str) -> None:
    if isinstance(error, sqlite3.Error):
        raise StartFailure(EXIT_DATABASE, _database_problem(db, error))
    if error is not None:
        reason = str(error).rstrip(". ")
        if address not in reason:
            reason = f"Redis at {address}: {reason}"
        raise StartFailure(EXIT_REDIS, f"{reason}; {hint}")


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (a process manager, ``kill``) stops the demo as Ctrl-C does:
    both reach the code as KeyboardInterrupt, so that the instance still
    hands its Redis over on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _listen(host: str, port: int) -> socket.socket:
    """The HTTP socket, bound now so that a taken port is reported before
    anything starts; uvicorn listens on it once the app is up."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise StartFailure(
            EXIT_PORT, f"cannot listen on --host {host}: {exc.strerror}; pass an address"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            hint = "stop what runs there, or pick another port with --port"
            reason = "it is already in use"
        elif exc.errno == errno.EACCES:
            hint = "pick a port above 1023 with --port"
            reason = "permission denied"
        else:
            hint = "check --host and --port"
            reason = exc.strerror or str(exc)
        raise StartFailure(EXIT_PORT, f"cannot listen on {host}:{port}: {reason}; {hint}") from None
    return sock


def _database_problem(db: str, exc: BaseException) -> str:
    path = Path(db)
    if path.is_dir():
        reason = "it is a directory"
    elif not path.parent.is_dir():
        reason = f"there is no directory {path.parent}"
    else:
        reason = str(exc)
    return (
        f"cannot use --db {db}: {reason}; pass the path of a new file (it is created) "
        "or of an earlier demo database"
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _log_without_simulated_tracebacks() -> None:
    """Warnings and errors, one line each for the failures orders ask for
    (the consumer logs a handler's exception with its traceback)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_drop_simulated_traceback)
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def _drop_simulated_traceback(record: logging.LogRecord) -> bool:
    from .orders import SimulatedFailure

    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, SimulatedFailure):
        record.msg = f"{record.msg}: %s"
        record.args = (*(record.args if isinstance(record.args, tuple) else ()), exc)
        record.exc_info = None
        record.exc_text = None
    return True


@click.command(
    "demo",
    epilog="Exit status: 0 stopped (Ctrl-C, SIGTERM), 1 the demo extra is missing, 2 bad "
    "command line, 3 the HTTP port cannot be used, 4 the --db file cannot be used, "
    "5 Redis cannot be reached or started (docs/demo.md).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--db", default="redkit-demo.db", show_default=True, help="SQLite file.")
@click.option(
    "--redis-port",
    type=click.IntRange(1, 65535),
    default=6379,
    show_default=True,
    help="Port of the demo's Redis when REDIS_URL is unset (shared by every instance).",
)
def main(host: str, port: int, db: str, redis_port: int) -> None:
    """Run the reference service: every redkit component in one FastAPI app.

    Without REDIS_URL, the first instance starts a Redis on 127.0.0.1:REDIS_PORT,
    later ones share it, and the last one to stop stops it.
    """
    with _sigterm_as_ctrl_c():
        try:
            run(host, port, db, redis_port)
        except StartFailure as failure:
            click.echo(f"redkit demo: {failure}", err=True)
            sys.exit(failure.code)
        except KeyboardInterrupt:  # stopped before it was serving
            click.echo("redkit demo: stopped while starting", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
