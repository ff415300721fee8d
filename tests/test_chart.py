"""The live candle page in headless Chromium (Debian's package, driven by Playwright) against the real
stack: the chart `scripts/stack.sh up` started, PostgreSQL with init.sql, ticks written into
crypto_prices the way the JDBC sink writes them. Each test uses symbols of its own.

A screenshot per test goes to $CRYPTOPIPE_ARTIFACTS/chart (default: <tmp>/cryptopipe-artifacts/chart).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import psutil
import psycopg
import pytest
import requests
from playwright.sync_api import Browser, Page, sync_playwright

from core.settings import PROJECT_ROOT
from stack.ports import PortClaims
from stack.services import Chart
from tests.conftest import StackHandle, run_stack_cli

pytestmark = pytest.mark.stack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
VIEWER_ZONE = "America/New_York"  # the browser's zone; never UTC, so local and UTC times differ
COLUMNS = "extract(epoch FROM bucket)::bigint, open, high, low, close, volume, tick_count, synthetic_count"


# -- data ---------------------------------------------------------------------------------------------
class Ticks:
    """Writes ticks as the sink does (topic/partition/offset keys), one INSERT statement per call."""

    def __init__(self, db: psycopg.Connection) -> None:
        self.db = db
        self.topic = f"test.chart.{uuid.uuid4().hex[:8]}"
        self.offset = 0

    def write(self, ticks: list[tuple[str, float, datetime, float | None, str]]) -> None:
        rows = []
        for symbol, price, at, volume, feed in ticks:
            rows.append((self.topic, 0, self.offset, symbol, price, at, volume, feed, "test:chart", self.offset))
            self.offset += 1
        one = "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
        self.db.execute("INSERT INTO crypto_prices (__connect_topic, __connect_partition, __connect_offset, symbol,"
                        " price, event_time, volume, feed, producer_id, sequence) VALUES "
                        + ", ".join([one] * len(rows)), [v for row in rows for v in row])


def notifications_until_quiet(listener: psycopg.Connection, quiet: float = 2.0, limit: float = 30.0) -> list[dict]:
    """Every candles_changed payload `listener` receives until none came for `quiet` seconds (at most `limit`):
    all of them, not the first one."""
    payloads: list[dict] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        batch = [json.loads(n.payload) for n in listener.notifies(timeout=quiet)]
        if not batch:
            return payloads
        payloads += batch
    raise AssertionError(f"notifications did not stop within {limit:.0f}s: {len(payloads)} so far")


def minute_floor(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def walk(symbol: str, minutes: int, seed: int, price: float = 91_000.0, gaps: frozenset[int] = frozenset(),
         end: datetime | None = None) -> list[tuple[str, float, datetime, float | None, str]]:
    """A random walk ending in the current minute: 1-6 ticks per minute, about a third of them JITTER,
    none in the minutes listed in `gaps` (counted back from the newest)."""
    rng = random.Random(seed)
    newest = minute_floor(end or datetime.now(UTC))
    ticks = []
    for back in range(minutes - 1, -1, -1):
        if back in gaps:
            continue
        minute = newest - timedelta(minutes=back)
        for second in sorted(rng.sample(range(60), rng.randint(1, 6))):
            at = minute + timedelta(seconds=second)
            if at > datetime.now(UTC):
                at = datetime.now(UTC)
            price *= 1 + rng.gauss(0, 0.0012)
            feed = "JITTER" if rng.random() < 0.35 else "STREAM"
            ticks.append((symbol, round(price, 2), at, round(rng.uniform(0.01, 2.5), 4), feed))
    return ticks


def new_symbol() -> str:
    return f"T{uuid.uuid4().hex[:6].upper()}-USD"


def view_name(interval: str, variant: str = "") -> str:
    return "view_crypto_candles" + ("" if interval == "1m" else f"_{interval}") + variant


def view_rows(db: psycopg.Connection, view: str, symbol: str, lo: int | None = None,
              hi: int | None = None) -> list[tuple]:
    query = f"SELECT {COLUMNS} FROM {view} WHERE symbol = %s"
    params: list = [symbol]
    if lo is not None and hi is not None:
        query += " AND bucket BETWEEN to_timestamp(%s) AND to_timestamp(%s)"
        params += [lo, hi]
    return db.execute(query + " ORDER BY bucket", params).fetchall()


# -- the browser --------------------------------------------------------------------------------------
class ChartPage:
    def __init__(self, page: Page, base_url: str, artifacts: Path | None = None, name: str = "") -> None:
        self.page = page
        self.base_url = base_url
        self.artifacts = artifacts
        self.name = name
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: self.requests.append(r.url))

    def open(self, symbol: str, interval: str = "1m", **flags: bool) -> None:
        query = f"symbol={symbol}&interval={interval}" + "".join(f"&{k}=1" for k, v in flags.items() if v)
        self.page.goto(f"{self.base_url}/?{query}")
        self.wait_ready()

    def wait_ready(self, timeout: float = 15_000) -> None:
        self.page.wait_for_function("window.cryptochart && window.cryptochart.ready", timeout=timeout)

    def candles(self) -> list[tuple]:
        return [(c["time"], c["open"], c["high"], c["low"], c["close"])
                for c in self.page.evaluate("window.cryptochart.candles()")]

    def state(self) -> dict:
        return self.page.evaluate("window.cryptochart.state()")

    def click_interval(self, interval: str) -> None:
        self.page.click(f"#intervals button[data-interval='{interval}']")
        self.page.wait_for_function(f"window.cryptochart.ready && window.cryptochart.state().interval === '{interval}'")

    def toggle(self, checkbox: str) -> None:
        self.page.click(f"#{checkbox}")
        self.wait_ready()

    def hover(self, time_: int) -> str:
        x = self.page.evaluate(f"window.cryptochart.coordinateOf({time_})")
        box = self.page.locator("#chart").bounding_box()
        self.page.mouse.move(box["x"] + x, box["y"] + box["height"] * 0.4)
        return self.page.inner_text("#legend")

    def screenshot(self, name: str) -> None:
        if self.artifacts is not None:
            shot = self.artifacts / f"{name}.png"
            self.page.screenshot(path=str(shot))
            print(f"screenshot: {shot}")

    def banner(self) -> tuple[bool, str, str]:
        b = self.page.locator("#banner")
        return b.is_visible(), b.get_attribute("data-kind") or "", b.inner_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    root = os.environ.get("CRYPTOPIPE_ARTIFACTS") or Path(tempfile.gettempdir()) / "cryptopipe-artifacts"
    path = Path(root) / "chart"
    path.mkdir(parents=True, exist_ok=True)
    print(f"chart screenshots: {path}")
    return path


@pytest.fixture
def db(stack: StackHandle) -> Iterator[psycopg.Connection]:
    with psycopg.connect(stack.pg_dsn(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def ticks(db: psycopg.Connection) -> Ticks:
    return Ticks(db)


@pytest.fixture
def chart_url(stack: StackHandle) -> str:
    """The chart page the stack started (scripts/stack.sh up)."""
    return f"http://127.0.0.1:{stack.settings.port('CHART')}"


def open_page(browser: Browser, base_url: str, request: pytest.FixtureRequest, artifacts: Path) -> Iterator[ChartPage]:
    context = browser.new_context(viewport={"width": 1280, "height": 720}, timezone_id=VIEWER_ZONE)
    chart = ChartPage(context.new_page(), base_url, artifacts, request.node.name)
    try:
        yield chart
    finally:
        chart.screenshot(request.node.name)
        context.close()


@pytest.fixture
def chart(browser: Browser, chart_url: str, request: pytest.FixtureRequest, artifacts: Path) -> Iterator[ChartPage]:
    yield from open_page(browser, chart_url, request, artifacts)


# -- the push contract ------------------------------------------------------------------------------
def test_the_rollup_notifies_the_earliest_touched_minute_per_symbol(stack: StackHandle, ticks: Ticks) -> None:
    """LISTEN works for the read-only role without any grant; one notification per transaction."""
    reader = stack.pg_dsn(user=stack.settings["POWERBI_DB_USER"], password=stack.settings["POWERBI_DB_PASSWORD"])
    a, b = new_symbol(), new_symbol()
    at = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    with psycopg.connect(reader, autocommit=True) as listener:
        listener.execute("LISTEN candles_changed")
        ticks.write([(a, 1.0, at + timedelta(minutes=3, seconds=5), 1.0, "STREAM"),
                     (a, 1.1, at + timedelta(minutes=1, seconds=59), None, "JITTER"),
                     (b, 2.0, at + timedelta(hours=2, seconds=1), 1.0, "POLL")])
        payloads = [p for p in notifications_until_quiet(listener) if {a, b} & p.keys()]
    assert payloads == [{a: "2026-01-05T10:01:00Z", b: "2026-01-05T12:00:00Z"}]


def test_a_statement_touching_too_many_symbols_notifies_the_earliest_bucket_for_all(
        stack: StackHandle, ticks: Ticks) -> None:
    reader = stack.pg_dsn(user=stack.settings["POWERBI_DB_USER"], password=stack.settings["POWERBI_DB_PASSWORD"])
    at = datetime(2026, 1, 6, 8, 30, 12, tzinfo=UTC)
    tag = uuid.uuid4().hex[:6].upper()
    many = [(f"T{tag}-LONG-SYMBOL-NAME-{i:04d}", 1.0, at + timedelta(minutes=i), 1.0, "STREAM") for i in range(200)]
    with psycopg.connect(reader, autocommit=True) as listener:
        listener.execute("LISTEN candles_changed")
        ticks.write(many)
        payloads = [p for p in notifications_until_quiet(listener) if "*" in p or {s for s, *_ in many} & p.keys()]
    assert len(json.dumps({s: "2026-01-06T08:30:00Z" for s, *_ in many})) > 7900
    assert payloads == [{"*": "2026-01-06T08:30:00Z"}]


# -- the page -------------------------------------------------------------------------------------------
def test_the_page_loads_without_console_errors_and_every_asset_is_local(
        chart: ChartPage, ticks: Ticks, chart_url: str, db: psycopg.Connection) -> None:
    symbol = new_symbol()
    ticks.write(walk(symbol, 150, seed=1, gaps=frozenset({20, 21, 22, 60})))
    chart.open(symbol)
    busiest = max(view_rows(db, "view_crypto_candles", symbol)[-40:], key=lambda r: (0 < r[7] < r[6], r[6]))
    chart.hover(busiest[0])  # for the screenshot (the README's): a candle with real and synthetic ticks
    assert chart.page.inner_text("#quote-symbol") == symbol
    assert chart.errors == []
    assert [url for url in chart.requests if not url.startswith((chart_url, "data:"))] == []


def test_the_candles_drawn_are_the_rows_of_the_view_for_the_shown_range(
        chart: ChartPage, ticks: Ticks, db: psycopg.Connection, stack: StackHandle) -> None:
    """More history than the page shows: it shows the newest CHART_MAX_CANDLES intervals, and in that
    range exactly the view's candles (gaps stay gaps)."""
    max_candles = int(stack.settings["CHART_MAX_CANDLES"])
    symbol = new_symbol()
    ticks.write(walk(symbol, max_candles + 150, seed=2, gaps=frozenset({3, 4, 100, 101, 102, 500})))
    chart.open(symbol)
    drawn = chart.candles()
    first, last = drawn[0][0], drawn[-1][0]
    assert last - first == (max_candles - 1) * 60
    in_range = view_rows(db, "view_crypto_candles", symbol, first, last)
    assert [row[:5] for row in in_range] == drawn
    assert len(drawn) < len(view_rows(db, "view_crypto_candles", symbol))


