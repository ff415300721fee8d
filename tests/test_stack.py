"""The native stack as a user sees it: `status` (every service, the connector, the flow of data), `up` again on a
running stack (nothing restarted, data kept, the registry's levels applied), compose's one-shot applying the same
levels, and the registry's contract: schemas survive a restart, the tick subject enforces FULL, and the live
registry rejects exactly what the pull-request check rejects."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests
import yaml
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from control.connector import load_connector
from control.schema_compat import main as check_main
from core import registry
from core.settings import PROJECT_ROOT
from stack.process import ManagedProcess
from tests.conftest import StackHandle, run_stack_cli
from tests.support import (
    TickProducer,
    consume,
    new_symbol,
    poll_until,
    query,
    supervisor_restarts,
    tick,
    wait_for_rows,
    wait_until,
)

pytestmark = pytest.mark.stack

SERVICES = ("postgres", "kafka", "registry", "connect", "chart")
TICK_SCHEMA = json.loads((PROJECT_ROOT / "schemas" / "crypto_tick.avsc").read_text())
SERVICE_LINE = re.compile(r"^(?P<name>\S+)\s+(?P<state>healthy|running, NOT healthy|stopped|running|not started|"
                          r"exited|running, NO KEEPER|DOWN)\s+pid=(?P<pid>\S+)")
# stack/keeper.py starts a supervisor that died again within this many seconds (README, "Operating it")
SUPERVISOR_BACK_WITHIN = 10.0
FLOW_LINE = re.compile(r"^flow (?P<stage>\w+):\s+(?P<text>.*)$")


@dataclass
class Status:
    code: int
    states: dict[str, str]
    pids: dict[str, str]
    connector: str
    flow: dict[str, str]


def status(stack: StackHandle) -> Status:
    """`scripts/stack.sh status`, parsed line by line."""
    result = run_stack_cli("status", env=stack.env(), timeout=120)
    states, pids, flow, connector = {}, {}, {}, ""
    for line in result.stdout.splitlines():
        if m := SERVICE_LINE.match(line):
            states[m["name"]], pids[m["name"]] = m["state"], m["pid"]
        elif m := FLOW_LINE.match(line):
            flow[m["stage"]] = m["text"]
        elif line.startswith("connector "):
            connector = line
    return Status(result.returncode, states, pids, connector, flow)


def number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in {text!r}"
    return int(found.group(1))


def lag(stack: StackHandle) -> int:
    return number(r"^(\d+) records behind", status(stack).flow["connector"])


def registry_levels(stack: StackHandle) -> dict[str, str]:
    """What the live registry enforces, keyed like core.registry.Rules.levels()."""
    client = registry.registry_client(stack.registry_url)
    rules = registry.load_rules(stack.settings.env)
    return {subject: registry.level(client, None if subject == registry.GLOBAL else subject)
            for subject in rules.levels()}


def tamper_levels(stack: StackHandle) -> None:
    """Levels nobody configured: NONE globally and on every configured subject (an admin could)."""
    client = registry.registry_client(stack.registry_url, stack.settings.registry_auth("admin"))
    for subject in registry.load_rules(stack.settings.env).levels():
        registry.set_level(client, "NONE", None if subject == registry.GLOBAL else subject)


# -- status -------------------------------------------------------------------------------------------------

def test_status_shows_every_service_healthy_and_the_connector_running(stack: StackHandle) -> None:
    seen = status(stack)
    assert seen.code == 0
    assert {name: seen.states.get(name) for name in SERVICES} == dict.fromkeys(SERVICES, "healthy")
    assert seen.states["supervisor"] == "running"
    assert re.match(r"connector crypto-prices-jdbc-sink: RUNNING; task 0 RUNNING\b", seen.connector), seen.connector


def test_status_shows_ticks_flowing_through_the_connector_into_rows_and_candles(stack: StackHandle) -> None:
    symbol = new_symbol("FLOW")
    sent = TickProducer(stack).send(tick(symbol, n) for n in range(40))
    assert wait_for_rows(stack, [symbol], sent) == sent
    seen = poll_until(lambda: status(stack), lambda s: number(r"^(\d+) records behind", s.flow["connector"]) == 0, 60)
    assert number(r"^(\d+) records behind", seen.flow["connector"]) == 0, seen.flow
    assert number(r"^(\d+) rows landed in crypto_prices in the last minute", seen.flow["postgres"]) >= sent
    assert re.match(r"newest 1m candle \S+ \d{4}-\d\d-\d\d \d\d:\d\d UTC \(close [\d.e+-]+\)", seen.flow["candles"])
    if stack.owned:
        assert seen.flow["producer"].startswith("not started")  # the test stack runs without one


def test_the_connector_lag_counts_the_records_the_sink_has_not_committed(stack: StackHandle) -> None:
    """Lag is end offsets minus the sink group's commits: with the connector paused, every new record waits."""
    api, name = stack.connect_api, load_connector()["name"]
    assert api.put(f"/connectors/{name}/pause", timeout=30).status_code == 202
    try:
        poll_until(lambda: api.get(f"/connectors/{name}/status", timeout=10).json()["tasks"][0]["state"],
                   lambda state: state == "PAUSED", 60)
        assert poll_until(lambda: lag(stack), lambda n: n == 0, 60) == 0  # what came before is committed
        symbol = new_symbol("LAG")
        sent = TickProducer(stack).send(tick(symbol, n) for n in range(25))
        assert lag(stack) == sent
    finally:
        assert api.put(f"/connectors/{name}/resume", timeout=30).status_code == 202
    assert wait_for_rows(stack, [symbol], sent) == sent


