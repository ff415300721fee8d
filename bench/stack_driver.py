"""What bench/pipeline_bench.py does to a running native stack, written once: start and stop it, drive the
connector over Connect's REST API, write replay files and run the real producer on them, sample rows,
freshness, topic offsets and memory in the background."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
import requests
from confluent_kafka import Consumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from control.connector import ConnectApi, connector_status, load_connector, upsert, wait_running  # noqa: E402
from core.settings import Settings  # noqa: E402
from stack.ports import claim_ports  # noqa: E402
from stack.services import Connect, all_services  # noqa: E402


def partition_of(key: str, partitions: int) -> int:
    """librdkafka's default partitioner (consistent_random): CRC32 of the key."""
    return zlib.crc32(key.encode()) % partitions


def spread_symbols(prefix: str, partitions: int = 3, per_partition: int = 1) -> list[str]:
    """Symbols named PREFIX<n>-USD that land `per_partition` on each partition of the ticks topic."""
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    n = 0
    while any(len(v) < per_partition for v in chosen.values()):
        symbol = f"{prefix}{n}-USD"
        if len(chosen[partition_of(symbol, partitions)]) < per_partition:
            chosen[partition_of(symbol, partitions)].append(symbol)
        n += 1
    return [s for p in range(partitions) for s in chosen[p]]


