"""No password is committed; the native stack's generated secrets file (core/secrets.py) and how
Settings reads it. Unit tests on temporary state dirs; tests/test_security.py checks the running stack."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from control.kafka_setup import KafkaSetupError, ensure_kafka
from core.secrets import (
    DB_ROLE_OF_SECRET,
    _quoted,
    ensure_secret_files,
    ensure_secrets,
    read_pending,
    read_secret_files,
)
from core.settings import KAFKA_PRINCIPALS, PROJECT_ROOT, SECRET_KEYS, Settings, SettingsError, read_env_file

# The passwords the project used to ship, each equal to its role's name.
OLD_DEFAULTS = ("postgres", "crypto_writer", "powerbi_reader", "registry")
_word = "(" + "|".join(OLD_DEFAULTS) + r")\b"
# An old default used as a password: KEY=value / KEY: value, user:password@ in a URL, a psql default
# (\set x_password value), a shell default (${X_PASSWORD:=value}), a password file or SQL literal.
OLD_PASSWORD_USES = re.compile(
    r"(?i)(password\w*[\"']?\s*[:=]\s*[\"']?" + _word
    + r"|://[^:/@\s]+:" + _word[:-3] + r")@"
    + r"|_password\s+" + _word
    + r"|password\w*:=" + _word
    + r"|password\s+'" + _word + ")"
)


def settings_in(tmp_path: Path, **env: str) -> Settings:
    return Settings(env=dict(env), state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# Lines as they were committed; the old values are filled in at run time, so this file holds none.
@pytest.mark.parametrize("line", [
    "POSTGRES_PASSWORD={pg}",
    "CONNECT_DB_PASSWORD={writer}",
    "psql postgresql://{pg}:{pg}@127.0.0.1:5432/crypto",
    "\\if :{{?reader_password}} \\else \\set reader_password {reader} \\endif",
    ': "${{REGISTRY_DB_PASSWORD:={registry}}}"',
    "      APICURIO_DATASOURCE_PASSWORD: {registry}",
    "ALTER ROLE x PASSWORD '{writer}'",
])
def test_the_default_password_pattern_finds_each_way_they_were_committed(line: str) -> None:
    pg, writer, reader, registry = OLD_DEFAULTS
    assert OLD_PASSWORD_USES.search(line.format(pg=pg, writer=writer, reader=reader, registry=registry))


@pytest.mark.parametrize("line", ["POSTGRES_USER=postgres", "REGISTRY_DB_USER=registry",
                                  "psql -U postgres crypto", "postgresql://powerbi_reader@127.0.0.1/crypto"])
def test_the_default_password_pattern_leaves_role_names_alone(line: str) -> None:
    assert not OLD_PASSWORD_USES.search(line)


def test_no_tracked_file_holds_a_default_password() -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True).stdout
    assert files, "not a git checkout"
    found = []
    for name in filter(None, files.decode().split("\0")):
        path = PROJECT_ROOT / name
        if not path.is_file():
            continue  # deleted in the working tree
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OLD_PASSWORD_USES.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_settings_file_defines_no_secret() -> None:
    assert set(read_env_file(PROJECT_ROOT / ".env")).isdisjoint(SECRET_KEYS)


def test_the_first_up_writes_a_random_password_for_every_secret_readable_by_its_user_only(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    assert ensure_secrets(settings) == list(SECRET_KEYS)
    assert mode(settings.secrets_file) == 0o600
    values = read_env_file(settings.secrets_file)
    assert values.keys() == set(SECRET_KEYS)
    assert len(set(values.values())) == len(SECRET_KEYS) and all(len(v) >= 32 for v in values.values())
    assert ensure_secrets(settings_in(tmp_path / "other")) and read_env_file(
        settings_in(tmp_path / "other").secrets_file) != values  # random, not a default


def test_a_later_up_reuses_the_file_unchanged(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    ensure_secrets(settings)
    before = settings.secrets_file.read_bytes()
    assert ensure_secrets(settings) == []
    assert settings.secrets_file.read_bytes() == before


def test_a_rotated_password_in_the_file_is_kept_and_a_missing_one_added_alone(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    ensure_secrets(settings)
    (settings.state_dir / "secrets.pending").unlink()  # as after the database took them
    text = settings.secrets_file.read_text()
    text = re.sub(r"(?m)^POWERBI_DB_PASSWORD=.*$", "POWERBI_DB_PASSWORD='rotated pass'", text)
    text = re.sub(r"(?m)^REGISTRY_DB_PASSWORD=.*\n", "", text)
    settings.secrets_file.write_text(text)
    assert ensure_secrets(settings) == ["REGISTRY_DB_PASSWORD"]
    assert settings["POWERBI_DB_PASSWORD"] == "rotated pass"
    assert read_pending(settings) == ["REGISTRY_DB_PASSWORD"]  # only the new one goes to the database


def test_a_password_exported_before_the_first_up_is_the_one_written(tmp_path: Path) -> None:
    settings = settings_in(tmp_path, POSTGRES_PASSWORD="chosen by the admin")
    ensure_secrets(settings)
    assert read_env_file(settings.secrets_file)["POSTGRES_PASSWORD"] == "chosen by the admin"


def test_database_passwords_added_to_the_file_wait_for_the_database(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    ensure_secrets(settings)
    assert set(read_pending(settings)) == set(SECRET_KEYS) >= set(DB_ROLE_OF_SECRET)


def test_a_secrets_file_readable_by_others_is_made_private_again(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    ensure_secrets(settings)
    settings.secrets_file.chmod(0o644)
    ensure_secrets(settings)
    assert mode(settings.secrets_file) == 0o600


def test_settings_read_the_file_on_every_access(tmp_path: Path) -> None:
    settings = settings_in(tmp_path, CONNECT_REST_USER="admin")
    ensure_secrets(settings)
    text = re.sub(r"(?m)^CONNECT_REST_PASSWORD=.*$", "CONNECT_REST_PASSWORD=new-one", settings.secrets_file.read_text())
    settings.secrets_file.write_text(text)
    assert settings.connect_auth[1] == "new-one"


def test_a_secret_in_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    ensure_secrets(settings)
    overridden = settings_in(tmp_path, POWERBI_DB_PASSWORD="from compose")
    assert overridden["POWERBI_DB_PASSWORD"] == "from compose"


def test_a_missing_secret_is_an_error_that_says_where_it_comes_from(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"POSTGRES_PASSWORD.*secrets\.env.*stack\.sh up.*POSTGRES_PASSWORD_FILE"):
        settings_in(tmp_path)["POSTGRES_PASSWORD"]
    assert settings_in(tmp_path).get("POSTGRES_PASSWORD") is None


@pytest.mark.parametrize("value", ["plain-Value_1.~", "with space", "quote ' and \" and \\ backslash", "$HOME #x"])
def test_any_password_survives_the_file_format(tmp_path: Path, value: str) -> None:
    path = tmp_path / "f.env"
    path.write_text(f"KEY={_quoted(value)}\n")
    assert read_env_file(path) == {"KEY": value}


# -- docker compose: one file per secret in the `secrets` volume (python -m control secrets) -------------------

def run_control(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "control", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def test_compose_secrets_init_writes_every_secret_once_and_never_changes_one(tmp_path: Path) -> None:
    first = run_control("secrets", "--dir", str(tmp_path), "init")
    assert first.returncode == 0 and "created POSTGRES_PASSWORD" in first.stdout
    values = read_secret_files(tmp_path)
    assert values.keys() == set(SECRET_KEYS) and all(len(v) == 32 for v in values.values())
    second = run_control("secrets", "--dir", str(tmp_path), "init")
    assert second.returncode == 0 and "none changed" in second.stdout
    assert read_secret_files(tmp_path) == values


def test_compose_secrets_show_prints_the_one_asked_for(tmp_path: Path) -> None:
    ensure_secret_files(tmp_path)
    shown = run_control("secrets", "--dir", str(tmp_path), "show", "POWERBI_DB_PASSWORD")
    assert shown.returncode == 0
    assert shown.stdout == (tmp_path / "POWERBI_DB_PASSWORD").read_text()


def test_compose_secrets_show_before_init_says_to_start_the_stack(tmp_path: Path) -> None:
    shown = run_control("secrets", "--dir", str(tmp_path), "show", "POWERBI_DB_PASSWORD")
    assert shown.returncode == 1 and "docker compose up" in shown.stderr and shown.stdout == ""


def test_a_secret_file_named_by_name_file_wins_over_the_native_secrets_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-the-volume\n")
    settings = settings_in(tmp_path, CONNECT_REST_PASSWORD_FILE=str(tmp_path / "pw"))
    ensure_secrets(settings_in(tmp_path))
    assert settings["CONNECT_REST_PASSWORD"] == "from-the-volume"


def test_an_unreadable_or_empty_secret_file_is_an_error_that_names_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="POWERBI_DB_PASSWORD_FILE .*missing"):
        settings_in(tmp_path, POWERBI_DB_PASSWORD_FILE=str(tmp_path / "missing"))["POWERBI_DB_PASSWORD"]
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        settings_in(tmp_path, POWERBI_DB_PASSWORD_FILE=str(tmp_path / "empty"))["POWERBI_DB_PASSWORD"]


def test_registry_auth_an_unknown_identity_is_an_error_and_a_missing_password_means_anonymous(tmp_path: Path) -> None:
    settings = Settings(env={}, state_dir=tmp_path, cache_dir=tmp_path)
    assert settings.registry_auth("producer") is None
    with pytest.raises(SettingsError, match="expected one of"):
        settings.registry_auth("converter")
    unreadable = Settings(env={"REGISTRY_ADMIN_PASSWORD_FILE": str(tmp_path / "missing")}, state_dir=tmp_path,
                          cache_dir=tmp_path)
    with pytest.raises(SettingsError, match="REGISTRY_ADMIN_PASSWORD_FILE"):
        unreadable.registry_auth("admin")
def test_kafka_config_authenticates_each_principal_with_its_own_generated_password(tmp_path: Path) -> None:
    settings = settings_in(tmp_path, KAFKA_PORT="19092")
    ensure_secrets(settings)
    configs = {principal: settings.kafka_config(principal) for principal in KAFKA_PRINCIPALS}
    for principal, config in configs.items():
        assert config == {"bootstrap.servers": "127.0.0.1:19092", "security.protocol": "SASL_PLAINTEXT",
                          "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": principal,
                          "sasl.password": read_env_file(settings.secrets_file)[KAFKA_PRINCIPALS[principal]]}
    assert len({config["sasl.password"] for config in configs.values()}) == len(KAFKA_PRINCIPALS)
    assert settings.kafka_config() == configs["admin"]
    with pytest.raises(SettingsError, match="unknown Kafka principal"):
        settings.kafka_config("anonymous")


def test_compose_containers_get_a_kafka_password_from_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "KAFKA_PRODUCER_PASSWORD"
    secret.write_text("from-the-volume\n")
    settings = settings_in(tmp_path, KAFKA_BOOTSTRAP_SERVERS="broker:29092", KAFKA_PRODUCER_PASSWORD_FILE=str(secret))
    config = settings.kafka_config("producer")
    assert (config["bootstrap.servers"], config["sasl.password"]) == ("broker:29092", "from-the-volume")


def test_kafka_setup_refuses_a_password_the_jaas_settings_cannot_carry(tmp_path: Path) -> None:
    settings = settings_in(tmp_path, KAFKA_PORT="9", KAFKA_DLQ_PASSWORD='with"quote')
    ensure_secrets(settings)
    with pytest.raises(KafkaSetupError, match="KAFKA_DLQ_PASSWORD"):
        ensure_kafka(settings)