def test_the_database_runs_the_major_version_both_forms_pin(stack: StackHandle) -> None:
    """POSTGRES_VERSION is the major version (compose's image tag); `status` names the exact one running."""
    version = query(stack, "SHOW server_version")[0][0].split()[0]
    assert int(version.split(".")[0]) == int(stack.settings["POSTGRES_VERSION"])
    assert f"(PostgreSQL {version})" in status(stack).flow["postgres"]


# -- the registry: durable, FULL on the ticks, the check's verdicts ------------------------------------------

@pytest.fixture(scope="module")
def record_from_before_a_restart(stack: StackHandle) -> dict:
    """A record written with a schema registered only now, then the registry stopped (status looked at
    meanwhile) and started again."""
    topic = f"test.restart.{uuid.uuid4().hex[:8]}"
    schema = {**TICK_SCHEMA, "name": f"Restart{uuid.uuid4().hex[:8]}"}  # new content: a new schema id
    value = tick(new_symbol("RST"), 1)
    TickProducer(stack, json.dumps(schema), topic=topic).send([value])
    (message,) = consume(stack, topic, lambda m: True, 1, settle=0)
    stack.stop_registry()
    try:
        while_down = status(stack)
    finally:
        stack.start_registry()
    return {"topic": topic, "value": value, "raw": message.value(), "while_down": while_down}


def test_the_registry_keeps_schemas_across_a_restart(stack: StackHandle, record_from_before_a_restart: dict) -> None:
    """A schema kept in memory only would be gone: a fresh client (no cache) decodes the old record."""
    before = record_from_before_a_restart
    decode = AvroDeserializer(registry.registry_client(stack.registry_url))
    decoded = decode(before["raw"], SerializationContext(before["topic"], MessageField.VALUE))
    assert decoded["symbol"] == before["value"]["symbol"] and decoded["price"] == before["value"]["price"]


def test_status_names_a_stopped_service_and_exits_non_zero(record_from_before_a_restart: dict) -> None:
    down = record_from_before_a_restart["while_down"]
    assert down.code == 1
    assert down.states["registry"] == "stopped" and down.states["kafka"] == "healthy"


def post_version(stack: StackHandle, subject: str, schema: dict) -> requests.Response:
    return requests.post(f"{stack.registry_url}/subjects/{subject}/versions", json={"schema": json.dumps(schema)},
                         auth=stack.settings.registry_auth("producer"), timeout=30)


def without(schema: dict, field: str) -> dict:
    return {**schema, "fields": [f for f in schema["fields"] if f["name"] != field]}


def test_the_tick_subject_is_full_and_rejects_a_removed_field_with_409(stack: StackHandle) -> None:
    """Removing a field passes BACKWARD (new readers ignore it) but not FULL (old readers need it)."""
    subject = f"{stack.settings['TICKS_TOPIC']}-value"
    client = registry.registry_client(stack.registry_url, stack.settings.registry_auth("producer"))
    assert registry.level(client, subject) == "FULL"
    registry.register(client, subject, json.dumps(TICK_SCHEMA))  # the subject exists (as the producer makes it)
    versions = registry.versions(client, subject)
    rejected = post_version(stack, subject, without(TICK_SCHEMA, "producer_id"))
    assert rejected.status_code == 409, rejected.text
    assert registry.versions(client, subject) == versions


def test_other_subjects_get_the_default_level_which_rejects_a_required_new_field(stack: StackHandle) -> None:
    subject = f"test-default-{uuid.uuid4().hex[:8]}-value"
    client = registry.registry_client(stack.registry_url, stack.settings.registry_auth("producer"))
    assert registry.level(client, subject) == registry.load_rules(stack.settings.env).default == "BACKWARD"
    registry.register(client, subject, json.dumps(TICK_SCHEMA))
    required = {**TICK_SCHEMA, "fields": [*TICK_SCHEMA["fields"], {"name": "exchange", "type": "string"}]}
    assert post_version(stack, subject, required).status_code == 409
    assert post_version(stack, subject, without(TICK_SCHEMA, "producer_id")).status_code == 200


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   check=True, capture_output=True)


