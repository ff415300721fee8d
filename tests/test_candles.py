"""Candle views against a real PostgreSQL with init.sql applied, checked against pandas.

Ticks are written straight into crypto_prices, the way the JDBC sink writes them (one row per Kafka
record, keyed by topic/partition/offset); each test uses its own symbols so tests do not interfere.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg
import pytest

from tests.conftest import StackHandle

pytestmark = pytest.mark.stack

RESOLUTIONS = {"1m": "1min", "5m": "5min", "15m": "15min", "1h": "1h", "1d": "1D"}
CANDLE_COLUMNS = ["symbol", "bucket", "open", "high", "low", "close", "volume", "tick_count", "synthetic_count"]
START = datetime(2025, 11, 24, 22, 50, tzinfo=UTC)  # crosses a UTC midnight within the test data


def view_name(resolution: str, variant: str = "") -> str:
    return "view_crypto_candles" + ("" if resolution == "1m" else f"_{resolution}") + variant


class TickWriter:
    """Writes ticks as the sink does: each tick is the next offset of one partition of a topic."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.topic = f"test.candles.{uuid.uuid4().hex[:8]}"
        self.offset = 0

    def write(self, ticks: list[dict], rows_per_statement: int = 1) -> None:
        rows = []
        for tick in ticks:
            tick["offset"] = self.offset
            rows.append((self.topic, 0, self.offset, tick["symbol"], tick["price"], tick["event_time"],
                         tick.get("volume"), tick.get("feed", "STREAM"), "test:1", self.offset))
            self.offset += 1
        insert = ("INSERT INTO crypto_prices (__connect_topic, __connect_partition, __connect_offset, symbol, price,"
                  " event_time, volume, feed, producer_id, sequence) VALUES ")
        one_row = "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
        with self.conn.cursor() as cur:
            if rows_per_statement == 1:
                cur.executemany(insert + one_row, rows)
                return
            for lo in range(0, len(rows), rows_per_statement):  # the sink's multi-row statements
                chunk = rows[lo:lo + rows_per_statement]
                cur.execute(insert + ", ".join([one_row] * len(chunk)), [v for row in chunk for v in row])


    def copy(self, ticks: list[dict]) -> None:
        """All ticks in one COPY: one statement, so one run of the rollup trigger, however many buckets."""
        columns = "__connect_topic, __connect_partition, __connect_offset, symbol, price, event_time, volume, feed"
        with self.conn.cursor().copy(f"COPY crypto_prices ({columns}) FROM STDIN") as copy:
            for tick in ticks:
                tick["offset"] = self.offset
                copy.write_row((self.topic, 0, self.offset, tick["symbol"], tick["price"], tick["event_time"],
                                tick.get("volume"), tick.get("feed", "STREAM")))
                self.offset += 1


