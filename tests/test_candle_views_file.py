"""docs/candle-views.sql is what init.sql makes: the candle views as plain SQL, never out of date."""

from __future__ import annotations

import psycopg
import pytest

from control.candle_views import render
from core.settings import PROJECT_ROOT
from tests.conftest import StackHandle

pytestmark = pytest.mark.stack
VIEWS_FILE = PROJECT_ROOT / "docs" / "candle-views.sql"


def test_the_checked_in_candle_views_are_the_databases(stack: StackHandle) -> None:
    with psycopg.connect(stack.pg_dsn(), connect_timeout=5) as conn:
        live = render(conn)
    assert VIEWS_FILE.read_text() == live, (
        "docs/candle-views.sql differs from the views init.sql made: "
        "regenerate it with `python -m control.candle_views > docs/candle-views.sql`")
