"""Replay source: JSONL and CSV files read back as ticks; lines that are not ticks (not UTF-8, not JSON, fields
missing) are counted as malformed and the replay goes on; pacing follows the recorded gaps (injected clock)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT, Settings
from producer.sources.replay import ReplaySource, read_ticks, tick_from_row
from producer.sources.stream import REPLAY_SAMPLE
from producer.stats import Stats
from producer.tick import Feed, Tick
from producer.validate import TickContract, ValidationRules, Validator, parse_symbols

NOW = 1_764_050_400_000


def line(symbol: str, price: float, event_time: int, **extra: object) -> bytes:
    return (json.dumps({"symbol": symbol, "price": price, "event_time": event_time, **extra}) + "\n").encode()


def as_tuples(ticks: list[Tick]) -> list[tuple]:
    return [(t.symbol, t.price, t.event_time, t.volume, t.feed) for t in ticks]


def test_replay_jsonl_and_csv_with_bad_lines_counted(tmp_path: Path) -> None:
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join([
        json.dumps({"symbol": "BTC-USD", "price": 1.5, "event_time": NOW, "volume": 2}),
        json.dumps({"symbol": "ETH-USD", "price": 2.5, "event_time": NOW + 1, "volume": None}),
        json.dumps({"symbol": "SOL-USD", "price": 3.5, "event_time": NOW + 2}),
        "not json",
        json.dumps([1, 2]),
        json.dumps({"symbol": "BTC-USD", "event_time": NOW}),  # no price
        json.dumps({"symbol": "BTC-USD", "price": "abc", "event_time": NOW}),
        json.dumps({"symbol": "BTC-USD", "price": 1, "event_time": 1.5}),  # not whole ms
        json.dumps({"symbol": "BTC-USD", "price": 10**400, "event_time": NOW}),  # no double holds it
        "",
    ]) + "\n")
    csv_file = tmp_path / "t.csv"
    csv_file.write_text(f"symbol,price,event_time,volume\nBTC-USD,1.5,{NOW},2\nETH-USD,2.5,{NOW + 1},\n"
                        f"SOL-USD,3.5,{NOW + 2},\nBTC-USD,,{NOW}\nshort-row\n")
    for path, malformed in ((jsonl, 6), (csv_file, 2)):
        stats = Stats()
        got = as_tuples(list(read_ticks(path, stats)))
        assert got == [("BTC-USD", 1.5, NOW, 2.0, Feed.REPLAY), ("ETH-USD", 2.5, NOW + 1, None, Feed.REPLAY),
                       ("SOL-USD", 3.5, NOW + 2, None, Feed.REPLAY)], path
        assert dict(stats.rejected) == {"malformed": malformed}, path
        assert stats.received == malformed  # the pipeline counts the good ones when it receives them


def test_a_non_utf8_byte_is_one_malformed_line_and_the_replay_goes_on(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(line("BTC-USD", 1.0, NOW)
                     + b'{"symbol": "BTC-\xff-USD", "price": 2.0, "event_time": 1764050400001}\n'  # invalid start byte
                     + line("ETH-USD", 3.0, NOW + 2)
                     + b'{"symbol": "\xe2\x82", "price": 4.0, "event_time": 1764050400003}\n'  # truncated sequence
                     + line("SOL-USD", 5.0, NOW + 4))
    stats = Stats()
    with caplog.at_level(logging.WARNING, logger="producer.sources.replay"):
        got = [(t.symbol, t.price) for t in read_ticks(path, stats)]
    assert got == [("BTC-USD", 1.0), ("ETH-USD", 3.0), ("SOL-USD", 5.0)]
    assert dict(stats.rejected) == {"malformed": 2}
    warnings = [r.getMessage() for r in caplog.records]
    assert f"{path}:2 (not UTF-8: byte 0xff at column 17)" in warnings[0]
    assert f"{path}:4 (not UTF-8: byte 0xe2" in warnings[1] and len(warnings) == 2


def test_a_non_utf8_byte_in_a_csv_file_is_one_malformed_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bytes.csv"
    path.write_bytes(b"\xef\xbb\xbfsymbol,price,event_time,volume\n"  # with a byte-order mark
                     + f"BTC-USD,1.0,{NOW},\n".encode()
                     + f"ETH\xc0-USD,2.0,{NOW + 1},\n".encode("latin-1")
                     + f"SOL-USD,3.0,{NOW + 2},0.5\n".encode())
    stats = Stats()
    with caplog.at_level(logging.WARNING, logger="producer.sources.replay"):
        got = [(t.symbol, t.price, t.volume) for t in read_ticks(path, stats)]
    assert got == [("BTC-USD", 1.0, None), ("SOL-USD", 3.0, 0.5)]
    assert dict(stats.rejected) == {"malformed": 1}
    assert [r.getMessage() for r in caplog.records] == [
        f"skipping malformed line {path}:3 (not UTF-8: byte 0xc0 at column 4)"]


def test_tick_from_row_rejects_non_ticks() -> None:
    for row in ({"price": 1, "event_time": 1}, {"symbol": "", "price": 1, "event_time": 1},
                {"symbol": "A", "price": True, "event_time": 1}, {"symbol": 3, "price": 1, "event_time": 1}):
        with pytest.raises((KeyError, ValueError, TypeError)):
            tick_from_row(row)


def test_values_that_parse_but_break_the_contract_are_left_to_the_validator() -> None:
    """A NaN price or a year-10000 time is a tick with a bad value (counted by its reason), not a malformed line."""
    t = tick_from_row({"symbol": "A", "price": "nan", "event_time": 10**30, "volume": "-3"})
    assert math_isnan(t.price) and t.event_time == 10**30 and t.volume == -3.0


def math_isnan(x: float) -> bool:
    return x != x


class FakeClock:
    """Monotonic seconds that only move when the replay sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.now += seconds
        return False  # not stopped


