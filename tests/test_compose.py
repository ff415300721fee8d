"""What the real compose run (tests/test_compose_up.py) cannot see: that docker-compose.yml runs the same
versions, config files, heaps and connector settings as the native stack, keeps every secret out of its
text, caps every container's memory, and that each Python image (one per role) holds only what it runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.settings import KAFKA_PRINCIPALS, PROJECT_ROOT, REGISTRY_USERS, SECRET_KEYS, Settings, read_env_file
from stack.services import CONNECT_WORKER_VARIABLES, POSTGRES_SERVER_OPTIONS, registry_user_env

ENV = {k: v for k, v in read_env_file(PROJECT_ROOT / ".env").items() if v is not None}
TEXT = (PROJECT_ROOT / "docker-compose.yml").read_text()
SECRETS_DIR = "/run/cryptopipe-secrets"
# File variables named after their consumer's convention rather than the secret (the broker's may not start with
# KAFKA_: the image would copy it into server.properties).
SECRET_OF_FILE_VARIABLE = {"APICURIO_DATASOURCE_PASSWORD_FILE": "REGISTRY_DB_PASSWORD",
                           "BROKER_ADMIN_PASSWORD_FILE": "KAFKA_ADMIN_PASSWORD"}


def interpolate(value: str) -> str:
    return re.sub(r"\$\{([A-Z0-9_]+)\}", lambda m: ENV[m.group(1)], value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(TEXT)


def test_every_variable_the_compose_file_uses_is_defined_in_env() -> None:
    """An undefined variable is only a warning for compose (it becomes empty): the real run would not fail."""
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)\}", TEXT))
    assert used and used - ENV.keys() == set()


def test_no_secret_is_interpolated_or_defined_anywhere_only_read_from_the_generated_files(compose: dict) -> None:
    # ($${KEY} is no interpolation: the registry's own expression, resolved from KEY_FILE inside the container)
    assert not any(re.search(rf"(?<!\$)\$\{{{key}\b", TEXT) for key in SECRET_KEYS)
    assert ENV.keys().isdisjoint(SECRET_KEYS)
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        assert env.keys().isdisjoint(SECRET_KEYS), name
        for key, value in env.items():
            secret = SECRET_OF_FILE_VARIABLE.get(key) or key.removesuffix("_FILE")
            if secret in SECRET_KEYS:
                assert value == f"{SECRETS_DIR}/{secret}", (name, key)
                assert f"secrets:{SECRETS_DIR}:ro" in service["volumes"], name


def test_images_are_the_versions_in_env(compose: dict) -> None:
    images = {name: interpolate(svc["image"]) for name, svc in compose["services"].items() if "image" in svc}
    assert images["broker"] == images["connect"] == f"apache/kafka:{ENV['KAFKA_VERSION']}"
    assert images["registry"] == f"quay.io/apicurio/apicurio-registry:{ENV['APICURIO_REGISTRY_VERSION']}"
    assert images["postgres"] == images["db-init"] == f"postgres:{ENV['POSTGRES_VERSION']}"
    assert images["chart-assets"] == f"node:{ENV['NODE_IMAGE_VERSION']}"
    assert images["connect-plugins"] == f"maven:{ENV['MAVEN_IMAGE_VERSION']}"
    assert all(not image.endswith(":latest") and ":" in image for image in images.values())


def test_host_ports_bind_to_loopback_only(compose: dict) -> None:
    ports = [p for svc in compose["services"].values() for p in svc.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)


def test_containers_use_the_config_files_the_native_stack_uses(compose: dict) -> None:
    services = compose["services"]
    shared_broker_config = "./stack/config/kafka-broker.properties:/mnt/shared/config/server.properties:ro"
    assert shared_broker_config in services["broker"]["volumes"]
    assert services["connect"]["command"] == ["/project/connect/worker.properties"]
    assert services["registry"]["env_file"] == "./stack/config/registry.env"
    assert services["db-init"]["entrypoint"] == ["bash", "/project/scripts/init_db.sh"]
    assert services["control-setup"]["command"] == ["python", "-m", "control", "setup"]
    assert services["postgres"]["command"] == ["postgres", *POSTGRES_SERVER_OPTIONS]


def test_connect_container_gets_every_variable_the_native_worker_gets(compose: dict) -> None:
    container = {key.removesuffix("_FILE") for key in compose["services"]["connect"]["environment"]}
    # Besides those: the REST credentials for connect/entrypoint.sh (which unsets the password before
    # the worker starts; the env provider's allowlist excludes both) and the JVM heap for the start script.
    assert container - set(CONNECT_WORKER_VARIABLES) == {"CONNECT_REST_USER", "CONNECT_REST_PASSWORD",
                                                          "KAFKA_HEAP_OPTS"}
    assert set(CONNECT_WORKER_VARIABLES) <= container


def test_the_jvms_get_the_heaps_the_native_stack_gives_them(compose: dict) -> None:
    services = compose["services"]
    assert services["broker"]["environment"]["KAFKA_HEAP_OPTS"] == "${BROKER_HEAP_OPTS}"
    assert services["connect"]["environment"]["KAFKA_HEAP_OPTS"] == "${CONNECT_HEAP_OPTS}"
    assert services["registry"]["environment"]["JAVA_OPTS_APPEND"] == "${REGISTRY_HEAP_OPTS}"


def megabytes(text: str) -> float:
    number, unit = re.fullmatch(r"(\d+)([mMgG])", text).groups()
    return float(number) * (1024 if unit in "gG" else 1)


@pytest.mark.parametrize("service", ["broker", "connect", "registry"])
def test_every_container_is_capped_and_a_jvm_heap_leaves_room_below_its_cap(compose: dict, service: str) -> None:
    services = compose["services"]
    assert [name for name, svc in services.items() if "mem_limit" not in svc] == []
    heap = interpolate(services[service]["environment"].get("KAFKA_HEAP_OPTS")
                       or services[service]["environment"]["JAVA_OPTS_APPEND"])
    max_heap = megabytes(re.search(r"-Xmx(\d+[mMgG])", heap).group(1))
    assert max_heap <= 0.7 * megabytes(services[service]["mem_limit"])  # metaspace, threads, code cache


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


def test_the_second_connect_worker_is_the_first_one_in_the_same_group(compose: dict) -> None:
    """`--profile scale` is not part of the real run."""
    first, second = compose["services"]["connect"], compose["services"]["connect-2"]
    assert second["profiles"] == ["scale"] and second["ports"] == []
    assert {k: v for k, v in second["environment"].items() if k != "CONNECT_ADVERTISED_HOST"} == \
        {k: v for k, v in first["environment"].items() if k != "CONNECT_ADVERTISED_HOST"}
    assert second["command"] == first["command"] and second["volumes"] == first["volumes"]


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
        "for package in ('core', 'control', 'producer', 'chart'):\n"
        "    module = importlib.import_module(package)\n"
        "    for info in pkgutil.walk_packages(module.__path__, package + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "from control.__main__ import main\n"
        "sys.exit(main(['--help']))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "setup" in result.stdout and "secrets" in result.stdout


def test_the_registry_knows_the_users_and_roles_it_knows_natively_with_passwords_from_their_files(
        compose: dict) -> None:
    """docs/registry-auth.md: the same users and roles as stack/services.py gives the native registry; each
    password is Apicurio's expression of the secret whose *_FILE the same container names."""
    native = registry_user_env(Settings(env=dict.fromkeys(SECRET_KEYS, "x"), state_dir=PROJECT_ROOT,
                                        cache_dir=PROJECT_ROOT))
    env = compose["services"]["registry"]["environment"]
    users = {k: v for k, v in env.items() if k.startswith("QUARKUS_SECURITY_USERS_EMBEDDED_")}
    assert users.keys() == native.keys()
    for user, (role, secret) in REGISTRY_USERS.items():
        assert users[f"QUARKUS_SECURITY_USERS_EMBEDDED_ROLES_{user.upper()}"] == role
        # the YAML text; compose hands the container ${SECRET} ($$ is its escape of $)
        assert users[f"QUARKUS_SECURITY_USERS_EMBEDDED_USERS_{user.upper()}"] == f"$${{{secret}}}"
        assert env[f"{secret}_FILE"] == f"{SECRETS_DIR}/{secret}"
    registry_env = read_env_file(PROJECT_ROOT / "stack" / "config" / "registry.env")
    assert registry_env["QUARKUS_HTTP_AUTH_BASIC"] == registry_env["APICURIO_AUTH_ROLE_BASED_AUTHORIZATION"] == "true"


