"""Producer unit tests without the stack: validation, jitter, replay parsing, poll (recorded responses,
429 Retry-After), the pipeline with a fake sink, health check, --help, registry unreachable."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from control.settings import PROJECT_ROOT
from producer.cli import SOURCES, build_parser
from producer.health import check, write_health
from producer.pipeline import EXIT_OK, EXIT_UNDELIVERED, Pipeline
from producer.sources.jitter import Jitter
from producer.sources.poll import HttpStatusError, PollSource, parse_quote_response, parse_retry_after, yahoo_fetch
from producer.sources.replay import ReplaySource, read_ticks, tick_from_row
from producer.stats import Stats
from producer.tick import Feed, Tick
from producer.validate import ValidationRules, Validator

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "producer"
NOW = 1_764_050_400_000


def tick(symbol: str = "BTC-USD", price: float = 100.0, event_time: int = NOW, feed: Feed = Feed.STREAM) -> Tick:
    return Tick(symbol, price, event_time, None, feed)


# -- validation --------------------------------------------------------------------------------------------
@pytest.fixture
def validator() -> Validator:
    return Validator(ValidationRules(symbols=frozenset({"BTC-USD", "ETH-USD"})), clock_ms=lambda: NOW)


@pytest.mark.parametrize(("bad", "reason"), [
    (tick(price=math.nan), "bad_price"),
    (tick(price=math.inf), "bad_price"),
    (tick(price=-math.inf), "bad_price"),
    (tick(price=0.0), "bad_price"),
    (tick(price=-1.0), "bad_price"),
    (tick(symbol="DOGE-USD"), "unknown_symbol"),
    (tick(event_time=NOW + 5 * 60_000 + 1), "future_time"),
    (tick(event_time=NOW - 24 * 3_600_000 - 1), "stale_time"),
])
def test_validation_reasons(validator: Validator, bad: Tick, reason: str) -> None:
    assert validator.check(bad) == reason


def test_validation_accepts_edges_and_rejects_repeats(validator: Validator) -> None:
    assert validator.check(tick(event_time=NOW + 5 * 60_000)) is None
    assert validator.check(tick(event_time=NOW - 24 * 3_600_000)) is None
    assert validator.check(tick()) is None
    assert validator.check(tick()) == "duplicate"
    assert validator.check(tick(price=100.01)) is None  # same instant, other price: a real tick
    assert validator.check(tick(symbol="ETH-USD")) is None


def test_duplicate_window_is_bounded() -> None:
    v = Validator(ValidationRules(symbols=frozenset({"A"}), dedup_window=2), clock_ms=lambda: NOW)
    for t in (1, 2, 3):
        assert v.check(tick("A", event_time=NOW + t)) is None
    assert v.check(tick("A", event_time=NOW + 3)) == "duplicate"
    assert v.check(tick("A", event_time=NOW + 1)) is None  # forgotten: outside the window


def test_replay_rules_allow_old_timestamps() -> None:
    v = Validator(ValidationRules(symbols=frozenset({"A"}), max_past_ms=None), clock_ms=lambda: NOW)
    assert v.check(tick("A", event_time=1_500_000_000_000)) is None
    args = build_parser({}).parse_args(["--source", "replay", "--file", "x"])
    assert args.max_age is None  # resolved to "no check" for replay by cli.parse_args


# -- jitter ------------------------------------------------------------------------------------------------
def test_jitter_is_bounded_reproducible_and_labelled() -> None:
    real = tick(price=50_000.0, feed=Feed.POLL)
    a = [Jitter(5, seed=42).tick(real, NOW + i) for i in range(1)]
    j1, j2 = Jitter(5, seed=42), Jitter(5, seed=42)
    s1 = [j1.tick(real, NOW + i) for i in range(2000)]
    s2 = [j2.tick(real, NOW + i) for i in range(2000)]
    assert s1 == s2 and s1[0] == a[0]
    assert [t.price for t in s1] != [t.price for t in (Jitter(5, seed=43).tick(real, NOW + i) for i in range(2000))]
    low, high = Jitter(5).bounds(50_000.0)
    assert (low, high) == (49_975.0, 50_025.0)
    assert all(low <= t.price <= high for t in s1)
    assert max(t.price for t in s1) > 50_020 and min(t.price for t in s1) < 49_980  # uses the band
    assert {t.feed for t in s1} == {Feed.JITTER}
    assert all(t.volume is None and t.symbol == "BTC-USD" for t in s1)


# -- replay parsing ----------------------------------------------------------------------------------------
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
        "",
    ]) + "\n")
    csv_file = tmp_path / "t.csv"
    csv_file.write_text(f"symbol,price,event_time,volume\nBTC-USD,1.5,{NOW},2\nETH-USD,2.5,{NOW + 1},\n"
                        f"SOL-USD,3.5,{NOW + 2},\nBTC-USD,,{NOW}\nshort-row\n")
    for path in (jsonl, csv_file):
        stats = Stats()
        got = [(t.symbol, t.price, t.event_time, t.volume, t.feed) for t in read_ticks(path, stats)]
        assert got == [("BTC-USD", 1.5, NOW, 2.0, Feed.REPLAY), ("ETH-USD", 2.5, NOW + 1, None, Feed.REPLAY),
                       ("SOL-USD", 3.5, NOW + 2, None, Feed.REPLAY)], path
        assert stats.rejected["malformed"] == (5 if path is jsonl else 2), path


def test_tick_from_row_rejects_non_ticks() -> None:
    for row in ({"price": 1, "event_time": 1}, {"symbol": "", "price": 1, "event_time": 1},
                {"symbol": "A", "price": True, "event_time": 1}, {"symbol": 3, "price": 1, "event_time": 1}):
        with pytest.raises((KeyError, ValueError, TypeError)):
            tick_from_row(row)


def test_replay_speed(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"symbol": "A", "price": 1 + i, "event_time": NOW + i * 1000}) + "\n"
                            for i in range(3)))
    for speed, low, high in ((0, 0, 0.15), (10, 0.19, 0.6)):
        emitted: list[Tick] = []
        started = time.monotonic()
        ReplaySource(path, speed, Stats()).run(emitted.append)
        assert low <= time.monotonic() - started <= high, speed
        assert len(emitted) == 3


# -- poll --------------------------------------------------------------------------------------------------
def recorded_quotes() -> list[Tick]:
    return parse_quote_response(json.loads((FIXTURES / "quote_ok.json").read_text()))


def test_parse_recorded_quote_response() -> None:
    stats = Stats()
    ticks = parse_quote_response(json.loads((FIXTURES / "quote_ok.json").read_text()), stats)
    assert [(t.symbol, t.price, t.event_time, t.volume, t.feed) for t in ticks] == [
        ("BTC-USD", 87412.53, 1764050400000, 51234567890.0, Feed.POLL),
        ("ETH-USD", 2931.07, 1764050401000, 21098765432.0, Feed.POLL),
        ("SOL-USD", 137.9, 1764050399000, None, Feed.POLL)]
    assert stats.rejected["malformed"] == 1  # BAD-USD has no price


class FakeClock:
    """Sleeper for the poll source: records each wait, stops the source after `polls` fetches."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.now_ms = NOW

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_ms += int(seconds * 1000)


