"""Kafka authentication and authorisation (issue #17), with real clients against the real native stack:
SASL on every listener, ACLs per principal (admin, producer, connect, dlq), no topic auto-creation, and the
host-client example of README's "Security" section."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.serialization import MessageField, SerializationContext

from core.settings import PROJECT_ROOT, Settings
from producer.schema_registration import registry_client, value_serializer
from stack.ports import STACK_PORT_SETTINGS, claimed_ports
from tests.conftest import StackHandle
from tests.support import TICK_SCHEMA, new_symbol, poll_until, tick, writer_registry

pytestmark = pytest.mark.stack

CONNECT_INTERNAL_TOPICS = ("_connect-configs", "_connect-offsets", "_connect-status")


def produce_error(config: dict[str, str], topic: str, timeout_ms: int = 8000,
                  record: tuple[bytes, bytes] = (b"auth-test", b"x")) -> KafkaError | None:
    """Produce one record (key, value) to `topic` with `config`; the delivery error (None when it was written)."""
    errors: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": str(timeout_ms), "log_level": "0",
                         "enable.idempotence": "false"})
    producer.produce(topic, key=record[0], value=record[1], on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(timeout_ms / 1000 + 10)
    assert errors, "no delivery report"
    return errors[0]


def valid_tick(stack: StackHandle) -> tuple[bytes, bytes]:
    """A tick the sink writes (never garbage on the ticks topic: the sink commits no partition holding only
    records it dead-lettered, which other tests of the session would see as lag)."""
    symbol, topic = new_symbol("AUTH"), stack.settings["TICKS_TOPIC"]
    serialize = value_serializer(writer_registry(stack), TICK_SCHEMA)
    return symbol.encode(), serialize(tick(symbol, 1), SerializationContext(topic, MessageField.VALUE))


def anonymous(stack: StackHandle, port_setting: str = "KAFKA") -> dict[str, str]:
    return {"bootstrap.servers": f"127.0.0.1:{stack.settings.port(port_setting)}", "log_level": "0"}


def topics(stack: StackHandle) -> set[str]:
    return set(AdminClient(stack.settings.kafka_config()).list_topics(timeout=10).topics)


def test_anonymous_client_cannot_produce_consume_or_create(stack: StackHandle) -> None:
    for port in ("KAFKA", "KAFKA_CONTROLLER"):
        config = anonymous(stack, port)
        with pytest.raises(KafkaException):
            AdminClient(config).list_topics(timeout=5)  # no metadata: nothing to consume from
        futures = AdminClient(config).create_topics([NewTopic(f"anon.{uuid.uuid4().hex[:8]}", 1, 1)],
                                                    request_timeout=5)
        for future in futures.values():
            with pytest.raises(KafkaException):
                future.result(15)
        for topic in (stack.settings["TICKS_TOPIC"], "_connect-configs"):
            assert produce_error(config, topic) is not None, f"an anonymous client wrote {topic} via {port}"


def test_wrong_password_is_refused(stack: StackHandle) -> None:
    config = {**stack.settings.kafka_config("producer"), "sasl.password": "not-the-password", "log_level": "0"}
    error = produce_error(config, stack.settings["TICKS_TOPIC"])
    assert error is not None


def test_producer_writes_ticks_only(stack: StackHandle) -> None:
    producer = stack.settings.kafka_config("producer")
    assert produce_error(producer, stack.settings["TICKS_TOPIC"], record=valid_tick(stack)) is None
    for topic in (stack.settings["TICKS_DLQ_TOPIC"], *CONNECT_INTERNAL_TOPICS):
        error = produce_error(producer, topic)
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (topic, error)

    admin = AdminClient(producer)
    new = f"producer.{uuid.uuid4().hex[:8]}"
    with pytest.raises(KafkaException, match="(?i)authoriz"):
        admin.create_topics([NewTopic(new, 1, 1)])[new].result(30)
    ticks = stack.settings["TICKS_TOPIC"]
    with pytest.raises(KafkaException, match="(?i)authoriz"):
        admin.delete_topics([ticks])[ticks].result(30)
    assert {ticks, new} & topics(stack) == {ticks}


def test_connect_and_dlq_principals_are_confined(stack: StackHandle) -> None:
    s = stack.settings
    dlq = s.kafka_config("dlq")
    assert produce_error(dlq, s["TICKS_TOPIC"], record=valid_tick(stack)) is None  # re-drive
    assert produce_error(dlq, "_connect-configs").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    connect = s.kafka_config("connect")
    assert produce_error(connect, s["TICKS_DLQ_TOPIC"]) is None
    assert produce_error(connect, s["TICKS_TOPIC"]).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_producing_to_a_missing_topic_does_not_create_it(stack: StackHandle) -> None:
    missing = f"missing.{uuid.uuid4().hex[:8]}"
    error = produce_error(stack.settings.kafka_config(), missing, timeout_ms=5000)  # admin: a super user
    assert error is not None
    assert missing not in topics(stack)


def test_setup_created_the_topics_with_their_settings(stack: StackHandle) -> None:
    s = stack.settings
    metadata = AdminClient(s.kafka_config()).list_topics(timeout=10).topics
    for topic in (s["TICKS_TOPIC"], s["TICKS_DLQ_TOPIC"], f"{s['TICKS_DLQ_TOPIC']}.redriven",
                  *CONNECT_INTERNAL_TOPICS):
        assert topic in metadata, f"{topic} missing"
    assert len(metadata[s["TICKS_TOPIC"]].partitions) == 3


def readme_host_client() -> str:
    """The Python block under README's host-client example marker."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    match = re.search(r"<!-- host-client-example -->\s*```python\n(.*?)^\s*```", readme, re.S | re.M)
    assert match, "README.md has no host-client example"
    return textwrap.dedent(match.group(1))


