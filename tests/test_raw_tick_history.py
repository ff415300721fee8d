"""Raw ticks kept for months (issue #18) on the real stack: crypto_prices is partitioned by UTC day, the
partitions are made ahead of time, retention drops whole days while the sink writes, a tick of a dropped day
is set aside instead of failing the sink, candles outlive the raw ticks they were made of, and Power BI reads
the raw ticks and nothing more.

The stack runs with RAW_TICKS_RETENTION_DAYS=0 (keep for ever). Retention is exercised by calling
raw_ticks_maintenance_step() with an explicit p_now and p_keep_days, as the supervisor's maintenance thread
calls it, on days of 2012 that no other test writes. Such a call drops every day before its cutoff, other
tests' days too (tests/test_contract_definition.py lands 2009 and 2010 ticks as the sink): the `ledger_restored`
fixture takes the days a test dropped off the dropped-days ledger again afterwards, so that a later test's
tick of such a day lands instead of being set aside.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from control.connector import connector_status, load_connector, wait_running
from tests.conftest import StackHandle
from tests.support import (
    TickProducer,
    count_rows,
    new_symbol,
    poll_until,
    query,
    supervisor_restarts,
    tick,
    wait_for_rows,
)
from tests.test_candles import RESOLUTIONS, assert_candles_equal, candles, expected_candles, view_name

pytestmark = pytest.mark.stack

CONNECTOR = load_connector()["name"]
DAY_MS = 86_400_000


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def epoch_ms(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def partition_name(day: date) -> str:
    return f"crypto_prices_p{day:%Y%m%d}"


def utc_today(conn: psycopg.Connection) -> date:
    """The database's UTC day (its clock decides which partitions `premake` makes)."""
    return conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()[0]


