"""History for months (issue #18): 90 days of ticks in the partitioned crypto_prices, and what it costs.

Starts a PostgreSQL cluster of its own (the stack's Postgres service: free port, throwaway data directory,
init.sql applied by scripts/init_db.sh), so it never touches your data. Every database in it is made by the
project's own scripts/init_db.sh: the history database (90 days), one per smaller history size measured (1
and 30 days: the same newest ticks), a fresh one (the ingest comparison), a retention one (size over days).

History: BTC-USD, ETH-USD and SOL-USD, one tick per second each (--rate), prices a geometric random walk
(realistic levels and volatility), every tick a real STREAM tick as the live websocket feed lands them.
Loaded the way history is loaded: one COPY per simulated day into crypto_prices as the superuser, the
candle rollup trigger running; the day's partition premade first by raw_ticks_maintenance_step (p_now =
that day, keep for ever). History grows backwards from NOW, so the query windows (ending at NOW) and their
answers are the same whatever the history size.

  a. sink-shaped ingest of "now" ticks (multi-row INSERT ... ON CONFLICT (symbol, event_time, price) DO
     UPDATE, 500 rows per statement, one transaction per batch, as the sink's role), batches into the
     history database and into the fresh one interleaved: history ticks/s over fresh ticks/s.
  b. the four DirectQuery-shaped candle queries of bench/candles_bench.py and a raw-tick query (one
     symbol, last hour) as Power BI's role on 1, 30 and 90 days of history, the databases taking turns:
     median of --repeats runs.
  c. bytes per stored tick: partitions (heap, TOAST, indexes) and the candle tables.
  d. retention drops of one day partition (raw_ticks_maintenance_step) while a sink-shaped writer
     commits batches in a loop: the drop's time and the writer's longest gap between two commits.
  e. pg_database_size over simulated days with retention at 30 days (load a day, run the maintenance
     steps with p_now = that day), in the retention database.

    python bench/history_bench.py          # the full run (~20-30 min on 2 cores), writes bench/results/history.*
    python bench/history_bench.py --quick  # CI smoke run: 0.02 tick/s, fewer repeats (< 3 min), to a temp dir
    python bench/history_bench.py --render [bench/results/history.json]   # the report again from a run's data
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.secrets import ensure_secrets  # noqa: E402
from core.settings import Settings  # noqa: E402
from stack.ports import PortClaims  # noqa: E402
from stack.services import Postgres  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from candles_bench import POWER_BI_SQL, Timing  # noqa: E402
from candles_bench import QUERIES as CANDLE_BENCH_QUERIES  # noqa: E402

DAY = timedelta(days=1)
# Price at NOW and annualised volatility (a day's log-return has sd = vol / sqrt(365)).
SYMBOLS: dict[str, tuple[float, float]] = {"BTC-USD": (92_000.0, 0.55), "ETH-USD": (3_100.0, 0.70),
                                           "SOL-USD": (140.0, 0.90)}
SECONDS_PER_YEAR = 365 * 86400
TOPIC = "crypto.ticks"
PRODUCER = "coinbase-ws:1"
COPY_SQL = ("COPY crypto_prices (symbol, event_time, price, volume, feed, produced_at, producer_id, sequence,"
            " __connect_topic, __connect_partition, __connect_offset) FROM STDIN")
QUERY_SYMBOL = "BTC-USD"

# The four DirectQuery-shaped candle queries of bench/candles_bench.py (view, one symbol or all, window), asked
# of a real symbol here.
CANDLE_QUERIES: dict[str, tuple[str, bool, timedelta]] = {
    label: (view, bool(symbol_filter), window) for label, (view, symbol_filter, window) in CANDLE_BENCH_QUERIES.items()}
RAW_QUERY = "raw ticks, last hour, one symbol"
RAW_SQL = """
select "_"."symbol", "_"."event_time", "_"."price", "_"."volume", "_"."feed"
from (select * from "public"."crypto_prices" "$Table") "_"
where "_"."symbol" = '{symbol}'
  and "_"."event_time" >= timestamptz '{since}' and "_"."event_time" < timestamptz '{until}'
limit 1000001
"""

# The sink's statement (Debezium JDBC sink, insert.mode upsert, primary.key.mode record_value).
UPSERT_COLUMNS = ("__connect_topic, __connect_partition, __connect_offset, symbol, price, event_time, volume, feed,"
                  " produced_at, producer_id, sequence")
UPSERT_TAIL = (" ON CONFLICT (symbol, event_time, price) DO UPDATE SET"
               " volume = EXCLUDED.volume, feed = EXCLUDED.feed, produced_at = EXCLUDED.produced_at,"
               " producer_id = EXCLUDED.producer_id, sequence = EXCLUDED.sequence,"
               " __connect_topic = EXCLUDED.__connect_topic, __connect_partition = EXCLUDED.__connect_partition,"
               " __connect_offset = EXCLUDED.__connect_offset")
BATCH_ROWS = 500

TARGET_INGEST_RATIO = 0.90
TARGET_CANDLE_MS = 25.0
TARGET_CANDLE_GROWTH = 1.10
TARGET_RAW_MS = 50.0
TARGET_DROP_S = 1.0
TARGET_STALL_S = 1.0
TARGET_FLAT = 0.10


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- ticks ------------------------------------------------------------------------------------------
@dataclass
class TickSource:
    """Per-symbol random walks; chunks of COPY text, walking forwards or backwards in time."""

    rate: float  # ticks per second per symbol
    origin: datetime  # Kafka offsets count ticks from here (per symbol)
    rng: np.random.Generator
    prices: dict[str, float] = field(default_factory=lambda: {s: p for s, (p, _) in SYMBOLS.items()})

    def chunk(self, start: datetime, seconds: float, backwards: bool) -> tuple[bytes, int]:
        """COPY text of the ticks in [start, start + seconds), rows in event-time order (as they land)."""
        n = max(1, round(seconds * self.rate))
        first_offset = round((start - self.origin).total_seconds() * self.rate)
        spacing_ms = 1000.0 / self.rate
        base = np.datetime64(start.astimezone(UTC).replace(tzinfo=None), "ms")
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("ms", "sym", "price", "vol", "part", "offset")}
        for part, (symbol, (_, vol)) in enumerate(SYMBOLS.items()):
            ms = (np.arange(n) * spacing_ms + self.rng.uniform(0, spacing_ms * 0.999, n)).astype(np.int64)
            sigma = vol * math.sqrt(spacing_ms / 1000 / SECONDS_PER_YEAR)
            steps = self.rng.normal(0.0, sigma, n)
            if backwards:  # self.prices[symbol] is the price just after the chunk
                path = self.prices[symbol] * np.exp(np.cumsum(steps)[::-1])
                self.prices[symbol] = float(path[0])
            else:  # the price just before the chunk
                path = self.prices[symbol] * np.exp(np.cumsum(steps))
                self.prices[symbol] = float(path[-1])
            cols["ms"].append(ms)
            cols["sym"].append(np.full(n, symbol))
            cols["price"].append(np.round(path, 2))
            cols["vol"].append(np.round(self.rng.exponential(2000.0 / self.prices[symbol], n), 6))
            cols["part"].append(np.full(n, part))
            cols["offset"].append(first_offset + np.arange(n))
        ms = np.concatenate(cols["ms"])
        order = np.argsort(ms, kind="stable")
        times = base + ms[order].astype("timedelta64[ms]")
        event = np.datetime_as_string(times, unit="ms", timezone="UTC").tolist()
        produced = np.datetime_as_string(times + np.timedelta64(80, "ms"), unit="ms", timezone="UTC").tolist()
        sym = np.concatenate(cols["sym"])[order].tolist()
        price = np.concatenate(cols["price"])[order].astype(str).tolist()
        volume = np.concatenate(cols["vol"])[order].astype(str).tolist()
        part = np.concatenate(cols["part"])[order].astype(str).tolist()
        offset = np.concatenate(cols["offset"])[order].astype(str).tolist()
        text = "".join([f"{s}\t{e}\t{p}\t{v}\tSTREAM\t{pr}\t{PRODUCER}\t{o}\t{TOPIC}\t{pa}\t{o}\n"
                        for s, e, p, v, pr, o, pa in zip(sym, event, price, volume, produced, offset, part,
                                                         strict=True)])
        return text.encode(), len(sym)

    def sink_rows(self, start: datetime, count: int, spacing: float, first_offset: int) -> list[tuple[Any, ...]]:
        """`count` ticks for the sink's statement, round-robin over the symbols from `start`, `spacing` s apart."""
        rows = []
        names = list(SYMBOLS)
        for i in range(count):
            symbol = names[i % len(names)]
            at = start + timedelta(seconds=i * spacing)
            price = round(self.prices[symbol] * (1 + 1e-4 * math.sin(i / 50)), 2)
            rows.append((TOPIC, names.index(symbol), first_offset + i, symbol, price, at, 0.01 + (i % 17) / 100,
                         "STREAM", at + timedelta(milliseconds=80), PRODUCER, first_offset + i))
        return rows


