"""The control plane's setup of a running stack, the same in both forms: the registry's compatibility levels,
then the sink connector. `scripts/stack.sh up` calls setup() once its services are healthy; docker compose's
one-shot runs it as `python -m control setup`."""

from __future__ import annotations

from pathlib import Path

from control.connector import DEFAULT_CONNECTOR_FILE, ConnectApi, register
from core.registry import apply_levels, load_rules, registry_client
from core.settings import Settings


def apply_registry_levels(settings: Settings) -> dict[str, str]:
    """schemas/compatibility.json's levels on the settings' registry; prints and returns them."""
    applied = apply_levels(registry_client(settings.ccompat_url, settings.registry_auth("admin")),
                           load_rules(settings.env))
    print("registry compatibility: " + ", ".join(f"{subject} {level}" for subject, level in applied.items()),
          flush=True)
    return applied


def register_connector(settings: Settings, path: Path = DEFAULT_CONNECTOR_FILE, timeout: float = 120.0) -> None:
    register(ConnectApi.of(settings), path, timeout)
    print("connector registered and RUNNING", flush=True)


def setup(settings: Settings, path: Path = DEFAULT_CONNECTOR_FILE, timeout: float = 120.0) -> None:
    """Levels first: the producer registers the tick schema only after this, under the subject's level."""
    apply_registry_levels(settings)
    register_connector(settings, path, timeout)
