-- Phones. `id` is the device number in every dot, so it stays a small integer.
CREATE TABLE devices (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL,
    -- Comma-separated 5-digit commune codes: the device's scope (a handful per device).
    communes     TEXT    NOT NULL,
    -- SHA-256 hex of the bearer token; NULL until enrolled. The token itself is never stored.
    token_hash   TEXT    UNIQUE,
    -- Last consumed seq: the server's whole causal context is one such number per device.
    last_seq     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL, -- unix milliseconds, like every time below
    enrolled_at  INTEGER,
    revoked_at   INTEGER,
    last_sync_at INTEGER
);

-- One-time enrolment codes, hashed; single use, with an expiry.
CREATE TABLE enrollments (
    code_hash  TEXT    PRIMARY KEY,
    device     INTEGER NOT NULL REFERENCES devices (id),
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);

-- Current merged state of each record. `body` is the wire Record JSON, sent as is on pulls.
CREATE TABLE records (
    id         TEXT    PRIMARY KEY, -- UUID text: readable by BI tools as is
    form       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    commune    TEXT    NOT NULL,    -- 5-digit code as text ("00001" is not 1)
    body       TEXT    NOT NULL,
    -- Change sequence of the last write: the pull cursor. Taken from `counters` inside the
    -- writing transaction, so it follows commit order.
    changed_at INTEGER NOT NULL,
    conflicted INTEGER NOT NULL,    -- 0/1: some field holds siblings, or delete against edit
    deleted    INTEGER NOT NULL,    -- 0/1
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX records_commune_changed ON records (commune, changed_at);

-- Every edit as received, applied or rejected: the audit trail, and how a repeat is told
-- from a reused seq.
CREATE TABLE edits (
    device      INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    record      TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    rejected    INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (device, seq)
);

-- Refused edits with their reason, kept for review.
CREATE TABLE rejections (
    id          INTEGER PRIMARY KEY,
    device      INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    code        TEXT    NOT NULL,
    field       TEXT,
    rule        TEXT,             -- the rule an invalid value broke
    message     TEXT    NOT NULL, -- English
    message_vi  TEXT,             -- Vietnamese
    body        TEXT    NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX rejections_device_seq ON rejections (device, seq);

-- Records that changed commune: pulls of the old commune's devices evict them.
CREATE TABLE moves (
    record       TEXT    NOT NULL,
    from_commune TEXT    NOT NULL,
    to_commune   TEXT    NOT NULL,
    at           INTEGER NOT NULL
);
CREATE INDEX moves_at ON moves (at);

-- The change sequence. A row, not a database sequence, so that seqs follow commit order.
CREATE TABLE counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('changes', 0);
