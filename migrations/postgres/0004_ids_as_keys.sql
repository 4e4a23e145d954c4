-- Events, deliveries and attempts each had two unique indexes: one on `seq`, which orders rows but is never
-- looked up alone, and one on the id they are found by. The ids become the primary keys (for an attempt, its
-- delivery's id with `seq`), and `seq` keeps only the ordering indexes it is read through: one index fewer to
-- write for every row.
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events DROP CONSTRAINT events_id_key, ADD PRIMARY KEY (id);
ALTER TABLE deliveries DROP CONSTRAINT deliveries_pkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_id_key, ADD PRIMARY KEY (id);
ALTER TABLE attempts DROP CONSTRAINT attempts_pkey, ADD PRIMARY KEY (delivery_id, seq);
DROP INDEX attempts_by_delivery;
