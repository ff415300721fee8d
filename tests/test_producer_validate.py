"""The producer's validation: the tick contract (schemas/tick_contract.json and .env's time bounds: the limits
Kafka Connect and PostgreSQL enforce for every writer) for every source, then the producer's own checks; each
rejection named by its reason."""

from __future__ import annotations

import math

import pytest

from core.settings import Settings, SettingsError
from producer.tick import Feed, Tick
from producer.validate import Reason, TickContract, ValidationRules, Validator

CONTRACT = TickContract.from_settings(Settings.load().env)  # the project's own limits
NOW = 1_764_050_400_000
SKEW_MS = CONTRACT.max_future_ms
LONG = 32 * "X"  # the pattern's longest symbol
AVRO_LONG_MAX = 2**63 - 1


def tick(symbol: str = "BTC-USD", price: object = 100.0, event_time: object = NOW, volume: object = None,
         feed: Feed = Feed.STREAM) -> Tick:
    return Tick(symbol, price, event_time, volume, feed)  # type: ignore[arg-type]


def rules(**kwargs: object) -> ValidationRules:
    return ValidationRules(symbols=frozenset({"BTC-USD", "ETH-USD", LONG}), contract=CONTRACT,
                           **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def validator() -> Validator:
    return Validator(rules(max_past_ms=24 * 3_600_000), clock_ms=lambda: NOW)


def test_the_contract_is_read_from_the_settings() -> None:
    contract = TickContract.from_settings({"TICK_MIN_EVENT_TIME": "2009-01-03T00:00:00Z",
                                           "TICK_MAX_FUTURE_SECONDS": "300"})
    assert contract == TickContract(min_event_time_ms=1_230_940_800_000, max_future_ms=300_000, price_min=1e-9,
                                    price_max=1e9, volume_min=0.0, volume_max=1e15,
                                    symbol_pattern="^[A-Z0-9][A-Z0-9.=^-]{0,31}$",
                                    feeds=frozenset({"STREAM", "POLL", "JITTER", "REPLAY"}))
    offset = TickContract.from_settings({"TICK_MIN_EVENT_TIME": "2009-01-03T01:00:00+01:00",
                                         "TICK_MAX_FUTURE_SECONDS": "1"})
    assert offset.min_event_time_ms == 1_230_940_800_000


@pytest.mark.parametrize(("key", "value"), [
    ("TICK_MIN_EVENT_TIME", None), ("TICK_MIN_EVENT_TIME", "2009-01-03T00:00:00"), ("TICK_MIN_EVENT_TIME", "soon"),
    ("TICK_MAX_FUTURE_SECONDS", "0"), ("TICK_MAX_FUTURE_SECONDS", "5m"), ("TICK_MAX_FUTURE_SECONDS", None),
])
def test_a_missing_or_malformed_contract_setting_is_an_error_naming_it(key: str, value: str | None) -> None:
    env = {"TICK_MIN_EVENT_TIME": "2009-01-03T00:00:00Z", "TICK_MAX_FUTURE_SECONDS": "300"}
    if value is None:
        del env[key]
    else:
        env[key] = value
    with pytest.raises(SettingsError, match=key):
        TickContract.from_settings(env)


@pytest.mark.parametrize(("bad", "reason"), [
    (tick(symbol=""), "bad_symbol"),
    (tick(symbol=LONG + "X"), "bad_symbol"),
    (tick(symbol="BTC-USD\x00"), "bad_symbol"),
    (tick(symbol="BTC\n-USD"), "bad_symbol"),
    (tick(symbol="BTC-USD\x7f"), "bad_symbol"),
    (tick(symbol="BTC-USD\x85"), "bad_symbol"),  # C1 control (NEL)
    (tick(symbol="BTC-USD\udcff"), "bad_symbol"),  # lone surrogate: what a non-UTF-8 argv byte becomes
    (tick(symbol="DOGE\x00"), "bad_symbol"),  # checked before unknown_symbol
    (tick(symbol="btc-usd"), "bad_symbol"),
    (tick(symbol="BTC-USD\n"), "bad_symbol"),  # `$` alone would match before a final newline
    (tick(symbol="-BTC"), "bad_symbol"),
    (tick(symbol="BTC USD"), "bad_symbol"),
    (tick(symbol="BTC-US\u00c9"), "bad_symbol"),
    (tick(price=math.nan), "bad_price"),
    (tick(price=math.inf), "bad_price"),
    (tick(price=-math.inf), "bad_price"),
    (tick(price=0.0), "bad_price"),
    (tick(price=-5.0), "bad_price"),
    (tick(price=10**400), "bad_price"),  # an int no double can hold
    (tick(price=True), "bad_price"),
    (tick(price=5e-324), "bad_price"),  # subnormal
    (tick(price=math.nextafter(1e-9, 0)), "bad_price"),
    (tick(price=math.nextafter(1e9, math.inf)), "bad_price"),
    (tick(volume=math.nan), "bad_volume"),
    (tick(volume=math.inf), "bad_volume"),
    (tick(volume=-3.0), "bad_volume"),
    (tick(volume=-1e-9), "bad_volume"),
    (tick(volume=10**400), "bad_volume"),
    (tick(volume=1e308), "bad_volume"),
    (tick(volume=math.nextafter(1e15, math.inf)), "bad_volume"),
    (tick(feed="MOON"), "bad_feed"),  # type: ignore[arg-type]
    (tick(event_time=CONTRACT.min_event_time_ms - 1), "implausible_time"),
    (tick(event_time=0), "implausible_time"),
    (tick(event_time=-AVRO_LONG_MAX - 10), "implausible_time"),  # below Avro's long
    (tick(event_time=float(NOW)), "implausible_time"),  # not whole milliseconds as an int
    (tick(event_time=NOW + SKEW_MS + 1), "future_time"),
    (tick(event_time=7_258_118_400_000), "future_time"),  # year 2200
    (tick(event_time=253_402_300_800_000), "future_time"),  # year 10000: beyond Python's datetime
    (tick(event_time=AVRO_LONG_MAX + 1), "future_time"),  # beyond Avro's long
    (tick(symbol="DOGE-USD"), "unknown_symbol"),
    (tick(event_time=NOW - 24 * 3_600_000 - 1), "stale_time"),
])
def test_validation_reasons(validator: Validator, bad: Tick, reason: str) -> None:
    assert validator.check(bad) == reason


def test_every_reason_has_its_counter_name() -> None:
    assert {r.value for r in Reason} == {"malformed", "bad_symbol", "bad_price", "bad_volume", "bad_feed",
                                         "implausible_time",
                                         "future_time", "unknown_symbol", "stale_time", "duplicate",
                                         "serialize_error"}


def test_validation_accepts_the_edges_and_rejects_repeats(validator: Validator) -> None:
    assert validator.check(tick(event_time=NOW + SKEW_MS)) is None
    assert validator.check(tick(event_time=NOW - 24 * 3_600_000)) is None
    assert validator.check(tick(symbol=LONG, volume=0.0)) is None  # the longest symbol; volume 0
    assert validator.check(tick(price=1e-9, volume=1e15)) is None  # the ends of the ranges
    assert validator.check(tick(price=1e9)) is None
    assert validator.check(tick(volume=2.5)) is None
    assert validator.check(tick(volume=2.5)) == "duplicate"
    assert validator.check(tick(price=100.01)) is None  # same instant, other price: a real tick
    assert validator.check(tick(symbol="ETH-USD")) is None


def test_without_an_age_limit_the_contract_still_bounds_time() -> None:
    """Replay's rules (no --max-age): years-old ticks pass, but not before TICK_MIN_EVENT_TIME nor the future."""
    v = Validator(rules(max_past_ms=None), clock_ms=lambda: NOW)
    assert v.check(tick(event_time=CONTRACT.min_event_time_ms)) is None
    assert v.check(tick(event_time=1_500_000_000_000, feed=Feed.REPLAY)) is None
    assert v.check(tick(event_time=CONTRACT.min_event_time_ms - 1, feed=Feed.REPLAY)) == "implausible_time"
    assert v.check(tick(event_time=NOW + SKEW_MS + 1, feed=Feed.REPLAY)) == "future_time"


def test_a_stricter_clock_skew_applies_but_never_a_looser_one() -> None:
    strict = Validator(rules(max_future_ms=1000), clock_ms=lambda: NOW)
    assert strict.check(tick(event_time=NOW + 1000)) is None
    assert strict.check(tick(event_time=NOW + 1001)) == "future_time"
    loose = Validator(rules(max_future_ms=SKEW_MS * 10), clock_ms=lambda: NOW)
    assert loose.check(tick(event_time=NOW + SKEW_MS + 1)) == "future_time"


def test_a_configured_symbol_that_breaks_the_contract_is_still_rejected() -> None:
    """--symbols cannot whitelist a bad symbol (e.g. a non-UTF-8 byte in argv becomes a lone surrogate)."""
    bad = ("BTC-USD\x00", "BTC-USD\udcff", LONG + "X")
    v = Validator(ValidationRules(symbols=frozenset(bad), contract=CONTRACT), clock_ms=lambda: NOW)
    assert [v.check(tick(symbol=s)) for s in bad] == ["bad_symbol"] * 3


def test_duplicate_window_is_bounded() -> None:
    v = Validator(ValidationRules(symbols=frozenset({"A"}), contract=CONTRACT, dedup_window=2), clock_ms=lambda: NOW)
    for t in (1, 2, 3):
        assert v.check(tick("A", event_time=NOW + t)) is None
    assert v.check(tick("A", event_time=NOW + 3)) == "duplicate"
    assert v.check(tick("A", event_time=NOW + 1)) is None  # forgotten: outside the window
