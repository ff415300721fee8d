"""The producer against the real stack (Kafka, Apicurio registry): stream ticks arrive as Avro with the
right values; Kafka stopped and restarted mid-stream loses no acknowledged tick; SIGTERM flushes and
reports the counts. Each test writes to its own topic, so the sink connector (TICKS_TOPIC only) is unaffected.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from websockets.sync.server import ServerConnection

from core.settings import PROJECT_ROOT, Settings
from producer.kafka_publisher import KafkaPublisher, producer_config
from producer.pipeline import EXIT_OK, Pipeline
from producer.schema_registration import load_schema, register_schema, registry_client, value_serializer
from producer.sources.replay import ReplaySource
from producer.stats import Stats
from producer.tick import Feed, Tick
from producer.validate import TickContract, ValidationRules, Validator
from tests import support
from tests.conftest import StackHandle
from tests.fixtures.producer.summary import final_counts
from tests.fixtures.producer.yahoo_ws import YahooServer, envelope, pricing_frame
from tests.support import wait_until

pytestmark = pytest.mark.stack
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]


def consume(stack: StackHandle, topic: str, expected: int, timeout: float = 90) -> list[tuple[str, dict]]:
    """(key, decoded value) of every record on the topic; waits until `expected` arrived (then 2 s more)."""
    deserialize = AvroDeserializer(registry_client(stack.registry_url))
    return [(m.key().decode(), deserialize(m.value(), SerializationContext(topic, MessageField.VALUE)))
            for m in support.consume(stack, topic, lambda m: True, expected, timeout)]


def epoch_ms(when: datetime) -> int:
    """A decoded timestamp-millis back to epoch milliseconds, exactly (no float rounding)."""
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def start_producer(stack: StackHandle, url: str, topic: str, tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "producer", "--source", "stream", "--stream-url", url, "--topic", topic,
         "--symbols", ",".join(SYMBOLS), "--health-file", str(tmp_path / "health.json"), "--health-interval", "0.5",
         "--stats-interval", "2", "--reconnect-initial-wait", "0.2", *extra],
        env=stack.env(), cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def health(tmp_path: Path) -> dict:
    try:
        return json.loads((tmp_path / "health.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


class Ticker:
    """Server behaviour: one frame every `period` s (symbols round-robin, distinct prices) until stopped."""

    def __init__(self, period: float = 0.02) -> None:
        self.period, self.sent, self.stop = period, [], threading.Event()

    def __call__(self, ws: ServerConnection, index: int) -> None:
        i = len(self.sent)
        while not self.stop.is_set():
            symbol, price, t = SYMBOLS[i % 3], 100.0 + i * 0.25, int(time.time() * 1000)
            ws.send(pricing_frame(symbol, price, t))
            self.sent.append((symbol, price, t))
            i += 1
            time.sleep(self.period)
        try:
            while True:
                ws.recv()
        except Exception:  # noqa: BLE001 - closed by the client
            return


def test_stream_ticks_arrive_as_avro_with_the_right_values(stack: StackHandle, unique_topic: str,
                                                          tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    good = [(SYMBOLS[i % 3], 1000.0 + i * 0.5, now - 1000 + i, (i + 1) if i % 2 else None) for i in range(30)]

    def behaviour(ws: ServerConnection, index: int) -> None:
        for n, (symbol, price, t, size) in enumerate(good):
            extra = {"last_size": size, "day_volume": 10**9} if size else {}
            ws.send(pricing_frame(symbol, price, t, **extra))
            if n == 5:
                ws.send(envelope("garbage!"))  # malformed
                ws.send(pricing_frame("DOGE-USD", 0.5, t))  # unknown symbol
                ws.send(pricing_frame(symbol, price, t, **extra))  # repeated frame
                ws.send(pricing_frame(symbol, -1.0, t + 1))  # bad price
                ws.send(pricing_frame(symbol, price + 0.1, t + 2, last_size=-3, day_volume=10**9))  # bad volume
                ws.send(pricing_frame(symbol, price + 0.2, 1_000_000_000_000))  # 2001: implausible time
                ws.send(pricing_frame(symbol, price + 0.3, now + 3_600_000))  # an hour ahead: future time
                ws.send(pricing_frame("BTC-USD\x00", price, t))  # NUL in the symbol
        while True:
            ws.recv()

    with YahooServer(behaviour) as server:
        proc = start_producer(stack, server.url, unique_topic, tmp_path, "--max-ticks", str(len(good)))
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    counts = final_counts(out)
    rejected = {"malformed": 1, "unknown_symbol": 1, "duplicate": 1, "bad_price": 1, "bad_volume": 1,
                "implausible_time": 1, "future_time": 1, "bad_symbol": 1}
    assert counts == {"received": len(good) + 8, "produced": len(good), "delivered": len(good), "failed": 0,
                      "rejected": rejected, "reconnects": 0}

    records = consume(stack, unique_topic, len(good))
    assert len(records) == len(good)
    by_sequence = sorted(records, key=lambda r: r[1]["sequence"])
    assert [r[1]["sequence"] for r in by_sequence] == list(range(1, len(good) + 1))
    got = sorted((v["symbol"], v["price"], epoch_ms(v["event_time"]), v["volume"]) for _, v in records)
    assert got == sorted((s, p, t, float(v) if v else None) for s, p, t, v in good)
    for key, value in records:
        assert key == value["symbol"]
        assert value["feed"] == "STREAM"
        assert re.fullmatch(r".+:\d+", value["producer_id"]) and value["producer_id"].endswith(f":{proc.pid}")
        assert abs(value["produced_at"].timestamp() - time.time()) < 300
    registered = registry_client(stack.registry_url).get_latest_version(f"{unique_topic}-value")
    assert json.loads(registered.schema.schema_str)["name"] == "CryptoTick"


def test_sigterm_flushes_and_reports_counts(stack: StackHandle, unique_topic: str, tmp_path: Path) -> None:
    """SIGTERM mid-stream: every tick received is produced or rejected, every produced one is on the topic,
    and what is on the topic is exactly the first ticks the server sent, in order of their sequence."""
    ticker = Ticker(period=0.005)
    with YahooServer(ticker) as server:
        proc = start_producer(stack, server.url, unique_topic, tmp_path)
        wait_until(lambda: health(tmp_path).get("delivered", 0) >= 200, 60, "200 delivered ticks")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
        ticker.stop.set()
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM received" in err
    counts = final_counts(out)
    assert counts["received"] == counts["produced"] + sum(counts["rejected"].values())  # type: ignore[union-attr]
    assert counts["rejected"] == {} and counts["failed"] == 0
    assert counts["delivered"] == counts["produced"] >= 200
    records = consume(stack, unique_topic, counts["delivered"])
    assert len(records) == counts["delivered"]
    by_sequence = [v for _, v in sorted(records, key=lambda r: r[1]["sequence"])]
    assert [v["sequence"] for v in by_sequence] == list(range(1, len(records) + 1))
    assert [(v["symbol"], v["price"], epoch_ms(v["event_time"])) for v in by_sequence] == (
        ticker.sent[:len(records)])
    assert all(key == value["symbol"] and value["feed"] == "STREAM" for key, value in records)


def test_a_tick_the_serializer_refuses_is_counted_and_the_others_are_delivered(
        stack: StackHandle, unique_topic: str, tmp_path: Path) -> None:
    """The real AvroSerializer, made to refuse one tick in the middle of a replay: the producer counts it as
    serialize_error, produces and flushes the rest, and exits 0."""
    now = int(time.time() * 1000)
    ticks = [Tick(SYMBOLS[i % 3], 10.0 + i, now - 60_000 + i, None, Feed.REPLAY) for i in range(50)]
    path = tmp_path / "replay.jsonl"
    path.write_text("".join(json.dumps(t.to_json_dict()) + "\n" for t in ticks))
    registry, schema = registry_client(stack.registry_url, stack.settings.registry_auth("producer")), load_schema()
    avro = value_serializer(registry, schema)
    refused = ticks[25]

    def serializer(record: dict, ctx: SerializationContext) -> bytes | None:
        if (record["symbol"], record["event_time"]) == (refused.symbol, refused.event_time):
            raise ValueError("refused by the test")  # what AvroSerializer raises for a value it cannot write
        return avro(record, ctx)

    stats, stop = Stats(), threading.Event()
    settings = Settings.load().env
    validator = Validator(ValidationRules(frozenset(SYMBOLS), TickContract.from_settings(settings)))
    pipeline = Pipeline(ReplaySource(path, 0, stats, stop_event=stop), validator, stats, stop, stats_interval=0)
    register_schema(registry, f"{unique_topic}-value", schema, wait_s=30)
    publisher = KafkaPublisher(producer_config(stack.settings.kafka_config("producer")), registry, schema,
                               unique_topic, stats, value_serializer_=serializer)
    assert pipeline.run(publisher) == EXIT_OK
    assert (stats.received, stats.produced, stats.delivered, stats.failed) == (50, 49, 49, 0)
    assert dict(stats.rejected) == {"serialize_error": 1}
    records = consume(stack, unique_topic, 49)
    expected = [t for t in ticks if t is not refused]
    assert sorted((v["sequence"], v["symbol"], v["price"]) for _, v in records) == [
        (n, t.symbol, t.price) for n, t in enumerate(expected, 1)]


def test_kafka_down_and_back_mid_stream_loses_no_acknowledged_tick(stack: StackHandle, unique_topic: str,
                                                                   tmp_path: Path) -> None:
    ticker = Ticker(period=0.02)
    with YahooServer(ticker) as server:
        proc = start_producer(stack, server.url, unique_topic, tmp_path)
        try:
            wait_until(lambda: health(tmp_path).get("delivered", 0) >= 50, 60, "50 delivered ticks")
            stack.stop_kafka()
            down_at = len(ticker.sent)
            # ticks keep arriving; librdkafka buffers them
            wait_until(lambda: len(ticker.sent) > down_at + 50, 30, "50 ticks while Kafka is down")
            delivered_before = health(tmp_path).get("delivered", 0)
            stack.start_kafka()
            wait_until(lambda: health(tmp_path).get("delivered", 0) > delivered_before, 120, "deliveries to resume")
            ticker.stop.set()
            sent = len(ticker.sent)
            wait_until(lambda: health(tmp_path).get("delivered", 0) >= sent, 120, "every tick delivered after restart")
        finally:
            ticker.stop.set()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "Kafka broker unreachable" in err
    counts = final_counts(out)
    assert counts["failed"] == 0 and counts["delivered"] == len(ticker.sent)
    records = consume(stack, unique_topic, counts["delivered"], timeout=120)
    assert len(records) == counts["delivered"]  # idempotent producer: no duplicates from the retries
    assert sorted((v["symbol"], v["price"], epoch_ms(v["event_time"])) for _, v in records) == sorted(
        ticker.sent)
