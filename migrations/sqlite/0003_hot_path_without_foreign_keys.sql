-- The tables written for every webhook (interviews, events, deliveries, attempts) no longer declare foreign
-- keys. Each check was a lookup per row, and a statement that may fail a check half way keeps a journal of
-- every page it changes so it can be undone alone; the writer undoes a failed write with its whole
-- transaction instead. Writes check that their organization exists themselves; nothing deletes events or
-- organizations, and deleting an endpoint deletes its deliveries and their attempts itself.
--
-- SQLite cannot drop a constraint, so each table is built anew with the same rows and indexes. Children go
-- first: dropping a table still referenced would delete its children's rows through their cascades.

CREATE TABLE attempts_new (
    seq           INTEGER PRIMARY KEY,
    delivery_id   TEXT    NOT NULL,
    number        INTEGER NOT NULL,
    trigger       TEXT    NOT NULL,
    started_at    INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL,
    status_code   INTEGER,
    error         TEXT,
    response_body TEXT    NOT NULL
);
INSERT INTO attempts_new (seq, delivery_id, number, trigger, started_at, duration_ms, status_code, error,
                          response_body)
    SELECT seq, delivery_id, number, trigger, started_at, duration_ms, status_code, error, response_body
    FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_new RENAME TO attempts;
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, seq);

CREATE TABLE deliveries_new (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    org_id          TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    endpoint_id     TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    attempt_count   INTEGER NOT NULL DEFAULT 0,
    scheduled_count INTEGER NOT NULL DEFAULT 0, -- attempts of the schedule made (manual ones excluded)
    manual          INTEGER NOT NULL DEFAULT 0, -- the next attempt was asked for by someone
    next_attempt_at INTEGER,                    -- shown to users; NULL once finished
    run_at          INTEGER,                    -- queue position; NULL once finished
    lease_token     TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    lease_until     INTEGER
);
INSERT INTO deliveries_new (seq, id, org_id, event_id, endpoint_id, status, attempt_count, scheduled_count, manual,
                            next_attempt_at, run_at, lease_token, created_at, updated_at, lease_until)
    SELECT seq, id, org_id, event_id, endpoint_id, status, attempt_count, scheduled_count, manual,
           next_attempt_at, run_at, lease_token, created_at, updated_at, lease_until
    FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (run_at) WHERE run_at IS NOT NULL;
CREATE INDEX deliveries_by_org ON deliveries (org_id, seq);
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, seq);
CREATE INDEX deliveries_by_event ON deliveries (event_id, seq);

CREATE TABLE events_new (
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    org_id     TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    payload    TEXT    NOT NULL, -- the exact body every attempt sends
    created_at INTEGER NOT NULL
);
INSERT INTO events_new (seq, id, org_id, type, payload, created_at)
    SELECT seq, id, org_id, type, payload, created_at FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_by_org ON events (org_id, seq);

CREATE TABLE interviews_new (
    org_id       TEXT    NOT NULL,
    candidate_id TEXT    NOT NULL,
    data         TEXT    NOT NULL, -- the contract's data object, as sent
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (org_id, candidate_id)
);
INSERT INTO interviews_new (org_id, candidate_id, data, updated_at)
    SELECT org_id, candidate_id, data, updated_at FROM interviews;
DROP TABLE interviews;
ALTER TABLE interviews_new RENAME TO interviews;
