"""Replay source: ticks read back from a JSONL or CSV file (columns symbol, price, event_time, volume).

`speed` 1 = recorded pace (gaps between event times), N = N times faster, 0 = as fast as possible.
Lines that do not parse (not UTF-8, not JSON, not a tick) are counted as `malformed` and skipped; the
replay goes on with the next line. Every tick is labelled feed=REPLAY.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from producer.sources import Emit, Source
from producer.stats import Stats
from producer.tick import Feed, Tick

log = logging.getLogger(__name__)


def tick_from_row(row: Mapping[str, object], feed: Feed = Feed.REPLAY) -> Tick:
    """One JSON object or CSV row -> Tick; ValueError/TypeError/KeyError/OverflowError when it is not a tick.

    Values that parse but break the tick contract (NaN price, negative volume, year 1970) become ticks that
    the validator rejects with their own reason."""
    symbol = row["symbol"]
    if not isinstance(symbol, str) or not symbol.strip():
        raise ValueError(f"bad symbol {symbol!r}")
    price = row["price"]
    event_time = row["event_time"]
    if isinstance(price, bool) or isinstance(event_time, bool) or price in (None, "") or event_time in (None, ""):
        raise ValueError("price and event_time are required numbers")
    if isinstance(event_time, int):
        et = event_time  # exact, however large (the validator judges it)
    else:
        as_float = float(event_time)  # type: ignore[arg-type]
        if not as_float.is_integer():
            raise ValueError(f"event_time {event_time!r} is not whole epoch milliseconds")
        et = int(as_float)
    volume = row.get("volume")
    return Tick(symbol=symbol.strip(), price=float(price), event_time=et,  # type: ignore[arg-type]
                volume=None if volume in (None, "") else float(volume), feed=feed)  # type: ignore[arg-type]


class Malformed(str):
    """Why a line is not a tick (the source counts it as malformed and goes on with the next line)."""


def _decoded(lines: Iterable[bytes], position: list[int], bad: list[tuple[int, Malformed]]) -> Iterator[str]:
    """Each line as text; a line that is not UTF-8 goes to `bad` (with its number) instead. `position[0]` is
    the number of the last line read. A byte-order mark on the first line is dropped."""
    for lineno, raw in enumerate(lines, 1):
        position[0] = lineno
        try:
            yield raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            bad.append((lineno, Malformed(f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}")))


def _rows(path: Path) -> Iterator[tuple[int, Mapping[str, object] | Malformed]]:
    """(line number, parsed row) or (line number, why it is not a row), in file order."""
    position, bad = [0], []
    with path.open("rb") as fh:
        lines = _decoded(fh, position, bad)
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(lines)
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:  # e.g. a field over csv.field_size_limit()
                    yield from _drain(bad)
                    yield position[0], Malformed(f"not CSV: {exc}")
                    continue
                yield from _drain(bad)
                yield position[0], row
            yield from _drain(bad)
            return
        for line in lines:
            yield from _drain(bad)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield position[0], Malformed(f"not JSON: {exc.msg}")
                continue
            yield position[0], obj if isinstance(obj, dict) else Malformed("not a JSON object")
        yield from _drain(bad)


def _drain(bad: list[tuple[int, Malformed]]) -> Iterator[tuple[int, Malformed]]:
    while bad:
        yield bad.pop(0)


def read_ticks(path: Path, stats: Stats | None = None) -> Iterator[Tick]:
    """Every good tick of the file, in file order; bad lines counted (stats) and logged."""
    for lineno, row in _rows(path):
        where = f"{path}:{lineno}"
        if isinstance(row, Malformed):
            _bad(stats, where, row)
            continue
        try:
            yield tick_from_row(row)
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            _bad(stats, where, f"{type(exc).__name__}: {exc}")


def _bad(stats: Stats | None, where: str, why: str) -> None:
    if stats is not None:
        stats.malformed()
    log.warning("skipping malformed line %s (%s)", where, why)


class ReplaySource(Source):
    name = "replay"

    def __init__(self, path: Path, speed: float, stats: Stats, stop_event=None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], bool] | None = None) -> None:
        """`clock` (seconds) and `sleep` (returns True when stopped; default: the stop event's wait) pace replay."""
        super().__init__(stop_event)
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.path, self.speed, self.stats, self._clock = path, speed, stats, clock
        self._sleep = sleep or self.stop_event.wait
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
                if delay > 0 and self._sleep(delay):
                    return
            emit(tick)
        log.info("replay of %s finished", self.path)
