-- smsgate-ca serve, SQLite schema version 1.
-- Times are Unix milliseconds (INTEGER): portable to PostgreSQL as BIGINT.

-- One row per request accepted by POST /api/v1/csr.
CREATE TABLE requests (
    -- Insertion order: the order in which sync receives requests.
    seq          INTEGER PRIMARY KEY,
    request_id   TEXT    NOT NULL UNIQUE,
    type         TEXT    NOT NULL,
    -- The PEM CSR as submitted.
    content      TEXT    NOT NULL,
    -- JSON object of string values.
    metadata     TEXT    NOT NULL,
    submitted_at INTEGER NOT NULL,
    -- When sync acknowledged it (NULL: still to be listed by GET /api/v1/sync/requests).
    acked_at     INTEGER,
    -- pending | approved | denied
    status       TEXT    NOT NULL,
    -- The status record JSON pushed by sync (NULL until one arrives).
    record       TEXT,
    -- Submission time, or when the last status record was stored: TTLs count from here.
    updated_at   INTEGER NOT NULL
);

CREATE INDEX requests_unacked ON requests (seq) WHERE acked_at IS NULL;
CREATE INDEX requests_status_updated ON requests (status, updated_at);

-- Files published by the signer and carried out by sync: ca.crl, ca.crt,
-- ledger-checkpoint.json.
CREATE TABLE published (
    name       TEXT    PRIMARY KEY,
    body       BLOB    NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Small key/value facts (last_sync_at).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
