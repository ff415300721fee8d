"""The ticks topic is a public contract: any client with the schema can write to it. Records that are
schema-valid but break the tick contract, written with a plain confluent-kafka AvroSerializer (not our
producer, which refuses them itself), never reach crypto_prices or any candle: Connect's TickContract
transform sends each to the dead-letter topic with the reason in its headers, and the good tick written
right after it lands within seconds while the connector keeps RUNNING."""

from __future__ import annotations

import math

import pytest

from control.connector import load_connector, wait_running
from tests.conftest import StackHandle
from tests.support import TickProducer, dead_letters, dlq_reason, new_symbol, now_ms, query, tick, wait_for_rows

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
}


@pytest.fixture(scope="module")
def written(stack: StackHandle) -> dict:
    """For every case: its bad tick, then a good tick, under one key; database size before and after."""
    wait_running(stack.connect_api, load_connector()["name"])
    size_before = query(stack, "SELECT pg_database_size(current_database())")[0][0]
    producer = TickProducer(stack)
    cases = {}
    for n, (case, (fields, reason)) in enumerate(BAD_TICKS.items()):
        key = new_symbol("BAD")
        bad = tick(key, n, **fields)
        bad["symbol"] = bad["symbol"].replace("{key}", key)  # bad symbols are unique per run too
        if bad["event_time"] == "+600s":
            bad["event_time"] = now_ms() + 600_000
        good = tick(key, n + 1000)
        producer.send([bad])  # keyed by its own symbol, as every producer keys ticks
        cases[case] = {"key": key, "bad": bad, "good": good, "reason": reason}
    producer.send([c["good"] for c in cases.values()])
    landed = wait_for_rows(stack, [c["key"] for c in cases.values()], len(cases), timeout=60)
    size_after = query(stack, "SELECT pg_database_size(current_database())")[0][0]
    return {"cases": cases, "landed": landed, "growth": size_after - size_before}


@pytest.mark.parametrize("case", list(BAD_TICKS))
def test_a_bad_tick_goes_to_the_dead_letter_topic_with_its_reason(stack: StackHandle, written: dict,
                                                                  case: str) -> None:
    entry = written["cases"][case]
    letters = dead_letters(stack, entry["bad"]["symbol"].encode(), 1)
    assert len(letters) == 1
    assert dlq_reason(letters[0]) == entry["reason"]
    headers = dict(letters[0].headers())
    assert headers["__connect.errors.stage"] == b"TRANSFORMATION"
    assert headers["__connect.errors.topic"].decode() == stack.settings["TICKS_TOPIC"]


@pytest.mark.parametrize("case", list(BAD_TICKS))
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
    assert written["landed"] == len(BAD_TICKS)
    rows = query(stack, "SELECT symbol, price FROM crypto_prices WHERE symbol = ANY(%s)",
                 [c["key"] for c in written["cases"].values()])
    assert sorted(rows) == sorted((c["good"]["symbol"], c["good"]["price"]) for c in written["cases"].values())


def test_far_dated_ticks_do_not_grow_the_database(written: dict) -> None:
    """A tick in 2200 used to fill the gap-filled calendar with every minute up to it (gigabytes)."""
    assert written["growth"] < 5 * 1024 * 1024


def test_the_connector_keeps_running(stack: StackHandle, written: dict) -> None:
    status = wait_running(stack.connect_api, load_connector()["name"], timeout=30)
    assert {t["state"] for t in status["tasks"]} == {"RUNNING"}
    assert status["connector"]["state"] == "RUNNING"
