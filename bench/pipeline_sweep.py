"""The data-shape sweep of bench/pipeline_bench.py: what candle maintenance costs the sink and a COPY when
ticks are 0.1, 1, 10 or 100 ms apart in event time (a sink batch then spans one 1-minute candle or many).

On the running native stack of the bench: the production symbols (SYMBOLS in .env) and a history of their
ticks already in crypto_prices (--sweep-history-days at 1 tick/s per symbol, COPYed with candles, in daily
partitions made beforehand as the tick maintainer makes them), then per spacing:

  sink    --sweep-ticks ticks produced by the real producer while the connector (as committed) is paused,
          then resumed: ticks/s until the last is visible. With candles and without (the rollup trigger
          disabled), in the order with, without, without, with (--sweep-repeats times), so drift on a shared
          machine hits both alike; first a warm-up run at the spacing, not counted: a full one at the first
          spacing (after 30,000 ticks of warm-up, the next run, with candles, still took 1.6-2x as long as the
          other three with candles: the worker's JVM was still warming up), 30,000 ticks at the others.
  COPY    --sweep-copy-ticks ticks COPYed into crypto_prices with and without the trigger, same order,
          rolled back.

  EXPLAIN the database's side alone, after the sink runs: EXPLAIN ANALYZE of upserts shaped like the sink's
          (its measured rows per upsert), with the trigger and without, rolled back, all in the window right
          after the last sink run's candles.

Every run gets an event-time window of its own (consecutive, ending a few minutes before now), so no run
meets another's rows or dead rows, and starts on vacuumed, analyzed tables (untimed): autovacuum otherwise
woke up during some runs and not others (5 vacuums and 6 analyzes of the runs' partition in 5 minutes).
For each sink run pg_stat_statements (track = all, for the run only)
gives the sink's statements, their rows and execution time, and the rollup's statements inside them.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stack_driver import (
    COPY_COLUMNS,
    MERGE_IN_STATEMENT,
    ROLLUP_TRIGGER,
    NativeStack,
    copy_into,
    copy_rows,
    produce_all,
    row_counter,
    set_rollup,
    timed_copy,
    wait_for_count,
    write_replay,
)

SPACINGS_MS = (0.1, 1.0, 10.0, 100.0)
ORDER = (True, False, False, True)  # candles on/off per repeat: ABBA
HISTORY_STEP_S = 1.0  # production: about one tick per second per symbol
EXPLAIN_BATCHES = 12  # statements of each kind per spacing (EXPLAIN ANALYZE)
WARM_UP_TICKS = 30_000  # the uncounted sink run before each later spacing's; the first's is a full run


@dataclass
class Run:
    path: str           # "sink" or "COPY"
    spacing_ms: float
    candles: bool
    ticks: int
    seconds: float
    profile: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ticks / self.seconds


@dataclass
class Timeline:
    """Consecutive event-time windows [lo, hi) in whole milliseconds, handed out from `next_ms` on."""

    next_ms: int

    def take(self, ticks: int, spacing_ms: float) -> tuple[int, int]:
        lo = self.next_ms
        self.next_ms += math.ceil(ticks * spacing_ms)  # > the last tick's (ticks - 1) spacings
        return lo, self.next_ms


# The sink's upserts (calls, rows), the server time of all its statements (upserts, and Hibernate's metadata
# queries and transaction statements), and that of the rollup trigger's statements inside them.
PROFILE_SQL = """
SELECT coalesce(sum(calls) FILTER (WHERE toplevel AND userid = %(sink)s::regrole AND query ILIKE 'insert%%'), 0),
       coalesce(sum(rows) FILTER (WHERE toplevel AND userid = %(sink)s::regrole AND query ILIKE 'insert%%'), 0),
       coalesce(sum(total_exec_time) FILTER (WHERE toplevel AND userid = %(sink)s::regrole), 0),
       coalesce(sum(total_exec_time) FILTER (WHERE NOT toplevel AND query ~* 'candle_(rollup|calendar|pending)'), 0),
       coalesce(sum(calls) FILTER (WHERE NOT toplevel AND query ~* 'INSERT INTO candle_rollup'), 0)
  FROM pg_stat_statements
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