def test_the_last_candle_in_the_chart_has_the_views_ohlc_and_volume(
        chart: ChartPage, ticks: Ticks, db: psycopg.Connection) -> None:
    symbol = new_symbol()
    ticks.write(walk(symbol, 60, seed=3))
    chart.open(symbol)
    newest = view_rows(db, "view_crypto_candles", symbol)[-1]
    assert chart.candles()[-1] == newest[:5]
    assert chart.page.evaluate("window.cryptochart.volumes().at(-1).value") == newest[5]
    assert chart.page.inner_text("#price") == f"{newest[4]:,.2f}"


def test_producing_ticks_changes_the_newest_candle_within_2_seconds(
        chart: ChartPage, ticks: Ticks, db: psycopg.Connection) -> None:
    symbol = new_symbol()
    minute = minute_floor(datetime.now(UTC))
    ticks.write(walk(symbol, 30, seed=4, end=minute - timedelta(minutes=1)))
    chart.open(symbol)
    before = chart.candles()
    for price, at in ((95_000.5, minute), (95_010.25, minute + timedelta(seconds=1))):
        started = time.monotonic()
        ticks.write([(symbol, price, at, 0.5, "STREAM")])
        chart.page.wait_for_function(f"window.cryptochart.candles().at(-1).close === {price}", timeout=2_000)
        print(f"newest candle changed {time.monotonic() - started:.3f}s after the tick was committed")
    after = chart.candles()
    assert len(after) == len(before) + 1  # the first tick opened a new minute, the second changed it
    assert after[-1] == view_rows(db, "view_crypto_candles", symbol)[-1][:5]
    assert chart.errors == []


