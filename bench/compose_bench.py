"""The compose form, measured: start-up (cold and warm `docker compose up -d --wait`) and each container's
memory while a production-like replay flows through producer -> Kafka -> Connect -> PostgreSQL.

Each run is a project of its own (`-p cryptopipe-bench-<random>`, free host ports claimed through
stack.ports, a fresh `git clone` of this repository's HEAD as the project folder, or with --in-place this
working tree with its .env and uncommitted changes), so it runs beside other compose projects on the same
engine and touches none of them. The upstream images must be there already
(this machine: the stand-ins, `bash tests/compose/build_standins.sh`; tests/compose/standins.yml adds
`pull_policy: never`). Per run:

  build    `docker compose build`: the project's own app images (producer/Dockerfile, cached layers), not
           timed as start-up, so that "cold" means new volumes, not new images
  cold     `up -d --wait` on new volumes: passwords generated, PostgreSQL initialised, the Connect plugins
           resolved from Maven Central by the `connect-plugins` one-shot, the chart library from npm, the
           connector registered; until every service is healthy and every one-shot exited 0
  load     --idle-seconds of idle (the stack's own producer service replays the 10-minute sample with
           PRODUCER_SOURCE=replay, PRODUCER_REPLAY_SPEED=0, is done within seconds and idles, --stay-up),
           then the project's real producer runs *from the host* through the published ports on a replay
           file of --ticks ticks (bench/stack_driver.py write_replay: --symbols symbols round-robin, event
           times --step-ms apart, the history ending now) with --speed 0, until every tick is a row of
           crypto_prices (counted as the postgres superuser through the published port), then
           --settle-seconds more. `docker stats --no-stream` of the project's containers every
           --interval seconds throughout: idle (median), peak during the load, after (median).
  warm     `down` (volumes kept), then `up -d --wait` again, timed
  cleanup  `down -v --rmi local` (the project's volumes, network and its own app images), always, also on
           failure or Ctrl-C; the replay file is removed

Also per container: when it started in each `up` (the start-up's critical path), its mem_limit (docker
inspect), restarts, OOMKilled, and the cgroup's own high-water
mark during the load (memory.max_usage_in_bytes of cgroup v1, page cache included, reset when the load
starts) where the engine's cgroups are readable; after the load, the sink connector's and tasks' states.
Writes bench/results/compose.md with --write.

    python bench/compose_bench.py --runs 2 --write
    python bench/compose_bench.py --runs 1 --ticks 20000      # a quick look, nothing written
    python bench/compose_bench.py --quick      # CI smoke run: one run, 2,000 ticks, results into a temp dir
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_options import add_options, parse, write_results  # noqa: E402
from stack_driver import spread_symbols, write_replay  # noqa: E402

from control.connector import all_running  # noqa: E402
from core.settings import Settings, read_env_file  # noqa: E402
from stack.ports import claimed_ports  # noqa: E402

PUBLISHED_PORTS = ("POSTGRES_PORT", "KAFKA_PORT", "REGISTRY_PORT", "CONNECT_PORT", "CHART_PORT")
ONE_SHOTS = ("secrets", "db-init", "connect-plugins", "control-setup", "chart-assets")
HEALTHY = ("postgres", "broker", "registry", "connect", "connect-supervisor", "producer", "chart")
BUDGET_BYTES = 3 * 1024**3
NEAR_LIMIT = 0.85
HEAP_SETTINGS = ("BROKER_HEAP_OPTS", "REGISTRY_HEAP_OPTS", "CONNECT_HEAP_OPTS")
CGROUP_V1 = Path("/sys/fs/cgroup/memory/docker")
CPUACCT_V1 = Path("/sys/fs/cgroup/cpuacct/docker")
MiB = 1024**2


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def run(argv: list[str], timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def parse_bytes(text: str) -> float:
    """docker stats' sizes: '123.4MiB', '1GiB', '512kB', '0B'."""
    number, unit = re.fullmatch(r"([\d.]+)\s*([KkMGT]?i?B)", text.strip()).groups()
    return float(number) * {"B": 1, "KiB": 1024, "MiB": MiB, "GiB": 1024**3, "TiB": 1024**4,
                            "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[unit]


def docker_time(text: str) -> float | None:
    """docker inspect's RFC 3339 times (nanoseconds, Z) as epoch seconds; None for the zero time."""
    if not text or text.startswith("0001-"):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def spread(values: list[float], fmt: str = "{:,.1f}") -> str:
    """min / median / max"""
    if not values:
        return "n/a"
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MiB:,.0f}"


# -- one compose project ------------------------------------------------------------------------------