EDITS: dict[str, Callable[[dict], dict]] = {
    "remove a field": lambda s: without(s, "producer_id"),
    "change a type": lambda s: {**s, "fields": [{**f, "type": "string"} if f["name"] == "price" else f
                                                for f in s["fields"]]},
    "rename without an alias": lambda s: {**s, "fields": [{**f, "name": "ticker"} if f["name"] == "symbol" else f
                                                          for f in s["fields"]]},
    "add a field without a default": lambda s: {**s, "fields": [*s["fields"], {"name": "venue", "type": "string"}]},
    "add an optional field with a default": lambda s: {**s, "fields": [
        *s["fields"], {"name": "venue", "type": ["null", "string"], "default": None}]},
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_the_live_registry_rejects_what_the_check_rejects(stack: StackHandle, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture, edit: str) -> None:
    """docs/schema-evolution.md: the pull-request check (the project's rules file, its git history) and the
    registry the producer registers with give the same verdict on the tick schema."""
    repo = tmp_path / "repo"
    (repo / "schemas").mkdir(parents=True)
    (repo / "schemas" / "crypto_tick.avsc").write_text(json.dumps(TICK_SCHEMA, indent=2))
    (repo / "schemas" / "compatibility.json").write_text((PROJECT_ROOT / "schemas" / "compatibility.json").read_text())
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "v1")
    changed = EDITS[edit](TICK_SCHEMA)
    (repo / "schemas" / "crypto_tick.avsc").write_text(json.dumps(changed, indent=2))
    check = check_main(["--repo", str(repo), "--registry", stack.registry_url])
    out = capsys.readouterr().out

    subject = f"{stack.settings['TICKS_TOPIC']}-value"
    client = registry.registry_client(stack.registry_url, stack.settings.registry_auth("producer"))
    registry.register(client, subject, json.dumps(TICK_SCHEMA))
    if check == 1:  # incompatible: the live registry must refuse to register it
        live = post_version(stack, subject, changed)
        assert live.status_code == 409, f"{edit}: the check rejects it ({out}), the registry answered {live.text}"
    else:  # compatible: asked, not registered (the live subject stays as the other tests expect it)
        assert check == 0, out
        assert registry.is_compatible(client, subject, json.dumps(changed), "latest"), edit
    assert (check == 1) == (edit != "add an optional field with a default")


# -- up again; compose's one-shot --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def second_up(stack: StackHandle) -> dict:
    """`up` on the running stack, after levels were changed behind its back and ticks landed."""
    if not stack.owned:
        pytest.skip("the stack was started outside the tests (CRYPTOPIPE_TEST_STACK=running): not restarting it")
    symbol = new_symbol("KEEP")
    sent = TickProducer(stack).send(tick(symbol, n) for n in range(10))
    assert wait_for_rows(stack, [symbol], sent) == sent
    before = status(stack)
    tamper_levels(stack)
    again = run_stack_cli("up", "--no-fetch", "--no-producer", env=stack.env(), timeout=300)
    return {"result": again, "before": before, "after": status(stack), "levels": registry_levels(stack),
            "symbol": symbol, "sent": sent}


def test_up_is_idempotent_on_a_running_stack(stack: StackHandle, second_up: dict) -> None:
    """Nothing is restarted (same processes), nothing lost (the ticks are still there), all healthy."""
    again, before, after = second_up["result"], second_up["before"], second_up["after"]
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "connector RUNNING" in again.stdout
    assert after.pids == before.pids and all(pid != "-" for name, pid in after.pids.items() if name != "producer")
    assert after.code == 0
    assert query(stack, "SELECT count(*) FROM crypto_prices WHERE symbol = %s", second_up["symbol"])[0][0] == \
        second_up["sent"]


def test_up_applies_the_levels_of_compatibility_json(stack: StackHandle, second_up: dict) -> None:
    """docs/schema-evolution.md: the check reads the file and `stack up` applies it, so the two agree."""
    assert second_up["levels"] == registry.load_rules(stack.settings.env).levels()
    assert second_up["levels"][f"{stack.settings['TICKS_TOPIC']}-value"] == "FULL"


