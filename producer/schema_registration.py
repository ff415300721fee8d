"""Schema registry at start-up: register the tick schema, retrying (bounded) while the registry is down.

The client is the project's one registry client (core.registry.registry_client)."""

from __future__ import annotations

import logging
from pathlib import Path

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from core.registry import client_url, registry_client

__all__ = ["RegistryUnavailable", "load_schema", "register_schema", "registry_client", "value_serializer"]

log = logging.getLogger(__name__)

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "crypto_tick.avsc"


def value_serializer(client: SchemaRegistryClient, schema_str: str) -> AvroSerializer:
    """Avro values under the subject `<topic>-value`, registering the schema on first use.

    The strategy is explicit: confluent-kafka 2.16's default first asks the registry for "associations",
    an endpoint Apicurio's Confluent-compatible API does not have (one wasted request per topic, and a
    hang when that request is never answered).
    """
    return AvroSerializer(client, schema_str, conf={"auto.register.schemas": True,
                                                    "subject.name.strategy": topic_subject_name_strategy})


class RegistryUnavailable(Exception):
    """The registry did not answer (or refused the schema) within the wait: the producer cannot start."""


def load_schema(path: Path = SCHEMA_FILE) -> str:
    return path.read_text(encoding="utf-8")


def _transient(exc: BaseException) -> bool:
    """Network errors and 5xx are worth waiting for; 4xx (e.g. incompatible schema) are not."""
    if isinstance(exc, SchemaRegistryError):
        return exc.http_status_code >= 500 or exc.http_status_code in (-1, 408, 429)
    return isinstance(exc, Exception)


def register_schema(client: SchemaRegistryClient, subject: str, schema_str: str, wait_s: float) -> int:
    """Register (idempotent) under `subject` and return the schema id, waiting up to `wait_s` seconds."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("schema registry not reachable yet (%s); retrying for up to %.0fs", exc, wait_s)

    try:
        for attempt in Retrying(retry=retry_if_exception(_transient), stop=stop_after_delay(wait_s),
                                wait=wait_exponential_jitter(multiplier=0.5, max=5, jitter=0.5),
                                before_sleep=before_sleep, reraise=True):
            with attempt:
                schema_id = client.register_schema(subject, Schema(schema_str, "AVRO"))
    except Exception as exc:
        hint = ""
        if isinstance(exc, SchemaRegistryError) and exc.http_status_code in (401, 403):
            hint = (" (the registry takes schemas from its `producer` user only: REGISTRY_PRODUCER_PASSWORD, or "
                    "REGISTRY_PRODUCER_PASSWORD_FILE, or the native stack's .stack/secrets.env holds its password)")
        raise RegistryUnavailable(
            f"cannot register schema subject {subject!r} at {client_url(client)} within {wait_s:.0f}s: "
            f"{type(exc).__name__}: {exc}{hint}") from exc
    log.info("schema registered: subject %s, id %s", subject, schema_id)
    return schema_id
