"""The one settings loader: `.env` at the repository root, overridden by the process environment
(exactly as docker compose treats it), plus every value derived from it (URLs, DSNs, cache paths).

Every setting is declared once, below in DECLARED (name, type, default, meaning). Settings.load()
checks the file and the environment against it and refuses, in ONE error, every line it cannot parse, every
key of the file that is not declared (a typo) and every value of the wrong type, each with file and line.
Without a `.env` (e.g. a producer installed elsewhere) only the environment counts. Passwords are never in
`.env`: settings[NAME] takes them from the environment, else from the native stack's secrets file.

Standard library only (psycopg is imported where it is used): `python3 -m core settings --shell` runs on a
machine's own python3 before the project's virtualenv exists (scripts/lib/settings.sh, .ci/run).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from core.envfile import Line, parse_env

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = PROJECT_ROOT / ".env"


# -- the declaration: every setting, its type, its default and what it means --------------------------------
@dataclass(frozen=True)
class Kind:
    """A setting's type: what a value must look like (`check`), said in words for the error (`expected`)."""
    expected: str
    check: Callable[[str], bool]


def _pattern(expected: str, regex: str) -> Kind:
    return Kind(expected, lambda value: re.fullmatch(regex, value) is not None)


def _number(minimum: float, whole: bool = False, maximum: float | None = None) -> Kind:
    def check(value: str) -> bool:
        try:
            number = int(value) if whole else float(value)
        except ValueError:
            return False
        return minimum <= number and (maximum is None or number <= maximum) and number == number  # not NaN
    span = f"at least {minimum:g}" + (f" and at most {maximum:g}" if maximum is not None else "")
    return Kind(f"a {'whole ' if whole else ''}number {span}", check)


def _above_zero(value: str) -> bool:
    try:
        return float(value) > 0
    except ValueError:
        return False


