"""Embedded Redis: real ``redis-server`` processes on free loopback ports, for
tests, benchmarks, ``redkit server`` and the reference service.

Every process is started in its own session (Ctrl-C in a terminal reaches the
parent, which then stops the server in order) and with the parent-death
signal set, so a killed parent takes its servers with it; :func:`atexit`
stops whatever is still running at a normal exit. The parent-death signal
fires when the *thread* that started the server ends: start servers from the
main thread or a thread that outlives them.
"""

from __future__ import annotations

from ._binary import find_redis_server, server_version
from ._cluster import EmbeddedCluster

# _answers stays importable from here for the demo and the tests.
from ._ports import _answers as _answers
from ._ports import free_port
from ._process import EmbeddedRedis
from ._sentinel import EmbeddedSentinelGroup

__all__ = [
    "EmbeddedCluster",
    "EmbeddedRedis",
    "EmbeddedSentinelGroup",
    "find_redis_server",
    "free_port",
    "server_version",
]