@dataclass
class Project:
    folder: Path
    name: str
    env: dict[str, str]

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        argv = ["docker", "compose", "-p", self.name, "-f", "docker-compose.yml", "-f", "tests/compose/standins.yml",
                *args]
        result = run(argv, timeout=timeout, cwd=self.folder, env=self.env)
        if check and result.returncode != 0:
            raise RuntimeError(f"`docker compose -p {self.name} {' '.join(args)}` exited {result.returncode}:\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n--- logs ---\n{self.logs()}")
        return result

    def logs(self, *services: str, tail: int = 40) -> str:
        result = self.compose("logs", "--no-color", "--timestamps", "--tail", str(tail), *services, timeout=120,
                              check=False)
        return (result.stdout + result.stderr)[-12000:]

    def timed_up(self) -> tuple[float, dict[str, float]]:
        """Seconds `up -d --wait` took, and when each container started, in seconds after it began."""
        began, wall = time.monotonic(), time.time()
        self.compose("up", "-d", "--wait", timeout=3600)
        elapsed = time.monotonic() - began
        started = {service_of(c): at - wall for c in self.containers()
                   if (at := docker_time(c["State"]["StartedAt"])) is not None}
        return elapsed, started

    def port(self, setting: str) -> int:
        return int(self.env[setting])

    @property
    def settings(self) -> Settings:
        """The clone's settings as compose reads them: its .env, this project's environment (ports) winning."""
        return Settings(env={**read_env_file(self.folder / ".env"), **self.env}, state_dir=self.folder,
                        cache_dir=self.folder)

    def secret(self, name: str) -> str:
        return self.compose("run", "--rm", "-T", "secrets", "show", name, timeout=180).stdout.strip()

    def containers(self) -> list[dict[str, Any]]:
        """docker inspect of every container of the project (running or not)."""
        ids = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.name}"]).stdout.split()
        if not ids:
            return []
        return json.loads(run(["docker", "inspect", *ids]).stdout or "[]")

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.name}"
        return {kind: run(argv).stdout.split() for kind, argv in (
            ("containers", ["docker", "ps", "-aq", "--filter", label]),
            ("volumes", ["docker", "volume", "ls", "-q", "--filter", label]),
            ("networks", ["docker", "network", "ls", "-q", "--filter", label]))}


def service_of(container: dict[str, Any]) -> str:
    return container["Config"]["Labels"].get("com.docker.compose.service", container["Name"].lstrip("/"))


def check_started(project: Project, when: str) -> list[str]:
    """Anything `up --wait` should have ruled out: a service not healthy, a one-shot not exited 0."""
    problems = []
    states = {service_of(c): c["State"] for c in project.containers()}
    for service in HEALTHY:
        health = states.get(service, {}).get("Health", {}).get("Status")
        if health != "healthy":
            problems.append(f"{when}: {service} is {health or states.get(service, {}).get('Status', 'missing')}")
    for service in ONE_SHOTS:
        state = states.get(service, {})
        if state.get("Status") != "exited" or state.get("ExitCode"):
            problems.append(f"{when}: one-shot {service} {state.get('Status', 'missing')} "
                            f"exit {state.get('ExitCode')}")
    return problems


def one_shot_seconds(project: Project) -> dict[str, float]:
    """How long each one-shot ran in the last `up` (docker inspect StartedAt -> FinishedAt)."""
    out = {}
    for c in project.containers():
        if service_of(c) in ONE_SHOTS:
            start, end = docker_time(c["State"]["StartedAt"]), docker_time(c["State"]["FinishedAt"])
            if start and end and end >= start:
                out[service_of(c)] = end - start
    return out


# -- memory sampling ------------------------------------------------------------------------------------

@dataclass
class Sample:
    at: float  # time.time()
    phase: str
    memory: dict[str, float]  # service -> bytes (docker stats MemUsage)
    cpu: dict[str, float]  # service -> percent of one core

    @property
    def total(self) -> float:
        return sum(self.memory.values())


class StatsSampler:
    """`docker stats --no-stream` of the given containers every `interval` seconds in a thread; each sample
    carries the phase that was current when it was taken."""

    def __init__(self, containers: dict[str, str], interval: float) -> None:
        self.containers, self.interval = containers, interval  # container id -> service
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self.phase = "idle"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            began, phase = time.monotonic(), self.phase
            result = run(["docker", "stats", "--no-stream", "--format", "{{json .}}", *self.containers], timeout=60)
            memory, cpu = {}, {}
            for line in result.stdout.splitlines():
                with contextlib.suppress(ValueError, KeyError, AttributeError):
                    row = json.loads(line)
                    service = next(s for cid, s in self.containers.items() if cid.startswith(row["ID"]))
                    memory[service] = parse_bytes(row["MemUsage"].split(" / ")[0])
                    cpu[service] = float(row["CPUPerc"].rstrip("%"))
            if result.returncode != 0:
                self.errors.append(result.stderr.strip()[-300:])
            if memory:
                self.samples.append(Sample(time.time(), phase, memory, cpu))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def __enter__(self) -> StatsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(90)

    def of(self, phase: str) -> list[Sample]:
        return [s for s in self.samples if s.phase == phase]


def cgroup_dir(container_id: str) -> Path | None:
    path = CGROUP_V1 / container_id
    return path if (path / "memory.max_usage_in_bytes").exists() else None


