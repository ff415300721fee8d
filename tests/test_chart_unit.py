"""The chart's pure parts: notification payloads, series names and bucket alignment, settings errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from chart.config import ChartConfig
from chart.hub import parse_payload
from chart.views import Series, view_name
from control.settings import Settings, SettingsError


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
    with pytest.raises(SettingsError, match="CHART_STALE_SECONDS must be a positive number"):
        ChartConfig.from_settings(Settings.load())


def test_the_chart_reads_as_the_powerbi_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERBI_DB_USER", "reader x")
    dsn = ChartConfig.from_settings(Settings.load()).dsn
    assert "user='reader x'" in dsn and "application_name=cryptopipe-chart" in dsn


def test_a_missing_chart_library_names_the_fetch_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRYPTOPIPE_CACHE", str(tmp_path))
    with pytest.raises(SettingsError, match="scripts/fetch_artifacts.sh chart"):
        ChartConfig.from_settings(Settings.load()).vendor_script  # noqa: B018
