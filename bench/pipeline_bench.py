"""End-to-end pipeline benchmark: one command, one run, on the real native stack.

Starts its own stack (`python -m stack up`, temp state dir, free ports), measures, and always stops it
with `down --purge`. Ticks come from replay files through the real producer (`python -m producer --source
replay`), travel Kafka and the JDBC sink connector, and land in crypto_prices with the candle rollup
maintained, unless a step says otherwise. Each step uses symbols of its own (spread so that one lands on
each of the topic's 3 partitions). In order:

  steady (fresh)        1,000 ticks/s for --steady-seconds; freshness sampled every 100 ms
                        (now - newest produced_at visible in crypto_prices)
  backlog               connector paused, --backlog ticks produced (the producer's rate: broker end offsets
                        over time), connector resumed: the sink's rate with candles
  data-shape sweep      bench/pipeline_sweep.py: the production symbols with history, ticks 0.1 / 1 / 10 / 100 ms
                        apart: the sink (as committed) and a COPY, each with and without candles, interleaved
  COPY ceilings         --backlog ticks COPYed into crypto_prices with and without candle maintenance
                        (the insert trigger disabled inside the transaction), both rolled back, into the
                        symbols and the minute the next step writes
  steady (after backlog) the steady step again, right after the two above
  steady + COPY         the steady step while the COPY with candles (rolled back) writes the same symbols:
                        the sink waits for the candle rows the COPY's rollup holds until it ends
  backlog, no candles   the backlog step with the rollup trigger disabled
  while producing       --backlog ticks produced as fast as possible while the sink runs
  seed-style consumer   a hand-written consumer (AvroDeserializer, one INSERT + commit per record) into
                        crypto_prices with candles, for --seed-seconds
  sink settings         backlogs of --tuning-backlog ticks with batch.size 500, and without
                        reWriteBatchedInserts (one row per statement)
  scale-out             3 tasks on 1 worker; a second worker joins the group; 3 tasks on 2 workers
  failover              2 workers, 3 tasks, 1,000 ticks/s; the worker with most tasks is SIGKILLed after
                        20 s: time until its tasks run on the other, freshness meanwhile, every tick once,
                        candles equal to an independent pandas computation
  memory                proportional set size (PSS) of every stack process, sampled every 5 s

Writes bench/results/pipeline.md (tables, targets), pipeline.json (every sample) and two plots,
pipeline_throughput.png and pipeline_freshness.png; the sweep into pipeline_sweep.md, .json and .png.
Takes ~15 minutes on 2 cores, plus the sweep's ~20 (measured beside four other helpers' stacks).

    python bench/pipeline_bench.py              # the full run, results into bench/results/
    python bench/pipeline_bench.py --sweep-only # the data-shape sweep alone (pipeline_sweep.*)
    python bench/pipeline_bench.py --quick      # small sizes, a smoke run, results into /tmp
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from confluent_kafka import Consumer
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_report import render_markdown, render_plots, render_sweep_markdown, render_sweep_plot  # noqa: E402
from pipeline_sweep import Sweep  # noqa: E402
from stack_driver import (  # noqa: E402
    COPY_COLUMNS,
    ROOT,
    NativeStack,
    Series,
    background_activity,
    copy_rows,
    finish,
    freshness_probe,
    produce_all,
    replay_until_landed,
    row_counter,
    run_producer,
    sampling,
    set_rollup,
    spread_symbols,
    timed_copy,
    topic_end_offsets,
    wait_for_count,
    worker_property,
    write_replay,
)

from control.kafka_setup import writable_topic  # noqa: E402
from producer.schema_registration import registry_client  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Bench:
    def __init__(self, stack: NativeStack, args: argparse.Namespace, work: Path) -> None:
        self.stack, self.args, self.work = stack, args, work
        self.topic = stack.settings["TICKS_TOPIC"]
        self.results: dict[str, Any] = {"rates": [], "freshness": {}, "memory": {}, "notes": []}
        self._tag = uuid.uuid4().hex[:4].upper()
        self._step = 0

    def symbols(self, kind: str) -> list[str]:
        self._step += 1
        return spread_symbols(f"{kind}{self._tag}{self._step}X")

    def rate(self, path: str, ticks: int, seconds: float, **extra: Any) -> float:
        rate = ticks / seconds
        self.results["rates"].append({"path": path, "ticks": ticks, "seconds": round(seconds, 3),
                                      "rate": round(rate, 1), **extra})
        log(f"  => {path}: {ticks:,} ticks in {seconds:.2f} s = {rate:,.0f} ticks/s")
        return rate

    # -- steps -------------------------------------------------------------------------------------
    def produce_backlog(self, symbols: list[str], count: int) -> float:
        """Produce `count` ticks (event times in the last minutes) as fast as the producer can; returns the
        producer's rate, measured on the broker's end offsets."""
        replay = self.work / f"{symbols[0]}.jsonl"
        write_replay(replay, symbols, count, now_ms() - count // 10 - 60_000, 0.1)
        return produce_all(self.stack, self.topic, replay, symbols, count)

    def backlog(self, label: str, count: int, candles: bool = True, record_producer: bool = False,
                **extra: Any) -> float:
        log(f"{label}: pausing the connector, producing {count:,} ticks ...")
        symbols = self.symbols("B")
        self.stack.pause()
        producer_rate = self.produce_backlog(symbols, count)
        if record_producer:
            self.rate("producer (python -m producer, replay --speed 0, acks=all)", count, count / producer_rate)
        set_rollup(self.stack, candles)
        try:
            counter = row_counter(self.stack, symbols)
            started = time.monotonic()
            self.stack.resume()
            log("  resumed; waiting for every tick to land ...")
            done = wait_for_count(counter, count, 900, lambda v: log(f"  {v:,.0f} of {count:,} landed"))
        finally:
            set_rollup(self.stack, True)
        return self.rate(label, count, done - started, **extra)

    def while_producing(self, count: int) -> None:
        log(f"sink while producing: {count:,} ticks as fast as the producer goes, connector running ...")
        symbols = self.symbols("P")
        replay = self.work / "while.jsonl"
        write_replay(replay, symbols, count, now_ms() - count // 10 - 60_000, 0.1)
        offsets = topic_end_offsets(self.stack, self.topic)
        base = offsets()
        series = Series("offsets")
        with sampling(series, lambda: offsets() - base, 0.1):
            proc = run_producer(self.stack, replay, symbols, speed=0)
            done = wait_for_count(row_counter(self.stack, symbols), count, 900,
                              lambda v: log(f"  {v:,.0f} of {count:,} landed"))
            finish(proc)
        first = series.started + next(t for t, v in series.points if v > 0)
        self.rate("sink while producing (1 task, candles)", count, done - first)

    def copy_ceiling(self, count: int, candles: bool, symbols: list[str], label: str | None = None) -> None:
        """COPY `count` ticks of `symbols`, event times over the next minute (where the next steady step's
        ticks go: its inserts then meet the dead rows the rollback leaves), rolled back."""
        data = copy_rows(symbols, count, now_ms(), 60_000 / count, self.topic)
        elapsed = timed_copy(self.stack, data, candles)
        self.rate(label or f"COPY into crypto_prices, {'with' if candles else 'without'} candles (rolled back)",
                  count, elapsed)

    def steady(self, label: str, seconds: float, rate: float = 1000.0, during: Callable[[float], None] | None = None,
               symbols: list[str] | None = None) -> tuple[list[str], list[dict]]:
        """Produce `rate` ticks/s for `seconds` at recorded pace; sample freshness and background work."""
        log(f"{label}: {rate:,.0f} ticks/s for {seconds:.0f} s, freshness sampled every 100 ms ...")
        symbols = symbols or self.symbols("S")
        count = int(seconds * rate)
        replay = self.work / f"{symbols[0]}.jsonl"
        ticks = write_replay(replay, symbols, count, now_ms() + 2000, 1000 / rate)
        fresh, activity = Series("freshness"), Series("activity")
        probe, bg = freshness_probe(self.stack, symbols), background_activity(self.stack)
        samples: list[dict] = []

        def sample_activity() -> float:
            samples.append({"t": time.monotonic() - activity.started, **bg()})
            return 0.0

        with sampling(fresh, probe, 0.1), sampling(activity, sample_activity, 0.5):
            replay_until_landed(self.stack, replay, symbols, count, seconds,
                                lambda v: log(f"  {v:,.0f} of {count:,} landed"),
                                None if during is None else lambda: during(fresh.started))
        self.record_freshness(label, fresh, samples, symbols)
        return symbols, ticks

    def record_freshness(self, label: str, fresh: Series, activity: list[dict], symbols: Sequence[str]) -> None:
        """Keep the samples taken while ticks were being produced (after the first had landed)."""
        with self.stack.pg() as conn:
            first, last = conn.execute("SELECT min(produced_at), max(produced_at) FROM crypto_prices"
                                       " WHERE symbol = ANY(%s)", (list(symbols),)).fetchone()
        wall0 = time.time() - (time.monotonic() - fresh.started)
        lo, hi = first.timestamp() - wall0 + 1.0, last.timestamp() - wall0
        points = [(t - lo, v) for t, v in fresh.points if lo <= t <= hi]
        values = sorted(v for _, v in points)
        if not values:
            raise RuntimeError(f"{label}: no freshness samples")
        checkpoints = [a["checkpoints"] for a in activity]
        summary = {
            "samples": len(values), "p50": statistics.median(values),
            "p99": values[min(len(values) - 1, int(len(values) * 0.99))], "max": values[-1],
            "over_1s": sum(v > 1 for v in values),
            "autovacuum_samples": sum(a["autovacuum"] > 0 for a in activity),
            "checkpoints": (checkpoints[-1] - checkpoints[0]) if checkpoints else 0,
            "points": [(round(t, 2), round(v, 4)) for t, v in points],
            "autovacuum_at": [round(a["t"] - lo, 1) for a in activity if a["autovacuum"] > 0],
            "wall_origin": wall0 + lo,
        }
        self.results["freshness"][label] = summary
        log(f"  => freshness {label}: p50 {summary['p50'] * 1000:.0f} ms, p99 {summary['p99'] * 1000:.0f} ms, "
            f"max {summary['max'] * 1000:.0f} ms ({summary['samples']} samples; autovacuum seen in "
            f"{summary['autovacuum_samples']} of {len(activity)} activity samples, "
            f"{summary['checkpoints']} checkpoints)")

    def seed_consumer(self, seconds: float) -> None:
        """The seed's design: deserialize each record, INSERT it, commit, next. Its own topic, so the sink
        connector does not race it for the same ticks; same table, candles maintained."""
        topic = f"bench.seed.{self._tag.lower()}"
        count = int(seconds * 3000)  # more than it can take in `seconds`
        symbols = self.symbols("D")
        replay = self.work / "seed.jsonl"
        write_replay(replay, symbols, count, now_ms() - count - 60_000, 1)
        log(f"seed-style consumer: {count:,} ticks on {topic}, one INSERT + commit each, for {seconds:.0f} s ...")
        writable_topic(self.stack.settings, topic)
        finish(run_producer(self.stack, replay, symbols, speed=0, topic=topic))
        deserialize = AvroDeserializer(registry_client(self.stack.settings.ccompat_url))
        consumer = Consumer({**self.stack.settings.kafka_config(),
                             "group.id": f"bench-seed-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        inserted, started = 0, None
        insert = (f"INSERT INTO crypto_prices ({COPY_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                  " ON CONFLICT DO NOTHING")
        try:
            with psycopg.connect(self.stack.writer_dsn()) as conn:
                while started is None or time.monotonic() - started < seconds:
                    msg = consumer.poll(1.0)
                    if msg is None or msg.error():
                        continue
                    started = started or time.monotonic()
                    v = deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE))
                    conn.execute(insert, (v["symbol"], v["event_time"], v["price"], v["volume"], v["feed"],
                                          v["produced_at"], v["producer_id"], v["sequence"], topic,
                                          msg.partition(), msg.offset()))
                    conn.commit()
                    inserted += 1
        finally:
            consumer.close()
        self.rate("seed-style consumer (one INSERT + commit per record, candles)", inserted,
                  time.monotonic() - started)

    def failover(self, seconds: float) -> None:
        before = self.stack.tasks_by_worker()
        victim = max(before, key=lambda w: before[w])
        kill_at = 20.0
        log(f"failover: tasks per worker {before}; SIGKILL {victim} after {kill_at:.0f} s of 1,000 ticks/s ...")
        info: dict[str, Any] = {"tasks_before": before, "victim": victim}

        def kill_and_watch(started: float) -> None:
            time.sleep(max(0.0, kill_at - (time.monotonic() - started)))
            info["pid"] = self.stack.kill_worker(victim)
            killed = time.monotonic()
            info["killed_at_wall"] = time.time()
            while time.monotonic() - killed < 120:
                with contextlib.suppress(Exception):
                    status = self.stack.status()
                    tasks = status["tasks"]
                    if tasks and all(t["state"] == "RUNNING" and t["worker_id"] != victim for t in tasks):
                        info["tasks_moved_after_s"] = round(time.monotonic() - killed, 1)
                        info["tasks_after"] = self.stack.tasks_by_worker()
                        return
                time.sleep(0.5)

        label = "failover (a worker SIGKILLed at 20 s)"
        symbols, ticks = self.steady(label, seconds, during=kill_and_watch)
        fresh = self.results["freshness"][label]
        if "killed_at_wall" in info:
            fresh["marker"] = round(info.pop("killed_at_wall") - fresh["wall_origin"], 1)
        info.update(self.check_exact(symbols, ticks))
        self.results["failover"] = info
        log(f"  => failover: {info}")

    def check_exact(self, symbols: list[str], ticks: list[dict]) -> dict[str, Any]:
        """Every tick once, and 1-minute candles equal to pandas' OHLC of the ticks that were produced."""
        with self.stack.pg() as conn:
            rows, distinct = conn.execute("SELECT count(*), count(DISTINCT (symbol, event_time, price))"
                                          " FROM crypto_prices WHERE symbol = ANY(%s)", (symbols,)).fetchone()
            candles = conn.execute("SELECT symbol, bucket, open, high, low, close, volume, tick_count"
                                   " FROM view_crypto_candles WHERE symbol = ANY(%s) ORDER BY 1, 2",
                                   (symbols,)).fetchall()
        df = pd.DataFrame(ticks)
        df["bucket"] = pd.to_datetime(df["event_time"], unit="ms", utc=True).dt.floor("1min")
        df = df.sort_values(["symbol", "event_time"], kind="stable")
        expected = df.groupby(["symbol", "bucket"]).agg(
            open=("price", "first"), high=("price", "max"), low=("price", "min"), close=("price", "last"),
            volume=("volume", "sum"), tick_count=("price", "size")).reset_index()
        actual = pd.DataFrame(candles, columns=list(expected.columns))
        actual["bucket"] = pd.to_datetime(actual["bucket"], utc=True)
        equal = len(actual) == len(expected)
        if equal:
            try:
                pd.testing.assert_frame_equal(actual, expected, check_dtype=False, rtol=1e-9)
            except AssertionError:
                equal = False
        return {"ticks": len(ticks), "rows": rows, "distinct_rows": distinct, "candles": len(actual),
                "candles_equal_pandas": equal}

    def memory(self, label: str) -> None:
        self.results["memory"][label] = {k: round(v, 1) for k, v in self.stack.memory_mb().items()}
        log(f"  memory ({label}): " + ", ".join(f"{k} {v:.0f} MB" for k, v in self.results["memory"][label].items()))


