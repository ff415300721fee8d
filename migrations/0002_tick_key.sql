-- The tick key. Databases created before it were keyed by the Kafka coordinates (crypto_prices_pkey on
-- topic, partition, offset), so the same tick produced twice was two rows. Keep the first landing of each
-- tick (the lowest partition, offset), set aside the rows that break the contract as it was then in
-- crypto_prices_quarantine with the reason, switch the key to (symbol, event_time, price); the candles are
-- emptied here and rebuilt from the kept ticks by init.sql (ticks without candles).
CREATE TABLE IF NOT EXISTS crypto_prices_quarantine (
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    reason         text        NOT NULL,
    tick           jsonb       NOT NULL
);
COMMENT ON TABLE crypto_prices_quarantine IS 'Rows of an older database that broke the tick contract (as it was then, or as it is now) when it was migrated, with the reason.';

DO $$
BEGIN
    IF to_regclass('public.crypto_prices') IS NULL
       OR NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = to_regclass('public.crypto_prices') AND conname = 'crypto_prices_pkey') THEN
        RETURN;
    END IF;
    ALTER TABLE crypto_prices DISABLE TRIGGER USER;  -- the candles are rebuilt once, at the end
    WITH bad AS (
        DELETE FROM crypto_prices p
         WHERE NOT (p.price > 0 AND p.price < 'Infinity')
            OR NOT (p.volume IS NULL OR (p.volume >= 0 AND p.volume < 'Infinity'))
            OR p.event_time < timestamptz '2009-01-03 00:00:00+00'
        RETURNING p.*)
    INSERT INTO crypto_prices_quarantine (reason, tick)
    SELECT CASE WHEN NOT (b.price > 0 AND b.price < 'Infinity') THEN 'bad_price'
                WHEN NOT (b.volume IS NULL OR (b.volume >= 0 AND b.volume < 'Infinity')) THEN 'bad_volume'
                ELSE 'implausible_time' END,
           to_jsonb(b)
      FROM bad b;
    DELETE FROM crypto_prices p
     USING (SELECT ctid, row_number() OVER (PARTITION BY symbol, event_time, price
                                            ORDER BY __connect_partition, __connect_offset, __connect_topic) AS n
              FROM crypto_prices) d
     WHERE p.ctid = d.ctid AND d.n > 1;
    ALTER TABLE crypto_prices DROP CONSTRAINT crypto_prices_pkey;
    ALTER TABLE crypto_prices ALTER COLUMN __connect_topic DROP NOT NULL,
                              ALTER COLUMN __connect_partition DROP NOT NULL,
                              ALTER COLUMN __connect_offset DROP NOT NULL;
    ALTER TABLE crypto_prices ADD CONSTRAINT crypto_prices_tick_key PRIMARY KEY (symbol, event_time, price);
    DROP INDEX IF EXISTS crypto_prices_symbol_event_time;  -- the new key serves (symbol, event_time) ranges
    IF to_regclass('public.candle_rollup') IS NOT NULL THEN
        TRUNCATE candle_rollup;  -- rebuilt from the kept ticks by init.sql
    END IF;
    ALTER TABLE crypto_prices ENABLE TRIGGER USER;
END $$;
