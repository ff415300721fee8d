"""Replay source: ticks read back from a JSONL or CSV file (columns symbol, price, event_time, volume).

`speed` 1 = recorded pace (gaps between event times), N = N times faster, 0 = as fast as possible.
Lines that do not parse are counted as `malformed` and skipped. Every tick is labelled feed=REPLAY.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from producer.sources import Emit, Source
from producer.stats import Stats
from producer.tick import Feed, Tick
from producer.validate import MALFORMED

log = logging.getLogger(__name__)


def tick_from_row(row: Mapping[str, object], feed: Feed = Feed.REPLAY) -> Tick:
    """One JSON object or CSV row -> Tick; ValueError/TypeError/KeyError when it is not a tick."""
    symbol = row["symbol"]
    if not isinstance(symbol, str) or not symbol.strip():
        raise ValueError(f"bad symbol {symbol!r}")
    price = row["price"]
    event_time = row["event_time"]
    if isinstance(price, bool) or isinstance(event_time, bool) or price in (None, "") or event_time in (None, ""):
        raise ValueError("price and event_time are required numbers")
    et = float(event_time)  # type: ignore[arg-type]
    if not et.is_integer():
        raise ValueError(f"event_time {event_time!r} is not whole epoch milliseconds")
    volume = row.get("volume")
    return Tick(symbol=symbol.strip(), price=float(price), event_time=int(et),  # type: ignore[arg-type]
                volume=None if volume in (None, "") else float(volume), feed=feed)  # type: ignore[arg-type]


def _rows(path: Path) -> Iterator[tuple[int, Mapping[str, object] | str]]:
    """(line number, parsed row) or (line number, raw text) for a line that is not even JSON."""
    with path.open(newline="", encoding="utf-8") as fh:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(fh)
            for row in reader:
                yield reader.line_num, row
            return
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                yield lineno, line
                continue
            yield lineno, obj if isinstance(obj, dict) else line


def read_ticks(path: Path, stats: Stats | None = None) -> Iterator[Tick]:
    """Every good tick of the file, in file order; bad lines counted (stats) and logged."""
    for lineno, row in _rows(path):
        where = f"{path}:{lineno}"
        if isinstance(row, str):
            _bad(stats, where, "not a JSON object")
            continue
        try:
            yield tick_from_row(row)
        except (KeyError, ValueError, TypeError) as exc:
            _bad(stats, where, f"{type(exc).__name__}: {exc}")


def _bad(stats: Stats | None, where: str, why: str) -> None:
    if stats is not None:
        stats.reject(MALFORMED)
    log.warning("skipping malformed line %s (%s)", where, why)


class ReplaySource(Source):
    name = "replay"

    def __init__(self, path: Path, speed: float, stats: Stats, stop_event=None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(stop_event)
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.path, self.speed, self.stats, self._clock = path, speed, stats, clock
        self.emit_batch = 500 if speed == 0 else 1  # as fast as possible: batch the hand-over

    def run(self, emit: Emit) -> None:
        started = self._clock()
        first_ms: int | None = None
        for tick in read_ticks(self.path, self.stats):
            if self.stopping:
                return
            if self.speed > 0:
                first_ms = tick.event_time if first_ms is None else first_ms
                delay = started + (tick.event_time - first_ms) / 1000 / self.speed - self._clock()
                if delay > 0 and self.stop_event.wait(delay):
                    return
            emit(tick)
        log.info("replay of %s finished", self.path)
