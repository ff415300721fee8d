"""Kafka sized to the outage window, and `status` shows the disk (issue #18, docs/kafka-retention.md).

The ticks' and dead letters' retention by time and by bytes comes from .env and is on the broker after `up`; setup
alters an existing topic whose retention differs, so changing .env and running `up` again changes it; compose's
one-shot gets the same settings. `status` prints the database's size, the ticks topic's size on the broker's disk,
the free space under PostgreSQL's and Kafka's data directories, and a WARNING (exit 1) when either runs short or
a partition of the ticks nears its retention.bytes."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigSource, NewTopic

from control.disk import (
    POSTGRES_DIR,
    TOPIC_WARN_FRACTION,
    FreeSpace,
    TopicLimits,
    TopicOnDisk,
    free_space_warning,
    human_bytes,
    topic_on_disk,
    topic_warning,
)
from control.kafka_setup import (
    HOUR_MS,
    MIB,
    RETENTION_SETTINGS,
    Retention,
    apply_retention,
    created_topic_config,
    ensure_kafka,
    ledger_topic,
    retentions,
    topic_config,
)
from core.settings import PROJECT_ROOT, Settings, SettingsError, read_env_file
from stack.services import Kafka, Postgres
from tests.conftest import StackHandle, run_stack_cli
from tests.support import TickProducer, new_symbol, poll_until, query, tick, wait_for_rows, wait_until

ENV = {k: v for k, v in read_env_file(PROJECT_ROOT / ".env").items() if v is not None}
RETENTION_KEYS = ("retention.ms", "retention.bytes", "segment.ms", "segment.bytes")
UNIT = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
SIZE = r"[\d.]+ (?:B|KiB|MiB|GiB|TiB)"
FREE_LINE = re.compile(rf"^(?P<free>{SIZE}) free of (?P<total>{SIZE}) \((?P<percent>[\d.]+)%\) under (?P<path>.+)$")


def size(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNIT[unit]


def settings_with(base: Settings, **values: str) -> Settings:
    return dataclasses.replace(base, env={**base.env, **values})


# -- without a stack ----------------------------------------------------------------------------------------

def test_retention_comes_from_env_and_segments_are_a_tenth_of_it() -> None:
    settings = Settings(env=dict(ENV), state_dir=PROJECT_ROOT, cache_dir=PROJECT_ROOT)
    ticks, dlq = retentions(settings)
    assert (ticks.topic, ticks.hours, ticks.bytes_per_partition) == (
        ENV["TICKS_TOPIC"], int(ENV["TICKS_RETENTION_HOURS"]), int(ENV["TICKS_RETENTION_BYTES"]))
    assert (dlq.topic, dlq.hours, dlq.bytes_per_partition) == (
        ENV["TICKS_DLQ_TOPIC"], int(ENV["TICKS_DLQ_RETENTION_HOURS"]), int(ENV["TICKS_DLQ_RETENTION_BYTES"]))
    assert Retention("t", 168, 1 << 30).config() == {
        "retention.ms": str(168 * HOUR_MS), "retention.bytes": str(1 << 30),
        "segment.ms": str(168 * HOUR_MS // 10), "segment.bytes": str((1 << 30) // 10)}
    # a segment never below Kafka's minimum (1 MiB) nor above its default (1 GiB)
    assert Retention("t", 1, MIB).config()["segment.bytes"] == str(MIB)
    assert Retention("t", 1, 100 << 30).config()["segment.bytes"] == str(1 << 30)


@pytest.mark.parametrize(("key", "value"), [("TICKS_RETENTION_HOURS", "0"), ("TICKS_RETENTION_HOURS", "a week"),
                                            ("TICKS_RETENTION_BYTES", str(MIB - 1)),
                                            ("TICKS_DLQ_RETENTION_BYTES", "-1")])
def test_a_retention_setting_that_is_no_positive_whole_number_is_refused(key: str, value: str) -> None:
    settings = Settings(env={**ENV, key: value}, state_dir=PROJECT_ROOT, cache_dir=PROJECT_ROOT)
    with pytest.raises(SettingsError, match=key):
        retentions(settings)


def test_compose_passes_every_retention_setting_to_its_kafka_setup() -> None:
    """The one-shot's image carries the .env it was built with: only the environment brings a changed value."""
    setup_env = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]["kafka-setup"][
        "environment"]
    for keys in RETENTION_SETTINGS:
        for key in keys:
            assert setup_env.get(key) == f"${{{key}}}", key
            assert key in ENV, key