def test_composes_one_shot_applies_the_same_levels_as_stack_up(stack: StackHandle, tmp_path: Path) -> None:
    """docker-compose.yml's control-setup command, run against the native stack."""
    service = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]["control-setup"]
    command = service["command"]
    assert command[0] == "python"
    expected = registry.load_rules(stack.settings.env).levels()
    tamper_levels(stack)
    assert registry_levels(stack) != expected
    env = {**stack.env(), **{k: v for k, v in service["environment"].items() if "${" not in str(v)},
           "SCHEMA_REGISTRY_URL": stack.registry_url, "CONNECT_URL": stack.connect_url}  # the containers' names
    for key in [k for k in service["environment"] if k.endswith("_FILE")]:  # the container's secret files
        secret = tmp_path / key
        secret.write_text(stack.settings[key.removesuffix("_FILE")] + "\n")
        env[key] = str(secret)
    try:
        result = subprocess.run([sys.executable, *command[1:]], env=env, cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert registry_levels(stack) == expected
    finally:  # whatever happened, the stack enforces its levels again for the tests after this one
        admin = registry.registry_client(stack.registry_url, stack.settings.registry_auth("admin"))
        registry.apply_levels(admin, registry.load_rules(stack.settings.env))
    assert "connector registered and RUNNING" in result.stdout


# -- the supervisor is supervised too ------------------------------------------------------------------------

def test_a_killed_supervisor_is_reported_and_back_within_the_stated_time(stack: StackHandle) -> None:
    """kill -9 of the supervisor: while it is gone `status` says DOWN and exits 1 (its keeper is held
    with SIGSTOP to look at that moment); let go, the keeper starts it again; a second kill -9 with the
    keeper free is repaired within SUPERVISOR_BACK_WITHIN seconds (the keeper's backoff after two quick
    deaths is 2 s); the restart count carries on from what the dead one left."""
    if not stack.owned:
        pytest.skip("the stack was started outside the tests (CRYPTOPIPE_TEST_STACK=running): not killing it")
    supervisor = ManagedProcess("supervisor", stack.settings.state_dir)
    keeper = ManagedProcess("supervisor-keeper", stack.settings.state_dir)
    before = status(stack)
    assert before.code == 0 and before.states["supervisor"] == "running", before
    restarts = supervisor_restarts(stack)
    keeper_pid, first = keeper.pid(), supervisor.pid()
    assert keeper_pid and first

    os.kill(keeper_pid, signal.SIGSTOP)
    try:
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: supervisor.pid() is None, 10, "the killed supervisor gone")
        while_down = status(stack)
        health = stack.settings.state_dir / "supervisor.json"  # nobody writes it now: as if 5 restarts more
        health.write_text(json.dumps({**json.loads(health.read_text()), "restarts": restarts + 5}))
    finally:
        os.kill(keeper_pid, signal.SIGCONT)
    assert while_down.code == 1 and while_down.states["supervisor"] == "DOWN", while_down
    wait_until(lambda: supervisor.pid() not in (None, first), SUPERVISOR_BACK_WITHIN, "the supervisor back")

    second = supervisor.pid()
    killed_at = time.monotonic()
    os.kill(second, signal.SIGKILL)
    wait_until(lambda: supervisor.pid() not in (None, second), SUPERVISOR_BACK_WITHIN, "the supervisor back again")
    print(f"supervisor back {time.monotonic() - killed_at:.1f}s after kill -9")
    assert keeper.pid() == keeper_pid  # the keeper itself never stopped
    after = poll_until(lambda: status(stack), lambda s: s.code == 0, 60)
    assert after.code == 0 and after.states["supervisor"] == "running", after
    assert supervisor_restarts(stack) >= restarts + 5  # carried over, not reset to 0 by the restart


def test_a_killed_keeper_is_reported_and_up_restores_both(stack: StackHandle) -> None:
    """Nothing watches the keeper: `status` says `running, NO KEEPER` and exits 1 until `up` starts a keeper
    (and a supervisor under it) again; the orphaned supervisor is stopped, not doubled."""
    if not stack.owned:
        pytest.skip("the stack was started outside the tests (CRYPTOPIPE_TEST_STACK=running): not killing it")
    supervisor = ManagedProcess("supervisor", stack.settings.state_dir)
    keeper = ManagedProcess("supervisor-keeper", stack.settings.state_dir)
    orphan, keeper_pid = supervisor.pid(), keeper.pid()
    assert orphan and keeper_pid
    os.kill(keeper_pid, signal.SIGKILL)
    wait_until(lambda: keeper.pid() is None, 10, "the killed keeper gone")
    seen = status(stack)
    assert seen.code == 1 and seen.states["supervisor"] == "running, NO KEEPER", seen
    again = run_stack_cli("up", "--no-fetch", "--no-producer", env=stack.env(), timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert keeper.pid() not in (None, keeper_pid) and supervisor.pid() not in (None, orphan)
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
    assert status(stack).code == 0
