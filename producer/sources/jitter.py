"""Micro-jitter: synthetic ticks between real polls, bounded around the last real price.

price = last real price x (1 + u), u uniform in [-bps, +bps] / 10 000; reproducible with a seed.
Always labelled feed=JITTER (the only synthetic feed) and never compounding: each jitter tick is drawn
around the last *real* price, so the synthetic series cannot drift away from the market.
"""

from __future__ import annotations

import random

from producer.tick import Feed, Tick


class Jitter:
    def __init__(self, bps: float, seed: int | None = None) -> None:
        if bps < 0:
            raise ValueError("jitter bps must be >= 0")
        self.bps = bps
        self._rng = random.Random(seed)

    def bounds(self, real_price: float) -> tuple[float, float]:
        spread = real_price * self.bps / 10_000
        return real_price - spread, real_price + spread

    def tick(self, real: Tick, event_time: int) -> Tick:
        u = self._rng.uniform(-self.bps, self.bps) / 10_000
        return Tick(symbol=real.symbol, price=real.price * (1 + u), event_time=event_time, volume=None,
                    feed=Feed.JITTER)
