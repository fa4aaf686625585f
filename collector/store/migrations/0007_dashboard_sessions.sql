-- filterwatch store, version 7: the web dashboard's sessions. Only the SHA-256 of the
-- session cookie is kept (the cookie is a random 256-bit value), so a copy of the database
-- opens no session. token_hash is the hash of the analyst token that signed in: a session
-- ends when its token is no longer accepted.

CREATE TABLE dashboard_sessions (
    session_hash  TEXT PRIMARY KEY,
    token_hash    TEXT NOT NULL,
    created_at    DOUBLE PRECISION NOT NULL,
    expires_at    DOUBLE PRECISION NOT NULL,
    revoked_at    DOUBLE PRECISION
);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);