def sweep(stack: NativeStack, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    started = time.monotonic()
    results = Sweep(stack, work, log, args.sweep_ticks, args.sweep_copy_ticks, args.sweep_history_days,
                    args.sweep_repeats).run()
    results["notes"].append(f"sweep {time.monotonic() - started:.0f} s")
    return results


def git(*argv: str) -> str:
    return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def trigger_commit() -> str:
    """The commit whose init.sql (the candle trigger) the stack ran, marked when the checkout changed it."""
    commit = git("log", "-1", "--format=%h %s", "--", "init.sql")[:90]
    return commit + (" + uncommitted changes" if git("status", "--porcelain", "--", "init.sql") else "")


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    stack = NativeStack(work / "stack", log)
    log(f"starting the native stack in {stack.state_dir} (Connect on port {stack.settings.port('CONNECT')}) ...")
    started = time.monotonic()
    bench = Bench(stack, args, work)
    try:
        stack.up(workers=1)
        bench.results["notes"].append(f"stack up in {time.monotonic() - started:.0f} s")
        bench.memory("idle, 1 worker")
        default = stack.connector["config"]
        # max.poll.records is the worker's (connect/worker.properties): connectors may not override client
        # settings (connector.client.config.override.policy=None), so the connector JSON has none.
        bench.results["connector"] = {"tasks.max": default["tasks.max"], "batch.size": default["batch.size"],
                                      "max.poll.records": worker_property("consumer.max.poll.records")}
        tasks = default["tasks.max"]
        if args.sweep_only:
            return bench.results | {"sweep": sweep(stack, args, work)}
        bench.steady(f"steady 1k/s, fresh stack ({tasks} tasks)", args.steady_seconds)
        bench.backlog(f"sink backlog, {tasks} tasks on 1 worker (as committed)", args.backlog)
        bench.results["sweep"] = sweep(stack, args, work)
        stack.set_config({"tasks.max": "1"})
        bench.backlog("sink backlog (1 task, candles)", args.backlog, record_producer=True)
        next_steady = bench.symbols("S")
        bench.copy_ceiling(args.backlog, candles=True, symbols=next_steady)
        bench.copy_ceiling(args.backlog, candles=False, symbols=next_steady)
        bench.steady("steady 1k/s, right after backlog + COPYs (1 task)", args.steady_seconds, symbols=next_steady)
        concurrent = bench.symbols("S")
        bench.steady("steady 1k/s, a COPY of 300k ticks into the same symbols at 20 s (1 task)", args.steady_seconds,
                     symbols=concurrent, during=lambda started: (
                         time.sleep(max(0.0, 20 - (time.monotonic() - started))),
                         bench.copy_ceiling(args.backlog, candles=True, symbols=concurrent,
                                            label="COPY with candles, concurrent with the sink (rolled back)")))
        bench.backlog("sink backlog (1 task, no candles: trigger disabled)", args.backlog)
        bench.while_producing(args.backlog)
        bench.seed_consumer(args.seed_seconds)
        bench.memory("after the 1-task steps")
        # Only batch.size can change per connector (max.poll.records is the worker's); each put hands the sink
        # at most max.poll.records (2000) records, so only a smaller batch.size is a different setting.
        stack.set_config({"tasks.max": "1", "batch.size": "500"})
        bench.backlog("sink backlog (1 task), batch.size = 500", args.tuning_backlog)
        stack.set_config({"tasks.max": "1", "connection.url": default["connection.url"].replace(
            "?reWriteBatchedInserts=true", "")})
        bench.backlog("sink backlog, one row per statement (1 task, no reWriteBatchedInserts)",
                      args.tuning_backlog // 5)
        log("a second Connect worker joins the group ...")
        stack.up(workers=2)
        stack.set_config({"tasks.max": "3"})
        bench.results["notes"].append(f"3 tasks over 2 workers: {stack.tasks_by_worker()}")
        bench.backlog("sink backlog, 3 tasks on 2 workers", args.backlog)
        bench.memory("2 workers, 3 tasks")
        bench.failover(args.failover_seconds)
    finally:
        log("stopping the stack (down --purge) ...")
        with contextlib.suppress(Exception):
            stack.down()
        shutil.rmtree(work, ignore_errors=True)  # the replay files
    bench.results["notes"].append(f"whole run {time.monotonic() - started:.0f} s")
    return bench.results


def write_sweep_report(json_path: Path) -> None:
    """NAME.md and NAME.png beside a sweep's NAME.json."""
    swept = json.loads(json_path.read_text())
    plot = json_path.with_suffix(".png")
    render_sweep_plot(swept, plot)
    json_path.with_suffix(".md").write_text(render_sweep_markdown(swept, plot.name))
    print(json_path.with_suffix(".md").read_text())
    log(f"written: {json_path.with_suffix('.md')}, {plot.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=300_000, help="ticks per backlog step (default %(default)s)")
    parser.add_argument("--tuning-backlog", type=int, default=150_000,
                        help="ticks per sink-settings step (default %(default)s)")
    parser.add_argument("--steady-seconds", type=float, default=60, help="per steady step (default %(default)s)")
    parser.add_argument("--seed-seconds", type=float, default=20, help="seed-style consumer (default %(default)s)")
    parser.add_argument("--failover-seconds", type=float, default=75, help="failover step (default %(default)s)")
    parser.add_argument("--sweep-ticks", type=int, default=150_000,
                        help="ticks per sink run of the data-shape sweep (default %(default)s)")
    parser.add_argument("--sweep-repeats", type=int, default=2,
                        help="sink runs with and without candles per spacing: 2 x this, ABBA (default %(default)s)")
    parser.add_argument("--sweep-copy-ticks", type=int, default=300_000,
                        help="ticks per COPY of the data-shape sweep (default %(default)s)")
    parser.add_argument("--sweep-history-days", type=float, default=2,
                        help="days of history (1 tick/s per symbol) before the sweep (default %(default)s)")
    parser.add_argument("--sweep-only", action="store_true",
                        help="only the data-shape sweep: writes pipeline_sweep.md/.json/.png, not pipeline.md")
    parser.add_argument("--quick", action="store_true", help="small sizes; results into --out (default /tmp)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results directory (default bench/results, or a temp dir with --quick)")
    parser.add_argument("--render-sweep", type=Path, metavar="JSON",
                        help="only (re)write the markdown and plot of a sweep's JSON, beside it")
    args = parser.parse_args()
    if args.render_sweep:
        write_sweep_report(args.render_sweep)
        return
    if args.quick:
        args.backlog, args.tuning_backlog, args.steady_seconds = 30_000, 20_000, 20
        args.seed_seconds, args.failover_seconds = 5, 45
        args.sweep_ticks, args.sweep_copy_ticks, args.sweep_history_days, args.sweep_repeats = 6_000, 20_000, 0.05, 1
    out = args.out or (Path(tempfile.mkdtemp(prefix="pipeline-bench-results-")) if args.quick
                       else ROOT / "bench" / "results")
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python bench/pipeline_bench.py", *sys.argv[1:]])
    commits = {"trigger_commit": trigger_commit(), "bench_commit": git("rev-parse", "--short", "HEAD")}  # as started
    results = run(args)
    results["command"] = command
    swept = results.pop("sweep")
    swept |= {"command": command, "connector": results["connector"], **commits}
    (out / "pipeline_sweep.json").write_text(json.dumps(swept, indent=1, default=str))
    write_sweep_report(out / "pipeline_sweep.json")
    if args.sweep_only:
        return
    (out / "pipeline.json").write_text(json.dumps(results, indent=1, default=str))
    render_plots(results, out)
    (out / "pipeline.md").write_text(render_markdown(results))
    print((out / "pipeline.md").read_text())
    log(f"written: {out}/pipeline.md, pipeline.json, pipeline_throughput.png, pipeline_freshness.png")


if __name__ == "__main__":
    main()
