"""Candle views at scale: DirectQuery-shaped queries at 1M and 10M ticks, and what the rollup costs ingest.

Starts a PostgreSQL cluster of its own (the stack's Postgres service, init.sql applied, free port,
throwaway data directory), so it never touches your data. History grows backwards: the newest
1M ticks are loaded first and measured, then 9M older ticks are added and the same queries (same
time windows, same answers) are measured again; the only difference is the size of the history.

Ticks: --symbols symbols, one tick every ~30 s per symbol (10% synthetic JITTER), so 1M ticks are
~35 days and 10M ticks ~350 days of history. Bulk loads go through COPY with the rollup trigger off,
then rebuild_candles() (the documented way to load history); the ingest cost of the trigger is
measured separately with the sink's own statement shape (batched INSERT ... ON CONFLICT DO UPDATE).

    python bench/candles_bench.py --write            # 1M and 10M, writes bench/results/candles.md
    python bench/candles_bench.py --sizes 100000,1000000   # quicker
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_options import add_options, parse, write_results  # noqa: E402
from copy_bench import scratch_postgres  # noqa: E402

from core.settings import Settings  # noqa: E402

NOW = datetime(2026, 11, 1, tzinfo=UTC)  # the newest tick; query windows end here
SECONDS_PER_TICK = 30.0

QUERIES = {
    "1m candles, last 24 h, one symbol": ("view_crypto_candles", "symbol = 'SYM00-USD' AND", timedelta(hours=24)),
    "1h candles, last 30 days, all symbols": ("view_crypto_candles_1h", "", timedelta(days=30)),
    "1m real-only candles, last 24 h, one symbol": ("view_crypto_candles_real", "symbol = 'SYM00-USD' AND",
                                                    timedelta(hours=24)),
    "1m gap-filled candles, last 24 h, one symbol": ("view_crypto_candles_filled", "symbol = 'SYM00-USD' AND",
                                                     timedelta(hours=24)),
}
TARGETS = ("1m candles, last 24 h, one symbol", "1h candles, last 30 days, all symbols")

# What Power BI's PostgreSQL connector sends in DirectQuery: the view as a subselect, filters, a row cap.
POWER_BI_SQL = """
select "_"."symbol", "_"."bucket", "_"."open", "_"."high", "_"."low", "_"."close", "_"."volume", "_"."tick_count"
from (select * from "public"."{view}" "$Table") "_"
where {symbol_filter} "_"."bucket" >= timestamptz '{since}' and "_"."bucket" < timestamptz '{until}'
limit 1000001
"""

# The original design: a plain view aggregating raw ticks on every refresh (for comparison only).
NAIVE_SQL = """
select * from (
  select symbol, date_bin('1 hour', event_time, timestamptz '2000-01-01 00:00:00+00') as bucket,
         (array_agg(price order by event_time, __connect_offset))[1] as open, max(price) as high,
         min(price) as low, (array_agg(price order by event_time desc, __connect_offset desc))[1] as close,
         sum(volume) as volume, count(*) as tick_count
  from crypto_prices group by 1, 2) "_"
where "_"."bucket" >= timestamptz '{since}' and "_"."bucket" < timestamptz '{until}'
limit 1000001
"""

GENERATE_SQL = """
INSERT INTO crypto_prices (__connect_topic, __connect_partition, __connect_offset, symbol, price, event_time,
                           volume, feed, produced_at, producer_id, sequence)
SELECT 'crypto.ticks', s %% 3, n, format('SYM%%s-USD', lpad(s::text, 2, '0')),
       1000 + s * 100 + 50 * sin(n / 5000.0) + random(),
       %(newest)s::timestamptz - make_interval(secs => (n / %(symbols)s) * %(spacing)s + random() * %(spacing)s),
       CASE WHEN random() < 0.2 THEN NULL ELSE random() * 3 END,
       CASE WHEN random() < 0.1 THEN 'JITTER' ELSE 'STREAM' END,
       %(newest)s::timestamptz, 'bench:1', n
  FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n, LATERAL (SELECT n %% %(symbols)s AS s) sym
"""


# The client's own floor: as many rows of the same column types as a candle answer, made by the server from
# nothing (no table, no index). What a view query costs above this is the view's; the rest is the client
# receiving and decoding rows, which no view design removes.
FLOOR_SQL = """
select 'SYM' || lpad((n % {symbols})::text, 2, '0') || '-USD' as symbol,
       timestamptz '{since}' + (n / {symbols}) * interval '1 hour' as bucket,
       1000 + random() as open, 1001 + random() as high, 999 + random() as low, 1000 + random() as close,
       random() * 50 as volume, (n % 120)::bigint as tick_count
  from generate_series(0, {rows} - 1) n
