"""One tick contract, enforced alike at every stage: schemas/tick_contract.json is the definition, and each
enforcer is checked against it at each limit and one step beyond it:

- the producer (producer/validate.py reads the file),
- Kafka Connect's TickContract transform (the connector JSON passes it the file's limits; the transform's
  own behaviour at these limits is tested in connect/plugin's TickContractTest and, on the real stack, in
  tests/test_tick_contract.py),
- PostgreSQL (init.sql's tick_contract_violation(), behind the CHECK tick_contract and the sink's
  set-aside trigger).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from control.connector import load_connector
from core.settings import PROJECT_ROOT, Settings
from producer.tick import Tick
from producer.validate import TickContract, contract_violation
from tests.conftest import StackHandle

DEFINITION = json.loads((PROJECT_ROOT / "schemas" / "tick_contract.json").read_text())
SCHEMA = json.loads((PROJECT_ROOT / "schemas" / "crypto_tick.avsc").read_text())
ENV = Settings.load().env
MIN_TIME = datetime.fromisoformat(ENV["TICK_MIN_EVENT_TIME"])
PRICE, VOLUME = DEFINITION["price"], DEFINITION["volume"]
VALID = {"symbol": "BTC-USD", "price": 100.0, "volume": 1.0, "feed": "STREAM",
         "event_time": datetime(2010, 6, 1, tzinfo=UTC)}  # far from the other tests' candles


def case(reason: str | None, **fields: object) -> tuple[dict, str | None]:
    return {**VALID, **fields}, reason


BOUNDARIES = {
    "price at min": case(None, price=PRICE["min"]),
    "price below min": case("bad_price", price=math.nextafter(PRICE["min"], 0)),
    "price at max": case(None, price=PRICE["max"]),
    "price above max": case("bad_price", price=math.nextafter(PRICE["max"], math.inf)),
    "price subnormal": case("bad_price", price=5e-324),
    "price 0": case("bad_price", price=0.0),
    "price NaN": case("bad_price", price=math.nan),
    "price inf": case("bad_price", price=math.inf),
    "volume null": case(None, volume=None),
    "volume at min": case(None, volume=float(VOLUME["min"])),
    "volume below min": case("bad_volume", volume=math.nextafter(VOLUME["min"], -math.inf)),
    "volume at max": case(None, volume=VOLUME["max"]),
    "volume above max": case("bad_volume", volume=math.nextafter(VOLUME["max"], math.inf)),
    "volume 1e308": case("bad_volume", volume=1e308),
    "volume NaN": case("bad_volume", volume=math.nan),
    "symbol of one character": case(None, symbol="B"),
    "symbol of 32 characters": case(None, symbol="ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"),
    "symbol of 33 characters": case("bad_symbol", symbol="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"),
    "symbol 1INCH-USD": case(None, symbol="1INCH-USD"),
    "symbol BRK.B": case(None, symbol="BRK.B"),
    "symbol EURUSD=X": case(None, symbol="EURUSD=X"),
    "symbol tests make": case(None, symbol="E2EAB12CD-USD"),
    "symbol empty": case("bad_symbol", symbol=""),
    "symbol lower case": case("bad_symbol", symbol="btc-usd"),
    "symbol with a trailing newline": case("bad_symbol", symbol="BTC-USD\n"),
    "symbol starting with a dash": case("bad_symbol", symbol="-BTC"),
    "symbol with a space": case("bad_symbol", symbol="BTC USD"),
    "symbol with an underscore": case("bad_symbol", symbol="BTC_USD"),
    "symbol with a non-ASCII letter": case("bad_symbol", symbol="BTC-US\u00c9"),
    "symbol with a fullwidth letter": case("bad_symbol", symbol="\uff22TC-USD"),
    "feed JITTER": case(None, feed="JITTER"),
    "feed unknown": case("bad_feed", feed="MOON"),
    "feed lower case": case("bad_feed", feed="stream"),
    "event time at the minimum": case(None, event_time=MIN_TIME),
    "event time just before it": case("implausible_time", event_time=MIN_TIME - timedelta(milliseconds=1)),
}


def epoch_ms(when: datetime) -> int:
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def test_the_feeds_are_the_schemas_enum() -> None:
    feed = next(f for f in SCHEMA["fields"] if f["name"] == "feed")
    assert DEFINITION["feed"]["values"] == feed["type"]["symbols"]


def test_the_connector_passes_the_definition_to_the_transform() -> None:
    config = load_connector()["config"]
    prefix = "transforms.contract."
    assert float(config[prefix + "price.min"]) == PRICE["min"] and float(config[prefix + "price.max"]) == PRICE["max"]
    assert float(config[prefix + "volume.min"]) == VOLUME["min"]
    assert float(config[prefix + "volume.max"]) == VOLUME["max"]
    assert config[prefix + "symbol.pattern"] == DEFINITION["symbol"]["pattern"]
    assert config[prefix + "feeds"].split(",") == DEFINITION["feed"]["values"]
    assert config[prefix + "min.event.time"] == "${env:TICK_MIN_EVENT_TIME}"


def test_init_sql_states_the_definition() -> None:
    """What the stack test below checks by behaviour, visible in the text too (a reviewer greps for it)."""
    sql = (PROJECT_ROOT / "schemas" / "tick_contract.sql").read_text()
    function = sql[sql.index("CREATE OR REPLACE FUNCTION tick_contract_violation"):]
    function = function[:function.index("$$;")]
    assert f"'{DEFINITION['symbol']['pattern']}'" in function
    assert "('" + "', '".join(DEFINITION["feed"]["values"]) + "')" in function
    limits = sorted(float(v) for v in re.findall(r"float8 '([^']+)'", function))
    assert limits == sorted(float(v) for v in (PRICE["min"], PRICE["max"], VOLUME["min"], VOLUME["max"]))
    assert f"timestamptz '{MIN_TIME.astimezone(UTC):%Y-%m-%d %H:%M:%S}+00'" in function


@pytest.mark.parametrize("name", list(BOUNDARIES))
def test_the_producer_enforces_the_definition(name: str) -> None:
    fields, reason = BOUNDARIES[name]
    contract = TickContract.from_settings(ENV)
    tick = Tick(fields["symbol"], fields["price"], epoch_ms(fields["event_time"]), fields["volume"],
                fields["feed"])  # type: ignore[arg-type]
    now = epoch_ms(datetime.now(UTC))
    assert contract_violation(tick, contract, contract.max_future_ms, now) == reason


@pytest.fixture(scope="module")
def db(stack: StackHandle) -> Iterator[psycopg.Connection]:
    with psycopg.connect(stack.pg_dsn(), autocommit=True) as conn:
        yield conn


@pytest.mark.stack
def test_the_database_enforces_the_definition(db: psycopg.Connection) -> None:
    found = {name: db.execute("SELECT tick_contract_violation(%s, %s, %s, %s, %s)",
                              (f["symbol"], f["price"], f["volume"], f["feed"], f["event_time"])).fetchone()[0]
             for name, (f, _) in BOUNDARIES.items()}
    assert found == {name: reason for name, (_, reason) in BOUNDARIES.items()}


@pytest.mark.stack
def test_the_sinks_contract_breakers_are_set_aside_and_anyone_elses_are_refused(stack: StackHandle,
                                                                                db: psycopg.Connection) -> None:
    """Should a contract breaker get past Connect's transform, the sink's batch does not fail on it: the row
    goes to crypto_prices_rejected with its reason and Kafka coordinates, the good rows of the same
    statement land. A writer bypassing Kafka meets the CHECK."""
    topic = f"test.contract.{datetime.now(UTC):%H%M%S%f}"
    rows = [(name, f, reason) for name, (f, reason) in BOUNDARIES.items()]
    values = [(f["symbol"], f["event_time"] + timedelta(microseconds=n), f["price"], f["volume"], f["feed"],
               topic, 0, n) for n, (_, f, _) in enumerate(rows)]
    insert = ("INSERT INTO crypto_prices (symbol, event_time, price, volume, feed, __connect_topic,"
              " __connect_partition, __connect_offset) VALUES "
              + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(values))
              + " ON CONFLICT (symbol, event_time, price) DO UPDATE SET volume = EXCLUDED.volume")
    flat = [v for row in values for v in row]
    dsn = stack.pg_dsn(user=stack.settings["CONNECT_DB_USER"], password=stack.settings["CONNECT_DB_PASSWORD"])
    with psycopg.connect(dsn, autocommit=True) as sink:
        sink.execute(insert, flat)
        sink.execute(insert, flat)  # redelivered: set aside once, landed once
    rejected = dict(db.execute("SELECT __connect_offset, reason FROM crypto_prices_rejected"
                               " WHERE __connect_topic = %s", (topic,)).fetchall())
    landed = {o for (o,) in db.execute("SELECT __connect_offset FROM crypto_prices WHERE __connect_topic = %s",
                                       (topic,)).fetchall()}
    assert rejected == {n: reason for n, (_, _, reason) in enumerate(rows) if reason is not None}
    assert landed == {n for n, (_, _, reason) in enumerate(rows) if reason is None}
    for n, (_, _, reason) in enumerate(rows):
        if reason is None:
            continue
        with pytest.raises(psycopg.errors.CheckViolation, match="tick_contract"):
            db.execute("INSERT INTO crypto_prices (symbol, event_time, price, volume, feed)"
                       " VALUES (%s, %s, %s, %s, %s)", values[n][:5])
