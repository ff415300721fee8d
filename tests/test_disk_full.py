"""PostgreSQL's disk filling up is survivable (issue #18): landing stops, nothing is lost or dead-lettered,
and ingestion resumes by itself once space is freed (docs/disk-full.md).

The ticks of one UTC day no other test uses (2013-05-01) get a filesystem of their own, small and really
full: a 16 MB tmpfs mounted by the test, a TABLESPACE on it, the day's partition crypto_prices_p20130501 and
its indexes moved there, then a filler file written until the kernel answers ENOSPC. The test produces
20,000 ticks of that day (about 4 MB of heap and index pages the partition does not have), sees the sink's
tasks FAIL with PostgreSQL's "could not extend file ...: No space left on device" and the supervisor restart
them, to fail again, while the disk stays full, with (next to) none of those ticks landed; then it deletes the filler
and only waits: every tick must land exactly once, in the candles too, nothing may reach the dead-letter
topic, and the connector must be RUNNING again. Afterwards the partition moves back to pg_default, the
tablespace is dropped and the filesystem unmounted, so the rest of the session's stack is as before.

Needs root (mount), as CI has; the stack's PostgreSQL runs as the `postgres` OS user, which owns the mount.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from control.connector import connector_status, load_connector, wait_running
from control.supervisor import root_cause
from tests.conftest import StackHandle
from tests.support import (
    TickProducer,
    consume,
    count_rows,
    end_offsets,
    new_symbol,
    poll_until,
    query,
    supervisor_restarts,
    tick,
    wait_for_rows,
)

pytestmark = pytest.mark.stack

CONNECTOR = load_connector()["name"]
TABLESPACE = "disk_full_test"
MOUNT_SIZE = "16m"
DAY = datetime(2013, 5, 1, tzinfo=UTC)  # a day no other test uses: its partition holds this test's ticks only
DAY_MS = int(DAY.timestamp() * 1000)
PARTITION = f"crypto_prices_p{DAY:%Y%m%d}"
TICKS = 20_000
SYMBOLS = 6  # keys over every partition of the topic, so that every sink task meets the full disk
FULL_RESTARTS = 2  # the supervisor restarts the failed tasks at least this often while the disk is full
RECOVERY_TIMEOUT = 240  # > the supervisor's longest backoff (60 s) + a task's restart and a few batches


def admin(stack: StackHandle) -> psycopg.Connection:
    """The superuser (tablespaces, moving a partition)."""
    return psycopg.connect(stack.pg_dsn(), autocommit=True, connect_timeout=10)


def run_ddl(stack: StackHandle, statement: sql.Composable, timeout: float = 60) -> None:
    """DDL that needs a lock the sink may hold for a moment: short lock waits, tried again until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with admin(stack) as conn:
                conn.execute("SET lock_timeout = '2s'")
                conn.execute(statement)
                return
        except psycopg.errors.LockNotAvailable:
            if time.monotonic() > deadline:
                raise


@contextlib.contextmanager
def small_filesystem() -> Iterator[Path]:
    """A MOUNT_SIZE tmpfs owned by the postgres OS user; unmounted and removed on exit."""
    if os.geteuid() != 0:
        pytest.skip("mounting the test's small filesystem needs root (CI runs the suite as root)")
    owner = pwd.getpwnam("postgres")
    parent = Path(tempfile.mkdtemp(prefix="cryptopipe-disk-full-"))
    parent.chmod(0o755)  # the postgres user must reach the mount point
    mount_point = parent / "tablespace"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o",
                              f"size={MOUNT_SIZE},mode=0700,uid={owner.pw_uid},gid={owner.pw_gid}",
                              "tmpfs", str(mount_point)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        mount_point.rmdir()
        parent.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        for _attempt in range(10):
            if subprocess.run(["umount", str(mount_point)], capture_output=True, check=False).returncode == 0:
                break
            time.sleep(1)
        else:  # a process still has a file open there: detach it now, the kernel frees it when closed
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
        mount_point.rmdir()
        parent.rmdir()


