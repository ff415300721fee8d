"""The dead-letter topic (TICKS_DLQ_TOPIC): see what is in it, and re-drive records once their cause is fixed.

  show      count the dead letters by reason (the tick contract's reason, or the stage and exception
            for records that could not even be read), with samples: key, reason, where the record
            came from (topic/partition/offset) and when
  redrive   produce selected dead letters again, byte for byte, to TICKS_TOPIC, so they go through the
            whole pipeline (contract included) once more

What redrive sends, and what it refuses:
- only dead letters whose origin (header __connect.errors.topic) is TICKS_TOPIC; others are skipped and counted
- only retryable ones: a contract violation other than future_time (bad_price, bad_volume, bad_symbol,
  implausible_time, unstorable_value, malformed) or a converter failure of a value that is not even framed
  Avro would fail again byte for byte, so it is skipped unless --force; retryable are future_time (the
  tick is no longer too far ahead), converter failures of framed Avro (its schema id may exist now) and
  failures at any other stage (the database, an outage: the cause was outside the record)
- never one the ledger already holds: every re-driven dead letter is recorded in a compacted ledger topic
  (<TICKS_DLQ_TOPIC>.redriven, key = the dead-letter topic's id : partition : offset, so a dead-letter
  topic deleted and created again is a new one) only AFTER Kafka acknowledged the re-driven record, and
  the ledger write is acknowledged too; a record that is not acknowledged within --timeout is reported
  and left out of the ledger, so the next run sends it (at least once: a record whose acknowledgement
  was lost is sent again, and lands once: crypto_prices is keyed by symbol, event time and price)
- a re-driven record that fails again comes back to the dead-letter topic carrying the header
  cryptopipe.redriven-from; such records are left alone unless --include-failed-redrives, so nothing loops

It prints a count per outcome and per skip reason, and exits 1 when anything it sent was not both
delivered and recorded (run it again), 2 on a usage error.

    scripts/dlq.sh show [--symbol S] [--reason R] [--samples N]
    scripts/dlq.sh redrive (--reason R ... | --all) [--symbol S] [--dry-run] [--force]
                           [--include-failed-redrives] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from control.kafka_setup import ledger_topic
from core.settings import Settings, SettingsError

CONTRACT_PREFIX = "tick contract violated: "
REDRIVEN_FROM = "cryptopipe.redriven-from"
# What a broker answers for a while after it (re)started.
TRANSIENT = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError._TRANSPORT,
                       KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN})
# Contract reasons that depend on when the tick is checked, not on its bytes.
RETRYABLE_CONTRACT_REASONS = frozenset({"future_time"})


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int

    def header(self, name: str) -> str:
        for key, value in self.headers:
            if key == name:
                return (value or b"").decode(errors="replace")
        return ""

    @property
    def coordinates(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def reason(self) -> str:
        """The contract's reason (bad_price, future_time, ...) or, for a record that could not be
        read or written, the stage and the exception class (e.g. VALUE_CONVERTER:DataException)."""
        message = self.header("__connect.errors.exception.message")
        if message.startswith(CONTRACT_PREFIX):
            return message[len(CONTRACT_PREFIX):].split(":", 1)[0]
        exception = self.header("__connect.errors.exception.class.name").rsplit(".", 1)[-1]
        return f"{self.header('__connect.errors.stage') or 'UNKNOWN'}:{exception or 'unknown'}"

    @property
    def origin(self) -> tuple[str, int, int]:
        return (self.header("__connect.errors.topic"), int(self.header("__connect.errors.partition") or -1),
                int(self.header("__connect.errors.offset") or -1))

    @property
    def symbol(self) -> str:
        return (self.key or b"").decode(errors="replace")


def read_all(settings: Settings, topic: str) -> Iterator[DeadLetter]:
    """Every record of `topic` from the beginning to its end as it is now (no consumer group involved)."""
    consumer = Consumer({**settings.kafka_config("dlq"), "group.id": f"dlq-reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return
        starts, ends = {}, {}
        for partition in metadata.partitions:
            low, high = _watermarks(consumer, TopicPartition(topic, partition))
            if high > low:
                starts[partition], ends[partition] = low, high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
        while ends:
            message = consumer.poll(5.0)
            if message is None:
                raise TimeoutError(f"no record from {topic} within 5 s while {len(ends)} partition(s) were unread")
            if message.error():
                raise KafkaException(message.error())
            yield dead_letter(message)
            if message.offset() + 1 >= ends.get(message.partition(), 0):
                ends.pop(message.partition(), None)
    finally:
        consumer.close()


def _watermarks(consumer: Consumer, partition: TopicPartition, timeout: float = 30.0) -> tuple[int, int]:
    """Low and high watermark; a broker that just started may not lead its partitions yet: retried."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=10)
        except KafkaException as exc:
            if exc.args[0].code() not in TRANSIENT or time.monotonic() > deadline:
                raise
            time.sleep(1)


