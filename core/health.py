"""Health files: the producer and the supervisor rewrite theirs periodically; `python -m core.health PATH
--max-age S` checks one.

Exit 0 when the file was written less than max-age seconds ago, else 1 with a message (docker-compose
healthcheck).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from core.files import write_atomic


def write_health(path: Path, counters: dict[str, object]) -> None:
    """The counters with the time and pid, replaced atomically (core.files.write_atomic)."""
    write_atomic(path, json.dumps({"time": time.time(), "pid": os.getpid(), **counters}))


def check(path: Path, max_age: float) -> tuple[bool, str]:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False, f"unhealthy: {path} does not exist (its process not started or not writing it)"
    if age > max_age:
        return False, f"unhealthy: {path} last written {age:.0f}s ago (max {max_age:.0f}s)"
    return True, f"healthy: {path} written {age:.0f}s ago"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.health", description=__doc__)
    parser.add_argument("path", type=Path, help="the file the process writes (its --health-file)")
    parser.add_argument("--max-age", type=float, default=120.0, help="seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    ok, message = check(args.path, args.max_age)
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
