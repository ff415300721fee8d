-- Tables, roles and views of the crypto pipeline. Idempotent: scripts/init_db.sh applies it on every
-- start of the native stack and on the first start of the postgres container.
--
--   crypto_prices   raw ticks, written by the Kafka Connect JDBC sink (role CONNECT_DB_USER)
--   candle_rollup   1m/5m/15m/1h/1d candles maintained incrementally by a trigger on crypto_prices
--   candle_calendar the buckets from each symbol's first candle to its last, per interval (gap filling)
--   view_crypto_candles[_5m|_15m|_1h|_1d][_real|_filled]
--                   what Power BI reads (role POWERBI_DB_USER sees these views and nothing else)
--
-- Role names and passwords come from the environment (psql's \getenv), with the .env defaults.
\set ON_ERROR_STOP on

\getenv writer_role CONNECT_DB_USER
\getenv writer_password CONNECT_DB_PASSWORD
\getenv reader_role POWERBI_DB_USER
\getenv reader_password POWERBI_DB_PASSWORD
\if :{?writer_role} \else \set writer_role crypto_writer \endif
\if :{?writer_password} \else \set writer_password crypto_writer \endif
\if :{?reader_role} \else \set reader_role powerbi_reader \endif
\if :{?reader_password} \else \set reader_password powerbi_reader \endif

-- ---------------------------------------------------------------------------------------------
-- Roles
-- ---------------------------------------------------------------------------------------------
SELECT format('CREATE ROLE %I LOGIN', :'writer_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'writer_role') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'writer_role', :'writer_password') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'reader_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader_role') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'reader_role', :'reader_password') \gexec
-- Power BI's role can never write, even by mistake: every transaction it opens is read-only.
SELECT format('ALTER ROLE %I SET default_transaction_read_only = on', :'reader_role') \gexec
-- DirectQuery sends many small queries; JIT compilation would add ~100 ms to each and win nothing.
SELECT format('ALTER ROLE %I SET jit = off', :'reader_role') \gexec
-- Nobody but the roles granted below may create objects or temporary tables in this database.
SELECT format('REVOKE CREATE, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I, %I', current_database(), :'writer_role', :'reader_role') \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
-- Which statements clients really send (the sink's multi-row INSERTs, the chart's and Power BI's queries).
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

-- ---------------------------------------------------------------------------------------------
-- Raw ticks
-- ---------------------------------------------------------------------------------------------
-- The primary key is the record's Kafka coordinates (connector: primary.key.mode=kafka, upsert):
-- when Connect redelivers a batch after a crash or rebalance, the same rows are upserted again,
-- never duplicated. The sink owns the table so that schema.evolution=basic can add new columns.
CREATE TABLE IF NOT EXISTS crypto_prices (
    __connect_topic     text             NOT NULL,
    __connect_partition integer          NOT NULL,
    __connect_offset    bigint           NOT NULL,
    symbol              text             NOT NULL,
    price               double precision NOT NULL,
    event_time          timestamptz      NOT NULL,
    volume              double precision,
    feed                text             NOT NULL,
    produced_at         timestamptz,
    producer_id         text,
    sequence            bigint,
    PRIMARY KEY (__connect_topic, __connect_partition, __connect_offset)
);
COMMENT ON TABLE crypto_prices IS 'Raw ticks landed by the Kafka Connect JDBC sink; one row per Kafka record.';
COMMENT ON COLUMN crypto_prices.feed IS 'STREAM, POLL or REPLAY = real prices; JITTER = synthetic (simulated between polls).';
CREATE INDEX IF NOT EXISTS crypto_prices_symbol_event_time ON crypto_prices (symbol, event_time);
SELECT format('ALTER TABLE crypto_prices OWNER TO %I', :'writer_role') \gexec

-- ---------------------------------------------------------------------------------------------
-- Candle rollup: one definition for every interval
-- ---------------------------------------------------------------------------------------------
-- Buckets are UTC-aligned (date_bin on timestamptz works on the absolute instant, so the session's
-- TimeZone never moves a bucket). Add a row here and re-run init.sql to get a new interval.
CREATE TABLE IF NOT EXISTS candle_intervals (
    resolution text     PRIMARY KEY,
    width      interval NOT NULL UNIQUE CHECK (width > interval '0' AND width <= interval '1 day')
);
INSERT INTO candle_intervals (resolution, width) VALUES
    ('1m', '1 minute'), ('5m', '5 minutes'), ('15m', '15 minutes'), ('1h', '1 hour'), ('1d', '1 day')
ON CONFLICT (resolution) DO NOTHING;

-- A point of the price path, as float8[] {event time in epoch microseconds, Kafka partition, Kafka
-- offset, price}: arrays compare element by element, so the built-in min()/max() pick the first and
-- last tick by event time, ties broken by arrival (ticks of one symbol share a partition). Every
-- element is an integer below 2^53 or the price itself, so float8 holds each exactly.
CREATE OR REPLACE FUNCTION candle_point(p_event_time timestamptz, p_partition integer, p_offset bigint,
                                        p_price double precision) RETURNS float8[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY[extract(epoch FROM p_event_time) * 1000000, p_partition, p_offset, p_price]::float8[]
$$;

-- Real and synthetic (JITTER) ticks are rolled up apart, so candles of real ticks only cost no
-- more than candles of all ticks; the views merge the two parts (at most two rows per candle).
CREATE TABLE IF NOT EXISTS candle_rollup (
    resolution text             NOT NULL REFERENCES candle_intervals ON DELETE CASCADE,
    symbol     text             NOT NULL,
    bucket     timestamptz      NOT NULL,
    synthetic  boolean          NOT NULL,
    first      float8[]         NOT NULL,
    last       float8[]         NOT NULL,
    high       double precision NOT NULL,
    low        double precision NOT NULL,
    volume     double precision NOT NULL,
    tick_count bigint           NOT NULL,
    PRIMARY KEY (resolution, symbol, bucket, synthetic)
) WITH (fillfactor = 70);  -- room for HOT updates: a candle row is rewritten by every batch
CREATE INDEX IF NOT EXISTS candle_rollup_resolution_bucket ON candle_rollup (resolution, bucket);
-- Power BI filters on bucket_utc (bucket AT TIME ZONE 'UTC', see the views): index that expression too,
-- so a date filter on either column is an index range.
CREATE INDEX IF NOT EXISTS candle_rollup_symbol_bucket_utc
    ON candle_rollup (resolution, symbol, (bucket AT TIME ZONE 'UTC'));
CREATE INDEX IF NOT EXISTS candle_rollup_bucket_utc ON candle_rollup (resolution, (bucket AT TIME ZONE 'UTC'));
COMMENT ON TABLE candle_rollup IS 'Incrementally maintained candles; read them through the view_crypto_candles* views.';
COMMENT ON COLUMN candle_rollup.first IS 'candle_point() of the opening tick: {epoch us, partition, offset, price}';

-- The origin every bucket is aligned to: a UTC midnight, so 1d candles run 00:00-24:00 UTC.
CREATE OR REPLACE FUNCTION candle_origin() RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT timestamptz '2000-01-01 00:00:00+00' $$;

-- The buckets the gap-filled views walk: for every symbol and interval, every bucket from its first
-- candle to its last, with or without ticks (one table for all symbols: the union of their spans).
-- A date filter is then an index range here, instead of a series generated over the whole history.
-- It only grows; a superset is harmless (the views clip it to each symbol's first and last candle).
CREATE TABLE IF NOT EXISTS candle_calendar (
    resolution text        NOT NULL REFERENCES candle_intervals ON DELETE CASCADE,
    bucket     timestamptz NOT NULL,
    PRIMARY KEY (resolution, bucket)
);
CREATE INDEX IF NOT EXISTS candle_calendar_bucket_utc ON candle_calendar (resolution, (bucket AT TIME ZONE 'UTC'));
COMMENT ON TABLE candle_calendar IS 'Every bucket from each symbol''s first candle to its last, per interval; read by the *_filled views.';

-- The buckets that must be in the calendar after candles of p_symbol were added in [p_lo, p_hi]:
-- from its previous candle before p_lo to its next candle after p_hi. Buckets between candles that
-- were already neighbours are in the calendar already, so streaming ticks cost two index probes and
-- about two buckets per symbol and interval, and a late tick older than all history only adds the
-- buckets up to the symbol's next candle.
DROP FUNCTION IF EXISTS candle_calendar_extend(timestamptz, timestamptz);
CREATE OR REPLACE FUNCTION candle_calendar_span(p_resolution text, p_symbol text, p_lo timestamptz,
                                                p_hi timestamptz) RETURNS SETOF timestamptz
    LANGUAGE sql STABLE AS $$
    SELECT generate_series(
        coalesce((SELECT max(r.bucket) FROM candle_rollup r
                   WHERE r.resolution = p_resolution AND r.symbol = p_symbol AND r.bucket < p_lo), p_lo),
        coalesce((SELECT min(r.bucket) FROM candle_rollup r
                   WHERE r.resolution = p_resolution AND r.symbol = p_symbol AND r.bucket > p_hi), p_hi),
        (SELECT i.width FROM candle_intervals i WHERE i.resolution = p_resolution))
$$;

-- The maintenance functions below run with jit = off: they run per sink statement on a few hundred
-- rows, and the planner's guesses (e.g. 1000 rows per generate_series) would otherwise make every
-- call pay ~150 ms of JIT compilation for a millisecond of work.

-- Merge the ticks one statement inserted into the candles of every interval: one upsert per
-- (interval, symbol, bucket) touched, however many ticks fell into it. The JDBC sink sends its
-- batches as multi-row INSERTs (reWriteBatchedInserts), so this runs once per ~100 ticks.
CREATE OR REPLACE FUNCTION candle_rollup_add_ticks() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET jit = off AS $$
DECLARE
    payload text;
    earliest timestamptz;
BEGIN
    WITH merged AS (
        INSERT INTO candle_rollup AS c (resolution, symbol, bucket, synthetic, first, last, high, low, volume, tick_count)
        SELECT i.resolution, t.symbol, date_bin(i.width, t.event_time, candle_origin()), t.feed = 'JITTER',
               min(candle_point(t.event_time, t.__connect_partition, t.__connect_offset, t.price)),
               max(candle_point(t.event_time, t.__connect_partition, t.__connect_offset, t.price)),
               max(t.price), min(t.price), coalesce(sum(t.volume), 0), count(*)
          FROM new_ticks t CROSS JOIN candle_intervals i
         GROUP BY 1, 2, 3, 4
        ON CONFLICT (resolution, symbol, bucket, synthetic) DO UPDATE SET
            first      = least(c.first, EXCLUDED.first),
            last       = greatest(c.last, EXCLUDED.last),
            high       = greatest(c.high, EXCLUDED.high),
            low        = least(c.low, EXCLUDED.low),
            volume     = c.volume + EXCLUDED.volume,
            tick_count = c.tick_count + EXCLUDED.tick_count
        RETURNING c.resolution, c.symbol, c.bucket, c.xmax = 0 AS is_new),
    -- Only a new candle can open a gap; spans are looked up in the rollup as it was before this
    -- statement, so the neighbours found are the candles that were there already.
    new_spans AS (
        SELECT resolution, symbol, min(bucket) AS lo, max(bucket) AS hi
          FROM merged WHERE is_new GROUP BY resolution, symbol)
    INSERT INTO candle_calendar (resolution, bucket)
    SELECT DISTINCT n.resolution, span.bucket
      FROM new_spans n
     CROSS JOIN LATERAL candle_calendar_span(n.resolution, n.symbol, n.lo, n.hi) AS span(bucket)
    ON CONFLICT DO NOTHING;
    -- Push contract (the chart page LISTENs): on commit, channel candles_changed gets a JSON object
    -- {symbol: earliest touched 1-minute bucket, ISO-8601 UTC}; {"*": earliest bucket overall} when
    -- that would not fit in a notification (8000 bytes).
    SELECT jsonb_object_agg(symbol, to_char(lo AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))::text, min(lo)
      INTO payload, earliest
      FROM (SELECT t.symbol, date_bin('1 minute', min(t.event_time), candle_origin()) AS lo
              FROM new_ticks t GROUP BY t.symbol) touched;
    IF octet_length(payload) > 7900 THEN
        payload := jsonb_build_object('*', to_char(earliest AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))::text;
    END IF;
    IF payload IS NOT NULL THEN
        PERFORM pg_notify('candles_changed', payload);
    END IF;
    RETURN NULL;
END $$;

-- Put every bucket between each symbol's first and last candle in the calendar (one symbol, or all):
-- after a rebuild, and once for candles that predate the calendar.
CREATE OR REPLACE FUNCTION candle_calendar_cover(p_symbol text DEFAULT NULL) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp SET jit = off AS $$
    INSERT INTO candle_calendar (resolution, bucket)
    SELECT DISTINCT s.resolution, g.bucket
      FROM (SELECT r.resolution, r.symbol, min(r.bucket) AS lo, max(r.bucket) AS hi
              FROM candle_rollup r
             WHERE p_symbol IS NULL OR r.symbol = p_symbol
             GROUP BY r.resolution, r.symbol) s
      JOIN candle_intervals i USING (resolution)
     CROSS JOIN LATERAL generate_series(s.lo, s.hi, i.width) AS g(bucket)
    ON CONFLICT DO NOTHING
$$;

-- Recompute candles from raw ticks (all of them, or one symbol's time range). The insert trigger
-- keeps the rollup exact; this covers the rare rest: a changed or deleted tick, or ticks bulk
-- loaded with the trigger disabled.
CREATE OR REPLACE FUNCTION rebuild_candles(p_symbol text DEFAULT NULL, p_from timestamptz DEFAULT NULL,
                                           p_to timestamptz DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET jit = off AS $$
DECLARE
    rebuilt bigint;
BEGIN
    DELETE FROM candle_rollup c
     USING candle_intervals i
     WHERE c.resolution = i.resolution
       AND (p_symbol IS NULL OR c.symbol = p_symbol)
       AND (p_from IS NULL OR c.bucket >= date_bin(i.width, p_from, candle_origin()))
       AND (p_to IS NULL OR c.bucket <= date_bin(i.width, p_to, candle_origin()));
    INSERT INTO candle_rollup (resolution, symbol, bucket, synthetic, first, last, high, low, volume, tick_count)
    SELECT i.resolution, t.symbol, date_bin(i.width, t.event_time, candle_origin()), t.feed = 'JITTER',
           min(candle_point(t.event_time, t.__connect_partition, t.__connect_offset, t.price)),
           max(candle_point(t.event_time, t.__connect_partition, t.__connect_offset, t.price)),
           max(t.price), min(t.price), coalesce(sum(t.volume), 0), count(*)
      FROM candle_intervals i
      JOIN crypto_prices t
        ON (p_symbol IS NULL OR t.symbol = p_symbol)
       AND (p_from IS NULL OR t.event_time >= date_bin(i.width, p_from, candle_origin()))
       AND (p_to IS NULL OR t.event_time < date_bin(i.width, p_to, candle_origin()) + i.width)
     GROUP BY 1, 2, 3, 4;
    GET DIAGNOSTICS rebuilt = ROW_COUNT;
    IF p_symbol IS NOT NULL AND p_from IS NOT NULL AND p_to IS NOT NULL THEN
        INSERT INTO candle_calendar (resolution, bucket)
        SELECT DISTINCT i.resolution, span.bucket
          FROM candle_intervals i
         CROSS JOIN LATERAL candle_calendar_span(i.resolution, p_symbol, date_bin(i.width, p_from, candle_origin()),
                                                 date_bin(i.width, p_to, candle_origin())) AS span(bucket)
        ON CONFLICT DO NOTHING;
    ELSE
        PERFORM candle_calendar_cover(p_symbol);
    END IF;
    RETURN rebuilt;
END $$;

-- Changed or deleted ticks: rebuild exactly the candles they belonged to (and now belong to).
-- A redelivered record is upserted with identical values and changes nothing: that costs one join.
CREATE OR REPLACE FUNCTION candle_rollup_change_ticks() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET jit = off AS $$
DECLARE
    touched record;
BEGIN
    FOR touched IN
        WITH changed AS (
            SELECT o.symbol AS old_symbol, o.event_time AS old_time, n.symbol AS new_symbol, n.event_time AS new_time
              FROM old_ticks o JOIN new_ticks n USING (__connect_topic, __connect_partition, __connect_offset)
             WHERE (o.symbol, o.price, o.event_time, o.volume, o.feed)
                   IS DISTINCT FROM (n.symbol, n.price, n.event_time, n.volume, n.feed))
        SELECT old_symbol AS symbol, old_time AS event_time FROM changed
        UNION
        SELECT new_symbol, new_time FROM changed
    LOOP
        PERFORM rebuild_candles(touched.symbol, touched.event_time, touched.event_time);
    END LOOP;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION candle_rollup_delete_ticks() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET jit = off AS $$
DECLARE
    touched record;
BEGIN
    FOR touched IN SELECT DISTINCT symbol, event_time FROM old_ticks LOOP
        PERFORM rebuild_candles(touched.symbol, touched.event_time, touched.event_time);
    END LOOP;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION candle_rollup_truncate() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET jit = off AS $$
BEGIN
    TRUNCATE candle_rollup, candle_calendar;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS crypto_prices_rollup_insert ON crypto_prices;
DROP TRIGGER IF EXISTS crypto_prices_rollup_update ON crypto_prices;
DROP TRIGGER IF EXISTS crypto_prices_rollup_delete ON crypto_prices;
DROP TRIGGER IF EXISTS crypto_prices_rollup_truncate ON crypto_prices;
CREATE TRIGGER crypto_prices_rollup_insert AFTER INSERT ON crypto_prices
    REFERENCING NEW TABLE AS new_ticks FOR EACH STATEMENT EXECUTE FUNCTION candle_rollup_add_ticks();
-- Transition tables allow one event per trigger: UPDATE and DELETE get a trigger each.
CREATE TRIGGER crypto_prices_rollup_update AFTER UPDATE ON crypto_prices
    REFERENCING OLD TABLE AS old_ticks NEW TABLE AS new_ticks
    FOR EACH STATEMENT EXECUTE FUNCTION candle_rollup_change_ticks();
CREATE TRIGGER crypto_prices_rollup_delete AFTER DELETE ON crypto_prices
    REFERENCING OLD TABLE AS old_ticks FOR EACH STATEMENT EXECUTE FUNCTION candle_rollup_delete_ticks();
CREATE TRIGGER crypto_prices_rollup_truncate AFTER TRUNCATE ON crypto_prices
    FOR EACH STATEMENT EXECUTE FUNCTION candle_rollup_truncate();

-- Ticks loaded before the rollup existed (an upgraded database): build their candles once.
SELECT 'SELECT rebuild_candles()'
 WHERE EXISTS (SELECT FROM crypto_prices) AND NOT EXISTS (SELECT FROM candle_rollup) \gexec
-- Candles built before the calendar existed: cover them.
SELECT 'SELECT candle_calendar_cover()'
 WHERE EXISTS (SELECT FROM candle_rollup) AND NOT EXISTS (SELECT FROM candle_calendar) \gexec

-- ---------------------------------------------------------------------------------------------
-- Candle views, generated for every interval from the one rollup
-- ---------------------------------------------------------------------------------------------
--   view_crypto_candles<suffix>         all ticks; synthetic_count says how many were JITTER
--   view_crypto_candles<suffix>_real    real ticks only (STREAM, POLL, REPLAY)
--   view_crypto_candles<suffix>_filled  all ticks, and every bucket between a symbol's first and
--                                       last candle: a bucket without ticks is a flat candle at the
--                                       previous close, volume 0, tick_count 0, is_gap_fill true
-- suffix: '' for 1m (view_crypto_candles), '_5m', '_15m', '_1h', '_1d'.
-- bucket is timestamptz (the instant); bucket_utc is the same instant as UTC wall-clock time, for
-- clients such as Power BI that convert timestamptz to the desktop's local time.
CREATE OR REPLACE FUNCTION candle_view_name(p_resolution text, p_variant text DEFAULT '') RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT 'view_crypto_candles' || CASE WHEN p_resolution = '1m' THEN '' ELSE '_' || p_resolution END || p_variant
$$;

DO $$
DECLARE
    iv record;
    all_view text;
BEGIN
    FOR iv IN SELECT resolution, width FROM candle_intervals ORDER BY width LOOP
        all_view := candle_view_name(iv.resolution);
        EXECUTE format($v$
            CREATE OR REPLACE VIEW %I AS
            SELECT symbol,
                   bucket,
                   (bucket AT TIME ZONE 'UTC') AS bucket_utc,
                   (min(first))[4] AS open,
                   max(high) AS high,
                   min(low) AS low,
                   (max(last))[4] AS close,
                   sum(volume) AS volume,
                   sum(tick_count)::bigint AS tick_count,
                   coalesce(sum(tick_count) FILTER (WHERE synthetic), 0)::bigint AS synthetic_count
              FROM candle_rollup
             WHERE resolution = %L
             GROUP BY symbol, bucket
        $v$, all_view, iv.resolution);
        EXECUTE format('COMMENT ON VIEW %I IS %L', all_view,
                       iv.resolution || ' OHLC candles (UTC buckets) of all ticks; synthetic_count = JITTER ticks in the candle');

        EXECUTE format($v$
            CREATE OR REPLACE VIEW %I AS
            SELECT symbol,
                   bucket,
                   (bucket AT TIME ZONE 'UTC') AS bucket_utc,
                   first[4] AS open,
                   high,
                   low,
                   last[4] AS close,
                   volume,
                   tick_count,
                   0::bigint AS synthetic_count
              FROM candle_rollup
             WHERE resolution = %L AND NOT synthetic
        $v$, candle_view_name(iv.resolution, '_real'), iv.resolution);
        EXECUTE format('COMMENT ON VIEW %I IS %L', candle_view_name(iv.resolution, '_real'),
                       iv.resolution || ' OHLC candles of real ticks only (JITTER excluded)');

        -- Gap filling walks candle_calendar from each symbol's first candle to its last; each bucket
        -- takes the latest candle at or before it, through the rollup's primary key. The span is
        -- stated on bucket and on bucket_utc alike, so whichever column a date filter uses, the
        -- filter and the span meet in one index range: the cost follows the rows returned.
        EXECUTE format($v$
            CREATE OR REPLACE VIEW %1$I AS
            SELECT s.symbol,
                   b.bucket,
                   (b.bucket AT TIME ZONE 'UTC') AS bucket_utc,
                   CASE WHEN c.bucket = b.bucket THEN c.open ELSE c.close END AS open,
                   CASE WHEN c.bucket = b.bucket THEN c.high ELSE c.close END AS high,
                   CASE WHEN c.bucket = b.bucket THEN c.low ELSE c.close END AS low,
                   c.close,
                   CASE WHEN c.bucket = b.bucket THEN c.volume ELSE 0 END AS volume,
                   CASE WHEN c.bucket = b.bucket THEN c.tick_count ELSE 0 END AS tick_count,
                   CASE WHEN c.bucket = b.bucket THEN c.synthetic_count ELSE 0 END AS synthetic_count,
                   c.bucket <> b.bucket AS is_gap_fill
              FROM (SELECT r.symbol,
                           (SELECT min(x.bucket) FROM candle_rollup x WHERE x.resolution = %3$L AND x.symbol = r.symbol) AS first_bucket,
                           (SELECT max(x.bucket) FROM candle_rollup x WHERE x.resolution = %3$L AND x.symbol = r.symbol) AS last_bucket
                      FROM (WITH RECURSIVE symbols(symbol) AS (
                                SELECT min(symbol) FROM candle_rollup WHERE resolution = %3$L
                                UNION ALL
                                SELECT (SELECT min(x.symbol) FROM candle_rollup x WHERE x.resolution = %3$L AND x.symbol > s.symbol)
                                  FROM symbols s WHERE s.symbol IS NOT NULL)
                            SELECT symbol FROM symbols WHERE symbol IS NOT NULL) r
                    OFFSET 0) s  -- each symbol's span is computed once, not once per bucket
              JOIN candle_calendar b
                ON b.resolution = %3$L
               AND b.bucket BETWEEN s.first_bucket AND s.last_bucket
               AND (b.bucket AT TIME ZONE 'UTC') BETWEEN (s.first_bucket AT TIME ZONE 'UTC') AND (s.last_bucket AT TIME ZONE 'UTC')
             CROSS JOIN LATERAL (
                    SELECT * FROM %2$I v
                     WHERE v.symbol = s.symbol
                       AND v.bucket = (SELECT x.bucket FROM candle_rollup x
                                        WHERE x.resolution = %3$L AND x.symbol = s.symbol AND x.bucket <= b.bucket
                                        ORDER BY x.bucket DESC LIMIT 1)
                     LIMIT 1) c  -- one candle per bucket; the LIMIT also keeps it a per-bucket lookup
        $v$, candle_view_name(iv.resolution, '_filled'), all_view, iv.resolution);
        EXECUTE format('COMMENT ON VIEW %I IS %L', candle_view_name(iv.resolution, '_filled'),
                       iv.resolution || ' OHLC candles with gaps filled: flat at the previous close, volume 0, is_gap_fill');
    END LOOP;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------------------------
-- Functions are executable by PUBLIC by default; only the table owner's triggers need these.
REVOKE ALL ON FUNCTION rebuild_candles(text, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION candle_rollup_add_ticks(), candle_rollup_change_ticks(), candle_rollup_delete_ticks(),
    candle_rollup_truncate(), candle_calendar_cover(text),
    candle_calendar_span(text, text, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;

-- The sink: its own table only (it owns crypto_prices; it may read the interval list).
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'writer_role') \gexec
SELECT format('GRANT SELECT ON candle_intervals TO %I', :'writer_role') \gexec

-- Power BI: the candle views and nothing else.
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'reader_role') \gexec
SELECT format('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %I', :'reader_role') \gexec
SELECT format('GRANT SELECT ON %I TO %I', c.relname, :'reader_role')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind = 'v' AND c.relname LIKE 'view\_crypto\_candles%' \gexec
