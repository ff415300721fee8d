"""Counters shared by sources (threads), the pipeline and the sink; the one-line summary."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    received: int = 0  # ticks handed over by the source (before validation)
    produced: int = 0  # ticks handed to the sink
    delivered: int = 0  # acknowledged by the broker (or written, for record)
    failed: int = 0  # delivery failures reported by the client, plus whatever flush could not deliver
    reconnects: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last: tuple[float, int] = (0.0, 0)

    def reject(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.rejected[reason] += n

    def reconnected(self) -> None:
        with self._lock:
            self.reconnects += 1

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "received": self.received, "produced": self.produced, "delivered": self.delivered,
                "failed": self.failed, "rejected": dict(self.rejected), "reconnects": self.reconnects,
                "uptime_s": round(time.monotonic() - self.started, 1),
            }

    def summary_line(self, in_flight: int | None = None) -> str:
        """`ticks/s` is the receive rate since the previous summary (or since start)."""
        now = time.monotonic()
        last_t, last_received = self._last if self._last[0] else (self.started, 0)
        rate = (self.received - last_received) / max(now - last_t, 1e-9)
        self._last = (now, self.received)
        rejected = ",".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "0"
        queued = "" if in_flight is None else f" in_flight={in_flight}"
        return (f"stats: received={self.received} ({rate:.1f} ticks/s) produced={self.produced} "
                f"delivered={self.delivered} failed={self.failed} rejected[{rejected}] "
                f"reconnects={self.reconnects}{queued}")
