"""`python -m producer` / `cryptopipe-producer`: build source, validator and output from the CLI and run."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from core.settings import Settings, SettingsError
from producer.cli import parse_args
from producer.jsonl_recorder import JsonlRecorder
from producer.kafka_publisher import KafkaPublisher, producer_config
from producer.logs import setup_logging
from producer.pipeline import EXIT_OK, EXIT_USAGE, Output, Pipeline
from producer.schema_registration import RegistryUnavailable, load_schema, register_schema, registry_client
from producer.sources import Source
from producer.stats import Stats
from producer.validate import ValidationRules, Validator, parse_symbols

log = logging.getLogger("producer")


def build_source(args: argparse.Namespace, symbols: list[str], stats: Stats, stop: threading.Event) -> Source:
    """Imported on demand: yfinance (and pandas behind it) costs a second of start-up that replay does not need."""
    if args.source in ("stream", "record"):
        from producer.sources.stream import StreamSource

        return StreamSource(symbols, stats, url=args.stream_url, stop_event=stop,
                            initial_wait=args.reconnect_initial_wait, max_wait=args.reconnect_max_wait)
    if args.source == "poll":
        from producer.sources.jitter import Jitter
        from producer.sources.poll import PollSource

        jitter = None if args.no_jitter else Jitter(args.jitter_bps, args.seed)
        return PollSource(symbols, stats, interval=args.poll_interval, jitter=jitter,
                          jitter_interval=args.jitter_interval, stop_event=stop)
    from producer.sources.replay import ReplaySource

    return ReplaySource(args.file, args.speed, stats, stop_event=stop)


def build_validator(args: argparse.Namespace, symbols: list[str]) -> Validator:
    return Validator(ValidationRules(
        symbols=frozenset(symbols),
        contract=args.contract,
        max_future_ms=round(args.max_clock_skew * 1000),
        max_past_ms=int(args.max_age * 1000) if args.max_age > 0 else None,
        dedup_window=args.dedup_window,
    ))


def build_output(args: argparse.Namespace, stats: Stats, pipeline: Pipeline,
               registry_auth: tuple[str, str] | None = None) -> Output:
    if args.source == "record":
        return JsonlRecorder(args.out, stats)
    registry = registry_client(args.schema_registry_url, registry_auth)
    schema = load_schema()
    register_schema(registry, f"{args.topic}-value", schema, args.registry_wait)
    # The principal `producer` with its password from the settings (the native stack's secrets file, or
    # KAFKA_PRODUCER_PASSWORD_FILE in compose), never from the command line.
    connection = {**Settings.load().kafka_config("producer"), "bootstrap.servers": args.bootstrap_servers}
    config = producer_config(connection, args.message_timeout_ms, args.buffer_max_messages,
                             args.linger_ms, dict(args.kafka_config))
    return KafkaPublisher(config, registry, schema, args.topic, stats, give_up=pipeline.give_up,
                          on_wait=pipeline.upkeep)


def install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.error("second %s: exiting at once, without flushing", signal.Signals(signum).name)
            os._exit(130)
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_format, args.log_level.upper())
    symbols = parse_symbols(args.symbols)
    stats, stop = Stats(), threading.Event()
    install_signal_handlers(stop)
    source = build_source(args, symbols, stats, stop)
    pipeline = Pipeline(source, build_validator(args, symbols), stats, stop, health_file=args.health_file,
                        health_interval=args.health_interval, stats_interval=args.stats_interval,
                        max_ticks=args.max_ticks, flush_timeout=args.flush_timeout, stop_timeout=args.stop_timeout)
    try:
        # The registry takes schemas from its `producer` user only (docs/registry-auth.md); its password is a
        # secret: from REGISTRY_PRODUCER_PASSWORD(_FILE) or the native stack's secrets file, never an argument.
        output = build_output(args, stats, pipeline, Settings.load().registry_auth("producer"))
    except (RegistryUnavailable, SettingsError) as exc:
        log.error("%s", exc)
        print(f"ERROR: {exc}", file=sys.stderr)
        return EXIT_USAGE
    log.info("producer starting: source=%s symbols=%s topic=%s", args.source, ",".join(symbols), args.topic)
    code = pipeline.run(output)
    if code == EXIT_OK and args.stay_up and not stop.is_set():
        pipeline.stay_up()
    return code


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
