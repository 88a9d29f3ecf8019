"""The ``redkit`` command: ``redkit server`` runs an embedded Redis in the
foreground, ``redkit doctor`` checks a server and says what a user must know."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .connection import Client, close, connect
from .errors import ConfigError, ConnectionUnavailable, RedisServerError
from .health import HealthStatus, health
from .settings import RedisSettings

if TYPE_CHECKING:
    from .server import EmbeddedCluster, EmbeddedRedis
    from .server._ports import PortInUse

__all__ = ["main"]

MIN_SERVER = (6, 2)

# Wide enough that no line redkit prints is ever wrapped when the output goes
# to a file or a pipe, where rich would otherwise break lines at 80 columns.
_UNWRAPPED_WIDTH = 10_000

_CLUSTER_BUS_OFFSET = 10_000
_HIGHEST_PORT = 65535


def _console() -> Console:
    console = Console()
    if console.is_terminal:
        return console
    return Console(width=_UNWRAPPED_WIDTH, soft_wrap=True)


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
    help="Port of the server; a cluster takes N ports from it (and each + 10000 for its bus). "
    "0 picks free ports.",
)
@click.option(
    "--cluster",
    "masters",
    type=click.IntRange(0, 16),
    default=0,
    help="Run a cluster of N masters instead of one server.",
)
def server(port: int, masters: int) -> None:
    """Run an embedded redis-server in the foreground until Ctrl-C.

    Exit status 1 when it cannot start (a port in use, no redis-server found).
    """
    if masters and port and port + masters - 1 + _CLUSTER_BUS_OFFSET > _HIGHEST_PORT:
        highest = _HIGHEST_PORT - _CLUSTER_BUS_OFFSET - masters + 1
        raise click.ClickException(
            f"--port {port} leaves no room for the cluster bus (every port + 10000 must "
            f"be at most {_HIGHEST_PORT}): use --port {highest} or lower, or --port 0 "
            "to pick free ports"
        )
    console = _console()
    stop = threading.Event()
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda *_: stop.set())
    try:
        running = _start_server(console, port, masters)
        console.print("Press Ctrl-C to stop.")
        try:
            stop.wait()
        finally:
            running.cleanup()
            console.print("stopped")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _start_server(console: Console, port: int, masters: int) -> EmbeddedRedis | EmbeddedCluster:
    # Imported here: redkit's other commands do not need the server package.
    from .server import EmbeddedCluster, EmbeddedRedis
    from .server._ports import PortInUse

    try:
        if masters:
            cluster = EmbeddedCluster(masters=masters, first_port=port or None)
            cluster.start()
            nodes = ", ".join(f"{n.host}:{n.port}" for n in cluster.nodes)
            console.print(f"[green]Redis Cluster of {masters} masters[/] on {nodes}")
            console.print(f"REDIS_URL={cluster.url} REDIS_CLUSTER=true")
            return cluster
        single = EmbeddedRedis(port=port or None).start()
        name = os.path.basename(single.binary)  # redis-server or valkey-server
        console.print(
            f"[green]{escape(name)}[/] {escape(single.binary)} on {single.host}:{single.port}"
        )
        console.print(f"REDIS_URL={single.url}")
        return single
    except PortInUse as exc:
        raise click.ClickException(_port_in_use_message(exc, port, masters)) from exc
    except (RedisServerError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc


def _port_in_use_message(exc: PortInUse, port: int, masters: int) -> str:
    if not masters:
        return (
            f"{exc.what} is already in use: choose another with --port N, "
            "or --port 0 to pick a free one"
        )
    last = port + masters - 1
    ports = f"{port}" if masters == 1 else f"{port}-{last}"
    buses = f"{port + _CLUSTER_BUS_OFFSET}"
    if masters > 1:
        buses += f"-{last + _CLUSTER_BUS_OFFSET}"
    return (
        f"{exc.what} is already in use (a cluster of {masters} uses ports {ports}, and "
        f"{buses} for its bus): choose another first port with --port N, or --port 0 "
        "to pick free ports"
    )


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

    Exit status 0 when healthy (with or without warnings), 1 when the server
    is unreachable or unhealthy, or is a cluster node and the settings say it
    is not (or the other way round).
    """
    console = _console()
    try:
        settings = RedisSettings.from_env() if url is None else RedisSettings.from_url(url)
        if cluster is not None:
            settings = settings.replace(cluster=cluster)
        settings = settings.replace(connect_timeout=timeout, max_retries=0, min_idle_conns=0)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    hint = _cluster_flag_hint(from_option=url is not None or cluster is not None)
    diagnosis = asyncio.run(_diagnose(settings, latency_ms, timeout, hint))
    status = diagnosis.status
    # Addresses, error texts and server fields are printed as they are, never
    # read as rich markup (a "[/x]" in them would stop doctor).
    if status.healthy:
        table = Table(title=escape(f"Redis at {settings.address}"), show_header=False)
        for label, value in status_rows(status):
            table.add_row(label, escape(value))
        console.print(table)
        for warning in diagnosis.warnings:
            console.print(f"[yellow]warning:[/] {escape(warning)}")
    if diagnosis.error is not None:
        console.print(f"[red]error:[/] {escape(diagnosis.error)}")
        raise SystemExit(1)
    if not status.healthy:
        console.print(f"[red]unhealthy:[/] {escape(_naming(settings.address, status.error))}")
        raise SystemExit(1)
    warnings = diagnosis.warnings
    console.print("[green]healthy[/]" + (f" with {len(warnings)} warning(s)" if warnings else ""))