def partitions(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    """crypto_prices's partitions: name -> (bound as PostgreSQL states it in UTC, owner)."""
    conn.execute("SET TimeZone = 'UTC'")
    return {name: (bound, owner) for name, bound, owner in conn.execute("""
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), pg_get_userbyid(c.relowner)
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'crypto_prices'::regclass""").fetchall()}


def day_bound(day: date) -> str:
    return f"FOR VALUES FROM ('{day} 00:00:00+00') TO ('{day + timedelta(days=1)} 00:00:00+00')"


def dropped_days(conn: psycopg.Connection) -> set[date]:
    return {day for (day,) in conn.execute("SELECT day FROM crypto_prices_dropped_days").fetchall()}


def untouched_days(conn: psycopg.Connection, first: date, span: int, stride: int = 16) -> date:
    """The first day, from `first` on in steps of `stride`, of `span` days that have no partition and were never
    dropped: a rerun on a running stack (CRYPTOPIPE_TEST_STACK=running) starts from the state a fresh one has,
    its ticks landing in the default partition."""
    for k in range(40):
        start = first + timedelta(days=k * stride)
        lo, hi = midnight(start), midnight(start + timedelta(days=span))
        taken = conn.execute("SELECT EXISTS (SELECT FROM raw_tick_partitions WHERE from_time < %s AND to_time > %s)"
                             " OR EXISTS (SELECT FROM crypto_prices_dropped_days WHERE day >= %s AND day < %s)",
                             (hi, lo, start, start + timedelta(days=span))).fetchone()[0]
        if not taken:
            return start
    raise AssertionError(f"no {span} untouched days from {first} on")


def maintainer_dsn(stack: StackHandle) -> str:
    s = stack.settings
    return s.pg_dsn(user=s["TICK_MAINTAINER_DB_USER"], password=s["TICK_MAINTAINER_DB_PASSWORD"])


def run_maintenance(stack: StackHandle, keep_days: int | None, now: datetime, premake_days: int = 3,
                    between_steps: object = None, timeout: float = 180, quiet: timedelta = timedelta(0)) -> list[str]:
    """raw_ticks_maintenance_step() until it returns NULL, each call its own transaction, as the supervisor's
    maintenance thread runs it (its role, tick_maintainer); a lock timeout (55P03: the sink or the supervisor's
    own run holds the lock) is retried, as the thread retries it. `between_steps` is called after each step.
    `quiet`: how long a day of the default partition must have had no new tick before it is moved or expired
    (the supervisor's thread uses the function's default, a minute). Returns what every step did."""
    done: list[str] = []
    deadline = time.monotonic() + timeout
    with psycopg.connect(maintainer_dsn(stack), autocommit=True, connect_timeout=10) as conn:
        while True:
            assert time.monotonic() < deadline, f"maintenance did not finish within {timeout:.0f}s: {done}"
            try:
                (result,) = conn.execute("SELECT raw_ticks_maintenance_step(%s, %s, %s, %s)",
                                         (keep_days, premake_days, now, quiet)).fetchone()
            except psycopg.errors.LockNotAvailable:
                time.sleep(0.2)
                continue
            if result is None:
                return done
            done.append(result)
            if callable(between_steps):
                between_steps()


def rejected_ticks(stack: StackHandle, symbol: str) -> list[tuple]:
    return query(stack, "SELECT reason, (tick->>'event_time')::timestamptz, (tick->>'price')::float8, __connect_topic"
                        " FROM crypto_prices_rejected WHERE tick->>'symbol' = %s ORDER BY rejected_at", symbol)


def tasks_running(stack: StackHandle) -> bool:
    status = connector_status(stack.connect_api, CONNECTOR) or {}
    states = [status.get("connector", {}).get("state"), *(t["state"] for t in status.get("tasks", []))]
    return bool(status.get("tasks")) and set(states) == {"RUNNING"}


@pytest.fixture
def ledger_restored(admin: psycopg.Connection) -> Iterator[None]:
    """Days a test's retention run dropped are taken off the dropped-days ledger afterwards (see the module's
    docstring): later tests may land ticks of those days again."""
    before = dropped_days(admin)
    yield
    admin.execute("DELETE FROM crypto_prices_dropped_days WHERE NOT day = ANY(%s)", (sorted(before),))


# -- partitions ---------------------------------------------------------------------------------------

def test_partitions_for_today_and_the_premake_days_exist_before_any_tick_of_those_days(
        stack: StackHandle, admin: psycopg.Connection) -> None:
    """`up` leaves one partition per UTC day from today to today + RAW_TICKS_PREMAKE_DAYS, each exactly
    [D 00:00 UTC, D+1 00:00 UTC), owned by the owner role; the future ones are empty: they were made ahead of
    time, not by a tick landing. (Polled for two maintenance intervals: right after a UTC midnight the
    supervisor's next run makes the new last day.)"""
    premake = int(stack.settings["RAW_TICKS_PREMAKE_DAYS"])
    owner = stack.settings["DB_OWNER_ROLE"]

    def expected() -> dict[str, tuple[str, str]]:
        today = utc_today(admin)
        return {partition_name(today + timedelta(days=d)): (day_bound(today + timedelta(days=d)), owner)
                for d in range(premake + 1)}

    interval = float(stack.settings.get("TICK_MAINTENANCE_INTERVAL") or 10)
    found = poll_until(lambda: (expected(), partitions(admin)),
                       lambda pair: pair[0].items() <= pair[1].items(), timeout=2 * interval + 5)
    wanted, existing = found
    assert {name: existing.get(name) for name in wanted} == wanted
    assert existing.get("crypto_prices_default", ("",))[0] == "DEFAULT"
    today = utc_today(admin)
    future = [partition_name(today + timedelta(days=d)) for d in range(1, premake + 1)]
    counts = {name: admin.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in future}
    assert counts == dict.fromkeys(future, 0)


def test_a_tick_of_tomorrow_lands_in_tomorrows_partition_with_its_candle(stack: StackHandle,
                                                                          admin: psycopg.Connection) -> None:
    """Written with the sink's role and the sink's upsert, not through Kafka: the tick contract's future bound
    (TICK_MAX_FUTURE_SECONDS, 300 s) dead-letters a tick of tomorrow at Connect unless it is produced within 5
    minutes of midnight, so the sink can only ever write one then; the database itself has no future bound, and
    what is tested here is where PostgreSQL routes the row the sink's statement writes."""
    symbol = new_symbol("TMRW")
    tomorrow = utc_today(admin) + timedelta(days=1)
    at = midnight(tomorrow) + timedelta(hours=12, milliseconds=123)
    s = stack.settings
    sink_dsn = s.pg_dsn(user=s["CONNECT_DB_USER"], password=s["CONNECT_DB_PASSWORD"])
    try:
        with psycopg.connect(sink_dsn, autocommit=True) as sink:
            sink.execute("INSERT INTO crypto_prices (symbol, event_time, price, volume, feed, __connect_topic,"
                         " __connect_partition, __connect_offset) VALUES (%s, %s, 42.5, 1.5, 'STREAM', 'tests', 0, 0)"
                         " ON CONFLICT (symbol, event_time, price) DO UPDATE SET volume = EXCLUDED.volume",
                         (symbol, at))
        landed = admin.execute("SELECT tableoid::regclass::text, event_time, price FROM crypto_prices"
                               " WHERE symbol = %s", (symbol,)).fetchall()
        assert landed == [(partition_name(tomorrow), at, 42.5)]
        candle = admin.execute("SELECT bucket, open, close, volume, tick_count FROM view_crypto_candles_1d"
                               " WHERE symbol = %s", (symbol,)).fetchall()
        assert candle == [(midnight(tomorrow), 42.5, 42.5, 1.5, 1)]
    finally:
        admin.execute("DELETE FROM crypto_prices WHERE symbol = %s", (symbol,))  # no tick from the future stays


def test_a_tick_of_a_day_without_a_partition_lands_in_the_default_partition_with_its_candle(
        stack: StackHandle, admin: psycopg.Connection) -> None:
    """A backfill, an old recording replayed: its day has no partition yet. The sink's statement lands it at once,
    in the default partition, and makes its candle (the maintenance moves it into a partition of its day later)."""
    symbol = new_symbol("BACK")
    at = midnight(untouched_days(admin, date(2011, 6, 1), 1)) + timedelta(hours=9, seconds=7)
    s = stack.settings
    with psycopg.connect(s.pg_dsn(user=s["CONNECT_DB_USER"], password=s["CONNECT_DB_PASSWORD"]),
                         autocommit=True) as sink:
        landed = sink.execute("INSERT INTO crypto_prices (symbol, event_time, price, volume, feed, __connect_topic,"
                              " __connect_partition, __connect_offset) VALUES (%s, %s, 9.5, 3, 'REPLAY', 'tests', 0, 0)"
                              " ON CONFLICT (symbol, event_time, price) DO UPDATE SET volume = EXCLUDED.volume"
                              " RETURNING tableoid::regclass::text", (symbol, at)).fetchall()
    assert landed == [("crypto_prices_default",)]
    assert admin.execute("SELECT bucket, open, volume, tick_count FROM view_crypto_candles WHERE symbol = %s",
                         (symbol,)).fetchall() == [(at.replace(second=0), 9.5, 3.0, 1)]


def test_anyone_elses_contract_breaker_of_a_day_without_a_partition_is_refused_by_the_check(
        admin: psycopg.Connection) -> None:
    """Only the sink's contract breakers are set aside (tests/test_contract_definition.py); anyone else's meet the
    CHECK tick_contract whichever partition their day falls in, the default one included: the default
    partition's trigger sets aside ticks of dropped days, nothing else."""
    symbol = new_symbol("BADB")
    at = midnight(untouched_days(admin, date(2011, 6, 1), 1)) + timedelta(hours=9)
    try:
        with pytest.raises(psycopg.errors.CheckViolation, match="tick_contract"):
            admin.execute("INSERT INTO crypto_prices (symbol, event_time, price, feed) VALUES (%s, %s, 0, 'STREAM')",
                          (symbol, at))
    finally:
        set_aside = admin.execute("DELETE FROM crypto_prices_rejected WHERE tick->>'symbol' = %s RETURNING reason",
                                  (symbol,)).fetchall()
    assert set_aside == []


# -- retention ----------------------------------------------------------------------------------------

def test_a_tick_of_a_dropped_day_is_set_aside_and_the_sink_keeps_going(
        stack: StackHandle, admin: psycopg.Connection, ledger_restored: None) -> None:
    """Ticks of 2012-02-01 land; retention (p_now 2012-02-10, 5 days kept) drops the day; another tick of that
    day, through Kafka and the sink, is set aside in crypto_prices_rejected with the reason raw_ticks_dropped
    and its Kafka coordinates; the tick after it (a kept day, same key: same Kafka partition, after it) lands;
    the supervisor restarted no task meanwhile and every task is RUNNING."""
    wait_running(stack.connect_api, CONNECTOR)
    symbol = new_symbol("GONE")
    dropped, kept = date(2012, 2, 1), date(2012, 2, 7)
    producer = TickProducer(stack)
    producer.send([tick(symbol, n, event_time=epoch_ms(midnight(dropped)) + n * 1000) for n in range(3)])
    assert wait_for_rows(stack, [symbol], 3, timeout=60) == 3

    steps = run_maintenance(stack, keep_days=5, now=datetime(2012, 2, 10, tzinfo=UTC))
    assert any(str(dropped) in s or partition_name(dropped) in s for s in steps), steps
    assert dropped in dropped_days(admin)
    assert count_rows(stack, [symbol]) == 0

    restarts_before = supervisor_restarts(stack)
    late = tick(symbol, 10, event_time=epoch_ms(midnight(dropped)) + 10_000)
    producer.send([late])
    rejected = poll_until(lambda: rejected_ticks(stack, symbol), bool, timeout=60)
    assert rejected == [("raw_ticks_dropped", datetime.fromtimestamp(late["event_time"] / 1000, UTC), late["price"],
                         stack.settings["TICKS_TOPIC"])]

    after = tick(symbol, 11, event_time=epoch_ms(midnight(kept)) + 11_000)
    producer.send([after])
    assert wait_for_rows(stack, [symbol], 1, timeout=60) == 1
    assert query(stack, "SELECT event_time, price FROM crypto_prices WHERE symbol = %s", symbol) == [
        (datetime.fromtimestamp(after["event_time"] / 1000, UTC), after["price"])]
    assert rejected_ticks(stack, symbol) == rejected  # set aside once
    assert supervisor_restarts(stack) == restarts_before
    assert tasks_running(stack)


def test_a_day_still_receiving_ticks_keeps_them_until_it_has_been_quiet(
        stack: StackHandle, admin: psycopg.Connection, ledger_restored: None) -> None:
    """A replay of an old recording (days older than the retention, no partition) keeps its raw ticks while it
    runs: the maintenance leaves a day of the default partition alone until no tick has landed on it for
    p_quiet (a minute by default, what the supervisor uses); then it expires it (candles stay)."""
    symbol = new_symbol("QUIET")
    day = untouched_days(admin, date(2011, 8, 1), 1)
    admin.execute("INSERT INTO crypto_prices (symbol, event_time, price, feed) VALUES (%s, %s, 1.5, 'REPLAY')",
                  (symbol, midnight(day) + timedelta(hours=3)))
    now = midnight(day + timedelta(days=10))
    with psycopg.connect(maintainer_dsn(stack), autocommit=True) as conn:
        fresh = conn.execute("SELECT raw_ticks_maintenance_step(5, 0, %s)", (now,)).fetchone()[0]
    assert fresh is None or str(day) not in fresh, fresh
    assert count_rows(stack, [symbol]) == 1 and day not in dropped_days(admin)
    steps = run_maintenance(stack, keep_days=5, now=now, premake_days=0, quiet=timedelta(0))
    assert any(f"ticks of {day}" in s for s in steps), steps
    assert count_rows(stack, [symbol]) == 0 and day in dropped_days(admin)
    assert query(stack, "SELECT tick_count FROM view_crypto_candles_1d WHERE symbol = %s", symbol) == [(1,)]


RETENTION_SYMBOLS = 3
# Six days of ticks from FIRST_DAY; retention "now" 7 days after it keeping 4 days: drops the first three.
# On a fresh stack FIRST_DAY is 2012-03-01 (p_now 2012-03-08: drops 03-01 .. 03-03, keeps 03-04 .. 03-06).
FIRST_DAY, TICK_DAYS, DROPPED_DAYS, NOW_AFTER, KEEP_DAYS, PREMAKE_DAYS = date(2012, 3, 1), 6, 3, 7, 4, 3
# Days still receiving ticks stay in the default partition (neither moved nor expired) until quiet this long.
QUIET = timedelta(seconds=5)


class DayTicks:
    """Ticks of the test's own symbols, every symbol on every one of the given days, each (symbol, event time)
    unique (the n-th tick's time is n x 7919 ms into its day, modulo a day: no two alike below 86.4 million
    ticks), prices a random walk."""

    def __init__(self, symbols: list[str], seed: int) -> None:
        self.symbols = symbols
        self.rng = random.Random(seed)
        self.price = dict.fromkeys(symbols, 100.0)
        self.n = 0

    def make(self, days: list[date], count: int) -> list[dict]:
        made = []
        for _ in range(count):
            symbol, day = self.symbols[self.n % len(self.symbols)], days[self.n // len(self.symbols) % len(days)]
            self.price[symbol] *= 1 + self.rng.uniform(-0.003, 0.003)
            made.append(tick(symbol, self.n, price=self.price[symbol],
                             event_time=epoch_ms(midnight(day)) + (self.n * 7919) % DAY_MS,
                             volume=self.rng.choice([None, round(self.rng.uniform(0, 5), 3)]),
                             feed=self.rng.choice(["STREAM", "POLL", "JITTER", "REPLAY"])))
            self.n += 1
        return made


def as_oracle_rows(ticks: list[dict]) -> list[dict]:
    """Ticks as tests/test_candles.py's pandas oracle takes them (event times are unique per symbol: no ties)."""
    return [{"symbol": t["symbol"], "price": t["price"], "volume": t["volume"], "feed": t["feed"], "offset": 0,
             "event_time": datetime.fromtimestamp(t["event_time"] / 1000, UTC)} for t in ticks]


def assert_candles_of_every_interval_equal_pandas(conn: psycopg.Connection, symbols: list[str],
                                                  ticks: list[dict]) -> None:
    for resolution, rule in RESOLUTIONS.items():
        assert_candles_equal(candles(conn, view_name(resolution), symbols),
                             expected_candles(as_oracle_rows(ticks), rule))


def test_retention_under_load_loses_no_kept_tick_and_leaves_every_candle_as_it_was(
        stack: StackHandle, admin: psycopg.Connection, ledger_restored: None) -> None:
    """Ticks of 2012-03-01 .. 03-06 land through Kafka; then, while more ticks of 03-04 .. 03-06 keep flowing
    through the sink, retention runs step by step (p_now 2012-03-08, 4 days kept: drops 03-01 .. 03-03), waiting
    between its steps until the sink has landed more. Every produced tick of the kept days is in crypto_prices
    exactly once (none lost, none set aside), none of the dropped days is left, and the candles of every
    interval, of all six days, equal pandas' from the produced ticks, before the drop and after it. (Those
    days on a fresh stack; a rerun on a running one takes the next untouched days: `untouched_days`.)"""
    wait_running(stack.connect_api, CONNECTOR)
    symbols = [new_symbol(f"RET{i}") for i in range(RETENTION_SYMBOLS)]
    source = DayTicks(symbols, seed=18)
    first = untouched_days(admin, FIRST_DAY, NOW_AFTER + PREMAKE_DAYS + 1)
    old_days = [first + timedelta(days=d) for d in range(DROPPED_DAYS)]
    kept_days = [first + timedelta(days=d) for d in range(DROPPED_DAYS, TICK_DAYS)]
    retention_now = midnight(first + timedelta(days=NOW_AFTER))
    before = source.make(old_days, 540) + source.make(kept_days, 270)
    producer = TickProducer(stack)
    producer.send(before)
    assert wait_for_rows(stack, symbols, len(before), timeout=120) == len(before)
    assert_candles_of_every_interval_equal_pandas(admin, symbols, before)
    time.sleep(QUIET.total_seconds() + 1)  # the old days go quiet; the kept days keep receiving ticks below

    during: list[dict] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def keep_producing() -> None:
        try:
            streaming = TickProducer(stack)
            while not stop.is_set():
                batch = source.make(kept_days, 30)
                streaming.send(batch)
                during.extend(batch)
                time.sleep(0.1)
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    def wait_for_the_sink_to_land_more() -> None:
        landed = count_rows(stack, symbols)
        poll_until(lambda: count_rows(stack, symbols), lambda n: n > landed, timeout=30, interval=0.1)

    thread = threading.Thread(target=keep_producing, name="ticks-under-retention", daemon=True)
    thread.start()
    try:
        wait_for_the_sink_to_land_more()
        started = admin.execute("SELECT clock_timestamp()").fetchone()[0]
        steps = run_maintenance(stack, keep_days=KEEP_DAYS, now=retention_now, premake_days=PREMAKE_DAYS,
                                between_steps=wait_for_the_sink_to_land_more, quiet=QUIET)
        finished = admin.execute("SELECT clock_timestamp()").fetchone()[0]
    finally:
        stop.set()
        thread.join(60)
    assert not failures, failures
    assert not thread.is_alive()

    kept = [t for t in before + during if t["event_time"] >= epoch_ms(midnight(kept_days[0]))]
    wait_for_rows(stack, symbols, len(kept), timeout=120)
    time.sleep(2)  # anything beyond the expected count (a duplicate) lands too
    rows = admin.execute("SELECT symbol, event_time, price, count(*) OVER (PARTITION BY symbol, event_time, price)"
                         " FROM crypto_prices WHERE symbol = ANY(%s)", (symbols,)).fetchall()
    assert sorted((s, t, p) for s, t, p, _ in rows) == sorted(
        (t["symbol"], datetime.fromtimestamp(t["event_time"] / 1000, UTC), t["price"]) for t in kept)
    assert {n for *_, n in rows} == {1}
    assert admin.execute("SELECT count(*) FROM crypto_prices_rejected WHERE tick->>'symbol' = ANY(%s)",
                         (symbols,)).fetchone()[0] == 0

    assert set(old_days) <= dropped_days(admin), steps
    assert not set(kept_days) & dropped_days(admin), steps
    assert not {partition_name(d) for d in old_days} & partitions(admin).keys()
    under_load = admin.execute("SELECT count(*) FROM crypto_prices WHERE symbol = ANY(%s) AND landed_at"
                               " BETWEEN %s AND %s", (symbols, started, finished)).fetchone()[0]
    assert under_load > 0, "the sink landed nothing while retention ran"
    assert_candles_of_every_interval_equal_pandas(admin, symbols, before + during)


# -- Power BI ---------------------------------------------------------------------------------------------

def test_power_bi_reads_the_raw_ticks_from_the_table_and_the_ticks_view(stack: StackHandle,
                                                                        powerbi: psycopg.Connection) -> None:
    symbol = new_symbol("PBI")
    real = tick(symbol, 0, feed="STREAM", volume=2.5)
    synthetic = tick(symbol, 1, feed="JITTER", volume=None)
    TickProducer(stack).send([real, synthetic])
    assert wait_for_rows(stack, [symbol], 2, timeout=60) == 2

    def at(t: dict) -> datetime:
        return datetime.fromtimestamp(t["event_time"] / 1000, UTC)

    raw = powerbi.execute("SELECT symbol, event_time, price, volume, feed FROM crypto_prices WHERE symbol = %s"
                          " ORDER BY event_time", (symbol,)).fetchall()
    assert raw == [(symbol, at(t), t["price"], t["volume"], t["feed"]) for t in (real, synthetic)]
    view = powerbi.execute("SELECT symbol, event_time, event_time_utc, price, volume, feed, is_synthetic"
                           " FROM view_crypto_ticks WHERE symbol = %s ORDER BY event_time", (symbol,)).fetchall()
    assert view == [(symbol, at(t), at(t).replace(tzinfo=None), t["price"], t["volume"], t["feed"],
                     t["feed"] == "JITTER") for t in (real, synthetic)]


HIDDEN_FROM_POWER_BI = ["crypto_prices_rejected", "crypto_prices_quarantine", "crypto_prices_dropped_days",
                        "schema_migrations"]


@pytest.mark.parametrize("table", HIDDEN_FROM_POWER_BI)
def test_power_bi_cannot_read_the_set_aside_ticks_nor_the_bookkeeping(powerbi: psycopg.Connection,
                                                                      table: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        powerbi.execute(f"SELECT * FROM {table} LIMIT 1")


POWER_BI_WRITES = [  # (statement, the refusal: a privilege on that very object)
    ("INSERT INTO crypto_prices (symbol, event_time, price, feed) VALUES ('PBI-USD', now(), 1, 'STREAM')",
     "permission denied for table crypto_prices"),
    ("UPDATE crypto_prices SET price = price + 1", "permission denied for table crypto_prices"),
    ("DELETE FROM crypto_prices", "permission denied for table crypto_prices"),
    ("TRUNCATE crypto_prices", "permission denied for table crypto_prices"),
    ("DROP TABLE crypto_prices_default", "must be owner of table crypto_prices_default"),
    ("ALTER TABLE crypto_prices DETACH PARTITION crypto_prices_default", "must be owner of table crypto_prices"),
    ("INSERT INTO crypto_prices_rejected (reason, tick) VALUES ('x', '{}')",
     "permission denied for table crypto_prices_rejected"),
    ("DELETE FROM crypto_prices_dropped_days", "permission denied for table crypto_prices_dropped_days"),
    ("SELECT raw_ticks_maintenance_step(0, 3, now())", "permission denied for function raw_ticks_maintenance_step"),
]


@pytest.mark.parametrize(("statement", "refusal"), POWER_BI_WRITES,
                         ids=[statement.split(" (")[0][:60] for statement, _ in POWER_BI_WRITES])
def test_power_bi_cannot_change_the_raw_ticks_even_in_a_read_write_session(powerbi: psycopg.Connection,
                                                                          statement: str, refusal: str) -> None:
    """Refused by a privilege on the object itself, not only by its read-only default nor by something the
    statement would call later (rolled back whatever happens: a broken grant must not wreck the stack's ticks)."""
    powerbi.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match=re.escape(refusal) + r"\b"), \
            powerbi.transaction(force_rollback=True):
        powerbi.execute(statement)


def test_power_bi_sees_the_candle_views_and_the_raw_ticks_and_nothing_else(powerbi: psycopg.Connection) -> None:
    visible = {r[0] for r in powerbi.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()}
    candle_views = {view_name(r, v) for r in RESOLUTIONS for v in ("", "_real", "_filled")}
    assert visible == candle_views | {"crypto_prices", "view_crypto_ticks"}