@pytest.mark.parametrize(("service", "secret"), [("producer", "REGISTRY_PRODUCER_PASSWORD"),
                                                 ("control-setup", "REGISTRY_ADMIN_PASSWORD")])
def test_the_registry_writers_get_their_password_file(compose: dict, service: str, secret: str) -> None:
    assert compose["services"][service]["environment"][f"{secret}_FILE"] == f"{SECRETS_DIR}/{secret}"
def test_kafka_takes_sasl_only_and_setup_runs_before_its_clients(compose: dict) -> None:
    """Every listener SASL (no PLAINTEXT one left), the admin's password from the secrets volume through the
    broker's entrypoint, the credentials / ACLs / topics one-shot before Connect and the producer, and every Kafka
    client container with its own principal's password."""
    services = compose["services"]
    broker = services["broker"]
    env = broker["environment"]
    protocols = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {entry.split("://")[0] for entry in broker["environment"]["KAFKA_LISTENERS"].split(",")}
    assert set(protocols.values()) == {"SASL_PLAINTEXT"} and listeners == set(protocols)
    assert broker["entrypoint"] == ["bash", "/opt/cryptopipe/broker-entrypoint.sh"]
    assert "./stack/config/broker-entrypoint.sh:/opt/cryptopipe/broker-entrypoint.sh:ro" in broker["volumes"]
    assert not [key for key in broker["environment"] if key.startswith("KAFKA_") and "PASSWORD" in key]
    assert services["kafka-setup"]["command"] == ["python", "-m", "control", "kafka-setup"]
    assert services["kafka-setup"]["depends_on"]["broker"]["condition"] == "service_healthy"
    for name in ("connect", "producer"):
        assert services[name]["depends_on"]["kafka-setup"]["condition"] == "service_completed_successfully", name
    principal_of = {"connect": "KAFKA_CONNECT_PASSWORD", "connect-2": "KAFKA_CONNECT_PASSWORD",
                    "producer": "KAFKA_PRODUCER_PASSWORD"}
    for name, secret in principal_of.items():
        assert services[name]["environment"][f"{secret}_FILE"] == f"{SECRETS_DIR}/{secret}", name
    setup_env = services["kafka-setup"]["environment"]
    assert {f"{secret}_FILE" for secret in KAFKA_PRINCIPALS.values()} <= setup_env.keys()


