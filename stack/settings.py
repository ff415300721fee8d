"""Stack settings: the repository's .env file, overridden by the environment (as docker compose does)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def load_env(env_file: Path = PROJECT_ROOT / ".env") -> dict[str, str]:
    """Values from .env with the process environment winning."""
    values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    values.update({k: v for k, v in os.environ.items() if k in values or k.startswith(("CRYPTOPIPE_",))})
    for key in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "CONNECT_URL"):
        if key in os.environ:
            values[key] = os.environ[key]
    return values


@dataclass(frozen=True)
class StackSettings:
    env: dict[str, str]
    state_dir: Path
    cache_dir: Path

    @classmethod
    def load(cls) -> StackSettings:
        env = load_env()
        cache = Path(env.get("CRYPTOPIPE_CACHE") or Path.home() / ".cache" / "cryptopipe")
        state = Path(env.get("CRYPTOPIPE_STATE") or PROJECT_ROOT / ".stack")
        return cls(env=env, state_dir=state, cache_dir=cache)

    def __getitem__(self, key: str) -> str:
        try:
            return self.env[key]
        except KeyError:
            raise KeyError(f"setting {key} is missing from .env and the environment") from None

    def port(self, name: str) -> int:
        return int(self[f"{name}_PORT"])

    @property
    def bootstrap_servers(self) -> str:
        return self.env.get("KAFKA_BOOTSTRAP_SERVERS") or f"127.0.0.1:{self.port('KAFKA')}"

    @property
    def registry_base(self) -> str:
        return f"http://127.0.0.1:{self.port('REGISTRY')}"

    @property
    def ccompat_url(self) -> str:
        return self.env.get("SCHEMA_REGISTRY_URL") or f"{self.registry_base}/apis/ccompat/v7"

    @property
    def connect_url(self) -> str:
        return self.env.get("CONNECT_URL") or f"http://127.0.0.1:{self.port('CONNECT')}"

    @property
    def kafka_home(self) -> Path:
        return self.cache_dir / f"kafka-{self['KAFKA_VERSION']}"

    @property
    def registry_home(self) -> Path:
        return self.cache_dir / f"registry-{self['APICURIO_REGISTRY_VERSION']}"

    @property
    def plugins_dir(self) -> Path:
        return self.cache_dir / f"plugins-{self['DEBEZIUM_JDBC_VERSION']}-{self['APICURIO_CONVERTER_VERSION']}"

    def pg_dsn(self, user: str | None = None, password: str | None = None, dbname: str | None = None) -> str:
        user = user or self["POSTGRES_USER"]
        password = password if password is not None else self["POSTGRES_PASSWORD"]
        dbname = dbname or self["POSTGRES_DB"]
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port('POSTGRES')}/{dbname}"
