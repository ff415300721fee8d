"""The chart page under load: database queries per update and tick-to-page latency for 1, 20, 100 pages.

Needs a running chart and its PostgreSQL (`scripts/stack.sh up`; ports from .env). Simulated pages are
SSE clients of /api/stream spread over four series of one fresh symbol; ticks are written into
crypto_prices as the sink writes them, one statement per update. Queries are counted in
pg_stat_statements (statements of CHART_DB_USER on the candle views); latency is from the tick's
commit to the first page receiving the changed candle. Writes bench/results/chart.md with --write.

    python bench/chart_bench.py --viewers 1,20,100 --updates 40 --pauses 0.3,0.05 --write
    python bench/chart_bench.py --quick    # CI smoke run: small sizes, results into a temp dir
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_options import add_options, parse, write_results  # noqa: E402

from core.settings import Settings  # noqa: E402

QUICK = {"viewers": "1,5", "updates": 5, "pauses": "0.3"}

SERIES = [{"interval": iv, "variant": v} for iv in ("1m", "5m") for v in ("all", "real")]


class Pages:
    """SSE clients; the time each close price was first seen by any of them."""

    def __init__(self, url: str, symbol: str, n: int) -> None:
        self.seen: dict[float, float] = {}
        self.snapshots = 0
        self._lock = threading.Lock()
        self._responses: list[requests.Response] = []
        self._threads = [threading.Thread(target=self._read, args=(url, {"symbol": symbol, **SERIES[i % 4]}),
                                          daemon=True) for i in range(n)]
        for thread in self._threads:
            thread.start()

    def _read(self, url: str, params: dict[str, str]) -> None:
        with requests.get(f"{url}/api/stream", params=params, stream=True, timeout=60) as response:
            with self._lock:
                self._responses.append(response)
            event = ""
            try:
                for line in response.iter_lines(decode_unicode=True):
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event in ("snapshot", "candles"):
                        now = time.monotonic()
                        with self._lock:
                            if event == "snapshot":
                                self.snapshots += 1
                            for candle in json.loads(line[6:])["candles"]:
                                self.seen.setdefault(candle["c"], now)
            except Exception:  # noqa: BLE001 - closed by close()
                pass

    def close(self) -> None:
        with self._lock:
            for response in self._responses:
                response.close()
        for thread in self._threads:
            thread.join(timeout=10)


def chart_queries(db: psycopg.Connection, role: str) -> int:
    return db.execute("SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE userid = to_regrole(%s)"
                      " AND query ILIKE '%%view_crypto_candles%%'", (role,)).fetchone()[0]


def one_round(db: psycopg.Connection, url: str, role: str, viewers: int, updates: int, pause: float) -> dict:
    symbol = f"B{uuid.uuid4().hex[:6].upper()}-USD"
    topic, offset = f"bench.chart.{uuid.uuid4().hex[:8]}", 0
    insert = ("INSERT INTO crypto_prices (__connect_topic, __connect_partition, __connect_offset, symbol, price,"
              " event_time, volume, feed) VALUES (%s, 0, %s, %s, %s, %s, 1.0, 'STREAM')")
    db.execute(insert, (topic, offset, symbol, 50_000.0, datetime.now(UTC)))
    pages = Pages(url, symbol, viewers)
    deadline = time.monotonic() + 60
    while pages.snapshots < viewers:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {pages.snapshots} of {viewers} pages got a snapshot")
        time.sleep(0.1)
    time.sleep(1)
    before = chart_queries(db, role)
    committed: dict[float, float] = {}
    for i in range(1, updates + 1):
        price = 50_000.0 + i + 0.25
        committed[price] = time.monotonic()
        db.execute(insert, (topic, offset + i, symbol, price, datetime.now(UTC)))
        time.sleep(pause)
    time.sleep(2)
    queries = chart_queries(db, role) - before
    pages.close()
    latencies = sorted(pages.seen[p] - t for p, t in committed.items() if p in pages.seen)
    return {"viewers": viewers, "pause": pause, "updates": updates, "queries": queries, "received": len(latencies),
            "p50": statistics.median(latencies) if latencies else float("nan"),
            "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
            "max": latencies[-1] if latencies else float("nan")}


def main(args: argparse.Namespace) -> None:
    settings = Settings.load()
    url = args.chart_url or settings.local_url("CHART")
    role = settings["CHART_DB_USER"]
    rows = []
    with psycopg.connect(settings.pg_dsn(), autocommit=True) as db:
        for pause in (float(p) for p in args.pauses.split(",")):
            for viewers in (int(v) for v in args.viewers.split(",")):
                result = one_round(db, url, role, viewers, args.updates, pause)
                rows.append(result)
                print(result)
    lines = [
        "# Live chart: database queries and latency vs. open pages",
        "",
        f"Machine: {os.cpu_count()} cores, shared. Command: `python bench/chart_bench.py --viewers {args.viewers}"
        f" --updates {args.updates} --pauses {args.pauses}`. Pages are SSE clients spread over 4 series"
        " (1m/5m x all/real) of one symbol; one tick statement per update, `pause` seconds apart.",
        "",
        "| pages | pause s | updates | chart queries | queries per update | updates received | latency p50 | p95 | max"
        " |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['viewers']} | {r['pause']} | {r['updates']} | {r['queries']} |"
                     f" {r['queries'] / r['updates']:.2f} |"
                     f" {r['received']} | {r['p50'] * 1000:.0f} ms | {r['p95'] * 1000:.0f} ms |"
                     f" {r['max'] * 1000:.0f} ms |")
    lines += ["", "Latency: from sending the tick's INSERT to the first page receiving the changed candle (SSE event).",
              "With ticks closer together than CHART_REFRESH_SECONDS (0.25 s) updates are coalesced: fewer",
              "queries than updates, and a page may see only the newest of several closes (fewer received)."]
    print("\n".join(lines))
    write_results(args, "chart.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chart-url", help="default: http://127.0.0.1:CHART_PORT")
    parser.add_argument("--viewers", default="1,20,100")
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--pauses", default="0.3,0.05", help="seconds between tick statements, one round each")
    add_options(parser, QUICK)
    main(parse(parser))