@pytest.mark.parametrize(("speed", "expected"), [(1, [0.0, 1.0, 3.5]), (10, [0.0, 0.1, 0.35]), (0, [0.0, 0.0, 0.0])])
def test_replay_speed_follows_the_recorded_gaps(tmp_path: Path, speed: float, expected: list[float]) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(line("A", 1.0, NOW) + line("A", 2.0, NOW + 1000) + line("A", 3.0, NOW + 3500))
    clock = FakeClock()
    emitted: list[tuple[float, float]] = []
    ReplaySource(path, speed, Stats(), clock=clock.time, sleep=clock.sleep).run(
        lambda t: emitted.append((round(clock.now - 100.0, 6), t.price)))
    assert emitted == list(zip(expected, [1.0, 2.0, 3.0], strict=True))
    assert (clock.sleeps == []) is (speed == 0)


def test_replay_stops_when_the_sleep_reports_a_stop(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(line("A", 1.0, NOW) + line("A", 2.0, NOW + 1000))
    emitted: list[Tick] = []
    ReplaySource(path, 1, Stats(), clock=lambda: 0.0, sleep=lambda _s: True).run(emitted.append)
    assert [t.price for t in emitted] == [1.0]


def test_the_replay_sample_named_in_the_no_internet_advice_is_clean() -> None:
    """tests/fixtures/producer/sample_ticks.jsonl: every line a tick the project's contract and SYMBOLS accept."""
    settings = Settings.load()
    path = PROJECT_ROOT / REPLAY_SAMPLE
    stats = Stats()
    ticks = list(read_ticks(path, stats))
    validator = Validator(ValidationRules(symbols=frozenset(parse_symbols(settings["SYMBOLS"])),
                                          contract=TickContract.from_settings(settings.env)))
    assert [validator.check(t) for t in ticks] == [None] * len(ticks)
    assert not stats.rejected and len(ticks) == len(path.read_bytes().splitlines())
    assert {t.symbol for t in ticks} == set(parse_symbols(settings["SYMBOLS"]))
    assert ticks[-1].event_time - ticks[0].event_time >= 5 * 60_000  # several one-minute candles per symbol
