"""Databases made by an older schema are migrated by scripts/init_db.sh (migrations/, then init.sql) without
losing a tick or changing a candle.

Each test builds a database of its own in the test stack's PostgreSQL cluster with an older init.sql
(tests/fixtures/schema/, applied with psql as the superuser, with the environment init_db.sh gives it; the
roles already exist in the cluster), fills it with ticks through plain INSERTs (its own trigger makes the
candles), then runs today's scripts/init_db.sh on it exactly as `up` does (stack/services.py,
Postgres.apply_init_sql, with POSTGRES_DB naming that database), and compares.
"""

from __future__ import annotations

import dataclasses
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from core.secrets import DB_ROLE_OF_SECRET
from core.settings import PROJECT_ROOT, Settings
from stack.process import base_environment
from stack.services import Postgres
from tests.conftest import StackHandle
from tests.test_candles import (
    RESOLUTIONS,
    START,
    TickWriter,
    assert_candles_equal,
    candles,
    expected_candles,
    new_symbols,
    random_ticks,
    view_name,
)

pytestmark = pytest.mark.stack

SCHEMAS = PROJECT_ROOT / "tests" / "fixtures" / "schema"
BEFORE_PARTITIONING = SCHEMAS / "init_before_partitioning.sql"  # main's init.sql before issue #18
KAFKA_KEY = SCHEMAS / "init_kafka_key.sql"  # keyed by the Kafka coordinates, before issue #19's tick key
MIGRATIONS = PROJECT_ROOT / "migrations"


def superuser_env(settings: Settings) -> dict[str, str]:
    """What Postgres.apply_init_sql gives scripts/init_db.sh: the settings, the superuser on the cluster's
    socket, the roles' passwords. pg_stat_statements is told to skip utility statements, so that an old
    schema's ALTER ROLE ... PASSWORD never reaches the cluster's statement statistics."""
    return {
        **base_environment(), **settings.env,
        "PGHOST": str(Postgres(settings).data_dir), "PGPORT": str(settings.port("POSTGRES")),
        "PGUSER": settings["POSTGRES_USER"],
        **{key: settings[key] for key in DB_ROLE_OF_SECRET if key != "POSTGRES_PASSWORD"},
        "PGOPTIONS": "-c pg_stat_statements.track_utility=off",
    }


