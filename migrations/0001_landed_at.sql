-- crypto_prices gained landed_at (when a tick first landed; `status` counts the last minute's rows by it).
-- Rows older than the column have none.
DO $$
BEGIN
    IF to_regclass('public.crypto_prices') IS NULL THEN
        RETURN;  -- a fresh database: init.sql creates the table with the column
    END IF;
    ALTER TABLE crypto_prices ADD COLUMN IF NOT EXISTS landed_at timestamptz;
    ALTER TABLE crypto_prices ALTER COLUMN landed_at SET DEFAULT now();
END $$;
