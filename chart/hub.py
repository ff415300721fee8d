"""The hub between the database and the pages.

Every page opens one series (symbol x view). The hub keeps one cache per series however many pages
show it, learns from the rollup's notifications which candles changed, and asks the database ONE
query per update for every series at once (at most one per CHART_REFRESH_SECONDS). It compares the
answer with its cache and sends the pages only the candles that changed. Database load therefore
follows the update rate and the number of distinct series, never the number of open pages.

Nothing a client or a database role sends can grow it without bound: at most CHART_MAX_VIEWERS pages and
CHART_MAX_SERIES series (more are refused, counted), and a notification counts only for a symbol the
hub knows (SYMBOLS and the database's, re-read every CHART_SYMBOLS_REFRESH_SECONDS, and at most every
SYMBOLS_RECHECK_SECONDS when a notification names one it does not know) or a page shows. Any role can
NOTIFY candles_changed, so a notification is only a hint: a symbol's last tick (the stale banner) moves
when the database's candles really changed, never on a notification alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from psycopg import sql

from chart import query
from chart.config import ChartConfig
from chart.views import INTERVALS, VARIANTS, Candle, Series

log = logging.getLogger("chart")
Fetch = Callable[[sql.Composed, tuple], Awaitable[list[tuple]]]
RETRY_AFTER_ERROR_SECONDS = 5.0
SYMBOLS_RECHECK_SECONDS = 5.0
MINUTE = timedelta(minutes=1)


class Full(Exception):
    """The hub serves its maximum of viewers or series; the message says which, for the HTTP 503."""


def _worth_logging(count: int) -> bool:
    """Log the 1st, 10th, 100th, ... and every 1000th of a repeated event: a flood cannot flood the log."""
    return count in (1, 10, 100) or count % 1000 == 0


def parse_payload(payload: str) -> dict[str, datetime]:
    """A candles_changed notification: {symbol: earliest touched 1-minute bucket (ISO-8601)}, or {"*": ...}."""
    try:
        touched = json.loads(payload)
        if not isinstance(touched, dict) or not touched:
            raise ValueError("not a non-empty JSON object")
        return {str(k): datetime.fromisoformat(v).astimezone(UTC) for k, v in touched.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"bad candles_changed payload {payload[:200]!r}: {exc}") from None


@dataclass(frozen=True)
class Event:
    name: str
    data: str


class Viewer:
    """One open page: a bounded queue of events for its SSE stream."""

    def __init__(self, series: Series, queue_size: int = 256) -> None:
        self.series = series
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(queue_size)

    def send(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Too slow to keep up: end its stream; the browser reconnects and gets a fresh snapshot.
            log.warning("a page fell %d events behind on %s; closing its stream", self.queue.qsize(), self.series)
            self.close()

    def close(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


@dataclass(eq=False)
class Subscription:
    series: Series
    viewers: set[Viewer] = field(default_factory=set)
    candles: dict[datetime, Candle] = field(default_factory=dict)
    loaded: bool = False
    needs_load: bool = True
    dirty_from: datetime | None = None
    status: str = ""


@dataclass
class Plan:
    kind: str  # load | refresh | newest
    sub: Subscription | None
    symbol: str
    since: datetime | None = None


class Hub:
    def __init__(self, config: ChartConfig, fetch: Fetch) -> None:
        self.config = config
        self._fetch = fetch
        self.subs: dict[Series, Subscription] = {}
        self.symbols: set[str] = set(config.symbols)
        self.last_tick: dict[str, datetime] = {}
        self.db_up = False
        self.db_error: str | None = "connecting to the database"
        self.db_down_since: datetime | None = datetime.now(UTC)
        self.query_error: str | None = None
        self.queries = 0
        self.bad_notifications = 0
        self.ignored_notifications = 0
        self.refused_viewers = 0
        self._symbols_due = False
        self._symbols_read_at = float("-inf")
        self._wake = asyncio.Event()

    # -- pages --------------------------------------------------------------------------------------
    def subscribe(self, series: Series) -> Viewer:
        """A new page's viewer; Full when CHART_MAX_VIEWERS pages are open or its series would be one too many."""
        sub = self.subs.get(series)
        refusal = None
        if self.viewer_count >= self.config.max_viewers:
            refusal = (f"The chart serves at most {self.config.max_viewers} viewers at a time (CHART_MAX_VIEWERS);"
                       " try again later.")
        elif sub is None and len(self.subs) >= self.config.max_series:
            refusal = (f"The chart shows at most {self.config.max_series} different charts (symbol, interval,"
                       " variant) at a time (CHART_MAX_SERIES); open one already shown or try again later.")
        if refusal is not None:
            self.refused_viewers += 1
            if _worth_logging(self.refused_viewers):
                log.warning("refused a page (%d so far): %s", self.refused_viewers, refusal)
            raise Full(refusal)
        if sub is None:
            sub = self.subs[series] = Subscription(series)
            self._wake.set()
        viewer = Viewer(series)
        sub.viewers.add(viewer)
        if sub.loaded:
            viewer.send(self._snapshot(sub))
        viewer.send(self._status(sub))
        return viewer

    def unsubscribe(self, viewer: Viewer) -> None:
        sub = self.subs.get(viewer.series)
        if sub is not None:
            sub.viewers.discard(viewer)
            if not sub.viewers:
                del self.subs[viewer.series]
                if viewer.series.symbol not in self._shown_symbols():
                    self.last_tick.pop(viewer.series.symbol, None)  # the next page asks the database again

    def _shown_symbols(self) -> set[str]:
        return {series.symbol for series in self.subs}

    def close(self) -> None:
        for sub in self.subs.values():
            for viewer in sub.viewers:
                viewer.close()

    @property
    def viewer_count(self) -> int:
        return sum(len(sub.viewers) for sub in self.subs.values())

    # -- the database side ------------------------------------------------------------------------
    def notify(self, payload: str) -> None:
        """A candles_changed notification arrived: mark the series it touches, wake the update loop. It is a
        hint only (any role can send one): it adds no symbol and moves no last tick by itself."""
        try:
            touched = parse_payload(payload)
        except ValueError as exc:
            self.bad_notifications += 1
            if _worth_logging(self.bad_notifications):
                log.warning("%s (%d ignored so far)", exc, self.bad_notifications)
            return
        if "*" in touched:  # too many symbols for one notification: everything from that bucket on
            for sub in self.subs.values():
                self._mark(sub, touched["*"])
        else:
            shown = self._shown_symbols()
            unknown = [symbol for symbol in touched if symbol not in self.symbols and symbol not in shown]
            if unknown:  # a new symbol, or made up: the database says which, at most every few seconds
                self.ignored_notifications += 1
                self._symbols_due = True
                if _worth_logging(self.ignored_notifications):
                    log.info("notification for unknown symbol(s) %s (%d so far); checking the database's",
                             ", ".join(unknown[:3])[:200], self.ignored_notifications)
            for sub in self.subs.values():
                if (at := touched.get(sub.series.symbol)) is not None:
                    self._mark(sub, at)
        self._wake.set()

    async def watch_symbols(self, every: float = 1.0) -> None:
        """The known symbols: SYMBOLS and the database's, re-read every CHART_SYMBOLS_REFRESH_SECONDS, or
        after SYMBOLS_RECHECK_SECONDS when a notification named a symbol not known."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            since = loop.time() - self._symbols_read_at
            if not self.db_up or not ((self._symbols_due and since >= SYMBOLS_RECHECK_SECONDS)
                                      or since >= self.config.symbols_refresh_seconds):
                continue
            self._symbols_due, self._symbols_read_at = False, loop.time()
            try:
                rows = await self._fetch(query.SYMBOLS, ())
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("reading the symbols failed: %s: %s", type(exc).__name__, str(exc).strip()[:300])
                continue
            self.set_symbols([row[0] for row in rows])

    def set_symbols(self, symbols: list[str]) -> None:
        self.symbols = set(self.config.symbols) | set(symbols)

    def database_up(self, symbols: list[str]) -> None:
        """(Re)connected and listening: notifications may have been missed, so every series reloads."""
        if not self.db_up:
            log.info("database connected; listening on candles_changed")
        self.db_up, self.db_error, self.db_down_since = True, None, None
        self.set_symbols(symbols)
        self._symbols_read_at = asyncio.get_running_loop().time()
        for sub in self.subs.values():
            sub.needs_load = True
        self._wake.set()
        self.broadcast_status()

    def database_down(self, error: str) -> None:
        if self.db_up or self.db_down_since is None:
            log.warning("database unreachable: %s", error)
            self.db_down_since = datetime.now(UTC)
        self.db_up, self.db_error = False, error
        self.broadcast_status()

    @staticmethod
    def _mark(sub: Subscription, at: datetime) -> None:
        sub.dirty_from = at if sub.dirty_from is None else min(sub.dirty_from, at)

    # -- the update loop: ONE query per cycle for every series --------------------------------------
    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.db_up:
                continue  # database_up() wakes us again
            try:
                await self.cycle()
            except Exception:  # noqa: BLE001 - one bad cycle must not stop live updates for everyone
                log.exception("update cycle failed")
            await asyncio.sleep(self.config.refresh_seconds)

    def _since(self, sub: Subscription) -> datetime:
        """The first bucket of the series a change from sub.dirty_from can have touched, within the window."""
        assert sub.dirty_from is not None
        since = sub.series.floor(sub.dirty_from)
        if sub.candles:
            newest = max(sub.candles)
            since = max(since, newest - sub.series.width * (self.config.max_candles - 1))
            if sub.series.filled:  # a candle after a gap also fills the buckets between
                since = min(since, newest)
        return since

    def _plan(self) -> tuple[list[query.Branch], dict[int, Plan]]:
        branches: list[query.Branch] = []
        plans: dict[int, Plan] = {}
        probed: set[str] = set()
        for sub in list(self.subs.values()):
            tag = len(branches)
            symbol = sub.series.symbol
            if sub.needs_load:
                sub.needs_load, sub.dirty_from = False, None  # changes from now on mark it dirty again
                branches.append(query.load(tag, sub.series, self.config.max_candles))
                plans[tag] = Plan("load", sub, symbol)
                if symbol not in self.last_tick and symbol not in probed:
                    probed.add(symbol)
                    branches.append(query.newest_minute(tag + 1, symbol))
                    plans[tag + 1] = Plan("newest", None, symbol)
            elif sub.loaded and sub.dirty_from is not None:
                since = self._since(sub)
                sub.dirty_from = None
                branches.append(query.refresh(tag, sub.series, since))
                plans[tag] = Plan("refresh", sub, symbol, since)
        return branches, plans

    async def cycle(self) -> None:
        branches, plans = self._plan()
        if not branches:
            return
        statement, params = query.statement(branches)
        self.queries += 1
        try:
            rows = await self._fetch(statement, params)
        except Exception as exc:  # noqa: BLE001 - put the work back; nothing is lost, the next cycle retries
            for plan in plans.values():
                if plan.kind == "load" and plan.sub is not None:
                    plan.sub.needs_load = True
                elif plan.kind == "refresh" and plan.sub is not None and plan.since is not None:
                    self._mark(plan.sub, plan.since)
            self.query_error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            log.warning("candle query failed: %s", self.query_error)
            asyncio.get_running_loop().call_later(RETRY_AFTER_ERROR_SECONDS, self._wake.set)
            self.broadcast_status()
            return
        self.query_error = None
        by_tag: dict[int, list[tuple]] = defaultdict(list)
        for row in rows:
            by_tag[row[0]].append(row[1:])
        for tag, plan in plans.items():
            if plan.kind == "newest":  # the end of the newest 1-minute candle: its last tick is no later
                newest = by_tag[tag][0][0] if by_tag[tag] else None
                if newest is not None and plan.symbol not in self.last_tick:
                    self.last_tick[plan.symbol] = min(newest + MINUTE, datetime.now(UTC))
                continue
            sub = plan.sub
            if sub is None or self.subs.get(sub.series) is not sub:
                continue  # every page of it left meanwhile
            candles = [Candle.from_row(row) for row in by_tag[tag]]
            if plan.kind == "load":
                self._apply_load(sub, candles)
            elif plan.since is not None:
                self._apply_refresh(sub, plan.since, candles)
        self.broadcast_status()

    def _apply_load(self, sub: Subscription, candles: list[Candle]) -> None:
        sub.candles = {c.bucket: c for c in candles}
        sub.loaded = True
        self._trim(sub)
        self._send(sub, self._snapshot(sub))

    def _apply_refresh(self, sub: Subscription, since: datetime, candles: list[Candle]) -> None:
        returned = {c.bucket: c for c in candles}
        vanished = [b for b in sub.candles if b >= since and b not in returned]
        changed = [c for c in candles if sub.candles.get(c.bucket) != c]
        if changed or vanished:  # the database's candles changed: a tick really landed
            self.last_tick[sub.series.symbol] = datetime.now(UTC)
        sub.candles.update(returned)
        for bucket in vanished:
            del sub.candles[bucket]
        self._trim(sub)
        if vanished:  # rare (a deleted tick emptied a candle): resend the window
            self._send(sub, self._snapshot(sub))
        elif changed:
            kept = [c.to_json() for c in changed if c.bucket in sub.candles]
            if kept:
                self._send(sub, Event("candles", json.dumps({"candles": kept})))

    def _trim(self, sub: Subscription) -> None:
        """Keep the newest max_candles intervals up to the newest candle."""
        if sub.candles:
            start = max(sub.candles) - sub.series.width * (self.config.max_candles - 1)
            for bucket in [b for b in sub.candles if b < start]:
                del sub.candles[bucket]

    # -- events ---------------------------------------------------------------------------------------
    @staticmethod
    def _send(sub: Subscription, event: Event) -> None:
        for viewer in list(sub.viewers):
            viewer.send(event)

    def _snapshot(self, sub: Subscription) -> Event:
        candles = [sub.candles[b].to_json() for b in sorted(sub.candles)]
        return Event("snapshot", json.dumps({
            "symbol": sub.series.symbol, "interval": sub.series.interval, "variant": sub.series.variant,
            "view": sub.series.view, "interval_seconds": int(sub.series.width.total_seconds()),
            "max_candles": self.config.max_candles, "candles": candles,
        }))

    def _status(self, sub: Subscription) -> Event:
        symbol = sub.series.symbol
        last = self.last_tick.get(symbol)
        age = (datetime.now(UTC) - last).total_seconds() if last else None
        stale = sub.loaded and (age is None or age > self.config.stale_seconds)
        return Event("status", json.dumps({  # no error text for the browser: the chart's log has it
            "db": self.db_up, "db_error": None if self.db_up else "no connection",
            "db_down_since": self.db_down_since.isoformat() if self.db_down_since and not self.db_up else None,
            "query_error": "see the chart's log" if self.query_error else None, "symbol": symbol,
            "last_tick": last.isoformat() if last else None, "stale": stale,
            "stale_seconds": self.config.stale_seconds,
        }))

    def broadcast_status(self) -> None:
        """Send each series' status to its pages when it changed (db up/down, stale or not)."""
        for sub in list(self.subs.values()):
            event = self._status(sub)
            if event.data != sub.status:
                sub.status = event.data
                self._send(sub, event)

    async def watch_staleness(self, every: float = 0.5) -> None:
        while True:
            await asyncio.sleep(every)
            self.broadcast_status()

    def meta(self) -> dict:
        default = next((s for s in self.config.symbols), None) or min(self.symbols, default=None)
        return {"symbols": sorted(self.symbols), "default_symbol": default, "intervals": list(INTERVALS),
                "variants": list(VARIANTS), "stale_seconds": self.config.stale_seconds,
                "max_candles": self.config.max_candles}
