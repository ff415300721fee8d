"""Stream source: live ticks from Yahoo's WebSocket through yfinance's own client (yfinance.WebSocket).

One yfinance WebSocket per connection: subscribe, listen until the connection ends, reconnect. A
connection that delivered frames is re-opened at once (counted in `reconnects`); failures to connect,
or connections that end before any frame, back off exponentially with jitter (tenacity). Frames that
do not decode (bad base64, garbage protobuf, no id/price/time) are counted as `malformed` and skipped.
Yahoo expects the subscription to be repeated (yfinance's async client does it every 15 s); a heartbeat
thread does that here.

Without internet (or while Yahoo is down) the source says so once, with how to replay a recording instead,
then logs every failed attempt (warning, with its number) and keeps retrying: a producer started before
the network is up connects as soon as it is.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

from tenacity import Retrying, retry_if_exception_type, wait_exponential_jitter
from yfinance import WebSocket

from producer.sources import Emit, Source
from producer.stats import Stats
from producer.tick import Feed, Tick

log = logging.getLogger(__name__)

YAHOO_STREAM_URL = WebSocket.__init__.__defaults__[0]  # yfinance's own default URL


REPLAY_SAMPLE = "tests/fixtures/producer/sample_ticks.jsonl"  # relative to the project root


class StreamDown(Exception):
    """The connection could not be opened (`unreachable`), or closed before delivering anything."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def unreachable_advice(url: str, max_wait: float) -> str:
    """What the operator reads once when the stream cannot be reached: the cause, that we retry, the way out."""
    return (f"cannot reach Yahoo's price stream at {url}: no internet connection, DNS, a firewall, or Yahoo is "
            f"down. The producer keeps retrying with exponential backoff (at most {max_wait:g}s between attempts) "
            f"and starts producing as soon as the stream answers. To produce without Yahoo, replay a recording "
            f"instead: set PRODUCER_SOURCE=replay in .env (the stack's producer then replays PRODUCER_REPLAY_FILE), "
            f"or run python -m producer --source replay --file FILE [--speed N], e.g. --file {REPLAY_SAMPLE} "
            f"(a synthetic sample) or a file recorded where Yahoo is reachable with "
            f"python -m producer --source record --out FILE.")


def tick_from_pricing(msg: dict, feed: Feed = Feed.STREAM) -> Tick:
    """yfinance's decoded PricingData dict (MessageToDict: int64 as strings) -> Tick.

    Volume: `last_size` when Yahoo sends a per-trade size; None when it is absent or just repeats the
    running 24 h `day_volume` (what Yahoo sends for crypto), which is not the tick's own volume.
    """
    symbol = msg["id"]
    if not isinstance(symbol, str) or not symbol:
        raise ValueError("frame without id")
    event_time = int(msg["time"])
    if event_time < 100_000_000_000:  # seconds, not milliseconds (older feed versions)
        event_time *= 1000
    volume = msg.get("last_size")
    if volume is not None and volume == msg.get("day_volume"):
        volume = None
    return Tick(symbol=symbol, price=float(msg["price"]), event_time=event_time,
                volume=None if volume is None else float(volume), feed=feed)


class StreamSource(Source):
    name = "stream"

    def __init__(self, symbols: list[str], stats: Stats, url: str = YAHOO_STREAM_URL, stop_event=None,
                 initial_wait: float = 1.0, max_wait: float = 60.0, heartbeat_interval: float = 15.0,
                 sleep: Callable[[float], object] | None = None) -> None:
        """`sleep` waits between attempts (default: the stop event's wait, so stop() interrupts it)."""
        super().__init__(stop_event)
        self.symbols, self.stats, self.url = list(symbols), stats, url
        self.initial_wait, self.max_wait, self.heartbeat_interval = initial_wait, max_wait, heartbeat_interval
        self.frames = 0
        self.connections = 0
        self._ws: WebSocket | None = None
        self._lock = threading.Lock()
        self._emit: Emit | None = None
        self._sleep = sleep or self.stop_event.wait
        self._advised = False

    def run(self, emit: Emit) -> None:
        self._emit = emit
        while not self.stopping:
            retrying = Retrying(
                retry=retry_if_exception_type(Exception),
                wait=wait_exponential_jitter(multiplier=self.initial_wait, max=self.max_wait, jitter=self.initial_wait),
                stop=lambda _state: self.stopping,
                sleep=self._sleep,
                before_sleep=self._log_retry,
                reraise=True,
            )
            try:
                retrying(self._session)
            except Exception:  # noqa: BLE001 - only reached when stopping
                if not self.stopping:
                    raise

    def stop(self) -> None:
        super().stop()
        with self._lock:
            ws = self._ws
        if ws is not None:
            _close_quietly(ws)

    def _session(self) -> None:
        """One connection: subscribe, listen until it ends. Returns normally if it delivered frames."""
        if self.stopping:
            return
        ws = WebSocket(url=self.url, verbose=False)
        with self._lock:
            self._ws = ws
        try:
            ws.subscribe(self.symbols)  # connects; raises when the server is unreachable
        except Exception as exc:
            raise StreamDown(f"cannot connect to {self.url}: {type(exc).__name__}: {exc}", unreachable=True) from exc
        if self.connections:
            self.stats.reconnected()
            log.info("stream reconnected to %s (reconnect #%d)", self.url, self.stats.reconnects)
        else:
            log.info("stream connected to %s, subscribed to %s", self.url, ",".join(self.symbols))
        self.connections += 1
        frames_before = self.frames
        heartbeat = threading.Thread(target=self._heartbeat, args=(ws,), daemon=True, name="stream-heartbeat")
        heartbeat.start()
        try:
            ws.listen(self._on_message)  # returns when the connection ends (yfinance logs and breaks)
        finally:
            _close_quietly(ws)
        if self.stopping:
            return
        if self.frames == frames_before:
            raise StreamDown("connection closed before any frame")
        log.warning("stream connection to %s lost after %d frames; reconnecting", self.url, self.frames - frames_before)

    def _heartbeat(self, ws: WebSocket) -> None:
        while not self.stop_event.wait(self.heartbeat_interval):
            with self._lock:
                if self._ws is not ws:
                    return
            try:
                ws.subscribe(self.symbols)
            except Exception:  # noqa: BLE001 - the connection is gone; listen() notices and we reconnect
                return

    def _on_message(self, msg: dict) -> None:
        self.frames += 1
        if "error" in msg:  # yfinance could not decode it (base64 / protobuf)
            self._malformed(msg.get("error"))
            return
        try:
            tick = tick_from_pricing(msg)
        except (KeyError, ValueError, TypeError) as exc:
            self._malformed(f"{type(exc).__name__}: {exc}")
            return
        assert self._emit is not None
        self._emit(tick)

    def _malformed(self, why: object) -> None:
        self.stats.malformed()
        log.warning("skipping malformed stream frame (%s)", why)

    def _log_retry(self, state) -> None:  # noqa: ANN001 - tenacity RetryCallState
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        if isinstance(exc, StreamDown) and exc.unreachable:
            if not self._advised:
                self._advised = True
                log.warning("%s", unreachable_advice(self.url, self.max_wait))
            log.warning("Yahoo's price stream unreachable: attempt %d failed (%s); retrying in %.1fs",
                        state.attempt_number, exc, wait)
            return
        log.warning("stream unavailable (%s); attempt %d failed, retrying in %.1fs", exc, state.attempt_number, wait)


def _close_quietly(ws: WebSocket) -> None:
    with contextlib.suppress(Exception):  # already closed
        ws.close()