@contextlib.contextmanager
def tablespace_on(stack: StackHandle, location: Path) -> Iterator[str]:
    """A tablespace at `location`; on exit, whatever is in it moves back to pg_default and it is dropped."""
    name = sql.Identifier(TABLESPACE)
    with admin(stack) as conn:
        conn.execute(sql.SQL("DROP TABLESPACE IF EXISTS {}").format(name))  # a previous run's, interrupted
        conn.execute(sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(name, sql.Literal(str(location))))
    try:
        yield TABLESPACE
    finally:
        run_ddl(stack, sql.SQL("ALTER TABLE ALL IN TABLESPACE {} SET TABLESPACE pg_default").format(name))
        run_ddl(stack, sql.SQL("ALTER INDEX ALL IN TABLESPACE {} SET TABLESPACE pg_default").format(name))
        run_ddl(stack, sql.SQL("DROP TABLESPACE {}").format(name))


def fill(path: Path) -> int:
    """Write `path` until the filesystem answers ENOSPC; the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            chunk = b"\0" * size
            while True:
                try:
                    n = os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                written += n
                if n < size:
                    break
    finally:
        os.close(fd)
    return written


def ensure_partition(stack: StackHandle) -> None:
    """The day's partition. The maintenance makes it for a day with ticks in the default partition once the
    day has been quiet for a minute (the supervisor's thread, every TICK_MAINTENANCE_INTERVAL); this test's
    tick is the day's only one and has landed, so steps without the wait make it now."""

    deadline = time.monotonic() + 60
    while not query(stack, "SELECT to_regclass(%s) IS NOT NULL", PARTITION)[0][0]:
        assert time.monotonic() < deadline, f"{PARTITION} was not made"
        try:
            with admin(stack) as conn:
                done = conn.execute("SELECT raw_ticks_maintenance_step(NULL, p_quiet => interval '0')").fetchone()[0]
            assert done is not None, f"nothing left to do for the maintenance, and no {PARTITION}"
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DuplicateTable):
            time.sleep(0.5)  # the supervisor's maintainer is at it too: its lock won, or it made the partition


def move_partition(stack: StackHandle, tablespace: str) -> None:
    """The day's partition and its indexes (its TOAST table goes with it) into `tablespace`."""
    indexes = [name for (name,) in query(stack, "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = "
                                                "%s::regclass", PARTITION)]
    for kind, name in [("TABLE", PARTITION), *(("INDEX", index) for index in indexes)]:
        run_ddl(stack, sql.SQL("ALTER {} {} SET TABLESPACE {}").format(
            sql.SQL(kind), sql.Identifier(name), sql.Identifier(tablespace)))


def task_states(stack: StackHandle) -> set[str]:
    status = connector_status(stack.connect_api, CONNECTOR) or {"tasks": []}
    return {t["state"] for t in status["tasks"]}


def failed_traces(stack: StackHandle) -> list[str]:
    status = connector_status(stack.connect_api, CONNECTOR) or {"tasks": []}
    return [t.get("trace", "") for t in [*status["tasks"], status.get("connector", {})] if t.get("state") == "FAILED"]


