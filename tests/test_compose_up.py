"""`docker compose up` for real, as a new user runs it: a clone made the way Git for Windows makes one
(core.autocrlf=true), nothing set beforehand, `docker compose up -d --wait`, then what the user checks: the
replayed ticks in crypto_prices and their candles as powerbi_reader through the published port, the chart
page through its port, a restarted Connect that loses nothing, `down` + `up` that keeps the data, `down -v`
that leaves nothing.

Runs on a real Docker engine with Compose v2 (tests/compose/engine.sh installs both). No image registry is
reachable here, so the upstream images are stand-ins built under the same names (tests/compose/standins/,
their CONTRACT.md says what they prove and what not) and tests/compose/standins.yml adds `pull_policy: never`.
Where no engine answers these tests are skipped, unless CRYPTOPIPE_COMPOSE_TESTS=required (CI), which makes
a missing engine a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import psycopg
import pytest
import requests
from confluent_kafka import Producer
from confluent_kafka.serialization import MessageField, SerializationContext

from core.settings import PROJECT_ROOT, SECRET_KEYS, read_env_file
from producer.schema_registration import registry_client, value_serializer
from stack.ports import claimed_ports
from tests.support import TICK_SCHEMA, now_ms, poll_until

# First start builds the stand-ins and resolves the Connect plugins with Maven inside a container.
pytestmark = [pytest.mark.compose, pytest.mark.timeout(3600)]

PUBLISHED_PORTS = ("POSTGRES_PORT", "KAFKA_PORT", "REGISTRY_PORT", "CONNECT_PORT", "CHART_PORT")
ONE_SHOTS = {"secrets", "db-init", "kafka-setup", "connect-plugins", "control-setup", "chart-assets"}
HEALTHY = {"postgres", "broker", "registry", "connect", "connect-supervisor", "chart"}
SAMPLE = "tests/fixtures/producer/sample_ticks.jsonl"
MEMORY_BUDGET_BYTES = 3 * 1024**3


def engine_problem() -> str | None:
    """Why compose cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker client"
    for argv in (["docker", "info"], ["docker", "compose", "version"]):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            return f"`{' '.join(argv)}` failed: {(result.stderr or result.stdout).strip()[-300:]}"
    return None


