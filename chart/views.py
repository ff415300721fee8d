"""What the page can show: the candle views (interval x variant) and one candle as it travels to browsers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# The views init.sql generates: view_crypto_candles[_<interval>][_real|_filled]; 1m has no suffix.
INTERVALS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1), "1d": timedelta(days=1),
}
VARIANTS: dict[str, str] = {"all": "", "real": "_real", "filled": "_filled"}
ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)  # every bucket is aligned to it (init.sql's candle_origin())
MAX_SYMBOL_LENGTH = 64


def view_name(interval: str, variant: str) -> str:
    return "view_crypto_candles" + ("" if interval == "1m" else f"_{interval}") + VARIANTS[variant]


@dataclass(frozen=True)
class Series:
    """One chart a page can open: a symbol in one view. Every page that opens it shares one cache."""

    symbol: str
    interval: str
    variant: str

    @classmethod
    def parse(cls, symbol: str, interval: str, variant: str) -> Series:
        if interval not in INTERVALS:
            raise ValueError(f"unknown interval {interval!r}; expected one of {', '.join(INTERVALS)}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        if not 0 < len(symbol) <= MAX_SYMBOL_LENGTH or not symbol.isprintable():
            raise ValueError(f"symbol must be 1..{MAX_SYMBOL_LENGTH} printable characters, not {symbol!r}")
        return cls(symbol, interval, variant)

    @property
    def view(self) -> str:
        return view_name(self.interval, self.variant)

    @property
    def width(self) -> timedelta:
        return INTERVALS[self.interval]

    @property
    def filled(self) -> bool:
        return self.variant == "filled"

    def floor(self, at: datetime) -> datetime:
        """The start of the bucket `at` falls in."""
        return at - (at - ORIGIN) % self.width


@dataclass(frozen=True)
class Candle:
    bucket: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    tick_count: int
    synthetic_count: int
    is_gap_fill: bool

    @classmethod
    def from_row(cls, row: tuple) -> Candle:
        bucket, o, h, lo, c, v, n, s, gap = row
        return cls(bucket, float(o), float(h), float(lo), float(c), float(v or 0), int(n or 0), int(s or 0), bool(gap))

    def to_json(self) -> dict[str, float | int | bool]:
        """Compact keys: time (UTC epoch seconds), OHLC, volume, ticks, synthetic ticks, gap fill."""
        return {"t": int(self.bucket.timestamp()), "o": self.open, "h": self.high, "l": self.low, "c": self.close,
                "v": self.volume, "n": self.tick_count, "s": self.synthetic_count, "g": self.is_gap_fill}
