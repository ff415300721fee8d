"""Faults the sink must ride out on the real stack, with nobody's help:

- poison records (no Avro framing, an unknown schema id, an empty value, a real schema id followed by an
  Avro body cut short) go to the dead-letter topic with the reason in their headers, while every good tick
  around them lands and the supervisor restarts nothing;
- the schema registry stopped for 60 s while ticks stream, and Connect restarted while it is down
  (its schema cache empty): the ticks wait and then land, once each, and none is dead-lettered;
- the registry down for longer than the converter's outage budget (shortened here from 10 minutes to 15 s):
  the task FAILS loudly, its trace and `stack status` say why, nothing is dead-lettered, and once the
  registry is back the supervisor's restart lets every tick land;
- PostgreSQL stopped for longer than the sink's retry budget, so that the task FAILS: the supervisor
  restarts it with backoff, and every tick produced meanwhile lands once the database is back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from confluent_kafka.serialization import MessageField, SerializationContext

from control.connector import connector_status, load_connector, wait_running
from control.status_flow import connector_lag
from producer.schema_registration import value_serializer
from tests.conftest import StackHandle, run_stack_cli
from tests.support import (
    TICK_SCHEMA,
    SinkWatch,
    TickProducer,
    count_rows,
    dead_letters,
    dead_letters_to_end,
    new_symbol,
    poll_until,
    query,
    supervisor_restarts,
    tick,
    wait_for_rows,
    writer_registry,
)

pytestmark = pytest.mark.stack

POISON = [
    b"not avro at all",                              # no Confluent framing
    b"\x00\x7f\xff\xff\xff" + b"\x02\x04",           # framing, but a schema id the registry never issued
    b"",                                             # empty value
]
CONNECTOR = load_connector()["name"]


def truncated_tick(stack: StackHandle, symbol: str) -> bytes:
    """A real tick's record (magic byte, a content id the registry issued) with its Avro body cut short:
    Avro's decoder fails with an EOFException, an IOException that is the record's fault, not an outage."""
    serialize = value_serializer(writer_registry(stack), TICK_SCHEMA)
    whole = serialize(tick(symbol, 99), SerializationContext(stack.settings["TICKS_TOPIC"], MessageField.VALUE))
    return whole[:5 + (len(whole) - 5) // 2]


@pytest.fixture(scope="module")
def poisoned(stack: StackHandle) -> dict:
    """Good, poison, good, poison, ... on the ticks topic, all under one symbol key; returns once the
    poison has been consumed (it is on the dead-letter topic)."""
    symbol = new_symbol("POISON")
    wait_running(stack.connect_api, CONNECTOR)
    producer = TickProducer(stack)
    poison = [*POISON, truncated_tick(stack, symbol)]
    good = [tick(symbol, n) for n in range(len(poison) + 1)]
    with SinkWatch(stack, CONNECTOR) as watch:  # from the first record until everything is through
        for good_tick, record in zip(good, poison, strict=False):
            producer.send([good_tick])
            producer.send_raw(symbol.encode(), record)
        producer.send([good[-1]])
        letters = dead_letters(stack, symbol.encode(), len(poison))
        landed = wait_for_rows(stack, [symbol], len(good), timeout=60)
    return {"symbol": symbol, "good": good, "poison": poison, "letters": letters, "landed": landed, "watch": watch}


def test_good_ticks_around_poison_records_all_land(stack: StackHandle, poisoned: dict) -> None:
    assert poisoned["landed"] == len(poisoned["good"])


def test_poison_records_go_to_the_dead_letter_topic_with_the_reason(stack: StackHandle, poisoned: dict) -> None:
    letters = poisoned["letters"]
    assert sorted(m.value() or b"" for m in letters) == sorted(poisoned["poison"])
    for message in letters:
        headers = {k: (v or b"").decode(errors="replace") for k, v in message.headers() or []}
        assert headers["__connect.errors.topic"] == stack.settings["TICKS_TOPIC"]
        assert headers["__connect.errors.stage"] == "VALUE_CONVERTER"
        assert headers["__connect.errors.exception.class.name"]


def test_the_connector_keeps_running_through_the_poison(poisoned: dict) -> None:
    """RUNNING at every poll from the first poison record until the last good tick landed, and the
    supervisor restarted nothing in that window (a task it restarted would look RUNNING again 5 s later)."""
    assert len(poisoned["letters"]) == len(poisoned["poison"]), "the poison was not consumed yet"
    poisoned["watch"].assert_kept_running()


def test_a_truncated_body_is_dead_lettered_as_a_bad_record(poisoned: dict) -> None:
    """Not retried as if the registry were down (the task would then sit RUNNING and stuck for ever)."""
    truncated = next(m for m in poisoned["letters"] if m.value() == poisoned["poison"][-1])
    message = dict(truncated.headers())["__connect.errors.exception.message"].decode()
    assert "schema registry unavailable" not in message


class Streamer:
    """Produces one tick every `period` seconds in the background, all of one symbol."""

    def __init__(self, stack: StackHandle, symbol: str, period: float = 0.05) -> None:
        self.producer, self.symbol, self.period = TickProducer(stack), symbol, period
        self.sent: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = tick(self.symbol, len(self.sent), event_time=int(time.time() * 1000))
            self.producer.send([value])
            self.sent.append(value)
            self._stop.wait(self.period)

    def __enter__(self) -> Streamer:
        self.producer.send([tick(self.symbol, 0, price=1.0)])  # the schema id is cached before any outage
        self.sent.append({"price": 1.0})
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture(scope="module")
def registry_outage(stack: StackHandle) -> Iterator[dict]:
    symbol = new_symbol("REGOUT")
    wait_running(stack.connect_api, CONNECTOR)
    with Streamer(stack, symbol) as streamer:
        assert wait_for_rows(stack, [symbol], 1, timeout=60) >= 1  # flowing before the outage
        stack.stop_registry()
        try:  # the outage lasts 60 s (its length is what is tested), with a Connect restart in the middle
            time.sleep(20)
            stack.restart_connect()  # its converter's schema cache is gone; the registry still is too
            time.sleep(20)
            landed_before = count_rows(stack, [symbol])
            time.sleep(20)
            outage = {"registry_refused": not registry_answers(stack), "sent": len(streamer.sent),
                      "landed_20s_before": landed_before, "landed": count_rows(stack, [symbol])}
        finally:
            stack.start_registry()
        back_at = len(streamer.sent)
        poll_until(lambda: len(streamer.sent), lambda n: n >= back_at + 10, 30)  # some ticks after it, too
    yield {"symbol": symbol, "sent": len(streamer.sent), "outage": outage}


def registry_answers(stack: StackHandle) -> bool:
    try:
        return requests.get(f"{stack.registry_url}/subjects", timeout=5).status_code < 500
    except requests.RequestException:
        return False


def test_the_sink_waited_for_the_registry_during_the_outage(registry_outage: dict) -> None:
    """The outage was real and the sink hit it: the registry refused connections, and for the last 20 s
    of it (Connect restarted, its schema cache empty) not one tick landed while hundreds were produced."""
    outage = registry_outage["outage"]
    assert outage["registry_refused"], "the registry still answered during the outage"
    assert outage["landed"] == outage["landed_20s_before"], outage
    assert outage["sent"] - outage["landed"] >= 200, outage


def test_a_registry_outage_sends_no_tick_to_the_dead_letter_topic(stack: StackHandle, registry_outage: dict) -> None:
    wait_for_rows(stack, [registry_outage["symbol"]], registry_outage["sent"], timeout=180)
    lag = poll_until(lambda: connector_lag(stack.settings.kafka_config(), f"connect-{CONNECTOR}",
                                           stack.settings["TICKS_TOPIC"]).records, lambda n: n == 0, 120)
    assert lag == 0, "the sink has not consumed (and committed) the whole ticks topic"
    assert dead_letters_to_end(stack, registry_outage["symbol"].encode()) == []


def test_every_tick_streamed_through_a_registry_outage_lands_once(stack: StackHandle, registry_outage: dict) -> None:
    landed = wait_for_rows(stack, [registry_outage["symbol"]], registry_outage["sent"], timeout=180)
    assert landed == registry_outage["sent"] > 500
    assert query(stack, "SELECT count(DISTINCT sequence) FROM crypto_prices WHERE symbol = %s",
                 registry_outage["symbol"])[0][0] == registry_outage["sent"]


OUTAGE_BUDGET_MS = 15_000


def failed_traces(stack: StackHandle) -> list[str]:
    status = connector_status(stack.connect_api, CONNECTOR) or {"tasks": []}
    return [t.get("trace", "") for t in status["tasks"] if t["state"] == "FAILED"]


@pytest.fixture(scope="module")
def registry_outage_beyond_the_budget(stack: StackHandle) -> Iterator[dict]:
    """The connector with a 15 s outage budget; a schema Connect has never fetched (new content, so a new
    id, registered while the registry is up); the registry stopped; ticks written with that schema."""
    symbol = new_symbol("REGLONG")
    definition = load_connector()
    config = {**definition["config"], "value.converter.registry.outage.timeout.ms": str(OUTAGE_BUDGET_MS)}
    api = stack.connect_api
    assert api.put(f"/connectors/{CONNECTOR}/config", json=config, timeout=60).status_code == 200
    wait_running(api, CONNECTOR)
    schema = json.loads(TICK_SCHEMA)
    schema["doc"] += f" (test variant {symbol})"  # new content: an id no converter has fetched yet
    producer = TickProducer(stack, schema=json.dumps(schema))
    ticks = [tick(symbol, n) for n in range(5)]
    context = SerializationContext(stack.settings["TICKS_TOPIC"], MessageField.VALUE)
    producer._serialize(ticks[0], context)  # registers it now and keeps its id: sending needs no registry
    restarts_before = supervisor_restarts(stack)
    stack.stop_registry()
    try:
        producer.send(ticks)
        trace = poll_until(lambda: "\n".join(failed_traces(stack)), lambda t: "schema registry unavailable" in t,
                           timeout=120, interval=1)
        shown = poll_until(lambda: run_stack_cli("status", env=stack.env(), timeout=60).stdout,
                           lambda out: "FAILED: " in out and "schema registry unavailable" in out,
                           timeout=120, interval=1)
    finally:
        stack.start_registry()
        assert api.put(f"/connectors/{CONNECTOR}/config", json=definition["config"], timeout=60).status_code == 200
    landed = wait_for_rows(stack, [symbol], len(ticks), timeout=240)
    yield {"symbol": symbol, "trace": trace, "status": shown, "landed": landed,
           "restarts": supervisor_restarts(stack) - restarts_before}


def test_a_registry_outage_beyond_the_budget_fails_the_task_saying_why(registry_outage_beyond_the_budget: dict) -> None:
    trace = registry_outage_beyond_the_budget["trace"]
    assert "RegistryOutageTooLong" in trace and "schema registry unavailable for 1" in trace, trace[:2000]
    status = registry_outage_beyond_the_budget["status"]
    assert any("FAILED: " in line and "schema registry unavailable" in line for line in status.splitlines()), status


def test_after_a_long_registry_outage_nothing_is_lost_or_dead_lettered(stack: StackHandle,
                                                                       registry_outage_beyond_the_budget: dict) -> None:
    assert registry_outage_beyond_the_budget["landed"] == 5
    assert registry_outage_beyond_the_budget["restarts"] >= 1
    assert dead_letters_to_end(stack, registry_outage_beyond_the_budget["symbol"].encode()) == []
    status = wait_running(stack.connect_api, CONNECTOR, timeout=120)
    assert {t["state"] for t in status["tasks"]} == {"RUNNING"}


@pytest.fixture(scope="module")
def long_postgres_outage(stack: StackHandle) -> Iterator[dict]:
    """PostgreSQL away until the sink has exhausted its retries and its task FAILED (seen by the
    supervisor, which then restarts it with backoff), then back."""
    symbol = new_symbol("PGOUT")
    wait_running(stack.connect_api, CONNECTOR)
    restarts_before = supervisor_restarts(stack)
    with Streamer(stack, symbol, period=0.2) as streamer:
        assert wait_for_rows(stack, [symbol], 1, timeout=60) >= 1
        stack.stop_postgres()
        try:
            restarts = poll_until(lambda: supervisor_restarts(stack), lambda n: n > restarts_before,
                                  timeout=300, interval=2)
        finally:
            stack.start_postgres()
        back_at = len(streamer.sent)
        poll_until(lambda: len(streamer.sent), lambda n: n >= back_at + 10, 30)  # some ticks after it, too
    yield {"symbol": symbol, "sent": len(streamer.sent), "restarts": restarts - restarts_before}


def test_a_failed_task_is_restarted_by_the_supervisor(long_postgres_outage: dict) -> None:
    assert long_postgres_outage["restarts"] >= 1, "the outage did not outlast the sink's retry budget"


def test_ticks_produced_through_a_long_postgres_outage_all_land(stack: StackHandle, long_postgres_outage: dict) -> None:
    expected = long_postgres_outage["sent"]
    assert wait_for_rows(stack, [long_postgres_outage["symbol"]], expected, timeout=300) == expected
    status = wait_running(stack.connect_api, CONNECTOR, timeout=120)
    assert {t["state"] for t in status["tasks"]} == {"RUNNING"}


def test_every_service_reports_healthy_again_after_the_outage(stack: StackHandle, long_postgres_outage: dict) -> None:
    """The registry, stored in that PostgreSQL, replaces its dead pooled connections by itself."""
    result = poll_until(lambda: run_stack_cli("status", env=stack.env(), timeout=60), lambda r: r.returncode == 0,
                        timeout=180, interval=5)
    assert result.returncode == 0, result.stdout
