"""One declaration of every setting (core/settings.py DECLARED), one parser (core/envfile.py), one error.

Every entry point (producer, control commands, supervisor, chart, stack, the bash scripts) refuses a settings
file with an unparsable line, an undeclared key or a badly typed value, and lists ALL of them in one message,
file and line each; bash gets its values from Python (`python3 -m core settings --shell`), quoted so that any
value survives, with the environment winning as in docker compose.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.envfile import parse_env_text
from core.settings import (
    DECLARED,
    PROJECT_ROOT,
    REGISTRY_APIS,
    SECRET_KEYS,
    URL_OVERRIDES,
    Settings,
    SettingsError,
    load_env,
    read_env_file,
    registry_api_url,
)

BAD_FILE = ("# a comment, then three mistakes and a password\n"
            "KAFKA_PORT=90x2\n"
            "KAFAK_PORT=9092\n"
            "this line is not a setting\n"
            "POSTGRES_PASSWORD=hunter2\n"
            "TICKS_TOPIC=crypto.ticks\n")
# What each of those lines must be reported as, in file order.
BAD_LINES = [":2: KAFKA_PORT='90x2': expected a whole number", ":3: unknown setting KAFAK_PORT",
             ":4: not a KEY=VALUE line", ":5: POSTGRES_PASSWORD is a password"]


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any declared setting (the tests choose those), plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if k not in DECLARED and k != "CRYPTOPIPE_ENV_FILE"}, **extra}


@pytest.fixture
def bad_env_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.env"
    path.write_text(BAD_FILE)
    return path


def assert_lists_every_problem(message: str, env_file: Path) -> None:
    positions = [message.find(f"{env_file}{line}") for line in BAD_LINES]
    assert all(p >= 0 for p in positions), message
    assert positions == sorted(positions), f"not in file order:\n{message}"
    assert "TICKS_TOPIC" not in message  # a good line is not reported


# -- the declaration and the .env file ---------------------------------------------------------------------

def test_every_key_of_the_settings_file_is_declared_and_every_declared_key_without_a_default_is_in_it() -> None:
    keys = set(read_env_file(PROJECT_ROOT / ".env"))
    assert keys - set(DECLARED) == set()
    assert {k for k, s in DECLARED.items() if s.default is None and k not in URL_OVERRIDES} - keys == set()
    assert keys.isdisjoint(SECRET_KEYS) and set(DECLARED).isdisjoint(SECRET_KEYS)


def test_every_value_of_the_settings_file_has_its_declared_type(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in DECLARED:
        monkeypatch.delenv(key, raising=False)
    values = load_env(PROJECT_ROOT / ".env")
    assert {k: values[k] for k in read_env_file(PROJECT_ROOT / ".env")} == read_env_file(PROJECT_ROOT / ".env")


def test_every_declared_setting_says_what_it_means() -> None:
    assert all(setting.meaning.strip() and setting.kind.expected for setting in DECLARED.values())


# -- one error that lists everything -----------------------------------------------------------------------

def test_one_error_lists_every_bad_line_unknown_key_password_and_bad_value_with_file_and_line(
        bad_env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in DECLARED:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CHART_MAX_VIEWERS", "many")
    with pytest.raises(SettingsError) as error:
        Settings.load(bad_env_file)
    message = str(error.value)
    assert_lists_every_problem(message, bad_env_file)
    assert "environment: CHART_MAX_VIEWERS='many': expected a whole number at least 1" in message
    assert message.startswith("5 bad setting(s)")


def test_the_environment_wins_over_the_file_and_a_good_environment_value_hides_a_bad_file_value(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / ".env"
    path.write_text("KAFKA_PORT=not-a-port\nTICKS_TOPIC=from.file\nPRODUCER_SOURCE=replay\n")
    for key in DECLARED:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KAFKA_PORT", "19092")
    monkeypatch.setenv("TICKS_TOPIC", "from.environment")
    settings = Settings.load(path)
    assert (settings.port("KAFKA"), settings["TICKS_TOPIC"], settings["PRODUCER_SOURCE"]) == (
        19092, "from.environment", "replay")
    assert settings["PRODUCER_LOG_FORMAT"] == DECLARED["PRODUCER_LOG_FORMAT"].default  # declared default


def test_an_undeclared_environment_variable_is_no_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / ".env"
    path.write_text("TICKS_TOPIC=t\n")
    monkeypatch.setenv("KAFAK_PORT", "x")  # the environment holds anything; only declared names are settings
    assert "KAFAK_PORT" not in Settings.load(path).env


ENTRY_POINTS = {
    "producer": [sys.executable, "-m", "producer", "--help"],
    "control": [sys.executable, "-m", "control", "levels"],
    "supervisor": [sys.executable, "-m", "control.supervisor"],
    "dlq": [sys.executable, "-m", "control.dlq", "show"],
    "chart": [sys.executable, "-m", "chart"],
    "stack": [sys.executable, "-m", "stack", "status"],
    "core": [sys.executable, "-m", "core", "settings"],
    "scripts/stack.sh": ["bash", "scripts/stack.sh", "status"],
    "scripts/fetch_artifacts.sh": ["bash", "scripts/fetch_artifacts.sh", "--help"],
    "scripts/check_schema_compat.sh": ["bash", "scripts/check_schema_compat.sh"],
}


@pytest.mark.parametrize("argv", ENTRY_POINTS.values(), ids=ENTRY_POINTS.keys())
def test_every_entry_point_refuses_a_bad_settings_file_with_the_one_error(argv: list[str], bad_env_file: Path) -> None:
    result = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
                            env=clean_environment(CRYPTOPIPE_ENV_FILE=str(bad_env_file),
                                                  CRYPTOPIPE_PYTHON=sys.executable))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert_lists_every_problem(result.stderr, bad_env_file)


# -- bash gets its values from Python ----------------------------------------------------------------------

def bash_load(env_file: Path, script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"set -euo pipefail; source scripts/lib/settings.sh; "
                                         f"load_settings {env_file}; {script}"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
                          env=clean_environment(**env))


@pytest.mark.parametrize("value", ["-Xms64m -Xmx384m", "it's \"quoted\" $HOME `date` \\ ; exit 3", "", " # "])
def test_bash_gets_exactly_the_value_python_reads(tmp_path: Path, value: str) -> None:
    path = tmp_path / ".env"
    quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    path.write_text(f"BROKER_HEAP_OPTS=x\nPOWERBI_SERVER=\nTICKS_TOPIC=t\nPRODUCER_REPLAY_FILE={quoted}\n")
    python_value = read_env_file(path)["PRODUCER_REPLAY_FILE"]
    assert python_value == value
    result = bash_load(path, 'printf "%s" "${PRODUCER_REPLAY_FILE-unset}"')
    assert result.returncode == 0, result.stderr
    assert result.stdout == value


def test_bash_keeps_a_value_from_the_environment_and_stops_on_a_bad_file(bad_env_file: Path, tmp_path: Path) -> None:
    good = tmp_path / ".env"
    good.write_text("TICKS_TOPIC=from.file\nKAFKA_PORT=9092\n")
    result = bash_load(good, 'echo "$TICKS_TOPIC $KAFKA_PORT"', TICKS_TOPIC="from.environment")
    assert result.stdout.split() == ["from.environment", "9092"], result.stderr
    result = bash_load(bad_env_file, "echo loaded")
    assert result.returncode != 0 and "loaded" not in result.stdout
    assert_lists_every_problem(result.stderr, bad_env_file)


def test_the_shell_path_runs_on_the_machines_python3_with_the_standard_library_only() -> None:
    """.ci/run loads the settings before the project's virtualenv exists: -S leaves out every site-packages."""
    python3 = shutil.which("python3", path="/usr/bin:/bin")
    assert python3, "the machine's python3 (Debian's) is expected at /usr/bin/python3"
    result = subprocess.run([python3, "-S", "-m", "core", "settings", "--shell", "--file",
                             str(PROJECT_ROOT / ".env")], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            env=clean_environment(), timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "export POSTGRES_VERSION=" in result.stdout and "PASSWORD" not in result.stdout


# -- the parser ---------------------------------------------------------------------------------------------

def test_the_parser_reads_compose_style_lines() -> None:
    lines = parse_env_text("export A=1\nB = two words  # a comment\nC=#not-a-comment\nD='x # y'\n"
                           'E="tab\\there"\n\n# only a comment\nF=\n')
    assert {line.key: line.value for line in lines} == {"A": "1", "B": "two words", "C": "#not-a-comment",
                                                        "D": "x # y", "E": "tab\there", "F": ""}
    assert [line.number for line in lines] == [1, 2, 3, 4, 5, 8]


@pytest.mark.parametrize("line", ["A='open", "A='x' trailing", 'A="open', "just words", "=value", "1A=x"])
def test_the_parser_refuses_what_it_cannot_read(tmp_path: Path, line: str) -> None:
    path = tmp_path / "f.env"
    path.write_text(f"OK=1\n{line}\n")
    with pytest.raises(SettingsError, match=rf"{path}:2: not a KEY=VALUE line"):
        read_env_file(path)


# -- URLs: made in one place -------------------------------------------------------------------------------

def test_every_registry_api_comes_from_the_one_ccompat_url() -> None:
    native = Settings(env={"REGISTRY_PORT": "18080"}, state_dir=PROJECT_ROOT, cache_dir=PROJECT_ROOT)
    assert native.ccompat_url == "http://127.0.0.1:18080/apis/ccompat/v7"
    assert native.registry_api("v2") == "http://127.0.0.1:18080/apis/registry/v2"
    compose = Settings(env={"SCHEMA_REGISTRY_URL": "http://registry:8080/apis/ccompat/v7/"}, state_dir=PROJECT_ROOT,
                       cache_dir=PROJECT_ROOT)
    assert compose.registry_api("v3") == "http://registry:8080" + REGISTRY_APIS["v3"]
    assert registry_api_url("http://confluent:8081", "v2") is None
    other = Settings(env={"SCHEMA_REGISTRY_URL": "http://confluent:8081"}, state_dir=PROJECT_ROOT,
                     cache_dir=PROJECT_ROOT)
    with pytest.raises(SettingsError, match="does not end in /apis/ccompat/v7"):
        other.registry_api("v2")


def test_no_module_builds_a_registry_api_path_or_a_loopback_url_itself() -> None:
    sources = [p for folder in ("core", "control", "producer", "chart", "stack", "bench")
               for p in (PROJECT_ROOT / folder).rglob("*.py") if p.name != "settings.py"]
    offenders = [f"{p.relative_to(PROJECT_ROOT)}:{n}" for p in sources
                 for n, line in enumerate(p.read_text().splitlines(), start=1)
                 if ("/apis/" in line or 'f"http://127.0.0.1:' in line) and not line.lstrip().startswith("#")
                 and "help=" not in line]
    assert offenders == []
