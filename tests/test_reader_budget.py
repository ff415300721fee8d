"""Readers cannot exceed their budget, whatever a session SETs (README "Security", "Power BI").

- statement_timeout is user-settable: the reader watchdog (control/reader_watchdog.py, run by the
  supervisor) cancels a reader role's statement that has run longer than the role's own statement_timeout
  default, within that budget + READER_WATCHDOG_INTERVAL.
- temp_file_limit is superuser-only: the role default binds every session of the role.
- The chart reads as a role of its own, with its own connection limit and timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.conftest import StackHandle, connect_as

pytestmark = pytest.mark.stack

SHORT_BUDGET_SECONDS = 4


@pytest.fixture
def short_budget(stack: StackHandle, admin: psycopg.Connection) -> Iterator[float]:
    """The Power BI role's budget shortened for one test (the watchdog reads it from the role each poll),
    then set back to POWERBI_STATEMENT_TIMEOUT."""
    role = sql.Identifier(stack.settings["POWERBI_DB_USER"])
    admin.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(
        role, sql.Literal(f"{SHORT_BUDGET_SECONDS}s")))
    try:
        yield SHORT_BUDGET_SECONDS + float(stack.settings["READER_WATCHDOG_INTERVAL"])
    finally:
        admin.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(
            role, sql.Literal(stack.settings["POWERBI_STATEMENT_TIMEOUT"])))


def test_a_power_bi_session_that_turns_its_timeout_off_is_cancelled_within_the_bound(
        stack: StackHandle, short_budget: float) -> None:
    """The bound: the role's statement_timeout + READER_WATCHDOG_INTERVAL (+1 s for the cancel to land).
    Another role's long statement is left alone."""
    with connect_as(stack, "POWERBI_DB_USER", "POWERBI_DB_PASSWORD") as powerbi, \
            connect_as(stack, "CONNECT_DB_USER", "CONNECT_DB_PASSWORD") as writer:
        powerbi.execute("SET statement_timeout = 0")
        assert powerbi.execute("SHOW statement_timeout").fetchone() == ("0",)
        other: list[object] = []
        sleeper = threading.Thread(target=lambda: other.append(
            writer.execute("SELECT pg_sleep(%s)", (short_budget + 2,)).fetchone()))
        sleeper.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            powerbi.execute("SELECT pg_sleep(%s)", (short_budget + 10,))
        took = time.monotonic() - started
        sleeper.join(timeout=30)
    print(f"cancelled after {took:.1f}s (budget {SHORT_BUDGET_SECONDS}s, bound {short_budget:.1f}s)")
    assert SHORT_BUDGET_SECONDS - 0.5 <= took <= short_budget + 1
    assert other == [("",)], "the watchdog cancelled another role's statement"


def test_a_heavy_power_bi_query_without_a_timeout_is_cancelled_too(stack: StackHandle, short_budget: float) -> None:
    with connect_as(stack, "POWERBI_DB_USER", "POWERBI_DB_PASSWORD") as powerbi:
        powerbi.execute("SET statement_timeout = 0")
        # Without the watchdog this runs for hours: the test cancels it itself later than the bound, and fails.
        backstop = threading.Timer(short_budget + 10, powerbi.cancel)
        backstop.start()
        started = time.monotonic()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                powerbi.execute("SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b")
        finally:
            backstop.cancel()
        assert time.monotonic() - started <= short_budget + 1


def test_a_power_bi_session_cannot_lift_its_temp_file_limit(stack: StackHandle, powerbi: psycopg.Connection) -> None:
    assert powerbi.execute("SHOW temp_file_limit").fetchone()[0] == stack.settings["POWERBI_TEMP_FILE_LIMIT"]
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="temp_file_limit"):
        powerbi.execute("SET temp_file_limit = -1")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="temp_file_limit"):
        powerbi.execute("SELECT set_config('temp_file_limit', '-1', false)")


def test_a_power_bi_query_that_spills_more_than_the_limit_fails(powerbi: psycopg.Connection) -> None:
    """A sort of ~400 MB with work_mem at its smallest: it must spill, and the spill exceeds the limit."""
    powerbi.execute("SET work_mem = '64kB'")
    with pytest.raises(psycopg.errors.ConfigurationLimitExceeded, match="temp_file_limit"):
        powerbi.execute("SELECT max(pad) FROM (SELECT g, repeat('x', 1000) || g AS pad"
                        " FROM generate_series(1, 400000) g ORDER BY g DESC OFFSET 0) s")


def test_a_small_power_bi_spill_within_the_limit_still_works(powerbi: psycopg.Connection) -> None:
    powerbi.execute("SET work_mem = '64kB'")
    assert powerbi.execute("SELECT count(*) FROM (SELECT g FROM generate_series(1, 200000) g ORDER BY g DESC"
                           " OFFSET 0) s").fetchone() == (200000,)


def test_the_chart_reads_as_a_role_of_its_own_with_its_own_limits(
        stack: StackHandle, admin: psycopg.Connection) -> None:
    s = stack.settings
    chart_role, powerbi_role = s["CHART_DB_USER"], s["POWERBI_DB_USER"]
    assert chart_role != powerbi_role
    sessions = admin.execute("SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name = 'cryptopipe-chart'"
                             ).fetchall()
    assert sessions == [(chart_role,)]
    limit = admin.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", (chart_role,)).fetchone()[0]
    assert limit == int(s["CHART_CONNECTION_LIMIT"]) > 0
    with connect_as(stack, "CHART_DB_USER", "CHART_DB_PASSWORD") as chart:
        assert chart.execute("SHOW statement_timeout").fetchone()[0] == s["CHART_STATEMENT_TIMEOUT"]
        assert chart.execute("SHOW temp_file_limit").fetchone()[0] == s["CHART_TEMP_FILE_LIMIT"]
        assert chart.execute("SHOW transaction_read_only").fetchone() == ("on",)
        chart.execute("SELECT count(*) FROM view_crypto_candles_1h")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            chart.execute("SELECT count(*) FROM crypto_prices")


def test_the_watchdog_role_can_watch_and_cancel_but_read_no_data(stack: StackHandle, admin: psycopg.Connection) -> None:
    s = stack.settings
    role = s["READER_WATCHDOG_DB_USER"]
    member_of = {r for (r,) in admin.execute(
        "SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid"
        " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s", (role,))}
    assert member_of == {"pg_signal_backend", "pg_read_all_stats"}
    with connect_as(stack, "READER_WATCHDOG_DB_USER", "READER_WATCHDOG_DB_PASSWORD") as watchdog:
        for relation in ("view_crypto_candles", "crypto_prices", "candle_rollup"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                watchdog.execute(f"SELECT 1 FROM public.{relation} LIMIT 1")
        with pytest.raises((psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege)):
            watchdog.execute("CREATE TEMP TABLE t (x int)")
        assert watchdog.execute("SHOW transaction_read_only").fetchone() == ("on",)
