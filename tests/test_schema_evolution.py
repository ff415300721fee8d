"""A live schema evolution on the running stack, following docs/schema-evolution.md: version-1 ticks,
the migration that adds the new column, then version-2 ticks with the new optional field, on the real
topic. The registry accepts v2 under the subject's level, the JDBC sink keeps RUNNING, v1 rows hold
NULL in the new column, v2 rows the value, and the candles Power BI reads are exactly what the ticks
imply, evolution or not.

Why the migration: the Debezium JDBC sink 3.4.3 here does NOT add the column itself despite
schema.evolution=basic. The first v2 record fails the task ("Failed to find column 'exchange' in table
'crypto_prices'", no ALTER attempted, not sent to the DLQ), also after a task restart; with the column
added beforehand the same records land. The cause, in the sink's code with primary.key.mode=kafka, is
in docs/schema-evolution.md.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
import requests

from control.connector import connector_status, load_connector, wait_running
from core.settings import PROJECT_ROOT
from tests.conftest import StackHandle
from tests.support import (
    SinkWatch,
    TickProducer,
    count_rows,
    poll_until,
    query,
    supervisor_restarts,
    wait_for_rows,
)

pytestmark = pytest.mark.stack

START_MS = 1_764_010_800_000  # 2025-11-24T19:00:00Z, minute aligned
V1 = json.loads((PROJECT_ROOT / "schemas" / "crypto_tick.avsc").read_text())
NEW_FIELD = {"name": "exchange", "type": ["null", "string"], "default": None,
             "doc": "Where the price was traded; null when unknown (and for every record written with v1)."}
V2 = {**V1, "fields": [*V1["fields"], NEW_FIELD]}
LATER_FIELD = {"name": "venue", "type": ["null", "string"], "default": None, "doc": "A field whose migration is late."}
V3 = {**V2, "fields": [*V2["fields"], LATER_FIELD]}


def make_ticks(symbols: list[str], first_ms: int, count: int, version: int) -> list[dict]:
    """`count` ticks per symbol, 20 s apart from `first_ms`, distinct times and prices."""
    ticks = []
    for s, symbol in enumerate(symbols):
        for i in range(count):
            tick = {"symbol": symbol, "price": 100.0 * (s + 1) + i * 0.5 + version * 0.01,
                    "event_time": first_ms + i * 20_000 + s, "volume": 0.25 * (i + 1), "feed": "REPLAY",
                    "produced_at": int(time.time() * 1000), "producer_id": "test_schema_evolution",
                    "sequence": i}
            if version == 2:
                tick["exchange"] = f"EX{s}"
            ticks.append(tick)
    return ticks


def produce(stack: StackHandle, schema: dict, ticks: list[dict]) -> None:
    TickProducer(stack, json.dumps(schema)).send(ticks)


def add_column_as_the_admin(stack: StackHandle) -> None:
    """The migration step of docs/schema-evolution.md, as init.sql runs it: by the admin (the sink's role
    may not alter the table)."""
    with psycopg.connect(stack.pg_dsn(), autocommit=True) as conn:
        conn.execute("ALTER TABLE crypto_prices ADD COLUMN IF NOT EXISTS exchange text")


@pytest.fixture(scope="module")
def evolved(stack: StackHandle) -> dict:
    connector = load_connector()["name"]
    wait_running(stack.connect_api, connector)
    tag = uuid.uuid4().hex[:6].upper()
    symbols = [f"EVO{tag}{i}-USD" for i in range(2)]
    v1 = make_ticks(symbols, START_MS, 6, version=1)  # 19:00:00 .. 19:01:40
    v2 = make_ticks(symbols, START_MS + 110_000, 6, version=2)  # 19:01:50 .. 19:03:30: shares the 19:01 bucket
    with SinkWatch(stack, connector) as watch:  # from the first v1 tick until the last v2 tick landed
        produce(stack, V1, v1)
        assert wait_for_rows(stack, symbols, len(v1)) == len(v1), "v1 ticks did not land"
        add_column_as_the_admin(stack)
        produce(stack, V2, v2)
        landed = wait_for_rows(stack, symbols, len(v1) + len(v2))
    return {"connector": connector, "symbols": symbols, "v1": v1, "v2": v2, "landed": landed, "watch": watch}


def test_the_registry_holds_v2_as_the_latest_version(stack: StackHandle, evolved: dict) -> None:
    subject = f"{stack.settings['TICKS_TOPIC']}-value"
    latest = requests.get(f"{stack.registry_url}/subjects/{subject}/versions/latest", timeout=10).json()
    assert "exchange" in [f["name"] for f in json.loads(latest["schema"])["fields"]]


def test_both_versions_land_and_the_connector_stays_running(evolved: dict) -> None:
    """RUNNING at every poll through v1, the migration and v2, and not one supervisor restart: a v2 record
    that failed the task once and landed after the supervisor's restart would fail this."""
    assert evolved["landed"] == len(evolved["v1"]) + len(evolved["v2"])
    evolved["watch"].assert_kept_running()


