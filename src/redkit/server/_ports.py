"""Free loopback ports, and whether a Redis answers on one."""

from __future__ import annotations

import random
import socket

from ..errors import RedisServerError


class PortInUse(RedisServerError):
    """A port that a server was asked to listen on is taken. ``bus_of`` is
    set when it is the cluster bus port (port + 10000) of that node port."""

    def __init__(self, port: int, *, bus_of: int | None = None) -> None:
        self.port = port
        self.bus_of = bus_of
        super().__init__(f"cannot start redis-server: {self.what} is already in use")

    @property
    def what(self) -> str:
        if self.bus_of is None:
            return f"port {self.port}"
        return f"port {self.port} (the cluster bus of port {self.bus_of})"


def free_port(host: str = "127.0.0.1", *, with_bus: bool = False) -> int:
    """A TCP port that was free on ``host`` a moment ago, below the kernel's
    ephemeral range so that outgoing connections do not take it. With
    ``with_bus`` the cluster bus port (port + 10000) is free too."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 30000)
        if not _port_in_use(host, port) and not (with_bus and _port_in_use(host, port + 10000)):
            return port
    raise RedisServerError(f"no free port found on {host}")


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As redis-server does: a port whose old connections linger in
        # TIME_WAIT is free to listen on again.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def _answers(host: str, port: int) -> bool:
    """True when something on host:port answers a PING like Redis (PONG, or
    NOAUTH when a password is set)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH", b"-LOADING")) and not reply.startswith(
        b"-LOADING"
    )