def copy_chunk(conn: psycopg.Connection, data: bytes) -> float:
    """One COPY statement (one transaction): the candle trigger merges the whole chunk."""
    started = time.perf_counter()
    with conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
        step = 4 << 20
        for lo in range(0, len(data), step):
            copy.write(data[lo:lo + step])
    return time.perf_counter() - started


def analyze_candles(conn: psycopg.Connection) -> None:
    """After a day's COPY. Without it, a database whose candle_rollup was never analyzed (a fresh one taking
    history faster than autovacuum's first ANALYZE) can plan the merge trigger's prev/next-candle lookups
    on candle_rollup_symbol_bucket_utc with bucket as a filter: every new candle then reads all of its
    symbol's candles, and one day's COPY took 54-92 s instead of ~1 s at 5 days (--no-load-analyze)."""
    conn.execute("ANALYZE candle_rollup")
    conn.execute("ANALYZE candle_calendar")


UPSERT_500 = (f"INSERT INTO crypto_prices ({UPSERT_COLUMNS}) VALUES "
              + ", ".join(["(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"] * BATCH_ROWS) + UPSERT_TAIL)


def upsert_batch(conn: psycopg.Connection, rows: list[tuple[Any, ...]]) -> float:
    """One sink batch: one multi-row upsert, one transaction (conn is not autocommit). Seconds to commit."""
    started = time.perf_counter()
    conn.execute(UPSERT_500, [v for row in rows for v in row], prepare=True)
    conn.commit()
    return time.perf_counter() - started


# -- maintenance ------------------------------------------------------------------------------------
def has_maintenance(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regproc('raw_ticks_maintenance_step') IS NOT NULL").fetchone()[0]


@dataclass
class Step:
    result: str
    seconds: float
    started: float  # perf_counter


def maintain(conn: psycopg.Connection, keep_days: int | None, now: datetime, premake: int = 3) -> list[Step]:
    """raw_ticks_maintenance_step until NULL, each call its own transaction (conn is autocommit); a lock
    timeout (55P03) is retried, as the supervisor does, and recorded."""
    steps: list[Step] = []
    for _ in range(10_000):
        started = time.perf_counter()
        try:
            result = conn.execute("SELECT raw_ticks_maintenance_step(%s::integer, %s::integer, %s::timestamptz)",
                                  (keep_days, premake, now)).fetchone()[0]
        except psycopg.errors.LockNotAvailable as e:
            steps.append(Step(f"lock timeout ({e.diag.message_primary}), retried",
                              time.perf_counter() - started, started))
            time.sleep(0.2)
            continue
        if result is None:
            return steps
        steps.append(Step(result, time.perf_counter() - started, started))
    raise RuntimeError("raw_ticks_maintenance_step did not converge in 10,000 calls")


# -- measurements -----------------------------------------------------------------------------------
def query_sql(label: str, now: datetime) -> str:
    if label == RAW_QUERY:
        return RAW_SQL.format(symbol=QUERY_SYMBOL, since=(now - timedelta(hours=1)).isoformat(), until=now.isoformat())
    view, one_symbol, window = CANDLE_QUERIES[label]
    return POWER_BI_SQL.format(view=view, symbol_filter=f""""_"."symbol" = '{QUERY_SYMBOL}' and""" if one_symbol
                               else "", since=(now - window).isoformat(), until=now.isoformat())


def explain(reader: psycopg.Connection, label: str, now: datetime) -> str:
    rows = reader.execute("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, SUMMARY ON) " + query_sql(label, now)).fetchall()
    return "\n".join(r[0] for r in rows)


def storage(conn: psycopg.Connection) -> dict[str, int]:
    """Bytes of the raw ticks (every partition: heap + TOAST, indexes) and of the candle tables."""
    heap, indexes, parts = conn.execute(
        "SELECT coalesce(sum(pg_table_size(relid)), 0), coalesce(sum(pg_indexes_size(relid)), 0), count(*)"
        "  FROM (SELECT relid FROM pg_partition_tree('crypto_prices') WHERE isleaf"
        "        UNION SELECT 'crypto_prices'::regclass WHERE NOT EXISTS"
        "          (SELECT FROM pg_partitioned_table WHERE partrelid = 'crypto_prices'::regclass)) leaves"
        ).fetchone()
    rollup, calendar, database = conn.execute(
        "SELECT pg_total_relation_size('candle_rollup'), pg_total_relation_size('candle_calendar'),"
        " pg_database_size(current_database())").fetchone()
    return {"ticks_heap": int(heap), "ticks_indexes": int(indexes), "partitions": int(parts),
            "candle_rollup": int(rollup), "candle_calendar": int(calendar), "database": int(database)}


class SinkWriter(threading.Thread):
    """A sink-shaped writer committing batches of 500 upserts in a loop, recording each commit's time."""

    def __init__(self, dsn: str, source: TickSource, start: datetime, first_offset: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.source, self.at, self.offset = dsn, source, start, first_offset
        self.stop = threading.Event()
        self.commits: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn) as conn:
                while not self.stop.is_set():
                    rows = self.source.sink_rows(self.at, BATCH_ROWS, 0.01, self.offset)
                    self.at += timedelta(seconds=BATCH_ROWS * 0.01)
                    self.offset += BATCH_ROWS
                    upsert_batch(conn, rows)
                    self.commits.append(time.perf_counter())
        except BaseException as e:  # reported by the main thread
            self.error = e


def max_gap(commits: list[float], lo: float, hi: float) -> float:
    """The longest time between consecutive commits among those whose gap overlaps [lo, hi]."""
    gaps = [b - a for a, b in zip(commits, commits[1:], strict=False) if b >= lo and a <= hi]
    return max(gaps, default=0.0)


# -- the run ----------------------------------------------------------------------------------------
@dataclass
class Config:
    days: int
    points: list[int]
    rate: float
    repeats: int
    ingest_batches: int
    drops: int
    retention_days: int
    retention_keep: int
    retention_rate: float
    seed: int
    quick: bool
    load_analyze: bool


@dataclass
class Results:
    config: dict[str, Any]
    server: str = ""
    now: str = ""
    partitioned: bool = True
    raw_reader: str = ""
    load: list[dict[str, Any]] = field(default_factory=list)
    queries: dict[int, dict[str, Timing]] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)
    ticks_loaded: int = 0
    storage: dict[str, int] = field(default_factory=dict)
    ingest: dict[str, Any] = field(default_factory=dict)
    drops: list[dict[str, Any]] = field(default_factory=list)
    writer: dict[str, Any] = field(default_factory=dict)
    retention: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    argv: list[str] = field(default_factory=list)