@dataclass
class ComposeProject:
    clone: Path
    name: str
    env: dict[str, str]

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        argv = ["docker", "compose", "-p", self.name, "-f", "docker-compose.yml",
                "-f", "tests/compose/standins.yml", *args]
        result = subprocess.run(argv, cwd=self.clone, env=self.env, capture_output=True, text=True,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"`docker compose {' '.join(args)}` exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{self.logs()}")
        return result

    def logs(self, tail: int = 40) -> str:
        result = subprocess.run(["docker", "compose", "-p", self.name, "-f", "docker-compose.yml", "logs",
                                 "--no-color", "--tail", str(tail)], cwd=self.clone, env=self.env,
                                capture_output=True, text=True, timeout=120, check=False)
        return result.stdout[-12000:]

    def up(self) -> subprocess.CompletedProcess:
        return self.compose("up", "-d", "--wait", timeout=1800)

    def secret(self, name: str) -> str:
        """The README's command: `docker compose run --rm secrets show NAME`."""
        return self.compose("run", "--rm", "-T", "secrets", "show", name, timeout=120).stdout.strip()

    def port(self, setting: str) -> int:
        return int(self.env[setting])

    def dsn(self, user: str, password: str) -> str:
        dbname = read_env_file(self.clone / ".env")["POSTGRES_DB"]  # the database compose made: the clone's .env
        return psycopg.conninfo.make_conninfo(host="127.0.0.1", port=self.port("POSTGRES_PORT"), dbname=dbname,
                                              user=user, password=password, connect_timeout=5)

    def query(self, sql: str, *params: object, as_reader: bool = False) -> list[tuple]:
        user, secret = ("powerbi_reader", "POWERBI_DB_PASSWORD") if as_reader else ("postgres", "POSTGRES_PASSWORD")
        with psycopg.connect(self.dsn(user, self.secrets[secret])) as conn:
            return conn.execute(sql, params).fetchall()

    @cached_property
    def secrets(self) -> dict[str, str]:
        return {key: self.secret(key) for key in ("POSTGRES_PASSWORD", "POWERBI_DB_PASSWORD",
                                                  "REGISTRY_PRODUCER_PASSWORD")}

    @cached_property
    def topic(self) -> str:
        return read_env_file(self.clone / ".env")["TICKS_TOPIC"]

    def containers(self) -> list[dict]:
        out = self.compose("ps", "--all", "--format", "json", timeout=120).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks the engine still holds for this project."""
        label = f"label=com.docker.compose.project={self.name}"
        found = {}
        for kind, argv in (("containers", ["docker", "ps", "-aq", "--filter", label]),
                           ("volumes", ["docker", "volume", "ls", "-q", "--filter", label]),
                           ("networks", ["docker", "network", "ls", "-q", "--filter", label])):
            found[kind] = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
        return found


@pytest.fixture(scope="module")
def standins() -> None:
    """A Docker engine with Compose v2, and the stand-in images built (cached layers make this quick)."""
    problem = engine_problem()
    if problem:
        if os.environ.get("CRYPTOPIPE_COMPOSE_TESTS") == "required":
            pytest.fail(f"CRYPTOPIPE_COMPOSE_TESTS=required but Docker Compose cannot run: {problem}")
        pytest.skip(f"no Docker engine with Compose v2 ({problem}); tests/compose/engine.sh install sets one up")
    subprocess.run(["bash", "tests/compose/build_standins.sh"], cwd=PROJECT_ROOT, check=True, timeout=2400)


@pytest.fixture(scope="module")
def project(standins: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeProject]:
    clone = tmp_path_factory.mktemp("compose") / "cryptopipe"
    subprocess.run(["git", "-c", "core.autocrlf=true", "clone", "-q", "--no-hardlinks",
                    "-c", "core.autocrlf=true", str(PROJECT_ROOT), str(clone)], check=True, timeout=300)
    with claimed_ports(PUBLISHED_PORTS) as ports:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOPIPE_", "COMPOSE_"))},
               **ports, "PRODUCER_SOURCE": "replay", "PRODUCER_REPLAY_SPEED": "0"}
        handle = ComposeProject(clone, f"cryptopipe-test-{uuid.uuid4().hex[:8]}", env)
        try:
            yield handle
        finally:
            handle.compose("down", "-v", "--remove-orphans", timeout=600, check=False)


@pytest.fixture(scope="module")
def started(project: ComposeProject) -> subprocess.CompletedProcess:
    began = time.monotonic()
    result = project.up()
    record(project, "up_cold_seconds", round(time.monotonic() - began))
    return result


def record(project: ComposeProject, key: str, value: object) -> None:
    """Measurements (start-up, memory) for whoever reads the run later: printed (pytest -s) and kept in
    $CRYPTOPIPE_ARTIFACTS/compose/measurements.json (default: <tmp>/cryptopipe-artifacts)."""
    root = Path(os.environ.get("CRYPTOPIPE_ARTIFACTS") or Path(tempfile.gettempdir()) / "cryptopipe-artifacts")
    path = root / "compose" / "measurements.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    found = json.loads(path.read_text()) if path.exists() else {}
    found.setdefault(project.name, {})[key] = value
    path.write_text(json.dumps(found, indent=1))
    print(f"\ncompose measurement {key}: {value}")


def sample_ticks(clone: Path) -> set[tuple[str, float, int]]:
    return {(t["symbol"], t["price"], t["event_time"])
            for t in map(json.loads, (clone / SAMPLE).read_text().splitlines())}


def landed_ticks(project: ComposeProject) -> int:
    return project.query("SELECT count(*) FROM crypto_prices")[0][0]


def produce_ticks(project: ComposeProject, symbol: str, count: int) -> None:
    """Ticks from the host through the published ports, as any client with the schema would send them."""
    registry = f"http://127.0.0.1:{project.port('REGISTRY_PORT')}/apis/ccompat/v7"
    # The serializer registers (a write): as the registry's producer user (docs/registry-auth.md).
    auth = ("producer", project.secrets["REGISTRY_PRODUCER_PASSWORD"])
    serialize = value_serializer(registry_client(registry, auth), TICK_SCHEMA)
    # The broker takes SASL only: the principal `producer`, its password from the secrets volume (README "Security").
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{project.port('KAFKA_PORT')}",
                         "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                         "sasl.username": "producer", "sasl.password": project.secret("KAFKA_PRODUCER_PASSWORD"),
                         "enable.idempotence": True})
    base = now_ms() - 120_000
    for n in range(count):
        value = {"symbol": symbol, "price": 100.0 + n, "event_time": base + n, "volume": 1.0, "feed": "REPLAY",
                 "produced_at": now_ms(), "producer_id": "tests", "sequence": n}
        producer.produce(project.topic, key=symbol.encode(),
                         value=serialize(value, SerializationContext(project.topic, MessageField.VALUE)))
        producer.poll(0)
    assert producer.flush(60) == 0, "ticks left unsent"


def rows_of(project: ComposeProject, symbol: str) -> tuple[int, int]:
    """(rows, distinct ticks) of a symbol."""
    return project.query("SELECT count(*), count(DISTINCT event_time) FROM crypto_prices WHERE symbol = %s",
                         symbol)[0]


# -- the stand-ins -----------------------------------------------------------------------------------------

def test_the_postgres_stand_in_keeps_the_images_first_start_contract(standins: None) -> None:
    """Init scripts on an empty volume only, run by a socket-only temporary server, *_FILE variables, SCRAM
    for other containers (tests/compose/standins/postgres/check.sh; CONTRACT.md beside it)."""
    check = subprocess.run(["bash", "tests/compose/standins/postgres/check.sh"], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, timeout=600, check=False)
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]
    assert re.search(r"(?m)^\d+ passed, 0 failed$", check.stdout)


# -- the clone ------------------------------------------------------------------------------------------------

def test_a_clone_made_with_autocrlf_checks_out_every_text_file_with_lf(project: ComposeProject) -> None:
    """Git for Windows' default (core.autocrlf=true) would give the containers' scripts CRLF endings."""
    listing = subprocess.run(["git", "ls-files", "--eol"], cwd=project.clone, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    text = [line.split()[-1] for line in listing if line.split()[0] == "i/lf"]
    assert "scripts/init_db.sh" in text and "connect/entrypoint.sh" in text
    crlf = [name for name in text if b"\r\n" in (project.clone / name).read_bytes()]
    assert crlf == []


# -- up ---------------------------------------------------------------------------------------------------------

def test_up_wait_brings_every_service_up_with_nothing_set_beforehand(project: ComposeProject,
                                                                   started: subprocess.CompletedProcess) -> None:
    states = {c["Service"]: c for c in project.containers()}
    unhealthy = {s: states[s]["Health"] for s in HEALTHY if states[s].get("Health") != "healthy"}
    assert unhealthy == {}
    failed = {s: states[s]["ExitCode"] for s in ONE_SHOTS if states[s]["State"] != "exited" or states[s]["ExitCode"]}
    assert failed == {}


def test_passwords_are_generated_in_the_stack_and_none_lands_in_the_clone(project: ComposeProject,
                                                                         started: subprocess.CompletedProcess) -> None:
    values = {key: project.secret(key) for key in SECRET_KEYS}
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", value) for value in values.values()), values.keys()
    assert len(set(values.values())) == len(SECRET_KEYS)
    status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=project.clone,
                            capture_output=True, text=True, check=True).stdout
    assert status == ""  # no secrets file, no state, nothing written into the clone


def test_the_replayed_ticks_land_and_power_bi_reads_their_candles_through_the_published_port(
        project: ComposeProject, started: subprocess.CompletedProcess) -> None:
    expected = sample_ticks(project.clone)
    assert poll_until(lambda: landed_ticks(project), lambda n: n >= len(expected), 300) == len(expected)
    landed = project.query("SELECT symbol, price, (extract(epoch FROM event_time) * 1000)::bigint FROM crypto_prices")
    assert set(landed) == expected
    candles = project.query("SELECT symbol, count(*), sum(tick_count) FROM view_crypto_candles GROUP BY symbol",
                            as_reader=True)
    per_symbol = {s: sum(1 for t in expected if t[0] == s) for s in {t[0] for t in expected}}
    assert {symbol: ticks for symbol, _, ticks in candles} == per_symbol
    assert all(minutes == 10 for _, minutes, _ in candles)  # the sample is ten minutes long


def test_the_stack_fits_its_memory_budget_while_it_works(project: ComposeProject,
                                                          started: subprocess.CompletedProcess) -> None:
    """docker stats right after the replay landed: the sum of every container's memory."""
    out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{json .}}"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    ours = {c["Name"] for c in project.containers()}
    usage = {row["Name"]: row["MemUsage"].split(" / ")[0] for row in map(json.loads, out.splitlines())
             if row["Name"] in ours}
    total = sum(parse_bytes(value) for value in usage.values())
    record(project, "memory", {name.removeprefix(project.name + "-"): value for name, value in sorted(usage.items())})
    record(project, "memory_total_gib", round(total / 1024**3, 2))
    assert usage and total <= MEMORY_BUDGET_BYTES, usage


