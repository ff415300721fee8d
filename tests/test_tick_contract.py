"""The ticks topic is a public contract: any client with the schema can write to it. Records that are
schema-valid but break the tick contract, written with a plain confluent-kafka AvroSerializer (not our
producer, which refuses them itself), never reach crypto_prices or any candle: Connect's TickContract
transform sends each to the dead-letter topic with the reason in its headers, and the good tick written
right after it lands within seconds while the connector keeps RUNNING and the supervisor restarts nothing.
The limits come from schemas/tick_contract.json (tests/test_contract_definition.py checks that the producer,
the transform's config and the database agree on it); the cases here probe each limit from both sides."""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Iterator

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema

from control.connector import load_connector, wait_running
from tests.conftest import StackHandle
from tests.support import (
    TICK_SCHEMA,
    SinkWatch,
    TickProducer,
    dead_letters,
    dlq_reason,
    new_symbol,
    now_ms,
    poll_until,
    query,
    tick,
    wait_for_rows,
    wait_until,
    writer_registry,
)

pytestmark = pytest.mark.stack

YEAR_2200_MS = 7_258_118_400_000
BAD_TICKS = {  # case: (fields that break the contract, the reason the dead letter must carry)
    "price NaN": ({"price": math.nan}, "bad_price"),
    "price +inf": ({"price": math.inf}, "bad_price"),
    "price -5": ({"price": -5.0}, "bad_price"),
    "price 0": ({"price": 0.0}, "bad_price"),
    "volume NaN": ({"volume": math.nan}, "bad_volume"),
    "volume -3": ({"volume": -3.0}, "bad_volume"),
    "event time in 2200": ({"event_time": YEAR_2200_MS}, "future_time"),
    "event time 10 min ahead": ({"event_time": "+600s"}, "future_time"),
    "event time in 1970": ({"event_time": 1_000}, "implausible_time"),
    "event time 2008-12-31": ({"event_time": 1_230_681_600_000}, "implausible_time"),
    "symbol 33 characters": ({"symbol": "{key}".ljust(33, "X")}, "bad_symbol"),
    "symbol with a newline": ({"symbol": "{key}\n"}, "bad_symbol"),
    # Values PostgreSQL cannot store: the insert would fail the sink's whole batch.
    "NUL in the symbol": ({"symbol": "{key}\x00"}, "bad_symbol"),
    "NUL in producer_id": ({"producer_id": "host\x00:1"}, "unstorable_value"),
    "produced_at in the year 318857": ({"produced_at": 10**16}, "unstorable_value"),
    # The stated ranges (schemas/tick_contract.json), just outside each end.
    "price 5e-324 (subnormal)": ({"price": 5e-324}, "bad_price"),
    "price just below 1e-9": ({"price": math.nextafter(1e-9, 0)}, "bad_price"),
    "price just above 1e9": ({"price": math.nextafter(1e9, math.inf)}, "bad_price"),
    "volume just above 1e15": ({"volume": math.nextafter(1e15, math.inf)}, "bad_volume"),
    "two volumes of 1e308 in one candle": ({"volume": 1e308}, "bad_volume"),  # their sum would overflow
    "symbol in lower case": ({"symbol": "{lower}"}, "bad_symbol"),
    "symbol starting with a dash": ({"symbol": "-{key}"}, "bad_symbol"),
    "symbol with a space": ({"symbol": "{key} X"}, "bad_symbol"),
    "symbol with a non-ASCII letter": ({"symbol": "{key}\u00c9"}, "bad_symbol"),
}
COPIES = {"two volumes of 1e308 in one candle": 2}  # how many bad ticks the case sends (1 ms apart)
# Ticks exactly at the contract's limits: they land.
EDGE_TICKS = {
    "price 1e-9": {"price": 1e-9},
    "price 1e9": {"price": 1e9},
    "volume 0": {"volume": 0.0},
    "volume 1e15, twice in one candle": {"volume": 1e15},
    "symbol of 32 characters": {"symbol": "{key32}"},
    "symbol with . = ^": {"symbol": "{key}.B=X^"},
}
UNKNOWN_FEED = "MOON"


def fill(symbol: str, key: str) -> str:
    return symbol.replace("{key}", key).replace("{lower}", key.lower()).replace("{key32}", key.ljust(32, "9"))


def framed_with_string_feed(stack: StackHandle, value: dict) -> bytes:
    """Raw Confluent-framed Avro of the tick schema with `feed` widened to a string (our serializer's enum
    would refuse an unknown feed): registered under a subject of its own, decoded by Connect by its id."""
    schema = json.loads(TICK_SCHEMA)
    for field in schema["fields"]:
        if field["name"] == "feed":
            field["type"], field["default"] = "string", "STREAM"
    schema["name"] = "CryptoTickLooseFeed"
    schema_id = writer_registry(stack).register_schema("tests-loose-feed-value",
                                                                    Schema(json.dumps(schema), "AVRO"))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), value)
    return b"\x00" + struct.pack(">I", schema_id) + body.getvalue()


