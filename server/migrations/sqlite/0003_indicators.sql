-- The indicator tables: for every indicator, side of the fraction, commune and period, what the
-- records add up to. Kept current by each sync in the same transaction as the edits; a
-- rebuild from the records gives the same rows. BI tools read them directly, or through the
-- view below.
CREATE TABLE indicator_cells (
    indicator  TEXT    NOT NULL, -- schemas/indicators id
    part       TEXT    NOT NULL, -- 'n' numerator, 'd' denominator
    commune    TEXT    NOT NULL, -- 5-digit code of the record's commune
    period     TEXT    NOT NULL, -- '2020', '2020-H1', '2020-H2'
    value      INTEGER NOT NULL, -- count of records, or sum of the part's expression (whole numbers)
    records    INTEGER NOT NULL, -- contributing records
    conflicted INTEGER NOT NULL, -- contributing records with a field in conflict
    PRIMARY KEY (indicator, part, commune, period)
);
CREATE INDEX indicator_cells_period ON indicator_cells (period);

-- Numerator and denominator side by side, per commune and period.
CREATE VIEW indicator_values AS
SELECT indicator, commune, period,
       SUM(CASE WHEN part = 'n' THEN value ELSE 0 END) AS numerator,
       SUM(CASE WHEN part = 'd' THEN value ELSE 0 END) AS denominator,
       SUM(conflicted) AS conflicted_records
FROM indicator_cells
WHERE records <> 0
GROUP BY indicator, commune, period;

-- Tokens for reading indicators and reports until office accounts exist. Stored hashed.
CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    token_hash TEXT    NOT NULL UNIQUE, -- SHA-256 hex; the token itself is shown once
    scope      TEXT    NOT NULL,        -- JSON: {"province": true} | {"district": "474"} | {"communes": [...]}
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
