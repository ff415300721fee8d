"""The push side: one connection LISTENs on candles_changed and hands every notification to the hub.

The connection breaking is how the page learns that the database is down; it reconnects every
second, and on success the hub reloads every series (notifications may have been missed meanwhile).
"""

from __future__ import annotations

import asyncio
import logging

import psycopg

from chart import query
from chart.hub import Hub

log = logging.getLogger("chart")
CHANNEL = "candles_changed"


async def listen(dsn: str, hub: Hub, retry_seconds: float = 1.0) -> None:
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                cursor = await conn.execute(query.SYMBOLS)
                hub.database_up([row[0] for row in await cursor.fetchall()])
                async for notification in conn.notifies():
                    hub.notify(notification.payload)
        except psycopg.Error as exc:
            hub.database_down(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        except OSError as exc:
            hub.database_down(str(exc))
        await asyncio.sleep(retry_seconds)
