"""Native stack CLI: the same components as docker-compose.yml, as processes on 127.0.0.1.

  up        fetch artifacts if needed, start PostgreSQL, Kafka, the registry and Connect, wait until
            each is healthy, set registry compatibility (BACKWARD globally, per subject from
            schemas/compatibility.json), register the JDBC sink connector, start the supervisor
            (python -m control.supervisor: restarts failed sink tasks with backoff) and the chart page
            (http://127.0.0.1:CHART_PORT/)
  down      stop everything `up` started (no process left behind); --purge also deletes its data
  status    each service's process and health, the connector's and tasks' state
  logs      the last lines of a service's log
  register  (re)register the connector from connect/*.json, restart failed tasks, wait for RUNNING

Credentials: the first `up` generates every password into .stack/secrets.env (mode 0600) and later runs
reuse it (control/secrets.py); `up` and `status` print where it is.

`up --producer "ARGS"` also starts the producer (python -m producer ARGS) in the background; its log
is .stack/logs/producer.log and `down` stops it first (SIGTERM: it flushes and reports its counts).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from control.connector import (
    DEFAULT_CONNECTOR_FILE,
    ConnectApi,
    ConnectorError,
    connector_status,
    load_connector,
    register,
)
from control.secrets import ensure_secrets
from control.settings import PROJECT_ROOT, Settings, SettingsError
from control.supervisor import read_health
from stack.process import ManagedProcess, StackError
from stack.registry_config import ensure_global_compatibility, ensure_subject_levels
from stack.services import Postgres, Service, all_services


def fetch_artifacts() -> None:
    subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "fetch_artifacts.sh"), "all"], check=True)


def up(settings: Settings, with_connector: bool = True) -> dict[str, float]:
    """Start every service in order; returns seconds per step (for the cold-start measurement)."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    added = ensure_secrets(settings)
    print(f"credentials: {settings.secrets_file} (mode 0600, this user only)"
          + (f"; generated {', '.join(added)}" if added else ""), flush=True)
    *infrastructure, chart = all_services(settings)
    for service in infrastructure:
        start_service(service, timings)
    level = ensure_global_compatibility(settings.ccompat_url)
    subjects = ensure_subject_levels(settings.ccompat_url, settings.env)
    print(f"registry compatibility: global {level}; " + ", ".join(f"{k} {v}" for k, v in subjects.items()))
    if with_connector:
        t0 = time.monotonic()
        register(ConnectApi.of(settings), DEFAULT_CONNECTOR_FILE)
        timings["connector"] = time.monotonic() - t0
        print(f"connector RUNNING in {timings['connector']:.1f}s")
        pid = start_supervisor(settings)
        print(f"supervisor started (pid {pid}): restarts failed sink tasks with backoff")
    start_service(chart, timings)
    timings["total"] = time.monotonic() - started
    return timings


def supervisor_process(settings: Settings) -> ManagedProcess:
    return ManagedProcess("supervisor", settings.state_dir)


def supervisor_health_file(settings: Settings) -> Path:
    return settings.state_dir / "supervisor.json"


def start_supervisor(settings: Settings) -> int:
    return supervisor_process(settings).start(
        [sys.executable, "-m", "control.supervisor", "--connect-url", settings.connect_url,
         "--health-file", str(supervisor_health_file(settings))], cwd=PROJECT_ROOT)


def start_service(service: Service, timings: dict[str, float]) -> None:
    t0 = time.monotonic()
    print(f"starting {service.name:<9} ... ", end="", flush=True)
    service.up()
    timings[service.name] = time.monotonic() - t0
    print(f"healthy ({service.readiness}) in {timings[service.name]:.1f}s", flush=True)


def producer_process(settings: Settings) -> ManagedProcess:
    return ManagedProcess("producer", settings.state_dir, stop_timeout=60)


def start_producer(settings: Settings, producer_args: str) -> int:
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "SCHEMA_REGISTRY_URL": settings.ccompat_url}
    pid = producer_process(settings).start(
        [sys.executable, "-m", "producer", *shlex.split(producer_args)], env=env, cwd=PROJECT_ROOT
    )
    print(f"producer started (pid {pid}): python -m producer {producer_args}")
    return pid


