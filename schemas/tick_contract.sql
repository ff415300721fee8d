-- The tick contract in SQL: included by init.sql and by the migration that introduced its CHECK
-- (migrations/0003_tick_contract.sql). Idempotent.
-- THE tick contract in SQL: the reason a tick breaks it, in the order Connect's transform and the producer
-- check, or NULL. The ranges, pattern and feeds are schemas/tick_contract.json's, the event-time floor is
-- .env's TICK_MIN_EVENT_TIME (the future bound is Connect's and the producer's only: it depends on when a
-- tick lands); tests/test_contract_definition.py checks this function against the file at each limit and
-- just beyond it. NaN sorts above every number in PostgreSQL, so "<= max" refuses it, and +-Infinity fail
-- the ranges too. The pattern is ASCII-only, so its length counts the same as in Python and Java. A plain
-- SQL expression: the planner inlines it into the CHECK and the trigger condition below.
CREATE OR REPLACE FUNCTION tick_contract_violation(p_symbol text, p_price double precision,
                                                   p_volume double precision, p_feed text,
                                                   p_event_time timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_symbol IS NULL OR p_symbol !~ '^[A-Z0-9][A-Z0-9.=^-]{0,31}$' THEN 'bad_symbol'
        WHEN p_price IS NULL OR NOT (p_price >= float8 '1e-9' AND p_price <= float8 '1e9') THEN 'bad_price'
        WHEN p_volume IS NOT NULL AND NOT (p_volume >= float8 '0' AND p_volume <= float8 '1e15') THEN 'bad_volume'
        WHEN p_feed IS NULL OR p_feed NOT IN ('STREAM', 'POLL', 'JITTER', 'REPLAY') THEN 'bad_feed'
        WHEN p_event_time IS NULL OR p_event_time < timestamptz '2009-01-03 00:00:00+00' THEN 'implausible_time'
    END
$$;
COMMENT ON FUNCTION tick_contract_violation(text, double precision, double precision, text, timestamptz) IS
    'Why a tick breaks the tick contract (schemas/tick_contract.json), or NULL: bad_symbol, bad_price, bad_volume, bad_feed, implausible_time.';
