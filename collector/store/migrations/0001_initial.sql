-- filterwatch store, version 1. Portable SQL: SQLite and PostgreSQL run the same text,
-- except that the PostgreSQL store maps BLOB to BYTEA.

CREATE TABLE measurements (
    measurement_id   TEXT PRIMARY KEY,
    agent_id         TEXT NOT NULL,
    batch_id         TEXT NOT NULL,
    measured_at      DOUBLE PRECISION NOT NULL,  -- UTC epoch seconds
    received_at      DOUBLE PRECISION NOT NULL,
    cc               TEXT,                       -- NULL when measured with no known network
    asn              BIGINT,
    network_name     TEXT,
    url              TEXT NOT NULL,
    domain           TEXT NOT NULL,
    blocking         TEXT NOT NULL,
    accessible       SMALLINT,                   -- 1, 0 or NULL
    failure          TEXT,
    blockpage        TEXT,
    dns_answers      TEXT,                       -- space-separated addresses
    http_status      INTEGER,
    http_body_length BIGINT,
    control_ok       SMALLINT,                   -- 1 control fetched fine, 0 it failed, NULL none
    record           BLOB NOT NULL               -- the full validated measurement, msgpack
);
CREATE INDEX measurements_cc_domain_time ON measurements (cc, domain, measured_at);
CREATE INDEX measurements_asn_domain_time ON measurements (asn, domain, measured_at);
CREATE INDEX measurements_time ON measurements (measured_at, measurement_id);

CREATE TABLE agents (
    agent_id    TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    cc          TEXT,
    created_at  DOUBLE PRECISION NOT NULL,
    revoked_at  DOUBLE PRECISION
);

CREATE TABLE enroll_codes (
    code_hash   TEXT PRIMARY KEY,
    cc          TEXT,
    uses_left   INTEGER NOT NULL,
    expires_at  DOUBLE PRECISION,
    created_at  DOUBLE PRECISION NOT NULL
);

CREATE TABLE analyst_tokens (
    token_hash  TEXT PRIMARY KEY,
    created_at  DOUBLE PRECISION NOT NULL
);
