"""Orders on the durable stream: placed over HTTP, fulfilled by whichever
instance's consumer reads them, retried when fulfilment fails, moved to the
dead-letter stream after the last attempt.

An order can ask to fail its first ``fail_times`` attempts, so that retries
and dead letters can be watched. What happened is kept in Redis for the
page: the order, each attempt (instance, time, error), who fulfilled it or
why it was given up; and announced on the activity channel.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

import msgspec

from ..events import Event, Publisher, StreamPublisher

__all__ = ["ACTIVITY_CHANNEL", "ORDERS_DONE", "ORDERS_STREAM", "OrderBook", "SimulatedFailure"]

ORDERS_STREAM = "orders"
ACTIVITY_CHANNEL = "activity"
ORDERS_PLACED = "app:orders:placed"
ORDERS_RECENT = "app:orders:recent"
ORDERS_DONE = "app:orders:processed"
ORDERS_DEAD = "app:orders:dead"
ATTEMPTS = "app:orders:attempts:"
KEEP_SECONDS = 86_400
RECENT = 200


class SimulatedFailure(Exception):
    """The failure an order asked for (fulfilment "service down")."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _json(value: Any) -> bytes:
    return msgspec.json.encode(value)


def _decoded(raw: Any) -> Any:
    return msgspec.json.decode(raw) if raw else None


@dataclasses.dataclass(eq=False)
class OrderBook:
    client: Any
    stream: StreamPublisher
    activity: Publisher
    instance: str
    max_attempts: int

    async def place(self, item: str, quantity: int, fail_times: int) -> str:
        order = {"item": item, "quantity": quantity, "fail_times": fail_times}
        event_id = await self.stream.publish(ORDERS_STREAM, "order.placed", order)
        placed = {**order, "placed_by": self.instance, "placed_at": _now()}
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(ORDERS_PLACED, event_id, _json(placed))
        pipe.zadd(ORDERS_RECENT, {event_id: time.time()})
        pipe.zremrangebyrank(ORDERS_RECENT, 0, -RECENT - 1)
        await pipe.execute()
        return event_id

    async def fulfil(self, event: Event[Any]) -> None:
        """The stream consumer's handler. At-least-once: the result is
        recorded once per event id however often it runs."""
        key = ATTEMPTS + event.id
        at = _now()
        attempt = int(await self.client.rpush(key, _json({"instance": self.instance, "at": at})))
        await self.client.expire(key, KEEP_SECONDS)
        payload = event.payload if isinstance(event.payload, dict) else {}
        fail_times = int(payload.get("fail_times", 0))
        if attempt <= fail_times:
            error = f"simulated failure {attempt} of {fail_times}"
            record = {"instance": self.instance, "at": at, "error": error}
            await self.client.lset(key, attempt - 1, _json(record))
            await self.activity.publish(
                ACTIVITY_CHANNEL,
                "order.failed",
                {
                    "id": event.id,
                    "item": payload.get("item"),
                    "attempt": attempt,
                    "max_attempts": self.max_attempts,
                    "error": error,
                },
            )
            raise SimulatedFailure(error)
        done = {**payload, "processed_by": self.instance, "attempts": attempt, "processed_at": at}
        if await self.client.hsetnx(ORDERS_DONE, event.id, _json(done)):
            await self.activity.publish(
                ACTIVITY_CHANNEL,
                "order.processed",
                {"id": event.id, "item": payload.get("item"), "attempt": attempt},
            )

    async def dead_lettered(self, event: Event[Any]) -> None:
        """Handler of the dead-letter stream's watcher: note why the order
        was given up and announce it."""
        entry = await self.client.xrange(event.channel, event.entry_id, event.entry_id)
        fields = {_text(k): _text(v) for k, v in entry[0][1].items()} if entry else {}
        payload = event.payload if isinstance(event.payload, dict) else {}
        dead = {
            "error": fields.get("error", ""),
            "deliveries": int(fields.get("deliveries") or 0),
            "consumer": fields.get("consumer", ""),
            "at": _now(),
        }
        if await self.client.hsetnx(ORDERS_DEAD, event.id, _json(dead)):
            await self.activity.publish(
                ACTIVITY_CHANNEL,
                "order.dead_lettered",
                {"id": event.id, "item": payload.get("item"), **dead},
            )

    async def recent(self, count: int = 10) -> list[dict[str, Any]]:
        """The latest orders, newest first, with what happened to each."""
        ids = [_text(i) for i in await self.client.zrevrange(ORDERS_RECENT, 0, count - 1)]
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for event_id in ids:
            pipe.hget(ORDERS_PLACED, event_id)
            pipe.lrange(ATTEMPTS + event_id, 0, -1)
            pipe.hget(ORDERS_DONE, event_id)
            pipe.hget(ORDERS_DEAD, event_id)
        replies = await pipe.execute()
        orders = []
        for index, event_id in enumerate(ids):
            placed, attempts, done, dead = replies[index * 4 : index * 4 + 4]
            order = _decoded(placed) or {}
            processed, given_up = _decoded(done), _decoded(dead)
            status = "processed" if processed else "dead-lettered" if given_up else "pending"
            orders.append(
                {
                    "id": event_id,
                    **order,
                    "status": status,
                    "attempts": [_decoded(a) for a in attempts],
                    "processed_by": processed["processed_by"] if processed else None,
                    "dead_letter": given_up,
                }
            )
        return orders

    async def processed(self) -> dict[str, Any]:
        done = await self.client.hgetall(ORDERS_DONE)
        return {_text(k): msgspec.json.decode(v) for k, v in done.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
