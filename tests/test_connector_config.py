"""The connector JSON is checked locally (JSON Schema) before anything talks to Connect."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from control.connector import DEFAULT_CONNECTOR_FILE, ConnectorError, load_connector
from stack.services import CONNECT_WORKER_VARIABLES

WORKER_FILE = DEFAULT_CONNECTOR_FILE.parent / "worker.properties"


def write_variant(tmp_path: Path, change) -> Path:  # noqa: ANN001
    definition = json.loads(DEFAULT_CONNECTOR_FILE.read_text())
    change(definition["config"])
    path = tmp_path / "connector.json"
    path.write_text(json.dumps(definition))
    return path


def test_shipped_connector_config_is_valid() -> None:
    config = load_connector()["config"]
    # the row key is the tick itself, so any re-landing (redelivery, replay, recreated topic) hits its row
    assert (config["primary.key.mode"], config["primary.key.fields"]) == ("record_value", "symbol,event_time,price")
    assert config["insert.mode"] == "upsert"
    assert config["use.reduction.buffer"] == "true"  # one tick twice in a batch would fail ON CONFLICT
    assert config["errors.deadletterqueue.topic.name"]


def test_every_record_passes_the_tick_contract_before_the_sink() -> None:
    config = load_connector()["config"]
    transforms = config["transforms"].split(",")
    assert transforms[0] == "contract" and config["transforms.contract.type"] == "io.cryptopipe.connect.TickContract"
    assert config["errors.tolerance"] == "all"  # a violation goes to the dead-letter topic, the task goes on


def test_a_registry_outage_is_retried_not_dead_lettered_and_a_long_one_fails_the_task() -> None:
    config = load_connector()["config"]
    assert config["value.converter"] == "io.cryptopipe.connect.RegistryOutageRetryingConverter"
    # The converter fails the task after its own budget (10 minutes); Connect's limit comes later, because
    # with errors.tolerance=all an exhausted Connect retry would dead-letter the good record instead.
    converter_budget = int(config["value.converter.registry.outage.timeout.ms"])
    assert converter_budget == 600_000
    assert int(config["errors.retry.timeout"]) >= converter_budget + int(config["errors.retry.delay.max.ms"])


def test_a_misspelled_key_is_rejected_with_its_name(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda c: c.update({"insert.mod": "upsert"}))
    with pytest.raises(ConnectorError, match="insert.mod"):
        load_connector(path)


def test_an_invalid_value_is_rejected(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda c: c.update({"insert.mode": "merge"}))
    with pytest.raises(ConnectorError, match="insert.mode"):
        load_connector(path)


def test_broken_json_is_reported_as_such(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x", ')
    with pytest.raises(ConnectorError, match="not valid JSON"):
        load_connector(path)


def test_every_env_placeholder_is_provided_to_the_worker() -> None:
    text = DEFAULT_CONNECTOR_FILE.read_text() + WORKER_FILE.read_text()
    placeholders = set(re.findall(r"\$\{env:([A-Z0-9_]+)\}", text))
    assert placeholders <= set(CONNECT_WORKER_VARIABLES)


def worker_property(name: str) -> str:
    match = re.search(rf"(?m)^{re.escape(name)}=(.*)$", WORKER_FILE.read_text())
    assert match, f"{name} missing from {WORKER_FILE}"
    return match.group(1)


def test_the_env_provider_resolves_exactly_the_variables_the_worker_gets() -> None:
    allowlist = re.compile(worker_property("config.providers.env.param.allowlist.pattern"))
    assert all(allowlist.fullmatch(name) for name in CONNECT_WORKER_VARIABLES)
    # What the allowlist exists to keep out: the caller's environment and the other services' secrets.
    for name in ("PATH", "HOME", "POSTGRES_PASSWORD", "POWERBI_DB_PASSWORD", "REGISTRY_DB_PASSWORD",
                 "CONNECT_REST_PASSWORD", "KAFKA_OPTS", "CONNECT_DB_PASSWORD_X", "XCONNECT_DB_PASSWORD"):
        assert not allowlist.fullmatch(name) and not allowlist.search(name), name


def test_connectors_may_not_override_client_settings() -> None:
    assert worker_property("connector.client.config.override.policy") == "None"
    assert not [key for key in load_connector()["config"] if key.startswith(("consumer.override.", "producer.override.",
                                                                              "admin.override."))]


def test_the_rest_api_requires_basic_auth() -> None:
    assert worker_property("rest.extension.classes") == (
        "org.apache.kafka.connect.rest.basic.auth.extension.BasicAuthSecurityRestExtension")


def test_a_consumer_override_is_rejected_locally(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda c: c.update({"consumer.override.max.poll.records": "5"}))
    with pytest.raises(ConnectorError, match="consumer.override.max.poll.records"):
        load_connector(path)
