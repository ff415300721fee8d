"""Kafka's security set-up, the same in both forms, idempotent (every `up` runs it; an existing cluster adopts it):
the SCRAM-SHA-512 credential of every principal from the secrets, the ACLs of each, then the topics the
pipeline needs (the broker creates none by itself: auto.create.topics.enable=false) and the retention of the
ticks and dead-letter topics from .env (TICKS_RETENTION_*, TICKS_DLQ_RETENTION_*: docs/kafka-retention.md), set
when a topic is created and altered on an existing one whose settings differ.

It connects as the super user `admin` with SASL/PLAIN, which the broker checks against its own config
(stack/config/kafka-broker.properties): SCRAM credentials live in the cluster's metadata, so before this step
none exists, and an existing data directory never had any. Natively stack/services.py runs it once the broker
answers; docker compose's one-shot `kafka-setup` runs `python -m control kafka-setup` before Connect starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from core.settings import KAFKA_BOOTSTRAP_MECHANISM, KAFKA_PRINCIPALS, PROJECT_ROOT, Settings

WORKER_FILE = PROJECT_ROOT / "connect" / "worker.properties"
SCRAM_ITERATIONS = 8192
TICKS_PARTITIONS = 3
Op = AclOperation
# Connect's sink consumer groups are connect-<connector name> (one per sink connector).
CONNECT_SINK_GROUP_PREFIX = "connect-"
# control/dlq.py reads with throw-away groups named dlq-reader-<uuid>.
DLQ_GROUP_PREFIX = "dlq-"
HOUR_MS = 3_600_000
MIB = 1 << 20
# Kafka 4 refuses a segment.bytes below 1 MiB, so a smaller retention.bytes could not bound the disk.
MIN_RETENTION_BYTES = MIB
# A segment is a tenth of the retention (time and size): the broker deletes whole segments only, never the one
# it writes to, so this keeps a partition within retention.bytes + a tenth on disk, and a record at most a tenth
# of retention.ms longer than retention.ms.
SEGMENTS_PER_RETENTION = 10
MAX_SEGMENT_BYTES = 1 << 30  # Kafka's default segment.bytes, and below its limit (2^31 - 1)
# The .env settings of each topic's retention: (topic name setting, hours setting, bytes per partition setting).
# Compose passes each to its one-shot kafka-setup (docker-compose.yml).
RETENTION_SETTINGS = (("TICKS_TOPIC", "TICKS_RETENTION_HOURS", "TICKS_RETENTION_BYTES"),
                      ("TICKS_DLQ_TOPIC", "TICKS_DLQ_RETENTION_HOURS", "TICKS_DLQ_RETENTION_BYTES"))


class KafkaSetupError(RuntimeError):
    """The broker refused or did not answer a set-up step; the message says which."""


@dataclass(frozen=True)
class Grant:
    principal: str
    resource: ResourceType
    name: str
    operations: tuple[AclOperation, ...]
    pattern: ResourcePatternType = ResourcePatternType.LITERAL


@dataclass(frozen=True)
class Retention:
    """How long and how much of a topic the broker keeps; whichever limit a partition reaches first, the broker
    deletes its oldest segment."""

    topic: str
    hours: int
    bytes_per_partition: int

    @property
    def ms(self) -> int:
        return self.hours * HOUR_MS

    def config(self) -> dict[str, str]:
        """The topic settings that carry it (segments: SEGMENTS_PER_RETENTION)."""
        segment_bytes = min(max(self.bytes_per_partition // SEGMENTS_PER_RETENTION, MIB), MAX_SEGMENT_BYTES)
        return {"retention.ms": str(self.ms), "retention.bytes": str(self.bytes_per_partition),
                "segment.ms": str(self.ms // SEGMENTS_PER_RETENTION), "segment.bytes": str(segment_bytes)}

    def describe(self) -> str:
        return (f"{self.topic} keeps {self.hours} h or {self.bytes_per_partition / MIB:,.0f} MiB per partition, "
                "whichever a partition reaches first")


def retentions(settings: Settings) -> list[Retention]:
    """The ticks' and the dead letters' retention from the settings (RETENTION_SETTINGS)."""
    return [Retention(settings[topic], settings.integer(hours), settings.integer(size, MIN_RETENTION_BYTES))
            for topic, hours, size in RETENTION_SETTINGS]


def ledger_topic(settings: Settings) -> str:
    """control/dlq.py's record of re-driven dead letters."""
    return f"{settings['TICKS_DLQ_TOPIC']}.redriven"