def test_switching_the_interval_draws_that_views_candles(
        chart: ChartPage, ticks: Ticks, db: psycopg.Connection) -> None:
    symbol = new_symbol()
    ticks.write(walk(symbol, 180, seed=5))
    chart.open(symbol)
    one_minute = chart.candles()
    chart.click_interval("15m")
    fifteen = chart.candles()
    assert fifteen != one_minute
    assert fifteen == [row[:5] for row in view_rows(db, "view_crypto_candles_15m", symbol)]
    assert "interval=15m" in chart.page.url


def test_real_ticks_only_draws_the_real_view(chart: ChartPage, ticks: Ticks, db: psycopg.Connection) -> None:
    symbol = new_symbol()
    ticks.write(walk(symbol, 90, seed=6))
    chart.open(symbol, "5m")
    all_ticks = chart.candles()
    chart.toggle("real")
    real = chart.candles()
    assert real != all_ticks
    assert real == [row[:5] for row in view_rows(db, "view_crypto_candles_5m_real", symbol)]
    assert chart.state()["view"] == "view_crypto_candles_5m_real"


def test_fill_gaps_draws_the_gap_filled_view(chart: ChartPage, ticks: Ticks, db: psycopg.Connection) -> None:
    symbol = new_symbol()
    ticks.write(walk(symbol, 60, seed=7, gaps=frozenset({10, 11, 12, 30})))
    chart.open(symbol)
    plain = chart.candles()
    chart.toggle("filled")
    filled = chart.candles()
    assert len(filled) == len(plain) + 4
    assert filled == [row[:5] for row in view_rows(db, "view_crypto_candles_filled", symbol)]


