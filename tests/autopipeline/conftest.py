"""Fixtures of the auto-pipelining tests.

``target`` is the topology a fault test may pause, kill connections on or
reshard: a private standalone server, or a private 3-master cluster shared
by this folder's tests (the session cluster other tests use is never
paused or resharded here)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from redkit.server import EmbeddedCluster, EmbeddedRedis


class Target:
    """A topology to break, and the node that serves a key on it."""

    def __init__(self, topology: EmbeddedRedis | EmbeddedCluster) -> None:
        self.topology = topology
        self.cluster = isinstance(topology, EmbeddedCluster)

    @property
    def nodes(self) -> list[EmbeddedRedis]:
        if isinstance(self.topology, EmbeddedCluster):
            return list(self.topology.nodes)
        return [self.topology]

    def node_for(self, key: str) -> EmbeddedRedis:
        if isinstance(self.topology, EmbeddedCluster):
            return self.topology.primary_for(key)
        return self.topology


@pytest.fixture(scope="package")
def scratch_cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(masters=3) as cluster:
        yield cluster


@pytest.fixture(params=["standalone", "cluster"])
def target(
    request: pytest.FixtureRequest, server_factory: Callable[..., EmbeddedRedis]
) -> Iterator[Target]:
    if request.param == "standalone":
        yield Target(server_factory())
        return
    cluster: EmbeddedCluster = request.getfixturevalue("scratch_cluster")
    yield Target(cluster)
    # A test that failed while a node was paused leaves none paused for the next.
    for node in cluster.nodes:
        node.resume()