def test_documented_host_client_example_works(stack: StackHandle) -> None:
    s = stack.settings
    assert produce_error(s.kafka_config("producer"), s["TICKS_TOPIC"], record=valid_tick(stack)) is None
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": s.bootstrap_servers,
           "KAFKA_PASSWORD": s["KAFKA_ADMIN_PASSWORD"]}
    result = subprocess.run([sys.executable, "-c", readme_host_client()], env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"{re.escape(s['TICKS_TOPIC'])} \[\d+\] @\d+", result.stdout), result.stdout
    wrong = subprocess.run([sys.executable, "-c", readme_host_client()], env={**env, "KAFKA_PASSWORD": "wrong"},
                           capture_output=True, text=True, timeout=120, check=False)
    assert not re.search(r"@\d+", wrong.stdout)


def last_tree_before_authentication(destination: Path) -> Path:
    """The project as it was just before Kafka required authentication (the parent of the commit that took
    `auto.create.topics.enable=true` out of the shared broker config), unpacked into `destination`."""
    found = subprocess.run(["git", "-C", str(PROJECT_ROOT), "log", "-S", "auto.create.topics.enable=true",
                            "--format=%H", "--", "stack/config/kafka-broker.properties"],
                           capture_output=True, text=True, check=False).stdout.split()
    if not found:
        pytest.skip("no git history here to find the stack from before authentication")
    archive = subprocess.run(["git", "-C", str(PROJECT_ROOT), "archive", f"{found[0]}^"], capture_output=True,
                             check=True)
    destination.mkdir()
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive.stdout, check=True)
    return destination


def test_a_stack_started_before_authentication_adopts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data (Kafka metadata and topics, Connect's internal topics and group offsets, the database) of a
    native stack that ran without authentication: `up` with this code adds the credentials, ACLs and topics, an
    anonymous client is refused, and a tick produced by the principal `producer` lands."""
    old = last_tree_before_authentication(tmp_path / "before")
    with claimed_ports(STACK_PORT_SETTINGS) as ports:
        for key, value in {**ports, "CRYPTOPIPE_STATE": str(tmp_path / "state")}.items():
            monkeypatch.setenv(key, value)
        env = dict(os.environ)

        def stack_cli(tree: Path, *args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "stack", *args], env=env, cwd=tree, capture_output=True,
                                  text=True, timeout=900, check=False)

        try:
            for tree, command in ((old, ("up", "--no-fetch", "--no-producer")), (old, ("down",)),
                                  (PROJECT_ROOT, ("up", "--no-fetch", "--no-producer"))):
                done = stack_cli(tree, *command)
                assert done.returncode == 0, f"{tree} {command}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            assert re.search(r"generated [^\n]*\bKAFKA_ADMIN_PASSWORD\b", done.stdout), done.stdout
            settings = Settings.load()
            with pytest.raises(KafkaException):
                AdminClient({"bootstrap.servers": settings.bootstrap_servers, "log_level": "0"}).list_topics(timeout=5)
            symbol, topic = new_symbol("UPG"), settings["TICKS_TOPIC"]
            serialize = value_serializer(
                registry_client(settings.ccompat_url, settings.registry_auth("producer")), TICK_SCHEMA)
            value = serialize(tick(symbol, 1), SerializationContext(topic, MessageField.VALUE))
            assert produce_error(settings.kafka_config("producer"), topic, record=(symbol.encode(), value)) is None
            with psycopg.connect(settings.pg_dsn(), connect_timeout=5) as conn:
                rows = poll_until(lambda: conn.execute("SELECT count(*) FROM crypto_prices WHERE symbol = %s",
                                                       (symbol,)).fetchone()[0], bool, 120)
            assert rows == 1
        finally:
            stack_cli(PROJECT_ROOT, "down", "--purge")
