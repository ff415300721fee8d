"""Least privilege on the real stack: each role and endpoint can do its job and nothing else, secrets are
generated, private, kept across `up`s and never shown.

The tests that run `up` or `down` again on the session's stack come last (in file order).
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import requests
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg import sql

from control.connector import ConnectApi, load_connector
from core.secrets import read_pending
from core.settings import PROJECT_ROOT, SECRET_KEYS, read_env_file
from stack.process import BASE_ENV_KEYS
from stack.services import CONNECT_WORKER_VARIABLES, Connect, Postgres, connect_worker_env, rest_credentials
from tests.conftest import StackHandle, connect_as, run_stack_cli
from tests.support import consume, poll_until

pytestmark = pytest.mark.stack

CONNECTOR = load_connector()["name"]
JDBC_SINK = "JdbcSinkConnector"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def writer(stack: StackHandle) -> Iterator[psycopg.Connection]:
    with connect_as(stack, "CONNECT_DB_USER", "CONNECT_DB_PASSWORD") as conn:
        yield conn


def secret_values(stack: StackHandle) -> dict[str, str]:
    return {key: stack.settings[key] for key in SECRET_KEYS}


def replay_ticks(stack: StackHandle, tmp_path: Path, symbol: str, count: int) -> None:
    """Ticks through the real producer, Kafka and the sink (as the pipeline lands them)."""
    start_ms = int(time.time() * 1000) - 60_000
    replay = tmp_path / "ticks.jsonl"
    replay.write_text("".join(json.dumps({"symbol": symbol, "price": 100 + n, "event_time": start_ms + n * 1000,
                                          "volume": 1.0}) + "\n" for n in range(count)))
    result = subprocess.run([sys.executable, "-m", "producer", "--source", "replay", "--file", str(replay),
                             "--speed", "0", "--symbols", symbol],
                            env=stack.env(), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def count_ticks(admin: psycopg.Connection, symbol: str) -> int:
    return admin.execute("SELECT count(*) FROM crypto_prices WHERE symbol = %s", (symbol,)).fetchone()[0]


def wait_for_ticks(admin: psycopg.Connection, symbol: str, expected: int, timeout: float = 120) -> int:
    return poll_until(lambda: count_ticks(admin, symbol), lambda n: n >= expected, timeout)


# -- database roles ------------------------------------------------------------------------------------

def test_every_table_view_and_function_belongs_to_the_owner_role_that_cannot_log_in(
        stack: StackHandle, admin: psycopg.Connection) -> None:
    owner = stack.settings["DB_OWNER_ROLE"]
    owners = admin.execute("""
        SELECT DISTINCT pg_get_userbyid(owner) FROM (
            SELECT c.relowner AS owner, c.oid, 'pg_class'::regclass AS classid FROM pg_class c
             WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
            UNION ALL
            SELECT p.proowner, p.oid, 'pg_proc'::regclass FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
        ) o
         WHERE NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = o.classid AND d.objid = o.oid AND d.deptype = 'e')
    """).fetchall()
    assert owners == [(owner,)]
    assert admin.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (owner,)).fetchone() == (False,)


def test_the_sink_role_owns_nothing(stack: StackHandle, admin: psycopg.Connection) -> None:
    role = stack.settings["CONNECT_DB_USER"]
    owned = admin.execute("""
        SELECT relname FROM pg_class WHERE pg_get_userbyid(relowner) = %(r)s
        UNION ALL SELECT proname FROM pg_proc WHERE pg_get_userbyid(proowner) = %(r)s
        UNION ALL SELECT nspname FROM pg_namespace WHERE pg_get_userbyid(nspowner) = %(r)s""", {"r": role}).fetchall()
    assert owned == []


@pytest.mark.parametrize("statement", [
    "DROP TABLE crypto_prices",
    "TRUNCATE crypto_prices",
    "DELETE FROM crypto_prices",
    "ALTER TABLE crypto_prices DISABLE TRIGGER ALL",
    "ALTER TABLE crypto_prices ADD COLUMN sneaky text",
    "CREATE TABLE sneaky (x int)",
    "CREATE TEMP TABLE sneaky (x int)",
    "CREATE SCHEMA sneaky",
    "CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "SELECT * FROM candle_rollup LIMIT 1",
    "UPDATE candle_rollup SET high = 0",
    "SELECT rebuild_candles()",
    "SELECT raw_ticks_maintenance_step(NULL)",
])
def test_the_sink_role_is_refused_everything_but_writing_ticks(writer: psycopg.Connection, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege), writer.transaction(force_rollback=True):
        writer.execute(statement)  # rolled back whatever happens: a broken grant must not wreck the stack


def test_ticks_still_land_through_the_sink_role(stack: StackHandle, admin: psycopg.Connection,
                                                tmp_path: Path) -> None:
    symbol = f"SEC{uuid.uuid4().hex[:6].upper()}-USD"
    replay_ticks(stack, tmp_path, symbol, 5)
    assert wait_for_ticks(admin, symbol, 5) == 5
    sink_sessions = admin.execute(
        "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = %s"
        " AND application_name LIKE 'PostgreSQL JDBC%%'", (stack.settings["POSTGRES_DB"],)).fetchall()
    assert sink_sessions == [(stack.settings["CONNECT_DB_USER"],)]


def test_the_power_bi_role_has_the_statement_timeout_and_connection_limit_of_the_settings(
        stack: StackHandle, powerbi: psycopg.Connection, admin: psycopg.Connection) -> None:
    configured = stack.settings["POWERBI_STATEMENT_TIMEOUT"]
    assert powerbi.execute("SHOW statement_timeout").fetchone()[0] == configured
    limit = admin.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s",
                          (stack.settings["POWERBI_DB_USER"],)).fetchone()[0]
    assert limit == int(stack.settings["POWERBI_CONNECTION_LIMIT"]) > 0


def test_a_power_bi_query_running_longer_than_the_timeout_is_cancelled(powerbi: psycopg.Connection) -> None:
    timeout_ms = int(powerbi.execute("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'").fetchone()[0])
    assert timeout_ms > 0
    started = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
        powerbi.execute("SELECT pg_sleep(%s)", (timeout_ms / 1000 + 5,))
    assert time.monotonic() - started < timeout_ms / 1000 + 5


@pytest.mark.parametrize(("user", "password", "database"), [
    ("POWERBI_DB_USER", "POWERBI_DB_PASSWORD", "REGISTRY_DB"),
    ("POWERBI_DB_USER", "POWERBI_DB_PASSWORD", "postgres"),
    ("CONNECT_DB_USER", "CONNECT_DB_PASSWORD", "REGISTRY_DB"),
    ("CONNECT_DB_USER", "CONNECT_DB_PASSWORD", "postgres"),
    ("REGISTRY_DB_USER", "REGISTRY_DB_PASSWORD", "POSTGRES_DB"),
    ("REGISTRY_DB_USER", "REGISTRY_DB_PASSWORD", "postgres"),
    ("REGISTRY_DB_USER", "REGISTRY_DB_PASSWORD", "template1"),
    ("CHART_DB_USER", "CHART_DB_PASSWORD", "postgres"),
    ("CHART_DB_USER", "CHART_DB_PASSWORD", "REGISTRY_DB"),
    ("READER_WATCHDOG_DB_USER", "READER_WATCHDOG_DB_PASSWORD", "postgres"),
    ("READER_WATCHDOG_DB_USER", "READER_WATCHDOG_DB_PASSWORD", "REGISTRY_DB"),
])
def test_a_role_cannot_connect_to_a_database_it_does_not_need(stack: StackHandle, user: str, password: str,
                                                              database: str) -> None:
    dbname = stack.settings[database] if database.isupper() else database
    with pytest.raises(psycopg.OperationalError, match=f'permission denied for database "?{dbname}'):
        connect_as(stack, user, password, dbname=dbname).close()


@pytest.mark.parametrize(("user", "password", "database"), [
    ("POWERBI_DB_USER", "POWERBI_DB_PASSWORD", "POSTGRES_DB"),
    ("CONNECT_DB_USER", "CONNECT_DB_PASSWORD", "POSTGRES_DB"),
    ("REGISTRY_DB_USER", "REGISTRY_DB_PASSWORD", "REGISTRY_DB"),
    ("CHART_DB_USER", "CHART_DB_PASSWORD", "POSTGRES_DB"),
    ("READER_WATCHDOG_DB_USER", "READER_WATCHDOG_DB_PASSWORD", "POSTGRES_DB"),
])
def test_each_role_connects_to_the_database_it_needs(stack: StackHandle, user: str, password: str,
                                                     database: str) -> None:
    with connect_as(stack, user, password, dbname=stack.settings[database]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (stack.settings[user],)


def test_an_existing_database_is_handed_over_to_the_owner_role_on_the_next_up(
        stack: StackHandle, admin: psycopg.Connection) -> None:
    """As databases were before the owner role: the sink's role owning crypto_prices, the superuser
    the rest. Applying init.sql (what `up` runs) hands everything over."""
    s = stack.settings
    admin.execute(f'ALTER TABLE crypto_prices OWNER TO "{s["CONNECT_DB_USER"]}"')
    admin.execute(f'ALTER TABLE candle_rollup OWNER TO "{s["POSTGRES_USER"]}"')
    Postgres(s).apply_init_sql()
    owners = dict(admin.execute("SELECT relname, pg_get_userbyid(relowner) FROM pg_class "
                                "WHERE relname IN ('crypto_prices', 'candle_rollup')").fetchall())
    assert owners == {"crypto_prices": s["DB_OWNER_ROLE"], "candle_rollup": s["DB_OWNER_ROLE"]}


# -- Kafka Connect ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/connectors", "/", f"/connectors/{CONNECTOR}/config", "/connector-plugins"])
def test_the_connect_rest_api_refuses_requests_without_the_credentials(stack: StackHandle, path: str) -> None:
    assert requests.get(f"{stack.connect_url}{path}", timeout=10).status_code == 401
    user, _ = stack.settings.connect_auth
    assert requests.get(f"{stack.connect_url}{path}", auth=(user, "wrong"), timeout=10).status_code == 401
    assert stack.connect_api.get(path, timeout=10).status_code == 200


def validate(api: ConnectApi, **config: str) -> dict[str, dict]:
    """Connect's validate endpoint; returns each key's entry (value as Connect resolved it, errors)."""
    body = {"connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector", "name": "throwaway",
            "topics": "throwaway", "connection.url": "jdbc:postgresql://127.0.0.1:1/none", **config}
    response = api.put(f"/connector-plugins/{JDBC_SINK}/config/validate", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return {c["value"]["name"]: c["value"] for c in response.json()["configs"]}


def test_a_connector_config_resolves_no_variable_outside_the_allowlist(stack: StackHandle) -> None:
    """PATH is in the worker's environment but not in the provider's allowlist: it stays a placeholder,
    while an allowed variable in the same config resolves (so the check can see a resolution)."""
    resolved = validate(stack.connect_api, **{"collection.name.format": "${env:PATH}",
                                              "topics": "${env:TICKS_TOPIC}"})
    assert resolved["topics"]["value"] == stack.settings["TICKS_TOPIC"]
    assert resolved["collection.name.format"]["value"] == "${env:PATH}"


def test_a_connector_may_not_override_its_clients_settings(stack: StackHandle) -> None:
    result = validate(stack.connect_api, **{"consumer.override.bootstrap.servers": "evil.example:9092"})
    assert any("'None' policy" in error for error in result["consumer.override.bootstrap.servers"]["errors"])


def test_the_worker_runs_with_only_the_variables_it_needs(stack: StackHandle) -> None:
    pid = Connect(stack.settings).process.pid()
    assert pid is not None
    environment = psutil.Process(pid).environ()
    assert set(environment) <= set(CONNECT_WORKER_VARIABLES) | set(BASE_ENV_KEYS)
    assert set(connect_worker_env(stack.settings)) == set(CONNECT_WORKER_VARIABLES) <= set(environment)
    others = {v for k, v in secret_values(stack).items() if k not in ("CONNECT_DB_PASSWORD", "KAFKA_CONNECT_PASSWORD")}
    assert others.isdisjoint(environment.values())


@pytest.mark.parametrize("path", [f"/connectors/{CONNECTOR}", f"/connectors/{CONNECTOR}/config",
                                  f"/connectors/{CONNECTOR}/tasks", "/connectors?expand=info&expand=status"])
def test_the_connector_config_connect_shows_holds_placeholders_not_secrets(stack: StackHandle, path: str) -> None:
    shown = stack.connect_api.get(path, timeout=10)
    assert shown.status_code == 200
    assert not [key for key, value in secret_values(stack).items() if value in shown.text]
    assert '"connection.password":"${env:CONNECT_DB_PASSWORD}"' in shown.text.replace(" ", "")


def test_the_compose_entrypoint_and_healthcheck_authenticate_against_a_real_worker(stack: StackHandle,
                                                                                   tmp_path: Path) -> None:
    """connect/entrypoint.sh and the healthcheck (scripts/http_ready.sh), run here against the native worker: the same
    credentials file as the native stack writes, 0600, the password gone from the worker's environment."""
    user, password = stack.settings.connect_auth
    stub = tmp_path / "connect-distributed.sh"
    stub.write_text('#!/usr/bin/env bash\nenv > "$CONNECT_REST_DIR/worker.env"; echo "$@" > "$CONNECT_REST_DIR/args"\n')
    stub.chmod(0o755)
    rest_dir = tmp_path / "rest"
    base = {"PATH": "/usr/bin:/bin", "CONNECT_REST_DIR": str(rest_dir),
            "CONNECT_PORT": str(stack.settings.port("CONNECT"))}
    subprocess.run(["bash", str(PROJECT_ROOT / "connect" / "entrypoint.sh"), "/project/connect/worker.properties"],
                   env={**base, "CONNECT_REST_USER": user, "CONNECT_REST_PASSWORD": password,
                        "CONNECT_DISTRIBUTED": str(stub)}, check=True, timeout=30)
    assert (rest_dir / "rest-credentials.properties").read_text() == rest_credentials(user, password)
    assert {mode(f) for f in rest_dir.iterdir()} == {0o600}
    worker_env = (rest_dir / "worker.env").read_text()
    assert password not in worker_env and "rest-jaas.conf" in worker_env
    assert (rest_dir / "args").read_text().split() == ["/project/connect/worker.properties"]
    healthcheck = ["bash", str(PROJECT_ROOT / "scripts" / "http_ready.sh"), base["CONNECT_PORT"], "/connectors",
                   str(rest_dir / "health-authorization")]
    assert subprocess.run(healthcheck, env=base, timeout=30, check=False).returncode == 0
    (rest_dir / "health-authorization").write_text("Basic " + "d3Jvbmc6d3Jvbmc=")  # wrong:wrong
    assert subprocess.run(healthcheck, env=base, timeout=30, check=False).returncode != 0


