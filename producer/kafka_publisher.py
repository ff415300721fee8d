"""Kafka publisher: Tick -> Avro record (AvroSerializer, Confluent framing) -> produce, key = symbol.

Idempotent producer with acks=all. While the broker is unreachable librdkafka buffers up to
queue.buffering.max.messages for message.timeout.ms; error_cb logs that the broker is unreachable.
A full local queue (BufferError) is waited out with poll(), never dropped silently. Every delivery
failure is counted and logged by the delivery callback. A tick the serializer refuses is a counted
rejection (`serialize_error`, one log line with the reason), never an exception: the ticks before and
after it are produced and flushed as usual.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext, Serializer, StringSerializer

from producer.schema_registration import value_serializer
from producer.stats import Stats
from producer.tick import Tick, now_ms
from producer.validate import Reason

log = logging.getLogger(__name__)

UNREACHABLE = {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE}


def producer_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def producer_config(connection: dict[str, str], message_timeout_ms: int = 300_000,
                    buffer_max_messages: int = 100_000, linger_ms: int = 20,
                    extra: dict[str, str] | None = None) -> dict[str, Any]:
    """`connection`: where the broker is and how to authenticate (Settings.kafka_config("producer"))."""
    return {
        **connection,
        "client.id": f"cryptopipe-producer-{producer_id()}",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": linger_ms,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": buffer_max_messages,
        "message.timeout.ms": message_timeout_ms,
        **(extra or {}),
    }


class KafkaPublisher:
    def __init__(self, config: dict[str, Any], registry: SchemaRegistryClient, schema_str: str, topic: str,
                 stats: Stats, give_up: Callable[[], bool] = lambda: False,
                 on_wait: Callable[[], None] = lambda: None, value_serializer_: Serializer | None = None) -> None:
        self.topic, self.stats = topic, stats
        self.producer_id = producer_id()
        self.sequence = 0
        self._in_flight = 0  # produced, delivery report not yet received (len(producer) also counts requests)
        self.fatal: KafkaError | None = None
        self._give_up, self._on_wait = give_up, on_wait
        self._broker_down_since: float | None = None
        self._last_down_log = 0.0
        self._producer = Producer({**config, "error_cb": self._on_error,
                                   "logger": logging.getLogger("producer.librdkafka")})
        self._value = value_serializer_ or value_serializer(registry, schema_str)
        self._key = StringSerializer("utf_8")
        self._value_ctx = SerializationContext(topic, MessageField.VALUE)
        self._key_ctx = SerializationContext(topic, MessageField.KEY)

    # -- data path ---------------------------------------------------------------------------------
    def record(self, tick: Tick, sequence: int) -> dict[str, Any]:
        return {"symbol": tick.symbol, "price": tick.price, "event_time": tick.event_time, "volume": tick.volume,
                "feed": tick.feed.value, "produced_at": now_ms(), "producer_id": self.producer_id,
                "sequence": sequence}

    def serialize(self, tick: Tick) -> tuple[bytes, bytes] | None:
        """(key, value) bytes; None, counted and logged, when the serializer refuses the tick."""
        try:
            value = self._value(self.record(tick, self.sequence + 1), self._value_ctx)
            key = self._key(tick.symbol, self._key_ctx)
        except Exception as exc:  # noqa: BLE001 - one tick the serializer refuses must not stop the producer
            self.stats.reject(Reason.SERIALIZE_ERROR)
            log.warning("rejected (%s): %r at %r: %s: %s", Reason.SERIALIZE_ERROR, tick.symbol, tick.event_time,
                        type(exc).__name__, exc)
            return None
        self.sequence += 1  # consecutive over produced ticks: a refused tick leaves no gap
        return key, value

    def send(self, tick: Tick) -> None:
        serialized = self.serialize(tick)
        if serialized is None:
            return
        key, value = serialized
        waiting_since: float | None = None
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, on_delivery=self._on_delivery)
                break
            except KafkaException as exc:  # refused locally (e.g. larger than message.max.bytes): not delivered
                self.stats.produced += 1
                self.stats.failed += 1
                log.error("not delivered: %s %s: %s", tick.symbol, tick.event_time, exc)
                return
            except BufferError:
                if waiting_since is None:
                    waiting_since = time.monotonic()
                    log.warning("local producer queue full (%d messages in flight); waiting for the broker",
                                self._in_flight)
                if self._give_up():
                    self.stats.produced += 1
                    self.stats.failed += 1
                    log.error("not delivered: %s %s (shutting down while the local queue is full)",
                              tick.symbol, tick.event_time)
                    return
                self._producer.poll(0.5)
                self._on_wait()
        if waiting_since is not None:
            log.info("local producer queue has room again after %.1fs", time.monotonic() - waiting_since)
        self.stats.produced += 1
        self._in_flight += 1

    # -- client callbacks --------------------------------------------------------------------------
    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self._in_flight -= 1
        if err is None:
            self.stats.delivered += 1
            if self._broker_down_since is not None:
                log.info("Kafka broker reachable again (was unreachable for %.0fs)",
                         time.monotonic() - self._broker_down_since)
                self._broker_down_since = None
            return
        self.stats.failed += 1
        key = msg.key().decode() if msg.key() else None
        log.error("delivery failed: key=%s topic=%s: %s", key, msg.topic(), err.str())

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err
            log.critical("fatal Kafka producer error: %s", err.str())
            return
        if err.code() in UNREACHABLE:
            now = time.monotonic()
            if self._broker_down_since is None:
                self._broker_down_since = now
            if now - self._last_down_log > 30:
                self._last_down_log = now
                log.warning("Kafka broker unreachable (%s); buffering %d messages locally, each kept for up to "
                            "message.timeout.ms", err.str(), self._in_flight)
            return
        log.warning("Kafka client error: %s", err.str())

    # -- lifecycle ---------------------------------------------------------------------------------
    def poll(self, timeout: float = 0) -> None:
        self._producer.poll(timeout)

    def in_flight(self) -> int:
        """Ticks produced whose delivery report has not arrived yet."""
        return self._in_flight

    def flush(self, timeout: float) -> int:
        """Wait for outstanding deliveries; ticks still unreported after `timeout` count as failed."""
        self._producer.flush(timeout)
        remaining, self._in_flight = self._in_flight, 0
        if remaining:
            self.stats.failed += remaining
            log.error("%d messages still undelivered after %.0fs flush timeout; counted as failed", remaining, timeout)
        return remaining

    def close(self) -> None:
        pass
