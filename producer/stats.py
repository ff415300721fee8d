"""Counters shared by sources (threads), the pipeline and the output (Kafka publisher or JSONL recorder);
the one-line summary."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from producer.validate import Reason


@dataclass
class Stats:
    # received = produced + sum(rejected): every frame / line / quote a source handed over is either produced
    # or rejected with a reason (ticks skipped after --max-ticks was reached are not received).
    received: int = 0
    produced: int = 0  # ticks handed to Kafka (or written, for record)
    delivered: int = 0  # acknowledged by the broker (or written, for record)
    # Produced but not delivered (delivery errors, flush timeout), plus ticks still queued when the source
    # did not stop within --stop-timeout (those are neither received nor produced).
    failed: int = 0
    reconnects: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last: tuple[float, int] = (0.0, 0)

    def receive(self) -> None:
        """A tick reached the pipeline (validation and the output then produce or reject it)."""
        with self._lock:
            self.received += 1

    def reject(self, reason: Reason, n: int = 1) -> None:
        """A received tick was not produced, for `reason`."""
        with self._lock:
            self.rejected[reason] += n

    def malformed(self, n: int = 1) -> None:
        """A source received something that is not a tick: received, and rejected as malformed."""
        with self._lock:
            self.received += n
            self.rejected[Reason.MALFORMED] += n

    def reconnected(self) -> None:
        with self._lock:
            self.reconnects += 1

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "received": self.received, "produced": self.produced, "delivered": self.delivered,
                "failed": self.failed, "rejected": {str(k): v for k, v in sorted(self.rejected.items())},
                "reconnects": self.reconnects,
                "uptime_s": round(time.monotonic() - self.started, 1),
            }

    def summary_line(self, in_flight: int | None = None) -> str:
        """`ticks/s` is the receive rate since the previous summary (or since start)."""
        now = time.monotonic()
        last_t, last_received = self._last if self._last[0] else (self.started, 0)
        rate = (self.received - last_received) / max(now - last_t, 1e-9)
        self._last = (now, self.received)
        queued = "" if in_flight is None else f" in_flight={in_flight}"
        return f"stats: {self.counts_text(rate)}{queued}"

    def counts_text(self, rate: float | None = None) -> str:
        """`received=N [(R ticks/s)] produced=N delivered=N failed=N rejected[reason=N,...] reconnects=N`;
        `rejected[0]` when nothing was rejected."""
        snap = self.snapshot()
        rejected = ",".join(f"{k}={v}" for k, v in snap["rejected"].items()) or "0"  # type: ignore[attr-defined]
        speed = "" if rate is None else f" ({rate:.1f} ticks/s)"
        return (f"received={snap['received']}{speed} produced={snap['produced']} delivered={snap['delivered']} "
                f"failed={snap['failed']} rejected[{rejected}] reconnects={snap['reconnects']}")


class RecentCounts:
    """Ticks received and produced over about the last `span` seconds, for the health file (what
    `scripts/stack.sh status` shows as the producer's flow). Fed the running totals at every health write;
    the window runs from the newest sample at least `span` old (or the first sample) to now, so it spans
    `span` seconds plus at most one health interval, and says how long it is."""

    def __init__(self, span: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.span, self._clock = span, clock
        self._samples: deque[tuple[float, int, int]] = deque()

    def update(self, received: int, produced: int) -> dict[str, float | int]:
        now = self._clock()
        self._samples.append((now, received, produced))
        while len(self._samples) > 1 and now - self._samples[1][0] >= self.span:
            self._samples.popleft()
        since, received_then, produced_then = self._samples[0]
        return {"received": received - received_then, "produced": produced - produced_then,
                "seconds": round(now - since, 1)}