def dead_letter(message: Message) -> DeadLetter:
    return DeadLetter(message.partition(), message.offset(), message.key(), message.value(),
                      list(message.headers() or []), message.timestamp()[1])


def select(letters: Iterator[DeadLetter], symbol: str | None, reasons: set[str] | None) -> Iterator[DeadLetter]:
    for letter in letters:
        if symbol is not None and letter.symbol != symbol:
            continue
        if reasons is not None and letter.reason not in reasons:
            continue
        yield letter


def show(settings: Settings, symbol: str | None, reasons: set[str] | None, samples: int) -> int:
    topic = settings["TICKS_DLQ_TOPIC"]
    counts: Counter[str] = Counter()
    examples: dict[str, list[DeadLetter]] = {}
    for letter in select(read_all(settings, topic), symbol, reasons):
        counts[letter.reason] += 1
        if len(examples.setdefault(letter.reason, [])) < samples:
            examples[letter.reason].append(letter)
    if not counts:
        print(f"{topic}: no dead letters" + (" matching the selection" if symbol or reasons else ""))
        return 0
    print(f"{topic}: {sum(counts.values())} dead letter(s)")
    print(f"{'count':>7}  reason")
    for reason, count in counts.most_common():
        print(f"{count:>7}  {reason}")
    for reason, letters in examples.items():
        print(f"\n{reason}:")
        for letter in letters:
            origin_topic, origin_partition, origin_offset = letter.origin
            when = datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC).isoformat(timespec="seconds")
            detail = letter.header("__connect.errors.exception.message")[:160]
            print(f"  key={letter.symbol!r} from {origin_topic}[{origin_partition}]@{origin_offset} at {when}"
                  f" (dlq {letter.coordinates}){': ' + detail if detail else ''}")
    return 0


def ensure_ledger(settings: Settings) -> str:
    topic = ledger_topic(settings)
    admin = AdminClient(settings.kafka_config("dlq"))
    if topic not in admin.list_topics(timeout=10).topics:
        futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
                                                config={"cleanup.policy": "compact"})])
        for future in futures.values():
            try:
                future.result(30)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    return topic


def topic_id(settings: Settings, topic: str) -> str | None:
    """The topic's id (a uuid the broker gives each topic when it is created): a topic deleted and created
    again under the same name has another one, so its offsets 0, 1, ... are other records. None when the
    topic does not exist."""
    admin = AdminClient(settings.kafka_config("dlq"))
    try:
        description = admin.describe_topics(TopicCollection([topic]))[topic].result(30)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return None
        raise
    return str(description.topic_id)


def retryable(letter: DeadLetter) -> tuple[bool, str]:
    """Whether re-driving this dead letter unchanged can succeed, and why not.

    Retryable: the tick contract's RETRYABLE_CONTRACT_REASONS (future_time: the tick was too far ahead
    when it arrived and is not any more); a converter failure of a Confluent-framed value (magic byte 0 and
    a schema id: the id may exist now, e.g. a registry restored or a schema registered after the record);
    a failure at any other stage (the sink's write, an outage): its cause was outside the record.
    Not retryable: every other contract violation (bad_price, bad_volume, bad_symbol, implausible_time,
    unstorable_value, malformed, and any reason this tool does not know yet), and a converter failure of a
    value without the framing (empty, not Avro): the same bytes fail the same way again. --force overrides."""
    message = letter.header("__connect.errors.exception.message")
    if message.startswith(CONTRACT_PREFIX):
        if letter.reason in RETRYABLE_CONTRACT_REASONS:
            return True, ""
        return False, f"contract violation {letter.reason}"
    value = letter.value
    if letter.header("__connect.errors.stage") == "VALUE_CONVERTER" and (value is None or len(value) < 5
                                                                         or value[0] != 0):
        return False, f"{letter.reason} of a value without Avro framing"
    return True, ""


