"""The candle views as plain SQL: what init.sql's loop over candle_intervals creates, read back from a database.

init.sql makes the views of every interval from one template (a DO block), so that adding an interval needs
no new SQL; this writes out what that template made, one CREATE VIEW per view, as PostgreSQL itself prints
it (pg_get_viewdef). The result is checked in as docs/candle-views.sql, and tests/test_candle_views_file.py
checks it against the test stack's database, so it is never out of date.

    python -m control.candle_views > docs/candle-views.sql   # against the running stack's database
"""

from __future__ import annotations

import argparse
import sys

import psycopg

from core.settings import Settings

HEADER = ("-- The candle views as PostgreSQL holds them: written by `python -m control.candle_views` from a\n"
          "-- database init.sql made (its DO block makes them from one template per candle_intervals row).\n"
          "-- Do not edit: change init.sql, then regenerate; tests/test_candle_views_file.py checks this file.\n")
VIEWS = """
SELECT c.relname, pg_get_viewdef(c.oid, true), obj_description(c.oid, 'pg_class')
  FROM pg_class c
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'v'
   AND (c.relname LIKE 'view\\_crypto\\_candles%' OR c.relname = 'view_crypto_ticks')
 ORDER BY c.relname
"""


def render(conn: psycopg.Connection) -> str:
    parts = [HEADER]
    for name, definition, comment in conn.execute(VIEWS).fetchall():
        parts.append(f"\n-- {comment}\nCREATE OR REPLACE VIEW {name} AS\n{definition.rstrip()}\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m control.candle_views",
                            description="Print the candle views of the stack's database as plain SQL "
                                        "(docs/candle-views.sql).").parse_args(argv)
    with psycopg.connect(Settings.load().pg_dsn(), connect_timeout=5) as conn:
        sys.stdout.write(render(conn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