@pytest.fixture(scope="module")
def disk_full(stack: StackHandle) -> Iterator[dict]:
    """One disk-full episode under the day's partition, observed; everything put back whatever happens."""
    wait_running(stack.connect_api, CONNECTOR)
    symbols = [new_symbol("DISKFULL") for _ in range(SYMBOLS)]
    producer = TickProducer(stack)
    dlq = stack.settings["TICKS_DLQ_TOPIC"]
    seen: dict = {"symbols": symbols}
    with small_filesystem() as mount_point, tablespace_on(stack, mount_point) as tablespace:
        filler = mount_point / "filler"
        try:
            producer.send([tick(symbols[0], 0, event_time=DAY_MS, sequence=0)])  # the day's first tick
            assert wait_for_rows(stack, symbols, 1, timeout=60) == 1
            ensure_partition(stack)
            move_partition(stack, tablespace)
            seen["on_small_disk"] = [name for (name,) in query(
                stack, "SELECT c.relname::text FROM pg_class c JOIN pg_tablespace t ON t.oid = c.reltablespace "
                       "WHERE t.spcname = %s ORDER BY 1", tablespace)]
            seen["filled"] = fill(filler)
            seen["free_after_fill"] = os.statvfs(mount_point).f_bavail
            dlq_before = end_offsets(stack, dlq)
            restarts_before = supervisor_restarts(stack)

            started = time.monotonic()
            seen["produced"] = 1 + producer.send(
                tick(symbols[n % SYMBOLS], n, event_time=DAY_MS + n * 100, sequence=n) for n in range(1, TICKS))
            seen["trace"] = poll_until(lambda: "\n".join(failed_traces(stack)),
                                       lambda t: "No space left on device" in t, timeout=180, interval=1)
            seen["failed_after"] = time.monotonic() - started
            seen["landed_at_failure"] = count_rows(stack, symbols)
            seen["restarts_while_full"] = poll_until(lambda: supervisor_restarts(stack) - restarts_before,
                                                     lambda n: n >= FULL_RESTARTS, timeout=300, interval=1)
            seen["landed_while_full"] = count_rows(stack, symbols)
            seen["full_for"] = time.monotonic() - started
        finally:
            filler.unlink(missing_ok=True)  # the space is freed; from here on the test only watches
        freed = time.monotonic()
        seen["landed"] = wait_for_rows(stack, symbols, seen["produced"], timeout=RECOVERY_TIMEOUT)
        seen["resumed_after"] = time.monotonic() - freed
        seen["distinct"] = query(stack, "SELECT count(DISTINCT (symbol, sequence)) FROM crypto_prices "
                                        "WHERE symbol = ANY(%s)", symbols)[0][0]
        seen["in_partition"] = query(stack, f"SELECT count(*) FROM {PARTITION} WHERE symbol = ANY(%s)", symbols)[0][0]
        seen["candle_ticks"] = query(stack, "SELECT sum(tick_count) FROM view_crypto_candles "
                                            "WHERE symbol = ANY(%s)", symbols)[0][0]
        seen["states"] = poll_until(lambda: task_states(stack), lambda states: states == {"RUNNING"}, timeout=120)
        seen["dlq_growth"] = sum(end_offsets(stack, dlq).values()) - sum(dlq_before.values())
        seen["dead_letters"] = consume(stack, dlq, lambda m: m.key() in {s.encode() for s in symbols}, 1, timeout=15)
        yield seen


def test_the_days_partition_sat_on_a_really_full_filesystem(disk_full: dict) -> None:
    assert PARTITION in disk_full["on_small_disk"], disk_full["on_small_disk"]
    assert f"{PARTITION}_pkey" in disk_full["on_small_disk"], disk_full["on_small_disk"]
    assert disk_full["free_after_fill"] == 0 and disk_full["filled"] > 8 << 20


def test_a_full_disk_stops_landing_and_fails_the_task_saying_why(disk_full: dict) -> None:
    trace = disk_full["trace"]
    assert "No space left on device" in root_cause(trace), trace[-3000:]  # what `status` and the supervisor log show
    # a batch small enough for the free space left in the partition's pages may land; nothing much more
    landed = disk_full["landed_at_failure"], disk_full["landed_while_full"]
    assert landed[1] < TICKS // 10, f"ticks kept landing on a full disk: {landed}"
    assert disk_full["restarts_while_full"] >= FULL_RESTARTS


def test_once_space_is_freed_every_tick_lands_exactly_once_by_itself(disk_full: dict) -> None:
    assert disk_full["produced"] == TICKS
    assert disk_full["landed"] == TICKS, (f"{disk_full['landed']} of {TICKS} ticks landed within "
                                          f"{RECOVERY_TIMEOUT} s after the space was freed")
    assert disk_full["distinct"] == disk_full["in_partition"] == TICKS
    assert disk_full["candle_ticks"] == TICKS
    assert disk_full["states"] == {"RUNNING"}


def test_nothing_is_dead_lettered_by_a_full_disk(disk_full: dict) -> None:
    assert disk_full["dead_letters"] == []
    assert disk_full["dlq_growth"] == 0
