"""A service refuses to start on a port another process holds: its readiness probe would otherwise
talk to that process (another stack's Kafka, say) and report a stack that is not there."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from core.settings import Settings
from stack.process import StackError
from stack.services import Kafka, Postgres


def settings_with(tmp_path: Path, **ports: int) -> Settings:
    loaded = Settings.load()
    return Settings(env={**loaded.env, **{f"{k}_PORT": str(v) for k, v in ports.items()}}, state_dir=tmp_path,
                    cache_dir=loaded.cache_dir)


def test_a_port_in_use_is_refused_with_its_setting(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        kafka = Kafka(settings_with(tmp_path, KAFKA=taken, KAFKA_CONTROLLER=0))
        with pytest.raises(StackError, match=f"port {taken} \\(KAFKA_PORT\\) is already in use"):
            kafka.check_ports_free()


def test_free_ports_pass(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    Postgres(settings_with(tmp_path, POSTGRES=free)).check_ports_free()
