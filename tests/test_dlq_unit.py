"""control/dlq.py without a stack: which dead letters `redrive` calls retryable (the rest need --force)."""

from __future__ import annotations

import pytest

from control.dlq import DeadLetter, retryable


def letter(value: bytes | None = b"\0\0\0\0\1avro", **headers: str) -> DeadLetter:
    return DeadLetter(0, 0, b"BTC-USD", value, [(f"__connect.errors.{k}", v.encode()) for k, v in headers.items()], 0)


def contract(reason: str) -> DeadLetter:
    return letter(**{"stage": "TRANSFORMATION", "exception.message": f"tick contract violated: {reason}: detail"})


@pytest.mark.parametrize("reason", ["bad_price", "bad_volume", "bad_symbol", "implausible_time", "unstorable_value",
                                    "malformed", "a_reason_added_later"])
def test_contract_violations_are_not_retryable(reason: str) -> None:
    ok, why = retryable(contract(reason))
    assert not ok and why == f"contract violation {reason}"


def test_a_tick_too_far_ahead_is_retryable_it_is_not_any_more_later() -> None:
    assert retryable(contract("future_time")) == (True, "")


def test_a_converter_failure_is_retryable_only_for_framed_avro() -> None:
    stage = {"stage": "VALUE_CONVERTER", "exception.class.name": "org.apache.kafka.connect.errors.DataException"}
    assert retryable(letter(**stage)) == (True, "")  # its schema id may exist now
    for value in (None, b"", b"{\"json\": 1}", b"\0\0\0"):
        ok, why = retryable(letter(value, **stage))
        assert not ok and "without Avro framing" in why


def test_a_failure_outside_the_record_is_retryable() -> None:
    assert retryable(letter(stage="TASK_PUT", **{"exception.class.name": "x.ConnectException"})) == (True, "")
