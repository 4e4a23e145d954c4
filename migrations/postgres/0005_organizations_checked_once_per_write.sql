-- Interviews and events no longer check their organization row by row: each check was a query and a row lock
-- per row written, about a tenth of the database's work per update. The store looks the organizations of a
-- write up once, locked against deletion until it commits, and refuses the parts of it whose organization
-- does not exist.
-- Nothing in Tidings deletes an organization; one deleted by hand now leaves its interviews and events behind,
-- as it already left its deliveries.
ALTER TABLE interviews DROP CONSTRAINT IF EXISTS interviews_org_id_fkey;
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_org_id_fkey;
