"""Validation before produce: each rejected tick is counted by reason, none stops the producer.

Two layers, checked in this order (the first failing check names the reason):

1. The tick contract (`TickContract`: the ranges, the symbol pattern and the feeds of
   schemas/tick_contract.json, the time bounds of .env: TICK_MIN_EVENT_TIME, TICK_MAX_FUTURE_SECONDS): what
   every writer of the topic must satisfy, checked again by Kafka Connect and by PostgreSQL.
   bad_symbol, bad_price, bad_volume, bad_feed, implausible_time, future_time. It applies to every source,
   replay included.
2. The producer's own policy: unknown_symbol (not in --symbols), stale_time (--max-age; off for replay by
   default), duplicate (--dedup-window).
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from core.settings import PROJECT_ROOT, SettingsError
from producer.tick import Tick, now_ms

CONTRACT_FILE = PROJECT_ROOT / "schemas" / "tick_contract.json"


class Reason(StrEnum):
    """Why a tick was not produced: the counter names in the stats line, the summary and the health file."""

    MALFORMED = "malformed"  # counted by sources: a frame / line / quote that does not even parse into a tick
    BAD_SYMBOL = "bad_symbol"  # not a whole match of the contract's symbol pattern
    BAD_PRICE = "bad_price"  # not a finite number within the contract's price range
    BAD_VOLUME = "bad_volume"  # not null and not a finite number within the contract's volume range
    BAD_FEED = "bad_feed"  # not one of the contract's feeds (the schema's enum)
    IMPLAUSIBLE_TIME = "implausible_time"  # event_time before TICK_MIN_EVENT_TIME (or not whole milliseconds)
    FUTURE_TIME = "future_time"  # event_time more than --max-clock-skew ahead of the producer's clock
    UNKNOWN_SYMBOL = "unknown_symbol"  # not in --symbols
    STALE_TIME = "stale_time"  # older than --max-age
    DUPLICATE = "duplicate"  # same symbol + event_time + price among the last --dedup-window ticks
    SERIALIZE_ERROR = "serialize_error"  # counted by the Kafka publisher: the Avro serializer refused the tick


_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class TickContract:
    """What a record on the ticks topic must satisfy to reach the candles (the same limits Connect and
    PostgreSQL enforce). Ranges are inclusive."""

    min_event_time_ms: int  # TICK_MIN_EVENT_TIME as UTC epoch milliseconds
    max_future_ms: int  # TICK_MAX_FUTURE_SECONDS x 1000
    price_min: float = 1e-9  # the defaults are schemas/tick_contract.json's; from_settings reads the file
    price_max: float = 1e9
    volume_min: float = 0.0
    volume_max: float = 1e15
    symbol_pattern: str = "^[A-Z0-9][A-Z0-9.=^-]{0,31}$"  # a whole-string match (re.fullmatch)
    feeds: frozenset[str] = frozenset({"STREAM", "POLL", "JITTER", "REPLAY"})

    @property
    def symbol_re(self) -> re.Pattern[str]:
        return _compiled(self.symbol_pattern)

    @classmethod
    def from_settings(cls, env: Mapping[str, str], definition: Path = CONTRACT_FILE) -> TickContract:
        """From schemas/tick_contract.json and the time bounds of the project's settings (.env + environment);
        a missing or malformed limit is a SettingsError."""
        limits = contract_shape(definition)
        min_time = _setting(env, "TICK_MIN_EVENT_TIME", "an ISO 8601 time with a zone, e.g. 2009-01-03T00:00:00Z")
        try:
            when = datetime.fromisoformat(min_time)
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise SettingsError(f"setting TICK_MIN_EVENT_TIME must be an ISO 8601 time with a zone "
                                f"(e.g. 2009-01-03T00:00:00Z), not {min_time!r}")
        return cls(min_event_time_ms=(when - datetime(1970, 1, 1, tzinfo=UTC)) // _MS,
                   max_future_ms=_positive_int(env, "TICK_MAX_FUTURE_SECONDS") * 1000, **limits)


def contract_shape(definition: Path = CONTRACT_FILE) -> dict[str, object]:
    """The limits of schemas/tick_contract.json as TickContract's keyword arguments; a SettingsError if unreadable."""
    try:
        shape = json.loads(definition.read_text(encoding="utf-8"))
        limits = {"price_min": float(shape["price"]["min"]), "price_max": float(shape["price"]["max"]),
                  "volume_min": float(shape["volume"]["min"]), "volume_max": float(shape["volume"]["max"]),
                  "symbol_pattern": str(shape["symbol"]["pattern"]),
                  "feeds": frozenset(str(f) for f in shape["feed"]["values"])}
        _compiled(limits["symbol_pattern"])
    except (OSError, ValueError, KeyError, TypeError, re.error) as exc:
        raise SettingsError(f"the tick contract {definition} is unreadable or incomplete "
                            f"({type(exc).__name__}: {exc}); restore it from git") from exc
    return limits


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    if pattern not in _PATTERNS:
        _PATTERNS[pattern] = re.compile(pattern)
    return _PATTERNS[pattern]


