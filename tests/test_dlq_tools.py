"""scripts/dlq.sh on the real stack: `show` counts dead letters by reason with samples; `redrive` sends the
retryable ones to TICKS_TOPIC again once the cause is fixed, so they land, skips what would fail again
(contract violations, unless --force), what came from another topic and what it re-drove before, and
records a re-drive only once Kafka acknowledged it: a broker stopped mid-way leaves nothing recorded
that was not delivered, and the rerun delivers the rest.

Besides the stack's real dead-letter topic, some tests forge dead letters (as Connect writes them: the
original bytes plus the __connect.errors.* headers) into a dead-letter topic of their own
(TICKS_DLQ_TOPIC overridden), so they can delete and recreate it or fill it fast."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.serialization import MessageField, SerializationContext

import control.dlq as dlq_module
from control.dlq import REDRIVEN_FROM, ensure_ledger, ledger_topic, read_all, topic_id
from control.kafka_setup import ensure_kafka
from core.settings import PROJECT_ROOT, Settings
from producer.schema_registration import value_serializer
from tests.conftest import StackHandle
from tests.support import (
    TICK_SCHEMA,
    TickProducer,
    consume,
    count_rows,
    dead_letters,
    end_offsets,
    headers,
    new_symbol,
    now_ms,
    poll_until,
    tick,
    wait_until,
    writer_registry,
)

pytestmark = pytest.mark.stack


def dlq(stack: StackHandle, *args: str, expect: int = 0, dlq_topic: str | None = None) -> str:
    env = stack.env() | ({"TICKS_DLQ_TOPIC": dlq_topic} if dlq_topic else {})
    result = subprocess.run(["bash", "scripts/dlq.sh", *args], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == expect, result.stdout + result.stderr
    return result.stdout


def counts(show_output: str) -> dict[str, int]:
    return {reason: int(n) for n, reason in re.findall(r"(?m)^\s+(\d+)\s{2}(\S+)$", show_output)}


def redrove(out: str) -> int:
    found = re.search(r"(?m)^(?:re-drove|would re-drive) (\d+) dead letter", out)
    assert found, out
    return int(found.group(1))


def skipped(out: str) -> dict[str, int]:
    return {why: int(n) for n, why in re.findall(r"(?m)^skipped (\d+): (.*)$", out)}


def outcomes(out: str) -> dict[str, int]:
    return {what.split(" (")[0]: int(n) for n, what in re.findall(r"(?m)^outcome (\d+): (.*)$", out)}


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
    out = dlq(stack, "show", "--symbol", dead["symbol"])
    assert counts(out) == {"bad_price": 2, "future_time": 1}
    assert "3 dead letter(s)" in out


def test_show_gives_samples_with_origin_and_message(stack: StackHandle, dead: dict) -> None:
    out = dlq(stack, "show", "--symbol", dead["symbol"], "--samples", "1")
    topic = stack.settings["TICKS_TOPIC"]
    assert re.search(rf"key='{dead['symbol']}' from {re.escape(topic)}\[\d\]@\d+ at .*: tick contract violated: "
                     r"bad_price: price -?[0-9.]+ is not within 1.0E-9 .. 1.0E9", out), out


def test_a_dry_run_counts_and_sends_nothing(stack: StackHandle, dead: dict) -> None:
    ledger = ensure_ledger(stack.settings)
    before = end_offsets(stack, stack.settings["TICKS_TOPIC"]), end_offsets(stack, ledger)
    out = dlq(stack, "redrive", "--all", "--symbol", dead["symbol"], "--dry-run")
    assert redrove(out) == 1 and "would re-drive 1 dead letter(s)" in out
    assert skipped(out) == {"not retryable (contract violation bad_price; --force re-drives it)": 2}
    assert (end_offsets(stack, stack.settings["TICKS_TOPIC"]), end_offsets(stack, ledger)) == before


def test_redrive_all_lands_the_retryable_and_skips_contract_violations(stack: StackHandle, dead: dict) -> None:
    # The cause: the tick was more than TICK_MAX_FUTURE_SECONDS ahead. A few seconds later it no longer is.
    margin_ms = int(stack.settings["TICK_MAX_FUTURE_SECONDS"]) * 1000
    time.sleep(max(0.0, (dead["future"]["event_time"] - margin_ms - now_ms()) / 1000) + 2)
    out = dlq(stack, "redrive", "--all", "--symbol", dead["symbol"])
    assert redrove(out) == 1 and re.search(r"(?m)^\s+1\s+future_time$", out), out
    assert outcomes(out) == {"re-driven": 1}
    assert skipped(out) == {"not retryable (contract violation bad_price; --force re-drives it)": 2}
    assert poll_until(lambda: count_rows(stack, [dead["symbol"]]), lambda n: n >= 1, timeout=60) == 1


def test_redrive_twice_sends_nothing_the_second_time(stack: StackHandle, dead: dict) -> None:
    topic = stack.settings["TICKS_TOPIC"]
    before = end_offsets(stack, topic)
    again = dlq(stack, "redrive", "--symbol", dead["symbol"], "--reason", "future_time")
    assert redrove(again) == 0 and skipped(again) == {"already re-driven": 1}
    assert end_offsets(stack, topic) == before  # nothing was produced to the topic
    assert count_rows(stack, [dead["symbol"]]) == 1


def test_forced_contract_violations_fail_again_and_are_not_redriven_in_a_loop(stack: StackHandle,
                                                                               dead: dict) -> None:
    first = dlq(stack, "redrive", "--symbol", dead["symbol"], "--reason", "bad_price", "--force")
    assert redrove(first) == 2
    assert len(dead_letters(stack, dead["symbol"].encode(), 5)) == 5  # the two came back, still bad
    second = dlq(stack, "redrive", "--symbol", dead["symbol"], "--reason", "bad_price", "--force")
    assert redrove(second) == 0
    assert skipped(second) == {"already re-driven": 2, "failed again after a re-drive": 2}
    third = dlq(stack, "redrive", "--symbol", dead["symbol"], "--reason", "bad_price", "--force",
                "--include-failed-redrives")
    assert redrove(third) == 2 and skipped(third) == {"already re-driven": 2}
    assert len(dead_letters(stack, dead["symbol"].encode(), 7)) == 7  # and came back once more
    assert count_rows(stack, [dead["symbol"]]) == 1


def test_redrive_needs_a_reason_or_all(stack: StackHandle) -> None:
    result = subprocess.run(["bash", "scripts/dlq.sh", "redrive"], cwd=PROJECT_ROOT, env=stack.env(),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "--reason" in result.stderr


# -- forged dead letters in a dead-letter topic of the test's own ----------------------------------------------

CONNECT_EXCEPTION = b"org.apache.kafka.connect.errors.ConnectException"


class Forger:
    """Writes dead letters as Connect's error handler does: the original key and value (a valid tick), the
    __connect.errors.* headers; the failure by default one outside the record (the sink's write)."""

    def __init__(self, stack: StackHandle, topic: str) -> None:
        self.stack, self.topic = stack, topic
        self.serialize = value_serializer(writer_registry(stack), TICK_SCHEMA)
        # Forged as the admin: only Connect's principal may write the real dead-letter topic.
        self.producer = Producer({**stack.settings.kafka_config("admin"), "enable.idempotence": True})

    def create(self) -> None:
        """The topic, its ledger and the `dlq` principal's ACLs on both, as setup makes them for the real one."""
        ensure_kafka(settings_with_dlq(self.stack, self.topic))

    def recreate(self) -> None:
        admin = AdminClient(self.stack.settings.kafka_config())
        admin.delete_topics([self.topic])[self.topic].result(30)
        wait_until(lambda: self.topic not in admin.list_topics(timeout=10).topics, 60, f"{self.topic} deleted")
        deadline = time.monotonic() + 60
        while True:  # the broker refuses the name for a moment after the deletion
            try:
                self.create()
                return
            except Exception:  # noqa: BLE001
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def send(self, symbol: str, n: int, origin: str | None = "default") -> None:
        ticks_topic = self.stack.settings["TICKS_TOPIC"]
        for i in range(n):
            value = tick(symbol, i)
            data = self.serialize(value, SerializationContext(ticks_topic, MessageField.VALUE))
            error_headers = [("__connect.errors.stage", b"TASK_PUT"),
                             ("__connect.errors.exception.class.name", CONNECT_EXCEPTION),
                             ("__connect.errors.exception.message", b"database unavailable"),
                             ("__connect.errors.partition", b"0"), ("__connect.errors.offset", str(i).encode())]
            if origin is not None:
                origin_topic = ticks_topic if origin == "default" else origin
                error_headers.append(("__connect.errors.topic", origin_topic.encode()))
            self.producer.produce(self.topic, key=symbol.encode(), value=data, headers=error_headers)
        assert self.producer.flush(60) == 0


@pytest.fixture
def own_dlq(stack: StackHandle) -> Forger:
    forger = Forger(stack, f"test.dlq.{uuid.uuid4().hex[:8]}")
    forger.create()
    return forger


def settings_with_dlq(stack: StackHandle, topic: str) -> Settings:
    return dataclasses.replace(stack.settings, env={**stack.settings.env, "TICKS_DLQ_TOPIC": topic})


def test_only_dead_letters_from_the_ticks_topic_are_redriven(stack: StackHandle, own_dlq: Forger) -> None:
    symbol = new_symbol("ORIG")
    own_dlq.send(symbol, 2)
    own_dlq.send(new_symbol("ORIGX"), 3, origin="some.other.topic")
    own_dlq.send(new_symbol("ORIGN"), 1, origin=None)
    out = dlq(stack, "redrive", "--all", dlq_topic=own_dlq.topic)
    assert redrove(out) == 2 and outcomes(out) == {"re-driven": 2}
    ticks = stack.settings["TICKS_TOPIC"]
    assert skipped(out) == {f"origin topic some.other.topic is not {ticks}": 3,
                            f"origin topic (none) is not {ticks}": 1}
    assert poll_until(lambda: count_rows(stack, [symbol]), lambda n: n >= 2, timeout=60) == 2


def test_a_recreated_dead_letter_topic_is_a_new_one(stack: StackHandle, own_dlq: Forger) -> None:
    """Same name, same offsets 0 and 1, other records: the ledger knows the old topic's id, not this one's."""
    first, second = new_symbol("OLD"), new_symbol("NEW")
    own_dlq.send(first, 2)
    old_id = topic_id(stack.settings, own_dlq.topic)
    assert redrove(dlq(stack, "redrive", "--all", dlq_topic=own_dlq.topic)) == 2
    own_dlq.recreate()
    own_dlq.send(second, 2)
    assert topic_id(stack.settings, own_dlq.topic) != old_id
    out = dlq(stack, "redrive", "--all", dlq_topic=own_dlq.topic)
    assert redrove(out) == 2 and skipped(out) == {}, out
    assert poll_until(lambda: count_rows(stack, [first, second]), lambda n: n >= 4, timeout=60) == 4


def redriven_records(stack: StackHandle, dlq_topic: str, expected: int) -> Counter[str]:
    """How often each dead letter of `dlq_topic` (its ledger key) was produced to TICKS_TOPIC."""
    found = consume(stack, stack.settings["TICKS_TOPIC"],
                    lambda m: headers(m).get(REDRIVEN_FROM, "").startswith(f"{dlq_topic}/"), expected, timeout=60)
    return Counter(headers(m)[REDRIVEN_FROM].split("/", 1)[1] for m in found)


def ledger_keys(settings: Settings) -> set[str]:
    return {(entry.key or b"").decode() for entry in read_all(settings, ledger_topic(settings))}


def test_a_broker_stopped_mid_redrive_leaves_only_delivered_records_in_the_ledger(
        stack: StackHandle, own_dlq: Forger, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """Kafka stops after 200 of 300 records were handed to the producer: what was not acknowledged (within
    --timeout 5 s) is reported and not recorded; the rerun, with Kafka back, sends exactly what is missing."""
    total, symbol, ticks = 300, new_symbol("OUT"), stack.settings["TICKS_TOPIC"]
    own_dlq.send(symbol, total)
    settings = settings_with_dlq(stack, own_dlq.topic)

    class StoppingProducer(Producer):
        produced = 0

        def produce(self, topic: str, *args: object, **kwargs: object) -> None:
            super().produce(topic, *args, **kwargs)
            if topic == ticks:
                StoppingProducer.produced += 1
                if StoppingProducer.produced == 100:
                    self.flush(30)  # the first hundred delivered: their ledger entries go out next
                elif StoppingProducer.produced == 200:
                    stack.stop_kafka()

    monkeypatch.setattr(dlq_module, "Producer", StoppingProducer)
    try:
        assert dlq_module.redrive(settings, None, None, dry_run=False, include_failed_redrives=False,
                                  timeout=5) == 1
        first = capsys.readouterr().out
    finally:
        stack.start_kafka()
    monkeypatch.undo()
    print(first, file=sys.stderr)  # shown on failure; stdout is what the second run prints
    done_first = outcomes(first)
    assert sum(done_first.values()) == total and done_first.get("re-driven", 0) >= 100
    assert done_first.get("failed to deliver", 0) >= 100  # everything after the stop
    recorded_first = ledger_keys(settings)
    assert len(recorded_first) == done_first["re-driven"] == redrove(first)
    on_topic = redriven_records(stack, own_dlq.topic, len(recorded_first))
    assert recorded_first <= set(on_topic)  # nothing recorded that was not delivered

    assert dlq_module.redrive(settings, None, None, dry_run=False, include_failed_redrives=False) == 0
    second = capsys.readouterr().out
    print(second, file=sys.stderr)
    assert redrove(second) == total - len(recorded_first)
    assert skipped(second) == {"already re-driven": len(recorded_first)}
    assert len(ledger_keys(settings)) == total
    on_topic = redriven_records(stack, own_dlq.topic, total)
    assert len(on_topic) == total
    assert all(on_topic[key] == 1 for key in recorded_first)  # the rerun did not send those again
    # sent twice at most what the first run could not confirm (acknowledgement lost with the broker)
    assert sum(on_topic.values()) - total <= total - len(recorded_first)
    wait_until(lambda: count_rows(stack, [symbol]) >= total, 180, "every re-driven tick landed")
    assert count_rows(stack, [symbol]) == total  # once each, duplicates included
