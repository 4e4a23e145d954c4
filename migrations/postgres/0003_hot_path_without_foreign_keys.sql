-- The rows written for every delivery (deliveries and attempts) no longer check their references: each check
-- was a query and a row lock per row, a large part of the database's work per webhook. Nothing deletes events;
-- deleting an endpoint deletes its deliveries and their attempts itself, and new deliveries lock the endpoints
-- they are made for, so a concurrent delete waits for them and then takes them too.
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_event_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_endpoint_id_fkey;
ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_delivery_id_fkey;