def worker_settings(path: Path = WORKER_FILE) -> dict[str, str]:
    """group.id and the internal topics' names from connect/worker.properties (literal values there)."""
    values = dict(line.split("=", 1) for line in path.read_text().splitlines()
                  if "=" in line and not line.lstrip().startswith(("#", "!")))
    return {key: values[key] for key in ("group.id", "config.storage.topic", "offset.storage.topic",
                                         "status.storage.topic")}


def grants(settings: Settings) -> list[Grant]:
    """What each principal may do; admin is a super user (super.users in the broker config) and needs none.
    Idempotent producers need no IdempotentWrite on the cluster: WRITE on a topic suffices (KIP-679)."""
    ticks, dlq, ledger = settings["TICKS_TOPIC"], settings["TICKS_DLQ_TOPIC"], ledger_topic(settings)
    worker = worker_settings()
    topic, group = ResourceType.TOPIC, ResourceType.GROUP
    internal = (Op.CREATE, Op.READ, Op.WRITE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS)  # Connect creates its own
    return [
        Grant("producer", topic, ticks, (Op.WRITE, Op.DESCRIBE)),
        Grant("connect", topic, ticks, (Op.READ, Op.DESCRIBE)),
        Grant("connect", topic, dlq, (Op.WRITE, Op.DESCRIBE)),
        *(Grant("connect", topic, worker[key], internal)
          for key in ("config.storage.topic", "offset.storage.topic", "status.storage.topic")),
        Grant("connect", group, worker["group.id"], (Op.READ, Op.DESCRIBE)),
        # DELETE: resetting a sink connector's offsets (DELETE /connectors/NAME/offsets) deletes its group.
        Grant("connect", group, CONNECT_SINK_GROUP_PREFIX, (Op.READ, Op.DESCRIBE, Op.DELETE),
              ResourcePatternType.PREFIXED),
        Grant("dlq", topic, dlq, (Op.READ, Op.DESCRIBE)),
        Grant("dlq", topic, ticks, (Op.WRITE, Op.DESCRIBE)),
        Grant("dlq", topic, ledger, (Op.CREATE, Op.READ, Op.WRITE, Op.DESCRIBE)),
        Grant("dlq", group, DLQ_GROUP_PREFIX, (Op.READ, Op.DESCRIBE), ResourcePatternType.PREFIXED),
    ]


def topics(settings: Settings) -> list[NewTopic]:
    """The topics setup creates when missing (of existing ones only the retention is brought in line:
    apply_retention). Connect creates its internal topics itself (compacted, with its own partition counts),
    under its ACLs."""
    ticks, dlq = retentions(settings)
    return [
        NewTopic(ticks.topic, num_partitions=TICKS_PARTITIONS, replication_factor=1, config=ticks.config()),
        NewTopic(dlq.topic, num_partitions=1, replication_factor=1, config=dlq.config()),
        NewTopic(ledger_topic(settings), num_partitions=1, replication_factor=1, config={"cleanup.policy": "compact"}),
    ]


def admin_client(settings: Settings) -> AdminClient:
    """The super user over SASL/PLAIN: works before any SCRAM credential exists."""
    return AdminClient({**settings.kafka_config("admin", mechanism=KAFKA_BOOTSTRAP_MECHANISM), "log_level": 0})


