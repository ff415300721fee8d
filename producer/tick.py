"""The one value that flows through the producer: a price observation for one symbol."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum


class Feed(StrEnum):
    """Lineage, as in the Avro enum `Feed`: only JITTER ticks are synthetic."""

    STREAM = "STREAM"
    POLL = "POLL"
    JITTER = "JITTER"
    REPLAY = "REPLAY"


@dataclass(frozen=True, slots=True)
class Tick:
    symbol: str
    price: float
    event_time: int  # UTC epoch milliseconds at the source
    volume: float | None
    feed: Feed

    def to_json_dict(self) -> dict[str, object]:
        """The replay file format: one JSON object per line, read back by the replay source."""
        return {"symbol": self.symbol, "price": self.price, "event_time": self.event_time, "volume": self.volume}


def now_ms() -> int:
    return time.time_ns() // 1_000_000
