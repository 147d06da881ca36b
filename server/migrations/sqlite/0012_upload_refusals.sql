-- Attachment uploads refused (over the limit, a type not taken, bytes that do not hash to
-- their name): kept for the office, as refused edits are.
CREATE TABLE upload_refusals (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    device  INTEGER NOT NULL,
    sha256  TEXT    NOT NULL,
    code    TEXT    NOT NULL,
    message TEXT    NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX upload_refusals_device ON upload_refusals (device, at);
