-- A claim records its lease in a column of its own instead of moving run_at, so claiming and finishing a
-- delivery change the queue index once (when it is finished) rather than three times.
ALTER TABLE deliveries ADD COLUMN lease_until INTEGER;