def _timestamp(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


TEXT = Kind("any text", lambda value: True)
POSITIVE = Kind("a number above 0", _above_zero)
WORDS = Kind("non-empty text", lambda value: bool(value.strip()))
NAME = _pattern("a PostgreSQL name: 1 to 63 characters, no surrounding spaces", r"\S(.{0,61}\S)?")
USER = _pattern("a user name (letters, digits, . _ -)", r"[A-Za-z0-9._-]+")
VERSION = _pattern("a version or image tag (letters, digits, . _ -)", r"[0-9A-Za-z][0-9A-Za-z._-]*")
PORT = _number(1, whole=True, maximum=65535)
HOST = _pattern("a host name or IP address", r"[A-Za-z0-9.:\[\]-]+")
TOPIC = _pattern("a Kafka topic name (letters, digits, . _ -)", r"[A-Za-z0-9._-]{1,249}")
SYMBOLS = _pattern("comma-separated symbols, no spaces", r"[^,\s]+(,[^,\s]+)*")
PG_DURATION = _pattern("a PostgreSQL duration such as 30s, 500ms or 2min", r"[0-9]+(us|ms|s|min|h|d)?")
PG_SIZE = _pattern("a PostgreSQL size such as 256MB", r"[0-9]+(B|kB|MB|GB|TB)?")
TIMESTAMP = Kind("an ISO-8601 time such as 2009-01-03T00:00:00Z", _timestamp)
HOST_PORTS = _pattern("host:port[,host:port...], or empty",
                      r"([A-Za-z0-9.\[\]:-]+:[0-9]+(,[A-Za-z0-9.\[\]:-]+:[0-9]+)*)?")
URL = _pattern("an http(s) URL, or empty", r"(https?://[^\s]+)?")
HOST_PORT_OR_EMPTY = _pattern("host:port, or empty", r"([A-Za-z0-9.\[\]:-]+:[0-9]+)?")
SOURCE = _pattern("stream, poll or replay", r"stream|poll|replay")
LOG_FORMAT = _pattern("text or json", r"text|json")


@dataclass(frozen=True)
class Setting:
    kind: Kind
    meaning: str
    default: str | None = None  # None: `.env` holds the value (docker compose interpolates it from there)


S = Setting
DECLARED: dict[str, Setting] = {
    # versions
    "KAFKA_VERSION": S(VERSION, "Kafka broker and Connect (Maven Central; image apache/kafka)"),
    "APICURIO_REGISTRY_VERSION": S(VERSION, "Apicurio Registry (the schema registry)"),
    "APICURIO_CONVERTER_VERSION": S(VERSION, "Apicurio's Connect AvroConverter"),
    "DEBEZIUM_JDBC_VERSION": S(VERSION, "Debezium's JDBC sink connector"),
    "POSTGRES_VERSION": S(VERSION, "PostgreSQL's major version, both forms"),
    "MAVEN_IMAGE_VERSION": S(VERSION, "compose's Maven image (Connect plugins)"),
    "PYTHON_IMAGE_VERSION": S(VERSION, "compose's Python base image (producer, control, chart)"),
    "LIGHTWEIGHT_CHARTS_VERSION": S(VERSION, "the chart page's library (npm)"),
    "NODE_IMAGE_VERSION": S(VERSION, "compose's Node image (fetches the chart's library)"),
    # memory
    "BROKER_HEAP_OPTS": S(WORDS, "the broker's JVM heap options"),
    "REGISTRY_HEAP_OPTS": S(WORDS, "the registry's JVM heap options"),
    "CONNECT_HEAP_OPTS": S(WORDS, "each Connect worker's JVM heap options"),
    # ports on 127.0.0.1
    "POSTGRES_PORT": S(PORT, "PostgreSQL"),
    "KAFKA_PORT": S(PORT, "Kafka's client listener"),
    "KAFKA_CONTROLLER_PORT": S(PORT, "Kafka's KRaft controller listener (native stack)"),
    "REGISTRY_PORT": S(PORT, "the schema registry's API"),
    "REGISTRY_MANAGEMENT_PORT": S(PORT, "the registry's health endpoints"),
    "CONNECT_PORT": S(PORT, "Kafka Connect's REST API (worker i: + i)"),
    "CHART_PORT": S(PORT, "the live candle page"),
    "CONNECT_WORKERS": S(_number(1, whole=True), "Connect workers of the native stack"),
    # database
    "POSTGRES_DB": S(NAME, "the pipeline's database"),
    "POSTGRES_USER": S(NAME, "PostgreSQL's superuser"),
    "DB_OWNER_ROLE": S(NAME, "NOLOGIN role owning tables, views and functions"),
    "CONNECT_DB_USER": S(NAME, "the JDBC sink's role (writes ticks)"),
    "POWERBI_DB_USER": S(NAME, "Power BI's read-only role"),
    "POWERBI_STATEMENT_TIMEOUT": S(PG_DURATION, "Power BI's statement budget"),
    "POWERBI_CONNECTION_LIMIT": S(_number(1, whole=True), "Power BI's sessions at most"),
    "POWERBI_TEMP_FILE_LIMIT": S(PG_SIZE, "Power BI's temporary-file budget per statement"),
    "CHART_DB_USER": S(NAME, "the chart page's read-only role"),
    "CHART_STATEMENT_TIMEOUT": S(PG_DURATION, "the chart's statement budget"),
    "CHART_CONNECTION_LIMIT": S(_number(1, whole=True), "the chart's sessions at most"),
    "CHART_TEMP_FILE_LIMIT": S(PG_SIZE, "the chart's temporary-file budget per statement"),
    "READER_WATCHDOG_DB_USER": S(NAME, "the reader watchdog's role"),
    "READER_WATCHDOG_DB_HOST": S(HOST, "where the reader watchdog finds PostgreSQL"),
    "READER_WATCHDOG_INTERVAL": S(POSITIVE, "seconds between the reader watchdog's rounds"),
    "TICK_MAINTAINER_DB_USER": S(NAME, "the tick maintainer's role"),
    "TICK_MAINTAINER_DB_HOST": S(HOST, "where the tick maintainer finds PostgreSQL"),
    "TICK_MAINTENANCE_INTERVAL": S(POSITIVE, "seconds between the tick maintainer's rounds"),
    "RAW_TICKS_RETENTION_DAYS": S(_number(0, whole=True), "whole UTC days of raw ticks kept; 0: for ever"),
    "RAW_TICKS_PREMAKE_DAYS": S(_number(0, whole=True), "daily tick partitions made ahead"),
    "REGISTRY_DB": S(NAME, "the registry's database"),
    "REGISTRY_DB_USER": S(NAME, "the registry's role"),
    # Connect, pipeline, retention, disk
    "CONNECT_REST_USER": S(USER, "Connect REST API's basic-auth user"),
    "TICKS_TOPIC": S(TOPIC, "the ticks' topic"),
    "TICKS_DLQ_TOPIC": S(TOPIC, "the dead letters' topic"),
    "SYMBOLS": S(SYMBOLS, "the symbols the producer accepts"),
    "TICKS_RETENTION_HOURS": S(_number(1, whole=True), "hours the broker keeps ticks"),
    "TICKS_RETENTION_BYTES": S(_number(1, whole=True), "bytes per tick partition the broker keeps"),
    "TICKS_DLQ_RETENTION_HOURS": S(_number(1, whole=True), "hours the broker keeps dead letters"),
    "TICKS_DLQ_RETENTION_BYTES": S(_number(1, whole=True), "bytes of dead letters the broker keeps"),
    "DISK_WARN_FREE_PERCENT": S(_number(0, maximum=100), "`status` warns below this free disk percentage"),
    # producer
    "PRODUCER_SOURCE": S(SOURCE, "stream (Yahoo live), poll (Yahoo quotes) or replay (a file)"),
    "PRODUCER_REPLAY_FILE": S(TEXT, "the recording replay reads, relative to the project (empty: --file)"),
    "PRODUCER_REPLAY_SPEED": S(_number(0), "replay pace: 1 recorded, N faster, 0 as fast as possible"),
    "PRODUCER_LOG_FORMAT": S(LOG_FORMAT, "the producer's log lines: text or json", "text"),
    # chart
    "CHART_HOST": S(HOST, "address the chart page listens on"),
    "CHART_DB_HOST": S(HOST, "where the chart finds PostgreSQL"),
    "CHART_STALE_SECONDS": S(POSITIVE, "seconds without a tick before the stale banner"),
    "CHART_REFRESH_SECONDS": S(POSITIVE, "at most one query per this many seconds"),
    "CHART_MAX_CANDLES": S(_number(1, whole=True), "intervals a page shows"),
    "CHART_MAX_VIEWERS": S(_number(1, whole=True), "open pages at most"),
    "CHART_MAX_SERIES": S(_number(1, whole=True), "distinct series at most"),
    "CHART_SYMBOLS_REFRESH_SECONDS": S(POSITIVE, "seconds between re-reads of the known symbols"),
    "POWERBI_SERVER": S(HOST_PORT_OR_EMPTY, "host:port in the served .pbids (empty: localhost:POSTGRES_PORT)"),
    # the tick contract's time bounds
    "TICK_MIN_EVENT_TIME": S(TIMESTAMP, "no tick before this time"),
    "TICK_MAX_FUTURE_SECONDS": S(_number(1, whole=True), "no tick more than this many seconds ahead"),
    # full addresses that win over the ones derived from the ports (compose sets them; never in .env)
    "KAFKA_BOOTSTRAP_SERVERS": S(HOST_PORTS, "Kafka's address (default 127.0.0.1:KAFKA_PORT)"),
    "SCHEMA_REGISTRY_URL": S(URL, "the registry's Confluent-compatible API (default from REGISTRY_PORT)"),
    "CONNECT_URL": S(URL, "Connect's REST API (default http://127.0.0.1:CONNECT_PORT)"),
}
URL_OVERRIDES = ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "CONNECT_URL")  # optional: not in .env
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
# The registry's APIs under its base URL: the Confluent-compatible one (confluent-kafka's serializers, the
# producer, setup), the v2 one (Apicurio's Connect converter) and the v3 one (dry runs that say why).
REGISTRY_APIS = {"ccompat": "/apis/ccompat/v7", "v2": "/apis/registry/v2", "v3": "/apis/registry/v3"}
# Kafka's principals (SASL user names) and the secret holding each one's password. admin is the super user
# (setup, status, tests); the others get only their ACLs (control/kafka_setup.py).
KAFKA_PRINCIPALS = {"admin": "KAFKA_ADMIN_PASSWORD", "producer": "KAFKA_PRODUCER_PASSWORD",
                    "connect": "KAFKA_CONNECT_PASSWORD", "dlq": "KAFKA_DLQ_PASSWORD"}
