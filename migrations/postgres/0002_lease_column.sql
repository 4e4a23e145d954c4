-- A claim records its lease in a column of its own instead of moving run_at, so claiming a delivery changes
-- no indexed column (PostgreSQL can update it in place) and the queue index holds no dead lease times.
ALTER TABLE deliveries ADD COLUMN lease_until BIGINT;
ALTER TABLE deliveries SET (fillfactor = 85);
