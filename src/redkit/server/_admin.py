"""What the cluster and the Sentinel group share to steer their servers:
a plain admin client, and waiting for a topology to settle."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis import Redis as SyncRedis

from .._failures import ANY
from ..errors import RedisServerError
from ._process import EmbeddedRedis

# A server still starting or reconfiguring, asked too early.
_UNSETTLED: tuple[type[Exception], ...] = (*ANY, RedisServerError)

# Raw replies for these: redis-py's parsed forms differ between versions.
_RAW_REPLIES = (
    "CLUSTER NODES",
    "SENTINEL MASTER",
    "SENTINEL REPLICAS",
    "SENTINEL GET-MASTER-ADDR-BY-NAME",
)


def admin_client(node: EmbeddedRedis) -> Any:  # redis-py's sync client is untyped
    client = SyncRedis(host=node.host, port=node.port, socket_timeout=5, password=node.password)
    for command in _RAW_REPLIES:
        client.response_callbacks.pop(command, None)
    return client


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def in_sync(replica: EmbeddedRedis) -> bool:
    """Whether ``replica`` is a replica whose link to its primary is up."""
    with admin_client(replica) as client:
        info = client.info("replication")
    return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")


def wait_until(done: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll ``done`` until it is true; :class:`RedisServerError` saying
    ``what`` did not happen within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if done():
                return
        except _UNSETTLED:
            pass  # a server between roles, or refusing while it reconfigures
        time.sleep(0.05)
    raise RedisServerError(f"{what} within {timeout:g}s")
