"""Tick sources. Each runs in its own thread: `run(emit)` calls `emit(tick)` until exhausted or `stop()`."""

from __future__ import annotations

import threading
from collections.abc import Callable

from producer.tick import Tick

Emit = Callable[[Tick], None]


class Source:
    """Base: a stop event that `run` loops check and whose `wait` is the interruptible sleep."""

    name = "source"
    emit_batch = 1  # ticks handed to the pipeline together; >1 only where latency does not matter

    def __init__(self, stop_event: threading.Event | None = None) -> None:
        self.stop_event = stop_event or threading.Event()

    def run(self, emit: Emit) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def stop(self) -> None:
        self.stop_event.set()

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()
