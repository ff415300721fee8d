-- Candles are staged per statement and merged per transaction (init.sql: candle_stage_ticks,
-- candle_merge_pending); the per-statement merge goes, with its triggers, which init.sql re-creates.
DROP FUNCTION IF EXISTS candle_merge_ticks() CASCADE;
