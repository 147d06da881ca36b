-- Facts about the database itself. `epoch` is made with the database and renewed when it is
-- restored from a backup (or the server finds itself on another cluster or timeline): a phone
-- whose cursor belongs to another epoch pulls from the start.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta (name, value) VALUES ('epoch', md5(random()::text || clock_timestamp()::text));

-- A successor device: the same collaborator and communes under a new number, for a phone whose
-- seqs were used by another history (restored from a backup, or its data copied). `request`
-- is the phone's id for the successor it asked for, so that asking again names the same one.
ALTER TABLE devices ADD COLUMN predecessor BIGINT REFERENCES devices (id);
ALTER TABLE devices ADD COLUMN successor_request TEXT;
CREATE UNIQUE INDEX devices_successor ON devices (predecessor, successor_request);
