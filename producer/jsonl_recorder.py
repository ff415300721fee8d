"""JSONL recorder (`--source record`): validated ticks appended to a JSONL file that `--source replay` reads back."""

from __future__ import annotations

import json
from pathlib import Path

from producer.stats import Stats
from producer.tick import Tick


class JsonlRecorder:
    fatal = None

    def __init__(self, path: Path, stats: Stats) -> None:
        self.path, self.stats = path, stats
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")

    def send(self, tick: Tick) -> None:
        self._fh.write(json.dumps(tick.to_json_dict()) + "\n")
        self.stats.produced += 1
        self.stats.delivered += 1

    def poll(self, timeout: float = 0) -> None:
        self._fh.flush()

    def in_flight(self) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        self._fh.flush()
        return 0

    def close(self) -> None:
        self._fh.close()
