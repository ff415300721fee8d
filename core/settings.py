"""The one settings loader: `.env` at the repository root, overridden by the process environment
(exactly as docker compose treats it), plus every value derived from it (URLs, DSNs, cache paths).

A line of `.env` that does not parse is an error that names the file and line, never silently skipped.
Without a `.env` (e.g. a producer installed elsewhere) only the environment counts. Passwords are never in
`.env`: settings[NAME] takes them from the environment, else from the native stack's secrets file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from dotenv.parser import parse_stream

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = PROJECT_ROOT / ".env"
# Full URLs that, when set in the environment, win over the ones derived from ports.
URL_OVERRIDES = ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "CONNECT_URL")
# Credentials: never in .env. The environment wins: NAME itself, or NAME_FILE naming a file that holds it
# (docker compose's containers read the stack's generated secrets so); otherwise the native stack's secrets
# file (core/secrets.py generates it on the first `up`, mode 0600).
SECRET_KEYS = ("POSTGRES_PASSWORD", "CONNECT_DB_PASSWORD", "POWERBI_DB_PASSWORD", "REGISTRY_DB_PASSWORD",
               "CONNECT_REST_PASSWORD", "CHART_DB_PASSWORD", "READER_WATCHDOG_DB_PASSWORD",
               "TICK_MAINTAINER_DB_PASSWORD", "REGISTRY_PRODUCER_PASSWORD", "REGISTRY_ADMIN_PASSWORD",
               "KAFKA_ADMIN_PASSWORD", "KAFKA_PRODUCER_PASSWORD", "KAFKA_CONNECT_PASSWORD", "KAFKA_DLQ_PASSWORD")
SECRET_FILE_KEYS = tuple(f"{key}_FILE" for key in SECRET_KEYS)
# The schema registry's users (docs/registry-auth.md): name -> (Apicurio role, the secret holding its password).
# Writes need one of them; reads are open. The names are fixed: the registry's configuration keys name them.
REGISTRY_USERS = {"producer": ("sr-developer", "REGISTRY_PRODUCER_PASSWORD"),
                  "admin": ("sr-admin", "REGISTRY_ADMIN_PASSWORD")}
# Kafka's principals (SASL user names) and the secret holding each one's password. admin is the super user
# (setup, status, tests); the others get only their ACLs (control/kafka_setup.py).
KAFKA_PRINCIPALS = {"admin": "KAFKA_ADMIN_PASSWORD", "producer": "KAFKA_PRODUCER_PASSWORD",
                    "connect": "KAFKA_CONNECT_PASSWORD", "dlq": "KAFKA_DLQ_PASSWORD"}
# Every client authenticates with SCRAM-SHA-512 (credentials in the cluster's metadata, set by setup). PLAIN,
# checked against the broker's own config, exists for the admin only: the broker itself and the setup step that
# creates the SCRAM credentials (before it, none exists).
KAFKA_SASL_MECHANISM = "SCRAM-SHA-512"
KAFKA_BOOTSTRAP_MECHANISM = "PLAIN"


class SettingsError(RuntimeError):
    """The settings file cannot be read, or a required setting is missing; the message says which."""


def read_env_file(env_file: Path) -> dict[str, str]:
    """KEY=VALUE pairs of a dotenv file (python-dotenv's parser); a line it cannot parse is an error."""
    try:
        text = env_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read settings file {env_file}: {exc}") from exc
    values: dict[str, str] = {}
    for binding in parse_stream(_StringStream(text)):
        if binding.error:
            line = binding.original.line
            raise SettingsError(f"{env_file}:{line}: not a KEY=VALUE line: {binding.original.string.strip()!r}")
        if binding.key is not None and binding.value is not None:
            values[binding.key] = binding.value
    return values


def read_secret_file(path: Path, key: str) -> str:
    """The value of a NAME_FILE secret: the file's text without its trailing newline, never empty."""
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SettingsError(f"secret {key}: cannot read {key}_FILE {path}: {exc.strerror or exc}") from exc
    if not value:
        raise SettingsError(f"secret {key}: {key}_FILE {path} is empty")
    return value


class _StringStream:
    """parse_stream wants something with read()."""

    def __init__(self, text: str) -> None:
        self._text = text

    def read(self) -> str:
        return self._text


def load_env(env_file: Path | None = None) -> dict[str, str]:
    """Values from the settings file with the process environment winning: for keys the file defines,
    CRYPTOPIPE_* keys, the full-URL overrides and the secrets."""
    env_file = Path(os.environ.get("CRYPTOPIPE_ENV_FILE") or ENV_FILE) if env_file is None else env_file
    values = read_env_file(env_file)
    for key, value in os.environ.items():
        if (key in values or key.startswith("CRYPTOPIPE_") or key in URL_OVERRIDES or key in SECRET_KEYS
                or key in SECRET_FILE_KEYS):
            values[key] = value
    return values


@dataclass(frozen=True)
class Settings:
    env: dict[str, str]
    state_dir: Path
    cache_dir: Path

    @classmethod
    def load(cls, env_file: Path | None = None) -> Settings:
        env = load_env(env_file)
        cache = Path(env.get("CRYPTOPIPE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                     / "cryptopipe")
        state = Path(env.get("CRYPTOPIPE_STATE") or PROJECT_ROOT / ".stack")
        return cls(env=env, state_dir=state, cache_dir=cache)

    def __getitem__(self, key: str) -> str:
        if key in self.env:
            return self.env[key]
        if key in SECRET_KEYS:
            # Read on every access: a password rotated in the file is used at once, and never copied around.
            if path := self.env.get(f"{key}_FILE"):
                return read_secret_file(Path(path), key)
            if value := read_env_file(self.secrets_file).get(key):
                return value
            raise SettingsError(
                f"secret {key} is not set: the native stack generates it into {self.secrets_file} on "
                f"`scripts/stack.sh up`; in compose's containers {key}_FILE names the generated file"
            )
        raise SettingsError(f"setting {key} is missing from .env and the environment")

    def get(self, key: str, default: str | None = None) -> str | None:
        try:
            return self[key]
        except SettingsError:
            return default

    @property
    def secrets_file(self) -> Path:
        """The native stack's generated credentials (core/secrets.py), readable by its user only."""
        return self.state_dir / "secrets.env"

    def role_dsn(self, role: str, application_name: str) -> str:
        """A libpq conninfo for the database role named by <role>_DB_USER (password <role>_DB_PASSWORD), reaching
        PostgreSQL at <role>_DB_HOST: how the supervisor's helpers (reader watchdog, tick maintainer) connect."""
        from psycopg.conninfo import make_conninfo  # here: the producer reads settings without needing psycopg

        return make_conninfo(host=self[f"{role}_DB_HOST"], port=self.port("POSTGRES"), dbname=self["POSTGRES_DB"],
                             user=self[f"{role}_DB_USER"], password=self[f"{role}_DB_PASSWORD"],
                             application_name=application_name, connect_timeout=3)

    def integer(self, key: str, minimum: int = 1) -> int:
        """A whole-number setting, at least `minimum`; anything else is an error naming the setting."""
        value = self[key]
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(f"setting {key} must be a whole number, not {value!r}") from None
        if number < minimum:
            raise SettingsError(f"setting {key} must be at least {minimum}, not {number}")
        return number

    def port(self, name: str) -> int:
        value = self[f"{name}_PORT"]
        try:
            return int(value)
        except ValueError:
            raise SettingsError(f"setting {name}_PORT must be a port number, not {value!r}") from None

    # -- where clients find the services (127.0.0.1 natively; compose sets the full URLs) --------
    @property
    def bootstrap_servers(self) -> str:
        return self.env.get("KAFKA_BOOTSTRAP_SERVERS") or f"127.0.0.1:{self.port('KAFKA')}"

    def kafka_config(self, principal: str = "admin", mechanism: str = KAFKA_SASL_MECHANISM) -> dict[str, str]:
        """librdkafka settings of a client that connects to the broker as `principal` (admin: setup,
        status and tests; producer; connect; dlq): SASL (SCRAM-SHA-512) with the principal's password from the
        secrets. The password is read here, on every call, and never leaves the returned dict."""
        if principal not in KAFKA_PRINCIPALS:
            raise SettingsError(f"unknown Kafka principal {principal!r}: one of {', '.join(KAFKA_PRINCIPALS)}")
        return {"bootstrap.servers": self.bootstrap_servers, "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": mechanism, "sasl.username": principal,
                "sasl.password": self[KAFKA_PRINCIPALS[principal]]}

    @property
    def registry_base(self) -> str:
        return f"http://127.0.0.1:{self.port('REGISTRY')}"

    @property
    def ccompat_url(self) -> str:
        """The registry's Confluent-compatible API, what confluent-kafka's serializers talk to."""
        return self.env.get("SCHEMA_REGISTRY_URL") or f"{self.registry_base}/apis/ccompat/v7"

    def registry_auth(self, identity: str) -> tuple[str, str] | None:
        """User and password the registry knows `identity` by (producer: registers schemas; admin: setup,
        levels, the schema check, tests); None when its password is not set here (a producer pointed at
        another registry): the registry then refuses its writes (401) and answers its reads."""
        if identity not in REGISTRY_USERS:
            raise SettingsError(f"no registry identity {identity!r}: expected one of {', '.join(REGISTRY_USERS)}")
        secret = REGISTRY_USERS[identity][1]
        if not (self.env.get(secret) or self.env.get(f"{secret}_FILE") or read_env_file(self.secrets_file).get(secret)):
            return None
        return identity, self[secret]  # a NAME_FILE that cannot be read is an error, never anonymous

    @property
    def connect_url(self) -> str:
        return self.env.get("CONNECT_URL") or f"http://127.0.0.1:{self.port('CONNECT')}"

    @property
    def connect_auth(self) -> tuple[str, str]:
        """User and password of Connect's REST API (basic auth): every client sends them."""
        return self["CONNECT_REST_USER"], self["CONNECT_REST_PASSWORD"]

    # -- downloaded artifacts ----------------------------------------------------------------------
    @property
    def kafka_home(self) -> Path:
        return self.cache_dir / f"kafka-{self['KAFKA_VERSION']}"

    @property
    def registry_home(self) -> Path:
        return self.cache_dir / f"registry-{self['APICURIO_REGISTRY_VERSION']}"

    @property
    def plugins_dir(self) -> Path:
        return self.cache_dir / f"plugins-{self['DEBEZIUM_JDBC_VERSION']}-{self['APICURIO_CONVERTER_VERSION']}"

    # -- PostgreSQL ----------------------------------------------------------------------------------
    def pg_dsn(self, user: str | None = None, password: str | None = None, dbname: str | None = None) -> str:
        """A libpq URL; user and password are percent-encoded, so any character is safe in them."""
        user = user or self["POSTGRES_USER"]
        password = password if password is not None else self["POSTGRES_PASSWORD"]
        dbname = dbname or self["POSTGRES_DB"]
        return (f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:"
                f"{self.port('POSTGRES')}/{quote(dbname, safe='')}")

    def jdbc_url(self, dbname: str | None = None) -> str:
        """The JDBC URL of a database of the stack (the database name percent-encoded; credentials are
        passed apart from the URL, so they never need encoding and never show in it)."""
        return f"jdbc:postgresql://127.0.0.1:{self.port('POSTGRES')}/{quote(dbname or self['POSTGRES_DB'], safe='')}"