class Cluster:
    """A throwaway cluster (the stack's Postgres service) and the databases the bench makes in it."""

    def __init__(self) -> None:
        self.state = tempfile.mkdtemp(prefix="history-bench-")
        self.claims = PortClaims()  # held until the bench exits
        os.environ.update({"CRYPTOPIPE_STATE": self.state, "POSTGRES_PORT": str(self.claims.claim())})
        self.settings = Settings.load()
        ensure_secrets(self.settings)  # the stack's passwords, generated into the bench's own state dir
        self.postgres = Postgres(self.settings)

    def up(self) -> None:
        log(f"starting PostgreSQL in {self.postgres.data_dir} (init.sql by scripts/init_db.sh) ...")
        self.postgres.up()

    def add_database(self, name: str) -> None:
        """Another database of the pipeline's, made the way the stack makes its own: scripts/init_db.sh."""
        settings = dataclasses.replace(self.settings, env={**self.settings.env, "POSTGRES_DB": name})
        Postgres(settings).apply_init_sql()

    def dsn(self, db: str, role: str = "admin") -> str:
        s = self.settings
        if role == "writer":
            return s.pg_dsn(user=s["CONNECT_DB_USER"], password=s["CONNECT_DB_PASSWORD"], dbname=db)
        if role == "reader":
            return s.pg_dsn(user=s["POWERBI_DB_USER"], password=s["POWERBI_DB_PASSWORD"], dbname=db)
        if role == "maintainer" and s.env.get("TICK_MAINTAINER_DB_USER"):
            with contextlib.suppress(KeyError):
                return s.pg_dsn(user=s["TICK_MAINTAINER_DB_USER"], password=s["TICK_MAINTAINER_DB_PASSWORD"],
                                dbname=db)
        return s.pg_dsn(dbname=db)

    def down(self) -> None:
        with contextlib.suppress(Exception):
            self.postgres.down()
        with contextlib.suppress(Exception):
            self.postgres.purge()
        shutil.rmtree(self.state, ignore_errors=True)


def load_history(cfg: Config, res: Results, cluster: Cluster, dbs: dict[int, str], now: datetime,
                 source: TickSource) -> None:
    """cfg.days days ending at NOW, newest day first, into dbs[p] while the day is within p days: the same
    ticks, so the databases differ only in how much history they hold. Times are the full database's."""
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        # The loading superuser makes the partitions too (the maintainer role may hold 2 sessions only).
        admin = {p: stack.enter_context(psycopg.connect(cluster.dsn(db), autocommit=True)) for p, db in dbs.items()}
        maint = admin
        full = max(dbs)
        if res.partitioned:
            for conn in maint.values():
                maintain(conn, None, now)  # today and the premade days, as the supervisor keeps them
        for k in range(1, cfg.days + 1):
            chunk_start = now - k * DAY
            t0 = time.perf_counter()
            data, ticks = source.chunk(chunk_start, DAY.total_seconds(), backwards=True)
            generated = time.perf_counter() - t0
            seconds, steps = 0.0, []
            for p in sorted(dbs, reverse=True):
                if k > p:
                    continue
                done = maintain(maint[p], None, chunk_start) if res.partitioned else []
                took = copy_chunk(admin[p], data)
                if cfg.load_analyze:
                    analyze_candles(admin[p])
                if p == full:
                    seconds, steps = took, done
            res.ticks_loaded += ticks
            res.load.append({"day": k, "ticks": ticks, "copy_s": seconds, "generate_s": generated,
                             "maintenance": [s.result for s in steps]})
            elapsed = time.perf_counter() - started
            log(f"  day {k:3d}/{cfg.days}: {ticks:,} ticks, COPY {seconds:4.1f} s ({ticks / seconds:,.0f} ticks/s,"
                f" candle trigger included); {res.ticks_loaded:,} ticks, {elapsed:.0f} s,"
                f" ETA {elapsed / k * (cfg.days - k):.0f} s")
        for p, conn in admin.items():
            for table in ("crypto_prices", "candle_rollup", "candle_calendar"):
                conn.execute(f"ANALYZE {table}")  # what autovacuum does by itself (never on a partitioned parent)
            log(f"  analyzed {dbs[p]}")


def measure_queries(cfg: Config, res: Results, cluster: Cluster, dbs: dict[int, str], now: datetime) -> None:
    """Each query on every database in turn (the order rotating), so the noise of the shared machine lands
    on all history sizes alike; median and p95 per database."""
    log(f"b. queries at {', '.join(map(str, dbs))} days of history, {cfg.repeats} runs each, interleaved ...")
    points = sorted(dbs)
    with contextlib.ExitStack() as stack:
        readers = {p: stack.enter_context(psycopg.connect(cluster.dsn(db, "reader"), autocommit=True))
                   for p, db in dbs.items()}
        admins = {p: stack.enter_context(psycopg.connect(cluster.dsn(db), autocommit=True)) for p, db in dbs.items()}
        can_read = readers[points[0]].execute("SELECT has_table_privilege('crypto_prices', 'SELECT')").fetchone()[0]
        res.raw_reader = "Power BI's role" if can_read else "the superuser (Power BI's role may not read crypto_prices)"
        raw = readers if can_read else admins
        for label in [*CANDLE_QUERIES, RAW_QUERY]:
            conns = raw if label == RAW_QUERY else readers
            sql = query_sql(label, now)
            samples: dict[int, list[float]] = {p: [] for p in points}
            rows: dict[int, int] = {}
            for p in points:
                conns[p].execute(sql).fetchall()  # warm-up: caches, hint bits
            for r in range(cfg.repeats):
                for p in points[r % len(points):] + points[:r % len(points)]:
                    started = time.perf_counter()
                    rows[p] = len(conns[p].execute(sql).fetchall())
                    samples[p].append((time.perf_counter() - started) * 1000)
            for p in points:
                ordered = sorted(samples[p])
                res.queries.setdefault(p, {})[label] = Timing(
                    statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], rows[p])
            log(f"  {label:<46} " + "  ".join(f"{p}d {res.queries[p][label].median_ms:6.2f} ms"
                                               f" ({res.queries[p][label].rows} rows)" for p in points))
        log("EXPLAIN ANALYZE ...")
        for label in [*CANDLE_QUERIES, RAW_QUERY]:
            conns = raw if label == RAW_QUERY else readers
            for p in (points[-1], points[0]):
                res.plans[f"{label}, {p} day{'s' if p > 1 else ''} of history"] = explain(conns[p], label, now)


