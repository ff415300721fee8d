"""The dead-letter topic (TICKS_DLQ_TOPIC): see what is in it, and re-drive records once their cause is fixed.

  show      count the dead letters by reason (the tick contract's reason, or the stage and exception
            for records that could not even be read), with samples: key, reason, where the record
            came from (topic/partition/offset) and when
  redrive   produce selected dead letters again, byte for byte, to the topic they came from, so they
            go through the whole pipeline (contract included) once more

Re-driving is idempotent: every re-driven dead letter is recorded in a compacted ledger topic
(<TICKS_DLQ_TOPIC>.redriven, key = its partition:offset) and never re-driven again, and a tick that
lands twice is one row anyway (crypto_prices is keyed by symbol, event time and price). A re-driven
record that fails again comes back to the dead-letter topic carrying the header cryptopipe.redriven-from;
such records are left alone unless --include-failed-redrives says otherwise, so nothing loops.

    scripts/dlq.sh show [--symbol S] [--reason R] [--samples N]
    scripts/dlq.sh redrive (--reason R ... | --all) [--symbol S] [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from control.settings import Settings

CONTRACT_PREFIX = "tick contract violated: "
REDRIVEN_FROM = "cryptopipe.redriven-from"


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


def read_all(kafka_config: dict[str, str], topic: str) -> Iterator[DeadLetter]:
    """Every record of `topic` from the beginning to its end as it is now (no consumer group involved)."""
    consumer = Consumer({**kafka_config, "group.id": f"dlq-reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return
        starts, ends = {}, {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
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
            yield _dead_letter(message)
            if message.offset() + 1 >= ends.get(message.partition(), 0):
                ends.pop(message.partition(), None)
    finally:
        consumer.close()


def _dead_letter(message: Message) -> DeadLetter:
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
    for letter in select(read_all(settings.kafka_config("dlq"), topic), symbol, reasons):
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


def ledger_topic(settings: Settings) -> str:
    return f"{settings['TICKS_DLQ_TOPIC']}.redriven"


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


def redrive(settings: Settings, symbol: str | None, reasons: set[str] | None, dry_run: bool,
            include_failed_redrives: bool) -> int:
    ledger = ensure_ledger(settings)
    done = {(letter.key or b"").decode() for letter in read_all(settings.kafka_config("dlq"), ledger)}
    producer = Producer({**settings.kafka_config("dlq"), "enable.idempotence": True})
    redriven: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for letter in select(read_all(settings.kafka_config("dlq"), settings["TICKS_DLQ_TOPIC"]), symbol, reasons):
        if letter.coordinates in done:
            skipped["already re-driven"] += 1
            continue
        if letter.header(REDRIVEN_FROM) and not include_failed_redrives:
            skipped["failed again after a re-drive"] += 1
            continue
        origin_topic = letter.origin[0]
        if not origin_topic:
            skipped["no origin topic header"] += 1
            continue
        redriven[letter.reason] += 1
        if dry_run:
            continue
        original_headers = [(k, v) for k, v in letter.headers if not k.startswith("__connect.errors.")
                            and k != REDRIVEN_FROM]
        producer.produce(origin_topic, key=letter.key, value=letter.value,
                         headers=[*original_headers, (REDRIVEN_FROM, letter.coordinates.encode())])
        producer.produce(ledger, key=letter.coordinates.encode(), value=b"1")
    if producer.flush(60):
        print("ERROR: some records were not acknowledged by Kafka; run redrive again", file=sys.stderr)
        return 1
    verb = "would re-drive" if dry_run else "re-drove"
    print(f"{verb} {sum(redriven.values())} dead letter(s)" +
          "".join(f"\n  {count:>6}  {reason}" for reason, count in redriven.most_common()))
    for why, count in skipped.items():
        print(f"skipped {count}: {why}")
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
    args = parser.parse_args(argv)
    settings = Settings.load()
    reasons = set(args.reason) if args.reason else None
    if args.command == "show":
        return show(settings, args.symbol, reasons, args.samples)
    if reasons is None and not args.all:
        parser.error("redrive needs --reason R (see `show`) or --all")
    return redrive(settings, args.symbol, reasons, args.dry_run, args.include_failed_redrives)


if __name__ == "__main__":
    sys.exit(main())
