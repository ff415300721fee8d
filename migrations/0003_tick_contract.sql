-- One CHECK for the tick contract (tick_contract_violation(), schemas/tick_contract.sql) replaced three
-- older ones (price > 0, volume >= 0, event time). Rows that break the contract as it is now move to
-- crypto_prices_quarantine with the reason first (their candles are rebuilt: init.sql, ticks without candles).
\ir ../schemas/tick_contract.sql

DO $$
BEGIN
    IF to_regclass('public.crypto_prices') IS NULL
       OR EXISTS (SELECT FROM pg_constraint WHERE conrelid = to_regclass('public.crypto_prices') AND conname = 'tick_contract') THEN
        RETURN;
    END IF;
    WITH bad AS (
        DELETE FROM crypto_prices p
         WHERE tick_contract_violation(p.symbol, p.price, p.volume, p.feed, p.event_time) IS NOT NULL
        RETURNING p.*)
    INSERT INTO crypto_prices_quarantine (reason, tick)
    SELECT tick_contract_violation(b.symbol, b.price, b.volume, b.feed, b.event_time), to_jsonb(b)
      FROM bad b;
    ALTER TABLE crypto_prices DROP CONSTRAINT IF EXISTS tick_price_finite_and_positive,
                              DROP CONSTRAINT IF EXISTS tick_volume_null_or_finite_and_not_negative,
                              DROP CONSTRAINT IF EXISTS tick_event_time_plausible;
    ALTER TABLE crypto_prices ADD CONSTRAINT tick_contract
        CHECK (tick_contract_violation(symbol, price, volume, feed, event_time) IS NULL);
END $$;