def reset_cgroup_peaks(containers: dict[str, str]) -> bool:
    """Zero memory.max_usage_in_bytes of each container's cgroup (v1), so it then holds the load's peak."""
    done = True
    for cid in containers:
        path = cgroup_dir(cid)
        try:
            (path / "memory.max_usage_in_bytes").write_text("0")
        except (OSError, TypeError):
            done = False
    return done


def cgroup_peaks(containers: dict[str, str]) -> dict[str, dict[str, int]]:
    out = {}
    for cid, service in containers.items():
        path = cgroup_dir(cid)
        with contextlib.suppress(OSError, TypeError, ValueError):
            out[service] = {"max_usage": int((path / "memory.max_usage_in_bytes").read_text()),
                            "failcnt": int((path / "memory.failcnt").read_text())}
    return out


@dataclass
class CpuSnapshot:
    """CPU seconds so far: the whole host (/proc/stat, busy = not idle or iowait), each container (cgroup
    v1 cpuacct.usage), and how long some task waited for a CPU (/proc/pressure/cpu, "some")."""

    at: float
    host_busy: float
    containers: dict[str, float]
    waited: float | None

    @classmethod
    def take(cls, containers: dict[str, str]) -> CpuSnapshot:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # without guest (in user)
        used = {}
        for cid, service in containers.items():
            with contextlib.suppress(OSError, ValueError):
                used[service] = int((CPUACCT_V1 / cid / "cpuacct.usage").read_text()) / 1e9
        waited = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
            waited = int(some.rsplit("total=", 1)[1]) / 1e6
        return cls(time.monotonic(), busy, used, waited)


@dataclass
class CpuUse:
    """What the CPUs did between two snapshots (the load window), in cores (1.0 = one core all the time)."""

    seconds: float
    host: float
    containers: dict[str, float]
    waiting: float | None  # share of the window in which some task waited for a CPU

    @classmethod
    def between(cls, a: CpuSnapshot, b: CpuSnapshot) -> CpuUse:
        span = max(b.at - a.at, 1e-6)
        return cls(span, (b.host_busy - a.host_busy) / span,
                   {s: (b.containers[s] - a.containers[s]) / span for s in b.containers if s in a.containers},
                   None if a.waited is None or b.waited is None else (b.waited - a.waited) / span)

    @property
    def stack(self) -> float:
        return sum(self.containers.values())


# -- the load ---------------------------------------------------------------------------------------------

