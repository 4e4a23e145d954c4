-- The queue moves out of the deliveries table into one of its own: a row per delivery waiting for an attempt
-- (due, or leased to a process), deleted when the delivery is finished. Finishing a delivery took it out of the
-- queue index on deliveries; PostgreSQL writes a row whose indexed column changed as a new version with an
-- entry in every index of its table, so four indexes were written again per delivery (each entry a duplicate
-- key to be cleaned out later). Now a delivery changes no indexed column once written, and its updates stay on
-- its page with no index written; the queue's rows are small and have two indexes.
CREATE TABLE delivery_queue (
    delivery_id TEXT COLLATE "C" PRIMARY KEY,
    endpoint_id TEXT COLLATE "C" NOT NULL,
    run_at      BIGINT NOT NULL, -- due from then, unless leased
    lease_until BIGINT,          -- leased to a process until then
    lease_token TEXT,            -- the lease: a result counts only under the lease it was made under
    manual      BOOLEAN NOT NULL DEFAULT FALSE -- its next attempt was asked for (a manual retry)
) WITH (fillfactor = 50);
CREATE INDEX delivery_queue_due ON delivery_queue (run_at);

INSERT INTO delivery_queue (delivery_id, endpoint_id, run_at, lease_until, lease_token, manual)
SELECT id, endpoint_id, run_at, lease_until, lease_token, manual FROM deliveries WHERE run_at IS NOT NULL;

DROP INDEX deliveries_due;
ALTER TABLE deliveries DROP COLUMN run_at, DROP COLUMN lease_until, DROP COLUMN lease_token, DROP COLUMN manual;
-- A delivery is written once more after it is inserted (when it is finished; again per retry), and the new
-- version stays on the page only if the page has room for it: rows are inserted into half a page, so each
-- page's rows can all be finished in place before the old versions are pruned. (Finishing in place, not the
-- queue alone, is what saves the index writes: at 85% full most finished rows moved to another page.) The
-- same for the queue's rows, which a claim writes once more with its lease.
ALTER TABLE deliveries SET (fillfactor = 50);
