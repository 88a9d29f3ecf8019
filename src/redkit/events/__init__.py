"""Events: pub/sub with the Go service's envelope and a self-healing
subscriber, plus durable, at-least-once delivery on Redis Streams.

Public names: :class:`Event`, :class:`Publisher`, :class:`Subscriber`,
:class:`Gap`, :class:`StreamPublisher`, :class:`StreamConsumer`, their
``*Stats`` counters, and the envelope helpers :func:`encode_event`,
:func:`decode_event`, :func:`format_timestamp`, :func:`parse_timestamp`.
"""

from ._envelope import (
    Event,
    decode_event,
    encode_event,
    format_timestamp,
    new_event,
    parse_timestamp,
)
from .publisher import Publisher, PublisherStats
from .streams import (
    StreamConsumer,
    StreamConsumerStats,
    StreamPublisher,
    StreamPublisherStats,
    dead_letter_stream_for,
)
from .subscriber import Gap, Subscriber, SubscriberStats

__all__ = [
    "Event",
    "Gap",
    "Publisher",
    "PublisherStats",
    "StreamConsumer",
    "StreamConsumerStats",
    "StreamPublisher",
    "StreamPublisherStats",
    "Subscriber",
    "SubscriberStats",
    "dead_letter_stream_for",
    "decode_event",
    "encode_event",
    "format_timestamp",
    "new_event",
    "parse_timestamp",
]