@pytest.fixture(scope="module")
def written(stack: StackHandle) -> dict:
    """For every case: its bad tick, then a good tick, under one key; database size before and after."""
    connector = load_connector()["name"]
    wait_running(stack.connect_api, connector)
    size_before = query(stack, "SELECT pg_database_size(current_database())")[0][0]
    producer = TickProducer(stack)
    cases = {}
    with SinkWatch(stack, connector) as watch:  # from the first bad tick until the last edge landed
        for n, (case, (fields, reason)) in enumerate(BAD_TICKS.items()):
            key = new_symbol("BAD")
            bad = tick(key, n, **fields)
            bad["symbol"] = fill(bad["symbol"], key)  # bad symbols are unique per run too
            if bad["event_time"] == "+600s":
                bad["event_time"] = now_ms() + 600_000
            good = tick(key, n + 1000)
            copies = [dict(bad, price=bad["price"] + i, event_time=bad["event_time"] + i)
                      for i in range(COPIES.get(case, 1))]
            producer.send(copies)  # keyed by its own symbol, as every producer keys ticks
            cases[case] = {"key": key, "bad": bad, "good": good, "reason": reason, "copies": len(copies)}
        key = new_symbol("BADFEED")  # a feed the schema's enum does not name, written as raw Avro
        bad, good = tick(key, 0, feed=UNKNOWN_FEED), tick(key, 1)
        producer.send_raw(key.encode(), framed_with_string_feed(stack, bad))
        cases["unknown feed"] = {"key": key, "bad": bad, "good": good, "reason": "bad_feed", "copies": 1}
        producer.send([c["good"] for c in cases.values()])
        landed = wait_for_rows(stack, [c["key"] for c in cases.values()], len(cases), timeout=60)
        edges = {}
        for n, (case, fields) in enumerate(EDGE_TICKS.items()):
            key = new_symbol("EDGE")
            edge = tick(key, n, **fields)
            edge["symbol"] = fill(edge["symbol"], key)
            edges[case] = [edge, dict(edge, event_time=edge["event_time"] + 1)]  # two in one candle
            producer.send(edges[case])
        edge_symbols = [e[0]["symbol"] for e in edges.values()]
        edges_landed = wait_for_rows(stack, edge_symbols, 2 * len(edges), timeout=60)
    size_after = query(stack, "SELECT pg_database_size(current_database())")[0][0]
    return {"cases": cases, "landed": landed, "growth": size_after - size_before, "edges": edges,
            "edges_landed": edges_landed, "watch": watch}


ALL_CASES = [*BAD_TICKS, "unknown feed"]


@pytest.mark.parametrize("case", ALL_CASES)
def test_a_bad_tick_goes_to_the_dead_letter_topic_with_its_reason(stack: StackHandle, written: dict,
                                                                  case: str) -> None:
    entry = written["cases"][case]
    letters = dead_letters(stack, entry["bad"]["symbol"].encode(), entry["copies"])
    assert len(letters) == entry["copies"]
    for letter in letters:
        assert dlq_reason(letter) == entry["reason"]
        headers = dict(letter.headers())
        assert headers["__connect.errors.stage"] == b"TRANSFORMATION"
        assert headers["__connect.errors.topic"].decode() == stack.settings["TICKS_TOPIC"]


@pytest.mark.parametrize("case", ALL_CASES)
def test_a_bad_tick_reaches_neither_the_table_nor_any_candle(stack: StackHandle, written: dict, case: str) -> None:
    bad = dict(written["cases"][case]["bad"])
    bad["symbol"] = bad["symbol"].replace("\x00", "")  # PostgreSQL cannot even be asked about a NUL
    assert query(stack, "SELECT count(*) FROM crypto_prices WHERE symbol = %s AND price IS NOT DISTINCT FROM %s",
                 bad["symbol"], bad["price"])[0][0] == 0
    good = written["cases"][case]["good"]
    candles = query(stack, "SELECT resolution, open, high, low, close, volume, tick_count FROM candle_rollup r "
                           "JOIN LATERAL (SELECT first[4] AS open, last[4] AS close) p ON true WHERE symbol = %s",
                    bad["symbol"])
    if bad["symbol"] != good["symbol"]:
        assert candles == []
    else:  # the good tick's own candle in each interval, untouched by the bad one
        price = good["price"]
        intervals = ("1m", "5m", "15m", "1h", "1d")
        assert sorted(candles) == sorted((r, price, price, price, price, 1.0, 1) for r in intervals)


