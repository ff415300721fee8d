"""stack/process.py's wait_ready, on real child processes: ready is the probe, however short-lived the process
(a replay at --speed 0 reports and finishes before the first look), and a process that dies unready fails fast."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from stack.process import ManagedProcess, StackError


def test_a_process_that_became_ready_and_finished_counts_as_ready(tmp_path: Path) -> None:
    marker = tmp_path / "health"
    process = ManagedProcess("quick", tmp_path)
    process.start([sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ok')"])
    while process.is_running():  # it has finished before wait_ready's first look
        time.sleep(0.05)
    assert process.wait_ready(marker.exists, timeout=10, what="its health file") < 10


def test_a_process_that_dies_unready_fails_at_once_with_its_log(tmp_path: Path) -> None:
    process = ManagedProcess("dying", tmp_path)
    process.start([sys.executable, "-c", "print('cannot start: no config'); raise SystemExit(3)"])
    started = time.monotonic()
    with pytest.raises(StackError, match="dying exited before it was ready") as failure:
        process.wait_ready(lambda: False, timeout=60, what="never")
    assert time.monotonic() - started < 10
    assert "cannot start: no config" in str(failure.value)
