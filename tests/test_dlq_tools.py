"""scripts/dlq.sh on the real stack: `show` counts dead letters by reason with samples; `redrive` sends
them to their topic again once the cause is fixed, so they land; running it twice changes nothing."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from control.settings import PROJECT_ROOT
from tests.conftest import StackHandle
from tests.support import TickProducer, count_rows, dead_letters, end_offsets, new_symbol, now_ms, poll_until, tick

pytestmark = pytest.mark.stack


def dlq(stack: StackHandle, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", "scripts/dlq.sh", *args], cwd=PROJECT_ROOT, env=stack.env(),
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def counts(show_output: str) -> dict[str, int]:
    return {reason: int(n) for n, reason in re.findall(r"(?m)^\s+(\d+)\s{2}(\S+)$", show_output)}


@pytest.fixture(scope="module")
def dead(stack: StackHandle) -> dict:
    """Two ticks with a bad price and one 30 s beyond the future margin (it becomes valid 30 s later: far
    enough for Connect to see it while it is still too far ahead), one symbol."""
    symbol = new_symbol("DLQ")
    producer = TickProducer(stack)
    margin_ms = int(stack.settings["TICK_MAX_FUTURE_SECONDS"]) * 1000
    future = tick(symbol, 3, event_time=now_ms() + margin_ms + 30_000)
    producer.send([tick(symbol, 1, price=-1.0), tick(symbol, 2, price=0.0), future])
    assert len(dead_letters(stack, symbol.encode(), 3)) == 3
    return {"symbol": symbol, "future": future}


def test_show_counts_the_dead_letters_by_reason(stack: StackHandle, dead: dict) -> None:
    out = dlq(stack, "show", "--symbol", dead["symbol"]).stdout
    assert counts(out) == {"bad_price": 2, "future_time": 1}
    assert "3 dead letter(s)" in out


def test_show_gives_samples_with_origin_and_message(stack: StackHandle, dead: dict) -> None:
    out = dlq(stack, "show", "--symbol", dead["symbol"], "--samples", "1").stdout
    topic = stack.settings["TICKS_TOPIC"]
    assert re.search(rf"key='{dead['symbol']}' from {re.escape(topic)}\[\d\]@\d+ at .*: tick contract violated: "
                     r"bad_price: price -?[0-9.]+ is not finite and > 0", out), out


def test_redrive_lands_a_dead_letter_whose_cause_is_gone(stack: StackHandle, dead: dict) -> None:
    # The cause: the tick was more than TICK_MAX_FUTURE_SECONDS ahead. A few seconds later it no longer is.
    margin_ms = int(stack.settings["TICK_MAX_FUTURE_SECONDS"]) * 1000
    time.sleep(max(0.0, (dead["future"]["event_time"] - margin_ms - now_ms()) / 1000) + 2)
    out = dlq(stack, "redrive", "--symbol", dead["symbol"], "--reason", "future_time").stdout
    assert "re-drove 1 dead letter(s)" in out
    assert poll_until(lambda: count_rows(stack, [dead["symbol"]]), lambda n: n >= 1, timeout=60) == 1


def test_redrive_twice_sends_nothing_the_second_time(stack: StackHandle, dead: dict) -> None:
    topic = stack.settings["TICKS_TOPIC"]
    before = end_offsets(stack, topic)
    again = dlq(stack, "redrive", "--symbol", dead["symbol"], "--reason", "future_time").stdout
    assert "re-drove 0 dead letter(s)" in again and "skipped 1: already re-driven" in again
    assert end_offsets(stack, topic) == before  # nothing was produced to the topic
    assert count_rows(stack, [dead["symbol"]]) == 1


def test_a_redriven_record_that_fails_again_is_not_redriven_in_a_loop(stack: StackHandle, dead: dict) -> None:
    first = dlq(stack, "redrive", "--symbol", dead["symbol"], "--reason", "bad_price").stdout
    assert "re-drove 2 dead letter(s)" in first
    assert len(dead_letters(stack, dead["symbol"].encode(), 5)) == 5  # the two came back, still bad
    second = dlq(stack, "redrive", "--symbol", dead["symbol"], "--reason", "bad_price").stdout
    assert "re-drove 0 dead letter(s)" in second
    assert "skipped 2: already re-driven" in second and "skipped 2: failed again after a re-drive" in second
    assert count_rows(stack, [dead["symbol"]]) == 1


def test_redrive_needs_a_reason_or_all(stack: StackHandle) -> None:
    result = subprocess.run(["bash", "scripts/dlq.sh", "redrive"], cwd=PROJECT_ROOT, env=stack.env(),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "--reason" in result.stderr
