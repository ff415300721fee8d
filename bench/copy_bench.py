"""What candle maintenance costs a COPY into crypto_prices, by how ticks spread over buckets.

Starts a PostgreSQL cluster of its own (init.sql applied, free port, throwaway data directory) unless
--dsn names one. Per event-time spacing (0.1, 1, 10, 100 ms between consecutive ticks, symbols taking
turns), the same ticks are COPYed with the rollup trigger and without it (ALTER TABLE ... DISABLE TRIGGER),
interleaved, each COPY rolled back (its candles merged at its end, as a commit would); ticks/s is the total
of each kind. Also: the raw COPY ceiling on scratch tables keyed by the symbol's name (text, the real key)
or by a smallint symbol id.

    python bench/copy_bench.py --write     # 300,000 ticks, 3 rounds: bench/results/copy.md and .json
    python bench/copy_bench.py --quick     # 100,000 ticks, 2 rounds (under a minute)

`copy_sweep()` is the measurement, importable (bench/pipeline_bench.py may call it with its stack's DSN).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_options import add_options, parse, results_file  # noqa: E402
from stack_driver import COPY_COLUMNS, MERGE_IN_STATEMENT, ROLLUP_TRIGGER, copy_into  # noqa: E402

from core.secrets import ensure_secrets  # noqa: E402
from core.settings import Settings  # noqa: E402
from stack.ports import PortClaims  # noqa: E402
from stack.services import Postgres  # noqa: E402

SPACINGS_MS = (0.1, 1.0, 10.0, 100.0)
TARGET_RATIO = 0.75


@dataclass
class CopyRate:
    spacing_ms: float
    ticks: int             # ticks per COPY
    minute_buckets: int    # distinct (symbol, 1-minute bucket) per COPY
    with_candles: float    # ticks/s, rollup trigger on (wall clock)
    without_candles: float  # ticks/s, rollup trigger off (wall clock)
    with_candles_cpu: float     # ticks per second of the server backend's CPU time, trigger on
    without_candles_cpu: float  # the same, trigger off

    @property
    def ratio(self) -> float:
        return self.with_candles / self.without_candles

    @property
    def cpu_ratio(self) -> float:
        return self.with_candles_cpu / self.without_candles_cpu


def copy_payload(ticks: int, spacing_ms: float, symbols: Sequence[str], start: datetime) -> tuple[bytes, int]:
    """COPY text of `ticks` ticks: tick i at start + i * spacing_ms, of symbol i mod len(symbols), its
    Kafka partition that symbol's index, prices wandering, 10% synthetic (JITTER); and how many
    (symbol, 1-minute bucket) pairs they fall in."""
    buffer = io.StringIO()
    minutes = set()
    for i in range(ticks):
        when = start + timedelta(microseconds=round(i * spacing_ms * 1000))
        at = when.isoformat()
        s = i % len(symbols)
        minutes.add((s, when.replace(second=0, microsecond=0)))
        feed = "JITTER" if i % 10 == 9 else "STREAM"
        buffer.write(f"{symbols[s]}\t{at}\t{100 + s + (i % 997) * 0.01 + i * 1e-7:.7f}\t0.5\t{feed}\t{at}\t"
                     f"bench\t{i}\tcopy.bench\t{s}\t{i}\n")
    return buffer.getvalue().encode(), len(minutes)


STATS = re.compile(r"([\d.]+) s user, ([\d.]+) s system")


def timed_copy(conn: psycopg.Connection, table: str, columns: str, data: bytes,
               candles: bool | None) -> tuple[float, float]:
    """(wall seconds, server backend CPU seconds) of one COPY of `data` (rolled back); the CPU time is the
    server's own account (log_statement_stats, superuser only), which other load on the machine disturbs
    far less than the wall clock. candles: the rollup trigger on/off (None: leave it); its merge included."""
    cpu: list[float] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        if match := STATS.search(diag.message_detail or ""):
            cpu.append(float(match[1]) + float(match[2]))

    with conn.transaction(force_rollback=True):
        conn.execute(MERGE_IN_STATEMENT)
        if candles is not None:
            conn.execute(f"ALTER TABLE crypto_prices {'ENABLE' if candles else 'DISABLE'} TRIGGER {ROLLUP_TRIGGER}")
        conn.execute("SET LOCAL client_min_messages = log")
        conn.execute("SET LOCAL log_statement_stats = on")
        conn.add_notice_handler(on_notice)
        cpu.clear()  # the SET's own
        started = time.perf_counter()
        copy_into(conn, data, table, columns)
        wall = time.perf_counter() - started
        conn.remove_notice_handler(on_notice)
        return wall, sum(cpu)


def copy_sweep(dsn: str, spacings_ms: Sequence[float] = SPACINGS_MS, ticks: int = 300_000, rounds: int = 3,
               symbols: Sequence[str] = ("BTC-USD", "ETH-USD", "SOL-USD"),
               start: datetime | None = None) -> list[CopyRate]:
    """Per spacing, `rounds` COPYs of the same `ticks` ticks with candle maintenance and as many without,
    interleaved (the order alternates per round), each in a transaction rolled back (the database is left
    as it was). Event times start at `start` (default: the current UTC hour, whose day has a partition on
    a database made by init.sql). Needs a role that may ALTER TABLE crypto_prices (the superuser)."""
    start = start or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rates = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE candle_rollup")  # the trigger's plans, as a database in use has them
        for spacing in spacings_ms:
            data, buckets = copy_payload(ticks, spacing, symbols, start)
            seconds = {True: 0.0, False: 0.0}
            cpu = {True: 0.0, False: 0.0}
            timed_copy(conn, "crypto_prices", COPY_COLUMNS, data, candles=True)  # warm-up, not counted
            for round_no in range(rounds):
                for candles in ((True, False) if round_no % 2 == 0 else (False, True)):
                    wall, used = timed_copy(conn, "crypto_prices", COPY_COLUMNS, data, candles)
                    seconds[candles] += wall
                    cpu[candles] += used
            n = rounds * ticks
            rates.append(CopyRate(spacing, ticks, buckets, n / seconds[True], n / seconds[False],
                                  n / cpu[True], n / cpu[False]))
            r = rates[-1]
            print(f"  {spacing:g} ms apart: with candles {r.with_candles:,.0f}/s, without {r.without_candles:,.0f}/s,"
                  f" ratio {r.ratio:.2f}; server CPU ratio {r.cpu_ratio:.2f}", flush=True)
    return rates


KEY_TABLES = {
    "symbol text (the real key)": ("symbol text NOT NULL", "symbol"),
    "symbol_id smallint": ("symbol_id smallint NOT NULL", "symbol_id"),
}


def key_width(dsn: str, ticks: int, rounds: int) -> dict[str, float]:
    """Raw COPY ticks per server CPU second into a plain scratch table with the tick key (symbol, event_time,
    price), the symbol as text vs as a smallint id; no triggers, no partitions, no CHECK; interleaved, rolled back."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    text_data, _ = copy_payload(ticks, 1.0, ("BTC-USD", "ETH-USD", "SOL-USD"), start)
    id_data = b"\n".join(line.replace(line.split(b"\t", 1)[0], str(n % 3).encode(), 1)
                         for n, line in enumerate(text_data.splitlines())) + b"\n"
    seconds = dict.fromkeys(KEY_TABLES, 0.0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for label, (column, _) in KEY_TABLES.items():
            table = "scratch_key_" + label.split()[0]
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"""CREATE TABLE {table} ({column}, event_time timestamptz NOT NULL,
                price double precision NOT NULL, volume double precision, feed text NOT NULL, produced_at timestamptz,
                producer_id text, sequence bigint, __connect_topic text, __connect_partition integer,
                __connect_offset bigint, landed_at timestamptz DEFAULT now(),
                PRIMARY KEY ({label.split()[0]}, event_time, price))""")
        try:
            for round_no in range(rounds + 1):
                order = list(KEY_TABLES.items()) if round_no % 2 == 0 else list(reversed(KEY_TABLES.items()))
                for label, (_, key) in order:
                    table = "scratch_key_" + label.split()[0]
                    data = text_data if key == "symbol" else id_data
                    _, took = timed_copy(conn, table, COPY_COLUMNS.replace("symbol,", f"{key},", 1), data, None)
                    if round_no > 0:  # round 0 warms up
                        seconds[label] += took
        finally:
            for label in KEY_TABLES:
                conn.execute(f"DROP TABLE IF EXISTS scratch_key_{label.split()[0]}")
    return {label: rounds * ticks / s for label, s in seconds.items()}


