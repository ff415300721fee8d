"""What the tick contract and the bounded calendar cost, on the real native stack (started here on free
ports in a temporary state directory, stopped and purged at the end):

1. COPY into crypto_prices (candles maintained) with the contract's CHECK constraints and without them
   (dropped inside the same, rolled-back, transaction);
2. the JDBC sink's rate with the TickContract transform and without it: a backlog produced while the
   connector is paused, then resumed, timed until every row landed (one run each, same stack);
3. the time of one far-dated tick written by SQL (the contract stops these at Connect; a direct writer
   can still send them): a year older than all history, ten years ahead, the first tick of a new
   symbol; each statement timed, worst of five, with the calendar buckets it added.

    python bench/contract_bench.py --ticks 100000 --write
    python bench/contract_bench.py --quick     # CI smoke run: small sizes, results into a temp dir
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psycopg  # noqa: E402
from bench_options import add_options, parse, write_results  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402
from psycopg import sql  # noqa: E402
from stack_driver import MERGE_IN_STATEMENT  # noqa: E402

from control.connector import ConnectApi, load_connector, register, wait_running  # noqa: E402
from core.settings import Settings  # noqa: E402
from producer.schema_registration import registry_client, value_serializer  # noqa: E402
from stack.ports import claimed_ports  # noqa: E402

RESULTS_NAME = "contract.md"
QUICK = {"ticks": 2000, "copy_ticks": 5000, "copy_repeats": 1, "sink_repeats": 1, "far_repeats": 1}
SCHEMA = (ROOT / "schemas" / "crypto_tick.avsc").read_text()
COPY_COLUMNS = "(symbol, event_time, price, volume, feed, __connect_topic, __connect_partition, __connect_offset)"


def stack_cli(env: dict[str, str], *args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "stack", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"stack {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def copy_rate(settings: Settings, ticks: int, with_checks: bool) -> float:
    rng = random.Random(1)
    start = datetime(2024, 6, 1, tzinfo=UTC)
    buffer = io.StringIO()
    for i in range(ticks):
        at = start + timedelta(milliseconds=i * 10 + rng.randint(0, 5))
        buffer.write(f"COPY{i % 3}-USD\t{at.isoformat()}\t{100 + rng.random()!r}\t1.0\tSTREAM\tbench\t0\t{i}\n")
    data = buffer.getvalue().encode()
    with psycopg.connect(settings.pg_dsn()) as conn:
        conn.execute(MERGE_IN_STATEMENT)  # the candles' merge in the timing, though rolled back
        if not with_checks:  # the contract's CHECKs as the catalog names them now (init.sql: tick_contract)
            checks = [name for (name,) in conn.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'crypto_prices'::regclass AND contype = 'c'")]
            if not checks:
                raise SystemExit("crypto_prices has no CHECK constraint: nothing to compare the contract against")
            conn.execute(sql.SQL("ALTER TABLE crypto_prices {}").format(
                sql.SQL(", ").join(sql.SQL("DROP CONSTRAINT {}").format(sql.Identifier(c)) for c in checks)))
        started = time.perf_counter()
        with conn.cursor().copy(f"COPY crypto_prices {COPY_COLUMNS} FROM STDIN") as copy:
            copy.write(data)
        elapsed = time.perf_counter() - started
        conn.rollback()
    return ticks / elapsed


def one_symbol_per_partition(tag: str, partitions: int) -> list[str]:
    """Symbols the producer's default partitioner (librdkafka: CRC32 of the key) puts one on each partition."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        symbol = f"{tag}{n}-USD"
        found.setdefault(zlib.crc32(symbol.encode()) % partitions, symbol)
        n += 1
    return [found[p] for p in range(partitions)]


