"""Producing or delivering the same ticks again is harmless, on the real stack: replaying the same file
twice, Connect redelivering every record of the topic (its offsets reset), and the topic deleted and
recreated (offsets start again at 0) leave every row and every candle as it was. The row key is the
tick itself (symbol, event time, price); with the Kafka coordinates as key, a recreated topic's
offset 0 used to overwrite the old offset 0's row."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from control.connector import load_connector, wait_running
from core.settings import PROJECT_ROOT
from tests.conftest import StackHandle
from tests.support import TickProducer, new_symbol, poll_until, query, tick

pytestmark = pytest.mark.stack

START_MS = 1_764_100_800_000  # 2025-11-25T20:00:00Z
CONNECTOR = load_connector()["name"]
SNAPSHOT = ("SELECT resolution, symbol, bucket, first, last, high, low, volume, tick_count, synthetic_count, "
            "real_first, real_last, real_high, real_low, real_volume "
            "FROM candle_rollup WHERE symbol = ANY(%s) ORDER BY 1, 2, 3")
ROWS = ("SELECT symbol, event_time, price, volume, feed, producer_id, sequence, __connect_topic, "
        "__connect_partition, __connect_offset FROM crypto_prices WHERE symbol = ANY(%s) ORDER BY 1, 2, 3")
SENTINELS = ROWS.replace("ORDER BY", "AND price = 1.0 ORDER BY")  # the first replay's, one record each


def replay(stack: StackHandle, path: Path, symbols: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "producer", "--source", "replay", "--file", str(path),
                             "--speed", "0", "--symbols", ",".join(symbols)],
                            env=stack.env(), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def drained(stack: StackHandle, symbols: list[str], sentinel_price: float) -> None:
    """Everything produced before now has been written: a new tick per symbol, produced now, lands last
    (a symbol's ticks share a partition and the sink writes a partition in order). The sentinels sit
    days before the ticks under test, in candles of their own."""
    producer = TickProducer(stack)
    producer.send([tick(s, 0, price=sentinel_price, event_time=START_MS - 3 * 86_400_000) for s in symbols])
    landed = poll_until(lambda: query(stack, "SELECT count(*) FROM crypto_prices WHERE symbol = ANY(%s) AND price = %s",
                                      symbols, sentinel_price)[0][0], lambda n: n == len(symbols), timeout=180)
    assert landed == len(symbols), "the sink did not catch up"


def snapshot(stack: StackHandle, symbols: list[str]) -> tuple[list[tuple], list[tuple]]:
    """Rows and candles of the ticks under test (the sentinels' days left out)."""
    rows = [r for r in query(stack, ROWS, symbols) if r[1] >= datetime.fromtimestamp(START_MS / 1000, UTC)]
    candles = [c for c in query(stack, SNAPSHOT, symbols)
               if c[2] >= datetime.fromtimestamp((START_MS - 86_400_000) / 1000, UTC)]
    return rows, candles


@pytest.fixture(scope="module")
def first_replay(stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> dict:
    wait_running(stack.connect_api, CONNECTOR)
    symbols = [new_symbol("REPRO") for _ in range(3)]
    rng = random.Random(5)
    ticks = [{"symbol": s, "price": round(rng.uniform(10, 20), 4) + i * 1e-4, "event_time": START_MS + i * 1500,
              "volume": 0.5} for s in symbols for i in range(200)]
    path = tmp_path_factory.mktemp("repro") / "ticks.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in ticks))
    replay(stack, path, symbols)
    drained(stack, symbols, sentinel_price=1.0)
    rows, candles = snapshot(stack, symbols)
    assert len(rows) == len(ticks)
    return {"symbols": symbols, "file": path, "rows": rows, "candles": candles}


def test_replaying_the_same_file_twice_changes_no_row_and_no_candle(stack: StackHandle, first_replay: dict) -> None:
    replay(stack, first_replay["file"], first_replay["symbols"])
    drained(stack, first_replay["symbols"], sentinel_price=2.0)
    assert snapshot(stack, first_replay["symbols"]) == (first_replay["rows"], first_replay["candles"])


def test_connect_redelivering_the_whole_topic_changes_no_row_and_no_candle(stack: StackHandle,
                                                                           first_replay: dict) -> None:
    """Offsets reset (Connect's offsets API): the sink reads the topic from its first record again. Proof
    that it did: the first replay's sentinel rows (one record each in the topic) are deleted while the
    connector is stopped, and only their records delivered again can bring them back, coordinates and all.
    (A replayed tick's row could come back from either of its two records: the sink keeps one per key.)"""
    api = stack.connect_api
    assert api.put(f"/connectors/{CONNECTOR}/stop").status_code == 204
    poll_until(lambda: api.get(f"/connectors/{CONNECTOR}/status").json()["connector"]["state"],
               lambda state: state == "STOPPED", timeout=60)
    sentinels = query(stack, SENTINELS, first_replay["symbols"])
    assert len(sentinels) == len(first_replay["symbols"])
    query(stack, "DELETE FROM crypto_prices WHERE symbol = ANY(%s) AND price = 1.0 RETURNING symbol",
          first_replay["symbols"])
    reset = api.delete(f"/connectors/{CONNECTOR}/offsets", timeout=60)
    assert reset.status_code == 200, reset.text
    assert api.get(f"/connectors/{CONNECTOR}/offsets", timeout=30).json()["offsets"] == []  # really reset
    assert api.put(f"/connectors/{CONNECTOR}/resume").status_code == 202
    wait_running(api, CONNECTOR)
    drained(stack, first_replay["symbols"], sentinel_price=3.0)
    assert query(stack, SENTINELS, first_replay["symbols"]) == sentinels  # delivered again, from their records
    assert snapshot(stack, first_replay["symbols"]) == (first_replay["rows"], first_replay["candles"])


def test_a_recreated_topic_never_overwrites_existing_rows(stack: StackHandle, first_replay: dict) -> None:
    """The operator's procedure (README): stop the connector, reset its offsets, delete and recreate the
    topic, resume. The new topic's offsets start at 0 again, and its ticks land beside the old ones."""
    api, topic = stack.connect_api, stack.settings["TICKS_TOPIC"]
    assert api.put(f"/connectors/{CONNECTOR}/stop").status_code == 204
    poll_until(lambda: api.get(f"/connectors/{CONNECTOR}/status").json()["connector"]["state"],
               lambda state: state == "STOPPED", timeout=60)
    admin = AdminClient(stack.settings.kafka_config())
    partitions = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)
    admin.delete_topics([topic])[topic].result(60)
    poll_until(lambda: topic in admin.list_topics(timeout=10).topics, lambda present: not present, timeout=60)
    assert api.delete(f"/connectors/{CONNECTOR}/offsets", timeout=60).status_code == 200
    created = poll_until(lambda: _create(admin, topic, partitions), lambda ok: ok, timeout=60, interval=1)
    assert created
    assert api.put(f"/connectors/{CONNECTOR}/resume").status_code == 202
    wait_running(api, CONNECTOR)

    newer = [tick(s, i, price=30.0 + i, event_time=START_MS + 400_000 + i * 1000)
             for s in first_replay["symbols"] for i in range(5)]
    TickProducer(stack).send(newer)
    drained(stack, first_replay["symbols"], sentinel_price=4.0)
    rows, _ = snapshot(stack, first_replay["symbols"])
    old_keys = {r[:3] for r in first_replay["rows"]}
    assert [r for r in rows if r[:3] in old_keys] == first_replay["rows"]  # every old row, unchanged
    assert {r[:3] for r in rows} - old_keys == {(t["symbol"], datetime.fromtimestamp(t["event_time"] / 1000, UTC),
                                                 t["price"]) for t in newer}
    assert min(r[9] for r in rows if r[:3] not in old_keys) < 10  # the new topic's offsets did start again


def _create(admin: AdminClient, topic: str, partitions: int) -> bool:
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)
        return True
    except Exception:  # noqa: BLE001 - "marked for deletion" until the deletion completes
        time.sleep(1)
        return topic in admin.list_topics(timeout=10).topics