def test_hovering_a_candle_shows_its_share_of_synthetic_ticks(
        chart: ChartPage, ticks: Ticks, db: psycopg.Connection) -> None:
    symbol = new_symbol()
    ticks.write(walk(symbol, 40, seed=8))
    chart.open(symbol)
    rows = view_rows(db, "view_crypto_candles", symbol)
    mixed = next(r for r in reversed(rows) if 0 < r[7] < r[6])
    for t, *_, tick_count, synthetic in (mixed, next(r for r in rows if r[7] == 0)):
        share = Decimal(synthetic / tick_count * 100).quantize(Decimal(1), ROUND_HALF_UP)  # as JS toFixed(0)
        assert f"synthetic {share}% ({synthetic} of {tick_count})" in chart.hover(t)


def test_times_are_local_with_a_switch_to_utc(chart: ChartPage, ticks: Ticks, db: psycopg.Connection) -> None:
    symbol = new_symbol()
    ticks.write(walk(symbol, 20, seed=9))
    chart.open(symbol)
    t = view_rows(db, "view_crypto_candles", symbol)[-3][0]
    local = datetime.fromtimestamp(t, UTC).astimezone(ZoneInfo(VIEWER_ZONE))
    assert chart.hover(t).startswith(local.strftime("%Y-%m-%d %H:%M"))
    chart.page.click("#utc")
    assert chart.hover(t).startswith(datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC"))
    assert "utc=1" in chart.page.url and "times in UTC" in chart.page.inner_text("#info")


# -- stale data: a chart of our own with a short CHART_STALE_SECONDS (also: python -m chart on its own) ----
@pytest.fixture
def quick_stale_chart(stack: StackHandle) -> Iterator[str]:
    claims = PortClaims()
    port = claims.claim()
    env = {**stack.env(), "CHART_PORT": str(port), "CHART_STALE_SECONDS": "6"}
    proc = subprocess.Popen([sys.executable, "-m", "chart"], env=env, cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=2).json()["db"] == "up":
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "python -m chart did not come up"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        claims.release()
        print(out[-2000:])


@pytest.fixture
def stale_chart(browser: Browser, quick_stale_chart: str, request: pytest.FixtureRequest,
                artifacts: Path) -> Iterator[ChartPage]:
    yield from open_page(browser, quick_stale_chart, request, artifacts)


def test_a_banner_says_when_a_symbol_has_no_new_tick_and_clears_when_one_lands(
        stale_chart: ChartPage, ticks: Ticks) -> None:
    symbol = new_symbol()
    ticks.write(walk(symbol, 10, seed=10))
    stale_chart.open(symbol)
    assert stale_chart.banner()[0] is False
    stale_chart.page.wait_for_selector("#banner[data-kind='stale']", timeout=10_000)
    assert f"no new tick for {symbol}" in stale_chart.banner()[2]
    stale_chart.screenshot(f"{stale_chart.name}-stale")
    ticks.write([(symbol, 90_000.0, datetime.now(UTC), 1.0, "STREAM")])
    stale_chart.page.wait_for_selector("#banner", state="hidden", timeout=3_000)
    assert stale_chart.errors == []


# -- the database's load does not follow the number of pages ---------------------------------------------
def chart_queries(db: psycopg.Connection, role: str) -> int:
    return db.execute("SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE userid = to_regrole(%s)"
                      " AND query ILIKE %s", (role, "%view_crypto_candles%")).fetchone()[0]


class Viewers:
    """Simulated pages: SSE clients of /api/stream that count the events they receive."""

    def __init__(self, url: str, series: list[dict[str, str]]) -> None:
        self.events: list[dict[str, int]] = [{} for _ in series]
        self._responses: list[requests.Response] = []
        self._threads = [threading.Thread(target=self._read, args=(url, s, i), daemon=True)
                         for i, s in enumerate(series)]
        for thread in self._threads:
            thread.start()

    def _read(self, url: str, series: dict[str, str], i: int) -> None:
        with requests.get(f"{url}/api/stream", params=series, stream=True, timeout=30) as response:
            self._responses.append(response)
            try:
                for line in response.iter_lines(decode_unicode=True):
                    if line and line.startswith("event: "):
                        name = line[7:]
                        self.events[i][name] = self.events[i].get(name, 0) + 1
            except Exception:  # noqa: BLE001 - closed by close() from another thread
                pass

    def wait_for_snapshots(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while any(e.get("snapshot", 0) < 1 for e in self.events):
            assert time.monotonic() < deadline, f"not every viewer got its snapshot: {self.events}"
            time.sleep(0.1)

    def close(self) -> None:
        for response in self._responses:
            response.close()
        for thread in self._threads:
            thread.join(timeout=10)


def measure(db: psycopg.Connection, ticks: Ticks, role: str, symbol: str, updates: int) -> int:
    """Chart queries the database ran while `updates` statements each changed the symbol's candles."""
    time.sleep(1)  # let the viewers' loads settle
    before = chart_queries(db, role)
    for i in range(updates):
        ticks.write([(symbol, 90_000.0 + i, datetime.now(UTC), 0.1, "STREAM")])
        time.sleep(0.4)
    time.sleep(1)
    return chart_queries(db, role) - before


def test_twenty_viewers_cost_the_database_what_one_viewer_does(
        stack: StackHandle, chart_url: str, ticks: Ticks, db: psycopg.Connection) -> None:
    role = stack.settings["CHART_DB_USER"]
    symbol = new_symbol()
    ticks.write(walk(symbol, 120, seed=11))
    updates = 12
    one = Viewers(chart_url, [{"symbol": symbol, "interval": "1m"}])
    try:
        one.wait_for_snapshots()
        with_one = measure(db, ticks, role, symbol, updates)
    finally:
        one.close()
    series = [{"symbol": symbol, "interval": iv, "variant": v} for iv in ("1m", "5m") for v in ("all", "real")]
    twenty = Viewers(chart_url, [series[i % len(series)] for i in range(20)])
    try:
        twenty.wait_for_snapshots()
        with_twenty = measure(db, ticks, role, symbol, updates)
        connections = db.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND application_name = %s",
                                 (role, "cryptopipe-chart")).fetchone()[0]
    finally:
        twenty.close()
    print(f"chart queries for {updates} updates: 1 viewer {with_one}, 20 viewers on 4 series {with_twenty}")
    assert 0 < with_one <= updates + 1
    assert abs(with_twenty - with_one) <= 2
    assert all(e.get("candles", 0) >= updates // 2 for e in twenty.events), twenty.events
    assert connections == 2


# -- caps: viewers, series and notifications cannot grow the server ------------------------------------
CHART_RSS_BOUND_MB = 120  # README "Live chart": the chart process with CHART_MAX_VIEWERS pages open
FLOOD_VIEWERS = 500
SPOOFED_SYMBOLS = 10_000


def chart_rss_mb(stack: StackHandle) -> float:
    pid = Chart(stack.settings).process.pid()
    assert pid is not None, "the stack's chart is not running"
    return psutil.Process(pid).memory_info().rss / 2**20


async def flood(url: str, symbol: str, spoof: Callable[[], None], tick: Callable[[], None],
                measure: Callable[[], float], timeout: float = 10) -> dict:
    """FLOOD_VIEWERS SSE streams on one series; then `spoof()` (the NOTIFY flood), `measure()` (the chart's
    RSS with every stream open) and `tick()` (a real tick); returns the statuses, the refusal texts, the
    RSS and whether an accepted page got the tick."""
    got_candles = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        async def open_one(i: int) -> tuple[int, str, aiohttp.ClientResponse | None]:
            response = await session.get(f"{url}/api/stream", params={"symbol": symbol, "interval": "1m"})
            if response.status != 200:
                text = await response.text()
                response.release()
                return response.status, text, None
            return 200, "", response

        async def read(response: aiohttp.ClientResponse, first: bool) -> None:
            async for line in response.content:
                if first and line.startswith(b"event: candles"):
                    got_candles.set()

        opened = await asyncio.gather(*(open_one(i) for i in range(FLOOD_VIEWERS)))
        accepted = [r for status, _, r in opened if status == 200 and r is not None]
        readers = [asyncio.create_task(read(r, i == 0)) for i, r in enumerate(accepted)]
        await asyncio.sleep(2)  # every accepted page has its snapshot
        await asyncio.to_thread(spoof)
        await asyncio.sleep(2)
        rss = await asyncio.to_thread(measure)
        await asyncio.to_thread(tick)
        try:
            await asyncio.wait_for(got_candles.wait(), timeout)
            updated = True
        except TimeoutError:
            updated = False
        result = {"statuses": [s for s, _, _ in opened], "refusals": {t for s, t, _ in opened if s != 200},
                  "updated": updated, "rss": rss}
        for task in readers:
            task.cancel()
        for response in accepted:
            response.close()
        return result


def spoof_notifications(stack: StackHandle) -> None:
    """The NOTIFY flood: made-up symbols (and junk) sent as the Power BI role, as any role can."""
    s = stack.settings
    dsn = s.pg_dsn(user=s["POWERBI_DB_USER"], password=s["POWERBI_DB_PASSWORD"])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT count(pg_notify('candles_changed', json_build_object('SPOOF' || g || '-USD',"
                     " '2026-01-01T00:00:00Z')::text)) FROM generate_series(1, %s) g", (SPOOFED_SYMBOLS,))
        conn.execute("SELECT count(pg_notify('candles_changed', 'junk ' || g)) FROM generate_series(1, 1000) g")


def test_viewers_beyond_the_cap_are_refused_and_spoofed_notifications_grow_nothing(
        stack: StackHandle, chart_url: str, ticks: Ticks) -> None:
    cap = int(stack.settings["CHART_MAX_VIEWERS"])
    assert cap < FLOOD_VIEWERS
    symbol = new_symbol()
    ticks.write(walk(symbol, 30, seed=21))
    time.sleep(1)  # the pages of the tests before have gone (a stream ends when its page goes away)
    rss_before = chart_rss_mb(stack)
    result: list[dict] = []

    def tick() -> None:
        ticks.write([(symbol, 54_321.5, datetime.now(UTC), 1.0, "STREAM")])

    runner = threading.Thread(target=lambda: result.append(asyncio.run(flood(
        chart_url, symbol, lambda: spoof_notifications(stack), tick, lambda: chart_rss_mb(stack)))))
    runner.start()
    runner.join(timeout=120)
    assert result, "the flood did not finish"
    outcome = result[0]
    rss = outcome["rss"]
    statuses = outcome["statuses"]
    print(f"accepted {statuses.count(200)}, refused {statuses.count(503)}; chart RSS {rss_before:.0f} MB before,"
          f" {rss:.0f} MB with every stream open after {SPOOFED_SYMBOLS} spoofed symbols")
    assert statuses.count(200) == cap and statuses.count(503) == FLOOD_VIEWERS - cap, statuses
    assert outcome["refusals"] == {f"The chart serves at most {cap} viewers at a time (CHART_MAX_VIEWERS);"
                                   " try again later."}
    assert outcome["updated"], "the accepted page got no update for a real tick"
    meta = requests.get(f"{chart_url}/api/meta", timeout=5).json()
    assert not [m for m in meta["symbols"] if m.startswith("SPOOF")]
    assert symbol in meta["symbols"]
    assert rss <= CHART_RSS_BOUND_MB
    # the slots are free again
    deadline = time.monotonic() + 10
    while True:
        with requests.get(f"{chart_url}/api/stream", params={"symbol": symbol}, stream=True, timeout=10) as r:
            if r.status_code == 200:
                break
        assert time.monotonic() < deadline, "closed viewers still hold the cap"
        time.sleep(0.5)


# -- the database going away (last: it restarts PostgreSQL) -------------------------------------------
def test_a_banner_shows_while_postgresql_is_down_and_clears_when_it_is_back(
        chart: ChartPage, ticks: Ticks, stack: StackHandle) -> None:
    if not stack.owned:
        pytest.skip("stops PostgreSQL: only on a stack the tests started")
    symbol = new_symbol()
    ticks.write(walk(symbol, 30, seed=12))
    chart.open(symbol)
    drawn = chart.candles()
    assert chart.banner()[0] is False
    stack.stop_postgres()
    try:
        chart.page.wait_for_selector("#banner[data-kind='db']", timeout=10_000)
        assert "Database unreachable" in chart.banner()[2]
        # /healthz says the database is down and nothing else: no error text, host or port (README "Security")
        assert requests.get(f"{chart.base_url}/healthz", timeout=5).text.replace(" ", "") == \
            '{"status":"ok","db":"down"}'
        chart.screenshot(f"{chart.name}-down")
        assert chart.candles() == drawn  # the last candles received stay on screen
    finally:
        stack.start_postgres()
    chart.page.wait_for_selector("#banner", state="hidden", timeout=20_000)
    assert chart.candles() == drawn
    with psycopg.connect(stack.pg_dsn(), autocommit=True) as db:
        Ticks(db).write([(symbol, 12_345.5, datetime.now(UTC), 1.0, "STREAM")])
    chart.page.wait_for_function("window.cryptochart.candles().at(-1).close === 12345.5", timeout=5_000)
    assert stack_recovers(stack, timeout=180), "the stack did not report every service healthy again"


def stack_recovers(stack: StackHandle, timeout: float) -> bool:
    """`stack status` exits 0 again (the registry, stored in the same PostgreSQL, takes ~30 s), so the
    tests after this one meet a healthy stack."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run_stack_cli("status", env=stack.env(), timeout=60).returncode == 0:
            return True
        time.sleep(5)
    return False