# Every client authenticates with SCRAM-SHA-512 (credentials in the cluster's metadata, set by setup). PLAIN,
# checked against the broker's own config, exists for the admin only: the broker itself and the setup step that
# creates the SCRAM credentials (before it, none exists).
KAFKA_SASL_MECHANISM = "SCRAM-SHA-512"
KAFKA_BOOTSTRAP_MECHANISM = "PLAIN"


def registry_api_url(ccompat_url: str, api: str) -> str | None:
    """The URL of the registry's `api` (REGISTRY_APIS) on the server whose Confluent-compatible API is
    `ccompat_url`; None when that URL is not Apicurio's (does not end in its ccompat path)."""
    base = ccompat_url.rstrip("/")
    if not base.endswith(REGISTRY_APIS["ccompat"]):
        return None
    return base.removesuffix(REGISTRY_APIS["ccompat"]) + REGISTRY_APIS[api]


class SettingsError(RuntimeError):
    """The settings file cannot be read, or a required setting is missing; the message says which."""


def read_env_lines(env_file: Path) -> tuple[list[Line], list[tuple[int, str]]]:
    """The KEY=VALUE lines of a dotenv file and its lines that are not one (none of either without a file)."""
    try:
        text = env_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], []
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read settings file {env_file}: {exc}") from exc
    return parse_env(text, env_file)