# The sink's upserts by rows per statement: the driver rewrites a batch into multi-row statements, each size
# its own statement text.
SIZES_SQL = """
SELECT rows / calls, sum(calls) FROM pg_stat_statements
 WHERE toplevel AND userid = %(sink)s::regrole AND calls > 0 AND query ILIKE 'insert%%'
   AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 GROUP BY 1 ORDER BY 1
"""


class Sweep:
    def __init__(self, stack: NativeStack, work: Path, log: Callable[[str], None], ticks: int, copy_ticks: int,
                 history_days: float, repeats: int = 2, spacings: Sequence[float] = SPACINGS_MS) -> None:
        self.stack, self.work, self.log = stack, work, log
        self.ticks, self.copy_ticks, self.history_days, self.spacings = ticks, copy_ticks, history_days, spacings
        self.sink_order = ORDER * repeats
        self.warm_up_ticks = min(ticks, WARM_UP_TICKS)
        self.symbols = stack.settings["SYMBOLS"].split(",")
        self.topic = stack.settings["TICKS_TOPIC"]
        self.runs: list[Run] = []
        self.notes: list[str] = []
        self.explains: list[dict[str, Any]] = []
        # every spacing reserves a full warm-up (only the first runs one; the later ones run fewer ticks)
        span_ms = sum(((len(self.sink_order) + 1) * ticks + len(ORDER) * copy_ticks + 2 * EXPLAIN_BATCHES * 2000) * s
                      for s in spacings)
        end_ms = time.time() * 1000 - 5 * 60_000
        self.timeline = Timeline(math.floor(end_ms - span_ms))
        self.history_from_ms = self.timeline.next_ms - history_days * 86_400_000

    # -- set-up ----------------------------------------------------------------------------------------
    def prepare(self) -> None:
        first = datetime.fromtimestamp(self.history_from_ms / 1000, UTC).replace(hour=0, minute=0, second=0,
                                                                                 microsecond=0)
        with self.stack.pg() as conn:
            day, made = first, 0
            while day <= datetime.now(UTC):
                covered = conn.execute("SELECT EXISTS (SELECT FROM raw_tick_partitions WHERE from_time <= %s"
                                       " AND to_time > %s)", (day, day)).fetchone()[0]
                if not covered:
                    conn.execute("SELECT create_raw_tick_partition(%s)", (day,))
                    made += 1
                day += timedelta(days=1)
            history = int(self.history_days * 86_400 / HISTORY_STEP_S) * len(self.symbols)
            self.log(f"sweep: {made} daily partitions made; {history:,} ticks of history ({self.history_days:g} days"
                     f" of {', '.join(self.symbols)} at 1 tick/s) COPYed with candles ...")
            data = copy_rows(self.symbols, history, self.history_from_ms, HISTORY_STEP_S * 1000 / len(self.symbols),
                             self.topic)
            copy_into(conn, data)
            conn.execute("ANALYZE crypto_prices")
            conn.execute("ANALYZE candle_rollup")
        self.notes.append(f"{history:,} ticks of history before the runs ({self.history_days:g} days, 1 tick/s per "
                          f"symbol), {made} daily partitions made for the runs' days")

    def track_nested(self, on: bool) -> None:
        """pg_stat_statements also counts the statements of the rollup trigger (reloaded into every session)."""
        with self.stack.pg() as conn:
            if on:
                conn.execute("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
            else:
                conn.execute("ALTER SYSTEM RESET pg_stat_statements.track")
            conn.execute("SELECT pg_reload_conf()")

    # -- runs ------------------------------------------------------------------------------------------
    def sink(self, spacing_ms: float, candles: bool, ticks: int, record: bool = True) -> Run:
        lo, hi = self.timeline.take(ticks, spacing_ms)
        replay = self.work / "sweep.jsonl"
        write_replay(replay, self.symbols, ticks, lo, spacing_ms)
        self.stack.pause()
        produce_all(self.stack, self.topic, replay, self.symbols, ticks)
        self.vacuum()
        set_rollup(self.stack, candles)
        try:
            with self.stack.pg() as conn:
                conn.execute("SELECT pg_stat_statements_reset()")
            counter = row_counter(self.stack, self.symbols, (lo, hi))
            started = time.monotonic()
            self.stack.resume()
            done = wait_for_count(counter, ticks, 900, lambda v: self.log(f"  {v:,.0f} of {ticks:,} landed"))
            profile = self.profile()
        finally:
            set_rollup(self.stack, True)
        run = Run("sink", spacing_ms, candles, ticks, done - started, profile)
        if record:
            self.record(run)
        return run

    def vacuum(self) -> None:
        """Every run starts from the same state: the previous runs' rows vacuumed and analyzed."""
        with self.stack.pg() as conn:
            conn.execute("VACUUM (ANALYZE) crypto_prices, candle_rollup, candle_calendar")

    def profile(self) -> dict[str, Any]:
        sink = {"sink": self.stack.settings["CONNECT_DB_USER"]}
        with self.stack.pg() as conn:
            calls, rows, exec_ms, rollup_ms, rollup_calls = conn.execute(PROFILE_SQL, sink).fetchone()
            sizes = conn.execute(SIZES_SQL, sink).fetchall()
        return {"statements": int(calls), "rows": int(rows), "exec_ms": round(float(exec_ms), 1),
                "rollup_ms": round(float(rollup_ms), 1), "rollup_statements": int(rollup_calls),
                "sizes": {str(size): int(n) for size, n in sizes}}

    def copy(self, spacing_ms: float, candles: bool) -> Run:
        lo, _ = self.timeline.take(self.copy_ticks, spacing_ms)
        data = copy_rows(self.symbols, self.copy_ticks, lo, spacing_ms, self.topic)
        self.vacuum()
        run = Run("COPY", spacing_ms, candles, self.copy_ticks, timed_copy(self.stack, data, candles))
        self.record(run)
        return run

    def explain_batches(self, spacing_ms: float, rows: int, batches: int) -> dict[str, Any]:
        """The database's side alone: EXPLAIN ANALYZE of `batches` upserts shaped like the sink's (`rows` ticks
        `spacing_ms` apart per statement, ON CONFLICT on the tick key), with the rollup trigger and without,
        alternating, each rolled back; server milliseconds per statement and the trigger's. The candles are
        merged at the end of each statement (SET CONSTRAINTS ALL IMMEDIATE), as in a transaction of one
        statement: rolled back, the statement would never reach the merge at commit."""
        times: dict[bool, list[float]] = {True: [], False: []}
        trigger_ms: list[float] = []
        with self.stack.pg(autocommit=False) as conn:
            conn.execute(f"CREATE TEMP TABLE sweep_batch ON COMMIT PRESERVE ROWS AS SELECT {COPY_COLUMNS}"
                         " FROM crypto_prices LIMIT 0")
            # The session's staging tables, made once as in a sink session (made by a rolled-back statement,
            # they would go with it, and every statement would pay for making them again).
            conn.execute("SELECT candle_pending_prepare()")
            conn.commit()

            # One window for all: each statement is rolled back, and all start right after the last sink run's
            # candles (a window after a gap would make each statement fill the calendar over the gap).
            lo, _ = self.timeline.take(rows, spacing_ms)

            def upsert(candles: bool) -> dict[str, Any]:
                conn.execute("TRUNCATE sweep_batch")
                conn.execute(MERGE_IN_STATEMENT)
                with conn.cursor().copy(f"COPY sweep_batch ({COPY_COLUMNS}) FROM STDIN") as copy:
                    copy.write(copy_rows(self.symbols, rows, lo, spacing_ms, self.topic))
                if not candles:
                    conn.execute(f"ALTER TABLE crypto_prices DISABLE TRIGGER {ROLLUP_TRIGGER}")
                plan = conn.execute(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) INSERT INTO crypto_prices ({COPY_COLUMNS}) SELECT {COPY_COLUMNS}"
                    " FROM sweep_batch ON CONFLICT (symbol, event_time, price) DO UPDATE SET volume = EXCLUDED.volume"
                ).fetchone()[0][0]
                conn.rollback()
                return plan

            for i in range(2 * batches):
                candles = i % 4 in (0, 3)  # ABBA
                plan = upsert(candles)
                times[candles].append(plan["Execution Time"])
                if candles:
                    trigger_ms.append(sum(t["Time"] for t in plan.get("Triggers", [])
                                          if t["Trigger Name"] == ROLLUP_TRIGGER))
            # One more, not counted: the plans of the trigger's statements, from auto_explain (sent as notices).
            plans: list[str] = []
            conn.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
            conn.execute("LOAD 'auto_explain'")
            for setting in ("log_min_duration = 0", "log_analyze = on", "log_nested_statements = on",
                            "log_level = notice", "log_timing = on"):
                conn.execute(f"SET auto_explain.{setting}")
            conn.commit()
            upsert(True)
        result = {"spacing_ms": spacing_ms, "rows": rows, "batches": batches,
                  "with_ms": statistics.median(times[True]), "without_ms": statistics.median(times[False]),
                  "trigger_ms": statistics.median(trigger_ms),
                  "trigger_plans": [p for p in plans if "candle_" in p and "EXPLAIN" not in p]}
        self.log(f"  => EXPLAIN ANALYZE, {rows} ticks {spacing_ms:g} ms apart per statement: median "
                 f"{result['with_ms']:.2f} ms with candles (trigger {result['trigger_ms']:.2f} ms), "
                 f"{result['without_ms']:.2f} ms without")
        return result

    def record(self, run: Run) -> None:
        self.runs.append(run)
        extra = ""
        if run.profile:
            p = run.profile
            extra = (f" ({p['statements']:,} upserts, {p['rows'] / max(p['statements'], 1):,.0f} rows each,"
                     f" {p['exec_ms'] / 1000:.2f} s executing, of which rollup {p['rollup_ms'] / 1000:.2f} s)")
        self.log(f"  => {run.path} {run.spacing_ms:g} ms apart, {'with' if run.candles else 'without'} candles: "
                 f"{run.ticks:,} ticks in {run.seconds:.2f} s = {run.rate:,.0f} ticks/s{extra}")

    def run(self) -> dict[str, Any]:
        self.prepare()
        self.track_nested(True)
        try:
            for spacing in self.spacings:
                self.log(f"sweep: ticks {spacing:g} ms apart: a warm-up sink run (not counted), the sink with and"
                         " without candles, then COPY ...")
                first = spacing == self.spacings[0]
                self.sink(spacing, True, self.ticks if first else self.warm_up_ticks, record=False)
                for candles in self.sink_order:
                    self.sink(spacing, candles, self.ticks)
                sink = [r.profile for r in self.runs if r.path == "sink" and r.spacing_ms == spacing]
                rows = round(sum(p["rows"] for p in sink) / max(sum(p["statements"] for p in sink), 1)) or 128
                self.explains.append(self.explain_batches(spacing, rows, EXPLAIN_BATCHES))  # ORDER ends with candles
                for candles in ORDER:
                    self.copy(spacing, candles)
        finally:
            self.track_nested(False)
        return {"symbols": self.symbols, "ticks": self.ticks, "counted": "upserts",
                "explain_window": "right after the last sink run's candles", "copy_ticks": self.copy_ticks,
                "history_days": self.history_days, "order": list(self.sink_order), "copy_order": list(ORDER),
                "warm_up_ticks": self.warm_up_ticks, "notes": self.notes,
                "runs": [{**asdict(r), "rate": round(r.rate, 1)} for r in self.runs], "explains": self.explains}
