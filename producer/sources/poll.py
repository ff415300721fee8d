"""Poll source: real quotes polled from Yahoo (through yfinance's HTTP session) every `interval` seconds,
labelled feed=POLL, with optional micro-jitter ticks (feed=JITTER) in between.

The fetch function is injectable (the default, `YahooQuotes`, goes through yfinance's own HTTP code). HTTP 429
(yfinance's YFRateLimitError) and 5xx raise `HttpStatusError`; retries honour its Retry-After when Yahoo sent
one, other failures back off exponentially with jitter (tenacity).
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from producer.sources import Emit, Source
from producer.sources.jitter import Jitter
from producer.stats import Stats
from producer.tick import Feed, Tick, now_ms

log = logging.getLogger(__name__)

QUOTE_URL = "https://query1.finance.yahoo.com/v7/finance/quote"
MAX_RETRY_AFTER = 3600.0

Fetch = Callable[[Sequence[str]], list[Tick]]


class HttpStatusError(Exception):
    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}" + (f" (Retry-After {retry_after:g}s)" if retry_after is not None else ""))
        self.status, self.retry_after = status, retry_after


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After is either delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_quote_response(payload: Mapping[str, Any], stats: Stats | None = None) -> list[Tick]:
    """Yahoo v7 quote JSON -> POLL ticks (regularMarketPrice / regularMarketTime in s / regularMarketVolume)."""
    ticks = []
    for quote in (payload.get("quoteResponse") or {}).get("result") or []:
        try:
            volume = quote.get("regularMarketVolume")
            ticks.append(Tick(symbol=quote["symbol"], price=float(quote["regularMarketPrice"]),
                              event_time=int(quote["regularMarketTime"]) * 1000,
                              volume=None if volume is None else float(volume), feed=Feed.POLL))
        except (KeyError, TypeError, ValueError) as exc:
            if stats is not None:
                stats.malformed()
            log.warning("skipping malformed quote %r (%s)", quote.get("symbol") if isinstance(quote, dict) else quote,
                        exc)
    return ticks


class YahooQuotes:
    """Fetch: one quote request for all symbols through yfinance's own HTTP code (cookie + crumb, its retry with
    the other cookie strategy), on a session of yfinance's own kind that remembers the last response.

    yfinance raises `YFRateLimitError` on a 429 and drops the response with its Retry-After header; the
    remembered response gives it back, so the poll source can honour it. A 5xx comes back as a response.
    """

    def __init__(self, stats: Stats | None = None, timeout: float = 15.0) -> None:
        from yfinance._http import new_session  # curl_cffi (browser TLS) or requests, as yfinance chooses
        from yfinance.data import YfData

        self.stats, self.timeout = stats, timeout
        self.last_response: Any = None
        session = new_session()
        send = session.request

        def remembering_request(*args: Any, **kwargs: Any) -> Any:
            response = send(*args, **kwargs)
            self.last_response = response
            return response

        session.request = remembering_request  # Session.get/post call self.request
        self._yahoo = YfData(session=session)  # yfinance's singleton, now on this session

    def __call__(self, symbols: Sequence[str]) -> list[Tick]:
        from yfinance.exceptions import YFRateLimitError

        self.last_response = None
        try:
            response = self._yahoo.get(QUOTE_URL, params={"symbols": ",".join(symbols)}, timeout=self.timeout)
        except YFRateLimitError as exc:
            raise HttpStatusError(429, self._retry_after()) from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise HttpStatusError(response.status_code, parse_retry_after(response.headers.get("Retry-After")))
        response.raise_for_status()
        return parse_quote_response(response.json(), self.stats)

    def _retry_after(self) -> float | None:
        last = self.last_response
        if last is None or last.status_code != 429:
            return None
        return parse_retry_after(last.headers.get("Retry-After"))


class PollSource(Source):
    name = "poll"

    def __init__(self, symbols: Sequence[str], stats: Stats, fetch: Fetch | None = None, interval: float = 60.0,
                 jitter: Jitter | None = None, jitter_interval: float = 1.0, stop_event=None,
                 sleep: Callable[[float], object] | None = None, clock_ms: Callable[[], int] = now_ms,
                 initial_backoff: float = 1.0, max_backoff: float = 300.0) -> None:
        super().__init__(stop_event)
        self.symbols, self.stats, self.interval = list(symbols), stats, interval
        self.fetch: Fetch = fetch if fetch is not None else YahooQuotes(stats)
        self.jitter, self.jitter_interval = jitter, jitter_interval
        self._sleep = sleep or self.stop_event.wait
        self._clock_ms = clock_ms
        self._backoff = wait_exponential_jitter(multiplier=initial_backoff, max=max_backoff, jitter=initial_backoff)
        self.polls = 0
        self.last_real: dict[str, Tick] = {}

    def run(self, emit: Emit) -> None:
        while not self.stopping:
            ticks = self._fetch_with_retry()
            if ticks is None:
                return
            self.polls += 1
            for tick in ticks:
                emit(tick)
                self.last_real[tick.symbol] = tick
            self._between_polls(emit)

    def _between_polls(self, emit: Emit) -> None:
        if self.jitter is None or self.jitter_interval <= 0:
            self._sleep(self.interval)
            return
        rounds = max(int(self.interval / self.jitter_interval) - 1, 0)
        for _ in range(rounds):
            self._sleep(self.jitter_interval)
            if self.stopping:
                return
            for real in list(self.last_real.values()):
                emit(self.jitter.tick(real, self._clock_ms()))
        self._sleep(max(self.interval - rounds * self.jitter_interval, 0.0))

    def _fetch_with_retry(self) -> list[Tick] | None:
        retrying = Retrying(retry=retry_if_exception_type(Exception), wait=self._wait,
                            stop=lambda _state: self.stopping, sleep=self._sleep,
                            before_sleep=self._log_retry, reraise=True)
        try:
            return retrying(self.fetch, self.symbols)
        except Exception:  # noqa: BLE001 - only reached when stopping
            if self.stopping:
                return None
            raise

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, HttpStatusError) and exc.retry_after is not None:
            return min(exc.retry_after, MAX_RETRY_AFTER)
        return self._backoff(state)

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        log.warning("poll failed (%s); retry %d in %.1fs", exc, state.attempt_number, wait)
