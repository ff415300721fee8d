"""docker-compose.yml cannot run here (no Docker engine): check its structure and that it runs the
same versions, config files and connector settings as the native stack."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest
import yaml
from dotenv import dotenv_values

from control.settings import PROJECT_ROOT, SECRET_KEYS
from stack.services import CONNECT_WORKER_VARIABLES, POSTGRES_SERVER_OPTIONS

LONG_RUNNING = ("postgres", "broker", "registry", "connect", "connect-supervisor", "producer", "chart")
ENV = {k: v for k, v in dotenv_values(PROJECT_ROOT / ".env").items() if v is not None}


def interpolate(value: str) -> str:
    return re.sub(r"\$\{([A-Z0-9_]+)\}", lambda m: ENV[m.group(1)], value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def test_every_variable_the_compose_file_uses_is_defined_in_env(compose: dict) -> None:
    text = (PROJECT_ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)\}", text))
    assert used - ENV.keys() == set()


def test_every_secret_compose_uses_is_required_with_a_message_and_documented_not_defined() -> None:
    """Secrets: `${NAME:?message}` (compose stops with the message when NAME is unset or empty), in no
    committed settings file, each one explained in .env.example."""
    text = (PROJECT_ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?[^}]*\.env\.example[^}]*\}", text))
    assert required == set(SECRET_KEYS)
    assert not any(re.search(rf"\$\{{{key}(\}}|:-)", text) for key in SECRET_KEYS), "a secret without :?"
    assert ENV.keys().isdisjoint(SECRET_KEYS)
    example = dotenv_values(PROJECT_ROOT / ".env.example")
    assert set(SECRET_KEYS) <= example.keys() and not any(example[key] for key in SECRET_KEYS)


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_long_running_services_have_a_healthcheck(compose: dict, service: str) -> None:
    check = compose["services"][service]["healthcheck"]
    assert check["test"] and {"interval", "timeout", "retries", "start_period"} <= check.keys()


def test_images_are_pinned_to_the_versions_in_env(compose: dict) -> None:
    images = {name: interpolate(svc["image"]) for name, svc in compose["services"].items() if "image" in svc}
    assert images["broker"] == images["connect"] == f"apache/kafka:{ENV['KAFKA_VERSION']}"
    assert images["registry"] == f"quay.io/apicurio/apicurio-registry:{ENV['APICURIO_REGISTRY_VERSION']}"
    assert images["postgres"] == f"postgres:{ENV['POSTGRES_VERSION']}"
    assert images["chart-assets"] == f"node:{ENV['NODE_IMAGE_VERSION']}"
    assert all(not image.endswith(":latest") and ":" in image for image in images.values())


def test_host_ports_bind_to_loopback_only(compose: dict) -> None:
    ports = [p for svc in compose["services"].values() for p in svc.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)


def test_dependents_wait_for_healthy_services_and_completed_one_shots(compose: dict) -> None:
    services = compose["services"]
    connect_deps = services["connect"]["depends_on"]
    assert connect_deps["broker"]["condition"] == "service_healthy"
    assert connect_deps["registry"]["condition"] == "service_healthy"
    assert connect_deps["connect-plugins"]["condition"] == "service_completed_successfully"
    assert services["register-connector"]["depends_on"]["connect"]["condition"] == "service_healthy"
    assert services["register-connector"]["depends_on"]["registry"]["condition"] == "service_healthy"
    assert services["producer"]["depends_on"]["register-connector"]["condition"] == "service_completed_successfully"


def test_broker_advertises_an_internal_listener_for_containers_and_localhost_for_the_host(compose: dict) -> None:
    env = compose["services"]["broker"]["environment"]
    advertised = interpolate(env["KAFKA_ADVERTISED_LISTENERS"])
    assert "broker:29092" in advertised and f"localhost:{ENV['KAFKA_PORT']}" in advertised
    assert compose["services"]["connect"]["environment"]["CONNECT_BOOTSTRAP_SERVERS"] == "broker:29092"


def test_containers_use_the_config_files_the_native_stack_uses(compose: dict) -> None:
    services = compose["services"]
    shared_broker_config = "./stack/config/kafka-broker.properties:/mnt/shared/config/server.properties:ro"
    assert shared_broker_config in services["broker"]["volumes"]
    assert services["connect"]["command"] == ["/project/connect/worker.properties"]
    assert services["registry"]["env_file"] == "./stack/config/registry.env"
    assert "./scripts/init_db.sh:/docker-entrypoint-initdb.d/10-init_db.sh:ro" in services["postgres"]["volumes"]
    assert services["register-connector"]["command"] == ["python", "-m", "control", "setup"]


def test_connect_container_gets_every_variable_the_native_worker_gets(compose: dict) -> None:
    container = set(compose["services"]["connect"]["environment"])
    # Besides those: the REST credentials for connect/entrypoint.sh (which unsets the password before
    # the worker starts; the env provider's allowlist excludes both) and the JVM heap for the start script.
    extra = {"CONNECT_REST_USER", "CONNECT_REST_PASSWORD", "KAFKA_HEAP_OPTS"}
    assert container - set(CONNECT_WORKER_VARIABLES) == extra
    assert set(CONNECT_WORKER_VARIABLES) <= container


def test_connect_container_starts_behind_basic_auth_and_checks_health_with_credentials(compose: dict) -> None:
    connect = compose["services"]["connect"]
    assert connect["entrypoint"] == ["bash", "/project/connect/entrypoint.sh"]
    assert connect["healthcheck"]["test"] == ["CMD", "bash", "/project/connect/healthcheck.sh"]
    register = compose["services"]["register-connector"]["environment"]
    assert {"CONNECT_REST_USER", "CONNECT_REST_PASSWORD"} <= register.keys()


@pytest.mark.parametrize("kept_out", [".git", ".stack", "secrets.env", ".secrets.env", ".venv", "__pycache__"])
def test_the_image_build_context_leaves_out_history_state_and_secrets(kept_out: str) -> None:
    patterns = [line.strip() for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert any(p.removeprefix("**/") == kept_out for p in patterns), patterns


def test_connect_plugins_are_fetched_into_the_folder_worker_properties_names(compose: dict) -> None:
    worker = (PROJECT_ROOT / "connect" / "worker.properties").read_text()
    plugin_path = re.search(r"(?m)^plugin\.path=(.*)$", worker).group(1)
    fetch = compose["services"]["connect-plugins"]["command"]
    assert fetch[fetch.index("--plugins-dir") + 1] == plugin_path
    assert f"connect-plugins:{plugin_path}:ro" in compose["services"]["connect"]["volumes"]


def test_producer_image_builds_from_a_pinned_python(compose: dict) -> None:
    dockerfile = Path(PROJECT_ROOT / compose["services"]["producer"]["build"]["dockerfile"]).read_text()
    assert "FROM python:${PYTHON_IMAGE_VERSION}" in dockerfile
    assert compose["services"]["producer"]["build"]["args"]["PYTHON_IMAGE_VERSION"] == "${PYTHON_IMAGE_VERSION}"


def test_postgres_runs_with_the_server_options_of_the_native_stack(compose: dict) -> None:
    assert compose["services"]["postgres"]["command"] == ["postgres", *POSTGRES_SERVER_OPTIONS]


def test_chart_runs_the_app_image_on_loopback_after_its_library_and_the_connector(compose: dict) -> None:
    chart = compose["services"]["chart"]
    assert chart["build"] == compose["services"]["producer"]["build"]
    assert chart["command"] == ["python", "-m", "chart"]
    assert chart["ports"] == ["127.0.0.1:${CHART_PORT}:8050"] and chart["environment"]["CHART_PORT"] == "8050"
    assert chart["depends_on"]["chart-assets"]["condition"] == "service_completed_successfully"
    assert chart["depends_on"]["register-connector"]["condition"] == "service_completed_successfully"
    assert chart["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_chart_library_is_fetched_by_the_native_script_into_the_cache_the_chart_reads(compose: dict) -> None:
    assets, chart = compose["services"]["chart-assets"], compose["services"]["chart"]
    assert assets["command"] == ["bash", "scripts/fetch_artifacts.sh", "chart"]
    cache = assets["environment"]["CRYPTOPIPE_CACHE"]
    assert chart["environment"]["CRYPTOPIPE_CACHE"] == cache
    assert f"chart-assets:{cache}" in assets["volumes"] and f"chart-assets:{cache}:ro" in chart["volumes"]


def test_chart_reads_as_the_read_only_role_from_the_postgres_container(compose: dict) -> None:
    env = compose["services"]["chart"]["environment"]
    assert (env["CHART_DB_HOST"], env["POSTGRES_PORT"]) == ("postgres", "5432")
    assert env["POWERBI_DB_USER"] == "${POWERBI_DB_USER}"
    assert env["POWERBI_DB_PASSWORD"].startswith("${POWERBI_DB_PASSWORD:?")  # required, never defaulted


# -- the Compose Specification's own JSON schema (check-jsonschema ships it) ------------------------------
COMPOSE_SCHEMA = json.loads(files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())
SECRET_STANDIN = "secret-for-the-schema-check"


def interpolated(text: str) -> dict:
    """The file as compose reads it: parsed, then ${VAR} and ${VAR:?message} in its strings from .env (a secret
    stands in for the ones compose takes from the environment), $$ an escaped $."""
    def value(match: re.Match) -> str:
        name = match.group(1)
        return SECRET_STANDIN if name in SECRET_KEYS else ENV[name]

    def resolve(node: object) -> object:
        if isinstance(node, str):
            return re.sub(r"(?<!\$)\$\{([A-Z0-9_]+)(?::\?[^}]*)?\}", value, node).replace("$$", "$")
        if isinstance(node, dict):
            return {key: resolve(item) for key, item in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node
    return resolve(yaml.safe_load(text))  # type: ignore[return-value]


def schema_errors(document: dict) -> list[str]:
    validator_class = jsonschema.validators.validator_for(COMPOSE_SCHEMA)
    validator = validator_class(COMPOSE_SCHEMA, format_checker=validator_class.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_docker_compose_yml_follows_the_compose_specification() -> None:
    assert COMPOSE_SCHEMA["title"] == "Compose Specification"
    assert schema_errors(interpolated((PROJECT_ROOT / "docker-compose.yml").read_text())) == []


@pytest.mark.parametrize("break_it", [
    lambda c: c["services"]["connect"].update(depend_on=c["services"]["connect"].pop("depends_on")),
    lambda c: c["services"]["producer"]["depends_on"]["broker"].update(condition="service_ready"),
    lambda c: c["services"]["producer"].update(restart=["on-failure"]),
    lambda c: c["services"]["postgres"]["healthcheck"].update(retries={"n": 30}),
    lambda c: c.update(service=c.pop("services")),
], ids=["misspelled key", "unknown condition", "wrong type", "wrong nested type", "unknown top-level key"])
def test_the_schema_check_catches_a_broken_compose_file(break_it: Callable[[dict], None]) -> None:
    document = interpolated((PROJECT_ROOT / "docker-compose.yml").read_text())
    break_it(document)
    assert schema_errors(document)


# -- the producer and the control plane's one-shot -------------------------------------------------------
def test_compose_starts_the_producer_on_the_source_the_settings_name(compose: dict) -> None:
    producer = compose["services"]["producer"]
    assert "--source" not in producer["command"]  # PRODUCER_SOURCE decides, as for the native stack
    assert {k: producer["environment"][k] for k in ("PRODUCER_SOURCE", "PRODUCER_REPLAY_FILE",
                                                    "PRODUCER_REPLAY_SPEED")} == \
        {k: f"${{{k}}}" for k in ("PRODUCER_SOURCE", "PRODUCER_REPLAY_FILE", "PRODUCER_REPLAY_SPEED")}
    assert producer["restart"] == "on-failure"  # a finished replay is not replayed again and again
    assert (PROJECT_ROOT / ENV["PRODUCER_REPLAY_FILE"]).is_file()
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    assert not any(ENV["PRODUCER_REPLAY_FILE"].startswith(p.strip("*/")) for p in ignored if p and p[0] != "#")


def test_composes_one_shot_runs_the_control_plane_setup_against_the_containers(compose: dict) -> None:
    """The same command as `stack up`'s setup step (tests/test_stack.py runs it against the native stack)."""
    one_shot = compose["services"]["register-connector"]
    assert one_shot["command"] == ["python", "-m", "control", "setup"]
    assert one_shot["environment"]["SCHEMA_REGISTRY_URL"] == "http://registry:8080/apis/ccompat/v7"
    assert one_shot["environment"]["CONNECT_URL"] == "http://connect:8083"
    assert one_shot["depends_on"]["registry"]["condition"] == "service_healthy"


def test_scripts_in_the_image_use_the_images_python() -> None:
    dockerfile = (PROJECT_ROOT / "producer" / "Dockerfile").read_text()
    assert "ENV CRYPTOPIPE_PYTHON=/usr/local/bin/python" in dockerfile


def test_the_image_leaves_out_the_native_stack_runner_and_needs_it_nowhere() -> None:
    """.dockerignore keeps stack/ out; every module of the packages the image runs imports without it."""
    patterns = [line.strip() for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()]
    assert "stack" in patterns
    probe = (
        "import importlib, pkgutil, sys\n"
        "class NoStack:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'stack' or name.startswith('stack.'):\n"
        "            raise ImportError('the image has no stack/: ' + name)\n"
        "sys.meta_path.insert(0, NoStack())\n"
        "for package in ('control', 'producer', 'chart'):\n"
        "    module = importlib.import_module(package)\n"
        "    for info in pkgutil.walk_packages(module.__path__, package + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "from control.__main__ import main\n"
        "sys.exit(main(['--help']))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "setup" in result.stdout and "levels" in result.stdout
