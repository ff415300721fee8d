"""The reader watchdog: a reader role's statement cannot outlive the role's budget, whatever the session SETs.

statement_timeout is a user setting: a Power BI (or chart) session may SET it to 0 for itself. The role's
default (ALTER ROLE ... SET statement_timeout, which init.sql sets from POWERBI_STATEMENT_TIMEOUT /
CHART_STATEMENT_TIMEOUT) is the budget. Every READER_WATCHDOG_INTERVAL seconds the watchdog reads each
guarded role's budget from the catalog and cancels (pg_cancel_backend) the role's statements that have run
longer; a statement still running one interval after its cancel is terminated (pg_terminate_backend).
So no reader statement runs longer than budget + interval (+ the time the cancel takes to land).

It logs in as READER_WATCHDOG_DB_USER: a member of pg_read_all_stats (to see other roles' query_start) and
pg_signal_backend (to cancel them), read-only, with no privilege on any table or view. The supervisor
(control/supervisor.py) runs it in a thread, in both forms of the stack.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from core.settings import Settings, SettingsError

log = logging.getLogger("reader_watchdog")
APPLICATION_NAME = "cryptopipe-reader-watchdog"
_UNITS_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*$")

# Each guarded role's budget: its statement_timeout default for this database, else for every database
# (PostgreSQL's own precedence), as the raw setting text.
BUDGETS = """
SELECT r.rolname, (SELECT substr(c, length('statement_timeout=') + 1)
                     FROM pg_db_role_setting s, unnest(s.setconfig) c
                    WHERE s.setrole = r.oid AND s.setdatabase IN (0, (SELECT oid FROM pg_database
                                                                       WHERE datname = current_database()))
                      AND c LIKE 'statement\\_timeout=%%'
                    ORDER BY s.setdatabase DESC LIMIT 1)
  FROM pg_roles r WHERE r.rolname = ANY(%s)
"""
# The guarded roles' statements running now, in every database, with how long they have run.
RUNNING = """
SELECT pid, usename, query_start, extract(epoch FROM clock_timestamp() - query_start) * 1000
  FROM pg_stat_activity
 WHERE usename = ANY(%s) AND state IN ('active', 'fastpath function call') AND query_start IS NOT NULL
"""


def duration_ms(value: str) -> float:
    """A PostgreSQL time setting in milliseconds ('30s', '1min', '500' = 500 ms)."""
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"not a PostgreSQL duration: {value!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2) or "ms"]


@dataclass
class WatchdogState:
    cancelled: int = 0
    terminated: int = 0
    last_error: str = ""
    _signalled: dict[tuple[int, datetime], float] = field(default_factory=dict)


class ReaderWatchdog:
    def __init__(self, dsn: str, roles: list[str], interval: float) -> None:
        self.dsn, self.roles, self.interval = dsn, roles, interval
        self.state = WatchdogState()
        self._conn: psycopg.Connection | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ReaderWatchdog:
        dsn = settings.role_dsn("READER_WATCHDOG", APPLICATION_NAME)
        interval = float(settings["READER_WATCHDOG_INTERVAL"])
        if not interval > 0:
            raise SettingsError(f"READER_WATCHDOG_INTERVAL must be a positive number, not {interval!r}")
        return cls(dsn, [settings["POWERBI_DB_USER"], settings["CHART_DB_USER"]], interval)

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True)
        return self._conn

    def budgets_ms(self, conn: psycopg.Connection) -> dict[str, float]:
        budgets = {}
        for role, value in conn.execute(BUDGETS, (self.roles,)).fetchall():
            try:
                ms = duration_ms(value) if value is not None else 0.0
            except ValueError as exc:
                log.warning("role %s: %s; not guarded", role, exc)
                continue
            if ms > 0:
                budgets[role] = ms
        return budgets

    def check_once(self) -> int:
        """One look: cancel what is over budget, terminate what ignored a cancel. Returns the signals sent."""
        conn = self._connection()
        budgets = self.budgets_ms(conn)
        now = time.monotonic()
        seen, sent = set(), 0
        for pid, role, started, ran_ms in conn.execute(RUNNING, (list(budgets),)).fetchall():
            key = (pid, started)
            seen.add(key)
            if float(ran_ms) <= budgets[role]:
                continue
            signalled = self.state._signalled.get(key)
            if signalled is None:
                if conn.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone()[0]:
                    self.state._signalled[key] = now
                    self.state.cancelled += 1
                    sent += 1
                    log.warning("cancelled %s's statement (pid %d) after %.1fs: its budget is %.1fs",
                                role, pid, float(ran_ms) / 1000, budgets[role] / 1000)
            elif now - signalled >= self.interval and conn.execute(
                    "SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]:
                self.state.terminated += 1
                sent += 1
                log.warning("terminated %s's session (pid %d): its statement ignored the cancel", role, pid)
        self.state._signalled = {k: v for k, v in self.state._signalled.items() if k in seen}
        return sent

    def run(self, stop: threading.Event) -> None:
        log.info("guarding the statements of %s (every %.1fs)", ", ".join(self.roles), self.interval)
        while not stop.is_set():
            try:
                self.check_once()
                self.state.last_error = ""
            except psycopg.Error as exc:  # the database away: try again next interval, log each new error once
                error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if error != self.state.last_error:
                    log.warning("cannot watch the readers: %s", error)
                self.state.last_error = error
                if self._conn is not None:
                    self._conn.close()
            stop.wait(self.interval)
        if self._conn is not None:
            self._conn.close()
