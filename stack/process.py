"""One managed background process: start detached, wait until a probe passes, stop without leftovers.

State (pid file, log) lives in the stack's state directory, so `up`, `status` and `down` can be
separate invocations. Each process runs in a session of its own; stopping signals the whole group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# What a service inherits from the caller's environment when it must not see the rest of it (secrets,
# tokens, anything exported in the shell): the program search path and the locale / time zone.
BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ")


def base_environment() -> dict[str, str]:
    return {key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ}


class StackError(RuntimeError):
    """A service failed to start, become ready or stop; the message says which and why."""


@dataclass
class ManagedProcess:
    name: str
    state_dir: Path
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 30.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) and _is_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
              inherit_env: bool = True) -> int:
        """Start detached unless running. `env` is added to the caller's environment, or, with
        inherit_env=False, to base_environment() only: the process sees nothing else of the caller's."""
        if (pid := self.pid()) is not None:
            return pid
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**(os.environ if inherit_env else base_environment()), **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def wait_ready(self, probe: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll `probe` until it returns True; fail fast if the process dies first (a process that became
        ready and then finished, e.g. a fast replay, counts as ready). Returns seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            alive = self.pid() is not None
            try:
                if probe():
                    return time.monotonic() - started
            except Exception:  # noqa: BLE001 - a probe failing just means "not yet"
                pass
            if not alive:
                raise StackError(f"{self.name} exited before it was ready ({what}).\n{self.log_tail()}")
            time.sleep(0.5)
        raise StackError(f"{self.name} was not ready after {timeout:.0f}s ({what}).\n{self.log_tail()}")

    def stop(self) -> bool:
        """Signal the process group, wait, then kill what is left. Returns True if something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        members = _group_members(pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, self.stop_signal)
        _gone, alive = psutil.wait_procs(members, timeout=self.stop_timeout)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"(no log at {self.log_file})"
        return f"--- last {lines} lines of {self.log_file} ---\n" + "\n".join(text[-lines:])


def _is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_members(pid: int) -> list[psutil.Process]:
    """The leader and every process in its session (children may have re-parented)."""
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == pid:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
    return members
