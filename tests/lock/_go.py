"""The Go service's lock, done the way its code does it: go-redis's SetNX
with a UUID value, and release by its token-checked script through
go-redis's Script.Run (EVALSHA, then EVAL on NOSCRIPT)."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError

RECORD = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "go" / "lock_record.json").read_text()
)
RELEASE_SCRIPT: str = RECORD["release_script"]
RELEASE_SHA = hashlib.sha1(RELEASE_SCRIPT.encode()).hexdigest()


def set_nx_args(key: str, value: str, ttl_ms: int) -> list[str]:
    """The command go-redis v9 sends for ``SetNX(ctx, key, value, ttl)``:
    ``ex`` with whole seconds, ``px`` with milliseconds otherwise."""
    if ttl_ms >= 1000 and ttl_ms % 1000 == 0:
        return ["set", key, value, "ex", str(ttl_ms // 1000), "nx"]
    return ["set", key, value, "px", str(ttl_ms), "nx"]


async def go_lock(client: Any, name: str, ttl_ms: int, value: str | None = None) -> str | None:
    """``DistributedLock.Lock``: the value it stored, or None when held."""
    value = value if value is not None else str(uuid.uuid4())
    # SET is routed by its key on a cluster; redis-py looks the command up
    # by its upper-case name.
    command, *rest = set_nx_args(f"lock:{name}", value, ttl_ms)
    taken = await client.execute_command(command.upper(), *rest)
    return value if taken else None


async def go_release(client: Any, key: str, value: str) -> int:
    """The release function ``Lock`` returns: 1 when it deleted the key."""
    try:
        return int(await client.evalsha(RELEASE_SHA, 1, key, value))
    except NoScriptError:
        return int(await client.eval(RELEASE_SCRIPT, 1, key, value))