def _setting(env: Mapping[str, str], key: str, what: str) -> str:
    value = env.get(key)
    if not value:
        raise SettingsError(f"setting {key} ({what}) is missing from .env and the environment")
    return value


def _positive_int(env: Mapping[str, str], key: str) -> int:
    value = _setting(env, key, "a whole number > 0")
    if not value.isdigit() or int(value) <= 0:
        raise SettingsError(f"setting {key} must be a whole number > 0, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class ValidationRules:
    symbols: frozenset[str]
    contract: TickContract
    max_future_ms: int | None = None  # a stricter future bound than the contract's (--max-clock-skew); None: its own
    max_past_ms: int | None = None  # --max-age; None: no check (replay's default)
    dedup_window: int = 10_000  # how many recent (symbol, event_time, price) keys are remembered

    @property
    def future_ms(self) -> int:
        """The future bound in force: never looser than the contract's."""
        own = self.contract.max_future_ms
        return own if self.max_future_ms is None else min(self.max_future_ms, own)


def _finite(value: object) -> float | None:
    """The value as a finite float, or None (not a number, a bool, NaN, +-inf, an int too large for a double)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def symbol_ok(symbol: object, contract: TickContract) -> bool:
    """A whole match of the pattern: fullmatch, so "BTC-USD\\n" fails (a bare `$` would let it through)."""
    return isinstance(symbol, str) and contract.symbol_re.fullmatch(symbol) is not None


def contract_violation(tick: Tick, contract: TickContract, future_ms: int, now: int,
                       good_symbols: frozenset[str] = frozenset()) -> Reason | None:
    """The first rule of the tick contract the tick breaks, or None. `good_symbols`: symbols already known to
    pass the symbol rule (skips its check)."""
    if tick.symbol not in good_symbols and not symbol_ok(tick.symbol, contract):
        return Reason.BAD_SYMBOL
    price = _finite(tick.price)
    if price is None or not contract.price_min <= price <= contract.price_max:
        return Reason.BAD_PRICE
    if tick.volume is not None:
        volume = _finite(tick.volume)
        if volume is None or not contract.volume_min <= volume <= contract.volume_max:
            return Reason.BAD_VOLUME
    if tick.feed not in contract.feeds:
        return Reason.BAD_FEED
    event_time = tick.event_time
    if isinstance(event_time, bool) or not isinstance(event_time, int) or event_time < contract.min_event_time_ms:
        return Reason.IMPLAUSIBLE_TIME
    if event_time > now + future_ms:
        return Reason.FUTURE_TIME
    return None


class Validator:
    """Returns None for a good tick, else the rejection reason."""

    def __init__(self, rules: ValidationRules, clock_ms: Callable[[], int] = now_ms) -> None:
        self.rules = rules
        self._future_ms = rules.future_ms
        self._good_symbols = frozenset(s for s in rules.symbols if symbol_ok(s, rules.contract))
        self._clock_ms = clock_ms
        self._recent: OrderedDict[tuple[str, int, float], None] = OrderedDict()

    def check(self, tick: Tick) -> Reason | None:
        rules = self.rules
        now = self._clock_ms()
        broken = contract_violation(tick, rules.contract, self._future_ms, now, self._good_symbols)
        if broken is not None:
            return broken
        if tick.symbol not in rules.symbols:
            return Reason.UNKNOWN_SYMBOL
        if rules.max_past_ms is not None and tick.event_time < now - rules.max_past_ms:
            return Reason.STALE_TIME
        key = (tick.symbol, tick.event_time, float(tick.price))
        if key in self._recent:
            return Reason.DUPLICATE
        self._recent[key] = None
        if len(self._recent) > rules.dedup_window:
            self._recent.popitem(last=False)
        return None


def parse_symbols(value: str | Iterable[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    return [s.strip() for s in items if s.strip()]
