-- filterwatch store, version 5: the monitor (design.md section 6, issue 10).
-- monitor_dirty: the series (cc, asn, domain) that received data since the monitor's last
--   pass, and the measured_at range of that data; ingest appends in the transaction that
--   stores the measurements, the monitor takes the rows (DELETE ... RETURNING).
-- events / event_revisions: the findings as records with stable ids, and every revision.
-- outbox: one row per webhook delivery, committed with the revision it delivers.

CREATE TABLE monitor_dirty (
    cc      TEXT NOT NULL,
    asn     BIGINT NOT NULL,
    domain  TEXT NOT NULL,
    lo      DOUBLE PRECISION NOT NULL,
    hi      DOUBLE PRECISION NOT NULL
);

CREATE TABLE events (
    event_id       TEXT PRIMARY KEY,
    created_seq    BIGINT NOT NULL UNIQUE,    -- the seq of revision 1: the listing order
    seq            BIGINT NOT NULL,           -- the seq of the latest revision
    kind           TEXT NOT NULL,             -- lapse | uncorroborated | unfiltered | lagging | partial
    status         TEXT NOT NULL,             -- open | closed | retracted
    cc             TEXT NOT NULL,
    asn            BIGINT NOT NULL,
    domains        TEXT NOT NULL,             -- ' a.example b.example ': space-delimited
    start_at       DOUBLE PRECISION NOT NULL,
    end_at         DOUBLE PRECISION,
    revision       INTEGER NOT NULL,
    first_seen_at  DOUBLE PRECISION NOT NULL,
    updated_at     DOUBLE PRECISION NOT NULL,
    body           TEXT NOT NULL              -- the event as JSON, as of its latest revision
);
CREATE INDEX events_cc_asn ON events (cc, asn);
CREATE INDEX events_status_end ON events (status, end_at);

CREATE TABLE event_revisions (
    seq        BIGINT PRIMARY KEY,            -- one sequence over every change (SSE ids)
    event_id   TEXT NOT NULL REFERENCES events (event_id),
    revision   INTEGER NOT NULL,
    type       TEXT NOT NULL,                 -- leak.opened | leak.updated | leak.closed | leak.retracted
    at         DOUBLE PRECISION NOT NULL,
    body       TEXT NOT NULL,                 -- {"type": ..., "event": {...}} as JSON
    UNIQUE (event_id, revision)
);

CREATE TABLE outbox (
    delivery_id      TEXT PRIMARY KEY,        -- '<event id>:<revision>:<subscription>'
    subscription     TEXT NOT NULL,           -- a hash of the webhook's URL
    seq              BIGINT NOT NULL REFERENCES event_revisions (seq),
    type             TEXT NOT NULL,           -- per subscription (leak.opened when first matching)
    created_at       DOUBLE PRECISION NOT NULL,
    next_attempt_at  DOUBLE PRECISION NOT NULL,
    attempts         INTEGER NOT NULL,
    state            TEXT NOT NULL,           -- pending | delivered | failed
    last_error       TEXT,
    finished_at      DOUBLE PRECISION
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_subscription ON outbox (subscription, state);
