"""The services of the native stack, each with one start / wait-until-ready / stop routine.

Used by the `stack` CLI (scripts/stack.sh) and by the test fixtures, so tests run what users run.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import psycopg
import requests
from psycopg import sql

from control.connector import ConnectApi
from control.kafka_setup import KafkaSetupError, admin_client, ensure_kafka
from core.files import write_atomic
from core.secrets import DB_ROLE_OF_SECRET, clear_pending, read_pending
from core.settings import PROJECT_ROOT, REGISTRY_USERS, Settings, read_env_file
from stack.process import ManagedProcess, StackError, base_environment

CONFIG_DIR = PROJECT_ROOT / "stack" / "config"
JDBC_SINK_CLASS = "io.debezium.connector.jdbc.JdbcSinkConnector"
# The tick contract's limits (.env): the connector's TickContract transform reads them from the worker.
TICK_CONTRACT_SETTINGS = ("TICK_MIN_EVENT_TIME", "TICK_MAX_FUTURE_SECONDS")
# Server options both forms pass (docker-compose.yml's postgres `command` lists the same; a test compares):
# pg_stat_statements shows which statements the sink, the chart and Power BI really send.
POSTGRES_SERVER_OPTIONS = ("-c", "shared_preload_libraries=pg_stat_statements")


def _http_ok(url: str) -> bool:
    return requests.get(url, timeout=2).status_code == 200


def _java(minimum: int = 17) -> str:
    """A java binary of at least `minimum`: $JAVA_HOME, then PATH, then the JDKs under /usr/lib/jvm."""
    candidates = [Path(os.environ["JAVA_HOME"]) / "bin" / "java"] if os.environ.get("JAVA_HOME") else []
    if found := shutil.which("java"):
        candidates.append(Path(found))
    candidates += sorted(Path("/usr/lib/jvm").glob("*/bin/java"), reverse=True)
    for java in candidates:
        if java.exists() and _java_major(java) >= minimum:
            return str(java)
    raise StackError(f"no Java {minimum}+ found (JAVA_HOME, PATH, /usr/lib/jvm): install a JDK {minimum} or newer")


def heap_options(settings: Settings, service: str) -> list[str]:
    """<SERVICE>_HEAP_OPTS from .env: the heap docker-compose.yml gives the same JVM in its container."""
    return settings[f"{service}_HEAP_OPTS"].split()


def kafka_jvm(settings: Settings, service: str, libs: Path, *options: str) -> list[str]:
    """A JVM on Kafka's jars (the broker, Connect): heap from .env, G1, headless, the shared log4j2 config."""
    return [_java(), *heap_options(settings, service), "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={CONFIG_DIR / 'log4j2.properties'}", *options, "-cp", f"{libs}/*"]


def _java_major(java: Path) -> int:
    out = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else 0


