-- Subscriptions (keys only as SHA-256 digests) and quota counters. Kept in step with
-- ../postgres/0001_init.sql: same tables and columns, BLOB instead of BYTEA.
CREATE TABLE store_meta (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO store_meta (name, value) VALUES ('rev', 0);

CREATE TABLE subscriptions (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    scope_kind     TEXT NOT NULL CHECK (scope_kind IN ('product', 'api', 'all')),
    scope_target   TEXT,
    state          TEXT NOT NULL CHECK (state IN ('active', 'suspended', 'cancelled')),
    primary_hash   BLOB NOT NULL UNIQUE,
    secondary_hash BLOB NOT NULL UNIQUE,
    expires_at     BIGINT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    rev            BIGINT NOT NULL
);
CREATE INDEX subscriptions_rev ON subscriptions (rev);

CREATE TABLE quota_counters (
    key          TEXT PRIMARY KEY,
    period_start BIGINT NOT NULL,
    calls        BIGINT NOT NULL,
    bytes        BIGINT NOT NULL
);