@dataclass
class RedriveReport:
    """What happened to each selected dead letter: every one ends in exactly one outcome."""

    outcomes: Counter[str] = field(default_factory=Counter)
    redriven: Counter[str] = field(default_factory=Counter)  # by reason: delivered and recorded
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.outcomes[FAILED] + self.outcomes[UNRECORDED] + self.outcomes[NOT_SENT]


REDRIVEN = "re-driven (acknowledged by Kafka, recorded in the ledger)"
FAILED = "failed to deliver (not recorded: run redrive again)"
UNRECORDED = "delivered, but the ledger write failed (a rerun sends it again; it lands once)"
NOT_SENT = "not sent (the producer failed)"
WOULD = "would be re-driven (--dry-run)"


def redrive(settings: Settings, symbol: str | None, reasons: set[str] | None, dry_run: bool,
            include_failed_redrives: bool, force: bool = False, timeout: float = 30.0) -> int:
    """Re-drive the selected dead letters; 0 when every one that was sent was delivered and recorded."""
    dlq = settings["TICKS_DLQ_TOPIC"]
    origin = settings["TICKS_TOPIC"]
    dlq_id = topic_id(settings, dlq)
    if dlq_id is None:
        print(f"{dlq}: no such topic, nothing to re-drive")
        return 0
    ledger = ensure_ledger(settings)
    done = {(entry.key or b"").decode() for entry in read_all(settings, ledger)}
    report = RedriveReport()
    skipped: Counter[str] = Counter()
    producer = Producer({**settings.kafka_config("dlq"), "enable.idempotence": True,
                         "message.timeout.ms": int(timeout * 1000)})
    acknowledged: list[tuple[str, str, bytes]] = []  # (reason, ledger key, ledger value) awaiting the ledger write

    def delivery_report(reason: str, key: str) -> Callable[[KafkaError | None, Message], None]:
        def report_record(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                report.outcomes[FAILED] += 1
                report.errors.append(f"{key}: {err.str()}")
                return
            entry = {"dlq": dlq, "dlq_topic_id": dlq_id, "to": f"{msg.topic()}[{msg.partition()}]@{msg.offset()}",
                     "at": datetime.now(UTC).isoformat(timespec="seconds")}
            acknowledged.append((reason, key, json.dumps(entry).encode()))
        return report_record

    def ledger_report(reason: str, key: str) -> Callable[[KafkaError | None, Message], None]:
        def report_entry(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                report.outcomes[UNRECORDED] += 1
                report.errors.append(f"{key}: delivered, ledger write failed: {err.str()}")
                return
            report.outcomes[REDRIVEN] += 1
            report.redriven[reason] += 1
        return report_entry

    def record_acknowledged() -> None:
        while acknowledged:
            reason, key, value = acknowledged.pop(0)
            try:
                _produce(producer, ledger, key=key.encode(), value=value, on_delivery=ledger_report(reason, key))
            except KafkaException as exc:  # the producer failed for good: delivered, not recorded
                report.outcomes[UNRECORDED] += 1
                report.errors.append(f"{key}: delivered, ledger write refused: {exc}")

    producing = True
    letters = list(select(read_all(settings, dlq), symbol, reasons))  # all read before anything is sent
    for letter in letters:
        key = f"{dlq_id}:{letter.coordinates}"
        origin_topic = letter.origin[0]
        ok, why_not = retryable(letter)
        if key in done:
            skipped["already re-driven"] += 1
        elif letter.header(REDRIVEN_FROM) and not include_failed_redrives:
            skipped["failed again after a re-drive"] += 1
        elif origin_topic != origin:
            skipped[f"origin topic {origin_topic or '(none)'} is not {origin}"] += 1
        elif not ok and not force:
            skipped[f"not retryable ({why_not}; --force re-drives it)"] += 1
        elif dry_run:
            report.outcomes[WOULD] += 1
            report.redriven[letter.reason] += 1
        elif not producing:
            report.outcomes[NOT_SENT] += 1
        else:
            headers = [(k, v) for k, v in letter.headers
                       if not k.startswith("__connect.errors.") and k != REDRIVEN_FROM]
            try:
                _produce(producer, origin, key=letter.key, value=letter.value,
                         headers=[*headers, (REDRIVEN_FROM, f"{dlq}/{key}".encode())],
                         on_delivery=delivery_report(letter.reason, key))
            except KafkaException as exc:
                report.outcomes[NOT_SENT] += 1
                report.errors.append(f"producer failed: {exc}")
                producing = False
            producer.poll(0)
            record_acknowledged()
    while True:  # every record and ledger entry ends acknowledged or failed within message.timeout.ms
        record_acknowledged()
        if len(producer) == 0 and not acknowledged:
            break
        producer.flush(1.0)
    return print_report(report, skipped, dlq, dlq_id, dry_run)


def _produce(producer: Producer, topic: str, **kwargs: object) -> None:
    """produce(), waiting while the local queue is full."""
    while True:
        try:
            producer.produce(topic, **kwargs)
            return
        except BufferError:
            producer.poll(0.5)


def print_report(report: RedriveReport, skipped: Counter[str], dlq: str, dlq_id: str, dry_run: bool) -> int:
    verb = "would re-drive" if dry_run else "re-drove"
    print(f"{verb} {sum(report.redriven.values())} dead letter(s) of {dlq} (topic id {dlq_id})" +
          "".join(f"\n  {count:>6}  {reason}" for reason, count in report.redriven.most_common()))
    for why, count in skipped.items():
        print(f"skipped {count}: {why}")
    for outcome, count in report.outcomes.items():
        print(f"outcome {count}: {outcome}")
    for error in report.errors[:10]:
        print(f"  error: {error}", file=sys.stderr)
    if report.failed:
        print(f"redrive FAILED: {report.failed} dead letter(s) not re-driven for sure; the ledger holds only what "
              "Kafka acknowledged: run the same redrive again once Kafka is reachable", file=sys.stderr)
        return 1
    print("redrive done" + (" (dry run: nothing sent)" if dry_run
                            else ": everything sent was acknowledged and recorded"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/dlq.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("show", "count dead letters by reason, with samples"),
                            ("redrive", "produce selected dead letters to their topic again (once each)")):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--symbol", help="only records with this key (the tick's symbol)")
        command.add_argument("--reason", action="append", help="only this reason (repeatable), as `show` prints it")
    sub.choices["show"].add_argument("--samples", type=int, default=3, help="samples per reason (default 3)")
    redrive_parser = sub.choices["redrive"]
    redrive_parser.add_argument("--all", action="store_true", help="every reason (otherwise --reason is required)")
    redrive_parser.add_argument("--dry-run", action="store_true", help="count what would be re-driven, send nothing")
    redrive_parser.add_argument("--include-failed-redrives", action="store_true",
                                help="also re-drive records that already failed again after a re-drive")
    redrive_parser.add_argument("--force", action="store_true",
                                help="also re-drive reasons that are not retryable (contract violations)")
    redrive_parser.add_argument("--timeout", type=float, default=30.0,
                                help="seconds Kafka has to acknowledge each record (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.load()
    except SettingsError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    reasons = set(args.reason) if args.reason else None
    if args.command == "show":
        return show(settings, args.symbol, reasons, args.samples)
    if reasons is None and not args.all:
        parser.error("redrive needs --reason R (see `show`) or --all")
    return redrive(settings, args.symbol, reasons, args.dry_run, args.include_failed_redrives, args.force,
                   args.timeout)


if __name__ == "__main__":
    sys.exit(main())
