"""Keeps the sink connector RUNNING without a human: Kafka Connect never restarts a FAILED task by
itself, and the JDBC sink fails its task when PostgreSQL stays away longer than its retry budget
(flush.max.retries x flush.retry.delay.ms), or when a task starts while PostgreSQL is down.

Every --interval seconds the supervisor reads the connector's status; when the connector or a task is
FAILED it asks Connect to restart the failed instances, then waits with exponential backoff
(--interval doubling up to --max-backoff) before the next attempt, so an outage of any length ends
in RUNNING once the database is back, without hammering Connect meanwhile. Every restart is logged
and counted (also in --health-file, and a supervisor started again over the same health file goes on
counting from there); SIGTERM/SIGINT stop it cleanly. It also runs the reader watchdog
(control/reader_watchdog.py) in a thread: reader roles' statements cannot outlive their budget; and the
tick maintainer (control/tick_maintenance.py) in another: raw-tick partitions ahead, retention.

Connect may run as several workers of one group (the native stack's CONNECT_WORKERS): give each worker's
REST URL (--connect-url, repeatable). Each check asks the worker that answered last, then the others in
order, and restarts the failed tasks through whichever answered (any worker forwards to the group's
leader), so a dead worker does not blind the supervisor.

Natively `scripts/stack.sh up` runs it under a keeper (stack/keeper.py) that starts it again when it dies;
in docker compose the service's `restart: unless-stopped` does.

    python -m control.supervisor [--connect-url URL ...] [--connector NAME]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import requests

from control.connector import (
    ConnectApi,
    ConnectorError,
    all_running,
    connector_status,
    failure_traces,
    load_connector,
    restart_failed,
)
from control.reader_watchdog import ReaderWatchdog
from control.tick_maintenance import TickMaintainer
from core.files import read_json, write_atomic
from core.settings import Settings, SettingsError

log = logging.getLogger("supervisor")


@dataclass
class SupervisorState:
    restarts: int = 0
    last_restart: float | None = None
    last_state: str = "unknown"
    last_failure: str = ""
    worker: str = ""
    started: float = field(default_factory=time.time)

    def snapshot(self) -> dict[str, object]:
        return {"time": time.time(), "pid": os.getpid(), "restarts": self.restarts, "last_restart": self.last_restart,
                "state": self.last_state, "last_failure": self.last_failure, "worker": self.worker}


class Supervisor:
    def __init__(self, apis: ConnectApi | list[ConnectApi], connector: str, interval: float = 5.0,
                 max_backoff: float = 60.0, health_file: Path | None = None,
                 stop: threading.Event | None = None) -> None:
        self.apis = [apis] if isinstance(apis, ConnectApi) else list(apis)
        if not self.apis:
            raise ValueError("the supervisor needs at least one Connect REST URL")
        self.connector = connector
        self.interval, self.max_backoff = interval, max_backoff
        self.health_file = health_file
        self.stop = stop or threading.Event()
        self.state = SupervisorState(restarts=previous_restarts(health_file))
        self.api = self.apis[0]  # the worker that answered last: asked first next time

    def _status(self) -> dict | None:
        """The connector's status from the first worker that answers (the last one that did, first)."""
        errors = []
        for api in sorted(self.apis, key=lambda a: a is not self.api):
            try:
                status = connector_status(api, self.connector)
            except (requests.RequestException, ValueError) as exc:
                errors.append(f"{api.url}: {type(exc).__name__}")
                continue
            if api is not self.api:
                log.info("asking Connect at %s now (%s)", api.url, "; ".join(errors) or "it answered first")
            self.api = api
            return status
        raise ConnectionError("no Connect worker answered: " + "; ".join(errors))

    def check_once(self) -> bool:
        """One look at the connector; True when failed instances were found and a restart was asked for."""
        try:
            status = self._status()
        except ConnectionError as exc:
            self._note("connect unreachable", str(exc))
            return False
        if status is None:
            self._note("not registered", "")
            return False
        traces = failure_traces(status)
        if not traces:
            self._note("RUNNING" if all_running(status) else "starting", "")
            return False
        first_line = root_cause(traces[0])
        self.state.restarts += 1
        self.state.last_restart = time.time()
        self._note("FAILED", first_line)
        log.warning("connector %s has %d failed instance(s) (%s); restart #%d through %s",
                    self.connector, len(traces), first_line, self.state.restarts, self.api.url)
        try:
            restart_failed(self.api, self.connector)
        except (ConnectorError, requests.RequestException) as exc:
            log.warning("restart request failed: %s", exc)
        return True

    def run(self) -> int:
        log.info("supervising connector %s at %s (check every %.0fs, backoff up to %.0fs; %d restart(s) so far)",
                 self.connector, ", ".join(a.url for a in self.apis), self.interval, self.max_backoff,
                 self.state.restarts)
        backoff, healthy_since = self.interval, time.monotonic()
        while not self.stop.is_set():
            restarted = self.check_once()
            self._write_health()
            if restarted:  # give the restart time, longer each time it fails again
                log.info("next check in %.0fs", backoff)
                self.stop.wait(backoff)
                backoff, healthy_since = min(backoff * 2, self.max_backoff), time.monotonic()
                continue
            if time.monotonic() - healthy_since >= self.max_backoff:  # stable again: start over at --interval
                backoff = self.interval
            self.stop.wait(self.interval)
        log.info("supervisor stopped after %d restart(s)", self.state.restarts)
        return 0

    def _note(self, state: str, failure: str) -> None:
        if state != self.state.last_state and state != "FAILED":
            log.info("connector %s: %s", self.connector, state)
        self.state.last_state, self.state.last_failure = state, failure or self.state.last_failure

    def _write_health(self) -> None:
        if self.health_file is None:
            return
        self.state.worker = self.api.url
        write_atomic(self.health_file, json.dumps(self.state.snapshot()))


