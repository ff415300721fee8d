"""python -m chart: the live candle page on 127.0.0.1:CHART_PORT (settings from .env, see README).

It reads the view_crypto_candles* views only, as its own read-only role (CHART_DB_USER), with two
connections (one LISTENs on candles_changed, one runs the shared query), however many pages are open
(at most CHART_MAX_VIEWERS).
"""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web
from psycopg.conninfo import conninfo_to_dict

from chart.config import ChartConfig
from chart.web import build_app
from core.settings import Settings, SettingsError


def main(args: argparse.Namespace) -> int:
    config = ChartConfig.from_settings(Settings.load(), host=args.host, port=args.port)
    config.vendor_script  # noqa: B018 - fail now, with the fix in the message, if the library is missing
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    db = conninfo_to_dict(config.dsn)
    logging.getLogger("chart").info("chart page on http://%s:%d/ (candle views as %s@%s:%s)", config.host,
                                    config.port, db.get("user"), db.get("host"), db.get("port"))
    try:
        # handler_cancellation: a page that goes away ends its stream at once, so it frees its viewer slot
        # (CHART_MAX_VIEWERS) then, not at the next failed keep-alive ping.
        web.run_app(build_app(config), host=config.host, port=config.port, shutdown_timeout=2,
                    access_log=None, print=None, handle_signals=True, handler_cancellation=True)
    except OSError as exc:
        raise SettingsError(f"cannot listen on {config.host}:{config.port} (CHART_HOST/CHART_PORT): {exc}") from exc
    return 0


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m chart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", help="address to listen on (default: CHART_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: CHART_PORT)")
    args = parser.parse_args()
    try:
        sys.exit(main(args))
    except SettingsError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