def test_the_shared_broker_config_names_the_listeners_both_forms_use(compose: dict) -> None:
    """The JAAS settings are per listener: the names compose uses (and the native stack: INTERNAL, CONTROLLER)
    must have theirs, and the password comes only through the env config provider."""
    config = (PROJECT_ROOT / "stack" / "config" / "kafka-broker.properties").read_text()
    listeners = compose["services"]["broker"]["environment"]["KAFKA_LISTENERS"]
    names = {entry.split("://")[0].lower() for entry in listeners.split(",")}
    for name in names:
        assert f"listener.name.{name}.plain.sasl.jaas.config=" in config, name
    assert "auto.create.topics.enable=false" in config
    assert re.findall(r'password="([^"]*)"', config) and set(re.findall(r'password="([^"]*)"', config)) == {
        "${env:BROKER_ADMIN_PASSWORD}"}


# -- one image per role, each with only the code it runs ---------------------------------------------------
DOCKERFILE = PROJECT_ROOT / "producer" / "Dockerfile"
PROJECT_PACKAGES = ("core", "control", "producer", "chart", "stack")
# Role -> what its image must run (the compose services' commands and healthchecks) and the packages it must not hold.
ROLES = {
    "producer": ([["-m", "producer", "--help"], ["-m", "core.health", "--help"]], {"control", "chart"}),
    "control": ([["-m", "control", "--help"], ["-m", "control.supervisor", "--help"], ["-m", "control.dlq", "--help"],
                 ["-m", "core.health", "--help"]], {"chart", "producer"}),
    "chart": ([["-m", "chart", "--help"]], {"control", "producer"}),
}