def sink_ingest(cfg: Config, res: Results, cluster: Cluster, history_db: str, fresh_db: str, now: datetime,
                source: TickSource) -> None:
    """Batches of the same "now" ticks into the history and the fresh database, interleaved (which goes
    first alternates), as the sink's role."""
    log(f"a. sink-shaped ingest: {cfg.ingest_batches} batches of {BATCH_ROWS} per database, interleaved ...")
    times: dict[str, list[float]] = {"history": [], "fresh": []}
    with psycopg.connect(cluster.dsn(history_db, "writer")) as hist, \
            psycopg.connect(cluster.dsn(fresh_db, "writer")) as fresh:
        conns = {"history": hist, "fresh": fresh}
        for i in range(cfg.ingest_batches):
            rows = source.sink_rows(now + timedelta(seconds=1 + i * BATCH_ROWS * 0.01), BATCH_ROWS, 0.01,
                                    10**9 + i * BATCH_ROWS)
            order = ["history", "fresh"] if i % 2 == 0 else ["fresh", "history"]
            for name in order:
                times[name].append(upsert_batch(conns[name], rows))
            if (i + 1) % max(1, cfg.ingest_batches // 5) == 0:
                log(f"  {i + 1}/{cfg.ingest_batches} batches")
    rate = {k: BATCH_ROWS * len(v) / sum(v) for k, v in times.items()}
    res.ingest = {"batches": cfg.ingest_batches, "rows_per_batch": BATCH_ROWS,
                  "history_ticks_per_s": rate["history"], "fresh_ticks_per_s": rate["fresh"],
                  "ratio": rate["history"] / rate["fresh"],
                  "history_batch_ms_median": statistics.median(times["history"]) * 1000,
                  "fresh_batch_ms_median": statistics.median(times["fresh"]) * 1000,
                  "history_batch_ms": [t * 1000 for t in times["history"]],
                  "fresh_batch_ms": [t * 1000 for t in times["fresh"]]}
    log(f"  history {rate['history']:,.0f} ticks/s, fresh {rate['fresh']:,.0f} ticks/s:"
        f" ratio {res.ingest['ratio']:.1%}")


def retention_drops(cfg: Config, res: Results, cluster: Cluster, db: str, now: datetime, source: TickSource) -> None:
    """Drop the oldest day partition cfg.drops times (p_now = NOW, keep one day fewer each time) while a
    sink-shaped writer commits batches in a loop."""
    log(f"d. {cfg.drops} retention drop(s) while a sink-shaped writer commits batches of {BATCH_ROWS} ...")
    writer = SinkWriter(cluster.dsn(db, "writer"), TickSource(source.rate, source.origin, source.rng),
                        now + timedelta(hours=2), 2 * 10**9)
    baseline_s = 3.0
    with psycopg.connect(cluster.dsn(db, "maintainer"), autocommit=True) as maint:
        keep = cfg.days - 1  # the oldest partition is NOW's date - cfg.days: it goes first
        writer.start()
        time.sleep(baseline_s)
        t_base = time.perf_counter()
        for n in range(cfg.drops):
            steps = maintain(maint, keep - n, now)
            drop = [s for s in steps if s.result.startswith("dropped")]
            first, last = steps[0].started if steps else time.perf_counter(), time.perf_counter()
            entry = {"keep_days": keep - n, "steps": [dataclasses.asdict(s) for s in steps],
                     "drop_s": drop[0].seconds if drop else None,
                     "all_steps_s": sum(s.seconds for s in steps),
                     "lock_timeouts": sum(1 for s in steps if s.result.startswith("lock timeout")),
                     "writer_max_gap_s": max_gap(writer.commits, first, last + 0.5), "window": [first, last]}
            res.drops.append(entry)
            log(f"  keep {keep - n} days: " + "; ".join(f"{s.result} ({s.seconds * 1000:.0f} ms)" for s in steps)
                + f"; writer's longest gap around it {entry['writer_max_gap_s'] * 1000:.0f} ms")
            if writer.error:
                break
            time.sleep(2.0)
        writer.stop.set()
        writer.join(timeout=60)
    if writer.error:
        raise RuntimeError(f"the sink-shaped writer failed: {writer.error!r}")
    commits = writer.commits
    gaps = [b - a for a, b in zip(commits, commits[1:], strict=False)]
    t0 = commits[0] if commits else 0.0
    res.writer = {"batches": len(commits), "median_gap_ms": statistics.median(gaps) * 1000 if gaps else None,
                  "baseline_max_gap_ms": max_gap(commits, 0, t_base) * 1000,
                  "max_gap_ms": max(gaps, default=0) * 1000,
                  "commits_s": [c - t0 for c in commits],
                  "drop_windows_s": [[d["window"][0] - t0, d["window"][1] - t0] for d in res.drops]}
    log(f"  writer: {len(commits)} batches, median gap {res.writer['median_gap_ms']:.0f} ms, longest"
        f" {res.writer['max_gap_ms']:.0f} ms (before any drop: {res.writer['baseline_max_gap_ms']:.0f} ms)")


def retention_size(cfg: Config, res: Results, cluster: Cluster, db: str, now: datetime, seed: int) -> None:
    """Simulated days one by one, oldest first: load the day, run the maintenance steps (p_now = that day,
    keep cfg.retention_keep days), record pg_database_size."""
    log(f"e. database size over {cfg.retention_days} simulated days, retention {cfg.retention_keep} days,"
        f" {cfg.retention_rate:g} tick/s per symbol ...")
    first_day = datetime.combine(now.date() - timedelta(days=cfg.retention_days), datetime.min.time(), UTC)
    source = TickSource(cfg.retention_rate, first_day, np.random.default_rng(seed + 1))
    started = time.perf_counter()
    with psycopg.connect(cluster.dsn(db), autocommit=True) as admin, \
            psycopg.connect(cluster.dsn(db, "maintainer"), autocommit=True) as maint:
        maintain(maint, cfg.retention_keep, first_day)
        for d in range(1, cfg.retention_days + 1):
            day = first_day + (d - 1) * DAY
            data, ticks = source.chunk(day, DAY.total_seconds(), backwards=False)
            copy_s = copy_chunk(admin, data)
            if cfg.load_analyze:
                analyze_candles(admin)
            steps = maintain(maint, cfg.retention_keep, day)
            size = storage(admin)
            res.retention.append({"day": d, "date": day.date().isoformat(), "ticks": ticks, "copy_s": copy_s,
                                  "maintenance": [s.result for s in steps], **size})
            if d % 5 == 0 or d == cfg.retention_days or d == cfg.retention_keep + 2:
                elapsed = time.perf_counter() - started
                candles = (size["candle_rollup"] + size["candle_calendar"]) / 2**20
                log(f"  day {d:3d}/{cfg.retention_days}: database {size['database'] / 2**20:7.1f} MiB,"
                    f" {size['partitions']} partitions, candles {candles:.1f} MiB;"
                    f" {elapsed:.0f} s, ETA {elapsed / d * (cfg.retention_days - d):.0f} s")


def run(cfg: Config) -> Results:
    res = Results(config=dataclasses.asdict(cfg))
    started = time.perf_counter()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    res.now = now.isoformat()
    cluster = Cluster()
    db = cluster.settings["POSTGRES_DB"]
    fresh_db, retention_db = f"{db}_fresh", f"{db}_retention"
    dbs = {p: db if p == cfg.days else f"{db}_{p}d" for p in sorted({*cfg.points, cfg.days})}
    try:
        cluster.up()
        for name in [*(d for d in dbs.values() if d != db), fresh_db, retention_db]:
            log(f"database {name} (scripts/init_db.sh) ...")
            cluster.add_database(name)
        with psycopg.connect(cluster.dsn(db), autocommit=True) as admin:
            res.server = admin.execute("SHOW server_version").fetchone()[0]
            res.partitioned = has_maintenance(admin)
        if not res.partitioned:
            log("this schema has no raw_ticks_maintenance_step (crypto_prices unpartitioned): d and e are skipped")
        source = TickSource(cfg.rate, now - cfg.days * DAY, np.random.default_rng(cfg.seed))
        log(f"loading {cfg.days} days x {len(SYMBOLS)} symbols at {cfg.rate:g} tick/s (COPY per day, newest day"
            f" first; the first {', '.join(str(p) for p in dbs if p != cfg.days)} day(s) into their own databases"
            " too) ...")
        load_history(cfg, res, cluster, dbs, now, source)
        with psycopg.connect(cluster.dsn(db), autocommit=True) as admin:
            res.storage = storage(admin)
        log(f"c. {res.ticks_loaded:,} ticks: {res.storage}")
        measure_queries(cfg, res, cluster, {p: dbs[p] for p in cfg.points}, now)
        with psycopg.connect(cluster.dsn(fresh_db, "maintainer"), autocommit=True) as maint:
            if res.partitioned:
                maintain(maint, None, now)  # the fresh database's partitions, as the supervisor premakes them
        sink_ingest(cfg, res, cluster, db, fresh_db, now, source)
        if res.partitioned and cfg.drops > 0:
            retention_drops(cfg, res, cluster, db, now, source)
        if res.partitioned and cfg.retention_days > 0:
            retention_size(cfg, res, cluster, retention_db, now, cfg.seed)
    finally:
        cluster.down()
    res.elapsed_s = time.perf_counter() - started
    return res


# -- report -----------------------------------------------------------------------------------------
def met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**NOT met**")


def flatness(retention: list[dict[str, Any]], keep: int) -> dict[str, float] | None:
    after = [r["database"] for r in retention if r["day"] > keep + 1]
    if not retention or not after:
        return None
    ref = next(r["database"] for r in retention if r["day"] == keep + 1)
    days = [r["day"] for r in retention if r["day"] > keep + 1]
    slope = float(np.polyfit(days, after, 1)[0]) if len(after) > 1 else 0.0
    return {"reference": ref, "max_dev": max(abs(s - ref) / ref for s in after), "min": min(after),
            "max": max(after), "slope_per_day": slope}


def stored_bytes(st: dict[str, int]) -> int:
    return st["ticks_heap"] + st["ticks_indexes"] + st["candle_rollup"] + st["candle_calendar"]


def same_answer_point(res: Results, label: str) -> int:
    """The fewest days of history at which `label` returns what it returns at the most: its growth baseline
    (the 30-day query has 1 day of candles at 1 day of history, 1/30 of its answer)."""
    points = sorted(res.queries)
    rows = res.queries[points[-1]][label].rows
    return next(p for p in points if res.queries[p][label].rows == rows)


def summary(res: Results) -> list[dict[str, Any]]:
    """The results table's rows: what, target, measured, met."""
    cfg = res.config
    rows: list[dict[str, Any]] = []
    ing = res.ingest
    rows.append({"what": "a. sink-shaped ingest, history / fresh database",
                 "target": f">= {TARGET_INGEST_RATIO:.0%}",
                 "measured": f"{ing['ratio']:.1%} ({ing['history_ticks_per_s']:,.0f} vs {ing['fresh_ticks_per_s']:,.0f}"
                             " ticks/s)",
                 "met": ing["ratio"] >= TARGET_INGEST_RATIO})
    points = sorted(res.queries)
    first, last = points[0], points[-1]
    for label in CANDLE_QUERIES:
        base = same_answer_point(res, label)
        t_last, t_base = res.queries[last][label].median_ms, res.queries[base][label].median_ms
        measured = f"{t_last:.2f} ms, {t_last / t_base:.2f}x {base} day{'s' if base > 1 else ''}"
        if base != first:
            measured += (f" (vs {first} day: {t_last / res.queries[first][label].median_ms:.2f}x, but"
                         f" {res.queries[first][label].rows} rows then, {res.queries[last][label].rows} now)")
        rows.append({"what": f"b. {label} at {last} days",
                     "target": f"<= {TARGET_CANDLE_MS:.0f} ms and <= {TARGET_CANDLE_GROWTH}x {first} day"
                               " (same answer)",
                     "measured": measured,
                     "met": t_last <= TARGET_CANDLE_MS and t_last / t_base <= TARGET_CANDLE_GROWTH})
    t_raw = res.queries[last][RAW_QUERY].median_ms
    rows.append({"what": f"b. {RAW_QUERY} at {last} days", "target": f"<= {TARGET_RAW_MS:.0f} ms",
                 "measured": f"{t_raw:.2f} ms", "met": t_raw <= TARGET_RAW_MS})
    st = res.storage
    total = stored_bytes(st)
    rows.append({"what": "c. bytes per stored tick (partitions + indexes + candle tables)", "target": "-",
                 "measured": f"{total / res.ticks_loaded:.0f} B", "met": None})
    if res.drops:
        drop_times = [d["drop_s"] for d in res.drops if d["drop_s"] is not None]
        worst = max(drop_times, default=float("nan"))
        rows.append({"what": "d. one retention drop (raw_ticks_maintenance_step), worst of "
                             f"{len(res.drops)}", "target": f"<= {TARGET_DROP_S:.0f} s",
                     "measured": f"{worst * 1000:.0f} ms" if drop_times else "no drop happened",
                     "met": bool(drop_times) and worst <= TARGET_DROP_S})
        stall = max(d["writer_max_gap_s"] for d in res.drops)
        rows.append({"what": "d. writer's longest gap between commits during a drop",
                     "target": f"<= {TARGET_STALL_S:.0f} s",
                     "measured": f"{stall * 1000:.0f} ms (median gap {res.writer['median_gap_ms']:.0f} ms,"
                                 f" longest before any drop {res.writer['baseline_max_gap_ms']:.0f} ms)",
                     "met": stall <= TARGET_STALL_S})
    flat = flatness(res.retention, cfg["retention_keep"])
    if flat:
        rows.append({"what": f"e. database size after day {cfg['retention_keep'] + 1}, retention"
                             f" {cfg['retention_keep']} days",
                     "target": f"within +-{TARGET_FLAT:.0%} of day {cfg['retention_keep'] + 1}",
                     "measured": f"{flat['min'] / 2**20:.0f}-{flat['max'] / 2**20:.0f} MiB, max"
                                 f" {flat['max_dev']:+.1%} (trend {flat['slope_per_day'] / 2**20:+.2f} MiB/day)",
                     "met": flat["max_dev"] <= TARGET_FLAT})
    return rows


def plan_numbers(plan: str) -> tuple[float, int]:
    """Server execution time (ms) and shared buffer hits of the top node of an EXPLAIN (ANALYZE, BUFFERS)."""
    ms = next(float(line.split(":")[1].split()[0]) for line in plan.splitlines() if line.startswith("Execution Time"))
    hits = next(int(line.split("hit=")[1].split()[0]) for line in plan.splitlines() if "shared hit=" in line)
    return ms, hits


WHY = {
    "1m gap-filled candles, last 24 h, one symbol":
        "The view returns the window's candles from one index range of the rollup, and walks candle_calendar for"
        " the empty buckets: one probe of candle_rollup_pkey per calendar bucket (1,440 for a day of 1m) to skip"
        " the buckets that have a candle, and a latest-candle lookup per empty one. Those probes cost the"
        " B-tree's depth, which is what history adds: a day of candles has a primary key one level shallower than"
        " 30 or 90 days (the buffer hits above), hence just over 1.1x the 1-day time, and flat from 30 days on"
        " (90 / 30 days). Under 25 ms at every size. (Before init.sql's rewrite it looked the latest candle up"
        " for every bucket, candle or not: 37-41 ms on this bench.)",
}


def not_met(res: Results) -> list[str]:
    """For every target not met: by how much, and the plans' numbers (server time, buffers) at both ends."""
    last = max(res.queries)
    rows = [r for r in summary(res) if r["met"] is False]
    if not rows:
        return []
    lines = ["## Not met, and why", ""]
    for r in rows:
        lines.append(f"- **{r['what']}**: {r['measured']} against {r['target']}.")
        label = next((q for q in [*CANDLE_QUERIES, RAW_QUERY] if r["what"].startswith(f"b. {q} ")), None)
        if label:
            t = res.queries[last][label].median_ms
            limit = TARGET_RAW_MS if label == RAW_QUERY else TARGET_CANDLE_MS
            base = same_answer_point(res, label)
            growth = t / res.queries[base][label].median_ms
            over = []
            if t > limit:
                over.append(f"{t - limit:.1f} ms ({t / limit - 1:.0%}) over {limit:.0f} ms")
            if label != RAW_QUERY and growth > TARGET_CANDLE_GROWTH:
                over.append(f"{growth:.2f}x its {base}-day time against {TARGET_CANDLE_GROWTH}x")
            numbers = []
            for p in (base, last):
                key = f"{label}, {p} day{'s' if p > 1 else ''} of history"
                if key in res.plans:
                    ms, hits = plan_numbers(res.plans[key])
                    numbers.append(f"at {p} day{'s' if p > 1 else ''} {ms:.1f} ms on the server, {hits:,} buffer hits")
            t_base = res.queries[base][label].median_ms
            lines.append(f"  By {' and '.join(over)}. At {base} day{'s' if base > 1 else ''} it took {t_base:.1f} ms,"
                         f" {'already over' if t_base > limit else 'within'} {limit:.0f} ms. EXPLAIN ANALYZE:"
                         f" {'; '.join(numbers)} (plans below).")
            if label in WHY:
                lines.append(f"  {WHY[label]}")
    return [*lines, ""]


def render(res: Results) -> str:
    cfg = res.config
    points = sorted(res.queries)
    first, last = points[0], points[-1]
    st = res.storage
    ticks = res.ticks_loaded
    lines = [
        f"# History for months: {cfg['days']} days in the partitioned crypto_prices" if not cfg["quick"]
        else "# History bench (--quick: a smoke run, not the measurement)",
        "",
        f"`{' '.join(['python bench/history_bench.py', *res.argv])}` in {res.elapsed_s / 60:.0f} min on"
        f" {os.cpu_count()} cores shared with other work (noisy: compare ratios measured in the same run),"
        f" PostgreSQL {res.server} with default settings, a throwaway cluster (init.sql by scripts/init_db.sh).",
        f"History: {', '.join(SYMBOLS)}, {cfg['rate']:g} tick/s each, {cfg['days']} days ending {res.now}"
        f" ({ticks:,} ticks), prices a geometric random walk, every tick a real STREAM tick; loaded newest day"
        " first, one COPY per day as the superuser with the candle trigger running"
        + (" and the candle tables ANALYZEd after it (analyze_candles() says why)" if cfg["load_analyze"] else
           " (no ANALYZE between days: --no-load-analyze)")
        + (", each day's partition premade by raw_ticks_maintenance_step." if res.partitioned
           else " (this schema is not partitioned: no maintenance function)."),
        "",
        "## Results",
        "",
        "| measurement | target | measured | |",
        "|---|---|---|---|",
        *[f"| {r['what']} | {r['target']} | {r['measured']} | {met(r['met'])} |" for r in summary(res)],
        "",
        "![history bench](history.png)",
        "",
        "## b. Queries by days of history",
        "",
        "DirectQuery-shaped SQL (bench/candles_bench.py's four candle queries, the raw-tick query on"
        f" crypto_prices) as Power BI's role (raw ticks: {res.raw_reader}), windows ending at NOW, client-side"
        f" time (sent to last row fetched), median (p95) of {cfg['repeats']} runs after one warm-up. One database"
        " per history size, holding the same newest ticks (loaded together, ANALYZEd after the load); each run"
        " of a query goes to every database in turn, so the shared machine's noise lands on all sizes alike."
        " Every window's answer is the same at each size except the 30-day query's at 1 day (1 day of candles:"
        " its growth is judged from 30 days, where its answer is complete).",
        "",
        "| query | " + " | ".join(f"{p} day{'s' if p > 1 else ''} ms" for p in points)
        + "".join(f" | {last} / {p} day{'s' if p > 1 else ''}" for p in points[:-1]) + f" | rows at {last} days |",
        "|---|" + "---|" * (2 * len(points)),
    ]
    q = res.queries
    for label in [*CANDLE_QUERIES, RAW_QUERY]:
        cells = [f"{q[p][label].median_ms:.2f} ({q[p][label].p95_ms:.2f})" for p in points]
        cells += [f"{q[last][label].median_ms / q[p][label].median_ms:.2f}x" for p in points[:-1]]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {q[last][label].rows} |")
    load_s = sum(d["copy_s"] for d in res.load)
    lines += [
        "",
        f"Load: {ticks:,} ticks in {load_s:.0f} s of COPY ({ticks / load_s:,.0f} ticks/s with the candle trigger;"
        f" the slowest day {max(d['copy_s'] for d in res.load):.1f} s, the fastest"
        f" {min(d['copy_s'] for d in res.load):.1f} s).",
        "",
        "Why the ANALYZE after each day's COPY: without it (`--no-load-analyze`) a database whose candle_rollup"
        " was never analyzed (a fresh one taking history faster than autovacuum's first ANALYZE) planned the"
        " merge trigger's prev/next-candle lookups on candle_rollup_symbol_bucket_utc with bucket as a filter"
        " instead of the primary key's range: each new candle read all of its symbol's candles of that interval,"
        " and the 5th day's COPY took 54-92 s instead of ~1 s (measured at --quick's rate while writing this"
        " bench; each lookup reads every day already loaded, so on a longer history it would be far worse).",
        "",
        f"## a. Sink-shaped ingest with {cfg['days']} days of history vs a fresh database",
        "",
        f"{res.ingest['batches']} batches of {BATCH_ROWS} \"now\" ticks per database, each one multi-row"
        " `INSERT ... ON CONFLICT (symbol, event_time, price) DO UPDATE` (the sink's statement) committed on its"
        " own, as the sink's role; the same ticks into both databases (same cluster), batch by batch, the"
        " first database alternating. The fresh database was made by scripts/init_db.sh and its partitions"
        " premade by raw_ticks_maintenance_step, as the supervisor does.",
        "",
        "| database | ticks/s | median batch ms |",
        "|---|---|---|",
        f"| {cfg['days']} days of history | {res.ingest['history_ticks_per_s']:,.0f} |"
        f" {res.ingest['history_batch_ms_median']:.1f} |",
        f"| fresh | {res.ingest['fresh_ticks_per_s']:,.0f} | {res.ingest['fresh_batch_ms_median']:.1f} |",
        "",
        "## c. Bytes per stored tick",
        "",
        f"At {cfg['days']} days, {ticks:,} ticks, {st['partitions']} partitions (pg_table_size and"
        " pg_indexes_size summed over pg_partition_tree('crypto_prices') leaves; the candle tables'"
        " pg_total_relation_size):",
        "",
        "| part | MiB | bytes per tick |",
        "|---|---|---|",
        *[f"| {name} | {st[key] / 2**20:,.1f} | {st[key] / ticks:.1f} |" for name, key in
          (("ticks: heap (+TOAST)", "ticks_heap"), ("ticks: indexes (primary key, BRINs)", "ticks_indexes"),
           ("candle_rollup (with its indexes)", "candle_rollup"), ("candle_calendar", "candle_calendar"))],
        f"| **total** | {stored_bytes(st) / 2**20:,.1f} | **{stored_bytes(st) / ticks:.0f}** |",
        "",
        f"pg_database_size: {st['database'] / 2**20:,.0f} MiB.",
        "",
    ]
    if res.drops:
        lines += [
            "## d. Retention drops while the sink writes",
            "",
            f"A writer as the sink's role commits batches of {BATCH_ROWS} upserts in a loop (as fast as it can) into"
            f" the history database; after {3} s, `raw_ticks_maintenance_step(keep, 3, NOW)` is called until"
            " it returns NULL (each call its own transaction, as the maintainer role), keep = one day fewer each"
            " time, so each round drops the oldest day partition; 2 s between rounds. A gap is the time between"
            " two consecutive commits of the writer.",
            "",
            "| keep days | steps (time) | drop | lock timeouts | writer's longest gap around it |",
            "|---|---|---|---|---|",
            *[f"| {d['keep_days']} | "
              + "; ".join(f"`{s['result']}` ({s['seconds'] * 1000:.0f} ms)" for s in d["steps"])
              + f" | {d['drop_s'] * 1000 if d['drop_s'] is not None else float('nan'):.0f} ms | {d['lock_timeouts']}"
              f" | {d['writer_max_gap_s'] * 1000:.0f} ms |" for d in res.drops],
            "",
            f"Writer: {res.writer['batches']} batches, median gap {res.writer['median_gap_ms']:.0f} ms, longest gap"
            f" before any drop {res.writer['baseline_max_gap_ms']:.0f} ms, longest overall"
            f" {res.writer['max_gap_ms']:.0f} ms.",
            "",
        ]
    if res.retention:
        flat = flatness(res.retention, cfg["retention_keep"])
        lines += [
            f"## e. Database size over {cfg['retention_days']} simulated days, retention {cfg['retention_keep']} days",
            "",
            f"Its own database (scripts/init_db.sh), {cfg['retention_rate']:g} tick/s per symbol"
            + (" (fewer ticks than a-d, for time)" if cfg["retention_rate"] < cfg["rate"] else
               " (the same rate as a-d)")
            + f", oldest day first: COPY the day, then `raw_ticks_maintenance_step({cfg['retention_keep']}, 3, day)`"
            " until NULL, then pg_database_size. Candles of dropped days stay (they are final), so the candle tables"
            " keep growing slowly.",
            "",
            "| day | database MiB | partitions | candle tables MiB | maintenance |",
            "|---|---|---|---|---|",
            *[f"| {r['day']} | {r['database'] / 2**20:,.1f} | {r['partitions']} |"
              f" {(r['candle_rollup'] + r['candle_calendar']) / 2**20:.1f} | "
              + ", ".join(f"`{m}`" for m in r["maintenance"] if m.startswith(("dropped", "expired"))) + " |"
              for r in res.retention if r["day"] in (1, 2) or r["day"] % 5 == 0 or r["day"] >= cfg["retention_keep"]
              and r["day"] <= cfg["retention_keep"] + 2 or r["day"] == cfg["retention_days"]],
            "",
        ]
        if flat:
            lines += [f"After day {cfg['retention_keep'] + 1}: {flat['min'] / 2**20:.0f}-{flat['max'] / 2**20:.0f} MiB,"
                      f" at most {flat['max_dev']:+.1%} from day {cfg['retention_keep'] + 1}'s"
                      f" {flat['reference'] / 2**20:.0f} MiB; linear trend {flat['slope_per_day'] / 2**20:+.2f} MiB/day"
                      " (the candles of the days kept for ever)"
                      + (f": at that rate the size leaves the +-{TARGET_FLAT:.0%} band about day"
                         f" {cfg['retention_keep'] + 1 + TARGET_FLAT * flat['reference'] / flat['slope_per_day']:.0f}"
                         f" and grows {365 * flat['slope_per_day'] / 2**20:,.0f} MiB a year."
                         if flat["slope_per_day"] > 0 else "."), ""]
    lines += not_met(res)
    lines += [f"## Plans at {last} and {first} day{'s' if first > 1 else ''} (EXPLAIN ANALYZE, BUFFERS)", ""]
    for label, plan in res.plans.items():
        lines += [f"### {label}", "", "```", plan, "```", ""]
    lines += [
        "## Rerun",
        "",
        "```",
        "python bench/history_bench.py           # this file, history.json, history.png (~20-30 min on 2 cores)",
        "python bench/history_bench.py --quick   # < 3 min smoke run (CI), results in a temp dir",
        "python bench/history_bench.py --help    # days, rate, repeats, retention simulation, output dir",
        "python bench/history_bench.py --render bench/results/history.json   # this report again from the data",
        "```",
        "",
    ]
    return "\n".join(lines)


def plot(res: Results, out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing (pip install -e '.[test]'): no plot")
        return None
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    points = sorted(res.queries)
    for label in [*CANDLE_QUERIES, RAW_QUERY]:
        ax.plot(points, [res.queries[p][label].median_ms for p in points], marker="o", label=label)
    ax.axhline(TARGET_CANDLE_MS, color="grey", linestyle="--", linewidth=0.8, label="candle target 25 ms")
    ax.axhline(TARGET_RAW_MS, color="grey", linestyle=":", linewidth=0.8, label="raw-tick target 50 ms")
    ax.set(xlabel="days of history", ylabel="median ms", title="b. DirectQuery-shaped queries", yscale="log")
    ax.legend(fontsize=7)
    ax = axes[0][1]
    ax.boxplot([res.ingest["history_batch_ms"], res.ingest["fresh_batch_ms"]], showfliers=False)
    ax.set_xticks([1, 2], [f"{res.config['days']} days of history", "fresh"])
    ax.set(ylabel=f"ms per batch of {BATCH_ROWS}",
           title=f"a. sink-shaped ingest: history/fresh = {res.ingest['ratio']:.0%}")
    ax = axes[1][0]
    if res.writer:
        commits = res.writer["commits_s"]
        ax.plot(commits[1:], [(b - a) * 1000 for a, b in zip(commits, commits[1:], strict=False)], linewidth=0.7)
        for lo, hi in res.writer["drop_windows_s"]:
            ax.axvspan(lo, max(hi, lo + 0.05), color="red", alpha=0.3)
        ax.axhline(TARGET_STALL_S * 1000, color="grey", linestyle="--", linewidth=0.8)
        ax.set(xlabel="s", ylabel="ms since the previous commit",
               title="d. writer's gaps between commits (red: maintenance calls that drop a day)")
    ax = axes[1][1]
    if res.retention:
        days = [r["day"] for r in res.retention]
        ax.plot(days, [r["database"] / 2**20 for r in res.retention], marker=".", label="pg_database_size")
        ax.plot(days, [(r["candle_rollup"] + r["candle_calendar"]) / 2**20 for r in res.retention],
                label="candle tables")
        flat = flatness(res.retention, res.config["retention_keep"])
        if flat:
            ref = flat["reference"] / 2**20
            ax.axhspan(ref * (1 - TARGET_FLAT), ref * (1 + TARGET_FLAT), color="green", alpha=0.1, label="+-10%")
        ax.axvline(res.config["retention_keep"] + 1, color="grey", linestyle=":", linewidth=0.8)
        ax.set(xlabel="simulated day", ylabel="MiB",
               title=f"e. database size, retention {res.config['retention_keep']} days")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "history.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def to_json(res: Results) -> dict[str, Any]:
    data = dataclasses.asdict(res)
    data["queries"] = {str(days): {k: dataclasses.asdict(v) for k, v in q.items()} for days, q in res.queries.items()}
    data["summary"] = summary(res)
    return data


def parse_args(argv: list[str]) -> tuple[Config, Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke run (< 3 min): 30 days at 0.02 tick/s, queries at 1 and 30 days, 10 runs,"
                             " 30 ingest batches, 1 drop, 20 retention days keeping 10; writes to a temp dir unless"
                             " --out is given. Checks the bench works; its numbers are not the measurement")
    parser.add_argument("--days", type=int, help="days of history (default 90)")
    parser.add_argument("--points", help="days of history at which queries are measured (default 1,30,90)")
    parser.add_argument("--rate", type=float, help="ticks per second per symbol (default 1)")
    parser.add_argument("--repeats", type=int, help="timed runs per query and history size (default 30)")
    parser.add_argument("--ingest-batches", type=int, help="sink batches per database in a (default 300)")
    parser.add_argument("--drops", type=int, help="retention drops in d (default 3; 0 skips d)")
    parser.add_argument("--retention-days", type=int, help="simulated days in e (default 60; 0 skips e)")
    parser.add_argument("--retention-keep", type=int, help="retention in days in e (default 30)")
    parser.add_argument("--retention-rate", type=float, help="ticks per second per symbol in e (default: --rate)")
    parser.add_argument("--no-load-analyze", action="store_true",
                        help="no ANALYZE of the candle tables after each day's COPY (shows the trigger's bad plan)")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--out", type=Path, help="where history.md, .json and .png go (default bench/results)")
    args = parser.parse_args(argv)
    quick = args.quick

    def pick(value: Any, full: Any, smoke: Any) -> Any:
        return value if value is not None else (smoke if quick else full)

    rate = pick(args.rate, 1.0, 0.02)
    days = pick(args.days, 90, 30)
    points = pick(args.points, "1,30,90", "1,30")
    cfg = Config(days=days, points=sorted({int(p) for p in points.split(",") if 0 < int(p) <= days}),
                 rate=rate, repeats=pick(args.repeats, 30, 10), ingest_batches=pick(args.ingest_batches, 300, 30),
                 drops=pick(args.drops, 3, 1), retention_days=pick(args.retention_days, 60, 20),
                 retention_keep=pick(args.retention_keep, 30, 10), retention_rate=pick(args.retention_rate, rate, rate),
                 seed=args.seed, quick=quick, load_analyze=not args.no_load_analyze)
    if not cfg.points:
        parser.error("--points: none within --days")
    out = args.out or (Path(tempfile.mkdtemp(prefix="history-bench-out-")) if quick else ROOT / "bench" / "results")
    return cfg, out


def from_json(data: dict[str, Any]) -> Results:
    """The Results a run wrote to history.json (to render the report again without rerunning)."""
    fields = {f.name for f in dataclasses.fields(Results)}
    res = Results(**{k: v for k, v in data.items() if k in fields})
    res.queries = {int(days): {label: Timing(**t) for label, t in q.items()} for days, q in data["queries"].items()}
    res.config.setdefault("load_analyze", True)
    return res


def write(res: Results, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(to_json(res), indent=1, default=str))
    report = render(res)
    (out / "history.md").write_text(report)
    plot(res, out)
    print(report)
    log(f"written: {out}/history.md, history.json, history.png")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--render"]:  # history.md and .png again from a run's history.json
        path = Path(argv[1]) if len(argv) > 1 else ROOT / "bench" / "results" / "history.json"
        write(from_json(json.loads(path.read_text())), path.parent)
        return
    cfg, out = parse_args(argv)
    res = run(cfg)
    res.argv = argv
    write(res, out)


if __name__ == "__main__":
    main()
