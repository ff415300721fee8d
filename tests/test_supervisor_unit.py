"""control/supervisor.py against stand-in Connect REST APIs (no stack): with several workers it asks each
until one answers and restarts the failed task through that one; a supervisor started again over the
same health file goes on counting restarts."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from control.connector import ConnectApi
from control.supervisor import Supervisor

NAME = "crypto-prices-jdbc-sink"
FAILED = {"name": NAME, "connector": {"state": "RUNNING", "worker_id": "w1"},
          "tasks": [{"id": 0, "state": "FAILED", "worker_id": "w1",
                     "trace": "ConnectException: x\nCaused by: java.sql.SQLException: down"}]}


class Worker:
    """One stand-in worker: answers the connector's status, records restart requests."""

    def __init__(self, status: dict) -> None:
        self.status, self.restarts = status, []
        worker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = json.dumps(worker.status).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                worker.restarts.append(self.path)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def api(self) -> ConnectApi:
        return ConnectApi(f"http://127.0.0.1:{self.server.server_address[1]}", ("u", "p"))


def dead_api() -> ConnectApi:
    """A worker that is gone: nothing listens on its port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return ConnectApi(f"http://127.0.0.1:{port}", ("u", "p"))


@pytest.fixture
def worker1() -> Iterator[Worker]:
    worker = Worker(FAILED)
    yield worker
    worker.server.shutdown()


def test_with_worker_0_gone_the_failed_task_is_restarted_through_worker_1(worker1: Worker, tmp_path: Path) -> None:
    supervisor = Supervisor([dead_api(), worker1.api], NAME, health_file=tmp_path / "health.json")
    assert supervisor.check_once() is True
    assert worker1.restarts == [f"/connectors/{NAME}/restart?includeTasks=true&onlyFailed=true"]
    supervisor._write_health()
    health = json.loads((tmp_path / "health.json").read_text())
    assert health["restarts"] == 1 and health["worker"] == worker1.api.url and health["state"] == "FAILED"


def test_the_worker_that_answered_is_asked_first_next_time(worker1: Worker) -> None:
    worker1.status = {**FAILED, "tasks": [{**FAILED["tasks"][0], "state": "RUNNING"}]}
    supervisor = Supervisor([dead_api(), worker1.api], NAME)
    assert supervisor.check_once() is False
    assert supervisor.api == worker1.api and supervisor.state.last_state == "RUNNING"


def test_no_worker_answering_is_reported_not_fatal() -> None:
    supervisor = Supervisor([dead_api(), dead_api()], NAME)
    assert supervisor.check_once() is False
    assert supervisor.state.last_state == "connect unreachable"
    assert "no Connect worker answered" in supervisor.state.last_failure


def test_a_restarted_supervisor_goes_on_counting(worker1: Worker, tmp_path: Path) -> None:
    health = tmp_path / "health.json"
    health.write_text(json.dumps({"restarts": 7}))
    supervisor = Supervisor([worker1.api], NAME, health_file=health)
    assert supervisor.check_once() is True and supervisor.state.restarts == 8
