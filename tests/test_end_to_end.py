"""Ticks flow producer -> Kafka -> Connect -> PostgreSQL -> view_crypto_candles, on the real stack.

One replay file with several symbols over several minutes, out-of-order and equal-timestamp ticks,
produced by the real producer CLI. Ticks in = rows out, candles = OHLC computed independently with
pandas, every record on the topic decodes with confluent-kafka's AvroDeserializer, and the instants
survive a database whose TimeZone is not UTC.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from control.connector import load_connector, wait_running
from core.settings import PROJECT_ROOT
from producer.schema_registration import registry_client
from tests.conftest import StackHandle
from tests.support import consume, wait_for_rows

pytestmark = pytest.mark.stack

START_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z, minute aligned
MINUTES = 5


def make_ticks(symbols: list[str], seed: int = 7) -> list[dict]:
    """Ticks every ~2 s over MINUTES minutes, some late (out of order), some sharing a timestamp."""
    rng = random.Random(seed)
    ticks: list[dict] = []
    for symbol in symbols:
        price = rng.uniform(50, 50_000)
        for i in range(MINUTES * 30):
            price *= 1 + rng.uniform(-0.002, 0.002)
            ticks.append({"symbol": symbol, "price": round(price, 6) + i * 1e-6,
                          "event_time": START_MS + i * 2000 + rng.randint(0, 999),
                          "volume": round(rng.uniform(0, 3), 4)})
    by_symbol = {s: [t for t in ticks if t["symbol"] == s] for s in symbols}
    for rows in by_symbol.values():
        for i in range(10, len(rows), 17):  # equal timestamps: same instant as the tick before
            rows[i]["event_time"] = rows[i - 1]["event_time"]
        for i in range(5, len(rows) - 40, 23):  # late ticks: arrive 30-60 s after their time
            rows.insert(i + rng.randint(15, 30), rows.pop(i))
    # interleave symbols the way a live feed would, keeping each symbol's own order
    merged: list[dict] = []
    iters = {s: iter(rows) for s, rows in by_symbol.items()}
    while iters:
        for s in list(iters):
            try:
                merged.append(next(iters[s]))
            except StopIteration:
                del iters[s]
    return merged


def expected_candles(ticks: list[dict]) -> pd.DataFrame:
    """Independent OHLC: bucket in UTC; first/last by event time, ties broken by arrival (offset) order."""
    df = pd.DataFrame(ticks)
    df["arrival"] = range(len(df))
    df["event_time"] = pd.to_datetime(df["event_time"], unit="ms", utc=True)
    df = df.sort_values(["symbol", "event_time", "arrival"], kind="stable")
    df["bucket"] = df["event_time"].dt.floor("1min")
    out = df.groupby(["symbol", "bucket"]).agg(
        open=("price", "first"), high=("price", "max"), low=("price", "min"), close=("price", "last"),
        volume=("volume", "sum"), tick_count=("price", "size"),
    )
    return out.reset_index()


@pytest.fixture(scope="module")
def replayed(stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Produce the replay file once with the real producer, against a database set to a non-UTC zone."""
    db = stack.settings["POSTGRES_DB"]
    with psycopg.connect(stack.pg_dsn(), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {db} SET timezone TO 'Asia/Kolkata'")
    connector = load_connector()["name"]
    stack.connect_api.post(f"/connectors/{connector}/restart?includeTasks=true", timeout=30)
    wait_running(stack.connect_api, connector)

    tag = uuid.uuid4().hex[:6].upper()
    symbols = [f"E2E{tag}{i}-USD" for i in range(3)]
    ticks = make_ticks(symbols)
    replay_file: Path = tmp_path_factory.mktemp("replay") / "ticks.jsonl"
    replay_file.write_text("".join(json.dumps(t) + "\n" for t in ticks))

    result = subprocess.run(
        [sys.executable, "-m", "producer", "--source", "replay", "--file", str(replay_file),
         "--speed", "0", "--symbols", ",".join(symbols)],
        env=stack.env(), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, f"producer failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return {"symbols": symbols, "ticks": ticks, "producer_output": result.stdout + result.stderr}


def rows_for(stack: StackHandle, symbols: list[str], query: str) -> list[tuple]:
    with psycopg.connect(stack.pg_dsn()) as conn:
        conn.execute("SET TimeZone = 'America/New_York'")
        return conn.execute(query, (symbols,)).fetchall()


def test_every_tick_lands_exactly_once(stack: StackHandle, replayed: dict) -> None:
    expected = len(replayed["ticks"])
    assert wait_for_rows(stack, replayed["symbols"], expected) == expected
    distinct = rows_for(stack, replayed["symbols"],
                        "SELECT count(DISTINCT (symbol, event_time, price)) FROM crypto_prices WHERE symbol = ANY(%s)")
    assert distinct[0][0] == expected


def test_stored_instants_equal_the_ticks_whatever_the_database_time_zone(stack: StackHandle, replayed: dict) -> None:
    wait_for_rows(stack, replayed["symbols"], len(replayed["ticks"]))
    stored = rows_for(stack, replayed["symbols"],
                      "SELECT symbol, price, (extract(epoch FROM event_time) * 1000)::bigint "
                      "FROM crypto_prices WHERE symbol = ANY(%s)")
    assert sorted(stored) == sorted((t["symbol"], t["price"], t["event_time"]) for t in replayed["ticks"])


def test_one_minute_candles_equal_an_independent_ohlc(stack: StackHandle, replayed: dict) -> None:
    wait_for_rows(stack, replayed["symbols"], len(replayed["ticks"]))
    rows = rows_for(stack, replayed["symbols"],
                    "SELECT symbol, bucket, open, high, low, close, volume, tick_count "
                    "FROM view_crypto_candles WHERE symbol = ANY(%s) ORDER BY symbol, bucket")
    actual = pd.DataFrame(rows, columns=["symbol", "bucket", "open", "high", "low", "close", "volume", "tick_count"])
    actual["bucket"] = pd.to_datetime(actual["bucket"], utc=True)
    expected = expected_candles(replayed["ticks"])
    assert len(actual) == len(expected) == 3 * MINUTES
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False, check_exact=False, rtol=1e-9)


def test_records_on_the_topic_decode_with_the_registry(stack: StackHandle, replayed: dict) -> None:
    deserialize = AvroDeserializer(registry_client(stack.registry_url))
    topic, wanted = stack.settings["TICKS_TOPIC"], set(replayed["symbols"])
    messages = consume(stack, topic, lambda m: m.key() is not None and m.key().decode() in wanted,
                       len(replayed["ticks"]))
    decoded = [deserialize(m.value(), SerializationContext(topic, MessageField.VALUE)) for m in messages]
    assert len(decoded) == len(replayed["ticks"])
    got = sorted((v["symbol"], v["price"], int(v["event_time"].timestamp() * 1000)) for v in decoded)
    assert got == sorted((t["symbol"], t["price"], t["event_time"]) for t in replayed["ticks"])
    assert {v["feed"] for v in decoded} == {"REPLAY"}


def test_the_sink_writes_multi_row_inserts(stack: StackHandle, replayed: dict) -> None:
    """README: the sink sends multi-row INSERTs (the JDBC driver's reWriteBatchedInserts turns its batch into
    one statement with many VALUES rows): pg_stat_statements, as the sink's role, shows more rows than calls."""
    wait_for_rows(stack, replayed["symbols"], len(replayed["ticks"]))
    statements = rows_for(stack, [stack.settings["CONNECT_DB_USER"]],
                          "SELECT s.query, s.calls, s.rows FROM pg_stat_statements s JOIN pg_roles r ON r.oid = "
                          "s.userid WHERE r.rolname = ANY(%s) AND s.query ILIKE 'INSERT INTO%%crypto_prices%%'")
    assert statements, "no INSERT by the sink's role in pg_stat_statements"
    multi_row = [(query, calls, rows) for query, calls, rows in statements if rows > calls]
    assert multi_row, statements
    query, _, _ = max(multi_row, key=lambda s: s[2] / s[1])
    assert query.count("),(") + query.count("), (") >= 1, query[:500]  # one statement, several VALUES rows
