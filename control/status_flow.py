"""Whether data flows through each stage of a running stack: the `flow` lines of `scripts/stack.sh status`.

Each stage is measured where it keeps its own numbers:

  producer   its health file (python -m producer --health-file): ticks received and produced in about the
             last minute, the source, how long ago it last reported
  connector  records behind: the sink's consumer group (`connect-<connector name>`, Kafka Connect's naming)
             committed offsets against the topic's end offsets
  postgres   rows that landed in crypto_prices in the last minute (its landed_at column), the server's version
  candles    the newest 1-minute candle

One line per stage, `flow <stage>: <numbers> ...`; a stage that cannot be measured says why instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from core.files import read_json
from core.settings import Settings

FRESH_S = 60.0  # a producer report older than this says nothing about the last minute
NO_TICKS_HINT = "no ticks: `scripts/stack.sh logs producer` says why"
YAHOO_HINT = " (without internet Yahoo is unreachable: set PRODUCER_SOURCE=replay in .env to replay a recording)"


@dataclass(frozen=True)
class ProducerFlow:
    received: int  # in about the last minute
    produced: int
    window_s: float
    source: str
    age_s: float  # since the producer last wrote its health file
    totals: tuple[int, int]  # received, produced since it started


def read_producer(health_file: Path, now: float | None = None) -> ProducerFlow | None:
    if (health := read_json(health_file)) is None:
        return None
    age = (time.time() if now is None else now) - float(health.get("time", 0))
    recent = health.get("last_minute") or {}
    fresh = age <= FRESH_S
    return ProducerFlow(received=int(recent.get("received", 0)) if fresh else 0,
                        produced=int(recent.get("produced", 0)) if fresh else 0,
                        window_s=float(recent.get("seconds", 0)), source=str(health.get("source", "?")),
                        age_s=max(age, 0.0), totals=(int(health.get("received", 0)), int(health.get("produced", 0))))


def producer_line(health_file: Path, running: bool) -> str:
    flow = read_producer(health_file)
    if flow is None:
        return ("producer:  not started (`scripts/stack.sh up` starts it unless --no-producer)" if not running
                else f"producer:  running, no report yet in {health_file}")
    state = "running" if running else "exited"
    line = (f"producer:  received {flow.received}, produced {flow.produced} ticks in the last minute "
            f"(source {flow.source}, {state}; reported {flow.age_s:.0f}s ago; since start received "
            f"{flow.totals[0]}, produced {flow.totals[1]})")
    if running and flow.received == 0:
        line += f"; {NO_TICKS_HINT}" + (YAHOO_HINT if flow.source in ("stream", "poll") else "")
    return line


@dataclass(frozen=True)
class Lag:
    records: int
    partitions: int
    committed: int  # partitions with a committed offset


def connector_lag(kafka_config: dict[str, str], group: str, topic: str, timeout: float = 10.0) -> Lag:
    """Records of `topic` the consumer group has not committed yet; a partition without a committed offset
    counts from its earliest offset."""
    admin = AdminClient({**kafka_config, "log_level": 0})
    metadata = admin.list_topics(topic, timeout=timeout).topics[topic]
    if metadata.error is not None:
        raise KafkaException(metadata.error)
    partitions = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
    request = [ConsumerGroupTopicPartitions(group, partitions)]
    committed = {tp.partition: tp.offset
                 for tp in admin.list_consumer_group_offsets(request)[group].result(timeout).topic_partitions}

    def offsets(spec: OffsetSpec) -> dict[int, int]:
        futures = admin.list_offsets({TopicPartition(topic, p.partition): spec for p in partitions},
                                     request_timeout=timeout)
        return {tp.partition: future.result(timeout).offset for tp, future in futures.items()}

    end, start = offsets(OffsetSpec.latest()), offsets(OffsetSpec.earliest())
    behind = sum(max(end[p] - (committed[p] if committed.get(p, -1) >= 0 else start[p]), 0) for p in end)
    return Lag(behind, len(end), sum(1 for p in end if committed.get(p, -1) >= 0))


def connector_line(settings: Settings, connector: str) -> str:
    group, topic = f"connect-{connector}", settings["TICKS_TOPIC"]
    try:
        lag = connector_lag(settings.kafka_config(), group, topic)
    except Exception as exc:  # noqa: BLE001 - shown instead of the number
        return f"connector: lag unknown ({type(exc).__name__}: {exc})"
    return (f"connector: {lag.records} records behind on {topic} (consumer group {group}, "
            f"{lag.committed} of {lag.partitions} partitions committed)")


def database_lines(settings: Settings) -> list[str]:
    try:
        with psycopg.connect(settings.pg_dsn(), connect_timeout=5) as conn:
            landed = conn.execute("SELECT count(*) FROM crypto_prices "
                                  "WHERE landed_at >= now() - interval '1 minute'").fetchone()[0]
            version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
            newest = conn.execute(
                "SELECT symbol, bucket AT TIME ZONE 'UTC', close, extract(epoch FROM now() - bucket) "
                "FROM view_crypto_candles WHERE bucket = (SELECT max(bucket) FROM candle_rollup "
                "WHERE resolution = '1m') ORDER BY symbol LIMIT 1").fetchone()
    except psycopg.Error as exc:
        reason = f"unknown ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})"
        return [f"postgres:  rows landed {reason}", f"candles:   newest candle {reason}"]
    candle = ("candles:   none yet" if newest is None else
              f"candles:   newest 1m candle {newest[0]} {newest[1]:%Y-%m-%d %H:%M} UTC (close {newest[2]:g}), "
              f"{_age(float(newest[3]))} old")
    return [f"postgres:  {landed} rows landed in crypto_prices in the last minute (PostgreSQL {version})", candle]


def _age(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def flow_lines(settings: Settings, connector: str, producer_health: Path, producer_running: bool) -> list[str]:
    """Every stage's line, prefixed `flow `."""
    lines = [producer_line(producer_health, producer_running), connector_line(settings, connector),
             *database_lines(settings)]
    return [f"flow {line}" for line in lines]
