-- A push's edits as the log keeps them from now on: their JSON array, each edit as the phone
-- sent it, compressed with LZ4 (a block, its length first as 4 bytes little-endian). Packed
-- rows leave `edits` empty; rows logged before keep their text there and `packed` NULL.
ALTER TABLE pushes ADD COLUMN packed BYTEA;
-- Packed already: PostgreSQL need not try to compress it again.
ALTER TABLE pushes ALTER COLUMN packed SET STORAGE EXTERNAL;
