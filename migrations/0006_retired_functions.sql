-- Functions (and with them their triggers) of older candle designs.
DROP FUNCTION IF EXISTS candle_calendar_span(text, text, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS candle_calendar_cover(text);
DROP FUNCTION IF EXISTS candle_rollup_add_ticks() CASCADE;
DROP FUNCTION IF EXISTS candle_rollup_change_ticks() CASCADE;
DROP FUNCTION IF EXISTS candle_rollup_delete_ticks() CASCADE;
