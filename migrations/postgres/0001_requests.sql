-- smsgate-ca serve, PostgreSQL schema version 1 (the same tables as migrations/sqlite).
-- Times are Unix milliseconds (BIGINT).

CREATE TABLE requests (
    seq          BIGSERIAL PRIMARY KEY,
    request_id   TEXT    NOT NULL UNIQUE,
    type         TEXT    NOT NULL,
    content      TEXT    NOT NULL,
    metadata     TEXT    NOT NULL,
    submitted_at BIGINT  NOT NULL,
    acked_at     BIGINT,
    status       TEXT    NOT NULL,
    record       TEXT,
    updated_at   BIGINT  NOT NULL
);

CREATE INDEX requests_unacked ON requests (seq) WHERE acked_at IS NULL;
CREATE INDEX requests_status_updated ON requests (status, updated_at);

CREATE TABLE published (
    name       TEXT   PRIMARY KEY,
    body       BYTEA  NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The per-client token buckets of POST rate limiting, shared by every instance.
CREATE TABLE rate_limits (
    client  TEXT             PRIMARY KEY,
    tokens  DOUBLE PRECISION NOT NULL,
    at_ms   BIGINT           NOT NULL,
    last_ok BOOLEAN          NOT NULL
);
