"""Stream source against a local WebSocket server that speaks Yahoo's wire format, through the real
yfinance.WebSocket client (its `url` argument): real frames decode, malformed frames are counted and
skipped, a dropped connection is reconnected (counted) and the ticks after it arrive; `record` writes a
file that `replay` reads back."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.sync.server import ServerConnection

from control.settings import PROJECT_ROOT
from producer.sources.replay import read_ticks
from producer.sources.stream import StreamSource
from producer.stats import Stats
from producer.tick import Feed, Tick
from tests.fixtures.producer.yahoo_ws import REAL_FRAMES, YahooServer, envelope, pricing_frame

NOW = int(time.time() * 1000)


class Collector:
    def __init__(self, wanted: int) -> None:
        self.ticks: list[Tick] = []
        self.wanted = wanted
        self.done = threading.Event()

    def __call__(self, tick: Tick) -> None:
        self.ticks.append(tick)
        if len(self.ticks) >= self.wanted:
            self.done.set()


def run_source(source: StreamSource, collector: Collector, timeout: float = 20) -> None:
    thread = threading.Thread(target=source.run, args=(collector,), daemon=True)
    thread.start()
    try:
        assert collector.done.wait(timeout), f"only {len(collector.ticks)} ticks arrived"
    finally:
        source.stop()
        thread.join(10)
    assert not thread.is_alive(), "stream source did not stop"


def idle(ws: ServerConnection) -> None:
    """Keep the connection open until the client closes it."""
    try:
        while True:
            ws.recv()
    except Exception:  # noqa: BLE001 - closed by the client
        return


def test_real_yahoo_frame_decodes_through_yfinance_client() -> None:
    def behaviour(ws: ServerConnection, index: int) -> None:
        ws.send(envelope(REAL_FRAMES["btc_usd_message"]))
        idle(ws)

    stats = Stats()
    with YahooServer(behaviour) as server:
        source = StreamSource(["BTC-USD", "ETH-USD"], stats, url=server.url)
        collector = Collector(1)
        run_source(source, collector)
    assert sorted(server.subscriptions[0]) == ["BTC-USD", "ETH-USD"]
    expected = REAL_FRAMES["btc_usd_expected"]
    tick = collector.ticks[0]
    assert (tick.symbol, tick.price, tick.event_time) == (expected["id"], expected["price"], expected["time"])
    assert tick.feed is Feed.STREAM
    assert tick.volume is None  # Yahoo's last_size for crypto just repeats the 24 h volume


def test_malformed_frames_are_counted_and_skipped() -> None:
    garbage_protobuf = base64.b64encode(b"\xff\xff\xff\xff\xff\xff\x01\x02").decode()

    def behaviour(ws: ServerConnection, index: int) -> None:
        ws.send(pricing_frame("BTC-USD", 100.5, NOW))
        ws.send(envelope("%%% not base64 at all !!!x"))  # bad base64
        ws.send(envelope(garbage_protobuf))  # bytes that are no PricingData
        ws.send(envelope(base64.b64encode(b"").decode()))  # decodes, but no id / price / time
        ws.send(pricing_frame("ETH-USD", 20.25, NOW + 1, last_size=3, day_volume=1000))
        idle(ws)

    stats = Stats()
    with YahooServer(behaviour) as server:
        source = StreamSource(["BTC-USD", "ETH-USD"], stats, url=server.url)
        collector = Collector(2)
        run_source(source, collector)
    assert [(t.symbol, t.price, t.event_time, t.volume) for t in collector.ticks] == [
        ("BTC-USD", 100.5, NOW, None), ("ETH-USD", 20.25, NOW + 1, 3.0)]
    assert stats.rejected["malformed"] == 3
    assert source.frames == 5
    assert stats.reconnects == 0


def test_dropped_connection_is_reconnected_and_ticks_after_it_arrive() -> None:
    def behaviour(ws: ServerConnection, index: int) -> None:
        for i in range(3):
            ws.send(pricing_frame("SOL-USD", 10.0 + index * 10 + i, NOW + index * 100 + i))
        if index == 0:
            time.sleep(0.2)
            return  # server drops the connection
        idle(ws)

    stats = Stats()
    with YahooServer(behaviour) as server:
        source = StreamSource(["SOL-USD"], stats, url=server.url, initial_wait=0.1, max_wait=0.5)
        collector = Collector(6)
        run_source(source, collector)
    assert [t.price for t in collector.ticks] == [10.0, 11.0, 12.0, 20.0, 21.0, 22.0]
    assert stats.reconnects == 1
    assert server.connections == 2
    assert server.subscriptions == [["SOL-USD"], ["SOL-USD"]]


def test_unreachable_server_backs_off_then_connects() -> None:
    """Connection refused -> retries with backoff (not counted as reconnects: never connected before)."""
    def behaviour(ws: ServerConnection, index: int) -> None:
        ws.send(pricing_frame("BTC-USD", 1.5, NOW))
        idle(ws)

    with YahooServer(behaviour) as server:
        url = server.url
    stats = Stats()
    source = StreamSource(["BTC-USD"], stats, url=url, initial_wait=0.2, max_wait=0.4)
    collector = Collector(1)
    thread = threading.Thread(target=source.run, args=(collector,), daemon=True)
    thread.start()
    time.sleep(1.0)  # several refused attempts
    assert source.connections == 0 and thread.is_alive()
    source.stop()
    thread.join(5)
    assert not thread.is_alive(), "stop() must interrupt the backoff"


def test_record_writes_a_file_that_replay_reads_back(tmp_path: Path) -> None:
    sent = [("BTC-USD", 100.5 + i, NOW + i) for i in range(4)] + [("XRP-USD", 2.5, NOW + 9)]

    def behaviour(ws: ServerConnection, index: int) -> None:
        for symbol, price, t in sent:
            ws.send(pricing_frame(symbol, price, t))
        ws.send(envelope("garbage"))
        idle(ws)

    out = tmp_path / "recording.jsonl"
    with YahooServer(behaviour) as server:
        result = subprocess.run(
            [sys.executable, "-m", "producer", "--source", "record", "--stream-url", server.url, "--out", str(out),
             "--symbols", "BTC-USD,ETH-USD", "--max-ticks", "4", "--stats-interval", "0"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    replayed = list(read_ticks(out))
    assert [(t.symbol, t.price, t.event_time) for t in replayed] == sent[:4]
    assert {t.feed for t in replayed} == {Feed.REPLAY}
    assert "delivered=4 failed=0" in result.stdout


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_stream_cli_logs_reconnects_and_stats(tmp_path: Path, fmt: str) -> None:
    def behaviour(ws: ServerConnection, index: int) -> None:
        ws.send(pricing_frame("BTC-USD", 100.0 + index, NOW + index))
        if index == 0:
            time.sleep(0.3)
            return
        idle(ws)

    out = tmp_path / "r.jsonl"
    with YahooServer(behaviour) as server:
        result = subprocess.run(
            [sys.executable, "-m", "producer", "--source", "record", "--stream-url", server.url, "--out", str(out),
             "--symbols", "BTC-USD", "--max-ticks", "2", "--stats-interval", "0.2", "--log-format", fmt,
             "--reconnect-initial-wait", "0.1"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "reconnects=1" in result.stdout
    assert "stream reconnected" in result.stderr
    if fmt == "json":
        import json
        lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
        assert all({"ts", "level", "msg"} <= set(line) for line in lines)
