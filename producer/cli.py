"""Command line: every option, with defaults from .env / the environment (the environment wins)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from core.settings import PROJECT_ROOT, Settings, SettingsError
from producer.validate import TickContract, contract_shape

SOURCES = ("stream", "poll", "replay", "record")
YAHOO_STREAM_URL = "wss://streamer.finance.yahoo.com/?version=2"  # yfinance.WebSocket's default (tested)

DESCRIPTION = """\
cryptopipe producer: crypto ticks -> validate -> Avro (schema registry) -> Kafka, key = symbol.

sources (--source, env PRODUCER_SOURCE; several --symbols at once):
  stream  (default) live ticks from Yahoo's WebSocket via yfinance.WebSocket (--stream-url); feed=STREAM.
          Reconnects with exponential backoff + jitter; reconnects are counted. Without internet it says
          so, keeps retrying, and shows how to replay a recording instead.
  poll    real quotes polled from Yahoo through yfinance every --poll-interval seconds, feed=POLL. Between
          polls, micro-jitter ticks are emitted every --jitter-interval s: SYNTHETIC, labelled feed=JITTER,
          drawn uniformly within +/- --jitter-bps basis points of the last real price (never compounding),
          reproducible with --seed; --no-jitter switches them off. HTTP 429/5xx back off honouring Retry-After.
  replay  ticks from a JSONL or CSV file (--file; columns symbol, price, event_time [epoch ms], volume
          [optional]) at recorded speed (--speed 1), N times faster (--speed N) or as fast as possible
          (--speed 0); feed=REPLAY. The --max-age (too old) check is OFF for replay unless given explicitly;
          the tick contract below applies to replay too.
  record  what `stream` receives (after validation) appended to a JSONL file (--out) that replay reads
          back; needs no Kafka or registry.

rejections: a bad tick is counted by reason (stats line, final summary, health file) and never stops the
producer; received = produced + the sum of the rejections. In the order checked:
  malformed         a frame / line / quote that is not a tick (not UTF-8, not JSON, fields missing)
the tick contract (schemas/tick_contract.json and .env; Kafka Connect and PostgreSQL enforce the same):
  bad_symbol        not a whole match of {symbol_pattern}
  bad_price         price not a finite number within {price_min} .. {price_max}
  bad_volume        volume present and not a finite number within {volume_min} .. {volume_max}
  bad_feed          feed not one of {feeds}
  implausible_time  event_time before TICK_MIN_EVENT_TIME ({min_time})
  future_time       event_time more than --max-clock-skew s ahead of this machine's clock (at most
                    TICK_MAX_FUTURE_SECONDS, {max_future} s)
the producer's own checks:
  unknown_symbol    symbol not in --symbols
  stale_time        event_time more than --max-age s old (off for replay unless given)
  duplicate         same symbol + event_time + price among the last --dedup-window ticks
  serialize_error   the Avro serializer refused the tick (logged with the reason)