# -- secrets ------------------------------------------------------------------------------------------------

def test_up_generated_every_secret_into_a_file_only_its_user_can_read(stack: StackHandle) -> None:
    """The session's stack started from an empty state dir: `up` created the file."""
    if not stack.owned:
        pytest.skip("needs the stack the tests start themselves (a fresh state dir)")
    s = stack.settings
    assert mode(s.secrets_file) == 0o600
    assert read_env_file(s.secrets_file).keys() == set(SECRET_KEYS)
    assert read_pending(s) == []  # the database took them all
    connect = Connect(s)
    assert mode(connect.credentials_file) == mode(connect.jaas_file) == 0o600
    assert not list(Postgres(s).data_dir.parent.glob("*.pw")), "initdb's password file was left behind"


def test_no_secret_is_on_the_command_line_of_any_process(stack: StackHandle) -> None:
    values = secret_values(stack).values()
    exposed = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        command = " ".join(proc.info["cmdline"] or [])
        if any(value in command for value in values):
            exposed.append(proc.info["pid"])
    assert exposed == []


def test_no_secret_is_recorded_in_the_statement_statistics(stack: StackHandle, admin: psycopg.Connection) -> None:
    """init.sql creates roles with their passwords (CREATE ROLE ... PASSWORD): pg_stat_statements must
    not keep those statements."""
    queries = "\n".join(q for (q,) in admin.execute("SELECT query FROM pg_stat_statements").fetchall())
    assert "CREATE ROLE" not in queries.upper() or "PASSWORD '" not in queries.upper()
    assert not [key for key, value in secret_values(stack).items() if value in queries]