def test_the_new_column_is_null_for_v1_and_filled_for_v2(stack: StackHandle, evolved: dict) -> None:
    columns = [r[0] for r in query(stack, "SELECT column_name FROM information_schema.columns "
                                          "WHERE table_name = 'crypto_prices'")]
    assert "exchange" in columns
    rows = query(stack, "SELECT symbol, (extract(epoch FROM event_time) * 1000)::bigint, exchange "
                        "FROM crypto_prices WHERE symbol = ANY(%s)", evolved["symbols"])
    stored = {(symbol, ms): exchange for symbol, ms, exchange in rows}
    assert {(t["symbol"], t["event_time"]): None for t in evolved["v1"]}.items() <= stored.items()
    assert {(t["symbol"], t["event_time"]): t["exchange"] for t in evolved["v2"]}.items() <= stored.items()


def expected_candles(ticks: list[dict]) -> list[tuple]:
    by_bucket: dict[tuple[str, int], list[dict]] = {}
    for tick in ticks:
        by_bucket.setdefault((tick["symbol"], tick["event_time"] // 60_000 * 60_000), []).append(tick)
    out = []
    for (symbol, bucket), group in sorted(by_bucket.items()):
        group.sort(key=lambda t: t["event_time"])
        prices = [t["price"] for t in group]
        out.append((symbol, datetime.fromtimestamp(bucket / 1000, UTC), group[0]["price"], max(prices), min(prices),
                    group[-1]["price"], sum(t["volume"] for t in group), len(group)))
    return out


def test_the_candles_equal_what_the_ticks_imply(stack: StackHandle, evolved: dict) -> None:
    rows = query(stack, "SELECT symbol, bucket, open, high, low, close, volume, tick_count FROM view_crypto_candles "
                        "WHERE symbol = ANY(%s) ORDER BY symbol, bucket", evolved["symbols"])
    expected = expected_candles(evolved["v1"] + evolved["v2"])
    assert len(rows) == len(expected) == 2 * 4  # 19:00 .. 19:03 per symbol, 19:01 mixing v1 and v2 ticks
    for got, want in zip(rows, expected, strict=True):
        assert got[:2] == want[:2]
        assert [float(x) for x in got[2:7]] == pytest.approx(list(want[2:7]), rel=1e-12)
        assert got[7] == want[7]


@pytest.fixture(scope="module")
def deployed_before_its_migration(stack: StackHandle, evolved: dict) -> dict:
    """Step 5 done in the wrong order: a producer writes v3 (a new field) before the column exists. The
    sink's task fails on it; the supervisor keeps restarting it with backoff; the migration comes late."""
    tag = uuid.uuid4().hex[:6].upper()
    symbols = [f"LATE{tag}{i}-USD" for i in range(2)]
    v3 = [{**t, "venue": f"V{t['sequence']}"} for t in make_ticks(symbols, START_MS + 600_000, 4, version=2)]
    restarts_before = supervisor_restarts(stack)
    produce(stack, V3, v3)
    restarts = poll_until(lambda: supervisor_restarts(stack), lambda n: n > restarts_before, timeout=240, interval=2)
    landed_before = count_rows(stack, symbols)
    with psycopg.connect(stack.pg_dsn(), autocommit=True) as conn:
        conn.execute("ALTER TABLE crypto_prices ADD COLUMN IF NOT EXISTS venue text")
    landed = wait_for_rows(stack, symbols, len(v3), timeout=300)
    return {"symbols": symbols, "v3": v3, "restarts": restarts - restarts_before, "landed_before": landed_before,
            "landed": landed}


def test_a_record_ahead_of_its_migration_stalls_the_sink_and_the_supervisor_keeps_retrying(
        deployed_before_its_migration: dict) -> None:
    assert deployed_before_its_migration["landed_before"] == 0
    assert deployed_before_its_migration["restarts"] >= 1


def test_once_the_migration_is_applied_every_waiting_tick_lands(stack: StackHandle,
                                                               deployed_before_its_migration: dict) -> None:
    assert deployed_before_its_migration["landed"] == len(deployed_before_its_migration["v3"])
    stored = query(stack, "SELECT venue FROM crypto_prices WHERE symbol = ANY(%s) ORDER BY venue",
                   deployed_before_its_migration["symbols"])
    assert [r[0] for r in stored] == sorted(t["venue"] for t in deployed_before_its_migration["v3"])
    # A task that failed on the record meanwhile may still show FAILED until the supervisor's next
    # restart (its backoff reaches 60 s): nobody else acts, the task comes back by itself.
    status = poll_until(lambda: connector_status(stack.connect_api, load_connector()["name"]),
                        lambda st: bool(st and st["tasks"]) and {t["state"] for t in st["tasks"]} == {"RUNNING"},
                        timeout=240, interval=2)
    assert {t["state"] for t in status["tasks"]} == {"RUNNING"}