@contextmanager
def scratch_postgres(prefix: str) -> Iterator[Settings]:
    """The stack's PostgreSQL service on a free port in a throwaway state directory, init.sql applied;
    purged on exit. Yields its settings (settings.pg_dsn() is the superuser's DSN)."""
    state = tempfile.mkdtemp(prefix=prefix)
    claims = PortClaims()  # held until the context exits
    os.environ.update({"CRYPTOPIPE_STATE": state, "POSTGRES_PORT": str(claims.claim())})
    settings = Settings.load()
    ensure_secrets(settings)  # the stack's passwords, generated into the throwaway state dir
    postgres = Postgres(settings)
    print(f"starting PostgreSQL in {postgres.data_dir} ...", flush=True)
    postgres.up()
    try:
        yield settings
    finally:
        postgres.down()
        postgres.purge()
        shutil.rmtree(state, ignore_errors=True)
        del claims


def render(rates: list[CopyRate], keys: dict[str, float], server: str, command: str, rounds: int) -> str:
    lines = [
        "# COPY into crypto_prices: with and without candle maintenance",
        "",
        f"`{command}` on {os.cpu_count()} cores, PostgreSQL {server} with default settings. Per spacing: "
        f"{rounds} COPYs with the rollup trigger and {rounds} without (`ALTER TABLE crypto_prices DISABLE TRIGGER "
        f"{ROLLUP_TRIGGER}`), interleaved, after one warm-up, each rolled back; 3 symbols taking turns, "
        "consecutive ticks `spacing` apart in event time (so a symbol's ticks are 3x that apart), 10% synthetic.",
        f"Target: with candles >= {TARGET_RATIO:.0%} of without, at every spacing.",
        "",
        "Wall clock: what a loader sees, disturbed by whatever else the machine runs. Server CPU: the COPY's "
        "backend's own CPU time (`log_statement_stats`; the trigger runs in that backend), ticks per CPU second.",
        "",
        "| spacing | ticks per COPY | 1m candles per COPY (all symbols) | without candles ticks/s "
        "| with candles ticks/s | with / without | server CPU: without / with ticks per CPU s | with / without "
        "| target (CPU) |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {r.spacing_ms:g} ms | {r.ticks:,} | {r.minute_buckets:,} | {r.without_candles:,.0f} "
          f"| {r.with_candles:,.0f} | {r.ratio:.0%} | {r.without_candles_cpu:,.0f} / {r.with_candles_cpu:,.0f} "
          f"| {r.cpu_ratio:.0%} | {'met' if r.cpu_ratio >= TARGET_RATIO else 'MISSED'} |"
          for r in rates],
    ]
    if keys:
        text, small = keys["symbol text (the real key)"], keys["symbol_id smallint"]
        lines += [
            "",
            "## A narrower tick key?",
            "",
            "Raw COPY (1 ms spacing, same ticks) into a plain scratch table with crypto_prices' columns and the "
            "primary key (symbol, event_time, price), the symbol as text (as now) or as a smallint id; no CHECK, "
            "no triggers, no partitions; interleaved, rolled back.",
            "",
            "| key | ticks per server CPU second |",
            "|---|---|",
            *[f"| {label} | {rate:,.0f} |" for label, rate in keys.items()],
            "",
            f"The smallint key COPYs at {small / text:.2f}x the text key's rate.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=300_000, help="ticks per COPY")
    parser.add_argument("--rounds", type=int, default=3, help="timed COPYs of each kind per spacing")
    parser.add_argument("--spacings", default=",".join(f"{s:g}" for s in SPACINGS_MS), help="ms between ticks")
    parser.add_argument("--dsn", help="an existing database made by init.sql (default: a scratch cluster)")
    parser.add_argument("--no-key", action="store_true", help="skip the narrower-key measurement")
    add_options(parser, {"ticks": 100_000, "rounds": 2})
    args = parse(parser)
    spacings = [float(s) for s in args.spacings.split(",")]
    command = "python bench/copy_bench.py " + " ".join(sys.argv[1:])

    def run(dsn: str) -> tuple[list[CopyRate], dict[str, float], str]:
        with psycopg.connect(dsn) as conn:
            server = conn.execute("SHOW server_version").fetchone()[0]
        print("COPY with and without candles ...", flush=True)
        rates = copy_sweep(dsn, spacings, args.ticks, args.rounds)
        keys = {} if args.no_key else key_width(dsn, args.ticks, args.rounds)
        for label, rate in keys.items():
            print(f"  raw COPY, key {label}: {rate:,.0f} ticks/s", flush=True)
        return rates, keys, server

    if args.dsn:
        rates, keys, server = run(args.dsn)
    else:
        with scratch_postgres("copy-bench-") as settings:
            rates, keys, server = run(settings.pg_dsn())
    report = render(rates, keys, server, command.strip(), args.rounds)
    print(report)
    if (out := results_file(args, "copy.md")) is not None:
        out.write_text(report)
        out.with_suffix(".json").write_text(json.dumps(
            {"command": command.strip(), "server": server, "rounds": args.rounds,
             "rates": [{**asdict(r), "ratio": r.ratio, "cpu_ratio": r.cpu_ratio} for r in rates],
             "raw_copy_key_ticks_per_cpu_s": keys}, indent=2) + "\n")
        print(f"written to {out} and {out.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
