"""The connector JSON is checked locally (JSON Schema) before anything talks to Connect."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from control.connector import DEFAULT_CONNECTOR_FILE, ConnectorError, load_connector
from control.settings import Settings
from stack.services import connect_worker_env


def write_variant(tmp_path: Path, change) -> Path:  # noqa: ANN001
    definition = json.loads(DEFAULT_CONNECTOR_FILE.read_text())
    change(definition["config"])
    path = tmp_path / "connector.json"
    path.write_text(json.dumps(definition))
    return path


def test_shipped_connector_config_is_valid() -> None:
    definition = load_connector()
    assert definition["config"]["primary.key.mode"] == "kafka"  # redelivery upserts the same row
    assert definition["config"]["insert.mode"] == "upsert"
    assert definition["config"]["errors.deadletterqueue.topic.name"]


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
    text = DEFAULT_CONNECTOR_FILE.read_text() + (DEFAULT_CONNECTOR_FILE.parent / "worker.properties").read_text()
    placeholders = set(re.findall(r"\$\{env:([A-Z0-9_]+)\}", text))
    assert placeholders <= set(connect_worker_env(Settings.load()))
