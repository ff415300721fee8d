"""The native stack as a user sees it: `status` after `up`, healthy services, the registry's contract."""

from __future__ import annotations

import requests

from tests.conftest import StackHandle, run_stack_cli


def test_status_shows_every_service_healthy_and_the_connector_running(stack: StackHandle) -> None:
    result = run_stack_cli("status", env=stack.env())
    assert result.returncode == 0, result.stdout + result.stderr
    for service in ("postgres", "kafka", "registry", "connect", "chart"):
        assert f"{service} " in result.stdout and "healthy" in result.stdout
    assert "connector crypto-prices-jdbc-sink: RUNNING; task 0 RUNNING" in result.stdout


def test_registry_enforces_backward_compatibility_globally(stack: StackHandle) -> None:
    config = requests.get(f"{stack.registry_url}/config", timeout=10).json()
    assert config["compatibilityLevel"] == "BACKWARD"


def test_registry_stores_schemas_in_postgresql_not_in_memory(stack: StackHandle) -> None:
    info = requests.get(f"{stack.settings.registry_base}/apis/registry/v3/system/info", timeout=10).json()
    assert "SQL" in info["name"]


def test_up_is_idempotent_on_a_running_stack(stack: StackHandle) -> None:
    if not stack.owned:
        return
    again = run_stack_cli("up", "--no-fetch", env=stack.env(), timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "connector RUNNING" in again.stdout