def apply_old_schema(stack: StackHandle, dbname: str, schema: Path) -> None:
    result = subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "--quiet", "--dbname", dbname,
                             "-f", str(schema)], env=superuser_env(stack.settings),
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{schema.name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def migrate(stack: StackHandle, dbname: str) -> None:
    """Today's scripts/init_db.sh on that database, as `up` runs it (raises with its output if it fails)."""
    settings = dataclasses.replace(stack.settings, env={**stack.settings.env, "POSTGRES_DB": dbname})
    Postgres(settings).apply_init_sql()


@pytest.fixture
def old_database(stack: StackHandle) -> Iterator[str]:
    """A database of the test's own in the stack's cluster, dropped afterwards."""
    name = f"migrate_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(stack.pg_dsn(dbname="postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connect(stack: StackHandle, dbname: str, user: str | None = None, password: str | None = None
            ) -> psycopg.Connection:
    return psycopg.connect(stack.pg_dsn(dbname=dbname, user=user, password=password), autocommit=True)


def all_candles(conn: psycopg.Connection, symbols: list[str], variant: str = "") -> dict[str, pd.DataFrame]:
    """Every interval's candles of the symbols; variant "_real": of their real ticks only."""
    return {resolution: candles(conn, view_name(resolution, variant), symbols) for resolution in RESOLUTIONS}


def assert_candles_equal_pandas(found: dict[str, pd.DataFrame], ticks: list[dict], real_only: bool = False) -> None:
    for resolution, rule in RESOLUTIONS.items():
        assert_candles_equal(found[resolution], expected_candles(ticks, rule, real_only=real_only))


def columns_of(conn: psycopg.Connection, table: str) -> list[str]:
    return [c for (c,) in conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass"
                                       " AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (table,)).fetchall()]


def rows_of(conn: psycopg.Connection, columns: list[str]) -> list[tuple]:
    listed = ", ".join(f'"{c}"' for c in columns)
    return conn.execute(f"SELECT {listed} FROM crypto_prices ORDER BY symbol, event_time, price,"
                        " __connect_topic, __connect_partition, __connect_offset").fetchall()


def applied_migrations(conn: psycopg.Connection) -> list[str]:
    return [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()]


def migration_versions() -> list[str]:
    return sorted(p.stem for p in MIGRATIONS.glob("*.sql"))


def is_partitioned(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT relkind FROM pg_class WHERE oid = 'crypto_prices'::regclass").fetchone() == ("p",)


def assert_a_new_tick_lands_with_its_candle(stack: StackHandle, dbname: str, symbol: str) -> None:
    """A tick of a minute ago, written as the sink writes it (its role, its upsert), is in crypto_prices and
    is its own 1-minute candle."""
    s = stack.settings
    at = datetime.now(UTC).replace(second=30, microsecond=0) - timedelta(minutes=1)
    with connect(stack, dbname, s["CONNECT_DB_USER"], s["CONNECT_DB_PASSWORD"]) as sink:
        sink.execute("INSERT INTO crypto_prices (symbol, event_time, price, volume, feed, __connect_topic,"
                     " __connect_partition, __connect_offset) VALUES (%s, %s, 7.25, 2, 'STREAM', 'after', 0, 0)"
                     " ON CONFLICT (symbol, event_time, price) DO UPDATE SET volume = EXCLUDED.volume", (symbol, at))
    with connect(stack, dbname) as conn:
        assert conn.execute("SELECT price FROM crypto_prices WHERE symbol = %s AND event_time = %s",
                            (symbol, at)).fetchall() == [(7.25,)]
        bucket = at.replace(second=0)
        assert conn.execute("SELECT open, close, volume, tick_count FROM view_crypto_candles"
                            " WHERE symbol = %s AND bucket = %s", (symbol, bucket)).fetchall() == [(7.25, 7.25, 2.0, 1)]


def recent_ticks(symbols: list[str], count: int) -> list[dict]:
    """Ticks of the last minutes, as a live database has when it is migrated: the old table, turned into a
    partition, must cover today too."""
    now = datetime.now(UTC).replace(microsecond=0)
    return [{"symbol": symbols[n % len(symbols)], "price": 200.0 + n, "volume": 0.5, "feed": "STREAM",
             "event_time": now - timedelta(seconds=7 * n + 1)} for n in range(count)]


def test_a_database_of_the_schema_before_partitioning_keeps_every_tick_and_candle(
        stack: StackHandle, old_database: str) -> None:
    """30 hours of ticks (three UTC days, ties, late ticks, JITTER, missing volumes) and the last minutes' in
    main's schema before issue #18; after today's init_db.sh: the same rows in every column that existed, all
    in the old table, now the partition crypto_prices_legacy of a partitioned crypto_prices, the same candles
    of every interval, of all ticks and of real ticks only (and pandas' too), one rollup row per candle,
    every migration recorded in schema_migrations, and a new tick lands with its candle."""
    apply_old_schema(stack, old_database, BEFORE_PARTITIONING)
    symbols = new_symbols(3)
    ticks = random_ticks(symbols, seed=41, hours=30) + recent_ticks(symbols, 40)
    with connect(stack, old_database) as conn:
        assert not is_partitioned(conn)
        TickWriter(conn).write(ticks, rows_per_statement=128)
        old_columns = columns_of(conn, "crypto_prices")
        rows_before = rows_of(conn, old_columns)
        candles_before = all_candles(conn, symbols)
        real_candles_before = all_candles(conn, symbols, "_real")
    assert len(rows_before) == len(ticks)
    assert_candles_equal_pandas(candles_before, ticks)
    assert_candles_equal_pandas(real_candles_before, ticks, real_only=True)

    migrate(stack, old_database)

    with connect(stack, old_database) as conn:
        assert is_partitioned(conn)
        assert rows_of(conn, old_columns) == rows_before
        assert conn.execute("SELECT DISTINCT tableoid::regclass::text FROM crypto_prices").fetchall() == [
            ("crypto_prices_legacy",)]
        after, real_after = all_candles(conn, symbols), all_candles(conn, symbols, "_real")
        for resolution in RESOLUTIONS:
            assert_candles_equal(after[resolution], candles_before[resolution])
            assert_candles_equal(real_after[resolution], real_candles_before[resolution])
        assert_candles_equal_pandas(after, ticks)
        assert_candles_equal_pandas(real_after, ticks, real_only=True)
        assert applied_migrations(conn) == migration_versions()
        assert rollup_rows_per_candle(conn, symbols) == 1  # migration 0008 merged the real and synthetic rows
    assert_a_new_tick_lands_with_its_candle(stack, old_database, new_symbols(1)[0])


def rollup_rows_per_candle(conn: psycopg.Connection, symbols: list[str]) -> int:
    return conn.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM candle_rollup WHERE symbol = ANY(%s)"
                        " GROUP BY resolution, symbol, bucket) c", (symbols,)).fetchone()[0]


CONTRACT_BREAKERS = [  # (fields that break the tick contract, the reason it is quarantined with)
    ({"price": 0.0}, "bad_price"),
    ({"price": -3.0}, "bad_price"),
    ({"price": float("nan")}, "bad_price"),
    ({"price": 2e9}, "bad_price"),
    ({"volume": -1.0}, "bad_volume"),
    ({"volume": float("nan")}, "bad_volume"),
    ({"event_time": datetime(2008, 12, 31, tzinfo=UTC)}, "implausible_time"),
    ({"symbol": "btc-usd"}, "bad_symbol"),
    ({"symbol": "X" * 33}, "bad_symbol"),
    ({"feed": "MOON"}, "bad_feed"),
]


def test_a_database_keyed_by_kafka_coordinates_gets_the_tick_key_without_duplicates_or_contract_breakers(
        stack: StackHandle, old_database: str) -> None:
    """The schema before the tick key (issue #19) stored a tick produced twice as two rows (different
    offsets) and had no contract CHECK. After today's init_db.sh: one row per tick, the first landing (its
    lowest offset) kept; every contract breaker in crypto_prices_quarantine with its reason; candles rebuilt
    from the kept ticks equal pandas'; crypto_prices keyed by crypto_prices_tick_key and partitioned."""
    apply_old_schema(stack, old_database, KAFKA_KEY)
    symbols = new_symbols(2)
    ticks = random_ticks(symbols, seed=42, hours=6)
    twice = [dict(t) for t in ticks[::9]]
    # Each of its own symbol: the old schema's gap-fill calendar filled every bucket between a symbol's candles
    # (a 2008 tick of a 2025 symbol: 17 years of minutes).
    breakers = [{"symbol": symbol, "price": 50.0, "volume": 1.0, "feed": "STREAM",
                 "event_time": START + timedelta(hours=7, seconds=n), **fields}
                for n, ((fields, _), symbol) in enumerate(zip(CONTRACT_BREAKERS, new_symbols(len(CONTRACT_BREAKERS)),
                                                              strict=True))]
    with connect(stack, old_database) as conn:
        writer = TickWriter(conn)
        writer.write(ticks, rows_per_statement=64)
        writer.write(twice)  # the same ticks again, at later offsets
        writer.write(breakers)
        rows = conn.execute("SELECT count(*) FROM crypto_prices").fetchone()[0]
    assert rows == len(ticks) + len(twice) + len(breakers)

    migrate(stack, old_database)

    with connect(stack, old_database) as conn:
        kept = conn.execute("SELECT symbol, event_time, price, __connect_offset FROM crypto_prices"
                            " ORDER BY __connect_offset").fetchall()
        assert kept == [(t["symbol"], t["event_time"], t["price"], t["offset"]) for t in ticks]
        quarantined = conn.execute("SELECT (tick->>'__connect_offset')::bigint, reason FROM crypto_prices_quarantine"
                                   " ORDER BY 1").fetchall()
        assert quarantined == [(b["offset"], reason)
                               for b, (_, reason) in zip(breakers, CONTRACT_BREAKERS, strict=True)]
        assert_candles_equal_pandas(all_candles(conn, symbols + [b["symbol"] for b in breakers]), ticks)
        key = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid ="
                           " 'crypto_prices'::regclass AND conname = 'crypto_prices_tick_key'").fetchall()
        assert key == [("PRIMARY KEY (symbol, event_time, price)",)]
        assert is_partitioned(conn)
        assert applied_migrations(conn) == migration_versions()
    assert_a_new_tick_lands_with_its_candle(stack, old_database, new_symbols(1)[0])
