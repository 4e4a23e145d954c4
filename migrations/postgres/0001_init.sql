-- Tidings schema, PostgreSQL. The same tables and columns as the SQLite schema, so both stores read rows the
-- same way. Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE organizations (
    seq        BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    name       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);

CREATE TABLE api_keys (
    key_hash   TEXT    PRIMARY KEY,
    org_id     TEXT    NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    created_at BIGINT  NOT NULL
);

CREATE TABLE endpoints (
    seq                   BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                    TEXT    NOT NULL UNIQUE,
    org_id                TEXT    NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    url                   TEXT    NOT NULL,
    description           TEXT    NOT NULL,
    event_types           TEXT    NOT NULL, -- JSON array of strings
    enabled               BOOLEAN NOT NULL,
    secret                TEXT    NOT NULL,
    previous_secret       TEXT,
    previous_secret_until BIGINT,
    created_at            BIGINT  NOT NULL,
    updated_at            BIGINT  NOT NULL
);
CREATE INDEX endpoints_by_org ON endpoints (org_id, seq);

CREATE TABLE interviews (
    org_id       TEXT   NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    candidate_id TEXT   NOT NULL,
    data         TEXT   NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (org_id, candidate_id)
);

CREATE TABLE events (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT   NOT NULL UNIQUE,
    org_id     TEXT   NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    type       TEXT   NOT NULL,
    payload    TEXT   NOT NULL, -- the exact body every attempt sends
    created_at BIGINT NOT NULL
);
CREATE INDEX events_by_org ON events (org_id, seq);

-- The deliveries table is also the queue; see the SQLite schema for how run_at and lease_token work.
CREATE TABLE deliveries (
    seq             BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    org_id          TEXT    NOT NULL,
    event_id        TEXT    NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    endpoint_id     TEXT    NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    status          TEXT    NOT NULL,
    attempt_count   BIGINT  NOT NULL DEFAULT 0,
    scheduled_count BIGINT  NOT NULL DEFAULT 0,
    manual          BOOLEAN NOT NULL DEFAULT FALSE,
    next_attempt_at BIGINT,
    run_at          BIGINT,
    lease_token     TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (run_at) WHERE run_at IS NOT NULL;
CREATE INDEX deliveries_by_org ON deliveries (org_id, seq);
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, seq);
CREATE INDEX deliveries_by_event ON deliveries (event_id, seq);

CREATE TABLE attempts (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id   TEXT   NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    number        BIGINT NOT NULL,
    trigger       TEXT   NOT NULL,
    started_at    BIGINT NOT NULL,
    duration_ms   BIGINT NOT NULL,
    status_code   BIGINT,
    error         TEXT,
    response_body TEXT   NOT NULL
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, seq);
