"""Faults the JDBC sink must ride out on the real stack. Poison records on the ticks topic go to the
dead-letter topic with the reason in their headers while every good tick around them lands; and ticks
produced while PostgreSQL is down land once it is back, the connector RUNNING and every service healthy
again without anybody's help.
"""

from __future__ import annotations

import json
import time
import uuid

import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.serialization import MessageField, SerializationContext

from control.settings import PROJECT_ROOT
from producer.registry import registry_client, value_serializer
from stack.connector import load_connector, wait_running
from tests.conftest import StackHandle, run_stack_cli

pytestmark = pytest.mark.stack

TICK_SCHEMA = (PROJECT_ROOT / "schemas" / "crypto_tick.avsc").read_text()
POISON = [
    b"not avro at all",                              # no Confluent framing
    b"\x00\x7f\xff\xff\xff" + b"\x02\x04",           # framing, but a schema id the registry never issued
    b"",                                             # empty value
]


def good_tick(symbol: str, n: int) -> dict:
    return {"symbol": symbol, "price": 100.0 + n, "event_time": 1_764_010_800_000 + n * 1000, "volume": 1.0,
            "feed": "REPLAY", "produced_at": int(time.time() * 1000), "producer_id": "test_sink_faults",
            "sequence": n}


def dead_letters(stack: StackHandle, marker: bytes, expected: int, timeout: float = 90) -> list:
    """Records on the dead-letter topic whose key is `marker`."""
    consumer = Consumer({"bootstrap.servers": stack.bootstrap_servers, "group.id": f"dlq-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([stack.settings["TICKS_DLQ_TOPIC"]])
    found, deadline = [], time.monotonic() + timeout
    try:
        while len(found) < expected and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and not message.error() and message.key() == marker:
                found.append(message)
    finally:
        consumer.close()
    return found


@pytest.fixture(scope="module")
def poisoned(stack: StackHandle) -> dict:
    """Good, poison, good, poison, ... on the ticks topic, all under one symbol key."""
    topic = stack.settings["TICKS_TOPIC"]
    symbol = f"POISON{uuid.uuid4().hex[:6].upper()}-USD"
    serialize = value_serializer(registry_client(stack.registry_url), TICK_SCHEMA)
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "enable.idempotence": True})
    good = [serialize(good_tick(symbol, n), SerializationContext(topic, MessageField.VALUE))
            for n in range(len(POISON) + 1)]
    for good_value, poison in zip(good, POISON, strict=False):  # good, poison, ..., then the last good
        producer.produce(topic, key=symbol.encode(), value=good_value)
        producer.produce(topic, key=symbol.encode(), value=poison)
    producer.produce(topic, key=symbol.encode(), value=good[-1])
    assert producer.flush(30) == 0
    return {"symbol": symbol, "good": len(good)}


def test_good_ticks_around_poison_records_all_land(stack: StackHandle, poisoned: dict) -> None:
    assert wait_for_rows(stack, poisoned["symbol"], poisoned["good"], timeout=120) == poisoned["good"]


def test_poison_records_go_to_the_dead_letter_topic_with_the_reason(stack: StackHandle, poisoned: dict) -> None:
    letters = dead_letters(stack, poisoned["symbol"].encode(), len(POISON))
    assert sorted(m.value() or b"" for m in letters) == sorted(POISON)
    for message in letters:
        headers = {k: (v or b"").decode(errors="replace") for k, v in message.headers() or []}
        assert headers["__connect.errors.topic"] == stack.settings["TICKS_TOPIC"]
        assert headers["__connect.errors.stage"] == "VALUE_CONVERTER"
        assert headers["__connect.errors.exception.class.name"], json.dumps(headers)


def test_the_connector_keeps_running_after_poison(stack: StackHandle, poisoned: dict) -> None:
    status = wait_running(stack.connect_api, load_connector()["name"], timeout=30)
    assert {t["state"] for t in status["tasks"]} == {"RUNNING"}


def count_rows(stack: StackHandle, symbol: str) -> int:
    with psycopg.connect(stack.pg_dsn(), connect_timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM crypto_prices WHERE symbol = %s", (symbol,)).fetchone()[0]


def wait_for_rows(stack: StackHandle, symbol: str, expected: int, timeout: float) -> int:
    deadline, rows = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        rows = count_rows(stack, symbol)
        if rows >= expected:
            break
        time.sleep(1)
    return rows


def test_ticks_produced_while_postgres_is_down_land_when_it_is_back(stack: StackHandle) -> None:
    topic, connector = stack.settings["TICKS_TOPIC"], load_connector()["name"]
    symbol = f"OUTAGE{uuid.uuid4().hex[:6].upper()}-USD"
    serialize = value_serializer(registry_client(stack.registry_url), TICK_SCHEMA)
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "enable.idempotence": True})

    def produce(first: int, count: int) -> None:
        for n in range(first, first + count):
            producer.produce(topic, key=symbol.encode(),
                             value=serialize(good_tick(symbol, n), SerializationContext(topic, MessageField.VALUE)))
        assert producer.flush(30) == 0

    produce(0, 3)
    assert wait_for_rows(stack, symbol, 3, timeout=60) == 3
    stack.stop_postgres()
    try:
        produce(3, 5)
        time.sleep(20)  # the sink meets the outage: its writes fail and are retried
    finally:
        stack.start_postgres()
    assert wait_for_rows(stack, symbol, 8, timeout=180) == 8
    status = wait_running(stack.connect_api, connector, timeout=30)
    assert {t["state"] for t in status["tasks"]} == {"RUNNING"}
    assert stack_recovers(stack, timeout=180), "the stack did not report every service healthy again"


def stack_recovers(stack: StackHandle, timeout: float) -> bool:
    """`stack status` exits 0 again: the registry, whose storage is the same PostgreSQL, replaces its
    dead pooled connections by itself (about 30 s after the database is back, measured)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run_stack_cli("status", env=stack.env(), timeout=60).returncode == 0:
            return True
        time.sleep(5)
    return False
