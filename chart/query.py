"""The ONE statement per update: a UNION ALL with a branch per series that needs data, for all pages.

Branches read the candle views only, each an index range on (symbol, bucket):
  load     the newest window of a series: from the day of the symbol's newest candle (a cheap
           lookup in the 1d view) back max_candles intervals; the hub keeps the newest max_candles
  refresh  a series from the earliest bucket a notification touched
  newest   the symbol's newest 1-minute bucket: when its last tick landed, for the stale banner
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from chart.views import Series, view_name

_COLUMNS = sql.SQL("bucket, open::float8, high::float8, low::float8, close::float8, volume::float8,"
                   " tick_count::bigint, synthetic_count::bigint")
_NEWEST_DAY = sql.SQL("(SELECT max(d.bucket) FROM {} d WHERE d.symbol = %s)").format(
    sql.Identifier(view_name("1d", "all")))


@dataclass(frozen=True)
class Branch:
    tag: int
    query: sql.Composed
    params: tuple


def _select(tag: int, series: Series, condition: sql.Composable, params: tuple) -> Branch:
    gap = sql.SQL("is_gap_fill") if series.filled else sql.SQL("false")
    query = sql.SQL("(SELECT %s::int AS tag, {columns}, {gap} AS is_gap_fill FROM {view}"
                    " WHERE symbol = %s AND {condition})").format(
        columns=_COLUMNS, gap=gap, view=sql.Identifier(series.view), condition=condition)
    return Branch(tag, query, (tag, series.symbol, *params))


def load(tag: int, series: Series, max_candles: int) -> Branch:
    condition = sql.SQL("bucket >= {} - %s::interval").format(_NEWEST_DAY)
    return _select(tag, series, condition, (series.symbol, series.width * max_candles))


def refresh(tag: int, series: Series, since: datetime) -> Branch:
    return _select(tag, series, sql.SQL("bucket >= %s"), (since,))


def newest_minute(tag: int, symbol: str) -> Branch:
    query = sql.SQL("(SELECT %s::int, max(bucket), NULL::float8, NULL::float8, NULL::float8, NULL::float8,"
                    " NULL::float8, NULL::bigint, NULL::bigint, NULL::boolean FROM {view}"
                    " WHERE symbol = %s AND bucket >= {newest_day})").format(
        view=sql.Identifier(view_name("1m", "all")), newest_day=_NEWEST_DAY)
    return Branch(tag, query, (tag, symbol, symbol))


def statement(branches: list[Branch]) -> tuple[sql.Composed, tuple]:
    query = sql.SQL(" UNION ALL ").join(b.query for b in branches) + sql.SQL(" ORDER BY 1, 2")
    return query, tuple(p for b in branches for p in b.params)


SYMBOLS = sql.SQL("SELECT symbol FROM {} GROUP BY symbol ORDER BY symbol").format(
    sql.Identifier(view_name("1d", "all")))

