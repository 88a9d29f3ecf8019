"""The ``redkit`` command: ``redkit server`` runs an embedded Redis in the
foreground, ``redkit doctor`` checks a server and says what a user must know."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .connection import close, connect
from .errors import ConfigError, ConnectionUnavailable, RedisServerError
from .health import HealthStatus, health
from .settings import RedisSettings

__all__ = ["main"]

MIN_SERVER = (6, 2)


@click.group()
@click.version_option(package_name="redkit")
def main() -> None:
    """redkit: Redis as cache, session store, rate limiter, event bus and lock service."""


@main.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=6379,
    show_default=True,
    help="Port of the (first) server; 0 picks a free one.",
)
@click.option(
    "--cluster",
    "masters",
    type=click.IntRange(0, 16),
    default=0,
    help="Run a cluster of N masters instead of one server.",
)
def server(port: int, masters: int) -> None:
    """Run an embedded redis-server in the foreground until Ctrl-C."""
    from .server import EmbeddedCluster, EmbeddedRedis

    console = Console()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if masters:
            cluster = EmbeddedCluster(masters=masters, first_port=port or None)
            cluster.start()
            nodes = ", ".join(f"{n.host}:{n.port}" for n in cluster.nodes)
            console.print(f"[green]Redis Cluster of {masters} masters[/] on {nodes}")
            console.print(f"REDIS_URL={cluster.url} REDIS_CLUSTER=true")
            running: Any = cluster
        else:
            single = EmbeddedRedis(port=port or None).start()
            console.print(f"[green]redis-server[/] {single.binary} on {single.host}:{single.port}")
            console.print(f"REDIS_URL={single.url}")
            running = single
    except (RedisServerError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print("Press Ctrl-C to stop.")
    try:
        stop.wait()
    finally:
        running.cleanup()
        console.print("stopped")


@main.command()
@click.option("--url", default=None, help="Redis URL (default: REDIS_URL / REDIS_* variables).")
@click.option("--cluster/--no-cluster", default=None, help="Treat the URL as a cluster seed node.")
@click.option(
    "--latency-ms",
    type=float,
    default=10.0,
    show_default=True,
    help="Warn when PING takes longer than this.",
)
@click.option(
    "--timeout", type=float, default=3.0, show_default=True, help="Seconds to wait for the server."
)
def doctor(url: str | None, cluster: bool | None, latency_ms: float, timeout: float) -> None:
    """Connect, report health and warn about settings that hurt redkit.

    Exit status 0 when healthy (with or without warnings), 1 when not.
    """
    console = Console()
    try:
        settings = RedisSettings.from_env() if url is None else RedisSettings.from_url(url)
        if cluster is not None:
            settings = settings.replace(cluster=cluster)
        settings = settings.replace(connect_timeout=timeout, max_retries=0, min_idle_conns=0)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    status, warnings = asyncio.run(_diagnose(settings, latency_ms, timeout))
    # Addresses, error texts and server fields are printed as they are, never
    # read as rich markup (a "[/x]" in them would stop doctor).
    table = Table(title=escape(f"Redis at {settings.address}"), show_header=False)
    for key, value in status.as_dict().items():
        if value is not None:
            table.add_row(key, escape(str(value)))
    console.print(table)
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if not status.healthy:
        console.print(f"[red]unhealthy:[/] {escape(status.error or '')}")
        raise SystemExit(1)
    console.print("[green]healthy[/]" + (f" with {len(warnings)} warning(s)" if warnings else ""))


async def _diagnose(
    settings: RedisSettings, latency_ms: float, timeout: float
) -> tuple[HealthStatus, list[str]]:
    try:
        client = await connect(settings)
    except ConnectionUnavailable as exc:
        return HealthStatus("unhealthy", error=str(exc)), []
    try:
        status = await health(client, timeout=timeout)
        if not status.healthy:
            return status, []
        config = await _config(client, timeout)
        return status, warnings_for(status, config, latency_ms)
    finally:
        await close(client)


async def _config(client: Any, timeout: float) -> dict[str, str]:
    """CONFIG GET of what doctor checks; empty when CONFIG is disabled, as on
    many managed services."""
    try:
        raw = await asyncio.wait_for(client.config_get("*"), timeout)
    except Exception:
        return {}
    if raw and all(isinstance(v, dict) for v in raw.values()):
        raw = next(iter(raw.values()))  # a cluster client answers per node
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def warnings_for(status: HealthStatus, config: dict[str, str], latency_ms: float) -> list[str]:
    """What a redkit user must know about this server."""
    out: list[str] = []
    policy = status.maxmemory_policy or config.get("maxmemory-policy")
    if policy and policy.startswith("allkeys-"):
        out.append(
            f"maxmemory-policy is {policy}: under memory pressure Redis may evict sessions, "
            "locks and rate-limit counters, not only cache entries (use volatile-* or noeviction)"
        )
    maxmemory = status.maxmemory if status.maxmemory is not None else _int(config.get("maxmemory"))
    if maxmemory == 0:
        out.append("maxmemory is not set: Redis can grow until the machine runs out of memory")
    if config:
        save = config.get("save", "").strip()
        aof = config.get("appendonly", "no") == "yes"
        if not save and not aof:
            out.append(
                "persistence is off (no RDB save schedule, no AOF): a restart loses sessions "
                "and durable event streams"
            )
    version = _version_tuple(status.server_version)
    if version is not None and version < MIN_SERVER:
        out.append(
            f"server version {status.server_version} is older than 6.2, the oldest redkit supports"
        )
    if status.latency_ms is not None and status.latency_ms > latency_ms:
        out.append(f"PING took {status.latency_ms:.1f} ms (threshold {latency_ms:g} ms)")
    return out


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _version_tuple(version: str | None) -> tuple[int, int] | None:
    if not version:
        return None
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return None


def _add_demo() -> None:
    from .demo.__main__ import main as demo

    main.add_command(demo)


_add_demo()


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("COLUMNS", "100")
    main()