def sink_rate(settings: Settings, api: ConnectApi, ticks: int, tag: str) -> float:
    """Backlog of `ticks` produced while the connector is paused; seconds from resume to the last row."""
    name = load_connector()["name"]
    topic = settings["TICKS_TOPIC"]
    symbols = one_symbol_per_partition(tag, partitions=3)  # every variant spreads the same over the tasks
    serialize = value_serializer(registry_client(settings.ccompat_url, settings.registry_auth("producer")), SCHEMA)
    now = int(time.time() * 1000) - 3_600_000
    assert api.put(f"/connectors/{name}/pause").status_code == 202
    time.sleep(5)  # the task stops consuming
    producer = Producer({**settings.kafka_config("producer"), "linger.ms": 20,
                         "queue.buffering.max.messages": 200_000})
    context = SerializationContext(topic, MessageField.VALUE)
    for i in range(ticks):
        symbol = symbols[i % 3]
        value = {"symbol": symbol, "price": 100.0 + i * 1e-3, "event_time": now + i, "volume": 1.0, "feed": "STREAM",
                 "produced_at": now + i, "producer_id": "bench", "sequence": i}
        producer.produce(topic, key=symbol.encode(), value=serialize(value, context))
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    started = time.monotonic()
    assert api.put(f"/connectors/{name}/resume").status_code == 202
    count = "SELECT count(*) FROM crypto_prices WHERE symbol = ANY(%s)"
    with psycopg.connect(settings.pg_dsn(), autocommit=True) as conn:
        while conn.execute(count, (symbols,)).fetchone()[0] < ticks:
            if time.monotonic() - started > 900:
                raise SystemExit("the sink did not land the backlog within 15 minutes")
            time.sleep(0.2)
    return ticks / (time.monotonic() - started)


def register_variant(settings: Settings, api: ConnectApi, with_contract: bool, workdir: Path) -> None:
    definition = load_connector()
    config = definition["config"]
    if not with_contract:
        transforms = [t for t in config["transforms"].split(",") if t != "contract"]
        config["transforms"] = ",".join(transforms)
        config = {k: v for k, v in config.items() if not k.startswith("transforms.contract.")}
        definition = {**definition, "config": config}
    path = workdir / f"connector-{'with' if with_contract else 'without'}-contract.json"
    path.write_text(json.dumps(definition))
    register(api, path)
    wait_running(api, definition["name"])


def far_dated(settings: Settings, repeats: int) -> dict[str, tuple[float, int]]:
    """Worst statement time (ms) and calendar buckets added, per kind of far-dated tick."""
    cases = {"a year older than all history": timedelta(days=-366), "ten years ahead": timedelta(days=3650),
             "first tick of a new symbol": None}
    results: dict[str, tuple[float, int]] = {}
    insert = "INSERT INTO crypto_prices (symbol, event_time, price, feed) VALUES (%s, %s, %s, 'STREAM')"
    with psycopg.connect(settings.pg_dsn(), autocommit=True) as conn:
        oldest = conn.execute("SELECT min(event_time) FROM crypto_prices").fetchone()[0]
        for case_no, (case, delta) in enumerate(cases.items()):
            times, added = [], []
            for n in range(repeats):
                symbol = f"FAR{case_no}X{n}-USD"  # one symbol per case and repeat: each starts a new series
                if delta is not None:
                    conn.execute(insert, (symbol, oldest + timedelta(days=400), 1.0))
                when = (oldest + timedelta(days=400) + delta) if delta is not None else oldest + timedelta(days=n)
                before = conn.execute("SELECT count(*) FROM candle_calendar").fetchone()[0]
                started = time.perf_counter()
                conn.execute(insert, (symbol, when, 2.0))
                times.append((time.perf_counter() - started) * 1000)
                added.append(conn.execute("SELECT count(*) FROM candle_calendar").fetchone()[0] - before)
            results[case] = (max(times), max(added))
        bound = conn.execute("SELECT sum(2 * max_fill + 1) FROM candle_intervals").fetchone()[0]
    results["bound (sum of 2 x max_fill + 1)"] = (float("nan"), bound)
    return results


