"""Register the JDBC sink with Kafka Connect: validate locally, validate remotely, upsert, wait for RUNNING.

Idempotent: PUT /connectors/NAME/config creates or updates, then failed tasks are restarted. Exits
non-zero with the validation errors or the failing task's trace when the connector does not come up.
Connect's REST API sits behind basic auth (connect/worker.properties): every call goes through a
ConnectApi, which sends the credentials.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import requests

from core.settings import PROJECT_ROOT, Settings

CONNECT_DIR = PROJECT_ROOT / "connect"


class ConnectorError(RuntimeError):
    """The connector definition is invalid, Connect refused it, or it did not come up RUNNING."""


DEFAULT_CONNECTOR_FILE = CONNECT_DIR / "crypto-prices-jdbc-sink.json"
CONNECTOR_SCHEMA_FILE = CONNECT_DIR / "connector.schema.json"


@dataclass(frozen=True)
class ConnectApi:
    """Kafka Connect's REST API: its base URL and the basic-auth credentials every request sends."""

    url: str
    auth: tuple[str, str] = field(repr=False)

    @classmethod
    def of(cls, settings: Settings) -> ConnectApi:
        return cls(settings.connect_url, settings.connect_auth)

    def request(self, method: str, path: str, timeout: float = 30, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.url}{path}", auth=self.auth, timeout=timeout, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)


def load_connector(path: Path = DEFAULT_CONNECTOR_FILE) -> dict[str, Any]:
    """Parse a connector JSON file and check it against connect/connector.schema.json."""
    try:
        definition = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConnectorError(f"{path}: not valid JSON: {exc}") from exc
    schema = json.loads(CONNECTOR_SCHEMA_FILE.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(definition), key=lambda e: list(e.path))
    if errors:
        lines = [f"  - {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]
        raise ConnectorError(f"{path} does not match {CONNECTOR_SCHEMA_FILE.name}:\n" + "\n".join(lines))
    return definition


def wait_for_connect(api: ConnectApi, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = api.get("/connectors", timeout=3)
            if response.status_code == 200:
                return
            if response.status_code == 401:
                raise ConnectorError(f"Kafka Connect at {api.url} refused the REST credentials (HTTP 401): "
                                 "CONNECT_REST_USER / CONNECT_REST_PASSWORD differ from the worker's")
            last = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(1)
    raise ConnectorError(
        f"Kafka Connect at {api.url} did not answer GET /connectors with 200 in {timeout:.0f}s ({last})"
    )


def validate_remotely(api: ConnectApi, name: str, config: dict[str, str]) -> None:
    """Connect's own validation: unknown classes, bad values, unreachable database are reported here."""
    plugin = config["connector.class"].rsplit(".", 1)[-1]
    response = api.put(f"/connector-plugins/{plugin}/config/validate", json={**config, "name": name}, timeout=60)
    if response.status_code != 200:
        raise ConnectorError(f"Connect refused to validate the config: HTTP {response.status_code} "
                             f"{response.text[:500]}")
    result = response.json()
    if result.get("error_count", 0):
        problems = [
            f"  - {c['value']['name']}: {'; '.join(c['value']['errors'])}"
            for c in result["configs"] if c["value"].get("errors")
        ]
        raise ConnectorError(f"Connect found {result['error_count']} error(s) in the config:\n" + "\n".join(problems))


def upsert(api: ConnectApi, name: str, config: dict[str, str]) -> bool:
    """Create or update; returns True when the connector was newly created."""
    response = api.put(f"/connectors/{name}/config", json=config, timeout=60)
    if response.status_code not in (200, 201):
        raise ConnectorError(f"PUT /connectors/{name}/config failed: HTTP {response.status_code} "
                             f"{response.text[:1000]}")
    return response.status_code == 201


def restart_failed(api: ConnectApi, name: str) -> None:
    """A task that FAILED earlier (e.g. the database was gone too long) stays FAILED through a config
    PUT that changes nothing: restart the failed instances, so registering means "make it RUNNING"."""
    response = api.post(f"/connectors/{name}/restart", params={"includeTasks": "true", "onlyFailed": "true"},
                        timeout=60)
    if response.status_code not in (200, 202, 204):
        raise ConnectorError(f"POST /connectors/{name}/restart failed: HTTP {response.status_code} "
                             f"{response.text[:500]}")


def connector_status(api: ConnectApi, name: str) -> dict[str, Any] | None:
    response = api.get(f"/connectors/{name}/status", timeout=5)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.json()


def failure_traces(status: dict[str, Any] | None) -> list[str]:
    """Traces of the FAILED tasks, then of the connector if it FAILED."""
    if not status:
        return []
    return [t.get("trace", "(no trace)") for t in [*status.get("tasks", []), status["connector"]]
            if t["state"] == "FAILED"]


def all_running(status: dict[str, Any]) -> bool:
    """The connector and every task RUNNING, and at least one task (a connector without tasks writes nothing)."""
    states = [status["connector"]["state"], *(t["state"] for t in status.get("tasks", []))]
    return bool(status.get("tasks")) and all(s == "RUNNING" for s in states)


def wait_running(api: ConnectApi, name: str, timeout: float = 120.0,
                 stale_traces: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Poll until the connector and every task are RUNNING; raise with the trace on FAILED.
    A failure whose trace is in `stale_traces` predates a restart just asked for: keep waiting."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        status = connector_status(api, name)
        if status:
            fresh = [trace for trace in failure_traces(status) if trace not in stale_traces]
            if fresh:
                raise ConnectorError(f"connector {name} FAILED:\n{fresh[0][:4000]}")
            if all_running(status):
                return status
        time.sleep(1)
    raise ConnectorError(f"connector {name} not RUNNING after {timeout:.0f}s; last status: {json.dumps(status)}")


def register(api: ConnectApi, path: Path = DEFAULT_CONNECTOR_FILE, timeout: float = 120.0) -> dict[str, Any]:
    definition = load_connector(path)
    name, config = definition["name"], definition["config"]
    wait_for_connect(api, timeout)
    validate_remotely(api, name, config)
    stale = frozenset(failure_traces(connector_status(api, name)))
    created = upsert(api, name, config)
    if stale:
        restart_failed(api, name)
    print(f"connector {name} {'created' if created else 'updated'}; waiting for RUNNING ...", flush=True)
    return wait_running(api, name, timeout, stale_traces=stale)
