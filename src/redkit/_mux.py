"""One Redis connection that many tasks share, commands written together.

A :class:`SharedConnection` takes packed commands from any number of tasks.
A command that finds the connection idle is written at once (a lone
request waits for nothing); while replies are awaited, the commands that
arrive are gathered and written together once per event-loop iteration.
Redis answers in order, so replies are matched to commands by position.

The rules that keep that matching true:

- A command whose caller gave up (cancelled) keeps its place: its reply is
  read and dropped. One not yet written is not written at all.
- An error reply fails only its own command.
- A command that may have been written is never sent again. When the
  connection fails, every command written on it fails with
  :func:`~redkit._failures.connection_lost`; commands not yet written go
  out on the next connection.
- No reply to the oldest command within ``timeout`` seconds (the client's
  socket timeout) means the server stalled: every command written fails
  with :func:`~redkit._failures.timed_out` and the connection is dropped,
  so no late reply can ever meet the wrong command.
- Back-pressure: when the socket's send buffer passes :data:`HIGH_WATER`
  bytes, nothing more is written until it drains; callers see
  :attr:`SharedConnection.full` past :data:`MAX_OUTSTANDING` commands or
  :data:`MAX_OUTSTANDING_BYTES` bytes and wait for room.

Reading and the handshake (AUTH, HELLO, SELECT, RESP2 or RESP3, TLS, the
Sentinel master lookup) are redis-py's own connection's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import select
from collections.abc import Callable
from typing import Any

from redis.asyncio.connection import AbstractConnection

from ._failures import (
    READ_ONLY,
    TIMED_OUT,
    connection_lost,
    describe_error,
    not_sent,
    timed_out,
)
from ._feed import feed_directly
from ._resp import packer
from ._timing import bounded

__all__ = [
    "HIGH_WATER",
    "MAX_OUTSTANDING",
    "MAX_OUTSTANDING_BYTES",
    "SharedConnection",
]

log = logging.getLogger("redkit.connection")

HIGH_WATER = 1 << 20
"""Bytes waiting in the socket's send buffer past which writing pauses."""
IDLE_CHECK = 0.01
"""Seconds without a write after which a connection is checked for a close
the event loop has not seen yet (a loop blocked while the server
restarted) before a command is written on it: one ``select`` call, which
back-to-back requests do not pay."""
MAX_OUTSTANDING = 16384
"""Commands (unanswered, written or not) past which a connection is full."""
MAX_OUTSTANDING_BYTES = 64 << 20
"""Request bytes (unanswered) past which a connection is full."""

# (future, when it was written, request bytes)
_Written = tuple[asyncio.Future[Any], float, int]
# (future, packed parts, request bytes)
_Queued = tuple[asyncio.Future[Any], list[bytes], int]


class _Socket:
    """One connection's life: from connect to its loss."""

    __slots__ = ("conn", "reader", "retiring", "timer", "transport", "used", "writer", "written")

    def __init__(self, conn: AbstractConnection) -> None:
        self.conn = conn
        self.writer: Any = conn._writer  # redis-py's StreamWriter
        self.transport: Any = self.writer.transport if self.writer is not None else None
        self.written: collections.deque[_Written] = collections.deque()
        self.reader: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.retiring = False
        self.used = 0.0  # loop time of the last write