def test_the_good_tick_after_each_bad_one_lands(stack: StackHandle, written: dict) -> None:
    assert written["landed"] == len(ALL_CASES)
    rows = query(stack, "SELECT symbol, price FROM crypto_prices WHERE symbol = ANY(%s)",
                 [c["key"] for c in written["cases"].values()])
    assert sorted(rows) == sorted((c["good"]["symbol"], c["good"]["price"]) for c in written["cases"].values())


def test_far_dated_ticks_do_not_grow_the_database(written: dict) -> None:
    """A tick in 2200 used to fill the gap-filled calendar with every minute up to it (gigabytes)."""
    assert written["growth"] < 5 * 1024 * 1024


def test_the_connector_keeps_running_and_the_supervisor_restarts_nothing(written: dict) -> None:
    """RUNNING at every poll from the first bad tick until the last edge tick landed, and no restart by the
    supervisor in that window (it brings a FAILED task back within seconds: one snapshot would miss it)."""
    assert written["edges_landed"] == 2 * len(EDGE_TICKS)
    written["watch"].assert_kept_running()


@pytest.mark.parametrize("case", list(EDGE_TICKS))
def test_a_tick_at_the_limits_of_the_contract_lands_with_its_candles(stack: StackHandle, written: dict,
                                                                      case: str) -> None:
    ticks = written["edges"][case]
    rows = query(stack, "SELECT price, volume FROM crypto_prices WHERE symbol = %s ORDER BY price", ticks[0]["symbol"])
    assert rows == [(t["price"], t["volume"]) for t in ticks]
    volume = query(stack, "SELECT volume, tick_count FROM view_crypto_candles_1d WHERE symbol = %s", ticks[0]["symbol"])
    assert volume == [(sum(t["volume"] for t in ticks), 2)]


@pytest.fixture(scope="module")
def past_a_looser_transform(stack: StackHandle, written: dict) -> Iterator[dict]:
    """The database's own line of defence, through the real sink: the transform's price floor lowered to 0
    (as if the contract had been changed in one place first), then a tick priced 1e-12 and a good tick
    under one key. The database sets the first aside in crypto_prices_rejected instead of failing the
    sink's batch, which used to crash-loop the task."""
    definition = load_connector()
    name, api = definition["name"], stack.connect_api
    looser = {**definition["config"], "transforms.contract.price.min": "0"}
    assert api.put(f"/connectors/{name}/config", json=looser, timeout=60).status_code == 200
    try:
        def tasks_have_the_looser_config() -> bool:
            answer = api.get(f"/connectors/{name}/tasks", timeout=10)
            if answer.status_code != 200:  # 409 while the group rebalances after the config change
                return False
            tasks = answer.json()
            return bool(tasks) and all(t["config"].get("transforms.contract.price.min") == "0" for t in tasks)

        wait_until(tasks_have_the_looser_config, 60, "the tasks' configs with the looser transform")
        wait_running(api, name)
        key = new_symbol("SETASIDE")
        bad, good = tick(key, 0, price=1e-12), tick(key, 1)
        with SinkWatch(stack, name) as watch:
            TickProducer(stack).send([bad, good])
            landed = wait_for_rows(stack, [key], 1, timeout=60)
            rejected = poll_until(lambda: query(stack, "SELECT reason, tick->>'price', __connect_topic, "
                                                       "__connect_offset FROM crypto_prices_rejected "
                                                       "WHERE tick->>'symbol' = %s", key), bool, timeout=30)
        yield {"key": key, "landed": landed, "rejected": rejected, "watch": watch}
    finally:
        assert api.put(f"/connectors/{name}/config", json=definition["config"], timeout=60).status_code == 200
        wait_running(api, name)


def test_what_the_database_still_refuses_is_set_aside_with_its_reason(stack: StackHandle,
                                                                      past_a_looser_transform: dict) -> None:
    [(reason, price, topic, offset)] = past_a_looser_transform["rejected"]
    assert (reason, float(price), topic) == ("bad_price", 1e-12, stack.settings["TICKS_TOPIC"])
    assert offset is not None
    assert past_a_looser_transform["landed"] == 1  # the good tick right after it, same key, same batch or next
    assert query(stack, "SELECT count(*) FROM crypto_prices WHERE symbol = %s AND price < 1e-9",
                 past_a_looser_transform["key"])[0][0] == 0


def test_a_tick_the_database_refuses_crashes_nothing(past_a_looser_transform: dict) -> None:
    """RUNNING at every poll while the refused tick and the good one went through, no supervisor restart."""
    past_a_looser_transform["watch"].assert_kept_running()
