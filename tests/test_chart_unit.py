"""The chart's pure parts: notification payloads, series names and bucket alignment, settings errors, and the
hub's caps (viewers, series, notifications for symbols it does not know) with a fake database."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chart.config import ChartConfig
from chart.hub import Full, Hub, parse_payload
from chart.views import Series, view_name
from core.settings import Settings, SettingsError


def test_a_payload_maps_each_symbol_to_its_earliest_touched_bucket() -> None:
    touched = parse_payload('{"BTC-USD": "2026-11-25T20:01:00Z", "ETH-USD": "2026-11-25T19:59:00Z"}')
    assert touched == {"BTC-USD": datetime(2026, 11, 25, 20, 1, tzinfo=UTC),
                       "ETH-USD": datetime(2026, 11, 25, 19, 59, tzinfo=UTC)}


@pytest.mark.parametrize("payload", ["", "[]", "{}", '{"BTC-USD": 5}', '{"BTC-USD": "yesterday"}', "{nope"])
def test_a_bad_payload_is_an_error_that_quotes_it(payload: str) -> None:
    with pytest.raises(ValueError, match="bad candles_changed payload"):
        parse_payload(payload)


def test_view_names_follow_init_sql() -> None:
    assert view_name("1m", "all") == "view_crypto_candles"
    assert view_name("5m", "real") == "view_crypto_candles_5m_real"
    assert view_name("1d", "filled") == "view_crypto_candles_1d_filled"


@pytest.mark.parametrize(("interval", "expected"), [("1m", "20:07"), ("5m", "20:05"), ("15m", "20:00"),
                                                    ("1h", "20:00"), ("1d", "00:00")])
def test_buckets_are_utc_aligned(interval: str, expected: str) -> None:
    at = datetime(2026, 11, 25, 20, 7, 42, tzinfo=UTC)
    assert Series.parse("BTC-USD", interval, "all").floor(at).strftime("%H:%M") == expected


@pytest.mark.parametrize(("symbol", "interval", "variant", "message"), [
    ("BTC-USD", "2m", "all", "unknown interval"), ("BTC-USD", "1m", "jitter", "unknown variant"),
    ("", "1m", "all", "symbol must be"), ("X" * 65, "1m", "all", "symbol must be"), ("A\nB", "1m", "all", "symbol"),
])
def test_a_series_outside_the_views_is_refused(symbol: str, interval: str, variant: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Series.parse(symbol, interval, variant)


@pytest.fixture(autouse=True)
def reader_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """The secret the stack generates on `up`; these tests run without a stack."""
    monkeypatch.setenv("POWERBI_DB_PASSWORD", "not-a-real-one")


def test_settings_must_be_positive_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHART_STALE_SECONDS", "0")
    with pytest.raises(SettingsError, match="CHART_STALE_SECONDS='0': expected a number above 0"):
        ChartConfig.from_settings(Settings.load())


def test_the_chart_reads_as_its_own_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHART_DB_USER", "chart x")
    monkeypatch.setenv("CHART_DB_PASSWORD", "pw")
    dsn = ChartConfig.from_settings(Settings.load()).dsn
    assert "user='chart x'" in dsn and "application_name=cryptopipe-chart" in dsn


def test_a_missing_chart_library_names_the_fetch_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRYPTOPIPE_CACHE", str(tmp_path))
    with pytest.raises(SettingsError, match="scripts/fetch_artifacts.sh chart"):
        ChartConfig.from_settings(Settings.load()).vendor_script  # noqa: B018


def hub(max_viewers: int = 3, max_series: int = 2) -> Hub:
    config = dataclasses.replace(ChartConfig.from_settings(Settings.load()), max_viewers=max_viewers,
                                 max_series=max_series, symbols=("BTC-USD",))

    async def fetch(statement: object, params: tuple) -> list[tuple]:
        return []
    return Hub(config, fetch)


def run(coroutine_function: object) -> None:
    asyncio.run(coroutine_function())  # the hub's queues and events want a running loop


@pytest.fixture(autouse=True)
def chart_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHART_DB_PASSWORD", "unit-test")


def test_viewers_beyond_the_cap_are_refused_and_counted() -> None:
    async def body() -> None:
        h = hub(max_viewers=3)
        series = Series.parse("BTC-USD", "1m", "all")
        viewers = [h.subscribe(series) for _ in range(3)]
        with pytest.raises(Full, match="at most 3 viewers"):
            h.subscribe(series)
        assert h.refused_viewers == 1
        h.unsubscribe(viewers[0])
        h.subscribe(series)
    run(body)


def test_series_beyond_the_cap_are_refused_but_a_shown_one_is_not() -> None:
    async def body() -> None:
        h = hub(max_viewers=10, max_series=2)
        h.subscribe(Series.parse("BTC-USD", "1m", "all"))
        h.subscribe(Series.parse("BTC-USD", "5m", "all"))
        with pytest.raises(Full, match="at most 2 different charts"):
            h.subscribe(Series.parse("ETH-USD", "1m", "all"))
        h.subscribe(Series.parse("BTC-USD", "5m", "all"))
        assert len(h.subs) == 2
    run(body)


def test_notifications_for_unknown_symbols_grow_nothing_and_move_no_last_tick() -> None:
    async def body() -> None:
        h = hub()
        h.subscribe(Series.parse("BTC-USD", "1m", "all"))
        for n in range(10_000):
            h.notify(f'{{"SPOOF{n}-USD": "2026-01-01T00:00:00Z"}}')
        h.notify('{"BTC-USD": "2026-01-01T00:00:00Z"}')
        h.notify("junk")
        assert h.symbols == {"BTC-USD"}
        assert h.last_tick == {}
        assert h.ignored_notifications == 10_000 and h.bad_notifications == 1
        assert h.subs[Series.parse("BTC-USD", "1m", "all")].dirty_from is not None
        h.set_symbols(["ETH-USD"])  # what the database holds, read on schedule
        assert h.symbols == {"BTC-USD", "ETH-USD"}
    run(body)
