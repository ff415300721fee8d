"""bench/pipeline_bench.py's data-shape sweep, the parts that need no stack: the event-time windows its runs
write into (a run counts its own ticks by window, so a tick outside it would never be counted, and one inside
another run's window would be counted twice), the COPY rows, the worker setting the report shows, and the
ratios the targets are judged on."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from pipeline_report import sweep_rates  # noqa: E402
from pipeline_sweep import SPACINGS_MS, Timeline  # noqa: E402
from stack_driver import copy_rows, worker_property, write_replay  # noqa: E402

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]


def test_each_run_window_holds_all_its_ticks_and_no_other_runs(tmp_path):
    timeline = Timeline(1_764_547_200_123)
    windows = []
    for spacing in (*SPACINGS_MS, 1 / 3, 0.7):
        for ticks in (1, 2, 3, 1000, 29_999):
            lo, hi = timeline.take(ticks, spacing)
            times = [t["event_time"] for t in write_replay(tmp_path / "r.jsonl", SYMBOLS, ticks, lo, spacing)]
            assert lo <= min(times) and max(times) < hi, (spacing, ticks, lo, hi, min(times), max(times))
            windows.append((lo, hi))
    assert all(a_hi <= b_lo for (_, a_hi), (b_lo, _) in zip(windows, windows[1:], strict=False))


def test_copy_rows_put_tick_i_at_start_plus_i_spacings_round_robin_over_the_symbols():
    rows = [line.split("\t") for line in copy_rows(SYMBOLS, 7, 1_764_547_200_000, 100.0, "t").decode().splitlines()]
    assert [r[0] for r in rows] == [SYMBOLS[i % 3] for i in range(7)]
    instants = [datetime.fromisoformat(r[1]).timestamp() * 1000 for r in rows]
    assert instants == pytest.approx([1_764_547_200_000 + 100 * i for i in range(7)])
    assert len({(r[0], r[1], r[2]) for r in rows}) == 7  # distinct tick keys


def test_worker_property_reads_the_worker_file_and_refuses_a_missing_name(tmp_path):
    props = tmp_path / "worker.properties"
    props.write_text("# consumer.max.poll.records=1\nconsumer.max.poll.records = 2000\nother=x=y\n")
    assert worker_property("consumer.max.poll.records", props) == "2000"
    assert worker_property("other", props) == "x=y"
    with pytest.raises(KeyError, match="batch.size"):
        worker_property("batch.size", props)


def test_the_committed_worker_file_sets_the_sinks_max_poll_records():
    assert int(worker_property("consumer.max.poll.records")) > 0


def test_sweep_rates_are_total_ticks_over_total_seconds_per_kind():
    def run(path: str, candles: bool, ticks: int, seconds: float) -> dict:
        return {"path": path, "spacing_ms": 1.0, "candles": candles, "ticks": ticks, "seconds": seconds,
                "rate": ticks / seconds, "profile": {"statements": 10, "rows": ticks}}

    rows = sweep_rates({"runs": [run("sink", True, 100, 1.0), run("sink", False, 100, 2.0),
                                 run("sink", False, 100, 2.0), run("sink", True, 300, 1.5),
                                 run("COPY", True, 50, 1.0), run("COPY", False, 50, 0.5)]})
    sink, copy = rows
    # with candles: 400 ticks in 2.5 s, not the mean of the runs' 100 and 200 ticks/s
    assert (sink["path"], sink["with"], sink["without"], sink["ratio"]) == ("sink", 160.0, 50.0, 3.2)
    assert sink["with_profile"]["rows"] == 400 and sink["with_profile"]["statements"] == 20
    assert (copy["path"], copy["ratio"], copy["target"]) == ("COPY", 0.5, 0.75)
