"""What the stack holds on disk and how much room is left: the `disk` lines of `scripts/stack.sh status`.

  database  pg_database_size of POSTGRES_DB, as the superuser (the way control/status_flow.py connects), and the
            raw ticks' partitions (first .. last day), retention and days dropped
  topic     TICKS_TOPIC's partitions in the broker's log directory (confluent-kafka's AdminClient has no
            DescribeLogDirs, so the files are read; the caller passes the directory: the native stack's) against
            the retention.bytes x partitions the broker has for the topic
  postgres  free space on the file system under PostgreSQL's data directory (shutil.disk_usage)
  kafka     the same under the broker's log directory

and a `WARNING:` line for each thing that needs someone: less than DISK_WARN_FREE_PERCENT free under either
directory, or a partition of the ticks above TOPIC_WARN_FRACTION of its retention.bytes (the broker then deletes
ticks by size before TICKS_RETENTION_HOURS are up: the outage window has shrunk). A stage that cannot be
measured says why instead of a number, and warns about nothing.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from control.kafka_setup import HOUR_MS, topic_config
from core.settings import Settings, SettingsError

TOPIC_WARN_FRACTION = 0.8
UNITS = ("KiB", "MiB", "GiB", "TiB")


def human_bytes(size: int) -> str:
    """1536 -> '1.5 KiB' (binary units, one decimal); below 1 KiB the bytes themselves."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in UNITS:
        value /= 1024
        if value < 1024 or unit == UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def warn_free_percent(settings: Settings) -> float:
    """DISK_WARN_FREE_PERCENT: a number from 0 (never warn) to 100."""
    value = settings["DISK_WARN_FREE_PERCENT"]
    try:
        percent = float(value)
    except ValueError:
        raise SettingsError(f"setting DISK_WARN_FREE_PERCENT must be a number from 0 to 100, not {value!r}") from None
    if not 0 <= percent <= 100:
        raise SettingsError(f"setting DISK_WARN_FREE_PERCENT must be from 0 to 100, not {value}")
    return percent


# -- free space ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FreeSpace:
    path: Path  # the directory asked about
    free: int  # bytes an unprivileged process may still write
    total: int

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free / self.total if self.total else 0.0


def free_space(path: Path) -> FreeSpace:
    """The file system under `path`, or under its nearest existing parent (a stack never started)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return FreeSpace(path, usage.free, usage.total)


def free_line(space: FreeSpace) -> str:
    return (f"{human_bytes(space.free)} free of {human_bytes(space.total)} ({space.free_percent:.1f}%) "
            f"under {space.path}")


@dataclass(frozen=True)
class DataDir:
    service: str  # the `disk <service>:` line
    whose: str  # for the warning: what the directory holds
    effect: str  # for the warning: what a full disk does there, and what makes room


def free_space_warning(space: FreeSpace, data: DataDir, threshold: float) -> str | None:
    """Below the threshold (a full disk stops that service, and ticks stop landing)."""
    if space.free_percent >= threshold:
        return None
    return (f"WARNING: only {space.free_percent:.1f}% of the disk is free under {space.path} ({data.whose}; "
            f"DISK_WARN_FREE_PERCENT={threshold:g}): {data.effect}")


# -- the topic on the broker's disk -------------------------------------------------------------------------

@dataclass(frozen=True)
class TopicOnDisk:
    log_bytes: dict[int, int]  # per partition: its segments (.log files), what retention.bytes counts
    disk_bytes: int  # every file of its partitions (indexes too), as allocated on disk


def topic_on_disk(log_dir: Path, topic: str) -> TopicOnDisk:
    """The partition directories `<topic>-<n>` in the broker's log directory (not a deleted one's
    `<topic>-<n>.<id>-delete`, not another topic's that only starts with the same name)."""
    pattern = re.compile(rf"{re.escape(topic)}-(\d+)")
    logs: dict[int, int] = {}
    allocated = 0
    for directory in sorted(log_dir.iterdir()) if log_dir.is_dir() else []:
        if not (match := pattern.fullmatch(directory.name)) or not directory.is_dir():
            continue
        partition = int(match.group(1))
        logs[partition] = 0
        for file in directory.iterdir():
            try:
                stat = file.stat()
            except FileNotFoundError:  # the broker deleted a segment meanwhile
                continue
            allocated += stat.st_blocks * 512
            if file.suffix == ".log":
                logs[partition] += stat.st_size
    return TopicOnDisk(logs, allocated)


@dataclass(frozen=True)
class TopicLimits:
    partitions: int
    retention_bytes: int  # per partition; -1: no limit
    retention_ms: int  # -1: no limit


def topic_limits(kafka_config: dict[str, str], topic: str, timeout: float = 10.0) -> TopicLimits:
    """The topic's partition count and retention as the broker has them (not as .env says: `up` may not have
    run since .env changed)."""
    admin = AdminClient({**kafka_config, "log_level": 0})
    metadata = admin.list_topics(topic, timeout=timeout).topics[topic]
    if metadata.error is not None:
        raise KafkaException(metadata.error)
    config = topic_config(admin, topic, timeout)
    return TopicLimits(len(metadata.partitions), int(config["retention.bytes"].value),
                       int(config["retention.ms"].value))


