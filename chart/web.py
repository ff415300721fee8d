"""HTTP: the page and its assets (all local, no CDN), the SSE stream per page, metadata and health."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from aiohttp import web
from aiohttp_sse import sse_response
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from chart.config import ChartConfig
from chart.hub import Full, Hub
from chart.listener import listen
from chart.views import Series

STATIC = Path(__file__).resolve().parent / "static"
HUB = web.AppKey("hub", Hub)
CONFIG = web.AppKey("config", ChartConfig)
NO_CACHE = {"Cache-Control": "no-cache"}


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=NO_CACHE)


async def vendor(request: web.Request) -> web.FileResponse:
    return web.FileResponse(request.app[CONFIG].vendor_script, headers={"Cache-Control": "max-age=86400"})


async def powerbi_source(request: web.Request) -> web.Response:
    """The .pbids for this stack: opening it in Power BI Desktop connects to the candles in DirectQuery."""
    return web.Response(text=request.app[CONFIG].pbids, content_type="application/json", headers={
        **NO_CACHE, "Content-Disposition": 'attachment; filename="crypto-candles.pbids"'})


async def meta(request: web.Request) -> web.Response:
    return web.json_response(request.app[HUB].meta(), headers=NO_CACHE)


async def health(request: web.Request) -> web.Response:
    """Up or not, and whether the database is reachable: no internals (the error is in the chart's log)."""
    hub = request.app[HUB]
    return web.json_response({"status": "ok", "db": "up" if hub.db_up else "down"}, headers=NO_CACHE)


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events for one series: a snapshot, then only the candles that change, and status."""
    q = request.query
    try:
        series = Series.parse(q.get("symbol", ""), q.get("interval", "1m"), q.get("variant", "all"))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    hub = request.app[HUB]
    try:
        viewer = hub.subscribe(series)
    except Full as exc:
        raise web.HTTPServiceUnavailable(text=str(exc), headers={**NO_CACHE, "Retry-After": "10"}) from None
    closed: asyncio.Future | None = None
    try:
        async with sse_response(request, ping_interval=5) as resp:
            await resp.send("{}", event="hello", retry=1000)  # reconnect after 1 s when the stream breaks
            closed = asyncio.ensure_future(resp.wait())
            while True:
                get = asyncio.ensure_future(viewer.queue.get())
                done, _ = await asyncio.wait({get, closed}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    break
                event = get.result()
                if event is None:
                    break
                await resp.send(event.data, event=event.name)
    except (ConnectionResetError, TimeoutError):
        pass  # the page went away
    finally:
        hub.unsubscribe(viewer)
        if closed is not None:
            closed.cancel()
    return resp


def build_app(config: ChartConfig) -> web.Application:
    app = web.Application()
    app[CONFIG] = config
    pool = AsyncConnectionPool(config.dsn, min_size=1, max_size=1, open=False, name="chart",
                               kwargs={"autocommit": True}, check=AsyncConnectionPool.check_connection)

    async def fetch(statement: sql.Composed, params: tuple) -> list[tuple]:
        async with pool.connection(timeout=10) as conn:
            cursor = await conn.execute(statement, params)
            return await cursor.fetchall()

    hub = app[HUB] = Hub(config, fetch)

    async def background(app: web.Application):  # noqa: ANN202 - aiohttp cleanup context
        await pool.open(wait=False)
        tasks = [asyncio.create_task(coro) for coro in
                 (listen(config.dsn, hub), hub.run(), hub.watch_staleness(), hub.watch_symbols())]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await pool.close()

    async def on_shutdown(app: web.Application) -> None:
        hub.close()  # ends every SSE stream, so shutdown does not wait for pages

    app.cleanup_ctx.append(background)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", index)
    app.router.add_get("/vendor/lightweight-charts.js", vendor)
    app.router.add_get("/api/meta", meta)
    app.router.add_get("/api/stream", stream)
    app.router.add_get("/healthz", health)
    app.router.add_get("/powerbi.pbids", powerbi_source)
    app.router.add_static("/static", STATIC)
    return app