def main(args: argparse.Namespace) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "fetch_artifacts.sh"), "all"], check=True)
    with tempfile.TemporaryDirectory(prefix="contract-bench-") as state, claimed_ports() as ports:
        env = {**os.environ, "CRYPTOPIPE_STATE": state, **ports}
        os.environ.update(env)
        settings = Settings.load()
        print("starting the stack ...", flush=True)
        stack_cli(env, "up", "--no-fetch", "--no-producer")
        try:
            api = ConnectApi.of(settings)
            with psycopg.connect(settings.pg_dsn()) as conn:
                server = conn.execute("SHOW server_version").fetchone()[0]
            copies = {True: [], False: []}
            for _ in range(args.copy_repeats):
                for with_checks in (True, False):
                    copies[with_checks].append(copy_rate(settings, args.copy_ticks, with_checks))
                    print(f"COPY {'with' if with_checks else 'without'} CHECKs: {copies[with_checks][-1]:,.0f}/s",
                          flush=True)
            with tempfile.TemporaryDirectory() as work:
                register_variant(settings, api, True, Path(work))
                warm = sink_rate(settings, api, args.ticks // 4, "WARMX")
                print(f"sink warm-up: {warm:,.0f}/s (discarded)", flush=True)
                rates: dict[bool, list[float]] = {False: [], True: []}
                for run in range(args.sink_repeats):  # alternating, so drift in the machine's load hits both
                    for with_contract in (False, True):
                        register_variant(settings, api, with_contract, Path(work))
                        tag = f"S{run}{int(with_contract)}X"
                        rates[with_contract].append(sink_rate(settings, api, args.ticks, tag))
                        print(f"sink {'with' if with_contract else 'without'} TickContract: "
                              f"{rates[with_contract][-1]:,.0f}/s", flush=True)
                sink = {k: statistics.median(v) for k, v in rates.items()}
            far = far_dated(settings, args.far_repeats)
            for case, (ms, added) in far.items():
                print(f"{case}: {ms:.1f} ms, {added} calendar buckets", flush=True)
        finally:
            stack_cli(env, "down", "--purge")
    copy_with, copy_without = statistics.median(copies[True]), statistics.median(copies[False])
    lines = [
        "# The tick contract's cost and the worst far-dated tick",
        "",
        f"`python bench/contract_bench.py --ticks {args.ticks} --copy-ticks {args.copy_ticks} "
        f"--copy-repeats {args.copy_repeats} --sink-repeats {args.sink_repeats} --far-repeats {args.far_repeats}"
        f"{' --quick' if args.quick else ''} --write`, "
        f"{time.strftime('%Y-%m-%d')}, PostgreSQL {server}, "
        f"{os.cpu_count()} CPUs (shared with other work: compare the ratios, not the absolute rates).",
        "",
        "| path | ticks/s | ratio |",
        "|---|---:|---:|",
        f"| COPY {args.copy_ticks:,} ticks, candles maintained, without the contract's CHECKs (median of "
        f"{args.copy_repeats}) | {copy_without:,.0f} | 1.00 |",
        f"| the same with the CHECKs | {copy_with:,.0f} | {copy_with / copy_without:.2f} |",
        f"| JDBC sink, backlog of {args.ticks:,}, without the TickContract transform (median of "
        f"{args.sink_repeats}, alternating) | {sink[False]:,.0f} | 1.00 |",
        f"| the same with it | {sink[True]:,.0f} | {sink[True] / sink[False]:.2f} |",
        "",
        "One far-dated tick written by SQL into a database holding the sink's ticks (worst of "
        f"{args.far_repeats}):",
        "",
        "| tick | statement time | calendar buckets added |",
        "|---|---:|---:|",
        *[f"| {case} | {'' if ms != ms else f'{ms:.1f} ms'} | {added} |" for case, (ms, added) in far.items()],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(args, RESULTS_NAME, text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=100_000, help="sink backlog per variant (default %(default)s)")
    parser.add_argument("--copy-ticks", type=int, default=300_000, help="ticks per COPY (default %(default)s)")
    parser.add_argument("--copy-repeats", type=int, default=3, help="COPY runs per variant (default %(default)s)")
    parser.add_argument("--sink-repeats", type=int, default=3, help="sink runs per variant (default %(default)s)")
    parser.add_argument("--far-repeats", type=int, default=5, help="far-dated ticks per kind (default %(default)s)")
    add_options(parser, QUICK)
    main(parse(parser))