def run_poll(fetch, polls: int, **kwargs) -> tuple[list[Tick], FakeClock, PollSource]:  # noqa: ANN001
    clock, emitted, stop = FakeClock(), [], threading.Event()
    calls = {"n": 0}

    def counting_fetch(symbols):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] > polls:
            stop.set()
            raise RuntimeError("stop")
        return fetch(symbols)

    source = PollSource(["BTC-USD", "ETH-USD", "SOL-USD"], Stats(), fetch=counting_fetch, stop_event=stop,
                        sleep=clock.sleep, clock_ms=lambda: clock.now_ms, **kwargs)
    source.run(emitted.append)
    return emitted, clock, source


def test_poll_emits_real_ticks_then_bounded_jitter_between_polls() -> None:
    emitted, clock, source = run_poll(lambda s: recorded_quotes(), polls=2, interval=5, jitter=Jitter(10, seed=1),
                                      jitter_interval=1)
    assert source.polls == 2
    feeds = [t.feed for t in emitted]
    # per poll: 3 real ticks, then 4 rounds x 3 symbols of jitter (interval 5 s / 1 s, minus the poll itself)
    assert feeds == ([Feed.POLL] * 3 + [Feed.JITTER] * 12) * 2
    real = {t.symbol: t.price for t in recorded_quotes()}
    for t in emitted:
        if t.feed is Feed.JITTER:
            assert abs(t.price / real[t.symbol] - 1) <= 10 / 10_000
    assert clock.sleeps[:5] == [1, 1, 1, 1, 1]
    again, _, _ = run_poll(lambda s: recorded_quotes(), polls=2, interval=5, jitter=Jitter(10, seed=1),
                           jitter_interval=1)
    assert [t.price for t in again] == [t.price for t in emitted]  # reproducible with --seed


def test_poll_without_jitter_only_sleeps_the_interval() -> None:
    emitted, clock, _ = run_poll(lambda s: recorded_quotes(), polls=2, interval=60, jitter=None)
    assert {t.feed for t in emitted} == {Feed.POLL} and len(emitted) == 6
    assert clock.sleeps[:2] == [60, 60]