"""
FLOOR_LABEL = "client floor: the 1h shape's row count and columns from generate_series, no table"


@dataclass
class Timing:
    median_ms: float
    p95_ms: float
    rows: int
    # history_bench times the client only (text results): these two stay None there
    server_ms: float | None = None  # median execution time the server reports (EXPLAIN ANALYZE), no client in it
    binary_ms: float | None = None  # median client time with binary results (what Npgsql, Power BI's driver, asks for)


def client_times(conn: psycopg.Connection, sql: str, repeats: int, binary: bool) -> tuple[list[float], int]:
    samples, rows = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        with conn.cursor(binary=binary) as cursor:
            rows = len(cursor.execute(sql).fetchall())
        samples.append((time.perf_counter() - started) * 1000)
    return sorted(samples), rows


def time_query(conn: psycopg.Connection, sql: str, repeats: int) -> Timing:
    conn.execute(sql).fetchall()  # warm the cache once
    samples, rows = client_times(conn, sql, repeats, binary=False)
    binary, _ = client_times(conn, sql, min(repeats, 20), binary=True)
    server = [float(conn.execute("EXPLAIN (ANALYZE, TIMING OFF) " + sql).fetchall()[-1][0].split()[2])
              for _ in range(min(repeats, 10))]
    return Timing(statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))], rows,
                  statistics.median(server), statistics.median(binary))


def load_ticks(conn: psycopg.Connection, first: int, last: int, symbols: int) -> float:
    """Bulk load ticks [first, last] (n counts backwards in time from NOW) and rebuild the candles."""
    started = time.perf_counter()
    conn.execute("ALTER TABLE crypto_prices DISABLE TRIGGER crypto_prices_rollup_insert")
    step = 1_000_000
    for lo in range(first, last + 1, step):
        hi = min(last, lo + step - 1)
        conn.execute(GENERATE_SQL, {"newest": NOW, "symbols": symbols, "spacing": SECONDS_PER_TICK,
                                    "first": lo, "last": hi})
        print(f"  loaded ticks {lo:,}..{hi:,} ({time.perf_counter() - started:.0f}s)", flush=True)
    conn.execute("ALTER TABLE crypto_prices ENABLE TRIGGER crypto_prices_rollup_insert")
    print("  rebuilding candles ...", flush=True)
    conn.execute("SELECT rebuild_candles()")
    conn.execute("VACUUM ANALYZE crypto_prices")
    conn.execute("VACUUM ANALYZE candle_rollup")
    conn.execute("VACUUM ANALYZE candle_calendar")  # the gap-filled plans read it: not left to autovacuum
    return time.perf_counter() - started


def powerbi_connection(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(settings.pg_dsn(user=settings["POWERBI_DB_USER"], password=settings["POWERBI_DB_PASSWORD"]),
                           autocommit=True)


def measure_queries(conn: psycopg.Connection, powerbi: psycopg.Connection, repeats: int,
                    naive: bool) -> dict[str, Timing]:
    """The view queries run as Power BI's role (its settings, e.g. jit = off); the naive plain view
    reads raw ticks, which that role may not, so it runs as the admin."""
    results = {}
    for label, (view, symbol_filter, window) in QUERIES.items():
        sql = POWER_BI_SQL.format(view=view, symbol_filter=symbol_filter.replace("symbol", '"_"."symbol"'),
                                  since=(NOW - window).isoformat(), until=NOW.isoformat())
        results[label] = time_query(powerbi, sql, repeats)
        print(f"  {label:<48} median {results[label].median_ms:7.2f} ms  p95 {results[label].p95_ms:7.2f} ms"
              f"  binary {results[label].binary_ms:7.2f} ms  server {results[label].server_ms:6.2f} ms"
              f"  rows {results[label].rows}", flush=True)
    floor_sql = FLOOR_SQL.format(symbols=10, since=(NOW - timedelta(days=30)).isoformat(),
                                 rows=results["1h candles, last 30 days, all symbols"].rows)
    results[FLOOR_LABEL] = time_query(powerbi, floor_sql, repeats)
    print(f"  client floor {results[FLOOR_LABEL].median_ms:.2f} ms (binary {results[FLOOR_LABEL].binary_ms:.2f},"
          f" server {results[FLOOR_LABEL].server_ms:.2f} ms)")
    if naive:
        sql = NAIVE_SQL.format(since=(NOW - timedelta(days=30)).isoformat(), until=NOW.isoformat())
        results["naive plain view: 1h, 30 days, all symbols"] = time_query(conn, sql, 1)
        print(f"  naive plain view: {results['naive plain view: 1h, 30 days, all symbols'].median_ms:.0f} ms")
    return results


UPSERT_COLUMNS = ("__connect_topic, __connect_partition, __connect_offset, symbol, price, event_time, volume, feed,"
                  " produced_at, producer_id, sequence")
UPSERT_TAIL = (" ON CONFLICT (symbol, event_time, price) DO UPDATE SET"  # the sink's statement (record_value key)
               " volume = EXCLUDED.volume, feed = EXCLUDED.feed, produced_at = EXCLUDED.produced_at,"
               " producer_id = EXCLUDED.producer_id, sequence = EXCLUDED.sequence,"
               " __connect_topic = EXCLUDED.__connect_topic, __connect_partition = EXCLUDED.__connect_partition,"
               " __connect_offset = EXCLUDED.__connect_offset")


def upsert_sql(rows: int) -> str:
    values = ", ".join(["(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"] * rows)
    return f"INSERT INTO crypto_prices ({UPSERT_COLUMNS}) VALUES {values}{UPSERT_TAIL}"


def ingest_cost(conn: psycopg.Connection, ticks: int, batch: int, rows_per_statement: int) -> tuple[float, float]:
    """Ticks/s written the way the JDBC sink writes (a batch of upserts per transaction, sent as
    statements of `rows_per_statement` rows), with the rollup trigger and without it, batches of
    both kinds interleaved in the same run. Returns (without, with)."""
    elapsed = {True: 0.0, False: 0.0}
    offset = conn.execute("SELECT coalesce(max(__connect_offset) + 1, 0) FROM crypto_prices"
                          " WHERE __connect_topic = 'ingest.bench'").fetchone()[0]
    for round_no in range(ticks // batch):
        with_trigger = round_no % 2 == 0
        conn.execute(f"ALTER TABLE crypto_prices {'ENABLE' if with_trigger else 'DISABLE'} TRIGGER "
                     "crypto_prices_rollup_insert")
        rows = []
        for i in range(batch):
            at = NOW + timedelta(seconds=(offset + i) / 10)
            rows.append(("ingest.bench", 0, offset + i, f"SYM{(offset + i) % 10:02d}-USD", 100.0 + i % 7, at,
                         1.0, "STREAM", at, "bench:1", offset + i))
        offset += batch
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            if rows_per_statement == 1:
                cur.executemany(upsert_sql(1), rows)
            else:
                for lo in range(0, batch, rows_per_statement):
                    chunk = rows[lo:lo + rows_per_statement]
                    cur.execute(upsert_sql(len(chunk)), [v for row in chunk for v in row])
        elapsed[with_trigger] += time.perf_counter() - started
    conn.execute("ALTER TABLE crypto_prices ENABLE TRIGGER crypto_prices_rollup_insert")
    half = (ticks // batch // 2) * batch
    return half / elapsed[False], half / elapsed[True]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000", help="history sizes to measure, in ticks")
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per query")
    parser.add_argument("--ingest-ticks", type=int, default=100_000, help="ticks for the ingest-cost measurement")
    parser.add_argument("--no-naive", action="store_true", help="skip the plain-view comparison (slow at 10M)")
    add_options(parser, {"sizes": "20000,100000", "repeats": 5, "ingest_ticks": 10_000})
    args = parse(parser)
    sizes = [int(s) for s in args.sizes.split(",")]

    with scratch_postgres("candles-bench-") as settings, psycopg.connect(settings.pg_dsn(), autocommit=True) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
        print("ingest cost of the rollup trigger ...", flush=True)
        ingest = {}
        for rows_per_statement in (128, 1):
            ingest[rows_per_statement] = ingest_cost(conn, args.ingest_ticks, 2000, rows_per_statement)
            print(f"  {rows_per_statement} rows/statement: without rollup {ingest[rows_per_statement][0]:,.0f}"
                  f" ticks/s, with rollup {ingest[rows_per_statement][1]:,.0f} ticks/s", flush=True)
        conn.execute("TRUNCATE crypto_prices")
        results: dict[int, dict[str, Timing]] = {}
        load_seconds: dict[int, float] = {}
        loaded = 0
        for size in sizes:
            print(f"history of {size:,} ticks:", flush=True)
            load_seconds[size] = load_ticks(conn, loaded, size - 1, args.symbols)
            loaded = size
            rollup_rows = conn.execute("SELECT count(*) FROM candle_rollup").fetchone()[0]
            print(f"  candle_rollup rows: {rollup_rows:,}")
            with powerbi_connection(settings) as powerbi:
                results[size] = measure_queries(conn, powerbi, args.repeats, naive=not args.no_naive)
        with powerbi_connection(settings) as powerbi:
            plans = {label: "\n".join(r[0] for r in powerbi.execute(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) " + POWER_BI_SQL.format(
                    view=view, symbol_filter=symbol_filter.replace("symbol", '"_"."symbol"'),
                    since=(NOW - window).isoformat(), until=NOW.isoformat())).fetchall())
                for label, (view, symbol_filter, window) in QUERIES.items()}
    report = render(sizes, results, load_seconds, ingest, plans, server, args)
    print(report)
    write_results(args, "candles.md", report)


def render(sizes: list[int], results: dict[int, dict[str, Timing]], load_seconds: dict[int, float],
           ingest: dict[int, tuple[float, float]], plans: dict[str, str], server: str,
           args: argparse.Namespace) -> str:
    small, large = sizes[0], sizes[-1]
    lines = [
        "# Candle views at scale",
        "",
        f"`python bench/candles_bench.py --sizes {args.sizes} --repeats {args.repeats}` on "
        f"{os.cpu_count()} cores, PostgreSQL {server} with default settings, {args.symbols} symbols, "
        f"one tick per ~{SECONDS_PER_TICK:.0f} s per symbol, 10% synthetic.",
        "Times are client-side (query sent to last row fetched by psycopg, text results), Power BI's DirectQuery SQL "
        f"shape, median and p95 of {args.repeats} runs after one warm-up; binary: the median client time with "
        "results in binary format (up to 20 runs; Npgsql, the driver of Power BI's PostgreSQL connector, requests "
        "binary results); server: the median execution time PostgreSQL reports for it (EXPLAIN ANALYZE, up to 10 "
        "runs), without sending a row.",
        f"The client floor row is the {results[large]['1h candles, last 30 days, all symbols'].rows:,}-row answer of "
        "the 1h shape made from nothing (generate_series, same columns): what this client pays to receive and "
        "decode that many rows whatever the view does.",
        "",
        "| query | " + " | ".join(f"{s:,} ticks: median (p95) ms, binary ms, server ms" for s in sizes)
        + f" | {large:,} / {small:,} | rows |",
        "|---|" + "---|" * len(sizes) + "---|---|",
    ]
    for label in results[small]:
        cells = [f"{t.median_ms:.2f} ({t.p95_ms:.2f}), {t.binary_ms:.2f}, {t.server_ms:.2f}"
                 for t in (results[s][label] for s in sizes)]
        ratio = results[large][label].median_ms / results[small][label].median_ms
        target = " (target)" if label in TARGETS else ""
        lines.append(f"| {label}{target} | " + " | ".join(cells) + f" | {ratio:.2f}x | {results[large][label].rows} |")
    lines += [
        "",
        "Bulk load (COPY-style INSERT ... SELECT with the trigger off, then `rebuild_candles()`): "
        + ", ".join(f"{s:,} ticks cumulative in {load_seconds[s]:.0f} s" for s in sizes) + ".",
        "",
        "## Ingest cost of the rollup",
        "",
        f"{args.ingest_ticks:,} ticks per row below, written the way the JDBC sink writes them: batches of 2,000 "
        "`INSERT ... ON CONFLICT DO UPDATE` in one transaction each; batches with and without the rollup "
        "trigger interleaved in the same run. The connector's URL sets `reWriteBatchedInserts=true`, so "
        "the PostgreSQL JDBC driver sends a batch as multi-row statements of up to 128 rows; the one-row "
        "shape is what the driver sends without it.",
        "",
        "| statement shape | without rollup ticks/s | with rollup ticks/s | ingest time with / without |",
        "|---|---|---|---|",
        *[f"| {n} row{'s' if n > 1 else ''} per statement | {plain:,.0f} | {rollup:,.0f} | {plain / rollup:.2f}x |"
          for n, (plain, rollup) in ingest.items()],
        "",
        f"## Plans at {large:,} ticks",
        "",
    ]
    for label, plan in plans.items():
        lines += [f"### {label}", "", "```", plan, "```", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
