"""Shared fixtures: a real native stack (PostgreSQL, Kafka, Apicurio Registry, Kafka Connect).

The session fixture `stack` starts its own stack on free ports in a temporary state directory, with
the same start / wait / stop routines as scripts/stack.sh. Set CRYPTOPIPE_TEST_STACK=running to
use an already running stack (settings from .env and the environment) instead.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

STACK_PORT_SETTINGS = ("POSTGRES_PORT", "KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "REGISTRY_PORT",
                       "REGISTRY_MANAGEMENT_PORT", "CONNECT_PORT")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StackHandle:
    """What tests need from the running stack."""

    def __init__(self, settings, owned: bool) -> None:  # noqa: ANN001 - StackSettings, imported lazily
        from stack.services import Kafka

        self.settings = settings
        self.owned = owned
        self._kafka = Kafka(settings)

    @property
    def bootstrap_servers(self) -> str:
        return self.settings.bootstrap_servers

    @property
    def registry_url(self) -> str:
        """Confluent-compatible API, what producers and confluent-kafka's serializers use."""
        return self.settings.ccompat_url

    @property
    def connect_url(self) -> str:
        return self.settings.connect_url

    def pg_dsn(self, **kwargs: str) -> str:
        return self.settings.pg_dsn(**kwargs)

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (producer, scripts) that should talk to this stack."""
        return {
            **os.environ,
            **{k: v for k, v in self.settings.env.items() if k.isupper()},
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "SCHEMA_REGISTRY_URL": self.registry_url,
            "CONNECT_URL": self.connect_url,
        }

    def stop_kafka(self) -> None:
        self._kafka.down()

    def start_kafka(self) -> None:
        self._kafka.up()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    if os.environ.get("CRYPTOPIPE_TEST_STACK") == "running":
        from stack.settings import StackSettings

        yield StackHandle(StackSettings.load(), owned=False)
        return

    state_dir: Path = tmp_path_factory.mktemp("stack")
    saved = {k: os.environ.get(k) for k in (*STACK_PORT_SETTINGS, "CRYPTOPIPE_STATE")}
    os.environ["CRYPTOPIPE_STATE"] = str(state_dir)
    for key in STACK_PORT_SETTINGS:
        os.environ[key] = str(free_port())

    from stack.__main__ import down, up
    from stack.settings import StackSettings

    settings = StackSettings.load()
    try:
        up(settings, with_connector=True)
    except BaseException:
        _print_logs(settings)
        down(settings)
        raise
    try:
        yield StackHandle(settings, owned=True)
    finally:
        down(settings)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _print_logs(settings) -> None:  # noqa: ANN001
    from stack.services import all_services

    for service in all_services(settings):
        print(service.process.log_tail(30))


@pytest.fixture
def unique_topic(stack: StackHandle) -> str:
    return f"test.{uuid.uuid4().hex[:12]}"
