"""What tests do with a running stack, written once: produce ticks as any client would (a plain
confluent-kafka AvroSerializer, not our producer), read rows and candles, poll until a condition holds,
read the dead-letter topic."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

from control.dlq import dead_letter
from control.kafka_setup import writable_topic
from core.files import read_json
from core.settings import PROJECT_ROOT
from producer.schema_registration import registry_client, value_serializer
from tests.conftest import StackHandle

TICK_SCHEMA = (PROJECT_ROOT / "schemas" / "crypto_tick.avsc").read_text()
T = TypeVar("T")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_symbol(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6].upper()}-USD"


def tick(key: str, n: int, **fields: Any) -> dict[str, Any]:
    """A valid tick (schemas/crypto_tick.avsc) of symbol `key` whose price and time differ per n; any
    field can be overridden (the symbol too)."""
    value = {"symbol": key, "price": 100.0 + n, "event_time": now_ms() - 60_000 + n, "volume": 1.0,
             "feed": "REPLAY", "produced_at": now_ms(), "producer_id": "tests", "sequence": n}
    value.update(fields)
    return value


def writer_registry(stack: StackHandle) -> SchemaRegistryClient:
    """The registry as its `producer` user: registering a schema is a write (docs/registry-auth.md)."""
    return registry_client(stack.registry_url, stack.settings.registry_auth("producer"))


class TickProducer:
    """Any client with the schema: confluent-kafka's AvroSerializer against the registry, key = symbol."""

    def __init__(self, stack: StackHandle, schema: str = TICK_SCHEMA, topic: str | None = None) -> None:
        self.topic = topic or stack.settings["TICKS_TOPIC"]
        if self.topic != stack.settings["TICKS_TOPIC"]:
            writable_topic(stack.settings, self.topic)
        self._serialize = value_serializer(writer_registry(stack), schema)
        self._producer = Producer({**stack.settings.kafka_config("producer"), "enable.idempotence": True})

    def send(self, ticks: Iterable[dict[str, Any]]) -> int:
        sent = 0
        for value in ticks:
            self.send_raw(value["symbol"].encode(),
                          self._serialize(value, SerializationContext(self.topic, MessageField.VALUE)))
            sent += 1
        self.flush()
        return sent

    def send_raw(self, key: bytes, value: bytes | None) -> None:
        self._producer.produce(self.topic, key=key, value=value)

    def flush(self) -> None:
        assert self._producer.flush(60) == 0, "records left unsent"