@dataclasses.dataclass(frozen=True)
class _Diagnosis:
    status: HealthStatus
    warnings: list[str]
    error: str | None = None
    """Why redkit cannot work with these settings although the server answers."""


@dataclasses.dataclass(frozen=True)
class _ClusterHint:
    on: str
    off: str


def _cluster_flag_hint(*, from_option: bool) -> _ClusterHint:
    if from_option:
        return _ClusterHint("add --cluster", "drop --cluster")
    return _ClusterHint(
        "add --cluster or set REDIS_CLUSTER=true", "unset REDIS_CLUSTER or pass --no-cluster"
    )


async def _diagnose(
    settings: RedisSettings, latency_ms: float, timeout: float, hint: _ClusterHint
) -> _Diagnosis:
    try:
        client = await connect(settings)
    except ConnectionUnavailable as exc:
        if settings.cluster and await _is_single_server(settings, timeout):
            return _Diagnosis(
                HealthStatus("unhealthy", error=str(exc)),
                [],
                f"{settings.address} is a single Redis server, not a cluster node: {hint.off}",
            )
        return _Diagnosis(HealthStatus("unhealthy", error=str(exc)), [])
    try:
        status = await health(client, timeout=timeout)
        if not status.healthy:
            return _Diagnosis(status, [])
        config = await _config(client, timeout)
        warnings = warnings_for(status, config, latency_ms)
        if not settings.cluster and await _cluster_enabled(client, timeout):
            return _Diagnosis(
                status,
                warnings,
                f"{settings.address} is a Redis Cluster node: {hint.on} (a single-server "
                "client fails on the keys that other nodes serve)",
            )
        return _Diagnosis(status, warnings)
    finally:
        await close(client)


async def _cluster_enabled(client: Client, timeout: float) -> bool:
    try:
        info = await asyncio.wait_for(client.info("cluster"), timeout)
    except Exception:
        return False
    return str(info.get("cluster_enabled", "0")) == "1"


async def _is_single_server(settings: RedisSettings, timeout: float) -> bool:
    """Whether the seed node that a cluster client could not use answers as a
    plain server; only then is the ``--cluster`` flag the cause."""
    try:
        client = await connect(settings.replace(cluster=False))
    except (ConnectionUnavailable, ConfigError):
        return False
    try:
        info = await asyncio.wait_for(client.info("cluster"), timeout)
        return str(info.get("cluster_enabled", "0")) != "1"
    except Exception:
        return False
    finally:
        await close(client)


def _naming(address: str, error: str | None) -> str:
    """The error, with the address in front unless it names it already."""
    text = error or "no reason given"
    return text if address in text else f"{address}: {text}"


def status_rows(status: HealthStatus) -> list[tuple[str, str]]:
    """The rows doctor prints for a healthy server, in units a person reads."""
    rows: list[tuple[str, str]] = [("status", status.status)]
    if status.latency_ms is not None:
        rows.append(("latency", f"{status.latency_ms:.2f} ms"))
    if status.server_version is not None:
        name = status.server_name or "redis"
        rows.append(("server", f"{name} {status.server_version}"))
    if status.role is not None:
        rows.append(("role", status.role))
    if status.used_memory is not None:
        rows.append(("used memory", human_bytes(status.used_memory)))
    if status.maxmemory is not None:
        limit = "no limit" if status.maxmemory == 0 else human_bytes(status.maxmemory)
        rows.append(("maxmemory", limit))
    if status.maxmemory_policy is not None:
        rows.append(("maxmemory policy", status.maxmemory_policy))
    return rows


_BINARY_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_bytes(count: int) -> str:
    """``1258291`` -> ``"1.2 MiB"``: one decimal, binary units, bytes below 1 KiB."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in _BINARY_UNITS:
        value /= 1024
        # 1048575 bytes read "1.0 MiB", not "1024.0 KiB".
        if round(value, 1) < 1024 or unit == _BINARY_UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


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
    main()