class SharedConnection:
    """A connection to one server, shared by every task that sends on it.

    ``make`` returns a new, unconnected redis-py connection each time one
    is needed; ``counts`` is the owner's counter dict (``commands``,
    ``batches``, ``dropped``, ``reconnects``).
    """

    def __init__(
        self,
        make: Callable[[], AbstractConnection],
        counts: dict[str, int],
        *,
        timeout: float | None,
        follow_primary: bool = False,
    ) -> None:
        self._make = make
        self._counts = counts
        self._timeout = timeout
        self._follow_primary = follow_primary
        # Packs commands (and knows the encoder) before any socket exists.
        self.pack = packer(make())
        self._socket: _Socket | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._queued: list[_Queued] = []
        self._flush_soon = False
        self._paused = False
        self._outstanding = 0
        self._outstanding_bytes = 0
        self._room: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._old: set[_Socket] = set()
        self._draining: asyncio.Future[None] | None = None
        self._closed = False

    # -- sending -----------------------------------------------------------

    @property
    def full(self) -> bool:
        """True while a new command should wait (:meth:`wait_for_room`)."""
        return (
            self._outstanding >= MAX_OUTSTANDING or self._outstanding_bytes >= MAX_OUTSTANDING_BYTES
        )

    @property
    def outstanding(self) -> int:
        """Commands sent here and not answered yet (written or not)."""
        return self._outstanding

    @property
    def outstanding_bytes(self) -> int:
        return self._outstanding_bytes

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop this connection belongs to (None before first use)."""
        return self._loop

    def send(self, parts: list[bytes], size: int) -> asyncio.Future[Any]:
        """Send one packed command; its future gets the raw reply, or the
        error reply / connection failure as its exception."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._counts["commands"] += 1
        self._outstanding += 1
        self._outstanding_bytes += size
        sock = self._socket
        if sock is not None and not sock.written and not self._queued and not self._paused:
            now = loop.time()
            if now - sock.used < IDLE_CHECK or not _closed_while_idle(sock):
                # Idle: no reason to wait for company.
                self._track(sock, future, now, size)
                self._write(sock, parts)
                return future
            self._drop(sock)
            sock = None
        self._queued.append((future, parts, size))
        if sock is not None:
            if not self._flush_soon and not self._paused:
                self._flush_soon = True
                loop.call_soon(self._flush)
        elif self._connecting is None:
            self._connect_soon()
        return future

    async def wait_for_room(self, seconds: float | None) -> None:
        """Wait until this connection is no longer :attr:`full`."""
        while self.full:
            if self._room is None:
                self._room = asyncio.Event()
            if seconds is None:
                await self._room.wait()
                continue
            try:
                await bounded(self._room.wait(), seconds)
            except TIMED_OUT:
                raise timed_out(f"{self._outstanding} commands already waiting for Redis") from None

    def _flush(self) -> None:
        self._flush_soon = False
        sock = self._socket
        if sock is None or self._paused or not self._queued:
            return
        queued = self._queued
        now = self._loop.time() if self._loop is not None else 0.0
        parts: list[bytes] = []
        gathered = taken = 0
        for future, packed, size in queued:
            taken += 1
            if future.done():  # given up before it was written: never send it
                self._answered(size)
                continue
            parts.extend(packed)
            gathered += size
            self._track(sock, future, now, size)
            if gathered >= HIGH_WATER:
                # Large writes go out in pieces, so that a full send buffer
                # holds back what comes after them.
                self._write(sock, parts)
                parts, gathered = [], 0
                if self._paused:
                    break
        del queued[:taken]
        if parts:
            self._write(sock, parts)

    def _write(self, sock: _Socket, parts: list[bytes]) -> None:
        sock.writer.writelines(parts)
        self._counts["batches"] += 1
        if (
            sock.reader is not None
            and not self._paused
            and sock.transport.get_write_buffer_size() > HIGH_WATER
        ):
            # (A socket fed directly hears pause_writing from its transport.)
            self._paused = True
            self._draining = asyncio.ensure_future(self._drain(sock))

    async def _drain(self, sock: _Socket) -> None:
        try:
            await sock.writer.drain()
        except Exception:
            pass  # the reader sees the loss and fails what was written
        finally:
            self._paused = False
        self._flush()

    def pause_writing(self) -> None:
        """The socket's send buffer is full: write nothing more for now."""
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._flush()

    def _track(self, sock: _Socket, future: asyncio.Future[Any], now: float, size: int) -> None:
        sock.used = now
        sock.written.append((future, now, size))
        if sock.timer is None and self._timeout is not None and self._loop is not None:
            sock.timer = self._loop.call_at(now + self._timeout, self._check_stall, sock)

    def _answered(self, size: int) -> None:
        self._outstanding -= 1
        self._outstanding_bytes -= size
        room = self._room
        if room is not None and not self.full:
            self._room = None
            room.set()

    # -- connecting --------------------------------------------------------

    def _connect_soon(self) -> None:
        assert self._loop is not None
        self._connecting = self._loop.create_task(self._connect(), name="redkit shared connection")

    async def _connect(self) -> None:
        conn = self._make()
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException as exc:
            self._connecting = None
            with contextlib.suppress(Exception):
                await conn.disconnect()
            queued, self._queued = self._queued, []
            error = exc if isinstance(exc, Exception) else not_sent("the client was closed")
            for future, _, size in queued:
                self._answered(size)
                if not future.done():
                    future.set_exception(_copy(error))
            if not isinstance(exc, Exception):
                raise
            return
        self._connecting = None
        if self._closed:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            return
        # Replies are awaited for as long as the stall check allows; the
        # handshake above kept the socket timeout.
        conn.socket_timeout = None
        sock = _Socket(conn)
        self._socket = sock
        assert self._loop is not None
        if feed_directly(self, sock):
            # Its transport tells pause_writing/resume_writing at this mark.
            sock.transport.set_write_buffer_limits(high=HIGH_WATER)
        else:
            sock.reader = self._loop.create_task(
                self._read(sock), name="redkit shared connection reader"
            )
        self._flush()

    # -- reading -----------------------------------------------------------

    async def _read(self, sock: _Socket) -> None:
        # The parser itself, beneath the connection's read_response (which
        # only adds what a pooled connection needs: a timeout per read, the
        # health-check clock, raising error replies): an error reply comes
        # back as its exception, any failure to read raises.
        read = sock.conn._parser.read_response  # type: ignore[attr-defined]
        deliver = self.deliver
        try:
            while deliver(sock, await read()):
                pass
        except BaseException as exc:
            self.lost(sock, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.lost(sock, None)

    def deliver(self, sock: _Socket, reply: Any) -> bool:
        """Hand ``reply`` to the oldest command written on ``sock``; False
        once ``sock`` has nothing more to read (it retired)."""
        written = sock.written
        if not written:
            raise connection_lost("Redis sent a reply to no command")
        future, _, size = written.popleft()
        self._answered(size)
        failed = isinstance(reply, Exception)
        if future.done():
            self._counts["dropped"] += 1
        elif failed:
            future.set_exception(reply)
        else:
            future.set_result(reply)
        if failed and self._follow_primary and isinstance(reply, READ_ONLY):
            self._retire(sock)
        return not (sock.retiring and not written)

    def _check_stall(self, sock: _Socket) -> None:
        sock.timer = None
        if not sock.written or self._timeout is None or self._loop is None:
            return
        due = sock.written[0][1] + self._timeout
        if self._loop.time() < due:
            sock.timer = self._loop.call_at(due, self._check_stall, sock)
            return
        host = getattr(sock.conn, "host", "Redis")
        port = getattr(sock.conn, "port", "")
        self._fail_written(sock, timed_out(f"Timeout reading from {host}:{port}"))
        self._drop(sock)
        if sock.reader is not None:
            sock.reader.cancel()

    def lost(self, sock: _Socket, exc: BaseException | None) -> None:
        if exc is not None and sock.written:
            cause = describe_error(exc) if isinstance(exc, Exception) else "connection closed"
            host = getattr(sock.conn, "host", "Redis")
            port = getattr(sock.conn, "port", "")
            self._fail_written(sock, connection_lost(f"connection to {host}:{port} lost: {cause}"))
            log.debug("shared connection to %s:%s lost: %s", host, port, cause)
        self._drop(sock)

    def _fail_written(self, sock: _Socket, error: Exception) -> None:
        written = sock.written
        while written:
            future, _, size = written.popleft()
            self._answered(size)
            if not future.done():
                future.set_exception(_copy(error))

    def _drop(self, sock: _Socket) -> None:
        if sock.timer is not None:
            sock.timer.cancel()
            sock.timer = None
        self._old.discard(sock)
        if self._socket is sock:
            self._socket = None
            self._counts["reconnects"] += 1
        with contextlib.suppress(Exception):
            sock.transport.abort()
        sock.conn._reader = sock.conn._writer = None
        if self._queued and self._socket is None and self._connecting is None and not self._closed:
            self._connect_soon()

    def _retire(self, sock: _Socket) -> None:
        """Write nothing more on ``sock``; read what it owes, then close."""
        if sock.retiring:
            return
        sock.retiring = True
        if self._socket is sock:
            self._socket = None
            self._old.add(sock)
            if self._queued and self._connecting is None:
                self._connect_soon()
        if not sock.written:
            self._drop(sock)
            if sock.reader is not None and sock.reader is not asyncio.current_task():
                sock.reader.cancel()

    def retire(self) -> None:
        """New commands go to a new connection (the primary moved); the
        current one closes once its replies are read."""
        if self._socket is not None:
            self._retire(self._socket)

    async def aclose(self) -> None:
        """Fail what is outstanding and close the socket."""
        self._closed = True
        connecting = self._connecting
        if connecting is not None and connecting is not asyncio.current_task():
            connecting.cancel()
            # Wait for it without taking on its cancellation: awaiting the
            # task would raise CancelledError in the task closing the client.
            await asyncio.wait({connecting})
        for sock in [*self._old, *([self._socket] if self._socket is not None else [])]:
            self._fail_written(sock, connection_lost("the client was closed"))
            self._drop(sock)
            if sock.reader is not None and sock.reader is not asyncio.current_task():
                sock.reader.cancel()
                await asyncio.wait({sock.reader})
        queued, self._queued = self._queued, []
        for future, _, size in queued:
            self._answered(size)
            if not future.done():
                future.set_exception(not_sent("the client was closed before it was sent"))


def _closed_while_idle(sock: _Socket) -> bool:
    # Nothing is owed on an idle connection, so anything readable is the
    # server's close (or a push message; reconnecting costs only time).
    # Written on such a socket, a command would fail after it may have run.
    raw = sock.transport.get_extra_info("socket")
    if raw is None:
        return False
    try:
        readable, _, _ = select.select([raw.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _copy(error: Exception) -> Exception:
    # Each waiting task raises its own instance (a shared one would collect
    # every task's traceback).
    try:
        return type(error)(*error.args)
    except Exception:
        return error