def parse_bytes(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)\s*([KMGT]?i?B)", text.strip()).groups()
    return float(number) * {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4,
                            "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


def test_the_chart_page_and_its_power_bi_file_answer_on_the_published_port(
        project: ComposeProject, started: subprocess.CompletedProcess) -> None:
    base = f"http://127.0.0.1:{project.port('CHART_PORT')}"
    page = requests.get(base + "/", timeout=10)
    assert page.status_code == 200 and "lightweight-charts" in page.text
    assert requests.get(base + "/vendor/lightweight-charts.js", timeout=10).status_code == 200
    assert {"BTC-USD", "ETH-USD"} <= set(json.dumps(requests.get(base + "/api/meta", timeout=10).json()).split('"'))
    (source,) = requests.get(base + "/powerbi.pbids", timeout=10).json()["connections"]
    assert source["details"]["address"] == {"server": f"localhost:{project.port('POSTGRES_PORT')}",
                                            "database": read_env_file(project.clone / ".env")["POSTGRES_DB"]}


# -- restarts ------------------------------------------------------------------------------------------------

def test_restarting_connect_while_ticks_arrive_loses_and_doubles_none(project: ComposeProject,
                                                                     started: subprocess.CompletedProcess) -> None:
    tag = uuid.uuid4().hex[:5].upper()
    before, during = f"RSA{tag}-USD", f"RSB{tag}-USD"
    produce_ticks(project, before, 500)
    restart = threading.Thread(target=project.compose, args=("restart", "connect"), kwargs={"timeout": 300})
    restart.start()
    time.sleep(1)
    produce_ticks(project, during, 500)
    restart.join()
    for name in (before, during):
        assert poll_until(lambda n=name: rows_of(project, n), lambda r: r[0] >= 500, 300) == (500, 500)


def test_down_then_up_keeps_the_data_and_the_passwords(project: ComposeProject,
                                                       started: subprocess.CompletedProcess) -> None:
    before = landed_ticks(project)
    password = project.secret("POWERBI_DB_PASSWORD")
    project.compose("down", timeout=600)
    assert project.leftovers()["containers"] == []
    began = time.monotonic()
    project.up()
    record(project, "up_warm_seconds", round(time.monotonic() - began))
    assert project.secret("POWERBI_DB_PASSWORD") == password
    assert landed_ticks(project) >= before
    symbol = f"AFT{uuid.uuid4().hex[:5].upper()}-USD"
    produce_ticks(project, symbol, 100)
    assert poll_until(lambda: rows_of(project, symbol), lambda r: r[0] >= 100, 300) == (100, 100)
    assert project.query("SELECT sum(tick_count) FROM view_crypto_candles WHERE symbol = %s", symbol,
                         as_reader=True) == [(100,)]


def test_down_v_leaves_nothing_behind(project: ComposeProject, started: subprocess.CompletedProcess) -> None:
    project.compose("down", "-v", timeout=600)
    assert project.leftovers() == {"containers": [], "volumes": [], "networks": []}