def test_topic_on_disk_counts_its_own_partitions_only(tmp_path: Path) -> None:
    for directory, files in {"crypto.ticks-0": {"00.log": 1000, "00.index": 10},
                             "crypto.ticks-2": {"00.log": 300, "05.log": 200, "05.timeindex": 10},
                             "crypto.ticks.dlq-0": {"00.log": 5000},  # another topic with the same prefix
                             "crypto.ticks-1.0a1b2c-delete": {"00.log": 7000}}.items():  # deleted, not yet gone
        (tmp_path / directory).mkdir()
        for name, length in files.items():
            (tmp_path / directory / name).write_bytes(b"x" * length)
    found = topic_on_disk(tmp_path, "crypto.ticks")
    assert found.log_bytes == {0: 1000, 2: 500}
    assert found.disk_bytes >= 1520
    assert topic_on_disk(tmp_path / "missing", "crypto.ticks") == TopicOnDisk({}, 0)


def test_warnings_start_exactly_past_their_thresholds() -> None:
    half = FreeSpace(Path("/data"), free=50, total=100)
    assert free_space_warning(half, POSTGRES_DIR, 50) is None
    assert "only 50.0% of the disk is free under /data" in (free_space_warning(half, POSTGRES_DIR, 50.1) or "")
    limits = TopicLimits(partitions=3, retention_bytes=1000, retention_ms=HOUR_MS)
    at = int(TOPIC_WARN_FRACTION * 1000)
    assert topic_warning("t", TopicOnDisk({0: at, 1: 0, 2: 0}, 0), limits) is None
    assert "t partition 1 holds 81%" in (topic_warning("t", TopicOnDisk({0: at, 1: 810, 2: 0}, 0), limits) or "")
    assert topic_warning("t", TopicOnDisk({0: 10**9}, 0), dataclasses.replace(limits, retention_bytes=-1)) is None
    assert human_bytes(1023) == "1023 B" and human_bytes(1536) == "1.5 KiB" and human_bytes(3 << 30) == "3.0 GiB"


# -- retention on the broker ------------------------------------------------------------------------------

def broker_retention(settings: Settings, topic: str) -> dict[str, tuple[str, ConfigSource]]:
    config = topic_config(AdminClient(settings.kafka_config("admin")), topic)
    return {key: (config[key].value, ConfigSource(config[key].source)) for key in RETENTION_KEYS}


def set_on_topic(retention: Retention) -> dict[str, tuple[str, ConfigSource]]:
    return {key: (value, ConfigSource.DYNAMIC_TOPIC_CONFIG) for key, value in retention.config().items()}


