-- The text columns that index keys are made of (ids, the organization of each row, the hash of an API key, a
-- candidate's id) compare byte by byte. They are opaque: nothing sorts them for a reader, only equality and
-- index order matter. Under a language's collation, each comparison in an index went through the C library's
-- locale-aware comparison of two copied strings (a tenth of the database's work when fanning out, even under
-- C.UTF-8); under "C" it is one memcmp. Indexes on these columns are rebuilt in the new order.
ALTER TABLE organizations ALTER COLUMN id TYPE TEXT COLLATE "C";
ALTER TABLE api_keys ALTER COLUMN key_hash TYPE TEXT COLLATE "C", ALTER COLUMN org_id TYPE TEXT COLLATE "C";
ALTER TABLE endpoints ALTER COLUMN id TYPE TEXT COLLATE "C", ALTER COLUMN org_id TYPE TEXT COLLATE "C";
ALTER TABLE interviews ALTER COLUMN org_id TYPE TEXT COLLATE "C", ALTER COLUMN candidate_id TYPE TEXT COLLATE "C";
ALTER TABLE events ALTER COLUMN id TYPE TEXT COLLATE "C", ALTER COLUMN org_id TYPE TEXT COLLATE "C";
ALTER TABLE deliveries
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN org_id TYPE TEXT COLLATE "C",
    ALTER COLUMN event_id TYPE TEXT COLLATE "C",
    ALTER COLUMN endpoint_id TYPE TEXT COLLATE "C";
ALTER TABLE attempts ALTER COLUMN delivery_id TYPE TEXT COLLATE "C";
