-- smsgate-ca serve, SQLite schema version 2: revocation requests by certificate holders
-- (POST /api/v1/revocations, DESIGN §5 and §9).

-- One row per revocation request the API accepted (its proof already verified).
CREATE TABLE revocations (
    -- Insertion order: the order in which sync receives them.
    seq          INTEGER PRIMARY KEY,
    request_id   TEXT    NOT NULL UNIQUE,
    -- The certificate's serial, 32 lowercase hex digits.
    serial       TEXT    NOT NULL,
    -- RFC 5280 reason name.
    reason       TEXT    NOT NULL,
    -- base64 signature by the certificate's key over the DESIGN §9 message.
    proof        TEXT    NOT NULL,
    submitted_at INTEGER NOT NULL,
    -- When sync acknowledged it (NULL: still to be listed).
    acked_at     INTEGER,
    -- pending | revoked | denied
    status       TEXT    NOT NULL,
    -- The status/<id>.revoke.json record pushed by sync (NULL until one arrives).
    record       TEXT,
    -- Submission time, or when the last record was stored: TTLs count from here.
    updated_at   INTEGER NOT NULL
);

CREATE INDEX revocations_unacked ON revocations (seq) WHERE acked_at IS NULL;
CREATE INDEX revocations_status_updated ON revocations (status, updated_at);
