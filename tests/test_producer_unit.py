"""Producer unit tests without the stack: validation, jitter, replay parsing, poll (recorded responses,
429 Retry-After), the pipeline with a fake sink, health check, --help, registry unreachable."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from email.utils import formatdate
from pathlib import Path

import pytest
from yfinance import _http as yf_http  # the HTTP backend yfinance uses (curl_cffi, or requests without it)

from core.health import check, write_health
from core.settings import PROJECT_ROOT, Settings
from producer.__main__ import build_validator
from producer.cli import SOURCES, build_parser, parse_args
from producer.kafka_publisher import KafkaPublisher, producer_config
from producer.pipeline import EXIT_OK, EXIT_UNDELIVERED, Pipeline
from producer.sources import Source
from producer.sources.jitter import Jitter
from producer.sources.poll import (
    QUOTE_URL,
    Fetch,
    HttpStatusError,
    PollSource,
    YahooQuotes,
    parse_quote_response,
    parse_retry_after,
)
from producer.sources.replay import ReplaySource
from producer.stats import RecentCounts, Stats
from producer.tick import Feed, Tick, now_ms
from producer.validate import Reason, TickContract, ValidationRules, Validator, parse_symbols
from tests.fixtures.producer.summary import final_counts

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "producer"
NOW = 1_764_050_400_000
CONTRACT = TickContract.from_settings(Settings.load().env)


def tick(symbol: str = "BTC-USD", price: float = 100.0, event_time: int = NOW, feed: Feed = Feed.STREAM) -> Tick:
    return Tick(symbol, price, event_time, None, feed)


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


def run_poll(fetch: Fetch | None, fetches: int, **kwargs: object) -> tuple[list[Tick], FakeClock, PollSource]:
    """Run a poll source (fake sleep and clock) until it has called its fetch `fetches` times, failures
    included; fetch None = the real YahooQuotes."""
    clock, emitted, stop = FakeClock(), [], threading.Event()
    source = PollSource(["BTC-USD", "ETH-USD", "SOL-USD"], Stats(), fetch=fetch, stop_event=stop,
                        sleep=clock.sleep, clock_ms=lambda: clock.now_ms, **kwargs)  # type: ignore[arg-type]
    inner, calls = source.fetch, [0]

    def counting_fetch(symbols: Sequence[str]) -> list[Tick]:
        calls[0] += 1
        if calls[0] > fetches:
            stop.set()
            raise RuntimeError("stop")
        return inner(symbols)

    source.fetch = counting_fetch
    source.run(emitted.append)
    return emitted, clock, source


def test_poll_emits_real_ticks_then_bounded_jitter_between_polls() -> None:
    emitted, clock, source = run_poll(lambda s: recorded_quotes(), fetches=2, interval=5, jitter=Jitter(10, seed=1),
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
    again, _, _ = run_poll(lambda s: recorded_quotes(), fetches=2, interval=5, jitter=Jitter(10, seed=1),
                           jitter_interval=1)
    assert [t.price for t in again] == [t.price for t in emitted]  # reproducible with --seed


def test_poll_without_jitter_only_sleeps_the_interval() -> None:
    emitted, clock, _ = run_poll(lambda s: recorded_quotes(), fetches=2, interval=60, jitter=None)
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

    emitted, clock, _ = run_poll(fetch, fetches=5, interval=60, jitter=None, initial_backoff=1, max_backoff=300)
    assert clock.sleeps[0] == 7  # Retry-After honoured exactly
    assert clock.sleeps[1] == 2
    assert 4 <= clock.sleeps[2] <= 5 and 8 <= clock.sleeps[3] <= 9  # exponential (+ jitter) without Retry-After
    assert len(emitted) == 3


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 29 <= parse_retry_after(formatdate(time.time() + 30, usegmt=True)) <= 31  # type: ignore[operator]


class YahooHttp:
    """Yahoo's servers, below yfinance: patched into the HTTP session class yfinance uses (curl_cffi, or requests
    without it), so yfinance's own code (cookie, crumb, its retry with the other cookie strategy, its 429
    handling) runs. Quote requests get `quote_replies` in turn; the cookie and crumb endpoints answer 200."""

    def __init__(self, quote_replies: list[tuple[int, dict[str, str], dict | None]]) -> None:
        self.quote_replies = list(quote_replies)
        self.quote_requests: list[dict[str, str]] = []

    def request(self, method: str, url: str, params: dict | None = None, **_kw: object) -> object:
        if url.startswith(QUOTE_URL):
            self.quote_requests.append(dict(params or {}))
            status, headers, payload = self.quote_replies.pop(0)
            return http_response(url, status, headers, json.dumps(payload or {}).encode())
        if "getcrumb" in url:
            return http_response(url, 200, {}, b"crumb-1")
        return http_response(url, 200, {}, b"<html><body>cookie / consent page</body></html>")


def http_response(url: str, status: int, headers: dict[str, str], body: bytes) -> object:
    """A real response object of the backend yfinance uses."""
    if yf_http.HAS_CURL_CFFI:
        from curl_cffi.requests.headers import Headers

        response = yf_http.requests.Response()
        response.headers, response.content, response.ok = Headers(headers), body, 200 <= status < 400
    else:
        from requests.structures import CaseInsensitiveDict

        response = yf_http.requests.Response()
        response.headers, response._content = CaseInsensitiveDict(headers), body  # noqa: SLF001
    response.status_code, response.url, response.reason = status, url, "test"
    return response


@pytest.fixture
def yahoo(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Install a YahooHttp; a fresh yfinance YfData singleton (no crumb cached) and no cookie cache on disk."""
    from yfinance import cache
    from yfinance.data import SingletonMeta

    monkeypatch.setattr(SingletonMeta, "_instances", {})
    monkeypatch.setattr(cache._CookieCacheManager, "_Cookie_cache", cache._CookieCacheDummy())  # noqa: SLF001

    def install(quote_replies: list[tuple[int, dict[str, str], dict | None]]) -> YahooHttp:
        server = YahooHttp(quote_replies)
        monkeypatch.setattr(yf_http.requests.Session, "request", server.request)  # bound: no session argument
        return server

    return install