class NativeStack:
    """A whole native stack of its own: temp state dir, free ports, `python -m stack` to start and stop it."""

    def __init__(self, state_dir: Path, log: Callable[[str], None]) -> None:
        self.state_dir, self.log = state_dir, log
        ports, self.claims = claim_ports(connect_workers=4)  # held until the bench exits
        self.env = {**os.environ, "CRYPTOPIPE_STATE": str(state_dir), **ports}
        os.environ.update({k: self.env[k] for k in ("CRYPTOPIPE_STATE", *ports)})
        self.settings = Settings.load()
        self.connector = load_connector()
        self.name: str = self.connector["name"]

    def cli(self, *args: str, timeout: float = 900) -> str:
        result = subprocess.run([sys.executable, "-m", "stack", *args], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"stack {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result.stdout

    def up(self, workers: int = 1) -> None:
        for line in self.cli("up", "--no-fetch", "--no-producer", "--connect-workers", str(workers)).splitlines():
            if "healthy" in line or "RUNNING" in line:
                self.log(f"  {line}")

    def down(self) -> None:
        self.cli("down", "--purge")

    # -- PostgreSQL --------------------------------------------------------------------------------
    def pg(self, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.settings.pg_dsn(), autocommit=autocommit)

    def writer_dsn(self) -> str:
        s = self.settings
        return s.pg_dsn(user=s["CONNECT_DB_USER"], password=s["CONNECT_DB_PASSWORD"])

    # -- Connect -----------------------------------------------------------------------------------
    def workers(self) -> list[Connect]:
        return [w for w in all_services(self.settings) if isinstance(w, Connect)]

    def live_worker_url(self) -> ConnectApi:
        """The REST API (with the stack's credentials) of a worker that runs."""
        for worker in self.workers():
            if worker.process.is_running():
                return ConnectApi(worker.url, self.settings.connect_auth)
        raise RuntimeError("no Connect worker is running")

    def status(self) -> dict[str, Any]:
        status = connector_status(self.live_worker_url(), self.name)
        if status is None:
            raise RuntimeError(f"connector {self.name} is not registered")
        return status

    def set_config(self, overrides: dict[str, str]) -> None:
        """The connector JSON with `overrides`, PUT, wait until every task is RUNNING."""
        config = {**self.connector["config"], **overrides}
        upsert(self.live_worker_url(), self.name, config)
        self.wait_running(int(config["tasks.max"]))

    def wait_running(self, tasks: int, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException, RuntimeError):
                status = wait_running(self.live_worker_url(), self.name, timeout=30)
                if len(status["tasks"]) == tasks:
                    return status
            time.sleep(1)
        raise RuntimeError(f"connector not RUNNING with {tasks} task(s) after {timeout:.0f}s: {self.status()}")

    def pause(self) -> None:
        self.live_worker_url().put(f"/connectors/{self.name}/pause", timeout=30).raise_for_status()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = self.status()
            if all(x["state"] == "PAUSED" for x in [status["connector"], *status["tasks"]]):
                return
            time.sleep(0.5)
        raise RuntimeError(f"connector did not pause: {status}")

    def resume(self) -> None:
        self.live_worker_url().put(f"/connectors/{self.name}/resume", timeout=30).raise_for_status()

    def tasks_by_worker(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for task in self.status()["tasks"]:
            counts[task["worker_id"]] = counts.get(task["worker_id"], 0) + 1
        return counts

    def kill_worker(self, worker_id: str) -> int:
        """SIGKILL the worker whose REST address is `worker_id` (host:port); returns its pid."""
        for worker in self.workers():
            if worker_id.endswith(f":{worker.rest_port}") and (pid := worker.process.pid()) is not None:
                os.kill(pid, signal.SIGKILL)
                return pid
        raise RuntimeError(f"no running worker at {worker_id}")

    # -- memory ------------------------------------------------------------------------------------
    def memory_mb(self) -> dict[str, float]:
        return stack_memory_mb(self.settings)


def stack_memory_mb(settings: Settings) -> dict[str, float]:
    """Proportional set size (shared pages split between the processes sharing them) per service of the
    native stack in settings.state_dir, the process and all its children (PostgreSQL's backends), in MiB.
    Services that do not run are left out."""
    out: dict[str, float] = {}
    names = [s.name for s in all_services(settings)] + ["supervisor", "supervisor-keeper"]
    for name in names:
        try:
            pid = int((settings.state_dir / f"{name}.pid").read_text())
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
            continue
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += proc.memory_full_info().pss
        out[name] = total / 2**20
    return out


def worker_property(name: str, path: Path = ROOT / "connect" / "worker.properties") -> str:
    """A setting of the Connect worker file (e.g. consumer.max.poll.records: connectors may not override
    client settings, so the worker's is the sink's)."""
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == name:
            return value.strip()
    raise KeyError(f"{name} is not set in {path}")


# -- ticks and the real producer ------------------------------------------------------------------
def write_replay(path: Path, symbols: Sequence[str], count: int, start_ms: int, step_ms: float) -> list[dict]:
    """`count` ticks round-robin over `symbols`, tick i at start_ms + i * step_ms, prices a walk per symbol."""
    ticks = []
    with path.open("w") as out:
        for i in range(count):
            symbol = symbols[i % len(symbols)]
            tick = {"symbol": symbol, "price": round(100.0 + (i % 997) * 0.01 + (i // len(symbols)) * 1e-6, 6),
                    "event_time": start_ms + int(i * step_ms), "volume": round((i % 13) * 0.1, 1)}
            out.write(json.dumps(tick) + "\n")
            ticks.append(tick)
    return ticks


ROLLUP_TRIGGER = "crypto_prices_rollup_insert"
COPY_COLUMNS = ("symbol, event_time, price, volume, feed, produced_at, producer_id, sequence, __connect_topic,"
                " __connect_partition, __connect_offset")


def copy_rows(symbols: Sequence[str], count: int, start_ms: float, step_ms: float, topic: str) -> bytes:
    """COPY text (COPY_COLUMNS) of `count` ticks round-robin over `symbols`, tick i at start_ms + i * step_ms."""
    buffer = io.StringIO()
    for i in range(count):
        at = datetime.fromtimestamp((start_ms + i * step_ms) / 1000, UTC).isoformat()
        buffer.write(f"{symbols[i % len(symbols)]}\t{at}\t{100 + (i % 997) * 0.01 + i * 1e-7:.7f}\t0.5\tSTREAM\t"
                     f"{at}\tbench\t{i}\t{topic}\t{i % 3}\t{i}\n")
    return buffer.getvalue().encode()


def copy_into(conn: psycopg.Connection, data: bytes, table: str = "crypto_prices", columns: str = COPY_COLUMNS) -> None:
    """COPY text (e.g. of copy_rows()) into `table`, in the caller's transaction."""
    with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for lo in range(0, len(data), 1 << 20):
            copy.write(data[lo:lo + (1 << 20)])


# Candles are merged at commit (init.sql: candle_merge_at_commit, a deferred constraint trigger), which a
# rolled-back write never reaches: a bench that rolls its writes back merges them at the end of each statement
# instead, so that its timings include the merge.
MERGE_IN_STATEMENT = "SET CONSTRAINTS ALL IMMEDIATE"


def timed_copy(stack: NativeStack, data: bytes, candles: bool) -> float:
    """Seconds the COPY of `data` into crypto_prices takes, with the rollup trigger on or off (disabled inside
    the transaction), rolled back; with candles, their merge (MERGE_IN_STATEMENT) included."""
    with stack.pg(autocommit=False) as conn:
        conn.execute(MERGE_IN_STATEMENT)
        if not candles:
            conn.execute(f"ALTER TABLE crypto_prices DISABLE TRIGGER {ROLLUP_TRIGGER}")
        started = time.perf_counter()
        copy_into(conn, data)
        elapsed = time.perf_counter() - started
        conn.rollback()
    return elapsed


def set_rollup(stack: NativeStack, candles: bool) -> None:
    with stack.pg() as conn:
        conn.execute(f"ALTER TABLE crypto_prices {'ENABLE' if candles else 'DISABLE'} TRIGGER {ROLLUP_TRIGGER}")


def run_producer(stack: NativeStack, replay: Path, symbols: Sequence[str], speed: float,
                 topic: str | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "producer", "--source", "replay", "--file", str(replay), "--speed", str(speed),
            "--symbols", ",".join(symbols), "--stats-interval", "0", "--log-level", "WARNING"]
    if topic:
        argv += ["--topic", topic]
    env = {**stack.env, **stack.settings.client_env()}
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"producer exited {proc.returncode}:\n{output[-3000:]}")
    return output


def produce_all(stack: NativeStack, topic: str, replay: Path, symbols: Sequence[str], count: int) -> float:
    """Produce the `count` ticks of `replay` as fast as the producer can; returns the producer's rate,
    measured on the broker's end offsets (first to last record)."""
    offsets = topic_end_offsets(stack, topic)
    base = offsets()
    series = Series("offsets")
    with sampling(series, lambda: offsets() - base, 0.1):
        finish(run_producer(stack, replay, symbols, speed=0))
        wait_for_count(lambda: series.points[-1][1] if series.points else 0, count, 60, lambda v: None)
    first = next(t for t, v in series.points if v > 0)
    done = next(t for t, v in series.points if v >= count)
    return count / max(done - first, 1e-3)


# -- samplers -------------------------------------------------------------------------------------
@dataclass
class Series:
    """(seconds since start, value) samples taken by a background thread until stopped."""

    name: str
    points: list[tuple[float, float]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def values(self) -> list[float]:
        return [v for _, v in self.points]


@contextlib.contextmanager
def sampling(series: Series, sample: Callable[[], float | None], interval: float) -> Iterator[Series]:
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a sample that fails (e.g. during a failover) is skipped
                value = sample()
                if value is not None:
                    series.points.append((time.monotonic() - series.started, value))
            stop.wait(interval)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield series
    finally:
        stop.set()
        thread.join(10)


def row_counter(stack: NativeStack, symbols: Sequence[str], window_ms: tuple[float, float] | None = None
                ) -> Callable[[], float]:
    """Rows of `symbols` in crypto_prices (with event times in [lo, hi) ms when `window_ms` is given)."""
    conn = stack.pg()
    lo, hi = (datetime.fromtimestamp(ms / 1000, UTC) for ms in window_ms or (0, 2**42))

    def count() -> float:
        return conn.execute("SELECT count(*) FROM crypto_prices WHERE symbol = ANY(%s) AND event_time >= %s"
                            " AND event_time < %s", (list(symbols), lo, hi)).fetchone()[0]
    return count


FRESHNESS_SQL = """
SELECT extract(epoch FROM clock_timestamp() - min(newest))
  FROM (SELECT (SELECT max(produced_at) FROM (SELECT produced_at FROM crypto_prices c WHERE c.symbol = s.symbol
                                               ORDER BY c.event_time DESC LIMIT 20) p) AS newest
          FROM unnest(%s::text[]) AS s(symbol)) per_symbol
"""


def freshness_probe(stack: NativeStack, symbols: Sequence[str]) -> Callable[[], float | None]:
    """now - the newest produced_at visible in crypto_prices, for the stalest of these symbols (each
    symbol's newest ticks by event time, through the tick key's index), in seconds. The stalest, so that
    a stalled partition shows even while the others flow."""
    conn = stack.pg()

    def probe() -> float | None:
        value = conn.execute(FRESHNESS_SQL, (list(symbols),)).fetchone()[0]
        return None if value is None else float(value)
    return probe


def background_activity(stack: NativeStack) -> Callable[[], dict[str, int]]:
    """Autovacuum workers running now, and checkpoints so far (PostgreSQL 15's pg_stat_bgwriter)."""
    conn = stack.pg()

    def probe() -> dict[str, int]:
        autovacuum, checkpoints = conn.execute(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'),"
            " (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)").fetchone()
        return {"autovacuum": autovacuum, "checkpoints": checkpoints}
    return probe


def topic_end_offsets(stack: NativeStack, topic: str) -> Callable[[], float]:
    consumer = Consumer({**stack.settings.kafka_config(), "group.id": "bench-watermarks",
                         "enable.auto.commit": False})

    def total() -> float:
        meta = consumer.list_topics(topic, timeout=5).topics[topic]
        return float(sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)[1]
                         for p in meta.partitions))
    return total


def wait_for_count(check: Callable[[], float], target: float, timeout: float, progress: Callable[[float], None],
                   every: float = 5.0) -> float:
    """Poll `check` until it reaches `target`; returns the monotonic time it first did."""
    deadline, next_report = time.monotonic() + timeout, time.monotonic() + every
    while True:
        value = check()
        now = time.monotonic()
        if value >= target:
            return now
        if now > deadline:
            raise RuntimeError(f"only {value:,.0f} of {target:,.0f} after {timeout:.0f}s")
        if now >= next_report:
            progress(value)
            next_report = now + every
        # Counting is not free (it competes with the sink for 2 cores): often only near the end.
        time.sleep(0.1 if value >= 0.9 * target else 0.5)


def replay_until_landed(stack: NativeStack, replay: Path, symbols: Sequence[str], count: int, seconds: float,
                        progress: Callable[[float], None], on_start: Callable[[], None] | None = None) -> None:
    """The real producer replays `replay` at recorded pace (`seconds` long); returns once its `count` ticks of
    `symbols` have landed. `on_start` runs right after the producer started (e.g. the fault to inject)."""
    proc = run_producer(stack, replay, symbols, speed=1)
    if on_start is not None:
        on_start()
    finish(proc, timeout=seconds * 3 + 120)
    wait_for_count(row_counter(stack, symbols), count, 300, progress)
