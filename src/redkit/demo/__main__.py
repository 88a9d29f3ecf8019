"""``python -m redkit.demo`` / ``redkit demo``: run the reference service."""

from __future__ import annotations

import contextlib
import logging
import os

import click

from ..server import EmbeddedRedis, _answers
from ..settings import RedisSettings

__all__ = ["main", "run"]


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    db: str = "redkit-demo.db",
    redis_port: int = 6379,
) -> None:
    """Serve the demo with uvicorn until Ctrl-C.

    With ``REDIS_URL`` (or other ``REDIS_*`` variables) set, that Redis is
    used. Otherwise a Redis already answering on ``127.0.0.1:redis_port``
    (say, the embedded one of another demo instance) is shared, or an
    embedded one is started there and stopped on exit.
    """
    try:
        import uvicorn

        from .app import DemoConfig, DemoServer, create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the demo needs FastAPI and uvicorn: pip install 'redkit[demo]' ({exc})"
        ) from exc

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    embedded: EmbeddedRedis | None = None
    if any(os.environ.get(v) for v in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT")):
        settings = RedisSettings.from_env()
        click.echo(f"Redis: {settings.address} (from the environment)")
    elif _answers("127.0.0.1", redis_port):
        settings = RedisSettings(host="127.0.0.1", port=redis_port)
        click.echo(f"Redis: sharing the server already on 127.0.0.1:{redis_port}")
    else:
        embedded = EmbeddedRedis(port=redis_port).start()
        settings = RedisSettings(host=embedded.host, port=embedded.port)
        click.echo(f"Redis: embedded {embedded.binary} on {embedded.host}:{embedded.port}")
    try:
        config = DemoConfig(
            redis=settings,
            db_path=db,
            instance=f"{host}:{port}",
            secret_key=os.environ.get("REDKIT_DEMO_SECRET", DemoConfig.secret_key),
        )
        app = create_app(config)
        click.echo(f"redkit demo on http://{host}:{port}/  (Ctrl-C stops it)")
        server = DemoServer(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                timeout_graceful_shutdown=3,
                lifespan="on",
            )
        )
        # uvicorn shuts down gracefully on Ctrl-C, then re-raises it.
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
    finally:
        if embedded is not None:
            embedded.cleanup()


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--db", default="redkit-demo.db", show_default=True, help="SQLite file.")
@click.option(
    "--redis-port",
    type=click.IntRange(1, 55535),
    default=6379,
    show_default=True,
    help="Port of the embedded Redis when REDIS_URL is unset.",
)
def main(host: str, port: int, db: str, redis_port: int) -> None:
    """Run the reference service: every redkit component in one FastAPI app."""
    run(host, port, db, redis_port)


if __name__ == "__main__":  # pragma: no cover
    main()