QUOTES = json.loads((FIXTURES / "quote_ok.json").read_text())


def test_poll_honours_retry_after_from_yfinances_real_429(yahoo) -> None:  # noqa: ANN001
    """yfinance retries a 429 once (other cookie strategy), then raises YFRateLimitError without the response;
    the poll source still waits the Retry-After Yahoo sent, then polls again."""
    server = yahoo([(429, {"Retry-After": "30"}, None), (429, {"Retry-After": "30"}, None), (200, {}, QUOTES)])
    emitted, clock, source = run_poll(None, fetches=2, interval=60, jitter=None)
    assert clock.sleeps[0] == 30
    assert [(t.symbol, t.price) for t in emitted] == [(t.symbol, t.price) for t in recorded_quotes()]
    assert len(server.quote_requests) == 3 and server.quote_requests[-1]["symbols"] == "BTC-USD,ETH-USD,SOL-USD"
    assert source.stats.rejected["malformed"] == 1  # the BAD-USD quote of the live response is counted


def test_yahoo_429_without_retry_after_and_5xx_become_status_errors_without_a_delay(yahoo) -> None:  # noqa: ANN001
    yahoo([(429, {}, None), (429, {}, None), (502, {}, None), (503, {"Retry-After": "bogus"}, None), (200, {}, QUOTES)])
    quotes = YahooQuotes()
    with pytest.raises(HttpStatusError) as rate_limited:
        quotes(["BTC-USD"])
    assert (rate_limited.value.status, rate_limited.value.retry_after) == (429, None)
    with pytest.raises(HttpStatusError) as server_error:
        quotes(["BTC-USD"])  # yfinance retries the 502 once and hands back the 503 response
    assert (server_error.value.status, server_error.value.retry_after) == (503, None)
    assert len(quotes(["BTC-USD"])) == 3


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


