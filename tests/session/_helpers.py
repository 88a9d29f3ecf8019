"""Helpers shared by the session tests."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from redis.asyncio import Redis, RedisCluster

from redkit.connection import Client

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "go" / "session_record.json"

# The store secret of the tests (the crash worker has the same one).
SECRET = "session-test-secret-0123456789abcdef"


def keyed_tag(secret: str, user_id: str) -> str:
    """The user tag as docs/session.md specifies it, computed here without
    the store: HMAC-SHA256 of the user id under the secret (with redkit's
    context prefix), first 16 bytes, base64url without padding."""
    digest = hmac.new(
        secret.encode(), b"redkit.session.user-tag\x00" + user_id.encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def unkeyed_tag(user_id: str) -> str:
    """The tag ids had before it was keyed: SHA-256 of the user id alone."""
    digest = hashlib.sha256(user_id.encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def go_time(value: datetime, digits: int = 9) -> str:
    """RFC 3339 as Go writes it: up to 9 fraction digits, trailing zeros
    dropped, Z for UTC."""
    base = value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    nanos = f"{value.microsecond:06d}987"[:digits].rstrip("0")
    return f"{base}.{nanos}Z" if nanos else f"{base}Z"


def go_record(
    session_id: str,
    user_id: str,
    created: datetime,
    ttl: timedelta = timedelta(hours=24),
    data: Any = None,
) -> bytes:
    """The golden record with its id, user and dates replaced."""
    record = json.loads(FIXTURE.read_text())
    record["id"] = session_id
    record["user_id"] = user_id
    if data is not None:
        record["data"] = data
    record["created_at"] = go_time(created)
    record["expires_at"] = go_time(created + ttl)
    return json.dumps(record, separators=(",", ":")).encode()


async def command_calls(client: Client) -> int:
    """Commands the server(s) ran so far, not counting INFO itself."""
    if isinstance(client, RedisCluster):
        infos = await client.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        per_node = list(infos.values())
    else:
        per_node = [await client.info("commandstats")]
    total = 0
    for info in per_node:
        for name, value in info.items():
            if isinstance(value, dict) and name != "cmdstat_info":
                total += int(value["calls"])
    return total


async def command_names(client: Redis) -> dict[str, int]:
    info = await client.info("commandstats")
    return {k[len("cmdstat_") :]: int(v["calls"]) for k, v in info.items() if isinstance(v, dict)}


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.05
) -> float:
    """Poll ``check`` until it is true; returns the seconds it took. Raises
    AssertionError after ``timeout``."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def all_keys(client: Client, pattern: str = "*") -> set[str]:
    """Every key (test inspection only; the store itself never scans)."""
    found: set[str] = set()
    async for key in client.scan_iter(match=pattern, count=500):
        found.add(key.decode() if isinstance(key, bytes) else key)
    return found