@dataclass
class Load:
    ticks: int
    symbols: list[str]
    limits: dict[str, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    sampler_errors: list[str] = field(default_factory=list)
    kernel: dict[str, dict[str, int]] = field(default_factory=dict)
    kernel_reset: bool = False
    producer_s: float = 0.0
    producer_exit: int | None = None
    producer_tail: str = ""
    landed: int = 0
    ingest_s: float | None = None  # first produced_at -> last row visible
    cpu: CpuUse | None = None  # producer start -> last row visible
    loadavg: float = 0.0  # host 1-minute load average as the producer starts
    health: dict[str, dict[str, Any]] = field(default_factory=dict)
    connector: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    def phase(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.phase == name]

    def median(self, phase: str, service: str | None = None) -> float | None:
        values = [s.total if service is None else s.memory.get(service) for s in self.phase(phase)]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def peak(self, service: str | None = None) -> float | None:
        values = [s.total if service is None else s.memory.get(service) for s in self.phase("load")]
        values = [v for v in values if v is not None]
        return max(values) if values else None

    def highest(self, service: str) -> float | None:
        """The highest sample of any phase (idle, load, after)."""
        values = [s.memory[service] for s in self.samples if service in s.memory]
        return max(values) if values else None

    @property
    def rate(self) -> float | None:
        return self.ticks / self.ingest_s if self.ingest_s else None

    def services(self) -> list[str]:
        return sorted({name for s in self.samples for name in s.memory}, key=lambda n: -(self.peak(n) or 0))


def running_containers(project: Project) -> dict[str, str]:
    return {c["Id"]: service_of(c) for c in project.containers() if c["State"]["Status"] == "running"}


def connector_state(project: Project, rest_password: str) -> dict[str, Any] | None:
    name = json.loads((project.folder / "connect" / "crypto-prices-jdbc-sink.json").read_text())["name"]
    settings = project.settings
    with contextlib.suppress(requests.RequestException, ValueError):
        reply = requests.get(settings.local_url("CONNECT", f"/connectors/{name}/status"),
                             auth=(settings["CONNECT_REST_USER"], rest_password), timeout=15)
        return reply.json()
    return None


def measure_load(project: Project, args: argparse.Namespace, work: Path) -> Load:
    settings = project.settings
    topic = settings["TICKS_TOPIC"]
    secrets = {key: project.secret(key) for key in ("POSTGRES_PASSWORD", "CONNECT_REST_PASSWORD",
                                                     "KAFKA_PRODUCER_PASSWORD")}
    dsn = psycopg.conninfo.make_conninfo(host="127.0.0.1", port=project.port("POSTGRES_PORT"),
                                         dbname=settings["POSTGRES_DB"],
                                         user="postgres", password=secrets["POSTGRES_PASSWORD"], connect_timeout=5)
    symbols = spread_symbols(f"CB{uuid.uuid4().hex[:4].upper()}X", per_partition=-(-args.symbols // 3))
    symbols = symbols[:args.symbols]
    load = Load(args.ticks, symbols)
    replay = work / f"{project.name}.jsonl"
    end = now_ms()
    write_replay(replay, symbols, args.ticks, end - int((args.ticks - 1) * args.step_ms), args.step_ms)
    containers = running_containers(project)
    load.limits = {service: c["HostConfig"]["Memory"] for c in project.containers()
                   if (service := service_of(c)) in containers.values()}
    argv = [sys.executable, "-m", "producer", "--source", "replay", "--file", str(replay), "--speed", "0",
            "--symbols", ",".join(symbols), "--topic", topic,
            "--bootstrap-servers", settings.bootstrap_servers, "--schema-registry-url", settings.ccompat_url,
            "--stats-interval", "0", "--log-level", "WARNING"]
    try:
        with psycopg.connect(dsn, autocommit=True) as conn, StatsSampler(containers, args.interval) as sampler:
            def count() -> int:
                return conn.execute("SELECT count(*) FROM crypto_prices WHERE symbol = ANY(%s)",
                                    (symbols,)).fetchone()[0]

            log(f"  idle {args.idle_seconds:g} s, docker stats every {args.interval:g} s ...")
            time.sleep(args.idle_seconds)
            load.kernel_reset = reset_cgroup_peaks(containers)
            load.loadavg = os.getloadavg()[0]
            cpu_before = CpuSnapshot.take(containers)
            sampler.phase = "load"
            log(f"  producing {args.ticks:,} ticks of {','.join(symbols)} from the host ...")
            started = time.monotonic()
            # The producer authenticates as `producer`: its password through the environment, not argv.
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env={**os.environ,
                                         "KAFKA_PRODUCER_PASSWORD": secrets["KAFKA_PRODUCER_PASSWORD"]})
            deadline, next_report = started + args.timeout, started + 10
            while True:
                landed = count()
                if proc.poll() is not None and not load.producer_s:
                    load.producer_s = time.monotonic() - started
                if landed >= args.ticks or time.monotonic() > deadline:
                    break
                if time.monotonic() >= next_report:
                    log(f"    {landed:,} of {args.ticks:,} landed")
                    next_report += 10
                time.sleep(0.25)
            landed_at = time.time()
            load.cpu = CpuUse.between(cpu_before, CpuSnapshot.take(containers))
            load.landed = landed
            try:
                output, _ = proc.communicate(timeout=max(30.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
            load.producer_s = load.producer_s or time.monotonic() - started
            load.producer_exit, load.producer_tail = proc.returncode, output[-2000:]
            if landed >= args.ticks:
                first = conn.execute("SELECT extract(epoch FROM min(produced_at)) FROM crypto_prices"
                                     " WHERE symbol = ANY(%s)", (symbols,)).fetchone()[0]
                load.ingest_s = landed_at - float(first)
                log(f"  all landed: {args.ticks / load.ingest_s:,.0f} ticks/s from the first produced tick "
                    f"({load.ingest_s:.1f} s); the producer took {load.producer_s:.1f} s")
            else:
                load.problems.append(f"only {landed:,} of {args.ticks:,} ticks landed within {args.timeout:g} s")
            sampler.phase = "after"
            time.sleep(args.settle_seconds)
            load.kernel = cgroup_peaks(containers)
        load.samples, load.sampler_errors = sampler.samples, sampler.errors[-5:]
    finally:
        replay.unlink(missing_ok=True)
    inspect_health(project, load, containers, secrets["CONNECT_REST_PASSWORD"])
    return load


def inspect_health(project: Project, load: Load, containers: dict[str, str], rest_password: str) -> None:
    """Restarts, OOM kills, exits and the sink's task states after the load; the logs of whatever misbehaved."""
    suspects = set()
    for c in project.containers():
        service, state = service_of(c), c["State"]
        if service in ONE_SHOTS:
            continue
        load.health[service] = {"status": state["Status"], "restarts": c["RestartCount"],
                                "oom_killed": state["OOMKilled"], "exit_code": state["ExitCode"],
                                "health": state.get("Health", {}).get("Status")}
        if c["RestartCount"] or state["OOMKilled"] or state["Status"] != "running":
            suspects.add(service)
            load.problems.append(f"{service}: status {state['Status']}, {c['RestartCount']} restart(s), "
                                 f"OOMKilled={state['OOMKilled']}, exit code {state['ExitCode']}")
    if load.producer_exit:
        load.problems.append(f"the host producer exited {load.producer_exit}: {load.producer_tail[-500:]}")
    load.connector = connector_state(project, rest_password)
    if load.connector is None or "connector" not in load.connector or not all_running(load.connector):
        suspects.add("connect")
        load.problems.append(f"sink connector: {json.dumps(load.connector)[:1500]}")
    for service in load.services():
        limit, highest = load.limits.get(service), load.highest(service)
        if highest is not None and limit and highest > NEAR_LIMIT * limit:
            suspects.add(service)
            load.problems.append(f"{service}: {highest / MiB:,.0f} MiB in a docker stats sample, "
                                 f"{highest / limit:.0%} of its mem_limit {limit / MiB:,.0f} MiB")
    if suspects or load.problems:
        load.evidence.append(project.logs(*sorted(suspects), tail=40))


# -- a run -----------------------------------------------------------------------------------------------

@dataclass
class Run:
    project: str
    build_s: float
    cold_s: float
    warm_s: float | None = None
    cold_one_shots: dict[str, float] = field(default_factory=dict)
    warm_one_shots: dict[str, float] = field(default_factory=dict)
    cold_started: dict[str, float] = field(default_factory=dict)
    warm_started: dict[str, float] = field(default_factory=dict)
    load: Load | None = None
    problems: list[str] = field(default_factory=list)
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    others: int = 0


def other_containers(name: str) -> int:
    """Running containers on the engine that are not this project's (other sessions' work)."""
    rows = run(["docker", "ps", "--format", '{{.Label "com.docker.compose.project"}}']).stdout.splitlines()
    return sum(1 for row in rows if row != name)


def make_clone(work: Path) -> Path:
    """A fresh clone of HEAD: the project folder compose runs in, as a new user's clone."""
    folder = work / "cryptopipe"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(folder)], check=True, timeout=300)
    return folder


def one_run(args: argparse.Namespace, folder: Path, work: Path, index: int) -> Run:
    name = f"cryptopipe-bench-{uuid.uuid4().hex[:8]}"
    with claimed_ports(PUBLISHED_PORTS) as ports:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOPIPE_", "COMPOSE_"))},
               **ports, "PRODUCER_SOURCE": "replay", "PRODUCER_REPLAY_SPEED": "0"}
        project = Project(folder, name, env)
        log(f"run {index}: project {name}, ports {ports}")
        try:
            began = time.monotonic()
            project.compose("build", timeout=1800)
            build_s = time.monotonic() - began
            loadavg, others = os.getloadavg(), other_containers(name)
            log(f"  built in {build_s:.1f} s; cold up -d --wait ({others} other containers running on the engine,"
                f" load average {loadavg[0]:.1f}) ...")
            cold_s, cold_started = project.timed_up()
            result = Run(name, build_s, cold_s, cold_started=cold_started, loadavg=loadavg, others=others)
            result.cold_one_shots = one_shot_seconds(project)
            result.problems += check_started(project, "cold")
            log(f"  cold up {result.cold_s:.1f} s; one-shots: "
                + ", ".join(f"{k} {v:.1f}s" for k, v in sorted(result.cold_one_shots.items())))
            if args.ticks:
                result.load = measure_load(project, args, work)
                for problem in result.load.problems:
                    log(f"  PROBLEM: {problem}")
            project.compose("down", timeout=900)
            log("  down (volumes kept); warm up -d --wait ...")
            result.warm_s, result.warm_started = project.timed_up()
            result.warm_one_shots = one_shot_seconds(project)
            result.problems += check_started(project, "warm")
            log(f"  warm up {result.warm_s:.1f} s")
            return result
        finally:
            log(f"  down -v {name} ...")
            project.compose("down", "-v", "--remove-orphans", "--rmi", "local", timeout=900, check=False)
            left = project.leftovers()
            if any(left.values()):
                log(f"  WARNING: {name} left {left}")


# -- the report ----------------------------------------------------------------------------------------------

def engine_facts() -> dict[str, str]:
    info = json.loads(run(["docker", "info", "--format", "{{json .}}"]).stdout or "{}")
    compose = run(["docker", "compose", "version", "--short"]).stdout.strip()
    client = run(["docker", "version", "--format", "{{.Client.Version}}"]).stdout.strip()
    return {"engine": info.get("ServerVersion", "?"), "client": client, "compose": compose,
            "cgroup": f"cgroup v{info.get('CgroupVersion', '?')} ({info.get('CgroupDriver', '?')})",
            "kernel": info.get("KernelVersion", platform.release()), "cpus": str(info.get("NCPU", "?")),
            "memory": f"{info.get('MemTotal', 0) / 1024**3:.1f} GiB", "storage": info.get("Driver", "?")}


def standin_images() -> list[str]:
    listing = run(["bash", "tests/compose/build_standins.sh", "--list"], cwd=ROOT).stdout
    return [line.split()[1] for line in listing.splitlines() if len(line.split()) == 2]


def report(runs: list[Run], args: argparse.Namespace, facts: dict[str, str], commit: str,
           heaps: dict[str, str]) -> list[str]:
    colds, warms, builds = [r.cold_s for r in runs], [r.warm_s for r in runs if r.warm_s], [r.build_s for r in runs]
    one_shots = sorted({k for r in runs for k in r.cold_one_shots})
    loads = [r.load for r in runs if r.load]
    command = (f"python bench/compose_bench.py --runs {args.runs} --ticks {args.ticks} --symbols {args.symbols} "
               f"--step-ms {args.step_ms:g} --idle-seconds {args.idle_seconds:g} "
               f"--settle-seconds {args.settle_seconds:g} --interval {args.interval:g}"
               + (" --in-place" if args.in_place else ""))
    lines = [
        "# Compose form: start-up and memory under load",
        "",
        f"{datetime.now(UTC):%Y-%m-%d}, {args.machine}. Docker Engine {facts['engine']} (CLI {facts['client']}), "
        f"Compose {facts['compose']}, {facts['cgroup']}, kernel {facts['kernel']}, {facts['storage']}; "
        f"the engine sees {facts['cpus']} CPUs and {facts['memory']}. Commit {commit}. Command: `{command} --write`.",
        "",
        "**Images are stand-ins**, not the upstream ones (no image registry is reachable here): "
        + ", ".join(f"`{i}`" for i in standin_images())
        + " are built locally under the upstream names by `tests/compose/build_standins.sh`, Debian packages "
        "plus the very jars the native stack runs (tests/compose/standins/*/CONTRACT.md says what each honours "
        "and what not, e.g. Debian's OpenJDK 21 for Kafka and Apicurio instead of Temurin/UBI, PostgreSQL 15 "
        "from Debian). Memory and start-up of the real images can differ; the JVM heaps and every mem_limit "
        "are the compose file's own: " + ", ".join(f"`{k}={v}`" for k, v in heaps.items()) + ".",
        "",
        "Each run is a project of its own (`cryptopipe-bench-<random>`, free ports, "
        + ("the working tree itself" if args.in_place else "a fresh clone of HEAD") + "), "
        "its app images built first (`docker compose build`, cached layers; not counted as start-up). "
        "**Cold**: `up -d --wait` on new volumes: passwords generated, PostgreSQL initialised, the Connect "
        "plugins resolved from Maven Central by the `connect-plugins` one-shot (network included), the chart "
        "library fetched from npm, the connector registered, until every service is healthy. **Warm**: after "
        "the load, `down` (volumes kept) and `up -d --wait` again. Then `down -v --rmi local`. The stack's "
        "own producer service replays the 10-minute sample (`PRODUCER_SOURCE=replay`, `PRODUCER_REPLAY_SPEED=0`) "
        "and idles; the load comes from the host.",
        "",
        "## Start-up (min / median / max over the runs)",
        "",
        "| measure | min / median / max |",
        "|---|---|",
        f"| cold `up -d --wait` (new volumes), s | {spread(colds)} |",
        f"| warm `up -d --wait` (after `down`, volumes kept), s | {spread(warms)} |",
        f"| `docker compose build` before it (cached layers, not start-up), s | {spread(builds)} |",
    ]
    lines += [
        "",
        "Inside `up`, the one-shots (docker inspect StartedAt -> FinishedAt of each; the others start after "
        "them as depends_on says):",
        "",
        "| one-shot | cold s (min / median / max) | warm s (min / median / max) |",
        "|---|---|---|",
    ]
    lines += [f"| `{s}` | {spread([r.cold_one_shots.get(s, 0.0) for r in runs])} | "
              f"{spread([r.warm_one_shots.get(s, 0.0) for r in runs])} |" for s in one_shots]
    services = sorted({s for r in runs for s in r.cold_started},
                      key=lambda s: statistics.median(r.cold_started.get(s, 0.0) for r in runs))
    lines += [
        "",
        "When each container started, in seconds after `up` began (docker inspect StartedAt; a container starts "
        "once what it depends on is healthy or has exited 0, so the gaps show where the time goes), median over "
        "the runs:",
        "",
        "| container | cold: started at s | warm: started at s |",
        "|---|---|---|",
    ]
    lines += [f"| {s} | {statistics.median(r.cold_started.get(s, 0.0) for r in runs):.1f} | "
              f"{statistics.median(r.warm_started.get(s, 0.0) for r in runs):.1f} |" for s in services]
    lines += [f"| (`up --wait` returned) | {statistics.median(colds):.1f} | "
              f"{statistics.median(warms) if warms else 0.0:.1f} |"]
    lines += [
        "",
        "| run | project | cold s | warm s | build s | other containers on the engine | load average (1 min) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {i} | `{r.project}` | {r.cold_s:.1f} | {r.warm_s or 0:.1f} | {r.build_s:.1f} | {r.others} | "
              f"{r.loadavg[0]:.1f} |" for i, r in enumerate(runs, 1)]
    if loads:
        lines += memory_section(loads, args)
    problems = [p for r in runs for p in r.problems] + [p for ld in loads for p in ld.problems]
    lines += ["", "## Problems seen", ""]
    lines += [f"- {p}" for p in problems] or ["None: every service healthy and every one-shot exited 0 after each "
                                              "`up`; no container restarted or was OOM-killed; the sink connector "
                                              "and all its tasks RUNNING after each load; every tick landed."]
    for ld in loads:
        if ld.evidence:
            lines += ["", "```", *ld.evidence[0].splitlines()[-60:], "```"]
    return lines


def memory_section(loads: list[Load], args: argparse.Namespace) -> list[str]:
    services = sorted({s for ld in loads for s in ld.services()},
                      key=lambda s: -max((ld.peak(s) or 0) for ld in loads))
    ld0 = loads[0]
    span_min = (args.ticks - 1) * args.step_ms / 60_000

    def med(values: list[float | None]) -> float | None:
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def top(values: list[float | None]) -> float | None:
        values = [v for v in values if v is not None]
        return max(values) if values else None

    lines = [
        "",
        "## Memory under load",
        "",
        f"Load: {args.ticks:,} ticks, {args.symbols} symbols round-robin (one per partition of the 3-partition "
        f"topic), event times {args.step_ms:g} ms apart ({span_min:,.0f} minutes of history ending at the start, "
        f"so {span_min * args.symbols:,.0f} one-minute candles), sent by the project's own producer "
        "(`python -m producer --source replay --speed 0`, acks=all, idempotent) from the host through the "
        "published Kafka and registry ports, at its full speed. Memory: `docker stats --no-stream` of the "
        f"project's running containers every ~{args.interval:g} s (a call itself takes ~1-2 s). docker stats' "
        "MemUsage is the cgroup's usage minus its inactive page cache (cgroup v1: total_inactive_file), the "
        "figure the target is about. **Idle**: median over the "
        f"{args.idle_seconds:g} s after `up` before the load. **Peak**: the highest sample from the producer's "
        f"start to the last row landed. **After**: median over the {args.settle_seconds:g} s after that. Totals "
        "are per sample (the sum at one moment), not the sum of per-container peaks. Over runs: idle and after "
        "are medians, peaks the highest.",
        "",
        "| container | mem_limit MiB | idle MiB | peak MiB | after MiB | highest sample, % of limit | kernel peak "
        "MiB (incl. page cache) | limit hits (failcnt) | CPU during the load, cores |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    flagged = []
    for s in services:
        limit = ld0.limits.get(s)
        peak = top([ld.peak(s) for ld in loads])
        kernel = top([ld.kernel.get(s, {}).get("max_usage") for ld in loads])
        fails = top([ld.kernel.get(s, {}).get("failcnt") for ld in loads])
        highest = top([ld.highest(s) for ld in loads])
        cpu = med([ld.cpu.containers.get(s) for ld in loads if ld.cpu])
        cores = "n/a" if cpu is None else f"{cpu:.2f}"
        share = highest / limit if highest is not None and limit else None
        flag = ""
        if share is not None and share > NEAR_LIMIT:
            flag = f" **> {NEAR_LIMIT:.0%}**"
            flagged.append(f"{s} {share:.0%}")
        lines.append(f"| {s} | {mib(limit) if limit else 'none'} | {mib(med([ld.median('idle', s) for ld in loads]))} "
                     f"| {mib(peak)} | {mib(med([ld.median('after', s) for ld in loads]))} | "
                     f"{'n/a' if share is None else f'{share:.0%}'}{flag} | {mib(kernel)} | "
                     f"{'n/a' if fails is None else f'{fails:,.0f}'} | "
                     f"{cores} |")
    limits_total = sum(v for v in ld0.limits.values() if v)
    peak_total = top([ld.peak() for ld in loads])
    lines.append(f"| **total** | {mib(limits_total)} | {mib(med([ld.median('idle') for ld in loads]))} | "
                 f"{mib(peak_total)} | {mib(med([ld.median('after') for ld in loads]))} | | | | |")
    lines += [
        "",
        "| run | samples idle / load / after | idle total MiB | peak total MiB | after total MiB | ticks landed | "
        "producer s | ingest s | ticks/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, ld in enumerate(loads, 1):
        lines.append(f"| {i} | {len(ld.phase('idle'))} / {len(ld.phase('load'))} / {len(ld.phase('after'))} | "
                     f"{mib(ld.median('idle'))} | {mib(ld.peak())} | {mib(ld.median('after'))} | {ld.landed:,} | "
                     f"{ld.producer_s:.1f} | {'n/a' if ld.ingest_s is None else f'{ld.ingest_s:.1f}'} | "
                     f"{'n/a' if ld.rate is None else f'{ld.rate:,.0f}'} |")
    lines += [
        "",
        "CPU from the producer's start to the last row landed, in cores (1.00 = one core busy all the time; the "
        "machine has 2): the host's busy time (/proc/stat), the stack's containers' (cgroup cpuacct), the rest "
        "(the producer on the host, this bench, and other work on the machine), and the share of the time in "
        "which some task waited for a CPU (/proc/pressure/cpu, \"some\"):",
        "",
        "| run | load average at the start | host busy | stack's containers | the rest | CPU waited, % of the time |",
        "|---|---|---|---|---|---|",
    ]
    for i, ld in enumerate(loads, 1):
        if ld.cpu:
            waited = "n/a" if ld.cpu.waiting is None else f"{ld.cpu.waiting:.0%}"
            lines.append(f"| {i} | {ld.loadavg:.1f} | {ld.cpu.host:.2f} | {ld.cpu.stack:.2f} | "
                         f"{ld.cpu.host - ld.cpu.stack:.2f} | {waited} |")
    rates = [ld.rate for ld in loads if ld.rate]
    met = peak_total is not None and peak_total <= BUDGET_BYTES
    lines += [
        "",
        f"**Whole stack at its peak under load: {mib(peak_total)} MiB** (target <= 3 GiB = 3,072 MiB measured "
        f"with docker stats during a replay: {'met' if met else 'MISSED'}). Sum of the mem_limits of the "
        f"containers that run: {mib(limits_total)} MiB. Ingest rate, from the first tick's produced_at to the "
        f"last row visible in crypto_prices: {spread(rates, '{:,.0f}')} ticks/s (min / median / max). "
        + (f"Above {NEAR_LIMIT:.0%} of their mem_limit in some sample (docker stats): {', '.join(flagged)}."
           if flagged else f"No container went above {NEAR_LIMIT:.0%} of its mem_limit in any sample (docker stats)."),
        "",
        "The kernel peak is the cgroup's own high-water mark from the producer's start to the end of the after "
        "window (memory.max_usage_in_bytes, reset as the producer starts), page cache included (written Kafka "
        "segments, PostgreSQL's files): the kernel reclaims that cache when a container nears its limit, and "
        "counts each time it had to in failcnt, so a "
        "kernel peak at the limit with failcnt > 0 means cache was reclaimed, not an OOM kill (that is the "
        "OOMKilled flag, under Problems). "
        + ("" if all(ld.kernel_reset for ld in loads) else "(The high-water marks could not be reset here: they "
           "count from the container's start.) ")
        + "CPU per container: cpuacct.usage over the load window, in cores, median over the runs. The "
        "ingest rate depends on the CPU the stack gets: on this machine the 2 cores are shared with other "
        "sessions' work, so compare rates only with the CPU table beside them.",
    ]
    lines.append("")
    for i, ld in enumerate(loads, 1):
        connector = ld.connector or {}
        state = connector.get("connector", {}).get("state", "unknown")
        tasks = ", ".join(f"task {t.get('id')} {t.get('state')}" for t in connector.get("tasks", []))
        containers = ", ".join(f"{s} {h['restarts']} restarts{' OOMKilled' if h['oom_killed'] else ''}"
                               for s, h in sorted(ld.health.items()))
        lines.append(f"- Run {i}, after the load: sink connector {state}, {tasks}; {containers}.")
    return lines


def main(args: argparse.Namespace) -> None:
    missing = [i for i in standin_images() if run(["docker", "image", "inspect", i]).returncode != 0]
    if missing:
        raise SystemExit(f"images missing: {missing}; build them with `bash tests/compose/build_standins.sh`")
    facts = engine_facts()
    runs: list[Run] = []
    work = Path(tempfile.mkdtemp(prefix="compose-bench-"))
    try:
        folder = ROOT if args.in_place else make_clone(work)
        commit = run(["git", "rev-parse", "--short", "HEAD"], cwd=folder).stdout.strip()
        if args.in_place:
            changed = run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder).stdout.split("\n")
            commit += (f" plus the working tree's uncommitted changes ({len([c for c in changed if c])} files)"
                       if any(changed) else " (working tree clean)")
        settings = read_env_file(folder / ".env")  # as compose reads it: the environment wins
        heaps = {key: os.environ.get(key, settings.get(key, "")) for key in HEAP_SETTINGS}
        for i in range(1, args.runs + 1):
            runs.append(one_run(args, folder, work, i))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = report(runs, args, facts, commit, heaps)
    print("\n".join(lines))
    write_results(args, "compose.md", "\n".join(lines) + "\n")


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # unwinds through the finally blocks: down -v happens


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="fresh projects, each: cold up, load, warm up (2)")
    parser.add_argument("--ticks", type=int, default=200_000, help="ticks replayed under load; 0 = no load (200000)")
    parser.add_argument("--symbols", type=int, default=3, help="symbols in the replay (3)")
    parser.add_argument("--step-ms", type=float, default=50.0,
                        help="event-time spacing of the replay's ticks, all symbols together (50 ms)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle sampling after up (30)")
    parser.add_argument("--settle-seconds", type=float, default=30.0,
                        help="sampling after the last tick landed (30)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between docker stats samples (2)")
    parser.add_argument("--timeout", type=float, default=900.0, help="longest wait for every tick to land (900)")
    parser.add_argument("--in-place", action="store_true",
                        help="run compose in this working tree (its .env and uncommitted changes) instead of a fresh "
                             "clone of HEAD")
    parser.add_argument("--machine", default=f"{os.cpu_count()} cores",
                        help="how the results file describes the machine (default: its core count)")
    add_options(parser, {"runs": 1, "ticks": 2000, "idle_seconds": 4.0, "settle_seconds": 4.0, "timeout": 300.0})
    signal.signal(signal.SIGTERM, _terminate)
    main(parse(parser))