@pytest.fixture
def db(stack: StackHandle) -> Iterator[psycopg.Connection]:
    with psycopg.connect(stack.pg_dsn(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def writer(db: psycopg.Connection) -> TickWriter:
    return TickWriter(db)


def new_symbols(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:6].upper()
    return [f"C{tag}{i}-USD" for i in range(n)]


def random_ticks(symbols: list[str], seed: int, hours: float = 3.0) -> list[dict]:
    """Random walk ticks with irregular spacing, ties, synthetic ticks, missing volume; shuffled in
    small windows so that many arrive late."""
    rng = random.Random(seed)
    ticks = []
    for symbol in symbols:
        price, at = rng.uniform(10, 1000), START
        end = START + timedelta(hours=hours)
        while at < end:
            at += timedelta(milliseconds=rng.choice([0, rng.randint(1, 90_000)]))  # ~some equal timestamps
            price *= 1 + rng.uniform(-0.003, 0.003)
            ticks.append({"symbol": symbol, "price": price, "event_time": at,
                          "volume": rng.choice([None, round(rng.uniform(0, 5), 3)]),
                          "feed": rng.choice(["STREAM", "STREAM", "POLL", "JITTER"])})
    for i in range(0, len(ticks) - 20, 7):  # late arrivals: move a tick up to 20 positions later
        ticks.insert(i + rng.randint(1, 20), ticks.pop(i))
    return ticks


def expected_candles(ticks: list[dict], rule: str, real_only: bool = False) -> pd.DataFrame:
    """OHLC by pandas: UTC buckets, first/last by event time with arrival order (offset) breaking ties."""
    df = pd.DataFrame(ticks)
    if real_only:
        df = df[df["feed"] != "JITTER"]
    df["event_time"] = pd.to_datetime(df["event_time"], utc=True)
    df["volume"] = df["volume"].astype(float).fillna(0.0)
    df["synthetic"] = (df["feed"] == "JITTER").astype(int)
    df = df.sort_values(["symbol", "event_time", "offset"], kind="stable")
    df["bucket"] = df["event_time"].dt.floor(rule)
    out = df.groupby(["symbol", "bucket"]).agg(
        open=("price", "first"), high=("price", "max"), low=("price", "min"), close=("price", "last"),
        volume=("volume", "sum"), tick_count=("price", "size"), synthetic_count=("synthetic", "sum"),
    )
    return out.reset_index()


def candles(conn: psycopg.Connection, view: str, symbols: list[str],
            columns: list[str] = CANDLE_COLUMNS) -> pd.DataFrame:
    query = f"SELECT {', '.join(columns)} FROM {view} WHERE symbol = ANY(%s) ORDER BY symbol, bucket"
    rows = conn.execute(query, (symbols,)).fetchall()
    frame = pd.DataFrame(rows, columns=columns)
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    return frame


def assert_candles_equal(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(actual) == len(expected)
    pd.testing.assert_frame_equal(actual.reset_index(drop=True), expected.reset_index(drop=True),
                                  check_dtype=False, check_exact=False, rtol=1e-9)


@pytest.mark.parametrize("rows_per_statement", [1, 128], ids=["row-by-row", "multi-row"])
@pytest.mark.parametrize("resolution", list(RESOLUTIONS))
def test_every_interval_equals_pandas_resampling(db: psycopg.Connection, writer: TickWriter, resolution: str,
                                                 rows_per_statement: int) -> None:
    symbols = new_symbols(3)
    ticks = random_ticks(symbols, seed=11)
    writer.write(ticks, rows_per_statement)
    assert_candles_equal(candles(db, view_name(resolution), symbols), expected_candles(ticks, RESOLUTIONS[resolution]))


@pytest.mark.parametrize("resolution", list(RESOLUTIONS))
def test_real_only_candles_leave_out_synthetic_ticks(db: psycopg.Connection, writer: TickWriter,
                                                     resolution: str) -> None:
    symbols = new_symbols(2)
    ticks = random_ticks(symbols, seed=12)
    writer.write(ticks)
    expected = expected_candles(ticks, RESOLUTIONS[resolution], real_only=True)
    assert (expected["synthetic_count"] == 0).all()
    assert_candles_equal(candles(db, view_name(resolution, "_real"), symbols), expected)


def test_synthetic_count_says_how_many_ticks_were_jitter(db: psycopg.Connection, writer: TickWriter) -> None:
    (symbol,) = new_symbols(1)
    at = START
    writer.write([{"symbol": symbol, "price": 100.0, "event_time": at, "feed": "POLL"},
                  {"symbol": symbol, "price": 100.1, "event_time": at + timedelta(seconds=1), "feed": "JITTER"},
                  {"symbol": symbol, "price": 100.2, "event_time": at + timedelta(seconds=2), "feed": "JITTER"}])
    all_ticks = candles(db, "view_crypto_candles", [symbol])
    real = candles(db, "view_crypto_candles_real", [symbol])
    assert all_ticks[["tick_count", "synthetic_count", "close"]].values.tolist() == [[3, 2, 100.2]]
    assert real[["tick_count", "synthetic_count", "close"]].values.tolist() == [[1, 0, 100.0]]


def test_a_late_tick_updates_the_candle_it_belongs_to(db: psycopg.Connection, writer: TickWriter) -> None:
    (symbol,) = new_symbols(1)
    writer.write([{"symbol": symbol, "price": 10.0, "event_time": START + timedelta(seconds=20)},
                  {"symbol": symbol, "price": 11.0, "event_time": START + timedelta(seconds=40)},
                  {"symbol": symbol, "price": 12.0, "event_time": START + timedelta(minutes=5)}])
    writer.write([{"symbol": symbol, "price": 9.0, "event_time": START + timedelta(seconds=5)}])  # arrives late
    first = candles(db, "view_crypto_candles", [symbol]).iloc[0]
    assert (first["open"], first["low"], first["close"], first["tick_count"]) == (9.0, 9.0, 11.0, 3)


@pytest.mark.parametrize("resolution", list(RESOLUTIONS))
def test_one_copy_over_many_buckets_equals_pandas_resampling(db: psycopg.Connection, writer: TickWriter,
                                                             resolution: str) -> None:
    """A bulk load: every tick in one statement, ties of equal event times inside it (also a bucket's
    very first and last instants, real and synthetic), arriving out of order."""
    symbols = new_symbols(2)
    ticks = random_ticks(symbols, seed=23, hours=26)
    for symbol in symbols:
        for at in (START + timedelta(minutes=10), START + timedelta(minutes=11) - timedelta(microseconds=1)):
            for price, feed in ((50.0, "STREAM"), (40.0, "JITTER"), (60.0, "STREAM"), (45.0, "POLL"),
                                (55.0, "JITTER")):
                ticks.append({"symbol": symbol, "price": price, "event_time": at, "volume": 1.0, "feed": feed})
    writer.copy(ticks)
    assert_candles_equal(candles(db, view_name(resolution), symbols), expected_candles(ticks, RESOLUTIONS[resolution]))
    assert_candles_equal(candles(db, view_name(resolution, "_real"), symbols),
                         expected_candles(ticks, RESOLUTIONS[resolution], real_only=True))


def test_equal_timestamps_are_ordered_by_arrival(db: psycopg.Connection, writer: TickWriter) -> None:
    (symbol,) = new_symbols(1)
    at = START + timedelta(seconds=30)
    writer.write([{"symbol": symbol, "price": p, "event_time": at} for p in (5.0, 7.0, 6.0)])
    writer.write([{"symbol": symbol, "price": p, "event_time": at} for p in (3.0, 8.0)], rows_per_statement=2)
    candle = candles(db, "view_crypto_candles", [symbol]).iloc[0]
    assert (candle["open"], candle["close"], candle["high"], candle["low"]) == (5.0, 8.0, 8.0, 3.0)


def test_the_sink_landing_a_tick_it_already_has_changes_nothing(stack: StackHandle, db: psycopg.Connection,
                                                                 writer: TickWriter) -> None:
    """The sink's own statement, as the sink's role: a re-landed tick (same symbol, time and price, other
    lineage and volume, e.g. from a replay or a recreated topic) leaves row and candles as they were."""
    (symbol,) = new_symbols(1)
    writer.write([{"symbol": symbol, "price": 1.0, "event_time": START, "volume": 2.0}])
    before = candles(db, "view_crypto_candles_1h", [symbol])
    dsn = stack.pg_dsn(user=stack.settings["CONNECT_DB_USER"], password=stack.settings["CONNECT_DB_PASSWORD"])
    with psycopg.connect(dsn, autocommit=True) as sink:
        sink.execute("INSERT INTO crypto_prices (symbol, event_time, price, volume, feed, __connect_topic,"
                     " __connect_partition, __connect_offset) VALUES (%s, %s, 1.0, 7.0, 'REPLAY', 'other', 2, 99)"
                     " ON CONFLICT (symbol, event_time, price) DO UPDATE SET volume = EXCLUDED.volume,"
                     " feed = EXCLUDED.feed, __connect_topic = EXCLUDED.__connect_topic,"
                     " __connect_partition = EXCLUDED.__connect_partition,"
                     " __connect_offset = EXCLUDED.__connect_offset", (symbol, START))
    row = db.execute("SELECT volume, feed, __connect_topic, __connect_offset FROM crypto_prices WHERE symbol = %s",
                     (symbol,)).fetchall()
    assert row == [(2.0, "STREAM", writer.topic, 0)]
    pd.testing.assert_frame_equal(candles(db, "view_crypto_candles_1h", [symbol]), before)


def test_the_sink_cannot_rewrite_a_landed_tick(stack: StackHandle, db: psycopg.Connection, writer: TickWriter) -> None:
    (symbol,) = new_symbols(1)
    writer.write([{"symbol": symbol, "price": 1.0, "event_time": START, "volume": 2.0}])
    dsn = stack.pg_dsn(user=stack.settings["CONNECT_DB_USER"], password=stack.settings["CONNECT_DB_PASSWORD"])
    with psycopg.connect(dsn, autocommit=True) as sink:
        updated = sink.execute("UPDATE crypto_prices SET price = 5.0, volume = 0 WHERE symbol = %s", (symbol,))
        assert updated.rowcount == 0
    assert db.execute("SELECT price, volume FROM crypto_prices WHERE symbol = %s", (symbol,)).fetchall() == [(1.0, 2.0)]


@pytest.mark.parametrize("bad", [
    {"price": float("nan")}, {"price": float("inf")}, {"price": -5.0}, {"price": 0.0},
    {"volume": float("nan")}, {"volume": -3.0}, {"event_time": datetime(2008, 12, 31, tzinfo=UTC)},
], ids=["price NaN", "price inf", "price -5", "price 0", "volume NaN", "volume -3", "event time 2008"])
def test_the_database_refuses_a_tick_that_breaks_the_contract(writer: TickWriter, bad: dict) -> None:
    """For writers that bypass Kafka Connect (its TickContract transform catches these first)."""
    (symbol,) = new_symbols(1)
    with pytest.raises(psycopg.errors.CheckViolation):
        writer.write([{"symbol": symbol, "price": 1.0, "event_time": START, "volume": 1.0, **bad}])


def calendar_bound(db: psycopg.Connection) -> int:
    """Most calendar buckets one new candle may add: its own and max_fill after the candle before it and
    after itself, in every interval."""
    return db.execute("SELECT sum(2 * max_fill + 1) FROM candle_intervals").fetchone()[0]


def unused_minute(db: psycopg.Connection) -> datetime:
    """A minute in 2019-2022 on a UTC day that is in nobody's gap-filled calendar yet."""
    rng = random.Random()
    while True:
        day = datetime(2019, 1, 5, tzinfo=UTC) + timedelta(days=rng.randrange(4 * 365))
        if not db.execute("SELECT EXISTS (SELECT FROM candle_calendar WHERE resolution = '1d' AND bucket = %s)",
                          (day,)).fetchone()[0]:
            return day + timedelta(hours=rng.randrange(24), minutes=rng.randrange(60))


def calendar_size(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM candle_calendar").fetchone()[0]


@pytest.mark.parametrize("when", [
    timedelta(days=-366), timedelta(days=-3650), timedelta(days=3650),
], ids=["a year older than all history", "ten years older", "ten years ahead"])
def test_a_far_dated_tick_costs_a_bounded_number_of_calendar_buckets(db: psycopg.Connection, writer: TickWriter,
                                                                       when: timedelta) -> None:
    """The gap-filled calendar used to gain every bucket between a tick and its neighbours: one tick in
    2200 wrote gigabytes and stalled the sink. Now a new candle adds at most calendar_bound() buckets."""
    (symbol,) = new_symbols(1)
    base = unused_minute(db)
    writer.write([{"symbol": symbol, "price": 5.0, "event_time": base}])
    before = calendar_size(db)
    writer.write([{"symbol": symbol, "price": 6.0, "event_time": base + when}])
    assert calendar_size(db) - before <= calendar_bound(db)
    filled = candles(db, "view_crypto_candles_filled", [symbol], CANDLE_COLUMNS + ["is_gap_fill"])
    max_fill = db.execute("SELECT max_fill FROM candle_intervals WHERE resolution = '1m'").fetchone()[0]
    assert len(filled) == 2 + max_fill  # both candles, and at most max_fill flat ones after the first


def test_the_first_tick_of_a_new_symbol_costs_a_bounded_number_of_calendar_buckets(
        db: psycopg.Connection, writer: TickWriter) -> None:
    (symbol,) = new_symbols(1)
    before = calendar_size(db)
    writer.write([{"symbol": symbol, "price": 5.0, "event_time": unused_minute(db)}])
    assert 0 < calendar_size(db) - before <= calendar_bound(db)


def test_a_gap_longer_than_max_fill_stays_a_gap_in_the_filled_view(db: psycopg.Connection,
                                                                   writer: TickWriter) -> None:
    (symbol,) = new_symbols(1)
    max_fill = db.execute("SELECT max_fill FROM candle_intervals WHERE resolution = '1m'").fetchone()[0]
    writer.write([{"symbol": symbol, "price": 5.0, "event_time": START},
                  {"symbol": symbol, "price": 6.0, "event_time": START + timedelta(minutes=max_fill + 10)}])
    filled = candles(db, "view_crypto_candles_filled", [symbol], CANDLE_COLUMNS + ["is_gap_fill"])
    assert len(filled) == 1 + max_fill + 1  # the first candle, max_fill flat ones after it, the second candle
    assert filled["is_gap_fill"].sum() == max_fill
    assert filled["bucket"].iloc[max_fill] == pd.Timestamp(START + timedelta(minutes=max_fill))


def test_rebuilding_all_candles_gives_the_candles_the_trigger_maintained(db: psycopg.Connection,
                                                                         writer: TickWriter) -> None:
    """rebuild_candles() (a bulk load, a new interval) replays ticks through the same definition."""
    symbols = new_symbols(2)
    ticks = random_ticks(symbols, seed=21, hours=4)
    writer.write(ticks, rows_per_statement=128)
    incremental = {r: candles(db, view_name(r), symbols) for r in RESOLUTIONS}
    db.execute("SELECT rebuild_candles()")
    for resolution, rule in RESOLUTIONS.items():
        rebuilt = candles(db, view_name(resolution), symbols)
        pd.testing.assert_frame_equal(rebuilt, incremental[resolution])
        assert_candles_equal(rebuilt, expected_candles(ticks, rule))


def test_a_corrected_or_deleted_tick_is_reflected(db: psycopg.Connection, writer: TickWriter) -> None:
    (symbol,) = new_symbols(1)
    writer.write([{"symbol": symbol, "price": p, "event_time": START + timedelta(seconds=s)}
                  for p, s in ((3.0, 1), (4.0, 2), (5.0, 3))])
    db.execute("UPDATE crypto_prices SET price = 1.0 WHERE __connect_topic = %s AND __connect_offset = 1",
               (writer.topic,))
    db.execute("DELETE FROM crypto_prices WHERE __connect_topic = %s AND __connect_offset = 2", (writer.topic,))
    candle = candles(db, "view_crypto_candles", [symbol]).iloc[0]
    assert (candle["open"], candle["high"], candle["low"], candle["close"], candle["tick_count"]) == \
        (3.0, 3.0, 1.0, 1.0, 2)


# -- candles of a transaction are merged at its commit ----------------------------------------------------
def test_a_transaction_of_many_statements_equals_pandas_resampling(db: psycopg.Connection,
                                                                   writer: TickWriter) -> None:
    """The sink's shape: one transaction per put(), many multi-row statements, each staging its partials."""
    symbols = new_symbols(3)
    ticks = random_ticks(symbols, seed=31)
    with db.transaction():
        writer.write(ticks, rows_per_statement=128)
    for resolution, rule in RESOLUTIONS.items():
        assert_candles_equal(candles(db, view_name(resolution), symbols), expected_candles(ticks, rule))


def test_a_transaction_s_candles_appear_when_it_commits(db: psycopg.Connection, writer: TickWriter) -> None:
    (symbol,) = new_symbols(1)
    with db.transaction():
        writer.write([{"symbol": symbol, "price": 1.0, "event_time": START}])
        assert candles(db, "view_crypto_candles", [symbol]).empty
    assert len(candles(db, "view_crypto_candles", [symbol])) == 1


def test_set_constraints_immediate_merges_a_statement_s_candles_at_its_end(db: psycopg.Connection,
                                                                          writer: TickWriter) -> None:
    """What the benches that roll their writes back rely on (bench/stack_driver.py: MERGE_IN_STATEMENT)."""
    (symbol,) = new_symbols(1)
    with db.transaction(force_rollback=True):
        db.execute("SET CONSTRAINTS ALL IMMEDIATE")
        writer.write([{"symbol": symbol, "price": 1.0, "event_time": START}])
        assert len(candles(db, "view_crypto_candles", [symbol])) == 1


def test_under_set_constraints_immediate_every_statement_s_candles_are_merged(db: psycopg.Connection,
                                                                           writer: TickWriter) -> None:
    """Each statement's merge runs at its end; the next statement queues another."""
    symbols = new_symbols(2)
    ticks = random_ticks(symbols, seed=35, hours=1)
    with db.transaction():
        db.execute("SET CONSTRAINTS ALL IMMEDIATE")
        writer.write(ticks, rows_per_statement=64)
    assert_candles_equal(candles(db, "view_crypto_candles", symbols), expected_candles(ticks, "1min"))


def test_a_rolled_back_savepoint_takes_only_its_own_candles(db: psycopg.Connection, writer: TickWriter) -> None:
    symbols = new_symbols(2)
    ticks = random_ticks(symbols, seed=36, hours=1)
    third = len(ticks) // 3
    with db.transaction():
        writer.write(ticks[:third], rows_per_statement=128)
        with db.transaction(force_rollback=True):  # a savepoint, rolled back
            writer.write(ticks[third:2 * third], rows_per_statement=128)
        writer.write(ticks[2 * third:], rows_per_statement=128)
    kept = ticks[:third] + ticks[2 * third:]
    assert_candles_equal(candles(db, "view_crypto_candles", symbols), expected_candles(kept, "1min"))


@pytest.mark.parametrize("merge", ["DEFERRED", "IMMEDIATE"])
def test_a_long_session_s_staging_tables_stay_small(db: psycopg.Connection, writer: TickWriter, merge: str) -> None:
    """Merged partials are deleted, not vacuumed (autovacuum skips temporary tables): the session's staging
    tables start afresh past a bound (1 MB of partials), so a sink session that writes for months stays small.
    IMMEDIATE: the merge, and so the fresh start, happens inside the statement that staged."""
    symbols = new_symbols(3)
    sizes, written = [], []
    for txn in range(300):  # ~2 MB of partials in all: 30 one-minute candles per transaction
        ticks = [{"symbol": symbols[i % 3], "price": 1.0 + i, "volume": 1.0, "feed": "STREAM",
                  "event_time": START + timedelta(minutes=txn * 30 + i)}
                 for i in range(30)]
        with db.transaction():
            db.execute(f"SET CONSTRAINTS ALL {merge}")
            writer.write(ticks, rows_per_statement=30)
        written += ticks
        sizes.append(db.execute("SELECT pg_relation_size('pg_temp.candle_pending')"
                                " + pg_relation_size('pg_temp.candle_merge_queue')").fetchone()[0])
    assert max(sizes) <= (1 << 20) + (256 << 10) + (64 << 10)
    assert min(sizes[sizes.index(max(sizes)):]) < max(sizes) / 4  # it was started afresh
    assert_candles_equal(candles(db, "view_crypto_candles", symbols), expected_candles(written, "1min"))


def test_a_rolled_back_transaction_leaves_no_candles(db: psycopg.Connection, writer: TickWriter) -> None:
    rolled_back, kept = new_symbols(2)
    with db.transaction(force_rollback=True):
        writer.write(random_ticks([rolled_back], seed=32, hours=1), rows_per_statement=128)
    ticks = random_ticks([kept], seed=33, hours=1)
    with db.transaction():
        writer.write(ticks, rows_per_statement=128)
    assert candles(db, "view_crypto_candles", [rolled_back]).empty
    assert_candles_equal(candles(db, "view_crypto_candles", [kept]), expected_candles(ticks, "1min"))


@pytest.mark.parametrize("correction", ["UPDATE crypto_prices SET price = price * 2", "DELETE FROM crypto_prices"],
                         ids=["updated", "deleted"])
def test_ticks_corrected_in_the_transaction_that_wrote_them_count_once(db: psycopg.Connection, writer: TickWriter,
                                                                        correction: str) -> None:
    """A correction rebuilds its days from crypto_prices, where the transaction's own ticks already are:
    the partials they staged are merged first, not again at commit."""
    symbols = new_symbols(2)
    ticks = random_ticks(symbols, seed=34, hours=2)
    half = len(ticks) // 2
    with db.transaction():
        writer.write(ticks[:half], rows_per_statement=128)
        db.execute(f"{correction} WHERE __connect_topic = %s AND __connect_offset = 5", (writer.topic,))
        writer.write(ticks[half:], rows_per_statement=128)
    if correction.startswith("UPDATE"):
        ticks[5]["price"] *= 2
    else:
        del ticks[5]
    for resolution, rule in RESOLUTIONS.items():
        assert_candles_equal(candles(db, view_name(resolution), symbols), expected_candles(ticks, rule))


def test_gaps_are_missing_in_candles_and_flat_at_the_previous_close_when_filled(
        db: psycopg.Connection, writer: TickWriter) -> None:
    (symbol,) = new_symbols(1)
    writer.write([{"symbol": symbol, "price": 10.0, "event_time": START + timedelta(seconds=10), "volume": 1.0},
                  {"symbol": symbol, "price": 12.0, "event_time": START + timedelta(seconds=50), "volume": 1.0},
                  {"symbol": symbol, "price": 20.0, "event_time": START + timedelta(minutes=4, seconds=1)}])
    plain = candles(db, "view_crypto_candles", [symbol])
    assert len(plain) == 2
    filled = candles(db, "view_crypto_candles_filled", [symbol], CANDLE_COLUMNS + ["is_gap_fill"])
    assert filled["bucket"].tolist() == [pd.Timestamp(START + timedelta(minutes=m)) for m in range(5)]
    assert filled["is_gap_fill"].tolist() == [False, True, True, True, False]
    gaps = filled[filled["is_gap_fill"]]
    assert (gaps[["open", "high", "low", "close"]] == 12.0).all().all()
    assert (gaps["volume"] == 0).all() and (gaps["tick_count"] == 0).all()
    assert filled.iloc[-1][["open", "close", "tick_count"]].tolist() == [20.0, 20.0, 1]


def test_gap_filled_candles_reach_back_to_a_late_tick_older_than_all_history(
        db: psycopg.Connection, writer: TickWriter) -> None:
    """The bucket calendar behind the _filled views grows backwards too, one statement at a time."""
    (symbol,) = new_symbols(1)
    long_ago = datetime(2019, 1, 1, tzinfo=UTC)  # before anything any other test writes
    writer.write([{"symbol": symbol, "price": 5.0, "event_time": long_ago + timedelta(minutes=3), "volume": 1.0}])
    writer.write([{"symbol": symbol, "price": 4.0, "event_time": long_ago, "volume": 1.0}])
    filled = candles(db, "view_crypto_candles_filled", [symbol], CANDLE_COLUMNS + ["is_gap_fill"])
    assert filled["bucket"].tolist() == [pd.Timestamp(long_ago + timedelta(minutes=m)) for m in range(4)]
    assert filled["close"].tolist() == [4.0, 4.0, 4.0, 5.0]
    assert filled["is_gap_fill"].tolist() == [False, True, True, False]


def clustered_ticks(symbols: list[str], seed: int) -> list[dict]:
    """Bursts of ticks (10-40 minutes) separated by silences of 5 minutes to 9 hours, and for the first symbol
    one silence of 8 days (longer than the 5m interval's max_fill of 7 days): real gaps at 5m and 1h."""
    rng = random.Random(seed)
    ticks = []
    for n, symbol in enumerate(symbols):
        price, at = rng.uniform(10, 1000), START
        for burst in range(14):
            if n == 0 and burst == 7:
                at += timedelta(days=8)
            end = at + timedelta(minutes=rng.randint(10, 40))
            while at < end:
                at += timedelta(seconds=rng.randint(0, 120))
                price *= 1 + rng.uniform(-0.003, 0.003)
                ticks.append({"symbol": symbol, "price": price, "event_time": at,
                              "volume": rng.choice([None, round(rng.uniform(0, 5), 3)]),
                              "feed": rng.choice(["STREAM", "POLL", "JITTER"])})
            at += timedelta(minutes=rng.choice([5, 17, 75, 130, 540]))
    rng.shuffle(ticks)  # arrival order unrelated to time: every tick may be late
    return ticks


def expected_filled(ticks: list[dict], rule: str, max_fill: int) -> pd.DataFrame:
    """pandas' gap filling: every bucket from a symbol's first candle to its last (resample), an empty one
    a flat candle at the forward-filled close (volume and counts 0), at most max_fill in a row."""
    frames = []
    for symbol, plain in expected_candles(ticks, rule).groupby("symbol"):
        series = plain.set_index("bucket").drop(columns="symbol").resample(rule).asfreq()
        gap = series["close"].isna()
        close = series["close"].ffill(limit=max_fill)
        for column in ("open", "high", "low"):
            series[column] = series[column].where(~gap, close)
        series["close"] = close
        for column in ("volume", "tick_count", "synthetic_count"):
            series[column] = series[column].where(~gap, 0)
        series["is_gap_fill"] = gap
        frames.append(series[close.notna()].reset_index().assign(symbol=symbol))
    return pd.concat(frames)[CANDLE_COLUMNS + ["is_gap_fill"]]


@pytest.mark.parametrize("resolution", ["5m", "1h"])
def test_gap_filled_candles_equal_pandas_resampling_with_a_forward_filled_close(
        db: psycopg.Connection, writer: TickWriter, resolution: str) -> None:
    """The whole filled series, gap rows included: no bucket missing, none extra, none beyond max_fill."""
    symbols = new_symbols(2)
    ticks = clustered_ticks(symbols, seed=13)
    writer.write(ticks, rows_per_statement=64)
    max_fill = db.execute("SELECT max_fill FROM candle_intervals WHERE resolution = %s", (resolution,)).fetchone()[0]
    filled = candles(db, view_name(resolution, "_filled"), symbols, CANDLE_COLUMNS + ["is_gap_fill"])
    expected = expected_filled(ticks, RESOLUTIONS[resolution], max_fill)
    assert expected["is_gap_fill"].sum() > 10  # the data has gaps at this interval
    if resolution == "5m":  # the 8-day silence: filled for max_fill buckets, then a gap in the filled view too
        first = expected[expected["symbol"] == symbols[0]]
        assert first["bucket"].diff().max() > pd.Timedelta(minutes=5)
    assert_candles_equal(filled, expected)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/St_Johns", "Pacific/Chatham"])
def test_candles_are_identical_whatever_the_server_time_zone(stack: StackHandle, zone: str) -> None:
    """The zone is the session's from its first statement (as a server's or role's TimeZone setting would
    make it), so it is in force while the ticks are written and the rollup's triggers bucket them, not only
    while the views are read; every interval is checked. Half- and quarter-hour offsets move hour and day
    buckets if anything buckets in local time."""
    with psycopg.connect(stack.pg_dsn(), autocommit=True, options=f"-c TimeZone={zone}") as conn:
        assert conn.execute("SHOW TimeZone").fetchone()[0] == zone
        symbols = new_symbols(1)
        ticks = random_ticks(symbols, seed=14, hours=30)
        TickWriter(conn).write(ticks)
        for resolution, rule in RESOLUTIONS.items():
            assert_candles_equal(candles(conn, view_name(resolution), symbols), expected_candles(ticks, rule))
        rows = conn.execute("SELECT bucket_utc FROM view_crypto_candles_1d WHERE symbol = %s ORDER BY bucket",
                            (symbols[0],)).fetchall()
    assert [r[0] for r in rows] == [datetime(2025, 11, 24), datetime(2025, 11, 25), datetime(2025, 11, 26)]


POWER_BI_QUERY = """
select "_"."symbol", "_"."bucket", "_"."open", "_"."high", "_"."low", "_"."close", "_"."volume"
from (
    select "symbol", "bucket", "bucket_utc", "open", "high", "low", "close", "volume", "tick_count", "synthetic_count"
    from "public"."{view}" "$Table"
) "_"
where "_"."symbol" = %s and "_"."bucket" >= %s
limit 1000001
"""


def test_views_answer_the_sql_power_bi_sends(powerbi: psycopg.Connection, writer: TickWriter) -> None:
    (symbol,) = new_symbols(1)
    ticks = random_ticks([symbol], seed=15, hours=2)
    writer.write(ticks)
    since = START + timedelta(hours=1)
    rows = powerbi.execute(POWER_BI_QUERY.format(view="view_crypto_candles"), (symbol, since)).fetchall()
    expected = expected_candles(ticks, "1min")
    assert len(rows) == int((expected["bucket"] >= pd.Timestamp(since)).sum()) > 0


@pytest.mark.parametrize("view", ["view_crypto_candles", "view_crypto_candles_1h", "view_crypto_candles_real"])
def test_power_bi_queries_read_the_rollup_not_the_raw_ticks(db: psycopg.Connection, view: str) -> None:
    """Cost follows the candles returned, not the history of ticks: the plan never touches crypto_prices.
    (bench/candles_bench.py shows the timings and plans at 1M and 10M ticks.)"""
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN " + POWER_BI_QUERY.format(view=view), ("BTC-USD", START)).fetchall())
    assert "crypto_prices" not in plan
    assert "candle_rollup" in plan


HISTORY_START = datetime(2045, 1, 2, tzinfo=UTC)  # the newest history in the database: "the last hour" is small


@pytest.fixture(scope="module")
def long_history(stack: StackHandle) -> str:
    """One symbol with two weeks of one tick per minute (20,160 one-minute candles), statistics fresh."""
    (symbol,) = new_symbols(1)
    with psycopg.connect(stack.pg_dsn(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO crypto_prices (__connect_topic, __connect_partition, __connect_offset, symbol, price,"
            " event_time, volume, feed) SELECT %s, 0, n, %s, 100 + n %% 13, %s + n * interval '1 minute', 1, 'STREAM'"
            " FROM generate_series(0, 20159) AS n", (f"test.history.{symbol}", symbol, HISTORY_START))
        conn.execute("ANALYZE candle_rollup")
        conn.execute("ANALYZE candle_calendar")
    return symbol


@pytest.mark.parametrize("view", ["view_crypto_candles", "view_crypto_candles_filled"])
@pytest.mark.parametrize("time_column", ["bucket", "bucket_utc"])
@pytest.mark.parametrize("one_symbol", [True, False], ids=["one-symbol", "all-symbols"])
def test_a_date_filter_on_either_time_column_is_an_index_range(db: psycopg.Connection, long_history: str,
                                                                view: str, time_column: str, one_symbol: bool) -> None:
    """The last hour of a long history: the date filter is an Index Cond, not a Filter over the history
    (for the gap-filled view: a range of the bucket calendar, not a series over every bucket)."""
    symbol_filter = f"\"_\".\"symbol\" = '{long_history}' and" if one_symbol else ""
    sql = (f'select * from (select * from "public"."{view}" "$Table") "_" '
           f'where {symbol_filter} "_"."{time_column}" >= %s limit 1000001')
    since = HISTORY_START + timedelta(days=14) - timedelta(hours=1)
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN " + sql, (since if time_column == "bucket" else since.replace(tzinfo=None),)).fetchall())
    time_conditions = [line for line in plan.splitlines() if "bucket" in line and ">= '" in line]  # vs the constant
    assert time_conditions and all("Index Cond" in line or "Recheck Cond" in line for line in time_conditions), plan


@pytest.mark.parametrize("statement", [
    "SELECT * FROM candle_rollup LIMIT 1",
    "SELECT * FROM candle_intervals",
    "SELECT * FROM candle_calendar LIMIT 1",
    "SELECT rebuild_candles()",
    "SELECT * FROM candle_replay LIMIT 1",
    "SELECT * FROM crypto_prices_quarantine LIMIT 1",
    "SELECT * FROM crypto_prices_rejected LIMIT 1",
    "SELECT * FROM crypto_prices_dropped_days LIMIT 1",
    "SELECT * FROM crypto_prices_default LIMIT 1",
    "SELECT * FROM schema_migrations LIMIT 1",
    "SELECT raw_ticks_maintenance_step(NULL)",
])
def test_the_power_bi_role_cannot_read_the_rollup_internals_nor_what_was_set_aside(
        powerbi: psycopg.Connection, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        powerbi.execute(statement)


def test_the_power_bi_role_works_in_read_only_transactions(powerbi: psycopg.Connection) -> None:
    assert powerbi.execute("SHOW default_transaction_read_only").fetchone() == ("on",)


@pytest.mark.parametrize("statement", [
    "INSERT INTO crypto_prices (__connect_topic, __connect_partition, __connect_offset, symbol, price, event_time,"
    " feed) VALUES ('x', 0, 0, 'X', 1, now(), 'STREAM')",
    "DELETE FROM candle_rollup",
    "CREATE TABLE powerbi_scratch (x int)",
    "CREATE TEMP TABLE powerbi_scratch (x int)",
    "CREATE VIEW powerbi_view AS SELECT 1",
])
def test_the_power_bi_role_cannot_write_even_in_a_read_write_session(powerbi: psycopg.Connection,
                                                                    statement: str) -> None:
    powerbi.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        powerbi.execute(statement)


def test_the_power_bi_role_sees_the_candle_views_and_the_raw_ticks_and_nothing_else(
        powerbi: psycopg.Connection) -> None:
    visible = {r[0] for r in powerbi.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()}
    expected = {view_name(r, v) for r in RESOLUTIONS for v in ("", "_real", "_filled")}
    expected |= {"crypto_prices", "view_crypto_ticks"}
    assert visible == expected