@pytest.mark.stack
def test_up_set_the_retention_of_env_on_the_ticks_and_dead_letter_topics(stack: StackHandle) -> None:
    """Set on the topic itself (not the broker's default, which 168 h would equal): retention.bytes and the
    segments have no default of that kind at all."""
    env = stack.settings.env
    ticks, dlq = broker_retention(stack.settings, env["TICKS_TOPIC"]), broker_retention(stack.settings,
                                                                                         env["TICKS_DLQ_TOPIC"])
    assert ticks["retention.ms"] == (str(int(env["TICKS_RETENTION_HOURS"]) * HOUR_MS),
                                     ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert ticks["retention.bytes"] == (env["TICKS_RETENTION_BYTES"], ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert dlq["retention.ms"] == (str(int(env["TICKS_DLQ_RETENTION_HOURS"]) * HOUR_MS),
                                   ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert dlq["retention.bytes"] == (env["TICKS_DLQ_RETENTION_BYTES"], ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert [ticks, dlq] == [set_on_topic(r) for r in retentions(stack.settings)]


@pytest.fixture
def own_topics(stack: StackHandle) -> Iterator[Settings]:
    """Settings whose ticks and dead-letter topics are the test's own (deleted afterwards, ledger too)."""
    name = f"test.retention.{uuid.uuid4().hex[:8]}"
    settings = settings_with(stack.settings, TICKS_TOPIC=name, TICKS_DLQ_TOPIC=f"{name}.dlq")
    yield settings
    admin = AdminClient(stack.settings.kafka_config("admin"))
    existing = set(admin.list_topics(timeout=10).topics)
    mine = [t for t in (name, f"{name}.dlq", ledger_topic(settings)) if t in existing]
    if mine:
        for future in admin.delete_topics(mine).values():
            future.result(30)


@pytest.mark.stack
def test_setup_alters_the_retention_of_an_existing_topic_when_env_changes(own_topics: Settings) -> None:
    """A topic that exists without any retention of its own (made before this change, or by hand) gets it from
    the next setup; a changed setting changes it again; an unchanged one changes nothing."""
    ticks = own_topics["TICKS_TOPIC"]
    admin = AdminClient(own_topics.kafka_config("admin"))
    admin.create_topics([NewTopic(ticks, num_partitions=3, replication_factor=1)])[ticks].result(30)
    assert broker_retention(own_topics, ticks)["retention.bytes"] == ("-1", ConfigSource.DEFAULT_CONFIG)

    first = settings_with(own_topics, TICKS_RETENTION_HOURS="5", TICKS_RETENTION_BYTES=str(3 * MIB))
    ensure_kafka(first)
    assert broker_retention(first, ticks) == set_on_topic(Retention(ticks, 5, 3 * MIB))

    changed = settings_with(first, TICKS_RETENTION_HOURS="7", TICKS_RETENTION_BYTES=str(20 * MIB),
                            TICKS_DLQ_RETENTION_HOURS="2")
    lines = ensure_kafka(changed)
    assert broker_retention(changed, ticks) == set_on_topic(Retention(ticks, 7, 20 * MIB))
    assert broker_retention(changed, changed["TICKS_DLQ_TOPIC"])["retention.ms"] == (
        str(2 * HOUR_MS), ConfigSource.DYNAMIC_TOPIC_CONFIG)
    said = next(line for line in lines if line.startswith(f"kafka: {ticks} keeps"))
    assert f"retention.ms {5 * HOUR_MS} -> {7 * HOUR_MS}" in said and f"retention.bytes {3 * MIB} -> " in said

    again = ensure_kafka(changed)
    assert not [line for line in again if "(set " in line], again


@pytest.mark.stack
def test_up_again_with_a_changed_env_changes_the_running_ticks_topic(stack: StackHandle) -> None:
    """What a user does: edit .env (here: the environment, which wins over it) and run `up` on the running stack."""
    ticks = stack.settings["TICKS_TOPIC"]
    hours, size_ = int(stack.settings["TICKS_RETENTION_HOURS"]) + 1, int(stack.settings["TICKS_RETENTION_BYTES"]) + MIB
    env = {**stack.env(), "TICKS_RETENTION_HOURS": str(hours), "TICKS_RETENTION_BYTES": str(size_)}
    try:
        result = run_stack_cli("up", "--no-fetch", "--no-producer", env=env, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert broker_retention(stack.settings, ticks) == set_on_topic(Retention(ticks, hours, size_))
    finally:
        ensure_kafka(stack.settings)  # the session's stack as .env has it, for the tests after this one
    assert broker_retention(stack.settings, ticks) == set_on_topic(retentions(stack.settings)[0])


@pytest.mark.stack
def test_setup_waits_for_a_topic_the_broker_does_not_know_yet(own_topics: Settings) -> None:
    """Right after creating a topic the broker may answer "unknown topic" (seen under load, when setup sets the
    retention of the topics it has just created): setup asks again until the timeout, then gives up."""
    topic = own_topics["TICKS_TOPIC"]
    admin = AdminClient(own_topics.kafka_config("admin"))
    started = time.monotonic()
    with pytest.raises(KafkaException, match="UNKNOWN_TOPIC_OR_PART"):
        created_topic_config(admin, topic, timeout=3)
    assert time.monotonic() - started >= 3

    later = threading.Timer(2.0, lambda: admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30))
    later.start()
    try:
        assert created_topic_config(admin, topic, timeout=30)["retention.bytes"].value == "-1"
    finally:
        later.join()


# -- status ---------------------------------------------------------------------------------------------

@dataclass
class DiskStatus:
    code: int
    lines: dict[str, str]  # `disk <what>: <text>` -> what: text
    warnings: list[str]
    stdout: str


def disk_status(stack: StackHandle, **env: str) -> DiskStatus:
    result = run_stack_cli("status", env={**stack.env(), **env}, timeout=120)
    lines = {m["what"]: m["text"] for m in re.finditer(r"(?m)^disk (?P<what>\w+):\s+(?P<text>.*)$", result.stdout)}
    warnings = re.findall(r"(?m)^WARNING: .*$", result.stdout)
    return DiskStatus(result.returncode, lines, warnings, result.stdout + result.stderr)


def log_bytes(log_dir: Path, topic: str) -> int:
    return sum(f.stat().st_size for d in log_dir.glob(f"{topic}-*") if re.fullmatch(rf"{re.escape(topic)}-\d+", d.name)
               for f in d.glob("*.log"))


def assert_free_line(text: str, directory: Path) -> None:
    match = FREE_LINE.match(text)
    assert match, text
    assert Path(match["path"]) == directory
    usage = shutil.disk_usage(directory)
    assert abs(float(match["percent"]) - 100 * usage.free / usage.total) < 1.0, (text, usage)
    assert abs(size(match["total"]) - usage.total) <= 0.01 * usage.total, (text, usage)


@pytest.mark.stack
def test_status_shows_the_database_size_the_topic_on_disk_and_the_free_space_under_both(stack: StackHandle) -> None:
    symbol = new_symbol("DISK")
    TickProducer(stack).send(tick(symbol, n) for n in range(200))
    wait_for_rows(stack, [symbol], 200)
    settings, ticks = stack.settings, stack.settings["TICKS_TOPIC"]
    kafka_logs, postgres_data = Kafka(settings).log_dir, Postgres(settings).data_dir
    def partitions_now() -> tuple[int, str]:
        return query(stack, "SELECT count(*), to_char(max(to_time) AT TIME ZONE 'UTC' - interval '1 day',"
                            " 'YYYY-MM-DD') FROM raw_tick_partitions")[0]

    before = partitions_now()[0]
    seen = disk_status(stack)

    database = re.fullmatch(rf"{re.escape(settings['POSTGRES_DB'])} (?P<size>{SIZE}) \(pg_database_size\); raw ticks"
                            rf" in (?P<partitions>\d+) partitions \((?P<first>[\d-]+) \.\. (?P<last>[\d-]+)\),"
                            rf" kept for ever \(RAW_TICKS_RETENTION_DAYS=0\); (?P<dropped>\d+) days dropped",
                            seen.lines.get("database", ""))
    assert database, seen.stdout
    real = query(stack, "SELECT pg_database_size(current_database())")[0][0]
    assert abs(size(database["size"]) - real) <= 0.1 * real, (database["size"], real)
    after, last_day = partitions_now()
    # The tick maintainer may make a partition meanwhile (a quiet day of other tests' ticks): bounds, not a value.
    assert before <= int(database["partitions"]) <= after and database["last"] == last_day, (before, after)

    topic = re.match(rf"{re.escape(ticks)} (?P<disk>{SIZE}) on disk in 3 partitions; segments (?P<logs>{SIZE}) = "
                     rf"(?P<percent>[\d.]+)% of retention.bytes 3 x (?P<cap>{SIZE}) \(retention.ms (?P<hours>\d+) h\)",
                     seen.lines.get("topic", ""))
    assert topic, seen.stdout
    on_disk = log_bytes(kafka_logs, ticks)
    assert on_disk > 200 * 20  # the ticks just sent are in there
    assert abs(size(topic["logs"]) - on_disk) <= 0.05 * on_disk + 1024, (topic["logs"], on_disk)
    assert size(topic["disk"]) >= on_disk
    assert size(topic["cap"]) == int(settings["TICKS_RETENTION_BYTES"])
    assert int(topic["hours"]) == int(settings["TICKS_RETENTION_HOURS"])

    assert_free_line(seen.lines.get("postgres", ""), postgres_data)
    assert_free_line(seen.lines.get("kafka", ""), kafka_logs)
    threshold = float(settings["DISK_WARN_FREE_PERCENT"])
    if all(100 * shutil.disk_usage(d).free / shutil.disk_usage(d).total >= threshold
           for d in (postgres_data, kafka_logs)):
        assert seen.warnings == [], seen.stdout


@pytest.mark.stack
def test_status_warns_and_exits_1_when_free_space_is_below_the_threshold(stack: StackHandle) -> None:
    forced = disk_status(stack, DISK_WARN_FREE_PERCENT="100")
    for directory in (Postgres(stack.settings).data_dir, Kafka(stack.settings).log_dir):
        assert any(f"of the disk is free under {directory} " in w and "DISK_WARN_FREE_PERCENT=100" in w
                   for w in forced.warnings), forced.stdout
    assert forced.code == 1, forced.stdout
    # the same stack, nothing else changed: no warning without the threshold, and status exits 0 again
    calm = poll_until(lambda: disk_status(stack, DISK_WARN_FREE_PERCENT="0"), lambda s: s.code == 0, 60)
    assert calm.warnings == [] and calm.code == 0, calm.stdout


@pytest.mark.stack
def test_status_warns_when_a_partition_of_the_ticks_nears_its_retention_bytes(stack: StackHandle) -> None:
    """A ticks topic of the test's own with a small retention.bytes, filled to ~90% of it."""
    topic = f"test.nearly-full.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(stack.settings.kafka_config("admin"))
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
                                  config={"retention.bytes": str(MIB)})])[topic].result(30)
    try:
        producer = Producer({**stack.settings.kafka_config("admin"), "compression.type": "none"})
        for _ in range(95):
            producer.produce(topic, key=b"k", value=os.urandom(10_000))  # incompressible: 950 kB on disk
        assert producer.flush(60) == 0
        logs = Kafka(stack.settings).log_dir
        wait_until(lambda: log_bytes(logs, topic) > 0.85 * MIB, 30, f"{topic} on disk")

        full = disk_status(stack, TICKS_TOPIC=topic, DISK_WARN_FREE_PERCENT="0")
        assert any(w.startswith(f"WARNING: {topic} partition 0 holds ") and "TICKS_RETENTION_BYTES" in w
                   for w in full.warnings), full.stdout
        assert full.code == 1, full.stdout

        apply_retention(admin, Retention(topic, 1, 100 * MIB))  # the limit raised, as setup would
        roomy = disk_status(stack, TICKS_TOPIC=topic, DISK_WARN_FREE_PERCENT="0")
        assert roomy.warnings == [], roomy.stdout
    finally:
        admin.delete_topics([topic])[topic].result(30)

