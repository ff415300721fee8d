"""Validation before produce: each rejected tick is counted by reason, none stops the producer."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from producer.tick import Tick, now_ms

# Rejection reasons (also used as counter names in the stats line and the health file).
BAD_PRICE = "bad_price"
UNKNOWN_SYMBOL = "unknown_symbol"
FUTURE_TIME = "future_time"
STALE_TIME = "stale_time"
DUPLICATE = "duplicate"
MALFORMED = "malformed"  # counted by sources: frames / lines that do not even parse into a tick


@dataclass(frozen=True)
class ValidationRules:
    symbols: frozenset[str]
    max_future_ms: int | None = 5 * 60 * 1000  # None: no check
    max_past_ms: int | None = 24 * 3600 * 1000  # None: no check (replay's default)
    dedup_window: int = 10_000  # how many recent (symbol, event_time, price) keys are remembered


class Validator:
    """Returns None for a good tick, else the rejection reason."""

    def __init__(self, rules: ValidationRules, clock_ms: Callable[[], int] = now_ms) -> None:
        self.rules = rules
        self._clock_ms = clock_ms
        self._recent: OrderedDict[tuple[str, int, float], None] = OrderedDict()

    def check(self, tick: Tick) -> str | None:
        rules = self.rules
        price = tick.price
        if not isinstance(price, float | int) or not math.isfinite(price) or price <= 0:
            return BAD_PRICE
        if tick.symbol not in rules.symbols:
            return UNKNOWN_SYMBOL
        if rules.max_future_ms is not None or rules.max_past_ms is not None:
            now = self._clock_ms()
            if rules.max_future_ms is not None and tick.event_time > now + rules.max_future_ms:
                return FUTURE_TIME
            if rules.max_past_ms is not None and tick.event_time < now - rules.max_past_ms:
                return STALE_TIME
        key = (tick.symbol, tick.event_time, float(price))
        if key in self._recent:
            return DUPLICATE
        self._recent[key] = None
        if len(self._recent) > rules.dedup_window:
            self._recent.popitem(last=False)
        return None


def parse_symbols(value: str | Iterable[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    return [s.strip() for s in items if s.strip()]
