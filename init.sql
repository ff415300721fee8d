-- The schema of the crypto pipeline: tables, functions, views, roles and grants, as they are now. Idempotent:
-- scripts/init_db.sh applies it as the superuser on every start of either form, after the pending
-- migrations (migrations/NNNN_*.sql: what turns an older database into this shape; schema_migrations).
--
--   crypto_prices   raw ticks, written by the Kafka Connect JDBC sink (role CONNECT_DB_USER), partitioned by
--                   UTC day (crypto_prices_pYYYYMMDD, crypto_prices_default for days without a partition);
--                   the CHECK tick_contract is the tick contract (schemas/tick_contract.sql)
--   crypto_prices_rejected     the sink's rows that broke it all the same, and ticks of dropped days, set aside
--   crypto_prices_dropped_days the days retention dropped (raw_ticks_maintenance_step); their candles are final
--   crypto_prices_quarantine   (migrations/0002) rows an older database held that broke the contract
--   candle_rollup   1m/5m/15m/1h/1d candles maintained incrementally by a trigger on crypto_prices
--   candle_calendar the buckets from each symbol's first candle to its last, per interval (gap filling)
--   view_crypto_candles[_5m|_15m|_1h|_1d][_real|_filled]
--                   what Power BI reads (role POWERBI_DB_USER), with view_crypto_ticks / crypto_prices (raw ticks)
--
-- Roles (names from the environment through psql's \getenv, defaults as in .env):
--   DB_OWNER_ROLE    crypto_owner, NOLOGIN: owns every table, view, sequence and function of schema public;
--                    the trigger and maintenance functions run as it (SECURITY DEFINER). Nobody logs in as it.
--   CONNECT_DB_USER  crypto_writer, the sink: SELECT, INSERT and UPDATE (its upserts) on crypto_prices,
--                    nothing else (no DDL, no DELETE, no TRUNCATE, no trigger control).
--   POWERBI_DB_USER  powerbi_reader, Power BI: SELECT on the candle views and the raw ticks, read-only
--                    transactions, statement_timeout POWERBI_STATEMENT_TIMEOUT (its budget: the reader watchdog
--                    cancels a statement that outlives it even if the session SET it off), temp_file_limit
--                    POWERBI_TEMP_FILE_LIMIT (superuser-only: binding), at most POWERBI_CONNECTION_LIMIT sessions.
--   CHART_DB_USER    chart_reader, the chart page: the candle views, the same kind of budget, CHART_* settings.
--   READER_WATCHDOG_DB_USER  reader_watchdog (control/reader_watchdog.py): member of pg_read_all_stats and
--                    pg_signal_backend, read-only, no privilege on any table or view.
--   TICK_MAINTAINER_DB_USER  tick_maintainer (control/tick_maintenance.py): executes raw_ticks_maintenance_step().
-- Passwords (CONNECT_DB_PASSWORD, POWERBI_DB_PASSWORD, CHART_DB_PASSWORD, READER_WATCHDOG_DB_PASSWORD,
-- TICK_MAINTAINER_DB_PASSWORD) are needed only to create a role, and set only then: a password an admin
-- rotated later is never reset by a re-run.
\set ON_ERROR_STOP on

\getenv owner_role DB_OWNER_ROLE
\getenv writer_role CONNECT_DB_USER
\getenv writer_password CONNECT_DB_PASSWORD
\getenv reader_role POWERBI_DB_USER
\getenv reader_password POWERBI_DB_PASSWORD
\getenv reader_statement_timeout POWERBI_STATEMENT_TIMEOUT
\getenv reader_connection_limit POWERBI_CONNECTION_LIMIT
\getenv reader_temp_file_limit POWERBI_TEMP_FILE_LIMIT
\getenv chart_role CHART_DB_USER
\getenv chart_password CHART_DB_PASSWORD
\getenv chart_statement_timeout CHART_STATEMENT_TIMEOUT
\getenv chart_connection_limit CHART_CONNECTION_LIMIT
\getenv chart_temp_file_limit CHART_TEMP_FILE_LIMIT
\getenv watchdog_role READER_WATCHDOG_DB_USER
\getenv watchdog_password READER_WATCHDOG_DB_PASSWORD
\getenv maintainer_role TICK_MAINTAINER_DB_USER
\getenv maintainer_password TICK_MAINTAINER_DB_PASSWORD
\getenv premake_days RAW_TICKS_PREMAKE_DAYS
-- Names and budgets come from the settings (scripts/init_db.sh checks they are all set): no default here.
-- A password may be absent: a role that exists keeps its own.
\if :{?writer_password} \else \set writer_password '' \endif
\if :{?reader_password} \else \set reader_password '' \endif
\if :{?chart_password} \else \set chart_password '' \endif
\if :{?watchdog_password} \else \set watchdog_password '' \endif
\if :{?maintainer_password} \else \set maintainer_password '' \endif

-- ---------------------------------------------------------------------------------------------
-- Roles
-- ---------------------------------------------------------------------------------------------
-- pg_stat_statements records utility statements verbatim: keep the passwords below out of it.
SET pg_stat_statements.track_utility = off;
SELECT format('CREATE ROLE %I NOLOGIN', :'owner_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner_role') \gexec
SELECT format('ALTER ROLE %I NOLOGIN', :'owner_role') \gexec
-- The login roles, created with their password when missing (a missing password is an error then).
SELECT format('DO $e$ BEGIN RAISE EXCEPTION %L; END $e$',
              format('role %s does not exist and %s is not set: it is needed to create the role', r, var))
  FROM (VALUES (:'writer_role', :'writer_password', 'CONNECT_DB_PASSWORD'),
               (:'reader_role', :'reader_password', 'POWERBI_DB_PASSWORD'),
               (:'chart_role', :'chart_password', 'CHART_DB_PASSWORD'),
               (:'watchdog_role', :'watchdog_password', 'READER_WATCHDOG_DB_PASSWORD'),
               (:'maintainer_role', :'maintainer_password', 'TICK_MAINTAINER_DB_PASSWORD')) AS v(r, pw, var)
 WHERE pw = '' AND NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', r, pw)
  FROM (VALUES (:'writer_role', :'writer_password'), (:'reader_role', :'reader_password'),
               (:'chart_role', :'chart_password'), (:'watchdog_role', :'watchdog_password'),
               (:'maintainer_role', :'maintainer_password')) AS v(r, pw)
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec
-- The readers (Power BI's role, the chart's) can never write, even by mistake: every transaction they
-- open is read-only. DirectQuery sends many small queries; JIT would add ~100 ms to each and win nothing.
-- One bad visual cannot hold the database, whatever its session SETs: statement_timeout is the role's
-- budget (a session may SET it, so control/reader_watchdog.py cancels what outlives the role default);
-- temp_file_limit can be set by a superuser only, so the role default binds every session (a statement
-- spilling more fails); sessions are capped. work_mem stays a session setting (no bound but the spill's).
SELECT format('ALTER ROLE %I SET default_transaction_read_only = on', r),
       format('ALTER ROLE %I SET jit = off', r),
       format('ALTER ROLE %I SET statement_timeout = %L', r, timeout),
       format('ALTER ROLE %I SET temp_file_limit = %L', r, temp_limit),
       format('ALTER ROLE %I CONNECTION LIMIT %s', r, conn_limit::integer)
  FROM (VALUES (:'reader_role', :'reader_statement_timeout', :'reader_temp_file_limit', :'reader_connection_limit'),
               (:'chart_role', :'chart_statement_timeout', :'chart_temp_file_limit', :'chart_connection_limit'))
       AS v(r, timeout, temp_limit, conn_limit) \gexec
-- The watchdog: sees every session's statement (pg_read_all_stats) and may cancel a non-superuser's
-- (pg_signal_backend); reads no data (no grant below), writes nothing, holds two sessions at most.
SELECT format('GRANT pg_read_all_stats, pg_signal_backend TO %I', :'watchdog_role') \gexec
SELECT format('ALTER ROLE %I SET default_transaction_read_only = on', :'watchdog_role'),
       format('ALTER ROLE %I SET statement_timeout = %L', :'watchdog_role', '5s'),
       format('ALTER ROLE %I CONNECTION LIMIT 2', :'watchdog_role') \gexec
-- The tick maintainer (control/tick_maintenance.py, in the supervisor): runs raw_ticks_maintenance_step()
-- (which runs as the owner) and nothing else; one session, a minute per statement at most.
SELECT format('ALTER ROLE %I SET statement_timeout = %L', :'maintainer_role', '60s'),
       format('ALTER ROLE %I CONNECTION LIMIT 2', :'maintainer_role') \gexec
-- Only the sink and Power BI connect to this database (and the superuser); nobody else creates
-- objects or temporary tables in it, and in schema public only the owner role creates objects. The owner
-- role's functions stage candles in a temporary table of the session (candle_pending_prepare).
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT TEMPORARY ON DATABASE %I TO %I', current_database(), :'owner_role') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I, %I, %I, %I, %I', current_database(), :'writer_role', :'reader_role',
              :'chart_role', :'watchdog_role', :'maintainer_role') \gexec
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SELECT format('GRANT USAGE, CREATE ON SCHEMA public TO %I', :'owner_role') \gexec
COMMENT ON TABLE schema_migrations IS 'The migrations (migrations/NNNN_*.sql) applied to this database, by scripts/init_db.sh.';
-- Which statements clients really send (the sink's multi-row INSERTs, the chart's and Power BI's queries).
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

-- ---------------------------------------------------------------------------------------------
-- Ownership: everything in schema public belongs to the owner role
-- ---------------------------------------------------------------------------------------------
-- Objects of an existing database (created by the superuser, or crypto_prices by the writer, before the
-- owner role existed) are handed over first; then the rest of this file runs as the owner (SET ROLE),
-- so what it creates is the owner's; the privileges section hands over anything created otherwise.
-- Objects of extensions (pg_stat_statements) stay the superuser's.
CREATE OR REPLACE FUNCTION pg_temp.hand_over_public_objects(p_owner text) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    ddl text;
    moved integer := 0;
BEGIN
    FOR ddl IN
        SELECT format('ALTER %s %s OWNER TO %I',
                      CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                     WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, c.oid::regclass, p_owner)
          FROM pg_class c
         WHERE c.relnamespace = 'public'::regnamespace
           AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND pg_get_userbyid(c.relowner) <> p_owner
           AND NOT EXISTS (SELECT FROM pg_depend d
                            WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                              AND (d.deptype = 'e'                                    -- an extension's
                                   OR (c.relkind = 'S' AND d.deptype IN ('a', 'i')))) -- moves with its table
        UNION ALL
        SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, p_owner)
          FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace
           AND pg_get_userbyid(p.proowner) <> p_owner
           AND NOT EXISTS (SELECT FROM pg_depend d
                            WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE ddl;
        moved := moved + 1;
    END LOOP;
    RETURN moved;
END $$;
SELECT pg_temp.hand_over_public_objects(:'owner_role') AS handed_over \gset
SELECT format('SET ROLE %I', :'owner_role') \gexec

-- ---------------------------------------------------------------------------------------------
-- Raw ticks
-- ---------------------------------------------------------------------------------------------
-- One row per tick, keyed by what the tick IS, not by where it travelled: (symbol, event_time, price).
-- The sink upserts on that key (connector: primary.key.mode=record_value), so a redelivered record, a
-- replay of the same file, a producer restarted over the same window, or a recreated topic whose
-- offsets start again at 0 all land on the row the tick already has, and the first landing wins (see
-- crypto_prices_first_landing_wins below): candles count every tick once. The Kafka coordinates are
-- kept as lineage (Connect's InsertField transform) and break ties between equal event times.
-- The CHECK tick_contract is the tick contract (schemas/tick_contract.json, .env's TICK_MIN_EVENT_TIME;
-- see tick_contract_violation() below). Connect's TickContract transform sends violations to the dead-letter
-- topic before they get here; should one get through all the same (a looser transform config, a contract
-- changed in one place first), the sink's row is set aside in crypto_prices_rejected with its reason instead
-- of failing the sink's batch (crypto_prices_set_aside_contract_breakers); anyone else's insert is refused.
\ir schemas/tick_contract.sql

-- Partitioned by event time, one partition per UTC day (crypto_prices_pYYYYMMDD), so that retention drops
-- a whole day in constant time (raw_ticks_maintenance_step() below) and a query on recent ticks reads
-- recent partitions only. The tick key contains event_time, so it is unique across partitions.
CREATE TABLE IF NOT EXISTS crypto_prices (
    symbol              text             NOT NULL,
    event_time          timestamptz      NOT NULL,
    price               double precision NOT NULL,
    volume              double precision,
    feed                text             NOT NULL,
    produced_at         timestamptz,
    producer_id         text,
    sequence            bigint,
    __connect_topic     text,
    __connect_partition integer,
    __connect_offset    bigint,
    landed_at           timestamptz      DEFAULT now(),
    CONSTRAINT crypto_prices_tick_key PRIMARY KEY (symbol, event_time, price),
    CONSTRAINT tick_contract CHECK (tick_contract_violation(symbol, price, volume, feed, event_time) IS NULL)
) PARTITION BY RANGE (event_time);
COMMENT ON TABLE crypto_prices IS 'Raw ticks landed by the Kafka Connect JDBC sink; one row per tick (symbol, event_time, price); one partition per UTC day, kept RAW_TICKS_RETENTION_DAYS.';
COMMENT ON COLUMN crypto_prices.feed IS 'STREAM, POLL or REPLAY = real prices; JITTER = synthetic (simulated between polls).';
-- When a row landed: the sink never sends the column, so it is the time of the tick's first landing (its
-- upserts of the same tick change nothing). `scripts/stack.sh status` counts the last minute's rows through
-- a BRIN index (a few pages per partition; rows are appended in landing order).
COMMENT ON COLUMN crypto_prices.landed_at IS 'When the tick first landed (the database''s clock, start of the writing transaction).';
CREATE INDEX IF NOT EXISTS crypto_prices_landed_at ON crypto_prices USING brin (landed_at) WITH (autosummarize = on);
-- A time range over every symbol (Power BI's raw ticks without a symbol filter): the key leads with the
-- symbol, so a BRIN on event_time (ticks arrive nearly in event-time order; a few pages) serves it.
CREATE INDEX IF NOT EXISTS crypto_prices_event_time ON crypto_prices USING brin (event_time) WITH (autosummarize = on);
-- A tick whose day has no partition yet (a backfill, a replay of an old recording) lands here, visible and in
-- its candles at once; the maintenance moves it into a partition of its day, or expires it (older than the
-- retention). A tick of a day retention already dropped is set aside instead (crypto_prices_set_aside_dropped_day).
CREATE TABLE IF NOT EXISTS crypto_prices_default PARTITION OF crypto_prices DEFAULT;
COMMENT ON TABLE crypto_prices_default IS 'Ticks whose UTC day has no partition yet; raw_ticks_maintenance_step() moves them into one (or expires them).';

-- The sink's ticks that break the contract all the same, set aside instead of failing its batch (which
-- would fail the task again after every restart), with the reason and the record's Kafka coordinates
-- (unique: a redelivered record is set aside once). Written by crypto_prices_set_aside() below.
CREATE TABLE IF NOT EXISTS crypto_prices_rejected (
    rejected_at         timestamptz NOT NULL DEFAULT now(),
    reason              text        NOT NULL,
    tick                jsonb       NOT NULL,
    __connect_topic     text,
    __connect_partition integer,
    __connect_offset    bigint
);
CREATE UNIQUE INDEX IF NOT EXISTS crypto_prices_rejected_record
    ON crypto_prices_rejected (__connect_topic, __connect_partition, __connect_offset);
COMMENT ON TABLE crypto_prices_rejected IS 'Ticks the sink wrote that broke the tick contract: set aside with the reason (tick_contract_violation) and the Kafka record they came from, instead of failing the sink.';

-- The UTC days whose raw ticks retention removed (a partition dropped, or old ticks expired from the default
-- partition). Their candles are final: rebuild_candles() never touches them, and a tick of such a day that
-- arrives later is set aside (reason raw_ticks_dropped), not counted.
CREATE TABLE IF NOT EXISTS crypto_prices_dropped_days (
    day        date        PRIMARY KEY,
    dropped_at timestamptz NOT NULL DEFAULT now(),
    bytes      bigint
);
COMMENT ON TABLE crypto_prices_dropped_days IS 'UTC days whose raw ticks retention dropped; their candles are final (bytes: the partition''s size when dropped, NULL for expired default-partition rows).';

-- ---------------------------------------------------------------------------------------------
-- Candle rollup: one definition for every interval
-- ---------------------------------------------------------------------------------------------
-- Buckets are UTC-aligned (date_bin on timestamptz works on the absolute instant, so the session's
-- TimeZone never moves a bucket). Every width is whole minutes and divides a day, so a 1-minute
-- candle lies in exactly one bucket of each interval and a UTC day holds whole buckets of each.
-- max_fill: the gap-filled views fill at most this many empty buckets after a candle (a longer
-- silence shows as a gap), which bounds the calendar work any one tick can cause.
-- Add a row here and re-run init.sql (scripts/init_db.sh) to get a new interval, then rebuild_candles().
CREATE TABLE IF NOT EXISTS candle_intervals (
    resolution text     PRIMARY KEY,
    width      interval NOT NULL UNIQUE CHECK (width > interval '0' AND width <= interval '1 day'),
    max_fill   integer  NOT NULL DEFAULT 1440 CHECK (max_fill >= 0),
    CONSTRAINT candle_width_nests_in_a_day
        CHECK (width >= interval '1 minute' AND extract(epoch FROM width)::bigint % 60 = 0
               AND 86400 % extract(epoch FROM width)::bigint = 0)
);
INSERT INTO candle_intervals (resolution, width, max_fill) VALUES
    ('1m', '1 minute', 1440), ('5m', '5 minutes', 2016), ('15m', '15 minutes', 2880), ('1h', '1 hour', 2160),
    ('1d', '1 day', 1830)
ON CONFLICT (resolution) DO NOTHING;
COMMENT ON TABLE candle_intervals IS 'The candle intervals (resolution, width); each gets its views view_crypto_candles_<resolution>[_real|_filled].';
COMMENT ON COLUMN candle_intervals.max_fill IS 'Gap-filled views fill at most this many empty buckets after a candle (1m: a day, 1d: five years).';

-- A point of the price path, as float8[] {event time in epoch seconds, Kafka partition, Kafka offset,
-- price}: arrays compare element by element, so the built-in min()/max() pick the first and last tick
-- by event time, ties broken by arrival (ticks of one symbol share a partition). date_part's float8
-- keeps distinct microseconds distinct (its spacing is < 1 us until 2106) and costs a tenth of
-- extract(), whose numeric result made this the rollup's most expensive step; only the order of the
-- first element and the price are ever read back. (AT TIME ZONE 'UTC' keeps the function immutable,
-- hence inlined into the aggregation; the epoch is the same whatever the session's TimeZone.)
CREATE OR REPLACE FUNCTION candle_point(p_event_time timestamptz, p_partition integer, p_offset bigint,
                                        p_price double precision) RETURNS float8[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY[date_part('epoch', p_event_time AT TIME ZONE 'UTC'), coalesce(p_partition, 0), coalesce(p_offset, 0),
                 p_price]
$$;

-- One row per candle: all of its ticks, and apart, its real ticks (feed other than JITTER; real_* NULL when
-- it has none), so the views of either are one index range with no aggregation (Power BI's shapes read
-- thousands of candles; merging a real and a synthetic row per candle at read time cost 2x).
CREATE TABLE IF NOT EXISTS candle_rollup (
    resolution      text             NOT NULL REFERENCES candle_intervals ON DELETE CASCADE,
    symbol          text             NOT NULL,
    bucket          timestamptz      NOT NULL,
    first           float8[]         NOT NULL,
    last            float8[]         NOT NULL,
    high            double precision NOT NULL,
    low             double precision NOT NULL,
    volume          double precision NOT NULL,
    tick_count      bigint           NOT NULL,
    synthetic_count bigint           NOT NULL,
    real_first      float8[],
    real_last       float8[],
    real_high       double precision,
    real_low        double precision,
    real_volume     double precision NOT NULL,
    PRIMARY KEY (resolution, symbol, bucket)
) WITH (fillfactor = 70);  -- room for HOT updates: a candle row is rewritten by every batch
CREATE INDEX IF NOT EXISTS candle_rollup_resolution_bucket ON candle_rollup (resolution, bucket);
-- Power BI filters on bucket_utc (bucket AT TIME ZONE 'UTC', see the views): index that expression too,
-- so a date filter on either column is an index range.
CREATE INDEX IF NOT EXISTS candle_rollup_symbol_bucket_utc
    ON candle_rollup (resolution, symbol, (bucket AT TIME ZONE 'UTC'));
CREATE INDEX IF NOT EXISTS candle_rollup_bucket_utc ON candle_rollup (resolution, (bucket AT TIME ZONE 'UTC'));
COMMENT ON TABLE candle_rollup IS 'Incrementally maintained candles; read them through the view_crypto_candles* views.';
COMMENT ON COLUMN candle_rollup.first IS 'candle_point() of the opening tick: {epoch s, partition, offset, price}';
COMMENT ON COLUMN candle_rollup.synthetic_count IS 'JITTER ticks among tick_count; the real_* columns describe the others (NULL: none)';

-- The origin every bucket is aligned to: a UTC midnight, so 1d candles run 00:00-24:00 UTC.
CREATE OR REPLACE FUNCTION candle_origin() RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT timestamptz '2000-01-01 00:00:00+00' $$;

-- The buckets the gap-filled views walk, per interval: every bucket of a candle and the empty buckets
-- after it, at most max_fill of them, up to the symbol's next candle (one table for all symbols: the
-- union of their spans). A date filter is then an index range here, instead of a series generated
-- over the whole history. It only grows; a superset is harmless (the views clip it per symbol).
CREATE TABLE IF NOT EXISTS candle_calendar (
    resolution text        NOT NULL REFERENCES candle_intervals ON DELETE CASCADE,
    bucket     timestamptz NOT NULL,
    PRIMARY KEY (resolution, bucket)
);
CREATE INDEX IF NOT EXISTS candle_calendar_bucket_utc ON candle_calendar (resolution, (bucket AT TIME ZONE 'UTC'));
COMMENT ON TABLE candle_calendar IS 'Buckets of candles and up to max_fill empty buckets after each, per interval; read by the *_filled views.';

-- Rebuilding candles feeds ticks through the very function that merges the sink's ticks: inserting
-- them here fires it (candle_stage_ticks below), so a candle has one definition, wherever it is made.
CREATE UNLOGGED TABLE IF NOT EXISTS candle_replay (
    symbol              text             NOT NULL,
    event_time          timestamptz      NOT NULL,
    price               double precision NOT NULL,
    volume              double precision,
    feed                text             NOT NULL,
    __connect_partition integer,
    __connect_offset    bigint
);
COMMENT ON TABLE candle_replay IS 'Always empty: rebuild_candles() inserts ticks here so the merge trigger re-makes their candles.';

-- The maintenance functions below run with jit = off: they run per sink statement or transaction on a few
-- hundred rows, and the planner's guesses would otherwise make a call pay ~150 ms of JIT for a millisecond of work.

-- THE candle definition, in two steps, so that a transaction's candles are upserted once, at its commit:
-- the sink's driver splits each put() of up to 2,000 records into statements of at most 128 rows
-- (pgjdbc's reWriteBatchedInserts), and upserting every touched candle of every interval per statement
-- upserted the same candles ~17 times per put: 1.0 ms per statement with ticks 0.1 ms apart, 2.4 ms at
-- 100 ms, where each statement touches more candles (pg_stat_statements of 3 sink tasks). Per transaction,
-- the rollup costs the sink 3-4x less (bench/results/pipeline_sweep.md).
-- 1. candle_stage_ticks, the statement trigger: the statement's ticks are aggregated once, into 1-minute
--    partial candles, with scalar aggregates only (first and last event time, high, low, volume, count);
--    candle_point() is built only for the ticks at a partial's first or last event time (a hash join back
--    to the statement's ticks: a few per partial, not two arrays per tick). The partials wait in
--    pg_temp.candle_pending, a temporary table of the session; the transaction's first stage queues its
--    merge (candle_queue_merge: a deferred constraint trigger, candle_merge_at_commit).
-- 2. candle_merge_pending, at commit (and first thing wherever candles are rewritten: rebuild_candles,
--    TRUNCATE): min/max of candle_point pick open and close, ties by Kafka coordinates; every interval's
--    partials are derived from the 1-minute ones (open/close by min/max of candle_point, high, low, volume
--    and count combine, for all ticks and for the real ones), then upserted, one row per (interval,
--    symbol, bucket) the transaction touched. Every combination is a min, max or sum, so partials merge in
--    any grouping and order: per statement or per transaction, the candles are the same.
-- Other sessions see a transaction's candles when it commits, as its ticks; the transaction itself sees
-- them only then too. (A transaction that staged candles cannot be PREPAREd: it used a temporary table.)
-- work_mem: the planner cannot count a statement's ticks per bucket, and with the default it sorts
-- (spilling to disk) where hashing a few thousand groups in memory is what a COPY needs. Per new candle the
-- calendar gains at most 2 x max_fill buckets per interval; so the work a statement causes is bounded
-- by its ticks and its new candles, however late or far-dated a tick is. plan_cache_mode: the calendar
-- statement takes the new candles as array parameters, and the plan cache planned it again at every call
-- (a custom plan: 0.75 ms of planning for 0.5 ms of work, when it ran per statement); its generic plan
-- probes the calendar once per bucket (LATERAL ... LIMIT 1, where a NOT EXISTS let the generic plan hash
-- the whole calendar). Listeners (the chart page) are told which symbols changed, from which 1-minute
-- bucket on, once per transaction: NOTIFY candles_changed.
CREATE OR REPLACE FUNCTION candle_pending_prepare() RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    -- The session's first stage, or a rollback took them. Rows stay at commit: a merge deletes the ones it
    -- merged, and a rolled-back transaction's are dead. (ON COMMIT DELETE ROWS truncated both tables, their
    -- indexes and TOAST at every commit: 2.6-2.8 ms of a sink transaction's ~5-10 ms for candles.)
    CREATE TEMP TABLE IF NOT EXISTS candle_pending (
        symbol     text             NOT NULL,
        bucket     timestamptz      NOT NULL,
        synthetic  boolean          NOT NULL,
        first      float8[]         NOT NULL,
        last       float8[]         NOT NULL,
        high       double precision NOT NULL,
        low        double precision NOT NULL,
        volume     double precision NOT NULL,
        tick_count bigint           NOT NULL
    );
    -- A row per merge queued: inserting it queues candle_merge_at_commit, which deletes it.
    CREATE TEMP TABLE IF NOT EXISTS candle_merge_queue (queued boolean NOT NULL);
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'pg_temp.candle_merge_queue'::regclass) THEN
        CREATE CONSTRAINT TRIGGER candle_merge_at_commit AFTER INSERT ON pg_temp.candle_merge_queue
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION candle_merge_at_commit();
    END IF;
END $$;

-- Queues this transaction's merge after its first stage, once until the merge runs: at commit, or at the end
-- of this very insert under SET CONSTRAINTS ALL IMMEDIATE, after which the next stage queues another. The
-- mark is a setting local to the transaction, so a rollback (to a savepoint too) clears it with the rows
-- staged since.
CREATE OR REPLACE FUNCTION candle_queue_merge() RETURNS void
    LANGUAGE plpgsql AS $$  -- called by candle_stage_ticks, as the owner
BEGIN
    -- No merge is queued, so the queue holds only dead rows (merged or rolled back), which autovacuum
    -- never visits in a temporary table: start it afresh now and then.
    IF pg_relation_size('pg_temp.candle_merge_queue') > 262144 THEN
        TRUNCATE pg_temp.candle_merge_queue;
    END IF;
    PERFORM set_config('cryptopipe.candle_merge_queued', 'on', true);
    INSERT INTO pg_temp.candle_merge_queue VALUES (true);
END $$;

CREATE OR REPLACE FUNCTION candle_stage_ticks() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET jit = off SET work_mem = '64MB' AS $$
BEGIN
    IF to_regclass('pg_temp.candle_merge_queue') IS NULL THEN
        PERFORM candle_pending_prepare();
    END IF;
    WITH span AS MATERIALIZED (  -- one pass over the ticks, scalar aggregates only
        SELECT t.symbol, date_bin(interval '1 minute', t.event_time, candle_origin()) AS bucket,
               t.feed = 'JITTER' AS synthetic, min(t.event_time) AS first_at, max(t.event_time) AS last_at,
               max(t.price) AS high, min(t.price) AS low, coalesce(sum(t.volume), 0) AS volume, count(*) AS tick_count
          FROM new_ticks t
         GROUP BY 1, 2, 3),
    ends AS (  -- candle_point() only for the ticks at a partial candle's first or last event time
        SELECT t.symbol, t.feed = 'JITTER' AS synthetic, t.event_time,
               min(candle_point(t.event_time, t.__connect_partition, t.__connect_offset, t.price)) AS first,
               max(candle_point(t.event_time, t.__connect_partition, t.__connect_offset, t.price)) AS last
          FROM new_ticks t
          JOIN (SELECT symbol, synthetic, first_at AS at FROM span
                UNION
                SELECT symbol, synthetic, last_at FROM span) e
            ON e.symbol = t.symbol AND e.synthetic = (t.feed = 'JITTER') AND e.at = t.event_time
         GROUP BY 1, 2, 3),
    minute AS (
        SELECT s.symbol, s.bucket, s.synthetic, f.first, l.last, s.high, s.low, s.volume, s.tick_count
          FROM span s
          JOIN ends f ON f.symbol = s.symbol AND f.synthetic = s.synthetic AND f.event_time = s.first_at
          JOIN ends l ON l.symbol = s.symbol AND l.synthetic = s.synthetic AND l.event_time = s.last_at)
    INSERT INTO pg_temp.candle_pending (symbol, bucket, synthetic, first, last, high, low, volume, tick_count)
    SELECT * FROM minute;
    IF current_setting('cryptopipe.candle_merge_queued', true) IS DISTINCT FROM 'on' THEN
        PERFORM candle_queue_merge();  -- the transaction's first stage (since its last merge)
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION candle_merge_pending() RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET jit = off
    SET work_mem = '64MB' SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    new_resolution text[];
    new_symbol     text[];
    new_bucket     timestamptz[];
    cal_resolution text[];
    cal_bucket     timestamptz[];
    changed        jsonb;
BEGIN
    IF to_regclass('pg_temp.candle_pending') IS NULL THEN
        RETURN;
    END IF;
    WITH minute AS (DELETE FROM pg_temp.candle_pending RETURNING *),  -- each partial is merged once
    partial AS (
        SELECT i.resolution, m.symbol, date_bin(i.width, m.bucket, candle_origin()) AS bucket,
               min(m.first) AS first, max(m.last) AS last, max(m.high) AS high, min(m.low) AS low,
               sum(m.volume) AS volume, sum(m.tick_count)::bigint AS tick_count,
               coalesce(sum(m.tick_count) FILTER (WHERE m.synthetic), 0)::bigint AS synthetic_count,
               min(m.first) FILTER (WHERE NOT m.synthetic) AS real_first,
               max(m.last) FILTER (WHERE NOT m.synthetic) AS real_last,
               max(m.high) FILTER (WHERE NOT m.synthetic) AS real_high,
               min(m.low) FILTER (WHERE NOT m.synthetic) AS real_low,
               coalesce(sum(m.volume) FILTER (WHERE NOT m.synthetic), 0) AS real_volume
          FROM minute m CROSS JOIN candle_intervals i
         GROUP BY 1, 2, 3),
    merged AS (  -- least/greatest skip NULLs: real_* of a candle without real ticks stay NULL until one comes
        INSERT INTO candle_rollup AS c (resolution, symbol, bucket, first, last, high, low, volume, tick_count,
                                        synthetic_count, real_first, real_last, real_high, real_low, real_volume)
        SELECT * FROM partial
         ORDER BY resolution, symbol, bucket  -- one lock order for concurrent sink tasks
        ON CONFLICT (resolution, symbol, bucket) DO UPDATE SET
            first           = least(c.first, EXCLUDED.first),
            last            = greatest(c.last, EXCLUDED.last),
            high            = greatest(c.high, EXCLUDED.high),
            low             = least(c.low, EXCLUDED.low),
            volume          = c.volume + EXCLUDED.volume,
            tick_count      = c.tick_count + EXCLUDED.tick_count,
            synthetic_count = c.synthetic_count + EXCLUDED.synthetic_count,
            real_first      = least(c.real_first, EXCLUDED.real_first),
            real_last       = greatest(c.real_last, EXCLUDED.real_last),
            real_high       = greatest(c.real_high, EXCLUDED.real_high),
            real_low        = least(c.real_low, EXCLUDED.real_low),
            real_volume     = c.real_volume + EXCLUDED.real_volume
        RETURNING c.resolution, c.symbol, c.bucket, c.xmax = 0 AS is_new),
    fresh AS (SELECT resolution, symbol, bucket FROM merged WHERE is_new)
    SELECT (SELECT array_agg(resolution) FROM fresh), (SELECT array_agg(symbol) FROM fresh),
           (SELECT array_agg(bucket) FROM fresh),
           (SELECT jsonb_object_agg(symbol, to_char(first_bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
              FROM (SELECT symbol, min(bucket) AS first_bucket FROM merged WHERE resolution = '1m' GROUP BY symbol) s)
      INTO new_resolution, new_symbol, new_bucket, changed;

    IF new_bucket IS NOT NULL THEN
        -- The new candles are visible now: for each, its own bucket, the gap after the candle before it
        -- (up to it) and the gap after it (up to the next candle), each at most max_fill buckets.
        SELECT array_agg(w.resolution ORDER BY w.resolution, w.bucket), array_agg(w.bucket ORDER BY w.resolution, w.bucket)
          INTO cal_resolution, cal_bucket
          FROM (SELECT DISTINCT n.resolution, span.bucket
                  FROM unnest(new_resolution, new_symbol, new_bucket) AS n(resolution, symbol, bucket)
                  JOIN candle_intervals i USING (resolution)
                 CROSS JOIN LATERAL (
                        SELECT (SELECT r.bucket FROM candle_rollup r
                                 WHERE r.resolution = n.resolution AND r.symbol = n.symbol AND r.bucket < n.bucket
                                 ORDER BY r.bucket DESC LIMIT 1) AS prev,
                               (SELECT r.bucket FROM candle_rollup r
                                 WHERE r.resolution = n.resolution AND r.symbol = n.symbol AND r.bucket > n.bucket
                                 ORDER BY r.bucket LIMIT 1) AS next
                        OFFSET 0) nb  -- kept a subquery: each lookup runs once per candle, not once per use
                 CROSS JOIN LATERAL (
                        SELECT n.bucket
                        UNION ALL
                        SELECT generate_series(nb.prev + i.width, least(n.bucket - i.width, nb.prev + i.width * i.max_fill), i.width)
                         WHERE nb.prev IS NOT NULL
                        UNION ALL
                        SELECT generate_series(n.bucket + i.width, least(nb.next - i.width, n.bucket + i.width * i.max_fill), i.width)
                         WHERE nb.next IS NOT NULL) AS span(bucket)) w
          LEFT JOIN LATERAL (SELECT true AS present FROM candle_calendar c  -- a probe per bucket, whatever the plan
                              WHERE c.resolution = w.resolution AND c.bucket = w.bucket LIMIT 1) known ON true
         WHERE known.present IS NULL;
        IF cal_bucket IS NOT NULL THEN
            -- The calendar is shared by every symbol, so concurrent sink tasks (each with its own symbols)
            -- insert the same buckets; an insert waits for another transaction's uncommitted insert of the
            -- same bucket, and two tasks whose transactions add buckets in opposite orders (a late tick,
            -- symbols with different clocks) would deadlock. One lock per transaction for adding buckets
            -- rules that out: a task that adds buckets first waits until no other transaction holds
            -- uncommitted ones. Most statements add none (a bucket is added once for all symbols), and
            -- they take no lock.
            PERFORM pg_advisory_xact_lock(hashtext('cryptopipe.candle_calendar'));
            INSERT INTO candle_calendar (resolution, bucket)
            SELECT * FROM unnest(cal_resolution, cal_bucket)
            ON CONFLICT DO NOTHING;
        END IF;
    END IF;

    IF changed IS NOT NULL THEN
        PERFORM pg_notify('candles_changed', CASE WHEN octet_length(changed::text) <= 7900 THEN changed::text
            ELSE jsonb_build_object('*', (SELECT min(value #>> '{}') FROM jsonb_each(changed)))::text END);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION candle_merge_at_commit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    DELETE FROM pg_temp.candle_merge_queue;
    PERFORM set_config('cryptopipe.candle_merge_queued', 'off', true);  -- the next stage queues another
    PERFORM candle_merge_pending();
    -- Merged partials are deleted rows, which autovacuum never visits in a temporary table, and none is live
    -- now: start the table afresh now and then.
    IF pg_relation_size('pg_temp.candle_pending') > 1048576 THEN
        TRUNCATE pg_temp.candle_pending;
    END IF;
    RETURN NULL;
END $$;

-- Recompute candles from raw ticks: all of them, or one symbol's (and/or a time range's) whole UTC
-- days (every interval's buckets nest in a day, so whole candles are rebuilt). The insert trigger keeps
-- the rollup exact; this covers the rest: a corrected or deleted tick, ticks bulk loaded with the
-- trigger disabled, a new interval. Days whose raw ticks retention dropped (crypto_prices_dropped_days) and
-- every day before the newest of them are never rebuilt: their candles are all that is left of them.
-- Returns the number of ticks re-merged.
CREATE OR REPLACE FUNCTION rebuild_candles(p_symbol text DEFAULT NULL, p_from timestamptz DEFAULT NULL,
                                p_to timestamptz DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET jit = off AS $$
DECLARE
    lo timestamptz := date_bin(interval '1 day', p_from, candle_origin());
    hi timestamptz := date_bin(interval '1 day', p_to, candle_origin()) + interval '1 day';
    kept_from timestamptz := (SELECT (max(day) + 1)::timestamp AT TIME ZONE 'UTC' FROM crypto_prices_dropped_days);
    merged bigint;
BEGIN
    IF kept_from IS NOT NULL THEN
        lo := greatest(lo, kept_from);  -- greatest() ignores NULL: rebuilding "all" starts at kept_from
        IF hi <= lo THEN
            RETURN 0;
        END IF;
    END IF;
    LOCK TABLE candle_replay IN ACCESS EXCLUSIVE MODE;  -- one rebuild at a time
    PERFORM candle_merge_pending();  -- this transaction's staged ticks are in crypto_prices: not twice
    DELETE FROM candle_rollup
     WHERE (p_symbol IS NULL OR symbol = p_symbol) AND (lo IS NULL OR bucket >= lo) AND (hi IS NULL OR bucket < hi);
    INSERT INTO candle_replay (symbol, event_time, price, volume, feed, __connect_partition, __connect_offset)
    SELECT symbol, event_time, price, volume, feed, __connect_partition, __connect_offset
      FROM crypto_prices
     WHERE (p_symbol IS NULL OR symbol = p_symbol) AND (lo IS NULL OR event_time >= lo) AND (hi IS NULL OR event_time < hi);
    GET DIAGNOSTICS merged = ROW_COUNT;
    PERFORM candle_merge_pending();  -- the candles are rebuilt when this returns, not at commit
    TRUNCATE candle_replay;
    RETURN merged;
END $$;

-- The sink never changes a landed tick: its upsert of a tick it already has (a redelivered or
-- re-produced record: same symbol, event time and price) is skipped row by row, so the first landing
-- wins and lineage and candles stay as they were; and no UPDATE of its own can move or re-price a tick
-- (created below with the sink role's name; other roles' UPDATEs are corrections and rebuild candles).
CREATE OR REPLACE FUNCTION crypto_prices_keep_first_landing() RETURNS trigger
    LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;

-- A row of the sink that breaks the contract, or (trigger argument 'dropped_days', on the default partition)
-- any row of a day whose raw ticks retention dropped: into crypto_prices_rejected with the reason, not into
-- crypto_prices (returning NULL skips the row; the statement goes on with the next).
CREATE OR REPLACE FUNCTION crypto_prices_set_aside() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    reason text := 'raw_ticks_dropped';
BEGIN
    IF TG_NARGS = 0 OR TG_ARGV[0] <> 'dropped_days' THEN
        reason := tick_contract_violation(NEW.symbol, NEW.price, NEW.volume, NEW.feed, NEW.event_time);
    ELSIF tick_contract_violation(NEW.symbol, NEW.price, NEW.volume, NEW.feed, NEW.event_time) IS NOT NULL
          OR NOT EXISTS (SELECT FROM crypto_prices_dropped_days WHERE day = (NEW.event_time AT TIME ZONE 'UTC')::date) THEN
        RETURN NEW;  -- the CHECK refuses a contract breaker; a day without a partition yet: the tick waits here
    END IF;
    INSERT INTO crypto_prices_rejected (reason, tick, __connect_topic, __connect_partition, __connect_offset)
    VALUES (coalesce(reason, 'unknown'), to_jsonb(NEW), NEW.__connect_topic, NEW.__connect_partition, NEW.__connect_offset)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

-- Corrected or deleted ticks (an administrator's UPDATE or DELETE): rebuild the whole UTC days of
-- candles they belonged to, and now belong to.
CREATE OR REPLACE FUNCTION candle_rebuild_changed_days() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET jit = off AS $$
DECLARE
    touched record;
BEGIN
    FOR touched IN
        SELECT DISTINCT symbol, date_bin(interval '1 day', event_time, candle_origin()) AS day FROM old_ticks
        UNION
        SELECT DISTINCT symbol, date_bin(interval '1 day', event_time, candle_origin()) FROM new_ticks
    LOOP
        PERFORM rebuild_candles(touched.symbol, touched.day, touched.day);
    END LOOP;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION candle_rebuild_deleted_days() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET jit = off AS $$
DECLARE
    touched record;
BEGIN
    FOR touched IN SELECT DISTINCT symbol, date_bin(interval '1 day', event_time, candle_origin()) AS day FROM old_ticks LOOP
        PERFORM rebuild_candles(touched.symbol, touched.day, touched.day);
    END LOOP;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION candle_rollup_truncate() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET jit = off AS $$
BEGIN
    PERFORM candle_merge_pending();  -- partials staged before the TRUNCATE go with the rest
    TRUNCATE candle_rollup, candle_calendar, crypto_prices_dropped_days;  -- everything starts over
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS crypto_prices_rollup_insert ON crypto_prices;
DROP TRIGGER IF EXISTS crypto_prices_rollup_update ON crypto_prices;
DROP TRIGGER IF EXISTS crypto_prices_rollup_delete ON crypto_prices;
DROP TRIGGER IF EXISTS crypto_prices_rollup_truncate ON crypto_prices;
DROP TRIGGER IF EXISTS crypto_prices_first_landing_wins ON crypto_prices;
DROP TRIGGER IF EXISTS crypto_prices_set_aside_contract_breakers ON crypto_prices;
DROP TRIGGER IF EXISTS candle_replay_merge ON candle_replay;
CREATE TRIGGER crypto_prices_rollup_insert AFTER INSERT ON crypto_prices
    REFERENCING NEW TABLE AS new_ticks FOR EACH STATEMENT EXECUTE FUNCTION candle_stage_ticks();
CREATE TRIGGER candle_replay_merge AFTER INSERT ON candle_replay
    REFERENCING NEW TABLE AS new_ticks FOR EACH STATEMENT EXECUTE FUNCTION candle_stage_ticks();
SELECT format($t$CREATE TRIGGER crypto_prices_first_landing_wins BEFORE UPDATE ON crypto_prices FOR EACH ROW
    WHEN (current_user = %L) EXECUTE FUNCTION crypto_prices_keep_first_landing()$t$, :'writer_role') \gexec
-- The sink's rows that break the contract go to crypto_prices_rejected, and the rest of its batch lands; the
-- condition is the CHECK's own expression, evaluated per row (inlined, no function call for a good row),
-- so a row is set aside exactly when the CHECK would refuse it. Other roles' rows meet the CHECK.
SELECT format($t$CREATE TRIGGER crypto_prices_set_aside_contract_breakers BEFORE INSERT ON crypto_prices FOR EACH ROW
    WHEN (current_user = %L
          AND tick_contract_violation(NEW.symbol, NEW.price, NEW.volume, NEW.feed, NEW.event_time) IS NOT NULL)
    EXECUTE FUNCTION crypto_prices_set_aside()$t$, :'writer_role') \gexec
-- Transition tables allow one event per trigger: UPDATE and DELETE get a trigger each.
CREATE TRIGGER crypto_prices_rollup_update AFTER UPDATE ON crypto_prices
    REFERENCING OLD TABLE AS old_ticks NEW TABLE AS new_ticks
    FOR EACH STATEMENT EXECUTE FUNCTION candle_rebuild_changed_days();
CREATE TRIGGER crypto_prices_rollup_delete AFTER DELETE ON crypto_prices
    REFERENCING OLD TABLE AS old_ticks FOR EACH STATEMENT EXECUTE FUNCTION candle_rebuild_deleted_days();
CREATE TRIGGER crypto_prices_rollup_truncate AFTER TRUNCATE ON crypto_prices
    FOR EACH STATEMENT EXECUTE FUNCTION candle_rollup_truncate();
-- Every writer's tick of a dropped day is set aside (it fires after the contract's trigger: names sort so).
CREATE OR REPLACE TRIGGER crypto_prices_set_aside_dropped_days BEFORE INSERT ON crypto_prices_default
    FOR EACH ROW EXECUTE FUNCTION crypto_prices_set_aside('dropped_days');

-- ---------------------------------------------------------------------------------------------
-- Raw tick partitions and retention
-- ---------------------------------------------------------------------------------------------
-- Every partition of crypto_prices but the default, with its range, read from the catalog.
CREATE OR REPLACE VIEW raw_tick_partitions AS
SELECT c.oid::regclass AS partition, b[1]::timestamptz AS from_time, b[2]::timestamptz AS to_time
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
 CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), $r$FROM \('([^']+)'\) TO \('([^']+)'\)$r$) AS b
 WHERE i.inhparent = 'crypto_prices'::regclass AND b IS NOT NULL;
COMMENT ON VIEW raw_tick_partitions IS 'The partitions of crypto_prices (but the default) and their event-time ranges.';

-- A partition for the UTC day starting at p_day; the default partition's ticks of that day move into it
-- first (it is locked meanwhile, so none is left behind). Attaching checks the default partition holds none
-- of the day's ticks: a scan of a partition that is nearly always empty.
CREATE OR REPLACE FUNCTION create_raw_tick_partition(p_day timestamptz) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    name     text := 'crypto_prices_p' || to_char(p_day AT TIME ZONE 'UTC', 'YYYYMMDD');
    next_day timestamptz := p_day + interval '1 day';
    columns  text;
    moved    bigint;
BEGIN
    LOCK TABLE crypto_prices_default IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('CREATE TABLE %I (LIKE crypto_prices INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)', name);
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO columns
      FROM pg_attribute WHERE attrelid = 'crypto_prices'::regclass AND attnum > 0 AND NOT attisdropped;
    EXECUTE format('WITH moved AS (DELETE FROM crypto_prices_default WHERE event_time >= $1 AND event_time < $2 RETURNING %s)'
                   ' INSERT INTO %I (%s) SELECT * FROM moved', columns, name, columns) USING p_day, next_day;
    GET DIAGNOSTICS moved = ROW_COUNT;
    EXECUTE format('ALTER TABLE crypto_prices ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', name, p_day, next_day);
    EXECUTE format('COMMENT ON TABLE %I IS %L', name,
                   format('Raw ticks of %s (UTC); dropped whole by the retention.', to_char(p_day AT TIME ZONE 'UTC', 'YYYY-MM-DD')));
    RETURN format('created %s', name) || CASE WHEN moved > 0 THEN format(' (moved %s ticks of its day into it from the default partition)', moved) ELSE '' END;
END $$;

-- ONE maintenance action, the first needed, in the caller's transaction; what it did, or NULL when nothing
-- is left to do. Callers (control/tick_maintenance.py, in the supervisor) loop, a transaction per call:
--   1. ticks in the default partition, of a day on which no tick has landed for p_quiet (a replay or backfill
--      in progress keeps its raw ticks; and an INSERT already routed to the default partition when a partition
--      is attached fails with a partition-constraint error: the sink's task is restarted and its batch
--      redelivered, but a quiet day makes that rare): the day gets a partition and they move into it, or, when
--      the day is older than the retention, they are deleted and the day recorded as dropped (candles stay);
--   2. partitions ahead: p_now's UTC day and the p_premake_days after it;
--   3. retention: the oldest partition whose days are all before p_now's day - p_keep_days is dropped whole
--      (DROP TABLE: constant time, no DELETE; the candles are not touched) and its days recorded as dropped.
-- p_keep_days NULL keeps raw ticks for ever. Locks wait at most lock_timeout (500 ms: a sink statement
-- queued behind the drop waits no longer), then the step fails (55P03) and the caller tries again later.
CREATE OR REPLACE FUNCTION raw_ticks_maintenance_step(p_keep_days integer, p_premake_days integer DEFAULT 3,
                                                      p_now timestamptz DEFAULT now(),
                                                      p_quiet interval DEFAULT interval '1 minute') RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET lock_timeout = '500ms' SET jit = off AS $$
DECLARE
    today   timestamptz := date_bin(interval '1 day', p_now, candle_origin());
    horizon timestamptz := today - p_keep_days * interval '1 day';  -- NULL: keep for ever
    day     timestamptz;
    last_landed timestamptz;
    ticks   bigint;
    bytes   bigint;
    doomed  record;
BEGIN
    IF p_keep_days < 0 OR p_premake_days < 0 OR p_premake_days IS NULL THEN
        RAISE EXCEPTION 'raw_ticks_maintenance_step: p_keep_days (%) and p_premake_days (%) must be >= 0',
            p_keep_days, p_premake_days;
    END IF;
    FOR day, last_landed IN
        SELECT date_bin(interval '1 day', event_time, candle_origin()), max(landed_at)
          FROM crypto_prices_default GROUP BY 1 ORDER BY 1
    LOOP
        IF last_landed > clock_timestamp() - p_quiet THEN
            CONTINUE;  -- still receiving ticks (a replay, a backfill): left alone until quiet
        ELSIF day < horizon THEN
            DELETE FROM crypto_prices_default WHERE event_time >= day AND event_time < day + interval '1 day';
            GET DIAGNOSTICS ticks = ROW_COUNT;
            INSERT INTO crypto_prices_dropped_days (day) VALUES ((day AT TIME ZONE 'UTC')::date) ON CONFLICT DO NOTHING;
            RETURN format('expired %s ticks of %s from the default partition (older than the retention; candles kept)',
                          ticks, to_char(day AT TIME ZONE 'UTC', 'YYYY-MM-DD'));
        ELSE
            RETURN create_raw_tick_partition(day);
        END IF;
    END LOOP;
    FOR day IN SELECT generate_series(today, today + p_premake_days * interval '1 day', interval '1 day') LOOP
        IF NOT EXISTS (SELECT FROM raw_tick_partitions p WHERE p.from_time <= day AND p.to_time > day) THEN
            RETURN create_raw_tick_partition(day);
        END IF;
    END LOOP;
    SELECT p.partition::text AS name, p.partition::oid AS oid, p.from_time, p.to_time INTO doomed
      FROM raw_tick_partitions p WHERE p.to_time <= horizon ORDER BY p.from_time LIMIT 1;
    IF FOUND THEN
        bytes := pg_total_relation_size(doomed.oid);
        EXECUTE format('DROP TABLE %s', doomed.name);
        INSERT INTO crypto_prices_dropped_days (day, bytes)
        SELECT g::date, bytes
          FROM generate_series(doomed.from_time AT TIME ZONE 'UTC', (doomed.to_time AT TIME ZONE 'UTC') - interval '1 day',
                               interval '1 day') g
        ON CONFLICT DO NOTHING;
        RETURN format('dropped %s (%s)', doomed.name, pg_size_pretty(bytes));
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION raw_ticks_maintenance_step(integer, integer, timestamptz, interval) IS
    'One raw-tick partition maintenance action (move default-partition ticks, create ahead, drop expired); NULL when none is due.';

-- The partitions ahead exist before the first tick (the supervisor's tick maintainer keeps them ahead, and
-- applies the retention: nothing is dropped here).
SELECT format('DO $d$ BEGIN WHILE raw_ticks_maintenance_step(NULL, %s) IS NOT NULL LOOP END LOOP; END $d$',
              :'premake_days'::integer) \gexec

-- Ticks without candles (a migration emptied them, ticks loaded before the rollup existed): build them once.
SELECT 'SELECT rebuild_candles()'
 WHERE EXISTS (SELECT FROM crypto_prices) AND NOT EXISTS (SELECT FROM candle_rollup) \gexec

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
    FOR iv IN SELECT resolution, width, max_fill FROM candle_intervals ORDER BY width LOOP
        all_view := candle_view_name(iv.resolution);
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
                   synthetic_count
              FROM candle_rollup
             WHERE resolution = %L
        $v$, all_view, iv.resolution);
        EXECUTE format('COMMENT ON VIEW %I IS %L', all_view,
                       iv.resolution || ' OHLC candles (UTC buckets) of all ticks; synthetic_count = JITTER ticks in the candle');

        EXECUTE format($v$
            CREATE OR REPLACE VIEW %I AS
            SELECT symbol,
                   bucket,
                   (bucket AT TIME ZONE 'UTC') AS bucket_utc,
                   real_first[4] AS open,
                   real_high AS high,
                   real_low AS low,
                   real_last[4] AS close,
                   real_volume AS volume,
                   tick_count - synthetic_count AS tick_count,
                   0::bigint AS synthetic_count
              FROM candle_rollup
             WHERE resolution = %L AND tick_count > synthetic_count
        $v$, candle_view_name(iv.resolution, '_real'), iv.resolution);
        EXECUTE format('COMMENT ON VIEW %I IS %L', candle_view_name(iv.resolution, '_real'),
                       iv.resolution || ' OHLC candles of real ticks only (JITTER excluded)');

        -- Gap filling: the candles themselves (the view above: a date filter on either column is one index
        -- range of the rollup), and the empty buckets between them. Those come from candle_calendar, walked
        -- from each symbol's first candle to its last; a bucket with a candle of the symbol is skipped (one
        -- primary-key probe), an empty one takes the latest candle before it, through the rollup's primary
        -- key, and is kept if it is at most max_fill buckets after that candle (a longer silence stays a
        -- gap). The span is stated on bucket and on bucket_utc alike, so whichever column a date filter uses,
        -- the filter and the span meet in one index range: the cost follows the rows returned, and a
        -- candle costs no lookup per bucket (bench/results/history.md).
        EXECUTE format($v$
            CREATE OR REPLACE VIEW %1$I AS
            SELECT v.symbol, v.bucket, v.bucket_utc, v.open, v.high, v.low, v.close, v.volume, v.tick_count,
                   v.synthetic_count, false AS is_gap_fill
              FROM %2$I v
            UNION ALL
            SELECT s.symbol,
                   b.bucket,
                   (b.bucket AT TIME ZONE 'UTC') AS bucket_utc,
                   c.close AS open,
                   c.close AS high,
                   c.close AS low,
                   c.close,
                   0::double precision AS volume,
                   0::bigint AS tick_count,
                   0::bigint AS synthetic_count,
                   true AS is_gap_fill
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
               AND NOT EXISTS (SELECT FROM candle_rollup x WHERE x.resolution = %3$L AND x.symbol = s.symbol AND x.bucket = b.bucket)
             CROSS JOIN LATERAL (
                    SELECT * FROM %2$I v
                     WHERE v.symbol = s.symbol
                       AND v.bucket = (SELECT x.bucket FROM candle_rollup x
                                        WHERE x.resolution = %3$L AND x.symbol = s.symbol AND x.bucket < b.bucket
                                        ORDER BY x.bucket DESC LIMIT 1)
                     LIMIT 1) c  -- one candle per empty bucket; the LIMIT also keeps it a per-bucket lookup
             WHERE b.bucket <= c.bucket + %4$L::interval  -- at most max_fill empty buckets after a candle
        $v$, candle_view_name(iv.resolution, '_filled'), all_view, iv.resolution, iv.width * iv.max_fill);
        EXECUTE format('COMMENT ON VIEW %I IS %L', candle_view_name(iv.resolution, '_filled'),
                       iv.resolution || ' OHLC candles with gaps filled: flat at the previous close, volume 0, is_gap_fill');
    END LOOP;
END $$;

-- Raw ticks for Power BI: the stable columns, the instant as UTC wall-clock time too (Power BI shows a
-- timestamptz in the desktop's zone), synthetic ticks labelled. Filter on event_time: it prunes partitions
-- and, with a symbol, is a range of the tick key.
CREATE OR REPLACE VIEW view_crypto_ticks AS
SELECT symbol, event_time, (event_time AT TIME ZONE 'UTC') AS event_time_utc, price, volume, feed,
       feed = 'JITTER' AS is_synthetic
  FROM crypto_prices;
COMMENT ON VIEW view_crypto_ticks IS 'Raw ticks (RAW_TICKS_RETENTION_DAYS of them); is_synthetic = JITTER (simulated between polls). Filter on event_time.';

-- ---------------------------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------------------------
RESET ROLE;
-- Anything above not created as the owner role is handed over now.
SELECT pg_temp.hand_over_public_objects(:'owner_role') AS handed_over \gset

-- Functions are executable by PUBLIC by default: not the owner's (its triggers run them as the owner),
-- now or later. What the candle views call, Power BI may run (a view runs functions as its reader).
SELECT format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', p.oid::regprocedure)
  FROM pg_proc p
 WHERE p.pronamespace = 'public'::regnamespace AND pg_get_userbyid(p.proowner) = :'owner_role' \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I REVOKE EXECUTE ON ROUTINES FROM PUBLIC', :'owner_role') \gexec
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM PUBLIC;

-- The sink: add ticks to crypto_prices, nothing else. Its upsert (INSERT ... ON CONFLICT (symbol,
-- event_time, price) DO UPDATE SET col = EXCLUDED.col, ...) needs INSERT, UPDATE and SELECT (reading
-- EXCLUDED columns counts as reading the table; its metadata the sink reads from the catalogs, which
-- need no grant). Its UPDATEs change nothing (crypto_prices_first_landing_wins), so it cannot move,
-- re-price or rewrite a landed tick; UPDATE is table-wide so that a column added later (a schema
-- migration) needs no new grant.
SELECT format('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %I', :'writer_role') \gexec
SELECT format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM %I', :'writer_role') \gexec
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'writer_role') \gexec
SELECT format('GRANT SELECT, INSERT, UPDATE ON crypto_prices TO %I', :'writer_role') \gexec
-- The contract's CHECK and the set-aside trigger's condition evaluate tick_contract_violation() as the
-- inserting role.
SELECT format('GRANT EXECUTE ON FUNCTION tick_contract_violation(text, double precision, double precision, text, timestamptz) TO %I',
              :'writer_role') \gexec

-- Power BI and the chart: the candle views; Power BI also the raw ticks (crypto_prices, view_crypto_ticks).
-- The watchdog: nothing at all. The tick maintainer: its one function. Whatever else was granted to them
-- by hand, tables or functions, goes at every start.
SELECT format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM %I', r)
  FROM unnest(ARRAY[:'reader_role', :'chart_role', :'watchdog_role', :'maintainer_role']) AS r \gexec
SELECT format('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %I', r) FROM unnest(ARRAY[:'watchdog_role', :'maintainer_role']) AS r \gexec
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'maintainer_role'),
       format('GRANT EXECUTE ON FUNCTION raw_ticks_maintenance_step(integer, integer, timestamptz, interval) TO %I', :'maintainer_role') \gexec
SELECT format('GRANT USAGE ON SCHEMA public TO %I', r), format('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %I', r)
  FROM unnest(ARRAY[:'reader_role', :'chart_role']) AS r \gexec
SELECT format('GRANT SELECT ON %I TO %I', c.relname, r)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, unnest(ARRAY[:'reader_role', :'chart_role']) AS r
 WHERE n.nspname = 'public' AND c.relkind = 'v' AND c.relname LIKE 'view\_crypto\_candles%' \gexec
SELECT DISTINCT format('GRANT EXECUTE ON ROUTINE %s TO %I', d.refobjid::regprocedure, rr.r)
  FROM unnest(ARRAY[:'reader_role', :'chart_role']) AS rr(r), pg_class c
  JOIN pg_rewrite r ON r.ev_class = c.oid
  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_proc'::regclass
  JOIN pg_proc p ON p.oid = d.refobjid
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'v' AND c.relname LIKE 'view\_crypto\_candles%'
   AND pg_get_userbyid(p.proowner) = :'owner_role' \gexec
SELECT format('GRANT SELECT ON crypto_prices, view_crypto_ticks TO %I', :'reader_role') \gexec