def ensure_kafka(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Credentials, ACLs, topics and their retention; returns one line per step, to print."""
    for secret in KAFKA_PRINCIPALS.values():
        if any(c in settings[secret] for c in '"\\\r\n'):
            raise KafkaSetupError(f"{secret} holds a quote, backslash or line break, which the JAAS settings of the "
                                  "broker and of Connect cannot carry: choose another one")
    wanted_retention = retentions(settings)  # a bad setting is an error before anything is changed
    admin = admin_client(settings)
    try:
        _wait_until_answering(admin, timeout * 4)
        _wait(admin.alter_user_scram_credentials([
            UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
                                         settings[secret].encode())
            for user, secret in KAFKA_PRINCIPALS.items()
        ], request_timeout=timeout), timeout, "setting the SCRAM credentials")
        done = [f"kafka: SCRAM-SHA-512 credentials of {', '.join(KAFKA_PRINCIPALS)} set from the secrets"]
        bindings = [AclBinding(g.resource, g.name, g.pattern, f"User:{g.principal}", "*", op, AclPermissionType.ALLOW)
                    for g in grants(settings) for op in g.operations]
        _wait(admin.create_acls(bindings, request_timeout=timeout), timeout, "creating the ACLs")
        done.append(f"kafka: {len(bindings)} ACLs in place")
        existing = set(admin.list_topics(timeout=timeout).topics)
        missing = [t for t in topics(settings) if t.topic not in existing]
        if missing:
            _wait(admin.create_topics(missing, request_timeout=timeout), timeout, "creating the topics",
                  tolerate="TOPIC_ALREADY_EXISTS")
        done.append(f"kafka: topics {', '.join(t.topic for t in topics(settings))} present"
                    + (f" (created {', '.join(t.topic for t in missing)})" if missing else ""))
        done.extend(f"kafka: {apply_retention(admin, retention, timeout)}" for retention in wanted_retention)
    except KafkaException as exc:
        raise KafkaSetupError(f"Kafka set-up at {settings.bootstrap_servers} as admin failed: {exc}") from exc
    return done


def topic_config(admin: AdminClient, topic: str, timeout: float = 30.0) -> dict[str, ConfigEntry]:
    """The topic's settings as the broker has them (value and source of each)."""
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout)


def created_topic_config(admin: AdminClient, topic: str, timeout: float = 30.0) -> dict[str, ConfigEntry]:
    """topic_config of a topic that may have been created a moment ago: the broker answers "unknown topic"
    until its metadata has the creation (seen under load), so that answer is retried until the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return topic_config(admin, topic, timeout)
        except KafkaException as exc:
            unknown = isinstance(exc.args[0], KafkaError) and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            if not unknown or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def apply_retention(admin: AdminClient, retention: Retention, timeout: float = 30.0) -> str:
    """Sets on the topic each retention setting that is not set on it with the wanted value (one that only
    equals the broker's default is set too: it would follow a changed default); returns what it did."""
    current = created_topic_config(admin, retention.topic, timeout)
    changed = {key: value for key, value in retention.config().items()
               if key not in current or current[key].value != value
               or ConfigSource(current[key].source) != ConfigSource.DYNAMIC_TOPIC_CONFIG}  # an int, described
    if not changed:
        return retention.describe()
    resource = ConfigResource(ResourceType.TOPIC, retention.topic, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET) for key, value in changed.items()])
    _wait(admin.incremental_alter_configs([resource], request_timeout=timeout), timeout,
          f"setting the retention of {retention.topic}")
    was = ", ".join(f"{key} {current[key].value if key in current else '?'} -> {value}"
                    for key, value in changed.items())
    return f"{retention.describe()} (set {was})"


def _wait_until_answering(admin: AdminClient, timeout: float) -> None:
    """compose's healthcheck sees the listener open, which can be before the broker answers the admin."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=5)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def writable_topic(settings: Settings, topic: str, partitions: int = TICKS_PARTITIONS,
                   principal: str = "producer") -> str:
    """A topic of its own for a test or a benchmark, created as the admin (the broker creates none by itself),
    which `principal` may write (and describe): the principal `producer` may write only the ticks otherwise."""
    admin = admin_client(settings)
    _wait(admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]), 30,
          f"creating {topic}", tolerate="TOPIC_ALREADY_EXISTS")
    _wait(admin.create_acls([
        AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, f"User:{principal}", "*", op,
                   AclPermissionType.ALLOW) for op in (Op.WRITE, Op.DESCRIBE)
    ]), 30, f"granting {principal} WRITE on {topic}")
    return topic


def _wait(futures: dict | list, timeout: float, what: str, tolerate: str | None = None) -> None:
    for future in (futures.values() if isinstance(futures, dict) else futures):
        try:
            future.result(timeout)
        except KafkaException as exc:
            if tolerate and tolerate in str(exc):
                continue
            raise KafkaSetupError(f"{what} failed: {exc}") from exc
