-- Tidings schema, SQLite. Times are milliseconds since the Unix epoch (UTC). `seq` orders lists newest first
-- and is the cursor; `id` is the public prefixed id.

CREATE TABLE organizations (
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    key_hash   TEXT    PRIMARY KEY,
    org_id     TEXT    NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
);

CREATE TABLE endpoints (
    seq                   INTEGER PRIMARY KEY,
    id                    TEXT    NOT NULL UNIQUE,
    org_id                TEXT    NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    url                   TEXT    NOT NULL,
    description           TEXT    NOT NULL,
    event_types           TEXT    NOT NULL, -- JSON array of strings
    enabled               INTEGER NOT NULL,
    secret                TEXT    NOT NULL,
    previous_secret       TEXT,
    previous_secret_until INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
CREATE INDEX endpoints_by_org ON endpoints (org_id, seq);

CREATE TABLE interviews (
    org_id       TEXT    NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    candidate_id TEXT    NOT NULL,
    data         TEXT    NOT NULL, -- the contract's data object, as sent
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (org_id, candidate_id)
);

CREATE TABLE events (
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    org_id     TEXT    NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    type       TEXT    NOT NULL,
    payload    TEXT    NOT NULL, -- the exact body every attempt sends
    created_at INTEGER NOT NULL
);
CREATE INDEX events_by_org ON events (org_id, seq);

-- The deliveries table is also the queue: a row with `run_at` set is due at that time. A claim moves
-- `run_at` to the end of its lease and sets `lease_token`, so a crashed worker's claims come due again.
CREATE TABLE deliveries (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    org_id          TEXT    NOT NULL,
    event_id        TEXT    NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    endpoint_id     TEXT    NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    status          TEXT    NOT NULL,
    attempt_count   INTEGER NOT NULL DEFAULT 0,
    scheduled_count INTEGER NOT NULL DEFAULT 0, -- attempts of the schedule made (manual ones excluded)
    manual          INTEGER NOT NULL DEFAULT 0, -- the next attempt was asked for by someone
    next_attempt_at INTEGER,                    -- shown to users; NULL once finished
    run_at          INTEGER,                    -- queue position; NULL once finished
    lease_token     TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
-- Exactly the claim's WHERE run_at <= ? ORDER BY run_at LIMIT ?, over pending rows only, so its cost does not
-- grow with the history of finished deliveries.
CREATE INDEX deliveries_due ON deliveries (run_at) WHERE run_at IS NOT NULL;
CREATE INDEX deliveries_by_org ON deliveries (org_id, seq);
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, seq);
CREATE INDEX deliveries_by_event ON deliveries (event_id, seq);

CREATE TABLE attempts (
    seq           INTEGER PRIMARY KEY,
    delivery_id   TEXT    NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    number        INTEGER NOT NULL,
    trigger       TEXT    NOT NULL,
    started_at    INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL,
    status_code   INTEGER,
    error         TEXT,
    response_body TEXT    NOT NULL
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, seq);
