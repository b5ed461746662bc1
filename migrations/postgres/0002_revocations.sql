-- smsgate-ca serve, PostgreSQL schema version 2: revocation requests by certificate holders.

CREATE TABLE revocations (
    seq          BIGSERIAL PRIMARY KEY,
    request_id   TEXT    NOT NULL UNIQUE,
    serial       TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    proof        TEXT    NOT NULL,
    submitted_at BIGINT  NOT NULL,
    acked_at     BIGINT,
    status       TEXT    NOT NULL,
    record       TEXT,
    updated_at   BIGINT  NOT NULL
);

CREATE INDEX revocations_unacked ON revocations (seq) WHERE acked_at IS NULL;
CREATE INDEX revocations_status_updated ON revocations (status, updated_at);
