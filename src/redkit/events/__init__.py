"""Events: pub/sub with the Go service's envelope and a self-healing
subscriber, plus durable, at-least-once delivery on Redis Streams."""

from ._envelope import Event, decode_event, encode_event, format_timestamp, parse_timestamp
from .publisher import Publisher, PublisherStats
from .subscriber import Gap, Subscriber, SubscriberStats

__all__ = [
    "Event",
    "Gap",
    "Publisher",
    "PublisherStats",
    "Subscriber",
    "SubscriberStats",
    "decode_event",
    "encode_event",
    "format_timestamp",
    "parse_timestamp",
]
