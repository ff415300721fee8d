"""The Power BI data source file opens the pipeline's database in DirectQuery mode."""

from __future__ import annotations

import json

from dotenv import dotenv_values

from control.settings import PROJECT_ROOT

PBIDS = PROJECT_ROOT / "powerbi" / "crypto-candles.pbids"


def test_pbids_opens_the_pipeline_database_in_direct_query_mode() -> None:
    env = dotenv_values(PROJECT_ROOT / ".env")  # the shipped defaults, not this shell's overrides
    (connection,) = json.loads(PBIDS.read_text())["connections"]
    assert connection["mode"] == "DirectQuery"
    assert connection["details"]["protocol"] == "postgresql"
    assert connection["details"]["address"] == {"server": f"localhost:{env['POSTGRES_PORT']}",
                                                "database": env["POSTGRES_DB"]}