def query(stack: StackHandle, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(stack.pg_dsn(), connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def poll_until(check: Callable[[], T], done: Callable[[T], bool], timeout: float, interval: float = 0.5) -> T:
    """Call `check` until `done(result)` or the timeout; returns the last result either way."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if done(result) or time.monotonic() >= deadline:
            return result
        time.sleep(interval)


def wait_until(check: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll `check` until it returns something true; fail naming `what` at the timeout."""
    if not poll_until(check, bool, timeout, interval):
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def count_rows(stack: StackHandle, symbols: Sequence[str]) -> int:
    return query(stack, "SELECT count(*) FROM crypto_prices WHERE symbol = ANY(%s)", list(symbols))[0][0]


def wait_for_rows(stack: StackHandle, symbols: Sequence[str], expected: int, timeout: float = 120) -> int:
    """Rows of these symbols once there are at least `expected` (or whatever there are at the timeout)."""
    return poll_until(lambda: count_rows(stack, symbols), lambda n: n >= expected, timeout)


def consume(stack: StackHandle, topic: str, wanted: Callable[[Message], bool], expected: int,
            timeout: float = 60, settle: float = 2.0) -> list[Message]:
    """Records of `topic` (from the beginning) that `wanted` accepts: until `expected` arrived, then `settle`
    seconds more so that anything beyond `expected` (a duplicate) shows up too."""
    consumer = Consumer({**stack.settings.kafka_config(), "group.id": f"tests-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    found: list[Message] = []
    deadline, settle_until = time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline and (settle_until is None or time.monotonic() < settle_until):
            message = consumer.poll(0.5)
            if message is None or message.error() or not wanted(message):
                continue
            found.append(message)
            if len(found) >= expected and settle_until is None:
                settle_until = time.monotonic() + settle
    finally:
        consumer.close()
    return found


def end_offsets(stack: StackHandle, topic: str) -> dict[int, int]:
    """The topic's end offset per partition: what has been produced to it so far."""
    admin = AdminClient(stack.settings.kafka_config())
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    futures = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in partitions})
    return {tp.partition: future.result(30).offset for tp, future in futures.items()}


def dead_letters(stack: StackHandle, key: bytes, expected: int, timeout: float = 90) -> list[Message]:
    """Records on the dead-letter topic whose key is `key`."""
    return consume(stack, stack.settings["TICKS_DLQ_TOPIC"], lambda m: m.key() == key, expected, timeout)


def headers(message: Message) -> dict[str, str]:
    return {k: (v or b"").decode(errors="replace") for k, v in message.headers() or []}


def dlq_reason(message: Message) -> str:
    """The dead letter's reason as `scripts/dlq.sh show` counts it (control/dlq.py: DeadLetter.reason)."""
    return dead_letter(message).reason


def as_json(message: Message) -> str:
    return json.dumps(headers(message), indent=1)


def supervisor_restarts(stack: StackHandle) -> int:
    """How many times the stack's supervisor has restarted failed sink tasks (its health file)."""
    health = read_json(stack.settings.state_dir / "supervisor.json") or {}
    return int(health.get("restarts", 0))


def supervisor_checked_since(stack: StackHandle, since: float) -> bool:
    """Whether the supervisor finished a check after `since` (time.time()): it rewrites its health file after each."""
    health = read_json(stack.settings.state_dir / "supervisor.json") or {}
    return float(health.get("time", 0)) > since


class SinkWatch:
    """Proves "the sink kept running" over a window, not at one instant: from `with` to its end it polls the
    connector's status (every `interval` s) and keeps every status in which the connector or a task was not
    RUNNING; at the end it waits for one more supervisor check and takes the supervisor's restart count. The
    supervisor restarts a FAILED task within its check interval, so a failure can come and go between two
    snapshots; the count cannot (tests/README.md)."""

    def __init__(self, stack: StackHandle, connector: str, interval: float = 0.25) -> None:
        self.stack, self.connector, self.interval = stack, connector, interval
        self.lapses: list[str] = []  # each status that was not all RUNNING, as "<seconds into the window>s: <states>"
        self.polls = 0
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = self.stack.connect_api.get(f"/connectors/{self.connector}/status", timeout=10)
                status = answer.json() if answer.status_code == 200 else {}
            except (requests.RequestException, ValueError) as exc:
                status = {"error": type(exc).__name__}
            self.polls += 1
            states = [status["connector"]["state"], *(t["state"] for t in status.get("tasks", []))] \
                if "connector" in status else []
            if len(states) < 2 or set(states) != {"RUNNING"}:
                self.lapses.append(f"{time.monotonic() - self._started:.1f}s: {states or status}")
            self._stop.wait(self.interval)

    def __enter__(self) -> SinkWatch:
        self._restarts_before = supervisor_restarts(self.stack)
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        ended = time.time()
        try:  # keep watching until the supervisor has looked once more: a failure near the end is counted too
            wait_until(lambda: supervisor_checked_since(self.stack, ended), 120, "a supervisor check after the window")
        finally:
            self._stop.set()
            self._thread.join(30)
        self.restarts = supervisor_restarts(self.stack) - self._restarts_before

    def assert_kept_running(self) -> None:
        assert self.polls >= 4, f"the window was too short to say anything ({self.polls} status polls)"
        assert self.lapses == [], f"not RUNNING at {len(self.lapses)} of {self.polls} polls: {self.lapses[:10]}"
        assert self.restarts == 0, f"the supervisor restarted failed tasks {self.restarts} time(s) in the window"


def dead_letters_to_end(stack: StackHandle, key: bytes, timeout: float = 60) -> list[Message]:
    """Every record on the dead-letter topic whose key is `key`, read from the beginning to the end offsets it
    has now: "none" means none was written before this call, not "none arrived within a few seconds"."""
    topic = stack.settings["TICKS_DLQ_TOPIC"]
    consumer = Consumer({**stack.settings.kafka_config(), "group.id": f"tests-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        ends = {}
        for partition in end_offsets(stack, topic):
            start, end = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
            if end > start:
                ends[partition] = end
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        while ends:
            assert time.monotonic() < deadline, f"{topic} not read to its end offsets {ends} in {timeout:.0f}s"
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            if message.offset() < ends.get(message.partition(), 0) and message.key() == key:
                found.append(message)
            if message.offset() + 1 >= ends.get(message.partition(), 0):
                ends.pop(message.partition(), None)
    finally:
        consumer.close()
    return found
