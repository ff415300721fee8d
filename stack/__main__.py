"""Native stack CLI: the same components as docker-compose.yml, as processes on 127.0.0.1.

  up        the whole pipeline: fetch artifacts if needed, start PostgreSQL, Kafka, the registry and
            Connect (CONNECT_WORKERS workers in one group, or --connect-workers N), wait until each is
            healthy, apply the registry's compatibility levels and register the JDBC sink connector
            (python -m control setup, as compose's one-shot), start the supervisor (python -m
            control.supervisor: restarts failed sink tasks with backoff, asking every Connect worker)
            under its keeper (python -m stack.keeper: starts it again within seconds if it dies), the chart page
            (http://127.0.0.1:CHART_PORT/) and the producer (python -m producer: PRODUCER_SOURCE in .env,
            default the live Yahoo stream; PRODUCER_SOURCE=replay replays PRODUCER_REPLAY_FILE).
            --no-producer leaves the producer out; --producer "ARGS" starts it with these arguments.
  down      stop everything `up` started (no process left behind); --purge also deletes its data
  status    each service's process and health, the connector's and tasks' state, and whether data flows:
            ticks received / produced in the last minute, connector lag, rows landed, the newest candle;
            then the disk: the database's size, the ticks topic's on the broker's disk against its
            retention.bytes, the free space under PostgreSQL's and Kafka's data directories, and a WARNING
            line when either runs short (DISK_WARN_FREE_PERCENT) or the topic nears retention.bytes
  logs      the last lines of a service's (or the producer's, the supervisor's) log

Credentials: the first `up` generates every password into .stack/secrets.env (mode 0600) and later runs
reuse it (core/secrets.py); `up` and `status` print where it is.

The producer's log is .stack/logs/producer.log, its health file .stack/producer.health; `down` stops it
first (SIGTERM: it flushes and reports its counts).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import time
from pathlib import Path

from control.connector import (
    ConnectApi,
    ConnectorError,
    all_running,
    connector_status,
    load_connector,
)
from control.disk import disk_report
from control.setup import apply_registry_levels, setup
from control.status_flow import flow_lines
from control.supervisor import root_cause
from core.files import read_json
from core.registry import RegistryError, RulesError
from core.secrets import ensure_secrets
from core.settings import PROJECT_ROOT, Settings, SettingsError
from stack.process import ManagedProcess, StackError
from stack.services import Kafka, Postgres, Producer, Service, Supervisor, all_services


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
    if with_connector:  # python -m control setup, compose's one-shot: the registry's levels, then the connector
        t0 = time.monotonic()
        setup(settings)
        timings["connector"] = time.monotonic() - t0
        print(f"connector RUNNING in {timings['connector']:.1f}s")
        supervisor = Supervisor(settings)
        supervisor.up()
        print(f"supervisor started (pid {supervisor.supervised.pid()}, kept by pid {supervisor.process.pid()}): "
              "restarts failed sink tasks with backoff")
    else:
        apply_registry_levels(settings)
    start_service(chart, timings)
    timings["total"] = time.monotonic() - started
    return timings


def start_service(service: Service, timings: dict[str, float]) -> None:
    t0 = time.monotonic()
    print(f"starting {service.name:<9} ... ", end="", flush=True)
    service.up()
    timings[service.name] = time.monotonic() - t0
    print(f"healthy ({service.readiness}) in {timings[service.name]:.1f}s", flush=True)


def supervisor_process(settings: Settings) -> ManagedProcess:
    return Supervisor(settings).supervised


def keeper_process(settings: Settings) -> ManagedProcess:
    """stack/keeper.py: starts the supervisor again whenever it exits; `down` stops it (and so the supervisor)."""
    return Supervisor(settings).process


def producer_process(settings: Settings) -> ManagedProcess:
    return Producer(settings).process


def producer_health_file(settings: Settings) -> Path:
    return Producer(settings).health_file


def start_producer(settings: Settings, producer_args: str = "") -> int | None:
    """The producer (stack.services.Producer) unless it runs already. Returns its pid, or None when it
    already finished (a replay as fast as possible)."""
    producer = Producer(settings, producer_args)
    if (pid := producer.process.pid()) is not None:
        print(f"producer  running (pid {pid})")
        return pid
    producer.up()
    source = (read_json(producer.health_file) or {}).get("source", "?")
    print(f"producer  started (pid {producer.process.pid() or 'finished'}), source {source}: python -m producer "
          f"{producer_args}".rstrip() + f"; log {producer.process.log_file}")
    return producer.process.pid()


def down(settings: Settings, purge: bool = False) -> None:
    if Producer(settings).down():
        print("producer  stopped")
    if Supervisor(settings).down():  # the keeper first: it would start the supervisor again
        print("supervisor stopped (and its keeper)")
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
    supervisor, keeper = supervisor_process(settings), keeper_process(settings)
    watch = read_json(Supervisor(settings).health_file) or {}
    if supervisor.is_running() and keeper.is_running():
        supervisor_state, note = "running", ""
    elif supervisor.is_running():
        supervisor_state, note = "running, NO KEEPER", "  (not started again if it dies: run `up`)"
    elif keeper.is_running():
        supervisor_state, note = "DOWN", "  (its keeper starts it again within 10 s)"
    else:
        supervisor_state, note = "DOWN", "  (no keeper: `up` starts both)"
    healthy &= supervisor_state == "running"
    print(f"{'supervisor':<9} {supervisor_state:<22} pid={supervisor.pid() or '-'}  keeper={keeper.pid() or '-'}  "
          f"restarts={watch.get('restarts', 0)}  log={supervisor.log_file}{note}")
    producer = producer_process(settings)
    producer_state = "running" if producer.is_running() else (
        "exited" if producer_health_file(settings).exists() else "not started")
    print(f"{'producer':<9} {producer_state:<22} pid={producer.pid() or '-'}  log={producer.log_file}")
    name = load_connector()["name"]
    try:
        st = connector_status(ConnectApi.of(settings), name)
    except Exception:  # noqa: BLE001
        st = None
    if st is None:
        print(f"connector {name}: not registered (or Connect down)")
        healthy = False
    else:
        tasks = ", ".join(f"task {t['id']} {t['state']} on {t.get('worker_id', '?')}"
                          for t in st.get("tasks", [])) or "no tasks"
        print(f"connector {name}: {st['connector']['state']}; {tasks}")
        for failed in [*st.get("tasks", []), st["connector"]]:
            if failed["state"] == "FAILED":  # why, in one line: the trace's first line and its root cause
                print(f"  {'task ' + str(failed['id']) if 'id' in failed else 'connector'} FAILED: "
                      f"{failure_reason(failed.get('trace', ''))}")
        healthy &= all_running(st)
    for line in flow_lines(settings, name, producer_health_file(settings), producer.is_running()):
        print(line)
    disk = disk_report(settings, Postgres(settings).data_dir, Kafka(settings).log_dir)
    print("\n".join(disk.lines + disk.warnings))
    # A disk warning makes status exit 1 like a service that is down: the exit code is all a cron job or a
    # monitor reads, and a full disk is what stops the pipeline next (PostgreSQL or the broker stops, or the
    # broker deletes unread ticks); a warning that exits 0 goes unseen. DISK_WARN_FREE_PERCENT=0 silences the
    # free-space one.
    healthy &= not disk.warnings
    print(f"credentials: {settings.secrets_file}")
    return 0 if healthy else 1


def failure_reason(trace: str) -> str:
    """A Connect trace in one line: its first line (what failed, e.g. the converter's "schema registry
    unavailable for 600 s ...") and, when it differs, the innermost cause."""
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    if not lines:
        return "(no trace)"
    cause = root_cause(trace)
    return lines[0][:400] + ("" if cause == lines[0][:300] else f" (cause: {cause})")


def logs(settings: Settings, name: str, lines: int) -> None:
    processes = {**{s.name: s.process for s in all_services(settings)},
                 "supervisor": supervisor_process(settings), "producer": producer_process(settings)}
    if name not in processes:
        raise StackError(f"unknown service {name!r}; expected one of {', '.join(processes)}")
    print(processes[name].log_tail(lines))


def main(args: argparse.Namespace) -> int:
    settings = Settings.load()
    if args.command == "up":
        if args.connect_workers is not None:
            if args.connect_workers < 1:
                raise StackError(f"--connect-workers must be >= 1, not {args.connect_workers}")
            settings = dataclasses.replace(settings, env={**settings.env, "CONNECT_WORKERS": str(args.connect_workers)})
        started = time.monotonic()
        if args.no_producer and args.producer is not None:
            raise StackError("--no-producer and --producer exclude each other")
        if not args.no_fetch:
            fetch_artifacts()
        up(settings, with_connector=not args.no_connector)
        suffix = "" if args.no_connector else ", connector RUNNING"
        if not args.no_producer:
            start_producer(settings, args.producer or "")
            suffix += ", producer started"
        print(f"stack up in {time.monotonic() - started:.1f}s: all healthy{suffix}")
        print(f"next: scripts/stack.sh status (is data flowing?), {settings.local_url('CHART', '/')} (the candles)")
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
    raise AssertionError(args.command)


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the stack and wait until healthy")
    p_up.add_argument("--no-fetch", action="store_true", help="do not run scripts/fetch_artifacts.sh first")
    p_up.add_argument("--no-connector", action="store_true", help="do not register the JDBC sink connector")
    p_up.add_argument("--connect-workers", type=int, metavar="N",
                      help="Kafka Connect workers in the one group (default CONNECT_WORKERS in .env); worker i "
                           "listens on CONNECT_PORT + i. Run on a running stack to add workers")
    p_up.add_argument("--no-producer", action="store_true",
                      help="do not start the producer (default: start it, source PRODUCER_SOURCE from .env)")
    p_up.add_argument("--producer", metavar="ARGS",
                      help='start the producer with these arguments, e.g. --producer "--source poll --no-jitter"')
    p_down = sub.add_parser("down", help="stop everything the stack started")
    p_down.add_argument("--purge", action="store_true",
                        help="then delete all of the stack's data: topics, schemas, database (start from scratch)")
    sub.add_parser("status", help="show services and connector state, the flow of data and the disk (exit 1 if "
                                  "anything is unhealthy, the supervisor or its keeper included, or a disk "
                                  "WARNING is shown)")
    p_logs = sub.add_parser("logs", help="show the last lines of a service's log")
    p_logs.add_argument("service", help="postgres, kafka, registry, connect (worker 0), connect-N (worker N), "
                                        "chart, supervisor or producer")
    p_logs.add_argument("-n", "--lines", type=int, default=60)
    args = parser.parse_args()
    try:
        sys.exit(main(args))
    except (StackError, SettingsError, ConnectorError, RegistryError, RulesError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)
    except subprocess.CalledProcessError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
