-- What ODK Collect phones sent over OpenRosa, as documents by kind and key: `submission`
-- (by instanceID: the record it made, the hash of its XML, the values and dots it saw),
-- `file` (an attachment received for a submission, by instanceID and file name), `version`
-- (an entity's state as a numbered version of the entity list, by record and version) and
-- `latest` (the newest such version of each record).
CREATE TABLE openrosa (
    kind   TEXT NOT NULL,
    key    TEXT NOT NULL,
    record TEXT NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX openrosa_record ON openrosa (record, kind);