def read_env_file(env_file: Path) -> dict[str, str]:
    """KEY=VALUE pairs of a dotenv file (core/envfile.py); a line it cannot parse is an error."""
    lines, bad = read_env_lines(env_file)
    if bad:
        raise SettingsError("\n".join(message for _, message in bad))
    return {line.key: line.value for line in lines}


def read_secret_file(path: Path, key: str) -> str:
    """The value of a NAME_FILE secret: the file's text without its trailing newline, never empty."""
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SettingsError(f"secret {key}: cannot read {key}_FILE {path}: {exc.strerror or exc}") from exc
    if not value:
        raise SettingsError(f"secret {key}: {key}_FILE {path} is empty")
    return value


def settings_file(env_file: Path | None = None) -> Path:
    """The settings file in use: the argument, else $CRYPTOPIPE_ENV_FILE, else the repository's .env."""
    return Path(os.environ.get("CRYPTOPIPE_ENV_FILE") or ENV_FILE) if env_file is None else env_file


def bad_value(key: str, value: str) -> str | None:
    """Why `value` is not a value of the declared setting `key` (None: it is, or `key` is not declared)."""
    setting = DECLARED.get(key)
    if setting is None or setting.kind.check(value):
        return None
    return f"expected {setting.kind.expected} ({setting.meaning})"