def down(settings: Settings, purge: bool = False) -> None:
    if producer_process(settings).stop():
        print("producer  stopped")
    if supervisor_process(settings).stop():
        print("supervisor stopped")
    for service in reversed(all_services(settings)):
        stopped = service.down()
        print(f"{service.name:<9} {'stopped' if stopped else 'was not running'}")
    if purge:
        Postgres(settings).purge()
        shutil.rmtree(settings.state_dir, ignore_errors=True)
        print(f"purged: {settings.state_dir} and the PostgreSQL cluster")


def status(settings: Settings) -> int:
    healthy = True
    for service in all_services(settings):
        pid = service.process.pid()
        try:
            ok = pid is not None and service.is_ready()
        except Exception:  # noqa: BLE001 - a failing probe is "unhealthy", shown below
            ok = False
        healthy &= ok
        state = "healthy" if ok else ("running, NOT healthy" if pid else "stopped")
        print(f"{service.name:<9} {state:<22} pid={pid or '-'}  log={service.process.log_file}")
    supervisor = supervisor_process(settings)
    watch = read_health(supervisor_health_file(settings)) or {}
    print(f"{'supervisor':<9} {'running' if supervisor.is_running() else 'not started':<22} "
          f"pid={supervisor.pid() or '-'}  restarts={watch.get('restarts', 0)}  log={supervisor.log_file}")
    producer = producer_process(settings)
    print(f"{'producer':<9} {'running' if producer.is_running() else 'not started':<22} "
          f"pid={producer.pid() or '-'}  log={producer.log_file}")
    name = load_connector()["name"]
    try:
        st = connector_status(ConnectApi.of(settings), name)
    except Exception:  # noqa: BLE001
        st = None
    if st is None:
        print(f"connector {name}: not registered (or Connect down)")
        healthy = False
    else:
        tasks = ", ".join(f"task {t['id']} {t['state']}" for t in st.get("tasks", [])) or "no tasks"
        print(f"connector {name}: {st['connector']['state']}; {tasks}")
        healthy &= st["connector"]["state"] == "RUNNING" and all(t["state"] == "RUNNING" for t in st["tasks"])
    print(f"credentials: {settings.secrets_file}")
    return 0 if healthy else 1


def logs(settings: Settings, name: str, lines: int) -> None:
    for service in all_services(settings):
        if service.name == name:
            print(service.process.log_tail(lines))
            return
    raise StackError(f"unknown service {name!r}; expected one of postgres, kafka, registry, connect, chart")


def main(args: argparse.Namespace) -> int:
    settings = Settings.load()
    if args.command == "up":
        if not args.no_fetch:
            fetch_artifacts()
        timings = up(settings, with_connector=not args.no_connector)
        if args.producer is not None:
            start_producer(settings, args.producer)
        suffix = "" if args.no_connector else ", connector RUNNING"
        print(f"stack up in {timings['total']:.1f}s: all healthy{suffix}")
        return 0
    if args.command == "down":
        down(settings, purge=args.purge)
        print("stack down")
        return 0
    if args.command == "status":
        return status(settings)
    if args.command == "logs":
        logs(settings, args.service, args.lines)
        return 0
    if args.command == "register":
        register(ConnectApi.of(settings), Path(args.file), args.timeout)
        print("connector registered and RUNNING")
        return 0
    raise AssertionError(args.command)


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the stack and wait until healthy")
    p_up.add_argument("--no-fetch", action="store_true", help="do not run scripts/fetch_artifacts.sh first")
    p_up.add_argument("--no-connector", action="store_true", help="do not register the JDBC sink connector")
    p_up.add_argument("--producer", metavar="ARGS", help='also start the producer, e.g. --producer "--source stream"')
    p_down = sub.add_parser("down", help="stop everything the stack started")
    p_down.add_argument("--purge", action="store_true",
                        help="then delete all of the stack's data: topics, schemas, database (start from scratch)")
    sub.add_parser("status", help="show services and connector state (exit 1 if anything is unhealthy)")
    p_logs = sub.add_parser("logs", help="show the last lines of a service's log")
    p_logs.add_argument("service", choices=["postgres", "kafka", "registry", "connect", "chart"])
    p_logs.add_argument("-n", "--lines", type=int, default=60)
    p_reg = sub.add_parser("register", help="create or update the connector and wait until RUNNING")
    p_reg.add_argument("--file", default=str(DEFAULT_CONNECTOR_FILE))
    p_reg.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    try:
        sys.exit(main(args))
    except (StackError, SettingsError, ConnectorError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)
    except subprocess.CalledProcessError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
