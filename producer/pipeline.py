"""The producer's main loop: source (own thread) -> queue -> validate -> output, plus stats/health upkeep.

Stopping (signal, --max-ticks, source exhausted): the source is stopped, what it already emitted is
still validated and produced, then the output is flushed. The exit code says whether everything arrived.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Protocol

from core.health import write_health
from producer.sources import Source
from producer.stats import RecentCounts, Stats
from producer.tick import Tick
from producer.validate import Validator

log = logging.getLogger(__name__)

EXIT_OK, EXIT_SOURCE_FAILED, EXIT_USAGE, EXIT_UNDELIVERED, EXIT_KAFKA_FATAL = 0, 1, 2, 3, 4
_END = object()


class Output(Protocol):
    fatal: object

    def send(self, tick: Tick) -> None: ...
    def poll(self, timeout: float = 0) -> None: ...
    def in_flight(self) -> int: ...
    def flush(self, timeout: float) -> int: ...
    def close(self) -> None: ...


class Pipeline:
    def __init__(self, source: Source, validator: Validator, stats: Stats, stop_event: threading.Event,
                 health_file: Path | None = None, health_interval: float = 10.0, stats_interval: float = 30.0,
                 max_ticks: int = 0, flush_timeout: float = 30.0, stop_timeout: float = 10.0,
                 queue_size: int = 10_000) -> None:
        self.source, self.validator, self.stats, self.stop_event = source, validator, stats, stop_event
        self.output: Output | None = None
        self.health_file, self.health_interval, self.stats_interval = health_file, health_interval, stats_interval
        self.max_ticks, self.flush_timeout, self.stop_timeout = max_ticks, flush_timeout, stop_timeout
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, queue_size // source.emit_batch))
        self._pending: list[Tick] = []
        self._source_error: BaseException | None = None
        self._stop_deadline: float | None = None
        self._next_health = self._next_stats = 0.0
        self._recent = RecentCounts()

    # -- source thread -----------------------------------------------------------------------------
    def _emit(self, tick: Tick) -> None:
        """Hand a tick to the main loop; in batches of `source.emit_batch` (replay at full speed) to save
        per-item queue and thread-switch costs, one by one for live sources."""
        self._pending.append(tick)
        if len(self._pending) >= self.source.emit_batch:
            self._put(self._pending)
            self._pending = []

    def _put(self, item: object) -> None:
        while True:  # back-pressure: the source waits for the pipeline, nothing is dropped
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _run_source(self) -> None:
        try:
            self.source.run(self._emit)
        except BaseException as exc:  # noqa: BLE001 - reported by the main loop
            self._source_error = exc
            log.exception("source %s failed", self.source.name)
        finally:
            if self._pending:
                self._put(self._pending)
            self._put(_END)

    # -- main loop ---------------------------------------------------------------------------------
    def give_up(self) -> bool:
        """True once stopping has taken longer than stop_timeout (the output may then count ticks as failed)."""
        return self._stop_deadline is not None and time.monotonic() > self._stop_deadline

    def run(self, output: Output) -> int:
        self.output = output
        self.upkeep(force=True)
        thread = threading.Thread(target=self._run_source, name=f"source-{self.source.name}", daemon=True)
        thread.start()
        handled = before = 0
        while True:
            if self.stop_event.is_set() and self._stop_deadline is None:
                log.info("stopping: source %s, then flushing", self.source.name)
                self.source.stop()
                self._stop_deadline = time.monotonic() + self.stop_timeout
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                item = None
            if item is _END:
                break
            if item is not None:
                for tick in item:  # type: ignore[attr-defined]
                    self._handle(tick)
                before, handled = handled, handled + len(item)  # type: ignore[arg-type]
            if item is None or handled // 1000 != before // 1000:
                output.poll(0)
            self.upkeep()  # on time, also while ticks arrive steadily (the queue is then never empty)
            if self.give_up():
                self._abandon_queue()
                break
            if output.fatal is not None:
                self.stop_event.set()
                break
        return self._finish(output)

    def _abandon_queue(self) -> None:
        """Stopping took too long: ticks still queued are counted as failed, not dropped silently."""
        left = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            left += 0 if item is _END else len(item)  # type: ignore[arg-type]
        self.stats.failed += left
        log.error("source %s did not stop within %.0fs; %d queued ticks not produced (counted as failed)",
                  self.source.name, self.stop_timeout, left)

    def _handle(self, tick: Tick) -> None:
        if self.max_ticks and self.stats.produced >= self.max_ticks:
            return  # --max-ticks reached: what the source emitted meanwhile is not produced
        self.stats.receive()
        reason = self.validator.check(tick)
        if reason is not None:
            self.stats.reject(reason)
            return
        assert self.output is not None
        self.output.send(tick)
        if self.max_ticks and self.stats.produced >= self.max_ticks and not self.stop_event.is_set():
            log.info("--max-ticks %d reached", self.max_ticks)
            self.stop_event.set()

    def upkeep(self, force: bool = False) -> None:
        """Periodic: one-line stats summary on stderr, health file (the counters, the source, and the ticks
        received and produced in about the last minute)."""
        now = time.monotonic()
        if self.stats_interval > 0 and now >= self._next_stats:
            if self._next_stats:  # not on the very first call
                log.info(self.stats.summary_line(self.output.in_flight() if self.output else None))
            self._next_stats = now + self.stats_interval
        if self.health_file is not None and (force or now >= self._next_health):
            self._next_health = now + self.health_interval
            snapshot = self.stats.snapshot()
            recent = self._recent.update(snapshot["received"], snapshot["produced"])  # type: ignore[arg-type]
            try:
                write_health(self.health_file, {**snapshot, "source": self.source.name, "last_minute": recent})
            except OSError as exc:
                log.warning("cannot write health file %s: %s", self.health_file, exc)

    def stay_up(self) -> None:
        """After the source ended (a finished replay): keep rewriting the health file with the final counts
        until stopped (SIGTERM/SIGINT), so a container that must stay up (`docker compose up --wait`) does."""
        log.info("source %s finished; staying up until stopped (--stay-up)", self.source.name)
        self.stats_interval = 0  # the final summary was printed once; no repeated stats lines
        while not self.stop_event.wait(self.health_interval):
            self.upkeep(force=True)

    def _finish(self, output: Output) -> int:
        in_flight = output.in_flight()
        if in_flight:
            log.info("flushing %d messages (up to %.0fs)", in_flight, self.flush_timeout)
        output.flush(self.flush_timeout)
        output.close()
        self.upkeep(force=True)
        summary = f"producer finished: {self.stats.counts_text()}"
        print(summary, flush=True)
        log.info(summary)
        if output.fatal is not None:
            return EXIT_KAFKA_FATAL
        if self.stats.failed:
            return EXIT_UNDELIVERED
        if self._source_error is not None:
            return EXIT_SOURCE_FAILED
        return EXIT_OK
