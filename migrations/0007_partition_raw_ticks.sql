-- crypto_prices became partitioned by event time (one partition per UTC day, init.sql). An existing,
-- unpartitioned crypto_prices becomes ONE partition, crypto_prices_legacy, covering [its first day,
-- tomorrow): no row is copied (attaching only scans it once, to check its range); new days get partitions
-- of their own; retention drops the legacy partition whole once its newest day has expired.
-- Its triggers are the parent's now (init.sql creates them on crypto_prices; partitions inherit them).
DO $$
DECLARE
    first_day timestamptz;
    end_day   timestamptz;
    old_trigger text;
BEGIN
    IF coalesce((SELECT relkind FROM pg_class WHERE oid = to_regclass('public.crypto_prices')), 'p') = 'p' THEN
        RETURN;  -- a fresh database, or already partitioned
    END IF;
    ALTER TABLE crypto_prices RENAME TO crypto_prices_legacy;
    ALTER INDEX crypto_prices_tick_key RENAME TO crypto_prices_legacy_tick_key;
    ALTER INDEX IF EXISTS crypto_prices_landed_at RENAME TO crypto_prices_legacy_landed_at;
    FOR old_trigger IN SELECT tgname FROM pg_trigger WHERE tgrelid = 'crypto_prices_legacy'::regclass AND NOT tgisinternal LOOP
        EXECUTE format('DROP TRIGGER %I ON crypto_prices_legacy', old_trigger);
    END LOOP;
    CREATE TABLE crypto_prices (LIKE crypto_prices_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE
                                INCLUDING COMMENTS) PARTITION BY RANGE (event_time);
    ALTER TABLE crypto_prices ADD CONSTRAINT crypto_prices_tick_key PRIMARY KEY (symbol, event_time, price);
    SELECT date_bin(interval '1 day', min(event_time), timestamptz '2000-01-01 00:00:00+00'),
           date_bin(interval '1 day', greatest(max(event_time), now()), timestamptz '2000-01-01 00:00:00+00') + interval '1 day'
      INTO first_day, end_day
      FROM crypto_prices_legacy;
    first_day := coalesce(first_day, end_day - interval '1 day');
    EXECUTE format('ALTER TABLE crypto_prices ATTACH PARTITION crypto_prices_legacy FOR VALUES FROM (%L) TO (%L)',
                   first_day, end_day);
END $$;
