"""Shared fixtures: a real native stack (PostgreSQL, Kafka, Apicurio Registry, Kafka Connect).

The session fixture `stack` starts its own stack on claimed free ports (stack/ports.py) in a temporary state
directory, with the same start / wait / stop routines as scripts/stack.sh, but without the producer (tests
produce exactly what they check; tests/test_fresh_clone.py runs `up` with it). Set
CRYPTOPIPE_TEST_STACK=running to use an already running stack (settings from .env and the environment).

Every test that uses the stack (directly or through another fixture) must carry the `stack` marker
(`-m "not stack"` then runs the rest without one): collection fails otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from control.connector import ConnectApi
from control.kafka_setup import writable_topic
from core.settings import PROJECT_ROOT, Settings
from stack.ports import STACK_PORT_SETTINGS, claim_ports
from stack.services import Connect, Kafka, Postgres, Registry

# The suite's ticks carry recorded event times (2025-11, 2026-01): with the default retention the supervisor's
# tick maintainer would expire their raw ticks seconds after they land. Every stack the suite starts (native,
# compose, the fresh clone's) inherits this, whatever .env says (scripts/test.sh exports .env's values); retention
# itself is tested with explicit days and clock (tests/test_raw_tick_history.py), the setting's path by
# tests/test_tick_maintenance_unit.py.
os.environ["RAW_TICKS_RETENTION_DAYS"] = "0"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items
                if "stack" in getattr(item, "fixturenames", ()) and item.get_closest_marker("stack") is None]
    if unmarked:
        raise pytest.UsageError("tests that use the stack fixture without the `stack` marker "
                                "(add `pytestmark = pytest.mark.stack`):\n  " + "\n  ".join(unmarked))


class StackHandle:
    """What tests need from the running stack."""

    def __init__(self, settings: Settings, owned: bool) -> None:
        self.settings = settings
        self.owned = owned
        self._kafka = Kafka(settings)
        self._postgres = Postgres(settings)
        self._registry = Registry(settings)
        self._connect = Connect(settings)

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

    @property
    def connect_api(self) -> ConnectApi:
        """Connect's REST API with its credentials (it refuses requests without them)."""
        return ConnectApi.of(self.settings)

    def pg_dsn(self, **kwargs: str) -> str:
        return self.settings.pg_dsn(**kwargs)

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (producer, scripts) that should talk to this stack."""
        return {
            **os.environ,
            **{k: v for k, v in self.settings.env.items() if k.isupper()},
            **self.settings.client_env(),
            "CONNECT_URL": self.connect_url,
        }

    def stop_kafka(self) -> None:
        self._kafka.down()

    def start_kafka(self) -> None:
        self._kafka.up()

    def stop_postgres(self) -> None:
        self._postgres.down()

    def start_postgres(self) -> None:
        self._postgres.up()

    def stop_registry(self) -> None:
        self._registry.down()

    def start_registry(self) -> None:
        self._registry.up()

    def restart_connect(self) -> None:
        self._connect.down()
        self._connect.up()


def run_stack_cli(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """The stack CLI exactly as users run it (scripts/stack.sh minus the virtualenv bootstrap)."""
    return subprocess.run([sys.executable, "-m", "stack", *args], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def stack_processes(state_dir: Path) -> list[psutil.Process]:
    """Processes that belong to a stack: anything whose command line mentions its state directory."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(state_dir) in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    """Start clean, wait until healthy and the connector RUNNING, hand out the stack, always stop it,
    and fail the run if `down` leaves any process of it behind."""
    if os.environ.get("CRYPTOPIPE_TEST_STACK") == "running":
        yield StackHandle(Settings.load(), owned=False)
        return

    state_dir: Path = tmp_path_factory.mktemp("stack")
    ports, claims = claim_ports(STACK_PORT_SETTINGS)
    overrides = {"CRYPTOPIPE_STATE": str(state_dir), **ports}
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    env = dict(os.environ)
    settings = Settings.load()
    try:
        started = run_stack_cli("up", "--no-fetch", "--no-producer", env=env)
        if started.returncode != 0:
            run_stack_cli("down", env=env)
            pytest.fail(f"stack up failed:\n{started.stdout[-4000:]}\n{started.stderr[-6000:]}", pytrace=False)
        print(started.stdout)
        yield StackHandle(settings, owned=True)
    finally:
        stopped = run_stack_cli("down", "--purge", env=env)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        leftovers = stack_processes(state_dir) + stack_processes(Postgres(settings).data_dir)
        claims.release()
        assert stopped.returncode == 0, f"stack down failed: {stopped.stderr[-3000:]}"
        assert not leftovers, f"stack down left processes behind: {[p.pid for p in leftovers]}"


@pytest.fixture
def unique_topic(stack: StackHandle) -> str:
    """A topic made for the test, which the principal `producer` may write (the broker creates none by itself)."""
    return writable_topic(stack.settings, f"test.{uuid.uuid4().hex[:12]}")


def connect_as(stack: StackHandle, user_setting: str, password_setting: str, dbname: str | None = None,
               password: str | None = None) -> psycopg.Connection:
    """A role of the stack by the settings naming it and its password (or `password`), autocommit."""
    s = stack.settings
    dsn = s.pg_dsn(user=s[user_setting], password=password or s[password_setting], dbname=dbname)
    return psycopg.connect(dsn, autocommit=True, connect_timeout=10)


@pytest.fixture
def admin(stack: StackHandle) -> Iterator[psycopg.Connection]:
    """The stack's superuser, autocommit."""
    with psycopg.connect(stack.pg_dsn(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def powerbi(stack: StackHandle) -> Iterator[psycopg.Connection]:
    """Power BI's role (POWERBI_DB_USER), autocommit: what a DirectQuery report connects as."""
    with connect_as(stack, "POWERBI_DB_USER", "POWERBI_DB_PASSWORD") as conn:
        yield conn
