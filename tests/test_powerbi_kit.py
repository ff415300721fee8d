"""The Power BI data source file opens the pipeline's database in DirectQuery mode."""

from __future__ import annotations

import json
from pathlib import Path

from chart.pbids import pbids, powerbi_server
from core.settings import PROJECT_ROOT, Settings, read_env_file

PBIDS = PROJECT_ROOT / "powerbi" / "crypto-candles.pbids"


def test_pbids_opens_the_pipeline_database_in_direct_query_mode() -> None:
    env = read_env_file(PROJECT_ROOT / ".env")  # the shipped defaults, not this shell's overrides
    (connection,) = json.loads(PBIDS.read_text())["connections"]
    assert connection["mode"] == "DirectQuery"
    assert connection["details"]["protocol"] == "postgresql"
    assert connection["details"]["address"] == {"server": f"localhost:{env['POSTGRES_PORT']}",
                                                "database": env["POSTGRES_DB"]}


def test_the_shipped_pbids_is_the_one_the_chart_page_serves_for_the_default_settings() -> None:
    env = read_env_file(PROJECT_ROOT / ".env")
    assert PBIDS.read_text() == pbids(f"localhost:{env['POSTGRES_PORT']}", env["POSTGRES_DB"])


def test_the_served_pbids_follows_a_changed_postgres_port() -> None:
    settings = Settings(env={"POSTGRES_PORT": "5433", "POWERBI_SERVER": ""}, state_dir=Path("."), cache_dir=Path("."))
    assert powerbi_server(settings) == "localhost:5433"
