-- Candle points (candle_point()) hold epoch seconds; older candles held epoch microseconds: empty them,
-- init.sql rebuilds them from the ticks (ticks without candles).
DO $$
BEGIN
    IF to_regclass('public.candle_rollup') IS NULL THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM candle_rollup WHERE first[1] > 1e11) THEN
        TRUNCATE candle_rollup;
    END IF;
END $$;
