"""Free ports for a stack of one's own (the test fixture, benchmarks), picked AND claimed.

A port that is free when picked may be taken before the service binds it: by another test run or bench
picking at the same moment, or by an outgoing connection (the kernel hands those ports from its ephemeral
range). So ports are picked below the ephemeral range, and each is claimed with an exclusive lock on a
file named after it in a directory every user of this module shares; the claim holds until release() or
until the claiming process ends (the kernel drops the lock then, so a crashed run never leaks a claim).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

# Every port setting of the native stack: a stack of one's own needs all of them.
STACK_PORT_SETTINGS = ("POSTGRES_PORT", "KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "REGISTRY_PORT",
                       "REGISTRY_MANAGEMENT_PORT", "CONNECT_PORT", "CHART_PORT")
CLAIMS_DIR = Path(tempfile.gettempdir()) / "cryptopipe-port-claims"
LOWEST = 20_000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PortClaims:
    """Ports claimed by this process; release() gives them back."""

    def __init__(self) -> None:
        self._held: dict[int, IO[str]] = {}
        self._rng = random.Random()

    @property
    def ports(self) -> list[int]:
        return list(self._held)

    def claim(self, consecutive: int = 1, attempts: int = 2000) -> int:
        """One more port (or `consecutive` adjacent ones, e.g. for Connect worker i on CONNECT_PORT + i;
        the first is returned): not claimed by anyone, and free to bind now."""
        CLAIMS_DIR.mkdir(mode=0o1777, exist_ok=True)
        high = max(_ephemeral_start() - consecutive, LOWEST + 1000)
        for _ in range(attempts):
            base = self._rng.randint(LOWEST, high)
            run = range(base, base + consecutive)
            if any(port in self._held for port in run):
                continue
            handles = [h for port in run if (h := self._lock(port)) is not None]
            if len(handles) == consecutive:
                for port, handle in zip(run, handles, strict=True):
                    handle.seek(0)
                    handle.truncate()
                    handle.write(f"{os.getpid()}\n")
                    handle.flush()
                    self._held[port] = handle
                return base
            for handle in handles:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
        raise RuntimeError(f"no {consecutive} free port(s) between {LOWEST} and {high} after {attempts} attempts")

    @staticmethod
    def _lock(port: int) -> IO[str] | None:
        """The claim file of `port`, locked, if nobody holds it and the port is free to bind now."""
        handle = open(CLAIMS_DIR / f"{port}.lock", "a+")  # noqa: SIM115 - held open: the lock lives with it
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
        if not _bindable(port):
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
            return None
        return handle

    def release(self) -> None:
        for handle in self._held.values():
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._held.clear()


def claim_ports(settings: Iterable[str] = STACK_PORT_SETTINGS, connect_workers: int = 1
                ) -> tuple[dict[str, str], PortClaims]:
    """{setting: port} for each port setting (CONNECT_PORT with room for `connect_workers` workers), and
    the claims to release when the stack is gone."""
    claims = PortClaims()
    return {name: str(claims.claim(connect_workers if name == "CONNECT_PORT" else 1)) for name in settings}, claims


@contextlib.contextmanager
def claimed_ports(settings: Iterable[str] = STACK_PORT_SETTINGS) -> Iterator[dict[str, str]]:
    ports, claims = claim_ports(settings)
    try:
        yield ports
    finally:
        claims.release()
