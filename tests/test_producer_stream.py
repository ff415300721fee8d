"""Stream source against a local WebSocket server that speaks Yahoo's wire format, through the real
yfinance.WebSocket client (its `url` argument): real frames decode, malformed frames are counted and
skipped, a dropped connection is reconnected (counted) and the ticks after it arrive; `record` writes a
file that `replay` reads back."""

from __future__ import annotations

import base64
import itertools
import logging
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.sync.server import ServerConnection

from core.settings import PROJECT_ROOT
from producer.sources.replay import read_ticks
from producer.sources.stream import StreamSource
from producer.stats import Stats
from producer.tick import Feed, Tick
from tests.fixtures.producer.summary import final_counts
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


def closed_port() -> int:
    """A port nothing listens on (bound once by the OS, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_backs_off_then_connects() -> None:
    """Connection refused -> waits that grow (exponential backoff), then the server comes up and a tick arrives.
    Not counted as a reconnect: the source never had a connection before."""
    port = closed_port()

    def behaviour(ws: ServerConnection, index: int) -> None:
        ws.send(pricing_frame("BTC-USD", 1.5, NOW))
        idle(ws)

    server = YahooServer(behaviour, port=port)
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # no real waiting; the server starts during the fourth wait
        waits.append(seconds)
        if len(waits) == 4:
            server.__enter__()

    stats = Stats()
    source = StreamSource(["BTC-USD"], stats, url=f"ws://127.0.0.1:{port}", initial_wait=1, max_wait=60,
                          sleep=sleep)
    collector = Collector(1)
    try:
        run_source(source, collector)
    finally:
        server.__exit__()
    assert len(waits) == 4
    assert all(later > earlier for earlier, later in itertools.pairwise(waits)), waits
    assert 1 <= waits[0] <= 2 and 8 <= waits[3] <= 9, waits  # 1, 2, 4, 8 s plus up to 1 s of jitter
    assert [(t.symbol, t.price) for t in collector.ticks] == [("BTC-USD", 1.5)]
    assert (source.connections, server.connections, stats.reconnects) == (1, 1, 0)


def test_unreachable_yahoo_is_explained_once_then_each_attempt_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    url = f"ws://127.0.0.1:{closed_port()}"
    stop = threading.Event()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            stop.set()

    source = StreamSource(["BTC-USD"], Stats(), url=url, stop_event=stop, initial_wait=1, max_wait=60, sleep=sleep)
    with caplog.at_level(logging.INFO, logger="producer.sources.stream"):
        source.run(lambda _tick: None)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "producer.sources.stream"]
    advice = [m for level, m in messages if "To produce without Yahoo" in m]
    assert len(advice) == 1 and messages[0][1] == advice[0] and messages[0][0] == logging.WARNING
    assert f"cannot reach Yahoo's price stream at {url}" in advice[0] and "keeps retrying" in advice[0]
    replay = re.search(r"python -m producer --source replay --file FILE .*--file (\S+) ", advice[0])
    assert replay and (PROJECT_ROOT / replay.group(1)).is_file()
    assert "python -m producer --source record --out FILE" in advice[0]
    assert "set PRODUCER_SOURCE=replay in .env" in advice[0]  # the way out for the stack's producer
    attempts = [m for _, m in messages[1:]]
    assert [re.match(r"Yahoo's price stream unreachable: attempt (\d+) failed \(cannot connect to ", m).group(1)
            for m in attempts] == ["1", "2", "3"]
    assert {level for level, _ in messages} == {logging.WARNING}


def test_record_writes_a_file_that_replay_reads_back(tmp_path: Path) -> None:
    sent = [("BTC-USD", 100.5 + i, NOW + i) for i in range(5)]

    def behaviour(ws: ServerConnection, index: int) -> None:
        ws.send(pricing_frame("XRP-USD", 2.5, NOW))  # not in --symbols
        ws.send(envelope("garbage"))
        for symbol, price, t in sent:  # the fifth is beyond --max-ticks
            ws.send(pricing_frame(symbol, price, t))
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
    counts = final_counts(result.stdout)
    assert (counts["received"], counts["produced"], counts["delivered"], counts["failed"]) == (6, 4, 4, 0)
    assert counts["rejected"] == {"unknown_symbol": 1, "malformed": 1}


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
    counts = final_counts(result.stdout)
    assert (counts["reconnects"], counts["delivered"]) == (1, 2)
    assert "stream reconnected" in result.stderr
    if fmt == "json":
        import json
        lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
        assert all({"ts", "level", "msg"} <= set(line) for line in lines)