def stage_copies(target: str) -> list[tuple[list[str], str]]:
    """The COPY instructions (sources, destination) that make `target`, its base stages' first."""
    stages: dict[str, tuple[str, list[tuple[list[str], str]]]] = {}
    current = None
    for line in DOCKERFILE.read_text().splitlines():
        if m := re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line):
            current = m.group(2)
            stages[current] = (m.group(1), [])
        elif current and (m := re.match(r"COPY\s+(.+)", line)):
            *sources, destination = m.group(1).split()
            stages[current][1].append((sources, destination))
    parent, copies = stages[target]
    return (stage_copies(parent) if parent in stages else []) + copies


def image_tree(target: str, root: Path) -> Path:
    """The files of /app in the image `target`, copied from the project as its COPY lines say."""
    for sources, destination in stage_copies(target):
        for source in sources:
            src, dest = PROJECT_ROOT / source, root / destination
            if destination.endswith("/") or len(sources) > 1:
                dest = dest / Path(source).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "target"))
            else:
                shutil.copy2(src, dest)
    return root


@pytest.mark.parametrize("target", ROLES)
def test_each_role_image_holds_only_its_code_and_runs_its_commands_with_it(target: str, tmp_path: Path) -> None:
    """Every compose service's command runs from its image's files alone: the project packages the image lacks
    cannot be imported (here they would come from the checkout), and every module of those it has imports."""
    commands, left_out = ROLES[target]
    tree = image_tree(target, tmp_path / target)
    present = {p for p in PROJECT_PACKAGES if (tree / p).is_dir()}
    assert present.isdisjoint(left_out) and "stack" not in present and "core" in present, present
    services = yaml.safe_load(TEXT)["services"]
    assert {name for name, svc in services.items() if svc.get("build", {}).get("target") == target}
    probe = ("import importlib, pkgutil, runpy, sys\n"
             f"present = {sorted(present)!r}\n"
             "class OnlyTheImage:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             f"        if name.split('.')[0] in {PROJECT_PACKAGES!r} and name.split('.')[0] not in present:\n"
             "            raise ImportError('not in the image: ' + name)\n"
             "sys.meta_path.insert(0, OnlyTheImage())\n"
             "sys.path.insert(0, '.')\n"
             "for package in present:\n"
             "    module = importlib.import_module(package)\n"
             "    for info in pkgutil.walk_packages(module.__path__, package + '.'):\n"
             "        importlib.import_module(info.name)\n"
             "sys.argv = [sys.argv[1], *sys.argv[2:]]\n"
             "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")
    env = {k: v for k, v in os.environ.items() if k != "CRYPTOPIPE_ENV_FILE" and k != "PYTHONPATH"}
    for command in commands:
        result = subprocess.run([sys.executable, "-c", probe, *command[1:]], cwd=tree, env=env, capture_output=True,
                                text=True, timeout=120, check=False)
        assert result.returncode == 0 and "usage:" in result.stdout, (command, result.stderr[-2000:])
    escaped = subprocess.run([sys.executable, "-c", probe, "control.dlq", "--help"], cwd=tree, env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert (escaped.returncode == 0) == ("control" in present), escaped.stderr[-500:]
