"""The tick maintainer: crypto_prices' daily partitions made ahead, and raw ticks kept RAW_TICKS_RETENTION_DAYS.

Every TICK_MAINTENANCE_INTERVAL seconds it calls init.sql's raw_ticks_maintenance_step() until it answers
NULL, each call its own transaction, and logs what each did: ticks of a day without a partition (a backfill,
an old recording replayed) move into a partition of their day, or expire when older than the retention;
partitions for today and the RAW_TICKS_PREMAKE_DAYS after it exist; a day older than the retention is
dropped whole (candles stay). A step that cannot get its locks within 500 ms (a long reader holds the table)
fails and is tried again next round: the sink never waits behind it longer than that.

It logs in as TICK_MAINTAINER_DB_USER, whose only right is to execute that function (it runs as the owner).
The supervisor (control/supervisor.py) runs it in a thread, in both forms of the stack;
`python -m control.tick_maintenance` runs one round by hand.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

import psycopg

from core.settings import Settings, SettingsError

log = logging.getLogger("tick_maintenance")
APPLICATION_NAME = "cryptopipe-tick-maintainer"
MAX_STEPS_PER_ROUND = 200  # a long backlog (months of backfill) is worked off over several rounds


class TickMaintainer:
    def __init__(self, dsn: str, keep_days: int | None, premake_days: int, interval: float) -> None:
        self.dsn, self.keep_days, self.premake_days, self.interval = dsn, keep_days, premake_days, interval
        self.steps = 0
        self.last_error = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> TickMaintainer:
        dsn = settings.role_dsn("TICK_MAINTAINER", APPLICATION_NAME)
        keep = settings.integer("RAW_TICKS_RETENTION_DAYS", minimum=0)
        premake = settings.integer("RAW_TICKS_PREMAKE_DAYS", minimum=0)
        interval = float(settings["TICK_MAINTENANCE_INTERVAL"])
        if not interval > 0:
            raise SettingsError(f"TICK_MAINTENANCE_INTERVAL must be a positive number, not {interval!r}")
        return cls(dsn, keep or None, premake, interval)

    def run_round(self) -> list[str]:
        """Steps until nothing is due (or MAX_STEPS_PER_ROUND); what each did."""
        done: list[str] = []
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for _ in range(MAX_STEPS_PER_ROUND):
                action = conn.execute("SELECT raw_ticks_maintenance_step(%s, %s)",
                                      (self.keep_days, self.premake_days)).fetchone()[0]
                if action is None:
                    break
                log.info("%s", action)
                done.append(action)
        self.steps += len(done)
        return done

    def run(self, stop: threading.Event) -> None:
        kept = f"{self.keep_days} days" if self.keep_days else "for ever"
        log.info("raw ticks kept %s, partitions %d days ahead (every %.0fs)", kept, self.premake_days, self.interval)
        while not stop.is_set():
            try:
                self.run_round()
                self.last_error = ""
            except psycopg.Error as exc:  # database away or a lock not granted: next round; each new error once
                error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if error != self.last_error:
                    log.warning("tick maintenance round failed (tried again in %.0fs): %s", self.interval, error)
                self.last_error = error
            stop.wait(self.interval)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m control.tick_maintenance",
                            description="Run one round of raw-tick partition maintenance now (what the "
                                        "supervisor does every TICK_MAINTENANCE_INTERVAL seconds).").parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    done = TickMaintainer.from_settings(Settings.load()).run_round()
    print(f"{len(done)} maintenance step(s) done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
