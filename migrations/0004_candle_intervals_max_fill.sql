-- candle_intervals gained max_fill (how many empty buckets the gap-filled views fill after a candle) and a
-- check that every width nests in a UTC day.
DO $$
BEGIN
    IF to_regclass('public.candle_intervals') IS NULL THEN
        RETURN;
    END IF;
    ALTER TABLE candle_intervals ADD COLUMN IF NOT EXISTS max_fill integer NOT NULL DEFAULT 1440 CHECK (max_fill >= 0);
    ALTER TABLE candle_intervals DROP CONSTRAINT IF EXISTS candle_width_nests_in_a_day;
    ALTER TABLE candle_intervals ADD CONSTRAINT candle_width_nests_in_a_day
        CHECK (width >= interval '1 minute' AND extract(epoch FROM width)::bigint % 60 = 0
               AND 86400 % extract(epoch FROM width)::bigint = 0);
END $$;
