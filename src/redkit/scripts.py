"""Lua scripts kept as package ``.lua`` files, run with EVALSHA.

On NOSCRIPT (a restarted server, a new cluster node, SCRIPT FLUSH) the
script is sent once with EVAL, which also caches it on that node, so the
next call is EVALSHA again. On a cluster, redis-py routes the call by its
keys; the keys of one call must share a hash slot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from ._failures import NO_SCRIPT
from .errors import ConfigError

__all__ = ["Script"]

KeyOrArg = str | bytes | int | float


class Script:
    """One Lua script. ``await script(client, keys, args)`` runs it."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:10]}>"

    @classmethod
    def from_package(cls, package: str, *filenames: str) -> Script:
        """Load a script shipped inside ``package`` (for example
        ``Script.from_package("redkit.ratelimit", "lua/gcra.lua")``).

        Several files make one script, joined by newlines in the order
        given, so that scripts can share their common steps and still run
        as one call (``Script.from_package("redkit.ratelimit", "lua/head.lua",
        "lua/gcra.lua", "lua/tail.lua")``). The SHA is of the joined source;
        the name lists the files."""
        if not filenames:
            raise ConfigError(f"Script.from_package({package!r}) needs at least one file name")
        root = resources.files(package)
        source = "\n".join(root.joinpath(f).read_text(encoding="utf-8") for f in filenames)
        return cls(f"{package}:{'+'.join(filenames)}", source)

    async def __call__(
        self, client: Any, keys: Sequence[KeyOrArg] = (), args: Sequence[KeyOrArg] = ()
    ) -> Any:
        try:
            # execute_command rather than evalsha(): the same command, two
            # Python calls fewer on every script run.
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NO_SCRIPT:
            return await client.eval(self.source, len(keys), *keys, *args)