def test_poll_honours_retry_after_on_429_and_backs_off_on_5xx() -> None:
    responses = [HttpStatusError(429, retry_after=7), HttpStatusError(503, retry_after=2), HttpStatusError(500),
                 HttpStatusError(500), None]

    def fetch(symbols):  # noqa: ANN001, ANN202
        outcome = responses.pop(0)
        if outcome is not None:
            raise outcome
        return recorded_quotes()

    emitted, clock, _ = run_poll(fetch, polls=5, interval=60, jitter=None, initial_backoff=1, max_backoff=300)
    assert clock.sleeps[0] == 7  # Retry-After honoured exactly
    assert clock.sleeps[1] == 2
    assert 4 <= clock.sleeps[2] <= 5 and 8 <= clock.sleeps[3] <= 9  # exponential (+ jitter) without Retry-After
    assert len(emitted) == 3


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 29 <= parse_retry_after(formatdate(time.time() + 30, usegmt=True)) <= 31  # type: ignore[operator]


def test_yahoo_fetch_maps_429_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    from yfinance.data import YfData

    class Response:
        def __init__(self, status: int, headers: dict, payload: dict | None = None) -> None:
            self.status_code, self.headers, self._payload = status, headers, payload

        def json(self) -> dict:
            return self._payload or {}

        def raise_for_status(self) -> None:
            assert self.status_code < 400

    replies = [Response(429, {"Retry-After": "30"}), Response(502, {}),
               Response(200, {}, json.loads((FIXTURES / "quote_ok.json").read_text()))]
    seen: list[dict] = []

    def fake_get(self, url, params=None, timeout=30):  # noqa: ANN001, ANN202
        seen.append({"url": url, **(params or {})})
        return replies.pop(0)

    monkeypatch.setattr(YfData, "get", fake_get)
    with pytest.raises(HttpStatusError) as first:
        yahoo_fetch(["BTC-USD", "ETH-USD"])
    assert (first.value.status, first.value.retry_after) == (429, 30)
    with pytest.raises(HttpStatusError) as second:
        yahoo_fetch(["BTC-USD"])
    assert (second.value.status, second.value.retry_after) == (502, None)
    assert len(yahoo_fetch(["BTC-USD"])) == 3
    assert seen[0]["symbols"] == "BTC-USD,ETH-USD" and seen[0]["url"].endswith("/v7/finance/quote")


# -- pipeline with a fake sink -----------------------------------------------------------------------------
class FakeSink:
    fatal = None

    def __init__(self, stats: Stats, fail_every: int = 0) -> None:
        self.stats, self.fail_every, self.sent = stats, fail_every, []

    def send(self, t: Tick) -> None:
        self.sent.append(t)
        self.stats.produced += 1
        if self.fail_every and len(self.sent) % self.fail_every == 0:
            self.stats.failed += 1
        else:
            self.stats.delivered += 1

    def poll(self, timeout: float = 0) -> None: ...
    def in_flight(self) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def close(self) -> None: ...


def replay_pipeline(tmp_path: Path, lines: list[dict], **kwargs) -> tuple[Pipeline, Stats]:  # noqa: ANN003
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "oops\n")
    stats, stop = Stats(), threading.Event()
    validator = Validator(ValidationRules(symbols=frozenset({"A", "B"}), max_past_ms=None))
    pipeline = Pipeline(ReplaySource(path, 0, stats, stop_event=stop), validator, stats, stop, stats_interval=0,
                        **kwargs)
    return pipeline, stats


def test_pipeline_counts_rejections_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lines = [{"symbol": "A", "price": 1.0 + i, "event_time": NOW + i} for i in range(10)]
    lines += [{"symbol": "C", "price": 1, "event_time": NOW}, {"symbol": "A", "price": 0, "event_time": NOW},
              {"symbol": "A", "price": 1.0, "event_time": NOW}]
    pipeline, stats = replay_pipeline(tmp_path, lines, health_file=tmp_path / "health.json")
    sink = FakeSink(stats)
    assert pipeline.run(sink) == EXIT_OK
    assert len(sink.sent) == 10
    assert dict(stats.rejected) == {"malformed": 1, "unknown_symbol": 1, "bad_price": 1, "duplicate": 1}
    assert "delivered=10 failed=0" in capsys.readouterr().out
    health = json.loads((tmp_path / "health.json").read_text())
    assert health["delivered"] == 10 and health["rejected"]["duplicate"] == 1

    pipeline, stats = replay_pipeline(tmp_path, lines)
    assert pipeline.run(FakeSink(stats, fail_every=3)) == EXIT_UNDELIVERED
    assert stats.failed == 3


def test_pipeline_max_ticks(tmp_path: Path) -> None:
    pipeline, stats = replay_pipeline(tmp_path, [{"symbol": "B", "price": 1.0 + i, "event_time": NOW + i}
                                                 for i in range(5000)], max_ticks=7)
    sink = FakeSink(stats)
    assert pipeline.run(sink) == EXIT_OK
    assert len(sink.sent) == 7