def replay_pipeline(tmp_path: Path, lines: list[dict], **kwargs: object) -> tuple[Pipeline, Stats]:
    """A replay (as fast as possible) of `lines` plus one line that is not JSON, through the real validator."""
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "oops\n")
    stats, stop = Stats(), threading.Event()
    validator = Validator(ValidationRules(symbols=frozenset({"A", "B"}), contract=CONTRACT))
    pipeline = Pipeline(ReplaySource(path, 0, stats, stop_event=stop), validator, stats, stop, stats_interval=0,
                        **kwargs)  # type: ignore[arg-type]
    return pipeline, stats


def test_pipeline_counts_rejections_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lines = [{"symbol": "A", "price": 1.0 + i, "event_time": NOW + i} for i in range(10)]
    lines += [{"symbol": "C", "price": 1, "event_time": NOW}, {"symbol": "A", "price": 0, "event_time": NOW},
              {"symbol": "A", "price": 1.0, "event_time": NOW}, {"symbol": "A", "price": 1, "event_time": NOW,
                                                                  "volume": -3}]
    pipeline, stats = replay_pipeline(tmp_path, lines, health_file=tmp_path / "health.json")
    sink = FakeSink(stats)
    assert pipeline.run(sink) == EXIT_OK
    assert len(sink.sent) == 10
    counts = final_counts(capsys.readouterr().out)
    assert counts == {"received": 15, "produced": 10, "delivered": 10, "failed": 0, "reconnects": 0, "rejected": {
        "malformed": 1, "unknown_symbol": 1, "bad_price": 1, "duplicate": 1, "bad_volume": 1}}
    health = json.loads((tmp_path / "health.json").read_text())
    assert {k: health[k] for k in counts} == counts

    pipeline, stats = replay_pipeline(tmp_path, lines)
    assert pipeline.run(FakeSink(stats, fail_every=3)) == EXIT_UNDELIVERED
    assert stats.failed == 3