def topic_line(topic: str, on_disk: TopicOnDisk, limits: TopicLimits | str) -> str:
    """`limits` is the reason when they could not be read."""
    line = f"{topic} {human_bytes(on_disk.disk_bytes)} on disk in {len(on_disk.log_bytes)} partitions"
    if isinstance(limits, str):
        return f"{line}; retention unknown ({limits})"
    hours = "no time limit" if limits.retention_ms < 0 else f"retention.ms {limits.retention_ms / HOUR_MS:g} h"
    if limits.retention_bytes < 0:
        return f"{line}; no retention.bytes ({hours})"
    cap = limits.retention_bytes * limits.partitions
    return (f"{line}; segments {human_bytes(sum(on_disk.log_bytes.values()))} = "
            f"{100 * sum(on_disk.log_bytes.values()) / cap:.1f}% of retention.bytes {limits.partitions} x "
            f"{human_bytes(limits.retention_bytes)} ({hours})")


def topic_warning(topic: str, on_disk: TopicOnDisk, limits: TopicLimits) -> str | None:
    """A partition above TOPIC_WARN_FRACTION of retention.bytes (the broker counts per partition, so one hot
    partition fills first; the whole topic above that fraction of retention.bytes x partitions implies one)."""
    if limits.retention_bytes < 0 or not on_disk.log_bytes:
        return None
    partition, size = max(on_disk.log_bytes.items(), key=lambda item: item[1])
    if size <= TOPIC_WARN_FRACTION * limits.retention_bytes:
        return None
    return (f"WARNING: {topic} partition {partition} holds {100 * size / limits.retention_bytes:.0f}% of its "
            f"retention.bytes ({human_bytes(limits.retention_bytes)}): the broker deletes its oldest ticks by size, "
            f"before retention.ms ({limits.retention_ms / HOUR_MS:g} h) is up, so a PostgreSQL or Connect outage "
            "loses ticks sooner than that; raise TICKS_RETENTION_BYTES (disk allowing) and run `up` again")


# -- the database -------------------------------------------------------------------------------------------

RAW_TICK_DAYS = """
SELECT pg_database_size(current_database()),
       (SELECT count(*) FROM raw_tick_partitions),
       (SELECT to_char(min(from_time) AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM raw_tick_partitions),
       (SELECT to_char(max(to_time) AT TIME ZONE 'UTC' - interval '1 day', 'YYYY-MM-DD') FROM raw_tick_partitions),
       (SELECT count(*) FROM crypto_prices_dropped_days)
"""


def database_line(settings: Settings) -> str:
    """The database's size and how its raw ticks are kept (init.sql: daily partitions, retention)."""
    name = settings["POSTGRES_DB"]
    try:
        with psycopg.connect(settings.pg_dsn(), connect_timeout=5) as conn:
            size, partitions, first, last, dropped = conn.execute(RAW_TICK_DAYS).fetchone()
    except psycopg.Error as exc:
        return f"{name} size unknown ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})"
    keep = int(settings["RAW_TICKS_RETENTION_DAYS"])
    kept = f"kept {keep} days before today" if keep else "kept for ever (RAW_TICKS_RETENTION_DAYS=0)"
    return (f"{name} {human_bytes(size)} (pg_database_size); raw ticks in {partitions} partitions "
            f"({first} .. {last}), {kept}; {dropped} days dropped")


POSTGRES_DIR = DataDir("postgres", "PostgreSQL's data directory",
                       "PostgreSQL stops when it is full and no tick lands; free space there (the database grows "
                       "with the ticks and candles it keeps)")
KAFKA_DIR = DataDir("kafka", "the broker's log directory",
                    "the broker stops when it is full and the producer's ticks pile up, then are lost; free space "
                    "there, or lower TICKS_RETENTION_BYTES / TICKS_RETENTION_HOURS and run `up` again")


# -- all of it ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DiskReport:
    lines: list[str]  # `disk <what>: ...`
    warnings: list[str]  # `WARNING: ...`, one per thing that needs someone


def disk_report(settings: Settings, postgres_data: Path, kafka_logs: Path) -> DiskReport:
    threshold = warn_free_percent(settings)
    topic = settings["TICKS_TOPIC"]
    on_disk = topic_on_disk(kafka_logs, topic)
    try:
        limits: TopicLimits | str = topic_limits(settings.kafka_config(), topic)
    except Exception as exc:  # noqa: BLE001 - shown instead of the limits
        limits = f"{type(exc).__name__}: {exc}"
    spaces = [(free_space(postgres_data), POSTGRES_DIR), (free_space(kafka_logs), KAFKA_DIR)]
    lines = [f"database:  {database_line(settings)}", f"topic:     {topic_line(topic, on_disk, limits)}",
             *(f"{data.service + ':':<10} {free_line(space)}" for space, data in spaces)]
    warnings = [free_space_warning(space, data, threshold) for space, data in spaces]
    if not isinstance(limits, str):
        warnings.append(topic_warning(topic, on_disk, limits))
    return DiskReport([f"disk {line}" for line in lines], [w for w in warnings if w is not None])