# -- health check ------------------------------------------------------------------------------------------
def test_health_file_fresh_and_stale(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    assert not check(path, 120)[0]
    write_health(path, {"delivered": 3})
    assert json.loads(path.read_text())["delivered"] == 3
    cmd = [sys.executable, "-m", "producer.health", str(path), "--max-age", "120"]
    assert subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, check=False).returncode == 0
    old = time.time() - 300
    os.utime(path, (old, old))
    stale = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    assert stale.returncode == 1 and "unhealthy" in stale.stderr
    missing = subprocess.run([*cmd[:3], str(tmp_path / "nope")], cwd=PROJECT_ROOT, capture_output=True, check=False)
    assert missing.returncode == 1


# -- CLI ---------------------------------------------------------------------------------------------------
def test_help_lists_every_source_and_option() -> None:
    result = subprocess.run([sys.executable, "-m", "producer", "--help"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, check=True)
    for source in SOURCES:
        assert f"\n  {source} " in result.stdout, source
    for action in build_parser({})._actions:
        for option in action.option_strings:
            assert option in result.stdout, option
    for word in ("JITTER", "SYNTHETIC", "Retry-After", "exit codes"):
        assert word in result.stdout


def test_env_defaults_and_cli_overrides() -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:1", "SCHEMA_REGISTRY_URL": "http://r", "TICKS_TOPIC": "t",
           "SYMBOLS": "X-USD", "PRODUCER_SOURCE": "poll"}
    args = build_parser(env).parse_args([])
    assert (args.bootstrap_servers, args.schema_registry_url, args.topic, args.symbols, args.source) == (
        "k:1", "http://r", "t", "X-USD", "poll")
    assert build_parser(env).parse_args(["--topic", "u", "--source", "stream"]).topic == "u"
    bare = build_parser({}).parse_args([])
    assert (bare.bootstrap_servers, bare.schema_registry_url, bare.topic, bare.symbols, bare.source) == (
        None, None, "crypto.ticks", "BTC-USD,ETH-USD,SOL-USD", "stream")


def test_the_kafka_and_registry_defaults_follow_the_ports_in_the_settings_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text((PROJECT_ROOT / ".env").read_text() + "\nKAFKA_PORT=19092\nREGISTRY_PORT=18080\n")
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL",
                                                           "KAFKA_PORT", "REGISTRY_PORT")}
    out = subprocess.run([sys.executable, "-m", "producer", "--help"], cwd=PROJECT_ROOT, capture_output=True,
                         env={**env, "CRYPTOPIPE_ENV_FILE": str(env_file)}, text=True, check=True).stdout
    assert "default 127.0.0.1:19092" in out
    assert "default http://127.0.0.1:18080/apis/ccompat/v7" in " ".join(out.split())


def test_a_broken_settings_file_is_a_clear_error_not_ignored(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("KAFKA_PORT=9092\nthis line is not a setting\n")
    result = subprocess.run([sys.executable, "-m", "producer", "--help"],
                            env={**os.environ, "CRYPTOPIPE_ENV_FILE": str(env_file)},
                            cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert f"{env_file}:2: not a KEY=VALUE line" in result.stderr


def test_the_producer_runs_without_the_stack_package() -> None:
    """`import stack` fails in this interpreter, as in the producer image, and --help still works."""
    code = ("import runpy, sys; sys.modules['stack'] = None; sys.argv = ['producer', '--help']; "
            "runpy.run_module('producer', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "usage: python -m producer" in result.stdout


def test_unreachable_registry_exits_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"symbol": "A", "price": 1, "event_time": NOW}) + "\n")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "producer", "--source", "replay", "--file", str(path), "--symbols", "A",
         "--schema-registry-url", "http://127.0.0.1:9/apis/ccompat/v7", "--registry-wait", "2"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "cannot register schema subject" in result.stderr and "127.0.0.1:9" in result.stderr
    assert time.monotonic() - started < 30


def test_usage_errors() -> None:
    for argv in (["--source", "replay"], ["--source", "replay", "--file", "/nonexistent"], ["--source", "record"],
                 ["--source", "nope"]):
        result = subprocess.run([sys.executable, "-m", "producer", *argv], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, check=False)
        assert result.returncode == 2, argv


def test_stream_url_default_is_yfinances_own() -> None:
    from producer.cli import YAHOO_STREAM_URL
    from producer.sources.stream import YAHOO_STREAM_URL as yfinance_default

    assert yfinance_default == YAHOO_STREAM_URL
    assert build_parser({}).parse_args([]).stream_url == yfinance_default
