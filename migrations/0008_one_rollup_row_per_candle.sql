-- candle_rollup held two rows per candle (real ticks, synthetic ticks: a `synthetic` key column) that the
-- views merged at read time; it now holds one, with the real ticks' part in real_* columns. The rows are
-- merged here, not rebuilt from ticks: candles of days whose raw ticks retention dropped are all that is
-- left of those days. The candle views are dropped first (they read the old columns); init.sql, which runs
-- after the migrations, makes them again with their grants. A view of your own on top of them makes this
-- migration fail: drop it, migrate, create it again.
DO $$
DECLARE
    candle_views text;
BEGIN
    IF to_regclass('public.candle_rollup') IS NULL
       OR NOT EXISTS (SELECT FROM information_schema.columns
                       WHERE table_schema = 'public' AND table_name = 'candle_rollup' AND column_name = 'synthetic') THEN
        RETURN;
    END IF;
    SELECT string_agg(format('%I', c.relname), ', ') INTO candle_views
      FROM pg_class c
     WHERE c.relkind = 'v' AND c.relnamespace = 'public'::regnamespace AND c.relname LIKE 'view\_crypto\_candles%';
    IF candle_views IS NOT NULL THEN
        EXECUTE 'DROP VIEW ' || candle_views;  -- one statement: the filled views depend on the others
    END IF;

    CREATE TEMPORARY TABLE candle_rollup_merged ON COMMIT DROP AS
    SELECT resolution, symbol, bucket,
           min(first) AS first, max(last) AS last, max(high) AS high, min(low) AS low, sum(volume) AS volume,
           sum(tick_count)::bigint AS tick_count,
           coalesce(sum(tick_count) FILTER (WHERE synthetic), 0)::bigint AS synthetic_count,
           min(first) FILTER (WHERE NOT synthetic) AS real_first, max(last) FILTER (WHERE NOT synthetic) AS real_last,
           max(high) FILTER (WHERE NOT synthetic) AS real_high, min(low) FILTER (WHERE NOT synthetic) AS real_low,
           coalesce(sum(volume) FILTER (WHERE NOT synthetic), 0) AS real_volume
      FROM candle_rollup
     GROUP BY resolution, symbol, bucket;

    TRUNCATE candle_rollup;
    ALTER TABLE candle_rollup
        DROP CONSTRAINT candle_rollup_pkey,
        DROP COLUMN synthetic,
        ADD COLUMN synthetic_count bigint NOT NULL,
        ADD COLUMN real_first float8[],
        ADD COLUMN real_last float8[],
        ADD COLUMN real_high double precision,
        ADD COLUMN real_low double precision,
        ADD COLUMN real_volume double precision NOT NULL,
        ADD PRIMARY KEY (resolution, symbol, bucket);
    INSERT INTO candle_rollup (resolution, symbol, bucket, first, last, high, low, volume, tick_count,
                               synthetic_count, real_first, real_last, real_high, real_low, real_volume)
    SELECT resolution, symbol, bucket, first, last, high, low, volume, tick_count,
           synthetic_count, real_first, real_last, real_high, real_low, real_volume
      FROM candle_rollup_merged;
    ANALYZE candle_rollup;
END $$;
