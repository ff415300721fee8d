"""Logging set-up: plain text or one JSON object per line, on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # library DeprecationWarnings go through the same (e.g. JSON) formatter
    # yfinance logs every decode failure with a traceback; the stream source counts and logs them itself.
    logging.getLogger("yfinance").setLevel(logging.CRITICAL)
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # the registry client logs every request at INFO
    logging.getLogger("httpx").setLevel(logging.WARNING)