def problems(lines: list[Line], environment: dict[str, str], env_file: Path) -> list[tuple[int, str]]:
    """Every way the file and the environment break the declaration, one line each: keys of the file that are
    not declared (typos), passwords in the file, and declared values (file or environment) of the wrong type;
    each with its line number in the file (the environment's after the file's)."""
    found = []
    for line in lines:
        where = f"{env_file}:{line.number}"
        if line.key in SECRET_KEYS or line.key in SECRET_FILE_KEYS:
            found.append((line.number, f"{where}: {line.key} is a password: never in {env_file.name} "
                                       "(the stack generates it)"))
        elif line.key not in DECLARED:
            found.append((line.number, f"{where}: unknown setting {line.key} "
                                       "(not declared in core/settings.py: a typo?)"))
        elif line.key not in environment and (why := bad_value(line.key, line.value)):
            found.append((line.number, f"{where}: {line.key}={line.value!r}: {why}"))
    for key, value in sorted(environment.items()):
        if key in DECLARED and (why := bad_value(key, value)):
            found.append((len(lines) + 10**9, f"environment: {key}={value!r}: {why}"))
    return found


def load_env(env_file: Path | None = None) -> dict[str, str]:
    """Values from the settings file with the process environment winning: for declared keys, CRYPTOPIPE_*
    keys and the secrets; declared defaults for keys neither gives. Every problem of the file and of the
    environment's declared values is one SettingsError that lists them all."""
    env_file = settings_file(env_file)
    lines, bad = read_env_lines(env_file)
    if found := sorted(bad + problems(lines, dict(os.environ), env_file)):
        raise SettingsError(f"{len(found)} bad setting(s) in {env_file} or the environment:\n  "
                            + "\n  ".join(message for _, message in found))
    values = {key: setting.default for key, setting in DECLARED.items() if setting.default is not None}
    values.update((line.key, line.value) for line in lines)
    for key, value in os.environ.items():
        if (key in DECLARED or key.startswith("CRYPTOPIPE_") or key in SECRET_KEYS or key in SECRET_FILE_KEYS):
            values[key] = value
    return values


def shell_exports(env_file: Path | None = None) -> str:
    """`export KEY=value` lines (shlex-quoted) for every setting the file or the declared defaults give, the
    environment winning: what scripts/lib/settings.sh evaluates. Secrets never: they stay in their files."""
    import shlex

    env_file = settings_file(env_file)
    values = load_env(env_file)
    names = [line.key for line in read_env_lines(env_file)[0]]
    names += [key for key, setting in DECLARED.items() if setting.default is not None and key not in names]
    return "".join(f"export {key}={shlex.quote(values[key])}\n" for key in names)


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

    def local_url(self, port: str | int, path: str = "") -> str:
        """http://127.0.0.1:<port><path>, `port` a number or a name (<name>_PORT): a service of the native stack
        (or a port compose publishes); every such URL is made here."""
        return f"http://127.0.0.1:{self.port(port) if isinstance(port, str) else port}{path}"

    @property
    def registry_base(self) -> str:
        return self.local_url("REGISTRY")

    @property
    def ccompat_url(self) -> str:
        """The registry's Confluent-compatible API, what confluent-kafka's serializers talk to."""
        return self.env.get("SCHEMA_REGISTRY_URL") or f"{self.registry_base}{REGISTRY_APIS['ccompat']}"

    def registry_api(self, api: str) -> str:
        """The registry's `api` (REGISTRY_APIS: ccompat, v2, v3) on the same server as ccompat_url."""
        url = registry_api_url(self.ccompat_url, api)
        if url is None:
            raise SettingsError(f"SCHEMA_REGISTRY_URL {self.ccompat_url} does not end in {REGISTRY_APIS['ccompat']}")
        return url

    def client_env(self) -> dict[str, str]:
        """The full addresses a client started by the stack, a bench or a test is given (the environment wins
        over .env's ports for them): KAFKA_BOOTSTRAP_SERVERS and SCHEMA_REGISTRY_URL."""
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers, "SCHEMA_REGISTRY_URL": self.ccompat_url}

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
        return self.env.get("CONNECT_URL") or self.local_url("CONNECT")

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