def root_cause(trace: str) -> str:
    """The innermost 'Caused by:' line of a Java trace (the first line when there is none)."""
    lines = [line.strip() for line in trace.strip().splitlines()]
    causes = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by: ")]
    return (causes[-1] if causes else lines[0] if lines else "(no trace)")[:300]


def previous_restarts(health_file: Path | None) -> int:
    """The count a previous supervisor left in the health file (0 without one): a restarted supervisor
    goes on counting, so `status` shows every restart since the stack came up."""
    health = read_json(health_file) if health_file else None
    try:
        return int((health or {}).get("restarts", 0))
    except (TypeError, ValueError):
        return 0


def start_in_background(helper: type[ReaderWatchdog] | type[TickMaintainer], settings: Settings,
                        stop: threading.Event) -> threading.Thread | None:
    """A helper's run(stop) in a daemon thread; None, with the reason logged, if its settings are bad."""
    try:
        instance = helper.from_settings(settings)
    except (SettingsError, ValueError) as exc:
        log.error("%s not started: %s", helper.__name__, exc)
        return None
    thread = threading.Thread(target=instance.run, args=(stop,), name=helper.__name__, daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.load()
    except SettingsError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m control.supervisor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connect-url", action="append", dest="connect_urls", metavar="URL",
                        help="a Connect worker's REST URL; repeat it for each worker of the group "
                             f"(default {settings.connect_url})")
    parser.add_argument("--connector", default=None, help="default: the name in connect/crypto-prices-jdbc-sink.json")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between checks (default %(default)s)")
    parser.add_argument("--max-backoff", type=float, default=60.0,
                        help="longest wait between restarts of a task that keeps failing (default %(default)s)")
    parser.add_argument("--health-file", type=Path, help="rewrite this JSON file (state, restarts) after each check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    name = args.connector or load_connector()["name"]
    apis = [ConnectApi(url, settings.connect_auth) for url in args.connect_urls or [settings.connect_url]]
    # In this process, in both stack forms: the readers' statement budget; raw-tick partitions and retention.
    for helper in (ReaderWatchdog, TickMaintainer):
        start_in_background(helper, settings, stop)
    return Supervisor(apis, name, args.interval, args.max_backoff, args.health_file, stop).run()


if __name__ == "__main__":
    sys.exit(main())
