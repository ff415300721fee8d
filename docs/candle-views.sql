-- The candle views as PostgreSQL holds them: written by `python -m control.candle_views` from a
-- database init.sql made (its DO block makes them from one template per candle_intervals row).
-- Do not edit: change init.sql, then regenerate; tests/test_candle_views_file.py checks this file.

-- 1m OHLC candles (UTC buckets) of all ticks; synthetic_count = JITTER ticks in the candle
CREATE OR REPLACE VIEW view_crypto_candles AS
 SELECT candle_rollup.symbol,
    candle_rollup.bucket,
    (candle_rollup.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    candle_rollup.first[4] AS open,
    candle_rollup.high,
    candle_rollup.low,
    candle_rollup.last[4] AS close,
    candle_rollup.volume,
    candle_rollup.tick_count,
    candle_rollup.synthetic_count
   FROM candle_rollup
  WHERE candle_rollup.resolution = '1m'::text;

-- 15m OHLC candles (UTC buckets) of all ticks; synthetic_count = JITTER ticks in the candle
CREATE OR REPLACE VIEW view_crypto_candles_15m AS
 SELECT candle_rollup.symbol,
    candle_rollup.bucket,
    (candle_rollup.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    candle_rollup.first[4] AS open,
    candle_rollup.high,
    candle_rollup.low,
    candle_rollup.last[4] AS close,
    candle_rollup.volume,
    candle_rollup.tick_count,
    candle_rollup.synthetic_count
   FROM candle_rollup
  WHERE candle_rollup.resolution = '15m'::text;

-- 15m OHLC candles with gaps filled: flat at the previous close, volume 0, is_gap_fill
CREATE OR REPLACE VIEW view_crypto_candles_15m_filled AS
 SELECT v.symbol,
    v.bucket,
    v.bucket_utc,
    v.open,
    v.high,
    v.low,
    v.close,
    v.volume,
    v.tick_count,
    v.synthetic_count,
    false AS is_gap_fill
   FROM view_crypto_candles_15m v
UNION ALL
 SELECT s.symbol,
    b.bucket,
    (b.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    c.close AS open,
    c.close AS high,
    c.close AS low,
    c.close,
    0::double precision AS volume,
    0::bigint AS tick_count,
    0::bigint AS synthetic_count,
    true AS is_gap_fill
   FROM ( SELECT r.symbol,
            ( SELECT min(x.bucket) AS min
                   FROM candle_rollup x
                  WHERE x.resolution = '15m'::text AND x.symbol = r.symbol) AS first_bucket,
            ( SELECT max(x.bucket) AS max
                   FROM candle_rollup x
                  WHERE x.resolution = '15m'::text AND x.symbol = r.symbol) AS last_bucket
           FROM ( WITH RECURSIVE symbols(symbol) AS (
                         SELECT min(candle_rollup.symbol) AS min
                           FROM candle_rollup
                          WHERE candle_rollup.resolution = '15m'::text
                        UNION ALL
                         SELECT ( SELECT min(x.symbol) AS min
                                   FROM candle_rollup x
                                  WHERE x.resolution = '15m'::text AND x.symbol > s_1.symbol) AS min
                           FROM symbols s_1
                          WHERE s_1.symbol IS NOT NULL
                        )
                 SELECT symbols.symbol
                   FROM symbols
                  WHERE symbols.symbol IS NOT NULL) r
         OFFSET 0) s
     JOIN candle_calendar b ON b.resolution = '15m'::text AND b.bucket >= s.first_bucket AND b.bucket <= s.last_bucket AND (b.bucket AT TIME ZONE 'UTC'::text) >= (s.first_bucket AT TIME ZONE 'UTC'::text) AND (b.bucket AT TIME ZONE 'UTC'::text) <= (s.last_bucket AT TIME ZONE 'UTC'::text) AND NOT (EXISTS ( SELECT
           FROM candle_rollup x
          WHERE x.resolution = '15m'::text AND x.symbol = s.symbol AND x.bucket = b.bucket))
     CROSS JOIN LATERAL ( SELECT v.symbol,
            v.bucket,
            v.bucket_utc,
            v.open,
            v.high,
            v.low,
            v.close,
            v.volume,
            v.tick_count,
            v.synthetic_count
           FROM view_crypto_candles_15m v
          WHERE v.symbol = s.symbol AND v.bucket = (( SELECT x.bucket
                   FROM candle_rollup x
                  WHERE x.resolution = '15m'::text AND x.symbol = s.symbol AND x.bucket < b.bucket
                  ORDER BY x.bucket DESC
                 LIMIT 1))
         LIMIT 1) c
  WHERE b.bucket <= (c.bucket + '720:00:00'::interval);

-- 15m OHLC candles of real ticks only (JITTER excluded)
CREATE OR REPLACE VIEW view_crypto_candles_15m_real AS
 SELECT candle_rollup.symbol,
    candle_rollup.bucket,
    (candle_rollup.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    candle_rollup.real_first[4] AS open,
    candle_rollup.real_high AS high,
    candle_rollup.real_low AS low,
    candle_rollup.real_last[4] AS close,
    candle_rollup.real_volume AS volume,
    candle_rollup.tick_count - candle_rollup.synthetic_count AS tick_count,
    0::bigint AS synthetic_count
   FROM candle_rollup
  WHERE candle_rollup.resolution = '15m'::text AND candle_rollup.tick_count > candle_rollup.synthetic_count;

-- 1d OHLC candles (UTC buckets) of all ticks; synthetic_count = JITTER ticks in the candle
CREATE OR REPLACE VIEW view_crypto_candles_1d AS
 SELECT candle_rollup.symbol,
    candle_rollup.bucket,
    (candle_rollup.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    candle_rollup.first[4] AS open,
    candle_rollup.high,
    candle_rollup.low,
    candle_rollup.last[4] AS close,
    candle_rollup.volume,
    candle_rollup.tick_count,
    candle_rollup.synthetic_count
   FROM candle_rollup
  WHERE candle_rollup.resolution = '1d'::text;

-- 1d OHLC candles with gaps filled: flat at the previous close, volume 0, is_gap_fill
CREATE OR REPLACE VIEW view_crypto_candles_1d_filled AS
 SELECT v.symbol,
    v.bucket,
    v.bucket_utc,
    v.open,
    v.high,
    v.low,
    v.close,
    v.volume,
    v.tick_count,
    v.synthetic_count,
    false AS is_gap_fill
   FROM view_crypto_candles_1d v
UNION ALL
 SELECT s.symbol,
    b.bucket,
    (b.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    c.close AS open,
    c.close AS high,
    c.close AS low,
    c.close,
    0::double precision AS volume,
    0::bigint AS tick_count,
    0::bigint AS synthetic_count,
    true AS is_gap_fill
   FROM ( SELECT r.symbol,
            ( SELECT min(x.bucket) AS min
                   FROM candle_rollup x
                  WHERE x.resolution = '1d'::text AND x.symbol = r.symbol) AS first_bucket,
            ( SELECT max(x.bucket) AS max
                   FROM candle_rollup x
                  WHERE x.resolution = '1d'::text AND x.symbol = r.symbol) AS last_bucket
           FROM ( WITH RECURSIVE symbols(symbol) AS (
                         SELECT min(candle_rollup.symbol) AS min
                           FROM candle_rollup
                          WHERE candle_rollup.resolution = '1d'::text
                        UNION ALL
                         SELECT ( SELECT min(x.symbol) AS min
                                   FROM candle_rollup x
                                  WHERE x.resolution = '1d'::text AND x.symbol > s_1.symbol) AS min
                           FROM symbols s_1
                          WHERE s_1.symbol IS NOT NULL
                        )
                 SELECT symbols.symbol
                   FROM symbols
                  WHERE symbols.symbol IS NOT NULL) r
         OFFSET 0) s
     JOIN candle_calendar b ON b.resolution = '1d'::text AND b.bucket >= s.first_bucket AND b.bucket <= s.last_bucket AND (b.bucket AT TIME ZONE 'UTC'::text) >= (s.first_bucket AT TIME ZONE 'UTC'::text) AND (b.bucket AT TIME ZONE 'UTC'::text) <= (s.last_bucket AT TIME ZONE 'UTC'::text) AND NOT (EXISTS ( SELECT
           FROM candle_rollup x
          WHERE x.resolution = '1d'::text AND x.symbol = s.symbol AND x.bucket = b.bucket))
     CROSS JOIN LATERAL ( SELECT v.symbol,
            v.bucket,
            v.bucket_utc,
            v.open,
            v.high,
            v.low,
            v.close,
            v.volume,
            v.tick_count,
            v.synthetic_count
           FROM view_crypto_candles_1d v
          WHERE v.symbol = s.symbol AND v.bucket = (( SELECT x.bucket
                   FROM candle_rollup x
                  WHERE x.resolution = '1d'::text AND x.symbol = s.symbol AND x.bucket < b.bucket
                  ORDER BY x.bucket DESC
                 LIMIT 1))
         LIMIT 1) c
  WHERE b.bucket <= (c.bucket + '1830 days'::interval);

-- 1d OHLC candles of real ticks only (JITTER excluded)
CREATE OR REPLACE VIEW view_crypto_candles_1d_real AS
 SELECT candle_rollup.symbol,
    candle_rollup.bucket,
    (candle_rollup.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    candle_rollup.real_first[4] AS open,
    candle_rollup.real_high AS high,
    candle_rollup.real_low AS low,
    candle_rollup.real_last[4] AS close,
    candle_rollup.real_volume AS volume,
    candle_rollup.tick_count - candle_rollup.synthetic_count AS tick_count,
    0::bigint AS synthetic_count
   FROM candle_rollup
  WHERE candle_rollup.resolution = '1d'::text AND candle_rollup.tick_count > candle_rollup.synthetic_count;

-- 1h OHLC candles (UTC buckets) of all ticks; synthetic_count = JITTER ticks in the candle
CREATE OR REPLACE VIEW view_crypto_candles_1h AS
 SELECT candle_rollup.symbol,
    candle_rollup.bucket,
    (candle_rollup.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    candle_rollup.first[4] AS open,
    candle_rollup.high,
    candle_rollup.low,
    candle_rollup.last[4] AS close,
    candle_rollup.volume,
    candle_rollup.tick_count,
    candle_rollup.synthetic_count
   FROM candle_rollup
  WHERE candle_rollup.resolution = '1h'::text;

-- 1h OHLC candles with gaps filled: flat at the previous close, volume 0, is_gap_fill
CREATE OR REPLACE VIEW view_crypto_candles_1h_filled AS
 SELECT v.symbol,
    v.bucket,
    v.bucket_utc,
    v.open,
    v.high,
    v.low,
    v.close,
    v.volume,
    v.tick_count,
    v.synthetic_count,
    false AS is_gap_fill
   FROM view_crypto_candles_1h v
UNION ALL
 SELECT s.symbol,
    b.bucket,
    (b.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    c.close AS open,
    c.close AS high,
    c.close AS low,
    c.close,
    0::double precision AS volume,
    0::bigint AS tick_count,
    0::bigint AS synthetic_count,
    true AS is_gap_fill
   FROM ( SELECT r.symbol,
            ( SELECT min(x.bucket) AS min
                   FROM candle_rollup x
                  WHERE x.resolution = '1h'::text AND x.symbol = r.symbol) AS first_bucket,
            ( SELECT max(x.bucket) AS max
                   FROM candle_rollup x
                  WHERE x.resolution = '1h'::text AND x.symbol = r.symbol) AS last_bucket
           FROM ( WITH RECURSIVE symbols(symbol) AS (
                         SELECT min(candle_rollup.symbol) AS min
                           FROM candle_rollup
                          WHERE candle_rollup.resolution = '1h'::text
                        UNION ALL
                         SELECT ( SELECT min(x.symbol) AS min
                                   FROM candle_rollup x
                                  WHERE x.resolution = '1h'::text AND x.symbol > s_1.symbol) AS min
                           FROM symbols s_1
                          WHERE s_1.symbol IS NOT NULL
                        )
                 SELECT symbols.symbol
                   FROM symbols
                  WHERE symbols.symbol IS NOT NULL) r
         OFFSET 0) s
     JOIN candle_calendar b ON b.resolution = '1h'::text AND b.bucket >= s.first_bucket AND b.bucket <= s.last_bucket AND (b.bucket AT TIME ZONE 'UTC'::text) >= (s.first_bucket AT TIME ZONE 'UTC'::text) AND (b.bucket AT TIME ZONE 'UTC'::text) <= (s.last_bucket AT TIME ZONE 'UTC'::text) AND NOT (EXISTS ( SELECT
           FROM candle_rollup x
          WHERE x.resolution = '1h'::text AND x.symbol = s.symbol AND x.bucket = b.bucket))
     CROSS JOIN LATERAL ( SELECT v.symbol,
            v.bucket,
            v.bucket_utc,
            v.open,
            v.high,
            v.low,
            v.close,
            v.volume,
            v.tick_count,
            v.synthetic_count
           FROM view_crypto_candles_1h v
          WHERE v.symbol = s.symbol AND v.bucket = (( SELECT x.bucket
                   FROM candle_rollup x
                  WHERE x.resolution = '1h'::text AND x.symbol = s.symbol AND x.bucket < b.bucket
                  ORDER BY x.bucket DESC
                 LIMIT 1))
         LIMIT 1) c
  WHERE b.bucket <= (c.bucket + '2160:00:00'::interval);

-- 1h OHLC candles of real ticks only (JITTER excluded)
CREATE OR REPLACE VIEW view_crypto_candles_1h_real AS
 SELECT candle_rollup.symbol,
    candle_rollup.bucket,
    (candle_rollup.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    candle_rollup.real_first[4] AS open,
    candle_rollup.real_high AS high,
    candle_rollup.real_low AS low,
    candle_rollup.real_last[4] AS close,
    candle_rollup.real_volume AS volume,
    candle_rollup.tick_count - candle_rollup.synthetic_count AS tick_count,
    0::bigint AS synthetic_count
   FROM candle_rollup
  WHERE candle_rollup.resolution = '1h'::text AND candle_rollup.tick_count > candle_rollup.synthetic_count;

-- 5m OHLC candles (UTC buckets) of all ticks; synthetic_count = JITTER ticks in the candle
CREATE OR REPLACE VIEW view_crypto_candles_5m AS
 SELECT candle_rollup.symbol,
    candle_rollup.bucket,
    (candle_rollup.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    candle_rollup.first[4] AS open,
    candle_rollup.high,
    candle_rollup.low,
    candle_rollup.last[4] AS close,
    candle_rollup.volume,
    candle_rollup.tick_count,
    candle_rollup.synthetic_count
   FROM candle_rollup
  WHERE candle_rollup.resolution = '5m'::text;

-- 5m OHLC candles with gaps filled: flat at the previous close, volume 0, is_gap_fill
CREATE OR REPLACE VIEW view_crypto_candles_5m_filled AS
 SELECT v.symbol,
    v.bucket,
    v.bucket_utc,
    v.open,
    v.high,
    v.low,
    v.close,
    v.volume,
    v.tick_count,
    v.synthetic_count,
    false AS is_gap_fill
   FROM view_crypto_candles_5m v
UNION ALL
 SELECT s.symbol,
    b.bucket,
    (b.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    c.close AS open,
    c.close AS high,
    c.close AS low,
    c.close,
    0::double precision AS volume,
    0::bigint AS tick_count,
    0::bigint AS synthetic_count,
    true AS is_gap_fill
   FROM ( SELECT r.symbol,
            ( SELECT min(x.bucket) AS min
                   FROM candle_rollup x
                  WHERE x.resolution = '5m'::text AND x.symbol = r.symbol) AS first_bucket,
            ( SELECT max(x.bucket) AS max
                   FROM candle_rollup x
                  WHERE x.resolution = '5m'::text AND x.symbol = r.symbol) AS last_bucket
           FROM ( WITH RECURSIVE symbols(symbol) AS (
                         SELECT min(candle_rollup.symbol) AS min
                           FROM candle_rollup
                          WHERE candle_rollup.resolution = '5m'::text
                        UNION ALL
                         SELECT ( SELECT min(x.symbol) AS min
                                   FROM candle_rollup x
                                  WHERE x.resolution = '5m'::text AND x.symbol > s_1.symbol) AS min
                           FROM symbols s_1
                          WHERE s_1.symbol IS NOT NULL
                        )
                 SELECT symbols.symbol
                   FROM symbols
                  WHERE symbols.symbol IS NOT NULL) r
         OFFSET 0) s
     JOIN candle_calendar b ON b.resolution = '5m'::text AND b.bucket >= s.first_bucket AND b.bucket <= s.last_bucket AND (b.bucket AT TIME ZONE 'UTC'::text) >= (s.first_bucket AT TIME ZONE 'UTC'::text) AND (b.bucket AT TIME ZONE 'UTC'::text) <= (s.last_bucket AT TIME ZONE 'UTC'::text) AND NOT (EXISTS ( SELECT
           FROM candle_rollup x
          WHERE x.resolution = '5m'::text AND x.symbol = s.symbol AND x.bucket = b.bucket))
     CROSS JOIN LATERAL ( SELECT v.symbol,
            v.bucket,
            v.bucket_utc,
            v.open,
            v.high,
            v.low,
            v.close,
            v.volume,
            v.tick_count,
            v.synthetic_count
           FROM view_crypto_candles_5m v
          WHERE v.symbol = s.symbol AND v.bucket = (( SELECT x.bucket
                   FROM candle_rollup x
                  WHERE x.resolution = '5m'::text AND x.symbol = s.symbol AND x.bucket < b.bucket
                  ORDER BY x.bucket DESC
                 LIMIT 1))
         LIMIT 1) c
  WHERE b.bucket <= (c.bucket + '168:00:00'::interval);

-- 5m OHLC candles of real ticks only (JITTER excluded)
CREATE OR REPLACE VIEW view_crypto_candles_5m_real AS
 SELECT candle_rollup.symbol,
    candle_rollup.bucket,
    (candle_rollup.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    candle_rollup.real_first[4] AS open,
    candle_rollup.real_high AS high,
    candle_rollup.real_low AS low,
    candle_rollup.real_last[4] AS close,
    candle_rollup.real_volume AS volume,
    candle_rollup.tick_count - candle_rollup.synthetic_count AS tick_count,
    0::bigint AS synthetic_count
   FROM candle_rollup
  WHERE candle_rollup.resolution = '5m'::text AND candle_rollup.tick_count > candle_rollup.synthetic_count;

-- 1m OHLC candles with gaps filled: flat at the previous close, volume 0, is_gap_fill
CREATE OR REPLACE VIEW view_crypto_candles_filled AS
 SELECT v.symbol,
    v.bucket,
    v.bucket_utc,
    v.open,
    v.high,
    v.low,
    v.close,
    v.volume,
    v.tick_count,
    v.synthetic_count,
    false AS is_gap_fill
   FROM view_crypto_candles v
UNION ALL
 SELECT s.symbol,
    b.bucket,
    (b.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    c.close AS open,
    c.close AS high,
    c.close AS low,
    c.close,
    0::double precision AS volume,
    0::bigint AS tick_count,
    0::bigint AS synthetic_count,
    true AS is_gap_fill
   FROM ( SELECT r.symbol,
            ( SELECT min(x.bucket) AS min
                   FROM candle_rollup x
                  WHERE x.resolution = '1m'::text AND x.symbol = r.symbol) AS first_bucket,
            ( SELECT max(x.bucket) AS max
                   FROM candle_rollup x
                  WHERE x.resolution = '1m'::text AND x.symbol = r.symbol) AS last_bucket
           FROM ( WITH RECURSIVE symbols(symbol) AS (
                         SELECT min(candle_rollup.symbol) AS min
                           FROM candle_rollup
                          WHERE candle_rollup.resolution = '1m'::text
                        UNION ALL
                         SELECT ( SELECT min(x.symbol) AS min
                                   FROM candle_rollup x
                                  WHERE x.resolution = '1m'::text AND x.symbol > s_1.symbol) AS min
                           FROM symbols s_1
                          WHERE s_1.symbol IS NOT NULL
                        )
                 SELECT symbols.symbol
                   FROM symbols
                  WHERE symbols.symbol IS NOT NULL) r
         OFFSET 0) s
     JOIN candle_calendar b ON b.resolution = '1m'::text AND b.bucket >= s.first_bucket AND b.bucket <= s.last_bucket AND (b.bucket AT TIME ZONE 'UTC'::text) >= (s.first_bucket AT TIME ZONE 'UTC'::text) AND (b.bucket AT TIME ZONE 'UTC'::text) <= (s.last_bucket AT TIME ZONE 'UTC'::text) AND NOT (EXISTS ( SELECT
           FROM candle_rollup x
          WHERE x.resolution = '1m'::text AND x.symbol = s.symbol AND x.bucket = b.bucket))
     CROSS JOIN LATERAL ( SELECT v.symbol,
            v.bucket,
            v.bucket_utc,
            v.open,
            v.high,
            v.low,
            v.close,
            v.volume,
            v.tick_count,
            v.synthetic_count
           FROM view_crypto_candles v
          WHERE v.symbol = s.symbol AND v.bucket = (( SELECT x.bucket
                   FROM candle_rollup x
                  WHERE x.resolution = '1m'::text AND x.symbol = s.symbol AND x.bucket < b.bucket
                  ORDER BY x.bucket DESC
                 LIMIT 1))
         LIMIT 1) c
  WHERE b.bucket <= (c.bucket + '24:00:00'::interval);

-- 1m OHLC candles of real ticks only (JITTER excluded)
CREATE OR REPLACE VIEW view_crypto_candles_real AS
 SELECT candle_rollup.symbol,
    candle_rollup.bucket,
    (candle_rollup.bucket AT TIME ZONE 'UTC'::text) AS bucket_utc,
    candle_rollup.real_first[4] AS open,
    candle_rollup.real_high AS high,
    candle_rollup.real_low AS low,
    candle_rollup.real_last[4] AS close,
    candle_rollup.real_volume AS volume,
    candle_rollup.tick_count - candle_rollup.synthetic_count AS tick_count,
    0::bigint AS synthetic_count
   FROM candle_rollup
  WHERE candle_rollup.resolution = '1m'::text AND candle_rollup.tick_count > candle_rollup.synthetic_count;

-- Raw ticks (RAW_TICKS_RETENTION_DAYS of them); is_synthetic = JITTER (simulated between polls). Filter on event_time.
CREATE OR REPLACE VIEW view_crypto_ticks AS
 SELECT crypto_prices.symbol,
    crypto_prices.event_time,
    (crypto_prices.event_time AT TIME ZONE 'UTC'::text) AS event_time_utc,
    crypto_prices.price,
    crypto_prices.volume,
    crypto_prices.feed,
    crypto_prices.feed = 'JITTER'::text AS is_synthetic
   FROM crypto_prices;
