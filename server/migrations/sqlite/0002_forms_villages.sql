-- Every published form version. A row is never updated: a published version never changes.
CREATE TABLE forms (
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    body         TEXT    NOT NULL, -- the form as canonical JSON; its hash is the ETag phones cache by
    published_at INTEGER NOT NULL,
    PRIMARY KEY (id, version)
);

-- Villages have no official codes: each commune keeps its own list, in its own order.
CREATE TABLE villages (
    commune  TEXT    NOT NULL,
    position INTEGER NOT NULL,
    name     TEXT    NOT NULL, -- Unicode NFC
    PRIMARY KEY (commune, position)
);
