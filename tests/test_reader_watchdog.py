"""The reader watchdog's pure parts: PostgreSQL durations (the roles' statement_timeout defaults)."""

from __future__ import annotations

import pytest

from control.reader_watchdog import duration_ms


@pytest.mark.parametrize(("value", "ms"), [("30s", 30_000), ("500", 500), ("1min", 60_000), ("250ms", 250),
                                           ("1.5 h", 5_400_000), ("0", 0), ("2d", 172_800_000)])
def test_postgres_durations_in_milliseconds(value: str, ms: float) -> None:
    assert duration_ms(value) == ms


@pytest.mark.parametrize("value", ["", "s", "30 seconds", "-5s"])
def test_a_duration_postgres_would_not_write_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL duration"):
        duration_ms(value)
