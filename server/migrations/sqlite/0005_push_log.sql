-- The edit log, one row per push instead of one per edit: a push of a few hundred edits adds
-- one row (and its overflow pages) where it added a few hundred rows and index entries.

-- Every push that consumed edits: its edits as received, the audit trail, and how a repeat is
-- told from a reused seq.
CREATE TABLE pushes (
    id          INTEGER PRIMARY KEY,
    device      INTEGER NOT NULL,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    -- JSON array of the edits with seqs first_seq..last_seq, each exactly as the phone sent it.
    edits       TEXT    NOT NULL,
    -- JSON array of the seqs among them that were refused (their reasons are in rejections).
    refused     TEXT    NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX pushes_device_seq ON pushes (device, first_seq);

-- The edits applied to each record, in order: "device:seq,device:seq,…". With the pushes,
-- the record's history.
ALTER TABLE records ADD COLUMN edits TEXT NOT NULL DEFAULT '';

-- The record a refused edit named: refused edits are part of that record's history.
ALTER TABLE rejections ADD COLUMN record TEXT;

INSERT INTO pushes (device, first_seq, last_seq, edits, refused, received_at)
SELECT device, seq, seq, '[' || body || ']',
       CASE WHEN rejected THEN '[' || seq || ']' ELSE '[]' END, received_at
FROM edits;

UPDATE records SET edits = COALESCE((
    SELECT group_concat(e.device || ':' || e.seq, ',' ORDER BY e.received_at, e.device, e.seq)
    FROM edits e WHERE e.record = records.id AND NOT e.rejected), '');

UPDATE rejections SET record = (
    SELECT e.record FROM edits e
    WHERE e.device = rejections.device AND e.seq = rejections.seq AND e.rejected);

CREATE INDEX rejections_record ON rejections (record);
DROP TABLE edits;
