"""The Power BI data source file (.pbids) for this stack: PostgreSQL where the user's Power BI Desktop
finds it (POWERBI_SERVER, else localhost:POSTGRES_PORT), the pipeline's database, DirectQuery.
powerbi/crypto-candles.pbids is this file for the default settings; the chart page serves the one for
the running stack at /powerbi.pbids, so a changed POSTGRES_PORT needs no hand edit."""

from __future__ import annotations

import json

from core.settings import Settings


def powerbi_server(settings: Settings) -> str:
    return settings.get("POWERBI_SERVER") or f"localhost:{settings.port('POSTGRES')}"


def pbids(server: str, database: str) -> str:
    source = {
        "version": "0.1",
        "connections": [{
            "details": {"protocol": "postgresql", "address": {"server": server, "database": database}},
            "options": {},
            "mode": "DirectQuery",
        }],
    }
    return json.dumps(source, indent=2) + "\n"
