"""Schema registry at start-up: register the tick schema, retrying (bounded) while the registry is down."""

from __future__ import annotations

import logging
from pathlib import Path

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

log = logging.getLogger(__name__)

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "crypto_tick.avsc"


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
        raise RegistryUnavailable(
            f"cannot register schema subject {subject!r} at {client_url(client)} within {wait_s:.0f}s: "
            f"{type(exc).__name__}: {exc}") from exc
    log.info("schema registered: subject %s, id %s", subject, schema_id)
    return schema_id


def client_url(client: SchemaRegistryClient) -> str:
    rest = getattr(client, "_rest_client", None)
    return str(getattr(rest, "base_urls", "?"))