def password_verifiers(admin: psycopg.Connection) -> dict[str, str]:
    """The stored SCRAM verifiers: salted at random, so setting a password again, even to the same
    value, changes them."""
    return dict(admin.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolpassword IS NOT NULL").fetchall())


def test_a_second_up_keeps_every_password(stack: StackHandle, admin: psycopg.Connection) -> None:
    if not stack.owned:
        pytest.skip("runs `up` on the stack the tests started")
    before, verifiers = stack.settings.secrets_file.read_bytes(), password_verifiers(admin)
    assert len(verifiers) == 7  # superuser, sink, Power BI, registry, chart, reader watchdog, tick maintainer
    again = run_stack_cli("up", "--no-fetch", "--no-producer", env=stack.env(), timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert str(stack.settings.secrets_file) in again.stdout  # tells where they are
    assert stack.settings.secrets_file.read_bytes() == before
    assert password_verifiers(admin) == verifiers  # not one password was set again
    for user, password in [("CONNECT_DB_USER", "CONNECT_DB_PASSWORD"), ("POWERBI_DB_USER", "POWERBI_DB_PASSWORD"),
                           ("CHART_DB_USER", "CHART_DB_PASSWORD"),
                           ("READER_WATCHDOG_DB_USER", "READER_WATCHDOG_DB_PASSWORD")]:
        connect_as(stack, user, password).close()


def set_secret(stack: StackHandle, key: str, value: str | None) -> None:
    """Edit the secrets file as an admin would (value None: delete the line)."""
    path = stack.settings.secrets_file
    text = re.sub(rf"(?m)^{key}=.*\n", "", path.read_text())
    path.write_text(text + (f"{key}={value}\n" if value is not None else ""))


def test_a_rotated_password_is_not_reset_by_the_next_up(stack: StackHandle, admin: psycopg.Connection) -> None:
    """`stack up` itself (every step it runs, not only the database's), after an admin rotated a password."""
    if not stack.owned:
        pytest.skip("runs `up` on the stack the tests started")
    old, new = stack.settings["POWERBI_DB_PASSWORD"], f"rotated-{uuid.uuid4().hex}"
    admin.execute("SET pg_stat_statements.track_utility = off")  # as an admin should (psql's \password sends a hash)
    admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(stack.settings["POWERBI_DB_USER"]),
                                                              sql.Literal(new)))
    set_secret(stack, "POWERBI_DB_PASSWORD", new)
    verifiers = password_verifiers(admin)
    again = run_stack_cli("up", "--no-fetch", "--no-producer", env=stack.env(), timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert password_verifiers(admin) == verifiers
    connect_as(stack, "POWERBI_DB_USER", "POWERBI_DB_PASSWORD").close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect_as(stack, "POWERBI_DB_USER", "POWERBI_DB_PASSWORD", password=old).close()


def test_an_existing_database_adopts_a_regenerated_password(stack: StackHandle) -> None:
    """A secrets file that lost a password (or an old stack with none): the next `up` generates it and
    sets it on the existing role, once."""
    if not stack.owned:
        pytest.skip("runs `up` on the stack the tests started")
    old = stack.settings["POWERBI_DB_PASSWORD"]
    set_secret(stack, "POWERBI_DB_PASSWORD", None)
    again = run_stack_cli("up", "--no-fetch", "--no-producer", env=stack.env(), timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "generated POWERBI_DB_PASSWORD" in again.stdout
    assert stack.settings["POWERBI_DB_PASSWORD"] != old
    connect_as(stack, "POWERBI_DB_USER", "POWERBI_DB_PASSWORD").close()
    assert read_pending(stack.settings) == []


def test_down_without_purge_keeps_ticks_schemas_topics_and_passwords(stack: StackHandle, admin: psycopg.Connection,
                                                                     tmp_path: Path) -> None:
    if not stack.owned:
        pytest.skip("stops and starts the stack the tests started")
    symbol = f"KEEP{uuid.uuid4().hex[:6].upper()}-USD"
    replay_ticks(stack, tmp_path, symbol, 4)
    assert wait_for_ticks(admin, symbol, 4) == 4
    subjects = requests.get(f"{stack.registry_url}/subjects", timeout=10).json()
    assert subjects
    latest = {s: requests.get(f"{stack.registry_url}/subjects/{s}/versions/latest", timeout=10).json()["id"]
              for s in subjects}
    topic = f"test.keep.{uuid.uuid4().hex[:8]}"
    kafka_admin = AdminClient(stack.settings.kafka_config())  # kept alive until the topic exists
    kafka_admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer(stack.settings.kafka_config())
    for n in range(3):
        producer.produce(topic, value=str(n).encode())
    assert producer.flush(30) == 0
    secrets_before = stack.settings.secrets_file.read_bytes()
    admin.close()

    down = run_stack_cli("down", env=stack.env(), timeout=300)
    assert down.returncode == 0, down.stderr[-3000:]
    up = run_stack_cli("up", "--no-fetch", "--no-producer", env=stack.env(), timeout=600)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]

    with psycopg.connect(stack.pg_dsn(), autocommit=True) as conn:
        assert count_ticks(conn, symbol) == 4
    assert {s: requests.get(f"{stack.registry_url}/subjects/{s}/versions/latest", timeout=10).json()["id"]
            for s in subjects} == latest
    values = [m.value() for m in consume(stack, topic, lambda m: True, 3)]
    assert sorted(values) == [b"0", b"1", b"2"]
    assert stack.settings.secrets_file.read_bytes() == secrets_before