"""

EPILOG = """\
exit codes: 0 every produced tick acknowledged; 1 the source failed; 2 usage error or schema registry
unreachable (after --registry-wait); 3 some ticks not delivered (counted and logged); 4 fatal Kafka error.
SIGINT/SIGTERM: stop the source, produce what it already emitted, flush (--flush-timeout), print the counts.
"""


def env_defaults() -> dict[str, str]:
    """Defaults from the project's settings (.env, overridden by the environment; core/settings.py, the one
    place they are declared), with the Kafka and registry addresses derived from KAFKA_PORT / REGISTRY_PORT
    exactly as the stack derives them. A broken .env is an error (SettingsError), never silently ignored."""
    settings = Settings.load()
    values = dict(settings.env)
    with contextlib.suppress(SettingsError):  # no port in .env nor the environment: no derived default
        values.update(settings.client_env())
    return values


def kv_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def build_parser(env: dict[str, str] | None = None) -> argparse.ArgumentParser:
    env = env_defaults() if env is None else env
    try:
        shape = TickContract(0, 0, **contract_shape())  # type: ignore[arg-type]
    except SettingsError:
        shape = TickContract(0, 0)  # --help still works; starting reports the broken file
    description = DESCRIPTION.format(symbol_pattern=shape.symbol_pattern, price_min=f"{shape.price_min:g}",
                                     price_max=f"{shape.price_max:g}", volume_min=f"{shape.volume_min:g}",
                                     volume_max=f"{shape.volume_max:g}", feeds=", ".join(sorted(shape.feeds)),
                                     min_time=env.get("TICK_MIN_EVENT_TIME", "?"),
                                     max_future=env.get("TICK_MAX_FUTURE_SECONDS", "?"))
    p = argparse.ArgumentParser(prog="python -m producer", description=description, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=SOURCES, default=env.get("PRODUCER_SOURCE"),
                   help="stream | poll | replay | record (env PRODUCER_SOURCE, default %(default)s)")
    p.add_argument("--symbols", default=env.get("SYMBOLS"),
                   help="comma-separated symbols; others are rejected (env SYMBOLS, default %(default)s)")

    k = p.add_argument_group("Kafka and schema registry")
    k.add_argument("--bootstrap-servers", default=env.get("KAFKA_BOOTSTRAP_SERVERS"),
                   help="env KAFKA_BOOTSTRAP_SERVERS (default %(default)s, from KAFKA_PORT in .env)")
    k.add_argument("--schema-registry-url",
                   default=env.get("SCHEMA_REGISTRY_URL"),
                   help="Confluent-compatible registry API (env SCHEMA_REGISTRY_URL, default %(default)s, "
                        "from REGISTRY_PORT in .env)")
    k.add_argument("--topic", default=env.get("TICKS_TOPIC"),
                   help="value subject is <topic>-value (env TICKS_TOPIC, default %(default)s)")
    k.add_argument("--registry-wait", type=float, default=60.0,
                   help="seconds to keep retrying an unreachable registry at start, then exit 2 (default %(default)s)")
    k.add_argument("--message-timeout-ms", type=int, default=300_000,
                   help="how long librdkafka keeps retrying a tick while the broker is down (default %(default)s)")
    k.add_argument("--buffer-max-messages", type=int, default=100_000,
                   help="queue.buffering.max.messages: bounded local buffer (default %(default)s)")
    k.add_argument("--linger-ms", type=int, default=20, help="linger.ms (default %(default)s)")
    k.add_argument("-X", "--kafka-config", type=kv_pair, action="append", default=[], metavar="KEY=VALUE",
                   help="any other librdkafka producer property (repeatable)")
    k.add_argument("--flush-timeout", type=float, default=30.0,
                   help="seconds to wait for outstanding deliveries on exit (default %(default)s)")

    s = p.add_argument_group("stream / record")
    s.add_argument("--stream-url", default=YAHOO_STREAM_URL, help="WebSocket URL (default %(default)s)")
    s.add_argument("--reconnect-initial-wait", type=float, default=1.0,
                   help="first reconnect backoff in seconds, doubling with jitter (default %(default)s)")
    s.add_argument("--reconnect-max-wait", type=float, default=60.0,
                   help="longest reconnect backoff in seconds (default %(default)s)")
    s.add_argument("--out", type=Path, help="record: JSONL file to append to")

    q = p.add_argument_group("poll")
    q.add_argument("--poll-interval", type=float, default=60.0, help="seconds between polls (default %(default)s)")
    q.add_argument("--jitter-bps", type=float, default=5.0,
                   help="JITTER ticks stay within +/- this many basis points of the last real price "
                        "(default %(default)s)")
    q.add_argument("--jitter-interval", type=float, default=1.0,
                   help="seconds between JITTER ticks per symbol (default %(default)s)")
    q.add_argument("--seed", type=int, default=None, help="seed for reproducible JITTER ticks")
    q.add_argument("--no-jitter", action="store_true", help="no synthetic JITTER ticks, only real POLL ticks")

    r = p.add_argument_group("replay")
    r.add_argument("--file", type=Path, default=replay_file_setting(env),
                   help="replay: JSONL or CSV (by .csv suffix) file (env PRODUCER_REPLAY_FILE, relative to the "
                        "project; default %(default)s)")
    r.add_argument("--speed", type=float, default=_setting_or(env, "PRODUCER_REPLAY_SPEED", 1.0),
                   help="replay: 1 = recorded pace, N = N times faster, 0 = as fast as possible (env "
                        "PRODUCER_REPLAY_SPEED, default %(default)s)")

    v = p.add_argument_group("validation")
    v.add_argument("--max-clock-skew", type=float, default=_float_or_none(env.get("TICK_MAX_FUTURE_SECONDS")),
                   help="reject ticks more than this many seconds in the future (future_time); > 0 and at most "
                        "TICK_MAX_FUTURE_SECONDS (default %(default)s, from TICK_MAX_FUTURE_SECONDS in .env)")
    v.add_argument("--max-age", type=float, default=None,
                   help="reject ticks older than this many seconds; 0 = no check (default 86400, replay: no check)")
    v.add_argument("--dedup-window", type=int, default=10_000,
                   help="remember this many recent ticks to reject repeats (default %(default)s)")

    o = p.add_argument_group("operation")
    o.add_argument("--stats-interval", type=float, default=30.0,
                   help="seconds between one-line summaries on stderr; 0 = off (default %(default)s)")
    o.add_argument("--health-file", type=Path, help="rewrite this JSON file (counters, time) periodically; "
                                                    "check it with python -m core.health PATH --max-age 120")
    o.add_argument("--stay-up", action="store_true",
                   help="when the source ends (a finished replay), keep running and rewriting the health file until "
                        "stopped, instead of exiting (docker compose runs it so: `up --wait` expects it to stay up)")
    o.add_argument("--health-interval", type=float, default=10.0, help="seconds (default %(default)s)")
    o.add_argument("--log-format", choices=("text", "json"), default=env.get("PRODUCER_LOG_FORMAT"),
                   help="text or one JSON object per line (default %(default)s)")
    o.add_argument("--log-level", default="INFO", help="default %(default)s")
    o.add_argument("--max-ticks", type=int, default=0,
                   help="stop after producing this many ticks (later ones are not produced); 0 = never")
    o.add_argument("--stop-timeout", type=float, default=10.0,
                   help="seconds the source may take to stop before queued ticks count as failed (default %(default)s)")
    return p


def replay_file_setting(env: dict[str, str]) -> Path | None:
    """PRODUCER_REPLAY_FILE: a path in .env is relative to the project (where .env is), not the working directory."""
    value = env.get("PRODUCER_REPLAY_FILE")
    return PROJECT_ROOT / value if value else None


def _setting_or(env: dict[str, str], key: str, default: float) -> float:
    """A numeric setting; a value that is not a number is an error that names it."""
    raw = env.get(key)
    if not raw:
        return default
    value = _float_or_none(raw)
    if value is None:
        raise SystemExit(f"ERROR: setting {key} must be a number, not {raw!r}")
    return value


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None  # TickContract.from_settings reports the bad setting


def parse_args(argv: list[str] | None = None, env: dict[str, str] | None = None) -> argparse.Namespace:
    """Options, checked; `args.contract` is the tick contract from the settings. Settings errors exit 2."""
    try:
        env = env_defaults() if env is None else env
        contract = TickContract.from_settings(env)
    except SettingsError as exc:
        raise SystemExit(f"ERROR: {exc}") from None
    parser = build_parser(env)
    args = parser.parse_args(argv)
    args.contract = contract
    for option, key in (("source", "PRODUCER_SOURCE"), ("symbols", "SYMBOLS"), ("topic", "TICKS_TOPIC"),
                        ("log_format", "PRODUCER_LOG_FORMAT")):
        if getattr(args, option) is None:
            parser.error(f"--{option.replace('_', '-')} not given and {key} is not set (.env or the environment)")
    if args.source == "replay":
        if args.file is None:
            parser.error("--source replay needs --file (or PRODUCER_REPLAY_FILE)")
        if not args.file.is_file():
            parser.error(f"--file {args.file}: no such file")
        if args.speed < 0:
            parser.error("--speed must be >= 0")
    if args.source == "record" and args.out is None:
        parser.error("--source record needs --out")
    if args.source != "record" and not (args.bootstrap_servers and args.schema_registry_url):
        parser.error("no Kafka or registry address: pass --bootstrap-servers and --schema-registry-url, or set "
                     "KAFKA_BOOTSTRAP_SERVERS / SCHEMA_REGISTRY_URL (or KAFKA_PORT / REGISTRY_PORT in .env)")
    contract_skew = contract.max_future_ms / 1000
    if not 0 < args.max_clock_skew <= contract_skew:
        parser.error(f"--max-clock-skew must be > 0 and at most TICK_MAX_FUTURE_SECONDS ({contract_skew:g}): "
                     f"Kafka Connect diverts ticks further ahead to the dead-letter topic")
    if args.max_age is None:
        args.max_age = 0.0 if args.source == "replay" else 86_400.0
    return args
