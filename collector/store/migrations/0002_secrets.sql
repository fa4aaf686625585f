-- filterwatch store, version 2: secrets the collector makes for itself, e.g. the key of
-- the agent pseudonyms in exports (kept so that pseudonyms stay stable across restarts).

CREATE TABLE collector_secrets (
    name        TEXT PRIMARY KEY,
    value       BLOB NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL
);
