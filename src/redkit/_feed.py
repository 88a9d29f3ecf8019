"""Replies parsed the moment their bytes arrive, when hiredis parses them.

A shared connection's replies can be read by a task that awaits redis-py's
parser: the bytes reach a stream buffer, the task wakes in the next
event-loop iteration, parses, and wakes each caller in the iteration after.
With hiredis (and RESP2) :func:`feed_directly` takes the socket's protocol
over instead: the bytes go straight into hiredis' reader and every complete
reply is handed to its command in the same callback, so a caller resumes
one iteration sooner and no task or stream buffer sits in between. The
handshake has run on redis-py's own stream by then, and the connection's
hiredis reader (its encoding, its error classes) is the one that parses.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ._failures import CONNECTION_LOST, connection_lost

if TYPE_CHECKING:
    from ._mux import SharedConnection, _Socket

__all__ = ["feed_directly"]

try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
except ImportError:  # pragma: no cover - a redis-py that moved them
    NOT_ENOUGH_DATA = _AsyncHiredisParser = None  # type: ignore[assignment,misc]


def feed_directly(owner: SharedConnection, sock: _Socket) -> bool:
    """Parse ``sock``'s replies in its protocol's callback; False (nothing
    changed) where that cannot be done the same way redis-py would."""
    conn: Any = sock.conn
    parser = getattr(conn, "_parser", None)
    if _AsyncHiredisParser is None or type(parser) is not _AsyncHiredisParser:
        return False
    push_type = None
    if str(getattr(conn, "protocol", 2) or 2) != "2":
        # RESP3: push messages can arrive between replies; only a hiredis
        # that marks them can tell them apart.
        push_type = getattr(parser, "_hiredis_PushNotificationType", None)
        if push_type is None:
            return False
    stream = conn._reader
    reader = getattr(parser, "_reader", None)
    if reader is None or stream is None or getattr(stream, "_buffer", None) or sock.written:
        return False
    if getattr(parser, "_next_response", NOT_ENOUGH_DATA) is not NOT_ENOUGH_DATA:
        return False  # a reply already parsed and kept (redis-py 5)
    feed = _Feed(owner, sock, reader, push_type)
    sock.transport.set_protocol(feed)
    return True


class _Feed(asyncio.Protocol):
    """The protocol of a shared connection whose replies hiredis parses."""

    def __init__(
        self, owner: SharedConnection, sock: _Socket, reader: Any, push_type: type | None
    ) -> None:
        self._owner = owner
        self._sock = sock
        self._reader = reader
        self._push_type = push_type
        self._done = False

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        reader = self._reader
        deliver = self._owner.deliver
        sock = self._sock
        push_type = self._push_type
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not NOT_ENOUGH_DATA:
                if push_type is not None and isinstance(reply, push_type):
                    # Nothing on a shared connection asks for pushes (no
                    # subscriptions, no tracking): no command's reply.
                    continue
                if type(reply) is list and reply and isinstance(reply[0], CONNECTION_LOST):
                    reply = reply[0]  # as redis-py's parser raises it
                if not deliver(sock, reply):
                    self._end(None)
                    return
        except Exception as exc:  # a protocol error, or a reply to nothing
            self._end(exc)

    def eof_received(self) -> bool:
        self._end(connection_lost("Connection closed by server."))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc if exc is not None else connection_lost("Connection closed."))

    def pause_writing(self) -> None:
        self._owner.pause_writing()

    def resume_writing(self) -> None:
        self._owner.resume_writing()

    def _end(self, exc: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self._owner.lost(self._sock, exc)