class Service:
    """Base: a named process plus the settings it runs with. Subclasses fill in the hooks below."""

    name = ""
    port_settings: tuple[str, ...] = ()  # X for each X_PORT setting the service listens on
    readiness = ""
    ready_timeout = 120.0
    stop_signal = signal.SIGTERM
    stop_timeout = 30.0
    inherit_env = False  # True: the caller's whole environment too (the Python services: CRYPTOPIPE_*, ...)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(self.name, self.settings.state_dir, stop_signal=self.stop_signal,
                              stop_timeout=self.stop_timeout)

    @property
    def data_dir(self) -> Path:
        return self.settings.state_dir / self.name

    def up(self) -> float:
        """Start (if not running) and wait until ready; returns the seconds spent waiting. The process
        gets environment() and the locale / PATH, nothing else of the caller's environment (unless
        inherit_env), and runs in the project's folder."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.process.is_running():
            self.check_ports_free()
        self.prepare()
        self.process.start(self.command(), env=self.environment(), cwd=PROJECT_ROOT, inherit_env=self.inherit_env)
        return self.process.wait_ready(self.is_ready, self.ready_timeout, self.readiness)

    def down(self) -> bool:
        return self.process.stop()

    def check_ports_free(self) -> None:
        """A port another process holds would make the readiness probe talk to that process (e.g. another
        stack's): refuse to start instead, naming the port and its setting."""
        for setting in self.port_settings:
            port = self.settings.port(setting)
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    raise StackError(f"{self.name}: port {port} ({setting}_PORT) is already in use by another "
                                     f"process; stop it or set another {setting}_PORT") from None

    # -- to override ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        """One-time set-up before the first start (idempotent)."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return {}

    def is_ready(self) -> bool:
        raise NotImplementedError


class Postgres(Service):
    """A PostgreSQL cluster in a data directory of its own; init.sql applied by scripts/init_db.sh.

    Admin work (readiness, init.sql, passwords) goes through the Unix socket in the data directory,
    which only the cluster's OS user (and root) can reach: local trust there, passwords (SCRAM) on TCP.
    """

    name = "postgres"
    port_settings = ("POSTGRES",)
    readiness = "accepts a connection and answers SELECT 1"
    stop_signal = signal.SIGINT  # "fast" shutdown: does not wait for clients to disconnect

    @property
    def bin_dir(self) -> Path:
        major = self.settings["POSTGRES_VERSION"].split(".")[0]
        path = Path(f"/usr/lib/postgresql/{major}/bin")
        if not (path / "postgres").exists():
            raise StackError(
                f"PostgreSQL {major} server binaries not found in {path}: "
                f"install them with `apt-get install postgresql-{major}` "
                "(the major version is POSTGRES_VERSION in .env)"
            )
        return path

    @property
    def data_dir(self) -> Path:
        """Root cannot run PostgreSQL; the postgres user must reach the data dir, so root's lives in /var/lib."""
        if os.geteuid() != 0:
            return self.settings.state_dir / "postgres"
        tag = hashlib.sha1(str(self.settings.state_dir.resolve()).encode()).hexdigest()[:10]
        return Path("/var/lib/cryptopipe") / tag / "postgres"

    def purge(self) -> None:
        """Delete the cluster (stopped first). Root's data dir lives outside the state dir, in its own
        /var/lib/cryptopipe/<tag>, so deleting the state dir alone would leave it behind."""
        if self.process.is_running():
            raise StackError("postgres is still running: stop the stack before purging its data")
        shutil.rmtree(self.data_dir.parent if os.geteuid() == 0 else self.data_dir, ignore_errors=True)

    def _as_db_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise StackError("running as root needs the 'postgres' OS user (apt-get install postgresql)") from None
        return ["runuser", "-u", "postgres", "--", *argv]

    def prepare(self) -> None:
        data = self.data_dir
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
            data.chmod(0o700)
        if (data / "PG_VERSION").exists():
            return
        pwfile = data.parent / f"{data.name}.pw"
        write_atomic(pwfile, self.settings["POSTGRES_PASSWORD"] + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        result = subprocess.run(
            self._as_db_user([
                str(self.bin_dir / "initdb"), "-D", str(data), "-U", self.settings["POSTGRES_USER"],
                f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                "--encoding=UTF8", "--locale=C.UTF-8",
            ]),
            capture_output=True, text=True, check=False,
        )
        pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(f"initdb failed in {data}:\n{result.stdout}\n{result.stderr}")

    def command(self) -> list[str]:
        return self._as_db_user([
            str(self.bin_dir / "postgres"), "-D", str(self.data_dir),
            "-p", str(self.settings.port("POSTGRES")), "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.data_dir}", "-c", "max_connections=200",
            *POSTGRES_SERVER_OPTIONS,
        ])

    def admin_connection(self, dbname: str = "postgres") -> psycopg.Connection:
        """The superuser, through the socket: needs no password, so it works before passwords are set."""
        return psycopg.connect(host=str(self.data_dir), port=self.settings.port("POSTGRES"),
                               user=self.settings["POSTGRES_USER"], dbname=dbname, connect_timeout=2,
                               autocommit=True)

    def is_ready(self) -> bool:
        with self.admin_connection() as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    def up(self) -> float:
        waited = super().up()
        self.apply_pending_passwords()
        self.apply_init_sql()
        return waited

    def apply_pending_passwords(self) -> None:
        """Passwords just added to the secrets file, set on the roles that already exist (an existing
        database adopting a new secrets file). Any other password is never touched: a rotated one stays."""
        pending = read_pending(self.settings)
        if not pending:
            return
        with self.admin_connection() as conn:
            conn.execute("SET pg_stat_statements.track_utility = off")  # keep passwords out of the statistics
            for key in pending:
                if key not in DB_ROLE_OF_SECRET:
                    continue
                role = self.settings[DB_ROLE_OF_SECRET[key]]
                if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None:
                    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(self.settings[key])))
        clear_pending(self.settings, pending)

    def apply_init_sql(self) -> None:
        """Databases, roles (passwords only for roles it creates), init.sql: as the superuser, on the socket."""
        env = {
            **base_environment(), **self.settings.env,
            "PGHOST": str(self.data_dir), "PGPORT": str(self.settings.port("POSTGRES")),
            "PGUSER": self.settings["POSTGRES_USER"],
            **{key: self.settings[key] for key in DB_ROLE_OF_SECRET if key != "POSTGRES_PASSWORD"},
        }
        result = subprocess.run(
            ["bash", str(PROJECT_ROOT / "scripts" / "init_db.sh")], env=env,
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise StackError(f"scripts/init_db.sh failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


class Kafka(Service):
    """Apache Kafka in KRaft combined mode (broker + controller in one process), storage formatted once."""

    name = "kafka"
    port_settings = ("KAFKA", "KAFKA_CONTROLLER")
    readiness = "the admin API lists topics; credentials, ACLs and topics set"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        """log.dirs: the topics' partitions (and the cluster's metadata)."""
        return self.data_dir / "logs"

    def _java_base(self) -> list[str]:
        libs = self.settings.kafka_home / "libs"
        if not libs.is_dir():
            raise StackError(f"Kafka jars missing in {libs}: run scripts/fetch_artifacts.sh")
        return kafka_jvm(self.settings, "BROKER", libs)

    def prepare(self) -> None:
        s = self.settings
        port, ctrl = s.port("KAFKA"), s.port("KAFKA_CONTROLLER")
        shared = (CONFIG_DIR / "kafka-broker.properties").read_text()
        self.config_file.write_text(
            shared
            + "\n# --- native stack: loopback listeners ---\n"
            + f"listeners=INTERNAL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctrl}\n"
            + f"advertised.listeners=INTERNAL://127.0.0.1:{port}\n"
            + "listener.security.protocol.map=INTERNAL:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT\n"
            + f"controller.quorum.voters=1@127.0.0.1:{ctrl}\n"
            + f"log.dirs={self.log_dir}\n"
        )
        if (self.log_dir / "meta.properties").exists():
            return
        cluster_id = subprocess.run(
            [*self._java_base(), "kafka.tools.StorageTool", "random-uuid"],
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]
        result = subprocess.run(
            [*self._java_base(), "kafka.tools.StorageTool", "format", "-t", cluster_id,
             "-c", str(self.config_file), "--ignore-formatted"],
            capture_output=True, text=True, check=False, env={**base_environment(), **self.environment()},
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}\n{result.stderr}")

    def command(self) -> list[str]:
        return [*self._java_base(), "kafka.Kafka", str(self.config_file)]

    def environment(self) -> dict[str, str]:
        """The super user's password, which the broker config resolves through its env config provider."""
        return {"BROKER_ADMIN_PASSWORD": self.settings["KAFKA_ADMIN_PASSWORD"]}

    def is_ready(self) -> bool:
        # log_level 0: "connection refused" while the broker boots is expected, not worth printing
        admin_client(self.settings).list_topics(timeout=2)
        return True

    def up(self) -> float:
        """Start, then credentials, ACLs and topics (idempotent: also adopts a cluster formatted before them)."""
        waited = super().up()
        try:
            ensure_kafka(self.settings)
        except KafkaSetupError as exc:
            raise StackError(str(exc)) from exc
        return waited


def registry_user_env(settings: Settings) -> dict[str, str]:
    """The registry's users (core.settings.REGISTRY_USERS) for Quarkus's embedded realm: role and password
    of each. Compose gives the same names and roles, with each password read from its secret file."""
    env = {}
    for user, (role, secret) in REGISTRY_USERS.items():
        env[f"QUARKUS_SECURITY_USERS_EMBEDDED_USERS_{user.upper()}"] = settings[secret]
        env[f"QUARKUS_SECURITY_USERS_EMBEDDED_ROLES_{user.upper()}"] = role
    return env


class Registry(Service):
    """Apicurio Registry with durable storage in the stack's PostgreSQL."""

    name = "registry"
    port_settings = ("REGISTRY", "REGISTRY_MANAGEMENT")
    readiness = "GET /health/ready on the management port answers 200"
    ready_timeout = 180.0

    def command(self) -> list[str]:
        marker = self.settings.registry_home / ".complete"
        if not marker.exists():
            raise StackError(
                f"Apicurio Registry missing in {self.settings.registry_home}: run scripts/fetch_artifacts.sh"
            )
        return [_java(minimum=21), *heap_options(self.settings, "REGISTRY"), "-jar", marker.read_text().strip()]

    def environment(self) -> dict[str, str]:
        s = self.settings
        return {
            "QUARKUS_HTTP_HOST": "127.0.0.1",
            "QUARKUS_HTTP_PORT": str(s.port("REGISTRY")),
            "QUARKUS_MANAGEMENT_HOST": "127.0.0.1",
            "QUARKUS_MANAGEMENT_PORT": str(s.port("REGISTRY_MANAGEMENT")),
            **{k: v for k, v in read_env_file(CONFIG_DIR / "registry.env").items() if v is not None},
            "APICURIO_DATASOURCE_URL": s.jdbc_url(s["REGISTRY_DB"]),
            "APICURIO_DATASOURCE_USERNAME": s["REGISTRY_DB_USER"],
            "APICURIO_DATASOURCE_PASSWORD": s["REGISTRY_DB_PASSWORD"],
            **registry_user_env(s),
        }

    def is_ready(self) -> bool:
        return _http_ok(self.settings.local_url("REGISTRY_MANAGEMENT", "/health/ready"))


class Connect(Service):
    """Kafka Connect in distributed mode with the Debezium JDBC sink and the Apicurio converter. Its REST
    API answers only requests with the credentials of CONNECT_REST_USER / CONNECT_REST_PASSWORD (Kafka's
    BasicAuthSecurityRestExtension, through a JAAS file written on every start).

    Worker `index` of the stack's one Connect group (same group.id and internal topics, so Connect spreads
    the connector's tasks over the workers and moves a dead worker's tasks to the others): worker 0 is
    `connect` on CONNECT_PORT, worker i is `connect-i` on CONNECT_PORT + i, with its own state dir and log."""

    readiness = "GET /connectors answers 200 and the JDBC sink plugin is loaded"
    ready_timeout = 180.0

    def __init__(self, settings: Settings, index: int = 0) -> None:
        super().__init__(settings)
        self.index = index
        self.name = "connect" if index == 0 else f"connect-{index}"

    @property
    def rest_port(self) -> int:
        return self.settings.port("CONNECT") + self.index

    @property
    def url(self) -> str:
        return self.settings.local_url(self.rest_port)

    def check_ports_free(self) -> None:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", self.rest_port))
            except OSError:
                raise StackError(f"{self.name}: port {self.rest_port} (CONNECT_PORT + {self.index}) is already in use "
                                 "by another process; stop it or set another CONNECT_PORT") from None

    def command(self) -> list[str]:
        libs = self.settings.kafka_home / "libs"
        if not (self.settings.plugins_dir / ".complete").exists():
            raise StackError(f"Connect plugins missing in {self.settings.plugins_dir}: run scripts/fetch_artifacts.sh")
        return [*kafka_jvm(self.settings, "CONNECT", libs, f"-Djava.security.auth.login.config={self.jaas_file}"),
                "org.apache.kafka.connect.cli.ConnectDistributed", str(self.worker_file)]

    @property
    def worker_file(self) -> Path:
        return self.data_dir / "worker.properties"

    @property
    def jaas_file(self) -> Path:
        return self.data_dir / "rest-jaas.conf"

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "rest-credentials.properties"

    def prepare(self) -> None:
        """The shared worker.properties with plugin.path pointed at the native plugin cache; the REST
        API's JAAS config and credentials (mode 0600) from the secrets."""
        shared = (PROJECT_ROOT / "connect" / "worker.properties").read_text()
        native = re.sub(r"(?m)^plugin\.path=.*$", f"plugin.path={self.settings.plugins_dir}", shared)
        self.worker_file.write_text(native)
        user, password = self.settings.connect_auth
        write_atomic(self.credentials_file, rest_credentials(user, password))
        write_atomic(self.jaas_file, rest_jaas_config(self.credentials_file))

    def environment(self) -> dict[str, str]:
        return connect_worker_env(self.settings, self.rest_port)

    def is_ready(self) -> bool:
        api = ConnectApi(self.url, self.settings.connect_auth)
        if api.get("/connectors", timeout=2).status_code != 200:
            return False
        plugins = api.get("/connector-plugins", timeout=2).json()
        return any(p.get("class") == JDBC_SINK_CLASS for p in plugins)


def rest_credentials(user: str, password: str) -> str:
    """The PropertyFileLoginModule's file: one `user=password` line, escaped as a Java properties file."""
    if not user or not password or any(c in user + password for c in "\r\n"):
        raise StackError("CONNECT_REST_USER and CONNECT_REST_PASSWORD must be non-empty single-line values")
    key = re.sub(r"([\\=: #!])", r"\\\1", user)
    value = password.replace("\\", "\\\\")
    if value[0] in " \t\f":  # leading blanks would be taken for the separator's
        value = "\\" + value
    return f"{key}={value}\n"


def rest_jaas_config(credentials_file: Path) -> str:
    """Connect's BasicAuthSecurityRestExtension reads the login context KafkaConnect."""
    return ("KafkaConnect {\n"
            "  org.apache.kafka.connect.rest.basic.auth.extension.PropertyFileLoginModule required\n"
            f'  file="{credentials_file}";\n'
            "};\n")


# The variables the worker's env config provider may resolve: its allowlist in connect/worker.properties
# and the connect service's environment in docker-compose.yml name exactly these (tests compare).
CONNECT_WORKER_VARIABLES = (
    "CONNECT_BOOTSTRAP_SERVERS", "CONNECT_LISTEN_HOST", "CONNECT_ADVERTISED_HOST", "CONNECT_PORT", "CONNECT_JDBC_URL",
    "CONNECT_DB_USER", "CONNECT_DB_PASSWORD", "CONNECT_REGISTRY_URL", "TICKS_TOPIC", "TICKS_DLQ_TOPIC",
    *TICK_CONTRACT_SETTINGS, "KAFKA_CONNECT_PASSWORD",
)


def connect_worker_env(s: Settings, rest_port: int | None = None) -> dict[str, str]:
    """The worker's environment (besides PATH and the locale): the CONNECT_WORKER_VARIABLES."""
    return {
        "CONNECT_BOOTSTRAP_SERVERS": s.bootstrap_servers,
        "CONNECT_LISTEN_HOST": "127.0.0.1",
        "CONNECT_ADVERTISED_HOST": "127.0.0.1",
        "CONNECT_PORT": str(rest_port or s.port("CONNECT")),
        "CONNECT_JDBC_URL": s.jdbc_url(),
        "CONNECT_DB_USER": s["CONNECT_DB_USER"],
        "CONNECT_DB_PASSWORD": s["CONNECT_DB_PASSWORD"],
        "CONNECT_REGISTRY_URL": s.registry_api("v2"),
        "TICKS_TOPIC": s["TICKS_TOPIC"],
        "TICKS_DLQ_TOPIC": s["TICKS_DLQ_TOPIC"],
        **{key: s[key] for key in TICK_CONTRACT_SETTINGS},
        "KAFKA_CONNECT_PASSWORD": s["KAFKA_CONNECT_PASSWORD"],
    }


def connect_worker_count(settings: Settings) -> int:
    """CONNECT_WORKERS (.env, default 1), or more while workers beyond it still run (so `down` and
    `status` see every worker an earlier `up --connect-workers N` started)."""
    value = settings.get("CONNECT_WORKERS") or "1"
    try:
        configured = int(value)
    except ValueError:
        raise StackError(f"CONNECT_WORKERS must be a whole number >= 1, not {value!r}") from None
    if configured < 1:
        raise StackError(f"CONNECT_WORKERS must be >= 1, not {configured}")
    running = [int(m.group(1)) for f in settings.state_dir.glob("connect-*.pid")
               if (m := re.fullmatch(r"connect-(\d+)\.pid", f.name))]
    return max([configured, *(i + 1 for i in running)])


def connect_workers(settings: Settings) -> list[Connect]:
    return [Connect(settings, i) for i in range(connect_worker_count(settings))]


class Chart(Service):
    """The live candle page (python -m chart): the candle views as its own role, pushed to browsers."""

    name = "chart"
    port_settings = ("CHART",)
    readiness = "GET /healthz answers 200"
    ready_timeout = 60.0

    def command(self) -> list[str]:
        return [sys.executable, "-m", "chart"]

    def environment(self) -> dict[str, str]:
        """The stack's settings (ports included) and where its secrets file is: the page reads its
        role's password from there, like every other client of the stack."""
        return {**self.settings.env, "CRYPTOPIPE_STATE": str(self.settings.state_dir),
                "CRYPTOPIPE_CACHE": str(self.settings.cache_dir)}

    def is_ready(self) -> bool:
        return _http_ok(self.settings.local_url("CHART", "/healthz"))


class Supervisor(Service):
    """python -m control.supervisor (restarts failed sink tasks, asking every Connect worker) under its keeper
    (python -m stack.keeper: starts it again whenever it exits). The managed process is the keeper; ready
    once the keeper has started the supervisor. `down` stops the keeper first (it would start the supervisor
    again), then the supervisor."""

    name = "supervisor"
    readiness = "its keeper started it"
    ready_timeout = 30.0
    inherit_env = True

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess("supervisor-keeper", self.settings.state_dir)

    @property
    def supervised(self) -> ManagedProcess:
        return ManagedProcess("supervisor", self.settings.state_dir)

    @property
    def health_file(self) -> Path:
        return self.settings.state_dir / "supervisor.json"

    def command(self) -> list[str]:
        """The keeper with the supervisor's command: every Connect worker's URL (it asks the one that answers)."""
        urls = [arg for worker in connect_workers(self.settings) for arg in ("--connect-url", worker.url)]
        supervisor = [sys.executable, "-m", "control.supervisor", *urls, "--health-file", str(self.health_file)]
        return [sys.executable, "-m", "stack.keeper", "--pid-file", str(self.supervised.pid_file), "--log",
                str(self.supervised.log_file), "--", *supervisor]

    def up(self) -> float:
        """Nothing changes when both run with this command already. A keeper with another command (e.g.
        another number of workers), or a supervisor left without its keeper, is stopped first."""
        keeper = self.process
        if (pid := keeper.pid()) is not None and psutil.Process(pid).cmdline() == self.command() \
                and self.supervised.is_running():
            return 0.0
        self.down()
        self.health_file.unlink(missing_ok=True)  # restarts count from this `up` on
        return super().up()

    def down(self) -> bool:
        kept = self.process.stop()
        return self.supervised.stop() or kept

    def is_ready(self) -> bool:
        return self.supervised.is_running()


class Producer(Service):
    """python -m producer [ARGS] with its settings (PRODUCER_SOURCE, ... from .env and the environment) and a
    health file; ready once it reports (it has registered the schema and started its source). A replay
    that finishes before the first look counts as started too (its health file is there)."""

    name = "producer"
    readiness = "its health file: schema registered, source started"
    ready_timeout = 90.0
    stop_timeout = 60.0  # SIGTERM: it flushes and reports its counts
    inherit_env = True

    def __init__(self, settings: Settings, args: str = "") -> None:
        super().__init__(settings)
        self.args = args

    @property
    def health_file(self) -> Path:
        return self.settings.state_dir / "producer.health"

    def prepare(self) -> None:
        if not self.process.is_running():
            self.health_file.unlink(missing_ok=True)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "producer", *shlex.split(self.args), "--health-file", str(self.health_file)]

    def environment(self) -> dict[str, str]:
        return {**self.settings.env, **self.settings.client_env()}

    def down(self) -> bool:
        stopped = self.process.stop()
        self.health_file.unlink(missing_ok=True)  # its counts describe a run that is over
        return stopped

    def is_ready(self) -> bool:
        return self.health_file.exists()


def all_services(settings: Settings) -> list[Service]:
    """In start order; stop in reverse. The chart is last: `up` starts it after registering the connector."""
    return [Postgres(settings), Kafka(settings), Registry(settings), *connect_workers(settings), Chart(settings)]