def test_event_times_beyond_avro_and_datetime_are_counted_not_raised(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """A replay file with times past Avro's long, past year 9999, before 1970 and before the contract's start."""
    times = [2**63, 2**64 + 5, 10**30, 253_402_300_800_000, -(2**63) - 1, -1, CONTRACT.min_event_time_ms - 1]
    lines = [{"symbol": "A", "price": 2.0, "event_time": NOW}]
    lines += [{"symbol": "A", "price": 1.0, "event_time": t} for t in times]
    lines += [{"symbol": "B", "price": 3.0, "event_time": NOW}]
    pipeline, stats = replay_pipeline(tmp_path, lines)
    sink = FakeSink(stats)
    assert pipeline.run(sink) == EXIT_OK
    assert [(t.symbol, t.price) for t in sink.sent] == [("A", 2.0), ("B", 3.0)]
    assert final_counts(capsys.readouterr().out)["rejected"] == {"future_time": 4, "implausible_time": 3,
                                                                 "malformed": 1}


def test_pipeline_max_ticks(tmp_path: Path) -> None:
    pipeline, stats = replay_pipeline(tmp_path, [{"symbol": "B", "price": 1.0 + i, "event_time": NOW + i}
                                                 for i in range(5000)], max_ticks=7)
    sink = FakeSink(stats)
    assert pipeline.run(sink) == EXIT_OK
    assert len(sink.sent) == 7


# -- Kafka sink: a tick the serializer refuses ------------------------------------------------------------
def test_a_tick_the_serializer_refuses_is_a_counted_rejection(caplog: pytest.LogCaptureFixture) -> None:
    """The ticks around it are queued for Kafka (with consecutive sequence numbers), nothing is raised."""
    seen: list[dict] = []

    def serializer(record: dict, _ctx: object) -> bytes:
        if record["symbol"] == "ETH-USD":
            raise ValueError("value out of range for the schema")
        seen.append(record)
        return json.dumps(record).encode()

    stats = Stats()
    config = producer_config({"bootstrap.servers": "127.0.0.1:9"}, message_timeout_ms=1000)
    sink = KafkaPublisher(config, None, "", "t", stats,  # type: ignore
                     value_serializer_=serializer)
    with caplog.at_level(logging.WARNING, logger="producer.kafka_publisher"):
        for symbol in ("BTC-USD", "ETH-USD", "SOL-USD"):
            sink.send(Tick(symbol, 1.0, NOW, None, Feed.STREAM))
    assert (stats.produced, dict(stats.rejected), sink.in_flight()) == (2, {"serialize_error": 1}, 2)
    assert [(r["symbol"], r["sequence"]) for r in seen] == [("BTC-USD", 1), ("SOL-USD", 2)]
    refusals = [r.getMessage() for r in caplog.records if "serialize_error" in r.getMessage()]
    assert refusals == ["rejected (serialize_error): 'ETH-USD' at 1764050400000: ValueError: value out of range for "
                        "the schema"]
    assert sink.flush(0.1) == 2 and stats.failed == 2  # no broker here: undelivered ticks are counted, not lost


# -- health check ------------------------------------------------------------------------------------------
def test_health_file_fresh_and_stale(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    assert not check(path, 120)[0]
    write_health(path, {"delivered": 3})
    assert json.loads(path.read_text())["delivered"] == 3
    cmd = [sys.executable, "-m", "core.health", str(path), "--max-age", "120"]
    assert subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, check=False).returncode == 0
    old = time.time() - 300
    os.utime(path, (old, old))
    stale = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    assert stale.returncode == 1 and "unhealthy" in stale.stderr
    missing = subprocess.run([*cmd[:3], str(tmp_path / "nope")], cwd=PROJECT_ROOT, capture_output=True, check=False)
    assert missing.returncode == 1


# -- CLI ---------------------------------------------------------------------------------------------------
def help_section(text: str, title: str) -> list[str]:
    """The indented lines under `title` in --help's description, up to the next blank line."""
    lines = text.splitlines()
    start = lines.index(title) + 1 if title in lines else next(i for i, x in enumerate(lines) if x.startswith(title))
    section = []
    for line in lines[start:]:
        if not line.strip():
            break
        section.append(line)
    return section


def entries(section: list[str]) -> set[str]:
    """The first word of each line indented by exactly two spaces (a definition list's terms)."""
    return {line.split()[0] for line in section if line.startswith("  ") and not line.startswith("   ")}


def test_help_names_every_source_and_every_rejection_reason_with_the_contracts_limits() -> None:
    result = subprocess.run([sys.executable, "-m", "producer", "--help"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, check=True)
    assert entries(help_section(result.stdout, "sources (--source")) == set(SOURCES)
    reasons = help_section(result.stdout, "rejections:")
    listed = entries(reasons)
    assert listed == {r.value for r in Reason}
    env = Settings.load().env
    limits = " ".join(" ".join(reasons).split())
    assert "^[A-Z0-9][A-Z0-9.=^-]{0,31}$" in limits and "1e-09 .. 1e+09" in limits
    assert f"TICK_MIN_EVENT_TIME ({env['TICK_MIN_EVENT_TIME']})" in limits
    assert f"TICK_MAX_FUTURE_SECONDS, {env['TICK_MAX_FUTURE_SECONDS']} s" in limits
    for word in ("JITTER", "SYNTHETIC", "Retry-After", "exit codes"):
        assert word in result.stdout


def test_the_readme_lists_every_rejection_reason() -> None:
    readme = (PROJECT_ROOT / "producer" / "README.md").read_text()
    assert {r.value for r in Reason if f"| `{r.value}` |" in readme} == {r.value for r in Reason}


def cli_args(*argv: str, env: dict[str, str] | None = None) -> argparse.Namespace:
    return parse_args([*argv, "--bootstrap-servers", "k:1", "--schema-registry-url", "http://r"],
                      env=Settings.load().env if env is None else env)


def test_replay_has_no_age_limit_but_keeps_the_tick_contract(tmp_path: Path) -> None:
    """The replay branch of the CLI: --max-age off unless given; TICK_MIN_EVENT_TIME and the future bound stay."""
    path = tmp_path / "t.jsonl"
    path.write_text("")
    now = now_ms()
    years_old = Tick("BTC-USD", 1.0, now - 3 * 365 * 86_400_000, None, Feed.REPLAY)
    replay = build_validator(args := cli_args("--source", "replay", "--file", str(path)), parse_symbols(args.symbols))
    assert args.max_age == 0
    assert replay.check(years_old) is None
    assert replay.check(Tick("BTC-USD", 1.0, CONTRACT.min_event_time_ms - 1, None, Feed.REPLAY)) == "implausible_time"
    assert replay.check(Tick("BTC-USD", 1.0, now + CONTRACT.max_future_ms + 60_000, None, Feed.REPLAY)) == (
        "future_time")
    stream = build_validator(args := cli_args("--source", "stream"), parse_symbols(args.symbols))
    assert args.max_age == 86_400
    assert stream.check(years_old) == "stale_time"
    limited = build_validator(args := cli_args("--source", "replay", "--file", str(path), "--max-age", "3600"),
                              parse_symbols(args.symbols))
    assert limited.check(years_old) == "stale_time"


def test_max_clock_skew_defaults_to_the_contracts_future_limit_and_may_not_exceed_it(
        capsys: pytest.CaptureFixture) -> None:
    env = {**Settings.load().env, "TICK_MAX_FUTURE_SECONDS": "120"}
    args = cli_args(env=env)
    assert args.max_clock_skew == 120
    now = now_ms()
    validator = build_validator(args, parse_symbols(args.symbols))
    assert validator.check(Tick("BTC-USD", 1.0, now + 110_000, None, Feed.STREAM)) is None
    assert validator.check(Tick("BTC-USD", 1.0, now + 130_000, None, Feed.STREAM)) == "future_time"
    assert cli_args("--max-clock-skew", "30", env=env).max_clock_skew == 30
    for too_loose in ("121", "0", "-1"):
        with pytest.raises(SystemExit) as exited:
            cli_args("--max-clock-skew", too_loose, env=env)
        assert exited.value.code == 2
        assert "--max-clock-skew must be > 0 and at most TICK_MAX_FUTURE_SECONDS (120)" in capsys.readouterr().err


def test_a_missing_contract_setting_stops_the_producer_with_its_name(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(line + "\n" for line in (PROJECT_ROOT / ".env").read_text().splitlines()
                                if not line.startswith("TICK_MIN_EVENT_TIME=")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICK_")}
    result = subprocess.run([sys.executable, "-m", "producer", "--help"], cwd=PROJECT_ROOT, capture_output=True,
                            env={**env, "CRYPTOPIPE_ENV_FILE": str(env_file)}, text=True, check=False)
    assert result.returncode != 0
    assert "ERROR: setting TICK_MIN_EVENT_TIME" in result.stderr and "missing" in result.stderr


def test_env_defaults_and_cli_overrides() -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:1", "SCHEMA_REGISTRY_URL": "http://r", "TICKS_TOPIC": "t",
           "SYMBOLS": "X-USD", "PRODUCER_SOURCE": "poll"}
    args = build_parser(env).parse_args([])
    assert (args.bootstrap_servers, args.schema_registry_url, args.topic, args.symbols, args.source) == (
        "k:1", "http://r", "t", "X-USD", "poll")
    assert build_parser(env).parse_args(["--topic", "u", "--source", "stream"]).topic == "u"
    # No default of its own: every one comes from the settings (core/settings.py declares them once).
    bare = build_parser({}).parse_args([])
    assert (bare.bootstrap_servers, bare.schema_registry_url, bare.topic, bare.symbols, bare.source) == (
        None, None, None, None, None)


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
    """Without PRODUCER_REPLAY_FILE, replay needs --file (and nothing may reach a Kafka: its address is a dead end)."""
    env = {**os.environ, "PRODUCER_REPLAY_FILE": "", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
           "SCHEMA_REGISTRY_URL": "http://127.0.0.1:9"}
    for argv in (["--source", "replay"], ["--source", "replay", "--file", "/nonexistent"], ["--source", "record"],
                 ["--source", "nope"]):
        result = subprocess.run([sys.executable, "-m", "producer", *argv], cwd=PROJECT_ROOT, capture_output=True,
                                env=env, text=True, check=False, timeout=60)
        assert result.returncode == 2, argv
        assert "usage:" in result.stderr, argv
    result = subprocess.run([sys.executable, "-m", "producer", "--source", "replay"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, check=False, timeout=60)
    assert "--source replay needs --file (or PRODUCER_REPLAY_FILE)" in result.stderr


def test_stream_url_default_is_yfinances_own() -> None:
    from producer.cli import YAHOO_STREAM_URL
    from producer.sources.stream import YAHOO_STREAM_URL as yfinance_default

    assert yfinance_default == YAHOO_STREAM_URL
    assert build_parser({}).parse_args([]).stream_url == yfinance_default


# -- settings the stack's producer runs with; its flow in the health file ------------------------------------
def test_a_replay_of_the_file_the_settings_name_at_their_speed() -> None:
    """`scripts/stack.sh up` starts `python -m producer` with no arguments: PRODUCER_* decide. The file is
    relative to the project (where .env is), wherever the producer runs."""
    env = {**Settings.load().env, "PRODUCER_SOURCE": "replay", "PRODUCER_REPLAY_FILE": "tests/fixtures/producer/"
           "sample_ticks.jsonl", "PRODUCER_REPLAY_SPEED": "0", "KAFKA_BOOTSTRAP_SERVERS": "k:1",
           "SCHEMA_REGISTRY_URL": "http://r"}
    args = parse_args([], env=env)
    assert (args.source, args.file, args.speed) == (
        "replay", PROJECT_ROOT / "tests" / "fixtures" / "producer" / "sample_ticks.jsonl", 0.0)
    assert parse_args(["--speed", "3"], env=env).speed == 3.0
    assert parse_args([], env={**env, "PRODUCER_REPLAY_FILE": "/abs/elsewhere.jsonl", "PRODUCER_SOURCE": "stream"}
                      ).file == Path("/abs/elsewhere.jsonl")


def test_a_replay_speed_setting_that_is_not_a_number_is_an_error_naming_it() -> None:
    env = {**Settings.load().env, "PRODUCER_REPLAY_SPEED": "fast"}
    with pytest.raises(SystemExit, match="PRODUCER_REPLAY_SPEED must be a number, not 'fast'"):
        parse_args([], env=env)


def test_the_project_settings_start_the_live_stream_by_default() -> None:
    settings = Settings.load().env
    assert settings["PRODUCER_SOURCE"] == "stream"
    assert (PROJECT_ROOT / settings["PRODUCER_REPLAY_FILE"]).is_file()


def test_recent_counts_cover_the_last_minute_and_say_how_long_their_window_is() -> None:
    clock = [100.0]
    recent = RecentCounts(span=60.0, clock=lambda: clock[0])
    assert recent.update(0, 0) == {"received": 0, "produced": 0, "seconds": 0.0}
    for t, received, produced in [(10, 20, 18), (30, 50, 45), (55, 80, 70), (65, 100, 90), (95, 130, 119)]:
        clock[0] = 100.0 + t
        last = recent.update(received, produced)
    # at t=95 the newest sample at least 60 s old is t=30 (50, 45): 80 received, 74 produced over 65 s
    assert last == {"received": 80, "produced": 74, "seconds": 65.0}
    clock[0] = 100.0 + 400
    assert recent.update(130, 119) == {"received": 0, "produced": 0, "seconds": 305.0}  # a silence


class SteadySource(Source):
    """A live-like source: one tick every `every` seconds until stopped."""

    name = "steady"

    def __init__(self, every: float, stop_event: threading.Event) -> None:
        super().__init__(stop_event)
        self.every = every

    def run(self, emit: Callable[[Tick], None]) -> None:
        n = 0
        while not self.stop_event.wait(self.every):
            n += 1
            emit(Tick(symbol="A", price=1.0 + n, event_time=now_ms(), volume=None, feed=Feed.STREAM))


def test_the_health_file_is_rewritten_on_time_while_ticks_arrive_steadily(tmp_path: Path) -> None:
    """The queue is never empty for long with a tick every 20 ms: the health file (what `status` reads) must
    still be rewritten every health interval, with the source and the last minute's counts."""
    stats, stop = Stats(), threading.Event()
    validator = Validator(ValidationRules(symbols=frozenset({"A"}), contract=CONTRACT))
    health = tmp_path / "health.json"
    pipeline = Pipeline(SteadySource(0.02, stop), validator, stats, stop, health_file=health, health_interval=0.2,
                        stats_interval=0)
    runner = threading.Thread(target=pipeline.run, args=(FakeSink(stats),))
    runner.start()
    try:
        deadline = time.monotonic() + 20
        seen = {}
        while time.monotonic() < deadline and seen.get("received", 0) < 20:
            time.sleep(0.1)
            if health.exists():
                seen = json.loads(health.read_text())
    finally:
        stop.set()
        runner.join(30)
    assert seen.get("received", 0) >= 20, seen
    assert seen["source"] == "steady"
    assert seen["last_minute"]["received"] == seen["received"] and seen["last_minute"]["produced"] == seen["produced"]


def test_with_stay_up_a_finished_replay_keeps_reporting_its_final_counts_until_stopped(tmp_path: Path) -> None:
    health = tmp_path / "health.json"
    pipeline, stats = replay_pipeline(tmp_path, [{"symbol": "A", "price": 1.0 + i, "event_time": NOW + i}
                                                 for i in range(5)], health_file=health, health_interval=0.1)
    assert pipeline.run(FakeSink(stats)) == EXIT_OK
    staying = threading.Thread(target=pipeline.stay_up)
    staying.start()
    finished_at = health.stat().st_mtime
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and health.stat().st_mtime == finished_at:
        time.sleep(0.05)
    assert staying.is_alive()
    assert json.loads(health.read_text())["produced"] == 5 and health.stat().st_mtime > finished_at
    pipeline.stop_event.set()
    staying.join(10)
    assert not staying.is_alive()


def test_the_producer_registers_as_the_registrys_producer_user_and_a_refusal_says_which_password(
        tmp_path: Path) -> None:
    """docs/registry-auth.md: the serializer's registration carries the producer's credentials (basic auth,
    from REGISTRY_PRODUCER_PASSWORD); a registry that refuses them (401) stops the producer at once (exit 2)
    with the name of the secret to set. The registry here is a stub that records what it was sent."""
    import base64
    import http.server

    seen: list[str | None] = []

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization"))
            body = b'{"error_code": 401, "message": "User is not authenticated."}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"symbol": "A", "price": 1, "event_time": NOW}) + "\n")
    env = {**os.environ, "REGISTRY_PRODUCER_PASSWORD": "pw-of-the-test", "CRYPTOPIPE_STATE": str(tmp_path)}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "producer", "--source", "replay", "--file", str(path), "--symbols", "A",
             "--schema-registry-url", f"http://127.0.0.1:{server.server_port}/apis/ccompat/v7",
             "--registry-wait", "20"],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    finally:
        server.shutdown()
    assert result.returncode == 2, result.stderr
    assert seen == ["Basic " + base64.b64encode(b"producer:pw-of-the-test").decode()]  # once: 401 is not retried
    assert "REGISTRY_PRODUCER_PASSWORD" in result.stderr
