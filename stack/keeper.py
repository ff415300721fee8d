"""Keeps one command running: the native stack's keeper of the connector supervisor.

`scripts/stack.sh up` starts it detached (a session of its own, pid file .stack/supervisor-keeper.pid);
it starts the command as its child, writes the child's pid to --pid-file (so `status` and `logs` find the
supervisor as before), and when the child exits for any reason (kill -9 included) starts it again after
a backoff: 1 s, doubling up to 30 s while it keeps dying, back to 1 s once it ran 60 s. So a supervisor
killed after a minute of work is back within about 2 s (stated bound in the README: 10 s on a busy
machine). SIGTERM/SIGINT (what `down` sends the keeper) stop the child, then the keeper.

    python -m stack.keeper --pid-file FILE --log FILE -- COMMAND [ARGS ...]

Why not supervisord or another process manager: the stack already tracks its processes by pid file
(stack/process.py) for `up`, `status`, `logs` and `down`; this loop is the one thing missing, and a second
manager with its own control socket would be another service to start, check and stop.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0  # a child that ran this long is healthy again: the next restart waits INITIAL_BACKOFF


def note(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} keeper: {message}", flush=True)


def keep(argv: list[str], pid_file: Path, log_file: Path, stop: threading.Event) -> int:
    backoff = INITIAL_BACKOFF
    starts = 0
    while not stop.is_set():
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} keeper starting (#{starts + 1}): "
                      f"{' '.join(argv)}\n".encode())
            log.flush()
            # A session of its own, like every process of the stack: ManagedProcess.stop() can stop it alone
            # (`up` after the keeper was killed, `down`), and it outlives a keeper killed with -9.
            child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        starts += 1
        pid_file.write_text(str(child.pid))
        note(f"started pid {child.pid} (start #{starts})")
        started = time.monotonic()
        while child.poll() is None and not stop.is_set():
            stop.wait(0.2)
        if stop.is_set():
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            note(f"stopped pid {child.pid}")
            break
        ran = time.monotonic() - started
        if ran >= STABLE_AFTER:
            backoff = INITIAL_BACKOFF
        note(f"pid {child.pid} exited with {child.returncode} after {ran:.1f}s; starting it again in {backoff:.0f}s")
        stop.wait(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF)
    pid_file.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.keeper", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pid-file", type=Path, required=True, help="where the child's pid is written")
    parser.add_argument("--log", type=Path, required=True, help="the child's output is appended here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS ...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to keep running (after --)")
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        note(f"{signal.Signals(signum).name} received: stopping")
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return keep(command, args.pid_file, args.log, stop)


if __name__ == "__main__":
    sys.exit(main())
